"""Large-database retrieval: flat (exact) vs IVF-PQ vs HNSW on synthetic 4096-D descriptors.

    python bench/retrieval.py --quick                 # smoke run: 2k and 20k images, 200 queries (~2 min)
    python bench/retrieval.py                         # 10k, 100k, 250k images, 1 000 queries (< 30 min, 2 cores)
    python bench/retrieval.py --million               # also 1M images: flat (exact reference) and IVF-PQ
    python bench/retrieval.py --sizes 50000 --kinds flat hnsw --data /big/disk/bench

Data: L2-normalised, clustered 4096-D descriptors (``N/20`` places, at most 20 000, each a random
unit centre plus uniform noise of the same norm, ~20 views a place), generated chunk by chunk
straight into an on-disk :class:`~sfrs_core.retrieval.store.DescriptorStore` (float32; float16
for 1M, 8 GB instead of 16) so that no case ever holds a generated matrix; queries are database
vectors plus noise 1.5x their norm, renormalised. Generation is resumable and cached in
``--data`` (default ``/tmp/sfrs_bench_retrieval``; 250k float32 = 4.1 GB, 1M float16 = 8.2 GB).

Cases, each in a fresh subprocess so that its peak RSS (``VmHWM``) is its own:

* ``flat``     exact search streamed from the store (:func:`~sfrs_core.retrieval.index.search_exact`:
               256 MiB chunks, running top-k); no index, build time 0. Its top-10 is the exact
               reference of the other cases.
* ``flat-ram`` an ``IndexFlatIP`` filled from the store chunk by chunk (storage reserved up
               front: one copy of the matrix, no 2x reallocation), then searched.
* ``ivfpq``    IVF-PQ, 64 bytes a vector; nlist = sqrt(N) (the library default 4·sqrt(N) trains
               for too long on 2 CPU cores), trained on max(40·nlist, 10 240) rows sampled from
               the store, filled chunk by chunk; nprobe = max(8, nlist/16). The same index also
               gives the rows ``ivfpq+rr``: its top 100 re-ranked exactly from the store
               (:func:`~sfrs_core.retrieval.index.rerank_exact`, 100 row reads a query), and
               ``ivfpq4+rr``: the same at 4 x nprobe.
* ``hnsw``     HNSWFlat, M=32, efConstruction 120 (``--ef-construction``; the library's
               default), efSearch 128; ``hnsw-sq8`` the same graph over
               8-bit scalar-quantized storage (4x less memory). Run up to ``--hnsw-max`` images
               (default 100 000) and ``--hnsw-sq8-max`` (default 250 000): on 2 cores HNSW
               inserts a few hundred to a thousand 4096-D vectors a second (see the figures):
               1M took 17-19 min for HNSW-SQ8 at efConstruction 40 (``--sizes 1000000 --kinds
               hnsw-sq8 --hnsw-sq8-max 1000000 --ef-construction 40``), 120 takes about 3x
               that, and HNSW-Flat at 1M needs 16 GB for its vectors. Each graph is also
               searched at efSearch 256, 512 and 1024 (rows ``hnsw/256``, ``hnsw-sq8/512``...),
               the query-time recall/speed knob (``--ef-search``), and its top 100 at efSearch
               512 re-ranked exactly from the store (``hnsw-sq8/512+rr``; ``--rerank 100``), each
               with the build time of the graph.

Reported: build and query wall time, queries/s, recall@1 agreement with exact search (the
index's top-1 is the exact top-1), how often the exact top-1 is in the index's top-10, peak RSS
and the RSS after imports (python + numpy + faiss + torch, which ``sfrs_core.retrieval``
imports). Timings on a shared machine are noisy: compare the ratios, printed side by side.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.memory import rss_mb as _proc_rss_mb  # noqa: E402

DIM = 4096
K = 10
SEED = 0
CENTRE_NOISE = 1.0  # noise norm relative to a place centre's
QUERY_NOISE = 1.5  # noise norm relative to the database vector a query is made from
FULL_SIZES = (10_000, 100_000, 250_000)
QUICK_SIZES = (2_000, 20_000)
MILLION = 1_000_000
DEFAULT_KINDS = ("flat", "flat-ram", "ivfpq", "hnsw", "hnsw-sq8")
HNSW_MAX_N = 100_000  # default --hnsw-max: HNSW build time on 2 shared cores (see the docstring)
HNSW_SQ8_MAX_N = 250_000  # default --hnsw-sq8-max: its build is about 2.5x faster
RERANK = 100
HNSW_EF_SWEEP = (256, 512, 1024)  # efSearch values also searched on each built HNSW graph (rows kind/ef)
HNSW_RERANK_EF = 512  # and the top RERANK at this efSearch re-ranked exactly (row kind/512+rr)


def peak_rss_mb() -> float:
    """Peak resident set size of this process (VmHWM), MiB."""
    return _proc_rss_mb("VmHWM")


def rss_mb() -> float:
    """Current resident set size (VmRSS), MiB."""
    return _proc_rss_mb("VmRSS")


# ---------------------------------------------------------------------- data


def _folder(data: Path, n: int) -> Path:
    return data / f"n{n}"


def _unit_rows(x):
    import numpy as np

    x /= np.sqrt(np.einsum("ij,ij->i", x, x))[:, None]
    return x


def _noise(rng, rows: int, dim: int, scale: float):
    """Uniform noise with per-vector norm about ``scale`` (variance 1/dim per coordinate)."""
    import numpy as np

    x = rng.random((rows, dim), dtype=np.float32)
    x -= 0.5
    x *= np.float32(scale * np.sqrt(12.0 / dim))
    return x


def generate(data: Path, n: int, queries: int) -> None:
    """Write the clustered database of ``n`` vectors into a store (resumable) and the queries."""
    import numpy as np

    from sfrs_core.io import atomic_path
    from sfrs_core.retrieval.store import DescriptorStore

    folder = _folder(data, n)
    dtype = "float16" if n >= MILLION else "float32"
    places = max(1, min(n // 20, 20_000))
    identity = {"bench": "clustered", "n": n, "dim": DIM, "seed": SEED, "places": places,
                "centre_noise": CENTRE_NOISE}
    store = DescriptorStore.open_or_create(folder / "db", n, DIM, dtype=dtype, identity=identity, chunk_rows=8192)
    todo = store.missing()
    if todo:
        centres = _unit_rows(np.random.default_rng([SEED, 1]).standard_normal((places, DIM), dtype=np.float32))
        t0 = time.perf_counter()
        for a, b in todo:
            rng = np.random.default_rng([SEED, 2, a])
            x = _noise(rng, b - a, DIM, CENTRE_NOISE)
            x += centres[rng.integers(0, places, b - a)]
            store.write(a, _unit_rows(x))
        print(f"  generated {n} x {DIM} {dtype} in {time.perf_counter() - t0:.0f} s -> {store.folder}", flush=True)
    qpath = folder / f"queries{queries}.npy"
    if not qpath.is_file():
        rng = np.random.default_rng([SEED, 3])
        src = np.sort(rng.choice(n, size=queries, replace=False))
        q = store.rows(src)
        q += _noise(rng, queries, DIM, QUERY_NOISE)
        with atomic_path(qpath) as tmp, open(tmp, "wb") as fh:
            np.save(fh, _unit_rows(q))


# ---------------------------------------------------------------------- one case


def ivfpq_settings(n: int) -> dict:
    nlist = max(16, int(round(n ** 0.5)))
    return {"nlist": nlist, "nprobe": max(8, nlist // 16), "train_size": min(n, max(40 * nlist, 10_240))}


def _row_settings(name: str, settings: dict) -> dict:
    """The settings a result row was searched with: a sweep row (``hnsw/512``, ``ivfpq4+rr``...)
    differs from its index's build settings in its query-time knobs."""
    if "/" in name:  # kind/ef or kind/ef+rr
        swept = {**settings, "ef_search": int(name.split("/")[1].removesuffix("+rr"))}
        return {**swept, "rerank": RERANK} if name.endswith("+rr") else swept
    if name == "ivfpq4+rr":
        return {**settings, "nprobe": 4 * settings["nprobe"], "rerank": RERANK}
    if name == "ivfpq+rr":
        return {**settings, "rerank": RERANK}
    return settings


