"""One XLA host device per core, set up before JAX starts (the command line's default).

XLA:CPU gives a process one device, whose operations each run on one thread while a pool
overlaps independent ones; a training step there leaves the other cores mostly idle. With
``--xla_force_host_platform_device_count=n`` the process gets ``n`` CPU devices, and the
harness (:class:`experiments.harness.train.Trainer`, ``split="replicas"``) runs whole
replicas on each, one XLA thread per device: every core busy, and the numbers bit-identical
to a one-device run. The flags are read once, when JAX creates its CPU backend, so
:func:`configure` must run before the first JAX computation (``python -m experiments``
calls it before it imports anything that uses JAX).

A user's own choice wins: a device count already in ``XLA_FLAGS`` is kept (``--devices``
must then agree with it), and ``taskset`` limits the cores counted.

This module imports nothing heavy (``python -m experiments list`` stays fast).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping, MutableMapping

COUNT_FLAG = "--xla_force_host_platform_device_count"
ONE_THREAD_FLAGS = ("--xla_cpu_multi_thread_eigen=false", "intra_op_parallelism_threads=1")
"""One XLA thread per device: with one device per core, the cores are the parallelism."""


def default_split(processes: int, environ: Mapping[str, str] | None = None) -> str:
    """The split a run uses unless told: ``EXPERIMENTS_SPLIT`` (``--split``), else
    ``"replicas"`` in one process and ``"batch"`` across several (a pod: the batch split
    spans every host's devices, where a replica mesh would leave hosts without shards).

    Examples:
      >>> default_split(1, {}), default_split(2, {})
      ('replicas', 'batch')
      >>> default_split(1, {"EXPERIMENTS_SPLIT": "batch"})
      'batch'
    """
    environ = os.environ if environ is None else environ
    return environ.get("EXPERIMENTS_SPLIT") or ("replicas" if processes == 1 else "batch")


def replica_device_count(replicas: int, devices: int) -> int:
    """How many of ``devices`` the replica split uses: the largest count that divides
    ``replicas`` (every device then runs the same number of whole replicas).

    Examples:
      >>> replica_device_count(4, 2), replica_device_count(3, 2), replica_device_count(2, 8)
      (2, 1, 2)
    """
    return max(k for k in range(1, devices + 1) if replicas % k == 0)


def usable_cores() -> int:
    """The cores this process may run on (``taskset`` and cgroup affinity included)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _jax_started() -> bool:
    """Whether JAX has created its backends (after which XLA_FLAGS is not read again)."""
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge
    except ImportError:  # pragma: no cover - a JAX without this module
        return True
    started = getattr(xla_bridge, "backends_are_initialized", None)
    return True if started is None else bool(started())


def configure(devices: int | None = None, environ: MutableMapping[str, str] | None = None) -> str:
    """Sets ``XLA_FLAGS`` for ``devices`` host devices (default: one per usable core).

    Args:
      devices: the number of host devices; None: :func:`usable_cores`, unless ``XLA_FLAGS``
        already sets a count (then that count is kept).
      environ: the environment to change (default ``os.environ``).

    Returns:
      One line saying what the process will have, for the run's log.

    Raises:
      ValueError: ``devices`` disagrees with a count already in ``XLA_FLAGS``, or JAX has
        already started with another count (both name the fix).

    Examples:
      >>> env = {}
      >>> configure(2, env)
      '2 host devices, one XLA thread each (--devices 2)'
      >>> env["XLA_FLAGS"].split()
      ['--xla_force_host_platform_device_count=2', '--xla_cpu_multi_thread_eigen=false',
       'intra_op_parallelism_threads=1']
      >>> configure(None, {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
      '4 host devices (XLA_FLAGS)'
      >>> configure(1, {})
      '1 host device, one XLA thread each (--devices 1)'
    """
    environ = os.environ if environ is None else environ
    flags = environ.get("XLA_FLAGS", "")
    given = re.search(rf"{COUNT_FLAG}=(\d+)", flags)
    if given is not None:
        count = int(given.group(1))
        if devices is not None and devices != count:
            raise ValueError(
                f"--devices {devices} disagrees with XLA_FLAGS, which sets {COUNT_FLAG}="
                f"{count}: drop one of the two"
            )
        return f"{count} host device{'s' * (count != 1)} (XLA_FLAGS)"
    origin = "cores this process may use" if devices is None else f"--devices {devices}"
    count = usable_cores() if devices is None else devices
    if environ is os.environ and _jax_started():
        raise ValueError(
            f"JAX has already started, so {count} host devices cannot be made now: set "
            f"XLA_FLAGS={COUNT_FLAG}={count} before the process starts"
        )
    # One thread per device at every count, one included: XLA:CPU's threaded kernels split
    # their sums differently, so the numbers would otherwise change with the device count.
    extra = [f"{COUNT_FLAG}={count}"]
    if "xla_cpu_multi_thread_eigen" not in flags:
        extra += ONE_THREAD_FLAGS
    environ["XLA_FLAGS"] = " ".join([flags, *extra]).strip()
    plural = "s" * (count != 1)
    return f"{count} host device{plural}, one XLA thread each ({origin})"
