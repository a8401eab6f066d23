"""``micropen hil``: the hardware-in-the-loop conformance suite, from an installed package.

::

    micropen hil                                   # against a simulator it starts on a pty
    micropen hil --pen /dev/serial/by-id/usb-…     # against a pen on the bench
    micropen hil --pen socket://bench-7:5000 -k hazard -x -n 2   # any other pytest argument

It runs ``pytest --pyargs micropen.hil_tests -p micropen.hil_tests.plugin …`` in this process,
so no checkout is needed, and prints the summary table (pen identity, every measurement against
its limits) at the end. Reports (junit.xml, summary.txt, summary.json) go to ``--hil-report``.
Exit status: pytest's (0 all passed, 1 failures, 2 interrupted or bad usage, …).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from micropen.host.url import parse_pen_url

from .common import errors_to_exit, fail

__all__ = ["CONTEXT_SETTINGS", "app", "hil", "pytest_args", "register"]

CONTEXT_SETTINGS: dict[str, Any] = {"allow_extra_args": True, "ignore_unknown_options": True}


def pytest_args(
    pen: str | None, destructive: bool | None, report: Path, extra: list[str]
) -> list[str]:
    """The pytest command line for the installed suite."""
    args = [
        "--pyargs",
        "micropen.hil_tests",
        "-p",
        "micropen.hil_tests.plugin",
        "-p",
        "no:cacheprovider",  # nothing written into the operator's working directory
        "--import-mode=importlib",  # import the installed package by its own name
        "--hil-report",
        str(report),
    ]
    if pen:
        args += ["--pen", pen]
    if destructive is True:
        args.append("--allow-destructive")
    elif destructive is False:
        args.append("--no-destructive")
    return args + extra


def hil(
    ctx: typer.Context,
    pen: Annotated[
        str | None,
        typer.Option(
            "--pen",
            envvar="MICROPEN_PEN",
            help="Pen URL of the pen under test: /dev/ttyACM0, /dev/serial/by-id/…, "
            "socket://HOST:PORT, "
            "rfc2217://…, usb://…. Default: start the simulator on a pty.",
        ),
    ] = None,
    destructive: Annotated[
        bool | None,
        typer.Option(
            "--allow-destructive/--no-destructive",
            help="Run tests that write calibration or consume cartridges. Default: only on a "
            "pen reporting the SIMULATOR capability.",
        ),
    ] = None,
    report: Annotated[
        Path, typer.Option("--hil-report", help="Directory for junit.xml and the summaries.")
    ] = Path("hil-report"),
) -> None:
    """Run the HIL conformance suite against a pen; extra arguments go to pytest."""
    try:
        import pytest
    except ImportError:
        typer.echo(
            "error: the HIL suite needs pytest: pip install 'micropen[test]' (or pytest)",
            err=True,
        )
        raise typer.Exit(2) from None
    if pen:
        with errors_to_exit():  # a mistyped URL is one line, not 105 errors from the suite
            parse_pen_url(pen)
    if report.exists() and not report.is_dir():
        fail(f"--hil-report {report} is a file; give a folder for the reports", 2)
    started = time.time()
    code = int(pytest.main(pytest_args(pen, destructive, report, list(ctx.args))))
    _print_summary(report, started)
    raise typer.Exit(code)


def _print_summary(report: Path, started: float) -> None:
    from rich.console import Console

    from micropen.hil_tests.report import SUMMARY_JSON, load_summary, rich_summary

    summary = report / SUMMARY_JSON
    if not summary.exists() or summary.stat().st_mtime < started - 1:
        return  # nothing ran (collection error, -h, …): no stale table from an earlier run
    console = Console()
    for renderable in rich_summary(load_summary(report)):
        console.print(renderable)
    console.print(f"reports in {report}/")


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
app.command(context_settings=CONTEXT_SETTINGS)(hil)


def register(cli: typer.Typer) -> None:
    """How tools/cli.py adds ``micropen hil`` (extra arguments must pass through to pytest)."""
    cli.command(name="hil", context_settings=CONTEXT_SETTINGS)(hil)


if __name__ == "__main__":
    app()
