"""The stack: the policy, the model version each layer has published, and the serving call.

Every slate a policy returns is checked here, at the boundary, so that a wrong shape or an
invalid id fails with the policy's name and the simulated time, not deep inside numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sim.domain import CatalogView, Requests, View
from sim.errors import USER_CODE_ERRORS, PolicyError, said
from sim.scenario.durations import humanize_duration
from sim.scenario.plugins import own_name
from sim.serving.deadline import deadline

__all__ = ["Stack", "check_slates"]


class Stack:
    """What is served: a policy plus the state each layer has published, per cohort.

    A layer in the middle of a canary serves its new version to its canary users and the previous
    one to everyone else; a batch of requests is split into groups that see the same versions and
    each group is ranked with its own :class:`View`.
    """

    def __init__(self, policy: Any, slate_size: int):
        self.policy = policy
        self.slate_size = slate_size
        self._main: dict[str, tuple[int, Any]] = {}
        self._canary: dict[str, tuple[int, Any]] = {}
        self._canary_users: dict[str, np.ndarray] = {}
        self._serve_hooks: dict[str, Any] = {}
        #: The world's ground truth, handed to a policy that declares ``oracle = True`` only.
        self.truth: Any = None
        #: Wall seconds one ``rank`` call may take (0: no limit).
        self.hook_timeout = 0.0

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(self._main)

    def add_layer(self, layer: str) -> None:
        """Serve ``layer``'s state from now on (``None`` until it publishes a version)."""
        self._main[layer] = (0, None)

    @property
    def policy_name(self) -> str:
        """The policy's own ``name``, or ``module:Class`` for a class that inherits its name
        (a subclass of ``RandomPolicy`` is not ``random``)."""
        return own_name(self.policy)

    @property
    def model(self) -> Any:
        """The retrain layer's state served outside any canary (``None`` before the first)."""
        return self._main.get("retrain", (0, None))[1]

    def set_canary_users(self, layer: str, users: np.ndarray) -> None:
        self._canary_users[layer] = users

    def set_serve_hook(self, layer: str, hook: Any) -> None:
        """``hook(version, state, requests) -> (state to serve, per-request versions)``."""
        self._serve_hooks[layer] = hook

    def publish(self, layer: str, version: int, state: Any, cohort: str = "all") -> None:
        """Serve ``state`` as ``layer``'s ``version`` to ``cohort`` from now on."""
        if cohort == "canary":
            self._canary[layer] = (version, state)
            return
        self._main[layer] = (version, state)
        if layer in self._canary and self._canary[layer][0] <= version:
            del self._canary[layer]

    def rank(
        self, requests: Requests, catalog: CatalogView, n_users: int, now: float
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Slates for every request, and the version of each layer that served each request."""
        in_canary = [layer for layer in self._canary if layer in self._canary_users]
        if not in_canary:
            return self._rank_group(requests, self._main, catalog, n_users, now)
        key = np.zeros(len(requests), np.int64)
        for bit, layer in enumerate(in_canary):
            key |= self._canary_users[layer][requests.users].astype(np.int64) << bit
        slates = np.empty((len(requests), requests.k), np.int64)
        versions: dict[str, np.ndarray] = {
            layer: np.empty(len(requests), np.int64) for layer in self.layers
        }
        for group in np.unique(key):
            rows = np.flatnonzero(key == group)
            states = dict(self._main)
            for bit, layer in enumerate(in_canary):
                if group >> bit & 1:
                    states[layer] = self._canary[layer]
            subset = requests.subset(rows)
            group_slates, group_versions = self._rank_group(subset, states, catalog, n_users, now)
            slates[rows] = group_slates
            for layer, served in group_versions.items():
                if layer in versions:  # a layer's (a snooze is served, but no layer)
                    versions[layer][rows] = served
        return slates, versions

    def _rank_group(
        self,
        requests: Requests,
        states: dict[str, tuple[int, Any]],
        catalog: CatalogView,
        n_users: int,
        now: float,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        served: dict[str, Any] = {}
        versions: dict[str, Any] = {}
        for layer, (version, state) in states.items():
            hook = self._serve_hooks.get(layer)
            per_request = None
            if hook is not None:
                state, per_request = hook(version, state, requests)
            served[layer] = state
            versions[layer] = version if per_request is None else per_request
        view = View(
            now=now,
            model=served.get("retrain"),
            states=served,
            catalog=catalog,
            n_users=n_users,
            versions={layer: version for layer, (version, _) in states.items()},
            truth=self.truth,
        )
        try:
            with deadline(self.hook_timeout):
                slates = self.policy.rank(requests, view)
        except USER_CODE_ERRORS as error:
            raise PolicyError(
                f"policy {self.policy_name!r} failed in rank at simulated time "
                f"{humanize_duration(now)}: {said(error)}"
            ) from error
        checked = check_slates(
            slates, len(requests), requests.k, catalog.n_items, self.policy_name, now
        )
        return checked, versions


def check_slates(slates: Any, n: int, k: int, n_items: int, policy: str, now: float) -> np.ndarray:
    """``slates`` as an ``(n, k)`` integer array of distinct live ids, or a :class:`PolicyError`."""

    def refused(problem: str) -> PolicyError:  # formatted only on failure: checks run per window
        return PolicyError(
            f"policy {policy!r} rank at simulated time {humanize_duration(now)}: {problem}"
        )

    array = np.asarray(slates)
    if array.shape != (n, k):
        raise refused(f"returned shape {array.shape}, expected ({n}, {k})")
    if not np.issubdtype(array.dtype, np.integer):
        raise refused(f"returned dtype {array.dtype}, expected integer item ids")
    if n == 0:
        return array.astype(np.int64)
    low, high = int(array.min()), int(array.max())
    if low < 0 or high >= n_items:
        bad = low if low < 0 else high
        raise refused(f"returned item id {bad}, live ids are 0..{n_items - 1}")
    if k > 1:
        ordered = np.sort(array, axis=1)
        repeated = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)
        if repeated.any():
            row = int(np.flatnonzero(repeated)[0])
            raise refused(f"slate {row} repeats an item: {array[row].tolist()}")
    return array.astype(np.int64, copy=False)
