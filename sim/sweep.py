"""Sweeps: a scenario's variants × replications, run serially or on local worker processes.

Every scenario is a sweep: without ``variants`` it has one variant, ``default``. A variant is the
scenario with its overrides applied (``variants.grid`` or ``variants.cases``), validated before
anything runs; the ``frozen`` and ``instant`` bounds are added when ``bounds`` asks for them.
Replication ``r`` runs every variant with the same root seed (the scenario's own for ``r = 0``),
so variants share users, items, arrivals and response noise and their differences are paired.
Runs are independent and deterministic, so ``--workers N`` gives the same results as a serial run.
With adaptive ``replications`` (see :mod:`sim.replications`) whole replications are added in
batches until every variant is measured precisely enough, or ``max`` have run.
"""

from __future__ import annotations

import ctypes
import difflib
import itertools
import json
import multiprocessing
import os
import re
import signal
import sys
import time as wallclock
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from sim.durations import format_duration
from sim.errors import RecloopError, ScenarioError
from sim.loader import LOCAL_FOLDERS, drop_other_policys_params, parse_scenario, set_path
from sim.replications import Reached, first_met, next_batch, precision, replication_plan
from sim.rng import Streams
from sim.spec import RESERVED_LABELS, AdaptiveReplications, Scenario

__all__ = [
    "RunPlan",
    "RunOutcome",
    "Progress",
    "plan_runs",
    "grid_levels",
    "run_plans",
    "run_replications",
    "Replicated",
    "run_sweep",
    "execute",
    "describe_plan",
]

#: Scenario keys that describe the sweep rather than one run.
SWEEP_KEYS = ("variants", "baseline", "replications", "bounds")
DEFAULT_LABEL = "default"


@dataclass(frozen=True)
class RunPlan:
    """One run of a sweep: which variant, which replication, its scenario and directory."""

    variant: str
    replication: int
    scenario: Scenario
    folder: str  # relative to the results directory
    #: The twin of a run with probes: the same run without the probe users' controls
    twin: bool = False


class Progress(Protocol):
    """Where a single run reports how far it has got (the command line's bar or lines)."""

    def update(self, now: float) -> None:
        """Served up to ``now``, in simulated seconds."""

    def phase(self, step: str) -> None:
        """Serving is over and ``step`` (measuring a metric, writing the results) has begun."""


@dataclass
class RunOutcome:
    """What a finished (or failed) run reports back: one ``runs.parquet`` row."""

    plan: RunPlan
    row: dict[str, Any]
    missing: dict[str, str]
    error: str | None = None


def _base_data(scenario: Scenario) -> dict[str, Any]:
    data = scenario.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return {key: value for key, value in data.items() if key not in SWEEP_KEYS}


def _label(path: str, value: Any) -> str:
    parts = path.split(".")
    name = ".".join(parts[-2:])
    shown = str(value).lower() if isinstance(value, bool) else value
    return f"{name}={shown}"


def variant_overrides(scenario: Scenario) -> list[tuple[str, dict[str, Any], str]]:
    """(label, overrides, where) of every declared variant, in order."""
    variants = scenario.variants
    if variants is None:
        return [(DEFAULT_LABEL, {}, "scenario")]
    if variants.cases:
        return [
            (case.label, dict(case.overrides), f"variants.cases.{index}")
            for index, case in enumerate(variants.cases)
        ]
    return [
        (label, {path: value for _, path, value in cell}, "variants.grid")
        for label, cell in _grid_cells(variants.grid)
    ]


def _grid_cells(grid: dict[str, Any]) -> list[tuple[str, tuple[tuple[str, str, Any], ...]]]:
    """Every combination of the grid's axes: its label and its (level label, path, value) per
    axis, in declared order."""
    axes = []
    for path, values in grid.items():
        if isinstance(values, dict):
            axes.append([(str(label), path, value) for label, value in values.items()])
        else:
            axes.append([(_label(path, value), path, value) for value in values])
    return [(" · ".join(part for part, _, _ in cell), cell) for cell in itertools.product(*axes)]


