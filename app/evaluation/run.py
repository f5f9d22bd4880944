"""`run_evaluation`: embed the folders, search, and score every recipe asked for; the report."""

from __future__ import annotations

import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from app.evaluation.cache import cached_embedding, files_key
from app.evaluation.crops import CROP_KINDS, CROP_NOTES, CROP_VERSION, CropQuery, make_crop_queries
from app.evaluation.datasets import list_images, list_labelled, sample
from app.evaluation.duplicates import DUP_TRANSFORMS, QUERY_VERSION, TRANSFORM_NOTES, make_queries
from app.evaluation.embedding import Embedded, embed_grid, embed_service
from app.evaluation.metrics import (
    HIT_AT,
    evaluate_crops,
    evaluate_labelled,
    evaluate_near_duplicates,
    top_k,
)
from app.evaluation.options import EvalOptions
from app.evaluation.recipes import RESIZE_MODES, Prep, Recipe, current_recipe, seed_recipe
from app.evaluation.regions import evaluate_design
from app.evaluation.service_regions import evaluate_service
from app.evaluation.whitening import Whitening

if TYPE_CHECKING:
    import numpy as np

    from app.core.config import Settings


SAMPLE_SEED = 7
CROP_SEED = 16
WHITEN_CANDIDATES = 4


