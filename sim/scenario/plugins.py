"""Finding plug-ins (policies, user models): built-in names, ``module:Class`` targets, and an
entry-point group for installed packages. Adding a plug-in never means editing a registry.

A ``module:Class`` target's module is looked for first next to the scenario file, then in the
current directory, then on ``sys.path``: a ``my_ranker.py`` saved beside the scenario, or in the
folder the command runs from, is found without ``PYTHONPATH``. The folder it is found in joins
``sys.path`` for the rest of the process (so the module's own sibling imports work) and is
handed to the sweep's workers (:data:`sim.scenario.loader.LOCAL_FOLDERS`).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.machinery
import importlib.metadata
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from sim.errors import USER_CODE_ERRORS, RecloopError, ScenarioError, said
from sim.scenario.loader import LOCAL_FOLDERS

__all__ = ["Registry", "CheckReport", "summary_line", "validate_params", "own_name"]


class Registry:
    """The plug-ins of one kind: ``builtin`` classes by name, the entry points of ``group``, and
    ``module:Class`` targets; ``accept(found, name, path)`` returns the class or raises a
    one-line :class:`ScenarioError` saying why ``found`` is not one (``kind``, e.g. "policy",
    names what is looked for in errors)."""

    def __init__(
        self,
        kind: str,
        group: str,
        builtin: dict[str, type],
        accept: Callable[[Any, str, str], type],
    ):
        self.kind = kind
        self.group = group
        self.builtin = builtin
        self.accept = accept

    def entry_points(self) -> dict[str, Any]:
        return {ep.name: ep for ep in importlib.metadata.entry_points(group=self.group)}

    def available(self) -> dict[str, str]:
        """Every name that resolves, with where it comes from."""
        found = {name: "built-in" for name in self.builtin}
        for name, entry in self.entry_points().items():
            dist = getattr(entry, "dist", None)
            package = f" (package {dist.name})" if dist is not None else ""
            found.setdefault(name, f"entry point {entry.value}{package}")
        return found

    def resolve(self, name: str, path: str, near: str | Path | None = None) -> type:
        """The class for a registered name or a ``module:Class`` target (its module looked for
        in ``near``, the scenario file's folder, then the current directory, then
        ``sys.path``)."""
        if name in self.builtin:
            return self.builtin[name]
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
                found = getattr(module, attribute)
            except AttributeError:
                raise ScenarioError(
                    f"{path}: {module_name!r} has no attribute {attribute!r}"
                ) from None
            return self.accept(found, name, path)
        entries = self.entry_points()
        if name in entries:
            try:
                loaded = entries[name].load()
            except USER_CODE_ERRORS as error:
                raise ScenarioError(
                    f"{path}: loading entry point {name!r} ({entries[name].value}) failed: "
                    f"{said(error)}"
                ) from None
            return self.accept(loaded, name, path)
        options = self.available()
        match = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
        hint = f"; did you mean '{match[0]}'?" if match else ""
        raise ScenarioError(
            f"{path}: unknown {self.kind} {name!r}{hint} (available: "
            f"{', '.join(sorted(options))}; or a 'module:Class' target)"
        )


@dataclass
class CheckReport:
    """A conformance suite's results (``suite``, e.g. ``check_policy``, on ``subject``): each
    check's name and ``None`` if it passed, else why it failed."""

    suite: str
    subject: str
    results: dict[str, str | None] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(reason is None for reason in self.results.values())

    def run(self, name: str, test: Callable[[], str | None]) -> None:
        """Record check ``name``: what ``test`` returns, or the error it raised (a plug-in's own
        failure is reported, not raised)."""
        try:
            self.results[name] = test()
        except RecloopError as error:
            self.results[name] = str(error)
        except Exception as error:
            self.results[name] = f"{type(error).__name__}: {error}"

    def raise_if_failed(self) -> None:
        if not self.ok:
            raise AssertionError(str(self))

    def __str__(self) -> str:
        lines = [f"{self.suite}({self.subject}): {'passed' if self.ok else 'FAILED'}"]
        for name, reason in self.results.items():
            lines.append(
                f"  {'ok  ' if reason is None else 'FAIL'} {name}"
                + (f": {reason}" if reason else "")
            )
        return "\n".join(lines)


def own_name(obj: Any) -> str:
    """How a plug-in instance is named in errors: its class's own ``name``, or
    ``module:Class`` for a class that inherits its name (a subclass of a built-in is not it)."""
    cls = type(obj)
    own = cls.__dict__.get("name")
    return str(own) if isinstance(own, str) else f"{cls.__module__}:{cls.__qualname__}"


def validate_params(cls: type, params: dict[str, Any], path: str, what: str) -> Any:
    """``params`` validated by ``cls.Params`` (a pydantic model), or ``None`` for a class without
    one; a :class:`ScenarioError` with one line per problem, under ``path``, otherwise."""
    schema: type[BaseModel] | None = getattr(cls, "Params", None)
    if schema is None:
        if params:
            raise ScenarioError(f"{path}: {what} takes no parameters")
        return None
    try:
        return schema.model_validate(params)
    except ValidationError as error:
        raise ScenarioError([_param_problem(item, path) for item in error.errors()]) from None


def _param_problem(item: Any, prefix: str) -> str:
    path = ".".join([prefix, *(str(part) for part in item["loc"])])
    if item["type"] == "extra_forbidden":
        return f"{path}: unknown parameter"
    return f"{path}: {item['msg']} (got {item.get('input')!r})"


def summary_line(cls: Any) -> str:
    """The first sentence of a class's docstring, on one line.

    >>> class Example:
    ...     '''Ranks by ``score``. More detail.'''
    >>> summary_line(Example)
    'Ranks by score'
    """
    paragraph = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
    return paragraph.split(". ")[0].rstrip(".").replace("``", "")


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
