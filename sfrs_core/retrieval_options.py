"""The retrieval flags of ``evaluate`` and ``index`` and the settings they describe.

``--kind``, ``--store``, ``--store-dtype`` and the index's recall-versus-speed settings
(``--nlist``, ``--nprobe``, ``--ef-search`` ...), translated into an
:class:`~sfrs_core.retrieval.index.IndexConfig` by :func:`index_config_from_args`; ``--image-size``
and ``--protocol`` into the image size and protocol an evaluation runs with.

This module lives beside ``sfrs_core.retrieval``, not in it, on purpose: that package's
``__init__`` imports torch and faiss, and the command line's parser (``--help`` included) must
load without them (as ``sfrs_core.training.options``, the ``train`` flags).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the parser itself imports nothing heavy (no torch or faiss for `--help`)
    from .data.dataset import PlaceDataset
    from .retrieval.index import IndexConfig

INDEX_TUNING = {  # flag -> (IndexConfig field, the kinds it applies to)
    "nlist": ("nlist", ("ivfpq",)), "nprobe": ("nprobe", ("ivfpq",)), "pq_m": ("m", ("ivfpq",)),
    "hnsw_m": ("hnsw_m", ("hnsw",)), "ef_construction": ("ef_construction", ("hnsw",)),
    "ef_search": ("ef_search", ("hnsw",)), "hnsw_storage": ("hnsw_storage", ("hnsw",)),
    "rerank": ("rerank", ("ivfpq", "hnsw")),
}


def add_index_arguments(p: argparse.ArgumentParser) -> None:
    """--kind, --store and --store-dtype of `evaluate` and `index` (large databases)."""
    p.add_argument("--kind", default="flat", choices=["flat", "ivfpq", "hnsw"],
                   help="faiss index: flat (exact, default), ivfpq (compressed, approximate), hnsw (graph, approximate)")
    p.add_argument("--store", type=Path, metavar="DIR",
                   help="keep descriptors in an on-disk store in DIR instead of RAM (written chunk by chunk, resumed "
                        "after an interruption, refused if made by another model or dataset); for large databases")
    p.add_argument("--store-dtype", default="float32", choices=["float32", "float16"],
                   help="descriptor store precision (float16: half the disk, ~1e-3 error)")
    tune = p.add_argument_group("index settings (recall versus speed; defaults from the database size, see "
                                "sfrs_core.retrieval.index)")
    tune.add_argument("--nlist", type=int, help="ivfpq: inverted lists (default sqrt(N)·4)")
    tune.add_argument("--nprobe", type=int, help="ivfpq: lists searched per query (more: higher recall, slower)")
    tune.add_argument("--pq-m", type=int, help="ivfpq: sub-quantizers, bytes a vector (default dim/64)")
    tune.add_argument("--hnsw-m", type=int, help="hnsw: links per node (default 32)")
    tune.add_argument("--ef-construction", type=int, help="hnsw: build breadth (default 120; 40 builds 3x faster, a worse graph)")
    tune.add_argument("--ef-search", type=int, help="hnsw: search breadth (default 128; more: higher recall, slower)")
    tune.add_argument("--hnsw-storage", choices=["flat", "sq8"], help="hnsw: full vectors or 8-bit (4x less memory)")
    tune.add_argument("--rerank", type=int, help="evaluate with ivfpq/hnsw: re-rank each query's top R exactly")


def index_config_from_args(args: argparse.Namespace) -> IndexConfig | str:
    """``--kind`` and the index settings given, as an :class:`~sfrs_core.retrieval.index.IndexConfig`
    (the plain kind when none is given); a setting of another kind is an error."""
    from .retrieval.index import IndexConfig

    given = {name: getattr(args, name) for name in INDEX_TUNING if getattr(args, name, None) is not None}
    for name in given:
        kinds = INDEX_TUNING[name][1]
        if args.kind not in kinds:
            raise ValueError(f"--{name.replace('_', '-')} applies to --kind {' or '.join(kinds)}, not {args.kind}")
    return IndexConfig(kind=args.kind, **{INDEX_TUNING[n][0]: v for n, v in given.items()}) if given else args.kind


def bundle_index_config(args: argparse.Namespace) -> IndexConfig | str:
    """:func:`index_config_from_args` for ``index``: an index bundle keeps no full descriptors, so
    ``--rerank`` is an error there."""
    kind = index_config_from_args(args)
    if getattr(kind, "rerank", 0):
        raise ValueError("--rerank applies to evaluate (an index bundle keeps no full descriptors to re-rank from)")
    return kind


def image_size_from_args(values: list[str] | None) -> tuple[int, int] | None:
    """``--image-size H W`` as ``(H, W)``; None for ``native`` or when not given."""
    return None if values is None or values == ["native"] else (int(values[0]), int(values[1]))


def evaluation_protocol(dataset: PlaceDataset, protocol: str,
                        image_size: list[str] | None) -> tuple[str, tuple[int, int] | None]:
    """``--protocol`` (``auto``: the dataset's default) and ``--image-size`` of ``evaluate`` as the
    protocol and image size it runs with: the tokyo247 protocol needs a size (default OpenIBL's)."""
    from .retrieval.evaluate import OPENIBL_IMAGE_SIZE, default_protocol

    protocol = default_protocol(dataset) if protocol == "auto" else protocol
    size = image_size_from_args(image_size)
    if protocol == "tokyo247" and size is None:
        if image_size is not None:
            raise ValueError("the tokyo247 protocol resizes to H W (database) and max(H, W) (query shorter edge); "
                             "give --image-size H W, or use --protocol plain for native sizes")
        size = OPENIBL_IMAGE_SIZE
    return protocol, size
