"""PadChest on its real 160,861-row table (torchxrayvision's package data): label lists parsed
without eval, classes chosen on training images only, views, physician-labelled images, and
an end-to-end run on real rows with generated 16-bit PNGs."""

from __future__ import annotations

import ast
import csv
import gzip
import importlib.resources
import json
import shutil
from collections import Counter

import numpy as np
import pytest
from conftest import TINY
from helpers import assert_one_line_error, rewrite_csv, snapshot
from PIL import Image

from cxrprobe.data.padchest import TABLE, load_padchest_metadata


@pytest.fixture(scope="module")
def real_rows():
    source = importlib.resources.files("torchxrayvision") / "data" / f"{TABLE}.gz"
    with gzip.open(source, "rt", newline="") as f:
        return list(csv.reader(f))


def test_the_whole_real_table(tmp_path, real_rows):
    shutil.copyfile(importlib.resources.files("torchxrayvision") / "data" / f"{TABLE}.gz", tmp_path / f"{TABLE}.gz")
    metadata, notes = load_padchest_metadata(tmp_path)
    header = real_rows[0]
    col = {name: header.index(name) for name in ("ImageID", "Projection", "Labels", "MethodLabel")}
    # the reference parse: Python's own literal reader, here in the test only; an empty label
    # ('', in ~3,000 lists) names nothing
    frontal = {r[col["ImageID"]]: frozenset(x.strip() for x in ast.literal_eval(r[col["Labels"]]) if x.strip())
               for r in real_rows[1:] if r[col["Projection"]] in ("PA", "AP", "AP_horizontal") and r[col["Labels"]] != "nan"}
    table = metadata.table
    assert len(table) == len(frontal) and set(table.image_ids) == set(frontal)
    train = Counter(x for i, s in zip(table.image_ids, table.split) if s == "train" for x in frontal[i] if x != "normal")
    assert table.classes == tuple(sorted(train, key=lambda x: (-train[x], x))[:20])
    for c, name in enumerate(table.classes[:5]):
        assert [name in frontal[i] for i in table.image_ids] == table.labels[:, c].astype(bool).tolist()
    assert table.normal.tolist() == [frontal[i] == {"normal"} for i in table.image_ids]
    assert "103 images have no label list" in notes[0]
    physician = load_padchest_metadata(tmp_path, views="all", label_method="physician")[0].table
    assert len(physician) == sum(r[col["MethodLabel"]] == "Physician" and r[col["Labels"]] != "nan" for r in real_rows[1:])
    depth = {r[col["ImageID"]]: int(r[header.index("BitsStored_DICOM")]) for r in real_rows[1:]}
    assert metadata.bits_stored.tolist() == [depth[i] for i in table.image_ids]  # 12 or 10, row by row


def test_named_classes_are_those_classes_in_the_order_named(tmp_path, real_rows):
    data = padchest_folder(tmp_path / "padchest", real_rows, n_images=30)[0]
    with open(data / TABLE, newline="") as f:
        rows = list(csv.reader(f))
    header = rows[0]
    lists = {r[header.index("ImageID")]: {x.strip() for x in ast.literal_eval(r[header.index("Labels")])}
             for r in rows[1:]}
    chosen = tuple(sorted(set().union(*lists.values()) - {"", "normal"}, reverse=True)[:2])
    table = load_padchest_metadata(data, classes=chosen)[0]
    assert table.table.classes == chosen and table.label_policy["classes"] == "named"
    for c, name in enumerate(chosen):
        assert table.table.labels[:, c].astype(bool).tolist() == [name in lists[i] for i in table.table.image_ids]


