"""A jaxcnn parameter tree walked layer by layer, for ``jaxcnn bench --train``'s other
frameworks (``torch_models``, ``flax_models``): they copy its weights in that order and give
their gradients back in it. Needs neither torch nor flax."""
from __future__ import annotations

import math
from typing import Any, Iterator, Sequence

import jax
import numpy as np


def layers(params: Any) -> Iterator[dict]:
    """The parameterised layers of a jaxcnn parameter tree in order (a residual: its block,
    then its shortcut), each its dict: ``{"w"[, "b"]}`` or GroupNorm's ``{"scale", "bias"}``."""
    if isinstance(params, (tuple, list)):
        for p in params:
            yield from layers(p)
    elif isinstance(params, dict) and "block" in params:
        yield from layers(params["block"])
        yield from layers(params["shortcut"])
    elif params:
        yield params


def paired(params: Any, theirs: Sequence[Any]) -> Iterator[tuple[dict, Any, str]]:
    """jaxcnn's parameterised layers beside another framework's (``theirs``, in the same
    order), each pair with its name for an error message: ``(ours, theirs, "layer i (Type)")``.
    Raises a ``ValueError`` naming ``params`` where the counts differ."""
    ours = list(layers(params))
    if len(ours) != len(theirs):
        raise ValueError(f"params: expected {len(theirs)} parameterised layers; got {len(ours)}")
    for i, (p, m) in enumerate(zip(ours, theirs)):
        yield p, m, f"layer {i} ({type(m).__name__})"


def check_bias(p: dict, has_bias: bool, where: str) -> None:
    """Raise the ``ValueError`` naming ``params`` unless ``p`` has a bias ``b`` exactly where
    the other framework's layer has one."""
    if has_bias != ("b" in p):
        raise ValueError(f"params: expected {where} {'with' if has_bias else 'without'} a bias")


def in_layer_order(tree: Any) -> list[np.ndarray]:
    """A parameter (or gradient) tree as a list: per layer, the weight (``w`` or ``scale``),
    then the bias (``b`` or ``bias``) where it has one. Every leaf once."""
    out = []
    for p in layers(tree):
        out.append(np.asarray(p["scale"] if "scale" in p else p["w"]))
        if "bias" in p or "b" in p:
            out.append(np.asarray(p["bias"] if "bias" in p else p["b"]))
    return out


def count(params: Any) -> int:
    """The number of parameters (every leaf's size)."""
    return sum(math.prod(a.shape) for a in jax.tree_util.tree_leaves(params))
