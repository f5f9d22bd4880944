"""The CPU runtime chosen by measurement: every runtime this CPU offers agrees with eager fp32,
the fastest accepted one is kept per purpose, the choice is cached by what could change it,
and runtimes this CPU cannot run are skipped with the reason.

Speeds are injected (a timer that ranks runtimes), never measured: the machine is shared and
CPUs differ. The model is the real VGG16/MobileNetV2 trunk (random weights) at 64 px.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from app.ml import runtime_choice
from app.ml.cpu import ISA_ENVIRONMENT, CpuInfo, cpu_info, parse_cpuinfo
from app.ml.encoder import build_backbone
from app.ml.runtime_choice import RuntimeReport, TrunkSpec, choose, measure
from app.ml.trunks import OpenVinoTrunk, PackedConv2d, TrunkFn, can_pack, openvino_available

AVX2_ONLY = CpuInfo("AMD EPYC 7B13", frozenset({"avx2", "fma"}), 2)
WITH_BF16 = CpuInfo("Intel Xeon", frozenset({"avx2", "fma", "avx512f", "avx512_bf16"}), 2)


def spec_for(tmp_path: Path, model: str = "vgg16", **changes: object) -> TrunkSpec:
    values: dict[str, object] = {
        "trunk": build_backbone(model, None).to(memory_format=torch.channels_last),
        "model": model,
        "weights_id": "random-seed1",
        "image_size": 64,
        "pooling": "gem",
        "dtypes": (torch.float32, torch.bfloat16),
        "micro_batches": (1, 4),
        "cache_dir": tmp_path / "cache",
    }
    values.update(changes)
    return TrunkSpec(**values)  # type: ignore[arg-type]


def kind(fn: TrunkFn) -> str:
    if isinstance(fn, OpenVinoTrunk):
        return "openvino"
    assert isinstance(fn, nn.Module)
    return "onednn-prepacked" if any(isinstance(m, PackedConv2d) for m in fn.modules()) else "eager"


def ranked(speeds: dict[tuple[str, int], float]) -> runtime_choice.Measure:
    """A timer giving each (runtime, batch) the speed listed (1.0 if not listed)."""

    def timer(fn: TrunkFn, x: torch.Tensor) -> float:
        return speeds.get((kind(fn), len(x)), 1.0)

    return timer


def test_every_runtime_offered_agrees_with_eager_fp32(tmp_path: Path) -> None:
    report = measure(spec_for(tmp_path), cpu_info(), ranked({}))
    timed = [t for t in report.trials if t.note == ""]
    assert {t.runtime for t in timed} >= {"eager"}
    if can_pack():
        assert "onednn-prepacked" in {t.runtime for t in timed}
    if openvino_available():
        assert "openvino" in {t.runtime for t in timed}
    for trial in timed:
        assert trial.accepted, trial
        assert trial.cosine is not None
        assert trial.cosine >= (0.9999 if trial.precision == "float32" else 0.99)
    for trial in report.trials:
        assert trial.accepted or trial.note  # a refusal always says why


def test_the_fastest_accepted_runtime_wins_per_purpose(tmp_path: Path) -> None:
    if not openvino_available():
        pytest.skip("OpenVINO is not installed")
    spec = spec_for(tmp_path, dtypes=(torch.float32,))
    # queries (batch 1): eager fastest; loads: OpenVINO at batch 4 fastest per image
    timer = ranked({("eager", 1): 9.0, ("openvino", 1): 5.0, ("openvino", 4): 12.0})
    report = measure(spec, AVX2_ONLY, timer)
    assert (report.query.runtime, report.query.micro_batch) == ("eager", 1)
    assert (report.batch.runtime, report.batch.micro_batch) == ("openvino", 4)
    assert "eager-fp32 9.00 img/s" in report.reason("query")
    assert report.reason("batch").startswith("fastest accepted at batch 4: openvino-fp32")


def test_bf16_is_only_timed_where_the_cpu_has_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ISA_ENVIRONMENT:  # WITH_BF16 stands for a CPU whose bf16 oneDNN may use
        monkeypatch.delenv(name, raising=False)
    spec = spec_for(tmp_path, "mobilenet_v2", runtimes=("eager", "openvino"))
    without = measure(spec, AVX2_ONLY, ranked({}))
    bf16 = [t for t in without.trials if t.precision == "bfloat16"]
    assert bf16 and all(not t.accepted and "no hardware bf16" in t.note for t in bf16)
    with_bf16 = measure(spec, WITH_BF16, ranked({}))
    eager_bf16 = [t for t in with_bf16.trials if t.name == "eager-bf16"]
    assert eager_bf16 and all(t.accepted for t in eager_bf16)
    # OpenVINO would run MobileNetV2's depthwise convolutions in bf16 too: never offered
    ov_bf16 = [t for t in with_bf16.trials if t.name == "openvino-bf16"]
    assert ov_bf16 and all(not t.accepted and "depthwise" in t.note for t in ov_bf16)


def test_a_named_runtime_restricts_the_choice(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, runtimes=("eager",), dtypes=(torch.float32,))
    report = measure(spec, AVX2_ONLY, ranked({("eager", 4): 3.0}))
    assert {t.runtime for t in report.trials} == {"eager"}
    assert (report.batch.name, report.batch.micro_batch) == ("eager-fp32", 4)


def test_a_runtime_that_breaks_is_refused_and_eager_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no such op")

    monkeypatch.setattr(PackedConv2d, "__init__", broken)
    spec = spec_for(tmp_path, runtimes=("eager", "onednn-prepacked"), dtypes=(torch.float32,))
    report = measure(spec, AVX2_ONLY, ranked({("onednn-prepacked", 1): 100.0}))
    packed = [t for t in report.trials if t.runtime == "onednn-prepacked"]
    assert packed and all(not t.accepted for t in packed)
    assert all(("does not run here" in t.note) or ("no prepacked" in t.note) for t in packed)
    assert report.query.runtime == report.batch.runtime == "eager"


def test_the_choice_is_cached_by_cpu_and_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ISA_ENVIRONMENT:  # the suite may itself run under ONEDNN_MAX_CPU_ISA=AVX2
        monkeypatch.delenv(name, raising=False)
    spec = spec_for(tmp_path, runtimes=("eager",), dtypes=(torch.float32,))
    first = choose(spec, AVX2_ONLY, ranked({("eager", 4): 2.0}))
    assert not first.cached

    def must_not_measure(fn: TrunkFn, x: torch.Tensor) -> float:
        raise AssertionError("measured again")

    again = choose(spec, AVX2_ONLY, must_not_measure)
    assert again.cached and again.batch == first.batch and again.trials == first.trials
    # another CPU, other settings or an ISA restriction is measured afresh
    assert not choose(spec, WITH_BF16, ranked({})).cached
    assert not choose(spec_for(tmp_path, runtimes=("eager",), pooling="mac"), AVX2_ONLY).cached
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert not choose(spec, AVX2_ONLY, ranked({})).cached
    files = sorted((tmp_path / "cache").glob("cpu-runtime-*.json"))
    assert len(files) == 4
    assert RuntimeReport.from_json(json.loads(files[0].read_text())).cached


def test_cpu_description_names_model_and_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ISA_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    text = "processor\t: 0\nmodel name\t: AMD EPYC 7B13 64-Core Processor\nflags\t: fpu avx2 fma\n"
    info = parse_cpuinfo(text, logical_cpus=2)
    assert info.describe() == "AMD EPYC 7B13 64-Core Processor (2 CPUs; avx2 fma)"
    assert not info.native_bf16
    with_bf16 = parse_cpuinfo(text.replace("avx2 fma", "avx2 fma avx512_bf16"), 2)
    assert with_bf16.native_bf16
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert info.describe().endswith("avx2 fma, ONEDNN_MAX_CPU_ISA=AVX2)")
    assert not with_bf16.native_bf16  # oneDNN may not use AVX512-BF16 below that limit


def test_an_unwritable_cache_dir_measures_without_caching(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    spec = spec_for(tmp_path, runtimes=("eager",), dtypes=(torch.float32,))
    spec = TrunkSpec(**{**spec.__dict__, "cache_dir": blocker / "cache"})
    report = choose(spec, AVX2_ONLY, ranked({("eager", 4): 2.0}))
    assert not report.cached and report.batch.micro_batch == 4


def test_a_cached_reason_does_not_list_the_winner_as_its_rival(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, runtimes=("eager", "onednn-prepacked"), dtypes=(torch.float32,))
    timer = ranked({("eager", 1): 9.0, ("onednn-prepacked", 1): 3.0})
    first = choose(spec, AVX2_ONLY, timer)
    again = choose(spec, AVX2_ONLY, timer)
    assert again.cached and again.reason("query") == first.reason("query")
    assert first.reason("query").count("eager-fp32") == 1


def test_cpu_priority_is_only_ever_lowered() -> None:
    """In a child process: the test process keeps its own priority."""
    script = (
        "import os, threading\n"
        "from app.ml.cpu import lower_cpu_priority\n"
        "print(lower_cpu_priority(5), os.nice(0))\n"
        "seen = []\n"
        "thread = threading.Thread(target=lambda: seen.append(os.nice(0)))\n"
        "thread.start(); thread.join()\n"
        "print(seen[0], lower_cpu_priority(2), lower_cpu_priority(0), os.nice(0))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    lowered = str(max(os.nice(0), 5))  # a child starts at its parent's priority
    # lowered once, seen by a thread started after, never raised again
    assert result.stdout.split() == [lowered] * 6
