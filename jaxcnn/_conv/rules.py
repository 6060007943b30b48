r"""The rule that picks one form per shape for each of the conv family's three pieces: a table.

Every form computes exactly the map of its piece (``pieces``), in an order of operations XLA
runs faster for some shapes; each is linear in each operand, so the VJP family (every piece's
transpose is another piece) is untouched. ``choose`` is called when a primitive is lowered,
with static shapes, so the choice costs nothing at run time. ``FORMS`` holds each form (its
function and its memory model, ``budget``) and ``RULES`` each piece's candidates, fastest
first, each with the test of where it applies; ``candidates`` filters the rules in order and
``choose`` takes the first that fits the memory budget. The measurements behind the order are
in docs/performance.md ("Form choice"). On CPU:

- **native** (``native``; channels last, one group, float32, ``C ≥ 8``): C++ kernels called as
  FFI custom calls, register-blocked sums over a table of input rows, for each piece in 1D, 2D
  and 3D where they apply (the input gradient at stride 1 or dilation 1: ``native.strided``,
  one call per output phase; the weight gradient of fewer channels too, without the table);
  first where they do, but behind the depth fold's weight gradient of 8 to 10 channels. The forms
  below serve every other dtype, layout and shape, and every machine without a compiler.
- **depthwise** (``C/g = 1``, ``g > 1``; ``forms``): XLA's grouped convolution runs 1×1 blocks
  far from peak. The manual tap sum is an elementwise multiply per tap, and the weight
  gradient a multiply-and-sum per tap:
  ``dw[g·M + m, 0, k] = Σ_{n,i} x_pad[n, g, i·s + k·d] · dy[n, g·M + m, i]``.
- **single channel** (one group, ``C = 1``, the forward; ``forms``): a first layer on grey
  images or clips, ``y[n, i, o] = Σ_k x_pad[n, i·s + k·d, 0] · w[k, 0, o]``: a sum of
  broadcast products XLA fuses into one loop, where its convolution of depth 1 is slow.
- **fold depth** (n = 3, one group; ``depth``): XLA's CPU backend sends 2D convolutions to its
  fast library and 3D ones to a generic loop. A 3D conv is a sum over its ``K_d`` depth taps of
  2D convs over a batch of ``N·D_out`` depth slices: the taps stacked into the channels (one 2D
  conv; ``K_d`` copies of the input), or, where those do not fit the memory budget, a loop over
  the taps (one depth slice alive at a time).
- **2D and 3D weight gradient** (one group): XLA computes it as a convolution whose "kernel"
  is the whole of ``dy``. Per-tap matmuls (the manual form) are faster; with ``N ≥ 4`` samples
  and a small ``C × O`` tap they run batched over the samples and summed after (``forms``; the
  long contraction over ``(n, i)`` of a small output is the shape XLA's CPU matmul cannot
  parallelise).
- **im2col** (``impl="manual"``, ``1 < C/g ≤ 4``; ``forms``): with few input channels each
  tap's contraction is a matmul of depth ``C/g`` that writes the whole output; stacking the
  ``∏K`` slices along a tap axis makes one contraction of depth ``∏K·C/g``.

Memory weighs as much as time (``budget``): a form is used only within ``MEMORY_BUDGET`` of its
piece's activations; otherwise the next candidate: the tap loops of ``loops`` (one tap alive at
a time), and at last the one-lax-call piece (``impl="lax"``). With ``JAXCNN_MEASURE_FORMS=1``
the candidates that fit are timed once per shape instead (``tuning``).

The native, depthwise, fold-depth and per-tap forms are CPU lowerings of ``impl="lax"`` (on a
GPU, cuDNN handles grouped and 3D convolutions itself); im2col and the depthwise weight
gradient are ``impl="manual"`` forms everywhere (no convolution primitive in either).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import numpy as np

from jaxcnn._conv import budget, native, tuning
from jaxcnn._conv.depth import (depth_tap_conv, depth_tap_input_grad, fold_depth_conv,
                                fold_depth_input_grad, fold_depth_weight_grad)
from jaxcnn._conv.forms import (depthwise_weight_grad, im2col_conv, im2col_weight_grad,
                                loop_depthwise_weight_grad, sample_batched_weight_grad,
                                single_channel_conv)
from jaxcnn._conv.loops import (chunked_loop_conv, loop_conv, loop_input_grad,
                                loop_sample_batched_weight_grad, loop_weight_grad)
from jaxcnn._conv.native import native_conv, native_input_grad, native_weight_grad
from jaxcnn._conv.native.partition import split_lax_input_grad
from jaxcnn._conv.pieces import (IMPLS, lax_conv, lax_input_grad, lax_weight_grad, manual_conv,
                                 manual_input_grad, manual_weight_grad)
from jaxcnn._primitives import custom_calls_allowed, partitioning_mesh
from jaxcnn._shapes import ConvSpec, kernel_sizes


PIECES = ("conv", "input_grad", "weight_grad")


# ----------------------------------------------------------------------------- the forms


@dataclasses.dataclass(frozen=True)
class Form:
    """One form of a piece: the function that computes it and its memory model, the estimated
    intermediate elements as a function of ``activation_sizes``."""

    function: Callable
    memory: Callable[[dict[str, int]], int]

    @property
    def name(self) -> str:
        return self.function.__name__


FORMS: tuple[Form, ...] = (
    Form(lax_conv, budget.one_call),
    Form(lax_input_grad, budget.one_call),
    Form(split_lax_input_grad, budget.one_call),
    Form(lax_weight_grad, budget.one_call),
    Form(native_conv, budget.one_call),
    Form(native_input_grad, budget.one_call),
    Form(native_weight_grad, budget.one_call),
    Form(manual_conv, budget.unrolled),
    Form(manual_input_grad, budget.placed_taps),
    Form(manual_weight_grad, budget.unrolled),
    Form(sample_batched_weight_grad, budget.unrolled),
    Form(depthwise_weight_grad, budget.unrolled),
    Form(im2col_conv, budget.stacked_taps),
    Form(single_channel_conv, budget.padded_input),
    Form(im2col_weight_grad, budget.stacked_taps),
    Form(fold_depth_conv, budget.folded_depth),
    Form(fold_depth_input_grad, budget.folded_depth),
    Form(fold_depth_weight_grad, budget.folded_depth),
    Form(depth_tap_conv, budget.depth_tap_loop),
    Form(depth_tap_input_grad, budget.depth_tap_loop),
    Form(loop_conv, budget.loop_conv_memory),
    Form(loop_input_grad, budget.loop_input_grad_memory),
    Form(loop_weight_grad, budget.loop_weight_grad_memory),
    Form(loop_sample_batched_weight_grad, budget.loop_weight_grad_memory),
    Form(loop_depthwise_weight_grad, budget.loop_depthwise_memory),
    Form(chunked_loop_conv, budget.chunked_loop_memory),
)
_BY_FUNCTION = {form.function: form for form in FORMS}


def form_of(function: Callable) -> Form:
    """The table's entry for ``function``; a function not in ``FORMS`` is an error, never a
    form that costs nothing."""
    try:
        return _BY_FUNCTION[function]
    except (KeyError, TypeError):
        raise KeyError(f"{getattr(function, '__name__', function)!r} is not a form of "
                       f"rules.FORMS ({', '.join(f.name for f in FORMS)})") from None


def form_memory(form: Callable, spec: ConvSpec, in_shape: tuple[int, ...], w_shape: tuple[int, ...]) -> int:
    """Estimated intermediate elements of ``form`` (0 for the one-lax-call and native pieces)."""
    return form_of(form).memory(budget.activation_sizes(spec, in_shape, w_shape))


def fits(form: Callable, spec: ConvSpec, in_shape: tuple[int, ...], w_shape: tuple[int, ...]) -> bool:
    """Whether ``form``'s intermediates fit the budget (``budget.MEMORY_BUDGET``)."""
    a = budget.activation_sizes(spec, in_shape, w_shape)
    return form_of(form).memory(a) <= budget.room(a)


