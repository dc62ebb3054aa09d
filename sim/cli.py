"""The ``recloop`` command line.

Exit codes: 0 success, 1 some runs of a sweep failed (the others are written), 2 a user error
(bad scenario, option or policy; one line per problem, never a traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from sim.errors import RecloopError
from sim.scenario.durations import format_duration, humanize_duration
from sim.scenario.loader import load_scenario
from sim.scenario.spec import Scenario

if TYPE_CHECKING:
    from sim.sweeps.plan import RunOutcome

__all__ = ["main"]

USER_ERROR = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    stop = _stop_on_sigterm()
    try:
        return int(args.handler(args))
    except RecloopError as error:
        for line in str(error).splitlines():
            print(f"recloop: error: {line}", file=sys.stderr)
        return USER_ERROR
    except KeyboardInterrupt:
        print("recloop: interrupted; nothing half-written was left behind", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `recloop scenarios | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        stop()


def _find_policy(scenario: Scenario, source: str) -> None:
    """Import a ``module:Class`` policy now, looking next to the scenario file first: a clear
    error before anything runs, and the folder it was found in is on ``sys.path`` for the
    sweep's workers (spawned workers inherit it)."""
    path = Path(source)
    near = path.parent if path.is_file() else None
    if ":" in scenario.stack.policy.name:
        from policies.registry import resolve

        resolve(scenario.stack.policy.name, near=near)
    if ":" in scenario.world.model.name:  # a user model's module, found the same way
        from users.registry import resolve as resolve_user_model

        resolve_user_model(scenario.world.model.name, near=near)
    for name, layer in scenario.stack.layers.active().items():  # and a layer's of your own
        if ":" in getattr(layer, "name", ""):
            from sim.serving.layers.registry import layer_class

            layer_class(name, layer, near=near)


