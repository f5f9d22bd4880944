"""Building blocks shared by the demo facades: tables, progress text, distances, load waits."""

from __future__ import annotations

import asyncio
from pathlib import Path

from starlette.concurrency import run_in_threadpool

from app.api.deps import Services
from app.api.routes.loads import queue_load
from app.api.routes.search import SearchOptions, embed_query, run_search
from app.core.errors import CollectionNotFound, ConflictError, LoadFailed
from app.core.jobs import JobState
from app.core.paths import resolve_in_roots
from app.core.vectorstore import VectorStore

LOAD_POLL_SECONDS = 0.5
DISTANCE_DECIMALS = 6
TABLE_DESCRIPTION = "Picsearch collection; the default collection when omitted."


def table_for_write(services: Services, name: str | None) -> VectorStore:
    """The collection `name`, created for the service's model if missing (as the demo
    creates a table on its first load)."""
    try:
        return services.collections.get(name)
    except CollectionNotFound:
        assert name is not None  # the default collection always exists
        try:
            return services.collections.create(name, services.collections.default_meta)
        except ConflictError:  # created meanwhile by a concurrent request
            return services.collections.get(name)


def progress_text(services: Services, name: str | None) -> str:
    """`current: N, total: M` of the latest load into the collection (0, 0 before any)."""
    latest = services.jobs.latest(name or services.collections.default_name)
    if latest is None:
        return "current: 0, total: 0"
    return f"current: {latest.processed}, total: {latest.discovered}"


def squared_l2(cosine: float) -> float:
    """The demo's distance: squared L2 between unit vectors, 2 - 2 cos (0 = identical)."""
    return round(max(0.0, 2.0 - 2.0 * cosine), DISTANCE_DECIMALS)


async def nearest(
    services: Services, table: str | None, data: bytes, top_k: int
) -> list[tuple[str, str, float]]:
    """(id, path, distance) of the `top_k` images closest to the uploaded bytes, ascending."""
    store = await run_in_threadpool(services.collections.get, table)
    vector = await embed_query(services, store, data)
    results = await run_in_threadpool(run_search, store, vector, SearchOptions(top_k=top_k))
    return [(r.id, r.path, squared_l2(r.score)) for r in results]


def start_load(services: Services, raw_folder: str, table: str | None) -> str:
    """Queue a load of `raw_folder` (confined to the roots first) into `table`; the job id."""
    folder: Path = resolve_in_roots(raw_folder, services.settings.readable_roots, want_dir=True)
    return queue_load(services, folder, table_for_write(services, table))


async def wait_for_load(services: Services, job_id: str) -> None:
    """Return once the job has succeeded, polling Redis without blocking the event loop;
    no time limit (a large folder takes minutes). LoadFailed if it failed or was cancelled."""
    while True:
        state = await run_in_threadpool(services.jobs.state, job_id)
        if state is JobState.succeeded:
            return
        if state is None or state.terminal:
            progress = await run_in_threadpool(services.jobs.progress, job_id)
            reason = progress.message if progress and progress.message else "no reason recorded"
            ended = state.value if state else "expired"
            raise LoadFailed(f"load job {job_id} {ended}: {reason}", details={"job_id": job_id})
        await asyncio.sleep(LOAD_POLL_SECONDS)
