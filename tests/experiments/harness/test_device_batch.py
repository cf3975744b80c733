"""Tests for experiments.harness.device_batch: packed data reads back, the plan's commands
and budget."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.harness import data as data_lib
from experiments.harness import device_batch


def test_pack_writes_a_cache_the_loader_reads(tmp_path, monkeypatch):
    (path,) = device_batch.pack(("digits",), tmp_path)
    assert path == tmp_path / "digits.npz"
    original = data_lib.load("digits")
    monkeypatch.setenv(data_lib.DATA_DIR_ENV, str(tmp_path))
    packed = data_lib.load("digits")
    assert packed.source == "cache"
    for k in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(packed, k), getattr(original, k))


def test_run_plan_splits_the_budget_and_points_the_loader_at_the_data(tmp_path, monkeypatch):
    calls = []

    def fake_call(cmd, env):
        calls.append((cmd, env))
        return 75 if len(calls) == 1 else 0

    monkeypatch.setattr(device_batch.subprocess, "call", fake_call)
    plan = [("a", "paper", "^table1/", ("mnist",)), ("b", "smoke", None, ("digits",))]
    records = device_batch.run_plan(plan, tmp_path / "out", 8.0, tmp_path)
    first, second = (cmd for cmd, _ in calls)
    assert first[first.index("--cells") + 1] == "^table1/"
    assert "--cells" not in second
    assert first[first.index("--out") + 1] == str(tmp_path / "out")
    # The first experiment gets half of 8 minutes; the second what is left (the fake
    # call returned at once, so about 8 minutes).
    assert float(first[first.index("--time-budget") + 1]) == pytest.approx(4.0, abs=0.05)
    assert float(second[second.index("--time-budget") + 1]) == pytest.approx(8.0, abs=0.05)
    assert all(env[data_lib.DATA_DIR_ENV] == str(tmp_path.resolve()) for _, env in calls)
    assert [r["returncode"] for r in records] == [75, 0]


def test_run_plan_skips_what_the_budget_cannot_hold(tmp_path, monkeypatch):
    monkeypatch.setattr(device_batch.subprocess, "call", lambda cmd, env: pytest.fail("ran"))
    records = device_batch.run_plan([("a", "paper", None, ())], tmp_path, 0.2, tmp_path)
    assert records == [{"experiment": "a", "preset": "paper", "skipped": "no time left"}]


def test_run_refuses_without_packed_data(tmp_path, capsys):
    with pytest.raises(SystemExit):
        device_batch.main(["run", "--data-dir", str(tmp_path), "--out", str(tmp_path)])
    assert "device_batch pack" in capsys.readouterr().err
