"""Tests of jaxcnn/_args/: the normalisers (``int_tuple``, ``ConvSpec``'s axes), and every
bad input of conv and its VJP pieces, raised at the front door with a message naming the
argument, what was expected and what came. The shape formulas are tested in test_shapes.py."""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import pytest

import jaxcnn
from jaxcnn._args import ConvSpec, int_tuple


def test_int_tuple():
    assert int_tuple(2, 3, "stride") == (2, 2, 2)
    assert int_tuple((1, 2), 2, "stride") == (1, 2)
    assert int_tuple([3], 1, "dilation") == (3,)
    assert int_tuple(0, 2, "output_padding", minimum=0) == (0, 0)


@pytest.mark.parametrize("channels_last,spatial,channel,kernel,io", [
    (False, (2, 3), 1, (2, 3), (0, 1)),     # x (N, C, H, W), w (O, I, KH, KW)
    (True, (1, 2), 3, (0, 1), (3, 2)),      # x (N, H, W, C), w (KH, KW, I, O)
])
def test_conv_spec_axes(channels_last, spatial, channel, kernel, io):
    spec = ConvSpec((1, 1), ((0, 0), (0, 0)), (1, 1), 1, channels_last)
    assert spec.n == 2
    assert spec.spatial_axes() == spatial and spec.channel_axis() == channel
    assert spec.kernel_spatial_axes() == kernel and spec.kernel_io_axes() == io
    numbers = spec.dimension_numbers()
    assert numbers.lhs_spec == (0, channel, *spatial) == numbers.out_spec
    assert numbers.rhs_spec == (*io, *kernel)


# ----------------------------------------------------------------------------- bad input

X = jnp.ones((2, 4, 6))          # (N, C, L): 4 channels, length 6; float32 (x64 off, the default)
W = jnp.ones((6, 4, 3))          # (O, C, K): 6 out channels, kernel 3
DY = jnp.ones((2, 6, 4))         # conv(X, W)'s output shape

