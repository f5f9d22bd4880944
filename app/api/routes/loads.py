"""Folder-load jobs: start, watch, list, cancel."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, status

from app.api.deps import ApiKeyDep, Services, ServicesDep
from app.api.errors import ERROR_RESPONSES
from app.api.schemas import LoadCreated, LoadList, LoadRequest
from app.core.errors import ConflictError, NotFoundError
from app.core.jobs import TASK_QUEUE, TASK_SCAN, JobProgress, JobState
from app.core.paths import resolve_in_roots
from app.core.vectorstore import VectorStore

router = APIRouter(prefix="/api/v1/loads", tags=["loads"], responses=ERROR_RESPONSES)


def queue_load(services: Services, folder: Path, store: VectorStore, prune: bool = False) -> str:
    """Create a load job of the (already confined) `folder` into `store` and queue its scan."""
    store.ensure_collection()  # refuse early if the collection holds other vectors
    job_id = services.jobs.create(str(folder), store.name, prune=prune)
    try:
        services.tasks.send_task(
            TASK_SCAN, args=[job_id], queue=TASK_QUEUE, task_id=f"{job_id}-scan"
        )
    except Exception:  # broker unreachable: no job may wait forever in `queued`
        reason = "could not queue the job: broker unavailable"
        services.jobs.transition(job_id, JobState.failed, message=reason)
        raise
    return job_id


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=[ApiKeyDep],
    summary="Load a folder of images",
)
def start_load(body: LoadRequest, services: ServicesDep) -> LoadCreated:
    """Queue a recursive load of `path` into `collection` (default collection if omitted).
    The folder must resolve (after symlinks and `..`) inside one of the configured image
    roots. Images become searchable chunk by chunk while the job runs; unchanged files that
    are already indexed are skipped. With `prune`, vectors of files under the folder that no
    longer exist are deleted (reported as `pruned`)."""
    folder = resolve_in_roots(body.path, services.settings.readable_roots, want_dir=True)
    job_id = queue_load(services, folder, services.collections.get(body.collection), body.prune)
    return LoadCreated(job_id=job_id, status_url=f"/api/v1/loads/{job_id}")


@router.get("", summary="List recent load jobs")
def list_loads(
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    state: JobState | None = None,
) -> LoadList:
    """Newest first; optionally only jobs in `state`."""
    return LoadList(jobs=services.jobs.recent(limit, state))


def _get(services: ServicesDep, job_id: str) -> JobProgress:
    progress = services.jobs.progress(job_id) if job_id.isalnum() else None
    if progress is None:
        raise NotFoundError(f"no load job {job_id!r}")
    return progress


@router.get("/{job_id}", summary="Progress of one load job")
def get_load(job_id: str, services: ServicesDep) -> JobProgress:
    """Counts, rate, ETA and the first per-file errors of a job."""
    return _get(services, job_id)


@router.delete("/{job_id}", dependencies=[ApiKeyDep], summary="Cancel a load job")
def cancel_load(job_id: str, services: ServicesDep) -> JobProgress:
    """Stop a running job after its current batch. Vectors already written stay indexed
    and searchable. 409 if the job has already finished."""
    current = _get(services, job_id)
    if not services.jobs.transition(job_id, JobState.cancelled, message="cancelled by request"):
        raise ConflictError(f"job {job_id} already {current.state.value}")
    return _get(services, job_id)
