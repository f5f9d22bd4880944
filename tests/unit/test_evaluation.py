"""`picsearch eval`: metrics on hand-made rankings, near-duplicate transforms, recipe variants,
and a tiny end-to-end run on synthetic images (random weights: structure, not quality)."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from PIL import Image
from typer.testing import CliRunner

from app.core.config import Settings, get_settings
from app.evaluation import EvalOptions, register, run_evaluation
from app.evaluation.duplicates import DUP_TRANSFORMS, near_duplicate
from app.evaluation.embedding import embed_grid, embed_service
from app.evaluation.metrics import (
    average_precision_at_k,
    evaluate_labelled,
    evaluate_near_duplicates,
    precision_at_k,
    recall_at_k,
    top_k,
)
from app.evaluation.pooling import rmac, rmac_regions
from app.evaluation.preprocess import prepare, valid_cells
from app.evaluation.recipes import Prep, Recipe, current_recipe, seed_recipe
from app.evaluation.whitening import Whitening
from app.ml.encoder import Encoder
from app.ml.imageio import decode_image
from tests.imagegen import distinct_image, jpeg_bytes

LIMIT = 120_000_000


# --------------------------------------------------------------------------- metrics


def test_average_precision_at_k_on_hand_made_rankings() -> None:
    # relevant at ranks 1 and 3 of 3 relevant: (1/1 + 2/3) / 3
    assert average_precision_at_k([True, False, True, False], 3, 10) == pytest.approx(5 / 9)
    # only the first k ranks count: rank 2 of 2 relevant within k = 2 -> (1/2) / 2
    assert average_precision_at_k([False, True, True], 2, 2) == pytest.approx(0.25)
    # a perfect top-k scores 1 even when more relevant items exist than k
    assert average_precision_at_k([True, True, False], 5, 2) == 1.0
    assert average_precision_at_k([False] * 10, 4, 10) == 0.0
    assert average_precision_at_k([True], 0, 10) == 0.0


def test_precision_and_recall_at_k() -> None:
    ranking = [True, False, True] + [False] * 7
    assert precision_at_k(ranking, 1) == 1.0
    assert precision_at_k(ranking, 10) == pytest.approx(0.2)
    assert precision_at_k(ranking[:3], 10) == pytest.approx(0.2)  # short list: still / k
    assert recall_at_k(ranking, 3, 10) == pytest.approx(2 / 3)
    assert recall_at_k(ranking, 3, 1) == pytest.approx(1 / 3)
    assert recall_at_k(ranking, 0, 10) == 0.0


def unit_vectors(degrees: list[float]) -> np.ndarray:
    rad = np.radians(degrees)
    return np.stack([np.cos(rad), np.sin(rad)], axis=1).astype(np.float32)


def test_top_k_excludes_the_query_itself() -> None:
    vectors = unit_vectors([0, 10, 25, 90])
    ranked = top_k(vectors, vectors, 10, exclude=np.arange(4))
    assert ranked.tolist() == [[1, 2, 3], [0, 2, 3], [1, 0, 3], [2, 1, 0]]
    assert top_k(vectors[:1], vectors, 2).tolist() == [[0, 1]]


def test_labelled_metrics_with_self_excluded() -> None:
    # angles 0, 10 (class a), 25, 90 (class b), 200 (class c, alone: nothing to find)
    vectors = unit_vectors([0, 10, 25, 90, 200])
    report = evaluate_labelled(vectors, ["a", "a", "b", "b", "c"], k=10)
    # rankings (self excluded): q0 a: 1 2 3 .. -> hit at 1; q1 a: 0 2 .. -> hit at 1;
    # q2 b: 1 0 3 -> its only relevant item at rank 3 (AP 1/3); q3 b: 2 1 0 -> hit at 1
    assert report["queries"] == 4 and report["skipped_queries"] == 1
    overall = report["overall"]
    assert overall["map@10"] == pytest.approx((1 + 1 + 1 / 3 + 1) / 4)
    assert overall["p@1"] == pytest.approx(3 / 4)
    assert overall["p@10"] == pytest.approx(0.1)
    assert overall["recall@10"] == pytest.approx(1.0)
    assert report["per_class"]["a"]["map@10"] == pytest.approx(1.0)
    assert report["per_class"]["b"]["map@10"] == pytest.approx(2 / 3)
    assert report["per_class"]["b"]["p@1"] == pytest.approx(0.5)
    assert report["macro"]["map@10"] == pytest.approx((1 + 2 / 3) / 2)
    assert "c" not in report["per_class"]
    at1 = evaluate_labelled(vectors, ["a", "a", "b", "b", "c"], k=1)["overall"]
    assert at1["map@1"] == pytest.approx(3 / 4) and at1["recall@1"] == pytest.approx(3 / 4)


def test_near_duplicate_hit_rates() -> None:
    database = unit_vectors([0, 40, 80, 120])
    queries = unit_vectors([2, 62, 118, 50])  # nearest: 0, 80 (target 40 second), 120, 40
    report = evaluate_near_duplicates(database, queries, [0, 1, 3, 1], ["a", "a", "b", "b"])
    assert report["overall"] == {"queries": 4, "hit@1": 0.75, "hit@10": 1.0}
    assert report["per_transform"]["a"] == {"queries": 2, "hit@1": 0.5, "hit@10": 1.0}
    assert report["per_transform"]["b"]["hit@1"] == 1.0


def test_pca_whitening_decorrelates_and_normalises() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 16)) @ rng.normal(size=(16, 16))
    w = Whitening.learn(x, 8)
    y = (x - w.mean) @ w.projection
    assert np.allclose(np.cov(y, rowvar=False), np.eye(8), atol=1e-3)
    assert np.allclose(np.linalg.norm(w.apply(x.astype(np.float32)), axis=1), 1.0, atol=1e-5)


# --------------------------------------------------------------------------- transforms


@pytest.fixture(scope="module")
def original() -> Image.Image:
    return distinct_image(11, (400, 300))


@pytest.mark.parametrize("transform", DUP_TRANSFORMS)
def test_near_duplicates_are_deterministic_valid_images(
    original: Image.Image, transform: str
) -> None:
    data = near_duplicate(original, transform)
    assert data == near_duplicate(original, transform)
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "JPEG"
        size = img.size
    pixels = decode_image(data, size=64, max_pixels=LIMIT).pixels
    assert pixels.shape == (64, 64, 3)
    expected = {
        "crop": (160, 120),
        "resize": (64, 48),
        "rotate": (286, 214),
        "combined": (240, 180),
    }.get(transform, (400, 300))
    assert abs(size[0] - expected[0]) <= 2 and abs(size[1] - expected[1]) <= 2
    base = np.asarray(original, dtype=np.float64)
    out = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float64)
    if transform == "flip":
        assert np.abs(out[:, ::-1] - base).mean() < 4
    if transform == "grayscale":
        assert np.abs(out[..., 0] - out[..., 2]).max() < 8
    if transform in ("jpeg", "colour", "text"):
        assert 1 < np.abs(out - base).mean() < 60  # changed, still the same picture


def test_rotation_has_no_empty_corners(original: Image.Image) -> None:
    white = Image.new("RGB", (400, 300), (255, 255, 255))
    rotated = Image.open(io.BytesIO(near_duplicate(white, "rotate")))
    assert np.asarray(rotated).min() > 230


# --------------------------------------------------------------------------- recipe variants


def test_rmac_regions_follow_tolias_layout() -> None:
    square = rmac_regions(7, 7)
    # whole map, level 1 (the map again), 2x2 of side 4, 3x3 of side 3
    assert len(square) == 1 + 1 + 4 + 9
    assert sorted({r[2] for r in square}) == [3, 4, 7]
    for h, w in [(7, 7), (4, 7), (10, 6), (1, 3), (2, 2)]:
        for top, left, rh, rw in rmac_regions(h, w):
            assert 0 <= top and top + rh <= h and 0 <= left and left + rw <= w and rh * rw > 0
    wide = rmac_regions(4, 7)
    assert (0, 0, 4, 4) in wide and (0, 3, 4, 4) in wide  # level 1 slides along the long side


def test_rmac_sums_normalised_region_maxima() -> None:
    fmap = torch.zeros(1, 2, 3, 3)
    fmap[0, 0, 0, 0] = 5.0  # channel 0 peaks in one corner only
    fmap[0, 1] = 1.0  # channel 1 everywhere
    v = rmac(fmap)[0]
    regions = rmac_regions(3, 3)
    corner = sum(1 for t, left, _, _ in regions if t == 0 and left == 0)
    expected_c0 = corner * 5 / math.hypot(5, 1)
    expected_c1 = corner * 1 / math.hypot(5, 1) + (len(regions) - corner)
    assert v.tolist() == pytest.approx([expected_c0, expected_c1], rel=1e-5)


def test_preprocessing_variants_and_valid_cells() -> None:
    data = jpeg_bytes(distinct_image(3, (320, 160)), 92)
    preps = [Prep(m, 64) for m in ("squash-nearest", "squash-bilinear", "crop", "pad")]
    out = prepare(data, preps, LIMIT)
    for prep in preps:
        assert out[prep][0].shape == (64, 64, 3) and out[prep][0].dtype == np.uint8
    assert np.array_equal(
        out[Prep("squash-bilinear", 64)][0], decode_image(data, size=64, max_pixels=LIMIT).pixels
    )
    pixels, valid = out[Prep("pad", 64)]
    assert valid == (32, 64)
    assert np.all(np.abs(pixels[40:].astype(int) - [124, 116, 104]) <= 1)  # ImageNet mean pad
    assert valid_cells((112, 224), 224, 7, 7) == (4, 7)
    assert valid_cells((224, 10), 224, 7, 7) == (7, 1)


@pytest.fixture(scope="module")
def mobilenet_settings() -> Settings:
    return Settings(
        model="mobilenet_v2", weights="random", device="cpu", torch_threads=2, image_size=64
    )


def test_grid_reproduces_the_service_code_path(
    tmp_path: Path, mobilenet_settings: Settings
) -> None:
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.jpg")
        paths[-1].write_bytes(jpeg_bytes(distinct_image(40 + i), 90))
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    paths.insert(1, tmp_path / "bad.jpg")
    encoder = Encoder(mobilenet_settings)
    current = current_recipe(mobilenet_settings)
    grid = embed_grid(encoder, paths, [current.prep], ["gem", "mac"], max_pixels=LIMIT)
    service = embed_service(encoder, mobilenet_settings, paths)
    assert grid.ok == service.ok == [0, 2, 3]
    assert str(paths[1]) in grid.failed and str(paths[1]) in service.failed
    assert np.allclose(grid.vectors[current], service.vectors[current], atol=1e-5)


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("eval")
    for c, cls in enumerate(["alpha", "beta", "gamma"]):
        (base / "labelled" / cls).mkdir(parents=True)
        for i in range(3):
            img = distinct_image(100 + 10 * c + i, (160, 120))
            img.save(base / "labelled" / cls / f"{i}.jpg", quality=90)
    (base / "originals").mkdir()
    for i in range(4):
        distinct_image(200 + i, (200, 150)).save(base / "originals" / f"{i}.jpg", quality=90)
    return base / "labelled", base / "originals"


def check_labelled(report: dict[str, object]) -> None:
    assert isinstance(report, dict)
    assert set(report) >= {"overall", "macro", "per_class", "queries", "images"}
    assert report["queries"] == 9
    per_class = report["per_class"]
    assert isinstance(per_class, dict) and set(per_class) == {"alpha", "beta", "gamma"}
    overall = report["overall"]
    assert isinstance(overall, dict) and set(overall) == {"map@5", "p@1", "p@10", "recall@5"}
    assert all(0.0 <= v <= 1.0 for v in overall.values())


def test_compare_end_to_end_report_structure(
    folders: tuple[Path, Path], mobilenet_settings: Settings, tmp_path: Path
) -> None:
    labelled, originals = folders
    options = EvalOptions(
        labelled=labelled,
        originals=originals,
        k=5,
        dup_queries=2,
        compare=True,
        sizes=(64,),
        resize_modes=("squash-bilinear", "pad"),
        whiten=4,
        cache=tmp_path / "cache",
    )
    report = run_evaluation(mobilenet_settings, options)
    assert report["random_weights"] is True
    assert report["originals"]["queries"] == 2 * len(DUP_TRANSFORMS)
    rows = {row["recipe"]: row for row in report["recipes"]}
    # 2 resize modes x 4 poolings at 64, the seed's nearest squash at 224 x 4 poolings, + pcaw
    assert "mac squash-nearest 224" in rows and rows["mac squash-nearest 224"]["is_seed"]
    assert rows["gem squash-bilinear 64"]["is_current"]
    assert {"rmac pad 64", "spoc squash-bilinear 64"} <= set(rows)
    assert sum(1 for r in rows if r.endswith("+pcaw4")) >= 4
    for row in report["recipes"]:
        check_labelled(row["labelled"])
        nd = row["near_duplicates"]
        assert list(nd["per_transform"]) == list(DUP_TRANSFORMS)
        assert nd["indexed"] == 4 and nd["overall"]["queries"] == 2 * len(DUP_TRANSFORMS)
        assert 0.0 <= nd["overall"]["hit@1"] <= nd["overall"]["hit@10"] <= 1.0
    assert report["best"]["labelled"] in rows and report["best"]["near_duplicates"] in rows
    again = run_evaluation(mobilenet_settings, options)  # from the cache: same numbers
    assert [r["labelled"]["overall"] for r in again["recipes"]] == [
        r["labelled"]["overall"] for r in report["recipes"]
    ]
    assert seed_recipe() == Recipe(Prep("squash-nearest", 224), "mac")


def test_eval_command_json_and_table(
    folders: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    labelled, originals = folders
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """picsearch"""

    register(app)
    for key, value in {"DEVICE": "cpu", "IMAGE_SIZE": "64", "TORCH_THREADS": "2"}.items():
        monkeypatch.setenv(f"PICSEARCH_{key}", value)
    get_settings.cache_clear()
    try:
        args = ["eval", "--labelled", str(labelled), "--originals", str(originals)]
        args += ["--model", "mobilenet_v2", "--weights", "random", "-k", "5", "--dup-queries", "1"]
        result = CliRunner().invoke(app, [*args, "--json"])
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["model"] == "mobilenet_v2"
        (row,) = report["recipes"]
        assert row["recipe"] == report["service_recipe"]
        check_labelled(row["labelled"])
        assert row["near_duplicates"]["overall"]["queries"] == len(DUP_TRANSFORMS)
        table = CliRunner().invoke(app, args)
        assert table.exit_code == 0, table.output
        assert "RANDOM" in table.stdout and "grayscale" in table.stdout
        assert "gamma" in table.stdout
        missing = CliRunner().invoke(app, ["eval"])
        assert missing.exit_code != 0
    finally:
        get_settings.cache_clear()
