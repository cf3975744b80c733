"""Shared by the experiments' tests: run a preset end to end into a temporary folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from experiments.registry import RunContext, execute

PNG = b"\x89PNG\r\n\x1a\n"
"""The first bytes of every PNG file."""


def run_preset(root: Path, name: str, preset: str = "smoke") -> tuple[dict[str, Any], Path, Path]:
    """Runs experiment ``name``'s ``preset`` quietly into ``root / name``; returns the
    results payload, the results file and the experiment's folder."""
    out_dir = Path(root) / name
    ctx = RunContext(name=name, preset=preset, out_dir=out_dir, quiet=True)
    payload, path = execute(name, ctx)
    return payload, path, out_dir
