"""The versions every output file records: one list, read from the installed distributions."""

from __future__ import annotations

import platform
from importlib import metadata

PACKAGES = ("cxrprobe", "torch", "open_clip_torch", "numpy", "scipy", "scikit-learn", "faiss-cpu", "h5py")


def package_versions() -> dict[str, str]:
    import h5py

    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    versions["hdf5"] = h5py.version.hdf5_version  # the C library, which the wheel bundles
    return versions
