r"""Bouthillier et al. (2015), Section 5.3 / Figure 6: random dropout vs dropout on an MLP.

Protocol (paper): permutation-invariant MNIST, a ReLU MLP with two hidden layers (2500-625,
2500-1250 or 2500-2500) and a softmax output; each network trained for 501 epochs (best
validation model, then 150 more epochs on all 60k examples, test error averaged over the
last 75 epochs). Three sweeps (Figure 6, MNIST row):

* (a) dropout, hidden noise fixed at 0.5, input noise 0.0 .. 0.7;
* (b) dropout, input noise fixed at 0.2, hidden noise 0.0 .. 0.7;
* (c) random dropout (Eq. 10: one rate rho ~ U(0, x) per layer per call, activations scaled
  by 1 / (1 - rho)) with the same range [0, x] at the input and hidden layers, x = 0 .. 0.8.

The claim (Sec. 5.3, "Random dropout improves the performance of the models over dropout
with no additional computational cost"; abstract: "it improves dropout results"). Figure 6's
values are not in the text, so only this qualitative claim is compared.

What is compared, every arm trained with the same seeds (replica ``r`` of every arm shares
initial parameters and data order, so differences are paired):

* **best vs best** (the verdict): the random-dropout setting with the lowest mean test
  error against the best dropout setting of sweeps (a) and (b); paired 95% t-interval of
  random − standard test error, decided by :func:`experiments.harness.stats.decide` against
  ``DELTA`` = 0.1 percentage points (an assumed effect size: Figure 6 gives no values), with
  the power of the design for it. Both are picked on the test set (the paper picks on a
  validation split), which biases both sides alike. Coverage is the fraction of the paper's
  651 epochs (501 + 150) a preset trains (quick: 4, 0.6 %); below 100 % the headline is
  *indicative* unless the interval is inconclusive (:func:`experiments.harness.stats.headline_of`).
* **matched mean rate**: random [0, x] against dropout at rate x / 2 at input and hidden,
  the mean rate of U(0, x), an arm added for it (:func:`mean_matched`; not part of Figure
  6's sweeps, so never picked as the best dropout setting);
* **same upper end**: random [0, x] against dropout at rate x at input and hidden (twice
  random's mean rate), for the x where the sweeps have such an arm ((0.5, 0.5), (0.2, 0.2)).
* **each random setting vs the best dropout setting**.

Presets: ``smoke`` is scikit-learn's 8x8 digits, a 32-16 MLP, a few dozen iterations;
``quick`` is real MNIST with a 512-256 MLP and only 4 epochs (the paper trains 501 epochs,
plus 150), a small grid and 4 replicas; ``paper`` is the 2500-1250 architecture, 501 epochs
and the full grids (no validation split or extra 150 epochs: the test error is averaged
over the last 75 epochs of the 501). A run is resumable arm by arm: each arm checkpoints at
every evaluation, a finished arm is kept in the run's checkpoint folder, and rerunning the
command after ``--time-budget`` stopped it trains only what is left.

Figure 1 (Sec. 4.1), the distribution of the proportion of units dropped, is drawn by every
preset next to the training (it trains nothing): for one layer of :math:`N` units, standard
dropout at rate :math:`p` drops :math:`K \sim \mathrm{Binomial}(N, p)` units, while random
dropout with :math:`\rho \sim \mathcal{U}(0, p)` drops :math:`K` from the uniform mixture of
binomials, :math:`P(K = k) = \frac{1}{p}\int_0^p \binom{N}{k}\rho^k(1-\rho)^{N-k}\,d\rho =
\frac{I_p(k + 1, N - k + 1)}{(N + 1)\,p}` (:math:`I` the regularised incomplete beta), whose
proportion :math:`K/N` has a density close to :math:`1/p` on :math:`[0, p]`. The figure
samples :math:`K` from the zeros of ``dropjax.dropout`` and ``dropjax.random_rate_dropout``
outputs (one call per draw, so one :math:`\rho` per layer call as in the models here) at
Figure 1's :math:`p = 0.5`, for :math:`N = 100` (Figure 1's peak of about 8 % per count
implies :math:`N \approx 100`: the binomial's largest mass is about
:math:`1/\sqrt{2\pi N p (1 - p)}`) and for the width of every layer the preset's model drops
(input and hidden), and overlays the analytic curves; ``results["dropped_proportion"]``
records the sampled and analytic mean and standard deviation of :math:`K/N` and the
Kolmogorov-Smirnov distance between the sampled and the analytic law of :math:`K` (with the
1 % critical value for the number of draws).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import jax
import numpy as np

from experiments.claims.random_dropout_mlp._figure1 import (
    FIG1_DRAWS,
    FIG1_RATE,
    FIG1_UNITS,
    SCHEMES,
    dropped_layers,
    dropped_moments,
    dropped_pmf,
    dropped_proportion,
    plot_dropped,
    sample_dropped,
)
from experiments.claims.random_dropout_mlp._protocol import (
    DELTA,
    PAPER_EPOCHS,
    PRESETS,
    SCALED_REASON,
    Preset,
    protocol_coverage,
)
from experiments.harness import plots, recipes, stats
from experiments.harness.claim import Claim, one_shot
from experiments.harness.models import MLP, DropoutConfig
from experiments.harness.protocols import converged, converged_lines, epochs_protocol
from experiments.harness.results import RunContext, write_json_atomic
from experiments.harness.train import TrainConfig, resume_options, train

NAME = "random_dropout_mlp"
SOURCE = (
    "Bouthillier, Konda, Vincent & Memisevic, Dropout as data augmentation (2015), "
    "Sec. 5.3 and Figure 6 (seed 002)"
)
CLAIM_TEXT = (
    "random dropout (rho ~ U(0, x) per layer, Eq. 10) gives lower test error than dropout "
    "on a 2-hidden-layer ReLU MLP on permutation-invariant MNIST"
)
PAPER_QUOTES = [
    "Random dropout improves the performance of the models over dropout with no additional "
    "computational cost. (Sec. 5.3)",
    "we propose a new dropout noise scheme based on our observations and show that it "
    "improves dropout results without adding significant computational cost. (Abstract)",
    "Figure 6's error percentages are shown only as plots; no values are in the text, so "
    "only the qualitative claim is compared.",
]


def load_data(name: str, train_size: int | None = None):
    """The flattened images in [0, 1] (:func:`experiments.harness.recipes.flat_images`)."""
    return recipes.flat_images(name, train_size)


def settings(preset: Preset) -> dict[str, tuple[str, float, float]]:
    """Every arm by key: ``(kind, input rate, hidden rate)``: Figure 6's sweeps, then the
    matched-mean-rate dropout arms; shared grid points merge."""
    out = sweeps(preset)
    for key, arm in mean_matched(preset).items():
        out.setdefault(key, arm)
    return out


def mean_matched(preset: Preset) -> dict[str, tuple[str, float, float]]:
    """Dropout at rate x / 2 at input and hidden for every random range [0, x] (x > 0):
    U(0, x) drops a fraction x / 2 of the units on average.

    Examples:
      >>> from experiments.claims.random_dropout_mlp import PRESETS, mean_matched
      >>> list(mean_matched(PRESETS["quick"]))
      ['dropout in 0.1 hid 0.1', 'dropout in 0.25 hid 0.25', 'dropout in 0.4 hid 0.4']
    """
    halves = [round(x / 2, 4) for x in preset.random_sweep if x > 0]
    return {_key("standard", m, m): ("standard", m, m) for m in halves}


def sweeps(preset: Preset) -> dict[str, tuple[str, float, float]]:
    """Figure 6's three sweeps' arms by key (the best dropout setting is picked among them)."""
    out: dict[str, tuple[str, float, float]] = {}
    for r in preset.input_sweep:
        out[_key("standard", r, preset.fixed_hidden)] = ("standard", r, preset.fixed_hidden)
    for r in preset.hidden_sweep:
        out[_key("standard", preset.fixed_input, r)] = ("standard", preset.fixed_input, r)
    for x in preset.random_sweep:
        out[_key("random_rate", x, x)] = ("random_rate", x, x)
    return out


def _key(kind: str, rin: float, rhid: float) -> str:
    if kind == "random_rate":
        return f"random [0,{rin:g}]"
    return f"dropout in {rin:g} hid {rhid:g}"


def _model(preset: Preset, kind: str, rin: float, rhid: float) -> MLP:
    return MLP(
        hidden=preset.hidden,
        num_classes=10,
        input_dropout=DropoutConfig(kind, rin),
        dropout=DropoutConfig(kind, rhid),
    )


def _config(preset: Preset, num_train: int) -> TrainConfig:
    return epochs_protocol(preset, num_train, evals_per_epoch=preset.eval_per_epoch)


def _errors(result_json: dict[str, Any], last: int) -> list[float]:
    """Per-replica test error (%) averaged over the last ``last`` evaluations."""
    acc = np.array([c["test_acc"] for c in result_json["curves"][-last:]])
    return (100.0 * (1.0 - acc.mean(0))).tolist()


def _compare(
    errors: dict[str, list[float]],
    base: str,
    other: str,
    coverage: float,
    substitute: bool,
    scaled: bool = False,
) -> dict[str, Any]:
    """Random minus standard test error, paired by replica, decided against ``DELTA`` (the
    claim: random dropout lowers the error, sign -1)."""
    diff = stats.paired_difference(errors[base], errors[other])
    decision = stats.decide(
        diff, -1, DELTA, coverage=coverage, substitute=substitute, scaled=scaled
    )
    return {"standard": base, "random": other, "difference": diff, **decision}


def _sweeps(cfg: dict[str, Any]) -> list[tuple[str, list[tuple[float, str]], str]]:
    """Figure 6's three panels: (title, [(noise level, arm key)], x label)."""
    hid, inp = cfg["fixed_hidden"], cfg["fixed_input"]
    return [
        (
            f"dropout: input noise (hidden {hid:g})",
            [(r, _key("standard", r, hid)) for r in cfg["input_sweep"]],
            "input noise",
        ),
        (
            f"dropout: hidden noise (input {inp:g})",
            [(r, _key("standard", inp, r)) for r in cfg["hidden_sweep"]],
            "hidden noise",
        ),
        (
            "random dropout: range [0, x]",
            [(x, _key("random_rate", x, x)) for x in cfg["random_sweep"]],
            "x",
        ),
    ]


