"""The native pooling kernels in a batch-sharded ``jax.jit`` (``partition.split_per_sample``).

On 8 CPU devices (``multidevice``), float32 and channels last: a ``jit`` whose input is sharded
along the batch keeps the pooling kernels, one call per shard on its local samples (pooling
reads one sample: no sum over the batch), and gathers nothing; the value and the gradient
equal the one-device program's (the same kernels on the whole batch) at float32's tolerance.
Where the kernels cannot split (the input sharded along a spatial axis, a batch that does not
divide over the devices) the partitioner gathers what they need and the result is the same.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

import jaxcnn
from jaxcnn._compat import enable_x64
from helpers import TOL, assert_close
from test_conv_native_sharded import _mesh, kernel_calls

F32 = TOL["float32"]

pytestmark = pytest.mark.multidevice
# Skipped with test_conv_native_sharded (whose import above skips this module too) where the
# kernels cannot be built or the release has no custom partitioning with Shardy's rules.

# name: (op, channels-last x shape, pooling kwargs, mesh shape, mesh axes, the batch's mesh axis,
#        the kernels the gradient's program calls)
CASES = {
    "max-2d-4-devices": ("max_pool", (8, 8, 6, 16), dict(window=2), (4,), ("data",), "data",
                         {"jaxcnn_max_pool", "jaxcnn_max_pool_scatter"}),
    "max-3d-overlap-2x2-mesh": ("max_pool", (4, 4, 6, 5, 8), dict(window=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
                                (2, 2), ("data", "model"), "data", {"jaxcnn_max_pool", "jaxcnn_max_pool_scatter"}),
    "avg-2d-pad-2-devices": ("avg_pool", (8, 7, 7, 8), dict(window=3, stride=2, padding=1), (2,), ("data",), "data",
                             {"jaxcnn_avg_pool", "jaxcnn_avg_pool_transpose"}),
}


def _case(rng, name):
    op, shape, kwargs, *_ = CASES[name]
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    pool = getattr(jaxcnn, op)
    y_shape = jax.eval_shape(lambda x: pool(x, channels_last=True, **kwargs), x).shape
    probe = jnp.asarray(rng.standard_normal(y_shape), jnp.float32)

    def loss(x, probe):
        """``Σ tanh(pool(x)) · probe``: ``dy`` depends on ``y``, so it is sharded like it."""
        return jnp.sum(jnp.tanh(pool(x, channels_last=True, **kwargs)) * probe)
    return jax.jit(jax.value_and_grad(loss)), x, probe


@pytest.mark.parametrize("name", list(CASES))
def test_pooling_and_its_gradient_run_the_kernels_per_batch_shard(rng, name):
    *_, mesh_shape, axes, batch_axis, kernels = CASES[name]
    with enable_x64(False):
        step, x, probe = _case(rng, name)
        want = step(x, probe)
        mesh = _mesh(mesh_shape, axes)
        xs, ps = (jax.device_put(a, NamedSharding(mesh, P(batch_axis))) for a in (x, probe))
        text = step.lower(xs, ps).compile().as_text()
        calls = kernel_calls(text)
        shard = x.shape[0] // mesh.shape[batch_axis]
        assert {target for target, _ in calls} == kernels, calls
        assert all(batch == shard for _, batch in calls), (shard, calls)
        assert "all-gather" not in text
        got = step(xs, ps)
        assert_close(got[0], want[0], F32, "loss")
        assert_close(got[1], want[1], F32, "dx")


@pytest.mark.parametrize("spec", [P(None, "data"), P("data")], ids=["spatial", "batch-6-of-8"])
def test_what_the_kernels_cannot_split_still_equals_one_device(rng, spec):
    """The input sharded along a spatial axis (a window reads its neighbours' rows), or 6 of
    8 samples on 4 devices (sliced inside the program): gathered for the kernels, and the
    one-device value and gradient."""
    with enable_x64(False):
        step, x, probe = _case(rng, "max-2d-4-devices")
        if spec == P("data"):
            step = jax.jit(lambda x, probe, step=step: step(x[:6], probe[:6]))
        want = step(x, probe)
        mesh = _mesh((4,) if spec == P("data") else (2,), ("data",))
        xs, ps = (jax.device_put(a, NamedSharding(mesh, spec)) for a in (x, probe))
        got = step(xs, ps)
        assert_close(got[0], want[0], F32, "loss")
        assert_close(got[1], want[1], F32, "dx")
