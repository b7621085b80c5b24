"""Opening a feature cache for reading, and summarising it for ``cxrprobe info``."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from cxrprobe.cache.layout import read_attrs, read_head_state, read_table, read_text
from cxrprobe.cache.schema import FORMAT, OPEN_CLIP_ENCODER, READABLE_VERSIONS, STATUS_FAILED, STATUS_WRITTEN
from cxrprobe.data.table import SPLITS, ImageTable
from cxrprobe.errors import CacheError
from cxrprobe.labels import FINDINGS, LabelSet
from cxrprobe.models.text import OPENAI_LOGIT_SCALE, PromptSet, TextPrompts

# What every cache and working shard holds beside its attributes (docs/cache-format.md).
REQUIRED_DATASETS = ("image_id", "patient_id", "split", "view", "labels", "embeddings")
REQUIRED_SINCE_2 = ("known", "normal", "study_id")


def _open_h5(path: Path) -> h5py.File:
    if not path.exists():
        raise CacheError(f"no cache at {path}")
    if path.is_dir():
        raise CacheError(f"{path} is a folder, not a cache file")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        if "unable to lock file" in str(exc):
            raise CacheError(f"{path} is being written by another process; wait for it to finish") from None
        raise CacheError(f"{path} is not a readable HDF5 file (truncated, or another kind of file)") from None


def _check_format(path: Path, attrs: dict[str, object]) -> None:
    if attrs.get("format") != FORMAT:
        raise CacheError(f"{path} is an HDF5 file but not a cxrprobe cache (no format={FORMAT!r} attribute)")
    version = attrs.get("format_version")
    if version not in READABLE_VERSIONS:
        raise CacheError(
            f"{path} has cache format version {version}; this cxrprobe reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}"
        )


def peek_cache(path: Path, missing_ok: bool = False, foreign_ok: bool = False) -> dict[str, object] | None:
    """The root attributes of a cache; None for a missing file (missing_ok) or for a file that
    is not a cxrprobe cache (foreign_ok)."""
    path = Path(path)
    if missing_ok and not path.exists():
        return None
    try:
        with _open_h5(path) as f:
            attrs = read_attrs(f)
        _check_format(path, attrs)
    except CacheError:
        if foreign_ok and path.is_file():
            return None
        raise
    return attrs


class FeatureCache:
    """A cache opened for reading. Experiments need ``complete``; ``info`` takes any.

    >>> with FeatureCache("nih.h5") as cache:
    ...     test = cache.rows("test")
    ...     X, Y = cache.embeddings(test), cache.labels[test]
    """

    def __init__(self, path: Path | str, require_complete: bool = True) -> None:
        self.path = Path(path)
        self.file = _open_h5(self.path)
        try:
            self.attrs = read_attrs(self.file)
            _check_format(self.path, self.attrs)
            if require_complete and not self.attrs.get("complete"):
                raise CacheError(f"{self.path} is not complete; finish it with `cxrprobe embed ... --resume`")
            self.table: ImageTable = self._read_checked_table()
        except Exception:
            self.file.close()
            raise
        if self.attrs["format_version"] == 1 and list(self.attrs.get("classes", [])) != list(FINDINGS):
            self.file.close()
            raise CacheError(f"{self.path} has classes {self.attrs.get('classes')}, not the 14 NIH findings")

    def _read_checked_table(self) -> ImageTable:
        """The row table, after checking that every dataset a reader needs is there and fits."""
        required = REQUIRED_DATASETS + (REQUIRED_SINCE_2 if self.attrs["format_version"] >= 2 else ())
        missing = [name for name in required if name not in self.file]
        if missing:
            raise CacheError(f"{self.path} is damaged: it has no {missing[0]!r} dataset; re-embed it")
        try:
            table = read_table(self.file)
            rows = self.file["embeddings"].shape[0]
        except (KeyError, ValueError, TypeError, OSError) as exc:
            raise CacheError(f"{self.path} is damaged ({str(exc).splitlines()[0][:120]}); re-embed it") from None
        if rows != len(table):
            raise CacheError(f"{self.path} is damaged: {rows} embeddings for {len(table)} images; re-embed it")
        return table

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> FeatureCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def is_shard(self) -> bool:
        return "status" in self.file

    @property
    def labels(self) -> np.ndarray:
        """[n, C] 0/1, 0 where unknown: read it with ``known``."""
        return self.table.labels

    @property
    def known(self) -> np.ndarray:
        """[n, C] whether each label is known (all true for NIH)."""
        return self.table.known

    @property
    def normal(self) -> np.ndarray:
        """[n] the images the label set's normal rule calls normal."""
        return self.table.normal

    @property
    def label_set(self) -> LabelSet:
        return self.table.label_set

    @property
    def classes(self) -> tuple[str, ...]:
        return self.table.classes

    def rows(self, split: str) -> np.ndarray:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}")
        return np.flatnonzero(self.table.split == split)

    def embeddings(self, rows: np.ndarray | None = None, dtype: type = np.float32) -> np.ndarray:
        """Embeddings of ``rows`` (all when None) as ``dtype``; the file is read in one pass."""
        data = self.file["embeddings"][()]
        return np.asarray(data if rows is None else data[rows], dtype=dtype)

    def text(self) -> tuple[PromptSet, np.ndarray]:
        if "text" not in self.file:
            raise CacheError(f"{self.path} holds no text embeddings")
        return read_text(self.file)

    def text_prompts(self) -> TextPrompts:
        """The prompts, their embeddings, and the model's logit scale and bias; caches from
        before these were recorded read as OpenAI CLIP's scale (100) and no bias."""
        prompts, embeddings = self.text()
        return TextPrompts(prompts, embeddings, float(self.attrs.get("logit_scale", OPENAI_LOGIT_SCALE)),
                           float(self.attrs.get("logit_bias", 0.0)), self.classes)

    def head_logits(self, rows: np.ndarray | None = None) -> np.ndarray:
        """The adapted head's logits [n, C], when the cache was embedded from an adapt run."""
        if "head" not in self.file:
            raise CacheError(f"{self.path} holds no adapted-head logits (embed it with --checkpoint RUN_DIR)")
        data = self.file["head/logits"][()]
        return np.asarray(data if rows is None else data[rows], dtype=np.float32)

    def head_state(self) -> dict[str, np.ndarray]:
        """The adapted head's weights, for the paper protocol."""
        state = read_head_state(self.file)
        if state is None:
            raise CacheError(f"{self.path} holds no adapted head (embed it with --checkpoint RUN_DIR)")
        return state

    def failures(self) -> list[tuple[str, str]]:
        if self.is_shard:
            status = self.file["status"][()]
            ids = self.table.image_ids[status == STATUS_FAILED]
            reasons = self.file["reason"][()][status == STATUS_FAILED]
            return [(i, r.decode("utf-8", "replace")) for i, r in zip(ids, reasons)]
        if "failures" not in self.file:
            raise CacheError(f"{self.path} is damaged: it has no 'failures' table; re-embed it")
        group = self.file["failures"]
        return list(zip(group["image_id"].asstr()[()], group["reason"].asstr()[()]))

    def summary(self) -> dict[str, object]:
        """What ``cxrprobe info`` shows, as plain JSON-ready data."""
        a = self.attrs
        table = self.table
        if self.is_shard:
            status = self.file["status"][()]
            written = status == STATUS_WRITTEN
            progress = {"rows_done": int(np.count_nonzero(status != 0)), "rows_total": int(len(status))}
        else:
            written = np.ones(len(table), dtype=bool)
            progress = None
        per_split = {}
        for split in SPLITS:
            rows = written & (table.split == split)
            labels, known = table.labels[rows], table.known[rows]
            per_split[split] = {
                "images": int(np.count_nonzero(rows)),
                "patients": int(len(np.unique(table.patient_ids[rows]))),
                "normal": int(np.count_nonzero(table.normal[rows])),
                "labels": dict(zip(table.classes, (int(n) for n in (labels * known).sum(axis=0)))),
                "negatives": dict(zip(table.classes, (int(n) for n in ((1 - labels) * known).sum(axis=0)))),
                "unknown": dict(zip(table.classes, (int(n) for n in (~known).sum(axis=0)))),
            }
        failures = self.failures()
        return {
            "path": str(self.path),
            "complete": bool(a.get("complete")),
            "in_progress": progress,
            "format_version": a.get("format_version"),
            "created": a.get("created"),
            "model": a.get("model"),
            "pretrained": a.get("pretrained"),
            "weights_sha256": a.get("weights_sha256"),
            "encoder": self._json_attr("encoder") or json.loads(OPEN_CLIP_ENCODER),
            "preprocessing": self._json_attr("preprocessing"),
            "embed_dim": a.get("embed_dim"),
            "dtype": a.get("dtype"),
            "precision": a.get("precision"),
            "l2_normalised": a.get("l2_normalised"),
            "dataset": a.get("dataset"),
            "classes": list(table.classes),
            "display_names": list(table.label_set.display_names),
            "normal_rule": table.label_set.normal_rule,
            "label_policy": self._json_attr("label_policy") or None,
            "label_source": a.get("label_source"),
            "test_source": a.get("test_source", "official test list"),
            "metadata_origin": a.get("metadata_origin"),
            "dataset_fingerprint": a.get("dataset_fingerprint"),
            "rows": int(np.count_nonzero(written)),
            "metadata_rows": a.get("n_metadata_rows"),
            "missing_images": a.get("n_missing_images"),
            "splits": per_split,
            "failures": [{"image_id": i, "reason": r} for i, r in failures],
            "text_prompts": len(self.file["text/prompt"]) if "text" in self.file else 0,
            "logit_scale": a.get("logit_scale"),
            "logit_bias": a.get("logit_bias"),
            "adapted_head": "head" in self.file or "head_logits" in self.file,
            "checkpoint": a.get("checkpoint"),
            "versions": self._json_attr("versions"),
        }

    def _json_attr(self, name: str) -> dict:
        """An attribute holding JSON, parsed as data only (never evaluated)."""
        try:
            value = json.loads(str(self.attrs.get(name, "{}")))
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise CacheError(f"{self.path} is damaged: its {name!r} attribute is not a JSON object; re-embed it")
        return value
