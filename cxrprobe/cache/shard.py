"""The working file of an embed run: a shard of rows written batch by batch, crash-safe.

Every array a run writes into is allocated in full when the shard is created (contiguous,
early allocation), so writing a batch changes raw bytes only and never HDF5's own metadata:
a process killed at any instant leaves a readable file. A batch is committed in two steps,
data then status, each flushed, so a row reads as done only after its bytes are on disk.
Batches are fixed row ranges from the shard's start, so a resumed run feeds the model the
very batches an uninterrupted run would, and writes the same bytes.

A shard covers rows [row_start, row_stop) of the manifest: one shard for a single process,
one per rank when torchrun splits the work; ``final.write_cache`` merges them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from cxrprobe.cache.layout import (
    new_h5_file,
    read_attrs,
    write_head_state,
    write_root_attrs,
    write_table,
    write_text,
)
from cxrprobe.cache.schema import (
    FORMAT,
    REASON_BYTES,
    STATUS_FAILED,
    STATUS_PENDING,
    STATUS_WRITTEN,
    EmbedSpec,
)
from cxrprobe.data.images import batch_ranges
from cxrprobe.data.table import ImageTable
from cxrprobe.errors import CacheError
from cxrprobe.models.text import PromptSet


@dataclass(frozen=True)
class ShardPlan:
    row_start: int
    row_stop: int
    n_rows_total: int
    batch_size: int


def _early_dcpl() -> h5py.h5p.PropDCID:
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_ALLOC)
    return dcpl


def create_shard(
    path: Path,
    spec: EmbedSpec,
    plan: ShardPlan,
    table: ImageTable,
    prompts: PromptSet | None,
    text_embeddings: np.ndarray | None,
    extra_attrs: dict[str, object],
    with_head: bool = False,
    head_state: dict[str, np.ndarray] | None = None,
) -> None:
    """Write a fresh shard (built in memory, written under a temporary name, renamed into place);
    ``prompts`` and ``text_embeddings`` None for an image-only encoder; ``with_head`` reserves
    room for an adapted head's logits beside the embeddings."""
    n = plan.row_stop - plan.row_start
    if len(table) != n:
        raise ValueError(f"table has {len(table)} rows for a shard of {n}")
    with new_h5_file(path, "new") as f:
        write_root_attrs(f, spec, extra_attrs, complete=False)
        for name, value in vars(plan).items():
            f.attrs[name] = value
        write_table(f, table)
        write_text(f, prompts, text_embeddings)
        f.create_dataset("embeddings", shape=(n, spec.embed_dim), dtype=spec.dtype, dcpl=_early_dcpl())
        f.create_dataset("status", shape=(n,), dtype=np.uint8, dcpl=_early_dcpl())
        f.create_dataset("reason", shape=(n,), dtype=f"S{REASON_BYTES}", dcpl=_early_dcpl())
        if head_state is not None:
            write_head_state(f, head_state)
        if with_head:
            f.create_dataset("head_logits", shape=(n, len(table.classes)), dtype=np.float32, dcpl=_early_dcpl())


class ShardWriter:
    """An open shard: which batches are left, and committing one."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.file = h5py.File(self.path, "r+")
        except OSError as exc:
            raise CacheError(f"{self.path} cannot be opened as a working file ({exc}); rerun with --force") from None
        attrs = read_attrs(self.file)
        if attrs.get("format") != FORMAT or "row_start" not in attrs or "status" not in self.file:
            self.file.close()
            raise CacheError(f"{self.path} is not an embed working file; rerun with --force")
        try:
            self.spec = EmbedSpec.from_attrs(attrs, self.path)
        except CacheError:
            self.file.close()
            raise
        self.plan = ShardPlan(
            int(attrs["row_start"]), int(attrs["row_stop"]), int(attrs["n_rows_total"]), int(attrs["batch_size"])
        )
        self.attrs = attrs

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def n_rows(self) -> int:
        return self.plan.row_stop - self.plan.row_start

    def pending_batches(self) -> list[range]:
        """Local row ranges not yet committed (a batch is redone if any of its rows is pending)."""
        status = self.file["status"][()]
        return [
            b for b in batch_ranges(self.n_rows, self.plan.batch_size)
            if np.any(status[b.start:b.stop] == STATUS_PENDING)
        ]

    def commit(
        self, batch: range, ok_rows: np.ndarray, embeddings: np.ndarray, failures: list[tuple[int, str]],
        logits: np.ndarray | None = None,
    ) -> None:
        """Write one batch: the embeddings of ``ok_rows`` and the reasons of ``failures``
        (both in local row numbers), flush, then mark the batch's rows done and flush again."""
        block = np.zeros((len(batch), self.spec.embed_dim), dtype=self.spec.dtype)
        block[ok_rows - batch.start] = embeddings
        reasons = np.zeros(len(batch), dtype=f"S{REASON_BYTES}")
        status = np.full(len(batch), STATUS_WRITTEN, dtype=np.uint8)
        for row, reason in failures:
            reasons[row - batch.start] = reason.encode("utf-8")[:REASON_BYTES]
            status[row - batch.start] = STATUS_FAILED
        if np.count_nonzero(status == STATUS_WRITTEN) != len(ok_rows):
            raise ValueError("every row of a batch must be either embedded or failed")
        self.file["embeddings"][batch.start:batch.stop] = block
        if "head_logits" in self.file:
            head_block = np.zeros((len(batch), self.file["head_logits"].shape[1]), dtype=np.float32)
            if logits is not None:
                head_block[ok_rows - batch.start] = logits
            self.file["head_logits"][batch.start:batch.stop] = head_block
        self.file["reason"][batch.start:batch.stop] = reasons
        self.file.flush()
        self.file["status"][batch.start:batch.stop] = status
        self.file.flush()
