"""What every part of the bench shares: its error, the query's shape and depth, the stages
of an ingest run, and the statistics of repeated runs.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.ml.encoder import Encoder
    from app.ml.runtime_choice import Purpose

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


def machine(batch: Encoder | None, query: Encoder) -> dict[str, Any]:
    """The CPU (model and flags), GPU if used, and how each encoder runs the model here,
    with every CPU runtime measured and why the chosen ones won."""
    import torch

    from app.ml.cpu import cpu_info

    found: dict[str, Any] = {"cpu": cpu_info().describe(), "torch": torch.__version__}
    if query.device.type == "cuda":
        found["gpu"] = torch.cuda.get_device_name(query.device)
    purposes: list[tuple[Purpose, Encoder]] = [("query", query)]
    if batch is not None:  # index mode embeds queries only
        purposes.insert(0, ("batch", batch))
    for purpose, encoder in purposes:
        report = encoder.runtime_report
        found[f"{purpose}_runtime"] = f"{encoder.info.runtime} {encoder.info.precision}"
        if report is not None:
            found[f"{purpose}_runtime"] += f", batch {encoder.micro_batch}"
            found[f"{purpose}_reason"] = report.reason(purpose)
    report = (batch and batch.runtime_report) or query.runtime_report
    if report is not None:
        found["cpu_runtime_trials"] = [
            {**asdict(trial), "name": trial.name} for trial in report.trials
        ]
        found["cpu_runtime_cached"] = report.cached
    return found
