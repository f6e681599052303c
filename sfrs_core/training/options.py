"""The ``train`` command's flags and the :class:`TrainConfig` they describe.

One definition serves the command line (``python -m sfrs_core train``) and the app's background
jobs, which check a job's flags with the same parser before starting it. The same flags work
under ``torchrun --nproc_per_node=N -m sfrs_core train ...`` (see ``training.distributed``).
"""
from __future__ import annotations

import argparse
import contextlib
import io
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the parser itself imports nothing heavy (no torch for `--help`)
    from .config import TrainConfig

TRAIN_FLAGS = {  # CLI flag -> (TrainConfig path, type)
    "loss": ("loss", str), "generations": ("generations", int), "epochs": ("epochs", int),
    "lr": ("lr", float), "tuples_per_batch": ("tuples_per_batch", int), "cache_size": ("cache_size", int),
    "lambda_soft": ("lambda_soft", float), "seed": ("seed", int), "device": ("device", str),
    "runs_dir": ("runs_dir", str), "trunk": ("model.trunk", str), "clusters": ("model.num_clusters", int),
    "pos_num": ("mining.pos_num", int), "neg_num": ("mining.neg_num", int), "neg_pool": ("mining.neg_pool", int),
    "pos_pool": ("mining.pos_pool", int), "similarity": ("similarity", str), "gen0_epochs": ("gen0_epochs", int),
    "margin": ("margin", float), "teacher": ("teacher", str), "pca_samples": ("pca_samples", int),
    "trunk_weights": ("model.trunk_weights", str), "input_norm": ("model.input_norm", str),
    "amp": ("amp", bool), "channels_last": ("channels_last", bool), "log_every": ("log_every", int),
    "num_workers": ("num_workers", int), "random_trunk": ("random_trunk", bool), "kmeans_init": ("kmeans_init", str),
    "tuples_per_batch_scope": ("tuples_per_batch_scope", str),
    "per_rank_negative_cache": ("per_rank_negative_cache", bool),
}


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``train`` flags that describe a configuration (the command adds --resume and the like)."""
    parser.add_argument("--data", type=Path, help="training dataset (folder or .mat)")
    parser.add_argument("--run", "--run-name", dest="run", default="sfrs",
                        help="run name: the run is written to RUNS_DIR/RUN (under torchrun write --run-name: "
                        "torchrun's own parser reads --run as an ambiguous abbreviation of its --run-path)")
    parser.add_argument("--preset", default="paper", choices=["paper", "demo", "tiny"],
                        help="starting configuration; the flags below override it")
    parser.add_argument("--loss", choices=["sare_ind", "sare_joint", "triplet"])
    parser.add_argument("--generations", type=int, help="1 = the SARE baseline; the paper uses 4")
    parser.add_argument("--epochs", type=int, help="epochs per generation")
    parser.add_argument("--lr", type=float)
    parser.add_argument("--tuples-per-batch", type=int,
                        help="tuples per optimizer step (paper: 4); under torchrun see --tuples-per-batch-scope")
    parser.add_argument("--tuples-per-batch-scope", choices=["rank", "step"],
                        help="under torchrun: step = --tuples-per-batch over all ranks together (the paper preset: "
                        "4 per step, 4/W per rank, as OpenIBL's 4 GPUs x 1); rank = that many per rank (W x per step)")
    parser.add_argument("--cache-size", type=int, help="queries between re-extractions of the training descriptors")
    parser.add_argument("--lambda-soft", type=float, help="weight λ of the soft region loss")
    parser.add_argument("--temperatures", type=float, nargs="+", help="teacher temperature per generation")
    parser.add_argument("--trunk", choices=["vgg16", "resnet18", "resnet50", "mobilenet_v2"])
    parser.add_argument("--clusters", type=int, help="NetVLAD clusters K")
    parser.add_argument("--pca-dim", type=int, help="PCA-whitening output dim (0: none)")
    parser.add_argument("--image-size", nargs="+", help="H W, or 'native'")
    parser.add_argument("--pos-num", type=int)
    parser.add_argument("--neg-num", type=int)
    parser.add_argument("--neg-pool", type=int)
    parser.add_argument("--pos-pool", type=int, help="GPS positives ranked by the model that difficult positives come from")
    parser.add_argument("--gen0-epochs", type=int, help="epochs of generation 0 (OpenIBL, the paper preset: 1)")
    parser.add_argument("--similarity", choices=["dot", "euclidean"],
                        help="SARE logits: dot = sim/0.07 (SFRS, default), euclidean = -||q-x||^2 (OpenIBL's SARE baseline)")
    parser.add_argument("--margin", type=float, help="triplet margin on non-squared distances (default sqrt(0.1), as OpenIBL)")
    parser.add_argument("--trunk-weights", metavar="FILE",
                        help="start the trunk from a local state dict, e.g. OpenIBL's MatConvNet VGG16 "
                        "vd16_offtheshelf_conv5_3_max.pth (then MatConvNet input normalisation)")
    parser.add_argument("--random-trunk", action="store_true", default=None,
                        help="train from a random trunk on purpose (otherwise a run whose pretrained trunk weights "
                        "cannot be loaded refuses to start); recorded in config.json and trunk_weights.json")
    parser.add_argument("--input-norm", choices=["imagenet", "matconvnet"], help="override the normalisation the weights imply")
    parser.add_argument("--kmeans-init", choices=["faiss", "kmeans++"],
                        help="NetVLAD's k-means: kmeans++ (OpenIBL's scikit-learn k-means++, random_state = --seed; "
                        "the paper preset) or faiss (random init, faster; the demo presets)")
    parser.add_argument("--color-jitter", nargs="+", metavar="V",
                        help="ColorJitter brightness contrast saturation hue (paper: 0.7 0.7 0.7 0.5), or 'none'")
    parser.add_argument("--teacher", choices=["last", "selected"],
                        help="generation g-1's weights that teach g: its last epoch (OpenIBL) or its kept checkpoint")
    parser.add_argument("--select-recall-n", type=int, help="keep each generation's best validation recall@N epoch (0: last)")
    parser.add_argument("--pca-samples", type=int, help="random training images PCA-whitening is fitted on (10000)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--device", help="auto (default), cpu or cuda (under torchrun: each rank's cuda:LOCAL_RANK)")
    parser.add_argument("--amp", action="store_true", default=None,
                        help="mixed precision: bf16 autocast where supported, else fp16 with loss scaling (bf16 on CPU)")
    parser.add_argument("--channels-last", action="store_true", default=None, help="channels_last memory format (GPU)")
    parser.add_argument("--log-every", type=int, help="a metrics step record every N steps, losses averaged (default 1)")
    parser.add_argument("--num-workers", type=int, help="DataLoader workers reading training images (default 0)")
    parser.add_argument("--per-rank-negative-cache", action="store_true", default=None,
                        help="under torchrun: each rank keeps its own unmerged negative cache, as OpenIBL's per-rank "
                        "samplers (the exact replica of its 4-GPU run); default: the ranks' caches are merged")
    parser.add_argument("--runs-dir")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` of parsed ``train`` flags: the preset, then each given override."""
    from .config import TrainConfig
    from .presets import PRESETS

    data = PRESETS[args.preset](str(args.data), args.run).to_dict()
    for flag, (path, _) in TRAIN_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            *parents, leaf = path.split(".")
            target = data
            for p in parents:
                target = target[p]
            target[leaf] = value
    if args.pca_dim is not None:
        data["model"]["pca_dim"] = args.pca_dim or None
    if args.temperatures is not None:
        data["temperatures"] = args.temperatures
    if args.image_size is not None:
        data["image_size"] = None if args.image_size == ["native"] else [int(v) for v in args.image_size]
    if args.color_jitter is not None:
        data["color_jitter"] = None if args.color_jitter == ["none"] else [float(v) for v in args.color_jitter]
    if args.select_recall_n is not None:
        data["select_recall_n"] = args.select_recall_n or None
    return TrainConfig.from_dict(data)


def config_from_argv(argv: list[str]) -> TrainConfig:
    """The :class:`TrainConfig` that ``train ARGV`` would train; ``ValueError`` with argparse's
    message if the flags are invalid."""
    parser = argparse.ArgumentParser(prog="train", add_help=False)
    add_train_arguments(parser)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = parser.parse_args(argv)
    except SystemExit:
        lines = err.getvalue().strip().splitlines()
        raise ValueError(lines[-1] if lines else f"invalid train arguments: {argv}") from None
    if args.data is None:
        raise ValueError("--data is required (unless --resume)")
    return config_from_args(args)
