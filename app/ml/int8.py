"""Static int8 trunks: OpenVINO models quantized by NNCF on a collection's own images.

Weights are quantized per output channel; how activation ranges are estimated is a
`Recipe`, chosen per collection by the accuracy gate (`app.ml.int8_gate`): min-max ranges
keep the outliers that max/GeM pooling reads (NNCF's default ranges clipped them on VGG16),
NNCF's defaults did better on MobileNetV2's real weights, and its depthwise convolutions
lose the most in int8, so a recipe keeps them (and the first and last convolutions) fp32.
Calibration is deterministic: the same images in the same order give the same model.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import sys
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from app.ml import trunks
from app.ml.trunks import OpenVinoTrunk

# Images per calibration forward pass (NNCF collects statistics batch by batch).
CALIBRATION_BATCH = 8


@dataclass(frozen=True)
class Recipe:
    name: str
    ranges: str  # "minmax" or "default" (NNCF's estimator for activations)
    fp32_depthwise: bool = False  # depthwise + first + last convolutions stay fp32
    overflow_fix: bool = False  # 7-bit weights everywhere (saturation on CPUs without VNNI)
    asymmetric: bool = False  # asymmetric activation ranges (NNCF's "mixed" preset)
    full_bias_correction: bool = False  # NNCF's slower, layer-by-layer bias correction
    description: str = ""


RECIPES: tuple[Recipe, ...] = (
    Recipe("minmax", "minmax", description="min-max activation ranges"),
    Recipe("default", "default", description="NNCF's default ranges"),
    Recipe(
        "default-fp32-depthwise",
        "default",
        fp32_depthwise=True,
        overflow_fix=True,
        description="NNCF's default ranges, overflow fix; depthwise, first and last "
        "convolutions fp32",
    ),
    Recipe(
        "asymmetric-fp32-depthwise",
        "default",
        fp32_depthwise=True,
        asymmetric=True,
        full_bias_correction=True,
        description="asymmetric activations, full bias correction; depthwise, first and "
        "last convolutions fp32",
    ),
)


def recipes_for(trunk: nn.Module) -> tuple[Recipe, ...]:
    """The recipes worth trying on `trunk`: the fp32-depthwise ones need depthwise layers."""
    grouped = trunks.has_grouped_convs(trunk)
    return tuple(r for r in RECIPES if grouped or not r.fp32_depthwise)


def recipe_named(name: str) -> Recipe:
    for recipe in RECIPES:
        if recipe.name == name:
            return recipe
    raise KeyError(f"unknown int8 recipe {name!r}")


def nncf_available() -> bool:
    """Whether OpenVINO and NNCF both import here (a broken install counts as absent)."""
    if not trunks.openvino_available():
        return False
    try:
        import nncf  # noqa: F401
    except Exception:  # a broken install raises anything from ImportError to OSError
        return False
    return True


def normalised(pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A (N, S, S, 3) uint8 batch as the trunk's normalised (N, 3, S, S) float32 input."""
    batch = torch.as_tensor(np.ascontiguousarray(pixels))
    mean, std = trunks.pixel_normalisation()
    x = (batch.permute(0, 3, 1, 2).float() - mean) / std
    return x.contiguous()


def _fp32_model(trunk: nn.Module, image_size: int) -> Any:
    import openvino as ov

    example = torch.zeros(1, 3, image_size, image_size)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.trace's deprecation
        return ov.convert_model(
            copy.deepcopy(trunk).float().eval(),
            example_input=example,
            input=[(-1, 3, image_size, image_size)],
        )


def _kept_fp32(model: Any) -> Any:
    """NNCF's ignored scope for depthwise convolutions and the first and last dense ones."""
    import nncf

    dense = [op.get_friendly_name() for op in model.get_ordered_ops()]
    types = {op.get_friendly_name(): op.get_type_name() for op in model.get_ordered_ops()}
    convs = [name for name in dense if types[name] == "Convolution"]
    ends = [convs[0], convs[-1]] if convs else []
    return nncf.IgnoredScope(names=ends, types=["GroupConvolution"], validate=False)


def quantize(trunk: nn.Module, calibration: torch.Tensor, recipe: Recipe, image_size: int) -> Any:
    """`trunk` as an int8 OpenVINO model calibrated on `calibration` (normalised input)."""
    import nncf
    from nncf.common.logging import nncf_logger
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        OverflowFix,
    )
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    if recipe.ranges not in ("minmax", "default"):
        raise ValueError(f"unknown activation ranges {recipe.ranges!r}")
    nncf_logger.setLevel(logging.WARNING)  # it logs every layer it leaves unquantized
    model = _fp32_model(trunk, image_size)
    batches = [
        calibration[i : i + CALIBRATION_BATCH].numpy()
        for i in range(0, len(calibration), CALIBRATION_BATCH)
    ]
    advanced = AdvancedQuantizationParameters(
        overflow_fix=OverflowFix.ENABLE if recipe.overflow_fix else OverflowFix.FIRST_LAYER,
    )
    if recipe.ranges == "minmax":
        advanced.activations_range_estimator_params = RangeEstimatorParametersSet.MINMAX
    # NNCF's progress bars write to stdout, which is `--json` output in the CLI
    with contextlib.redirect_stdout(sys.stderr):
        return nncf.quantize(
            model,
            nncf.Dataset(batches),
            preset=nncf.QuantizationPreset.MIXED if recipe.asymmetric else None,
            subset_size=len(batches),  # NNCF counts dataset items: our batches
            fast_bias_correction=not recipe.full_bias_correction,
            ignored_scope=_kept_fp32(model) if recipe.fp32_depthwise else None,
            advanced_parameters=advanced,
        )


def save(model: Any, path: Path) -> None:
    """Write the IR (`path` .xml beside its .bin) atomically: readers see all or nothing."""
    import openvino as ov

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}-{uuid.uuid4().hex[:8]}.xml")
    ov.save_model(model, partial, compress_to_fp16=False)
    partial.with_suffix(".bin").replace(path.with_suffix(".bin"))
    partial.replace(path)


def compile_model(model: Any, image_size: int, threads: int) -> OpenVinoTrunk:
    """An int8 model compiled for the CPU; what NNCF left unquantized computes in fp32."""
    import openvino as ov

    config = trunks.openvino_config("f32", threads)
    return OpenVinoTrunk(ov.Core(), model, config, image_size)


def load(path: Path, image_size: int, threads: int) -> OpenVinoTrunk:
    """The int8 trunk saved at `path` (an IR .xml), compiled for the CPU."""
    import openvino as ov

    return compile_model(ov.Core().read_model(path), image_size, threads)


def remove(path: Path) -> None:
    """Delete a saved IR (.xml and .bin); missing files are fine."""
    for part in (path, path.with_suffix(".bin")):
        part.unlink(missing_ok=True)
