"""Reading scenarios: YAML files, packaged scenarios by name, ``--set`` overrides, clear errors.

Every problem becomes one line naming the path and the value, e.g.
``stack.polcy: unknown key; did you mean 'policy'?``.
"""

from __future__ import annotations

import difflib
import importlib.resources
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from sim.errors import ScenarioError
from sim.scenario.spec import MAX_DESCRIPTION, WRITTEN, Scenario, Spec

__all__ = [
    "load_scenario",
    "load_scenario_with_notes",
    "drop_other_policys_params",
    "parse_scenario",
    "packaged_scenarios",
    "apply_override",
    "set_path",
    "resolved_yaml",
    "resolve_table_paths",
    "TABLE_PATHS",
    "MAX_SCENARIO_BYTES",
    "LOCAL_FOLDERS",
]

#: Scenario files are small; anything bigger is refused before parsing.
MAX_SCENARIO_BYTES = 1_000_000


#: Folders put on ``sys.path`` to import a policy's ``module:Class`` target found there (next to
#: the scenario, or the current directory): spawned workers inherit ``sys.path``, and a local Ray
#: instance gets them as ``PYTHONPATH``.
LOCAL_FOLDERS: list[str] = []


def packaged_scenarios() -> dict[str, Any]:
    """Scenarios shipped with recloop, by name: the file stem, or ``validation/STEM`` for the
    scenarios that reproduce published findings."""
    root = importlib.resources.files("sim.scenarios")
    found = {}
    for prefix, folder in (("", root), ("validation/", root / "validation")):
        if folder.is_dir():
            for entry in folder.iterdir():
                if entry.name.endswith(".yaml"):
                    found[prefix + entry.name.removesuffix(".yaml")] = entry
    return found


def load_scenario(
    source: str | Path, overrides: list[str] | tuple[str, ...] = (), quick: bool = False
) -> Scenario:
    """Load a scenario from a file path or a packaged scenario name, apply overrides, validate.
    ``quick``: its small configuration (the scenario's ``quick.set``) first, named
    ``NAME-quick``.

    Raises :class:`ScenarioError` with one line per problem.
    """
    return load_scenario_with_notes(source, overrides, quick)[0]


def load_scenario_with_notes(
    source: str | Path, overrides: list[str] | tuple[str, ...] = (), quick: bool = False
) -> tuple[Scenario, list[str]]:
    """:func:`load_scenario`, and what the loader changed beyond the overrides themselves (one
    sentence each; the CLI prints them as notes)."""
    text, label = _read_source(str(source))
    data = _parse_yaml(text, label)
    original = data
    told: list[str] = []  # what the description will say changed
    if quick:
        data, told = _quick(data, label)
    path = Path(str(source))
    # tables named in the file are relative to the file, those on the command line to the
    # current directory, as a shell's paths are
    data = resolve_table_paths(data, path.resolve().parent if path.is_file() else Path.cwd())
    for override in overrides:
        data = apply_override(data, override)
    data = resolve_table_paths(data, Path.cwd())
    paths = [override.partition("=")[0].strip() for override in overrides]
    data, dropped = drop_other_policys_params(original, data, paths)
    if overrides:
        told.append("Changed on the command line: " + "; ".join(overrides) + "." + dropped)
    if told and isinstance(data, dict):
        # The description was written for the file's values: say what changed, so that the
        # resolved scenario, the summary and the report do not describe another run.
        # what changed comes first: the report's first screen shows the first paragraph
        description = "\n\n".join([*told, str(data.get("description") or "").rstrip()]).strip()
        if len(description) <= MAX_DESCRIPTION:
            data = {**data, "description": description}
    return parse_scenario(data, label), [dropped.strip()] if dropped else []


#: Scenario fields that name a data file, read relative to the scenario file.
TABLE_PATHS = ("world.catalog.table", "world.users.segments")


