"""The distribution owns exactly four import names, ships its scenarios, and keeps the
dependency direction of STYLE.md."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sim", "users", "policies", "reports")
#: Modules of `sim` allowed to reach beyond the core: the composition root and its callers, and
#: the layer registry (the bandit and online-learning layers live in `policies`).
SIM_COMPOSITION = {
    "sim.serving.runner",
    "sim.cli",
    "sim.sweeps.results",
    "sim.calibrate",
    "sim",
    "sim.serving.layers.registry",
}


def modules():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            yield name, path


def first_party_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_no_module_is_named_after_a_standard_library_module():
    for name, _ in modules():
        assert name.split(".")[-1] not in sys.stdlib_module_names, name


def test_dependency_direction():
    for name, path in modules():
        imported = first_party_imports(path)
        tops = {module.split(".")[0] for module in imported}
        if name.startswith("sim") and name not in SIM_COMPOSITION:
            assert not tops & {"users", "policies", "reports"}, (name, imported)
        if name.startswith(("users", "policies")):
            other = "policies" if name.startswith("users") else "users"
            assert other not in tops and "reports" not in tops, (name, imported)
            # the conformance suites run a policy or a user model in the simulator, on purpose
            if name not in ("policies.checks", "users.checks"):
                assert not {m for m in imported if m in SIM_COMPOSITION - {"sim"}}, (name, imported)
        if name.startswith("reports"):
            assert not tops & {"sim", "users", "policies", "simpy", "torch"}, (name, imported)


def test_the_facade_lists_its_public_names():
    import sim

    assert set(sim.__all__) >= {"load_scenario", "run_scenario", "Scenario", "RecloopError"}
    for name in sim.__all__:
        assert getattr(sim, name) is not None


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        cwd=out,
    )
    (found,) = out.glob("recloop-*.whl")
    return found


def test_wheel_owns_exactly_the_four_import_names_and_ships_scenarios(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names if not name.startswith("recloop-")}
    assert tops == set(PACKAGES)
    assert "sim/scenarios/quickstart.yaml" in names
    assert "sim/scenarios/scenario.schema.json" in names


def test_plain_install_runs_a_packaged_scenario_by_name(wheel, tmp_path):
    """A clean environment with the wheel (dependencies borrowed from this one) runs quickstart."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python*/site-packages"))
    # Dependencies come from this environment through a .pth line; .pth files found there (such
    # as this checkout's editable install) are not processed, so only the wheel provides recloop.
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    python = venv / "bin" / "python"
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    run = subprocess.run(
        [
            str(python),
            "-c",
            "import sim, sys; from sim.cli import main; print(sim.__file__);"
            "sys.exit(main(['run', 'quickstart', '-q', '--set', 'world.users.count=200',"
            " '--set', 'duration=30m', '--set', 'warmup=0s']))",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert str(site) in run.stdout
    assert (tmp_path / "runs" / "quickstart" / "summary.json").is_file()
