"""The policy protocol: a policy ranks; the scenario's layers decide when it learns.

Serving calls ``rank(requests, view)`` once per batch of requests and expects an ``(n, k)`` array
of distinct live item ids per row. A policy may also provide ``fit(data) -> model``: the retrain
layer calls it on its cadence with the events visible to it, and the returned model is the new
version, served as ``view.model`` from the time the layer publishes it. Models are snapshots:
``fit`` builds a new one and never mutates a model already serving traffic (a canary serves two
versions at once).
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from policies.kernels import select_top_k
from sim.domain import Requests, View

__all__ = ["Policy", "BasePolicy", "PerRequestPolicy", "NoParams", "top_k", "scratch_matrix"]


@runtime_checkable
class Policy(Protocol):
    """What serving needs from a policy."""

    name: str

    def rank(self, requests: Requests, view: View) -> np.ndarray:
        """Item ids, shape ``(len(requests), requests.k)``, distinct within each row."""
        ...


class NoParams(BaseModel):
    """Parameters of a policy that takes none."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class BasePolicy:
    """Convenience base: validated parameters, a seeded generator, ``clone()``.

    Subclasses set ``name`` and, when they take parameters, a pydantic ``Params`` model; the
    constructor stores parameters and nothing more, learned state lives in the models ``fit``
    returns.
    """

    name: ClassVar[str] = "base"
    Params: ClassVar[type[BaseModel]] = NoParams

    def __init__(self, params: BaseModel | dict[str, Any] | None = None, *, seed: int = 0):
        self.params = (
            params if isinstance(params, self.Params) else self.Params.model_validate(params or {})
        )
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def clone(self) -> BasePolicy:
        """A fresh policy with the same parameters and seed."""
        return type(self)(self.params, seed=self.seed)

    def rank(self, requests: Requests, view: View) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params!r}, seed={self.seed})"


class PerRequestPolicy(BasePolicy):
    """For people who do not want to vectorize: implement ``rank_one``, one request at a time.

    ``rank_one(user, time, k, view)`` returns ``k`` distinct live item ids for one request. The
    batch loop runs in Python, so every request pays a Python call plus whatever ``rank_one``
    does itself. Measured on 5,000 items with random scores and a top-k: 65 us a request this
    way against 23 us for the same scores computed for the whole batch, and the gap grows with
    every per-item Python operation in ``rank_one``. Fine for trying an idea on a small
    scenario; vectorize ``rank`` before a real sweep.
    """

    def rank(self, requests: Requests, view: View) -> np.ndarray:
        slates = np.empty((len(requests), requests.k), np.int64)
        for row, (user, time) in enumerate(zip(requests.users, requests.times, strict=True)):
            slates[row] = self.rank_one(int(user), float(time), requests.k, view)
        return slates

    def rank_one(self, user: int, time: float, k: int, view: View) -> Any:  # pragma: no cover
        raise NotImplementedError


def _refuse_nan(values: torch.Tensor) -> None:
    bad = torch.isnan(values).any(dim=1)
    if bool(bad.any()):
        raise ValueError(f"scores hold NaN for {int(bad.sum())} request(s); they cannot be ranked")


class _Scratch:
    """Reusable float32 storage for a serving batch's dense ``(requests, items)`` matrices.

    Runs map every allocation over 1 MiB on its own (``sim.serving.memory.return_freed_arrays``),
    so a fresh multi-megabyte array per batch is mapped from the operating system, faulted in page
    by page and handed back every time: at 100,000 users x 5,000 items with every layer on, that
    kernel time was 40% of a run's wall time.
    """

    def __init__(self) -> None:
        self._flat: dict[str, np.ndarray] = {}

    def matrix(self, name: str, rows: int, columns: int) -> np.ndarray:
        size = rows * columns
        flat = self._flat.get(name)
        if flat is None or flat.shape[0] < size:
            flat = self._flat[name] = np.empty(size + size // 2, np.float32)  # room to grow
        return flat[:size].reshape(rows, columns)


_SCRATCH = _Scratch()


def scratch_matrix(name: str, rows: int, columns: int) -> np.ndarray:
    """An uninitialized ``(rows, columns)`` float32 matrix, reused by the next call with the same
    ``name``: for values used within one ``rank`` call and dropped before it returns (serving
    is single-threaded within a run).

    >>> a = scratch_matrix("doctest", 2, 3)
    >>> a.shape, a.dtype, scratch_matrix("doctest", 3, 2).base is a.base
    ((2, 3), dtype('float32'), True)
    """
    return _SCRATCH.matrix(name, rows, columns)


#: Items per block in the exact block-max prefilter of :func:`top_k`.
TOP_K_BLOCK = 64


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest scores in each row, best first; equal scores in column order.

    >>> top_k(np.array([[0.1, 0.9, 0.5], [3.0, 1.0, 2.0]]), 2)
    array([[1, 2],
           [0, 2]])

    Exact: the k best items of a row lie in the k blocks of ``TOP_K_BLOCK`` columns with the
    largest block maxima (a block outside them has a maximum below k other blocks' maxima, so
    below k distinct items). torch takes the block maxima (8x numpy's reduction over 64), a
    compiled kernel (:func:`policies.kernels.select_top_k`) the k best of those k blocks: about
    2x faster than the same prefilter done with torch.topk and gathers (which is itself 3-4x
    faster than torch.topk over every item). Rows shorter than ``4 k`` blocks skip the
    prefilter. Scores are compared as float32. NaN scores cannot be ordered: they raise
    ``ValueError`` (the run then fails naming the policy), never a silently arbitrary slate.
    """
    scores = np.ascontiguousarray(scores, dtype=np.float32)
    n, m = scores.shape
    if not 0 <= k <= m:
        raise ValueError(f"cannot take the {k} best of {m} scores")
    if k == 0:
        return np.empty((n, 0), np.int64)
    blocks = m // TOP_K_BLOCK
    if blocks < 4 * k:
        _refuse_nan(torch.from_numpy(scores))
        return select_top_k(scores, np.empty((n, 0), np.float32), TOP_K_BLOCK, k)
    body = blocks * TOP_K_BLOCK
    grouped = torch.from_numpy(scores[:, :body].reshape(n, blocks, TOP_K_BLOCK))
    maxima = grouped.amax(dim=2)
    _refuse_nan(maxima)  # a NaN anywhere in a block makes its maximum NaN
    _refuse_nan(torch.from_numpy(scores[:, body:]))
    return select_top_k(scores, maxima.numpy(), TOP_K_BLOCK, k)
