r"""Sharded runs against the unsharded op, on forced CPU devices, in float64: values and VJPs
(every array argument) held to ``tolerances.RTOL["float64"]`` (the same sums, split).

- ``sharded.conv``, ``sharded.max_pool``, ``sharded.avg_pool``: ``jaxcnn.sharded``'s halo
  exchange on an input split along one spatial axis over ``shards`` devices, two ways in:
  ``path="mesh"`` (the global array and ``mesh=``, under ``jax.jit``) and
  ``path="shard_map"`` (the block inside the caller's own ``jax.shard_map``, ``check_vma``
  as drawn), against ``jaxcnn.conv`` / ``max_pool`` / ``avg_pool`` of the global array. Most
  draws tile the output (``L / stride`` outputs, halos no wider than a shard); the rest do
  not, and jaxcnn.sharded alone must refuse them (``documented``): whether they tile is
  worked out here from PyTorch's output size (``torch_side``), not from jaxcnn's code.
- ``sharded_input``: a plain op (``conv``, ``conv_transpose``, ``max_pool``, ``avg_pool``)
  drawn as the float64 fuzzer draws it, with its input batch- or spatially sharded under
  ``jax.jit`` (``path="jit"``, on an Auto or, where the release has them, Explicit mesh), or
  run block by block inside ``jax.shard_map`` over the batch (``path="shard_map"``).

The worker must see the devices before jax starts: a configuration carrying ``devices`` makes
``worker`` set ``--xla_force_host_platform_device_count`` first.
"""
from __future__ import annotations

import random

import numpy as np

from jaxcnn.fuzz import checks, configs, torch_side
from jaxcnn.fuzz.arrays import array_shapes, op_options, relayout
from jaxcnn.fuzz.configs import FuzzCase
from jaxcnn.tolerances import RTOL

OPS = ("sharded.conv", "sharded.max_pool", "sharded.avg_pool", "sharded_input")
DEVICES = 8
TOLERANCE = RTOL["float64"]
CHECK_VMA = True    # shard_map draws take check_vma=True (JAX's default, the target) 3 times in 4
NOT_TILING = "jaxcnn.sharded: the split does not tile the output or a halo is wider than a shard"
UNEVEN = ("explicit mesh: the result's sharded axis does not divide over the devices "
          "(its sharding is part of its type; out_sharding must say where it goes)")


# ----------------------------------------------------------------------------- draws

def _split_padding(rng: random.Random, extent: int, stride: int, tiling: bool) -> tuple[int, int]:
    """``(lo, hi)`` on the split axis: ``e − s ≤ lo + hi ≤ e − 1`` tiles the output."""
    total = rng.randint(max(extent - stride, 0), extent - 1) if tiling else rng.randint(0, extent + 1)
    lo = rng.randint(0, total)
    return lo, total - lo


