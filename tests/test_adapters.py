"""The trained CLIP adapters (tip-adapter-f, lp++, zs-lp, clap): the estimator contract beyond
tests/test_heads.py, and each method's math on hand-checkable cases."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from cxrprobe.cache.reader import FeatureCache
from cxrprobe.eval.sampler import draw_support
from cxrprobe.heads import HEADS, make_head
from cxrprobe.heads.adapter_fit import cosine_rates
from cxrprobe.heads.base import l2_normalise
from cxrprobe.heads.clap import ClapHead, ZsLpHead
from cxrprobe.heads.lp_plus_plus import LpPlusPlusHead
from cxrprobe.heads.tip_adapter import ALPHA_GRID, BETA_GRID, TipAdapterHead
from cxrprobe.heads.tip_adapter_f import TipAdapterFHead, adamw_step
from cxrprobe.heads.zeroshot import ZeroShotHead, prompt_pair
from cxrprobe.labels import FINDINGS
from cxrprobe.metrics.auc import mean_auc, per_class_auc

NEW = ("tip-adapter-f", "lp++", "zs-lp", "clap")
SEARCHING = ("tip-adapter-f", "lp++")  # of NEW; tip-adapter and gda search too (test_heads.py)


@pytest.fixture(scope="module")
def data(synthetic_cache):
    with FeatureCache(synthetic_cache) as cache:
        X, Y, split = cache.embeddings(), cache.labels, cache.table.split
        text = cache.text_prompts()
    support = draw_support(Y, split, 4, seed=0).rows
    validation = draw_support(Y, split, 4, seed=0, pool_split="val").rows
    test = np.flatnonzero(split == "test")
    return X.astype(np.float64), Y, support, validation, test, text


def fitted(name, data, **params):
    X, Y, support, validation, _, text = data
    head = make_head(name, text, None, random_state=0)
    head.set_params(**params)
    if head.uses_validation:
        return head.fit(X[support], Y[support], X_val=X[validation], Y_val=Y[validation])
    return head.fit(X[support], Y[support])


@pytest.mark.parametrize("name", NEW)
def test_scores_of_a_row_depend_on_that_row_alone(name, data):
    """No statistics over the scored rows: appending or altering other rows changes nothing."""
    X, Y, support, validation, test, text = data
    head = fitted(name, data)
    rows = X[test[:50]]
    alone = head.decision_function(rows)
    rng = np.random.default_rng(0)
    altered = np.concatenate([rows, rng.normal(size=(300, X.shape[1])) * 10])
    altered[:50][::2] = rng.normal(size=(25, X.shape[1]))  # every other original row replaced
    again = head.decision_function(altered)
    tolerance = 1e-5 * max(1.0, float(np.abs(alone).max()))  # float32, whatever the logit scale
    assert np.allclose(again[1:50:2], alone[1::2], rtol=1e-5, atol=tolerance)
    assert np.allclose(head.decision_function(rows[::-1])[::-1], alone, rtol=1e-5, atol=tolerance)


@pytest.mark.parametrize("name", NEW)
def test_defaults_are_validation_free_and_fixed_length(name, data):
    head = HEADS[name]()
    assert not head.uses_validation
    assert make_head(name, data[5], None, random_state=0, search=True).uses_validation == (name in SEARCHING)


@pytest.mark.parametrize("name", SEARCHING)
def test_search_needs_a_validation_set(name, data):
    X, Y, support, _, _, text = data
    with pytest.raises(ValueError, match="needs a validation set"):
        make_head(name, text, None, random_state=0, search=True).fit(X[support], Y[support])


# --- lp++ ---


def test_lp_plus_plus_step_sizes_equal_their_formulas(data):
    X, Y, support, _, _, text = data
    head = LpPlusPlusHead(text=text, epochs=0).fit(X[support], Y[support])
    Z = l2_normalise(X[support])
    n = len(Z)
    assert head.lr_w_ == pytest.approx(4 * n / np.linalg.eigvalsh(Z.T @ Z).max(), rel=1e-6)  # float32 inputs
    positives, negatives = prompt_pair(text)
    u = positives - negatives
    assert np.allclose(head.lr_alpha_, 4 * n / ((Z @ u.T) ** 2).sum(axis=0), rtol=1e-5)


def test_lp_plus_plus_starts_at_the_mean_difference_and_takes_gradient_steps(data):
    """Epoch 0 is the hand-written init; epoch 1 is one gradient step on the summed per-finding
    mean BCE, done in d dimensions here (the head works on the Gram matrix)."""
    X, Y, support, _, _, text = data
    Z, Ys = l2_normalise(X[support]), Y[support].astype(np.float64)
    u = np.subtract(*prompt_pair(text))
    positive = Ys == 1
    w0 = (Z.T @ Ys) / positive.sum(0) - (Z.T @ (1 - Ys)) / (~positive).sum(0)
    t_pos, t_neg = prompt_pair(text)
    own = [[Z[i] @ (t_pos[c] if positive[i, c] else t_neg[c]) for c in range(14)] for i in range(len(Z))]
    alpha0 = 250 * np.mean(own)  # each image's cosine to its own class's prompt
    assert 250 * np.abs(Z @ u.T).mean() < alpha0 / 5  # the old proposal was far weaker
    head0 = LpPlusPlusHead(text=text, epochs=0).fit(X[support], Ys)
    assert np.allclose(head0.coef_, w0 + u.T * alpha0, atol=1e-6) and not head0.intercept_.any()

    head1 = LpPlusPlusHead(text=text, epochs=1).fit(X[support], Ys)
    logits = Z @ w0 + alpha0 * (Z @ u.T)
    residual = (1 / (1 + np.exp(-logits)) - Ys) / len(Z)
    w1, b1 = w0 - head1.lr_w_ * Z.T @ residual, -head1.lr_w_ * residual.sum(0)
    assert np.allclose(head1.coef_, w1 + u.T * alpha0, atol=1e-4)
    assert np.allclose(head1.intercept_, b1, atol=1e-5)
    ablation = LpPlusPlusHead(text=text, epochs=0, alpha_rule="abs-margin").fit(X[support], Ys)
    assert np.allclose(ablation.alpha_, 250 * np.abs(Z @ u.T).mean())


def test_lp_plus_plus_search_picks_the_best_checkpoint_on_validation(data):
    X, Y, support, validation, _, text = data
    head = LpPlusPlusHead(text=text, epochs=60, search=True).fit(X[support], Y[support], X_val=X[validation],
                                                                Y_val=Y[validation])
    checkpoints = range(10, 61, 10)
    assert head.epoch_ in checkpoints

    def val_auc(epochs):
        model = LpPlusPlusHead(text=text, epochs=epochs).fit(X[support], Y[support])
        return mean_auc(per_class_auc(Y[validation], model.decision_function(X[validation])))

    aucs = {e: val_auc(e) for e in checkpoints}
    assert head.epoch_ == max(checkpoints, key=lambda e: (aucs[e], -e))
    same = LpPlusPlusHead(text=text, epochs=head.epoch_).fit(X[support], Y[support])
    assert np.allclose(head.coef_, same.coef_) and np.allclose(head.intercept_, same.intercept_)


# --- zs-lp and clap ---


def test_zs_lp_at_zero_epochs_is_the_zero_shot_ranking(data):
    X, Y, support, _, test, text = data
    zero_shot = ZeroShotHead(text=text).decision_function(X[test])
    head = ZsLpHead(text=text, epochs=0).fit(X[support], Y[support])
    scores = head.decision_function(X[test])
    assert np.allclose(scores, text.logit_scale * zero_shot, rtol=1e-4, atol=1e-4)
    assert np.array_equal(per_class_auc(Y[test], scores), per_class_auc(Y[test], zero_shot))


def test_zs_lp_follows_sgd_on_the_prototypes_in_full_dimension(data):
    """The Gram-matrix loop against torch's SGD (momentum 0.9) and cosine schedule on the raw
    [28, d] prototypes: the same iterates."""
    X, Y, support, _, _, text = data
    epochs = 25
    head = ZsLpHead(text=text, epochs=epochs).fit(X[support], Y[support])
    T = np.concatenate(prompt_pair(text, unit=False))
    W = torch.tensor(T, requires_grad=True)
    Z, targets = torch.tensor(l2_normalise(X[support])), torch.tensor(Y[support], dtype=torch.float64)
    optimiser = torch.optim.SGD([W], lr=0.1, momentum=0.9)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, epochs)
    for _ in range(epochs):
        cosine = Z @ (W / W.norm(dim=1, keepdim=True)).T
        logits = text.logit_scale * (cosine[:, :14] - cosine[:, 14:])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(0).sum()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
    reference = l2_normalise(W.detach().numpy())
    assert np.abs(head.prototypes_ - reference).max() < 1e-4


def test_clap_has_one_multiplier_per_prototype_the_zero_shot_support_performance(data):
    """lambda+ = mean zero-shot probability of the positives, lambda- = mean (1 - p) of the
    negatives: CLAP's per-class multiplier, reduced to a finding's two classes."""
    X, Y, support, _, _, text = data
    head = ClapHead(text=text, epochs=0).fit(X[support], Y[support])
    z = text.logit_scale * ZeroShotHead(text=text).decision_function(X[support])
    p = 1 / (1 + np.exp(-z))
    positive = Y[support] == 1
    plus = [p[positive[:, c], c].mean() for c in range(len(FINDINGS))]
    minus = [(1 - p[~positive[:, c], c]).mean() for c in range(len(FINDINGS))]
    assert np.allclose(head.lambda_, [plus, minus], atol=1e-6)
    assert not np.allclose(head.lambda_[0], head.lambda_[1])


def test_clap_with_a_huge_penalty_stays_at_the_text_prototypes(data):
    X, Y, support, _, test, text = data
    free = ZsLpHead(text=text).fit(X[support], Y[support])
    held = ClapHead(text=text, penalty_scale=1e6).fit(X[support], Y[support])
    prompts = np.concatenate(prompt_pair(text))
    pulled = held.lambda_.reshape(-1) > 1e-3  # a prototype zero-shot gets all wrong is free to move
    assert pulled.sum() > 20 and np.abs(held.prototypes_ - prompts)[pulled].max() < 1e-3
    assert np.abs(free.prototypes_ - prompts).max() > 0.05  # without the penalty they move
    # the default penalty sits in between
    default = ClapHead(text=text).fit(X[support], Y[support])
    moved = np.linalg.norm(default.prototypes_ - prompts, axis=1).mean()
    assert 1e-3 < moved < np.linalg.norm(free.prototypes_ - prompts, axis=1).mean()


# --- tip-adapter-f ---


def test_tip_adapter_f_at_zero_epochs_ranks_as_tip_adapter_on_scaled_logits(data):
    """Zero epochs: tau zeroshot + tau alpha (summed cache), tau times tip-adapter's default scores."""
    X, Y, support, _, test, text = data
    tip = TipAdapterHead(text=text).fit(X[support], Y[support]).decision_function(X[test])
    tip_f = TipAdapterFHead(text=text, epochs=0).fit(X[support], Y[support]).decision_function(X[test])
    assert np.allclose(tip_f, text.logit_scale * tip, rtol=1e-5, atol=1e-3)
    assert np.array_equal(per_class_auc(Y[test], tip_f), per_class_auc(Y[test], tip))