def _whitened(db: np.ndarray, queries: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """Both sets whitened as learnt on `db` (`dims` components), or as they are when 0."""
    if not dims:
        return db, queries
    whitening = Whitening.learn(db, dims)
    return whitening.apply(db), whitening.apply(queries)


def _grid(settings: Settings, options: EvalOptions) -> tuple[list[Prep], list[str]]:
    preps = {Prep(m, s) for m in options.resize_modes for s in options.sizes}
    poolings = list(dict.fromkeys(options.poolings))
    for must in (current_recipe(settings), seed_recipe()):
        preps.add(must.prep)
        if must.pooling not in poolings:
            poolings.append(must.pooling)
    for prep in preps:
        if prep.mode not in RESIZE_MODES:
            raise typer.BadParameter(f"unknown resize mode {prep.mode!r}")
    return sorted(preps), poolings


def _score(row: dict[str, Any], k: int) -> tuple[float, float]:
    lab = row.get("labelled", {}).get("overall", {}).get(f"map@{k}", -1.0)
    dup = row.get("near_duplicates", {}).get("overall", {}).get("hit@1", -1.0)
    return float(lab), float(dup)


def run_evaluation(settings: Settings, options: EvalOptions) -> dict[str, Any]:
    """Embed, search and score; returns the report (see `picsearch eval --json`)."""
    with tempfile.TemporaryDirectory(prefix="picsearch-eval-") as scratch:
        return _evaluate(settings, options, Path(scratch))


def _evaluate(settings: Settings, options: EvalOptions, scratch: Path) -> dict[str, Any]:
    from app.ml.encoder import Encoder

    if options.labelled is None and options.originals is None and options.crops is None:
        raise typer.BadParameter("give --labelled DIR, --originals DIR and/or --crops DIR")
    encoder = Encoder(settings)
    current, seed = current_recipe(settings), seed_recipe()
    preps, poolings = _grid(settings, options)
    k = options.k

    def embed(paths: Sequence[Path], what: str) -> Embedded:
        tick = options.progress(what, len(paths)) if options.progress else None
        if not options.compare:
            return embed_service(encoder, settings, paths, progress=tick)

        def compute(todo: Sequence[Prep]) -> Embedded:
            return embed_grid(
                encoder,
                paths,
                todo,
                poolings,
                max_pixels=settings.max_image_pixels,
                batch_size=settings.batch_size_for(encoder.device.type),
                threads=settings.effective_decode_threads,
                progress=tick,
            )

        if options.cache is None:
            return compute(preps)
        return cached_embedding(options.cache, encoder, paths, preps, poolings, compute)

    report: dict[str, Any] = {
        "model": settings.model,
        "weights": settings.weights,
        "weights_id": encoder.info.weights_id,
        "random_weights": encoder.info.random_weights,
        "device": encoder.info.device,
        "precision": encoder.info.precision,
        "runtime": str(getattr(encoder.info, "runtime", "eager")),
        "service_recipe": encoder.info.recipe,
        "search": "exact cosine similarity in memory (numpy), equivalent to Milvus FLAT/COSINE",
        "k": k,
        "resize_modes": {p.mode: RESIZE_MODES[p.mode] for p in preps} if options.compare else {},
    }
    seconds: dict[Prep, float] = defaultdict(float)
    counted = 0
    rows: dict[Recipe, dict[str, Any]] = {}
    labelled_data: tuple[Embedded, list[str]] | None = None
    dup_data: tuple[Embedded, Embedded, list[int], list[str]] | None = None

    if options.labelled is not None:
        items = sample(list_labelled(options.labelled), options.limit, SAMPLE_SEED)
        emb = embed([p for p, _ in items], "labelled")
        labels = [items[i][1] for i in emb.ok]
        labelled_data = (emb, labels)
        counted += len(emb.ok)
        for prep, s in emb.seconds.items():
            seconds[prep] += s
        report["labelled"] = {
            "path": str(options.labelled),
            "images": len(labels),
            "classes": len(set(labels)),
            "failed": emb.failed,
        }

    if options.originals is not None:
        originals = sample(list_images(options.originals), options.limit, SAMPLE_SEED)
        db = embed(originals, "originals")
        sources = sample(db.ok, options.dup_queries or None, SAMPLE_SEED + 1)
        chosen = [originals[i] for i in sources]
        query_dir = scratch / "near-duplicates"
        if options.cache is not None:  # same queries (same files) next time
            query_dir = options.cache / f"queries-{files_key(chosen, [QUERY_VERSION])}"
        made = make_queries(chosen, query_dir)
        dup_query_files = [q for q, _, _ in made]
        qemb = embed([q for q, _, _ in made], "near-duplicate queries")
        position = {orig: row for row, orig in enumerate(db.ok)}
        targets = [position[sources[made[i][1]]] for i in qemb.ok]
        kinds = [made[i][2] for i in qemb.ok]
        dup_data = (db, qemb, targets, kinds)
        counted += len(db.ok) + len(qemb.ok)
        for part in (db, qemb):
            for prep, s in part.seconds.items():
                seconds[prep] += s
        report["originals"] = {
            "path": str(options.originals),
            "indexed": len(db.ok),
            "query_sources": len(sources),
            "queries": len(qemb.ok),
            "transforms": {t: TRANSFORM_NOTES[t] for t in DUP_TRANSFORMS},
            "failed": {**db.failed, **qemb.failed},
        }

    crop_data: tuple[Embedded, Embedded, list[int], list[CropQuery]] | None = None
    if options.crops is not None:
        crop_originals = sample(list_images(options.crops), options.limit, SAMPLE_SEED)
        reuse = dup_data is not None and crop_originals == originals
        cdb = (
            dup_data[0]
            if dup_data is not None and reuse
            else embed(crop_originals, "crop originals")
        )
        crop_sources = sample(cdb.ok, options.crop_queries or None, SAMPLE_SEED + 2)
        count = options.crop_queries or len(crop_sources)
        crop_dir = scratch / "crops"
        if options.cache is not None:  # same crop files next time
            chosen = [crop_originals[i] for i in crop_sources]
            crop_dir = (
                options.cache / f"crops-{files_key(chosen, [CROP_VERSION, CROP_SEED, count])}"
            )
        cut = make_crop_queries(crop_originals, crop_sources, count, crop_dir, CROP_SEED)
        cq = embed([q.path for q in cut], "crop queries")
        row_of = {orig: row for row, orig in enumerate(cdb.ok)}
        crop_data = (cdb, cq, [row_of[cut[i].source] for i in cq.ok], [cut[i] for i in cq.ok])
        counted += len(cq.ok) + (0 if reuse else len(cdb.ok))
        for part in (cq,) if reuse else (cdb, cq):
            for prep, s in part.seconds.items():
                seconds[prep] += s
        report["crops"] = {
            "path": str(options.crops),
            "indexed": len(cdb.ok),
            "crops": count,
            "queries": len(cq.ok),
            "flat_queries": sum(q.box.flat for q in crop_data[3]),
            "seed": CROP_SEED,
            "kinds": CROP_NOTES,
            "failed": {**({} if reuse else cdb.failed), **cq.failed},
        }
        if options.regions:
            cdb_, cq_, crop_targets, crop_list = crop_data
            report["regions"] = {
                design: evaluate_design(
                    encoder,
                    crop_originals,
                    cdb_.ok,
                    crop_list,
                    crop_targets,
                    design,
                    options.progress,
                )
                for design in options.regions
                if design != "service"
            }
            if "service" in options.regions:
                dups = None
                if dup_data is not None and reuse:
                    _, qemb_, dup_targets, dup_kinds = dup_data
                    dup_files = [dup_query_files[i] for i in qemb_.ok]
                    dups = (dup_files, qemb_.vectors[current.base], dup_targets, dup_kinds)
                report["regions"]["service"] = evaluate_service(
                    encoder,
                    crop_originals,
                    cdb_.ok,
                    crop_list,
                    crop_targets,
                    (cdb_.vectors[current.base], cq_.vectors[current.base]),
                    dups,
                    options.progress,
                )

    def evaluate(recipe: Recipe) -> dict[str, Any]:
        row: dict[str, Any] = {
            "recipe": recipe.name,
            "pooling": recipe.pooling,
            "resize": recipe.prep.mode,
            "size": recipe.prep.size,
            "whiten": recipe.whiten,
            "ms_per_image": round(1000 * seconds[recipe.prep] / max(1, counted), 1),
            "is_current": recipe == current,
            "is_seed": recipe == seed,
        }
        if labelled_data is not None:
            emb, labels = labelled_data
            vec = emb.vectors[recipe.base]
            if recipe.whiten:
                vec = Whitening.learn(vec, recipe.whiten).apply(vec)
            row["labelled"] = evaluate_labelled(vec, labels, k)
        if dup_data is not None:
            db, qemb, targets, kinds = dup_data
            dbv, qv = _whitened(db.vectors[recipe.base], qemb.vectors[recipe.base], recipe.whiten)
            row["near_duplicates"] = evaluate_near_duplicates(dbv, qv, targets, kinds)
        if crop_data is not None:
            cdb, cq, ctargets, cqueries = crop_data
            dbv, qv = _whitened(cdb.vectors[recipe.base], cq.vectors[recipe.base], recipe.whiten)
            row["crops"] = evaluate_crops(
                top_k(qv, dbv, max(HIT_AT)),
                len(dbv),
                ctargets,
                [q.kind for q in cqueries],
                [q.box.flat for q in cqueries],
                CROP_KINDS,
            )
        return row

    if not options.compare:
        recipes = [current]
        for recipe in recipes:
            rows[recipe] = evaluate(recipe)
            rows[recipe]["recipe"] = encoder.info.recipe
    else:
        for prep in preps:
            for pooling in poolings:
                recipe = Recipe(prep, pooling)
                rows[recipe] = evaluate(recipe)
        if options.whiten > 0:
            ranked = sorted(rows, key=lambda r: _score(rows[r], k), reverse=True)
            candidates = dict.fromkeys([*ranked[:WHITEN_CANDIDATES], current, seed])
            for base in candidates:
                recipe = Recipe(base.prep, base.pooling, options.whiten)
                rows[recipe] = evaluate(recipe)
    ordered = sorted(rows.values(), key=lambda r: _score(r, k), reverse=True)
    report["recipes"] = ordered
    report["best"] = {
        "labelled": ordered[0]["recipe"] if "labelled" in report else None,
        "near_duplicates": max(ordered, key=lambda r: _score(r, k)[::-1])["recipe"]
        if "originals" in report
        else None,
    }
    return report
