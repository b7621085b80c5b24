"""Support sets on the real NIH table: only training patients, enough positives, deterministic."""

from __future__ import annotations

import numpy as np
import pytest

from cxrprobe.errors import InputError
from cxrprobe.eval.sampler import draw_support
from cxrprobe.labels import FINDINGS


@pytest.fixture(scope="module")
def table(nih_metadata):
    return nih_metadata.table


def test_every_drawn_support_set_is_from_training_patients_with_enough_positives(table):
    val_patients = set(table.patient_ids[table.split == "val"])
    available = table.labels[table.split == "train"].sum(axis=0)
    for shots in (1, 2, 4, 8, 16):
        for seed in range(20):
            support = draw_support(table.labels, table.split, shots, seed)
            assert (table.split[support.rows] == "train").all()
            assert not set(table.patient_ids[support.rows]) & val_patients
            assert len(np.unique(support.rows)) == len(support.rows)
            assert (support.positives >= np.minimum(shots, available)).all()
            assert support.no_finding >= shots
            assert (support.positives == table.labels[support.rows].sum(axis=0)).all()


def test_same_shots_and_seed_give_the_same_set_and_other_seeds_differ(table):
    a = draw_support(table.labels, table.split, 4, seed=3)
    b = draw_support(table.labels, table.split, 4, seed=3)
    c = draw_support(table.labels, table.split, 4, seed=4)
    assert np.array_equal(a.rows, b.rows) and not np.array_equal(a.rows, c.rows)


def test_validation_sets_come_from_validation_patients_only(table):
    support = draw_support(table.labels, table.split, 2, seed=0, pool_split="val")
    assert (table.split[support.rows] == "val").all()
    with pytest.raises(ValueError, match="never from 'test'"):
        draw_support(table.labels, table.split, 2, seed=0, pool_split="test")


def test_small_pools_give_all_they_have_or_refuse_when_strict():
    labels = np.zeros((30, len(FINDINGS)), dtype=np.uint8)
    labels[:2, 0] = 1  # two Atelectasis images, nothing else positive
    split = np.array(["train"] * 30)
    support = draw_support(labels, split, 4, seed=0)
    assert support.positives[0] == 2 and "Atelectasis" in support.short and "Hernia" in support.short
    with pytest.raises(InputError, match="Atelectasis has 2 train image"):
        draw_support(labels, split, 4, seed=0, strict=True)
