"""Reading a dataset's metadata tables: plain or gzipped, UTF-8, bounded in size."""

from __future__ import annotations

import contextlib
import csv
import gc
import gzip
import io
import operator
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np

from cxrprobe.errors import DataError

# A gzipped metadata file is decompressed up to this size, so a tiny .gz cannot fill memory
# (the largest NIH table is 9 MB, MIMIC-CXR's label table 60 MB).
MAX_METADATA_BYTES = 256 * 1024 * 1024


def find_table(data_dir: Path, name: str) -> Path | None:
    """``name`` in ``data_dir``, else its gzipped form, else None."""
    return next((p for p in (data_dir / name, data_dir / f"{name}.gz") if p.is_file()), None)


def read_text(path: Path) -> str:
    return decoded(path, read_bytes(path))


def decoded(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path.name} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def read_bytes(path: Path) -> bytes:
    if path.suffix != ".gz":
        try:
            return path.read_bytes()
        except OSError as exc:
            raise DataError(f"cannot read {path}: {exc.strerror}") from None
    try:
        with gzip.open(path, "rb") as handle:
            data = handle.read(MAX_METADATA_BYTES + 1)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise DataError(f"{path.name} is not a readable gzip file ({exc or type(exc).__name__})") from None
    if len(data) > MAX_METADATA_BYTES:
        raise DataError(f"{path.name} decompresses to more than {MAX_METADATA_BYTES >> 20} MiB; "
                        "too large for a metadata table")
    return data


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a table's rows are parsed: a large table's
    millions of new strings and lists would otherwise trigger collections that walk all the
    rows read so far, a large share of the parse (benchmarks/datasets.py). Rows hold no
    cycles, so nothing is lost; the collector's state is restored."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def read_dataset_table(data_dir: Path, name: str, columns: tuple[str, ...], dataset: str,
                       expected: str = "", optional: tuple[str, ...] = ()) -> tuple[Path, dict[str, list[str]]]:
    """A dataset's table ``name`` (or its .gz) in ``data_dir``, and ``columns`` of it (and those
    of ``optional`` it has), read with the collector paused; its absence names the dataset."""
    path = find_table(Path(data_dir), name)
    if path is None:
        raise DataError(f"no {dataset} {name} in {data_dir} (or {name}.gz)")
    with collector_paused():
        return path, read_csv_columns(path, columns, expected, optional)


def read_csv_columns(path: Path, columns: tuple[str, ...] | None = None, expected: str = "",
                     optional: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Column name -> its values, for ``columns`` (None: every column) of the CSV table at
    ``path``, and those of ``optional`` it has; a missing column (``expected`` says what the
    table should have), a short row or an unreadable table is one DataError. Only the columns
    asked for are built: cheaper than transposing every row."""
    data = read_bytes(path)
    text = decoded(path, data)
    plain = _plain_fields(data, text)
    if plain is None:
        try:
            reader = csv.reader(io.StringIO(text, newline=""))
            header, body = next(reader, []), list(reader)
        except csv.Error as exc:
            raise DataError(f"{path.name} is not a readable CSV table ({exc})") from None
    else:
        header, fields = plain
    header = [h.strip() for h in header]
    _check_columns(path, header, columns, expected)
    wanted = header if columns is None else (*columns, *(c for c in optional if c in header))
    if plain is not None:
        return {c: fields[header.index(c)::len(header)] for c in wanted}
    if body and min(map(len, body)) < len(header):
        short = next(i for i, r in enumerate(body) if len(r) < len(header))
        raise DataError(f"{path.name}: line {short + 2} has {len(body[short])} fields, the header {len(header)}")
    return {c: list(map(operator.itemgetter(header.index(c)), body)) for c in wanted}


def _check_columns(path: Path, header: list[str], columns: tuple[str, ...] | None, expected: str) -> None:
    if not header:
        raise DataError(f"{path.name} is empty")
    missing = [c for c in columns or () if c not in header]
    if missing:
        raise DataError(f"{path.name} has no {missing[0]!r} column" + (f"; {expected}" if expected else ""))


def _plain_fields(data: bytes, text: str) -> tuple[list[str], list[str]] | None:
    """(header, every body field row after row) of a table with no quotes, no bare carriage
    return and the header's number of fields (at least two) on every line: there the csv
    module's fields are exactly those of ``str.split``, which is several times faster for a
    large table (benchmarks/datasets.py). None for any other table, which the csv module reads."""
    if not data or b'"' in data or data.count(b"\r") != data.count(b"\r\n"):
        return None
    raw = np.frombuffer(data, dtype=np.uint8)
    line_ends = np.flatnonzero(raw == ord("\n"))
    if raw[-1] != ord("\n"):
        line_ends = np.append(line_ends, raw.size)
    commas = np.diff(np.searchsorted(np.flatnonzero(raw == ord(",")), line_ends), prepend=0)
    if line_ends.size < 2 or commas[0] == 0 or (commas != commas[0]).any():
        return None
    if b"\r" in data:
        text = text.replace("\r\n", "\n")
    header, _, body = text.partition("\n")
    body = body[:-1] if body.endswith("\n") else body
    return header.split(","), body.replace("\n", ",").split(",")


def refuse_duplicates(ids: np.ndarray | list[str], source: str, what: str = "") -> None:
    """A table that lists an image twice is refused, naming it."""
    if len(set(ids.tolist() if isinstance(ids, np.ndarray) else ids)) == len(ids):  # without np.unique's sort
        return
    unique, counts = np.unique(np.asarray(ids, dtype=str), return_counts=True)
    if (counts > 1).any():
        raise DataError(f"{source}: {what}{unique[counts > 1][0]} is listed more than once")
