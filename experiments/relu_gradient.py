r"""``relu_gradient``: is the expected backpropagated gradient independent of the dropout rate?

What the seed claims (seed 000, "A Symphony of Components"): "When we analyze a ReLU neuron
under the influence of inverted dropout, we find that the expected value of the
backpropagated gradient is magically independent of the dropout probability p. [...] as we
crank up the dropout rate [...] the average 'learning signal' passing backward through the
network remains stable. This is a wonderful, emergent property of the inverted scaling
factor, providing a more stable training dynamic than the original dropout formulation."
That is three statements, and the experiment decides each one separately:

1. **Unit level** (the statement as written): one ReLU unit :math:`h = \mathrm{relu}(z)`
   followed by inverted dropout :math:`y = h\,m/q`, :math:`m \sim \mathcal{B}(q)`,
   :math:`q = 1 - p`. With the cotangent :math:`c = \partial L/\partial y` that arrives at the
   unit held fixed (a linear read-out and a loss linear in it: case ``unit_linear_loss``),
   :math:`\partial L/\partial z = c\,(m/q)\,1[z > 0]`, so
   :math:`\mathbb{E}[\partial L/\partial z] = c\,1[z>0]` for every :math:`p`, because
   :math:`\mathbb{E}[m/q] = 1`. The same holds for :math:`\partial L/\partial x` and
   :math:`\partial L/\partial W_1` of a whole layer of such units.
2. **The role of the inverted scaling** (the seed's contrast with "the original dropout
   formulation"): without the :math:`1/q` factor, :math:`y = h\,m` (arm ``non_inverted``,
   built here from ``dropjax.keep_mask`` because dropjax has no such op), the same unit's
   expected gradient is :math:`q\,c\,1[z>0]`: it shrinks by :math:`(1 - p)`.
3. **Network level** ("the learning signal passing backward through the network remains
   stable"): a deep ReLU net with dropout after every hidden layer (``deep_linear_loss``:
   linear loss; ``deep_ce``: 10-way soft-max cross-entropy, the usual setting). Here a mask
   changes what lies downstream of it -- the pre-activations of the next layer and so its
   ReLU pattern, and the cotangent of a non-linear loss -- so :math:`\mathbb{E}[m/q\,\cdot
   (\text{mask-dependent factor})] \neq` the no-dropout gradient in general.

Two one-layer cases isolate those two mechanisms (reported per case, no headline verdict):
``unit_mse`` (squared error: the cotangent depends on the mask; equivalently
:math:`\mathbb{E}[L] = L_0 + \tfrac{p}{q}\sum_j (h_j v_j)^2` per example, the ``linear_l2``
penalty, whose gradient grows with :math:`p/q`) and ``dropout_before_relu`` (a mask feeding
a ReLU changes its pattern).

What is measured. For a fixed random He-initialised network and batch (one per seed), the
Monte Carlo mean over many masks of :math:`\partial L/\partial x` and
:math:`\partial L/\partial W_1`, drawn in chunks (one call draws a chunk of independent
masks; both arms use the same keys, so the same masks), against the no-dropout gradient
:math:`g_0`, and against the non-inverted unit's prediction :math:`q\,g_0`:

* the squared relative deviation :math:`\|\mathbb{E} g - g_{\mathrm{ref}}\|^2 /
  \|g_{\mathrm{ref}}\|^2`, estimated without bias as a U-statistic over chunks
  (:func:`deviation_stats`: the squared distance of the mean minus the trace of its
  covariance), with a Student-t interval over seeds (the mean square over networks); its
  square root is the relative deviation;
* the gain :math:`\langle \mathbb{E} g, g_0\rangle/\|g_0\|^2` (1 for "unchanged", :math:`q`
  for "shrunk by 1 - p"), the scalar "learning signal" of the figure.

How each is decided (tolerance ``TOL`` = 0.05, a 5 % relative deviation). A statement
"E g = g_ref" holds at one rate when the 95 % upper bound of the relative deviation lies
below ``TOL`` for both gradients (dL/dx and dL/dW1), fails when the lower bound of either
lies above ``TOL``, and is undecided otherwise. Over the rates: holds at every rate ->
**reproduced**; fails at some rate -> **refuted**; else **inconclusive** (the identity checks
and verdicts of :mod:`experiments.tolerance`, on the relative deviation, whose interval is
the square root of the squared deviation's, clipped at 0). ``TOL`` is the
minimal effect worth telling apart: it is half the smallest shrink :math:`p` in the rate
grids (0.1), so the 5 % bands around :math:`g_0` and around :math:`q\,g_0` never overlap and
a reproduced unit-level verdict for one arm excludes the other arm's prediction.

* ``unit`` verdict: statement 1, inverted arm against :math:`g_0` in ``unit_linear_loss``;
* ``non_inverted_unit`` verdict: statement 2, non-inverted arm against :math:`q\,g_0` in the
  same case (reproduced = the expected gradient shrinks by exactly :math:`1 - p`, within
  ``TOL``);
* ``network`` verdict: statement 3, inverted arm against :math:`g_0` in both deep cases
  (refuted = the expected gradient of a deep net moves by more than ``TOL`` with :math:`p`);
* ``network_stability`` (comparative, :func:`experiments.stats.decide`): "inverted dropout
  keeps the deep net's learning signal closer to :math:`g_0` than non-inverted dropout", the
  paired (per seed) difference of relative deviations of dL/dW1, non-inverted minus
  inverted, claimed sign +, with :math:`\delta = p` (the shrink the non-inverted unit shows,
  the seed's own effect), per case and rate, combined with
  :func:`experiments.stats.combine_decisions`. The measure is the whole vector's deviation,
  so a gradient that vanishes counts as deviation 1, while one that turns or grows can
  deviate more: at high :math:`p` the non-inverted net's shrunken gradient can be the closer
  one (the table's gain columns show the component along :math:`g_0` separately).

Evidence. The seed gives no protocol, network or data: it states a property of an
expectation over masks. The checks here are exact expectations of fixed, fully specified
functions, estimated by Monte Carlo with the Monte Carlo error inside the intervals, so the
coverage is 1.0 (there is no protocol to fall short of) on synthetic inputs (nothing
substituted for data the seed names). The networks are random and untrained: a refuted
network-level verdict is a counterexample to a general statement; a reproduced one would
speak only for networks like these. The headline ``verdict`` reads
``"unit-level <unit>; network-level <network>"``.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import dropjax
from experiments import plots, stats, tolerance
from experiments.registry import RunContext, register

NAME = "relu_gradient"
CLAIM = (
    '"the expected value of the backpropagated gradient is magically independent of the '
    'dropout probability p" (a ReLU neuron under inverted dropout); without the inverted '
    "scaling it would shrink by (1 - p); 'the learning signal passing backward through the "
    "network remains stable'"
)
SOURCE = "seed 000 (explainer 'Inverted Dropout'), section 'A Symphony of Components'"
ARMS = ("inverted", "non_inverted")
ARM_NOTES = {
    "inverted": "y = x m / (1 - p)  (dropjax.dropout)",
    "non_inverted": "y = x m  (dropjax.keep_mask, no rescaling: the original formulation)",
}
UNIT_CASE = "unit_linear_loss"
MECHANISM_CASES = ("unit_mse", "dropout_before_relu")
NETWORK_CASES = ("deep_linear_loss", "deep_ce")
CASES = (UNIT_CASE, *MECHANISM_CASES, *NETWORK_CASES)
CASE_NOTES = {
    "unit_linear_loss": "relu(x W1 + b1) -> dropout -> linear read-out, loss = mean output",
    "unit_mse": "relu(x W1 + b1) -> dropout -> linear read-out, squared error",
    "dropout_before_relu": "dropout(x) -> relu(. W1 + b1) -> linear read-out, linear loss",
    "deep_linear_loss": "depth x [relu layer -> dropout] -> scalar read-out, linear loss",
    "deep_ce": "depth x [relu layer -> dropout] -> 10-way softmax cross-entropy",
}
WRT = ("x", "W1")
REFS = ("g0", "q_g0")  # the no-dropout gradient; the non-inverted unit's prediction (1 - p) g0

TOL = 0.05
"""Relative deviation below which ``E g = g_ref`` counts as holding (see the docstring)."""


@dataclasses.dataclass(frozen=True)
class Preset:
    """The networks, rates and Monte Carlo budget of one preset.

    Attributes:
      d_in: input features.
      width: units per hidden layer.
      depth: hidden layers of the deep cases.
      batch: inputs per network.
      rates: dropout rates p.
      seeds: networks, one per seed.
      chunks: chunk means per Monte Carlo estimate.
      chunk: masks per chunk (drawn by one call).
    """

    d_in: int
    width: int
    depth: int
    batch: int
    rates: tuple[float, ...]
    seeds: int
    chunks: int
    chunk: int


PRESETS = {
    "smoke": Preset(8, 16, 3, batch=4, rates=(0.2, 0.6), seeds=3, chunks=16, chunk=256),
    "quick": Preset(16, 32, 4, batch=4, rates=(0.1, 0.3, 0.5, 0.7), seeds=8, chunks=40, chunk=400),
    "paper": Preset(
        32, 64, 6, batch=8, rates=(0.1, 0.3, 0.5, 0.7), seeds=30, chunks=100, chunk=1000
    ),
}


# ---------------------------------------------------------------------------- networks
def init_params(seed: int, d_in: int, width: int, depth: int, classes: int = 10) -> dict:
    """He-initialised ReLU stack (float32), read-outs for a scalar and a 10-way output."""
    rng = np.random.default_rng([seed, 0])
    fans = [d_in] + [width] * (depth - 1)
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    return {
        "w": [f32(rng.normal(size=(n, width)) * np.sqrt(2.0 / n)) for n in fans],
        "b": [f32(0.1 * rng.normal(size=width)) for _ in range(depth)],
        "v": f32(rng.normal(size=width) / np.sqrt(width)),
        "wc": f32(rng.normal(size=(width, classes)) * np.sqrt(2.0 / width)),
    }


def make_batch(seed: int, batch: int, d_in: int, classes: int = 10):
    """Inputs ``[B, d]``, class labels (for ``deep_ce``) and regression targets (``unit_mse``)."""
    rng = np.random.default_rng([seed, 1])
    x = jnp.asarray(rng.normal(size=(batch, d_in)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, classes, size=batch), jnp.int32)
    targets = jnp.asarray(rng.normal(size=batch), jnp.float32)
    return x, labels, targets


def non_inverted_dropout(key: jax.Array, x: jax.Array, rate: jax.Array) -> jax.Array:
    """The original formulation, ``x * m`` with no ``1 / (1 - rate)`` rescaling.

    ``m = dropjax.keep_mask(key, x.shape, rate)``: the mask ``dropjax.dropout(key, x, rate)``
    applies, so both arms see the same masks for the same key.
    """
    return x * dropjax.keep_mask(key, x.shape, rate).astype(x.dtype)


def loss_fn(
    case: str,
    w1,
    x,
    params,
    labels,
    targets,
    key,
    rate,
    deterministic: bool = False,
    arm: str = "inverted",
):
    """Loss of ``case`` with leading mask-copy axis: ``x`` is ``[C, B, d]``; one dropout call
    per layer draws C independent masks; the loss is the mean over copies and batch.
    ``arm`` is ``"inverted"`` (``dropjax.dropout``) or ``"non_inverted"`` (no rescaling)."""

    def drop(k, h):
        if deterministic:
            return h
        if arm == "inverted":
            return dropjax.dropout(k, h, rate)
        return non_inverted_dropout(k, h, rate)

    keys = jax.random.split(key, len(params["w"]) + 1)
    b = params["b"]
    if case in ("unit_linear_loss", "unit_mse"):
        out = drop(keys[0], jax.nn.relu(x @ w1 + b[0])) @ params["v"]
        if case == "unit_linear_loss":
            return jnp.mean(out)
        return jnp.mean((out - targets) ** 2)
    if case == "dropout_before_relu":
        return jnp.mean(jax.nn.relu(drop(keys[0], x) @ w1 + b[0]) @ params["v"])
    h = drop(keys[0], jax.nn.relu(x @ w1 + b[0]))
    for i in range(1, len(params["w"])):
        h = drop(keys[i], jax.nn.relu(h @ params["w"][i] + b[i]))
    if case == "deep_linear_loss":
        return jnp.mean(h @ params["v"])
    logp = jax.nn.log_softmax(h @ params["wc"], axis=-1)
    idx = jnp.broadcast_to(labels, logp.shape[:-1])[..., None]
    return -jnp.mean(jnp.take_along_axis(logp, idx, axis=-1))


def _grads(case, arm, params, x, labels, targets, key, rate, copies, deterministic):
    tiled = jnp.broadcast_to(x, (copies, *x.shape))

    def f(w1, xs):
        return loss_fn(case, w1, xs, params, labels, targets, key, rate, deterministic, arm)

    # The loss is a mean over copies, so the gradient w.r.t. the shared W1 is the chunk mean,
    # and the gradient w.r.t. the (broadcast) input is the chunk mean times ``copies``.
    gw, gx = jax.grad(f, argnums=(0, 1))(params["w"][0], tiled)
    return gw, gx.sum(0)


@jax.jit(static_argnames=("case", "num_chunks", "chunk", "arm"))
def mc_gradient_moments(
    case, params, x, labels, targets, key, num_chunks, chunk, rate, arm="inverted"
):
    """Chunk means of dL/dW1 and dL/dx over ``num_chunks`` chunks of ``chunk`` masks each,
    and the no-dropout gradients: ``(gw_chunks [K, d, H], gx_chunks [K, B, d], gw0, gx0)``."""

    def body(_, k):
        return None, _grads(case, arm, params, x, labels, targets, k, rate, chunk, False)

    _, (gw, gx) = jax.lax.scan(body, None, jax.random.split(key, num_chunks))
    gw0, gx0 = _grads(case, arm, params, x, labels, targets, key, rate, 1, True)
    return gw, gx, gw0, gx0


def deviation_stats(chunk_means: np.ndarray, g0: np.ndarray) -> dict[str, float]:
    r"""Deviation of the mean of ``chunk_means`` [K, ...] from ``g0``.

    With :math:`a_i = c_i - g_0`, :math:`S = \sum_i a_i`, :math:`Q = \sum_i \|a_i\|^2`, the
    U-statistic :math:`U = (\|S\|^2 - Q)/(K(K-1))` is unbiased for
    :math:`\|\mathbb{E}g - g_0\|^2` (it equals :math:`\|\bar g - g_0\|^2` minus the trace of
    the covariance of :math:`\bar g`). Returns :math:`U/\|g_0\|^2` (``dev2_unbiased``), its
    jackknife z-score over chunks, the naive deviation, the noise floor, and the signed
    component along :math:`g_0`.
    """
    chunk_means = np.asarray(chunk_means, np.float64)
    k = chunk_means.shape[0]
    g0 = np.asarray(g0, np.float64).reshape(-1)
    a = chunk_means.reshape(k, -1) - g0[None, :]
    norm2 = float(g0 @ g0)
    total = a.sum(0)
    sq = np.sum(a * a, axis=1)
    u = (total @ total - sq.sum()) / (k * (k - 1))
    loo_total = total[None, :] - a
    u_loo = (np.sum(loo_total * loo_total, axis=1) - (sq.sum() - sq)) / ((k - 1) * (k - 2))
    se = float(np.sqrt((k - 1) / k * np.sum((u_loo - u_loo.mean()) ** 2)))
    diff2 = float(total @ total) / k**2
    proj = (a + g0) @ g0 / norm2 - 1.0
    return dict(
        dev2_unbiased=float(u) / norm2,
        dev2_z=float(u) / se if se > 0 else 0.0,
        rel_dev_naive=float(np.sqrt(diff2 / norm2)),
        noise_floor=float(np.sqrt(max(diff2 - u, 0.0) / norm2)),
        along_g0=float(proj.mean()),
        along_g0_se=float(proj.std(ddof=1) / np.sqrt(k)),
    )


# ---------------------------------------------------------------------------- measure
def config(preset: Preset, seeds: list[int]) -> dict[str, Any]:
    """The results' ``config``: the preset, the seeds, and what the cases and arms are."""
    return {
        **dataclasses.asdict(preset),
        "seeds": len(seeds),
        "seed_list": seeds,
        "masks_per_estimate": preset.chunks * preset.chunk,
        "cases": dict(CASE_NOTES),
        "arms": dict(ARM_NOTES),
        "tolerance": TOL,
    }


