"""The image table: one row per image, the common form every dataset adapter produces."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from cxrprobe.labels import NIH_LABELS, NORMAL_IF_NONE_POSITIVE, LabelSet

SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class ImageTable:
    """Images in a fixed order with their metadata.

    Attributes
    ----------
    image_ids : str array [n], unique file names (``00000001_000.png``)
    patient_ids : str array [n]
    split : str array [n], each one of ``SPLITS``
    labels : uint8 array [n, C], multi-hot in ``label_set.classes`` order (0 where unknown)
    view : str array [n], view position (``PA``, ``AP``) or ``""`` when unknown
    known : bool array [n, C], whether each label is known (an ``ignore`` policy's uncertain or
        unmentioned labels are not); all true when not given
    normal : bool array [n], the images the label set's normal rule calls normal; when not
        given, those with every label known and none positive
    study_ids : str array [n], the study each image belongs to; each image its own when not given
    label_set : the classes of ``labels``, their names and the normal rule
    """

    image_ids: np.ndarray
    patient_ids: np.ndarray
    split: np.ndarray
    labels: np.ndarray
    view: np.ndarray
    known: np.ndarray | None = None
    normal: np.ndarray | None = None
    study_ids: np.ndarray | None = None
    label_set: LabelSet = NIH_LABELS

    def __post_init__(self) -> None:
        n = len(self.image_ids)
        if self.labels.ndim != 2 or self.labels.shape[1] != len(self.label_set):
            raise ValueError(f"labels must be [n, {len(self.label_set)}], got {self.labels.shape}")
        if self.known is None:
            object.__setattr__(self, "known", np.ones(self.labels.shape, dtype=bool))
        if self.normal is None:
            if self.label_set.normal_rule != NORMAL_IF_NONE_POSITIVE:
                raise ValueError(f"normal rule {self.label_set.normal_rule!r} needs the normal flags")
            object.__setattr__(self, "normal", self.known.all(axis=1) & (self.labels.sum(axis=1) == 0))
        if self.study_ids is None:
            object.__setattr__(self, "study_ids", self.image_ids)
        for name in ("patient_ids", "split", "labels", "view", "known", "normal", "study_ids"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"ImageTable.{name} has {len(getattr(self, name))} rows, not {n}")
        if self.known.shape != self.labels.shape:
            raise ValueError(f"known must be shaped as labels {self.labels.shape}, got {self.known.shape}")

    @property
    def classes(self) -> tuple[str, ...]:
        return self.label_set.classes

    @property
    def plain(self) -> bool:
        """NIH's form: its label set, every label known, one image a study (caches of format 1)."""
        return (self.label_set == NIH_LABELS and bool(self.known.all())
                and bool(np.array_equal(self.study_ids, self.image_ids)))

    def __len__(self) -> int:
        return len(self.image_ids)

    def take(self, rows: np.ndarray) -> ImageTable:
        """The sub-table of ``rows`` (indices or a boolean mask), order kept."""
        return ImageTable(
            image_ids=self.image_ids[rows],
            patient_ids=self.patient_ids[rows],
            split=self.split[rows],
            labels=self.labels[rows],
            view=self.view[rows],
            known=self.known[rows],
            normal=self.normal[rows],
            study_ids=self.study_ids[rows],
            label_set=self.label_set,
        )

    def fingerprint(self) -> str:
        """sha256 of the table's content (ids, patients, splits, labels), not of file bytes.

        Two copies of the metadata that differ only in line endings or column order give the
        same fingerprint; a changed label, split or patient gives another. A plain table (NIH)
        hashes what it always did; any other also hashes its classes, known-mask, normal flags
        and studies.
        """
        digest = hashlib.sha256()
        for field in (self.image_ids, self.patient_ids, self.split, self.view):
            digest.update("\n".join(field.tolist()).encode("utf-8"))
            digest.update(b"\0")
        digest.update(np.ascontiguousarray(self.labels, dtype=np.uint8).tobytes())
        if not self.plain:
            digest.update("\n".join(self.classes + (self.label_set.normal_rule,)).encode("utf-8") + b"\0")
            digest.update(np.packbits(self.known).tobytes() + np.packbits(self.normal).tobytes())
            digest.update("\n".join(self.study_ids.tolist()).encode("utf-8"))
        return digest.hexdigest()

    def split_counts(self) -> dict[str, int]:
        return {name: int(np.count_nonzero(self.split == name)) for name in SPLITS}


def concatenate_tables(tables: list[ImageTable]) -> ImageTable:
    """The rows of ``tables`` one after another; they must share a label set."""
    label_set = tables[0].label_set
    if any(t.label_set != label_set for t in tables):
        raise ValueError("tables with different label sets cannot be concatenated")
    columns = ("image_ids", "patient_ids", "split", "labels", "view", "known", "normal", "study_ids")
    return ImageTable(**{c: np.concatenate([getattr(t, c) for t in tables]) for c in columns}, label_set=label_set)


@dataclass(frozen=True)
class DatasetMetadata:
    """A dataset's parsed tables: every metadata row, whether or not its image is on disk.

    ``origin`` is "bundled" when the label table is cxrprobe's own copy of NIH's, else "data
    dir"; ``label_policy`` what turned uncertain and unmentioned labels into 0, 1 or unknown
    (None for datasets without them, as NIH); ``bits_stored`` each row's bit depth of its 16-bit
    values where the metadata records one (PadChest), else 0, or None for none recorded.
    """

    table: ImageTable
    label_source: str
    val_fraction: float
    val_seed: int
    origin: str = "data dir"
    dataset: str = "nih-chestxray14"
    label_policy: dict | None = None
    test_source: str = "official test list"
    bits_stored: np.ndarray | None = None

    def bit_depths(self, rows: np.ndarray) -> list[int] | None:
        """The bit depths of ``rows`` (0 where unknown), or None where the metadata records none."""
        return None if self.bits_stored is None else self.bits_stored[rows].tolist()


@dataclass(frozen=True)
class LocatedDataset:
    """A dataset folder's metadata and each row's image file (``""`` where none is found)."""

    metadata: DatasetMetadata
    paths: np.ndarray
