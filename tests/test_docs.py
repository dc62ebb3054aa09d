"""Every code block in README.md and docs/*.md works as copied, and every link resolves.

A block declares what it is: ```yaml blocks are scenarios or scenario fragments and must validate;
```python blocks run (in a temporary folder; a block whose first line is ``# NAME.py`` is a file
the page asks the reader to save, written there first); ```bash blocks are commands, and every
``recloop`` line runs (a run in its small configuration, ``--quick``); ```console blocks are a
transcript whose output must match; ```text blocks are output and are not run. A block that runs a
simulation or reads its results is marked slow; the rest take a few seconds together. The site
build (``mkdocs build --strict``) is tested when mkdocs is installed (``make docs`` installs it)
and skipped otherwise, so ``make test`` does not need it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from sim.scenario.loader import load_scenario, parse_scenario
from sim.serving.runner import check_scenario
from sim.sweeps.plan import plan_runs

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LANGUAGES = {"yaml", "python", "bash", "console", "text"}

# Commands in ```bash blocks that this test does not run, and why. Anything else that is not a
# `recloop` command fails the test, so a new kind of command is a decision, not an accident.
SKIPPED = {
    "make": "builds the venv and runs the suite or a demo: the environment this test runs in",
    "pip": "installs packages: it would change the environment under test",
    "git": "changes a repository, not recloop",
    "source": "activates the venv: this test already runs inside it",
}


@dataclass(frozen=True)
class Block:
    page: Path
    number: int  # the block's position on its page, from 1
    language: str
    text: str

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}#{self.number}-{self.language}"


def blocks_of(page: Path) -> list[Block]:
    found = re.findall(r"^```(\S*)\n(.*?)^```", page.read_text(), re.M | re.S)
    return [Block(page, i, language, text) for i, (language, text) in enumerate(found, 1)]


BLOCKS = [block for page in PAGES for block in blocks_of(page)]


def of(language: str) -> list[Any]:
    """The blocks of one language as pytest parameters, slow where they run a simulation."""
    params = []
    for block in BLOCKS:
        if block.language == language:
            slow = language in ("python", "bash") and _runs_a_simulation(block)
            marks = [pytest.mark.slow] if slow else []
            params.append(pytest.param(block, id=block.id, marks=marks))
    return params


def _runs_a_simulation(block: Block) -> bool:
    if block.language == "python":
        return "runs/" in block.text or "run_scenario(" in block.text
    simulating = (["recloop", "run"], ["recloop", "report"], ["recloop", "calibrate"])
    return any(command[:2] in simulating for command in commands(block))


def commands(block: Block) -> list[list[str]]:
    """The command lines of a shell block, with continuations and quoted newlines joined."""
    result, pending = [], ""
    for line in block.text.splitlines():
        pending = f"{pending}\n{line}" if pending else line
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        try:
            words = shlex.split(pending, comments=True)
        except ValueError:  # a quotation still open: the command goes on on the next line
            continue
        if words:
            result.append(words)
        pending = ""
    assert not pending, f"{block.id}: unfinished command {pending!r}"
    return result


def module_files(page: Path) -> dict[str, str]:
    """The files a page asks the reader to save: python blocks whose first line is `# NAME.py`."""
    files = {}
    for block in blocks_of(page):
        first = block.text.splitlines()[0] if block.text else ""
        if block.language == "python" and re.fullmatch(r"# [\w-]+\.py", first):
            files[first[2:]] = block.text
    return files


@pytest.fixture
def reader_folder(tmp_path, monkeypatch):
    """A reader's working folder: the packaged scenarios as scenarios/ and the examples as
    examples/, the folder current."""
    (tmp_path / "scenarios").symlink_to(ROOT / "scenarios")
    (tmp_path / "examples").symlink_to(ROOT / "examples")  # the example log calibrate reads
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def recloop(words: list[str], shorten: bool = True) -> tuple[int, str]:
    """Run one `recloop` command line in this process: its exit code and its output. With
    ``shorten``, a run gets ``--quick`` and, without ``--out``, the folder the full run writes."""
    from sim.cli import main

    arguments, target = words[1:], None
    if ">" in arguments:
        at = arguments.index(">")
        arguments, target = arguments[:at], Path(arguments[at + 1])
    if shorten and arguments[:1] == ["run"] and "--resume" not in arguments:
        scenario = next((a for a in arguments[1:] if not a.startswith("-")), None)
        if scenario is not None and "--quick" not in arguments:
            arguments.append("--quick")  # every packaged scenario's small configuration
            if "--out" not in arguments:  # where the full run would write, for later commands
                arguments += ["--out", f"runs/{Path(scenario).stem}"]
        arguments.insert(1, "-q")
    output = io.StringIO()
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        try:
            code = main(arguments)
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
    if target is not None:
        target.write_text(output.getvalue())
    return code, output.getvalue()


def write_modules(page: Path, folder: Path) -> None:
    for name, text in module_files(page).items():
        (folder / name).write_text(text)


# --- yaml ---------------------------------------------------------------------------------------


def as_scenario(fragment: dict) -> dict:
    """A whole scenario from a block: itself if it names one, else laid over a packaged one (the
    cadence sweep for a timeline, whose run is long enough for its times). The fragment's keys
    replace the scenario's, except under `world` and `stack`, whose sections it replaces."""
    if "name" in fragment:
        return fragment
    base = "cadence-sweep" if "interventions" in fragment else "quickstart"
    data = load_scenario(base).model_dump(mode="json", by_alias=True)
    for key, value in fragment.items():
        data[key] = {**data[key], **value} if key in ("world", "stack") else value
    return data


