"""keep_mask: statistics, determinism, broadcasting, sharding, validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import dropjax
from tests.reference import keep_ref, sigma_bound

RATES = [0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95]


@pytest.mark.parametrize("rate", RATES)
def test_kept_fraction_within_four_sigma(rate):
    n = 200_000
    m = np.asarray(dropjax.keep_mask(jax.random.key(7), (n,), rate))
    assert abs(m.mean() - (1.0 - rate)) < sigma_bound(n, 1.0 - rate)


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_neighbouring_entries_are_independent(rate):
    # Chi-square test of independence on the 2x2 table of (m[i], m[i+1]) pairs.
    m = np.asarray(dropjax.keep_mask(jax.random.key(3), (100_000,), rate)).astype(int)
    a, b = m[0::2], m[1::2]
    table = np.array([[np.sum((a == i) & (b == j)) for j in (0, 1)] for i in (0, 1)])
    _, pvalue, _, _ = scipy.stats.chi2_contingency(table)
    assert pvalue > 1e-4
    # And across a 2-D layout: rows and columns neighbours.
    m2 = np.asarray(dropjax.keep_mask(jax.random.key(4), (300, 300), rate)).astype(int)
    for a, b in [(m2[:, :-1], m2[:, 1:]), (m2[:-1, :], m2[1:, :])]:
        table = np.array(
            [[np.sum((a == i) & (b == j)) for j in (0, 1)] for i in (0, 1)], dtype=float
        )
        _, pvalue, _, _ = scipy.stats.chi2_contingency(table)
        assert pvalue > 1e-4


@pytest.mark.parametrize("rate", [0.0, 1e-4, 0.3, 0.5, 0.999, 1.0])
def test_matches_the_documented_threshold_rule(rate):
    key = jax.random.key(11)
    got = np.asarray(dropjax.keep_mask(key, (64, 33), rate))
    np.testing.assert_array_equal(got, keep_ref(key, (64, 33), rate))


def test_same_key_same_mask_different_keys_differ():
    k1, k2 = jax.random.key(0), jax.random.key(1)
    a = dropjax.keep_mask(k1, (1000,), 0.5)
    np.testing.assert_array_equal(a, dropjax.keep_mask(k1, (1000,), 0.5))
    assert not np.array_equal(a, dropjax.keep_mask(k2, (1000,), 0.5))


def test_jit_matches_eager_bit_for_bit():
    key = jax.random.key(5)
    eager = dropjax.keep_mask(key, (17, 9), 0.3, broadcast_dims=(-1,))
    jitted = jax.jit(lambda k, r: dropjax.keep_mask(k, (17, 9), r, broadcast_dims=(-1,)))(
        key, jnp.float32(0.3)
    )
    np.testing.assert_array_equal(eager, jitted)


def test_broadcast_dims_share_one_entry():
    m = np.asarray(dropjax.keep_mask(jax.random.key(2), (6, 5, 4), 0.5, broadcast_dims=(0, -1)))
    assert m.shape == (6, 5, 4)
    assert (m == m[:1, :, :1]).all()
    neg = dropjax.keep_mask(jax.random.key(2), (6, 5, 4), 0.5, broadcast_dims=(-3, 2))
    np.testing.assert_array_equal(m, neg)


def test_broadcast_slices_vary_along_free_axis():
    m = np.asarray(dropjax.keep_mask(jax.random.key(2), (8, 1000), 0.5, broadcast_dims=(0,)))
    assert len(np.unique(m[0])) == 2


def test_legacy_raw_key_is_accepted_and_equivalent():
    raw = jax.random.PRNGKey(3)
    typed = jax.random.wrap_key_data(raw)
    np.testing.assert_array_equal(
        dropjax.keep_mask(raw, (50,), 0.4), dropjax.keep_mask(typed, (50,), 0.4)
    )


def test_vmap_over_rates_matches_loop():
    key = jax.random.key(9)
    rates = jnp.array([0.0, 0.2, 0.7, 1.0])
    batched = jax.vmap(lambda r: dropjax.keep_mask(key, (40,), r))(rates)
    for i, r in enumerate([0.0, 0.2, 0.7, 1.0]):
        np.testing.assert_array_equal(batched[i], keep_ref(key, (40,), r))


def test_same_mask_sharded_over_eight_devices():
    assert jax.device_count() == 8, "conftest sets 8 host devices"
    mesh = Mesh(np.array(jax.devices()), ("d",))
    sharding = NamedSharding(mesh, PartitionSpec("d"))
    key = jax.random.key(21)
    unsharded = dropjax.keep_mask(key, (64, 16), 0.5)
    sharded = jax.jit(lambda k: dropjax.keep_mask(k, (64, 16), 0.5), out_shardings=sharding)(key)
    assert len(sharded.sharding.device_set) == 8
    np.testing.assert_array_equal(unsharded, sharded)


@pytest.mark.parametrize("rate", [-0.1, 1.5, float("nan")])
def test_bad_concrete_rate_raises_with_value(rate):
    with pytest.raises(ValueError, match=r"\[0, 1\].*got"):
        dropjax.keep_mask(jax.random.key(0), (3,), rate)


def test_bad_array_rate_raises():
    with pytest.raises(ValueError, match="must be in"):
        dropjax.keep_mask(jax.random.key(0), (3,), jnp.array([0.1, 2.0, 0.3]))


def test_axis_out_of_range():
    with pytest.raises(ValueError, match="out of range"):
        dropjax.keep_mask(jax.random.key(0), (3, 4), 0.5, broadcast_dims=(2,))


def test_raw_integer_key_names_the_fix():
    with pytest.raises(TypeError, match=r"jax\.random\.key"):
        dropjax.keep_mask(0, (3,), 0.5)
    with pytest.raises(TypeError, match=r"jax\.random\.key"):
        dropjax.keep_mask(jnp.int32(3), (3,), 0.5)


def test_batch_of_keys_names_vmap():
    with pytest.raises(ValueError, match=r"jax\.vmap"):
        dropjax.keep_mask(jax.random.split(jax.random.key(0), 4), (3,), 0.5)
    with pytest.raises(ValueError, match=r"jax\.vmap"):
        dropjax.keep_mask(jax.random.split(jax.random.PRNGKey(0), 4), (3,), 0.5)
