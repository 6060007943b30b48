r"""Layers as pure ``(init, apply)`` pairs on plain pytrees, composed with ``serial``.

A ``Layer`` holds two pure functions (stax's design, with the order of ``init``'s results
as the rest of jaxcnn reads it):

- ``init(key, input_shape) -> (params, output_shape)``: ``input_shape`` includes the batch
  axis, ``(N, C, *S)`` (or ``(N, *S, C)`` with ``channels_last``); ``params`` is a dict of
  arrays (float32), a tuple of children's params, or ``{}``.
- ``apply(params, x, *, train=False, key=None) -> y``: ``key`` feeds ``Dropout`` when
  ``train`` is true. The compute dtype is ``x``'s: parameters are cast to it, so float32
  master weights run in bfloat16 when ``x`` is bfloat16 (gradients flow back in float32).

No layer keeps state: normalisation is ``GroupNorm`` (Wu & He, 2018), which uses each
example's own statistics, so ``apply`` is the same function in training and evaluation.

Output shapes come from the ops' own shape rules: ``_shapes.resolve_padding`` and
``_shapes.conv_output_shape`` (as ``conv.output_shape``) for convolutions, ``jax.eval_shape``
of the op for pooling and transposed convolution; ``tests/test_nn.py`` checks that they equal
``apply``'s shapes.

Initialisation follows PyTorch: ``kaiming_uniform_(a=√5)`` for weights, which is
``U(−1/√fan_in, 1/√fan_in)``, and the same bound for biases (``torch.nn.Conv*d.reset_parameters``).
"""
from __future__ import annotations

from jaxcnn.nn.layers import (Shape, Layer, Row, count_params, init_shapes, subkeys, Conv, Conv1d,
                              Conv2d, Conv3d,
                              ConvTranspose, MaxPool, AvgPool, GlobalAvgPool, Dense, Flatten, Mean,
                              elementwise, ReLU, GELU, Tanh, Sigmoid, Dropout, GroupNorm)
from jaxcnn.nn.combinators import (serial, Residual, PerFrame, summary, format_summary)

__all__ = ["Shape", "Layer", "Row", "count_params", "init_shapes", "subkeys", "Conv", "Conv1d",
           "Conv2d", "Conv3d",
           "ConvTranspose", "MaxPool", "AvgPool", "GlobalAvgPool", "Dense", "Flatten", "Mean",
           "elementwise", "ReLU", "GELU", "Tanh", "Sigmoid", "Dropout", "GroupNorm", "serial",
           "Residual", "PerFrame", "summary", "format_summary"]
