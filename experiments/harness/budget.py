"""Wall-clock budgets for long runs: a run stops cleanly at a checkpoint before its
``--time-budget`` runs out, and on a multi-host run every process stops where process 0 does.

Examples:
  >>> from experiments.harness.budget import Budget
  >>> Budget(None).left()
  inf
"""

from __future__ import annotations

import time
from typing import Any

from experiments.harness.multihost import from_process0

__all__ = ["AgreedBudget", "Budget", "BudgetExhausted"]


class BudgetExhausted(Exception):
    """Raised at a checkpoint when the next segment would not finish inside the budget."""


class Budget:
    """A wall-clock budget, counted from construction.

    Args:
      minutes: the budget, or None for no limit.
      margin_s: seconds kept in hand for writing results and exiting.
    """

    def __init__(self, minutes: float | None, margin_s: float = 20.0):
        if minutes is not None and minutes <= 0:
            raise ValueError(f"--time-budget must be positive minutes; got {minutes}")
        self.deadline = None if minutes is None else time.monotonic() + 60.0 * minutes
        self.margin_s = margin_s
        self._worst_segment = 0.0
        self._last = time.monotonic()

    def left(self) -> float:
        """Seconds left (infinity without a budget)."""
        if self.deadline is None:
            return float("inf")
        return self.deadline - time.monotonic()

    def start_segment_clock(self) -> None:
        self._last = time.monotonic()

    def check(self, *, expected_s: float | None = None) -> None:
        """Raises :class:`BudgetExhausted` when ``expected_s`` more seconds do not fit."""
        now = time.monotonic()
        self._worst_segment = max(self._worst_segment, now - self._last)
        self._last = now
        need = (self._worst_segment if expected_s is None else expected_s) + self.margin_s
        if self.left() < need:
            raise BudgetExhausted(
                f"time budget reached: {max(self.left(), 0):.0f} s left, the next step needs "
                f"about {need:.0f} s"
            )

    def callback(self, step: int, entry: dict[str, Any]) -> None:
        """A :meth:`experiments.harness.train.Trainer.run` callback: stop at this checkpoint if the
        next segment would overrun (it is called after the checkpoint is written)."""
        del step, entry
        self.check()


class AgreedBudget(Budget):
    """A :class:`experiments.harness.cells.Budget` whose every decision is process 0's.

    Examples:
      >>> from experiments.harness.budget import AgreedBudget
      >>> AgreedBudget(None).check(expected_s=0.0)  # no budget: never stops
    """

    def check(self, *, expected_s: float | None = None) -> None:
        """Raises :class:`BudgetExhausted` on every process when process 0's clock says so."""
        try:
            super().check(expected_s=expected_s)
            stop = None
        except BudgetExhausted as exc:
            stop = str(exc)
        stop = from_process0(stop)
        if stop is not None:
            raise BudgetExhausted(stop)
