"""Part of :mod:`experiments.harness.train` (see there)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import zlib
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding

from experiments.harness.augment import PadCropFlip


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The optimisation protocol.

    Attributes:
      iterations: number of SGD steps.
      batch_size: examples per step (a multiple of the device count).
      learning_rate: initial learning rate.
      lr_boundaries: iteration counts at which the learning rate is multiplied by
        ``lr_decay`` (Caffe's ``multistep`` policy: step ``t >= boundary`` uses the new rate).
      lr_decay: the factor applied at each boundary.
      momentum: SGD momentum (0 for plain SGD).
      nesterov: Nesterov momentum.
      weight_decay: L2 coefficient added to the gradient as ``weight_decay * param``
        (Caffe's ``weight_decay``; applies to every parameter).
      eval_every: steps per segment; the test set is evaluated after each.
      eval_batch_size: test examples per evaluation chunk (rounded up to a multiple of the
        device count).

    Examples:
      >>> from experiments.harness.train import TrainConfig
      >>> cfg = TrainConfig(12000, 100, 0.01, lr_boundaries=(6000,), weight_decay=5e-4)
      >>> [round(float(cfg.schedule()(t)), 6) for t in (5999, 6000)]
      [0.01, 0.001]
    """

    iterations: int
    batch_size: int = 100
    learning_rate: float = 0.01
    lr_boundaries: tuple[int, ...] = ()
    lr_decay: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    eval_every: int = 500
    eval_batch_size: int = 1000

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr_boundaries", tuple(int(b) for b in self.lr_boundaries))
        for field in ("iterations", "batch_size", "eval_every", "eval_batch_size"):
            if getattr(self, field) < 1:
                raise ValueError(
                    f"TrainConfig.{field} must be positive; got {getattr(self, field)}"
                )

    def schedule(self) -> optax.Schedule:
        """The learning rate as a function of the step count.

        ``optax.piecewise_constant_schedule`` on a float32 count (optax's integer count
        mixes int32 and float there, which ``jax_numpy_dtype_promotion="strict"`` refuses).
        """
        steps = optax.piecewise_constant_schedule(
            self.learning_rate, {b: self.lr_decay for b in self.lr_boundaries}
        )
        return lambda count: steps(jnp.asarray(count).astype(jnp.float32))

    def lr_at(self, step: int) -> float:
        """The learning rate of step ``step`` (counted from 0), in Python arithmetic."""
        lr = self.learning_rate * self.lr_decay ** sum(step >= b for b in self.lr_boundaries)
        return float(f"{lr:.12g}")  # 0.001, not 0.0010000000000000002

    def optimizer(self) -> optax.GradientTransformation:
        """``add_decayed_weights(weight_decay)`` then ``sgd(schedule, momentum, nesterov)``."""
        sgd = optax.sgd(self.schedule(), momentum=self.momentum or None, nesterov=self.nesterov)
        if self.weight_decay:
            return optax.chain(optax.add_decayed_weights(self.weight_decay), sgd)
        return sgd


@dataclasses.dataclass(frozen=True, eq=False)
class ArrayData:
    """Training and test arrays ready for a model (float inputs, int32 labels).

    Attributes:
      x_train: ``(N, ...)`` float32 inputs.
      y_train: ``(N,)`` int32 labels.
      x_test: ``(M, ...)`` float32 inputs.
      y_test: ``(M,)`` int32 labels.
      name: the dataset name.
      source: where the data came from (the loader's ``source``/``origin``).
      notes: preprocessing, in words.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    name: str = ""
    source: str = ""
    notes: str = ""

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            object.__setattr__(
                self, f"x_{split}", np.asarray(getattr(self, f"x_{split}"), np.float32)
            )
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if len(x) != len(y):
                raise ValueError(f"ArrayData: {len(x)} {split} inputs but {len(y)} labels")
            if y.dtype != np.int32 or y.ndim != 1:
                raise ValueError(f"ArrayData: y_{split} must be a 1-D int32 array")

    @property
    def num_train(self) -> int:
        """Number of training examples."""
        return len(self.y_train)

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary: name, source, sizes, input shape, preprocessing."""
        return {
            "name": self.name,
            "source": self.source,
            "num_train": int(len(self.y_train)),
            "num_test": int(len(self.y_test)),
            "input_shape": list(self.x_train.shape[1:]),
            "preprocessing": self.notes,
        }

    def fingerprint(self) -> str:
        """A cheap checksum of the arrays (Adler-32 of their bytes)."""
        value = 1
        for a in (self.x_train, self.y_train, self.x_test, self.y_test):
            value = zlib.adler32(np.ascontiguousarray(a).view(np.uint8).reshape(-1), value)
        return f"{value:08x}"


