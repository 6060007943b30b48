"""jaxcnn.bench.train_step: jaxcnn's contenders of ``jaxcnn bench --train`` compute the same
loss and the same gradients on the same parameters and batch (float64, no dropout): jaxcnn's
impls and the plain-lax twin (``jaxcnn.reference`` ops under JAX autodiff); the profile of a
step. PyTorch's and Flax's contenders: ``test_bench_contenders``. No timing is asserted (the
machine is shared)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

import jaxcnn
from jaxcnn.bench import profile, train_step
from tests.helpers import TOL, assert_close

IMPLS = {"fashion-cnn": ("lax", "manual", "jax")}   # others: lax and the twin (compile time)


def _loss_and_grads(name, impl, x, y):
    loss, params = train_step.jax_loss(name, impl)
    params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), params)
    f = jax.jit(jax.value_and_grad(lambda p: loss(p, x, y, None, train=False)))
    with train_step.plain_lax_ops() if impl == "jax" else _nothing():
        return f(params), params


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.x64
@pytest.mark.parametrize("name", [pytest.param(name, marks=[pytest.mark.slow] * (i > 0))   # one in the default tier
                                  for i, name in enumerate(train_step.TRAIN_MODELS)])
def test_contenders_compute_the_same_step(name):
    x, y = train_step.batch_data(name, 2)
    x = jnp.asarray(x, jnp.float64)
    results = {impl: _loss_and_grads(name, impl, x, jnp.asarray(y))
               for impl in IMPLS.get(name, ("lax", "jax"))}
    (want_loss, want_grads), _ = results.pop("jax")
    for impl, ((loss, grads), _) in results.items():
        assert_close(loss, want_loss, TOL["float64"], f"{name} {impl} loss")
        for path, g in jax.tree_util.tree_leaves_with_path(grads):
            w = want_grads
            for key in path:
                w = w[key.idx] if hasattr(key, "idx") else w[key.key]
            assert_close(g, w, TOL["float64"], f"{name} {impl} grad {jax.tree_util.keystr(path)}")


def test_plain_lax_ops_restores_jaxcnn():
    import jaxcnn
    from jaxcnn import reference
    before = jaxcnn.conv
    with train_step.plain_lax_ops():
        assert jaxcnn.conv is reference.conv and jaxcnn.max_pool is reference.max_pool
    assert jaxcnn.conv is before


def test_profile_categories_from_stack_frames():
    """A step of fashion-cnn (batch 2): its ops are attributed to the convolutions (forward
    and backward), the normalisation and the optimizer, and the trace adds up to a time."""
    x, y = train_step.batch_data("fashion-cnn", 2)
    compiled, args = train_step.jax_step("fashion-cnn", "lax", x, y)["compiled"]["step"]
    if "stack_frame_id=" not in compiled.as_text():
        pytest.skip("this XLA's program text carries no stack frames (jax 0.4.30): no categories")
    kinds = profile.op_categories(compiled.as_text())
    assert {"conv forward", "conv backward", "normalisation", "optimizer"} <= set(kinds.values())
    ms = profile.step_profile(compiled, args, 1)
    assert ms.get("conv forward", 0) > 0 and sum(ms.values()) > 0


def test_profile_categorises_loop_bodies():
    """A loop's trace event does not include its body's ops: those are categorised too. The
    manual gradient of a 3×3×3 conv runs its taps as loops (27 unrolled taps would not fit the
    memory budget); ops of their bodies (printed before the entry computation) are attributed
    to the conv's forward and backward."""
    x, w = jnp.ones((2, 4, 6, 6, 4)), jnp.full((3, 3, 3, 4, 8), 0.1)
    conv = lambda x, w: jaxcnn.conv(x, w, padding=1, channels_last=True, impl="manual")
    grad = jax.jit(jax.grad(lambda x, w: jnp.sum(conv(x, w) ** 2), argnums=(0, 1)))
    text = grad.lower(x, w).compile().as_text()
    if "stack_frame_id=" not in text:
        pytest.skip("this XLA's program text carries no stack frames (jax 0.4.30): no categories")
    assert " while(" in text
    entry = text.index("\nENTRY")
    body = {kind for name, kind in profile.op_categories(text).items() if text.index(f"%{name} = ") < entry}
    assert {"conv forward", "conv backward"} <= body


@pytest.mark.slow
def test_micro_batched_contenders_compute_the_same_loss():
    """The ``×k`` jaxcnn contender: the step over 2 slices of the batch has the one-slice loss
    (``train.micro_batched``), float32; PyTorch's own: ``test_bench_contenders``."""
    name = "mnist1d-resnet"
    x, y = train_step.batch_data(name, 4)

    def loss(micro_batches):
        compiled, args = train_step.jax_step(name, "lax", x, y, micro_batches=micro_batches)["compiled"]["step"]
        return compiled(*args)[2]
    assert_close(loss(2), loss(1), TOL["float32"], "jaxcnn ×2")
