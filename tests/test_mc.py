"""dropjax.mc: the key rule, chunking, jit, pytrees, consistent masks, sharding, Flax."""

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import dropjax
from dropjax import mc
from tests.reference import keep_ref

RATE = 0.5
T = 6  # samples in most tests (one shape, so compiled primitives are reused)
W = jax.random.normal(jax.random.key(100), (6, 3))


def elementwise_fn(k, x):
    """Dropout then elementwise maths: batching cannot change a mask; a value may move by an
    ulp (XLA evaluates tanh in vector or scalar form depending on the program's shapes)."""
    return jnp.tanh(dropjax.dropout(k, x, RATE)) * 2.0


def matmul_fn(k, x):
    return dropjax.dropout(k, x, RATE) @ W


def loop(fn, key, num_samples, *args, **kwargs):
    """The reference: a Python loop over the documented keys."""
    one = jax.jit(lambda k: fn(k, *args, **kwargs))
    keys = jax.random.split(key, num_samples)
    outs = [one(keys[i]) for i in range(num_samples)]
    return jax.tree.map(lambda *leaves: np.stack(leaves), *outs)


def assert_same_masks(a, b):
    """Two programs of different shapes (chunked, jitted, sharded): the same entries dropped,
    bit for bit, and the kept values within 2 float32 ulps of each other: bit equality is
    promised only for the same program on the same shapes."""
    a, b = np.asarray(a), np.asarray(b)
    np.testing.assert_array_equal(a == 0, b == 0)
    np.testing.assert_array_max_ulp(a, b, maxulp=2)


def jit_sample(fn, key, num_samples, *args, **kwargs):
    """``mc.sample`` under ``jax.jit``: one compile instead of many eager primitives."""
    return jax.jit(lambda k, *a: mc.sample(fn, k, num_samples, *a, **kwargs))(key, *args)


@pytest.fixture
def x():
    return jax.random.normal(jax.random.key(1), (4, 6))


# --------------------------------------------------------------------------- key rule


def test_key_rule_against_explicit_masks(x):
    key = jax.random.key(7)
    ys = mc.sample(elementwise_fn, key, T, x)
    keys = jax.random.split(key, T)
    for i in range(T):
        keep = keep_ref(keys[i], x.shape, RATE)
        expected = np.tanh(np.where(keep, np.asarray(x) / np.float32(1 - RATE), 0)) * 2
        np.testing.assert_allclose(ys[i], expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("fn", [elementwise_fn, matmul_fn])
def test_key_rule_against_loop(fn, x):
    key = jax.random.key(3)
    ys = mc.sample(fn, key, T, x)
    np.testing.assert_allclose(ys, loop(fn, key, T, x), rtol=1e-6, atol=1e-6)


def test_samples_differ_and_legacy_key_matches_typed(x):
    ys = np.asarray(mc.sample(elementwise_fn, jax.random.key(0), T, x))
    assert all(not np.array_equal(ys[0], ys[i]) for i in range(1, T))
    legacy = mc.sample(elementwise_fn, jax.random.PRNGKey(0), T, x)
    np.testing.assert_array_equal(legacy, ys)


def test_single_sample(x):
    key = jax.random.key(2)
    ys = jit_sample(elementwise_fn, key, 1, x)
    assert ys.shape == (1, *x.shape)
    assert_same_masks(ys[0], elementwise_fn(jax.random.split(key, 1)[0], x))


# --------------------------------------------------------------------------- chunking / jit


@pytest.mark.parametrize("chunk_size", [1, 2, 4, 5, 6, 100])
def test_chunked_equals_unchunked(chunk_size, x):
    # 4 and 5 do not divide T = 6: the last chunk is padded and the padding sliced off.
    key = jax.random.key(4)
    full = mc.sample(elementwise_fn, key, T, x)
    chunked = mc.sample(elementwise_fn, key, T, x, chunk_size=chunk_size)
    assert chunked.shape == (T, *x.shape)
    assert_same_masks(chunked, full)


def test_chunked_matmul_equals_unchunked(x):
    key = jax.random.key(4)
    np.testing.assert_allclose(
        mc.sample(matmul_fn, key, T, x, chunk_size=4),
        mc.sample(matmul_fn, key, T, x),
        rtol=1e-6,
        atol=1e-6,
    )


def test_chunked_runs_a_loop_of_vmapped_chunks(x):
    jaxpr = jax.make_jaxpr(lambda k, x: mc.sample(elementwise_fn, k, 7, x, chunk_size=3))(
        jax.random.key(0), x
    )
    scans = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "scan"]
    assert len(scans) == 1 and scans[0].params["length"] == 3  # ceil(7 / 3) chunks
    no_chunks = jax.make_jaxpr(lambda k, x: mc.sample(elementwise_fn, k, 7, x))(
        jax.random.key(0), x
    )
    assert not any(e.primitive.name == "scan" for e in no_chunks.jaxpr.eqns)


