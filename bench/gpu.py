"""The GPU checks of issue 10 in one command: extraction throughput, a DDP training step with
NCCL, and faiss on GPU against faiss on CPU.

    python bench/gpu.py --out gpu.json          # on a CUDA machine: all three (~5 min on one H200)
    python bench/gpu.py --only extract faiss    # some of them
    python bench/gpu.py --smoke                 # tiny sizes; runs on CPU too (tests/test_bench_gpu.py)

``extract``
    VGG16 + NetVLAD (K=64) + PCA-4096 (random weights, no download) at 480x640 (``--size``),
    batch ``--batch`` (32), input tensors already on the device, in four settings: float32
    (cuDNN's TF32 convolutions, torch's default), float32 + channels_last, AMP (bf16 autocast
    where supported, else fp16, as :func:`~sfrs_core.retrieval.extract.amp_dtype` picks), and
    AMP + channels_last (what :func:`~sfrs_core.retrieval.extract.extract_to_store` runs on
    CUDA). Images/s, and the achieved FLOP/s (forward FLOPs counted by
    ``torch.utils.flop_counter``) as a fraction of the GPU's bf16 dense peak: both the vendor's
    figure (table below, or ``--peak-tflops``) and the bf16 8192^3 matmul rate measured on the
    spot. Then the full pipeline from JPEG files (``--pipeline-images`` 640x480 files, decode and
    resize in ``--workers`` DataLoader workers, pinned memory, the model, float16 store) with AMP
    on and off, and the share of the wall time the model waited for the loader.
``ddp``
    With 2+ GPUs: ``torchrun --nproc_per_node=GPUS -m sfrs_core train`` (NCCL for CUDA tensors)
    on the tiny SynthCity with VGG16 at 480x640, AMP and channels_last, stopped after
    ``--ddp-steps`` steps; checks that every rank stepped, that the ranks trained on different
    queries and held the same weights. With one GPU, NCCL refuses two ranks on one device, so:
    the same training as one process on the GPU (the single-GPU path), and one DDP step of the
    same model and SARE loss in a one-rank NCCL process group (:meth:`DistContext.ddp`), which
    shows NCCL initialising and all-reducing the gradients on this GPU.
``faiss``
    ``--faiss-n`` (250 000) x 4096 float32 clustered descriptors, 1 000 queries, k=10: exact
    (flat) search with faiss on GPU (:func:`~sfrs_core.retrieval.index.to_gpu`; sharded over
    all GPUs) against faiss on every CPU core; top-1 agreement between the two. Where faiss has
    no GPU support (``faiss-cpu``) the GPU row is skipped, say so, and the same exact search in
    torch on the GPU (matmul + topk, not faiss) is timed instead, for scale.

Every section catches its own failure and reports it, so one broken check does not hide the
others. ``--out`` writes everything as JSON.

On a lent machine without this repository's environment (e.g. the H200 here: Python 3.12,
CUDA torch and torchvision, opencv, scipy, matplotlib, tqdm, but no faiss, utm or piexif),
``bench/gpu_wheels.sh`` downloads the missing wheels into ``.whl/`` to carry there. The whole
check is then one device command (carry ``.whl``; about 18 MB)::

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
      && export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 \
      && timeout 540 python3 bench/gpu.py --out $OUT/gpu.json 2>&1 | tee $OUT/gpu.log
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: Dense bf16 tensor-core peak, TFLOP/s, from the vendors' data sheets (no sparsity).
BF16_PEAK_TFLOPS = {
    "H200": 989.4, "H100 SXM": 989.4, "H100 80GB HBM3": 989.4, "H100 PCIe": 756.0, "H100": 756.0,
    "GH200": 989.4, "B200": 2250.0, "A100": 312.0, "A800": 312.0, "A10G": 70.0, "A10": 125.0,
    "L40S": 362.1, "L40": 181.0, "L4": 121.0, "RTX 4090": 165.2, "RTX 6000 Ada": 364.2,
}


def vendor_peak_tflops(name: str) -> float | None:
    """The data-sheet bf16 peak of the GPU called ``name`` (longest matching key), or None."""
    hits = [key for key in BF16_PEAK_TFLOPS if key in name]
    return BF16_PEAK_TFLOPS[max(hits, key=len)] if hits else None


def _sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def measured_peak_tflops(dev, n: int = 8192, reps: int = 10) -> float:
    """bf16 ``n^3`` matmul rate on ``dev`` (float32 on CPU; mean of ``reps`` after 3 warm-ups), TFLOP/s."""
    import torch

    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(dev)
    return 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e12


# ---------------------------------------------------------------------- extract


def forward_flops(model, size: tuple[int, int], dev) -> float:
    """Forward FLOPs of ``model`` on one ``size`` image (``torch.utils.flop_counter``)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, *size, device=dev)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x)
    return float(counter.get_total_flops())


