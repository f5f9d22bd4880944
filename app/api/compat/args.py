"""Demo-style arguments: the same fields from a JSON body, a form or the query string.

The demo's Flask server read `Table`, `File` and `Num` with flask-restful's parser, which
takes them from any of the three; its clients and scripts rely on that.
"""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError

from app.api.compat.common import TABLE_DESCRIPTION
from app.api.schemas import ABSOLUTE_PATH, COLLECTION_NAME

M = TypeVar("M", bound=BaseModel)
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class TableArgs(BaseModel):
    Table: str | None = Field(
        default=None, pattern=COLLECTION_NAME, max_length=255, description=TABLE_DESCRIPTION
    )


class TrainArgs(TableArgs):
    File: str = Field(
        min_length=1,
        max_length=4096,
        pattern=ABSOLUTE_PATH,
        description="Absolute path of a folder inside the image roots.",
    )


def _invalid(msg: str) -> RequestValidationError:
    return RequestValidationError([{"loc": ["body"], "msg": msg, "type": "value_error"}])


async def demo_args(request: Request, model: type[M]) -> M:
    """`model` from the query string, overridden by a JSON body or form fields; an empty
    value counts as absent (the demo fell back to its default table)."""
    values: dict[str, Any] = dict(request.query_params)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/json"):
        try:
            body = await request.json()
        except ValueError:
            raise _invalid("body is not valid JSON") from None
        if not isinstance(body, dict | None):
            raise _invalid("JSON body must be an object")
        values.update(body or {})
    elif content_type.startswith(FORM_TYPES):
        form = await request.form()
        values.update({k: v for k, v in form.items() if isinstance(v, str)})
    values = {k: v for k, v in values.items() if k in model.model_fields and v != ""}
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_context=False)) from None


def body_doc(model: type[BaseModel], *, required: bool) -> dict[str, Any]:
    """OpenAPI `requestBody` for a route reading `model` through `demo_args`."""
    schema = model.model_json_schema()
    return {
        "requestBody": {
            "required": required,
            "content": {
                "application/json": {"schema": schema},
                "application/x-www-form-urlencoded": {"schema": schema},
            },
        }
    }
