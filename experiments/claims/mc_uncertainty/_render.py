"""Tables and figures of the ``mc_uncertainty`` experiment (see its module for the protocol).

:func:`render` turns a results dict into the markdown of the command line and REPORT.md;
:func:`plot_metrics` and :func:`plot_reliability` draw its two figures. Everything here
reads only the results dict (and the first seed's predictions for the figures).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dropjax import uncertainty as unc
from experiments.harness import stats
from experiments.harness.results import save_figure_atomic

__all__ = ["at_path", "plot_metrics", "plot_reliability", "render", "rows"]


def at_path(tree: dict, path: tuple[str, ...]) -> Any:
    """``tree[path[0]][path[1]]...``: an arm's entry, e.g. ``("mc", "50")``."""
    for key in path:
        tree = tree[key]
    return tree


def rows(num_samples: tuple[int, ...], members: int) -> list[tuple[str, tuple[str, ...]]]:
    """The table's arms: (label, path into a seed's metrics)."""
    t_max = str(max(num_samples))
    out = [
        ("deterministic", ("deterministic",)),
        ("deterministic + TS", ("deterministic_ts",)),
    ]
    if str(members) in map(str, num_samples) and str(members) != t_max:
        out.append((f"MC dropout, T={members} (= M)", ("mc", str(members))))
    out += [
        (f"MC dropout, T={t_max}", ("mc", t_max)),
        (f"MC dropout + TS, T={t_max}", ("mc_ts", t_max)),
        (f"deep ensemble, M={members}", ("ensemble",)),
    ]
    return out


# ----------------------------------------------------------------------------- figures


