"""Training curves to TensorBoard, besides the results JSON (``--tensorboard DIR``).

Inside :func:`writing`, every curve entry the trainer produces (one per evaluation
segment: ``train_loss``, ``train_acc``, ``test_loss``, ``test_acc`` per replica, and
``lr``) is also written as TensorBoard scalars through ``tensorboardX`` (an optional
dependency: ``pip install -e ".[tensorboard]"``; no TensorFlow or PyTorch). Each training
run gets its own folder ``DIR/<experiment>/<preset>/<run label>``, so one
``tensorboard --logdir DIR`` compares arms and replicas side by side. Outside
:func:`writing`, :func:`log_entry` does nothing.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = ["log_entry", "writing"]


class _Writers:
    """One ``tensorboardX.SummaryWriter`` per run label under a root folder."""

    def __init__(self, root: Path, writer_cls: Any) -> None:
        self.root = root
        self._cls = writer_cls
        self._open: dict[str, Any] = {}

    def get(self, label: str) -> Any:
        if label not in self._open:
            self._open[label] = self._cls(logdir=str(self.root / _folder_name(label)))
        return self._open[label]

    def close(self) -> None:
        for writer in self._open.values():
            writer.close()
        self._open.clear()


_ACTIVE: contextvars.ContextVar[_Writers | None] = contextvars.ContextVar(
    "dropjax_experiments_tensorboard", default=None
)


def _folder_name(label: str) -> str:
    """A run label as one safe folder name (``"standard p=0.5"`` -> ``"standard_p=0.5"``)."""
    name = re.sub(r"[^A-Za-z0-9_.=+-]+", "_", label.strip()).strip("_.")
    return name or "run"


@contextlib.contextmanager
def writing(logdir: str | os.PathLike[str] | None) -> Iterator[Path | None]:
    """Writes the curves of every training run inside the block under ``logdir``.

    Args:
      logdir: the folder for this experiment and preset (the CLI passes
        ``DIR/<experiment>/<preset>``); None turns TensorBoard output off.

    Yields:
      The folder, or None when off.

    Raises:
      ImportError: ``tensorboardX`` is not installed (the message says how to get it).

    Examples:
      >>> import tempfile, experiments.harness.tensorboard as tb
      >>> with tb.writing(None) as where:
      ...     tb.log_entry("arm", {"step": 1, "train_loss": [0.5]})  # off: does nothing
      >>> where is None
      True
    """
    if logdir is None:
        yield None
        return
    try:
        from tensorboardX import SummaryWriter
    except ImportError as err:
        raise ImportError(
            '--tensorboard needs tensorboardX: pip install -e ".[tensorboard]"'
        ) from err
    root = Path(logdir)
    root.mkdir(parents=True, exist_ok=True)
    writers = _Writers(root, SummaryWriter)
    token = _ACTIVE.set(writers)
    try:
        yield root
    finally:
        _ACTIVE.reset(token)
        writers.close()


def log_entry(label: str | None, entry: Mapping[str, Any]) -> None:
    """Writes one curve entry of run ``label`` at ``entry["step"]`` (no-op when off).

    Each metric that is a per-replica list is written as ``<metric>/replica_<r>`` and its
    mean as ``<metric>/mean``; scalars (``lr``) as themselves.

    Examples:
      >>> import pathlib, tempfile, experiments.harness.tensorboard as tb
      >>> with tb.writing(tempfile.mkdtemp()) as root:
      ...     tb.log_entry("standard 0.5", {"step": 10, "lr": 0.1, "test_acc": [0.9, 0.8]})
      >>> [p.name for p in root.iterdir()]
      ['standard_0.5']
    """
    writers = _ACTIVE.get()
    if writers is None:
        return
    writer = writers.get(label or "run")
    step = int(entry["step"])
    for name, value in entry.items():
        if name == "step":
            continue
        if isinstance(value, (list, tuple)):
            values = [float(v) for v in value]
            if not values:
                continue
            for r, v in enumerate(values):
                writer.add_scalar(f"{name}/replica_{r}", v, step)
            writer.add_scalar(f"{name}/mean", sum(values) / len(values), step)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            writer.add_scalar(name, float(value), step)
    writer.flush()
