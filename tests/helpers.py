"""Helpers for the bad-input tests: workspace snapshots, the one-line error check, and bad files
that are tedious to make by hand. (Running the CLI in a child process: processes.py.)"""

from __future__ import annotations

import csv
import hashlib
import struct
import zlib
from pathlib import Path

from conftest import CliResult


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


def rewrite_csv(path: Path, change) -> None:  # noqa: ANN001 - a function of the rows
    """``path``'s CSV rows (header first) replaced by ``change(rows)``."""
    with open(path, newline="") as f:
        rows = change(list(csv.reader(f)))
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