# ----------------------------------------------------------------------------- the rule


@dataclasses.dataclass(frozen=True)
class Case:
    """What the rule reads: one piece of one conv, as lowered."""

    piece: str
    impl: str
    spec: ConvSpec
    in_shape: tuple[int, ...]
    w_shape: tuple[int, ...]
    platform: str | None
    dtype: Any

    @property
    def channels_per_group(self) -> int:
        return self.in_shape[self.spec.channel_axis()] // self.spec.groups

    @property
    def depthwise(self) -> bool:
        return self.spec.groups > 1 and self.channels_per_group == 1

    @property
    def thin(self) -> bool:
        """``1 < C/g ≤ 4``: each tap's contraction is too shallow to be a good matmul."""
        return 1 < self.channels_per_group <= 4

    @property
    def lax_cpu(self) -> bool:
        """A CPU lowering of ``impl="lax"``: on a GPU cuDNN handles grouped and 3D convolutions."""
        return self.impl == "lax" and self.platform == "cpu"

    @property
    def manual(self) -> bool:
        return self.impl == "manual"


def _native(case: Case) -> bool:
    """The native kernels, wherever they compute the piece; not where the lowering takes no
    custom call (``custom_calls_allowed``: an op XLA's partitioner splits over devices, a
    program for ``jax.export``)."""
    return (case.lax_cpu and custom_calls_allowed()
            and native.supports(case.piece, case.spec, case.in_shape, case.w_shape, case.dtype))


