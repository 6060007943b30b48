"""``jaxcnn.fuzz``'s newer families on fixed cases: float32 and the native kernels, the
``jax.lax`` drop-ins, the sharded runs, float32 batch-sharded runs through the kernels per
shard and float32 pooling through the native pooling kernels (their random draws are in
tests/test_fuzz.py's sample).
"""
from __future__ import annotations

import importlib.util
import os

import jax
import numpy as np
import pytest

from fuzz_helpers import assert_named_cases, named, run_batch
from jaxcnn.fuzz import checks, float32, sharded_float32, sharding, worker
from jaxcnn.fuzz.configs import FuzzCase

CHECKED_SHARD_MAP = hasattr(jax, "shard_map")   # check_vma: JAX 0.6 on
HAS_TORCH = importlib.util.find_spec("torch") is not None


# ----------------------------------------------------------------------------- float32

def test_float32_error_is_relative_to_the_magnitude_of_each_sum():
    """|a − b| / Σ|terms| element by element: a cancelling sum (b = 1e-3 of Σ|terms| = 10)
    keeps a float32-sized error small, a wrong term (0.5 off) is flagged, an element with
    nothing summed must be exactly zero."""
    b, magnitude = np.array([1e-3, 4.0, 0.0]), np.array([10.0, 4.0, 0.0])
    assert float32.magnitude_error(b + np.array([1e-6, 0.0, 0.0]), b, magnitude) == pytest.approx(1e-7)
    assert float32.magnitude_error(b + np.array([0.0, 0.5, 0.0]), b, magnitude) > float32.TOLERANCE
    assert float32.magnitude_error(b + np.array([0.0, 0.0, 1e-30]), b, magnitude) == np.inf
    assert float32.magnitude_error(np.array([np.nan, 4.0, 0.0]), b, magnitude) == np.inf


def _float32(**changes) -> dict:
    base = dict(op="conv_float32", n=2, impl="lax", channels_last=True, batch=2, groups=1,
                channels=16, out_channels=32, kernel=[3, 3], stride=[1, 1], dilation=[1, 1],
                padding="SAME", bias=True, padding_mode="zeros", sizes=[7, 6], seed=3,
                second_order=False)
    return {**base, **changes}


FLOAT32 = {"native": _float32(), "channels first": _float32(channels_last=False),
           "few channels": _float32(channels=3), "3d strided": _float32(
               n=3, kernel=[2, 3, 1], stride=[2, 1, 1], dilation=[1, 1, 2], sizes=[5, 4, 3],
               padding=[[1, 0], [1, 1], [0, 0]])}


def test_float32_conv_takes_the_native_kernels_where_they_apply_and_agrees_with_torch(batch):
    """The path is read from the lowered program: native where any of ``_conv.native``'s
    kernels applies (on a jax with ``jax.ffi`` and a compiler; with 3 input channels, the
    weight gradient's table-free kernel: ``native.MIN_CHANNELS`` bounds the forward and the input
    gradient only), XLA for channels first."""
    pytest.importorskip("torch")
    from jaxcnn._conv import native
    results = batch["float32"]
    assert [r["config"]["name"] for r in results] == list(FLOAT32)
    paths = {r["config"]["name"]: r["path"] for r in results}
    assert all(r["status"] == "ok" and set(r["errors"]) == {"torch:y", "torch:d0", "torch:d1", "torch:d2"}
               for r in results), results
    path = "native" if native.available() else "xla"
    assert paths == {"native": path, "channels first": "xla", "few channels": path, "3d strided": path}


# ----------------------------------------------------------------------------- the drop-ins

def _drop_in(**changes) -> dict:
    base = dict(op="lax.conv_general_dilated", n=2, impl="lax", seed=5, second_order=True,
                batch=2, channels=4, out_channels=6, kernel=[2, 3], sizes=[5, 6],
                rhs_dilation=[1, 2], dimension_numbers=["NHWC", "HWIO", "NHWC"], precision="highest",
                dtype="float64", groups=2, batch_groups=1, window_strides=[2, 1],
                lhs_dilation=None, preferred_element_type=None, padding=[[1, -1], [0, 2]])
    return {**base, **changes}


