"""Presets given as dicts of hyperparameters: the run's configuration from its preset.

A claim whose presets are plain dicts (``{"smoke": {...}, "quick": {...}, "paper": {...}}``
with a ``seeds`` count and a ``rates`` tuple) builds its configuration with :func:`seeded`:
the replica override, the list of seeds, and JSON-friendly lists.
"""

from __future__ import annotations

from typing import Any

from experiments.registry import RunContext

__all__ = ["seeded"]


def seeded(ctx: RunContext, presets: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The preset's dict with ``seeds`` (``ctx.replicas`` if given), ``seed_list`` (seeds
    ``ctx.seed .. ctx.seed + seeds - 1``) and ``rates`` as a list.

    Examples:
      >>> from pathlib import Path
      >>> from experiments.presets import seeded
      >>> from experiments.registry import RunContext
      >>> ctx = RunContext("x", "smoke", Path("runs/x"), seed=3, replicas=2)
      >>> seeded(ctx, {"smoke": {"seeds": 5, "rates": (0.1,)}})["seed_list"]
      [3, 4]
    """
    cfg = dict(presets[ctx.preset])
    if ctx.replicas is not None:
        cfg["seeds"] = int(ctx.replicas)
    cfg["seed_list"] = [ctx.seed + r for r in range(cfg["seeds"])]
    if "rates" in cfg:
        cfg["rates"] = list(cfg["rates"])
    return cfg
