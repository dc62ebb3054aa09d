"""Reading results directories. Reports are built from these files alone, never from a live run.

>>> import tempfile, json, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> _ = (folder / "summary.json").write_text(json.dumps({"scenario": "demo"}))
>>> read_summary(folder)["scenario"]
'demo'
"""

from reports.results import ResultsError, read_events, read_layers, read_probes, read_summary

__all__ = ["read_summary", "read_events", "read_layers", "read_probes", "ResultsError"]
