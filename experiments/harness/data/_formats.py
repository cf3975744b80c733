"""Part of :mod:`experiments.harness.data` (see there)."""

from __future__ import annotations

import gzip
import importlib
import io
import os
import pickle
import struct
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from experiments.harness.data._dataset import (
    _Split,
)

# (module, name) pairs a pickle may reference: what numpy needs to rebuild arrays and dtypes.
_ALLOWED_GLOBALS = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy._core.numeric", "_frombuffer"),
    }
)


def _numpy_core_module(module: str) -> Any:
    """Imports a ``numpy.core``/``numpy._core`` submodule under this numpy's spelling."""
    suffix = module.split(".", 2)[2]  # "multiarray" or "numeric"
    try:  # numpy >= 2 (importing numpy.core there is deprecated)
        return importlib.import_module(f"numpy._core.{suffix}")
    except ImportError:  # numpy 1.x
        return importlib.import_module(f"numpy.core.{suffix}")


def _latin1_encode(text: str, encoding: str) -> bytes:
    """Stands in for ``_codecs.encode``, which Python 3 protocol-2 pickles use for bytes."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only numpy's array reconstruction globals."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from pickle")
        if module == "numpy":
            return getattr(np, name)
        return getattr(_numpy_core_module(module), name)


def restricted_loads(data: bytes) -> Any:
    """Unpickles trusted-format data that may hold only plain values and numpy arrays.

    Containers, strings, bytes and numbers need no globals; the only globals allowed are
    numpy's ``ndarray``, ``dtype`` and the ``_reconstruct``/``scalar``/``_frombuffer``
    helpers (``numpy.core`` names are mapped to ``numpy._core`` on numpy 2), plus
    ``_codecs.encode`` restricted to latin-1, with which Python 3 writes bytes at protocol 2.
    Python 2 strings are decoded as latin-1, which is how numpy reads Python 2 array pickles.

    Args:
        data: The pickle bytes.

    Returns:
        The unpickled object.

    Raises:
        pickle.UnpicklingError: If the pickle references any other global (for example
            ``os.system``), or is malformed.
    """
    return _NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()


_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path_or_bytes: str | os.PathLike[str] | bytes) -> np.ndarray:
    """Reads an IDX file (the MNIST/Fashion-MNIST format), gzip-compressed or not.

    The header is two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions, then one big-endian uint32 per
    dimension; the data follow in big-endian C order.

    Args:
        path_or_bytes: A file path, or the file's bytes.

    Returns:
        The array, in native byte order.

    Raises:
        ValueError: If the header is invalid or the data size does not match the dimensions.
    """
    if isinstance(path_or_bytes, bytes):
        raw = path_or_bytes
        label = "IDX data"
    else:
        raw = Path(path_or_bytes).read_bytes()
        label = str(path_or_bytes)
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[:2] != b"\x00\x00":
        raise ValueError(f"{label}: not an IDX file (bad magic number)")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{label}: unknown IDX type code 0x{code:02x}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{label}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{label}: IDX dims {shape} need {expected} data bytes, found {len(raw) - header}"
        )
    array = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


_IDX_STEMS = (
    ("train", "images", 3),
    ("train", "labels", 1),
    ("t10k", "images", 3),
    ("t10k", "labels", 1),
)


def _find_idx_files(directory: Path, *, recursive: bool) -> list[Path] | None:
    """Finds the four MNIST-style IDX files (``train-images-idx3-ubyte[.gz]`` etc.)."""
    found = []
    for prefix, kind, dims in _IDX_STEMS:
        pattern = f"{prefix}-{kind}[.-]idx{dims}-ubyte*"
        if recursive:
            matches = sorted(directory.rglob(pattern))
        else:
            matches = sorted(directory.glob(pattern)) + sorted(directory.glob(f"*/{pattern}"))
        matches = [m for m in matches if m.is_file()]
        if not matches:
            return None
        found.append(matches[0])
    return found


def _load_idx_split(
    directory: Path, *, recursive: bool = False, counts: tuple[int, int] | None = None
) -> _Split | None:
    """Loads a 28x28 grayscale IDX dataset from a directory, or None if the files are absent."""
    files = _find_idx_files(directory, recursive=recursive)
    if files is None:
        return None
    x_train, y_train, x_test, y_test = (read_idx(f) for f in files)
    out = []
    for x, y, split in ((x_train, y_train, "train"), (x_test, y_test, "test")):
        if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (28, 28):
            raise ValueError(f"{directory}: {split} images must be uint8 28x28, got {x.shape}")
        if y.ndim != 1 or len(y) != len(x):
            raise ValueError(f"{directory}: {split} labels do not match the {len(x)} images")
        out += [x[..., None], y.astype(np.int32)]
    if counts is not None and (len(out[1]), len(out[3])) != counts:
        raise ValueError(
            f"{directory}: expected {counts[0]}/{counts[1]} train/test examples, "
            f"found {len(out[1])}/{len(out[3])}"
        )
    return out[0], out[1], out[2], out[3]


def _read_members(directory: Path, folder: str, archive: str, members: list[str]) -> list[bytes]:
    """Reads CIFAR batch files from ``directory``, ``directory/folder`` or the .tar.gz archive.

    Returns an empty list when none of these hold the files.
    """
    for base in (directory, directory / folder):
        if all((base / m).is_file() for m in members):
            return [(base / m).read_bytes() for m in members]
    tar_path = directory / archive
    if tar_path.is_file():
        with tarfile.open(tar_path, "r:*") as tar:
            out = []
            for m in members:
                handle = tar.extractfile(f"{folder}/{m}")
                if handle is None:
                    raise ValueError(f"{tar_path}: {folder}/{m} is not a regular file")
                out.append(handle.read())
            return out
    return []


def _parse_cifar_batch(raw: bytes, label_key: str, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Turns one CIFAR python batch (channel-major rows of 3072 bytes) into NHWC images."""
    obj = restricted_loads(raw)
    if not isinstance(obj, dict):
        raise ValueError(f"{what}: expected a dict, got {type(obj).__name__}")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
    if "data" not in batch or label_key not in batch:
        raise ValueError(f"{what}: missing 'data' or {label_key!r} (keys: {sorted(batch)})")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch[label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{what}: data must be uint8 (N, 3072), got {data.dtype} {data.shape}")
    if labels.ndim != 1 or len(labels) != len(data) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{what}: {label_key} must be {len(data)} integers")
    x = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return x, labels.astype(np.int32)


def _load_cifar10_dir(directory: Path) -> _Split | None:
    members = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    blobs = _read_members(directory, "cifar-10-batches-py", "cifar-10-python.tar.gz", members)
    if not blobs:
        return None
    parts = [_parse_cifar_batch(b, "labels", m) for b, m in zip(blobs, members, strict=True)]
    x_train = np.concatenate([p[0] for p in parts[:5]])
    y_train = np.concatenate([p[1] for p in parts[:5]])
    return x_train, y_train, parts[5][0], parts[5][1]


def _load_cifar100_dir(directory: Path) -> _Split | None:
    members = ["train", "test"]
    blobs = _read_members(directory, "cifar-100-python", "cifar-100-python.tar.gz", members)
    if not blobs:
        return None
    (x_train, y_train), (x_test, y_test) = (
        _parse_cifar_batch(b, "fine_labels", m) for b, m in zip(blobs, members, strict=True)
    )
    return x_train, y_train, x_test, y_test


def _read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Reads ``X`` (32, 32, 3, N) and ``y`` (N, 1) from an SVHN .mat file; label 10 -> 0."""
    import scipy.io

    mat = scipy.io.loadmat(path, variable_names=["X", "y"])
    if "X" not in mat or "y" not in mat:
        raise ValueError(f"{path}: expected variables 'X' and 'y'")
    images, labels = np.asarray(mat["X"]), np.asarray(mat["y"]).reshape(-1)
    if images.ndim != 4 or images.shape[:3] != (32, 32, 3) or images.shape[3] != labels.size:
        raise ValueError(f"{path}: X must be (32, 32, 3, N) with N labels, got {images.shape}")
    if images.dtype != np.uint8:
        if images.size and (images.min() < 0 or images.max() > 255 or np.any(images % 1)):
            raise ValueError(f"{path}: X is {images.dtype} but not in 0..255")
        images = images.astype(np.uint8)
    if labels.size and (labels.min() < 1 or labels.max() > 10 or np.any(labels % 1)):
        raise ValueError(f"{path}: y must hold the digits 1..10 (10 meaning 0)")
    x = np.ascontiguousarray(np.transpose(images, (3, 0, 1, 2)))
    y = np.where(labels == 10, 0, labels).astype(np.int32)
    return x, y


def _load_svhn_dir(directory: Path) -> _Split | None:
    for base in (directory, directory / "svhn"):
        train, test = base / "train_32x32.mat", base / "test_32x32.mat"
        if train.is_file() and test.is_file():
            return (*_read_svhn_mat(train), *_read_svhn_mat(test))
    return None