DROP_IN = {   # name: (configuration, status, what the result must hold)
    "grouped, cropped, rhs-dilated, order 2": (_drop_in(), "ok", ["jax.lax:d3"]),
    "batch groups, lhs dilation, permuted layouts": (
        _drop_in(groups=1, batch_groups=2, lhs_dilation=[2, 1], dimension_numbers=["HCWN", "IHOW", "WNCH"],
                 second_order=False, impl="manual"), "ok", ["jax.lax:d1"]),
    "string padding with lhs dilation": (_drop_in(padding="SAME", lhs_dilation=[2, 2]), "refused", ["padding:"]),
    "both group counts": (_drop_in(batch_groups=2, out_channels=4), "refused", ["batch_group_count:"]),
    "conv_transpose, transposed kernel": (
        dict(_drop_in(op="lax.conv_transpose", groups=1, strides=[2, 3], transpose_kernel=True,
                      out_channels=3, padding="VALID", use_consistent_padding=False)), "ok", ["jax.lax:d1"]),
}


def test_drop_ins_against_jax_lax_and_their_refusals(batch):
    """Values, both VJPs and the second order against jax.lax's autodiff; what lax refuses,
    jaxcnn.lax refuses too, naming the argument."""
    assert_named_cases(DROP_IN, batch["drop_in"])


@pytest.mark.x64   # checks.check compares in float64 (and turns x64 on itself, as a worker does)
def test_drop_in_conv_transpose_refuses_lower_case_padding_as_lax_does():
    """Found by the fuzzer: jaxcnn.lax.conv_transpose took padding='same' (lower case) with a
    stride, which jax.lax.conv_transpose refuses; at stride 1 both take it."""
    config = dict(_drop_in(op="lax.conv_transpose", groups=1, strides=[2, 1], transpose_kernel=False,
                           out_channels=3, padding="same", use_consistent_padding=False,
                           dimension_numbers=None, second_order=False))
    assert checks.check(config)["status"] == "refused"
    assert checks.check({**config, "strides": [1, 1]})["status"] == "ok"


# ----------------------------------------------------------------------------- sharding

def test_sharded_tiling_by_hand():
    """L = 12 in 2 shards of 6: kernel 3 tiles with lo + hi = 2 (SAME) or 1 at stride 2;
    padding (0, 0) gives 10 outputs, not 12; a halo of 4 does not fit a shard of 3."""
    conv = dict(op="sharded.conv", inner="conv", n=1, shards=2, spatial_axis=0, kernel=[3],
                stride=[1], dilation=[1], sizes=[12], padding="SAME", padding_mode="zeros", batch=1)
    tiles = lambda config: sharding.tiles(FuzzCase.from_dict(config))
    assert tiles(conv)
    assert tiles({**conv, "stride": [2], "padding": [[1, 0]]})
    assert not tiles({**conv, "padding": [[0, 0]]})
    assert not tiles({**conv, "kernel": [5], "dilation": [2], "sizes": [6], "padding": "SAME"})
    pool = dict(op="sharded.max_pool", inner="max_pool", n=1, shards=4, spatial_axis=0, window=[3],
                stride=[1], dilation=[1], sizes=[12], padding=[1], ceil_mode=False)
    assert tiles(pool) and not tiles({**pool, "padding": [0]})


