"""`picsearch bench --during-load`: search latency while a load runs on the same machine.

On a small machine the API's searches and a worker's load share the cores. Here a worker
process (the bench's pipeline process, one per worker as `PICSEARCH_WORKER_CONCURRENCY=1`
runs it) loads the photos into a collection of its own while this process searches a
500x375 JPEG as the API does, at a user's pace: a query, a short pause, the next. Two such
workers take turns, loading one after the other: the reference at the default CPU priority,
and one at `PICSEARCH_WORKER_NICE`, the priority the service's workers run at, so both
meet the same machine.
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.bench.common import percentile
from app.bench.latency import timed_query
from app.bench.processes import ProcessPool
from app.bench.stores import make_store, reset_store

if TYPE_CHECKING:
    from collections.abc import Callable

    from app.bench.runs import IngestRun
    from app.core.config import Settings
    from app.core.vectorstore import VectorStore
    from app.ml.encoder import Encoder

PAUSE_S = 0.1  # between one query's answer and the next query


def _queries_until(
    settings: Settings,
    encoder: Encoder,
    store: VectorStore,
    query: bytes,
    loading: threading.Thread,
) -> list[float]:
    """Seconds per query (decode + embed + search) for as long as `loading` runs (one at
    least)."""
    seconds: list[float] = []
    while True:
        seconds.append(timed_query(settings, encoder, store, query)[1])
        if not loading.is_alive():
            return seconds
        time.sleep(PAUSE_S)


def _one_load(
    pool: ProcessPool,
    folder: Path,
    load_store: VectorStore,
    chunk_size: int,
    settings: Settings,
    query_encoder: Encoder,
    store: VectorStore,
    query: bytes,
) -> tuple[IngestRun, list[float]]:
    """Load `folder` with `pool` while querying `store`; the load and the query times."""
    done: dict[str, IngestRun] = {}
    failed: list[BaseException] = []

    def load() -> None:
        try:
            done["run"] = pool.run(folder, load_store, chunk_size)
        except BaseException as exc:  # re-raised in the caller's thread
            failed.append(exc)

    reset_store(load_store)
    loading = threading.Thread(target=load, name="bench-load")
    loading.start()
    try:
        seconds = _queries_until(settings, query_encoder, store, query, loading)
    finally:
        loading.join()
    if failed:
        raise failed[0]
    return done["run"], seconds


def queries_during_loads(
    settings: Settings,
    encoder: Encoder,
    query_encoder: Encoder,
    store: VectorStore,
    folder: Path,
    count: int,
    query: bytes,
    repeat: int,
    int8_of: VectorStore | None,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Query latency against `store` while workers at each priority load `folder` (`count`
    photos) `repeat` times in turn; per priority: query p50/p99, the number of queries and
    load images/s."""
    nices = sorted({0, settings.worker_nice})
    chunk = settings.chunk_size_for(encoder.device.type)
    rows: dict[int, dict[str, list[float]]] = {n: {"seconds": [], "rates": []} for n in nices}
    with contextlib.ExitStack() as cleanup:
        workers: dict[int, tuple[ProcessPool, VectorStore]] = {}
        for nice in nices:
            load_store = make_store(settings, f"{store.name}_load{nice}", encoder, 0)
            cleanup.callback(load_store.drop)
            say(f"starting a worker process at CPU priority nice {nice}")
            worker_settings = settings.model_copy(update={"worker_nice": nice})
            pool = ProcessPool(worker_settings, 1, load_store.name, False, count, int8_of)
            cleanup.callback(pool.close)
            workers[nice] = (pool, load_store)
        for r in range(repeat):
            for nice, (pool, load_store) in workers.items():
                run, seconds = _one_load(
                    pool, folder, load_store, chunk, settings, query_encoder, store, query
                )
                rows[nice]["seconds"] += seconds
                rows[nice]["rates"].append(run.rate)
                say(
                    f"during load {r + 1}/{repeat}, worker at nice {nice}: {len(seconds)} "
                    f"queries, p50 {percentile(seconds, 50) * 1000:.0f} ms"
                )
    return {
        "pause_s": PAUSE_S,
        "service_nice": settings.worker_nice,
        "by_worker_nice": {
            str(nice): {
                "query_p50_ms": percentile(row["seconds"], 50) * 1000,
                "query_p99_ms": percentile(row["seconds"], 99) * 1000,
                "queries": len(row["seconds"]),
                "load_images_per_s": statistics.median(row["rates"]),
            }
            for nice, row in rows.items()
        },
    }
