"""``micropen calibrate depth|rate|all|verify`` and ``micropen cal history|due|export|station|
signer init|verify-certificate``.

Calibration on the bench: the pen is driven through set points while a reference instrument
(``--gauge``) reads what the needles really do; each point is stated with its expanded
uncertainty and judged by the decision rule; the correction is fitted, written to the pen, read
back, committed and checked as-left; a record goes to the calibration database and a PDF
certificate (signed with ``--sign-key``/``--sign-cert`` or ``--sign-p12``) and a JSON record to
``--out`` (default: the certificates folder, ``paths.certificates_dir()``). Progress and prompts
go to stderr; with ``--json`` stdout carries exactly one JSON line. Exit codes: 0 pass, 1 fail
(or an error), 2 bad input (nothing done), 3 incomplete (the record says why), 4 conditional
(pass or fail: the error is within its guard band of the limit; a person decides, the
certificate and the JSON say which), 130 interrupted (pen made safe, record stored as
incomplete).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape as esc
from rich.table import Table

from micropen.host import paths
from micropen.host.calibration import (
    CalibrationRecord,
    DecisionRule,
    InstrumentError,
    Outcome,
    ProgressEvent,
    Quantity,
    RecordStore,
    Settings,
    Stage,
    Station,
    all_due,
    check_due,
    check_spec,
    close_instruments,
    load_station,
    open_instruments,
    quantities_of,
    run_calibration,
)
from micropen.host.calibration.due import DEFAULT_INTERVAL_DAYS
from micropen.host.calibration.instruments import Prompt
from micropen.host.calibration.procedure import READINGS_DEFAULT
from micropen.host.calibration.record import PointResult
from micropen.host.connection import AsyncPen
from micropen.host.errors import InvalidInput

from .common import JsonOption, PenOption, emit_json, errors_to_exit, fail

if TYPE_CHECKING:  # signing imports pyHanko: loaded only by the commands that sign or verify
    from micropen.host.calibration.signing import CertificateSigner

__all__ = ["cal_app", "calibrate_app", "run_calibration_for_demo"]

calibrate_app = typer.Typer(
    help="Calibrate (or only verify) a pen's needle depth and stroke rate on the bench.",
    no_args_is_help=True,
)
cal_app = typer.Typer(
    help="Calibration records and certificates: history, due dates, export, the station file, "
    "signing keys, signature checks.",
    no_args_is_help=True,
)
signer_app = typer.Typer(help="The signatory's key for signed certificates.", no_args_is_help=True)
cal_app.add_typer(signer_app, name="signer")
err = Console(stderr=True, highlight=False)
EXIT_FOR = {
    Outcome.PASS: 0,
    Outcome.FAIL: 1,
    Outcome.INCOMPLETE: 3,
    Outcome.CONDITIONAL_PASS: 4,
    Outcome.CONDITIONAL_FAIL: 4,
}
VERDICT_COLOURS = {
    "pass": "green",
    "conditional_pass": "yellow",
    "conditional_fail": "yellow",
    "fail": "red",
    "incomplete": "yellow",
}
PASSPHRASE_ENV = "MICROPEN_SIGN_PASSPHRASE"

GaugeOption = Annotated[
    str,
    typer.Option(
        "--gauge",
        help="reference instrument: sim (the simulator's bench), manual (typed readings), "
        "scpi+tcp://HOST:PORT or scpi+serial:///dev/ttyUSB0?baud=9600",
    ),
]
TechnicianOption = Annotated[str, typer.Option("--technician", help="who calibrates")]
StationOption = Annotated[
    str | None,
    typer.Option("--station", help="bench / station name (default: the station file's)"),
]
OwnerOption = Annotated[
    str | None,
    typer.Option(
        "--owner", help="the equipment's owner, name and address (default: the station file's)"
    ),
]
OutOption = Annotated[
    Path | None,
    typer.Option(
        "--out",
        help="folder for the PDF certificate and JSON record (default: the certificates "
        "folder, $MICROPEN_HOME/certificates or the per-user data folder)",
    ),
]
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
ReadingsOption = Annotated[
    int, typer.Option("--readings", help="readings per set point (2–50; repeatability)")
]
RuleOption = Annotated[
    str | None,
    typer.Option(
        "--decision-rule",
        help="ILAC-G8 decision rule: non-binary, guard-band or simple (default: the station "
        "file's, else non-binary)",
    ),
]
GuardOption = Annotated[
    float | None,
    typer.Option("--guard-band", help="guard band w = r·U: give r (default 1)"),
]
DbOption = Annotated[
    Path | None,
    typer.Option("--db", help="calibration database (default: $MICROPEN_HOME/calibration.sqlite)"),
]
SignKeyOption = Annotated[
    Path | None,
    typer.Option("--sign-key", help="sign the certificate with this private key (PEM, 0600)"),
]
SignCertOption = Annotated[
    Path | None,
    typer.Option("--sign-cert", help="the signatory's X.509 certificate for --sign-key"),
]
SignP12Option = Annotated[
    Path | None,
    typer.Option("--sign-p12", help=f"sign with a PKCS#12 file (passphrase in ${PASSPHRASE_ENV})"),
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
        station: StationOption = None,
        owner: OwnerOption = None,
        out: OutOption = None,
        interval_days: IntervalOption = DEFAULT_INTERVAL_DAYS,
        override_instrument_due: OverrideOption = None,
        ambient_c: AmbientOption = None,
        readings: ReadingsOption = READINGS_DEFAULT,
        decision_rule: RuleOption = None,
        guard_band: GuardOption = None,
        sign_key: SignKeyOption = None,
        sign_cert: SignCertOption = None,
        sign_p12: SignP12Option = None,
        db: DbOption = None,
        as_json: JsonOption = False,
    ) -> None:
        if override_instrument_due is not None and not override_instrument_due.strip():
            fail("--override-instrument-due needs a reason (it is recorded on the certificate)", 2)
        with errors_to_exit():
            lab = load_station()
            signer = _signer(sign_key, sign_cert, sign_p12)
            identity = signer.identity if signer else None
            settings = Settings(
                technician=technician,
                station=lab.station.get("name", "") if station is None else station,
                ambient_c=ambient_c,
                interval_days=interval_days,
                override_instrument_due=override_instrument_due or "",
                readings=readings,
                decision_rule=_rule(lab, decision_rule, guard_band),
                owner=lab.owner_text() if owner is None else owner,
                issuer=lab.issuer(*((identity.name, identity.role) if identity else ())),
                certificate_prefix=lab.certificate_prefix,
            )
            settings.check()
            check_spec(gauge)
            store = RecordStore(db)
            store.pens()  # a damaged database is reported now, before the pen is touched
            out_dir = _out_dir(out)
        job = _Job(procedure, pen, gauge, settings, store, lab, signer, as_json)
        _calibrate(job, out_dir)

    command.__name__ = procedure
    calibrate_app.command(procedure, help=_HELP[procedure])(command)


def _rule(lab: Station, kind: str | None, guard_band: float | None) -> DecisionRule:
    """The command line's rule, else the station file's; a lone --guard-band keeps the kind."""
    if kind is None and guard_band is None:
        return lab.decision_rule
    return DecisionRule.parse(kind or lab.decision_rule.kind.value, guard_band)


def _out_dir(out: Path | None) -> Path:
    from micropen.host.calibration.certificate import prepare_out_dir

    return prepare_out_dir(out if out is not None else paths.certificates_dir())


def _signer(key: Path | None, cert: Path | None, p12: Path | None) -> CertificateSigner | None:
    """The signatory's key, loaded and checked before anything else is done (a bad key file
    is bad input, not a failed calibration)."""
    if key is None and cert is None and p12 is None:
        return None
    from micropen.host.calibration.signing import load_signer

    phrase = os.environ.get(PASSPHRASE_ENV)
    return load_signer(
        key=key, cert=cert, pkcs12_file=p12, passphrase=phrase.encode() if phrase else None
    )


for _name in ("depth", "rate", "all", "verify"):
    _register(_name)


@dataclass(frozen=True)
class _Job:
    """One ``micropen calibrate`` run, as the options chose it."""

    procedure: str
    pen_url: str
    gauge: str
    settings: Settings
    store: RecordStore
    station: Station
    signer: CertificateSigner | None
    as_json: bool


def _calibrate(job: _Job, out_dir: Path) -> None:
    try:
        with errors_to_exit():
            record = asyncio.run(_calibrate_async(job))
    except (KeyboardInterrupt, asyncio.CancelledError):
        fail(
            "interrupted: the pen was stopped and its needles retracted; the record is stored "
            "as incomplete (micropen cal history)",
            130,
        )
    with errors_to_exit():
        pdf, json_path = _write_files(record, out_dir, job.signer)
    if job.as_json:
        emit_json(_result(record, pdf, json_path, job.signer))
    else:
        _print_result(record, pdf, json_path, job.signer)
    raise typer.Exit(EXIT_FOR[record.outcome])


def _write_files(
    record: CalibrationRecord, out_dir: Path, signer: CertificateSigner | None
) -> tuple[Path, Path]:
    from micropen.host.calibration.certificate import write_certificate, write_json

    return write_certificate(record, out_dir, signer=signer), write_json(record, out_dir)


async def _calibrate_async(job: _Job) -> CalibrationRecord:
    with _ctrl_c_cancels_once():
        return await _calibrate_pen(job)


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


async def _calibrate_pen(job: _Job) -> CalibrationRecord:
    settings, quiet = job.settings, job.as_json
    pen = await AsyncPen.open(job.pen_url, purpose="calibration", operator=settings.technician)
    try:
        identity, status = pen.identity, await pen.status()
        assert identity is not None
        if pen.is_simulated:
            err.print(f"[yellow]notice:[/] {esc(pen.url)} is a SIMULATOR, not a real pen")
        if not quiet:
            err.print(
                f"pen {identity.serial} ({identity.model}, firmware {identity.firmware_major}."
                f"{identity.firmware_minor}.{identity.firmware_patch}): "
                f"{status.state.name.lower()}, cartridge {status.cartridge_state.name.lower()}"
            )
        due = check_due(identity.serial, store=job.store)
        if due.needs_attention:
            err.print(f"[yellow]warning:[/] {esc(due.message)}")
        instruments = await open_instruments(
            job.gauge,
            quantities_of(job.procedure),
            bench=pen.bench,
            prompt=terminal_prompt(err),
            today=date.today(),
            register=job.station.register,
        )
        try:
            return await run_calibration(
                pen,
                job.procedure,
                instruments,
                store=job.store,
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
        console.print(f"[bold cyan]?[/] {esc(question)}: ", end="")
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
            colour = VERDICT_COLOURS[event.point.verdict.value]
            console.print(f"  [{colour}]{esc(event.text)}[/]")
        elif not event.text.startswith("set "):
            console.print(f"  {esc(event.text)}")

    return show


def _result(
    record: CalibrationRecord, pdf: Path, json_path: Path, signer: CertificateSigner | None
) -> dict[str, Any]:
    summary = record.summary()
    due = record.next_due()
    return {
        "outcome": record.outcome.value,
        "reason": record.reason,
        "procedure": record.procedure,
        "pen": record.pen.serial,
        "record_id": record.record_id,
        "certificate_number": record.certificate_id,
        "as_found_max_error_mm": summary["as_found_max_error_mm"],
        "as_left_max_error_mm": summary["as_left_max_error_mm"],
        "as_found_max_error_pct": summary["as_found_max_error_pct"],
        "as_left_max_error_pct": summary["as_left_max_error_pct"],
        "as_left_max_expanded_uncertainty_mm": summary["as_left_max_expanded_uncertainty_mm"],
        "as_left_max_expanded_uncertainty_pct": summary["as_left_max_expanded_uncertainty_pct"],
        "as_found": summary["as_found"],
        "as_left": summary["as_left"],
        "conditional": summary["conditional"],
        "decision_rule": record.decision_rule.to_dict(),
        "committed": record.committed,
        "next_due": due.isoformat() if due else None,
        "simulation": record.simulation,
        "simulated_parts": record.simulated_parts,
        "signed_by": signer.identity.name if signer else None,
        "certificate": str(pdf),
        "record": str(json_path),
    }


def _print_result(
    record: CalibrationRecord, pdf: Path, json_path: Path, signer: CertificateSigner | None
) -> None:
    console = Console(highlight=False)
    for stage in (Stage.AS_FOUND, Stage.AS_LEFT):
        points = record.stage_points(stage)
        if points:
            console.print(_points_table(record, stage, points))
    colour = VERDICT_COLOURS[record.outcome.value]
    console.print(
        f"outcome: [bold {colour}]{record.outcome.label.upper()}[/] — {esc(record.reason)}",
        overflow="fold",
    )
    for note in record.notes:
        console.print(f"  note: {esc(note)}", overflow="fold")
    due = record.next_due()
    if due:
        console.print(f"next calibration due: {due.isoformat()}")
    signed = f", signed by {signer.identity.describe()}" if signer else ""
    console.print(f"certificate {record.certificate_id}{signed}:", overflow="fold")
    console.print(f"  {pdf}", soft_wrap=True)  # a path is never broken: it is copied
    console.print(f"record {record.record_id}:\n  {json_path}", soft_wrap=True)


def _points_table(record: CalibrationRecord, stage: Stage, points: list[PointResult]) -> Table:
    """One stage, one row per point: fits 80 columns."""
    rule = record.decision_rule
    table = Table(
        title=f"{record.pen.serial} {record.procedure}: {stage.label} ({rule.kind.value})",
        box=box.SIMPLE_HEAD,
    )
    for column, justify in (("quantity", "left"), ("set", "right"), ("mean", "right"),
                            ("error ± U", "right"), ("statement", "left")):  # fmt: skip
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for p in points:
        budget = p.uncertainty
        decimals = budget.decimals if budget else 3
        spread = f" ± {budget.expanded:.{decimals}f}" if budget else ""
        colour = VERDICT_COLOURS[p.verdict.value]
        table.add_row(
            p.quantity.value,
            f"{p.set_value:g} {'mm' if p.quantity is Quantity.DEPTH else '/s'}",
            f"{p.mean:.{3 if p.quantity is Quantity.DEPTH else 2}f}",
            f"{p.error:+.{decimals}f}{spread} {p.error_units}",
            f"[{colour}]{p.verdict.label}[/]",
        )
    return table


def _reading(db: Path | None) -> RecordStore:
    """The store for a command that only reads: a --db that is not a database file is a
    typo to report (exit 2), not an empty history."""
    if db is not None and not db.is_file():
        what = "is a folder" if db.is_dir() else "does not exist"
        fail(f"--db {db} {what}; give the calibration database file (micropen doctor shows it)", 2)
    return RecordStore(db)


# --- micropen cal ... -----------------------------------------------------------------------------
SHORT_ID = 8  # as `cal history` shows ids; `cal export` takes any unique prefix of 6 or more


@cal_app.command("history")
def history(
    serial: Annotated[str | None, typer.Option("--serial", help="only this pen serial")] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Every calibration on record, newest first."""
    with errors_to_exit():
        records = _reading(db).history(serial)
    if as_json:
        emit_json({"records": [_history_row(r) for r in records]})
        return
    title = esc(f"calibration history{f' of {serial}' if serial else ''} (times UTC)")
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("record", "certificate", "started", "pen", "proc.", "outcome"):
        table.add_column(column, no_wrap=column in ("record", "certificate", "started"))
    for r in records:
        colour = VERDICT_COLOURS[r.outcome.value]
        table.add_row(
            r.record_id[:SHORT_ID],
            esc(r.certificate_id),
            r.started_at.strftime("%Y-%m-%d %H:%M"),
            esc(r.pen.serial),
            r.procedure,
            f"[{colour}]{r.outcome.label}[/]",
        )
    Console(highlight=False).print(table)


