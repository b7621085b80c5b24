"""Find a dataset's image files anywhere under its data dir.

NIH ships images in a flat ``images/`` folder or in the Kaggle layout
(``images_001/images/...``); both are found by walking the tree once and matching plain file
names, so a name from metadata is only ever matched, never joined into a path, and cannot
point outside the data dir.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def find_images(data_dir: Path, image_ids: np.ndarray) -> np.ndarray:
    """Path (str) of each image id under ``data_dir``, or ``""`` where it is absent.

    Folder symlinks are followed (datasets often live on another disk), each real folder
    once. When a name occurs in several folders, the first in sorted walk order wins.
    """
    wanted = set(image_ids.tolist())
    found: dict[str, str] = {}
    seen_dirs: set[str] = set()
    for root, dirs, files in os.walk(data_dir, followlinks=True):
        real = os.path.realpath(root)
        if real in seen_dirs:
            dirs[:] = []
            continue
        seen_dirs.add(real)
        dirs.sort()
        for name in sorted(files):
            if name in wanted and name not in found:
                found[name] = os.path.join(root, name)
    return np.array([found.get(name, "") for name in image_ids.tolist()], dtype=object)


def find_by_path_suffix(data_dir: Path, image_ids: np.ndarray, depth: int) -> np.ndarray:
    """Path (str) of each image id, a relative path of ``depth`` components
    (``train/patient1/study1/view1_frontal.jpg``), under ``data_dir``, or ``""``.

    For datasets whose file names repeat across folders: every file's last ``depth`` path
    components are compared with the ids, so an id is only ever matched, never joined into a
    path. Walked as ``find_images`` walks (folder symlinks followed, each real folder once).
    """
    wanted = set(image_ids.tolist())
    found: dict[str, str] = {}
    seen_dirs: set[str] = set()
    for root, dirs, files in os.walk(data_dir, followlinks=True):
        real = os.path.realpath(root)
        if real in seen_dirs:
            dirs[:] = []
            continue
        seen_dirs.add(real)
        dirs.sort()
        tail = Path(root).relative_to(data_dir).parts[-(depth - 1):] if depth > 1 else ()
        for name in sorted(files):
            key = "/".join((*tail, name))
            if key in wanted and key not in found:
                found[key] = os.path.join(root, name)
    return np.array([found.get(name, "") for name in image_ids.tolist()], dtype=object)
