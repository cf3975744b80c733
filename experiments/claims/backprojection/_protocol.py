"""The protocol of :mod:`experiments.claims.backprojection`: presets, decision spec, paper
constants and the helpers they need."""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

import dropjax
from experiments.harness.models import DropDense

NAME = "backprojection"


SOURCE = (
    "Bouthillier, Konda, Vincent & Memisevic, Dropout as data augmentation (2015), "
    "Sec. 3.1, 5.1, 5.2 and Figures 2, 4, 5 (seed 002)"
)


CLAIM_TEXT = (
    "a deterministic network trained on inputs x and their back-projected dropout samples "
    "x(i)* has a lower test error than a plain network (as dropout has), with no significant "
    "loss against dropout"
)


PAPER_QUOTES = [
    "Results suggest that Dropout can be replicated by projecting the noise back into the "
    "input and training a neural network deterministically on this generated data. There "
    "is not significant drop in accuracy, it is even slightly better than Dropout in the "
    "case of CIFAR-10. (Sec. 5.2)",
    "Figure 4's error percentages are shown only as plots; no values are in the text.",
]


ARMS = ("plain", "dropout", "backproject")


DELTA = 0.5  # test-error points; our choice (the paper gives no numbers)


PAPER_EXAMPLES = 501 * 50_000 + 150 * 60_000  # 501 epochs on 50k, then 150 on 60k


NOISES = {"standard": "dropout", "random_rate": "random dropout"}


@dataclasses.dataclass(frozen=True)
class Preset:
    """Data, architecture, noise, back-projection budgets, replicas and protocol.

    ``train_gn`` holds the Gauss-Newton steps per hidden layer for the training arm's
    :math:`x^{(i)*}` (damping ``damping``); ``viz_gn`` those of the measured matching and
    the figures (damping ``viz_damping``: more steps, each more damped, which is what gets
    the second layer below 0.3 on the dropout network; with 1e-2 it stalls near 0.30).
    """

    dataset: str
    train_size: int | None  # the first train_size training images (None: all)
    hidden: tuple[int, ...]
    rate: float  # hidden dropout rate (dropout arm and the backproject arm's noise)
    random_max: float  # random dropout range [0, random_max] (Figure 5)
    train_gn: tuple[int, ...]
    train_cg: int
    viz_gn: int
    viz_cg: int
    viz_inputs: int
    viz_samples: int
    replicas: int
    epochs: int
    batch_size: int
    learning_rate: float
    momentum: float = 0.9
    damping: float = 1e-2
    viz_damping: float = 0.1
    scaled: bool = False  # a declared scaled protocol (see SCALED_REASON), decided at it


_QUICK = Preset(
    dataset="mnist",
    train_size=2000,
    hidden=(512, 256),
    rate=0.5,
    random_max=0.8,
    train_gn=(3, 10),
    train_cg=10,
    viz_gn=100,
    viz_cg=10,
    viz_inputs=4,
    viz_samples=6,
    replicas=4,
    epochs=40,
    batch_size=100,
    learning_rate=0.05,
)
"""The quick preset, and the base of the scaled one."""


PRESETS = {
    "smoke": Preset(
        dataset="digits",
        train_size=None,
        hidden=(32, 16),
        rate=0.5,
        random_max=0.8,
        train_gn=(2, 2),
        train_cg=3,
        viz_gn=4,
        viz_cg=5,
        viz_inputs=2,
        viz_samples=3,
        replicas=2,
        epochs=1,
        batch_size=64,
        learning_rate=0.05,
    ),
    "quick": _QUICK,
    # Declared on 2026-12-07, before any of its runs (see SCALED_REASON and spec_for): the
    # quick preset's network, arms and back-projection budget, on more images, to convergence.
    "scaled": dataclasses.replace(_QUICK, train_size=5000, epochs=100, scaled=True),
    "paper": Preset(
        dataset="mnist",
        train_size=None,
        hidden=(1500, 1500),
        rate=0.5,
        random_max=0.8,
        train_gn=(3, 10),
        train_cg=10,
        viz_gn=100,
        viz_cg=10,
        viz_inputs=4,
        viz_samples=8,
        replicas=3,
        epochs=501,
        batch_size=100,
        learning_rate=0.05,
    ),
}


