"""The CPU runtime of a trunk, chosen by measurement on the machine where it runs.

A fast path picked by a CPU flag can be slower than the plain one on another CPU (prepacked
oneDNN weights ran VGG16 at half of eager's speed on an AVX2-only AMD EPYC), so every
runtime the CPU supports is timed on a few synthetic images at the batch sizes that make
sense, checked against eager fp32, and the fastest one that passes is kept. The result is
cached in a JSON file keyed by everything that could change it (CPU model and flags, ISA
restrictions, library versions, threads, model, weights, recipe), so later starts read it
in milliseconds; a file lock keeps the API and the worker from measuring at the same time.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from app.core.errors import ConfigurationError
from app.ml import trunks
from app.ml.cpu import CpuInfo, cpu_info
from app.ml.trunks import TrunkFn

log = logging.getLogger(__name__)

# Bump when what is measured or how changes: old cache files are then ignored.
CHOICE_VERSION = 1
RuntimeName = Literal["eager", "onednn-prepacked", "openvino"]
RUNTIMES: tuple[RuntimeName, ...] = ("eager", "onednn-prepacked", "openvino")
Purpose = Literal["query", "batch"]
# Cosine to eager fp32 on the probe images below which a runtime is refused: fp32 runtimes
# must agree to rounding; bf16 was accepted on retrieval results with real weights (see
# docs/quality.md) and only has to stay within that error here.
MIN_COSINE = {torch.float32: 0.9999, torch.bfloat16: 0.999}
PROBE_IMAGES = 2
ROUNDS = 3  # timed calls per candidate, one per round


@dataclass(frozen=True)
class Candidate:
    runtime: RuntimeName
    dtype: torch.dtype
    micro_batch: int

    @property
    def precision(self) -> str:
        return str(self.dtype).removeprefix("torch.")

    @property
    def name(self) -> str:
        return f"{self.runtime}-{_short(self.dtype)}"


@dataclass(frozen=True)
class Trial:
    """One candidate as measured: its speed, its agreement with eager fp32, the verdict."""

    runtime: RuntimeName
    precision: str
    micro_batch: int
    images_per_s: float | None
    cosine: float | None
    accepted: bool
    note: str = ""

    @property
    def name(self) -> str:
        return f"{self.runtime}-{_short(_dtype(self.precision))}"

    @property
    def dtype(self) -> torch.dtype:
        return _dtype(self.precision)


@dataclass(frozen=True)
class RuntimeReport:
    """What was measured and chosen; `query` runs single images, `batch` runs loads."""

    cpu: str
    query: Trial
    batch: Trial
    trials: tuple[Trial, ...]
    measured_s: float
    cached: bool = False
    key: dict[str, object] = field(default_factory=dict)

    def chosen(self, purpose: Purpose) -> Trial:
        return self.query if purpose == "query" else self.batch

    def reason(self, purpose: Purpose) -> str:
        pick = self.chosen(purpose)
        rivals = [t for t in self.trials if t.micro_batch == pick.micro_batch and t != pick]
        beaten = ", ".join(
            f"{t.name} {t.images_per_s:.2f}"
            if t.accepted and t.images_per_s
            else f"{t.name} refused ({t.note})"
            for t in rivals
        )
        speed = f"{pick.images_per_s:.2f} img/s" if pick.images_per_s else "unmeasured"
        return f"fastest accepted at batch {pick.micro_batch}: {pick.name} {speed}" + (
            f" (vs {beaten})" if beaten else ""
        )

    def to_json(self) -> dict[str, object]:
        return {
            "cpu": self.cpu,
            "query": asdict(self.query),
            "batch": asdict(self.batch),
            "trials": [asdict(t) for t in self.trials],
            "measured_s": self.measured_s,
            "key": self.key,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RuntimeReport:
        return cls(
            cpu=str(data["cpu"]),
            query=Trial(**data["query"]),
            batch=Trial(**data["batch"]),
            trials=tuple(Trial(**t) for t in data["trials"]),
            measured_s=float(data["measured_s"]),
            cached=True,
            key=dict(data["key"]),
        )


def _short(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def _dtype(precision: str) -> torch.dtype:
    value = getattr(torch, precision)
    assert isinstance(value, torch.dtype)
    return value


@dataclass(frozen=True)
class TrunkSpec:
    """What a runtime is built from and what identifies the measurement."""

    trunk: nn.Module  # fp32, eval mode, on the CPU
    model: str
    weights_id: str
    image_size: int
    pooling: str
    dtypes: tuple[torch.dtype, ...]  # precisions allowed by the settings
    micro_batches: tuple[int, ...]  # 1 (queries) and the load batch
    cache_dir: Path
    runtimes: tuple[RuntimeName, ...] = RUNTIMES  # one, when PICSEARCH_CPU_RUNTIME names it

    @property
    def openvino_file(self) -> Path:
        safe_weights = self.weights_id.replace(":", "-")
        version = (trunks.openvino_version() or "none").split("-")[0]
        name = f"{self.model}-{safe_weights}-{self.image_size}-ov{version}.xml"
        return self.cache_dir / "openvino" / name


def build_runtime(spec: TrunkSpec, candidate: Candidate) -> TrunkFn:
    """The trunk as `candidate` runs it; raises (any exception) when it cannot run here."""
    if candidate.runtime == "eager":
        return trunks.lower_precision(spec.trunk, candidate.dtype)
    if candidate.runtime == "onednn-prepacked":
        if not trunks.can_pack():
            raise RuntimeError("this torch build has no prepacked oneDNN convolutions")
        pack_for = (candidate.micro_batch, spec.image_size)
        return trunks.lower_precision(spec.trunk, candidate.dtype, pack_for)
    if not trunks.openvino_available():
        raise RuntimeError("OpenVINO is not installed")
    threads = torch.get_num_threads()
    return trunks.openvino_trunk(
        spec.trunk, spec.openvino_file, candidate.dtype, spec.image_size, threads
    )


def candidates(spec: TrunkSpec, cpu: CpuInfo) -> tuple[list[Candidate], list[Trial]]:
    """Every runtime worth timing on this CPU, and those skipped with the reason."""
    wanted: list[Candidate] = []
    skipped: list[Trial] = []
    grouped = trunks.has_grouped_convs(spec.trunk)
    for dtype in spec.dtypes:
        for runtime in spec.runtimes:
            note = ""
            if dtype == torch.bfloat16 and not cpu.native_bf16 and torch.float32 in spec.dtypes:
                note = "no hardware bf16 that oneDNN may use here (emulated: slower than fp32)"
            elif runtime == "onednn-prepacked" and not trunks.can_pack():
                note = "this torch build has no prepacked oneDNN convolutions"
            elif runtime == "openvino" and not trunks.openvino_available():
                note = "OpenVINO is not installed"
            elif runtime == "openvino" and dtype == torch.bfloat16 and grouped:
                # OpenVINO runs depthwise convolutions in bf16 too, which missed the 95 %
                # top-10 gate on MobileNetV2 with real weights; ours keep them in fp32.
                note = "depthwise convolutions in bf16 lose retrieval accuracy"
            elif dtype == torch.float16:
                note = "" if runtime == "eager" else "fp16 runs only eagerly on a CPU"
            for micro in spec.micro_batches:
                if note:
                    skipped.append(Trial(runtime, str(dtype)[6:], micro, None, None, False, note))
                else:
                    wanted.append(Candidate(runtime, dtype, micro))
    return wanted, skipped


def probe_batch(count: int, image_size: int) -> torch.Tensor:
    """Deterministic smooth images with texture, normalised like the encoder's input."""
    generator = torch.Generator().manual_seed(7)
    coarse = torch.rand(count, 3, 7, 7, generator=generator)
    smooth = torch.nn.functional.interpolate(coarse, size=image_size, mode="bilinear")
    noise = torch.rand(count, 3, image_size, image_size, generator=generator) * 0.2
    x = (smooth * 0.8 + noise) * 255.0
    mean, std = trunks.pixel_normalisation()
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


