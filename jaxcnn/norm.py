r"""Group normalisation (Wu & He, 2018; ``torch.nn.functional.group_norm``) as JAX primitives
with hand-written derivative rules.

Per example ``n`` and group ``g`` of ``C/G`` channels, over the group's channels and every
position (``m = (C/G)·|S|`` elements; ``mean`` below is over that set)::

    μ = mean x,   σ² = mean (x − μ)²,   r = (σ² + eps)^(−½),   x̂ = (x − μ)·r
    y = γ_c·x̂ + β_c

The tangent map, by the chain rule through μ, σ² and r (``mean(x − μ) = 0`` drops a term)::

    μ̇ = mean ẋ,   ṙ = −½·r³·2·mean((x − μ)·ẋ) = −r²·mean(x̂·ẋ)
    ẏ = γ_c·r·(ẋ − mean ẋ − x̂·mean(x̂·ẋ)) + γ̇_c·x̂ + β̇_c

It is linear in ``(ẋ, γ̇, β̇)``. Its transpose, the VJP, follows because the per-group map
``P(v) = v − mean v − x̂·mean(x̂·v)`` is self-adjoint (``⟨P u, v⟩ = ⟨u, P v⟩``)::

    dx = r·P(γ_c·dy) = r·(γ_c·dy − mean(γ_c·dy) − x̂·mean(γ_c·dy·x̂))
    dγ_c = Σ_{n, S} dy·x̂,   dβ_c = Σ_{n, S} dy

Each map is computed as sums per (example, channel) over the positions, then per group over
the channels, and one elementwise pass with per-(example, channel) coefficients:
``y = (x − μ)·a + β``, ``ẏ = ẋ·p + (x − μ)·q + c``, ``dx = dy·p + (x − μ)·q' + c'``
(XLA fuses each pass; on a 2-core CPU the hand-written VJP with its ReLU runs 1.2–1.5× faster
than JAX's autodiff of the forward). Statistics in float32 at least, in two passes (μ, then
``mean (x − μ)²``: no ``E[x²] − μ²``, whose float32 error grows as ``μ²/σ²``). The variance and
the VJP's ``Σ dy·(x − μ)`` each centre their own view of ``x``, which XLA fuses into the
reduction instead of writing ``x − μ`` out once for all its uses (``_group_variance``).

With a ReLU after the norm (``group_norm_relu``, which ``nn.serial`` runs for a ``GroupNorm``
layer followed by a ``ReLU``): ``y = max(0, z)``, ``z = γ_c·x̂ + β_c``, and every derivative
above masked by ``z > 0`` (``jax.nn.relu``'s: 0 at ``z = 0``): ``ẏ = [z > 0]·ẏ_norm``, and the
VJP of ``dy' = [z > 0]·dy``.

Three primitives, each with a ``relu`` flag: ``jaxcnn_group_norm`` (the forward; its JVP is the
tangent map), ``jaxcnn_group_norm_tangent`` (the tangent map, linear in its last three operands;
its transpose is the VJP) and ``jaxcnn_group_norm_vjp`` (the VJP: ``dx`` and per example the
channel sums ``Σ dy·x̂, Σ dy``, summed over the examples into ``dγ, dβ`` by the transpose rule).
So ``jax.jvp``/``jax.linearize`` run the tangent map and ``jax.grad`` its transpose. The VJP is
a primitive of its own because a transpose rule runs while tracing, before the platform is
known: on the CPU (float32, channels last) the forward and the VJP lower to native kernels that
work one example at a time in cache (``jaxcnn._conv.native.normalising``), elsewhere to the
formulas here. Second derivatives differentiate the tangent map's and the VJP's formulas
(``jnp`` code) with JAX's own rules. ``vmap`` folds a mapped axis into the batch axis (a mapped
scale or bias is applied outside the primitive; the VJP then vmaps its formula).
"""
from __future__ import annotations

import math
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.interpreters import ad, batching

from jaxcnn._args import normalize_group_norm
from jaxcnn._conv.native import normalising
from jaxcnn._primitives import (ShapedArray, fold_mapped, make_primitive, mapped_axis_first,
                                unfold_mapped)
from jaxcnn._shapes import spatial_axes

__all__ = ["group_norm", "group_norm_relu"]

# ----------------------------------------------------------------------------- arithmetic


def _acc(dtype: Any) -> Any:
    return np.promote_types(dtype, jnp.float32)


def _channels(shape: tuple[int, ...], channels_last: bool) -> int:
    return shape[-1 if channels_last else 1]


