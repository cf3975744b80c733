"""Rate schedules: values against the papers' formulas, validation, and one trace per run."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dropjax
from tests.reference import keep_ref

STEPS = np.array([0, 1, 5, 49, 50, 51, 120, 149, 150, 151, 1000], np.int32)


def test_constant_rate():
    schedule = dropjax.constant_rate(0.3)
    got = schedule(jnp.asarray(STEPS))
    assert got.dtype == jnp.float32 and got.shape == STEPS.shape
    np.testing.assert_array_equal(got, np.full(STEPS.shape, np.float32(0.3)))
    assert schedule(7).shape == ()


@pytest.mark.parametrize("init, end", [(0.0, 0.5), (0.6, 0.1)])
def test_linear_rate_matches_piecewise_formula(init, end):
    schedule = dropjax.linear_rate(init, end, transition_steps=100, transition_begin=50)
    expected = [
        init if t <= 50 else end if t >= 150 else init + (end - init) * (t - 50) / 100
        for t in STEPS.tolist()
    ]
    got = schedule(jnp.asarray(STEPS))
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    for t, e in zip(STEPS.tolist(), expected, strict=True):
        assert float(schedule(t)) == pytest.approx(e, abs=1e-7)


@pytest.mark.parametrize("final, gamma", [(0.5, 1e-2), (0.9, 1e-3), (0.2, 0.0)])
def test_curriculum_rate_matches_keep_probability_of_the_paper(final, gamma):
    schedule = dropjax.curriculum_rate(final, gamma)
    theta_bar = 1.0 - final
    # Morerio et al. 2017: theta(t) = (1 - theta_bar) exp(-gamma t) + theta_bar (keep prob).
    theta = [(1.0 - theta_bar) * math.exp(-gamma * t) + theta_bar for t in STEPS.tolist()]
    expected = 1.0 - np.array(theta)
    np.testing.assert_allclose(schedule(jnp.asarray(STEPS)), expected, rtol=1e-5, atol=1e-7)
    assert float(schedule(0)) == 0.0
    assert float(schedule(-10)) == 0.0
    rates = np.asarray(schedule(jnp.arange(0, 2000, 100)))
    assert (np.diff(rates) >= 0).all() and (rates <= final + 1e-7).all()


def test_depth_rates_follow_the_linear_rule_one_based():
    rates = dropjax.depth_rates(0.5, 5)
    assert isinstance(rates, tuple) and len(rates) == 5
    np.testing.assert_allclose(rates, [0.1, 0.2, 0.3, 0.4, 0.5])
    assert rates[-1] == 0.5 and rates[0] == pytest.approx(0.5 / 5)
    assert dropjax.depth_rates(0.0, 3) == (0.0, 0.0, 0.0)
    assert dropjax.depth_rates(0.3, 1) == (0.3,)
    traced = jax.jit(lambda r: jnp.stack(dropjax.depth_rates(r, 4)))(0.8)
    np.testing.assert_allclose(traced, [0.2, 0.4, 0.6, 0.8], rtol=1e-6)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        dropjax.constant_rate(1.2)
    with pytest.raises(ValueError, match="end_rate"):
        dropjax.linear_rate(0.0, -0.1, 10)
    with pytest.raises(ValueError, match="transition_steps"):
        dropjax.linear_rate(0.0, 0.5, 0)
    with pytest.raises(ValueError, match="transition_begin"):
        dropjax.linear_rate(0.0, 0.5, 10, transition_begin=-1)
    with pytest.raises(TypeError, match="transition_steps"):
        dropjax.linear_rate(0.0, 0.5, 10.5)
    with pytest.raises(ValueError, match="final_rate"):
        dropjax.curriculum_rate(1.5, 0.1)
    with pytest.raises(ValueError, match="gamma"):
        dropjax.curriculum_rate(0.5, -0.1)
    with pytest.raises(ValueError, match="gamma"):
        dropjax.curriculum_rate(0.5, float("inf"))
    with pytest.raises(TypeError, match="Python float"):
        dropjax.constant_rate(jnp.array(0.3))
    with pytest.raises(ValueError, match="max_rate"):
        dropjax.depth_rates(1.1, 4)
    with pytest.raises(ValueError, match="num_layers"):
        dropjax.depth_rates(0.5, 0)
    with pytest.raises(TypeError, match="step"):
        dropjax.constant_rate(0.1)(jnp.array([True]))


@pytest.mark.parametrize(
    "schedule",
    [
        dropjax.constant_rate(0.2),
        dropjax.linear_rate(0.0, 0.5, 4),
        dropjax.curriculum_rate(0.5, 0.3),
    ],
    ids=["constant", "linear", "curriculum"],
)
def test_traced_step_compiles_once(schedule):
    traces = []

    @jax.jit
    def train_step(key, x, step):
        traces.append(1)  # runs only while tracing
        rate = schedule(step)
        return dropjax.dropout(key, x, rate), rate

    x = jnp.ones((64,))
    key = jax.random.key(0)
    for step in range(6):
        y, rate = train_step(key, x, jnp.asarray(step, jnp.int32))
        value = float(rate)
        # Same mask as a dropout with the same (concrete) rate, rebuilt from raw bits.
        keep = keep_ref(key, x.shape, value)
        expected = np.where(keep, 1.0 / np.float32(1.0 - value), 0.0)
        np.testing.assert_allclose(y, expected, rtol=1e-6)
    assert len(traces) == 1
