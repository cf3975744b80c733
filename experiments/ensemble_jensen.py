r"""``ensemble_jensen``: weight scaling vs the exact mean of the dropout ensemble.

Claim (seed 000, "A Parliament of Minds in One Machine"): the deterministic test-time pass of
an inverted-dropout network computes :math:`g(\mathbb{E}[\text{activation}])` where the
ensemble average is :math:`\mathbb{E}[g(\text{activation})]`; "For a simple linear model, the
approximation is exact. But for a deep, non-linear network, there is a mismatch."

Why. Write :math:`f(x; m)` for the network with inverted-dropout masks :math:`m` (entries
:math:`m_i/q`, :math:`\mathbb{E}[m_i/q] = 1`). If :math:`f` is affine in each mask entry
separately (a linear network, any depth: each mask appears once in each product term, and the
entries are independent) then :math:`\mathbb{E}_m f(x; m) = f(x; \mathbb{E} m) = f(x; 1)`,
the deterministic pass, exactly. A non-linearity after a dropout layer breaks this (Jensen):
:math:`\mathbb{E}\,g(z) \ne g(\mathbb{E} z)`. One case in between is known exactly: for a
softmax of logits that are affine in the mask (softmax regression with input dropout), the
deterministic pass equals the *normalised geometric mean* (NWGM) of the ensemble's
probabilities, :math:`\mathrm{NWGM}_c \propto \exp \mathbb{E}[\log \mathrm{softmax}_c] \propto
\exp \mathbb{E}[z_c]` (Baldi & Sadowski, 2013), not its arithmetic mean.

What the experiment computes. Tiny networks whose every dropout mask can be enumerated
(``d_in`` input units and ``hidden`` hidden units: :math:`2^{d_\text{in} + \text{hidden}}`
masks, each weighted by :math:`q^{|m|}p^{k - |m|}`), in float64:

* ``linear``: two affine layers, dropout on the input and on the hidden layer;
* ``softmax_regression``: one affine layer + softmax, input dropout;
* ``mlp_relu`` / ``mlp_tanh``: affine, ReLU/tanh, dropout on input and hidden, affine,
  softmax over 3 classes.

For each dropout rate and random network (seed) it reports the exact gaps between the
ensemble mean and the weight-scaled pass: the output/logit gap (relative to the RMS logit),
the total-variation distance of the probabilities (arithmetic mean and NWGM), and how often
the predicted class differs. A Monte Carlo estimate with ``dropjax.dropout`` masks checks the
enumeration (and dropjax's masks) for ``mlp_relu``: z-scores of MC mean minus exact mean.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.special
import scipy.stats

import dropjax
from experiments import stats
from experiments.registry import RunContext, register

NAME = "ensemble_jensen"
CLAIM = (
    '"For a simple linear model, the approximation is exact. But for a deep, non-linear '
    'network, there is a mismatch" (weight-scaled test pass vs the ensemble average)'
)
SOURCE = "seed 000 (explainer 'Inverted Dropout'), section 'A Parliament of Minds in One Machine'"
FIGURE = "ensemble_jensen.png"
ARCHS = ("linear", "softmax_regression", "mlp_relu", "mlp_tanh")

PRESETS: dict[str, dict[str, Any]] = {
    "smoke": dict(
        d_in=6, hidden=4, classes=3, batch=16, rates=(0.2, 0.5, 0.8), seeds=3, mc_masks=4000
    ),
    "quick": dict(
        d_in=10,
        hidden=6,
        classes=3,
        batch=32,
        rates=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
        seeds=10,
        mc_masks=40_000,
    ),
    "paper": dict(
        d_in=12,
        hidden=6,
        classes=3,
        batch=64,
        rates=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
        seeds=30,
        mc_masks=200_000,
    ),
}
EXACT_TOL = 1e-10  # relative gap under which a pass counts as exactly the ensemble mean
GAP_FLOOR = 1e-8  # a non-linear gap must exceed this (CI lower bound) to count as a mismatch
Z_LIMIT = 5.0


# --------------------------------------------------------------------------- enumeration
def all_masks(k: int) -> np.ndarray:
    """Every 0/1 mask of length ``k``: float64 ``[2**k, k]``."""
    return np.array(list(itertools.product((0.0, 1.0), repeat=k)), np.float64).reshape(2**k, k)


def mask_probs(masks: np.ndarray, rate: float) -> np.ndarray:
    """Probability of each mask row when every entry is kept with probability ``1 - rate``."""
    kept = masks.sum(axis=1)
    return (1.0 - rate) ** kept * rate ** (masks.shape[1] - kept)


def init_params(seed: int, d_in: int, hidden: int, classes: int) -> dict[str, np.ndarray]:
    """A random network: He-scaled weights, small biases, logits of order 1-3."""
    rng = np.random.default_rng(seed)
    return dict(
        w1=rng.normal(size=(d_in, hidden)) * np.sqrt(2.0 / d_in),
        b1=0.3 * rng.normal(size=hidden),
        w2=rng.normal(size=(hidden, classes)) * np.sqrt(4.0 / hidden),
        b2=0.3 * rng.normal(size=classes),
        ws=rng.normal(size=(d_in, classes)) * np.sqrt(4.0 / d_in),
        bs=0.3 * rng.normal(size=classes),
    )


def make_inputs(seed: int, batch: int, d_in: int) -> np.ndarray:
    """Standard normal inputs ``[batch, d_in]``."""
    return np.random.default_rng([seed, 1]).normal(size=(batch, d_in))


_ACTS = {"linear": lambda z: z, "mlp_relu": lambda z: np.maximum(z, 0.0), "mlp_tanh": np.tanh}


def deterministic_logits(arch: str, params: dict, x: np.ndarray) -> np.ndarray:
    """The weight-scaled (for inverted dropout: plain, mask-free) pass."""
    if arch == "softmax_regression":
        return x @ params["ws"] + params["bs"]
    h = _ACTS[arch](x @ params["w1"] + params["b1"])
    return h @ params["w2"] + params["b2"]


def exact_moments(
    arch: str, params: dict, x: np.ndarray, rate: float, chunk: int = 256
) -> dict[str, np.ndarray]:
    """Exact mask averages of the logits, the probabilities and the log-probabilities.

    Enumerates every input mask (and every hidden mask for the two-layer nets), each entry
    scaled by ``1/(1 - rate)`` when kept, weighted by its probability.
    """
    q = 1.0 - rate
    d_in = x.shape[1]
    a_masks = all_masks(d_in)
    pa = mask_probs(a_masks, rate)
    acc = {"logits": 0.0, "probs": 0.0, "logprobs": 0.0}
    if arch == "softmax_regression":
        z = np.einsum("bi,ai,ic->abc", x, a_masks / q, params["ws"]) + params["bs"]
        _accumulate(acc, z, pa[:, None, None])
        return acc
    hidden = params["w1"].shape[1]
    b_masks = all_masks(hidden)
    pb = mask_probs(b_masks, rate)
    act = _ACTS[arch]
    for s in range(0, a_masks.shape[0], chunk):
        a = a_masks[s : s + chunk]
        h = act(np.einsum("bi,ai,ij->abj", x, a / q, params["w1"]) + params["b1"])
        # logits[a, m, b, c] = sum_j h[a, b, j] * mask_m[j] / q * w2[j, c] + b2[c]
        z = np.einsum("abj,mj,jc->ambc", h, b_masks / q, params["w2"]) + params["b2"]
        weight = (pa[s : s + chunk, None] * pb[None, :])[:, :, None, None]
        _accumulate(acc, z, weight)
    return acc


def _accumulate(acc: dict, z: np.ndarray, weight: np.ndarray) -> None:
    lead = tuple(range(z.ndim - 2))
    logp = scipy.special.log_softmax(z, axis=-1)
    acc["logits"] = acc["logits"] + np.sum(weight * z, axis=lead)
    acc["probs"] = acc["probs"] + np.sum(weight * np.exp(logp), axis=lead)
    acc["logprobs"] = acc["logprobs"] + np.sum(weight * logp, axis=lead)


def gaps(arch: str, params: dict, x: np.ndarray, rate: float) -> dict[str, float]:
    """Exact gaps between the ensemble mean and the deterministic (weight-scaled) pass."""
    det = deterministic_logits(arch, params, x)
    ens = exact_moments(arch, params, x, rate)
    p_det = scipy.special.softmax(det, axis=-1)
    nwgm = scipy.special.softmax(ens["logprobs"], axis=-1)
    rms = float(np.sqrt(np.mean(det**2)))
    return dict(
        logit_gap_rel=float(np.mean(np.max(np.abs(ens["logits"] - det), axis=-1)) / rms),
        logit_gap_max_abs=float(np.max(np.abs(ens["logits"] - det))),
        prob_tv=float(np.mean(0.5 * np.sum(np.abs(ens["probs"] - p_det), axis=-1))),
        nwgm_tv=float(np.mean(0.5 * np.sum(np.abs(nwgm - p_det), axis=-1))),
        argmax_disagree=float(np.mean(ens["probs"].argmax(-1) != p_det.argmax(-1))),
        ensemble_probs=ens["probs"],
    )


# ----------------------------------------------------------------- Monte Carlo (dropjax)
@jax.jit(static_argnums=(6, 7))
def _mc_probs(key, x, w1, b1, w2, b2, num_chunks: int, chunk: int, rate):
    """Sum and sum of squares of the ``mlp_relu`` probabilities over dropjax masks."""
    tiled = jnp.broadcast_to(x, (chunk, *x.shape))

    def body(carry, k):
        k1, k2 = jax.random.split(k)
        h = jax.nn.relu(dropjax.dropout(k1, tiled, rate) @ w1 + b1)
        prob = jax.nn.softmax(dropjax.dropout(k2, h, rate) @ w2 + b2, axis=-1)
        s, s2 = carry
        return (s + prob.sum(0), s2 + (prob * prob).sum(0)), None

    zero = jnp.zeros((x.shape[0], w2.shape[1]), jnp.float32)
    (s, s2), _ = jax.lax.scan(body, (zero, zero), jax.random.split(key, num_chunks))
    return s, s2


def mc_probs(key, params: dict, x: np.ndarray, rate: float, num_masks: int, chunk: int = 1000):
    """Monte Carlo mean of the ``mlp_relu`` probabilities and its standard error."""
    chunk = min(chunk, num_masks)
    num_chunks = -(-num_masks // chunk)
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    s, s2 = _mc_probs(
        key,
        f32(x),
        f32(params["w1"]),
        f32(params["b1"]),
        f32(params["w2"]),
        f32(params["b2"]),
        num_chunks,
        chunk,
        jnp.float32(rate),
    )
    m = num_chunks * chunk
    s, s2 = np.asarray(s, np.float64), np.asarray(s2, np.float64)
    mean = s / m
    var = np.maximum(s2 / m - mean**2, 0.0) * m / (m - 1)
    return mean, np.sqrt(var / m)


# ---------------------------------------------------------------------------- experiment
def _config(ctx: RunContext) -> dict[str, Any]:
    cfg = dict(PRESETS[ctx.preset])
    if ctx.replicas is not None:
        cfg["seeds"] = int(ctx.replicas)
    cfg["seed_list"] = [ctx.seed + r for r in range(cfg["seeds"])]
    cfg["rates"] = list(cfg["rates"])
    cfg["archs"] = list(ARCHS)
    return cfg


def _figure(summary: dict, rates: list[float], path: Path) -> None:
    from matplotlib.figure import Figure

    p = np.asarray(rates)
    fig = Figure(figsize=(13, 4), layout="constrained")
    ax1, ax2, ax3 = fig.subplots(1, 3)
    floor = 1e-17
    for arch, style in zip(ARCHS, ("ko-", "C0s-", "C1^-", "C2v-"), strict=True):
        m = np.array([summary[arch][str(r)]["logit_gap_rel"]["mean"] for r in rates])
        ax1.plot(p, np.maximum(m, floor), style, label=arch)
    m = np.array([summary["softmax_regression"][str(r)]["nwgm_tv"]["mean"] for r in rates])
    ax1.plot(p, np.maximum(m, floor), "C0s:", mfc="none", label="softmax_regression: NWGM TV")
    ax1.set_yscale("log")
    ax1.set(
        xlabel="dropout rate p",
        ylabel="relative gap (mean over inputs)",
        title="(a) output/logit gap: exact vs Jensen",
    )
    ax1.legend(fontsize=7)
    for arch, style in zip(ARCHS[1:], ("C0s-", "C1^-", "C2v-"), strict=True):
        rows = [summary[arch][str(r)]["prob_tv"] for r in rates]
        m = np.array([r["mean"] for r in rows])
        lo = np.array([r["ci_low"] if r["ci_low"] is not None else r["mean"] for r in rows])
        hi = np.array([r["ci_high"] if r["ci_high"] is not None else r["mean"] for r in rows])
        ax2.errorbar(p, m, yerr=[m - lo, hi - m], fmt=style, capsize=3, label=arch)
    ax2.set(
        xlabel="dropout rate p",
        ylabel="TV(ensemble mean, weight-scaled)",
        title="(b) Jensen gap of the probabilities (95% CI)",
    )
    ax2.legend(fontsize=8)
    z = [summary["mc_check"][str(r)]["abs_z_max"] for r in rates]
    ax3.bar(p, z, width=0.06)
    ax3.axhline(Z_LIMIT, color="r", ls="--", label=f"|z| = {Z_LIMIT}")
    ax3.set(
        xlabel="dropout rate p",
        ylabel="max |z| over inputs x classes",
        title="(c) dropjax MC mean vs exact enumeration",
    )
    ax3.legend(fontsize=8)
    fig.savefig(path, dpi=120)


def render(results: dict[str, Any]) -> str:
    rates = results["config"]["rates"]
    s = results["summary"]
    lines = [
        "| p | linear: rel. output gap (max) | softmax-reg: prob TV | softmax-reg: NWGM TV | "
        "ReLU MLP: logit gap | ReLU MLP: prob TV | tanh MLP: prob TV | "
        "ReLU MLP: argmax differs | MC max abs z |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def ms(d):
        return f"{d['mean']:.2e} ± {d['std']:.1e}"

    for r in rates:
        k = str(r)
        lines.append(
            f"| {r:.1f} | {s['linear'][k]['logit_gap_rel']['max']:.1e} | "
            f"{ms(s['softmax_regression'][k]['prob_tv'])} | "
            f"{s['softmax_regression'][k]['nwgm_tv']['max']:.1e} | "
            f"{ms(s['mlp_relu'][k]['logit_gap_rel'])} | {ms(s['mlp_relu'][k]['prob_tv'])} | "
            f"{ms(s['mlp_tanh'][k]['prob_tv'])} | "
            f"{s['mlp_relu'][k]['argmax_disagree']['mean']:.3f} | "
            f"{s['mc_check'][k]['abs_z_max']:.2f} |"
        )
    v = results["verdicts"]
    lines.append(
        f"\nVerdicts: linear exact: **{v['linear_exact']}**; non-linear mismatch: "
        f"**{v['nonlinear_mismatch']}**; overall: **{results['verdict']}** "
        f"({results['source']})."
    )
    return "\n".join(lines)


@register(NAME, "Weight scaling vs exact dropout-ensemble mean (Jensen gap)", render=render)
def run(ctx: RunContext) -> dict[str, Any]:
    cfg = _config(ctx)
    start = time.time()
    rates, seeds = cfg["rates"], cfg["seed_list"]
    per_seed = []
    mc_z: dict[str, list[float]] = {str(r): [] for r in rates}
    for s in seeds:
        params = init_params(s, cfg["d_in"], cfg["hidden"], cfg["classes"])
        x = make_inputs(s, cfg["batch"], cfg["d_in"])
        entry: dict[str, Any] = {"seed": s}
        for arch in ARCHS:
            entry[arch] = {}
            for j, r in enumerate(rates):
                g = gaps(arch, params, x, r)
                probs = g.pop("ensemble_probs")
                entry[arch][str(r)] = g
                if arch == "mlp_relu":
                    key = jax.random.fold_in(jax.random.key(s), j)
                    mean, se = mc_probs(key, params, x, r, cfg["mc_masks"])
                    z = float(np.max(np.abs(mean - probs) / np.maximum(se, 1e-12)))
                    entry[arch][str(r)]["mc_abs_z_max"] = z
                    mc_z[str(r)].append(z)
        per_seed.append(entry)

    summary: dict[str, Any] = {}
    metrics = ("logit_gap_rel", "prob_tv", "nwgm_tv", "argmax_disagree")
    for arch in ARCHS:
        summary[arch] = {}
        for r in rates:
            vals = {m: [e[arch][str(r)][m] for e in per_seed] for m in metrics}
            summary[arch][str(r)] = {
                m: dict(stats.mean_ci(v), max=float(np.max(v))) for m, v in vals.items()
            }
    summary["mc_check"] = {str(r): dict(abs_z_max=float(np.max(mc_z[str(r)]))) for r in rates}

    # Verdicts.
    lin_max = max(summary["linear"][str(r)]["logit_gap_rel"]["max"] for r in rates)
    nwgm_max = max(summary["softmax_regression"][str(r)]["nwgm_tv"]["max"] for r in rates)
    linear_exact = "reproduced" if lin_max < EXACT_TOL else "not reproduced"
    mismatch = {}
    trend = {}
    for arch in ("mlp_relu", "mlp_tanh"):
        lows = [summary[arch][str(r)]["prob_tv"]["ci_low"] for r in rates]
        if any(lo is None for lo in lows):
            mismatch[arch] = "inconclusive"
        elif all(lo > GAP_FLOOR for lo in lows):
            mismatch[arch] = "reproduced"
        elif all(summary[arch][str(r)]["prob_tv"]["ci_high"] < GAP_FLOOR for r in rates):
            mismatch[arch] = "not reproduced"
        else:
            mismatch[arch] = "inconclusive"
        means = [summary[arch][str(r)]["prob_tv"]["mean"] for r in rates]
        rho = scipy.stats.spearmanr(rates, means).statistic if len(rates) > 2 else float("nan")
        trend[arch] = dict(
            spearman_rate_vs_gap=float(rho),
            gap_at_lowest_rate=means[0],
            gap_at_highest_rate=means[-1],
        )
    labels = set(mismatch.values())
    nonlinear = labels.pop() if len(labels) == 1 else "inconclusive"
    mc_ok = all(v["abs_z_max"] < Z_LIMIT for v in summary["mc_check"].values())
    if linear_exact == "reproduced" and nonlinear == "reproduced":
        verdict = "reproduced"
    elif "not reproduced" in (linear_exact, nonlinear):
        verdict = "not reproduced"
    else:
        verdict = "inconclusive"

    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    _figure(summary, rates, ctx.out_dir / FIGURE)
    return dict(
        claim=CLAIM,
        source=SOURCE,
        config=cfg,
        per_seed=per_seed,
        summary=summary,
        trend=trend,
        checks=dict(
            linear_max_rel_gap=lin_max,
            softmax_regression_nwgm_max_tv=nwgm_max,
            nwgm_equals_weight_scaling=bool(nwgm_max < EXACT_TOL),
            mc_matches_enumeration=bool(mc_ok),
        ),
        verdicts=dict(
            linear_exact=linear_exact,
            nonlinear_mismatch=nonlinear,
            per_arch=mismatch,
        ),
        criteria=dict(exact_rel_tol=EXACT_TOL, gap_ci_low_above=GAP_FLOOR, mc_abs_z_below=Z_LIMIT),
        verdict=verdict,
        figure=FIGURE,
        time_s=round(time.time() - start, 2),
    )
