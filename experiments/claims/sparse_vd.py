"""Molchanov, Ashukha & Vetrov (ICML 2017), Table 1: sparse variational dropout on LeNet-300-100.

The claim: training LeNet-300-100 on MNIST with sparse variational dropout (a learned
Gaussian dropout rate per weight, :class:`dropjax.linen.VariationalDense`) and dropping the
weights with :math:`\\log\\alpha > 3` gives **1.92 % test error with 68x fewer non-zero
weights** (:math:`|W| / |W \\neq 0|` over the three weight matrices), against 1.64 % for the
dense network (the "Original" row, which the paper takes from Han et al. 2015).

Protocol (Section 6 of the paper and the authors' Lasagne code,
``bayesgroup/variational-dropout-sparsifies-dnn``, ``lenet300-100-ard.py``): 784-300-100-10
ReLU network, every layer variational (per-weight :math:`\\log\\sigma^2`, additive
reparameterisation, :math:`\\log\\alpha` clipped to [-8, 8], local reparameterisation);
weights initialised :math:`\\mathcal{N}(0, 0.01^2)`, :math:`\\log\\sigma^2 = -10`, zero
biases; trained **from random initialisation** (no pretraining for the LeNets) for 200
epochs, batch 100, Adam (beta1 0.9) at learning rate 1e-3 for 100 epochs then decayed
linearly to 0 at epoch 200; the objective is the SGVLB
``N * mean cross-entropy + rw * KL`` with the KL weight ``rw`` 0 for epochs 0-4, rising
linearly to 1 at epoch 20 (``rw_linear``), here divided by N (Adam is scale-invariant);
"train_clip": the weights already above the threshold are zeroed during training too;
inputs scaled by 1/256 with the training mean image subtracted. Evaluation: the
deterministic network with the weights of :math:`\\log\\alpha > 3` set to zero.
**Uncertain**: the paper's text does not spell all of this out; the values above are read
from the authors' code as published with the paper (the script loops 201 epochs, the last at
learning rate 0; the paper says 200), and the paper reports one run, not a mean over seeds.

Arms (paired seeds, as every experiment here):

* ``sparse_vd``: the network above;
* ``dense``: the same architecture with plain dense layers, the same Adam schedule and no
  KL term, for our own dense error (the paper's 1.64 % is another training recipe).

Measured per seed: the test error of the pruned deterministic network, the compression
:math:`|W| / |W \\neq 0|` and the non-zero fraction per layer (:func:`dropjax.linen.sparsity`).
Summaries: mean with the 95 % Student-t interval over seeds; the paired error difference
sparse − dense. **Verdict** (one rule for both numbers): the compression claim is
*reproduced* when the interval of our compression lies at or above ``68 * (1 - 0.2)``,
*not reproduced* when it lies below, else *inconclusive*; the error claim is *reproduced*
when the interval of our error lies at or below ``1.92 % + 0.3`` points (two binomial SDs
of a 10,000-image test error at 2 %), *not reproduced* when above, else *inconclusive*. The
claim is reproduced when both are, not reproduced when either is not. As in
:func:`experiments.harness.stats.decide`, below the paper's full 200 epochs (protocol coverage < 1)
or on another dataset the headline is only **indicative**.

Presets: ``smoke``: scikit-learn digits (8x8, a substitute), 6 epochs of batch 96 (a multiple of
8 devices), 2 seeds, the sparse VD arm only, seconds; its numbers only check the plumbing.
``quick``: MNIST, 20 epochs (10 % coverage; the schedule scaled: KL weight 0 in epoch 0, up
to 1 at epoch 2, learning rate decayed linearly from epoch 10), 3 seeds vmapped in one
program, both arms. ``paper``: the protocol above, 3 seeds.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import dropjax
import dropjax.linen as djnn
from experiments.harness import data as data_lib
from experiments.harness import plots, stats
from experiments.harness.cells import Cell, grid_for
from experiments.harness.claim import Claim, Outcome
from experiments.harness.results import RunContext, save_figure_atomic
from experiments.harness.train import ArrayData, TrainConfig, Trainer, host_replicas

NAME = "sparse_vd"
SOURCE = (
    "Molchanov, Ashukha & Vetrov, Variational Dropout Sparsifies Deep Neural Networks, "
    "ICML 2017, Table 1"
)
PAPER = {"error_sparse_vd": 0.0192, "error_dense": 0.0164, "compression": 68.0}
PAPER_EPOCHS = 200
THRESHOLD = 3.0
COMPRESSION_TOLERANCE = 0.2  # relative: "about 68x" means at least 68 * 0.8
ERROR_TOLERANCE = 0.003  # absolute: two binomial SDs of a 2 % error on 10,000 test images
ARMS = ("sparse_vd", "dense")
HIST_BINS = np.linspace(-8.0, 8.0, 33)


@dataclasses.dataclass(frozen=True)
class VDConfig(TrainConfig):
    """The authors' optimisation protocol, in the harness's :class:`TrainConfig`.

    ``iterations = epochs * steps_per_epoch``. The learning rate is constant for epochs
    ``< lr_decay_epoch`` and then falls linearly per epoch,
    ``lr * (epochs - e) / (epochs - lr_decay_epoch)`` (the authors' ``lr_linear``); the KL
    weight is ``clip((e - kl_start_epoch) / (kl_end_epoch - kl_start_epoch), 0, 1)``
    (``rw_linear``). Adam with the optax defaults (beta1 0.9, beta2 0.999, eps 1e-8), no
    weight decay. ``momentum`` and ``lr_boundaries`` are unused.

    Examples:
      >>> from experiments.claims.sparse_vd import VDConfig
      >>> cfg = VDConfig(iterations=2000, steps_per_epoch=10, lr_decay_epoch=100,
      ...                kl_start_epoch=5, kl_end_epoch=20)
      >>> [cfg.lr_at(t) for t in (0, 999, 1000, 1500, 1990)]
      [0.001, 0.001, 0.001, 0.0005, 1e-05]
      >>> [round(float(cfg.kl_weight(t)), 3) for t in (49, 50, 125, 200, 1999)]
      [0.0, 0.0, 0.467, 1.0, 1.0]
    """

    learning_rate: float = 1e-3
    momentum: float = 0.0
    steps_per_epoch: int = 600
    lr_decay_epoch: int = 100
    kl_start_epoch: int = 5
    kl_end_epoch: int = 20

    @property
    def epochs(self) -> int:
        """Number of epochs."""
        return self.iterations // self.steps_per_epoch

    def _lr_factor(self, epoch):
        span = max(self.epochs - self.lr_decay_epoch, 1)
        return jnp.clip((self.epochs - epoch) / span, 0.0, 1.0)

    def schedule(self) -> optax.Schedule:
        """The learning rate as a function of the step count (float32 arithmetic)."""

        def lr(count):
            epoch = (jnp.asarray(count) // self.steps_per_epoch).astype(jnp.float32)
            return self.learning_rate * self._lr_factor(epoch)

        return lr

    def lr_at(self, step: int) -> float:
        """The learning rate of step ``step`` (counted from 0), in Python arithmetic."""
        epoch = step // self.steps_per_epoch
        span = max(self.epochs - self.lr_decay_epoch, 1)
        factor = min(max((self.epochs - epoch) / span, 0.0), 1.0)
        return float(f"{self.learning_rate * factor:.12g}")

    def kl_weight(self, count) -> jax.Array:
        """The KL weight of step ``count``: 0 before ``kl_start_epoch``, 1 from ``kl_end_epoch``."""
        epoch = (jnp.asarray(count) // self.steps_per_epoch).astype(jnp.float32)
        span = max(self.kl_end_epoch - self.kl_start_epoch, 1)
        return jnp.clip((epoch - self.kl_start_epoch) / span, 0.0, 1.0)

    def optimizer(self) -> optax.GradientTransformation:
        """Adam as a chain, so that ``opt_state[0].count`` is the step count."""
        return optax.chain(optax.scale_by_adam(), optax.scale_by_learning_rate(self.schedule()))


@dataclasses.dataclass(frozen=True)
class Protocol:
    """A preset's protocol in epochs (the step counts follow from the dataset size)."""

    epochs: int
    lr_decay_epoch: int
    kl_start_epoch: int
    kl_end_epoch: int
    batch_size: int = 100
    learning_rate: float = 1e-3
    eval_every_epochs: int = 1

    def config(self, num_train: int) -> VDConfig:
        spe = num_train // self.batch_size
        return VDConfig(
            iterations=self.epochs * spe,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            eval_every=self.eval_every_epochs * spe,
            steps_per_epoch=spe,
            lr_decay_epoch=self.lr_decay_epoch,
            kl_start_epoch=self.kl_start_epoch,
            kl_end_epoch=self.kl_end_epoch,
        )


@dataclasses.dataclass(frozen=True)
class Preset:
    """One preset: data, seeds, arms and protocol."""

    dataset: str
    replicas: int
    protocol: Protocol
    arms: tuple[str, ...] = ARMS


PRESETS = {
    "smoke": Preset(
        "digits", 2, Protocol(6, 3, 0, 2, batch_size=96, learning_rate=3e-3), ("sparse_vd",)
    ),
    "quick": Preset("mnist", 3, Protocol(20, 10, 0, 2, eval_every_epochs=5)),
    "paper": Preset("mnist", 3, Protocol(200, 100, 5, 20, eval_every_epochs=10)),
}


class LeNet300100(nn.Module):
    """LeNet-300-100 (784-300-100-10, ReLU); sparse-VD layers or plain dense ones.

    Attributes:
      variational: :class:`dropjax.linen.VariationalDense` layers (with ``train_clip``) if
        True, ``nn.Dense`` otherwise; both initialised :math:`\\mathcal{N}(0, 0.01^2)`.
      num_classes: output size.
    """

    variational: bool = True
    num_classes: int = 10

    @nn.compact
    def __call__(self, x, train: bool):
        x = x.reshape(x.shape[0], -1)
        init = nn.initializers.normal(0.01)
        sizes = (300, 100, self.num_classes)
        for i, size in enumerate(sizes):
            if self.variational:
                layer = djnn.VariationalDense(
                    size, kernel_init=init, threshold=THRESHOLD, train_clip=True, name=f"fc{i + 1}"
                )
                x = layer(x, deterministic=not train)
            else:
                x = nn.Dense(size, kernel_init=init, name=f"fc{i + 1}")(x)
            if i < len(sizes) - 1:
                x = nn.relu(x)
        return x


class ELBOTrainer(Trainer):
    """The harness's trainer with the SGVLB objective: mean cross-entropy + rw * KL / N.

    The KL is what the :class:`dropjax.linen.VariationalDense` layers sow into ``"losses"``
    (:func:`dropjax.linen.total_kl`); ``rw`` follows :meth:`VDConfig.kl_weight` of the step
    count in the Adam state. Evaluation (``train=False``) is the pruned network.
    """

    def _loss(self, params, state, x, y, key):
        logits, sown = self.model.apply(
            {"params": params}, x, train=True, rngs={"dropout": key}, mutable=["losses"]
        )
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        kl = djnn.total_kl(sown.get("losses", {}))
        rw = self.cfg.kl_weight(state.opt_state[0].count)
        loss = ce + rw * kl / self.data.num_train
        acc = (jnp.argmax(logits, -1) == y).astype(jnp.float32).mean()
        return loss, (state.batch_stats, acc)

    def _replica_step(self, state, x, y, key):
        with jax.numpy_dtype_promotion("standard"):  # optax's Adam: decay ** int32 count
            return super()._replica_step(state, x, y, key)


def load_data(name: str) -> ArrayData:
    """A grayscale dataset, scaled by 1/256 with the training mean image subtracted.

    As the authors' loader for MNIST; ``digits`` (8x8) is the offline substitute.
    """
    ds = data_lib.load(name)
    p = data_lib.preprocess(ds, scale=1 / 256)
    mean = p.x_train.mean(axis=0, dtype=np.float64).astype(np.float32)
    source = ds.source if ds.source == ds.origin else f"{ds.source} (origin: {ds.origin})"
    notes = "uint8 / 256, training mean image subtracted"
    return ArrayData(p.x_train - mean, p.y_train, p.x_test - mean, p.y_test, ds.name, source, notes)


def cells(preset: Preset, seeds: list[int]) -> list[Cell]:
    """One cell per arm, all seeds of a cell trained as vmapped replicas; sparse VD first."""
    return [
        Cell(f"arm={arm}/seeds={seeds[0]}-{seeds[-1]}", {"arm": arm, "seeds": seeds})
        for arm in preset.arms
    ]


def _log_alpha_histogram(params: Any) -> list[int]:
    """Counts of every weight's (clipped) log alpha in :data:`HIST_BINS`."""
    counts = np.zeros(len(HIST_BINS) - 1, np.int64)
    for layer in params.values():
        la = dropjax.variational_log_alpha(layer["kernel"], layer["log_sigma2"])
        counts += np.histogram(np.asarray(la), HIST_BINS)[0]
    return counts.tolist()


def measure(data: ArrayData, cfg: VDConfig, quiet: bool):
    """``measure(cell, checkpoint_dir, budget)``: trains one cell's seeds, then measures."""

    def run_cell(cell: Cell, checkpoint_dir: Path, budget) -> dict[str, Any]:
        arm, seeds = cell.params["arm"], cell.params["seeds"]
        model = LeNet300100(variational=arm == "sparse_vd", num_classes=int(data.y_train.max()) + 1)
        trainer = ELBOTrainer(model, data, cfg)
        result = trainer.run(
            seeds,
            checkpoint_dir=checkpoint_dir,
            callback=budget.callback,
            quiet=quiet or None,
            desc=f"{arm} seeds {seeds[0]}-{seeds[-1]}",
        )
        out = result.to_json()
        out["test_error"] = [1.0 - a for a in out["final"]["test_acc"]]
        if arm == "sparse_vd":
            per_seed = host_replicas(result.state.params)
            out["sparsity"] = [djnn.sparsity(p, THRESHOLD) for p in per_seed]
            out["log_alpha_histogram"] = [_log_alpha_histogram(p) for p in per_seed]
        return out

    return run_cell


def _verdict_at_least(ci: dict, target: float) -> str:
    lo, hi = ci["ci_low"], ci["ci_high"]
    if lo is None or hi is None:
        return "inconclusive"
    return "reproduced" if lo >= target else ("not reproduced" if hi < target else "inconclusive")


def _verdict_at_most(ci: dict, target: float) -> str:
    lo, hi = ci["ci_low"], ci["ci_high"]
    if lo is None or hi is None:
        return "inconclusive"
    return "reproduced" if hi <= target else ("not reproduced" if lo > target else "inconclusive")


def decide(summary: dict[str, Any], coverage: float, substitute: bool) -> dict[str, Any]:
    """The compression and error verdicts, combined; the headline with the coverage rule."""
    vd = summary["sparse_vd"]
    compression_target = PAPER["compression"] * (1 - COMPRESSION_TOLERANCE)
    error_target = PAPER["error_sparse_vd"] + ERROR_TOLERANCE
    parts = {
        "compression": _verdict_at_least(vd["compression"], compression_target),
        "error": _verdict_at_most(vd["test_error"], error_target),
    }
    if all(v == "reproduced" for v in parts.values()):
        verdict = "reproduced"
    elif any(v == "not reproduced" for v in parts.values()):
        verdict = "not reproduced"
    else:
        verdict = "inconclusive"
    full = coverage >= 1.0 - 1e-9 and not substitute
    return {
        "verdicts": parts,
        "targets": {"compression_at_least": compression_target, "error_at_most": error_target},
        "coverage": coverage,
        "substitute": substitute,
        "raw_verdict": verdict,
        "verdict": verdict if full or verdict == "inconclusive" else "indicative",
    }


def summarise(done: dict[str, dict[str, Any]], arms: tuple[str, ...]) -> dict[str, Any]:
    """Per arm: error (and for sparse VD compression, per-layer non-zero fraction) with CIs."""
    summary: dict[str, Any] = {}
    for record in done.values():
        arm, result = record["params"]["arm"], record["result"]
        entry = {
            "seeds": record["params"]["seeds"],
            "test_error": stats.mean_ci(result["test_error"]),
        }
        if arm == "sparse_vd":
            sp = result["sparsity"]
            entry["compression"] = stats.mean_ci([s["total"]["compression"] for s in sp])
            entry["nonzero_fraction"] = {
                layer: stats.mean_ci([1.0 - s["layers"][layer]["zero_fraction"] for s in sp])
                for layer in sp[0]["layers"]
            }
        summary[arm] = entry
    if "dense" in arms and "sparse_vd" in summary and "dense" in summary:
        a = done_result(done, "dense")["test_error"]
        b = done_result(done, "sparse_vd")["test_error"]
        summary["error_sparse_minus_dense"] = stats.paired_difference(a, b)
    return summary


def done_result(done: dict[str, dict[str, Any]], arm: str) -> dict[str, Any]:
    """The result of the cell of ``arm``."""
    return next(r["result"] for r in done.values() if r["params"]["arm"] == arm)


def _plot(results: dict[str, Any], path: Path) -> None:
    """Test error of the pruned network per epoch, and the final log-alpha histogram."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    spe = results["config"]["train"]["steps_per_epoch"]
    for arm, record in results["arms"].items():
        curves = record["curves"]
        epochs = [c["step"] / spe for c in curves]
        err = 1.0 - np.array([c["test_acc"] for c in curves])
        ax1.plot(epochs, 100 * err.mean(1), marker="o", markersize=3, label=arm)
        ax1.fill_between(epochs, 100 * err.min(1), 100 * err.max(1), alpha=0.2)
    ax1.axhline(100 * PAPER["error_sparse_vd"], ls="--", c="C0", lw=0.8, label="paper sparse VD")
    ax1.axhline(100 * PAPER["error_dense"], ls=":", c="C1", lw=0.8, label="paper dense")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("test error % (pruned network)")
    ax1.legend(fontsize="small")
    ax1.grid(alpha=0.3)
    hist = results["arms"].get("sparse_vd", {}).get("log_alpha_histogram")
    if hist:
        counts = np.sum(hist, axis=0)
        centres = (HIST_BINS[1:] + HIST_BINS[:-1]) / 2
        ax2.bar(centres, counts, width=np.diff(HIST_BINS), color="C0")
        ax2.set_yscale("log")
        ax2.axvline(THRESHOLD, c="k", ls="--", lw=0.8, label=f"threshold {THRESHOLD:g}")
        ax2.set_xlabel("log alpha (clipped to [-8, 8])")
        ax2.set_ylabel("weights (all seeds)")
        ax2.legend(fontsize="small")
    fig.suptitle(f"Sparse VD, LeNet-300-100 on {results['data']['name']}", fontsize="medium")
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=110)


def _ci(entry: dict[str, Any], scale: float = 1.0, fmt: str = ".2f") -> str:
    m = entry["mean"] * scale
    if entry["ci_low"] is None:
        return f"{m:{fmt}} (n={entry['n']})"
    lo, hi = entry["ci_low"] * scale, entry["ci_high"] * scale
    return f"{m:{fmt}} [{lo:{fmt}}, {hi:{fmt}}] (n={entry['n']})"


def render(results: dict[str, Any]) -> str:
    """The markdown table: the paper's Table 1 row next to ours, then the verdict."""
    s, t = results["summary"], results["config"]["train"]
    vd = s.get("sparse_vd")
    rows = [
        "| network | paper error % | ours error % [95% CI] | paper compression "
        "| ours compression [95% CI] | ours non-zero % per layer |",
        "|---|---|---|---|---|---|",
    ]
    if vd:
        layers = " – ".join(f"{100 * v['mean']:.1f}" for v in vd["nonzero_fraction"].values())
        rows.append(
            f"| sparse VD | {100 * PAPER['error_sparse_vd']:.2f} | {_ci(vd['test_error'], 100)} "
            f"| {PAPER['compression']:g} | {_ci(vd['compression'], 1, '.1f')} | {layers} |"
        )
    if "dense" in s:
        rows.append(
            f"| dense | {100 * PAPER['error_dense']:.2f} | {_ci(s['dense']['test_error'], 100)} "
            "| 1 | 1 | 100 – 100 – 100 |"
        )
    d = results["decision"]
    lines = [
        f"**LeNet-300-100 on {results['data']['name']}** ({results['data']['source']}): "
        f"{results['config']['epochs']} epochs of batch {t['batch_size']} (protocol coverage "
        f"{d['coverage']:.0%} of the paper's {PAPER_EPOCHS}), Adam lr {t['learning_rate']:g} "
        f"decayed linearly from epoch {t['lr_decay_epoch']}, KL weight 0 → 1 over epochs "
        f"{t['kl_start_epoch']}–{t['kl_end_epoch']}, threshold log α > {THRESHOLD:g}; seeds "
        f"{results['seeds']}. Mean [95% t-interval] over seeds.",
        "",
        *rows,
        "",
    ]
    if "error_sparse_minus_dense" in s:
        diff = s["error_sparse_minus_dense"]
        ci = (
            "n/a"
            if not np.isfinite(diff["ci_low"])
            else (f"[{100 * diff['ci_low']:+.2f}, {100 * diff['ci_high']:+.2f}]")
        )
        lines.append(
            f"Paired error difference sparse VD − dense: {100 * diff['mean']:+.2f} points {ci} "
            f"(paper: {100 * (PAPER['error_sparse_vd'] - PAPER['error_dense']):+.2f})."
        )
    tg = d["targets"]
    lines.append(
        f"Compression ≥ {tg['compression_at_least']:.1f}x: **{d['verdicts']['compression']}**; "
        f"error ≤ {100 * tg['error_at_most']:.2f} %: **{d['verdicts']['error']}** → "
        f"**{d['raw_verdict']}**"
        + (
            ""
            if d["verdict"] == d["raw_verdict"]
            else f", headline **{d['verdict']}** (coverage {d['coverage']:.0%}"
            + (", substitute dataset" if d["substitute"] else "")
            + ")"
        )
        + f" ({results['source']})."
    )
    return "\n".join(lines)


def run(ctx: RunContext) -> Outcome:
    """Trains each arm's seeds (one cell per arm), measures, decides the claim."""
    preset = PRESETS[ctx.preset]
    data = load_data(ctx.dataset or preset.dataset)
    seeds = ctx.seeds(preset.replicas)
    replicas = len(seeds)
    cfg = preset.protocol.config(data.num_train)
    config = {
        "train": dataclasses.asdict(cfg),
        "data": [data.name, data.fingerprint()],
        "arms": list(preset.arms),
        "model": "LeNet-300-100",
    }
    grid = grid_for(ctx, config)
    grid_cells = cells(preset, seeds)
    done = grid.run(grid_cells, measure(data, cfg, ctx.quiet))
    records = {c.id: {"params": c.params, "result": done[c.id]} for c in grid_cells}
    summary = summarise(records, preset.arms)
    coverage = min(1.0, preset.protocol.epochs / PAPER_EPOCHS)
    results = {
        "source": SOURCE,
        "claim": "sparse variational dropout trains LeNet-300-100 on MNIST to 1.92 % test error "
        "with 68x fewer non-zero weights (dense: 1.64 %)",
        "config": {
            "model": "LeNet-300-100 (784-300-100-10, ReLU), N(0, 0.01^2) weights",
            "arms": list(preset.arms),
            "replicas": replicas,
            "epochs": preset.protocol.epochs,
            "threshold": THRESHOLD,
            "train": dataclasses.asdict(cfg),
        },
        "data": data.describe(),
        "seeds": seeds,
        "paper": PAPER,
        "summary": summary,
        "decision": decide(summary, coverage, data.name != "mnist"),
        "arms": {r["params"]["arm"]: r["result"] for r in records.values()},
    }
    results["verdict"] = results["decision"]["verdict"]
    results["figure"] = plots.publish(_plot, results, ctx.out_dir, ctx.preset, "error_compression")
    return Outcome(results, grid)


CLAIM = Claim(
    NAME,
    "Sparse VD on LeNet-300-100: error and compression (Molchanov et al. Table 1)",
    PRESETS,
    run,
    render,
)