def plot_errors(results: dict[str, Any], path: Path) -> None:
    """Figure 6's MNIST row: three panels of test error vs noise level (mean ± std)."""
    cfg, summary = results["config"], results["summary"]
    fig, axes = plots.figure(1, 3, (12, 3.6))
    best = summary[results["best"]["standard"]]["mean"]
    for ax, (title, points, xlabel) in zip(axes[0], _sweeps(cfg), strict=True):
        mean = np.array([summary[k]["mean"] for _, k in points])
        std = np.array([summary[k]["std"] for _, k in points])
        ax.errorbar([x for x, _ in points], mean, yerr=std, marker="o", capsize=3)
        ax.axhline(best, color="gray", ls="--", lw=0.8, label="best dropout")
        ax.set(title=title, xlabel=xlabel)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test error (%)")
    axes[0][0].legend(fontsize="small")
    fig.suptitle(
        f"MLP {'-'.join(map(str, cfg['hidden']))} on {results['data']['name']}, "
        f"{cfg['epochs']} epochs: mean ± std over {len(results['seeds'])} replicas",
        fontsize="medium",
    )
    plots.save(fig, path, dpi=110)


def render(results: dict[str, Any]) -> str:
    """Markdown: test error per arm, then the paired comparisons and the verdict."""
    rows = ["| arm | test error % (mean ± std) |", "|---|---|"]
    for key, s in results["summary"].items():
        rows.append(f"| {key} | {stats.fmt(s)} |")
    comp = [
        "| comparison | Δ error random − dropout, pp [95% CI] | verdict | power (δ) |",
        "|---|---|---|---|",
    ]
    for label, c in results["comparisons"].items():
        power = stats.fmt_power(c.get("power"))
        diff = stats.fmt_diff(c["difference"])
        comp.append(f"| {_shown_label(label)} | {diff} | {c['verdict']} | {power} |")
    if not any("matched mean rate" in label for label in results["comparisons"]):
        comp += [
            "",
            "Matched mean rate (random [0, x] against dropout at x / 2, U(0, x)'s mean rate): "
            "declared in the spec, **not run yet** (these results predate its arms).",
        ]
    cfg = results["config"]
    lines = [
        f"**MLP {'-'.join(map(str, cfg['hidden']))} on {results['data']['name']}** "
        f"({results['data']['source']}): {cfg['epochs']} epochs (paper: 501 + 150), batch "
        f"{cfg['batch_size']}, SGD lr {cfg['learning_rate']:g} momentum {cfg['momentum']:g}; "
        f"{len(results['seeds'])} paired replicas; test error averaged over the last "
        f"{cfg['average_last']} evaluation(s).",
        "",
        *rows,
        "",
        *comp,
        "",
        f"Verdict (best random vs best dropout): **{results['verdict']}** (interval: "
        f"{results['decision']['verdict']}, decided against δ = {DELTA:g} pp, an assumed "
        f"effect size: Figure 6 gives no values). Protocol coverage "
        f"{results['evidence']['coverage']:.1%} ({cfg['epochs']} of the paper's "
        f"{PAPER_EPOCHS} epochs"
        + (f" on {cfg['train_size']:,} training images" if cfg.get("train_size") else "")
        + f"; {results['evidence']['data']} data): "
        + (
            "a declared scaled protocol, decided at it. "
            if "scaled" in results
            else "below 100 % a decided interval is only indicative. "
        )
        + f'Paper: "{PAPER_QUOTES[0]}" ({PAPER_QUOTES[2]})',
    ]
    if "scaled" in results:
        check = f"the last {cfg['average_last']} evaluations within δ of the same many before"
        lines += converged_lines(results["scaled"], check)
    dropped = results.get("dropped_proportion")
    if dropped:  # Figure 1; results written before it was added have none
        lines += [
            "",
            f"Figure 1 (proportion of units dropped per layer call, p = {dropped['rate']:g}, "
            f"{dropped['draws']} calls per scheme; sampled [analytic]):",
            "",
            "| layer | N | dropout: mean, sd | random dropout: mean, sd | KS distance |",
            "|---|---|---|---|---|",
        ]
        for name, row in dropped["layers"].items():
            cells = [
                f"{row[s]['mean']:.3f}, {row[s]['std']:.3f} "
                f"[{row[s]['analytic_mean']:.3f}, {row[s]['analytic_std']:.3f}]"
                for s in SCHEMES
            ]
            ks = " / ".join(f"{row[s]['ks_to_analytic']:.4f}" for s in SCHEMES)
            lines.append(f"| {name} | {row['units']} | {cells[0]} | {cells[1]} | {ks} |")
        lines.append(f"\n(KS 1% critical value: {dropped['ks_critical_1pct']:.4f}.)")
    return "\n".join(lines)


