"""Mutation testing of the modules that decide the numbers users act on (``make mutate``).

Each module is mutated by mutmut in its own copy of the checkout (``build/mutate/NAME/``), with
the test files that cover it: mutmut then runs, for each mutant, only those of the module's tests
that call the mutated function, one mutant at a time. The counts and the diff of every surviving
mutant are merged into ``bench/results/mutation.json`` (modules not run this time keep their last
figures) and rendered, with the hand-written argument for each equivalent mutant
(``bench/mutation_equivalent.toml``), into ``bench/results/mutation.md``.

The score of a module is killed / (mutants - equivalent): a timeout (the mutant hung the run) or
a crash of the test process counts as killed, a mutant that no selected test reaches as surviving.

    python bench/mutation.py                  # every module
    python bench/mutation.py sim/serving/eventlog.py  # one module; the others keep their last
    figures python bench/mutation.py --survivors      # only the last survivors (not argued
    equivalent) python bench/mutation.py --report         # re-render mutation.md only
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

if sys.version_info >= (3, 11):
    from tomllib import loads as toml_loads
else:  # mutmut depends on toml before Python 3.11
    from toml import loads as toml_loads

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
EQUIVALENT = ROOT / "bench" / "mutation_equivalent.toml"
WORK = ROOT / "build" / "mutate"

#: mutmut's exit codes, by what they mean for the score (mutmut/stats.py).
KILLED = {1, 3}
TIMEOUT = {36, 24, -24, 152, 255}
SURVIVED = {0}
NO_TESTS = {5, 33}
#: A mutant that crashed the test process (a numba kernel reading out of bounds) fails the run.
CRASHED = {-11}


@dataclass(frozen=True)
class Target:
    """A module to mutate, the test files that cover it and, for a module that is only partly
    about the numbers, the functions to mutate (mutmut's names: ``x_f`` for a function,
    ``xǁClassǁmethod`` for a method)."""

    tests: list[str]
    functions: list[str] = field(default_factory=lambda: ["*"])


TARGETS: dict[str, Target] = {
    "sim/measuring/propagation.py": Target(["tests/test_metrics.py", "tests/test_layers.py"]),
    "sim/serving/eventlog.py": Target(
        [
            "tests/test_eventlog.py",
            "tests/test_causality.py",
            "tests/test_layers.py",
            "tests/test_probes.py",
            "tests/test_metrics.py::test_row_chunks_cut_between_times_and_at_bin_edges",
        ]
    ),
    "sim/serving/layers/runtime.py": Target(
        [
            "tests/test_layers.py",
            "tests/test_layer_properties.py",
            "tests/test_causality.py",
            "tests/test_absorption.py",
            "tests/test_drift_trigger.py",
        ]
    ),
    # the built-in layers' own math, one file each (sim/serving/layers/)
    **{
        f"sim/serving/layers/{name}.py": Target(
            ["tests/test_stores.py", "tests/test_absorption.py", "tests/test_causality.py"]
        )
        for name in ("store", "realtime_features", "session_context", "profile_memory")
    },
    **{
        f"sim/serving/layers/{name}.py": Target(
            ["tests/test_absorption.py", "tests/test_layers.py", "tests/test_causality.py"]
        )
        for name in ("retrain", "nearline_embeddings")
    },
    "sim/measuring/metrics.py": Target(
        ["tests/test_metrics.py", "tests/test_absorption.py"],
        # propagation, exposure, suppression, repeat offences, harm and regret; the business
        # ratios, concentration, homogenization and the timeseries table are left out
        [
            "x_measure",
            "xǁRunMetricsǁ*",
            "x__rows_where",
            "x__user_shards",
            "x__among",
            "xǁKeyedTimesǁ*",
            "x__ranks_in_sorted",
            "x__sorted_search",
            "x_count_following",
            "x_first_at_or_after",
            "x__propagation",
            "x_layer_delays",
            "xǁ_Versionsǁ*",
            "x__session_starts_by_user",
            "x__exposure",
            "x__regret",
            "x__suppression",
            "xǁ_Harmǁ*",
        ],
    ),
    "policies/bandit.py": Target(["tests/test_bandit.py", "tests/test_regret.py"]),
    "sim/measuring/compare.py": Target(["tests/test_sweep.py", "tests/test_effects.py"]),
    "sim/sweeps/plan.py": Target(
        ["tests/test_sweep.py", "tests/test_reliability.py", "tests/test_replications.py"],
        # variants, grid levels, replications and their seeds, the instant bound
        [
            "x__base_data",
            "x__label",
            "x_variant_overrides",
            "x__grid_cells",
            "x_grid_levels",
            "x_plan_runs",
            "x_planned_replications",
            "x__replication_seed",
            "x__instant",
        ],
    ),
    "sim/sweeps/sweep.py": Target(
        ["tests/test_sweep.py", "tests/test_reliability.py", "tests/test_replications.py"],
        # running and resuming; the process pool, signal and Ray plumbing is left out
        ["x_execute", "x_finished_outcome", "x_run_plans", "x_run_replications", "x_run_sweep"],
    ),
    "sim/measuring/effects.py": Target(
        ["tests/test_effects.py"],
        # the effect estimates; the sentences that word them are left out
        [
            "xǁFactorǁ*",
            "x_grid_factors",
            "xǁCellsǁ*",
            "x_estimate_effects",
            "x_conditional_effect",
            "x__complete",
            "x__main_row",
            "x__interaction_row",
            "x__row",
            "x__interval_columns",
            "x__relative_columns",
            "x_measured_updates",
            "x_never_fires",
        ],
    ),
}

#: Not copied into a module's working copy.
SKIP = {".git", "build", "runs", "site", "mutants", "__pycache__", ".pytest_cache"}


def _copy_checkout(work: Path) -> None:
    """A fresh copy of the checkout (without virtual environments and outputs) at ``work``."""
    if work.exists():
        shutil.rmtree(work)

    def ignore(folder: str, names: list[str]) -> set[str]:
        return {n for n in names if n in SKIP or "venv" in n or n.endswith(".egg-info")}

    shutil.copytree(ROOT, work, ignore=ignore)


def _configure(work: Path, module: str, target: Target) -> None:
    """Append mutmut's settings for this module to the copy's pyproject.toml."""
    copied = ["sim", "policies", "users", "reports", "scenarios", "examples", "docs", "README.md"]
    copied.append("bench")
    settings = {
        "source_paths": [module],
        "pytest_add_cli_args_test_selection": target.tests,
        # fixtures' time counted, and a mutant's tests run fastest first (mutation_plugin.py)
        "pytest_add_cli_args": ["-p", "no:cacheprovider", "-p", "bench.mutation_plugin"],
        # a mutant that loops forever is stopped after 5x its tests' measured time (mutmut's
        # default, 15x, spends minutes on each such mutant)
        "timeout_multiplier": 5.0,
        "also_copy": copied,
    }
    lines = ["", "[tool.mutmut]"] + [
        f"{key} = {json.dumps(value)}" for key, value in settings.items()
    ]
    with open(work / "pyproject.toml", "a", encoding="utf-8") as file:
        file.write("\n".join(lines) + "\n")


def _globs(module: str, target: Target) -> list[str]:
    prefix = module.removesuffix(".py").replace("/", ".")
    return [f"{prefix}.{function}__mutmut_*" for function in target.functions]


def measure_module(module: str, target: Target, children: int, earlier: dict | None = None) -> dict:
    """Run mutmut over one module and return its counts and surviving mutants; with the
    ``earlier`` entry, run only its surviving mutants again (against today's tests) and update it.
    """
    work = WORK / module.removesuffix(".py").replace("/", "-")
    _copy_checkout(work)
    _configure(work, module, target)
    # mutmut puts the mutated copy first on sys.path in its own process only: a test that
    # reaches the module only through a subprocess (the CLI) does not see the mutant
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    mutmut = [str(Path(sys.executable).parent / "mutmut")]
    if earlier is None:
        wanted = _globs(module, target)
    else:
        # those argued equivalent would survive again: not worth the time
        argued = _equivalents()
        wanted = [
            name
            for name in earlier["survived"] + earlier["no_tests"] + list(earlier["other"])
            if earlier["other"].get(name) not in CRASHED
            and (name not in argued or argued[name]["change"] not in earlier["diffs"][name])
        ]
        if not wanted:
            return earlier
    started = time.monotonic()
    log = work.with_suffix(".log")
    with open(log, "w", encoding="utf-8") as out:
        run = subprocess.run(
            [*mutmut, "run", "--max-children", str(children), *wanted],
            cwd=work,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    seconds = time.monotonic() - started
    meta = work / "mutants" / (module + ".meta")
    if not meta.exists():
        raise SystemExit(f"mutmut failed on {module} (exit {run.returncode}): see {log}")
    codes = json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"]
    codes = {k: v for k, v in codes.items() if any(fnmatch.fnmatchcase(k, g) for g in wanted)}
    unchecked = sorted(k for k, v in codes.items() if v is None)
    if run.returncode != 0 or unchecked:
        # stopped (by hand, or the deadline of a shared machine): the checked part is kept
        # and reported as partial
        print(f"  mutmut stopped (exit {run.returncode}): {len(unchecked)} unchecked, see {log}")
    codes = {k: v for k, v in codes.items() if v is not None}
    survivors = sorted((k for k, v in codes.items() if v in SURVIVED | NO_TESTS), key=_mutant_order)
    other = sorted(k for k, v in codes.items() if v not in KILLED | TIMEOUT | SURVIVED | NO_TESTS)
    diffs = {}
    for name in survivors + other:
        shown = subprocess.run(
            [*mutmut, "show", name], cwd=work, env=env, capture_output=True, text=True, check=True
        )
        diffs[name] = shown.stdout.split("\n", 1)[1].strip()
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    if earlier is not None:
        # a survivor not run again (argued equivalent, or not reached) keeps its earlier verdict
        before = earlier["survived"] + earlier["no_tests"] + list(earlier["other"])
        kept = [name for name in before if name not in codes]
        return {
            **earlier,
            "rechecked": now,
            "recheck_seconds": round(seconds),
            "tests": target.tests,
            "killed": earlier["killed"] + sum(v in KILLED for v in codes.values()),
            "timeout": earlier["timeout"] + sum(v in TIMEOUT for v in codes.values()),
            "survived": sorted(
                [k for k in survivors if codes[k] in SURVIVED]
                + [k for k in kept if k in earlier["survived"]],
                key=_mutant_order,
            ),
            "no_tests": sorted(
                [k for k in survivors if codes[k] in NO_TESTS]
                + [k for k in kept if k in earlier["no_tests"]],
                key=_mutant_order,
            ),
            "other": {
                **{k: codes[k] for k in other},
                **{k: v for k, v in earlier["other"].items() if k in kept},
            },
            "diffs": {**{k: earlier["diffs"][k] for k in kept}, **diffs},
        }
    return {
        "measured": now,
        "seconds": round(seconds),
        "tests": target.tests,
        "functions": target.functions,
        "mutants": len(codes),
        "unchecked": len(unchecked),
        "killed": sum(v in KILLED for v in codes.values()),
        "timeout": sum(v in TIMEOUT for v in codes.values()),
        "survived": [k for k in survivors if codes[k] in SURVIVED],
        "no_tests": [k for k in survivors if codes[k] in NO_TESTS],
        "other": {k: codes[k] for k in other},
        "diffs": diffs,
    }


def _mutant_order(name: str) -> tuple[str, int]:
    function, number = name.rsplit("__mutmut_", 1)
    return function, int(number)


def _equivalents() -> dict[str, dict[str, str]]:
    """The argued-equivalent mutants, by name: ``change`` is a line of the mutant's diff (so an
    argument goes stale, and is reported, when the code under it changes) and ``why``."""
    if not EQUIVALENT.exists():
        return {}
    entries = toml_loads(EQUIVALENT.read_text(encoding="utf-8")).get("equivalent", [])
    return {entry["mutant"]: entry for entry in entries}


def render(results: dict) -> str:
    """mutation.md from the merged results and the equivalence arguments."""
    equivalent = _equivalents()
    lines = [
        "# Mutation score of the modules that decide the numbers",
        "",
        f"Generated by `python bench/mutation.py` (`make mutate`) with {results['tool']}, one "
        "mutant at a time; each module with its own tests (below). Score = killed / "
        "(mutants - equivalent); a timeout or a crash of the test process counts as killed, a "
        "mutant no selected test reaches as surviving. Equivalent mutants are argued in "
        "`bench/mutation_equivalent.toml`.",
        "",
        "| module | measured | time | mutants checked | killed | equivalent | surviving | score |",
        "|---|---|---|---|---|---|---|---|",
    ]
    total = {"mutants": 0, "killed": 0, "equivalent": 0}
    partial: list[str] = []
    sections = []
    for module in TARGETS:
        entry = results["modules"].get(module)
        if entry is None:
            lines.append(f"| `{module}` | not measured | | {_planned(module)} planned | | | | |")
            continue
        crashed = [name for name, code in entry["other"].items() if code in CRASHED]
        left = entry["survived"] + entry["no_tests"]
        left += [name for name in entry["other"] if name not in crashed]
        argued = [
            name
            for name in left
            if name in equivalent and equivalent[name]["change"] in entry["diffs"][name]
        ]
        alive = [name for name in left if name not in argued]
        killed = entry["killed"] + entry["timeout"] + len(crashed)
        counted = entry["mutants"] - len(argued)
        score = killed / counted if counted else 1.0
        total["mutants"] += entry["mutants"]
        total["killed"] += killed
        total["equivalent"] += len(argued)
        minutes = entry["seconds"] / 60
        checked = str(entry["mutants"])
        if entry.get("unchecked"):
            checked += f" (of {entry['mutants'] + entry['unchecked']}: stopped)"
            partial.append(module)
        when = entry["measured"]
        if "rechecked" in entry:
            minutes += entry["recheck_seconds"] / 60
            when += f" (survivors run again {entry['rechecked'][11:]})"
        lines.append(
            f"| `{module}` | {when} | {minutes:.0f} min | {checked} | "
            f"{killed} | {len(argued)} | {len(alive)} | {score:.1%} |"
        )
        sections += [f"## `{module}`", "", "Tests: " + ", ".join(f"`{t}`" for t in entry["tests"])]
        if entry["functions"] != ["*"]:
            sections.append("Functions: " + ", ".join(f"`{f}`" for f in entry["functions"]))
        sections.append("")
        for name in left:
            why = equivalent.get(name)
            if name in argued:
                verdict = "equivalent: " + " ".join(why["why"].split())
            elif why is not None:
                verdict = "SURVIVING (the argument in mutation_equivalent.toml is stale)"
            elif name in entry["no_tests"]:
                verdict = "SURVIVING: no selected test reaches it"
            else:
                verdict = "SURVIVING"
            sections += [f"- `{name}`: {verdict}", "", "```diff", _short(entry["diffs"][name])]
            sections += ["```", ""]
    measured = [m for m in TARGETS if m in results["modules"]]
    if measured:
        counted = total["mutants"] - total["equivalent"]
        lines.append(
            f"| all measured | | | {total['mutants']} | {total['killed']} | "
            f"{total['equivalent']} | {counted - total['killed']} | "
            f"{total['killed'] / counted:.1%} |"
        )
    missing = [m for m in TARGETS if m not in results["modules"]]
    if missing:
        lines += ["", "Not measured: " + ", ".join(f"`{m}`" for m in missing) + "."]
    if partial:
        lines += [
            "",
            "Partly measured (the run was stopped; the score is over the mutants checked): "
            + ", ".join(f"`{m}`" for m in partial)
            + ".",
        ]
    lines += ["", *_cost(results)]
    return "\n".join(lines + ["", "# Surviving mutants", ""] + sections).rstrip() + "\n"


def _cost(results: dict) -> list[str]:
    """What a full pass costs: per module, the mutants mutmut makes of its functions times the
    seconds per mutant its last run measured (one child). A stopped run checked the mutants
    with the fastest tests first (mutmut's order), so its rate, and the estimate, is a floor."""
    lines = [
        "## Cost of a full pass",
        "",
        "Mutants planned times the measured seconds per mutant (wall time of the module's "
        "last full or partial run, one mutant at a time, on this 2-core machine shared with "
        "other work). `≥`: the run was stopped, and mutmut checks the mutants with the fastest "
        "tests first, so the rest cost more.",
        "",
        "| module | mutants planned | seconds per mutant | full pass |",
        "|---|---|---|---|",
    ]
    total, floor = 0.0, False
    for module in TARGETS:
        planned = _planned(module)
        entry = results["modules"].get(module)
        if entry is None or not entry["mutants"]:
            lines.append(f"| `{module}` | {planned} | not measured | |")
            floor = True
            continue
        rate = entry["seconds"] / entry["mutants"]
        stopped = "≥ " if entry.get("unchecked") else ""
        floor |= bool(stopped)
        total += planned * rate
        minutes = planned * rate / 60
        lines.append(
            f"| `{module}` | {planned} | {stopped}{rate:.1f} | {stopped}{minutes:.0f} min |"
        )
    lines.append(f"| all | | | {'≥ ' if floor else ''}{total / 3600:.1f} h |")
    return lines


def _planned(module: str) -> int:
    """How many mutants mutmut makes of the functions measured in ``module``."""
    import tempfile

    from mutmut.configuration import config
    from mutmut.mutation.file_mutation import mutate_file_contents

    # mutmut reads its settings once, from the working directory's pyproject.toml
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "pyproject.toml").write_text('[tool.mutmut]\nsource_paths = ["."]\n')
        try:
            os.chdir(folder)
            config()
        finally:
            os.chdir(here)
    mutated = mutate_file_contents(module, (ROOT / module).read_text(encoding="utf-8"))
    prefix = module.removesuffix(".py").replace("/", ".")
    globs = _globs(module, TARGETS[module])
    names = [f"{prefix}.{name}" for name in mutated.mutant_names]
    return sum(any(fnmatch.fnmatchcase(name, glob) for glob in globs) for name in names)