def lhs_dilated_lax(impl: str, spec: ConvSpec) -> bool:
    """Whether ``impl``'s input gradient is a strided conv's lax piece, one lhs-dilated
    convolution (read when the op is bound: it may then lower to a call split by batch)."""
    return impl == "lax" and any(s > 1 for s in spec.stride)


def _lhs_dilated_split(case: Case) -> bool:
    """``lhs_dilated_lax`` in an op XLA's partitioner splits: split by batch ourselves
    (``split_lax_input_grad``: the partitioner's own spatial split of it fails)."""
    return (lhs_dilated_lax(case.impl, case.spec) and partitioning_mesh() is not None
            and custom_calls_allowed())


def _native_first(case: Case) -> bool:
    """The native weight gradient ahead of the depth fold: with fewer than
    ``native.MIN_CHANNELS`` input channels (its table-free kernel; the clips model's 1 → 16
    layer 1.4 vs 3.7 ms for the fold), or where the fold does not apply (``_thin_fold``)."""
    return _native(case) and (case.channels_per_group < native.MIN_CHANNELS or not _thin_fold(case))


def _native_after_fold(case: Case) -> bool:
    return _native(case) and not _native_first(case)


def may_be_native(impl: str, spec: ConvSpec, dtypes: tuple[Any, ...]) -> bool:
    """Whether a piece of ``impl`` on operands of ``dtypes`` may take the native form on a CPU
    (what the spec and the dtypes decide, read when the op is bound, before any lowering): the
    op may then lower to a custom call the partitioner splits."""
    return (impl == "lax" and jax.default_backend() == "cpu"
            and all(native.may_support(spec, dtype) for dtype in dtypes))


def _depth_fold(case: Case) -> bool:
    """3D, one group, lax on CPU: XLA's CPU backend sends 2D convolutions to its fast library
    and 3D ones to a generic loop, so a 3D conv runs as a sum over its depth taps of 2D convs."""
    return case.lax_cpu and case.spec.n == 3 and case.spec.groups == 1


_THIN_FOLD = 32
"""A 3D weight gradient with at most this many folded channels (``K_d·C``) runs as one 2D
weight gradient of the folded input (``fold_depth_weight_grad``); with more, the per-tap forms
are as fast."""


def _thin_fold(case: Case) -> bool:
    return (_depth_fold(case)
            and kernel_sizes(case.w_shape, case.spec)[0] * case.channels_per_group <= _THIN_FOLD)


def _thin_many_taps(case: Case) -> bool:
    """2D, at most 4 input channels and more than 9 taps (the 7×7 stem, mnist5x5): every tap of
    a per-tap weight gradient re-reads all of ``dy`` for a thin product, and XLA's one
    convolution is faster; with 9 taps the loop wins."""
    return (case.spec.n == 2 and case.channels_per_group <= 4
            and math.prod(kernel_sizes(case.w_shape, case.spec)) > 9)


