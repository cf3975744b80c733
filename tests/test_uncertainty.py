"""Tests for dropjax.uncertainty against independent numpy/scipy/scikit-learn references."""

import inspect
import math
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from sklearn.metrics import roc_auc_score

from dropjax import uncertainty as unc

T, N, C = 6, 40, 4


def dirichlet(rng, shape, alpha=1.0):
    """Random probability vectors along the last axis, returned as float32."""
    p = rng.dirichlet(np.full(shape[-1], alpha), size=shape[:-1])
    return (p / p.sum(-1, keepdims=True)).astype(np.float32)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def mc(rng):
    return dirichlet(rng, (T, N, C), alpha=0.7)


@pytest.fixture
def probs_labels(rng):
    p = dirichlet(rng, (200, C), alpha=0.5)
    return p, rng.integers(0, C, size=200)


def close(a, b, tol=1e-5):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), atol=tol)


# --------------------------------------------------------------------------- MC classification


def test_entropies_match_scipy(mc):
    p = mc.astype(np.float64)
    ref_total = scipy.stats.entropy(p.mean(0), axis=-1)
    ref_expected = scipy.stats.entropy(p, axis=-1).mean(0)
    close(unc.predictive_entropy(mc), ref_total)
    close(unc.expected_entropy(mc), ref_expected)
    close(unc.mutual_information(mc), np.maximum(ref_total - ref_expected, 0.0))
    assert unc.predictive_entropy(mc).shape == (N,)


def test_mutual_information_hand_cases():
    disagree = jnp.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    assert float(unc.mutual_information(disagree)[0]) == pytest.approx(math.log(2), abs=1e-6)
    assert float(unc.expected_entropy(disagree)[0]) == pytest.approx(0.0, abs=1e-7)
    # identical samples: zero epistemic uncertainty, clipped to be exactly >= 0
    same = jnp.tile(jnp.array([[[0.2, 0.3, 0.5]]]), (5, 1, 1))
    mi = unc.mutual_information(same)
    assert float(mi[0]) >= 0.0
    assert float(mi[0]) == pytest.approx(0.0, abs=1e-6)
    # many rows of identical samples: round-off alone would give tiny negative values
    rows = dirichlet(np.random.default_rng(1), (200, 5))
    mi_rows = np.asarray(unc.mutual_information(np.tile(rows[None], (7, 1, 1))))
    assert np.all(mi_rows >= 0.0) and np.all(mi_rows < 1e-5)
    uniform = jnp.full((3, 1, 4), 0.25)
    assert float(unc.predictive_entropy(uniform)[0]) == pytest.approx(math.log(4), abs=1e-6)


def test_mutual_information_bounds(mc):
    mi = np.asarray(unc.mutual_information(mc))
    assert np.all(mi >= 0.0)
    assert np.all(mi <= np.asarray(unc.predictive_entropy(mc)) + 1e-6)


def test_variation_ratio_matches_vote_count(mc):
    votes = mc.argmax(-1)  # (T, N)
    ref = np.array([1.0 - np.bincount(votes[:, n], minlength=C).max() / T for n in range(N)])
    close(unc.variation_ratio(mc), ref)
    hand = jnp.array([[[0.9, 0.1]], [[0.8, 0.2]], [[0.3, 0.7]], [[0.6, 0.4]]])
    assert float(unc.variation_ratio(hand)[0]) == pytest.approx(0.25)


def test_predictive_variance(mc):
    close(unc.predictive_variance(mc), mc.astype(np.float64).var(axis=0).mean(-1))
    assert float(unc.predictive_variance(jnp.array([[[1.0, 0.0]], [[0.0, 1.0]]]))[0]) == 0.25


# --------------------------------------------------------------------------- regression


