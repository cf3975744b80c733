"""Root conftest: the same device and dtype configuration for doctests under dropjax/."""

import os
import tempfile

# The tests need 8 host devices: the flag is appended to a user's own XLA_FLAGS (e.g.
# --xla_cpu_max_isa=AVX2 in .ci/run), never dropped for them; a device count the user set
# wins.
_flags = os.environ.get("XLA_FLAGS", "")
if "--xla_force_host_platform_device_count" not in _flags:
    os.environ["XLA_FLAGS"] = f"{_flags} --xla_force_host_platform_device_count=8".strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Experiment checkpoints of the test runs go to a throwaway folder, never the user's cache.
os.environ.setdefault("DROPJAX_RUNS", tempfile.mkdtemp(prefix="dropjax-test-runs-"))

import jax  # noqa: E402

jax.config.update("jax_numpy_dtype_promotion", "strict")

# Fixtures shared by the experiments' tests (data_dir).
pytest_plugins = ["tests.experiments.smoke"]
