"""Regions mode (`picsearch bench --regions`): what crop search costs, against the same
collection without it, in the same run.

The photos are loaded R times by our pipeline into two collections, one plain and one with
regions (interleaved, so both see the same machine noise); then crop queries cut from the
indexed photos (rectangles of 64-160 px, as PNG) and the 500x375 JPEG query are searched in
both, as the API searches them (decode, embed, global search; and with regions the region
inputs, the grouped region search, verification and the merge). It reports medians of
images/s and query p50/p99 for both, the ratios, region rows per photo, and how often a crop's
source came first.
"""

from __future__ import annotations

import io
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.bench.common import machine, median_dict, percentile
from app.bench.images import query_jpeg
from app.bench.options import BenchOptions, model_settings
from app.bench.runs import run_ours
from app.bench.setup import photo_bench
from app.bench.stores import make_store, milvus_target, reset_store

if TYPE_CHECKING:
    from app.core.config import Settings
    from app.core.vectorstore import VectorStore
    from app.ml.encoder import Encoder

CROP_SIDES = (64, 96, 128, 160)


def crop_queries(files: list[Path], count: int) -> list[tuple[bytes, str]]:
    """`count` PNG crops (bytes, source image id) cut at fixed places of the first photos."""
    import numpy as np
    from PIL import Image, ImageOps

    from app.core.vectorstore import image_id

    rng = np.random.default_rng(16)
    out: list[tuple[bytes, str]] = []
    for i in range(count):
        path = files[i % len(files)]
        with Image.open(path) as raw:
            img = ImageOps.exif_transpose(raw).convert("RGB")
        side = min(CROP_SIDES[i % len(CROP_SIDES)], img.width, img.height)
        x = int(rng.integers(0, img.width - side + 1))
        y = int(rng.integers(0, img.height - side + 1))
        data = io.BytesIO()
        img.crop((x, y, x + side, y + side)).save(data, format="PNG")
        out.append((data.getvalue(), image_id(str(path.resolve()))))
    return out


def _search_once(
    settings: Settings, encoder: Encoder, store: VectorStore, data: bytes
) -> tuple[float, str]:
    """One search as the API runs it; its seconds and the first result's id."""
    from app.api.region_search import region_query, search_regions
    from app.ml.imageio import decode_image

    start = time.perf_counter()
    image = decode_image(data, size=settings.image_size, max_pixels=settings.max_image_pixels)
    vector = encoder.embed(image.pixels[None])[0]
    hits = store.search(vector, 10)
    first = hits[0].id if hits else ""
    if store.regions is not None:
        query = region_query(data, settings)
        outcome = search_regions(store, encoder, query, hits, None)
        first = outcome.ranked[0].id if outcome.ranked else ""
    return time.perf_counter() - start, first


def _latency(
    settings: Settings, encoder: Encoder, store: VectorStore, queries: list[tuple[bytes, str]]
) -> dict[str, float]:
    _search_once(settings, encoder, store, queries[0][0])  # warm-up: first-call costs
    seconds, hits = [], 0
    for data, source in queries:
        took, first = _search_once(settings, encoder, store, data)
        seconds.append(took)
        hits += first == source
    return {
        "p50_ms": percentile(seconds, 50) * 1000,
        "p99_ms": percentile(seconds, 99) * 1000,
        "top1": hits / len(queries),
    }


def bench_regions(
    base: Settings, opts: BenchOptions, say: Callable[[str], None] = lambda _: None
) -> dict[str, Any]:
    with photo_bench(base, opts, say) as bench:
        work, folder, files, settings = bench.work, bench.folder, bench.files, bench.settings
        encoder, query_encoder = bench.encoder, bench.query_encoder
        with_regions = model_settings(settings, opts, regions=True)
        crops = crop_queries(files, opts.queries)
        whole = [(query_jpeg(files[0]), "")] * opts.queries
        token = secrets.token_hex(4)
        runs: dict[str, list[dict[str, float]]] = {"plain": [], "regions": []}
        with milvus_target(settings, work) as target:
            lite = target.settings
            plain = make_store(lite, f"bench_{token}_plain", encoder, 0)
            regional = make_store(
                model_settings(lite, opts, regions=True), f"bench_{token}_regions", encoder, 0
            )
            stores = {"plain": plain, "regions": regional}
            try:
                for r in range(opts.repeat):
                    for name, store in stores.items():
                        if r:
                            reset_store(store)
                        run = run_ours(
                            with_regions if store.regions else settings, encoder, folder, store
                        )
                        runs[name].append({"images_per_s": run.rate})
                    say(
                        f"run {r + 1}/{opts.repeat}: plain {runs['plain'][-1]['images_per_s']:.2f}"
                        f" img/s, with regions {runs['regions'][-1]['images_per_s']:.2f} img/s"
                    )
                assert regional.regions is not None
                region_rows = regional.regions.count()
                for name, store in stores.items():
                    for what, queries in (("crop", crops), ("whole", whole)):
                        figures = [
                            _latency(settings, query_encoder, store, queries)
                            for _ in range(opts.repeat)
                        ]
                        for run_figures, fig in zip(runs[name], figures, strict=True):
                            run_figures.update({f"{what}_{k}": v for k, v in fig.items()})
            finally:
                for store in stores.values():
                    store.drop()
        results = {name: median_dict(r) for name, r in runs.items()}
        plain_fig, region_fig = results["plain"], results["regions"]
        return {
            "mode": "regions",
            "machine": machine(encoder, query_encoder),
            "config": {
                "model": settings.model,
                "weights": settings.weights,
                "images": len(files),
                "queries": opts.queries,
                "repeat": opts.repeat,
                "runtime": query_encoder.info.runtime,
                "backend": target.name if target.pid is None else "milvus-lite (temporary)",
            },
            "results": results,
            "region_rows_per_image": region_rows / len(files),
            "ingest_ratio": region_fig["images_per_s"] / plain_fig["images_per_s"],
            "crop_query_ratio": region_fig["crop_p50_ms"] / plain_fig["crop_p50_ms"],
            "whole_query_ratio": region_fig["whole_p50_ms"] / plain_fig["whole_p50_ms"],
        }
