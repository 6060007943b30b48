"""``jaxcnn bench``'s report: the markdown table, the device (its CPU's vector ISA), the
machine's load."""
from __future__ import annotations

import os
import platform
from typing import Any, Sequence

import jax


def _num(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}g}"


def _mib(value: int | None) -> str:
    return "—" if value is None else f"{value / 2 ** 20:.3g}"


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """One line per row: ms per contender (medians), ratios to ``jax`` (``paired_ratio``: the
    median of per-round ratios, where the row has it), ours' GFLOP/s (% of peak), and
    each JAX contender's compiled temp memory (MiB) with ours' ratio to ``jax``'s."""
    head = ("| case | shape | dtype | layout | mode | jax ms | lax ms | manual ms | torch ms "
            "| lax/jax | manual/jax | torch/jax | lax GFLOP/s (% peak) "
            "| jax MiB | lax MiB | manual MiB | lax/jax mem | manual/jax mem |")
    lines = [head, "|" + "---|" * 18]
    for r in rows:
        ours = "jaxcnn" if "jaxcnn" in r["ms"] else "lax"
        g, frac = r["gflops"].get(ours), r["peak_fraction"].get(ours)
        perf = "—" if g is None else f"{g:.3g} ({100 * frac:.2g}%)"
        layout = "NC…" if r["layout"] == "channels_first" else "N…C"
        mem, mem_ratio = r.get("temp_bytes", {}), r.get("temp_ratio", {})
        ratio = r.get("paired_ratio") or r["ratio"]
        lines.append(
            f"| {r['case']} | {r['shape']} | {r['dtype']} | {layout} | {r['mode']} | "
            f"{_num(r['ms'].get('jax'))} | {_num(r['ms'].get(ours))} | {_num(r['ms'].get('manual'))} | "
            f"{_num(r['ms'].get('torch'))} | {_num(ratio.get(ours), 2)} | "
            f"{_num(ratio.get('manual'), 2)} | {_num(ratio.get('torch'), 2)} | {perf} | "
            f"{_mib(mem.get('jax'))} | {_mib(mem.get(ours))} | {_mib(mem.get('manual'))} | "
            f"{_num(mem_ratio.get(ours), 2)} | {_num(mem_ratio.get('manual'), 2)} |")
    return "\n".join(lines)


def rich_table(rows: Sequence[dict[str, Any]]) -> Any:
    """``markdown_table``'s columns and rows as a ``rich`` table (the terminal's view of the
    same text: one source for the columns). Needs rich (the ``train`` extra)."""
    from rich.table import Table
    head, _, *body = markdown_table(rows).splitlines()
    cells = lambda line: [cell.strip() for cell in line.strip().strip("|").split("|")]
    table = Table(*cells(head), title="jaxcnn bench")
    for line in body:
        table.add_row(*cells(line))
    return table


def print_rich_table(rows: Sequence[dict[str, Any]], stream: Any, width: int | None = None) -> bool:
    """On a terminal, the whole table again at the end, drawn by rich (the lines printed as the
    rows came stay markdown, for logs and pipes); ``width``: the terminal's, unless given.
    Whether it drew one."""
    if not rows or not stream.isatty():
        return False
    from rich.console import Console
    Console(file=stream, width=width).print(rich_table(rows))
    return True


def device_info() -> dict[str, Any]:
    device = jax.devices()[0]
    info = {"platform": device.platform, "device_kind": device.device_kind,
            "jax": jax.__version__, "python": platform.python_version(), "cpu": platform.processor()}
    try:
        with open("/proc/cpuinfo") as f:
            models = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        info["cpu"], info["cpu_cores"] = models[0], len(models)
    except (OSError, IndexError):
        pass
    info["cpu_flags_source"], flags = cpu_flags()
    info["vector_isa"] = vector_isa(flags)
    try:
        import torch
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["torch_device"] = "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        info["torch"] = None
    return info


# The widest vector extension first; "flag" as /proc/cpuinfo spells it (x86 "flags", Arm "Features").
_ISAS = (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"), ("sse4_2", "SSE4.2"),
         ("sve2", "SVE2"), ("sve", "SVE"), ("asimd", "NEON"), ("neon", "NEON"))
_EXTRAS = (("fma", "FMA"), ("avx512_vnni", "VNNI"), ("avx512_bf16", "BF16"), ("amx_tile", "AMX"))
# numpy's names for the same features (``__cpu_features__``), where they differ
_NUMPY_NAMES = {"fma3": "fma", "sse42": "sse4_2", "avx512vnni": "avx512_vnni", "avx512bf16": "avx512_bf16",
                "amx_tile": "amx_tile"}


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> tuple[str, set[str]]:
    """The CPU's feature flags and where they were read: ``cpuinfo``'s first ``flags`` (x86)
    or ``Features`` (Arm) line, else numpy's runtime dispatch table, else none."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return "/proc/cpuinfo", set(value.split())
    except OSError:
        pass
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as features
        except ImportError:
            return "none", set()
    names = {k.lower() for k, v in features.items() if v}
    return "numpy", {_NUMPY_NAMES.get(n, n) for n in names}


def vector_isa(flags: set[str]) -> str:
    """The widest vector extension in ``flags`` and the ones that speed up float math beside it:
    "AVX-512 + VNNI + BF16", "AVX2 + FMA", "NEON"; "unknown" where none is known."""
    main = next((name for flag, name in _ISAS if flag in flags), None)
    if main is None:
        return "unknown"
    extras = [name for flag, name in _EXTRAS if flag in flags and not (flag == "fma" and main == "AVX-512")]
    return " + ".join([main, *extras])


def load_average() -> list[float] | None:
    """1, 5 and 15-minute load averages: how shared the machine was during the run."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None
