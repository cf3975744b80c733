"""Monte Carlo dropout mode, defined once for every adapter.

In Monte Carlo mode (Gal & Ghahramani, 2016) every dropout layer samples, as in training,
while every normalisation layer uses its running statistics, as in evaluation. In Flax's
attribute names that is :data:`ATTRIBUTES`: ``deterministic=False`` (dropout, and any
module whose dropout follows that flag, such as attention) and
``use_running_average=True`` (BatchNorm). Equinox has one ``inference`` field for both
kinds of layer; :func:`inference` maps the same rule onto it.

``dropjax.linen.mc_dropout``, ``dropjax.nnx.mc_dropout``, ``dropjax.mc.sample_nnx`` and
``dropjax.equinox.mc_dropout`` all read the rule from here. (Linen applies only the dropout
half: a linen model takes BatchNorm's mode from its call arguments, which stay the
caller's.)
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = ["ATTRIBUTES", "DETERMINISTIC", "USE_RUNNING_AVERAGE", "inference"]

DETERMINISTIC = "deterministic"
USE_RUNNING_AVERAGE = "use_running_average"

ATTRIBUTES: Mapping[str, bool] = MappingProxyType({DETERMINISTIC: False, USE_RUNNING_AVERAGE: True})
"""Flax module attributes in Monte Carlo mode: dropout on, BatchNorm on running statistics."""


def inference(is_dropout: bool) -> bool:
    """Equinox's ``inference`` field in Monte Carlo mode, for a dropout layer or another one.

    A dropout layer's ``inference`` is Flax's ``deterministic`` (False: it samples); every
    other layer's (``eqx.nn.BatchNorm``, ...) is ``use_running_average`` (True).
    """
    return ATTRIBUTES[DETERMINISTIC] if is_dropout else ATTRIBUTES[USE_RUNNING_AVERAGE]
