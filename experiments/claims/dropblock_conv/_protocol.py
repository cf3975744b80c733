"""Claim 12's protocol: the claim, the arms, the model and the presets."""

from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar

import flax.linen as nn
import jax

import dropjax
from experiments.harness.models import NO_DROPOUT, DropConv, max_pool_2x2
from experiments.harness.train import TrainConfig, step_sgd

NAME = "dropblock_conv"
ARMS = ("none", "standard", "dropblock")
NOISY = ("standard", "dropblock")
DELTA = 0.01  # minimal meaningful test-accuracy gain of DropBlock over dropout (our choice)
SOURCE = "explainer seed 000_181800e08f4700ac (Applications: structured dropout, DropBlock)"
QUOTE = (
    "Dropping individual pixels is like adding salt-and-pepper noise; the network can easily "
    "learn to ignore it by looking at neighboring pixels. A more effective strategy is to drop "
    "entire contiguous blocks of the image, a technique called DropBlock. [...] The simple "
    "idea of making the dropout mask itself structured leads to a much stronger regularizer."
)
CLAIM_TEXT = (
    "on a conv net that over-fits, DropBlock on the feature maps (same expected drop fraction "
    "and rate schedule as standard dropout) gives a higher test accuracy than standard "
    f"dropout, by at least {DELTA:g}"
)
# (name, arm, baseline): the decided comparisons, arm − baseline; the first is the claim.
COMPARISONS = (
    ("dropblock_vs_standard", "dropblock", "standard"),
    ("dropblock_vs_none", "dropblock", "none"),
    ("standard_vs_none", "standard", "none"),
)


class MapNoiseConvNet(nn.Module):
    """Two 3x3 conv layers with scheduled noise on their (pooled) feature maps.

    The harness calls it in training with the step count (``takes_step``); the drop rate of
    that step is ``linear_rate(0, rate, ramp_steps)(step)`` on both maps.

    Attributes:
      kind: ``none``, ``standard`` (:func:`dropjax.dropout`) or ``dropblock``
        (:func:`dropjax.dropblock`, one block mask per example and channel).
      rate: the target drop probability (*not* the keep rate!); for ``dropblock`` the
        expected dropped fraction.
      ramp_steps: steps over which the rate rises linearly from 0 to ``rate``.
      block_size: the DropBlock block side.
      widths: channels of ``conv1`` and ``conv2``.
      hidden: units of the hidden dense layer.
      num_classes: output size.
    """

    takes_step: ClassVar[bool] = True  # experiments.harness.train passes the step in training

    kind: str = "none"
    rate: float = 0.0
    ramp_steps: int = 1
    block_size: int = 3
    widths: tuple[int, int] = (16, 32)
    hidden: int = 64
    num_classes: int = 10

    def _noise(self, x: jax.Array, rate: jax.Array | None) -> jax.Array:
        if rate is None:
            return x
        key = self.make_rng("dropout")
        if self.kind == "standard":
            return dropjax.dropout(key, x, rate)
        return dropjax.dropblock(key, x, rate, block_size=self.block_size)

    @nn.compact
    def __call__(
        self, x: jax.Array, train: bool = False, step: jax.Array | None = None
    ) -> jax.Array:
        """Logits for NHWC images of 28x28; ``step`` (the step count) is needed in training.

        Raises:
          ValueError: an unknown kind, or a noisy model trained without ``step``.
        """
        if self.kind not in ARMS:
            raise ValueError(f"unknown kind {self.kind!r}; use one of {ARMS}")
        rate = None
        if train and self.kind != "none" and self.rate > 0:
            if step is None:
                raise ValueError(
                    "MapNoiseConvNet needs the step count in training to schedule its rate: "
                    "call it as model.apply(v, x, train=True, step=t, rngs=...)"
                )
            rate = dropjax.linear_rate(0.0, self.rate, self.ramp_steps)(step)
        conv = functools.partial(DropConv, kernel_size=(3, 3), cfg=NO_DROPOUT, padding="SAME")
        x = max_pool_2x2(nn.relu(conv(self.widths[0], name="conv1")(x, False)))
        x = self._noise(x, rate)
        x = max_pool_2x2(nn.relu(conv(self.widths[1], name="conv2")(x, False)))
        x = self._noise(x, rate)
        x = nn.relu(nn.Dense(self.hidden, name="fc1")(x.reshape(x.shape[0], -1)))
        return nn.Dense(self.num_classes, name="fc2")(x)


@dataclasses.dataclass(frozen=True)
class Preset:
    """One preset: data, training-subset size, network, rates, schedule, replicas, protocol.

    ``ramp`` is the fraction of the iterations over which the rate rises from 0 (1: the
    whole run, as Ghiasi et al.).
    """

    dataset: str
    train_size: int
    widths: tuple[int, int]
    hidden: int
    rates: tuple[float, ...]
    block_size: int
    replicas: int
    train: TrainConfig
    ramp: float = 1.0

    @property
    def ramp_steps(self) -> int:
        """Steps of the linear ramp of the drop rate (at least 1)."""
        return max(1, round(self.ramp * self.train.iterations))


_protocol = functools.partial(step_sgd, learning_rate=0.05, weight_decay=5e-4)

PRESETS = {
    "smoke": Preset(
        "digits",
        100,
        (4, 8),
        16,
        (0.2,),
        3,
        3,
        _protocol(12, 9, batch_size=16, eval_every=12, eval_batch_size=120),
    ),
    "quick": Preset(
        "fashion_mnist",
        1000,
        (16, 32),
        64,
        (0.2, 0.4),
        3,
        8,
        _protocol(1000, 750, batch_size=40, eval_every=250),
    ),
    "paper": Preset(
        "fashion_mnist",
        2000,
        (32, 64),
        128,
        (0.1, 0.2, 0.3, 0.4),
        3,
        10,
        _protocol(4000, 3000, batch_size=40, eval_every=500),
    ),
}
REFERENCE_ITERATIONS = PRESETS["paper"].train.iterations