def resolve_table_paths(data: Any, folder: Path) -> Any:
    """``data`` with every relative table path (:data:`TABLE_PATHS`, also as a variant's value)
    made absolute against ``folder``: the resolved scenario then runs from any directory, in a
    sweep's workers and on ``--resume``.

    >>> resolve_table_paths({"world": {"catalog": {"table": "items.csv"}}}, Path("/data"))
    {'world': {'catalog': {'table': '/data/items.csv'}}}
    """

    def absolute(value: Any) -> Any:
        if isinstance(value, str) and value and not Path(value).is_absolute():
            return str(folder / value)
        return value

    if not isinstance(data, dict):
        return data
    for dotted in TABLE_PATHS:
        node: Any = data
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, str) and absolute(node) != node:
            data = set_path(data, dotted, absolute(node), dotted)
    variants = data.get("variants")
    if not isinstance(variants, dict):
        return data
    grid, cases = variants.get("grid"), variants.get("cases")
    changed = dict(variants)
    if isinstance(grid, dict):
        changed["grid"] = {
            axis: (
                values
                if axis not in TABLE_PATHS
                else [absolute(v) for v in values]
                if isinstance(values, list)
                else {label: absolute(v) for label, v in values.items()}
                if isinstance(values, dict)
                else values
            )
            for axis, values in grid.items()
        }
    if isinstance(cases, list):
        changed["cases"] = [
            {
                **case,
                "set": {
                    key: absolute(value) if key in TABLE_PATHS else value
                    for key, value in case["set"].items()
                },
            }
            if isinstance(case, dict) and isinstance(case.get("set"), dict)
            else case
            for case in cases
        ]
    return {**data, "variants": changed}


def _read_source(source: str) -> tuple[str, str]:
    path = Path(source)
    if path.exists() and not path.is_file():
        kind = "a directory" if path.is_dir() else "not a regular file (a device, FIFO or socket)"
        raise ScenarioError(f"{source}: is {kind}; a scenario is a YAML file")
    if path.is_file():
        if path.stat().st_size > MAX_SCENARIO_BYTES:
            raise ScenarioError(
                f"{source}: file is {path.stat().st_size} bytes; scenarios are limited to "
                f"{MAX_SCENARIO_BYTES} bytes"
            )
        try:
            return path.read_text(encoding="utf-8"), source
        except UnicodeDecodeError as error:
            raise ScenarioError(f"{source}: not UTF-8 text ({error.reason})") from None
    packaged = packaged_scenarios()
    if source in packaged:
        return packaged[source].read_text(encoding="utf-8"), source
    if path.suffix in (".yaml", ".yml") or "/" in source:
        raise ScenarioError(f"{source}: no such file")
    hint = _nearest(source, packaged)
    names = ", ".join(sorted(packaged))
    raise ScenarioError(f"{source}: no such file or packaged scenario{hint}; packaged: {names}")


#: Problems listed for one scenario; a file with thousands of bad keys gets the first ones.
MAX_PROBLEMS = 50
#: libyaml's safe loader when installed (fast, and it bounds nesting depth), else PyYAML's own.
SAFE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
#: Values a scenario may hold once YAML aliases are expanded; an alias bomb (nested aliases)
#: expands to billions from a few lines.
MAX_VALUES = 1_000_000


def _expanded_size(events: Any) -> int:
    """How many values a YAML event stream holds with every alias expanded (stops early)."""
    sizes: dict[str, int] = {}
    stack: list[list[Any]] = [[0, None]]  # per open collection: [values so far, its anchor]
    for event in events:
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            stack.append([1, event.anchor])
            continue
        if isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            count, anchor = stack.pop()
        elif isinstance(event, yaml.ScalarEvent):
            count, anchor = 1, event.anchor
        elif isinstance(event, yaml.AliasEvent):
            count, anchor = sizes.get(event.anchor, 1), None
        else:
            continue
        if anchor:
            sizes[anchor] = count
        stack[-1][0] += count
        if stack[-1][0] > MAX_VALUES:
            break
    return max(int(entry[0]) for entry in stack)


