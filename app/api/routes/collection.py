"""Collections: statistics, creating named collections, dropping."""

from __future__ import annotations

import logging
import threading
from typing import Annotated

from fastapi import APIRouter, Query, status
from fastapi import Path as PathParam

from app.api.deps import ApiKeyDep, CollectionDep, Services, ServicesDep
from app.api.errors import ERROR_RESPONSES
from app.api.schemas import (
    COLLECTION_NAME,
    CollectionCreate,
    CollectionInfo,
    CollectionList,
    CpuRuntimeInfo,
    DropResult,
    Int8Info,
    RuntimeTrialInfo,
    Stats,
)
from app.core.config import Settings
from app.core.errors import (
    ConfigurationError,
    ConfirmationRequired,
    ConflictError,
)
from app.core.jobs import JobState
from app.core.vectorstore import VectorStore
from app.ml.runtime_choice import RuntimeReport

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1", tags=["collection"], responses=ERROR_RESPONSES)
Confirm = Annotated[bool, Query(description="Must be true; guards against accidents.")]
CollectionName = Annotated[str, PathParam(pattern=COLLECTION_NAME)]


@router.get("/stats", summary="Collection statistics")
def stats(services: ServicesDep, store: CollectionDep) -> Stats:
    """Vector count and what produced the vectors (model, weights, recipe, index)."""
    meta = store.meta
    encoder = services.query_encoder(store)
    settings = services.settings
    int8 = services.int8.state(store.name, meta)
    return Stats(
        collection=store.name,
        count=store.count(),
        model=meta.model,
        dimension=meta.dim,
        index_type=store.index_type(),
        weights_id=meta.weights_id,
        random_weights=meta.weights_id.startswith("random"),
        recipe=meta.recipe,
        regions=meta.regions,
        region_count=store.regions.count() if store.regions is not None else None,
        device=encoder.info.device,
        precision=encoder.info.precision,
        runtime=encoder.info.runtime,
        cpu_runtime=cpu_runtime_info(encoder.runtime_report),
        int8=Int8Info.model_validate(int8) if int8 else None,
        milvus="embedded" if settings.milvus_is_embedded else settings.milvus_dsn,
        max_upload_bytes=settings.max_upload_bytes,
        api_key_required=settings.api_key is not None,
    )


def cpu_runtime_info(report: RuntimeReport | None) -> CpuRuntimeInfo | None:
    if report is None:
        return None
    return CpuRuntimeInfo(
        cpu=report.cpu,
        query=f"{report.query.name} (batch {report.query.micro_batch})",
        query_reason=report.reason("query"),
        batch=f"{report.batch.name} (batch {report.batch.micro_batch})",
        batch_reason=report.reason("batch"),
        measured_s=report.measured_s,
        cached=report.cached,
        trials=[
            RuntimeTrialInfo(
                name=t.name,
                micro_batch=t.micro_batch,
                images_per_s=t.images_per_s,
                cosine=t.cosine,
                accepted=t.accepted,
                note=t.note,
            )
            for t in report.trials
        ],
    )


def drop_store(services: Services, store: VectorStore) -> DropResult:
    """Cancel the collection's running loads, then drop it (the default one comes back empty)."""
    cancelled = []
    for job_id in services.jobs.active(store.name):
        reason = "cancelled: the collection was dropped"
        if services.jobs.transition(job_id, JobState.cancelled, message=reason):
            cancelled.append(job_id)
    with services.jobs.writer_lock(store.name, services.settings.single_writer):
        count = store.count() if store.stored_meta() == store.meta else 0
        store.drop()
        services.int8.store.remove(store.name)
        services.int8.forget(store.name)
        if store.name == services.collections.default_name:
            store.ensure_collection()
        else:
            services.collections.forget(store.name)
    return DropResult(dropped=count, cancelled_jobs=cancelled)


@router.delete("/collection", dependencies=[ApiKeyDep], summary="Drop all vectors")
def drop_collection(
    services: ServicesDep, store: CollectionDep, confirm: Confirm = False
) -> DropResult:
    """Cancel running loads, then drop and recreate the collection empty (the default one
    unless `collection` names another). Files on disk are never touched. Requires
    `confirm=true`."""
    if not confirm:
        raise ConfirmationRequired("dropping the collection needs ?confirm=true")
    return drop_store(services, store)


def _info(services: Services, store: VectorStore) -> CollectionInfo:
    meta = store.meta
    return CollectionInfo(
        name=store.name,
        default=store.name == services.collections.default_name,
        count=store.count(),
        model=meta.model,
        dimension=meta.dim,
        weights_id=meta.weights_id,
        random_weights=meta.weights_id.startswith("random"),
        recipe=meta.recipe,
        regions=meta.regions,
    )


@router.get("/collections", summary="List collections")
def list_collections(services: ServicesDep) -> CollectionList:
    """Every Picsearch collection with its model and size; the default one first."""
    names = services.collections.names()
    names.sort(key=lambda n: (n != services.collections.default_name, n))
    return CollectionList(collections=[_info(services, services.collections.get(n)) for n in names])


@router.post(
    "/collections",
    status_code=status.HTTP_201_CREATED,
    dependencies=[ApiKeyDep],
    summary="Create a named collection",
)
def create_collection(body: CollectionCreate, services: ServicesDep) -> CollectionInfo:
    """A new, empty collection for `model`. Its vectors never mix with other collections';
    searches in it embed the query with its own model. 409 if the name is taken."""
    base = services.settings
    settings = base.model_copy(
        update={
            "model": body.model,
            "weights": body.weights or base.weights,
            "pooling": body.pooling or base.pooling,
            "regions": base.regions if body.regions is None else body.regions,
        }
    )
    try:
        meta = services.encoders.meta(settings)
    except ConfigurationError as exc:  # e.g. this model's weights file is not on the server
        raise ConflictError(f"cannot create a {body.model} collection: {exc.message}") from None
    store = services.collections.create(body.name, meta)
    # Its encoder is built now, in the background (the first one of a model on a machine
    # also times the CPU runtimes), so that neither this answer nor its first search waits.
    threading.Thread(
        target=_build_quietly, args=(services, settings), name="encoder-build", daemon=True
    ).start()
    return _info(services, store)


def _build_quietly(services: Services, settings: Settings) -> None:
    try:
        services.encoders.get(settings)
    except Exception:  # a thread's error has no caller: log it; the first search reports it
        log.exception("building the %s encoder failed", settings.model)


@router.delete("/collections/{name}", dependencies=[ApiKeyDep], summary="Drop a collection")
def delete_collection(
    name: CollectionName, services: ServicesDep, confirm: Confirm = False
) -> DropResult:
    """Drop the collection `name` and its vectors (the default one is recreated empty).
    Requires `confirm=true`."""
    if not confirm:
        raise ConfirmationRequired("dropping a collection needs ?confirm=true")
    return drop_store(services, services.collections.get(name))