def measure_rate(case, arm, params, batch, key, rate: float, preset: Preset) -> dict:
    """Per gradient (dL/dx, dL/dW1), the deviation statistics of the Monte Carlo mean of one
    case, arm and rate from ``g0`` and from ``(1 - p) g0``."""
    out = mc_gradient_moments(
        case, params, *batch, key, preset.chunks, preset.chunk, jnp.float32(rate), arm=arm
    )
    gw, gx, gw0, gx0 = (np.asarray(a, np.float64) for a in out)
    chunks = {"x": (gx, gx0), "W1": (gw, gw0)}
    return {
        wrt: {"g0": deviation_stats(c, g0), "q_g0": deviation_stats(c, (1.0 - rate) * g0)}
        for wrt, (c, g0) in chunks.items()
    }


def measure_seed(seed: int, preset: Preset) -> dict[str, Any]:
    """One network and batch: per arm, case, rate and gradient, the deviation statistics of
    the Monte Carlo mean from ``g0`` and from ``(1 - p) g0``. Both arms use the same keys."""
    params = init_params(seed, preset.d_in, preset.width, preset.depth)
    batch = make_batch(seed, preset.batch, preset.d_in)
    entry: dict[str, Any] = {"seed": seed}
    for arm in ARMS:
        entry[arm] = {}
        for ci, case in enumerate(CASES):
            keys = jax.random.split(jax.random.key(1000 * seed + ci), len(preset.rates))
            entry[arm][case] = {
                str(r): measure_rate(case, arm, params, batch, keys[j], r, preset)
                for j, r in enumerate(preset.rates)
            }
    return entry


