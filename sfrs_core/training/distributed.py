"""Multi-process training under ``torchrun``: the process group and the few collectives training needs.

``torchrun --nproc_per_node=N -m sfrs_core train ...`` starts N copies of the command with
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` set (and ``MASTER_ADDR``/``MASTER_PORT``);
:func:`session` reads them and joins the process group: gloo on a machine without CUDA,
``cpu:gloo,cuda:nccl`` with CUDA (NCCL for GPU tensors: DDP's gradients and the model
broadcasts; gloo for the CPU tensors: gathered descriptors, the negative cache, flags, payloads).
``SFRS_DIST_BACKEND`` overrides the choice. Without those variables (or with ``WORLD_SIZE=1``)
:func:`session` yields the single-process :class:`DistContext`, whose collectives are no-ops that
return their input unchanged: a plain ``python -m sfrs_core train`` runs exactly as it always did.

Roles: rank 0 alone reads and writes the run folder (checkpoints, metrics, progress, results);
what the other ranks need from it (the initial weights, a resume state, a teacher) reaches them
by :meth:`DistContext.from_main` (``torch.save`` bytes, read back with ``weights_only=True``), so
only the dataset has to be visible to every node.
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import inspect
import io
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Environment variables of the test hooks (see :class:`DebugLog`).
DEBUG_DIR_ENV = "SFRS_TRAIN_DEBUG_DIR"
BACKEND_ENV = "SFRS_DIST_BACKEND"
#: Rows gathered per collective call (bounds the temporary memory of a gather).
_GATHER_BYTES = 256 << 20


class RankFailed(RuntimeError):
    """Raised on the other ranks when a step that rank 0 runs alone failed there."""


def env_world() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun's environment (``(0, 1, 0)`` without it)."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    rank = int(os.environ.get("RANK", "0") or 0)
    local = int(os.environ.get("LOCAL_RANK", str(rank)) or 0)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"invalid torchrun environment: RANK={rank} WORLD_SIZE={world}")
    return rank, world, local


def default_backend() -> str:
    """gloo without CUDA; gloo for CPU tensors and NCCL for CUDA tensors with it."""
    override = os.environ.get(BACKEND_ENV)
    if override:
        return override
    return "cpu:gloo,cuda:nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"


@dataclass(frozen=True)
class DistContext:
    """This process's place among the training processes; the single process by default."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """True with more than one process (a process group is up)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes the run folder."""
        return self.rank == 0

    # ----------------------------------------------------------------- work split
    def shard(self, n: int) -> range:
        """This rank's contiguous slice of ``n`` items (sizes differ by at most one)."""
        return range(self.rank * n // self.world_size, (self.rank + 1) * n // self.world_size)

    # ----------------------------------------------------------------- collectives
    def barrier(self) -> None:
        """Wait for every rank (no-op alone)."""
        if self.enabled:
            dist.barrier()

    def any(self, flag: bool) -> bool:
        """True if ``flag`` is true on any rank (a CPU collective: no device sync)."""
        if not self.enabled:
            return bool(flag)
        t = torch.tensor([1 if flag else 0], dtype=torch.int32)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """The mean of ``tensor`` over the ranks (on its own device; ``tensor`` itself alone)."""
        if not self.enabled:
            return tensor
        out = tensor.detach().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out / self.world_size

    def gather_rows(self, local: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's ``local`` (``n_r x ...``, same trailing shape and dtype) in rank
        order, on CPU, on every rank. Rows travel in blocks of at most 256 MB."""
        local = local.detach().cpu().contiguous()
        if not self.enabled:
            return local
        sizes = torch.tensor([local.shape[0]], dtype=torch.int64)
        all_sizes = [torch.zeros_like(sizes) for _ in range(self.world_size)]
        dist.all_gather(all_sizes, sizes)
        counts = [int(s) for s in all_sizes]
        row_bytes = max(1, int(np.prod(local.shape[1:], dtype=np.int64)) * local.element_size())
        block = max(1, min(max(counts), _GATHER_BYTES // (row_bytes * self.world_size)))
        parts: list[list[torch.Tensor]] = [[] for _ in range(self.world_size)]
        for start in range(0, max(counts), block):
            piece = local[start:start + block]
            padded = local.new_zeros((block, *local.shape[1:]))
            padded[:len(piece)] = piece
            received = [torch.empty_like(padded) for _ in range(self.world_size)]
            dist.all_gather(received, padded)
            for r, got in enumerate(received):
                parts[r].append(got[:max(0, min(block, counts[r] - start))])
        return torch.cat([torch.cat(p) if p else local.new_zeros((0, *local.shape[1:])) for p in parts])

    def _broadcast_bytes(self, data: bytes | None) -> bytes:
        size = torch.tensor([len(data) if data is not None else 0], dtype=torch.int64)
        dist.broadcast(size, 0)
        buf = (torch.frombuffer(bytearray(data), dtype=torch.uint8) if self.is_main and size.item()
               else torch.empty(int(size.item()), dtype=torch.uint8))
        if size.item():
            dist.broadcast(buf, 0)
        return buf.numpy().tobytes()

    def from_main(self, fn: Callable[[], T], *, tensors: bool = False) -> T:
        """Run ``fn`` on rank 0 only and hand its result to every rank.

        The result travels as JSON (``tensors=False``) or as ``torch.save`` bytes read back with
        ``weights_only=True`` (tensors, numbers, strings, lists, dicts). An exception on rank 0 is
        re-raised there and raised as :class:`RankFailed` (with its message) on the others, so no
        rank waits forever for a rank 0 that gave up.
        """
        if not self.enabled:
            return fn()
        result, error = None, None
        if self.is_main:
            try:
                result = fn()
            except BaseException as err:  # noqa: BLE001 - re-raised below, after telling the others
                error = err
        status = self._broadcast_bytes(json.dumps(
            None if error is None else f"{type(error).__name__}: {error}").encode() if self.is_main else None)
        message = json.loads(status.decode())
        if message is not None:
            if error is not None:
                raise error
            raise RankFailed(f"rank 0 failed: {message}")
        if tensors:
            payload = None
            if self.is_main:
                buf = io.BytesIO()
                torch.save(result, buf)
                payload = buf.getvalue()
            data = self._broadcast_bytes(payload)
            return result if self.is_main else torch.load(io.BytesIO(data), weights_only=True)
        data = self._broadcast_bytes(json.dumps(result).encode() if self.is_main else None)
        return result if self.is_main else json.loads(data.decode())

    def ddp(self, module: nn.Module, device: torch.device, sync_buffers: bool) -> nn.Module:
        """``module`` behind :class:`~torch.nn.parallel.DistributedDataParallel` (gradients averaged
        over the ranks in backward); ``sync_buffers`` broadcasts rank 0's buffers every forward."""
        kwargs: dict[str, Any] = dict(device_ids=[device.index] if device.type == "cuda" else None,
                                      find_unused_parameters=False)
        if "forward_sync_buffers" in inspect.signature(nn.parallel.DistributedDataParallel).parameters:
            kwargs["forward_sync_buffers"] = sync_buffers
        else:  # older torch: broadcast_buffers
            kwargs["broadcast_buffers"] = sync_buffers
        return nn.parallel.DistributedDataParallel(module, **kwargs)

    def broadcast_module(self, module: nn.Module, buffers_only: bool = False) -> None:
        """Give ``module``'s parameters (unless ``buffers_only``) and buffers rank 0's values, in
        place, on every rank."""
        if not self.enabled:
            return
        with torch.no_grad():
            for t in [*([] if buffers_only else module.parameters()), *module.buffers()]:
                dist.broadcast(t.data, 0)


@contextlib.contextmanager
def session(timeout_s: float = 1800.0) -> Iterator[DistContext]:
    """The process group of a torchrun launch (joined here, left at the end), or the single process.

    A process group that is already up (a caller's) is used and left up.
    """
    rank, world, local = env_world()
    if world == 1:
        yield DistContext()
        return
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if dist.is_initialized():
        yield DistContext(dist.get_rank(), dist.get_world_size(), local)
        return
    backend = default_backend()
    if "nccl" in backend:
        torch.cuda.set_device(local % torch.cuda.device_count())
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    log.info("rank %d of %d (local rank %d) joined the %s process group", rank, world, local, backend)
    try:
        yield DistContext(dist.get_rank(), dist.get_world_size(), local)
    finally:
        dist.destroy_process_group()


def rank_device(device: torch.device, ctx: DistContext) -> torch.device:
    """The training device of this rank: ``cuda:LOCAL_RANK`` for CUDA under torchrun, else ``device``."""
    if ctx.enabled and device.type == "cuda":
        wanted = torch.device("cuda", ctx.local_rank % torch.cuda.device_count())
        if device.index is not None and device != wanted:
            log.warning("rank %d trains on %s (its LOCAL_RANK), not %s", ctx.rank, wanted, device)
        return wanted
    return device


def strided_batches(queries: np.ndarray, batch: int, ctx: DistContext) -> list[np.ndarray]:
    """This rank's batches of one chunk of ``queries``.

    Alone: consecutive ``batch``-sized slices, as always. With W ranks the chunk is padded to a
    multiple of W by repeating its first queries (as ``DistributedSampler`` pads), rank r takes
    every W-th query from position r, and cuts its share into ``batch``-sized slices: every rank
    gets the same number of batches of the same sizes (DDP needs every rank in every step), the
    ranks' queries are disjoint apart from those < W repeats, and step s of the W ranks together
    covers the queries the single process visits in its steps s·W … s·W+W−1.
    """
    if not ctx.enabled:
        return [queries[i:i + batch] for i in range(0, len(queries), batch)]
    pad = -len(queries) % ctx.world_size
    padded = np.concatenate([queries, queries[:pad]]) if pad else queries
    share = padded[ctx.rank::ctx.world_size]
    return [share[i:i + batch] for i in range(0, len(share), batch)]


def batches_per_chunk(n: int, batch: int, world_size: int) -> int:
    """Optimizer steps of a chunk of ``n`` queries with ``world_size`` ranks (see :func:`strided_batches`)."""
    share = -(-n // world_size)
    return -(-share // batch)


def merge_negative_cache(cache: np.ndarray, mined: list[int], ctx: DistContext, *, per_rank: bool = False) -> None:
    """Give every rank the negative-cache rows every rank mined in the last chunk (in place).

    Each rank updated only the rows of its own queries; a query two ranks mined (a padding repeat)
    keeps the lower rank's row. With ``per_rank`` (``TrainConfig.per_rank_negative_cache``)
    nothing is exchanged: each rank keeps its own cache, as each of OpenIBL's per-rank samplers
    does, and a query's cached negatives are those of the last visit *that rank* made.
    """
    if not ctx.enabled or per_rank:
        return
    ids = torch.as_tensor(np.asarray(mined, dtype=np.int64))
    rows = torch.from_numpy(cache[np.asarray(mined, dtype=np.int64)].copy()) if mined else \
        torch.zeros((0, cache.shape[1]), dtype=torch.int64)
    all_ids, all_rows = ctx.gather_rows(ids), ctx.gather_rows(rows)
    # reversed: the lowest rank's row is written last
    for i, row in zip(reversed(all_ids.tolist()), reversed(list(all_rows.numpy()))):
        cache[i] = row


def gather_negative_caches(cache: np.ndarray, ctx: DistContext) -> torch.Tensor | None:
    """Every rank's whole negative cache as one ``W x Q x N`` tensor (rank order), on every rank
    (a collective); None alone. What ``latest.pt`` keeps of per-rank caches."""
    if not ctx.enabled:
        return None
    return ctx.gather_rows(torch.from_numpy(np.ascontiguousarray(cache))).view(ctx.world_size, *cache.shape)


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict's names, dtypes, shapes and values (equal weights, equal digest)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class DebugLog:
    """Test hook: with ``SFRS_TRAIN_DEBUG_DIR`` set, each rank appends JSON lines to
    ``rank{r}.jsonl`` there (the queries of each of its steps, a digest of the weights at the end
    of each generation); otherwise nothing is written."""

    def __init__(self, ctx: DistContext):
        folder = os.environ.get(DEBUG_DIR_ENV)
        self.path = Path(folder) / f"rank{ctx.rank}.jsonl" if folder else None
        self.ctx = ctx
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def write(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        record = {"rank": self.ctx.rank, "world_size": self.ctx.world_size, **record}
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
