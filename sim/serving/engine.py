"""The serving loop: micro-batched windows of simulated time on a SimPy environment.

All requests due in one window are ranked and answered in one vectorized call. A window is at most
``tick`` long and ends early at the next scheduled event of any other process (a layer trigger or
release, drift, a new item), so every state change is in force exactly from its time on; a window
with no due request is skipped. With ``tick`` no longer than the fastest feedback path, batching
changes speed, not answers.
"""

from __future__ import annotations

import time as wallclock
from collections.abc import Callable
from typing import Any

import numpy as np
import simpy
from simpy.events import Event, EventPriority

from sim.domain import Kind, Responses, Scope, World
from sim.errors import USER_CODE_ERRORS, UserModelError, said
from sim.scenario.durations import humanize_duration
from sim.scenario.plugins import own_name
from sim.serving.eventlog import EventLog
from sim.serving.stack import Stack

__all__ = ["Engine", "LATE", "check_responses"]

#: SimPy priority of the serving step: after every URGENT (0) and NORMAL (1) event at the same
#: instant, so that releases and triggers at time t are in force for requests at t.
LATE = EventPriority(2)


class _LateTimeout(Event):
    """A timeout scheduled with priority ``LATE`` (SimPy's Timeout is always NORMAL)."""

    def __init__(self, env: simpy.Environment, delay: float):
        super().__init__(env)
        # NOTE: the same two fields simpy.Timeout sets before scheduling itself.
        self._ok = True
        self._value = None
        env.schedule(self, LATE, delay)


class Engine:
    """Drives the world's requests through the stack and logs what happened."""

    def __init__(
        self,
        env: simpy.Environment,
        world: World,
        stack: Stack,
        log: EventLog,
        layers: list[Any],
        tick: float,
        end: float,
        on_window: Callable[[float], None] | None = None,
    ):
        self.env = env
        self.world = world
        self.stack = stack
        self.log = log
        self.layers = layers
        self.tick = tick
        self.end = end
        self.on_window = on_window
        self.windows = 0
        self.requests = 0
        self.wall = {"arrivals": 0.0, "ranking": 0.0, "behavior": 0.0, "logging": 0.0}

    def start(self) -> None:
        self.env.process(self._serve())

    def _serve(self) -> Any:
        env, world = self.env, self.world
        while env.now < self.end:
            now = env.now
            started = wallclock.perf_counter()
            due = world.next_request_time()
            self.wall["arrivals"] += wallclock.perf_counter() - started
            if due > now:  # nothing due: skip to the next request or the next other event
                yield _LateTimeout(env, min(due, env.peek(), self.end) - now)
                continue
            triggered = [layer.before_window(now) for layer in self.layers]
            until = min(now + self.tick, env.peek(), self.end)
            if any(triggered) or until <= now:
                # an update started (or another event is due) at this very instant: let it run
                # first, so that what it publishes now serves this window
                yield _LateTimeout(env, 0.0)
                continue
            self._serve_window(now, until)
            yield _LateTimeout(env, until - now)
            if self.on_window is not None:
                self.on_window(env.now)

    def _serve_window(self, now: float, until: float) -> None:
        clock = wallclock.perf_counter
        t0 = clock()
        batch = self.world.take_requests(until)
        requests = batch.requests
        t1 = clock()
        self.wall["arrivals"] += t1 - t0
        if not len(requests):
            return
        slates, versions = self.stack.rank(
            requests, self.world.catalog_view(), self.world.n_users, now
        )
        t2 = clock()
        try:
            responses = self.world.respond(batch, slates)
        except USER_CODE_ERRORS as error:
            raise UserModelError(
                f"user model {own_name(self.world)!r} failed in respond at simulated time "
                f"{humanize_duration(now)}: {said(error)}"
            ) from error
        responses = check_responses(responses, len(requests), requests.k, self.world, now)
        t3 = clock()
        last = getattr(batch, "last", None)  # a world that knows where its sessions end
        ended = None if last is None else last | responses.abandoned
        self.log.append_slates(requests, slates, responses, versions, ended)
        self.wall["ranking"] += t2 - t1
        self.wall["behavior"] += t3 - t2
        self.wall["logging"] += clock() - t3
        self.windows += 1
        self.requests += len(requests)


#: What a response may say about one impression (an abandon is the session's, logged apart).
_IMPRESSION_KINDS = (0, int(Kind.BLOCK_CREATOR))
_IMPRESSION_SCOPES = (0, int(Scope.CREATOR))


def check_responses(responses: Any, n: int, k: int, world: Any, now: float) -> Responses:
    """``responses`` with the shapes and dtypes the event log holds, or a
    :class:`UserModelError` naming the model, the field and the simulated time."""

    def refused(problem: str) -> UserModelError:  # formatted only on failure: runs per window
        return UserModelError(
            f"user model {own_name(world)!r} respond at simulated time "
            f"{humanize_duration(now)}: {problem}"
        )

    if not isinstance(responses, Responses):
        raise refused(f"returned {type(responses).__name__}, expected sim.domain.Responses")
    checked = {}
    for name, shape, dtype, bounds in (
        ("kind", (n, k), np.int8, _IMPRESSION_KINDS),
        ("scope", (n, k), np.int8, _IMPRESSION_SCOPES),
        ("dwell", (n, k), np.float32, None),
        ("abandoned", (n,), np.bool_, None),
    ):
        array = np.asarray(getattr(responses, name))
        if array.shape != shape:
            raise refused(f"{name} has shape {array.shape}, expected {shape}")
        if bounds is not None:
            if not np.issubdtype(array.dtype, np.integer):
                raise refused(f"{name} has dtype {array.dtype}, expected integer codes")
            if n and (int(array.min()) < bounds[0] or int(array.max()) > bounds[1]):
                bad = int(array.min()) if int(array.min()) < bounds[0] else int(array.max())
                raise refused(f"{name} code {bad} is not one of {bounds[0]}..{bounds[1]}")
        elif name == "dwell" and n and not (np.isfinite(array).all() and array.min() >= 0):
            raise refused("dwell must be finite seconds, at least 0")
        elif name == "abandoned" and array.dtype != np.bool_:
            raise refused(f"abandoned has dtype {array.dtype}, expected bool")
        checked[name] = array.astype(dtype, copy=False)
    return Responses(**checked)
