"""How many CPU cores this process may really use: its affinity mask and its cgroup's quota.

A container limited to 4 CPUs by a quota (``docker --cpus 4``, Kubernetes limits, SLURM's
cgroups) still sees every core of the host in ``os.cpu_count()``; starting that many workers
oversubscribes it. The smallest of the affinity mask and the quotas on the way from this
process's cgroup up to the root is what is usable.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
SELF_CGROUP = Path("/proc/self/cgroup")


def usable_cores() -> int:
    """Cores this process may use: affinity, then the cgroup CPU quota, at least 1."""
    count = getattr(os, "process_cpu_count", None)  # Python 3.13: the affinity mask
    if count is not None:
        cores = count() or 1
    elif hasattr(os, "sched_getaffinity"):
        cores = len(os.sched_getaffinity(0))
    else:
        cores = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    return max(1, min(cores, quota) if quota is not None else cores)


def cgroup_cpu_quota(root: Path = CGROUP_ROOT, self_cgroup: Path = SELF_CGROUP) -> int | None:
    """The tightest CPU quota (whole cores, rounded up) of this process's cgroup and its
    ancestors, cgroup v2 or v1; None when there is none or no cgroup can be read."""
    try:
        lines = self_cgroup.read_text().splitlines()
    except OSError:
        return None
    quotas = []
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "":  # v2: one unified hierarchy
            quotas += [_v2_quota(folder / "cpu.max") for folder in _up_to(root, root / path.lstrip("/"))]
        elif "cpu" in controllers.split(","):  # v1: the cpu controller's own hierarchy
            base = root / controllers
            quotas += [_v1_quota(folder) for folder in _up_to(base, base / path.lstrip("/"))]
    quotas = [q for q in quotas if q is not None]
    return min(quotas) if quotas else None


def _up_to(root: Path, folder: Path) -> list[Path]:
    """``folder`` and each parent up to and including ``root``."""
    chain = [folder]
    while chain[-1] != root and root in chain[-1].parents:
        chain.append(chain[-1].parent)
    return chain


def _v2_quota(cpu_max: Path) -> int | None:
    try:
        quota, period = cpu_max.read_text().split()
        return None if quota == "max" else math.ceil(int(quota) / int(period))
    except (OSError, ValueError, ZeroDivisionError):
        return None


def _v1_quota(folder: Path) -> int | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return math.ceil(quota / period) if quota > 0 and period > 0 else None
