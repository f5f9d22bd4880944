"""Shared fixtures: a real Picsearch stack (Redis, Milvus Lite, Celery worker, API) per session.

Nothing is mocked: the stack is started with the same launcher code as `picsearch up`,
with random (seeded) VGG16 weights, on free loopback ports and temporary directories.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.core.config import Settings
from app.launcher import Stack, api_argv, spawn, wait_for_http

ARTIFACTS = Path(os.environ.get("PICSEARCH_TEST_ARTIFACTS", "test-artifacts")).resolve()
EXTERNAL_MILVUS = os.environ.get("PICSEARCH_TEST_MILVUS_URI")
# Every encoder of the run (test stacks and unit tests) shares one CPU runtime measurement per
# model and settings: the first measures (about a minute), the others read the cache.
RUNTIME_CACHE = ARTIFACTS / "runtime-cache"
os.environ["PICSEARCH_RUNTIME_CACHE_DIR"] = str(RUNTIME_CACHE)
# A database of its own on an external Milvus, so runs never see each other's vectors.
EXTERNAL_MILVUS_DB = f"picsearch_test_{uuid.uuid4().hex[:12]}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stack_env(base: Path, **overrides: str) -> dict[str, str]:
    """Environment for a test stack: every PICSEARCH_* value explicit, nothing inherited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PICSEARCH_")}
    env.update(
        {
            "PICSEARCH_DATA_DIR": str(base / "data"),
            "PICSEARCH_IMAGE_ROOTS": str(base / "roots"),
            "PICSEARCH_PORT": str(free_port()),
            "PICSEARCH_EMBEDDED_REDIS_PORT": str(free_port()),
            "PICSEARCH_EMBEDDED_MILVUS_PORT": str(free_port()),
            "PICSEARCH_WEIGHTS": "random",
            "PICSEARCH_MODEL": "vgg16",
            # PICSEARCH_TEST_DEVICE=cuda runs the worker on a GPU (where one is present).
            "PICSEARCH_DEVICE": os.environ.get("PICSEARCH_TEST_DEVICE", "cpu"),
            "PICSEARCH_CHUNK_SIZE": "8",
            "PICSEARCH_BATCH_SIZE": "8",
            "PICSEARCH_VISIBILITY_TIMEOUT": "20",
            "PICSEARCH_TORCH_THREADS": "2",
            "PICSEARCH_LOG_LEVEL": "INFO",
            "PICSEARCH_RUNTIME_CACHE_DIR": str(RUNTIME_CACHE),
        }
    )
    if EXTERNAL_MILVUS:
        # Run the same suite against a Milvus standalone/cluster instead of Milvus Lite.
        env["PICSEARCH_MILVUS_URI"] = EXTERNAL_MILVUS
        env["PICSEARCH_MILVUS_DB"] = EXTERNAL_MILVUS_DB
    env.update(overrides)
    return env


def settings_from_env(env: dict[str, str]) -> Settings:
    values: dict[str, Any] = {
        k.removeprefix("PICSEARCH_").lower(): v
        for k, v in env.items()
        if k.startswith("PICSEARCH_")
    }
    return Settings.model_validate(values)


@dataclass
class RunningStack:
    stack: Stack
    env: dict[str, str]
    settings: Settings
    images_root: Path
    data_dir: Path

    @property
    def api_url(self) -> str:
        return self.stack.api_url

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.api_url, timeout=60)

    def restart_worker(self, name: str = "worker") -> None:
        self.stack.start_worker(name)

    @contextmanager
    def extra_api(self, name: str, **env: str) -> Iterator[str]:
        """Another API process on this stack's Redis, Milvus and worker, with `env` changed;
        yields its URL once it is ready."""
        env = dict(self.env, PICSEARCH_PORT=str(free_port()), **env)
        settings = settings_from_env(env)
        log_dir = self.data_dir / "logs"
        proc = spawn(name, api_argv(settings), env, log_dir)
        url = f"http://127.0.0.1:{settings.port}"
        try:
            # generous: its first start may measure the CPU runtimes; fails at once if it exits
            wait_for_http(proc, f"{url}/readyz", 900, log_dir)
            yield url
        finally:
            proc.stop()

    def wait_job(self, job_id: str, timeout: float = 300, poll: float = 0.3) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.client() as client:
            while time.monotonic() < deadline:
                job: dict[str, Any] = client.get(f"/api/v1/loads/{job_id}").json()
                if job["state"] in ("succeeded", "failed", "cancelled"):
                    return job
                time.sleep(poll)
        raise AssertionError(f"job {job_id} did not finish in {timeout}s: {job}")


@pytest.fixture(scope="session", autouse=True)
def external_milvus_db() -> Iterator[None]:
    """On an external Milvus, create this run's database, and drop it with all it holds."""
    if not EXTERNAL_MILVUS:
        yield
        return
    from pymilvus import MilvusClient

    MilvusClient(EXTERNAL_MILVUS).create_database(EXTERNAL_MILVUS_DB)
    try:
        yield
    finally:
        client = MilvusClient(EXTERNAL_MILVUS, db_name=EXTERNAL_MILVUS_DB)
        for name in client.list_collections():
            client.drop_collection(name)
        client.drop_database(EXTERNAL_MILVUS_DB)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    base = tmp_path_factory.mktemp("stack")
    env = stack_env(base)
    settings = settings_from_env(env)
    images_root = base / "roots"
    images_root.mkdir(parents=True)
    running = Stack(settings, env=env)
    running.start()
    try:
        with httpx.Client(base_url=running.api_url, timeout=10) as client:
            # generous: a busy machine's first start also measures the CPU runtimes
            deadline = time.monotonic() + 600
            while client.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline, "stack never became ready"
                time.sleep(0.5)
        yield RunningStack(running, env, settings, images_root, settings.data_dir)
    finally:
        running.stop()
        logs = settings.data_dir / "logs"
        target = ARTIFACTS / "logs"
        if logs.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            for log in logs.iterdir():
                (target / log.name).write_bytes(log.read_bytes())
