"""sim/'s sub-packages stack in one direction, without cycles: scenario (what the user wrote)
under serving (one run) under measuring (its numbers) under sweeps (many runs), with the command
line and calibration on top; measuring reads only what a run leaves behind."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Each part of sim/ by height: a module imports only from its own part or from lower ones.
#: domain and errors are the vocabulary everything shares.
HEIGHT = {
    "sim.domain": 0,
    "sim.errors": 0,
    "sim.scenario": 1,
    "sim.serving": 2,
    "sim.measuring": 3,
    "sim.sweeps": 4,
    "sim.cli": 5,
    "sim.calibrate": 5,
}
#: What measuring may import from serving: the records a run leaves behind (the event log, the
#: run's result, the layers' versions and what they absorbed, the probes taken), never the
#: machinery that produced them (engine, stack, stores, the layers' runtime).
SERVING_RECORDS = {
    "sim.serving.eventlog": {"*"},
    "sim.serving.runner": {"RunResult"},
    "sim.serving.layers": {"Absorption", "Reads", "Version"},
    "sim.serving.probes": {"ProbeRecord"},
}


def sim_modules() -> dict[str, Path]:
    found = {}
    for path in sorted((ROOT / "sim").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] != "__init__":  # the facades only re-export downwards
            found[".".join(parts)] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> list[tuple[str, str]]:
    """(module, name or "*") of every first-party import of ``path``, at module level or inside
    a function; ``from sim.serving import eventlog`` is the module ``sim.serving.eventlog``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, "*") for alias in node.names if alias.name.startswith("sim.")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "sim" or node.module.startswith("sim."):
                for alias in node.names:
                    child = f"{node.module}.{alias.name}"
                    found.append((child, "*") if child in known else (node.module, alias.name))
    return found


def part(module: str) -> str:
    return next(p for p in sorted(HEIGHT, key=len, reverse=True) if module.startswith(p))


def graph() -> dict[str, set[str]]:
    known = sim_modules()
    return {
        name: {module for module, _ in imports(path, known) if module in known}
        for name, path in known.items()
    }


def find_cycle(edges: dict[str, set[str]]) -> list[str]:
    """One import cycle of ``edges`` (its modules in order, the first repeated), or []."""
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> list[str]:
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                return [*trail[trail.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt, [*trail, nxt])):
                return cycle
        state[node] = "done"
        return []

    for node in sorted(edges):
        if node not in state and (cycle := visit(node, [node])):
            return cycle
    return []


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    return [
        f"{name} imports {target}"
        for name, targets in edges.items()
        for target in sorted(targets)
        if HEIGHT[part(target)] > HEIGHT[part(name)]
    ]


def machinery_reads(imported: dict[str, list[tuple[str, str]]]) -> list[str]:
    """Imports by measuring modules of anything of serving but its records."""
    return [
        f"{name} imports {module}.{name_}"
        for name, pairs in imported.items()
        if part(name) == "sim.measuring"
        for module, name_ in pairs
        if module.startswith("sim.serving")
        and not {"*", name_} & SERVING_RECORDS.get(module, set())
    ]


def test_every_module_of_sim_belongs_to_a_part():
    for name in sim_modules():
        assert part(name) in HEIGHT, name


def test_no_import_cycles():
    assert find_cycle(graph()) == []


def test_parts_import_only_downwards():
    assert upward_imports(graph()) == []


def test_measuring_reads_only_the_records_serving_leaves():
    known = sim_modules()
    assert machinery_reads({name: imports(path, known) for name, path in known.items()}) == []


def test_the_checks_find_what_they_forbid():
    """Not vacuous: a cycle, a serving module importing measuring, and measuring reaching into
    serving's stores are each found."""
    cyclic = {"sim.sweeps.a": {"sim.sweeps.b"}, "sim.sweeps.b": {"sim.sweeps.c"}}
    cyclic["sim.sweeps.c"] = {"sim.sweeps.a"}
    assert find_cycle(cyclic) == ["sim.sweeps.a", "sim.sweeps.b", "sim.sweeps.c", "sim.sweeps.a"]
    assert upward_imports({"sim.serving.runner": {"sim.measuring.metrics"}}) == [
        "sim.serving.runner imports sim.measuring.metrics"
    ]
    reads = {
        "sim.measuring.metrics": [
            ("sim.serving.stores", "FeatureStore"),
            ("sim.serving.runner", "run_scenario"),
            ("sim.serving.runner", "RunResult"),
            ("sim.serving.eventlog", "*"),
        ]
    }
    assert machinery_reads(reads) == [
        "sim.measuring.metrics imports sim.serving.stores.FeatureStore",
        "sim.measuring.metrics imports sim.serving.runner.run_scenario",
    ]
