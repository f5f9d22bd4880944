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
from dataclasses import dataclass, field, fields
from typing import Any, TypedDict

import numpy as np
from pymilvus import DataType, MilvusClient, MilvusException

from app.core.config import Settings
from app.core.errors import (
    BadRequestError,
    CollectionMismatch,
    NotFoundError,
    ServiceUnavailable,
)
from app.core.indexing import search_params, vector_index
from app.core.regionstore import ImageRegions, RegionStore

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


def content_hash(data: bytes) -> str:
    """Hash of a file's bytes, recorded per row (finds byte-identical files)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


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
    content_hash: str = ""


@dataclass(frozen=True)
class CollectionMeta:
    """What produced a collection's vectors. Equality decides whether vectors may mix."""

    model: str
    weights_id: str
    dim: int
    recipe: str
    schema_version: int = SCHEMA_VERSION
    # How to rebuild the encoder for this collection; covered by weights_id and recipe.
    weights_source: str = field(default="", compare=False)
    pooling: str = field(default="gem", compare=False)
    image_size: int = field(default=224, compare=False)
    # Region rows beside the global ones (partial-copy search): a collection has them or not.
    regions: bool = False

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    @classmethod
    def from_json(cls, raw: str) -> CollectionMeta:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in json.loads(raw).items() if k in known})

    def describe(self) -> str:
        described = (
            f"model={self.model} weights={self.weights_id} dim={self.dim} recipe={self.recipe}"
        )
        return described + (" regions=on" if self.regions else "")


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
    """A Milvus string literal (Milvus knows no \\u escapes, so non-ASCII stays as is)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _prefix_filter(prefix: str) -> str:
    """A `path like "<prefix>%"` filter matching at least every path under `prefix`.

    LIKE differs across Milvus versions: 2.3 takes `_` literally and refuses `%` before the
    end, Milvus Lite and 2.4+ read `_` as a wildcard, and only 2.5+ accept escapes. So the
    pattern keeps `_` as is (a literal or a wider match) and stops before the first `%` or
    backslash, and before a control character (string literals cannot hold one); callers
    re-check the prefix.
    """
    safe = prefix
    for index, char in enumerate(prefix):
        if char in "%\\" or ord(char) < 32 or ord(char) == 127:
            safe = prefix[:index]
            break
    return f"path like {_quote(safe + '%')}"


def folder_prefix(folder: str) -> str:
    """`/a/b` -> `/a/b/`: matches files below the folder, not `/a/bc`."""
    try:
        folder.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequestError("folder must be valid Unicode text") from None
    return folder.rstrip("/") + "/"


class MilvusConnection:
    """One lazily opened Milvus client shared by every collection; reopened after failures."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: MilvusClient | None = None
        self._lock = threading.Lock()
        self.generation = 0  # bumped on every reset, so stores re-check their collection

    def client(self) -> MilvusClient:
        with self._lock:
            if self._client is None:
                token = self.settings.milvus_token
                try:
                    self._client = MilvusClient(
                        uri=self.settings.milvus_dsn,
                        token=token.get_secret_value() if token else "",
                        db_name=self.settings.milvus_db_name,
                        timeout=10,
                    )
                except MilvusException as exc:
                    raise ServiceUnavailable(f"Milvus unreachable: {exc.message}") from exc
            return self._client

    def reset(self) -> None:
        with self._lock:
            client, self._client = self._client, None
            self.generation += 1
        if client is not None:
            try:
                client.close()
            except Exception:  # closing a dead channel may raise anything
                log.debug("closing Milvus client failed", exc_info=True)

    def call(self, what: str, fn: Any) -> Any:
        try:
            return fn(self.client())
        except MilvusException as exc:
            self.reset()
            raise ServiceUnavailable(f"Milvus {what} failed: {exc.message}") from exc
        except ConnectionError as exc:
            self.reset()
            raise ServiceUnavailable(f"Milvus {what} failed: {exc}") from exc

    def read_meta(self, name: str) -> CollectionMeta | None:
        """The Picsearch metadata of collection `name`, or None if absent or foreign."""

        def get(c: MilvusClient) -> CollectionMeta | None:
            if not c.has_collection(name):
                return None
            raw = c.describe_collection(name).get("properties", {}).get(META_PROPERTY)
            return CollectionMeta.from_json(raw) if raw else None

        result: CollectionMeta | None = self.call("describe", get)
        return result

    def list_names(self) -> list[str]:
        return sorted(str(n) for n in self.call("list_collections", lambda c: c.list_collections()))

    def ping(self) -> None:
        self.call("list_collections", lambda c: c.list_collections())


