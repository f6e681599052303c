"""Write a SynthCity dataset in the VPR folder format, with label maps, atomically.

``ROOT/images/{split}/{database,queries}/@east@north@zone@band@lat@lon@@@heading@@@@@note@.jpg``
``ROOT/labels/{split}/{database,queries}/<same name>.png`` (palette PNG, pixel = class id)
``ROOT/synthcity.json`` (config, class names and palette, counts: written last, marks completion)
"""
from __future__ import annotations

import io
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..geo import latlon_to_utm, utm_to_latlon
from ..vpr_folder import VprName, format_vpr_name
from .basemap import write_basemaps
from .city import SPLITS, District, Pose, build_city, database_poses, query_poses
from .config import META_FILE, SynthCityConfig
from .labels import CLASSES, PALETTE
from .render import query_season, render_view

_PALETTE_BYTES = PALETTE.flatten().tolist() + [0] * (768 - PALETTE.size)


@dataclass(frozen=True)
class ViewJob:
    """One image to render and where it goes."""

    split: str
    role: str  # database | queries
    pose: Pose
    name: str


def _note(pose: Pose, cfg: SynthCityConfig) -> str:
    tags = [pose.condition] + [t for t, on in (("shift", pose.color_shift), ("blur", pose.blur), ("occluded", pose.occluder)) if on]
    season = query_season(pose, cfg)
    return "+".join(tags + ([season] if season != "summer" else []))


def plan_views(cfg: SynthCityConfig, city: dict[str, District] | None = None) -> list[ViewJob]:
    """Every view of the dataset, with its file name, in a fixed order."""
    city = city or build_city(cfg)
    e0, n0, zone = latlon_to_utm(cfg.anchor_lat, cfg.anchor_lon)
    jobs = []
    for si, split in enumerate(SPLITS):
        d = city[split]
        rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0x9E7, si]))
        roles = {
            "database": database_poses(d, cfg),
            "queries": query_poses(d, cfg, getattr(cfg, split).queries, rng),
        }
        for role, poses in roles.items():
            tag_error = _tag_errors(cfg, si, role, len(poses))
            for i, pose in enumerate(poses):
                if role == "database":  # per-image noise seed, fixed by position in the plan
                    pose = Pose(**{**pose.__dict__, "seed": int(np.random.SeedSequence([cfg.seed, si, i]).generate_state(1)[0])})
                else:  # each query is its own capture (what changed since the database's: render.captured_sprites)
                    pose = Pose(**{**pose.__dict__, "traversal": i + 1})
                # The tags record where the GPS and compass said the camera was, not where it was.
                de, dn, dh = tag_error[i]
                east = e0[0] + d.origin[0] + pose.x + de
                north = n0[0] + d.origin[1] + pose.y + dn
                lat, lon = utm_to_latlon(east, north, zone)
                meta = VprName(
                    east=east, north=north, zone=zone[0], band=zone[1], lat=float(lat[0]), lon=float(lon[0]),
                    pano_id=f"{split[:2]}{role[0]}{i:05d}", heading=(pose.heading + dh) % 360.0 if dh else pose.heading,
                    note=_note(pose, cfg) if role == "queries" else "day",
                )
                jobs.append(ViewJob(split, role, pose, format_vpr_name(meta)))
    return jobs


def _tag_errors(cfg: SynthCityConfig, split_index: int, role: str, count: int) -> np.ndarray:
    """Per view (east, north, heading) errors of the recorded tags: zero unless ``gps_noise_m`` or
    ``heading_noise_deg`` is set. A database place's ``db_headings`` views share one GPS fix (as a
    panorama's images do); each query has its own."""
    errors = np.zeros((count, 3))
    if cfg.gps_noise_m <= 0 and cfg.heading_noise_deg <= 0:
        return errors
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0x6E5, split_index, role == "database"]))
    fixes = count // cfg.db_headings if role == "database" else count
    gps = rng.normal(0.0, cfg.gps_noise_m, (fixes, 2))
    errors[:, :2] = np.repeat(gps, cfg.db_headings, axis=0) if role == "database" else gps
    errors[:, 2] = rng.normal(0.0, cfg.heading_noise_deg, count)
    return errors


