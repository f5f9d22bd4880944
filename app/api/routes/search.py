"""Search by uploaded image or by an indexed image's id."""

from __future__ import annotations

import time
from typing import Annotated

import numpy as np
from fastapi import APIRouter, File, Form, Query, UploadFile
from starlette.concurrency import run_in_threadpool

from app.api.deps import Services, ServicesDep
from app.api.errors import ERROR_RESPONSES
from app.api.schemas import SearchResponse, SearchResult, SearchTimings
from app.core.errors import InvalidImageError, PayloadTooLarge, UnsupportedMediaType
from app.core.vectorstore import SearchHit
from app.ml.imageio import ImageDecodeError, decode_image

router = APIRouter(prefix="/api/v1", tags=["search"], responses=ERROR_RESPONSES)

TopK = Annotated[int, Query(ge=1, le=100, description="Number of results, 1-100.")]
NOT_AN_IMAGE = ("empty file", "not an image", "unsupported image format")


def _results(hits: list[SearchHit]) -> list[SearchResult]:
    return [
        SearchResult(
            id=h.id,
            path=h.path,
            score=round(h.score, 6),
            image_url=f"/api/v1/images/{h.id}",
            thumbnail_url=f"/api/v1/images/{h.id}/thumbnail",
        )
        for h in hits
    ]


def _decode_query(services: Services, data: bytes) -> np.ndarray:
    settings = services.settings
    try:
        image = decode_image(data, size=settings.image_size, max_pixels=settings.max_image_pixels)
    except ImageDecodeError as exc:
        if exc.reason.startswith(NOT_AN_IMAGE):
            raise UnsupportedMediaType(f"upload is not a supported image: {exc.reason}") from None
        raise InvalidImageError(f"cannot decode the uploaded image: {exc.reason}") from None
    return image.pixels


async def _read_upload(upload: UploadFile, limit: int) -> bytes:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"upload exceeds {limit:,} bytes")
    return data


@router.post("/search", summary="Search by image upload")
async def search(
    services: ServicesDep,
    image: Annotated[UploadFile, File(description="JPEG, PNG, WebP, BMP, GIF or TIFF.")],
    top_k: Annotated[int, Form(ge=1, le=100, description="Number of results, 1-100.")] = 10,
) -> SearchResponse:
    """Embed the uploaded image with the collection's model and return the most similar
    indexed images, best first, with cosine similarity as `score`."""
    data = await _read_upload(image, services.settings.max_upload_bytes)
    t0 = time.perf_counter()
    pixels = await run_in_threadpool(_decode_query, services, data)
    t1 = time.perf_counter()
    vector = await services.batcher.embed_one(pixels)
    t2 = time.perf_counter()
    hits = await run_in_threadpool(services.store.search, vector, top_k)
    t3 = time.perf_counter()
    return SearchResponse(
        results=_results(hits),
        took_ms=round((t3 - t0) * 1000, 2),
        timings=SearchTimings(
            decode_ms=round((t1 - t0) * 1000, 2),
            embed_ms=round((t2 - t1) * 1000, 2),
            search_ms=round((t3 - t2) * 1000, 2),
        ),
    )


@router.get("/images/{image_id}/similar", summary="More like an indexed image")
def similar(image_id: str, services: ServicesDep, top_k: TopK = 10) -> SearchResponse:
    """Search with the stored vector of `image_id`; the image itself is left out."""
    t0 = time.perf_counter()
    vector = services.store.vector(image_id)
    hits = services.store.search(vector, top_k, exclude_id=image_id)
    took = round((time.perf_counter() - t0) * 1000, 2)
    return SearchResponse(
        results=_results(hits),
        took_ms=took,
        timings=SearchTimings(decode_ms=0.0, embed_ms=0.0, search_ms=took),
    )
