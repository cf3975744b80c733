"""Issue 25, item 2: one rule for invalid traced inputs, the output is NaN.

A concrete rate outside [0, 1] raises ValueError; a traced one cannot be checked, so every
public op with a rate gives an all-NaN output for it (1.5, -0.1, NaN), whichever
implementation runs. ``keep_mask`` returns booleans, which cannot be NaN: it keeps nothing
(documented). The ranking metrics of ``dropjax.uncertainty`` give NaN for a NaN score.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

import dropjax
import dropjax.linen as djnn
from dropjax import uncertainty

KEY = jax.random.key(11)
INVALID = [1.5, -0.1, float("nan")]
X2 = jax.random.normal(jax.random.key(1), (4, 6))
X4 = jax.random.normal(jax.random.key(2), (2, 5, 5, 3))
Q = jax.random.normal(jax.random.key(3), (1, 5, 2, 4))  # 5 queries: tiles of 2 pad the last
SENDERS, RECEIVERS = jnp.array([0, 1, 2, 3]), jnp.array([1, 2, 3, 0])


def _dense(params, h):
    return h @ params


def _attention(impl):
    def op(rate):
        return dropjax.dot_product_attention(
            Q, Q, Q, dropout_key=KEY, dropout_rate=rate, implementation=impl, block_q=2, block_kv=2
        )

    return op


# Every public op that takes a (possibly traced) rate; the value returned is its output.
OPS = {
    "dropout": lambda r: dropjax.dropout(KEY, X2, r),
    "dropout_broadcast": lambda r: dropjax.dropout(KEY, X2, r, broadcast_dims=(0,)),
    "decoupled_forward_rate": lambda r: dropjax.decoupled_dropout(KEY, X2, r, 0.1),
    "decoupled_backward_rate": lambda r: dropjax.decoupled_dropout(KEY, X2, 0.2, r),
    "decoupled_independent_backward_rate": lambda r: dropjax.decoupled_dropout(
        KEY, X2, 0.2, r, backward="independent"
    ),
    "forward_dropout": lambda r: dropjax.forward_dropout(KEY, X2, r),
    "backward_dropout": lambda r: dropjax.backward_dropout(KEY, X2, r),
    "augmented_dropout_rate": lambda r: dropjax.augmented_dropout(KEY, X2, r, 1e-4),
    "augmented_dropout_backward_rate": lambda r: dropjax.augmented_dropout(KEY, X2, 0.2, r),
    "decoupled_call_forward_rate": lambda r: dropjax.decoupled_call(
        KEY, _dense, jnp.ones((6, 3)), X2, r, 0.1
    ),
    "decoupled_call_backward_rate": lambda r: dropjax.decoupled_call(
        KEY, _dense, jnp.ones((6, 3)), X2, 0.2, r
    ),
    "random_rate_dropout": lambda r: dropjax.random_rate_dropout(KEY, X2, r),
    "gaussian_dropout": lambda r: dropjax.gaussian_dropout(KEY, X2, r),
    "alpha_dropout": lambda r: dropjax.alpha_dropout(KEY, X2, r),
    "spatial_dropout": lambda r: dropjax.spatial_dropout(KEY, X4, r),
    "dropblock": lambda r: dropjax.dropblock(KEY, X4, r, block_size=3),
    "drop_path": lambda r: dropjax.drop_path(KEY, X2, r),
    "dropconnect": lambda r: dropjax.dropconnect(KEY, X2, r),
    "dropconnect_dense": lambda r: dropjax.dropconnect_dense(KEY, X2, jnp.ones((6, 3)), rate=r),
    "dropconnect_dense_per_example": lambda r: dropjax.dropconnect_dense(
        KEY, X2, jnp.ones((6, 3)), rate=r, per_example=True
    ),
    "edge_dropout": lambda r: dropjax.edge_dropout(KEY, SENDERS, RECEIVERS, r).weight,
    "edge_dropout_rescale": lambda r: (
        dropjax.edge_dropout(KEY, SENDERS, RECEIVERS, r, rescale=True).weight
    ),
    "node_dropout": lambda r: dropjax.node_dropout(KEY, X2, r).x,
    "node_dropout_no_rescale": lambda r: dropjax.node_dropout(KEY, X2, r, rescale=False).x,
    "attention_xla": _attention("xla"),
    "attention_blockwise": _attention("blockwise"),
    "attention_pallas": _attention("pallas"),
    "linen_attention_fn": lambda r: djnn.attention_fn(Q, Q, Q, dropout_rng=KEY, dropout_rate=r),
}


JITTED = {name: jax.jit(op) for name, op in OPS.items()}  # one compilation per op


@pytest.mark.parametrize("rate", INVALID, ids=["1.5", "-0.1", "nan"])
@pytest.mark.parametrize("name", sorted(OPS))
def test_invalid_traced_rate_gives_all_nan(name, rate):
    out = np.asarray(JITTED[name](rate), np.float32)
    assert out.size and np.isnan(out).all(), (name, rate)


@pytest.mark.parametrize("name", sorted(OPS))
def test_valid_traced_rate_is_finite_and_equals_the_concrete_rate(name):
    """The NaN guard is a no-op for valid rates: traced 0.3 gives what concrete 0.3 gives."""
    traced = np.asarray(JITTED[name](0.3), np.float32)
    assert np.isfinite(traced).all()
    np.testing.assert_allclose(traced, np.asarray(OPS[name](0.3), np.float32), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rate", INVALID, ids=["1.5", "-0.1", "nan"])
@pytest.mark.parametrize("name", sorted(OPS))
def test_invalid_concrete_rate_still_raises(name, rate):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        OPS[name](rate)


def test_keep_mask_with_an_invalid_traced_rate_keeps_nothing():
    mask = jax.jit(lambda r: dropjax.keep_mask(KEY, (3, 4), r))
    shared = jax.jit(lambda r: dropjax.keep_mask(KEY, (3, 4), r, broadcast_dims=(0,)))
    for rate in (*INVALID, math.inf, -math.inf):
        assert mask(rate).dtype == jnp.bool_ and not np.asarray(mask(rate)).any(), rate
        assert not np.asarray(shared(rate)).any(), rate
    # Valid traced rates are untouched: 0 keeps all, 0.5 some, 1 none.
    kept = [int(mask(p).sum()) for p in (0.0, 0.5, 1.0)]
    assert kept[0] == 12 and 0 < kept[1] < 12 and kept[2] == 0


@pytest.mark.parametrize("name", ["backward_dropout", "decoupled_backward_rate"])
def test_invalid_traced_backward_rate_also_poisons_the_gradient(name):
    grad = jax.jit(jax.grad(lambda x, r: OPS_X[name](x, r).sum()))(X2, 1.5)
    assert np.isnan(np.asarray(grad)).all()


OPS_X = {
    "backward_dropout": lambda x, r: dropjax.backward_dropout(KEY, x, r),
    "decoupled_backward_rate": lambda x, r: dropjax.decoupled_dropout(KEY, x, 0.2, r),
}


# --------------------------------------------------------------------- ranking metrics

SCORES = jnp.array([0.1, 0.35, 0.4, 0.8, 0.65, 0.2], jnp.float32)
LABELS = jnp.array([0, 1, 0, 1, 1, 0], jnp.int32)


def _fpr_at_tpr_ref(scores, labels, tpr):
    fpr, tprs, _ = roc_curve(labels, scores, drop_intermediate=False)
    return fpr[np.argmax(tprs >= tpr - 1e-12)]


METRICS = {
    "auroc": (uncertainty.auroc, roc_auc_score),
    "aupr": (uncertainty.aupr, average_precision_score),
    "fpr_at_tpr": (
        lambda s, y: uncertainty.fpr_at_tpr(s, y, 0.6),
        lambda y, s: _fpr_at_tpr_ref(np.asarray(s), np.asarray(y), 0.6),
    ),
}


@pytest.mark.parametrize("name", sorted(METRICS))
def test_ranking_metric_under_jit_is_nan_for_a_non_finite_score(name):
    fn, sk = METRICS[name]
    jitted = jax.jit(fn)
    # Valid inputs: scikit-learn's value (the guard does not change valid results).
    np.testing.assert_allclose(float(jitted(SCORES, LABELS)), sk(LABELS, SCORES), rtol=1e-6)
    for bad in (math.nan, math.inf, -math.inf):
        for i in (0, 3):  # a negative and a positive example
            assert math.isnan(float(jitted(SCORES.at[i].set(bad), LABELS))), (name, bad, i)
    # A traced label that is not 0/1 is invalid too.
    assert math.isnan(float(jitted(SCORES, LABELS.at[0].set(2))))
    # Concrete inputs keep raising.
    with pytest.raises(ValueError, match="NaN or infinite"):
        fn(SCORES.at[0].set(math.nan), LABELS)


def test_fpr_at_tpr_with_a_traced_target_outside_its_range_is_nan():
    jitted = jax.jit(uncertainty.fpr_at_tpr)
    for tpr in (1.5, 0.0, -0.2, math.nan):
        assert math.isnan(float(jitted(SCORES, LABELS, tpr))), tpr
    np.testing.assert_allclose(
        float(jitted(SCORES, LABELS, 1.0)), _fpr_at_tpr_ref(SCORES, LABELS, 1.0), rtol=1e-6
    )


def test_selective_metrics_under_jit_are_nan_for_a_non_finite_confidence():
    conf, correct = SCORES, LABELS
    _, acc = jax.jit(uncertainty.accuracy_coverage_curve)(conf.at[2].set(math.nan), correct)
    assert np.isnan(np.asarray(acc)).all()
    assert math.isnan(float(jax.jit(uncertainty.aurc)(conf.at[2].set(math.inf), correct)))
    # Valid: the mean selective risk over coverages, from an explicit sort.
    order = np.argsort(-np.asarray(conf), kind="stable")
    hits = np.cumsum(np.asarray(correct)[order])
    expected = np.mean(1 - hits / np.arange(1, conf.shape[0] + 1))
    np.testing.assert_allclose(float(jax.jit(uncertainty.aurc)(conf, correct)), expected, rtol=1e-6)