def test_adamw_step_is_torchs():
    rng = np.random.default_rng(0)
    param = rng.normal(size=(4, 6)).astype(np.float32)
    reference = torch.tensor(param.copy(), requires_grad=True)
    optimiser = torch.optim.AdamW([reference], lr=1e-3, eps=1e-4, weight_decay=0.01)
    state = {}
    for step in range(4):
        grad = (rng.normal(size=param.shape) * 10.0**-step).astype(np.float32)
        reference.grad = torch.tensor(grad.copy())
        optimiser.step()
        adamw_step(param, grad, state, 1e-3, 1e-4, 0.01)
    assert np.allclose(param, reference.detach().numpy(), rtol=0, atol=1e-7)


def test_tip_adapter_f_trains_the_keys_like_torch_autograd(data):
    """Hand-written BCE gradient of the keys plus AdamW and the cosine schedule, against torch."""
    X, Y, support, _, _, text = data
    epochs = 5
    head = TipAdapterFHead(text=text, epochs=epochs, lr=1e-2).fit(X[support], Y[support])
    base = TipAdapterHead(text=text).fit(X[support], Y[support])
    Z = torch.tensor(base.keys_)
    keys = torch.tensor(base.keys_.copy(), requires_grad=True)
    zero_shot = torch.tensor(text.logit_scale * base.zero_shot_.decision_from(base.keys_))
    values, targets = torch.tensor(base.values_), torch.tensor(Y[support], dtype=torch.float32)
    optimiser = torch.optim.AdamW([keys], lr=1e-2, eps=1e-4, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, epochs)
    for _ in range(epochs):
        logits = zero_shot + text.logit_scale * torch.exp(Z @ keys.T - 1) @ values
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(0).sum()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
    # float32 on logits 100 times larger than the cosines: agreement to 1e-4, moves of 1e-2
    assert np.allclose(head.keys_, keys.detach().numpy(), atol=1e-4)
    assert np.abs(head.keys_ - base.keys_).max() > 1e-2  # the keys did move
    final = zero_shot + text.logit_scale * torch.exp(Z @ keys.detach().T - 1) @ values
    assert final.abs().max() > 1.0  # BCE out of its linear regime (|z| < 0.25 on unscaled cosines)
    assert np.allclose(cosine_rates(1e-2, epochs), [1e-2 * (1 + np.cos(np.pi * t / epochs)) / 2 for t in range(epochs)])