def test_worker_forces_cpu_devices_for_the_sharded_configurations(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_foo=1")
    worker.force_devices([{"op": "conv"}])
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_foo=1"
    worker.force_devices([{"op": "conv"}, {"op": "sharded.conv", "devices": 8}])
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_foo=1 --xla_force_host_platform_device_count=8"


def _sharded(op: str, **changes) -> dict:
    inner = op.split(".")[-1]
    base = dict(op=op, inner=inner, n=2, channels_last=False, batch=2, channels=3, seed=9,
                second_order=False, sizes=[8, 5], stride=[1, 1], dilation=[1, 1], devices=8,
                shards=4, spatial_axis=0, path="shard_map", mesh_kind="auto", check_vma=True)
    if inner == "conv":
        base.update(impl="manual", groups=1, out_channels=2, kernel=[3, 2], padding="SAME",
                    padding_mode="circular", bias=True)
    else:
        base.update(window=[3, 2], padding=[1, 0], ceil_mode=False, count_include_pad=False)
    return {**base, **changes}


SHARDED = {   # name: (configuration, status, path)
    "conv, checked shard_map, manual, circular": (_sharded("sharded.conv"), "ok", "shard_map (auto) check_vma"),
    "max_pool on mesh=, channels last, order 2": (
        _sharded("sharded.max_pool", path="mesh", channels_last=True, second_order=True), "ok", "mesh (auto)"),
    "avg_pool, a split that does not tile": (
        _sharded("sharded.avg_pool", padding=[0, 0]), "documented", "shard_map (auto) check_vma"),
    "conv_transpose, batch-sharded input, checked shard_map": (
        dict(_sharded("sharded_input", inner="conv_transpose", impl="lax", groups=1, out_channels=2,
                      kernel=[3, 2], padding=1, padding_mode="zeros", bias=True, output_padding=[0, 0],
                      batch=4), placement="batch"), "ok", "shard_map (auto) check_vma"),
    "max_pool, spatially sharded input under jit": (
        dict(_sharded("sharded_input", inner="max_pool", window=[2, 2], padding=[0, 0], path="jit"),
             placement="spatial"), "ok", "jit (auto)"),
}


def test_sharded_runs_against_the_unsharded_op(batch):
    """Values and every VJP (and order 2) of the sharded runs equal the unsharded op's; a
    split that does not tile is refused by jaxcnn.sharded alone, naming the padding."""
    results = batch["sharded"]
    assert [r["config"]["name"] for r in results] == list(SHARDED)
    for result in results:
        name = result["config"]["name"]
        _, status, path = SHARDED[name]
        if "check_vma" in path and not CHECKED_SHARD_MAP:
            status, path = "skipped", "shard_map check_rep"
        assert (result["status"], result["path"]) == (status, path), (name, result)
        if status == "ok":
            assert "unsharded:d0" in result["errors"], (name, result["errors"])
        elif status == "documented":
            assert result["refusal"].startswith("padding:"), (name, result)


# ----------------------------------------------------------------------------- float32, batch-sharded

def _sharded_float32(**changes) -> dict:
    base = dict(_float32(batch=4), op="sharded_float32", inner="conv", devices=8, shards=2,
                placement="batch", path="jit", mesh_kind="auto", check_vma=True)
    return {**base, **changes}


SHARDED_FLOAT32 = {   # name: (configuration, how it goes in, whether it can take the kernels)
    "jit, auto mesh": (_sharded_float32(), "jit (auto)", True),
    "jit, explicit mesh, 3d strided, 4 shards": (_sharded_float32(
        n=3, kernel=[2, 3, 1], stride=[2, 1, 1], dilation=[1, 1, 2], sizes=[5, 4, 3],
        padding=[[1, 0], [1, 1], [0, 0]], batch=8, shards=4, mesh_kind="explicit"), "jit (explicit)", True),
    "checked shard_map": (_sharded_float32(path="shard_map"), "shard_map (auto) check_vma", True),
    "jit, channels first": (_sharded_float32(channels_last=False), "jit (auto)", False),
}


def test_float32_batch_sharded_runs_take_the_kernels_per_shard_and_agree(batch):
    """Batch-sharded float32 convs under jit (Auto and Explicit meshes) and in a checked
    shard_map: value and both gradients against PyTorch and the unsharded op at float32's
    tolerance; where the kernels apply, the compiled program calls them and every call reads
    one shard's samples (``N / shards``; read from the compiled program)."""
    pytest.importorskip("torch")
    from jaxcnn._compat import axis_types, custom_partitioning
    from jaxcnn._conv import native
    results = batch["sharded_float32"]
    assert [r["config"]["name"] for r in results] == list(SHARDED_FLOAT32)
    for result in results:
        name = result["config"]["name"]
        config, way_in, kernels = SHARDED_FLOAT32[name]
        if not axis_types():     # a release without explicit meshes (0.4.30) runs an Auto one
            way_in = way_in.replace("(explicit)", "(auto)")
        if "check_vma" in way_in and not CHECKED_SHARD_MAP:   # as the sharded runs above
            assert (result["status"], result["path"]) == ("skipped", "shard_map check_rep"), (name, result)
            continue
        kernels = kernels and native.available() and (
            way_in.startswith("shard_map") or custom_partitioning() is not None)
        assert (result["status"], result["path"]) == ("ok", f"{way_in} {'native' if kernels else 'xla'}"), (name, result)
        assert {f"{side}:{label}" for side in ("torch", "unsharded") for label in ("y", "d0", "d1", "d2")
                } == set(result["errors"]), (name, result["errors"])
        shard = config["batch"] // config["shards"]
        assert result["kernel_batches"] == ([shard] * len(result["kernel_batches"]) if kernels else []), name
        assert len(result["kernel_batches"]) >= kernels, name


def test_kernel_batches_reads_each_kernel_calls_samples():
    """From a compiled program's text (the form ``Compiled.as_text`` writes): the leading size of
    each kernel call's first operand; other custom calls are not kernels."""
    text = ('%ffi_call.1 = f32[2,5,32]{2,1,0} custom-call(%param, %param.1), custom_call_target='
            '"jaxcnn_conv", operand_layout_constraints={f32[2,6,16]{2,1,0}, f32[2,16,32]{2,1,0}}\n'
            '%ffi_call.0 = f32[2,16,32]{2,1,0} custom-call(%a, %b), custom_call_target='
            '"jaxcnn_weight_grad", operand_layout_constraints={f32[4,6,16]{2,1,0}, f32[4,5,32]{2,1,0}}\n'
            '%other = f32[8]{0} custom-call(%c), custom_call_target="Sharding", '
            'operand_layout_constraints={f32[8]{0}}')
    assert sharded_float32.kernel_batches(text) == [2, 4]


@pytest.mark.x64          # the check turns x64 on, as a worker does
@pytest.mark.multidevice
def test_a_constant_cotangent_would_gather_the_input_gradients_kernel(monkeypatch):
    """Why the sharded float32 check passes the cotangent as an argument split as ``y``: a
    constant is whole on every device, and the input gradient's kernel then reads the whole
    batch (``kernel_batches`` sees it); split, every call reads one shard."""
    from jaxcnn._compat import custom_partitioning
    from jaxcnn._conv import native
    if not native.available() or custom_partitioning() is None:
        pytest.skip("no native kernels, or no custom partitioning, here")
    c = FuzzCase.from_dict(_sharded_float32(bias=False))
    result = sharded_float32.check(c)
    assert result["status"] == "ok" and set(result["kernel_batches"]) == {2}, result
    real = checks.run_function
    monkeypatch.setattr(checks, "run_function",
                        lambda *a, **k: real(*a, **{**k, "cotangent_argument": False}))
    gathered = sharded_float32.check(c)
    assert gathered["status"] == "ok" and 4 in gathered["kernel_batches"], gathered
    assert gathered["path"] == "jit (auto) native unsplit"


# ----------------------------------------------------------------------------- float32 pooling

def _pool_float32(**changes) -> dict:
    base = dict(op="pool_float32", inner="max_pool", n=2, channels_last=True, batch=2, channels=16,
                window=[3, 2], stride=[1, 2], padding=[1, 1], dilation=[1, 2], ceil_mode=True,
                ties=True, seed=5, second_order=False, sizes=[7, 8])
    return {**base, **changes}


POOL_FLOAT32 = {   # name: (configuration, path where the kernels exist, compared with)
    "native max, tied maxima": (_pool_float32(), "native", ("torch", "xla")),
    "native avg 3d, padding not counted": (_pool_float32(
        inner="avg_pool", n=3, channels=8, window=[2, 3, 2], stride=[2, 1, 1], padding=[1, 1, 0],
        dilation=[1, 1, 1], count_include_pad=False, ties=False, sizes=[5, 4, 3]), "native",
        ("torch", "reference", "xla")),
    "channels first falls back": (_pool_float32(channels_last=False, ties=False), "xla",
                                  ("torch", "reference", "xla")),
    "few channels fall back": (_pool_float32(inner="avg_pool", channels=3, count_include_pad=True),
                               "xla", ("torch", "reference", "xla")),
}


def test_float32_pooling_takes_the_native_kernels_where_they_apply_and_agrees(batch):
    """Max (tied maxima: PyTorch's first tap) and avg pools in float32, value and input gradient
    against PyTorch, the float64 reference (not on ties: JAX's autodiff picks its own maximum)
    and the float32 XLA form; the path read from the lowered program: the kernels for channels
    last with ≥ 8 channels (where they are built), XLA's forms for channels first or 3 channels."""
    pytest.importorskip("torch")
    from jaxcnn._conv import native
    results = batch["pool_float32"]
    assert [r["config"]["name"] for r in results] == list(POOL_FLOAT32)
    for result in results:
        _, path, sides = POOL_FLOAT32[result["config"]["name"]]
        assert result["status"] == "ok", result
        assert set(result["errors"]) == {f"{side}:{a}" for side in sides for a in ("y", "d0")}, result
        assert result["path"] == (path if native.available() else "xla"), result


# ----------------------------------------------------------------------------- one batch

def _batch_groups() -> dict[str, list[dict]]:
    """Every configuration the tests above run through ``command.TARGET``, by test (the ones
    that compare with PyTorch only where it is installed)."""
    groups = {"drop_in": named(DROP_IN), "sharded": named(SHARDED)}
    if HAS_TORCH:
        groups.update(float32=[{**c, "name": k} for k, c in FLOAT32.items()],
                      sharded_float32=named(SHARDED_FLOAT32), pool_float32=named(POOL_FLOAT32))
    return groups


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> dict[str, list[dict]]:
    """The results of ``_batch_groups``, by test (``fuzz_helpers.run_batch``)."""
    return run_batch(tmp_path_factory, "fuzz-families-batch", _batch_groups())
