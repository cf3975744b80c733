"""Root conftest: the same device and dtype configuration for doctests under dropjax/."""

import os
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Experiment checkpoints of the test runs go to a throwaway folder, never the user's cache.
os.environ.setdefault("DROPJAX_RUNS", tempfile.mkdtemp(prefix="dropjax-test-runs-"))

import jax  # noqa: E402

jax.config.update("jax_numpy_dtype_promotion", "strict")

# Fixtures shared by the experiments' tests (data_dir).
pytest_plugins = ["tests.smoke"]
