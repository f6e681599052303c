"""Extraction throughput and memory: the full pipeline against the bare trunk forward.

    python bench/extract.py --quick          # 256 images for throughput, 500 / 2 000 for memory (~3 min)
    python bench/extract.py                  # 512 images for throughput, 2 000 / 20 000 for memory (~15 min)
    python bench/extract.py --trunk vgg16 --size 480 640 --device cuda   # the paper's set-up, on a GPU

Images: JPEG files generated on the fly into a temporary folder (``--source`` W x H, default
480 x 360, quality 90; 128 distinct pictures of smooth colour fields with edges, written under as
many names as needed, so the decoder does real work on every file).

Model: the CPU demo trunk (MobileNetV2 cut at stride 16, D=96) + NetVLAD (K=64, 6 144-D) +
PCA-whitening to 4 096-D (random weights marked fitted: the same arithmetic as a fitted layer),
as ``sfrs_core.models.build_model`` makes it. On a GPU use ``--trunk vgg16 --size 480 640``
(the paper's VGG16 at Pittsburgh's size; ``--device cuda``: AMP and channels_last as in
:func:`~sfrs_core.retrieval.extract.extract_descriptors`).

Throughput, on the same images and batch size (each timed after one warm-up batch):

* ``bare trunk``     ``model.trunk(x)`` on images decoded and resized beforehand (tensors in RAM);
* ``model compute``  ``model(x)`` (trunk + NetVLAD + PCA) on the same tensors;
* ``full pipeline``  :func:`~sfrs_core.retrieval.extract.extract_to_store`: read + decode +
  resize + normalise in the DataLoader (``--workers``), trunk, NetVLAD, PCA, copy back and
  write to an on-disk descriptor store; its ``loader wait`` is the time the model waited for
  a decoded batch (:class:`~sfrs_core.retrieval.extract.ExtractStats`).

Memory: the full pipeline into a store for a small and a 10x larger database, each in a fresh
subprocess (peak RSS = ``VmHWM``), and, for contrast, the in-RAM extraction of the larger one,
whose N x 4096 float32 result grows with N. The memory runs use ``--mem-size`` (default
64 x 80) to keep the 20 000-image runs to a few minutes on 2 CPU cores.

Threads: torch runs ``--threads`` threads (default: cores - 1) so that with one loader worker
the cores are not oversubscribed; on a machine shared with other work, OpenMP threads that
wait for each other make an oversubscribed forward pass many times slower.

Timings on a shared machine are noisy; the ratios are what to compare.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.memory import rss_mb  # noqa: E402

DISTINCT = 128



def make_images(folder: Path, n: int, width: int, height: int) -> None:
    """``n`` JPEG files ``img_000000.jpg``... (``DISTINCT`` different pictures, reused)."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    blobs = []
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for _ in range(DISTINCT):
        img = np.zeros((height, width, 3), np.float32)
        for c in range(3):
            fx, fy, ph = rng.uniform(0.002, 0.03, 2).tolist() + [rng.uniform(0, 6.28)]
            img[..., c] = 127 + 100 * np.sin(fx * xx + fy * yy + ph)
        for _ in range(12):  # a few hard-edged rectangles ("facades", "signs")
            x0, y0 = int(rng.integers(0, width - 20)), int(rng.integers(0, height - 20))
            img[y0:y0 + int(rng.integers(10, 120)), x0:x0 + int(rng.integers(10, 160))] = rng.uniform(0, 255, 3)
        img += rng.normal(0, 6, img.shape)
        path = folder / "tmp.jpg"
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(path, quality=90)
        blobs.append(path.read_bytes())
    path.unlink()
    for i in range(n):
        (folder / f"img_{i:06d}.jpg").write_bytes(blobs[i % DISTINCT])


def image_set(folder: Path, n: int):
    import numpy as np

    from sfrs_core.data.dataset import ImageSet

    utm = np.column_stack([584_000 + np.arange(n, dtype=float), np.full(n, 4_477_000.0)])
    latlon = np.column_stack([np.full(n, 40.44), np.full(n, -79.99)])
    return ImageSet(folder, [f"img_{i:06d}.jpg" for i in range(n)], utm, (17, "T"), latlon)


