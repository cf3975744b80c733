"""The cells of :mod:`experiments.claims.backprojection`: what each measures, and how they are
summarised and decided."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import dropjax
from experiments.claims.backprojection._protocol import (
    ARMS,
    DELTA,
    EQUIVALENCE,
    GAIN,
    NO_DROP,
    NOISES,
    UNBOUNDED,
    UNIT_BOX,
    BackprojMLP,
    Preset,
    _fit,
    hidden_activations,
    noisy_activations,
)
from experiments.harness import stats
from experiments.harness.protocols import epochs_protocol
from experiments.harness.recipes import flat_images
from experiments.harness.train import ArrayData, TrainConfig, resume_options, train


def matching_error(clean: jax.Array, target: jax.Array, matched: jax.Array) -> float:
    """:math:`\\lVert f(x^*) - \\tilde f(x)\\rVert / \\lVert \\tilde f(x) - f(x)\\rVert`,
    pooled over the examples."""
    noise = jnp.linalg.norm(target - clean)
    return float(jnp.linalg.norm(matched - target) / jnp.maximum(noise, 1e-12))


def _match_record(params, x, x_star, targets, n: int) -> dict[str, Any]:
    clean = hidden_activations(params, x, n)
    got = hidden_activations(params, x_star, n)
    return {
        "error": [matching_error(c, t, g) for c, t, g in zip(clean, targets, got, strict=True)],
        "displacement": float(
            jnp.mean(jnp.linalg.norm(x_star - x, axis=-1) / jnp.linalg.norm(x, axis=-1))
        ),
        "outside_unit_box": float(jnp.mean((x_star < 0.0) | (x_star > 1.0))),
    }


def match(params, x: np.ndarray, preset: Preset, key: jax.Array) -> dict[str, Any]:
    """x(i)* per hidden layer for ``viz_samples`` masks of each input, both noises.

    Returns per ``noise/layer``: the samples (for the figures) and the matching record (the
    error of every layer, the relative displacement ``||x* - x|| / ||x||``, the fraction of
    pixels outside [0, 1]); ``joint``: one x* for all layers at once (dropout noise);
    ``box``: per layer in the box [0, 1] (dropout noise).
    """
    n = len(preset.hidden)
    xr = jnp.repeat(jnp.asarray(x), preset.viz_samples, axis=0)
    gn = (preset.viz_gn, preset.viz_cg, preset.viz_damping)
    samples, records = {}, {}
    for j, kind in enumerate(NOISES):
        rate = preset.rate if kind == "standard" else preset.random_max
        targets = noisy_activations(params, xr, n, jax.random.fold_in(key, j), rate, kind)
        for layer in range(n):
            x_star = _fit(params, xr, targets[layer], layer, *gn, UNBOUNDED).x
            name = f"{kind}/layer {layer + 1}"
            samples[name] = np.asarray(x_star).reshape(len(x), preset.viz_samples, -1)
            records[name] = _match_record(params, xr, x_star, targets, n)
            if kind == "standard":
                boxed = _fit(params, xr, targets[layer], layer, *gn, UNIT_BOX).x
                records[f"box/layer {layer + 1}"] = _match_record(params, xr, boxed, targets, n)
        if kind == "standard":
            clean = hidden_activations(params, xr, n)
            weights = [
                float(1.0 / jnp.sum((t - c) ** 2)) for t, c in zip(targets, clean, strict=True)
            ]
            joint = dropjax.backproject(
                lambda z: hidden_activations(params, z, n),
                targets,
                xr,
                steps=preset.viz_gn,
                method="gauss_newton",
                cg_steps=preset.viz_cg,
                damping=preset.viz_damping,
                layer_weights=weights,
            ).x
            records["joint"] = _match_record(params, xr, joint, targets, n)
    return {"samples": samples, "records": records}


def training_matching(params, x: np.ndarray, preset: Preset, key: jax.Array) -> list[float]:
    """The matching error per layer that the training arm's x(i)* reach (its budget), on
    the final ``backproject`` network, each layer's x(i)* from its own masks."""
    n = len(preset.hidden)
    x = jnp.asarray(x)
    out = []
    for i, k in enumerate(jax.random.split(key, n)):
        target = noisy_activations(params, x, i + 1, k, preset.rate, "standard")[i]
        x_star = _fit(
            params, x, target, i, preset.train_gn[i], preset.train_cg, preset.damping, UNBOUNDED
        ).x
        out.append(
            matching_error(
                hidden_activations(params, x, i + 1)[i],
                target,
                hidden_activations(params, x_star, i + 1)[i],
            )
        )
    return out


def load_data(name: str, train_size: int | None) -> ArrayData:
    """The flattened dataset in [0, 1]; the first ``train_size`` training images."""
    return flat_images(name, train_size)


