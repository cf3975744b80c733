"""Data recipes shared by several claims: a dataset prepared the way a model family sees it.

The harness's data code (:mod:`experiments.harness.data`) loads raw arrays; these recipes turn them
into :class:`experiments.harness.train.ArrayData` for a model family, so that claims share a recipe
by importing it from here, never from each other.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from experiments.harness import data as data_lib
from experiments.harness.train import ArrayData

__all__ = ["GRAY28", "convnet_images", "flat_images", "lenet_images", "upsample_digits"]

GRAY28 = ("mnist", "fashion_mnist", "digits")
"""The datasets :func:`lenet_images` accepts (28x28 grey, or digits upsampled to it)."""


def _source(ds: data_lib.Dataset) -> str:
    return ds.source if ds.source == ds.origin else f"{ds.source} (origin: {ds.origin})"


def upsample_digits(x: np.ndarray) -> np.ndarray:
    """8x8 digits -> 28x28: 3x pixel repetition (24x24), then 2 pixels of zero padding.

    Examples:
      >>> import numpy as np
      >>> from experiments.harness.recipes import upsample_digits
      >>> upsample_digits(np.ones((1, 8, 8, 1))).shape
      (1, 28, 28, 1)
    """
    big = x.repeat(3, axis=1).repeat(3, axis=2)
    return np.pad(big, ((0, 0), (2, 2), (2, 2), (0, 0)))


def lenet_images(name: str) -> ArrayData:
    """A 28x28 grayscale dataset for LeNet, scaled by 1/256 (Caffe's LeNet input scale).

    Args:
      name: ``mnist``, ``fashion_mnist`` or ``digits`` (upsampled to 28x28).

    Returns:
      The arrays, with the loader's source recorded.

    Raises:
      ValueError: a dataset that is not 28x28 grayscale (or digits).
    """
    ds = data_lib.load(name)
    if ds.name not in GRAY28:
        raise ValueError(f"LeNet needs 28x28 grayscale images: one of {GRAY28}; got {name!r}")
    notes = "uint8 / 256"
    if ds.name == "digits":
        ds = dataclasses.replace(
            ds, x_train=upsample_digits(ds.x_train), x_test=upsample_digits(ds.x_test)
        )
        notes = "8x8 digits upsampled 3x (pixel repetition) and zero-padded to 28x28; " + notes
    p = data_lib.preprocess(ds, scale=1 / 256)
    return ArrayData(p.x_train, p.y_train, p.x_test, p.y_test, ds.name, _source(ds), notes)


def flat_images(name: str, train_size: int | None = None) -> ArrayData:
    """A flattened image dataset scaled to [0, 1] (permutation-invariant: no image prior);
    with ``train_size``, only the first ``train_size`` training images (the test set whole)."""
    ds = data_lib.load(name)
    p = data_lib.preprocess(ds, flatten=True)
    notes = "uint8 / 255, flattened"
    x, y = p.x_train, p.y_train
    if train_size is not None and train_size < len(y):
        x, y = x[:train_size], y[:train_size]
        notes += f"; the first {train_size} training images"
    return ArrayData(x, y, p.x_test, p.y_test, ds.name, _source(ds), notes)


def convnet_images(
    name: str, model: str, test_subset: int | None = None, train_subset: int | None = None
) -> ArrayData:
    """A dataset prepared as the paper prepares it for ``model``.

    ConvNet-Quick sees raw pixel values (0..255) minus the per-channel training mean
    (Caffe's ``cifar10_quick`` has no input scaling); ResNets, and the smoke runs' MLP, see
    pixels scaled to [0, 1] minus the per-channel training mean. Fashion-MNIST stays 28x28
    (ConvNet-Quick's Caffe-style pooling works at any size: 28 -> 14 -> 7 -> 3 instead of
    CIFAR's 32 -> 16 -> 8 -> 4).

    Args:
      name: a :func:`experiments.harness.data.load` name.
      model: ``convnet_quick`` or a ResNet name.
      test_subset: keep only the first ``test_subset`` test images.
      train_subset: train on the first ``train_subset`` training images only (the training
        mean is then that subset's: what the model sees).

    Raises:
      DatasetNotFoundError: the dataset is not available here (the message says how to get it).
    """
    ds = data_lib.load(name)
    notes = []
    if train_subset is not None and train_subset < len(ds.y_train):
        full = len(ds.y_train)
        ds = dataclasses.replace(
            ds, x_train=ds.x_train[:train_subset], y_train=ds.y_train[:train_subset]
        )
        notes.append(f"trained on the first {train_subset} of {full} training images")
    convnet = model == "convnet_quick"
    p = data_lib.preprocess(ds, scale=1.0 if convnet else 1 / 255, mean_subtract=True)
    notes.append(
        "raw pixels 0..255 minus the per-channel training mean"
        if convnet
        else "pixels / 255 minus the per-channel training mean"
    )
    x_test, y_test = p.x_test, p.y_test
    if test_subset is not None and test_subset < len(y_test):
        x_test, y_test = x_test[:test_subset], y_test[:test_subset]
        notes.append(f"evaluated on the first {test_subset} of {len(p.y_test)} test images")
    return ArrayData(p.x_train, p.y_train, x_test, y_test, ds.name, _source(ds), "; ".join(notes))