def make_model(trunk: str, device: str):
    import torch

    from sfrs_core.models import ModelConfig, build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(trunk=trunk, num_clusters=64, pca_dim=4096, pretrained=False))
    with torch.no_grad():
        lin = model.pca.linear
        lin.weight.normal_(0, lin.in_features ** -0.5)
        model.pca.fitted.fill_(True)
    return model.eval().to(device)


# ---------------------------------------------------------------------- throughput


def throughput(folder: Path, n: int, size: tuple[int, int], batch: int, workers: list[int], trunk: str,
               device: str) -> dict:
    import torch

    from sfrs_core.data.transforms import ImageTransform
    from sfrs_core.retrieval.extract import ExtractStats, extract_to_store

    dev = torch.device(device)
    model = make_model(trunk, device)
    images = image_set(folder, n)
    transform = ImageTransform(size, model.normalization)
    t0 = time.perf_counter()
    tensors = [torch.stack([transform(images.image_path(i)) for i in range(a, min(a + batch, n))])
               for a in range(0, n, batch)]
    decode_s = time.perf_counter() - t0

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def timed(fn) -> float:
        with torch.inference_mode():
            fn(tensors[0].to(dev))  # warm-up
            sync()
            start = time.perf_counter()
            for x in tensors:
                fn(x.to(dev)).float().cpu()
            sync()
            return time.perf_counter() - start

    out = {"images": n, "batch": batch, "size": list(size), "trunk": trunk, "device": device,
           "torch_threads": torch.get_num_threads(), "decode_resize_s_serial": decode_s,
           "bare_trunk_s": timed(model.trunk), "model_compute_s": timed(model)}
    del tensors
    for w in workers:
        with tempfile.TemporaryDirectory() as tmp:
            stats = ExtractStats()
            extract_to_store(model, image_set(folder, min(n, batch)), transform, Path(tmp) / "warm",
                             batch_size=batch, device=device, progress=False)
            extract_to_store(model, images, transform, Path(tmp) / "db", batch_size=batch, device=device,
                             num_workers=w, progress=False, stats=stats)
        out[f"pipeline_w{w}"] = {"wall_s": stats.wall_s, "loader_wait_s": stats.loader_wait_s,
                                 "compute_s": stats.compute_s, "write_s": stats.write_s}
    return out


# ---------------------------------------------------------------------- memory


def memory(folder: Path, n: int, size: tuple[int, int], batch: int, workers: int, trunk: str, device: str,
           mode: str) -> dict:
    from sfrs_core.data.transforms import ImageTransform
    from sfrs_core.retrieval.extract import ExtractStats, extract_descriptors, extract_to_store

    model = make_model(trunk, device)
    images = image_set(folder, n)
    transform = ImageTransform(size, model.normalization)
    base = rss_mb("VmRSS")
    stats = ExtractStats()
    with tempfile.TemporaryDirectory() as tmp:
        if mode == "store":
            store = extract_to_store(model, images, transform, Path(tmp) / "db", batch_size=batch, device=device,
                                     num_workers=workers, progress=False, stats=stats)
            assert store.complete
        else:
            desc = extract_descriptors(model, images, transform, batch_size=batch, device=device,
                                       num_workers=workers, progress=False, stats=stats)
            assert desc.shape == (n, 4096)
    return {"mode": mode, "images": n, "peak_rss_mb": rss_mb("VmHWM"), "base_rss_mb": base,
            "wall_s": stats.wall_s, "loader_wait_s": stats.loader_wait_s}


# ---------------------------------------------------------------------- driver


