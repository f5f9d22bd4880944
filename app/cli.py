"""The `picsearch` command line: run the service, and talk to a running one over HTTP."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from app.bench import register as register_bench
from app.core.config import get_settings
from app.core.errors import ConfigurationError
from app.evaluation import register as register_eval
from app.measure.int8_check import register as register_int8_check

cli = typer.Typer(
    name="picsearch",
    help="Picsearch: reverse image search with CNN features and Milvus.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
err = Console(stderr=True)
register_bench(cli)
register_eval(cli)
register_int8_check(cli)

ApiOption = Annotated[
    str | None,
    typer.Option(
        "--api",
        envvar="PICSEARCH_API_URL",
        help="Base URL of a running service (default: http://127.0.0.1:$PICSEARCH_PORT).",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
CollectionOption = Annotated[
    str | None,
    typer.Option("--collection", "-c", help="Collection name (default: the service's default)."),
]
TERMINAL = {"succeeded", "failed", "cancelled"}


def _client(api: str | None) -> httpx.Client:
    base = api or f"http://127.0.0.1:{get_settings().port}"
    key = get_settings().api_key
    headers = {"X-API-Key": key.get_secret_value()} if key else {}
    return httpx.Client(base_url=base, timeout=120, headers=headers)


def _check(resp: httpx.Response) -> Any:
    if resp.status_code >= 400:
        try:
            body = resp.json()
            message = f"{body.get('error')}: {body.get('message')}"
        except ValueError:
            message = resp.text[:500]
        err.print(f"[red]error {resp.status_code}[/red] {message}")
        raise typer.Exit(1)
    return resp.json()


def _call(api: str | None, method: str, url: str, **kwargs: Any) -> Any:
    try:
        with _client(api) as client:
            return _check(client.request(method, url, **kwargs))
    except httpx.TransportError as exc:
        err.print(f"[red]cannot reach the service[/red] ({exc}); is `picsearch up` running?")
        raise typer.Exit(2) from None


@cli.command()
def up() -> None:
    """Run everything on this machine: Redis and Milvus Lite (unless PICSEARCH_REDIS_URL /
    PICSEARCH_MILVUS_URI point elsewhere), a Celery worker and the API + web page."""
    from app.launcher import run_forever

    try:
        code = run_forever(get_settings())
    except ConfigurationError as exc:
        err.print(f"[red]cannot start:[/red] {exc.message}")
        raise typer.Exit(1) from None
    raise typer.Exit(code)


@cli.command()
def api() -> None:
    """Run only the API server (Redis and Milvus must be reachable)."""
    import uvicorn

    settings = get_settings()
    uvicorn.run("app.main:create_app", factory=True, host=settings.host, port=settings.port)


@cli.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def worker(ctx: typer.Context) -> None:
    """Run only a Celery worker; extra arguments go to `celery worker`."""
    from app.launcher import worker_argv

    argv = worker_argv(get_settings()) + list(ctx.args)
    os.execv(argv[0], argv)


@cli.command()
def load(
    folder: Annotated[Path, typer.Argument(help="Folder to index, recursively.")],
    wait: Annotated[bool, typer.Option("--wait", help="Show a progress bar until done.")] = False,
    prune: Annotated[
        bool, typer.Option("--prune", help="Also remove vectors of files gone from FOLDER.")
    ] = False,
    collection: CollectionOption = None,
    api: ApiOption = None,
    as_json: JsonOption = False,
) -> None:
    """Queue a load of FOLDER (which must lie inside the service's image roots)."""
    body = {"path": str(folder.resolve()), "prune": prune, "collection": collection}
    created = _call(api, "POST", "/api/v1/loads", json=body)
    job_id = created["job_id"]
    if not wait:
        console.print_json(data=created) if as_json else console.print(f"job {job_id} queued")
        return
    final = _follow(api, job_id, quiet=as_json)
    if as_json:
        console.print_json(data=final)
    else:
        _print_job_summary(final)
    raise typer.Exit(0 if final["state"] == "succeeded" else 1)


def _follow(api: str | None, job_id: str, quiet: bool) -> dict[str, Any]:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),  # "3/?" while the total is unknown (a format spec fails on None)
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, disable=quiet) as bar:
        task = bar.add_task("queued", total=None, rate="")
        while True:
            job = _call(api, "GET", f"/api/v1/loads/{job_id}")
            rate = f"{job['images_per_second']:.1f} img/s" if job["images_per_second"] else ""
            bar.update(
                task,
                description=job["state"],
                total=job["discovered"] or None,
                completed=job["processed"],
                rate=rate,
            )
            if job["state"] in TERMINAL:
                return dict(job)
            time.sleep(0.5)


def _print_job_summary(job: dict[str, Any]) -> None:
    colour = "green" if job["state"] == "succeeded" else "red"
    console.print(
        f"[{colour}]{job['state']}[/{colour}]: {job['discovered']} found, "
        f"{job['indexed']} indexed, {job['unchanged']} unchanged, {job['failed']} failed"
        + (f" ({job['images_per_second']} img/s)" if job["images_per_second"] else "")
    )
    if job.get("message"):
        console.print(job["message"])
    for error in job["errors"]:
        console.print(f"  [yellow]{error['path']}[/yellow]: {error['reason']}")


