"""Find a dataset's image files anywhere under its data dir.

NIH ships images in a flat ``images/`` folder or in the Kaggle layout
(``images_001/images/...``); both are found by walking the tree once and matching plain file
names, so a name from metadata is only ever matched, never joined into a path, and cannot
point outside the data dir.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator

import numpy as np


def _files(data_dir: Path) -> Iterator[tuple[tuple[str, ...], str, str]]:
    """(folder parts relative to ``data_dir``, file name, path) of every file below it, in
    sorted walk order; folder symlinks are followed (datasets often live on another disk),
    each real folder once."""
    seen_dirs: set[str] = set()
    for root, dirs, files in os.walk(data_dir, followlinks=True):
        real = os.path.realpath(root)
        if real in seen_dirs:
            dirs[:] = []
            continue
        seen_dirs.add(real)
        dirs.sort()
        parts = Path(root).relative_to(data_dir).parts
        for name in sorted(files):
            yield parts, name, os.path.join(root, name)


def index_files(data_dir: Path, key: Callable[[tuple[str, ...], str], str]) -> dict[str, str]:
    """``key`` of every file below ``data_dir`` -> its path (str); where several files share a
    key, the first in sorted walk order wins."""
    found: dict[str, str] = {}
    for parts, name, path in _files(data_dir):
        found.setdefault(key(parts, name), path)
    return found


def path_suffix(depth: int) -> Callable[[tuple[str, ...], str], str]:
    """The key of a file: its last ``depth`` path components, joined by ``/``."""
    return lambda parts, name: "/".join((*parts[max(0, len(parts) - depth + 1):], name))


def _match(data_dir: Path, image_ids: np.ndarray, key: Callable[[tuple[str, ...], str], str]) -> np.ndarray:
    """Path (str) of each image id, the first file whose ``key`` equals it, or ``""``."""
    return paths_in(index_files(data_dir, key), image_ids)


def paths_in(index: dict[str, str], image_ids: np.ndarray) -> np.ndarray:
    """Path (str) of each image id in an ``index_files`` index, or ``""``."""
    return np.array([index.get(name, "") for name in image_ids.tolist()], dtype=object)


def find_images(data_dir: Path, image_ids: np.ndarray) -> np.ndarray:
    """Path (str) of each image id (a plain file name) under ``data_dir``, or ``""`` where it is
    absent; when a name occurs in several folders, the first in sorted walk order wins."""
    return _match(data_dir, image_ids, lambda parts, name: name)


def find_by_path_suffix(data_dir: Path, image_ids: np.ndarray, depth: int) -> np.ndarray:
    """Each image id, a relative path of ``depth`` components (``train/patient1/study1/view1_frontal.jpg``),
    matched against every file's last ``depth`` path components: for datasets whose file names
    repeat across folders."""
    return _match(data_dir, image_ids, path_suffix(depth))


def find_by_relative_path(data_dir: Path, image_ids: np.ndarray) -> np.ndarray:
    """Each image id, a POSIX path relative to ``data_dir``, matched against every file's."""
    return _match(data_dir, image_ids, lambda parts, name: "/".join((*parts, name)))
