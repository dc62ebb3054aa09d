"""An example user model shipped as its own package: users tire of a topic within a session.

Each impression of a topic in a session lowers the utility of that topic's items for the rest of
the session, by ``per_impression``; a new session starts rested. A stack that keeps serving one
topic then sees skips and explicit negatives rise through the session, which is the feedback a
session-context layer or a near-line refresh can absorb and a daily retrain cannot.

Registered through the ``recloop.users`` entry point (see pyproject.toml), so a scenario names
it ``topic-fatigue`` once the package is installed; without installing, the target
``topic_fatigue:TopicFatigue`` works from the folder it is in.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from users import SimulatedWorld
from users.arrivals import RequestBlock
from users.behavior import respond_to_slates


class TopicFatigueParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    per_impression: float = Field(
        0.4, ge=0, le=10, description="utility lost per earlier showing of the topic this session"
    )


class TopicFatigue(SimulatedWorld):
    """Users tire of a topic as a session shows it to them again and again."""

    name = "topic-fatigue"
    Params = TopicFatigueParams
    params: TopicFatigueParams

    def __init__(self, scenario, streams, params=None):
        super().__init__(scenario, streams, params)
        #: Per user and topic: impressions of the topic in the user's current session.
        self.seen = np.zeros((self.n_users, self.catalog.spec.topics), np.float32)

    def react(
        self, block: RequestBlock, slates: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The parametric response to utilities lowered by this session's fatigue, from the
        request's own draws (a user has at most one request in a serving window, so the
        answers do not depend on how requests are batched)."""
        users = block.user
        self.seen[users[block.first]] = 0.0  # a new session starts rested
        topics = self.catalog.topic[slates]
        tired = self.seen[users[:, None], topics]
        value = self.slate_utility(block, slates, block.slot_normal[..., 0])
        value = value - self.params.per_impression * tired
        spec = self.behavior
        hype = spec.popularity_weight * self.catalog.appeal[slates] if spec.letdown_prob else 0.0
        answer = respond_to_slates(spec, value, block.slot_uniform, block.slot_normal[..., 1], hype)
        np.add.at(self.seen, (np.repeat(users, slates.shape[1]), topics.ravel()), 1.0)
        return answer
