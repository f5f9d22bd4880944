"""The ingest pipeline (`ChunkRunner`) against the stack's real Milvus Lite server.

The device-decode path (nvJPEG on CUDA) is run here on the CPU through torchvision's CPU
JPEG decoder, so its batching, fallbacks and error reporting are covered without a GPU;
`PICSEARCH_TEST_DEVICE=cuda` runs the same tests on a GPU.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import pytest

from app.core.config import Settings
from app.core.jobs import ChunkCounts, FileError
from app.core.vectorstore import VectorStore, image_id
from app.ml import int8
from app.ml.encoder import Encoder
from app.ml.int8_runtime import RUNTIME, Int8Encoders
from app.ml.registry import meta_for
from tests.conftest import RunningStack
from tests.imagegen import distinct_image, jpeg_bytes
from workers.int8_calibration import Calibrator
from workers.pipeline import ChunkRunner

DEVICE = os.environ.get("PICSEARCH_TEST_DEVICE", "cpu")


class Sink:
    """Collects what a chunk reports; cancels once `cancel_after` updates were seen."""

    def __init__(self, cancel_after: int | None = None) -> None:
        self.updates: list[ChunkCounts] = []
        self.errors: list[FileError] = []
        self.cancel_after = cancel_after

    def update(self, counts: ChunkCounts, errors: list[FileError]) -> None:
        self.updates.append(counts.model_copy())
        self.errors.extend(errors)

    def cancelled(self) -> bool:
        return self.cancel_after is not None and len(self.updates) >= self.cancel_after

    def write_lock(self) -> AbstractContextManager[object]:
        return contextlib.nullcontext()


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder(_settings())


def _settings(**extra: object) -> Settings:
    values = {
        "model": "mobilenet_v2",
        "weights": "random",
        "pooling": "spoc",
        "device": DEVICE,
        # fp32: this compares decoders; random MobileNetV2 features underflow in fp16
        "precision": "fp32",
        "batch_size": 3,
        "decode_threads": 2,
        **extra,
    }
    return Settings.model_validate(values)


@pytest.fixture
def store(stack: RunningStack, encoder: Encoder) -> Iterator[VectorStore]:
    settings = stack.settings.model_copy(update={"model": "mobilenet_v2", "pooling": "spoc"})
    vs = VectorStore(settings, meta_for(encoder, settings), name=f"pipe_{secrets.token_hex(4)}")
    vs.ensure_collection()
    try:
        yield vs
    finally:
        vs.drop()


def _mixed_folder(folder: Path) -> dict[str, str]:
    """Files of every kind the device path must route; name -> expected outcome."""
    folder.mkdir()
    truncated = jpeg_bytes(distinct_image(3, (640, 480)), 90)
    png, progressive = io.BytesIO(), io.BytesIO()
    distinct_image(4).save(png, format="PNG")
    distinct_image(5, (500, 375)).save(progressive, format="JPEG", progressive=True)
    files = {
        "a_jpeg.jpg": (jpeg_bytes(distinct_image(1, (500, 375)), 90), "ok"),
        "b_portrait.jpg": (jpeg_bytes(distinct_image(2, (375, 500)), 90), "ok"),
        "c_truncated.jpg": (truncated[: len(truncated) // 2], "truncated"),
        "d_image.png": (png.getvalue(), "ok"),
        "e_cmyk.jpg": (jpeg_bytes(distinct_image(6).convert("CMYK"), 90), "ok"),
        "f_progressive.jpg": (progressive.getvalue(), "ok"),
        "g_not_an_image.jpg": (b"hello", "not an image"),
        "h_grey.jpg": (jpeg_bytes(distinct_image(7, (500, 375)).convert("L"), 90), "ok"),
    }
    for name, (data, _) in files.items():
        (folder / name).write_bytes(data)
    return {name: outcome for name, (_, outcome) in files.items()}


def _run(
    encoder: Encoder, store: VectorStore, folder: Path, device_decode: bool, sink: Sink
) -> ChunkCounts:
    runner = ChunkRunner(_settings(), encoder, store, job_id="j1", device_decode=device_decode)
    files = sorted(str(p.resolve()) for p in folder.iterdir())
    return runner.run(files, sink)


def test_device_decode_path_indexes_what_the_cpu_path_does(
    encoder: Encoder, store: VectorStore, tmp_path: Path
) -> None:
    expected = _mixed_folder(tmp_path / "mixed")
    good = sorted(name for name, outcome in expected.items() if outcome == "ok")
    results = {}
    for device_decode in (True, False):
        store.delete([image_id(str(p.resolve())) for p in (tmp_path / "mixed").iterdir()])
        sink = Sink()
        counts = _run(encoder, store, tmp_path / "mixed", device_decode, sink)
        assert (counts.indexed, counts.failed, counts.processed) == (len(good), 2, 8)
        reasons = {Path(e.path).name: e.reason for e in sink.errors}
        assert set(reasons) == {"c_truncated.jpg", "g_not_an_image.jpg"}
        assert "truncated" in reasons["c_truncated.jpg"]
        assert "not an image" in reasons["g_not_an_image.jpg"]
        assert sink.updates[-1] == counts  # the last report is the final count
        ids = [image_id(str((tmp_path / "mixed" / n).resolve())) for n in good]
        rows = store.conn.client().get(store.name, ids=ids, output_fields=["vector", "path"])
        assert sorted(Path(r["path"]).name for r in rows) == good
        results[device_decode] = {
            Path(r["path"]).name: np.asarray(r["vector"], np.float32) for r in rows
        }
    for name in good:  # nvJPEG/libjpeg full decode vs Pillow: the same picture
        cosine = float(results[True][name] @ results[False][name])
        assert cosine > 0.99, (name, cosine)


def test_cancel_stops_after_the_batch_in_flight(
    encoder: Encoder, store: VectorStore, tmp_path: Path
) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(12):
        (folder / f"{i:02d}.jpg").write_bytes(jpeg_bytes(distinct_image(40 + i), 85))
    sink = Sink(cancel_after=2)  # the stat report, then one batch of 3
    counts = _run(encoder, store, folder, device_decode=True, sink=sink)
    assert counts.indexed == 3 and counts.processed == 3
    assert store.count() == 3  # nothing written after the cancel was seen


@pytest.mark.skipif(not int8.nncf_available(), reason="OpenVINO/NNCF not installed")
def test_first_load_calibrates_int8_and_embeds_the_rest_with_it(
    stack: RunningStack, tmp_path: Path
) -> None:
    """The chunk's first images are embedded as usual and calibrate the collection's int8
    model; once it passes the gate (and, here, is declared faster) the chunk goes on int8."""
    settings = _settings(
        model="vgg16", pooling="gem", precision="auto", image_size=64, batch_size=8,
        data_dir=tmp_path / "data", cpu_runtime="eager",
    )  # fmt: skip
    encoder = Encoder(settings)
    store_settings = stack.settings.model_copy(
        update={"model": "vgg16", "pooling": "gem", "image_size": 64}
    )
    store = VectorStore(store_settings, meta_for(encoder, settings), f"pipe_{secrets.token_hex(4)}")
    store.ensure_collection()
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(40):
        (folder / f"{i:02d}.jpg").write_bytes(jpeg_bytes(distinct_image(200 + i), 90))
    int8s = Int8Encoders(settings, "batch", lambda contenders, _: {
        name: 2.0 if name == RUNTIME else 1.0 for name in contenders
    })  # fmt: skip
    calibrator = Calibrator(int8s, store.name, store.meta, encoder)
    calibrator.images = 24
    runner = ChunkRunner(settings, encoder, store, job_id="j1", calibrator=calibrator)
    try:
        files = sorted(str(p.resolve()) for p in folder.iterdir())
        counts = runner.run(files, Sink())
        assert (counts.indexed, counts.failed) == (40, 0)
        rows = store.conn.client().get(store.name, ids=[image_id(f) for f in files])
        assert len(rows) == 40  # the fp32 vectors of the first images and the int8 rest
        assert runner.encoder.info.runtime == RUNTIME
        record = int8s.store.read(store.name, store.meta)
        assert record is not None and record.accepted and record.calibration_images == 24
    finally:
        store.drop()
