"""Tests for dropjax.acquisition against brute-force numpy references."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dropjax
from dropjax import acquisition as acq
from dropjax import mc


def dirichlet(rng, shape, alpha=1.0):
    p = rng.dirichlet(np.full(shape[-1], alpha), size=shape[:-1])
    return (p / p.sum(-1, keepdims=True)).astype(np.float32)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def close(a, b, tol=1e-5):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), atol=tol)


def entropy(p, axis=-1):
    p = np.asarray(p, np.float64)
    return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=axis)


# --------------------------------------------------------------------------- per-point scores


def test_scores_match_numpy_formulas(rng):
    p = dirichlet(rng, (7, 30, 4), alpha=0.6)
    q = p.astype(np.float64)
    mean = q.mean(0)
    close(acq.max_entropy(p), entropy(mean))
    close(acq.bald(p), np.maximum(entropy(mean) - entropy(q).mean(0), 0.0))
    votes = np.stack([np.bincount(col, minlength=4) for col in q.argmax(-1).T])  # (N, C)
    close(acq.variation_ratio(p), 1 - votes.max(-1) / 7)
    std = np.sqrt(np.maximum((q**2).mean(0) - mean**2, 0.0))
    close(acq.mean_std(p), std.mean(-1))
    top = np.sort(mean, axis=-1)[:, ::-1]
    close(acq.margin(p), -(top[:, 0] - top[:, 1]))
    for fn in (acq.bald, acq.max_entropy, acq.variation_ratio, acq.mean_std, acq.margin):
        assert fn(p).shape == (30,)
        close(jax.jit(fn)(p), fn(p), tol=1e-6)


def test_score_hand_cases():
    # A tie between the top two classes is the most uncertain margin (0); one-hot is -1.
    p = jnp.array([[[0.4, 0.4, 0.2], [1.0, 0.0, 0.0]]])
    close(acq.margin(p), [0.0, -1.0])
    # Disagreeing confident samples: maximal std 1/2 per class for two classes.
    d = jnp.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    close(acq.mean_std(d), [0.5])
    with pytest.raises(ValueError, match="at least 2 classes"):
        acq.margin(jnp.ones((2, 3, 1)))
    with pytest.raises(ValueError, match=r"\(T, N, C\)"):
        acq.mean_std(jnp.ones((3, 2)) / 2)
    with pytest.raises(ValueError, match="sum to 1"):
        acq.bald(jnp.ones((2, 3, 2)))


# --------------------------------------------------------------------------- BatchBALD reference


def joint_mi_reference(p, idx):
    """Brute force: enumerate every label configuration of the points ``idx``."""
    p = np.asarray(p, np.float64)
    t, _, c = p.shape
    joint = np.zeros(c ** len(idx))
    for m, labels in enumerate(itertools.product(range(c), repeat=len(idx))):
        per_sample = np.ones(t)
        for i, y in zip(idx, labels, strict=True):
            per_sample *= p[:, i, y]
        joint[m] = per_sample.mean()
    return entropy(joint) - sum(entropy(p[:, i]).mean() for i in idx)


def greedy_reference(p, batch_size):
    chosen, scores = [], []
    for _ in range(batch_size):
        best, best_mi = None, -np.inf
        for i in range(p.shape[1]):
            if i in chosen:
                continue
            mi = joint_mi_reference(p, [*chosen, i])
            if mi > best_mi:  # strict: the lowest index wins a tie
                best, best_mi = i, mi
        chosen.append(best)
        scores.append(best_mi)
    return chosen, scores


@pytest.mark.parametrize("c", [2, 3])
def test_batch_bald_exact_matches_brute_force_greedy(rng, c):
    p = dirichlet(rng, (8, 12, c), alpha=0.5)
    result = acq.batch_bald(p, 3, exact_threshold=c**3)  # every step exact
    want_idx, want_scores = greedy_reference(p, 3)
    assert [int(i) for i in result.indices] == want_idx
    close(result.scores, want_scores, tol=2e-5)
    for n in (1, 2, 3):  # each prefix's score is its joint MI
        close(result.scores[n - 1], joint_mi_reference(p, want_idx[:n]), tol=2e-5)


def test_batch_bald_size_one_is_bald_argmax(rng):
    for seed in range(3):
        p = dirichlet(np.random.default_rng(seed), (10, 25, 4), alpha=0.4)
        q = p.astype(np.float64)
        bald_np = entropy(q.mean(0)) - entropy(q).mean(0)
        result = acq.batch_bald(p, 1)
        assert int(result.indices[0]) == int(np.argmax(bald_np))
        close(result.scores[0], bald_np.max())


def test_batch_bald_chunking_does_not_change_the_selection(rng):
    p = dirichlet(rng, (6, 23, 3), alpha=0.5)
    want = acq.batch_bald(p, 4, key=jax.random.key(1), num_samples=64, exact_threshold=9)
    for chunk in (1, None):
        got = acq.batch_bald(
            p, 4, key=jax.random.key(1), num_samples=64, exact_threshold=9, chunk_size=chunk
        )
        assert [int(i) for i in got.indices] == [int(i) for i in want.indices]
        close(got.scores, want.scores, tol=1e-5)


def test_sampled_estimator_approaches_exact(rng):
    p = dirichlet(rng, (10, 15, 3), alpha=0.5)
    exact = acq.batch_bald(p, 4, exact_threshold=3**4)
    sampled = acq.batch_bald(
        p, 4, key=jax.random.key(0), num_samples=20000, exact_threshold=1
    )  # steps 2..4 sampled
    idx = [int(i) for i in sampled.indices]
    for n in range(1, 5):
        close(sampled.scores[n - 1], joint_mi_reference(p, idx[:n]), tol=0.02)
    assert idx[0] == int(exact.indices[0])  # step 1 is always exact (BALD)
    close(sampled.scores[-1], exact.scores[-1], tol=0.03)
    # the estimate is a function of the key: same key, same answer
    again = acq.batch_bald(p, 4, key=jax.random.key(0), num_samples=20000, exact_threshold=1)
    np.testing.assert_array_equal(np.asarray(again.indices), np.asarray(sampled.indices))


def test_batch_bald_long_batch_stays_finite(rng):
    # 30 points of sharp predictions: per-sample likelihood products underflow float32
    # without the per-configuration rescaling.
    p = dirichlet(rng, (12, 40, 10), alpha=0.05)
    p = np.maximum(p, 1e-30).astype(np.float32)
    p = p / p.sum(-1, keepdims=True)
    result = acq.batch_bald(p, 30, key=jax.random.key(0), num_samples=200)
    assert np.all(np.isfinite(np.asarray(result.scores)))
    assert len(set(np.asarray(result.indices).tolist())) == 30  # no point picked twice
    q = p.astype(np.float64)
    close(result.scores[0], np.max(entropy(q.mean(0)) - entropy(q).mean(0)))


def test_batch_bald_skips_duplicates_with_consistent_masks():
    """MC samples of a toy network with consistent masks: a duplicated pool point adds
    (almost) nothing to a batch, so BatchBALD does not take its copies while top-k BALD
    does."""
    w = 6.0 * jax.random.normal(jax.random.key(0), (8, 3))

    def predict(key, x):
        return jax.nn.softmax(dropjax.dropout(key, x, 0.5) @ w)

    x = jax.random.normal(jax.random.key(1), (16, 8))
    probs = mc.sample(predict, jax.random.key(2), 32, x, consistent=True)
    best = int(jnp.argmax(acq.bald(probs)))
    # Three more copies of the best point: with consistent masks a copy sees the same mask
    # in every sample, so its MC probabilities are the original's.
    probs = jnp.concatenate([probs, jnp.repeat(probs[:, best : best + 1], 3, axis=1)], axis=1)
    copies = {best, 16, 17, 18}
    top4 = set(np.asarray(jax.lax.top_k(acq.bald(probs), 4)[1]).tolist())
    assert top4 == copies  # the per-point score takes all four copies
    chosen = np.asarray(acq.batch_bald(probs, 4).indices).tolist()
    assert len(copies & set(chosen)) == 1


def test_batch_bald_jit_and_validation(rng):
    p = dirichlet(rng, (5, 9, 2), alpha=0.5)
    fn = jax.jit(acq.batch_bald, static_argnames=("batch_size", "num_samples", "exact_threshold"))
    got = fn(p, 5, key=jax.random.key(3), num_samples=32, exact_threshold=4)
    want = acq.batch_bald(p, 5, key=jax.random.key(3), num_samples=32, exact_threshold=4)
    np.testing.assert_array_equal(np.asarray(got.indices), np.asarray(want.indices))
    with pytest.raises(ValueError, match=r"pass key=jax.random.key\(0\)"):
        acq.batch_bald(p, 5, exact_threshold=4)
    with pytest.raises(ValueError, match=r"batch_size must be in \[1, N\]"):
        acq.batch_bald(p, 10)
    with pytest.raises(ValueError, match="batch_size"):
        acq.batch_bald(p, 0)
    with pytest.raises(ValueError, match="chunk_size"):
        acq.batch_bald(p, 2, chunk_size=0)
    with pytest.raises(ValueError, match="num_samples"):
        acq.batch_bald(p, 2, num_samples=1.5)
    with pytest.raises(TypeError, match="raw integer"):
        acq.batch_bald(p, 5, key=3, exact_threshold=4)
    with pytest.raises(ValueError, match="non-negative"):
        acq.batch_bald(-p, 2)


def test_public_api():
    import inspect

    public = {
        name
        for name, obj in vars(acq).items()
        if (inspect.isfunction(obj) or inspect.isclass(obj))
        and obj.__module__ == acq.__name__
        and not name.startswith("_")
    }
    assert set(acq.__all__) == public
    for name in acq.__all__:
        assert getattr(acq, name).__doc__, name
