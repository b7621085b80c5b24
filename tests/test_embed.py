"""`cxrprobe embed` and `cxrprobe info` end to end, on the real NIH files and generated ones."""

from __future__ import annotations

import csv
import io
import json
import shutil

import h5py
import numpy as np
import pytest
import torch
from conftest import TINY, metadata_bytes
from helpers import assert_one_line_error, snapshot
from PIL import Image
from test_images import broken_files

from cxrprobe.cache.reader import FeatureCache
from cxrprobe.data.images import load_grey
from cxrprobe.labels import FINDINGS
from cxrprobe.models.encode import encode_images
from cxrprobe.models.loading import load_model


@pytest.fixture(scope="module")
def real_cache(real_nih, tmp_path_factory):
    """The real NIH images present (six, or CXRPROBE_NIH_DIR's) embedded with the tiny model, once."""
    from cxrprobe.cli import main

    out = tmp_path_factory.mktemp("real") / "nih.h5"
    with pytest.raises(SystemExit) as stop:
        main(["embed", "--data-dir", str(real_nih), "--out", str(out), *TINY, "--batch-size", "16", "--workers", "2", "-q"])
    assert stop.value.code == 0
    return out


def csv_rows(text):
    return {row["Image Index"]: row for row in csv.DictReader(io.StringIO(text, newline=""))}


def present_images(real_nih):
    return sorted(p.name for p in (real_nih / "images").glob("*.png"))


def test_real_cache_holds_exactly_the_present_images(real_cache, real_nih):
    present = present_images(real_nih)
    assert {"00000100_000.png", "00004934_000.png"} <= set(present)  # the RGBA pair at least
    metadata = csv_rows(metadata_bytes(real_nih, "Data_Entry_2017_v2020.csv").decode())
    test_list = set(metadata_bytes(real_nih, "test_list.txt").decode().split())
    assert 0 < len(test_list & set(present)) < len(present)  # both splits are there
    with FeatureCache(real_cache) as cache:
        assert cache.table.image_ids.tolist() == present
        assert cache.attrs["n_metadata_rows"] == 112_120
        assert cache.attrs["n_missing_images"] == 112_120 - len(present)
        assert cache.attrs["complete"] is True
        for i, image_id in enumerate(cache.table.image_ids):
            row = metadata[image_id]
            expected = np.zeros(len(FINDINGS), dtype=np.uint8)
            for name in row["Finding Labels"].split("|"):
                if name != "No Finding":
                    expected[FINDINGS.index(name)] = 1
            assert np.array_equal(cache.labels[i], expected), image_id
            assert cache.table.patient_ids[i] == str(int(row["Patient ID"]))
            assert (cache.table.split[i] == "test") == (image_id in test_list)
        assert cache.embeddings().shape == (len(present), 32)
        assert np.isfinite(cache.embeddings()).all()
        assert cache.failures() == []


def test_rgba_images_are_embedded_like_their_grey_copies(real_cache, real_nih, tmp_path):
    loaded = load_model("cxrprobe-tiny", "none", "cpu")
    with FeatureCache(real_cache) as cache:
        ids = cache.table.image_ids.tolist()
        for name in ("00000100_000.png", "00004934_000.png"):
            pixels = torch.from_numpy(load_grey(str(real_nih / "images" / name), loaded.preprocessing))[None]
            expected = encode_images(loaded, pixels, "fp32").astype(np.float16)
            stored = cache.embeddings(np.array([ids.index(name)]), dtype=np.float16)
            # batches of 16 and of 1 may round differently in the last fp32 bit
            assert np.allclose(stored, expected, atol=2e-3, rtol=1e-3)


def test_cache_stores_prompt_embeddings(real_cache):
    with FeatureCache(real_cache) as cache:
        prompts, embeddings = cache.text()
    assert "A chest X-ray showing pneumonia" in prompts.prompts
    assert "No finding" in prompts.prompts
    assert prompts.classes[prompts.prompts.index("No finding")] == "negative"
    assert embeddings.shape == (len(prompts.prompts), 32)


def test_cache_is_readable_with_h5py_alone(real_cache, real_nih):
    n = len(present_images(real_nih))
    with h5py.File(real_cache, "r") as f:
        assert f.attrs["format"] == "cxrprobe-cache"
        assert list(f.attrs["classes"]) == list(FINDINGS)
        assert f["embeddings"].dtype == np.float16 and f["embeddings"].chunks is not None
        assert f["labels"].shape == (n, 14) and f["written"][()].all()
        assert json.loads(f.attrs["preprocessing"])["image_size"] == 112  # the tiny model's input


def test_info_json_and_table(real_cache, real_nih, cli):
    present = present_images(real_nih)
    result = cli("info", real_cache, "--json")
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["rows"] == len(present) and summary["complete"] is True
    assert summary["missing_images"] == 112_120 - len(present)
    test_list = set(metadata_bytes(real_nih, "test_list.txt").decode().split())
    assert summary["splits"]["test"]["images"] == len(test_list & set(present))
    assert sum(s["images"] for s in summary["splits"].values()) == len(present)
    assert summary["model"] == "cxrprobe-tiny" and summary["preprocessing"]["mean"][0] == pytest.approx(0.48145466)
    table = cli("info", real_cache)
    assert table.code == 0 and "complete" in table.stdout and "Pneumothorax" in table.stdout


