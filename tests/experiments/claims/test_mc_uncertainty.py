"""The mc_uncertainty experiment: MC dropout vs temperature scaling vs a deep ensemble.

The metrics and fits are checked against numpy / scipy / scikit-learn written out here; the
smoke run checks the arms' invariants (temperature never changes the argmax, one MC sample
carries no mutual information) and that the summary is the textbook t-interval over seeds.
"""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
import scipy.optimize
import scipy.stats
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

import dropjax.linen
from experiments import catalog
from experiments.claims import mc_uncertainty as mcu
from experiments.harness import stats
from experiments.harness.claim import execute
from experiments.harness.results import RunContext
from experiments.harness.train import ArrayData


def _np_softmax(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _np_entropy(p):
    p = np.asarray(p, np.float64)
    return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), -1)


def _np_ece(p, y, bins, equal_mass=False):
    conf, correct = p.max(-1), (p.argmax(-1) == y).astype(float)
    if equal_mass:
        groups = np.array_split(np.argsort(conf, kind="stable"), bins)
    else:
        edges = np.linspace(0, 1, bins + 1)
        idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, bins - 1)
        groups = [np.flatnonzero(idx == b) for b in range(bins)]
    return sum(abs(correct[g].sum() - conf[g].sum()) for g in groups if len(g)) / len(y)


def _np_fit_temperature(logits, labels):
    z = np.asarray(logits, np.float64)

    def nll(t):
        p = _np_softmax(z / t)
        return -np.mean(np.log(p[np.arange(len(labels)), labels]))

    return scipy.optimize.minimize_scalar(nll, bounds=(0.05, 20.0), method="bounded").x


# ---------------------------------------------------------------------------- metrics


def test_arm_metrics_match_numpy_and_sklearn():
    rng = np.random.default_rng(0)
    n, m, c, t = 300, 200, 5, 6
    samples_in = rng.dirichlet(np.full(c, 0.3), size=(t, n)).astype(np.float32)
    samples_out = rng.dirichlet(np.full(c, 1.5), size=(t, m)).astype(np.float32)
    p_in, p_out = samples_in.mean(0), samples_out.mean(0)
    y = rng.integers(0, c, n)
    y[:150] = p_in[:150].argmax(-1)  # about 60 % accuracy
    got = mcu.arm_metrics(p_in, p_out, y, samples_in, samples_out)

    correct = p_in.argmax(-1) == y
    pd = p_in.astype(np.float64)
    assert got["accuracy"] == pytest.approx(correct.mean())
    assert got["nll"] == pytest.approx(-np.mean(np.log(pd[np.arange(n), y])), rel=1e-5)
    assert got["brier"] == pytest.approx(np.mean(np.sum((pd - np.eye(c)[y]) ** 2, -1)), rel=1e-5)
    assert got["ece"] == pytest.approx(_np_ece(pd, y, 15), abs=1e-5)
    assert got["aece"] == pytest.approx(_np_ece(pd, y, 15, equal_mass=True), abs=1e-5)
    order = np.argsort(-pd.max(-1), kind="stable")
    risk = 1 - np.cumsum(correct[order]) / np.arange(1, n + 1)
    assert got["aurc"] == pytest.approx(risk.mean(), abs=1e-5)

    is_ood = np.r_[np.zeros(n), np.ones(m)]
    mi = lambda s: _np_entropy(s.mean(0)) - _np_entropy(s).mean(0)  # noqa: E731
    scores = {
        "entropy": np.r_[_np_entropy(p_in), _np_entropy(p_out)],
        "maxprob": np.r_[1 - p_in.max(-1), 1 - p_out.max(-1)],
        "mi": np.r_[mi(samples_in), mi(samples_out)],
    }
    for name, s in scores.items():
        s = s.astype(np.float32)  # the ranking the experiment scores
        assert got[f"auroc_{name}"] == pytest.approx(roc_auc_score(is_ood, s), abs=1e-5), name
        assert got[f"aupr_{name}"] == pytest.approx(average_precision_score(is_ood, s), abs=1e-5), (
            name
        )
        fpr, tpr, _ = roc_curve(is_ood, s, drop_intermediate=False)
        assert got[f"fpr95_{name}"] == pytest.approx(fpr[np.argmax(tpr >= 0.95)], abs=1e-6)
    single = mcu.arm_metrics(p_in, p_out, y)
    assert "auroc_mi" not in single and single["nll"] == got["nll"]


