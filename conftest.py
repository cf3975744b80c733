"""Root conftest: the same device and dtype configuration for doctests under dropjax/."""

import fcntl
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# The tests need 8 host devices: the flag is appended to a user's own XLA_FLAGS (e.g.
# --xla_cpu_max_isa=AVX2 in .ci/run), never dropped for them; a device count the user set
# wins.
#
# Compiling dominates the suite's time on CPU (about 60 % of it is XLA's backend compile), so
# the tests compile cheaply: XLA:CPU's older elemental fusion emitters instead of its MLIR
# fusion emitters (about half the compile time), LLVM's optimisation level 0 (XLA's default
# is 3) and without LLVM's expensive passes. .ci/run reruns the numerics-sensitive tests at
# lower instruction sets, one set of them with XLA's defaults; a setting the user gave wins.
#
# Tests marked ``xla_defaults`` assert what holds for XLA's default compile (bit identity
# across two programs, e.g. the harness's replica split against one device): under the cheap
# settings they run in a subprocess with the user's flags and XLA's defaults (see
# pytest_pyfunc_call below: all of them in one subprocess).
#
# pytest-xdist's workers inherit this environment: the user's own flags are kept aside once,
# by the first process, so every worker knows which settings are the suite's.
os.environ.setdefault("DROPJAX_TEST_USER_XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))
_USER_FLAGS = os.environ["DROPJAX_TEST_USER_XLA_FLAGS"]
_DEVICES = "--xla_force_host_platform_device_count"
_CHEAP = (  # flag, the suite's value, XLA's default
    ("--xla_backend_optimization_level", "0", "3"),
    ("--xla_cpu_use_fusion_emitters", "false", "true"),
    ("--xla_llvm_disable_expensive_passes", "true", "false"),
)
_flags = (_USER_FLAGS if _DEVICES in _USER_FLAGS else f"{_USER_FLAGS} {_DEVICES}=8").strip()
_mine = [(flag, cheap, xla) for flag, cheap, xla in _CHEAP if flag not in _USER_FLAGS]
_ADDED = [f"{flag}={cheap}" for flag, cheap, _ in _mine]
os.environ["XLA_FLAGS"] = " ".join([_flags, *_ADDED])
# XLA's defaults spelled out, so that the subprocess's own conftest adds nothing
_DEFAULT_FLAGS = " ".join([_flags, *(f"{flag}={xla}" for flag, _, xla in _mine)])
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Experiment checkpoints of the test runs go to a throwaway folder, never the user's cache.
os.environ.setdefault("DROPJAX_RUNS", tempfile.mkdtemp(prefix="dropjax-test-runs-"))
# One compilation cache for the whole session, shared by pytest-xdist's workers (they inherit
# this process's environment) and the subprocesses some tests start: a program that two
# tests, two workers or two processes of a test compile is compiled once.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="dropjax-test-xla-"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

import jax  # noqa: E402

jax.config.update("jax_numpy_dtype_promotion", "strict")

# Fixtures shared by the experiments' tests (data_dir).
pytest_plugins = ["tests.experiments.smoke"]


_CHILD = os.environ.get("DROPJAX_TEST_XLA_DEFAULTS_CHILD", "")  # in a batch: its report file
# One folder per session (workers inherit it): the batch's reports and the lock that lets one
# worker run the batch while the others wait for its reports.
os.environ.setdefault("DROPJAX_TEST_XLA_DEFAULTS_DIR", tempfile.mkdtemp(prefix="dropjax-xla-"))
_BATCH: dict[str, list[dict]] | None = None  # this process's copy of the batch's reports


def _xla_defaults_batch(session: pytest.Session) -> dict[str, list[dict]]:
    """Runs every selected ``xla_defaults`` test of the session in one subprocess with XLA's
    default compile (one interpreter start and one set of module fixtures for all of them),
    once per session whichever worker asks first; returns the reports by test id."""
    global _BATCH
    if _BATCH is not None:
        return _BATCH
    folder = Path(os.environ["DROPJAX_TEST_XLA_DEFAULTS_DIR"])
    reports = folder / "reports.jsonl"
    with open(folder / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another worker may be running the batch
        if not (folder / "done").exists():
            ids = [i.nodeid for i in session.items if i.get_closest_marker("xla_defaults")]
            env = dict(
                os.environ,
                XLA_FLAGS=_DEFAULT_FLAGS,
                DROPJAX_TEST_USER_XLA_FLAGS=_DEFAULT_FLAGS,
                DROPJAX_TEST_XLA_DEFAULTS_CHILD=str(reports),
            )
            cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist"]
            done = subprocess.run(
                [*cmd, *_plugin_args(session.config), *ids],
                cwd=session.config.rootpath,
                env=env,
                capture_output=True,
                text=True,
            )
            (folder / "output.txt").write_text(done.stdout[-6000:] + done.stderr[-3000:])
            (folder / "done").touch()
    _BATCH = {}
    if reports.exists():
        for line in reports.read_text().splitlines():
            data = json.loads(line)
            _BATCH.setdefault(data["nodeid"], []).append(data)
    return _BATCH


def _plugin_args(config: pytest.Config) -> list[str]:
    """This session's ``-p NAME`` and ``-o OPTION`` arguments, for the batch subprocess."""
    args, out = list(config.invocation_params.args), []
    for flag, value in zip(args[:-1], args[1:], strict=True):
        if flag in ("-p", "-o") and value not in ("no:xdist", "no:cacheprovider"):
            out += [flag, value]
    return out


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function):
    """An ``xla_defaults`` test, when this session compiles cheaply, passes or fails as it did
    in the subprocess that ran it with XLA's default compile (:func:`_xla_defaults_batch`)."""
    if not _ADDED or _CHILD or pyfuncitem.get_closest_marker("xla_defaults") is None:
        return None
    reports = _xla_defaults_batch(pyfuncitem.session).get(pyfuncitem.nodeid)
    where = f"with XLA's default compile ({_DEFAULT_FLAGS})"
    if not reports:  # the subprocess died before reporting this test
        output = Path(os.environ["DROPJAX_TEST_XLA_DEFAULTS_DIR"]) / "output.txt"
        text = output.read_text() if output.exists() else "(no output)"
        pytest.fail(f"not run by the subprocess {where}:\n{text}", pytrace=False)
    for data in reports:
        rep = pyfuncitem.config.hook.pytest_report_from_serializable(
            config=pyfuncitem.config, data=data
        )
        if rep.skipped and rep.when in ("setup", "call"):
            pytest.skip(f"{where}: {rep.longrepr}")
        if rep.failed:
            pytest.fail(f"{where}, {rep.when}:\n{rep.longreprtext}", pytrace=False)
    return True


def pytest_configure(config: pytest.Config) -> None:
    if _CHILD:  # a batch subprocess: keep the reports for its parent
        config.pluginmanager.register(_ReportWriter(config, Path(_CHILD)), "dropjax-batch")


class _ReportWriter:
    def __init__(self, config: pytest.Config, path: Path):
        self.config, self.path = config, path

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        data = self.config.hook.pytest_report_to_serializable(config=self.config, report=report)
        with open(self.path, "a") as f:
            f.write(json.dumps(data) + "\n")
