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


def test_bits_impl_uses_jax_random_bits():
    key, shape, rate = jax.random.key(13), (40, 25), 0.3
    with dropjax.mask_impl("bits"):
        got = np.asarray(dropjax.keep_mask(key, shape, rate))
        jitted = np.asarray(jax.jit(lambda k: dropjax.keep_mask(k, shape, rate))(key))
    bits = np.asarray(jax.random.bits(key, shape, dtype=jnp.uint32)).astype(np.uint64)
    expected = bits >= np.floor(np.float64(np.float32(rate)) * 2.0**32)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(jitted, expected)
    assert dropjax.get_mask_impl() == "hash"
    with pytest.raises(ValueError, match="mask_impl must be one of"):
        with dropjax.mask_impl("philox"):
            pass


def test_rbg_keys_work_with_the_bits_impl():
    key = jax.random.key(0, impl="rbg")
    with dropjax.mask_impl("bits"):
        m = np.asarray(dropjax.keep_mask(key, (100_000,), 0.25))
    assert abs(m.mean() - 0.75) < sigma_bound(100_000, 0.75)


def test_hash_bits_are_balanced_per_bit_position():
    # Every one of the 32 output bits is 1 half of the time (4 sigma), over many indices.
    from tests.reference import bits_ref

    n = 200_000
    bits = bits_ref(jax.random.key(17), (n,))
    ones = ((bits[:, None] >> np.arange(32, dtype=np.uint32)) & 1).mean(0)
    assert np.all(np.abs(ones - 0.5) < sigma_bound(n, 0.5))


@pytest.mark.parametrize(
    "k1,k2",
    [
        (jax.random.key(0), jax.random.key(1)),
        (jax.random.key(5), jax.random.fold_in(jax.random.key(5), 1)),
    ],
)
def test_masks_of_related_keys_are_independent(k1, k2):
    n, rate = 200_000, 0.5
    a = np.asarray(dropjax.keep_mask(k1, (n,), rate))
    b = np.asarray(dropjax.keep_mask(k2, (n,), rate))
    both = (a & b).mean()
    assert abs(both - 0.25) < sigma_bound(n, 0.25)
