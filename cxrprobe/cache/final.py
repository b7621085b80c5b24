"""Turning finished shards into one cache file, atomically."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np

from cxrprobe.cache.layout import (
    STR,
    new_h5_file,
    read_attrs,
    read_head_state,
    read_table,
    read_text,
    write_head_state,
    write_root_attrs,
    write_table,
    write_text,
)
from cxrprobe.cache.schema import ROW_CHUNK, STATUS_FAILED, STATUS_PENDING, STATUS_WRITTEN, EmbedSpec
from cxrprobe.data.table import ImageTable, concatenate_tables
from cxrprobe.errors import CacheError

# Attributes a shard has that the cache does not copy (written anew, or meaningless after the merge).
NOT_COPIED = ("row_start", "row_stop", "n_rows_total", "batch_size", "complete", "format", "format_version", "classes")


@dataclass(frozen=True)
class CacheSummary:
    rows: int
    failures: int


def write_cache(out: Path, shards: list[Path]) -> CacheSummary:
    """Merge ``shards`` (in row order, all finished) into ``out``; replace ``out`` only at the end."""
    parts = [_read_shard(path) for path in shards]
    _check_parts(parts, shards)
    first_attrs = parts[0].attrs
    spec = EmbedSpec.from_attrs(first_attrs)
    table = concatenate_tables([p.table for p in parts])
    status = np.concatenate([p.status for p in parts])
    embeddings = np.concatenate([p.embeddings for p in parts])
    reasons = np.concatenate([p.reasons for p in parts])
    prompts, text_embeddings = parts[0].text
    keep = status == STATUS_WRITTEN
    failed = status == STATUS_FAILED
    excluded = set(spec.to_attrs()) | set(NOT_COPIED)
    extra = {k: v for k, v in first_attrs.items() if k not in excluded}
    with new_h5_file(out, "tmp") as f:
        write_root_attrs(f, spec, extra, complete=False)
        write_table(f, table.take(keep))
        kept = embeddings[keep]
        chunks = (min(ROW_CHUNK, len(kept)), spec.embed_dim) if len(kept) else None
        f.create_dataset("embeddings", data=kept, chunks=chunks)
        f.create_dataset("written", data=np.ones(len(kept), dtype=np.uint8))
        group = f.create_group("failures")
        group.create_dataset("image_id", data=np.array(table.image_ids[failed].tolist(), dtype=STR))
        group.create_dataset("reason", data=np.array([r.decode("utf-8", "replace") for r in reasons[failed]], dtype=STR))
        write_text(f, prompts, text_embeddings)
        if parts[0].head_logits is not None:
            f.create_group("head").create_dataset("logits", data=np.concatenate([p.head_logits for p in parts])[keep])
        if parts[0].head_state is not None:
            write_head_state(f, parts[0].head_state)
        f.attrs["complete"] = True
    return CacheSummary(rows=int(keep.sum()), failures=int(failed.sum()))


class ShardContents(NamedTuple):
    """Everything a finished shard holds, read into memory."""

    attrs: dict
    table: ImageTable
    status: np.ndarray
    embeddings: np.ndarray
    reasons: np.ndarray
    text: tuple  # (PromptSet, embeddings)
    head_logits: np.ndarray | None
    head_state: dict | None


def _read_shard(path: Path) -> ShardContents:
    with h5py.File(path, "r") as f:
        return ShardContents(
            attrs=read_attrs(f),
            table=read_table(f),
            status=f["status"][()],
            embeddings=f["embeddings"][()],
            reasons=f["reason"][()],
            text=read_text(f) if "text" in f else (None, None),
            head_logits=f["head_logits"][()] if "head_logits" in f else None,
            head_state=read_head_state(f),
        )


def _check_parts(parts: list[ShardContents], paths: list[Path]) -> None:
    """The shards tile rows 0..n in order, share one spec, and are all finished."""
    expected_start = 0
    first = EmbedSpec.from_attrs(parts[0].attrs)
    for attrs, path in zip((p.attrs for p in parts), paths):
        if int(attrs["row_start"]) != expected_start:
            raise CacheError(f"{path} starts at row {attrs['row_start']}, expected {expected_start}")
        expected_start = int(attrs["row_stop"])
        difference = first.first_difference(EmbedSpec.from_attrs(attrs))
        if difference:
            raise CacheError(f"{path} does not belong with {paths[0]}: {difference}")
    total = int(parts[0][0]["n_rows_total"])
    if expected_start != total:
        raise CacheError(f"the shards cover rows 0-{expected_start} of {total}")
    for (_, _, status, *_), path in zip(parts, paths):
        if np.any(status == STATUS_PENDING):
            raise CacheError(f"{path} is not finished: {int(np.sum(status == STATUS_PENDING))} rows pending")
