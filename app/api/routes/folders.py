"""Browse folders inside the image roots (for the folder picker); never lists outside."""

from __future__ import annotations

import os
from typing import Annotated

from fastapi import APIRouter, Query

from app.api.deps import ServicesDep
from app.api.errors import ERROR_RESPONSES
from app.api.schemas import ABSOLUTE_PATH, FolderEntry, FolderListing, Roots
from app.core.paths import is_within, resolve_in_roots
from app.ml.imageio import has_image_extension

router = APIRouter(prefix="/api/v1", tags=["folders"], responses=ERROR_RESPONSES)
MAX_ENTRIES = 2000


@router.get("/roots", summary="The configured image roots")
def roots(services: ServicesDep) -> Roots:
    """Directories that loads may read (`PICSEARCH_IMAGE_ROOTS`)."""
    return Roots(roots=[str(r) for r in services.settings.image_roots])


@router.get("/folders", summary="List sub-folders of a folder inside the roots")
def folders(
    services: ServicesDep,
    path: Annotated[
        str,
        Query(
            description="Absolute folder path inside an image root.",
            pattern=ABSOLUTE_PATH,
            max_length=4096,
        ),
    ],
) -> FolderListing:
    """Sub-folders (hidden ones left out, at most 2000) and the number of image files."""
    image_roots = services.settings.image_roots
    folder = resolve_in_roots(path, image_roots, want_dir=True)
    subfolders: list[FolderEntry] = []
    images = 0
    with os.scandir(folder) as it:
        for entry in it:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir():
                    if len(subfolders) < MAX_ENTRIES:
                        subfolders.append(FolderEntry(name=entry.name, path=entry.path))
                elif has_image_extension(entry.name):
                    images += 1
            except OSError:
                continue
    subfolders.sort(key=lambda e: e.name.lower())
    parent = (
        folder.parent
        if folder not in image_roots and is_within(folder.parent, image_roots)
        else None
    )
    return FolderListing(
        path=str(folder),
        parent=str(parent) if parent else None,
        folders=subfolders,
        image_files=images,
    )
