"""The FastAPI application: `uvicorn --factory app.main:create_app` (or `picsearch api`)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

from celery import Celery
from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from app import __version__
from app.api.compat import bootcamp, pic_search
from app.api.deps import ReadKeyDep, Services
from app.api.errors import install_error_handlers
from app.api.routes import collection, folders, health, images, loads, search
from app.core.config import PROJECT_ROOT, Settings, get_settings
from app.core.errors import PayloadTooLarge, PicsearchError
from app.core.jobs import JobStore, redis_client
from app.core.logging import configure_logging
from app.core.metrics import ApiMetrics, RedisCollector
from app.ml.encoder import Encoder
from app.ml.int8_runtime import Int8Encoders
from app.ml.registry import CollectionRegistry, EncoderRegistry, meta_for

log = logging.getLogger(__name__)
FRONTEND_DIR = PROJECT_ROOT / "frontend"
DESCRIPTION = """Reverse image search: load folders of photos (Celery workers embed them with a
CNN into Milvus), then search by uploading an image. Errors always use the `ErrorResponse`
schema. Images are served by id only. The `compat-*` routes speak the API of Milvus'
reverse image search demo, for its existing clients (see docs/compat.md)."""


def _unique_id(route: APIRoute) -> str:
    return f"{route.tags[0]}-{route.name}" if route.tags else route.name


def build_services(settings: Settings, metrics: ApiMetrics) -> Services:
    encoder = Encoder(settings, purpose="query")
    jobs = JobStore(
        redis_client(settings.redis_dsn),
        ttl_seconds=settings.job_ttl_seconds,
        max_errors=settings.max_job_errors,
    )
    producer = Celery("picsearch", broker=settings.redis_dsn)
    producer.conf.broker_transport_options = {"visibility_timeout": settings.visibility_timeout}
    producer.conf.broker_connection_retry = False
    producer.conf.broker_connection_max_retries = 0
    return Services(
        settings=settings,
        jobs=jobs,
        collections=CollectionRegistry(settings, meta_for(encoder, settings)),
        encoders=EncoderRegistry(settings, encoder, purpose="query"),
        tasks=producer,
        model_pool=ThreadPoolExecutor(1, "embed"),
        metrics=metrics,
        int8=Int8Encoders(settings, "query"),
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings)
        services = await run_in_threadpool(build_services, settings, metrics)
        app.state.services = services
        collector = RedisCollector(services.jobs.r, services.vector_counts)
        metrics.registry.register(collector)
        try:
            await run_in_threadpool(services.store.ensure_collection)
        except PicsearchError as exc:  # dependencies may come up later; /readyz tells
            log.warning("collection not ready at start-up: %s", exc.message)
        log.info("Picsearch API ready on http://%s:%d", settings.host, settings.port)
        yield
        metrics.registry.unregister(collector)
        await services.close()

    metrics = ApiMetrics()
    app = FastAPI(
        title="Picsearch",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        generate_unique_id_function=_unique_id,
    )
    install_error_handlers(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["X-API-Key", "Content-Type"],
        )

    @app.middleware("http")
    async def limit_upload(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        # Refuse oversized bodies before the multipart parser spools them.
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > settings.max_upload_bytes + 65536:
            exc = PayloadTooLarge(f"request body exceeds {settings.max_upload_bytes:,} bytes")
            return JSONResponse(exc.to_response().model_dump(), status_code=exc.status_code)
        return await call_next(request)

    @app.middleware("http")
    async def count_requests(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        metrics.observe_request(
            template, request.method, response.status_code, time.perf_counter() - started
        )
        return response

    app.include_router(health.router)
    for module in (loads, search, images, collection, folders, pic_search, bootcamp):
        app.include_router(module.router, dependencies=[ReadKeyDep])
    if (FRONTEND_DIR / "index.html").is_file():
        app.mount("/", StaticFiles(directory=Path(FRONTEND_DIR), html=True), name="frontend")
    return app
