"""Search by uploaded image or by an indexed image's id."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, File, Form, Query, UploadFile
from starlette.concurrency import run_in_threadpool

from app.api.deps import CollectionDep, Services, ServicesDep
from app.api.errors import ERROR_RESPONSES
from app.api.region_search import as_hits, region_query, search_regions
from app.api.schemas import (
    ABSOLUTE_PATH,
    COLLECTION_NAME,
    DuplicateImage,
    Match,
    SearchResponse,
    SearchResult,
    SearchTimings,
)
from app.core.config import Settings
from app.core.errors import InvalidImageError, PayloadTooLarge, UnsupportedMediaType
from app.core.vectorstore import SearchHit, VectorStore, folder_prefix
from app.ml.encoder import Encoder
from app.ml.imageio import DecodedImage, ImageDecodeError, decode_image
from app.ml.region_match import Ranked
from app.ml.regions import RegionQuery

router = APIRouter(prefix="/api/v1", tags=["search"], responses=ERROR_RESPONSES)

NOT_AN_IMAGE = ("empty file", "not an image", "unsupported image format")
SCORE_DECIMALS = 6
COLLAPSE_OVERFETCH = 4  # candidates fetched per wanted result when collapsing duplicates


@dataclass(frozen=True)
class SearchOptions:
    top_k: int = 10
    min_score: float | None = None
    folder: str | None = None
    collapse_duplicates: bool = False


def query_options(
    top_k: Annotated[int, Query(ge=1, le=100, description="Number of results, 1-100.")] = 10,
    min_score: Annotated[
        float | None, Query(ge=-1, le=1, description="Leave out results below this score.")
    ] = None,
    folder: Annotated[
        str | None,
        Query(pattern=ABSOLUTE_PATH, max_length=4096, description="Only images under it."),
    ] = None,
    collapse_duplicates: Annotated[
        bool, Query(description="Merge byte-identical files into one result.")
    ] = False,
) -> SearchOptions:
    return SearchOptions(top_k, min_score, folder, collapse_duplicates)


def image_urls(image_id: str, store: VectorStore) -> tuple[str, str]:
    suffix = "" if store.name == store.settings.collection else f"?collection={store.name}"
    base = f"/api/v1/images/{image_id}"
    return f"{base}{suffix}", f"{base}/thumbnail{suffix}"


def shape_results(
    hits: list[SearchHit],
    options: SearchOptions,
    store: VectorStore,
    matches: dict[str, Ranked] | None = None,
) -> list[SearchResult]:
    """Apply the minimum score, collapse identical content, cut to top_k."""
    results: list[SearchResult] = []
    by_hash: dict[str, SearchResult] = {}
    for hit in hits:
        score = round(hit.score, SCORE_DECIMALS)  # compare what the client sees
        if options.min_score is not None and score < options.min_score:
            continue  # verified region hits come first, whatever their score
        if options.collapse_duplicates and hit.content_hash in by_hash:
            by_hash[hit.content_hash].duplicates.append(DuplicateImage(id=hit.id, path=hit.path))
            continue
        if len(results) == options.top_k:
            continue  # keep scanning: later hits may still be duplicates of kept ones
        image_url, thumbnail_url = image_urls(hit.id, store)
        result = SearchResult(
            id=hit.id,
            path=hit.path,
            score=score,
            match=_match((matches or {}).get(hit.id)),
            image_url=image_url,
            thumbnail_url=thumbnail_url,
        )
        results.append(result)
        by_hash.setdefault(hit.content_hash, result)
    return results


def _match(ranked: Ranked | None) -> Match:
    if ranked is None or ranked.box is None:
        return Match(kind="image")
    size = list(ranked.image_size) if ranked.image_size else None
    return Match(kind="region", box=list(ranked.box), image_size=size, verified=ranked.verified)


def global_hits(
    store: VectorStore, vector: np.ndarray, options: SearchOptions, exclude_id: str | None = None
) -> list[SearchHit]:
    fetch = options.top_k * (COLLAPSE_OVERFETCH if options.collapse_duplicates else 1)
    return store.search(vector, fetch, exclude_id=exclude_id, folder=options.folder)


def run_region_search(
    store: VectorStore,
    encoder: Encoder,
    query: RegionQuery,
    vector: np.ndarray,
    options: SearchOptions,
) -> tuple[list[SearchResult], float]:
    """Global and region search merged; and the seconds the region part took."""
    hits = global_hits(store, vector, options)
    started = time.perf_counter()
    prefix = folder_prefix(options.folder) if options.folder else None
    outcome = search_regions(store, encoder, query, hits, prefix)
    merged = as_hits(outcome, hits)
    results = shape_results([h for h, _ in merged], options, store, {h.id: r for h, r in merged})
    return results, time.perf_counter() - started


def run_search(
    store: VectorStore, vector: np.ndarray, options: SearchOptions, exclude_id: str | None = None
) -> list[SearchResult]:
    return shape_results(global_hits(store, vector, options, exclude_id), options, store)


def decode_upload(encoder: Encoder, data: bytes, max_pixels: int) -> DecodedImage:
    """Decode uploaded bytes for `encoder`: 415 if not an image, 422 if undecodable."""
    try:
        return decode_image(data, size=encoder.image_size, max_pixels=max_pixels)
    except ImageDecodeError as exc:
        if exc.reason.startswith(NOT_AN_IMAGE):
            raise UnsupportedMediaType(f"upload is not a supported image: {exc.reason}") from None
        raise InvalidImageError(f"cannot decode the uploaded image: {exc.reason}") from None


def _decode_query(encoder: Encoder, data: bytes, max_pixels: int) -> np.ndarray:
    return decode_upload(encoder, data, max_pixels).pixels


def _region_query(data: bytes, settings: Settings) -> RegionQuery:
    try:
        return region_query(data, settings)
    except ImageDecodeError as exc:  # decoded once already: only a limit can differ
        raise InvalidImageError(f"cannot decode the uploaded image: {exc.reason}") from None


async def embed_query(services: Services, store: VectorStore, data: bytes) -> np.ndarray:
    """The vector of uploaded image bytes, embedded with `store`'s own model."""
    encoder = await run_in_threadpool(services.query_encoder, store)
    pixels = await run_in_threadpool(
        _decode_query, encoder, data, services.settings.max_image_pixels
    )
    return await services.batcher(encoder).embed_one(pixels)


