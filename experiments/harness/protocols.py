"""The papers' training protocols, shared by the claims that follow them."""

from __future__ import annotations

from typing import Any

import numpy as np

from experiments.harness.train import TrainConfig, step_sgd

__all__ = [
    "RESNET_PAPER",
    "converged",
    "converged_lines",
    "describe_train",
    "epochs_protocol",
    "quick_protocol",
]


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


def converged(arms: dict[str, Any], last: int, tolerance: float) -> dict[str, Any]:
    """The convergence check of a declared scaled protocol: per arm (a training result's
    JSON, :meth:`experiments.harness.train.TrainResult.to_json`), the mean test error (%,
    over replicas) of the last ``last`` evaluations minus that of the ``last`` before; the
    arm is flat when that change is within ``tolerance`` percentage points (negative: the
    error still falls).

    Examples:
      >>> from experiments.harness.protocols import converged
      >>> arm = lambda accs: {"curves": [{"test_acc": [a, a]} for a in accs]}
      >>> out = converged({"a": arm([0.9, 0.95, 0.97, 0.971]), "b": arm([0.9] * 3)}, 2, 0.1)
      >>> out["arms"]["a"], out["arms"]["b"]["flat"], out["all_flat"]
      ({'change': -4.55, 'flat': False}, False, False)
    """
    out = {}
    for key, arm in arms.items():
        acc = (
            np.array([c["test_acc"] for c in arm["curves"]], np.float64)
            .reshape(len(arm["curves"]), -1)
            .mean(-1)
        )
        if len(acc) < 2 * last:  # too few evaluations to tell
            out[key] = {"change": None, "flat": False}
            continue
        change = round(float(100.0 * (acc[-2 * last : -last].mean() - acc[-last:].mean())), 4)
        out[key] = {"change": change, "flat": bool(abs(change) < tolerance)}
    return {"arms": out, "all_flat": all(v["flat"] for v in out.values())}


def converged_lines(scaled: dict[str, Any], check: str) -> list[str]:
    """REPORT.md's lines for a scaled-protocol run: why the protocol keeps the paper's
    question (``scaled["reason"]``) and whether its :func:`converged` check (worded ``check``)
    held, naming each arm that still moved (its change, in percentage points)."""
    moving = {k: v["change"] for k, v in scaled["arms"].items() if not v["flat"]}
    held = (
        "**yes**."
        if scaled["all_flat"]
        else "**no**: " + ", ".join(f"{k} ({v})" for k, v in moving.items()) + "."
    )
    return ["", f"Scaled protocol: {scaled['reason']}", "", f"Converged ({check}): {held}"]


def describe_train(t: dict[str, Any]) -> str:
    """The protocol in one phrase."""
    opt = "Nesterov" if t["nesterov"] else "SGD"
    steps = ", ".join(map(str, t["lr_boundaries"]))
    return (
        f"{t['iterations']} iterations, batch {t['batch_size']}, {opt} momentum "
        f"{t['momentum']:g}, lr {t['learning_rate']:g} ×{t['lr_decay']:g} at {steps}, "
        f"weight decay {t['weight_decay']:g}"
    )
