"""dropjax.equinox: the Equinox layers against eqx.nn and the functional ops, attention and the
Monte Carlo helpers against explicit-mask references (numpy masks from tests/reference.py)."""

import jax
import jax.extend.core as jex
import jax.numpy as jnp
import numpy as np
import pytest

eqx = pytest.importorskip("equinox")

import dropjax  # noqa: E402
import dropjax.equinox as djq  # noqa: E402
from tests.reference import extra_key, keep_ref, nested_keep_ref, sigma_bound  # noqa: E402

KEY = jax.random.key(7)


def normal(shape, seed):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


@eqx.filter_jit
def run(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` compiled: one program instead of many small eager ones."""
    return fn(*args, **kwargs)


def call(layer, x, key=KEY, **kwargs):
    return layer(x, key=key, **kwargs)


# ------------------------------------------------------------------ Dropout vs eqx.nn.Dropout


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_statistics_and_scaling_as_equinox(p):
    n = 4096
    x = jnp.ones((n,))
    bound = sigma_bound(n, 1 - p)
    for layer in (djq.Dropout(p), eqx.nn.Dropout(p)):
        y = np.asarray(call(layer, x))
        kept = y != 0
        assert abs(kept.mean() - (1 - p)) < bound, type(layer)
        np.testing.assert_allclose(y[kept], 1 / np.float32(1 - p), rtol=1e-6)


@pytest.mark.parametrize("p", [0.3, 0.7])
def test_dropout_is_the_explicit_mask_reference(p):
    x = normal((6, 9), 1)
    keep = keep_ref(KEY, x.shape, p)
    expected = np.where(keep, np.asarray(x) / np.float32(1 - p), 0)
    np.testing.assert_allclose(call(djq.Dropout(p), x), expected, rtol=1e-6)
    locked = call(djq.Dropout(p, broadcast_dims=(0,)), x)  # one mask over the first axis
    keep = keep_ref(KEY, x.shape, p, (0,))
    expected = np.where(keep, np.asarray(x) / np.float32(1 - p), 0)
    np.testing.assert_allclose(locked, expected, rtol=1e-6)


def test_dropout_inference_edges_and_errors_as_equinox():
    x = normal((9,), 2)
    for cls in (djq.Dropout, eqx.nn.Dropout):
        assert call(cls(0.5, inference=True), x) is x
        assert cls(0.5)(x, inference=True) is x  # the call overrides the field
        assert not np.array_equal(call(cls(0.5, inference=True), x, inference=False), x)
        assert cls(0.0)(x) is x  # a Python 0 needs no key
        with pytest.raises(RuntimeError, match="key"):
            cls(0.5)(x)
        with pytest.raises(RuntimeError, match="key"):
            cls(1.0)(x)
        off = eqx.nn.inference_mode(cls(0.5))
        assert off.inference is True and off(x) is x
    np.testing.assert_array_equal(call(djq.Dropout(1.0), x), np.zeros(9))
    grad = jax.grad(lambda v: call(djq.Dropout(1.0), v).sum())(x)
    np.testing.assert_array_equal(grad, np.zeros(9))  # finite zero, where Equinox's is NaN
    low = call(djq.Dropout(0.5), x.astype(jnp.bfloat16))
    assert low.dtype == jnp.bfloat16
    with pytest.raises(ValueError, match="probability of dropping"):
        djq.Dropout(1.5)
    with pytest.raises(RuntimeError, match="inference_mode"):
        djq.GaussianDropout(0.2)(x)


def test_dropout_under_filter_jit_filter_vmap_and_filter_grad():
    x = normal((9,), 3)
    layer = djq.Dropout(0.4)
    eager = call(layer, x)
    jitted = eqx.filter_jit(lambda m, v, k: m(v, key=k))(layer, x, KEY)
    np.testing.assert_array_equal(jitted, eager)
    keys = jax.random.split(KEY, 5)
    stacked = eqx.filter_vmap(lambda k: layer(x, key=k))(keys)
    np.testing.assert_array_equal(stacked, np.stack([layer(x, key=k) for k in keys]))
    # An array p is traced without recompiling and, as in Equinox, gets no gradient.
    grads = eqx.filter_grad(lambda m: call(m, x).sum())(djq.Dropout(jnp.float32(0.4)))
    assert float(grads.p) == 0.0
    traced = eqx.filter_jit(lambda m: call(m, x))(djq.Dropout(jnp.float32(0.4)))
    np.testing.assert_allclose(traced, eager, rtol=1e-6)


# ------------------------------------------------------------------ layers vs functional ops

LINEAR = eqx.nn.Linear(6, 4, key=jax.random.key(0))
CONV = eqx.nn.Conv2d(2, 3, 3, padding=1, key=jax.random.key(1))
CONCRETE = djq.ConcreteDropout(init_p=0.3, temperature=0.2)
CHW = (2, 6, 6)
CASES = {
    "decoupled": (
        djq.DecoupledDropout(0.3, 0.2, backward="independent"),
        lambda k, x: dropjax.decoupled_dropout(k, x, 0.3, 0.2, backward="independent"),
        (9,),
    ),
    "augmented": (
        djq.AugmentedDropout(0.3, 0.2),
        lambda k, x: dropjax.augmented_dropout(k, x, 0.3, 0.2),
        (9,),
    ),
    "random_rate": (
        djq.RandomRateDropout(0.6),
        lambda k, x: dropjax.random_rate_dropout(k, x, 0.6),
        (9,),
    ),
    "gaussian": (djq.GaussianDropout(0.3), lambda k, x: dropjax.gaussian_dropout(k, x, 0.3), (9,)),
    "alpha": (djq.AlphaDropout(0.3), lambda k, x: dropjax.alpha_dropout(k, x, 0.3), (9,)),
    "spatial": (
        djq.SpatialDropout(0.5),
        lambda k, x: dropjax.spatial_dropout(k, x, 0.5, channel_axis=0, batch_axis=None),
        CHW,
    ),
    "dropblock": (
        djq.DropBlock(0.2, block_size=3),
        lambda k, x: dropjax.dropblock(k, x, 0.2, block_size=3, channel_axis=0, batch_axis=None),
        CHW,
    ),
    "drop_path": (
        djq.DropPath(0.5),
        lambda k, x: dropjax.drop_path(k, x, 0.5, batch_axis=None),
        (9,),
    ),
    "dropconnect": (
        djq.DropConnectLinear(LINEAR, 0.5),
        lambda k, x: dropjax.dropconnect_dense(k, x, LINEAR.weight.T, LINEAR.bias, 0.5),
        (6,),
    ),
    "concrete": (
        CONCRETE,
        lambda k, x: dropjax.concrete_dropout(k, x, CONCRETE.rate_logit, temperature=0.2),
        (9,),
    ),
}


@eqx.filter_jit
def _layer_and_op(layer, op, x, cot, key):
    """Values and input gradients of the layer and of its op, the same key; one program."""
    y, vjp = jax.vjp(lambda v: layer(v, key=key), x)
    y_op, vjp_op = jax.vjp(lambda v: op(key, v), x)
    other = layer(x, key=jax.random.fold_in(key, 1))
    return y, vjp(cot)[0], y_op, vjp_op(cot)[0], other


@pytest.mark.parametrize("name", sorted(CASES))
def test_layer_is_its_functional_op(name):
    layer, op, shape = CASES[name]
    x = normal(shape, 4)
    plain = layer.linear(x) if name == "dropconnect" else x
    y, dx, y_op, dx_op, other = _layer_and_op(layer, op, x, normal(plain.shape, 5), KEY)
    np.testing.assert_allclose(y, y_op, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dx, dx_op, rtol=1e-6, atol=1e-7)  # the backward masks too
    assert not np.allclose(y, plain), "the layer must change its input"
    if name != "drop_path":  # one keep for the whole example: two keys may agree
        assert not np.allclose(other, y), "the key must drive the noise"
    # Inference mode: the identity, or the plain wrapped layer; no key needed.
    np.testing.assert_array_equal(layer(x, inference=True), plain)
    np.testing.assert_array_equal(eqx.nn.inference_mode(layer)(x), plain)
    with pytest.raises(RuntimeError, match="requires a key"):
        layer(x)


@eqx.filter_jit
def _vjp(fn, args, cot):
    """``fn(*args)`` and its VJP at ``cot``, compiled as one program."""
    y, vjp = jax.vjp(fn, *args)
    return y, vjp(cot)


def test_decoupled_layer_is_eq9_on_a_linear_layer():
    p_f, p_b, n_in = 0.4, 0.3, 64
    linear = eqx.nn.Linear(n_in, 5, key=jax.random.key(2))
    layer = djq.DecoupledLayer(linear, p_f, p_b)
    x, delta = normal((n_in,), 6), normal((5,), 7)
    y, (d_layer, d_x) = _vjp(lambda m, v: call(m, v), (layer, x), delta)
    # Explicit masks and Eq. 9 in numpy: the weight gradient uses the backward-masked input.
    w, b, xn, dn = (np.asarray(a) for a in (linear.weight, linear.bias, x, delta))
    eps_f = np.where(keep_ref(KEY, (n_in,), p_f), 1 / np.float32(1 - p_f), 0)
    m_b = nested_keep_ref(KEY, (n_in,), p_f, p_b)
    eps_b = np.where(m_b, 1 / np.float32(1 - p_f) / np.float32(1 - p_b), 0)
    assert (eps_f != 0).sum() > m_b.sum()  # the two masks differ
    np.testing.assert_allclose(y, w @ (xn * eps_f) + b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(d_layer.layer.weight, np.outer(dn, xn * eps_b), rtol=1e-5)
    np.testing.assert_allclose(d_layer.layer.bias, dn, rtol=1e-5)
    np.testing.assert_allclose(d_x, (w.T @ dn) * eps_b, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(layer(x, inference=True), linear(x))


def test_decoupled_layer_on_a_conv_is_decoupled_call():
    dims = (1, 2)  # one mask entry per channel
    layer = djq.DecoupledLayer(CONV, 0.3, 0.2, backward="independent", broadcast_dims=dims)
    x, cot = normal(CHW, 8), normal((3, 6, 6), 9)

    def conv_fn(params, h):  # the convolution in plain lax, NCHW
        out = jax.lax.conv_general_dilated(h[None], params[0], (1, 1), ((1, 1), (1, 1)))
        return out[0] + params[1]

    def reference(params, h):
        return dropjax.decoupled_call(
            KEY, conv_fn, params, h, 0.3, 0.2, backward="independent", broadcast_dims=dims
        )

    y, (d_layer, d_x) = _vjp(lambda m, h: call(m, h), (layer, x), cot)
    y_ref, (d_params, d_x_ref) = _vjp(reference, ((CONV.weight, CONV.bias), x), cot)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d_layer.layer.weight, d_params[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(d_x, d_x_ref, rtol=1e-5, atol=1e-6)
    # Whole channels of the gradient dropped: the independent backward mask, in numpy.
    keep_b = keep_ref(extra_key(KEY), CHW, 0.2, dims)
    assert (np.asarray(d_x)[~keep_b] == 0).all() and (np.asarray(d_x)[keep_b] != 0).all()


def test_concrete_dropout_learns_its_rate_and_regularizer():
    layer = djq.ConcreteDropout(init_p=0.25, weight_regularizer=1e-2, dropout_regularizer=0.1)
    np.testing.assert_allclose(jax.nn.sigmoid(layer.rate_logit), 0.25, rtol=1e-6)
    w = normal((4, 3), 10)
    expected = dropjax.concrete_dropout_regularizer(
        layer.rate_logit, w, weight_regularizer=1e-2, dropout_regularizer=0.1, input_dim=4
    )
    assert float(layer.regularizer(input_dim=4, weight=w)) == float(expected)
    grads = eqx.filter_jit(eqx.filter_grad(lambda m: call(m, normal((64,), 11)).sum()))(layer)
    assert np.isfinite(grads.rate_logit) and float(grads.rate_logit) != 0.0
    with pytest.raises(ValueError, match="init_p"):
        djq.ConcreteDropout(init_p=1.0)


def _dense_op(layer, x, key):
    w, log_alpha = layer.linear.weight, layer.log_alpha()
    return dropjax.variational_dense(key, x, w.T, log_alpha.T, layer.linear.bias)


def _conv_op(layer, x, key):  # Equinox's layout to dropjax's (channels last) and back
    to_kernel = lambda a: jnp.transpose(a, (2, 3, 1, 0))
    conv = layer.conv
    y = dropjax.variational_conv(
        key,
        jnp.moveaxis(x, 0, -1)[None],
        to_kernel(conv.weight),
        to_kernel(layer.log_alpha()),
        conv.bias.reshape(-1),
        padding=((1, 1), (1, 1)),
    )
    return jnp.moveaxis(y[0], -1, 0)


@eqx.filter_jit
def _train_op_eval(layer, op, x, key):
    return layer(x, key=key), op(layer, x, key), layer(x, inference=True)


def test_variational_linear_and_conv_are_their_ops():
    layer = djq.VariationalLinear(LINEAR)
    pruned = jnp.zeros_like(layer.log_sigma2).at[0, :3].set(15.0)  # log_alpha > 3 there
    layer = eqx.tree_at(lambda m: m.log_sigma2, layer, layer.log_sigma2 + pruned)
    x = normal((6,), 12)
    log_alpha = dropjax.variational_log_alpha(LINEAR.weight, layer.log_sigma2)
    np.testing.assert_array_equal(layer.log_alpha(), log_alpha)
    trained, want, evaluated = _train_op_eval(layer, _dense_op, x, KEY)
    np.testing.assert_array_equal(trained, want)
    # Inference: the mean layer with the weights of log_alpha > 3 zeroed, in plain numpy.
    w = np.where(np.asarray(log_alpha) > 3.0, 0, np.asarray(LINEAR.weight))
    n_pruned = int((w == 0).sum())
    assert n_pruned >= 3
    np.testing.assert_allclose(evaluated, w @ x + LINEAR.bias, rtol=1e-5, atol=1e-6)
    assert float(layer.kl()) == float(dropjax.kl_molchanov(log_alpha).sum())

    vconv = djq.VariationalConv(CONV, log_sigma2_init=-4.0)
    trained, want, evaluated = _train_op_eval(vconv, _conv_op, normal(CHW, 13), KEY)
    np.testing.assert_array_equal(trained, want)
    # Inference: Equinox's own convolution with the weights of log_alpha > 3 zeroed.
    kept = jnp.where(vconv.log_alpha() > 3.0, 0.0, CONV.weight)
    assert 0 < int((kept == 0).sum()) < kept.size
    sparse_conv = eqx.tree_at(lambda c: c.weight, CONV, kept)
    np.testing.assert_allclose(evaluated, sparse_conv(normal(CHW, 13)), rtol=1e-5, atol=1e-6)

    model = {"fc": layer, "conv": vconv}
    total = float(dropjax.kl_molchanov(log_alpha).sum() + vconv.kl())
    np.testing.assert_allclose(float(djq.total_kl(model)), total, rtol=1e-6)
    stats = djq.sparsity(model)
    assert stats["layers"]["fc"] == {
        "weights": 24,
        "nonzero": 24 - n_pruned,
        "zero_fraction": n_pruned / 24,
        "compression": 24 / (24 - n_pruned),
    }
    assert stats["total"]["weights"] == 24 + CONV.weight.size
    with pytest.raises(ValueError, match="no variational layer"):
        djq.sparsity({"fc": LINEAR})
    with pytest.raises(ValueError, match="padding_mode"):
        djq.VariationalConv(eqx.nn.Conv2d(2, 3, 3, padding=1, padding_mode="REFLECT", key=KEY))


# ------------------------------------------------------------------ attention


def _attention_ref(module, q_in, kv_in, mask, keep, p):
    """Multi-head attention in numpy: projections, softmax by hand, the explicit keep-mask."""
    w = lambda proj: np.asarray(proj.weight, np.float64)
    heads = module.num_heads
    q = (np.asarray(q_in) @ w(module.query_proj).T).reshape(q_in.shape[0], heads, -1)
    k = (np.asarray(kv_in) @ w(module.key_proj).T).reshape(kv_in.shape[0], heads, -1)
    v = (np.asarray(kv_in) @ w(module.value_proj).T).reshape(kv_in.shape[0], heads, -1)
    logits = np.einsum("thd,shd->hts", q, k) / np.sqrt(q.shape[-1])
    logits = np.where(mask, logits, -1e30)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    if keep is not None:
        weights = np.where(keep, weights / (1 - p), 0)
    out = np.einsum("hts,shd->thd", weights, v).reshape(q_in.shape[0], -1)
    return out @ w(module.output_proj).T


def _shapes(jaxpr):
    """Every intermediate shape of a jaxpr, sub-jaxprs included."""
    for eqn in jaxpr.eqns:
        yield from (tuple(v.aval.shape) for v in eqn.outvars)
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                if isinstance(sub, jex.ClosedJaxpr):
                    yield from _shapes(sub.jaxpr)
                elif isinstance(sub, jex.Jaxpr):
                    yield from _shapes(sub)


@pytest.mark.parametrize("impl", ["xla", "blockwise"])
def test_attention_is_the_explicit_mask_reference(impl):
    t, s, p = 6, 7, 0.3
    module = djq.MultiheadAttention(
        2, 8, dropout_p=p, implementation=impl, block_q=2, block_kv=3, key=jax.random.key(0)
    )
    q_in, kv_in = normal((t, 8), 14), normal((s, 8), 15)
    mask = np.random.default_rng(16).random((t, s)) < 0.8
    keep = keep_ref(KEY, (2, t, s), p)  # (heads, q_seq, kv_seq)
    loss = lambda m, q, kv: call(m, q, key_=kv, value=kv, mask=jnp.asarray(mask))
    got, _ = _vjp(loss, (module, q_in, kv_in), jnp.ones((t, 8)))  # gradients flow too
    want = _attention_ref(module, q_in, kv_in, mask, keep, p)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)
    # The tiled implementation never builds the (q_seq, kv_seq) weights, forward or
    # backward; the xla one does (so the check can fail).
    grad = eqx.filter_grad(lambda m: loss(m, q_in, kv_in).sum())
    jaxpr = eqx.filter_make_jaxpr(grad)(module)[0].jaxpr
    materialised = any(shape[-3:] == (2, t, s) for shape in _shapes(jaxpr))  # heads too
    assert materialised == (impl == "xla")


def test_attention_drop_in_for_equinox_and_function_layouts():
    theirs = eqx.nn.MultiheadAttention(2, 8, dropout_p=0.2, key=jax.random.key(1))
    ours = djq.MultiheadAttention(2, 8, dropout_p=0.2, implementation="xla", key=jax.random.key(1))
    x = normal((5, 8), 17)
    mask = jnp.asarray(np.tril(np.ones((5, 5), bool)))
    np.testing.assert_allclose(
        run(ours, x, x, x, mask, inference=True),
        run(theirs, x, x, x, mask, inference=True),
        atol=1e-6,
    )
    converted = djq.MultiheadAttention.from_equinox(theirs, implementation="xla")
    assert converted.dropout.p == 0.2 and converted.implementation == "xla"
    np.testing.assert_allclose(
        run(converted, x, x, x, mask, key=KEY), run(ours, x, x, x, mask, key=KEY), atol=1e-6
    )
    with pytest.raises(RuntimeError, match="requires a key"):
        ours(x, x, x)
    with pytest.raises(ValueError, match="qk_size == vo_size"):
        djq.MultiheadAttention(2, 8, qk_size=4, vo_size=2, key=KEY)
    # The function on one head (seq, dim), with either Dropout layer.
    q, k = normal((4, 3), 18), normal((6, 3), 19)
    keep = keep_ref(KEY, (1, 4, 6), 0.5)[0]
    logits = np.asarray(q) @ np.asarray(k).T / np.sqrt(3)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    want = np.where(keep, weights / 0.5, 0) @ np.asarray(k)
    attend = djq.dot_product_attention
    for drop in (djq.Dropout(0.5), eqx.nn.Dropout(0.5)):
        got = run(attend, q, k, k, dropout=drop, key=KEY)
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)
    no_drop = run(attend, q, k, k, dropout=drop, key=KEY, inference=True)
    np.testing.assert_allclose(no_drop, weights @ np.asarray(k), rtol=2e-5, atol=2e-5)


# ------------------------------------------------------------------ Monte Carlo


class CNN(eqx.Module):
    conv: eqx.nn.Conv2d
    norm: eqx.nn.BatchNorm
    drop: djq.SpatialDropout
    head: eqx.nn.Linear

    def __init__(self):
        self.conv = CONV  # (2, 4, 4) -> (3, 4, 4)
        self.norm = eqx.nn.BatchNorm(3, "batch", mode="batch")
        self.drop = djq.SpatialDropout(0.5)
        self.head = eqx.nn.Linear(3 * 4 * 4, 2, key=jax.random.key(2))

    def __call__(self, x, state, *, key):
        h, state = self.norm(self.conv(x), state)
        return self.head(self.drop(jax.nn.relu(h), key=key).ravel()), state


@eqx.filter_jit
def _per_example(model, x, state, keys):
    call_one = lambda xi, ki: model(xi, state, key=ki)[0]
    return jax.vmap(call_one, axis_name="batch")(x, keys)


def test_mc_dropout_switches_dropout_on_and_leaves_batchnorm_in_inference():
    model = eqx.nn.inference_mode((CNN(), eqx.nn.Dropout(0.3)))  # evaluation: all off
    mc, mc_eqx = djq.mc_dropout(model)
    assert (mc.drop.inference, mc_eqx.inference, mc.norm.inference) == (False, False, True)
    assert model[0].drop.inference and model[1].inference  # pure: the input is unchanged
    attention = djq.MultiheadAttention(2, 8, dropout_p=0.1, inference=True, key=KEY)
    assert djq.mc_dropout([attention])[0].dropout.inference is False
    assert djq.mc_dropout(LINEAR) is not LINEAR  # no dropout layer: a plain copy


def test_sample_a_cnn_with_batchnorm():
    model, state = eqx.nn.make_with_state(CNN)()
    # Running statistics away from the batch's own: mean 0.7, variance 1.7.
    state = jax.tree.map(lambda a: a + 0.7 if jnp.issubdtype(a.dtype, jnp.floating) else a, state)
    saved = [np.asarray(leaf) for leaf in jax.tree.leaves(state)]
    x = normal((3, 2, 4, 4), 20)

    samples = djq.sample(jax.random.key(3), model, x, 4, state)
    assert samples.shape == (4, 3, 2)
    # The state is read, never written: same values, still valid; the model untouched.
    for before, after in zip(saved, jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(before, after)
    assert model.norm.inference is False and model.drop.inference is False
    # The key rule, against a model switched by hand: BatchNorm on its running statistics.
    by_hand = eqx.tree_at(lambda m: m.norm.inference, model, True)
    keys = jax.random.split(jax.random.key(3), 4)
    for i in range(4):
        want = _per_example(by_hand, x, state, jax.random.split(keys[i], 3))
        np.testing.assert_allclose(samples[i], want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(samples[0], samples[1])  # dropout is on


def test_sample_keys_batch_axis_and_consistent_masks():
    model = djq.Dropout(0.5)  # a model of one layer: model(x, key=k)
    x = normal((3, 8), 21)
    keys = jax.random.split(KEY, 5)
    per_example = djq.sample(KEY, model, x, 5)
    for i in (0, 4):
        ks = jax.random.split(keys[i], 3)
        want = np.stack([model(x[j], key=ks[j]) for j in range(3)])
        np.testing.assert_array_equal(per_example[i], want)
    shared = djq.sample(KEY, model, x, 5, consistent=True)  # one mask per sample, all rows
    keep = keep_ref(keys[2], (8,), 0.5)
    np.testing.assert_allclose(shared[2], np.where(keep, np.asarray(x) / 0.5, 0), rtol=1e-6)
    assert not np.array_equal(shared[2], shared[3])
    whole = djq.sample(KEY, model, x, 5, batch_axis=None)  # the model sees the whole batch
    np.testing.assert_array_equal(whole[3], model(x, key=keys[3]))
