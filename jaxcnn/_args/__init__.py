"""Argument normalisation and validation: every bad-input message of jaxcnn lives here.

Each public op calls one ``normalize_*`` function at its front door. It turns user arguments
(ints or tuples, padding strings, case-insensitive modes) into a frozen, hashable spec in
canonical form, and raises ``ValueError``/``TypeError`` naming the argument, what was expected
and what came, before tracing reaches XLA.

The shape arithmetic (``conv_output_size``, ``resolve_padding``, ...) lives in
``jaxcnn._shapes``, shape-only and tested without arrays.
"""
from jaxcnn._shapes import (PADDING_STRINGS, ConvSpec, Pads, PoolSpec, conv_transpose_output_size,
                            dilated_size, is_int, pool_output_size, resolve_padding)
from jaxcnn._args.common import (IMPLS, PADDING_MODES, as_float_array, check_rank, choice, int_tuple,
                                 layout_text)
from jaxcnn._args.conv import (ConvArgs, ConvTransposeArgs, check_cotangent, check_padding_mode,
                               check_positive_size, normalize_bias, normalize_conv,
                               normalize_conv_transpose, prod, shape_tuple, transpose_layout_text)
from jaxcnn._args.pool import (check_bool, check_pool_input, check_window_holds_input,
                               normalize_global_pool, normalize_pool)
from jaxcnn._args.layers import (axis_index, check_groups, drop_rate, kernel_tuple,
                                 layer_input_shape, positive_int)
from jaxcnn._args.devices import check_splits_evenly, device_request, optional_index
from jaxcnn._args.norm import GroupNormArgs, normalize_group_norm

__all__ = ["PADDING_STRINGS", "Pads", "conv_transpose_output_size", "dilated_size", "is_int",
           "pool_output_size", "resolve_padding", "ConvSpec", "IMPLS", "PADDING_MODES",
           "as_float_array", "check_rank", "choice", "int_tuple", "layout_text", "ConvArgs",
           "ConvTransposeArgs", "check_cotangent", "check_padding_mode", "check_positive_size",
           "normalize_bias", "normalize_conv", "normalize_conv_transpose", "prod", "shape_tuple",
           "transpose_layout_text", "PoolSpec", "check_bool", "check_pool_input",
           "check_window_holds_input", "normalize_global_pool", "normalize_pool", "axis_index",
           "check_groups", "drop_rate", "kernel_tuple", "layer_input_shape", "positive_int",
           "check_splits_evenly", "device_request", "optional_index", "GroupNormArgs",
           "normalize_group_norm"]
