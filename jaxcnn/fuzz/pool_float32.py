r"""``pool_float32``: float32 pooling as users run it on a CPU, mostly channels last with at least
``_conv.native.pooling.MIN_CHANNELS`` channels, which takes the native pooling kernels
(``pool_cpu.cc``: max pool with its argmax, its gather and scatter; avg pool and its transpose).

``inner`` says which op is drawn (``max_pool`` or ``avg_pool``), over 1–3 spatial axes, every
window, stride, padding (up to half the window, as PyTorch takes it), dilation (max pool) and
``ceil_mode``/``count_include_pad``; about a fifth of the draws miss the kernels' conditions on
purpose (channels first, fewer than 8 channels, an empty batch) so that the XLA forms are
fuzzed beside them. The inputs are drawn in float64 and rounded to float32 once (with ``ties``,
from the integers −2…2: most windows hold tied maxima, where every side must pick PyTorch's
first tap in row-major order, else the gradient lands on another sample); the value and
the input gradient (``jax.vjp`` under ``jax.jit``, a float32-rounded cotangent) are compared with

- PyTorch in float64 on the same rounded values,
- ``jaxcnn.reference`` (plain lax, JAX autodiff) in float64, except a max pool with ``ties``
  (JAX's autodiff of a windowed max sends the gradient to a tied maximum of its own choice),
- the same op in float32 channels first (``xla``: the XLA forms of ``jaxcnn._pool``, never the
  kernels), in channels-first draws the program itself,

each at ``tolerances.RTOL["float32"]`` relative to each element's ``Σ|terms|``
(``float32.magnitude_error``): a max is exact and its gradient a sum of ``dy`` over the windows
whose argmax is the element (``Σ|dy|`` there: the same scatter of ``|dy|``); an average is a sum
of ``x`` (``Σ|x|``: the average of ``|x|``) and its transpose a sum of ``dy`` (of ``|dy|``). A
wrong argmax or a wrong tap is an O(1) error on that scale.

Which path ran is read from the lowered fwd+bwd program: ``native`` where it calls one of the
pooling kernels (``POOL_TARGETS``), else ``xla``.
"""
from __future__ import annotations

import random

import numpy as np

from jaxcnn.fuzz import checks, configs, float32, torch_side
from jaxcnn.fuzz.arrays import array_shapes, op_options, relayout, relayout_shape
from jaxcnn.fuzz.configs import FuzzCase

OPS = ("pool_float32",)
POOL_TARGETS = ("jaxcnn_max_pool", "jaxcnn_max_pool_gather", "jaxcnn_max_pool_scatter",
                "jaxcnn_avg_pool", "jaxcnn_avg_pool_transpose")


def draw(op: str, rng: random.Random) -> dict:
    """One configuration in its JSON form (``configs.draw`` makes it a case)."""
    inner = rng.choice(["max_pool", "avg_pool"])
    n = rng.choices([1, 2, 3], weights=[30, 40, 30])[0]
    native_like = rng.random() < 0.8
    window = configs.draw_per_axis(rng, n, [1, 2, 2, 3, 3, 4] if n < 3 else [1, 2, 3])
    dilation = configs.draw_per_axis(rng, n, [1, 1, 1, 2, 3]) if inner == "max_pool" else [1] * n
    config = dict(
        op=op, inner=inner, n=n, channels_last=native_like or rng.random() < 0.5,
        batch=rng.choice([1, 1, 2, 3]) if native_like else rng.choice([0, 1, 2]),
        channels=rng.choice([8, 8, 16, 24, 32]) if native_like else rng.choice([1, 3, 4, 7, 16]),
        window=window, stride=None if rng.random() < 0.3 else configs.draw_per_axis(rng, n, [1, 1, 2, 3]),
        padding=[rng.randint(0, k // 2) for k in window], dilation=dilation,
        ceil_mode=rng.random() < 0.4, ties=rng.random() < 0.3, seed=rng.randrange(2**31),
        second_order=False)
    if inner == "avg_pool":
        config["count_include_pad"] = rng.random() < 0.5
    sizes = configs.draw_sizes(rng, window, dilation, 0)
    if rng.random() < 0.85 or (inner == "avg_pool" and n == 3):
        # mostly legal: the input holds the dilated window (PyTorch's avg_pool3d asks for it
        # whatever the padding, a documented difference: torch_side.DIFFERENCES)
        sizes = [max(s, d * (k - 1) + 1) for s, k, d in zip(sizes, window, dilation)]
    config["sizes"] = [min(s, 6 if n == 3 else 12) for s in sizes]
    return config


def check(c: FuzzCase) -> dict:
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import jaxcnn
    from jaxcnn import reference
    plain = c.replace(op=c.inner, inner=None)
    kinds, shapes = zip(*array_shapes(plain))
    rng = np.random.default_rng(c.seed)
    x = (rng.integers(-2, 3, shapes[0]).astype(np.float64) if c.ties
         else rng.standard_normal(shapes[0]).astype(np.float32).astype(np.float64))
    cotangent = lambda shape: (np.random.default_rng(c.seed + 1).standard_normal(shape)
                               .astype(np.float32).astype(np.float64))

    def float32_run(case: FuzzCase) -> tuple[list[np.ndarray], str]:
        def library_cotangent(out) -> jax.Array:
            first = cotangent(relayout_shape(case, out.shape, "x", False))
            return jnp.asarray(relayout(case, first, "x", True), jnp.float32)
        f = checks.bound_op(getattr(jaxcnn, case.op), case, op_options(case))
        args = [jnp.asarray(relayout(case, x, "x", True), jnp.float32)]
        values, text = checks.run_function(f, args, library_cotangent)
        return [relayout(case, v, "x", False) for v in values], text

    ours = checks.attempt(lambda: float32_run(plain))
    path = "xla"
    if ours[0] == "ok":
        path = "native" if any(t in ours[1][1] for t in POOL_TARGETS) else "xla"
        ours = ("ok", ours[1][0])
    # A documented difference (a max pool's window entirely in the padding, where PyTorch is
    # memory-unsafe): PyTorch is not run, jaxcnn's refusal is expected and the others refuse too
    known = torch_side.differences(plain)
    others = {} if known else {"torch": checks.attempt(lambda: checks.run_torch(plain, [x], cotangent, None))}
    if not (c.ties and plain.op == "max_pool"):
        others["reference"] = checks.attempt(lambda: checks.run_jax(reference, plain, [x], kinds, cotangent, None))
    others["xla"] = checks.attempt(lambda: float32_run(plain.replace(channels_last=False))[0])
    magnitudes: list[np.ndarray] = []
    if "torch" in others and others["torch"][0] == "ok" and ours[0] == "ok":
        # Σ|terms|: an average of |x| (a max is its own magnitude), dx the same map of |dy|
        summed = checks.run_torch(plain, [np.abs(x) if plain.op == "avg_pool" else x],
                                  lambda shape: np.abs(cotangent(shape)), None)
        magnitudes = [np.abs(summed[0]), summed[1]]

    def compare(errors: dict, name: str, got: list, expected: list) -> None:
        checks.compare(errors, name, got, list(zip(expected, magnitudes)),
                       error=lambda a, bm: float32.magnitude_error(a, *bm))

    why = "; ".join(torch_side.DIFFERENCES[k]["why"] for k in known) or None
    result = checks.verdict(ours, others, float32.TOLERANCE, compare, expected_refusal=why)
    result["path"] = path
    return result
