"""The papers' training protocols, shared by the claims that follow them."""

from __future__ import annotations

from typing import Any

from experiments.train import TrainConfig, step_sgd

__all__ = ["RESNET_PAPER", "describe_train", "epochs_protocol", "quick_protocol"]


def quick_protocol(iterations: int, boundary: int, **kw: Any) -> TrainConfig:
    """Table 1's ConvNet-Quick protocol with ``iterations`` steps and one lr step."""
    base = {"batch_size": 100, "eval_every": 1000, "weight_decay": 0.004, "learning_rate": 0.001}
    return step_sgd(iterations, boundary, **{**base, **kw})


def epochs_protocol(
    epochs: int,
    num_train: int,
    batch_size: int,
    learning_rate: float,
    momentum: float,
    *,
    evals_per_epoch: int = 1,
    epochs_per_eval: int = 1,
) -> TrainConfig:
    """Constant-rate SGD with momentum for ``epochs`` passes over ``num_train`` examples
    (the MLP protocols of Bouthillier et al.). The test set is evaluated every
    ``max(1, steps_per_epoch // evals_per_epoch) * epochs_per_eval`` steps.

    Examples:
      >>> from experiments.protocols import epochs_protocol
      >>> cfg = epochs_protocol(40, 2000, 100, 0.05, 0.9, epochs_per_eval=4)
      >>> cfg.iterations, cfg.eval_every
      (800, 80)
      >>> epochs_protocol(2, 2000, 100, 0.05, 0.9, evals_per_epoch=3).eval_every
      6
    """
    steps_per_epoch = num_train // batch_size
    return TrainConfig(
        iterations=epochs * steps_per_epoch,
        batch_size=batch_size,
        learning_rate=learning_rate,
        momentum=momentum,
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
