"""experiments/claims/backprojection/ (Bouthillier et al. 2015, Sec. 3.1 and 5.2, Figs 2, 4, 5):
the smoke preset runs end to end; the pieces it relies on (noisy activations, the
backproject arm's batch, the matching error, the decision) are checked against explicit
numpy references on small inputs."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dropjax
from experiments.catalog import claims
from experiments.claims import backprojection as bp
from experiments.harness.models import MLP
from tests.experiments.smoke import PNG, run_preset


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return run_preset(tmp_path_factory.mktemp("backprojection"), bp.NAME)


def test_smoke_writes_results_evidence_and_figures(smoke):
    payload, path, out_dir = smoke
    on_disk = json.loads(path.read_text())
    results = on_disk["results"]
    assert path == out_dir / "smoke.json" and on_disk["preset"] == "smoke"
    assert "seed 002" in results["source"] and results["seeds"] == [0, 1]
    assert results["figures"] == [
        "smoke_fig2_dropout_samples.png",
        "smoke_fig5_random_dropout_samples.png",
        "smoke_test_error.png",
    ]
    for name in results["figures"]:
        assert (out_dir / name).read_bytes()[:8] == PNG
    assert not list(out_dir.glob(".*tmp*"))  # atomic writes leave no temp file
    ev = results["evidence"]
    assert ev["delta"] == bp.DELTA and ev["pairs"] == 2 and ev["data"] == "real"
    assert 0 < ev["coverage"] < 1e-3 and results["verdict"].startswith("vs plain: ")
    table = claims()[bp.NAME].render(results)
    assert "|---" in table and results["verdict"] in table


def test_smoke_matching_fits_the_layer_it_targets(smoke):
    records = smoke[0]["results"]["matching"]
    assert set(records) == {
        f"{k}/layer {i}" for k in ("standard", "random_rate", "box") for i in (1, 2)
    } | {"joint"}
    for i in (1, 2):
        for kind in ("standard", "random_rate"):
            errors = records[f"{kind}/layer {i}"]["error"]
            # far better than x itself (error 1) at its own layer
            assert errors[i - 1] < 0.5, (kind, i, errors)
    assert records["box/layer 1"]["outside_unit_box"] == 0.0


def _params(hidden=(6, 5), d=4, seed=0):
    model = bp.BackprojMLP(hidden, "plain")
    return model, model.init(jax.random.key(seed), jnp.zeros((1, d)))["params"]


def _numpy_layers(params, n):
    return [
        (
            np.asarray(params[f"fc{i}"]["dense"]["kernel"]),
            np.asarray(params[f"fc{i}"]["dense"]["bias"]),
        )
        for i in range(n)
    ]


def test_noisy_activations_against_explicit_masks():
    _, params = _params()
    x = jax.random.uniform(jax.random.key(1), (3, 4))
    key, rate = jax.random.key(3), 0.5
    noisy = bp.noisy_activations(params, x, 2, key, rate, "standard")
    # Eq. 6 by hand: each layer's keep mask from the documented key split, inverted scaling
    (w1, b1), (w2, b2) = _numpy_layers(params, 2)
    k1, k2 = jax.random.split(key, 2)
    m1 = np.asarray(dropjax.keep_mask(k1, (3, 6), rate))
    m2 = np.asarray(dropjax.keep_mask(k2, (3, 5), rate))
    h1 = m1 * np.maximum(np.asarray(x) @ w1 + b1, 0) / (1 - rate)
    h2 = m2 * np.maximum(h1 @ w2 + b2, 0) / (1 - rate)
    np.testing.assert_allclose(noisy[0], h1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(noisy[1], h2, rtol=1e-5, atol=1e-6)
    for kind in ("standard", "random_rate"):  # rate 0: the clean network
        clean = bp.noisy_activations(params, x, 2, key, 0.0, kind)
        np.testing.assert_allclose(
            clean[1], np.maximum(np.maximum(x @ w1 + b1, 0) @ w2 + b2, 0), rtol=1e-5, atol=1e-6
        )


def test_matching_error_against_numpy():
    rng = np.random.default_rng(0)
    clean, target, matched = (rng.normal(size=(4, 7)) for _ in range(3))
    expected = np.sqrt(((matched - target) ** 2).sum()) / np.sqrt(((target - clean) ** 2).sum())
    got = bp.matching_error(jnp.asarray(clean), jnp.asarray(target), jnp.asarray(matched))
    assert got == pytest.approx(expected, rel=1e-5)


def test_split_sizes_keeps_half_the_batch_clean():
    assert bp.split_sizes(100, 2) == (50, 25)
    assert bp.split_sizes(64, 2) == (32, 16)
    assert bp.split_sizes(10, 3) == (7, 1)


def test_backproject_arm_shares_parameters_and_trains_on_x_star():
    model, params = _params()
    for mode in ("dropout", "backproject"):
        other = bp.BackprojMLP((6, 5), mode).init(jax.random.key(0), jnp.zeros((1, 4)))
        jax.tree.map(np.testing.assert_array_equal, params, other["params"])
    # the same names and values as experiments.harness.models.MLP (the harness pairs arms by seed)
    mlp = MLP(hidden=(6, 5)).init(jax.random.key(0), jnp.zeros((1, 4)))
    jax.tree.map(np.testing.assert_array_equal, params, mlp["params"])
    x = jax.random.uniform(jax.random.key(4), (8, 4))
    arm = bp.BackprojMLP((6, 5), "backproject", gn_steps=(2, 2), cg_steps=3)
    rngs = {"dropout": jax.random.key(5)}
    logits, vjp = jax.jit(
        lambda p: jax.vjp(lambda q: arm.apply({"params": q}, x, train=True, rngs=rngs), p)
    )(params)
    clean = model.apply({"params": params}, x)
    assert logits.shape == (8, 10)
    np.testing.assert_allclose(logits[:4], clean[:4], rtol=1e-5, atol=1e-6)  # clean half
    assert not np.allclose(logits[4:], clean[4:])  # x(1)* for rows 4-5, x(2)* for rows 6-7
    (grads,) = vjp(jnp.ones_like(logits))
    assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))


def test_backproject_layer_matches_the_noise_better_than_x():
    _, params = _params(hidden=(6, 3), d=12)
    x = jax.random.uniform(jax.random.key(6), (4, 12))
    targets = bp.noisy_activations(params, x, 2, jax.random.key(7), 0.5, "standard")
    (w1, b1), _ = _numpy_layers(params, 2)
    res = bp.backproject_layer(params, x, targets[0], 0, steps=5, cg_steps=6, damping=1e-4)
    relu = lambda z: np.maximum(z, 0)
    before = np.linalg.norm(relu(np.asarray(x) @ w1 + b1) - targets[0])
    after = np.linalg.norm(relu(np.asarray(res.x) @ w1 + b1) - targets[0])
    assert after < 0.05 * before  # 12 inputs, 6 units: the dropped pattern has a preimage


def test_decide_reads_the_three_comparisons():
    rng = np.random.default_rng(0)
    plain = list(10 + rng.normal(0, 0.05, 6))
    dropout = [v - 2.0 + rng.normal(0, 0.05) for v in plain]
    noise = [0.05, -0.05, 0.03, -0.03, 0.01, -0.01]  # mean 0: no drop, no gain over dropout
    backproject = [v + e for v, e in zip(dropout, noise, strict=True)]
    out = bp.decide({"plain": plain, "dropout": dropout, "backproject": backproject}, 0.01)
    c = out["comparisons"]
    assert c["backproject − plain"]["verdict"] == "reproduced"
    assert c["dropout − plain"]["verdict"] == "reproduced"
    assert c["backproject − dropout"]["verdict"] == "refuted"
    assert c["backproject − dropout"]["reading"] == "no drop as large as δ"
    diff = np.array(backproject) - np.array(plain)
    assert c["backproject − plain"]["difference"]["mean"] == pytest.approx(diff.mean())
    # decided, but at 1 % of the paper's protocol: indicative, with what the interval says
    assert out["verdict"] == (
        "vs plain: indicative (a gain); no significant drop vs dropout: indicative (interval: "
        "reproduced) (no drop as large as δ)"
    )
    assert out["evidence"]["pairs"] == 6 and out["evidence"]["coverage"] == 0.01
    worse = [v + 1.0 for v in dropout]  # a drop of 1 point, beyond δ
    out = bp.decide({"plain": plain, "dropout": dropout, "backproject": worse}, 1.0)
    # A drop of a point contradicts the paper's "no significant drop" (the mislabel was
    # "reproduced (a drop)": the comparison's verdict read as the claim's).
    assert out["verdict"] == (
        "vs plain: reproduced (a gain); no significant drop vs dropout: contradicted (a drop)"
    )


def test_an_interrupted_run_resumes_arm_by_arm(smoke, tmp_path, monkeypatch):
    """Stopped by its budget at the second arm's first checkpoint, then rerun: the first
    arm is restored from its last checkpoint (its parameters feed the back-projection), the
    second resumes, and every arm and the matching end as in the uninterrupted run."""
    from experiments.harness.budget import Budget, BudgetExhausted

    monkeypatch.setenv("DROPJAX_RUNS", str(tmp_path / "runs"))
    per_arm = len(smoke[0]["results"]["arms"]["plain"]["curves"])  # checkpoints per arm
    calls = {"n": 0}

    def stop_in_second_arm(self, step, entry):
        calls["n"] += 1
        if calls["n"] == per_arm + 1:
            raise BudgetExhausted("simulated end of session")

    with monkeypatch.context() as m:
        m.setattr(Budget, "callback", stop_in_second_arm)
        with pytest.raises(BudgetExhausted):
            run_preset(tmp_path / "out", bp.NAME)
    payload, _, _ = run_preset(tmp_path / "out", bp.NAME)
    got, want = payload["results"], smoke[0]["results"]
    first, second = list(want["arms"])[:2]
    assert got["arms"][first]["resumed_from"] == want["arms"][first]["curves"][-1]["step"]
    assert got["arms"][second]["resumed_from"] == want["arms"][second]["curves"][0]["step"]
    for arm in want["arms"]:
        assert got["arms"][arm]["final"] == want["arms"][arm]["final"], arm
    assert got["matching"] == want["matching"]
    assert got["training_matching"] == want["training_matching"]
    assert not [p for p in (tmp_path / "runs").rglob("*") if p.is_file()]  # cleaned up
