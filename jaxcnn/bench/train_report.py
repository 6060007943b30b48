"""``jaxcnn bench --train``'s report: the header line, the per-model summary (jaxcnn's fastest
plain step over the fastest plain PyTorch step, eager or compiled; the same for micro-batched
steps; stock Flax NNX beside them), the table of every contender (plain and micro-batched
steps in separate columns, each with its first step apart from its steady-state median) and
the profile of the fastest jaxcnn step."""
from __future__ import annotations

import os
from typing import Any, Sequence

PROFILE_KINDS = ("conv forward", "conv backward", "pooling", "normalisation", "dropout", "dense",
                 "optimizer", "rest")


def label(family: str, micro_batches: int = 1) -> str:
    """A contender's name: its family (``"torch compiled channels_last"``) and ``×k``."""
    return family + (f" ×{micro_batches}" if micro_batches > 1 else "")


def split_label(name: str) -> tuple[str, int]:
    """``label``'s inverse: ``(family, micro_batches)``."""
    family, _, k = name.rpartition(" ×")
    return (family, int(k)) if family and k.isdigit() else (name, 1)


def side(name: str) -> str:
    """Whose a contender is: "jaxcnn", "jax" (jaxcnn's network in plain lax), "flax" or "torch"."""
    return name.split(" ", 1)[0]


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}"


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def header(info: dict[str, Any], peak: dict[str, float], native: dict[str, Any] | None = None) -> str:
    """One line: the device, its CPU and vector ISA, the float32 matmul speed measured in this
    run, the frameworks' versions and threads, the OpenMP wait policy, glibc's tunables (huge
    pages for large allocations: ``jaxcnn._hugepages``), the native kernels."""
    cpu = info.get("cpu") or "unknown CPU"
    cores = f", {info['cpu_cores']} cores" if info.get("cpu_cores") else ""
    torch = (f"; torch {info['torch']} ({info.get('torch_threads')} threads)" if info.get("torch")
             else "; torch not installed")
    kernels = "" if native is None else (
        f"; native kernels {'loaded' if native['available'] else 'unavailable (XLA forms)'} in "
        f"{native['seconds']:.2g} s, before timing")
    return (f"device: {info.get('device_kind', '?')} ({info.get('platform', '?')}), {cpu}{cores}, "
            f"vector ISA {info.get('vector_isa', 'unknown')}; float32 {peak['n']}² matmul "
            f"{peak['gflops']:.1f} GFLOP/s (XLA, this run); jax {info.get('jax')}{torch}; "
            f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}; "
            f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', 'unset')} (every contender's process){kernels}")


def _families(row: dict[str, Any]) -> dict[str, dict[int, float]]:
    """``{family: {micro_batches: ms}}`` of a row's timed contenders."""
    out: dict[str, dict[int, float]] = {}
    for name, ms in row["ms"].items():
        family, k = split_label(name)
        out.setdefault(family, {})[k] = ms
    return out


STEPS_HEAD = ("| model | batch | contender | plain ms | plain first step s | micro-batched ms (k) "
              "| micro-batched first step s | plain / fastest PyTorch plain | temp MiB | note |")


def steps_table(rows: Sequence[dict[str, Any]]) -> str:
    """One line per contender family and model, fastest plain step first: the plain step's
    median and first step, the fastest micro-batched variant's (its ``k``), the plain step over
    the fastest plain PyTorch step, XLA's temp memory of the plain step; then a line per
    contender that was skipped or failed, with the reason."""
    lines = [STEPS_HEAD, "|" + "---|" * 10]
    for r in rows:
        best_torch = r["ms"].get(r.get("fastest_torch") or "")
        first = r.get("first_step_s", {})
        families = _families(r)
        for family, by_k in sorted(families.items(), key=lambda kv: kv[1].get(1, min(kv[1].values()))):
            plain = by_k.get(1)
            micro = {k: v for k, v in by_k.items() if k > 1}
            k = min(micro, key=micro.get) if micro else None
            micro_cell = "—" if k is None else f"{micro[k]:.3g} (×{k})"
            mem = r["temp_bytes"].get(family)
            lines.append(
                f"| {r['model']} | {r['batch']} | {family} | {_num(plain)} | {_num(first.get(family))} | "
                f"{micro_cell} | {_num(first.get(label(family, k))) if k else '—'} | "
                f"{_ratio(plain / best_torch) if plain and best_torch else '—'} | "
                f"{'—' if mem is None else f'{mem / 2 ** 20:.3g}'} |  |")
        for kind, reasons in (("skipped", r.get("skipped", {})), ("failed", r["failures"])):
            for name, reason in reasons.items():
                text = reason.replace("|", "/").replace("\n", " ")
                lines.append(f"| {r['model']} | {r['batch']} | {name} | — | — | — | — | — | — | "
                             f"{kind}: {text} |")
    return "\n".join(lines)


