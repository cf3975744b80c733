"""Part of :mod:`experiments.harness.data` (see there)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from experiments.harness.data._dataset import (
    Dataset,
    DatasetNotFoundError,
    _Split,
    log,
)
from experiments.harness.data._sources import (
    _SPECS,
    _Spec,
    _spec,
)


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
        >>> from experiments.harness import data
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
