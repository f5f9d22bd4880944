"""`/compat/pic-search`: the API of the demo's 0.10 Flask webserver (pic-search-webclient 0.2).

Give that client `API_URL=http://HOST:PORT/compat/pic-search`. Answers are the demo's plain
texts and JSON pairs; loads run as Picsearch jobs; images are served by id only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from app.api.compat.args import TableArgs, TrainArgs, body_doc, demo_args
from app.api.compat.common import (
    TABLE_DESCRIPTION,
    nearest,
    progress_text,
    start_load,
)
from app.api.deps import API_KEY_QUERY, ApiKeyDep, ServicesDep, query_api_key
from app.api.errors import ERROR_RESPONSES
from app.api.routes.collection import drop_store
from app.api.routes.images import IMAGE_RESPONSE, current_file
from app.api.routes.search import read_upload
from app.api.schemas import COLLECTION_NAME
from app.core.config import Settings
from app.core.errors import NotFoundError

PREFIX = "/compat/pic-search"
router = APIRouter(prefix=PREFIX, tags=["compat-pic-search"], responses=ERROR_RESPONSES)
TEXT: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Text."}
}
TOP_K = "Number of results (top k), 1-100; 1 when omitted."
TableQuery = Annotated[
    str | None, Query(alias="Table", pattern=COLLECTION_NAME, description=TABLE_DESCRIPTION)
]


@router.post(
    "/api/v1/train",
    dependencies=[ApiKeyDep],
    summary="Start loading a folder",
    response_class=Response,  # errors stay documented as JSON
    responses=TEXT,
    openapi_extra=body_doc(TrainArgs, required=True),
)
async def train(request: Request, services: ServicesDep) -> PlainTextResponse:
    """`File` (a folder inside the image roots) and optional `Table`, as a JSON body, form
    fields or query arguments. Queues a Picsearch load job and answers `Start` at once;
    `GET /api/v1/process` follows it. Nothing is copied (the demo copied the folder)."""
    args = await demo_args(request, TrainArgs)
    await run_in_threadpool(start_load, services, args.File, args.Table)
    return PlainTextResponse("Start")


@router.get(
    "/api/v1/process",
    summary="Progress of the latest load",
    response_class=Response,  # errors stay documented as JSON
    responses=TEXT,
)
def process(services: ServicesDep, table: TableQuery = None) -> PlainTextResponse:
    """`current: N, total: M` (files handled, files found) of the latest load of `Table`."""
    return PlainTextResponse(progress_text(services, table))


@router.post(
    "/api/v1/count",
    summary="Number of indexed images",
    response_class=Response,  # errors stay documented as JSON
    responses=TEXT,
    openapi_extra=body_doc(TableArgs, required=False),
)
async def count(request: Request, services: ServicesDep) -> PlainTextResponse:
    """The number of images in `Table` (body, form or query), as text."""
    args = await demo_args(request, TableArgs)
    store = await run_in_threadpool(services.collections.get, args.Table)
    return PlainTextResponse(str(await run_in_threadpool(store.count)))


def _data_url(
    request: Request, settings: Settings, image_id: str, path: str, table: str | None
) -> str:
    url = request.url_for("pic_search_data", name=f"{image_id}{Path(path).suffix.lower()}")
    params = {"Table": table} if table else {}
    key = query_api_key(request, settings)
    if key is not None:  # the caller put its key in the URL; the image URLs need it too
        params[API_KEY_QUERY] = key
    return str(url.include_query_params(**params))


@router.post("/api/v1/search", summary="Search by image upload")
async def search(
    request: Request,
    services: ServicesDep,
    file: Annotated[UploadFile, File(description="The query image.")],
    num: Annotated[int | None, Form(alias="Num", ge=1, le=100, description=TOP_K)] = None,
    table: Annotated[
        str | None, Form(alias="Table", pattern=COLLECTION_NAME, description=TABLE_DESCRIPTION)
    ] = None,
    num_query: Annotated[int | None, Query(alias="Num", ge=1, le=100, description=TOP_K)] = None,
    table_query: TableQuery = None,
) -> list[tuple[str, float]]:
    """`[image_url, distance]` pairs, closest first. `distance` is the squared L2 distance
    of the unit vectors (2 - 2 cosine: 0 for the same image); `image_url` is
    `{API_URL}/data/{id}.{ext}`. `Num` and `Table` are form fields or query arguments."""
    top_k = num or num_query or 1
    collection = table or table_query
    data = await read_upload(file, services.settings.max_upload_bytes)
    hits = await nearest(services, collection, data, top_k)
    return [(_data_url(request, services.settings, i, p, collection), d) for i, p, d in hits]


@router.get(
    "/data/{name}",
    name="pic_search_data",
    summary="Image bytes by result name",
    response_class=Response,
    responses=IMAGE_RESPONSE,
)
def data(name: str, services: ServicesDep, table: TableQuery = None) -> FileResponse:
    """`{name}` is `{id}.{ext}` from a search result URL: only indexed files are served."""
    store = services.collections.get(table)
    try:
        path, mime = current_file(services.settings, store, name.split(".", 1)[0])
    except NotFoundError:
        raise NotFoundError(f"no indexed image named {name!r}") from None
    return FileResponse(path, media_type=mime)


@router.post(
    "/api/v1/delete",
    dependencies=[ApiKeyDep],
    summary="Drop a collection's vectors",
    response_class=Response,  # errors stay documented as JSON
    responses=TEXT,
    openapi_extra=body_doc(TableArgs, required=False),
)
async def delete(request: Request, services: ServicesDep) -> PlainTextResponse:
    """Cancel the loads into `Table`, drop its vectors (the default collection comes back
    empty). Image files are never deleted (the demo deleted its copies)."""
    args = await demo_args(request, TableArgs)
    store = await run_in_threadpool(services.collections.get, args.Table)
    dropped = await run_in_threadpool(drop_store, services, store)
    return PlainTextResponse(
        f"Deleted collection {store.name}: {dropped.dropped} vectors; files kept"
    )