def _stop_on_sigterm() -> Any:
    """Make ``kill PID`` stop a run the way Ctrl-C does (workers stopped, finished runs kept,
    resumable) instead of leaving worker processes behind; returns what restores the old
    handler. Only in the main thread, where signal handlers can be set."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    return lambda: signal.signal(signal.SIGTERM, previous)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recloop",
        description="Simulate a recommender's feedback loop: how fast negative feedback "
        "propagates, through which layer, and at what cost.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run a scenario and write its results directory")
    run.add_argument(
        "scenario", nargs="?", help="a scenario YAML file, or a packaged scenario by name"
    )
    run.add_argument(
        "--resume",
        metavar="DIR",
        help="finish an interrupted sweep in DIR: its scenario, without re-running finished runs",
    )
    run.add_argument("--out", "-o", help="results directory (default: runs/<scenario name>)")
    _add_overrides(run)
    run.add_argument(
        "--workers",
        "-j",
        type=int,
        default=1,
        help="run a sweep's runs on this many local processes (results are identical)",
    )
    run.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help="where a sweep's runs execute: local processes, or Ray tasks (pip install "
        "'recloop[ray]'); results are identical",
    )
    run.add_argument(
        "--address",
        help="with --backend ray: the cluster to join ('auto' for the running one); default: "
        "start a local Ray instance of --workers CPUs",
    )
    run.add_argument(
        "--no-memory-check",
        action="store_true",
        help="run even when the estimated peak memory exceeds what is available",
    )
    run.add_argument(
        "--force",
        action="store_true",
        help="write into an --out that holds another scenario's results (they are replaced) or "
        "files recloop did not write",
    )
    run.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary")
    run.add_argument(
        "--profile",
        action="store_true",
        help="print where the wall time went, by component, and ranking against a bare matmul",
    )
    run.set_defaults(handler=_run)

    validate = commands.add_parser("validate", help="check scenario files without running them")
    validate.add_argument("scenarios", nargs="+", help="scenario files or packaged names")
    _add_overrides(validate)
    validate.set_defaults(handler=_validate)

    report = commands.add_parser(
        "report", help="(re)build the HTML report of a results directory from its files"
    )
    report.add_argument("results", help="a results directory written by recloop run")
    report.add_argument("--out", "-o", help="report file (default: RESULTS/report.html)")
    report.add_argument(
        "--plotlyjs",
        choices=("inline", "cdn"),
        default="inline",
        help="inline: one file that opens offline (default); cdn: a small file that loads "
        "Plotly from the internet",
    )
    report.set_defaults(handler=_report_command)

    schema = commands.add_parser("schema", help="print the scenario JSON Schema")
    schema.set_defaults(handler=_schema)

    policies = commands.add_parser(
        "policies", help="list the available policies and where each comes from"
    )
    policies.add_argument(
        "name", nargs="?", help="a policy: list its parameters, defaults and descriptions"
    )
    policies.set_defaults(handler=_policies)

    users = commands.add_parser(
        "users", help="list the available user models and where each comes from"
    )
    users.add_argument(
        "name", nargs="?", help="a user model: list its parameters, defaults and descriptions"
    )
    users.set_defaults(handler=_user_models)

    layers = commands.add_parser(
        "layers", help="list the available update layers and where each comes from"
    )
    layers.add_argument(
        "name", nargs="?", help="a layer: list its parameters, defaults and descriptions"
    )
    layers.set_defaults(handler=_layers)

    listing = commands.add_parser("scenarios", help="list the packaged scenarios")
    listing.set_defaults(handler=_scenarios)
    _add_calibrate(commands)
    return parser


def _add_calibrate(commands: Any) -> None:
    calibrate = commands.add_parser(
        "calibrate",
        help="fit a world to an event log (Parquet or CSV) and write it as a scenario",
        description="Fit the parametric world to LOG (columns user, item, time, kind; optionally "
        "position, session, topic, creator, dwell) and write a scenario that runs as is, a "
        "comment per fitted value naming its source and standard error.",
    )
    calibrate.add_argument("log", help="the event log: a .parquet or .csv file")
    calibrate.add_argument("--out", "-o", required=True, help="the scenario file to write")
    calibrate.add_argument(
        "--report",
        help="also write a fit report (HTML) comparing the log with a log simulated from the "
        "fitted world",
    )
    calibrate.add_argument(
        "--map",
        dest="kind_map",
        metavar="KIND=VALUE,...",
        help="the log's kind values as recloop kinds, e.g. click=1,dismiss=dislike",
    )
    calibrate.add_argument(
        "--policy",
        default="random",
        help="the policy the written scenario serves with (default random: the logging policy "
        "calibration assumes)",
    )
    calibrate.add_argument("--seed", type=int, default=0, help="seed of the fit and simulations")
    calibrate.add_argument(
        "--replications",
        type=int,
        default=3,
        help="with --report: simulated logs the log is compared with (default 3)",
    )
    calibrate.add_argument(
        "--no-factorization", action="store_true", help="skip the preference factorization"
    )
    calibrate.add_argument(
        "--no-refine",
        action="store_true",
        help="skip the simulation that corrects the activity for sessions lost to churn",
    )
    calibrate.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary")
    calibrate.set_defaults(handler=_calibrate)


def _calibrate(args: argparse.Namespace) -> int:
    from sim.calibrate import STEPS, calibrate, parse_kind_map

    kind_map = parse_kind_map(args.kind_map)
    if args.seed < 0:
        raise RecloopError(f"--seed {args.seed}: must be at least 0")
    if args.replications < 1:
        raise RecloopError(f"--replications {args.replications}: must be at least 1")
    steps = [step for step in STEPS if not (args.no_refine and step.startswith("refining"))]
    if not args.report:
        steps = steps[: steps.index("simulating the fitted world")]
    bar = _StepProgress(steps, enabled=not args.quiet, terminal=sys.stderr.isatty())
    try:
        outcome = calibrate(
            args.log,
            args.out,
            report=args.report,
            kind_map=kind_map,
            policy=args.policy,
            seed=args.seed,
            factorize=not args.no_factorization,
            refine=not args.no_refine,
            progress=bar.step,
            replications=args.replications,
        )
    finally:
        bar.close()
    if not args.quiet:
        calibration = outcome.calibration
        print(
            f"recloop: calibrated {len(calibration.fitted)} parameters from "
            f"{outcome.statistics.n_rows:,} rows in {humanize_duration(outcome.seconds)}; "
            f"{len(calibration.not_identified)} groups keep their defaults (listed in the file)",
            file=sys.stderr,
        )
        for note in calibration.notes:
            print(f"recloop: note: {note}", file=sys.stderr)
        if outcome.comparison:
            differing = [
                row["statistic"]
                for row in outcome.comparison["rows"]
                if row["p_value"] is not None and row["p_value"] < 0.01
            ]
            print(
                f"recloop: simulated log vs the log: {len(differing)} of "
                f"{len(outcome.comparison['rows'])} statistics differ at p < 0.01"
                + (f" ({', '.join(differing)})" if differing else ""),
                file=sys.stderr,
            )
    print(f"scenario: {args.out}")
    if args.report:
        print(f"report: {args.report}")
    return 0


class _StepProgress:
    """The calibration's steps as a bar on a terminal, as lines elsewhere (after a while)."""

    def __init__(self, steps: list[str], enabled: bool, terminal: bool):
        self._steps = steps
        self._bar = None
        self._lines = enabled and not terminal
        self._started = time.monotonic()
        self._done = -1
        if enabled and terminal:
            from tqdm import tqdm

            self._bar = tqdm(
                total=len(steps),
                bar_format="{desc}: {bar}| step {n}/{total} [{elapsed}]",
                file=sys.stderr,
            )

    def step(self, name: str) -> None:
        main_step = name.split(" (")[0]
        index = self._steps.index(main_step) if main_step in self._steps else self._done
        if self._bar is not None:
            self._bar.set_description_str(name)
            if index > self._done:
                self._bar.update(index - max(self._done, 0) if self._done >= 0 else index)
        elif self._lines and index > self._done:
            elapsed = humanize_duration(time.monotonic() - self._started)
            print(f"recloop: calibrate: {name} ({elapsed})", file=sys.stderr, flush=True)
        self._done = max(self._done, index)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.update(len(self._steps) - self._bar.n)
            self._bar.close()