def run_case(kind: str, n: int, data: Path, queries: int, ef_construction: int = 120) -> list[dict]:
    """Build (or not) and search one case; return its figures (one row per query-time setting:
    ivfpq plain and re-ranked, hnsw at each efSearch of the sweep and re-ranked)."""
    import numpy as np

    from sfrs_core.retrieval.index import build_index, rerank_exact, search, search_exact, set_search_params
    from sfrs_core.retrieval.store import DescriptorStore

    base = rss_mb()
    folder = _folder(data, n)
    store = DescriptorStore.open(folder / "db", require_complete=True)
    q = np.load(folder / f"queries{queries}.npy")
    settings: dict = {}
    t0, c0 = time.perf_counter(), time.process_time()
    if kind == "flat":
        t1, c1 = t0, c0
        sims, ids = search_exact(store, q, K)
    else:
        if kind == "flat-ram":
            index = build_index(store, "flat")
        elif kind == "ivfpq":
            settings = ivfpq_settings(n)
            index = build_index(store, "ivfpq", **settings)
        elif kind in ("hnsw", "hnsw-sq8"):
            settings = {"hnsw_m": 32, "ef_construction": ef_construction, "ef_search": 128,
                        "hnsw_storage": "sq8" if kind == "hnsw-sq8" else "flat"}
            index = build_index(store, "hnsw", **settings)
        else:
            raise ValueError(f"unknown case {kind!r}")
        t1, c1 = time.perf_counter(), time.process_time()
        sims, ids = search(index, q, K)
    t2, c2 = time.perf_counter(), time.process_time()
    results = [(kind, ids, t2 - t1, c2 - c1)]

    def timed(name: str, **knobs) -> None:
        """Search the built index again with other query-time knobs (``rerank``: its top RERANK
        re-ranked exactly from the store) and add the row."""
        set_search_params(index, nprobe=knobs.get("nprobe"), ef_search=knobs.get("ef_search"))
        t3, c3 = time.perf_counter(), time.process_time()
        if knobs.get("rerank"):
            _, found = rerank_exact(store, q, search(index, q, RERANK)[1], K)
        else:
            _, found = search(index, q, K)
        results.append((name, found, time.perf_counter() - t3, time.process_time() - c3))

    if kind == "ivfpq":  # the same index re-ranked from the store, at nprobe and 4 x nprobe
        timed("ivfpq+rr", nprobe=settings["nprobe"], rerank=True)
        timed("ivfpq4+rr", nprobe=4 * settings["nprobe"], rerank=True)
    if kind in ("hnsw", "hnsw-sq8"):  # the same graph searched wider: efSearch is the query-time knob
        for ef in HNSW_EF_SWEEP:
            timed(f"{kind}/{ef}", ef_search=ef)
        timed(f"{kind}/{HNSW_RERANK_EF}+rr", ef_search=HNSW_RERANK_EF, rerank=True)
    exact_path = folder / f"exact{queries}.npy"
    if kind == "flat":
        np.save(exact_path, ids)
    exact = np.load(exact_path)
    peak = peak_rss_mb()
    return [{
        "kind": name, "n": n, "queries": len(q), "store_dtype": store.dtype.name, "settings": _row_settings(name, settings),
        "build_s": t1 - t0, "query_s": secs, "qps": len(q) / secs,
        "build_cpu_s": c1 - c0, "query_cpu_s": cpu,
        "r1_agree": float(np.mean(found[:, 0] == exact[:, 0])),
        "top1_in_top10": float(np.mean((found == exact[:, :1]).any(axis=1))),
        "peak_rss_mb": peak, "base_rss_mb": base,
    } for name, found, secs, cpu in results]


