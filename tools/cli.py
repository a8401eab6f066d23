"""``micropen``: the command line.

Human text and progress on the terminal; with ``--json`` a finishing command prints exactly one
JSON document on one line, and streams print JSON lines. Bad input exits with code 2 and a
one-line message naming the value, the limit and the fix; nothing is sent to the pen.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Annotated

import typer

from micropen.host import paths
from micropen.protocol.messages import PROTOCOL_VERSION
from micropen.protocol.schema import schema_hash

from . import (
    bench,
    cal_cli,
    demo,
    doctor,
    firmware_cli,
    fleet_cli,
    fleet_query_cli,
    hil_cli,
    log_cli,
    pair_cli,
    pen_cli,
    protocol_cli,
    proxy,
    sim_cli,
)
from .common import version
from .guard import run_guarded
from .present import areas_help
from .station import cli as station_cli

app = typer.Typer(
    name="micropen",
    help="Host controller and simulator for the micropen 12-needle microneedling pen.",
    epilog=f"Records (treatment log, calibration database, certificates, pairings): "
    f"{paths.data_dir()}. Settings (station.toml): {paths.config_dir()}. MICROPEN_HOME "
    "overrides both; micropen doctor checks them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        schema = f"protocol v{PROTOCOL_VERSION}, schema {schema_hash():08x}"
        typer.echo(f"micropen {version()} ({schema})")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_print_version, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Host controller and simulator for the micropen 12-needle microneedling pen."""


app.command()(demo.demo)
app.command()(pen_cli.pens)
app.command()(pen_cli.status)
app.command(epilog=areas_help())(pen_cli.run)
app.command()(pen_cli.stop)
app.command()(pen_cli.estop)
app.command("clear-fault")(pen_cli.clear_fault)
app.command()(pen_cli.monitor)
app.add_typer(log_cli.app, name="log")
app.add_typer(cal_cli.calibrate_app, name="calibrate")
app.add_typer(cal_cli.cal_app, name="cal")
fleet_query_cli.register(fleet_cli.app)
app.add_typer(fleet_cli.app, name="fleet", help="Fleet telemetry and remote stop over MQTT.")
app.add_typer(station_cli.app, name="station")
app.add_typer(sim_cli.app, name="sim", help="Serve the simulated pen (pty, TCP).")
app.add_typer(firmware_cli.app, name="firmware")
app.add_typer(pair_cli.app, name="pair")
app.add_typer(protocol_cli.app, name="protocol")
hil_cli.register(app)
proxy.register(app)
app.add_typer(bench.app, name="bench")
app.command()(doctor.doctor)


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is: the pen is stopped before the process exits (143)."""


_signals_seen: list[int] = []


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """The first Ctrl-C or SIGTERM interrupts the command (which then stops the pen and
    reports its count); later ones only say so — cutting that cleanup short would leave the
    pen to its watchdog and the count unreported."""
    _signals_seen.append(signum)
    if len(_signals_seen) == 1:
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
    sys.stderr.write("still stopping the pen and collecting its count…\n")


def main() -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGINT, _interrupt)
    try:
        code = run_guarded(app)
    except KeyboardInterrupt as interrupt:  # before or after a command's own handling
        sys.stderr.write("interrupted\n")
        raise SystemExit(143 if isinstance(interrupt, Terminated) else 130) from None
    finally:
        if _signals_seen:  # on the way out: a late press must not kill the exit (status -2)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if code == 130 and _signals_seen[:1] == [signal.SIGTERM]:
        code = 143  # typer reports any KeyboardInterrupt as 130; SIGTERM is 143
    raise SystemExit(code)


if __name__ == "__main__":
    main()