def _outputs(rng, n=400, h=300, m=200, c=4, t=8, members=3):
    """Synthetic network outputs: held-out labels follow a sharper model than test labels."""
    z = {k: rng.normal(size=(size, c)) * 3 for k, size in (("test", n), ("ood", m), ("holdout", h))}
    y_test = np.array([rng.choice(c, p=p) for p in _np_softmax(z["test"] / 3.0)])
    y_hold = np.array([rng.choice(c, p=p) for p in _np_softmax(z["holdout"] / 1.5)])
    mc = {
        k: _np_softmax(v[None] + rng.normal(size=(t, *v.shape))).astype(np.float32)
        for k, v in z.items()
    }
    members_z = {
        k: np.stack([z[k]] + [z[k] + rng.normal(size=z[k].shape) for _ in range(members - 1)])
        for k in ("test", "ood")
    }
    z32 = {k: v.astype(np.float32) for k, v in z.items()}
    members32 = {k: v.astype(np.float32) for k, v in members_z.items()}
    return mcu.SeedOutputs(y_test, y_hold, z32, mc, members32)


def test_arms_fit_temperatures_on_the_holdout_split():
    out = _outputs(np.random.default_rng(1))
    arms = mcu.arm_predictions(out, (1, 8))
    t_hold = _np_fit_temperature(out.logits["holdout"], out.labels_holdout)
    t_test = _np_fit_temperature(out.logits["test"], out.labels)
    assert abs(t_hold - t_test) > 0.5  # the two splits disagree, so the check can fail
    det_ts = arms["deterministic_ts"]
    assert det_ts["temperature"] == pytest.approx(t_hold, rel=2e-3)
    np.testing.assert_allclose(det_ts["in"], _np_softmax(out.logits["test"] / t_hold), atol=2e-3)
    np.testing.assert_allclose(
        arms["deterministic"]["out"], _np_softmax(out.logits["ood"]), atol=1e-6
    )
    # MC + TS: the log of the MC average of the held-out split as logits.
    log_mean = np.log(out.mc["holdout"].astype(np.float64).mean(0))
    t_mc = _np_fit_temperature(log_mean, out.labels_holdout)
    assert arms["mc_ts"]["8"]["temperature"] == pytest.approx(t_mc, rel=2e-3)
    expect = _np_softmax(np.log(out.mc["test"].astype(np.float64).mean(0)) / t_mc)
    np.testing.assert_allclose(arms["mc_ts"]["8"]["in"], expect, atol=2e-3)
    # MC with T samples: the first T samples' mean; ensemble: the members' mean softmax.
    np.testing.assert_allclose(arms["mc"]["1"]["in"], out.mc["test"][0], atol=1e-7)
    np.testing.assert_allclose(arms["mc"]["8"]["out"], out.mc["ood"].mean(0), atol=1e-6)
    ens = _np_softmax(out.members["test"].astype(np.float64)).mean(0)
    np.testing.assert_allclose(arms["ensemble"]["in"], ens, atol=1e-6)
    assert arms["ensemble"]["samples_out"].shape == (3, 200, 4)


def test_split_holdout_is_a_partition_and_member_seeds_are_explicit():
    n = 50
    x = np.arange(n, dtype=np.float32).reshape(n, 1)
    y = (np.arange(n) % 3).astype(np.int32)
    data = ArrayData(x, y, x[:5], y[:5], "toy")
    train, xh, yh = mcu.split_holdout(data, 12)
    assert train.num_train == 38 and len(xh) == 12
    ids = np.r_[train.x_train[:, 0], xh[:, 0]].astype(int)
    assert sorted(ids) == list(range(n))  # disjoint and complete
    np.testing.assert_array_equal(yh, xh[:, 0].astype(int) % 3)  # labels follow the rows
    again = mcu.split_holdout(data, 12)[1]
    np.testing.assert_array_equal(again, xh)  # fixed, whatever the run's seed
    assert mcu.member_seeds([0, 1, 2], 2) == [0, 1, 2, 1000, 1001, 1002]
    with pytest.raises(ValueError, match="at least 2 members"):
        mcu.member_seeds([0], 1)
    with pytest.raises(ValueError, match="holdout"):
        mcu.split_holdout(data, 50)