def grid_levels(scenario: Scenario) -> dict[str, dict[str, str]]:
    """Each grid variant's level label per axis (keyed by the axis's path), from the same
    planning as its label, so that nothing parses labels; empty without a ``variants.grid``."""
    if scenario.variants is None or not scenario.variants.grid:
        return {}
    return {
        label: {path: part for part, path, _ in cell}
        for label, cell in _grid_cells(scenario.variants.grid)
    }


def plan_runs(scenario: Scenario) -> tuple[list[str], str, list[RunPlan]]:
    """Variant labels (declared, then the bounds), the baseline label, and every run.

    Raises :class:`ScenarioError` naming the variant when one does not validate.
    """
    base = _base_data(scenario)
    declared = variant_overrides(scenario)
    labels = [label for label, _, _ in declared]
    problems = []
    if len(set(labels)) != len(labels):
        problems.append(f"variants: labels must be distinct, got {labels}")
    for label in labels:
        if label in RESERVED_LABELS:
            problems.append(f"variants: label {label!r} is reserved for the bounds")
    variants: dict[str, dict[str, Any]] = {}
    for label, overrides, where in declared:
        data = base
        try:
            for path, value in overrides.items():
                data = set_path(data, path, value, f"{where}: {path}")
            data, _ = drop_other_policys_params(base, data, list(overrides))
            parse_scenario(data, label)
        except ScenarioError as error:
            problems.extend(f"variant {label!r} ({where}): {line}" for line in error.problems)
            continue
        variants[label] = data
    baseline = scenario.baseline or labels[0]
    if baseline not in labels:
        problems.append(f"baseline: {baseline!r} is not a variant; variants: {', '.join(labels)}")
    if isinstance(scenario.replications, AdaptiveReplications) and variants:
        problems += _until_problems(scenario, variants)
    if problems:
        raise ScenarioError(problems)

    bounds = scenario.bounds
    if bounds.frozen:
        variants["frozen"] = set_path(variants[baseline], "stack.frozen_after_warmup", True, "")
    if bounds.instant:
        variants["instant"] = _instant(scenario, variants, baseline)
    all_labels = list(variants)
    plans = []
    for replication in range(planned_replications(scenario)):
        seed = _replication_seed(scenario.seed, replication)
        for index, label in enumerate(all_labels):
            data = dict(variants[label], seed=seed)
            plans.append(
                RunPlan(
                    variant=label,
                    replication=replication,
                    scenario=parse_scenario(data, label),
                    folder=f"variants/{index:02d}-{_slug(label)}/r{replication}",
                )
            )
            if scenario.probes:  # paired with its twin: same seed, the controls withheld
                plans.append(
                    RunPlan(
                        variant=label,
                        replication=replication,
                        scenario=parse_scenario(dict(data, probes_withheld=True), label),
                        folder=f"variants/{index:02d}-{_slug(label)}/r{replication}-twin",
                        twin=True,
                    )
                )
    return all_labels, baseline, plans


def planned_replications(scenario: Scenario) -> int:
    """Replications planned: the count, or an adaptive sweep's ``max``."""
    rule = scenario.replications
    return rule if isinstance(rule, int) else rule.max


def _until_problems(scenario: Scenario, variants: dict[str, dict[str, Any]]) -> list[str]:
    """``replications.until.metric`` must be a ``runs.parquet`` metric of every variant."""
    from sim.metrics import metric_names

    assert isinstance(scenario.replications, AdaptiveReplications)
    metric = scenario.replications.until.metric
    bounds = scenario.bounds
    extra = ["propagation_efficiency"] if bounds.frozen and bounds.instant else []
    known = {
        label: [*metric_names(parse_scenario(data, label)), *extra]
        for label, data in variants.items()
    }
    lacking = [label for label, names in known.items() if metric not in names]
    where = f"replications.until.metric: {metric!r}"
    if len(lacking) == len(known):
        names = sorted({name for names in known.values() for name in names})
        match = difflib.get_close_matches(metric, names, n=1, cutoff=0.6)
        hint = f"; did you mean {match[0]!r}?" if match else ""
        if metric in ("bad_impressions", "sessions_lost", "churned_exposed_users"):
            hint = " (it is measured after a topic_aversion or item_turns_bad intervention)"
        return [f"{where} is not a runs.parquet metric of this scenario{hint}"]
    if lacking:
        return [f"{where} is not measured in variant(s) {', '.join(map(repr, lacking))}"]
    return []


