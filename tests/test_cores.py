"""Usable cores: the affinity mask and the tightest cgroup quota on the way to the root."""

from __future__ import annotations

from cxrprobe.cores import cgroup_cpu_quota, usable_cores


def _cgroup(tmp_path, lines):
    (tmp_path / "self").write_text("\n".join(lines) + "\n")
    return tmp_path / "self"


def test_v2_quota_is_the_tightest_on_the_way_to_the_root(tmp_path):
    root = tmp_path / "fs"
    (root / "job" / "step").mkdir(parents=True)
    (root / "cpu.max").write_text("max 100000\n")
    (root / "job" / "cpu.max").write_text("250000 100000\n")  # 2.5 cores: 3 usable
    (root / "job" / "step" / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(root, _cgroup(tmp_path, ["0::/job/step"])) == 3
    (root / "job" / "step" / "cpu.max").write_text("100000 100000\n")
    assert cgroup_cpu_quota(root, _cgroup(tmp_path, ["0::/job/step"])) == 1


def test_v1_quota_and_no_quota(tmp_path):
    root = tmp_path / "fs"
    (root / "cpu,cpuacct" / "docker").mkdir(parents=True)
    (root / "cpu,cpuacct" / "docker" / "cpu.cfs_quota_us").write_text("400000\n")
    (root / "cpu,cpuacct" / "docker" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(root, _cgroup(tmp_path, ["3:cpu,cpuacct:/docker", "1:memory:/docker"])) == 4
    (root / "cpu,cpuacct" / "docker" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_quota(root, _cgroup(tmp_path, ["3:cpu,cpuacct:/docker"])) is None
    assert cgroup_cpu_quota(root, tmp_path / "absent") is None
    assert cgroup_cpu_quota(root, _cgroup(tmp_path, ["0::/nowhere"])) is None


def test_usable_cores_is_at_least_one_and_within_the_affinity_mask(monkeypatch):
    import os

    monkeypatch.setattr("cxrprobe.cores.cgroup_cpu_quota", lambda: 1)
    assert usable_cores() == 1
    monkeypatch.setattr("cxrprobe.cores.cgroup_cpu_quota", lambda: None)
    assert 1 <= usable_cores() <= (os.cpu_count() or 1)