def _spatial(shape: tuple[int, ...], channels_last: bool) -> tuple[int, ...]:
    return spatial_axes(len(shape) - 2, channels_last)


def _group_mean(a: jax.Array, groups: int, channels_last: bool) -> jax.Array:
    """``(N, G, 1)``: the mean of ``a`` over each example's group. Summed where the channels
    sit, no transpose: channels last over the positions per channel first, then over the
    group's channels (30 vs 13 ms fwd+bwd at 128×28²×32); channels first over each group's
    contiguous (channels, positions) block at once (the two-step sum was slower there)."""
    count = math.prod(a.shape[1:]) // groups
    if channels_last:
        return jnp.sum(_channel_sums(a, groups, channels_last), axis=-1, keepdims=True) / count
    return jnp.sum(a.reshape(a.shape[0], groups, count), axis=-1, keepdims=True) / count   # not -1: N may be 0


def _channel_sums(a: jax.Array, groups: int, channels_last: bool) -> jax.Array:
    """``(N, G, C/G)``: ``a`` summed over the positions, per example and channel."""
    n, c = a.shape[0], _channels(a.shape, channels_last)
    return jnp.sum(a, axis=_spatial(a.shape, channels_last)).reshape(n, groups, c // groups)


def _spread(v: jax.Array, shape: tuple[int, ...], groups: int, channels_last: bool) -> jax.Array:
    """A per-(example, group[, channel]) coefficient ``(N or 1, G, 1 or C/G)`` shaped to
    broadcast against ``x: shape``."""
    n, c = shape[0], _channels(shape, channels_last)
    v = jnp.broadcast_to(v, (n, groups, c // groups)).reshape(n, c)
    ones = (1,) * (len(shape) - 2)
    return v.reshape((n, *ones, c) if channels_last else (n, c, *ones))


def _by_group(v: jax.Array, groups: int, dtype: Any) -> jax.Array:
    """A per-channel ``(C,)`` array as ``(1, G, C/G)``."""
    return v.astype(dtype).reshape(1, groups, -1)


def _group_variance(x: jax.Array, mean: jax.Array, groups: int, channels_last: bool) -> jax.Array:
    """``(N, G, 1)``: ``mean (x − μ)²`` per group (two passes: exact centring, no E[x²] − μ²),
    centred in a 3-D view of ``x`` (``(N, positions, C)``, or ``(N, G, C/G·positions)``) with its
    own ``x − μ``. XLA's CPU reductions fuse an ``x − μ`` that feeds them alone; the 4-D
    ``x − μ`` that the output, the VJP's ``Σ dy·(x − μ)`` and ``dx`` share would be written out
    for this reduction too (one write and one read of the activation more)."""
    n, c = x.shape[0], _channels(x.shape, channels_last)
    if channels_last:                                   # not -1 in the views: N may be 0
        view = x.reshape(n, math.prod(x.shape[1:]) // c, c)
        centered = view - _spread(mean, view.shape, groups, channels_last)
    else:
        centered = x.reshape(n, groups, math.prod(x.shape[1:]) // groups) - mean
    return _group_mean(jnp.square(centered), groups, channels_last)


def _centered_channel_sums(a: jax.Array, x: jax.Array, mean: jax.Array, groups: int,
                           channels_last: bool) -> jax.Array:
    """``(N, G, C/G)``: ``Σ a·(x − μ)`` over the positions, per example and channel, centred in
    a view ``(N, positions, 1, C)`` (or ``(N, C, 1, positions)``) of ``x``: its own ``x − μ``,
    fused into the reduction, for the reason ``_group_variance`` gives; the variance's view
    differs, so XLA does not merge the two. (A view with the group axis apart, ``C/G``
    innermost, reduced 2.5× slower.)"""
    n, c = x.shape[0], _channels(x.shape, channels_last)
    positions = math.prod(x.shape[1:]) // c
    view = (n, positions, 1, c) if channels_last else (n, c, 1, positions)
    mean = _spread(mean, (n, 1, 1, c) if channels_last else (n, c, 1, 1), groups, channels_last)
    sums = jnp.sum(a.reshape(view) * (x.reshape(view) - mean), axis=(1, 2) if channels_last else (2, 3))
    return sums.reshape(n, groups, c // groups)


def _statistics(x: jax.Array, groups: int, eps: float, channels_last: bool):
    """``(x − μ, μ, r, spread)``: ``x`` centred per group in the accumulation dtype (float32 at
    least; ``centered.dtype``), ``μ, r: (N, G, 1)``, and ``_spread`` for ``x``'s shape."""
    spread = partial(_spread, shape=x.shape, groups=groups, channels_last=channels_last)
    x = x.astype(_acc(x.dtype))
    mean = _group_mean(x, groups, channels_last)
    var = _group_variance(x, mean, groups, channels_last)
    return x - spread(mean), mean, jax.lax.rsqrt(var + jnp.asarray(eps, x.dtype)), spread


def _forward(x, scale, bias, *, groups: int, eps: float, channels_last: bool) -> jax.Array:
    # y = (x − μ)·a + β, a = γ·r: normalising and scaling folded into one multiply-add.
    centered, _, r, spread = _statistics(x, groups, eps, channels_last)
    acc = centered.dtype
    a = _by_group(scale, groups, acc) * r
    return (centered * spread(a) + spread(_by_group(bias, groups, acc))).astype(x.dtype)


def _relu_mask(centered, scale, bias, r, spread, groups: int) -> jax.Array:
    """``z > 0``, ``z = γ·x̂ + β`` the pre-activation: where a ReLU after the norm passes its
    derivative (``jax.nn.relu``'s: 0 at ``z = 0``)."""
    acc = centered.dtype
    z = centered * spread(_by_group(scale, groups, acc) * r) + spread(_by_group(bias, groups, acc))
    return z > 0


def _tangent(x, scale, bias, x_dot, scale_dot, bias_dot, *, groups: int, eps: float,
             channels_last: bool, relu: bool = False) -> jax.Array:
    # ẏ = γ·r·ẋ + (x − μ)·(γ̇·r − γ·r²·mean(x̂·ẋ)) + (β̇ − γ·r·mean ẋ), masked by z > 0 with relu
    centered, _, r, spread = _statistics(x, groups, eps, channels_last)
    acc = centered.dtype
    x_dot = x_dot.astype(acc)
    mean_dot = _group_mean(x_dot, groups, channels_last)                    # mean ẋ
    hat_dot = r * _group_mean(centered * x_dot, groups, channels_last)      # mean(x̂·ẋ)
    g, g_dot, b_dot = (_by_group(v, groups, acc) for v in (scale, scale_dot, bias_dot))
    p = g * r
    q = g_dot * r - p * r * hat_dot
    c = b_dot - p * mean_dot
    y_dot = x_dot * spread(p) + centered * spread(q) + spread(c)
    if relu:
        y_dot = jnp.where(_relu_mask(centered, scale, bias, r, spread, groups), y_dot, 0)
    return y_dot.astype(x.dtype)


def _vjp(x, scale, bias, dy, *, groups: int, eps: float, channels_last: bool, relu: bool = False):
    """``(dx, partials)``, the transpose of ``_tangent`` at ``dy`` (module docstring): ``dx``
    and per example ``partials[n] = (Σ_S dy·x̂, Σ_S dy): (2, C)``, whose sums over ``n`` are
    ``dγ, dβ``; with ``relu``, ``dy`` masked by ``z > 0`` first."""
    centered, mean, r, spread = _statistics(x, groups, eps, channels_last)
    acc = centered.dtype
    dy = dy.astype(acc)
    if relu:
        dy = jnp.where(_relu_mask(centered, scale, bias, r, spread, groups), dy, 0)
    count = math.prod(x.shape[1:]) // groups
    dy_sums = _channel_sums(dy, groups, channels_last)                      # Σ dy
    dy_hat = _centered_channel_sums(dy, x.astype(acc), mean, groups, channels_last) * r  # Σ dy·x̂
    g = _by_group(scale, groups, acc)
    mean_g_dy = jnp.sum(g * dy_sums, axis=-1, keepdims=True) / count        # mean(γ·dy)
    mean_g_dy_hat = jnp.sum(g * dy_hat, axis=-1, keepdims=True) / count     # mean(γ·dy·x̂)
    p = g * r
    dx = dy * spread(p) - centered * spread(r * r * mean_g_dy_hat) - spread(r * mean_g_dy)
    channels = _channels(x.shape, channels_last)
    return dx, jnp.stack([dy_hat, dy_sums], axis=1).reshape(x.shape[0], 2, channels)


# ----------------------------------------------------------------------------- primitives
# Three: the forward, its tangent map (linear in ẋ, γ̇, β̇) and the tangent map's transpose, the
# VJP. The forward and the VJP lower to the native kernels on the CPU (float32, channels last:
# ``jaxcnn._conv.native.normalising``); a transpose rule runs while tracing, before a platform
# is known, so the VJP is a primitive of its own to let its lowering choose. Each takes ``relu``:
# ``max(0, ·)`` of the forward, its derivative mask ``z > 0`` in the other two.

def _like_x(x, *_, **__) -> ShapedArray:
    return ShapedArray(x.shape, x.dtype)


def _forward_compute(x, scale, bias, *, groups, eps, channels_last, relu=False, platform=None):
    if normalising.uses_kernels(x, platform, channels_last):
        return normalising.native_group_norm(x, scale, bias, groups=groups, eps=eps, relu=relu)
    y = _forward(x, scale, bias, groups=groups, eps=eps, channels_last=channels_last)
    return jax.nn.relu(y) if relu else y


def _vjp_compute(x, scale, bias, dy, *, groups, eps, channels_last, relu=False, platform=None):
    if normalising.uses_kernels(x, platform, channels_last):
        return normalising.native_group_norm_vjp(x, scale, bias, dy, groups=groups, eps=eps, relu=relu)
    return _vjp(x, scale, bias, dy, groups=groups, eps=eps, channels_last=channels_last, relu=relu)


def _vjp_abstract_eval(x, scale, bias, dy, *, channels_last, **_) -> list[ShapedArray]:
    acc = _acc(x.dtype)
    return [ShapedArray(x.shape, acc), ShapedArray((x.shape[0], 2, _channels(x.shape, channels_last)), acc)]


NATIVE = dict(platforms=("cpu",),
              splits_custom_calls=lambda x, *_, channels_last, **__: normalising.may_use(x.dtype, channels_last, x.ndim))
group_norm_p = make_primitive("group_norm", _forward_compute, _like_x, **NATIVE)
tangent_p = make_primitive("group_norm_tangent", _tangent, _like_x)
vjp_p = make_primitive("group_norm_vjp", _vjp_compute, _vjp_abstract_eval, multiple_results=True, **NATIVE)


def _group_norm_jvp(primals, tangents, **params):
    tangents = [ad.instantiate_zeros(t) for t in tangents]
    return group_norm_p.bind(*primals, **params), tangent_p.bind(*primals, *tangents, **params)


def _tangent_transpose(ct, x, scale, bias, x_dot, scale_dot, bias_dot, **params):
    # The tangent map is linear in (ẋ, γ̇, β̇) only; x, the scale and the bias are data here.
    dx, partials = vjp_p.bind(x, scale, bias, ad.instantiate_zeros(ct), **params)
    dscale, dbias = jnp.sum(partials, axis=0)
    wanted = [(x_dot, dx), (scale_dot, dscale), (bias_dot, dbias)]
    return [None, None, None, *[g.astype(v.aval.dtype) if ad.is_undefined_primal(v) else None
                                for v, g in wanted]]


def _formula_jvp(formula):
    """Second order: JAX differentiates the ``jnp`` formula of the tangent map or the VJP."""
    def jvp(primals, tangents, **params):
        tangents = [ad.instantiate_zeros(t) for t in tangents]
        return jax.jvp(partial(formula, **params), tuple(primals), tuple(tangents))
    return jvp


def _vjp_jvp(primals, tangents, **params):
    out, out_dot = _formula_jvp(_vjp)(primals, tangents, **params)
    return list(out), list(out_dot)


ad.primitive_jvps[group_norm_p] = _group_norm_jvp
ad.primitive_jvps[tangent_p] = _formula_jvp(_tangent)
ad.primitive_transposes[tangent_p] = _tangent_transpose
ad.primitive_jvps[vjp_p] = _vjp_jvp


# ----------------------------------------------------------------------------- vmap
# Each example is normalised alone, so a mapped axis B of x (and of ẋ) folds into the batch
# axis: (B, N, ...) → (B·N, ...), one call. A mapped scale, bias or their tangents differ per
# B: the primitives then normalise with γ = 1, β = 0 and the affine part is applied outside,
# ``y = γ·x̂ + β`` and ``ẏ = γ·T(ẋ) + γ̇·x̂ + β̇``.

def _affine(a, scale, bias, channels_last: bool):
    """``a: (B, N, ...)`` scaled and shifted per (B, channel) by ``scale, bias: (B, C)``."""
    ones = (1,) * (a.ndim - 3)
    shape = (a.shape[0], 1, *ones, -1) if channels_last else (a.shape[0], 1, -1, *ones)
    acc = _acc(a.dtype)
    return (a.astype(acc) * scale.astype(acc).reshape(shape)
            + bias.astype(acc).reshape(shape)).astype(a.dtype)


def _normalised_batch_rule(prim, x_like: tuple[int, ...], args, dims, **params):
    """The vmap rule of the three primitives; ``x_like``: the operands shaped as x (the rest
    are per channel, ``(C,)``)."""
    size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
    if all(d is None for i, d in enumerate(dims) if i not in x_like):
        folded = [fold_mapped(mapped_axis_first(a, d, size), 0) if i in x_like else a
                  for i, (a, d) in enumerate(zip(args, dims))]
        out = prim.bind(*folded, **params)
        if prim is vjp_p:
            return [unfold_mapped(a, 0, size) for a in out], [0, 0]
        return unfold_mapped(out, 0, size), 0
    first = [mapped_axis_first(a, d, size) for a, d in zip(args, dims)]
    if prim is vjp_p:   # a scale or bias per B: the formula, vmapped (second order only)
        return list(jax.vmap(partial(_vjp, **params))(*first)), [0, 0]
    x, cl, relu = fold_mapped(first[0], 0), params["channels_last"], params["relu"]
    plain = dict(params, relu=False)
    one = jnp.ones(first[1].shape[-1], first[1].dtype)
    x_hat = unfold_mapped(group_norm_p.bind(x, one, 0 * one, **plain), 0, size)
    z = _affine(x_hat, first[1], first[2], cl)
    if prim is group_norm_p:
        return (jax.nn.relu(z) if relu else z), 0
    normal_dot = tangent_p.bind(x, one, 0 * one, fold_mapped(first[3], 0), 0 * one, 0 * one, **plain)
    normal_dot = unfold_mapped(normal_dot, 0, size)
    z_dot = _affine(normal_dot, first[1], 0 * first[1], cl) + _affine(x_hat, first[4], first[5], cl)
    return (jnp.where(z > 0, z_dot, 0) if relu else z_dot), 0


def _group_norm_batch_rule(args, dims, **params):
    return _normalised_batch_rule(group_norm_p, (0,), args, dims, **params)


def _tangent_batch_rule(args, dims, **params):
    return _normalised_batch_rule(tangent_p, (0, 3), args, dims, **params)


def _vjp_batch_rule(args, dims, **params):
    return _normalised_batch_rule(vjp_p, (0, 3), args, dims, **params)


batching.primitive_batchers[group_norm_p] = _group_norm_batch_rule
batching.primitive_batchers[tangent_p] = _tangent_batch_rule
batching.primitive_batchers[vjp_p] = _vjp_batch_rule


# ----------------------------------------------------------------------------- public

def _bind(x, groups, scale, bias, eps, channels_last, *, relu: bool) -> jax.Array:
    a = normalize_group_norm(x, scale, bias, groups, eps, channels_last)
    return group_norm_p.bind(a.x, a.scale, a.bias, groups=a.groups, eps=a.eps,
                             channels_last=a.channels_last, relu=relu)


def group_norm(x: jax.Array, groups: int, scale: jax.Array | None = None,
               bias: jax.Array | None = None, *, eps: float = 1e-5,
               channels_last: bool = False) -> jax.Array:
    """Group normalisation: ``y = (x − μ) / √(σ² + eps) · scale + bias`` with ``μ, σ²`` (biased)
    per example and per group of ``C / groups`` channels over all positions
    (``torch.nn.functional.group_norm(x, groups, scale, bias, eps)``).

    Args:
      x: ``(N, C, *S)``, or ``(N, *S, C)`` with ``channels_last``; any number of spatial axes.
      groups: a divisor of ``C``.
      scale, bias: ``(C,)``; ``None`` for ones and zeros (of float32, or x's wider dtype).
      eps: added to the variance.
      channels_last: where the channel axis sits.

    Returns:
      ``y``, shaped and typed as ``x``; the statistics in float32 at least.
    """
    return _bind(x, groups, scale, bias, eps, channels_last, relu=False)


def group_norm_relu(x: jax.Array, groups: int, scale: jax.Array | None = None,
                    bias: jax.Array | None = None, *, eps: float = 1e-5,
                    channels_last: bool = False) -> jax.Array:
    """``jax.nn.relu(group_norm(x, groups, scale, bias, ...))`` as one op: the same values and
    derivatives (``relu``'s derivative at 0 is 0), one native kernel call each way on the CPU
    (``jaxcnn._conv.native.normalising``) instead of a norm and two passes of the ReLU. The
    arguments are ``group_norm``'s; ``nn.serial`` calls it for a ``GroupNorm`` layer followed
    by a ``ReLU``."""
    return _bind(x, groups, scale, bias, eps, channels_last, relu=True)
