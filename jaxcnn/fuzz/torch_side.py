"""Every fuzzed op written with PyTorch (channels first, float64), from the documented
semantics alone: the padding forms are resolved here by API.md's definitions, not by
jaxcnn's code, and whatever PyTorch has no native form for (asymmetric or string padding,
border modes, true convolution) is built from ``F.pad``, ``flip`` and crops.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    from jaxcnn.fuzz.configs import FuzzCase


def expected_pads(padding: Any, sizes: Sequence[int], kernel: Sequence[int],
                  stride: Sequence[int], dilation: Sequence[int]) -> list[tuple[int, int]]:
    """``(lo, hi)`` per axis from API.md's definitions of every padding form of ``conv``."""
    n = len(sizes)
    extent = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    if isinstance(padding, str):
        form = padding.upper()
        if form == "VALID":
            return [(0, 0)] * n
        if form == "FULL":
            return [(e - 1, e - 1) for e in extent]
        if form == "CAUSAL":
            return [(e - 1, 0) for e in extent]
        assert form == "SAME", padding
        pads = []
        for length, e, s in zip(sizes, extent, stride):   # least padding giving ceil(L / s)
            total = max((-(-length // s) - 1) * s + e - length, 0)
            pads.append((total // 2, total - total // 2))
        return pads
    if isinstance(padding, int):
        return [(padding, padding)] * n
    return [(p, p) if isinstance(p, int) else (p[0], p[1]) for p in padding]


def as_list(value: Any, n: int) -> list[int]:
    return [value] * n if isinstance(value, int) else list(value)


def conv_out_sizes(c: FuzzCase) -> list[int]:
    """The conv's output sizes, ``floor((L + lo + hi − d·(K − 1) − 1) / s) + 1`` (may be ≤ 0)."""
    n = c.n
    stride, dilation = as_list(c.stride, n), as_list(c.dilation, n)
    pads = expected_pads(c.padding, c.sizes, c.kernel, stride, dilation)
    return [(length + lo + hi - d * (k - 1) - 1) // s + 1
            for length, k, s, d, (lo, hi) in zip(c.sizes, c.kernel, stride, dilation, pads)]


def transpose_pads(c: FuzzCase) -> tuple[list[tuple[int, int]], list[int]]:
    """conv_transpose's ``(lo, hi)`` and output_padding: strings are the padding the adjoint
    conv would use on this op's output; ``"SAME"`` gives ``L·s`` (TensorFlow)."""
    n = c.n
    stride, dilation = as_list(c.stride, n), as_list(c.dilation, n)
    extra = as_list(c.output_padding, n)
    padding = c.padding
    if isinstance(padding, str) and padding.upper() == "SAME":
        if any(extra):
            raise ValueError("output_padding: 'SAME' fixes the output at L·stride")
        pads, extra = [], list(extra)
        for i, (k, s, d) in enumerate(zip(c.kernel, stride, dilation)):
            total = max(d * (k - 1) + 1 - s, 0)
            pads.append((total // 2, total - total // 2))
            extra[i] += max(s - d * (k - 1) - 1, 0)
        return pads, extra
    sizes = [length * s for length, s in zip(c.sizes, stride)]   # only SAME reads them
    return expected_pads(padding, sizes, c.kernel, stride, dilation), extra


def transpose_out_sizes(c: FuzzCase) -> list[int]:
    n = c.n
    stride, dilation = as_list(c.stride, n), as_list(c.dilation, n)
    pads, extra = transpose_pads(c)
    return [(length - 1) * s - lo - hi + d * (k - 1) + 1 + p
            for length, k, s, d, (lo, hi), p in zip(c.sizes, c.kernel, stride, dilation, pads, extra)]


def pool_out_sizes(c: FuzzCase) -> list[int]:
    """PyTorch's pooling output size, ceil_mode's last window starting inside the input or
    the left padding."""
    n = c.n
    stride = c.kernel if c.stride is None else as_list(c.stride, n)
    sizes = []
    for length, k, s, d, p in zip(c.sizes, as_list(c.kernel, n), as_list(stride, n),
                                  as_list(c.dilation, n), as_list(c.padding, n)):
        span = length + 2 * p - d * (k - 1) - 1 + (s - 1 if c.ceil_mode else 0)
        out = span // s + 1
        if c.ceil_mode and out > 0 and (out - 1) * s >= length + p:
            out -= 1
        sizes.append(out)
    return sizes


# Where PyTorch and jaxcnn knowingly differ: the configurations each predicate picks are
# refused by one side only, by design. ``skip`` marks those PyTorch must not run at all.
def _pool_axes(c: FuzzCase):
    n = c.n
    stride = c.kernel if c.stride is None else as_list(c.stride, n)
    return zip(c.sizes, as_list(c.kernel, n), as_list(stride, n), as_list(c.dilation, n),
               as_list(c.padding, n), pool_out_sizes(c))


def _window_in_padding(c: FuzzCase) -> bool:
    return c.op == "max_pool" and any(
        not any(0 <= i * s - p + j * d < length for j in range(k))
        for length, k, s, d, p, out in _pool_axes(c) for i in range(max(out, 0)))


DIFFERENCES = {
    "max_pool padding up to half the dilated window": dict(
        refused_by="torch", skip=False,
        why="jaxcnn accepts max_pool padding up to half the dilated window; PyTorch asks "
            "padding <= window // 2 (the undilated window)",
        applies=lambda c: c.op == "max_pool" and any(p > k // 2 for _, k, _, _, p, _ in _pool_axes(c))),
    "max_pool window entirely in the padding": dict(
        refused_by="jaxcnn", skip=True,
        why="jaxcnn refuses a max_pool whose dilated window steps over the whole input into the "
            "padding; PyTorch returns -inf there and its backward writes outside the input "
            "(the fuzzer saw heap corruption), so PyTorch is not run on these",
        applies=_window_in_padding),
    "avg_pool3d input smaller than the window": dict(
        refused_by="torch", skip=False,
        why="PyTorch's avg_pool3d refuses an input smaller than the window even where the padding "
            "makes room; its avg_pool1d/2d and jaxcnn accept",
        applies=lambda c: c.op == "avg_pool" and c.n == 3
        and any(length < k for length, k in zip(c.sizes, as_list(c.kernel, 3)))),
    "conv_transpose output size 0": dict(
        refused_by="jaxcnn", skip=False,
        why="PyTorch's conv_transpose returns an empty array where the output size formula gives "
            "0; jaxcnn refuses a non-positive output size",
        applies=lambda c: c.op == "conv_transpose" and 0 in transpose_out_sizes(c)),
    "conv_transpose output_padding unchecked on an empty batch": dict(
        refused_by="jaxcnn", skip=False,
        why="PyTorch's conv_transpose skips its output_padding < max(stride, dilation) check when "
            "the batch is empty; jaxcnn checks it whatever the batch",
        applies=lambda c: c.op == "conv_transpose" and c.batch == 0 and any(
            p >= max(s, d) for p, s, d in zip(as_list(c.output_padding, c.n),
                                              as_list(c.stride, c.n), as_list(c.dilation, c.n)))),
    "group_norm empty spatial axis": dict(
        refused_by="jaxcnn", skip=False,
        why="PyTorch's group_norm returns an empty array for a spatial axis of size 0 (its scale "
            "gradient NaN); jaxcnn refuses it, the mean of nothing being undefined",
        applies=lambda c: c.op == "group_norm" and 0 in c.sizes),
}


def differences(c: FuzzCase) -> list[str]:
    """The documented differences that apply to ``c``."""
    found = []
    for name, difference in DIFFERENCES.items():
        try:
            if difference["applies"](c):
                found.append(name)
        except ValueError:
            pass
    return found


def applies(c: FuzzCase) -> bool:
    """Whether PyTorch has the op at all: n ≤ 3, and no border mode for conv_transpose."""
    if c.n > 3:
        return False
    return not (c.op == "conv_transpose" and c.padding_mode != "zeros")


_TORCH_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate",
               "circular": "circular"}


def _flat(pads: Sequence[tuple[int, int]]) -> list[int]:
    """``F.pad``'s order: the last axis first."""
    return [v for lo, hi in reversed(pads) for v in (lo, hi)]


def conv(torch, x, w, b, c: FuzzCase):
    F = torch.nn.functional
    n = c.n
    stride, dilation = as_list(c.stride, n), as_list(c.dilation, n)
    pads = expected_pads(c.padding, c.sizes, c.kernel, stride, dilation)
    mode = c.padding_mode
    if c.op == "convolve":
        w = torch.flip(w, dims=list(range(2, 2 + n)))
    function = getattr(F, f"conv{n}d")
    if mode == "zeros" and all(lo == hi for lo, hi in pads):
        return function(x, w, b, stride, [lo for lo, _ in pads], dilation, c.groups)
    if any(pads):
        x = F.pad(x, _flat(pads), mode=_TORCH_MODE[mode])
    return function(x, w, b, stride, 0, dilation, c.groups)


def conv_transpose(torch, x, w, b, c: FuzzCase):
    F = torch.nn.functional
    n = c.n
    stride, dilation = as_list(c.stride, n), as_list(c.dilation, n)
    pads, extra = transpose_pads(c)
    function = getattr(F, f"conv_transpose{n}d")
    if all(lo == hi for lo, hi in pads) and all(p < max(s, d) for p, s, d in zip(extra, stride, dilation)):
        return function(x, w, b, stride, [lo for lo, _ in pads], extra, c.groups, dilation)
    full = function(x, w, b, stride, 0, extra, c.groups, dilation)
    index = [slice(None), slice(None)]
    for axis, (lo, hi) in enumerate(pads):
        size = full.shape[2 + axis]
        if size - lo - hi < 1:
            raise ValueError(f"non-positive output size on axis {axis}")
        index.append(slice(lo, size - hi))
    return full[tuple(index)]


def conv_input_grad(torch, dy, w, c: FuzzCase):
    """``dx`` as PyTorch's autograd of the conv at ``x = 0`` (linear in x), kept differentiable."""
    x = torch.zeros((c.batch, c.channels, *c.sizes), dtype=dy.dtype, requires_grad=True)
    y = conv(torch, x, w, None, c)
    return torch.autograd.grad(y, x, dy, create_graph=True)[0]


def conv_weight_grad(torch, x, dy, c: FuzzCase):
    w = torch.zeros((c.out_channels, c.channels // c.groups, *c.kernel), dtype=x.dtype,
                    requires_grad=True)
    y = conv(torch, x, w, None, c)
    return torch.autograd.grad(y, w, dy, create_graph=True)[0]


def max_pool(torch, x, c: FuzzCase):
    n = c.n
    stride = c.kernel if c.stride is None else c.stride
    return getattr(torch.nn.functional, f"max_pool{n}d")(x, c.kernel, stride, c.padding,
                                                         c.dilation, c.ceil_mode)


def avg_pool(torch, x, c: FuzzCase):
    n = c.n
    stride = c.kernel if c.stride is None else c.stride
    return getattr(torch.nn.functional, f"avg_pool{n}d")(x, c.kernel, stride, c.padding,
                                                         c.ceil_mode, c.count_include_pad)


def global_avg_pool(torch, x, c: FuzzCase):
    return x.mean(dim=tuple(range(2, 2 + c.n)))


def group_norm(torch, x, scale, bias, c: FuzzCase):
    return torch.nn.functional.group_norm(x, c.groups, scale, bias, c.eps)


OPS = {"conv": conv, "convolve": conv, "conv_transpose": conv_transpose,
       "conv_input_grad": conv_input_grad, "conv_weight_grad": conv_weight_grad,
       "max_pool": max_pool, "avg_pool": avg_pool, "global_avg_pool": global_avg_pool,
       "group_norm": group_norm}