def test_regression_moments(rng):
    means = rng.normal(size=(8, 5, 2)).astype(np.float32)
    variances = rng.uniform(0.1, 2.0, size=(8, 5, 2)).astype(np.float32)
    mu, var = unc.regression_moments(means, variances)
    close(mu, means.mean(0))
    close(var, variances.mean(0) + means.var(0))
    mu0, var0 = unc.regression_moments(means)
    close(mu0, means.mean(0))
    close(var0, means.var(0))
    mu1, var1 = unc.regression_moments(jnp.array([1.0, 3.0]), jnp.array([0.5, 1.5]))
    assert (float(mu1), float(var1)) == (2.0, 2.0)


def test_gaussian_nll_matches_scipy(rng):
    mean = rng.normal(size=30).astype(np.float32)
    var = rng.uniform(0.2, 3.0, size=30).astype(np.float32)
    y = rng.normal(size=30).astype(np.float32)
    ref = -scipy.stats.norm.logpdf(y, loc=mean, scale=np.sqrt(var.astype(np.float64))).mean()
    close(unc.gaussian_nll(mean, var, y), ref)
    # broadcasting a scalar variance
    ref1 = -scipy.stats.norm.logpdf(y, loc=mean, scale=1.0).mean()
    close(unc.gaussian_nll(mean, 1.0, y), ref1)


# --------------------------------------------------------------------------- calibration / scoring


def ece_reference(p, y, num_bins):
    """Explicit loop: bin i holds confidences in (i/B, (i+1)/B]."""
    conf, pred = p.max(-1).astype(np.float64), p.argmax(-1)
    correct = (pred == y).astype(np.float64)
    total = 0.0
    for i in range(num_bins):
        lo, hi = i / num_bins, (i + 1) / num_bins
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            total += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    return total


@pytest.mark.parametrize("num_bins", [1, 5, 15])
def test_ece_matches_loop(probs_labels, num_bins):
    p, y = probs_labels
    close(unc.expected_calibration_error(p, y, num_bins=num_bins), ece_reference(p, y, num_bins))


def test_ece_hand_cases():
    p = jnp.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    y = jnp.array([0, 0, 0, 1])
    assert float(unc.expected_calibration_error(p, y, num_bins=10)) == pytest.approx(0.1, abs=1e-6)
    # edge rule: confidence 0.5 with B=2 belongs to bin 0 = (0, 0.5], not bin 1
    p2 = jnp.array([[0.5, 0.5], [0.25, 0.75]])
    y2 = jnp.array([0, 0])  # first correct (argmax 0), second wrong
    got = float(unc.expected_calibration_error(p2, y2, num_bins=2))
    assert got == pytest.approx(0.5 * 0.5 + 0.5 * 0.75, abs=1e-6)
    assert got == pytest.approx(ece_reference(np.asarray(p2), np.asarray(y2), 2), abs=1e-6)
    # perfectly confident and correct -> 0; confident and wrong -> 1
    one = jnp.array([[1.0, 0.0]])
    assert float(unc.expected_calibration_error(one, jnp.array([0]))) == 0.0
    assert float(unc.expected_calibration_error(one, jnp.array([1]))) == 1.0


def test_nll_and_brier(probs_labels):
    p, y = probs_labels
    p64 = p.astype(np.float64)
    close(unc.negative_log_likelihood(p, y), -np.log(p64[np.arange(len(y)), y]).mean())
    onehot = np.eye(C)[y]
    close(unc.brier_score(p, y), ((p64 - onehot) ** 2).sum(-1).mean())
    hand = jnp.array([[1.0, 0.0], [0.5, 0.5]])
    assert float(unc.brier_score(hand, jnp.array([0, 1]))) == pytest.approx(0.25)
    assert float(unc.negative_log_likelihood(hand, jnp.array([0, 1]))) == pytest.approx(
        0.5 * math.log(2), abs=1e-6
    )


def test_mc_nll_matches_mean_prediction(mc, rng):
    y = rng.integers(0, C, size=N)
    mean = mc.astype(np.float64).mean(0)
    ref = -np.log(mean[np.arange(N), y]).mean()
    close(unc.mc_negative_log_likelihood(mc, y), ref)
    close(unc.mc_negative_log_likelihood(mc, y), unc.negative_log_likelihood(mean, y), tol=1e-5)
    # a sample putting zero mass on the label does not make the MC NLL infinite
    disagree = jnp.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    assert float(unc.mc_negative_log_likelihood(disagree, jnp.array([0]))) == pytest.approx(
        math.log(2), abs=1e-6
    )


