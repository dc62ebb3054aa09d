"""The stack: the policy, the model version each layer has published, and the serving call.

Every slate a policy returns is checked here, at the boundary, so that a wrong shape or an
invalid id fails with the policy's name and the simulated time, not deep inside numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sim.domain import CatalogView, Requests, View
from sim.durations import format_duration
from sim.errors import PolicyError

__all__ = ["Stack", "check_slates"]


class Stack:
    """What is served: a policy plus the state the layers have published for it."""

    def __init__(self, policy: Any, slate_size: int, layers: tuple[str, ...] = ()):
        self.policy = policy
        self.slate_size = slate_size
        self.model: Any = None
        self.versions = {layer: 0 for layer in layers}

    @property
    def policy_name(self) -> str:
        return str(getattr(self.policy, "name", type(self.policy).__name__))

    def publish(self, layer: str, version: int, model: Any) -> None:
        """Serve ``model`` as ``layer``'s ``version`` from now on."""
        self.model = model
        self.versions[layer] = version

    def rank(
        self, requests: Requests, catalog: CatalogView, n_users: int, now: float
    ) -> np.ndarray:
        view = View(
            now=now,
            model=self.model,
            catalog=catalog,
            n_users=n_users,
            versions=dict(self.versions),
        )
        try:
            slates = self.policy.rank(requests, view)
        except Exception as error:
            raise PolicyError(
                f"policy {self.policy_name!r} failed in rank at simulated time "
                f"{format_duration(now)}: {type(error).__name__}: {error}"
            ) from error
        return check_slates(
            slates, len(requests), requests.k, catalog.n_items, self.policy_name, now
        )


def check_slates(slates: Any, n: int, k: int, n_items: int, policy: str, now: float) -> np.ndarray:
    """``slates`` as an ``(n, k)`` integer array of distinct live ids, or a :class:`PolicyError`."""
    where = f"policy {policy!r} rank at simulated time {format_duration(now)}"
    array = np.asarray(slates)
    if array.shape != (n, k):
        raise PolicyError(f"{where}: returned shape {array.shape}, expected ({n}, {k})")
    if not np.issubdtype(array.dtype, np.integer):
        raise PolicyError(f"{where}: returned dtype {array.dtype}, expected integer item ids")
    if n == 0:
        return array.astype(np.int64)
    low, high = int(array.min()), int(array.max())
    if low < 0 or high >= n_items:
        bad = low if low < 0 else high
        raise PolicyError(f"{where}: returned item id {bad}, live ids are 0..{n_items - 1}")
    if k > 1:
        ordered = np.sort(array, axis=1)
        repeated = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)
        if repeated.any():
            row = int(np.flatnonzero(repeated)[0])
            raise PolicyError(f"{where}: slate {row} repeats an item: {array[row].tolist()}")
    return array.astype(np.int64, copy=False)
