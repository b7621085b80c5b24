"""Patient-wise splits: validation carved from an official train_val list, or a whole seeded
split for datasets that have none."""

from __future__ import annotations

import numpy as np

DEFAULT_VAL_FRACTION = 0.1
DEFAULT_VAL_SEED = 7
TEST_FRACTION = 0.2  # of patients, for a dataset without an official test split


def carve_validation(
    patient_ids: np.ndarray,
    is_train_val: np.ndarray,
    fraction: float = DEFAULT_VAL_FRACTION,
    seed: int = DEFAULT_VAL_SEED,
) -> np.ndarray:
    """Split train_val into train and val by patient; test rows stay test.

    A seeded permutation of the sorted train_val patients puts ``round(fraction * n)``
    patients in val, so no patient has images in both train and val, and the same
    metadata and seed always give the same split.

    Returns a str array of ``"train"``, ``"val"`` or ``"test"`` per row.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
    patients = np.unique(patient_ids[is_train_val])
    n_val = int(round(fraction * len(patients)))
    rng = np.random.default_rng(seed)
    val_patients = patients[rng.permutation(len(patients))[:n_val]]
    split = np.where(is_train_val, "train", "test").astype(object)
    split[is_train_val & np.isin(patient_ids, val_patients)] = "val"
    return split.astype(str)


def shared_patients(split: np.ndarray, patients: np.ndarray) -> tuple[str, str, np.ndarray] | None:
    """The first two splits (train, val, test order) that share patients, and those patients;
    None when the splits are patient-disjoint, as support, validation and test sets must be."""
    names = ("train", "val", "test")
    members = {name: np.unique(patients[split == name]) for name in names}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = np.intersect1d(members[a], members[b])
            if len(shared):
                return a, b, shared
    return None


def seeded_split(patient_ids: np.ndarray, val_fraction: float = DEFAULT_VAL_FRACTION,
                 seed: int = DEFAULT_VAL_SEED) -> tuple[np.ndarray, str]:
    """A seeded patient-disjoint split of a dataset without an official one: ``TEST_FRACTION``
    of the sorted patients are test, then validation is carved from the rest as for NIH.
    Returns the split per row and what it is, for the cache's ``test_source``."""
    members = np.unique(patient_ids)
    test_patients = members[np.random.default_rng(seed).permutation(len(members))[:int(round(TEST_FRACTION * len(members)))]]
    split = carve_validation(patient_ids, ~np.isin(patient_ids, test_patients), val_fraction, seed)
    return split, f"a seeded patient-disjoint split ({TEST_FRACTION:.0%} of patients, seed {seed})"
