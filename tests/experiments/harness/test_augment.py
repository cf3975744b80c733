"""Tests for experiments.harness.augment (pad-4/crop/flip on device) and its use in the harness.

The references are explicit numpy crops and flips at offsets drawn from the documented keys;
a default (unaugmented) run must keep the checkpoint fingerprint it had before augmentation
existed, because long runs resume from checkpoints and results files tied to it.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments.harness.augment import AUGMENT_STREAM, PadCropFlip, augment_key
from experiments.harness.models import MLP, DropoutConfig, LeNet
from experiments.harness.protocols import RESNET_PAPER
from experiments.harness.train import ArrayData, TrainConfig, Trainer, _fingerprint, make_mesh


def _numpy_reference(x: np.ndarray, key: jax.Array, pad: int, flip: bool) -> np.ndarray:
    """Pad with zeros, cut at the drawn offsets, mirror the drawn examples, one by one."""
    n, h, w, _ = x.shape
    k_row, k_col, k_flip = jax.random.split(key, 3)
    rows = np.asarray(jax.random.randint(k_row, (n,), 0, 2 * pad + 1, jnp.int32))
    cols = np.asarray(jax.random.randint(k_col, (n,), 0, 2 * pad + 1, jnp.int32))
    flips = np.asarray(jax.random.bernoulli(k_flip, 0.5, (n,))) & flip
    out = np.empty_like(x)
    for i in range(n):
        padded = np.zeros((h + 2 * pad, w + 2 * pad, x.shape[-1]), x.dtype)
        padded[pad : pad + h, pad : pad + w] = x[i]
        crop = padded[rows[i] : rows[i] + h, cols[i] : cols[i] + w]
        out[i] = crop[:, ::-1] if flips[i] else crop
    return out, rows, cols, flips


@pytest.mark.parametrize("pad, flip", [(4, True), (2, False)])
def test_pad_crop_flip_matches_numpy(pad, flip):
    x = np.random.default_rng(0).normal(size=(64, 7, 5, 2)).astype(np.float32)  # H != W
    key = jax.random.key(3)
    want, rows, cols, flips = _numpy_reference(x, key, pad, flip)
    got = jax.jit(PadCropFlip(pad, flip))(key, jnp.asarray(x))
    np.testing.assert_array_equal(np.asarray(got), want)
    # The draws cover the whole range, so the comparison tests every kind of cut.
    assert rows.min() == 0 and rows.max() == 2 * pad and cols.min() == 0 and cols.max() == 2 * pad
    assert flips.any() == flip and not flips.all()
    assert not np.array_equal(np.asarray(got), x)


def test_no_pad_no_flip_is_identity_and_bad_input_is_refused():
    x = jnp.arange(2 * 4 * 4 * 1, dtype=jnp.float32).reshape(2, 4, 4, 1)
    np.testing.assert_array_equal(PadCropFlip(0, False)(jax.random.key(0), x), x)
    with pytest.raises(ValueError, match="NHWC"):
        PadCropFlip()(jax.random.key(0), x.reshape(2, 16))
    with pytest.raises(ValueError, match="pad"):
        PadCropFlip(-1)


def _toy(n_train=48, n_test=16, shape=(6, 6, 1), classes=3) -> ArrayData:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n_train + n_test, *shape)).astype(np.float32)
    y = (np.arange(n_train + n_test) % classes).astype(np.int32)
    return ArrayData(x[:n_train], y[:n_train], x[n_train:], y[n_train:], "toy", "synthetic")


_CFG = TrainConfig(iterations=4, batch_size=8, learning_rate=0.1, momentum=0.0, eval_every=2)
_MODEL = MLP(hidden=(8,), num_classes=3)


@pytest.fixture(scope="module")
def augmented():
    data = _toy()
    mesh = make_mesh(jax.devices()[:1])
    trainer = Trainer(_MODEL, data, _CFG, mesh=mesh, augment=PadCropFlip(2))
    return data, trainer, trainer.run([5, 7], quiet=True)


def test_augmented_training_follows_the_key_contract(augmented):
    """Each replica equals a plain loop that augments its batch with the numpy reference at
    ``augment_key(data_key, t)`` (the replica's data key and the step)."""
    data, _, result = augmented
    n, b = data.num_train, _CFG.batch_size
    for r, seed in enumerate([5, 7]):
        init_key, data_key, _ = jax.random.split(jax.random.key(seed), 3)
        params = _MODEL.init({"params": init_key}, jnp.zeros((1, 6, 6, 1)), train=False)["params"]
        loss = lambda p, x, y: optax.softmax_cross_entropy_with_integer_labels(
            _MODEL.apply({"params": p}, x, train=True), y
        ).mean()
        for t in range(_CFG.iterations):
            perm = np.asarray(
                jax.random.permutation(jax.random.fold_in(data_key, t // (n // b)), n)
            )
            idx = perm[(t % (n // b)) * b : (t % (n // b) + 1) * b]
            key = jax.random.fold_in(jax.random.fold_in(data_key, AUGMENT_STREAM), t)
            x, *_ = _numpy_reference(data.x_train[idx], key, 2, True)
            grads = jax.grad(loss)(params, x, data.y_train[idx])
            params = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
        got = jax.tree.map(lambda a: np.asarray(a)[r], result.state.params)
        jax.tree.map(
            lambda a, w: np.testing.assert_allclose(a, w, rtol=1e-5, atol=1e-6), got, params
        )
    # The same keys as the documented helper.
    k = augment_key(jax.random.key(1), 2)
    ref = jax.random.fold_in(jax.random.fold_in(jax.random.key(1), AUGMENT_STREAM), 2)
    np.testing.assert_array_equal(jax.random.key_data(k), jax.random.key_data(ref))


class _Interrupt(Exception):
    pass


def test_augmented_kill_and_resume_equals_uninterrupted(augmented, tmp_path):
    data, trainer, whole = augmented

    def stop(step, entry):
        if step == 2:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        trainer.run([5, 7], checkpoint_dir=tmp_path, callback=stop, quiet=True)
    resumed = trainer.run([5, 7], checkpoint_dir=tmp_path, quiet=True)
    assert resumed.resumed_from == 2 and resumed.history == whole.history
    jax.tree.map(np.testing.assert_array_equal, resumed.state.params, whole.state.params)
    # The same run without augmentation is another run: its checkpoint is refused.
    plain = Trainer(_MODEL, data, _CFG, mesh=trainer.mesh)
    with pytest.raises(ValueError, match="belongs to another run"):
        plain.run([5, 7], checkpoint_dir=tmp_path, quiet=True)
    assert plain.run([5, 7], quiet=True).history != whole.history  # augmentation acted


def test_default_fingerprint_and_config_are_unchanged():
    """Values computed at the harness before augmentation existed (commit 8c51855)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8, 8, 1)).astype(np.float32)
    y = (np.arange(64) % 3).astype(np.int32)
    data = ArrayData(x, y, x[:24], y[:24], "toy", "synthetic")
    cfg = TrainConfig(6, 16, 0.05, lr_boundaries=(3,), weight_decay=5e-4, eval_every=2)
    mlp = MLP(hidden=(8,), num_classes=3, dropout=DropoutConfig("standard", 0.3))
    lenet = LeNet(num_classes=10, dropout=DropoutConfig("augmented", 0.5, 1e-4))
    assert data.fingerprint() == "20951cf0"
    assert _fingerprint(mlp, data, cfg, [5, 7]) == "795c2b45da20f99d"
    assert _fingerprint(lenet, data, RESNET_PAPER, [0, 1, 2, 3]) == "7557855c61c53604"
    assert _fingerprint(mlp, data, cfg, [5, 7], PadCropFlip()) != "795c2b45da20f99d"
    assert dataclasses.asdict(RESNET_PAPER) == {
        "iterations": 640000,
        "batch_size": 128,
        "learning_rate": 0.1,
        "lr_boundaries": (320000, 480000),
        "lr_decay": 0.1,
        "momentum": 0.9,
        "nesterov": True,
        "weight_decay": 0.001,
        "eval_every": 10000,
        "eval_batch_size": 1000,
    }


def test_docstring_examples():
    import doctest

    from experiments.harness import augment

    failures, tried = doctest.testmod(augment, optionflags=doctest.ELLIPSIS)
    assert tried > 0 and failures == 0
