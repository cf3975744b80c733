"""Tests for the benchmarks' bookkeeping helpers (what a results file says about its run).

Timings themselves are never asserted: they live in benchmarks/results.
"""

from __future__ import annotations

import doctest
import os

from benchmarks import common, profile_step
from benchmarks.common import command_line


def test_command_line_drops_the_conditions_label_and_keeps_settings(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
    if hasattr(os, "sched_getaffinity"):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {1})
        monkeypatch.setattr(os, "cpu_count", lambda: 2)
    argv = ["--threads", "2", "--conditions", "core 1 busy", "--repeats=3", "--conditions=x"]
    line = command_line("benchmarks.torch_vs_harness", argv)
    pinned = "taskset -c 1 " if hasattr(os, "sched_getaffinity") else ""
    assert line == (
        f'XLA_FLAGS="--xla_cpu_multi_thread_eigen=false" {pinned}'
        "python -m benchmarks.torch_vs_harness --threads 2 --repeats=3"
    )


def test_command_line_without_flags_or_pinning(monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    if hasattr(os, "sched_getaffinity"):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
        monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert command_line("benchmarks.profile_step", None) == "python -m benchmarks.profile_step"


_M = "jit(<lambda>)/while/body"
_T = "transpose(jvp(ConvNetQuick))"
_HLO = f"""
ENTRY %main {{
  %ynn_fusion.14 = f32[2]{{0}} fusion(%a), metadata={{op_name="{_M}/jvp(ConvNetQuick)/conv1/conv"}}
  %ynn_fusion.2 = f32[2]{{0}} fusion(%c), metadata={{op_name="{_M}/{_T}/conv2/c" x=1}}
  %pad_fusion.1 = f32[2]{{0}} fusion(%e), metadata={{op_name="{_M}/{_T}/jit(_pad)/pad"}}
  %maximum_fusion = f32[2]{{0}} fusion(%f), metadata={{op_name="{_M}/jvp(ConvNetQuick)/max"}}
  %all-reduce.48 = (f32[2]{{0}}) all-reduce(%g), metadata={{op_name="{_M}/add"}}
  ROOT %add_fusion = f32[2]{{0}} fusion(%h), metadata={{op_name="{_M}/mul"}}
  %no_metadata = f32[2]{{0}} add(%i, %j)
}}
"""


def test_op_layers_reads_pass_and_layer_from_the_op_name_metadata():
    assert profile_step._op_layers(_HLO, "ConvNetQuick") == {
        "ynn_fusion.14": "fwd conv1",
        "ynn_fusion.2": "bwd conv2",
        "pad_fusion.1": "bwd pooling, ReLU",
        "maximum_fusion": "fwd pooling, ReLU",
        "all-reduce.48": "all-reduce",
        "add_fusion": "loss, optimizer, batch",
    }


def test_docstring_examples():
    failures, tried = doctest.testmod(common)
    assert tried > 0 and failures == 0


def test_write_text_atomic_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "table.md"
    path.write_text("old\n")
    common.write_text_atomic(path, "new\n")
    assert path.read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.md"]