def summary_table(rows: Sequence[dict[str, Any]]) -> str:
    """One line per model: the fastest jaxcnn and PyTorch plain steps and their ratio (the
    number the acceptance reads), the same for micro-batched steps, stock Flax NNX's step and
    jaxcnn's fastest plain step over it."""
    lines = ["| model | batch | fastest jaxcnn plain | fastest PyTorch plain (eager or compiled) "
             "| jaxcnn / PyTorch plain | fastest jaxcnn micro-batched | fastest PyTorch micro-batched "
             "| jaxcnn / PyTorch micro-batched | stock Flax NNX | jaxcnn plain / Flax |",
             "|" + "---|" * 10]

    def cell(r: dict[str, Any], key: str) -> str:
        name = r.get(key)
        return "—" if not name else f"{r['ms'][name]:.3g} ms ({name})"

    for r in rows:
        lines.append(f"| {r['model']} | {r['batch']} | {cell(r, 'fastest_jaxcnn')} | {cell(r, 'fastest_torch')} | "
                     f"{_ratio(r.get('ratio'))} | {cell(r, 'fastest_jaxcnn_micro')} | "
                     f"{cell(r, 'fastest_torch_micro')} | {_ratio(r.get('ratio_micro'))} | "
                     f"{cell(r, 'fastest_flax')} | {_ratio(r.get('ratio_flax'))} |")
    return "\n".join(lines)


def profile_table(rows: Sequence[dict[str, Any]]) -> str:
    """XLA's per-op trace of the fastest jaxcnn step, ms per step by category, and the op
    census of its program."""
    lines = ["| model | contender | " + " | ".join(PROFILE_KINDS) + " | convolutions | native | dots | loops |",
             "|---|---|" + "---|" * (len(PROFILE_KINDS) + 4)]
    for r in rows:
        if "profile" in r:
            p, c = r["profile"]["ms"], r["profile"]["census"]
            cells = " | ".join("—" if k not in p else f"{p[k]:.3g}" for k in PROFILE_KINDS)
            lines.append(f"| {r['model']} | {r['fastest_jaxcnn']} | {cells} | {c['convolution']} | "
                         f"{c.get('native', '—')} | {c['dot']} | {c['while']} |")
    return "\n".join(lines)


def markdown(rows: Sequence[dict[str, Any]], header_line: str | None = None) -> str:
    """The whole report: the header line, the summary, the contenders, the profile."""
    parts = [] if header_line is None else [header_line, ""]
    parts += ["Summary: each side's fastest step (ms, median after warm-up); the ratios divide "
              "jaxcnn's by PyTorch's.", "", summary_table(rows), "",
              "Every contender: plain steps and micro-batched steps (the fastest k) apart; first "
              "step = compilation (jit, or torch.compile) and the first call, not in the median.", "",
              steps_table(rows), "",
              "Profile of the fastest jaxcnn step (XLA's per-op trace, ms per step by category; op "
              "census of the program):", "", profile_table(rows)]
    return "\n".join(parts) + "\n"


__all__ = ["PROFILE_KINDS", "STEPS_HEAD", "label", "split_label", "side", "header", "steps_table", "summary_table", "profile_table",
           "markdown"]
