"""What every head shares: the estimator contract and embedding transforms.

A head is a scikit-learn style estimator over cached embeddings: ``__init__`` stores its
parameters unchanged, ``fit(X, Y)`` (X [n, d] embeddings, Y [n, k] multi-hot, one column per
finding) returns self, ``decision_function(X)`` gives [n, k] scores (higher = more likely
positive; AUC needs only the ranking), ``random_state`` seeds whatever is random, as in
scikit-learn. Heads that use text take the
cache's prompts as the ``text`` parameter; the runner supplies it, and the training-pool
mean as ``center`` for heads that centre.
"""

from __future__ import annotations

import numbers

import numpy as np
from scipy.special import expit
from sklearn.base import BaseEstimator
from sklearn.utils import Tags, check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from cxrprobe.models.text import TextPrompts  # noqa: F401 - the heads' text, re-exported


def l2_normalise(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


TRANSFORMS = ("raw", "l2", "cl2n", "head_logits")


def transform_embeddings(X: np.ndarray, kind: str, center: np.ndarray | None = None) -> np.ndarray:
    """The input a head scores, as float32: raw, L2-normalised, or centred then normalised (CL2N).

    Test embeddings go through this once per grid, not once per run: the runner caches it.
    """
    if kind in ("raw", "head_logits"):  # head_logits: X is already the adapted head's logits
        return np.asarray(X, dtype=np.float32)
    if kind == "l2":
        return l2_normalise(X).astype(np.float32)
    if kind == "cl2n":
        X = np.asarray(X, dtype=np.float64)
        return l2_normalise(X - center if center is not None else X).astype(np.float32)
    raise ValueError(f"unknown transform {kind!r}; expected one of {TRANSFORMS}")


def check_xy(X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """X [n, d] finite embeddings and Y [n, k] multi-hot, as float64."""
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y)
    if X.ndim != 2 or Y.ndim != 2 or len(X) != len(Y):
        raise ValueError(f"need X [n, d] and Y [n, k] (one column per finding), got {X.shape} and {Y.shape}")
    if not np.isfinite(X).all():
        raise ValueError("embeddings contain NaN or Inf")
    if not np.isin(Y, (0, 1)).all():
        raise ValueError("Y must be multi-hot: 0 or 1 for each image and finding")
    return X, Y.astype(np.float64)


def torch_seed(random_state: int | np.random.RandomState | np.random.Generator | None) -> int:
    """A seed for torch from ``random_state``, as scikit-learn reads it: an int is the seed
    itself (the same int, the same fit), None draws one from numpy's global generator, a
    RandomState or Generator draws one from itself."""
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2**31))
    if isinstance(random_state, numbers.Integral):
        return int(random_state)
    return int(check_random_state(random_state).randint(2**31))


class Head(BaseEstimator):
    """Base class: sklearn's get_params / set_params / clone, the fitted-state checks, and the
    scores-only contract (no ``predict``: heads are compared by AUC, which needs no threshold)."""

    uses_text = False
    uses_center = False
    input_transform = "raw"  # what decision_from expects; see transform_embeddings
    needs_support = True  # False: the scores do not depend on the support set (zero-shot)
    uses_validation = False  # True: fit(X, Y, X_val=, Y_val=) selects hyperparameters on validation
    draws_random = False  # True: the fit draws from random_state (two seeds, two fits of the same data)
    max_support: int | None = None  # the most support images the fit is run on (its cost grows faster)
    max_support_reason = ""

    def _check_fit_data(self, X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Validated X and Y as float64; records n_features_in_, n_outputs_ and classes_ (the
        column indices of Y: a multi-label target, one binary problem per column)."""
        X, Y = validate_data(self, X, Y, dtype=np.float64, multi_output=True, y_numeric=True)
        X, Y = check_xy(X, Y)
        self.n_outputs_ = Y.shape[1]
        self.classes_ = np.arange(self.n_outputs_)
        text = getattr(self, "text", None) if self.uses_text else None
        if text is not None:
            findings, width = len(text.findings), text.embeddings.shape[1]
            if self.n_outputs_ != findings or X.shape[1] != width:
                raise ValueError(f"the text has prompts for {findings} findings in {width} dimensions; "
                                 f"X and Y have {X.shape[1]} dimensions and {self.n_outputs_} findings")
        return X, Y

    def _check_known(self, known: np.ndarray | None, Y: np.ndarray) -> np.ndarray | None:
        """``known`` [n, k]: which labels of Y are known (a dataset's uncertain or unmentioned
        labels under an ``ignore`` policy are not; Y is 0 there). Each finding is fitted on the
        rows whose label is known for it. None when every label is known."""
        if known is None:
            return None
        known = np.asarray(known)
        if known.shape != Y.shape or not np.isin(known, (0, 1)).all():
            raise ValueError(f"known must be a 0/1 mask shaped as Y {Y.shape}, got {known.shape}")
        known = known.astype(bool)
        if (Y[~known] != 0).any():
            raise ValueError("Y must be 0 where its label is unknown")
        return None if known.all() else known

    def _check_validation_data(self, X_val: np.ndarray | None,
                               Y_val: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """The validation set of a search, checked against what fit was given."""
        if X_val is None or Y_val is None:
            raise ValueError("search needs a validation set (X_val, Y_val)")
        X_val, Y_val = check_xy(validate_data(self, X_val, reset=False, dtype=np.float64), Y_val)
        if Y_val.shape[1] != self.n_outputs_:
            raise ValueError(f"Y_val has {Y_val.shape[1]} findings, Y has {self.n_outputs_}")
        return X_val, Y_val

    def head_input(self, X: np.ndarray) -> np.ndarray:
        """The input the head scores (``input_transform`` of X), what ``decision_from`` takes."""
        return transform_embeddings(X, self.input_transform, getattr(self, "center", None))

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Scores [n, k], higher = more likely positive."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=(np.float64, np.float32))
        return self.decision_from(self.head_input(X))

    def decision_from(self, Z: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        """Scores [n, k] of inputs already through ``head_input`` (the runner prepares the test
        set's once per grid)."""
        raise NotImplementedError

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Per-finding probabilities: the logistic of the decision function."""
        return expit(self.decision_function(X))  # no overflow warning for large float32 scores

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.target_tags.single_output = False  # Y is [n, k], one column per finding
        tags.target_tags.multi_output = True
        tags.requires_fit = self.needs_support  # zero-shot scores need no labelled image
        return tags
