"""The native GroupNorm kernels in a batch-sharded ``jax.jit`` (``partition.split_samples``).

On 8 CPU devices (``multidevice``), float32 and channels last: a ``jit`` whose input is sharded
along the batch keeps the kernels, one call per shard on its local samples (a sample's
statistics are its own; the VJP's per-sample channel sums leave the call batch-leading and XLA
sums them over the batch, across the devices), and gathers nothing; the value and the three
gradients equal the one-device program's at float32's tolerance (a scale or bias gradient that
missed the other shards' sums would be off by O(1)). A batch that does not divide over the
devices is gathered for the kernels, with the same result.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxcnn._compat import enable_x64
from jaxcnn.norm import group_norm_relu
import jaxcnn
from helpers import TOL, tree_assert_close
from test_conv_native_sharded import _mesh, kernel_calls

F32 = TOL["float32"]

pytestmark = pytest.mark.multidevice
# Skipped with test_conv_native_sharded (whose import above skips this module too) where the
# kernels cannot be built or the release has no custom partitioning with Shardy's rules.

CASES = {  # name: (op, channels-last x shape, groups, mesh shape, mesh axes, the batch's mesh axis)
    "2d-4-devices": (jaxcnn.group_norm, (8, 6, 5, 16), 4, (4,), ("data",), "data"),
    "relu-3d-2x2-mesh": (group_norm_relu, (4, 3, 4, 5, 8), 2, (2, 2), ("data", "model"), "data"),
}


def _case(rng, name):
    op, shape, groups, *_ = CASES[name]
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    scale = jnp.asarray(1 + 0.5 * rng.standard_normal(shape[-1]), jnp.float32)
    bias = jnp.asarray(0.5 * rng.standard_normal(shape[-1]), jnp.float32)
    probe = jnp.asarray(rng.standard_normal(shape), jnp.float32)

    def loss(x, scale, bias, probe):
        return jnp.sum(jnp.tanh(op(x, groups, scale, bias, channels_last=True)) * probe)
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2))), (x, scale, bias, probe)


@pytest.mark.parametrize("name", list(CASES))
def test_group_norm_and_its_gradient_run_the_kernels_per_batch_shard(rng, name):
    *_, mesh_shape, axes, batch_axis = CASES[name]
    with enable_x64(False):
        step, (x, scale, bias, probe) = _case(rng, name)
        want = step(x, scale, bias, probe)
        mesh = _mesh(mesh_shape, axes)
        xs, ps = (jax.device_put(a, NamedSharding(mesh, P(batch_axis))) for a in (x, probe))
        text = step.lower(xs, scale, bias, ps).compile().as_text()
        calls = kernel_calls(text)
        shard = x.shape[0] // mesh.shape[batch_axis]
        assert {target for target, _ in calls} == {"jaxcnn_group_norm", "jaxcnn_group_norm_vjp"}, calls
        assert all(batch == shard for _, batch in calls), (shard, calls)
        assert "all-gather" not in text
        tree_assert_close(step(xs, scale, bias, ps), want, F32, name)


def test_a_batch_that_does_not_divide_still_equals_one_device(rng):
    with enable_x64(False):
        step, (x, scale, bias, probe) = _case(rng, "2d-4-devices")
        step = jax.jit(lambda x, s, b, probe, step=step: step(x[:6], s, b, probe[:6]))
        want = step(x, scale, bias, probe)
        mesh = _mesh((4,), ("data",))
        xs, ps = (jax.device_put(a, NamedSharding(mesh, P("data"))) for a in (x, probe))
        tree_assert_close(step(xs, scale, bias, ps), want, F32, "6 of 8 samples")