# (function, arrays, static keyword arguments, exception, pattern naming the argument and
# what came). Arrays are traced under jax.jit; the statics are not.
BAD = {
    "negative-padding": (jaxcnn.conv, (X, W), dict(padding=-1), ValueError, r"padding.*-1"),
    "negative-pair": (jaxcnn.conv, (X, W), dict(padding=((0, -2),)), ValueError, r"padding.*-2"),
    "stride-0": (jaxcnn.conv, (X, W), dict(stride=0), ValueError, r"stride.*>= 1.*got 0"),
    "dilation-0": (jaxcnn.conv, (X, W), dict(dilation=(0,)), ValueError, r"dilation.*got \(0,\)"),
    "kernel-too-large": (jaxcnn.conv, (X, jnp.ones((6, 4, 9))), {}, ValueError,
                         r"w: kernel extent 9.*padded input 6"),
    "dilated-kernel-too-large": (jaxcnn.conv, (X, W), dict(dilation=3, padding=(0,)), ValueError,
                                 r"w: kernel extent 7.*padded input 6"),
    "dtype-mismatch": (jaxcnn.conv, (X, W.astype(jnp.bfloat16)), {}, TypeError,
                       r"w: expected the dtype of x \(float32\); got bfloat16"),
    "reflect-too-wide": (jaxcnn.conv, (X, W), dict(padding=6, padding_mode="reflect"), ValueError,
                         r"padding: reflect .*smaller.*\(6, 6\) for size 6"),
    "reflect-same-too-wide": (jaxcnn.conv, (jnp.ones((1, 1, 2)), jnp.ones((1, 1, 5))),
                              dict(padding="same", padding_mode="REFLECT"), ValueError,
                              r"padding: reflect.*\(2, 2\) for size 2"),
    "circular-too-wide": (jaxcnn.conv, (X, W), dict(padding=((0, 7),), padding_mode="circular"),
                          ValueError, r"padding: circular.*\(0, 7\) for size 6"),
    "replicate-empty": (jaxcnn.conv, (jnp.ones((1, 1, 0)), jnp.ones((1, 1, 1))),
                        dict(padding=1, padding_mode="replicate"), ValueError,
                        r"padding: replicate.*size 0"),
    "x-rank": (jaxcnn.conv, (X[0], W), {}, ValueError, r"x: expected 3 dimensions.*got shape \(4, 6\)"),
    "w-rank": (jaxcnn.conv, (X, W[0]), {}, ValueError, r"w: expected at least 3 dimensions.*\(4, 3\)"),
    "channels-mismatch": (jaxcnn.conv, (X, jnp.ones((6, 3, 3))), {}, ValueError,
                          r"w: expected 4 input channels per group.*got 3"),
    "channels-not-divisible": (jaxcnn.conv, (X, jnp.ones((6, 1, 3))), dict(groups=3), ValueError,
                               r"groups: expected a divisor of the 4 input channels.*got 3"),
    "out-channels-not-divisible": (jaxcnn.conv, (X, jnp.ones((5, 2, 3))), dict(groups=2),
                                   ValueError, r"groups: expected a divisor of the 5 output.*got 2"),
    "groups-0": (jaxcnn.conv, (X, W), dict(groups=0), ValueError,
                 r"groups: expected a positive.*got 0"),
    "groups-float": (jaxcnn.conv, (X, W), dict(groups=2.0), TypeError, r"groups:.*got 2\.0"),
    "groups-bool": (jaxcnn.conv, (X, W), dict(groups=True), TypeError, r"groups:.*got True"),
    "padding-string": (jaxcnn.conv, (X, W), dict(padding="half"), ValueError,
                       r"padding: expected one of.*got 'half'"),
    "padding-float": (jaxcnn.conv, (X, W), dict(padding=1.5), ValueError, r"padding:.*got 1\.5"),
    "padding-length": (jaxcnn.conv, (X, W), dict(padding=(1, 1)), ValueError,
                       r"padding:.*1 spatial axes; got \(1, 1\)"),
    "padding-mode": (jaxcnn.conv, (X, W), dict(padding_mode="mirror"), ValueError,
                     r"padding_mode: expected one of.*got 'mirror'"),
    "impl": (jaxcnn.conv, (X, W), dict(impl="cudnn"), ValueError, r"impl: expected one of.*'cudnn'"),
    "b-shape": (jaxcnn.conv, (X, W, jnp.ones(5)), {}, ValueError, r"b: expected shape \(6,\).*\(5,\)"),
    "b-rank": (jaxcnn.conv, (X, W, jnp.ones((6, 1))), {}, ValueError, r"b: expected shape.*\(6, 1\)"),
    "b-dtype": (jaxcnn.conv, (X, W, jnp.ones(6, jnp.bfloat16)), {}, TypeError,
                r"b: expected dtype float32; got bfloat16"),
    "b-int": (jaxcnn.conv, (X, W, jnp.ones(6, jnp.int32)), {}, TypeError, r"b: .*floating.*int32"),
    "x-int": (jaxcnn.conv, (X.astype(jnp.int32), W), {}, TypeError, r"x: .*floating.*got int32"),
    "x-complex": (jaxcnn.conv, (X.astype(jnp.complex64), W.astype(jnp.complex64)), {},
                  TypeError, r"x: .*floating.*got complex64"),
    "w-int": (jaxcnn.conv, (X, W.astype(jnp.int32)), {}, TypeError, r"w: .*floating.*got int32"),
    "x-none": (jaxcnn.conv, (None, W), {}, TypeError, r"x: expected a floating-point array; got None"),
    "stride-bool": (jaxcnn.conv, (X, W), dict(stride=True), TypeError, r"stride:.*got True"),
    "stride-float": (jaxcnn.conv, (X, W), dict(stride=1.0), TypeError, r"stride:.*got 1\.0"),
    "stride-length": (jaxcnn.conv, (X, W), dict(stride=(1, 2)), ValueError,
                      r"stride: expected an int or 1 ints.*got 2 values \(1, 2\)"),
    "channels-last-int": (jaxcnn.conv, (X, W), dict(channels_last=1), TypeError,
                          r"channels_last: expected a bool; got 1"),
    "precision-name": (jaxcnn.conv, (X, W), dict(precision="bogus"), ValueError,
                       r"precision: expected.*got 'bogus'"),
    "precision-unhashable": (jaxcnn.conv, (X, W), dict(precision=[[1]]), TypeError, r"precision:"),
    "element-type-int": (jaxcnn.conv, (X, W), dict(preferred_element_type=jnp.int32), TypeError,
                         r"preferred_element_type: expected a floating dtype; got int32"),
    "conv2d-3d-kernel": (jaxcnn.conv2d, (X, W), {}, ValueError,
                         r"w: conv2d expects 2 spatial axes.*got shape \(6, 4, 3\)"),
    "conv1d-4d-kernel": (jaxcnn.conv1d, (X[..., None], W[..., None]), {}, ValueError,
                         r"w: conv1d expects 1 spatial ax.*\(6, 4, 3, 1\)"),
    "conv3d-3d-kernel": (jaxcnn.conv3d, (X, W), {}, ValueError, r"w: conv3d expects 3 spatial"),
    "input-grad-dy-shape": (jaxcnn.conv_input_grad, (jnp.ones((2, 6, 5)), W),
                            dict(input_shape=X.shape), ValueError,
                            r"dy: expected the conv's output shape \(2, 6, 4\); got \(2, 6, 5\)"),
    "input-grad-dy-dtype": (jaxcnn.conv_input_grad, (DY.astype(jnp.bfloat16), W),
                            dict(input_shape=X.shape), TypeError, r"dy: expected dtype float32"),
    "input-grad-negative-shape": (jaxcnn.conv_input_grad, (DY, W), dict(input_shape=(2, 4, -6)),
                                  ValueError, r"input_shape:.*\(2, 4, -6\)"),
    "input-grad-shape-type": (jaxcnn.conv_input_grad, (DY, W), dict(input_shape=6), TypeError,
                              r"input_shape: expected a tuple of 3 ints; got 6"),
    "input-grad-stride-0": (jaxcnn.conv_input_grad, (DY, W), dict(input_shape=X.shape, stride=0),
                            ValueError, r"stride:.*got 0"),
    "weight-grad-dy-shape": (jaxcnn.conv_weight_grad, (X, jnp.ones((2, 5, 4))),
                             dict(weight_shape=W.shape), ValueError,
                             r"dy: expected the conv's output shape \(2, 6, 4\); got \(2, 5, 4\)"),
    "weight-grad-shape": (jaxcnn.conv_weight_grad, (X, DY), dict(weight_shape=(6, 3, 3)),
                          ValueError, r"w: expected 4 input channels per group.*got 3"),
    "weight-grad-x-int": (jaxcnn.conv_weight_grad, (X.astype(jnp.int32), DY),
                          dict(weight_shape=W.shape), TypeError, r"x: .*floating.*int32"),
}


