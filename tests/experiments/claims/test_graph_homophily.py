"""graph_homophily: the K-class CSBM, the GCN arms and the decision rule, each against an
independent reference (counts, a chi-square test, dense numpy matrices, hand-made
intervals), and the smoke preset end to end."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from experiments.catalog import claims
from experiments.claims import graph_homophily as gh
from experiments.harness.claim import execute
from experiments.harness.results import RunContext


def _graph(seed=0, nodes=600, classes=3, degree=10, h=0.2, dim=8, mu=1.0, train_frac=0.1):
    return gh.make_csbm(
        seed,
        nodes=nodes,
        classes=classes,
        degree=degree,
        homophily=h,
        dim=dim,
        mu=mu,
        train_frac=train_frac,
    )


# ----------------------------------------------------------------------------- the CSBM
@pytest.mark.parametrize("classes", [3, 4])
@pytest.mark.parametrize("h", [0.0, 0.25, 0.8])
def test_csbm_edges_labels_and_split(classes, h):
    g = _graph(classes=classes, h=h)
    s, r, y = g["senders"], g["receivers"], g["y"]
    e = 600 * 10 // 2
    assert s.shape == r.shape == (2 * e,)
    np.testing.assert_array_equal(s[:e], r[e:])  # both directions of every edge
    np.testing.assert_array_equal(r[:e], s[e:])
    assert np.all(s != r)  # no self loops
    assert int(np.sum(y[s[:e]] == y[r[:e]])) == round(h * e)  # exact homophily
    assert gh.edge_homophily(s, r, y) == pytest.approx(round(h * e) / e)
    np.testing.assert_array_equal(np.bincount(y, minlength=classes), 600 // classes)
    assert g["train"].sum() == 60 and not np.any(g["train"] & g["test"])
    assert np.all(g["train"] | g["test"])


@pytest.mark.parametrize("classes", [3, 5])
def test_csbm_heterophilous_edges_pick_the_other_class_uniformly(classes):
    g = _graph(seed=3, nodes=3000, classes=classes, h=0.1)
    e = g["senders"].size // 2
    ys, yr = g["y"][g["senders"][:e]], g["y"][g["receivers"][:e]]
    other = ys != yr
    for c in range(classes):  # per sender class: the K - 1 other classes equally likely
        counts = np.bincount(yr[other & (ys == c)], minlength=classes)
        assert counts[c] == 0
        observed = np.delete(counts, c)
        assert scipy.stats.chisquare(observed).pvalue > 1e-3
    # each sender class sends its share of the edges (senders uniform over the nodes)
    sent = np.bincount(ys, minlength=classes)
    assert scipy.stats.chisquare(sent).pvalue > 1e-3


def test_csbm_class_means_are_orthogonal_with_norm_mu():
    g = _graph(seed=1, nodes=6000, classes=3, h=0.5, dim=8, mu=1.5)
    means = np.stack([g["x"][g["y"] == c].mean(0) for c in range(3)])
    gram = means @ means.T  # noise adds ~ dim / 2000 = 0.004 to the diagonal
    np.testing.assert_allclose(gram, 1.5**2 * np.eye(3), atol=0.15)
    residual = g["x"] - means[g["y"]]
    np.testing.assert_allclose(residual.std(0), 1.0, atol=0.05)


def test_claimed_sign_regimes():
    assert [gh.claimed_sign(h, 3) for h in (0.0, 0.2, 0.3, 1 / 3, 0.4, 0.5, 0.51, 0.9)] == [
        1,
        1,
        1,
        0,
        0,
        0,
        -1,
        -1,
    ]
    assert [gh.claimed_sign(h, 5) for h in (0.15, 0.2, 0.3, 0.7)] == [1, 0, 0, -1]


# ------------------------------------------------------------------------------ the arms
def _dense_gcn(params, x, senders, receivers):
    """Kipf & Welling's GCN with a dense normalised adjacency, in numpy."""
    n = x.shape[0]
    a = np.zeros((n, n))
    np.add.at(a, (receivers, senders), 1.0)
    a_hat = a + np.eye(n)
    d = a_hat.sum(1)
    norm = a_hat / np.sqrt(d[:, None] * d[None, :])
    p = jax.tree.map(np.asarray, params["params"])
    h = np.maximum(norm @ (x @ p["gc0"]["dense"]["kernel"]) + p["bias0"], 0.0)
    return norm @ (h @ p["gc1"]["dense"]["kernel"]) + p["bias1"]


def test_gcn_on_the_csbm_and_the_mlp_reference_match_dense_numpy():
    g = _graph(nodes=60, degree=4, h=0.3, dim=5)
    preset = gh.PRESETS["smoke"]
    x, s, r = jnp.asarray(g["x"]), jnp.asarray(g["senders"]), jnp.asarray(g["receivers"])
    model = gh._model("none", preset, 3)
    params = model.init(jax.random.key(0), x, s, r)
    want = _dense_gcn(params, g["x"].astype(np.float64), g["senders"], g["receivers"])
    np.testing.assert_allclose(np.asarray(model.apply(params, x, s, r)), want, atol=2e-5)
    # the ``mlp`` arm: no edges, so the network is relu(x W0 + b0) W1 + b1
    empty = np.zeros(0, np.int32)
    want = _dense_gcn(params, g["x"].astype(np.float64), empty, empty)
    got = model.apply(params, x, s[:0], r[:0])
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-5)


