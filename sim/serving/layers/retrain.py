"""The ``retrain`` layer (layer 3): the policy's ``fit`` on the logged window, then validation,
canary and rollout (all the runtime's)."""

from __future__ import annotations

from typing import Any

from sim.domain import EventTable, TrainingData
from sim.scenario.spec import RetrainLayer
from sim.serving.layers.base import LayerContext, call_policy_hook
from sim.serving.layers.runtime import EVERYONE, Effect, Reads, nobody

__all__ = ["PolicyFit"]


class PolicyFit:
    """The ``retrain`` layer's math: the policy's ``fit`` hook.

    It trains on every event in its input, with its label (see :attr:`LayerRuntime.reads`), and a
    new model changes every user's scores.
    """

    name = "retrain"
    Params = RetrainLayer
    policy_hook = "fit"
    incremental = False
    reads = Reads()

    def __init__(self, policy: Any, policy_name: str, timeout: float = 0.0):
        self.policy = policy
        self.policy_name = policy_name
        self.timeout = timeout

    @classmethod
    def create(cls, params: RetrainLayer, context: LayerContext) -> PolicyFit:
        return cls(context.policy, context.policy_name, context.hook_timeout)

    def initial_state(self) -> None:
        return None

    def compute(self, data: TrainingData) -> Any:
        return call_policy_hook(
            self.policy_name, "fit", data.now, self.policy.fit, data, self.timeout
        )

    def effect(self, previous: Any, new: Any) -> Effect:
        if new is None:
            return nobody("the policy's fit returned no model")
        if new is previous:
            return nobody("the policy's fit returned the model already served")
        return EVERYONE

    def absorb(self, state: Any, events: EventTable) -> None:  # pragma: no cover - batch kind
        raise NotImplementedError
