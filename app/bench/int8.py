"""The bench's int8 path, as the service takes it: the first load of a collection calibrates
its int8 model on the first images (in the pipeline, as a worker's first load does) and
later loads and queries use it where it passed the accuracy gate and was faster.

The first load is timed on its own (it pays for the calibration once per collection); the
ingest runs compared with the naive reference are later loads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.bench.runs import IngestRun, run_ours, warm_up
from app.bench.stores import reset_store

if TYPE_CHECKING:
    from app.core.config import Settings
    from app.core.vectorstore import VectorStore
    from app.ml.encoder import Encoder


@dataclass(frozen=True)
class Int8Setup:
    """The encoders later loads and queries use, and what the first load found."""

    batch: Encoder
    query: Encoder
    first_load: IngestRun | None  # None: int8 not tried here
    report: dict[str, Any]


def first_load(
    settings: Settings,
    encoder: Encoder,
    query_encoder: Encoder,
    folder: Path,
    store: VectorStore,
    say: Callable[[str], None],
) -> Int8Setup:
    """Load `folder` into `store` once as its first load (calibrating int8 where it may be
    used), then empty `store`; the encoders the service would go on with."""
    from app.ml.int8_runtime import Int8Encoders, why_not_here
    from workers.int8_calibration import Calibrator

    why_not = why_not_here(settings, encoder)
    if store.meta.regions:  # as the worker: the gate measures global vectors only
        why_not = "a collection with regions is not quantized"
    if why_not is not None:
        return Int8Setup(encoder, query_encoder, None, {"state": "off", "reason": why_not})
    loads, queries = Int8Encoders(settings, "batch"), Int8Encoders(settings, "query")
    say("first load: calibrating the int8 model on its first images, as a worker does")
    calibrator = Calibrator(loads, store.name, store.meta, encoder)
    run = run_ours(settings, encoder, folder, store, calibrator)
    reset_store(store)
    batch = loads.encoder(store.name, store.meta, encoder)
    query = queries.encoder(store.name, store.meta, query_encoder, wait=True)
    report = loads.state(store.name, store.meta) or {"state": "not calibrated: too few images"}
    report["query_note"] = (queries.state(store.name, store.meta) or {}).get("note", "")
    report["first_load_images_per_s"] = run.rate
    say(f"int8: {report['state']}" + (f": {report['reason']}" if report.get("reason") else ""))
    if batch is not encoder:
        warm_up(batch, settings, run.images)
    return Int8Setup(batch, query, run, report)
