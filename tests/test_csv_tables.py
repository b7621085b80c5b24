"""Metadata tables read as the csv module reads them, whichever way they are split: plain
tables take a faster path (str.split), anything with quotes, bare carriage returns or ragged
lines the csv module itself; both must give the same columns and the same errors."""

from __future__ import annotations

import csv
import gzip
import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cxrprobe.data.files import read_csv_columns
from cxrprobe.errors import DataError


def csv_module_columns(text: str) -> dict[str, list[str]]:
    """What the csv module makes of ``text``: a short row is an error, extra fields are ignored."""
    rows = list(csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline="")))
    header = [h.strip() for h in rows[0]]
    if any(len(r) < len(header) for r in rows[1:]):
        raise DataError("short row")
    return {name: [r[header.index(name)] for r in rows[1:]] for name in header}


def read_both_ways(tmp_path, text: str, gzipped: bool = False):
    path = tmp_path / ("t.csv.gz" if gzipped else "t.csv")
    if gzipped:
        path.write_bytes(gzip.compress(text.encode("utf-8")))
    else:
        path.write_bytes(text.encode("utf-8"))
    try:
        expected = csv_module_columns(text)
    except DataError:
        with pytest.raises(DataError, match=r"line \d+ has \d+ fields, the header \d+"):
            read_csv_columns(path)
        return None
    assert read_csv_columns(path) == expected
    return expected


@pytest.mark.parametrize("text", [
    "a,b\n1,2\n3,4\n",            # plain
    "a,b\r\n1,2\r\n3,4",          # Windows line ends, no final line end
    "\ufeffa, b \n1,2\n",         # byte-order mark, padded header
    "a,b\n,\n,\n",                # blank fields
    "a,b\né,ü\n",                 # not ASCII
    'a,b\n"1,x",2\n',             # a quoted comma
    'a,b\n"1\n2",3\n',            # a quoted line break
    "a,b\n1,2,3\n",               # a longer row: its extra field is ignored
    "a,b\r1,2\r",                 # bare carriage returns end lines too
    "a,b\n1,2\r3,4\n",            # mixed
    "a\n1\n2\n",                  # one column
    "a,b\n",                      # a header only
    "a,b\n1,2\n\n",               # a blank line is a short row
    "a,b\n1\n",                   # a short row
])
def test_every_shape_of_table_reads_as_the_csv_module_reads_it(tmp_path, text):
    read_both_ways(tmp_path, text)
    read_both_ways(tmp_path, text, gzipped=True)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.sampled_from(["", "1", "0.0", "AP", " x ", "é", '"q"', "a,b", "\r"]),
                         min_size=1, max_size=4), min_size=1, max_size=6),
       st.sampled_from(["\n", "\r\n"]), st.booleans())
def test_generated_tables_read_as_the_csv_module_reads_them(tmp_path, rows, line_end, final_end):
    text = line_end.join(",".join(r) for r in [["h1", "h2", "h3"][:len(rows[0])] or ["h1"], *rows])
    read_both_ways(tmp_path, text + (line_end if final_end else ""))


def test_only_the_columns_asked_for_are_returned_and_a_missing_one_is_named(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id,view,label\nx,AP,1\ny,PA,0\n")
    assert read_csv_columns(path, ("label", "id")) == {"label": ["1", "0"], "id": ["x", "y"]}
    with pytest.raises(DataError, match="t.csv has no 'split' column; it needs one"):
        read_csv_columns(path, ("id", "split"), "it needs one")