def _child(args: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--trunk", default="mobilenet_v2")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, nargs=2, default=[240, 320], help="H W the images are resized to")
    parser.add_argument("--mem-size", type=int, nargs=2, default=[64, 80], help="H W for the memory runs")
    parser.add_argument("--source", type=int, nargs=2, default=[480, 360], help="W H of the generated JPEGs")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                        help="torch threads (default: cores - 1, leaving one to the loader worker)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--mem-workers", type=int, default=1)
    parser.add_argument("--throughput-images", type=int)
    parser.add_argument("--mem-images", type=int, nargs=2)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--_child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._child:
        import torch

        torch.set_num_threads(args.threads)
        what, folder, n = args._child[0], Path(args._child[1]), int(args._child[2])
        if what == "throughput":
            res = throughput(folder, n, tuple(args.size), args.batch, args.workers, args.trunk, args.device)
        else:
            res = memory(folder, n, tuple(args.mem_size), args.batch, args.mem_workers, args.trunk, args.device,
                         what)
        print(json.dumps(res))
        return 0

    n_tp = args.throughput_images or (256 if args.quick else 512)
    small, large = args.mem_images or ((500, 2000) if args.quick else (2000, 20000))
    common = ["--trunk", args.trunk, "--device", args.device, "--size", *map(str, args.size),
              "--mem-size", *map(str, args.mem_size), "--batch", str(args.batch),
              "--workers", *map(str, args.workers), "--mem-workers", str(args.mem_workers),
              "--threads", str(args.threads)]
    tmp = Path(tempfile.mkdtemp(prefix="sfrs_bench_extract_"))
    try:
        t0 = time.perf_counter()
        make_images(tmp, max(n_tp, large), *args.source)
        print(f"{max(n_tp, large)} JPEGs ({args.source[0]}x{args.source[1]}) written in "
              f"{time.perf_counter() - t0:.0f} s; {os.cpu_count()} CPU cores, device {args.device}", flush=True)
        tp = _child(["--_child", "throughput", str(tmp), str(n_tp), *common])
        print(f"  throughput: {json.dumps(tp)}", flush=True)
        mem = []
        for mode, n in (("store", small), ("store", large), ("ram", large)):
            mem.append(_child(["--_child", mode, str(tmp), str(n), *common]))
            print(f"  memory: {json.dumps(mem[-1])}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    n = tp["images"]
    bare = n / tp["bare_trunk_s"]
    print(f"\nthroughput: {n} images, {tp['size'][0]}x{tp['size'][1]}, batch {tp['batch']}, {tp['trunk']} + "
          f"NetVLAD K=64 + PCA 4096, {tp['device']}, torch threads {tp['torch_threads']} "
          f"(serial decode+resize alone: {n / tp['decode_resize_s_serial']:.0f} img/s)")
    head = f"{'':<26} {'img/s':>7} {'x bare trunk':>12} {'loader wait s':>13} {'wait %':>7} {'write s':>8}"
    print(head)
    print("-" * len(head))
    print(f"{'bare trunk (tensors)':<26} {bare:>7.1f} {1.0:>12.3f}")
    print(f"{'model compute (tensors)':<26} {n / tp['model_compute_s']:>7.1f} {tp['bare_trunk_s'] / tp['model_compute_s']:>12.3f}")
    for w in args.workers:
        p = tp[f"pipeline_w{w}"]
        print(f"{f'full pipeline, workers={w}':<26} {n / p['wall_s']:>7.1f} {tp['bare_trunk_s'] / p['wall_s']:>12.3f} "
              f"{p['loader_wait_s']:>13.2f} {100 * p['loader_wait_s'] / p['wall_s']:>6.1f}% {p['write_s']:>8.2f}")
    print(f"\nmemory: full pipeline at {args.mem_size[0]}x{args.mem_size[1]}, workers={args.mem_workers}, "
          "each run in a fresh process")
    head = f"{'':<22} {'images':>7} {'peak RSS MB':>11} {'base MB':>8} {'peak-base MB':>12} {'img/s':>7}"
    print(head)
    print("-" * len(head))
    for m in mem:
        label = "store (streamed)" if m["mode"] == "store" else "in RAM (ndarray)"
        print(f"{label:<22} {m['images']:>7} {m['peak_rss_mb']:>11.0f} {m['base_rss_mb']:>8.0f} "
              f"{m['peak_rss_mb'] - m['base_rss_mb']:>12.0f} {m['images'] / m['wall_s']:>7.1f}")
    grow = mem[1]["peak_rss_mb"] - mem[0]["peak_rss_mb"]
    print(f"store: {large // small}x the images, peak RSS {grow:+.0f} MB; "
          f"in RAM at {large}: {mem[2]['peak_rss_mb'] - mem[1]['peak_rss_mb']:+.0f} MB over the store "
          f"({large} x 4096 float32 = {large * 4096 * 4 / 2**20:.0f} MB)")
    if args.out:
        args.out.write_text(json.dumps({"throughput": tp, "memory": mem}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
