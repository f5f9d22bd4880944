"""The int8 path: NNCF quantization of the real VGG16 architecture (random weights, small
images), the accuracy gate's verdicts and reasons, the saved model reloaded, the record
read by loads and queries, and a clean absence without OpenVINO/NNCF."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from app.core.config import Settings
from app.core.vectorstore import CollectionMeta
from app.ml import int8, int8_gate, int8_runtime
from app.ml.encoder import Encoder
from app.ml.int8_gate import MIN_IMAGES, judge, neighbour_overlap, run_gate
from app.ml.int8_runtime import RUNTIME, Int8Encoders, calibrate
from app.ml.int8_store import Int8Store
from app.ml.registry import meta_for
from app.ml.trunks import TrunkFn
from tests.imagegen import distinct_image
from workers.int8_calibration import Calibrator

SIZE = 64
pytestmark = pytest.mark.skipif(not int8.nncf_available(), reason="OpenVINO/NNCF not installed")


def pixels(count: int, start: int = 0) -> np.ndarray:
    images = [distinct_image(start + i).resize((SIZE, SIZE)) for i in range(count)]
    return np.stack([np.asarray(img.convert("RGB"), dtype=np.uint8) for img in images])


def int8_wins(contenders: dict[str, TrunkFn], x: torch.Tensor) -> dict[str, float]:
    """A race int8 always wins: what is tested is what follows, not this CPU's speed."""
    return {name: 2.0 if name == RUNTIME else 1.0 for name in contenders}


def int8_loses(contenders: dict[str, TrunkFn], x: torch.Tensor) -> dict[str, float]:
    return {name: 1.0 if name == RUNTIME else 2.0 for name in contenders}


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    data = tmp_path_factory.mktemp("int8-data")
    return Settings(
        weights="random",
        device="cpu",
        torch_threads=2,
        image_size=SIZE,
        data_dir=data,
        runtime_cache_dir=data / "runtime",
        cpu_runtime="eager",
        precision="auto",
    )


@pytest.fixture(scope="module")
def encoder(settings: Settings) -> Encoder:
    return Encoder(settings)


