r"""``linear_l2``: inverted input dropout on linear least squares is ridge regression.

Claim (seed 000, "Regularization in Disguise"): "for a linear model trained on standardized
data, applying input dropout is mathematically equivalent to performing L2 regularization",
with :math:`L_\text{drop}(w) = L(w) + \lambda(p)\|w\|_2^2` and :math:`\lambda(p) = p/(1-p)`.

Derivation (inverted dropout, rate :math:`p`, keep :math:`q = 1 - p`). Each input entry is
multiplied by :math:`d_{ij} = m_{ij}/q` with :math:`m_{ij} \sim \mathrm{Bernoulli}(q)`
independent, so :math:`\mathbb{E}[d_{ij}] = 1` and :math:`\mathrm{Var}[d_{ij}] = p/q`. With
:math:`\tilde X = X \odot D`, the prediction :math:`(\tilde X w)_i = \sum_j x_{ij} d_{ij} w_j`
has mean :math:`(Xw)_i` and variance :math:`(p/q)\sum_j x_{ij}^2 w_j^2`; the cross terms vanish
because different entries are independent. Hence, for the *sum-form* loss,

.. math::

    \mathbb{E}_D\,\|y - \tilde X w\|^2 = \|y - Xw\|^2
        + \frac{p}{q} \sum_j w_j^2 \sum_i x_{ij}^2
    = \|y - Xw\|^2 + \frac{p}{q}\, w^\top \operatorname{diag}(X^\top X)\, w,

a ridge penalty with one coefficient per feature, minimised by
:math:`w^\star = (X^\top X + \tfrac{p}{q}\operatorname{diag}(X^\top X))^{-1} X^\top y`. The
same expectation holds when one mask per feature is shared by all rows. On standardised
columns (centred, :math:`\tfrac1n\sum_i x_{ij}^2 = 1`, so :math:`\sum_i x_{ij}^2 = n`) the
penalty is the same for every feature:

* sum form :math:`\|y - Xw\|^2 + \lambda\|w\|^2` (scikit-learn's ``Ridge(alpha=...)``):
  :math:`\lambda = n\,p/(1-p)`;
* mean form :math:`\tfrac1n\|y - Xw\|^2 + \lambda\|w\|^2`: :math:`\lambda = p/(1-p)`, the
  seed's formula, which therefore holds in the mean form only.

On unstandardised columns the penalty on :math:`w_j` is :math:`\tfrac{p}{q}` times the
column's mean square (its variance when centred): the "group L2, proportional to the feature
variance" of the seed's applications section, and not a scalar ridge. With non-inverted
dropout (no :math:`1/q` during training, test weights :math:`v = qw`) the same algebra gives
the same penalty :math:`\tfrac{p}{q} v^\top \operatorname{diag}(X^\top X) v` on the test-time
weights.

What the experiment measures, for each rate and seed (synthetic correlated Gaussian design):

1. the closed-form marginalised solution against scikit-learn ``Ridge(alpha=n p/q)``;
2. a Monte Carlo estimate of the dropout loss at fixed weights (many ``dropjax.dropout``
   masks) against the closed-form expected loss (relative deviation with its interval);
3. weights trained by gradient descent on the dropout loss itself (fresh ``dropjax.dropout``
   masks every step, Polyak averaging), the ridge strength :math:`\hat\lambda` whose ridge
   solution is closest to them, and the ratio :math:`\hat\lambda/\lambda(p)`;
4. the contrast on unstandardised columns: marginalised solution against a scalar ridge with
   :math:`\lambda = p/(1-p)` (they differ; the claim needs standardisation).

How it is decided (:mod:`experiments.harness.stats`): per rate, three identity checks, each a 95 %
interval over the seeds' designs against a stated tolerance (``TOLERANCES``): 3. (the claim)
:math:`\hat\lambda/\lambda(p) - 1` within ±5 %, 1. within float64 rounding, 2. within 1 %.
Every check within: *reproduced*; a check outside: *refuted*; else *inconclusive*. The run is
the claim's whole computation, so its coverage is 1.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
import scipy.stats
from sklearn.linear_model import Ridge

import dropjax
from experiments.harness import plots, stats
from experiments.harness.claim import Claim, one_shot
from experiments.harness.results import RunContext

NAME = "linear_l2"
CLAIM_TEXT = (
    '"for a linear model trained on standardized data, applying input dropout is '
    'mathematically equivalent to performing L2 regularization" with '
    '"lambda(p) = p/(1-p)"'
)
SOURCE = "seed 000 (explainer 'Inverted Dropout'), section 'Regularization in Disguise'"
DERIVATION = (
    "E_mask ||y - X(m/q * .)w||^2 = ||y - Xw||^2 + (p/q) sum_j w_j^2 sum_i x_ij^2 "
    "(q = 1-p): ridge with per-feature penalty (p/q) diag(X^T X). Standardised "
    "columns (sum_i x_ij^2 = n): sum form lambda = n p/(1-p) (sklearn alpha), mean "
    "form (1/n)||y - Xw||^2 + lambda ||w||^2 with lambda = p/(1-p), the seed's formula."
)


@dataclasses.dataclass(frozen=True)
class Preset:
    """The designs, rates and Monte Carlo budgets of one preset.

    Attributes:
      n: rows of each design.
      d: features.
      rates: dropout rates p.
      seeds: designs, one per seed.
      steps: gradient-descent steps on the dropout loss.
      masks_per_step: masks averaged in each step.
      mc_masks: masks of the Monte Carlo check of the expected loss.
    """

    n: int
    d: int
    rates: tuple[float, ...]
    seeds: int
    steps: int
    masks_per_step: int
    mc_masks: int


ALL_RATES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
PRESETS = {
    "smoke": Preset(64, 5, (0.1, 0.4, 0.7), seeds=3, steps=600, masks_per_step=16, mc_masks=4000),
    "quick": Preset(200, 10, ALL_RATES, seeds=6, steps=4000, masks_per_step=32, mc_masks=40_000),
    "paper": Preset(
        500, 20, ALL_RATES, seeds=20, steps=20_000, masks_per_step=64, mc_masks=200_000
    ),
}
RATIO_MARGIN = 0.05
"""Tolerance of the claim's check, lambda_hat / lambda(p) - 1 within +-5 %: it separates
lambda = p/(1-p) from the nearest wrong reading, lambda = p (ratio 1 - p <= 0.9 at the tested
rates), and from the sum form n p/(1-p) by orders of magnitude."""
SKLEARN_TOL = 1e-8
"""Closed form vs scikit-learn's ``Ridge(alpha=n p/q)``: two float64 solves of the same system
agree to rounding (about 1e-15); 1e-8 leaves room for ill-conditioned designs."""
MC_TOL = 0.01
"""Monte Carlo mean of the dropout loss vs the closed-form expectation, relative: its standard
error is about 0.03 % at the quick preset's 40,000 masks (0.1 % at smoke's 4,000), so a 1 %
deviation would be a wrong expectation, not noise."""
TOLERANCES = {"lambda_ratio": RATIO_MARGIN, "sklearn": SKLEARN_TOL, "mc_loss": MC_TOL}
Z_REPORT = 4.5  # the |z| line drawn in the figure (descriptive; the check uses MC_TOL)
MC_POINTS = ("at_solution", "at_random_w")
CI_KEYS = ("mean", "ci_low", "ci_high")


# --------------------------------------------------------------------------- closed forms
def marginalized_loss(x: np.ndarray, y: np.ndarray, w: np.ndarray, rate: float) -> float:
    r"""Sum-form expected loss :math:`\|y - Xw\|^2 + \tfrac{p}{q}\sum_j w_j^2\sum_i x_{ij}^2`."""
    r = y - x @ w
    return float(r @ r + rate / (1.0 - rate) * np.sum(w**2 * np.sum(x**2, axis=0)))


def marginalized_solution(x: np.ndarray, y: np.ndarray, rate: float) -> np.ndarray:
    r"""Minimiser :math:`(X^\top X + \tfrac{p}{q}\operatorname{diag}(X^\top X))^{-1}X^\top y`."""
    gram = x.T @ x
    return np.linalg.solve(gram + rate / (1.0 - rate) * np.diag(np.diag(gram)), x.T @ y)


def sklearn_alpha(n: int, rate: float) -> float:
    """scikit-learn's (sum-form) ``alpha`` equal to input dropout on standardised columns."""
    return n * rate / (1.0 - rate)


