"""A sharded embed (--shard I/N, torchrun's and srun's ranks): shards of whole batches merged
into the very bytes a one-process embed writes, by the last shard to finish or by merge."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import TINY
from helpers import assert_one_line_error, snapshot

from cxrprobe.cache.ranks import Shard, shard_from
from cxrprobe.launch import Place, launch_place

FLAGS = (*TINY, "--batch-size", "5", "--workers", "0")


@pytest.fixture()
def pinned(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")


@pytest.fixture(scope="module")
def single(tmp_path_factory, small_dataset):
    """The one-process embed every sharded one must equal, byte for byte."""
    out = tmp_path_factory.mktemp("single") / "cache.h5"
    subprocess.run([sys.executable, "-m", "cxrprobe", "embed", "--data-dir", str(small_dataset), "--out", str(out),
                    *FLAGS, "-q"], check=True, env={**os.environ, "SOURCE_DATE_EPOCH": "1700000000"})
    return out.read_bytes()


def test_shards_are_whole_batches_tiling_the_manifest():
    for n_rows, batch, count in [(24, 5, 2), (24, 5, 3), (7, 5, 3), (100, 64, 4), (1, 8, 2)]:
        rows = [Shard(i, count).rows(n_rows, batch) for i in range(count)]
        assert rows[0].start == 0 and rows[-1].stop == n_rows
        assert all(a.stop == b.start for a, b in zip(rows, rows[1:]))
        assert all(r.start % batch == 0 for r in rows)


def test_two_shards_run_apart_merge_into_the_one_process_bytes(small_dataset, tmp_path, cli, pinned, single):
    out = tmp_path / "cache.h5"
    first = cli("embed", "--data-dir", small_dataset, "--out", out, *FLAGS, "--shard", "0/2")
    assert first.code == 0, first.stderr
    assert "10 images embedded in shard 0 of 2: 1 shard(s) still to finish" in first.stdout and not out.exists()
    shown = cli("info", out)
    assert "a sharded embed into 2 shards, not merged yet" in shown.stdout
    assert "shard 0: 10 of 10 rows done" in shown.stdout and "shard 1: not started" in shown.stdout
    assert json.loads(cli("info", out, "--json").stdout)["progress"] == [{"done": 10, "rows": 10}, None]
    second = cli("embed", "--data-dir", small_dataset, "--out", out, *FLAGS, "--shard", "1/2")
    assert second.code == 0, second.stderr
    assert out.read_bytes() == single  # merged by the last to finish
    assert not list(tmp_path.glob("*.partial"))


def test_merge_does_what_a_last_rank_killed_before_merging_did_not(small_dataset, tmp_path, cli, pinned, single,
                                                                  monkeypatch):
    out = tmp_path / "cache.h5"
    assert cli("embed", "--data-dir", small_dataset, "--out", out, *FLAGS, "--shard", "1/2").code == 0
    import cxrprobe.commands.embed as embed_module

    monkeypatch.setattr(embed_module, "unfinished_shards", lambda out, count: [0])  # as if it died before merging
    assert cli("embed", "--data-dir", small_dataset, "--out", out, *FLAGS, "--shard", "0/2").code == 0
    monkeypatch.undo()
    assert not out.exists()
    merged = cli("merge", out)
    assert merged.code == 0, merged.stderr
    assert out.read_bytes() == single


def test_torchrun_ranks_write_the_one_process_bytes(small_dataset, tmp_path):
    """torchrun gives each process one intra-op thread (OMP_NUM_THREADS=1), and a CPU's sums
    depend on the thread count: the bytes are those of a one-process embed on one thread."""
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000", "OMP_NUM_THREADS": "1"}
    embed = ["-m", "cxrprobe", "embed", "--data-dir", str(small_dataset), *FLAGS, "-q", "--out"]
    subprocess.run([sys.executable, *embed, str(tmp_path / "one.h5")], check=True, env=env)
    out = tmp_path / "cache.h5"
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          *embed, str(out)], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert out.read_bytes() == (tmp_path / "one.h5").read_bytes()


def test_ranks_come_from_torchrun_or_srun_and_a_flag_wins():
    assert shard_from(None, {"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == Shard(1, 4, 1)
    assert shard_from(None, {"SLURM_PROCID": "2", "SLURM_NTASKS": "3", "SLURM_LOCALID": "0"}) == Shard(2, 3, 0)
    assert shard_from(None, {"RANK": "0", "WORLD_SIZE": "1"}) is None and shard_from(None, {}) is None
    assert shard_from("1/2", {"RANK": "0", "WORLD_SIZE": "4"}) == Shard(1, 2)
    # the node's processes share its cores: srun writes "4(x2)" for four tasks on each of two nodes
    assert launch_place({"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1",
                         "SLURM_NTASKS_PER_NODE": "4(x2)"}) == Place(5, 8, 1, 4)
    assert launch_place({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}).local_size == 2
    assert launch_place({}) == Place() and Place().first and not Place(1, 2).first


@pytest.mark.parametrize("flag, phrase", [("3/2", "--shard 3/2: the shard index must be 0 to 1"),
                                          ("a/b", "--shard takes I/N"), ("0/0", "N must be at least 1")])
def test_a_bad_shard_is_one_line(small_dataset, tmp_path, cli, flag, phrase):
    before = snapshot(tmp_path)
    assert_one_line_error(cli("embed", "--data-dir", small_dataset, "--out", tmp_path / "c.h5", *FLAGS, "--shard",
                              flag), phrase)
    assert snapshot(tmp_path) == before


def test_merging_refuses_missing_unfinished_and_foreign_shards(small_dataset, tmp_path, cli, pinned):
    out = tmp_path / "cache.h5"
    assert_one_line_error(cli("merge", out), "no shard of")
    assert cli("embed", "--data-dir", small_dataset, "--out", out, *FLAGS, "--shard", "0/2").code == 0
    assert_one_line_error(cli("merge", out), "shard 1 of 2 of")
    other = tmp_path / "other.h5"  # a shard of another model, renamed into place
    assert cli("embed", "--data-dir", small_dataset, "--out", other, *FLAGS, "--features", "pooled", "--shard",
               "1/2").code == 0
    (tmp_path / "other.h5.shard-1-of-2.partial").rename(tmp_path / "cache.h5.shard-1-of-2.partial")
    before = snapshot(tmp_path)
    assert_one_line_error(cli("merge", out), "does not belong with")
    assert snapshot(tmp_path) == before


def test_a_rank_killed_mid_run_resumes_to_the_same_bytes(small_dataset, tmp_path, single):
    """The second shard SIGKILLed with rows committed, then its same launch again (--resume):
    it finishes its own rows, merges, and the cache holds the one-process bytes."""
    from processes import kill_when, run, start
    from test_resume import rows_done

    out = tmp_path / "cache.h5"
    launch = ("embed", "--data-dir", small_dataset, "--out", out, *FLAGS, "-q", "--resume")
    assert run(*launch, "--shard", "0/2").code == 0
    second = Shard(1, 2).path(out)
    child = start(*launch, "--shard", "1/2")
    assert kill_when(child, lambda: second.exists() and rows_done(second) >= 5)
    assert not out.exists() and 0 < rows_done(second) < 9
    assert run(*launch, "--shard", "1/2").code == 0
    assert out.read_bytes() == single
    assert not second.exists()
