"""Typed access to the Milvus collection (Milvus Lite server or a real Milvus).

Rows are keyed by a stable id derived from the file's resolved path, so every write is an
upsert: loading a folder twice, or a redelivered task, never duplicates a vector.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

import numpy as np
from pymilvus import DataType, MilvusClient, MilvusException

from app.core.config import Settings
from app.core.errors import CollectionMismatch, NotFoundError, ServiceUnavailable

log = logging.getLogger(__name__)

META_PROPERTY = "picsearch.meta"
SCHEMA_VERSION = 1
MAX_PATH_BYTES = 4096
ID_LENGTH = 24
SCALAR_FIELDS = ["path", "size", "mtime_ns", "content_hash", "job_id"]


def image_id(resolved_path: str) -> str:
    """Stable id of an image file: a hash of its resolved path."""
    raw = resolved_path.encode("utf-8", "surrogateescape")
    return hashlib.blake2b(raw, digest_size=ID_LENGTH // 2).hexdigest()


def valid_id(value: str) -> bool:
    return len(value) == ID_LENGTH and all(c in "0123456789abcdef" for c in value)


class ImageRow(TypedDict):
    id: str
    vector: list[float]
    path: str
    size: int
    mtime_ns: int
    content_hash: str
    job_id: str


@dataclass(frozen=True)
class StoredImage:
    id: str
    path: str
    size: int
    mtime_ns: int
    content_hash: str
    job_id: str


@dataclass(frozen=True)
class SearchHit:
    id: str
    path: str
    score: float


@dataclass(frozen=True)
class CollectionMeta:
    model: str
    weights_id: str
    dim: int
    recipe: str
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    @classmethod
    def from_json(cls, raw: str) -> CollectionMeta:
        return cls(**json.loads(raw))

    def describe(self) -> str:
        return f"model={self.model} weights={self.weights_id} dim={self.dim} recipe={self.recipe}"


def _stored(row: dict[str, Any]) -> StoredImage:
    return StoredImage(
        id=str(row["id"]),
        path=str(row["path"]),
        size=int(row["size"]),
        mtime_ns=int(row["mtime_ns"]),
        content_hash=str(row["content_hash"]),
        job_id=str(row["job_id"]),
    )


def _quote(value: str) -> str:
    return json.dumps(value)  # a JSON string literal is a valid Milvus string literal


class VectorStore:
    """One Milvus collection. Connects lazily and reconnects after failures."""

    def __init__(self, settings: Settings, meta: CollectionMeta) -> None:
        self.settings = settings
        self.name = settings.collection
        self.meta = meta
        self._client: MilvusClient | None = None
        self._lock = threading.Lock()
        self._ready = False

    # -- connection -------------------------------------------------------------------------
    def client(self) -> MilvusClient:
        with self._lock:
            if self._client is None:
                token = self.settings.milvus_token
                try:
                    self._client = MilvusClient(
                        uri=self.settings.milvus_dsn,
                        token=token.get_secret_value() if token else "",
                        timeout=10,
                    )
                except MilvusException as exc:
                    raise ServiceUnavailable(f"Milvus unreachable: {exc.message}") from exc
            return self._client

    def reset(self) -> None:
        with self._lock:
            client, self._client, self._ready = self._client, None, False
        if client is not None:
            try:
                client.close()
            except Exception:  # closing a dead channel may raise anything
                log.debug("closing Milvus client failed", exc_info=True)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self.client(), *args, **kwargs)
        except MilvusException as exc:
            self.reset()
            raise ServiceUnavailable(f"Milvus {what} failed: {exc.message}") from exc
        except ConnectionError as exc:
            self.reset()
            raise ServiceUnavailable(f"Milvus {what} failed: {exc}") from exc

    # -- collection -------------------------------------------------------------------------
    def stored_meta(self) -> CollectionMeta | None:
        def get(c: MilvusClient) -> CollectionMeta | None:
            if not c.has_collection(self.name):
                return None
            raw = c.describe_collection(self.name).get("properties", {}).get(META_PROPERTY)
            return CollectionMeta.from_json(raw) if raw else None

        result: CollectionMeta | None = self._call("describe", get)
        return result

    def ensure_collection(self) -> None:
        """Create the collection if missing; refuse if it holds other vectors."""
        if self._ready:
            return
        existing = self._call("has_collection", lambda c: c.has_collection(self.name))
        if not existing:
            self._call("create_collection", self._create)
        else:
            stored = self.stored_meta()
            if stored != self.meta:
                found = stored.describe() if stored else "no Picsearch metadata"
                raise CollectionMismatch(
                    f"collection {self.name!r} holds vectors from {found}; this service is "
                    f"configured for {self.meta.describe()}. Vectors are never mixed: set "
                    "PICSEARCH_COLLECTION to another name, or drop the collection "
                    "(DELETE /api/v1/collection?confirm=true) and load the folders again.",
                    details={
                        "stored": stored.__dict__ if stored else None,
                        "configured": self.meta.__dict__,
                    },
                )
        self._call("load_collection", lambda c: c.load_collection(self.name))
        self._ready = True

    def _create(self, c: MilvusClient) -> None:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=ID_LENGTH)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.meta.dim)
        schema.add_field("path", DataType.VARCHAR, max_length=MAX_PATH_BYTES)
        schema.add_field("size", DataType.INT64)
        schema.add_field("mtime_ns", DataType.INT64)
        schema.add_field("content_hash", DataType.VARCHAR, max_length=64)
        schema.add_field("job_id", DataType.VARCHAR, max_length=64)
        index = MilvusClient.prepare_index_params()
        index_type = self.settings.effective_index_type
        params: dict[str, Any] = {}
        if index_type == "HNSW":
            params = {
                "M": self.settings.hnsw_m,
                "efConstruction": self.settings.hnsw_ef_construction,
            }
        elif index_type == "IVF_FLAT":
            params = {"nlist": 1024}
        index.add_index(
            field_name="vector", index_type=index_type, metric_type="COSINE", params=params
        )
        c.create_collection(
            self.name, schema=schema, index_params=index, consistency_level="Strong"
        )
        c.alter_collection_properties(self.name, properties={META_PROPERTY: self.meta.to_json()})
        log.info("created collection %s (%s, %s)", self.name, self.meta.describe(), index_type)

    def drop(self) -> None:
        self._call("drop_collection", lambda c: c.drop_collection(self.name))
        self._ready = False

    def index_type(self) -> str:
        def get(c: MilvusClient) -> str:
            return str(c.describe_index(self.name, "vector").get("index_type", "unknown"))

        return str(self._call("describe_index", get))

    # -- rows -------------------------------------------------------------------------------
    def upsert(self, rows: Sequence[ImageRow]) -> None:
        if rows:
            self.ensure_collection()
            self._call("upsert", lambda c: c.upsert(self.name, list(rows)))

    def flush(self) -> None:
        self.ensure_collection()
        self._call("flush", lambda c: c.flush(self.name))

    def count(self) -> int:
        self.ensure_collection()
        res = self._call(
            "count", lambda c: c.query(self.name, filter="", output_fields=["count(*)"])
        )
        return int(res[0]["count(*)"])

    def existing(self, ids: Sequence[str]) -> dict[str, StoredImage]:
        if not ids:
            return {}
        self.ensure_collection()
        rows = self._call(
            "get", lambda c: c.get(self.name, ids=list(ids), output_fields=SCALAR_FIELDS)
        )
        return {str(r["id"]): _stored(r) for r in rows}

    def get(self, id_: str) -> StoredImage:
        found = self.existing([id_]) if valid_id(id_) else {}
        if id_ not in found:
            raise NotFoundError(f"no image with id {id_!r}")
        return found[id_]

    def vector(self, id_: str) -> np.ndarray:
        self.get(id_)
        rows = self._call("get", lambda c: c.get(self.name, ids=[id_], output_fields=["vector"]))
        return np.asarray(rows[0]["vector"], dtype=np.float32)

    def search(
        self, vector: np.ndarray, top_k: int, exclude_id: str | None = None
    ) -> list[SearchHit]:
        self.ensure_collection()
        params: dict[str, Any] = {"metric_type": "COSINE"}
        if self.settings.effective_index_type == "HNSW":
            params["params"] = {"ef": max(self.settings.search_ef, top_k)}
        flt = f"id != {_quote(exclude_id)}" if exclude_id else ""
        res = self._call(
            "search",
            lambda c: c.search(
                self.name,
                data=[vector.astype(np.float32).tolist()],
                limit=top_k,
                filter=flt,
                output_fields=["path"],
                search_params=params,
            ),
        )
        return [
            SearchHit(id=str(h["id"]), path=str(h["entity"]["path"]), score=float(h["distance"]))
            for h in res[0]
        ]

    def ping(self) -> None:
        self._call("list_collections", lambda c: c.list_collections())
