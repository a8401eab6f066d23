"""``micropen bench …``: figures for docs/performance.md, human text or one JSON line."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="Benchmarks: print figures (and JSON with --json).", no_args_is_help=True)


def report(title: str, figures: dict[str, Any], as_json: bool) -> None:
    """Print benchmark figures as a table, or as exactly one JSON line."""
    if as_json:
        typer.echo(json.dumps(figures, sort_keys=True))
        return
    table = Table(title=title)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in figures.items():
        table.add_row(key, f"{value:,.3f}" if isinstance(value, float) else str(value))
    Console().print(table)