def _parse_yaml(text: str, label: str) -> dict[str, Any]:
    try:
        if _expanded_size(yaml.parse(text, Loader=SAFE_LOADER)) > MAX_VALUES:
            raise ScenarioError(
                f"{label}: expands to more than {MAX_VALUES:,} values through YAML aliases "
                "(an alias bomb?)"
            )
        data = yaml.load(text, Loader=SAFE_LOADER)  # noqa: S506 - a safe loader
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        where = f"{label}:{mark.line + 1}:{mark.column + 1}" if mark else label
        raise ScenarioError(f"{where}: YAML syntax error: {error.problem}") from None
    except yaml.YAMLError as error:
        raise ScenarioError(f"{label}: YAML error: {' '.join(str(error).split())}") from None
    except RecursionError:
        raise ScenarioError(f"{label}: nested too deeply to be a scenario") from None
    if data is None:
        raise ScenarioError(f"{label}: the file is empty; a scenario needs name, duration, stack")
    if not isinstance(data, dict):
        raise ScenarioError(
            f"{label}: a scenario is a mapping of sections, got {type(data).__name__}"
        )
    return data


def apply_override(data: dict[str, Any], override: str) -> dict[str, Any]:
    """Return a copy of ``data`` with one ``dotted.path=value`` override applied.

    The value is read as YAML (``2000`` is a number, ``6h`` a string, ``[1, 2]`` a list).

    >>> apply_override({"world": {"users": {"count": 10}}}, "world.users.count=2000")
    {'world': {'users': {'count': 2000}}}
    """
    path, sep, raw = override.partition("=")
    path = path.strip()
    if not sep:
        raise ScenarioError(f"--set {override!r}: expected dotted.path=value")
    try:
        value = _bounded_yaml(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return set_path(data, path, value, f"--set {path}")


def _bounded_yaml(text: str) -> Any:
    """A ``--set`` value read as YAML, under the file's alias-bomb bound."""
    if _expanded_size(yaml.parse(text, Loader=SAFE_LOADER)) > MAX_VALUES:
        raise ScenarioError(
            f"--set: {text[:40]!r}... expands to more than {MAX_VALUES:,} values through YAML "
            "aliases (an alias bomb?)"
        )
    return yaml.load(text, Loader=SAFE_LOADER)  # noqa: S506 - a safe loader


def set_path(data: dict[str, Any], path: str, value: Any, where: str) -> dict[str, Any]:
    """Return a copy of ``data`` with ``value`` at ``dotted.path`` (sections created as needed;
    a number selects a list entry, as in ``interventions.0.at``).

    ``where`` names the override in errors (``--set x``, ``variants.grid.x``).

    >>> set_path({"stack": {"layers": {}}}, "stack.layers.retrain.every", "1h", "example")
    {'stack': {'layers': {'retrain': {'every': '1h'}}}}
    >>> set_path({"interventions": [{"at": "1h"}]}, "interventions.0.at", "2h", "example")
    {'interventions': [{'at': '2h'}]}
    """
    parts = path.split(".")
    if not path or any(not part for part in parts):
        raise ScenarioError(f"{where}: expected a dotted.path, got {path!r}")
    result = _deep_copy(data)
    node: Any = result
    for depth, part in enumerate(parts):
        inside = ".".join(parts[: depth + 1])
        last = depth == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ScenarioError(
                    f"{where}: {inside}: {'.'.join(parts[:depth])} has {len(node)} entries; "
                    f"use an index from 0 to {len(node) - 1}"
                )
            index: Any = int(part)
        elif isinstance(node, dict):
            index = part
            if not last and node.get(part) is None:
                node[part] = {}
        else:
            outer = ".".join(parts[:depth])
            raise ScenarioError(f"{where}: {outer} is {node!r}, not a section")
        if last:
            node[index] = _deep_copy(value)
        else:
            node = node[index]
    return result


def _quick(data: Any, label: str) -> tuple[Any, list[str]]:
    """``data`` in its quick configuration: ``quick.set`` applied, the name ``NAME-quick``."""
    quick = data.get("quick") if isinstance(data, dict) else None
    changes = quick.get("set") if isinstance(quick, dict) else None
    if not isinstance(changes, dict) or not changes:
        raise ScenarioError(
            f"{label}: --quick: the scenario has no quick configuration (add quick: {{set: "
            "{world.users.count: 1000, duration: 6h}} to it, or shrink it with --set)"
        )
    for path, value in changes.items():
        data = set_path(data, str(path), value, f"quick.set.{path}")
    listed = "; ".join(  # a whole section (a smaller grid) is in the resolved scenario
        f"its own {path}" if isinstance(value, (dict, list)) else f"{path}={value}"
        for path, value in changes.items()
    )
    data = {**data, "name": f"{data.get('name', label)}-quick"}
    return data, [f"Quick configuration (--quick), not the scenario's own size: {listed}."]


def drop_other_policys_params(original: Any, data: Any, paths: list[str]) -> tuple[Any, str]:
    """``data`` without the params the old policy left behind when the overrides at ``paths``
    switched ``stack.policy`` to another name: they would be refused by the new policy (or,
    worse, silently taken), so the new one gets its own defaults, plus any params the overrides
    set themselves. Returns the data and a sentence saying what was dropped ("" if nothing).

    >>> was = {"stack": {"policy": {"name": "embedding", "params": {"dim": 16}}}}
    >>> now = {"stack": {"policy": {"name": "random", "params": {"dim": 16, "penalty": 5}}}}
    >>> data, note = drop_other_policys_params(was, now, ["stack.policy.name",
    ...                                                  "stack.policy.params.penalty"])
    >>> data
    {'stack': {'policy': {'name': 'random', 'params': {'penalty': 5}}}}
    >>> note.endswith("dropped ({'dim': 16}): 'random' runs with its own defaults.")
    True
    """
    before, after = _policy(original), _policy(data)
    if (
        before is None
        or after is None
        or before.get("name") == after.get("name")
        or not isinstance(after.get("params"), dict)
        or any(path in ("stack", "stack.policy", "stack.policy.params") for path in paths)
    ):
        return data, ""
    prefix = "stack.policy.params."
    given = {path[len(prefix) :].split(".")[0] for path in paths if path.startswith(prefix)}
    params = after["params"]
    dropped = {key: value for key, value in params.items() if key not in given}
    if not dropped:
        return data, ""
    policy = {**after, "params": {key: params[key] for key in params if key in given}}
    note = (
        f" stack.policy.params {', '.join(dropped)} belonged to {before.get('name')!r} and were "
        f"dropped ({dropped}): {after.get('name')!r} runs with its own defaults."
    )
    return {**data, "stack": {**data["stack"], "policy": policy}}, note


def _policy(data: Any) -> dict[str, Any] | None:
    """The ``stack.policy`` mapping of scenario data (a bare name read as ``{name: NAME}``)."""
    stack = data.get("stack") if isinstance(data, dict) else None
    policy = stack.get("policy") if isinstance(stack, dict) else None
    if isinstance(policy, str):
        return {"name": policy}
    return policy if isinstance(policy, dict) else None


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {key: _deep_copy(value) for key, value in data.items()}
    if isinstance(data, list):
        return [_deep_copy(value) for value in data]
    return data


def parse_scenario(data: dict[str, Any], label: str = "scenario") -> Scenario:
    """Validate a scenario mapping; raise :class:`ScenarioError` with one line per problem."""
    try:
        return Scenario.model_validate(data, context=WRITTEN)
    except ValidationError as error:
        items = _without_other_union_members(error.errors())
        # a whole-scenario check may name several problems, one line each
        lines = [line for item in items for line in _describe(item).splitlines()]
        if len(lines) > MAX_PROBLEMS:
            more = len(lines) - MAX_PROBLEMS
            lines = [*lines[:MAX_PROBLEMS], f"{label}: ... and {more:,} more problems"]
        raise ScenarioError(lines) from None
    except RecursionError:
        raise ScenarioError(f"{label}: nested too deeply to be a scenario") from None


def _describe(item: Any) -> str:
    raw = list(item["loc"])
    # the last part of an unknown-key error is the user's key, whatever it looks like
    own = raw[-1:] if item["type"] == "extra_forbidden" else []
    tagged = raw[: len(raw) - len(own)]
    loc = [
        part
        for index, part in enumerate(tagged)
        # a discriminated union's member is named by its tag: interventions.0.<kind>.at
        if not _is_union_tag(part) and not (index >= 2 and tagged[index - 2] == "interventions")
    ] + own
    path = ".".join(str(part) for part in loc) or "(scenario)"
    kind = item["type"]
    if kind == "extra_forbidden":
        valid = _fields_at(Scenario, loc[:-1])
        return f"{path}: unknown key{_nearest(str(loc[-1]), valid)}"
    if kind == "missing":
        return f"{path}: required but missing"
    message = item["msg"].removeprefix("Value error, ")
    if kind.startswith("value_error") and not loc:
        # a whole-scenario check that names its own path needs no "(scenario)" in front
        named = re.match(r"^[A-Za-z_][\w.]*: ", message)
        return message if named else f"(scenario): {message}"
    if isinstance(item.get("input"), (dict, list)):  # a section's own check names its values
        return f"{path}: {message}"
    value = _short(item.get("input"))
    return f"{path}: {message}" if value in message else f"{path}: {message} (got {value})"


def _without_other_union_members(items: list[Any]) -> list[Any]:
    """Errors minus a union's other member: for ``rollout: immediate | {canary: ...}`` given a
    canary with a bad fraction, pydantic also says the value is not 'immediate'; the error
    inside the member the value was meant for is the one to show."""
    paths = [tuple(part for part in item["loc"] if not _is_union_tag(part)) for item in items]
    return [
        item
        for item, path in zip(items, paths, strict=True)
        if not (
            item["type"] == "literal_error"
            and any(len(other) > len(path) and other[: len(path)] == path for other in paths)
        )
    ]


def _is_union_tag(part: Any) -> bool:
    # pydantic puts the union member in the location: "function-after[...]", "literal[...]", a
    # type name, or a model's class name (rollout.Rollout.canary)
    return isinstance(part, str) and (
        "[" in part or part in ("float", "str", "int") or part in _MODEL_NAMES
    )


def _model_names(model: type[Spec] = Spec) -> set[str]:
    names = {model.__name__}
    for sub in model.__subclasses__():
        names |= _model_names(sub)
    return names


#: Class names of the scenario's sections, never a key a user writes (keys are lowercase).
_MODEL_NAMES = _model_names()


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _nearest(word: str, options: Any) -> str:
    match = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f"; did you mean '{match[0]}'?" if match else ""


def _fields_at(model: type[BaseModel], loc: list[Any]) -> list[str]:
    """Field names of the (sub)model found by walking ``loc`` from ``model``."""
    current: Any = model
    for part in loc:
        fields = getattr(current, "model_fields", None)
        if fields is not None and part not in fields:  # a key of the user's own (a layer)
            current = getattr(current, "extra_model", None)
            continue
        if fields is None:
            return []
        current = _model_in(fields[part].annotation)
    fields = getattr(current, "model_fields", None)
    return list(fields) if fields else []


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType) or origin is typing.Annotated:
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def resolved_yaml(scenario: Scenario) -> str:
    """The fully resolved scenario (every default filled in) as YAML that loads back equal."""
    data = scenario.model_dump(mode="json", by_alias=True)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