def measure(
    preset: Preset,
    data,
    seeds: list[int],
    quiet: bool,
    checkpoint_dir: Path | None = None,
    budget: Any = None,
) -> dict[str, Any]:
    """Trains every arm of the three sweeps with the same seeds; the arms' JSON.

    With ``checkpoint_dir`` (the run's one cell's folder) each arm trains with checkpoints in
    a subfolder of its own, stops cleanly when ``budget`` is spent, and is kept there as JSON
    once finished, so that a rerun skips the finished arms and resumes the one in flight.
    """
    cfg = _config(preset, data.num_train)
    arms: dict[str, Any] = {}
    for i, (key, (kind, rin, rhid)) in enumerate(settings(preset).items()):
        arm = f"arm{i:02d}"
        finished = None if checkpoint_dir is None else Path(checkpoint_dir) / arm / "arm.json"
        if finished is not None and finished.exists():
            arms[key] = json.loads(finished.read_text())
            continue
        options = resume_options(checkpoint_dir, budget, f"{arm}/train")
        model = _model(preset, kind, rin, rhid)
        result = train(model, data, cfg, seeds, **options, quiet=quiet or None, desc=key)
        arms[key] = {"kind": kind, "input_rate": rin, "hidden_rate": rhid, **result.to_json()}
        if finished is not None:
            write_json_atomic(finished, arms[key])
    return arms


