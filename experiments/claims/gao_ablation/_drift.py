"""End-of-run drift in :mod:`experiments.claims.gao_ablation`: which arms' training loss
rises again before the last iteration, where the rise starts relative to the learning-rate
drop, and how much of a contrast's final difference it carries.

Read from the curves the cells already record (one evaluation every ``eval_every``
iterations); nothing is trained for it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from experiments.harness import stats

DRIFT_RISE = 0.2
"""An arm drifts when its mean training loss ends more than 20 % above its minimum."""


def _curve(run: dict[str, Any], metric: str) -> np.ndarray:
    """``[step, replica]`` values of ``metric``."""
    return np.asarray([c[metric] for c in run["curves"]], dtype=np.float64)


def _largest_rise(loss: np.ndarray) -> float:
    """The largest ratio, minus 1, of a value over the running minimum before it."""
    return float(np.max(loss / np.minimum.accumulate(loss)) - 1.0) if len(loss) else 0.0


def arm_drift(run: dict[str, Any], drop: int | None) -> dict[str, Any]:
    """One arm's training loss and test accuracy along its run (means over replicas).

    ``drop`` is the iteration of the first learning-rate drop (None: no drop). Returns the
    minimum of the mean training loss and its step, the final value and the rise between
    them, the largest rise before the drop, test accuracy at the first evaluation after the
    drop, at its best evaluation and at the end, and how many replicas drift on their own.

    Examples:
      >>> from experiments.claims.gao_ablation._drift import arm_drift
      >>> run = {"curves": [
      ...     {"step": s, "train_loss": [l, l], "test_acc": [a, a]}
      ...     for s, l, a in [(1, 2.0, 0.5), (2, 1.0, 0.7), (3, 0.5, 0.8), (4, 1.0, 0.6)]]}
      >>> d = arm_drift(run, drop=2)
      >>> d["loss_min_step"], d["loss_rise"], d["after_drop_step"], d["drifts"]
      (3, 1.0, 3, True)
    """
    steps = [int(c["step"]) for c in run["curves"]]
    loss, acc = _curve(run, "train_loss"), _curve(run, "test_acc")
    mean_loss, mean_acc = loss.mean(1), acc.mean(1)
    low = int(np.argmin(mean_loss))
    best = int(np.argmax(mean_acc))
    after = next((i for i, s in enumerate(steps) if drop is not None and s > drop), None)
    before = [i for i, s in enumerate(steps) if drop is None or s <= drop]
    rise = float(mean_loss[-1] / mean_loss[low] - 1.0)
    own = loss[-1] / loss.min(0) - 1.0  # each replica against its own minimum
    return {
        "loss_min": float(mean_loss[low]),
        "loss_min_step": steps[low],
        "loss_final": float(mean_loss[-1]),
        "loss_rise": rise,
        "rise_before_drop": _largest_rise(mean_loss[before]),
        "after_drop_step": None if after is None else steps[after],
        "acc_after_drop": None if after is None else float(mean_acc[after]),
        "acc_best": float(mean_acc[best]),
        "acc_best_step": steps[best],
        "acc_final": float(mean_acc[-1]),
        "replicas_drifting": int(np.sum(own > DRIFT_RISE)),
        "replicas": int(loss.shape[1]),
        "drifts": rise > DRIFT_RISE,
    }


def _at(run: dict[str, Any], where: str | int) -> dict[int, float]:
    """``{seed: test accuracy}`` at step ``where``, or at each seed's best evaluation
    (``"best"``) or its end (``"final"``)."""
    acc = _curve(run, "test_acc")
    if where == "best":
        values = acc.max(0)
    elif where == "final":
        values = np.asarray(run["final"]["test_acc"], dtype=np.float64)
    else:
        values = acc[[int(c["step"]) for c in run["curves"]].index(int(where))]
    return dict(zip(run["seeds"], values.tolist(), strict=True))


def _difference(base: dict, other: dict, where: str | int) -> dict[str, Any] | None:
    b, o = _at(base, where), _at(other, where)
    common = sorted(set(b) & set(o))
    if len(common) < 2:
        return None
    return stats.paired_difference([b[s] for s in common], [o[s] for s in common])


def drift(runs: dict[str, Any], train: dict[str, Any], spec: stats.DecisionSpec) -> dict:
    """Every trained arm's drift (:func:`arm_drift`), and for each drifting arm the spec's
    contrasts that involve it, at three points: the first evaluation after the learning-rate
    drop (fixed by the protocol), each seed's best evaluation (chosen on the test set: an
    optimistic bound) and the end (what the verdict uses)."""
    drop = (train.get("lr_boundaries") or [None])[0]
    arms: dict[str, dict] = {}
    if runs.get("plain"):
        arms["plain"] = arm_drift(runs["plain"], drop)
    for arm, by_rate in runs.items():
        if arm != "plain":
            arms.update({f"{arm}@{k}": arm_drift(run, drop) for k, run in by_rate.items()})

    def run_of(arm: str, cell: str) -> dict | None:
        return runs.get("plain") if arm == "plain" else runs.get(arm, {}).get(cell)

    contrasts = []
    seen = set()
    for c in spec.contrasts:
        names = {f"{c.other}@{c.cell}", f"{c.base}@{c.cell}"}
        if c.label in seen or not any(arms.get(n, {}).get("drifts") for n in names):
            continue
        base, other = run_of(c.base, c.cell), run_of(c.other, c.cell)
        if base is None or other is None:
            continue
        seen.add(c.label)
        after = next((a["after_drop_step"] for n in names if (a := arms.get(n))), None)
        points = {"after_drop": after, "best": "best", "final": "final"}
        contrasts.append(
            {
                "comparison": c.label,
                "claim": c.claim,
                "sign": c.sign,
                **{
                    k: None if w is None else _difference(base, other, w) for k, w in points.items()
                },
            }
        )
    return {"drop": drop, "threshold": DRIFT_RISE, "arms": arms, "contrasts": contrasts}
