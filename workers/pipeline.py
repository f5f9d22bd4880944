"""The ingest pipeline as plain code: scan -> (skip unchanged) -> decode -> embed -> upsert.

Celery tasks call into this module; nothing here knows about Celery.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

import numpy as np
import torch

from app.core.config import Settings
from app.core.jobs import ChunkCounts, FileError
from app.core.paths import is_within
from app.core.regionstore import ImageRegions
from app.core.vectorstore import MAX_PATH_BYTES, ImageRow, VectorStore, content_hash, image_id
from app.ml.device_decode import decode_jpegs, gpu_decodable
from app.ml.encoder import Encoder
from app.ml.imageio import ImageDecodeError, decode_image, has_image_extension
from app.ml.regions import Windows, embed_windows, region_windows

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

if TYPE_CHECKING:
    from workers.int8_calibration import Calibrator


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


def share_chunks(items: Sequence[str], size: int, workers: int) -> list[list[str]]:
    """Chunks of at most `size`, and short enough that each of `workers` processes gets one.

    A GPU worker prefers long chunks (4,096 files), but a 17k-photo folder in 4,096-file chunks
    would leave all but 5 of 8 worker processes idle.
    """
    return chunked(items, max(1, min(size, -(-len(items) // max(1, workers)))))


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
class Source:
    """A file as read: what its row records besides the vector."""

    info: FileInfo
    content_hash: str


@dataclass(frozen=True)
class Decoded:
    source: Source
    pixels: np.ndarray  # (S, S, 3) uint8
    windows: Windows | None = None  # a collection with regions: the image's region windows


@dataclass(frozen=True)
class Encoded:
    """A JPEG read for decoding on the GPU."""

    source: Source
    data: bytes
    windows: Windows | None = None


@dataclass
class Batch:
    sources: list[Source]
    pixels: np.ndarray | torch.Tensor  # (N, S, S, 3) uint8, on the CPU or the model's GPU
    errors: list[FileError]
    windows: dict[str, Windows] = field(default_factory=dict)  # by image id (regions)


def stat_file(path: str) -> FileInfo:
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise ImageDecodeError("not a regular file")
    return FileInfo(path=path, id=image_id(path), size=st.st_size, mtime_ns=st.st_mtime_ns)


def read_file(info: FileInfo, settings: Settings) -> tuple[bytes, Source]:
    """The file's bytes and its Source; raise ImageDecodeError with a per-file reason."""
    if info.size > settings.max_file_bytes:
        raise ImageDecodeError(
            f"file too large: {info.size:,} bytes exceeds {settings.max_file_bytes:,}"
        )
    try:
        with open(info.path, "rb") as fh:
            data = fh.read(settings.max_file_bytes + 1)
    except OSError as exc:
        raise ImageDecodeError(_os_reason(exc)) from None
    return data, Source(info, content_hash(data))


def read_and_decode(info: FileInfo, settings: Settings, regions: bool = False) -> Decoded:
    """Read a file and decode it on the CPU; raise ImageDecodeError with a per-file reason."""
    data, source = read_file(info, settings)
    image = decode_image(data, size=settings.image_size, max_pixels=settings.max_image_pixels)
    return Decoded(source, image.pixels, region_windows(data, settings) if regions else None)


def read_for_device(info: FileInfo, settings: Settings, regions: bool = False) -> Decoded | Encoded:
    """Read a file; plain JPEGs stay encoded for the GPU, the rest is decoded here."""
    data, source = read_file(info, settings)
    windows = region_windows(data, settings) if regions else None
    if gpu_decodable(data, settings.max_image_pixels):
        return Encoded(source, data, windows)
    image = decode_image(data, size=settings.image_size, max_pixels=settings.max_image_pixels)
    return Decoded(source, image.pixels, windows)


