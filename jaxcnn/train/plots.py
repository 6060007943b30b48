"""PNG plots of a training run (matplotlib, Agg: no display needed, no global backend set).

- ``training_curves.png``: loss and accuracy per step (train, with a moving average) and per
  epoch (train mean, test), and the learning rate.
- ``kernels.png``: the learned kernels of the first convolution, one panel per kernel.
- ``feature_maps_<i>.png``: the feature maps of one test example at conv layer ``i``, one panel
  per kernel ("one kernel, one map"). Frames of a clip (or of ``PerFrame``) sit side by side.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np
from matplotlib.figure import Figure

from jaxcnn import nn


def read_metrics(path: str | Path) -> tuple[list[dict], list[dict]]:
    """The ``(train, eval)`` records of a ``metrics.jsonl``."""
    records = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return [r for r in records if r["kind"] == "train"], [r for r in records if r["kind"] == "eval"]


def _moving_average(values: np.ndarray, width: int) -> np.ndarray:
    width = max(1, min(width, len(values)))
    return np.convolve(values, np.ones(width) / width, mode="valid")


def _per_epoch(train: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    epochs = np.array([r["epoch"] for r in train])
    values = np.array([r[key] for r in train])
    done = np.unique(epochs)
    return done + 1, np.array([values[epochs == e].mean() for e in done])


def training_curves(metrics_path: str | Path, out: str | Path) -> Path:
    """Loss, accuracy and learning rate against steps, with per-epoch means and test points."""
    train, evals = read_metrics(metrics_path)
    steps = np.array([r["step"] for r in train])
    steps_per_epoch = max(1, int(round(np.max(steps) / max(train[-1]["epoch"] + 1, 1)))) if train else 1
    fig = Figure(figsize=(15, 4.2), layout="constrained")
    axes = fig.subplots(1, 3)
    for ax, key, test_key in ((axes[0], "loss", "test_loss"), (axes[1], "accuracy", "test_accuracy")):
        values = np.array([r[key] for r in train])
        width = max(1, len(values) // 100)
        ax.plot(steps, values, lw=0.5, alpha=0.3, color="C0", label=f"train {key} per step")
        smooth = _moving_average(values, width)
        ax.plot(steps[width - 1:], smooth, color="C0", label=f"moving average ({width} steps)")
        epochs, means = _per_epoch(train, key)
        ax.plot(epochs * steps_per_epoch, means, "o-", ms=2, color="C1", label=f"train {key} per epoch")
        if evals:
            ax.plot([r["step"] for r in evals], [r[test_key] for r in evals], "s-", ms=3,
                    color="C3", label=f"test {key}")
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_yscale("log")
    if evals:
        best = max(r["test_accuracy"] for r in evals)
        axes[1].set_ylim(max(0.0, min(0.5, best - 0.3)), 1.0)
        axes[1].set_title(f"final test accuracy {evals[-1]['test_accuracy']:.4f}")
    axes[2].plot(steps, [r["lr"] for r in train])
    axes[2].set_xlabel("step")
    axes[2].set_ylabel("learning rate")
    axes[2].grid(alpha=0.3)
    fig.savefig(out, dpi=110)
    return Path(out)


def first_conv_kernel(params: Any) -> np.ndarray | None:
    """The weight of the first convolution in ``params``: the first ``"w"`` of 3+ dims."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if getattr(path[-1], "key", None) == "w" and leaf.ndim >= 3:
            return np.asarray(leaf, np.float32)
    return None


def _grid(count: int, width: int = 8) -> tuple[int, int]:
    cols = min(count, width)
    return math.ceil(count / cols), cols


