"""CNN feature extractor: torchvision backbone conv features, global pooling, L2 norm.

Built once per process (worker child or API lifespan), never at import time.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from torch import nn

from app.core.config import Settings
from app.core.errors import ConfigurationError, WeightsNotFound
from app.ml.cpu import cpu_has_native_bf16
from app.ml.runtime_choice import (
    RUNTIMES,
    Candidate,
    Purpose,
    RuntimeReport,
    TrunkSpec,
    build_runtime,
)
from app.ml.runtime_choice import choose as choose_runtime
from app.ml.trunks import (
    TrunkFn,
    lower_precision,
    pixel_normalisation,
    pool_features,
)

log = logging.getLogger(__name__)

RANDOM_SEED = 20240601


@dataclass(frozen=True)
class BackboneSpec:
    dim: int
    weights_enum: Any  # a torchvision WeightsEnum member
    # Images per forward pass worth timing on a CPU for loads (queries run one): VGG16's
    # activations for a batch of 16 overflow the caches; MobileNetV2's small maps prefer
    # batches (~1.7x faster at 16 than at 1). Which is faster is measured where it runs.
    cpu_micro_batches: tuple[int, ...] = (1, 8)

    @property
    def file_name(self) -> str:
        return str(self.weights_enum.url).rsplit("/", 1)[-1]

    @property
    def sha256_prefix(self) -> str:
        # torchvision names files `<arch>-<first 8 hex of sha256>.pth`
        return self.file_name.rsplit("-", 1)[-1].split(".", 1)[0]


BACKBONES: dict[str, BackboneSpec] = {
    "vgg16": BackboneSpec(512, torchvision.models.VGG16_Weights.IMAGENET1K_V1),
    "mobilenet_v2": BackboneSpec(
        1280,
        torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1,
        cpu_micro_batches=(1, 16),
    ),
}


@dataclass(frozen=True)
class EncoderInfo:
    """What produced a vector; recorded on the collection so vectors never mix."""

    model: str
    weights_id: str
    dim: int
    recipe: str
    device: str
    precision: str
    runtime: str = "eager"  # how the trunk runs: e.g. onednn-prepacked, cuda-autocast

    @property
    def random_weights(self) -> bool:
        return self.weights_id.startswith("random")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def official_weights_path(model: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / BACKBONES[model].file_name


def resolve_weights(settings: Settings) -> tuple[dict[str, torch.Tensor] | None, str]:
    """Return (state dict or None for random init, weights id). Raises WeightsNotFound."""
    spec = BACKBONES[settings.model]
    choice = settings.weights.strip()
    if choice == "random":
        return None, f"random-seed{RANDOM_SEED}"
    if choice == "imagenet":
        path = official_weights_path(settings.model)
        if not path.is_file():
            if not settings.allow_weight_download:
                raise WeightsNotFound(
                    f"ImageNet weights for {settings.model} are missing: place "
                    f"{spec.file_name} (from {spec.weights_enum.url}) at {path} "
                    f"(TORCH_HOME={os.environ.get('TORCH_HOME', '~/.cache/torch')}), or set "
                    "PICSEARCH_WEIGHTS=/path/to/file.pth, or "
                    "PICSEARCH_ALLOW_WEIGHT_DOWNLOAD=true where the internet is reachable. "
                    "PICSEARCH_WEIGHTS=random runs with meaningless random weights (tests only)."
                )
            spec.weights_enum.get_state_dict(progress=False, check_hash=True)
    else:
        path = Path(choice).expanduser()
        if not path.is_file():
            raise WeightsNotFound(f"PICSEARCH_WEIGHTS file not found: {path}")
    digest = sha256_file(path)
    if path.name == spec.file_name and not digest.startswith(spec.sha256_prefix):
        raise ConfigurationError(
            f"{path} is named like torchvision's {settings.model} weights but its sha256 "
            f"{digest[:12]}… does not start with {spec.sha256_prefix}: the file is corrupt; "
            "delete it and place a fresh copy."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad pickle/zip
        raise ConfigurationError(f"cannot read weights file {path}: {exc}") from exc
    if not isinstance(state, dict):
        raise ConfigurationError(f"{path} does not hold a state dict")
    return state, f"sha256:{digest[:16]}"


def build_backbone(model: str, state: dict[str, torch.Tensor] | None) -> nn.Module:
    """The convolutional trunk of `model` (no classifier), in eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)  # random weights are identical in every process
        if model == "vgg16":
            net: nn.Module = torchvision.models.vgg16(weights=None)
        elif model == "mobilenet_v2":
            net = torchvision.models.mobilenet_v2(weights=None)
        else:
            raise ConfigurationError(f"unknown model {model!r}")
    if state is not None:
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            raise ConfigurationError(f"weights do not fit {model}: {exc}") from exc
    trunk = net.features
    assert isinstance(trunk, nn.Module)
    return trunk.eval()