# ---------------------------------------------------------------------------- summarise
def _sqrt_clip(v):
    return None if v is None else float(np.sqrt(max(v, 0.0)))


def _ref_summary(vals: list[dict[str, float]]) -> dict[str, Any]:
    dev2 = stats.mean_ci([v["dev2_unbiased"] for v in vals])
    return dict(
        dev2=dev2,
        rel_dev=_sqrt_clip(dev2["mean"]),
        rel_dev_ci=[_sqrt_clip(dev2["ci_low"]), _sqrt_clip(dev2["ci_high"])]
        if dev2["ci_low"] is not None
        else [None, None],
        rel_dev_per_seed=[_sqrt_clip(v["dev2_unbiased"]) for v in vals],
        rel_dev_naive=stats.mean_std([v["rel_dev_naive"] for v in vals]),
        noise_floor=stats.mean_std([v["noise_floor"] for v in vals]),
        # Per-seed jackknife z of the squared deviation, combined (Stouffer): ~N(0, 1)
        # under "E[g] = g_ref for every network" (descriptive; the verdicts use TOL).
        stouffer_z=float(np.sum([v["dev2_z"] for v in vals]) / np.sqrt(len(vals))),
    )


def summarise(per_seed: list[dict[str, Any]], rates: list[float]) -> dict[str, Any]:
    """``summary[arm][case][rate][wrt]``: per reference the relative deviation with its 95 %
    interval over seeds, and the gain <E g, g0>/|g0|^2 with its interval."""
    out: dict[str, Any] = {}
    for arm in ARMS:
        out[arm] = {}
        for case in CASES:
            out[arm][case] = {}
            for r in rates:
                row = {}
                for wrt in WRT:
                    vals = [e[arm][case][str(r)][wrt] for e in per_seed]
                    row[wrt] = {ref: _ref_summary([v[ref] for v in vals]) for ref in REFS}
                    row[wrt]["gain"] = stats.mean_ci([1.0 + v["g0"]["along_g0"] for v in vals])
                out[arm][case][str(r)] = row
    return out


