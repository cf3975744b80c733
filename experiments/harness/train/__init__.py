"""The training harness: replicas by ``vmap``, data parallelism by sharding, resumable runs.

One call of :func:`train` trains ``R`` replicas of a model (one per seed) with SGD and
returns their per-replica metrics and curves:

* **Data on device.** The whole training and test sets are placed on the devices once
  (replicated). Each epoch's order is a permutation drawn on device; a step gathers its
  batch from the permutation. Training counts *iterations*, as the papers do; an epoch has
  ``num_train // batch_size`` steps (the remainder of each permutation is dropped, so every
  step sees a full batch).
* **Segments.** Iterations run in jit-compiled segments of ``eval_every`` steps, each one
  ``lax.scan`` over its steps; after a segment the test set is evaluated (loss and accuracy
  per replica), a checkpoint is written and the progress bar moves. The last segment is
  shorter when ``eval_every`` does not divide ``iterations``.
* **Replicas.** Parameters, optimiser state and batch statistics carry a leading replica
  axis; initialisation is ``jax.vmap``-ed over it and the step ``vmap``-ed or, on CPU,
  ``lax.map``-ed (faster there), so ``R`` seeds train in one compiled program. Replica ``r``
  computes exactly what a run with only its seed computes (up to floating-point
  reassociation).
* **Devices: replicas, or the batch.** By default (``split="replicas"``) the replicas are
  spread over the devices (on CPU, the host devices the command line makes, one per core):
  ``d`` of them, the largest count up to the number of devices that divides ``R``, each
  running ``R / d`` replicas one after another with whole batches (``jax.shard_map``). Every
  replica runs the same one-replica program wherever it lands, so the numbers are
  bit-identical whatever the device count (one device when ``d`` is 1). With
  ``split="batch"`` (or an explicit ``mesh``) every batch is instead sharded over the
  ``"data"`` axis of a :class:`jax.sharding.Mesh`, parameters replicated; the compiler
  inserts the gradient all-reduce, batch-norm statistics are over the global batch, and
  the metrics equal a 1-device run up to reduction order (the batch size must be a
  multiple of the device count). The split a run used is recorded in its
  :attr:`TrainResult.timing` (``"split"``, ``"devices"``).
* **Checkpoints.** With ``checkpoint_dir``, the state and the curves so far are saved with
  Orbax at every segment boundary; a later call with the same arguments resumes from the
  latest one and ends with the same results as an uninterrupted run.

Randomness is a function of the seed alone (this is the contract the tests check):
``init_key, data_key, dropout_key = jax.random.split(jax.random.key(seed), 3)``; parameters
are ``model.init({"params": init_key}, x[:1], train=False)``; epoch ``e`` visits the
training set in the order ``jax.random.permutation(jax.random.fold_in(data_key, e), N)``,
step ``t`` (counted from 0 over the whole run) takes the slice ``[i * B, (i + 1) * B)`` of
its epoch's order with ``i = t mod (N // B)``, and uses the dropout key
``jax.random.fold_in(dropout_key, t)``. Runs that share a seed share initial parameters,
data order and dropout keys: that is what pairs the arms of an experiment.

**Augmentation.** With ``augment=`` an :class:`experiments.harness.augment.PadCropFlip` (a
:class:`Trainer`/:func:`train` argument, off by default), every training batch is augmented
per example inside the scan, from the key
:func:`experiments.harness.augment.augment_key` ``(data_key, t)``: deterministic in the seed and the
step, so a resumed run equals an uninterrupted one. Without it the compiled programs, the
checkpoint fingerprint and every number are those of a harness that has no augmentation.

**Step-aware models.** A model whose class sets ``takes_step = True`` is called in training
as ``model.apply(v, x, train=True, step=t, rngs=...)``, with ``t`` the int32 step count of
the paragraph above (traced: one compiled segment serves every step), e.g. to feed a
dropout-rate schedule such as :func:`dropjax.linear_rate`. Initialisation and evaluation
call it without ``step``.

The optimiser is Caffe's SGD: weight decay added to the gradient
(``optax.add_decayed_weights``) before ``optax.sgd`` with momentum or Nesterov, with a step
schedule on iteration counts (``optax.piecewise_constant_schedule``). Caffe scales the
momentum buffer's *input* by the learning rate; optax's ``sgd`` scales its output, which
differs only in a transient after a learning-rate step.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from experiments.harness import tensorboard
from experiments.harness.augment import PadCropFlip, augment_key
from experiments.harness.host_devices import default_split, replica_device_count
from experiments.harness.train._checkpoints import (
    _Checkpoints,
    resume_options,
)
from experiments.harness.train._config import (
    ArrayData,
    TrainConfig,
    TrainResult,
    TrainState,
    _fetch,
    _fingerprint,
    _put,
    host_replicas,
    make_mesh,
    replica_keys,
    step_sgd,
)

__all__ = [
    "ArrayData",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "Trainer",
    "host_replicas",
    "make_mesh",
    "replica_keys",
    "resume_options",
    "step_sgd",
    "train",
    "train_cell",
]


class Trainer:
    """Compiled training and evaluation of one model on one dataset (see the module doc).

    Args:
      model: a linen module called as ``model.apply(v, x, train=...)`` returning logits.
      data: the arrays.
      cfg: the protocol.
      mesh: a device mesh with a ``"data"`` axis to shard every batch over (implies
        ``split="batch"``).
      split: ``"replicas"`` or ``"batch"``: how the devices share the work when ``mesh`` is
        not given (see the module doc). Default: the environment variable
        ``EXPERIMENTS_SPLIT`` (``python -m experiments --split``), else ``"replicas"`` in
        one process and ``"batch"`` across several (a multi-host run).
      devices: the devices to use (default: all of ``jax.devices()``).
      replica_loop: step and evaluate the replicas one after another (``lax.map``) instead
        of as one ``vmap``-ed program. Default: on CPU, where R small steps beat one
        R-batched step (LeNet 21 vs 25 ms per replica step at R = 4,
        ``benchmarks/torch_vs_harness.py``), and always when the replicas are split over
        several devices (the one-replica program everywhere); ``vmap`` elsewhere. The numbers
        are the same up to float rounding.
      augment: augment every training batch per example on device (see the module doc),
        e.g. :class:`experiments.harness.augment.PadCropFlip` for NHWC images; None: no
        augmentation.
      dropout_salt: 0 (default) uses each replica's dropout key; another value folds it into
        that key, so the replica keeps its initial parameters and data order but draws
        fresh dropout masks (a null control: two arms that differ only in their masks).

    Raises:
      ValueError: an unknown ``split``; in the batch split, a batch size that is not a
        multiple of the device count; a batch larger than the training set; augmentation of
        inputs that are not NHWC images.
    """

    def __init__(
        self,
        model: nn.Module,
        data: ArrayData,
        cfg: TrainConfig,
        *,
        mesh: Mesh | None = None,
        replica_loop: bool | None = None,
        augment: PadCropFlip | None = None,
        dropout_salt: int = 0,
        split: str | None = None,
        devices: Sequence[jax.Device] | None = None,
    ):
        split = split or default_split(jax.process_count())
        if split not in SPLITS:
            raise ValueError(
                f"split must be one of {SPLITS} (from the argument or EXPERIMENTS_SPLIT); "
                f"got {split!r}"
            )
        self.split = "batch" if mesh is not None else split
        devices = list(jax.devices() if devices is None else devices)
        self.replica_devices = devices if self.split == "replicas" else devices[:1]
        if mesh is None:
            mesh = make_mesh(devices if self.split == "batch" else devices[:1])
        self.model, self.data, self.cfg = model, data, cfg
        self.dropout_salt = int(dropout_salt)
        if augment is not None and data.x_train.ndim != 4:
            raise ValueError(
                f"augment={augment!r} needs NHWC image inputs; got training inputs of shape "
                f"{data.x_train.shape}. Pass augment=None for flat inputs"
            )
        self.augment = augment
        self.mesh = mesh
        devices = self.mesh.devices.size
        if cfg.batch_size % devices:
            raise ValueError(
                f"batch_size {cfg.batch_size} must be a multiple of the number of devices "
                f"({devices}): every batch is split evenly over the 'data' mesh axis. Use a "
                f"batch size divisible by {devices}, or a mesh over fewer devices "
                "(make_mesh(jax.devices()[:k]))"
            )
        if cfg.batch_size > data.num_train:
            raise ValueError(
                f"batch_size {cfg.batch_size} exceeds the {data.num_train} training examples"
            )
        self.steps_per_epoch = data.num_train // cfg.batch_size
        self.tx = cfg.optimizer()
        self._replicated = NamedSharding(self.mesh, P())
        self.x_train = _put(data.x_train, self._replicated)
        self.y_train = _put(data.y_train, self._replicated)
        chunk = -(-cfg.eval_batch_size // devices) * devices
        chunk = min(chunk, -(-len(data.y_test) // devices) * devices)
        chunks = -(-len(data.y_test) // chunk)
        pad = chunks * chunk - len(data.y_test)
        x_test = np.concatenate([data.x_test, np.zeros((pad, *data.x_test.shape[1:]), np.float32)])
        y_test = np.concatenate([data.y_test, np.zeros(pad, np.int32)])
        weight = np.concatenate([np.ones(len(data.y_test), np.float32), np.zeros(pad, np.float32)])
        shape = lambda a: a.reshape(chunks, chunk, *a.shape[1:])
        self.test = tuple(_put(shape(a), self._replicated) for a in (x_test, y_test, weight))
        self.num_test = len(data.y_test)
        sample = jnp.zeros((1, *data.x_train.shape[1:]), jnp.float32)
        self.has_bn = "batch_stats" in jax.eval_shape(
            lambda: model.init(jax.random.key(0), sample, train=False)
        )
        self.takes_step = bool(getattr(model, "takes_step", False))
        if replica_loop is None:  # XLA:CPU runs R small steps faster than one R-batched step
            replica_loop = all(d.platform == "cpu" for d in self.mesh.devices.flat)
        if len(self.replica_devices) > 1:  # the one-replica program on every device
            replica_loop = True
        self.replica_loop = bool(replica_loop)
        self.replica_mesh: Mesh | None = None  # set per replica count by _place
        self._placed = {1: (self._replicated, self.x_train, self.y_train, self.test)}
        self._executables: dict[tuple, Any] = {}

    # ---------------------------------------------------------------- pure functions
    def _variables(self, state: TrainState) -> dict[str, Any]:
        if self.has_bn:
            return {"params": state.params, "batch_stats": state.batch_stats}
        return {"params": state.params}

    def _init_one(self, seed: jax.Array) -> TrainState:
        init_key = replica_keys(seed)[0]
        sample = jnp.zeros((1, *self.data.x_train.shape[1:]), jnp.float32)
        variables = self.model.init({"params": init_key}, sample, train=False)
        params = variables["params"]
        return TrainState(params, variables.get("batch_stats", {}), self.tx.init(params))

    def _init_impl(self, seeds: jax.Array) -> TrainState:
        return jax.vmap(self._init_one)(seeds)

    def _loss(self, params, state: TrainState, x, y, key, step=None):
        variables = dict(self._variables(state), params=params)
        rngs = {"dropout": key}
        kw = {} if step is None else {"step": step}
        if self.has_bn:
            logits, updated = self.model.apply(
                variables, x, train=True, rngs=rngs, mutable=["batch_stats"], **kw
            )
            batch_stats = updated["batch_stats"]
        else:
            logits = self.model.apply(variables, x, train=True, rngs=rngs, **kw)
            batch_stats = state.batch_stats
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        acc = (jnp.argmax(logits, -1) == y).astype(jnp.float32).mean()
        return loss, (batch_stats, acc)

    def _replica_step(self, state: TrainState, x, y, key, step=None):
        loss_fn = self._loss if step is None else functools.partial(self._loss, step=step)
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (loss, (batch_stats, acc)), grads = grad_fn(state.params, state, x, y, key)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        return TrainState(params, batch_stats, opt_state), loss, acc

    def _segment_impl(self, state, step0, seeds, x_train, y_train, *, length: int):
        batch, spe, n = self.cfg.batch_size, self.steps_per_epoch, self.data.num_train
        keys = jax.vmap(replica_keys)(seeds)
        data_keys, dropout_keys = keys[:, 1], keys[:, 2]
        if self.dropout_salt:  # fresh masks, same initialisation and data order
            dropout_keys = jax.vmap(jax.random.fold_in, (0, None))(dropout_keys, self.dropout_salt)

        def order(epoch):
            perm = lambda k: jax.random.permutation(jax.random.fold_in(k, epoch), n)
            return jax.vmap(perm)(data_keys).astype(jnp.int32)

        sharded = lambda a: a  # in the replica split: this device's replicas, whole batches
        if self.replica_mesh is None:
            sharded = lambda a: jax.lax.with_sharding_constraint(
                a, NamedSharding(self.mesh, P(None, "data"))
            )

        def body(carry, step):
            state, perm = carry
            pos = step % spe
            fresh = (pos == 0) & (step != step0)
            perm = lax.cond(fresh, lambda: order(step // spe), lambda: perm)
            idx = lax.dynamic_slice_in_dim(perm, pos * batch, batch, axis=1)
            xb, yb = sharded(x_train[idx]), sharded(y_train[idx])
            if self.augment is not None:  # per example, from the replica's data key and step
                aug = lambda k, x: self.augment(augment_key(k, step), x)
                xb = sharded(jax.vmap(aug)(data_keys, xb))
            step_keys = jax.vmap(jax.random.fold_in, (0, None))(dropout_keys, step)
            replica_step = self._replica_step
            if self.takes_step:  # the step is shared by the replicas, not mapped
                replica_step = functools.partial(replica_step, step=step)
            if self.replica_loop:  # one replica after another: the R = 1 program, R times
                state, loss, acc = lax.map(lambda a: replica_step(*a), (state, xb, yb, step_keys))
            else:
                state, loss, acc = jax.vmap(replica_step)(state, xb, yb, step_keys)
            return (state, perm), (loss, acc)

        steps = step0 + jnp.arange(length, dtype=jnp.int32)
        (state, _), (loss, acc) = lax.scan(body, (state, order(step0 // spe)), steps)
        return state, loss.mean(0), acc.mean(0)

    def _evaluate_impl(self, state: TrainState, x_chunks, y_chunks, w_chunks):
        def body(carry, chunk):
            x, y, w = chunk
            if self.replica_mesh is None:
                x = jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, P("data")))
            apply = lambda s: self.model.apply(self._variables(s), x, train=False)
            logits = lax.map(apply, state) if self.replica_loop else jax.vmap(apply)(state)
            labels = jnp.broadcast_to(y, logits.shape[:-1])
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
            correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
            return (carry[0] + (ce * w).sum(-1), carry[1] + (correct * w).sum(-1)), None

        replicas = jax.tree.leaves(state.params)[0].shape[0]
        zero = jnp.zeros((replicas,), jnp.float32)
        (loss, correct), _ = lax.scan(body, (zero, zero), (x_chunks, y_chunks, w_chunks))
        return loss / self.num_test, correct / self.num_test

    # ---------------------------------------------------------------- compiled entry points
    def _place(self, replicas: int) -> None:
        """Uses the replica split for ``replicas`` (see the module doc): its mesh and data."""
        n = len(self.replica_devices)
        d = replica_device_count(replicas, n)
        if d not in self._placed:
            mesh = Mesh(np.asarray(self.replica_devices[:d]), ("replica",))
            whole = NamedSharding(mesh, P())
            arrays = (self.data.x_train, self.data.y_train)
            test = tuple(_put(np.asarray(a), whole) for a in self._placed[1][3])
            self._placed[d] = (whole, *(_put(a, whole) for a in arrays), test)
        self._replicated, self.x_train, self.y_train, self.test = self._placed[d]
        self.replica_mesh = None if d == 1 else self._replicated.mesh

    def _executable(self, key: tuple, impl: Callable, args: tuple, specs: tuple) -> Any:
        """The compiled ``impl`` for ``args``, from this trainer or :data:`_EXECUTABLES`: on
        the batch mesh with replicated outputs, or ``shard_map``-ed over the replica mesh with
        ``specs = (in_specs, out_specs)`` (``"r"``: split over the replicas, ``""``: whole)."""
        key = (*key, 1 if self.replica_mesh is None else self.replica_mesh.devices.size)
        if key not in self._executables:
            if self.replica_mesh is None:
                jitted, mesh = jax.jit(impl, out_shardings=self._replicated), self.mesh
            else:
                spec = lambda tag: P("replica") if tag == "r" else P()
                in_specs, out_specs = (jax.tree.map(spec, tags) for tags in specs)
                # No varying-axes check: each device computes its own replicas and nothing
                # crosses devices, while custom VJPs (dropjax.cpu_conv) return per-device
                # cotangents for the whole batch that the check would refuse.
                mapped = jax.shard_map(
                    impl,
                    mesh=self.replica_mesh,
                    in_specs=in_specs,
                    out_specs=out_specs,
                    check_vma=False,
                )
                jitted, mesh = jax.jit(mapped), self.replica_mesh
            self._executables[key] = _compile(jitted, mesh, *args)
        return self._executables[key]

    @property
    def device_split(self) -> dict[str, Any]:
        """How the devices shared the last program: ``{"split", "devices"}``."""
        if self.replica_mesh is not None:
            return {"split": "replicas", "devices": int(self.replica_mesh.devices.size)}
        n = int(self.mesh.devices.size)
        return {"split": "batch" if n > 1 else "one device", "devices": n}

    def init(self, seeds: Sequence[int]) -> TrainState:
        """The initial state of one replica per seed (replica axis first; split over the
        devices in the replica split, else replicated)."""
        self._place(len(seeds))
        seeds = _put(np.asarray(seeds, np.uint32), self._replicated)
        exe = self._executable(("init", len(seeds)), self._init_impl, (seeds,), (("r",), "r"))
        return exe(seeds)

    def segment(self, state: TrainState, step0: int, seeds: Sequence[int], length: int):
        """Runs steps ``step0 .. step0 + length - 1``; returns (state, train loss, train acc)."""
        self._place(len(seeds))
        step0 = _put(np.int32(step0), self._replicated)
        seeds = _put(np.asarray(seeds, np.uint32), self._replicated)
        args = (state, step0, seeds, self.x_train, self.y_train)
        fn = lambda s, t, z, x, y: self._segment_impl(s, t, z, x, y, length=length)
        specs = (("r", "", "r", "", ""), ("r", "r", "r"))
        return self._executable(("segment", length, len(seeds)), fn, args, specs)(*args)

    def evaluate(self, state: TrainState) -> tuple[jax.Array, jax.Array]:
        """Per-replica test loss and accuracy (no dropout, running batch statistics)."""
        replicas = jax.tree.leaves(state.params)[0].shape[0]
        self._place(replicas)
        args = (state, *self.test)
        specs = (("r", "", "", ""), ("r", "r"))
        key = ("evaluate", replicas)
        return self._executable(key, self._evaluate_impl, args, specs)(*args)

    # ---------------------------------------------------------------- the loop
    def run(
        self,
        seeds: Sequence[int],
        *,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        callback: Callable[[int, dict[str, Any]], None] | None = None,
        quiet: bool | None = None,
        desc: str | None = None,
    ) -> TrainResult:
        """Trains one replica per seed for ``cfg.iterations`` steps.

        Args:
          seeds: one seed per replica.
          checkpoint_dir: where to save a checkpoint after every segment and resume from
            (created if missing; must belong to this model, data, config and seeds).
          callback: called as ``callback(step, entry)`` after every segment, once its
            checkpoint is written; an exception raised there stops the run (the way tests
            simulate an interruption).
          quiet: no progress bar (default: quiet when the environment variable ``CI`` is set).
          desc: the progress bar's label.

        Returns:
          A :class:`TrainResult`.

        Raises:
          ValueError: a checkpoint directory written by a different run.
        """
        seeds = [int(s) for s in seeds]
        if not seeds:
            raise ValueError("train needs at least one seed (one per replica)")
        if quiet is None:
            quiet = bool(os.environ.get("CI"))
        cfg = self.cfg
        start_time = time.perf_counter()
        state = self.init(seeds)
        if not quiet:
            _say_idle_devices(len(seeds), len(self.replica_devices))
        step, history, resumed_from = 0, [], None
        ckpt = None
        if checkpoint_dir is not None:
            ckpt = _Checkpoints(
                checkpoint_dir, _fingerprint(self.model, self.data, cfg, seeds, self.augment)
            )
            restored = ckpt.restore(state)
            if restored is not None:
                state, step, history = restored
                resumed_from = step
        bar = _progress(cfg.iterations, step, quiet, desc)
        seg_times: list[tuple[int, float]] = []
        eval_time = 0.0
        try:
            while step < cfg.iterations:
                length = min(cfg.eval_every, cfg.iterations - step)
                t0 = time.perf_counter()
                state, loss, acc = self.segment(state, step, seeds, length)
                loss, acc = _fetch(loss), _fetch(acc)
                seg_times.append((length, time.perf_counter() - t0))
                step += length
                t1 = time.perf_counter()
                test_loss, test_acc = (_fetch(a) for a in self.evaluate(state))
                eval_time += time.perf_counter() - t1
                entry = {
                    "step": step,
                    "lr": cfg.lr_at(step - 1),
                    "train_loss": loss.tolist(),
                    "train_acc": acc.tolist(),
                    "test_loss": test_loss.tolist(),
                    "test_acc": test_acc.tolist(),
                }
                history.append(entry)
                tensorboard.log_entry(desc, entry)  # no-op unless --tensorboard DIR
                if ckpt is not None:
                    ckpt.save(step, state, history)
                if bar is not None:
                    bar.update(length)
                    rate = len(seeds) * cfg.batch_size * length / seg_times[-1][1]
                    bar.set_postfix(
                        loss=f"{loss.mean():.4f}",
                        acc=f"{acc.mean():.4f}",
                        test_acc=f"{test_acc.mean():.4f}",
                        ex_s=f"{rate:.0f}",
                    )
                if callback is not None:
                    callback(step, entry)
        finally:
            if bar is not None:
                bar.close()
            if ckpt is not None:
                ckpt.close()
        return TrainResult(
            seeds=seeds,
            history=history,
            state=state,
            timing={
                **_timing(seg_times, eval_time, time.perf_counter() - start_time),
                **self.device_split,
            },
            resumed_from=resumed_from,
        )


SPLITS = ("replicas", "batch")
"""How a :class:`Trainer` shares its work over several devices (its ``split``)."""

_SAID: set[tuple[int, int]] = set()


def _say_idle_devices(replicas: int, devices: int) -> None:
    """Once per process and shape: the replica split leaves some devices idle."""
    used = replica_device_count(replicas, devices)
    if used < devices and (replicas, devices) not in _SAID:
        _SAID.add((replicas, devices))
        print(
            f"{replicas} replicas over {devices} devices: {used} used (each device runs whole "
            "replicas). `--split batch` (EXPERIMENTS_SPLIT=batch) shards every batch over all "
            "of them instead; its numbers then depend on the device count.",
            file=sys.stderr,
        )


_EXECUTABLES: collections.OrderedDict[tuple[str, tuple[int, ...]], Any] = collections.OrderedDict()
"""Compiled programs keyed by their StableHLO text (without locations) and devices.

