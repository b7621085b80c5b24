"""Every head keeps the estimator contract; each head's math on hand-checkable data."""

from __future__ import annotations

import re

import numpy as np
import pytest
from sklearn.base import clone

from cxrprobe.cache.reader import FeatureCache
from cxrprobe.errors import InputError
from cxrprobe.eval.sampler import draw_support
from cxrprobe.heads import ADAPTERS, BASE_HEADS, HEADS, make_head, parse_heads
from cxrprobe.heads.base import l2_normalise
from cxrprobe.heads.knn import KnnHead
from cxrprobe.heads.prototype import PrototypeHead
from cxrprobe.heads.zeroshot import ZeroShotHead
from cxrprobe.labels import FINDINGS
from cxrprobe.metrics.auc import mean_auc, per_class_auc


@pytest.fixture(scope="module")
def data(synthetic_cache):
    with FeatureCache(synthetic_cache) as cache:
        X, Y, split = cache.embeddings(), cache.labels, cache.table.split
        text = cache.text_prompts()
    support = draw_support(Y, split, 8, seed=0)
    test = np.flatnonzero(split == "test")
    return X, Y, support.rows, test, text, X[split == "train"].mean(axis=0)


@pytest.fixture(scope="module")
def validation(synthetic_cache):
    with FeatureCache(synthetic_cache) as cache:
        return draw_support(cache.labels, cache.table.split, 4, seed=0, pool_split="val").rows


def fit(head, X, Y, rows, validation):
    """Fit as the runner does: heads that select on validation get the few-shot validation set."""
    if head.uses_validation:
        return head.fit(X[rows], Y[rows], X_val=X[validation], Y_val=Y[validation])
    return head.fit(X[rows], Y[rows])


@pytest.mark.parametrize("name", BASE_HEADS + ADAPTERS)
def test_contract_shapes_clone_and_determinism(name, data, validation):
    X, Y, support, test, text, center = data
    head = make_head(name, text, center, random_state=3)
    assert fit(head, X, Y, support, validation) is head
    scores = head.decision_function(X[test])
    assert scores.shape == (len(test), len(FINDINGS)) and np.isfinite(scores).all()
    twin = clone(head)
    assert twin.get_params().keys() == head.get_params().keys()
    again = fit(twin, X, Y, support, validation).decision_function(X[test])
    assert np.array_equal(scores, again)
    probabilities = head.predict_proba(X[test])
    assert ((probabilities >= 0) & (probabilities <= 1)).all()


@pytest.mark.parametrize("name", [n for n in BASE_HEADS + ADAPTERS if n != "zeroshot"])
def test_learned_heads_learn_from_the_support_set(name, data, validation):
    X, Y, support, test, text, center = data
    head = fit(make_head(name, text, center, random_state=0), X, Y, support, validation)
    assert mean_auc(per_class_auc(Y[test], head.decision_function(X[test]))) > 0.55


def test_zeroshot_is_the_cosine_difference_of_the_prompt_pair(data):
    X, Y, support, test, text, _ = data
    head = ZeroShotHead(text=text).fit(X[support], Y[support])
    f = FINDINGS.index("Pneumonia")
    positive = l2_normalise(text.embedding_of("Pneumonia", "positive")[None])[0]
    negative = l2_normalise(text.embedding_of("Pneumonia", "negative")[None])[0]
    x = l2_normalise(X[test[:5]])
    assert np.allclose(head.decision_function(X[test[:5]])[:, f], x @ positive - x @ negative)
    paper = ZeroShotHead(text=text, negative="paper").decision_function(X[test[:5]])
    generic = l2_normalise(text.embedding_of("negative", "negative", "No finding")[None])[0]
    assert np.allclose(paper[:, f], x @ positive - x @ generic)


def test_prototype_score_is_the_difference_of_squared_distances():
    X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [0.1, 1.0]])
    Y = np.zeros((4, len(FINDINGS)))
    Y[[0, 2], 0] = 1
    head = PrototypeHead().fit(X, Y)
    Z = l2_normalise(X)
    p_pos, p_neg = Z[[0, 2]].mean(axis=0), Z[[1, 3]].mean(axis=0)
    query = np.array([[0.8, 0.3]])
    q = l2_normalise(query)[0]
    expected = ((q - p_neg) ** 2).sum() - ((q - p_pos) ** 2).sum()
    assert np.isclose(head.decision_function(query)[0, 0], expected)
    assert head.decision_function(query)[0, 1] == 0.0  # Cardiomegaly: no positive, no contrast


