r"""``graph_homophily``: does dropping connections hurt under homophily and help under heterophily?

**The claim** (seed 000, "The Art of Dropping"): a GNN can drop node *features* or its
*connections* ("node/edge dropout, which randomly removes its connections to its
neighbors"); "If neighbors tend to be similar (homophily), dropping connections can be
harmful. But if neighbors tend to be different (heterophily), dropping misleading messages
from them can actually help the model learn better!" The seed states it qualitatively, with
no dataset, model, rate or effect size. We read it as three predictions about test accuracy:

* **P1 (homophily hurts)**: where most neighbours share a node's label, edge dropout
  lowers accuracy: ``edge - none < 0``;
* **P2 (heterophily helps)**: where neighbours' labels mislead, edge dropout raises it:
  ``edge - none > 0``;
* **P3 (the choice depends on the graph)**, secondary: feature dropout is the better choice
  under homophily and edge dropout under heterophily: ``edge - feature`` has P2's sign under
  heterophily and P1's under homophily.

The headline is P1 and P2 (the seed's two explicit sentences), decided per homophily level.
The seed says nothing about the direction of feature dropout, so ``feature - none`` is
reported without a claim.

**Data: a contextual stochastic block model with K >= 3 classes.** ``N`` nodes in ``K``
balanced classes; features :math:`x_i = \mu\,u_{y_i} + \varepsilon_i` with
:math:`u_1..u_K` orthonormal random directions in :math:`\mathbb R^d` and
:math:`\varepsilon_i \sim \mathcal N(0, I_d)`; exactly :math:`E = N\bar d/2` undirected
edges (stored in both directions), each drawn by picking an endpoint uniformly among all
nodes and then the other endpoint uniformly in the *same* class (for a fraction :math:`h` of
the edges) or uniformly in one of the :math:`K-1` *other* classes, that class itself drawn
uniformly. The edge homophily is :math:`h` by construction (no self loops; the rare
multi-edge is kept). A neighbour of a class-:math:`c` node therefore has label :math:`c`
with probability :math:`h` and each other label with probability :math:`(1-h)/(K-1)`.
Unlike the two-class model, where a heterophilous neighbour *always* carries the other label
(so its features are informative with a flipped sign), here a heterophilous neighbour is any
of the other classes at random: below :math:`h = 1/K` every wrong label is more frequent
among a node's neighbours than its own, so a neighbour's label *misleads*; at :math:`h = 1/K`
the neighbours' labels are independent of the node's. (The neighbours' mean feature below
:math:`1/K` still depends on the node's class, as the mean of the other classes' means, so
a model could in principle decode it; the GCN, which sums a node's own features and its
neighbours' with the same weights, is pulled towards the wrong classes.) The regimes:

* heterophily, claim P2: :math:`h < 1/K` (neighbours' labels mislead);
* homophily, claim P1: :math:`h > 1/2` (most neighbours share the label);
* :math:`1/K \le h \le 1/2`: no claim (at least half of the neighbours differ, yet the
  node's own label is still their most frequent one, so neither of the seed's sentences
  describes it).

A random fraction ``train_frac`` of the nodes is labelled for training; the accuracy is
measured on all the others.

**Model and arms.** :class:`experiments.harness.models.GCN` (Kipf & Welling's two-layer GCN,
:math:`\hat A = \hat D^{-1/2}(A+I)\hat D^{-1/2}` from :func:`dropjax.gcn_normalize`),
trained full batch with Adam on the cross-entropy of the labelled nodes, with Kipf &
Welling's schedule (200 steps, learning rate 0.01, L2 weight decay 5e-4, dropout rate 0.5;
the decay is added to the gradient of every parameter, where they put it on the first layer
only), hidden size 32, no early stopping. All rates are 0.5 and are not swept. Arms, all
trained on the same graph from the same initial parameters and keys (paired by seed):

* ``none``: no dropout;
* ``feature``: inverted dropout (:class:`dropjax.linen.Dropout`) on the inputs of both
  graph convolutions;
* ``edge``: DropEdge, :func:`dropjax.edge_dropout` at ``edge_rate`` on the directed edge
  list (the GCN's own DropEdge: each direction of an undirected edge independently), then
  :func:`dropjax.gcn_normalize` over the surviving edges, a fresh graph every step;
* ``node`` (secondary): DropNode, :func:`dropjax.node_dropout` on the input feature rows
  (a dropped node sends no message in the first convolution, rows rescaled by
  :math:`1/(1-p)`);
* ``mlp`` (reference, not decided): the same network on the graph without edges (only the
  self loops), i.e. a two-layer MLP. Where the GCN without dropout is *below* this line,
  the neighbours' messages cost accuracy: this is where they actually mislead this model.

Evaluation uses the full graph and no dropout.

**Decision.** Per homophily level, the paired difference over seeds (one graph per seed)
with its 95 % Student-t interval, decided by :func:`experiments.harness.stats.decide` against
``DELTA`` = 0.02 (2 percentage points of test accuracy). The seed gives no effect size; 2 pp
is the smallest change that would make a practitioner pick one dropout over the other here:
it is about the standard error of a single accuracy on the quick preset's 1,080 test nodes
(:math:`\sqrt{0.7 \cdot 0.3 / 1080} \approx 0.014`), so a smaller effect is not visible in
one training run. The headline combines the decided levels of P1 and P2
(:func:`experiments.harness.stats.combine_decisions`: any contradicted level contradicts the
claim). **Coverage**: the seed states no protocol, so there is no fraction of a source
protocol to run; ``coverage`` is recorded as None ("no source protocol") and the headline is
what the intervals say (it was 0 before, which made every headline *indicative* and hid
contradictions). The data are synthetic by design (the seed names no dataset), recorded as ``real``
(not a substitute for a dataset the source used).

Presets: ``smoke`` (seconds, CI), ``quick`` (K = 3, N = 1200, 20 seeds, 7 homophily levels,
Kipf's 200 steps; a few minutes on one CPU core) and ``paper`` (K = 3 and K = 5, N = 3000,
40 seeds, 12 levels).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import dropjax
from experiments.harness import plots, stats
from experiments.harness.claim import Claim, one_shot
from experiments.harness.models import GCN, DropoutConfig
from experiments.harness.results import RunContext, save_figure_atomic

NAME = "graph_homophily"
CLAIM_TEXT = (
    '"If neighbors tend to be similar (homophily), dropping connections can be harmful. But '
    "if neighbors tend to be different (heterophily), dropping misleading messages from them "
    'can actually help the model learn better!"'
)
SOURCE = "seed 000 (explainer 'Inverted Dropout'), section 'The Art of Dropping'"
ARMS = ("none", "feature", "edge", "node", "mlp")
DELTA = 0.02
"""The minimal effect (test accuracy, absolute) the claim is decided against."""
COVERAGE = None  # the seed states no protocol: nothing to cover, the design is ours
"""The seed has no protocol; see the module docstring."""
COMPARISONS = {  # name: (arm, baseline, decided by)
    "edge - none": ("edge", "none", "P1/P2 (headline)"),
    "edge - feature": ("edge", "feature", "P3"),
    "node - none": ("node", "none", "P1/P2 (node dropout)"),
    "feature - none": ("feature", "none", None),
}


@dataclasses.dataclass(frozen=True)
class Preset:
    """The graphs, the model and the training schedule of one preset.

    Attributes:
      classes: the numbers of classes K, one sweep each (every K >= 3).
      homophily: the edge homophily levels h of the sweep.
      seeds: graphs (and paired runs) per (K, h).
      nodes: N.
      degree: mean degree (the graph has N * degree / 2 undirected edges).
      dim: feature dimension d.
      mu: distance of each class mean from the origin, in noise standard deviations.
      train_frac: fraction of labelled nodes.
      hidden: GCN hidden size.
      steps: full-batch Adam steps.
      lr: Adam learning rate.
      weight_decay: L2 coefficient added to the gradient.
      feature_rate: feature-dropout rate.
      edge_rate: DropEdge rate.
      node_rate: DropNode rate.
    """

    classes: tuple[int, ...]
    homophily: tuple[float, ...]
    seeds: int
    nodes: int
    degree: int = 10
    dim: int = 16
    mu: float = 1.0
    train_frac: float = 0.1
    hidden: int = 32
    steps: int = 200
    lr: float = 0.01
    weight_decay: float = 5e-4
    feature_rate: float = 0.5
    edge_rate: float = 0.5
    node_rate: float = 0.5


PRESETS = {
    "smoke": Preset(classes=(3,), homophily=(0.0, 0.9), seeds=3, nodes=150, steps=40),
    "quick": Preset(
        classes=(3,), homophily=(0.0, 0.1, 0.2, 1 / 3, 0.5, 0.7, 0.9), seeds=20, nodes=1200
    ),
    "paper": Preset(
        classes=(3, 5),
        homophily=(0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
        seeds=40,
        nodes=3000,
    ),
}


# ------------------------------------------------------------------------------- data
def make_csbm(
    seed: int,
    *,
    nodes: int,
    classes: int,
    degree: int,
    homophily: float,
    dim: int,
    mu: float,
    train_frac: float,
) -> dict[str, np.ndarray]:
    """A K-class contextual SBM whose heterophilous edges pick the other class uniformly.

    Returns ``senders``/``receivers`` (``int32[2E]``: the first ``E`` entries are one
    direction of each undirected edge, the next ``E`` the reverse), ``x`` ``float32[N, dim]``,
    ``y`` ``int32[N]`` (balanced classes) and the boolean ``train``/``test`` masks.
    Exactly ``round(homophily * E)`` edges join two nodes of the same class.

    Examples:
      >>> from experiments.claims.graph_homophily import edge_homophily, make_csbm
      >>> g = make_csbm(0, nodes=300, classes=3, degree=10, homophily=0.2, dim=8, mu=1.0,
      ...               train_frac=0.1)
      >>> g["senders"].shape, g["x"].shape, int(g["train"].sum())
      ((3000,), (300, 8), 30)
      >>> edge_homophily(g["senders"], g["receivers"], g["y"])
      0.2
    """
    if classes < 2 or dim < classes:
        raise ValueError(f"make_csbm needs 2 <= classes <= dim; got {classes} and {dim}")
    rng = np.random.default_rng([seed, classes, int(round(1e6 * homophily))])
    y = rng.permutation(np.arange(nodes) % classes).astype(np.int32)
    members = [np.flatnonzero(y == c) for c in range(classes)]
    sizes = np.array([m.size for m in members])
    position = np.empty(nodes, np.int64)  # index of each node within its class
    for m in members:
        position[m] = np.arange(m.size)
    num_edges = nodes * degree // 2
    n_same = int(round(homophily * num_edges))
    src = rng.integers(0, nodes, size=num_edges)
    offset = np.zeros(num_edges, np.int64)  # the other endpoint's class is y[src] + offset
    offset[n_same:] = rng.integers(1, classes, size=num_edges - n_same)
    target = (y[src] + offset) % classes
    index = rng.integers(0, sizes[target])  # a uniform member of the target class ...
    same = np.arange(num_edges) < n_same
    # ... except that a same-class edge skips src: a uniform member among the other ones.
    index[same] = (position[src[same]] + rng.integers(1, sizes[target[same]])) % sizes[target[same]]
    dst = np.empty(num_edges, np.int64)
    for c in range(classes):
        sel = target == c
        dst[sel] = members[c][index[sel]]
    basis, _ = np.linalg.qr(rng.normal(size=(dim, classes)))
    x = mu * basis.T[y] + rng.normal(size=(nodes, dim))
    train = np.zeros(nodes, bool)
    train[rng.choice(nodes, size=int(round(train_frac * nodes)), replace=False)] = True
    return dict(
        senders=np.concatenate([src, dst]).astype(np.int32),
        receivers=np.concatenate([dst, src]).astype(np.int32),
        x=x.astype(np.float32),
        y=y,
        train=train,
        test=~train,
    )


def edge_homophily(senders: np.ndarray, receivers: np.ndarray, y: np.ndarray) -> float:
    """Fraction of edges whose two endpoints share a class."""
    return float(np.mean(y[senders] == y[receivers]))


def claimed_sign(homophily: float, classes: int) -> int:
    """The sign the seed predicts for ``edge - none``: +1 below ``1/K``, -1 above 1/2, else 0.

    Examples:
      >>> from experiments.claims.graph_homophily import claimed_sign
      >>> [claimed_sign(h, 3) for h in (0.2, 0.4, 0.8)]
      [1, 0, -1]
    """
    if homophily < 1.0 / classes - 1e-9:
        return 1
    if homophily > 0.5 + 1e-9:
        return -1
    return 0


# ------------------------------------------------------------------------------ model
def _model(arm: str, preset: Preset, classes: int) -> GCN:
    feature = DropoutConfig("standard", preset.feature_rate)
    return GCN(
        hidden=preset.hidden,
        num_classes=classes,
        dropout=feature if arm == "feature" else DropoutConfig("none"),
        edge_rate=preset.edge_rate if arm == "edge" else 0.0,
    )


def _train_one(key, graph, *, arm: str, preset: Preset, classes: int):
    """Trains one GCN arm on one graph; returns (train accuracy, test accuracy)."""
    model = _model(arm, preset, classes)
    x, y = graph["x"], graph["y"]
    senders, receivers = graph["senders"], graph["receivers"]
    if arm == "mlp":  # no edges: gcn_normalize leaves the self loops only
        senders, receivers = senders[:0], receivers[:0]
    k_init, k_train = jax.random.split(key)
    params = model.init(k_init, x, senders, receivers)
    weight = graph["train"].astype(jnp.float32) / jnp.sum(graph["train"].astype(jnp.float32))
    opt = optax.chain(optax.add_decayed_weights(preset.weight_decay), optax.adam(preset.lr))

    def loss(p, k):
        k_node, k_drop = jax.random.split(k)
        inputs = x
        if arm == "node":
            inputs = dropjax.node_dropout(k_node, x, preset.node_rate).x
        logits = model.apply(p, inputs, senders, receivers, train=True, rngs={"dropout": k_drop})
        logp = jax.nn.log_softmax(logits, axis=-1)
        return -jnp.sum(weight * jnp.take_along_axis(logp, y[:, None], axis=-1)[:, 0])

    def step(carry, t):
        p, s = carry
        g = jax.grad(loss)(p, jax.random.fold_in(k_train, t))
        updates, s = opt.update(g, s, p)
        return (optax.apply_updates(p, updates), s), None

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), jnp.arange(preset.steps))
    correct = (jnp.argmax(model.apply(params, x, senders, receivers), -1) == y).astype(jnp.float32)

    def accuracy(mask):
        m = mask.astype(jnp.float32)
        return jnp.sum(correct * m) / jnp.sum(m)

    return accuracy(graph["train"]), accuracy(graph["test"])


@jax.jit(static_argnames=("arm", "preset", "classes"))
def train_seeds(keys, graphs, *, arm: str, preset: Preset, classes: int):
    """:func:`_train_one` vmapped over seeds (leading axis of ``keys`` and ``graphs``)."""
    fn = lambda k, g: _train_one(k, g, arm=arm, preset=preset, classes=classes)
    # optax's Adam bias correction computes ``decay ** count`` (float ** int32), which the
    # strict promotion mode of the test suite rejects; trace the step under standard rules.
    with jax.numpy_dtype_promotion("standard"):
        return jax.vmap(fn)(keys, graphs)


# ---------------------------------------------------------------------- the experiment
def _level_key(classes: int, h: float) -> str:
    return f"K={classes}/h={h:.3f}"


def measure(preset: Preset, seeds: list[int], quiet: bool = True) -> list[dict[str, Any]]:
    """Trains every arm on every (K, h, seed) graph; returns one record per (K, h).

    Each record holds the measured edge homophily of each seed's graph and, per arm, the
    train and test accuracy of each seed (lists in seed order, so arms pair by index).
    """
    records = []
    for classes in preset.classes:
        for h in preset.homophily:
            graphs = [
                make_csbm(
                    s,
                    nodes=preset.nodes,
                    classes=classes,
                    degree=preset.degree,
                    homophily=h,
                    dim=preset.dim,
                    mu=preset.mu,
                    train_frac=preset.train_frac,
                )
                for s in seeds
            ]
            batch = {k: jnp.asarray(np.stack([g[k] for g in graphs])) for k in graphs[0]}
            # One key per seed, the same for every arm: same initial parameters.
            keys = jnp.stack([jax.random.fold_in(jax.random.key(s), classes) for s in seeds])
            record = {
                "classes": classes,
                "homophily": h,
                "measured_homophily": [
                    edge_homophily(g["senders"], g["receivers"], g["y"]) for g in graphs
                ],
                "train_acc": {},
                "test_acc": {},
            }
            for arm in ARMS:
                tr, te = train_seeds(keys, batch, arm=arm, preset=preset, classes=classes)
                record["train_acc"][arm] = np.asarray(tr, np.float64).tolist()
                record["test_acc"][arm] = np.asarray(te, np.float64).tolist()
            if not quiet:
                means = ", ".join(f"{a} {np.mean(record['test_acc'][a]):.3f}" for a in ARMS)
                print(f"[{NAME}] {_level_key(classes, h)}: {means}", flush=True)
            records.append(record)
    return records


def summarise(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (K, h): each arm's mean test accuracy with its 95 % t-interval, the paired
    differences of :data:`COMPARISONS`, and the train-test gap of each arm."""
    rows = []
    for r in records:
        acc = r["test_acc"]
        rows.append(
            {
                "classes": r["classes"],
                "homophily": r["homophily"],
                "measured_homophily": stats.mean_std(r["measured_homophily"]),
                "test_acc": {a: stats.mean_ci(acc[a]) for a in acc},
                "train_minus_test": {
                    a: float(np.mean(r["train_acc"][a]) - np.mean(acc[a])) for a in acc
                },
                "differences": {
                    name: stats.paired_difference(acc[base], acc[arm])
                    for name, (arm, base, _) in COMPARISONS.items()
                },
            }
        )
    return rows


