"""Prometheus metrics.

The API process owns its metrics (requests, search stages, query batch sizes). Workers run
on other processes and machines, so they *push through Redis*: each batch increments
per-worker counters in one Redis hash, each finished job adds to a duration histogram there,
and the API's `/metrics` reads those back at scrape time (with the queue depth and the
vector counts). One scrape of the API therefore shows the whole installation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import redis
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from app.core.jobs import PREFIX, TASK_QUEUE

WORKER_KEY = f"{PREFIX}metrics:workers"
JOB_SECONDS_KEY = f"{PREFIX}metrics:job_seconds"
JOB_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0)
WORKER_COUNTERS = {
    "images_embedded": "Images embedded and upserted",
    "images_failed": "Files that could not be read or decoded",
    "batches": "Forward passes run on load batches",
    "batch_images": "Images in those forward passes (divide by batches for the mean size)",
    "decode_wait_seconds": "Seconds the model waited for decoded images",
    "embed_seconds": "Seconds spent in the model",
    "write_seconds": "Seconds the model waited for the previous batch's Milvus write",
}


class WorkerMetrics:
    """Worker side: add this process's work to the shared counters in Redis."""

    def __init__(self, client: redis.Redis[str], worker: str) -> None:
        self.r = client
        self.worker = worker

    def add(self, **amounts: float) -> None:
        pipe = self.r.pipeline()
        for name, amount in amounts.items():
            if name not in WORKER_COUNTERS:
                raise ValueError(f"unknown worker metric {name}")
            if amount:
                pipe.hincrbyfloat(WORKER_KEY, f"{self.worker}|{name}", amount)
        pipe.execute()

    def observe_job(self, seconds: float) -> None:
        pipe = self.r.pipeline()
        for bound in JOB_BUCKETS:
            if seconds <= bound:
                pipe.hincrby(JOB_SECONDS_KEY, str(bound), 1)
        pipe.hincrby(JOB_SECONDS_KEY, "+Inf", 1)
        pipe.hincrbyfloat(JOB_SECONDS_KEY, "sum", seconds)
        pipe.execute()


class RedisCollector(Collector):
    """API side: expose what workers pushed, the task queue depth and vector counts."""

    def __init__(
        self, client: redis.Redis[str], vector_counts: Callable[[], dict[str, int]]
    ) -> None:
        self.r = client
        self.vector_counts = vector_counts

    def collect(self) -> Iterable[Metric]:
        try:
            workers = self.r.hgetall(WORKER_KEY)
            jobs = self.r.hgetall(JOB_SECONDS_KEY)
            depth = int(self.r.llen(TASK_QUEUE))
        except redis.RedisError:
            return  # Redis down: /readyz says so; the API's own metrics still scrape
        families = {
            name: CounterMetricFamily(f"picsearch_worker_{name}", help_, labels=["worker"])
            for name, help_ in WORKER_COUNTERS.items()
        }
        for key, value in sorted(workers.items()):
            worker, _, name = key.rpartition("|")
            if name in families:
                families[name].add_metric([worker], float(value))
        yield from families.values()
        queue = GaugeMetricFamily(
            "picsearch_queue_depth", "Tasks waiting in the Celery queue", labels=["queue"]
        )
        queue.add_metric([TASK_QUEUE], depth)
        yield queue
        buckets = [(str(b), float(jobs.get(str(b), 0))) for b in JOB_BUCKETS]
        buckets.append(("+Inf", float(jobs.get("+Inf", 0))))
        yield HistogramMetricFamily(
            "picsearch_job_duration_seconds",
            "Wall time of succeeded load jobs, from creation to success",
            buckets=buckets,
            sum_value=float(jobs.get("sum", 0)),
        )
        vectors = GaugeMetricFamily(
            "picsearch_vectors", "Vectors per collection", labels=["collection"]
        )
        try:
            counts = self.vector_counts()
        except Exception:  # Milvus down: leave the gauge empty rather than fail the scrape
            counts = {}
        for name, count in counts.items():
            vectors.add_metric([name], count)
        yield vectors


class ApiMetrics:
    """The API process's own metrics, in a registry of its own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "picsearch_http_requests",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "picsearch_http_request_seconds",
            "HTTP request latency by route template",
            ["route", "method"],
            registry=self.registry,
        )
        self.search_stage = Histogram(
            "picsearch_search_stage_seconds",
            "Search latency split: decode, embed, vector search",
            ["stage"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.query_batch = Histogram(
            "picsearch_query_batch_size",
            "Queries embedded together in one forward pass",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=self.registry,
        )

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, method).observe(seconds)
