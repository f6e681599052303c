"""One command line for SFRS Studio: ``python -m sfrs_core COMMAND ...``."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .data.synthcity.config import PRESETS as SYNTH_PRESETS
from .demo_cities import CITIES as DEMO_CITIES, DEMO_SEEDS
from .errors import CheckpointError, DatasetError
from .runs import DEFAULT_RUN_DIRS


def _cmd_synth(args: argparse.Namespace) -> int:
    from .data.synthcity import generate, preset

    cfg = preset(args.preset, seed=args.seed)
    out = generate(cfg, args.out, workers=args.workers, overwrite=args.overwrite, progress=not args.quiet)
    print(f"SynthCity preset {args.preset!r} (seed {cfg.seed}) written to {out}")
    return 0


def _cmd_synth_sample(args: argparse.Namespace) -> int:
    from .data.synthcity import preset
    from .data.synthcity.sample import save_contact_sheet

    out = save_contact_sheet(preset(args.preset, seed=args.seed), args.out)
    print(f"contact sheet written to {out} ({out.stat().st_size // 1024} KB)")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from .data.loaders import load_dataset
    from .reporting import print_dataset_summary

    ds = load_dataset(args.path, format=args.format)
    summary = ds.summary()
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_dataset_summary(summary)
    return 0


STOPPED_EXIT = 130  # exit status of a training stopped by SIGTERM/SIGINT (resumable)


def _cmd_train(args: argparse.Namespace) -> int:
    from .reporting import print_run_summary
    from .training import TrainingStopped, resume_run, train
    from .training.background import stop_on_signals
    from .training.distributed import RankFailed, env_world
    from .training.options import config_from_args

    runs_dir = args.runs_dir or "runs"
    main_rank = env_world()[0] == 0  # under torchrun only rank 0 reports (and shows progress bars)
    with stop_on_signals() as stop_requested:  # SIGTERM / Ctrl-C: recorded as stopped, resumable
        try:
            if args.resume:
                out = resume_run(Path(runs_dir) / args.run, progress=not args.quiet, should_stop=stop_requested.is_set)
            else:
                if args.data is None:
                    raise ValueError("--data is required (unless --resume)")
                out = train(config_from_args(args), overwrite=args.overwrite, progress=not args.quiet,
                            should_stop=stop_requested.is_set)
        except TrainingStopped as stop:
            if main_rank:
                print(f"{stop}; continue with: python -m sfrs_core train --run {args.run} --runs-dir {runs_dir} --resume",
                      file=sys.stderr)
            return STOPPED_EXIT
        except RankFailed:  # rank 0 failed (and reported why); this rank only followed it
            return 2
    if main_rank:
        print_run_summary(out)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .reporting import print_run_summary
    from .training.demo import build_demo_models

    paths = build_demo_models(args.data, args.out, args.runs_dir, progress=not args.quiet, seeds=args.seeds, city=args.city)
    for name, path in paths.items():
        print_run_summary(path)
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from .explain.top_match import top_match_figure

    done = top_match_figure(args.run, args.query, args.out, method=args.method, split=args.split,
                            generation=args.generation, opacity=args.opacity, formats=tuple(args.formats), dpi=args.dpi)
    print(done.summary())
    return 0


def _cmd_export_figures(args: argparse.Namespace) -> int:
    from .explain.figure_set import export_figure_set

    paths = export_figure_set([str(r) for r in args.runs], args.out, split=args.split, method=args.method,
                              attention_queries=args.attention_queries, dpi=args.dpi, progress=not args.quiet)
    print(f"{len(paths)} files written to {args.out}")
    return 0


def _cmd_seeds(args: argparse.Namespace) -> int:
    from .reporting import print_seed_tables

    print_seed_tables(args.runs_dir, args.split)
    return 0


def _cmd_attention_seeds(args: argparse.Namespace) -> int:
    from .reporting import print_attention_tables

    print_attention_tables(args.runs_dir, args.split, args.method, args.queries, args.out, progress=not args.quiet)
    return 0


def _cmd_export_weights(args: argparse.Namespace) -> int:
    from .models.openibl import export_openibl

    done = export_openibl(args.checkpoint, args.out, pca=not args.no_pca)
    dim = f", dim={done.pca_dim}" if done.pca_dim is not None else ""
    print(f"{args.checkpoint} -> {done.path}: OpenIBL {done.model} state dict (K={done.num_clusters}{dim}); "
          f"in OpenIBL: models.create('{done.model}', base, netvlad{dim}).load_state_dict(torch.load(...))")
    for note in done.notes:
        print(f"note: {note}")
    return 0


def _cmd_import_weights(args: argparse.Namespace) -> int:
    from .models.openibl import import_openibl

    done = import_openibl(args.weights, args.out, overwrite=args.overwrite)
    pca = f"PCA-whitening to {done.pca_dim}" if done.pca_dim is not None else "no PCA"
    print(f"{args.weights} -> {done.path}: SFRS Studio checkpoint from OpenIBL's {done.model} "
          f"(VGG16, K={done.num_clusters}, {pca}, {done.input_norm} input); "
          f"use it as --checkpoint {done.path} with evaluate, index and query")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .data import load_dataset
    from .retrieval.evaluate import evaluate
    from .retrieval_options import evaluation_protocol, index_config_from_args
    from .training.checkpoint import load_model

    ds = load_dataset(args.data)
    protocol, size = evaluation_protocol(ds, args.protocol, args.image_size)
    model, _ = load_model(args.checkpoint, device=_device(args.device))
    res = evaluate(model, ds[args.split], image_size=size, k=args.k, dedupe=args.dedupe, protocol=protocol,
                   batch_size=args.batch_size, progress=not args.quiet, run=str(args.checkpoint), dataset_root=ds.root,
                   index_kind=index_config_from_args(args), store=args.store, store_dtype=args.store_dtype, amp=args.amp)
    how = f" [protocol {protocol}: queries' shorter edge {max(size)}, database {size[0]}x{size[1]}, " \
          f"NMS over the top {res.meta['nms_window']}]" if protocol == "tokyo247" else ""
    print(f"{args.checkpoint} on {ds.name}/{args.split}{how} ({res.meta['precision']}): "
          + ", ".join(f"R@{n} {100 * v:.1f}" for n, v in res.recall.items()))
    if args.save:
        res.save(args.save)
        print(f"per-query results written to {args.save}")
    return 0


def _device(name: str):
    from .retrieval.device import pick_device

    return pick_device(None if name == "auto" else name)


def _cmd_index(args: argparse.Namespace) -> int:
    from .data import load_dataset
    from .retrieval.bundle import IndexBundle
    from .retrieval_options import bundle_index_config, image_size_from_args
    from .training.checkpoint import load_model

    model, _ = load_model(args.checkpoint, device=_device(args.device))
    ds = load_dataset(args.data)
    kind = bundle_index_config(args)
    bundle = IndexBundle.build(model, ds[args.split], image_size=image_size_from_args(args.image_size), kind=kind,
                               progress=not args.quiet, meta={"checkpoint": str(args.checkpoint), "dataset": str(ds.root)},
                               store=args.store, store_dtype=args.store_dtype)
    out = bundle.save(args.out)
    print(f"indexed {len(bundle.paths)} images of {ds.name}/{args.split} into {out}")
    return 0


def _cmd_query(args: argparse.Namespace) -> int:
    from .data.photo import open_photo
    from .reporting import print_localization
    from .retrieval.bundle import IndexBundle
    from .retrieval.localize import localize
    from .training.checkpoint import load_model

    bundle = IndexBundle.load(args.index)
    model, _ = load_model(args.checkpoint or bundle.meta["checkpoint"])
    # as the Upload page: decoded reduced for the database's image size; conversions, and an
    # unusable EXIF GPS block (ignored: the photo is localized, its error is unknown), are noted
    photo = open_photo(args.image, bundle.image_size)
    print_localization(args.image, photo.notes, localize(model, bundle, photo, args.k, gps=photo.gps))
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    from .prepare import prepare

    done = prepare(tuple(args.runs) if args.runs else DEFAULT_RUN_DIRS, tuple(args.splits), progress=not args.quiet,
                   all_seeds=args.all_seeds)
    print(f"prepared {len(done)} cached file(s) (database indexes and attention summaries)")
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    from .training.background import stop_training

    if not Path(args.run_dir).is_dir():
        raise FileNotFoundError(f"{args.run_dir}: no such run folder")
    stopped = stop_training(args.run_dir, force=args.force)  # the command line may stop any job
    print(f"{args.run_dir}: " + ("stop sent" if stopped else "no training process is alive"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .retrieval_options import add_index_arguments  # light, as add_train_arguments: the parser imports no torch
    from .training.options import add_train_arguments

    # the installed console script names itself; python -m keeps its spelling
    prog = "sfrs" if Path(sys.argv[0]).name == "sfrs" else "python -m sfrs_core"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="render a SynthCity dataset in the VPR folder format")
    p.add_argument("--preset", default="demo", choices=sorted(SYNTH_PRESETS))
    p.add_argument("--out", type=Path, default=Path("data/synthcity"))
    p.add_argument("--seed", type=int, default=None, help="override the preset's seed (default 0)")
    p.add_argument("--workers", type=int, default=None, help="render processes (default: all cores)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_synth)

    p = sub.add_parser("synth-sample", help="write a SynthCity contact sheet (views of one place, queries, labels)")
    p.add_argument("--preset", default="demo", choices=sorted(SYNTH_PRESETS))
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--out", type=Path, default=Path("assets/synthcity_sample.jpg"))
    p.set_defaults(func=_cmd_synth_sample)

    p = sub.add_parser("train", help="train a SARE baseline or SFRS generations; defaults are the paper's")
    add_train_arguments(p)
    p.add_argument("--resume", action="store_true", help="continue RUNS_DIR/RUN from its latest checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run of that name")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("demo", help="train the shipped demo models (SARE + SFRS on a SynthCity, 5 seeds) into assets/CITY")
    p.add_argument("--city", default="demo", choices=sorted(DEMO_CITIES),
                   help="demo: the plain SynthCity; challenge: the paper's challenges on (default demo)")
    p.add_argument("--data", type=Path, default=None, help="dataset folder (default data/synthcity or data/synthcity-challenge)")
    p.add_argument("--out", type=Path, default=None, help="export folder (default assets/demo or assets/challenge)")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"))
    p.add_argument("--seeds", type=int, nargs="+", default=list(DEMO_SEEDS), help="one SARE + SFRS pair per seed")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("explain", help="heatmap of a query and its top-1 match under a run's model")
    p.add_argument("--run", required=True, help="run folder or name (searched in assets/demo and runs)")
    p.add_argument("--query", type=int, required=True, help="query index in the split")
    p.add_argument("--method", default="gradcam", choices=["gradcam", "decomp", "activation"])
    p.add_argument("--split", default="test")
    p.add_argument("--generation", type=int, help="default: the last")
    p.add_argument("--opacity", type=float, default=0.5)
    p.add_argument("--out", type=Path, required=True, help="output path; one file per format")
    p.add_argument("--formats", nargs="+", default=["png", "pdf", "svg"])
    p.add_argument("--dpi", type=int, default=200)
    p.set_defaults(func=_cmd_explain)

    p = sub.add_parser("export-figures", help="the paper figure set comparing runs (first: baseline, last: SFRS)")
    p.add_argument("--runs", nargs="+", required=True)
    p.add_argument("--out", type=Path, default=Path("figs"))
    p.add_argument("--split", default="test")
    p.add_argument("--method", default="decomp", choices=["gradcam", "decomp", "activation"])
    p.add_argument("--attention-queries", type=int, help="queries for the attention bars (default: all)")
    p.add_argument("--dpi", type=int, default=200)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_export_figures)

    p = sub.add_parser("seeds", help="recall of runs that differ only in their seed: mean ± std, per condition")
    p.add_argument("--runs-dir", type=Path, nargs="+", default=[Path("assets/demo")])
    p.add_argument("--split", default="test")
    p.set_defaults(func=_cmd_seeds)

    p = sub.add_parser("attention-seeds", help="where SFRS looks against its seed's SARE baseline (class shares, sign "
                       "pointing game), paired over seeds and queries with 95 %% intervals (SynthCity label maps)")
    p.add_argument("--runs-dir", type=Path, nargs="+", default=[Path("assets/demo")])
    p.add_argument("--split", default="test")
    p.add_argument("--method", default="decomp", choices=["decomp", "gradcam", "activation"],
                   help="heatmap method (default decomp: the exact NetVLAD decomposition)")
    p.add_argument("--queries", type=int, default=None, help="the first N queries only (default: all)")
    p.add_argument("--out", type=Path, default=None, help="also write the numbers as JSON")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_attention_seeds)

    p = sub.add_parser("export-weights", help="write a trained VGG16 model's weights for OpenIBL (vgg16_netvlad)")
    p.add_argument("checkpoint", type=Path, help="a model checkpoint, e.g. runs/NAME/gen3.pt")
    p.add_argument("--format", default="openibl", choices=["openibl"],
                   help="openibl: a plain state dict that OpenIBL's embednetpca model loads")
    p.add_argument("--out", type=Path, required=True, help="output file (written atomically)")
    p.add_argument("--no-pca", action="store_true",
                   help="OpenIBL's embednet layout instead (no pca_layer; for a model without fitted PCA)")
    p.set_defaults(func=_cmd_export_weights)

    p = sub.add_parser("import-weights", help="convert OpenIBL's vgg16_netvlad weights into an SFRS Studio checkpoint")
    p.add_argument("weights", type=Path,
                   help="OpenIBL's file: its released vgg16_netvlad .pth or a checkpoint*.pth.tar")
    p.add_argument("--format", default="openibl", choices=["openibl"],
                   help="openibl: OpenIBL's embednetpca/embednet state dict (optionally in {'state_dict': ...})")
    p.add_argument("--out", type=Path, required=True,
                   help="checkpoint to write (atomically), for evaluate/index/query --checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=_cmd_import_weights)

    p = sub.add_parser("evaluate", help="recall@1/5/10/20 of a checkpoint on a dataset split")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--image-size", nargs="+", help="H W, or 'native' (default; 480 640 under the tokyo247 protocol)")
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--dedupe", action="store_true",
                   help="spatial NMS: one hit per place (the dataset's place groups, else per database position)")
    p.add_argument("--protocol", default="auto", choices=["auto", "plain", "tokyo247"],
                   help="tokyo247: OpenIBL's Tokyo 24/7 protocol (queries' shorter edge = max(H, W), one at a time; "
                        "NMS over folder groups in the top 120 = OpenIBL's 12 x 10, whatever N is printed; "
                        "default size 480 640); "
                        "auto (default): tokyo247 for a Tokyo 24/7 dataset, else plain")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", action="store_true",
                   help="extract in bf16/fp16 autocast (CUDA only; faster, not OpenIBL's numbers); default float32, "
                        "as OpenIBL evaluates. The results record the precision")
    p.add_argument("--save", type=Path, help="write per-query results (.npz)")
    add_index_arguments(p)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("index", help="index a split's database with a checkpoint, for `query`")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--out", type=Path, required=True, help="folder for index.faiss + bundle.json")
    p.add_argument("--image-size", nargs="+")
    p.add_argument("--device", default="auto")
    add_index_arguments(p)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_index)

    p = sub.add_parser("query", help="localize a photo against an index")
    p.add_argument("image", type=Path, help="the photo (JPEG, PNG, HEIC; any size: it is described at the index's "
                   "image size); its EXIF GPS, if usable, measures each match's error")
    p.add_argument("--index", type=Path, required=True)
    p.add_argument("--checkpoint", type=Path, help="default: the one the index was built with")
    p.add_argument("--k", type=int, default=5)
    p.set_defaults(func=_cmd_query)

    p = sub.add_parser("info", help="summarise a dataset: counts per split, area, positives per query")
    p.add_argument("path", type=Path, help="dataset folder or .mat file")
    p.add_argument("--format", default=None, choices=["vpr_folder", "pittsburgh", "tokyo247", "exif"])
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("prepare", help="cache database indexes and attention summaries of runs, for the app")
    p.add_argument("--runs", nargs="+", help=f"folders holding run folders (default: {' '.join(DEFAULT_RUN_DIRS)})")
    p.add_argument("--splits", nargs="+", default=["test"])
    p.add_argument("--all-seeds", action="store_true",
                   help="also runs that differ from another only in their seed (default: the lowest seed of each)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_prepare)

    p = sub.add_parser("stop", help="stop a run's background training (started from the app): it stays resumable")
    p.add_argument("run_dir", help="the run folder, e.g. runs/demo-sfrs")
    p.add_argument("--force", action="store_true", help="SIGKILL instead of SIGTERM")
    p.set_defaults(func=_cmd_stop)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DatasetError, FileExistsError, FileNotFoundError, ValueError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
