"""The evaluation report as rich tables for the terminal (`--json` prints the report itself)."""

from __future__ import annotations

from typing import Any

from app.evaluation.metrics import HIT_AT, metric_names


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def crop_table(title: str, columns: dict[str, dict[str, Any]]) -> Any:
    """Top-1 / top-10 of the crops' source per kind, textured then flat, one column per search
    (`columns`: name -> an `evaluate_crops` result)."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("crop kind")
    table.add_column("queries", justify="right")
    for name in columns:
        table.add_column(f"{name}\ntop-1 / top-10", justify="right")
    first = next(iter(columns.values()))
    for group in ("textured", "flat"):
        kinds = [*first[group]["per_kind"], "overall"]
        for kind in kinds:
            cells = []
            for result in columns.values():
                part = result[group]
                m = part["overall"] if kind == "overall" else part["per_kind"][kind]
                cells.append(f"{_pct(m['hit@1'])} / {_pct(m['hit@10'])}")
            m = first[group]["overall"] if kind == "overall" else first[group]["per_kind"][kind]
            label = (
                f"{group} {kind}" if kind == "overall" else f"{kind}{' (flat)' * (group == 'flat')}"
            )
            table.add_row(label, str(m["queries"]), *cells)
        table.add_section()
    return table


def region_tables(regions: dict[str, dict[str, Any]], global_crops: dict[str, Any]) -> list[Any]:
    """The region designs beside the global vector: hit rates per crop kind, then costs."""
    from rich.table import Table

    columns = {"global": global_crops}
    for name, result in regions.items():
        columns[f"{name}"] = result["regions"]
        if "verified" in result:  # the service's ranking is verified already
            columns[f"{name} +NCC"] = result["verified"]
    out: list[Any] = [crop_table("crops: region designs (best region per image)", columns)]
    costs = Table(title="region designs: cost on this CPU")
    for head in ("design", "vectors/img", "ingest ms/img", "GB/10k fp32", "GB/10k SQ8"):
        costs.add_column(head, justify="right")
    for head in ("query embed ms", "search ms", "search ms @10k", "verify ms"):
        costs.add_column(head, justify="right")
    for name, r in regions.items():
        q, gb = r["query_ms"], r["storage_gb_per_10k"]
        costs.add_row(
            name,
            str(r["vectors_per_image"]),
            str(r["ingest_ms_per_image"]),
            str(gb["float32"]),
            str(gb["sq8"]),
            str(q["embed"]),
            str(q["search"]),
            str(q["search_per_10k_images"]),
            str(q["verify_shortlist"]),
        )
    out.append(costs)
    out += [f"{name}: {r['design']}" for name, r in regions.items()]
    dups = regions.get("service", {}).get("near_duplicates")
    if dups:
        out.append(
            f"near-duplicate hit@1 on the same originals ({dups['queries']} queries): global "
            f"{dups['hit@1_global']:.3f}, with the service's regions {dups['hit@1_service']:.3f}"
        )
    return out


def render_tables(report: dict[str, Any], compare: bool) -> list[Any]:
    """rich renderables for the terminal: compact tables, percentages."""
    from rich.table import Table

    k = report["k"]
    names = metric_names(k)
    out: list[Any] = [
        f"model {report['model']}, weights {report['weights_id']}, {report['device']} "
        f"{report['precision']}"
        + (" [yellow](RANDOM: not meaningful)[/yellow]" if report["random_weights"] else "")
        + f"; {report['search']}; numbers in %"
    ]
    recipes = report["recipes"]
    has_lab, has_dup = "labelled" in report, "originals" in report
    has_crops = "crops" in report
    if has_lab:
        lab = report["labelled"]
        out.append(f"labelled: {lab['path']} - {lab['images']} images, {lab['classes']} classes")
    if has_dup:
        dup = report["originals"]
        out.append(
            f"near duplicates: {dup['indexed']} originals indexed from {dup['path']}, "
            f"{dup['queries']} queries ({dup['query_sources']} originals x "
            f"{len(dup['transforms'])} transforms)"
        )
    if has_crops:
        cr = report["crops"]
        out.append(
            f"crops: {cr['indexed']} originals indexed from {cr['path']}, {cr['crops']} crops "
            f"(seed {cr['seed']}) x {len(cr['kinds']) - 3} variants = {cr['queries']} queries, "
            f"{cr['flat_queries']} of them flat"
        )
    if not compare:
        row = recipes[0]
        if has_lab:
            table = Table(title=f"labelled retrieval, recipe {row['recipe']}")
            table.add_column("class")
            table.add_column("images", justify="right")
            for n in names:
                table.add_column(n, justify="right")
            for cls, m in row["labelled"]["per_class"].items():
                table.add_row(cls, str(m["images"]), *(_pct(m[n]) for n in names))
            table.add_section()
            for label, key in (("overall (per query)", "overall"), ("mean of classes", "macro")):
                m = row["labelled"][key]
                table.add_row(label, str(row["labelled"]["images"]), *(_pct(m[n]) for n in names))
            out.append(table)
        if has_dup:
            table = Table(title=f"near-duplicate hit rate, recipe {row['recipe']}")
            table.add_column("transform")
            table.add_column("queries", justify="right")
            for depth in HIT_AT:
                table.add_column(f"hit@{depth}", justify="right")
            nd = row["near_duplicates"]
            for t, m in [*nd["per_transform"].items(), ("overall", nd["overall"])]:
                table.add_row(t, str(m["queries"]), *(_pct(m[f"hit@{d}"]) for d in HIT_AT))
            out.append(table)
        if has_crops:
            title = f"crops: source ranked first / in the top 10, recipe {row['recipe']}"
            out.append(crop_table(title, {"global vector": row["crops"]}))
        if "regions" in report:
            out += region_tables(report["regions"], row["crops"])
        return out

    table = Table(title="recipes, best first")
    table.add_column("recipe", no_wrap=True)
    if has_lab:
        for n in names:
            table.add_column(n, justify="right")
    if has_dup:
        for depth in HIT_AT:
            table.add_column(f"dup hit@{depth}", justify="right")
    if has_crops:
        for depth in HIT_AT:
            table.add_column(f"crop top-{depth}", justify="right")
    table.add_column("ms/img", justify="right")
    table.add_column("")
    for row in recipes:
        cells = [row["recipe"]]
        if has_lab:
            cells += [_pct(row["labelled"]["overall"][n]) for n in names]
        if has_dup:
            cells += [_pct(row["near_duplicates"]["overall"][f"hit@{d}"]) for d in HIT_AT]
        if has_crops:
            textured = row["crops"]["textured"]["overall"]
            cells += [_pct(textured[f"hit@{d}"]) for d in HIT_AT]
        marks = [m for m, on in (("seed", row["is_seed"]), ("current", row["is_current"])) if on]
        table.add_row(*cells, str(row["ms_per_image"]), " ".join(marks))
    out.append(table)
    if has_dup:
        picks: dict[str, dict[str, Any]] = {}
        for row in recipes:
            if row["is_seed"] and not row["whiten"]:
                picks.setdefault("seed", row)
            if row["is_current"] and not row["whiten"]:
                picks.setdefault("current", row)
        by_name = {row["recipe"]: row for row in recipes}
        for label in ("labelled", "near_duplicates"):
            best = report["best"][label]
            if best is not None:
                picks.setdefault(f"best {label.split('_')[0]}", by_name[best])
        table = Table(title="near-duplicate hit@1 / hit@10 per transform")
        table.add_column("transform")
        for label, row in picks.items():
            table.add_column(f"{label}\n{row['recipe']}", justify="right")
        transforms = list(recipes[0]["near_duplicates"]["per_transform"])
        for t in [*transforms, "overall"]:
            cells = []
            for row in picks.values():
                nd = row["near_duplicates"]
                m = nd["overall"] if t == "overall" else nd["per_transform"][t]
                cells.append(f"{_pct(m['hit@1'])} / {_pct(m['hit@10'])}")
            table.add_row(t, *cells)
        out.append(table)
    return out
