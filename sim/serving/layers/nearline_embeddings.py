"""The ``nearline_embeddings`` layer (layer 2): user embeddings recomputed from recent behaviour
in several windows, through the policy's ``refresh`` hook."""

from __future__ import annotations

from typing import Any

import numpy as np

from sim.domain import EventTable, Kind, RefreshData, TrainingData
from sim.scenario.spec import NearlineEmbeddings
from sim.serving.layers.base import LayerContext, call_policy_hook
from sim.serving.layers.runtime import (
    EVERYONE,
    LABELLED_NEGATIVES,
    Effect,
    Reads,
    changed_rows,
    nobody,
)

__all__ = ["PolicyRefresh"]


class PolicyRefresh:
    """The ``nearline_embeddings`` layer's math: the policy's ``refresh`` hook, given the visible
    events (the policy picks its windows from them) and the model deployed at trigger time.

    A refresh reflects what the layer hands it to fold in: clicks and, with a ``negative_weight``,
    rejections (short dwells and explicit negatives), on items. It changes the users whose served
    vectors it changed: compared with the near-line vectors serving now if they belong to the
    same model, else with the model's own user vectors (a state with ``model`` and ``users``, as
    :class:`policies.builtin.NearlineEmbeddings`; any other new state changes everyone).
    """

    name = "nearline_embeddings"
    Params = NearlineEmbeddings
    policy_hook = "refresh"
    incremental = False

    def __init__(
        self, policy: Any, policy_name: str, spec: Any, deployed: Any, timeout: float = 0.0
    ):
        self.policy = policy
        self.policy_name = policy_name
        self.timeout = timeout
        self.windows = tuple((window.span, window.weight) for window in spec.windows)
        self.negative_weight = spec.negative_weight
        self.deployed = deployed  # callable: the model serving outside canaries now
        folded = (Kind.CLICK, *LABELLED_NEGATIVES) if spec.negative_weight else (Kind.CLICK,)
        self.reads = Reads(kinds=folded, on_item=True)

    @classmethod
    def create(cls, params: NearlineEmbeddings, context: LayerContext) -> PolicyRefresh:
        return cls(context.policy, context.policy_name, params, context.model, context.hook_timeout)

    def initial_state(self) -> None:
        return None

    def compute(self, data: TrainingData) -> Any:
        refresh = RefreshData(
            events=data.events,
            catalog=data.catalog,
            n_users=data.n_users,
            now=data.now,
            horizon=data.horizon,
            model=self.deployed(),
            windows=self.windows,
            negative_weight=self.negative_weight,
        )
        return call_policy_hook(
            self.policy_name, "refresh", data.now, self.policy.refresh, refresh, self.timeout
        )

    def effect(self, previous: Any, new: Any) -> Effect:
        if new is None:
            return nobody("its refresh returned no state: there was no model to fold users into")
        if new is previous:
            return nobody("the policy's refresh returned the state already served")
        model, users = getattr(new, "model", None), getattr(new, "users", None)
        if model is None or not isinstance(users, np.ndarray):
            return EVERYONE
        if model is not self.deployed():
            return nobody("its vectors belong to a model that no longer serves")
        same_model = previous is not None and getattr(previous, "model", None) is model
        served = previous.users if same_model else getattr(model, "users", None)
        if not isinstance(served, np.ndarray) or served.shape != users.shape:
            return EVERYONE
        return changed_rows([(users, served, False)], "no user's vector changed")

    def absorb(self, state: Any, events: EventTable) -> None:  # pragma: no cover - batch kind
        raise NotImplementedError