# ---------------------------------------------------------------------------- decide
_PAIR_CHECK = {"reproduced": "within", "refuted": "outside", "inconclusive": "undecided"}


def rate_check(row: dict[str, Any], ref: str) -> str:
    """One rate's check of ``E g = g_ref`` (:func:`experiments.tolerance.check` of the relative
    deviation's 95 % interval against ``TOL``): ``within`` when it holds for dL/dx and dL/dW1,
    ``outside`` when it fails for either, else ``undecided``."""
    pair = []
    for wrt in WRT:
        lo, hi = row[wrt][ref]["rel_dev_ci"]
        pair.append(tolerance.check({"ci_low": lo, "ci_high": hi}, TOL))
    return _PAIR_CHECK[tolerance.verdict(pair, "identity")]


def _checks(summary, arm, cases, ref, rates) -> dict[str, dict[str, str]]:
    """``{case: {rate: check}}`` (:func:`rate_check`)."""
    return {case: {str(r): rate_check(summary[arm][case][str(r)], ref) for r in rates}
            for case in cases}  # fmt: skip


def _flat(checks: dict[str, dict[str, str]]) -> str:
    """The statement's verdict over every case and rate (:func:`experiments.tolerance.verdict`)."""
    return tolerance.verdict([c for per_rate in checks.values() for c in per_rate.values()])


