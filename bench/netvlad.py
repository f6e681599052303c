"""NetVLAD forward+backward: our matmul form vs the residual-tensor form, side by side.

    python bench/netvlad.py                      # paper shape: N=4, K=64, D=512, 30x40 map
    python bench/netvlad.py --batch 8 --repeats 10

Both formulations share the same layer (same assignment conv, centroids, normalisation); they
differ only in how ``V = sum_i a_k(x_i)(x_i - c_k)`` is computed:

* matmul (ours, ``sfrs_core.models.NetVLAD``): ``A @ X^T - C * sum(A)``;
* residual (OpenIBL / most PyTorch ports): the ``N x K x D x HW`` tensor of weighted residuals,
  summed over pixels.

Time: median wall time of ``repeats`` forward+backward passes (after one warm-up; the two
formulations alternate, so both see the same machine load), with the input feature map
requiring grad as in training. Peak memory: the highest total size of tensors
allocated *during* one forward+backward on top of what existed before it (inputs, parameters),
measured on CPU from the PyTorch profiler's allocator events (``profile_memory=True``: every
allocation and free of the CPU allocator, time-ordered, summed cumulatively), and on CUDA with
``torch.cuda.max_memory_allocated`` minus the allocation at the start.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sfrs_core.models.netvlad import NetVLAD, intra_l2  # noqa: E402


def residual_form(layer: NetVLAD, x: torch.Tensor) -> torch.Tensor:
    """OpenIBL's formulation: materialises the N x K x D x HW residual tensor."""
    n, d = x.shape[:2]
    x, a = layer.assign(x)
    a = a.flatten(2)  # N x K x HW
    flat = x.reshape(n, d, -1)
    residual = flat.unsqueeze(1) - layer.centroids[None, :, :, None]  # N x K x D x HW
    residual = residual * a.unsqueeze(2)
    return intra_l2(residual.sum(-1))


def matmul_form(layer: NetVLAD, x: torch.Tensor) -> torch.Tensor:
    return layer(x)


def _step(fn, layer, x, probe) -> None:
    x.grad = None
    layer.zero_grad(set_to_none=True)
    (fn(layer, x) * probe).sum().backward()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_it(fns, layer, x, probe, repeats: int) -> list[float]:
    """Median seconds of each fn's forward+backward; runs interleaved so that both see the
    same machine load (a shared CPU is noisy)."""
    for fn in fns:
        _step(fn, layer, x, probe)  # warm-up
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            _sync(x.device)
            t0 = time.perf_counter()
            _step(fn, layer, x, probe)
            _sync(x.device)
            times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


@contextlib.contextmanager
def _quiet_stderr():
    """Silence the profiler's start/stop lines (written by C++ straight to fd 2)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def peak_memory(fn, layer, x, probe) -> int:
    """Peak bytes allocated during one forward+backward beyond those alive before it."""
    x.grad = None
    layer.zero_grad(set_to_none=True)
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)
        start = torch.cuda.memory_allocated(x.device)
        torch.cuda.reset_peak_memory_stats(x.device)
        _step(fn, layer, x, probe)
        torch.cuda.synchronize(x.device)
        return torch.cuda.max_memory_allocated(x.device) - start
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        _step(fn, layer, x, probe)
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and str(e.device_type()).endswith("CPU")]
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return peak


def _mib(n: int) -> str:
    return f"{n / 2**20:9.1f} MiB"


def bench_device(device: torch.device, args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    layer = NetVLAD(args.clusters, args.dim).to(device)
    with torch.no_grad():
        layer.conv.weight.normal_(0, 1.0)
    x = torch.randn(args.batch, args.dim, args.height, args.width, device=device, requires_grad=True)
    probe = torch.randn(args.batch, args.clusters * args.dim, device=device)

    with torch.no_grad():
        diff = (matmul_form(layer, x) - residual_form(layer, x)).abs().max().item()
    forms = (("matmul (ours)", matmul_form), ("residual tensor", residual_form))
    seconds = time_it([fn for _, fn in forms], layer, x, probe, args.repeats)
    rows = [(name, t, peak_memory(fn, layer, x, probe)) for (name, fn), t in zip(forms, seconds)]

    if device.type == "cpu":
        where = f", {torch.get_num_threads()} threads"
    else:
        where = f", {torch.cuda.get_device_name(device)}"
    print(f"\n[{device.type}{where}]  N={args.batch} K={args.clusters} D={args.dim} "
          f"map={args.height}x{args.width}  (residual tensor alone: "
          f"{_mib(args.batch * args.clusters * args.dim * args.height * args.width * 4).strip()})")
    print(f"  {'formulation':<17} {'fwd+bwd (median)':>18} {'peak extra memory':>18}")
    for name, t, m in rows:
        print(f"  {name:<17} {t * 1000:15.1f} ms {_mib(m):>18}")
    (_, t_ours, m_ours), (_, t_res, m_res) = rows
    print(f"  {'ratio residual/ours':<17} {t_res / t_ours:16.1f} x {m_res / max(m_ours, 1):16.1f} x")
    print(f"  max |difference| of the two outputs: {diff:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--clusters", type=int, default=64)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--height", type=int, default=30)
    parser.add_argument("--width", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cpu-only", action="store_true", help="skip CUDA even if available")
    args = parser.parse_args()

    print("NetVLAD forward+backward: matmul form (A @ X^T - C * sum A) vs residual tensor (N x K x D x HW)")
    print("time: median of", args.repeats, "interleaved runs after a warm-up; peak memory: largest total of tensors")
    print("allocated during one forward+backward beyond those alive before it - CPU: PyTorch profiler")
    print("allocator events (profile_memory=True), cumulated in time order; CUDA: max_memory_allocated.")
    bench_device(torch.device("cpu"), args)
    if torch.cuda.is_available() and not args.cpu_only:
        bench_device(torch.device("cuda"), args)
    else:
        print("\n[cuda] not available: CPU only")


if __name__ == "__main__":
    main()