def model_throughput(model, dev, size: tuple[int, int], batch: int, iters: int) -> list[dict]:
    """Images/s of ``model`` on device-resident batches in the four precision/layout settings."""
    import torch

    from sfrs_core.retrieval.extract import amp_dtype, inference_state

    x = torch.randn(batch, 3, *size, device=dev)
    rows = []
    for amp in (False, True):
        for channels_last in (False, True):
            dtype = amp_dtype(dev) if amp and dev.type == "cuda" else torch.bfloat16
            with inference_state(model, dev, channels_last=channels_last) as net, torch.inference_mode(), \
                    torch.autocast(dev.type, dtype=dtype, enabled=amp):
                inp = x.contiguous(memory_format=torch.channels_last) if channels_last else x
                for _ in range(2):  # warm-up (cuDNN picks its algorithms)
                    net(inp)
                _sync(dev)
                t0 = time.perf_counter()
                for _ in range(iters):
                    out = net(inp)
                _sync(dev)
                secs = time.perf_counter() - t0
            rows.append({"amp": amp, "amp_dtype": str(dtype).replace("torch.", "") if amp else "float32",
                         "channels_last": channels_last, "images": batch * iters, "seconds": secs,
                         "img_per_s": batch * iters / secs, "out_dim": int(out.shape[1])})
    return rows


def pipeline_throughput(model, dev, size: tuple[int, int], batch: int, n: int, workers: int) -> list[dict]:
    """The full pipeline (JPEG files -> store) with AMP on and off."""
    from bench.extract import image_set, make_images
    from sfrs_core.data.transforms import ImageTransform
    from sfrs_core.retrieval.extract import ExtractStats, extract_to_store

    rows = []
    with tempfile.TemporaryDirectory(prefix="sfrs_bench_gpu_") as tmp:
        folder = Path(tmp) / "jpg"
        make_images(folder, n, size[1], size[0])
        images = image_set(folder, n)
        transform = ImageTransform(size, model.normalization)
        extract_to_store(model, image_set(folder, batch), transform, Path(tmp) / "warm", batch_size=batch,
                         device=dev, progress=False)
        for amp in (True, False):
            stats = ExtractStats()
            extract_to_store(model, images, transform, Path(tmp) / f"db_amp{int(amp)}", dtype="float16",
                             batch_size=batch, device=dev, num_workers=workers, amp=amp if dev.type == "cuda" else None,
                             progress=False, stats=stats)
            rows.append({"amp": amp and dev.type == "cuda", "images": n, "workers": workers,
                         "wall_s": stats.wall_s, "img_per_s": n / stats.wall_s,
                         "loader_wait_share": stats.loader_wait_s / stats.wall_s})
    return rows


