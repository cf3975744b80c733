"""The tfds data source: a tiny MNIST prepared in ArrayRecord by tfds's own builder, read back
through ``tfds.data_source``, with no TensorFlow import.

The dataset is written in the test (offline) by a ``GeneratorBasedBuilder`` registered under
tfds's own ``mnist`` name and version, so :func:`experiments.harness.data.load_tfds` opens it
exactly as it would open a real ``tfds build mnist --file_format=array_record`` folder.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import PIL.Image as PIL_Image
import pytest

# Optional for users (the `tfds` extra), always installed with the `test` extra: no skip.
import tensorflow_datasets as tfds

from experiments.harness import data

N_TRAIN, N_TEST = 24, 8


def _tensorflow_modules() -> set[str]:
    return {m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow.")}


@pytest.fixture(scope="module", autouse=True)
def _no_tensorflow_import():
    """Whether or not TensorFlow is installed, nothing here may import it: a TF dependency
    fails this check where TF is installed and raises ImportError where it is not."""
    before = _tensorflow_modules()
    tfds.disable_progress_bar()
    yield
    assert _tensorflow_modules() == before, "the tfds source imported TensorFlow"


@pytest.fixture(autouse=True)
def _no_data_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DROPJAX_DATA", raising=False)


def _arrays(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)
    labels = (np.arange(n) * 7 + seed) % 10
    return images, labels.astype(np.int32)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A tfds data_dir holding ``mnist/<version>/`` in ArrayRecord format, and its arrays."""
    version = tfds.builder_cls("mnist").VERSION
    splits = {"train": _arrays(1, N_TRAIN), "test": _arrays(2, N_TEST)}

    class TinyMnist(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        name = "mnist"
        VERSION = version

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict(
                    {
                        "image": tfds.features.Image(shape=(28, 28, 1)),
                        "label": tfds.features.ClassLabel(num_classes=10),
                    }
                ),
                supervised_keys=("image", "label"),
            )

        def _split_generators(self, dl_manager):
            return {name: self._generate_examples(*arrays) for name, arrays in splits.items()}

        def _generate_examples(self, images, labels):
            for i, (image, label) in enumerate(zip(images, labels, strict=True)):
                # PIL images are PNG-encoded by PIL; numpy ones would need tf.image.encode_png.
                yield i, {"image": PIL_Image.fromarray(image[..., 0]), "label": int(label)}

    root = tmp_path_factory.mktemp("tfds")
    TinyMnist(data_dir=str(root), file_format="array_record").download_and_prepare()
    assert list((root / "mnist" / str(version)).glob("mnist-train.array_record-*"))
    return root, splits


def _sorted(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Examples in a canonical order (tfds shuffles records when it writes them)."""
    order = sorted(range(len(labels)), key=lambda i: (int(labels[i]), images[i].tobytes()))
    return images[order], labels[order]


def test_load_tfds_reads_every_example_exactly(prepared) -> None:
    root, splits = prepared
    ds = data.load_tfds("mnist", data_dir=root)
    assert ds.source == "tfds" and ds.name == "mnist" and ds.num_classes == 10
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int32
    for split in ("train", "test"):
        want_x, want_y = _sorted(*splits[split])
        got_x, got_y = _sorted(getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}"))
        assert got_x.shape == want_x.shape
        np.testing.assert_array_equal(got_x, want_x)  # PNG is lossless: bit-exact pixels
        np.testing.assert_array_equal(got_y, want_y)
    assert not _tensorflow_modules()


def test_data_source_routes_load_and_refuses_datasets_tfds_lacks(prepared, tmp_path) -> None:
    root, splits = prepared
    cache = tmp_path / "cache"
    with data.data_source("tfds", root):
        ds = data.load("mnist", data_dir=None)
        with pytest.raises(ValueError, match="no tensorflow-datasets source"):
            data.load("digits")
    assert ds.source == "tfds"
    np.testing.assert_array_equal(np.sort(ds.y_test), np.sort(splits["test"][1]))
    assert not cache.exists()  # tfds is its own cache: nothing written elsewhere
    with pytest.raises(ValueError, match="data source must be one of"):
        with data.data_source("tfrecord"):
            pass


def test_unprepared_dataset_says_how_to_prepare_it(tmp_path: Path) -> None:
    with pytest.raises(data.DatasetNotFoundError, match="--file_format=array_record"):
        data.load_tfds("fashion_mnist", data_dir=tmp_path)
    assert not any(tmp_path.rglob("*.array_record*"))  # nothing downloaded or prepared


def test_cli_flags_select_the_tfds_source(prepared) -> None:
    from experiments.__main__ import _data_and_curves, _parser

    root, _ = prepared
    args = _parser().parse_args(
        ["lenet_mnist", "--data-source", "tfds", "--data-dir", str(root), "--preset", "smoke"]
    )
    with _data_and_curves(args, "lenet_mnist"):
        ds = data.load("mnist")
    assert ds.source == "tfds" and ds.num_train == N_TRAIN
    with pytest.raises(SystemExit):
        _parser().parse_args(["lenet_mnist", "--data-source", "tensorflow"])


def test_automatic_source_reads_a_prepared_array_record_copy(prepared, tmp_path, monkeypatch):
    """``load``'s own order tries tfds's default data dir; without TensorFlow it reads the
    ArrayRecord copy instead of failing over to a download."""
    root, splits = prepared
    # tfds's default data dir ($TFDS_DATA_DIR, read once when tfds is imported):
    monkeypatch.setattr(tfds.core.constants, "DATA_DIR", str(root))
    ds = data.load("mnist", data_dir=tmp_path / "cache")
    assert ds.source == "tfds"
    np.testing.assert_array_equal(np.sort(ds.y_train), np.sort(splits["train"][1]))
    assert data.load("mnist", data_dir=tmp_path / "cache").source == "cache"  # then cached
