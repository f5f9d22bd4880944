"""`picsearch int8-check --images DIR`: the int8 gate and timing on a folder of photos, as a
collection's first load would run them, without a running service.

The first `--calibration` images (sorted by path, as a load reads them) calibrate and gate
each recipe; every image of the folder then checks that the gate's verdict holds beyond the
images it saw (`folder_overlap`: top-10 overlap over the whole folder).
"""

from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from app.measure.options import SettingsFlags

DEFAULT_CALIBRATION = 64


def _decode(files: list[Path], size: int, max_pixels: int) -> Any:
    import numpy as np

    from app.ml.imageio import ImageDecodeError, decode_image

    pixels = []
    for path in files:
        try:
            pixels.append(decode_image(path.read_bytes(), size=size, max_pixels=max_pixels).pixels)
        except ImageDecodeError:
            continue
    return np.stack(pixels)


def run_check(
    images: Path, flags: SettingsFlags, calibration: int, recipes: list[str], every: bool
) -> dict[str, Any]:
    """The gate per recipe (each tried alone when `every`, else in order until one passes),
    each recipe's figures over the whole folder, and the first passing recipe's speed
    against fp32 at batch 1 and 8."""
    import torch

    from app.core.config import get_settings
    from app.evaluation.datasets import list_images
    from app.measure.options import settings_with
    from app.ml import int8, int8_gate
    from app.ml.cpu import cpu_info
    from app.ml.encoder import Encoder

    settings = settings_with(get_settings(), device="cpu", **flags.overrides())
    pixels = _decode(list_images(images), settings.image_size, settings.max_image_pixels)
    encoder = Encoder(settings, purpose="batch")
    x = int8.normalised(pixels)
    calib = x[:calibration]
    chosen = [int8.recipe_named(n) for n in recipes] if recipes else None
    chosen = chosen or list(int8.recipes_for(encoder.trunk))
    threads = torch.get_num_threads()
    results = []
    groups = [[r] for r in chosen] if every else [chosen]
    for group in groups:
        result = int8_gate.run_gate(encoder.trunk, calib, settings.pooling, settings.image_size,
                                    threads, group)  # fmt: skip
        results.append(result)
    fp32_all = int8_gate.vectors(encoder.trunk, x, settings.pooling)
    figures: list[dict[str, Any]] = []
    timing: dict[str, Any] = {}
    for result in results:
        for figure in result.figures:
            row: dict[str, Any] = asdict(figure)
            fn = result.compiled.get(figure.recipe)
            if fn is not None:
                got = int8_gate.vectors(fn, x, settings.pooling)
                row["folder_overlap"] = round(int8_gate.neighbour_overlap(fp32_all, got, got), 4)
                row["folder_mixed"] = round(int8_gate.neighbour_overlap(fp32_all, fp32_all, got), 4)
                if figure.passed and not timing:
                    timing = _timing(encoder, fn, x, figure.recipe)
            figures.append(row)
    return {
        "cpu": cpu_info().describe(),
        "model": settings.model,
        "weights": encoder.info.weights_id,
        "pooling": settings.pooling,
        "images": len(x),
        "calibration": len(calib),
        "runtime": f"{encoder.info.runtime} {encoder.info.precision}",
        "recipes": figures,
        "gate_seconds": [r.seconds for r in results],  # calibration + gate, per run_gate
        "images_per_s": timing,
    }


def _timing(encoder: Any, fn: Any, x: Any, recipe: str) -> dict[str, Any]:
    import torch

    from app.ml import int8_gate
    from app.ml.trunks import lower_precision

    contenders = {
        f"int8 {recipe}": fn,
        f"{encoder.info.runtime} {encoder.info.precision}": encoder.run_trunk,
        "eager float32": lower_precision(encoder.trunk, torch.float32),
    }
    fed = x.contiguous(memory_format=torch.channels_last)  # as the encoder feeds its runtime
    return {f"batch {batch}": int8_gate.race(contenders, fed[:batch]) for batch in (1, 8)}


def _print(report: dict[str, Any]) -> None:
    typer.echo(
        f"{report['model']} ({report['weights']}, {report['pooling']}) on {report['cpu']}: "
        f"{report['images']} images, the first {report['calibration']} calibrate; "
        f"its own runtime {report['runtime']}"
    )
    for row in report["recipes"]:
        verdict = "PASS" if row["passed"] else "fail"
        if row["overlap"] is None:
            typer.echo(f"  {row['recipe']:<24} {verdict}  {row['note']}")
            continue
        line = (
            f"  {row['recipe']:<24} {verdict}  top-10 {row['overlap']:.3f}  mixed "
            f"{row['mixed_overlap']:.3f}  cosine mean {row['mean_cosine']:.4f} "
            f"min {row['min_cosine']:.4f}"
        )
        if "folder_overlap" in row:
            line += (
                f"  all images: top-10 {row['folder_overlap']:.3f} mixed {row['folder_mixed']:.3f}"
            )
        typer.echo(line + (f"  ({row['note']})" if row["note"] else ""))
    seconds = " + ".join(f"{s:.0f}" for s in report["gate_seconds"])
    typer.echo(f"  quantizing and gating took {seconds} s")
    for batch, speeds in report["images_per_s"].items():
        typer.echo(f"  {batch}: " + ", ".join(f"{k} {v:.2f} img/s" for k, v in speeds.items()))


def register(cli: typer.Typer) -> None:
    """Add `picsearch int8-check` to the `picsearch` command line."""

    @cli.command("int8-check")
    def int8_check_command(
        images: Annotated[
            Path,
            typer.Option("--images", help="Folder of photos.", exists=True, file_okay=False),
        ],
        model: Annotated[str | None, typer.Option("--model", help="vgg16 or mobilenet_v2.")] = None,
        weights: Annotated[
            str | None, typer.Option("--weights", help="imagenet, random or a .pth file.")
        ] = None,
        calibration: Annotated[
            int, typer.Option("--calibration", min=8, help="Images that calibrate and gate.")
        ] = DEFAULT_CALIBRATION,
        recipes: Annotated[
            str, typer.Option("--recipes", help="Comma-separated recipes (default: all, in order).")
        ] = "",
        every: Annotated[
            bool, typer.Option("--every", help="Gate every recipe, not only up to the first pass.")
        ] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """Quantize the trunk to int8 with each recipe, gate it on the first images of a
        folder, check it on all of them, and time it against fp32 (batch 1 and 8)."""
        names = [n.strip() for n in recipes.split(",") if n.strip()]
        flags = SettingsFlags(model=model, weights=weights)
        # NNCF draws progress bars on stdout: keep it for the report
        with contextlib.redirect_stdout(sys.stderr):
            report = run_check(images, flags, calibration, names, every)
        if as_json:
            typer.echo(json.dumps(report, indent=1))
        else:
            _print(report)
