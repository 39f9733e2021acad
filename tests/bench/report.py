"""Summaries (median, min–max), the printed table and the goals of the renewal benchmark."""
from __future__ import annotations

import dataclasses
import statistics
from typing import Any, Callable, Optional, Sequence

Number = float


def summary(values: Sequence[Number]) -> dict[str, Any]:
    """median, min, max and n of the values (None when there are none)."""
    if not values:
        return {"n": 0, "median": None, "min": None, "max": None}
    return {"n": len(values), "median": statistics.median(values), "min": min(values),
            "max": max(values)}


def cell(stats: dict[str, Any], fmt: str = "{:.2f}") -> str:
    """ "median [min–max]" of a summary."""
    if not stats["n"]:
        return "-"
    median, low, high = (fmt.format(stats[k]) for k in ("median", "min", "max"))
    return median if stats["n"] == 1 or low == high else f"{median} [{low}–{high}]"


@dataclasses.dataclass(frozen=True)
class Row:
    """One line of the table: a metric, then one summary per column."""

    label: str
    cells: list[str]


def table(title: str, columns: Sequence[str], rows: Sequence[Row]) -> str:
    """A plain-text table; cells are "median [min–max]"."""
    width = max(len(title), *(len(r.label) for r in rows))
    widths = [max(len(c), *(len(r.cells[i]) for r in rows)) for i, c in enumerate(columns)]
    lines = [f"{title:<{width}}  " + "  ".join(f"{c:<{w}}" for c, w in zip(columns, widths))]
    lines.append("-" * len(lines[0]))
    lines += [f"{r.label:<{width}}  " + "  ".join(f"{c:<{w}}" for c, w in zip(r.cells, widths))
              for r in rows]
    return "\n".join(line.rstrip() for line in lines)


@dataclasses.dataclass(frozen=True)
class Goal:
    """A target the benchmark holds (not a timed test)."""

    name: str
    target: str
    value: Optional[Number]
    passed: bool
    judged_on: str  # "max" (counts: every run must meet it) or "median" (timings)

    def as_json(self) -> dict[str, Any]:
        """For the JSON report."""
        return dataclasses.asdict(self)

    def line(self) -> str:
        """One printed line; missed goals start with GOAL MISSED."""
        shown = "n/a" if self.value is None else f"{self.value:.3g}"
        status = "ok         " if self.passed else "GOAL MISSED"
        return f"{status}  {self.name}: {self.judged_on} {shown} (goal {self.target})"


def goal(name: str, target: str, values: Sequence[Number], judged_on: str,
         check: Callable[[Number], bool]) -> Goal:
    """Judge the values' max (counts) or median (timings); no value at all is a miss."""
    stats = summary(values)
    value: Optional[Number] = stats[judged_on]
    return Goal(name, target, value, value is not None and check(value), judged_on)
