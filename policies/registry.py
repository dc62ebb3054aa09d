"""Finding policies: built-in names, ``module:Class`` targets, and the ``recloop.policies``
entry-point group for installed packages. Adding a policy never means editing this file.

A ``module:Class`` target's module is looked for first next to the scenario file, then in the
current directory, then on ``sys.path``: a ``my_ranker.py`` saved beside the scenario, or in the
folder the command runs from, is found without ``PYTHONPATH``. The folder it is found in joins
``sys.path`` for the rest of the process (so the module's own sibling imports work) and is
handed to the sweep's workers (:data:`sim.loader.LOCAL_FOLDERS`).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.machinery
import importlib.metadata
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from policies.base import Policy
from policies.builtin import EmbeddingPolicy, PopularPolicy, RandomPolicy
from policies.reference import LinUCBPolicy, OraclePolicy, RiverOnlinePolicy
from policies.torch_ranker import TorchRanker
from sim.errors import USER_CODE_ERRORS, ScenarioError, said
from sim.loader import LOCAL_FOLDERS

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


def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def available() -> dict[str, str]:
    """Every policy name that resolves, with where it comes from."""
    found = {name: "built-in" for name in BUILTIN}
    for name, entry in _entry_points().items():
        dist = getattr(entry, "dist", None)
        package = f" (package {dist.name})" if dist is not None else ""
        found.setdefault(name, f"entry point {entry.value}{package}")
    return found


def summary_line(cls: Any) -> str:
    """The first line of a policy's docstring, with its oracle label."""
    paragraph = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
    line = paragraph.split(". ")[0].rstrip(".").replace("``", "")
    return f"[oracle] {line}" if getattr(cls, "oracle", False) else line


def resolve(name: str, path: str = "stack.policy.name", near: str | Path | None = None) -> type:
    """The policy class for a registered name or a ``module:Class`` target (its module looked
    for in ``near``, the scenario file's folder, then the current directory, then
    ``sys.path``)."""
    if name in BUILTIN:
        return BUILTIN[name]
    if ":" in name:
        module_name, _, attribute = name.partition(":")
        folders = _local_folders(near)
        _put_on_path(module_name.partition(".")[0], folders)
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            looked = ", ".join([*folders, "sys.path"])
            raise ScenarioError(
                f"{path}: cannot import {module_name!r} ({error}); looked in {looked}"
            ) from None
        except USER_CODE_ERRORS as error:  # the module's own code failed at import
            raise ScenarioError(
                f"{path}: importing {module_name!r} failed: {said(error)}"
            ) from None
        try:
            return _policy_class(getattr(module, attribute), name, path)
        except AttributeError:
            raise ScenarioError(f"{path}: {module_name!r} has no attribute {attribute!r}") from None
    entries = _entry_points()
    if name in entries:
        try:
            loaded = entries[name].load()
        except USER_CODE_ERRORS as error:
            raise ScenarioError(
                f"{path}: loading entry point {name!r} ({entries[name].value}) failed: "
                f"{said(error)}"
            ) from None
        return _policy_class(loaded, name, path)
    match = difflib.get_close_matches(name, list(available()), n=1, cutoff=0.6)
    hint = f"; did you mean '{match[0]}'?" if match else ""
    raise ScenarioError(
        f"{path}: unknown policy {name!r}{hint} (available: {', '.join(sorted(available()))}; "
        f"or a 'module:Class' target)"
    )


def _policy_class(found: Any, name: str, path: str) -> type:
    """``found`` if it is a class with a ``rank`` method, else a one-line error."""
    if not isinstance(found, type) or not callable(getattr(found, "rank", None)):
        what = f"class {found.__name__}" if isinstance(found, type) else type(found).__name__
        raise ScenarioError(
            f"{path}: {name!r} is not a policy ({what} without a rank method); a policy is a "
            "class with rank(requests, view), e.g. a subclass of policies.base.BasePolicy"
        )
    return found


def _local_folders(near: str | Path | None) -> list[str]:
    folders = [Path(near).resolve()] if near is not None else []
    folders.append(Path.cwd())
    return list(dict.fromkeys(str(folder) for folder in folders))


def _put_on_path(top: str, folders: list[str]) -> None:
    """Put the first of ``folders`` holding module or package ``top`` first on ``sys.path``."""
    for folder in folders:
        if importlib.machinery.PathFinder.find_spec(top, [folder]) is not None:
            if folder not in sys.path:
                sys.path.insert(0, folder)
                importlib.invalidate_caches()
            if folder not in LOCAL_FOLDERS:
                LOCAL_FOLDERS.append(folder)
            return


def make_policy(name: str, params: dict[str, Any], seed: int) -> Policy:
    """Instantiate a policy with validated parameters."""
    cls = resolve(name)
    schema: type[BaseModel] | None = getattr(cls, "Params", None)
    if schema is not None:
        try:
            validated: Any = schema.model_validate(params)
        except ValidationError as error:
            raise ScenarioError([_param_problem(item) for item in error.errors()]) from None
    elif params:
        raise ScenarioError(f"stack.policy.params: policy {name!r} takes no parameters")
    else:
        validated = None
    try:
        return cls(validated, seed=seed)
    except USER_CODE_ERRORS as error:
        raise ScenarioError(f"stack.policy: creating {name!r} failed: {said(error)}") from None


def _param_problem(item: Any) -> str:
    path = ".".join(["stack.policy.params", *(str(part) for part in item["loc"])])
    if item["type"] == "extra_forbidden":
        return f"{path}: unknown parameter"
    return f"{path}: {item['msg']} (got {item.get('input')!r})"
