"""The native kernels in a batch-sharded ``jax.jit`` (``jaxcnn._conv.native.partition``).

On 8 CPU devices (the multi-device run: ``multidevice``, tests/conftest.py), float32 and channels last (what the kernels take): a
``jit`` whose input is sharded along the batch keeps the kernels, one call per shard, and
gathers nothing:

- the compiled program's every kernel call (``custom_call_target="jaxcnn_conv"`` for the
  forward and the input gradient, ``"jaxcnn_weight_grad"``) reads one shard's samples
  (its first operand's leading axis is ``N / devices``), and the program holds no all-gather;
- the value and both gradients equal the one-device program's at float32's tolerance: the
  weight gradient is the sum of the shards' partial sums (a missing ``psum`` gives ``1/d`` of
  it, a doubled one ``d`` times it);
- a model's training step (``fashion-cnn``, channels last) keeps its kernels and equals the
  one-device step;
- where the kernels cannot be split (the input sharded along a spatial or the channel axis, a
  batch that does not divide over the devices) the partitioner gathers what they need and the
  result is still the one-device one.

Skipped where the kernels cannot be built or the release has no custom partitioning with
Shardy's rules (jax 0.4.30 has neither).
"""
from __future__ import annotations

import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import jaxcnn
from jaxcnn import models
from jaxcnn._compat import custom_partitioning, enable_x64
from jaxcnn._conv import native
from helpers import TOL, assert_close, tree_assert_close

F32 = TOL["float32"]

pytestmark = pytest.mark.multidevice   # the eight-device run (tests/conftest.py)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    if not native.available():
        pytest.skip("native kernels unavailable here", allow_module_level=True)
if custom_partitioning() is None:
    pytest.skip(f"jax {jax.__version__} has no custom partitioning with sharding rules",
                allow_module_level=True)

WIDTH = native.vector_width()
KERNEL_CALL = re.compile(r'custom-call\(.*custom_call_target="(jaxcnn_[a-z_]+)".*'
                         r'operand_layout_constraints=\{\w+\[(\d+)')


def kernel_calls(compiled_text: str) -> list[tuple[str, int]]:
    """Every native kernel call of a compiled program: ``(target, leading size of its first
    operand)``, the batch it reads (``x`` or ``dy``)."""
    return [(target, int(lead)) for target, lead in KERNEL_CALL.findall(compiled_text)]


def _mesh(shape: tuple[int, ...], names: tuple[str, ...]) -> Mesh:
    return Mesh(np.array(jax.devices()[:int(np.prod(shape))]).reshape(shape), names)


def _place(mesh: Mesh, spec: P, *arrays):
    return [jax.device_put(a, NamedSharding(mesh, spec)) for a in arrays]


# name: (x shape, kernel shape, conv kwargs, mesh shape, mesh axes, the batch's mesh axes)
CASES = {
    "2d-2-devices": ((8, 10, 9, 16), (3, 3, 16, 2 * WIDTH), dict(padding=1), (2,), ("data",), "data"),
    "2d-4-devices": ((8, 10, 9, 16), (3, 3, 16, 2 * WIDTH), dict(padding=1), (4,), ("data",), "data"),
    "3d-strided-2x2-mesh": ((4, 5, 6, 7, 8), (3, 3, 2, 8, WIDTH), dict(stride=(1, 2, 1), padding=1),
                            (2, 2), ("data", "model"), "data"),
}


def _conv_case(rng, name):
    x_shape, w_shape, kwargs, *_ = CASES[name]
    x = jnp.asarray(rng.standard_normal(x_shape), jnp.float32)
    w = jnp.asarray(rng.standard_normal(w_shape) / np.sqrt(np.prod(w_shape[:-1])), jnp.float32)
    y_shape = jax.eval_shape(lambda a, b: jaxcnn.conv(a, b, channels_last=True, **kwargs), x, w).shape
    probe = jnp.asarray(rng.standard_normal(y_shape), jnp.float32)

    def loss(x, w, probe):
        """``Σ tanh(conv(x, w)) · probe``: ``dy`` depends on ``y``, so it is sharded like it."""
        return jnp.sum(jnp.tanh(jaxcnn.conv(x, w, channels_last=True, **kwargs)) * probe)
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1))), x, w, probe


