"""Shared services built in the lifespan, and their `Annotated` dependency aliases."""

from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated

from celery import Celery
from fastapi import Depends, Header, Request

from app.core.config import Settings
from app.core.errors import AuthError
from app.core.jobs import JobStore
from app.core.vectorstore import VectorStore
from app.ml.batcher import MicroBatcher
from app.ml.encoder import Encoder


@dataclass
class Services:
    settings: Settings
    jobs: JobStore
    store: VectorStore
    encoder: Encoder
    tasks: Celery  # a producer only: sends tasks by name, imports no worker code
    model_pool: ThreadPoolExecutor
    batcher: MicroBatcher  # concurrent queries share forward passes


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def require_api_key(
    services: ServicesDep,
    x_api_key: Annotated[str | None, Header(description="Required when an API key is set.")] = None,
) -> None:
    expected = services.settings.api_key
    if expected is None:
        return
    if x_api_key is None or not secrets.compare_digest(
        x_api_key.encode(), expected.get_secret_value().encode()
    ):
        raise AuthError("missing or wrong X-API-Key header")


ApiKeyDep = Depends(require_api_key)
