"""Index mode (`--index-only`): synthetic unit vectors at several collection sizes; insert
rate, search latency (vector only, with recall@10, and for the JPEG query end to end).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.bench.common import QUERY_SIZE, WARMUP_QUERIES, BenchError, machine, median_dict
from app.bench.images import prepare_sample, query_jpeg
from app.bench.latency import query_latency
from app.bench.options import BenchOptions, model_settings
from app.bench.runs import warm_up
from app.bench.stores import MilvusTarget, make_store, milvus_lite, settle
from app.measure.options import settings_with

if TYPE_CHECKING:
    import numpy as np

    from app.core.config import Settings
    from app.core.vectorstore import VectorStore
    from app.ml.encoder import Encoder


INSERT_BATCH = 1000
SETTLE_S_PER_VECTOR = 0.002  # how long index mode waits for an index build: 2,000 s at 1M
RECALL_MAX_SIZE = 200_000  # index mode checks recall@10 exactly up to this many vectors
SYNTHETIC_SPREAD = 0.75  # noise norm around a cluster centre (unit vectors)


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
    """Upsert `size` synthetic vectors in batches (beside any rows `store` holds), then flush.

    Returns the seconds it took, and the vectors (row i is `/bench/i`) when `keep`.
    """
    import numpy as np

    from app.core.vectorstore import ImageRow, image_id

    rng = np.random.default_rng(seed)
    before = store.count()
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
    if counted != before + size:
        raise BenchError(f"collection holds {counted} vectors after adding {size} to {before}")
    return elapsed, np.concatenate(kept) if keep else None


def bench_index(
    base: Settings, opts: BenchOptions, say: Callable[[str], None] = lambda _: None
) -> dict[str, Any]:
    """Index mode; returns the report (see the module docstring)."""
    from app.ml.encoder import Encoder

    settings = model_settings(base, opts)
    if opts.skip_lite and not settings.milvus_uri:
        raise BenchError("--skip-lite leaves nothing to measure without PICSEARCH_MILVUS_URI")
    say(f"building the {settings.model} encoder for the query embedding")
    encoder = Encoder(settings, compile=opts.compile, purpose="query")
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
            targets.append(milvus_lite(settings_with(settings, milvus_uri=None), Path(tmp)))
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
        "machine": machine(None, encoder),
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