def test_knn_with_k_1_copies_the_nearest_support_label():
    X = np.array([[1.0, 0.0], [0.0, 1.0]])
    Y = np.zeros((2, len(FINDINGS)))
    Y[0, 3] = 1
    head = KnnHead(k=1).fit(X, Y)
    scores = head.decision_function(np.array([[0.9, 0.2], [0.1, 0.9]]))
    assert scores[0, 3] == pytest.approx(1.0) and scores[1, 3] == 0.0


def test_head_names_parse_and_unknown_ones_list_the_valid(data):
    assert parse_heads("all") == BASE_HEADS + ADAPTERS
    assert parse_heads("all", with_adapted=True)[-1] == "adapted"
    assert parse_heads("knn,logreg,knn") == ("knn", "logreg")
    with pytest.raises(InputError, match=re.escape("unknown head 'svm'; valid heads: " + ", ".join(HEADS))):
        parse_heads("logreg,svm")


def test_logreg_c_search_uses_the_validation_set_and_picks_from_the_grid(data):
    from cxrprobe.heads.logreg import C_GRID, LogRegHead

    X, Y, support, test, text, center = data
    val = np.setdiff1d(np.arange(len(X)), np.concatenate([support, test]))[:300]
    head = LogRegHead(search=True).fit(X[support], Y[support], X_val=X[val], Y_val=Y[val])
    assert head.C_ in C_GRID
    # the choice is the grid point with the best validation mean AUC, the most regularised on ties
    assert list(head.validation_auc_) == list(C_GRID)
    assert head.C_ == C_GRID[int(np.argmax([head.validation_auc_[C] for C in C_GRID]))]
    assert mean_auc(per_class_auc(Y[val], head.decision_function(X[val]))) == head.validation_auc_[head.C_]
    with pytest.raises(ValueError, match="needs a validation set"):
        LogRegHead(search=True).fit(X[support], Y[support])
    assert LogRegHead().fit(X[support], Y[support]).C_ == 0.316


def test_tip_adapter_with_alpha_0_is_zero_shot_and_its_cache_score_is_signed(data):
    from cxrprobe.heads.tip_adapter import TipAdapterHead

    X, Y, support, test, text, _ = data
    zero = ZeroShotHead(text=text).fit(X[support], Y[support]).decision_function(X[test])
    tip0 = TipAdapterHead(text=text, alpha=0.0).fit(X[support], Y[support]).decision_function(X[test])
    assert np.allclose(tip0, zero, atol=1e-6)
    # a query equal to a support image leans toward that image's labels
    tip = TipAdapterHead(text=text, alpha=1.0, beta=50.0).fit(X[support], Y[support])
    row = support[int(np.argmax(Y[support].sum(axis=1)))]
    cache = tip.decision_function(X[[row]]) - ZeroShotHead(text=text).decision_function(X[[row]])
    positive = Y[row] == 1
    assert cache[0, positive].mean() > cache[0, ~positive].mean()


def test_gda_recovers_the_discriminant_direction_of_two_gaussians():
    from cxrprobe.heads.gda import GdaHead

    rng = np.random.default_rng(0)
    d, n = 6, 20000
    A = rng.normal(size=(d, d)) * 0.02
    cov = A @ A.T + 0.001 * np.eye(d)
    base = np.zeros(d)
    base[0] = 1.0  # far from the origin, so L2 normalisation barely bends the classes
    delta = rng.normal(size=d) * 0.02
    y = rng.integers(0, 2, n)
    X = base + y[:, None] * delta + rng.multivariate_normal(np.zeros(d), cov, size=n)
    Y = np.zeros((n, len(FINDINGS)))
    Y[:, 0] = y
    head = GdaHead(text=None).fit(X, Y)
    Z = l2_normalise(X)
    mu1, mu0 = Z[y == 1].mean(axis=0), Z[y == 0].mean(axis=0)
    centred = np.where(y[:, None] == 1, Z - mu1, Z - mu0)
    analytic = np.linalg.solve(np.cov(centred.T), mu1 - mu0)
    got = head.coef_[:, 0]
    cosine = got @ analytic / np.linalg.norm(got) / np.linalg.norm(analytic)
    assert cosine > 0.99