@pytest.mark.parametrize("fn,arrays,kwargs,error,pattern", BAD.values(), ids=BAD.keys())
def test_bad_input(fn, arrays, kwargs, error, pattern):
    with pytest.raises(error, match=pattern) as raised:
        fn(*arrays, **kwargs)
    assert type(raised.value) is error  # not a subclass, e.g. no XlaRuntimeError


@pytest.mark.parametrize("fn,arrays,kwargs,error,pattern", BAD.values(), ids=BAD.keys())
def test_bad_input_is_caught_while_tracing(fn, arrays, kwargs, error, pattern):
    """Under jax.jit the same message comes while tracing (make_jaxpr lowers nothing)."""
    with pytest.raises(error, match=pattern) as raised:
        jax.make_jaxpr(partial(fn, **kwargs))(*arrays)
    assert type(raised.value) is error


def test_accepted_spellings_are_equivalent():
    """Case-insensitive strings and equivalent padding forms give the same conv."""
    x = jnp.arange(2 * 4 * 6, dtype=jnp.float32).reshape(2, 4, 6)
    w = jnp.arange(6 * 4 * 3, dtype=jnp.float32).reshape(6, 4, 3) / 10
    expected = jaxcnn.conv(x, w, padding=((1, 1),), padding_mode="reflect")
    spellings = [(1, "REFLECT"), ((1,), "Reflect"), ("same", "reflect"), ([[1, 1]], "reflect")]
    for padding, mode in spellings:
        assert (jaxcnn.conv(x, w, padding=padding, padding_mode=mode) == expected).all()
