"""The ingest pipeline as plain code: scan -> (skip unchanged) -> decode -> embed -> upsert.

Celery tasks call into this module; nothing here knows about Celery.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from app.core.config import Settings
from app.core.jobs import ChunkCounts, FileError
from app.core.paths import is_within
from app.core.vectorstore import MAX_PATH_BYTES, ImageRow, VectorStore, image_id
from app.ml.encoder import Encoder
from app.ml.imageio import DecodedImage, ImageDecodeError, decode_image, has_image_extension

log = logging.getLogger(__name__)


# -- scan -------------------------------------------------------------------------------------
@dataclass
class ScanResult:
    files: list[str] = field(default_factory=list)  # resolved paths, sorted, unique
    errors: list[FileError] = field(default_factory=list)


def scan_folder(
    folder: Path,
    roots: Sequence[Path],
    on_progress: Callable[[int], None] | None = None,
    progress_every: int = 1000,
) -> ScanResult:
    """Walk `folder` recursively for image files, staying inside `roots`.

    Symlinks are followed only when their target stays inside a root; loops are cut by
    remembering visited directories. Unreadable directories are reported, not fatal.
    `on_progress(found)` is called every `progress_every` files found.
    """
    reported = 0
    result = ScanResult()
    seen_files: set[str] = set()
    visited: set[tuple[int, int]] = set()
    stack = [folder]
    while stack:
        directory = stack.pop()
        try:
            st = directory.stat()
        except OSError as exc:
            result.errors.append(FileError(path=str(directory), reason=_os_reason(exc)))
            continue
        if (st.st_dev, st.st_ino) in visited:
            continue
        visited.add((st.st_dev, st.st_ino))
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            result.errors.append(FileError(path=str(directory), reason=_os_reason(exc)))
            continue
        for entry in entries:
            _scan_entry(entry, roots, stack, seen_files, result)
        if on_progress and len(result.files) - reported >= progress_every:
            reported = len(result.files)
            on_progress(reported)
    result.files.sort()
    return result


def _scan_entry(
    entry: os.DirEntry[str],
    roots: Sequence[Path],
    stack: list[Path],
    seen_files: set[str],
    result: ScanResult,
) -> None:
    path = Path(entry.path)
    try:
        is_dir = entry.is_dir(follow_symlinks=True)
        is_candidate = not is_dir and has_image_extension(entry.name)
        if not (is_dir or is_candidate):
            return
        resolved = path.resolve(strict=True)
    except (OSError, RuntimeError) as exc:  # RuntimeError: symlink loop on older Pythons
        if entry.is_symlink() or has_image_extension(entry.name):
            result.errors.append(FileError(path=str(path), reason=_os_reason(exc)))
        return
    if not is_within(resolved, roots):
        result.errors.append(
            FileError(path=str(path), reason=f"symlink points outside the image roots: {resolved}")
        )
        return
    if is_dir:
        stack.append(resolved)
        return
    text = str(resolved)
    if len(os.fsencode(text)) > MAX_PATH_BYTES:
        result.errors.append(FileError(path=text, reason="path longer than 4096 bytes"))
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        result.errors.append(FileError(path=repr(text), reason="file name is not valid UTF-8"))
        return
    if text not in seen_files:
        seen_files.add(text)
        result.files.append(text)


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, FileNotFoundError):
        return "file vanished or broken symlink"
    if isinstance(exc, RuntimeError) or (isinstance(exc, OSError) and exc.errno == 40):
        return "symlink loop"
    return f"{type(exc).__name__}: {exc}"


def chunked(items: Sequence[str], size: int) -> list[list[str]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


# -- embed one chunk --------------------------------------------------------------------------
class ChunkSink(Protocol):
    """Where a chunk reports to; implemented over Redis by the task layer."""

    def update(self, counts: ChunkCounts, errors: list[FileError]) -> None: ...

    def cancelled(self) -> bool: ...

    def write_lock(self) -> AbstractContextManager[object]: ...


@dataclass(frozen=True)
class FileInfo:
    path: str
    id: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Decoded:
    info: FileInfo
    image: DecodedImage
    content_hash: str


def stat_file(path: str) -> FileInfo:
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise ImageDecodeError("not a regular file")
    return FileInfo(path=path, id=image_id(path), size=st.st_size, mtime_ns=st.st_mtime_ns)


def read_and_decode(info: FileInfo, settings: Settings) -> Decoded:
    """Read a file and decode it; raise ImageDecodeError with a per-file reason."""
    if info.size > settings.max_file_bytes:
        raise ImageDecodeError(
            f"file too large: {info.size:,} bytes exceeds {settings.max_file_bytes:,}"
        )
    try:
        with open(info.path, "rb") as fh:
            data = fh.read(settings.max_file_bytes + 1)
    except OSError as exc:
        raise ImageDecodeError(_os_reason(exc)) from None
    image = decode_image(data, size=settings.image_size, max_pixels=settings.max_image_pixels)
    digest = hashlib.blake2b(data, digest_size=16).hexdigest()
    return Decoded(info=info, image=image, content_hash=digest)


@dataclass
class ChunkRunner:
    """Embeds one chunk of files into the store, reporting after every batch."""

    settings: Settings
    encoder: Encoder
    store: VectorStore
    job_id: str
    # Seconds spent per stage: waiting for decoded images (decode runs ahead on threads),
    # in the model, and writing to Milvus. Read by the benchmark and the metrics.
    timings: dict[str, float] = field(
        default_factory=lambda: {"decode_wait": 0.0, "embed": 0.0, "write": 0.0}
    )
    batch_sizes: list[int] = field(default_factory=list)

    def run(self, files: Sequence[str], sink: ChunkSink) -> ChunkCounts:
        counts = ChunkCounts()
        errors: list[FileError] = []
        infos: list[FileInfo] = []
        for path in files:
            try:
                infos.append(stat_file(path))
            except (OSError, ImageDecodeError) as exc:
                reason = exc.reason if isinstance(exc, ImageDecodeError) else _os_reason(exc)
                errors.append(FileError(path=path, reason=reason))
        counts.failed = counts.processed = len(errors)

        todo = self._skip_unchanged(infos, counts)
        sink.update(counts, errors)
        if sink.cancelled():
            return counts
        batches = self._decoded_batches(todo)
        while True:
            started = time.perf_counter()
            item = next(batches, None)
            self.timings["decode_wait"] += time.perf_counter() - started
            if item is None:
                break
            batch, batch_errors = item
            counts.failed += len(batch_errors)
            counts.processed += len(batch_errors)
            if batch:
                started = time.perf_counter()
                vectors = self.encoder.embed(np.stack([d.image.pixels for d in batch]))
                self.timings["embed"] += time.perf_counter() - started
                self.batch_sizes.append(len(batch))
                rows = [self._row(d, v) for d, v in zip(batch, vectors, strict=True)]
                with sink.write_lock():
                    if sink.cancelled():
                        return counts
                    started = time.perf_counter()
                    self.store.upsert(rows)
                    self.timings["write"] += time.perf_counter() - started
                counts.indexed += len(rows)
                counts.processed += len(rows)
            sink.update(counts, batch_errors)
            if sink.cancelled():
                break
        return counts

    def _skip_unchanged(self, infos: list[FileInfo], counts: ChunkCounts) -> list[FileInfo]:
        stored = self.store.existing([i.id for i in infos])
        todo: list[FileInfo] = []
        for info in infos:
            row = stored.get(info.id)
            if row is None or (row.size, row.mtime_ns) != (info.size, info.mtime_ns):
                todo.append(info)
            elif row.job_id == self.job_id:
                counts.indexed += 1  # written by an earlier attempt of this same job
                counts.processed += 1
            else:
                counts.unchanged += 1
                counts.processed += 1
        return todo

    def _decoded_batches(
        self, infos: list[FileInfo]
    ) -> Iterator[tuple[list[Decoded], list[FileError]]]:
        """Decode on a thread pool, ahead of the model, yielding batches in file order."""
        size = self.settings.batch_size

        def decode(info: FileInfo) -> Decoded | FileError:
            try:
                return read_and_decode(info, self.settings)
            except ImageDecodeError as exc:
                return FileError(path=info.path, reason=exc.reason)

        with ThreadPoolExecutor(self.settings.decode_threads, "decode") as pool:
            batch: list[Decoded] = []
            errors: list[FileError] = []
            for item in pool.map(decode, infos):
                if isinstance(item, FileError):
                    errors.append(item)
                else:
                    batch.append(item)
                if len(batch) >= size:
                    yield batch, errors
                    batch, errors = [], []
            if batch or errors:
                yield batch, errors

    def _row(self, item: Decoded, vector: np.ndarray) -> ImageRow:
        return ImageRow(
            id=item.info.id,
            vector=vector.tolist(),
            path=item.info.path,
            size=item.info.size,
            mtime_ns=item.info.mtime_ns,
            content_hash=item.content_hash,
            job_id=self.job_id,
        )