def _add_overrides(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="override a field by dotted path, e.g. --set world.users.count=2000 (repeatable)",
    )
    command.add_argument(
        "--quick",
        action="store_true",
        help="the scenario's small configuration (its quick: section; every packaged scenario "
        "has one, under a minute), before any --set; results are named NAME-quick",
    )


def _run(args: argparse.Namespace) -> int:
    from sim.measuring.replications import describe
    from sim.scenario.loader import load_scenario_with_notes, resolved_yaml
    from sim.scenario.spec import AdaptiveReplications
    from sim.serving.runner import check_scenario
    from sim.sweeps.plan import describe_plan, plan_runs
    from sim.sweeps.results import atomic_write, write_report, write_sweep
    from sim.sweeps.sweep import remove_stray_files, run_replications

    if args.workers < 1:
        raise RecloopError(f"--workers {args.workers}: must be at least 1")
    if args.address and args.backend != "ray":
        raise RecloopError(f"--address {args.address}: only with --backend ray")
    if args.resume:
        if args.scenario or args.overrides or args.out or args.quick:
            raise RecloopError(
                "--resume DIR takes the scenario and the output from DIR; give no scenario, "
                "--set, --quick or --out with it"
            )
        if not (Path(args.resume) / "scenario.yaml").is_file():
            raise RecloopError(
                f"--resume {args.resume}: no scenario.yaml (not a results directory)"
            )
        args.out = args.resume
        scenario = load_scenario(str(Path(args.resume) / "scenario.yaml"))
        notes: list[str] = []
        finished = _finished_summary(Path(args.resume), scenario)
        if finished is not None:  # nothing to run: leave its files, wall time included, as they are
            print(
                f"recloop: {args.resume} is finished ({finished} runs, none failed): nothing to "
                "resume",
                file=sys.stderr,
            )
            return 0
    elif args.scenario is None:
        raise RecloopError("run: give a scenario (a file or a packaged name), or --resume DIR")
    else:
        scenario, notes = load_scenario_with_notes(args.scenario, args.overrides, args.quick)
        _find_policy(scenario, args.scenario)
    labels, baseline, plans = plan_runs(scenario)
    rule = scenario.replications
    if isinstance(rule, AdaptiveReplications) and rule.min < 3:
        notes.append(
            f"replications.min is {rule.min}: intervals over fewer than 3 replications are "
            "unreliable, and precision is only checked from 2"
        )
    for plan in plans:
        if plan.replication == 0:
            notes += [note for note in check_scenario(plan.scenario) if note not in notes]
    if not args.no_memory_check and not args.address:  # a cluster's memory is not this machine's
        _check_memory(plans, args.workers)
    out = Path(args.out) if args.out else Path("runs") / _safe_name(scenario.name)
    _prepare_output(out, scenario.name, bool(args.resume), args.force)  # before simulating
    if args.resume:
        remove_stray_files(out)  # a killed writer's temporary files, never a result
    # the sweep's scenario first, so that an interrupted sweep can be resumed from it
    try:
        atomic_write(out / "scenario.yaml", lambda path: path.write_text(resolved_yaml(scenario)))
    except OSError as error:
        raise RecloopError(f"--out {out}: cannot write ({error.strerror or error})") from None
    if not args.quiet:
        print(_headline(scenario), file=sys.stderr)
        if len(plans) > 1:
            print(f"recloop: {describe_plan(labels, plans, args.workers, rule)}", file=sys.stderr)
        for note in notes:
            print(f"recloop: note: {note}", file=sys.stderr)
    single = len(plans) == 1
    progress = _Progress(
        scenario.end, enabled=single and not args.quiet, terminal=sys.stderr.isatty()
    )

    def done(outcome: RunOutcome, finished: int, total: int) -> None:
        if args.quiet or single:
            return
        status = (
            f"failed: {outcome.error}" if outcome.error else f"{outcome.row['wall_seconds']:.1f}s"
        )
        print(
            f"recloop: [{finished}/{total}] {outcome.plan.variant} r{outcome.plan.replication}"
            f"{' twin' * outcome.plan.twin} {status}",
            file=sys.stderr,
        )

    def batch(reached: Any, rule: AdaptiveReplications) -> None:
        if not args.quiet:
            print(f"recloop: {describe(reached, rule)}", file=sys.stderr)

    started = time.perf_counter()
    try:
        ran = run_replications(
            scenario,
            out,
            args.workers,
            done,
            progress,
            bool(args.resume),
            args.backend,
            args.address,
            batch,
            (labels, baseline, plans),
        )
        summary = write_sweep(
            out,
            scenario,
            labels,
            baseline,
            ran.outcomes,
            time.perf_counter() - started,
            ran.plan,
        )
        failed = summary["failed_runs"]
        if len(failed) < len(ran.outcomes) and not (single and failed):
            progress.phase("writing the report")
            write_report(out)
    except OSError as error:  # the results disk: full, read-only, gone
        raise RecloopError(
            f"writing {error.filename or out} failed ({error.strerror or error}); every finished "
            f"run is kept whole: once there is room, recloop run --resume {out}"
        ) from None
    except KeyboardInterrupt:
        finished = sum((out / plan.folder / "summary.json").is_file() for plan in plans)
        most = "at most " * isinstance(rule, AdaptiveReplications)
        print(
            f"\nrecloop: interrupted; {finished} of {most}{len(plans)} runs are finished and kept "
            f"in {out}; nothing half-written was left behind. Resume with: recloop run --resume "
            f"{out}",
            file=sys.stderr,
        )
        return 130
    finally:
        progress.close()
    if single and failed:
        raise RecloopError(failed[0]["error"])
    if not args.quiet:
        if single:
            run_summary = json.loads((out / plans[0].folder / "summary.json").read_text())
            print(_report(run_summary, summary.get("metric_resolution")), file=sys.stderr)
            for note in run_summary.get("notes", []):  # what the run found out, once
                if note not in notes:
                    print(f"recloop: note: {note}", file=sys.stderr)
        else:
            print(_comparison(summary), file=sys.stderr)
        if summary.get("responsiveness"):
            print(responsiveness_table(summary["responsiveness"]), file=sys.stderr)
    if args.profile:
        from sim.measuring.breakdown import profile_table

        written = [out / outcome.plan.folder / "summary.json" for outcome in ran.outcomes]
        summaries = [json.loads(path.read_text()) for path in written if path.is_file()]
        if summaries:
            print(profile_table(summaries), file=sys.stderr)
    for run in failed:
        print(
            f"recloop: error: run {run['variant']} r{run['replication']} failed: {run['error']}",
            file=sys.stderr,
        )
    print(f"results: {out}")
    if len(failed) < len(ran.outcomes):
        print(f"report: {out / 'report.html'}")
    return 1 if failed else 0