@pytest.mark.parametrize("block", of("yaml"))
def test_yaml_blocks_validate_as_scenarios(block, reader_folder):
    write_modules(block.page, reader_folder)  # a fragment may name a module the page saves
    check_scenario(parse_scenario(as_scenario(yaml.safe_load(block.text))))


def test_the_layers_example_turns_every_layer_on():
    block = next(b for b in BLOCKS if b.language == "yaml" and "online_learning" in b.text)
    parsed = parse_scenario(as_scenario(yaml.safe_load(block.text)))
    assert set(parsed.stack.layers.active()) == {
        "bandit",
        "realtime_features",
        "nearline_embeddings",
        "retrain",
        "session_context",
        "profile_memory",
        "online_learning",
    }


def test_the_interventions_and_sweep_example_plans_its_grid():
    block = next(b for b in BLOCKS if b.language == "yaml" and "interventions" in b.text)
    labels, baseline, plans = plan_runs(parse_scenario(as_scenario(yaml.safe_load(block.text))))
    assert baseline == "retrain 1d · near-line off" and labels[-2:] == ["frozen", "instant"]
    assert len(plans) == 8 * 3  # 6 grid cells and 2 bounds, 3 replications


# --- python -------------------------------------------------------------------------------------


@pytest.mark.parametrize("block", of("python"))
def test_python_blocks_run(block, reader_folder):
    write_modules(block.page, reader_folder)
    for folder in sorted(set(re.findall(r"runs/([\w.-]+)", block.text))):
        scenario = folder.removesuffix("-quick")
        code, output = recloop(["recloop", "run", scenario, "--out", f"runs/{folder}"])
        assert code == 0, output
    exec(compile(block.text, block.id, "exec"), {"__name__": "__docs__"})  # noqa: S102


