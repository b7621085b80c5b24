"""Names, versions and identity of the cache format (docs/cache-format.md describes it).

A *shard* is the working file an embed writes into (``CACHE.partial``): every row of its
range pre-allocated, a per-row status, ``complete`` false. The finished *cache* holds only
the rows that were embedded, in manifest order, with ``complete`` true.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from cxrprobe.errors import CacheError

FORMAT = "cxrprobe-cache"
FORMAT_VERSION = 2  # 2: any label set, known-masks, normal flags, studies; 1: NIH's 14 findings
READABLE_VERSIONS = (1, 2)

STATUS_PENDING = 0
STATUS_WRITTEN = 1
STATUS_FAILED = 2
REASON_BYTES = 240  # failure reasons are cut to this many bytes in a shard
ROW_CHUNK = 1024  # rows per HDF5 chunk of the final embeddings (1 MiB at 512 x float16)

EMBEDDING_DTYPES = ("float16", "float32")
# what every cache from before the encoder was recorded holds: an open_clip model's projected features
OPEN_CLIP_ENCODER = json.dumps({"backend": "open_clip", "features": "projected", "text": True,
                                "text_scoring": "softmax"}, sort_keys=True)


@dataclass(frozen=True)
class EmbedSpec:
    """Everything that decides a cache's bytes. Two runs with equal specs write equal files."""

    model: str
    pretrained: str
    weights_sha256: str
    preprocessing: str  # JSON of data.images.Preprocessing
    embed_dim: int
    dtype: str
    precision: str
    device: str  # "cpu" or "cuda": the same weights and precision give other bits on the other
    l2_normalised: bool
    dataset: str
    dataset_fingerprint: str
    label_source: str
    val_fraction: float
    val_seed: int
    manifest_sha256: str  # the ordered image ids this cache covers
    encoder: str = OPEN_CLIP_ENCODER  # JSON: back-end, feature point, text tower (models LoadedModel.record)

    # Fields that must agree before a run may continue another's file. ``pretrained`` is
    # left out: the same weights may be named by a tag or by a file.
    IDENTITY = (
        "model", "weights_sha256", "preprocessing", "embed_dim", "dtype", "precision", "device",
        "l2_normalised", "dataset_fingerprint", "val_fraction", "val_seed", "manifest_sha256", "encoder",
    )
    # Fields older caches lack, read as these values.
    DEFAULTS = {"device": "unknown", "encoder": OPEN_CLIP_ENCODER}

    def to_attrs(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_attrs(cls, attrs: dict[str, object], source: object = "the cache") -> EmbedSpec:
        attrs = {**cls.DEFAULTS, **attrs}
        missing = [name for name in cls.__dataclass_fields__ if name not in attrs]
        if missing:
            raise CacheError(f"{source} lacks its {missing[0]!r} attribute (damaged, or written by another program); "
                             "rebuild it with --force")
        values = {}
        for name in cls.__dataclass_fields__:
            value = attrs[name]
            values[name] = value.item() if hasattr(value, "item") else value
        return cls(**values)  # type: ignore[arg-type]

    def first_difference(self, other: EmbedSpec) -> str | None:
        """A phrase naming the first identity field that differs, or None."""
        for name in self.IDENTITY:
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine != theirs:
                if name == "weights_sha256":
                    return f"weights differ ({other.model}/{other.pretrained} vs {self.model}/{self.pretrained})"
                if name == "manifest_sha256":
                    return "the image list differs (other images present, or another --limit)"
                if name == "dataset_fingerprint":
                    return "the metadata (labels, splits or patients) differ"
                return f"{name} is {theirs!r} there but {mine!r} here"
        return None


def manifest_sha256(image_ids) -> str:  # noqa: ANN001 - any sequence of str
    """The identity of an ordered list of images: sha256 of the ids joined by newlines."""
    return hashlib.sha256("\n".join(list(image_ids)).encode()).hexdigest()


def attr_json(value: object) -> str:
    """The one compact JSON form of a cache attribute (sorted keys: the same value, the same bytes)."""
    return json.dumps(value, sort_keys=True)


def partial_path(out: Path) -> Path:
    """The working shard of the cache ``out``: ``CACHE.partial`` beside it."""
    return out.with_name(out.name + ".partial")