@pytest.mark.parametrize("name", list(CASES))
def test_conv_and_grads_run_the_kernels_per_batch_shard(rng, name):
    *_, mesh_shape, axes, batch_axis = CASES[name]
    with enable_x64(False):
        step, x, w, probe = _conv_case(rng, name)
        want = step(x, w, probe)
        mesh = _mesh(mesh_shape, axes)
        xs, ps = _place(mesh, P(batch_axis), x, probe)
        (ws,) = _place(mesh, P(), w)
        text = step.lower(xs, ws, ps).compile().as_text()
        calls = kernel_calls(text)
        shard = x.shape[0] // mesh.shape[batch_axis]
        assert {target for target, _ in calls} == {"jaxcnn_conv", "jaxcnn_weight_grad"}, calls
        assert all(batch == shard for _, batch in calls), (shard, calls)
        assert "all-gather" not in text
        got = step(xs, ws, ps)
        for g, r, what in zip(jax.tree.leaves(got), jax.tree.leaves(want), ("loss", "dx", "dw")):
            assert_close(g, r, F32, what)


def _fashion_step(model):
    def loss(params, x, labels):
        logits = model.apply(params, x)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))
    return jax.value_and_grad(loss)


def test_a_training_step_keeps_its_kernels_on_a_batch_sharded_mesh(rng):
    """fashion-cnn, channels last: its 32 → 64 and 64 → 128 convs take the kernels (the 1 → 32
    stem has too few channels), its max pools the pooling kernels, its GroupNorms with their
    ReLUs the GroupNorm kernels; on 4 devices each runs per shard, the loss and every gradient
    equal the one-device step's."""
    with enable_x64(False):
        model = models.build("fashion-cnn", channels_last=True)
        params, _ = model.init(jax.random.key(0), (8, 1, 28, 28))   # (N, C, H, W): the model moves C last
        x = jnp.asarray(rng.standard_normal((8, 1, 28, 28)), jnp.float32)
        labels = jnp.asarray(rng.integers(0, 10, 8), jnp.int32)
        grad = _fashion_step(model)
        want = jax.jit(grad)(params, x, labels)
        mesh = _mesh((4,), ("data",))
        batch, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
        step = jax.jit(grad, in_shardings=(replicated, batch, batch), out_shardings=replicated)
        text = step.lower(params, x, labels).compile().as_text()
        calls = kernel_calls(text)
        assert {target for target, _ in calls} == {"jaxcnn_conv", "jaxcnn_weight_grad", "jaxcnn_max_pool",
                                                   "jaxcnn_max_pool_scatter", "jaxcnn_group_norm",
                                                   "jaxcnn_group_norm_vjp"}, calls
        assert all(batch == 2 for _, batch in calls), calls
        assert "all-gather" not in text
        loss, grads = step(params, x, labels)
        assert_close(loss, want[0], F32, "loss")
        tree_assert_close(grads, want[1], F32, "grads")


@pytest.mark.parametrize("spec", [P(None, "data"), P(None, None, None, "data")], ids=["spatial", "channels"])
def test_what_the_kernels_cannot_split_still_equals_one_device(rng, spec):
    """The input sharded along a spatial axis (a shard's taps read its neighbours' rows) or the
    channel axis (a shard's products are partial sums): the partitioner gathers it for the
    kernels, and the value and gradients are the one-device ones."""
    with enable_x64(False):
        step, x, w, probe = _conv_case(rng, "2d-2-devices")
        want = step(x, w, probe)
        mesh = _mesh((2,), ("data",))
        xs, ps = _place(mesh, spec, x, probe)
        got = step(xs, w, ps)
        for g, r, what in zip(jax.tree.leaves(got), jax.tree.leaves(want), ("loss", "dx", "dw")):
            assert_close(g, r, F32, what)


def test_a_batch_that_does_not_divide_runs_whole(rng):
    """6 of 8 samples on 4 devices: the kernels run on the whole batch, gathered, and the
    result is the one-device one (a shard padded with samples that are not there would not be)."""
    with enable_x64(False):
        step, x, w, probe = _conv_case(rng, "2d-4-devices")
        sliced = jax.jit(lambda x, w, probe: step(x[:6], w, probe[:6]))
        want = sliced(x, w, probe)
        xs, ps = _place(_mesh((4,), ("data",)), P("data"), x, probe)
        got = sliced(xs, w, ps)
        for g, r, what in zip(jax.tree.leaves(got), jax.tree.leaves(want), ("loss", "dx", "dw")):
            assert_close(g, r, F32, what)
