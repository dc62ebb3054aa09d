"""Finding policies: built-in names, ``module:Class`` targets, and the ``recloop.policies``
entry-point group for installed packages. Adding a policy never means editing this file.

How a ``module:Class`` target's module is found (next to the scenario file first) is
:mod:`sim.scenario.plugins`', shared with user models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from policies.base import Policy
from policies.builtin import EmbeddingPolicy, PopularPolicy, RandomPolicy
from policies.reference import LinUCBPolicy, OraclePolicy, RiverOnlinePolicy
from policies.torch_ranker import TorchRanker
from sim.errors import USER_CODE_ERRORS, ScenarioError, said
from sim.scenario.plugins import Registry, validate_params
from sim.scenario.plugins import summary_line as plugin_summary_line

__all__ = [
    "BUILTIN",
    "ENTRY_POINT_GROUP",
    "register",
    "resolve",
    "available",
    "summary_line",
    "make_policy",
]

ENTRY_POINT_GROUP = "recloop.policies"
BUILTIN: dict[str, type] = {}


def register(cls: Any) -> Any:
    """Make ``cls`` available under ``cls.name`` (usable as a class decorator)."""
    BUILTIN[cls.name] = cls
    return cls


for _cls in (
    RandomPolicy,
    PopularPolicy,
    EmbeddingPolicy,
    TorchRanker,
    OraclePolicy,
    RiverOnlinePolicy,
    LinUCBPolicy,
):
    register(_cls)


def _policy_class(found: Any, name: str, path: str) -> type:
    """``found`` if it is a class with a ``rank`` method, else a one-line error."""
    if not isinstance(found, type) or not callable(getattr(found, "rank", None)):
        what = f"class {found.__name__}" if isinstance(found, type) else type(found).__name__
        raise ScenarioError(
            f"{path}: {name!r} is not a policy ({what} without a rank method); a policy is a "
            "class with rank(requests, view), e.g. a subclass of policies.base.BasePolicy"
        )
    return found


REGISTRY = Registry("policy", ENTRY_POINT_GROUP, BUILTIN, _policy_class)


def available() -> dict[str, str]:
    """Every policy name that resolves, with where it comes from."""
    return REGISTRY.available()


def summary_line(cls: Any) -> str:
    """The first line of a policy's docstring, with its oracle label."""
    line = plugin_summary_line(cls)
    return f"[oracle] {line}" if getattr(cls, "oracle", False) else line


def resolve(name: str, path: str = "stack.policy.name", near: str | Path | None = None) -> type:
    """The policy class for a registered name or a ``module:Class`` target (its module looked
    for in ``near``, the scenario file's folder, then the current directory, then
    ``sys.path``)."""
    return REGISTRY.resolve(name, path, near)


def make_policy(name: str, params: dict[str, Any], seed: int) -> Policy:
    """Instantiate a policy with validated parameters."""
    cls = resolve(name)
    validated = validate_params(cls, params, "stack.policy.params", f"policy {name!r}")
    try:
        return cls(validated, seed=seed)
    except USER_CODE_ERRORS as error:
        raise ScenarioError(f"stack.policy: creating {name!r} failed: {said(error)}") from None
