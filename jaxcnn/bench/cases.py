"""The ``jaxcnn bench`` suite: the benchmarked layers (``Case``), their shapes at each scale,
their FLOP counts and their one-line descriptions.

``jaxcnn.bench`` re-exports every name here.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import math
from typing import Sequence

import jaxcnn
from jaxcnn._cases import Case as OpCase


@dataclasses.dataclass(frozen=True, kw_only=True)
class Case(OpCase):
    """One benchmarked layer: a ``jaxcnn._cases.Case`` with a name. Convs: ``x (N, C, *S)``,
    ``w (O, C/g, *K)``; ``conv_transpose``: ``w (C, O/g, *K)`` (PyTorch); pooling: ``O = C``,
    ``kernel`` is the window."""

    name: str
    cpu: tuple[int, tuple[int, ...]] | None = None   # (batch, sizes) on CPU; None: unchanged
    training: bool = False                    # a layer of one of the training models

    def sized(self, scale: str) -> "Case":
        """The case at ``scale``: ``full`` (GPU), ``cpu`` (its ``cpu`` sizes) or ``quick``."""
        if scale == "full":
            return self
        if scale == "cpu":
            batch, sizes = self.cpu or (self.batch, self.sizes)
            return self.replace(batch=batch, sizes=tuple(sizes))
        channels, out = min(self.channels, 8), min(self.out_channels, 8)
        groups = 1 if self.groups == 1 else min(channels, out)
        sizes = tuple(min(s, 10 if self.n < 3 else 6) for s in self.sizes)
        return self.replace(batch=2, channels=channels, out_channels=out, groups=groups,
                            sizes=sizes)

    def shapes(self, channels_last: bool) -> tuple[tuple[int, ...], tuple[int, ...] | None, tuple[int, ...]]:
        """``(x, w, y)`` shapes in the layout (``w`` None for pooling)."""
        case = self.replace(channels_last=channels_last)
        return case.x_shape(), case.w_shape(), case.y_shape()


def _conv_case(name, c, o, s, k, stride=1, groups=1, batch=32, cpu=None, training=False, op="conv"):
    return Case(name=name, op=op, batch=batch, channels=c, out_channels=o, sizes=tuple(s),
                kernel=(k,) * len(s), stride=stride, padding=k // 2 if op == "conv" else 1,
                groups=groups, cpu=cpu, training=training)


def _pool_case(name, op, batch, c, s, window, stride, padding=0, cpu=None, training=False):
    return Case(name=name, op=op, batch=batch, channels=c, out_channels=c, sizes=tuple(s),
                kernel=(window,) * len(s), stride=stride, padding=padding, cpu=cpu,
                training=training)


CASES: tuple[Case, ...] = (
    _conv_case("resnet3x3_64", 64, 64, (56, 56), 3, cpu=(2, (56, 56))),
    _conv_case("resnet3x3_256", 256, 256, (14, 14), 3, cpu=(2, (14, 14))),
    _conv_case("stem7x7_s2", 3, 64, (224, 224), 7, stride=2, cpu=(2, (112, 112))),
    _conv_case("depthwise3x3", 256, 256, (56, 56), 3, groups=256, cpu=(2, (56, 56))),
    _conv_case("conv1d_k7", 64, 64, (1024,), 7, cpu=(8, (1024,))),
    _conv_case("conv3d_3x3x3", 32, 32, (16, 56, 56), 3, batch=8, cpu=(1, (8, 28, 28))),
    _conv_case("mnist5x5", 1, 32, (28, 28), 5, batch=128, cpu=(32, (28, 28))),
    # The layers the training models run (jaxcnn train): the same sizes on every device.
    _conv_case("mnist1d_k3", 64, 64, (40,), 3, batch=100, training=True),
    _conv_case("mnist1d_k5", 64, 64, (40,), 5, batch=100, training=True),
    _conv_case("fashion_conv1", 1, 32, (28, 28), 3, batch=128, training=True),
    _conv_case("fashion_conv2", 32, 64, (14, 14), 3, batch=128, training=True),
    _conv_case("clip3d_conv2", 8, 16, (8, 32, 32), 3, batch=16, training=True),
    # conv_transpose (PyTorch's k=4, s=2, p=1 upsampling): output = 2 × input.
    _conv_case("transpose2d_k4s2", 64, 32, (28, 28), 4, stride=2, op="conv_transpose", cpu=(4, (28, 28))),
    _conv_case("transpose1d_k4s2", 64, 64, (256,), 4, stride=2, op="conv_transpose", cpu=(8, (256,))),
    _pool_case("maxpool3x3_s2", "max_pool", 32, 64, (112, 112), 3, 2, 1, cpu=(2, (112, 112))),
    _pool_case("fashion_maxpool2", "max_pool", 128, 32, (28, 28), 2, 2, training=True),
    _pool_case("mnist1d_maxpool2", "max_pool", 100, 64, (40,), 2, 2, training=True),
    _pool_case("avgpool2x2", "avg_pool", 32, 64, (56, 56), 2, 2, cpu=(4, (56, 56))),
)


# --quick (a CI smoke run of the whole harness) runs one conv and one pooling case.
QUICK_CASES = ("resnet3x3_64", "maxpool3x3_s2")


def select_cases(patterns: str | None, cases: Sequence[Case] = CASES) -> list[Case]:
    """Cases whose name matches one of the comma-separated ``fnmatch`` patterns (or contains
    it); ``training`` selects the training layers; None selects all."""
    if not patterns:
        return list(cases)
    wanted = [p.strip() for p in patterns.split(",") if p.strip()]
    def hit(case, p):
        return (p == "training" and case.training) or p in case.name or fnmatch.fnmatch(case.name, p)
    return [c for c in cases if any(hit(c, p) for p in wanted)]


def conv_flops(batch: int, channels: int, out_channels: int, groups: int,
               kernel: Sequence[int], out_spatial: Sequence[int]) -> int:
    """Forward cost of a convolution: ``2·N·O·(C/g)·∏K·∏S_out`` (one multiply-add = 2)."""
    return 2 * batch * out_channels * (channels // groups) * math.prod(kernel) * math.prod(out_spatial)


def case_flops(case: Case, mode: str) -> int | None:
    """FLOPs of ``case`` in ``mode`` (×3 for fwd+bwd); None for pooling (no multiply-adds).
    ``conv_transpose`` is a conv from its output back to its input: ``∏S`` of the input."""
    if case.op == "conv":
        f = conv_flops(case.batch, case.channels, case.out_channels, case.groups, case.kernel,
                       case.out_sizes())
    elif case.op == "conv_transpose":
        f = conv_flops(case.batch, case.out_channels, case.channels, case.groups, case.kernel,
                       case.sizes)
    else:
        return None
    return 3 * f if mode == "fwd+bwd" else f


def available(case: Case) -> str | None:
    """Why ``case`` cannot run in this jaxcnn (None if it can)."""
    name = "conv" if case.op == "conv" else case.op
    return None if hasattr(jaxcnn, name) else f"jaxcnn.{name} does not exist yet"


def describe(case: Case) -> str:
    """``2×64×56×56 → 64 k3`` (batch × channels × spatial → out channels, kernel, stride, groups)."""
    shape = "×".join(map(str, (case.batch, case.channels, *case.sizes)))
    if case.op in ("max_pool", "avg_pool"):
        text = f"{shape} {case.op.split('_')[0]} {case.kernel[0]}"
    else:
        text = f"{shape} → {case.out_channels} k{case.kernel[0]}"
    text += f" s{case.stride}" if case.stride > 1 else ""
    return text + (f" g{case.groups}" if case.groups > 1 else "")