def _user_range(entry: dict[str, Any]) -> str:
    """How many users took a probe's control: one count, or the range over replications."""
    if "users_max" in entry:
        return f"{entry['users']} to {entry['users_max']}"
    return str(entry["users"])


def responsiveness_table(responsiveness: dict[str, Any]) -> str:
    """Per variant, each probe's control and the share of the probe users' exposure to what
    they rejected that it prevented, against the twin run without it; then how long a deletion
    took to reach each layer."""
    lines = [
        "  responsiveness: share of exposure prevented by each control (vs its twin run without "
        "it), 95% interval over replications in brackets"
    ]

    def cell(share: dict[str, Any]) -> str:
        if "value" not in share:
            return "n/a"
        text = f"{share['value']:.0%}"
        if share.get("ci_low") is not None:
            text += f" [{share['ci_low']:.0%}, {share['ci_high']:.0%}]"
        return text

    notes = []
    for variant, probes in responsiveness.items():
        if len(responsiveness) > 1:
            lines.append(f"  {variant}:")
        rows = [("control", "exposure to", "users", "within 1h", "within 1d", "to the end")]
        for name, entry in probes.items():
            shares = entry["prevented_share"]
            label = entry["control"] if name.startswith(entry["control"] + "@") else name
            rows.append(
                (
                    label,
                    entry["exposure_to"],
                    _user_range(entry),
                    *(cell(shares.get(h, {})) for h in ("1h", "1d", "end")),
                )
            )
            delays = entry.get("deletion_delay_seconds")
            if delays:
                reached = "; ".join(
                    f"{layer} after {humanize_duration(delay['mean'])}"
                    if "mean" in delay
                    else f"{layer} never ({delay['missing']})"
                    for layer, delay in delays.items()
                )
                notes.append(f"  {name}: the deletion reached {reached}")
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines += [
            "  " + "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in rows
        ]
    return "\n".join(lines + notes)


#: Columns of a sweep's comparison table: metric, title, format of the mean.
HEADLINE_METRICS = (
    ("bad_impressions", "bad impressions", "{:,.0f}"),
    ("repeat_offences_per_negative", "repeats/negative", "{:.2f}"),
    ("ctr", "CTR", "{:.4f}"),
    ("regret_per_request", "regret/request", "{:.3f}"),
    ("churned_users", "churned", "{:,.0f}"),
    ("cost_per_day", "cost/day", "{:,.0f}"),
    ("propagation_efficiency", "efficiency", "{:.2f}"),
)


