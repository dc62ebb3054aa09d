"""``recloop run --profile``: where a run's wall time went, and ranking against a bare matmul.

Every run's ``summary.json`` has ``wall_seconds_by_component`` (arrivals, ranking, behaviour,
logging, each layer's updates, metrics). Ranking is compared with what its arithmetic alone costs
on this machine: a float32 matrix product of the same shape (the average serving batch x the
policy's vector width x the items it scored per request), timed here on one thread, as serving
runs. Only policies that report their scoring shape in ``diagnostics()`` get the comparison.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

__all__ = ["profile_table", "matmul_seconds"]

#: Components in the order a request meets them; layers and anything else follow.
ORDER = ("arrivals", "ranking", "behavior", "logging")


def matmul_seconds(rows: int, width: int, columns: int, repeat_for: float = 0.3) -> float:
    """Best wall seconds of one ``(rows, width) @ (width, columns)`` float32 product, one thread,
    into a reused output (as serving's scratch matrices are)."""
    rng = np.random.default_rng(0)
    left = rng.standard_normal((rows, width), dtype=np.float32)
    right = rng.standard_normal((width, columns), dtype=np.float32)
    out = np.empty((rows, columns), np.float32)
    best = np.inf
    with threadpool_limits(limits=1):
        deadline = time.perf_counter() + repeat_for
        while time.perf_counter() < deadline or not np.isfinite(best):
            started = time.perf_counter()
            np.matmul(left, right, out=out)
            best = min(best, time.perf_counter() - started)
    return best


def profile_table(summaries: list[dict[str, Any]]) -> str:
    """The wall time by component summed over ``summaries`` (one per run), as text."""
    seconds: dict[str, float] = {}
    for summary in summaries:
        for name, value in summary["wall_seconds_by_component"].items():
            seconds[name] = seconds.get(name, 0.0) + value
    requests = sum(summary["requests"] for summary in summaries) or 0
    wall = sum(summary["wall_seconds"] for summary in summaries)
    names = [name for name in ORDER if name in seconds]
    names += sorted(name for name in seconds if name not in ORDER)
    runs = f"{len(summaries)} run{'s' if len(summaries) > 1 else ''}"
    lines = [f"where the time went ({runs}, {requests:,} requests):"]
    lines.append(f"  {'component':<28}{'seconds':>9}{'share':>8}{'us/request':>12}")
    accounted = sum(seconds.values())
    rows = [(name, seconds[name]) for name in names]
    rows.append(("other (engine, SimPy)", max(wall + seconds.get("metrics", 0.0) - accounted, 0.0)))
    total = wall + seconds.get("metrics", 0.0)
    for name, value in rows:
        share = f"{100 * value / total:.0f}%" if total > 0 else "n/a"
        per = f"{1e6 * value / requests:.2f}" if requests else "n/a"
        lines.append(f"  {name:<28}{value:>9.2f}{share:>8}{per:>12}")
    lines.append(f"  {'total':<28}{total:>9.2f}")
    lines += _ranking_reference(summaries, seconds.get("ranking", 0.0), requests)
    return "\n".join(lines)


def _ranking_reference(summaries: list[dict[str, Any]], ranking: float, requests: int) -> list[str]:
    shapes = [s.get("policy_diagnostics", {}) for s in summaries]
    scored = sum(d.get("model_scored_requests", 0) for d in shapes)
    if not scored or not all(
        "vector_width" in d and "items_scored_per_request" in d for d in shapes
    ):
        return ["  ranking reference: n/a (the policy does not report its scoring shape)"]
    width = shapes[0]["vector_width"]
    items = sum(d["items_scored_per_request"] * d["model_scored_requests"] for d in shapes) / scored
    windows = sum(s["windows"] for s in summaries)
    batch = max(1, round(requests / max(windows, 1)))
    columns = max(1, round(items))
    bare = matmul_seconds(batch, width, columns) / batch
    flops = 2.0 * width * items
    apart = [
        (name, sum(d.get("retrieval", {}).get(key, 0.0) for d in shapes))
        for name, key in (
            ("measuring retrieval recall", "recall_wall_seconds"),
            ("building retrieval indexes", "index_build_wall_seconds"),
        )
    ]
    notes = [
        f"  ranking includes {seconds:.2f} s {name} (left out below)"
        for name, seconds in apart
        if seconds
    ]
    ranking -= sum(seconds for _, seconds in apart)
    if ranking <= 0:
        return [*notes, "  ranking: no serving time measured"]
    per_request = ranking / max(requests, 1)
    achieved = flops * scored / ranking / 1e9
    return notes + [
        f"  ranking: {1e6 * per_request:.2f} us/request, {achieved:.2f} GFLOP/s of scoring "
        f"({width} x {items:,.0f} items per request, batches of ~{batch})",
        f"  a bare float32 matmul of that shape here: {1e6 * bare:.2f} us/request, "
        f"{flops / bare / 1e9:.2f} GFLOP/s; ranking costs {per_request / bare:.1f}x it "
        "(ranking also applies the layers' adjustments, the bandit and the top-k)",
        *_in_passes(shapes[0].get("scores_per_pass"), batch, width, columns, per_request),
    ]


def _in_passes(
    scores_per_pass: int | None, batch: int, width: int, columns: int, per_request: float
) -> list[str]:
    """The bare product in the passes the policy multiplies a large window out in, if it does
    (``scores_per_pass`` from its diagnostics)."""
    if not scores_per_pass:
        return []
    rows = max(1, scores_per_pass // columns)
    if rows >= batch:
        return []
    bare = matmul_seconds(rows, width, columns) / rows
    return [
        f"  the same product in passes of {rows} requests (as serving multiplies it out, so that "
        f"the top-k reads it from cache): {1e6 * bare:.2f} us/request; ranking costs "
        f"{per_request / bare:.1f}x it"
    ]
