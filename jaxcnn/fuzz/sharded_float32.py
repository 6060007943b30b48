r"""``sharded_float32``: what a data-parallel user runs on CPUs, ``conv_float32``'s draws (float32,
mostly channels last and on the native kernels' conditions) with the batch sharded over
``shards`` forced CPU devices, against PyTorch in float64 and the unsharded op.

Two ways in, as ``sharded_input``'s batch placement: ``path="jit"``, the batch-sharded global
array into ``jax.jit`` on an Auto or Explicit mesh, where XLA's SPMD partitioner splits the op
and ``_conv.native.partition`` runs a kernel per shard (``jax.experimental.custom_partitioning``:
``y`` and ``dx`` per shard, ``dw`` the ``psum`` of the shards' partial sums); and
``path="shard_map"``, the block inside the caller's ``jax.shard_map`` (``check_vma`` as drawn),
where the kernels run on the local samples and the weight gradient's sum over the shards is
``shard_map``'s own (the unmapped ``w``'s cotangent).

Each value, the input and the weight gradient are held to ``tolerances.RTOL["float32"]``
relative to each element's ``Σ|terms|`` (``float32.magnitude_error``), against PyTorch and
against ``jaxcnn.conv`` unsharded (float32 too: the shards' partial sums add in another order,
an error of the same ``√L·u`` bound). Which path ran is read from the *compiled* program: the
partitioner writes the per-shard kernel calls only when it compiles (the lowered program holds
the ``custom_partitioning`` call), so the path is ``"<way in> native"`` where the compiled
fwd+bwd program calls ``jaxcnn_conv`` / ``jaxcnn_weight_grad`` and every call reads one shard's
``N / shards`` samples, ``"<way in> native unsplit"`` where a call reads more (the partitioner
gathered the batch: right values, every device doing the whole batch's work), else
``"<way in> xla"``. The cotangent is an argument of the program, split as ``y`` is (a constant
would be whole on every device, and so would the input gradient's kernel).
"""
from __future__ import annotations

import random
import re

import numpy as np

from jaxcnn.fuzz import checks, float32, sharding
from jaxcnn.fuzz.arrays import array_shapes, op_options, relayout, relayout_shape
from jaxcnn.fuzz.configs import FuzzCase

OPS = ("sharded_float32",)
# A kernel call in a compiled (HLO) program and the leading size of its first operand.
KERNEL_CALL = re.compile(r'custom_call_target="(?:{})".*?operand_layout_constraints=\{{\w+\[(\d+)'
                         .format("|".join(float32.NATIVE_TARGETS)))


def draw(op: str, rng: random.Random) -> dict:
    """One configuration in its JSON form: ``float32.draw``'s, its batch a multiple of the
    shards (an empty one is not drawn: on an Explicit mesh JAX's own shard_map returns
    unreadable empty arrays, ``sharding.draw_spatial``)."""
    c = float32.draw("conv_float32", rng)
    shards = rng.choice([2, 4])
    c.update(op=op, inner="conv", devices=sharding.DEVICES, shards=shards, placement="batch",
             path=rng.choice(["jit", "jit", "shard_map"]), mesh_kind=rng.choice(["auto", "explicit"]),
             check_vma=sharding.CHECK_VMA and rng.random() < 0.75, batch=shards * rng.choice([1, 2]))
    return c


def kernel_batches(compiled_text: str) -> list[int]:
    """The samples each native kernel call of a compiled program reads: the leading size of its
    first operand (``x``, or ``dy`` for the input gradient; ``x`` for the weight gradient)."""
    return [int(lead) for lead in KERNEL_CALL.findall(compiled_text)]


def _cotangent(c: FuzzCase):
    """The cotangent of a channels-first output shape, rounded to float32 (one per shape: every
    side gets the same)."""
    return lambda shape: (np.random.default_rng(c.seed + 1).standard_normal(shape)
                          .astype(np.float32).astype(np.float64))


def check(c: FuzzCase) -> dict:
    import contextlib

    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec
    import jaxcnn
    cannot = sharding.unrunnable(c)
    if cannot is not None:
        return cannot
    plain = c.replace(op="conv")
    kinds, shapes = zip(*array_shapes(plain))
    rng = np.random.default_rng(c.seed)
    arrays = [rng.standard_normal(s).astype(np.float32).astype(np.float64) for s in shapes]
    cotangent = _cotangent(c)

    def library_cotangent(out) -> jax.Array:
        first = cotangent(relayout_shape(plain, out.shape, "x", False))
        return jnp.asarray(relayout(plain, first, "x", True), jnp.float32)

    def sharded_cotangent(out) -> jax.Array:     # dy split as y is: dx's kernels per shard too
        return jax.device_put(library_cotangent(out), NamedSharding(mesh, PartitionSpec("d")))

    def channels_first(values: list) -> list[np.ndarray]:
        return [relayout(plain, v, k, False) for v, k in zip(values, ("x", *kinds))]

    options = op_options(plain)
    unsharded = checks.bound_op(jaxcnn.conv, plain, options)
    args = [jnp.asarray(relayout(plain, a, k, True), jnp.float32) for a, k in zip(arrays, kinds)]
    f, placed, mesh, way_in = sharding.sharded(c, unsharded, options, args)
    context = jax.set_mesh(mesh) if "(explicit)" in way_in else contextlib.nullcontext()
    with context:
        ours = checks.attempt(lambda: checks.run_function(
            f, placed, sharded_cotangent, compiled_text=True, cotangent_argument=True))
    batches = kernel_batches(ours[1][1]) if ours[0] == "ok" else []
    if ours[0] == "ok":
        ours = ("ok", channels_first(ours[1][0]))
    alone = checks.attempt(lambda: channels_first(checks.run_function(unsharded, args, library_cotangent)[0]))
    theirs = checks.attempt(lambda: checks.run_torch(plain, arrays, cotangent, None))
    magnitudes: list[np.ndarray] = []
    if theirs[0] == "ok" and ours[0] == "ok":
        magnitudes = checks.run_torch(plain, [np.abs(a) for a in arrays],
                                      lambda shape: np.abs(cotangent(shape)), None)

    def compare(errors: dict, name: str, got: list, expected: list) -> None:
        checks.compare(errors, name, got, list(zip(expected, magnitudes)),
                       error=lambda a, bm: float32.magnitude_error(a, *bm))

    result = checks.verdict(ours, {"torch": theirs, "unsharded": alone}, float32.TOLERANCE, compare)
    split = all(b == c.batch // c.shards for b in batches)
    result["path"] = f"{way_in} {('native' if split else 'native unsplit') if batches else 'xla'}"
    result["kernel_batches"] = batches
    return result
