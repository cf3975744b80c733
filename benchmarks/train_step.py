"""A dropout MLP training step: time and compiled temporary memory, dropjax vs Flax."""

from __future__ import annotations

import flax.linen as nn
import jax
import optax

import dropjax.linen as djnn
from benchmarks.common import min_time, temp_bytes

__all__ = ["run"]


class MLP(nn.Module):
    hidden: tuple[int, ...]
    kind: str  # none | flax | dropjax | augmented
    rate: float = 0.5
    backward_rate: float = 1e-4

    @nn.compact
    def __call__(self, x):
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
            if self.kind == "flax":
                x = nn.Dropout(self.rate, deterministic=False)(x)
            elif self.kind == "dropjax":
                x = djnn.Dropout(self.rate, deterministic=False)(x)
            elif self.kind == "augmented":
                x = djnn.DecoupledDropout(self.rate, self.backward_rate, deterministic=False)(x)
        return nn.Dense(10)(x)


KINDS = {
    "no dropout": "none",
    "flax.linen.Dropout": "flax",
    "dropjax.linen.Dropout": "dropjax",
    "dropjax augmented (0.5/1e-4)": "augmented",
}


def run(*, hidden=(2048, 2048, 2048), batch=512, repeats=7) -> list:
    """Rows of {impl, seconds, temp_bytes} for one SGD step of the MLP."""
    x = jax.random.normal(jax.random.key(0), (batch, 784))
    y = jax.random.randint(jax.random.key(1), (batch,), 0, 10)
    opt = optax.sgd(0.01)
    rows = []
    for label, kind in KINDS.items():
        model = MLP(tuple(hidden), kind)
        params = model.init(jax.random.key(2), x)["params"]
        opt_state = opt.init(params)

        def step(params, opt_state, key, model=model):
            def loss(p):
                logits = model.apply({"params": p}, x, rngs={"dropout": key})
                return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

            value, grads = jax.value_and_grad(loss)(params)
            updates, opt_state = opt.update(grads, opt_state)
            return optax.apply_updates(params, updates), opt_state, value

        jitted = jax.jit(step)
        key = jax.random.key(3)
        seconds = min_time(jitted, params, opt_state, key, repeats=repeats)
        rows.append(
            dict(impl=label, seconds=seconds, temp_bytes=temp_bytes(jitted, params, opt_state, key))
        )
    return rows
