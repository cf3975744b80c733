"""Smoke runs of the MC-dropout uncertainty and DropBlock experiments, and the MC shortcut."""

from __future__ import annotations

import json

import jax
import numpy as np

import dropjax.linen
from experiments import catalog, registry
from experiments.registry import RunContext


def _execute(name: str, tmp_path):
    ctx = RunContext(name=name, preset="smoke", out_dir=tmp_path / name, quiet=True)
    payload, path = registry.execute(name, ctx)
    assert path == tmp_path / name / "smoke.json"
    saved = json.loads(path.read_text())["results"]
    assert saved["verdict"] == payload["results"]["verdict"]
    results = payload["results"]
    assert (ctx.out_dir / results["figure"]).stat().st_size > 0
    markdown = catalog.experiments()[name].render(results)
    assert "verdict" in markdown.lower() or "**" in markdown
    return results


def test_mc_uncertainty_smoke(tmp_path):
    results = _execute("mc_uncertainty", tmp_path)
    assert results["seeds"] == [0, 1, 2] and results["ood"]["name"] == "noise"
    assert results["config"]["num_samples"] == [1, 8]
    assert isinstance(results["verdict"], str) and results["verdict"]
    assert {c["verdict"] for c in results["comparisons"]} <= {
        "reproduced",
        "not reproduced",
        "inconclusive",
    }
    mc = results["summary"]["mc"]
    assert mc["1"]["auroc_mi"]["mean"] == 0.5  # one sample: MI is 0 for every input
    for t in ("1", "8"):
        for metric in ("ece", "nll", "aurc", "auroc_entropy"):
            assert np.isfinite(mc[t][metric]["mean"])
    assert 0.0 <= results["summary"]["deterministic"]["auroc_maxprob"]["mean"] <= 1.0
    assert len(results["per_replica"]) == 3


def test_mc_head_matches_full_model():
    """The cheap MC path (ip1 features + dropout head) is LeNet's own computation."""
    from experiments.mc_uncertainty import _feature_fn, head, mc_probs
    from experiments.models import DropoutConfig, LeNet

    cfg = DropoutConfig("standard", 0.5)
    model = LeNet(10, cfg)
    x = jax.random.uniform(jax.random.key(0), (6, 28, 28, 1))
    params = model.init(jax.random.key(1), x, train=False)["params"]
    feats = _feature_fn(model)(params, x)
    full = model.apply({"params": params}, x, train=False)
    part = head(cfg).apply({"params": params["ip2"]}, feats, train=False)
    np.testing.assert_allclose(np.asarray(full), np.asarray(part), rtol=1e-5, atol=1e-5)
    det, mc = mc_probs(cfg, params["ip2"], feats, jax.random.key(2), 4, chunk=6)
    assert mc.shape == (4, 6, 10) and det.shape == (6, 10)
    np.testing.assert_allclose(det, np.asarray(jax.nn.softmax(full)), rtol=1e-5, atol=1e-6)
    assert np.abs(mc[0] - mc[1]).max() > 0  # the samples differ
    # The full network under mc_dropout samples too (what the head shortcut replaces).
    with dropjax.linen.mc_dropout():
        y = model.apply({"params": params}, x, train=False, rngs={"dropout": jax.random.key(3)})
    assert not np.allclose(np.asarray(y), np.asarray(full))


def test_dropblock_conv_smoke(tmp_path):
    results = _execute("dropblock_conv", tmp_path)
    assert results["seeds"] == [0, 1, 2, 3]
    assert results["verdict"] in {"reproduced", "not reproduced", "inconclusive"}
    for arm in ("none", "standard", "dropblock"):
        acc = results["per_replica"][arm]["0.2"]["test_acc"]
        assert len(acc) == 4 and all(0.0 <= a <= 1.0 for a in acc)
    comp = results["comparisons"]["0.2"]
    assert comp["dropblock_vs_standard"]["difference"]["n"] == 4
    assert not (tmp_path / "dropblock_conv" / "checkpoints").exists()


def test_dropblock_model_noise_and_pairing():
    """Arms share parameters; the noise is active in training only and at the right rate."""
    from experiments.dropblock_conv import MapNoiseConvNet, arm_config

    x = jax.random.uniform(jax.random.key(0), (8, 28, 28, 1))
    nets = {arm: MapNoiseConvNet(10, arm_config(arm, 0.2, 3)) for arm in ("none", "dropblock")}
    params = {a: n.init(jax.random.key(1), x, train=False)["params"] for a, n in nets.items()}
    assert jax.tree.structure(params["none"]) == jax.tree.structure(params["dropblock"])
    for a, b in zip(
        jax.tree.leaves(params["none"]), jax.tree.leaves(params["dropblock"]), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    net, p = nets["dropblock"], {"params": params["dropblock"]}
    clean = net.apply(p, x, train=False)
    np.testing.assert_allclose(np.asarray(clean), np.asarray(nets["none"].apply(p, x)))
    noisy = net.apply(p, x, train=True, rngs={"dropout": jax.random.key(2)})
    assert np.abs(np.asarray(noisy - clean)).max() > 0


def test_mc_verdict_combination():
    from experiments.mc_uncertainty import _combine, overall_verdict

    assert _combine(["reproduced", "reproduced"]) == "reproduced"
    assert _combine(["not reproduced", "not reproduced"]) == "not reproduced"
    assert _combine(["reproduced", "inconclusive"]) == "partly reproduced"
    assert _combine(["reproduced", "not reproduced"]) == "mixed"
    both = {"ood_detection": "reproduced", "calibration": "reproduced"}
    assert overall_verdict(both) == "reproduced"
    split = {"ood_detection": "partly reproduced", "calibration": "not reproduced"}
    assert overall_verdict(split).startswith("mixed (OOD detection: partly reproduced")