def ridge_mean_form(x: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    r"""Minimiser of the mean form :math:`\tfrac1n\|y - Xw\|^2 + \lambda\|w\|^2`."""
    n, d = x.shape
    return np.linalg.solve(x.T @ x / n + lam * np.eye(d), x.T @ y / n)


def fit_lambda(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    """The mean-form ridge strength whose solution is closest (L2) to ``w``."""
    n = x.shape[0]
    evals, evecs = np.linalg.eigh(x.T @ x / n)
    b = evecs.T @ (x.T @ y / n)

    def dist(log_lam):
        path = evecs @ (b / (evals + np.exp(log_lam)))
        return float(np.sum((path - w) ** 2))

    res = scipy.optimize.minimize_scalar(dist, bounds=(-14.0, 8.0), method="bounded")
    return float(np.exp(res.x))


def standardize(x: np.ndarray) -> np.ndarray:
    """Centred columns with mean square 1 (``ddof=0``), so that ``sum_i x_ij^2 = n``."""
    x = x - x.mean(axis=0)
    return x / np.sqrt(np.mean(x**2, axis=0))


def make_data(seed: int, n: int, d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Correlated Gaussian design (AR(1) correlation 0.6), y = X w + N(0, 1.5^2).

    Returns standardised X, centred y, and an unstandardised copy of X (column scales
    log-uniform in [e^-1.5, e^1.5]) for the contrast.
    """
    rng = np.random.default_rng(seed)
    idx = np.arange(d)
    chol = np.linalg.cholesky(0.6 ** np.abs(idx[:, None] - idx[None, :]))
    x = standardize(rng.normal(size=(n, d)) @ chol.T)
    w_true = rng.normal(size=d)
    y = x @ w_true + 1.5 * rng.normal(size=n)
    y = y - y.mean()
    scales = np.exp(rng.uniform(-1.5, 1.5, size=d))
    return x, y, x * scales


# ------------------------------------------------------------------------ dropout in JAX
def _losses(key, tiled, y, w, rate):
    """Sum-form losses of inverted-dropout masks on the inputs, one per leading index of
    ``tiled`` [M, n, d] (copies of the design), drawn by a single ``dropjax.dropout`` call."""
    r = y - dropjax.dropout(key, tiled, rate) @ w
    return jnp.sum(r * r, axis=-1)


@jax.jit(static_argnums=(5, 6))
def _mc_losses(key, x, y, ws, rates, num_chunks: int, chunk: int):
    """Dropout losses of ``num_chunks * chunk`` masks for each row of ``ws`` [K, d] and
    ``rates`` [K]; returns [K, num_chunks * chunk]."""

    def one(k, w, rate):
        tiled = jnp.broadcast_to(x, (chunk, *x.shape))

        def body(kc):
            return _losses(kc, tiled, y, w, rate)

        return jax.lax.map(body, jax.random.split(k, num_chunks)).reshape(-1)

    keys = jax.random.split(key, ws.shape[0])
    return jax.vmap(one)(keys, ws, rates)


def mc_loss(key, x, y, ws, rates, num_masks: int, chunk: int = 2000):
    """Monte Carlo mean of the sum-form dropout loss at each fixed ``ws[k]`` with rate
    ``rates[k]``, and its standard error (``num_masks`` rounded up to whole chunks)."""
    chunk = min(chunk, num_masks)
    v = _mc_losses(
        key,
        jnp.asarray(x, jnp.float32),
        jnp.asarray(y, jnp.float32),
        jnp.asarray(ws, jnp.float32),
        jnp.asarray(rates, jnp.float32),
        -(-num_masks // chunk),
        chunk,
    )
    v = np.asarray(v, np.float64)
    return v.mean(axis=1), v.std(axis=1, ddof=1) / np.sqrt(v.shape[1])


def _train_one(key, x, y, rate, lr, steps: int, masks_per_step: int):
    """Full-batch gradient descent on the mean-form dropout loss, fresh masks every step;
    returns the Polyak average of the second half of the iterates."""
    n = x.shape[0]

    tiled = jnp.broadcast_to(x, (masks_per_step, *x.shape))

    def batch_loss(w, k):
        # One mask draw for ``masks_per_step`` independent copies of the design.
        return jnp.mean(_losses(k, tiled, y, w, rate)) / n

    half = steps // 2

    def step(carry, t):
        w, acc = carry
        w = w - lr * jax.grad(batch_loss)(w, jax.random.fold_in(key, t))
        return (w, acc + jnp.where(t >= half, w, jnp.zeros_like(w))), None

    w0 = jnp.zeros((x.shape[1],), jnp.float32)
    (_, acc), _ = jax.lax.scan(step, (w0, jnp.zeros_like(w0)), jnp.arange(steps))
    return acc / (steps - half)


_train_grid = jax.jit(
    jax.vmap(  # over seeds
        jax.vmap(_train_one, in_axes=(0, None, None, 0, 0, None, None)),  # over rates
        in_axes=(0, 0, 0, None, 0, None, None),
    ),
    static_argnums=(5, 6),
)


# ------------------------------------------------------------------------------- measure
def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def train_dropout_gd(preset: Preset, seeds: list[int], data: list[tuple]) -> np.ndarray:
    """Weights trained by gradient descent on the dropout loss, ``[seeds, rates, d]``; the
    step size is 1 / (2 x the largest eigenvalue of the expected mean-form Hessian)."""
    rates, n = preset.rates, preset.n
    lrs = np.array(
        [
            [1.0 / (2.0 * (np.linalg.eigvalsh(x.T @ x / n)[-1] + p / (1 - p))) for p in rates]
            for x, _, _ in data
        ],
        np.float32,
    )
    keys = jnp.stack([jax.random.split(jax.random.key(s), len(rates)) for s in seeds])
    w = _train_grid(
        keys,
        jnp.asarray(np.stack([x for x, _, _ in data]), jnp.float32),
        jnp.asarray(np.stack([y for _, y, _ in data]), jnp.float32),
        jnp.asarray(rates, jnp.float32),
        jnp.asarray(lrs),
        preset.steps,
        preset.masks_per_step,
    )
    return np.asarray(w, np.float64)


def measure_mc(seed: int, x, y, preset: Preset) -> dict[float, dict[str, dict]]:
    """The Monte Carlo dropout loss against the closed form at the marginalised solution and
    at a random point, per rate."""
    rates = preset.rates
    w_ms = [marginalized_solution(x, y, p) for p in rates]
    rng = np.random.default_rng(seed)
    w_fars = [w + rng.normal(size=x.shape[1]) for w in w_ms]
    ws = [w for pair in zip(w_ms, w_fars, strict=True) for w in pair]
    key = jax.random.fold_in(jax.random.key(seed), 1)
    mean, se = mc_loss(key, x, y, np.stack(ws), np.repeat(rates, 2), preset.mc_masks)
    out = {}
    for j, p in enumerate(rates):
        out[p] = {}
        for k, label in enumerate(MC_POINTS):
            m, s = mean[2 * j + k], se[2 * j + k]
            exact = marginalized_loss(x, y, ws[2 * j + k], p)
            out[p][label] = dict(
                mc_mean=m,
                mc_se=s,
                closed_form=exact,
                rel_dev=(m - exact) / exact,
                z=(m - exact) / s,
            )
    return out


def measure_row(x, y, x_raw, w_gd: np.ndarray, p: float, mc: dict) -> dict[str, Any]:
    """Every comparison of one design at one rate."""
    n = x.shape[0]
    w_m = marginalized_solution(x, y, p)
    ridge = Ridge(alpha=sklearn_alpha(n, p), fit_intercept=False, solver="cholesky")
    w_sk = ridge.fit(x, y).coef_
    lam_hat = fit_lambda(x, y, w_gd)
    return dict(
        rate=p,
        lambda_mean_form=p / (1 - p),
        sklearn_alpha=sklearn_alpha(n, p),
        sklearn_max_abs_diff=float(np.max(np.abs(w_m - w_sk))),
        sklearn_rel_err=_rel(w_sk, w_m),
        mean_form_rel_err=_rel(ridge_mean_form(x, y, p / (1 - p)), w_m),
        mc_loss=mc,
        gd_max_abs_diff=float(np.max(np.abs(w_gd - w_m))),
        gd_rel_err=_rel(w_gd, w_m),
        gd_rel_dist_to_ols=_rel(w_gd, np.linalg.lstsq(x, y, rcond=None)[0]),
        marginal_rel_dist_to_ols=_rel(w_m, np.linalg.lstsq(x, y, rcond=None)[0]),
        lambda_hat=lam_hat,
        lambda_ratio=lam_hat / (p / (1 - p)),
        unstandardized_scalar_ridge_rel_err=_rel(
            ridge_mean_form(x_raw, y, p / (1 - p)), marginalized_solution(x_raw, y, p)
        ),
        w_marginalized=w_m,
        w_dropout_gd=w_gd,
    )


def measure(preset: Preset, seeds: list[int]) -> list[dict[str, Any]]:
    """Per seed: a design, dropout-trained weights and every comparison at every rate."""
    data = [make_data(s, preset.n, preset.d) for s in seeds]
    w_gd = train_dropout_gd(preset, seeds, data)
    per_seed = []
    for i, (s, (x, y, x_raw)) in enumerate(zip(seeds, data, strict=True)):
        mc = measure_mc(s, x, y, preset)
        rows = [measure_row(x, y, x_raw, w_gd[i, j], p, mc[p]) for j, p in enumerate(preset.rates)]
        per_seed.append(dict(seed=s, rows=rows))
    return per_seed


# ----------------------------------------------------------------------------- summarise
def summarise(per_seed: list[dict[str, Any]], rates: list[float]) -> list[dict[str, Any]]:
    """Per rate, over seeds: the ridge strength, the weight errors, the MC deviations."""
    summary = []
    for j, p in enumerate(rates):
        col = [ps["rows"][j] for ps in per_seed]
        mc = [r["mc_loss"][k] for r in col for k in MC_POINTS]
        summary.append(
            dict(
                rate=p,
                lambda_claimed=p / (1 - p),
                sklearn_rel_err_max=max(r["sklearn_rel_err"] for r in col),
                sklearn_max_abs_diff_max=max(r["sklearn_max_abs_diff"] for r in col),
                mc_abs_z_max=max(abs(m["z"]) for m in mc),
                mc_rel_dev=stats.mean_ci([m["rel_dev"] for m in mc]),
                gd_rel_err=stats.mean_std([r["gd_rel_err"] for r in col]),
                gd_max_abs_diff_max=max(r["gd_max_abs_diff"] for r in col),
                lambda_hat=stats.mean_std([r["lambda_hat"] for r in col]),
                lambda_ratio=stats.mean_ci([r["lambda_ratio"] for r in col]),
                lambda_ratio_minus_1=stats.mean_ci([r["lambda_ratio"] - 1.0 for r in col]),
                marginal_rel_dist_to_ols=stats.mean_std(
                    [r["marginal_rel_dist_to_ols"] for r in col]
                ),
                unstandardized_scalar_ridge_rel_err=stats.mean_std(
                    [r["unstandardized_scalar_ridge_rel_err"] for r in col]
                ),
            )
        )
    return summary


# -------------------------------------------------------------------------------- decide
def decide(summary: list[dict[str, Any]]) -> dict[str, Any]:
    """Three identity checks per rate (:mod:`experiments.harness.stats`): the dropout-trained
    ridge strength is p/(1-p) (the claim), the closed form is scikit-learn's ridge, and the
    Monte Carlo dropout loss is the closed-form expectation; all must hold."""
    checks: dict[str, list[dict[str, Any]]] = {name: [] for name in TOLERANCES}
    for row in summary:
        ivals = {
            "lambda_ratio": row["lambda_ratio_minus_1"],
            "sklearn": stats.point([row["sklearn_rel_err_max"]]),
            "mc_loss": row["mc_rel_dev"],
        }
        for name, tol in TOLERANCES.items():
            d = stats.decide_tolerance(ivals[name], tol, claim="identity")
            row[f"check_{name}"] = d["check"]
            checks[name].append(d)
        row["verdict"] = stats.combine_tolerance([checks[k][-1] for k in TOLERANCES])["verdict"]
    combined = {name: stats.combine_tolerance(ds) for name, ds in checks.items()}
    head = combined["lambda_ratio"]
    verdict = stats.combine_tolerance([d for ds in checks.values() for d in ds])["verdict"]
    if head["verdict"] != "reproduced":
        verdict = head["verdict"]  # the claim itself decides when it fails or is undecided
    return dict(
        combined=combined,
        verdict=verdict,
        evidence=stats.evidence(head, coverage=1.0, substitute=False, delta=RATIO_MARGIN),
    )


# -------------------------------------------------------------------------------- render
def plot(results: dict[str, Any], path: Path) -> None:
    """(a) fitted ridge strength vs the claim, (b) weight differences, (c) MC check."""
    summary = results["summary"]
    p = np.array([s["rate"] for s in summary])
    fig, axes = plots.figure(1, 3, (13, 4))
    ax1, ax2, ax3 = axes[0]
    grid = np.linspace(0.05, 0.75, 100)
    ax1.plot(grid, grid / (1 - grid), "k-", label=r"claim $\lambda = p/(1-p)$")
    ax1.plot(grid, grid, "k:", label=r"$\lambda = p$ (for contrast)")
    lam = [
        {k: (s["lambda_ratio"][k] or np.nan) * s["lambda_claimed"] for k in CI_KEYS}
        for s in summary
    ]
    plots.ci_errorbar(ax1, p, lam, "o", color="C0", label=r"$\hat\lambda$ (dropout GD), 95% CI")
    ax1.set(xlabel="dropout rate p", ylabel="mean-form ridge strength", title="(a) ridge strength")
    ax1.legend(fontsize=8)
    for key, fmt, label in (
        ("gd_rel_err", "o-", "dropout GD vs marginalised"),
        ("marginal_rel_dist_to_ols", "s--", "marginalised vs OLS (scale)"),
        ("unstandardized_scalar_ridge_rel_err", "^:", "unstandardised: scalar ridge"),
    ):
        m, sd = (np.array([s[key][k] for s in summary]) for k in ("mean", "std"))
        ax2.errorbar(p, m, yerr=sd, fmt=fmt, capsize=3, label=label)
    sk = np.maximum([s["sklearn_rel_err_max"] for s in summary], 1e-17)
    ax2.plot(p, sk, "kx-", label="sklearn Ridge(n p/q) vs closed form")
    ax2.set_yscale("log")
    ax2.set(xlabel="dropout rate p", ylabel="relative L2 weight difference", title="(b) weights")
    ax2.legend(fontsize=7)
    z = [s["mc_abs_z_max"] for s in summary]
    plots.z_panel(ax3, p, z, Z_REPORT, "(c) Monte Carlo expected loss")
    plots.save(fig, path, dpi=120)


def render(results: dict[str, Any]) -> str:
    """The per-rate table and the verdict with its tolerances."""
    lines = [
        "| p | lambda=p/(1-p) | lambda_hat (mean ± std) | ratio 95% CI | GD rel. err | "
        "sklearn rel. err (max) | MC rel. dev. 95% CI | MC max abs z | "
        "unstd. scalar-ridge rel. err | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in results["summary"]:
        r, m = s["lambda_ratio"], s["mc_rel_dev"]
        ci = "n/a" if r["ci_low"] is None else f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
        mci = "n/a" if m["ci_low"] is None else f"[{m['ci_low']:+.1e}, {m['ci_high']:+.1e}]"
        lines.append(
            f"| {s['rate']:.1f} | {s['lambda_claimed']:.3f} | {s['lambda_hat']['mean']:.3f} ± "
            f"{s['lambda_hat']['std']:.3f} | {ci} | {s['gd_rel_err']['mean']:.2e} | "
            f"{s['sklearn_rel_err_max']:.1e} | {mci} | {s['mc_abs_z_max']:.2f} | "
            f"{s['unstandardized_scalar_ridge_rel_err']['mean']:.2f} | {s['verdict']} |"
        )
    ev = results["evidence"]
    power = stats.fmt_power(ev["power"])
    lines.append(
        f"\nIdentity checks, each a 95 % interval against a tolerance: lambda_hat/lambda(p) - 1 "
        f"within ±{RATIO_MARGIN:g} (the claim; a 5 % margin separates p/(1-p) from lambda = p, "
        f"whose ratio is 1 - p <= 0.9 at the tested rates), sklearn rel. err within "
        f"{SKLEARN_TOL:g} (float64 rounding), MC rel. deviation within ±{MC_TOL:g}. Verdict: "
        f"**{results['verdict']}** ({results['source']}); coverage {ev['coverage']:.0%} (the "
        f"seed's whole stated computation), power to confirm the identity at this spread: "
        f"{power} with {ev['pairs']} designs."
    )
    return "\n".join(lines)


# ----------------------------------------------------------------------------------- run
def measure_all(ctx: RunContext) -> dict[str, Any]:
    """Measure every seed and rate, summarise over seeds, decide the identities, plot."""
    preset = PRESETS[ctx.preset]
    seeds = ctx.seeds(preset.seeds)
    start = time.time()
    per_seed = measure(preset, seeds)
    summary = summarise(per_seed, preset.rates)
    results = dict(
        claim=CLAIM_TEXT,
        source=SOURCE,
        derivation=DERIVATION,
        config={**dataclasses.asdict(preset), "seeds": len(seeds), "seed_list": seeds},
        per_seed=per_seed,
        summary=summary,
        tolerances=dict(TOLERANCES),
        **decide(summary),
    )
    results["figure"] = plots.publish(plot, results, ctx.out_dir, ctx.preset, NAME)
    results["time_s"] = round(time.time() - start, 2)
    return results


run = one_shot(PRESETS, measure_all)

CLAIM = Claim(
    NAME,
    "Input dropout on least squares vs ridge with lambda = p/(1-p)",
    PRESETS,
    run,
    render,
)
