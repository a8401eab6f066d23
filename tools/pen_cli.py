"""Pen commands: pens, status, run, stop, estop, monitor."""

from __future__ import annotations

import threading
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from micropen.host import Pen
from micropen.host.calibration.due import check_due
from micropen.host.errors import SafetyLimitError
from micropen.host.safety import (
    NOMINAL_PEN,
    check_depth,
    check_rate,
    check_run,
    check_treatment_area,
    resolve_area,
)
from micropen.host.transports.discovery import scan
from micropen.protocol.errors import MicropenError
from micropen.protocol.messages import PenState, RunOutcome, RunReport, Status, Telemetry

from .common import (
    JsonOption,
    PenOption,
    connected,
    emit_json,
    err_console,
    errors_to_exit,
    fail,
)
from .present import (
    area_name,
    state_words,
    status_document,
    status_rows,
    telemetry_document,
    word,
)

console = Console()


def status_dict(pen: Pen, status: Status) -> dict[str, Any]:
    """The status document (names and units; tools/present.py) with this bench's calibration
    state for the pen, when the records can be read."""
    ident = pen.identity
    assert ident is not None
    try:
        due = check_due(ident.serial)
    except MicropenError:
        due = None  # connected() already warned that the records cannot be read
    d = status_document(ident, status, due)
    d["url"] = pen.url
    d["simulated"] = pen.is_simulated
    return d


def pens(as_json: JsonOption = False) -> None:
    """List attached pens (USB and serial) and the built-in simulator."""
    found = scan()
    rows = [{"url": url, "kind": "pen"} for url in found.urls]
    rows.append({"url": "sim://", "kind": "simulator (built in)"})
    usb_error = None if found.usb_error is None else str(found.usb_error)
    if as_json:
        emit_json({"pens": rows, "usb_error": usb_error})
        return
    if usb_error is not None:  # the list may be incomplete: say why, and what to do
        Console(stderr=True).print(f"[yellow]warning:[/] {usb_error}", highlight=False)
    table = Table(title="pens")
    table.add_column("url")
    table.add_column("kind")
    for row in rows:
        table.add_row(row["url"], row["kind"])
    console.print(table)


def status(pen_url: PenOption = "auto", as_json: JsonOption = False) -> None:
    """Identity, state, settings, counters and cartridge of a pen."""
    with connected(pen_url, quiet=as_json) as pen:
        data = status_dict(pen, pen.status())
    if as_json:
        emit_json(data)
        return
    table = Table(title=f"pen {data['serial']}", show_header=False)
    for label, value in status_rows(data):
        table.add_row(label, value)
    console.print(table)


