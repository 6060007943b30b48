r"""``conv_float32``: what users run on a CPU, float32 and channels last, which takes the native
kernels (``jaxcnn._conv.native.supports``: one group, ≥ 8 input channels, 1–3 spatial axes,
output channels a multiple of the vector width, impl ``"lax"``), against PyTorch in float64.

The inputs are drawn in float64 and rounded to float32 once; PyTorch gets the rounded values
exactly (cast up), so the only error left is jaxcnn's float32 arithmetic. Every value, the
input gradient and the weight gradient (``jax.vjp``, under ``jax.jit``) are held to
``tolerances.RTOL["float32"]`` *relative to the magnitude of the sum* each element is:
``|a − b| / Σ|terms|``, with ``Σ|terms|`` the same op in float64 on ``|x|, |w|, |b|`` and the
cotangent ``|dy|`` (conv and its gradients are sums of products, so this is the sum of the
terms' absolute values, element by element). A float32 sum of ``L`` terms errs by at most
``γ_L·Σ|terms|`` (``γ_L ≈ L·u``, ``u = 2⁻²⁴``) and in practice ``≈ √L·u`` (rounding errors
of both signs); here ``L`` ≤ a few 10³ (channels × taps, or ``N·∏S_out`` for ``dw``), so
``√L·u ≲ 4e-6`` sits under 1e-5, which a wrong tap (an O(1) error) cannot pass. Relative
to the sum's own value instead, cancellation would make the bound meaningless.

Which path ran is read from the lowered program: the native kernels are custom calls named
``jaxcnn_conv`` / ``jaxcnn_weight_grad`` (``_conv.native.TARGETS``); ``path`` is ``native``
if the fwd+bwd program holds one, else ``xla``. Some draws miss the native conditions on
purpose (few channels, groups, channels first, ``impl="manual"``) so both paths are fuzzed.
"""
from __future__ import annotations

import random

import numpy as np

from jaxcnn.fuzz import checks, configs
from jaxcnn.fuzz.arrays import array_shapes, op_options, relayout, relayout_shape
from jaxcnn.fuzz.configs import FuzzCase
from jaxcnn.tolerances import RTOL

OPS = ("conv_float32",)
TOLERANCE = RTOL["float32"]
NATIVE_TARGETS = ("jaxcnn_conv", "jaxcnn_weight_grad")   # the conv kernels of _conv.native.TARGETS


def draw(op: str, rng: random.Random) -> dict:
    """One configuration in its JSON form (``configs.draw`` makes it a case)."""
    n = rng.choices([1, 2, 3], weights=[30, 40, 30])[0]
    native_like = rng.random() < 0.8
    kernel = configs.draw_per_axis(rng, n, [1, 2, 3, 3, 4] if n < 3 else [1, 2, 3])
    stride = configs.draw_per_axis(rng, n, [1, 1, 1, 2, 3])
    dilation = configs.draw_per_axis(rng, n, [1, 1, 1, 2])
    padding = configs.draw_padding(rng, n)
    groups = 1 if native_like or rng.random() < 0.5 else 2
    channels = rng.choice([8, 16, 16, 24, 32]) if native_like else rng.choice([3, 4, 8, 16])
    config = dict(
        op=op, n=n, impl="lax" if native_like or rng.random() < 0.5 else "manual",
        channels_last=native_like or rng.random() < 0.5, batch=rng.choice([0, 1, 1, 2, 3]),
        groups=groups, channels=channels, out_channels=rng.choice([8, 16, 16, 32, 48]),
        kernel=kernel, stride=stride, dilation=dilation, padding=padding,
        bias=rng.random() < 0.5, padding_mode=rng.choice(configs.MODES),
        seed=rng.randrange(2**31), second_order=False)
    low_pad = padding if isinstance(padding, int) else 0
    sizes = configs.draw_sizes(rng, kernel, dilation, low_pad)
    if rng.random() < 0.7:      # mostly legal: the input holds the dilated kernel
        sizes = [max(s, d * (k - 1) + 1) for s, k, d in zip(sizes, kernel, dilation)]
    config["sizes"] = [min(s, 6 if n == 3 else 12) for s in sizes]
    return config


def magnitude_error(a: np.ndarray, b: np.ndarray, magnitude: np.ndarray) -> float:
    """``max |a − b| / Σ|terms|`` over the elements (0 where both are exactly 0 and nothing
    was summed; an element with nothing summed and ``a ≠ b`` is an infinite error)."""
    if a.shape != b.shape:
        return float("inf")
    if a.size == 0:
        return 0.0
    if not np.all(np.isfinite(a)):
        return float("inf")
    difference = np.abs(a.astype(np.float64) - b)
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = np.where(difference == 0, 0.0, difference / magnitude)
    return float(np.max(scaled))


def check(c: FuzzCase) -> dict:
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import jaxcnn
    c = c.replace(op="conv")     # the op itself, for the float64 fuzzer's helpers
    kinds, shapes = zip(*array_shapes(c))
    rng = np.random.default_rng(c.seed)
    arrays = [rng.standard_normal(s).astype(np.float32).astype(np.float64) for s in shapes]
    seeded = np.random.default_rng(c.seed + 1)
    cotangent = lambda shape: seeded.standard_normal(shape).astype(np.float32).astype(np.float64)
    first_ct: list[np.ndarray] = []

    def library_cotangent(out) -> jax.Array:
        first = relayout(c, cotangent(relayout_shape(c, out.shape, "x", False)), "x", True)
        first_ct.append(first)
        return jnp.asarray(first, jnp.float32)

    f = checks.bound_op(jaxcnn.conv, c, op_options(c))
    args = [jnp.asarray(relayout(c, a, k, True), jnp.float32) for a, k in zip(arrays, kinds)]
    ours = checks.attempt(lambda: checks.run_function(f, args, library_cotangent))
    path = "xla"
    if ours[0] == "ok":
        (values, text), ct = ours[1], relayout(c, first_ct[0], "x", False)
        path = "native" if any(name in text for name in NATIVE_TARGETS) else "xla"
        ours = ("ok", [relayout(c, v, k, False) for v, k in zip(values, ("x", *kinds))])
    else:
        ct = None
    fixed = lambda shape: ct if ct is not None else cotangent(shape)
    theirs = checks.attempt(lambda: checks.run_torch(c, arrays, fixed, None))
    magnitudes: list[np.ndarray] = []
    if theirs[0] == "ok" and ours[0] == "ok":
        magnitudes = checks.run_torch(c, [np.abs(a) for a in arrays], lambda shape: np.abs(fixed(shape)), None)

    def compare(errors: dict, name: str, got: list, expected: list) -> None:
        checks.compare(errors, name, got, list(zip(expected, magnitudes)),
                       error=lambda a, bm: magnitude_error(a, *bm))

    result = checks.verdict(ours, {"torch": theirs}, TOLERANCE, compare)
    result["path"] = path
    return result
