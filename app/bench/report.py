"""The bench's report as rich tables (`--json` prints the report itself)."""

from __future__ import annotations

from typing import Any

from app.bench.common import STAGES


def _fmt(value: float, digits: int = 2) -> str:
    return f"{value:,.{digits}f}"


def describe_machine(found: dict[str, Any]) -> str:
    """Lines naming the machine and how the model ran on it (tables' header)."""
    lines = [f"CPU: {found['cpu']}; torch {found['torch']}"]
    if "gpu" in found:
        lines.append(f"GPU: {found['gpu']}")
    for purpose in ("batch", "query"):
        if f"{purpose}_runtime" not in found:
            continue
        why = found.get(f"{purpose}_reason")
        lines.append(
            f"{purpose} runtime: {found[f'{purpose}_runtime']}" + (f" ({why})" if why else "")
        )
    return "\n".join(lines)


def render(report: dict[str, Any]) -> list[Any]:
    """Rich tables for a report, after a header naming the machine."""
    return [describe_machine(report["machine"]), *_tables(report)]


def _tables(report: dict[str, Any]) -> list[Any]:
    from rich.table import Table

    cfg = report["config"]
    if report["mode"] == "regions":
        return [_regions_table(report)]
    if report["mode"] == "index":
        table = Table(
            title=f"Index: {cfg['model']} dim {cfg['dim']}, query {cfg['query']} "
            f"({cfg['device']} {cfg['precision']}, OMP_WAIT_POLICY={cfg['omp_wait_policy']}), "
            f"medians of {cfg['repeat']}x{cfg['queries']}"
        )
        table.add_column("backend")
        for col in ("index", "vectors", "insert/s", "ready after", "search p50 / p99", "recall@10"):
            table.add_column(col, justify="right")
        table.add_column("query p50 / p99 (decode + embed + search)", justify="right")
        for row in report["results"]:
            recall = row.get("recall_at_10")
            table.add_row(
                row["backend"],
                row["index_type"],
                f"{row['size']:,}",
                _fmt(row["insert_vectors_per_s"], 0),
                f"{row['index_ready_s']:.0f} s"
                + ("" if row.get("index_built", True) else " (still building)"),
                f"{_fmt(row['search_p50_ms'], 1)} / {_fmt(row['search_p99_ms'], 1)} ms",
                "" if recall is None else f"{recall:.3f}",
                f"{_fmt(row['query_p50_ms'], 1)} / {_fmt(row['query_p99_ms'], 1)} ms",
            )
        return [table]

    ours, ref, flops = report["ours"], report["naive"], report["model_flops"]
    main = Table(
        title=f"Ingest: {cfg['count']:,} images"
        + (f" (re-encoded at most {cfg['max_side']} px a side)" if cfg["max_side"] else "")
        + f", {cfg['model']} ({cfg['weights']}), medians of {cfg['repeat']} runs"
    )
    main.add_column("")
    main.add_column(
        f"ours ({cfg['device']} {cfg['precision']} {cfg['runtime']}, batch {cfg['batch_size']})",
        justify="right",
    )
    naive_of = "" if cfg["naive_count"] == cfg["count"] else f", first {cfg['naive_count']:,}"
    main.add_column(
        f"naive (PIL full decode, fp32, batch 1, upsert each{naive_of})", justify="right"
    )
    main.add_column("ratio", justify="right")
    main.add_row(
        "images/s end to end",
        _fmt(ours["images_per_s"]),
        _fmt(ref["images_per_s"]),
        f"{report['speedup']:.2f}x",
    )
    main.add_row(
        "  ratio in each run",
        "",
        "",
        " ".join(f"{r:.2f}x" for r in report["runs"]["speedup"]),
    )
    parallel = report.get("ours_processes")
    if parallel:
        main.add_row(
            f"images/s end to end, {parallel['processes']} processes",
            _fmt(parallel["images_per_s"]),
            "",
            f"{parallel['speedup']:.2f}x",
        )
        main.add_row(
            f"  in each run ({parallel['runtime']})",
            " ".join(_fmt(r, 0) for r in parallel["images_per_s_runs"]),
            "",
            "",
        )
    for stage in STAGES:
        main.add_row(
            f"  {stage} s",
            _fmt(ours[stage]),
            _fmt(ref[stage]),
            f"{ref[stage] / ours[stage]:.2f}x" if stage != "other" and ours[stage] > 0 else "",
        )
    first = report.get("first_load")
    if first:
        main.add_row("images/s, first load (calibrates int8)", _fmt(first["images_per_s"]), "", "")
    peaks = flops["peak_gflops"]
    share = flops["ours_fraction_of_peak"]
    main.add_row(
        "model GFLOP/s (% of peak)",
        f"{_fmt(flops['ours_gflops'], 0)}" + ("" if share is None else f" ({share:.0%})"),
        f"{_fmt(flops['naive_gflops'], 0)} ({flops['naive_fraction_of_peak']:.0%})",
        "",
    )
    extra = Table(title="Model, search and vectors")
    extra.add_column("measure")
    extra.add_column("value", justify="right")
    extra.add_row("model cost per image", f"{flops['gmac_per_image']:.2f} GMAC")
    int8 = cfg.get("int8") or {}
    if int8.get("state"):
        why = f": {int8['reason']}" if int8.get("reason") else ""
        extra.add_row("int8", f"{int8['state']}{why}")
        if int8.get("query_note"):
            extra.add_row("  int8 for queries", int8["query_note"])
    for dtype, peak in peaks.items():
        extra.add_row(f"peak {dtype} (matmul or 3x3 conv)", f"{_fmt(peak, 0)} GFLOP/s")
    search = report["search"]
    extra.add_row(
        f"query p50 / p99 ({search['query']}, {search['collection_size']:,} vectors)",
        f"{_fmt(search['query_p50_ms'], 1)} / {_fmt(search['query_p99_ms'], 1)} ms",
    )
    extra.add_row("  of which decode + embed p50", f"{_fmt(search['embed_p50_ms'], 1)} ms")
    extra.add_row(
        "  search alone p50 / p99",
        f"{_fmt(search['search_p50_ms'], 1)} / {_fmt(search['search_p99_ms'], 1)} ms",
    )
    during = report.get("search_during_load") or {}
    for nice, row in during.get("by_worker_nice", {}).items():
        which = " (the service's)" if int(nice) == during["service_nice"] else ""
        extra.add_row(
            f"  during a load, worker at nice {nice}{which}: query p50 / p99 "
            f"({row['queries']} queries), load",
            f"{_fmt(row['query_p50_ms'], 1)} / {_fmt(row['query_p99_ms'], 1)} ms, "
            f"{_fmt(row['load_images_per_s'])} img/s",
        )
    quality = report["vectors_vs_naive_fp32"]
    extra.add_row(
        "cosine to naive fp32 vectors: mean / p1 / min",
        f"{quality['cosine_mean']:.5f} / {quality['cosine_p1']:.5f} / {quality['cosine_min']:.5f}",
    )
    extra.add_row("top-10 overlap with naive fp32 ranking", f"{quality['top10_overlap']:.1%}")
    extra.add_row("milvus", cfg["milvus"])
    extra.add_row("OMP_WAIT_POLICY", cfg["omp_wait_policy"])
    return [main, extra]


def _regions_table(report: dict[str, Any]) -> Any:
    from rich.table import Table

    cfg = report["config"]
    table = Table(
        title=f"Crop search: {cfg['model']} ({cfg['weights']} weights, {cfg['runtime']}), "
        f"{cfg['images']} photos, {cfg['backend']}, medians of {cfg['repeat']} runs x "
        f"{cfg['queries']} queries; {report['region_rows_per_image']:.0f} region rows per photo"
    )
    table.add_column("collection")
    for col in ("load img/s", "crop query p50 / p99 ms", "crop source first", "photo query p50 ms"):
        table.add_column(col, justify="right")
    for name, row in report["results"].items():
        table.add_row(
            name,
            _fmt(row["images_per_s"]),
            f"{_fmt(row['crop_p50_ms'], 0)} / {_fmt(row['crop_p99_ms'], 0)}",
            f"{row['crop_top1']:.0%}",
            _fmt(row["whole_p50_ms"], 0),
        )
    table.caption = (
        f"with regions: loads at {report['ingest_ratio']:.2f}x, crop queries take "
        f"{report['crop_query_ratio']:.2f}x and photo queries {report['whole_query_ratio']:.2f}x "
        "the plain collection's"
    )
    return table
