"""Finding image files under a data dir."""

from __future__ import annotations

import numpy as np

from cxrprobe.data.locate import find_images


def test_flat_and_kaggle_layouts_are_both_found(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"x")
    kaggle = tmp_path / "images_002" / "images"
    kaggle.mkdir(parents=True)
    (kaggle / "b.png").write_bytes(b"x")
    paths = find_images(tmp_path, np.array(["a.png", "b.png", "c.png"]))
    assert paths[0].endswith("images/a.png")
    assert paths[1].endswith("images_002/images/b.png")
    assert paths[2] == ""


def test_names_are_matched_never_joined(tmp_path):
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"x")
    data = tmp_path / "data"
    data.mkdir()
    paths = find_images(data, np.array(["../outside.png", str(outside)]))
    assert paths.tolist() == ["", ""]


def test_symlinked_folders_are_followed_once_even_in_a_loop(tmp_path):
    real = tmp_path / "disk"
    real.mkdir()
    (real / "a.png").write_bytes(b"x")
    data = tmp_path / "data"
    data.mkdir()
    (data / "images").symlink_to(real)
    (real / "loop").symlink_to(data)  # data/images/loop -> data
    paths = find_images(data, np.array(["a.png"]))
    assert paths[0].endswith("a.png")


def test_duplicate_names_resolve_to_the_first_in_sorted_order(tmp_path):
    for folder in ("b", "a"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.png").write_bytes(b"x")
    assert find_images(tmp_path, np.array(["x.png"]))[0].endswith("a/x.png")
