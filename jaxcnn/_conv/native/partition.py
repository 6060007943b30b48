r"""The native kernels in an op that XLA's SPMD partitioner splits: one call per batch shard.

XLA's partitioner cannot split a custom call by itself: it would gather the operands onto every
device and run the whole call there. In a data-parallel program the split is the batch's, and
the seed formulas (``x: (N, *S, C)``, ``w: (*K, C, O)``, ``dy: (N, *S', O)``) say what each shard
``b`` of the batch (samples ``n ∈ B_b``) computes:

- ``conv`` (and the input gradient, a ``conv`` of ``dy``): ``y[n, i, o] = Σ_{k, c} x[n, at(i, k),
  c] · w[k, c, o]`` reads sample ``n`` only, so ``y[B_b] = conv(x[B_b], w)``: the kernel on the
  local samples with the whole kernel ``w``, its result sharded like ``x``;
- ``weight_grad``: ``dw[k, c, o] = Σ_n Σ_i x[n, at(i, k), c] · dy[n, i, o] = Σ_b dw_b`` with
  ``dw_b`` the kernel on the local samples, so each device sums the partials of the devices
  along the batch's mesh axes (``psum``) and holds the whole ``dw``, replicated.

The split is declared with ``jax.experimental.custom_partitioning``: its ``sharding_rule`` (the
Shardy partitioner's, einsum-like: a factor per axis) lets the batch factor ``b`` be sharded and
marks every other factor as needing replication (a spatial shard's taps read its neighbours'
rows; a channel shard would leave partial sums; the kernel and channel axes are small), and
the ``partition`` callback, given the shardings the partitioner settled on, asks for the
operands sharded along the batch alone (the partitioner gathers any other split first) and
returns the per-shard program above. A batch that does not divide over its devices is run
whole on every device, as XLA runs a custom call it cannot split. Kernels whose every sample
is computed from its own sample (pooling, GroupNorm: ``split_samples``) run per shard with
nothing to sum; an operand without a batch axis (GroupNorm's scale) is whole on every device.
The GSPMD partitioner's callbacks (``infer_sharding_from_operands``) say the same for releases
that still use it.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import jax
from jax.sharding import NamedSharding, PartitionSpec

from jaxcnn._compat import custom_partitioning
from jaxcnn._conv.pieces import lax_input_grad
from jaxcnn._shapes import ConvSpec

__all__ = ["split_by_batch", "sharding_rule", "split_per_sample", "per_sample_rule", "split_samples",
           "split_lax_input_grad"]


def sharding_rule(rank: int, summed: bool) -> tuple[str, dict[str, tuple[str, ...]]]:
    """The einsum-like rule of a kernel call on operands of ``rank`` axes: ``(rule, factors)``.

    ``conv``: ``b s… c, k… c o -> b t… o``; ``weight_grad`` (``summed``): ``b s… c, b t… o ->
    k… c o`` with ``b`` a reduction factor. Every factor but ``b`` needs replication; ``s``,
    ``t`` and ``k`` (input, output and kernel positions) are distinct factors of their own sizes.
    """
    axes = range(rank - 2)
    s, t, k = ([f"{name}{a}" for a in axes] for name in "stk")
    if summed:
        rule = f"b {' '.join(s)} c, b {' '.join(t)} o -> {' '.join(k)} c o"
    else:
        rule = f"b {' '.join(s)} c, {' '.join(k)} c o -> b {' '.join(t)} o"
    factors = _all_but_batch_replicated(rule)
    if summed:
        factors["reduction_factors"] = ("b",)
    return rule, factors


def _all_but_batch_replicated(rule: str) -> dict[str, tuple[str, ...]]:
    """``need_replication_factors``: every factor of ``rule`` but the batch ``b``, in the order
    the factors first appear (Shardy numbers them so and wants each list in that order)."""
    order = list(dict.fromkeys(rule.replace(",", " ").replace("->", " ").split()))
    return {"need_replication_factors": tuple(f for f in order if f != "b")}


def _names(entry: Any) -> tuple[str, ...]:
    """The mesh axis names of one ``PartitionSpec`` entry (None, a name, or a tuple of names)."""
    if entry is None:
        return ()
    return tuple(entry) if isinstance(entry, tuple) else (entry,)


def _batch_axes(mesh: Any, sharding: Any, batch: int) -> tuple[str, ...]:
    """The mesh axes ``sharding`` splits the leading (batch) axis over, where ``batch`` samples
    divide over their devices; ``()`` otherwise (the call runs whole on every device)."""
    spec = getattr(sharding, "spec", None)
    if not spec:
        return ()
    names = _names(spec[0])
    if batch % math.prod(mesh.shape[name] for name in names):
        return ()
    return names


def _along(mesh: Any, names: tuple[str, ...]) -> NamedSharding:
    """Sharded along the leading axis over the mesh axes ``names``, every other axis whole."""
    return NamedSharding(mesh, PartitionSpec(names or None))


def split_by_batch(call: Callable[[jax.Array, jax.Array, tuple[int, ...]], jax.Array],
                   a: jax.Array, b: jax.Array, shape: tuple[int, ...], *, summed: bool,
                   rule: tuple[str, dict[str, tuple[str, ...]]] | None = None) -> jax.Array:
    """``call(a, b, shape)``, a kernel call, split by the partitioner over the batch shards.

    Args:
      call: ``call(a, b, out_shape)``, the kernel on operands whose leading axis is the batch
        (any number of samples: the kernels' geometry reads only the other axes).
      a: ``x`` (``conv``, ``weight_grad``) or ``dy`` (the input gradient): ``(N, …)``.
      b: the kernel ``w`` (``conv``), or ``dy`` (``weight_grad``, batch-leading like ``a``).
      shape: the result's global shape.
      summed: the result is a sum over the batch (``weight_grad``): each shard's partial is
        summed over the batch's devices; otherwise the result is batch-leading like ``a``.
      rule: the Shardy rule and its factors; default ``sharding_rule`` (the kernels' layout).
    """
    rule, factors = rule or sharding_rule(a.ndim, summed)

    def shardings(mesh, batch_axes):
        along = _along(mesh, batch_axes)
        whole = NamedSharding(mesh, PartitionSpec())
        return (along, along if summed else whole), whole if summed else along

    def infer_sharding_from_operands(mesh, arg_shapes, result_shape):
        return shardings(mesh, _batch_axes(mesh, arg_shapes[0].sharding, a.shape[0]))[1]

    def partition(mesh, arg_shapes, result_shape):
        batch_axes = _batch_axes(mesh, arg_shapes[0].sharding, a.shape[0])
        args, result = shardings(mesh, batch_axes)

        def per_shard(a_local, b_local):
            if summed:
                partial = call(a_local, b_local, shape)
                return jax.lax.psum(partial, batch_axes) if batch_axes else partial
            return call(a_local, b_local, (a_local.shape[0], *shape[1:]))
        return mesh, per_shard, result, args

    split = custom_partitioning()(_whole(call, shape))
    split.def_partition(partition, infer_sharding_from_operands=infer_sharding_from_operands,
                        sharding_rule=rule, **factors)
    return split(a, b)


def _whole(call: Callable, shape: tuple[int, ...]) -> Callable:
    """The unsplit call: what custom partitioning runs where nothing is split."""
    def whole(a, b):
        return call(a, b, shape)
    return whole


def per_sample_rule(pooled: tuple[bool, ...], result_pooled: bool, rank: int) -> tuple[str, dict]:
    """The einsum-like rule of a pooling kernel call (``pooling``): every operand and the result
    ``b <spatial> c``, the spatial factors ``t…`` where the array has the pooled sizes, ``s…``
    where the input's. Every factor but the batch ``b`` needs replication (a window reads its
    neighbours' rows; the channels, which could split, are small)."""
    rule = _terms_rule(*_pooling_terms(pooled, result_pooled, rank))
    return rule, _all_but_batch_replicated(rule)


def _pooling_terms(pooled: tuple[bool, ...], result_pooled: bool, rank: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    axes = range(rank - 2)

    def term(is_pooled: bool) -> str:
        return " ".join(["b", *(f"{'t' if is_pooled else 's'}{a}" for a in axes), "c"])
    return tuple(term(p) for p in pooled), (term(result_pooled),)


def _terms_rule(operands: tuple[str, ...], results: tuple[str, ...]) -> str:
    return f"{', '.join(operands)} -> {', '.join(results)}"


def split_per_sample(call: Callable[..., jax.Array], operands: tuple[jax.Array, ...],
                     pooled: tuple[bool, ...], result_pooled: bool) -> jax.Array:
    """``call(*operands)``, a pooling kernel whose every operand and result is batch-leading and
    whose every sample is computed from the same sample alone (no sum over the batch): one call
    per batch shard on its local samples, the result sharded like the operands. ``pooled`` says
    which operands (and ``result_pooled`` whether the result) have the pooled spatial sizes."""
    return split_samples(call, operands, *_pooling_terms(pooled, result_pooled, operands[0].ndim))


def split_samples(call: Callable[..., Any], operands: tuple[jax.Array, ...], operand_terms: tuple[str, ...],
                  result_terms: tuple[str, ...]) -> Any:
    """``call(*operands)``, a kernel whose every sample of its batch-leading results is computed
    from the same sample of its batch-leading operands alone (no sum over the batch): one call per
    batch shard on its local samples. ``operand_terms`` and ``result_terms``: each array's factors
    (Shardy's, space-separated), the batch ``b`` first where it has one; an array without it (a
    per-channel scale) is whole on every device. One result term: ``call`` returns one array;
    more: a tuple of them."""
    rule = _terms_rule(operand_terms, result_terms)
    batch = operands[0].shape[0]

    def shardings(mesh, arg_shapes):
        along = _along(mesh, _batch_axes(mesh, arg_shapes[0].sharding, batch))
        whole = NamedSharding(mesh, PartitionSpec())
        args = tuple(along if t.split()[0] == "b" else whole for t in operand_terms)
        results = tuple(along if t.split()[0] == "b" else whole for t in result_terms)
        return args, results if len(results) > 1 else results[0]

    def infer_sharding_from_operands(mesh, arg_shapes, result_shape):
        return shardings(mesh, arg_shapes)[1]

    def partition(mesh, arg_shapes, result_shape):
        args, results = shardings(mesh, arg_shapes)
        return mesh, call, results, args

    split = custom_partitioning()(call)
    split.def_partition(partition, infer_sharding_from_operands=infer_sharding_from_operands,
                        sharding_rule=rule, **_all_but_batch_replicated(rule))
    return split(*operands)


def split_lax_input_grad(dy: jax.Array, w: jax.Array, spec: ConvSpec, in_shape: tuple[int, ...]) -> jax.Array:
    """``pieces.lax_input_grad`` in an op XLA's SPMD partitioner splits: one call per batch shard
    (any layout; a spatial split is gathered first), because the partitioner splits the strided
    conv's input gradient wrongly itself.

    That gradient is one convolution with ``lhs_dilation`` = the stride. XLA's partitioner
    (jaxlib 0.10.2) splits such a convolution along a sharded spatial axis into per-device
    convolutions with halo exchanges, and where the padding reaches further than a device's
    shard it emits a ``dynamic-slice`` larger than its operand (the HLO verifier rejects the
    program) or a convolution of the wrong shape (a failed check aborts the process). Every
    sample's gradient reads that sample alone, so the batch split is exact; the spatial split
    costs a gather. Reproducer and the configurations probed: ``experiments/xla_partitioner_conv/``.
    """
    names = lambda prefix, count, first=0: [f"{prefix}{a}" for a in range(first, count)]
    rule = (f"b {' '.join(names('i', dy.ndim, 1))}, {' '.join(names('w', w.ndim))} -> "
            f"b {' '.join(names('o', len(in_shape), 1))}")
    return split_by_batch(lambda a, b, shape: lax_input_grad(a, b, spec, shape), dy, w, tuple(in_shape),
                          summed=False, rule=(rule, _all_but_batch_replicated(rule)))
