"""Service settings: one class, read from `PICSEARCH_*` environment variables."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[2]

ModelName = Literal["vgg16", "mobilenet_v2"]
Pooling = Literal["mac", "spoc", "gem"]
DeviceChoice = Literal["auto", "cuda", "cpu"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
Int8Choice = Literal["auto", "off"]
CpuRuntime = Literal["auto", "eager", "onednn-prepacked", "openvino"]
IndexType = Literal["auto", "FLAT", "IVF_FLAT", "HNSW"]
SearchConsistency = Literal["Strong", "Session", "Bounded", "Eventually"]


def _split_paths(value: object) -> object:
    if isinstance(value, str):
        return [Path(p).expanduser() for p in value.split(os.pathsep) if p.strip()]
    return value


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


class Settings(BaseSettings):
    """Every knob of the API, the workers and the launcher.

    Each field is read from the environment variable `PICSEARCH_<FIELD>` (upper case).
    """

    model_config = SettingsConfigDict(
        env_prefix="PICSEARCH_", env_file=".env", env_ignore_empty=True, extra="ignore"
    )

    # Where things live
    data_dir: Path = Field(
        default=PROJECT_ROOT / "data",
        description="Embedded Redis/Milvus data, thumbnails and logs.",
    )
    image_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=lambda: [Path.home()],
        description="Colon-separated directories that loads may read; nothing outside is read.",
    )

    # HTTP
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    api_key: SecretStr | None = Field(
        default=None, description="When set, mutating routes require header X-API-Key."
    )
    api_key_for_reads: bool = Field(
        default=False,
        description="With an API key set, also require it for reads and searches.",
    )
    api_key_query_param: bool = Field(
        default=False,
        description="Also accept the API key as the query argument `api_key`, for clients that "
        "cannot send headers. Off by default: URLs, and so the key, end up in access logs, "
        "proxy logs and browser history.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated CORS origins; none by default."
    )
    max_upload_bytes: int = Field(default=20 * 1024 * 1024, gt=0)

    # Dependencies: unset URLs mean the embedded servers that `picsearch up` starts.
    redis_url: str | None = Field(default=None, description="Redis URL; unset: embedded Redis.")
    embedded_redis_port: int = 6399
    milvus_uri: str | None = Field(
        default=None, description="Milvus standalone/cluster URI; unset: embedded Milvus Lite."
    )
    milvus_token: SecretStr | None = None
    milvus_db: str = Field(
        default="",
        pattern=r"^([A-Za-z_][A-Za-z0-9_]{0,254})?$",
        description="Database on the Milvus server (it must exist); empty: the server's "
        "default. Lets one Milvus serve several deployments. Milvus Lite ignores it.",
    )
    embedded_milvus_port: int = 19540
    milvus_single_writer: bool | None = Field(
        default=None,
        description="Serialise writes per collection (default: on for Milvus Lite, whose WAL "
        "does not survive concurrent writers).",
    )
    collection: str = Field(default="picsearch", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
    index_type: IndexType = Field(
        default="auto",
        description="auto = HNSW on Milvus Lite and on a server: FLAT's exact scan grows with "
        "the collection (~2.5 ms per 1,000 vectors on Milvus Lite).",
    )
    hnsw_m: int = 16
    hnsw_ef_construction: int = 200
    search_ef: int = 128
    search_nprobe: int = Field(default=32, ge=1, description="IVF lists probed per search.")
    search_consistency: SearchConsistency = Field(
        default="Session",
        description="Milvus consistency level of searches. Strong makes every search wait for "
        "the server's next time tick (~0.4 s against Milvus 2.3.5 standalone, vs 6 ms). With "
        "Session, a finished load and an API delete are in searches at once (both wait for "
        "the server's query nodes); vectors of a load still running show within ~0.2-0.4 s "
        "there. Milvus Lite ignores it.",
    )

    # Model
    model: ModelName = "vgg16"
    weights: str = Field(
        default="imagenet",
        description="'imagenet' (torchvision file in TORCH_HOME), 'random' (seeded; tests "
        "only) or a path to a .pth state dict.",
    )
    allow_weight_download: bool = False
    device: DeviceChoice = "auto"
    precision: Precision = "auto"
    pooling: Pooling = "gem"
    image_size: int = Field(default=224, ge=32, le=1024)
    regions: bool = Field(
        default=False,
        description="Give the default collection region vectors (square windows of 96 and "
        "192 px, each embedded), so a search also finds the photo a crop or detail was cut "
        "from. Costs about 200 extra vectors and forward passes per photo: see docs/crops.md.",
    )
    torch_threads: int | None = Field(default=None, ge=1)
    cpu_runtime: CpuRuntime = Field(
        default="auto",
        description="How the model runs on a CPU: 'auto' times every runtime this CPU "
        "supports (eager PyTorch, prepacked oneDNN, OpenVINO; fp32 and, with hardware bf16, "
        "bf16 unless PICSEARCH_PRECISION says otherwise) once per machine and keeps the "
        "fastest whose vectors agree with eager fp32; a name restricts the choice to it.",
    )
    int8: Int8Choice = Field(
        default="auto",
        description="CPU only: 'auto' quantizes a collection's model to int8 (OpenVINO + NNCF) "
        "on the first images of its first load and uses it if its vectors pass the accuracy "
        "gate and it is faster here; 'off' never does. A fixed PICSEARCH_PRECISION also "
        "means no int8.",
    )
    runtime_cache_dir: Path | None = Field(
        default=None,
        description="Where the CPU runtime measurement and converted models are kept; "
        "unset: PICSEARCH_DATA_DIR/runtime-cache.",
    )

    # Ingest
    batch_size: int | None = Field(
        default=None, ge=1, le=1024, description="Images per batch; unset: 16 on CPU, 256 on CUDA."
    )
    chunk_size: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="Files per chunk task; unset: 256 on CPU workers, 4096 on CUDA workers.",
    )
    decode_threads: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description="Threads reading and decoding files; unset: half the CPUs, 2 to 8.",
    )
    torch_compile: bool = Field(
        default=False,
        description="Workers run the model through torch.compile (on CUDA, batches are padded "
        "to one shape; ~20 s warm-up per worker process).",
    )
    gpu_decode: bool = Field(
        default=True, description="On CUDA, decode plain JPEGs on the GPU (nvJPEG)."
    )
    max_image_pixels: int = Field(
        default=120_000_000, description="Larger images are refused (decompression bombs)."
    )
    max_file_bytes: int = Field(default=256 * 1024 * 1024)
    worker_concurrency: int = Field(default=1, ge=1)
    worker_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="CPU priority (nice value) each worker process lowers itself to, so a "
        "search is answered ahead of a load on shared cores; 0 keeps the default priority.",
    )
    visibility_timeout: int = Field(
        default=3600, description="Seconds before Redis redelivers an unacknowledged task."
    )
    job_ttl_seconds: int = Field(default=7 * 24 * 3600, gt=0)
    max_job_errors: int = Field(default=200, ge=0, description="Per-file errors kept per job.")

    thumbnail_size: int = Field(default=256, ge=16, le=1024)
    log_level: str = "INFO"
    log_json: bool = False

    @field_validator("image_roots", mode="before")
    @classmethod
    def _parse_roots(cls, value: object) -> object:
        return _split_paths(value)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _parse_origins(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("image_roots")
    @classmethod
    def _resolve_roots(cls, value: list[Path]) -> list[Path]:
        return [p.expanduser().resolve() for p in value]

    @property
    def redis_dsn(self) -> str:
        return self.redis_url or f"redis://127.0.0.1:{self.embedded_redis_port}/0"

    @property
    def milvus_dsn(self) -> str:
        return self.milvus_uri or f"http://127.0.0.1:{self.embedded_milvus_port}"

    @property
    def milvus_db_name(self) -> str:
        return "" if self.milvus_is_embedded else self.milvus_db

    @property
    def milvus_is_embedded(self) -> bool:
        return self.milvus_uri is None

    @property
    def single_writer(self) -> bool:
        if self.milvus_single_writer is not None:
            return self.milvus_single_writer
        return self.milvus_is_embedded

    def batch_size_for(self, device_type: str) -> int:
        """Images per model batch on a `device_type` ("cpu"/"cuda") encoder."""
        return self.batch_size or (256 if device_type == "cuda" else 16)

    def chunk_size_for(self, device_type: str) -> int:
        """Files per chunk task; a GPU needs long chunks to keep its pipeline full."""
        return self.chunk_size or (4096 if device_type == "cuda" else 256)

    @property
    def effective_decode_threads(self) -> int:
        return self.decode_threads or max(2, min(8, (os.cpu_count() or 2) // 2))

    @property
    def effective_index_type(self) -> str:
        return "HNSW" if self.index_type == "auto" else self.index_type

    @property
    def effective_runtime_cache_dir(self) -> Path:
        return self.runtime_cache_dir or self.data_dir / "runtime-cache"

    @property
    def thumbnail_dir(self) -> Path:
        return self.data_dir / "thumbnails"

    @property
    def uploads_dir(self) -> Path:
        """Images added by upload (content-addressed); an image root of its own."""
        return (self.data_dir / "uploads").expanduser().resolve()

    @property
    def readable_roots(self) -> list[Path]:
        """Every folder images may be read from: the image roots and the uploads folder."""
        return [*self.image_roots, self.uploads_dir]


@lru_cache
def get_settings() -> Settings:
    return Settings()
