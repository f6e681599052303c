"""Mixed precision in the training step (``TrainConfig.amp``) and the step's other speed options:
channels_last, DataLoader workers reading the training images, losses logged every N steps."""
from __future__ import annotations

import copy
import json
import time

import numpy as np
import pytest
import torch
from tqdm import tqdm

from sfrs_core.training import Trainer, TrainConfig
from sfrs_core.training.feature_cache import descriptors
from sfrs_core.training.options import config_from_argv
from sfrs_core.training.precision import Precision, resolve_precision
from sfrs_core.training.presets import tiny_config

FP32 = Precision("cpu", None)


@pytest.fixture(scope="module")
def prepared(tiny_city, tmp_path_factory) -> Trainer:
    """A prepared tiny trainer with amp on (CPU: bf16) and ColorJitter (images read from disk)."""
    cfg = tiny_config(str(tiny_city), "amp").replace(runs_dir=str(tmp_path_factory.mktemp("runs")), amp=True,
                                                     color_jitter=(0.4, 0.4, 0.4, 0.1))
    trainer = Trainer(cfg, progress=False)
    trainer._open_run_dir()
    trainer._prepare()
    feats = trainer.split_features("train")
    trainer.miner.refresh(descriptors(trainer.model, feats.db).numpy(), descriptors(trainer.model, feats.q).numpy(),
                          rerank=False)
    return trainer


