"""edge_dropout, node_dropout, gcn_normalize: statistics, edges, transforms, and semantics
against explicit-mask and dense numpy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dropjax
from tests.reference import keep_ref, sigma_bound


def random_graph(num_nodes, num_edges, seed=0):
    """A random directed multigraph (duplicates and self loops allowed), int32 edge lists."""
    rng = np.random.default_rng(seed)
    senders = rng.integers(0, num_nodes, num_edges).astype(np.int32)
    receivers = rng.integers(0, num_nodes, num_edges).astype(np.int32)
    weight = rng.uniform(0.5, 2.0, num_edges).astype(np.float32)
    return jnp.asarray(senders), jnp.asarray(receivers), jnp.asarray(weight)


def dense_gcn(senders, receivers, num_nodes, weight, add_self_loops=True):
    """D^-1/2 (A + I) D^-1/2 in float64 with A[r, s] = summed weight of edges s -> r."""
    a = np.zeros((num_nodes, num_nodes))
    np.add.at(a, (np.asarray(receivers), np.asarray(senders)), np.asarray(weight, np.float64))
    if add_self_loops:
        a += np.eye(num_nodes)
    d = a.sum(1)
    inv = np.where(d > 0, 1.0 / np.sqrt(np.where(d > 0, d, 1.0)), 0.0)
    return inv[:, None] * a * inv[None, :]


def to_dense(g, num_nodes):
    m = np.zeros((num_nodes, num_nodes))
    np.add.at(m, (np.asarray(g.receivers), np.asarray(g.senders)), np.asarray(g.weight, np.float64))
    return m


# ------------------------------------------------------------------ statistics


@pytest.mark.parametrize("rate", [0.05, 0.5, 0.9])
def test_kept_fractions(rate):
    n = 100_000
    s = r = jnp.zeros(n, jnp.int32)
    out = dropjax.edge_dropout(jax.random.key(1), s, r, rate, rescale=True)
    keep = np.asarray(out.keep)
    assert abs(keep.mean() - (1 - rate)) < sigma_bound(n, 1 - rate)
    # Rescaled weights are 0 or 1/(1-p): mean 1, standard deviation sqrt(p/(1-p)).
    assert abs(np.asarray(out.weight).mean() - 1.0) < 4 * np.sqrt(rate / (1 - rate) / n)
    nodes = dropjax.node_dropout(jax.random.key(2), jnp.ones((n, 2)), rate)
    node_keep = np.asarray(nodes.node_keep)
    assert abs(node_keep.mean() - (1 - rate)) < sigma_bound(n, 1 - rate)
    assert abs(np.asarray(nodes.x).mean() - 1.0) < 4 * np.sqrt(rate / (1 - rate) / n)
    # Neighbouring entries are independent: P(both kept) = (1 - rate)^2.
    both = (keep[1:] & keep[:-1]).mean()
    assert abs(both - (1 - rate) ** 2) < 2 * sigma_bound(n - 1, (1 - rate) ** 2)


# ------------------------------------------------------------------ semantics


@pytest.mark.parametrize("rate", [0.2, 0.7])
@pytest.mark.parametrize("rescale", [False, True])
def test_edge_dropout_equals_explicit_mask_reference(rate, rescale):
    senders, receivers, weight = random_graph(30, 200)
    key = jax.random.key(3)
    keep = keep_ref(key, (200,), rate)
    scale = 1.0 / np.float32(1 - rate) if rescale else 1.0
    out = dropjax.edge_dropout(key, senders, receivers, rate, edge_weight=weight, rescale=rescale)
    np.testing.assert_array_equal(out.keep, keep)
    np.testing.assert_allclose(out.weight, np.where(keep, np.asarray(weight) * scale, 0), rtol=1e-6)
    plain = dropjax.edge_dropout(key, senders, receivers, rate, rescale=rescale)
    np.testing.assert_allclose(plain.weight, np.where(keep, scale, 0.0), rtol=1e-6)
    assert plain.weight.dtype == jnp.float32


@pytest.mark.parametrize("rescale", [False, True])
def test_node_dropout_equals_explicit_mask_reference(rescale):
    senders, receivers, _ = random_graph(40, 300, seed=1)
    x = jnp.asarray(np.random.default_rng(2).standard_normal((40, 3, 2), np.float32))
    key, rate = jax.random.key(4), 0.4
    keep = keep_ref(key, (40,), rate)
    scale = 1.0 / np.float32(1 - rate) if rescale else 1.0
    out = dropjax.node_dropout(key, x, rate, senders=senders, receivers=receivers, rescale=rescale)
    np.testing.assert_array_equal(out.node_keep, keep)
    np.testing.assert_allclose(out.x, np.where(keep[:, None, None], np.asarray(x) * scale, 0))
    expected_edges = keep[np.asarray(senders)] & keep[np.asarray(receivers)]
    np.testing.assert_array_equal(out.edge_keep, expected_edges)
    assert dropjax.node_dropout(key, x, rate).edge_keep is None


def test_gcn_normalize_matches_dense_reference():
    n = 25
    senders, receivers, weight = random_graph(n, 120, seed=5)
    for add_self_loops in (True, False):
        g = dropjax.gcn_normalize(senders, receivers, n, weight, add_self_loops=add_self_loops)
        expected = dense_gcn(senders, receivers, n, weight, add_self_loops)
        np.testing.assert_allclose(to_dense(g, n), expected, rtol=1e-5, atol=1e-7)
        assert np.isfinite(np.asarray(g.weight)).all()
    g = dropjax.gcn_normalize(senders, receivers, n)
    assert g.senders.shape == (120 + n,) and g.weight.dtype == jnp.float32
    np.testing.assert_array_equal(g.senders[120:], np.arange(n))
    np.testing.assert_array_equal(g.receivers[120:], np.arange(n))
    expected = dense_gcn(senders, receivers, n, np.ones(120))
    np.testing.assert_allclose(to_dense(g, n), expected, rtol=1e-5, atol=1e-7)
    # The GCN propagation it is made for: segment_sum(w * h[s], r) == D^-1/2 (A+I) D^-1/2 h.
    h = np.random.default_rng(6).standard_normal((n, 4)).astype(np.float32)
    agg = jax.ops.segment_sum(g.weight[:, None] * h[g.senders], g.receivers, num_segments=n)
    np.testing.assert_allclose(agg, expected @ h, rtol=1e-4, atol=1e-5)


def test_gcn_after_edge_dropout_equals_graph_without_dropped_edges():
    n = 20
    senders, receivers, weight = random_graph(n, 100, seed=7)
    dropped = dropjax.edge_dropout(jax.random.key(8), senders, receivers, 0.5, edge_weight=weight)
    g = jax.jit(dropjax.gcn_normalize, static_argnums=2)(senders, receivers, n, dropped.weight)
    kept = np.asarray(dropped.keep)
    assert 0 < kept.sum() < kept.size
    expected = dense_gcn(
        np.asarray(senders)[kept], np.asarray(receivers)[kept], n, np.asarray(weight)[kept]
    )
    np.testing.assert_allclose(to_dense(g, n), expected, rtol=1e-5, atol=1e-7)
    assert (np.asarray(g.weight)[:100][~kept] == 0).all()


# ------------------------------------------------------------------ edges


def test_rate_zero_needs_no_key_and_changes_nothing():
    senders, receivers, weight = random_graph(10, 30)
    out = dropjax.edge_dropout(None, senders, receivers, 0.0, edge_weight=weight, rescale=True)
    assert bool(out.keep.all())
    np.testing.assert_array_equal(out.weight, weight)
    x = jnp.ones((10, 2))
    nodes = dropjax.node_dropout(None, x, 0.0, senders=senders, receivers=receivers)
    assert nodes.x is x and bool(nodes.node_keep.all()) and bool(nodes.edge_keep.all())


@pytest.mark.parametrize("traced", [False, True])
def test_rate_one_drops_everything_with_finite_zero_gradient(traced):
    senders, receivers, weight = random_graph(10, 30)
    key = jax.random.key(0)
    x = jnp.ones((10, 2))

    def loss(w, x, rate):
        e = dropjax.edge_dropout(key, senders, receivers, rate, edge_weight=w, rescale=True)
        v = dropjax.node_dropout(key, x, rate, senders=senders, receivers=receivers)
        return e.weight.sum() + v.x.sum() + v.edge_keep.sum().astype(jnp.float32)

    grad = jax.grad(loss, argnums=(0, 1))
    if traced:
        grad = jax.jit(grad)
        value = jax.jit(loss)(weight, x, 1.0)
    else:
        value = loss(weight, x, 1.0)
    assert float(value) == 0.0
    for g in grad(weight, x, 1.0):
        assert np.isfinite(np.asarray(g)).all() and (np.asarray(g) == 0).all()


def test_isolated_nodes_have_zero_not_nan_weights():
    # Node 2 has no edges and no self loop: degree 0.
    g = dropjax.gcn_normalize(jnp.array([0, 1]), jnp.array([1, 0]), 3, add_self_loops=False)
    np.testing.assert_array_equal(g.weight, [1.0, 1.0])
    w = jnp.zeros(2)  # every edge dropped
    g = dropjax.gcn_normalize(jnp.array([0, 1]), jnp.array([1, 0]), 3, w, add_self_loops=False)
    np.testing.assert_array_equal(g.weight, [0.0, 0.0])
    grad = jax.grad(
        lambda w: dropjax.gcn_normalize(
            jnp.array([0, 1]), jnp.array([1, 0]), 3, w, add_self_loops=False
        ).weight.sum()
    )(w)
    assert np.isfinite(np.asarray(grad)).all()


def test_bad_inputs_raise_clear_errors():
    s, r = jnp.array([0, 1, 2]), jnp.array([1, 2, 0])
    key = jax.random.key(0)
    x = jnp.ones((3, 2))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        dropjax.edge_dropout(key, s, r, 1.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        dropjax.node_dropout(key, x, -0.5)
    with pytest.raises(ValueError, match="key=jax.random.key"):
        dropjax.edge_dropout(None, s, r, 0.5)
    with pytest.raises(ValueError, match="key=jax.random.key"):
        dropjax.node_dropout(None, x, 0.5)
    with pytest.raises(ValueError, match="jax.vmap"):
        dropjax.edge_dropout(jax.random.split(key, 2), s, r, 0.5)
    with pytest.raises(ValueError, match="same length"):
        dropjax.edge_dropout(key, s, r[:2], 0.5)
    with pytest.raises(TypeError, match="integer"):
        dropjax.edge_dropout(key, s.astype(jnp.float32), r, 0.5)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        dropjax.edge_dropout(key, s, r, 0.5, edge_weight=jnp.ones(4))
    with pytest.raises(TypeError, match="floating"):
        dropjax.edge_dropout(key, s, r, 0.5, edge_weight=jnp.ones(3, jnp.int32))
    with pytest.raises(ValueError, match="both senders and receivers"):
        dropjax.node_dropout(key, x, 0.5, senders=s)
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        dropjax.node_dropout(key, x, 0.5, senders=s + 1, receivers=r)
    with pytest.raises(TypeError, match="floating"):
        dropjax.node_dropout(key, jnp.ones((3, 2), jnp.int32), 0.5)
    with pytest.raises(TypeError, match="Python int"):
        dropjax.gcn_normalize(s, r, 3.0)
    with pytest.raises(ValueError, match=r"outside \[0, 2\)"):
        dropjax.gcn_normalize(s, r, 2)


# ------------------------------------------------------------------ transforms


def test_jit_equals_eager_and_vmap_equals_loop():
    senders, receivers, weight = random_graph(30, 200, seed=9)
    x = jnp.asarray(np.random.default_rng(3).standard_normal((30, 4), np.float32))

    def f(key, rate):
        e = dropjax.edge_dropout(key, senders, receivers, rate, edge_weight=weight, rescale=True)
        v = dropjax.node_dropout(key, x, rate, senders=senders, receivers=receivers)
        return e.weight, v.x, v.edge_keep

    key = jax.random.key(5)
    for eager, jitted in zip(f(key, 0.3), jax.jit(f)(key, 0.3), strict=True):
        np.testing.assert_array_equal(eager, jitted)
    keys = jax.random.split(jax.random.key(6), 3)
    batched = jax.vmap(f, in_axes=(0, None))(keys, 0.3)
    for i in range(3):
        for b, one in zip(batched, f(keys[i], 0.3), strict=True):
            np.testing.assert_array_equal(b[i], one)


def test_grad_matches_explicit_mask_reference():
    senders, receivers, weight = random_graph(30, 200, seed=10)
    x = jnp.asarray(np.random.default_rng(4).standard_normal((30, 4), np.float32))
    key, rate = jax.random.key(7), 0.4
    node_keep = keep_ref(key, (30,), rate)
    edge_keep = keep_ref(key, (200,), rate)

    def ours(w, x):
        e = dropjax.edge_dropout(key, senders, receivers, rate, edge_weight=w, rescale=True)
        v = dropjax.node_dropout(key, x, rate)
        return (e.weight * v.x[senders, 0]).sum()

    def reference(w, x):
        ew = jnp.where(edge_keep, w / np.float32(1 - rate), 0.0)
        vx = jnp.where(node_keep[:, None], x / np.float32(1 - rate), 0.0)
        return (ew * vx[senders, 0]).sum()

    got = jax.grad(ours, argnums=(0, 1))(weight, x)
    expected = jax.grad(reference, argnums=(0, 1))(weight, x)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-6)


def test_bfloat16_kept():
    senders, receivers, weight = random_graph(10, 30)
    w16 = weight.astype(jnp.bfloat16)
    out = dropjax.edge_dropout(jax.random.key(0), senders, receivers, 0.5, edge_weight=w16)
    assert out.weight.dtype == jnp.bfloat16
    nodes = dropjax.node_dropout(jax.random.key(0), jnp.ones((10, 2), jnp.bfloat16), 0.5)
    assert nodes.x.dtype == jnp.bfloat16
    g = dropjax.gcn_normalize(senders, receivers, 10, w16)
    assert g.weight.dtype == jnp.bfloat16
    expected = dense_gcn(senders, receivers, 10, np.asarray(w16, np.float32))
    np.testing.assert_allclose(to_dense(g, 10), expected, atol=2e-2)