def test_arms_start_from_the_same_parameters():
    g = _graph(nodes=60, degree=4, dim=5)
    x, s, r = jnp.asarray(g["x"]), jnp.asarray(g["senders"]), jnp.asarray(g["receivers"])
    preset = gh.PRESETS["smoke"]
    key = jax.random.key(7)
    ref = gh._model("none", preset, 3).init(key, x, s, r)
    for arm in gh.ARMS[1:]:
        other = gh._model(arm, preset, 3).init(key, x, s, r)
        assert jax.tree.structure(other) == jax.tree.structure(ref)
        for a, b in zip(jax.tree.leaves(other), jax.tree.leaves(ref), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # and only the edge arm drops edges, only the feature arm features
    assert gh._model("edge", preset, 3).edge_rate == preset.edge_rate
    assert gh._model("feature", preset, 3).dropout.rate == preset.feature_rate
    assert gh._model("node", preset, 3).edge_rate == 0.0
    assert gh._model("node", preset, 3).dropout.kind == "none"


# ---------------------------------------------------------------------- the decision rule
def _row(classes, h, lo, hi, std=0.01):
    diff = {"mean": (lo + hi) / 2, "std": std, "n": 10, "ci_low": lo, "ci_high": hi}
    return {
        "classes": classes,
        "homophily": h,
        "differences": {name: diff for name in gh.COMPARISONS},
    }


def test_decide_reads_the_sign_from_the_regime():
    summary = [
        _row(3, 0.0, 0.03, 0.05),  # heterophily, edge helps: reproduced
        _row(3, 1 / 3, -0.5, -0.4),  # no claim: not decided
        _row(3, 0.9, 0.03, 0.05),  # homophily, edge helps: contradicted
    ]
    out = gh.decide(summary)
    first, middle, last = out["decisions"]
    assert first["edge - none"]["verdict"] == "reproduced" and first["claimed_sign"] == 1
    assert "edge - none" not in middle and middle["claimed_sign"] == 0
    assert last["edge - none"]["verdict"] == "contradicted" and last["claimed_sign"] == -1
    assert out["combined"]["edge - none (P1, P2)"]["verdict"] == "contradicted"
    ev = out["evidence"]
    assert ev["coverage"] is None and ev["delta"] == gh.DELTA and ev["pairs"] == 10
    assert out["verdict"] == "contradicted"  # no protocol to cover: the intervals decide


def test_decide_headline_is_what_the_intervals_say_without_a_source_protocol():
    summary = [_row(3, 0.1, 0.03, 0.05), _row(3, 0.8, -0.05, -0.03)]
    out = gh.decide(summary)
    assert out["combined"]["edge - none (P1, P2)"]["verdict"] == "reproduced"
    assert out["verdict"] == "reproduced"  # the seed has no protocol: nothing to fall short of
    summary = [_row(3, 0.1, -0.01, 0.01), _row(3, 0.8, -0.01, 0.01)]
    assert gh.decide(summary)["combined"]["edge - none (P1, P2)"]["verdict"] == "refuted"


# --------------------------------------------------------------------------- smoke preset
@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / gh.NAME
    ctx = RunContext(name=gh.NAME, preset="smoke", out_dir=out, quiet=True)
    payload, path = execute(gh.CLAIM, ctx)
    return payload, path, out


def test_smoke_writes_results_evidence_and_figure(smoke):
    payload, path, out = smoke
    assert path == out / "smoke.json"
    results = json.loads(path.read_text())["results"]
    assert results["verdict"] in {"reproduced", "refuted", "contradicted", "inconclusive"}
    assert set(results["evidence"]) == {"coverage", "data", "power", "delta", "pairs"}
    assert results["evidence"]["coverage"] is None
    assert results["evidence"]["pairs"] == gh.PRESETS["smoke"].seeds
    assert "seed 000" in results["source"] and results["claim"]
    assert results["figure"] == "smoke_accuracy_vs_homophily.png"
    assert (out / results["figure"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = claims()[gh.NAME].render(results)
    assert table.count("\n| 3 |") == len(gh.PRESETS["smoke"].homophily)


def test_smoke_arms_are_paired_and_learn(smoke):
    results = smoke[0]["results"]
    preset = gh.PRESETS["smoke"]
    for rec in results["per_seed"]:
        for arm in gh.ARMS:
            assert len(rec["test_acc"][arm]) == preset.seeds
        assert np.allclose(rec["measured_homophily"], rec["homophily"], atol=1e-3)
        # the reported difference is arm - baseline over the same seeds
        row = next(r for r in results["summary"] if r["homophily"] == rec["homophily"])
        want = np.mean(np.subtract(rec["test_acc"]["edge"], rec["test_acc"]["none"]))
        assert row["differences"]["edge - none"]["mean"] == pytest.approx(want)
    homophilous = next(r for r in results["summary"] if r["homophily"] == 0.9)
    # with 90 % same-class neighbours the graph must beat the features alone
    assert homophilous["test_acc"]["none"]["mean"] > homophilous["test_acc"]["mlp"]["mean"] + 0.2


def test_evidence_power_is_the_weakest_decided_level():
    summary = [
        _row(3, 0.0, 0.03, 0.05, std=0.01),
        _row(3, 0.2, 0.03, 0.05, std=0.03),  # the weakest decided level
        _row(3, 0.4, 0.03, 0.05, std=0.2),  # no claim: not counted
        _row(3, 0.9, 0.0, 0.0, std=0.0),  # zero-width interval: no finite power
    ]
    df = 9
    want = scipy.stats.nct.sf(scipy.stats.t.ppf(0.975, df), df, gh.DELTA * np.sqrt(10) / 0.03)
    assert gh.decide(summary)["evidence"]["power"] == pytest.approx(want, rel=1e-9)