def decide(summary: list[dict[str, Any]]) -> dict[str, Any]:
    """Per level, P1/P2 on ``edge - none`` (and on ``node - none``) and P3 on
    ``edge - feature``, each by :func:`experiments.harness.stats.decide` against ``DELTA``."""
    per_level, headline_cells, node_cells, p3_cells = [], [], [], []
    for row in summary:
        sign = claimed_sign(row["homophily"], row["classes"])
        entry = {"classes": row["classes"], "homophily": row["homophily"], "claimed_sign": sign}
        if sign:
            for name, cells in (
                ("edge - none", headline_cells),
                ("edge - feature", p3_cells),
                ("node - none", node_cells),
            ):
                d = stats.decide(row["differences"][name], sign, DELTA, coverage=COVERAGE)
                entry[name] = d
                cells.append(d)
        per_level.append(entry)
    head = stats.combine_decisions(headline_cells)
    # The weakest decided level's power (a level whose paired differences are all equal has
    # no finite power: its interval has zero width, so it is decided with certainty).
    powers = [d["power"] for d in headline_cells if np.isfinite(d["power"])]
    n = summary[0]["differences"]["edge - none"]["n"] if summary else 0
    return {
        "decisions": per_level,
        "combined": {
            "edge - none (P1, P2)": head,
            "edge - feature (P3)": stats.combine_decisions(p3_cells),
            "node - none (P1, P2)": stats.combine_decisions(node_cells),
        },
        "verdict": head["headline"],
        "evidence": {
            "coverage": COVERAGE,
            "data": "real",  # synthetic by design: the seed names no dataset to substitute
            "power": min(powers) if powers else None,
            "delta": DELTA,
            "pairs": n,
        },
    }


