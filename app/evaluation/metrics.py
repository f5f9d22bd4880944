"""Scoring rankings: mAP@k, precision@n and recall@k over a labelled set, hit@n of
near-duplicate and crop queries, all by exact inner-product search in memory.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

PRECISION_AT = (1, 10)
HIT_AT = (1, 10)


def average_precision_at_k(relevant: Sequence[bool], n_relevant: int, k: int) -> float:
    """AP@k = (1 / min(R, k)) * sum over relevant ranks i <= k of precision@i.

    `relevant` is the ranking (best first, the query itself already removed), R the number of
    relevant items in the database. A perfect top-k scores 1 even when R > k. 0 when R == 0.
    """
    if n_relevant <= 0:
        return 0.0
    hits = 0
    total = 0.0
    for rank, rel in enumerate(relevant[:k], start=1):
        if rel:
            hits += 1
            total += hits / rank
    return total / min(n_relevant, k)


def precision_at_k(relevant: Sequence[bool], k: int) -> float:
    """Relevant items among the first k, divided by k."""
    return sum(bool(r) for r in relevant[:k]) / k


def recall_at_k(relevant: Sequence[bool], n_relevant: int, k: int) -> float:
    """Relevant items among the first k, divided by all R relevant items (0 when R == 0)."""
    if n_relevant <= 0:
        return 0.0
    return sum(bool(r) for r in relevant[:k]) / n_relevant


def top_k(
    queries: np.ndarray, database: np.ndarray, k: int, exclude: np.ndarray | None = None
) -> np.ndarray:
    """(Q, k') database indices, most similar first, by inner product of the rows.

    `exclude[q]` (a database index, or -1 for none) is never returned for query q: the query
    itself when the queries are the database. Ties keep database order. k' = min(k, usable).
    """
    sims = queries.astype(np.float32) @ database.astype(np.float32).T
    usable = database.shape[0]
    if exclude is not None:
        rows = np.nonzero(exclude >= 0)[0]
        sims[rows, exclude[rows]] = -np.inf
        usable -= 1
    order = np.argsort(-sims, axis=1, kind="stable")
    return order[:, : max(0, min(k, usable))]


def metric_names(k: int) -> list[str]:
    return [f"map@{k}", *(f"p@{n}" for n in PRECISION_AT), f"recall@{k}"]


def evaluate_labelled(
    vectors: np.ndarray, labels: Sequence[str], k: int, queries: Sequence[int] | None = None
) -> dict[str, Any]:
    """Every image in `queries` (default: all) searches all the others; same label = relevant.

    Returns `overall` (mean over queries), `macro` (mean over classes) and `per_class`.
    Queries whose class has no other image are skipped (nothing to find).
    """
    label_arr = np.asarray(labels)
    counts = Counter(labels)
    query_idx = np.asarray(range(len(labels)) if queries is None else queries, dtype=np.int64)
    depth = max([k, *PRECISION_AT])
    ranked = top_k(vectors[query_idx], vectors, depth, exclude=query_idx)
    names = metric_names(k)
    per_class: dict[str, list[list[float]]] = defaultdict(list)
    skipped = 0
    for row, q in enumerate(query_idx):
        label = str(label_arr[q])
        n_rel = counts[label] - 1
        if n_rel <= 0:
            skipped += 1
            continue
        rel = [bool(x) for x in label_arr[ranked[row]] == label]
        per_class[label].append(
            [
                average_precision_at_k(rel, n_rel, k),
                *(precision_at_k(rel, n) for n in PRECISION_AT),
                recall_at_k(rel, n_rel, k),
            ]
        )
    every = [m for rows in per_class.values() for m in rows]
    classes = {
        cls: {
            "images": counts[cls],
            "queries": len(rows),
            **dict(zip(names, np.mean(rows, axis=0).tolist(), strict=True)),
        }
        for cls, rows in sorted(per_class.items())
    }
    zero = [0.0] * len(names)
    overall = np.mean(every, axis=0).tolist() if every else zero
    macro = np.mean([list(c.values())[2:] for c in classes.values()], axis=0).tolist()
    return {
        "images": len(labels),
        "classes": len(counts),
        "queries": len(every),
        "skipped_queries": skipped,
        "overall": dict(zip(names, overall, strict=True)),
        "macro": dict(zip(names, macro if classes else zero, strict=True)),
        "per_class": classes,
    }


def hit_rates(ranked: np.ndarray, targets: Sequence[int], kinds: Sequence[str]) -> dict[str, Any]:
    """hit@n of a ranking (Q, >= max(HIT_AT)) of database indices: `targets[q]` among the
    first n; overall and per kind (in order of first appearance)."""
    target = np.asarray(targets, dtype=np.int64)[:, None]
    hits = {n: (ranked[:, :n] == target).any(axis=1) for n in HIT_AT}
    kind_arr = np.asarray(kinds)

    def summary(mask: np.ndarray) -> dict[str, Any]:
        out: dict[str, Any] = {"queries": int(mask.sum())}
        for n in HIT_AT:
            out[f"hit@{n}"] = float(hits[n][mask].mean()) if mask.any() else 0.0
        return out

    return {
        "overall": summary(np.ones(len(target), dtype=bool)),
        "per_kind": {t: summary(kind_arr == t) for t in dict.fromkeys(kinds)},
    }


def evaluate_near_duplicates(
    database: np.ndarray, queries: np.ndarray, targets: Sequence[int], transforms: Sequence[str]
) -> dict[str, Any]:
    """hit@n: the query's original (`targets[q]`, a database index) is among the first n."""
    rates = hit_rates(top_k(queries, database, max(HIT_AT)), targets, transforms)
    return {
        "indexed": int(database.shape[0]),
        "overall": rates["overall"],
        "per_transform": rates["per_kind"],
    }


def evaluate_crops(
    ranked: np.ndarray,
    indexed: int,
    targets: Sequence[int],
    kinds: Sequence[str],
    flat: Sequence[bool],
    order: Sequence[str] = (),
) -> dict[str, Any]:
    """hit@n of crop queries (the crop's original among the first n of `ranked`, a (Q, >= 10)
    array of database indices), textured and flat crops apart: no method can place a crop of
    blue sky, so those would only blur the figure that matters. Kinds listed in `order` come
    first, in that order."""
    flat_arr = np.asarray(flat, dtype=bool)
    out: dict[str, Any] = {"indexed": indexed}
    for name, mask in (("textured", ~flat_arr), ("flat", flat_arr)):
        rows = [int(i) for i in np.nonzero(mask)[0]]
        out[name] = hit_rates(
            ranked[rows].reshape(len(rows), ranked.shape[1]),
            [targets[i] for i in rows],
            [kinds[i] for i in rows],
        )
        rank = {kind: i for i, kind in enumerate(order)}
        per_kind = out[name]["per_kind"]
        out[name]["per_kind"] = dict(
            sorted(per_kind.items(), key=lambda item: rank.get(item[0], len(rank)))
        )
    return out
