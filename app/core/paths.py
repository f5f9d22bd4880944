"""Confinement to the configured image roots: nothing outside them is ever read."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from app.core.errors import BadRequestError, ForbiddenPathError, NotFoundError


def is_within(path: Path, roots: Sequence[Path]) -> bool:
    """True if the already-resolved `path` is one of `roots` or below one."""
    return any(path == root or path.is_relative_to(root) for root in roots)


def resolve_in_roots(raw: str, roots: Sequence[Path], *, want_dir: bool) -> Path:
    """Resolve a user-supplied path (symlinks, `..`) and check it lies inside a root."""
    if not raw or "\x00" in raw:
        raise BadRequestError("path must be a non-empty string without NUL bytes")
    candidate = Path(raw).expanduser()
    if not candidate.is_absolute():
        raise BadRequestError(f"path must be absolute: {raw!r}")
    resolved = candidate.resolve()
    if not is_within(resolved, roots):
        raise ForbiddenPathError(
            f"{raw!r} is outside the image roots; allowed: " + ", ".join(str(r) for r in roots),
            details={"image_roots": [str(r) for r in roots]},
        )
    if not resolved.exists():
        raise NotFoundError(f"no such {'folder' if want_dir else 'file'}: {raw!r}")
    if want_dir and not resolved.is_dir():
        raise BadRequestError(f"not a folder: {raw!r}")
    if not want_dir and not resolved.is_file():
        raise BadRequestError(f"not a file: {raw!r}")
    return resolved
