"""The image table: one row per image, the common form every dataset adapter produces."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from cxrprobe.labels import FINDINGS

SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class ImageTable:
    """Images in a fixed order with their metadata.

    Attributes
    ----------
    image_ids : str array [n], unique file names (``00000001_000.png``)
    patient_ids : str array [n]
    split : str array [n], each one of ``SPLITS``
    labels : uint8 array [n, 14], multi-hot in ``FINDINGS`` order
    view : str array [n], view position (``PA``, ``AP``) or ``""`` when unknown
    """

    image_ids: np.ndarray
    patient_ids: np.ndarray
    split: np.ndarray
    labels: np.ndarray
    view: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.image_ids)
        for name in ("patient_ids", "split", "labels", "view"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"ImageTable.{name} has {len(getattr(self, name))} rows, not {n}")
        if self.labels.ndim != 2 or self.labels.shape[1] != len(FINDINGS):
            raise ValueError(f"labels must be [n, {len(FINDINGS)}], got {self.labels.shape}")

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
        )

    def fingerprint(self) -> str:
        """sha256 of the table's content (ids, patients, splits, labels), not of file bytes.

        Two copies of the metadata that differ only in line endings or column order give the
        same fingerprint; a changed label, split or patient gives another.
        """
        digest = hashlib.sha256()
        for field in (self.image_ids, self.patient_ids, self.split, self.view):
            digest.update("\n".join(field.tolist()).encode("utf-8"))
            digest.update(b"\0")
        digest.update(np.ascontiguousarray(self.labels, dtype=np.uint8).tobytes())
        return digest.hexdigest()

    def split_counts(self) -> dict[str, int]:
        return {name: int(np.count_nonzero(self.split == name)) for name in SPLITS}