def summarise(arms: dict[str, Any], preset: Preset) -> tuple[dict, dict]:
    """Per-replica test errors (%) and their mean ± std, per arm."""
    errors = {k: _errors(a, preset.average_last) for k, a in arms.items()}
    return errors, {k: stats.mean_std(e) for k, e in errors.items()}


def decide(
    errors: dict[str, list[float]], summary: dict, preset: Preset, substitute: bool
) -> dict[str, Any]:
    """Best random vs best dropout (the verdict), matched levels, each random setting vs the
    best dropout; every comparison decided against ``DELTA`` at this preset's coverage."""
    coverage = protocol_coverage(preset)
    in_sweeps = sweeps(preset)
    kinds = {k: in_sweeps[k][0] for k in errors if k in in_sweeps}
    best = {
        kind: min((k for k in kinds if kinds[k] == kind), key=lambda k: summary[k]["mean"])
        for kind in ("standard", "random_rate")
    }
    best["random"] = best.pop("random_rate")

    def compare(base, other):
        return _compare(errors, base, other, coverage, substitute, preset.scaled)

    comparisons = {"best random vs best dropout": compare(best["standard"], best["random"])}
    for x in preset.random_sweep:
        m = round(x / 2, 4)
        if x > 0 and _key("standard", m, m) in errors:
            comparisons[f"random [0,{x:g}] vs dropout {m:g}/{m:g} (matched mean rate)"] = compare(
                _key("standard", m, m), _key("random_rate", x, x)
            )
    for x in preset.random_sweep:
        if _key("standard", x, x) in errors:
            comparisons[_same_end(x)] = compare(_key("standard", x, x), _key("random_rate", x, x))
    for x in preset.random_sweep:
        comparisons[f"random [0,{x:g}] vs best dropout"] = compare(
            best["standard"], _key("random_rate", x, x)
        )
    head = comparisons["best random vs best dropout"]
    return {
        "best": best,
        "comparisons": comparisons,
        "decision": {k: v for k, v in head.items() if k not in ("standard", "random")},
        "verdict": head["headline"],
        "evidence": stats.evidence(head, coverage=coverage, substitute=substitute, delta=DELTA),
    }