def _short(diff: str, context: int = 2) -> str:
    """The changed lines of a mutant's diff (mutmut's covers the whole function), with a little
    context."""
    lines = [line for line in diff.splitlines() if not line.startswith(("---", "+++", "@@"))]
    changed = [i for i, line in enumerate(lines) if line.startswith(("-", "+"))]
    keep = sorted({j for i in changed for j in range(i - context, i + context + 1)})
    keep = [j for j in keep if 0 <= j < len(lines)]
    return "\n".join(lines[j] for j in keep)


def _write(path: Path, text: str) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def _load(path: Path) -> dict:
    results = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"modules": {}}
    results["tool"] = f"mutmut {version('mutmut')}"
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("modules", nargs="*", help=f"default: all of {', '.join(TARGETS)}")
    parser.add_argument("--report", action="store_true", help="only re-render mutation.md")
    parser.add_argument(
        "--survivors",
        action="store_true",
        help="run the last run's survivors not argued equivalent again (after adding tests)",
    )
    parser.add_argument("--max-children", type=int, default=1, help="mutants tested at once")
    args = parser.parse_args()
    unknown = [m for m in args.modules if m not in TARGETS]
    if unknown:
        parser.error(f"not a measured module: {', '.join(unknown)} (one of {', '.join(TARGETS)})")
    path = RESULTS / "mutation.json"
    if not args.report:
        for module in args.modules or list(TARGETS):
            print(f"mutating {module} ...", flush=True)
            earlier = _load(path)["modules"].get(module) if args.survivors else None
            if args.survivors and earlier is None:
                parser.error(f"--survivors: {module} was never measured")
            entry = measure_module(module, TARGETS[module], args.max_children, earlier)
            # read again: another module may have been measured meanwhile
            results = _load(path)
            results["modules"][module] = entry
            print(
                f"  {entry['mutants']} mutants, {entry['killed'] + entry['timeout']} killed, "
                f"{len(entry['survived']) + len(entry['no_tests'])} surviving, "
                f"{entry['seconds'] / 60:.1f} min",
                flush=True,
            )
            _write(path, json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    _write(RESULTS / "mutation.md", render(_load(path)))
    print(f"wrote {RESULTS / 'mutation.md'}")


if __name__ == "__main__":
    main()
