"""The heads, by the names the CLI uses. A new head is one module plus one line here."""

from __future__ import annotations

import inspect

from cxrprobe.errors import InputError
from cxrprobe.heads.adapted import AdaptedHead
from cxrprobe.heads.base import Head, TextPrompts
from cxrprobe.heads.clap import ClapHead, ZsLpHead
from cxrprobe.heads.gda import GdaHead
from cxrprobe.heads.knn import KnnHead
from cxrprobe.heads.linear import LinearHead
from cxrprobe.heads.logreg import LogRegCvHead, LogRegHead
from cxrprobe.heads.lp_plus_plus import LpPlusPlusHead
from cxrprobe.heads.paper_mlp import PaperMlpHead
from cxrprobe.heads.prototype import PrototypeHead
from cxrprobe.heads.tip_adapter import TipAdapterHead
from cxrprobe.heads.tip_adapter_f import TipAdapterFHead
from cxrprobe.heads.zeroshot import ZeroShotHead

HEADS: dict[str, type[Head]] = {
    "paper-mlp": PaperMlpHead,
    "logreg": LogRegHead,
    "linear": LinearHead,
    "prototype": PrototypeHead,
    "knn": KnnHead,
    "zeroshot": ZeroShotHead,
    "tip-adapter": TipAdapterHead,
    "gda": GdaHead,
    "logreg-cv": LogRegCvHead,
    "adapted": AdaptedHead,
    "tip-adapter-f": TipAdapterFHead,
    "lp++": LpPlusPlusHead,
    "zs-lp": ZsLpHead,
    "clap": ClapHead,
}
# The six heads of the performance target; 'all' adds the adapters (and 'adapted' when cached).
BASE_HEADS = ("paper-mlp", "logreg", "linear", "prototype", "knn", "zeroshot")
ADAPTERS = ("tip-adapter", "gda", "logreg-cv", "tip-adapter-f", "lp++", "zs-lp", "clap")
# the parameter by which a head's optional validation search is switched on
SEARCH_FLAGS = ("search_C", "search")


def parse_heads(text: str, with_adapted: bool = False) -> tuple[str, ...]:
    """'logreg,knn' or 'all' -> head names; an unknown name lists the valid ones. 'all' takes
    the adapted head only ``with_adapted`` (a cache embedded from an adapt run)."""
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if names == ("all",):
        return BASE_HEADS + ADAPTERS + (("adapted",) if with_adapted else ())
    unknown = [n for n in names if n not in HEADS]
    if unknown or not names:
        raise InputError(f"unknown head {unknown[0] if unknown else text!r}; valid heads: {', '.join(HEADS)} (or all)")
    return names


def make_head(name: str, text: TextPrompts | None, center, random_state: int, search: bool = False):  # noqa: ANN001, ANN201
    """A fresh head with the cache's text and training-pool mean where it uses them; with
    ``search``, heads that can select hyperparameters on a validation set are told to."""
    cls = HEADS[name]
    params = {"random_state": random_state}
    if search:
        params.update({flag: True for flag in SEARCH_FLAGS if flag in inspect.signature(cls).parameters})
    if cls.uses_text:
        params["text"] = text
    if cls.uses_center:
        params["center"] = center
    return cls(**params)


__all__ = ["HEADS", "BASE_HEADS", "Head", "TextPrompts", "make_head", "parse_heads"]
