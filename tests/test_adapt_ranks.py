"""adapt under torchrun (gloo, two CPU processes, the tiny model): DDP over what trains, each
batch of --batch-size cut into one slice a rank, so the recipe is the one-process recipe; rank 0
alone writes the run dir, and a resumed launch ends in the bytes of an uninterrupted one.

The launches run the CLI with dropout an identity (tests/without_dropout.py): each rank draws
its own dropout masks, so only then can a run on two processes be compared step for step with a
run on one. (A resume restores dropout's draws as on one process: test_adapt.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import assert_one_line_error, snapshot
from test_adapt import metrics

from cxrprobe.data.synthetic import write_nih_folder
from cxrprobe.train.checkpoint import load_checkpoint
from cxrprobe.train.losses import focal_bce_with_logits
from cxrprobe.train.pixels import EpochOrder, RankBatches

# 56 training images in batches of 15 (15, 15, 15, 11): every batch splits unevenly, 7 and 8
# (5 and 6), as do the 7 validation images (3 and 4)
FLAGS = ("--model", "cxrprobe-tiny", "--pretrained", "none", "--device", "cpu", "--unfreeze", "1",
         "--batch-size", "15", "--workers", "0")
WITHOUT_DROPOUT = Path(__file__).with_name("without_dropout.py")
RUN_FILES = ("last.pt", "best.pt", "metrics.csv", "summary.json", "training_curve.png")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapt-ranks")
    write_nih_folder(root, 80, seed=2, image_size=96, test_fraction=0.2)
    return root


def torchrun(data: Path, out: Path, *flags: str) -> subprocess.CompletedProcess:
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          str(WITHOUT_DROPOUT), "adapt", "--data-dir", str(data), "--out", str(out), *FLAGS, *flags],
                         capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    return run


@pytest.fixture(scope="module")
def two_process_run(data, tmp_path_factory):
    """An uninterrupted two-epoch run on two processes (read-only for the tests)."""
    out = tmp_path_factory.mktemp("two") / "run"
    return out, torchrun(data, out, "--epochs", "2")


def test_rank_batches_cut_the_one_process_batches_into_slices():
    for n, batch, ranks in [(56, 15, 2), (56, 16, 2), (10, 4, 3), (9, 4, 2), (17, 8, 4), (5, 64, 2)]:
        order = EpochOrder(n, seed=3, shuffle=True)
        order.set_epoch(2)
        whole = [item for item in order]
        one = list(RankBatches(order, batch))
        assert [len(b) for b in one[:-1]] == [batch] * (len(one) - 1) and sum(one, []) == whole
        slices = [list(RankBatches(order, batch, rank, ranks)) for rank in range(ranks)]
        assert len({len(s) for s in slices}) == 1  # every rank steps as often
        joined = [sum((s[b] for s in slices), []) for b in range(len(slices[0]))]
        assert sum(joined, []) == whole and all(len(s[b]) >= 1 for s in slices for b in range(len(joined)))
        assert RankBatches(order, batch, 0, ranks).batch_sizes() == [len(b) for b in joined]
    # a last batch of fewer images than ranks (9 = 4 + 4 + 1) joins the one before it
    assert RankBatches(EpochOrder(9, 0, False), 4, 0, 2).batch_sizes() == [4, 5]


def test_slices_summed_over_their_share_give_the_whole_batch_gradient():
    """A slice's loss over its share of the batch's known labels, averaged over the ranks as
    DDP averages gradients, is the whole batch's loss: uneven slices, unknown labels and a
    held-out finding's included (a mean of the slices' own means would not be)."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(15, 4, generator=generator, requires_grad=True)
    targets = (torch.rand(15, 4, generator=generator) > 0.7).float()
    known = torch.rand(15, 4, generator=generator) > 0.2
    mask = torch.tensor([1.0, 1.0, 0.0, 1.0])[None] * known
    whole = focal_bce_with_logits(logits, targets, mask=mask)
    (expected,) = torch.autograd.grad(whole, logits)
    slices = [slice(0, 7), slice(7, 15)]
    share = mask.sum() / len(slices)
    sliced = sum(focal_bce_with_logits(logits[s], targets[s], mask=mask[s], denominator=share) for s in slices) / 2
    (got,) = torch.autograd.grad(sliced, logits)
    assert torch.allclose(sliced, whole, rtol=1e-6) and torch.allclose(got, expected, rtol=1e-5, atol=1e-9)
    means = sum(focal_bce_with_logits(logits[s], targets[s], mask=mask[s]) for s in slices) / 2
    assert not torch.allclose(means, whole, rtol=1e-3)


def test_two_processes_write_one_run_and_a_resumed_launch_ends_in_its_bytes(data, two_process_run, tmp_path):
    whole, run = two_process_run
    assert run.stderr.count("epoch 1: train loss") == 1 and run.stdout.count("2 epochs, best validation") == 1
    assert not list(whole.glob("*.tmp*"))
    split = tmp_path / "split"
    torchrun(data, split, "--epochs", "1")
    resumed = torchrun(data, split, "--epochs", "2", "--resume")
    assert "resuming after epoch 1" in resumed.stderr
    for name in RUN_FILES:
        assert (whole / name).read_bytes() == (split / name).read_bytes(), name


def test_two_processes_follow_the_one_process_recipe(data, two_process_run, tmp_path, cli, monkeypatch):
    """Dropout aside (its draws are each rank's own), two processes take the one-process steps:
    the same losses and weights, to float rounding."""
    two, one = two_process_run[0], tmp_path / "one"
    monkeypatch.setattr(torch.nn.Dropout, "forward", lambda self, x: x)
    assert cli("adapt", "--data-dir", data, "--out", one, *FLAGS, "--epochs", "2", "-q").code == 0
    for a, b in zip(metrics(one), metrics(two)):
        assert float(a["train_loss"]) == pytest.approx(float(b["train_loss"]), rel=1e-5)
        assert a["val_mean_auc"] == b["val_mean_auc"]
    a, b = load_checkpoint(one / "last.pt"), load_checkpoint(two / "last.pt")
    for part in ("visual", "head"):
        for name, tensor in a[part].items():
            np.testing.assert_allclose(tensor.numpy(), b[part][name].numpy(), atol=1e-5, err_msg=name)


def test_a_resume_on_another_number_of_processes_is_refused(data, two_process_run, cli):
    whole, _ = two_process_run
    before = snapshot(whole)
    assert_one_line_error(cli("adapt", "--data-dir", data, "--out", whole, *FLAGS, "--epochs", "3", "--resume"),
                          "was trained by 2 process(es), not 1")
    assert snapshot(whole) == before


def test_several_processes_without_torchrun_are_refused(data, tmp_path, cli, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    assert_one_line_error(cli("adapt", "--data-dir", data, "--out", tmp_path / "run", *FLAGS),
                          "needs torchrun's rendezvous")
    assert not (tmp_path / "run").exists()
