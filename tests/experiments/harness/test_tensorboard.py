"""``--tensorboard DIR``: training curves land in TensorBoard event files that read back.

The event files are parsed here from the format itself (TFRecord framing with masked
CRC-32C, ``Event`` protos), not through the writer library, and their scalars are checked
against the curves the trainer returns in its results JSON.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from experiments.harness import tensorboard


def _event_pb2():
    """tensorboardX's ``Event`` proto module, imported when a test first reads an event file
    (2 s of protobuf imports that every pytest-xdist worker would pay at collection).
    Optional for users (the `tensorboard` extra), always installed with the `test` extra."""
    from tensorboardX.proto import event_pb2

    return event_pb2


def _crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), bit by bit."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def _masked(crc: int) -> int:
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def _read_scalars(folder: Path) -> dict[str, dict[int, float]]:
    """``{tag: {step: value}}`` from every event file in ``folder``, checksums verified."""
    out: dict[str, dict[int, float]] = {}
    files = sorted(folder.glob("events.out.tfevents.*"))
    assert files, f"no event file in {folder}"
    for path in files:
        raw = path.read_bytes()
        pos = 0
        while pos < len(raw):
            header = raw[pos : pos + 8]
            (length,) = struct.unpack("<Q", header)
            (length_crc,) = struct.unpack("<I", raw[pos + 8 : pos + 12])
            assert length_crc == _masked(_crc32c(header))
            record = raw[pos + 12 : pos + 12 + length]
            (data_crc,) = struct.unpack("<I", raw[pos + 12 + length : pos + 16 + length])
            assert data_crc == _masked(_crc32c(record))
            pos += 16 + length
            event = _event_pb2().Event.FromString(record)
            for value in event.summary.value:
                out.setdefault(value.tag, {})[event.step] = value.simple_value
    assert pos == len(raw)
    return out


def test_entries_read_back_per_run_folder(tmp_path: Path) -> None:
    entries = [
        {"step": 5, "lr": 0.1, "train_loss": [1.0, 3.0], "test_acc": [0.5, 0.75]},
        {"step": 10, "lr": 0.01, "train_loss": [0.5, 1.5], "test_acc": [0.625, 1.0]},
    ]
    with tensorboard.writing(tmp_path / "tb") as root:
        for entry in entries:
            tensorboard.log_entry("standard p=0.5", entry)
        tensorboard.log_entry(None, {"step": 1, "train_loss": [2.0]})
    assert sorted(p.name for p in root.iterdir()) == ["run", "standard_p=0.5"]
    got = _read_scalars(root / "standard_p=0.5")
    assert got["lr"] == pytest.approx({5: 0.1, 10: 0.01})
    assert got["train_loss/mean"] == {5: 2.0, 10: 1.0}
    assert got["train_loss/replica_1"] == {5: 3.0, 10: 1.5}
    assert got["test_acc/replica_0"] == {5: 0.5, 10: 0.625}
    assert _read_scalars(root / "run")["train_loss/replica_0"] == {1: 2.0}
    tensorboard.log_entry("after", {"step": 2, "train_loss": [1.0]})  # off again: no folder
    assert not (root / "after").exists()


def test_trainer_curves_equal_the_results_json(tmp_path: Path) -> None:
    from experiments.harness.models import MLP
    from experiments.harness.train import ArrayData, TrainConfig, train

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    cfg = TrainConfig(iterations=6, batch_size=16, learning_rate=0.1, eval_every=2)
    with tensorboard.writing(tmp_path) as root:
        result = train(
            MLP(hidden=(8,), num_classes=2),
            ArrayData(x, y, x, y),
            cfg,
            [0, 1],
            quiet=True,
            desc="mlp",
        )
    got = _read_scalars(root / "mlp")
    for metric in ("train_loss", "train_acc", "test_loss", "test_acc"):
        for entry in result.history:
            step, values = entry["step"], np.asarray(entry[metric])
            assert got[f"{metric}/mean"][step] == pytest.approx(values.mean(), rel=1e-6)
            for r, v in enumerate(values):
                assert got[f"{metric}/replica_{r}"][step] == pytest.approx(v, rel=1e-6)
    assert sorted(got["lr"]) == [2, 4, 6]


def test_cli_flag_writes_under_name_and_preset(tmp_path: Path) -> None:
    from experiments.__main__ import _data_and_curves, _parser

    args = _parser().parse_args(["lenet_mnist", "--tensorboard", str(tmp_path)])
    with _data_and_curves(args, "lenet_mnist"):
        tensorboard.log_entry("arm", {"step": 3, "test_acc": [0.25]})
    folder = tmp_path / "lenet_mnist" / "smoke" / "arm"
    assert _read_scalars(folder)["test_acc/mean"] == {3: 0.25}


def test_docstring_examples():
    import doctest

    from experiments.harness import data

    failures, tried = doctest.testmod(tensorboard, optionflags=doctest.ELLIPSIS)
    assert tried > 0 and failures == 0
    for fn in (data.load_tfds, data.data_source):
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        for test in doctest.DocTestFinder().find(fn, globs={}):
            runner.run(test)
        assert runner.tries > 0 and runner.failures == 0, fn.__name__