@torch.inference_mode()
def time_call(fn: TrunkFn, x: torch.Tensor) -> float:
    """Images per second of one call of `fn` on `x`."""
    begin = time.perf_counter()
    fn(x)
    return len(x) / (time.perf_counter() - begin)


Measure = Callable[[TrunkFn, torch.Tensor], float]


@dataclass
class _Contender:
    candidate: Candidate
    fn: TrunkFn
    x: torch.Tensor
    cosine: float
    best: float = 0.0


@torch.inference_mode()
def measure(spec: TrunkSpec, cpu: CpuInfo, timer: Measure = time_call) -> RuntimeReport:
    """Check every candidate against eager fp32, time the ones that agree in interleaved
    rounds (each keeps its best, so a burst of load elsewhere hurts no one runtime alone),
    and choose the fastest per purpose."""
    started = time.perf_counter()
    wanted, trials = candidates(spec, cpu)
    probe = probe_batch(PROBE_IMAGES, spec.image_size)
    reference = trunks.pool_features(spec.trunk(probe), spec.pooling)
    contenders: list[_Contender] = []
    built: dict[tuple[RuntimeName, torch.dtype], TrunkFn] = {}
    for candidate in wanted:
        checked = _check(spec, candidate, probe, reference, built)
        if isinstance(checked, Trial):
            trials.append(checked)
        else:
            contenders.append(checked)
    for _ in range(ROUNDS):
        for entry in contenders:
            entry.best = max(entry.best, timer(entry.fn, entry.x))
    for entry in contenders:
        candidate = entry.candidate
        log.info(
            "CPU runtime %s at batch %d: %.2f img/s, cosine %.6f",
            candidate.name,
            candidate.micro_batch,
            entry.best,
            entry.cosine,
        )
        trials.append(
            Trial(
                candidate.runtime,
                candidate.precision,
                candidate.micro_batch,
                round(entry.best, 3),
                round(entry.cosine, 6),
                True,
            )
        )
    return RuntimeReport(
        cpu=cpu.describe(),
        query=_fastest([t for t in trials if t.micro_batch == 1]),
        batch=_fastest(trials),
        trials=tuple(trials),
        measured_s=round(time.perf_counter() - started, 2),
    )


