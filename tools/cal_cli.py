"""``micropen calibrate depth|rate|all|verify`` and ``micropen cal history|due|export``.

Calibration on the bench: the pen is driven through set points while a reference instrument
(``--gauge``) reads what the needles really do; the correction is fitted, written to the pen,
read back, committed and checked as-left; a record goes to the calibration database and a PDF
certificate and a JSON record to ``--out``. Progress and prompts go to stderr; with ``--json``
stdout carries exactly one JSON line. Exit codes: 0 pass, 1 fail (or an error), 2 bad input
(nothing done), 3 incomplete (the record says why), 130 interrupted (pen made safe, record
stored as incomplete).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from micropen.host.calibration import (
    CalibrationRecord,
    InstrumentError,
    Outcome,
    ProgressEvent,
    Quantity,
    RecordStore,
    Settings,
    Stage,
    all_due,
    check_due,
    check_spec,
    close_instruments,
    open_instruments,
    quantities_of,
    run_calibration,
)
from micropen.host.calibration.due import DEFAULT_INTERVAL_DAYS
from micropen.host.calibration.instruments import Prompt
from micropen.host.connection import AsyncPen
from micropen.host.errors import InvalidInput

from .common import JsonOption, PenOption, emit_json, errors_to_exit, fail

__all__ = ["cal_app", "calibrate_app", "run_calibration_for_demo"]

calibrate_app = typer.Typer(
    help="Calibrate (or only verify) a pen's needle depth and stroke rate on the bench.",
    no_args_is_help=True,
)
cal_app = typer.Typer(help="Calibration records: history, due dates, export.", no_args_is_help=True)
err = Console(stderr=True, highlight=False)
EXIT_FOR = {Outcome.PASS: 0, Outcome.FAIL: 1, Outcome.INCOMPLETE: 3}

GaugeOption = Annotated[
    str,
    typer.Option(
        "--gauge",
        help="reference instrument: sim (the simulator's bench), manual (typed readings), "
        "scpi+tcp://HOST:PORT or scpi+serial:///dev/ttyUSB0?baud=9600",
    ),
]
TechnicianOption = Annotated[str, typer.Option("--technician", help="who calibrates")]
StationOption = Annotated[str, typer.Option("--station", help="bench / station name")]
OutOption = Annotated[
    Path | None,
    typer.Option("--out", help="folder for the PDF certificate and JSON record "
                 "(default: certificates/ beside the calibration database)"),
]  # fmt: skip
IntervalOption = Annotated[
    int, typer.Option("--interval-days", help="days until the next calibration is due")
]
OverrideOption = Annotated[
    str | None,
    typer.Option(
        "--override-instrument-due",
        metavar="REASON",
        help="use a reference instrument past its calibration due date (reason recorded)",
    ),
]
AmbientOption = Annotated[
    float | None,
    typer.Option(
        "--ambient-c", help="ambient temperature, °C (default: the idle pen's own sensor)"
    ),
]
ReadingsOption = Annotated[int, typer.Option("--readings", help="readings per set point")]
DbOption = Annotated[
    Path | None,
    typer.Option("--db", help="calibration database (default: $MICROPEN_HOME/calibration.sqlite)"),
]

_HELP = {
    "depth": "Depth: as-found at 0.25–2.5 mm, fit gain+offset, write/verify/commit, as-left.",
    "rate": "Stroke rate: as-found at each speed level, fit gain, write/verify/commit, as-left.",
    "all": "Depth and stroke rate in one procedure with one write/verify/commit.",
    "verify": "As-found check of depth and stroke rate against acceptance limits; writes nothing.",
}


def _register(procedure: str) -> None:
    def command(
        pen: PenOption = "auto",
        gauge: GaugeOption = "sim",
        technician: TechnicianOption = "",
        station: StationOption = "",
        out: OutOption = None,
        interval_days: IntervalOption = DEFAULT_INTERVAL_DAYS,
        override_instrument_due: OverrideOption = None,
        ambient_c: AmbientOption = None,
        readings: ReadingsOption = 3,
        db: DbOption = None,
        as_json: JsonOption = False,
    ) -> None:
        if override_instrument_due is not None and not override_instrument_due.strip():
            fail("--override-instrument-due needs a reason (it is recorded on the certificate)", 2)
        settings = Settings(
            technician=technician,
            station=station,
            ambient_c=ambient_c,
            interval_days=interval_days,
            override_instrument_due=override_instrument_due or "",
            readings=readings,
        )
        with errors_to_exit():
            settings.check()
            check_spec(gauge)
        _calibrate(procedure, pen, gauge, settings, RecordStore(db), out, as_json)

    command.__name__ = procedure
    calibrate_app.command(procedure, help=_HELP[procedure])(command)


for _name in ("depth", "rate", "all", "verify"):
    _register(_name)


def _calibrate(
    procedure: str,
    pen_url: str,
    gauge: str,
    settings: Settings,
    store: RecordStore,
    out: Path | None,
    as_json: bool,
) -> None:
    out_dir = out if out is not None else store.path.parent / "certificates"
    try:
        with errors_to_exit():
            record = asyncio.run(
                _calibrate_async(procedure, pen_url, gauge, settings, store, quiet=as_json)
            )
    except (KeyboardInterrupt, asyncio.CancelledError):
        fail(
            "interrupted: the pen was stopped and its needles retracted; the record is stored "
            "as incomplete (micropen cal history)",
            130,
        )
    from micropen.host.calibration.certificate import write_certificate, write_json

    json_path = write_json(record, out_dir)
    pdf_path = write_certificate(record, out_dir)
    if as_json:
        emit_json(_result(record, pdf_path, json_path))
    else:
        _print_result(record, pdf_path, json_path)
    raise typer.Exit(EXIT_FOR[record.outcome])


async def _calibrate_async(
    procedure: str, pen_url: str, gauge: str, settings: Settings, store: RecordStore, quiet: bool
) -> CalibrationRecord:
    with _ctrl_c_cancels_once():
        return await _calibrate_pen(procedure, pen_url, gauge, settings, store, quiet)


@contextlib.contextmanager
def _ctrl_c_cancels_once() -> Iterator[None]:
    """The first Ctrl-C cancels the procedure (its teardown then runs); later ones only say
    so, instead of breaking out of the event loop (asyncio.run's default) mid-teardown."""
    loop, task = asyncio.get_running_loop(), asyncio.current_task()
    pressed = 0

    def on_sigint() -> None:
        nonlocal pressed
        pressed += 1
        if pressed == 1 and task is not None:
            task.cancel()
        err.print("[yellow]stopping: making the pen safe and saving the record…[/]")

    if sys.platform == "win32" or threading.current_thread() is not threading.main_thread():
        yield  # no loop signal handlers there: Ctrl-C keeps Python's default behaviour
        return
    loop.add_signal_handler(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)


async def _calibrate_pen(
    procedure: str, pen_url: str, gauge: str, settings: Settings, store: RecordStore, quiet: bool
) -> CalibrationRecord:
    pen = await AsyncPen.open(pen_url, purpose="calibration", operator=settings.technician)
    try:
        identity, status = pen.identity, await pen.status()
        assert identity is not None
        if pen.is_simulated:
            err.print(f"[yellow]notice:[/] {pen.url} is a SIMULATOR, not a real pen")
        if not quiet:
            err.print(
                f"pen {identity.serial} ({identity.model}, firmware {identity.firmware_major}."
                f"{identity.firmware_minor}.{identity.firmware_patch}): "
                f"{status.state.name.lower()}, cartridge {status.cartridge_state.name.lower()}"
            )
        due = check_due(identity.serial, store=store)
        if due.needs_attention:
            err.print(f"[yellow]warning:[/] {due.message}")
        instruments = await open_instruments(
            gauge,
            quantities_of(procedure),
            bench=pen.bench,
            prompt=terminal_prompt(err),
            today=date.today(),
        )
        try:
            return await run_calibration(
                pen,
                procedure,
                instruments,
                store=store,
                settings=settings,
                progress=None if quiet else _printer(err),
            )
        finally:
            await close_instruments(instruments.values())
    finally:
        await pen.close()


# --- terminal I/O ---------------------------------------------------------------------------------
def terminal_prompt(console: Console) -> Prompt:
    """Ask on stderr, read a line from stdin without blocking the pen's heartbeats.

    On a terminal the line is read from the event loop (``add_reader``), so Ctrl-C cancels a
    pending question at once; otherwise (a pipe, a test) from a worker thread.
    """

    async def ask(question: str) -> str:
        console.print(f"[bold cyan]?[/] {question}: ", end="")
        line = await _read_line()
        if line == "":
            raise InstrumentError(f"standard input closed while asking: {question}")
        return line.rstrip("\n")

    return ask


async def _read_line() -> str:
    stdin = sys.stdin
    try:
        interactive = stdin.isatty()
        fd = stdin.fileno()
    except (AttributeError, ValueError, OSError):
        interactive = False
    if not interactive:
        return await asyncio.to_thread(stdin.readline)
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[str] = loop.create_future()

    def on_readable() -> None:
        if not ready.done():
            ready.set_result(stdin.readline())

    loop.add_reader(fd, on_readable)
    try:
        return await ready
    finally:
        loop.remove_reader(fd)


def _printer(console: Console) -> Any:
    def show(event: ProgressEvent) -> None:
        if event.text == "start":
            console.print(f"[bold]{event.phase}[/]")
        elif event.point is not None:
            colour = {"pass": "green", "marginal": "yellow", "fail": "red"}[event.point.verdict]
            console.print(f"  [{colour}]{event.text}[/]")
        elif not event.text.startswith("set "):
            console.print(f"  {event.text}")

    return show


def _next_due(record: CalibrationRecord) -> str | None:
    if record.outcome is not Outcome.PASS or record.finished_at is None:
        return None
    return (record.finished_at + timedelta(days=record.interval_days)).date().isoformat()


def _result(record: CalibrationRecord, pdf: Path, json_path: Path) -> dict[str, Any]:
    summary = record.summary()
    return {
        "outcome": record.outcome.value,
        "reason": record.reason,
        "procedure": record.procedure,
        "pen": record.pen.serial,
        "record_id": record.record_id,
        "as_found_max_error_mm": summary["as_found_max_error_mm"],
        "as_left_max_error_mm": summary["as_left_max_error_mm"],
        "as_found_max_error_pct": summary["as_found_max_error_pct"],
        "as_left_max_error_pct": summary["as_left_max_error_pct"],
        "as_found": summary["as_found"],
        "as_left": summary["as_left"],
        "marginal": summary["marginal"],
        "committed": record.committed,
        "next_due": _next_due(record),
        "certificate": str(pdf),
        "record": str(json_path),
    }


def _print_result(record: CalibrationRecord, pdf: Path, json_path: Path) -> None:
    console = Console(highlight=False)
    table = Table(title=f"calibration of {record.pen.serial} ({record.procedure})")
    for column in ("quantity", "set", "as-found error", "", "as-left error", ""):
        table.add_column(column, justify="right" if column else "left")
    for quantity in record.quantities():
        found = {p.set_value: p for p in record.stage_points(Stage.AS_FOUND, quantity)}
        left = {p.set_value: p for p in record.stage_points(Stage.AS_LEFT, quantity)}
        for value in sorted(set(found) | set(left)):
            table.add_row(
                quantity.value,
                f"{value:g} {quantity.set_units}",
                *_cells(found.get(value)),
                *_cells(left.get(value)),
            )
    console.print(table)
    colour = {"pass": "green", "fail": "red", "incomplete": "yellow"}[record.outcome]
    console.print(f"outcome: [bold {colour}]{record.outcome.value.upper()}[/] — {record.reason}")
    for note in record.notes:
        console.print(f"  note: {note}")
    due = _next_due(record)
    if due:
        console.print(f"next calibration due: {due}")
    console.print(f"certificate: {pdf}\nrecord: {json_path} (id {record.record_id})")


def _cells(point: Any) -> tuple[str, str]:
    if point is None:
        return "-", ""
    digits = 3 if point.quantity is Quantity.DEPTH else 2
    colour = {"pass": "green", "marginal": "yellow", "fail": "red"}[point.verdict]
    return (
        f"{point.error:+.{digits}f} {point.error_units}",
        f"[{colour}]{point.verdict.value}[/]",
    )


# --- micropen cal ... -----------------------------------------------------------------------------
@cal_app.command("history")
def history(
    pen: Annotated[str | None, typer.Option("--pen", help="only this pen serial")] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Every calibration on record, newest first."""
    records = RecordStore(db).history(pen)
    if as_json:
        emit_json({"records": [_history_row(r) for r in records]})
        return
    table = Table(title=f"calibration history{f' of {pen}' if pen else ''}")
    for column in ("started (UTC)", "pen", "procedure", "outcome", "technician", "reason"):
        table.add_column(column)
    for r in records:
        table.add_row(
            r.started_at.strftime("%Y-%m-%d %H:%M"),
            r.pen.serial,
            r.procedure,
            r.outcome.value,
            r.technician or "-",
            r.reason,
        )
    Console(highlight=False).print(table)


def _history_row(record: CalibrationRecord) -> dict[str, Any]:
    return {
        "record_id": record.record_id,
        "pen": record.pen.serial,
        "procedure": record.procedure,
        "started_at": record.started_at.isoformat(),
        "finished_at": record.finished_at.isoformat() if record.finished_at else None,
        "technician": record.technician,
        "station": record.station,
        "committed": record.committed,
        "next_due": _next_due(record),
        **record.summary(),
    }


@cal_app.command("due")
def due(
    interval_days: Annotated[
        int | None,
        typer.Option("--interval-days", help="override each record's interval"),
    ] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Each pen's next calibration due date, soonest first."""
    with errors_to_exit():
        if interval_days is not None:
            Settings(interval_days=interval_days).check()
    statuses = all_due(RecordStore(db), interval_days=interval_days)
    if as_json:
        emit_json({"pens": [s.to_dict() for s in statuses]})
        return
    table = Table(title="calibration due")
    for column in ("pen", "state", "due", "days left", "last passed"):
        table.add_column(column)
    colours = {"ok": "green", "due_soon": "yellow", "overdue": "red", "never": "red"}
    for s in statuses:
        table.add_row(
            s.serial,
            f"[{colours[s.state]}]{s.state.value}[/]",
            s.due.isoformat() if s.due else "-",
            "-" if s.days_left is None else str(s.days_left),
            s.last_calibrated.isoformat() if s.last_calibrated else "-",
        )
    Console(highlight=False).print(table)


@cal_app.command("export")
def export(
    record_id: Annotated[str, typer.Argument(help="record id (from cal history)")],
    out: Annotated[Path, typer.Option("--out", help="folder to write to")] = Path("."),
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Write a stored record's PDF certificate and JSON again."""
    record = RecordStore(db).get(record_id)
    if record is None:
        fail(f"no calibration record {record_id!r}; list them with `micropen cal history`", 2)
    from micropen.host.calibration.certificate import write_certificate, write_json

    pdf, json_path = write_certificate(record, out), write_json(record, out)
    if as_json:
        emit_json({"certificate": str(pdf), "record": str(json_path)})
    else:
        typer.echo(f"certificate: {pdf}\nrecord: {json_path}")


# --- the demo's calibration step ------------------------------------------------------------------
def run_calibration_for_demo(pen: Any, out: Path, *, quiet: bool = False) -> dict[str, Any]:
    """``micropen demo``: calibrate an already-open (sync) pen with the simulator's bench."""
    if pen.bench is None:
        return {"skipped": "no bench instruments on this pen; use micropen calibrate --gauge ..."}
    store = RecordStore()

    async def go() -> CalibrationRecord:
        instruments = await open_instruments(
            "sim", quantities_of("all"), bench=pen.bench, today=date.today()
        )
        return await run_calibration(
            pen.async_pen,
            "all",
            instruments,
            store=store,
            settings=Settings(technician="demo", station="demo"),
            progress=None if quiet else _printer(err),
        )

    try:
        record = pen.run_coroutine(go())  # on the pen's own loop thread, beside its heartbeats
    except InvalidInput as exc:
        return {"skipped": str(exc)}
    from micropen.host.calibration.certificate import write_certificate, write_json

    pdf, json_path = write_certificate(record, out), write_json(record, out)
    if not quiet:
        _print_result(record, pdf, json_path)
    return _result(record, pdf, json_path)
