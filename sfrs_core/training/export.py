"""Package finished runs compactly (fp16 weights) and build the shipped demo models."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from ..retrieval.results import QueryResults
from ..io import atomic_write_bytes, atomic_write_json
from .checkpoint import MANIFEST, load_checkpoint, save_checkpoint
from .metrics_log import read_metrics


def export_run(run_dir: str | Path, out_dir: str | Path, *, generations: int | None = None, half: bool = True) -> Path:
    """Copy a finished run to ``out_dir``: config, metrics, soft labels, results and the
    generation checkpoints (floating-point weights in fp16 with ``half``; they load back as
    fp32). ``generations`` keeps only the first ones: ``generations=1`` of an SFRS run is its
    SARE baseline, exactly what training with ``--generations 1`` gives.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    config = json.loads((run_dir / "config.json").read_text())
    kept = generations or config["generations"]
    if not (run_dir / f"gen{kept - 1}.pt").is_file():
        raise FileNotFoundError(f"{run_dir}: generation {kept - 1} is not finished")
    tmp = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "results").mkdir(parents=True)
    (tmp / "soft_labels").mkdir()
    config["generations"] = kept
    config["run"] = out_dir.name
    atomic_write_json(tmp / "config.json", config)
    records = [r for r in read_metrics(run_dir / "metrics.jsonl") if r.get("generation", 0) < kept]
    atomic_write_bytes(tmp / "metrics.jsonl", "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records).encode())
    for name in ("environment.json", "trunk_weights.json"):
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, tmp / name)
    best = None
    for g in range(kept):
        payload = load_checkpoint(run_dir / f"gen{g}.pt")
        value = (payload.get("selection") or {}).get("value")
        if value is not None and (best is None or value > best["value"]):  # as the trainer's best.json
            best = {"generation": g, "epoch": payload.get("selected_epoch"), "checkpoint": f"gen{g}.pt",
                    "metric": payload["selection"]["metric"], "value": value}
        if half:
            payload["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in payload["state_dict"].items()}
            payload["stored_dtype"] = "float16"
        save_checkpoint(tmp / f"gen{g}.pt", payload)
        shutil.copy2(run_dir / "soft_labels" / f"gen{g}.npz", tmp / "soft_labels" / f"gen{g}.npz")
        for res in sorted((run_dir / "results").glob(f"*_gen{g}.npz")):
            r = QueryResults.load(res)
            r.run = f"{out_dir.name}/gen{g}"
            r.save(tmp / "results" / res.name)
    if best is not None:
        atomic_write_json(tmp / "best.json", best)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir


def leave_out_weights(run_dir: str | Path, keep: list[int]) -> list[int]:
    """Delete an exported run's generation checkpoints except ``keep`` (its metrics, results and
    soft labels stay: ``Run.result_generations`` still lists every generation, ``Run.generations``
    only those with weights). For the shipped seeds beyond the first, within the assets' size
    budget. The manifest drops the deleted files and lists them under ``weights_left_out``.
    Returns the generations left out."""
    run_dir = Path(run_dir)
    manifest = json.loads((run_dir / MANIFEST).read_text())
    gone = []
    for path in sorted(run_dir.glob("gen*.pt")):
        g = int(path.stem[3:])
        if g not in keep:
            path.unlink()
            manifest["files"].pop(path.name, None)
            gone.append(g)
    manifest["weights_left_out"] = sorted(set(manifest.get("weights_left_out", [])) | set(gone))
    atomic_write_json(run_dir / MANIFEST, manifest)
    return gone


def checkpoint_state_equal(a: str | Path, b: str | Path) -> bool:
    """True when two checkpoints hold identical weights."""
    sa, sb = load_checkpoint(a)["state_dict"], load_checkpoint(b)["state_dict"]
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
