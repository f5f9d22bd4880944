"""Ingest mode (default): a folder of photos, sampled or repeated to N files in a temporary
folder, is loaded once as a collection's first load (calibrating int8 where the service
would: `int8.py`), then indexed R times by our pipeline (`ChunkRunner`: decoding on threads
ahead of batched inference, batched upserts) and R times by the naive loop (`naive.py`),
interleaved so both see the same machine noise. It reports medians of: images/s end to end
and the ratio, the time split by stage, model FLOP/s against the machine's measured peak,
search latency at the collection's size (or `--search-size`, topped up with synthetic
vectors) for a 500x375 JPEG query (decoding and embedding included), and how close our
vectors are to the naive fp32 ones (cosine, top-10 overlap). With `--during-load`, also
search latency while worker processes load the photos (`during_load.py`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from app.bench.common import QUERY_SIZE, machine, median_dict
from app.bench.during_load import queries_during_loads
from app.bench.images import query_jpeg
from app.bench.index import SETTLE_S_PER_VECTOR, insert_synthetic, synthetic_centres
from app.bench.int8 import first_load
from app.bench.latency import query_latency
from app.bench.naive import NaiveEncoder, run_naive
from app.bench.options import BenchOptions
from app.bench.peak import count_macs, peak_gflops
from app.bench.processes import ProcessPool
from app.bench.quality import agreement
from app.bench.runs import IngestRun, run_ours
from app.bench.setup import photo_bench
from app.bench.stores import fetch_vectors, make_store, milvus_target, reset_store, settle

if TYPE_CHECKING:
    from app.core.config import Settings


def bench_ingest(
    base: Settings, opts: BenchOptions, say: Callable[[str], None] = lambda _: None
) -> dict[str, Any]:
    """Ingest mode; returns the report (see the module docstring)."""
    import numpy as np
    import torch

    with photo_bench(base, opts, say, opts.compile or base.torch_compile) as bench:
        work, folder, files, settings = bench.work, bench.folder, bench.files, bench.settings
        encoder, query_encoder = bench.encoder, bench.query_encoder
        naive_count = min(opts.naive_count or len(files), len(files))
        naive = NaiveEncoder(settings)
        naive.embed_one(np.zeros((settings.image_size, settings.image_size, 3), np.uint8))
        macs = count_macs(naive.trunk, settings.image_size)
        dtypes = {torch.float32, encoder.dtype}
        say("measuring the peak (matmul and 3x3 convolution)")
        peaks = {d: peak_gflops(d, encoder.device) for d in dtypes}
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
            pool_runtime = ""
            try:
                int8 = first_load(settings, encoder, query_encoder, folder, ours_store, say)
                loader = int8.batch
                if opts.processes > 1:
                    stores.append(make_store(target.settings, f"bench_{token}_procs", encoder, 0))
                    say(f"starting {opts.processes} pipeline processes")
                    pool = ProcessPool(
                        target.settings,
                        opts.processes,
                        stores[2].name,
                        opts.compile or settings.torch_compile,
                        len(files),
                        int8_of=ours_store if loader is not encoder else None,
                    )
                    cleanup.callback(pool.close)
                    pool_runtime = ", ".join(sorted(pool.runtimes))
                for r in range(opts.repeat):
                    if r:
                        for store in stores:
                            reset_store(store)
                    ours_runs.append(run_ours(settings, loader, folder, ours_store))
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
                if opts.search_size and opts.search_size > ours_store.count():
                    extra = opts.search_size - ours_store.count()
                    say(f"adding {extra:,} synthetic vectors for the query latency")
                    dim = encoder.info.dim
                    centres = synthetic_centres(opts.search_size, dim, seed=dim)
                    insert_synthetic(ours_store, centres, extra, seed=opts.search_size)
                    # as index mode: searches during the index build would be slower
                    timeout = max(300.0, opts.search_size * SETTLE_S_PER_VECTOR)
                    settle(ours_store, target.pid, timeout)
                search_runs = [
                    query_latency(settings, int8.query, ours_store, query, opts.queries)
                    for _ in range(opts.repeat)
                ]
                collection_size = ours_store.count()
                during_load = None
                if opts.during_load:
                    during_load = queries_during_loads(
                        target.settings,
                        encoder,
                        int8.query,
                        ours_store,
                        folder,
                        len(files),
                        query,
                        opts.repeat,
                        ours_store if loader is not encoder else None,
                        say,
                    )
            finally:
                for store in stores:
                    with contextlib.suppress(Exception):
                        store.drop()
            backend = target.name if target.pid is None else "milvus-lite (temporary)"
        say("measuring the peak again (the best of both counts)")
        peak = {
            str(d).removeprefix("torch."): max(peaks[d], peak_gflops(d, encoder.device))
            for d in dtypes
        }
    ours = median_dict([run.figures() for run in ours_runs])
    ref = median_dict([run.figures() for run in naive_runs])
    gmac = macs / 1e9
    ours_gflops = 2 * gmac * len(files) / ours["embed"]
    naive_gflops = 2 * gmac * naive_count / ref["embed"]
    precision = loader.info.precision
    parallel: dict[str, Any] | None = None
    if parallel_runs:
        figures = median_dict([run.figures() for run in parallel_runs])
        parallel = {
            "processes": opts.processes,
            "runtime": pool_runtime,
            **figures,
            "speedup": figures["images_per_s"] / ref["images_per_s"],
            "images_per_s_runs": [r.rate for r in parallel_runs],
        }
    return {
        "mode": "ingest",
        "machine": machine(loader, int8.query),
        "config": {
            "images": str(opts.images),
            "count": len(files),
            "model": settings.model,
            "weights": encoder.info.weights_id,
            "device": encoder.info.device,
            "precision": precision,
            "runtime": loader.info.runtime,
            "int8": int8.report,
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
        "first_load": None if int8.first_load is None else int8.first_load.figures(),
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
            # no int8 peak is measured: int8 figures are GOP/s without a fraction
            "ours_fraction_of_peak": ours_gflops / peak[precision] if precision in peak else None,
            "naive_fraction_of_peak": naive_gflops / peak["float32"],
        },
        "search": {
            "collection_size": collection_size,
            "query": f"{QUERY_SIZE[0]}x{QUERY_SIZE[1]} JPEG",
            **median_dict(search_runs),
        },
        "search_during_load": during_load,
        "vectors_vs_naive_fp32": agreement(
            np.stack([ours_vectors[i] for i in ids]), np.stack([naive_vectors[i] for i in ids])
        ),
    }
