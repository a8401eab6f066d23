"""``micropen bench …``: figures for docs/performance.md, human text or one JSON line."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from micropen.protocol.errors import MicropenError
from micropen.protocol.limits import TELEMETRY_MAX_HZ

from . import bench_update

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
    frames: int = typer.Option(200_000, help="telemetry frames per measurement", min=1),
    as_json: bool = typer.Option(False, "--json", help="one JSON line"),
) -> None:
    """Encode/decode throughput of a telemetry frame stream (and with 1 % corrupted frames)."""
    from .bench_codec import measure_codec

    report("codec (one core)", measure_codec(frames=frames), as_json)


@app.command()
def sim(
    minutes: float = typer.Option(30.0, help="simulated treatment length", min=0.01),
    rate: int = typer.Option(110, help="strokes/s", min=50, max=150),
    telemetry_hz: int = typer.Option(100, help="telemetry rate", min=0, max=1000),
    singles: bool = typer.Option(
        False, "--singles", help="one Telemetry datagram per sample (a host that never asks)"
    ),
    as_json: bool = typer.Option(False, "--json", help="one JSON line"),
) -> None:
    """A simulated treatment in virtual time: how many times faster than real time."""
    from micropen.sim.benchmark import BATCH_DELAY_MS, HEARTBEAT_S, measure_sim
    from micropen.sim.benchmark_floor import measure_floor

    figures = measure_sim(minutes, rate, telemetry_hz, batch=not singles)
    if not singles:  # the protocol's own cost of the same scenario, measured in this run
        figures.update(measure_floor(minutes, telemetry_hz, BATCH_DELAY_MS, HEARTBEAT_S))
    report("simulator (virtual time)", figures, as_json)


@app.command("host-telemetry")
def host_telemetry(
    seconds: float = typer.Option(5.0, help="measured window per mode (s)"),
    hz: int = typer.Option(1000, help="telemetry rate of each pen"),
    pens: int = typer.Option(1, help="simulated pens streaming at once (one process each)"),
    as_json: bool = typer.Option(False, "--json", help="one JSON line"),
) -> None:
    """Host CPU per pen streaming telemetry (batched and single), against a raw pty floor."""
    if not 0.5 <= seconds <= 600:
        typer.echo(f"error: --seconds {seconds} is outside 0.5–600 s", err=True)
        raise typer.Exit(2)
    if not 1 <= hz <= TELEMETRY_MAX_HZ:
        typer.echo(f"error: --hz {hz} is outside 1–{TELEMETRY_MAX_HZ} Hz", err=True)
        raise typer.Exit(2)
    if not 1 <= pens <= 32:
        typer.echo(f"error: --pens {pens} is outside 1–32", err=True)
        raise typer.Exit(2)
    from .bench_host_telemetry import measure_host_telemetry

    try:
        figures = measure_host_telemetry(seconds, hz, pens)
    except MicropenError as exc:
        typer.echo(f"error: the benchmark could not run: {exc}", err=True)
        raise typer.Exit(1) from None
    report("host CPU per pen streaming telemetry", figures, as_json)


@app.command()
def link(
    rounds: int = typer.Option(2000, help="round trips for the latency figures"),
    commands: int | None = typer.Option(
        None, help="commands for the throughput figure (5000; over a faulty line 3000)"
    ),
    estops: int = typer.Option(200, help="emergency stops while running"),
    loss: float = typer.Option(
        0.0, "--loss", help="faulty line: probability a frame is dropped, each way (0–1)"
    ),
    corrupt: float = typer.Option(
        0.0, "--corrupt", help="faulty line: probability each byte has a bit flipped (BER)"
    ),
    duplicate: float = typer.Option(
        0.0, "--duplicate", help="faulty line: probability a frame arrives twice (0–1)"
    ),
    sweep: bool = typer.Option(
        False, "--sweep", help="faulty line at 0, 2, 5 and 10 % frame loss, each with the rest"
    ),
    window: int = typer.Option(16, help="faulty line: commands in flight"),
    telemetry_hz: int = typer.Option(100, help="faulty line: telemetry the pen streams meanwhile"),
    max_seconds: float = typer.Option(60.0, help="faulty line: longest time per loss rate"),
    seed: int = typer.Option(1, help="faulty line: seed of the fault draws and the pen"),
    as_json: bool = typer.Option(False, "--json", help="one JSON line"),
) -> None:
    """Host ↔ simulator over a pty: round trip vs a raw echo floor, throughput, e-stop.

    With --loss/--corrupt/--duplicate (or --sweep) the bytes cross the fault-injecting proxy:
    commands/s, p50/p99 latency and timeouts per loss rate, next to the raw floor."""
    from .bench_link import measure_link

    checks = (("--loss", loss), ("--corrupt", corrupt), ("--duplicate", duplicate))
    for name, value in checks:  # NaN fails every comparison: refuse it here too
        if not 0.0 <= value <= 1.0:
            typer.echo(f"error: {name} {value} is not a probability; give 0 ≤ {name} ≤ 1", err=True)
            raise typer.Exit(2)
    counts = (("--commands", commands or 1), ("--rounds", rounds), ("--window", window),
              ("--estops", estops))  # fmt: skip
    for name, count in counts:
        if count < 1:
            typer.echo(f"error: {name} {count} must be at least 1", err=True)
            raise typer.Exit(2)
    if not 0 <= telemetry_hz <= TELEMETRY_MAX_HZ:
        typer.echo(
            f"error: --telemetry-hz {telemetry_hz} is outside 0–{TELEMETRY_MAX_HZ} Hz", err=True
        )
        raise typer.Exit(2)
    faulty = sweep or loss > 0 or corrupt > 0 or duplicate > 0
    if not faulty:
        report("link over a pty", measure_link(rounds, commands or 5000, estops), as_json)
        return
    from .bench_link import SWEEP_LOSSES, measure_sweep, sweep_table

    options: dict[str, Any] = {
        "commands": commands or 3000,
        "window": window,
        "telemetry_hz": telemetry_hz,
        "max_seconds": max_seconds,
        "seed": seed,
    }
    try:
        result = measure_sweep(SWEEP_LOSSES if sweep else (loss,), corrupt, duplicate, **options)
    except MicropenError as exc:  # a line too bad to even hold a link: say so, in one line
        typer.echo(f"error: the benchmark could not run on this line: {exc}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(result, sort_keys=True))
        return
    header, rows = sweep_table(result)
    table = Table(
        title=f"link through a faulty line (corrupt {corrupt:g}/byte, duplicate {duplicate:g}); "
        f"raw pty echo floor p50 {result['floor_rtt_p50_us']:,} µs, "
        f"p99 {result['floor_rtt_p99_us']:,} µs"
    )
    for column in header:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


@app.command()
def fleet(
    bridges: int = typer.Option(10, help="simulated pens, each with its own bridge", min=1),
    seconds: float = typer.Option(10.0, help="how long to stream", min=0.1),
    hz: int = typer.Option(100, help="telemetry rate per pen", min=1, max=1000),
    as_json: bool = typer.Option(False, "--json", help="one JSON line"),
) -> None:
    """Messages/s and publish→receive latency through a local mosquitto from N bridges."""
    from .bench_fleet import measure_fleet

    report("fleet through mosquitto", measure_fleet(bridges, seconds, hz), as_json)


@app.command()
def ingest(
    records: int = typer.Option(20_000, help="records published at once (throughput)", min=100),
    rate: float = typer.Option(200.0, help="records/s published for the latency figures"),
    seconds: float = typer.Option(5.0, help="how long the paced (latency) phase publishes"),
    batch: int = typer.Option(200, help="most messages per worker transaction", min=1),
    as_json: bool = typer.Option(False, "--json", help="one JSON line"),
) -> None:
    """Records/s into PostgreSQL with 1 and 2 ingest workers, and event→row latency p50/p99."""
    if not 1 <= rate <= 100_000 or not 0.5 <= seconds <= 600:
        typer.echo(f"error: --rate {rate} or --seconds {seconds} is outside 1–100000 /s, "
                   "0.5–600 s", err=True)  # fmt: skip
        raise typer.Exit(2)
    from .bench_ingest import measure_ingest

    try:
        figures = measure_ingest(records, rate, seconds, batch)
    except (MicropenError, TimeoutError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    report("fleet ingest into PostgreSQL", figures, as_json)


bench_update.register(app)  # micropen bench update: firmware-upload throughput