def test_logreg_cv_bisection_never_ends_below_its_coarse_grid(data, validation):
    from cxrprobe.heads.logreg import LogRegCvHead, LogRegHead

    X, Y, support, test, text, center = data
    head = LogRegCvHead(bisection_steps=3).fit(X[support], Y[support], X_val=X[validation], Y_val=Y[validation])
    assert 1e-8 <= head.C_ <= 1e8

    def val_auc(C):
        model = LogRegHead(C=C).fit(X[support], Y[support])
        return mean_auc(per_class_auc(Y[validation], model.decision_function(X[validation])))

    assert val_auc(head.C_) >= max(val_auc(C) for C in LogRegCvHead.COARSE) - 1e-12
    with pytest.raises(ValueError, match="needs a validation set"):
        LogRegCvHead().fit(X[support], Y[support])


@pytest.mark.parametrize("n", [12, 40])  # fewer rows than dimensions (Woodbury) and more
def test_gda_precision_equals_the_pinv_formula(n):
    from cxrprobe.heads.gda import apply_shrunk_precision

    rng = np.random.default_rng(n)
    d = 24
    centred = rng.normal(size=(n, d))
    V = rng.normal(size=(d, 2))
    S = centred.T @ centred / (n - 1)
    reference = d * np.linalg.pinv((n - 1) * S + np.trace(S) * np.eye(d)) @ V
    assert np.allclose(apply_shrunk_precision(centred, V), reference, rtol=1e-9, atol=1e-12)
    assert not apply_shrunk_precision(np.zeros((n, d)), V).any()


@pytest.mark.parametrize("C", [0.01, 0.316, 10.0])
def test_joint_logistic_solver_reaches_sklearns_optimum(C):
    from sklearn.linear_model import LogisticRegression

    from cxrprobe.heads.logistic import balanced_weights, fit_logistic

    rng = np.random.default_rng(1)
    Z = l2_normalise(rng.normal(size=(60, 20)) + 0.3)
    Y = (rng.random((60, 3)) < [0.1, 0.3, 0.5]).astype(float)
    Y[:, 2] = 0  # one class only: no problem to solve, zero coefficients
    weights = fit_logistic(Z, Y, C)

    def objective(w, b, c):  # sklearn's, written out
        margins = (2 * Y[:, c] - 1) * (Z @ w + b)
        return C * (balanced_weights(Y)[:, c] * np.logaddexp(0, -margins)).sum() + 0.5 * w @ w

    for c in range(2):
        reference = LogisticRegression(C=C, class_weight="balanced", tol=1e-10, max_iter=10000)
        reference.fit(Z, Y[:, c].astype(int))
        best = objective(reference.coef_[0], reference.intercept_[0], c)
        assert objective(weights[:-1, c], weights[-1, c], c) <= best * (1 + 1e-5)
    assert not weights[:, 2].any()


