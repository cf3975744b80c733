"""Part of :mod:`experiments.harness.train` (see there)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

from experiments.harness.train._config import (
    TrainState,
)


class _Checkpoints:
    """Orbax checkpoints of (state, curves) at segment boundaries, tied to one run."""

    def __init__(self, directory: str | os.PathLike[str], fingerprint: str):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.fingerprint = fingerprint
        self.manager = ocp.CheckpointManager(
            Path(directory).resolve(),
            options=ocp.CheckpointManagerOptions(
                max_to_keep=2, create=True, enable_async_checkpointing=False
            ),
        )

    def restore(self, like: TrainState) -> tuple[TrainState, int, list] | None:
        step = self.manager.latest_step()
        if jax.process_count() > 1:
            _same_step_everywhere(step, self.manager.directory)
        if step is None:
            return None
        ocp = self._ocp
        meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        meta = meta["meta"]
        if meta.get("fingerprint") != self.fingerprint:
            raise ValueError(
                f"the checkpoint in {self.manager.directory} belongs to another run (model, "
                "data, config or seeds differ); delete it or pass another checkpoint_dir"
            )
        abstract = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), like
        )
        restored = self.manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
        )
        return restored["state"], int(meta["step"]), list(meta["history"])

    def save(self, step: int, state: TrainState, history: list) -> None:
        ocp = self._ocp
        meta = {"fingerprint": self.fingerprint, "step": step, "history": history}
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
        )
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def _same_step_everywhere(step: int | None, directory: Any) -> None:
    """Multi-host: raises on every process unless all of them see the same latest checkpoint.

    Each process restores its own part of the state (and Orbax writes each array once, from
    the process that holds its first replica), so a checkpoint folder that only some hosts
    see would resume them at different steps and hang the run.
    """
    from jax.experimental import multihost_utils

    mine = np.int32(-1 if step is None else step)
    steps = np.asarray(multihost_utils.process_allgather(mine)).reshape(-1)
    if (steps != steps[0]).any():
        raise ValueError(
            f"the processes see different checkpoints in {directory} (latest step per "
            f"process, -1 for none: {steps.tolist()}): the checkpoint folder must be one "
            "that every host sees, on a shared file system (for `python -m experiments`, "
            "set $DROPJAX_RUNS there)"
        )


def resume_options(
    checkpoint_dir: str | os.PathLike[str] | None, budget: Any, subfolder: str | None = None
) -> dict[str, Any]:
    """:func:`train`'s ``checkpoint_dir`` and ``callback`` for a training inside a resumable
    one-shot cell (:func:`experiments.harness.claim.one_shot` with ``resumable=True``): the
    cell's folder (or its ``subfolder``, one per training when a cell trains several) and
    the run's budget, which stops the training cleanly at a checkpoint. Without a folder
    (called outside a grid): no checkpoints, no budget.

    Examples:
      >>> from experiments.harness.train import resume_options
      >>> resume_options(None, None)
      {'checkpoint_dir': None, 'callback': None}
      >>> str(resume_options("/tmp/cell", None, "plain")["checkpoint_dir"])
      '/tmp/cell/plain'
    """
    folder = None if checkpoint_dir is None else Path(checkpoint_dir)
    if folder is not None and subfolder is not None:
        folder = folder / subfolder
    return {"checkpoint_dir": folder, "callback": None if budget is None else budget.callback}
