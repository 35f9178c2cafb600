"""Figures from samples: percentiles, Prometheus histograms, process and machine CPU."""

from __future__ import annotations

import os
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final

from bench.harness import machine_busy as machine_busy  # the loads read it beside the rest

CLK_TCK: Final = os.sysconf("SC_CLK_TCK")

Histogram = tuple[list[float], list[float]]  # upper bounds (+Inf last), cumulative counts


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (0 for a process that is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_seconds_of(pids: Iterable[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


def children(pid: int) -> list[int]:
    """The direct children of a process (nginx's workers)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def rss_mib(pid: int) -> float:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0.0
    for line in lines:
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-quantile (nearest rank, no interpolation); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 3)


def summary_ms(values: Sequence[float]) -> dict[str, float | None]:
    """p50 / p99 / max of values in seconds, in milliseconds."""
    return {
        "p50": ms(percentile(values, 0.50)),
        "p99": ms(percentile(values, 0.99)),
        "max": ms(max(values, default=None)),
    }


def growth(values: Sequence[float]) -> float:
    """How much a series in time order rose: the median of its last quarter minus that of its
    first quarter (0 for fewer than 8 values). A lag that keeps growing means the server does
    not keep up, however small it still is at the end of a short run."""
    if len(values) < 8:
        return 0.0
    quarter = len(values) // 4
    return statistics.median(values[-quarter:]) - statistics.median(values[:quarter])


def parse_histogram(text: str, name: str) -> Histogram:
    """Bounds and cumulative counts of an unlabelled histogram in Prometheus text."""
    bounds: list[float] = []
    counts: list[float] = []
    prefix = f"{name}_bucket{{"
    for line in text.splitlines():
        if line.startswith(prefix):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            bounds.append(float("inf") if le == "+Inf" else float(le))
            counts.append(float(line.rsplit(" ", 1)[1]))
    return bounds, counts


def histogram_delta(before: Histogram, after: Histogram) -> Histogram:
    """What was observed between two scrapes of the same histogram."""
    bounds, counts = after
    if not before[1]:
        return bounds, list(counts)
    return bounds, [a - b for a, b in zip(counts, before[1], strict=True)]


def histogram_sum(histograms: Sequence[Histogram]) -> Histogram:
    """Several instances' histograms (same buckets) as one."""
    if not histograms:
        return [], []
    bounds = histograms[0][0]
    counts = [sum(h[1][i] for h in histograms) for i in range(len(bounds))]
    return bounds, counts


def bucket_percentile(histogram: Histogram, q: float) -> float | None:
    """q-quantile from cumulative histogram counts (Prometheus style, linear inside a bucket).
    None when there is nothing, or it falls in the +Inf bucket."""
    bounds, counts = histogram
    total = counts[-1] if counts else 0
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, cumulative in zip(bounds, counts, strict=True):
        if cumulative >= rank:
            if bound == float("inf"):
                return None
            inside = cumulative - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, cumulative
    return None


def histogram_of(values: Iterable[float], bounds: Sequence[float]) -> Histogram:
    """Exact samples put into the buckets `bounds` (+Inf added), as a scrape would show them."""
    all_bounds = [*bounds, float("inf")]
    ordered = sorted(values)
    counts: list[float] = []
    index = 0
    for bound in all_bounds:
        while index < len(ordered) and ordered[index] <= bound:
            index += 1
        counts.append(float(index))
    return all_bounds, counts


def ratio(mine: float | None, floor: float | None) -> float | None:
    if mine is None or floor is None or floor <= 0:
        return None
    return round(mine / floor, 2)
