"""``micropen``: the command line.

Human text and progress on the terminal; with ``--json`` a finishing command prints exactly one
JSON document on one line, and streams print JSON lines. Bad input exits with code 2 and a
one-line message naming the value, the limit and the fix; nothing is sent to the pen.
"""

from __future__ import annotations

import typer

from . import bench, log_cli, pen_cli

app = typer.Typer(
    name="micropen",
    help="Host controller and simulator for the micropen 12-needle microneedling pen.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command()(pen_cli.pens)
app.command()(pen_cli.status)
app.command()(pen_cli.run)
app.command()(pen_cli.stop)
app.command()(pen_cli.estop)
app.command()(pen_cli.monitor)
app.add_typer(log_cli.app, name="log")
app.add_typer(bench.app, name="bench")


def _optional_subapps() -> None:
    """Sub-apps built by their own modules; registered here so one entry point has them all."""
    from . import demo, sim_cli

    app.add_typer(sim_cli.app, name="sim", help="Serve the simulated pen (pty, TCP).")
    app.command()(demo.demo)
    try:
        from . import cal_cli
    except ImportError:  # pragma: no cover - calibration module not installed
        return
    app.add_typer(cal_cli.calibrate_app, name="calibrate")
    app.add_typer(cal_cli.cal_app, name="cal")


def main() -> None:
    _optional_subapps()
    app()


if __name__ == "__main__":
    main()