@flax.struct.dataclass
class TrainState:
    """What training updates (each leaf with a leading replica axis in the harness)."""

    params: Any
    batch_stats: Any
    opt_state: Any


def step_sgd(
    iterations: int,
    boundary: int,
    *,
    learning_rate: float = 0.01,
    weight_decay: float = 5e-4,
    **kw: Any,
) -> TrainConfig:
    """The seeds' Caffe solver: SGD, momentum 0.9, learning rate divided by 10 at ``boundary``.

    Other :class:`TrainConfig` fields (batch size, evaluation interval, ...) pass through.
    """
    return TrainConfig(
        iterations=iterations,
        learning_rate=learning_rate,
        lr_boundaries=(boundary,),
        lr_decay=0.1,
        momentum=0.9,
        weight_decay=weight_decay,
        **kw,
    )


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh with axis ``"data"`` over ``devices`` (default: all devices)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), ("data",))


def replica_keys(seed: jax.Array | int) -> jax.Array:
    """``jax.random.split(jax.random.key(seed), 3)``: the init, data and dropout keys."""
    return jax.random.split(jax.random.key(seed), 3)


def _fetch(x: jax.Array) -> np.ndarray:
    """Host copy of a (replicated) array, also when other processes hold some devices."""
    if getattr(x, "is_fully_addressable", True):
        return np.asarray(x)
    return np.asarray(x.addressable_data(0))


def host_replicas(tree: Any) -> list[Any]:
    """Each replica's slice of ``tree`` (replica axis first, e.g. a run's
    ``state.params``) as numpy arrays, the tree fetched to the host once.

    A program called with one replica's parameters where the replica split left them (its
    own device) would compile once per device; on the host they are placed like any input.

    Examples:
      >>> import jax.numpy as jnp
      >>> from experiments.harness.train import host_replicas
      >>> [r["w"].tolist() for r in host_replicas({"w": jnp.arange(4.0).reshape(2, 2)})]
      [[0.0, 1.0], [2.0, 3.0]]
    """
    host = jax.tree.map(_fetch, tree)
    count = jax.tree.leaves(host)[0].shape[0]
    return [jax.tree.map(lambda a, r=r: a[r], host) for r in range(count)]


def _put(value: np.ndarray, sharding: NamedSharding) -> jax.Array:
    value = np.asarray(value)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def _fingerprint(
    model: nn.Module, data: ArrayData, cfg: TrainConfig, seeds, augment: PadCropFlip | None = None
) -> str:
    text = re.sub(r" at 0x[0-9a-f]+", "", repr(model))
    record = {
        "model": text,
        "config": dataclasses.asdict(cfg),
        "seeds": [int(s) for s in seeds],
        "data": [data.name, data.fingerprint(), list(data.x_train.shape)],
    }
    if augment is not None:  # only then: runs without augmentation keep their fingerprints
        record["augment"] = augment.describe()
    blob = json.dumps(record, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
      seeds: the replicas' seeds.
      history: one entry per segment: ``step``, ``lr`` (of the segment's last step), and
        per-replica lists ``train_loss``/``train_acc`` (means over the segment's steps, with
        dropout) and ``test_loss``/``test_acc`` (after the segment, without dropout).
      state: the final :class:`TrainState`, replica axis first.
      timing: wall time, compile-inclusive first segment, and the steady per-step time.
      resumed_from: the step a checkpoint was restored at (None for a fresh run).
    """

    seeds: list[int]
    history: list[dict[str, Any]]
    state: TrainState
    timing: dict[str, Any]
    resumed_from: int | None = None

    @property
    def final(self) -> dict[str, list[float]]:
        """Per-replica metrics after the last segment."""
        last = self.history[-1]
        return {k: last[k] for k in ("train_loss", "train_acc", "test_loss", "test_acc")}

    def to_json(self) -> dict[str, Any]:
        """The JSON-able part: seeds, final metrics, curves, timing."""
        return {
            "seeds": self.seeds,
            "final": self.final,
            "curves": self.history,
            "timing": self.timing,
            "resumed_from": self.resumed_from,
        }
