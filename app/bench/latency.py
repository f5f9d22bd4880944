"""Search latency: the JPEG query end to end (decode + embed + search), and search alone."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from app.bench.common import TOP_K, WARMUP_QUERIES, BenchError, percentile

if TYPE_CHECKING:
    import numpy as np

    from app.core.config import Settings
    from app.core.vectorstore import VectorStore
    from app.ml.encoder import Encoder


def timed_query(
    settings: Settings, encoder: Encoder, store: VectorStore, query: bytes
) -> tuple[float, float]:
    """One search for the JPEG `query` as the API runs it: the seconds to its vector (decode +
    embed) and in all (with the search)."""
    from app.ml.imageio import decode_image

    start = time.perf_counter()
    image = decode_image(query, size=settings.image_size, max_pixels=10**9)
    vector = encoder.embed(image.pixels[None])[0]
    embedded = time.perf_counter()
    hits = store.search(vector, TOP_K)
    done = time.perf_counter()
    if not hits:
        raise BenchError("search returned no hits")
    return embedded - start, done - start


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
        embed_s, total_s = timed_query(settings, encoder, store, query)
        if measured:
            totals.append(total_s)
            embeds.append(embed_s)
            if probes is None:
                searches.append(total_s - embed_s)
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