@cli.command()
def search(
    image: Annotated[Path, typer.Argument(help="Query image file.", exists=True, dir_okay=False)],
    k: Annotated[int, typer.Option("-k", "--top-k", min=1, max=100, help="Results.")] = 10,
    min_score: Annotated[
        float | None, typer.Option("--min-score", help="Leave out results below this score.")
    ] = None,
    folder: Annotated[
        str | None, typer.Option("--folder", help="Only images under this absolute folder.")
    ] = None,
    collapse: Annotated[
        bool, typer.Option("--collapse", help="Merge byte-identical files into one result.")
    ] = False,
    collection: CollectionOption = None,
    api: ApiOption = None,
    as_json: JsonOption = False,
) -> None:
    """Find the images most similar to IMAGE."""
    form: dict[str, Any] = {"top_k": k, "collapse_duplicates": collapse}
    optional = {"min_score": min_score, "folder": folder, "collection": collection}
    form.update({key: value for key, value in optional.items() if value is not None})
    with image.open("rb") as fh:
        result = _call(api, "POST", "/api/v1/search", files={"image": (image.name, fh)}, data=form)
    if as_json:
        console.print_json(data=result)
        return
    table = Table(title=f"{len(result['results'])} results in {result['took_ms']:.0f} ms")
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("path")
    table.add_column("id")
    for rank, hit in enumerate(result["results"], 1):
        table.add_row(str(rank), f"{hit['score']:.4f}", hit["path"], hit["id"])
    console.print(table)


@cli.command()
def stats(
    collection: CollectionOption = None, api: ApiOption = None, as_json: JsonOption = False
) -> None:
    """Vector count, model, weights and index of the collection."""
    params = {"collection": collection} if collection else {}
    data = _call(api, "GET", "/api/v1/stats", params=params)
    if as_json:
        console.print_json(data=data)
        return
    for key, value in data.items():
        console.print(f"{key:>15}: {value}")
    if data.get("random_weights"):
        err.print("[yellow]warning: RANDOM weights - results are not meaningful[/yellow]")


@cli.command()
def jobs(api: ApiOption = None, as_json: JsonOption = False) -> None:
    """Recent load jobs, newest first."""
    data = _call(api, "GET", "/api/v1/loads")
    if as_json:
        console.print_json(data=data)
        return
    table = Table()
    for col in ("job", "state", "done", "indexed", "unchanged", "failed", "path"):
        table.add_column(col)
    for job in data["jobs"]:
        table.add_row(
            job["job_id"][:8],
            job["state"],
            f"{job['processed']}/{job['discovered']}",
            str(job["indexed"]),
            str(job["unchanged"]),
            str(job["failed"]),
            job["path"],
        )
    console.print(table)


@cli.command()
def collections(api: ApiOption = None, as_json: JsonOption = False) -> None:
    """List collections with their model and size."""
    data = _call(api, "GET", "/api/v1/collections")
    if as_json:
        console.print_json(data=data)
        return
    table = Table()
    for col in ("name", "count", "model", "dim", "weights", "recipe"):
        table.add_column(col)
    for c in data["collections"]:
        name = c["name"] + (" (default)" if c["default"] else "")
        table.add_row(
            name, str(c["count"]), c["model"], str(c["dimension"]), c["weights_id"], c["recipe"]
        )
    console.print(table)


@cli.command("create-collection")
def create_collection(
    name: str,
    model: Annotated[str, typer.Option("--model", help="vgg16 or mobilenet_v2.")] = "vgg16",
    weights: Annotated[
        str | None, typer.Option("--weights", help="imagenet or random (tests only).")
    ] = None,
    api: ApiOption = None,
) -> None:
    """Create an empty named collection for MODEL."""
    body = {"name": name, "model": model, "weights": weights}
    data = _call(api, "POST", "/api/v1/collections", json=body)
    console.print(f"created {data['name']}: {data['model']} ({data['dimension']}-d)")


@cli.command()
def drop(
    collection: CollectionOption = None,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm: delete every vector.")] = False,
    api: ApiOption = None,
) -> None:
    """Drop every vector of a collection (files on disk are not touched)."""
    if not yes:
        err.print("refusing without --yes: this deletes every vector of the collection")
        raise typer.Exit(1)
    params: dict[str, Any] = {"confirm": "true"}
    if collection:
        params["collection"] = collection
    data = _call(api, "DELETE", "/api/v1/collection", params=params)
    console.print(f"dropped {data['dropped']} vectors")


@cli.command()
def cancel(job_id: str, api: ApiOption = None) -> None:
    """Cancel a running load job."""
    job = _call(api, "DELETE", f"/api/v1/loads/{job_id}")
    console.print(f"job {job_id}: {job['state']}")


def main() -> None:
    try:
        cli()
    except ConfigurationError as exc:  # e.g. invalid PICSEARCH_* settings
        err.print(f"[red]configuration error:[/red] {exc.message}")
        sys.exit(1)


if __name__ == "__main__":
    main()
