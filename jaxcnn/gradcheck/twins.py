"""The default oracle of ``gradcheck``: jaxcnn's own ops, found by identity, and their twins.

``TWINS`` maps each public op (the very function object ``jaxcnn`` exports) to its twin in
``jaxcnn.reference``: the same signature, built from plain ``lax``/``jnp`` and differentiated
by JAX autodiff. A function is looked up by what it is, never by its name: a user's own
``def conv(x, w)`` (NHWC, say) or ``def group_norm(x, scale)`` has no twin, and is checked
against finite differences and its own JVP, whatever it is called.
"""
from __future__ import annotations

import functools
from typing import Callable

from jaxcnn import lax as _lax
from jaxcnn import reference
from jaxcnn.conv import conv, conv1d, conv2d, conv3d, conv_input_grad, conv_weight_grad
from jaxcnn.norm import group_norm
from jaxcnn.pool import avg_pool, global_avg_pool, max_pool
from jaxcnn.transpose import conv_transpose, convolve

# conv1d/2d/3d are conv with a rank check: reference.conv takes the same arguments.
TWINS: dict[Callable, Callable] = {
    conv: reference.conv, conv1d: reference.conv, conv2d: reference.conv, conv3d: reference.conv,
    conv_input_grad: reference.conv_input_grad, conv_weight_grad: reference.conv_weight_grad,
    convolve: reference.convolve, conv_transpose: reference.conv_transpose,
    max_pool: reference.max_pool, avg_pool: reference.avg_pool,
    global_avg_pool: reference.global_avg_pool, group_norm: reference.group_norm,
    _lax.conv_general_dilated: reference.lax_conv_general_dilated,
    _lax.conv_transpose: reference.lax_conv_transpose,
}


def twin(f: Callable) -> Callable | None:
    """``f``'s twin in ``jaxcnn.reference`` if ``f`` is one of jaxcnn's ops (a
    ``functools.partial`` of one: the same partial of its twin), else None."""
    if isinstance(f, functools.partial):
        found = twin(f.func)
        return None if found is None else functools.partial(found, *f.args, **f.keywords)
    try:
        return TWINS.get(f)
    except TypeError:   # an unhashable callable is none of jaxcnn's ops
        return None