@pytest.mark.parametrize("chunk_size", [None, 4])
def test_jit_equals_eager(chunk_size, x):
    key = jax.random.key(5)
    eager = mc.sample(elementwise_fn, key, T, x, chunk_size=chunk_size)
    jitted = jax.jit(lambda k, x: mc.sample(elementwise_fn, k, T, x, chunk_size=chunk_size))
    assert_same_masks(jitted(key, x), eager)


def test_static_counts_under_jit(x):
    g = jax.jit(
        lambda k, x, n, c: mc.sample(elementwise_fn, k, n, x, chunk_size=c), static_argnums=(2, 3)
    )
    assert_same_masks(
        g(jax.random.key(5), x, T, 4), mc.sample(elementwise_fn, jax.random.key(5), T, x)
    )


# --------------------------------------------------------------------------- pytrees, args


def test_pytree_outputs_and_arguments(x):
    def fn(k, inputs, scale, *, offset, mode):
        assert mode == "mean"  # a non-array keyword stays a Python value
        h = dropjax.dropout(k, inputs["a"], RATE) * scale + offset
        return {"h": h, "stats": (h.mean(), jnp.int32(3)), "bits": jax.random.bits(k, (2,))}

    key = jax.random.key(6)
    args = ({"a": x},)
    kwargs = {"offset": jnp.float32(1.0), "mode": "mean"}
    ys = mc.sample(fn, key, T, *args, 2.0, chunk_size=4, **kwargs)
    ref = loop(fn, key, T, *args, 2.0, **kwargs)
    assert jax.tree.structure(ys) == jax.tree.structure(ref)
    assert ys["h"].shape == (T, 4, 6) and ys["stats"][0].shape == (T,)
    assert ys["stats"][1].dtype == jnp.int32 and ys["bits"].shape == (T, 2)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), ys, ref)


# --------------------------------------------------------------------------- consistent masks


def test_identical_examples_consistent_vs_per_example():
    row = jax.random.normal(jax.random.key(8), (6,))
    batch = jnp.stack([row, row, row])
    key = jax.random.key(9)
    per_example = np.asarray(mc.sample(matmul_fn, key, T, batch))
    consistent = np.asarray(mc.sample(matmul_fn, key, T, batch, consistent=True))
    for i in range(T):
        np.testing.assert_array_equal(consistent[i, 0], consistent[i, 1])
        np.testing.assert_array_equal(consistent[i, 0], consistent[i, 2])
        assert not np.allclose(per_example[i, 0], per_example[i, 1])
    assert not np.allclose(consistent[0], consistent[1])  # still one mask per sample


def test_consistent_equals_broadcast_mask(x):
    # One mask per sample shared over the batch is dropout with broadcast_dims=(0,).
    key = jax.random.key(10)
    shared = lambda k, x: jnp.tanh(dropjax.dropout(k, x, RATE, broadcast_dims=(0,))) * 2.0
    np.testing.assert_allclose(
        mc.sample(elementwise_fn, key, T, x, consistent=True, chunk_size=4),
        loop(shared, key, T, x),
        rtol=1e-6,
    )


