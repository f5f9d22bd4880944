"""Encoders and collections by name: each collection is embedded with its own model.

The configured model (PICSEARCH_MODEL/WEIGHTS) serves the default collection; a collection
created for another model gets an encoder built on first use, from the recipe recorded in
the collection itself, so a VGG16 set and a MobileNetV2 set can live side by side.
"""

from __future__ import annotations

import threading

from app.core.config import Settings
from app.core.errors import CollectionMismatch, CollectionNotFound, ConflictError
from app.core.regionstore import regions_name
from app.core.vectorstore import CollectionMeta, MilvusConnection, VectorStore
from app.ml.encoder import BACKBONES, Encoder, build_backbone, recipe_id, resolve_weights
from app.ml.runtime_choice import Purpose

EncoderKey = tuple[str, str, str, int]


def collection_meta(settings: Settings, weights_id: str) -> CollectionMeta:
    """The metadata recorded on a collection filled by `settings`' encoder."""
    return CollectionMeta(
        model=settings.model,
        weights_id=weights_id,
        dim=BACKBONES[settings.model].dim,
        recipe=recipe_id(settings),
        weights_source=settings.weights,
        pooling=settings.pooling,
        image_size=settings.image_size,
        regions=settings.regions,
    )


def meta_for(encoder: Encoder, settings: Settings) -> CollectionMeta:
    """The metadata recorded on a collection filled by `encoder` (built from `settings`)."""
    return collection_meta(settings, encoder.info.weights_id)


def _key(settings: Settings) -> EncoderKey:
    return (settings.model, settings.weights, settings.pooling, settings.image_size)


class EncoderRegistry:
    """One encoder per (model, weights, pooling, size), built lazily and kept."""

    def __init__(
        self,
        settings: Settings,
        default: Encoder,
        *,
        compile: bool = False,
        purpose: Purpose = "batch",
    ) -> None:
        self.settings = settings
        self.default = default
        self.compile = compile
        self.purpose = purpose
        self._encoders: dict[EncoderKey, Encoder] = {_key(settings): default}
        self._building: dict[EncoderKey, threading.Lock] = {}
        self._lock = threading.Lock()

    def settings_for(self, meta: CollectionMeta) -> Settings:
        return self.settings.model_copy(
            update={
                "model": meta.model,
                "weights": meta.weights_source or self.settings.weights,
                "pooling": meta.pooling,
                "image_size": meta.image_size,
                "regions": meta.regions,
            }
        )

    def get(self, settings: Settings) -> Encoder:
        """The encoder for `settings`, built on first use. A build (which may time the CPU
        runtimes first) holds up only the callers that need the same encoder."""
        key = _key(settings)
        with self._lock:
            found = self._encoders.get(key)
            building = self._building.setdefault(key, threading.Lock())
        if found is not None:
            return found
        with building:
            with self._lock:
                found = self._encoders.get(key)
            if found is None:
                found = Encoder(settings, compile=self.compile, purpose=self.purpose)
                with self._lock:
                    self._encoders[key] = found
        return found

    def meta(self, settings: Settings) -> CollectionMeta:
        """The metadata a collection filled with `settings`' encoder records, without
        building that encoder when it is not built yet: its weights are hashed and fitted
        to the model (ConfigurationError when they do not fit), nothing is timed."""
        with self._lock:
            built = self._encoders.get(_key(settings))
        if built is not None:
            return meta_for(built, settings)
        state, weights_id = resolve_weights(settings)
        build_backbone(settings.model, state)
        return collection_meta(settings, weights_id)

    def for_collection(self, meta: CollectionMeta) -> Encoder:
        """The encoder that produced `meta`'s vectors; refuses if its weights changed."""
        encoder = self.get(self.settings_for(meta))
        if meta_for(encoder, self.settings_for(meta)) != meta:
            raise CollectionMismatch(
                f"the weights or recipe for {meta.model} changed since this collection was "
                f"built ({meta.describe()} vs {encoder.info}); reload its folders into a new "
                "collection."
            )
        return encoder


class CollectionRegistry:
    """Vector stores by collection name, sharing one Milvus connection."""

    def __init__(self, settings: Settings, default_meta: CollectionMeta) -> None:
        self.settings = settings
        self.default_name = settings.collection
        self.default_meta = default_meta
        self.conn = MilvusConnection(settings)
        self._stores: dict[str, VectorStore] = {}
        self._lock = threading.Lock()
        self._create_lock = threading.Lock()

    @property
    def default(self) -> VectorStore:
        return self.get(None)

    def get(self, name: str | None) -> VectorStore:
        """The store for `name` (default collection when None); 404 if it does not exist."""
        name = name or self.default_name
        with self._lock:
            store = self._stores.get(name)
        if store is not None:
            return store
        if name == self.default_name:
            store = VectorStore(self.settings, self.default_meta, name, self.conn)
        else:
            meta = self.conn.read_meta(name)
            if meta is None:
                raise CollectionNotFound(f"no collection {name!r}")
            store = VectorStore(self.settings, meta, name, self.conn)
        with self._lock:
            return self._stores.setdefault(name, store)

    def create(self, name: str, meta: CollectionMeta) -> VectorStore:
        # One creation at a time: Milvus Lite fails a second concurrent create of the same
        # name with a file error instead of "already exists".
        with self._create_lock:
            names = self.conn.list_names()
            if self.conn.read_meta(name) is not None or name in names:
                raise ConflictError(f"collection {name!r} already exists")
            if meta.regions and regions_name(name) in names:
                raise ConflictError(
                    f"collection {regions_name(name)!r} exists, and {name!r} with regions "
                    "needs that name for its region rows"
                )
            store = VectorStore(self.settings, meta, name, self.conn)
            store.ensure_collection()
        with self._lock:
            self._stores[name] = store
        return store

    def names(self) -> list[str]:
        """Collections holding Picsearch vectors (the default one even before it exists)."""
        found = [n for n in self.conn.list_names() if self.conn.read_meta(n) is not None]
        return sorted(set(found) | {self.default_name})

    def forget(self, name: str) -> None:
        with self._lock:
            self._stores.pop(name, None)
