"""The built wheel holds every module of the source tree (an unlisted subpackage would
silently drop out), and the README's commands are the ones CI runs."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "protocol": "micropen/protocol",
    "sim": "micropen/sim",
    "host": "micropen/host",
    "tools": "micropen/tools",
    "hil_tests": "micropen/hil_tests",
}


@pytest.mark.slow
def test_wheel_contains_every_module(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
    )
    (wheel,) = tmp_path.glob("micropen-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = []
    for folder, dest in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            inside = f"{dest}/{path.relative_to(ROOT / folder).as_posix()}"
            if inside not in names:
                missing.append(inside)
    assert not missing, f"not in the wheel: {missing}"
    station = ROOT / "tools" / "station"  # the station's pages are package data, not modules
    for path in [*station.glob("templates/*.html"), *station.glob("static/*")]:
        inside = f"micropen/tools/station/{path.relative_to(station).as_posix()}"
        assert inside in names, f"not in the wheel: {inside}"
    assert not any(n.startswith("micropen/__init__") for n in names), "micropen is a namespace"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert (
        "micropen = micropen.tools.entry:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    )


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```\n(.+?)\n```", text)


def test_readme_starts_with_the_two_commands() -> None:
    first_two = _readme_commands()[:2]
    assert len(first_two) == 2
    assert "pip install" in first_two[0] and "micropen" in first_two[0]
    assert "pip install" in first_two[1] and "pytest" in first_two[1]


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    test_command = _readme_commands()[1]
    assert test_command in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