def test_consistent_fn_sees_a_batch_of_one(x):
    shapes = []

    def fn(k, inputs):
        shapes.append(inputs.shape)
        return matmul_fn(k, inputs)

    key = jax.random.key(11)
    ys = mc.sample(fn, key, T, x, consistent=True)
    assert shapes == [(1, 6)]
    keys = jax.random.split(key, T)
    for i in range(T):
        for j in range(x.shape[0]):
            np.testing.assert_allclose(ys[i, j], matmul_fn(keys[i], x[j : j + 1])[0], rtol=1e-6)


def test_consistent_with_axes_per_argument():
    # Time-major input (batch axis 1) and an unbatched weight matrix.
    xt = jax.random.normal(jax.random.key(12), (5, 3, 6))  # (time, batch, features)
    xt = xt.at[:, 1].set(xt[:, 0])
    fn = lambda k, seq, w: jnp.einsum("tbf,fo->tbo", dropjax.dropout(k, seq, RATE), w)
    ys = jit_sample(fn, jax.random.key(13), T, xt, W, consistent=True, batch_axis=(1, None))
    assert ys.shape == (T, 5, 3, 3)
    np.testing.assert_array_equal(ys[:, :, 0], ys[:, :, 1])
    assert not np.allclose(ys[:, :, 0], ys[:, :, 2])


def test_consistent_output_without_batch_axis_raises(x):
    with pytest.raises(ValueError, match="out_batch_axis"):
        mc.sample(lambda k, x: elementwise_fn(k, x).sum(), jax.random.key(0), 2, x, consistent=True)
    with pytest.raises(ValueError, match="one axis .* per arg"):
        mc.sample(matmul_fn, jax.random.key(0), 2, x, consistent=True, batch_axis=(0, None))
    with pytest.raises(ValueError, match="batched positional arg"):
        mc.sample(matmul_fn, jax.random.key(0), 2, x, consistent=True, batch_axis=None)


# --------------------------------------------------------------------------- sample_head

V = jax.random.normal(jax.random.key(101), (6, 8))


def prefix_fn(x):
    return jnp.tanh(x @ V)


def head_fn(k, h):
    return dropjax.dropout(k, h, RATE) @ jnp.ones((8, 2), jnp.float32)


@pytest.mark.parametrize("chunk_size", [None, 4])
def test_sample_head_equals_full_sample(chunk_size, x):
    key = jax.random.key(14)
    full = mc.sample(lambda k, x: head_fn(k, prefix_fn(x)), key, T, x, chunk_size=chunk_size)
    head = mc.sample_head(prefix_fn, head_fn, key, T, x, chunk_size=chunk_size)
    np.testing.assert_allclose(head, full, rtol=1e-6, atol=1e-6)
    consistent = mc.sample_head(prefix_fn, head_fn, key, T, x, consistent=True)
    ref = mc.sample(lambda k, x: head_fn(k, prefix_fn(x)), key, T, x, consistent=True)
    np.testing.assert_allclose(consistent, ref, rtol=1e-6, atol=1e-6)


def test_sample_head_runs_prefix_outside_the_chunk_loop(x):
    def top_level_dots(f):
        jaxpr = jax.make_jaxpr(f)(jax.random.key(0), x)
        return sum(e.primitive.name == "dot_general" for e in jaxpr.jaxpr.eqns)

    head = lambda k, x: mc.sample_head(prefix_fn, head_fn, k, 7, x, chunk_size=3)
    full = lambda k, x: mc.sample(lambda k, x: head_fn(k, prefix_fn(x)), k, 7, x, chunk_size=3)
    assert top_level_dots(head) == 1  # the prefix, once, before the loop over chunks
    assert top_level_dots(full) == 0  # the prefix is inside the loop body


# --------------------------------------------------------------------------- sharding


def test_eight_host_devices():
    assert jax.device_count() == 8