def _comparison(summary: dict[str, Any]) -> str:
    """Per lever, its effect with the other levers held fixed (when the variants form a grid),
    the lever with the largest effect on harm and its cost; then a table: per variant, each
    headline metric's mean and its paired change vs baseline."""
    unreliable = summary.get("unreliable_reason") if summary.get("unreliable") else None
    mark = "*" if unreliable else ""
    lines = _effect_lines(summary, unreliable)
    comparisons = summary["comparisons"]
    columns = [m for m in HEADLINE_METRICS if any(m[0] in v for v in comparisons.values())]
    header = ["variant", *(title for _, title, _ in columns)]
    rows = [header]
    for label, metrics in comparisons.items():
        row = [label]
        for metric, _, fmt in columns:
            entry = metrics.get(metric)
            if entry is None:
                row.append("n/a")
                continue
            cell = fmt.format(entry["mean"])
            relative = entry.get("relative")
            if relative is not None and metric != "propagation_efficiency":
                cell += f" ({100 * relative['mean']:+.0f}%"
                if relative["ci95"]:
                    low, high = relative["ci95"]
                    cell += f" [{100 * low:+.0f}, {100 * high:+.0f}]{mark}"
                cell += ")"
            row.append(cell)
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    table = [
        "  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    intervals = (
        "paired change vs the baseline in %, 95% interval over replications in brackets"
        if summary["replications"] > 1
        else "paired change vs the baseline in % (one replication: no intervals)"
    )
    lines += [
        f"  {summary['replications']} replication(s); baseline: {summary['baseline']}; {intervals}",
        *table,
    ]
    if unreliable:
        lines.append(f"  * unreliable: {unreliable}")
    return "\n".join(lines)


def _effect_lines(summary: dict[str, Any], unreliable: str | None) -> list[str]:
    """The per-lever sentences and the largest effect on harm, or why there are none."""
    effects = summary.get("effects")
    if effects is None:
        reason = summary.get("effects_absent")
        many = len([v for v in summary["variants"] if v not in ("frozen", "instant")]) > 1
        return [f"  no effects per lever: {reason}"] if reason and many else []
    flag = " [unreliable]" if unreliable else ""
    lines = ["  effect of each lever, the other levers held fixed (main effects, paired):"]
    lines += [f"  - {sentence}{flag}" for sentence in effects["headline"]]
    largest = effects.get("largest")
    if largest is not None:
        cost = largest.get("cost_per_day")
        costs = ""
        if cost is not None:
            costs = f"; cost {cost['effect']:+,.0f} units/day"
            if cost["ci95"]:
                costs += f" [{cost['ci95'][0]:+,.0f}, {cost['ci95'][1]:+,.0f}]"
        lines.append(
            f"  largest effect on {largest['metric'].replace('_', ' ')}: {largest['level']} "
            f"(vs {largest['reference']}), {_change(largest)}{flag}{costs}"
        )
    return lines


def _change(effect: dict[str, Any]) -> str:
    """A main effect as "-55% [-61%, -49%]" (relative where it exists, else in its unit)."""
    if effect["relative"] is not None:
        text, bounds = f"{100 * effect['relative']:+.0f}%", effect["relative_ci95"]
        if bounds:
            text += f" [{100 * bounds[0]:+.0f}%, {100 * bounds[1]:+.0f}%]"
        return text
    text, bounds = f"{effect['effect']:+,.3g}", effect["ci95"]
    return text + (f" [{bounds[0]:+,.3g}, {bounds[1]:+,.3g}]" if bounds else "")


def _check_memory(plans: list[Any], workers: int) -> None:
    """Refuse a sweep whose estimated peak memory exceeds what is available now."""
    from sim.serving.memory import available_bytes, estimate_run

    available = available_bytes()
    if available is None:
        return
    concurrent = min(workers, len(plans))
    biggest = max((estimate_run(plan.scenario) for plan in plans), key=lambda e: e.total)
    needed = biggest.total * concurrent
    if needed > 0.9 * available:
        gib = 2**30
        raise RecloopError(
            f"estimated peak memory {needed / gib:,.1f} GiB ({concurrent} concurrent run(s) of "
            f"{biggest.total / gib:,.1f} GiB, {biggest.requests:,.0f} requests each; the event "
            f"log and its metrics are {biggest.event_log / gib:,.1f} GiB of it) exceeds the "
            f"{available / gib:,.1f} GiB available: lower --workers, world.users.count or "
            "duration (or pass --no-memory-check)"
        )


#: What ``recloop run`` writes at the top of a results directory (the runs go under variants/).
RESULT_FILES = ("scenario.yaml", "summary.json", "report.html", "variants")


