"""Bouthillier et al. (2015), Sections 3.1 and 5.1-5.2: dropout noise projected back into
the input space, and a deterministic network trained on the projections (Figures 2, 4, 5).

Back-projection (Eq. 4-8): for a trained network with clean hidden activations
:math:`f^{(i)}` and dropout-noised ones :math:`\\tilde f^{(i)}` (noise at every layer up to
:math:`i`, Eq. 6, with the inverted scaling of Eq. 9/10), find by gradient descent an input
:math:`x^{(i)*}` in the box [0, 1] whose clean activations at layer :math:`i` match the
noisy activations at :math:`x` (one :math:`x^{(i)*}` per hidden layer, as in Eq. 8),
with :func:`dropjax.backproject`.

Two parts:

1. **Visualisation** (Figures 2 and 5). On the trained dropout network (replica 0 of the
   ``dropout`` arm below), for a few test digits, several back-projected samples per hidden
   layer under dropout (rate 0.5, one mask per sample) and under random dropout
   (rho ~ U(0, 0.8) per layer per sample, Eq. 10). The figure has, per digit, one row per
   (noise, layer): the original, then the samples. Reported: the relative matching error
   :math:`\\lVert f^{(i)}(x^*) - \\tilde f^{(i)}(x)\\rVert / \\lVert \\tilde f^{(i)}(x) -
   f^{(i)}(x)\\rVert` (1 = no better than :math:`x` itself, 0 = exact) and relative to
   :math:`\\lVert \\tilde f^{(i)}(x)\\rVert`. The paper's Figures 2/5 use an autoencoder
   with hidden dropout 0.4; here it is the classifier MLP, which the paper also uses for
   its Figure 4.
2. **Training on back-projected samples** (Figure 4, Sec. 5.2). Three arms with the same
   seeds (shared initial parameters and data order; all arms are the same module so the
   parameters are identical at initialisation):

   * ``plain``: the MLP without noise;
   * ``dropout``: hidden dropout at rate 0.5 (inverted);
   * ``backproject``: a deterministic network; in each step half the batch is the clean
     ``x`` and the other half is replaced by its :math:`x^*`, regenerated from the *current*
     parameters (no gradient through them) with fresh dropout masks at both hidden layers
     and a few jit-compiled heavy-ball steps of Eq. 8 with one :math:`x^*` matching both
     layers at once (the paper: "we trained on x and x* solely rather than x, x(1)* and
     x(2)*"). The paper alternates whole epochs of x and x* and regenerates x* once per
     epoch with 20 SGD steps; mixing within the batch is a cheaper stand-in.

The claim (Sec. 5.2): "Dropout can be replicated by projecting the noise back into the input
and training a neural network deterministically on this generated data. There is not
significant drop in accuracy". Figure 4's values are not in the text, so only the
qualitative claim is compared. Verdict: ``not reproduced`` when the paired 95% interval of
test error (backproject − dropout) lies above 0; else ``reproduced`` when backproject is
significantly better than plain (its interval vs plain lies below 0), i.e. it recovers
dropout's gain; else ``inconclusive``.

Presets: ``smoke`` is scikit-learn's 8x8 digits, a 32-16 MLP, a few dozen steps; ``quick``
is MNIST with a 512-256 MLP for only 3 epochs (the paper trains 501 epochs, then 150 more),
4 replicas; ``paper`` a 1500-1500 MLP (one of the paper's four), 501 epochs, 20
back-projection steps per batch.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import dropjax
from experiments import stats
from experiments.models import DropDense
from experiments.recipes import flat_images as load_data
from experiments.registry import RunContext, register, save_figure_atomic
from experiments.train import TrainConfig, train

NAME = "backprojection"
SOURCE = (
    "Bouthillier, Konda, Vincent & Memisevic, Dropout as data augmentation (2015), "
    "Sec. 3.1, 5.1, 5.2 and Figures 2, 4, 5 (seed 002)"
)
CLAIM = (
    "a deterministic network trained on inputs x and their back-projected dropout samples "
    "x* reaches dropout's test error (no significant loss), improving on a plain network"
)
PAPER_QUOTES = [
    "Results suggest that Dropout can be replicated by projecting the noise back into the "
    "input and training a neural network deterministically on this generated data. There "
    "is not significant drop in accuracy, it is even slightly better than Dropout in the "
    "case of CIFAR-10. (Sec. 5.2)",
    "Figure 4's error percentages are shown only as plots; no values are in the text, so "
    "only the qualitative claim is compared.",
]
ARMS = ("plain", "dropout", "backproject")


@dataclasses.dataclass(frozen=True)
class Preset:
    """Data, architecture, noise, back-projection settings, replicas and protocol."""

    dataset: str
    hidden: tuple[int, ...]
    rate: float  # hidden dropout rate (dropout arm and the backproject arm's noise)
    random_max: float  # random dropout range [0, random_max] for the visualisation
    bp_steps: int  # back-projection steps per training batch
    bp_lr: float
    viz_steps: int  # back-projection steps for the visualisation
    viz_inputs: int
    viz_samples: int
    replicas: int
    epochs: int
    batch_size: int
    learning_rate: float
    momentum: float = 0.9


PRESETS = {
    "smoke": Preset("digits", (32, 16), 0.5, 0.8, 3, 0.05, 20, 2, 3, 2, 1, 64, 0.05),
    "quick": Preset("mnist", (512, 256), 0.5, 0.8, 8, 0.05, 150, 3, 6, 4, 3, 100, 0.05),
    "paper": Preset("mnist", (1500, 1500), 0.5, 0.8, 20, 0.05, 300, 4, 8, 3, 501, 100, 0.05),
}
BP_MOMENTUM = 0.9


def hidden_activations(params: dict[str, Any], x: jax.Array, n: int) -> list[jax.Array]:
    """The clean network's hidden activations ``[f1(x), ..., fn(x)]`` (ReLU outputs)."""
    acts, h = [], x
    for i in range(n):
        p = params[f"fc{i}"]["dense"]
        h = jax.nn.relu(h @ p["kernel"] + p["bias"])
        acts.append(h)
    return acts


