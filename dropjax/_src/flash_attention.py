"""Blockwise (FlashAttention-2 style) attention whose dropout masks are regenerated.

The weights ``softmax(s Q K^T + B)`` are never formed as a ``[q_len, kv_len]`` array: the
forward pass walks over tiles of ``block_q`` queries by ``block_kv`` keys with an online
softmax (running row maximum ``m``, running normaliser ``l`` and an unnormalised output
accumulator, rescaled by ``exp(m_old - m_new)`` whenever the maximum grows; Dao, 2023,
"FlashAttention-2", Algorithm 1) and keeps only the output and two numbers per query row,
``m`` and ``1 / l``. The backward pass (Algorithm 2) walks the tiles again, rebuilding each
tile's probabilities as ``exp(logits - m) / l``. (FlashAttention keeps ``lse = m + log l``
instead; in float32 that loses ``log l`` next to the large negative of a fully masked row,
whose weights would then come back as 1 instead of ``1 / kv_len``.)

Dropout needs no storage either: the keep bit of weight ``[b, n, t, s]`` is the counter
hash of its row-major index in the ``[B, N, T, S]`` mask (see
:func:`dropjax._src.masks.hash_bits_at`), so each tile's mask is recomputed from the key's
two words and the tile's offsets, identically in both passes and identically to
``keep_mask(dropout_key, (B, N, T, S), rate, broadcast_dims=...)``. With ``D = rowsum(dO *
O)`` the softmax backward step ``dS = P * (dP - D)`` holds with dropout as well, because
``rowsum(P * dP) = rowsum(dO * O)`` when ``dP = M * (dO V^T) / (1 - rate)``.

The positional masks of :func:`jax.nn.dot_product_attention` (``is_causal``,
``local_window_size``, ``query_seq_lengths``, ``key_value_seq_lengths``) are rebuilt for
each tile from the tile's offsets, the window's two static sizes and one length per batch
row, so they never exist as a ``[q_len, kv_len]`` array either. The logit scale is an
operand (it may be traced); its gradient ``sum(dS * Q K^T)`` is accumulated tile by tile
when it is asked for.

Everything here works on the internal layout ``q: [B, K, G, T, H]``, ``k, v: [B, K, S,
H]`` (``K`` key/value heads, ``G`` query heads per key/value head), with both lengths
padded to whole blocks; :func:`blockwise_attention` converts from and to the public
``[B, T, N, H]`` layout.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dropjax._src import masks as _m

__all__ = ["blockwise_attention"]

# The large finite negative that jax.nn.dot_product_attention gives masked logits: a fully
# masked row stays finite (a uniform average). Padding columns get -inf instead, so they
# never enter a row's average, not even a fully masked one.
BIG_NEGATIVE = -0.7 * float(np.finfo(np.float32).max)
F32 = jnp.float32


@dataclasses.dataclass(frozen=True)
class Config:
    """Static configuration of one blockwise call (hashable: a ``nondiff_argnums`` entry)."""

    t: int  # true query length
    s: int  # true key/value length
    block_q: int
    block_kv: int
    causal: bool
    skip: bool  # causal without any other mask: tiles above the diagonal can be skipped
    weights_shape: tuple[int, ...]  # the dropout mask's shape: (B, N, T, S) or (N, T, S)
    bdims: tuple[int, ...]  # broadcast_dims, normalised against weights_shape
    drop: bool
    window: tuple[int, int] | None = None  # (left, right), as jax.nn's local_window_size
    precision: Any = None  # jax.lax.PrecisionLike of every matrix product
    scale_grad: bool = False  # accumulate the scale's gradient in the backward pass


def make_config(
    *,
    t: int,
    s: int,
    block_q: int,
    block_kv: int,
    causal: bool,
    has_mask: bool,
    has_lengths: bool,
    weights_shape: tuple[int, ...],
    bdims: tuple[int, ...],
    drop: bool,
    window: tuple[int, int] | None,
    precision: Any,
    scale_grad: bool,
) -> Config:
    """The :class:`Config` of one call; tiles are skipped only for a causal mask alone.

    (With any other mask a query row may be fully masked, and such a row averages *all*
    the values, so every tile must be visited.)
    """
    return Config(
        t=t,
        s=s,
        block_q=min(block_q, t),
        block_kv=min(block_kv, s),
        causal=causal,
        skip=causal and not has_mask and not has_lengths and window is None,
        weights_shape=weights_shape,
        bdims=bdims,
        drop=drop,
        window=window,
        precision=precision,
        scale_grad=scale_grad,
    )


def position_mask(t_pos, s_pos, q_len, kv_len, cfg: Config):
    """The positional part of the allowed-mask (causal, window, lengths), or None.

    ``t_pos``/``s_pos`` are broadcastable global query/key positions; ``q_len``/``kv_len``
    are None or lengths already shaped to broadcast against them (one per batch row).
    """
    allowed = None

    def both(a, b):
        return b if a is None else a & b

    if cfg.causal:
        allowed = both(allowed, s_pos <= t_pos)
    if cfg.window is not None:
        left, right = cfg.window
        allowed = both(allowed, (t_pos <= s_pos + left) & (t_pos >= s_pos - right))
    if q_len is not None:
        allowed = both(allowed, t_pos < q_len)
    if kv_len is not None:
        allowed = both(allowed, s_pos < kv_len)
    return allowed


def _tile(x, i, j, cfg: Config):
    """Tile ``(i, j)`` of a ``[..., T|1, S|1]`` operand (size-1 axes stay whole)."""
    if x.shape[-2] > 1:
        x = jax.lax.dynamic_slice_in_dim(x, i * cfg.block_q, cfg.block_q, axis=x.ndim - 2)
    if x.shape[-1] > 1:
        x = jax.lax.dynamic_slice_in_dim(x, j * cfg.block_kv, cfg.block_kv, axis=x.ndim - 1)
    return x


def _positions(i, j, cfg: Config):
    t = i * cfg.block_q + jax.lax.broadcasted_iota(jnp.int32, (cfg.block_q, 1), 0)
    s = j * cfg.block_kv + jax.lax.broadcasted_iota(jnp.int32, (1, cfg.block_kv), 1)
    return t, s


def _lengths5(x):
    """``[B]`` lengths as ``[B, 1, 1, 1, 1]`` (None stays None)."""
    return None if x is None else x.reshape(-1, 1, 1, 1, 1)


def logits_tile(qi, kj, bias, mask, lengths, scale, i, j, cfg: Config):
    """Scaled, biased, masked float32 logits of tile ``(i, j)``, its allowed-mask and raw.

    Returns ``(logits [B, K, G, bq, bk], allowed or None, raw)``: ``allowed`` (user mask,
    causal, window, lengths) is what the backward pass uses to zero the gradient of
    replaced logits, and ``raw`` the unscaled ``Q K^T`` (for the scale's gradient).
    """
    raw = jnp.einsum(
        "bkgqh,bksh->bkgqs", qi, kj, preferred_element_type=F32, precision=cfg.precision
    )
    s = raw * scale
    if bias is not None:
        s = s + _tile(bias, i, j, cfg).astype(F32)
    t_pos, s_pos = _positions(i, j, cfg)
    q_len, kv_len = lengths
    allowed = position_mask(t_pos, s_pos, _lengths5(q_len), _lengths5(kv_len), cfg)
    if mask is not None:
        tile = _tile(mask, i, j, cfg)
        allowed = tile if allowed is None else tile & allowed
    if allowed is not None:
        s = jnp.where(allowed, s, jnp.float32(BIG_NEGATIVE))
    if cfg.s % cfg.block_kv:
        s = jnp.where(s_pos < cfg.s, s, -jnp.inf)
    return s, allowed, raw


def keep_tile(words, rate, shape5, i, j, cfg: Config):
    """The dropout keep-mask of tile ``(i, j)``, ``[B, K, G, bq, bk]``, from global indices.

    Query head ``n = k * G + g``; the indices are those of ``keep_mask``'s drawn mask
    (0 along broadcast axes), so the tile equals the slice of the full mask.
    """
    b, kh, g, bq, bk = shape5
    drawn = _m.mask_shape(cfg.weights_shape, cfg.bdims)
    u32 = jnp.uint32
    head = jax.lax.broadcasted_iota(u32, (1, kh, g, 1, 1), 1) * u32(g)
    head = head + jax.lax.broadcasted_iota(u32, (1, kh, g, 1, 1), 2)
    t_pos = (jnp.asarray(i) * cfg.block_q).astype(u32)
    t_pos = t_pos + jax.lax.broadcasted_iota(u32, (1, 1, 1, bq, 1), 3)
    s_pos = (jnp.asarray(j) * cfg.block_kv).astype(u32)
    s_pos = s_pos + jax.lax.broadcasted_iota(u32, (1, 1, 1, 1, bk), 4)
    index = [head, t_pos, s_pos]
    if len(cfg.weights_shape) == 4:
        index.insert(0, jax.lax.broadcasted_iota(u32, (b, 1, 1, 1, 1), 0))
    index = [u32(0) if axis in cfg.bdims else x for axis, x in enumerate(index)]
    bits = _m.hash_bits_at(words, drawn, index)
    return _m.keep_from_bits(jnp.broadcast_to(bits, shape5), rate)


def _num_kv_tiles(i, cfg: Config, nk: int):
    """Tiles of keys that query tile ``i`` visits (all, or up to the causal diagonal)."""
    if not cfg.skip:
        return nk
    last = (i + 1) * cfg.block_q  # exclusive bound on the query positions of the tile
    return jnp.minimum(nk, (last + cfg.block_kv - 1) // cfg.block_kv)


def _first_q_tile(j, cfg: Config):
    if not cfg.skip:
        return 0
    return (j * cfg.block_kv) // cfg.block_q


def _forward(cfg: Config, q, k, v, bias, mask, lengths, words, rate, scale):
    b, kh, g, tp, h = q.shape
    nq, nk = tp // cfg.block_q, k.shape[2] // cfg.block_kv
    inv = _m.inverse_keep_prob(rate) if cfg.drop else None

    def q_tile(i):
        qi = jax.lax.dynamic_slice_in_dim(q, i * cfg.block_q, cfg.block_q, axis=3)

        def body(j, carry):
            m, norm, acc = carry
            kj = jax.lax.dynamic_slice_in_dim(k, j * cfg.block_kv, cfg.block_kv, axis=2)
            vj = jax.lax.dynamic_slice_in_dim(v, j * cfg.block_kv, cfg.block_kv, axis=2)
            s, _, _ = logits_tile(qi, kj, bias, mask, lengths, scale, i, j, cfg)
            m_new = jnp.maximum(m, s.max(-1))
            p = jnp.exp(s - m_new[..., None])
            alpha = jnp.exp(m - m_new)
            norm = alpha * norm + p.sum(-1)
            if cfg.drop:
                assert inv is not None
                keep = keep_tile(words, rate, s.shape, i, j, cfg)
                p = jnp.where(keep, p * inv, jnp.float32(0))
            pv = jnp.einsum(
                "bkgqs,bksh->bkgqh",
                p.astype(v.dtype),
                vj,
                preferred_element_type=F32,
                precision=cfg.precision,
            )
            return m_new, norm, acc * alpha[..., None] + pv

        init = (
            jnp.full((b, kh, g, cfg.block_q), -jnp.inf, F32),
            jnp.zeros((b, kh, g, cfg.block_q), F32),
            jnp.zeros((b, kh, g, cfg.block_q, h), F32),
        )
        m, norm, acc = jax.lax.fori_loop(0, _num_kv_tiles(i, cfg, nk), body, init)
        return (acc / norm[..., None]).astype(q.dtype), jnp.stack([m, 1.0 / norm])

    out, stats = jax.lax.map(q_tile, jnp.arange(nq))  # [nq, B, K, G, bq, H], [nq, 2, ...]
    out = jnp.moveaxis(out, 0, 3).reshape(q.shape)
    stats = jnp.moveaxis(stats, 0, 4).reshape((2, *q.shape[:-1]))
    return out, stats


def _backward(cfg: Config, res, d_out):
    q, k, v, bias, mask, lengths, words, rate, scale, out, stats = res
    b, kh, g, tp, h = q.shape
    nq, nk = tp // cfg.block_q, k.shape[2] // cfg.block_kv
    bq, bk = cfg.block_q, cfg.block_kv
    inv = _m.inverse_keep_prob(rate) if cfg.drop else None
    # D = rowsum(dO * O): the softmax backward's row term, dropout included.
    delta = jnp.sum(d_out.astype(F32) * out.astype(F32), axis=-1)
    if bias is not None:
        reduce_axes = tuple(
            a
            for a, (bd, qd) in enumerate(zip(bias.shape[:3], q.shape[:3], strict=True))
            if bd == 1 < qd
        )

    prec = cfg.precision

    def kv_tile(carry, j):
        dq, dbias, dscale = carry
        kj = jax.lax.dynamic_slice_in_dim(k, j * bk, bk, axis=2)
        vj = jax.lax.dynamic_slice_in_dim(v, j * bk, bk, axis=2)

        def body(i, c):
            dq, dbias, dscale, dk, dv = c
            qi = jax.lax.dynamic_slice_in_dim(q, i * bq, bq, axis=3)
            doi = jax.lax.dynamic_slice_in_dim(d_out, i * bq, bq, axis=3)
            m_i, inv_l_i = jax.lax.dynamic_slice_in_dim(stats, i * bq, bq, axis=4)
            delta_i = jax.lax.dynamic_slice_in_dim(delta, i * bq, bq, axis=3)
            s, allowed, raw = logits_tile(qi, kj, bias, mask, lengths, scale, i, j, cfg)
            p = jnp.exp(s - m_i[..., None]) * inv_l_i[..., None]
            if cfg.drop:
                assert inv is not None
                keep = keep_tile(words, rate, s.shape, i, j, cfg)
                p_drop = jnp.where(keep, p * inv, jnp.float32(0))
            else:
                p_drop = p
            dv = dv + jnp.einsum(
                "bkgqs,bkgqh->bksh",
                p_drop.astype(d_out.dtype),
                doi,
                preferred_element_type=F32,
                precision=prec,
            )
            dp = jnp.einsum(
                "bkgqh,bksh->bkgqs", doi, vj, preferred_element_type=F32, precision=prec
            )
            if cfg.drop:
                assert inv is not None
                dp = jnp.where(keep, dp * inv, jnp.float32(0))
            ds = p * (dp - delta_i[..., None])
            if allowed is not None:
                ds = jnp.where(allowed, ds, jnp.float32(0))
            if cfg.scale_grad:
                dscale = dscale + jnp.sum(ds * raw)
            if bias is not None:
                part = ds.sum(axis=reduce_axes, keepdims=True) if reduce_axes else ds
                if bias.shape[3] == 1:
                    part = part.sum(axis=3, keepdims=True)
                if bias.shape[4] == 1:
                    part = part.sum(axis=4, keepdims=True)
                at = (
                    0,
                    0,
                    0,
                    i * bq if bias.shape[3] > 1 else 0,
                    j * bk if bias.shape[4] > 1 else 0,
                )
                old = jax.lax.dynamic_slice(dbias, at, part.shape)
                dbias = jax.lax.dynamic_update_slice(dbias, old + part, at)
            ds = (ds * scale).astype(q.dtype)
            dq_i = jnp.einsum(
                "bkgqs,bksh->bkgqh", ds, kj, preferred_element_type=F32, precision=prec
            )
            old = jax.lax.dynamic_slice_in_dim(dq, i * bq, bq, axis=3)
            dq = jax.lax.dynamic_update_slice_in_dim(dq, old + dq_i, i * bq, axis=3)
            dk = dk + jnp.einsum(
                "bkgqs,bkgqh->bksh", ds, qi, preferred_element_type=F32, precision=prec
            )
            return dq, dbias, dscale, dk, dv

        zeros = jnp.zeros((b, kh, bk, h), F32)
        dq, dbias, dscale, dk, dv = jax.lax.fori_loop(
            _first_q_tile(j, cfg), nq, body, (dq, dbias, dscale, zeros, zeros)
        )
        return (dq, dbias, dscale), (dk, dv)

    dbias0 = None if bias is None else jnp.zeros(bias.shape, F32)
    init = (jnp.zeros(q.shape, F32), dbias0, jnp.zeros((), F32))
    (dq, dbias, dscale), (dk, dv) = jax.lax.scan(kv_tile, init, jnp.arange(nk))
    dk = jnp.moveaxis(dk, 0, 2).reshape(k.shape)
    dv = jnp.moveaxis(dv, 0, 2).reshape(v.shape)
    d_rate = None
    if cfg.drop:
        assert inv is not None
        # Pathwise derivative (mask held fixed): d out / d rate = out / (1 - rate).
        d_rate = (jnp.sum(delta) * inv).astype(jnp.asarray(rate).dtype)
    return (
        dq.astype(q.dtype),
        dk.astype(k.dtype),
        dv.astype(v.dtype),
        None if dbias is None else dbias.astype(bias.dtype),
        None,
        (None, None),
        None,
        d_rate,
        dscale.astype(scale.dtype),
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _flash(cfg: Config, q, k, v, bias, mask, lengths, words, rate, scale):
    return _forward(cfg, q, k, v, bias, mask, lengths, words, rate, scale)[0]


def _flash_fwd(cfg: Config, q, k, v, bias, mask, lengths, words, rate, scale):
    out, stats = _forward(cfg, q, k, v, bias, mask, lengths, words, rate, scale)
    return out, (q, k, v, bias, mask, lengths, words, rate, scale, out, stats)


_flash.defvjp(_flash_fwd, _backward)


def to_internal(query, key, value, bias, mask, block_q: int, block_kv: int):
    """``[B, T, N, H]`` inputs and 4-D ``[B|1, N|1, T|1, S|1]`` bias/mask to padded tiles."""
    b, t, n, h = query.shape
    s, kh = key.shape[1], key.shape[2]
    g = n // kh
    tp, sp = -(-t // block_q) * block_q, -(-s // block_kv) * block_kv
    q = query.reshape(b, t, kh, g, h).transpose(0, 2, 3, 1, 4)
    k = key.transpose(0, 2, 1, 3)
    v = value.transpose(0, 2, 1, 3)
    q = jnp.pad(q, ((0, 0),) * 3 + ((0, tp - t), (0, 0)))
    k = jnp.pad(k, ((0, 0), (0, 0), (0, sp - s), (0, 0)))
    v = jnp.pad(v, ((0, 0), (0, 0), (0, sp - s), (0, 0)))

    def operand(x):
        if x is None:
            return None
        xb, xn, xt, xs = x.shape
        x = x.reshape(xb, kh, g, xt, xs) if xn == n and n > 1 else x.reshape(xb, 1, 1, xt, xs)
        pads = ((0, 0),) * 3 + ((0, tp - t if xt > 1 else 0), (0, sp - s if xs > 1 else 0))
        return jnp.pad(x, pads)

    return q, k, v, operand(bias), operand(mask)


def blockwise_attention(
    query,
    key,
    value,
    bias,
    mask,
    lengths,
    words,
    rate,
    scale,
    *,
    cfg: Config,
):
    """Blockwise attention on batched ``[B, T, N, H]`` inputs; output ``[B, T, N, H]``.

    ``bias``/``mask`` are 4-D (size-1 axes where they broadcast), ``lengths`` the pair
    ``(query_seq_lengths, key_value_seq_lengths)`` (each int32 ``[B]`` or None), ``words``
    the dropout key's two words and ``rate`` a float32 scalar (both None when ``cfg.drop``
    is False), ``scale`` a float32 scalar.
    """
    b, t, n, h = query.shape
    q, k, v, bias, mask = to_internal(query, key, value, bias, mask, cfg.block_q, cfg.block_kv)
    out = _flash(cfg, q, k, v, bias, mask, lengths, words, rate, scale)
    out = out[:, :, :, :t].transpose(0, 3, 1, 2, 4)
    return out.reshape(b, t, n, h)
