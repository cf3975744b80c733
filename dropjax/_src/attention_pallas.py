"""Pallas kernels for blockwise attention with in-kernel dropout masks.

The algorithm is :mod:`dropjax._src.flash_attention`'s (FlashAttention-2 with the dropout
keep bit recomputed from the key's two words and the weight's global index), written as
three ``jax.experimental.pallas`` kernels:

* forward, grid ``(batch, heads, query tiles)``: one query tile against all key tiles,
  writing the output and the row statistics ``m`` and ``1 / l``;
* ``dq`` (and the bias gradient), grid ``(batch, heads, query tiles)``;
* ``dk, dv``, grid ``(batch, kv heads, key tiles)``, looping over the query tiles and over
  the query heads that share the key/value head (grouped-query attention).

No kernel reads or writes a ``[q_len, kv_len]`` array except the bias and its gradient
when a bias is given (the gradient is written per batch and head, then summed over the
axes the bias broadcasts along). Tested in Pallas' interpreter on CPU; the kernels use
only portable Pallas operations (``pl.ds`` loads, ``jnp`` maths), but this repository has
not run them on a GPU or TPU, where block sizes must also satisfy the backend's tiling
rules (powers of two on GPU; multiples of (8, 128) on TPU).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from dropjax._src import masks as _m
from dropjax._src.flash_attention import BIG_NEGATIVE, Config, position_mask, to_internal

__all__ = ["pallas_attention"]

F32 = jnp.float32


def _dot(a, b, contract, cfg: Config):
    """``lax.dot_general`` over one axis of each operand, float32 out, at ``cfg.precision``."""
    dims = (((contract[0],), (contract[1],)), ((), ()))
    return jax.lax.dot_general(a, b, dims, preferred_element_type=F32, precision=cfg.precision)


def _logits(q, kj, bias_ref, mask_ref, lens, scale, i, j, cfg: Config):
    """Float32 logits of tile ``(i, j)`` inside a kernel, the allowed-mask (or None), raw.

    ``lens`` is ``(query length, key/value length)`` of the kernel's batch row, each a
    scalar or None; ``raw`` is the unscaled ``q k^T`` (for the scale's gradient).
    """
    raw = _dot(q, kj, (1, 1), cfg)
    s = raw * scale
    if bias_ref is not None:
        s = s + _ref_tile(bias_ref, j, cfg).astype(F32)
    t_pos = i * cfg.block_q + jax.lax.broadcasted_iota(jnp.int32, s.shape, 0)
    s_pos = j * cfg.block_kv + jax.lax.broadcasted_iota(jnp.int32, s.shape, 1)
    allowed = position_mask(t_pos, s_pos, lens[0], lens[1], cfg)
    if mask_ref is not None:
        tile = _ref_tile(mask_ref, j, cfg) != 0
        allowed = tile if allowed is None else tile & allowed
    if allowed is not None:
        s = jnp.where(allowed, s, jnp.float32(BIG_NEGATIVE))
    if cfg.s % cfg.block_kv:
        s = jnp.where(s_pos < cfg.s, s, -jnp.inf)
    return s, allowed, raw


def _ref_tile(ref, j, cfg: Config):
    """The key tile ``j`` of a ``[bq|1, S|1]`` bias/mask block."""
    if ref.shape[1] > 1:
        return ref[:, pl.ds(j * cfg.block_kv, cfg.block_kv)]
    return ref[...]


def _keep(words_ref, rate_ref, b, n, i, j, cfg: Config):
    """The keep bits of tile ``(i, j)`` of head ``n``, batch ``b``: ``[bq, bk]``."""
    u32 = jnp.uint32
    shape = (cfg.block_q, cfg.block_kv)
    t_pos = (i * cfg.block_q).astype(u32) + jax.lax.broadcasted_iota(u32, shape, 0)
    s_pos = (j * cfg.block_kv).astype(u32) + jax.lax.broadcasted_iota(u32, shape, 1)
    index = [jnp.asarray(n).astype(u32), t_pos, s_pos]
    if len(cfg.weights_shape) == 4:
        index.insert(0, jnp.asarray(b).astype(u32))
    index = [u32(0) if axis in cfg.bdims else x for axis, x in enumerate(index)]
    drawn = _m.mask_shape(cfg.weights_shape, cfg.bdims)
    bits = _m.hash_bits_at((words_ref[0], words_ref[1]), drawn, index)
    return _m.keep_from_bits(jnp.broadcast_to(bits, shape), rate_ref[0])


def _lens(groups, b):
    """The query and key/value lengths of batch row ``b`` (None where not given)."""
    return tuple(None if groups[name] is None else groups[name][0][b] for name in ("qlen", "kvlen"))


def _flags(cfg: Config, has_bias: bool, has_mask: bool, has_qlen: bool, has_kvlen: bool):
    """The optional kernel inputs, in the order :func:`_extras` passes them."""
    return [
        ("bias", int(has_bias)),
        ("mask", int(has_mask)),
        ("qlen", int(has_qlen)),
        ("kvlen", int(has_kvlen)),
        ("drop", 2 * cfg.drop),
        ("scale", 1),
    ]


def _unpack(refs, flags):
    """Splits the kernel's refs into named optional groups in ``flags`` order."""
    out, pos = {}, 0
    for name, count in flags:
        out[name] = tuple(refs[pos : pos + count]) if count else None
        pos += count
    return out, refs[pos:]


def _forward_kernel(*refs, cfg: Config, nk: int, **flags):
    (q_ref, k_ref, v_ref), rest = refs[:3], refs[3:]
    groups, outs = _unpack(rest, _flags(cfg, **flags))
    o_ref, stats_ref = outs
    bias_ref = groups["bias"][0] if flags["has_bias"] else None
    mask_ref = groups["mask"][0] if flags["has_mask"] else None
    b, n, i = pl.program_id(0), pl.program_id(1), pl.program_id(2)
    lens, scale = _lens(groups, b), groups["scale"][0][0]
    q = q_ref[...]
    if cfg.drop:
        words_ref, rate_ref = groups["drop"]
        inv = _m.inverse_keep_prob(rate_ref[0])

    def body(j, carry):
        m, norm, acc = carry
        kj = k_ref[pl.ds(j * cfg.block_kv, cfg.block_kv), :]
        vj = v_ref[pl.ds(j * cfg.block_kv, cfg.block_kv), :]
        s, _, _ = _logits(q, kj, bias_ref, mask_ref, lens, scale, i, j, cfg)
        m_new = jnp.maximum(m, s.max(-1))
        p = jnp.exp(s - m_new[:, None])
        alpha = jnp.exp(m - m_new)
        norm = alpha * norm + p.sum(-1)
        if cfg.drop:
            keep = _keep(words_ref, rate_ref, b, n, i, j, cfg)
            p = jnp.where(keep, p * inv, jnp.float32(0))
        pv = _dot(p.astype(vj.dtype), vj, (1, 0), cfg)
        return m_new, norm, acc * alpha[:, None] + pv

    bq, h = q.shape
    init = (
        jnp.full((bq,), -jnp.inf, F32),
        jnp.zeros((bq,), F32),
        jnp.zeros((bq, h), F32),
    )
    hi: int | jax.Array = nk
    if cfg.skip:
        hi = jnp.minimum(nk, ((i + 1) * cfg.block_q + cfg.block_kv - 1) // cfg.block_kv)
    m, norm, acc = jax.lax.fori_loop(0, hi, body, init)
    o_ref[...] = (acc / norm[:, None]).astype(o_ref.dtype)
    stats_ref[0, :] = m
    stats_ref[1, :] = 1.0 / norm


def _dq_kernel(*refs, cfg: Config, nk: int, **flags):
    (q_ref, k_ref, v_ref, do_ref, stats_ref, delta_ref), rest = refs[:6], refs[6:]
    groups, outs = _unpack(rest, _flags(cfg, **flags))
    outs = list(outs)
    dq_ref = outs.pop(0)
    dbias_ref = outs.pop(0) if flags["has_bias"] else None
    dscale_ref = outs.pop(0) if cfg.scale_grad else None
    bias_ref = groups["bias"][0] if flags["has_bias"] else None
    mask_ref = groups["mask"][0] if flags["has_mask"] else None
    b, n, i = pl.program_id(0), pl.program_id(1), pl.program_id(2)
    lens, scale = _lens(groups, b), groups["scale"][0][0]
    q, do = q_ref[...], do_ref[...]
    m, inv_l, delta = stats_ref[0, :], stats_ref[1, :], delta_ref[...]
    if cfg.drop:
        words_ref, rate_ref = groups["drop"]
        inv = _m.inverse_keep_prob(rate_ref[0])
    if dbias_ref is not None:
        dbias_ref[...] = jnp.zeros(dbias_ref.shape, dbias_ref.dtype)

    def body(j, carry):
        dq, dscale = carry
        kj = k_ref[pl.ds(j * cfg.block_kv, cfg.block_kv), :]
        vj = v_ref[pl.ds(j * cfg.block_kv, cfg.block_kv), :]
        s, allowed, raw = _logits(q, kj, bias_ref, mask_ref, lens, scale, i, j, cfg)
        p = jnp.exp(s - m[:, None]) * inv_l[:, None]
        dp = _dot(do, vj, (1, 1), cfg)
        if cfg.drop:
            keep = _keep(words_ref, rate_ref, b, n, i, j, cfg)
            dp = jnp.where(keep, dp * inv, jnp.float32(0))
        ds = p * (dp - delta[:, None])
        if allowed is not None:
            ds = jnp.where(allowed, ds, jnp.float32(0))
        if cfg.scale_grad:
            dscale = dscale + jnp.sum(ds * raw)
        if dbias_ref is not None:
            part = ds if dbias_ref.shape[0] > 1 else ds.sum(0, keepdims=True)
            if dbias_ref.shape[1] > 1:
                cols = pl.ds(j * cfg.block_kv, cfg.block_kv)
                dbias_ref[:, cols] = dbias_ref[:, cols] + part
            else:
                dbias_ref[...] = dbias_ref[...] + part.sum(1, keepdims=True)
        ds = (ds * scale).astype(kj.dtype)
        return dq + _dot(ds, kj, (1, 0), cfg), dscale

    hi: int | jax.Array = nk
    if cfg.skip:
        hi = jnp.minimum(nk, ((i + 1) * cfg.block_q + cfg.block_kv - 1) // cfg.block_kv)
    dq, dscale = jax.lax.fori_loop(0, hi, body, (jnp.zeros(q.shape, F32), jnp.zeros((), F32)))
    dq_ref[...] = dq.astype(dq_ref.dtype)
    if dscale_ref is not None:
        dscale_ref[...] = jnp.broadcast_to(dscale, dscale_ref.shape)


def _dkv_kernel(*refs, cfg: Config, nq: int, groups_n: int, **flags):
    (q_ref, k_ref, v_ref, do_ref, stats_ref, delta_ref), rest = refs[:6], refs[6:]
    groups, (dk_ref, dv_ref) = _unpack(rest, _flags(cfg, **flags))
    bias_ref = groups["bias"][0] if flags["has_bias"] else None
    mask_ref = groups["mask"][0] if flags["has_mask"] else None
    b, kh, j = pl.program_id(0), pl.program_id(1), pl.program_id(2)
    lens, scale = _lens(groups, b), groups["scale"][0][0]
    kj, vj = k_ref[...], v_ref[...]
    if cfg.drop:
        words_ref, rate_ref = groups["drop"]
        inv = _m.inverse_keep_prob(rate_ref[0])
    bq = cfg.block_q

    def for_head(g, carry):
        n = kh * groups_n + g
        bias_g = None if bias_ref is None else bias_ref.at[g if bias_ref.shape[0] > 1 else 0]
        mask_g = None if mask_ref is None else mask_ref.at[g if mask_ref.shape[0] > 1 else 0]

        def body(i, carry):
            dk, dv = carry
            rows = pl.ds(i * bq, bq)
            qi, doi = q_ref[g, rows, :], do_ref[g, rows, :]
            m, inv_l = stats_ref[g, 0, rows], stats_ref[g, 1, rows]
            delta = delta_ref[g, rows]
            s, allowed, _ = _logits(
                qi, kj, _rows(bias_g, rows), _rows(mask_g, rows), lens, scale, i, j, cfg
            )
            p = jnp.exp(s - m[:, None]) * inv_l[:, None]
            dp = _dot(doi, vj, (1, 1), cfg)
            if cfg.drop:
                keep = _keep(words_ref, rate_ref, b, n, i, j, cfg)
                p_drop = jnp.where(keep, p * inv, jnp.float32(0))
                dp = jnp.where(keep, dp * inv, jnp.float32(0))
            else:
                p_drop = p
            dv = dv + _dot(p_drop.astype(doi.dtype), doi, (0, 0), cfg)
            ds = p * (dp - delta[:, None])
            if allowed is not None:
                ds = jnp.where(allowed, ds, jnp.float32(0))
            ds = (ds * scale).astype(qi.dtype)
            dk = dk + _dot(ds, qi, (0, 0), cfg)
            return dk, dv

        lo = (j * cfg.block_kv) // bq if cfg.skip else 0
        return jax.lax.fori_loop(lo, nq, body, carry)

    zeros = jnp.zeros(kj.shape, F32)
    dk, dv = jax.lax.fori_loop(0, groups_n, for_head, (zeros, zeros))
    dk_ref[...] = dk.astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


class _RowView:
    """A bias/mask ref restricted to the query rows of one tile (whole if it has one row)."""

    def __init__(self, ref, rows):
        self.ref, self.rows = ref, rows
        self.shape = (ref.shape[0] if ref.shape[0] == 1 else rows.size, ref.shape[1])

    def __getitem__(self, idx):
        rows = slice(None) if self.ref.shape[0] == 1 else self.rows
        if idx is Ellipsis:
            return self.ref[rows, :]
        return self.ref[rows, idx[1]]


def _rows(ref, rows):
    return None if ref is None else _RowView(ref, rows)


def _operand_spec(x, row_block: int, heads_axis: str):
    """BlockSpec of a ``[Bb, Nb, Tb, Sb]`` bias/mask for a ``(b, head, tile)`` grid."""
    _, xn, xt, xs = x.shape

    def index(b, h, i):
        return (
            b if x.shape[0] > 1 else 0,
            h if xn > 1 else 0,
            i if xt > 1 and heads_axis == "q" else 0,
            0,
        )

    rows = row_block if xt > 1 and heads_axis == "q" else xt
    return pl.BlockSpec((None, None, rows, xs), index)


def _group_operand_spec(x, groups_n: int):
    """BlockSpec of a bias/mask for the ``dk, dv`` grid: the group's heads, all rows."""
    _, xn, xt, xs = x.shape
    heads = groups_n if xn > 1 else 1

    def index(b, kh, j):
        return (b if x.shape[0] > 1 else 0, kh if xn > 1 else 0, 0, 0)

    return pl.BlockSpec((None, heads, xt, xs), index)


def _extras(lengths, words, rate, scale, cfg: Config):
    """The inputs after bias and mask: lengths, the dropout words and rate, the scale."""
    args = [x for x in lengths if x is not None]
    if cfg.drop:
        args += [words, rate.reshape(1)]
    return [*args, scale.reshape(1)]


def _scalar_specs(lengths, cfg: Config):
    """Whole-array specs for :func:`_extras`' inputs (each a few scalars)."""
    specs = [pl.BlockSpec(x.shape, lambda *_: (0,)) for x in lengths if x is not None]
    if cfg.drop:
        specs += [pl.BlockSpec((2,), lambda *_: (0,)), pl.BlockSpec((1,), lambda *_: (0,))]
    return [*specs, pl.BlockSpec((1,), lambda *_: (0,))]


def _kernel_flags(bias, mask, lengths) -> dict[str, bool]:
    return dict(
        has_bias=bias is not None,
        has_mask=mask is not None,
        has_qlen=lengths[0] is not None,
        has_kvlen=lengths[1] is not None,
    )


def _fwd(cfg: Config, interpret: bool, q, k, v, bias, mask, lengths, words, rate, scale):
    b, n, tp, h = q.shape
    kh, sp = k.shape[1], k.shape[2]
    g = n // kh
    nq, nk = tp // cfg.block_q, sp // cfg.block_kv
    specs = [
        pl.BlockSpec((None, None, cfg.block_q, h), lambda b, n, i: (b, n, i, 0)),
        pl.BlockSpec((None, None, sp, h), lambda b, n, i: (b, n // g, 0, 0)),
        pl.BlockSpec((None, None, sp, h), lambda b, n, i: (b, n // g, 0, 0)),
    ]
    specs += [_operand_spec(x, cfg.block_q, "q") for x in (bias, mask) if x is not None]
    specs += _scalar_specs(lengths, cfg)
    kernel = functools.partial(
        _forward_kernel, cfg=cfg, nk=nk, **_kernel_flags(bias, mask, lengths)
    )
    out, stats = pl.pallas_call(
        kernel,
        grid=(b, n, nq),
        in_specs=specs,
        out_specs=[
            pl.BlockSpec((None, None, cfg.block_q, h), lambda b, n, i: (b, n, i, 0)),
            pl.BlockSpec((None, None, 2, cfg.block_q), lambda b, n, i: (b, n, 0, i)),
        ],
        out_shape=[
            jax.ShapeDtypeStruct(q.shape, q.dtype),
            jax.ShapeDtypeStruct((b, n, 2, tp), F32),
        ],
        interpret=interpret,
        name="dropjax_attention_fwd",
    )(
        q,
        k,
        v,
        *[x for x in (bias, mask) if x is not None],
        *_extras(lengths, words, rate, scale, cfg),
    )
    return out, stats


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _pallas(cfg: Config, interpret: bool, q, k, v, bias, mask, lengths, words, rate, scale):
    return _fwd(cfg, interpret, q, k, v, bias, mask, lengths, words, rate, scale)[0]


def _pallas_fwd(cfg: Config, interpret: bool, q, k, v, bias, mask, lengths, words, rate, scale):
    out, stats = _fwd(cfg, interpret, q, k, v, bias, mask, lengths, words, rate, scale)
    return out, (q, k, v, bias, mask, lengths, words, rate, scale, out, stats)


def _pallas_bwd(cfg: Config, interpret: bool, res, d_out):
    q, k, v, bias, mask, lengths, words, rate, scale, out, stats = res
    b, n, tp, h = q.shape
    kh, sp = k.shape[1], k.shape[2]
    g = n // kh
    nq, nk = tp // cfg.block_q, sp // cfg.block_kv
    bq, bk = cfg.block_q, cfg.block_kv
    delta = jnp.sum(d_out.astype(F32) * out.astype(F32), axis=-1)  # [B, N, Tp]
    extras = [x for x in (bias, mask) if x is not None] + _extras(lengths, words, rate, scale, cfg)
    flags = _kernel_flags(bias, mask, lengths)

    # dq (and the bias gradient, per batch, head and query tile).
    q_tile = pl.BlockSpec((None, None, bq, h), lambda b, n, i: (b, n, i, 0))
    kv_all = pl.BlockSpec((None, None, sp, h), lambda b, n, i: (b, n // g, 0, 0))
    specs = [
        q_tile,
        kv_all,
        kv_all,
        q_tile,
        pl.BlockSpec((None, None, 2, bq), lambda b, n, i: (b, n, 0, i)),
        pl.BlockSpec((None, None, bq), lambda b, n, i: (b, n, i)),
    ]
    specs += [_operand_spec(x, bq, "q") for x in (bias, mask) if x is not None]
    specs += _scalar_specs(lengths, cfg)
    out_specs = [q_tile]
    out_shape = [jax.ShapeDtypeStruct(q.shape, F32)]
    if bias is not None:
        rows = bq if bias.shape[2] > 1 else 1
        cols = bias.shape[3]
        out_specs.append(pl.BlockSpec((None, None, rows, cols), lambda b, n, i: (b, n, i, 0)))
        out_shape.append(jax.ShapeDtypeStruct((b, n, nq * rows, cols), F32))
    if cfg.scale_grad:  # one partial sum per (batch, head, query tile)
        out_specs.append(pl.BlockSpec((None, None, None, 1), lambda b, n, i: (b, n, i, 0)))
        out_shape.append(jax.ShapeDtypeStruct((b, n, nq, 1), F32))
    outs = pl.pallas_call(
        functools.partial(_dq_kernel, cfg=cfg, nk=nk, **flags),
        grid=(b, n, nq),
        in_specs=specs,
        out_specs=out_specs,
        out_shape=out_shape,
        interpret=interpret,
        name="dropjax_attention_dq",
    )(q, k, v, d_out, stats, delta, *extras)
    dq = outs[0]
    dscale = jnp.sum(outs[-1]) if cfg.scale_grad else jnp.zeros((), F32)
    dbias = None
    if bias is not None:
        part = outs[1]
        if bias.shape[2] == 1:
            part = part.sum(2, keepdims=True)
        axes = tuple(a for a in (0, 1) if bias.shape[a] == 1)
        dbias = part.sum(axes, keepdims=True).astype(bias.dtype) if axes else part
        dbias = dbias.astype(bias.dtype)

    # dk, dv: one key tile against every query tile of the group's query heads.
    group = pl.BlockSpec((None, g, tp, h), lambda b, kh, j: (b, kh, 0, 0))
    kv_tile = pl.BlockSpec((None, None, bk, h), lambda b, kh, j: (b, kh, j, 0))
    specs = [
        group,
        kv_tile,
        kv_tile,
        group,
        pl.BlockSpec((None, g, 2, tp), lambda b, kh, j: (b, kh, 0, 0)),
        pl.BlockSpec((None, g, tp), lambda b, kh, j: (b, kh, 0)),
    ]
    specs += [_group_operand_spec(x, g) for x in (bias, mask) if x is not None]
    specs += _scalar_specs(lengths, cfg)
    dk, dv = pl.pallas_call(
        functools.partial(_dkv_kernel, cfg=cfg, nq=nq, groups_n=g, **flags),
        grid=(b, kh, nk),
        in_specs=specs,
        out_specs=[kv_tile, kv_tile],
        out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
        interpret=interpret,
        name="dropjax_attention_dkv",
    )(q, k, v, d_out, stats, delta, *extras)
    d_rate = None
    if cfg.drop:
        d_rate = (jnp.sum(delta) * _m.inverse_keep_prob(rate)).astype(rate.dtype)
    d_scale = dscale.astype(scale.dtype)
    return dq.astype(q.dtype), dk, dv, dbias, None, (None, None), None, d_rate, d_scale


_pallas.defvjp(_pallas_fwd, _pallas_bwd)


def pallas_attention(
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
    interpret: bool = False,
):
    """Pallas attention on batched ``[B, T, N, H]`` inputs (see :func:`blockwise_attention`)."""
    b, t, n, h = query.shape
    q5, k, v, bias5, mask5 = to_internal(query, key, value, bias, mask, cfg.block_q, cfg.block_kv)
    q = q5.reshape(b, n, q5.shape[3], h)  # [B, K, G, Tp, H] -> [B, N, Tp, H]

    def heads(x):
        return None if x is None else x.reshape(x.shape[0], -1, *x.shape[3:])

    bias4 = heads(bias5)
    mask4 = None if mask5 is None else heads(mask5).astype(jnp.int8)
    out = _pallas(cfg, interpret, q, k, v, bias4, mask4, lengths, words, rate, scale)
    out = out[:, :, :t].transpose(0, 2, 1, 3)
    return out.reshape(b, t, n, h)
