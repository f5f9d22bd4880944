"""Request and response models of the HTTP API."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from app.core.jobs import JobProgress

ABSOLUTE_PATH = r"^/[^\x00]*$"
COLLECTION_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,254}$"


class LoadRequest(BaseModel):
    collection: str | None = Field(
        default=None,
        pattern=COLLECTION_NAME,
        description="Collection to load into; the default collection when omitted.",
    )
    prune: bool = Field(
        default=False,
        description="Also delete vectors of files under this folder that are gone from disk.",
    )
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


class DuplicateImage(BaseModel):
    id: str
    path: str


class Match(BaseModel):
    """Why a result matched: its whole image, or one region (window) of it."""

    kind: Literal["image", "region"] = Field(
        description="'image': the whole image is similar to the query; 'region': a window "
        "of it is (a collection with regions), e.g. the photo the query was cropped from."
    )
    box: list[int] | None = Field(
        default=None,
        description="The matching window as [x, y, width, height] in the image's own "
        "upright pixels (kind 'region').",
    )
    image_size: list[int] | None = Field(
        default=None,
        description="The image's upright [width, height], the frame of `box` (kind 'region').",
    )
    verified: bool | None = Field(
        default=None,
        description="kind 'region': true when the query's pixels were found in that part of "
        "the image (normalised cross-correlation >= 0.85 over scales 0.5-2); such results "
        "come first.",
    )


class SearchResult(BaseModel):
    id: str = Field(description="Stable image id (hash of the file's resolved path).")
    path: str
    score: float = Field(
        description="Cosine similarity to the query, -1..1 (1 = identical): of the whole "
        "image, or of the matching window when `match.kind` is 'region'."
    )
    match: Match = Field(default_factory=lambda: Match(kind="image"))
    image_url: str
    thumbnail_url: str
    duplicates: list[DuplicateImage] = Field(
        default_factory=list,
        description="Byte-identical files merged into this result (collapse_duplicates).",
    )


class SearchTimings(BaseModel):
    decode_ms: float
    embed_ms: float
    search_ms: float
    regions_ms: float | None = Field(
        default=None,
        description="A collection with regions: embedding the query's region inputs, "
        "searching the region vectors and verifying the best hits.",
    )


class SearchResponse(BaseModel):
    results: list[SearchResult]
    took_ms: float = Field(description="Server time for decode + embed + vector search.")
    timings: SearchTimings


class RuntimeTrialInfo(BaseModel):
    name: str = Field(description="Runtime and precision, e.g. openvino-bf16, eager-fp32.")
    micro_batch: int = Field(description="Images per forward pass it was timed at.")
    images_per_s: float | None = Field(description="Measured speed; null when not timed.")
    cosine: float | None = Field(description="Lowest cosine to eager fp32 on the probe images.")
    accepted: bool
    note: str = Field(description="Why it was not timed or was refused.")


class CpuRuntimeInfo(BaseModel):
    """How the model runs on this CPU, chosen by timing every runtime it supports."""

    cpu: str = Field(description="CPU model, logical CPUs and the flags that matter.")
    query: str = Field(description="Runtime of single-image queries (this API process).")
    query_reason: str
    batch: str = Field(description="Runtime a worker with these settings uses for loads.")
    batch_reason: str
    measured_s: float = Field(description="How long the measurement took when it ran.")
    cached: bool = Field(description="True when read from the cache of an earlier start.")
    trials: list[RuntimeTrialInfo]


class Int8GateInfo(BaseModel):
    recipe: str
    overlap: float | None = Field(description="Mean top-10 neighbour overlap, int8 vs fp32.")
    mixed_overlap: float | None = Field(
        description="The same with fp32 queries against int8 vectors (and the reverse; the lower)."
    )
    mean_cosine: float | None
    min_cosine: float | None
    passed: bool
    note: str


class Int8Info(BaseModel):
    """The collection's int8 verdict, reached on the first images of its first load."""

    state: Literal["accepted", "refused"]
    in_use: bool = Field(description="Whether this API process runs the collection's queries int8.")
    reason: str
    recipe: str | None = Field(description="The recipe that passed the gate, if one did.")
    figures: list[Int8GateInfo] = Field(description="Every recipe tried, in order.")
    images_per_s: dict[str, float] = Field(description="int8 vs the collection's own runtime.")
    micro_batch: int
    calibration_images: int
    cpu: str = Field(description="The CPU of the worker that calibrated and timed it.")
    seconds: float
    note: str = Field(description="What this API process does with it.")


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
    regions: bool = Field(description="Whether the collection keeps region vectors.")
    region_count: int | None = Field(
        default=None, description="Region vectors (windows), when it keeps them."
    )
    device: str
    precision: str
    runtime: str = Field(description="How queries run the model: e.g. openvino, cuda-autocast.")
    cpu_runtime: CpuRuntimeInfo | None = Field(
        default=None, description="On a CPU: what was measured and chosen, and why."
    )
    int8: Int8Info | None = Field(
        default=None,
        description="On a CPU: the collection's int8 verdict; null until a load of it runs "
        "with int8 on (PICSEARCH_INT8=auto and PICSEARCH_PRECISION=auto).",
    )
    milvus: str = Field(description="'embedded' (Milvus Lite) or the server URI.")
    max_upload_bytes: int = Field(description="Largest accepted search upload.")
    api_key_required: bool = Field(description="Mutating routes need the X-API-Key header.")


class CollectionInfo(BaseModel):
    name: str
    default: bool = Field(description="The collection used when a request names none.")
    count: int
    model: str
    dimension: int
    weights_id: str
    random_weights: bool
    recipe: str
    regions: bool = Field(description="Whether it keeps region vectors (crop search).")


class CollectionList(BaseModel):
    collections: list[CollectionInfo]


class CollectionCreate(BaseModel):
    name: str = Field(pattern=COLLECTION_NAME, description="Letters, digits and _.")
    model: Literal["vgg16", "mobilenet_v2"] = Field(description="Backbone for this collection.")
    weights: Literal["imagenet", "random"] | None = Field(
        default=None,
        description="torchvision ImageNet weights, or seeded random weights (tests only); the "
        "service's PICSEARCH_WEIGHTS when omitted. Weight files by path are a server setting, "
        "never taken from a request.",
    )
    pooling: Literal["mac", "spoc", "gem"] | None = Field(
        default=None, description="Global pooling; the service's PICSEARCH_POOLING when omitted."
    )
    regions: bool | None = Field(
        default=None,
        description="Also keep region vectors, so searches find the photo a crop or detail "
        "was cut from (about 200 more vectors and model passes per photo: loads are much "
        "slower on a CPU). The service's PICSEARCH_REGIONS when omitted.",
    )


class DeleteResult(BaseModel):
    deleted: int = Field(description="Vectors removed.")


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


class ImageAdded(BaseModel):
    id: str = Field(description="Stable image id: the one a folder load of `path` gives.")
    path: str = Field(description="Where the upload is stored (under the uploads folder).")
    collection: str
    created: bool = Field(description="False when these bytes were already indexed unchanged.")
