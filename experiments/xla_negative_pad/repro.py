"""XLA's CPU float32 convolution with a negative low pad and a high pad of 1: wrong values.

Plain JAX, no jaxcnn. The same convolution in float32 and float64, and the float32 one with
the negative low pad taken as a slice of the input (what jaxcnn's lax pieces emit). Run:
``python experiments/xla_negative_pad/repro.py``; writes results.md beside itself.
"""
import itertools
import os

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)


def conv(x, w, pads, dn):
    return jax.lax.conv_general_dilated(x, w, (1,) * len(pads), pads, dimension_numbers=dn)


def row(n, pad, channels_last, c, k=2, size=6):
    rng = np.random.default_rng(0)
    sp = "DHW"[3 - n:]
    x = rng.standard_normal((2, *(size,) * n, c))
    w = rng.standard_normal((*(k,) * n, c, 8))
    dn = ("N" + sp + "C", sp + "IO", "N" + sp + "C")
    if not channels_last:
        x, w = np.moveaxis(x, -1, 1), np.transpose(w, (n + 1, n, *range(n)))
        dn = ("NC" + sp, "OI" + sp, "NC" + sp)
    pads = [pad] * n
    want = conv(jnp.asarray(x), jnp.asarray(w), pads, dn)
    got = conv(jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32), pads, dn)
    lo = -pad[0]
    spatial = [dn[0].index(a) for a in sp]
    index = tuple(slice(lo, None) if a in spatial else slice(None) for a in range(x.ndim))
    sliced = conv(jnp.asarray(x[index], jnp.float32), jnp.asarray(w, jnp.float32), [(0, pad[1])] * n, dn)
    scale = float(jnp.abs(want).max())
    return float(jnp.abs(got - want).max()) / scale, float(jnp.abs(sliced - want).max()) / scale


lines = [f"jax {jax.__version__}, {jax.devices()[0].device_kind}; relative error of float32 against float64",
         "", "| n | layout | C | pad (lo, hi) | as padded | sliced first |", "|---|---|---|---|---|---|"]
for n, cl, c, pad in itertools.product((1, 2), (True, False), (4, 16), ((-1, 1), (-2, 1), (-1, 0), (-1, 2))):
    padded, sliced = row(n, pad, cl, c)
    lines.append(f"| {n} | {'channels last' if cl else 'channels first'} | {c} | {pad} | {padded:.3g} | {sliced:.3g} |")
text = "\n".join(lines) + "\n"
print(text)
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "results.md"), "w") as f:
    f.write(text)
