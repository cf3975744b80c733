"""Tests for the experiment harness: models, the CPU convolution, training, CLI, results files.

The training tests share one tiny ResNet (batch norm, convolutions, dropout) trainer per
mesh, so each program compiles once. The root conftest gives 8 host devices.
"""

from __future__ import annotations

import doctest
import functools
import json
import os
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import catalog, protocols, registry, stats
from experiments import models as models_lib
from experiments import train as train_lib
from experiments.__main__ import main
from experiments.models import (
    DROPOUT_KINDS,
    GCN,
    MLP,
    ConvNetQuick,
    DropoutConfig,
    LeNet,
    ResNet,
    make_dropout,
)
from experiments.train import ArrayData, TrainConfig, Trainer, make_mesh


def _toy_data(n_train=64, n_test=24, shape=(8, 8, 1), classes=3, seed=0) -> ArrayData:
    """A learnable synthetic set: labels from a random linear projection of the inputs."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_train + n_test, *shape)).astype(np.float32)
    w = rng.normal(size=(int(np.prod(shape)), classes))
    y = np.argmax(x.reshape(len(x), -1) @ w, -1).astype(np.int32)
    return ArrayData(x[:n_train], y[:n_train], x[n_train:], y[n_train:], "toy", "synthetic")


def _cfg(kind: str) -> DropoutConfig:
    backward = 0.2 if kind.startswith("augmented") else 0.0
    return DropoutConfig(kind, 0.3, backward, block_size=2)


# --------------------------------------------------------------------------- models

_MODELS = {
    "lenet": (lambda cfg: LeNet(dropout=cfg), (2, 28, 28, 1)),
    "convnet_quick": (lambda cfg: ConvNetQuick(dropout=cfg), (2, 32, 32, 3)),
    "resnet": (lambda cfg: ResNet(dropout=cfg, stage_blocks=(1, 1), widths=(4, 8)), (2, 8, 8, 3)),
    "mlp": (lambda cfg: MLP(hidden=(16, 8), input_dropout=cfg, dropout=cfg), (2, 8, 8, 1)),
}


@pytest.mark.parametrize("kind", DROPOUT_KINDS)
@pytest.mark.parametrize("name", sorted(_MODELS))
def test_model_output_shapes(name, kind):
    build, shape = _MODELS[name]
    model = build(_cfg(kind))
    x = jax.random.normal(jax.random.key(0), shape)
    variables = model.init(jax.random.key(1), x, train=False)
    rngs = {"dropout": jax.random.key(2)}
    if kind in ("dropblock", "spatial") and name != "resnet":  # dropout feeds a dense layer
        with pytest.raises(ValueError, match="NHWC feature map"):
            model.apply(variables, x, train=True, rngs=rngs, mutable=["batch_stats"])
        return
    train_out, _ = model.apply(variables, x, train=True, rngs=rngs, mutable=["batch_stats"])
    eval_out = model.apply(variables, x, train=False)
    for out in (train_out, eval_out):
        assert out.shape == (2, 10) and out.dtype == jnp.float32
        assert bool(jnp.isfinite(out).all())
    if kind not in ("none", "backward", "backward_elementwise"):  # forward pass untouched
        assert not np.allclose(train_out, eval_out)  # dropout (or BN in training) acted


@pytest.mark.parametrize(
    "kind", ["none", "standard", "augmented", "augmented_elementwise", "gaussian"]
)
def test_gcn_output_shape(kind):
    senders, receivers = jnp.array([0, 1, 2, 3, 4]), jnp.array([1, 2, 3, 4, 0])
    x = jax.random.normal(jax.random.key(0), (5, 6))
    model = GCN(hidden=8, num_classes=3, dropout=_cfg(kind), edge_rate=0.4)
    variables = model.init(jax.random.key(1), x, senders, receivers)
    out = model.apply(
        variables, x, senders, receivers, train=True, rngs={"dropout": jax.random.key(2)}
    )
    assert out.shape == (5, 3) and bool(jnp.isfinite(out).all())
    assert model.apply(variables, x, senders, receivers).shape == (5, 3)


def test_dropout_config_validates_and_factory_refuses_exact():
    with pytest.raises(ValueError, match="unknown dropout kind"):
        DropoutConfig("bernoulli", 0.5)
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\]"):
        DropoutConfig("standard", 1.5)
    with pytest.raises(ValueError, match="DropDense or DropConv"):
        make_dropout(DropoutConfig("augmented", 0.5, 1e-4))
    assert isinstance(make_dropout(DropoutConfig("standard", 0.0)), models_lib.Identity)


def _lenet_grads(kind: str, backward_rate: float):
    """Initial params, train-mode logits and parameter gradients of LeNet for one kind."""
    x = jax.random.normal(jax.random.key(0), (4, 28, 28, 1))
    y = jnp.array([0, 1, 2, 3])
    model = LeNet(dropout=DropoutConfig(kind, 0.5 if kind != "none" else 0.0, backward_rate))
    params = model.init(jax.random.key(1), x, train=False)["params"]

    def loss(p):
        logits = model.apply({"params": p}, x, train=True, rngs={"dropout": jax.random.key(3)})
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits

    (_, logits), grads = jax.value_and_grad(loss, has_aux=True)(params)
    return params, logits, grads


def test_kinds_are_paired_and_exact_changes_only_the_weight_gradient():
    ref_params, ref_logits, ref_grads = _lenet_grads("standard", 0.0)
    for kind in ("forward", "augmented", "forward_elementwise", "augmented_elementwise"):
        params, logits, _ = _lenet_grads(kind, 0.3)
        jax.tree.map(np.testing.assert_array_equal, params, ref_params)  # same init
        np.testing.assert_array_equal(logits, ref_logits)  # same forward mask
    # Backward dropout: the forward pass is the model without dropout.
    _, none_logits, _ = _lenet_grads("none", 0.0)
    _, back_logits, _ = _lenet_grads("backward", 0.0)
    np.testing.assert_allclose(back_logits, none_logits, rtol=1e-6)
    # With no extra backward rate both augmented forms are standard dropout, gradients too.
    for kind in ("augmented", "augmented_elementwise"):
        _, _, grads = _lenet_grads(kind, 0.0)
        jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5), grads, ref_grads)
    # Eq. 9: the exact form changes the last layer's kernel gradient (it uses h * eps_b),
    # while the error sent back to the earlier layers is the same (W^T delta) * eps_b.
    _, _, elem = _lenet_grads("augmented_elementwise", 0.3)
    _, _, exact = _lenet_grads("augmented", 0.3)
    assert not np.allclose(elem["ip2"]["dense"]["kernel"], exact["ip2"]["dense"]["kernel"])
    np.testing.assert_allclose(
        elem["ip2"]["dense"]["bias"], exact["ip2"]["dense"]["bias"], rtol=1e-6
    )
    np.testing.assert_allclose(
        elem["conv1"]["kernel"], exact["conv1"]["kernel"], rtol=2e-5, atol=1e-7
    )
    assert not np.allclose(elem["conv1"]["kernel"], ref_grads["conv1"]["kernel"])


# --------------------------------------------------------------------------- pooling


def _caffe_pool_loops(x: np.ndarray, kind: str) -> np.ndarray:
    """Caffe's ceil-mode 3x3/2 pooling as explicit loops (the windows clipped at the edge)."""
    n, h, w, c = x.shape
    oh, ow = -(-(h - 3) // 2) + 1, -(-(w - 3) // 2) + 1
    out = np.zeros((n, oh, ow, c), x.dtype)
    for i in range(oh):
        for j in range(ow):
            win = x[:, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3]
            out[:, i, j] = win.max(axis=(1, 2)) if kind == "max" else win.mean(axis=(1, 2))
    return out


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("size", [(32, 32), (28, 28), (7, 7), (8, 5)])
def test_caffe_pool_matches_loops_and_flax_gradient(kind, size):
    x = jax.random.normal(jax.random.key(0), (2, *size, 3))
    out = models_lib.caffe_pool(x, kind)
    np.testing.assert_allclose(out, _caffe_pool_loops(np.asarray(x), kind), rtol=1e-6, atol=1e-6)
    # The gradient equals Flax's pooling with the right padding that gives the ceil size.
    pad = tuple((0, (o - 1) * 2 + 3 - s) for o, s in zip(out.shape[1:3], size, strict=True))
    if kind == "max":
        ref = lambda z: nn.max_pool(z, (3, 3), strides=(2, 2), padding=pad)
    else:
        ref = lambda z: nn.avg_pool(z, (3, 3), (2, 2), padding=pad, count_include_pad=False)
    g = jax.grad(lambda z: jnp.sum(jnp.sin(models_lib.caffe_pool(z, kind))))(x)
    np.testing.assert_allclose(g, jax.grad(lambda z: jnp.sum(jnp.sin(ref(z))))(x), atol=1e-6)


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
    return _toy_data()


@pytest.fixture(scope="module")
def trainer(data) -> Trainer:
    """The tiny ResNet on all 8 devices."""
    assert jax.device_count() == 8
    return Trainer(_TINY, data, _PROTOCOL)


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
    hlo = trainer._executables[("segment", 2, 2)].as_text()
    assert "all-reduce" in hlo


def test_batch_must_divide_device_count(data):
    cfg = TrainConfig(iterations=2, batch_size=12)
    with pytest.raises(ValueError, match="multiple of the number of devices"):
        Trainer(_TINY, data, cfg)


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


# --------------------------------------------------------------------------- CLI, results


def test_cli_list_prints_names_first(capsys):
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    names = set(catalog.experiments())
    assert "lenet_mnist" in names
    assert len(lines) == len(names)
    for line in lines:
        name, description = line.split(maxsplit=1)
        assert name in names and description.strip()


def test_cli_smoke_run_writes_results(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DROPJAX_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("DROPJAX_RUNS", str(tmp_path / "runs"))
    out = tmp_path / "out"
    assert main(["lenet_mnist", "--preset", "smoke", "--quiet", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| 0.5 | 0.9922 | 0.9925 |" in printed  # the paper's Table 3 row, side by side
    path = out / "lenet_mnist" / "smoke.json"
    payload = json.loads(path.read_text())
    env = payload["environment"]
    for key in ("device_kind", "device_count", "jax", "flax", "git_commit", "python"):
        assert key in env
    assert env["device_count"] == 8 and payload["wall_time_s"] > 0
    results = payload["results"]
    assert results["seeds"] == [0, 1]
    assert results["data"]["name"] == "digits" and results["data"]["source"]
    assert results["data"]["input_shape"] == [28, 28, 1]
    for arm in ("standard", "augmented", "augmented_elementwise"):
        replicas = results["arms"][arm]["0.5"]
        assert len(replicas["final"]["test_acc"]) == 2
        assert [c["step"] for c in replicas["curves"]] == [10, 20]
    comparison = results["comparisons"]["augmented"]["0.5"]
    assert comparison["verdict"] in ("reproduced", "refuted", "contradicted", "inconclusive")
    assert comparison["coverage"] == pytest.approx(20 / 12000)
    assert comparison["headline"] in ("indicative", "inconclusive")  # 0.2 % of the protocol
    assert payload["status"] == "complete" and len(payload["grid"]["cells"]) == 3
    for cell in payload["grid"]["cells"].values():
        assert cell["environment"]["git_commit"] == env["git_commit"]
    assert (out / "lenet_mnist" / "smoke_accuracy_loss.png").stat().st_size > 0
    assert not [p for p in (tmp_path / "runs").rglob("*") if p.is_file()]  # no checkpoint left


def test_results_write_is_atomic(tmp_path):
    path = tmp_path / "exp" / "smoke.json"
    registry.write_json_atomic(path, {"ok": 1})
    with pytest.raises(TypeError, match="not JSON serialisable"):
        registry.write_json_atomic(path, {"big": list(range(10_000)), "bad": object()})
    assert json.loads(path.read_text()) == {"ok": 1}  # the old file, untouched
    assert sorted(os.listdir(path.parent)) == ["smoke.json"]  # no temp file left behind
    fresh = tmp_path / "other" / "quick.json"
    with pytest.raises(TypeError):
        registry.write_json_atomic(fresh, {"bad": object()})
    assert not fresh.exists() and os.listdir(fresh.parent) == []


@pytest.mark.parametrize("module", [models_lib, train_lib, protocols, stats])
def test_docstring_examples(module):
    failures, tried = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert tried > 0 and failures == 0


def test_results_path_layout():
    assert registry.results_path(Path("o"), "lenet_mnist", "quick") == Path(
        "o/lenet_mnist/quick.json"
    )


def test_interrupted_grid_resumes_to_the_same_numbers(tmp_path, monkeypatch, capsys):
    """A run stopped by its time budget mid-cell, then rerun, ends where an uninterrupted
    run ends: finished cells are kept, the cell in flight resumes from its checkpoint."""
    from experiments.cells import Budget, BudgetExhausted

    monkeypatch.setenv("DROPJAX_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("DROPJAX_RUNS", str(tmp_path / "runs"))
    args = ["lenet_mnist", "--preset", "smoke", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    whole = json.loads((tmp_path / "whole" / "lenet_mnist" / "smoke.json").read_text())

    calls = {"n": 0}

    def stop_in_second_cell(self, step, entry):
        calls["n"] += 1
        if calls["n"] == 3:  # cell 1 has two segments; stop after cell 2's first checkpoint
            raise BudgetExhausted("simulated end of session")

    out = tmp_path / "split"
    with monkeypatch.context() as m:
        m.setattr(Budget, "callback", stop_in_second_cell)
        assert main([*args, "--out", str(out)]) == 75
    partial = json.loads((out / "lenet_mnist" / "smoke.json").read_text())
    assert partial["status"] == "partial" and partial["cells_done"] == 1
    assert any(p.is_file() for p in (tmp_path / "runs").rglob("*"))  # the checkpoint
    capsys.readouterr()
    assert main([*args, "--out", str(out)]) == 0
    resumed = json.loads((out / "lenet_mnist" / "smoke.json").read_text())
    assert resumed["status"] == "complete"
    for cell_id, cell in whole["grid"]["cells"].items():
        again = resumed["grid"]["cells"][cell_id]["result"]
        assert again["final"] == cell["result"]["final"], cell_id
        assert [c["test_acc"] for c in again["curves"]] == [
            c["test_acc"] for c in cell["result"]["curves"]
        ]
    assert (
        resumed["grid"]["cells"]["rate=0.5/arm=augmented/seeds=0-1"]["result"]["resumed_from"] == 10
    )
    assert resumed["results"]["pooled"] == whole["results"]["pooled"]

    # --forget removes finished cells (and only those); the next run trains them again,
    # to the same numbers.
    capsys.readouterr()
    assert main([*args, "--out", str(out), "--forget", "arm=standard/"]) == 0
    assert "removed 1 cells" in capsys.readouterr().out
    forgot = json.loads((out / "lenet_mnist" / "smoke.json").read_text())
    assert forgot["status"] == "partial" and forgot["cells_done"] == 2
    assert (
        forgot["cells_total"] == 3
        and "rate=0.5/arm=standard/seeds=0-1" not in forgot["grid"]["cells"]
    )
    assert main([*args, "--out", str(out)]) == 0
    again = json.loads((out / "lenet_mnist" / "smoke.json").read_text())
    assert again["status"] == "complete"
    assert (
        again["grid"]["cells"]["rate=0.5/arm=standard/seeds=0-1"]["result"]["final"]
        == (whole["grid"]["cells"]["rate=0.5/arm=standard/seeds=0-1"]["result"]["final"])
    )
    with pytest.raises(SystemExit):  # no such results file: a usage error that says so
        main([*args, "--out", str(tmp_path / "none"), "--forget", "x"])
    assert "no results file" in capsys.readouterr().err


def test_a_grid_refuses_cells_of_another_configuration(tmp_path):
    from experiments.cells import Cell, Grid

    path = tmp_path / "x" / "paper.json"
    grid = Grid("x", "paper", path, {"lr": 0.1}, checkpoint_root=tmp_path / "ck", quiet=True)
    grid.run([Cell("a", {"v": 1})], lambda cell, ckpt, budget: {"value": cell.params["v"]})
    assert json.loads(path.read_text())["grid"]["cells"]["a"]["result"] == {"value": 1}
    with pytest.raises(ValueError, match="another configuration"):
        Grid("x", "paper", path, {"lr": 0.2}, checkpoint_root=tmp_path / "ck")
    again = Grid("x", "paper", path, {"lr": 0.1}, checkpoint_root=tmp_path / "ck", quiet=True)
    ran = []
    again.run(
        [Cell("a", {"v": 1}), Cell("b", {"v": 2})],
        lambda cell, ckpt, budget: ran.append(cell.id) or {"value": cell.params["v"]},
    )
    assert ran == ["b"]  # the finished cell is skipped


def test_two_processes_split_a_grid_into_one_results_file(tmp_path):
    """Disjoint --cells patterns, same results file: each run merges the other's cells, and
    a run whose selection is done while others remain says so (resumable stop)."""
    from experiments.cells import BudgetExhausted, Cell, Grid

    path = tmp_path / "x" / "paper.json"
    cells = [Cell(f"arm={a}", {"a": a}) for a in ("standard", "augmented")]

    def grid(only):
        return Grid("x", "paper", path, {"lr": 1}, checkpoint_root=tmp_path / "c", only=only,
                    quiet=True)  # fmt: skip

    first, second = grid("standard"), grid("augmented")  # both opened before either ran
    with pytest.raises(BudgetExhausted, match="other cells"):
        first.run(cells, lambda cell, ckpt, budget: {"v": cell.params["a"]})
    done = second.run(cells, lambda cell, ckpt, budget: {"v": cell.params["a"]})
    assert done == {"arm=standard": {"v": "standard"}, "arm=augmented": {"v": "augmented"}}
    on_disk = json.loads(path.read_text())["grid"]["cells"]
    assert set(on_disk) == {"arm=standard", "arm=augmented"}  # neither write lost the other
