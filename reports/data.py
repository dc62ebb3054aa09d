"""What the report reads from a results directory, loaded once, and how it writes numbers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from reports.encoding import BOUNDS, Axis, Style, grid_axes, variant_styles
from reports.results import ResultsError, read_probes, read_summary, read_table, run_folder

__all__ = ["ReportData", "load_report_data", "duration", "time_text"]


@dataclass
class ReportData:
    """Everything the report reads, loaded once from a results directory."""

    folder: Path
    summary: dict[str, Any]
    scenario_yaml: str
    runs: pd.DataFrame
    propagation: pd.DataFrame
    exposure: pd.DataFrame
    suppression: pd.DataFrame
    timeseries: pd.DataFrame
    layers: pd.DataFrame
    axes: list[Axis] = field(default_factory=list)
    styles: dict[str, Style] = field(default_factory=dict)
    #: ``responsiveness.parquet`` (empty without probes)
    responsiveness: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: Every paired run's and twin's ``probes.parquet``, with ``variant`` and ``replication``
    #: (empty without probes)
    probe_exposure: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def probes(self) -> dict[str, Any]:
        """``summary["responsiveness"]``: per variant, per probe, its control, what its share
        counts, its users and prevented shares (empty without probes)."""
        return dict(self.summary.get("responsiveness") or {})

    @property
    def variants(self) -> list[str]:
        return list(self.summary["variants"])

    @property
    def declared(self) -> list[str]:
        """The variants a team chooses between (not the frozen and instant bounds)."""
        return [v for v in self.variants if v not in BOUNDS]

    @property
    def replications(self) -> int:
        return int(self.summary.get("replications") or 1)

    @property
    def single(self) -> bool:
        """One run: no comparison and no interval to show."""
        return len(self.variants) == 1 and self.replications == 1


def load_report_data(folder: str | Path) -> ReportData:
    """Read a results directory (raises :class:`ResultsError` naming a missing file)."""
    folder = Path(folder)
    summary = read_summary(folder)

    def table(name: str) -> pd.DataFrame:
        path = folder / f"{name}.parquet"
        if not path.is_file():
            raise ResultsError(f"{path}: missing; the report needs the whole results directory")
        return read_table(folder, name).to_pandas()

    scenario = folder / "scenario.yaml"
    data = ReportData(
        folder=folder,
        summary=summary,
        scenario_yaml=scenario.read_text(encoding="utf-8") if scenario.is_file() else "",
        runs=table("runs"),
        propagation=table("propagation"),
        exposure=table("exposure"),
        suppression=table("suppression"),
        timeseries=table("timeseries"),
        layers=table("layers"),
    )
    if data.probes:
        data.responsiveness = table("responsiveness")
        data.probe_exposure = _probe_exposure(folder, summary)
    data.axes = grid_axes(data.variants, summary, data.scenario_yaml)
    data.styles = variant_styles(data.variants, data.axes)
    return data


def _probe_exposure(folder: Path, summary: dict[str, Any]) -> pd.DataFrame:
    """The probe exposures of every run whose twin finished too (the pairs the sweep measured
    responsiveness on), one frame with ``variant`` and ``replication``."""
    frames = []
    for key in summary.get("run_folders", {}):
        variant, _, replication = key.rpartition(" r")
        if not replication.isdigit():  # a twin: read with its run
            continue
        pair = [run_folder(folder, variant, int(replication), twin) for twin in (False, True)]
        if not all((run / "probes.parquet").is_file() for run in pair):
            continue  # a failed run or twin: not paired
        for twin in (False, True):
            frame = read_probes(folder, variant, int(replication), twin).to_pandas()
            frames.append(frame.assign(variant=variant, replication=int(replication)))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def duration(seconds: float) -> str:
    """A duration as a reader says it.

    >>> duration(0.4), duration(17.2), duration(293.0), duration(3600.0), duration(5400.0)
    ('0.4 s', '17 s', '4.9 min', '1 h', '1.5 h')
    """
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if abs(seconds) >= size:
            return f"{seconds / size:.1f}".removesuffix(".0") + f" {unit}"
    return f"{seconds:.1f} s" if abs(seconds) < 10 else f"{seconds:.0f} s"


def time_text(seconds: float, resolution: float | None) -> str:
    """A time measured in bins of ``resolution`` seconds: at the resolution it is an upper
    bound, said so.

    >>> time_text(3600.0, 3600.0), time_text(7200.0, 3600.0), time_text(90.0, None)
    ('≤ 1 h (1 h bins)', '2 h', '1.5 min')
    """
    if resolution and seconds <= resolution * (1 + 1e-9):
        return f"≤ {duration(resolution)} ({duration(resolution)} bins)"
    return duration(seconds)