def _check(
    spec: TrunkSpec,
    candidate: Candidate,
    probe: torch.Tensor,
    reference: torch.Tensor,
    built: dict[tuple[RuntimeName, torch.dtype], TrunkFn],
) -> _Contender | Trial:
    """`candidate` built, checked against eager fp32 and warmed up; or why it was refused.
    Runtimes that run any batch size are built once and shared through `built`; prepacked
    weights are laid out for one batch size, so those are built per candidate."""

    def refused(note: str, cosine: float | None = None) -> Trial:
        log.info(
            "CPU runtime %s at batch %d refused: %s", candidate.name, candidate.micro_batch, note
        )
        args = (candidate.runtime, candidate.precision, candidate.micro_batch)
        return Trial(*args, None, cosine, False, note)

    shared = candidate.runtime != "onednn-prepacked"
    key = (candidate.runtime, candidate.dtype)
    try:
        fn = built.get(key) if shared else None
        if fn is None:
            fn = build_runtime(spec, candidate)
            if shared:
                built[key] = fn
        got = trunks.pool_features(fn(probe), spec.pooling)
        x = probe_batch(candidate.micro_batch, spec.image_size)
        fn(x)  # the first call at a shape allocates and picks kernels: not timed
    except Exception as exc:  # a runtime that fails here, however it fails, is not used
        return refused(f"does not run here: {type(exc).__name__}: {exc}".splitlines()[0][:200])
    cosine = float(torch.nn.functional.cosine_similarity(reference, got).min())
    is_reference = candidate.runtime == "eager" and candidate.dtype == torch.float32
    if not is_reference and not cosine >= MIN_COSINE.get(candidate.dtype, 0.99):
        return refused(f"vectors disagree with eager fp32 (cosine {cosine:.5f})", cosine)
    return _Contender(candidate, fn, x, cosine)


def _fastest(trials: Sequence[Trial]) -> Trial:
    accepted = [t for t in trials if t.accepted and t.images_per_s]
    if not accepted:
        notes = "; ".join(sorted({f"{t.name}: {t.note}" for t in trials}))
        raise ConfigurationError(f"no CPU runtime can run this model here ({notes})")
    return max(accepted, key=lambda t: t.images_per_s or 0.0)


def cache_key(spec: TrunkSpec, cpu: CpuInfo) -> dict[str, object]:
    return {
        "version": CHOICE_VERSION,
        "cpu": cpu.model,
        "flags": hashlib.sha256(" ".join(sorted(cpu.flags)).encode()).hexdigest()[:16],
        "isa_restrictions": cpu.isa_restrictions,
        "torch": torch.__version__,
        "openvino": trunks.openvino_version(),
        "threads": torch.get_num_threads(),
        "model": spec.model,
        "weights": spec.weights_id,
        "image_size": spec.image_size,
        "pooling": spec.pooling,
        "dtypes": [str(d) for d in spec.dtypes],
        "micro_batches": list(spec.micro_batches),
        "runtimes": list(spec.runtimes),
    }


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def choose(
    spec: TrunkSpec, cpu: CpuInfo | None = None, timer: Measure = time_call
) -> RuntimeReport:
    """The cached choice for this spec and CPU, or a new measurement (then cached; measured
    every start, with a warning, where the cache dir cannot be written)."""
    cpu = cpu or cpu_info()
    key = cache_key(spec, cpu)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    path = spec.cache_dir / f"cpu-runtime-{spec.model}-{digest}.json"
    try:
        # One measurement at a time per cache dir: two at once would skew each other's timings.
        with _locked(spec.cache_dir / "cpu-runtime.lock"):
            cached = _read_cached(path, key)
            if cached is not None:
                return cached
            report = _measure_keyed(spec, cpu, timer, key)
            partial = path.with_suffix(f".{os.getpid()}.partial")
            partial.write_text(json.dumps(report.to_json(), indent=1))
            partial.replace(path)
            return report
    except OSError as exc:
        log.warning("CPU runtime cache %s unusable (%s): measuring without it", path, exc)
        return _measure_keyed(spec, cpu, timer, key)


def _read_cached(path: Path, key: dict[str, object]) -> RuntimeReport | None:
    if not path.is_file():
        return None
    try:
        report = RuntimeReport.from_json(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring unreadable CPU runtime cache %s: %s", path, exc)
        return None
    return report if report.key == key else None


def _measure_keyed(
    spec: TrunkSpec, cpu: CpuInfo, timer: Measure, key: dict[str, object]
) -> RuntimeReport:
    log.info("measuring CPU runtimes for %s on %s (once per machine)", spec.model, cpu.describe())
    report = measure(spec, cpu, timer)
    return RuntimeReport(**{**report.__dict__, "key": key})