def _panel(ax: Any, values: np.ndarray, cmap: str, symmetric: bool) -> None:
    """One kernel or map: a line (1D), an image (2D; 3D arrays tiled as a film strip)."""
    if values.ndim == 1:
        ax.plot(values, lw=1)
        ax.axhline(0, color="gray", lw=0.5)
        ax.set_xticks([])
        ax.tick_params(labelsize=6)
        return
    if values.ndim == 3:  # (T, H, W): frames side by side, a one-pixel gap between
        gap = np.full((values.shape[1], 1), np.nan)
        values = np.concatenate([c for frame in values for c in (frame, gap)][:-1], axis=1)
    limit = np.nanmax(np.abs(values)) or 1.0
    ax.imshow(values, cmap=cmap, vmin=-limit if symmetric else None, vmax=limit if symmetric else None,
              interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_panels(panels: Sequence[np.ndarray], titles: Sequence[str], title: str, out: str | Path,
                *, cmap: str = "RdBu_r", symmetric: bool = True, width: int = 8) -> Path:
    """A grid with one panel per array (1D lines, 2D images, 3D film strips)."""
    strip = max((p.shape[0] if p.ndim == 3 else 1) for p in panels)
    rows, cols = _grid(len(panels), max(1, width // max(1, strip // 2)))  # strips are wide
    height = 1.7 * rows + 0.6
    fig = Figure(figsize=(min(2.0 * cols * (1 + 0.5 * (strip - 1)), 40), height))
    # A fixed grid: a constrained layout costs seconds for a figure of 64 panels.
    axes = fig.subplots(rows, cols, squeeze=False, gridspec_kw=dict(
        left=0.04, right=0.98, bottom=0.02, top=1 - 0.6 / height, wspace=0.35, hspace=0.45)).ravel()
    for ax, values, panel_title in zip(axes, panels, titles):
        _panel(ax, values, cmap, symmetric)
        ax.set_title(panel_title, fontsize=7)
    for ax in axes[len(panels):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.savefig(out, dpi=100)
    return Path(out)


def kernels(params: Any, out: str | Path) -> Path | None:
    """The first conv's kernels, ``w: (O, C, *K)``: one panel per output channel (input
    channel 0 when there are several)."""
    w = first_conv_kernel(params)
    if w is None:
        return None
    note = f", input channel 0 of {w.shape[1]}" if w.shape[1] > 1 else ""
    return plot_panels([w[o, 0] for o in range(w.shape[0])], [f"kernel {o}" for o in range(w.shape[0])],
                       f"first conv layer: {w.shape[0]} learned kernels of shape {w.shape[2:]}{note}", out)


def feature_maps(model: nn.Layer, params: Any, x: np.ndarray, out_dir: str | Path,
                 *, label: str = "") -> list[Path]:
    """One PNG per conv layer: the maps of the single example ``x: (1, C, *S)``, one panel per
    kernel. ``PerFrame`` maps ``(T, C, *S)`` show their frames side by side."""
    _, maps = model.trace(params, x)
    paths = []
    for i, (name, fmap) in enumerate(maps):
        fmap = np.asarray(fmap, np.float32)
        frames = fmap.shape[0]
        panels = [np.asarray(x[0, 0], np.float32)]
        panels += [fmap[0, c] if frames == 1 else fmap[:, c] for c in range(fmap.shape[1])]
        title = (f"conv layer {i} ({name}){' ' + label if label else ''}: {fmap.shape[1]} maps of shape {fmap.shape[2:]}"
                 + (f", {frames} frames" if frames > 1 else "") + "; first panel: the input")
        titles = ["input (channel 0)"] + [f"map {c}" for c in range(fmap.shape[1])]
        paths.append(plot_panels(panels, titles, title, Path(out_dir) / f"feature_maps_{i:02d}.png",
                                 cmap="viridis", symmetric=False))
    return paths


def write_all(workdir: str | Path, model: nn.Layer, params: Any, dataset: Any,
              metrics_path: str | Path, *, example: int = 0) -> list[str]:
    """Every plot of a finished run into ``workdir``; returns the file names."""
    workdir = Path(workdir)
    paths = [training_curves(metrics_path, workdir / "training_curves.png"),
             kernels(params, workdir / "kernels.png")]
    x = np.asarray(dataset.x_test[example:example + 1], np.float32)
    label = f"(test example {example}, label {int(dataset.y_test[example])})"
    paths += feature_maps(model, params, x, workdir, label=label)
    return [p.name for p in paths if p is not None]
