"""DICOM files written by pydicom with known stored values decode to the 8-bit image each
--dicom-window says (PS3.3 C.11.2); files cxrprobe cannot show are recorded failures."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from conftest import TINY
from helpers import assert_one_line_error, snapshot
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import MPEG2MPML

from cxrprobe.cache.reader import FeatureCache
from cxrprobe.data.images import ImageDecodeError, Preprocessing, load_grey
from cxrprobe.data.synthetic_dicom import write_dicom

SIDE = 64
RAMP = (np.arange(SIDE * SIDE).reshape(SIDE, SIDE) * 4096 // (SIDE * SIDE)).astype(np.uint16)  # 0 .. 4095


def write(path, values=None, **kwargs):
    return write_dicom(path, RAMP if values is None else values, **kwargs)


def grey(path, window):
    return load_grey(path, Preprocessing(image_size=SIDE, dicom_window=window))


def linear_window(x, center, width):
    """The DICOM standard's LINEAR window to 0 .. 255, written out (PS3.3 C.11.2.1.2.1)."""
    x = np.asarray(x, dtype=np.float64)
    inside = ((x - (center - 0.5)) / (width - 1) + 0.5) * 255
    out = np.where(x <= center - 0.5 - (width - 1) / 2, 0, np.where(x > center - 0.5 + (width - 1) / 2, 255, inside))
    return np.rint(out).astype(np.uint8)