def _tuples(trainer: Trainer, n: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [trainer.miner.mine(int(q), rng) for q in trainer.miner.trainable[:n]]


def _step(trainer: Trainer, precision: Precision, tuples, generation: int, teacher=None, **kw):
    """Losses (floats) and the flat gradient of one step under ``precision``."""
    saved, trainer.precision = trainer.precision, precision
    model = trainer.model
    try:
        model.train()
        model.zero_grad(set_to_none=True)
        losses = trainer.train_step(model, teacher, tuples, generation, 11, **kw)
        losses["loss"].backward()
    finally:
        trainer.precision = saved
    grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    model.zero_grad(set_to_none=True)
    return {k: float(v.detach()) for k, v in losses.items()}, grad


@pytest.mark.parametrize("generation", [0, 1])
def test_bf16_autocast_step_matches_float32(prepared, generation):
    """On CPU, ``amp`` means bf16 autocast; the step's losses stay within 2 % (relative) of
    float32's and the gradient points the same way with the same norm (within 5 %)."""
    assert prepared.precision == Precision("cpu", torch.bfloat16)
    assert not prepared.precision.grad_scaler().is_enabled()  # bf16 needs no loss scaling
    teacher = copy.deepcopy(prepared.model).eval().requires_grad_(False) if generation else None
    tuples = _tuples(prepared)
    ref, g_ref = _step(prepared, FP32, tuples, generation, teacher)
    amp, g_amp = _step(prepared, prepared.precision, tuples, generation, teacher)
    assert amp["loss"] != ref["loss"]  # autocast really ran in bf16
    for name in ("loss", "loss_hard", "loss_soft"):
        assert amp[name] == pytest.approx(ref[name], rel=2e-2, abs=1e-6), name
    cos = torch.nn.functional.cosine_similarity(g_ref, g_amp, dim=0).item()
    large = g_ref.abs() >= g_ref.abs().median()
    agree = (g_ref[large].sign() == g_amp[large].sign()).float().mean().item()
    print(f"generation {generation}: losses {ref} vs {amp}; gradient cosine {cos:.4f}, norms "
          f"{g_ref.norm():.4f} vs {g_amp.norm():.4f}, sign agreement {agree:.4f}")
    assert cos > 0.9  # the whole trunk runs in bf16 here (jittered images bypass the feature cache)
    assert g_amp.norm() == pytest.approx(g_ref.norm().item(), rel=0.1)
    assert agree > 0.9


def test_float16_loss_scaling_takes_the_float32_step(prepared):
    """fp16 (what ``amp`` gives on GPUs without bf16) goes through a GradScaler: steps whose
    scaled gradients overflow are skipped, and the first one taken is float32's update up to
    fp16 rounding."""
    fp16 = Precision("cpu", torch.float16)
    scaler = fp16.grad_scaler()
    assert scaler.is_enabled() and scaler.get_scale() > 1
    model, tuples = prepared.model, _tuples(prepared, seed=1)
    params = [p for p in model.parameters() if p.requires_grad]
    start = [p.detach().clone() for p in params]

    def update(precision: Precision, scaler) -> torch.Tensor:
        opt = torch.optim.SGD(params, lr=0.1)
        saved, prepared.precision = prepared.precision, precision
        try:
            model.train()
            opt.zero_grad(set_to_none=True)
            loss = prepared.train_step(model, None, tuples, 0)["loss"]  # cached prefix: fast
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        finally:
            prepared.precision = saved
        delta = torch.cat([(p.detach() - s).flatten() for p, s in zip(params, start)])
        with torch.no_grad():
            for p, s in zip(params, start):
                p.copy_(s)
        return delta

    d_ref = update(FP32, FP32.grad_scaler())
    first_scale = scaler.get_scale()
    for _ in range(30):  # an overflowing scale skips the step and halves itself, as on a GPU
        d_16 = update(fp16, scaler)
        if d_16.abs().sum() > 0:
            break
    assert torch.isfinite(d_16).all() and d_16.abs().sum() > 0
    assert scaler.get_scale() <= first_scale
    assert torch.nn.functional.cosine_similarity(d_ref, d_16, dim=0) > 0.98
    assert d_16.norm() == pytest.approx(d_ref.norm().item(), rel=0.05)


def test_worker_read_images_and_channels_last_give_the_same_step(prepared):
    """DataLoader workers read and jitter the images exactly as the step itself would (same
    seeds, same numbers); channels_last changes the memory layout, not the losses."""
    tuples = _tuples(prepared, seed=2)
    ref, _ = _step(prepared, FP32, tuples, 0)
    cfg = prepared.cfg
    prepared.cfg = cfg.replace(num_workers=1)
    try:
        [(_, seed, images)] = list(prepared._batches([(tuples, 11)], 0))
    finally:
        prepared.cfg = cfg
    assert seed == 11 and images[0].shape[0] == len(tuples) and images[0].dim() == 4
    loaded, _ = _step(prepared, FP32, tuples, 0, images=images)
    assert loaded == ref
    prepared.cfg = cfg.replace(channels_last=True)
    prepared.model.to(memory_format=torch.channels_last)
    try:
        cl, _ = _step(prepared, FP32, tuples, 0)
    finally:
        prepared.cfg = cfg
        prepared.model.to(memory_format=torch.contiguous_format)
    assert cl["loss"] == pytest.approx(ref["loss"], rel=1e-4)


def test_log_every_writes_the_mean_of_its_steps(prepared):
    class Log:
        records: list[dict] = []

        def write(self, record):
            self.records.append(record)

    cfg, metrics = prepared.cfg, getattr(prepared, "metrics", None)
    prepared.cfg, prepared.metrics = cfg.replace(log_every=2), Log()
    prepared._bar, prepared._t0, prepared._loss_sum, prepared._loss_steps = tqdm(disable=True), time.time(), None, 0
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5)
    pos = type("Pos", (), {})()
    values = [(1.0, 0.5, 0.25), (3.0, 1.5, 0.75), (2.0, 2.0, 0.0), (4.0, 1.0, 1.0), (9.0, 9.0, 9.0)]
    try:
        for i, (a, b, c) in enumerate(values, start=1):
            pos.iteration = i
            prepared._log_step(pos, {"loss": torch.tensor(a), "loss_hard": torch.tensor(b), "loss_soft": torch.tensor(c)},
                               opt, 0, 0)
        got = [(r["iteration"], r["loss"], r["loss_hard"], r["loss_soft"], r["lr"]) for r in Log.records]
        assert got == [(2, 2.0, 1.0, 0.5, 0.5), (4, 3.0, 1.5, 0.5, 0.5)]  # step 5 waits for step 6 ...
        prepared._flush_losses(pos, opt, 0, 0)  # ... or for the end of its epoch
        assert [(r["iteration"], r["loss"]) for r in Log.records[2:]] == [(5, 9.0)]
        prepared._flush_losses(pos, opt, 0, 0)
        assert len(Log.records) == 3  # nothing pending: nothing written
    finally:
        prepared.cfg, prepared.metrics = cfg, metrics


def test_amp_flags_round_trip_through_config_json(tiny_city, tmp_path):
    cfg = config_from_argv(["--data", str(tiny_city), "--preset", "tiny", "--run", "flags", "--runs-dir", str(tmp_path),
                            "--amp", "--channels-last", "--log-every", "3", "--num-workers", "2"])
    assert (cfg.amp, cfg.channels_last, cfg.log_every, cfg.num_workers) == (True, True, 3, 2)
    plain = config_from_argv(["--data", str(tiny_city), "--preset", "tiny"])
    assert (plain.amp, plain.channels_last, plain.log_every, plain.num_workers) == (False, False, 1, 0)
    Trainer(cfg, progress=False)._open_run_dir()  # what a run writes first
    written = json.loads((tmp_path / "flags" / "config.json").read_text())
    assert written["amp"] is True and written["channels_last"] is True and written["log_every"] == 3
    assert TrainConfig.from_dict(written) == cfg
    older = {k: v for k, v in written.items() if k not in ("amp", "channels_last", "log_every")}
    assert TrainConfig.from_dict(older).amp is False  # a run written before these settings trained without
    assert resolve_precision(False, torch.device("cpu")) == FP32
    with pytest.raises(ValueError, match="log_every"):
        cfg.replace(log_every=0)
