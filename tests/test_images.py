"""Decoding: real NIH quirks, broken files, 16-bit images, and fidelity to open_clip's transform."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from cxrprobe.data.images import (
    ImageDecodeError,
    ImageFiles,
    Preprocessing,
    batch_ranges,
    collate_decoded,
    load_grey,
    to_model_input,
)

PREP = Preprocessing()
RGBA_IMAGES = ("00000100_000.png", "00004934_000.png")


def broken_files(folder, real_png):
    """The four kinds of broken file the acceptance names, each beside a good one."""
    data = real_png.read_bytes()
    corrupt = bytearray(data)
    middle = len(corrupt) // 2
    corrupt[middle:middle + 2000] = bytes(2000)  # zeros inside the compressed stream
    files = {
        "corrupt.png": bytes(corrupt),
        "truncated.png": data[: len(data) // 3],
        "empty.png": b"",
        "text.png": b"this is not a png, just text named like one\n" * 20,
    }
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return {name: folder / name for name in files}


@pytest.mark.parametrize("name", RGBA_IMAGES)
def test_rgba_nih_images_decode_like_their_grey_content(real_nih, name):
    with Image.open(real_nih / "images" / name) as img:
        assert img.mode == "RGBA"
        grey_reference = img.convert("L")
    ours = load_grey(str(real_nih / "images" / name), PREP)
    assert ours.shape == (224, 224) and ours.dtype == np.uint8
    reference = np.asarray(grey_reference.resize((224, 224), Image.BICUBIC, reducing_gap=PREP.reducing_gap))
    assert np.array_equal(ours, reference)


def test_pipeline_matches_open_clip_preprocessing(real_nih):
    """Our grey fast path against open_clip's own PIL transform on a real NIH image."""
    path = real_nih / "images" / "00000284_000.png"
    transform = open_clip.image_transform(224, is_train=False)
    with Image.open(path) as img:
        reference = transform(img.convert("RGB")).unsqueeze(0)
    ours = to_model_input(torch.from_numpy(load_grey(str(path), PREP))[None], PREP, torch.float32)
    assert ours.shape == reference.shape == (1, 3, 224, 224)
    difference = (ours - reference).abs()
    # reducing_gap=2 resizes in two steps: ~0.2 grey levels off on average, never a real change
    assert difference.mean() < 0.01 and difference.max() < 0.1


@pytest.mark.parametrize(
    "name, reason",
    [("corrupt.png", "corrupt image"), ("truncated.png", "truncated image"),
     ("empty.png", "empty file"), ("text.png", "not an image file")],
)
def test_broken_files_raise_with_a_reason(tmp_path, real_nih, name, reason):
    files = broken_files(tmp_path, real_nih / "images" / "00000284_000.png")
    with pytest.raises(ImageDecodeError, match=reason):
        load_grey(str(files[name]), PREP)


def sixteen_bit_png(path, values):
    Image.fromarray(values.astype(np.uint16)).save(path)
    with Image.open(path) as img:
        assert img.mode.startswith("I")
    return str(path)


def test_a_twelve_bit_png_is_scaled_by_its_bit_depth_not_left_dark(tmp_path):
    ramp = (np.arange(64 * 64).reshape(64, 64) % 4096).astype(np.uint16)  # 0 .. 4095: 12 bits
    path = sixteen_bit_png(tmp_path / "twelve.png", ramp)
    prep = Preprocessing(image_size=64)
    by_depth = load_grey(path, prep, bits_stored=12)
    assert np.array_equal(by_depth, np.rint(ramp * (255 / 4095)).astype(np.uint8))
    assert by_depth.max() == 255  # a fixed >> 8 would have left it at 15: nearly black
    assert np.array_equal(load_grey(path, prep), by_depth)  # no depth given: its own range, the same here


def test_each_intensity_policy_maps_the_values_it_says(tmp_path):
    values = np.full((64, 64), 1000, dtype=np.uint16)
    values[:32] = 3000
    values[0, 0], values[0, 1] = 0, 60000  # a dead pixel and a burnt-in marker
    path = sixteen_bit_png(tmp_path / "marker.png", values)
    minmax = load_grey(path, Preprocessing(image_size=64, intensity="minmax"))
    assert minmax[40, 40] == round(1000 * 255 / 60000) and minmax[0, 1] == 255
    percentile = load_grey(path, Preprocessing(image_size=64, intensity="percentile"))
    assert percentile[40, 40] == 0 and percentile[10, 10] == 255  # the two outliers are clipped away
    bits = load_grey(path, Preprocessing(image_size=64, intensity="bits"), bits_stored=16)
    assert bits[40, 40] == round(1000 * 255 / 65535)
    flat = sixteen_bit_png(tmp_path / "flat.png", np.full((64, 64), 700))
    assert not load_grey(flat, Preprocessing(image_size=64, intensity="minmax")).any()


def test_eight_bit_images_are_taken_as_they_are_under_every_policy(real_nih):
    path = str(real_nih / "images" / "00000284_000.png")
    expected = load_grey(path, Preprocessing(image_size=64))
    for intensity in ("minmax", "percentile"):
        assert np.array_equal(load_grey(path, Preprocessing(image_size=64, intensity=intensity)), expected)
    with pytest.raises(ValueError, match="intensity must be one of bits, minmax, percentile"):
        Preprocessing(intensity="window")


def test_non_square_images_are_resized_on_the_short_side_and_centre_cropped(tmp_path):
    pixels = np.zeros((100, 300), dtype=np.uint8)
    pixels[:, 100:200] = 255  # a bright centre third survives the centre crop whole
    path = tmp_path / "wide.png"
    Image.fromarray(pixels).save(path)
    grey = load_grey(str(path), Preprocessing(image_size=50))
    assert grey.shape == (50, 50)
    assert grey[:, 5:45].min() > 200


def test_dataset_reports_failures_and_collate_keeps_order(tmp_path, real_nih):
    files = broken_files(tmp_path, real_nih / "images" / "00000284_000.png")
    paths = [str(real_nih / "images" / "00000284_000.png"), str(files["empty.png"]), str(real_nih / "images" / RGBA_IMAGES[0])]
    dataset = ImageFiles(paths, PREP)
    batch = collate_decoded([dataset[i] for i in range(3)])
    assert batch.rows.tolist() == [0, 2]
    assert batch.pixels.shape == (2, 224, 224) and batch.pixels.dtype == torch.uint8
    assert batch.failures == [(1, "empty file (0 bytes)")]


def test_batches_are_fixed_row_ranges():
    assert [list(r) for r in batch_ranges(7, 3)] == [[0, 1, 2], [3, 4, 5], [6]]
    assert batch_ranges(0, 3) == []
