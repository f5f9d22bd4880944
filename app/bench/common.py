"""What every part of the bench shares: its error, the query's shape and depth, the stages
of an ingest run, and the statistics of repeated runs.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

QUERY_SIZE = (500, 375)
TOP_K = 10
WARMUP_QUERIES = 3
STAGES = ("decode", "embed", "write", "other")


class BenchError(Exception):
    """The benchmark could not run as asked (bad folder, failed files, …)."""


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile `q` (0-100) of `values`."""
    data = sorted(values)
    if not data:
        return float("nan")
    pos = (len(data) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (pos - low)


def median_dict(runs: Sequence[dict[str, float]]) -> dict[str, float]:
    """Key-wise median of several runs' figures."""
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}