def draw_spatial(op: str, rng: random.Random) -> dict:
    inner = op.split(".")[1]
    c = configs.draw_conv("conv", rng) if inner == "conv" else configs.draw_pool(inner, rng)
    n = c["n"] = min(c["n"], 3)
    for key in ("kernel", "window", "stride", "dilation", "sizes", "padding"):
        if isinstance(c.get(key), list):
            c[key] = c[key][:n]
    c.update(op=op, inner=inner, devices=DEVICES, shards=rng.choice([2, 4]),
             spatial_axis=rng.randrange(n), second_order=rng.random() < 0.1,
             path=rng.choice(["mesh", "shard_map"]), mesh_kind=rng.choice(["auto", "explicit"]),
             check_vma=CHECK_VMA and rng.random() < 0.75)
    if c["mesh_kind"] == "explicit":
        # JAX's own shard_map on an Explicit mesh returns an empty result whose shards hold the
        # whole shape (np.asarray fails; experiments/jax_empty_shard_map): no empty batch there.
        c["batch"] = max(c["batch"], 1)
    tiling = rng.random() < 0.9
    a, window = c["spatial_axis"], c.get("kernel", c.get("window"))
    stride = torch_side.as_list(c["stride"] if c["stride"] is not None else window, n)
    dilation = torch_side.as_list(c["dilation"], n)
    c["stride"], c["dilation"] = stride, dilation
    extent = dilation[a] * (window[a] - 1) + 1
    if inner == "conv":
        pads = torch_side.expected_pads(c["padding"], c["sizes"], window, stride, dilation)
        if not (isinstance(c["padding"], str) and c["padding"].upper() in ("SAME", "CAUSAL") and tiling):
            pads[a] = _split_padding(rng, extent, stride[a], tiling)
            c["padding"] = [list(p) for p in pads]
    else:   # symmetric: 2p in [e − s, e − 1], at most half the window (PyTorch)
        pad = min(-(-max(extent - stride[a], 0) // 2), extent // 2) if tiling else rng.randint(0, extent // 2)
        c["padding"][a] = pad
        c["ceil_mode"] = c["ceil_mode"] and rng.random() < 0.3
    local = stride[a] * rng.choice([1, 2, 3])
    while local < extent + 1:
        local += stride[a]
    c["sizes"][a] = c["shards"] * local
    return c


def draw_input(op: str, rng: random.Random) -> dict:
    inner = rng.choice(["conv", "conv", "conv_transpose", "max_pool", "avg_pool"])
    c = configs.draw_config(inner, rng)
    n = c["n"] = min(c["n"], 3)
    for key in ("kernel", "window", "stride", "dilation", "sizes", "padding", "output_padding"):
        if isinstance(c.get(key), list):
            c[key] = c[key][:n]
    shards = rng.choice([2, 4])
    placement = rng.choice(["batch", "batch", "spatial"])
    path = "shard_map" if placement == "batch" and rng.random() < 0.4 else "jit"
    c.update(op=op, inner=inner, devices=DEVICES, shards=shards, placement=placement, path=path,
             mesh_kind=rng.choice(["auto", "explicit"]), check_vma=CHECK_VMA and rng.random() < 0.75,
             second_order=False)
    if placement == "batch":
        c["batch"] = shards * rng.choice([1, 2])
    else:
        c["sizes"][0] = shards * max(-(-c["sizes"][0] // shards), 1)
    return c


def draw(op: str, rng: random.Random) -> dict:
    """One configuration in its JSON form (``configs.draw`` makes it a case)."""
    return draw_input(op, rng) if op == "sharded_input" else draw_spatial(op, rng)


# ----------------------------------------------------------------------------- expectations

def tiles(c: FuzzCase) -> bool:
    """Whether a ``jaxcnn.sharded`` configuration splits: ``stride | m``, ``L / stride``
    outputs (PyTorch's output size) and halos of at most ``m`` samples (``m − 1`` reflecting),
    the left one ``lo`` and the right one ``e − s − lo``."""
    a, n = c.spatial_axis, c.n
    plain = c.replace(op=c.inner)
    window, stride, dilation = c.kernel, c.stride, c.dilation
    if c.inner == "conv":
        lo = torch_side.expected_pads(c.padding, c.sizes, window, stride, dilation)[a][0]
        out = torch_side.conv_out_sizes(plain)[a]
    else:
        lo, out = torch_side.as_list(c.padding, n)[a], torch_side.pool_out_sizes(plain)[a]
    length, s = c.sizes[a], stride[a]
    local = length // c.shards
    extent = dilation[a] * (window[a] - 1) + 1
    limit = local - 1 if c.padding_mode == "reflect" else local
    return local % s == 0 and out == length // s and max(lo, extent - s - lo) <= limit


# ----------------------------------------------------------------------------- the runs

def _mesh(c: FuzzCase, name: str):
    from jaxcnn._compat import axis_types, make_mesh
    kinds = axis_types()
    explicit = c.mesh_kind == "explicit" and kinds
    kind = (kinds[0] if explicit else kinds[1]) if kinds else None
    return make_mesh((c.shards,), (name,), kind), "explicit" if explicit else "auto"


def sharded(c: FuzzCase, unsharded, options: dict, args: list):
    """The op run sharded as the configuration says (a ``placement``: a plain op on sharded
    inputs; none: ``jaxcnn.sharded.<inner>``): a function of the arrays, the arrays (placed on
    the mesh where the path takes placed inputs), the mesh and the path's name."""
    import jax
    from jax.sharding import NamedSharding, PartitionSpec as P
    import jaxcnn
    from jaxcnn._compat import shard_map
    mesh, kind = _mesh(c, "d")
    axis = 0 if c.placement == "batch" else ((c.spatial_axis or 0) + (1 if c.channels_last else 2))
    spec = P(*("d" if i == axis else None for i in range(c.n + 2)))
    replicated = (P(),) * (len(args) - 1)
    placed = [jax.device_put(a, NamedSharding(mesh, s)) for a, s in zip(args, (spec, *replicated))]
    name = f"{c.path} ({kind})" + (" check_vma" if c.path == "shard_map" and c.check_vma else "")
    if c.placement is not None and c.path == "jit":
        return unsharded, placed, mesh, name
    if c.placement is not None:
        return shard_map(unsharded, mesh, (spec, *replicated), spec, check=c.check_vma), placed, mesh, name
    op = getattr(jaxcnn.sharded, c.inner)
    kwargs = dict(options, axis_name="d", spatial_axis=c.spatial_axis)
    if c.path == "mesh":
        return (lambda x, *weights: op(x, *weights, mesh=mesh, **kwargs)), args, mesh, name
    block = lambda x, *weights: op(x, *weights, **kwargs)
    return shard_map(block, mesh, (spec, *replicated), spec, check=c.check_vma), placed, mesh, name


def unrunnable(c: FuzzCase) -> dict | None:
    """The result of a configuration this process or release cannot run (too few devices: an
    error; a checked shard_map before JAX 0.6: skipped), else None."""
    import jax
    if len(jax.devices()) < c.shards:
        return {"status": "error", "detail": f"{len(jax.devices())} devices; expected {c.shards}"}
    if c.path == "shard_map" and c.check_vma and not hasattr(jax, "shard_map"):
        return {"status": "skipped", "path": "shard_map check_rep",
                "detail": "a checked shard_map needs jax.shard_map's check_vma (JAX 0.6 on): "
                          "0.4.30's check_rep has no replication rules for jaxcnn's primitives"}
    return None


def check(c: FuzzCase) -> dict:
    import contextlib

    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import jaxcnn
    cannot = unrunnable(c)
    if cannot is not None:
        return cannot
    plain = c.replace(op=c.inner)
    kinds, shapes = zip(*array_shapes(plain))
    rng = np.random.default_rng(c.seed)
    args = [jnp.asarray(relayout(plain, rng.standard_normal(s), k, True)) for s, k in zip(shapes, kinds)]
    options = op_options(plain)
    unsharded = checks.bound_op(getattr(jaxcnn, c.inner), plain, options)
    cotangent = lambda out: jnp.asarray(np.random.default_rng(c.seed + 1).standard_normal(out.shape))
    tangents = ([jnp.asarray(np.random.default_rng(c.seed + 2 + i).standard_normal(a.shape))
                 for i, a in enumerate(args)] if c.second_order else None)
    f, placed, mesh, path = sharded(c, unsharded, options, args)
    context = jax.set_mesh(mesh) if "(explicit)" in path else contextlib.nullcontext()
    with context:
        ours = checks.attempt(lambda: checks.run_function(f, placed, cotangent, tangents)[0])
    theirs = checks.attempt(lambda: checks.run_function(unsharded, args, cotangent, tangents)[0])
    expected = None
    if c.op != "sharded_input":
        expected = None if tiles(c) else NOT_TILING
    elif "(explicit)" in path and c.placement == "spatial" and theirs[0] == "ok":
        axis = 1 if c.channels_last else 2
        expected = UNEVEN if theirs[1][0].shape[axis] % c.shards else None
    result = checks.verdict(ours, {"unsharded": theirs}, TOLERANCE, expected_refusal=expected)
    result["path"] = path
    return result
