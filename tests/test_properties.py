"""Property-based tests of the text option parsers and the NIH metadata reader.

A parser given valid text gives back what the text says; given anything else it raises an
InputError (one line, exit 2), never another exception. The metadata reader reads every
well-formed table whatever its line endings, column order and padding, and turns every
corruption into a DataError.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cxrprobe.commands.adapt import check_hold_out, parse_hold_out
from cxrprobe.data.nih import load_nih_metadata
from cxrprobe.errors import DataError, InputError
from cxrprobe.eval.options import parse_shots
from cxrprobe.heads import HEADS, parse_heads
from cxrprobe.labels import FINDINGS, NO_FINDING
from cxrprobe.models.device import resolve_device
from cxrprobe.models.prompt_file import read_prompt_file

QUICK = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# text with the characters that matter to these parsers over-represented
option_text = st.text(st.sampled_from(",  0123456789-+.²١\t\nabcAEHNPlogrepa|/") | st.characters(), max_size=40)


def parsed_or_input_error(parse, text):  # noqa: ANN001, ANN201
    try:
        return parse(text)
    except InputError:
        return None


# --- --shots ---------------------------------------------------------------------------------------

@QUICK
@given(st.lists(st.integers(1, 10**6) | st.just("all"), min_size=1, max_size=8, unique=True),
       st.sampled_from(["", " "]))
def test_shots_round_trip(shots, pad):
    assert parse_shots(",".join(f"{pad}{s}{pad}" for s in shots)) == tuple(shots)


@QUICK
@given(st.lists(st.integers(0, 50), min_size=1, max_size=6))
def test_shots_with_a_zero_or_a_repeat_are_refused(shots):
    text = ",".join(map(str, shots))
    if 0 in shots or len(set(shots)) < len(shots):
        with pytest.raises(InputError):
            parse_shots(text)
    else:
        assert parse_shots(text) == tuple(shots)


@QUICK
@given(option_text)
def test_shots_any_text_parses_or_is_an_input_error(text):
    shots = parsed_or_input_error(parse_shots, text)
    if shots is not None:
        assert shots and all(s == "all" or isinstance(s, int) and s >= 1 for s in shots)
        assert len(set(shots)) == len(shots)
        assert parse_shots(",".join(map(str, shots))) == shots


# --- --heads and --hold-out: names from a fixed list ---------------------------------------------

@QUICK
@given(st.lists(st.sampled_from(sorted(HEADS)), min_size=1, max_size=6), st.sampled_from([",", ", ", " ,"]))
def test_heads_round_trip_in_order_once_each(names, separator):
    assert parse_heads(separator.join(names)) == tuple(dict.fromkeys(names))


@QUICK
@given(option_text, st.booleans())
def test_heads_any_text_parses_or_is_an_input_error(text, with_adapted):
    heads = parsed_or_input_error(lambda t: parse_heads(t, with_adapted), text)
    if heads is not None:
        assert heads and set(heads) <= set(HEADS)


@QUICK
@given(st.lists(st.sampled_from(FINDINGS), max_size=5))
def test_hold_out_round_trip(findings):
    assert parse_hold_out(",".join(findings)) == tuple(dict.fromkeys(findings))


@QUICK
@given(option_text)
def test_hold_out_any_text_is_the_dataset_s_classes_or_an_input_error(text):
    findings = parsed_or_input_error(lambda t: check_hold_out(parse_hold_out(t), FINDINGS), text)
    if findings is not None:
        assert set(findings) <= set(FINDINGS)


@QUICK
@given(st.one_of(option_text, st.sampled_from(["cuda", "cuda:0", "cuda:1", "cuda:01", "cuda:2", "cuda\n", "cuda:99",
                                                "cuda:200", "cuda:-1", "cuda:x", "CPU", "gpu"])),
       st.booleans())
def test_device_any_text_resolves_or_is_an_input_error(text, with_gpus):
    """With or without (faked) GPUs: a device torch can use, or one line of bad input."""
    gpus = {"is_available": lambda: with_gpus, "device_count": lambda: 2 if with_gpus else 0,
            "current_device": lambda: 0}
    with contextlib.ExitStack() as stack:
        for name, fake in gpus.items():
            stack.enter_context(mock.patch.object(torch.cuda, name, fake))
        device = parsed_or_input_error(resolve_device, text)
    if device is not None:
        assert device.type == "cpu" or (with_gpus and device.type == "cuda" and device.index in (0, 1))
        assert device == torch.device(str(device))


# --- --prompts: a JSON file ------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)
prompt_specs = st.dictionaries(
    st.sampled_from(FINDINGS) | st.text(max_size=8),
    st.fixed_dictionaries({"positive": st.lists(st.text(max_size=12), max_size=2),
                           "negative": st.lists(st.text(max_size=12), max_size=2)}) | json_values,
    max_size=3,
)


@QUICK
@given(prompt_specs | json_values)
def test_prompt_file_reads_or_is_an_input_error(spec):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "prompts.json"
        path.write_text(json.dumps(spec))
        prompts = parsed_or_input_error(read_prompt_file, path)
    if prompts is not None:
        assert set(prompts.classes) <= set(FINDINGS) and prompts.prompts
        assert all(p.strip() for p in prompts.prompts)


# --- the NIH metadata reader -----------------------------------------------------------------------

@dataclass(frozen=True)
class Dataset:
    rows: list[tuple[str, str, int]]  # image id, finding labels, patient
    test_patients: frozenset[int]


@st.composite
def datasets(draw) -> Dataset:  # noqa: ANN001
    rows = []
    patients = draw(st.lists(st.integers(1, 99_999_999), min_size=1, max_size=8, unique=True))
    for patient in patients:
        for follow_up in range(draw(st.integers(1, 3))):
            findings = draw(st.lists(st.sampled_from(FINDINGS), max_size=3, unique=True))
            labels = "|".join(findings) if findings else NO_FINDING
            rows.append((f"{patient:08d}_{follow_up:03d}.png", labels, patient))
    test = draw(st.sets(st.sampled_from(patients)))
    return Dataset(draw(st.permutations(rows)), frozenset(test))


@st.composite
def layouts(draw) -> dict:  # noqa: ANN001
    """How a copy of the table may be written: all of these must read the same."""
    return {
        "newline": draw(st.sampled_from(["\n", "\r\n"])),
        "bom": draw(st.booleans()),
        "trailing_comma": draw(st.booleans()),  # the 2017 header's quirk
        "pad_patient": draw(st.booleans()),
        "columns": draw(st.permutations(
            ["Image Index", "Finding Labels", "Patient ID", "Patient Age", "View Position"])),
        "final_newline": draw(st.booleans()),
    }


def write_dataset(folder: Path, data: Dataset, layout: dict) -> Path:
    columns = layout["columns"]
    lines = [",".join(columns) + ("," if layout["trailing_comma"] else "")]
    for image_id, labels, patient in data.rows:
        values = {"Image Index": image_id, "Finding Labels": labels, "Patient Age": "058Y", "View Position": "PA",
                  "Patient ID": f"{patient:08d}" if layout["pad_patient"] else str(patient)}
        lines.append(",".join(values[c] for c in columns))
    text = layout["newline"].join(lines) + (layout["newline"] if layout["final_newline"] else "")
    (folder / "Data_Entry_2017_v2020.csv").write_bytes(("\ufeff" if layout["bom"] else "").encode() + text.encode())
    test = [r[0] for r in data.rows if r[2] in data.test_patients]
    train_val = [r[0] for r in data.rows if r[2] not in data.test_patients]
    (folder / "test_list.txt").write_text("\n".join(test))
    (folder / "train_val_list.txt").write_text("\n".join(train_val))
    return folder


@QUICK
@given(datasets(), layouts())
def test_a_well_formed_table_reads_to_its_labels_patients_and_splits(data, layout):
    with tempfile.TemporaryDirectory() as folder:
        table = load_nih_metadata(write_dataset(Path(folder), data, layout)).table
    expected = {image_id: (labels, patient) for image_id, labels, patient in data.rows}
    assert table.image_ids.tolist() == sorted(expected)
    for row, image_id in enumerate(table.image_ids):
        labels, patient = expected[image_id]
        names = {FINDINGS[c] for c in np.flatnonzero(table.labels[row])}
        assert names == (set() if labels == NO_FINDING else set(labels.split("|")))
        assert table.patient_ids[row] == str(patient)
        assert (table.split[row] == "test") == (patient in data.test_patients)
    train = set(table.patient_ids[table.split == "train"])
    assert not train & set(table.patient_ids[table.split == "val"])  # validation is carved by patient


@QUICK
@given(datasets(), layouts(), layouts())
def test_the_fingerprint_ignores_how_the_table_is_written(data, one, other):
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        first = load_nih_metadata(write_dataset(Path(a), data, one)).table.fingerprint()
        second = load_nih_metadata(write_dataset(Path(b), data, other)).table.fingerprint()
    assert first == second


@dataclass(frozen=True)
class Damage:
    line: int
    column: int
    text: str
    at: int
    junk: bytes


def _replace_field(text: str, damage: Damage) -> str:
    lines = text.split("\n")
    line = 1 + damage.line % (len(lines) - 1)
    cells = lines[line].split(",")
    cells[damage.column % len(cells)] = damage.text
    lines[line] = ",".join(cells)
    return "\n".join(lines)


def _drop_column(text: str, damage: Damage) -> str:
    lines = [line.split(",") for line in text.split("\n")]
    return "\n".join(",".join(c for i, c in enumerate(cells) if i != damage.column) for cells in lines)


def _repeat_row(text: str, damage: Damage) -> str:
    lines = text.split("\n")
    return text + "\n" + lines[1 + damage.line % (len(lines) - 1)]


def _insert(text: str, damage: Damage) -> bytes:
    raw = text.encode()
    at = damage.at % (len(raw) + 1)
    return raw[:at] + damage.junk + raw[at:]


# corruption -> (what it does to the table's text, whether the result must be refused)
CORRUPTIONS = {
    "drop a required column": (lambda t, d: _drop_column(t, d).encode(), True),
    "a row appears twice": (lambda t, d: _repeat_row(t, d).encode(), True),
    "a field becomes any text": (lambda t, d: _replace_field(t, d).encode(), False),
    "cut anywhere": (lambda t, d: t.encode()[: d.at % (len(t) + 1)], False),
    "bytes inserted anywhere": (_insert, False),
    "garbage instead of a table": (lambda t, d: d.junk, False),
}
damages = st.builds(Damage, st.integers(0, 30), st.integers(0, 2), st.text(max_size=20), st.integers(0, 10_000),
                    st.binary(max_size=40))
PLAIN = {"newline": "\n", "bom": False, "trailing_comma": False, "pad_patient": True, "final_newline": False,
         "columns": ["Image Index", "Finding Labels", "Patient ID"]}


@QUICK
@given(datasets(), st.sampled_from(sorted(CORRUPTIONS)), damages)
def test_any_corruption_of_the_table_is_a_data_error(data, corruption, damage):
    change, must_fail = CORRUPTIONS[corruption]
    with tempfile.TemporaryDirectory() as folder:
        csv_path = write_dataset(Path(folder), data, PLAIN) / "Data_Entry_2017_v2020.csv"
        csv_path.write_bytes(change(csv_path.read_text(), damage))
        try:
            load_nih_metadata(Path(folder))
        except DataError:
            return  # anything else propagates and fails the test
    assert not must_fail, f"{corruption} was read without complaint"


@QUICK
@given(datasets(), st.sampled_from(["test_list.txt", "train_val_list.txt"]),
       st.sampled_from(["drop", "both", "delete"]))
def test_inconsistent_split_lists_are_a_data_error(data, listing, change):
    with tempfile.TemporaryDirectory() as folder:
        write_dataset(Path(folder), data, PLAIN)
        path = Path(folder) / listing
        names = path.read_text().split()
        if change == "delete":
            path.unlink()
        elif change == "drop" and names:
            path.write_text("\n".join(names[1:]))
        elif change == "both":
            other = [r[0] for r in data.rows if r[0] not in names]
            path.write_text("\n".join(names + other[:1]))
        if (change == "drop" and not names) or (change == "both" and len(names) == len(data.rows)):
            return  # nothing to change in this draw
        with pytest.raises(DataError):
            load_nih_metadata(Path(folder))
