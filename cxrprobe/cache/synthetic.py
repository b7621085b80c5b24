"""A feature cache with the real NIH structure and generated embeddings.

Rows, labels, splits and patients are the real ones (so class imbalance, co-occurrence and
patient structure are NIH's); embeddings come from a generative model in which each finding
shifts the embedding along a direction of its own, by a strength of its own, on top of a
per-patient offset and per-image noise. Heads can learn from it, AUC rises with shots, and
the prompt embeddings point along the finding directions, so text zero-shot is above chance.
It ranks heads only roughly: real embeddings are not Gaussian.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxrprobe.cache.final import write_cache
from cxrprobe.cache.layout import created_timestamp
from cxrprobe.cache.schema import EmbedSpec, attr_json, manifest_sha256, partial_path
from cxrprobe.cache.shard import ShardPlan, ShardWriter, create_shard
from cxrprobe.data.images import Preprocessing
from cxrprobe.data.table import DatasetMetadata
from cxrprobe.labels import FINDINGS, NO_FINDING
from cxrprobe.models.text import GENERIC_NEGATIVE_CLASS, OPENAI_LOGIT_SCALE, default_prompts

COMMIT_ROWS = 8192


@dataclass(frozen=True)
class SyntheticModel:
    """Parameters of the generator; the defaults give AUCs like real CLIP ones on NIH (text zero-shot ~0.6, 16-shot ~0.7)."""

    dim: int = 512
    seed: int = 0
    signal: float = 0.6  # mean shift along a finding's direction, in units of the noise
    patient_scale: float = 0.5
    text_noise: float = 4.0  # how far prompts stray from the finding directions
    norm: float = 10.0  # rough norm of a raw CLIP ViT-B/32 image embedding


def synthetic_embeddings(labels: np.ndarray, patient_ids: np.ndarray, model: SyntheticModel) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image embeddings [n, dim], prompt embeddings [p, dim], finding directions [14, dim])."""
    rng = np.random.default_rng(model.seed)
    dim = model.dim
    directions = rng.normal(size=(len(FINDINGS), dim))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    strengths = model.signal * rng.uniform(0.5, 1.5, size=len(FINDINGS))
    common = rng.normal(size=dim) * 3.0 / np.sqrt(dim)
    _, patient_index = np.unique(patient_ids, return_inverse=True)
    patient_offsets = rng.normal(size=(patient_index.max() + 1, dim)) * model.patient_scale / np.sqrt(dim)
    noise = rng.normal(size=(len(labels), dim)) / np.sqrt(dim)
    shift = (labels.astype(np.float64) * strengths) @ directions / np.sqrt(dim) * 4.0
    images = common + patient_offsets[patient_index] + noise + shift
    prompts = default_prompts()
    text = np.empty((len(prompts.prompts), dim))
    abnormal = directions.mean(axis=0)
    for i, (cls, polarity) in enumerate(zip(prompts.classes, prompts.polarity)):
        if cls in FINDINGS:
            base = directions[FINDINGS.index(cls)] * (1.0 if polarity == "positive" else -1.0)
        elif cls == NO_FINDING or cls == GENERIC_NEGATIVE_CLASS:
            base = -abnormal / np.linalg.norm(abnormal)
        else:
            raise ValueError(f"no synthetic text for class {cls!r}")
        text[i] = common + base + rng.normal(size=dim) * model.text_noise / np.sqrt(dim)
    scale = model.norm / np.median(np.linalg.norm(images, axis=1))
    return images * scale, text * scale, directions


def write_synthetic_cache(
    out: Path, metadata: DatasetMetadata, rows: np.ndarray | None = None, model: SyntheticModel = SyntheticModel(),
) -> None:
    """Write a complete cache of the metadata's ``rows`` (default: all) with generated embeddings,
    through the embed path. The cache records where the metadata came from (``metadata_origin``)."""
    out = Path(out)
    table = metadata.table if rows is None else metadata.table.take(rows)
    images, text, _ = synthetic_embeddings(table.labels, table.patient_ids, model)
    identity = f"synthetic|{model}".encode()
    spec = EmbedSpec(
        model="synthetic", pretrained="none", weights_sha256=hashlib.sha256(identity).hexdigest(),
        preprocessing=attr_json(Preprocessing().as_dict()), embed_dim=model.dim, dtype="float16",
        precision="fp32", device="cpu", l2_normalised=False, dataset="nih-chestxray14 (synthetic embeddings)",
        dataset_fingerprint=table.fingerprint(), label_source=metadata.label_source,
        val_fraction=metadata.val_fraction, val_seed=metadata.val_seed, manifest_sha256=manifest_sha256(table.image_ids),
    )
    shard = partial_path(out)
    extra = {"created": created_timestamp(), "n_metadata_rows": len(table), "n_missing_images": 0, "limit": -1,
             "metadata_origin": metadata.origin, "logit_scale": OPENAI_LOGIT_SCALE, "logit_bias": 0.0}
    create_shard(shard, spec, ShardPlan(0, len(table), len(table), COMMIT_ROWS), table, default_prompts(table.label_set),
                 text, extra)
    with ShardWriter(shard) as writer:
        for rows in writer.pending_batches():
            writer.commit(rows, np.arange(rows.start, rows.stop), images[rows.start:rows.stop], [])
    write_cache(out, [shard])
    shard.unlink()
