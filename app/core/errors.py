"""The exceptions Picsearch raises on purpose, and the one JSON shape clients see.

    PicsearchError                 -> 500 internal_error (never leaks a traceback)
    ├── BadRequestError            -> 400 bad_request
    │   └── ConfirmationRequired   -> 400 confirmation_required
    ├── AuthError                  -> 401 unauthorized
    ├── ForbiddenPathError         -> 403 path_forbidden   (outside PICSEARCH_IMAGE_ROOTS)
    ├── NotFoundError              -> 404 not_found
    │   └── CollectionNotFound     -> 404 collection_not_found
    ├── ConflictError              -> 409 conflict
    │   ├── CollectionMismatch     -> 409 collection_mismatch (model/weights/recipe differ)
    │   └── LoadFailed             -> 409 load_failed (a load waited for ended failed/cancelled)
    ├── PayloadTooLarge            -> 413 payload_too_large
    ├── UnsupportedMediaType       -> 415 unsupported_media_type
    ├── InvalidImageError          -> 422 invalid_image
    ├── ServiceUnavailable         -> 503 service_unavailable (Redis/Milvus/model down)
    └── ConfigurationError         -> raised at start-up; the process refuses to start
        └── WeightsNotFound

Library code raises these; `app.api.errors` maps them to `ErrorResponse` in one place.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, Field


class ErrorResponse(BaseModel):
    """Body of every 4xx/5xx response."""

    error: str = Field(description="Stable machine-readable code, e.g. `not_found`.")
    message: str = Field(description="Human-readable explanation.")
    details: dict[str, Any] | list[Any] | None = Field(
        default=None, description="Extra structured context, e.g. validation errors."
    )


class PicsearchError(Exception):
    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, details: dict[str, Any] | list[Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_response(self) -> ErrorResponse:
        return ErrorResponse(error=self.code, message=self.message, details=self.details)


class BadRequestError(PicsearchError):
    status_code = 400
    code = "bad_request"


class ConfirmationRequired(BadRequestError):
    code = "confirmation_required"


class AuthError(PicsearchError):
    status_code = 401
    code = "unauthorized"


class ForbiddenPathError(PicsearchError):
    status_code = 403
    code = "path_forbidden"


class NotFoundError(PicsearchError):
    status_code = 404
    code = "not_found"


class CollectionNotFound(NotFoundError):
    code = "collection_not_found"


class ConflictError(PicsearchError):
    status_code = 409
    code = "conflict"


class CollectionMismatch(ConflictError):
    code = "collection_mismatch"


class LoadFailed(ConflictError):
    code = "load_failed"


class PayloadTooLarge(PicsearchError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaType(PicsearchError):
    status_code = 415
    code = "unsupported_media_type"


class InvalidImageError(PicsearchError):
    status_code = 422
    code = "invalid_image"


class ServiceUnavailable(PicsearchError):
    status_code = 503
    code = "service_unavailable"


class ConfigurationError(PicsearchError):
    code = "configuration_error"


class WeightsNotFound(ConfigurationError):
    code = "weights_not_found"
