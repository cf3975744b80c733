"""The papers' training protocols, shared by the claims that follow them."""

from __future__ import annotations

from typing import Any

from experiments.harness.train import TrainConfig, step_sgd

__all__ = ["RESNET_PAPER", "describe_train", "epochs_protocol", "quick_protocol"]


def quick_protocol(iterations: int, boundary: int, **kw: Any) -> TrainConfig:
    """Table 1's ConvNet-Quick protocol with ``iterations`` steps and one lr step."""
    base = {"batch_size": 100, "eval_every": 1000, "weight_decay": 0.004, "learning_rate": 0.001}
    return step_sgd(iterations, boundary, **{**base, **kw})


def epochs_protocol(
    preset: Any, num_train: int, *, evals_per_epoch: int = 1, epochs_per_eval: int = 1
) -> TrainConfig:
    """Constant-rate SGD with momentum for ``preset.epochs`` passes over ``num_train``
    examples in batches of ``preset.batch_size`` (``preset.learning_rate``,
    ``preset.momentum``): the MLP protocols of Bouthillier et al. The test set is evaluated
    every ``max(1, steps_per_epoch // evals_per_epoch) * epochs_per_eval`` steps.

    Examples:
      >>> from types import SimpleNamespace
      >>> from experiments.harness.protocols import epochs_protocol
      >>> preset = SimpleNamespace(epochs=40, batch_size=100, learning_rate=0.05, momentum=0.9)
      >>> cfg = epochs_protocol(preset, 2000, epochs_per_eval=4)
      >>> cfg.iterations, cfg.eval_every
      (800, 80)
      >>> epochs_protocol(preset, 2000, evals_per_epoch=3).eval_every
      6
    """
    steps_per_epoch = num_train // preset.batch_size
    return TrainConfig(
        iterations=preset.epochs * steps_per_epoch,
        batch_size=preset.batch_size,
        learning_rate=preset.learning_rate,
        momentum=preset.momentum,
        eval_every=max(1, steps_per_epoch // evals_per_epoch) * epochs_per_eval,
        eval_batch_size=2000,
    )


RESNET_PAPER = TrainConfig(
    iterations=640_000,
    batch_size=128,
    learning_rate=0.1,
    lr_boundaries=(320_000, 480_000),
    lr_decay=0.1,
    momentum=0.9,
    nesterov=True,
    weight_decay=1e-3,
    eval_every=10_000,
)
"""Gao et al. Table 2's ResNet-20 protocol as the paper states it (640k iterations; He et
al.'s CIFAR schedule is 64k, so the paper's figure is likely a typo for it)."""


def describe_train(t: dict[str, Any]) -> str:
    """The protocol in one phrase."""
    opt = "Nesterov" if t["nesterov"] else "SGD"
    steps = ", ".join(map(str, t["lr_boundaries"]))
    return (
        f"{t['iterations']} iterations, batch {t['batch_size']}, {opt} momentum "
        f"{t['momentum']:g}, lr {t['learning_rate']:g} ×{t['lr_decay']:g} at {steps}, "
        f"weight decay {t['weight_decay']:g}"
    )
