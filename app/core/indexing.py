"""The vector index settings shared by every Picsearch collection (global and region rows)."""

from __future__ import annotations

from typing import Any

from pymilvus import MilvusClient

from app.core.config import Settings


def vector_index(settings: Settings) -> Any:
    """Index parameters of a collection's `vector` field (cosine), from the settings."""
    index = MilvusClient.prepare_index_params()
    index_type = settings.effective_index_type
    params: dict[str, Any] = {}
    if index_type == "HNSW":
        params = {"M": settings.hnsw_m, "efConstruction": settings.hnsw_ef_construction}
    elif index_type == "IVF_FLAT":
        params = {"nlist": 1024}
    index.add_index(field_name="vector", index_type=index_type, metric_type="COSINE", params=params)
    return index


def search_params(settings: Settings, limit: int) -> dict[str, Any]:
    """Search parameters for `limit` results (HNSW's ef must be at least the limit)."""
    params: dict[str, Any] = {"metric_type": "COSINE"}
    index_type = settings.effective_index_type
    if index_type == "HNSW":
        params["params"] = {"ef": max(settings.search_ef, limit)}
    elif index_type == "IVF_FLAT":
        params["params"] = {"nprobe": settings.search_nprobe}
    return params
