"""`picsearch eval --crops`: crop queries (sizes, shapes, determinism, flat detection), their
scoring, and a run on synthetic originals with the real encoder (random weights)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from app.core.config import Settings, get_settings
from app.evaluation import EvalOptions, register, run_evaluation
from app.evaluation.crops import (
    CROP_KINDS,
    CROP_VARIANTS,
    FILL,
    MAX_SIDE,
    MIN_SIDE,
    CropQuery,
    circle_mask,
    make_crop_queries,
)
from app.evaluation.metrics import evaluate_crops
from app.evaluation.regions import REGION_DESIGNS, RegionIndex, search
from app.ml.verify import VERIFIED_NCC, verify
from tests.imagegen import distinct_image


def textured_image(seed: int) -> Image.Image:
    """distinct_image with pixel noise on top: no flat patch anywhere."""
    base = np.asarray(distinct_image(seed, (260, 200)), dtype=np.int16)
    noise = np.random.default_rng(seed).integers(-40, 41, base.shape)
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def originals(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("originals")
    paths = []
    for i in range(4):
        paths.append(folder / f"{i}.png")
        textured_image(300 + i).save(paths[-1])
    paths.append(folder / "4.png")  # one flat original: every crop of it is flat
    Image.new("RGB", (240, 180), (120, 160, 210)).save(paths[-1])
    return paths


def opened(query: CropQuery) -> Image.Image:
    with Image.open(query.path) as img:
        return img.convert("RGB")


def test_crops_have_the_promised_sizes_shapes_and_variants(
    originals: list[Path], tmp_path: Path
) -> None:
    queries = make_crop_queries(originals, range(5), 20, tmp_path, seed=3)
    assert len(queries) == 20 * len(CROP_VARIANTS)
    assert {q.kind for q in queries} <= set(CROP_KINDS)
    assert {q.box.shape for q in queries} == {"rect", "circle"}
    for q in queries:
        box = q.box
        assert MIN_SIDE <= box.w <= MAX_SIDE and MIN_SIDE <= box.h <= MAX_SIDE
        with Image.open(originals[q.source]) as original:
            assert box.x + box.w <= original.width and box.y + box.h <= original.height
        size = opened(q).size
        expected = {"0.5x": (round(box.w / 2), round(box.h / 2)), "2x": (2 * box.w, 2 * box.h)}
        assert size == expected.get(q.variant, (box.w, box.h))
        if box.shape == "circle":
            assert box.w == box.h
        if q.variant == "same" and box.shape == "circle":
            pixels = np.asarray(opened(q))
            assert tuple(pixels[0, 0]) == FILL and tuple(pixels[-1, -1]) == FILL
        if q.variant == "jpeg40":
            assert q.path.read_bytes()[:2] == b"\xff\xd8"


def test_crops_are_deterministic(originals: list[Path], tmp_path: Path) -> None:
    first = make_crop_queries(originals, range(5), 8, tmp_path / "a", seed=5)
    again = make_crop_queries(originals, range(5), 8, tmp_path / "b", seed=5)
    other = make_crop_queries(originals, range(5), 8, tmp_path / "c", seed=6)
    assert [q.box for q in first] == [q.box for q in again]
    assert all(
        a.path.read_bytes() == b.path.read_bytes() for a, b in zip(first, again, strict=True)
    )
    assert [q.box for q in first] != [q.box for q in other]


def test_flat_crops_are_detected(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (180, 240, 3), dtype=np.uint8)
    sky = np.linspace(170, 215, 180)[:, None, None] * np.asarray([0.7, 0.85, 1.0])
    folder = tmp_path / "textures"
    folder.mkdir()
    paths = [folder / f"{name}.png" for name in ("noise", "sky", "wall")]
    Image.fromarray(noise).save(paths[0])
    Image.fromarray(np.broadcast_to(sky, (180, 240, 3)).astype(np.uint8)).save(paths[1])
    Image.new("RGB", (240, 180), (120, 110, 100)).save(paths[2])
    queries = make_crop_queries(paths, range(3), 12, tmp_path / "crops", seed=1)
    flat = {(q.source, q.box.flat) for q in queries}
    assert flat == {(0, False), (1, True), (2, True)}


def exact_search(query: Image.Image, mask: np.ndarray | None, images: list[np.ndarray]) -> int:
    """A trivial search: the first image holding the query's pixels at some position."""
    q = np.asarray(query)
    h, w = q.shape[:2]
    keep = np.ones((h, w), bool) if mask is None else mask
    ky, kx = (int(v[0]) for v in np.nonzero(keep))  # a pixel the query shows
    for index, img in enumerate(images):
        rows, cols = img.shape[0] - h + 1, img.shape[1] - w + 1
        if rows <= 0 or cols <= 0:
            continue
        key = (img[ky : ky + rows, kx : kx + cols] == q[ky, kx]).all(axis=-1)
        for y, x in zip(*np.nonzero(key), strict=True):
            if (img[y : y + h, x : x + w][keep] == q[keep]).all():
                return index
    return -1


