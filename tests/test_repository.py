"""The repository keeps its promises: two set-up commands, CI runs the README's one."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Set-up: two commands", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None
    return [line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_has_exactly_two_setup_commands() -> None:
    assert readme_commands() == ["make run", "make test"]


def test_ci_runs_the_readme_test_command() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in ci.splitlines()[-1]


def test_make_targets_exist() -> None:
    result = subprocess.run(
        ["make", "-n", "run", "test"], cwd=REPO, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert "ccwatch -c config.yaml run" in result.stdout
    assert "pytest" in result.stdout


def test_make_test_tolerates_an_empty_test_set() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert "[ $$? -eq 5 ]" in makefile


def test_nothing_generated_is_tracked() -> None:
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    forbidden = (".venv/", "__pycache__", ".db", "var/", ".egg-info", "test-artifacts/")
    assert not [path for path in tracked if any(part in path for part in forbidden)]
