"""What every command shares: the --pen/--json options, error handling and output."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from micropen.host import Pen, open_pen
from micropen.host.calibration.due import DueState, check_due
from micropen.host.errors import InvalidInput
from micropen.host.pairing import KeystoreError
from micropen.host.treatment_log import TreatmentLogError
from micropen.protocol.errors import LocalProtocolError, MicropenError

PenOption = Annotated[
    str,
    typer.Option(
        "--pen",
        envvar="MICROPEN_PEN",
        help="Pen URL: auto, sim://?seed=N, /dev/ttyUSB0, socket://HOST:PORT, usb://VID:PID",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document (one line).")]

err_console = Console(stderr=True)


def fail_line(message: str, code: int = 1) -> int:
    """Print one error line on stderr (a message with line breaks inside, e.g. a library's
    text, is joined into one); return the exit code to use."""
    line = " ".join(message.split())
    err_console.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
    return code


def fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr, then exit: 2 for bad input, 1 for anything else."""
    raise typer.Exit(fail_line(message, code))


@contextmanager
def errors_to_exit() -> Iterator[None]:
    try:
        yield
    except (InvalidInput, LocalProtocolError) as exc:
        fail(str(exc), 2)
    except MicropenError as exc:
        fail(str(exc), 1)


@contextmanager
def connected(
    url: str, *, quiet: bool = False, stop_only: bool = False, **options: Any
) -> Iterator[Pen]:
    """Open a pen (telling the user when `auto` fell back to the simulator).

    ``stop_only``: a command that stops the pen must work even when the treatment log cannot
    be written; it then connects without a session (the pen hands over nothing, so nothing
    goes unrecorded: it keeps its records for a host that can log them), with a warning."""
    with errors_to_exit():
        try:
            pen = open_pen(url, **options)
        except KeystoreError as exc:
            if not stop_only:
                raise
            err_console.print(
                f"[bold yellow]warning:[/] {exc}\nstopping the pen anyway, unpaired: stopping "
                "needs no pairing",
                highlight=False,
            )
            pen = open_pen(url, keys=None, **options)
        except TreatmentLogError as exc:
            if not stop_only:
                raise
            err_console.print(
                f"[bold yellow]warning:[/] {exc}\nstopping the pen anyway, without a log "
                "session: the pen keeps its records for a host that can log them",
                highlight=False,
            )
            pen = open_pen(url, log=False, open_session=False)
    try:
        if pen.is_simulated and not quiet:
            err_console.print(
                f"[yellow]notice:[/] {pen.url} is a SIMULATOR, not a real pen",
                highlight=False,
            )
        warn_if_calibration_due(pen)
        with errors_to_exit():
            yield pen
    finally:
        pen.close()


def warn_if_calibration_due(pen: Pen) -> None:
    """Connecting to a pen whose calibration is overdue (or nearly) warns, on stderr."""
    if pen.identity is None:
        return
    try:
        status = check_due(pen.identity.serial)
    except MicropenError as exc:  # a damaged calibration database must not stop a stop
        err_console.print(
            f"[bold yellow]warning:[/] {escape(str(exc))}", highlight=False, soft_wrap=True
        )
        return
    if status.state in (DueState.OVERDUE, DueState.DUE_SOON, DueState.FAILED):
        err_console.print(f"[bold yellow]warning:[/] {escape(status.message)}", highlight=False)


def emit_json(document: Any) -> None:
    """Exactly one JSON document on one line on stdout."""
    sys.stdout.write(json.dumps(document, sort_keys=True, default=_default) + "\n")
    sys.stdout.flush()


def _default(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if hasattr(value, "name"):
        return value.name
    raise TypeError(f"cannot serialise {type(value).__name__}")


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as _v

    try:
        return _v("micropen")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


Callback = Callable[..., Any]
