"""Flax linen models for the dropout experiments, with the dropout kind as configuration.

Every model takes a :class:`DropoutConfig` and is called as ``model.apply(v, x, train=...)``
(the GCN also takes the edge lists). Switching an experiment from standard to augmented
dropout is a change of ``DropoutConfig.kind``, nothing else:

======================= =====================================================================
kind                    what the layer does (``rate`` is always a probability of *dropping*)
======================= =====================================================================
``none``                identity
``standard``            inverted dropout, :class:`dropjax.linen.Dropout`
``forward``             Gao et al.'s forward dropout (Definition 1), layer-exact: features
                        dropped in the forward pass; in the backward pass neither features
                        nor errors are dropped, so the weight gradient of the layer the
                        dropout feeds uses the *unmasked* input
``backward``            Gao et al.'s backward dropout (Definition 2), layer-exact: nothing
                        dropped in the forward pass; in the backward pass features and
                        errors are dropped at ``rate`` "as the standard dropout", so the
                        weight gradient uses the *backward-masked* input
``augmented``           Gao et al.'s augmented dropout (Eq. 9, Algorithm 1), layer-exact:
                        forward mask at ``rate``, backward mask nested in it with the extra
                        rate ``backward_rate``; the weight gradient uses the backward-masked
                        input
``forward_elementwise`` secondary arm: forward dropout as an elementwise ``custom_vjp``
                        (:class:`dropjax.linen.DecoupledDropout`); the next layer's weight
                        gradient then sees the forward-*masked* input, unlike Definition 1
``backward_elementwise`` secondary arm: elementwise backward dropout; the weight gradient
                        sees the *unmasked* input, unlike Definition 2
``augmented_elementwise`` secondary arm: elementwise augmented dropout (only the error is
                        masked by the backward mask, not the weight gradient's input)
``random_rate``         dropout at a rate drawn from U(0, ``rate``) (``random_rate_dropout``)
``gaussian``            multiplicative Gaussian noise matched to ``rate`` (``gaussian_dropout``)
``alpha``               alpha dropout, for SELU networks (``alpha_dropout``)
``dropblock``           DropBlock on NHWC maps, blocks of ``block_size`` (``dropblock``)
``spatial``             one keep decision per (example, channel) (``spatial_dropout``)
======================= =====================================================================

The three layer-exact kinds fuse the dropout with the layer it feeds
(:func:`dropjax.decoupled_call`), so they exist only where dropout feeds a dense layer
(:class:`DropDense`) or a convolution (:class:`DropConv`); :func:`make_dropout` refuses them.

**Pairing.** A layer that drops the input of a dense or convolutional layer draws its key
once, in :class:`DropDense`/:class:`DropConv`, and the wrapped layer keeps the name ``dense``
or ``conv`` for every kind. So for the same ``params`` seed the initial parameters are the
same for every kind, and for the same ``dropout`` key ``standard``, ``forward``,
``augmented`` and their elementwise forms use the very same forward mask (``backward`` draws
its backward mask from the same bits): paired arms of an experiment differ only in what the
kind changes.

The other variants (``random_rate``, ``gaussian``, ``alpha``, ``dropblock``, ``spatial``)
are their :mod:`dropjax.linen` modules too, so :func:`dropjax.linen.mc_dropout` turns every
kind on at evaluation time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

import dropjax
import dropjax.linen
from experiments.harness.models._dropout import (
    DROPOUT_KINDS,
    LAYER_EXACT_KINDS,
    NO_DROPOUT,
    DropDense,
    DropoutConfig,
    Identity,
    _Conv,
    decoupled_rates,
    make_dropout,
    max_pool_2x2,
)
from experiments.harness.models._layers import (
    DropConv,
    LeNet,
    caffe_pool,
)

__all__ = [
    "DROPOUT_KINDS",
    "LAYER_EXACT_KINDS",
    "GCN",
    "MLP",
    "ConvNetQuick",
    "DropConv",
    "DropDense",
    "DropoutConfig",
    "Identity",
    "LeNet",
    "NO_DROPOUT",
    "ResNet",
    "build_model",
    "decoupled_rates",
    "make_dropout",
    "caffe_pool",
    "max_pool_2x2",
]


class ConvNetQuick(nn.Module):
    """Caffe's ``cifar10_quick`` with dropout on the inputs of both fully connected layers.

    conv 32 5x5 pad 2 -> maxpool 3x3/2 -> ReLU -> conv 32 5x5 pad 2 -> ReLU -> avgpool 3x3/2
    -> conv 64 5x5 pad 2 -> ReLU -> avgpool 3x3/2 -> dropout -> fc 64 -> dropout -> fc 10.
    As in Caffe: pooling rounds the output size up (32 -> 16 -> 8 -> 4), average pooling
    divides by the number of in-bounds inputs, there is no ReLU between the two fully
    connected layers, and weights use Caffe's Gaussian fillers (std 1e-4, 0.01, 0.01, 0.1,
    0.1) with zero biases. Input ``(N, 32, 32, C)``.

    Attributes:
      num_classes: output size.
      dropout: the dropout on the inputs of the two fully connected layers.
      caffe_init: Caffe's Gaussian fillers (else Flax's LeCun normal).
    """

    num_classes: int = 10
    dropout: DropoutConfig = NO_DROPOUT
    caffe_init: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Logits for NHWC images."""

        def init(std: float) -> dict[str, Any]:
            if not self.caffe_init:
                return {}
            return {"kernel_init": nn.initializers.normal(std)}

        same = ((2, 2), (2, 2))
        x = _Conv(32, (5, 5), padding=same, name="conv1", **init(1e-4))(x)
        x = nn.relu(caffe_pool(x, "max"))
        x = nn.relu(_Conv(32, (5, 5), padding=same, name="conv2", **init(0.01))(x))
        x = caffe_pool(x, "avg")
        x = nn.relu(_Conv(64, (5, 5), padding=same, name="conv3", **init(0.01))(x))
        x = caffe_pool(x, "avg")
        x = x.reshape(x.shape[0], -1)
        x = DropDense(64, self.dropout, name="ip1", **init(0.1))(x, train)
        return DropDense(self.num_classes, self.dropout, name="ip2", **init(0.1))(x, train)


