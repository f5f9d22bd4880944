"""`picsearch bench` and the fast inference path: agreement with the naive fp32 reference,
report fields, the index-only mode against a temporary Milvus Lite, precision selection and
the batched JPEG decoder's CPU fallback. No timing assertions: the machine is shared."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import typer
from rich.console import Console
from typer.testing import CliRunner

from app.bench import register
from app.bench.command import slower_than_naive
from app.bench.common import percentile
from app.bench.images import prepare_images
from app.bench.naive import NaiveEncoder, naive_decode
from app.bench.quality import top_k_overlap
from app.bench.report import render
from app.core.config import ModelName, Precision, Settings, get_settings
from app.ml import int8
from app.ml.cpu import cpu_has_native_bf16, cpu_info
from app.ml.device_decode import decode_batch, gpu_decodable, jpeg_frame
from app.ml.encoder import Encoder, _usable, build_backbone, pick_dtype
from app.ml.imageio import ImageDecodeError, decode_image
from app.ml.int8_gate import MIN_IMAGES, MIN_MEAN_COSINE
from app.ml.regions import window_boxes
from app.ml.trunks import CastConv2d, PackedConv2d, lower_precision, pool_features
from app.ml.trunks import can_pack as encoder_can_pack
from tests.imagegen import distinct_image, jpeg_bytes

CPU = torch.device("cpu")
CPUINFO = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f {extra}\nmodel name\t: x\n"


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((a * b).sum(axis=1))


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos" / "nested"
    folder.mkdir(parents=True)
    for seed in range(5):
        (folder / f"p{seed}.jpg").write_bytes(jpeg_bytes(distinct_image(seed, (400, 300)), 90))
    (folder / "notes.txt").write_text("not an image")
    return folder.parent


@pytest.fixture
def bench_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[typer.Typer]:
    """A CLI with only `bench`, on settings that ignore the caller's environment."""
    for key in ("MILVUS_URI", "MODEL", "WEIGHTS", "PRECISION", "DEVICE", "BATCH_SIZE"):
        monkeypatch.delenv(f"PICSEARCH_{key}", raising=False)
    monkeypatch.setenv("PICSEARCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PICSEARCH_TORCH_THREADS", "2")
    get_settings.cache_clear()
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """Test app."""

    register(app)
    yield app
    get_settings.cache_clear()


def run_json(app: typer.Typer, *args: str) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["bench", *args, "--json"])
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.stdout)  # nothing else on stdout
    return report


def rendered(report: dict[str, Any]) -> str:
    console = Console(file=io.StringIO(), width=200)
    for table in render(report):
        console.print(table)
    assert isinstance(console.file, io.StringIO)
    return console.file.getvalue()


# -- our fast path vs. the naive fp32 reference ----------------------------------------------
@pytest.mark.parametrize(("model", "precision"), [("vgg16", "bf16"), ("mobilenet_v2", "bf16")])
def test_fast_path_vectors_match_naive_fp32_reference(
    model: ModelName, precision: Precision
) -> None:
    settings = Settings(model=model, weights="random", device="cpu", precision=precision)
    datas = [jpeg_bytes(distinct_image(seed, (640, 480)), 85) for seed in (11, 12, 13)]
    fast = Encoder(settings)
    ours = fast.embed(np.stack([decode_image(d, size=224, max_pixels=10**8).pixels for d in datas]))
    naive = NaiveEncoder(settings)
    ref = np.stack([naive.embed_one(naive_decode(d, 224)) for d in datas])
    assert fast.info.precision == "bfloat16"
    assert cosines(ours, ref).min() >= 0.999


def test_cpu_vectors_do_not_depend_on_the_batch() -> None:
    enc = Encoder(Settings(model="vgg16", weights="random", device="cpu", precision="bf16"))
    pixels = np.stack(
        [
            decode_image(jpeg_bytes(distinct_image(s)), size=224, max_pixels=10**8).pixels
            for s in (1, 2, 3)
        ]
    )
    together = enc.embed(pixels)
    alone = np.concatenate([enc.embed(pixels[i : i + 1]) for i in range(3)])
    if enc.micro_batch == 1:  # one image per forward pass: bit for bit the same
        assert np.array_equal(together, alone)
    assert cosines(together, alone).min() >= 0.9999


