"""Evaluate a Pitts250k-test-sized database (83 952 x 4096) through the real evaluate path.

    python bench/eval_large.py                    # flat (exact, streamed from the store)
    python bench/eval_large.py --kind hnsw        # or ivfpq; --rerank 100 re-ranks from the store
    python bench/eval_large.py --ram              # also the in-RAM path (arrays), for contrast
    python bench/eval_large.py --quick            # 8 395 x 4096, 828 queries: a smoke run

OpenIBL ran out of memory evaluating ~50k images because it builds a dense query x database
distance matrix (8 280 x 83 952 float32 = 2.8 GB here, on top of 1.4 GB of database features).
Here the database descriptors are written chunk by chunk into an on-disk descriptor store and
:func:`sfrs_core.retrieval.evaluate.evaluate` ranks from it: exact search streams the store in
256 MiB chunks with a running top-k (:func:`~sfrs_core.retrieval.index.search_exact`), so no
matrix of the whole database, let alone queries x database, is ever in RAM.

Synthetic data with Pitts250k-test's shape: 3 498 places x 24 views (2 pitches x 12 yaws, as
Pittsburgh's) = 83 952 database images over a 2.5 x 2.5 km area, and 8 280 queries 0-20 m from a
random place. Each place has a random 4096-D unit "appearance"; a database view is it plus
noise; a query is its place's appearance plus stronger noise, and one query in three also
carries, with a weight drawn from U(0, 2), the appearance of a place 30-60 m away (a look-alike
street corner), so recall@1 is well below 1 and grows with N. Positives are the
database images within 25 m of a query's generated GPS position (as for real data).

The generation runs in its own subprocess; each evaluation runs in a fresh subprocess, whose
peak RSS (``VmHWM``) is reported.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.memory import rss_mb  # noqa: E402

DIM = 4096
VIEWS = 24
FULL = (3498, 8280)  # places, queries: 3 498 x 24 = 83 952 database images
QUICK = (350, 828)
AREA_M = 2500.0
SEED = 0



def _unit(x):
    import numpy as np

    x /= np.sqrt(np.einsum("ij,ij->i", x, x))[:, None]
    return x


def _noise(rng, rows: int, scale: float):
    import numpy as np

    x = rng.random((rows, DIM), dtype=np.float32)
    x -= 0.5
    x *= np.float32(scale * np.sqrt(12.0 / DIM))
    return x


def _layout(places: int, queries: int):
    """Place positions (metres), query positions, a look-alike place per query and its weight."""
    import numpy as np
    from scipy.spatial import cKDTree

    rng = np.random.default_rng([SEED, 0])
    place_xy = rng.uniform(0, AREA_M, (places, 2))
    q_place = rng.integers(0, places, queries)
    angle, dist = rng.uniform(0, 2 * np.pi, queries), rng.uniform(0, 20, queries)
    q_xy = place_xy[q_place] + np.column_stack([np.cos(angle), np.sin(angle)]) * dist[:, None]
    # one query in three looks like a place 30-60 m away (a look-alike street corner)
    tree = cKDTree(place_xy)
    looks, weight = q_place.copy(), np.zeros(queries, dtype=np.float32)
    hard = rng.random(queries) < 1 / 3
    for i in np.flatnonzero(hard):
        near = [j for j in tree.query_ball_point(place_xy[q_place[i]], 60.0)
                if np.linalg.norm(place_xy[j] - place_xy[q_place[i]]) >= 30.0]
        if near:
            looks[i], weight[i] = near[int(rng.integers(0, len(near)))], rng.uniform(0, 2)
    return place_xy, q_xy, q_place, looks, weight


def split_for(folder: Path, places: int, queries: int):
    """The PlaceSplit (no image files: positions and names only)."""
    import numpy as np

    from sfrs_core.data.dataset import ImageSet, PlaceSplit

    place_xy, q_xy, *_ = _layout(places, queries)
    origin = np.array([584_000.0, 4_477_000.0])  # downtown Pittsburgh, UTM 17T
    db_utm = np.repeat(place_xy, VIEWS, axis=0) + origin
    q_utm = q_xy + origin

    def latlon(utm):
        d = utm - origin
        return np.column_stack([40.44 + d[:, 1] / 111_000.0, -79.99 + d[:, 0] / 84_700.0])

    n = places * VIEWS
    db = ImageSet(folder, [f"database/{i // VIEWS:05d}_{i % VIEWS:02d}.jpg" for i in range(n)], db_utm, (17, "T"),
                  latlon(db_utm))
    qs = ImageSet(folder, [f"queries/{i:05d}.jpg" for i in range(queries)], q_utm, (17, "T"), latlon(q_utm))
    return PlaceSplit("test", db, qs)


def generate(folder: Path, places: int, queries: int) -> None:
    """Descriptors of the database (chunk by chunk) and of the queries, into two stores."""
    import numpy as np

    from sfrs_core.retrieval.store import DescriptorStore

    _, _, own, looks, weight = _layout(places, queries)
    appearance = _unit(np.random.default_rng([SEED, 1]).standard_normal((places, DIM), dtype=np.float32))
    ident = {"bench": "eval_large", "places": places, "queries": queries, "seed": SEED}
    n = places * VIEWS
    db = DescriptorStore.open_or_create(folder / "store" / "database", n, DIM, identity={**ident, "role": "database"},
                                        chunk_rows=8192)
    t0 = time.perf_counter()
    for a, b in db.missing():
        rng = np.random.default_rng([SEED, 2, a])
        x = _noise(rng, b - a, 1.0)
        x += appearance[np.arange(a, b) // VIEWS]
        db.write(a, _unit(x))
    qs = DescriptorStore.open_or_create(folder / "store" / "queries", queries, DIM,
                                        identity={**ident, "role": "queries"}, chunk_rows=8192)
    for a, b in qs.missing():
        rng = np.random.default_rng([SEED, 3, a])
        x = _noise(rng, b - a, 1.6)
        x += appearance[own[a:b]]
        x += weight[a:b, None] * appearance[looks[a:b]]
        qs.write(a, _unit(x))
    print(f"  stores ready in {time.perf_counter() - t0:.0f} s: {db} and {qs}", flush=True)


def run_eval(folder: Path, places: int, queries: int, kind: str, rerank: int, ram: bool) -> dict:
    from sfrs_core.retrieval.evaluate import evaluate
    from sfrs_core.retrieval.index import IndexConfig
    from sfrs_core.retrieval.store import DescriptorStore

    split = split_for(folder, places, queries)
    base = rss_mb("VmRSS")
    db = DescriptorStore.open(folder / "store" / "database", require_complete=True)
    qs = DescriptorStore.open(folder / "store" / "queries", require_complete=True)
    if ram:  # the in-RAM path: both matrices loaded as arrays
        db, qs = db.read(), qs.read()
    t0, c0 = time.perf_counter(), time.process_time()
    res = evaluate(None, split, k=20, db_descriptors=db, query_descriptors=qs, progress=False,
                   index_kind=IndexConfig(kind=kind, rerank=rerank))
    return {"kind": kind, "rerank": rerank, "path": "in RAM (arrays)" if ram else "store (streamed)",
            "database": len(split.database), "queries": len(split.queries), "wall_s": time.perf_counter() - t0,
            "cpu_s": time.process_time() - c0, "recall": res.recall,
            "peak_rss_mb": rss_mb("VmHWM"), "base_rss_mb": base,
            "no_positive": res.meta["queries_without_positive"]}


def _child(args: list[str]) -> str:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--kind", default="flat", choices=["flat", "ivfpq", "hnsw"])
    parser.add_argument("--rerank", type=int, default=0)
    parser.add_argument("--ram", action="store_true", help="also evaluate with the descriptors in RAM")
    parser.add_argument("--data", type=Path, help="folder for the stores (default: a temporary one, removed)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--_child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    places, queries = QUICK if args.quick else FULL
    if args._child:
        folder = Path(args._child[1])
        if args._child[0] == "generate":
            generate(folder, places, queries)
        else:
            print(json.dumps(run_eval(folder, places, queries, args.kind, args.rerank, args._child[0] == "ram")))
        return 0

    tmp = None if args.data else tempfile.TemporaryDirectory(prefix="sfrs_eval_large_")
    folder = args.data or Path(tmp.name)
    flags = ["--kind", args.kind, "--rerank", str(args.rerank)] + (["--quick"] if args.quick else [])
    try:
        print(f"database {places * VIEWS} x {DIM} float32 ({places * VIEWS * DIM * 4 / 2**30:.2f} GiB), "
              f"{queries} queries; stores in {folder}", flush=True)
        print(_child(["--_child", "generate", str(folder), *flags]), end="", flush=True)
        rows = [json.loads(_child(["--_child", "store", str(folder), *flags]).strip().splitlines()[-1])]
        if args.ram:
            rows.append(json.loads(_child(["--_child", "ram", str(folder), *flags]).strip().splitlines()[-1]))
    finally:
        if tmp is not None:
            tmp.cleanup()
    dense = queries * places * VIEWS * 4 / 2**30
    print(f"\n(a dense {queries} x {places * VIEWS} float32 distance matrix alone would be {dense:.2f} GiB)")
    head = (f"{'path':<18} {'index':<6} {'wall s':>7} {'cpu s':>7} {'R@1':>6} {'R@5':>6} {'R@10':>6} {'R@20':>6} "
            f"{'peak RSS MB':>11} {'base MB':>8}")
    print(head)
    print("-" * len(head))
    for r in rows:
        rec = {int(k): v for k, v in r["recall"].items()}
        index = r["kind"] + (f"+rr{r['rerank']}" if r["rerank"] else "")
        print(f"{r['path']:<18} {index:<6} {r['wall_s']:>7.1f} {r['cpu_s']:>7.1f} "
              + " ".join(f"{100 * rec[n]:>6.1f}" for n in (1, 5, 10, 20))
              + f" {r['peak_rss_mb']:>11.0f} {r['base_rss_mb']:>8.0f}")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