def test_scoring_of_exact_crops_found_by_a_trivial_search(
    originals: list[Path], tmp_path: Path
) -> None:
    images = [np.asarray(Image.open(p).convert("RGB")) for p in originals]
    queries = make_crop_queries(originals, range(4), 6, tmp_path, seed=2)
    ranked, targets = [], []
    for q in queries:
        mask = (
            np.asarray(circle_mask((q.box.w, q.box.h))) > 127 if q.box.shape == "circle" else None
        )
        found = exact_search(opened(q), mask, images) if q.variant == "same" else -1
        first = found if found >= 0 else next(i for i in range(len(images)) if i != q.source)
        ranked.append([first, *(i for i in range(len(images)) if i != first)] + [-1] * 10)
        targets.append(q.source)
    result = evaluate_crops(
        np.asarray([r[:10] for r in ranked]),
        len(images),
        targets,
        [q.kind for q in queries],
        [q.box.flat for q in queries],
        CROP_KINDS,
    )
    textured = result["textured"]
    assert result["flat"]["overall"]["queries"] == 0
    assert textured["overall"]["queries"] == len(queries)
    for kind, m in textured["per_kind"].items():
        # exact pixels are found first; the other variants are ranked last of 5: still top 10
        assert m["hit@1"] == (1.0 if kind.endswith(" same") else 0.0), kind
        assert m["hit@10"] == 1.0
    assert list(textured["per_kind"]) == [k for k in CROP_KINDS if k in textured["per_kind"]]
    assert textured["overall"]["hit@1"] == pytest.approx(1 / len(CROP_VARIANTS))


def test_flat_queries_are_scored_apart() -> None:
    ranked = np.asarray([[0, 1], [1, 0], [1, 0]])
    result = evaluate_crops(ranked, 2, [0, 0, 1], ["rect same"] * 3, [False, True, True])
    assert result["textured"]["overall"] == {"queries": 1, "hit@1": 1.0, "hit@10": 1.0}
    assert result["flat"]["overall"] == {"queries": 2, "hit@1": 0.5, "hit@10": 1.0}


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings(
        model="mobilenet_v2", weights="random", device="cpu", torch_threads=2, image_size=64
    )


def test_crop_evaluation_end_to_end(
    originals: list[Path], settings: Settings, tmp_path: Path
) -> None:
    folder = originals[0].parent
    options = EvalOptions(crops=folder, crop_queries=6, cache=tmp_path)
    report = run_evaluation(settings, options)
    crops = report["crops"]
    assert crops["indexed"] == 5 and crops["crops"] == 6
    assert crops["queries"] == 6 * len(CROP_VARIANTS)
    (row,) = report["recipes"]
    result = row["crops"]
    assert result["indexed"] == 5
    queries = result["textured"]["overall"]["queries"] + result["flat"]["overall"]["queries"]
    assert (
        queries == crops["queries"]
        and result["flat"]["overall"]["queries"] == crops["flat_queries"]
    )
    assert crops["flat_queries"] == len(CROP_VARIANTS)  # the uniform original's one crop
    for part in ("textured", "flat"):
        m = result[part]["overall"]
        assert 0.0 <= m["hit@1"] <= m["hit@10"] <= 1.0
    again = run_evaluation(settings, options)  # the same crop files, the same numbers
    assert again["recipes"][0]["crops"] == result