class VectorStore:
    """One Milvus collection holding vectors of one model/weights/recipe."""

    def __init__(
        self,
        settings: Settings,
        meta: CollectionMeta,
        name: str | None = None,
        connection: MilvusConnection | None = None,
    ) -> None:
        self.settings = settings
        self.name = name or settings.collection
        self.meta = meta
        self.conn = connection or MilvusConnection(settings)
        self._ready_generation = -1
        self.regions = (
            RegionStore(settings, self.name, meta.dim, self.conn) if meta.regions else None
        )

    def reset(self) -> None:
        self.conn.reset()

    def _call(self, what: str, fn: Any) -> Any:
        return self.conn.call(what, fn)

    # -- collection -------------------------------------------------------------------------
    def stored_meta(self) -> CollectionMeta | None:
        return self.conn.read_meta(self.name)

    def exists(self) -> bool:
        return bool(self._call("has_collection", lambda c: c.has_collection(self.name)))

    def ensure_collection(self) -> None:
        """Create the collection if missing; refuse if it holds other vectors."""
        if self._ready_generation == self.conn.generation:
            return
        generation = self.conn.generation
        if not self.exists():
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
        self._ready_generation = generation

    def _create(self, c: MilvusClient) -> None:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=ID_LENGTH)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.meta.dim)
        schema.add_field("path", DataType.VARCHAR, max_length=MAX_PATH_BYTES)
        schema.add_field("size", DataType.INT64)
        schema.add_field("mtime_ns", DataType.INT64)
        schema.add_field("content_hash", DataType.VARCHAR, max_length=64)
        schema.add_field("job_id", DataType.VARCHAR, max_length=64)
        index = vector_index(self.settings)
        index_type = self.settings.effective_index_type
        # The metadata comes with the collection: set afterwards, another process could see
        # the new collection without it and refuse it as foreign (seen on a Milvus server).
        c.create_collection(
            self.name,
            schema=schema,
            index_params=index,
            consistency_level="Strong",
            properties={META_PROPERTY: self.meta.to_json()},
        )
        log.info("created collection %s (%s, %s)", self.name, self.meta.describe(), index_type)

    def drop(self) -> None:
        self._call("drop_collection", lambda c: c.drop_collection(self.name))
        if self.regions is not None:
            self.regions.drop()
        self._ready_generation = -1

    def index_type(self) -> str:
        def get(c: MilvusClient) -> str:
            return str(c.describe_index(self.name, "vector").get("index_type", "unknown"))

        return str(self._call("describe_index", get))

    # -- rows -------------------------------------------------------------------------------
    def upsert(
        self,
        rows: Sequence[ImageRow],
        windows: dict[str, ImageRegions] | None = None,
    ) -> None:
        """Write `rows`; in a collection with regions, first replace those images' region rows
        by `windows` (image id -> boxes, vectors), so a global row never outlives its regions."""
        if rows:
            self.ensure_collection()
            if self.regions is not None:
                self.regions.replace(windows or {})
            self._call("upsert", lambda c: c.upsert(self.name, list(rows)))

    def flush(self) -> None:
        self.ensure_collection()
        self._call("flush", lambda c: c.flush(self.name))

    def finish_load(self) -> None:
        """End of a load: every row it wrote becomes searchable, from any client.

        Milvus Lite gets a flush (it searches unflushed rows ~10x slower). A server has logged
        every acknowledged upsert already, but another client's Session search sees them only
        once the query nodes have consumed them (~0.2-0.4 s later): `await_searchable` waits
        for that. A server's flush would cost ~3 s and make small segments.
        """
        if self.settings.milvus_is_embedded:
            self.flush()
            if self.regions is not None:
                self.regions.flush()
        else:
            self.await_searchable()

    def await_searchable(self) -> None:
        """Return once searches at any consistency level see every write made so far.

        A Strong query waits until the query nodes have consumed up to the current time, and
        they never go back, so later Session and Bounded searches see those writes too.
        Milvus Lite's searches see every acknowledged write already: nothing to wait for.
        """
        if self.settings.milvus_is_embedded:
            return
        self.ensure_collection()
        names = [self.name] + ([self.regions.name] if self.regions is not None else [])
        if self.regions is not None:
            self.regions.ensure_collection()
        for name in names:
            self._call(
                "query",
                lambda c, n=name: c.query(
                    n, filter="", output_fields=["count(*)"], consistency_level="Strong"
                ),
            )

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
        self,
        vector: np.ndarray,
        top_k: int,
        exclude_id: str | None = None,
        folder: str | None = None,
    ) -> list[SearchHit]:
        """Nearest vectors by cosine, best first; optionally only under `folder`."""
        self.ensure_collection()
        clauses = []
        if exclude_id:
            clauses.append(f"id != {_quote(exclude_id)}")
        prefix = folder_prefix(folder) if folder else None
        if prefix:
            clauses.append(_prefix_filter(prefix))
        res = self._call(
            "search",
            lambda c: c.search(
                self.name,
                data=[vector.astype(np.float32).tolist()],
                limit=top_k,
                filter=" and ".join(clauses),
                output_fields=["path", "content_hash"],
                search_params=search_params(self.settings, top_k),
                consistency_level=self.settings.search_consistency,
            ),
        )
        hits = [
            SearchHit(
                id=str(h["id"]),
                path=str(h["entity"]["path"]),
                score=float(h["distance"]),
                content_hash=str(h["entity"]["content_hash"]),
            )
            for h in res[0]
        ]
        return [h for h in hits if prefix is None or h.path.startswith(prefix)]

    def delete(self, ids: Sequence[str]) -> int:
        """Delete rows by id, gone from searches on return; returns how many existed."""
        present = list(self.existing(ids))
        for start in range(0, len(present), 1000):
            batch = present[start : start + 1000]
            self._call("delete", lambda c, b=batch: c.delete(self.name, ids=b))
            if self.regions is not None:
                self.regions.delete_images(batch)
        if present:
            self.await_searchable()
        return len(present)

    def rows_under(self, folder: str) -> dict[str, str]:
        """id -> path of every row whose file lies under `folder`."""
        self.ensure_collection()
        prefix = folder_prefix(folder)
        flt = _prefix_filter(prefix)
        out: dict[str, str] = {}
        iterator = self._call(
            "query_iterator",
            lambda c: c.query_iterator(
                self.name, batch_size=1000, filter=flt, output_fields=["path"]
            ),
        )
        try:
            while batch := self._call("query_iterator.next", lambda _c: iterator.next()):
                out.update({str(r["id"]): str(r["path"]) for r in batch})
        finally:
            iterator.close()
        return {i: p for i, p in out.items() if p.startswith(prefix)}

    def ping(self) -> None:
        self.conn.ping()