def test_tip_adapter_f_search_picks_alpha_beta_on_validation(data):
    X, Y, support, validation, _, text = data
    head = TipAdapterFHead(text=text, epochs=6, lr=1e-2, search=True).fit(
        X[support], Y[support], X_val=X[validation], Y_val=Y[validation])
    alphas = ALPHA_GRID + tuple(text.logit_scale * a for a in ALPHA_GRID)  # the official grid, and in tau units
    assert 1 <= head.epoch_ <= 6 and head.alpha_ in alphas and head.beta_ in BETA_GRID

    def val_auc(alpha, beta):
        model = copy.deepcopy(head)
        model.alpha_, model.beta_ = alpha, beta
        return mean_auc(per_class_auc(Y[validation], model.decision_function(X[validation])))

    sampled = {(a, b): val_auc(a, b) for a in alphas[::4] for b in BETA_GRID[::20]}
    assert val_auc(head.alpha_, head.beta_) >= max(sampled.values()) - 1e-12
    default = TipAdapterFHead(text=text, epochs=6, lr=1e-2).fit(X[support], Y[support])
    assert (default.epoch_, default.alpha_, default.beta_) == (6, text.logit_scale, 1.0)


@pytest.mark.parametrize("m", [20, 90])  # fewer rows than the 64 dimensions (G formed) and more (through R)
def test_gram_products_are_products_with_the_gram_matrix(m):
    from cxrprobe.heads.adapter_fit import GramProducts

    rng = np.random.default_rng(m)
    rows = rng.normal(size=(m, 64))
    products = GramProducts(rows)
    assert (products.dense is None) == (m > 64)
    G = rows @ rows.T
    for k in (m, m // 2):
        P = rng.normal(size=(5, k)).astype(np.float32)
        assert np.allclose(products(P), P @ G[:k], rtol=1e-4, atol=1e-3)
    assert np.isclose(np.linalg.eigvalsh(products.smaller)[-1], np.linalg.eigvalsh(G)[-1])


@pytest.mark.parametrize("name", ("lp++", "clap"))
def test_more_rows_than_dimensions_train_as_with_the_gram_matrix(name, data, monkeypatch):
    """The full-data fit (``all`` shots) goes through the features, not the N x N Gram matrix:
    the same head up to float32 rounding."""
    from cxrprobe.heads import adapter_fit

    X, Y, _, _, test, text = data
    rows = np.setdiff1d(np.arange(len(X)), test)[:200]  # 200 rows > 64 dimensions
    through_features = make_head(name, text, None, random_state=0).fit(X[rows], Y[rows]).decision_function(X[test])

    def formed(self, rows):
        rows = np.asarray(rows, dtype=np.float64)
        self.smaller, self.rows = rows.T @ rows, None
        self.dense = (rows @ rows.T).astype(np.float32)

    monkeypatch.setattr(adapter_fit.GramProducts, "__init__", formed)
    with_gram = make_head(name, text, None, random_state=0).fit(X[rows], Y[rows]).decision_function(X[test])
    assert np.allclose(through_features, with_gram, rtol=1e-4, atol=1e-4 * np.abs(with_gram).max())
