"""fewshot on a Dask cluster (a LocalCluster of two worker processes on the loopback): the same
bytes as the local pool; an unreachable or missing scheduler is one line."""

from __future__ import annotations

import time

import pytest
from helpers import assert_one_line_error, snapshot

GRID = ("--shots", "1,2", "--seeds", "2", "--heads", "prototype,logreg,zeroshot")
RESULTS = ("runs.csv", "summary.csv", "per_class.csv", "paired.csv", "supports.csv", "support_counts.csv",
           "config.json")


@pytest.fixture(scope="module")
def scheduler():
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        yield cluster.scheduler_address


def test_a_grid_on_a_dask_cluster_writes_the_local_pool_s_bytes(scheduler, synthetic_cache, tmp_path, cli,
                                                                 monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    local = cli("fewshot", "--cache", synthetic_cache, *GRID, "--jobs", "2", "--out", tmp_path / "local")
    assert local.code == 0, local.stderr
    on_dask = cli("fewshot", "--cache", synthetic_cache, *GRID, "--backend", "dask", "--scheduler", scheduler,
                  "--out", tmp_path / "dask")
    assert on_dask.code == 0, on_dask.stderr
    for name in RESULTS:
        assert (tmp_path / "dask" / name).read_bytes() == (tmp_path / "local" / name).read_bytes(), name
    from distributed import Client

    with Client(scheduler) as client:  # the tasks ran on the cluster's workers
        prefixes = client.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.task_prefixes))
    assert any("run_task_in_worker" in prefix for prefix in prefixes)
    # the scheduler's address may come from dask's own variable
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", scheduler)
    assert cli("fewshot", "--cache", synthetic_cache, *GRID, "--backend", "dask", "--out", tmp_path / "env").code == 0
    assert (tmp_path / "env" / "runs.csv").read_bytes() == (tmp_path / "local" / "runs.csv").read_bytes()


@pytest.mark.parametrize("flags, phrase", [
    (("--backend", "dask", "--scheduler", "tcp://127.0.0.1:9"), "no Dask scheduler answers at tcp://127.0.0.1:9 within 5 s"),
    (("--backend", "dask"), "--backend dask needs --scheduler ADDRESS (or DASK_SCHEDULER_ADDRESS)"),
    (("--backend", "ray"), "--backend must be one of local, dask, got 'ray'"),
    (("--scheduler", "tcp://127.0.0.1:9"), "--scheduler goes with --backend dask"),
])
def test_bad_backend_input_is_one_line_and_quick(synthetic_cache, tmp_path, cli, monkeypatch, flags, phrase):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    before = snapshot(tmp_path)
    started = time.perf_counter()
    result = cli("fewshot", "--cache", synthetic_cache, *GRID, *flags, "--out", tmp_path / "x")
    assert time.perf_counter() - started < 20
    assert_one_line_error(result, phrase)
    assert snapshot(tmp_path) == before


def test_workers_that_cannot_see_the_inputs_are_named(scheduler, tmp_path):
    from distributed import Client

    from cxrprobe.errors import InputError
    from cxrprobe.eval.cluster import check_workers_see

    with Client(scheduler) as client:
        check_workers_see(client, __import__("pathlib").Path(__file__))  # a file every worker here sees
        with pytest.raises(InputError, match="cannot see .*: the grid's memory-mapped inputs must be on storage"):
            check_workers_see(client, tmp_path / "elsewhere" / "embeddings.npy")
