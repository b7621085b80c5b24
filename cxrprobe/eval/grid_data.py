"""The grid's arrays, checked once: embeddings, labels and their known-mask, splits, the test
set as the heads' inputs and as what their scores are compared with (per image or per study)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxrprobe.cache.reader import FeatureCache
from cxrprobe.data.splits import shared_patients
from cxrprobe.errors import CacheError
from cxrprobe.eval.studies import Studies
from cxrprobe.heads.base import TextPrompts, transform_embeddings
from cxrprobe.heads.registry import head_class
from cxrprobe.metrics.auc import defined_columns
from cxrprobe.metrics.bootstrap import joint_patient_resamples


@dataclass(frozen=True)
class GridData:
    """What a task needs, as plain arrays (memory-mapped into worker processes)."""

    embeddings: np.ndarray  # float32 [n, d], every row
    labels: np.ndarray  # uint8 [n, C], 0 where unknown
    split: np.ndarray
    test_rows: np.ndarray
    center: np.ndarray  # mean of the unlabelled training pool
    text: TextPrompts | None
    test_inputs: dict[str, np.ndarray]  # the test rows under each transform the heads use, made once
    test_weights: np.ndarray | None = None  # [B, test rows] image weights of B patient resamples
    known: np.ndarray | None = None  # bool [n, C] whether each label is known; None: all are
    normal: np.ndarray | None = None  # bool [n] the normal images; None: those with no finding
    classes: tuple[str, ...] = ()  # the label columns' names
    test_labels: np.ndarray | None = None  # what test scores are compared with: per image, or per study
    test_known: np.ndarray | None = None
    studies: Studies | None = None  # the test rows grouped by study, when scored per study
    test_classes: tuple[str, ...] = ()  # test_labels' classes where they are not ``classes`` (OtherLabels)
    test_columns: tuple[tuple[int, ...], ...] | None = None  # the columns that score each of them

    def known_at(self, rows: np.ndarray) -> np.ndarray | None:
        return None if self.known is None else self.known[rows]

    @property
    def scored_classes(self) -> tuple[str, ...]:
        """The classes the test AUCs are of."""
        return self.test_classes or self.classes

    def test_scores(self, scores: np.ndarray) -> np.ndarray:
        """A head's test-image scores as they are compared with ``test_labels``: per study where
        scored per study, each other label table's class by the highest of its columns."""
        scores = scores if self.studies is None else self.studies.scores(scores)
        if self.test_columns is None:
            return scores
        return np.stack([scores[:, list(columns)].max(axis=1) for columns in self.test_columns], axis=1)


@dataclass(frozen=True)
class OtherLabels:
    """What the test images are scored against where it is another label table than the support
    sets': another dataset's (a test cache) or a re-annotation of the same images. ``labels``
    [test rows, K] (0 where unknown), ``known`` likewise, their ``classes``, and ``columns``:
    the support label columns whose highest score is each class's score."""

    labels: np.ndarray
    known: np.ndarray | None
    classes: tuple[str, ...]
    columns: tuple[tuple[int, ...], ...]


def class_names(n: int, classes: tuple[str, ...] | None) -> tuple[str, ...]:
    """``classes`` checked against the label width, or NIH's findings where the width is
    theirs (arrays from the Python API without names), or "class c"."""
    from cxrprobe.labels import FINDINGS

    if classes:
        if len(classes) != n:
            raise CacheError(f"{len(classes)} class names for labels with {n} columns")
        return tuple(classes)
    return FINDINGS if n == len(FINDINGS) else tuple(f"class {c}" for c in range(n))


def undefined_findings(test_labels: np.ndarray, classes: tuple[str, ...],
                       test_known: np.ndarray | None = None) -> list[str]:
    """Findings whose test split holds only positives or only negatives among its known labels:
    no AUC is defined."""
    return [name for name, defined in zip(classes, defined_columns(test_labels, test_known)) if not defined]


def check_defined(test_labels: np.ndarray, source: object, allow_undefined: bool, classes: tuple[str, ...],
                  test_known: np.ndarray | None = None) -> None:
    """A finding without an AUC is refused unless allowed: a mean over findings would otherwise
    quietly be over fewer of them, and not comparable with another cache's."""
    undefined = undefined_findings(test_labels, classes, test_known)
    if len(undefined) == len(classes):
        raise CacheError(f"{source}: no finding has both positive and negative test images, so no AUC "
                         "is defined; embed more of the test split")
    if undefined and not allow_undefined:
        raise CacheError(f"{source}: no AUC is defined for {', '.join(undefined)} (its test images are all "
                         "negative or all positive); embed the whole test split, or pass --allow-undefined to "
                         "leave it empty and average over the other findings")


TEST_BOOTSTRAP_SEED = 0  # one set of test resamples for every run, so runs stay paired


def _text_heads(heads: tuple[str, ...]) -> str:
    """The heads among ``heads`` that score from text prompts, for a message ('' if none)."""
    return ", ".join(h for h in heads if head_class(h).uses_text)


def load_grid_data(cache_path: Path, heads: tuple[str, ...], allow_undefined: bool = False,
                   test_bootstrap: int = 0, aggregate: str = "image") -> tuple[GridData, dict]:
    """The grid's arrays from a cache, and the cache's attributes."""
    with FeatureCache(cache_path) as cache:
        needs_text = bool(_text_heads(heads))
        if needs_text and "text" not in cache.file:
            raise CacheError(f"{cache_path} holds no text embeddings ({cache.attrs.get('model')} is an image-only "
                             f"encoder here), which {_text_heads(heads)} need; run the other heads")
        needs_logits = any(head_class(h).input_transform == "head_logits" for h in heads)
        data = grid_data(
            cache.embeddings(), cache.labels, cache.table.split, cache.table.patient_ids,
            known=None if cache.known.all() else cache.known, normal=cache.normal, classes=cache.classes,
            study_ids=cache.table.study_ids, aggregate=aggregate,
            text=cache.text_prompts() if needs_text else None,
            head_logits=cache.head_logits() if needs_logits else None,
            heads=heads, allow_undefined=allow_undefined, test_bootstrap=test_bootstrap, source=str(cache_path),
        )
        return data, dict(cache.attrs)