def _history_row(record: CalibrationRecord) -> dict[str, Any]:
    due = record.next_due()
    return {
        "record_id": record.record_id,
        "certificate_number": record.certificate_id,
        "pen": record.pen.serial,
        "procedure": record.procedure,
        "started_at": record.started_at.isoformat(),
        "finished_at": record.finished_at.isoformat() if record.finished_at else None,
        "technician": record.technician,
        "station": record.station,
        "committed": record.committed,
        "next_due": due.isoformat() if due else None,
        "simulation": record.simulation,
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
    """Each pen's next calibration due date, soonest first; a pen whose last calibration or
    verification failed is listed as failed (not calibrated)."""
    with errors_to_exit():
        if interval_days is not None:
            Settings(interval_days=interval_days).check()
        statuses = all_due(_reading(db), interval_days=interval_days)
    if as_json:
        emit_json({"pens": [s.to_dict() for s in statuses]})
        return
    table = Table(title="calibration due", box=box.SIMPLE_HEAD)
    for column in ("pen", "state", "due", "days left", "last record", "limiting"):
        table.add_column(column)
    colours = {"ok": "green", "due_soon": "yellow", "overdue": "red", "never": "red",
               "failed": "red"}  # fmt: skip
    for s in statuses:
        table.add_row(
            esc(s.serial),
            f"[{colours[s.state]}]{s.state.value}[/]",
            s.due.isoformat() if s.due else "-",
            "-" if s.days_left is None else str(s.days_left),
            s.last_calibrated.isoformat() if s.last_calibrated else "-",
            s.limiting.value if s.limiting else "-",
        )
    Console(highlight=False).print(table)


@cal_app.command("export")
def export(
    record_ref: Annotated[
        str,
        typer.Argument(
            metavar="RECORD", help="record id, a unique prefix of it, or the certificate number"
        ),
    ],
    out: OutOption = None,
    sign_key: SignKeyOption = None,
    sign_cert: SignCertOption = None,
    sign_p12: SignP12Option = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Write a stored record's PDF certificate (same number, same issue date) and JSON again."""
    with errors_to_exit():
        signer = _signer(sign_key, sign_cert, sign_p12)
        out_dir = _out_dir(out)
        record = _reading(db).find(record_ref)
        pdf, json_path = _write_files(record, out_dir, signer)
    if as_json:
        emit_json(
            {
                "certificate": str(pdf),
                "record": str(json_path),
                "certificate_number": record.certificate_id,
                "record_id": record.record_id,
                "signed_by": signer.identity.name if signer else None,
            }
        )
    else:
        signed = f", signed by {signer.identity.describe()}" if signer else ""
        typer.echo(f"certificate {record.certificate_id}{signed}: {pdf}\nrecord: {json_path}")


@cal_app.command("station")
def station(
    template: Annotated[
        bool, typer.Option("--template", help="print a commented example station file")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Where the station file is (the issuing lab, signatory, owner, decision rule and
    equipment register named on certificates) and what micropen reads from it."""
    from micropen.host.calibration.station import TEMPLATE

    if template:
        typer.echo(TEMPLATE, nl=False)
        return
    with errors_to_exit():
        lab = load_station()
    if as_json:
        emit_json(lab.to_dict())
        return
    console = Console(highlight=False)
    console.print(f"station file: {lab.path}", soft_wrap=True)  # a path is copied whole
    if not lab.found:
        console.print(
            "[yellow]none yet: certificates say the issuing laboratory is not configured[/]\n"
            "create it from `micropen cal station --template`"
        )
        return
    console.print(_station_table(lab))


def _station_table(lab: Station) -> Table:
    table = Table(show_header=False, box=box.SIMPLE)
    table.add_column("key", no_wrap=True)
    table.add_column("value", overflow="fold")
    for section, values in (("lab", lab.lab), ("station", lab.station),
                            ("signatory", lab.signatory), ("owner", lab.owner)):  # fmt: skip
        for key, value in values.items():
            table.add_row(f"{section}.{key}", esc(str(value)))
    if not lab.configured:
        table.add_row("lab.name", "[red]not set: certificates name no issuing laboratory[/]")
    table.add_row("certificate series", f"{lab.certificate_prefix}-YYYY-nnnnn")
    table.add_row("decision rule", lab.decision_rule.title())
    for entry in lab.register.values():
        cal = entry.calibration
        table.add_row(
            f"instrument {entry.serial}",
            esc(
                f"{entry.model or '-'}: certificate {cal.certificate} of {cal.calibrated_on}, "
                f"U {cal.describe('', label=False)}, resolution {cal.resolution:g} (instrument "
                "units: mm, strokes/s)"
            ),
        )
    return table


@signer_app.command("init")
def signer_init(
    name: Annotated[str, typer.Option("--name", help="the signatory's full name")],
    role: Annotated[str, typer.Option("--role", help="the signatory's role (title)")],
    organisation: Annotated[
        str | None, typer.Option("--organisation", help="default: the station file's lab name")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="folder for signer.key and signer.crt (default: "
            "the per-user config folder's signer/)",
        ),
    ] = None,
    days: Annotated[int, typer.Option("--days", help="certificate validity")] = 3 * 365,
    as_json: JsonOption = False,
) -> None:
    """Create the signatory's key (0600, never overwritten) and a self-signed X.509
    certificate naming them and their role, for `--sign-key`/`--sign-cert`."""
    from micropen.host.calibration.signing import create_signer

    with errors_to_exit():
        lab = organisation if organisation is not None else load_station().lab.get("name", "")
        folder = out if out is not None else paths.config_dir() / "signer"
        key, cert = create_signer(folder, name, role, lab, days=days)
    if as_json:
        emit_json({"key": str(key), "certificate": str(cert), "name": name, "role": role})
    else:
        typer.echo(
            f"key: {key} (keep it private; mode 600)\ncertificate: {cert} (give it to whoever "
            "checks certificates: micropen cal verify-certificate FILE --trust CERT)"
        )


@cal_app.command("verify-certificate")
def verify_certificate_cmd(
    file: Annotated[Path, typer.Argument(help="a certificate PDF")],
    trust: Annotated[
        Path | None,
        typer.Option("--trust", help="the signatory's (or their CA's) certificate to trust"),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Check a certificate's signature: exit 0 when signed, intact and unchanged (and signed
    by the trusted signer, with --trust); 1 when unsigned, altered or untrusted."""
    from micropen.host.calibration.signing import verify_certificate

    with errors_to_exit():
        check = verify_certificate(file, trust)
    if as_json:
        emit_json(check.to_dict())
    elif check.ok:
        typer.echo(check.message())
    else:
        err.print(f"[bold red]not valid:[/] {esc(check.message())}", soft_wrap=True)
    raise typer.Exit(0 if check.ok else 1)


# --- the demo's calibration step ------------------------------------------------------------------
def run_calibration_for_demo(
    pen: Any, out: Path | None = None, *, quiet: bool = False
) -> dict[str, Any]:
    """``micropen demo``: calibrate an already-open (sync) pen with the simulator's bench;
    the certificate goes to ``out``, else to the certificates folder."""
    if pen.bench is None:
        return {"skipped": "no bench instruments on this pen; use micropen calibrate --gauge ..."}
    with errors_to_exit():
        lab = load_station()
        out_dir = _out_dir(out)
    settings = Settings(
        technician="demo", station="demo", owner=lab.owner_text(), issuer=lab.issuer(),
        decision_rule=lab.decision_rule, certificate_prefix=lab.certificate_prefix,
    )  # fmt: skip
    store = RecordStore()

    async def go() -> CalibrationRecord:
        instruments = await open_instruments(
            "sim", quantities_of("all"), bench=pen.bench, today=date.today(),
            register=lab.register,
        )  # fmt: skip
        return await run_calibration(
            pen.async_pen, "all", instruments, store=store, settings=settings,
            progress=None if quiet else _printer(err),
        )  # fmt: skip

    try:
        record = pen.run_coroutine(go())  # on the pen's own loop thread, beside its heartbeats
    except InvalidInput as exc:
        return {"skipped": str(exc)}
    with errors_to_exit():
        pdf, json_path = _write_files(record, out_dir, None)
    if not quiet:
        _print_result(record, pdf, json_path, None)
    return _result(record, pdf, json_path, None)
