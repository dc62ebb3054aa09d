"""Probes: a sample of users take one control at one time, and the twin run in which they do not.

At a probe's time each chosen user takes the control on their own target, as if in their next
request: one explicit negative event in the log (time, user, the target item, the control's kind
and scope, the user's current session, the layer versions that served them last), which every
layer then reads like any other. The twin run (``Scenario.probes_withheld``) chooses the same users
and targets, from the same log (the twins are identical until then), but logs nothing, so every
difference after the probe time is the control's. What the probes prevented is measured in
:mod:`sim.measuring.responsiveness`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.domain import CatalogView, Kind, Scope
from sim.scenario.durations import format_duration
from sim.scenario.spec import Probe, Scenario
from sim.serving.eventlog import EventLog

__all__ = [
    "ProbeRecord",
    "Snoozes",
    "SNOOZE",
    "CONTROL_EVENT",
    "RECENTLY_SHOWN",
    "start_probes",
    "deletion_delays",
]

#: How far back a probe looks for each user's most shown item (seconds), as interventions do.
RECENTLY_SHOWN = 3600.0

#: The event each control logs: its kind and scope (as the behaviour model logs them).
CONTROL_EVENT: dict[str, tuple[Kind, Scope]] = {
    "dismiss": (Kind.DISMISS, Scope.ITEM),
    "not_interested": (Kind.NOT_INTERESTED, Scope.TOPIC),
    "thumbs_down": (Kind.THUMBS_DOWN, Scope.ITEM),
    "block_creator": (Kind.BLOCK_CREATOR, Scope.CREATOR),
}

#: What a control is about, so what its prevented share counts: exposure to the item, its topic
#: or its creator.
CONTROL_LEVEL = {
    "dismiss": "item",
    "not_interested": "topic",
    "thumbs_down": "item",
    "block_creator": "creator",
}

#: What a control on a target of no stated scope (remove_from_history) is about.
TARGET_LEVEL = {
    "most_shown_item": "item",
    "most_shown_topic": "topic",
    "most_shown_creator": "creator",
}

#: The state serving a snooze, by this name in every view's ``states``.
SNOOZE = "snooze"


class Snoozes:
    """Per user, one topic or creator hidden until a time (``-1``: none), served like a layer's
    state: ranking reads :meth:`hidden` (see ``policies.signals``)."""

    def __init__(self, n_users: int):
        self.topic = np.full(n_users, -1, np.int64)
        self.creator = np.full(n_users, -1, np.int64)
        self.until = np.full(n_users, -np.inf)

    def hidden(self, users: np.ndarray, now: float) -> tuple[np.ndarray, np.ndarray]:
        """Each user's hidden topic and creator at ``now`` (``-1``: none, or expired)."""
        live = self.until[users] > now
        return np.where(live, self.topic[users], -1), np.where(live, self.creator[users], -1)


@dataclass(frozen=True)
class ProbeRecord:
    """Who took a probe's control, on what, and whether it was taken (or withheld: the twin)."""

    name: str
    control: str
    at: float
    users: np.ndarray  # (m,) int user ids, ascending
    item: np.ndarray  # (m,) each user's target item
    topic: np.ndarray  # (m,) its topic
    creator: np.ndarray  # (m,) its creator
    taken: bool
    #: What the control is about, so what its prevented share counts: item, topic or creator
    level: str = "item"
    #: remove_from_history: how many log rows it deleted (or, in the twin, would have)
    deleted_rows: int = 0


def start_probes(
    env: Any,
    scenario: Scenario,
    log: EventLog,
    catalog: Any,
    n_users: int,
    generator: Any,
    records: list[ProbeRecord],
    publish: Any,
) -> None:
    """Schedule every probe of ``scenario``; each appends its :class:`ProbeRecord` to ``records``
    when it fires. ``catalog()`` gives the current :class:`CatalogView`; ``generator(name)`` a
    named random stream (the probe's users are drawn from their own, so the twins draw alike);
    ``publish(name, version, state)`` serves the snoozes."""
    snoozes = Snoozes(n_users)
    for index, probe in enumerate(scenario.probes):
        env.process(
            _take(
                env,
                probe,
                log,
                catalog,
                n_users,
                generator(f"probe:{index}"),
                not scenario.probes_withheld,
                records,
                lambda: publish(SNOOZE, len(records), snoozes),
                snoozes,
            )
        )


