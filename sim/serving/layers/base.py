"""The layer plug-in API: what a layer declares, and what the shared runtime does for it.

A layer is a class with

- ``Params``: a pydantic model of its own parameters (or ``None``), validated like a policy's,
  once, before simulated time passes. A built-in's ``Params`` extends
  :class:`sim.scenario.spec.Layer`, so its parameters sit beside the trigger in
  ``stack.layers.<name>``; a plug-in's sit under ``stack.layers.<name>.params``.
- ``create(params, context)``: the layer's *kind* for one run (:class:`BaseLayer` builds the class
  itself from its validated ``params`` and a :class:`LayerContext`).

The kind says how the layer's state is made from visible events: ``incremental`` kinds
``absorb(state, events)`` in place, batch kinds ``compute(data)`` a new snapshot; optional hooks
(``reads``, ``effect``, ``reflected``, ``shared``, ``why_unchanged``, ``retention``, ``forget``,
``serve``) are listed on :class:`sim.serving.layers.runtime.LayerKind`. Serving reads the state each
layer has published (``view.states[name]``); a state with ``adjust(requests, view)`` changes
every scoring policy's scores through :func:`policies.signals.signal_scores` (see
:class:`Adjustment`).

Trigger, latency, compute time, rollout, cost, canaries and version records are the shared
runtime's (:class:`sim.serving.layers.runtime.LayerRuntime`), configured in the scenario: a layer
never sees an event before ``time + latency`` and never decides when it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel

from sim.domain import CatalogView, EventTable, TrainingData
from sim.errors import USER_CODE_ERRORS, PolicyError, said
from sim.scenario.durations import humanize_duration
from sim.scenario.spec import Layer
from sim.serving.deadline import deadline
from sim.serving.layers.runtime import Reads

__all__ = ["BaseLayer", "LayerContext", "Adjustment", "call_policy_hook"]


@dataclass(frozen=True)
class LayerContext:
    """What a layer may know about the run it serves in, when it is created."""

    name: str  # its key in stack.layers
    spec: Layer  # its trigger, latency, compute time, rollout and cost (the runtime's)
    n_users: int
    catalog: Callable[[], CatalogView]  # the observable catalogue now (it grows)
    seed: int  # its own random stream, ``kind:<name>``
    policy: Any = None  # the policy served (for layers that call its hooks)
    policy_name: str = ""
    hook_timeout: float = 0.0  # wall seconds a policy hook may take (0: no limit)
    model: Callable[[], Any] = lambda: None  # the retrain's model serving outside canaries


@dataclass(frozen=True)
class Adjustment:
    """What a layer's served state changes in every built-in policy's slates for a batch of
    requests: ``per_topic`` ``(n, topics)`` is added to the scores of each request's items of
    that topic, ``per_item`` ``(items,)`` to every request's scores of each item, and the items
    ``removed`` (``(items,)`` booleans) are never shown: demoted below anything a model scores,
    and kept out of explored slots too. An item beyond an array (newer than the state) is left
    alone."""

    per_topic: np.ndarray | None = None
    per_item: np.ndarray | None = None
    removed: np.ndarray | None = None


class BaseLayer:
    """A layer plug-in: subclass it, declare ``Params``, and implement ``compute`` (a batch
    layer) or ``absorb`` with ``incremental = True``.

    The constructor stores ``params`` (the validated ``Params``) and ``context``; state lives in
    what ``initial_state`` or ``compute`` return, never in the layer object, so that the runtime
    can serve one version while the next one computes.
    """

    #: How ``recloop layers`` and error messages name it (an entry point may give another).
    name: ClassVar[str] = ""
    #: Its own parameters (``stack.layers.<name>.params``), or None for none.
    Params: ClassVar[type[BaseModel] | None] = None
    #: True: absorb newly visible events in place; False: compute a new snapshot per update.
    incremental: ClassVar[bool] = False
    #: Events its state can reflect, for the propagation metrics (default: every event).
    reads: Reads = Reads()
    #: A policy hook the layer calls (``fit``, ``refresh``); without it the layer is off.
    policy_hook: ClassVar[str | None] = None

    def __init__(self, params: Any, context: LayerContext):
        self.params = params
        self.context = context

    @classmethod
    def create(cls, params: Any, context: LayerContext) -> Any:
        """The layer's kind for one run."""
        return cls(params, context)

    def initial_state(self) -> Any:
        """The state before any update (incremental layers); None: nothing to serve yet."""
        return None

    def compute(self, data: TrainingData) -> Any:
        """A new snapshot from the visible events (batch layers)."""
        raise NotImplementedError(f"{type(self).__name__} is incremental: it absorbs")

    def absorb(self, state: Any, events: EventTable) -> None:
        """Apply newly visible events to ``state`` in place (incremental layers)."""
        raise NotImplementedError(f"{type(self).__name__} is a batch layer: it computes")


def call_policy_hook(
    policy: str, hook: str, now: float, function: Any, argument: Any, timeout: float
) -> Any:
    """``function(argument)`` within ``timeout`` wall seconds; a failure names the policy, the
    hook and the simulated time."""
    try:
        with deadline(timeout):
            return function(argument)
    except USER_CODE_ERRORS as error:
        raise PolicyError(
            f"policy {policy!r} failed in {hook} at simulated time {humanize_duration(now)}: "
            f"{said(error)}"
        ) from error
