"""dropjax benchmarks: ``python -m benchmarks [--quick]``. Timings never appear in tests."""
