"""Indexed images, served by id only (no route takes a file path to read); adding one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, UploadFile, status
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool

from app.api.deps import ApiKeyDep, CollectionDep, ServicesDep
from app.api.errors import ERROR_RESPONSES
from app.api.routes.search import read_upload
from app.api.schemas import ABSOLUTE_PATH, COLLECTION_NAME, DeleteResult, ImageAdded
from app.api.uploads import add_upload
from app.core.config import Settings
from app.core.errors import NotFoundError
from app.core.paths import is_within
from app.core.vectorstore import VectorStore
from app.ml.imageio import MIME_TYPES, ImageDecodeError, make_thumbnail, sniff_file_format

router = APIRouter(prefix="/api/v1/images", tags=["images"], responses=ERROR_RESPONSES)
IMAGE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/*": {}}, "description": "The image bytes."}
}


def current_file(settings: Settings, store: VectorStore, image_id: str) -> tuple[Path, str]:
    """The indexed file of `image_id` and its MIME type, if still a readable image inside
    the roots; 404 otherwise."""
    stored = store.get(image_id)
    path = Path(stored.path).resolve()
    if not is_within(path, settings.readable_roots):
        raise NotFoundError(f"image {image_id} is no longer inside the image roots")
    if not path.is_file():
        raise NotFoundError(f"image {image_id} is no longer on disk: {stored.path}")
    try:
        fmt = sniff_file_format(path)
    except (ImageDecodeError, OSError) as exc:
        raise NotFoundError(f"image {image_id} is no longer a readable image: {exc}") from None
    return path, MIME_TYPES[fmt]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    dependencies=[ApiKeyDep],
    summary="Add one uploaded image to the index",
    responses={200: {"model": ImageAdded, "description": "Already indexed: nothing changed."}},
)
async def add_image(
    services: ServicesDep,
    response: Response,
    image: Annotated[UploadFile, File(description="JPEG, PNG, WebP, BMP, GIF or TIFF.")],
    collection: Annotated[
        str | None, Form(pattern=COLLECTION_NAME, description="Default collection if omitted.")
    ] = None,
) -> ImageAdded:
    """Store the bytes under the data folder as `uploads/<sha256>.<ext>` (an image root of its
    own) and index that file with the collection's model. The id is the one a folder load of
    the uploads folder gives, so nothing is ever indexed twice; uploading the same bytes again
    changes nothing and answers 200 with `created: false`. Same size, type and pixel limits
    as search uploads."""
    data = await read_upload(image, services.settings.max_upload_bytes)
    store = await run_in_threadpool(services.collections.get, collection)
    added = await add_upload(services, store, data)
    if not added.created:
        response.status_code = status.HTTP_200_OK
    return added


@router.get(
    "/{image_id}", summary="Original image bytes", response_class=Response, responses=IMAGE_RESPONSE
)
def get_image(image_id: str, services: ServicesDep, store: CollectionDep) -> FileResponse:
    """The indexed file as it is on disk now, if still inside an image root."""
    path, mime = current_file(services.settings, store, image_id)
    return FileResponse(path, media_type=mime)


@router.get(
    "/{image_id}/thumbnail",
    summary="Small JPEG preview",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}, "description": "JPEG thumbnail."}},
)
def get_thumbnail(image_id: str, services: ServicesDep, store: CollectionDep) -> Response:
    """A JPEG no larger than `PICSEARCH_THUMBNAIL_SIZE` on its longer side, cached on disk."""
    path, _ = current_file(services.settings, store, image_id)
    settings = services.settings
    st = path.stat()
    cache = (
        settings.thumbnail_dir
        / f"{image_id}-{st.st_size}-{st.st_mtime_ns}-{settings.thumbnail_size}.jpg"
    )
    if cache.is_file():
        data = cache.read_bytes()
    else:
        try:
            data = make_thumbnail(
                path.read_bytes(), settings.thumbnail_size, settings.max_image_pixels
            )
        except ImageDecodeError as exc:
            raise NotFoundError(
                f"image {image_id} can no longer be decoded: {exc.reason}"
            ) from None
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(cache)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})


@router.delete("/{image_id}", dependencies=[ApiKeyDep], summary="Remove one image's vector")
def delete_image(image_id: str, services: ServicesDep, store: CollectionDep) -> DeleteResult:
    """Remove the vector of `image_id` from the collection (the file is not touched).
    404 if the id is not indexed."""
    store.get(image_id)
    with services.jobs.writer_lock(store.name, services.settings.single_writer):
        deleted = store.delete([image_id])
    return DeleteResult(deleted=deleted)


@router.delete("", dependencies=[ApiKeyDep], summary="Remove every vector under a folder")
def delete_folder(
    services: ServicesDep,
    store: CollectionDep,
    folder: Annotated[
        str,
        Query(
            pattern=ABSOLUTE_PATH,
            max_length=4096,
            description="Absolute folder: vectors of files below it are removed (files stay).",
        ),
    ],
) -> DeleteResult:
    """Remove the vectors of every indexed file below `folder`, recursively, whether the
    files still exist or not. Nothing on disk is touched."""
    with services.jobs.writer_lock(store.name, services.settings.single_writer):
        deleted = store.delete(list(store.rows_under(folder)))
    return DeleteResult(deleted=deleted)
