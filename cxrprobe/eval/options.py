"""The few-shot grid's options, checked before anything heavy is imported: a refused ``--shots a``
costs milliseconds, not a torch and FAISS import."""

from __future__ import annotations

from typing import Sequence

from cxrprobe.errors import InputError

PROTOCOLS = ("default", "paper")


def parse_shots(text: str) -> tuple[int, ...]:
    """'1,2,4,8,16' -> (1, 2, 4, 8, 16): positive integers, comma-separated, no repeats."""
    parts = text.split(",")
    message = f"--shots takes positive whole numbers separated by commas, like 1,2,4,8,16; got {text!r}"
    if not text.strip() or any(not p.strip().isdigit() for p in parts):
        raise InputError(message)
    try:
        shots = tuple(int(p) for p in parts)
    except ValueError:  # int() refuses some of what str.isdigit() takes: '²', or 5,000 digits
        raise InputError(message) from None
    return check_shots(shots, text)


def check_shots(shots: Sequence[int], shown: object = None) -> tuple[int, ...]:
    """Shot levels as given, checked: at least one, each a whole number of at least 1, no repeats."""
    shown = shown if shown is not None else ",".join(map(str, shots))
    shots = tuple(shots)
    if not shots or any(isinstance(s, bool) or not isinstance(s, int) for s in shots):
        raise InputError(f"--shots takes positive whole numbers, like 1,2,4,8,16; got {shown!r}")
    if min(shots) < 1:
        raise InputError(f"--shots must be at least 1 each; got {shown!r}")
    if len(set(shots)) != len(shots):
        raise InputError(f"--shots lists a value twice: {shown!r}")
    return shots


def check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise InputError(f"--protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    return protocol


def at_least_one(value: int, name: str) -> int:
    if value < 1:
        raise InputError(f"{name} must be at least 1, got {value}")
    return value


def at_least_zero(value: int, name: str) -> int:
    if value < 0:
        raise InputError(f"{name} must be 0 or more, got {value}")
    return value


SUPPORT_DESIGNS = ("per-finding", "pos-neg", "realistic")  # eval/sampler.py describes each


def check_support(design: str, normals: str | int = "N") -> str:
    if design not in SUPPORT_DESIGNS:
        raise InputError(f"--support must be one of {', '.join(SUPPORT_DESIGNS)}, got {design!r}")
    if design != "per-finding" and normals != "N":
        raise InputError(f"--normals sets the per-finding design's normals; the {design} design draws its own")
    return design


def parse_normals(text: str) -> str | int:
    """'N' (as many as shots), 'natural' (the pool's share), or a whole number of "No Finding" images."""
    text = str(text).strip()
    if text in ("N", "natural"):
        return text
    if text.isascii() and text.isdigit():
        return int(text)
    raise InputError(f"--normals takes N, natural or a whole number (0 for none), got {text!r}")
