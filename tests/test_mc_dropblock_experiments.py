"""Smoke run of the DropBlock experiment (mc_uncertainty: test_mc_uncertainty_experiment.py)."""

from __future__ import annotations

import json

import jax
import numpy as np

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