def test_eval_command_prints_the_crop_table(
    originals: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """picsearch"""

    register(app)
    for key, value in {"DEVICE": "cpu", "IMAGE_SIZE": "64", "TORCH_THREADS": "2"}.items():
        monkeypatch.setenv(f"PICSEARCH_{key}", value)
    get_settings.cache_clear()
    try:
        args = ["eval", "--crops", str(originals[0].parent), "--crop-queries", "3"]
        args += ["--model", "mobilenet_v2", "--weights", "random"]
        result = CliRunner().invoke(app, [*args, "--json"])
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["crops"]["queries"] == 3 * len(CROP_VARIANTS)
        assert "textured" in report["recipes"][0]["crops"]
        table = CliRunner().invoke(app, args)
        assert table.exit_code == 0, table.output
        assert "rect 0.5x" in table.stdout or "circle 0.5x" in table.stdout
        assert "textured overall" in table.stdout and "flat overall" in table.stdout
    finally:
        get_settings.cache_clear()


def test_jpeg_variant_differs_from_exact_pixels(originals: list[Path], tmp_path: Path) -> None:
    queries = make_crop_queries(originals, [0], 1, tmp_path, seed=9)
    by_variant = {q.variant: np.asarray(opened(q), dtype=np.int16) for q in queries}
    assert by_variant["same"].shape == by_variant["jpeg40"].shape
    assert np.abs(by_variant["same"] - by_variant["jpeg40"]).mean() > 0.5
    assert np.abs(by_variant["same"] - by_variant["colour"]).mean() > 2
    assert io.BytesIO(queries[0].path.read_bytes()).getvalue()[:4] == b"\x89PNG"


# --------------------------------------------------------------------------- region prototypes


def test_ncc_verifies_exact_and_resized_crops_and_rejects_others() -> None:
    source, other = textured_image(400), textured_image(401)
    box = (70, 40, 90, 90)
    piece = source.crop((box[0], box[1], box[0] + box[2], box[1] + box[3]))
    full = Image.new("L", piece.size, 255)
    window = (box[0] - 20, box[1] - 10, 128, 128)  # a coarse region hit around the crop
    assert verify(piece, full, source, window) == pytest.approx(1.0, abs=1e-6)
    doubled = piece.resize((180, 180), Image.Resampling.BICUBIC)
    assert verify(doubled, Image.new("L", doubled.size, 255), source, window) > VERIFIED_NCC
    circle = Image.composite(piece, Image.new("RGB", piece.size, FILL), circle_mask(piece.size))
    assert verify(circle, circle_mask(piece.size), source, window) > 0.99
    assert verify(piece, full, other, window) < VERIFIED_NCC


def test_region_search_keeps_the_best_region_of_each_image() -> None:
    vectors = np.asarray([[1, 0], [0.6, 0.8], [0, 1], [0.8, 0.6]], dtype=np.float16)
    boxes = np.arange(16, dtype=np.int32).reshape(4, 4)
    index = RegionIndex(vectors, boxes, starts=[0, 2, 2, 4], seconds=0.0)  # image 1: none
    scores, best = search(index, np.asarray([[1.0, 0.0]]))
    assert best.tolist()[::2] == [0, 3] and scores[1] == -np.inf
    assert scores[2] == pytest.approx(0.8, abs=1e-3)
    scores, best = search(index, np.asarray([[1.0, 0.0], [0.0, 1.0]]))  # the best vector counts
    assert best.tolist()[::2] == [0, 2] and scores[2] == pytest.approx(1.0, abs=1e-3)
    assert index.per_image() == pytest.approx(4 / 3)


def test_region_designs_end_to_end(
    originals: list[Path], settings: Settings, tmp_path: Path
) -> None:
    options = EvalOptions(
        crops=originals[0].parent, crop_queries=2, cache=tmp_path, regions=tuple(REGION_DESIGNS)
    )
    report = run_evaluation(settings, options)
    service = report["regions"]["service"]
    assert service["indexed"] == 5 and service["vectors_per_image"] >= 1
    assert service["regions"]["textured"]["overall"]["queries"] == 2 * len(CROP_VARIANTS)
    assert 0.0 <= service["verified_share"] <= 1.0
    for design in set(REGION_DESIGNS) - {"service"}:
        result = report["regions"][design]
        assert result["indexed"] == 5 and result["vectors_per_image"] >= 1
        for part in ("regions", "verified"):
            assert result[part]["textured"]["overall"]["queries"] == 2 * len(CROP_VARIANTS)
        # NCC only reorders the shortlist: nothing enters or leaves the top 10
        for part in ("textured", "flat"):
            before, after = result["regions"][part], result["verified"][part]
            assert [m["hit@10"] for m in before["per_kind"].values()] == [
                m["hit@10"] for m in after["per_kind"].values()
            ]
        assert set(result["query_ms"]) >= {"embed", "search", "verify_shortlist"}
