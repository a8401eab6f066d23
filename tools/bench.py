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


@app.command()
def codec(
    frames: int = typer.Option(200_000, help="telemetry frames per measurement"),
    as_json: bool = typer.Option(False, "--json", help="one JSON line"),
) -> None:
    """Encode/decode throughput of a telemetry frame stream (and with 1 % corrupted frames)."""
    from .bench_codec import measure_codec

    report("codec (one core)", measure_codec(frames=frames), as_json)


@app.command()
def sim(
    minutes: float = typer.Option(30.0, help="simulated treatment length"),
    rate: int = typer.Option(110, help="strokes/s"),
    telemetry_hz: int = typer.Option(100, help="telemetry rate"),
    as_json: bool = typer.Option(False, "--json", help="one JSON line"),
) -> None:
    """A simulated treatment in virtual time: how many times faster than real time."""
    from micropen.sim.benchmark import measure_sim

    report("simulator (virtual time)", measure_sim(minutes, rate, telemetry_hz), as_json)


@app.command()
def link(
    rounds: int = typer.Option(2000, help="round trips for the latency figures"),
    commands: int = typer.Option(5000, help="commands for the throughput figure"),
    estops: int = typer.Option(200, help="emergency stops while running"),
    as_json: bool = typer.Option(False, "--json", help="one JSON line"),
) -> None:
    """Host ↔ simulator over a pty: round trip vs a raw echo floor, throughput, e-stop."""
    from .bench_link import measure_link

    report("link over a pty", measure_link(rounds, commands, estops), as_json)


@app.command()
def fleet(
    bridges: int = typer.Option(10, help="simulated pens, each with its own bridge"),
    seconds: float = typer.Option(10.0, help="how long to stream"),
    hz: int = typer.Option(100, help="telemetry rate per pen"),
    as_json: bool = typer.Option(False, "--json", help="one JSON line"),
) -> None:
    """Messages/s and publish→receive latency through a local mosquitto from N bridges."""
    from .bench_fleet import measure_fleet

    report("fleet through mosquitto", measure_fleet(bridges, seconds, hz), as_json)
