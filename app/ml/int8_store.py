"""Where a collection's int8 verdict and model live, so its worker loads and API queries use
the same one: `DATA_DIR/int8/<collection>/<key>.json` (the record) beside `<key>.xml/.bin`
(the quantized IR), keyed by the collection's metadata (model, weights, recipe) and the
OpenVINO and NNCF versions. A refusal is recorded too, so it is not tried again.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from app.core.config import Settings
from app.core.vectorstore import CollectionMeta
from app.ml import trunks

log = logging.getLogger(__name__)

Int8State = Literal["accepted", "refused"]


@dataclass(frozen=True)
class Int8Record:
    """A collection's int8 verdict: the gate's figures per recipe and the timing."""

    state: Int8State
    reason: str
    recipe: str | None  # the recipe that passed the gate (accepted or refused for speed)
    figures: list[dict[str, Any]]
    images_per_s: dict[str, float]  # int8 vs the collection's own runtime, at the load batch
    micro_batch: int
    calibration_images: int
    cpu: str
    seconds: float
    key: dict[str, Any] = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        return self.state == "accepted"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Int8Record:
        return cls(**data)


def nncf_version() -> str | None:
    try:
        return metadata.version("nncf")
    except metadata.PackageNotFoundError:
        return None


def int8_enabled(settings: Settings) -> bool:
    """Whether collections may run int8: PICSEARCH_INT8=auto, and no fixed precision."""
    return settings.int8 == "auto" and settings.precision == "auto"


def record_key(meta: CollectionMeta) -> dict[str, Any]:
    return {
        "model": meta.model,
        "weights_id": meta.weights_id,
        "recipe": meta.recipe,
        "pooling": meta.pooling,
        "image_size": meta.image_size,
        "openvino": trunks.openvino_version(),
        "nncf": nncf_version(),
    }


class Int8Store:
    """The int8 files of every collection under the data dir."""

    def __init__(self, settings: Settings) -> None:
        self.root = settings.data_dir / "int8"

    def folder(self, collection: str) -> Path:
        return self.root / collection

    def base(self, collection: str, meta: CollectionMeta) -> Path:
        """`<folder>/<key digest>`: the record is `.json`, the model `.xml` and `.bin`."""
        digest = hashlib.sha256(json.dumps(record_key(meta), sort_keys=True).encode())
        return self.folder(collection) / f"{meta.model}-{digest.hexdigest()[:16]}"

    def model_file(self, collection: str, meta: CollectionMeta) -> Path:
        return self.base(collection, meta).with_suffix(".xml")

    def record_file(self, collection: str, meta: CollectionMeta) -> Path:
        return self.base(collection, meta).with_suffix(".json")

    def read(self, collection: str, meta: CollectionMeta) -> Int8Record | None:
        """The collection's record; None when there is none (or it is unreadable, or was
        made for other metadata or library versions)."""
        path = self.record_file(collection, meta)
        try:
            record = Int8Record.from_json(json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            log.warning("ignoring unreadable int8 record %s: %s", path, exc)
            return None
        if record.key != record_key(meta):
            return None
        if record.accepted and not self.model_file(collection, meta).is_file():
            return None
        return record

    def write(self, collection: str, meta: CollectionMeta, record: Int8Record) -> None:
        """Write the record last and atomically: a reader sees it only once the model exists."""
        path = self.record_file(collection, meta)
        path.parent.mkdir(parents=True, exist_ok=True)
        keyed = Int8Record(**{**record.__dict__, "key": record_key(meta)})
        partial = path.with_suffix(f".{os.getpid()}.partial")
        partial.write_text(json.dumps(keyed.to_json(), indent=1))
        partial.replace(path)

    @contextmanager
    def calibrating(self, collection: str, meta: CollectionMeta) -> Iterator[bool]:
        """Yields True to the one process that may calibrate the collection now; others get
        False at once (their chunks go on with the collection's own runtime)."""
        lock = self.base(collection, meta).with_suffix(".lock")
        lock.parent.mkdir(parents=True, exist_ok=True)
        with lock.open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def remove(self, collection: str) -> None:
        """Delete every int8 file of `collection` (when it is dropped)."""
        shutil.rmtree(self.folder(collection), ignore_errors=True)