def _finished_summary(out: Path, scenario: Scenario) -> int | None:
    """How many runs a finished sweep of ``scenario`` in ``out`` has (``None``: unfinished, some
    runs failed, or the sweep there was of another scenario, which resuming refuses)."""
    from sim.sweeps.results import scenario_hash

    try:
        summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if summary.get("failed_runs") or summary.get("scenario_hash") != scenario_hash(scenario):
        return None
    return len(summary.get("run_folders", {})) or None


def _prepare_output(out: Path, name: str, resume: bool, force: bool) -> None:
    """Make ``out`` ready for the results of scenario ``name``: a new or empty folder, or one
    that holds an earlier run of the same scenario (cleared first, so that no run of the old one
    is left among the new). Another scenario's results, or a folder recloop did not write, are
    kept unless ``force``."""
    if out.exists() and not out.is_dir():
        raise RecloopError(f"--out {out}: exists and is not a directory")
    if out.is_dir() and not resume:
        held = out / "scenario.yaml"
        if held.is_file():
            try:
                before = yaml.safe_load(held.read_text(encoding="utf-8")).get("name")
            except (yaml.YAMLError, AttributeError, UnicodeDecodeError):
                before = None
            if before != name and not force:
                raise RecloopError(
                    f"--out {out}: holds the results of another scenario ({before!r}); choose a "
                    "fresh --out, or add --force to replace them"
                )
            _clear_results(out)
        elif any(out.iterdir()) and not force:
            raise RecloopError(
                f"--out {out}: not empty and not a recloop results directory; choose a fresh "
                "--out, or add --force to write into it"
            )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RecloopError(f"--out {out}: cannot create the results directory ({error})") from None
    if not os.access(out, os.W_OK):
        raise RecloopError(f"--out {out}: the results directory is not writable")


def _clear_results(out: Path) -> None:
    """Remove what an earlier ``recloop run`` wrote in ``out``, and nothing else."""
    for entry in out.iterdir():
        if entry.name in RESULT_FILES or entry.suffix == ".parquet":
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()


def _report_command(args: argparse.Namespace) -> int:
    from reports.results import ResultsError, read_summary
    from sim.sweeps.results import write_report

    try:
        path = write_report(args.results, args.out, args.plotlyjs)
        written = read_summary(args.results)
    except ResultsError as error:
        raise RecloopError(str(error)) from None
    for warning in _environment_changes(written.get("environment", {})):
        print(f"recloop: warning: {warning}", file=sys.stderr)
    print(f"report: {path}")
    return 0


def _environment_changes(recorded: dict[str, str]) -> list[str]:
    """Where the installed packages differ from those that wrote the results."""
    from sim.sweeps.results import environment

    if not recorded:
        return ["these results record no package versions (written by an older recloop)"]
    installed = environment()
    return [
        f"results were written with {name} {was}, {name} {installed.get(name, 'not installed')} "
        "is installed: rerunning may give different figures"
        for name, was in recorded.items()
        if installed.get(name) != was
    ]


def _validate(args: argparse.Namespace) -> int:
    from sim.serving.runner import check_scenario
    from sim.sweeps.plan import plan_runs

    problems: list[str] = []
    for source in args.scenarios:
        try:
            scenario = load_scenario(source, args.overrides, args.quick)
            _find_policy(scenario, source)
            check_scenario(scenario)
            plan_runs(scenario)  # every variant, and what the replications refer to
            print(f"{source}: ok")
        except RecloopError as error:
            problems.extend(
                line if line.startswith(f"{source}:") else f"{source}: {line}"
                for line in str(error).splitlines()
            )
    for line in problems:
        print(f"recloop: error: {line}", file=sys.stderr)
    return USER_ERROR if problems else 0


def _schema(args: argparse.Namespace) -> int:
    print(json.dumps(scenario_schema(), indent=2))
    return 0


def scenario_schema() -> dict[str, Any]:
    """The JSON Schema of scenario files, for editor completion."""
    schema = Scenario.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "recloop scenario"
    return schema


def _policies(args: argparse.Namespace) -> int:
    from policies.registry import available, resolve, summary_line

    return _plugins(args.name, "policy", "stack.policy.name", available, resolve, summary_line)


def _plugins(
    name: str | None, kind: str, field: str, available: Any, resolve: Any, summary: Any
) -> int:
    """``recloop policies`` and ``recloop users``: every plug-in of a kind that resolves, with
    where it comes from and its summary; or, given ``name``, that one's parameters."""
    if name:
        return _policy_parameters(resolve(name, kind))
    for found, origin in sorted(available().items()):
        try:
            line = summary(resolve(found))
        except RecloopError as error:
            line = f"(cannot load: {error})"
        print(f"{found:20s} {origin:28s} {line}")
    print(f"or any 'module:Class' as {field}")
    return 0


