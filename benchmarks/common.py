"""Timing and memory helpers shared by the benchmarks (never used in test assertions)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import jax

__all__ = ["device_label", "min_time", "temp_bytes"]


def _block(out):
    for leaf in jax.tree.leaves(out):
        if hasattr(leaf, "block_until_ready"):
            leaf.block_until_ready()
    return out


def min_time(fn: Callable, *args, repeats: int = 7, warmup: int = 2, min_total: float = 0.0):
    """Minimum wall time of ``fn(*args)`` over ``repeats`` runs after ``warmup`` runs (s)."""
    for _ in range(warmup):
        _block(fn(*args))
    best = float("inf")
    total = 0.0
    runs = 0
    while runs < repeats or total < min_total:
        start = time.perf_counter()
        _block(fn(*args))
        elapsed = time.perf_counter() - start
        best = min(best, elapsed)
        total += elapsed
        runs += 1
    return best


def temp_bytes(jitted: Callable, *args) -> int | None:
    """Compiled temporary memory of ``jitted(*args)`` from XLA's memory analysis."""
    analysis = jitted.lower(*args).compile().memory_analysis()
    if analysis is None:
        return None
    return int(analysis.temp_size_in_bytes)


def device_label() -> str:
    """A file-name-safe label of the default device, e.g. ``cpu`` or ``nvidia-h100-80gb-hbm3``."""
    dev = jax.devices()[0]
    kind = dev.device_kind if dev.platform != "cpu" else "cpu"
    return re.sub(r"[^a-z0-9]+", "-", kind.lower()).strip("-")