def pick_device(choice: str) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigurationError("PICSEARCH_DEVICE=cuda but no CUDA device is available")
        # indexed, so that it compares equal to the device of the tensors made there
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def pick_dtype(
    precision: str, device: torch.device, native_bf16: bool | None = None
) -> torch.dtype:
    """The compute dtype for `precision`; for "auto", the one to try first.

    auto: fp16 on CUDA; on a CPU bf16 where it has hardware bf16, else fp32 (without
    torch.compile the CPU runtime then measures both and keeps the faster one). bf16 was
    accepted because, with real ImageNet weights (MobileNetV2) on real photos, its top-10
    results overlap fp32's by 97 % (threshold 95 %), cosine 0.9997 on average, with dense
    convolutions only in bf16 (see `lower_precision`).
    """
    if precision == "auto":
        if device.type == "cuda":
            return torch.float16
        if native_bf16 is None:
            native_bf16 = cpu_has_native_bf16()
        return torch.bfloat16 if native_bf16 else torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def recipe_id(settings: Settings) -> str:
    """Everything besides model and weights that changes the vectors."""
    return f"squash{settings.image_size}-bilinear-jpegdraft2x/{settings.pooling}/l2"


def _usable(fmap: torch.Tensor) -> bool:
    """Every image's feature map finite and not all zeros."""
    finite = bool(torch.isfinite(fmap).all())
    return finite and bool((fmap.flatten(1).abs().amax(dim=1) > 0).all())


