"""``bench/gpu.py``, the prepared GPU checks, runs end to end at smoke size on CPU, so that the
script a GPU session has minutes for is known to work before it gets there."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.gpu import vendor_peak_tflops

ROOT = Path(__file__).resolve().parents[1]


def test_vendor_peak_picks_the_most_specific_name():
    assert vendor_peak_tflops("NVIDIA H200") == 989.4
    assert vendor_peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert vendor_peak_tflops("NVIDIA H100 80GB HBM3") == 989.4  # the SXM part
    assert vendor_peak_tflops("NVIDIA L40S") == 362.1 and vendor_peak_tflops("NVIDIA L4") == 121.0
    assert vendor_peak_tflops("Tesla V100-SXM2-16GB") is None  # no bf16 tensor cores


def test_smoke_run_reports_every_check(tmp_path):
    out = tmp_path / "gpu.json"
    done = subprocess.run([sys.executable, "bench/gpu.py", "--smoke", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    res = json.loads(out.read_text())

    ex = res["extract"]
    settings = {(r["amp"], r["channels_last"]) for r in ex["model"]}
    assert settings == {(False, False), (False, True), (True, False), (True, True)}
    assert all(r["img_per_s"] > 0 and r["out_dim"] == 4096 for r in ex["model"])
    # VGG16 conv FLOPs grow with the pixels: at 32x48 about 15.4 GMAC x (32*48)/(224*224) x 2
    assert 0.7 < ex["gflops_per_image"] < 2.0
    assert [r["images"] for r in ex["pipeline"]] == [4, 4]

    dd = res["ddp"]
    one = dd["one_process"]
    assert one["ok"] and one["ranks"] == 1 and one["steps_per_rank"] == [1], one
    step = dd["ddp_one_rank"]
    assert step["backend"] == "gloo" and step["world_size"] == 1 and step["grads_finite"]
    assert len(step["step_s"]) == 3

    fa = res["faiss"]
    assert fa["n"] == 2000 and fa["faiss_gpus"] == 0 and fa["cpu_search_s"] > 0 and "gpu_search_s" not in fa
    assert "no GPU support here" in done.stdout