def train_config(preset: Preset, num_train: int) -> TrainConfig:
    """SGD with momentum; the test set is evaluated about ten times in the run."""
    return epochs_protocol(preset, num_train, epochs_per_eval=max(1, preset.epochs // 10))


def measure(
    preset: Preset,
    data: ArrayData,
    seeds: list[int],
    quiet: bool,
    checkpoint_dir: Path | None = None,
    budget: Any = None,
) -> dict[str, Any]:
    """Trains the three arms on the same seeds; back-projects on the trained networks.

    With ``checkpoint_dir`` (the run's one cell's folder) each arm checkpoints in a subfolder
    of its own at every evaluation and stops cleanly when ``budget`` is spent; a rerun
    restores a finished arm from its last checkpoint (its parameters are needed for the
    back-projection) and resumes the arm in flight."""
    cfg = train_config(preset, data.num_train)
    arms, replica0 = {}, {}
    for arm in ARMS:
        model = BackprojMLP(
            preset.hidden, arm, preset.rate, preset.train_gn, preset.train_cg, preset.damping
        )
        result = train(
            model,
            data,
            cfg,
            seeds,
            **resume_options(checkpoint_dir, budget, arm),
            quiet=quiet or None,
            desc=arm,
        )
        arms[arm] = result.to_json()
        replica0[arm] = jax.tree.map(lambda a: a[0], result.state.params)
    x_viz = data.x_test[: preset.viz_inputs]
    matched = match(replica0["dropout"], x_viz, preset, jax.random.key(seeds[0] + 12345))
    in_training = training_matching(
        replica0["backproject"], data.x_train[:100], preset, jax.random.key(seeds[0] + 777)
    )
    return {
        "train": cfg,
        "arms": arms,
        "x_viz": x_viz,
        "matched": matched,
        "training_matching": in_training,
    }


def summarise(arms: dict[str, Any]) -> dict[str, Any]:
    """Final test error (%) per replica and its mean ± std, per arm."""
    errors = {a: [100 * (1 - v) for v in arms[a]["final"]["test_acc"]] for a in ARMS}
    return {"errors": errors, "summary": {a: stats.mean_std(errors[a]) for a in ARMS}}


def no_drop_verdict(comparison: dict[str, Any]) -> str:
    """The paper's "no significant drop" decided from backproject − dropout (a drop, sign
    +): a drop reaching δ contradicts it; no drop as large as δ, a drop smaller than δ, or
    backproject better than dropout reproduce it. Below full coverage: indicative.

    Examples:
      >>> from experiments.claims.backprojection import no_drop_verdict
      >>> no_drop_verdict({"verdict": "reproduced", "coverage": 1.0})
      'contradicted'
      >>> no_drop_verdict({"verdict": "refuted", "coverage": 0.002})
      'indicative (interval: reproduced)'
    """
    claim = NO_DROP.get(comparison["verdict"], "inconclusive")
    if claim != "inconclusive" and comparison.get("scaled"):
        return f"{claim} (decided at a scaled protocol)"
    if claim != "inconclusive" and comparison.get("coverage", 1.0) < 1.0 - 1e-9:
        return f"indicative (interval: {claim})"
    return claim


def _label(decision: dict[str, Any], readings: dict[str, str]) -> str:
    """The headline with what the interval says (``indicative (a drop)``)."""
    reading = readings.get(decision["verdict"])
    if reading is None:
        return decision["headline"]
    return f"{decision['headline']} ({reading})"


def decide(errors: dict[str, list[float]], coverage: float, scaled: bool = False) -> dict[str, Any]:
    """The paired comparisons, decided against ``DELTA``; the headline and its evidence.

    The evidence record rests on backproject − plain (the directional part of the claim);
    the verdict line also says what backproject − dropout shows (the "no significant drop"
    part, an equivalence reading of the same :func:`stats.decide`).
    """
    comparisons = {}
    for name, arm, base, sign in (
        ("backproject − plain", "backproject", "plain", -1),
        ("dropout − plain", "dropout", "plain", -1),
        ("backproject − dropout", "backproject", "dropout", +1),
    ):
        diff = stats.paired_difference(errors[base], errors[arm])
        comparisons[name] = {
            "difference": diff,
            **stats.decide(diff, sign, DELTA, coverage=coverage, scaled=scaled),
        }
    head = comparisons["backproject − plain"]
    eq = comparisons["backproject − dropout"]
    eq["reading"] = EQUIVALENCE.get(eq["verdict"], "inconclusive")
    head["reading"] = GAIN.get(head["verdict"], "inconclusive")
    comparisons["dropout − plain"]["reading"] = GAIN.get(
        comparisons["dropout − plain"]["verdict"], "inconclusive"
    )
    return {
        "comparisons": comparisons,
        "coverage": coverage,
        "verdict": f"vs plain: {_label(head, GAIN)}; no significant drop vs dropout: "
        f"{no_drop_verdict(eq)} ({eq['reading']})",
        "evidence": stats.evidence(head, coverage=coverage, substitute=False, delta=DELTA),
    }
