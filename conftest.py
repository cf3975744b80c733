"""Root conftest: the same device and dtype configuration for doctests under dropjax/."""

import os
import subprocess
import sys
import tempfile

import pytest

# The tests need 8 host devices: the flag is appended to a user's own XLA_FLAGS (e.g.
# --xla_cpu_max_isa=AVX2 in .ci/run), never dropped for them; a device count the user set
# wins.
#
# Compiling dominates the suite's time on CPU (about 60 % of it is XLA's backend compile), so
# the tests compile cheaply: XLA:CPU's older elemental fusion emitters instead of its MLIR
# fusion emitters (about half the compile time), LLVM's optimisation level 0 (XLA's default
# is 3) and without LLVM's expensive passes. The numerics-sensitive tests run again with
# XLA's defaults in .ci/run; a setting the user gave wins.
#
# Tests marked ``xla_defaults`` assert what holds for XLA's default compile (bit identity
# across two programs, e.g. the harness's replica split against one device): under the cheap
# settings they run in a subprocess with the user's flags and XLA's defaults (see
# pytest_pyfunc_call below).
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


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """Runs an ``xla_defaults`` test in a subprocess with XLA's default compile when this
    session compiles cheaply (see the top of this file); else in this process."""
    if not _ADDED or pyfuncitem.get_closest_marker("xla_defaults") is None:
        return None
    if os.environ.get("DROPJAX_TEST_XLA_DEFAULTS_CHILD"):  # never a subprocess of a subprocess
        return None
    env = dict(
        os.environ,
        XLA_FLAGS=_DEFAULT_FLAGS,
        DROPJAX_TEST_USER_XLA_FLAGS=_DEFAULT_FLAGS,
        DROPJAX_TEST_XLA_DEFAULTS_CHILD="1",
    )
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist"]
    done = subprocess.run(
        [*cmd, pyfuncitem.nodeid],
        cwd=pyfuncitem.config.rootpath,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.fail(
            f"with XLA's default compile ({_DEFAULT_FLAGS}):\n" + done.stdout[-6000:],
            pytrace=False,
        )
    return True
