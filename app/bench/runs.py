"""Our pipeline under the clock: the warm-up, one run in this process (`run_ours`), and what
a run yields (`IngestRun`, also the naive loop's and the process pool's).
"""

from __future__ import annotations

import contextlib
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from app.bench.common import BenchError

if TYPE_CHECKING:
    from app.core.config import Settings
    from app.core.jobs import ChunkCounts, FileError
    from app.core.vectorstore import VectorStore
    from app.ml.encoder import Encoder
    from workers.int8_calibration import Calibrator


@dataclass
class IngestRun:
    images: int
    seconds: float
    stages: dict[str, float]

    @property
    def rate(self) -> float:
        return self.images / self.seconds

    def figures(self) -> dict[str, float]:
        return {"images_per_s": self.rate, "seconds": self.seconds, **self.stages}


class BenchSink:
    """ChunkRunner's progress sink, in process: collects errors, never cancels."""

    def __init__(self) -> None:
        self.errors: list[FileError] = []

    def update(self, counts: ChunkCounts, errors: list[FileError]) -> None:
        del counts
        self.errors.extend(errors)

    def cancelled(self) -> bool:
        return False

    def write_lock(self) -> AbstractContextManager[object]:
        return contextlib.nullcontext()


def warm_up(encoder: Encoder, settings: Settings, count: int) -> None:
    """Run the batch shapes a load of `count` files will use, so no timing includes their
    first-call costs (cuDNN autotuning, torch.compile)."""
    import numpy as np

    size = settings.batch_size_for(encoder.device.type)
    shapes = {min(size, count), count % size, 1} - {0}
    for n in sorted(shapes):
        encoder.embed(np.zeros((n, settings.image_size, settings.image_size, 3), np.uint8))


def run_ours(
    settings: Settings,
    encoder: Encoder,
    folder: Path,
    store: VectorStore,
    calibrator: Calibrator | None = None,
) -> IngestRun:
    """Our pipeline end to end: scan, stat, skip-unchanged lookup, decode, embed, upsert
    (with `calibrator`, as a collection's first load: calibrating its int8 model).

    Stages come from ChunkRunner's own timings. `decode` is the time the model waited for
    decoded images (decoding runs on threads ahead of it, so only what it fails to hide
    counts); `write`, likewise, is the time it waited for upserts (they run on a writer
    thread), plus the final flush (Milvus Lite only, as in jobs); `other` is scanning, stat
    and the skip-unchanged lookup.
    """
    from workers.pipeline import ChunkRunner, chunked, scan_folder

    sink = BenchSink()
    start = time.perf_counter()
    found = scan_folder(folder, [folder])
    runner = ChunkRunner(settings, encoder, store, job_id="bench", calibrator=calibrator)
    indexed = 0
    for chunk in chunked(found.files, settings.chunk_size_for(encoder.device.type)):
        indexed += runner.run(chunk, sink).indexed
    finishing = time.perf_counter()
    store.finish_load()  # as the job's finalize step does
    end = time.perf_counter()
    problems = [f"{e.path}: {e.reason}" for e in [*found.errors, *sink.errors]]
    return pipeline_run(
        "our pipeline",
        indexed,
        len(found.files),
        problems,
        runner.timings,
        finishing=end - finishing,
        seconds=end - start,
    )


def pipeline_run(
    who: str,
    indexed: int,
    total: int,
    problems: list[str],
    timings: dict[str, float],
    finishing: float,
    seconds: float,
) -> IngestRun:
    """A run of our pipeline from ChunkRunner's `timings` and the seconds spent finishing the
    load (stages as in `run_ours`); fails the bench unless all `total` files were indexed."""
    if problems or indexed != total:
        raise BenchError(f"{who} indexed {indexed}/{total} files: " + "; ".join(problems[:5]))
    stages = {
        "decode": timings["decode_wait"],
        "embed": timings["embed"],
        "write": timings["write"] + finishing,
    }
    stages["other"] = max(0.0, seconds - sum(stages.values()))
    return IngestRun(indexed, seconds, stages)