_SMALL_TAP = 4096
"""The largest ``C × O`` tap whose weight gradient runs batched over the samples."""


def _cpu_weight_grad(spec: ConvSpec, in_shape: tuple[int, ...], w_shape: tuple[int, ...]) -> Callable:
    """2D and 3D, one group: per-tap matmuls (XLA computes the weight gradient as a convolution
    whose "kernel" is the whole of ``dy``), batched over the samples when there are several
    and the tap's ``C × O`` output is small (≤ 4096): XLA's CPU matmul cannot split the long
    contraction over ``(n, i)`` of a small output into parallel work, a batch of ``N`` short
    ones it can. The 2D stem (few samples and channels): XLA's own is as fast."""
    o_ax, i_ax = spec.kernel_io_axes()
    if in_shape[0] >= 4 and w_shape[o_ax] * w_shape[i_ax] <= _SMALL_TAP:
        return sample_batched_weight_grad
    if spec.n == 2 and w_shape[i_ax] <= 4:
        return lax_weight_grad
    return manual_weight_grad


def _per_tap(form: Callable, *, loop: bool = False) -> Callable[[Case], bool]:
    """Where the per-tap CPU weight gradient (``_cpu_weight_grad``: 2D and 3D, one group) is
    ``form``; with ``loop``, its tap-loop twin. lax's skips the thin 2D kernels of many taps
    (``_thin_many_taps``), and takes the plain tap loop only in 3D, where XLA's weight gradient
    is the generic loop (in 2D XLA's convolution won on some rows and lost on others)."""
    def applies(case: Case) -> bool:
        spec = case.spec
        if case.platform != "cpu" or spec.n < 2 or spec.groups != 1 or case.piece != "weight_grad":
            return False
        if case.impl == "lax" and _thin_many_taps(case):
            return False
        if case.impl == "lax" and loop and form is manual_weight_grad and spec.n != 3:
            return False
        return _cpu_weight_grad(spec, case.in_shape, case.w_shape) is form
    return applies


def _single_channel(case: Case) -> bool:
    """One group, one input channel, lax on CPU: the forward as a sum of broadcast products,
    which XLA fuses into one loop; its convolution of depth 1 (or the 3D depth fold's) ran 1.5
    to 6 times slower (docs/performance.md)."""
    return case.lax_cpu and case.spec.groups == 1 and case.channels_per_group == 1


def _thin_manual(case: Case) -> bool:
    """im2col: one contraction of depth ``∏K·C/g`` instead of ``∏K`` of depth ``C/g``."""
    return case.manual and case.thin


def _depthwise(case: Case) -> bool:
    """``C/g = 1``: XLA's grouped convolution runs 1×1 blocks; a tap sum is elementwise."""
    return case.depthwise and (case.manual or case.lax_cpu)


def _depthwise_lax(case: Case) -> bool:
    return case.depthwise and case.lax_cpu


@dataclasses.dataclass(frozen=True)
class Rule:
    """``function`` is a candidate wherever ``applies(case)``."""

    function: Callable
    applies: Callable[[Case], bool]


def _impl(impl: str) -> Callable[[Case], bool]:
    return lambda case: case.impl == impl


def _either(*tests: Callable[[Case], bool]) -> Callable[[Case], bool]:
    return lambda case: any(test(case) for test in tests)


_MANUAL = _impl("manual")

