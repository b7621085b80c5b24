"""The few-shot grid's options, checked before anything heavy is imported: a refused ``--shots a``
costs milliseconds, not a torch and FAISS import."""

from __future__ import annotations

from typing import Sequence

from cxrprobe.errors import OptionError

PROTOCOLS = ("default", "paper")


ALL_SHOTS = "all"  # the full-data reference: every training image, one draw
Shots = int | str  # a whole number of shots, or ALL_SHOTS


def parse_shots(text: str) -> tuple[Shots, ...]:
    """'1,2,4,8,16,all' -> (1, 2, 4, 8, 16, 'all'): positive integers or ``all``, comma-separated,
    no repeats."""
    parts = [p.strip() for p in text.split(",")]
    message = f"takes positive whole numbers (or all) separated by commas, like 1,2,4,8,16,all; got {text!r}"
    if not text.strip() or any(p != ALL_SHOTS and not p.isdigit() for p in parts):
        raise OptionError("shots", message)
    try:
        shots = tuple(p if p == ALL_SHOTS else int(p) for p in parts)
    except ValueError:  # int() refuses some of what str.isdigit() takes: '²', or 5,000 digits
        raise OptionError("shots", message) from None
    return check_shots(shots, text)


def check_shots(shots: Sequence[Shots], shown: object = None) -> tuple[Shots, ...]:
    """Shot levels as given, checked: at least one, each a whole number of at least 1 or
    ``all``, no repeats."""
    shown = shown if shown is not None else ",".join(map(str, shots))
    shots = tuple(shots)
    counts = [s for s in shots if s != ALL_SHOTS]
    if not shots or any(isinstance(s, bool) or not isinstance(s, int) for s in counts):
        raise OptionError("shots", f"takes positive whole numbers or all, like 1,2,4,8,16,all; got {shown!r}")
    if counts and min(counts) < 1:
        raise OptionError("shots", f"must be at least 1 each; got {shown!r}")
    if len(set(shots)) != len(shots):
        raise OptionError("shots", f"lists a value twice: {shown!r}")
    return shots


def shot_order(shots: Shots) -> tuple[int, int]:
    """Sort key: shot counts in increasing order, ``all`` after every count."""
    return (1, 0) if shots == ALL_SHOTS else (0, int(shots))


def read_shots(text: str) -> Shots:
    """A shots cell of a results CSV: a whole number or ``all``."""
    return ALL_SHOTS if text == ALL_SHOTS else int(text)


def check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise OptionError("protocol", f"must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    return protocol


def at_least_one(value: int, name: str) -> int:
    if value < 1:
        raise OptionError(name, f"must be at least 1, got {value}")
    return value


def at_least_zero(value: int, name: str) -> int:
    if value < 0:
        raise OptionError(name, f"must be 0 or more, got {value}")
    return value


SUPPORT_DESIGNS = ("per-finding", "pos-neg", "realistic")  # eval/sampler.py describes each


def check_support(design: str, normals: str | int = "N") -> str:
    if design not in SUPPORT_DESIGNS:
        raise OptionError("support", f"must be one of {', '.join(SUPPORT_DESIGNS)}, got {design!r}")
    if design != "per-finding" and normals != "N":
        raise OptionError("normals", f"sets the per-finding design's normals; the {design} design draws its own")
    return design


def parse_normals(text: str) -> str | int:
    """'N' (as many as shots), 'natural' (the pool's share), or a whole number of "No Finding" images."""
    text = str(text).strip()
    if text in ("N", "natural"):
        return text
    if text.isascii() and text.isdigit():
        return int(text)
    raise OptionError("normals", f"takes N, natural or a whole number (0 for none), got {text!r}")


AGGREGATES = ("image", "study-max", "study-mean")


def check_aggregate(aggregate: str) -> str:
    if aggregate not in AGGREGATES:
        raise OptionError("aggregate", f"must be one of {', '.join(AGGREGATES)}, got {aggregate!r}")
    return aggregate
