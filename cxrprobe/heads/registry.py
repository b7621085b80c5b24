"""Every head by name, as data: what it is, what it needs, its defaults and where each comes from.

This module imports nothing beyond the standard library, so listing heads (``cxrprobe heads``,
``fewshot --help``) and refusing an unknown one cost milliseconds; a head's class (torch,
FAISS, scikit-learn) is imported only when one is made. A test keeps the defaults here equal
to the classes' own.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Sequence

from cxrprobe.errors import InputError

PAPER = "paper"  # Dalsania, "Label-Efficient Chest X-ray Diagnosis via Partial CLIP Adaptation"
OFFICIAL = "official code"  # the method's own repository, named in the note
CXRPROBE = "cxrprobe"  # cxrprobe's own choice, the reason in the note


@dataclass(frozen=True)
class Default:
    value: Any
    source: str  # PAPER, OFFICIAL or CXRPROBE
    note: str = ""


@dataclass(frozen=True)
class HeadInfo:
    name: str
    module: str
    class_name: str
    description: str
    uses_text: bool = False
    searches: str = ""  # what its search selects, on the few-shot validation set
    search_always: bool = False  # False: the search is its ``search`` parameter (--search), off by default
    defaults: dict[str, Default] = field(default_factory=dict)
    needs: str = ""  # what the cache must hold beyond embeddings

    def load(self) -> type:
        return getattr(importlib.import_module(self.module), self.class_name)

    @property
    def search_when(self) -> str | None:
        """"--search", "always" (it cannot run without validation), or None."""
        return None if not self.searches else "always" if self.search_always else "--search"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "description": self.description, "needs_text": self.uses_text,
            "needs": self.needs or None,
            "search": {"selects": self.searches, "when": self.search_when} if self.searches else None,
            "defaults": {k: {"value": d.value, "source": d.source, "note": d.note} for k, d in self.defaults.items()},
        }


def _info(name: str, module: str, class_name: str, description: str, **kwargs: Any) -> HeadInfo:
    return HeadInfo(name, f"cxrprobe.heads.{module}", class_name, description, **kwargs)


NEGATIVES = ("pair", "paper")  # zero-shot's negative prompt: per finding, or the paper's one "No finding"
PAIR = Default("pair", OFFICIAL, "CheXzero's prompt pair per finding, '{finding}' against 'no {finding}'")
CLAP_SGD = {
    "epochs": Default(300, OFFICIAL, "jusiro/CLAP: one configuration for every task"),
    "lr": Default(0.1, OFFICIAL, "jusiro/CLAP, SGD with a cosine schedule"),
    "momentum": Default(0.9, OFFICIAL, "jusiro/CLAP"),
}
TIP_SEARCH = "alpha and beta on gaopengcuhk/Tip-Adapter's search_hp grid (20 x 200)"
TIP_KERNEL = {
    "alpha": Default(1.0, OFFICIAL, "jusiro/SS-Text's validation-free run"),
    "beta": Default(1.0, OFFICIAL, "jusiro/SS-Text's validation-free run"),
}

REGISTRY: dict[str, HeadInfo] = {info.name: info for info in (
    _info("paper-mlp", "paper_mlp", "PaperMlpHead",
          "The paper's MLP head (512-512-256-14) trained from scratch on the support set, plain BCE.",
          defaults={
              "epochs": Default(30, CXRPROBE, "the paper's few-shot code ran 5 epochs, but continuing its adapted "
                                              "head; from scratch 5 barely train it"),
              "batch_size": Default(16, PAPER),
              "lr": Default(1e-4, PAPER, "the paper's head learning rate"),
              "weight_decay": Default(1e-2, PAPER),
          }),
    _info("logreg", "logreg", "LogRegHead",
          "One L2 logistic regression per finding on L2-normalised embeddings (the CLIP / CoOp linear probe).",
          searches="C, one for all findings, from a log grid 1e-2 ... 1e3",
          defaults={
              "C": Default(0.316, OFFICIAL, "the CLIP README's example and FereshteShakeri/few-shot-MedVLMs"),
              "class_weight": Default("balanced", OFFICIAL, "FereshteShakeri/few-shot-MedVLMs LinearProbe_ju"),
              "max_iter": Default(1000, OFFICIAL, "the CLIP README's example"),
          }),
    _info("linear", "linear", "LinearHead",
          "A torch linear layer on L2-normalised embeddings: BCE, full batch, AdamW.",
          defaults={
              "epochs": Default(200, CXRPROBE, "long enough to converge on 16-shot support sets"),
              "lr": Default(1e-2, CXRPROBE),
              "weight_decay": Default(1e-4, CXRPROBE),
          }),
    _info("prototype", "prototype", "PrototypeHead",
          "Nearest class mean after CL2N (SimpleShot): how much nearer the positives' mean than the negatives'."),
    _info("knn", "knn", "KnnHead",
          "The k nearest support images by cosine (FAISS), after CL2N; the weighted share positive.",
          defaults={"k": Default(5, CXRPROBE, "SimpleShot selects k on validation; 5 smooths 1-shot ties")}),
    _info("zeroshot", "zeroshot", "ZeroShotHead",
          "Text only: cosine to the finding's prompt minus cosine to its negative prompt (CheXzero).",
          uses_text=True, defaults={"negative": PAIR}),
    _info("tip-adapter", "tip_adapter", "TipAdapterHead",
          "Tip-Adapter, training-free: a kernel cache of the support set added to zero-shot.",
          uses_text=True, searches=TIP_SEARCH,
          defaults={**TIP_KERNEL, "negative": PAIR}),
    _info("gda", "gda", "GdaHead",
          "Gaussian discriminant analysis per finding, one shared shrunk precision, blended with zero-shot.",
          uses_text=True, searches="alpha from mrflogs/ICLR24's grid 1e-4 ... 100",
          defaults={
              "alpha": Default("auto", CXRPROBE, "per finding std(zero-shot term) / std(LDA term) on the support "
                                                 "set: scale-free, where any fixed alpha depends on the backbone"),
              "negative": PAIR,
          }),
    _info("logreg-cv", "logreg", "LogRegCvHead",
          "logreg with CoOp's search for C: a coarse grid, then bisection, on validation mean AUC.",
          searches="C, always (a coarse grid 1e-6 ... 1e6, then bisection)", search_always=True,
          defaults={
              "class_weight": Default("balanced", OFFICIAL, "FereshteShakeri/few-shot-MedVLMs LinearProbe_ju"),
              "max_iter": Default(1000, OFFICIAL, "the CLIP README's example"),
              "bisection_steps": Default(8, OFFICIAL, "KaiyangZhou/CoOp's linear-probe search"),
          }),
    _info("adapted", "adapted", "AdaptedHead",
          "The adapted encoder's own head (its stored logits): supervised on the whole training set, no fit.",
          needs="the logits of an adapted head (embed --checkpoint RUN_DIR)"),
    _info("tip-adapter-f", "tip_adapter_f", "TipAdapterFHead",
          "Tip-Adapter-F: tip-adapter with its cache keys trained on the support set.",
          uses_text=True, searches="the epoch, then " + TIP_SEARCH,
          defaults={
              **TIP_KERNEL,
              "epochs": Default(20, OFFICIAL, "gaopengcuhk/Tip-Adapter"),
              "lr": Default(1e-3, OFFICIAL, "gaopengcuhk/Tip-Adapter, AdamW with a cosine schedule"),
              "eps": Default(1e-4, OFFICIAL, "gaopengcuhk/Tip-Adapter"),
              "weight_decay": Default(0.01, OFFICIAL, "torch's AdamW default, which the official code keeps"),
              "negative": PAIR,
          }),
    _info("lp++", "lp_plus_plus", "LpPlusPlusHead",
          "LP++: a linear probe blended with the text direction, step sizes from the data.",
          uses_text=True, searches="the epoch, among every 10th",
          defaults={
              "epochs": Default(300, OFFICIAL, "FereshteShakeri/FewShot-CLIP-Strong-Baseline; the last kept, "
                                               "as jusiro/SS-Text runs it without validation"),
              "alpha_every": Default(10, OFFICIAL, "FereshteShakeri/FewShot-CLIP-Strong-Baseline"),
              "momentum": Default(0.9, OFFICIAL, "FereshteShakeri/FewShot-CLIP-Strong-Baseline"),
              "alpha_init": Default(250.0, OFFICIAL, "FereshteShakeri/FewShot-CLIP-Strong-Baseline: 250 x the "
                                                     "mean text logit"),
              "alpha_rule": Default("own-prompt", OFFICIAL, "the exact two-class reduction of its "
                                                            "calculate_init_alpha: each image's cosine to its own "
                                                            "class's prompt"),
              "negative": PAIR,
          }),
    _info("zs-lp", "clap", "ZsLpHead",
          "ZS-LP: a positive and a negative prototype per finding, started at the prompts, trained by SGD.",
          uses_text=True, defaults={**CLAP_SGD, "negative": PAIR}),
    _info("clap", "clap", "ClapHead",
          "CLAP: zs-lp with a class-adaptive penalty that keeps each prototype near its prompt.",
          uses_text=True, defaults={
              **CLAP_SGD,
              "penalty_scale": Default(1.0, OFFICIAL, "jusiro/CLAP's lambda as published (1 = unscaled)"),
              "negative": PAIR,
          }),
)}

# The six heads of the performance target; 'all' adds the adapters (and 'adapted' when cached).
BASE_HEADS = ("paper-mlp", "logreg", "linear", "prototype", "knn", "zeroshot")
ADAPTERS = ("tip-adapter", "gda", "logreg-cv", "tip-adapter-f", "lp++", "zs-lp", "clap")


def head_names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def list_heads() -> list[dict[str, Any]]:
    """Every head as plain data (``cxrprobe heads --json``)."""
    return [info.as_dict() for info in REGISTRY.values()]


def split_heads(text: str) -> tuple[str, ...] | None:
    """'logreg,knn' -> ('logreg', 'knn'); 'all' -> None (every head the cache can run). An
    unknown name lists the valid ones."""
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    return None if names == ("all",) else check_heads(names or (text,))


def check_heads(names: Sequence[str] | None, with_adapted: bool = False, with_text: bool = True) -> tuple[str, ...]:
    """Known head names, once each, in the order given; None is every head, the adapted one
    only ``with_adapted`` (a cache embedded from an adapt run), those that score from text only
    ``with_text`` (not on an image-only encoder's cache)."""
    if names is None:
        every = BASE_HEADS + ADAPTERS + (("adapted",) if with_adapted else ())
        return every if with_text else tuple(n for n in every if not REGISTRY[n].uses_text)
    names = tuple(dict.fromkeys(names))
    unknown = [n for n in names if n not in REGISTRY]
    if unknown or not names:
        raise InputError(f"unknown head {unknown[0] if unknown else ''!r}; valid heads: {', '.join(REGISTRY)} (or all)")
    return names


def parse_heads(text: str, with_adapted: bool = False) -> tuple[str, ...]:
    """'logreg,knn' or 'all' -> head names (see split_heads and check_heads)."""
    return check_heads(split_heads(text), with_adapted)


def head_class(name: str) -> type:
    return REGISTRY[name].load()


def make_head(name: str, text: Any = None, center: Any = None, random_state: Any = 0, search: bool = False,
              **params: Any) -> Any:
    """A fresh head with the cache's text and training-pool mean where it uses them; with
    ``search``, heads that can select hyperparameters on a validation set are told to;
    ``params`` are set on it as given."""
    info = REGISTRY[name]
    cls = info.load()
    params = {"random_state": random_state, **params}
    if search and info.searches and not info.search_always:
        params["search"] = True
    if cls.uses_text:
        params["text"] = text
    if cls.uses_center:
        params["center"] = center
    return cls(**params)