@pytest.mark.parametrize("num_samples,chunk_size", [(16, None), (13, 2)])
def test_sharded_equals_one_device(num_samples, chunk_size, x):
    mesh = jax.make_mesh((8,), ("samples",))
    key = jax.random.key(15)
    ref = mc.sample(elementwise_fn, key, num_samples, x)
    out = mc.sample(elementwise_fn, key, num_samples, x, mesh=mesh, chunk_size=chunk_size)
    assert_same_masks(out, ref)
    if num_samples % 8 == 0:
        assert out.sharding.spec[0] == "samples"
        assert len(out.sharding.device_set) == 8
        shards = out.addressable_shards
        assert len(shards) == 8 and {s.data.shape for s in shards} == {(num_samples // 8, 4, 6)}


@pytest.mark.parametrize("axis_type", [AxisType.Explicit, AxisType.Auto])
def test_sharded_pytree_under_jit_2d_mesh(axis_type, x):
    # Samples over 4 devices, the batch of examples over 2: both kinds of parallelism.
    mesh = jax.make_mesh((4, 2), ("mc", "data"), axis_types=(axis_type, axis_type))
    xs = jax.device_put(x, NamedSharding(mesh, P("data")))
    fn = lambda k, x: {"y": matmul_fn(k, x), "mean": x.mean()}
    key = jax.random.key(16)
    out = jax.jit(lambda k, x: mc.sample(fn, k, 8, x, mesh=mesh, axis_name="mc", chunk_size=1))(
        key, xs
    )
    ref = loop(fn, key, 8, x)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), out, ref)
    assert out["y"].sharding.spec[0] == "mc" and len(out["y"].sharding.device_set) == 8


def test_sharded_input_over_the_sample_axis_is_gathered(x):
    mesh = jax.make_mesh((8,), ("samples",))
    x8 = jnp.concatenate([x, x])  # 8 rows: shardable over the 8 devices
    xs = jax.device_put(x8, NamedSharding(mesh, P("samples")))
    key = jax.random.key(17)
    out = mc.sample(elementwise_fn, key, 8, xs, mesh=mesh, consistent=True)
    ref = mc.sample(elementwise_fn, key, 8, x8, consistent=True)
    assert_same_masks(out, ref)


def test_sharded_bad_axis_raises(x):
    mesh = jax.make_mesh((8,), ("samples",))
    with pytest.raises(ValueError, match="axis_name='batch'"):
        mc.sample(elementwise_fn, jax.random.key(0), 8, x, mesh=mesh, axis_name="batch")
    with pytest.raises(TypeError, match="Mesh"):
        mc.sample(elementwise_fn, jax.random.key(0), 8, x, mesh="samples")


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"num_samples": 0}, ValueError, "num_samples must be >= 1"),
        ({"num_samples": -3}, ValueError, "num_samples must be >= 1"),
        ({"num_samples": 2.0}, TypeError, "num_samples must be a Python int"),
        ({"num_samples": True}, TypeError, "num_samples must be a Python int"),
        ({"chunk_size": 0}, ValueError, "chunk_size must be >= 1"),
        ({"chunk_size": 1.5}, TypeError, "chunk_size must be a Python int"),
        ({"key": 0}, TypeError, "raw integer"),
        ({"key": jax.random.split(jax.random.key(0), 3)}, ValueError, "batch of keys"),
        ({"key": None}, ValueError, "PRNG key"),
        ({"fn": "dropout"}, TypeError, "callable"),
        ({"consistent": 1}, TypeError, "consistent must be True or False"),
    ],
)
def test_validation_errors(kwargs, error, match, x):
    call = {"fn": elementwise_fn, "key": jax.random.key(0), "num_samples": 3} | kwargs
    fn, key, num_samples = call.pop("fn"), call.pop("key"), call.pop("num_samples")
    with pytest.raises(error, match=match):
        mc.sample(fn, key, num_samples, x, **call)


def test_traced_num_samples_names_the_fix(x):
    f = jax.jit(lambda k, n: mc.sample(elementwise_fn, k, n, x))
    with pytest.raises(TypeError, match="static_argnames='num_samples'"):
        f(jax.random.key(0), 3)
    with pytest.raises(TypeError, match="callable prefix_fn"):
        mc.sample_head(None, head_fn, jax.random.key(0), 2, x)
    with pytest.raises(ValueError, match="num_samples must be >= 1"):
        mc.sample_head(prefix_fn, head_fn, jax.random.key(0), 0, x)