def test_broken_images_go_to_the_failure_table_and_the_run_finishes(small_dataset, real_nih, tmp_path, cli):
    data = tmp_path / "data"
    shutil.copytree(small_dataset, data)
    images = sorted((data / "images").glob("*.png"))
    broken = broken_files(tmp_path, real_nih / "images" / "00000284_000.png")
    victims = dict(zip(images[:4], broken.values()))
    for target, source in victims.items():
        shutil.copyfile(source, target)
    out = tmp_path / "c.h5"
    result = cli("embed", "--data-dir", data, "--out", out, *TINY, "--batch-size", "5", "--workers", "0")
    assert result.code == 0, result.stderr
    assert "4 failed to decode" in result.stdout
    with FeatureCache(out) as cache:
        failures = dict(cache.failures())
        assert set(failures) == {p.name for p in victims}
        reasons = sorted(failures.values())
        assert any(r.startswith("corrupt image") for r in reasons)
        assert any(r.startswith("truncated image") for r in reasons)
        assert "empty file (0 bytes)" in reasons
        assert "not an image file Pillow can identify" in reasons
        assert len(cache.table) == 20 and not set(failures) & set(cache.table.image_ids)
    info = json.loads(cli("info", out, "--json").stdout)
    assert len(info["failures"]) == 4


def test_limit_and_require_all(small_dataset, tmp_path, cli):
    out = tmp_path / "c.h5"
    assert cli("embed", "--data-dir", small_dataset, "--out", out, *TINY, "--limit", "7", "--workers", "0").code == 0
    with FeatureCache(out) as cache:
        assert len(cache.table) == 7
    data = tmp_path / "data"
    shutil.copytree(small_dataset, data)
    next((data / "images").glob("*.png")).unlink()
    result = cli("embed", "--data-dir", data, "--out", tmp_path / "d.h5", *TINY, "--require-all")
    assert result.code == 2 and "1 of 24 metadata images are not under" in result.stderr
    result = cli("embed", "--data-dir", data, "--out", tmp_path / "d.h5", *TINY, "--workers", "0")
    assert result.code == 0 and "1 of 24 metadata rows have no image file" in result.stderr


def test_resume_on_a_complete_cache_checks_it_and_changes_nothing(small_dataset, tmp_path, cli):
    out = tmp_path / "c.h5"
    assert cli("embed", "--data-dir", small_dataset, "--out", out, *TINY, "--workers", "0").code == 0
    before = out.read_bytes()
    result = cli("embed", "--data-dir", small_dataset, "--out", out, *TINY, "--resume")
    assert result.code == 0 and "nothing to do" in result.stdout
    assert out.read_bytes() == before


def test_force_rebuilds_to_the_same_bytes(small_dataset, tmp_path, cli, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    out = tmp_path / "c.h5"
    assert cli("embed", "--data-dir", small_dataset, "--out", out, *TINY, "--workers", "0").code == 0
    first = out.read_bytes()
    assert cli("embed", "--data-dir", small_dataset, "--out", out, *TINY, "--workers", "2", "--force").code == 0
    assert out.read_bytes() == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.h5"]  # no partial, lock or temp left


def test_intensity_policy_reads_sixteen_bit_images_and_is_recorded(small_dataset, tmp_path, cli):
    data = tmp_path / "data"
    shutil.copytree(small_dataset, data)
    wide = sorted((data / "images").glob("*.png"))[:3]
    for path in wide:  # 12-bit values in a 16-bit PNG, and a marker far brighter than the rest
        values = np.asarray(Image.open(path).convert("L"), dtype=np.uint16) * 16
        values[:4, :4] = 65535
        Image.fromarray(values).save(path)
    caches = {}
    for intensity in ("minmax", "percentile"):
        caches[intensity] = out = tmp_path / f"{intensity}.h5"
        assert cli("embed", "--data-dir", data, "--out", out, *TINY, "--workers", "0", "--intensity", intensity).code == 0
        assert json.loads(cli("info", out, "--json").stdout)["preprocessing"]["intensity"] == intensity
        assert f"16-bit intensity {intensity}" in cli("info", out).stdout
    with FeatureCache(caches["minmax"]) as a, FeatureCache(caches["percentile"]) as b:
        is_wide = np.isin(a.table.image_ids, [p.name for p in wide])
        assert np.array_equal(a.table.image_ids, b.table.image_ids) and is_wide.sum() == 3
        same = np.all(a.embeddings() == b.embeddings(), axis=1)
        assert same[~is_wide].all() and not same[is_wide].any()  # 8-bit images are read as they are
    before = snapshot(tmp_path)
    result = cli("embed", "--data-dir", data, "--out", tmp_path / "minmax.h5", *TINY, "--force", "--intensity", "window")
    assert_one_line_error(result, "--intensity must be one of bits, minmax, percentile")
    assert snapshot(tmp_path) == before