def ordered_map(
    pool: ThreadPoolExecutor, fn: Callable[[T], R], items: Iterable[T], ahead: int
) -> Iterator[R]:
    """`pool.map(fn, items)` with at most `ahead` calls running or done but not yet taken,
    so memory stays bounded however long `items` is."""
    pending: deque[Future[R]] = deque()
    for item in items:
        if len(pending) >= ahead:
            yield pending.popleft().result()
        pending.append(pool.submit(fn, item))
    while pending:
        yield pending.popleft().result()


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    group: list[T] = []
    for item in items:
        group.append(item)
        if len(group) >= size:
            yield group
            group = []
    if group:
        yield group


@dataclass
class _Write:
    """An upsert in flight, and what to report once it has landed."""

    future: Future[bool]
    rows: int
    errors: list[FileError]


@dataclass
class ChunkRunner:
    """Embeds one chunk of files into the store, reporting after every batch.

    Three stages overlap: reading and decoding (threads, ahead of the model; on CUDA the
    JPEGs of a batch are decoded on the GPU one batch ahead), the model, and the upsert of
    the previous batch (one writer thread, one batch in flight, so rows land in order).
    """

    settings: Settings
    encoder: Encoder
    store: VectorStore
    job_id: str
    # Seconds per stage, read by the benchmark and the metrics: the model waiting for
    # decoded images, the model itself, and the model waiting for the previous upsert.
    timings: dict[str, float] = field(
        default_factory=lambda: {"decode_wait": 0.0, "embed": 0.0, "regions": 0.0, "write": 0.0}
    )
    batch_sizes: list[int] = field(default_factory=list)
    # Decode JPEGs on the model's device; None: on CUDA when settings.gpu_decode. (True on
    # a CPU encoder runs the same code with torchvision's CPU decoder: how tests cover it.)
    device_decode: bool | None = None
    # Takes each batch before it is embedded, to calibrate the collection's int8 model on
    # its first images, and may switch the encoder to it partway (None: not in this chunk).
    calibrator: Calibrator | None = None

    @property
    def decodes_on_device(self) -> bool:
        if self.device_decode is not None:
            return self.device_decode
        return self.encoder.device.type == "cuda" and self.settings.gpu_decode

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
        with ThreadPoolExecutor(1, "upsert") as writer:
            in_flight: _Write | None = None
            batches = self._batches(todo)
            while True:
                started = time.perf_counter()
                batch = next(batches, None)
                self.timings["decode_wait"] += time.perf_counter() - started
                if batch is None:
                    break
                if self.calibrator is not None and batch.sources:
                    self.encoder = self.calibrator.feed(batch.pixels)  # may switch to int8
                counts.failed += len(batch.errors)
                counts.processed += len(batch.errors)
                rows: list[ImageRow] = []
                windows: dict[str, ImageRegions] = {}
                if batch.sources:
                    started = time.perf_counter()
                    vectors = self.encoder.embed(batch.pixels)
                    self.timings["embed"] += time.perf_counter() - started
                    self.batch_sizes.append(len(batch.sources))
                    rows = [self._row(s, v) for s, v in zip(batch.sources, vectors, strict=True)]
                    started = time.perf_counter()
                    windows = embed_windows(self.encoder, batch.windows)
                    self.timings["regions"] += time.perf_counter() - started
                if in_flight is not None and not self._landed(in_flight, counts, sink):
                    return counts  # cancelled before that upsert
                in_flight = None
                if rows:
                    future = writer.submit(self._write, rows, windows, sink)
                    in_flight = _Write(future, len(rows), batch.errors)
                else:
                    sink.update(counts, batch.errors)
                if sink.cancelled():
                    break
            if in_flight is not None:
                self._landed(in_flight, counts, sink)
        if self.calibrator is not None:
            self.encoder = self.calibrator.finish()  # a later chunk goes on with int8
        return counts

    def _write(
        self,
        rows: list[ImageRow],
        windows: dict[str, ImageRegions],
        sink: ChunkSink,
    ) -> bool:
        with sink.write_lock():
            if sink.cancelled():
                return False
            self.store.upsert(rows, windows)
        return True

    def _landed(self, write: _Write, counts: ChunkCounts, sink: ChunkSink) -> bool:
        """Wait for `write` (re-raising its error); count and report it. False: cancelled."""
        started = time.perf_counter()
        written = write.future.result()
        self.timings["write"] += time.perf_counter() - started
        if written:
            counts.indexed += write.rows
            counts.processed += write.rows
            sink.update(counts, write.errors)
        return written

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

    def _batches(self, infos: list[FileInfo]) -> Iterator[Batch]:
        """Batches in file order, decoded ahead of the model."""
        size = self.settings.batch_size_for(self.encoder.device.type)
        threads = self.settings.effective_decode_threads
        gpu = self.decodes_on_device
        regions = self.store.meta.regions

        def read(info: FileInfo) -> Decoded | Encoded | FileError:
            try:
                if gpu:
                    return read_for_device(info, self.settings, regions)
                return read_and_decode(info, self.settings, regions)
            except ImageDecodeError as exc:
                return FileError(path=info.path, reason=exc.reason)

        with ThreadPoolExecutor(threads, "decode") as pool:
            groups = batched(ordered_map(pool, read, infos, ahead=2 * size), size)
            if not gpu:
                yield from (self._cpu_batch(group) for group in groups)
                return
            # The GPU decodes batch k+1 while the model runs batch k.
            with ThreadPoolExecutor(1, "gpu-decode") as device_decoder:
                yield from ordered_map(device_decoder, self._device_batch, groups, ahead=2)

    def _cpu_batch(self, group: list[Decoded | Encoded | FileError]) -> Batch:
        decoded = [item for item in group if isinstance(item, Decoded)]
        errors = [item for item in group if isinstance(item, FileError)]
        size = self.settings.image_size
        pixels = (
            np.stack([d.pixels for d in decoded])
            if decoded
            else np.zeros((0, size, size, 3), np.uint8)
        )
        windows = {d.source.info.id: d.windows for d in decoded if d.windows is not None}
        return Batch([d.source for d in decoded], pixels, errors, windows)

    def _device_batch(self, group: list[Decoded | Encoded | FileError]) -> Batch:
        """Decode the batch's JPEGs on the GPU; what the GPU refuses is decoded on the CPU.
        Rows come GPU-decoded first: the order within a batch does not matter."""
        device = self.encoder.device
        size, limit = self.settings.image_size, self.settings.max_image_pixels
        encoded = [item for item in group if isinstance(item, Encoded)]
        pixels, order = decode_jpegs([e.data for e in encoded], size=size, device=device)
        sources = [encoded[i].source for i in order]
        refused = set(range(len(encoded))) - set(order)
        errors = [item for item in group if isinstance(item, FileError)]
        on_cpu = [item for item in group if isinstance(item, Decoded)]
        for i in sorted(refused):
            try:
                image = decode_image(encoded[i].data, size=size, max_pixels=limit)
            except ImageDecodeError as exc:
                errors.append(FileError(path=encoded[i].source.info.path, reason=exc.reason))
                continue
            on_cpu.append(Decoded(encoded[i].source, image.pixels, encoded[i].windows))
        if on_cpu:
            extra = np.stack([d.pixels for d in on_cpu])
            pixels = torch.cat([pixels, torch.from_numpy(extra).to(device)])
            sources += [d.source for d in on_cpu]
        kept = {source.info.id for source in sources}
        windows: dict[str, Windows] = {}
        items: list[Encoded | Decoded] = [*encoded, *on_cpu]
        for item in items:
            if item.windows is not None and item.source.info.id in kept:
                windows[item.source.info.id] = item.windows
        return Batch(sources, pixels, errors, windows)

    def _row(self, source: Source, vector: np.ndarray) -> ImageRow:
        return ImageRow(
            id=source.info.id,
            vector=vector.tolist(),
            path=source.info.path,
            size=source.info.size,
            mtime_ns=source.info.mtime_ns,
            content_hash=source.content_hash,
            job_id=self.job_id,
        )
