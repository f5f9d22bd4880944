"""The `picsearch eval` command: its flags, and the report printed as tables or JSON."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from app.evaluation.options import EvalOptions
from app.evaluation.recipes import POOLINGS, RESIZE_MODES
from app.evaluation.regions import REGION_DESIGNS
from app.evaluation.report import render_tables
from app.evaluation.run import run_evaluation
from app.measure.options import SettingsFlags


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {key: _rounded(v) for key, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def register(cli: typer.Typer) -> None:
    """Add `picsearch eval` to the `picsearch` command line."""

    @cli.command("eval")
    def eval_command(
        labelled: Annotated[
            Path | None,
            typer.Option(
                "--labelled",
                help="Folder of <class>/<images>: each image queries the others; same class "
                "= relevant.",
                exists=True,
                file_okay=False,
            ),
        ] = None,
        originals: Annotated[
            Path | None,
            typer.Option(
                "--originals",
                help="Folder of originals: indexed, and near-duplicate queries made from them.",
                exists=True,
                file_okay=False,
            ),
        ] = None,
        crops: Annotated[
            Path | None,
            typer.Option(
                "--crops",
                help="Folder of originals: indexed, and detail crops cut from them (64-160 px, "
                "rectangles and circles, also resized, recompressed, colour-shifted) search "
                "for their source.",
                exists=True,
                file_okay=False,
            ),
        ] = None,
        crop_queries: Annotated[
            int,
            typer.Option(
                "--crop-queries",
                min=0,
                help="--crops: crops cut, each queried in every variant (0: one per original).",
            ),
        ] = 60,
        regions: Annotated[
            str,
            typer.Option(
                "--regions",
                help="--crops: also prototype region designs, comma-separated: fmap, windows "
                "(many vectors per image, best region per image, NCC-verified top 5).",
            ),
        ] = "",
        model: Annotated[
            str | None, typer.Option("--model", help="vgg16 or mobilenet_v2 (PICSEARCH_MODEL).")
        ] = None,
        weights: Annotated[
            str | None,
            typer.Option("--weights", help="imagenet, random or a .pth (PICSEARCH_WEIGHTS)."),
        ] = None,
        k: Annotated[int, typer.Option("-k", min=1, max=100, help="Depth of mAP/recall.")] = 10,
        limit: Annotated[
            int | None,
            typer.Option(
                "--limit", min=2, help="Use a fixed random sample of N images per folder."
            ),
        ] = None,
        dup_queries: Annotated[
            int,
            typer.Option(
                "--dup-queries",
                min=0,
                help="Originals turned into near-duplicate queries (0: all).",
            ),
        ] = 100,
        compare: Annotated[
            bool,
            typer.Option(
                "--compare",
                help="Compare a grid of recipes (pooling x resize x size, + PCA-whitening).",
            ),
        ] = False,
        sizes: Annotated[
            str, typer.Option("--sizes", help="--compare: comma-separated input sizes.")
        ] = "224,320",
        resize: Annotated[
            str,
            typer.Option("--resize", help="--compare: comma-separated resize modes."),
        ] = ",".join(RESIZE_MODES),
        pooling: Annotated[
            str, typer.Option("--pooling", help="--compare: comma-separated poolings.")
        ] = ",".join(POOLINGS),
        whiten: Annotated[
            int,
            typer.Option(
                "--whiten",
                min=0,
                help="--compare: PCA-whitening dimension for the best recipes (0: off).",
            ),
        ] = 128,
        cache: Annotated[
            Path | None,
            typer.Option(
                "--cache",
                help="Keep generated queries (and with --compare, vectors) in this folder and "
                "reuse them on the next run.",
                file_okay=False,
            ),
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """Measure retrieval quality: mAP@k, precision@1/@10, recall@k on a labelled folder;
        near-duplicate hit@1/@10 per transform on a folder of originals; crop top-1/top-10
        per kind on a folder of originals (--crops)."""
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        from app.core.config import get_settings
        from app.ml.encoder import BACKBONES

        err = Console(stderr=True)
        if model is not None and model not in BACKBONES:
            raise typer.BadParameter(f"--model must be one of {', '.join(BACKBONES)}")
        flags = SettingsFlags(model=model, weights=weights)
        settings = get_settings().model_copy(update=flags.overrides())

        def csv(value: str, allowed: Sequence[str] | None, name: str) -> tuple[str, ...]:
            items = tuple(v.strip() for v in value.split(",") if v.strip())
            bad = [v for v in items if allowed is not None and v not in allowed]
            if bad or not items:
                raise typer.BadParameter(f"{name}: choose from {', '.join(allowed or [])}")
            return items

        try:
            size_list = tuple(int(s) for s in csv(sizes, None, "--sizes"))
        except ValueError:
            raise typer.BadParameter("--sizes: integers, e.g. 224,320") from None
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:.0f}/{task.total:.0f}"),
            TimeRemainingColumn(),
            console=err,
            transient=True,
        ) as bar:

            def progress(what: str, total: int) -> Callable[[int], None]:
                task = bar.add_task(f"embedding {what}", total=total)
                return lambda n: bar.advance(task, n)

            options = EvalOptions(
                labelled=labelled,
                originals=originals,
                k=k,
                limit=limit,
                dup_queries=dup_queries,
                compare=compare,
                sizes=size_list,
                resize_modes=csv(resize, list(RESIZE_MODES), "--resize"),
                poolings=csv(pooling, POOLINGS, "--pooling"),
                whiten=whiten,
                cache=cache,
                crops=crops,
                crop_queries=crop_queries,
                regions=csv(regions, list(REGION_DESIGNS), "--regions") if regions else (),
                progress=progress,
            )
            report = _rounded(run_evaluation(settings, options))
        if as_json:
            typer.echo(json.dumps(report, indent=2, ensure_ascii=False))
            return
        console = Console()
        if not console.is_terminal:  # a file or pipe: wide enough for the recipe table
            console = Console(width=160)
        for item in render_tables(report, compare):
            console.print(item)