# -- precision selection ------------------------------------------------------------------------
def test_native_bf16_is_read_from_cpu_flags_within_the_isa_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    here = "avx512_bf16" in cpu_info().flags or "amx_bf16" in cpu_info().flags
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):  # the caller's limit, if any
        monkeypatch.delenv(name, raising=False)
    assert cpu_has_native_bf16(CPUINFO.format(extra="avx512_bf16"))
    assert cpu_has_native_bf16(CPUINFO.format(extra="amx_tile amx_bf16"))
    assert not cpu_has_native_bf16(CPUINFO.format(extra="avx512bw"))
    assert not cpu_has_native_bf16("")
    assert cpu_has_native_bf16() == here
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # oneDNN may not use bf16 then
    assert not cpu_has_native_bf16(CPUINFO.format(extra="amx_tile amx_bf16"))
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
    assert cpu_has_native_bf16(CPUINFO.format(extra="amx_tile amx_bf16"))


def test_auto_precision_tries_bf16_first_only_where_the_cpu_has_it() -> None:
    cuda = torch.device("cuda")
    assert pick_dtype("auto", cuda) == torch.float16
    assert pick_dtype("auto", CPU, native_bf16=True) == torch.bfloat16
    assert pick_dtype("auto", CPU, native_bf16=False) == torch.float32
    assert pick_dtype("fp32", CPU, native_bf16=True) == torch.float32
    assert pick_dtype("bf16", CPU, native_bf16=False) == torch.bfloat16


def test_lower_precision_keeps_depthwise_convs_in_fp32() -> None:
    trunk = build_backbone("mobilenet_v2", None)
    low = lower_precision(trunk, torch.bfloat16)
    casts = [m for m in low.modules() if isinstance(m, CastConv2d)]
    assert {m.dtype for m in casts if m.conv.groups > 1} == {torch.float32}
    assert {m.dtype for m in casts if m.conv.groups == 1} == {torch.bfloat16}
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in trunk.modules())
    assert len(casts) == convs  # every convolution converted
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        want = pool_features(trunk(x), "gem")
        got = pool_features(low(x), "gem")
    assert torch.nn.functional.cosine_similarity(want, got).min() > 0.99
    assert next(trunk.parameters()).dtype == torch.float32  # the original is untouched


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_prepacked_convolutions_use_each_layers_real_shape(dtype: torch.dtype) -> None:
    if not encoder_can_pack():
        pytest.skip("this torch build has no prepacked oneDNN convolutions")
    if dtype == torch.bfloat16 and not cpu_info().native_bf16:
        pytest.skip(f"{cpu_info().model} has no hardware bf16: oneDNN may refuse bf16 packing")
    trunk = build_backbone("vgg16", None)
    packed = lower_precision(trunk, dtype, pack_for=(2, 64))
    layers = [m for m in packed.modules() if isinstance(m, PackedConv2d)]
    assert len(layers) == 13  # every VGG16 convolution
    x = torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        want = pool_features(trunk(x), "gem")
        got = pool_features(packed(x), "gem")
        assert torch.nn.functional.cosine_similarity(want, got).min() > 0.999
        # any batch size still runs: the shape is a hint for the weight layout
        assert packed(x[:1]).shape == trunk(x[:1]).shape