def _policy_parameters(cls: type, skip: Any = (), described: Any = None) -> int:
    """Each parameter of a policy, user model or layer (its ``Params`` model, but the fields in
    ``skip``) with its default and description; ``described`` has the docstring (``cls``)."""
    doc = ((described or cls).__doc__ or "").strip().splitlines()[0]
    print(f"{getattr(cls, 'name', cls.__name__)}: {doc}")
    params = getattr(cls, "Params", None)
    fields = {} if params is None else params.model_fields
    fields = {field: info for field, info in fields.items() if field not in skip}
    if not fields:
        print("  no parameters")
        return 0
    for field, info in fields.items():
        default = (
            "required" if info.is_required() else repr(info.get_default(call_default_factory=True))
        )
        print(f"  {field:20s} {default:12s} {info.description or ''}")
    return 0


def _user_models(args: argparse.Namespace) -> int:
    from sim.scenario.plugins import summary_line
    from users.registry import available, resolve

    return _plugins(args.name, "user model", "world.model.name", available, resolve, summary_line)


def _layers(args: argparse.Namespace) -> int:
    from sim.scenario.plugins import summary_line
    from sim.scenario.spec import Layer
    from sim.serving.layers.registry import BUILTIN, available, described_by, resolve

    def summary(cls: type) -> str:
        return summary_line(described_by(cls))

    if not args.name:
        return _plugins(None, "layer", "stack.layers.NAME.name", available, resolve, summary)
    cls = resolve(args.name, "layer")
    builtin = cls in BUILTIN.values()
    _policy_parameters(cls, Layer.model_fields if builtin else (), described_by(cls))
    where = f"beside them in stack.layers.{args.name}" if builtin else "and in stack.layers.NAME"
    print(
        f"  {where}, the runtime's: {', '.join(Layer.model_fields)} (recloop schema; "
        "docs/reference.md)"
    )
    return 0


def _scenarios(args: argparse.Namespace) -> int:
    import importlib.resources
    import json
    import textwrap

    from sim.scenario.durations import humanize_duration
    from sim.scenario.loader import packaged_scenarios

    timings_file = importlib.resources.files("sim.scenarios") / "timings.json"
    timings = json.loads(timings_file.read_text()) if timings_file.is_file() else {}
    print("recloop run NAME [--quick]; wall times on a 2-core machine with --workers 2", end="")
    print(" (python bench/presets.py re-measures them)\n")
    for name in sorted(packaged_scenarios()):
        scenario = load_scenario(name)
        times = timings.get("scenarios", {}).get(name, {})
        quick, full = times.get("quick_seconds"), times.get("full_seconds")
        took = [f"quick {humanize_duration(quick)}" if quick else "quick: not measured"]
        took.append(f"full {humanize_duration(full)}" if full else "full: not measured")
        print(f"{name}  ({', '.join(took)})")
        sentence = first_sentence(scenario.description)
        print(textwrap.fill(sentence, width=96, initial_indent="    ", subsequent_indent="    "))
    return 0


def first_sentence(text: str) -> str:
    """The first sentence of a description, on one line (up to the first full stop followed by
    a space and a capital letter or by the end).

    >>> first_sentence("Retrain every 1h or 1d, with  near-line on. Half a day in, users turn.")
    'Retrain every 1h or 1d, with near-line on.'
    >>> first_sentence("As Chaney et al. (2018) found, e.g. Netflix. Then more.")
    'As Chaney et al. (2018) found, e.g. Netflix.'
    """
    words = " ".join(text.split())
    match = re.search(r"(?<! al)(?<!e\.g)(?<!i\.e)(?<! vs)\.(?=\s+[A-Z(]|$)", words)
    return words[: match.end()] if match else words


