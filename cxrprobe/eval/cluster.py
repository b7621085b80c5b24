"""The grid's tasks on an existing Dask cluster, through joblib's Dask backend: cxrprobe
schedules nothing itself. The grid's large arrays stay in memory-mapped files, sent to the
workers by their paths (``SharedArray``), so the workers must see the folder they are in:
checked before the first task. ``dask[distributed]`` is an optional extra."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cxrprobe.errors import InputError

SCHEDULER_TIMEOUT_S = 5  # an unreachable scheduler is a one-line error after this, not a hang
ADDRESS_VARIABLE = "DASK_SCHEDULER_ADDRESS"


class SharedArray(np.ndarray):
    """A read-only memory map of a .npy file that pickles as the file's path: a worker opens
    the file where it lies (shared storage) instead of receiving its bytes. A slice or a
    result computed from it pickles as a plain array, as it has no file of its own."""

    path: str | None = None

    def __reduce__(self):  # noqa: ANN204 - pickle's protocol
        if self.path is None:
            return np.asarray(self).__reduce__()
        return (open_shared, (self.path,))


def open_shared(path: str | Path) -> SharedArray:
    array = np.load(path, mmap_mode="r").view(SharedArray)
    array.path = str(path)
    return array


def scheduler_address(given: str | None) -> str:
    address = given or os.environ.get(ADDRESS_VARIABLE)
    if not address:
        raise InputError(f"--backend dask needs --scheduler ADDRESS (or {ADDRESS_VARIABLE}) of a running "
                         "dask.distributed scheduler")
    return address


def connect(address: str):  # noqa: ANN201 - a distributed.Client
    try:
        from distributed import Client
    except ImportError:
        raise InputError("--backend dask needs dask.distributed: pip install 'cxrprobe[dask]'") from None
    try:
        return Client(address, timeout=SCHEDULER_TIMEOUT_S)
    except (OSError, ValueError) as exc:  # TimeoutError is an OSError; a malformed address a ValueError
        raise InputError(f"no Dask scheduler answers at {address} within {SCHEDULER_TIMEOUT_S} s "
                         f"({str(exc).splitlines()[0][:120]})") from None


def check_workers_see(client, path: Path) -> None:  # noqa: ANN001
    """Every worker must read the grid's memory-mapped files where this process wrote them."""
    seen = client.run(os.path.isfile, str(path))
    if not seen:
        raise InputError("the Dask cluster has no worker")
    blind = sorted(worker for worker, found in seen.items() if not found)
    if blind:
        raise InputError(f"Dask worker {blind[0]} cannot see {path.parent}: the grid's memory-mapped inputs must "
                         "be on storage the workers share (set TMPDIR to a shared folder)")