def test_mc_nll_tiny_probabilities_stay_finite():
    tiny = jnp.array([[[1e-30, 1.0]], [[3e-30, 1.0]]], dtype=jnp.float32)
    got = float(unc.mc_negative_log_likelihood(tiny, jnp.array([0])))
    assert got == pytest.approx(-math.log(2e-30), rel=1e-5)


# --------------------------------------------------------------------------- ranking / selective


def test_auroc_matches_sklearn_continuous(rng):
    scores = rng.normal(size=300).astype(np.float32)
    labels = (rng.uniform(size=300) < 1 / (1 + np.exp(-2 * scores))).astype(np.int32)
    close(unc.auroc(scores, labels), roc_auc_score(labels, scores))


@pytest.mark.parametrize("levels", [2, 3, 10])
def test_auroc_many_ties_matches_sklearn(rng, levels):
    scores = rng.integers(0, levels, size=500).astype(np.float32)
    labels = rng.uniform(size=500) < 0.3 + 0.05 * scores
    close(unc.auroc(scores, labels), roc_auc_score(labels, scores))
    close(jax.jit(unc.auroc)(scores, labels), roc_auc_score(labels, scores))


def test_auroc_hand_cases():
    s = jnp.array([0.1, 0.4, 0.4, 0.8])
    assert float(unc.auroc(s, jnp.array([0, 0, 1, 1]))) == pytest.approx(0.875)
    assert float(unc.auroc(s, jnp.array([1, 1, 0, 0]))) == pytest.approx(0.125)
    assert float(unc.auroc(jnp.zeros(4), jnp.array([0, 1, 0, 1]))) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="both positive and negative"):
        unc.auroc(s, jnp.zeros(4, dtype=jnp.int32))


def coverage_reference(conf, correct):
    order = np.argsort(-conf, kind="stable")
    k = np.arange(1, len(conf) + 1)
    return k / len(conf), np.cumsum(correct[order]) / k


def test_accuracy_coverage_and_aurc(rng):
    conf = rng.uniform(size=100).astype(np.float32)
    correct = rng.uniform(size=100) < conf
    cov, acc = unc.accuracy_coverage_curve(conf, correct)
    ref_cov, ref_acc = coverage_reference(conf, correct.astype(np.float64))
    close(cov, ref_cov)
    close(acc, ref_acc)
    assert float(cov[-1]) == 1.0
    assert float(acc[-1]) == pytest.approx(correct.mean())
    close(unc.aurc(conf, correct), np.mean(1.0 - ref_acc))


def test_aurc_hand_cases():
    conf = jnp.array([0.9, 0.6, 0.8])
    correct = jnp.array([1, 0, 0])
    cov, acc = unc.accuracy_coverage_curve(conf, correct)
    close(acc, [1.0, 0.5, 1 / 3])
    assert float(unc.aurc(conf, correct)) == pytest.approx((0 + 0.5 + 2 / 3) / 3, abs=1e-6)
    # a perfect ranking beats the reversed ranking
    ok = jnp.array([True, True, False, False])
    good = float(unc.aurc(jnp.array([4.0, 3.0, 2.0, 1.0]), ok))
    bad = float(unc.aurc(jnp.array([1.0, 2.0, 3.0, 4.0]), ok))
    assert good == pytest.approx((0 + 0 + 1 / 3 + 1 / 2) / 4, abs=1e-6)
    assert bad > good


# --------------------------------------------------------------------------- jit, dtypes