def _safe_name(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_." else "-" for c in name).strip(".-")
    return cleaned or "run"


def _headline(scenario: Scenario) -> str:
    world = scenario.world
    warmup = f" after {format_duration(scenario.warmup)} warm-up" if scenario.warmup else ""
    items = (
        f"{world.catalog.items:,} items"
        if world.catalog.table is None
        else f"items of {Path(world.catalog.table).name}"
    )
    return (
        f"recloop: {scenario.name}: {world.users.count:,} users, {items}, "
        f"{format_duration(scenario.duration)} measured{warmup}, "
        f"policy {scenario.stack.policy.name}, tick {format_duration(scenario.tick_seconds)}"
    )


def _report(summary: dict[str, Any], resolution: dict[str, float] | None = None) -> str:
    def percent(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.2f}%"

    negatives = summary["negatives"]
    lines = [
        f"  requests {summary['requests']:,}  impressions {summary['impressions']:,}  "
        f"CTR {percent(summary['ctr'])}  explicit negatives "
        f"{percent(summary['explicit_negative_rate'])}",
        "  negatives: " + "  ".join(f"{name} {count:,}" for name, count in negatives.items()),
        f"  sessions {summary['sessions']:,}  abandoned {summary['abandoned_sessions']:,} "
        f"({percent(summary['abandon_rate'])})  churned users {summary['churned_users']:,}",
        f"  {summary['simulated']} simulated in {summary['wall_seconds']:.1f}s wall "
        f"({summary['requests_per_second'] or 0:,.0f} requests/s)",
    ]
    metrics = summary["metrics"]
    for name, layer in summary["layers"].items():
        median = metrics.get(f"absorption.{name}.median_seconds")
        p90 = metrics.get(f"absorption.{name}.p90_seconds")
        share = metrics.get(f"absorption.{name}.absorbed_share")
        lines.append(
            f"  layer {name}: {layer['trigger']}, {layer['updates']:,} updates, "
            f"{layer['cost_units_per_day']:,.1f} cost units/day; absorbs {percent(share)} of "
            f"negatives, in {_duration_or_na(median)} (median), {_duration_or_na(p90)} (p90)"
        )
    repeats = metrics.get("repeat_offences_per_negative")
    if repeats is not None:
        lines.append(
            f"  repeat offences: {metrics['repeat_offences']:,} ({repeats:.2f} per explicit "
            f"negative within {format_duration(summary['exposure_horizon_seconds'])})"
        )
    for name in summary.get("interventions", []):
        bad = metrics.get(f"{name}.bad_impressions")
        if bad is not None:
            times = [f"{name}.time_to_{percent}pct_seconds" for percent in (50, 10)]
            half, tenth = (
                binned_duration(metrics.get(key), (resolution or {}).get(key)) for key in times
            )
            lines.append(
                f"  {name}: {bad:,} bad impressions; to 50% of its level in {half}, to 10% in "
                f"{tenth}"
            )
    if summary["missing"]:
        lines.append(
            f"  {len(summary['missing'])} figures could not be computed; summary.json lists "
            f"them under 'missing' with the reason"
        )
    return "\n".join(lines)


def _duration_or_na(seconds: float | None) -> str:
    return "n/a" if seconds is None else humanize_duration(seconds)


def binned_duration(seconds: float | None, resolution: float | None) -> str:
    """A time measured in bins of ``resolution`` seconds: one bin reads "≤ 1h (1h bins)".

    >>> binned_duration(3600.0, 3600.0), binned_duration(7200.0, 3600.0)
    ('≤ 1h (1h bins)', '2h')
    """
    if seconds is not None and resolution and seconds <= resolution:
        return f"≤ {format_duration(resolution)} ({format_duration(resolution)} bins)"
    return _duration_or_na(seconds)


class _Progress:
    """Progress over simulated time: a bar on a terminal; elsewhere (a log file, ``nohup``) a
    line every ``LINE_EVERY`` seconds of wall time, so that a long run is seen to advance.

    After serving, the steps (measuring, writing) show in the bar's label; off a terminal, a run
    that has lasted ``LINE_EVERY`` prints a line as each step begins (a short run prints none),
    and a step's parts a line a ``LINE_EVERY``.
    """

    LINE_EVERY = 60.0

    def __init__(self, end: float, enabled: bool, terminal: bool = True):
        self._bar = None
        self._end = end
        self._lines = enabled and not terminal
        self._started = self._last_line = time.monotonic()
        self._last_step = ""
        if enabled and terminal:
            from tqdm import tqdm

            self._bar = tqdm(
                total=round(end / 3600.0, 3),
                unit="sim-h",
                bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} simulated hours "
                "[{elapsed}<{remaining}]",
                file=sys.stderr,
            )
        self._shown = 0.0

    def update(self, now: float) -> None:
        if self._bar is not None:
            hours = now / 3600.0
            if hours - self._shown >= 0.01:
                self._bar.update(hours - self._shown)
                self._shown = hours
        elif self._lines and time.monotonic() - self._last_line >= self.LINE_EVERY:
            self._last_line = time.monotonic()
            print(
                f"recloop: {now / 3600.0:,.1f}/{self._end / 3600.0:,.1f} simulated hours "
                f"after {humanize_duration(self._last_line - self._started)} of wall time",
                file=sys.stderr,
                flush=True,
            )

    def phase(self, step: str) -> None:
        if self._bar is not None:
            self._bar.set_description_str(step)
            return
        if not self._lines:
            return
        now = time.monotonic()
        new_step = step.split(" (")[0] != self._last_step  # "(part i of n)" continues a step
        if now - self._started < self.LINE_EVERY or (
            not new_step and now - self._last_line < self.LINE_EVERY
        ):
            return
        self._last_line, self._last_step = now, step.split(" (")[0]
        print(
            f"recloop: {step} after {humanize_duration(now - self._started)} of wall time",
            file=sys.stderr,
            flush=True,
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