Arms of an experiment that differ only in their dropout have the same initialisation (and
often evaluation) program; this cache compiles it once per process (XLA:CPU takes seconds
to compile a model's initialisation). Least recently used entries beyond 32 are dropped.
"""


def _compile(jitted: Callable, mesh: Mesh, *args) -> Any:
    lowered = jitted.lower(*args)
    text = lowered.as_text(debug_info=False)
    # The input tree structure is part of the key: two models can lower to the same text
    # while naming their parameters differently, and an executable accepts only its own.
    key = (
        hashlib.sha256(text.encode()).hexdigest(),
        str(jax.tree.structure(args)),
        tuple(d.id for d in mesh.devices.flat),
    )
    executable = _EXECUTABLES.pop(key, None)
    if executable is None:
        executable = lowered.compile()
    _EXECUTABLES[key] = executable
    while len(_EXECUTABLES) > 32:
        _EXECUTABLES.popitem(last=False)
    return executable


def _timing(seg_times: list[tuple[int, float]], eval_time: float, wall: float) -> dict:
    """Wall time; the first segment (which compiles) apart; median ms per step after it."""
    out: dict[str, Any] = {"wall_s": round(wall, 3), "eval_s": round(eval_time, 3)}
    if seg_times:
        out["first_segment_s"] = round(seg_times[0][1], 3)
    steady = [t / n for n, t in seg_times[1:]]
    if steady:
        out["ms_per_step"] = round(1e3 * float(np.median(steady)), 3)
    return out


def _progress(total: int, initial: int, quiet: bool, desc: str | None):
    if quiet:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="it", dynamic_ncols=True)


def train(
    model: nn.Module,
    data: ArrayData,
    cfg: TrainConfig,
    seeds: Sequence[int],
    *,
    mesh: Mesh | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    callback: Callable[[int, dict[str, Any]], None] | None = None,
    quiet: bool | None = None,
    desc: str | None = None,
    augment: PadCropFlip | None = None,
    dropout_salt: int = 0,
) -> TrainResult:
    """Trains ``len(seeds)`` replicas of ``model`` on ``data``; see :class:`Trainer.run`.

    ``augment`` (default None: none) augments every training batch on device, e.g.
    :class:`experiments.harness.augment.PadCropFlip`, and ``dropout_salt`` draws fresh dropout masks
    (see :class:`Trainer`).

    Examples:
      >>> import numpy as np
      >>> from experiments.harness.models import MLP
      >>> from experiments.harness.train import ArrayData, TrainConfig, make_mesh, train
      >>> rng = np.random.default_rng(0)
      >>> x, y = rng.normal(size=(64, 4)).astype(np.float32), np.arange(64, dtype=np.int32) % 2
      >>> data = ArrayData(x, y, x, y)
      >>> cfg = TrainConfig(iterations=4, batch_size=16, learning_rate=0.1, eval_every=2)
      >>> result = train(MLP(hidden=(8,), num_classes=2), data, cfg, seeds=[0, 1], quiet=True)
      >>> [entry["step"] for entry in result.history], len(result.final["test_acc"])
      ([2, 4], 2)
    """
    trainer = Trainer(model, data, cfg, mesh=mesh, augment=augment, dropout_salt=dropout_salt)
    return trainer.run(
        seeds, checkpoint_dir=checkpoint_dir, callback=callback, quiet=quiet, desc=desc
    )


def train_cell(
    model: nn.Module,
    data: ArrayData,
    cfg: TrainConfig,
    cell: Any,
    checkpoint_dir: str | os.PathLike[str],
    budget: Any,
    *,
    quiet: bool,
    label: str,
    augment: PadCropFlip | None = None,
    dropout_salt: int = 0,
) -> TrainResult:
    """Trains one :class:`experiments.harness.cells.Cell` (its ``params["seeds"]`` as replicas):
    :func:`train` with the cell's checkpoint folder, the grid's budget as the callback (it
    stops the run cleanly) and a progress bar ``"<label> seeds <first>-<last>"``."""
    seeds = cell.params["seeds"]
    return train(
        model,
        data,
        cfg,
        seeds,
        checkpoint_dir=checkpoint_dir,
        callback=budget.callback,
        quiet=quiet or None,
        desc=f"{label} seeds {seeds[0]}-{seeds[-1]}",
        augment=augment,
        dropout_salt=dropout_salt,
    )
