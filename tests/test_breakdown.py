"""``recloop run --profile``'s table: components, and ranking against bare matrix products."""

from __future__ import annotations

import re

from sim.measuring.breakdown import profile_table


def summary(windows: int, items: float) -> dict:
    return {
        "wall_seconds_by_component": {"arrivals": 3.0, "ranking": 9.0},
        "requests": 1_000_000,
        "wall_seconds": 14.0,
        "windows": windows,
        "policy_diagnostics": {
            "vector_width": 17,
            "items_scored_per_request": items,
            "model_scored_requests": 1_000_000,
            "scores_per_pass": 2**20,
        },
    }


def test_profile_lists_components_with_their_share_and_cost_per_request():
    table = profile_table([summary(10_000, 1_000.0)])
    assert re.search(r"arrivals\s+3\.00\s+21%\s+3\.00", table)
    assert re.search(r"ranking\s+9\.00\s+64%\s+9\.00", table)
    assert re.search(r"other \(engine, SimPy\)\s+2\.00", table)
    assert "batches of ~100" in table


def test_large_windows_are_also_compared_with_the_product_in_serving_passes():
    """Windows of 1,000 requests x 10,000 items exceed one pass (2**20 // 10,000 = 104 requests,
    from the policy's diagnostics): the table adds the bare product in passes of that size; small
    windows do not."""
    large = profile_table([summary(1_000, 10_000.0)])
    match = re.search(r"in passes of (\d+) requests .*: ([\d.]+) us/request; ranking costs", large)
    assert match is not None and int(match.group(1)) == 104 and float(match.group(2)) > 0
    assert "in passes of" not in profile_table([summary(10_000, 1_000.0)])
