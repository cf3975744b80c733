"""experiments.harness.train: replicas, devices and resume give the numbers of plain
runs."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments.harness import train as train_module
from experiments.harness.models import (
    DropoutConfig,
    ResNet,
)
from experiments.harness.train import ArrayData, TrainConfig, Trainer, make_mesh
from tests.experiments.harness.toy import toy_data

# --------------------------------------------------------------------------- training

_TINY = ResNet(
    num_classes=3, dropout=DropoutConfig("standard", 0.2), stage_blocks=(1,), widths=(4,)
)
_PROTOCOL = TrainConfig(
    iterations=6,
    batch_size=16,
    learning_rate=0.05,
    lr_boundaries=(3,),
    momentum=0.9,
    weight_decay=5e-4,
    eval_every=2,
    eval_batch_size=8,
)


@pytest.fixture(scope="module")
def data() -> ArrayData:
    return toy_data()


@pytest.fixture(scope="module")
def trainer(data) -> Trainer:
    """The tiny ResNet on all 8 devices, every batch split over them."""
    assert jax.device_count() == 8
    return Trainer(_TINY, data, _PROTOCOL, split="batch")


@pytest.fixture(scope="module")
def single(data) -> Trainer:
    """The same on one device."""
    return Trainer(_TINY, data, _PROTOCOL, mesh=make_mesh(jax.devices()[:1]))


@pytest.fixture(scope="module")
def pair(trainer):
    """Seeds 5 and 7 as two replicas on 8 devices."""
    return trainer.run([5, 7], quiet=True)


@pytest.fixture(scope="module")
def pair_single(single):
    """The same on one device."""
    return single.run([5, 7], quiet=True)


def _plain_run(model: nn.Module, data: ArrayData, seed: int):
    """A plain optax loop, one jitted step at a time, following the documented key contract."""
    init_key, data_key, dropout_key = jax.random.split(jax.random.key(seed), 3)
    v = model.init({"params": init_key}, jnp.zeros((1, *data.x_train.shape[1:])), train=False)
    params, batch_stats = v["params"], v["batch_stats"]
    schedule = lambda count: jnp.where(count >= 3, 0.005, 0.05)  # lr 0.05, x0.1 at step 3
    tx = optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(schedule, momentum=0.9))
    opt_state = tx.init(params)

    @jax.jit
    def step(params, batch_stats, opt_state, x, y, key):
        def loss(p):
            logits, upd = model.apply(
                {"params": p, "batch_stats": batch_stats},
                x,
                train=True,
                rngs={"dropout": key},
                mutable=["batch_stats"],
            )
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), upd

        (_, upd), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), upd["batch_stats"], opt_state

    n, b = len(data.y_train), 16
    for t in range(6):
        perm = np.asarray(jax.random.permutation(jax.random.fold_in(data_key, t // (n // b)), n))
        idx = perm[(t % (n // b)) * b : (t % (n // b) + 1) * b]
        key = jax.random.fold_in(dropout_key, t)
        params, batch_stats, opt_state = step(
            params, batch_stats, opt_state, data.x_train[idx], data.y_train[idx], key
        )
    logits = model.apply({"params": params, "batch_stats": batch_stats}, data.x_test)
    acc = float(np.mean(np.argmax(logits, -1) == data.y_test))
    loss = float(optax.softmax_cross_entropy_with_integer_labels(logits, data.y_test).mean())
    return params, acc, loss


def _replica(tree, r):
    return jax.tree.map(lambda a: np.asarray(a)[r], tree)


def test_one_replica_equals_plain_run(single, data):
    result = single.run([5], quiet=True)
    params, acc, loss = _plain_run(_TINY, data, 5)
    close = functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-5)
    jax.tree.map(close, _replica(result.state.params, 0), params)
    assert result.final["test_acc"][0] == pytest.approx(acc, abs=1e-6)
    assert result.final["test_loss"][0] == pytest.approx(loss, rel=1e-4)
    assert [e["step"] for e in result.history] == [2, 4, 6]
    assert [e["lr"] for e in result.history] == pytest.approx([0.05, 0.005, 0.005])


@pytest.mark.parametrize("replica_loop", [True, False], ids=["lax.map", "vmap"])
def test_replicas_equal_separate_runs(data, single, replica_loop):
    """R replicas stepped together (mapped or vmapped) equal R one-seed runs."""
    assert single.replica_loop  # the CPU default
    both = Trainer(_TINY, data, _PROTOCOL, mesh=single.mesh, replica_loop=replica_loop)
    pair_single = both.run([5, 7], quiet=True)
    close = functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-5)
    for r, seed in enumerate([5, 7]):
        alone = single.run([seed], quiet=True)
        jax.tree.map(close, _replica(pair_single.state.params, r), _replica(alone.state.params, 0))
        jax.tree.map(
            close, _replica(pair_single.state.batch_stats, r), _replica(alone.state.batch_stats, 0)
        )
        for got, want in zip(pair_single.history, alone.history, strict=True):
            for metric in ("train_loss", "train_acc", "test_loss", "test_acc"):
                assert got[metric][r] == pytest.approx(want[metric][0], rel=1e-4, abs=1e-5)
    # The replicas differ from each other (different seeds), so the comparison has teeth.
    losses = pair_single.history[-1]["train_loss"]
    assert not np.isclose(losses[0], losses[1])


def test_eight_devices_match_one_device(trainer, pair, pair_single):
    assert trainer.mesh.devices.size == 8 and pair_single is not None
    close = functools.partial(np.testing.assert_allclose, rtol=2e-4, atol=2e-5)
    jax.tree.map(close, pair.state.params, pair_single.state.params)
    jax.tree.map(close, pair.state.batch_stats, pair_single.state.batch_stats)
    for got, want in zip(pair.history, pair_single.history, strict=True):
        for metric in ("train_loss", "train_acc", "test_loss", "test_acc"):
            close(got[metric], want[metric])
    # The 8-device program is data parallel: gradients are all-reduced across devices.
    hlo = trainer._executables[("segment", 2, 2, 1)].as_text()
    assert "all-reduce" in hlo


def test_batch_must_divide_device_count(data):
    cfg = TrainConfig(iterations=2, batch_size=12)
    with pytest.raises(ValueError, match="multiple of the number of devices"):
        Trainer(_TINY, data, cfg, split="batch")
    Trainer(_TINY, data, cfg)  # the replica split keeps whole batches: any size


class _Interrupt(Exception):
    pass


def test_kill_and_resume_equals_uninterrupted(trainer, pair, tmp_path):
    def stop_after_two_segments(step, entry):
        if step == 4:
            raise _Interrupt

    ckpt = tmp_path / "ckpt"
    with pytest.raises(_Interrupt):
        trainer.run([5, 7], checkpoint_dir=ckpt, callback=stop_after_two_segments, quiet=True)
    resumed = trainer.run([5, 7], checkpoint_dir=ckpt, quiet=True)
    assert resumed.resumed_from == 4
    assert resumed.history == pair.history  # curves: restored part and continued part
    for tree in ("params", "batch_stats", "opt_state"):
        jax.tree.map(
            np.testing.assert_array_equal, getattr(resumed.state, tree), getattr(pair.state, tree)
        )
    # A checkpoint from another run is refused, not silently resumed.
    with pytest.raises(ValueError, match="belongs to another run"):
        trainer.run([5, 8], checkpoint_dir=ckpt, quiet=True)


# --------------------------------------------------------------------------- replica split


@pytest.fixture(scope="module")
def four_on_one(data):
    """Four replicas on one device: the reference the replica split must equal bit for bit."""
    return Trainer(_TINY, data, _PROTOCOL, devices=jax.devices()[:1]).run([5, 7, 9, 11], quiet=True)


@pytest.mark.xla_defaults  # bit identity of two programs: a property of XLA's default compile
@pytest.mark.parametrize("devices", [2, 4])
def test_replica_split_is_bit_identical_to_one_device(data, four_on_one, devices):
    """Each device runs whole replicas with the one-replica program: the curves and the final
    state do not depend on how many devices share them."""
    trainer = Trainer(_TINY, data, _PROTOCOL, devices=jax.devices()[:devices])
    result = trainer.run([5, 7, 9, 11], quiet=True)
    assert result.timing["split"] == "replicas" and result.timing["devices"] == devices
    assert four_on_one.timing["split"] == "one device"
    assert result.history == four_on_one.history
    jax.tree.map(np.testing.assert_array_equal, result.state, four_on_one.state)
    # The program really is split: each device holds R / devices replicas of every parameter.
    kernel = jax.tree.leaves(result.state.params)[0]
    assert {s.data.shape[0] for s in kernel.addressable_shards} == {4 // devices}


def test_replicas_that_do_not_divide_use_fewer_devices(data, four_on_one, capsys, monkeypatch):
    """Three replicas on two devices: one device (3 is prime), said once, same numbers."""
    # Said once per process: another test in this worker may already have said it.
    monkeypatch.setattr(train_module, "_SAID", set())
    trainer = Trainer(_TINY, data, _PROTOCOL, devices=jax.devices()[:2])
    # quiet=False: the default is quiet when CI is set, and quiet runs say nothing
    result = trainer.run([5, 7, 9], quiet=False)
    assert result.timing["devices"] == 1
    assert "3 replicas over 2 devices: 1 used" in capsys.readouterr().err
    trainer.run([5, 7, 9], quiet=False)
    assert "replicas over" not in capsys.readouterr().err
    for got, want in zip(result.history, four_on_one.history, strict=True):
        assert got["test_acc"] == want["test_acc"][:3]
    with pytest.raises(ValueError, match="split must be one of"):
        Trainer(_TINY, data, _PROTOCOL, split="seeds")


@pytest.mark.xla_defaults
def test_resume_on_another_device_count(data, four_on_one, tmp_path):
    """Interrupted on two devices, resumed on four: the uninterrupted one-device run."""

    def stop(step, entry):
        if step == 4:
            raise _Interrupt

    ckpt = tmp_path / "ckpt"
    seeds = [5, 7, 9, 11]
    with pytest.raises(_Interrupt):
        Trainer(_TINY, data, _PROTOCOL, devices=jax.devices()[:2]).run(
            seeds, checkpoint_dir=ckpt, callback=stop, quiet=True
        )
    resumed = Trainer(_TINY, data, _PROTOCOL, devices=jax.devices()[:4]).run(
        seeds, checkpoint_dir=ckpt, quiet=True
    )
    assert resumed.resumed_from == 4 and resumed.history == four_on_one.history
    jax.tree.map(np.testing.assert_array_equal, resumed.state, four_on_one.state)
