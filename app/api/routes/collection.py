"""The collection: statistics and dropping everything."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.api.deps import ApiKeyDep, ServicesDep
from app.api.errors import ERROR_RESPONSES
from app.api.schemas import DropResult, Stats
from app.core.errors import ConfirmationRequired
from app.core.jobs import JobState

router = APIRouter(prefix="/api/v1", tags=["collection"], responses=ERROR_RESPONSES)


@router.get("/stats", summary="Collection statistics")
def stats(services: ServicesDep) -> Stats:
    """Vector count and what produced the vectors (model, weights, recipe, index)."""
    info = services.encoder.info
    settings = services.settings
    return Stats(
        collection=services.store.name,
        count=services.store.count(),
        model=info.model,
        dimension=info.dim,
        index_type=services.store.index_type(),
        weights_id=info.weights_id,
        random_weights=info.random_weights,
        recipe=info.recipe,
        device=info.device,
        precision=info.precision,
        milvus="embedded" if settings.milvus_is_embedded else settings.milvus_dsn,
    )


@router.delete("/collection", dependencies=[ApiKeyDep], summary="Drop all vectors")
def drop_collection(
    services: ServicesDep,
    confirm: Annotated[bool, Query(description="Must be true; guards against accidents.")] = False,
) -> DropResult:
    """Cancel running loads, then drop and recreate the collection empty. Files on disk are
    never touched. Requires `confirm=true`."""
    if not confirm:
        raise ConfirmationRequired("dropping the collection needs ?confirm=true")
    cancelled = []
    for job_id in services.jobs.active():
        if services.jobs.transition(job_id, JobState.cancelled):
            services.jobs.set_fields(job_id, message="cancelled: the collection was dropped")
            cancelled.append(job_id)
    store = services.store
    with services.jobs.writer_lock(store.name, services.settings.single_writer):
        stored = store.stored_meta()
        count = store.count() if stored == store.meta else 0
        store.drop()
        store.ensure_collection()
    return DropResult(dropped=count, cancelled_jobs=cancelled)