def _replication_seed(seed: int, replication: int) -> int:
    return seed if replication == 0 else Streams(seed).integer_seed(f"replication:{replication}")


def _instant(scenario: Scenario, variants: dict[str, dict[str, Any]], baseline: str) -> dict:
    """The baseline with every layer of any variant at its fastest: no latency, no compute
    time, immediate rollout; incremental layers at every window, batch layers every
    ``bounds.instant_every`` or their fastest period in any variant, whichever is shorter."""
    layers: dict[str, Any] = {}
    fastest: dict[str, float] = {}
    for label in [baseline, *variants]:
        for name, layer in parse_scenario(variants[label], label).stack.layers.active().items():
            layers.setdefault(name, layer)
            if layer.every:
                fastest[name] = min(fastest.get(name, np.inf), layer.every)
    bound = scenario.bounds.instant_every
    period = scenario.tick_seconds if bound == "tick" else bound
    data = variants[baseline]
    for name, layer in layers.items():
        fast = layer.model_dump(mode="json", by_alias=True)
        fast.update(
            enabled=True,
            latency="0s",
            compute_time="0s",
            rollout="immediate",
            every=None,
            after_events=None,
            on_drift=None,
            continuous=not layer.snapshots,  # state updated in place: at every window
        )
        if layer.snapshots:
            fast.update(every=format_duration(min(period, fastest.get(name, np.inf))), phase="0s")
        data = set_path(data, f"stack.layers.{name}", fast, "bounds.instant")
    return data


def _slug(label: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.=-]+", "-", label).strip("-.")
    return cleaned[:60] or "variant"


# --- execution -------------------------------------------------------------------------------


def execute(plan: RunPlan, out: str, progress: Progress | None = None) -> RunOutcome:
    """Run one plan, measure it and write its directory; a policy or scenario error fails this
    run only. ``progress`` hears of every served window and every step after serving."""
    from sim.metrics import measure
    from sim.results import write_run
    from sim.runner import run_scenario

    started = wallclock.perf_counter()
    row: dict[str, Any] = {
        "variant": plan.variant,
        "replication": plan.replication,
        "seed": plan.scenario.seed,
    }
    try:
        folder = Path(out) / plan.folder
        folder.mkdir(parents=True, exist_ok=True)  # where an on-disk event log lives
        on_window = None if progress is None else progress.update
        on_step = None if progress is None else progress.phase
        result = run_scenario(plan.scenario, on_window, scratch=folder)
        measuring = wallclock.perf_counter()
        metrics = measure(result, on_step)
        result.summary["wall_seconds_by_component"]["metrics"] = round(
            wallclock.perf_counter() - measuring, 4
        )
    except RecloopError as error:
        return RunOutcome(plan, row | {"status": "failed"}, {}, error=str(error))
    except OSError as error:  # the disk: full, read-only, gone
        return RunOutcome(plan, row | {"status": "failed"}, {}, error=_disk_error(error, folder))
    failed = row | {"status": "failed"}
    row["status"] = "ok"
    row["policy"] = result.summary["policy"]
    row["oracle"] = result.summary["policy_is_oracle"]
    row["wall_seconds"] = round(wallclock.perf_counter() - started, 3)
    row.update(metrics.scalars)
    if on_step is not None:
        on_step("writing the results")
    try:
        write_run(result, metrics, folder, row)
    except OSError as error:  # every file is written whole or not at all: resumable
        return RunOutcome(plan, failed, {}, error=_disk_error(error, folder))
    return RunOutcome(plan, row, metrics.missing)


