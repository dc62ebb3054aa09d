"""Compiled loops for the serving steps that numpy and torch can only do in several passes.

Selecting a slate from a ``(requests, items)`` score matrix is mostly bookkeeping around a few
hundred comparisons per row; in numpy or torch it takes a dozen whole-array operations per batch
(partial sorts, gathers, concatenations), each paying its call and a pass over memory. These
numba kernels do the same work in one pass per row. They are compiled on first use and cached
on disk (``cache=True``), so later processes load them in milliseconds.

Ties are broken towards the lower column, so results do not depend on how a library happens to
order equal values.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["select_top_k", "best_member", "uniform_fill"]


@njit(cache=True, nogil=True)
def _insert(values: np.ndarray, columns: np.ndarray, filled: int, value, column: int) -> int:
    """Insert ``(value, column)`` into the ``filled`` best-first entries of ``values`` and
    ``columns`` (capacity ``values.shape[0]``; the worst entry drops out when full); a value equal
    to an entry goes after it. Returns the new fill."""
    capacity = values.shape[0]
    position = filled if filled < capacity else capacity - 1
    while position > 0 and values[position - 1] < value:
        values[position] = values[position - 1]
        columns[position] = columns[position - 1]
        position -= 1
    values[position] = value
    columns[position] = column
    return filled + 1 if filled < capacity else filled


@njit(cache=True, nogil=True)
def select_top_k(scores: np.ndarray, maxima: np.ndarray, block: int, k: int) -> np.ndarray:
    """Columns of the ``k`` largest scores per row, best first, ties to the lower column.

    ``maxima`` holds each row's maximum over every full block of ``block`` columns (``(n, 0)``:
    no prefilter, every column is scanned). The k best items of a row lie in the k blocks with
    the largest maxima, taken with ties to the lower block, plus the ragged tail after the last
    full block; and the k-th largest of those maxima is a floor under the k-th best score (they
    are k distinct items), so only columns at or above it are inserted. NaN scores are never
    selected: callers refuse them first.
    """
    n, m = scores.shape
    blocks = maxima.shape[1]
    chosen_count = min(k, blocks)
    out = np.empty((n, k), np.int64)
    best = np.empty(k, scores.dtype)
    chosen_maxima = np.empty(max(chosen_count, 1), maxima.dtype)
    chosen = np.empty(max(chosen_count, 1), np.int64)
    for row in range(n):
        floor = -np.inf
        if chosen_count > 0:
            filled = 0
            for b in range(blocks):
                value = maxima[row, b]
                if filled == chosen_count and not value > chosen_maxima[chosen_count - 1]:
                    continue
                filled = _insert(chosen_maxima[:chosen_count], chosen, filled, value, b)
            floor = chosen_maxima[chosen_count - 1]
        chosen[:chosen_count].sort()  # scan in column order so that equal scores keep it
        filled = 0
        for c in range(chosen_count + 1):
            if c < chosen_count:
                start, stop = chosen[c] * block, chosen[c] * block + block
            else:
                start, stop = blocks * block, m
            for column in range(start, stop):
                value = scores[row, column]
                if filled < k:
                    if not value >= floor:
                        continue
                elif not value > best[k - 1]:  # an equal later column does not displace
                    continue
                filled = _insert(best, out[row], filled, value, column)
    return out


@njit(cache=True, nogil=True)
def best_member(scores: np.ndarray, members: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Per row, the first column of ``members[groups[row]]`` (ids padded at the end with -1)
    with the row's largest score, or -1 if the group has no member."""
    n = scores.shape[0]
    out = np.full(n, -1, np.int64)
    for row in range(n):
        group = members[groups[row]]
        best = scores[row, 0]
        for column in group:
            if column < 0:
                break
            value = scores[row, column]
            if out[row] < 0 or value > best:
                best = value
                out[row] = column
    return out


_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)


def uniform_fill(out: np.ndarray, seed: int) -> None:
    """Fill the C-contiguous float32 ``out`` with uniforms on [0, 1), 24 random bits each.

    The values are SplitMix64's sequence from ``seed`` (any integer, taken modulo 2**64; Steele,
    Lea and Flood 2014; it passes BigCrush), element ``i`` computed from ``seed + (i + 1) *
    gamma`` alone, so the loop vectorizes: 10x faster than numpy's generator on a serving
    batch's random scores, which were the largest cost of serving before a first model with
    layers on.
    """
    if not out.flags.c_contiguous or out.dtype != np.float32:
        raise ValueError("uniform_fill writes C-contiguous float32 arrays in place")
    _uniform_fill(out.reshape(-1), np.uint64(seed % 2**64))


@njit(cache=True, nogil=True)
def _uniform_fill(flat: np.ndarray, state: np.uint64) -> None:
    for i in range(flat.shape[0]):
        z = state + np.uint64(i + 1) * _GAMMA
        z = (z ^ (z >> np.uint64(30))) * _MIX_1
        z = (z ^ (z >> np.uint64(27))) * _MIX_2
        z = z ^ (z >> np.uint64(31))
        flat[i] = np.float32(z >> np.uint64(40)) * np.float32(1.0 / 16777216.0)
