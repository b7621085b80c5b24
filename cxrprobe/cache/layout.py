"""Reading and writing the parts shared by shards and finished caches: attributes, the row
table and the text group."""

from __future__ import annotations

import contextlib
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from cxrprobe.cache.schema import FORMAT, FORMAT_VERSION, EmbedSpec
from cxrprobe.data.table import ImageTable
from cxrprobe.fsutil import temporary_sibling, write_new_file
from cxrprobe.labels import NIH_LABELS, LabelSet
from cxrprobe.models.text import PromptSet

STR = h5py.string_dtype()
TABLE_COLUMNS = ("image_id", "patient_id", "split", "view", "study_id")


def created_timestamp() -> str:
    """Now in UTC, or SOURCE_DATE_EPOCH when set, so a rebuilt cache can be byte-identical."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    seconds = int(epoch) if epoch and epoch.isdigit() else int(time.time())
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@contextlib.contextmanager
def new_h5_file(path: Path, tag: str) -> Iterator[h5py.File]:
    """An HDF5 file built in memory and written to ``path`` (through a temporary sibling) once whole.

    HDF5 writes metadata lazily, when a file closes; on a full disk that close fails, and the
    library then prints tracebacks at exit and can crash the interpreter. Built in memory, the
    file reaches the disk in one plain write whose failure is an ordinary OSError.
    """
    f = h5py.File(temporary_sibling(path, "in-memory"), "w", driver="core", backing_store=False)
    try:
        yield f
        f.flush()
        image = f.id.get_file_image()
    finally:
        f.close()
    write_new_file(path, image, tag)


def write_root_attrs(f: h5py.File, spec: EmbedSpec, extra: dict[str, object], complete: bool) -> None:
    attrs = f.attrs
    attrs["format"] = FORMAT
    attrs["format_version"] = FORMAT_VERSION
    for name, value in spec.to_attrs().items():
        attrs[name] = value
    for name, value in extra.items():
        attrs[name] = value
    attrs["complete"] = complete


def read_attrs(f: h5py.File) -> dict[str, object]:
    out: dict[str, object] = {}
    for name, value in f.attrs.items():
        if isinstance(value, np.ndarray):
            value = [v.decode() if isinstance(v, bytes) else v for v in value.tolist()]
        elif isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, np.generic):
            value = value.item()
        out[name] = value
    return out


def fixed_strings(values: list[str]) -> np.ndarray:
    """Fixed-length UTF-8: a variable-length string costs ~16 bytes of heap overhead per row,
    which for 112,120 rows would add ~10% to a cache whose payload is its embeddings."""
    encoded = [v.encode("utf-8") for v in values]
    width = max((len(e) for e in encoded), default=1) or 1
    return np.array(encoded, dtype=h5py.string_dtype("utf-8", length=width))


def write_table(f: h5py.File, table: ImageTable) -> None:
    """The row table, its label set in the root attributes (``write_root_attrs`` comes first)."""
    # small, repetitive columns: gzip (in every HDF5 build) shrinks them several-fold
    packed = {"compression": "gzip", "shuffle": True} if len(table) else {}
    columns = (table.image_ids, table.patient_ids, table.split, table.view, table.study_ids)
    for name, values in zip(TABLE_COLUMNS, columns):
        f.create_dataset(name, data=fixed_strings(values.tolist()), **packed)
    f.create_dataset("labels", data=np.ascontiguousarray(table.labels, dtype=np.uint8), **packed)
    f.create_dataset("known", data=np.ascontiguousarray(table.known, dtype=np.uint8), **packed)
    f.create_dataset("normal", data=np.ascontiguousarray(table.normal, dtype=np.uint8), **packed)
    label_set = table.label_set
    f["labels"].attrs["classes"] = np.array(label_set.classes, dtype=STR)
    f.attrs["classes"] = np.array(label_set.classes, dtype=STR)
    f.attrs["display_names"] = np.array(label_set.display_names, dtype=STR)
    f.attrs["prompt_names"] = np.array(label_set.prompt_names, dtype=STR)
    f.attrs["normal_rule"] = label_set.normal_rule


def read_label_set(attrs: dict[str, object]) -> LabelSet:
    """The cache's label set; a cache of format 1 holds NIH's."""
    if attrs.get("format_version") == 1:
        return NIH_LABELS
    return LabelSet(tuple(attrs["classes"]), tuple(attrs["display_names"]), tuple(attrs["prompt_names"]),
                    str(attrs["normal_rule"]))


def read_table(f: h5py.File, rows: np.ndarray | slice = slice(None)) -> ImageTable:
    """The row table (of ``rows``); format 1 has no known-mask, normal flags or studies, and
    means what it always meant: every label known, normal = no finding, one image a study."""
    def strings(name: str) -> np.ndarray:
        return np.array(f[name].asstr()[rows], dtype=object).astype(str)

    def optional(name: str) -> np.ndarray | None:
        return np.asarray(f[name][rows], dtype=bool) if name in f else None

    return ImageTable(
        image_ids=strings("image_id"),
        patient_ids=strings("patient_id"),
        split=strings("split"),
        view=strings("view"),
        labels=np.asarray(f["labels"][rows], dtype=np.uint8),
        known=optional("known"),
        normal=optional("normal"),
        study_ids=strings("study_id") if "study_id" in f else None,
        label_set=read_label_set(read_attrs(f)),
    )


def write_text(f: h5py.File, prompts: PromptSet | None, embeddings: np.ndarray | None) -> None:
    """The prompts and their embeddings; nothing for an image-only encoder (no text group)."""
    if prompts is None or embeddings is None:
        return
    group = f.create_group("text")
    group.create_dataset("prompt", data=np.array(prompts.prompts, dtype=STR))
    group.create_dataset("class", data=np.array(prompts.classes, dtype=STR))
    group.create_dataset("polarity", data=np.array(prompts.polarity, dtype=STR))
    group.create_dataset("embeddings", data=np.asarray(embeddings, dtype=np.float32))


def read_text(f: h5py.File) -> tuple[PromptSet, np.ndarray]:
    group = f["text"]
    prompts = PromptSet(
        prompts=tuple(group["prompt"].asstr()[()]),
        classes=tuple(group["class"].asstr()[()]),
        polarity=tuple(group["polarity"].asstr()[()]),
    )
    return prompts, np.asarray(group["embeddings"][()], dtype=np.float32)


def write_head_state(f: h5py.File, state: dict[str, np.ndarray]) -> None:
    """The adapted head's weights (group ``head/state``), so the paper protocol runs from the cache."""
    group = f.require_group("head").create_group("state")
    for name in sorted(state):
        group.create_dataset(name, data=np.asarray(state[name], dtype=np.float32))


def read_head_state(f: h5py.File) -> dict[str, np.ndarray] | None:
    if "head/state" not in f:
        return None
    return {name: f["head/state"][name][()] for name in f["head/state"]}