def _half(s: dict[str, Any]) -> float:
    return 0.0 if s.get("ci_high") is None else s["ci_high"] - s["mean"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _vs_t(ax, results, key, ylabel, title, mc_label="MC dropout", det_key=None, ts_arms=True):
    """One panel: a metric against the number of MC samples, with the baselines."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ts = results["config"]["num_samples"]
    members = results["config"]["members"]
    summ = results["summary"]
    series = [("mc", mc_label, "o", "C0")]
    if ts_arms:
        series.append(("mc_ts", "MC dropout + TS", "s", "C1"))
    for arm, label, marker, color in series:
        if key not in summ[arm][str(ts[0])]:
            continue
        mean = [summ[arm][str(t)][key]["mean"] for t in ts]
        err = [_half(summ[arm][str(t)][key]) for t in ts]
        ax.errorbar(ts, mean, yerr=err, marker=marker, capsize=3, label=label, color=color)
    lines = [("deterministic", "deterministic", "k", "--")]
    if ts_arms:
        lines.append(("deterministic_ts", "deterministic + TS", "C7", ":"))
    for arm, label, color, style in lines:
        d = summ[arm][det_key or key]
        ax.axhline(d["mean"], ls=style, color=color, label=label)
        ax.axhspan(d["mean"] - _half(d), d["mean"] + _half(d), alpha=0.1, color=color)
    if key in summ["ensemble"]:
        e = summ["ensemble"][key]
        ax.errorbar(
            [members],
            [e["mean"]],
            yerr=[_half(e)],
            marker="*",
            markersize=14,
            color="C3",
            capsize=3,
            ls="none",
            label=f"deep ensemble (M={members}, at T=M)",
        )
    ax.set_xscale("log")
    ax.set_xticks(sorted({*ts, members}))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("MC samples T (ensemble: members M)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small")


def plot_metrics(results: dict[str, Any], example: dict[str, Any], path: Path) -> None:
    """Metrics vs T with the baselines, MI histograms, accuracy-coverage curves."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 4, figsize=(20, 9))

    ood = f"{results['data']['name']} vs {results['ood']['name']}"
    _vs_t(axes[0, 0], results, "auroc_entropy", "AUROC (OOD positive)", f"OOD by entropy: {ood}")
    _vs_t(
        axes[0, 1],
        results,
        "auroc_mi",
        "AUROC (OOD positive)",
        "OOD by mutual information (det.: 1 − max p)",
        mc_label="MC dropout, MI",
        det_key="auroc_maxprob",
        ts_arms=False,
    )
    _vs_t(axes[0, 2], results, "nll", "NLL (nats)", "NLL")
    _vs_t(axes[0, 3], results, "ece", "ECE (15 bins)", "ECE")
    _vs_t(axes[1, 0], results, "aece", "adaptive ECE (15 equal-mass bins)", "adaptive ECE")
    _vs_t(axes[1, 1], results, "aurc", "AURC", "selective risk (max p as confidence)")
    _example_panels(axes[1, 2], axes[1, 3], results, example)
    rate = results["config"]["dropout"]["rate"]
    title = (
        f"MC dropout vs temperature scaling vs deep ensemble, LeNet on "
        f"{results['data']['name']} (dropout {rate:g}): mean and 95 % CI over "
        f"{len(results['seeds'])} seeds"
    )
    save_figure_atomic(fig, path, dpi=90, title=title)


def _example_panels(hist_ax, curve_ax, results, example) -> None:
    """Seed 0's MI histograms and accuracy-coverage curves."""
    ts = results["config"]["num_samples"]
    unc.uncertainty_histogram(example["mi_in"], example["mi_out"], ax=hist_ax)
    hist_ax.set_title(
        f"MC mutual information, T={max(ts)}, seed {results['seeds'][0]}\n{hist_ax.get_title()}",
        fontsize="small",
    )
    hist_ax.set_xlabel("mutual information (nats)")
    ax = curve_ax
    for label, curve in example["curves"].items():
        ax.plot(curve["coverage"], curve["accuracy"], label=label)
    ax.set_xlabel("coverage")
    ax.set_ylabel("accuracy of the most confident")
    ax.set_title(f"accuracy-coverage, seed {results['seeds'][0]}", fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small")


def plot_reliability(results: dict[str, Any], example: dict[str, Any], path: Path) -> None:
    """One reliability diagram per arm (the first seed), in one figure."""
    plt = _pyplot()
    probs, bins = example["probs"], results["config"]["ece_bins"]
    cols = 3
    nrows = -(-len(probs) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5.2 * cols, 5.0 * nrows), squeeze=False)
    for ax, (label, p) in zip(axes.flat, probs.items(), strict=False):
        unc.reliability_diagram(p, example["labels"], bins, ax=ax)
        ax.set_title(f"{label}\n{ax.get_title()}", fontsize="small")
        ax.legend(loc="upper left", fontsize="x-small")
    for ax in list(axes.flat)[len(probs) :]:
        ax.set_visible(False)
    title = (
        f"Reliability diagrams on the {results['data']['name']} test set, seed "
        f"{results['seeds'][0]} ({bins} equal-width bins)"
    )
    save_figure_atomic(fig, path, dpi=80, title=title)


# ----------------------------------------------------------------------------- rendering

# (metric key, column title, digits)
COLUMNS = (
    ("accuracy", "acc", 4),
    ("nll", "NLL", 4),
    ("ece", "ECE", 4),
    ("aece", "aECE", 4),
    ("brier", "Brier", 4),
    ("auroc_entropy", "AUROC", 4),
    ("aupr_entropy", "AUPR", 4),
    ("fpr95_entropy", "FPR@95", 3),
    ("aurc", "AURC", 5),
)


def _fmt(s: dict[str, Any] | None, digits: int = 4) -> str:
    if s is None:
        return "–"
    if s.get("ci_high") is None:
        return f"{s['mean']:.{digits}f}"
    return f"{s['mean']:.{digits}f} ± {s['ci_high'] - s['mean']:.{digits}f}"


def _fmt_diff(d: dict[str, float], digits: int = 4) -> str:
    if not np.isfinite(d["ci_low"]):
        return f"{d['mean']:+.{digits}f} [n/a]"
    return f"{d['mean']:+.{digits}f} [{d['ci_low']:+.{digits}f}, {d['ci_high']:+.{digits}f}]"


def _render_legacy(results: dict[str, Any]) -> str:
    return (
        "Results from before the temperature-scaling and deep-ensemble baselines were added "
        f"(verdict then: **{results.get('verdict', '—')}**, under the old rule). Rerun "
        "`python -m experiments mc_uncertainty --preset quick` to get the full table."
    )


def render(results: dict[str, Any]) -> str:
    """Markdown: the arms table, OOD scores, the decided comparisons and the context."""
    if "decisions" not in results:
        return _render_legacy(results)
    cfg = results["config"]
    ns, m = tuple(cfg["num_samples"]), cfg["members"]
    sub = results["sub_claims"]
    return "\n".join(
        [
            _protocol_line(results),
            "",
            *_arms_table(results["summary"], ns, m),
            "",
            *_ood_table(results["summary"], ns, m),
            "",
            _costs_line(results["costs"], ns, m),
            "",
            *_decisions_table(results["decisions"]),
            "",
            *_context_table(results["context"]),
            "",
            "The context rows test no claim of the seed; *better* / *worse* says where the "
            "interval lies (for the first arm), *n.s.* that it covers 0.",
            "",
            f"Verdicts ({results['source']}): OOD detection by MC uncertainty: "
            f"**{sub['ood_detection']['verdict']}** (headline {sub['ood_detection']['headline']});"
            f" MC averaging improves calibration (NLL, ECE): **{sub['calibration']['verdict']}** "
            f"(headline {sub['calibration']['headline']}). Overall: "
            f"**{results['overall']['verdict']}**, headline **{results['verdict']}**.",
        ]
    )


def _protocol_line(results: dict[str, Any]) -> str:
    cfg = results["config"]
    t, m, rate = cfg["train"], cfg["members"], cfg["dropout"]["rate"]
    return (
        f"**MC dropout vs the cheap alternatives: LeNet (standard dropout {rate:g} before "
        f"the last layer) on {results['data']['name']} ({results['data']['source']}), OOD "
        f"= {results['ood']['description']}.** {t['iterations']} iterations "
        f"({results['evidence']['coverage']:.1%} of the {cfg['protocol_iterations']}-iteration "
        f"LeNet protocol), batch {t['batch_size']}, lr {t['learning_rate']:g} ÷10 at "
        f"{', '.join(map(str, t['lr_boundaries']))}, momentum {t['momentum']:g}, weight "
        f"decay {t['weight_decay']:g}; {cfg['holdout']} training images held out for the "
        f"temperatures; {len(results['seeds'])} seeds {results['seeds']} (each an "
        f"independent ensemble of M = {m}); mean ± half-width of the 95 % t-interval "
        "over seeds. OOD columns: predictive entropy as the score, OOD as positive."
    )


def _arms_table(summ: dict[str, Any], ns: tuple, m: int) -> list[str]:
    head = "| arm | " + " | ".join(c[1] for c in COLUMNS) + " |"
    table = [head, "|---" * (len(COLUMNS) + 1) + "|"]
    for label, path in rows(ns, m):
        s = at_path(summ, path)
        table.append(f"| {label} | " + " | ".join(_fmt(s[k], d) for k, d in _cols()) + " |")
    return table


def _ood_table(summ: dict[str, Any], ns: tuple, m: int) -> list[str]:
    ood = [
        "| arm | AUROC 1−max p | AUROC MI | AUPR MI | FPR@95 MI | temperature |",
        "|---|---|---|---|---|---|",
    ]
    for label, path in rows(ns, m):
        s = at_path(summ, path)
        ood.append(
            f"| {label} | {_fmt(s['auroc_maxprob'])} | {_fmt(s.get('auroc_mi'))} | "
            f"{_fmt(s.get('aupr_mi'))} | {_fmt(s.get('fpr95_mi'), 3)} | "
            f"{_fmt(s.get('temperature'), 3)} |"
        )
    return ood


def _costs_line(cost: dict[str, Any], ns: tuple, m: int) -> str:
    measured = cost["measured_test_s_median_over_seeds"]
    timers = {"mc": f"MC T={max(ns)}", "ensemble": f"ensemble M={m}"}
    return (
        f"Budget: {cost['budget']}. Training: {cost['training_networks_in_run']} networks "
        f"as vmapped replicas, {cost['training_wall_s']:.0f} s "
        f"({cost['training_wall_s_per_network']:.1f} s per network): the ensemble costs "
        f"M = {m} times the training of every other arm; MC dropout costs T passes at "
        "test time (run here as 1 trunk + T head passes, exact for this LeNet). Seconds "
        "to predict the test and OOD sets, as run (median over seeds): "
        + ", ".join(f"{timers.get(k, k)} {v:.2f}" for k, v in measured.items())
        + "."
    )


def _decisions_table(decisions: list[dict[str, Any]]) -> list[str]:
    dec = [
        "| comparison (paired over seeds) | T | Δ [95% CI] | claimed | δ | power | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for d in decisions:
        sign = "> 0" if d["claimed_sign"] > 0 else "< 0"
        power = "—" if d["power"] != d["power"] else f"{d['power']:.2f}"
        dec.append(
            f"| {d['label']} | {d['T']} | {_fmt_diff(d['difference'])} | {sign} | "
            f"{d['delta']:g} | {power} | {stats.shown(d)} |"
        )
    return dec


def _context_table(context: list[dict[str, Any]]) -> list[str]:
    names = {"auroc_entropy": "AUROC (entropy)", "nll": "NLL", "ece": "ECE", "aece": "aECE"}
    keys = list(context[0]["metrics"]) if context else []
    ctx = [
        "| context: Δ = arm − baseline [95% CI] | "
        + " | ".join(names.get(k, k) for k in keys)
        + " |",
        "|---" * (len(keys) + 1) + "|",
    ]
    for c in context:
        cells = [
            f"{_fmt_diff(c['metrics'][k]['difference'])} ({c['metrics'][k]['arm_is']})"
            for k in keys
        ]
        ctx.append(f"| {c['label']} | " + " | ".join(cells) + " |")
    return ctx


def _cols():
    return [(k, d) for k, _, d in COLUMNS]
