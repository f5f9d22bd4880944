"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.api.deps import ServicesDep
from app.api.errors import ERROR_RESPONSES
from app.api.schemas import Health, Readiness
from app.core.errors import PicsearchError, ServiceUnavailable

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness")
def healthz() -> Health:
    """The process is up (says nothing about Redis or Milvus)."""
    return Health()


@router.get("/readyz", summary="Readiness", responses={503: ERROR_RESPONSES[503]})
def readyz(services: ServicesDep) -> Readiness:
    """Ready when Redis and Milvus answer, the collection matches the model, and the model is
    loaded. 503 with per-dependency details otherwise."""
    checks = {"redis": "ok", "milvus": "ok", "model": "ok"}
    try:
        services.jobs.r.ping()
    except Exception as exc:  # any failure means not ready
        checks["redis"] = f"error: {exc}"
    try:
        services.store.ping()
        services.store.ensure_collection()
    except PicsearchError as exc:
        checks["milvus"] = f"error: {exc.message}"
    if any(v != "ok" for v in checks.values()):
        raise ServiceUnavailable("not ready", details=checks)
    return Readiness(ready=True, **checks)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Text format."}},
)
def metrics(services: ServicesDep) -> PlainTextResponse:
    """API request counts and latencies, search stage latencies and query batch sizes, plus
    what the workers pushed through Redis (images embedded/failed, batches, stage seconds per
    worker; job durations), the task queue depth and vectors per collection."""
    body = generate_latest(services.metrics.registry)
    return PlainTextResponse(body, media_type=CONTENT_TYPE_LATEST)