def decide(summary: dict[str, Any], rates: list[float]) -> dict[str, Any]:
    """The unit-level, non-inverted and network-level verdicts, the per-case checks, and the
    comparative network-stability decision (see the module docstring)."""
    unit = _checks(summary, "inverted", (UNIT_CASE,), "g0", rates)
    non_inv = _checks(summary, "non_inverted", (UNIT_CASE,), "q_g0", rates)
    network = _checks(summary, "inverted", NETWORK_CASES, "g0", rates)
    per_case = _checks(summary, "inverted", CASES, "g0", rates)
    stability: dict[str, Any] = {}
    cells = []
    for case in NETWORK_CASES:
        stability[case] = {}
        for r in rates:
            row = {a: summary[a][case][str(r)]["W1"]["g0"]["rel_dev_per_seed"] for a in ARMS}
            diff = stats.paired_difference(row["inverted"], row["non_inverted"])
            d = {"difference": diff, **stats.decide(diff, +1, float(r), coverage=1.0)}
            stability[case][str(r)] = d
            cells.append(d)
    return {
        "unit": _flat(unit),
        "non_inverted_unit": _flat(non_inv),
        "network": _flat(network),
        "per_case": {case: _flat({case: c}) for case, c in per_case.items()},
        "checks": {
            "unit": unit,
            "non_inverted_unit": non_inv,
            "network": network,
            "per_case": per_case,
        },
        "network_stability": {"cells": stability, **stats.combine_decisions(cells)},
    }