def run(
    depth: Annotated[float, typer.Option("--depth", help="needle depth in mm")],
    speed: Annotated[int, typer.Option("--speed", help="stroke rate in strokes/s")],
    area: Annotated[str, typer.Option("--area", help="treatment area profile")],
    strokes: Annotated[int | None, typer.Option("--strokes", help="stop after N strokes")] = None,
    seconds: Annotated[float | None, typer.Option("--seconds", help="stop after S s")] = None,
    override: Annotated[
        str | None,
        typer.Option("--override-soft-cap", metavar="REASON", help="allow > 1.5 mm; logged"),
    ] = None,
    operator: Annotated[
        str,
        typer.Option(
            "--operator",
            envvar="MICROPEN_OPERATOR",
            help="who treats (recorded with the session in the treatment log; set "
            "MICROPEN_OPERATOR once per bench login)",
        ),
    ] = "",
    pen_url: PenOption = "auto",
    as_json: JsonOption = False,
) -> None:
    """Run the needles for N strokes or S seconds, with a live progress bar. Ctrl-C stops."""
    with errors_to_exit():  # bad input never opens the port, let alone reaches the pen
        profile = resolve_area(area)
        check_treatment_area(profile)
        check_run(strokes, seconds)
        check_depth(depth, NOMINAL_PEN, profile, override, run=True)
        check_rate(speed, NOMINAL_PEN, profile)
    if not operator.strip():
        err_console.print(
            "[bold yellow]warning:[/] no operator given: the treatment log records this run "
            "without a name; pass --operator NAME (or set MICROPEN_OPERATOR)",
            highlight=False,
        )
    with connected(pen_url, quiet=as_json, operator=operator) as pen:
        assert pen.identity is not None
        check_depth(depth, pen.identity, profile, override, run=True)
        check_rate(speed, pen.identity, profile)
        pen.set_telemetry(20)
        try:
            report = _run_with_progress(
                pen, depth, speed, profile.name, strokes, seconds, override, show=not as_json
            )
        except KeyboardInterrupt as interrupt:  # Ctrl-C or SIGTERM: the pen is stopped by now
            _interrupted(pen, interrupt, as_json)
        fault = None if report.outcome is RunOutcome.COMPLETED else _latched_fault(pen)
    result = report_document(report)
    result["fault"] = fault
    if as_json:
        emit_json(result)
    else:
        console.print(
            f"run {report.run_id}: [bold]{result['outcome']}[/], {report.strokes:,} strokes "
            f"delivered at {report.depth_um / 1000:.2f} mm, {report.rate_sps}/s"
        )
        if fault is not None:
            err_console.print(
                f"the pen has a latched {fault.replace('_', ' ')} fault: remove its cause, then "
                "clear it with micropen clear-fault before the next run",
                highlight=False,
            )
    if report.outcome is not RunOutcome.COMPLETED:  # a script must not take it for success
        raise typer.Exit(1)


def report_document(report: RunReport) -> dict[str, Any]:
    """A run report for --json: enums as words, the area by name, depth in mm too."""
    result = report.to_dict()
    result.update(
        outcome=word(report.outcome),
        mode=word(report.mode),
        area=area_name(report.area),
        depth_mm=report.depth_um / 1000,
        strokes_delivered=report.strokes,
    )
    return result


def _latched_fault(pen: Pen) -> str | None:
    """The fault the pen latched when the run did not complete (None: none, or unknown)."""
    try:
        status = pen.status()
    except MicropenError:
        return None
    return status.fault.name.lower() if status.state is PenState.FAULT else None


def _interrupted(pen: Pen, interrupt: KeyboardInterrupt, as_json: bool) -> NoReturn:
    """Say what the pen did (its own count), then exit 130 (Ctrl-C) or 143 (SIGTERM)."""
    report = pen.async_pen.runs.last_report
    code = 143 if type(interrupt).__name__ == "Terminated" else 130
    if report is None:
        message = "interrupted; no run of this command reported — micropen status shows the pen"
        result: dict[str, Any] = {"outcome": "interrupted"}
    else:
        message = (
            f"stopped after {report.strokes:,} strokes (run {report.run_id}, "
            f"{report.outcome.name.lower()})"
        )
        result = {
            "outcome": report.outcome.name.lower(),
            "run_id": report.run_id,
            "strokes_delivered": report.strokes,
        }
    if as_json:
        emit_json({**result, "interrupted": True})
    else:
        Console(stderr=True).print(message, highlight=False)
    raise typer.Exit(code)


def _run_with_progress(
    pen: Pen,
    depth: float,
    speed: int,
    area: str,
    strokes: int | None,
    seconds: float | None,
    override: str | None,
    show: bool,
) -> RunReport:
    total = strokes if strokes is not None else (seconds or 0) * speed
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f} strokes"),
        TextColumn("{task.fields[depth]} mm {task.fields[rate]}/s"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not show,
    )
    task = progress.add_task("needling", total=total, depth="-", rate="-")
    lock = threading.Lock()

    def on_sample(sample: Telemetry) -> None:
        with lock:
            progress.update(
                task,
                completed=sample.run_strokes,
                depth=f"{sample.depth_um / 1000:.2f}",
                rate=f"{sample.rate_csps / 100:.0f}",
            )

    with progress:
        report = pen.run(
            depth_mm=depth,
            rate_sps=speed,
            area=area,
            strokes=strokes,
            seconds=seconds,
            override_reason=override,
            on_telemetry=on_sample,
        )
        progress.update(task, completed=report.strokes)
    return report


