"""Region rows of a collection with regions: one vector per window of an indexed image.

They live in a Milvus collection of their own, `<name>_regions`, so the global search is
untouched, and are owned by the global row: written before it (a load cut short writes
them again), replaced whenever the image is embedded again, deleted with it. Searches return
the best window per image (`group_by_field`); a server that cannot group (Milvus < 2.4) gets
an over-fetched search grouped here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pymilvus import DataType, MilvusClient, MilvusException

from app.core.config import Settings
from app.core.indexing import search_params, vector_index

log = logging.getLogger(__name__)

SUFFIX = "_regions"
OWNER_PROPERTY = "picsearch.regions_of"
INSERT_ROWS = 2000  # rows per insert call: a gRPC message stays well under its limit
UNGROUPED_FETCH = 2000  # windows fetched per query vector when the server cannot group


def regions_name(collection: str) -> str:
    return collection + SUFFIX


@dataclass(frozen=True)
class ImageRegions:
    """What one image's region rows hold."""

    boxes: np.ndarray  # (M, 4) int: x, y, w, h in the original's upright pixels
    vectors: np.ndarray  # (M, D) float32, L2-normalised
    image_size: tuple[int, int]  # the original's upright width and height


@dataclass(frozen=True)
class RegionHit:
    image_id: str
    box: tuple[int, int, int, int]  # x, y, w, h in the original's pixels
    score: float  # cosine of the query to that window
    image_size: tuple[int, int] = (0, 0)  # the original's upright width and height


def _quoted_list(values: Sequence[str]) -> str:
    return "[" + ", ".join('"' + v + '"' for v in values) + "]"  # ids are hex


class RegionStore:
    """The region rows of collection `owner`, through the owner's connection."""

    def __init__(self, settings: Settings, owner: str, dim: int, conn: Any) -> None:
        self.settings = settings
        self.name = regions_name(owner)
        self.owner = owner
        self.dim = dim
        self.conn = conn  # app.core.vectorstore.MilvusConnection
        self._ready_generation = -1
        self._groups = True  # False once the server refused group_by

    def ensure_collection(self) -> None:
        if self._ready_generation == self.conn.generation:
            return
        generation = self.conn.generation
        if not self.conn.call("has_collection", lambda c: c.has_collection(self.name)):
            self.conn.call("create_collection", self._create)
        self.conn.call("load_collection", lambda c: c.load_collection(self.name))
        self._ready_generation = generation

    def _create(self, c: MilvusClient) -> None:
        schema = MilvusClient.create_schema(auto_id=True, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("image_id", DataType.VARCHAR, max_length=32)
        for name in ("x", "y", "w", "h", "image_w", "image_h"):
            schema.add_field(name, DataType.INT32)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        index = vector_index(self.settings)
        c.create_collection(
            self.name,
            schema=schema,
            index_params=index,
            consistency_level="Strong",
            properties={OWNER_PROPERTY: self.owner},
        )
        log.info("created region collection %s (%s)", self.name, self.settings.effective_index_type)

    def drop(self) -> None:
        self.conn.call("drop_collection", lambda c: c.drop_collection(self.name))
        self._ready_generation = -1

    def count(self) -> int:
        self.ensure_collection()
        res = self.conn.call(
            "count", lambda c: c.query(self.name, filter="", output_fields=["count(*)"])
        )
        return int(res[0]["count(*)"])

    def replace(self, windows: dict[str, ImageRegions]) -> None:
        """Make `windows` (by image id) the only region rows of those images."""
        if not windows:
            return
        self.delete_images(list(windows))
        rows = [
            {
                "image_id": image_id,
                "x": int(box[0]),
                "y": int(box[1]),
                "w": int(box[2]),
                "h": int(box[3]),
                "image_w": regions.image_size[0],
                "image_h": regions.image_size[1],
                "vector": vector,
            }
            for image_id, regions in windows.items()
            for box, vector in zip(
                regions.boxes, regions.vectors.astype(np.float32).tolist(), strict=True
            )
        ]
        for start in range(0, len(rows), INSERT_ROWS):
            part = rows[start : start + INSERT_ROWS]
            self.conn.call("insert", lambda c, p=part: c.insert(self.name, p))

    def delete_images(self, image_ids: Sequence[str]) -> None:
        self.ensure_collection()
        for start in range(0, len(image_ids), 500):
            flt = f"image_id in {_quoted_list(image_ids[start : start + 500])}"
            self.conn.call("delete", lambda c, f=flt: c.delete(self.name, filter=f))

    def flush(self) -> None:
        self.ensure_collection()
        self.conn.call("flush", lambda c: c.flush(self.name))

    def search(self, vectors: np.ndarray, images: int) -> list[RegionHit]:
        """The best window of each of the `images` best images, over every query vector
        (rows of `vectors`: an image's score is its best window for its best vector)."""
        self.ensure_collection()
        data = vectors.astype(np.float32).tolist()
        results = None
        if self._groups:
            try:
                results = self.conn.client().search(**self._request(data, images, group=True))
            except MilvusException as exc:
                log.info("%s: grouped search failed (%s); trying ungrouped", self.name, exc)
            if results is not None and any(_repeats(r) for r in results):
                results = None  # a server that ignores group_by (Milvus Lite 2.4 did)
            if results is None:
                ungrouped = self._request(data, UNGROUPED_FETCH, group=False)
                results = self.conn.call("search", lambda c: c.search(**ungrouped))
                log.warning("%s: this Milvus does not group searches; grouping here", self.name)
                self._groups = False
        else:
            ungrouped = self._request(data, UNGROUPED_FETCH, group=False)
            results = self.conn.call("search", lambda c: c.search(**ungrouped))
        best: dict[str, RegionHit] = {}
        for per_vector in results:
            for hit in per_vector:
                entity = hit["entity"]
                image_id = str(entity["image_id"])
                score = float(hit["distance"])
                if image_id not in best or score > best[image_id].score:
                    box = (int(entity["x"]), int(entity["y"]), int(entity["w"]), int(entity["h"]))
                    size = (int(entity["image_w"]), int(entity["image_h"]))
                    best[image_id] = RegionHit(image_id, box, score, size)
        return sorted(best.values(), key=lambda h: -h.score)[:images]

    def _request(self, data: list[list[float]], limit: int, *, group: bool) -> dict[str, Any]:
        request: dict[str, Any] = {
            "collection_name": self.name,
            "data": data,
            "limit": limit,
            "output_fields": ["image_id", "x", "y", "w", "h", "image_w", "image_h"],
            "search_params": search_params(self.settings, limit),
            "consistency_level": self.settings.search_consistency,
        }
        if group:
            request["group_by_field"] = "image_id"
        return request


def _repeats(hits: Any) -> bool:
    ids = [str(h["entity"]["image_id"]) for h in hits]
    return len(set(ids)) < len(ids)
