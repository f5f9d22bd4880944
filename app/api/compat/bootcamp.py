"""`/compat/bootcamp`: the API of the bootcamp 2.x FastAPI server, its client and test scripts.

Give them `http://HOST:PORT/compat/bootcamp` as the server address. Answers are the demo's
JSON strings, numbers and pairs. `/img/load` answers once the Picsearch load job is done.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from app.api.compat.common import (
    TABLE_DESCRIPTION,
    nearest,
    progress_text,
    start_load,
    table_for_write,
    wait_for_load,
)
from app.api.deps import ApiKeyDep, Services, ServicesDep
from app.api.errors import ERROR_RESPONSES
from app.api.routes.collection import drop_store
from app.api.routes.images import IMAGE_RESPONSE, current_file
from app.api.routes.search import read_upload
from app.api.schemas import ABSOLUTE_PATH, COLLECTION_NAME
from app.api.uploads import add_upload
from app.core.errors import BadRequestError, NotFoundError
from app.core.paths import is_within
from app.core.vectorstore import image_id

PREFIX = "/compat/bootcamp"
router = APIRouter(prefix=PREFIX, tags=["compat-bootcamp"], responses=ERROR_RESPONSES)
TableName = Annotated[
    str | None,
    Query(alias="table_name", pattern=COLLECTION_NAME, description=TABLE_DESCRIPTION),
]
TableForm = Annotated[
    str | None,
    Form(alias="table_name", pattern=COLLECTION_NAME, description="Same as the query argument."),
]


class LoadItem(BaseModel):
    Table: str | None = Field(default=None, pattern=COLLECTION_NAME, description=TABLE_DESCRIPTION)
    File: str = Field(
        min_length=1,
        max_length=4096,
        pattern=ABSOLUTE_PATH,
        description="Absolute path of a folder inside the image roots.",
    )


@router.post("/img/load", dependencies=[ApiKeyDep], summary="Load a folder and wait")
async def load(item: LoadItem, services: ServicesDep) -> str:
    """Load `File` into `Table` and answer `Successfully loaded data!` once every image is
    searchable. The work is a Picsearch load job (see `/api/v1/loads`); this request only
    waits for it, however long it takes. 409 `load_failed` if the job fails or is cancelled."""
    job_id = await run_in_threadpool(start_load, services, item.File, item.Table)
    await wait_for_load(services, job_id)
    return "Successfully loaded data!"


@router.get("/progress", summary="Progress of the latest load")
def progress(services: ServicesDep, table: TableName = None) -> str:
    """`current: N, total: M` (files handled, files found) of the latest load."""
    return progress_text(services, table)


@router.post("/img/count", summary="Number of indexed images")
def count(services: ServicesDep, table: TableName = None) -> int:
    return services.collections.get(table).count()


@router.post("/img/upload", dependencies=[ApiKeyDep], summary="Add one image")
async def upload(
    services: ServicesDep,
    image: Annotated[UploadFile | None, File(description="The image to add.")] = None,
    url: Annotated[
        str | None, Query(max_length=4096, description="Refused: Picsearch never fetches URLs.")
    ] = None,
    table: TableName = None,
    table_form: TableForm = None,
) -> str:
    """Store the image under the uploads folder and index it (`POST /api/v1/images`);
    answers `Successfully loaded data: <id>`. The same bytes again are a no-op, same id."""
    if url is not None:
        raise BadRequestError(
            "Picsearch never fetches URLs (a server that fetches any URL it is given can be "
            "turned against its own network); upload the image bytes as the `image` field"
        )
    if image is None:
        raise BadRequestError("an `image` file field is required")
    data = await read_upload(image, services.settings.max_upload_bytes)
    store = await run_in_threadpool(table_for_write, services, table or table_form)
    added = await add_upload(services, store, data)
    return f"Successfully loaded data: {added.id}"


@router.post("/img/search", summary="Search by image upload")
async def search(
    services: ServicesDep,
    image: Annotated[UploadFile, File(description="The query image.")],
    topk: Annotated[int, Form(ge=1, le=100, description="Number of results, 1-100.")] = 10,
    table: TableName = None,
    table_form: TableForm = None,
) -> list[tuple[str, float]]:
    """`[path, distance]` pairs, closest first; `distance` is the squared L2 distance of
    the unit vectors (2 - 2 cosine: 0 for the same image)."""
    data = await read_upload(image, services.settings.max_upload_bytes)
    hits = await nearest(services, table or table_form, data, topk)
    return [(path, distance) for _, path, distance in hits]


def _indexed_file(services: Services, table: str | None, raw: str) -> tuple[Path, str]:
    """The file at `raw` if it is an indexed image inside the roots. Every refusal is the
    same 404, so the answer says nothing about files outside the index."""
    refused = NotFoundError("no indexed image at this path")
    if not raw.startswith("/") or "\x00" in raw:
        raise refused
    try:
        resolved = Path(raw).resolve()
    except (OSError, RuntimeError, ValueError):
        raise refused from None
    if not is_within(resolved, services.settings.readable_roots):
        raise refused
    try:
        store = services.collections.get(table)
        return current_file(services.settings, store, image_id(str(resolved)))
    except NotFoundError:
        raise refused from None


@router.get(
    "/data", summary="Image bytes by path", response_class=Response, responses=IMAGE_RESPONSE
)
def data(
    services: ServicesDep,
    image_path: Annotated[str, Query(max_length=4096, description="Path from a search result.")],
    table: TableName = None,
) -> FileResponse:
    """The image at `image_path`, only if it is indexed and inside the image roots; 404 for
    anything else (the demo served any file on the machine)."""
    path, mime = _indexed_file(services, table, image_path)
    return FileResponse(path, media_type=mime)


@router.post("/img/drop", dependencies=[ApiKeyDep], summary="Drop a collection's vectors")
def drop(services: ServicesDep, table: TableName = None) -> str:
    """Cancel its loads and drop the vectors; image files are never deleted."""
    dropped = drop_store(services, services.collections.get(table))
    return f"Successfully dropped {dropped.dropped} vectors"
