"""The cells of :mod:`experiments.claims.relu_gradient`: what each measures, and how they are
summarised and decided."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import dropjax
from experiments.claims.relu_gradient._protocol import (
    _PAIR_CHECK,
    ARM_NOTES,
    ARMS,
    CASE_NOTES,
    CASES,
    NETWORK_CASES,
    REFS,
    TOL,
    UNIT_CASE,
    WRT,
    Preset,
)
from experiments.harness import stats


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


def rate_check(row: dict[str, Any], ref: str) -> str:
    """One rate's check of ``E g = g_ref`` (:func:`experiments.harness.stats.check` of the relative
    deviation's 95 % interval against ``TOL``): ``within`` when it holds for dL/dx and dL/dW1,
    ``outside`` when it fails for either, else ``undecided``."""
    pair = []
    for wrt in WRT:
        lo, hi = row[wrt][ref]["rel_dev_ci"]
        pair.append(stats.tolerance_check({"ci_low": lo, "ci_high": hi}, TOL))
    return _PAIR_CHECK[stats.tolerance_verdict(pair, "identity")]


def _checks(summary, arm, cases, ref, rates) -> dict[str, dict[str, str]]:
    """``{case: {rate: check}}`` (:func:`rate_check`)."""
    return {case: {str(r): rate_check(summary[arm][case][str(r)], ref) for r in rates}
            for case in cases}  # fmt: skip


def _flat(checks: dict[str, dict[str, str]]) -> str:
    """The statement's verdict over every case and rate
    (:func:`experiments.harness.stats.tolerance_verdict`)."""
    return stats.tolerance_verdict([c for per_rate in checks.values() for c in per_rate.values()])


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


def _evidence(pairs: int) -> dict[str, Any]:
    return {
        "coverage": 1.0,  # no protocol in the seed; exact expectations, MC error in the CIs
        "data": "real",  # nothing substituted: the seed names no data
        "power": None,  # the headline verdicts are tolerance checks, not paired tests
        "delta": TOL,
        "pairs": pairs,
    }
