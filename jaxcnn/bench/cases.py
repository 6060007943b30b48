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
from jaxcnn._shapes import conv_output_size, conv_transpose_output_size


@dataclasses.dataclass(frozen=True)
class Case:
    """One benchmarked layer. Convs: ``x (N, C, *S)``, ``w (O, C/g, *K)``; ``conv_transpose``:
    ``w (C, O/g, *K)`` (PyTorch); pooling: ``O = C``, ``kernel`` is the window."""

    name: str
    op: str                                   # conv | conv_transpose | max_pool | avg_pool
    batch: int
    channels: int
    out_channels: int
    spatial: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: int = 1
    padding: int = 0
    groups: int = 1
    cpu: tuple[int, tuple[int, ...]] | None = None   # (batch, spatial) on CPU; None: unchanged
    training: bool = False                    # a layer of one of the training models

    @property
    def n(self) -> int:
        return len(self.spatial)

    def sized(self, scale: str) -> "Case":
        """The case at ``scale``: ``full`` (GPU), ``cpu`` (its ``cpu`` sizes) or ``quick``."""
        if scale == "full":
            return self
        if scale == "cpu":
            batch, spatial = self.cpu or (self.batch, self.spatial)
            return dataclasses.replace(self, batch=batch, spatial=tuple(spatial))
        channels, out = min(self.channels, 8), min(self.out_channels, 8)
        groups = 1 if self.groups == 1 else min(channels, out)
        spatial = tuple(min(s, 10 if self.n < 3 else 6) for s in self.spatial)
        return dataclasses.replace(self, batch=2, channels=channels, out_channels=out,
                                   groups=groups, spatial=spatial)

    def out_spatial(self) -> tuple[int, ...]:
        if self.op == "conv_transpose":
            return tuple(conv_transpose_output_size(s, k, self.stride, 1, self.padding, self.padding, 0)
                         for s, k in zip(self.spatial, self.kernel))
        return tuple(conv_output_size(s, k, self.stride, 1, self.padding, self.padding)
                     for s, k in zip(self.spatial, self.kernel))

    def shapes(self, channels_last: bool) -> tuple[tuple[int, ...], tuple[int, ...] | None, tuple[int, ...]]:
        """``(x, w, y)`` shapes in the layout (``w`` None for pooling)."""
        def act(c, sizes):
            return (self.batch, *sizes, c) if channels_last else (self.batch, c, *sizes)
        x, y = act(self.channels, self.spatial), act(self.out_channels, self.out_spatial())
        if self.op in ("max_pool", "avg_pool"):
            return x, None, y
        w_out, w_in = ((self.out_channels, self.channels // self.groups) if self.op == "conv"
                       else (self.channels, self.out_channels // self.groups))
        w = (*self.kernel, w_in, w_out) if channels_last else (w_out, w_in, *self.kernel)
        return x, w, y


def _conv_case(name, c, o, s, k, stride=1, groups=1, batch=32, cpu=None, training=False, op="conv"):
    n = len(s)
    return Case(name, op, batch, c, o, tuple(s), (k,) * n, stride, k // 2 if op == "conv" else 1,
                groups, cpu, training)


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
    Case("maxpool3x3_s2", "max_pool", 32, 64, 64, (112, 112), (3, 3), 2, 1, cpu=(2, (112, 112))),
    Case("fashion_maxpool2", "max_pool", 128, 32, 32, (28, 28), (2, 2), 2, training=True),
    Case("mnist1d_maxpool2", "max_pool", 100, 64, 64, (40,), (2,), 2, training=True),
    Case("avgpool2x2", "avg_pool", 32, 64, 64, (56, 56), (2, 2), 2, cpu=(4, (56, 56))),
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
                       case.out_spatial())
    elif case.op == "conv_transpose":
        f = conv_flops(case.batch, case.out_channels, case.channels, case.groups, case.kernel,
                       case.spatial)
    else:
        return None
    return 3 * f if mode == "fwd+bwd" else f


def available(case: Case) -> str | None:
    """Why ``case`` cannot run in this jaxcnn (None if it can)."""
    name = "conv" if case.op == "conv" else case.op
    return None if hasattr(jaxcnn, name) else f"jaxcnn.{name} does not exist yet"


def describe(case: Case) -> str:
    """``2×64×56×56 → 64 k3`` (batch × channels × spatial → out channels, kernel, stride, groups)."""
    shape = "×".join(map(str, (case.batch, case.channels, *case.spatial)))
    if case.op in ("max_pool", "avg_pool"):
        text = f"{shape} {case.op.split('_')[0]} {case.kernel[0]}"
    else:
        text = f"{shape} → {case.out_channels} k{case.kernel[0]}"
    text += f" s{case.stride}" if case.stride > 1 else ""
    return text + (f" g{case.groups}" if case.groups > 1 else "")
