"""cxrprobe: a feature cache and few-shot probes for CLIP encoders on chest X-rays.

Importing the package is light: each name below is imported when first used.

    import cxrprobe
    result = cxrprobe.run_fewshot("nih.h5", shots=[1, 2, 4, 8, 16], seeds=20)

See docs/python-api.md.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {  # name -> the module that defines it
    **dict.fromkeys(("open_cache", "embed", "adapt", "synthetic_cache", "synthetic_dataset"), "cxrprobe.api"),
    **dict.fromkeys(("run_fewshot", "FewshotResult"), "cxrprobe.commands.fewshot"),
    **dict.fromkeys(("run_zeroshot", "ZeroshotResult"), "cxrprobe.commands.zeroshot"),
    **dict.fromkeys(("list_heads", "make_head"), "cxrprobe.heads.registry"),
    "TextPrompts": "cxrprobe.models.text",
    **dict.fromkeys(("CxrprobeError", "InputError"), "cxrprobe.errors"),
}


def _head_classes() -> dict[str, str]:
    """Each head's class name -> its module, from the registry (plain data)."""
    from cxrprobe.heads.registry import REGISTRY

    return {info.class_name: info.module for info in REGISTRY.values()}


def __getattr__(name: str) -> Any:
    module = _API.get(name) or _head_classes().get(name)
    if module is None:
        raise AttributeError(f"module 'cxrprobe' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_API, *_head_classes()])


__all__ = list(_API)
