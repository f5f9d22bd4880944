"""Folder walking and root confinement."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from app.core.config import Settings
from app.core.errors import BadRequestError, ForbiddenPathError, NotFoundError
from app.core.paths import is_within, resolve_in_roots
from app.ml.imageio import ImageDecodeError
from tests.imagegen import distinct_image, jpeg_bytes
from workers.pipeline import chunked, read_and_decode, scan_folder, share_chunks, stat_file


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "a" / "b" / "c").mkdir(parents=True)
    for rel in ["x.jpg", "a/Y.JPEG", "a/b/c/z.PnG", "a/notes.txt", "a/b/pic with space é.webp"]:
        (root / rel).write_bytes(b"data")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.jpg").write_bytes(b"data")
    os.symlink(tmp_path / "outside" / "secret.jpg", root / "link_out.jpg")
    os.symlink(tmp_path / "outside", root / "dir_out")
    os.symlink(root / "x.jpg", root / "a" / "alias.jpg")  # same file twice
    os.symlink(root, root / "a" / "loop")
    os.symlink(root / "missing.jpg", root / "dangling.jpg")
    return root


def test_scan_finds_images_recursively_case_insensitive(tree: Path) -> None:
    result = scan_folder(tree, [tree])
    names = sorted(Path(p).name for p in result.files)
    assert names == ["Y.JPEG", "pic with space é.webp", "x.jpg", "z.PnG"]
    assert all(Path(p).is_absolute() and p == str(Path(p).resolve()) for p in result.files)


def test_scan_reports_escapes_and_dangling_links(tree: Path) -> None:
    result = scan_folder(tree, [tree])
    reasons = {Path(e.path).name: e.reason for e in result.errors}
    assert "outside the image roots" in reasons["link_out.jpg"]
    assert "outside the image roots" in reasons["dir_out"]
    assert "broken symlink" in reasons["dangling.jpg"]
    assert len(result.errors) == 3


def test_resolve_in_roots_refuses_escapes(tree: Path, tmp_path: Path) -> None:
    roots = [tree]
    assert resolve_in_roots(str(tree / "a"), roots, want_dir=True) == tree / "a"
    with pytest.raises(ForbiddenPathError):
        resolve_in_roots(str(tree / ".." / "outside"), roots, want_dir=True)
    with pytest.raises(ForbiddenPathError):
        resolve_in_roots(str(tree / "dir_out"), roots, want_dir=True)
    with pytest.raises(NotFoundError):
        resolve_in_roots(str(tree / "nope"), roots, want_dir=True)
    with pytest.raises(BadRequestError):
        resolve_in_roots("relative", roots, want_dir=True)
    with pytest.raises(BadRequestError):
        resolve_in_roots(str(tree / "x.jpg"), roots, want_dir=True)
    assert not is_within(tmp_path / "rootx", [tree])  # a sibling with a common prefix


def test_chunked_splits_evenly() -> None:
    assert chunked(["a", "b", "c", "d", "e"], 2) == [["a", "b"], ["c", "d"], ["e"]]
    assert chunked([], 3) == []


def test_share_chunks_gives_every_worker_a_chunk_but_keeps_the_size_cap() -> None:
    files = [str(i) for i in range(10)]
    assert [len(c) for c in share_chunks(files, 4096, 4)] == [3, 3, 3, 1]
    assert [len(c) for c in share_chunks(files, 4, 1)] == [4, 4, 2]
    assert [len(c) for c in share_chunks(files[:2], 256, 8)] == [1, 1]
    assert sum(share_chunks(files, 3, 2), []) == files
    assert share_chunks([], 256, 2) == []


@contextmanager
def unprivileged() -> Iterator[None]:
    """Root reads anything; drop the effective uid so permission bits apply, then restore."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def test_unreadable_files_and_folders_are_reported_per_file(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    for parent in tmp_path.parents:  # let the unprivileged user traverse to the tree
        if parent.stat().st_uid == os.geteuid() and str(parent).startswith("/tmp/"):
            parent.chmod(parent.stat().st_mode | 0o005)
    (tmp_path / "ok.jpg").write_bytes(jpeg_bytes(distinct_image(1)))
    (tmp_path / "secret.jpg").write_bytes(jpeg_bytes(distinct_image(2)))
    (tmp_path / "secret.jpg").chmod(0)
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "inside.jpg").write_bytes(b"x")
    (tmp_path / "locked").chmod(0)
    reasons: dict[str, str] = {}
    # read as root: the unprivileged user may not see the checkout's .env (e.g. in a 0700 clone)
    settings = Settings()
    try:
        with unprivileged():
            scan = scan_folder(tmp_path, [tmp_path])
            reasons.update({Path(e.path).name: e.reason for e in scan.errors})
            for path in scan.files:
                try:
                    read_and_decode(stat_file(path), settings)
                    reasons[Path(path).name] = "ok"
                except ImageDecodeError as exc:
                    reasons[Path(path).name] = exc.reason
    finally:
        (tmp_path / "locked").chmod(0o755)
    assert reasons == {
        "ok.jpg": "ok",
        "secret.jpg": "permission denied",
        "locked": "permission denied",
    }
