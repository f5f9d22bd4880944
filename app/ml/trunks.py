"""Ways to run a CNN trunk on the CPU: converted convolutions (bf16, prepacked oneDNN
weights) and OpenVINO; plus the global pooling every runtime's feature map goes through.

Each builder returns a callable from a normalised (N, 3, S, S) float32 batch to the (N, C,
h, w) feature map; which one runs is chosen by measurement (`app.ml.runtime_choice`).
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import logging
import os
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from app.core.errors import ConfigurationError

log = logging.getLogger(__name__)

GEM_P = 3.0
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TrunkFn = Callable[[torch.Tensor], torch.Tensor]


def pixel_normalisation(device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet's mean and std on the 0-255 pixel scale, shaped (1, 3, 1, 1): what every
    runtime's input is normalised with, `(pixels - mean) / std`."""
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1) * 255
    return mean, std


class CastConv2d(nn.Module):
    """`conv` computed in `dtype`: its parameters cast once, its input cast on every call."""

    def __init__(self, conv: nn.Conv2d, dtype: torch.dtype) -> None:
        super().__init__()
        self.dtype = dtype
        self.conv = copy.deepcopy(conv).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv(x.to(self.dtype))
        return out


class PackedConv2d(nn.Module):
    """A dense `conv` run by oneDNN with its weight reordered once, at build time.

    Eager PyTorch reorders every convolution weight into oneDNN's blocked layout on every
    call (about as long as the convolution itself for a batch of one). oneDNN picks the
    layout for the input shape it is given as hint: each layer gets its real input shape
    (a fixed [16, C, 224, 224] hint ran VGG16 at batch 1 at half the speed of eager on an
    AVX2-only CPU). Built on the private ops torch.compile's CPU backend uses; callers check
    it and fall back if absent.
    """

    def __init__(self, conv: nn.Conv2d, dtype: torch.dtype, input_shape: list[int]) -> None:
        super().__init__()
        if not isinstance(conv.padding, tuple) or conv.padding_mode != "zeros":
            raise ValueError("only zero, explicit padding can be packed")
        self.dtype = dtype
        self.args = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)
        weight = conv.weight.detach().to(dtype)
        self.packed = torch.ops.mkldnn._reorder_convolution_weight(weight, *self.args, input_shape)
        self.bias = None if conv.bias is None else conv.bias.detach().to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = torch.ops.mkldnn._convolution_pointwise(
            x.to(self.dtype), self.packed, self.bias, *self.args, "none", [], None
        )
        return out


@torch.inference_mode()
def conv_input_shapes(trunk: nn.Module, batch: int, image_size: int) -> dict[str, list[int]]:
    """The input shape of each convolution of `trunk` (by qualified name) for a batch of
    `batch` images of `image_size` pixels a side."""
    shapes: dict[str, list[int]] = {}
    hooks = []
    for name, module in trunk.named_modules():
        if isinstance(module, nn.Conv2d):

            def record(_: nn.Module, args: tuple[torch.Tensor, ...], name: str = name) -> None:
                shapes[name] = list(args[0].shape)

            hooks.append(module.register_forward_pre_hook(record))
    try:
        trunk(torch.zeros(batch, 3, image_size, image_size))
    finally:
        for hook in hooks:
            hook.remove()
    return shapes


def _replace_convs(
    module: nn.Module, make: Callable[[str, nn.Conv2d], nn.Module | None], prefix: str = ""
) -> None:
    for name, child in module.named_children():
        qualified = f"{prefix}{name}"
        if isinstance(child, nn.Conv2d):
            replacement = make(qualified, child)
            if replacement is not None:
                setattr(module, name, replacement)
        else:
            _replace_convs(child, make, f"{qualified}.")


def lower_precision(
    trunk: nn.Module, dtype: torch.dtype, pack_for: tuple[int, int] | None = None
) -> nn.Module:
    """A copy of `trunk` whose dense convolutions compute in `dtype`; prepacked for batches of
    `pack_for` = (images, image size) when given.

    Grouped (depthwise) convolutions stay fp32: they are memory-bound, so bf16 gains nothing,
    and with few products per output their rounding error, amplified by the batch norm
    behind them, is what made plain bf16 autocast miss the 95 % top-10 overlap on MobileNetV2.
    Everything between convolutions (ReLU, batch norm, pooling, residual sums) runs in the
    dtype it receives; pooling converts to fp32.
    """
    out = copy.deepcopy(trunk)
    shapes = conv_input_shapes(trunk, *pack_for) if pack_for else {}

    def make(name: str, conv: nn.Conv2d) -> nn.Module | None:
        if conv.groups > 1:
            return CastConv2d(conv, torch.float32) if dtype != torch.float32 else None
        if pack_for:
            return PackedConv2d(conv, dtype, shapes[name])
        return CastConv2d(conv, dtype) if dtype != torch.float32 else None

    _replace_convs(out, make)
    return out.eval()


