"""The heads, by the names the CLI uses. A new head is one module plus one entry in registry.py.

Importing this package is light (the registry is plain data); a head's class, with torch,
FAISS or scikit-learn behind it, is imported when it is first asked for.
"""

from __future__ import annotations

from typing import Any

from cxrprobe.heads.registry import ADAPTERS, BASE_HEADS, REGISTRY, head_class, list_heads, make_head, parse_heads


def __getattr__(name: str) -> Any:
    if name == "HEADS":  # name -> class, every class imported
        return {head: head_class(head) for head in REGISTRY}
    if name in ("Head", "TextPrompts"):
        from cxrprobe.heads import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ADAPTERS", "BASE_HEADS", "HEADS", "REGISTRY", "Head", "TextPrompts", "head_class", "list_heads",
           "make_head", "parse_heads"]
