"""Renders experiments/REPORT.md from the committed results JSON (nothing typed by hand).

``python -m experiments report`` reads ``experiments/results/<name>/<preset>.json`` for every
claim below, taking the largest preset present (paper, scaled, quick, smoke), and writes
the report: a summary table, then for each claim the seed's statement, the experiment's own
table (its ``render``), the verdict, the command that regenerates it and its figure.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any

import numpy as np

from experiments.catalog import ACCELERATOR, CLAIMS, claims
from experiments.harness import stats
from experiments.harness.results import PUBLISHED, cells_wall_time

__all__ = ["CLAIMS", "build_report", "load_results"]

PRESET_ORDER = ("paper", "scaled", "quick", "smoke")
REPORT_PATH = Path(__file__).resolve().parent / "REPORT.md"


def load_results(
    out: Path, name: str, presets: tuple[str, ...] = PRESET_ORDER
) -> dict[str, Any] | None:
    """The results payload of the largest preset present, or None.

    An unfinished grid run (``"status": "partial"``) counts when its experiment can
    summarise partial cells (its ``partial`` hook); its payload then gets ``results`` from
    that hook and ``partial: "k/n cells"``.
    """
    table = claims()
    for preset in presets:
        path = Path(out) / name / f"{preset}.json"
        if not path.exists():
            continue
        payload = json.loads(path.read_text())
        payload["_path"] = str(path)
        if payload.get("status") == "partial":
            hook = table[name].partial if name in table else None
            results = hook(payload) if hook is not None else None
            if results is None or results.get("verdict") == "not tested":
                continue  # nothing decided yet: a smaller preset's results say more
            payload["results"] = results
            payload["partial"] = f"{payload['cells_done']}/{payload['cells_total']} cells"
            cells = list(payload["grid"]["cells"].values())
            payload["environment"] = cells[-1]["environment"]
            payload["wall_time_s"] = cells_wall_time(cells)
        return payload
    return None


def _finished_below(out: Path, name: str, payload: dict[str, Any]) -> dict[str, Any] | None:
    """While a larger preset's grid is in flight (its interim look is the headline), the
    largest smaller preset that finished, so that a finished verdict is never hidden."""
    if not payload.get("partial"):
        return None
    smaller = PRESET_ORDER[PRESET_ORDER.index(payload["preset"]) + 1 :]
    finished = load_results(out, name, smaller)
    return None if finished is None or finished.get("partial") else finished


def _verdict(results: dict[str, Any]) -> str:
    if results.get("not_run"):
        return "not run"
    verdict = str(results.get("verdict", "—"))
    no_protocol = "coverage" in (results.get("evidence") or {})  # recorded as None
    if _coverage(results) is None and not no_protocol:  # decided before coverage was kept
        return f"{verdict} (legacy rule, coverage not recorded)"
    return verdict


def _coverage(results: dict[str, Any]) -> float | None:
    """The protocol coverage a results dict records (``evidence``, or a decision's)."""
    for holder in (results.get("evidence"), results, results.get("decision")):
        if isinstance(holder, dict) and holder.get("coverage") is not None:
            return float(holder["coverage"])
    return None


def _pct(fraction: float) -> str:
    """A coverage as a percentage, with two significant digits below 1 % (0.23 %, not 0 %)."""
    if 0 < fraction < 0.01:
        return f"{100 * fraction:.2g}%"
    return f"{fraction:.0%}"


def _sd_from_power(power: float, delta: float, n: int) -> float | None:
    """The paired SD at which :func:`stats.power` of ``n`` pairs for ``delta`` is ``power``
    (power falls strictly as the SD grows, so it is unique): for results written before
    they recorded the refutation rates, which then follow from the same design."""
    import scipy.optimize

    if not (0.0 < power < 1.0) or n < 2 or delta <= 0:
        return None
    f = lambda log_sd: stats.power(delta, delta * float(np.exp(log_sd)), n) - power
    try:  # between delta / 1000 (power 1) and 1000 delta (power about 0.025)
        return delta * float(np.exp(scipy.optimize.brentq(f, -7.0, 7.0, xtol=1e-12)))
    except ValueError:
        return None


def _rate(value: Any) -> str:
    return "—" if value is None or value != value else f"{value:.2f}"


def _evidence(results: dict[str, Any]) -> tuple[str, str, str]:
    """The coverage, ``P(reproduce | δ)`` and ``P(refute | 0)`` cells of the summary table."""
    ev = results.get("evidence")
    if not ev:
        cov = _coverage(results)
        if cov is None:
            return "not recorded", "—", "—"
        sub = (results.get("decision") or {}).get("substitute") or results.get("substitute")
        not_paired = "— (not a paired test)"
        return _pct(cov) + (" (SUBSTITUTE data)" if sub else ""), not_paired, not_paired
    cov = ev.get("coverage")
    cov_txt = "n/a (no source protocol)" if cov is None else _pct(cov)
    if ev.get("data") == "SUBSTITUTE":
        cov_txt += " (SUBSTITUTE data)"
    if ev.get("missing"):  # coverage counts the paper's table cells: say which are missing
        cov_txt += f"; {ev['missing']}"
    power = ev.get("p_reproduce_delta", ev.get("power"))
    refute = ev.get("p_refute_zero")
    delta, pairs = ev.get("delta"), ev.get("pairs")
    if refute is None and power is not None and delta is not None and pairs:
        sd = _sd_from_power(power, float(delta), int(pairs))
        if sd is not None:
            refute = stats.error_rates(float(delta), sd, int(pairs))["p_refute_zero"]
    power_txt, refute_txt = _rate(power), _rate(refute)
    if power is not None and power == power and delta is not None:
        power_txt += f" (δ={delta:g}, n={pairs if pairs is not None else '?'})"
    return cov_txt, power_txt, refute_txt


def _figures(payload: dict[str, Any], name: str) -> list[str]:
    res = payload["results"]
    names = res.get("figures") or ([res["figure"]] if res.get("figure") else [])
    return [f"results/{name}/{f}" for f in names]


def _cell_commits(payload: dict[str, Any]) -> str:
    """For a grid run whose cells ran at more than one commit: which, and how many cells
    each (a grid resumed across sessions; each cell records its own environment)."""
    cells = (payload.get("grid") or {}).get("cells") or {}
    commits = collections.Counter(
        str(c.get("environment", {}).get("git_commit"))[:7] for c in cells.values()
    )
    if len(commits) < 2:
        return ""
    return "; its cells ran at " + ", ".join(f"`{c}` ({n})" for c, n in commits.items())


def _core_hours(out: Path, name: str) -> float:
    """Training time of every committed run of ``name`` (all presets), in core-hours: each
    run's wall time times the devices it used (cells: their own wall times)."""
    total = 0.0
    for path in sorted((Path(out) / name).glob("*.json")):
        try:
            payload = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        cells = list(((payload.get("grid") or {}).get("cells") or {}).values())
        if cells:
            for c in cells:
                total += float(c.get("wall_s") or 0.0) * int(
                    (c.get("environment") or {}).get("device_count") or 1
                )
        else:
            env = payload.get("environment") or {}
            total += float(payload.get("wall_time_s") or 0.0) * int(env.get("device_count") or 1)
    return total / 3600.0


def compute_plan(out: Path = PUBLISHED) -> list[str]:
    """REPORT.md's compute plan: per claim, the run the verdict rests on, the core-hours spent
    on every committed run, the full protocol's cost on one core of this kind of machine
    (that run's wall time / its coverage), and what an accelerator would add."""
    lines = [
        "## Compute plan",
        "",
        "Core-hours spent: every committed run of the experiment (cells' own wall times). Full "
        "protocol on one core: the run's wall time divided by its coverage (an estimate; "
        "`n/a` where the run is the protocol or there is none).",
        "",
        "| # | experiment | verdict rests on | coverage | core-hours spent | full protocol, one "
        "core | an accelerator would add |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for number, _, _, names in CLAIMS:
        for name in names:
            payload = load_results(out, name)
            spent = _core_hours(out, name)
            if payload is None:
                lines.append(
                    f"| {number} | `{name}` | — | — | {spent:.1f} | — | "
                    f"{ACCELERATOR.get(name, '')} |"
                )
                continue
            cov = _coverage(payload["results"])
            wall = float(payload.get("wall_time_s") or 0.0)
            full = "n/a" if not cov or cov >= 1.0 else f"{wall / cov / 3600:.1f} h"
            preset = payload["preset"] + (" (partial)" if payload.get("partial") else "")
            cov_txt = "n/a" if cov is None else _pct(cov)
            lines.append(
                f"| {number} | `{name}` | {preset} | {cov_txt} | {spent:.1f} | {full} "
                f"| {ACCELERATOR.get(name, '')} |"
            )
    return lines + [""]


HEADER = [
    "# dropjax experiments: the seeds' claims, reproduced or refuted",
    "",
    "Rendered by `python -m experiments report` from the results JSON under",
    "`experiments/results/`; every number below comes from those files. Each experiment",
    "records its data source, device, library versions and git commit in its JSON.",
    "",
    "How to read a verdict. A comparative claim is decided on the paired 95 % interval",
    "[lo, hi] of the difference in the claimed direction, against the paper's effect size",
    "δ (`experiments.harness.stats.verdict`, rule `monotone-2026-12`): *contradicted* if hi < 0;",
    "*reproduced* if lo > 0 (*reproduced-smaller* when also hi < δ); *refuted* if lo <= 0",
    "and hi < δ (no effect as large as claimed); else *inconclusive*. A narrower interval",
    "never gets a weaker verdict. *Coverage* is the fraction of the paper's protocol the",
    "run trained (iterations or epochs, times the fraction of the paper's table cells where",
    "the experiment records it); below 100 % of the iterations the headline says",
    "*indicative* instead of reproduced, refuted or contradicted (an inconclusive interval",
    "stays inconclusive), and on a substitute dataset it says so: *refuted (SUBSTITUTE",
    "data)*, for instance. A run at a declared *scaled* protocol (a smaller network and",
    "training set trained to convergence, declared with its decision spec before its runs,",
    "for claims whose paper protocol cannot run on a CPU) says *decided at a scaled",
    "protocol*, its coverage of the paper's protocol beside it, and stays *indicative* if",
    "its curves have not flattened. *P(reproduce | δ)* is the design's chance to call the paper's",
    "effect reproduced if it is real, and *P(refute | 0)* its chance to call it refuted when",
    "the truth is no effect, both from its number of pairs and their observed spread (for",
    "results written before the second was recorded, the spread is recovered from the",
    "recorded power, which determines it). Rows marked *rule changed after data* show the",
    "verdict under the decision spec recorded when the first cell ran as well; a claim",
    "whose results ran before specs were recorded says so in its section (no hash is",
    "made up for them). Rows",
    "marked *interim* come from an unfinished grid (the cells finished so far): the",
    "planned design is not complete and the verdict may change as cells land (a",
    "partial grid whose missing cells are all secondary arms is not interim). Rows",
    "marked *legacy rule* were decided before verdicts recorded coverage and power:",
    "they are quick-preset runs at a few per cent of the protocol, to be rerun.",
    "",
    "## Summary",
    "",
]
"""REPORT.md's opening: what it is and how to read a verdict."""


def build_report(out: Path = PUBLISHED) -> str:
    """The report's markdown, built from the results files under ``out``."""
    table = claims()
    summary = [
        "| # | source | claim | experiment | preset | device | coverage "
        "| P(reproduce \\| δ) | P(refute \\| 0) | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    sections: list[str] = []
    for number, source, title, names in CLAIMS:
        for name in names:
            payload = load_results(out, name)
            if payload is None:
                why = "no results committed yet" if name in table else "experiment not implemented"
                summary.append(
                    f"| {number} | {source} | {title} | `{name}` | — | — | — | — | — | {why} |"
                )
                sections.append(f"## {number}. {title}\n\n{source}. **{why}.**\n")
                continue
            claim = table.get(name)
            row, section = _claim_entry(number, source, title, name, payload, claim)
            summary.append(row)
            sections.append(section)
            finished = _finished_below(out, name, payload)
            if finished is not None:
                heading = (
                    f"### {number}. Finished `{finished['preset']}` run, shown while the "
                    f"`{payload['preset']}` run above is in flight"
                )
                _, earlier = _claim_entry(number, source, title, name, finished, claim, heading)
                sections.append(earlier)
    return "\n".join([*HEADER, *summary, "", *compute_plan(out), *sections])


def _claim_entry(number, source, title, name, payload, claim, heading=None) -> tuple[str, str]:
    """One experiment's summary row and its section (under ``heading``, by default the
    claim's ``## number. title``)."""
    res = payload["results"]
    render = getattr(claim, "render", None)
    env = payload.get("environment", {})
    device = f"{env.get('device_kind', '?')} x{env.get('device_count', '?')}"
    changed, spec_lines = _spec_note(payload, claim)
    verdict = _verdict(res) + changed
    coverage, power, refute = _evidence(res)
    preset = payload["preset"]
    if payload.get("partial"):
        preset += f" (partial: {payload['partial']})"
        # An unfinished grid's verdict is an interim look at the evidence so far,
        # unless every cell the headline rests on is in (the experiment says so).
        if res.get("interim", True):
            verdict = f"interim, {payload['partial']}: {verdict}"
    row = (
        f"| {number} | {source} | {title} | `{name}` | {preset} | "
        f"{device} | {coverage} | {power} | {refute} | **{verdict}** |"
    )
    body = [heading or f"## {number}. {title}", ""]
    if res.get("claim"):
        body += [f"> {res['claim']}", "", f"Source: {res.get('source', source)}.", ""]
    if res.get("not_run"):
        body += [f"**Not run:** {res.get('reason', '')}", ""]
    if render is not None and not res.get("not_run"):
        body += [_rendered(render, res), ""]
    body += [
        f"**Verdict: {verdict}.** Preset `{preset}` on {device}, "
        f"{payload.get('wall_time_s', '?')} s, git `{str(env.get('git_commit'))[:10]}`"
        f"{_cell_commits(payload)}.",
        "",
        f"Regenerate: `python -m experiments {name} --preset {payload['preset']} "
        "--out experiments/results` (rerunning resumes an unfinished grid)",
        "",
    ]
    body += spec_lines
    if res.get("notes"):
        body += [str(res["notes"]), ""]
    for fig in _figures(payload, name):
        body += [f"![{name}]({fig})", ""]
    return row, "\n".join(body)


def _spec_note(payload: dict[str, Any], claim) -> tuple[str, list[str]]:
    """The decision spec's record for a claim that does not render its own: a suffix for the
    summary row ("rule changed after data") and the section's line. Results that ran before
    specs were recorded say so; no hash is made up for them."""
    specs_of = getattr(claim, "specs", None)
    specs = specs_of(payload["preset"]) if specs_of is not None else {}
    res = payload["results"]
    record = res.get("spec")
    if not specs or (record is not None and record.get("by") != "harness"):
        return "", []  # a tolerance claim, or one that renders its spec itself
    if record is None:
        recorded = (payload.get("grid") or {}).get("specs_at_start")
        record = stats.spec_record(specs, recorded) if recorded else None
    now = ", ".join(f"`{k}` `{stats.spec_hash(s)}` (rule `{s.rule}`)" for k, s in specs.items())
    commit = str((payload.get("environment") or {}).get("git_commit"))[:7]
    if record is None or not any(v["at_start"] for v in record["specs"].values()):
        return "", [
            f"Decision spec now declared in code: {now}. **No spec hash was recorded for "
            f"these results**: they ran (git `{commit}`) before specs were recorded, so the "
            "verdict above is the one that code decided and the spec was written down after "
            "the data; a rerun records it before its first cell.",
            "",
        ]
    changed = record["changed"]
    start = ", ".join(
        f"`{k}` `{v['at_start']}`" for k, v in record["specs"].items() if v["at_start"]
    )
    missing = [k for k, v in record["specs"].items() if not v["at_start"]]
    line = f"Decision spec {now}; recorded at the first cell: {start}" + (
        ". **Rule changed after data**: the verdict above is decided under the spec now."
        if changed
        else "."
    )
    # Where the spec keys name the grid's parts (cell ids "<part>/..."), a part with no
    # cell yet has nothing recorded because nothing has run: its spec is recorded at its
    # first cell.
    cell_ids = list((payload.get("grid") or {}).get("cells") or {})
    has_cells = {k: any(c.startswith(f"{k}/") for c in cell_ids) for k in record["specs"]}
    unstarted = [k for k in missing if not has_cells[k]] if any(has_cells.values()) else []
    ran_before = [k for k in missing if k not in unstarted]
    if ran_before:
        line += (
            f" No hash was recorded for {', '.join(f'`{k}`' for k in ran_before)}: those "
            "cells ran before specs were recorded."
        )
    if unstarted:
        line += (
            f" {', '.join(f'`{k}`' for k in unstarted)}: no cell run yet; the spec is "
            "recorded at the first."
        )
    return (" (rule changed after data)" if changed else ""), [line, ""]


def _rendered(render, res) -> str:
    try:
        return render(res)
    except (KeyError, TypeError):  # written by an older version of the claim
        return (
            "*These results were written by an older version of this experiment, "
            "whose table the current code no longer renders; rerun the command "
            "below to refresh them.*"
        )


README_PATH = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- report-summary:start -->", "<!-- report-summary:end -->"


def _summary_table(report: str) -> str:
    lines = report.splitlines()
    i = lines.index("## Summary") + 2
    table = []
    for line in lines[i:]:
        if not line.startswith("|"):
            break
        table.append(line)
    return "\n".join(table)


def write_report(out: Path = PUBLISHED, path: Path = REPORT_PATH) -> Path:
    """Writes REPORT.md, refreshes README's copy of its summary table, returns the path."""
    report = build_report(out)
    path.write_text(report)
    if path == REPORT_PATH and README_PATH.exists():
        readme = README_PATH.read_text()
        if START in readme and END in readme:
            head, rest = readme.split(START, 1)
            _, tail = rest.split(END, 1)
            links = _summary_table(report).replace(  # absolute: README is PyPI's page too
                "](results/", "](https://dropjax.readthedocs.io/en/latest/experiments/results/"
            )
            README_PATH.write_text(f"{head}{START}\n{links}\n{END}{tail}")
    return path