def test_the_write_your_own_policy_example_works_as_copied(reader_folder):
    """The README's policy, saved as told, checks and runs by `module:Class` from the folder it
    is in, without PYTHONPATH (kept fast: an hour of the quick configuration)."""
    readme = PAGES[0]
    assert "my_ranker.py" in module_files(readme)
    write_modules(readme, reader_folder)
    check = next(b for b in blocks_of(readme) if "check_policy(AvoidRejected" in b.text)
    namespace: dict = {}
    exec(check.text, namespace)  # noqa: S102 - the README's own example
    from policies.checks import check_policy

    assert check_policy(namespace["AvoidRejected"], {"penalty": 5}).ok
    (command,) = next(
        commands(b) for b in blocks_of(readme) if b.language == "bash" and "my_ranker" in b.text
    )
    code, output = recloop([*command, "--quick", "--set", "duration=1h", "--out", "r"])
    assert code == 0, output
    summary = json.loads((reader_folder / "r" / "summary.json").read_text())
    assert summary["variants"] == ["default"]


# --- shell --------------------------------------------------------------------------------------


@pytest.mark.parametrize("block", of("bash"))
def test_shell_blocks_run(block, reader_folder):
    write_modules(block.page, reader_folder)
    for words in commands(block):
        if words[0] in SKIPPED:
            continue
        assert words[0] == "recloop", (
            f"{block.id}: {words[0]!r} is neither recloop nor in this test's SKIPPED list"
        )
        code, output = recloop(words)
        assert code == 0, f"{shlex.join(words)}\n{output}"


@pytest.mark.parametrize("block", of("console"))
def test_console_transcripts_match(block, reader_folder):
    """`$ cat FILE` writes the lines below it; a recloop command's output and `echo $?` must be
    the lines shown."""
    steps = re.split(r"^\$ ", block.text, flags=re.M)[1:]
    code = None
    for step in steps:
        command, _, shown = step.partition("\n")
        words = shlex.split(command)
        if words[0] == "cat":
            (reader_folder / words[1]).write_text(shown)
        elif words[0] == "recloop":
            code, output = recloop(words, shorten=False)
            assert output.splitlines() == shown.splitlines()
        elif words == ["echo", "$?"]:
            assert str(code) == shown.strip()
        else:
            pytest.fail(f"{block.id}: no way to check {command!r}")


def test_every_block_says_what_it_is():
    unknown = [b.id for b in BLOCKS if b.language not in LANGUAGES]
    assert not unknown, f"give these blocks one of {sorted(LANGUAGES)}: {unknown}"
    assert {b.language for b in BLOCKS} >= {"yaml", "python", "bash", "console"}


# --- pages and links ----------------------------------------------------------------------------


def test_the_readme_is_a_short_guide():
    assert len(PAGES[0].read_text().splitlines()) <= 300


def slug(heading: str) -> str:
    """The anchor GitHub and MkDocs give a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_the_readmes_links_resolve():
    """README links work on GitHub (mkdocs checks the docs pages themselves)."""
    readme = PAGES[0]
    for target in re.findall(r"\]\(([^)\s]+)\)", readme.read_text()):
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        page = (readme.parent / path) if path else readme
        assert page.is_file(), f"README links to missing {target}"
        if anchor:
            headings = re.findall(r"^#+ (.*)$", page.read_text(), re.M)
            assert anchor in {slug(h) for h in headings}, f"README links to missing {target}"


def test_the_scenario_reference_is_generated_from_the_schema():
    spec = importlib.util.spec_from_file_location("gen_reference", ROOT / "docs/gen_reference.py")
    assert spec is not None and spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    schema = json.loads((ROOT / "scenarios/scenario.schema.json").read_text())
    expected = generator.reference(schema)
    assert (ROOT / "docs/reference.md").read_text() == expected, "run: python docs/gen_reference.py"
    for field in schema["properties"]:
        assert f"| `{field}` |" in expected


def test_the_site_builds_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="make docs installs mkdocs (the docs extra)")
    pytest.importorskip("material", reason="make docs installs mkdocs-material (the docs extra)")
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"},
    )
    assert build.returncode == 0, build.stderr
    assert (tmp_path / "reference" / "index.html").is_file()
