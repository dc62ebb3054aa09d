"""pytest plugin for the mutation runs of ``bench/mutation.py`` (loaded with ``-p``).

mutmut times each test by its call alone and runs a mutant's tests in collection order, stopping
at the first failure (``-x``). Two consequences on this suite, whose costly part is often a
fixture (a sweep shared by a module's tests): a mutant's timeout, a multiple of its tests' time,
left out the fixture, so a slow but correct run could be cut short and counted as killed; and a
mutant caught by a fast test could first wait for every slow test collected before it.

- While mutmut measures the tests (``MUTANT_UNDER_TEST=stats``), each test's setup time is added
  to its measured time: the fixture's cost counts, once, for the first test that builds it.
- Hypothesis does not shrink a failing example (nor keep a database of them): a mutant's verdict
  needs a failure, not the smallest one, and shrinking under a mutant that raises took longer
  than the timeout.
- While a mutant is tested, the tests run fastest first (by that measured time), each module's
  tests together (so a module's fixture is built once): a mutant is killed by its cheapest
  failing test. Which tests run, and so every verdict, is unchanged.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from typing import Any


def _durations() -> MutableMapping[str, float] | None:
    """mutmut's measured time per test (its process state; None outside a mutmut run)."""
    try:
        from mutmut.state import state
    except ImportError:
        return None
    return state().duration_by_test


def pytest_configure(config: Any) -> None:
    if _durations() is None:
        return
    from hypothesis import Phase, settings

    settings.register_profile(
        "mutation", phases=[Phase.explicit, Phase.reuse, Phase.generate], database=None
    )
    settings.load_profile("mutation")


def pytest_runtest_logreport(report: Any) -> None:
    durations = _durations()
    if report.when == "setup" and durations is not None and _mutant() == "stats":
        durations[report.nodeid] += report.duration


def pytest_collection_modifyitems(items: list[Any]) -> None:
    durations = _durations()
    if durations is None or _mutant() in ("", "stats", "fail"):
        return
    modules: dict[str, list[Any]] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::")[0], []).append(item)

    # A test that uses a fixture shared beyond it (module or session scope) may be the one to
    # build it: it costs what the costliest of the fixture's users measured (who built it then)
    shared: dict[str, float] = {}
    for item in items:
        for name in _shared_fixtures(item):
            shared[name] = max(shared.get(name, 0.0), durations.get(item.nodeid, 0.0))

    def cost(item: Any) -> float:
        own = durations.get(item.nodeid, 0.0)
        return own + sum(shared[name] for name in _shared_fixtures(item))

    ordered = sorted(
        (sorted(group, key=cost) for group in modules.values()),
        key=lambda group: cost(group[0]),
    )
    items[:] = [item for group in ordered for item in group]


def _mutant() -> str:
    return os.environ.get("MUTANT_UNDER_TEST", "")


def _shared_fixtures(item: Any) -> list[str]:
    """The project's fixtures of ``item`` (not pytest's own, such as ``tmp_path_factory``) set
    up once for more than one test."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return []
    return [
        name
        for name, definitions in info.name2fixturedefs.items()
        if definitions
        and definitions[-1].scope not in ("function", "class")
        and definitions[-1].baseid
    ]
