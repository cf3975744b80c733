"""The ensemble_jensen experiment (claim 7): the smoke preset end to end with its evidence,
the exact enumeration against brute-force loops over explicit masks, and the verdict rule on
made-up summaries."""

import itertools
import json

import numpy as np
import pytest
import scipy.special

from experiments.catalog import claims
from experiments.claims import ensemble_jensen as ens
from tests.experiments.smoke import PNG, run_preset


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return run_preset(tmp_path_factory.mktemp("ensemble_jensen"), "ensemble_jensen")


def test_smoke_writes_results_evidence_and_figure(smoke):
    _, path, out_dir = smoke
    assert path == out_dir / "smoke.json"
    results = json.loads(path.read_text())["results"]
    assert "seed 000" in results["source"] and results["claim"]
    assert results["figure"] == "smoke_ensemble_jensen.png"
    assert (out_dir / results["figure"]).read_bytes()[:8] == PNG
    ev = results["evidence"]
    assert ev["coverage"] == 1.0 and ev["pairs"] == 3 and ev["delta"] == ens.GAP_TOL
    assert results["verdict"] in ("reproduced", "refuted", "inconclusive")
    keys = ["d_in", "hidden", "classes", "batch", "rates", "seeds", "mc_masks", "seed_list"]
    assert list(results["config"]) == [*keys, "archs"]
    assert results["config"]["rates"] == [0.2, 0.5, 0.8] and results["config"]["seeds"] == 3
    table = claims()["ensemble_jensen"].render(results)
    assert table.startswith("|") and results["verdict"] in table


def test_smoke_linear_exact_nonlinear_not(smoke):
    results = smoke[0]["results"]
    assert results["verdicts"]["linear_exact"] == "reproduced"
    assert results["supporting"]["nwgm_exact"]["verdict"] == "reproduced"
    assert results["supporting"]["relu_jensen_gap_nonnegative"]["verdict"] == "reproduced"
    assert results["mc_matches_enumeration"]
    for r in results["config"]["rates"]:
        assert results["summary"]["mlp_relu"][str(r)]["prob_tv"]["mean"] > 1e-3


# ---------------------------------------------------------------------- enumeration
def test_mask_enumeration_is_a_distribution():
    masks = ens.all_masks(5)
    assert masks.shape == (32, 5) and len({tuple(m) for m in masks}) == 32
    np.testing.assert_allclose(ens.mask_probs(masks, 0.3).sum(), 1.0, rtol=1e-14)


def test_exact_moments_match_brute_force_loops():
    rng = np.random.default_rng(3)
    params = ens.init_params(4, 3, 2, 3)
    x = rng.normal(size=(2, 3))
    rate, q = 0.4, 0.6
    want = np.zeros((2, 3))
    for a in itertools.product((0, 1), repeat=3):
        for b in itertools.product((0, 1), repeat=2):
            prob = np.prod([q if v else rate for v in a + b])
            h = np.tanh((x * np.array(a) / q) @ params["w1"] + params["b1"])
            z = (h * np.array(b) / q) @ params["w2"] + params["b2"]
            want += prob * scipy.special.softmax(z, axis=-1)
    got = ens.exact_moments("mlp_tanh", params, x, rate)["probs"]
    np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("arch", ["mlp_relu", "mlp_tanh"])
def test_hidden_jensen_gap_matches_loops_and_has_relus_sign(arch):
    rng = np.random.default_rng(4)
    params = ens.init_params(7, 4, 3, 3)
    x = rng.normal(size=(5, 4))
    rate, q = 0.3, 0.7
    act = {"mlp_relu": lambda z: np.maximum(z, 0.0), "mlp_tanh": np.tanh}[arch]
    mean = np.zeros((5, 3))
    for a in itertools.product((0, 1), repeat=4):
        prob = np.prod([q if v else rate for v in a])
        mean += prob * act((x * np.array(a) / q) @ params["w1"] + params["b1"])
    want = mean - act(x @ params["w1"] + params["b1"])
    got = ens.hidden_jensen_gap(arch, params, x, rate)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    if arch == "mlp_relu":
        assert got.min() > -1e-12  # convex: E relu(z) >= relu(E z)
    else:
        assert (got < 0).any() and (got > 0).any()  # tanh: either sign


def test_weight_scaling_exact_for_linear_only():
    params = ens.init_params(5, 4, 3, 3)
    x = ens.make_inputs(5, 6, 4)
    lin_gap = ens.gaps("linear", params, x, 0.5)
    relu_gap = ens.gaps("mlp_relu", params, x, 0.5)
    soft = ens.gaps("softmax_regression", params, x, 0.5)
    assert lin_gap["logit_gap_max_abs"] < 1e-12
    assert relu_gap["logit_gap_max_abs"] > 1e-3
    assert soft["logit_gap_max_abs"] < 1e-12  # logits affine in the mask ...
    assert soft["prob_tv"] > 1e-3  # ... but the softmax of them is not
    assert soft["nwgm_tv"] < 1e-12  # the normalised geometric mean is exact


# ------------------------------------------------------------------------ verdict rule
def _summary(linear_gap, tv_low, tv_high):
    """A made-up summary at one rate: the linear gap and the TV interval of both MLPs."""
    tv = {"mean": (tv_low + tv_high) / 2, "std": 0.01, "n": 10, "ci_low": tv_low,
          "ci_high": tv_high, "min": tv_low, "max": tv_high}  # fmt: skip
    point = {"mean": 0.0, "std": 0.0, "n": 10, "ci_low": 0.0, "ci_high": 0.0, "min": 0.0}
    s = {
        "linear": {"0.5": {"logit_gap_rel": {**point, "max": linear_gap}}},
        "softmax_regression": {"0.5": {"nwgm_tv": {**point, "max": 1e-16}}},
        "mlp_relu": {"0.5": {"prob_tv": tv, "hidden_jensen_min_rel": {**point, "max": 0.0}}},
        "mlp_tanh": {"0.5": {"prob_tv": tv}},
        "mc_check": {"0.5": {"abs_z_max": 1.0}},
    }
    return s


def test_decide_both_halves():
    assert ens.decide(_summary(1e-15, 0.05, 0.1), [0.5])["verdict"] == "reproduced"
    # A linear net whose weight-scaled pass misses the ensemble mean refutes "exact".
    d = ens.decide(_summary(1e-3, 0.05, 0.1), [0.5])
    assert d["verdict"] == "refuted" and d["verdicts"]["linear_exact"] == "refuted"
    # Non-linear gaps below the tolerance: weight scaling would be exact enough.
    d = ens.decide(_summary(1e-15, 0.001, 0.005), [0.5])
    assert d["verdicts"]["nonlinear_mismatch"] == "refuted" and d["verdict"] == "refuted"
    # An interval straddling the tolerance decides nothing.
    assert ens.decide(_summary(1e-15, 0.005, 0.05), [0.5])["verdict"] == "inconclusive"