def can_pack() -> bool:
    return bool(
        torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]
        and hasattr(torch.ops.mkldnn, "_reorder_convolution_weight")
        and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
    )


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


def has_grouped_convs(trunk: nn.Module) -> bool:
    """Whether `trunk` has grouped (e.g. depthwise) convolutions."""
    return any(isinstance(m, nn.Conv2d) and m.groups > 1 for m in trunk.modules())


@functools.cache
def openvino_available() -> bool:
    """Whether OpenVINO imports here (an install that is present but broken counts as absent)."""
    if importlib.util.find_spec("openvino") is None:
        return False
    try:
        import openvino  # noqa: F401
    except Exception as exc:  # a broken install raises anything from ImportError to OSError
        log.warning("OpenVINO is installed but does not import: %s", exc)
        return False
    return True


def openvino_version() -> str | None:
    if not openvino_available():
        return None
    import openvino

    return str(openvino.get_version())


class OpenVinoTrunk:
    """A trunk compiled by OpenVINO for the CPU, called like the torch module it came from.

    Compiled for one image size (static shapes run fastest); an input of another size gets a
    reshaped copy compiled on first use, as the eval's grid of input sizes needs.
    Not thread-safe (one infer request per size): the Encoder calls it under its lock.
    """

    def __init__(self, core: Any, model: Any, config: dict[str, Any], image_size: int) -> None:
        self._core = core
        self._model = model
        self._config = config
        self._requests: dict[tuple[int, int], Any] = {}
        self._request_for((image_size, image_size))

    def _request_for(self, size: tuple[int, int]) -> Any:
        request = self._requests.get(size)
        if request is None:
            model = self._model.clone()
            model.reshape([-1, 3, *size])
            request = self._core.compile_model(model, "CPU", self._config).create_infer_request()
            self._requests[size] = request
        return request

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        request = self._request_for((int(x.shape[2]), int(x.shape[3])))
        result = request.infer({0: x.contiguous().numpy()})
        return torch.from_numpy(result[0].copy())


def openvino_trunk(
    trunk: nn.Module, model_file: Path, dtype: torch.dtype, image_size: int, threads: int
) -> OpenVinoTrunk:
    """`trunk` converted to OpenVINO (kept in `model_file`, an IR .xml beside its .bin, so
    later starts skip the conversion) and compiled for `dtype` on `threads` threads."""
    import openvino as ov

    core = ov.Core()
    if model_file.is_file():
        model = core.read_model(model_file)
    else:
        example = torch.zeros(1, 3, image_size, image_size)
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit.trace's deprecation
            model = ov.convert_model(
                copy.deepcopy(trunk).float().eval(),
                example_input=example,
                input=[(-1, 3, image_size, image_size)],
            )
        model_file.parent.mkdir(parents=True, exist_ok=True)
        # a name of its own: another process or thread may convert the same model meanwhile
        partial = model_file.with_suffix(f".{os.getpid()}-{uuid.uuid4().hex[:8]}.xml")
        ov.save_model(model, partial, compress_to_fp16=False)  # keep the fp32 weights exact
        partial.with_suffix(".bin").replace(model_file.with_suffix(".bin"))
        partial.replace(model_file)
    hint = {torch.float32: "f32", torch.bfloat16: "bf16"}.get(dtype)
    if hint is None:
        raise ConfigurationError(f"OpenVINO runs fp32 or bf16 here, not {dtype}")
    return OpenVinoTrunk(core, model, openvino_config(hint, threads), image_size)


def openvino_config(precision_hint: str, threads: int) -> dict[str, Any]:
    """How every OpenVINO trunk is compiled: one stream, `threads` threads, unpinned."""
    return {
        "INFERENCE_PRECISION_HINT": precision_hint,
        "INFERENCE_NUM_THREADS": threads,
        "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
        # other processes (API beside worker) share the cores: do not pin threads to them
        "ENABLE_CPU_PINNING": False,
    }
