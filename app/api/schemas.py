"""Request and response models of the HTTP API."""

from __future__ import annotations

from pydantic import BaseModel, Field

from app.core.jobs import JobProgress

ABSOLUTE_PATH = r"^/[^\x00]*$"


class LoadRequest(BaseModel):
    path: str = Field(
        description="Absolute path of a folder inside one of the image roots; walked recursively.",
        examples=["/home/me/Pictures"],
        min_length=1,
        max_length=4096,
        pattern=ABSOLUTE_PATH,
    )


class LoadCreated(BaseModel):
    job_id: str
    status_url: str = Field(description="Poll this URL for the job's progress.")


class LoadList(BaseModel):
    jobs: list[JobProgress]


class SearchResult(BaseModel):
    id: str = Field(description="Stable image id (hash of the file's resolved path).")
    path: str
    score: float = Field(description="Cosine similarity to the query, -1..1 (1 = identical).")
    image_url: str
    thumbnail_url: str


class SearchTimings(BaseModel):
    decode_ms: float
    embed_ms: float
    search_ms: float


class SearchResponse(BaseModel):
    results: list[SearchResult]
    took_ms: float = Field(description="Server time for decode + embed + vector search.")
    timings: SearchTimings


class Stats(BaseModel):
    collection: str
    count: int = Field(description="Vectors in the collection.")
    model: str
    dimension: int
    index_type: str
    metric: str = "COSINE"
    weights_id: str
    random_weights: bool = Field(description="True when vectors come from random weights.")
    recipe: str = Field(description="Preprocessing and pooling that produced the vectors.")
    device: str
    precision: str
    milvus: str = Field(description="'embedded' (Milvus Lite) or the server URI.")


class DropResult(BaseModel):
    dropped: int = Field(description="Vectors removed.")
    cancelled_jobs: list[str]


class Health(BaseModel):
    status: str = "ok"


class Readiness(BaseModel):
    ready: bool
    redis: str
    milvus: str
    model: str


class Roots(BaseModel):
    roots: list[str]


class FolderEntry(BaseModel):
    name: str
    path: str


class FolderListing(BaseModel):
    path: str
    parent: str | None = Field(description="Parent folder, or null at an image root.")
    folders: list[FolderEntry]
    image_files: int = Field(description="Image files directly in this folder (by extension).")