RULES: dict[str, tuple[Rule, ...]] = {
    # Fastest first; the last rule that applies is the last resort, used whatever its memory:
    # the lean tap loop (manual) or the one-lax-call piece (lax).
    "conv": (
        Rule(native_conv, _native),
        Rule(single_channel_conv, _single_channel),
        Rule(im2col_conv, _thin_manual),
        Rule(fold_depth_conv, _depth_fold),
        Rule(depth_tap_conv, _depth_fold),
        Rule(manual_conv, _either(_MANUAL, _depthwise_lax)),
        Rule(loop_conv, _either(_MANUAL, _depthwise_lax)),
        Rule(chunked_loop_conv, _MANUAL),
        Rule(lax_conv, _impl("lax")),
    ),
    "input_grad": (
        Rule(native_input_grad, _native),
        Rule(split_lax_input_grad, _lhs_dilated_split),
        Rule(fold_depth_input_grad, _depth_fold),
        Rule(depth_tap_input_grad, _depth_fold),
        Rule(manual_input_grad, _either(_MANUAL, _depthwise_lax)),
        Rule(loop_input_grad, _either(_MANUAL, _depthwise_lax)),
        Rule(lax_input_grad, _impl("lax")),
    ),
    "weight_grad": (
        Rule(native_weight_grad, _native_first),
        Rule(fold_depth_weight_grad, _thin_fold),
        Rule(native_weight_grad, _native_after_fold),
        Rule(sample_batched_weight_grad, _per_tap(sample_batched_weight_grad)),
        Rule(loop_sample_batched_weight_grad, _per_tap(sample_batched_weight_grad, loop=True)),
        # On CPU the per-tap matmuls rank above im2col; elsewhere manual's own piece ranks below
        # it (the rules further down): one function, two places in the order.
        Rule(manual_weight_grad, _per_tap(manual_weight_grad)),
        Rule(loop_weight_grad, _per_tap(manual_weight_grad, loop=True)),
        Rule(im2col_weight_grad, _thin_manual),
        Rule(depthwise_weight_grad, _depthwise),
        Rule(loop_depthwise_weight_grad, _depthwise),
        Rule(manual_weight_grad, _MANUAL),
        Rule(loop_weight_grad, _MANUAL),
        Rule(lax_weight_grad, _impl("lax")),
    ),
}
LOOPS = (chunked_loop_conv, loop_input_grad, loop_weight_grad)   # manual's last resorts


def candidates(piece: str, impl: str, spec: ConvSpec, in_shape: tuple[int, ...],
               w_shape: tuple[int, ...], platform: str | None, dtype: Any = None) -> list[Callable]:
    """The forms that compute ``piece`` of ``impl`` on operands of ``dtype``, fastest first: the
    ``RULES`` of ``piece`` that apply, in order. The last is the last resort (the tap loop or
    the lax piece), used whether or not it fits."""
    if piece not in RULES:
        raise ValueError(f"piece: expected one of {PIECES}; got {piece!r}")
    if impl not in IMPLS:
        raise ValueError(f"impl: expected one of {tuple(IMPLS)}; got {impl!r}")
    case = Case(piece, impl, spec, tuple(in_shape), tuple(w_shape), platform, dtype)
    return [rule.function for rule in RULES[piece] if rule.applies(case)]


def choose(piece: str, impl: str, spec: ConvSpec, in_shape: tuple[int, ...],
           w_shape: tuple[int, ...], platform: str | None, dtype: Any = None) -> Callable:
    """The function that computes ``piece`` of ``impl`` for a conv whose input ``x`` has
    ``in_shape`` and kernel ``w`` has ``w_shape``; ``platform`` is the lowering's (``"cpu"``)
    or None for the generic lowering: the first of ``candidates`` whose intermediates fit the
    memory budget. Every candidate computes the same map."""
    forms = candidates(piece, impl, spec, in_shape, w_shape, platform, dtype)
    forms = [f for f in forms[:-1] if fits(f, spec, in_shape, w_shape)] + forms[-1:]
    if len(forms) < 2 or not tuning.enabled():
        return forms[0]
    return _measuring(piece, impl, spec, forms)


def _measuring(piece: str, impl: str, spec: ConvSpec, forms: list[Callable]) -> Callable:
    """A piece that, when lowered, runs the fastest of ``forms`` for its operands' shapes and
    dtype as ``tuning.measured`` finds it (cached on disk), else the rule's (``forms[0]``)."""
    def piece_fn(a, b, spec_, *shape):
        def operands():
            rng = np.random.default_rng(0)
            return [rng.standard_normal(o.shape).astype(o.dtype) for o in (a, b)]
        key = tuning.cache_key(piece, impl, spec_, (a.shape, b.shape, *shape), a.dtype)
        form = tuning.measured(key, forms, operands,
                                    lambda f: lambda x, y: f(x, y, spec_, *shape)) or forms[0]
        return form(a, b, spec_, *shape)
    piece_fn.__name__ = f"measured_{piece}"
    return piece_fn
