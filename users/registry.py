"""Finding user models: built-in names (``parametric``, ``table``), ``module:Class`` targets,
and the ``recloop.users`` entry-point group for installed packages, as for policies (see
:mod:`sim.scenario.plugins`). Adding a user model never means editing this file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sim.domain import UserModel
from sim.errors import USER_CODE_ERRORS, ScenarioError, said
from sim.scenario.plugins import Registry, validate_params
from sim.scenario.spec import Scenario
from sim.serving.rng import Streams
from users.table_world import TableWorld
from users.world import SimulatedWorld

__all__ = [
    "BUILTIN",
    "ENTRY_POINT_GROUP",
    "REQUIRED",
    "register",
    "resolve",
    "available",
    "make_user_model",
    "check_world",
]

ENTRY_POINT_GROUP = "recloop.users"
BUILTIN: dict[str, type] = {}

#: What the engine and the runner call on a user model (the :class:`sim.domain.UserModel`
#: protocol's methods).
REQUIRED = (
    "catalog_view",
    "start",
    "next_request_time",
    "take_requests",
    "respond",
    "items",
    "session_start_times",
    "expected_clicks",
)


def register(cls: Any) -> Any:
    """Make ``cls`` available under ``cls.name`` (usable as a class decorator)."""
    BUILTIN[cls.name] = cls
    return cls


for _cls in (SimulatedWorld, TableWorld):
    register(_cls)


def _user_model_class(found: Any, name: str, path: str) -> type:
    """``found`` if it is a class with every method of the protocol, else a one-line error."""
    missing = [method for method in REQUIRED if not callable(getattr(found, method, None))]
    if not isinstance(found, type) or missing:
        what = f"class {found.__name__}" if isinstance(found, type) else type(found).__name__
        lacks = f" without {', '.join(missing)}" if isinstance(found, type) else ""
        raise ScenarioError(
            f"{path}: {name!r} is not a user model ({what}{lacks}); a user model implements "
            "sim.domain.UserModel, e.g. a subclass of users.SimulatedWorld overriding react"
        )
    return found


REGISTRY = Registry("user model", ENTRY_POINT_GROUP, BUILTIN, _user_model_class)


def available() -> dict[str, str]:
    """Every user model name that resolves, with where it comes from."""
    return REGISTRY.available()


def resolve(name: str, path: str = "world.model.name", near: str | Path | None = None) -> type:
    """The user model class for a registered name or a ``module:Class`` target (its module
    looked for in ``near``, the scenario file's folder, then the current directory, then
    ``sys.path``)."""
    return REGISTRY.resolve(name, path, near)


def _validated(scenario: Scenario) -> tuple[type, Any]:
    spec = scenario.world.model
    cls = resolve(spec.name)
    return cls, validate_params(cls, spec.params, "world.model.params", f"user model {spec.name!r}")


def make_user_model(scenario: Scenario, streams: Streams) -> UserModel:
    """The scenario's user model, built from its validated parameters and the run's streams."""
    cls, params = _validated(scenario)
    try:
        model: UserModel = cls(scenario, streams, params)
    except ScenarioError:
        raise
    except USER_CODE_ERRORS as error:
        raise ScenarioError(
            f"world.model: creating {scenario.world.model.name!r} failed: {said(error)}"
        ) from None
    return model


def check_world(scenario: Scenario) -> list[str]:
    """Checks that need the user model (it resolves, its parameters validate, its own
    ``check(scenario)`` passes: a table world reads its tables); returns notes."""
    cls, _ = _validated(scenario)
    check = getattr(cls, "check", None)
    if not callable(check):
        return []
    try:
        return list(check(scenario))
    except ScenarioError:
        raise
    except USER_CODE_ERRORS as error:
        raise ScenarioError(
            f"world.model: {scenario.world.model.name!r} check failed: {said(error)}"
        ) from None