# ---------------------------------------------------------------------------- render, plot
def _fmt_dev(d: dict[str, Any]) -> str:
    lo, hi = d["rel_dev_ci"]
    if lo is None:
        return f"{d['rel_dev']:.4f} [n/a]"
    return f"{d['rel_dev']:.4f} [{lo:.4f}, {hi:.4f}]"


def _fmt_gain(g: dict[str, Any]) -> str:
    if g["ci_low"] is None:
        return f"{g['mean']:.4f}"
    return f"{g['mean']:.4f} [{g['ci_low']:.4f}, {g['ci_high']:.4f}]"


def render(results: dict[str, Any]) -> str:
    """Markdown: the three verdicts, the per-case rows, and the network-stability cells."""
    rates = results["config"]["rates"]
    s, v, tol = results["summary"], results["verdicts"], results["config"]["tolerance"]
    lines = [
        "| statement | arm | cases | E g compared with | verdict |",
        "|---|---|---|---|---|",
        f"| unit level: E[grad] independent of p | inverted | {UNIT_CASE} | g0 | **{v['unit']}** |",
        f"| no inverted scaling: E[grad] shrinks by (1 - p) | non-inverted | {UNIT_CASE} | "
        f"(1 - p) g0 | **{v['non_inverted_unit']}** |",
        f"| network level: E[grad] independent of p | inverted | {', '.join(NETWORK_CASES)} | "
        f"g0 | **{v['network']}** |",
        f"| inverted more stable than non-inverted (deep nets, dL/dW1; δ = p) | both | "
        f"{', '.join(NETWORK_CASES)} | g0 | **{v['network_stability']['headline']}** |",
        "",
        f"Relative deviation |E g - g_ref| / |g_ref| (bias-corrected, 95% CI over "
        f"{len(results['per_seed'])} networks); a statement holds at a rate when the upper "
        f"bound is below {tol:g} for dL/dx and dL/dW1, fails when a lower bound is above it. "
        "Gain = <E g, g0>/|g0|^2 of dL/dW1 (1: unchanged; 1 - p: shrunk by 1 - p).",
        "",
        "| case | p | gain inverted | gain non-inverted | rel. dev. from g0, inverted: "
        "dL/dx | dL/dW1 | check (inverted vs g0) |",
        "|---|---|---|---|---|---|---|",
    ]
    for case in CASES:
        for r in rates:
            inv, non = s["inverted"][case][str(r)], s["non_inverted"][case][str(r)]
            check = v["checks"]["per_case"][case][str(r)]
            lines.append(
                f"| {case} | {r:g} | {_fmt_gain(inv['W1']['gain'])} | "
                f"{_fmt_gain(non['W1']['gain'])} | {_fmt_dev(inv['x']['g0'])} | "
                f"{_fmt_dev(inv['W1']['g0'])} | {check} |"
            )
    lines += [
        "",
        "Per case (inverted vs g0): " + "; ".join(f"{c}: {v['per_case'][c]}" for c in CASES) + ".",
        "",
        "| deep net | p | rel. dev. non-inverted − inverted (dL/dW1) [95% CI] | verdict | "
        "power (δ = p) |",
        "|---|---|---|---|---|",
    ]
    for case in NETWORK_CASES:
        for r in rates:
            d = v["network_stability"]["cells"][case][str(r)]
            power = d["power"]
            power_txt = "—" if power is None or power != power else f"{power:.2f}"
            lines.append(
                f"| {case} | {r:g} | {stats.fmt_diff(d['difference'])} | {d['verdict']} | "
                f"{power_txt} |"
            )
    lines.append(f"\nHeadline: **{results['verdict']}** ({results['source']}).")
    return "\n".join(lines)


