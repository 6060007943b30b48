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


# ----------------------------------------------------------------------------- check_modes' report

EXPECTED = {"reference": "reference's autodiff", "finite": "finite differences",
            "consistency": "⟨Ju, v⟩ from f's JVP", "batched": "per-example, stacked"}
LEGEND = ("error = max|got − expected| / max|expected| over the compared array: relative to the "
          "largest expected value, so it neither shrinks nor grows with the array's size; "
          "expected = the oracle (reference's autodiff, central finite differences, ⟨Ju, v⟩ from "
          "f's JVP, or the per-example results stacked), got = f's own derivative.")


@dataclasses.dataclass(frozen=True)
class ModeRow:
    """One check of one leaf: ``got`` (f's derivative) against ``expected`` (the oracle), the
    worst element's index and both values there, the relative error and its tolerance."""

    path: str
    order: int
    check: str
    abs_error: float
    rel_error: float
    worst: str
    expected: float
    got: float
    tolerance: float
    tolerance_origin: str

    @property
    def ok(self) -> bool:   # NaN compares False: a NaN error fails
        return bool(self.rel_error <= self.tolerance)

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "ok": self.ok}

    def sentence(self) -> str:
        oracle = next((v for k, v in EXPECTED.items() if k in self.check), "the oracle")
        return (f"{self.path} (order {self.order}): check '{self.check}' failed: worst element "
                f"{self.worst}: expected ({oracle}) {self.expected:.6e}, got (f's derivative) "
                f"{self.got:.6e}; error {self.rel_error:.2e} relative to max|expected| > "
                f"tolerance {self.tolerance:.1e} ({self.tolerance_origin})")


def compare(path: str, order: int, check: str, got: Any, expected: Any, index_name: Any,
            tolerance: float, origin: str) -> ModeRow:
    """A ``ModeRow`` for ``got`` against ``expected``; ``index_name(flat) -> str`` names the
    worst element (a NaN counts as the worst)."""
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    if got.size == 0:
        return ModeRow(path, order, check, 0.0, 0.0, "(empty)", 0.0, 0.0, tolerance, origin)
    diff = np.abs(got - expected).ravel()
    flat = int(np.argmax(np.where(np.isnan(diff), np.inf, diff)))
    abs_error, rel_error = max_errors(got, expected)
    if np.isnan(diff[flat]):
        abs_error = rel_error = float("nan")
    return ModeRow(path, order, check, abs_error, rel_error, index_name(flat),
                   float(expected.ravel()[flat]), float(got.ravel()[flat]), tolerance, origin)


@dataclasses.dataclass(frozen=True)
class ModeReport:
    """``check_modes``' result: per (order, leaf path, check) a ``ModeRow``; the modes ``f``
    cannot run, not applicable (``unavailable``: left to the default) or failed (``refused``:
    asked for in ``modes``); the tolerances with their origins. The status line of the table,
    ``ok`` and ``assert_grads`` agree: every row passes and no mode asked for was refused."""

    function: str
    precision: str
    oracle: str
    rows: tuple[ModeRow, ...]
    unavailable: tuple[tuple[str, str], ...] = ()
    tolerances: tuple[tuple[float, str], ...] = ()
    refused: tuple[tuple[str, str], ...] = ()

    @property
    def ok(self) -> bool:
        return all(row.ok for row in self.rows) and not self.refused

    def failed(self) -> list[ModeRow]:
        return [row for row in self.rows if not row.ok]

    def row(self, path: str, check: str, order: int = 1) -> ModeRow:
        for row in self.rows:
            if (row.path, row.check, row.order) == (path, check, order):
                return row
        raise KeyError(f"{path!r}, {check!r} (order {order}); rows: "
                       f"{[(r.path, r.check, r.order) for r in self.rows]}")

    def worst(self, *words: str) -> float | None:
        """The largest relative error over the rows whose check contains every word."""
        errors = [r.rel_error for r in self.rows if all(w in r.check for w in words)]
        return max(errors, key=lambda e: np.inf if np.isnan(e) else e) if errors else None

    def table(self) -> str:
        head = ("order", "leaf", "check", "error", "tolerance", "worst element",
                "expected (oracle)", "got (f's derivative)", "ok")
        body = [(str(r.order), r.path, r.check, _num(r.rel_error), _num(r.tolerance), r.worst,
                 f"{r.expected:.6e}", f"{r.got:.6e}", "ok" if r.ok else "FAIL") for r in self.rows]
        widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]
        lines = [f"gradcheck {self.function}: {self.precision}: {'ok' if self.ok else 'FAILED'}",
                 f"oracle: {self.oracle}"]
        lines += ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
                  for line in [head, *body]]
        lines += [f"not applicable: {where}: {why}" for where, why in self.unavailable]
        lines += [f"FAILED, asked for in modes but f cannot run it: {where}: {why}"
                  for where, why in self.refused]
        lines.append(LEGEND)
        lines += [f"tolerance {tol:.1e}: {origin}" for tol, origin in self.tolerances]
        return "\n".join(lines)

    __str__ = table

    def failure_message(self) -> str:
        lines = [row.sentence() for row in self.failed()]
        lines += [f"{where}: {why}: asked for in modes, which f cannot run (leave modes out "
                  f"for every mode f can run, or pass modes=('rev',))" for where, why in self.refused]
        return "\n".join(lines + ["", self.table()])

    def as_dict(self) -> dict[str, Any]:
        return {"function": self.function, "precision": self.precision, "oracle": self.oracle,
                "ok": self.ok, "unavailable": dict(self.unavailable),
                "refused": dict(self.refused),
                "rows": [row.as_dict() for row in self.rows]}