# --------------------------------------------------------------------------- Flax linen


class LinenNet(nn.Module):
    @nn.compact
    def __call__(self, x, *, mc_dropout: bool, bn_train: bool = False):
        x = nn.Dense(8)(x)
        x = nn.BatchNorm(use_running_average=not bn_train)(x)
        x = nn.Dropout(0.5, deterministic=not mc_dropout)(nn.relu(x))
        return nn.Dense(3)(x)


@pytest.fixture
def linen_setup(x):
    net = LinenNet()
    variables = net.init(jax.random.key(20), x, mc_dropout=False)
    # Non-trivial running statistics, so eval-mode and train-mode BatchNorm differ.
    stats = variables["batch_stats"]["BatchNorm_0"]
    variables = {
        "params": variables["params"],
        "batch_stats": {
            "BatchNorm_0": {"mean": stats["mean"] + 0.7, "var": stats["var"] * 3.0},
        },
    }
    return net, variables


@pytest.mark.parametrize("chunk_size", [None, 4])
def test_sample_linen_matches_manual_apply(chunk_size, linen_setup, x):
    net, variables = linen_setup
    before = jax.tree.map(np.asarray, variables)
    key = jax.random.key(21)
    ys = mc.sample_linen(net, variables, x, key, T, chunk_size=chunk_size, mc_dropout=True)
    manual = jax.jit(lambda k: net.apply(variables, x, rngs={"dropout": k}, mc_dropout=True))
    for i, k in enumerate(jax.random.split(key, T)):
        np.testing.assert_allclose(ys[i], manual(k), rtol=1e-5, atol=1e-6)
    assert not np.allclose(ys[0], ys[1])
    jax.tree.map(np.testing.assert_array_equal, variables, before)


def test_sample_linen_consistent_and_rng_collection(linen_setup):
    net, variables = linen_setup
    row = jax.random.normal(jax.random.key(22), (6,))
    batch = jnp.stack([row, row])
    key = jax.random.key(23)
    sample = jax.jit(
        lambda k, x, consistent: mc.sample_linen(
            net, variables, x, k, 3, consistent=consistent, mc_dropout=True
        ),
        static_argnums=2,
    )
    ys = sample(key, batch, True)
    np.testing.assert_array_equal(ys[:, 0], ys[:, 1])
    per_example = sample(key, batch, False)
    assert not np.allclose(per_example[:, 0], per_example[:, 1])
    # The model draws from "dropout": another collection name leaves flax without a key.
    with pytest.raises(flax.errors.InvalidRngError, match="dropout"):
        mc.sample_linen(net, variables, batch, key, 2, rng_collection="noise", mc_dropout=True)


def test_sample_linen_never_updates_batch_stats(linen_setup, x):
    net, variables = linen_setup
    # BatchNorm left in training mode would write its statistics: apply is immutable.
    with pytest.raises(flax.errors.ModifyScopeVariableError, match="batch_stats"):
        mc.sample_linen(net, variables, x, jax.random.key(0), 2, mc_dropout=True, bn_train=True)
    with pytest.raises(ValueError, match="never updates"):
        mc.sample_linen(net, variables, x, jax.random.key(0), 2, mc_dropout=True, mutable=True)
    with pytest.raises(ValueError, match="rng_collection"):
        mc.sample_linen(net, variables, x, jax.random.key(0), 2, rngs={"dropout": 0})


# --------------------------------------------------------------------------- Flax NNX


class NnxNet(nnx.Module):
    def __init__(self, rngs):
        self.lin1 = nnx.Linear(6, 8, rngs=rngs)
        self.bn = nnx.BatchNorm(8, rngs=rngs)
        self.drop1 = nnx.Dropout(0.5, rngs=rngs)
        self.lin2 = nnx.Linear(8, 8, rngs=rngs)
        self.drop2 = nnx.Dropout(0.3, rngs=rngs)
        self.out = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x):
        h = self.drop1(nnx.relu(self.bn(self.lin1(x))))
        return self.out(self.drop2(nnx.relu(self.lin2(h))))

    def hidden(self, x):
        return self.drop1(nnx.relu(self.bn(self.lin1(x))))