def check_extract(args, dev) -> dict:
    import torch

    from bench.extract import make_model

    model = make_model("vgg16", str(dev))
    size = tuple(args.size)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    flops = forward_flops(model, size, dev)
    out = {"device": name, "size": list(size), "batch": args.batch, "gflops_per_image": flops / 1e9,
           "tf32_convs": bool(torch.backends.cudnn.allow_tf32),
           "vendor_bf16_peak_tflops": args.peak_tflops or vendor_peak_tflops(name),
           "matmul_n": args.matmul_n, "measured_matmul_tflops": measured_peak_tflops(dev, n=args.matmul_n)}
    out["model"] = model_throughput(model, dev, size, args.batch, args.iters)
    for row in out["model"]:
        row["tflops"] = row["img_per_s"] * flops / 1e12
        row["of_measured_peak"] = row["tflops"] / out["measured_matmul_tflops"]
        if out["vendor_bf16_peak_tflops"]:
            row["of_vendor_peak"] = row["tflops"] / out["vendor_bf16_peak_tflops"]
    out["pipeline"] = pipeline_throughput(model, dev, size, args.batch, args.pipeline_images, args.workers)
    return out


# ---------------------------------------------------------------------- ddp


def _tiny_city(folder: Path) -> Path:
    from sfrs_core.data.synthcity import generate, preset

    return generate(preset("tiny"), folder / "tiny", workers=min(8, os.cpu_count() or 1), progress=False)


def _train_args(city: Path, runs: Path, args, dev) -> list[str]:
    flags = ["--data", str(city), "--preset", "tiny", "--trunk", "vgg16", "--clusters", "64", "--pca-dim", "0",
             "--generations", "1", "--image-size", *map(str, args.size), "--run-name", "gpu", "--runs-dir", str(runs),
             "--quiet", "--random-trunk"]  # a speed check: no ImageNet VGG16 weights needed (nor downloaded)
    return flags + (["--amp", "--channels-last", "--device", "cuda"] if dev.type == "cuda" else ["--device", "cpu"])


def _run_training(label: str, cmd: list[str], debug: Path, steps: int, timeout: float) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
           "SFRS_TRAIN_DEBUG_DIR": str(debug), "SFRS_TRAIN_STOP_AT_ITERATION": str(steps)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    stopped = f"stopped at iteration {steps}" in proc.stderr
    ranks = sorted(debug.glob("rank*.jsonl"))
    records = [[json.loads(line) for line in p.read_text().splitlines()] for p in ranks]
    step_records = [[r for r in rec if r["event"] == "step"] for rec in records]
    queries = [{q for s in st for q in s["queries"]} for st in step_records]
    digests = [[r["digest"] for r in rec if r["event"] == "latest"] for rec in records]
    return {"command": label,
            "ok": stopped, "wall_s": wall, "ranks": len(ranks),
            "steps_per_rank": [len(st) for st in step_records],
            "ranks_disjoint_queries": all(not (a & b) for i, a in enumerate(queries) for b in queries[i + 1:]),
            "same_weights_across_ranks": len({tuple(d) for d in digests}) == 1 if digests else None,
            "stderr_tail": "" if stopped else "\n" + proc.stderr[-2000:]}