def _synthetic_seed(rng, shift: dict[str, tuple[float, float]]):
    """A seed's metrics for every arm; MC = deterministic + shift mean + N(0, shift sd).

    MC's ``auroc_mi`` is shifted from the deterministic ``auroc_maxprob`` (its baseline).
    """
    keys = ("auroc_entropy", "auroc_maxprob", "nll", "ece", "aece")
    det = {k: float(v) for k, v in zip(keys, (0.9, 0.9, 0.1, 0.02, 0.02), strict=True)}
    mc = dict(det)
    for k, (mean, sd) in shift.items():
        mc[k] = det[k.replace("mi", "maxprob")] + mean + float(rng.normal(0, sd))
    return {
        "deterministic": det,
        "deterministic_ts": dict(det),
        "mc": {"2": dict(det), "8": mc},
        "mc_ts": {"2": dict(det), "8": dict(det)},
        "ensemble": dict(det),
    }


def test_summary_decides_against_the_stated_effects():
    rng = np.random.default_rng(2)
    shift = {
        "auroc_mi": (0.05, 0.001),  # clearly above 0: reproduced
        "auroc_entropy": (0.0, 0.001),  # CI well inside (-0.01, 0.01): refuted
        "nll": (0.05, 0.001),  # NLL up, claimed down, beyond delta: contradicted
        "ece": (0.0, 0.02),  # too noisy for delta 0.005: inconclusive
    }
    per_seed = [_synthetic_seed(rng, shift) for _ in range(6)]
    for r in per_seed:  # the ensemble: NLL 0.02 below the deterministic net's
        r["ensemble"]["nll"] = r["deterministic"]["nll"] - 0.02 + float(rng.normal(0, 0.001))
    out = mcu.summarise(per_seed, (2, 8), 2, coverage=1.0, substitute=False)
    verdicts = {d["key"]: d["verdict"] for d in out["decisions"]}
    assert verdicts == {
        "ood_mi": "reproduced",
        "ood_entropy": "refuted",
        "nll": "contradicted",
        "ece": "inconclusive",
    }
    assert out["sub_claims"]["ood_detection"]["verdict"] == "inconclusive"
    assert out["overall"]["verdict"] == "contradicted"
    nll = next(d for d in out["decisions"] if d["key"] == "nll")["difference"]
    diffs = [r["mc"]["8"]["nll"] - r["deterministic"]["nll"] for r in per_seed]
    half = scipy.stats.t.ppf(0.975, 5) * np.std(diffs, ddof=1) / np.sqrt(6)
    assert nll["ci_low"] == pytest.approx(np.mean(diffs) - half)
    partial = mcu.summarise(per_seed, (2, 8), 2, coverage=0.5, substitute=False)
    assert partial["overall"]["headline"] == "indicative"
    context = {c["label"]: c for c in out["context"]}
    assert context["ensemble M=2 − det."]["metrics"]["nll"]["arm_is"] == "better"
    assert context["MC T=8 − ensemble M=2"]["metrics"]["nll"]["arm_is"] == "worse"
    assert context["det. + TS − det."]["metrics"]["nll"]["arm_is"] == "n.s."  # identical


# ---------------------------------------------------------------------------- the run


def test_mc_head_matches_full_model():
    """The cheap MC path (ip1 features + dropout head) is LeNet's own computation."""
    from experiments.harness.models import DropoutConfig, LeNet

    cfg = DropoutConfig("standard", 0.5)
    model = LeNet(10, cfg)
    x = jax.random.uniform(jax.random.key(0), (6, 28, 28, 1))
    params = model.init(jax.random.key(1), x, train=False)["params"]
    feats = mcu._feature_fn(model)(params, x)
    full = model.apply({"params": params}, x, train=False)
    logits, mc = mcu.head_predictions(cfg, params["ip2"], feats, jax.random.key(2), 4, chunk=6)
    assert mc.shape == (4, 6, 10) and logits.shape == (6, 10)
    np.testing.assert_allclose(logits, np.asarray(full), rtol=1e-5, atol=1e-5)
    assert np.abs(mc[0] - mc[1]).max() > 0  # the samples differ
    with dropjax.linen.mc_dropout():
        y = model.apply({"params": params}, x, train=False, rngs={"dropout": jax.random.key(3)})
    assert not np.allclose(np.asarray(y), np.asarray(full))