# -- batched JPEG decoding (nvJPEG on CUDA) and its CPU fallback ------------------------------
def test_decode_batch_matches_pil_decoding_and_falls_back_per_file() -> None:
    png = io.BytesIO()
    distinct_image(22).save(png, format="PNG")
    datas = [
        jpeg_bytes(distinct_image(21, (640, 480)), 90),
        png.getvalue(),
        b"\xff\xd8\xff\xe0" + bytes(200),  # corrupt JPEG: fails the batched call
        jpeg_bytes(distinct_image(23, (300, 500)), 90),
        jpeg_bytes(distinct_image(24).convert("CMYK"), 90),  # CMYK: not batchable
    ]
    results = decode_batch(datas, size=224, max_pixels=10**8, device=CPU, batched=True)
    assert isinstance(results[2], ImageDecodeError)
    pixels = [r for r in results if isinstance(r, torch.Tensor)]
    assert len(pixels) == 4
    assert all(p.shape == (224, 224, 3) and p.dtype == torch.uint8 for p in pixels)
    reference = [
        decode_image(d, size=224, max_pixels=10**8).pixels for i, d in enumerate(datas) if i != 2
    ]
    for got, want in zip(pixels, reference, strict=True):
        assert np.abs(got.numpy().astype(int) - want.astype(int)).mean() < 4

    # a good batch goes through torchvision's decoder in one call
    good = [datas[0], datas[3]]
    batched = decode_batch(good, size=224, max_pixels=10**8, device=CPU, batched=True)
    plain = decode_batch(good, size=224, max_pixels=10**8, device=CPU)  # CPU default: PIL
    enc = Encoder(Settings(model="mobilenet_v2", weights="random", device="cpu"))
    a = enc.embed(torch.stack([t for t in batched if isinstance(t, torch.Tensor)]))
    b = enc.embed(torch.stack([t for t in plain if isinstance(t, torch.Tensor)]))
    assert cosines(a, b).min() > 0.99
    first = plain[0]
    assert isinstance(first, torch.Tensor)
    assert np.array_equal(first.numpy(), decode_image(good[0], size=224, max_pixels=10**8).pixels)