def stop(pen_url: PenOption = "auto", as_json: JsonOption = False) -> None:
    """Stop needling (needles retract)."""
    with connected(pen_url, quiet=as_json, stop_only=True) as pen:
        pen.stop()
        data = status_dict(pen, pen.status())
    _done("stopped", data, as_json)


def estop(pen_url: PenOption = "auto", as_json: JsonOption = False) -> None:
    """Emergency stop: motor off, needles home, fault latched until cleared."""
    with connected(pen_url, quiet=as_json, stop_only=True) as pen:
        pen.emergency_stop()
        data = status_dict(pen, pen.status())
    _done("emergency stop", data, as_json)


def clear_fault(pen_url: PenOption = "auto", as_json: JsonOption = False) -> None:
    """Clear a latched fault once its cause is gone (the pen refuses while it stands)."""
    with connected(pen_url, quiet=as_json) as pen:
        before = pen.status()
        latched = before.fault.name.lower() if before.state is PenState.FAULT else None
        if latched is not None:
            pen.clear_fault()
        data = status_dict(pen, pen.status())
    data["cleared"] = latched
    if as_json:
        emit_json(data)
    elif latched is None:
        console.print(f"no fault latched: pen {data['serial']} is {state_words(data)}")
    else:
        cleared = latched.replace("_", " ")
        console.print(f"cleared the {cleared} fault: pen {data['serial']} is {state_words(data)}")


def _done(what: str, data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(data)
    else:
        console.print(f"{what}: pen {data['serial']} is {state_words(data)}")


def monitor(
    pen_url: PenOption = "auto",
    rate: Annotated[int, typer.Option("--rate", help="telemetry Hz")] = 10,
    count: Annotated[
        int, typer.Option("--count", help="stop after N samples (0 = never)", min=0)
    ] = 0,
    as_json: JsonOption = False,
) -> None:
    """Live telemetry; --json streams one JSON line per sample. Ctrl-C ends."""
    if not 1 <= rate <= 1000:
        fail(f"--rate {rate} is outside 1–1000 Hz; choose a rate in that range", 2)
    with connected(pen_url, quiet=as_json) as pen:
        samples: list[Telemetry] = []
        done = threading.Event()

        def on_message(message: Any) -> None:
            if isinstance(message, Telemetry):
                samples.append(message)
                if count and len(samples) >= count:
                    done.set()

        remove = pen.add_listener(on_message)
        pen.set_telemetry(rate)
        try:
            _monitor_loop(samples, done, as_json)
        except KeyboardInterrupt:
            pass
        finally:
            remove()
            pen.set_telemetry(0)


def _monitor_loop(samples: list[Telemetry], done: threading.Event, as_json: bool) -> None:
    shown = 0
    with Live(console=console, auto_refresh=False, transient=False) as live:
        while not done.wait(0.1) or shown < len(samples):
            new, shown = samples[shown:], len(samples)
            if not new:
                continue
            if as_json:
                for sample in new:
                    emit_json(telemetry_document(sample))
            else:
                live.update(_telemetry_table(new[-1]), refresh=True)
            if done.is_set():
                break


def _telemetry_table(s: Telemetry) -> Table:
    table = Table(title="telemetry", show_header=False)
    table.add_row("state", word(s.state))
    table.add_row("depth", f"{s.depth_um / 1000:.3f} mm")
    table.add_row("rate", f"{s.rate_csps / 100:.1f} strokes/s")
    table.add_row("run strokes", f"{s.run_strokes:,}")
    table.add_row("current", f"{s.current_ma} mA")
    table.add_row("temperature", f"{s.temperature_dc / 10:.1f} °C")
    table.add_row("battery", f"{s.battery_mv / 1000:.2f} V")
    table.add_row("cartridge", f"{s.cartridge_id} ({s.cartridge_strokes:,} strokes used)")
    return table


__all__ = [
    "SafetyLimitError",
    "clear_fault",
    "estop",
    "monitor",
    "pens",
    "run",
    "status",
    "stop",
]
