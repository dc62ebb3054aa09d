"""The exceptions recloop raises on purpose.

Everything a user can cause (a bad scenario, a broken policy) derives from :class:`RecloopError`;
the CLI prints its message on one line and exits 2. Anything else is a bug in recloop.
"""

from __future__ import annotations

__all__ = ["RecloopError", "ScenarioError", "PolicyError"]


class RecloopError(Exception):
    """Base class of every error recloop raises for a user to read."""


class ScenarioError(RecloopError):
    """A scenario file, override or option is invalid.

    ``problems`` holds one line per problem, each naming the path and the value.
    """

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class PolicyError(RecloopError):
    """A policy is unknown, misconfigured, or returned something serving cannot use."""