def _same_end(x: float) -> str:
    return (
        f"random [0,{x:g}] vs dropout {x:g}/{x:g} (same upper end: mean rates {x / 2:g} vs {x:g})"
    )


def _shown_label(label: str) -> str:
    """A comparison's label; results written before the matched-mean-rate arms called the
    same-upper-end comparison a "matched level", which it is not."""
    found = re.match(r"random \[0,([0-9.]+)\] .*\(matched level\)$", label)
    return _same_end(float(found.group(1))) if found else label


def spec_for(preset: str) -> stats.DecisionSpec:
    """The decision, fixed before the data: random − dropout test error (claimed negative,
    δ = ``DELTA`` pp) for best vs best (the headline), at matched mean rate, at the same
    upper end, and each random range vs the best dropout."""
    p, best = PRESETS[preset], "dropout (best of sweeps a, b)"
    rows = [("best", "random (best of sweep c)", best)]
    rows += [
        ("matched mean rate", _key("random_rate", 2 * k[1], 2 * k[1]), key)
        for key, k in mean_matched(p).items()
    ]
    for x in p.random_sweep:
        same = _key("standard", x, x)
        rows += [("same upper end", _key("random_rate", x, x), same)] if same in sweeps(p) else []
        rows.append(("vs best dropout", _key("random_rate", x, x), best))
    return stats.DecisionSpec(
        claims={
            "best": (CLAIM_TEXT, "all"),
            "matched mean rate": ("random [0, x] beats dropout at rate x / 2", "all"),
            "same upper end": ("random [0, x] beats dropout at rate x", "all"),
            "vs best dropout": ("each random range beats the best dropout", "all"),
        },
        contrasts=tuple(
            stats.Contrast(c, other, base, "final", -1, DELTA, SOURCE) for c, other, base in rows
        ),
        pairs=p.replicas,
        pooling="none: paired over replicas; best settings picked on the test set",
        headline=("best",),
    )