def _gain_panel(ax, results: dict[str, Any]) -> None:
    """The unit-level gain of both arms against 1 and 1 - p, with the ±TOL bands."""
    rates, tol, s = results["config"]["rates"], results["config"]["tolerance"], results["summary"]
    grid = np.linspace(0.0, max(rates), 50)
    ax.plot(grid, np.ones_like(grid), "k-", lw=0.8, label="claim: 1 (inverted)")
    ax.plot(grid, 1.0 - grid, "k--", lw=0.8, label="1 - p (no rescaling)")
    ax.fill_between(grid, 1 - tol, 1 + tol, color="C0", alpha=0.12, lw=0)
    ax.fill_between(grid, (1 - grid) * (1 - tol), (1 - grid) * (1 + tol), color="C1", alpha=0.12)
    for arm, color in zip(ARMS, ("C0", "C1"), strict=True):
        for wrt, mk in zip(WRT, ("o", "s"), strict=True):
            gains = [s[arm][UNIT_CASE][str(r)][wrt]["gain"] for r in rates]
            plots.ci_errorbar(ax, rates, gains, mk, color=color, label=f"{arm}, dL/d{wrt}")
    ax.set(
        xlabel="dropout rate p",
        ylabel=r"gain $\langle E[g], g_0\rangle / \|g_0\|^2$",
        title=f"(a) {UNIT_CASE}: gain, 95% CI, ±{tol:g} bands",
    )
    ax.legend(fontsize=7)