def test_embed_rejects_wrong_shapes_and_dtypes() -> None:
    enc = Encoder(Settings(model="mobilenet_v2", weights="random", device="cpu"))
    with pytest.raises(ValueError, match="uint8"):
        enc.embed(np.zeros((1, 32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="expected"):
        enc.embed(np.zeros((32, 32, 3), np.uint8))
    assert enc.embed(np.zeros((0, 32, 32, 3), np.uint8)).shape == (0, 1280)


# -- bench helpers and the command ------------------------------------------------------------
def test_images_are_sampled_or_repeated_to_n(photos: Path, tmp_path: Path) -> None:
    repeated = prepare_images(photos, 12, tmp_path / "rep")
    assert len(repeated) == 12 and len({p.name for p in repeated}) == 12
    assert repeated[0].read_bytes() == repeated[5].read_bytes()  # cycled through 5 photos
    sampled = prepare_images(photos, 3, tmp_path / "sample")
    assert len({p.read_bytes() for p in sampled}) == 3


def test_percentile_and_top_k_overlap() -> None:
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([0.0, 10.0], 99) == pytest.approx(9.9)
    vectors = np.random.default_rng(0).normal(size=(30, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    assert top_k_overlap(vectors, vectors) == 1.0
    shuffled = np.random.default_rng(1).normal(size=(30, 8)).astype(np.float32)
    assert top_k_overlap(vectors, shuffled) < 0.8


def test_ingest_report_has_every_figure(bench_cli: typer.Typer, photos: Path) -> None:
    report = run_json(
        bench_cli,
        "--images", str(photos), "-n", "7", "--model", "mobilenet_v2", "--device", "cpu",
        "--batch-size", "4", "--repeat", "1", "--queries", "3", "--int8", "off",
    )  # fmt: skip
    assert report["mode"] == "ingest"
    config = report["config"]
    assert config["int8"] == {"state": "off", "reason": "PICSEARCH_INT8=off"}
    assert report["first_load"] is None
    assert config["count"] == 7 and config["image_size"] == 224
    assert config["milvus"].startswith("milvus-lite")
    assert config["precision"] in ("float32", "bfloat16")  # as measured fastest here
    found = report["machine"]
    assert found["cpu"] == cpu_info().describe()
    assert found["batch_runtime"].startswith(f"{config['runtime']} {config['precision']}")
    assert found["query_runtime"].endswith(", batch 1")  # queries run one image at a time
    assert found["cpu_runtime_trials"] and all(t["name"] for t in found["cpu_runtime_trials"])
    assert "fastest accepted at batch" in found["batch_reason"]
    for side in ("ours", "naive"):
        assert set(report[side]) == {
            "images_per_s", "seconds", "decode", "embed", "write", "other"
        }  # fmt: skip
        assert report[side]["images_per_s"] > 0
    assert report["speedup"] > 0
    flops = report["model_flops"]
    assert 0.2 < flops["gmac_per_image"] < 0.4  # MobileNetV2 features at 224²: ~0.3 GMAC
    assert "float32" in flops["peak_gflops"] and flops["ours_gflops"] > 0
    search = report["search"]
    assert search["collection_size"] == 7
    assert search["query_p50_ms"] <= search["query_p99_ms"]
    assert {"search_p50_ms", "search_p99_ms", "embed_p50_ms"} <= set(search)
    quality = report["vectors_vs_naive_fp32"]
    assert quality["cosine_min"] >= 0.999 and quality["top10_overlap"] > 0.5
    text = rendered(report)
    assert "images/s end to end" in text and "top-10 overlap" in text
    assert f"CPU: {found['cpu']}" in text
    assert slower_than_naive(report) is None or report["speedup"] < 1


@pytest.mark.skipif(not int8.nncf_available(), reason="OpenVINO/NNCF not installed")
def test_first_load_calibrates_int8_and_later_loads_and_queries_use_what_it_decided(
    bench_cli: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "distinct"
    folder.mkdir()
    count = MIN_IMAGES + 2  # enough for the gate's top-10 overlap; no repeated photo
    for i in range(count):
        (folder / f"{i:02d}.jpg").write_bytes(jpeg_bytes(distinct_image(500 + i, (400, 300))))
    monkeypatch.setenv("PICSEARCH_IMAGE_SIZE", "64")  # VGG16 quantizes in seconds at 64 px
    report = run_json(
        bench_cli,
        "--images", str(folder), "-n", str(count), "--model", "vgg16", "--device", "cpu",
        "--repeat", "1", "--queries", "2", "--naive-count", "2", "--search-size", "40",
    )  # fmt: skip
    config, found = report["config"], report["machine"]
    record = config["int8"]
    assert report["first_load"]["images_per_s"] > 0
    assert record["calibration_images"] == count and record["recipe"] == "minmax"
    assert record["state"] in ("accepted", "refused")  # refused only as not faster here
    if record["state"] == "accepted":
        assert config["runtime"] == "openvino-int8" and config["precision"] == "int8"
        assert found["batch_runtime"].startswith("openvino-int8 int8")
        assert record["query_note"].startswith(("queries run int8", "queries stay on"))
        assert report["model_flops"]["ours_fraction_of_peak"] is None
    else:
        assert "not faster here" in record["reason"] and config["runtime"] != "openvino-int8"
    quality = report["vectors_vs_naive_fp32"]
    assert quality["cosine_mean"] >= MIN_MEAN_COSINE  # what the gate held int8 to
    assert report["search"]["collection_size"] == 40  # topped up with synthetic vectors
    text = rendered(report)
    assert "first load (calibrates int8)" in text and f"{record['state']}: " in text


def test_check_fails_only_when_ours_is_slower_than_naive() -> None:
    report: dict[str, Any] = {
        "mode": "ingest",
        "speedup": 0.52,
        "ours": {"images_per_s": 1.54},
        "naive": {"images_per_s": 2.96},
        "machine": {"cpu": "AMD EPYC 7B13 (2 CPUs; avx2 fma)"},
    }
    failure = slower_than_naive(report)
    assert failure is not None and "0.52x" in failure and "AMD EPYC 7B13" in failure
    assert slower_than_naive({**report, "speedup": 1.0}) is None
    assert slower_than_naive({"mode": "index"}) is None


def test_several_processes_index_every_file_exactly_once(
    bench_cli: typer.Typer, photos: Path
) -> None:
    report = run_json(
        bench_cli,
        "--images", str(photos), "-n", "9", "--model", "mobilenet_v2", "--device", "cpu",
        "--batch-size", "2", "--repeat", "2", "--queries", "1", "--processes", "2",
    )  # fmt: skip
    parallel = report["ours_processes"]
    assert report["config"]["processes"] == parallel["processes"] == 2
    # The pool fails the bench unless the processes' counts add up to exactly 9 per run.
    assert len(parallel["images_per_s_runs"]) == 2 and parallel["images_per_s"] > 0
    assert parallel["speedup"] == pytest.approx(
        parallel["images_per_s"] / report["naive"]["images_per_s"]
    )
    # each process measures its runtime on its share of the cores: it may choose another
    assert parallel["runtime"] and parallel["runtime"] in rendered(report)
    assert "images/s end to end, 2 processes" in rendered(report)


def test_searches_during_a_load_at_both_worker_priorities(
    bench_cli: typer.Typer, photos: Path
) -> None:
    report = run_json(
        bench_cli,
        "--images", str(photos), "-n", "6", "--model", "mobilenet_v2", "--device", "cpu",
        "--batch-size", "2", "--repeat", "2", "--queries", "1", "--int8", "off",
        "--during-load",
    )  # fmt: skip
    during = report["search_during_load"]
    service = get_settings().worker_nice
    assert during["service_nice"] == service > 0
    assert set(during["by_worker_nice"]) == {"0", str(service)}
    for row in during["by_worker_nice"].values():
        # each of the 2 loads answered at least one query while it ran; the load finished
        assert row["queries"] >= 2 and row["load_images_per_s"] > 0
        assert 0 < row["query_p50_ms"] <= row["query_p99_ms"]
    assert f"during a load, worker at nice {service} (the service's)" in rendered(report)


def test_during_load_is_refused_outside_the_ingest_mode(bench_cli: typer.Typer) -> None:
    result = CliRunner().invoke(bench_cli, ["bench", "--index-only", "--during-load"])
    assert result.exit_code == 2 and "--during-load goes with the ingest mode" in result.output


def test_index_only_mode_at_a_tiny_size(bench_cli: typer.Typer) -> None:
    report = run_json(
        bench_cli,
        "--index-only", "--sizes", "500", "--model", "mobilenet_v2",
        "--repeat", "1", "--queries", "5",
    )  # fmt: skip
    assert report["mode"] == "index" and report["config"]["dim"] == 1280
    (row,) = report["results"]
    assert row["backend"] == "milvus-lite" and row["size"] == 500
    assert row["index_type"] == "HNSW" and row["insert_vectors_per_s"] > 0
    assert row["search_p50_ms"] <= row["search_p99_ms"]
    assert row["recall_at_10"] >= 0.99 and row["index_ready_s"] >= 0 and row["index_built"]
    assert row["query_p50_ms"] >= row["embed_p50_ms"] > 0
    assert "500" in rendered(report)


def test_regions_mode_compares_both_collections(bench_cli: typer.Typer, photos: Path) -> None:
    report = run_json(
        bench_cli,
        "--regions", "--images", str(photos), "-n", "3", "--model", "vgg16",
        "--repeat", "1", "--queries", "3",
    )  # fmt: skip
    assert report["mode"] == "regions" and report["config"]["images"] == 3
    plain, regions = report["results"]["plain"], report["results"]["regions"]
    for row in (plain, regions):
        assert row["images_per_s"] > 0 and 0 < row["crop_p50_ms"] <= row["crop_p99_ms"]
        assert row["whole_p50_ms"] > 0 and 0 <= row["crop_top1"] <= 1
    # 400x300 photos: windows of 96 and 192 px, each at 96 px: the crop's pixels are found
    assert report["region_rows_per_image"] == len(window_boxes(400, 300))
    assert regions["crop_top1"] == 1.0
    assert report["ingest_ratio"] > 0 and report["crop_query_ratio"] > 0
    assert "Crop search" in rendered(report)


def test_bench_without_images_fails_cleanly(bench_cli: typer.Typer, tmp_path: Path) -> None:
    result = CliRunner().invoke(bench_cli, ["bench", "--images", str(tmp_path), "-n", "2"])
    assert result.exit_code == 1
    assert "no image files" in result.output
    result = CliRunner().invoke(bench_cli, ["bench", "--index-only", "--skip-lite"])
    assert result.exit_code == 1
    assert "--skip-lite leaves nothing to measure without PICSEARCH_MILVUS_URI" in result.output


# -- CUDA (skipped without a device) ----------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_fast_path_and_nvjpeg_decoding_match_cpu() -> None:
    cuda = torch.device("cuda")
    datas = [jpeg_bytes(distinct_image(s, (640, 480)), 90) for s in (31, 32, 33)]
    on_gpu = decode_batch(datas, size=224, max_pixels=10**8, device=cuda)
    assert all(isinstance(t, torch.Tensor) and t.device.type == "cuda" for t in on_gpu)
    gpu = Encoder(Settings(weights="random", device="cuda", precision="auto"), compile=False)
    assert gpu.info.precision == "float16" and torch.backends.cudnn.benchmark
    cpu = Encoder(Settings(weights="random", device="cpu", precision="fp32"))
    pixels = np.stack([decode_image(d, size=224, max_pixels=10**8).pixels for d in datas])
    assert cosines(gpu.embed(pixels), cpu.embed(pixels)).min() > 0.999
    stacked = torch.stack([t for t in on_gpu if isinstance(t, torch.Tensor)])
    assert cosines(gpu.embed(stacked), cpu.embed(pixels)).min() > 0.99


# -- routing JPEGs to the GPU decoder (pure header logic) -------------------------------------
def test_jpeg_frame_and_gpu_routing() -> None:
    plain = jpeg_bytes(distinct_image(51, (500, 375)), 90)
    frame = jpeg_frame(plain)
    assert frame is not None and (frame.width, frame.height, frame.components) == (500, 375, 3)
    assert frame.marker == 0xC0 and frame.precision == 8
    assert gpu_decodable(plain, 10**8)
    assert not gpu_decodable(plain, 500 * 375 - 1)  # over the pixel limit
    assert not gpu_decodable(plain[: len(plain) // 2], 10**8)  # truncated: Pillow reports it
    assert gpu_decodable(plain + b"\0" * 16, 10**8)  # zero padding after the end marker
    progressive, cmyk, grey = io.BytesIO(), io.BytesIO(), io.BytesIO()
    distinct_image(52).save(progressive, format="JPEG", progressive=True)
    distinct_image(53).convert("CMYK").save(cmyk, format="JPEG")
    distinct_image(54).convert("L").save(grey, format="JPEG")
    assert gpu_decodable(progressive.getvalue(), 10**8)
    assert gpu_decodable(grey.getvalue(), 10**8)
    assert not gpu_decodable(cmyk.getvalue(), 10**8)  # 4 components
    png = io.BytesIO()
    distinct_image(55).save(png, format="PNG")
    for junk in (png.getvalue(), b"", b"\xff\xd8\xff", b"\xff\xd8\xff\xe0\x00\x01garbage"):
        assert jpeg_frame(junk) is None and not gpu_decodable(junk, 10**8)


def test_unusable_feature_maps_are_detected() -> None:
    ok = torch.rand(2, 4, 3, 3) + 0.1
    assert _usable(ok)
    zero = ok.clone()
    zero[1] = 0  # underflowed to zeros: a zero vector has no direction
    assert not _usable(zero)
    inf = ok.clone()
    inf[0, 0, 0, 0] = float("inf")
    assert not _usable(inf)
