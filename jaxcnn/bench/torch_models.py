"""``jaxcnn bench --train``'s PyTorch contenders: every bench model as a PyTorch user writes it.

``build(name)`` is the model of ``jaxcnn.models`` as an ``nn.Sequential`` of ``nn.Conv*d``,
``nn.GroupNorm``, ``nn.ReLU``, ``nn.MaxPool*d`` / ``nn.AvgPool*d``, ``nn.Flatten``,
``nn.Dropout`` and ``nn.Linear`` (a ``Residual`` module for the basic blocks: the body plus
the identity or a strided 1x1 ``nn.Conv*d`` with a bias, as ``jaxcnn.nn.Residual``): the same
layers, the same parameter count, the same function from the same weights
(``load_jaxcnn_params`` copies a channels-first jaxcnn parameter tree into it).

``train_step`` is one optimizer step as a user writes it: the module moved with
``.to(memory_format=torch.channels_last)`` (``channels_last_3d`` for 3D; 1D has no such
format) and its batch alike, ``torch.compile(model, dynamic=False)`` (inductor on CPU) or
eager, ``nn.CrossEntropyLoss``, ``loss.backward()``, ``torch.optim.AdamW``,
``zero_grad(set_to_none=True)``; over ``k`` micro-batches, ``k`` backward passes into the
same gradients (each loss divided by ``k``), then one ``optimizer.step()``.

This module imports torch: ``jaxcnn.bench.train_step`` imports it only where torch is installed.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from jaxcnn.bench import model_params

MODELS = ("mnist1d-resnet", "fashion-cnn", "fashion-resnet", "clips-cnn3d")
_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_GAP = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}


class Residual(nn.Module):
    """``block(x) + shortcut(x)``, the shortcut the identity where it is None; the ReLU after
    the sum is the next layer (as in ``jaxcnn.models``)."""

    def __init__(self, block: nn.Module, shortcut: nn.Module | None = None) -> None:
        super().__init__()
        self.block = block
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x) + (x if self.shortcut is None else self.shortcut(x))


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels, eps=1e-5)


def _basic_block(n: int, c_in: int, c: int, stride: int) -> list[nn.Module]:
    conv = _CONV[n]
    body = nn.Sequential(conv(c_in, c, 3, stride, 1, bias=False), _norm(c), nn.ReLU(),
                         conv(c, c, 3, 1, 1, bias=False), _norm(c))
    shortcut = conv(c_in, c, 1, stride) if stride != 1 or c_in != c else None
    return [Residual(body, shortcut), nn.ReLU()]


def _gap(n: int) -> list[nn.Module]:
    return [_GAP[n](1), nn.Flatten()]


def build(name: str) -> nn.Sequential:
    """The bench model ``name`` as an ``nn.Sequential`` (channels first, float32, train mode)."""
    if name == "mnist1d-resnet":
        return nn.Sequential(
            nn.Conv1d(1, 64, 5, padding=2, bias=False), _norm(64), nn.ReLU(),
            *_basic_block(1, 64, 64, 1), *_basic_block(1, 64, 64, 2), *_basic_block(1, 64, 64, 2),
            nn.Flatten(), nn.Linear(64 * 10, 10))
    if name == "fashion-cnn":
        return nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), _norm(64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), _norm(128), nn.ReLU(),
            nn.Flatten(), nn.Dropout(0.3), nn.Linear(128 * 7 * 7, 10))
    if name == "fashion-resnet":
        return nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1, bias=False), _norm(32), nn.ReLU(),
            *_basic_block(2, 32, 32, 1), *_basic_block(2, 32, 64, 2), *_basic_block(2, 64, 128, 2),
            *_gap(2), nn.Linear(128, 10))
    if name == "clips-cnn3d":
        return nn.Sequential(
            nn.AvgPool3d((1, 2, 2)),
            nn.Conv3d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool3d((1, 2, 2)),
            nn.Conv3d(16, 32, 3, padding=1), _norm(32), nn.ReLU(), nn.MaxPool3d(2),
            nn.Conv3d(32, 64, 3, padding=1), _norm(64), nn.ReLU(),
            *_gap(3), nn.Linear(64, 40))
    raise ValueError(f"name: expected one of {MODELS}; got {name!r}")


def param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _torch_layers(module: nn.Module) -> list[nn.Module]:
    """The modules that own parameters, in registration order (a residual: block, shortcut)."""
    return [m for m in module.modules() if any(True for _ in m.parameters(recurse=False))]


def _copy(target: torch.Tensor, value: Any, what: str) -> None:
    value = torch.from_numpy(np.array(value))   # then in the module's dtype
    if tuple(value.shape) != tuple(target.shape):
        raise ValueError(f"params: expected {what} of shape {tuple(target.shape)}; got {tuple(value.shape)}")
    with torch.no_grad():
        target.copy_(value.to(target.dtype))


def load_jaxcnn_params(module: nn.Module, params: Any) -> nn.Module:
    """Copy a channels-first jaxcnn parameter tree (``models.build(name, channels_last=False).init``;
    a channels-last build's through ``models.channels_first_params``) into ``module``, layer by
    layer: conv kernels as they are, dense ``w: (F, O)`` transposed into ``nn.Linear``'s
    ``(O, F)``, GroupNorm's ``scale`` into ``weight``. Raises a ``ValueError`` naming ``params`` where the
    layers or their shapes differ."""
    for p, m, where in model_params.paired(params, _torch_layers(module)):
        if isinstance(m, nn.GroupNorm):
            _copy(m.weight, p["scale"], f"{where} scale")
            _copy(m.bias, p["bias"], f"{where} bias")
            continue
        if isinstance(m, nn.Linear):
            _copy(m.weight, np.asarray(p["w"]).T, f"{where} w")
        else:
            _copy(m.weight, p["w"], f"{where} w")
        model_params.check_bias(p, m.bias is not None, where)
        if m.bias is not None:
            _copy(m.bias, p["b"], f"{where} b")
    return module


def memory_format(ndim: int, channels_last: bool) -> torch.memory_format:
    """``channels_last`` (4D) or ``channels_last_3d`` (5D) where asked; 1D has none."""
    if not channels_last or ndim == 3:
        return torch.contiguous_format
    return torch.channels_last if ndim == 4 else torch.channels_last_3d


def module_for(name: str, params: Any, channels_last: bool, ndim: int) -> nn.Module:
    """``build(name)`` holding ``params`` (channels first), in the memory format, train mode."""
    module = load_jaxcnn_params(build(name), params)
    return module.to(memory_format=memory_format(ndim, channels_last)).train()


def train_step(name: str, params: Any, x: np.ndarray, y: np.ndarray, *, channels_last: bool,
               compiled: bool, micro_batches: int = 1, lr: float = 3e-3,
               weight_decay: float = 5e-2) -> Callable[[], torch.Tensor]:
    """One AdamW step of ``build(name)`` (trained in place, from ``params``) on ``(x, y)``, as
    a closure returning the loss (the mean over the batch, summed over the micro-batches).
    The batch is moved into the memory format once, outside the step, as a data loader's."""
    if micro_batches < 1 or len(x) % micro_batches:
        raise ValueError(f"micro_batches: expected a positive divisor of the batch {len(x)}; got {micro_batches}")
    model = module_for(name, params, channels_last, x.ndim)
    forward = torch.compile(model, dynamic=False) if compiled else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    xt = torch.from_numpy(np.ascontiguousarray(x, np.float32)).contiguous(
        memory_format=memory_format(x.ndim, channels_last))
    batches = list(zip(xt.chunk(micro_batches), torch.from_numpy(np.asarray(y, np.int64)).chunk(micro_batches)))

    def step() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        total = torch.zeros(())
        for xb, yb in batches:
            loss = loss_fn(forward(xb), yb) / micro_batches
            loss.backward()
            total += loss.detach()
        optimizer.step()
        return total
    return step


def loss_and_grads(module: nn.Module, x: np.ndarray, y: np.ndarray) -> tuple[float, list[np.ndarray]]:
    """The cross-entropy of ``module`` on ``(x, y)`` and its gradients in
    ``model_params.in_layer_order``'s order, each in the shape of the jaxcnn leaf it was
    copied from (dense weights transposed back)."""
    xt = torch.from_numpy(np.asarray(x)).to(next(module.parameters()).dtype)
    loss = nn.functional.cross_entropy(module(xt), torch.from_numpy(np.asarray(y, np.int64)))
    named = [(m, key, p) for m in _torch_layers(module) for key, p in m.named_parameters(recurse=False)]
    values = torch.autograd.grad(loss, [p for _, _, p in named])
    return float(loss.item()), [g.numpy().T if isinstance(m, nn.Linear) and key == "weight" else g.numpy()
                                for (m, key, _), g in zip(named, values)]


def reset_compiled() -> None:
    """Forget every ``torch.compile`` cache of this process (``torch._dynamo.reset``): each
    model's compiled contenders start from none, under dynamo's recompile limit."""
    torch._dynamo.reset()


@contextlib.contextmanager
def strict_compile() -> Iterator[None]:
    """Inside, a compiled module that hits dynamo's recompile limit raises instead of running
    eagerly from then on (``fail_on_recompile_limit_hit``, where this torch has it)."""
    config = torch._dynamo.config
    if not hasattr(config, "fail_on_recompile_limit_hit"):
        yield
        return
    with config.patch(fail_on_recompile_limit_hit=True):
        yield
