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
    support = draw_support(labels, split, 4, seed=0, classes=FINDINGS)
    assert support.positives[0] == 2 and "Atelectasis" in support.short and "Hernia" in support.short
    with pytest.raises(InputError, match="Atelectasis has 2 train image"):
        draw_support(labels, split, 4, seed=0, strict=True, classes=FINDINGS)
    with pytest.raises(InputError, match="class 0 has 2 train image"):  # unnamed columns
        draw_support(labels, split, 4, seed=0, strict=True)


@pytest.mark.parametrize("design", ["pos-neg", "realistic"])
def test_every_design_draws_from_training_patients_only_and_repeats_itself(table, design):
    train_patients = set(table.patient_ids[table.split == "train"])
    for shots in (1, 4, 16):
        first = draw_support(table.labels, table.split, shots, 3, design=design)
        assert (table.split[first.rows] == "train").all()
        assert set(table.patient_ids[first.rows]) <= train_patients
        again = draw_support(table.labels, table.split, shots, 3, design=design)
        assert np.array_equal(first.rows, again.rows)
        assert not np.array_equal(first.rows, draw_support(table.labels, table.split, shots, 4, design=design).rows)


def test_pos_neg_holds_n_positives_and_negatives_per_finding_and_nothing_more(table):
    for shots in (1, 4):
        rows = draw_support(table.labels, table.split, shots, 0, design="pos-neg").rows
        held = table.labels[rows]
        assert (held.sum(0) >= shots).all() and ((1 - held).sum(0) >= shots).all()
        for drop in range(len(rows)):  # greedy pruning left no image that could go
            rest = np.delete(held, drop, axis=0)
            assert (rest.sum(0) < shots).any() or ((1 - rest).sum(0) < shots).any()


def test_realistic_spends_15_n_images_with_every_finding_once(table):
    train = table.split == "train"
    for shots in (1, 8):
        support = draw_support(table.labels, table.split, shots, 2, design="realistic")
        assert len(support.rows) == 15 * shots and (support.positives >= 1).all()
    # drawn by the label marginal: normals near their share of the training pool
    normals = [draw_support(table.labels, table.split, 16, s, design="realistic").no_finding / 240 for s in range(5)]
    share = (table.labels[train].sum(1) == 0).mean()
    assert abs(np.mean(normals) - share) < 0.08


def test_the_normals_option_sets_the_no_finding_share(table):
    train = table.split == "train"
    share = (table.labels[train].sum(1) == 0).mean()
    assert draw_support(table.labels, table.split, 4, 0, normals=0).no_finding == 0
    assert draw_support(table.labels, table.split, 4, 0, normals=25).no_finding == 25
    natural = draw_support(table.labels, table.split, 4, 0, normals="natural")
    assert abs(natural.no_finding / len(natural.rows) - share) < 0.02
    default = draw_support(table.labels, table.split, 4, 0)
    assert default.no_finding == 4 and np.array_equal(default.rows, draw_support(table.labels, table.split, 4, 0,
                                                                                   normals="N").rows)


@pytest.mark.parametrize("design", ["per-finding", "pos-neg", "realistic"])
def test_all_shots_is_every_training_image_whatever_the_seed(table, design):
    train = np.flatnonzero(table.split == "train")
    for seed in (0, 5):
        support = draw_support(table.labels, table.split, "all", seed, design=design)
        assert np.array_equal(support.rows, train) and support.shots == "all" and support.short == ()
        assert (support.positives == table.labels[train].sum(axis=0)).all()