# ------------------------------------------------------------------------------- report
def plot(results: dict[str, Any], path: Path) -> None:
    """Test accuracy vs homophily per arm (95 % CIs), and the paired differences; one row
    of panels per K; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = results["summary"]
    ks = sorted({row["classes"] for row in summary})
    fig, axes = plt.subplots(len(ks), 2, figsize=(12, 4.2 * len(ks)), squeeze=False)
    styles = dict(none="o-", feature="s-", edge="^-", node="v-", mlp=":")
    colors = dict(none="C0", feature="C1", edge="C2", node="C3", mlp="k")
    for (ax1, ax2), k in zip(axes, ks, strict=True):
        rows = [row for row in summary if row["classes"] == k]
        h = np.array([row["homophily"] for row in rows])
        for arm in ARMS:
            acc = [row["test_acc"][arm] for row in rows]
            mean = np.array([a["mean"] for a in acc])
            lo = np.array([a["ci_low"] if a["ci_low"] is not None else a["mean"] for a in acc])
            hi = np.array([a["ci_high"] if a["ci_high"] is not None else a["mean"] for a in acc])
            label = "mlp (no edges, reference)" if arm == "mlp" else arm
            ax1.errorbar(
                h,
                mean,
                yerr=[mean - lo, hi - mean],
                fmt=styles[arm],
                color=colors[arm],
                ms=4,
                capsize=3,
                label=label,
            )
        ax1.set(
            xlabel="edge homophily h",
            ylabel="test accuracy (mean, 95% CI over seeds)",
            title=f"(a) GCN on a {k}-class CSBM",
        )
        ax1.legend(fontsize=8)
        for name, style, color in (
            ("edge - none", "^-", colors["edge"]),
            ("node - none", "v-", colors["node"]),
            ("feature - none", "s-", colors["feature"]),
            ("edge - feature", "d--", "C4"),
        ):
            d = [row["differences"][name] for row in rows]
            mean = np.array([x["mean"] for x in d])
            lo, hi = np.array([x["ci_low"] for x in d]), np.array([x["ci_high"] for x in d])
            ok = np.isfinite(lo) & np.isfinite(hi)
            err = np.where(ok, [mean - lo, hi - mean], 0.0)
            ax2.errorbar(h, mean, yerr=err, fmt=style, color=color, ms=4, capsize=3, label=name)
        ax2.axhline(0.0, color="k", lw=0.8)
        for s in (-DELTA, DELTA):
            ax2.axhline(s, color="grey", lw=0.6, ls=":")
        ax2.axvspan(0.0, 1.0 / k, color="tab:olive", alpha=0.1, label="claim: edge dropout helps")
        ax2.axvspan(0.5, 1.0, color="tab:cyan", alpha=0.1, label="claim: edge dropout hurts")
        ax2.set(
            xlim=(-0.02, 1.0),
            xlabel="edge homophily h",
            ylabel=f"paired difference (95% CI); dotted: ±δ = {DELTA}",
            title="(b) effect of dropout (arm - baseline)",
        )
        ax2.legend(fontsize=7)
    title = (
        f"{results['preset']}: {results['config']['nodes']} nodes, "
        f"{results['config']['seeds']} seeds (paired)"
    )
    save_figure_atomic(fig, path, dpi=110, title=title)


def _ci(d: dict[str, Any]) -> str:
    if d.get("ci_low") is None or not np.isfinite(d["ci_low"]):
        return f"{d['mean']:+.3f} [n/a]"
    return f"{d['mean']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]"


def render(results: dict[str, Any]) -> str:
    """The markdown table: accuracies per arm, the paired differences and the verdicts."""
    cfg = results["config"]
    lines = [
        f"GCN (hidden {cfg['hidden']}, {cfg['steps']} Adam steps, lr {cfg['lr']:g}, weight "
        f"decay {cfg['weight_decay']:g}) on {cfg['nodes']}-node CSBMs (degree {cfg['degree']}, "
        f"d = {cfg['dim']}, mu = {cfg['mu']:g}, {cfg['train_frac']:.0%} labelled); rates: "
        f"feature {cfg['feature_rate']:g}, edge {cfg['edge_rate']:g}, node "
        f"{cfg['node_rate']:g}; {cfg['seeds']} paired seeds per level. Test accuracy mean; "
        f"Δ = paired difference [95% t-interval], decided against δ = {DELTA:g} "
        "(claim: + for h < 1/K, − for h > 1/2, none in between).",
        "",
        "| K | h | none | feature | edge | node | mlp | Δ edge − none | verdict | "
        "Δ edge − feature | verdict (P3) | Δ node − none | verdict | Δ feature − none |",
        "|---" * 14 + "|",
    ]
    for row, dec in zip(results["summary"], results["decisions"], strict=True):
        acc, diff = row["test_acc"], row["differences"]

        def v(name, dec=dec):
            return dec[name]["verdict"] if name in dec else "no claim"

        lines.append(
            f"| {row['classes']} | {row['homophily']:.2f} | "
            + " | ".join(f"{acc[a]['mean']:.3f}" for a in ARMS)
            + f" | {_ci(diff['edge - none'])} | {v('edge - none')} | "
            f"{_ci(diff['edge - feature'])} | {v('edge - feature')} | "
            f"{_ci(diff['node - none'])} | {v('node - none')} | {_ci(diff['feature - none'])} |"
        )
    lines.append("")
    for name, c in results["combined"].items():
        lines.append(f"- {name}: **{c['verdict']}** (headline {c['headline']})")
    ev = results["evidence"]
    power = "n/a" if ev["power"] is None or ev["power"] != ev["power"] else f"{ev['power']:.2f}"
    lines.append(
        f"\nOverall: **{results['verdict']}** ({results['source']}); the seed states no "
        "protocol, so the design is ours and the headline is what the intervals say (any "
        f"contradicted level contradicts the claim); lowest power of a decided level for "
        f"δ = {DELTA:g}: {power} with {ev['pairs']} pairs."
    )
    return "\n".join(lines)


def measure_all(ctx: RunContext) -> dict[str, Any]:
    """Measures every (K, h, seed, arm), summarises, decides, plots."""
    preset = PRESETS[ctx.preset]
    seeds = ctx.seeds(preset.seeds)
    replicas = len(seeds)
    start = time.time()
    records = measure(preset, seeds, quiet=ctx.quiet)
    summary = summarise(records)
    results = {
        "claim": CLAIM_TEXT,
        "source": SOURCE,
        "preset": ctx.preset,
        "config": {**dataclasses.asdict(preset), "seeds": replicas, "seed_list": seeds},
        "arms": list(ARMS),
        "per_seed": records,
        "summary": summary,
        **decide(summary),
        "time_s": round(time.time() - start, 2),
    }
    results["figure"] = plots.publish(
        plot, results, ctx.out_dir, ctx.preset, "accuracy_vs_homophily"
    )
    return results


run = one_shot(PRESETS, measure_all)


def spec_for(preset: str) -> stats.DecisionSpec:
    """The decision, fixed before the data: at every (K, h) level with a claimed sign,
    ``edge - none`` (the headline, P1/P2), ``edge - feature`` (P3) and ``node - none``, each
    against ``DELTA``; each sub-claim holds only if every level does (any contradicted level
    contradicts it)."""
    p = PRESETS[preset]
    levels = [(k, h, claimed_sign(h, k)) for k in p.classes for h in p.homophily]
    pairs = [("edge", "none", "P1/P2"), ("edge", "feature", "P3"), ("node", "none", "P1/P2")]
    return stats.DecisionSpec(
        claims={
            "edge - none (P1, P2)": ("dropping edges helps below h = 1/K, hurts above 1/2", "all"),
            "edge - feature (P3)": ("DropEdge beats feature dropout where edges mislead", "all"),
            "node - none (P1, P2)": ("dropping nodes helps below h = 1/K, hurts above 1/2", "all"),
        },
        contrasts=tuple(
            stats.Contrast(
                f"{a} - {b} ({'P3' if b == 'feature' else 'P1, P2'})",
                a,
                b,
                f"K={k}, h={h:.2f}",
                sign,
                DELTA,
                f"seed 000 'The Art of Dropping' ({src})",
            )
            for k, h, sign in levels
            if sign
            for a, b, src in pairs
        ),
        pairs=p.seeds,
        pooling="none: each level decided alone; the headline is edge - none over the levels",
        headline=("edge - none (P1, P2)",),
    )


CLAIM = Claim(
    NAME,
    "GCN on K-class CSBMs: none/feature/edge/node dropout across homophily",
    PRESETS,
    run,
    render,
    spec=spec_for,
)
