"""The multi-host path (``--distributed``), as two processes on this machine.

Two ``python -m experiments`` processes with 2 host CPU devices each, joined by
``jax.distributed.initialize`` through a localhost coordinator (CPU collectives over gloo),
form a 2-host "pod" of 4 devices, over which a pod's default batch split shards every batch
(several local devices per host, as on a TPU pod; with 4 each the test took half as long
again). Process 1 is given its own ``--out`` folder, as a pod host
has its own disk; the checkpoints (``$DROPJAX_RUNS``) are shared, as on a pod's shared file
system. The reference is the same command in one process with 8 devices (this test process,
which the root conftest gives 8 host devices; its replica split uses 2 of them).
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from experiments.__main__ import EXIT_INCOMPLETE, main
from experiments.claims.lenet_mnist import PRESETS
from experiments.harness import data
from experiments.harness.budget import Budget

ROOT = Path(__file__).resolve().parents[3]
TIMEOUT_S = 300
"""Seconds per 2-process run: a hang fails the test (both processes killed), never CI."""
CELLS = "arm=standard/"
"""The smoke grid's first cell only: the pod's path is the same for every arm, and each
further cell costs every process its compile (the test took twice as long with all three)."""
VARYING = {"environment", "wall_time_s", "timing", "finished", "wall_s", "resumed_from", "recorded"}
"""Fields that differ between any two runs (clocks, hosts, process count, resume point)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_pod(
    tmp: Path, outs: tuple[Path, Path], *extra: str, runs: tuple[str, str] = ("runs", "runs")
) -> tuple[list[int], str]:
    """Runs ``lenet_mnist --preset smoke`` (its :data:`CELLS`) as 2 processes x 2 devices.

    Process ``i`` writes to ``outs[i]`` and keeps checkpoints in ``tmp / runs[i]``. Returns
    the exit codes (-9: killed, because the other process failed or the run timed out) and
    the tail of each process's output.
    """
    port = _free_port()
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        # 2 devices per process; the rest of the session's flags (its optimisation level) kept
        XLA_FLAGS=" ".join(
            [
                flag
                for flag in os.environ.get("XLA_FLAGS", "").split()
                if not flag.startswith("--xla_force_host_platform_device_count")
            ]
            + ["--xla_force_host_platform_device_count=2"]
        ),
        DROPJAX_DATA=str(tmp / "data"),
        # A rerun loads the programs the previous run compiled (as a pod would, from its
        # shared cache): a third less CPU time for the test, the same executables.
        JAX_COMPILATION_CACHE_DIR=os.environ.get("JAX_COMPILATION_CACHE_DIR", str(tmp / "xla")),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    )
    procs, logs = [], []
    try:
        for rank, (out, folder) in enumerate(zip(outs, runs, strict=True)):
            logs.append(tmp / f"pod-{port}-process{rank}.log")
            cmd = [
                sys.executable, "-m", "experiments", "lenet_mnist", "--preset", "smoke",
                "--quiet", "--cells", CELLS, "--out", str(out), "--distributed",
                "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                "--process-id", str(rank), *extra,
            ]  # fmt: skip
            with open(logs[-1], "w") as log:
                procs.append(
                    subprocess.Popen(
                        cmd,
                        cwd=ROOT,
                        env=dict(env, DROPJAX_RUNS=str(tmp / folder)),
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,  # its own process group, killed as one
                    )
                )
        deadline = time.monotonic() + TIMEOUT_S
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            if any(p.poll() not in (None, 0, EXIT_INCOMPLETE) for p in procs):
                # a failed process: give the other one a moment to fail too, not forever
                deadline = min(deadline, time.monotonic() + 30)
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    tails = [f"--- process {rank}\n" + log.read_text()[-3000:] for rank, log in enumerate(logs)]
    return [p.returncode for p in procs], "\n".join(tails)


def _same(a: Any, b: Any, where: str = "") -> None:
    """Same structure and values; floats up to reduction-order noise, NaN equal to NaN."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), where
        for key in a:
            if key not in VARYING:
                _same(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert isinstance(a, int | float) and isinstance(b, int | float), where
        assert (math.isnan(a) and math.isnan(b)) or math.isclose(
            a, b, rel_tol=1e-5, abs_tol=1e-6
        ), f"{where}: {a} != {b}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def test_two_process_pod_equals_one_process_and_resumes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DROPJAX_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("DROPJAX_DATA", str(tmp_path / "data"))
    data.load("digits")  # into the cache, so that every run reads the same source
    args = ["lenet_mnist", "--preset", "smoke", "--quiet", "--cells", CELLS]
    # EXIT_INCOMPLETE: the grid's other cells are not run (:data:`CELLS`)
    assert main([*args, "--out", str(tmp_path / "one")]) == EXIT_INCOMPLETE
    capsys.readouterr()
    one = json.loads((tmp_path / "one" / "lenet_mnist" / "smoke.json").read_text())
    (cell,) = one["grid"]["cells"].values()
    assert cell["environment"]["device_count"] == 8
    first_checkpoint = PRESETS["smoke"].train.eval_every

    outs = (tmp_path / "out0", tmp_path / "out1")
    results = outs[0] / "lenet_mnist" / "smoke.json"
    # Interrupted: a budget of 2 s more than the margin the budget keeps in hand starts the
    # first cell and stops both processes at its first checkpoint.
    minutes = (Budget(None).margin_s + 2.0) / 60.0
    codes, logs = _run_pod(tmp_path, outs, "--time-budget", f"{minutes:.4f}")
    assert codes == [EXIT_INCOMPLETE] * 2, logs
    checkpoints = [p for p in (tmp_path / "runs").rglob("*") if p.is_file()]
    # No cell finished yet; the file, if any, holds only the decision spec recorded before
    # the first cell trained.
    assert checkpoints, logs
    assert not results.exists() or not json.loads(results.read_text())["grid"]["cells"], logs

    # A host that does not see the checkpoint folder: both processes refuse to resume
    # (instead of resuming at different steps and hanging), and the message names the fix.
    codes, logs = _run_pod(tmp_path, outs, runs=("runs", "runs-elsewhere"))
    assert codes == [1, 1], logs
    assert logs.count("the processes see different checkpoints") == 2, logs
    assert f"[{first_checkpoint}, -1]" in logs and "DROPJAX_RUNS" in logs

    # Resumed: the same command again runs the cell to its end.
    codes, logs = _run_pod(tmp_path, outs)
    assert codes == [EXIT_INCOMPLETE] * 2, logs
    pod = json.loads(results.read_text())
    (cell,) = pod["grid"]["cells"].values()
    assert cell["environment"]["process_count"] == 2
    assert cell["environment"]["device_count"] == 4
    assert cell["result"]["resumed_from"] == first_checkpoint  # restored by both processes
    _same(one, pod)  # same cell, seeds, configuration, metrics and curves
    assert pod["status"] == "partial" and pod["cells_done"] == 1

    # Only process 0 writes: process 1's --out folder was never created, and the finished
    # cells' checkpoints are gone.
    assert not outs[1].exists()
    assert not [p for p in (tmp_path / "runs").rglob("*") if p.is_file()]

    # Rerun once more: process 1, whose disk has no results file, learns from process 0
    # that every selected cell is done (else it would train alone and hang), and nothing
    # changes.
    codes, logs = _run_pod(tmp_path, outs)
    assert codes == [EXIT_INCOMPLETE] * 2, logs
    assert logs.count("the cells selected by --cells are done") == 2, logs
    again = json.loads(results.read_text())
    assert again["grid"] == pod["grid"] and not outs[1].exists()
