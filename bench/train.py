"""Training and extraction speed of a configuration (default: the CPU demo on SynthCity).

    python bench/train.py [--data data/synthcity] [--preset demo] [--steps 10] [--full]

Prints, side by side: images/s of descriptor extraction from image files (the full model) and
from the frozen-trunk cache the trainer uses, and tuples/s of a SARE step (generation 0) and of
an SFRS step (generation 1: regions of every positive and negative, plus the teacher); with
``--full``, the wall time of one whole training run of the preset (the demo: under 30 minutes).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from sfrs_core.data.transforms import ImageTransform  # noqa: E402
from sfrs_core.retrieval.extract import extract_descriptors  # noqa: E402
from sfrs_core.training.feature_cache import descriptors  # noqa: E402
from sfrs_core.training.presets import PRESETS  # noqa: E402
from sfrs_core.training.trainer import Trainer, train  # noqa: E402


def timed(fn, repeat: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/synthcity")
    parser.add_argument("--preset", default="demo", choices=sorted(PRESETS))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--images", type=int, default=256, help="images for the extraction timings")
    parser.add_argument("--full", action="store_true", help="also time one whole training run of the preset")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = PRESETS[args.preset](args.data, "bench").replace(runs_dir=tmp)
        trainer = Trainer(cfg, progress=False)
        trainer._open_run_dir()
        t0 = time.perf_counter()
        trainer._prepare()
        prep = time.perf_counter() - t0
        model, split = trainer.model, trainer.train_split
        feats = trainer.split_features(cfg.train_split)
        n = min(args.images, len(split.database))
        transform = ImageTransform(cfg.image_size, model.normalization)
        t_full = timed(lambda: extract_descriptors(model, split.database, transform, indices=range(n),
                                                   batch_size=cfg.batch_size, progress=False))
        t_cached = timed(lambda: descriptors(model, feats.db, cfg.batch_size))  # the whole database
        print(f"config {args.preset}: {cfg.model.trunk} K={cfg.model.num_clusters} images {cfg.image_size or 'native'}, "
              f"{torch.get_num_threads()} threads, device {trainer.device}")
        print(f"  set-up (frozen features of {len(split.database) + len(split.queries)} train images + k-means): {prep:.1f} s")
        print(f"  extraction, full model from files : {n / t_full:7.1f} img/s")
        print(f"  extraction, from the frozen cache : {len(feats.db) / t_cached:7.1f} img/s  "
              f"({(len(feats.db) / t_cached) / (n / t_full):.1f}x)")
        trainer.miner.refresh(descriptors(model, feats.db).numpy(), descriptors(model, feats.q).numpy(), rerank=True)
        rng = np.random.default_rng(0)
        queries = trainer.miner.trainable
        teacher = trainer.model.__class__(model.config)
        teacher.load_state_dict(model.state_dict())
        teacher.eval().requires_grad_(False)
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
        rates = {}
        for g, name in ((0, "SARE step (generation 0)"), (1, "SFRS step (generation 1)")):
            model.train()

            def step():
                batch = [trainer.miner.mine(int(q), rng) for q in rng.choice(queries, cfg.tuples_per_batch)]
                loss = trainer.train_step(model, teacher if g else None, batch, g)["loss"]
                opt.zero_grad()
                loss.backward()
                opt.step()

            step()  # warm-up
            rates[name] = cfg.tuples_per_batch / timed(step, args.steps)
        for name, rate in rates.items():
            print(f"  {name:<26}: {rate:7.2f} tuples/s")
        per_epoch = len(queries)
        later = sum(cfg.epochs_of(g) for g in range(1, cfg.generations))
        est = per_epoch * (cfg.epochs_of(0) / rates["SARE step (generation 0)"] + later / rates["SFRS step (generation 1)"])
        print(f"  estimated training time, generation 0 {cfg.epochs_of(0)} epochs + {later} later epochs x "
              f"{per_epoch} queries: {est / 60:.1f} min (+ extraction, mining and evaluation)")
    if args.full:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = PRESETS[args.preset](args.data, "bench-full").replace(runs_dir=tmp, seed=args.seed)
            start = time.perf_counter()
            train(cfg, progress=False)
            minutes = (time.perf_counter() - start) / 60
        print(f"  full training of one seed ({args.preset}, seed {args.seed}), set-up included: {minutes:.1f} min "
              f"= {minutes / 30:.2f}x the 30-minute budget")


if __name__ == "__main__":
    main()