def test_stored_values_decode_as_each_window_says(tmp_path):
    part = (1000 + RAMP // 2).astype(np.uint16)  # 1000 .. 3047 of a 12-bit range
    path = write(tmp_path / "a.dcm", part, window=(2000, 1001))
    assert np.array_equal(grey(path, "bits"), np.rint(part * (255 / 4095)).astype(np.uint8))
    low, high = part.min(), part.max()
    assert np.array_equal(grey(path, "minmax"), np.rint((part - low) * (255 / (high - low))).astype(np.uint8))
    assert np.array_equal(grey(path, "voi"), linear_window(part, 2000, 1001))
    without_window = write(tmp_path / "b.dcm", part)
    assert np.array_equal(grey(without_window, "voi"), grey(path, "bits"))  # no window: the stored bit range


def test_a_voi_lut_is_applied_before_a_window(tmp_path):
    path = write(tmp_path / "lut.dcm", window=(2000, 1001))
    from pydicom import dcmread
    from pydicom.dataset import Dataset as Item

    ds = dcmread(path)
    lut = Item()
    lut.LUTDescriptor = [4096, 0, 16]  # 4096 entries from stored value 0, 16 bits out
    lut.LUTData = ((4095 - np.arange(4096)) * 16).astype("<u2").tobytes()  # an inverting LUT
    ds.VOILUTSequence = [lut]
    ds.save_as(path, enforce_file_format=True)
    assert np.array_equal(grey(path, "voi"), np.rint((4095.0 - RAMP) * 16 * 255 / 65535).astype(np.uint8))
    assert np.array_equal(grey(path, "bits"), np.rint(RAMP * (255 / 4095)).astype(np.uint8))  # bits ignores it


def test_monochrome1_is_inverted_and_rescale_is_applied_first(tmp_path):
    plain = grey(write(tmp_path / "m2.dcm"), "bits")
    assert plain[0, 0] == 0 and plain[-1, -1] == 255
    assert np.array_equal(grey(write(tmp_path / "m1.dcm", photometric="MONOCHROME1"), "bits"), 255 - plain)
    # rescaled to -1024 .. 7166 and windowed in those units: the window sees 2x - 1024
    rescaled = write(tmp_path / "r.dcm", rescale=(2, -1024), window=(0, 2001))
    assert np.array_equal(grey(rescaled, "voi"), linear_window(2.0 * RAMP - 1024, 0, 2001))
    assert np.array_equal(grey(rescaled, "bits"), plain)  # the stored range moves with the rescale


def test_rle_lossless_and_sixteen_bits_decode_and_names_do_not_matter(tmp_path):
    full = (RAMP.astype(np.uint32) * 16).astype(np.uint16)  # 0 .. 65520: 16 bits
    plain = grey(write(tmp_path / "p.dcm", full, bits=16), "bits")
    assert np.array_equal(grey(write(tmp_path / "rle.dcm", full, bits=16, rle=True), "bits"), plain)
    assert np.array_equal(grey(write(tmp_path / "named.png", full, bits=16), "bits"), plain)  # by content
    Image.fromarray(plain).save(tmp_path / "png.png")
    shutil.copyfile(tmp_path / "png.png", tmp_path / "png.dcm")
    assert np.array_equal(load_grey(str(tmp_path / "png.dcm"), Preprocessing(image_size=SIDE)), plain)


def mpeg_dicom(path):
    """A file that says its pixels are MPEG-2 video, which nothing installed decodes."""
    write(path)
    from pydicom import dcmread

    ds = dcmread(path)
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = encapsulate([b"\0" * SIDE * SIDE])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return str(path)


@pytest.mark.parametrize("make, reason", [
    (lambda p: write(p, pixels=False), "DICOM file without pixel data"),
    (lambda p: write(p, photometric="PALETTE COLOR"), "photometric interpretation 'PALETTE COLOR' is not grey"),
    (lambda p: write(p, frames=2), "multi-frame DICOM (2 frames)"),
    (mpeg_dicom, "compressed as MPEG2 Main Profile / Main Level, and no installed decoder reads it"),
    (lambda p: (p.write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 40), str(p))[1], "DICOM file without pixel data"),
    (lambda p: (p.write_bytes(b"patient,label\n" * 20), str(p))[1], "named as DICOM but no DICOM file (no DICM marker"),
])
def test_files_that_cannot_be_shown_say_why(tmp_path, make, reason):
    with pytest.raises(ImageDecodeError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        grey(make(tmp_path / "bad.dcm"), "voi")


def test_a_dicom_export_embeds_with_its_window_recorded(tmp_path, cli):
    data = tmp_path / "export"
    (data / "scans").mkdir(parents=True)
    rows = []
    for i in range(12):
        values = (np.random.default_rng(i).integers(0, 4096, (SIDE, SIDE))).astype(np.uint16)
        write(data / "scans" / f"{i}.dcm", values, window=(1500 + 100 * i, 2001), rle=i % 3 == 0,
                    photometric="MONOCHROME1" if i % 2 else "MONOCHROME2")
        rows.append({"path": f"scans/{i}.dcm", "Edema": i % 2, "patient": f"p{i}", "split": ("train", "test")[i % 2]})
    write(data / "scans" / "colour.dcm", photometric="RGB")
    (data / "scans" / "report.dcm").write_text("not an image\n")
    rows += [{"path": "scans/colour.dcm", "Edema": 1, "patient": "p99", "split": "test"},
             {"path": "scans/report.dcm", "Edema": 0, "patient": "p98", "split": "test"}]
    with open(data / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    flags = ("--dataset", "csv", "--labels", data / "labels.csv", "--image-col", "path", "--label-cols", "Edema",
             "--patient-col", "patient", "--split-col", "split", *TINY)
    caches = {}
    for window in ("voi", "minmax"):
        caches[window] = out = tmp_path / f"{window}.h5"
        result = cli("embed", "--data-dir", data, "--out", out, *flags, "--dicom-window", window)
        assert result.code == 0, result.stderr
        summary = json.loads(cli("info", out, "--json").stdout)
        assert summary["preprocessing"]["dicom_window"] == window
        assert sorted(failure["reason"] for failure in summary["failures"]) == [
            "DICOM photometric interpretation 'RGB' is not grey (MONOCHROME1 or MONOCHROME2)",
            "named as DICOM but no DICOM file (no DICM marker at byte 128), nor an image Pillow can identify"]
    with FeatureCache(caches["voi"]) as a, FeatureCache(caches["minmax"]) as b:
        assert len(a.table) == len(b.table) == 12
        assert not np.all(a.embeddings() == b.embeddings(), axis=1).any()  # the window changes every image
    before = snapshot(tmp_path)
    assert_one_line_error(cli("embed", "--data-dir", data, "--out", tmp_path / "x.h5", *flags, "--dicom-window", "auto"),
                          "--dicom-window must be one of voi, minmax, bits")
    assert snapshot(tmp_path) == before