def grid_data(
    embeddings: np.ndarray, labels: np.ndarray, split: np.ndarray, patients: np.ndarray, *,
    text: TextPrompts | None = None, head_logits: np.ndarray | None = None, heads: tuple[str, ...] = (),
    allow_undefined: bool = False, test_bootstrap: int = 0, source: str = "the embeddings",
    known: np.ndarray | None = None, normal: np.ndarray | None = None, classes: tuple[str, ...] | None = None,
    study_ids: np.ndarray | None = None, aggregate: str = "image", other_labels: OtherLabels | None = None,
) -> GridData:
    """The grid's arrays from embeddings [n, d], labels [n, C], each row's split ("train",
    "val" or "test") and patient; ``text`` for heads that use it, ``head_logits`` [n, C] for
    heads that score an adapted head's logits. ``known`` [n, C] marks the labels that are known
    (default all; ``labels`` must be 0 elsewhere), ``normal`` [n] the normal images (default:
    no finding positive), ``classes`` names the columns; ``aggregate`` "study-max" or
    "study-mean" scores each test study (``study_ids`` [n]) from its images; ``other_labels``
    are the test images' labels where they come from another table."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    labels, split, patients = np.asarray(labels), np.asarray(split), np.asarray(patients)
    classes = class_names(labels.shape[1], classes)
    if known is not None:
        known = np.asarray(known, dtype=bool)
        if known.shape != labels.shape:
            raise CacheError(f"{source}: known {known.shape} is not shaped as labels {labels.shape}")
        if (labels[~known] != 0).any():
            raise CacheError(f"{source}: labels must be 0 where they are unknown")
    if normal is None:
        normal = labels.sum(axis=1) == 0
        if known is not None:
            normal &= known.all(axis=1)
    normal = np.asarray(normal, dtype=bool)
    if not np.isfinite(embeddings).all():
        raise CacheError(f"{source} holds NaN or Inf embeddings; re-embed it")
    train, test = np.flatnonzero(split == "train"), np.flatnonzero(split == "test")
    if len(test) == 0:
        raise CacheError(f"{source} has no test images")
    studies = None
    if aggregate != "image":
        if study_ids is None:
            raise CacheError(f"{source}: --aggregate {aggregate} needs each image's study")
        studies = Studies.of(np.asarray(study_ids)[test], aggregate)
    test_labels, test_known = labels[test], None if known is None else known[test]
    test_classes = classes
    if other_labels is not None:
        if len(other_labels.labels) != len(test):
            raise CacheError(f"{source}: {len(other_labels.labels)} other labels for {len(test)} test images")
        test_labels, test_known, test_classes = other_labels.labels, other_labels.known, other_labels.classes
    test_patients = patients[test]
    if studies is not None:
        test_labels, test_known = studies.labels(test_labels, test_known)
        test_patients = studies.first(test_patients)
    check_defined(test_labels, source, allow_undefined, test_classes, test_known)
    if len(train) == 0:
        raise CacheError(f"{source} has no training images to draw support sets from")
    check_patient_disjoint(split, patients, source)
    if _text_heads(heads) and text is None:
        raise CacheError(f"{source} comes with no text embeddings, which {_text_heads(heads)} need")
    center = embeddings[train].astype(np.float64).mean(axis=0)
    inputs = {}
    for kind in sorted({head_class(h).input_transform for h in heads}):
        if kind == "head_logits":
            if head_logits is None:
                raise CacheError(f"{source} holds no adapted head's logits (embed with --checkpoint RUN_DIR)")
            inputs[kind] = np.asarray(head_logits, dtype=np.float32)[test]
        else:
            inputs[kind] = transform_embeddings(embeddings[test], kind, center)
    return GridData(
        embeddings=embeddings, labels=labels, split=split, test_rows=test, center=center, text=text,
        test_inputs=inputs, test_weights=_test_weights(test_labels, test_patients, test_bootstrap),
        known=known, normal=normal, classes=classes, test_labels=test_labels, test_known=test_known, studies=studies,
        test_classes=() if other_labels is None else test_classes,
        test_columns=None if other_labels is None else other_labels.columns,
    )


def check_patient_disjoint(split: np.ndarray, patients: np.ndarray, source: object) -> None:
    """No patient in two splits: support sets, validation sets and test must not share one."""
    if len(patients) != len(split):
        raise CacheError(f"{source}: {len(patients)} patients for {len(split)} images")
    overlap = shared_patients(split, patients)
    if overlap is not None:
        a, b, shared = overlap
        raise CacheError(f"{source}: {len(shared)} patient(s) have images in both {a} and {b} "
                         f"(e.g. {shared[0]}); splits must be patient-disjoint")


def _test_weights(labels: np.ndarray, patients: np.ndarray, n_resamples: int) -> np.ndarray | None:
    if n_resamples < 1:
        return None
    counts = joint_patient_resamples(labels, patients, n_resamples, np.random.default_rng(TEST_BOOTSTRAP_SEED))
    _, patient = np.unique(patients, return_inverse=True)
    return counts[:, patient].astype(np.float32)
