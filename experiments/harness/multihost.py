"""What the processes of a multi-host run (``--distributed``) must agree on: process 0's
values (:func:`from_process0`; :class:`experiments.harness.budget.AgreedBudget` builds on it).

Every process runs the same program, and a collective waits for all of them: a process that
trains a cell the others skip, or stops where they go on, hangs the run. Only process 0
writes the results file, and on a TPU pod ``--out`` is a folder of host 0's disk, so the
other hosts learn which cells are finished from process 0, and they stop when process 0's
clock says the budget is spent. In a single-process run these are no-ops.

Examples:
  >>> from experiments.harness.multihost import from_process0
  >>> from_process0({"cells": {"a": 1}})  # one process: the value itself
  {'cells': {'a': 1}}
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["from_process0"]


def from_process0(value: Any) -> Any:
    """Process 0's ``value`` (anything JSON-able) on every process.

    Every process must call it at the same point of the program.

    Examples:
      >>> from experiments.harness.multihost import from_process0
      >>> from_process0([1, "two", None])
      [1, 'two', None]
    """
    import jax  # here, not at import: the command line's `list` must not load jax

    if jax.process_count() == 1:
        return value
    import numpy as np
    from jax.experimental import multihost_utils

    blob = np.frombuffer(json.dumps(value).encode(), np.uint8)
    size = int(multihost_utils.broadcast_one_to_all(np.int32(blob.size)))
    buffer = np.zeros(size, np.uint8)
    buffer[: min(size, blob.size)] = blob[:size]
    return json.loads(np.asarray(multihost_utils.broadcast_one_to_all(buffer)).tobytes())
