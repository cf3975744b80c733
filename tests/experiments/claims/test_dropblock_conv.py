"""Claim 12 (dropblock_conv): the step hook of the harness, the scheduled noise, the
training subset, the verdict rule and a smoke run."""

from __future__ import annotations

import json
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dropjax
from experiments import catalog
from experiments.claims import dropblock_conv as db
from experiments.harness import stats
from experiments.harness.claim import execute
from experiments.harness.results import RunContext
from experiments.harness.train import ArrayData, TrainConfig, train


class _StepLogits(nn.Module):
    """Logits ``[0.5 t, 0]`` at step ``t`` in training, ``[0, 0]`` otherwise (plus a frozen
    zero linear term, so the model has parameters)."""

    takes_step: ClassVar[bool] = True

    @nn.compact
    def __call__(self, x, train: bool = False, step=None):
        w = self.param("w", nn.initializers.zeros_init(), (x.shape[-1], 2))
        t = jnp.zeros(()) if step is None else 0.5 * jnp.asarray(step, jnp.float32)
        return x @ w + jnp.stack([t, jnp.zeros(())])


def test_harness_feeds_the_step_count():
    """A ``takes_step`` model sees the global step count in training, none in evaluation."""
    n = 16
    x = np.ones((n, 3), np.float32)
    y = np.zeros(n, np.int32)  # class 0: the loss at step t is log(1 + exp(-t/2))
    cfg = TrainConfig(7, batch_size=8, learning_rate=0.0, momentum=0.0, eval_every=3)
    result = train(_StepLogits(), ArrayData(x, y, x, y), cfg, seeds=[0, 1], quiet=True)
    segments = [range(0, 3), range(3, 6), range(6, 7)]
    for entry, steps in zip(result.history, segments, strict=True):
        expected = np.mean([np.log1p(np.exp(-0.5 * t)) for t in steps])
        np.testing.assert_allclose(entry["train_loss"], [expected] * 2, rtol=1e-5)
        np.testing.assert_allclose(entry["test_loss"], [np.log(2.0)] * 2, rtol=1e-5)


def _probe_rates(monkeypatch, kind: str, steps) -> list[list[float]]:
    """The rates ``MapNoiseConvNet`` hands its noise op at each (traced) step, two maps each."""
    seen: list[float] = []
    name = "dropout" if kind == "standard" else "dropblock"
    real = getattr(dropjax, name)

    def spy(key, x, rate, **kw):
        jax.debug.callback(lambda r: seen.append(float(r)), rate)
        return real(key, x, rate, **kw)

    monkeypatch.setattr(dropjax, name, spy)
    net = db.MapNoiseConvNet(kind=kind, rate=0.3, ramp_steps=10, widths=(2, 2), hidden=2)
    x = jnp.ones((1, 28, 28, 1))
    params = net.init(jax.random.key(0), x)
    rngs = {"dropout": jax.random.key(1)}
    apply = jax.jit(lambda t: net.apply(params, x, train=True, step=t, rngs=rngs))
    out = []
    for t in steps:
        seen.clear()
        jax.block_until_ready(apply(jnp.int32(t)))
        jax.effects_barrier()
        out.append(list(seen))
    return out


@pytest.mark.parametrize("kind", ["standard", "dropblock"])
def test_noise_follows_the_linear_ramp(monkeypatch, kind):
    steps = [0, 5, 10, 40]
    rates = _probe_rates(monkeypatch, kind, steps)
    for t, got in zip(steps, rates, strict=True):
        want = 0.3 * min(t, 10) / 10  # Ghiasi et al.: linear from 0 to the target
        np.testing.assert_allclose(got, [want, want], atol=1e-7)


def test_model_pairing_and_modes():
    """Arms share parameters; noise only in training; training needs the step."""
    x = jax.random.uniform(jax.random.key(0), (2, 28, 28, 1))
    kw = {"rate": 0.3, "ramp_steps": 5, "widths": (4, 4), "hidden": 8}
    nets = {arm: db.MapNoiseConvNet(kind=arm, **kw) for arm in db.ARMS}
    params = {a: n.init(jax.random.key(1), x)["params"] for a, n in nets.items()}
    for arm in ("standard", "dropblock"):
        assert jax.tree.structure(params[arm]) == jax.tree.structure(params["none"])
        for a, b in zip(jax.tree.leaves(params[arm]), jax.tree.leaves(params["none"]), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    p = {"params": params["none"]}
    clean = np.asarray(nets["none"].apply(p, x))
    rngs = {"dropout": jax.random.key(2)}
    for arm in ("standard", "dropblock"):
        net = nets[arm]
        np.testing.assert_allclose(np.asarray(net.apply(p, x)), clean, rtol=1e-6)
        noisy = jax.jit(lambda t, net=net: net.apply(p, x, train=True, step=t, rngs=rngs))
        at0 = noisy(jnp.int32(0))  # rate 0 at step 0
        np.testing.assert_allclose(np.asarray(at0), clean, rtol=1e-5, atol=1e-6)
        assert np.abs(np.asarray(noisy(jnp.int32(5))) - clean).max() > 1e-4
        with pytest.raises(ValueError, match="step count"):
            net.apply(p, x, train=True, rngs=rngs)


def test_balanced_subset_takes_the_first_images_of_each_class():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 60).astype(np.int32)
    x = np.arange(60, dtype=np.float32).reshape(60, 1)
    sub = db.balanced_subset(ArrayData(x, y, x[:5], y[:5]), 6)
    want = sorted(i for c in range(3) for i in [j for j in range(60) if y[j] == c][:2])
    np.testing.assert_array_equal(sub.x_train[:, 0], np.asarray(want, np.float32))
    np.testing.assert_array_equal(np.bincount(sub.y_train), [2, 2, 2])
    assert len(sub.y_test) == 5
    with pytest.raises(ValueError, match="multiple of 3"):
        db.balanced_subset(ArrayData(x, y, x, y), 7)


