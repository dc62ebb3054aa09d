"""recloop's engine and core types.

The public names are few: load a scenario, run it once (``run_scenario``), or run its every
variant and replication and write the results directory (``run_sweep``).

>>> from sim import load_scenario
>>> load_scenario("quickstart").name
'quickstart'
"""

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from sim.errors import PolicyError, RecloopError, ScenarioError
from sim.scenario.loader import load_scenario
from sim.scenario.spec import Scenario

try:
    __version__ = version("recloop")
except PackageNotFoundError:  # a checkout that is not installed
    __version__ = "0+unknown"

__all__ = [
    "Scenario",
    "load_scenario",
    "run_scenario",
    "run_sweep",
    "RunResult",
    "RecloopError",
    "ScenarioError",
    "PolicyError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    # The runner wires users/ and policies/ together; importing it lazily keeps `import sim`
    # (and every core module) free of them.
    if name in ("run_scenario", "RunResult"):
        from sim.serving import runner

        return getattr(runner, name)
    if name == "run_sweep":
        from sim.sweeps.sweep import run_sweep

        return run_sweep
    raise AttributeError(f"module 'sim' has no attribute {name!r}")
