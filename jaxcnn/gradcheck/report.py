"""The gradient checker's report: one ``Comparison`` per argument and order, a ``Report``
of them (a table, a dict), and ``GradcheckError`` carrying the table.

Error of ``a`` against ``b``: ``max|a − b|`` and relative ``max|a − b| / max(max|b|, tiny)``.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

TINY = float(np.finfo(np.float64).tiny)


@dataclasses.dataclass(frozen=True)
class Comparison:
    """One row: an argument's derivative (order 1 or 2), or the output itself (order 0),
    against autodiff of the reference (no reference: against f's own JVP) and against finite
    differences (None: not compared)."""

    name: str
    order: int
    method: str
    abs_autodiff: float | None
    rel_autodiff: float | None
    abs_fd: float | None
    rel_fd: float | None
    rtol: float
    fd_rtol: float | None

    @property
    def ok(self) -> bool:   # NaN compares False: a NaN error fails
        return bool((self.rel_autodiff is None or self.rel_autodiff <= self.rtol)
                    and (self.rel_fd is None or self.rel_fd <= self.fd_rtol))

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "ok": self.ok}


class GradcheckError(AssertionError):
    """A gradient check failed; the message is the report's table."""


@dataclasses.dataclass(frozen=True)
class Report:
    """Per argument name (``f``'s positional parameter names) and order, the errors of ``f``'s
    VJP against autodiff of the reference and against finite differences."""

    function: str
    precision: str
    rows: tuple[Comparison, ...]

    @property
    def ok(self) -> bool:
        return all(row.ok for row in self.rows)

    def row(self, name: str, order: int = 1) -> Comparison:
        for row in self.rows:
            if row.name == name and row.order == order:
                return row
        raise KeyError(f"{name!r} (order {order}); rows: {[(r.name, r.order) for r in self.rows]}")

    def __getitem__(self, name: str) -> Comparison:
        return self.row(name, 0 if name == "output" else 1)

    def table(self) -> str:
        head = ("order", "arg", "method", "|Δ| autodiff", "rel autodiff", "|Δ| fin.diff",
                "rel fin.diff", "ok")
        body = [(str(r.order), r.name, r.method, _num(r.abs_autodiff), _num(r.rel_autodiff),
                 _num(r.abs_fd), _num(r.rel_fd), "ok" if r.ok else "FAIL") for r in self.rows]
        widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]
        lines = [f"gradcheck {self.function}: {self.precision}: {'ok' if self.ok else 'FAILED'}"]
        lines += ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
                  for line in [head, *body]]
        rtols = sorted({r.rtol for r in self.rows})
        fd_rtols = sorted({r.fd_rtol for r in self.rows if r.fd_rtol is not None})
        lines.append(f"relative tolerances: autodiff {', '.join(map(_num, rtols))}"
                     + (f", fin.diff {', '.join(map(_num, fd_rtols))}" if fd_rtols else ""))
        return "\n".join(lines)

    __str__ = table

    def as_dict(self) -> dict[str, Any]:
        return {"function": self.function, "precision": self.precision, "ok": self.ok,
                "rows": [row.as_dict() for row in self.rows]}


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.1e}"


def max_errors(a: Any, b: Any) -> tuple[float, float]:
    """``(max|a − b|, max|a − b| / max(max|b|, tiny))`` in float64; (0, 0) when empty."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.size == 0:
        return 0.0, 0.0
    err = float(np.max(np.abs(a - b)))
    return err, err / max(float(np.max(np.abs(b))), TINY)
