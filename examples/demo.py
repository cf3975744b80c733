"""A one-minute tour of dropjax: inverted dropout and decoupled (augmented) dropout.

Run: python examples/demo.py
"""

import jax
import jax.numpy as jnp

import dropjax


def main() -> None:
    key = jax.random.key(0)
    x = jnp.ones((4, 8))
    y = dropjax.dropout(key, x, 0.5)
    print("dropout(rate=0.5) of ones:\n", y)

    # Augmented dropout (Gao et al. 2019): forward rate 0.5, extra backward rate 0.25.
    y, vjp = jax.vjp(lambda h: dropjax.augmented_dropout(key, h, 0.5, 0.25), x)
    (g,) = vjp(jnp.ones_like(x))
    print("forward kept:", int((y != 0).sum()), "of", x.size)
    print("backward kept:", int((g != 0).sum()), "(a subset of the forward mask)")

    # Layer-exact Eq. 9: the weight gradient uses the backward-masked input.
    params = {"w": jnp.ones((8, 3)), "b": jnp.zeros(3)}
    dense = lambda p, h: h @ p["w"] + p["b"]
    loss = lambda p: dropjax.decoupled_call(key, dense, p, x, 0.5, 0.25).sum()
    print("dW row sums (Eq. 9):", jax.grad(loss)(params)["w"].sum(1))


if __name__ == "__main__":
    main()