def test_jit_matches_eager(mc, probs_labels, rng):
    p, y = probs_labels
    yt = rng.integers(0, C, size=N)
    conf, correct = p.max(-1), p.argmax(-1) == y
    cases = [
        (unc.predictive_entropy, (mc,), {}),
        (unc.expected_entropy, (mc,), {}),
        (unc.mutual_information, (mc,), {}),
        (unc.variation_ratio, (mc,), {}),
        (unc.predictive_variance, (mc,), {}),
        (unc.negative_log_likelihood, (p, y), {}),
        (unc.brier_score, (p, y), {}),
        (unc.mc_negative_log_likelihood, (mc, yt), {}),
        (unc.auroc, (conf, correct), {}),
        (unc.aurc, (conf, correct), {}),
        (unc.gaussian_nll, (p[:, 0], p[:, 1] + 0.1, p[:, 2]), {}),
    ]
    for fn, args, kwargs in cases:
        close(jax.jit(fn)(*args, **kwargs), fn(*args, **kwargs), tol=1e-6)
    ece = jax.jit(unc.expected_calibration_error, static_argnames="num_bins")
    close(ece(p, y, num_bins=7), unc.expected_calibration_error(p, y, num_bins=7), tol=1e-6)
    for got, want in zip(
        jax.jit(unc.accuracy_coverage_curve)(conf, correct),
        unc.accuracy_coverage_curve(conf, correct),
        strict=True,
    ):
        close(got, want, tol=1e-6)
    means = rng.normal(size=(5, 3)).astype(np.float32)
    for got, want in zip(
        jax.jit(unc.regression_moments)(means, means**2),
        unc.regression_moments(means, means**2),
        strict=True,
    ):
        close(got, want, tol=1e-6)


def test_traced_values_skip_value_checks_but_not_shape_checks():
    bad = jnp.array([[[-0.5, 1.5]]])  # negative, caught eagerly
    with pytest.raises(ValueError, match="non-negative"):
        unc.predictive_entropy(bad)
    out = jax.jit(unc.predictive_variance)(bad)  # traced: no value check, no error
    assert out.shape == (1,)
    with pytest.raises(ValueError, match=r"\(T, N, C\)"):
        jax.jit(unc.predictive_entropy)(jnp.ones((2, 2)) / 2)


def test_accepts_float64_numpy_and_integer_onehot_inputs():
    onehot = np.eye(3, dtype=np.int32)[[0, 1, 2, 1]]
    labels = np.array([0, 1, 2, 0], dtype=np.int64)
    assert float(unc.brier_score(onehot, labels)) == pytest.approx(0.5)
    p64 = np.array([[0.2, 0.8], [0.7, 0.3]], dtype=np.float64)
    assert float(unc.negative_log_likelihood(p64, np.array([1, 0]))) == pytest.approx(
        -np.log([0.8, 0.7]).mean(), abs=1e-6
    )


# --------------------------------------------------------------------------- validation

MC_FNS = [
    unc.predictive_entropy,
    unc.expected_entropy,
    unc.mutual_information,
    unc.variation_ratio,
    unc.predictive_variance,
]
LABELLED_FNS = [unc.expected_calibration_error, unc.negative_log_likelihood, unc.brier_score]
GOOD = np.array([[0.3, 0.7], [0.5, 0.5]], dtype=np.float32)


@pytest.mark.parametrize("fn", MC_FNS)
def test_mc_validation(fn):
    with pytest.raises(ValueError, match="non-negative"):
        fn(np.array([[[-0.1, 1.1]]], np.float32))
    with pytest.raises(ValueError, match="sum to 1"):
        fn(np.array([[[0.3, 0.3]]], np.float32))
    with pytest.raises(ValueError, match=r"shape \(T, N, C\).*got shape \(2, 2\)"):
        fn(GOOD)
    with pytest.raises(ValueError, match="NaN"):
        fn(np.array([[[np.nan, 1.0]]], np.float32))
    with pytest.raises(ValueError, match="empty"):
        fn(np.zeros((0, 2, 2), np.float32))


