"""The active-learning experiment: smoke run, pairing of the arms, resume, helpers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from experiments import catalog
from experiments.claims import active_learning as al
from experiments.harness.budget import Budget, BudgetExhausted
from experiments.harness.claim import execute
from experiments.harness.results import RunContext


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.setenv("DROPJAX_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"


def test_smoke_run_and_resume(tmp_path, runs):
    ctx = RunContext(name=al.NAME, preset="smoke", out_dir=tmp_path / al.NAME, quiet=True)
    payload, path = execute(catalog.claim(al.NAME), ctx)
    assert path == tmp_path / al.NAME / "smoke.json"
    results = json.loads(path.read_text())["results"]
    assert results["labels"] == [20, 30, 40]
    assert results["scope"].startswith("beyond the seeds")
    assert (ctx.out_dir / results["figure"]).stat().st_size > 0
    assert not al.checkpoint_path("smoke").exists()  # removed once the results are written
    for arm in al.ARMS:
        acc = np.asarray(results["curves"][arm]["per_seed"])
        assert acc.shape == (2, 3) and np.all((acc >= 0) & (acc <= 1))
    # Paired arms: round 0 has the same labels, initialisation and keys in every arm.
    first = {arm: [a[0] for a in results["curves"][arm]["per_seed"]] for arm in al.ARMS}
    assert all(first[arm] == first["random"] for arm in al.ARMS)
    assert isinstance(results["verdict"], str) and results["verdict"]
    markdown = catalog.claims()[al.NAME].render(results)
    assert "| batch_bald |" in markdown and "beyond the seeds" in markdown

    # Interrupted after one round (an exhausted time budget), then resumed: same numbers.
    preset, data = al.PRESETS["smoke"], al.load_data("digits", None)
    with pytest.raises(BudgetExhausted):
        al.run_loop(preset, data, [0, 1], name="smoke", quiet=True, budget=Budget(1e-4))
    saved = json.loads(al.checkpoint_path("smoke").read_text())
    assert saved["round"] == 1 and len(saved["labelled"][0]) == 30
    state = al.run_loop(preset, data, [0, 1], name="smoke", quiet=True, budget=Budget(None))
    assert state["resumed_from"] == 1
    resumed = al.summarise(state["history"], preset, 2, True)
    for arm in al.ARMS:  # later rounds depend on the acquisitions: all must match
        assert resumed["curves"][arm]["per_seed"] == results["curves"][arm]["per_seed"], arm


def test_checkpoint_of_another_configuration_is_refused(tmp_path):
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"fingerprint": "abc", "round": 2}))
    with pytest.raises(ValueError, match="delete it"):
        al._load_state(path, "def")
    assert al._load_state(path, "abc")["round"] == 2
    assert al._load_state(tmp_path / "missing.json", "abc") is None


def test_initial_labels_are_balanced_and_pool_excludes_labelled():
    y = np.repeat(np.arange(10, dtype=np.int32), 50)
    start = al.initial_labels(y, 20, 10, seed=3)
    assert len(set(start.tolist())) == 20
    assert np.bincount(y[start], minlength=10).tolist() == [2] * 10
    np.testing.assert_array_equal(start, al.initial_labels(y, 20, 10, seed=3))
    pool = al.pool_subset(start, len(y), 100, seed=3, round_=0)
    assert len(pool) == 100 and not np.isin(pool, start).any()
    assert not np.array_equal(pool, al.pool_subset(start, len(y), 100, seed=3, round_=1))


def test_labels_to_and_censoring():
    labels = [20, 30, 40, 50]
    assert al.labels_to(labels, np.array([0.5, 0.91, 0.89, 0.95]), 0.9) == 30
    assert al.labels_to(labels, np.array([0.5, 0.6, 0.7, 0.8]), 0.9) is None
    ok = {"verdict": "reproduced", "headline": "reproduced"}
    assert al._censoring_safe(ok, False, True)["verdict"] == "reproduced"
    assert al._censoring_safe(ok, True, False)["verdict"] == "inconclusive"
    bad = {"verdict": "contradicted", "headline": "contradicted"}
    assert al._censoring_safe(bad, False, True)["verdict"] == "inconclusive"
    assert al._combine(["reproduced"] * 4) == "reproduced"
    assert al._combine(["reproduced", "inconclusive"]) == "partly reproduced"
    assert al._combine(["indicative", "indicative"]) == "indicative"
