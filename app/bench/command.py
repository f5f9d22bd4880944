"""The `picsearch bench` command: its flags, and the report printed as tables or JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from app.bench.common import BenchError
from app.bench.index import bench_index
from app.bench.ingest import bench_ingest
from app.bench.options import BenchOptions
from app.bench.regions import bench_regions
from app.bench.report import render
from app.measure.options import SettingsFlags


def _parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter(
            f"--sizes must be comma-separated integers, got {text!r}"
        ) from None
    if not sizes or min(sizes) < 1:
        raise typer.BadParameter("--sizes needs at least one positive size")
    return sizes


def slower_than_naive(report: dict[str, Any]) -> str | None:
    """What `--check` fails on: an ingest report whose pipeline lost to the naive loop."""
    if report["mode"] != "ingest" or report["speedup"] >= 1.0:
        return None
    return (
        f"our pipeline ran at {report['speedup']:.2f}x the naive reference "
        f"({report['ours']['images_per_s']:.2f} vs {report['naive']['images_per_s']:.2f} img/s) "
        f"on {report['machine']['cpu']}"
    )


def register(cli: typer.Typer) -> None:
    """Add the `bench` command to `cli`."""

    @cli.command()
    def bench(
        images: Annotated[
            Path | None,
            typer.Option("--images", help="Folder of photos (required unless --index-only)."),
        ] = None,
        count: Annotated[
            int, typer.Option("-n", "--count", min=1, help="Images: sampled or repeated to N.")
        ] = 200,
        model: Annotated[
            str | None, typer.Option(help="vgg16 or mobilenet_v2 (default: PICSEARCH_MODEL).")
        ] = None,
        weights: Annotated[
            str, typer.Option(help="random (speed does not depend on it), imagenet or a path.")
        ] = "random",
        device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
        batch_size: Annotated[int | None, typer.Option(min=1, help="Inference batch.")] = None,
        precision: Annotated[
            str | None, typer.Option(help="auto, fp32, bf16 or fp16 (default: settings).")
        ] = None,
        repeat: Annotated[
            int, typer.Option(min=1, help="Run each measurement R times; report medians.")
        ] = 3,
        queries: Annotated[int, typer.Option(min=1, help="Searches per latency figure.")] = 50,
        index_only: Annotated[
            bool, typer.Option("--index-only", help="Measure the vector index alone.")
        ] = False,
        sizes: Annotated[
            str, typer.Option(help="Collection sizes for --index-only, comma-separated.")
        ] = "10000,100000",
        compile_model: Annotated[
            bool, typer.Option("--compile", help="Run the model through torch.compile.")
        ] = False,
        index_type: Annotated[
            str | None,
            typer.Option(help="auto, FLAT, IVF_FLAT or HNSW (default: PICSEARCH_INDEX_TYPE)."),
        ] = None,
        max_side: Annotated[
            int | None,
            typer.Option(
                min=16,
                help="Re-encode the photos as JPEGs of at most this many pixels a side first "
                "(500: PASCAL VOC-sized).",
            ),
        ] = None,
        naive_count: Annotated[
            int | None,
            typer.Option(
                min=1, help="Time the naive reference on the first N images only (default: all)."
            ),
        ] = None,
        processes: Annotated[
            int,
            typer.Option(
                min=1,
                help="Also time our pipeline in P processes writing to one collection, as "
                "P worker processes do (one Python process is bound by its GIL).",
            ),
        ] = 1,
        skip_lite: Annotated[
            bool,
            typer.Option(
                "--skip-lite",
                help="--index-only: measure only the server at PICSEARCH_MILVUS_URI, not "
                "Milvus Lite too (which needs hours at 1M vectors).",
            ),
        ] = False,
        regions: Annotated[
            bool,
            typer.Option(
                "--regions",
                help="Measure what crop search costs: load the photos into a collection "
                "with regions and one without, and search crops and whole photos in both.",
            ),
        ] = False,
        int8: Annotated[
            str | None,
            typer.Option(
                help="auto: as the service, the first load calibrates an int8 model and the "
                "timed loads and queries use it if it passed the accuracy gate and is faster; "
                "off: never (default: PICSEARCH_INT8)."
            ),
        ] = None,
        search_size: Annotated[
            int | None,
            typer.Option(
                min=1,
                help="Add synthetic vectors to our collection up to N before timing queries "
                "(e.g. 10000), so search latency is measured at that size.",
            ),
        ] = None,
        during_load: Annotated[
            bool,
            typer.Option(
                "--during-load",
                help="Also time searches while a worker process loads the photos: one at the "
                "default CPU priority, one at PICSEARCH_WORKER_NICE (as the service runs it).",
            ),
        ] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON, not tables.")] = False,
        check: Annotated[
            bool,
            typer.Option(
                "--check",
                help="Exit with status 3 when our pipeline is slower than the naive reference "
                "in this run (median images/s end to end).",
            ),
        ] = False,
    ) -> None:
        """Measure ingest (ours vs. a naive reference) and search, or the index alone."""
        from pydantic import ValidationError
        from rich.console import Console

        from app.core.config import get_settings
        from app.core.errors import PicsearchError

        err = Console(stderr=True)
        if check and (index_only or regions):
            raise typer.BadParameter(
                "--check compares ingest with the naive reference: not with --index-only "
                "or --regions"
            )
        if during_load and (index_only or regions):
            raise typer.BadParameter("--during-load goes with the ingest mode only")
        if index_only and regions:
            raise typer.BadParameter("--index-only and --regions are separate modes")
        opts = BenchOptions(
            images=images,
            count=count,
            flags=SettingsFlags(
                model=model,
                weights=weights,
                device=device,
                batch_size=batch_size,
                precision=precision,
                index_type=index_type,
                int8=int8,
            ),
            repeat=repeat,
            queries=queries,
            sizes=_parse_sizes(sizes),
            compile=compile_model,
            max_side=max_side,
            naive_count=naive_count,
            processes=processes,
            skip_lite=skip_lite,
            search_size=search_size,
            during_load=during_load,
        )

        def say(message: str) -> None:
            err.print(f"[dim]bench:[/dim] {message}")

        try:
            base = get_settings()
            if index_only:
                report = bench_index(base, opts, say)
            elif regions:
                report = bench_regions(base, opts, say)
            else:
                report = bench_ingest(base, opts, say)
        except (BenchError, PicsearchError, ValidationError) as exc:
            err.print(f"[red]bench failed:[/red] {exc}")
            raise typer.Exit(1) from None
        if as_json:
            sys.stdout.write(json.dumps(report, indent=2) + "\n")
        else:
            out = Console()
            for table in render(report):
                out.print(table)
        failure = slower_than_naive(report) if check else None
        if failure:
            err.print(f"[red]bench check failed:[/red] {failure}")
            raise typer.Exit(3)
