"""State files attacked by a reviewer: a second name for the same file must not defeat the
lock, and what is not a state file (a device, NaN, a NUL in the path) is one line, not a
traceback or an endless read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

CLI = [sys.executable, "-m", "micropen.tools.cli", "status"]


def _status(state: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "--pen", f"sim://?seed=44&state={state}", "--json"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "MICROPEN_HOME": str(home)},
    )  # fmt: skip


def _one_line_error(done: subprocess.CompletedProcess[str], says: str) -> None:
    assert done.returncode in (1, 2), done.stderr
    assert "Traceback" not in done.stderr
    assert says in done.stderr, done.stderr


def test_a_symlink_to_a_held_state_file_is_refused_like_the_file(tmp_path: Path) -> None:
    real = tmp_path / "pen44.json"
    assert _status(str(real), tmp_path).returncode == 0  # made on first use
    alias = tmp_path / "alias.json"
    alias.symlink_to(real)
    holder = subprocess.Popen(
        [sys.executable, "-m", "micropen.sim.serve", "--tcp", "0", "--seed", "44", "--state",
         str(real)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline()
        _one_line_error(_status(str(alias), tmp_path), "in use by process")
    finally:
        holder.terminate()
        holder.wait(10)


def test_a_hard_linked_state_file_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "pen44.json"
    assert _status(str(real), tmp_path).returncode == 0
    os.link(real, tmp_path / "hard.json")
    _one_line_error(_status(str(tmp_path / "hard.json"), tmp_path), "hard links")


def test_what_is_not_a_state_file_is_one_line(tmp_path: Path) -> None:
    _one_line_error(_status("/dev/zero", tmp_path), "not a regular file")
    _one_line_error(_status("%00", tmp_path), "null byte")
    real = tmp_path / "pen44.json"
    assert _status(str(real), tmp_path).returncode == 0
    document = json.loads(real.read_text())
    document["nvm"]["lifetime_strokes"] = float("nan")
    real.write_text(json.dumps(document))
    _one_line_error(_status(str(real), tmp_path), "damaged")
