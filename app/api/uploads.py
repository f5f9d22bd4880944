"""Adding one uploaded image to the index: stored content-addressed, embedded by the API.

The file lands in `PICSEARCH_DATA_DIR/uploads/<sha256>.<ext>`, an image root of its own, and
its row is exactly what a folder load of that file would write (same id, size, mtime and
content hash), so loading the uploads folder later skips it as unchanged.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

from starlette.concurrency import run_in_threadpool

from app.api.deps import Services
from app.api.routes.search import decode_upload
from app.api.schemas import ImageAdded
from app.core.config import Settings
from app.core.regionstore import ImageRegions
from app.core.vectorstore import ImageRow, VectorStore, content_hash, image_id
from app.ml.encoder import Encoder
from app.ml.regions import embed_windows, region_windows

UPLOAD_JOB_ID = "upload"  # the job_id recorded on rows written by an upload
EXTENSIONS = {
    "JPEG": ".jpg",
    "MPO": ".jpg",
    "PNG": ".png",
    "WEBP": ".webp",
    "BMP": ".bmp",
    "GIF": ".gif",
    "TIFF": ".tiff",
}


def store_bytes(folder: Path, data: bytes, fmt: str) -> Path:
    """Write `data` as `<sha256>.<ext>` under `folder` unless already there; its resolved path.

    An existing file is never rewritten (its mtime, and so its row, stays valid); concurrent
    uploads of the same bytes race on a hard link, which only one can create.
    """
    name = hashlib.sha256(data).hexdigest() + EXTENSIONS[fmt]
    target = folder / name
    if not target.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{name}.{uuid.uuid4().hex}.tmp"
        tmp.write_bytes(data)
        try:
            os.link(tmp, target)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return target.resolve()


def _write_row(
    services: Services, store: VectorStore, row: ImageRow, regions: dict[str, ImageRegions]
) -> None:
    with services.jobs.writer_lock(store.name, services.settings.single_writer):
        store.upsert([row], regions)
    store.await_searchable()


def _regions(
    data: bytes, ident: str, encoder: Encoder, settings: Settings
) -> dict[str, ImageRegions]:
    """The region rows of an upload to a collection with regions, as a load makes them."""
    return embed_windows(encoder, {ident: region_windows(data, settings)})


async def add_upload(services: Services, store: VectorStore, data: bytes) -> ImageAdded:
    """Store and index uploaded image bytes in `store`; a no-op if already indexed unchanged."""
    settings = services.settings
    encoder = await run_in_threadpool(services.query_encoder, store)
    image = await run_in_threadpool(decode_upload, encoder, data, settings.max_image_pixels)
    path = await run_in_threadpool(store_bytes, settings.uploads_dir, data, image.format)
    ident = image_id(str(path))
    st = await run_in_threadpool(path.stat)
    stored = (await run_in_threadpool(store.existing, [ident])).get(ident)
    if stored is not None and (stored.size, stored.mtime_ns) == (st.st_size, st.st_mtime_ns):
        return ImageAdded(id=ident, path=str(path), collection=store.name, created=False)
    vector = await services.batcher(encoder).embed_one(image.pixels)
    row = ImageRow(
        id=ident,
        vector=vector.tolist(),
        path=str(path),
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        content_hash=content_hash(data),
        job_id=UPLOAD_JOB_ID,
    )
    regions: dict[str, ImageRegions] = {}
    if store.regions is not None:
        regions = await run_in_threadpool(_regions, data, ident, encoder, settings)
    await run_in_threadpool(_write_row, services, store, row, regions)
    return ImageAdded(id=ident, path=str(path), collection=store.name, created=True)
