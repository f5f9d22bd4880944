"""`picsearch bench --processes P`: our pipeline in P processes writing to one collection.

This is what a deployment with `PICSEARCH_WORKER_CONCURRENCY=P` (or P worker containers)
does: one Python process is bound by the work that holds its GIL (reading, routing and
decoding dispatch, packing rows for Milvus), so several share one GPU. Each process builds its
own encoder, warms it up, then pulls chunks of files from one queue, as Celery workers pull
chunk tasks. The clock runs from the scan to the end of the load, like `run_ours`.

Milvus Lite keeps one writer per collection in the service (concurrent writers can corrupt its
WAL on restart); the bench's temporary server is never restarted, so several writers are
measured there too, but point PICSEARCH_MILVUS_URI at a Milvus server for production figures.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import queue
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.bench.common import BenchError
from app.bench.runs import BenchSink, IngestRun, pipeline_run, warm_up

if TYPE_CHECKING:
    from multiprocessing.context import SpawnProcess

    from app.core.config import Settings
    from app.core.vectorstore import VectorStore

RUN, STOP = "run", "stop"
READY = "ready"
START_TIMEOUT_S = 600.0  # model build, warm-up and torch.compile in every process


@dataclass(frozen=True)
class ProcessResult:
    rank: int
    indexed: int
    errors: list[str]
    timings: dict[str, float]


def _serve(
    rank: int,
    settings: Settings,
    compile_model: bool,
    collection: str,
    warm_count: int,
    int8_of: str | None,
    control: mp.Queue[str],
    tasks: mp.Queue[list[str] | None],
    results: mp.Queue[tuple[str, Any]],
) -> None:
    """One pipeline process: build and warm up; then, for each run it is told to start, index
    chunks until it takes a None (one per process, so each process ends each run once).
    With `int8_of`, the process runs the int8 model calibrated for that collection."""
    try:
        from app.core.vectorstore import VectorStore
        from app.ml.cpu import lower_cpu_priority
        from app.ml.encoder import Encoder
        from app.ml.int8_runtime import Int8Encoders
        from app.ml.registry import meta_for
        from workers.pipeline import ChunkRunner

        lower_cpu_priority(settings.worker_nice)  # as a worker process does, before its threads
        encoder = Encoder(settings, compile=compile_model)
        meta = meta_for(encoder, settings)
        store = VectorStore(settings, meta, name=collection)
        if int8_of is not None:
            encoder = Int8Encoders(settings, "batch").encoder(int8_of, meta, encoder)
        warm_up(encoder, settings, warm_count)
        results.put((READY, f"{encoder.info.runtime} {encoder.info.precision}"))
        while control.get() != STOP:
            runner = ChunkRunner(settings, encoder, store, job_id=f"bench-p{rank}")
            sink = BenchSink()
            indexed = 0
            while (task := tasks.get()) is not None:
                indexed += runner.run(task, sink).indexed
            errors = [f"{e.path}: {e.reason}" for e in sink.errors]
            results.put(("done", ProcessResult(rank, indexed, errors, dict(runner.timings))))
    except Exception as exc:  # reported to the parent, which fails the bench with it
        results.put(("error", f"process {rank}: {type(exc).__name__}: {exc}"))


class ProcessPool:
    """P pipeline processes, started (and their models warmed) once, used for every run."""

    def __init__(
        self,
        settings: Settings,
        processes: int,
        collection: str,
        compile_model: bool,
        files: int,
        int8_of: VectorStore | None = None,
    ) -> None:
        if settings.torch_threads is None:  # P processes share the cores
            settings = settings.model_copy(
                update={"torch_threads": max(1, (os.cpu_count() or 1) // processes)}
            )
        self.processes = processes
        ctx = mp.get_context("spawn")  # CUDA cannot be used in forked children
        self.controls: list[mp.Queue[str]] = [ctx.Queue() for _ in range(processes)]
        self.tasks: mp.Queue[list[str] | None] = ctx.Queue()
        self.results: mp.Queue[tuple[str, Any]] = ctx.Queue()
        share = math.ceil(files / processes)
        self.procs: list[SpawnProcess] = [
            ctx.Process(
                target=_serve,
                args=(
                    rank,
                    settings,
                    compile_model,
                    collection,
                    share,
                    None if int8_of is None else int8_of.name,
                    self.controls[rank],
                    self.tasks,
                    self.results,
                ),
                daemon=True,
            )
            for rank in range(processes)
        ]
        self.runtimes: set[str] = set()  # how the processes run the model
        for proc in self.procs:
            proc.start()
        try:
            for _ in self.procs:
                kind, value = self._next(START_TIMEOUT_S)
                if kind != READY:
                    raise BenchError(str(value))
                self.runtimes.add(value)
        except BaseException:
            self.close()
            raise

    def _next(self, timeout: float) -> tuple[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.results.get(timeout=1.0)
            except queue.Empty:
                dead = [p.exitcode for p in self.procs if p.exitcode not in (None, 0)]
                if dead or time.monotonic() > deadline:
                    raise BenchError(
                        f"a bench process exited ({dead})" if dead else "bench processes timed out"
                    ) from None

    def run(self, folder: Path, store: VectorStore, chunk_size: int) -> IngestRun:
        """Index `folder` once; the stages are process 0's (and finishing the load)."""
        from workers.pipeline import scan_folder, share_chunks

        start = time.perf_counter()
        found = scan_folder(folder, [folder])
        for chunk in share_chunks(found.files, chunk_size, self.processes):
            self.tasks.put(chunk)
        for control in self.controls:
            self.tasks.put(None)
            control.put(RUN)
        done: list[ProcessResult] = []
        while len(done) < self.processes:
            kind, value = self._next(START_TIMEOUT_S)
            if kind != "done":
                raise BenchError(str(value))
            done.append(value)
        finishing = time.perf_counter()
        store.finish_load()
        end = time.perf_counter()
        problems = [f"{e.path}: {e.reason}" for e in found.errors]
        problems += [e for r in done for e in r.errors]
        return pipeline_run(
            f"{self.processes} processes",
            sum(r.indexed for r in done),
            len(found.files),
            problems,
            min(done, key=lambda r: r.rank).timings,
            finishing=end - finishing,
            seconds=end - start,
        )

    def close(self) -> None:
        for control in self.controls:
            control.put(STOP)
        for proc in self.procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
