"""Small file-system helpers: exclusive locks and temporary names beside a target."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

from cxrprobe.errors import BusyError, InputError


@contextlib.contextmanager
def exclusive_lock(target: Path, what: str) -> Iterator[None]:
    """Hold ``<target>.lock`` for the duration; a second holder gets BusyError at once.

    The lock file is removed on the way out, so it is re-checked after locking that the
    path still names the file we locked (else a late-comer could lock a deleted file).
    """
    lock_path = target.with_name(target.name + ".lock")
    while True:
        handle = open(lock_path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise BusyError(f"another process is {what} {target} (it holds {lock_path.name}); wait for it") from None
        try:
            same = os.stat(lock_path).st_ino == os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        handle.close()
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            lock_path.unlink()
        handle.close()


def temporary_sibling(target: Path, tag: str) -> Path:
    """A name in ``target``'s folder (same file system, so os.replace is atomic)."""
    return target.with_name(f".{target.name}.{tag}-{os.getpid()}")


def check_output_path(path: Path) -> None:
    """An output file path whose folder exists and which is not itself a folder."""
    if path.is_dir():
        raise InputError(f"{path} is a folder; give a file path for the output")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise InputError(f"folder {parent} is not writable")


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