@pytest.mark.parametrize("fn", LABELLED_FNS)
def test_labelled_validation(fn):
    with pytest.raises(ValueError, match="non-negative"):
        fn(np.array([[-0.1, 1.1]], np.float32), np.array([0]))
    with pytest.raises(ValueError, match="sum to 1"):
        fn(np.array([[2.0, 3.0]], np.float32), np.array([0]))
    with pytest.raises(ValueError, match=r"shape \(N, C\)"):
        fn(GOOD[None], np.array([0, 1]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        fn(GOOD, np.array([0, 2]))
    with pytest.raises(ValueError, match=r"labels must lie"):
        fn(GOOD, np.array([-1, 0]))
    with pytest.raises(ValueError, match=r"labels must have shape \(N,\)"):
        fn(GOOD, np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="integer class indices"):
        fn(GOOD, np.array([0.0, 1.0]))


def test_other_validation():
    with pytest.raises(ValueError, match="labels must lie"):
        unc.mc_negative_log_likelihood(GOOD[None], np.array([0, 5]))
    with pytest.raises(ValueError, match="sum to 1"):
        unc.mc_negative_log_likelihood(GOOD[None] * 2, np.array([0, 1]))
    with pytest.raises(ValueError, match="num_bins"):
        unc.expected_calibration_error(GOOD, np.array([0, 1]), num_bins=0)
    with pytest.raises(ValueError, match="variances must be non-negative"):
        unc.regression_moments(np.ones((2, 3)), -np.ones((2, 3)))
    with pytest.raises(ValueError, match="must equal means shape"):
        unc.regression_moments(np.ones((2, 3)), np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"shape \(T, \.\.\.\)"):
        unc.regression_moments(np.float32(1.0))
    with pytest.raises(ValueError, match="strictly positive"):
        unc.gaussian_nll(np.zeros(3), np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="broadcast"):
        unc.gaussian_nll(np.zeros(3), np.ones(4), np.zeros(3))
    with pytest.raises(ValueError, match="only 0 and 1"):
        unc.auroc(np.array([0.1, 0.2, 0.3]), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="NaN"):
        unc.auroc(np.array([0.1, np.nan]), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"1-D"):
        unc.aurc(np.ones((2, 2)), np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"correct must have shape"):
        unc.accuracy_coverage_curve(np.ones(3), np.ones(4))


# --------------------------------------------------------------------------- plotting and API


@pytest.fixture
def plt():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    yield pyplot
    pyplot.close("all")


def test_reliability_diagram(plt, probs_labels):
    from matplotlib.figure import Figure

    p, y = probs_labels
    fig = unc.reliability_diagram(p, y, num_bins=10)
    assert isinstance(fig, Figure)
    ece = float(unc.expected_calibration_error(p, y, num_bins=10))
    assert f"{ece:.3f}" in fig.axes[0].get_title()
    fig2, ax = plt.subplots()
    assert unc.reliability_diagram(p, y, ax=ax) is fig2
    with pytest.raises(ValueError, match="labels must lie"):
        unc.reliability_diagram(p, y + C)


def test_uncertainty_histogram(plt, rng):
    from matplotlib.figure import Figure

    s_in, s_out = rng.normal(size=200), rng.normal(1.0, size=100)
    fig = unc.uncertainty_histogram(s_in, bins=20)
    assert isinstance(fig, Figure)
    assert len(fig.axes[0].patches) == 20
    fig2 = unc.uncertainty_histogram(s_in, s_out)
    ref = roc_auc_score(np.r_[np.zeros(200), np.ones(100)], np.r_[s_in, s_out])
    assert f"{ref:.3f}" in fig2.axes[0].get_title()
    assert len(fig2.axes[0].patches) == 60


def test_plotting_without_matplotlib_names_extra(monkeypatch, probs_labels):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    p, y = probs_labels
    with pytest.raises(ImportError, match=r"pip install dropjax\[plot\]"):
        unc.reliability_diagram(p, y)
    with pytest.raises(ImportError, match=r"pip install dropjax\[plot\]"):
        unc.uncertainty_histogram(np.ones(3))


def test_public_api():
    public = {
        name
        for name, obj in vars(unc).items()
        if inspect.isfunction(obj) and obj.__module__ == unc.__name__ and not name.startswith("_")
    }
    assert set(unc.__all__) == public
    for name in unc.__all__:
        doc = getattr(unc, name).__doc__
        assert "Examples:" in doc and "Returns:" in doc, name