SCALED_REASON = (
    "the paper's protocol (1500-1500 MLP, 501 + 150 epochs on 50k-60k images, x* regenerated "
    "every epoch) is about 45 core-hours here. The scaled protocol asks the same question "
    "(does a deterministic network trained on x and its back-projected dropout samples x* "
    "beat the plain network, without a significant drop against dropout?) where it trains to "
    "convergence: a 512-256 ReLU MLP on the first 5,000 MNIST training images (where "
    "dropout's gain over plain is large enough to dissect), 100 epochs of SGD (lr 0.05, "
    "momentum 0.9, batch 100), the same three arms and back-projection budget as the quick "
    "preset (Gauss-Newton matching error below 0.3 at both layers), 4 paired seeds. "
    "Converged means flat: for every arm, the mean test error of the last 2 of its 10 "
    "evaluations within DELTA of the 2 before; otherwise the headline says so and stays "
    "indicative."
)
"""Why the ``scaled`` preset keeps the paper's question, and its convergence criterion;
declared with the preset and ``spec_for`` before any scaled run."""

FLAT_LAST = 2
"""Evaluations per window of the convergence check (the run evaluates about 10 times)."""


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


def backproject_layer(
    params: dict[str, Any],
    x: jax.Array,
    target: jax.Array,
    layer: int,
    steps: int,
    cg_steps: int,
    damping: float,
    bounds: tuple[float, float] | None = None,
) -> dropjax.BackprojectResult:
    """:math:`x^{(i)*}` for hidden layer ``layer`` (0-based): Eq. 8's term for that layer,
    minimised by damped Gauss-Newton from ``x``."""
    return dropjax.backproject(
        lambda z: hidden_activations(params, z, layer + 1)[layer],
        target,
        x,
        steps=steps,
        method="gauss_newton",
        cg_steps=cg_steps,
        damping=damping,
        bounds=bounds,
    )


_fit = jax.jit(backproject_layer, static_argnums=(3, 4, 5, 6))  # bounds traced: one compile


UNBOUNDED = (-jnp.inf, jnp.inf)


UNIT_BOX = (0.0, 1.0)


def split_sizes(batch: int, layers: int) -> tuple[int, int]:
    """``(clean, per_layer)``: half the batch is split evenly over the hidden layers' x(i)*,
    the rest (at least half) stays clean."""
    per_layer = batch // (2 * layers)
    return batch - layers * per_layer, per_layer


class BackprojMLP(nn.Module):
    """A ReLU MLP whose training forward pass is plain, dropout, or on back-projections.

    Attributes:
      hidden: hidden sizes.
      mode: ``plain``, ``dropout`` (hidden dropout at ``rate``) or ``backproject`` (half of
        each training batch replaced by x(i)*, evenly over the layers; see the module doc).
      rate: the hidden dropout rate (*not* the keep rate).
      gn_steps: Gauss-Newton steps per hidden layer for the x(i)*.
      cg_steps: conjugate-gradient iterations per Gauss-Newton step.
      damping: the Gauss-Newton damping.
      num_classes: output size.
    """

    hidden: tuple[int, ...]
    mode: str = "plain"
    rate: float = 0.5
    gn_steps: tuple[int, ...] = (2, 6)
    cg_steps: int = 5
    damping: float = 1e-2
    num_classes: int = 10

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Logits; in training with mode ``backproject`` the batch's tail is x(i)*."""
        x = x.reshape(x.shape[0], -1)
        # Named as experiments.harness.models.MLP's parameters (fc{i}/dense, out/dense), so the
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
        if len(self.gn_steps) != n:
            raise ValueError(f"gn_steps needs one entry per hidden layer ({n})")
        clean, per_layer = split_sizes(x.shape[0], n)
        pieces = [forward(x[:clean])]  # binds the parameters; the clean part's logits
        params = {
            f"fc{i}": jax.lax.stop_gradient(layer.variables["params"])
            for i, layer in enumerate(layers)
        }
        keys = jax.random.split(self.make_rng("dropout"), n)
        for i in range(n):
            xs = x[clean + i * per_layer : clean + (i + 1) * per_layer]
            target = noisy_activations(params, xs, i + 1, keys[i], self.rate, "standard")[i]
            res = backproject_layer(
                params, xs, target, i, self.gn_steps[i], self.cg_steps, self.damping
            )
            pieces.append(forward(jax.lax.stop_gradient(res.x)))
        return jnp.concatenate(pieces, axis=0)


EQUIVALENCE = {  # backproject − dropout decided with claimed sign + (a drop)
    "refuted": "no drop as large as δ",
    "reproduced": "a drop",
    "reproduced-smaller": "a drop smaller than δ",
    "contradicted": "better than dropout",
}


NO_DROP = {  # what that comparison says of the paper's "no significant drop" (as a claim)
    "refuted": "reproduced",
    "reproduced-smaller": "reproduced",
    "contradicted": "reproduced",
    "reproduced": "contradicted",
    "inconclusive": "inconclusive",
}


GAIN = {  # backproject − plain decided with claimed sign − (a gain)
    "reproduced": "a gain",
    "refuted": "no gain as large as δ",
    "contradicted": "worse than plain",
}