def _disk_error(error: OSError, folder: Path) -> str:
    where = error.filename or folder
    return (
        f"writing {where} failed: {error.strerror or error}; nothing half-written is kept, so "
        "`recloop run --resume` finishes the sweep once there is room"
    )


def finished_outcome(plan: RunPlan, out: str | Path) -> RunOutcome | None:
    """The outcome of ``plan`` if its folder holds a complete run of the same scenario.

    Raises :class:`RecloopError` when the folder holds a run of a different scenario: resuming
    must never mix results of two scenarios.
    """
    from sim.results import scenario_hash

    path = Path(out) / plan.folder / "summary.json"
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None  # damaged after it was written (recloop writes it whole): run it again
    if summary.get("scenario_hash") != scenario_hash(plan.scenario) or "row" not in summary:
        raise RecloopError(
            f"{path.parent}: holds a run of a different scenario than {plan.variant!r} "
            f"replication {plan.replication}; resume into the directory the sweep was started in"
        )
    return RunOutcome(plan, summary["row"], summary["missing"])


def run_plans(
    plans: list[RunPlan],
    out: str | Path,
    workers: int = 1,
    on_done: Callable[[RunOutcome, int, int], None] | None = None,
    progress: Progress | None = None,
    resume: bool = False,
    backend: str = "local",
    address: str | None = None,
    pool: ProcessPoolExecutor | None = None,
) -> list[RunOutcome]:
    """Run every plan (``workers`` processes when above 1, or Ray tasks with ``backend="ray"``
    on the cluster at ``address``); outcomes in plan order.

    With ``resume``, plans whose folder already holds a complete run are not run again.
    ``progress`` follows a run when there is only one. ``pool``: worker processes to use (and
    leave running) instead of starting ``workers`` new ones.
    """
    out = str(out)
    outcomes: dict[int, RunOutcome] = {}
    todo = list(range(len(plans)))
    if resume:
        for index in list(todo):
            found = finished_outcome(plans[index], out)
            if found is not None:
                outcomes[index] = found
                todo.remove(index)

    def record(index: int, outcome: RunOutcome) -> None:
        outcomes[index] = outcome
        if on_done is not None:
            on_done(outcome, len(outcomes), len(plans))

    if backend == "ray":
        _run_on_ray(plans, todo, str(Path(out).resolve()), address, workers, record)
        return [outcomes[index] for index in range(len(plans))]
    if workers <= 1 or len(todo) <= 1:
        for index in todo:
            record(index, execute(plans[index], out, progress if len(plans) == 1 else None))
        return [outcomes[index] for index in range(len(plans))]
    own = pool is None
    pool = pool or _process_pool(workers)
    try:
        pending: dict[Future[RunOutcome], int] = {
            pool.submit(execute, plans[index], out): index for index in todo
        }
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                record(pending.pop(future), future.result())
    except BaseException:
        stop_pool(pool)  # an interrupt stops every run at once, the running ones too
        remove_stray_files(out)  # a stopped worker's half-written temporary files
        raise
    if own:
        pool.shutdown()
    return [outcomes[index] for index in range(len(plans))]


def _process_pool(workers: int) -> ProcessPoolExecutor:
    # spawn: a fresh interpreter per worker, no thread pools inherited from this process
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_worker_signals,
    )