def test_smoke_run(tmp_path, monkeypatch):
    """The smoke run, interrupted by its budget at the first checkpoint (iteration 15 of 30)
    and resumed by the same call: it trains on from the checkpoint, and the results hold."""
    from experiments.harness.budget import Budget, BudgetExhausted

    name = "mc_uncertainty"
    monkeypatch.setenv("DROPJAX_RUNS", str(tmp_path / "runs"))
    ctx = RunContext(name=name, preset="smoke", out_dir=tmp_path / name, quiet=True)

    def stop(self, step, entry):
        raise BudgetExhausted("simulated end of session")

    with monkeypatch.context() as m:
        m.setattr(Budget, "callback", stop)
        with pytest.raises(BudgetExhausted):
            execute(catalog.claim(name), ctx)
    assert any(p.is_file() for p in (tmp_path / "runs").rglob("*"))  # the checkpoint
    payload, path = execute(catalog.claim(name), ctx)
    assert payload["results"]["training"]["resumed_from"] == 15
    assert not any(p.is_file() for p in (tmp_path / "runs").rglob("*"))  # cleaned up
    saved = json.loads(path.read_text())["results"]
    res = payload["results"]
    assert saved["verdict"] == res["verdict"] == res["overall"]["headline"]
    assert res["seeds"] == [0, 1, 2] and res["ood"]["name"] == "noise"
    assert res["config"]["num_samples"] == [1, 2, 8] and res["config"]["members"] == 2
    for fig in res["figures"]:
        assert (ctx.out_dir / fig).stat().st_size > 0
    assert res["figures"] == ["smoke_metrics.png", "smoke_reliability.png"]

    assert len(res["per_seed"]) == 3
    for seed in res["per_seed"]:
        det, det_ts = seed["deterministic"], seed["deterministic_ts"]
        assert det_ts["accuracy"] == det["accuracy"]  # a temperature keeps the argmax
        assert det_ts["temperature"] > 0
        for t in ("1", "2", "8"):
            assert seed["mc_ts"][t]["accuracy"] == seed["mc"][t]["accuracy"]
        assert seed["mc"]["1"]["auroc_mi"] == 0.5  # one sample: MI is 0 everywhere
        assert 0 <= seed["ensemble"]["fpr95_entropy"] <= 1
    ens_nll = [s["ensemble"]["nll"] for s in res["per_seed"]]
    summ = res["summary"]["ensemble"]["nll"]
    half = scipy.stats.t.ppf(0.975, 2) * np.std(ens_nll, ddof=1) / np.sqrt(3)
    assert summ["mean"] == pytest.approx(np.mean(ens_nll))
    assert summ["ci_high"] == pytest.approx(np.mean(ens_nll) + half)

    assert {d["verdict"] for d in res["decisions"]} <= set(stats.VERDICTS)
    assert {d["headline"] for d in res["decisions"]} <= {"inconclusive", "indicative"}
    ev = res["evidence"]
    assert ev["coverage"] == pytest.approx(30 / 12000) and ev["data"] == "SUBSTITUTE"
    assert ev["pairs"] == 3 and ev["delta"] in (0.01, 0.005)
    cost = res["costs"]["arms"]
    assert cost["ensemble"]["train_iterations"] == 2 * cost["deterministic"]["train_iterations"]
    assert res["costs"]["training_networks_in_run"] == 6

    markdown = mcu.render(res)
    for label, _ in mcu.rows((1, 2, 8), 2):
        assert f"| {label} |" in markdown
    assert "deep ensemble, M=2" in markdown and "headline" in markdown


def test_render_of_legacy_results_names_the_rerun():
    text = mcu.render({"verdict": "mixed (old)", "summary": {}})
    assert "mixed (old)" in text and "--preset quick" in text
