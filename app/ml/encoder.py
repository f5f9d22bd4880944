"""CNN feature extractor: torchvision backbone conv features, global pooling, L2 norm.

Built once per process (worker child or API lifespan), never at import time.
"""

from __future__ import annotations

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

log = logging.getLogger(__name__)

RANDOM_SEED = 20240601
GEM_P = 3.0
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneSpec:
    dim: int
    weights_enum: Any  # a torchvision WeightsEnum member

    @property
    def file_name(self) -> str:
        return str(self.weights_enum.url).rsplit("/", 1)[-1]

    @property
    def sha256_prefix(self) -> str:
        # torchvision names files `<arch>-<first 8 hex of sha256>.pth`
        return self.file_name.rsplit("-", 1)[-1].split(".", 1)[0]


BACKBONES: dict[str, BackboneSpec] = {
    "vgg16": BackboneSpec(512, torchvision.models.VGG16_Weights.IMAGENET1K_V1),
    "mobilenet_v2": BackboneSpec(1280, torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1),
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
        return torch.device("cuda")
    return torch.device("cpu")


def pick_dtype(precision: str, device: torch.device) -> torch.dtype:
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def pool_features(fmap: torch.Tensor, pooling: str) -> torch.Tensor:
    """Global pooling of an (N, C, H, W) map to (N, C) float32."""
    x = fmap.float()
    if pooling == "mac":
        return x.amax(dim=(2, 3))
    if pooling == "spoc":
        return x.mean(dim=(2, 3))
    if pooling == "gem":
        return x.clamp(min=1e-6).pow(GEM_P).mean(dim=(2, 3)).pow(1.0 / GEM_P)
    raise ConfigurationError(f"unknown pooling {pooling!r}")


def recipe_id(settings: Settings) -> str:
    """Everything besides model and weights that changes the vectors."""
    return f"squash{settings.image_size}-bilinear-jpegdraft2x/{settings.pooling}/l2"


class Encoder:
    """Turns batches of (N, S, S, 3) uint8 RGB arrays into (N, D) L2-normalised float32."""

    def __init__(self, settings: Settings) -> None:
        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
        state, weights_id = resolve_weights(settings)
        self.device = pick_device(settings.device)
        self.dtype = pick_dtype(settings.precision, self.device)
        self.pooling = settings.pooling
        self.image_size = settings.image_size
        self.trunk = build_backbone(settings.model, state).to(self.device)
        self.trunk = self.trunk.to(memory_format=torch.channels_last)
        shape = (1, 3, 1, 1)
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(shape) * 255
        self._std = torch.tensor(IMAGENET_STD, device=self.device).view(shape) * 255
        self._lock = threading.Lock()
        self.info = EncoderInfo(
            model=settings.model,
            weights_id=weights_id,
            dim=BACKBONES[settings.model].dim,
            recipe=recipe_id(settings),
            device=str(self.device),
            precision=str(self.dtype).removeprefix("torch."),
        )
        if self.info.random_weights:
            log.warning("RANDOM WEIGHTS: vectors are not semantically meaningful (tests only)")
        log.info("encoder ready: %s", self.info)

    @torch.inference_mode()
    def embed(self, pixels: np.ndarray) -> np.ndarray:
        """Embed a (N, S, S, 3) uint8 batch; thread-safe."""
        if pixels.ndim != 4 or pixels.shape[3] != 3:
            raise ValueError(f"expected (N, H, W, 3) uint8, got {pixels.shape}")
        if len(pixels) == 0:
            return np.zeros((0, self.info.dim), dtype=np.float32)
        batch = torch.from_numpy(pixels)
        if self.device.type == "cuda":
            batch = batch.pin_memory().to(self.device, non_blocking=True)
        with self._lock:
            x = batch.permute(0, 3, 1, 2).float()
            x = ((x - self._mean) / self._std).contiguous(memory_format=torch.channels_last)
            autocast = self.dtype != torch.float32
            with torch.autocast(self.device.type, dtype=self.dtype, enabled=autocast):
                fmap = self.trunk(x)
            pooled = pool_features(fmap, self.pooling)
            vectors = torch.nn.functional.normalize(pooled, dim=1)
            return vectors.cpu().numpy().astype(np.float32, copy=False)
