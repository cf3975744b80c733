"""The init_variance experiment (claim 9): the smoke preset end to end with its evidence, the
signal gains against the mean-field formulas and explicit weight variances, and the verdict
rule on made-up summaries."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.catalog import claims
from experiments.claims import init_variance as init
from tests.experiments.smoke import PNG, run_preset


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return run_preset(tmp_path_factory.mktemp("init_variance"), "init_variance")


def test_smoke_writes_results_evidence_and_figure(smoke):
    _, path, out_dir = smoke
    assert path == out_dir / "smoke.json"
    results = json.loads(path.read_text())["results"]
    assert "seed 000" in results["source"] and results["claim"]
    assert results["figure"] == "smoke_init_variance.png"
    assert (out_dir / results["figure"]).read_bytes()[:8] == PNG
    ev = results["evidence"]
    assert ev["coverage"] == 1.0 and ev["pairs"] == 2
    assert ev["delta"] in results["equivalence_margin_bits"].values()
    assert results["verdict"] in ("reproduced", "refuted", "contradicted", "inconclusive")
    keys = ["width", "depth", "batch", "rates", "seeds", "seed_list", "residual_branch_scale"]
    assert list(results["config"]) == keys and results["config"]["seed_list"] == [0, 1]
    table = claims()["init_variance"].render(results)
    assert table.startswith("|") and results["verdict"] in table


def test_smoke_follows_mean_field_and_weight_variances(smoke):
    results = smoke[0]["results"]
    for row in results["summary"]:
        if row["arch"] == "plain" and row["rate"] == 0.5:
            assert abs(row["excess_fwd_bits"]["mean"] - row["predicted_bits"]) < 3.0
    factor = {"he": lambda q: 1.0, "times_keep": lambda q: q, "over_keep": lambda q: 1 / q}
    for check in results["weight_checks"]:
        want = [factor[check["kind"]](1 - r) for r in check["rates"]]
        np.testing.assert_allclose(check["var_times_n_over_2"], want, rtol=0.05)
    assert results["verdicts"]["must_account_for_p"] == "reproduced"


def test_one_layer_second_moment_gain():
    width, rate = 512, 0.5
    weights = init.make_weights(jax.random.key(0), jnp.asarray([rate], jnp.float32), width, 2)
    first, w = init.arch_weights("plain", weights)
    x = jax.random.normal(jax.random.key(1), (128, width), jnp.float32)
    u = jax.random.normal(jax.random.key(2), (128, width), jnp.float32)
    r, one = jnp.asarray([rate], jnp.float32), jnp.ones((1,), jnp.float32)
    gains = {}
    for kind in init.KINDS:
        fwd, _ = init.second_moments("plain", first, w[kind], x, u, jax.random.key(3), r, one)
        gains[kind] = float(2.0 ** (fwd[0, 1] - fwd[0, 0]))  # log2 second moments
    # Inverted dropout: gain c / q with c = 1 (He), q (times_keep), 1/q (over_keep).
    assert gains["he"] == pytest.approx(2.0, rel=0.1)
    assert gains["times_keep"] == pytest.approx(1.0, rel=0.1)
    assert gains["over_keep"] == pytest.approx(4.0, rel=0.1)


def test_predicted_excess_bits():
    assert init.predicted_excess_bits("plain", "inverted", "times_keep", 0.5, 50) == 0.0
    assert init.predicted_excess_bits("plain", "inverted", "he", 0.5, 50) == pytest.approx(49.0)
    assert init.predicted_excess_bits("plain", "non_inverted", "over_keep", 0.3, 50) == (
        pytest.approx(0.0, abs=1e-12)
    )
    assert init.predicted_excess_bits("plain", "inverted", "times_keep", 0.5, 50, "eval") == (
        pytest.approx(-49.0)
    )
    # Residual: depth (log2(1 + gain / depth) - log2(1 + 1 / depth)), gain = 1/q for He.
    want = 10 * (np.log2(1 + 2 / 10) - np.log2(1 + 1 / 10))
    assert init.predicted_excess_bits("residual", "inverted", "he", 0.5, 10) == (
        pytest.approx(want)
    )


def test_log2_mean_square_survives_float32_underflow():
    z = jax.random.normal(jax.random.key(0), (64, 32), jnp.float32) * jnp.float32(2.0**-75)
    got = float(init.log2_mean_square(z))
    assert np.isfinite(got) and got == pytest.approx(-150.0, abs=0.5)
    assert float(jnp.mean(z * z)) == 0.0  # the naive second moment underflows


# ------------------------------------------------------------------------ verdict rule
def _summary(excess):
    """Rows for every (network, convention, initialiser) at p = 0.5 with the given excess
    interval ``(low, high)`` in bits per (convention, initialiser)."""
    rows = []
    for arch in init.ARCHS:
        for conv in init.CONVENTIONS:
            for kind in init.KINDS:
                lo, hi = excess[(conv, kind)]
                ci = {"mean": (lo + hi) / 2, "std": 0.01, "n": 6, "ci_low": lo, "ci_high": hi}
                rows.append(
                    dict(
                        arch=arch,
                        convention=conv,
                        kind=kind,
                        rate=0.5,
                        excess_fwd_bits=ci,
                        excess_bwd_bits=ci,
                    )  # fmt: skip
                )
    return rows


CFG = init.Preset(width=256, depth=50, batch=32, rates=(0.5,), seeds=6)
TRUTH = {  # the mean-field picture: inverted wants x q, non-inverted wants / q
    ("inverted", "he"): (40.0, 50.0),
    ("inverted", "times_keep"): (-0.01, 0.01),
    ("inverted", "over_keep"): (90.0, 100.0),
    ("non_inverted", "he"): (-50.0, -40.0),
    ("non_inverted", "times_keep"): (-100.0, -90.0),
    ("non_inverted", "over_keep"): (-0.01, 0.01),
}


def test_decide_direction_per_convention():
    d = init.decide(_summary(TRUTH), CFG)
    assert d["verdict"] == "contradicted"  # the seed's 1/(1-p) is the wrong way round here
    assert d["verdicts"]["inverse_proportional_non_inverted_dropout"] == "reproduced"
    assert d["verdicts"]["must_account_for_p"] == "reproduced"
    assert d["verdicts"]["right_correction_inverted"] == "times_keep"
    # Neither correction preserving the signal refutes the seed's direction.
    broken = {**TRUTH, ("inverted", "times_keep"): (5.0, 6.0)}
    assert init.decide(_summary(broken), CFG)["verdict"] == "refuted"
    # An interval straddling the margin decides nothing.
    wide = {**TRUTH, ("inverted", "times_keep"): (-0.01, 5.0)}
    assert init.decide(_summary(wide), CFG)["verdict"] == "inconclusive"