@pytest.fixture(scope="module")
def calibrated(
    settings: Settings, encoder: Encoder, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A data dir where collection "photos" has an accepted int8 record (made once)."""
    data = tmp_path_factory.mktemp("calibrated")
    local = settings.model_copy(update={"data_dir": data})
    calibrate(
        Int8Store(local), "photos", meta_for(encoder, local), encoder, pixels(MIN_IMAGES), int8_wins
    )
    return data


def copy_of(calibrated: Path, tmp_path: Path) -> Path:
    shutil.copytree(calibrated, tmp_path, dirs_exist_ok=True)
    return tmp_path


@pytest.fixture(scope="module")
def calibration() -> torch.Tensor:
    return int8.normalised(pixels(32))


def test_overlap_is_one_for_identical_vectors_and_drops_for_shuffled_ones() -> None:
    vectors = torch.nn.functional.normalize(
        torch.randn(40, 16, generator=torch.Generator().manual_seed(1)), dim=1
    )
    assert neighbour_overlap(vectors, vectors, vectors) == 1.0
    shuffled = vectors[torch.randperm(40, generator=torch.Generator().manual_seed(2))]
    verdict = judge("shuffled", vectors, shuffled)
    assert not verdict.passed
    assert "overlap below 0.95" in verdict.note and "mean cosine below 0.99" in verdict.note
    assert verdict.overlap is not None and verdict.overlap < 0.5


def test_minmax_int8_of_vgg16_passes_the_gate(encoder: Encoder, calibration: torch.Tensor) -> None:
    result = run_gate(encoder.trunk, calibration, "gem", SIZE, 2, [int8.recipe_named("minmax")])
    assert result.accepted is not None and result.accepted.name == "minmax"
    (figures,) = result.figures
    assert figures.passed and figures.note == ""
    assert figures.overlap is not None and figures.overlap >= 0.95
    assert figures.mixed_overlap is not None and figures.mixed_overlap >= 0.95
    assert figures.min_cosine is not None and figures.min_cosine > 0.99
    assert "minmax passed the gate on 32 images" in result.reason()


def test_a_recipe_that_fails_is_refused_with_its_reason_and_the_next_one_tried(
    encoder: Encoder, calibration: torch.Tensor
) -> None:
    broken = int8.Recipe("broken", "no-such-ranges")
    recipes = [broken, int8.recipe_named("minmax")]
    result = run_gate(encoder.trunk, calibration, "gem", SIZE, 2, recipes)
    assert [f.recipe for f in result.figures] == ["broken", "minmax"]
    assert not result.figures[0].passed and "does not run here" in result.figures[0].note
    assert result.accepted is not None and result.accepted.name == "minmax"


def test_a_gate_no_recipe_meets_refuses_int8_and_says_why(
    encoder: Encoder, calibration: torch.Tensor
) -> None:
    recipes = [int8.recipe_named("minmax")]
    result = run_gate(encoder.trunk, calibration, "gem", SIZE, 2, recipes, min_overlap=1.01)
    assert result.accepted is None and result.fn is None
    assert "no int8 recipe passed the gate" in result.reason()
    assert "overlap below 1.01" in result.figures[0].note


def test_calibration_on_blank_images_breaks_the_ranges_and_is_caught(
    encoder: Encoder, calibration: torch.Tensor
) -> None:
    """Ranges learned on flat grey images clip real ones: the gate, run on real images with
    that model, refuses it."""
    blank = int8.normalised(np.full((16, SIZE, SIZE, 3), 128, np.uint8))
    recipe = int8.recipe_named("minmax")
    model = int8.quantize(encoder.trunk, blank, recipe, SIZE)
    fn = int8.compile_model(model, SIZE, 2)
    fp32 = int8_gate.vectors(encoder.trunk, calibration, "gem")
    verdict = judge("minmax-on-blank", fp32, int8_gate.vectors(fn, calibration, "gem"))
    assert not verdict.passed, verdict.describe()


def test_depthwise_recipes_only_for_models_that_have_depthwise_convolutions(
    encoder: Encoder,
) -> None:
    assert [r.name for r in int8.recipes_for(encoder.trunk)] == ["minmax", "default"]
    mobilenet = Encoder(
        Settings(model="mobilenet_v2", weights="random", device="cpu", cpu_runtime="eager")
    )
    assert any(r.fp32_depthwise for r in int8.recipes_for(mobilenet.trunk))


def test_accepted_model_is_saved_reloaded_and_used_by_loads(
    settings: Settings, encoder: Encoder, calibrated: Path, tmp_path: Path
) -> None:
    local = settings.model_copy(update={"data_dir": copy_of(calibrated, tmp_path)})
    meta = meta_for(encoder, local)
    store = Int8Store(local)
    record = store.read("photos", meta)
    assert record is not None and record.accepted and record.recipe == "minmax"
    assert record.calibration_images == MIN_IMAGES and record.figures[0]["passed"]
    assert store.model_file("photos", meta).is_file()

    loads = Int8Encoders(local, "batch", int8_wins).encoder("photos", meta, encoder)
    assert loads.info.runtime == RUNTIME and loads.info.precision == "int8"
    assert loads.info.weights_id == encoder.info.weights_id
    probe = pixels(4, start=100)
    cosine = (loads.embed(probe) * encoder.embed(probe)).sum(axis=1)
    assert cosine.min() > 0.99
    # another collection with the same model has no int8 record: its own runtime
    assert Int8Encoders(local, "batch").encoder("other", meta, encoder) is encoder

    store.remove("photos")  # what dropping the collection does
    assert not store.folder("photos").exists()
    assert Int8Encoders(local, "batch").encoder("photos", meta, encoder) is encoder


def test_queries_switch_to_int8_only_once_timed_faster_at_batch_one(
    settings: Settings, encoder: Encoder, calibrated: Path, tmp_path: Path
) -> None:
    local = settings.model_copy(update={"data_dir": copy_of(calibrated, tmp_path)})
    meta = meta_for(encoder, local)
    for race, expected in ((int8_wins, RUNTIME), (int8_loses, encoder.info.runtime)):
        queries = Int8Encoders(local, "query", race)
        assert queries.encoder("photos", meta, encoder) is encoder  # timed in the background
        deadline = time.monotonic() + 120
        while queries.state("photos", meta)["note"].startswith("timing"):  # type: ignore[index]
            assert time.monotonic() < deadline
            time.sleep(0.1)
        chosen = queries.encoder("photos", meta, encoder)
        assert chosen.info.runtime == expected
        state = queries.state("photos", meta)
        assert state is not None and state["state"] == "accepted"
        assert state["in_use"] == (expected == RUNTIME)
        assert chosen.micro_batch == (1 if expected == RUNTIME else encoder.micro_batch)


def test_int8_slower_than_the_collections_runtime_is_refused(
    settings: Settings, encoder: Encoder, tmp_path: Path
) -> None:
    local = settings.model_copy(update={"data_dir": tmp_path})
    meta = meta_for(encoder, local)
    store = Int8Store(local)
    record = calibrate(store, "photos", meta, encoder, pixels(MIN_IMAGES), int8_loses)
    assert record.state == "refused" and "not faster here" in record.reason
    assert record.recipe == "minmax"  # it passed the gate; speed refused it
    assert not store.model_file("photos", meta).exists()
    assert Int8Encoders(local, "batch").encoder("photos", meta, encoder) is encoder


def test_loads_run_int8_at_its_own_fastest_batch(
    settings: Settings, encoder: Encoder, tmp_path: Path
) -> None:
    """int8 is timed at each load batch the runtime measurement tried, not only at the one
    the fp32/bf16 runtime won with: the two runtimes' best batches can differ."""

    def larger_batches_win(contenders: dict[str, TrunkFn], x: torch.Tensor) -> dict[str, float]:
        return {name: float(len(x)) if name == RUNTIME else 1.5 for name in contenders}

    local = settings.model_copy(update={"data_dir": tmp_path})
    meta = meta_for(encoder, local)
    assert encoder.runtime_report is not None
    tried = {t.micro_batch for t in encoder.runtime_report.trials}
    assert len(tried) > 1  # batch 1 and the load batch
    record = calibrate(
        Int8Store(local), "photos", meta, encoder, pixels(MIN_IMAGES), larger_batches_win
    )
    assert record.state == "accepted" and record.micro_batch == max(tried)
    assert f"at batch {max(tried)} vs" in record.reason
    loads = Int8Encoders(local, "batch").encoder("photos", meta, encoder)
    assert loads.info.runtime == RUNTIME and loads.micro_batch == max(tried)


def fresh_calibrator(
    settings: Settings, encoder: Encoder, data_dir: Path
) -> tuple[Calibrator, Int8Encoders, CollectionMeta]:
    """A first load's calibrator for collection "photos" in an empty data dir (int8 wins)."""
    local = settings.model_copy(update={"data_dir": data_dir})
    meta = meta_for(encoder, local)
    int8s = Int8Encoders(local, "batch", int8_wins)
    return Calibrator(int8s, "photos", meta, encoder), int8s, meta


def test_calibrator_gates_the_first_images_then_hands_over_the_int8_encoder(
    settings: Settings, encoder: Encoder, tmp_path: Path
) -> None:
    calibrator, int8s, meta = fresh_calibrator(settings, encoder, tmp_path)
    calibrator.images = MIN_IMAGES
    first = calibrator.feed(pixels(MIN_IMAGES // 2))
    assert first is encoder and int8s.store.read("photos", meta) is None
    switched = calibrator.feed(pixels(MIN_IMAGES // 2, start=50))
    assert switched.info.runtime == RUNTIME
    assert calibrator.feed(pixels(2)) is switched  # calibrated once
    record = int8s.store.read("photos", meta)
    assert record is not None and record.calibration_images == MIN_IMAGES


def test_a_load_too_short_to_judge_records_nothing(
    settings: Settings, encoder: Encoder, tmp_path: Path
) -> None:
    calibrator, int8s, meta = fresh_calibrator(settings, encoder, tmp_path)
    calibrator.feed(pixels(MIN_IMAGES - 1))
    assert calibrator.finish() is encoder
    assert int8s.store.read("photos", meta) is None  # a later load calibrates


def test_int8_off_or_without_nncf_uses_the_collections_runtime(
    settings: Settings,
    encoder: Encoder,
    calibrated: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    local = settings.model_copy(update={"data_dir": copy_of(calibrated, tmp_path)})
    meta = meta_for(encoder, local)
    assert Int8Encoders(local, "batch").encoder("photos", meta, encoder) is not encoder
    for off in ({"int8": "off"}, {"precision": "fp32"}):
        turned_off = local.model_copy(update=off)
        assert not int8_runtime.usable_here(turned_off, encoder)
        assert Int8Encoders(turned_off, "batch").encoder("photos", meta, encoder) is encoder
    monkeypatch.setattr(int8, "nncf_available", lambda: False)
    assert not int8_runtime.usable_here(local, encoder)
    assert Int8Encoders(local, "batch").encoder("photos", meta, encoder) is encoder


def test_int8_check_reports_the_gate_the_folder_and_the_speeds_as_json(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    import typer
    from typer.testing import CliRunner

    from app.core.config import get_settings
    from app.measure.int8_check import register
    from tests.imagegen import jpeg_bytes

    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(MIN_IMAGES + 4):
        (folder / f"{i:02d}.jpg").write_bytes(jpeg_bytes(distinct_image(300 + i)))
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """picsearch"""

    register(app)
    env = {"DEVICE": "cpu", "IMAGE_SIZE": str(SIZE), "TORCH_THREADS": "2", "CPU_RUNTIME": "eager"}
    for key, value in {**env, "RUNTIME_CACHE_DIR": str(settings.runtime_cache_dir)}.items():
        monkeypatch.setenv(f"PICSEARCH_{key}", value)
    get_settings.cache_clear()
    try:
        args = ["int8-check", "--images", str(folder), "--weights", "random"]
        args += ["--calibration", str(MIN_IMAGES), "--recipes", "minmax", "--json"]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
    finally:
        get_settings.cache_clear()
    assert (report["images"], report["calibration"]) == (MIN_IMAGES + 4, MIN_IMAGES)
    (row,) = report["recipes"]
    assert row["recipe"] == "minmax" and row["passed"]
    assert 0.9 < row["folder_overlap"] <= 1.0
    assert set(report["images_per_s"]) == {"batch 1", "batch 8"}
    # int8, the chosen runtime and eager fp32: two names when the runtime is eager fp32 (a
    # CPU without bf16, or under ONEDNN_MAX_CPU_ISA=AVX2)
    timed = set(report["images_per_s"]["batch 1"])
    assert "int8 minmax" in timed and "eager float32" in timed and len(timed) in (2, 3)
