"""Summaries of repeated measurements: mean ± sample standard deviation, as llama-bench reports."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Stat:
    """Repeated measurements of one figure and their mean ± sample standard deviation."""

    mean: float
    stddev: float
    n: int
    values: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        """Summarise `values` (at least one); the stddev of a single value is 0."""
        if not values:
            raise ValueError("no measurements to summarise")
        vals = [float(v) for v in values]
        mean = math.fsum(vals) / len(vals)
        var = math.fsum((v - mean) ** 2 for v in vals) / (len(vals) - 1) if len(vals) > 1 else 0.0
        return cls(mean=mean, stddev=math.sqrt(var), n=len(vals), values=vals)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Stat:
        """The inverse of `to_dict` (raises KeyError/TypeError/ValueError on a bad dict)."""
        return cls(float(data["mean"]), float(data["stddev"]), int(data["n"]),
                   [float(v) for v in data.get("values", [])])

    def to_dict(self, digits: int = 4) -> dict[str, Any]:
        """A JSON-ready dict with rounded numbers."""
        out = asdict(self)
        out["mean"] = round(self.mean, digits)
        out["stddev"] = round(self.stddev, digits)
        out["values"] = [round(v, digits) for v in self.values]
        return out

    def format(self, digits: int = 1) -> str:
        """E.g. "112.4 ± 3.1" (just the mean for a single measurement)."""
        if self.n <= 1:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.stddev:.{digits}f}"


def median(values: Sequence[float]) -> float:
    """The median of `values` (at least one)."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[mid])
    return (ordered[mid - 1] + ordered[mid]) / 2


def ratio(new: float | None, old: float | None) -> float | None:
    """`new / old`, or None when either is missing or `old` is 0."""
    if new is None or old is None or old == 0:
        return None
    return new / old
