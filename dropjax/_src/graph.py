r"""Dropout for graphs stored as edge lists, with fixed shapes (jit-friendly).

A graph is ``senders`` and ``receivers``, two integer arrays of length ``E`` (edge ``e``
carries a message from node ``senders[e]`` to node ``receivers[e]``), as in jraph. Dropping
edges or nodes never changes these arrays: dropped edges are marked by a boolean mask and
get weight 0, so every shape is static and one compiled step serves every mask.

* :func:`edge_dropout` drops each edge independently (DropEdge, Rong et al., ICLR 2020).
* :func:`node_dropout` drops whole nodes: their feature rows, and optionally every edge
  touching them (DropNode, Feng et al., "Graph Random Neural Network", NeurIPS 2020).
* :func:`gcn_normalize` computes the GCN edge weights of Kipf & Welling (ICLR 2017),
  :math:`\hat D^{-1/2}(A + I)\hat D^{-1/2}`; a dropped edge has weight 0, so
  normalising after dropping renormalises over the surviving edges.

Feature dropout is plain :func:`dropjax.dropout` on the node features.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from dropjax._src import checks as _c
from dropjax._src import masks as _m

__all__ = [
    "EdgeDropoutResult",
    "GCNEdges",
    "NodeDropoutResult",
    "edge_dropout",
    "gcn_normalize",
    "node_dropout",
]


class EdgeDropoutResult(NamedTuple):
    """What :func:`edge_dropout` returns; both fields have length ``E``.

    Attributes:
      keep: ``bool[E]``, True where the edge survives.
      weight: float ``[E]``: the edge weight (1 when none was given) on kept edges,
        multiplied by ``1 / (1 - rate)`` when ``rescale=True``, and 0 on dropped edges.
    """

    keep: jax.Array
    weight: jax.Array


class NodeDropoutResult(NamedTuple):
    """What :func:`node_dropout` returns.

    Attributes:
      x: the node features with dropped rows zeroed (kept rows scaled by
        ``1 / (1 - rate)`` when ``rescale=True``); same shape and dtype as the input.
      node_keep: ``bool[N]``, True where the node survives.
      edge_keep: ``bool[E]``, True where both endpoints survive; None when no edge lists
        were given.
    """

    x: jax.Array
    node_keep: jax.Array
    edge_keep: jax.Array | None


class GCNEdges(NamedTuple):
    """What :func:`gcn_normalize` returns: the edge list and its normalised weights.

    With ``add_self_loops=True`` the ``N`` self loops ``(i, i)`` are appended after the
    ``E`` input edges (so every array has length ``E + N``); otherwise the input edges are
    returned unchanged.

    Attributes:
      senders: ``int[E (+ N)]``.
      receivers: ``int[E (+ N)]``.
      weight: float ``[E (+ N)]``, the normalised weights.
    """

    senders: jax.Array
    receivers: jax.Array
    weight: jax.Array


def _edge_index(idx, label: str, name: str) -> jax.Array:
    idx = jnp.asarray(idx)
    if not jnp.issubdtype(idx.dtype, jnp.integer) or idx.ndim != 1:
        raise TypeError(
            f"{name} needs {label} as a 1-D integer array of node indices; got dtype "
            f"{idx.dtype} and shape {idx.shape}"
        )
    return idx


def _edge_lists(senders, receivers, name: str) -> tuple[jax.Array, jax.Array]:
    senders = _edge_index(senders, "senders", name)
    receivers = _edge_index(receivers, "receivers", name)
    if senders.shape != receivers.shape:
        raise ValueError(
            f"{name} needs senders and receivers of the same length; got {senders.shape[0]} "
            f"and {receivers.shape[0]}"
        )
    return senders, receivers


def _check_in_range(idx: jax.Array, num_nodes: int, label: str, name: str) -> None:
    """Raises for concrete indices outside ``[0, num_nodes)``; traced ones pass."""
    if _c.is_concrete(idx) and idx.size:
        values = np.asarray(idx)
        if values.min() < 0 or values.max() >= num_nodes:
            raise ValueError(
                f"{name} got {label} outside [0, {num_nodes}) (the number of nodes): "
                f"min {values.min()}, max {values.max()}"
            )


def _edge_weight(edge_weight, num_edges: int, name: str) -> jax.Array:
    if edge_weight is None:
        return jnp.ones((num_edges,), jnp.float32)
    w = _c.check_floating(edge_weight, name)
    if w.shape != (num_edges,):
        raise ValueError(
            f"{name} needs edge_weight of shape ({num_edges},), one weight per edge; got "
            f"shape {w.shape}"
        )
    return w


def _need_key(key, rate, name: str):
    if key is None:
        raise ValueError(
            f"{name} needs a PRNG key when rate > 0; pass key=jax.random.key(0) (or rate=0.0)"
        )
    return _c.check_key(key, name)


def edge_dropout(
    key: jax.Array | None,
    senders: ArrayLike,
    receivers: ArrayLike,
    rate: ArrayLike,
    *,
    edge_weight: ArrayLike | None = None,
    rescale: bool = False,
) -> EdgeDropoutResult:
    r"""Drops each edge independently with probability ``rate`` (DropEdge), fixed shape.

    .. math::

        k_e = \texttt{keep\_mask}(key, (E,), \text{rate})_e, \qquad
        w'_e = k_e\, w_e \cdot \begin{cases} 1/(1-\text{rate}) & \text{rescale} \\
        1 & \text{otherwise} \end{cases}

    Edges are masked, never removed, so the output has length ``E`` and the function works
    under ``jit`` with a traced ``rate``. ``rate`` is the probability of *dropping* an edge
    (not the keep rate!). Without ``rescale`` (DropEdge's own choice: the sparser graph is
    usually renormalised, e.g. by :func:`gcn_normalize`) kept edges keep their weight; with
    ``rescale`` the expected weight of every edge, hence every weighted degree, is
    unchanged. Each edge of an undirected graph stored in both directions is dropped
    independently in each direction.

    Args:
      key: one PRNG key, e.g. ``jax.random.key(0)``; may be None when ``rate`` is a
        concrete 0.
      senders: ``int[E]``, source node of each edge.
      receivers: ``int[E]``, target node of each edge.
      rate: drop probability in ``[0, 1]``; may be traced.
      edge_weight: optional float ``[E]`` weights (default 1); the output keeps its dtype.
      rescale: if True, kept weights are divided by ``1 - rate`` (0 everywhere at rate 1).

    Returns:
      An :class:`EdgeDropoutResult` ``(keep, weight)``: ``bool[E]`` and float ``[E]``
      (``edge_weight.dtype``, or float32).

    Raises:
      ValueError: senders/receivers of different lengths; a concrete ``rate`` outside
        ``[0, 1]``; a missing key while ``rate > 0``; ``edge_weight`` of the wrong shape.
      TypeError: non-integer edge lists; non-floating ``edge_weight``; a raw integer key.

    Examples:
      >>> import jax, jax.numpy as jnp, dropjax
      >>> senders, receivers = jnp.array([0, 1, 2, 3]), jnp.array([1, 2, 3, 0])
      >>> out = dropjax.edge_dropout(jax.random.key(0), senders, receivers, 0.5)
      >>> out.keep.shape, out.weight.dtype
      ((4,), dtype('float32'))
      >>> bool((out.weight == out.keep.astype(jnp.float32)).all())
      True
    """
    name = "edge_dropout"
    senders, receivers = _edge_lists(senders, receivers, name)
    rate = _c.check_rate(rate)
    num_edges = senders.shape[0]
    weight = _edge_weight(edge_weight, num_edges, name)
    if _c.concrete_value(rate) == 0.0:
        return EdgeDropoutResult(jnp.ones((num_edges,), bool), weight)
    key = _need_key(key, rate, name)
    keep = _m.draw_keep(key, (num_edges,), rate)
    scale = _m.inverse_keep_prob(rate) if rescale else _c.rate_guard(rate)
    return EdgeDropoutResult(keep, _m.apply_mask(weight, keep, scale))


def node_dropout(
    key: jax.Array | None,
    x: ArrayLike,
    rate: ArrayLike,
    *,
    senders: ArrayLike | None = None,
    receivers: ArrayLike | None = None,
    rescale: bool = True,
) -> NodeDropoutResult:
    r"""Drops whole nodes with probability ``rate``: their feature rows and their edges.

    .. math::

        k_i = \texttt{keep\_mask}(key, (N,), \text{rate})_i, \qquad
        x'_i = \frac{k_i\, x_i}{1 - \text{rate}}, \qquad
        k^{\text{edge}}_e = k_{\text{senders}[e]} \wedge k_{\text{receivers}[e]}

    Axis 0 of ``x`` indexes the ``N`` nodes; a node is dropped as a whole row (every
    feature at once), which is DropNode of GRAND (Feng et al., 2020) and, with the edge
    mask, the node sampling of DropGNN-style methods. ``rate`` is the probability of
    *dropping* a node (not the keep rate!). With ``rescale=True`` (the default, as in
    inverted dropout and DropNode) the kept rows are scaled so that
    :math:`\mathbb{E}[x'] = x`; with ``rescale=False`` they are left as they are.

    When ``senders`` and ``receivers`` are given, ``edge_keep`` marks the edges whose two
    endpoints both survive; use it as an edge mask (``edge_keep.astype(x.dtype)`` as edge
    weights, e.g. for :func:`gcn_normalize`). The edge lists keep their length.

    Args:
      key: one PRNG key, e.g. ``jax.random.key(0)``; may be None when ``rate`` is a
        concrete 0.
      x: floating node features ``[N, ...]``.
      rate: drop probability in ``[0, 1]``; may be traced.
      senders: optional ``int[E]`` source node of each edge (give with ``receivers``).
      receivers: optional ``int[E]`` target node of each edge.
      rescale: if True, kept rows are divided by ``1 - rate``.

    Returns:
      A :class:`NodeDropoutResult` ``(x, node_keep, edge_keep)``; ``edge_keep`` is None
      without edge lists.

    Raises:
      ValueError: a concrete ``rate`` outside ``[0, 1]``; a missing key while
        ``rate > 0``; only one of ``senders``/``receivers``; concrete edge indices outside
        ``[0, N)``; a scalar ``x``.
      TypeError: non-floating ``x``; non-integer edge lists; a raw integer key.

    Examples:
      >>> import jax, jax.numpy as jnp, dropjax
      >>> x = jnp.ones((4, 3))
      >>> out = dropjax.node_dropout(jax.random.key(0), x, 0.5,
      ...                            senders=jnp.array([0, 1]), receivers=jnp.array([1, 2]))
      >>> out.x.shape, out.node_keep.shape, out.edge_keep.shape
      ((4, 3), (4,), (2,))
      >>> bool((out.x[:, 0] == jnp.where(out.node_keep, 2.0, 0.0)).all())
      True
    """
    name = "node_dropout"
    x = _c.check_floating(x, name)
    if x.ndim == 0:
        raise ValueError(f"{name} needs node features of shape [N, ...]; got a scalar")
    rate = _c.check_rate(rate)
    num_nodes = x.shape[0]
    if (senders is None) != (receivers is None):
        raise ValueError(
            f"{name} needs both senders and receivers to mask edges (or neither); got only "
            f"{'senders' if receivers is None else 'receivers'}"
        )
    if senders is not None:
        senders, receivers = _edge_lists(senders, receivers, name)
        _check_in_range(senders, num_nodes, "senders", name)
        _check_in_range(receivers, num_nodes, "receivers", name)

    if _c.concrete_value(rate) == 0.0:
        node_keep = jnp.ones((num_nodes,), bool)
        x_out = x
    else:
        key = _need_key(key, rate, name)
        node_keep = _m.draw_keep(key, (num_nodes,), rate)
        scale = _m.inverse_keep_prob(rate) if rescale else _c.rate_guard(rate)
        row_keep = node_keep.reshape((num_nodes,) + (1,) * (x.ndim - 1))
        x_out = _m.apply_mask(x, row_keep, scale)

    edge_keep = None
    if senders is not None:
        # Traced out-of-range indices read as dropped nodes rather than a clamped neighbour.
        def gather(idx):
            return node_keep.at[idx].get(mode="fill", fill_value=False)

        edge_keep = gather(senders) & gather(receivers)
    return NodeDropoutResult(x_out, node_keep, edge_keep)


def gcn_normalize(
    senders: ArrayLike,
    receivers: ArrayLike,
    num_nodes: int,
    edge_weight: ArrayLike | None = None,
    add_self_loops: bool = True,
) -> GCNEdges:
    r"""Symmetric GCN normalisation of an edge list: :math:`\hat D^{-1/2}\hat A\hat D^{-1/2}`.

    With :math:`\hat A = A + I` (or :math:`A` when ``add_self_loops=False``), where
    :math:`A_{ij}` is the summed weight of the edges ``j -> i`` (sender ``j``, receiver
    ``i``), and :math:`\hat d_i = \sum_j \hat A_{ij}` the weighted in-degree:

    .. math::

        \tilde w_e = \frac{w_e}{\sqrt{\hat d_{\text{receivers}[e]}\,
        \hat d_{\text{senders}[e]}}}

    so that ``segment_sum(w~ * h[senders], receivers, N)`` computes
    :math:`\hat D^{-1/2}\hat A\hat D^{-1/2} h` (Kipf & Welling, ICLR 2017). For an
    undirected graph stored with both directions the in-degree is the degree. Degrees are
    sums of weights (``jax.ops.segment_sum``), so an edge of weight 0, e.g. one dropped by
    :func:`edge_dropout`, counts for nothing: normalising after dropping renormalises over
    the surviving edges. A node of degree 0 gets no incoming weight (its
    :math:`\hat d^{-1/2}` is taken as 0, never inf). Self loops already in the edge list
    are kept, and ``add_self_loops`` adds one more of weight 1 per node.

    Args:
      senders: ``int[E]``, source node of each edge.
      receivers: ``int[E]``, target node of each edge.
      num_nodes: the number of nodes ``N``, a Python int (it fixes the shapes).
      edge_weight: optional float ``[E]`` weights (default 1); the output keeps its dtype.
      add_self_loops: if True, append the ``N`` self loops ``(i, i)`` with weight 1.

    Returns:
      A :class:`GCNEdges` ``(senders, receivers, weight)`` of length ``E + N`` (self loops
      appended last) or ``E``.

    Raises:
      ValueError: a negative ``num_nodes``; edge lists of different lengths; concrete
        indices outside ``[0, num_nodes)``; ``edge_weight`` of the wrong shape.
      TypeError: non-integer ``num_nodes`` or edge lists; non-floating ``edge_weight``.

    Examples:
      >>> import jax.numpy as jnp, dropjax
      >>> g = dropjax.gcn_normalize(jnp.array([0, 1]), jnp.array([1, 0]), 2)
      >>> g.senders.tolist(), g.receivers.tolist()
      ([0, 1, 0, 1], [1, 0, 0, 1])
      >>> g.weight.tolist()  # every degree is 2 (one neighbour + the self loop)
      [0.5, 0.5, 0.5, 0.5]
    """
    name = "gcn_normalize"
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, (int, np.integer)):
        raise TypeError(
            f"{name} needs num_nodes as a Python int (it sets the output shape); got {num_nodes!r}"
        )
    num_nodes = int(num_nodes)
    if num_nodes < 0:
        raise ValueError(f"{name} needs num_nodes >= 0; got {num_nodes}")
    senders, receivers = _edge_lists(senders, receivers, name)
    _check_in_range(senders, num_nodes, "senders", name)
    _check_in_range(receivers, num_nodes, "receivers", name)
    weight = _edge_weight(edge_weight, senders.shape[0], name)
    if add_self_loops:
        loops = jnp.arange(num_nodes, dtype=senders.dtype)
        senders = jnp.concatenate([senders, loops])
        receivers = jnp.concatenate([receivers, loops.astype(receivers.dtype)])
        weight = jnp.concatenate([weight, jnp.ones((num_nodes,), weight.dtype)])
    compute = weight.dtype if jnp.finfo(weight.dtype).bits >= 32 else jnp.dtype(jnp.float32)
    w = weight.astype(compute)
    degree = jax.ops.segment_sum(w, receivers, num_segments=num_nodes)
    # Out-of-range traced indices read as degree 0 (weight 0), never a clamped node.
    d_receiver = degree.at[receivers].get(mode="fill", fill_value=0.0)
    d_sender = degree.at[senders].get(mode="fill", fill_value=0.0)
    product = d_receiver * d_sender
    positive = product > 0
    normalized = jnp.where(positive, w / jnp.sqrt(jnp.where(positive, product, 1.0)), 0.0)
    normalized = normalized.astype(weight.dtype)
    return GCNEdges(senders, receivers, normalized)
