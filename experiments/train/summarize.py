"""Collect experiments/train/results/*/report.json (and the impl and clips analyses) into
results/summary.json and RESULTS.md. Usage: python experiments/train/summarize.py
"""
from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path

from jaxcnn import models, train

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"

def reports() -> list[dict]:
    found = []
    for path in sorted(RESULTS.glob("*/report.json")):
        report = json.loads(path.read_text())
        report["run"] = path.parent.name
        found.append(report)
    return found


def command(report: dict) -> str:
    """The ``jaxcnn train`` flags that reproduce the run: those that differ from the defaults."""
    config = report["config"]
    defaults = {**dataclasses.asdict(train.TrainConfig()), **train.DEFAULTS[config["dataset"]]}
    flags = [f"--dataset {config['dataset']}"]
    for name in ("model", "steps", "epochs", "batch_size", "optimizer", "lr", "schedule",
                 "weight_decay", "impl", "dtype", "augment", "channels_last", "micro_batches", "eval_every", "seed"):
        value = config.get(name)  # reports from before a flag lack it
        if name == "augment" and value != defaults["augment"]:
            flags.append(f"--augment {value}" if isinstance(value, str) else "--augment" if value else "--no-augment")
        elif name == "channels_last":  # the default layout is the platform's: name it either way
            if config["model"] in models.LAYOUT_MODELS:
                flags.append("--channels-last" if value else "--channels-first")
        elif name in ("model", "seed") or (value != defaults.get(name) and value is not None):
            flags.append(f"--{name.replace('_', '-')} {value}")
    return "jaxcnn train " + " ".join(flags)


def row(report: dict) -> str:
    return (f"| {report['run']} | {report['impl']} | {report['steps']} ({report['epochs']:.1f} epochs) | "
            f"**{100 * report['test_accuracy']:.2f} %** | {report['wall_time_s']:.0f} | "
            f"{report['cpu_time_s']:.0f} | {report['examples_per_s']:.0f} | `{command(report)}` |")


HEADER = ("| run | impl | steps | test accuracy | wall s | CPU s | examples/s | command |\n"
          "|---|---|---|---|---|---|---|---|")


def main() -> None:
    runs = reports()
    lines = ["# Training results", "",
             "Written by `experiments/train/summarize.py` from `results/*/report.json`. Every run: "
             "`jaxcnn train` on CPU (jax " + (runs[0]["jax"] if runs else "?") + "), float32, one "
             "jit-compiled train step. Each `results/<run>/` holds the report; the run's plots (training "
             "curves, the first conv layer's kernels, feature maps of one test example) are copied "
             "beside it by `collect.py` but not versioned: the run's command draws them again.", "",
             "**Timing.** The machine has 2 CPU cores (AMD EPYC, virtualised; its speed varies: "
             "a float32 matmul measured 76 to 150 GFLOP/s within one hour). The three MNIST-1D lax "
             "seeds ran on an otherwise idle machine (seed 0 shared it with a test run part of the "
             "time); the other runs shared it with other engineers' test suites (load average 5 to "
             "12), which inflates their wall times and examples/s by up to 2x. *CPU s* is the "
             "process's CPU time (all threads): on an idle 2-core machine the wall time lies "
             "between CPU s / 2 and CPU s. A fashion-cnn train step (batch 128) measured 267-273 ms "
             "on the idle machine later (8 epochs: ~17 min at that speed), so its 873 s below does "
             "not hold with margin.",
             ""]
    summary = {"runs": runs}
    for title, models in (("MNIST-1D (target: mean of 3 seeds >= 99.0 %, each <= 5 min on 2 cores)",
                           ("mnist1d-resnet", "mnist1d-cnn")),
                          ("Fashion-MNIST (targets: small CNN >= 92.5 % in <= 15 min; ResNet + augmentation >= 95 %)",
                           ("fashion-cnn", "fashion-resnet")),
                          ("Moving-item clips, 3D (40 classes: item x direction; chance 2.5 %)",
                           ("clips-cnn3d", "clips-frame2d"))):
        chosen = [r for r in runs if r["model"] in models]
        lines += [f"## {title}", "", HEADER] + [row(r) for r in chosen] + [""]
        recipes: dict[str, list[dict]] = {}  # the command without its seed: one recipe
        for r in chosen:
            recipes.setdefault(command(r).rsplit(" --seed ", 1)[0], []).append(r)
        for recipe, found in recipes.items():
            accuracies, seeds = [r["test_accuracy"] for r in found], len({r["seed"] for r in found})
            if len(accuracies) > 1:
                mean, spread = statistics.mean(accuracies), statistics.stdev(accuracies)
                summary.setdefault("recipes", {})[recipe] = {"runs": len(accuracies), "seeds": seeds,
                                                             "mean": mean, "stdev": spread}
                lines += [f"`{recipe}`: mean test accuracy **{100 * mean:.2f} %** "
                          f"(std {100 * spread:.2f}, {len(accuracies)} runs of {seeds} seeds).", ""]
    impl = RESULTS / "mnist1d-impl-curves.json"
    if impl.exists():
        result = json.loads(impl.read_text())
        summary["impl_curves"] = {k: v for k, v in result.items() if not k.startswith("loss_")}
        lines += ["## `--impl manual` vs `--impl lax` (MNIST-1D, first "
                  f"{result['steps']} steps; `experiments/train/compare_impls.py`)", "",
                  "| comparison | max relative loss difference | first step above 1e-5 |", "|---|---|---|"]
        for name, value in result["max_rel_loss_diff"].items():
            lines.append(f"| {name} | {value:.2e} | {result['first_step_rel_loss_diff_above_1e-5'][name]} |")
        lines += ["", f"Teacher-forced float32 gradients: max relative difference "
                  f"{result['teacher_forced_float32_max_rel_grad_diff']:.2e}; free-running float64: "
                  f"{result['free_running_float64_max_rel_grad_diff']:.2e}. Plot: "
                  "`results/mnist1d-impl-curves.png` (not versioned; `compare_impls.py` draws it).", ""]
    clips = RESULTS / "clips-breakdown.json"
    if clips.exists():
        result = json.loads(clips.read_text())
        summary["clips_breakdown"] = result
        lines += ["## Clips: item vs direction (`experiments/train/clips_breakdown.py`)", "",
                  "| model | test accuracy (40 classes) | item accuracy (10) | direction accuracy (4, chance 25 %) |",
                  "|---|---|---|---|"]
        lines += [f"| {name} | {100 * r['test_accuracy']:.2f} % | {100 * r['item_accuracy']:.2f} % | "
                  f"{100 * r['direction_accuracy']:.2f} % |" for name, r in result.items()] + [""]
    notes = ROOT / "NOTES.md"
    if notes.exists():
        lines += [notes.read_text().strip(), ""]
    (RESULTS / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (ROOT / "RESULTS.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
