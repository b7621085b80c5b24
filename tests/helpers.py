"""Helpers for the bad-input tests: workspace snapshots, the one-line error check, running the
real CLI in a subprocess (on a full disk, under a file size limit, or without root's power to
read anything), and bad files that are tedious to make by hand."""

from __future__ import annotations

import ctypes
import hashlib
import os
import resource
import shutil
import struct
import subprocess
import sys
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

from conftest import CliResult

CLI = (sys.executable, "-m", "cxrprobe")


def snapshot(folder: Path) -> dict[Path, str]:
    """sha256 of every file under ``folder`` and a marker for every folder: equal snapshots mean
    nothing was changed, added (not even an empty folder) or removed."""
    return {p.relative_to(folder): _fingerprint(p) for p in sorted(folder.rglob("*")) if p.is_dir() or p.is_file()}


def _fingerprint(path: Path) -> str:
    if path.is_dir():
        return "folder"
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except PermissionError:  # a mode-000 file, when the tests do not run as root
        stat = path.stat()
        return f"unreadable, {stat.st_size} bytes, mtime {stat.st_mtime_ns}"


def assert_one_line_error(result: CliResult, contains: str, code: int = 2) -> None:
    assert result.code == code, (result.code, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("cxrprobe: error: ")
    assert contains in lines[0], lines[0]
    assert "Traceback" not in result.stderr + result.stdout


# --- running the CLI as a user does ------------------------------------------------------------

def run_cli(
    *args: object, cwd: Path, prefix: Sequence[str] = (), preexec_fn: Callable[[], None] | None = None,
) -> CliResult:
    """``python -m cxrprobe ARGS`` in a fresh process, stdin closed, never in debug mode."""
    env = {k: v for k, v in os.environ.items() if k != "CXRPROBE_DEBUG"}
    process = subprocess.run(
        [*prefix, *CLI, *map(str, args)], cwd=cwd, env={**env, "SOURCE_DATE_EPOCH": "1700000000"},
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300, preexec_fn=preexec_fn,
    )
    return CliResult(process.returncode, process.stdout, process.stderr)


# A tmpfs mounted in a private mount namespace, so it vanishes with the process: no clean-up,
# nothing visible to anyone else. 16 KiB are left free: enough to start writing, not to finish.
FULL_DISK_SCRIPT = """
set -u
dir=$1; listing=$2; shift 2
mount -t tmpfs -o size=256k cxrprobe-test-full "$dir" || exit 97
head -c 245760 /dev/zero > "$dir/filler"
"$@"; rc=$?
ls -A "$dir" > "$listing"
exit $rc
"""
MOUNT_FAILED = 97


def full_disk_prefix(mount_point: Path, listing: Path) -> list[str]:
    """Prefix for run_cli: the command runs with ``mount_point`` a nearly full tmpfs, and what is
    left on it afterwards is listed in ``listing``."""
    return ["unshare", "--mount", "sh", "-c", FULL_DISK_SCRIPT, "sh", str(mount_point), str(listing)]


@lru_cache(maxsize=1)
def can_mount_tmpfs() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--mount", "sh", "-c", "mount -t tmpfs -o size=64k probe /mnt"],
                           capture_output=True)
    return probe.returncode == 0


def file_size_limit(limit_bytes: int) -> Callable[[], None]:
    """preexec_fn: a simulated full disk for every writer, HDF5's C code included. Python ignores
    SIGXFSZ, so a write past the limit fails with EFBIG instead of killing the process."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))


_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2


def without_file_access_override() -> None:
    """preexec_fn: as root, drop the capabilities that ignore file modes (taken from the bounding
    set, they are gone after exec), so chmod 000 and read-only folders stop root as they stop
    anyone. A process that is not root has none to drop."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


@lru_cache(maxsize=1)
def file_modes_bind_root() -> bool:
    """Whether without_file_access_override makes a mode-000 file unreadable here."""
    import tempfile

    with tempfile.NamedTemporaryFile() as handle:
        os.chmod(handle.name, 0)
        try:
            probe = subprocess.run([sys.executable, "-c", f"open({handle.name!r}).read()"],
                                   preexec_fn=without_file_access_override, capture_output=True)
        except (OSError, subprocess.SubprocessError):
            return False
    return probe.returncode != 0 and b"PermissionError" in probe.stderr


# --- bad files ---------------------------------------------------------------------------------

def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def write_bomb_png(path: Path, side: int = 20_000) -> None:
    """A valid 1-bit PNG of side x side pixels (400 M at the default, over twice Pillow's limit)
    that takes ~50 KB on disk and would take 400 MB decoded to grey."""
    compressor = zlib.compressobj(9)
    row = bytes(1 + (side + 7) // 8)  # filter byte, then the packed bits
    stream = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", stream)
                     + _png_chunk(b"IEND", b""))


class Evil:
    """Unpickling this would create ``marker``: every loader must refuse it."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):  # noqa: ANN204
        return (open, (self.marker, "w"))
