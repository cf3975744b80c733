"""Root conftest: the same device and dtype configuration for doctests under dropjax/."""

import os
import tempfile

# The tests need 8 host devices: the flag is appended to a user's own XLA_FLAGS (e.g.
# --xla_cpu_max_isa=AVX2 in .ci/run), never dropped for them; a device count the user set
# wins.
#
# Compiling dominates the suite's time on CPU, so the tests compile with LLVM's optimisation
# level 0 (XLA's default is 3): about a third less time on a model's training step. The
# numerics-sensitive tests run again at level 3 in .ci/run; a level the user set wins.
_flags = os.environ.get("XLA_FLAGS", "")
if "--xla_force_host_platform_device_count" not in _flags:
    _flags += " --xla_force_host_platform_device_count=8"
if "--xla_backend_optimization_level" not in _flags:
    _flags += " --xla_backend_optimization_level=0"
os.environ["XLA_FLAGS"] = _flags.strip()
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