def test_linear_gradient_written_out_matches_autograd():
    import torch
    from torch import nn

    from cxrprobe.heads.torch_fit import fit_linear_bce

    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 8)).astype(np.float32)
    Y = (rng.random((30, 3)) < 0.3).astype(np.float32)
    torch.manual_seed(0)
    layer = nn.Linear(8, 3)
    reference = nn.Linear(8, 3)
    reference.load_state_dict(layer.state_dict())
    fit_linear_bce(layer, X, Y, epochs=5, lr=1e-2, weight_decay=1e-4)
    optimiser = torch.optim.AdamW(reference.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(5):
        optimiser.zero_grad()
        nn.BCEWithLogitsLoss()(reference(torch.from_numpy(X)), torch.from_numpy(Y)).backward()
        optimiser.step()
    assert torch.allclose(layer.weight, reference.weight, atol=1e-6)
    assert torch.allclose(layer.bias, reference.bias, atol=1e-6)
    # Adam hides a gradient's scale: compare the last step's gradients themselves
    assert torch.allclose(layer.weight.grad, reference.weight.grad, rtol=1e-4, atol=1e-7)
    assert torch.allclose(layer.bias.grad, reference.bias.grad, rtol=1e-4, atol=1e-7)


def test_paper_head_trains_as_a_plain_torch_loop():
    """fit_paper_head against the loop anyone would write (module in train mode, BCE, AdamW):
    the same dropout draws and mini-batches, so the same weights after 3 epochs."""
    import torch

    from cxrprobe.heads.torch_fit import fit_paper_head
    from cxrprobe.models.mlp_head import PaperHead

    rng = np.random.default_rng(0)
    X = rng.normal(size=(37, 32)).astype(np.float32)  # 37 rows: two full batches and a short one
    Y = (rng.random((37, len(FINDINGS))) < 0.3).astype(np.float32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        start = {k: v.clone() for k, v in PaperHead(in_dim=32).state_dict().items()}
        dropout_draws = torch.get_rng_state()

    def fresh() -> PaperHead:
        head = PaperHead(in_dim=32)
        head.load_state_dict(start)
        torch.set_rng_state(dropout_draws)
        return head

    with torch.random.fork_rng(devices=[]):
        ours = fit_paper_head(fresh(), X, Y, epochs=3, batch_size=16, lr=1e-3, weight_decay=1e-2, seed=5)
    with torch.random.fork_rng(devices=[]):
        reference = fresh()
        optimiser = torch.optim.AdamW(reference.parameters(), lr=1e-3, weight_decay=1e-2, fused=True)
        generator = torch.Generator().manual_seed(5)
        inputs, targets = torch.from_numpy(X), torch.from_numpy(Y)
        reference.train()
        for _ in range(3):
            order = torch.randperm(len(X), generator=generator)
            for first in range(0, len(X), 16):
                batch = order[first:first + 16]
                optimiser.zero_grad()
                torch.nn.BCEWithLogitsLoss()(reference(inputs[batch]), targets[batch]).backward()
                optimiser.step()
    moved = [(ours.state_dict()[k] - v).abs().max().item() for k, v in start.items()]
    assert min(moved) > 1e-4  # every parameter trained (a wrong mask or gradient would not match below)
    for mine, theirs in zip(ours.parameters(), reference.parameters()):
        assert torch.allclose(mine, theirs, atol=1e-6, rtol=0)
    assert not ours.training


def test_paper_head_scores_equal_the_modules_outputs():
    import torch

    from cxrprobe.heads.torch_fit import SCORE_ROWS, paper_head_scores, scores
    from cxrprobe.models.mlp_head import PaperHead

    rng = np.random.default_rng(4)
    torch.manual_seed(4)
    head = PaperHead(in_dim=24).eval()
    with torch.no_grad():  # biases and norms away from their zero / one start, so each is checked
        for p in head.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    X = rng.normal(size=(2 * SCORE_ROWS + 3, 24)).astype(np.float32)  # two full blocks and a short one
    X.setflags(write=False)  # as a memory-mapped grid input
    assert np.allclose(paper_head_scores(head, X), scores(head, X), rtol=1e-6, atol=1e-5)  # scores of size ~5
    assert paper_head_scores(head, X[:0]).shape == (0, len(FINDINGS))


def test_logistic_in_the_row_space_reaches_the_full_space_optimum():
    from cxrprobe.heads.logistic import balanced_weights, fit_logistic, row_space

    rng = np.random.default_rng(2)
    Z = l2_normalise(rng.normal(size=(30, 80)) + 0.2)  # fewer rows than dimensions, as a support set
    Y = (rng.random((30, 4)) < 0.3).astype(float)
    basis, reduced = row_space(Z)
    assert basis.shape == (80, 30) and np.allclose(basis.T @ basis, np.eye(30)) and np.allclose(Z @ basis, reduced)
    C = 3.0
    small = fit_logistic(reduced, Y, C, tol=1e-10)
    mapped = np.vstack([basis @ small[:-1], small[-1:]])
    full = fit_logistic(Z, Y, C, tol=1e-10)

    def objective(W):
        margins = (2 * Y - 1) * (Z @ W[:-1] + W[-1])
        return C * (balanced_weights(Y) * np.logaddexp(0, -margins)).sum() + 0.5 * (W[:-1] ** 2).sum()

    assert np.isclose(objective(mapped), objective(full), rtol=1e-8)
    assert np.allclose(mapped, full, atol=1e-4)
    assert row_space(Z.T[:, :20] @ np.eye(20))[0] is None  # as many rows as dimensions: nothing to gain


# --- the corrected adapters (docs/heads.md) ---------------------------------------------------------

def test_tip_adapter_values_are_the_signed_sum_of_one_hot_values():
    from cxrprobe.heads.tip_adapter import signed_values

    Y = np.zeros((5, len(FINDINGS)))
    Y[:2, 0] = 1  # 2 positives, 3 negatives
    Y[:, 1] = 1  # one-sided: nothing to contrast
    values = signed_values(Y)
    assert np.allclose(values[:, 0], [1, 1, -2 / 3, -2 / 3, -2 / 3]) and abs(values[:, 0].sum()) < 1e-6
    assert not values[:, 1].any()


def test_tip_adapter_search_takes_the_validation_best_of_the_official_grid(data, validation):
    from cxrprobe.heads.tip_adapter import ALPHA_GRID, BETA_GRID, TipAdapterHead

    X, Y, support, test, text, _ = data
    head = TipAdapterHead(text=text, search=True).fit(X[support], Y[support], X_val=X[validation], Y_val=Y[validation])
    assert head.alpha_ in ALPHA_GRID and head.beta_ in BETA_GRID and head.zero_shot_scale_ == text.logit_scale
    assert len(ALPHA_GRID) == 20 and len(BETA_GRID) == 200 and BETA_GRID[0] == ALPHA_GRID[0] == 0.1

    def val_auc(alpha, beta):
        head.alpha_, head.beta_ = alpha, beta
        return mean_auc(per_class_auc(Y[validation], head.decision_function(X[validation])))

    chosen = (head.alpha_, head.beta_)
    best = val_auc(*chosen)
    assert all(val_auc(a, b) <= best + 1e-12 for a in ALPHA_GRID[::3] for b in BETA_GRID[::25])
    default = TipAdapterHead(text=text).fit(X[support], Y[support])
    assert (default.alpha_, default.beta_, default.zero_shot_scale_) == (1.0, 1.0, 1.0)


def test_gda_search_picks_the_validation_best_alpha_and_the_default_is_scale_free(data, validation):
    from cxrprobe.heads.gda import ALPHA_GRID, GdaHead

    X, Y, support, test, text, _ = data
    searched = GdaHead(text=text, search=True).fit(X[support], Y[support], X_val=X[validation], Y_val=Y[validation])
    aucs = [mean_auc(per_class_auc(Y[validation], GdaHead(text=text, alpha=a).fit(X[support], Y[support])
                                   .decision_function(X[validation]))) for a in ALPHA_GRID]
    assert set(searched.alpha_) == {ALPHA_GRID[int(np.argmax(aucs))]}
    auto = GdaHead(text=text).fit(X[support], Y[support])
    text_term, lda_term = auto._terms(l2_normalise(X[support]).astype(np.float32))
    usable = lda_term.std(axis=0) > 0
    assert np.allclose((auto.alpha_ * lda_term.std(axis=0))[usable], text_term.std(axis=0)[usable], rtol=1e-4)
    # scale-free: embeddings of another scale change nothing (they are L2-normalised), and an LDA
    # term that is ten times larger gets a tenth of the weight
    scaled = GdaHead(text=text).fit(X[support], Y[support])
    scaled.coef_, scaled.intercept_ = auto.coef_ * 10, auto.intercept_ * 10
    scaled.alpha_ = scaled._alpha(l2_normalise(X[support]).astype(np.float32), None)
    assert np.allclose(scaled.decision_function(X[test]), auto.decision_function(X[test]), rtol=1e-3, atol=1e-3)


def test_the_logit_scale_comes_from_the_cache(synthetic_cache, tmp_path, small_dataset, cli):
    import shutil

    import h5py

    from cxrprobe.models.loading import load_model

    with FeatureCache(synthetic_cache) as cache:
        assert cache.text_prompts().logit_scale == 100.0
    older = tmp_path / "older.h5"
    shutil.copyfile(synthetic_cache, older)
    with h5py.File(older, "a") as f:
        del f.attrs["logit_scale"]
        f.attrs["logit_bias"] = 0.5  # as SigLIP would have one
    with FeatureCache(older) as cache:
        prompts = cache.text_prompts()
    assert (prompts.logit_scale, prompts.logit_bias) == (100.0, 0.5)  # not recorded: OpenAI CLIP's 100
    embedded = tmp_path / "tiny.h5"
    assert cli("embed", "--data-dir", small_dataset, "--out", embedded, "--model", "cxrprobe-tiny",
               "--pretrained", "none", "--device", "cpu", "--workers", "0", "-q").code == 0
    model = load_model("cxrprobe-tiny", "none", "cpu")
    with FeatureCache(embedded) as cache:
        scale = cache.text_prompts().logit_scale
    assert scale == pytest.approx(float(model.model.logit_scale.detach().exp())) and scale != 100.0
    clap = make_head("clap", None, None, random_state=0)
    assert "logit_scale" not in clap.get_params()  # a head reads it from the text it is given


def test_prompt_ensembles_average_normalised_embeddings():
    from cxrprobe.models.text import PromptSet, TextPrompts

    prompts = PromptSet(("a", "b"), ("Hernia", "Hernia"), ("positive", "positive"))
    text = TextPrompts(prompts, np.array([[3.0, 0.0], [0.0, 1.0]]))
    assert np.allclose(text.embedding_of("Hernia", "positive"), [2 ** -0.5, 2 ** -0.5])  # not toward the longer one
    assert np.allclose(text.embedding_of("Hernia", "positive", unit=False), [2 ** 0.5, 2 ** 0.5])  # mean norm 2


@pytest.mark.parametrize("name", BASE_HEADS + ADAPTERS)
def test_only_heads_marked_random_depend_on_the_seed(name, data, validation):
    """At ``all`` shots a head that is not ``draws_random`` is fitted once for every seed: its
    fit must not depend on random_state."""
    X, Y, support, test, text, center = data
    scores = [fit(make_head(name, text, center, random_state=seed), X, Y, support, validation).decision_function(X[test])
              for seed in (0, 1)]
    assert np.array_equal(scores[0], scores[1]) != HEADS[name].draws_random


def test_gda_with_more_rows_than_dimensions_uses_each_findings_scatter(data):
    """Past d rows, gda's per-finding scatter comes from one Z^T Z: the same head as centring."""
    from cxrprobe.heads import gda

    X, Y, _, test, text, _ = data
    rows = np.flatnonzero(np.isin(np.arange(len(X)), test, invert=True))[:300]  # 300 rows > 64 dimensions
    head = gda.GdaHead(text=text).fit(X[rows], Y[rows])
    Z = head.head_input(X[rows]).astype(np.float64)
    for c in (0, 7):
        positive = Y[rows, c] == 1
        mu_pos, mu_neg = Z[positive].mean(axis=0), Z[~positive].mean(axis=0)
        centred = np.where(positive[:, None], Z - mu_pos, Z - mu_neg)
        p_pos, p_neg = gda.apply_shrunk_precision(centred, np.stack([mu_pos, mu_neg], axis=1)).T
        assert np.allclose(head.coef_[:, c], p_pos - p_neg, rtol=1e-6, atol=1e-8)


def test_tip_adapter_scores_in_row_blocks_as_in_one(data, monkeypatch):
    from cxrprobe.heads import tip_adapter

    X, Y, support, test, text, _ = data
    head = tip_adapter.TipAdapterHead(text=text).fit(X[support], Y[support])
    whole = head.decision_function(X[test])
    monkeypatch.setattr(tip_adapter, "AFFINITY_BLOCK", 7 * len(support) + 3)  # blocks of 7 queries
    assert np.allclose(head.decision_function(X[test]), whole, rtol=1e-5, atol=1e-5)  # blocks round apart