def ddp_step_one_rank(dev, size: tuple[int, int]) -> dict:
    """One DDP (NCCL on CUDA, gloo on CPU) step of VGG16 NetVLAD + SARE in a one-rank group."""
    import torch
    import torch.distributed as dist

    from sfrs_core.losses import hard_loss
    from sfrs_core.models import ModelConfig, build_model
    from sfrs_core.training.distributed import DistContext

    backend = "nccl" if dev.type == "cuda" else "gloo"
    with tempfile.TemporaryDirectory() as tmp:
        dist.init_process_group(backend, init_method=f"file://{tmp}/pg", rank=0, world_size=1)
        try:
            torch.manual_seed(0)
            model = build_model(ModelConfig(trunk="vgg16", num_clusters=64, pca_dim=None, pretrained=False))
            model = model.to(dev).train()
            B, N = 2, 4
            x = torch.randn(B * (2 + N), 3, *size, device=dev)
            if dev.type == "cuda":  # as the trainer: channels_last before DDP registers the parameters
                x = x.contiguous(memory_format=torch.channels_last)
                model.to(memory_format=torch.channels_last)
            net = DistContext().ddp(model, dev, sync_buffers=False)
            opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
            times = []
            for _ in range(3):  # the first step includes DDP's bucket set-up and cuDNN's autotuning
                _sync(dev)
                t0 = time.perf_counter()
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                    d = net(x, use_pca=False).float()
                loss = hard_loss("sare_ind", d[:B], d[B:2 * B], d[2 * B:].view(B, N, -1))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                _sync(dev)
                times.append(time.perf_counter() - t0)
            grads_finite = all(torch.isfinite(p.grad).all().item() for p in model.parameters() if p.grad is not None)
            return {"backend": dist.get_backend(), "world_size": dist.get_world_size(), "tuples": B,
                    "images_per_step": len(x), "step_s": times, "loss": float(loss.detach()), "grads_finite": grads_finite}
        finally:
            dist.destroy_process_group()


def check_ddp(args, dev) -> dict:
    import torch

    gpus = torch.cuda.device_count() if dev.type == "cuda" else 0
    out: dict = {"gpus": gpus}
    with tempfile.TemporaryDirectory(prefix="sfrs_bench_ddp_") as tmp:
        tmp = Path(tmp)
        city = _tiny_city(tmp)
        train = _train_args(city, tmp / "runs", args, dev)
        if gpus >= 2:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
                   "-m", "sfrs_core", "train", *train]
            out["torchrun"] = _run_training(f"torchrun --nproc_per_node={gpus} -m sfrs_core train", cmd, tmp / "debug", args.ddp_steps, args.timeout)
        else:
            cmd = [sys.executable, "-m", "sfrs_core", "train", *train]
            out["one_process"] = _run_training("python -m sfrs_core train", cmd, tmp / "debug", args.ddp_steps, args.timeout)
            out["ddp_one_rank"] = ddp_step_one_rank(dev, tuple(args.size))
    return out


# ---------------------------------------------------------------------- faiss


