"""Small file-system helpers: exclusive locks and temporary names beside a target."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
from pathlib import Path
from typing import Iterator

from cxrprobe.errors import BusyError, InputError, OutputError


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
    check_writable_folder(path.parent)


def check_writable_folder(folder: Path) -> None:
    """A folder an output can be created in: checked before any work, so a bad --out costs nothing."""
    folder = folder if str(folder) else Path(".")
    if not folder.exists():
        raise InputError(f"folder {folder} does not exist; create it first")
    if not folder.is_dir():
        raise InputError(f"{folder} is a file, not a folder; choose another --out")
    # os.access also reports a read-only file system (EROFS), which file modes do not show root
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"folder {folder} is not writable; choose another --out")


# errno values that mean "no room for this output": a full disk, a quota, a file size limit
NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


@contextlib.contextmanager
def reporting_no_room(target: Path) -> Iterator[None]:
    """Turn running out of room while writing ``target`` into one OutputError line."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in NO_ROOM:
            raise
        remedy = "raise the file size limit (ulimit -f)" if exc.errno == errno.EFBIG else "free some space"
        raise OutputError(
            f"cannot write {target}: {os.strerror(exc.errno)}; {remedy} or choose another --out "
            "(files that existed are unchanged)"
        ) from None


@contextlib.contextmanager
def replacing(path: Path, tag: str = "new") -> Iterator[Path]:
    """The one way cxrprobe writes a file: yields a temporary sibling of ``path`` (named as
    ``remove_stale_temporaries`` recognises) to write; once the block succeeds it is fsynced and
    renamed onto ``path``, so ``path`` is either its old self or whole. On failure it is removed."""
    tmp = temporary_sibling(path, tag)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def fsync_files(folder: Path) -> None:
    """Flush every file under ``folder`` to disk: a folder renamed into place whole is then whole
    after a crash too."""
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            _fsync(path)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_new_file(path: Path, data: bytes, tag: str = "new") -> None:
    """``data`` into ``path``, atomically (``replacing``)."""
    with replacing(path, tag) as tmp:
        tmp.write_bytes(data)


def json_text(value: object) -> str:
    """The one JSON form of cxrprobe's files: sorted keys, indented, a final newline (stable bytes)."""
    return json.dumps(value, indent=2, sort_keys=True) + "\n"


def write_json(path: Path, value: object) -> None:
    write_new_file(path, json_text(value).encode())


def reserve_blocks(path: Path) -> None:
    """Allocate every block of ``path`` now, so a full disk fails here with ENOSPC rather than
    later, inside a memory map, with SIGBUS. A no-op where the file system cannot say."""
    if not hasattr(os, "posix_fallocate"):
        return
    with open(path, "r+b") as handle:
        try:
            os.posix_fallocate(handle.fileno(), 0, os.fstat(handle.fileno()).st_size)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def remove_stale_temporaries(folder: Path, name: str | None = None) -> list[Path]:
    """Remove what killed runs left: ``.<name>.<tag>-<pid>`` entries (see temporary_sibling)
    in ``folder`` whose process is gone. ``name`` limits it to one target's temporaries (a
    user's folder); without it every temporary in the folder counts (a folder cxrprobe owns).
    A live process's temporaries are never touched."""
    removed = []
    if not folder.is_dir():
        return removed
    prefix = f".{name}." if name else "."
    for entry in folder.iterdir():
        stem, _, pid = entry.name.rpartition("-")
        if not (entry.name.startswith(prefix) and "." in stem[1:] and pid.isdigit()) or _pid_alive(int(pid)):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed
