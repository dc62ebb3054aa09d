"""The exceptions recloop raises on purpose.

Everything a user can cause (a bad scenario, a broken policy) derives from :class:`RecloopError`;
the CLI prints its message on one line and exits 2. Anything else is a bug in recloop.
"""

from __future__ import annotations

__all__ = [
    "RecloopError",
    "ScenarioError",
    "PolicyError",
    "UserModelError",
    "USER_CODE_ERRORS",
    "said",
]


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


class UserModelError(RecloopError):
    """A user model failed, or answered slates with something the event log cannot hold."""


#: What user code (a policy's module, constructor or hook) may raise that must fail the run, not
#: the process: any exception, and ``sys.exit`` (which would otherwise end recloop silently).
USER_CODE_ERRORS = (Exception, SystemExit)


def said(error: BaseException) -> str:
    """An exception from user code on one line: its type and message, where a syntax error is,
    and what ``sys.exit`` was called with.

    >>> said(ValueError("bad   value")), said(SystemExit(0))
    ('ValueError: bad value', 'it called sys.exit(0)')
    """
    if isinstance(error, SyntaxError):
        return f"SyntaxError: {error.msg} ({error.filename}, line {error.lineno})"
    if isinstance(error, SystemExit):
        return f"it called sys.exit({error.code!r})"
    message = " ".join(str(error).split())
    return f"{type(error).__name__}: {message}" if message else type(error).__name__
