"""The one place where exceptions become `ErrorResponse` JSON."""

from __future__ import annotations

import logging
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.core.errors import ErrorResponse, PicsearchError, ServiceUnavailable

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def _json(status: int, body: ErrorResponse, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")}
        for e in exc.errors()
    ]


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(PicsearchError)
    async def _app_error(_: Request, exc: PicsearchError) -> JSONResponse:
        if exc.status_code >= 500:
            log.warning("%s: %s", exc.code, exc.message)
        return _json(exc.status_code, exc.to_response())

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        body = ErrorResponse(
            error="validation_error",
            message="request is invalid: see details",
            details=_validation_details(exc),
        )
        return _json(422, body)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        body = ErrorResponse(error=code, message=str(exc.detail))
        return _json(exc.status_code, body, headers=getattr(exc, "headers", None))

    @app.exception_handler(redis.RedisError)
    async def _redis(_: Request, exc: redis.RedisError) -> JSONResponse:
        return _json(503, ServiceUnavailable(f"Redis unavailable: {exc}").to_response())

    @app.exception_handler(OperationalError)
    async def _broker(_: Request, exc: OperationalError) -> JSONResponse:
        return _json(503, ServiceUnavailable(f"task broker unavailable: {exc}").to_response())

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, _exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        body = ErrorResponse(error="internal_error", message="internal server error")
        return _json(500, body)


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": desc}
    for code, desc in {
        400: "Bad request",
        401: "Missing or wrong API key",
        403: "Path outside the image roots",
        404: "Not found",
        409: "Conflict (e.g. collection holds vectors of another model)",
        413: "Upload too large",
        415: "Not an image",
        422: "Invalid request or undecodable image",
        503: "A dependency (Redis, Milvus, model) is unavailable",
    }.items()
}
