"""How a region search becomes results: verify the shortlist, then merge with the global hits.

The best region hits are verified by masked normalised cross-correlation of the query against
the candidate around the window that matched (`app.ml.verify`). Verified copies come first,
by their correlation; then the global search's results as they are, so a query that is not
a copy of anything ranks exactly as without regions; then unverified region hits, if any
room is left. Shared by the API and `picsearch eval --crops`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from app.core.regionstore import RegionHit
from app.ml.imageio import UprightImage
from app.ml.regions import RegionQuery
from app.ml.verify import VERIFIED_NCC, verify

SHORTLIST = 5  # region hits verified per query


@dataclass(frozen=True)
class Ranked:
    id: str
    score: float  # cosine: of the whole image, or of the matching window
    box: tuple[int, int, int, int] | None = None  # set when found through a region
    image_size: tuple[int, int] | None = None  # the original's, with `box`
    verified: bool = False
    correlation: float | None = None  # the verification's peak, when one was computed


def verify_shortlist(
    query: RegionQuery,
    hits: Sequence[RegionHit],
    load: Callable[[str], UprightImage | None],
    shortlist: int = SHORTLIST,
) -> dict[str, float]:
    """Image id -> verification peak (-1..1) of the first `shortlist` hits; `load(id)` gives
    the indexed image (None when it cannot be read: left unverified)."""
    peaks: dict[str, float] = {}
    for hit in hits[:shortlist]:
        candidate = load(hit.image_id)
        if candidate is None:
            continue
        scale = candidate.scale
        x, y, w, h = (round(v * scale) for v in hit.box)
        peaks[hit.image_id] = verify(query.image, query.mask, candidate.rgb, (x, y, w, h))
    return peaks


def merge(
    global_hits: Sequence[tuple[str, float]],
    region_hits: Sequence[RegionHit],
    peaks: dict[str, float],
) -> list[Ranked]:
    """Verified region hits (best peak first), the global hits, then the other region hits;
    each image once."""
    by_id = {h.image_id: h for h in region_hits}
    verified = sorted(
        (i for i, peak in peaks.items() if peak >= VERIFIED_NCC and i in by_id),
        key=lambda i: -peaks[i],
    )
    out = [
        Ranked(
            i,
            by_id[i].score,
            by_id[i].box,
            by_id[i].image_size,
            verified=True,
            correlation=peaks[i],
        )
        for i in verified
    ]
    seen = set(verified)
    for image_id, score in global_hits:
        if image_id not in seen:
            seen.add(image_id)
            out.append(Ranked(image_id, score))
    for hit in region_hits:
        if hit.image_id not in seen:
            seen.add(hit.image_id)
            peak = peaks.get(hit.image_id)
            out.append(Ranked(hit.image_id, hit.score, hit.box, hit.image_size, correlation=peak))
    return out