class _BasicBlock(nn.Module):
    """Conv-BN-ReLU-Dropout-Conv-BN-(+shortcut)-ReLU, with the option-A shortcut."""

    features: int
    strides: int
    dropout: DropoutConfig

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        he = nn.initializers.he_normal()
        bn = lambda name: nn.BatchNorm(
            use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name
        )
        s = (self.strides, self.strides)
        y = _Conv(
            self.features,
            (3, 3),
            s,
            padding=((1, 1), (1, 1)),
            use_bias=False,
            kernel_init=he,
            name="conv1",
        )(x)
        y = nn.relu(bn("bn1")(y))
        y = DropConv(
            self.features,
            (3, 3),
            self.dropout,
            padding=((1, 1), (1, 1)),
            use_bias=False,
            kernel_init=he,
            name="conv2",
        )(y, train)
        y = bn("bn2")(y)
        shortcut = x
        if self.strides != 1:
            shortcut = shortcut[:, :: self.strides, :: self.strides, :]
        extra = self.features - shortcut.shape[-1]
        if extra > 0:  # option A: zero-pad the new channels
            lo = extra // 2
            shortcut = jnp.pad(shortcut, ((0, 0), (0, 0), (0, 0), (lo, extra - lo)))
        return nn.relu(y + shortcut)


