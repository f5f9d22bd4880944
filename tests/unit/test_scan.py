"""Folder walking and root confinement."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.core.errors import BadRequestError, ForbiddenPathError, NotFoundError
from app.core.paths import is_within, resolve_in_roots
from workers.pipeline import chunked, scan_folder


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


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads unreadable directories anyway")
def test_unreadable_directory_is_reported(tree: Path) -> None:
    locked = tree / "a" / "b"
    locked.chmod(0)
    try:
        result = scan_folder(tree, [tree])
    finally:
        locked.chmod(0o755)
    assert any(e.reason == "permission denied" for e in result.errors)


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
