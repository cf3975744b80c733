"""Root conftest: the same device and dtype configuration for doctests under dropjax/."""

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
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
_MADE: list[str] = []  # the temporary folders this process made: removed when it ends


def _temporary(name: str, prefix: str) -> None:
    """A temporary folder in ``$name`` unless set (by the user, or by the session's first
    process for its pytest-xdist workers and the subprocesses of tests)."""
    if name not in os.environ:
        os.environ[name] = tempfile.mkdtemp(prefix=prefix)
        _MADE.append(os.environ[name])


# Experiment checkpoints of the test runs go to a throwaway folder, never the user's cache.
_temporary("DROPJAX_RUNS", "dropjax-test-runs-")
# One compilation cache for the whole session, shared by pytest-xdist's workers (they inherit
# this process's environment) and the subprocesses some tests start: a program that two
# tests, two workers or two processes of a test compile is compiled once.
_temporary("JAX_COMPILATION_CACHE_DIR", "dropjax-test-xla-")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

import jax  # noqa: E402

jax.config.update("jax_numpy_dtype_promotion", "strict")

# Fixtures shared by the experiments' tests (data_dir).
pytest_plugins = ["tests.experiments.smoke"]


_CHILD = os.environ.get("DROPJAX_TEST_XLA_DEFAULTS_CHILD", "")  # in a batch: its report file
# One folder per session (workers inherit it): the batch's reports, its output and the file
# that says it has ended.
_temporary("DROPJAX_TEST_XLA_DEFAULTS_DIR", "dropjax-test-batch-")
_FOLDER = Path(os.environ["DROPJAX_TEST_XLA_DEFAULTS_DIR"])
_BATCH: dict[str, list[dict]] | None = None  # this process's copy of the batch's reports
_STARTED: list[subprocess.Popen] = []  # the batch, when this process started it


def pytest_collection_finish(session: pytest.Session) -> None:
    """Starts the batch of ``xla_defaults`` tests in the background as soon as the first
    process (pytest-xdist worker) has collected: it runs beside the other tests, and is
    usually done before a worker reaches one of its tests."""
    if not _ADDED or _CHILD or session.config.option.collectonly:
        return
    ids = [i.nodeid for i in session.items if i.get_closest_marker("xla_defaults")]
    if not ids:
        return
    try:
        os.close(os.open(_FOLDER / "started", os.O_CREAT | os.O_EXCL))
    except FileExistsError:  # another worker started it
        return
    env = dict(
        os.environ,
        XLA_FLAGS=_DEFAULT_FLAGS,
        DROPJAX_TEST_USER_XLA_FLAGS=_DEFAULT_FLAGS,
        DROPJAX_TEST_XLA_DEFAULTS_CHILD=str(_FOLDER / "reports.jsonl"),
    )
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist"]
    cmd = shlex.join([*cmd, *_plugin_args(session.config), *ids])
    with open(_FOLDER / "output.txt", "w") as out:  # "ended" also when pytest crashes
        _STARTED.append(
            subprocess.Popen(
                ["sh", "-c", f"{cmd}; touch {shlex.quote(str(_FOLDER / 'ended'))}"],
                cwd=session.config.rootpath,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        )


def pytest_unconfigure(config: pytest.Config) -> None:
    for proc in _STARTED:  # another worker may be waiting for it (it has usually ended)
        proc.wait()
    for folder in _MADE:  # only the first process made them: every other one has ended
        shutil.rmtree(folder, ignore_errors=True)


def _xla_defaults_batch() -> dict[str, list[dict]]:
    """The reports, by test id, of the subprocess that runs every selected ``xla_defaults``
    test of the session with XLA's default compile (one interpreter start and one set of
    module fixtures for all of them; started by :func:`pytest_collection_finish`), once it
    has ended."""
    global _BATCH
    if _BATCH is None:
        while not (_FOLDER / "ended").exists():
            time.sleep(0.2)
        _BATCH = {}
        reports = _FOLDER / "reports.jsonl"
        for line in reports.read_text().splitlines() if reports.exists() else ():
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
    reports = _xla_defaults_batch().get(pyfuncitem.nodeid)
    where = f"with XLA's default compile ({_DEFAULT_FLAGS})"
    if not reports:  # the subprocess died before reporting this test
        output = _FOLDER / "output.txt"
        text = output.read_text()[-6000:] if output.exists() else "(no output)"
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


def pytest_cmdline_main(config: pytest.Config) -> None:
    """``pytest -n N``: pytest-xdist's work-stealing scheduler, unless ``--dist`` was given.

    The default ``load`` scheduler hands each worker its share of the tests up front; a few
    tests here take 10-40 s, so the session could end on one worker while the other idles.
    Work stealing moves pending tests to the idle worker. (Runs after pytest-xdist's own
    hook, which turns ``-n`` into ``load``, and before pytest's, which runs the session.)"""
    given = any(a == "-d" or a.startswith("--dist") for a in config.invocation_params.args)
    if getattr(config.option, "dist", "no") == "load" and not given:
        config.option.dist = "worksteal"


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