def test_verdicts_stand_at_the_reference_protocol_and_are_indicative_below():
    """No source protocol: the pooled verdict stands at 100 % of our reference protocol (the
    paper preset) and reads 'indicative' below it; an inconclusive interval stays so."""
    up = {"mean": 0.03, "std": 0.005, "n": 6, "ci_low": 0.025, "ci_high": 0.035}
    flat = {"mean": 0.0, "std": 0.002, "n": 6, "ci_low": -0.002, "ci_high": 0.002}
    down = {"mean": -0.002, "std": 0.002, "n": 6, "ci_low": -0.004, "ci_high": -0.0005}
    wide = {"mean": 0.0, "std": 0.05, "n": 6, "ci_low": -0.05, "ci_high": 0.05}
    for diff, verdict in (
        (up, "reproduced"),
        (flat, "refuted"),
        (down, "contradicted"),
        (wide, "inconclusive"),
    ):
        d = db._decide(diff, 1.0, False)
        assert (d["verdict"], d["headline"]) == (verdict, verdict)
        quick = db._decide(diff, 0.25, False)
        assert quick["headline"] == ("inconclusive" if verdict == "inconclusive" else "indicative")


def test_a_run_that_recorded_the_older_headline_rule_shows_both():
    """The paper grid's first cell recorded the spec whose headline stayed indicative: the
    results carry that headline next to the one under the spec now; a run that recorded
    the current spec carries nothing extra."""
    pooled = {"dropblock_vs_standard": {"verdict": "contradicted"}}
    results = {"verdict": "contradicted", "pooled": pooled}
    db._headline_at_start(results, {db.NAME: {"hash": "40f5df62ae41135e"}})
    assert results["headline_at_start"]["verdict"] == "indicative"
    assert results["headline_at_start"]["hash"] == "40f5df62ae41135e"
    now = {"verdict": "contradicted", "pooled": pooled}
    db._headline_at_start(now, {db.NAME: {"hash": stats.spec_hash(db.SPEC)}})
    assert "headline_at_start" not in now


def test_dropblock_conv_smoke(tmp_path, monkeypatch):
    monkeypatch.setenv("DROPJAX_RUNS", str(tmp_path / "runs"))
    ctx = RunContext(name=db.NAME, preset="smoke", out_dir=tmp_path / db.NAME, quiet=True)
    payload, path = execute(catalog.claim(db.NAME), ctx)
    results = json.loads(path.read_text())["results"]
    assert results["verdict"] == payload["results"]["verdict"]
    assert results["figure"] == "smoke_accuracy_gap.png"
    assert (ctx.out_dir / results["figure"]).stat().st_size > 0
    preset = db.PRESETS["smoke"]
    n = preset.replicas
    assert results["seeds"] == list(range(n)) and results["cells_done"] == 3
    assert results["data"]["num_train"] == preset.train_size
    for arm in db.ARMS:
        r = results["per_replica"][arm]["0.2"]
        assert len(r["test_acc"]) == n and all(0.0 <= a <= 1.0 for a in r["test_acc"])
        np.testing.assert_allclose(
            r["gap"], np.subtract(r["train_acc_clean"], r["test_acc"]), atol=1e-12
        )
    head = results["pooled"]["dropblock_vs_standard"]
    db_acc = results["per_replica"]["dropblock"]["0.2"]["test_acc"]
    std_acc = results["per_replica"]["standard"]["0.2"]["test_acc"]
    assert head["difference"]["mean"] == pytest.approx(np.mean(np.subtract(db_acc, std_acc)))
    assert head["verdict"] in {"reproduced", "refuted", "contradicted", "inconclusive"}
    ev = results["evidence"]
    assert ev["data"] == "SUBSTITUTE" and ev["delta"] == db.DELTA and ev["pairs"] == n
    assert ev["coverage"] == pytest.approx(preset.train.iterations / db.REFERENCE_ITERATIONS)
    markdown = catalog.claims()[db.NAME].render(results)
    assert "Δ db − std" in markdown and results["verdict"] in markdown
