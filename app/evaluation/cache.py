"""`--cache`: grid vectors kept on disk, keyed by model, recipe and the files' stats."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from app.evaluation.embedding import Embedded
from app.evaluation.recipes import Prep, Recipe

if TYPE_CHECKING:
    from app.ml.encoder import Encoder


CACHE_VERSION = 2


def files_key(paths: Sequence[Path], extra: Sequence[Any]) -> str:
    digest = hashlib.sha256(json.dumps(list(extra)).encode())
    for path in paths:
        stat = path.stat()
        digest.update(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def cached_embedding(
    cache: Path,
    encoder: Encoder,
    paths: Sequence[Path],
    preps: Sequence[Prep],
    poolings: Sequence[str],
    compute: Callable[[Sequence[Prep]], Embedded],
) -> Embedded:
    """`compute(preps)` for the preps not in `cache` yet (one .npz per image set and prep,
    keyed by model, weights, recipe and the files' paths, sizes and mtimes)."""
    info = encoder.info
    files = {
        prep: cache
        / "vectors"
        / (
            files_key(
                paths,
                [
                    CACHE_VERSION,
                    info.model,
                    info.weights_id,
                    info.precision,
                    str(getattr(info, "runtime", "")),
                    prep.mode,
                    prep.size,
                    *poolings,
                ],
            )
            + ".npz"
        )
        for prep in preps
    }
    missing = [prep for prep, f in files.items() if not f.is_file()]
    result = compute(missing) if missing else Embedded({}, [])
    for prep in missing:
        files[prep].parent.mkdir(parents=True, exist_ok=True)
        payload: dict[str, Any] = {f"pool_{p}": result.vectors[Recipe(prep, p)] for p in poolings}
        payload["ok"] = np.asarray(result.ok, dtype=np.int64)
        payload["seconds"] = np.float64(result.seconds.get(prep, 0.0))
        payload["failed"] = np.asarray(json.dumps(result.failed))
        np.savez(files[prep], **payload)
    for prep in preps:
        if prep in missing:
            continue
        with np.load(files[prep]) as data:
            ok = [int(i) for i in data["ok"]]
            if missing and ok != result.ok:  # files changed in between: start again
                files[prep].unlink()
                return cached_embedding(cache, encoder, paths, preps, poolings, compute)
            result.ok, result.failed = ok, json.loads(str(data["failed"]))
            result.seconds[prep] = float(data["seconds"])
            for p in poolings:
                result.vectors[Recipe(prep, p)] = data[f"pool_{p}"].astype(np.float32)
    return result
