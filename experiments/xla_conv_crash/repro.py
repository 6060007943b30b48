"""Minimal reproducer of XLA's convolution operand-swap abort, ready to report upstream.

    python experiments/xla_conv_crash/repro.py          # prints the StableHLO, then aborts

One ``lax.conv_general_dilated`` (no jaxcnn): a (1, 2, 4, 1) input, lhs-dilated by (2, 3), a
2×2 kernel, padding ((0, 0), (1, 2)). Axis 0 is what XLA's ConvOperandSwapper calls a group
axis (no padding, base dilation 2 = window size, stride 1 = size − 1) although the input is 4
long there; axis 1 makes the kernel (2·2) look larger than the input (1), so the pass swaps
the operands, keeps axis 0's window of size 2 against the new kernel's 4, and the simplifier's
``Check failed: ... Window dimensions do not match RHS shape`` aborts the process (exit 134).
This is the convolution that ``jax.grad`` of a stride (2, 3), padding (1, 0) conv of a
(1, 1, 6, 3) input with a 2×2 kernel emits for the input gradient.
"""
import jax
import jax.numpy as jnp


def convolution(lhs, rhs):
    return jax.lax.conv_general_dilated(lhs, rhs, window_strides=(1, 1),
                                        padding=((0, 0), (1, 2)), lhs_dilation=(2, 3))


if __name__ == "__main__":
    lhs = jnp.ones((1, 2, 4, 1), jnp.float32)
    rhs = jnp.ones((1, 2, 2, 2), jnp.float32)
    print(jax.jit(convolution).lower(lhs, rhs).as_text(), flush=True)
    print(jax.jit(convolution)(lhs, rhs))   # aborts inside XLA's compiler