def clustered(n: int, dim: int, queries: int, seed: int = 0):
    """``n`` unit vectors around ``n // 20`` random unit centres (noise of the centres' norm, as in
    ``bench/retrieval.py``), and ``queries`` copies of some with noise 1.5x their norm."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(1, n // 20), dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    scale = np.float32(1 / np.sqrt(dim))
    x = np.empty((n, dim), np.float32)
    for a in range(0, n, 16384):
        b = min(n, a + 16384)
        x[a:b] = rng.standard_normal((b - a, dim), dtype=np.float32) * scale
        x[a:b] += centres[rng.integers(0, len(centres), b - a)]
        x[a:b] /= np.linalg.norm(x[a:b], axis=1, keepdims=True)
    q = x[rng.choice(n, queries, replace=False)] + rng.standard_normal((queries, dim), dtype=np.float32) * (1.5 * scale)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return x, q


def _timed_search(index, q, k: int) -> tuple[float, object]:
    from sfrs_core.retrieval.index import search

    search(index, q[:16], k)  # warm-up
    t0 = time.perf_counter()
    _, ids = search(index, q, k)
    return time.perf_counter() - t0, ids


def check_faiss(args, dev) -> dict:
    import faiss
    import numpy as np
    import torch

    from sfrs_core.retrieval.index import build_index, faiss_gpu_count

    x, q = clustered(args.faiss_n, 4096, args.faiss_queries)
    k = 10
    out = {"n": args.faiss_n, "queries": len(q), "k": k, "faiss": faiss.__version__,
           "faiss_gpus": faiss_gpu_count(), "cpu_threads": faiss.omp_get_max_threads()}
    t0 = time.perf_counter()
    cpu = build_index(x, "flat", use_gpu=False)
    out["cpu_build_s"] = time.perf_counter() - t0
    out["cpu_search_s"], cpu_ids = _timed_search(cpu, q, k)
    del cpu
    if out["faiss_gpus"]:
        t0 = time.perf_counter()
        gpu = build_index(x, "flat", use_gpu=True)
        out["gpu_build_s"] = time.perf_counter() - t0
        out["gpu_search_s"], gpu_ids = _timed_search(gpu, q, k)
        out["gpu_top1_agrees_with_cpu"] = float(np.mean(gpu_ids[:, 0] == cpu_ids[:, 0]))
        del gpu
    elif dev.type == "cuda":  # for scale: the same exact search in torch
        xd = torch.from_numpy(x).to(dev)
        qd = torch.from_numpy(q).to(dev)
        torch.topk(qd[:16] @ xd.T, k)
        _sync(dev)
        t0 = time.perf_counter()
        ids = torch.topk(qd @ xd.T, k).indices.cpu().numpy()
        out["torch_gpu_search_s"] = time.perf_counter() - t0
        out["torch_gpu_top1_agrees_with_cpu"] = float(np.mean(ids[:, 0] == cpu_ids[:, 0]))
        del xd, qd
    return out


# ---------------------------------------------------------------------- report


def report(res: dict) -> None:
    """Print each section's table and ratios."""
    ex = res.get("extract")
    if ex and "error" not in ex:
        peak = ex["vendor_bf16_peak_tflops"]
        print(f"\nextract: {ex['device']}, VGG16 + NetVLAD K=64 + PCA 4096, {ex['size'][0]}x{ex['size'][1]}, "
              f"batch {ex['batch']}, {ex['gflops_per_image']:.1f} GFLOP/image; bf16 peak: data sheet "
              f"{peak or '?'} TFLOP/s, measured {ex['matmul_n']}^3 matmul {ex['measured_matmul_tflops']:.1f} TFLOP/s")
        base = ex["model"][0]["img_per_s"]
        print(f"{'setting':<32} {'img/s':>8} {'x fp32':>7} {'TFLOP/s':>8} {'of peak':>8} {'of matmul':>9}")
        for r in ex["model"]:
            label = f"{'AMP ' + r['amp_dtype'] if r['amp'] else 'float32'}{' + channels_last' if r['channels_last'] else ''}"
            vendor = f"{r['of_vendor_peak']:.1%}" if "of_vendor_peak" in r else "-"
            print(f"{label:<32} {r['img_per_s']:>8.1f} {r['img_per_s'] / base:>7.2f} {r['tflops']:>8.1f} "
                  f"{vendor:>8} {r['of_measured_peak']:>9.1%}")
        best = max(r["img_per_s"] for r in ex["model"])
        for r in ex["pipeline"]:
            print(f"{'pipeline from JPEGs, AMP ' + ('on' if r['amp'] else 'off'):<32} {r['img_per_s']:>8.1f} "
                  f"{r['img_per_s'] / base:>7.2f}   {r['img_per_s'] / best:.2f}x the best model-only rate, "
                  f"loader wait {r['loader_wait_share']:.0%} ({r['workers']} workers, {r['images']} images)")
    dd = res.get("ddp")
    if dd and "error" not in dd:
        print(f"\nddp: {dd['gpus']} GPU(s)")
        for key in ("torchrun", "one_process"):
            if key in dd:
                r = dd[key]
                print(f"  {r['command']}: {'ok' if r['ok'] else 'FAILED'}, {r['ranks']} rank(s), steps per rank "
                      f"{r['steps_per_rank']}, disjoint queries {r['ranks_disjoint_queries']}, same weights "
                      f"{r['same_weights_across_ranks']}, {r['wall_s']:.0f} s in all{r['stderr_tail']}")
        if "ddp_one_rank" in dd:
            r = dd["ddp_one_rank"]
            print(f"  DDP step in a {r['backend']} group of {r['world_size']}: {r['images_per_step']} images/step, "
                  f"steps {', '.join(f'{s:.3f}' for s in r['step_s'])} s, loss {r['loss']:.4f}, "
                  f"gradients finite {r['grads_finite']}")
    fa = res.get("faiss")
    if fa and "error" not in fa:
        print(f"\nfaiss {fa['faiss']}: exact search, {fa['n']} x 4096 float32, {fa['queries']} queries, k={fa['k']}")
        print(f"  CPU ({fa['cpu_threads']} threads): build {fa['cpu_build_s']:.1f} s, search {fa['cpu_search_s']:.2f} s")
        if "gpu_search_s" in fa:
            print(f"  GPU ({fa['faiss_gpus']}): build {fa['gpu_build_s']:.1f} s, search {fa['gpu_search_s']:.3f} s "
                  f"({fa['cpu_search_s'] / fa['gpu_search_s']:.1f}x faster than CPU), top-1 agreement "
                  f"{fa['gpu_top1_agrees_with_cpu']:.3f}")
        else:
            print("  faiss has no GPU support here (faiss-cpu): no faiss GPU row")
            if "torch_gpu_search_s" in fa:
                print(f"  torch matmul+topk on the GPU (not faiss): {fa['torch_gpu_search_s']:.3f} s "
                      f"({fa['cpu_search_s'] / fa['torch_gpu_search_s']:.1f}x faster than faiss CPU), top-1 "
                      f"agreement {fa['torch_gpu_top1_agrees_with_cpu']:.3f}")
    for name, section in res.items():
        if isinstance(section, dict) and "error" in section:
            print(f"\n{name}: FAILED\n{section['error']}")


