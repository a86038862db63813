"""Arrival traces: piecewise-constant rates read from ``t_seconds,arrivals_per_s`` CSV files."""
from __future__ import annotations

import bisect
import csv
import dataclasses
import math
import os
import random
from pathlib import Path

TRACES_DIR = Path(__file__).resolve().parent / "traces"
BUILTIN_TRACES = ("step", "spike", "diurnal", "onoff", "idle_to_zero")


@dataclasses.dataclass(frozen=True)
class Trace:
    """A piecewise-constant arrival rate: ``rates[i]`` holds from ``times[i]`` to ``times[i+1]``."""

    name: str
    times: tuple[float, ...]
    rates: tuple[float, ...]

    @property
    def end(self) -> float:
        return self.times[-1]

    def rate_at(self, t: float) -> float:
        """Arrivals per second at ``t`` (0 outside the trace)."""
        if t < 0 or t >= self.end:
            return 0.0
        return self.rates[bisect.bisect_right(self.times, t) - 1]

    def max_rate(self, t0: float, t1: float) -> float:
        """Highest rate over [t0, t1]."""
        i = max(0, bisect.bisect_right(self.times, t0) - 1)
        best = self.rate_at(t0)
        while i + 1 < len(self.times) and self.times[i + 1] <= t1:
            i += 1
            best = max(best, self.rate_at(self.times[i]))
        return best

    def scaled(self, factor: float) -> "Trace":
        """The same shape with every rate multiplied by ``factor``."""
        return Trace(self.name, self.times, tuple(r * factor for r in self.rates))

    def arrivals(self, rng: random.Random) -> list[float]:
        """Poisson arrival times following the rate, in order."""
        out: list[float] = []
        for i in range(len(self.times) - 1):
            t, t_end, rate = self.times[i], self.times[i + 1], self.rates[i]
            if rate <= 0:
                continue
            while True:
                t += rng.expovariate(rate)
                if t >= t_end:
                    break
                out.append(t)
        return out


def load_trace(path: str | os.PathLike) -> Trace:
    """Read a ``t_seconds,arrivals_per_s`` CSV; errors name the file, the row and the value."""
    path = Path(path)
    times: list[float] = []
    rates: list[float] = []
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ValueError(f"{path}: empty trace; expected rows of t_seconds,arrivals_per_s")
    start = 1 if rows[0] and rows[0][0].strip().lower().startswith("t") else 0
    for n, row in enumerate(rows[start:], start=start + 1):
        if not row or not "".join(row).strip():
            continue
        if len(row) != 2:
            raise ValueError(f"{path}:{n}: expected 2 columns t_seconds,arrivals_per_s, got {row!r}")
        try:
            t, r = float(row[0]), float(row[1])
        except ValueError:
            raise ValueError(f"{path}:{n}: not numbers: {row!r}") from None
        if not (math.isfinite(t) and math.isfinite(r)) or r < 0:
            raise ValueError(f"{path}:{n}: arrivals_per_s={row[1]!r} must be a number >= 0")
        if times and t <= times[-1]:
            raise ValueError(f"{path}:{n}: t_seconds={row[0]!r} must be after {times[-1]:g}")
        times.append(t)
        rates.append(r)
    if len(times) < 2 or times[0] != 0:
        raise ValueError(f"{path}: need at least two rows, the first at t_seconds=0")
    return Trace(path.stem, tuple(times), tuple(rates))


def builtin_traces() -> list[Trace]:
    """The traces in ``bench/traces/``."""
    return [load_trace(TRACES_DIR / f"{n}.csv") for n in BUILTIN_TRACES]