# ---------------------------------------------------------------------- driver


def _child(args: list[str], timeout: float) -> str:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return proc.stdout


def plan(sizes: list[int], kinds: list[str], million: bool, hnsw_max: int, sq8_max: int) -> list[tuple[int, str]]:
    cases = []
    for n in sizes:
        for kind in kinds:
            if kind == "hnsw" and n > hnsw_max or kind == "hnsw-sq8" and n > sq8_max:
                continue
            if kind == "flat-ram" and n > 250_000:
                continue
            cases.append((n, kind))
    if million:
        cases += [(MILLION, "flat"), (MILLION, "ivfpq")]
    return cases


def print_table(rows: list[dict]) -> None:
    """Wall and CPU seconds (all threads; on a shared machine CPU time is the steadier figure),
    agreement with exact search, memory, and the ratios to the streamed flat search."""
    head = (f"{'N':>9} {'case':<15} {'build s':>8} {'cpu s':>7} {'query s':>8} {'cpu s':>7} {'q/s':>7} "
            f"{'R@1 agree':>9} {'top1 in 10':>10} {'peak RSS MB':>11} {'base MB':>8} | "
            f"{'query cpu x flat':>16} {'RSS-base x flat':>15}")
    print(head)
    print("-" * len(head))
    flat = {r["n"]: r for r in rows if r["kind"] == "flat"}
    for r in rows:
        ref = flat.get(r["n"])
        qx = f"{r.get('query_cpu_s', r['query_s']) / ref.get('query_cpu_s', ref['query_s']):.3f}" if ref else "-"
        over = r["peak_rss_mb"] - r["base_rss_mb"]
        mx = f"{over / max(1.0, ref['peak_rss_mb'] - ref['base_rss_mb']):.2f}" if ref else "-"
        print(f"{r['n']:>9} {r['kind']:<15} {r['build_s']:>8.1f} {r.get('build_cpu_s', float('nan')):>7.1f} "
              f"{r['query_s']:>8.2f} {r.get('query_cpu_s', float('nan')):>7.2f} {r['qps']:>7.0f} "
              f"{r['r1_agree']:>9.3f} {r['top1_in_top10']:>10.3f} {r['peak_rss_mb']:>11.0f} {r['base_rss_mb']:>8.0f} "
              f"| {qx:>16} {mx:>15}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2k and 20k images, 200 queries")
    parser.add_argument("--million", action="store_true", help="also 1M images (flat reference + IVF-PQ)")
    parser.add_argument("--sizes", type=int, nargs="+")
    parser.add_argument("--kinds", nargs="+", choices=DEFAULT_KINDS, default=list(DEFAULT_KINDS))
    parser.add_argument("--queries", type=int)
    parser.add_argument("--hnsw-max", type=int, default=HNSW_MAX_N, help="largest N to build HNSW for")
    parser.add_argument("--hnsw-sq8-max", type=int, default=HNSW_SQ8_MAX_N, help="largest N to build HNSW-SQ8 for")
    parser.add_argument("--data", type=Path, default=Path("/tmp/sfrs_bench_retrieval"))
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per subprocess")
    parser.add_argument("--table", type=Path, help="print the table of an --out JSON file and stop")
    parser.add_argument("--_generate", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ef-construction", type=int, default=120,
                        help="HNSW build breadth (default 120, the library's; 40 builds 3x faster, a worse graph)")
    parser.add_argument("--_case", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    queries = args.queries or (200 if args.quick else 1000)
    if args.table:
        print_table(json.loads(args.table.read_text()))
        return 0
    if args._generate:
        generate(args.data, args._generate, queries)
        return 0
    if args._case:
        print(json.dumps(run_case(args._case[0], int(args._case[1]), args.data, queries, args.ef_construction)))
        return 0

    sizes = args.sizes or list(QUICK_SIZES if args.quick else FULL_SIZES)
    cases = plan(sizes, args.kinds, args.million, args.hnsw_max, args.hnsw_sq8_max)
    if "flat" not in args.kinds:  # the exact reference comes from the flat case
        cases = [(n, "flat") for n in sorted({n for n, _ in cases})] + cases
    print(f"retrieval benchmark: {DIM}-D, {queries} queries, k={K}, data in {args.data}; "
          f"{os.cpu_count()} CPU cores, faiss threads {os.environ.get('OMP_NUM_THREADS', 'all')}", flush=True)
    rows: list[dict] = []
    generated: set[int] = set()
    start = time.perf_counter()
    for n, kind in cases:
        if n not in generated:
            print(_child(["--_generate", str(n), "--queries", str(queries), "--data", str(args.data)], args.timeout),
                  end="", flush=True)
            generated.add(n)
        out = _child(["--_case", kind, str(n), "--queries", str(queries), "--data", str(args.data),
                      "--ef-construction", str(args.ef_construction)], args.timeout)
        for row in json.loads(out.strip().splitlines()[-1]):
            rows.append(row)
            print(f"  {row['kind']:<15} N={n:<8} build {row['build_s']:7.1f} s  query {row['query_s']:7.2f} s  "
                  f"R@1 agree {row['r1_agree']:.3f}  peak RSS {row['peak_rss_mb']:.0f} MB", flush=True)
    print(f"\nall cases in {(time.perf_counter() - start) / 60:.1f} min\n")
    print_table(rows)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