async def read_upload(upload: UploadFile, limit: int) -> bytes:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"upload exceeds {limit:,} bytes")
    return data


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


@router.post("/search", summary="Search by image upload")
async def search(
    services: ServicesDep,
    image: Annotated[UploadFile, File(description="JPEG, PNG, WebP, BMP, GIF or TIFF.")],
    top_k: Annotated[int, Form(ge=1, le=100, description="Number of results, 1-100.")] = 10,
    collection: Annotated[
        str | None, Form(pattern=COLLECTION_NAME, description="Default collection if omitted.")
    ] = None,
    min_score: Annotated[
        float | None, Form(ge=-1, le=1, description="Leave out results below this score.")
    ] = None,
    folder: Annotated[
        str | None, Form(pattern=ABSOLUTE_PATH, max_length=4096, description="Only under it.")
    ] = None,
    collapse_duplicates: Annotated[
        bool, Form(description="Merge byte-identical files into one result.")
    ] = False,
) -> SearchResponse:
    """Embed the uploaded image with the collection's model and return the most similar
    indexed images, best first, with cosine similarity as `score`."""
    options = SearchOptions(top_k, min_score, folder, collapse_duplicates)
    data = await read_upload(image, services.settings.max_upload_bytes)
    store = await run_in_threadpool(services.collections.get, collection)
    encoder = await run_in_threadpool(services.query_encoder, store)
    t0 = time.perf_counter()
    pixels = await run_in_threadpool(
        _decode_query, encoder, data, services.settings.max_image_pixels
    )
    region_input = None
    if store.regions is not None:
        region_input = await run_in_threadpool(_region_query, data, services.settings)
    t1 = time.perf_counter()
    vector = await services.batcher(encoder).embed_one(pixels)
    t2 = time.perf_counter()
    regions_s: float | None = None
    if region_input is not None:
        results, regions_s = await run_in_threadpool(
            run_region_search, store, encoder, region_input, vector, options
        )
    else:
        results = await run_in_threadpool(run_search, store, vector, options)
    t3 = time.perf_counter()
    stage = services.metrics.search_stage
    stage.labels("decode").observe(t1 - t0)
    stage.labels("embed").observe(t2 - t1)
    stage.labels("search").observe(t3 - t2)
    return SearchResponse(
        results=results,
        took_ms=_ms(t3 - t0),
        timings=SearchTimings(
            decode_ms=_ms(t1 - t0),
            embed_ms=_ms(t2 - t1),
            search_ms=_ms(t3 - t2 - (regions_s or 0.0)),
            regions_ms=None if regions_s is None else _ms(regions_s),
        ),
    )


@router.get("/images/{image_id}/similar", summary="More like an indexed image")
def similar(
    image_id: str,
    store: CollectionDep,
    options: Annotated[SearchOptions, Depends(query_options)],
) -> SearchResponse:
    """Search with the stored vector of `image_id`; the image itself is left out."""
    t0 = time.perf_counter()
    vector = store.vector(image_id)
    results = run_search(store, vector, options, exclude_id=image_id)
    took = _ms(time.perf_counter() - t0)
    return SearchResponse(
        results=results,
        took_ms=took,
        timings=SearchTimings(decode_ms=0.0, embed_ms=0.0, search_ms=took),
    )