CHECKS = {"extract": check_extract, "ddp": check_ddp, "faiss": check_faiss}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(CHECKS), default=list(CHECKS))
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (runs on CPU in a minute or two)")
    parser.add_argument("--size", type=int, nargs=2, default=[480, 640], help="H W")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--iters", type=int, default=20, help="timed batches per setting")
    parser.add_argument("--matmul-n", type=int, default=8192)
    parser.add_argument("--peak-tflops", type=float, help="the GPU's bf16 dense peak, if not in the table")
    parser.add_argument("--pipeline-images", type=int, default=2048)
    parser.add_argument("--workers", type=int, default=max(1, min(12, (os.cpu_count() or 2) - 2)))
    parser.add_argument("--ddp-steps", type=int, default=3)
    parser.add_argument("--faiss-n", type=int, default=250_000)
    parser.add_argument("--faiss-queries", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=900, help="seconds for the training subprocess")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.smoke:
        args.size, args.batch, args.iters, args.matmul_n = [32, 48], 2, 1, 256
        args.pipeline_images, args.workers, args.ddp_steps = 4, 1, 1
        args.faiss_n, args.faiss_queries = 2000, 20

    import torch

    from sfrs_core.retrieval.device import pick_device

    dev = pick_device(None)
    print(f"bench/gpu.py: device {dev} ({torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'no CUDA'}), "
          f"torch {torch.__version__}, {os.cpu_count()} CPU cores", flush=True)
    res: dict = {"device": str(dev), "torch": torch.__version__, "cpu_cores": os.cpu_count()}
    for name in args.only:
        t0 = time.perf_counter()
        try:
            res[name] = CHECKS[name](args, dev)
        except Exception:  # noqa: BLE001 - report it and go on to the next check
            res[name] = {"error": traceback.format_exc()[-3000:]}
        print(f"  {name}: {time.perf_counter() - t0:.0f} s", flush=True)
        if args.out:  # after each check, so a time-out still leaves the finished ones
            args.out.write_text(json.dumps(res, indent=2))
    report(res)
    return 1 if any(isinstance(s, dict) and "error" in s for s in res.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
