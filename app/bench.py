"""`picsearch bench`: how fast ingest and search are, measured against a naive reference.

Ingest mode (default): a folder of photos, sampled or repeated to N files in a temporary
folder, is indexed R times by our pipeline (`ChunkRunner`: decoding on threads ahead of
batched inference, batched upserts) and R times by a naive loop written here (PIL full decode
+ resize, fp32 eager batch of one, one upsert per image: the seed's approach), interleaved so
both see the same machine noise. It reports medians of: images/s end to end and the ratio,
the time split by stage, model FLOP/s against the machine's measured matmul peak, search
latency at the collection's size for a 500x375 JPEG query (decoding and embedding included),
and how close our vectors are to the naive fp32 ones (cosine, top-10 overlap).

Index mode (`--index-only`): synthetic unit vectors at several collection sizes; insert rate
and search latency (vector only, and for the JPEG query end to end).

Milvus: a temporary Milvus Lite server on a free port, stopped afterwards; with
PICSEARCH_MILVUS_URI set, ingest runs there instead and index mode measures both (or only the
server, with --skip-lite). Collections are named `bench_<random>_*` and dropped afterwards.

Heavy modules (torch, pymilvus, the pipeline) are imported inside functions, so that
registering the command keeps `picsearch --help` fast.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    import numpy as np
    import torch

    from app.core.config import Settings
    from app.core.jobs import ChunkCounts, FileError
    from app.core.vectorstore import VectorStore
    from app.ml.encoder import Encoder

QUERY_SIZE = (500, 375)
TOP_K = 10
WARMUP_QUERIES = 3
INSERT_BATCH = 1000
SETTLE_S_PER_VECTOR = 0.002  # how long index mode waits for an index build: 2,000 s at 1M
RECALL_MAX_SIZE = 200_000  # index mode checks recall@10 exactly up to this many vectors
SYNTHETIC_SPREAD = 0.75  # noise norm around a cluster centre (unit vectors)
STAGES = ("decode", "embed", "write", "other")


class BenchError(Exception):
    """The benchmark could not run as asked (bad folder, failed files, …)."""


# -- small helpers ----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile `q` (0-100) of `values`."""
    data = sorted(values)
    if not data:
        return float("nan")
    pos = (len(data) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (pos - low)


def median_dict(runs: Sequence[dict[str, float]]) -> dict[str, float]:
    """Key-wise median of several runs' figures."""
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def bench_settings(base: Settings, **overrides: Any) -> Settings:
    """A validated copy of `base` with `overrides` (the environment is not read again)."""
    from app.core.config import Settings

    return Settings.model_validate({**base.model_dump(), **overrides})


class _Clock:
    """Accumulated seconds per stage."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.totals[stage] += time.perf_counter() - start


# -- images -----------------------------------------------------------------------------------
def reencode(src: Path, target: Path, max_side: int) -> None:
    """`src` as an upright RGB JPEG (quality 90) whose longer side is at most `max_side`."""
    from PIL import Image, ImageOps

    with Image.open(src) as img:
        rgb = ImageOps.exif_transpose(img).convert("RGB")
    rgb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    rgb.save(target, format="JPEG", quality=90)


def prepare_images(source: Path, count: int, dest: Path, max_side: int | None = None) -> list[Path]:
    """`count` image files in `dest`: `source`'s images evenly sampled, or repeated cyclically.

    Repeats are hard links (copies across file systems) under distinct names, so each is its
    own image to the pipeline. With `max_side`, each picked photo is first re-encoded as a
    JPEG of at most that many pixels a side (500: PASCAL VOC's size), in a sibling folder.
    All files are read once so both paths start from a warm cache.
    """
    from app.ml.imageio import has_image_extension

    found = sorted(p for p in source.rglob("*") if p.is_file() and has_image_extension(p.name))
    if not found:
        raise BenchError(f"no image files under {source}")
    if count < 1:
        raise BenchError("--count must be at least 1")
    if len(found) >= count:
        step = len(found) / count
        picks = [found[int(i * step)] for i in range(count)]
    else:
        picks = [found[i % len(found)] for i in range(count)]
    dest.mkdir(parents=True, exist_ok=True)
    if max_side is not None:
        resized = dest.parent / f"{dest.name}-max{max_side}"
        resized.mkdir(exist_ok=True)
        made_for: dict[Path, Path] = {}
        for src in dict.fromkeys(picks):
            made_for[src] = resized / f"{len(made_for):06d}.jpg"
            reencode(src, made_for[src], max_side)
        picks = [made_for[src] for src in picks]
    made = []
    for i, src in enumerate(picks):
        target = dest / f"{i:06d}{src.suffix.lower()}"
        try:
            os.link(src, target)
        except OSError:
            shutil.copyfile(src, target)
        target.read_bytes()
        made.append(target)
    return made


def query_jpeg(sample: Path | None) -> bytes:
    """The search benchmark's query: a 500x375 JPEG, from `sample` or synthetic."""
    import numpy as np
    from PIL import Image, ImageOps

    if sample is not None:
        with Image.open(sample) as img:
            rgb = ImageOps.exif_transpose(img).convert("RGB")
    else:
        rng = np.random.default_rng(7)
        yy, xx = np.mgrid[0 : QUERY_SIZE[1], 0 : QUERY_SIZE[0]].astype(np.float32)
        base = np.stack([xx / 2, yy / 1.5, (xx + yy) / 3.5], axis=-1) % 256
        noise = rng.normal(0, 12, base.shape)
        rgb = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")
    out = io.BytesIO()
    rgb.resize(QUERY_SIZE, Image.Resampling.BILINEAR).save(out, format="JPEG", quality=90)
    return out.getvalue()


# -- the naive reference ----------------------------------------------------------------------
def naive_decode(data: bytes, size: int) -> np.ndarray:
    """The seed's decoding: PIL full decode, upright, RGB, resized; no DCT-domain shortcut."""
    import numpy as np
    from PIL import Image, ImageOps

    with Image.open(io.BytesIO(data)) as img:
        rgb = ImageOps.exif_transpose(img).convert("RGB")
        return np.asarray(rgb.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


class NaiveEncoder:
    """The seed's inference: the plain eager fp32 trunk (NCHW), one image per call, on the
    configured device (the seed's Keras used a GPU where it found one)."""

    def __init__(self, settings: Settings) -> None:
        import torch

        from app.ml.encoder import (
            IMAGENET_MEAN,
            IMAGENET_STD,
            build_backbone,
            pick_device,
            resolve_weights,
        )

        state, _ = resolve_weights(settings)
        self.device = pick_device(settings.device)
        self.trunk = build_backbone(settings.model, state).to(self.device)
        self.pooling = settings.pooling
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)

    def embed_one(self, pixels: np.ndarray) -> np.ndarray:
        import torch

        from app.ml.encoder import pool_features

        with torch.inference_mode():
            x = torch.from_numpy(pixels.copy()).permute(2, 0, 1).contiguous()
            x = x.unsqueeze(0).to(self.device).float() / 255  # ToTensor(): contiguous NCHW
            fmap = self.trunk((x - self._mean) / self._std)
            vector = torch.nn.functional.normalize(pool_features(fmap, self.pooling), dim=1)
            return vector[0].cpu().numpy()


# -- runs -------------------------------------------------------------------------------------
@dataclass
class IngestRun:
    images: int
    seconds: float
    stages: dict[str, float]

    @property
    def rate(self) -> float:
        return self.images / self.seconds

    def figures(self) -> dict[str, float]:
        return {"images_per_s": self.rate, "seconds": self.seconds, **self.stages}


class BenchSink:
    """ChunkRunner's progress sink, in process: collects errors, never cancels."""

    def __init__(self) -> None:
        self.errors: list[FileError] = []

    def update(self, counts: ChunkCounts, errors: list[FileError]) -> None:
        del counts
        self.errors.extend(errors)

    def cancelled(self) -> bool:
        return False

    def write_lock(self) -> AbstractContextManager[object]:
        return contextlib.nullcontext()


def run_ours(settings: Settings, encoder: Encoder, folder: Path, store: VectorStore) -> IngestRun:
    """Our pipeline end to end: scan, stat, skip-unchanged lookup, decode, embed, upsert.

    Stages come from ChunkRunner's own timings. `decode` is the time the model waited for
    decoded images (decoding runs on threads ahead of it, so only what it fails to hide
    counts); `write`, likewise, is the time it waited for upserts (they run on a writer
    thread), plus the final flush (Milvus Lite only, as in jobs); `other` is scanning, stat
    and the skip-unchanged lookup.
    """
    from workers.pipeline import ChunkRunner, chunked, scan_folder

    sink = BenchSink()
    start = time.perf_counter()
    found = scan_folder(folder, [folder])
    runner = ChunkRunner(settings, encoder, store, job_id="bench")
    indexed = 0
    for chunk in chunked(found.files, settings.chunk_size_for(encoder.device.type)):
        indexed += runner.run(chunk, sink).indexed
    finishing = time.perf_counter()
    store.finish_load()  # as the job's finalize step does
    end = time.perf_counter()
    problems = [f"{e.path}: {e.reason}" for e in [*found.errors, *sink.errors]]
    return pipeline_run(
        "our pipeline",
        indexed,
        len(found.files),
        problems,
        runner.timings,
        finishing=end - finishing,
        seconds=end - start,
    )


def pipeline_run(
    who: str,
    indexed: int,
    total: int,
    problems: list[str],
    timings: dict[str, float],
    finishing: float,
    seconds: float,
) -> IngestRun:
    """A run of our pipeline from ChunkRunner's `timings` and the seconds spent finishing the
    load (stages as in `run_ours`); fails the bench unless all `total` files were indexed."""
    if problems or indexed != total:
        raise BenchError(f"{who} indexed {indexed}/{total} files: " + "; ".join(problems[:5]))
    stages = {
        "decode": timings["decode_wait"],
        "embed": timings["embed"],
        "write": timings["write"] + finishing,
    }
    stages["other"] = max(0.0, seconds - sum(stages.values()))
    return IngestRun(indexed, seconds, stages)


def run_naive(
    settings: Settings, naive: NaiveEncoder, folder: Path, store: VectorStore, limit: int
) -> tuple[IngestRun, dict[str, np.ndarray]]:
    """The seed's loop: for each file, read, full decode, embed alone, upsert alone; then
    one flush on Milvus Lite, as our pipeline's job does at its end. Only the first `limit`
    files."""
    import hashlib

    from app.core.vectorstore import ImageRow, image_id
    from app.ml.imageio import has_image_extension

    clock = _Clock()
    vectors: dict[str, np.ndarray] = {}
    start = time.perf_counter()
    with clock("other"):
        paths = sorted(p for p in folder.rglob("*") if has_image_extension(p.name))[:limit]
    for path in paths:
        with clock("decode"):
            resolved = str(path.resolve())
            st = path.stat()
            data = path.read_bytes()
            pixels = naive_decode(data, settings.image_size)
        with clock("embed"):
            vector = naive.embed_one(pixels)
        row = ImageRow(
            id=image_id(resolved),
            vector=vector.tolist(),
            path=resolved,
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
            content_hash=hashlib.blake2b(data, digest_size=16).hexdigest(),
            job_id="bench-naive",
        )
        with clock("write"):
            store.upsert([row])
        vectors[row["id"]] = vector
    with clock("write"):
        store.finish_load()
    seconds = time.perf_counter() - start
    stages = {s: clock.totals[s] for s in STAGES}
    return IngestRun(len(paths), seconds, stages), vectors


# -- stores -----------------------------------------------------------------------------------
def make_store(
    settings: Settings, collection: str, encoder: Encoder | None, dim: int
) -> VectorStore:
    """A fresh (emptied) collection for `encoder`'s vectors, or for synthetic ones of `dim`."""
    from app.core.vectorstore import CollectionMeta, VectorStore
    from app.ml.registry import meta_for

    if encoder is not None:
        meta = meta_for(encoder, settings)
    else:
        meta = CollectionMeta(model="synthetic", weights_id="synthetic", dim=dim, recipe="")
    store = VectorStore(settings, meta, name=collection)
    reset_store(store)
    return store


def reset_store(store: VectorStore) -> None:
    store.drop()
    store.ensure_collection()


def fetch_vectors(store: VectorStore, ids: Sequence[str]) -> dict[str, np.ndarray]:
    import numpy as np

    client = store.conn.client()
    found: dict[str, np.ndarray] = {}
    for i in range(0, len(ids), 500):
        rows = client.get(store.name, ids=list(ids[i : i + 500]), output_fields=["vector"])
        for row in rows:
            found[str(row["id"])] = np.asarray(row["vector"], dtype=np.float32)
    return found


@dataclass(frozen=True)
class MilvusTarget:
    settings: Settings  # pointing at the server
    name: str
    pid: int | None = None  # the Milvus Lite server we started, if any


@contextlib.contextmanager
def milvus_lite(settings: Settings, workdir: Path) -> Iterator[MilvusTarget]:
    """A fresh Milvus Lite server under `workdir`, stopped on exit."""
    from app.launcher import milvus_argv, spawn, wait_for_port

    port = free_port()
    lite = bench_settings(settings, data_dir=workdir, embedded_milvus_port=port, milvus_uri=None)
    log_dir = workdir / "logs"
    (workdir / "milvus").mkdir(parents=True, exist_ok=True)
    proc = spawn("milvus", milvus_argv(lite), os.environ, log_dir, stop_timeout=30)
    try:
        wait_for_port(proc, port, 90, log_dir)
        yield MilvusTarget(lite, "milvus-lite", proc.popen.pid)
    finally:
        proc.stop()


def milvus_target(settings: Settings, workdir: Path) -> AbstractContextManager[MilvusTarget]:
    if settings.milvus_uri:
        return contextlib.nullcontext(MilvusTarget(settings, settings.milvus_uri))
    return milvus_lite(settings, workdir)


def _tree_cpu_seconds(pid: int) -> float | None:
    """CPU seconds used so far by process `pid` and its descendants (Linux), or None."""
    try:
        parents: dict[int, int] = {}
        used: dict[int, float] = {}
        tick = os.sysconf("SC_CLK_TCK")
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                    parents[int(entry.name)] = int(fields[1])
                    used[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    except (OSError, ValueError):
        return None
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        tree.update(children)
        frontier.extend(children)
    return sum(used.get(p, 0.0) for p in tree)


def settle(store: VectorStore, pid: int | None, timeout: float) -> tuple[float, bool]:
    """Wait until the collection's index is built; returns the seconds waited and whether
    it was built in `timeout` (if not, searches are measured during the build: flagged).

    Milvus builds indexes in the background after a flush, and searches meanwhile run
    slower (HNSW on Milvus Lite: ~400 ms for ~50 s, then ~60 ms). Polls the index progress,
    and for a Milvus Lite server we started, waits for it to go idle (< 0.2 cores over 2 s).
    """
    start = time.monotonic()
    client = store.conn.client()
    built = False
    while not built and time.monotonic() - start < timeout:
        info = client.describe_index(store.name, "vector")
        built = int(info.get("pending_index_rows", 0)) == 0 and int(
            info.get("indexed_rows", 0)
        ) >= int(info.get("total_rows", 0))
        if not built:
            time.sleep(1)
    while built and pid is not None and time.monotonic() - start < timeout:
        before = _tree_cpu_seconds(pid)
        time.sleep(2)
        after = _tree_cpu_seconds(pid)
        if before is None or after is None or after - before < 0.4:
            break
    return time.monotonic() - start, built


# -- model figures ----------------------------------------------------------------------------
def count_macs(trunk: torch.nn.Module, image_size: int) -> float:
    """Multiply-accumulates of one `image_size`² image through `trunk`'s convolutions."""
    import torch

    total = 0.0

    def hook(module: torch.nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(module, torch.nn.Conv2d)
        kh, kw = module.kernel_size
        total += output.numel() * (module.in_channels // module.groups) * kh * kw

    convs = [m for m in trunk.modules() if isinstance(m, torch.nn.Conv2d)]
    handles = [m.register_forward_hook(hook) for m in convs]
    try:
        with torch.inference_mode():
            device = next(trunk.parameters()).device
            trunk(torch.zeros(1, 3, image_size, image_size, device=device))
    finally:
        for handle in handles:
            handle.remove()
    return total


def matmul_peak_gflops(dtype: torch.dtype, device: torch.device, reps: int = 8) -> float:
    """Best observed GFLOP/s of a square matmul in `dtype`: the machine's practical peak."""
    import torch

    n = 4096 if device.type == "cuda" else 2048
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    best = float("inf")
    with torch.inference_mode():
        for _ in range(reps + 1):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            a @ b
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


# -- quality ----------------------------------------------------------------------------------
def top_k_overlap(a: np.ndarray, b: np.ndarray, k: int = TOP_K) -> float:
    """Mean fraction of each item's top-k neighbours (itself excluded) shared by a and b."""
    import numpy as np

    k = min(k, len(a) - 1)
    if k < 1:
        return 1.0
    tops = []
    for vectors in (a, b):
        sims = vectors @ vectors.T
        np.fill_diagonal(sims, -np.inf)
        tops.append(np.argsort(-sims, axis=1, kind="stable")[:, :k])
    shared = [len(set(x) & set(y)) / k for x, y in zip(tops[0], tops[1], strict=True)]
    return float(np.mean(shared))


def agreement(ours: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """How close our vectors are to the reference ones, row by row (same images)."""
    import numpy as np

    cosine = (ours * reference).sum(axis=1)
    return {
        "cosine_mean": float(cosine.mean()),
        "cosine_p1": float(np.percentile(cosine, 1)),
        "cosine_min": float(cosine.min()),
        "top10_overlap": top_k_overlap(ours, reference),
    }


# -- search latency ---------------------------------------------------------------------------
def query_latency(
    settings: Settings,
    encoder: Encoder,
    store: VectorStore,
    query: bytes,
    count: int,
    probes: np.ndarray | None = None,
    exact: np.ndarray | None = None,
) -> dict[str, float]:
    """p50/p99 over `count` queries: end to end (decode + embed + search) and search alone.

    With `probes` (WARMUP_QUERIES + count vectors), each query is preceded by a search for
    a probe, which gives the search-alone figures (and recall@10 against `exact`, the
    collection's vectors when known); interleaving keeps both under the same conditions.
    """
    import numpy as np

    from app.core.vectorstore import image_id
    from app.ml.imageio import decode_image

    totals: list[float] = []
    embeds: list[float] = []
    searches: list[float] = []
    recalls: list[float] = []
    truths: list[set[str]] = []
    if probes is not None and exact is not None:
        # Up front: a matmul over the collection between a search and the next embedding
        # would leave BLAS threads competing with the model's and slow it down ~2x.
        best = np.argsort(-(probes @ exact.T), axis=1, kind="stable")[:, :TOP_K]
        truths = [{image_id(f"/bench/{j}") for j in row} for row in best]
    for i in range(WARMUP_QUERIES + count):
        measured = i >= WARMUP_QUERIES
        if probes is not None:
            probe = probes[i]
            start = time.perf_counter()
            hits = store.search(probe, TOP_K)
            if measured:
                searches.append(time.perf_counter() - start)
            if measured and truths:
                recalls.append(len(truths[i] & {h.id for h in hits}) / TOP_K)
        start = time.perf_counter()
        image = decode_image(query, size=settings.image_size, max_pixels=10**9)
        vector = encoder.embed(image.pixels[None])[0]
        embedded = time.perf_counter()
        hits = store.search(vector, TOP_K)
        done = time.perf_counter()
        if not hits:
            raise BenchError("search returned no hits")
        if measured:
            totals.append(done - start)
            embeds.append(embedded - start)
            if probes is None:
                searches.append(done - embedded)
    figures = {
        "query_p50_ms": percentile(totals, 50) * 1000,
        "query_p99_ms": percentile(totals, 99) * 1000,
        "embed_p50_ms": percentile(embeds, 50) * 1000,
        "search_p50_ms": percentile(searches, 50) * 1000,
        "search_p99_ms": percentile(searches, 99) * 1000,
    }
    if recalls:
        figures["recall_at_10"] = float(np.mean(recalls))
    return figures


# -- the two modes ----------------------------------------------------------------------------
@dataclass
class BenchOptions:
    images: Path | None = None
    count: int = 200
    model: str | None = None
    weights: str = "random"
    device: str | None = None
    batch_size: int | None = None
    precision: str | None = None
    repeat: int = 3
    queries: int = 50
    sizes: list[int] = field(default_factory=lambda: [10_000, 100_000])
    compile: bool = False
    index_type: str | None = None
    max_side: int | None = None
    naive_count: int | None = None
    processes: int = 1
    skip_lite: bool = False


def _model_settings(base: Settings, opts: BenchOptions, **extra: Any) -> Settings:
    overrides: dict[str, Any] = {"weights": opts.weights, **extra}
    for key in ("model", "device", "batch_size", "precision", "index_type"):
        value = getattr(opts, key)
        if value is not None:
            overrides[key] = value
    return bench_settings(base, **overrides)


def warm_up(encoder: Encoder, settings: Settings, count: int) -> None:
    """Run the batch shapes a load of `count` files will use, so no timing includes their
    first-call costs (cuDNN autotuning, torch.compile)."""
    import numpy as np

    size = settings.batch_size_for(encoder.device.type)
    shapes = {min(size, count), count % size, 1} - {0}
    for n in sorted(shapes):
        encoder.embed(np.zeros((n, settings.image_size, settings.image_size, 3), np.uint8))


def bench_ingest(
    base: Settings, opts: BenchOptions, say: Callable[[str], None] = lambda _: None
) -> dict[str, Any]:
    """Ingest mode; returns the report (see the module docstring)."""
    import numpy as np
    import torch

    from app.bench_processes import ProcessPool
    from app.ml.encoder import Encoder

    if opts.images is None or not opts.images.is_dir():
        raise BenchError(f"--images must be a folder of photos, got {opts.images}")
    with tempfile.TemporaryDirectory(prefix="picsearch-bench-") as tmp:
        work = Path(tmp)
        folder = (work / "images").resolve()
        files = prepare_images(opts.images, opts.count, folder, opts.max_side)
        naive_count = min(opts.naive_count or len(files), len(files))
        settings = _model_settings(base, opts, image_roots=[folder], data_dir=work)
        say(f"{len(files)} images from {opts.images}; building {settings.model} encoders")
        encoder = Encoder(settings, compile=opts.compile or settings.torch_compile)
        naive = NaiveEncoder(settings)
        warm_up(encoder, settings, len(files))
        naive.embed_one(np.zeros((settings.image_size, settings.image_size, 3), np.uint8))
        macs = count_macs(naive.trunk, settings.image_size)
        dtypes = {torch.float32, encoder.dtype}
        say("measuring the matmul peak")
        peaks = {d: matmul_peak_gflops(d, encoder.device) for d in dtypes}
        query = query_jpeg(files[0])
        token = secrets.token_hex(4)
        ours_runs: list[IngestRun] = []
        naive_runs: list[IngestRun] = []
        parallel_runs: list[IngestRun] = []
        with milvus_target(settings, work) as target, contextlib.ExitStack() as cleanup:
            ours_store = make_store(target.settings, f"bench_{token}_ours", encoder, 0)
            naive_store = make_store(target.settings, f"bench_{token}_naive", encoder, 0)
            stores = [ours_store, naive_store]
            pool = None
            try:
                if opts.processes > 1:
                    stores.append(make_store(target.settings, f"bench_{token}_procs", encoder, 0))
                    say(f"starting {opts.processes} pipeline processes")
                    pool = ProcessPool(
                        target.settings,
                        opts.processes,
                        stores[2].name,
                        opts.compile or settings.torch_compile,
                        len(files),
                    )
                    cleanup.callback(pool.close)
                for r in range(opts.repeat):
                    if r:
                        for store in stores:
                            reset_store(store)
                    ours_runs.append(run_ours(settings, encoder, folder, ours_store))
                    naive_run, naive_vectors = run_naive(
                        settings, naive, folder, naive_store, naive_count
                    )
                    naive_runs.append(naive_run)
                    message = (
                        f"run {r + 1}/{opts.repeat}: ours {ours_runs[-1].rate:.2f} img/s, "
                        f"naive {naive_run.rate:.2f} img/s"
                    )
                    if pool is not None:
                        chunk = settings.chunk_size_for(encoder.device.type)
                        parallel_runs.append(pool.run(folder, stores[2], chunk))
                        message += f", {opts.processes} processes {parallel_runs[-1].rate:.2f}"
                    say(message)
                ids = sorted(naive_vectors)
                ours_vectors = fetch_vectors(ours_store, ids)
                search_runs = [
                    query_latency(settings, encoder, ours_store, query, opts.queries)
                    for _ in range(opts.repeat)
                ]
                collection_size = ours_store.count()
            finally:
                for store in stores:
                    with contextlib.suppress(Exception):
                        store.drop()
            backend = target.name if target.pid is None else "milvus-lite (temporary)"
        say("measuring the matmul peak again (the best of both counts)")
        peak = {
            str(d).removeprefix("torch."): max(peaks[d], matmul_peak_gflops(d, encoder.device))
            for d in dtypes
        }
    ours = median_dict([run.figures() for run in ours_runs])
    ref = median_dict([run.figures() for run in naive_runs])
    gmac = macs / 1e9
    ours_gflops = 2 * gmac * len(files) / ours["embed"]
    naive_gflops = 2 * gmac * naive_count / ref["embed"]
    precision = encoder.info.precision
    parallel: dict[str, Any] | None = None
    if parallel_runs:
        figures = median_dict([run.figures() for run in parallel_runs])
        parallel = {
            "processes": opts.processes,
            **figures,
            "speedup": figures["images_per_s"] / ref["images_per_s"],
            "images_per_s_runs": [r.rate for r in parallel_runs],
        }
    return {
        "mode": "ingest",
        "config": {
            "images": str(opts.images),
            "count": len(files),
            "model": settings.model,
            "weights": encoder.info.weights_id,
            "device": encoder.info.device,
            "precision": precision,
            "runtime": encoder.info.runtime,
            "naive_count": naive_count,
            "max_side": opts.max_side,
            "batch_size": settings.batch_size_for(encoder.device.type),
            "chunk_size": settings.chunk_size_for(encoder.device.type),
            "decode_threads": settings.effective_decode_threads,
            "gpu_decode": encoder.device.type == "cuda" and settings.gpu_decode,
            "torch_threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
            "image_size": settings.image_size,
            "repeat": opts.repeat,
            "queries": opts.queries,
            "milvus": backend,
            "processes": opts.processes,
        },
        "ours": ours,
        "ours_processes": parallel,
        "naive": ref,
        "speedup": ours["images_per_s"] / ref["images_per_s"],
        "runs": {
            "ours_images_per_s": [r.rate for r in ours_runs],
            "naive_images_per_s": [r.rate for r in naive_runs],
            "speedup": [o.rate / n.rate for o, n in zip(ours_runs, naive_runs, strict=True)],
        },
        "model_flops": {
            "gmac_per_image": gmac,
            "ours_gflops": ours_gflops,
            "naive_gflops": naive_gflops,
            "peak_gflops": peak,
            "ours_fraction_of_peak": ours_gflops / peak[precision],
            "naive_fraction_of_peak": naive_gflops / peak["float32"],
        },
        "search": {
            "collection_size": collection_size,
            "query": f"{QUERY_SIZE[0]}x{QUERY_SIZE[1]} JPEG",
            **median_dict(search_runs),
        },
        "vectors_vs_naive_fp32": agreement(
            np.stack([ours_vectors[i] for i in ids]), np.stack([naive_vectors[i] for i in ids])
        ),
    }


def synthetic_centres(size: int, dim: int, seed: int) -> np.ndarray:
    """Cluster centres of a synthetic collection: one per 100 vectors (at least 10)."""
    import numpy as np

    centres = np.random.default_rng(seed).normal(size=(max(10, size // 100), dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    return centres.astype(np.float32)


def synthetic_vectors(centres: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` unit vectors scattered around random `centres` (cosine ~0.8 to their centre).

    Photos' features cluster (similar scenes); uniform random vectors would not, and would
    make approximate indexes look far worse than they are on real collections.
    """
    import numpy as np

    dim = centres.shape[1]
    noise = rng.normal(size=(n, dim)).astype(np.float32) * (SYNTHETIC_SPREAD / dim**0.5)
    vectors: np.ndarray = centres[rng.integers(len(centres), size=n)] + noise
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def insert_synthetic(
    store: VectorStore, centres: np.ndarray, size: int, seed: int, keep: bool = False
) -> tuple[float, np.ndarray | None]:
    """Upsert `size` synthetic vectors in batches, then flush.

    Returns the seconds it took, and the vectors (row i is `/bench/i`) when `keep`.
    """
    import numpy as np

    from app.core.vectorstore import ImageRow, image_id

    rng = np.random.default_rng(seed)
    elapsed = 0.0
    kept: list[np.ndarray] = []
    for first in range(0, size, INSERT_BATCH):
        n = min(INSERT_BATCH, size - first)
        vectors = synthetic_vectors(centres, n, rng)
        if keep:
            kept.append(vectors)
        rows = [
            ImageRow(
                id=image_id(f"/bench/{first + i}"),
                vector=v,
                path=f"/bench/{first + i}.jpg",
                size=0,
                mtime_ns=0,
                content_hash="",
                job_id="bench",
            )
            for i, v in enumerate(vectors.tolist())
        ]
        start = time.perf_counter()
        store.upsert(rows)
        elapsed += time.perf_counter() - start
    start = time.perf_counter()
    store.flush()  # sealed segments: Milvus Lite searches unflushed rows ~10x slower
    counted = store.count()
    elapsed += time.perf_counter() - start
    if counted != size:
        raise BenchError(f"collection holds {counted} vectors after inserting {size}")
    return elapsed, np.concatenate(kept) if keep else None


def bench_index(
    base: Settings, opts: BenchOptions, say: Callable[[str], None] = lambda _: None
) -> dict[str, Any]:
    """Index mode; returns the report (see the module docstring)."""
    from app.ml.encoder import Encoder

    settings = _model_settings(base, opts)
    if opts.skip_lite and not settings.milvus_uri:
        raise BenchError("--skip-lite leaves nothing to measure without PICSEARCH_MILVUS_URI")
    say(f"building the {settings.model} encoder for the query embedding")
    encoder = Encoder(settings, compile=opts.compile)
    warm_up(encoder, settings, 1)
    sample = None
    if opts.images is not None:
        sample = next(iter(prepare_sample(opts.images)), None)
    query = query_jpeg(sample)
    token = secrets.token_hex(4)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="picsearch-bench-") as tmp:
        targets: list[AbstractContextManager[MilvusTarget]] = []
        if not opts.skip_lite:
            targets.append(milvus_lite(bench_settings(settings, milvus_uri=None), Path(tmp)))
        if settings.milvus_uri:
            targets.append(contextlib.nullcontext(MilvusTarget(settings, settings.milvus_uri)))
        for context in targets:
            with context as target:
                results.extend(
                    _index_size(target, encoder, size, query, opts, f"bench_{token}", say)
                    for size in opts.sizes
                )
    return {
        "mode": "index",
        "config": {
            "model": settings.model,
            "dim": encoder.info.dim,
            "device": encoder.info.device,
            "precision": encoder.info.precision,
            "runtime": encoder.info.runtime,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
            "repeat": opts.repeat,
            "queries": opts.queries,
            "query": f"{QUERY_SIZE[0]}x{QUERY_SIZE[1]} JPEG",
            "synthetic_vectors": f"clustered: {SYNTHETIC_SPREAD} noise around 1 centre per 100",
        },
        "results": results,
    }


def _index_size(
    target: MilvusTarget,
    encoder: Encoder,
    size: int,
    query: bytes,
    opts: BenchOptions,
    prefix: str,
    say: Callable[[str], None],
) -> dict[str, Any]:
    import numpy as np

    store = make_store(target.settings, f"{prefix}_{size}", None, encoder.info.dim)
    try:
        say(f"{target.name}: inserting {size:,} vectors")
        centres = synthetic_centres(size, encoder.info.dim, seed=size)
        seconds, exact = insert_synthetic(store, centres, size, size, size <= RECALL_MAX_SIZE)
        probe_rng = np.random.default_rng(size + 1)
        probes = [
            synthetic_vectors(centres, WARMUP_QUERIES + opts.queries, probe_rng)
            for _ in range(opts.repeat)
        ]
        # A fixed 300 s was far too short at 1M (Milvus 2.3.5 on 2 vCPUs: still building after
        # 25 min); whatever the wait, the report says whether the build finished.
        waited, built = settle(store, target.pid, timeout=max(300.0, size * SETTLE_S_PER_VECTOR))
        state = f"ready after {waited:.0f} s" if built else f"NOT built after {waited:.0f} s"
        say(f"{target.name}: index {state}; {opts.repeat}x{opts.queries} queries")
        runs = [
            query_latency(target.settings, encoder, store, query, opts.queries, batch, exact)
            for batch in probes
        ]
    finally:
        with contextlib.suppress(Exception):
            store.drop()
    return {
        "backend": target.name,
        "index_type": target.settings.effective_index_type,
        "size": size,
        "insert_vectors_per_s": size / seconds,
        "index_ready_s": waited,
        "index_built": built,
        **median_dict(runs),
    }


def prepare_sample(folder: Path) -> list[Path]:
    from app.ml.imageio import has_image_extension

    return sorted(p for p in folder.rglob("*") if p.is_file() and has_image_extension(p.name))


# -- output -----------------------------------------------------------------------------------
def _fmt(value: float, digits: int = 2) -> str:
    return f"{value:,.{digits}f}"


def render(report: dict[str, Any]) -> list[Any]:
    """Rich tables for a report."""
    from rich.table import Table

    cfg = report["config"]
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
            "  in each run",
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
    peaks = flops["peak_gflops"]
    main.add_row(
        "model GFLOP/s (% of matmul peak)",
        f"{_fmt(flops['ours_gflops'], 0)} ({flops['ours_fraction_of_peak']:.0%})",
        f"{_fmt(flops['naive_gflops'], 0)} ({flops['naive_fraction_of_peak']:.0%})",
        "",
    )
    extra = Table(title="Model, search and vectors")
    extra.add_column("measure")
    extra.add_column("value", justify="right")
    extra.add_row("model cost per image", f"{flops['gmac_per_image']:.2f} GMAC")
    for dtype, peak in peaks.items():
        extra.add_row(f"matmul peak {dtype}", f"{_fmt(peak, 0)} GFLOP/s")
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
    quality = report["vectors_vs_naive_fp32"]
    extra.add_row(
        "cosine to naive fp32 vectors: mean / p1 / min",
        f"{quality['cosine_mean']:.5f} / {quality['cosine_p1']:.5f} / {quality['cosine_min']:.5f}",
    )
    extra.add_row("top-10 overlap with naive fp32 ranking", f"{quality['top10_overlap']:.1%}")
    extra.add_row("milvus", cfg["milvus"])
    extra.add_row("OMP_WAIT_POLICY", cfg["omp_wait_policy"])
    return [main, extra]


# -- command ----------------------------------------------------------------------------------
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
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON, not tables.")] = False,
    ) -> None:
        """Measure ingest (ours vs. a naive reference) and search, or the index alone."""
        from pydantic import ValidationError
        from rich.console import Console

        from app.core.config import get_settings
        from app.core.errors import PicsearchError

        err = Console(stderr=True)
        opts = BenchOptions(
            images=images,
            count=count,
            model=model,
            weights=weights,
            device=device,
            batch_size=batch_size,
            precision=precision,
            repeat=repeat,
            queries=queries,
            sizes=_parse_sizes(sizes),
            compile=compile_model,
            index_type=index_type,
            max_side=max_side,
            naive_count=naive_count,
            processes=processes,
            skip_lite=skip_lite,
        )

        def say(message: str) -> None:
            err.print(f"[dim]bench:[/dim] {message}")

        try:
            base = get_settings()
            if index_only:
                report = bench_index(base, opts, say)
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
