"""The sparse variational dropout experiment (Molchanov et al. 2017, Table 1): smoke run and
its protocol pieces against the authors' definitions."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import scipy.stats

from experiments import catalog
from experiments.harness.claim import execute
from experiments.harness.results import RunContext


def test_schedules_follow_the_authors_lr_linear_and_rw_linear():
    from experiments.claims.sparse_vd import PRESETS

    # The authors' optpolicy.lr_linear(epoch, 1e-3) and rw_linear(epoch), written out.
    lr_linear = lambda e: max(0.0, 1e-3 * min(2.0 - e / 100.0, 1.0))
    rw_linear = lambda e: 0.0 if e < 5 else ((e - 5) / 15.0 if e < 20 else 1.0)
    cfg = PRESETS["paper"].protocol.config(60_000)
    assert cfg.steps_per_epoch == 600 and cfg.iterations == 200 * 600
    for epoch in (0, 4, 5, 6, 12, 19, 20, 99, 100, 101, 150, 199):
        for step in (epoch * 600, epoch * 600 + 599):
            assert cfg.lr_at(step) == pytest.approx(lr_linear(epoch), abs=1e-12)
            assert float(cfg.schedule()(jnp.int32(step))) == pytest.approx(lr_linear(epoch))
            assert float(cfg.kl_weight(jnp.int32(step))) == pytest.approx(rw_linear(epoch))


def test_elbo_loss_is_cross_entropy_plus_weighted_kl_over_n():
    from experiments.claims.sparse_vd import ELBOTrainer, LeNet300100, Protocol
    from experiments.harness.train import ArrayData, TrainState, make_mesh

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 10, 200).astype(np.int32)
    cfg = Protocol(4, 2, 1, 3).config(200)  # 2 steps per epoch
    mesh = make_mesh(jax.devices()[:1])
    trainer = ELBOTrainer(LeNet300100(), ArrayData(x, y, x, y), cfg, mesh=mesh)
    init = jax.jit(lambda k: trainer.model.init(k, jnp.asarray(x[:1]), train=False)["params"])
    params = init(jax.random.key(0))
    state = TrainState(params, {}, trainer.tx.init(params))
    key = jax.random.key(5)
    xb, yb = jnp.asarray(x[:100]), jnp.asarray(y[:100])

    @jax.jit
    def loss_at(count):
        adam = state.opt_state[0]._replace(count=count)
        s = state.replace(opt_state=(adam, *state.opt_state[1:]))
        logits = trainer.model.apply({"params": params}, xb, train=True, rngs={"dropout": key})
        return trainer._loss(s.params, s, xb, yb, key)[0], logits

    logits = np.asarray(loss_at(jnp.int32(0))[1], np.float64)
    ce = -np.mean(scipy.special.log_softmax(logits, axis=1)[np.arange(100), y[:100]])
    k1, k2, k3 = 0.63576, 1.87320, 1.48695
    kl = 0.0
    for layer in state.params.values():
        theta = np.asarray(layer["kernel"], np.float64)
        la = np.clip(np.asarray(layer["log_sigma2"], np.float64) - np.log(theta**2 + 1e-8), -8, 8)
        kl += np.sum(k1 - k1 / (1 + np.exp(-(k2 + k3 * la))) + 0.5 * np.log1p(np.exp(-la)))
    for count, rw in ((0, 0.0), (4, 0.5), (7, 1.0)):  # epochs 0, 2, 3
        loss = float(loss_at(jnp.int32(count))[0])
        assert loss == pytest.approx(ce + rw * kl / 200, rel=1e-4)


def test_sparse_vd_smoke(tmp_path, monkeypatch):
    monkeypatch.setenv("DROPJAX_RUNS", str(tmp_path / "runs"))
    ctx = RunContext(name="sparse_vd", preset="smoke", out_dir=tmp_path / "sparse_vd", quiet=True)
    payload, path = execute(catalog.claim("sparse_vd"), ctx)
    assert path == tmp_path / "sparse_vd" / "smoke.json"
    results = json.loads(path.read_text())["results"]
    assert results["seeds"] == [0, 1] and results["data"]["name"] == "digits"
    decision = results["decision"]
    assert decision["coverage"] == pytest.approx(6 / 200) and decision["substitute"]
    # Below full coverage (and on a substitute) a decided claim is only indicative.
    assert results["verdict"] in ("indicative", "inconclusive")
    assert decision["raw_verdict"] in ("reproduced", "not reproduced", "inconclusive")
    vd = results["arms"]["sparse_vd"]
    for sp, err, acc in zip(vd["sparsity"], vd["test_error"], vd["final"]["test_acc"], strict=True):
        total = sp["total"]
        assert total["weights"] == 64 * 300 + 300 * 100 + 100 * 10
        assert total["nonzero"] == sum(v["nonzero"] for v in sp["layers"].values())
        assert total["compression"] == pytest.approx(total["weights"] / total["nonzero"])
        assert err == pytest.approx(1.0 - acc) and 0.0 <= err <= 1.0
    assert sum(vd["log_alpha_histogram"][0]) == total["weights"]
    assert set(results["arms"]) == {"sparse_vd"}
    assert (ctx.out_dir / results["figure"]).stat().st_size > 0
    markdown = catalog.claims()["sparse_vd"].render(results)
    assert "sparse VD" in markdown and "**" in markdown


def _record(arm, errors, compressions=None):
    result = {"test_error": errors}
    if compressions is not None:
        result["sparsity"] = [
            {
                "total": {"compression": c},
                "layers": {"fc1": {"zero_fraction": 1 - 1 / c}, "fc2": {"zero_fraction": 0.5}},
            }
            for c in compressions
        ]
    return {"params": {"arm": arm, "seeds": [0, 1, 2]}, "result": result}


def _t_interval(values):
    v = np.asarray(values)
    half = scipy.stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return v.mean() - half, v.mean() + half


@pytest.mark.parametrize(
    "errors,compressions,coverage,substitute,parts,raw,headline",
    [
        # Both claims met at full coverage on MNIST: reproduced.
        ([0.019, 0.0195, 0.020], [70, 72, 75], 1.0, False, ("reproduced",) * 2, "reproduced", None),
        # The same numbers at 10 % coverage: only indicative.
        ([0.019, 0.0195, 0.020], [70, 72, 75], 0.1, False, ("reproduced",) * 2, "reproduced", "i"),
        # Compression far below 54.4x: not reproduced (indicative on a substitute).
        (
            [0.019, 0.0195, 0.020],
            [20, 22, 21],
            1.0,
            True,
            ("not reproduced", "reproduced"),
            "not reproduced",
            "i",
        ),
        # An interval straddling the error target: inconclusive stays inconclusive.
        (
            [0.015, 0.022, 0.030],
            [70, 72, 75],
            0.1,
            False,
            ("reproduced", "inconclusive"),
            "inconclusive",
            None,
        ),
    ],
)
def test_decide_and_render(errors, compressions, coverage, substitute, parts, raw, headline):
    from experiments.claims.sparse_vd import decide, render, summarise

    records = {
        "a": _record("sparse_vd", errors, compressions),
        "b": _record("dense", [0.016, 0.017, 0.016]),
    }
    summary = summarise(records, ("sparse_vd", "dense"))
    lo, hi = _t_interval(compressions)
    assert summary["sparse_vd"]["compression"]["ci_low"] == pytest.approx(lo)
    assert summary["sparse_vd"]["compression"]["ci_high"] == pytest.approx(hi)
    d = np.subtract(errors, [0.016, 0.017, 0.016])
    assert summary["error_sparse_minus_dense"]["mean"] == pytest.approx(d.mean())
    decision = decide(summary, coverage, substitute)
    assert (decision["verdicts"]["compression"], decision["verdicts"]["error"]) == parts
    assert decision["raw_verdict"] == raw
    assert decision["verdict"] == ("indicative" if headline == "i" else raw)
    results = {
        "summary": summary,
        "decision": decision,
        "verdict": decision["verdict"],
        "data": {"name": "mnist", "source": "test"},
        "seeds": [0, 1, 2],
        "source": "paper",
        "config": {
            "epochs": 20,
            "train": {
                "batch_size": 100,
                "learning_rate": 1e-3,
                "lr_decay_epoch": 10,
                "kl_start_epoch": 0,
                "kl_end_epoch": 2,
            },
        },
    }
    text = render(results)
    assert "| dense | 1.64 |" in text and f"**{decision['verdict']}**" in text
