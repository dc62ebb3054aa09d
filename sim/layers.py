"""Update layers: when, and from which events, the policy's served state changes.

A layer is a SimPy process. Its trigger reads the events visible to it (``time + latency <
trigger``), asks the policy for a new model, and publishes it ``compute_time`` later as a new
version. Every version is recorded exactly (trigger time, event-time horizon, live time, events
covered), which is what propagation delays are derived from.
"""

from __future__ import annotations

import time as wallclock
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from sim.domain import TrainingData, World
from sim.durations import format_duration
from sim.errors import PolicyError
from sim.eventlog import EventLog
from sim.spec import RetrainLayer
from sim.stack import Stack

__all__ = ["Version", "PeriodicRetrain"]


@dataclass(frozen=True)
class Version:
    """One published state of a layer."""

    layer: str
    version: int
    triggered_at: float  # simulated seconds
    horizon: float  # covers events with time < horizon
    live_at: float  # serves traffic from this time
    cohort: str  # which traffic it serves
    events: int  # events it was computed from
    wall_seconds: float  # compute it took in this process (not simulated time)

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


class PeriodicRetrain:
    """The ``retrain`` layer: fit the policy every ``every``, publish after ``compute_time``."""

    name = "retrain"

    def __init__(
        self,
        spec: RetrainLayer,
        stack: Stack,
        log: EventLog,
        world: World,
        rng: np.random.Generator,
    ):
        self.spec = spec
        self.stack = stack
        self.log = log
        self.world = world
        self.phase = float(rng.uniform(0.0, spec.every)) if spec.phase == "random" else spec.phase
        self.history: list[Version] = []
        self.wall_seconds = 0.0

    def start(self, env: Any) -> None:
        env.process(self._triggers(env))

    def _triggers(self, env: Any):
        yield env.timeout(self.phase)
        while True:
            env.process(self._update(env, len(self.history) + 1))
            yield env.timeout(self.spec.every)

    def _update(self, env: Any, version: int):
        triggered = env.now
        horizon = triggered - self.spec.latency
        data = TrainingData(
            events=self.log.visible(horizon),
            catalog=self.world.catalog_view(),
            n_users=self.world.n_users,
            now=triggered,
            horizon=horizon,
        )
        started = wallclock.perf_counter()
        try:
            model = self.stack.policy.fit(data)
        except Exception as error:
            raise PolicyError(
                f"policy {self.stack.policy_name!r} failed in fit at simulated time "
                f"{format_duration(triggered)}: {type(error).__name__}: {error}"
            ) from error
        spent = wallclock.perf_counter() - started
        self.wall_seconds += spent
        yield env.timeout(self.spec.compute_time)
        self.stack.publish(self.name, version, model)
        self.history.append(
            Version(
                layer=self.name,
                version=version,
                triggered_at=triggered,
                horizon=horizon,
                live_at=env.now,
                cohort="all",
                events=len(data.events),
                wall_seconds=spent,
            )
        )