class Encoder:
    """Turns batches of (N, S, S, 3) uint8 RGB arrays into (N, D) L2-normalised float32.

    CPU: the runtime (eager, prepacked oneDNN, OpenVINO), precision and images per forward
    pass measured fastest on this CPU for `purpose` (single-image queries or batched loads).
    CUDA: channels_last, fp16/bf16 autocast, cudnn.benchmark, pinned non-blocking uploads.
    `compile=True` runs the trunk through torch.compile (slow first call per batch shape).
    """

    def __init__(
        self, settings: Settings, *, compile: bool = False, purpose: Purpose = "batch"
    ) -> None:
        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
        state, weights_id = resolve_weights(settings)
        self.device = pick_device(settings.device)
        self.dtype = pick_dtype(settings.precision, self.device)
        self.pooling = settings.pooling
        self.image_size = settings.image_size
        # The fp32 trunk as loaded; what runs (`_model`) may be a converted copy of it.
        self.trunk = build_backbone(settings.model, state).to(self.device)
        self.trunk = self.trunk.to(memory_format=torch.channels_last)
        self._autocast = False
        self.micro_batch = 1 << 30  # images per forward pass: whole batches on CUDA
        self.runtime_report: RuntimeReport | None = None  # CPU: what was measured and chosen
        # A compiled CUDA model sees one batch shape: shorter batches are padded with zeros,
        # so the tail of a chunk does not trigger another compilation.
        self.pad_to: int | None = None
        self._model: TrunkFn
        if self.device.type == "cuda":
            if compile:
                self.pad_to = settings.batch_size_for("cuda")
                self.micro_batch = self.pad_to
            torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick kernels
            self._model = self.trunk
            self._autocast = self.dtype != torch.float32
            runtime = "cuda-autocast" if self._autocast else "cuda"
        elif compile:  # inductor packs weights itself; give it plain modules
            self._model = lower_precision(self.trunk, self.dtype)
            runtime = "eager"
        else:
            spec = self._trunk_spec(settings, weights_id)
            self.runtime_report = choose_runtime(spec)
            chosen = self.runtime_report.chosen(purpose)
            self.dtype = chosen.dtype
            self.micro_batch = chosen.micro_batch
            runtime = chosen.runtime
            try:
                self._model = build_runtime(
                    spec, Candidate(chosen.runtime, self.dtype, chosen.micro_batch)
                )
            except Exception as exc:  # e.g. a cached choice whose library broke since
                log.warning("CPU runtime %s failed (%s); using eager fp32", chosen.name, exc)
                self.dtype, runtime = torch.float32, "eager"
                self._model = lower_precision(self.trunk, self.dtype)
            log.info("CPU runtime for %s: %s", purpose, self.runtime_report.reason(purpose))
        self._forward: TrunkFn = self._model
        if compile:
            self._forward = torch.compile(self._model, dynamic=False)
            runtime += "+compile"
        self._mean, self._std = pixel_normalisation(self.device)
        self._lock = threading.Lock()
        self._warned_precision = False
        self.info = EncoderInfo(
            model=settings.model,
            weights_id=weights_id,
            dim=BACKBONES[settings.model].dim,
            recipe=recipe_id(settings),
            device=str(self.device),
            precision=str(self.dtype).removeprefix("torch."),
            runtime=runtime,
        )
        if self.info.random_weights:
            log.warning("RANDOM WEIGHTS: vectors are not semantically meaningful (tests only)")
        log.info("encoder ready: %s", self.info)

    def with_runtime(self, fn: TrunkFn, runtime: str, precision: str, micro_batch: int) -> Encoder:
        """A copy of this encoder whose trunk runs as `fn` (e.g. a collection's int8 model);
        weights, pooling and everything recorded on a collection stay the same."""
        if self.device.type != "cpu":
            raise ConfigurationError("another trunk runtime is only for CPU encoders")
        variant = copy.copy(self)
        variant._model = variant._forward = fn
        variant.micro_batch = micro_batch
        variant._lock = threading.Lock()  # its own model: its own lock
        variant.info = dataclasses.replace(self.info, runtime=runtime, precision=precision)
        return variant

    def run_trunk(self, x: torch.Tensor) -> torch.Tensor:
        """The trunk as this encoder runs it, on normalised input `x`, under the encoder's
        lock (safe beside `embed` in another thread; e.g. to time it)."""
        with self._lock:
            return self._model(x)

    def _trunk_spec(self, settings: Settings, weights_id: str) -> TrunkSpec:
        """What the CPU runtime is chosen for, within the precision and runtime settings."""
        dtypes = (torch.float32, torch.bfloat16) if settings.precision == "auto" else (self.dtype,)
        batch = settings.batch_size_for("cpu")
        micro = {1, *(min(m, batch) for m in BACKBONES[settings.model].cpu_micro_batches)}
        runtimes = RUNTIMES if settings.cpu_runtime == "auto" else (settings.cpu_runtime,)
        return TrunkSpec(
            trunk=self.trunk,
            model=settings.model,
            weights_id=weights_id,
            image_size=settings.image_size,
            pooling=settings.pooling,
            dtypes=dtypes,
            micro_batches=tuple(sorted(micro)),
            cache_dir=settings.effective_runtime_cache_dir,
            runtimes=runtimes,
        )

    def _upload(self, pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
        if pixels.ndim != 4 or pixels.shape[3] != 3:
            raise ValueError(f"expected (N, H, W, 3) uint8, got {tuple(pixels.shape)}")
        if isinstance(pixels, torch.Tensor):
            batch = pixels
        else:  # decoded images are read-only views; torch wants to own writable memory
            batch = torch.from_numpy(pixels if pixels.flags.writeable else pixels.copy())
        if batch.dtype != torch.uint8:
            raise ValueError(f"expected uint8 pixels, got {batch.dtype}")
        if batch.device.type != self.device.type:
            if self.device.type == "cuda":  # uint8 over the bus (4x less than float), async
                batch = batch.pin_memory().to(self.device, non_blocking=True)
            else:
                batch = batch.to(self.device)
        return batch

    @torch.inference_mode()
    def feature_map(
        self, pixels: np.ndarray | torch.Tensor, micro_batch: int | None = None
    ) -> torch.Tensor:
        """The (N, C, h, w) float32 conv feature map of a (N, S, S, 3) uint8 batch, computed
        exactly as `embed` computes it (device, precision, runtime); thread-safe.
        `micro_batch` overrides the images per forward pass chosen for `purpose`."""
        batch = self._upload(pixels)
        step = micro_batch or self.micro_batch
        maps = []
        with self._lock:
            for start in range(0, len(batch), step):
                piece = batch[start : start + step]
                count = len(piece)
                if self.pad_to is not None and count < self.pad_to:
                    padding = piece.new_zeros((self.pad_to - count, *piece.shape[1:]))
                    piece = torch.cat([piece, padding])
                x = piece.permute(0, 3, 1, 2).float()
                x = ((x - self._mean) / self._std).contiguous(memory_format=torch.channels_last)
                with torch.autocast(self.device.type, dtype=self.dtype, enabled=self._autocast):
                    out = self._forward(x)[:count].float()
                if self._autocast and not _usable(out):
                    # fp16 overflowed or underflowed to all zeros (random MobileNetV2
                    # weights do): such batches are computed in fp32
                    if not self._warned_precision:
                        log.warning(
                            "%s features out of %s range; using fp32 for such batches",
                            self.info.model,
                            self.info.precision,
                        )
                        self._warned_precision = True
                    out = self._model(x)[:count].float()
                maps.append(out)
        return maps[0] if len(maps) == 1 else torch.cat(maps)

    @torch.inference_mode()
    def embed(
        self, pixels: np.ndarray | torch.Tensor, micro_batch: int | None = None
    ) -> np.ndarray:
        """Embed a (N, S, S, 3) uint8 batch (numpy, or a tensor on any device); thread-safe."""
        if len(pixels) == 0:
            self._upload(pixels)  # still checks the shape
            return np.zeros((0, self.info.dim), dtype=np.float32)
        pooled = pool_features(self.feature_map(pixels, micro_batch), self.pooling)
        vectors = torch.nn.functional.normalize(pooled, dim=1)
        return vectors.cpu().numpy().astype(np.float32, copy=False)
