"""Cheap statistical checks of the counter-hash sampler that would catch a broken mixer.

The raw 32-bit words come from ``masks.hash_bits`` (the words ``keep_mask`` thresholds) in
the three layouts of ``benchmarks/sampler_randomness.py``: consecutive elements of one key,
a strided walk through a 2-D mask, and one element across many ``fold_in`` keys. Seeds are
fixed and every bound is a tail probability of about 1e-6 or less under the null, so a
correct sampler passes and e.g. an identity or a one-round mixer does not. dieharder runs
live in the benchmark script, not here.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import dropjax
from dropjax._src import masks

ALPHA = 1e-6
KEY = jax.random.key(2024)


@functools.cache
def _consecutive(key=KEY, n=1 << 16):
    return np.asarray(masks.hash_bits(key, (n,)))


@functools.cache
def _strided(key=KEY, side=256):
    # Column-major walk through a row-major (side, side) mask: stride `side` in the index.
    return np.asarray(masks.hash_bits(key, (side, side))).T.ravel()


@functools.cache
def _across_keys(key=KEY, n=1 << 14, element=3):
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n))
    return np.asarray(jax.vmap(lambda k: masks.hash_bits(k, (8,))[element])(keys))


LAYOUTS = {"consecutive": _consecutive, "strided": _strided, "across_keys": _across_keys}


def _uniform(words):
    return (words.astype(np.float64) + 0.5) / 2.0**32


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_bit_is_balanced(layout):
    words = LAYOUTS[layout]()
    n = words.size
    ones = np.array([((words >> np.uint32(b)) & np.uint32(1)).sum() for b in range(32)])
    z = (ones - n / 2) / np.sqrt(n / 4)
    assert np.abs(z).max() < 5.5, z  # two-sided 4e-8 per bit
    assert stats.chi2.sf(np.sum(z**2), df=32) > ALPHA


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_bytes_are_uniform(layout):
    counts = np.bincount(LAYOUTS[layout]().view(np.uint8), minlength=256)
    assert stats.chisquare(counts).pvalue > ALPHA


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_neighbouring_words_are_uncorrelated(layout):
    u = _uniform(LAYOUTS[layout]())
    for lag in (1, 2, 7):
        assert stats.pearsonr(u[:-lag], u[lag:]).pvalue > ALPHA, lag
    # Bitwise: the XOR of neighbours has balanced low and high bits.
    words = LAYOUTS[layout]()
    xor = words[:-1] ^ words[1:]
    for b in (0, 1, 15, 31):
        ones = ((xor >> np.uint32(b)) & np.uint32(1)).sum()
        assert stats.binomtest(int(ones), xor.size, 0.5).pvalue > ALPHA, b


def test_neighbouring_rows_of_a_mask_are_uncorrelated():
    words = np.asarray(masks.hash_bits(KEY, (512, 128)))
    u = _uniform(words)
    r = np.array([np.corrcoef(u[i], u[i + 1])[0, 1] for i in range(511)])
    # Under independence sqrt(128) * r is about N(0, 1): test the 511 values jointly.
    assert stats.kstest(np.sqrt(128) * r, "norm").pvalue > ALPHA
    assert stats.pearsonr(u[:-1].ravel(), u[1:].ravel()).pvalue > ALPHA


def _agreement_pvalue(a, b):
    table = np.array([[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]])
    return stats.chi2_contingency(table, correction=False).pvalue


@pytest.mark.parametrize("derive", ["fold_in", "split"])
def test_masks_of_derived_keys_are_independent(derive):
    n = 1 << 15
    if derive == "fold_in":
        keys = [jax.random.fold_in(KEY, i) for i in range(4)]
    else:
        keys = list(jax.random.split(KEY, 4))
    ms = [np.asarray(dropjax.keep_mask(k, (n,), 0.5)) for k in keys]
    for i in range(4):
        for j in range(i + 1, 4):
            assert _agreement_pvalue(ms[i], ms[j]) > ALPHA, (i, j)
    # The parent key's mask is independent of its children's too.
    parent = np.asarray(dropjax.keep_mask(KEY, (n,), 0.5))
    assert _agreement_pvalue(parent, ms[0]) > ALPHA


def test_a_broken_mixer_fails_these_checks():
    # The checks have teeth: one xorshift-multiply round on the raw index is caught.
    i = np.arange(1 << 16, dtype=np.uint32)
    with np.errstate(over="ignore"):
        weak = (i ^ np.uint32(0x9E3779B9)) * np.uint32(0x7FEB352D)
    xor = weak[:-1] ^ weak[1:]
    ones = int((xor & np.uint32(1)).sum())  # bit 0 of i ^ (i + 1) is always 1
    assert stats.binomtest(ones, xor.size, 0.5).pvalue < ALPHA
