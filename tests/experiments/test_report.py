"""REPORT.md rendering: coverage and power columns, partial grid runs, legacy verdicts."""

import json
import re
import types

import numpy as np
import scipy.stats

from experiments import report


def _cell(arm, rate, seeds, accs):
    curve = {"step": 12000, "lr": 0.001, "train_loss": [0.0] * len(seeds)}
    curve.update(train_acc=[1.0] * len(seeds), test_loss=[0.0] * len(seeds), test_acc=accs)
    return {
        "params": {"rate": rate, "arm": arm, "seeds": seeds},
        "result": {
            "seeds": seeds,
            "final": {k: curve[k] for k in ("train_loss", "train_acc", "test_loss", "test_acc")},
            "curves": [curve],
            "timing": {},
            "data": {"name": "mnist", "source": "test"},
        },
        "wall_s": 60.0,
        "finished": "2026-11-30T00:00:00Z",
        "environment": {"device_kind": "cpu", "device_count": 1, "git_commit": "abc"},
    }


def test_a_partial_grid_run_is_rendered_with_coverage_and_power(tmp_path):
    seeds = [0, 1, 2, 3]
    std = [0.9910, 0.9915, 0.9920, 0.9912]
    aug = [0.9914, 0.9917, 0.9925, 0.9913]
    cells = {
        "rate=0.5/arm=standard/seeds=0-3": _cell("standard", 0.5, seeds, std),
        "rate=0.5/arm=augmented/seeds=0-3": _cell("augmented", 0.5, seeds, aug),
    }
    payload = {
        "experiment": "lenet_mnist",
        "preset": "paper",
        "status": "partial",
        "cells_done": 2,
        "cells_total": 15,
        "grid": {"fingerprint": "x", "cells": cells},
    }
    (tmp_path / "lenet_mnist").mkdir()
    (tmp_path / "lenet_mnist" / "paper.json").write_text(json.dumps(payload))
    text = report.build_report(tmp_path)
    row = next(line for line in text.splitlines() if "`lenet_mnist`" in line)
    assert "paper (partial: 2/15 cells)" in row
    assert "| 100% |" in row  # full-length cells: coverage of the paper's iterations
    d = [a - s for a, s in zip(aug, std, strict=True)]
    assert f"n={len(d)})" in row  # power is reported with its number of pairs
    # The pooled verdict from these four pairs, by the rule in the report's header (paired
    # t-interval vs 0 and the paper's delta 0.0003), marked interim: the grid is unfinished.
    lo, hi = scipy.stats.t.interval(0.95, len(d) - 1, loc=np.mean(d), scale=scipy.stats.sem(d))
    expected = (
        "contradicted"
        if hi < 0
        else ("reproduced" if hi >= 3e-4 else "reproduced-smaller")
        if lo > 0
        else "refuted"
        if hi < 3e-4
        else "inconclusive"
    )
    # This file records no decision spec, as files written before specs were recorded:
    # its row also says it is decided under a rule that changed after its data.
    assert f"**interim, 2/15 cells: {expected} (rule changed after data" in row, row


def _verdict_of(d: list[float], delta: float = 3e-4) -> str:
    """The header's rule on a paired t-interval (independent of experiments.harness.stats)."""
    lo, hi = scipy.stats.t.interval(0.95, len(d) - 1, loc=np.mean(d), scale=scipy.stats.sem(d))
    if hi < 0:
        return "contradicted"
    if lo > 0:
        return "reproduced" if hi >= delta else "reproduced-smaller"
    return "refuted" if hi < delta else "inconclusive"


def test_a_grid_missing_only_secondary_cells_is_not_interim(tmp_path):
    rng = np.random.default_rng(0)
    seeds, cells, diffs = [0, 1, 2, 3], {}, []
    for rate in (0.5, 0.1, 0.2, 0.3, 0.4):
        std = 0.992 + 0.0005 * rng.standard_normal(4)
        aug = std + 0.0002 * rng.standard_normal(4)
        diffs += list(aug - std)
        for arm, acc in (("standard", std), ("augmented", aug)):
            cells[f"rate={rate:g}/arm={arm}/seeds=0-3"] = _cell(arm, rate, seeds, acc.tolist())
    payload = {
        "experiment": "lenet_mnist",
        "preset": "paper",
        "status": "partial",
        "cells_done": 10,
        "cells_total": 15,
        "grid": {"fingerprint": "x", "cells": cells},
    }
    (tmp_path / "lenet_mnist").mkdir()
    (tmp_path / "lenet_mnist" / "paper.json").write_text(json.dumps(payload))
    text = report.build_report(tmp_path)
    row = next(ln for ln in text.splitlines() if "`lenet_mnist`" in ln)
    assert "paper (partial: 10/15 cells)" in row and "n=20)" in row
    # Final, not interim (the file records no spec, so it also says the rule changed).
    assert f"| **{_verdict_of(diffs)} (rule changed after data" in row, row
    assert "its cells ran at" not in text  # one commit: nothing to say

    # A grid resumed across sessions names its commits, with the number of cells of each.
    for i, cell in enumerate(cells.values()):
        cell["environment"] = {
            **cell["environment"],
            "git_commit": "1234567aaa" if i < 3 else "89abcdefff",
        }
    (tmp_path / "lenet_mnist" / "paper.json").write_text(json.dumps(payload))
    assert "its cells ran at `1234567` (3), `89abcde` (7)." in report.build_report(tmp_path)


