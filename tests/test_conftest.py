"""The root conftest's ``xla_defaults`` tests: under the suite's cheap compile they run together
in one subprocess with XLA's default compile, and what fails there fails here."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MARKED = """
import os
from pathlib import Path

import pytest


def _flags():
    Path(f"pid-{os.getpid()}").touch()  # which process ran the test
    return os.environ["XLA_FLAGS"].split()


@pytest.mark.xla_defaults
def test_sees_xla_defaults():
    flags = _flags()
    assert "--xla_backend_optimization_level=3" in flags
    assert "--xla_cpu_use_fusion_emitters=true" in flags
    assert "--xla_force_host_platform_device_count=8" in flags


@pytest.mark.xla_defaults
def test_fails_there():
    assert "--xla_backend_optimization_level=0" in _flags()


def test_unmarked_compiles_cheaply():
    assert "--xla_backend_optimization_level=0" in _flags()
"""


def test_marked_tests_run_in_one_subprocess_with_xla_defaults_and_fail_here(tmp_path):
    (tmp_path / "test_marked.py").write_text(textwrap.dedent(MARKED))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DROPJAX_TEST_")}
    # a fresh session: the user's own flags (none here) instead of this session's
    env.update(XLA_FLAGS=os.environ["DROPJAX_TEST_USER_XLA_FLAGS"], PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [
            sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider",
            "-p", "no:xdist", "-o", "markers=xla_defaults: XLA's default compile", "-rA",
            "test_marked.py",
        ],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "PASSED test_marked.py::test_sees_xla_defaults" in out
    assert "PASSED test_marked.py::test_unmarked_compiles_cheaply" in out
    assert "FAILED test_marked.py::test_fails_there" in out
    assert "with XLA's default compile" in out and "assert '--xla_backend_opt" in out
    # the two marked tests ran in one process, the unmarked one in this session's
    assert len(list(tmp_path.glob("pid-*"))) == 2, out


def test_xdist_runs_steal_work_unless_a_dist_mode_is_given():
    """``pytest -n N`` (which pytest-xdist turns into ``--dist load``) becomes work stealing;
    a ``--dist`` the user gave, or no xdist at all, is left alone."""
    import importlib.util
    import types

    spec = importlib.util.spec_from_file_location("root_conftest", ROOT / "conftest.py")
    assert spec is not None and spec.loader is not None
    conftest = sys.modules.get("conftest") or importlib.util.module_from_spec(spec)
    if not hasattr(conftest, "pytest_cmdline_main"):
        spec.loader.exec_module(conftest)

    def dist_after(args, dist):
        config = types.SimpleNamespace(
            option=types.SimpleNamespace(dist=dist),
            invocation_params=types.SimpleNamespace(args=tuple(args)),
        )
        conftest.pytest_cmdline_main(config)
        return config.option.dist

    assert dist_after(["-n", "2"], "load") == "worksteal"
    assert dist_after(["-n", "2", "--dist", "load"], "load") == "load"
    assert dist_after(["-n", "2", "--dist=load"], "load") == "load"
    assert dist_after(["-d", "--tx", "popen"], "load") == "load"
    assert dist_after([], "no") == "no"
    assert dist_after(["-n", "2", "--dist", "loadfile"], "loadfile") == "loadfile"