def padchest_folder(root, real_rows, n_images=120):
    """The first ``n_images`` frontal labelled rows, each with a 16-bit PNG of values within
    its ``BitsStored_DICOM`` depth (the first one's in the lower half only, as a dim image's)."""
    header = real_rows[0]
    image, folder, projection, labels, bits = (header.index(n) for n in ("ImageID", "ImageDir", "Projection",
                                                                           "Labels", "BitsStored_DICOM"))
    rows = [r for r in real_rows[1:5000] if r[projection] in ("PA", "AP") and r[labels] != "nan"][:n_images]
    root.mkdir()
    with open(root / TABLE, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    rng = np.random.default_rng(0)
    for k, row in enumerate(rows):
        (root / row[folder]).mkdir(exist_ok=True)
        top = 2 ** int(row[bits]) // (2 if k == 0 else 1)
        Image.fromarray(rng.integers(0, top, (48, 48)).astype(np.uint16)).save(root / row[folder] / row[image])
    return root, rows[0][folder], rows[0][image], int(rows[0][bits])


def test_embed_info_fewshot_on_a_padchest_layout(tmp_path, cli, real_rows):
    data, folder, first, depth = padchest_folder(tmp_path / "padchest", real_rows)
    cache = tmp_path / "padchest.h5"
    embedded = cli("embed", "--data-dir", data, "--out", cache, *TINY, "--top-classes", "3")
    assert embedded.code == 0, embedded.stderr
    summary = json.loads(cli("info", cache, "--json").stdout)
    assert summary["dataset"] == "padchest" and len(summary["classes"]) == 3 and summary["rows"] == 120
    assert summary["label_policy"] == {"classes": "the 3 most frequent on the training images", "label_method": "all"}
    out = tmp_path / "grid"
    grid = cli("fewshot", "--cache", cache, "--shots", "1", "--seeds", "2", "--heads", "prototype", "--jobs", "1",
               "--out", out, "--allow-undefined")
    assert grid.code == 0, grid.stderr
    # the dim first image was scaled by its recorded depth: it embeds as the 8-bit PNG of those
    # values does, not as its own range stretched to white would
    sixteen = np.asarray(Image.open(data / folder / first)).astype(np.int64)
    by_depth = np.rint(sixteen * (255 / (2**depth - 1))).astype(np.uint8)
    assert by_depth.max() < 200
    Image.fromarray(by_depth, mode="L").save(data / folder / first)
    again = tmp_path / "eight-bit.h5"
    assert cli("embed", "--data-dir", data, "--out", again, *TINY, "--top-classes", "3").code == 0
    from cxrprobe.cache.reader import FeatureCache

    with FeatureCache(cache) as a, FeatureCache(again) as b:
        row, scaled, eight_bit = a.table.image_ids.tolist().index(first), a.embeddings(), b.embeddings()
    assert np.array_equal(scaled[row], eight_bit[row])
    others = np.arange(len(scaled)) != row
    assert np.array_equal(scaled[others], eight_bit[others])


def test_padchest_s_flags_on_another_dataset_are_refused(tmp_path, cli, small_dataset):
    before = snapshot(tmp_path)
    assert_one_line_error(cli("embed", "--data-dir", small_dataset, "--out", tmp_path / "out.h5", *TINY,
                              "--top-classes", "5"), "--top-classes chooses PadChest's classes; this data dir is read as nih")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("flags, change, phrase", [
    ((), lambda rows: [rows[0], [v if i != rows[0].index("Labels") else "pacemaker" for i, v in enumerate(rows[1])],
                       *rows[2:]], "line 2: Labels 'pacemaker' is not a list of quoted labels"),
    ((), lambda rows: [rows[0], [v if i != rows[0].index("BitsStored_DICOM") else "twelve" for i, v in
                                 enumerate(rows[1])], *rows[2:]], "line 2: BitsStored_DICOM 'twelve' is not a bit depth"),
    (("--classes", "pacemaker,dragon"), None, "--classes: 'dragon' is no PadChest label of these images"),
    (("--label-method", "nurse"), None, "--label-method must be one of all, physician"),
    (("--views", "sideways"), None, "--views must be one of"),
])
def test_bad_padchest_input_ends_in_one_line(tmp_path, cli, real_rows, flags, change, phrase):
    data = padchest_folder(tmp_path / "padchest", real_rows, n_images=30)[0]
    if change is not None:
        rewrite_csv(data / TABLE, change)
    before = snapshot(tmp_path)
    assert_one_line_error(cli("embed", "--data-dir", data, "--out", tmp_path / "out.h5", *TINY, *flags), phrase)
    assert snapshot(tmp_path) == before
