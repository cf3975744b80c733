"""Tests for the calibration, ranking and recalibration metrics added to dropjax.uncertainty
(adaptive and class-wise ECE, AUPR, FPR@TPR, temperature scaling), each against an
independent numpy / scipy / scikit-learn reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
import scipy.special
from sklearn.metrics import average_precision_score, roc_curve

from dropjax import uncertainty as unc


def dirichlet(rng, shape, alpha=1.0):
    p = rng.dirichlet(np.full(shape[-1], alpha), size=shape[:-1])
    return (p / p.sum(-1, keepdims=True)).astype(np.float32)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def close(a, b, tol=1e-5):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), atol=tol)


# --------------------------------------------------------------------------- calibration


def ace_reference(p, y, num_bins):
    """Equal-mass bins: sort by confidence (stable), np.array_split into num_bins groups."""
    p = p.astype(np.float64)
    conf, correct = p.max(-1), (p.argmax(-1) == y).astype(np.float64)
    order = np.argsort(conf, kind="stable")
    total = 0.0
    for group in np.array_split(order, num_bins):
        if len(group):
            total += len(group) / len(y) * abs(correct[group].mean() - conf[group].mean())
    return total


@pytest.mark.parametrize("n, num_bins", [(200, 15), (203, 7), (10, 4), (5, 9), (1, 1)])
def test_adaptive_ece_matches_array_split_reference(rng, n, num_bins):
    p = dirichlet(rng, (n, 4), alpha=0.5)
    y = rng.integers(0, 4, size=n)
    close(unc.adaptive_calibration_error(p, y, num_bins), ace_reference(p, y, num_bins))


def test_adaptive_ece_ties_and_one_bin(rng):
    # Ties in confidence: the stable sort keeps input order, as the reference.
    p = np.array([[0.7, 0.3]] * 6 + [[0.9, 0.1]] * 4, np.float32)
    y = np.array([0, 1, 0, 1, 1, 0, 0, 0, 0, 1])
    for b in (1, 2, 3, 10):
        close(unc.adaptive_calibration_error(p, y, b), ace_reference(p, y, b))
    # One bin: |accuracy - mean confidence|.
    q = dirichlet(rng, (50, 3))
    z = rng.integers(0, 3, size=50)
    want = abs((q.argmax(-1) == z).mean() - q.max(-1).astype(np.float64).mean())
    close(unc.adaptive_calibration_error(q, z, 1), want)


def classwise_reference(p, y, num_bins):
    p = p.astype(np.float64)
    n, c = p.shape
    total = 0.0
    for k in range(c):
        prob, hit = p[:, k], (y == k).astype(np.float64)
        for b in range(num_bins):
            lo, hi = b / num_bins, (b + 1) / num_bins
            in_bin = (prob > lo) & (prob <= hi)
            if b == 0:
                in_bin |= prob == 0.0
            if in_bin.any():
                total += abs(hit[in_bin].sum() - prob[in_bin].sum()) / n
    return total / c


@pytest.mark.parametrize("num_bins", [1, 5, 15])
def test_classwise_ece_matches_loop(rng, num_bins):
    p = dirichlet(rng, (300, 5), alpha=0.4)
    p[:3] = np.eye(5, dtype=np.float32)[:3]  # exact 0 and 1 probabilities
    y = rng.integers(0, 5, size=300)
    close(unc.classwise_calibration_error(p, y, num_bins), classwise_reference(p, y, num_bins))


def test_classwise_ece_two_classes_hand_case():
    # Binary: both classes see the same gaps, so cwECE = ECE of the positive-class prob.
    p = np.array([[0.25, 0.75], [0.25, 0.75], [0.9, 0.1], [0.9, 0.1]], np.float32)
    y = np.array([1, 0, 0, 0])
    # class 1: bin of 0.75 -> |1 - 1.5| / 4; bin of 0.1 -> |0 - 0.2| / 4 (same for class 0)
    close(unc.classwise_calibration_error(p, y, 10), (0.5 + 0.2) / 4)


# --------------------------------------------------------------------------- ranking


@pytest.mark.parametrize("levels", [None, 3, 12])
def test_aupr_matches_sklearn(rng, levels):
    for n in (40, 257, 257):  # the sizes of the FPR test: eager kernels compile once
        y = rng.integers(0, 2, size=n)
        y[0] = 1
        s = rng.normal(size=n) + y
        if levels is not None:  # heavy ties
            s = np.round(s * levels / 4) / levels
        close(unc.aupr(s.astype(np.float32), y), average_precision_score(y, s), tol=1e-5)


def test_aupr_edges():
    # All positive: AP = 1; a constant score: AP = fraction of positives.
    assert float(unc.aupr(np.array([0.3, 0.1]), np.array([1, 1]))) == pytest.approx(1.0)
    y = np.array([1, 0, 0, 1, 0])
    assert float(unc.aupr(np.zeros(5), y)) == pytest.approx(0.4)
    assert float(unc.aupr(np.zeros(5), y)) == pytest.approx(average_precision_score(y, np.zeros(5)))
    with pytest.raises(ValueError, match="positive label"):
        unc.aupr(np.array([0.1, 0.2]), np.array([0, 0]))


def fpr_reference(s, y, target):
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    return fpr[np.argmax(tpr >= target)]


@pytest.mark.parametrize("target", [0.95, 0.5, 0.8, 1.0, 0.01])
@pytest.mark.parametrize("levels", [None, 4])
def test_fpr_at_tpr_matches_roc_curve(rng, target, levels):
    for n in (40, 257):
        y = rng.integers(0, 2, size=n)
        y[:2] = [0, 1]
        s = rng.normal(size=n) + 1.5 * y
        if levels is not None:
            s = np.round(s * levels) / levels
        got = unc.fpr_at_tpr(s.astype(np.float32), y, tpr=target)
        close(got, fpr_reference(s.astype(np.float32), y, target), tol=1e-6)


def test_fpr_at_tpr_exact_target_and_validation():
    # 20 positives: TPR = 19/20 = 0.95 exactly is enough (>=), not the next point.
    s = np.arange(40, dtype=np.float32)[::-1]
    y = np.zeros(40, int)
    y[[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 30, 35]] = 1
    # the 19th positive is at rank 30, with 12 negatives above it; 20 negatives in all
    assert float(unc.fpr_at_tpr(s, y, 0.95)) == pytest.approx(12 / 20)
    assert float(unc.fpr_at_tpr(s, y, 0.95)) == pytest.approx(fpr_reference(s, y, 0.95))
    with pytest.raises(ValueError, match=r"tpr must be in \(0, 1\]"):
        unc.fpr_at_tpr(s, y, 0.0)
    with pytest.raises(ValueError, match="positive and negative"):
        unc.fpr_at_tpr(s, np.ones(40, int))


# --------------------------------------------------------------------------- temperature


def nll_at(t, z, y):
    z = z.astype(np.float64) / t
    return np.mean(scipy.special.logsumexp(z, axis=-1) - z[np.arange(len(y)), y])


@pytest.mark.parametrize("scale", [0.3, 1.0, 4.0])
def test_temperature_matches_scipy(rng, scale):
    n, c = 500, 6
    true_logits = rng.normal(size=(n, c)) * 2.0
    y = np.array([rng.choice(c, p=scipy.special.softmax(row)) for row in true_logits])
    z = (true_logits * scale).astype(np.float32)  # scale > 1: overconfident
    bounds = (0.05, 20.0)
    t, probs = unc.temperature_scale(z, y, bounds=bounds)
    ref = scipy.optimize.minimize_scalar(
        nll_at, bounds=bounds, args=(z, y), method="bounded", options={"xatol": 1e-9}
    )
    assert float(t) == pytest.approx(ref.x, rel=2e-3)
    assert nll_at(float(t), z, y) <= ref.fun + 1e-6
    close(probs, scipy.special.softmax(z.astype(np.float64) / float(t), axis=-1), tol=1e-5)


def test_temperature_at_bounds_and_jit(rng):
    # Separable data: the NLL keeps falling as T -> 0, so the lower bound is returned.
    z = np.array([[3.0, 0.0], [0.0, 3.0], [2.0, 1.0]], np.float32)
    y = np.array([0, 1, 0])
    t, _ = unc.temperature_scale(z, y, bounds=(0.1, 10.0))
    assert float(t) == pytest.approx(0.1, rel=1e-5)
    # Anti-correlated logits: the best T in range is the upper bound.
    t, probs = unc.temperature_scale(z, 1 - y, bounds=(0.1, 10.0))
    assert float(t) == pytest.approx(10.0, rel=1e-5)
    ref = scipy.optimize.minimize_scalar(
        nll_at, bounds=(0.1, 10.0), args=(z, 1 - y), method="bounded"
    )
    assert ref.x == pytest.approx(10.0, rel=1e-3)
    zz = rng.normal(size=(64, 3)).astype(np.float32) * 3
    yy = rng.integers(0, 3, size=64)
    fit = jax.jit(unc.temperature_scale, static_argnames=("bounds", "num_iters"))
    for got, want in zip(fit(zz, yy), unc.temperature_scale(zz, yy), strict=True):
        close(got, want, tol=1e-6)


def test_temperature_bfloat16_logits_fit_in_float32(rng):
    z = (rng.normal(size=(200, 4)) * 3).astype(np.float32)
    y = rng.integers(0, 4, size=200)
    t32, _ = unc.temperature_scale(z, y)
    t16, p16 = unc.temperature_scale(jnp.asarray(z, jnp.bfloat16), y)
    assert p16.dtype == jnp.bfloat16 and t16.dtype == jnp.float32
    assert float(t16) == pytest.approx(float(t32), rel=2e-2)  # only the input was rounded


def test_temperature_validation():
    z, y = np.zeros((3, 2), np.float32), np.array([0, 1, 0])
    with pytest.raises(ValueError, match="bounds"):
        unc.temperature_scale(z, y, bounds=(1.0, 0.5))
    with pytest.raises(ValueError, match="bounds"):
        unc.temperature_scale(z, y, bounds=(0.0, 2.0))
    with pytest.raises(ValueError, match="num_iters"):
        unc.temperature_scale(z, y, num_iters=0)
    with pytest.raises(ValueError, match=r"shape \(N, C\)"):
        unc.temperature_scale(z[0], y)
    with pytest.raises(ValueError, match="NaN"):
        unc.temperature_scale(np.full((3, 2), np.nan, np.float32), y)
    with pytest.raises(ValueError, match="labels must lie"):
        unc.temperature_scale(z, np.array([0, 2, 0]))


# --------------------------------------------------------------------------- jit, validation


def test_new_metrics_jit_match_eager(rng):
    p = dirichlet(rng, (120, 4))
    y = rng.integers(0, 4, size=120)
    s, b = rng.normal(size=120).astype(np.float32), rng.integers(0, 2, size=120)
    for fn in (unc.adaptive_calibration_error, unc.classwise_calibration_error):
        jitted = jax.jit(fn, static_argnames="num_bins")
        close(jitted(p, y, num_bins=6), fn(p, y, num_bins=6), tol=1e-6)
    close(jax.jit(unc.aupr)(s, b), unc.aupr(s, b), tol=1e-6)
    close(jax.jit(unc.fpr_at_tpr)(s, b, 0.9), unc.fpr_at_tpr(s, b, 0.9), tol=1e-6)
    close(jax.jit(unc.fpr_at_tpr)(s, b, jnp.float32(0.9)), unc.fpr_at_tpr(s, b, 0.9), tol=1e-6)


GOOD = np.array([[0.3, 0.7], [0.5, 0.5]], dtype=np.float32)


@pytest.mark.parametrize("fn", [unc.adaptive_calibration_error, unc.classwise_calibration_error])
def test_binned_validation(fn):
    with pytest.raises(ValueError, match="non-negative"):
        fn(np.array([[-0.1, 1.1]], np.float32), np.array([0]))
    with pytest.raises(ValueError, match="sum to 1"):
        fn(np.array([[2.0, 3.0]], np.float32), np.array([0]))
    with pytest.raises(ValueError, match=r"shape \(N, C\)"):
        fn(GOOD[None], np.array([0, 1]))
    with pytest.raises(ValueError, match=r"labels must lie"):
        fn(GOOD, np.array([0, 2]))
    with pytest.raises(ValueError, match="num_bins"):
        fn(GOOD, np.array([0, 1]), num_bins=0)


@pytest.mark.parametrize("fn", [unc.aupr, unc.fpr_at_tpr])
def test_ranking_validation(fn):
    with pytest.raises(ValueError, match="only 0 and 1"):
        fn(np.array([0.1, 0.2, 0.3]), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="NaN"):
        fn(np.array([0.1, np.nan]), np.array([0, 1]))
    with pytest.raises(ValueError, match="1-D"):
        fn(np.ones((2, 2)), np.ones(2))
