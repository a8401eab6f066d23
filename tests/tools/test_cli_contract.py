"""What the README promises about every command: ``--pen`` always means a pen URL, and every
command takes ``--json`` except the ones the README names (checked against the command tree,
so a new command cannot quietly break the promise)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from micropen.tools.cli import app

README = Path(__file__).resolve().parents[2] / "README.md"
WITHOUT_JSON = {"hil", "log export"}  # JUnit XML and report files; the export is its own output


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    subcommands = getattr(command, "commands", None)
    if not subcommands:
        yield " ".join(path), command
        return
    for name, sub in subcommands.items():
        yield from _commands(sub, (*path, name))


def _options(command: Any) -> dict[str, Any]:
    return {opt: param for param in command.params for opt in getattr(param, "opts", [])}


def test_every_command_but_the_named_ones_takes_json() -> None:
    missing = {
        name for name, c in _commands(typer.main.get_command(app)) if "--json" not in _options(c)
    }
    assert missing == WITHOUT_JSON


def test_the_readme_names_exactly_the_commands_without_json() -> None:
    text = README.read_text(encoding="utf-8")
    sentence = re.search(r"every command takes `--json` except (.*?)\. Pen URLs", text)
    assert sentence is not None, "the README must say which commands have no --json"
    named = set(re.findall(r"`micropen ([a-z -]+)`", sentence.group(1)))
    assert named == WITHOUT_JSON


def test_pen_always_means_a_pen_url() -> None:
    for name, command in _commands(typer.main.get_command(app)):
        option = _options(command).get("--pen")
        if option is not None:
            assert "URL" in (option.help or ""), f"micropen {name} --pen is not a pen URL"
