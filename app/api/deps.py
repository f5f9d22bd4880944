"""Shared services built in the lifespan, and their `Annotated` dependency aliases."""

from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Annotated

from celery import Celery
from fastapi import Depends, Header, Query, Request

from app.api.schemas import COLLECTION_NAME
from app.core.config import Settings
from app.core.errors import AuthError
from app.core.jobs import JobStore
from app.core.metrics import ApiMetrics
from app.core.vectorstore import VectorStore
from app.ml.batcher import MicroBatcher
from app.ml.encoder import Encoder
from app.ml.int8_runtime import Int8Encoders
from app.ml.registry import CollectionRegistry, EncoderRegistry


@dataclass
class Services:
    settings: Settings
    jobs: JobStore
    collections: CollectionRegistry
    encoders: EncoderRegistry
    tasks: Celery  # a producer only: sends tasks by name, imports no worker code
    model_pool: ThreadPoolExecutor  # one model thread: forward passes never contend
    metrics: ApiMetrics
    int8: Int8Encoders
    batchers: dict[int, MicroBatcher] = field(default_factory=dict)

    @property
    def store(self) -> VectorStore:
        """The default collection."""
        return self.collections.default

    @property
    def encoder(self) -> Encoder:
        """The configured (default) encoder."""
        return self.encoders.default

    def query_encoder(self, store: VectorStore) -> Encoder:
        """The encoder that embeds queries of `store`'s collection: its int8 one when that
        passed the gate and runs faster here, else the one its model and recipe make.
        Blocking (may build an encoder): call it from a worker thread."""
        base = self.encoders.for_collection(store.meta)
        return self.int8.encoder(store.name, store.meta, base)

    def batcher(self, encoder: Encoder) -> MicroBatcher:
        """The micro-batcher of `encoder` (concurrent queries share forward passes)."""
        key = id(encoder)
        if key not in self.batchers:
            batcher = MicroBatcher(
                encoder.embed,
                self.model_pool,
                self.settings.batch_size_for(encoder.device.type),
                on_batch=self.metrics.query_batch.observe,
            )
            batcher.start()
            self.batchers[key] = batcher
        return self.batchers[key]

    def vector_counts(self) -> dict[str, int]:
        return {name: self.collections.get(name).count() for name in self.collections.names()}

    async def close(self) -> None:
        for batcher in self.batchers.values():
            await batcher.stop()
        self.model_pool.shutdown(wait=False)
        self.collections.conn.reset()
        self.jobs.r.close()


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


API_KEY_QUERY = "api_key"


def query_api_key(request: Request, settings: Settings) -> str | None:
    """The key given as `?api_key=`, when PICSEARCH_API_KEY_QUERY_PARAM allows it."""
    return request.query_params.get(API_KEY_QUERY) if settings.api_key_query_param else None


def require_api_key(
    request: Request,
    services: ServicesDep,
    x_api_key: Annotated[str | None, Header(description="Required when an API key is set.")] = None,
) -> None:
    expected = services.settings.api_key
    if expected is None:
        return
    given = x_api_key if x_api_key is not None else query_api_key(request, services.settings)
    if given is None or not secrets.compare_digest(
        given.encode(), expected.get_secret_value().encode()
    ):
        raise AuthError("missing or wrong X-API-Key header")


ApiKeyDep = Depends(require_api_key)


def require_read_key(
    request: Request,
    services: ServicesDep,
    x_api_key: Annotated[str | None, Header(description="Required when an API key is set.")] = None,
) -> None:
    """Reads and searches need the key too when PICSEARCH_API_KEY_FOR_READS is on."""
    if services.settings.api_key_for_reads:
        require_api_key(request, services, x_api_key)


ReadKeyDep = Depends(require_read_key)


def get_collection(
    services: ServicesDep,
    collection: Annotated[
        str | None,
        Query(
            description="Collection name; the default collection when omitted.",
            pattern=COLLECTION_NAME,
        ),
    ] = None,
) -> VectorStore:
    return services.collections.get(collection)


CollectionDep = Annotated[VectorStore, Depends(get_collection)]