def make_nnx_net(rngs=None):
    net = NnxNet(rngs or nnx.Rngs(params=0, dropout=1))
    net.bn.mean[...] = net.bn.mean[...] + 0.7
    net.bn.var[...] = net.bn.var[...] * 3.0
    return net


def nnx_manual(net, x, k, method=None):
    copy = nnx.clone(net)
    copy.set_attributes(deterministic=False, use_running_average=True, raise_if_not_found=False)
    nnx.reseed(copy, dropout=k)
    return copy(x) if method is None else getattr(copy, method)(x)


def nnx_snapshot(net):
    def to_numpy(a):
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            a = jax.random.key_data(a)
        return np.asarray(a)

    return jax.tree.map(to_numpy, nnx.state(net))


@pytest.mark.parametrize("chunk_size", [None, 4])
def test_sample_nnx_matches_manual_and_leaves_model_alone(chunk_size, x):
    net = make_nnx_net()  # in training mode: Dropout on, BatchNorm on batch statistics
    before = nnx_snapshot(net)
    key = jax.random.key(30)
    ys = mc.sample_nnx(net, x, key, T, chunk_size=chunk_size)
    keys = jax.random.split(key, T)
    for i in range(T):
        np.testing.assert_allclose(ys[i], nnx_manual(net, x, keys[i]), rtol=1e-5, atol=1e-6)
    assert not np.allclose(ys[0], ys[1])
    # The model's statistics, RNG counters and modes are untouched.
    jax.tree.map(np.testing.assert_array_equal, nnx_snapshot(net), before)
    assert int(net.drop1.rngs.count[...]) == 0
    assert net.drop1.deterministic is False and net.bn.use_running_average is False


def test_sample_nnx_uses_running_statistics(x):
    net = make_nnx_net()
    key = jax.random.key(31)
    frozen = mc.sample_nnx(net, x, key, 3, attributes={"deterministic": True})
    # Dropout off: every sample is the evaluation-mode output of the model.
    net.eval()
    np.testing.assert_allclose(frozen, jnp.broadcast_to(net(x), frozen.shape), rtol=1e-5)
    net.train()
    batch_stats = mc.sample_nnx(
        net, x, key, 3, attributes={"deterministic": True, "use_running_average": False}
    )
    assert not np.allclose(batch_stats[0], frozen[0])


def test_sample_nnx_method_consistent_and_sharded(x):
    net = make_nnx_net()
    key = jax.random.key(32)
    hidden = mc.sample_nnx(net, x, key, T, method="hidden")
    for i, k in enumerate(jax.random.split(key, T)):
        np.testing.assert_allclose(hidden[i], nnx_manual(net, x, k, "hidden"), rtol=1e-5)
    batch = jnp.stack([x[0], x[0], x[1]])
    ys = mc.sample_nnx(net, batch, key, 4, consistent=True)
    np.testing.assert_array_equal(ys[:, 0], ys[:, 1])
    mesh = jax.make_mesh((8,), ("samples",))
    sharded = mc.sample_nnx(net, x, key, 8, mesh=mesh, chunk_size=1)
    np.testing.assert_allclose(sharded, mc.sample_nnx(net, x, key, 8), rtol=1e-5, atol=1e-6)
    assert len(sharded.sharding.device_set) == 8


def test_sample_nnx_without_the_stream_names_the_fix(x):
    net = make_nnx_net(nnx.Rngs(0))  # Dropout streams fall back to the "default" tag
    with pytest.raises(ValueError, match=r"no RNG stream named 'dropout'.*\['default'\]"):
        mc.sample_nnx(net, x, jax.random.key(0), 2)
    ys = mc.sample_nnx(net, x, jax.random.key(0), 2, rng_collection="default")
    assert ys.shape == (2, 4, 3) and not np.allclose(ys[0], ys[1])
