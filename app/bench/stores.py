"""Milvus for the bench: a temporary Milvus Lite server (or the configured one), fresh
collections, and the wait for an index build.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from app.measure.options import settings_with

if TYPE_CHECKING:
    import numpy as np

    from app.core.config import Settings
    from app.core.vectorstore import VectorStore
    from app.ml.encoder import Encoder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
    lite = settings_with(settings, data_dir=workdir, embedded_milvus_port=port, milvus_uri=None)
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
