"""``micropen demo``: the main job end to end — connect, check, treat, calibrate, certify.

With no pen attached it runs on the built-in simulator and says so. Everything it does goes
through the same API and the same checks as on a real pen: open, status, a short treatment run
with a progress bar, then a depth and stroke-rate calibration with a PDF certificate, and the
treatment log entry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from .common import JsonOption, PenOption, connected, emit_json, errors_to_exit
from .pen_cli import _run_with_progress, status_dict
from .present import status_rows

console = Console(stderr=True)


def demo(
    pen_url: PenOption = "auto",
    out: Annotated[
        Path | None,
        typer.Option("--out", help="where the certificate goes (default: the certificates folder)"),
    ] = None,
    strokes: Annotated[int, typer.Option("--strokes", help="strokes in the demo run")] = 300,
    calibrate: Annotated[bool, typer.Option(help="also calibrate the pen")] = True,
    as_json: JsonOption = False,
) -> None:
    """A pen session and a calibration (the simulator when no pen is attached)."""
    result: dict[str, Any] = {}
    if calibrate and out is not None:
        from micropen.host.calibration.certificate import prepare_out_dir

        with errors_to_exit():  # before the pen moves: a bad folder is bad input
            prepare_out_dir(out)
    with connected(pen_url, operator="demo") as pen:
        status = status_dict(pen, pen.status())
        result["pen"] = {k: status[k] for k in ("serial", "model", "firmware_version", "url")}
        result["simulated"] = pen.is_simulated
        if not as_json:
            _print_identity(status)
        pen.set_telemetry(20)
        report = _run_with_progress(pen, 0.5, 90, "forehead", strokes, None, None, show=not as_json)
        result["run"] = {
            "outcome": report.outcome.name.lower(),
            "strokes_delivered": report.strokes,
        }
        if not as_json:
            console.print(
                f"treatment run: [bold]{report.outcome.name.lower()}[/], "
                f"{report.strokes:,}/{strokes:,} strokes at 0.50 mm, 90/s (forehead)"
            )
    if calibrate:  # a session of its own: the log keeps calibrations apart from treatments
        with connected(pen_url, quiet=True, operator="demo", purpose="calibration") as pen:
            result["calibration"] = _calibrate(pen, out, quiet=as_json)
    if as_json:
        emit_json(result)


def _print_identity(status: dict[str, Any]) -> None:
    table = Table(title="pen", show_header=False)
    shown = ("pen", "state", "cartridge", "battery", "temperature", "calibration", "url")
    for label, value in status_rows(status):
        if label in shown:
            table.add_row(label, value)
    console.print(table)


def _calibrate(pen: Any, out: Path | None, quiet: bool) -> dict[str, Any]:
    from .cal_cli import run_calibration_for_demo

    return run_calibration_for_demo(pen, out, quiet=quiet)
