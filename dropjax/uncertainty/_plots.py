r"""Plots: the reliability diagram and uncertainty histograms.

matplotlib is optional (``pip install dropjax[plot]``): it is imported only when a plot is
drawn, so importing this module never imports it.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING

import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from dropjax._src import checks as _c
from dropjax.uncertainty._calibration import calibration_bins
from dropjax.uncertainty._ranking import auroc

if TYPE_CHECKING:  # matplotlib is optional: imported only when a plot is drawn
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure, SubFigure

__all__ = ["reliability_diagram", "uncertainty_histogram"]

_PLOT_HINT = "matplotlib is required for plotting; install it with `pip install dropjax[plot]`"


def _pyplot() -> ModuleType:
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError(_PLOT_HINT) from err
    return plt


def _axes(ax: Axes | None) -> Axes:
    if ax is None:
        _, ax = _pyplot().subplots(figsize=(4.5, 4.5))
    else:
        try:
            import matplotlib  # noqa: F401
        except ImportError as err:  # pragma: no cover - an Axes implies matplotlib
            raise ImportError(_PLOT_HINT) from err
    return ax


def reliability_diagram(
    probs: ArrayLike, labels: ArrayLike, num_bins: int = 15, ax: Axes | None = None
) -> Figure | SubFigure:
    r"""Plots per-bin accuracy against confidence, with the ECE in the title.

    Bins follow :func:`expected_calibration_error`. Each non-empty bin shows its
    accuracy as a bar and the gap to its mean confidence as a hatched bar; the dashed
    diagonal is perfect calibration.

    Args:
      probs: predictive probabilities ``(N, C)``.
      labels: integer class labels ``(N,)``.
      num_bins: number of equal-width confidence bins.
      ax: a matplotlib ``Axes`` to draw on; a new figure is created when ``None``.

    Returns:
      The matplotlib ``Figure`` holding the plot.

    Raises:
      ImportError: if matplotlib is not installed (``pip install dropjax[plot]``).
      ValueError: on invalid inputs, as :func:`expected_calibration_error`.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dropjax.uncertainty import reliability_diagram
      >>> fig = reliability_diagram(jnp.array([[0.9, 0.1], [0.3, 0.7]]), jnp.array([0, 0]))
      >>> type(fig).__name__
      'Figure'
      >>> import matplotlib.pyplot as plt; plt.close(fig)
    """
    num_bins = _c.check_num_bins(num_bins)
    p = _c.check_probs(probs, "probs", "(N, C)")
    y = _c.check_labels(labels, p.shape[0], p.shape[1])
    ax = _axes(ax)
    count, conf_sum, acc_sum = (np.asarray(a, np.float64) for a in calibration_bins(p, y, num_bins))
    ece = float(np.sum(np.abs(acc_sum - conf_sum)) / p.shape[0])
    nonempty = count > 0
    safe = np.where(nonempty, count, 1.0)
    acc, conf = acc_sum / safe, conf_sum / safe
    width = 1.0 / num_bins
    left = np.arange(num_bins) * width
    ax.bar(
        left[nonempty],
        acc[nonempty],
        width=width,
        align="edge",
        color="tab:blue",
        edgecolor="black",
        label="accuracy",
    )
    ax.bar(
        left[nonempty],
        (conf - acc)[nonempty],
        bottom=acc[nonempty],
        width=width,
        align="edge",
        color="tab:red",
        alpha=0.3,
        hatch="//",
        edgecolor="tab:red",
        label="gap",
    )
    ax.plot([0.0, 1.0], [0.0, 1.0], linestyle="--", color="gray", label="perfect calibration")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability diagram (ECE = {ece:.3f})")
    ax.legend(loc="upper left")
    return ax.figure


def uncertainty_histogram(
    scores_in: ArrayLike,
    scores_out: ArrayLike | None = None,
    ax: Axes | None = None,
    bins: int = 30,
) -> Figure | SubFigure:
    r"""Overlaid histograms of uncertainty scores for in- and out-of-distribution data.

    Both histograms share the same bin edges and are normalised to unit area. When
    ``scores_out`` is given, the title reports the AUROC of separating
    out-of-distribution (positive) from in-distribution examples by the score.

    Args:
      scores_in: in-distribution scores, any shape (flattened).
      scores_out: optional out-of-distribution scores, any shape (flattened).
      ax: a matplotlib ``Axes`` to draw on; a new figure is created when ``None``.
      bins: number of bins (or explicit edges, as accepted by ``numpy.histogram``).

    Returns:
      The matplotlib ``Figure`` holding the plot.

    Raises:
      ImportError: if matplotlib is not installed (``pip install dropjax[plot]``).
      ValueError: if a score array is empty or not finite.

    Examples:
      >>> import jax.numpy as jnp
      >>> from dropjax.uncertainty import uncertainty_histogram
      >>> fig = uncertainty_histogram(jnp.array([0.1, 0.2, 0.3]), jnp.array([0.5, 0.9]))
      >>> fig.axes[0].get_title()
      'AUROC (out vs in) = 1.000'
      >>> import matplotlib.pyplot as plt; plt.close(fig)
    """
    s_in = _c.check_scores(jnp.ravel(_c.as_float(scores_in)), "scores_in")
    s_out = (
        None
        if scores_out is None
        else _c.check_scores(jnp.ravel(_c.as_float(scores_out)), "scores_out")
    )
    ax = _axes(ax)
    a_in = np.asarray(s_in, np.float64)
    arrays = [a_in] if s_out is None else [a_in, np.asarray(s_out, np.float64)]
    edges = np.histogram_bin_edges(np.concatenate(arrays), bins=bins)
    # matplotlib's stubs type hist's bins as a Sequence, though it takes an array of edges:
    ax.hist(
        a_in,
        bins=edges,  # type: ignore[arg-type]
        density=True,
        alpha=0.6,
        color="tab:blue",
        label=f"in-distribution (n={a_in.size})",
    )
    if s_out is not None:
        ax.hist(
            arrays[1],
            bins=edges,  # type: ignore[arg-type]
            density=True,
            alpha=0.6,
            color="tab:orange",
            label=f"out-of-distribution (n={arrays[1].size})",
        )
        y = jnp.concatenate([jnp.zeros(s_in.shape, bool), jnp.ones(s_out.shape, bool)])
        score = float(auroc(jnp.concatenate([s_in, s_out.astype(s_in.dtype)]), y))
        ax.set_title(f"AUROC (out vs in) = {score:.3f}")
    ax.set_xlabel("uncertainty score")
    ax.set_ylabel("density")
    ax.legend()
    return ax.figure