_WORKER_CITY: dict[str, District] = {}
_WORKER_CFG: SynthCityConfig | None = None


def _init_worker(cfg_dict: dict) -> None:
    global _WORKER_CITY, _WORKER_CFG
    _WORKER_CFG = SynthCityConfig.from_dict(cfg_dict)
    _WORKER_CITY = build_city(_WORKER_CFG)


def encode_view(rgb: np.ndarray, label: np.ndarray, quality: int) -> tuple[bytes, bytes]:
    """JPEG bytes of the image and palette-PNG bytes of its label map."""
    jpg = io.BytesIO()
    Image.fromarray(rgb).save(jpg, format="JPEG", quality=quality, optimize=False)
    lab = Image.fromarray(label, mode="L").convert("P")
    lab.putpalette(_PALETTE_BYTES)
    png = io.BytesIO()
    lab.save(png, format="PNG", optimize=False)
    return jpg.getvalue(), png.getvalue()


def _render_and_write(args: tuple[ViewJob, str]) -> None:
    job, root = args
    rgb, label = render_view(_WORKER_CITY[job.split], job.pose, _WORKER_CFG)
    jpg, png = encode_view(rgb, label, _WORKER_CFG.jpeg_quality)
    base = Path(root)
    (base / "images" / job.split / job.role / job.name).write_bytes(jpg)
    (base / "labels" / job.split / job.role / job.name).with_suffix(".png").write_bytes(png)


def is_complete(root: str | os.PathLike) -> bool:
    """True when ``root`` holds a finished SynthCity dataset (its metadata file is written last)."""
    return (Path(root) / META_FILE).is_file()


def read_meta(root: str | os.PathLike) -> dict:
    """The ``synthcity.json`` of a generated dataset."""
    return json.loads((Path(root) / META_FILE).read_text())


def generate(cfg: SynthCityConfig, out: str | os.PathLike, workers: int | None = None, overwrite: bool = False,
             progress: bool = True, on_progress: Callable[[int, int], None] | None = None) -> Path:
    """Render the whole dataset into ``out``; returns its path.

    Rendering goes to a temporary sibling folder renamed into place at the end, so an
    interrupted run never leaves a half-written dataset at ``out``. The bytes depend only
    on ``cfg`` (not on ``workers``). ``on_progress(done, total)`` is called as images are
    written (e.g. to move the app's progress bar).
    """
    out = Path(out)
    if out.exists():
        if not overwrite:
            raise FileExistsError(f"{out} already exists; pass overwrite=True (CLI: --overwrite) to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        city = build_city(cfg)
        jobs = plan_views(cfg, city)
        for split in SPLITS:
            for role in ("database", "queries"):
                (tmp / "images" / split / role).mkdir(parents=True)
                (tmp / "labels" / split / role).mkdir(parents=True)
        workers = workers or min(os.cpu_count() or 1, 8)
        bar = tqdm(total=len(jobs), desc="SynthCity", unit="img", disable=not progress)
        tasks = [(job, str(tmp)) for job in jobs]
        report = on_progress or (lambda done, total: None)
        report(0, len(tasks))
        if workers <= 1:
            _init_worker(cfg.to_dict())
            for i, task in enumerate(tasks):
                _render_and_write(task)
                bar.update()
                report(i + 1, len(tasks))
        else:
            chunk = max(1, min(64, math.ceil(len(tasks) / (workers * 8))))
            with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(cfg.to_dict(),)) as pool:
                for i, _ in enumerate(pool.map(_render_and_write, tasks, chunksize=chunk)):
                    bar.update()
                    report(i + 1, len(tasks))
        bar.close()
        counts = {s: {r: sum(1 for j in jobs if j.split == s and j.role == r) for r in ("database", "queries")} for s in SPLITS}
        meta = {
            "generator": "sfrs_core.data.synthcity",
            "config": cfg.to_dict(),
            "classes": list(CLASSES),
            "palette": PALETTE.tolist(),
            "counts": counts,
            "shops": {s: len(city[s].shop_names) for s in SPLITS},
        }
        write_basemaps(tmp, cfg, city)  # the map layers, so that no app process builds the city again
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))  # last: the dataset is complete
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
