"""Which support classes score each class of another test set: the shipped synonym table
(``cxrprobe/data/class_maps``), a user's map, and the pairs a run used, for its config.json.

A map file is a CSV table ``test_class,cache_class``, one row per pair: a test class with
several rows is scored by the highest of their classes' scores (NIH's Nodule and Mass for
"Nodule or mass"), one with an empty ``cache_class`` is left out (no counterpart).
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path

from cxrprobe.data.files import read_csv_columns
from cxrprobe.errors import DataError, InputError

SYNONYMS = "synonyms.csv"
GOOGLE_2019_NIH = "google2019-nih.csv"
MAP_COLUMNS = ("test_class", "cache_class")


@dataclass(frozen=True)
class ClassMap:
    """The test classes a run scores, each with the support classes whose highest score is its
    score; the test classes left out for want of a counterpart; where the pairs came from."""

    pairs: tuple[tuple[str, tuple[str, ...]], ...]
    left_out: tuple[str, ...]
    source: str

    @property
    def test_classes(self) -> tuple[str, ...]:
        return tuple(test for test, _ in self.pairs)

    def support_classes(self, order: tuple[str, ...]) -> tuple[str, ...]:
        """The support classes the pairs use, in ``order`` (the support cache's)."""
        used = {name for _, names in self.pairs for name in names}
        return tuple(name for name in order if name in used)

    def columns(self, support: tuple[str, ...]) -> tuple[tuple[int, ...], ...]:
        """Each test class's columns among ``support``."""
        return tuple(tuple(support.index(name) for name in names) for _, names in self.pairs)

    def record(self) -> dict:
        return {"source": self.source, "scored_by": {test: list(names) for test, names in self.pairs},
                "left_out": list(self.left_out),
                "rule": "a test class's score is the highest of its support classes' scores"}


def shipped_map(name: str) -> Path:
    return Path(str(importlib.resources.files("cxrprobe") / "data" / "class_maps" / name))


def read_pairs(path: Path) -> list[tuple[str, str]]:
    """(test class, cache class or "") of each row of a map file; a table without both columns
    is refused."""
    try:
        table = read_csv_columns(Path(path), MAP_COLUMNS, "a class map has test_class and cache_class")
    except DataError as exc:
        raise InputError(f"--class-map {path}: {exc}") from None
    pairs = [(t.strip(), c.strip()) for t, c in zip(table["test_class"], table["cache_class"])]
    if not pairs or any(not t for t, _ in pairs):
        raise InputError(f"--class-map {path}: every row names a test_class")
    return pairs


def map_by_table(pairs: list[tuple[str, str]], test_classes: tuple[str, ...], support: tuple[str, ...],
                 source: str, where: str) -> ClassMap:
    """The map the pairs spell out, every name checked: a test class that is not one of
    ``test_classes`` or a cache class not of ``support`` is an input error (a typo would
    otherwise score nothing, silently)."""
    for test, cache in pairs:
        if test not in test_classes:
            raise InputError(f"{source} names {test!r}, which is no class of {where} ({', '.join(test_classes)})")
        if cache and cache not in support:
            raise InputError(f"{source} names {cache!r}, which is no class of the support cache ({', '.join(support)})")
    scored: dict[str, list[str]] = {}
    for test, cache in pairs:
        names = scored.setdefault(test, [])
        if cache and cache not in names:
            names.append(cache)
    return ClassMap(tuple((t, tuple(n)) for t, n in scored.items() if n),
                    tuple(t for t, n in scored.items() if not n), source)


def map_by_name(test_classes: tuple[str, ...], support: tuple[str, ...], user: Path | None = None) -> ClassMap:
    """Each test class paired with the support classes of the same name (case, spaces and
    underscores aside) or a synonym; the classes ``user``'s map names take its pairs instead."""
    given = map_by_table(read_pairs(user), test_classes, support, f"--class-map {user}", "the test cache") \
        if user is not None else ClassMap((), (), "")
    by_user = dict(given.pairs) | {t: () for t in given.left_out}
    groups = _synonym_groups()
    pairs, left_out = [], []
    for test in test_classes:
        names = by_user[test] if test in by_user else tuple(s for s in support if _same(test, s, groups))
        if names:
            pairs.append((test, names))
        else:
            left_out.append(test)
    source = f"{SYNONYMS} (shipped)" + (f" and --class-map {user}" if user is not None else "")
    return ClassMap(tuple(pairs), tuple(left_out), source)


def _key(name: str) -> str:
    return " ".join(name.replace("_", " ").casefold().split())


def _synonym_groups() -> dict[str, set[str]]:
    """Each name's (normalised) finding groups."""
    table = read_csv_columns(shipped_map(SYNONYMS), ("finding", "name"))
    groups: dict[str, set[str]] = {}
    for finding, name in zip(table["finding"], table["name"]):
        groups.setdefault(_key(name), set()).add(_key(finding))
    return groups


def _same(a: str, b: str, groups: dict[str, set[str]]) -> bool:
    ka, kb = _key(a), _key(b)
    return ka == kb or bool(groups.get(ka, {ka}) & groups.get(kb, {kb}))
