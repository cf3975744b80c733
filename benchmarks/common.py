"""Timing and memory helpers shared by the benchmarks (never used in test assertions)."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import jax

__all__ = ["command_line", "device_label", "min_time", "temp_bytes", "write_text_atomic"]


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


def command_line(module: str, argv) -> str:
    """The shell command that ran ``python -m module argv`` (with this ``XLA_FLAGS`` and CPU
    affinity), for a results file; ``--conditions TEXT`` (a label, not a setting) is left out.

    Examples:
      >>> line = command_line("benchmarks.profile_step", ["--steps", "5", "--conditions", "busy"])
      >>> line.endswith("python -m benchmarks.profile_step --steps 5")
      True
    """
    args, skip = [], False
    for arg in argv or []:
        if skip:
            skip = False
        elif arg == "--conditions":
            skip = True
        elif not arg.startswith("--conditions="):
            args.append(arg)
    flags = os.environ.get("XLA_FLAGS")
    pinned = ""
    if hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) < os.cpu_count():
        pinned = "taskset -c " + ",".join(str(c) for c in sorted(os.sched_getaffinity(0))) + " "
    prefix = (f'XLA_FLAGS="{flags}" ' if flags else "") + pinned
    return prefix + " ".join(["python -m", module, *args])


def write_text_atomic(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary file, so no reader sees half of it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