def test_results_without_evidence_are_marked_legacy(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "claims", dict)  # no renderer: the summary row only
    payload = {
        "experiment": "linear_l2",
        "preset": "quick",
        "environment": {"device_kind": "cpu", "device_count": 1},
        "results": {"verdict": "reproduced"},
    }
    (tmp_path / "linear_l2").mkdir()
    (tmp_path / "linear_l2" / "quick.json").write_text(json.dumps(payload))
    row = next(line for line in report.build_report(tmp_path).splitlines() if "`linear_l2`" in line)
    assert "not recorded" in row and "legacy rule" in row


def _paper_in_flight_over_quick(tmp_path, monkeypatch, hook_results, cells_done, quick_verdict):
    """``linear_l2`` with an unfinished paper grid (its partial hook returns
    ``hook_results``) and a finished quick run; returns the folder and the paper payload."""
    hooks = types.SimpleNamespace(render=None, partial=lambda payload: hook_results)
    monkeypatch.setattr(report, "claims", lambda: {"linear_l2": hooks})
    folder = tmp_path / "linear_l2"
    folder.mkdir()
    cell = {"params": {"seeds": [0]}, "environment": {}, "wall_s": 1.0}
    partial = {"preset": "paper", "status": "partial", "cells_done": cells_done, "cells_total": 9}
    partial["grid"] = {"cells": {"a": cell}}
    (folder / "paper.json").write_text(json.dumps(partial))
    quick = {"preset": "quick", "environment": {}, "results": {"verdict": quick_verdict}}
    (folder / "quick.json").write_text(json.dumps(quick))
    return folder, partial


def test_an_undecided_partial_grid_gives_way_to_a_finished_smaller_preset(tmp_path, monkeypatch):
    folder, partial = _paper_in_flight_over_quick(
        tmp_path, monkeypatch, {"verdict": "not tested"}, 1, "reproduced"
    )
    assert report.load_results(tmp_path, "linear_l2")["preset"] == "quick"
    partial["grid"]["cells"] = {}  # and with no finished cell at all
    (folder / "paper.json").write_text(json.dumps(partial))
    assert report.load_results(tmp_path, "linear_l2")["preset"] == "quick"


def test_an_interim_larger_preset_keeps_the_finished_smaller_one_in_view(tmp_path, monkeypatch):
    """A paper grid in flight whose cells decide something is the headline (interim); the
    finished quick run's section stays in the report below it, verdict and all."""
    folder, partial = _paper_in_flight_over_quick(
        tmp_path, monkeypatch, {"verdict": "refuted", "interim": True}, 3, "contradicted"
    )
    text = report.build_report(tmp_path)
    row = next(line for line in text.splitlines() if "`linear_l2`" in line)
    assert "paper (partial: 3/9 cells)" in row and "interim, 3/9 cells: refuted" in row
    assert "Finished `quick` run, shown while the `paper` run above is in flight" in text
    assert re.search(r"\*\*Verdict: contradicted[^*]*\.\*\* Preset `quick`", text)
    # Once the paper grid is complete, only it is shown.
    partial.update(status="complete", results={"verdict": "refuted"})
    (folder / "paper.json").write_text(json.dumps(partial))
    assert "Finished `quick`" not in report.build_report(tmp_path)


def test_the_committed_report_is_what_the_committed_results_render_to():
    """REPORT.md is generated: rendering the committed results files reproduces it exactly
    (any change to how the claims summarise or render shows up here)."""
    from experiments.harness.results import PUBLISHED

    assert report.build_report(PUBLISHED) == report.REPORT_PATH.read_text()


def test_spec_note_tells_parts_that_ran_unrecorded_from_parts_not_started():
    """A part whose cells ran before specs were recorded says so; a part with no cell yet
    says that nothing has run (its spec is recorded at its first cell)."""
    from experiments.harness import stats

    spec = stats.DecisionSpec(
        {"a": ("b beats a", "every")}, (stats.Contrast("a", "b", "a", "all", +1, 0.01),), 4
    )
    claim = types.SimpleNamespace(specs=lambda preset: {"old": spec, "new": spec, "next": spec})
    recorded = {"new": {"hash": stats.spec_hash(spec)}}
    payload = {
        "preset": "paper",
        "results": {},
        "grid": {"specs_at_start": recorded, "cells": {"old/x/seeds=0-1": {}, "new/x": {}}},
    }
    changed, lines = report._spec_note(payload, claim)
    assert changed == ""
    assert "No hash was recorded for `old`: those cells ran before" in lines[0]
    assert "`next`: no cell run yet; the spec is recorded at the first." in lines[0]
    assert "`new`" in lines[0].split("recorded at the first cell:")[1]
