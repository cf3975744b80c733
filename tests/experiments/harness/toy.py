"""Shared by the harness tests: a tiny learnable data set and a dropout configuration."""

from __future__ import annotations

import numpy as np

from experiments.harness.models import DropoutConfig
from experiments.harness.train import ArrayData


def toy_data(n_train=64, n_test=24, shape=(8, 8, 1), classes=3, seed=0) -> ArrayData:
    """A learnable synthetic set: labels from a random linear projection of the inputs."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_train + n_test, *shape)).astype(np.float32)
    w = rng.normal(size=(int(np.prod(shape)), classes))
    y = np.argmax(x.reshape(len(x), -1) @ w, -1).astype(np.int32)
    return ArrayData(x[:n_train], y[:n_train], x[n_train:], y[n_train:], "toy", "synthetic")


def dropout_cfg(kind: str) -> DropoutConfig:
    """``kind`` at rate 0.3 (backward 0.2 for the augmented kinds), blocks of 2."""
    backward = 0.2 if kind.startswith("augmented") else 0.0
    return DropoutConfig(kind, 0.3, backward, block_size=2)