def noisy_activations(
    params: dict[str, Any], x: jax.Array, n: int, key: jax.Array, rate: float, kind: str
) -> list[jax.Array]:
    """Eq. 6: dropout-noised activations, the noise of every layer up to ``i`` included.

    ``kind`` ``standard`` is inverted dropout at ``rate`` (Eq. 9); ``random_rate`` is Eq. 10
    with rho ~ U(0, rate), one rho per layer and per example.
    """
    acts, h = [], x
    for i, k in enumerate(jax.random.split(key, n)):
        p = params[f"fc{i}"]["dense"]
        h = jax.nn.relu(h @ p["kernel"] + p["bias"])
        if kind == "standard":
            h = dropjax.dropout(k, h, rate)
        else:
            h = dropjax.random_rate_dropout(k, h, rate, per_example=True)
        acts.append(h)
    return acts


class BackprojMLP(nn.Module):
    """A ReLU MLP whose training forward pass is plain, dropout, or on back-projections.

    Attributes:
      hidden: hidden sizes.
      mode: ``plain``, ``dropout`` (hidden dropout at ``rate``) or ``backproject`` (half of
        each training batch replaced by its x*, see the module doc).
      rate: the hidden dropout rate.
      bp_steps: back-projection steps per batch.
      bp_lr: back-projection step size.
      num_classes: output size.
    """

    hidden: tuple[int, ...]
    mode: str = "plain"
    rate: float = 0.5
    bp_steps: int = 8
    bp_lr: float = 0.02
    num_classes: int = 10

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Logits; in training with mode ``backproject`` the second half of the batch is x*."""
        x = x.reshape(x.shape[0], -1)
        # Named as experiments.models.MLP's parameters (fc{i}/dense, out/dense), so the
        # initial parameters equal the MLP's for the same seed.
        layers = [DropDense(w, name=f"fc{i}") for i, w in enumerate(self.hidden)]
        out = DropDense(self.num_classes, name="out")
        n = len(self.hidden)

        def forward(z, key=None):
            keys = [None] * n if key is None else list(jax.random.split(key, n))
            for layer, k in zip(layers, keys, strict=True):
                z = jax.nn.relu(layer(z, False))
                if k is not None:
                    z = dropjax.dropout(k, z, self.rate)
            return out(z, False)

        if not train or self.mode == "plain":
            return forward(x)
        if self.mode == "dropout":
            return forward(x, self.make_rng("dropout"))
        if self.mode != "backproject":
            raise ValueError(f"unknown mode {self.mode!r}")
        logits = forward(x)  # binds the parameters; also the clean half's logits
        params = {
            f"fc{i}": jax.lax.stop_gradient(layer.variables["params"])
            for i, layer in enumerate(layers)
        }
        half = x.shape[0] // 2
        xs = x[half:]
        targets = noisy_activations(params, xs, n, self.make_rng("dropout"), self.rate, "standard")
        res = dropjax.backproject(
            lambda z: hidden_activations(params, z, n),
            targets,
            xs,
            steps=self.bp_steps,
            learning_rate=self.bp_lr,
            momentum=BP_MOMENTUM,
            bounds=(0.0, 1.0),
        )
        x_star = jax.lax.stop_gradient(res.x)
        return jnp.concatenate([logits[:half], forward(x_star)], axis=0)


def _relative_errors(params, x, targets, x_star, layer: int, n: int) -> dict[str, float]:
    clean = hidden_activations(params, x, n)[layer]
    matched = hidden_activations(params, x_star, n)[layer]
    residual = jnp.linalg.norm(matched - targets)
    noise = jnp.linalg.norm(targets - clean)
    size = jnp.linalg.norm(targets)
    return {
        "rel_to_noise": float(residual / jnp.maximum(noise, 1e-12)),
        "rel_to_target": float(residual / jnp.maximum(size, 1e-12)),
        "x_displacement": float(jnp.mean(jnp.linalg.norm(x_star - x, axis=-1))),
    }


def visualise(params, x: np.ndarray, preset: Preset, key: jax.Array) -> dict[str, Any]:
    """x(i)* per hidden layer for ``viz_samples`` noise draws of each input, both noises."""
    n = len(preset.hidden)
    reps = preset.viz_samples
    xr = jnp.repeat(jnp.asarray(x), reps, axis=0)  # (inputs * samples, d)
    out: dict[str, Any] = {"samples": {}, "errors": {}, "losses": {}}
    for kind, rate in (("standard", preset.rate), ("random_rate", preset.random_max)):
        kkey = jax.random.fold_in(key, 0 if kind == "standard" else 1)
        targets = noisy_activations(params, xr, n, kkey, rate, kind)
        for layer in range(n):
            fn = jax.jit(
                lambda z, t, layer=layer: dropjax.backproject(
                    lambda u: hidden_activations(params, u, n)[layer],
                    t,
                    z,
                    steps=preset.viz_steps,
                    learning_rate=preset.bp_lr,
                    momentum=BP_MOMENTUM,
                    bounds=(0.0, 1.0),
                )
            )
            res = fn(xr, targets[layer])
            name = f"{kind} layer {layer + 1}"
            out["samples"][name] = np.asarray(res.x).reshape(len(x), reps, -1)
            out["errors"][name] = _relative_errors(params, xr, targets[layer], res.x, layer, n)
            out["losses"][name] = [float(res.losses[0]), float(res.losses[-1])]
    return out


def training_matching(params, x: np.ndarray, preset: Preset, key: jax.Array) -> dict[str, Any]:
    """The joint (one x* for all layers) matching error that training's x* reach, per layer.

    Measured on the final ``backproject`` network (replica 0) with the training settings
    (``bp_steps`` steps, ``bp_lr``, fresh dropout masks at both layers).
    """
    n = len(preset.hidden)
    x = jnp.asarray(x)
    targets = noisy_activations(params, x, n, key, preset.rate, "standard")
    res = jax.jit(
        lambda z, t: dropjax.backproject(
            lambda u: hidden_activations(params, u, n),
            t,
            z,
            steps=preset.bp_steps,
            learning_rate=preset.bp_lr,
            momentum=BP_MOMENTUM,
            bounds=(0.0, 1.0),
        )
    )(x, targets)
    return {
        f"layer {i + 1}": _relative_errors(params, x, targets[i], res.x, i, n) for i in range(n)
    }


def _plot_samples(x: np.ndarray, viz: dict[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    side = int(round(np.sqrt(x.shape[-1])))
    names = list(viz["samples"])
    reps = viz["samples"][names[0]].shape[1]
    rows = len(x) * len(names)
    fig, axes = plt.subplots(rows, reps + 1, figsize=(1.0 * (reps + 1) + 1.6, 1.0 * rows))
    axes = np.atleast_2d(axes)
    for i in range(len(x)):
        for j, name in enumerate(names):
            r = i * len(names) + j
            axes[r, 0].imshow(x[i].reshape(side, side), cmap="gray", vmin=0, vmax=1)
            for s in range(reps):
                img = viz["samples"][name][i, s].reshape(side, side)
                axes[r, s + 1].imshow(img, cmap="gray", vmin=0, vmax=1)
            axes[r, 0].set_ylabel(
                name.replace("random_rate", "random")
                .replace("standard", "dropout")
                .replace(" layer", "\nh"),
                fontsize=7,
                rotation=0,
                ha="right",
                va="center",
            )
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_title("x", fontsize=8)
    for s in range(reps):
        axes[0, s + 1].set_title(f"x* #{s + 1}", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=100)


def _plot_errors(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.3))
    for arm in ARMS:
        curves = results["arms"][arm]["curves"]
        steps = [c["step"] for c in curves]
        err = 100 * (1 - np.array([c["test_acc"] for c in curves]))
        axes[0].plot(steps, err.mean(1), marker="o", label=arm)
    axes[0].set_xlabel("iteration")
    axes[0].set_ylabel("test error (%)")
    axes[0].legend(fontsize="small")
    axes[0].grid(alpha=0.3)
    s = results["summary"]
    axes[1].bar(
        list(ARMS),
        [s[a]["mean"] for a in ARMS],
        yerr=[s[a]["std"] for a in ARMS],
        capsize=4,
        color=["tab:blue", "tab:orange", "tab:green"],
    )
    axes[1].set_ylabel("final test error (%)")
    axes[1].grid(alpha=0.3, axis="y")
    fig.suptitle(
        f"Figure 4 test on {results['data']['name']}: mean ± std over "
        f"{len(results['seeds'])} replicas",
        fontsize="medium",
    )
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=100)


def _fmt_diff(d: dict[str, float]) -> str:
    if not np.isfinite(d["ci_low"]):
        return f"{d['mean']:+.2f} [n/a]"
    return f"{d['mean']:+.2f} [{d['ci_low']:+.2f}, {d['ci_high']:+.2f}]"


def render(results: dict[str, Any]) -> str:
    """Markdown: matching errors, per-arm test error, paired differences, verdict."""
    cfg = results["config"]
    rows = [
        "| noise, layer | rel. error vs noise | rel. error vs target | ‖x* − x‖ |",
        "|---|---|---|---|",
    ]
    for name, e in results["backprojection"]["errors"].items():
        rows.append(
            f"| {name} | {e['rel_to_noise']:.3f} | {e['rel_to_target']:.3f} "
            f"| {e['x_displacement']:.2f} |"
        )
    arms = ["| arm | test error % (mean ± std) |", "|---|---|"]
    for arm in ARMS:
        s = results["summary"][arm]
        arms.append(f"| {arm} | {s['mean']:.2f} ± {s['std']:.2f} |")
    comp = ["| comparison | Δ test error, pp [95% CI] |", "|---|---|"]
    for label, d in results["comparisons"].items():
        comp.append(f"| {label} | {_fmt_diff(d)} |")
    lines = [
        f"**Back-projection, MLP {'-'.join(map(str, cfg['hidden']))} on "
        f"{results['data']['name']}** ({results['data']['source']}): {cfg['epochs']} epochs "
        f"(paper: 501), hidden dropout {cfg['rate']:g}, {cfg['bp_steps']} back-projection "
        f"steps per batch (lr {cfg['bp_lr']:g}); {len(results['seeds'])} paired replicas.",
        "",
        f"Activation matching (x(i)* per layer, {cfg['viz_steps']} steps, "
        f"{cfg['viz_inputs']} inputs × {cfg['viz_samples']} noise draws):",
        "",
        *rows,
        "",
        "Joint x* as used in training (one x* for both layers, "
        f"{cfg['bp_steps']} steps, final backproject network): "
        + ", ".join(
            f"{k} rel. error vs noise {v['rel_to_noise']:.3f}"
            for k, v in results["backprojection"]["training_matching"].items()
        )
        + ".",
        "",
        *arms,
        "",
        *comp,
        "",
        f'Verdict: **{results["verdict"]}**. Paper: "{PAPER_QUOTES[0]}" ({PAPER_QUOTES[1]})',
    ]
    return "\n".join(lines)


@register(NAME, "Dropout noise back-projected to the input (Bouthillier et al. Fig. 2/4/5)", render)
def run(ctx: RunContext) -> dict[str, Any]:
    """Trains plain, dropout and back-projection arms; visualises x* on the dropout net."""
    preset = PRESETS[ctx.preset]
    data = load_data(ctx.dataset or preset.dataset)
    replicas = ctx.replicas or preset.replicas
    seeds = [ctx.seed + r for r in range(replicas)]
    spe = data.num_train // preset.batch_size
    cfg = TrainConfig(
        iterations=preset.epochs * spe,
        batch_size=preset.batch_size,
        learning_rate=preset.learning_rate,
        momentum=preset.momentum,
        eval_every=spe,
        eval_batch_size=2000,
    )
    arms: dict[str, Any] = {}
    states: dict[str, Any] = {}
    for arm in ARMS:
        model = BackprojMLP(
            preset.hidden, arm, preset.rate, preset.bp_steps, preset.bp_lr, num_classes=10
        )
        result = train(model, data, cfg, seeds, quiet=ctx.quiet or None, desc=arm)
        arms[arm] = result.to_json()
        states[arm] = result.state
    errors = {a: [100 * (1 - v) for v in arms[a]["final"]["test_acc"]] for a in ARMS}
    summary = {a: stats.mean_std(errors[a]) for a in ARMS}
    comparisons = {
        "backproject − dropout": stats.paired_difference(errors["dropout"], errors["backproject"]),
        "backproject − plain": stats.paired_difference(errors["plain"], errors["backproject"]),
        "dropout − plain": stats.paired_difference(errors["plain"], errors["dropout"]),
    }
    vs_dropout = comparisons["backproject − dropout"]
    vs_plain = comparisons["backproject − plain"]
    if np.isfinite(vs_dropout["ci_low"]) and vs_dropout["ci_low"] > 0:
        verdict = "not reproduced"
    elif stats.verdict(vs_plain, -1) == "reproduced":
        verdict = "reproduced"
    else:
        verdict = "inconclusive"

    params = jax.tree.map(lambda a: a[0], states["dropout"].params)
    x_viz = data.x_test[: preset.viz_inputs]
    viz = visualise(params, x_viz, preset, jax.random.key(ctx.seed + 12345))
    bp_params = jax.tree.map(lambda a: a[0], states["backproject"].params)
    in_training = training_matching(bp_params, data.x_train[:100], preset, jax.random.key(7))
    results = {
        "source": SOURCE,
        "claim": CLAIM,
        "config": {
            "model": "ReLU MLP, hidden dropout only (input noise is already in input space)",
            "hidden": list(preset.hidden),
            "rate": preset.rate,
            "random_max": preset.random_max,
            "bp_steps": preset.bp_steps,
            "bp_lr": preset.bp_lr,
            "bp_momentum": BP_MOMENTUM,
            "bounds": [0.0, 1.0],
            "viz_steps": preset.viz_steps,
            "viz_inputs": preset.viz_inputs,
            "viz_samples": preset.viz_samples,
            "epochs": preset.epochs,
            "replicas": replicas,
            "train": dataclasses.asdict(cfg),
            "metric": "test error (%) after the last epoch",
            "visualised_network": "replica 0 of the dropout arm",
        },
        "data": data.describe(),
        "seeds": seeds,
        "paper": {
            "quotes": PAPER_QUOTES,
            "protocol": "MLPs 2500-2500, 2500-1250, 1500-1500, 1500-750; 501 epochs + 150; "
            "x* regenerated every epoch with 20 SGD steps (lr 300 layer 1, 30 layer 2); "
            "training alternates an epoch of x and an epoch of x*",
        },
        "backprojection": {
            "errors": viz["errors"],
            "losses": viz["losses"],
            "training_matching": in_training,
        },
        "summary": summary,
        "comparisons": comparisons,
        "verdict": verdict,
        "arms": arms,
    }
    figure = ctx.out_dir / f"{ctx.preset}.png"
    errors_figure = ctx.out_dir / f"{ctx.preset}_errors.png"
    if jax.process_index() == 0:
        _plot_samples(
            x_viz,
            viz,
            figure,
            f"Back-projected samples x(i)*, one per hidden layer i:\ndropout "
            f"p={preset.rate:g}, random dropout rho~U(0,{preset.random_max:g})",
        )
        _plot_errors(results, errors_figure)
    results["figure"] = figure.name
    results["figures"] = [figure.name, errors_figure.name]
    return results