def _take(
    env: Any,
    probe: Probe,
    log: EventLog,
    catalog: Any,
    n_users: int,
    rng: np.random.Generator,
    taken: bool,
    records: list[ProbeRecord],
    publish: Any,
    snoozes: Snoozes,
) -> Any:
    yield env.timeout(probe.at)
    now = env.now
    view: CatalogView = catalog()
    # what the users were shown, deleted or not: the twins must choose alike
    recent = log.between(log.count_before(now - RECENTLY_SHOWN), log.count_before(now))
    shown = np.flatnonzero(recent.position >= 0)
    users, items = recent.user[shown].astype(np.int64), recent.item[shown].astype(np.int64)
    # users of an earlier probe are not drawn again: each user takes one control, so that one
    # probe's users show that control's effect alone
    earlier = [record.users for record in records]
    eligible = np.setdiff1d(np.unique(users), np.concatenate([np.empty(0, np.int64), *earlier]))
    count = min(probe.count(n_users), eligible.shape[0])
    chosen = np.sort(rng.choice(eligible, size=count, replace=False)) if count else eligible[:0]
    keep = np.isin(users, chosen)
    users, items, rows = users[keep], items[keep], shown[keep]
    if probe.target == "most_shown_item":
        within = np.ones(users.shape[0], bool)
    else:
        group = view.topic if probe.target == "most_shown_topic" else view.creator
        best_group = _most_shown(users, group[items].astype(np.int64), chosen)
        within = group[items] == best_group[np.searchsorted(chosen, users)]
    target = _most_shown(users[within], items[within], chosen)
    level = CONTROL_LEVEL.get(probe.control) or TARGET_LEVEL[probe.target]
    deleted = np.empty(0, np.int64)
    if probe.control == "remove_from_history":
        deleted = _rows_on_targets(log, now, chosen, target, level, view)
    record = ProbeRecord(
        name=probe.name,
        control=probe.control,
        at=now,
        users=chosen,
        item=target,
        topic=view.topic[target].astype(np.int64),
        creator=view.creator[target].astype(np.int64),
        taken=taken,
        level=level,
        deleted_rows=int(deleted.shape[0]),
    )
    records.append(record)
    if taken and probe.control == "remove_from_history":
        log.delete(now, deleted)
    elif taken and probe.control == "snooze":
        assert probe.duration is not None
        hidden = snoozes.topic if level == "topic" else snoozes.creator
        hidden[chosen] = record.topic if level == "topic" else record.creator
        snoozes.until[chosen] = now + probe.duration
        publish()
    elif taken and count:
        # each user's last row: their current session, and the versions that served them
        last = rows[np.searchsorted(users, chosen, side="right") - 1]
        kind, scope = CONTROL_EVENT[probe.control]
        log.append_controls(
            now,
            chosen,
            target,
            kind,
            scope,
            recent.session[last],
            {layer: column[last] for layer, column in recent.versions.items()},
        )


def _rows_on_targets(
    log: EventLog, now: float, users: np.ndarray, items: np.ndarray, level: str, view: CatalogView
) -> np.ndarray:
    """Log rows before ``now`` of each of ``users`` (ascending) on their own target: the item
    of ``items``, or its topic or creator (``level``)."""
    events = log.between(0, log.count_before(now))
    index = np.minimum(np.searchsorted(users, events.user), max(users.shape[0] - 1, 0))
    mine = (events.item >= 0) & (users.shape[0] > 0)
    if users.shape[0]:
        mine &= users[index] == events.user
    rows = np.flatnonzero(mine)
    seen, target = events.item[rows].astype(np.int64), items[index[rows]]
    if level == "topic":
        match = view.topic[seen] == view.topic[target]
    elif level == "creator":
        match = view.creator[seen] == view.creator[target]
    else:
        match = seen == target
    return rows[match]


def _most_shown(users: np.ndarray, values: np.ndarray, among: np.ndarray) -> np.ndarray:
    """Per user of ``among`` (ascending, each present in ``users``), the value in ``values`` most
    often paired with them (ties: the smallest value).

    >>> _most_shown(np.array([1, 1, 1, 4]), np.array([7, 3, 3, 9]), np.array([1, 4]))
    array([3, 9])
    """
    if not among.shape[0]:
        return np.empty(0, np.int64)
    pairs, counts = np.unique(np.stack([users, values]), axis=1, return_counts=True)
    # by user, then most shown first, then the smaller value
    order = np.lexsort((pairs[1], -counts, pairs[0]))
    pairs = pairs[:, order]
    first = np.flatnonzero(np.r_[True, pairs[0, 1:] != pairs[0, :-1]])
    best = dict(zip(pairs[0, first].tolist(), pairs[1, first].tolist(), strict=True))
    return np.array([best[user] for user in among.tolist()], np.int64)


def deletion_delays(records: list[ProbeRecord], layers: list[Any], end: float) -> dict[str, Any]:
    """Per remove_from_history probe taken and per layer, the time from the deletion until the
    layer's served state no longer depends on the deleted events: a batch layer's first version
    whose input was read after the deletion reached it going live for everyone; an incremental
    layer's update that took them out of its state (``None`` and a reason when that never
    happened before ``end``)."""
    out: dict[str, Any] = {}
    for record in records:
        if record.control != "remove_from_history" or not record.taken:
            continue
        delays: dict[str, Any] = {}
        for layer in layers:
            if layer.kind.incremental:
                honoured = [done for at, done in layer.deletions_honoured if at == record.at]
                if honoured and np.isfinite(honoured[0]):
                    delays[layer.name] = honoured[0] - record.at
                elif honoured:
                    delays[layer.name] = {
                        "missing": "its state was updated in place and cannot take events back"
                    }
                else:
                    delays[layer.name] = {
                        "missing": "no update reached the deletion before the end"
                    }
                continue
            live = [
                version.live_at
                for version in layer.history
                if version.cohort == "all" and version.horizon > record.at
            ]
            delays[layer.name] = (
                min(live) - record.at
                if live
                else {
                    "missing": f"no version trained after the deletion went live before the end "
                    f"({format_duration(end - record.at)} later)"
                }
            )
        out[record.name] = {"deleted_events": record.deleted_rows, "delay_seconds": delays}
    return out
