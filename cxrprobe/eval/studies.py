"""Study-level evaluation: a study scored from its images, for datasets whose test labels
are per study (CheXpert's test set, MIMIC-CXR's labels).

``study-max`` takes each finding's highest image score in the study (a finding seen on any
view counts), ``study-mean`` the mean. A study's label is positive where any of its images is
(per-study labels are the same on every image), and known only where every image's is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cxrprobe.eval.options import AGGREGATES


@dataclass(frozen=True)
class Studies:
    """The test rows grouped by study: ``order`` sorts the rows so that each study's are
    contiguous, ``starts`` where each study begins in that order."""

    order: np.ndarray
    starts: np.ndarray
    how: str

    @classmethod
    def of(cls, study_ids: np.ndarray, how: str) -> Studies:
        if how not in AGGREGATES[1:]:
            raise ValueError(f"aggregate must be one of {', '.join(AGGREGATES)}, got {how!r}")
        order = np.argsort(np.asarray(study_ids), kind="stable")
        ordered = np.asarray(study_ids)[order]
        starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
        return cls(order, starts, how)

    def __len__(self) -> int:
        return len(self.starts)

    def scores(self, scores: np.ndarray) -> np.ndarray:
        """[studies, k] from the images' [n, k]."""
        ordered = np.asarray(scores)[self.order]
        if self.how == "study-max":
            return np.maximum.reduceat(ordered, self.starts, axis=0)
        sums = np.add.reduceat(ordered.astype(np.float64), self.starts, axis=0)
        return (sums / np.diff(np.r_[self.starts, len(ordered)])[:, None]).astype(ordered.dtype)

    def labels(self, labels: np.ndarray, known: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """(study labels, study known-mask or None)."""
        study_labels = np.maximum.reduceat(np.asarray(labels)[self.order], self.starts, axis=0)
        if known is None:
            return study_labels, None
        study_known = np.minimum.reduceat(np.asarray(known, dtype=np.uint8)[self.order], self.starts, axis=0)
        return study_labels * study_known, study_known.astype(bool)

    def first(self, values: np.ndarray) -> np.ndarray:
        """Each study's value of a per-image column that is constant within it (the patient)."""
        return np.asarray(values)[self.order][self.starts]
