"""The ``jaxcnn bench`` contenders: the ``lax`` baseline differentiated by JAX autodiff,
jaxcnn's ops, and PyTorch's (``TorchSide``: tensors, runners, outputs back in JAX layout).

``jaxcnn.bench`` re-exports every name here.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

import jaxcnn
from jaxcnn.bench.cases import Case


def _lax_specs(n: int, channels_last: bool, transpose: bool) -> tuple[str, str, str]:
    sp = "DHW"[3 - n:] if n <= 3 else None
    if sp is None:
        raise ValueError(f"case: expected 1 to 3 spatial axes for the lax baseline; got {n}")
    act = f"N{sp}C" if channels_last else f"NC{sp}"
    kernel = (f"{sp}OI" if transpose else f"{sp}IO") if channels_last else ("IO" if transpose else "OI") + sp
    return act, kernel, act


def baseline_fn(case: Case, channels_last: bool, acc: Any = None) -> Callable:
    """Plain ``lax``, differentiated by JAX autodiff: the baseline every ratio divides by."""
    n, pads = case.n, [(case.padding, case.padding)] * case.n
    if case.op in ("max_pool", "avg_pool"):
        window = (1, *case.kernel, 1) if channels_last else (1, 1, *case.kernel)
        strides = (1, *(case.stride,) * n, 1) if channels_last else (1, 1, *(case.stride,) * n)
        full = [(0, 0)] + pads + [(0, 0)] if channels_last else [(0, 0), (0, 0)] + pads
        if case.op == "max_pool":
            return lambda x: jax.lax.reduce_window(x, np.array(-np.inf, x.dtype), jax.lax.max,
                                                   window, strides, full)
        return lambda x: jax.lax.reduce_window(x, np.array(0, x.dtype), jax.lax.add, window, strides,
                                               full) / math.prod(case.kernel)
    dn = _lax_specs(n, channels_last, case.op == "conv_transpose")
    if case.op == "conv":
        return lambda x, w: jax.lax.conv_general_dilated(
            x, w, (case.stride,) * n, pads, dimension_numbers=dn, feature_group_count=case.groups,
            preferred_element_type=acc)
    # conv_transpose = the input-gradient of a conv: dilate x by the stride, pad by K−1−p and
    # correlate with the flipped kernel (its I/O roles read swapped through the dimension numbers).
    if case.groups != 1:
        raise ValueError(f"case: the conv_transpose baseline expects groups=1; got {case.groups}")
    flip_axes = tuple(range(n)) if channels_last else tuple(range(2, 2 + n))
    tpads = [(k - 1 - case.padding, k - 1 - case.padding) for k in case.kernel]
    return lambda x, w: jax.lax.conv_general_dilated(
        x, jnp.flip(w, flip_axes), (1,) * n, tpads, lhs_dilation=(case.stride,) * n,
        dimension_numbers=dn, preferred_element_type=acc)


def jaxcnn_fn(case: Case, channels_last: bool, impl: str, acc: Any = None) -> Callable:
    """jaxcnn's op for ``case`` (``impl`` "lax" or "manual"; pooling has one, "jaxcnn")."""
    if case.op in ("max_pool", "avg_pool"):
        pool = getattr(jaxcnn, case.op)
        return lambda x: pool(x, case.kernel, case.stride, case.padding, channels_last=channels_last)
    kwargs = dict(stride=case.stride, padding=case.padding, groups=case.groups,
                  channels_last=channels_last, impl=impl)
    if case.op == "conv":
        return lambda x, w: jaxcnn.conv(x, w, **kwargs, preferred_element_type=acc)
    return lambda x, w: jaxcnn.conv_transpose(x, w, **kwargs)


def torch_fn(case: Case) -> Callable:
    import torch.nn.functional as F
    n = case.n
    if case.op == "conv":
        conv = getattr(F, f"conv{n}d")
        return lambda x, w: conv(x, w, None, case.stride, case.padding, 1, case.groups)
    if case.op == "conv_transpose":
        conv = getattr(F, f"conv_transpose{n}d")
        return lambda x, w: conv(x, w, None, case.stride, case.padding, 0, case.groups)
    pool = getattr(F, f"{case.op}{n}d")
    return lambda x: pool(x, case.kernel, case.stride, case.padding)


class TorchSide:
    """PyTorch beside JAX: CUDA (cuDNN autotuned) if available, else CPU."""

    def __init__(self) -> None:
        import torch
        self.torch = torch
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

    def sync(self, _: Any) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def memory_format(self, ndim: int, channels_last: bool):
        torch = self.torch
        if not channels_last or ndim == 3:   # torch has no channels-last format for 1D
            return torch.contiguous_format
        return torch.channels_last if ndim == 4 else torch.channels_last_3d

    def tensor(self, a: np.ndarray, kind: str, dtype: str, channels_last: bool, grad: bool = False):
        """``a`` (in the row's JAX layout) as a torch tensor, channels first, in channels-last
        memory format on channels-last rows. ``kind``: "act" or "kernel"."""
        if channels_last:
            a = np.moveaxis(a, -1, 1) if kind == "act" else np.moveaxis(a, (-1, -2), (0, 1))
        torch = self.torch
        t = torch.from_numpy(np.array(a, np.float32, order="C")).to(self.device, getattr(torch, dtype))
        return t.contiguous(memory_format=self.memory_format(t.ndim, channels_last)).requires_grad_(grad)

    def runner(self, case: Case, mode: str, operands: list, ct: Any) -> Callable:
        f, torch = torch_fn(case), self.torch
        if mode == "fwd":
            def forward():
                with torch.no_grad():
                    return (f(*operands),)
            return forward
        def forward_backward():
            loss = torch.sum(f(*operands).float() * ct.float())
            return torch.autograd.grad(loss, operands)
        return forward_backward

    @staticmethod
    def to_numpy(outs: Sequence[Any], channels_last: bool) -> list[np.ndarray]:
        """Torch outputs ``(y,)`` or ``(dx[, dw])`` back in the row's JAX layout."""
        arrays = [t.detach().float().cpu().numpy() for t in outs]
        if not channels_last:
            return arrays
        return [np.moveaxis(a, 1, -1) if i == 0 else np.moveaxis(a, (0, 1), (-1, -2))
                for i, a in enumerate(arrays)]