def _deviation_panel(ax, results: dict[str, Any]) -> None:
    """The relative deviation from g0 of dL/dW1 for every case, inverted (solid) and
    non-inverted deep nets (dashed)."""
    rates, tol, s = results["config"]["rates"], results["config"]["tolerance"], results["summary"]
    for case, mk in zip(CASES, ("o", "s", "^", "v", "D"), strict=True):
        for arm in ARMS if case in NETWORK_CASES else ("inverted",):
            rows = [s[arm][case][str(r)]["W1"]["g0"] for r in rates]
            devs = [{"mean": d["rel_dev"], "ci_low": d["rel_dev_ci"][0],
                     "ci_high": d["rel_dev_ci"][1]} for d in rows]  # fmt: skip
            line = "-" if arm == "inverted" else "--"
            label = case + (" (non-inverted)" if arm == "non_inverted" else "")
            plots.ci_errorbar(ax, rates, devs, mk + line, label=label)
    ax.axhline(tol, color="k", lw=0.8, ls=":", label=f"tolerance {tol:g}")
    ax.set_yscale("symlog", linthresh=tol / 5)
    ax.set_ylim(bottom=0.0)
    ax.set(
        xlabel="dropout rate p",
        ylabel=r"$\|E[g] - g_0\| / \|g_0\|$, dL/dW1 (symlog)",
        title="(b) deviation from the no-dropout gradient, 95% CI",
    )
    ax.legend(fontsize=7)


def plot(results: dict[str, Any], path: Path) -> None:
    """(a) unit-level gain of both arms against 1 and 1 - p; (b) relative deviation from g0
    of dL/dW1 for every case."""
    fig, axes = plots.figure(1, 2, (11, 4))
    _gain_panel(axes[0, 0], results)
    _deviation_panel(axes[0, 1], results)
    plots.save(fig, path, dpi=120)


# ---------------------------------------------------------------------------- run
PRECISE_STATEMENT = (
    "Unit level: for a ReLU unit followed by inverted dropout, with the cotangent arriving at "
    "the unit fixed, E[dL/dz] = dL/dz at p = 0 for every p, since E[m/(1-p)] = 1; without the "
    "1/(1-p) scaling it is (1-p) times that. Network level: in a deep ReLU net with dropout "
    "after every hidden layer, a mask changes the next layer's ReLU pattern (and a non-linear "
    "loss's cotangent), so E[grad] moves with p; E[grad L] = grad E[L], and E[L] carries a "
    "p-dependent penalty unless L is affine in each mask entry."
)
DATA = (
    "synthetic Gaussian inputs and random He-initialised networks (the seed names no data or "
    "network)"
)


def _evidence(pairs: int) -> dict[str, Any]:
    return {
        "coverage": 1.0,  # no protocol in the seed; exact expectations, MC error in the CIs
        "data": "real",  # nothing substituted: the seed names no data
        "power": None,  # the headline verdicts are tolerance checks, not paired tests
        "delta": TOL,
        "pairs": pairs,
    }


@register(NAME, "Expected backprop gradient of ReLU nets with inverted dropout vs p", render=render)
def run(ctx: RunContext) -> dict[str, Any]:
    """Measure every seed, summarise over seeds, decide the three statements, plot."""
    preset = PRESETS[ctx.preset]
    seeds = ctx.seeds(preset.seeds)
    start = time.time()
    per_seed = [measure_seed(s, preset) for s in seeds]
    summary = summarise(per_seed, preset.rates)
    verdicts = decide(summary, preset.rates)
    results = dict(
        claim=CLAIM,
        source=SOURCE,
        precise_statement=PRECISE_STATEMENT,
        config=config(preset, seeds),
        data=DATA,
        per_seed=per_seed,
        summary=summary,
        verdicts=verdicts,
        verdict_unit=verdicts["unit"],
        verdict_network=verdicts["network"],
        verdict=f"unit-level {verdicts['unit']}; network-level {verdicts['network']}",
        evidence=_evidence(len(per_seed)),
    )
    results["figure"] = plots.publish(plot, results, ctx.out_dir, ctx.preset, NAME)
    results["time_s"] = round(time.time() - start, 2)
    return results