class ResNet(nn.Module):
    """CIFAR ResNet (He et al., 2016) with dropout between the two convolutions of a block.

    A 3x3 conv (``widths[0]`` channels) with BN and ReLU, then ``len(stage_blocks)`` stages of
    basic blocks Conv-BN-ReLU-Dropout-Conv-BN-(+shortcut)-ReLU (the Wide-ResNet placement Gao
    et al. use), the first block of every stage after the first with stride 2 and the
    parameter-free option-A shortcut (subsample, zero-pad channels), then global average
    pooling and a dense layer. The defaults, three stages of three blocks with 16/32/64
    channels, are ResNet-20. Convolutions use He-normal weights and no bias.

    Attributes:
      num_classes: output size.
      dropout: the dropout inside every block.
      stage_blocks: blocks per stage.
      widths: channels per stage.
    """

    num_classes: int = 10
    dropout: DropoutConfig = NO_DROPOUT
    stage_blocks: Sequence[int] = (3, 3, 3)
    widths: Sequence[int] = (16, 32, 64)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Logits for NHWC images."""
        if len(self.stage_blocks) != len(self.widths):
            raise ValueError("ResNet needs one width per stage (stage_blocks and widths)")
        x = _Conv(
            self.widths[0],
            (3, 3),
            padding=((1, 1), (1, 1)),
            use_bias=False,
            kernel_init=nn.initializers.he_normal(),
            name="stem",
        )(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(x)
        x = nn.relu(x)
        for stage, (blocks, width) in enumerate(zip(self.stage_blocks, self.widths, strict=True)):
            for block in range(blocks):
                strides = 2 if stage > 0 and block == 0 else 1
                x = _BasicBlock(width, strides, self.dropout, name=f"stage{stage}_block{block}")(
                    x, train
                )
        x = x.mean(axis=(1, 2))
        return nn.Dense(self.num_classes, name="fc")(x)


class MLP(nn.Module):
    """A ReLU multilayer perceptron with input and hidden dropout (Bouthillier et al.).

    ``drop_in(x) -> fc -> ReLU -> [drop -> fc -> ReLU]* -> drop -> fc(num_classes)``: the
    input dropout before the first layer, the hidden dropout before every later layer.
    Images are flattened.

    Attributes:
      hidden: hidden layer sizes, e.g. ``(2500, 1250)``.
      num_classes: output size.
      input_dropout: dropout on the inputs.
      dropout: dropout on the hidden units.
    """

    hidden: Sequence[int] = (1500, 1500)
    num_classes: int = 10
    input_dropout: DropoutConfig = NO_DROPOUT
    dropout: DropoutConfig = NO_DROPOUT

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Logits for inputs of shape ``(N, ...)``."""
        x = x.reshape(x.shape[0], -1)
        for i, width in enumerate(self.hidden):
            cfg = self.input_dropout if i == 0 else self.dropout
            x = nn.relu(DropDense(width, cfg, name=f"fc{i}")(x, train))
        cfg = self.input_dropout if not self.hidden else self.dropout
        return DropDense(self.num_classes, cfg, name="out")(x, train)


class GCN(nn.Module):
    """Kipf & Welling's two-layer graph convolutional network with dropout and DropEdge.

    ``logits = A' drop(ReLU(A' drop(x) W1 + b1)) W2 + b2`` with
    ``A' = D^-1/2 (A + I) D^-1/2`` from :func:`dropjax.gcn_normalize`. In training, with
    ``edge_rate > 0``, edges are first dropped with :func:`dropjax.edge_dropout` and the
    surviving graph is renormalised. Biases are added after propagation.

    Attributes:
      hidden: hidden size.
      num_classes: output size.
      dropout: the dropout on the inputs of both graph convolutions.
      edge_rate: DropEdge probability of dropping an edge in training.
    """

    hidden: int = 16
    num_classes: int = 7
    dropout: DropoutConfig = NO_DROPOUT
    edge_rate: float = 0.0

    @nn.compact
    def __call__(
        self, x: jax.Array, senders: jax.Array, receivers: jax.Array, train: bool = False
    ) -> jax.Array:
        """Node logits ``(N, num_classes)`` for node features ``(N, F)`` and an edge list."""
        n = x.shape[0]
        weight = None
        if train and self.edge_rate > 0.0:
            kept = dropjax.edge_dropout(
                self.make_rng("dropout"), senders, receivers, self.edge_rate
            )
            weight = kept.weight
        graph = dropjax.gcn_normalize(senders, receivers, n, edge_weight=weight)

        def propagate(h):
            messages = graph.weight[:, None].astype(h.dtype) * h[graph.senders]
            return jax.ops.segment_sum(messages, graph.receivers, num_segments=n)

        for i, width in enumerate((self.hidden, self.num_classes)):
            h = propagate(DropDense(width, self.dropout, use_bias=False, name=f"gc{i}")(x, train))
            x = h + self.param(f"bias{i}", nn.initializers.zeros_init(), (width,))
            if i == 0:
                x = nn.relu(x)
        return x


def build_model(name: str, cfg: DropoutConfig, num_classes: int = 10):
    """``convnet_quick`` (Caffe cifar10_quick), ``resnet20``, or the small smoke-test stand-ins
    ``resnet8`` (one block per stage, 4/8/8 channels) and ``mlp`` (one hidden layer of 32)."""
    if name == "convnet_quick":
        return ConvNetQuick(num_classes=num_classes, dropout=cfg)
    if name == "mlp":
        return MLP(hidden=(32,), num_classes=num_classes, dropout=cfg)
    if name == "resnet20":
        return ResNet(num_classes=num_classes, dropout=cfg)
    if name == "resnet8":
        return ResNet(
            num_classes=num_classes, dropout=cfg, stage_blocks=(1, 1, 1), widths=(4, 8, 8)
        )
    raise ValueError(f"unknown model {name!r}")