def _worker_signals() -> None:
    """In a worker: Ctrl-C is the main process's to handle (it stops the workers), and a worker
    whose main process dies, even of SIGKILL, is sent SIGTERM (Linux) rather than left running."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):  # no prctl: the main process's handlers still stop it
            pass


#: prctl(2) option: the signal a process gets when its parent dies.
PR_SET_PDEATHSIG = 1


def remove_stray_files(out: str | Path) -> None:
    """Delete the temporary files of writers that were stopped: ``atomic_write`` writes
    ``.NAME.*.tmp`` then renames it, so such a file is never a result."""
    for stray in Path(out).rglob(".*.tmp"):
        stray.unlink(missing_ok=True)


def stop_pool(pool: ProcessPoolExecutor) -> None:
    """Stop every worker now, running runs included (each writes its files whole, so a stopped
    run leaves nothing to clean up and is run again on --resume), and wait until they are gone."""
    processes = list(getattr(pool, "_processes", {}).values())  # the executor's own workers
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(timeout=5)
        if process.is_alive():
            process.kill()
    pool.shutdown(wait=False, cancel_futures=True)


@contextmanager
def _workers(
    backend: str, address: str | None, workers: int
) -> Iterator[ProcessPoolExecutor | None]:
    """What runs every batch of an adaptive sweep, started once: a Ray session, or the local
    worker processes (None when runs are serial or on Ray)."""
    if backend == "ray":
        with _ray_session(address, workers):
            yield None
    elif workers > 1:
        pool = _process_pool(workers)
        try:
            yield pool
        except BaseException:
            stop_pool(pool)
            raise
        pool.shutdown()
    else:
        yield None


#: Attempts Ray makes at a run whose worker process died (a lost node, the OOM killer).
RAY_RETRIES = 3


def _run_on_ray(
    plans: list[RunPlan],
    todo: list[int],
    out: str,
    address: str | None,
    workers: int,
    record: Callable[[int, RunOutcome], None],
) -> None:
    """Each plan a Ray task writing its own folder under ``out`` (a path every node can reach).

    A task whose worker dies is retried by Ray, alone; a run that fails on its own (a policy
    error) is an outcome, not a retry. Connects to ``address`` (``auto``: the running cluster),
    or starts a local Ray instance of ``workers`` CPUs for this sweep when None.
    """
    with _ray_session(address, workers) as ray:
        remote = ray.remote(num_cpus=1, max_retries=RAY_RETRIES)(execute)
        pending = {remote.remote(plans[index], out): index for index in todo}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    record(pending.pop(ref), ray.get(ref))
        except BaseException:
            for ref in pending:  # an interrupt stops the rest at once
                ray.cancel(ref, force=True)
            raise


@contextmanager
def _ray_session(address: str | None, workers: int) -> Iterator[Any]:
    """Ray, connected: to the instance already running in this process (left running), or to
    ``address``, or to a local instance of ``workers`` CPUs (both shut down on leaving)."""
    try:
        import ray
    except ImportError as error:
        raise RecloopError(
            "--backend ray needs Ray: pip install 'recloop[ray]' (or pip install ray)"
        ) from error
    if ray.is_initialized():
        yield ray
        return
    try:
        ray.init(
            address=address,
            num_cpus=workers if address is None else None,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env=_local_policy_folders(),
        )
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise RecloopError(f"--address {address}: cannot reach a Ray cluster: {error}") from error
    try:
        yield ray
    finally:
        ray.shutdown()


def _local_policy_folders() -> dict[str, Any] | None:
    """Ray's runtime environment for policies imported from local folders (next to the
    scenario, or the current directory): those folders on the workers' ``PYTHONPATH``."""
    if not LOCAL_FOLDERS:
        return None
    inherited = [os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []
    return {"env_vars": {"PYTHONPATH": os.pathsep.join([*LOCAL_FOLDERS, *inherited])}}


def describe_plan(
    labels: list[str],
    plans: list[RunPlan],
    workers: int,
    replications: int | AdaptiveReplications | None = None,
) -> str:
    """One line: variants × replications = runs, how long each, on how many workers; an
    adaptive sweep gives its range of replications and the precision it runs until."""
    scenario = plans[0].scenario
    count = len({plan.replication for plan in plans})
    variants = f"{len(labels)} variant{'s' * (len(labels) != 1)}"
    length = f"{format_duration(scenario.end)} simulated, {workers} worker{'s' * (workers != 1)}"
    if isinstance(replications, AdaptiveReplications):
        until = replications.until
        least = replications.min * len(labels)
        return (
            f"{variants} × {replications.min} to {replications.max} replications (until every "
            f"variant's {until.metric} is within ±{100 * until.relative_half_width:.3g}%, 95% "
            f"interval) = {least} to {len(plans)} runs of {length}"
        )
    return (
        f"{variants} × {count} replication{'s' * (count != 1)} = "
        f"{len(plans)} run{'s' * (len(plans) != 1)} of {length}"
    )


@dataclass
class Replicated:
    """What a sweep ran: its variants, baseline, every kept run, and ``replication_plan``."""

    labels: list[str]
    baseline: str
    outcomes: list[RunOutcome]
    plan: dict[str, Any]


def run_replications(
    scenario: Scenario,
    out: str | Path,
    workers: int = 1,
    on_done: Callable[[RunOutcome, int, int], None] | None = None,
    progress: Progress | None = None,
    resume: bool = False,
    backend: str = "local",
    address: str | None = None,
    on_batch: Callable[[Reached, AdaptiveReplications], None] | None = None,
    planned: tuple[list[str], str, list[RunPlan]] | None = None,
) -> Replicated:
    """Run a scenario's replications: all of a fixed count at once; adaptive ones in batches of
    whole replications until the precision is reached or ``max`` have run (``on_batch`` hears
    the precision after each batch). ``planned`` is :func:`plan_runs`'s result, if already made.

    ``on_done`` counts runs against every planned run (an adaptive sweep's ``max``).
    """
    labels, baseline, plans = planned or plan_runs(scenario)
    rule = scenario.replications
    if isinstance(rule, int):
        outcomes = run_plans(plans, out, workers, on_done, progress, resume, backend, address)
        return Replicated(labels, baseline, outcomes, replication_plan(rule))
    measured = [label for label in labels if label not in RESERVED_LABELS]
    by_replication: dict[int, list[RunPlan]] = {}
    for plan in plans:
        by_replication.setdefault(plan.replication, []).append(plan)
    outcomes = []

    def counted(outcome: RunOutcome, finished: int, total: int) -> None:
        if on_done is not None:
            on_done(outcome, len(outcomes) + finished, len(plans))

    done, reached, met = 0, None, None
    # one Ray instance or process pool for every batch, not one per batch
    with _workers(backend, address, workers) as pool:
        while met is None and done < rule.max:
            count = next_batch(done, rule, reached, len(labels), workers)
            batch = [plan for r in range(done, done + count) for plan in by_replication[r]]
            outcomes += run_plans(
                batch,
                out,
                workers,
                counted,
                progress if len(plans) == 1 else None,
                resume,
                backend,
                address,
                pool,
            )
            rows = [outcome.row for outcome in outcomes if not outcome.plan.twin]
            met = first_met(rows, measured, rule, done, done + count)
            done += count
            reached = met or precision(rows, measured, rule.until, done)
            if on_batch is not None:
                on_batch(reached, rule)
    assert reached is not None
    kept = [outcome for outcome in outcomes if outcome.plan.replication < reached.replications]
    return Replicated(labels, baseline, kept, replication_plan(rule, reached))


def run_sweep(
    scenario: Scenario,
    out: str | Path,
    workers: int = 1,
    on_done: Callable[[RunOutcome, int, int], None] | None = None,
    progress: Progress | None = None,
    resume: bool = False,
    backend: str = "local",
    address: str | None = None,
) -> dict[str, Any]:
    """Plan, run and write a scenario's every variant × replication; returns ``summary.json``."""
    from sim.results import write_sweep

    started = wallclock.perf_counter()
    ran = run_replications(scenario, out, workers, on_done, progress, resume, backend, address)
    return write_sweep(
        out,
        scenario,
        ran.labels,
        ran.baseline,
        ran.outcomes,
        wallclock.perf_counter() - started,
        ran.plan,
    )
