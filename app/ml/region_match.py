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
from app.ml.regions import WINDOW_SIDES, RegionQuery
from app.ml.verify import VERIFIED_NCC, locate

SHORTLIST = 5  # region hits verified per query
# A peak this high leaves no doubt: the hits after it are not verified (each costs a decode
# and a few FFTs), they keep their place below it.
CERTAIN_NCC = 0.97
# The best hits that fail near their window are searched whole: the window that matched may
# be a look-alike elsewhere in the right photo.
WHOLE_IMAGE_CHECKS = 2
# A query larger than this (longest side, px) is no small detail: only the first two photos
# are checked, near their window (a whole photo as query costs ~8x a plain search otherwise).
DETAIL_MAX_SIDE = 2 * max(WINDOW_SIDES)
LARGE_QUERY_SHORTLIST = 2
# A query found covering this much of a photo is a copy of the whole photo: it is reported
# as an image match (first, since verified), not as a region.
WHOLE_SHARE = 0.8


@dataclass(frozen=True)
class Ranked:
    id: str
    score: float  # cosine: of the whole image, or of the matching window
    box: tuple[int, int, int, int] | None = None  # set when found through a region
    image_size: tuple[int, int] | None = None  # the original's, with `box`
    verified: bool = False
    correlation: float | None = None  # the verification's peak, when one was computed


@dataclass(frozen=True)
class Verification:
    peak: float  # best normalised cross-correlation, -1..1
    box: tuple[int, int, int, int] | None  # where it peaked, in the original's pixels


def verify_shortlist(
    query: RegionQuery,
    hits: Sequence[RegionHit],
    load: Callable[[str], UprightImage | None],
    shortlist: int = SHORTLIST,
) -> dict[str, Verification]:
    """Image id -> verification of the first `shortlist` hits; `load(id)` gives the indexed
    image (None when it cannot be read: left unverified)."""
    out: dict[str, Verification] = {}
    detail = max(query.image.size) <= DETAIL_MAX_SIDE
    if not detail:
        shortlist = min(shortlist, LARGE_QUERY_SHORTLIST)
    for rank, hit in enumerate(hits[:shortlist]):
        candidate = load(hit.image_id)
        if candidate is None:
            continue
        scale = candidate.scale
        x, y, w, h = (round(v * scale) for v in hit.box)
        peak, where = locate(query.image, query.mask, candidate.rgb, (x, y, w, h))
        if peak < VERIFIED_NCC and detail and rank < WHOLE_IMAGE_CHECKS:
            # the window may be a look-alike elsewhere in the right photo (repeated texture)
            whole = (0, 0, candidate.rgb.width, candidate.rgb.height)
            anywhere = locate(query.image, query.mask, candidate.rgb, whole, max(w, h))
            if anywhere[0] > peak:
                peak, where = anywhere
        located = None
        if where is not None:
            left, top, width, height = (round(v / scale) for v in where)
            located = (left, top, width, height)
        out[hit.image_id] = Verification(peak, located)
        if peak >= CERTAIN_NCC:
            break
    return out


def merge(
    global_hits: Sequence[tuple[str, float]],
    region_hits: Sequence[RegionHit],
    checks: dict[str, Verification],
) -> list[Ranked]:
    """Verified region hits (best peak first, with the box where the query was found), the
    global hits, then the other region hits; each image once."""
    by_id = {h.image_id: h for h in region_hits}
    verified = sorted(
        (i for i, c in checks.items() if c.peak >= VERIFIED_NCC and i in by_id),
        key=lambda i: -checks[i].peak,
    )
    out = []
    for i in verified:
        box = checks[i].box or by_id[i].box
        if _most_of(box, by_id[i].image_size):  # a copy of the whole photo, not of a part
            out.append(Ranked(i, by_id[i].score, correlation=checks[i].peak))
        else:
            out.append(
                Ranked(
                    i,
                    by_id[i].score,
                    box,
                    by_id[i].image_size,
                    verified=True,
                    correlation=checks[i].peak,
                )
            )
    seen = set(verified)
    for image_id, score in global_hits:
        if image_id not in seen:
            seen.add(image_id)
            out.append(Ranked(image_id, score))
    for hit in region_hits:
        if hit.image_id not in seen:
            seen.add(hit.image_id)
            check = checks.get(hit.image_id)
            peak = None if check is None else check.peak
            out.append(Ranked(hit.image_id, hit.score, hit.box, hit.image_size, correlation=peak))
    return out


def _most_of(box: tuple[int, int, int, int], image_size: tuple[int, int]) -> bool:
    width, height = image_size
    return width * height > 0 and box[2] * box[3] >= WHOLE_SHARE * width * height
