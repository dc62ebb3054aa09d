"""Running a sweep: its planned runs, serially, on local worker processes or on Ray.

The runs are planned in :mod:`sim.sweeps.plan` (variants, replications and their seeds). Runs are
independent and deterministic, so ``--workers N`` gives the same results as a serial run.
With adaptive ``replications`` (see :mod:`sim.measuring.replications`) whole replications are added
in batches until every variant is measured precisely enough, or ``max`` have run.
"""

from __future__ import annotations

import ctypes
import json
import multiprocessing
import os
import signal
import sys
import time as wallclock
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim.errors import RecloopError
from sim.measuring.replications import Reached, first_met, next_batch, precision, replication_plan
from sim.scenario.loader import LOCAL_FOLDERS
from sim.scenario.spec import RESERVED_LABELS, AdaptiveReplications, Scenario
from sim.sweeps.plan import Progress, RunOutcome, RunPlan, plan_runs

__all__ = [
    "run_plans",
    "run_replications",
    "Replicated",
    "run_sweep",
    "execute",
    "finished_outcome",
]


def execute(plan: RunPlan, out: str, progress: Progress | None = None) -> RunOutcome:
    """Run one plan, measure it and write its directory; a policy or scenario error fails this
    run only. ``progress`` hears of every served window and every step after serving."""
    from sim.measuring.metrics import measure
    from sim.serving.runner import run_scenario
    from sim.sweeps.results import write_run

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
    from sim.sweeps.results import scenario_hash

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
    from sim.sweeps.results import write_sweep

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