def _describe(preset: Preset, replicas: int, train_cfg: TrainConfig) -> dict[str, Any]:
    return {
        "model": "ReLU MLP, dropout on the input and on every hidden layer",
        "hidden": list(preset.hidden),
        "input_sweep": list(preset.input_sweep),
        "fixed_hidden": preset.fixed_hidden,
        "hidden_sweep": list(preset.hidden_sweep),
        "fixed_input": preset.fixed_input,
        "random_sweep": list(preset.random_sweep),
        "epochs": preset.epochs,
        "batch_size": preset.batch_size,
        "learning_rate": preset.learning_rate,
        "momentum": preset.momentum,
        "average_last": preset.average_last,
        "train_size": preset.train_size,
        "replicas": replicas,
        "train": dataclasses.asdict(train_cfg),
        "metric": "test error (%) = 100 (1 - test accuracy)",
        "paper_epochs": PAPER_EPOCHS,
        "delta_pp": DELTA,
    }


def render_figures(results: dict[str, Any], preset: Preset, data, ctx: RunContext) -> list:
    """Figure 6's row (trained arms) and Figure 1 (sampled masks only, nothing trained);
    adds ``dropped_proportion`` to ``results`` and returns the figure names."""
    key = jax.random.fold_in(jax.random.key(ctx.seed), 2015)
    layers = dropped_layers(preset, int(np.prod(data.x_train.shape[1:])))
    results["dropped_proportion"], samples = dropped_proportion(key, layers)
    return [
        plots.publish(plot_errors, results, ctx.out_dir, ctx.preset, "error_vs_noise"),
        plots.publish(
            lambda res, path: plot_dropped(res["dropped_proportion"], samples, path),
            results,
            ctx.out_dir,
            ctx.preset,
            "dropped_proportion",
        ),
    ]


def scaled_check(results: dict[str, Any], preset: Preset) -> dict[str, Any]:
    """A scaled run's results with the declared convergence check (:data:`SCALED_REASON`)
    of every arm's curves; a verdict stands only if every arm is flat, else it reads
    ``indicative (not converged)``."""
    flat = converged(results["arms"], preset.average_last, DELTA)
    out = {**results, "scaled": {"reason": SCALED_REASON, **flat}}
    if not flat["all_flat"]:
        out["verdict"] = "indicative (not converged)"
    return out


def measure_all(ctx: RunContext, checkpoint_dir=None, budget=None) -> dict[str, Any]:
    """Measure every arm, summarise the test errors, decide the paired comparisons, plot.

    Resumable: see :func:`measure` (``checkpoint_dir`` and ``budget`` come from the grid)."""
    preset = PRESETS[ctx.preset]
    data = load_data(ctx.dataset or preset.dataset, preset.train_size)
    replicas = ctx.replicas or preset.replicas
    seeds = [ctx.seed + r for r in range(replicas)]
    arms = measure(preset, data, seeds, ctx.quiet, checkpoint_dir, budget)
    errors, summary = summarise(arms, preset)
    results = {
        "source": SOURCE,
        "claim": CLAIM_TEXT,
        "config": _describe(preset, replicas, _config(preset, data.num_train)),
        "data": data.describe(),
        "seeds": seeds,
        "paper": {
            "quotes": PAPER_QUOTES,
            "protocol": "501 epochs on 50k (best validation model), 150 more epochs on 60k, "
            "test error averaged over the last 75 epochs; hidden 2500-625/2500-1250/2500-2500",
        },
        "summary": summary,
        **decide(errors, summary, preset, substitute=data.name != "mnist"),
        "arms": arms,
    }
    if preset.scaled:
        results = scaled_check(results, preset)
    results["figures"] = render_figures(results, preset, data, ctx)
    results["figure"] = results["figures"][0]
    return results


run = one_shot(PRESETS, measure_all, resumable=True)

CLAIM = Claim(
    NAME,
    "Random dropout vs dropout on an MNIST MLP (Bouthillier et al. Fig. 6)",
    PRESETS,
    run,
    render,
    spec=spec_for,
)

__all__ = [
    "CLAIM",
    "DELTA",
    "SCALED_REASON",
    "protocol_coverage",
    "scaled_check",
    "FIG1_DRAWS",
    "FIG1_RATE",
    "FIG1_UNITS",
    "NAME",
    "PRESETS",
    "SCHEMES",
    "Preset",
    "decide",
    "dropped_layers",
    "dropped_moments",
    "dropped_pmf",
    "dropped_proportion",
    "mean_matched",
    "measure",
    "measure_all",
    "plot_dropped",
    "plot_errors",
    "render",
    "sample_dropped",
    "settings",
    "spec_for",
    "summarise",
    "sweeps",
]
