"""``micropen log list | show | export``: the durable treatment log."""

from __future__ import annotations

import dataclasses
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from micropen.host.event_text import event_text
from micropen.host.treatment_log import CSV_EXPORT_FILES, TreatmentLog, TreatmentLogError

from .common import JsonOption, emit_json, fail

app = typer.Typer(
    help="The treatment log: every session, run, event and override.", no_args_is_help=True
)
console = Console()
DbOption = Annotated[
    Path | None, typer.Option("--db", help="treatment log file (default: $MICROPEN_HOME)")
]


def _open(db: Path | None) -> TreatmentLog:
    """The log, read-only: reading never creates a file or a folder."""
    if db is not None and not db.is_file():
        what = "is a folder, not a treatment log" if db.is_dir() else "does not exist"
        fail(f"--db {db} {what}; give the treatment log file (micropen doctor shows where)", 2)
    path = db or TreatmentLog.default_path()
    if not path.exists():
        return TreatmentLog(":memory:")  # nothing recorded here yet: an empty log
    try:
        return TreatmentLog(path, readonly=True)
    except TreatmentLogError as exc:
        fail(str(exc))


def _missing_folder(folder: Path) -> str:
    return "is a file, not a folder" if folder.exists() else "does not exist; create it first"


def _check_json_out(out: Path, force: bool) -> None:
    """Refuse an --out that would fail half-way or silently replace an earlier export."""
    if out.is_dir():
        fail(f"--out {out} is a folder; give a file name for the JSON export", 2)
    if not out.parent.is_dir():
        fail(f"--out {out}: {out.parent} {_missing_folder(out.parent)}", 2)
    if out.exists() and not force:
        fail(f"--out {out} exists; choose another name or pass --force to replace it", 2)


def _check_csv_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        fail(f"--out {out} is a file; CSV export writes several files into a folder", 2)
    if not out.exists() and not out.parent.is_dir():
        fail(f"--out {out}: {out.parent} {_missing_folder(out.parent)}", 2)
    clashes = [out / name for name in CSV_EXPORT_FILES if (out / name).exists()]
    if clashes and not force:
        fail(f"{clashes[0]} exists; choose another folder or pass --force to replace it", 2)


def _when(ts: float | None, *, seconds: bool = True) -> str:
    shape = "%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M"
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime(shape)


def _table(title: str) -> Table:
    """Compact tables that fit an 80-column terminal."""
    return Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1, 0, 0))


@app.command("list")
def list_sessions(
    serial: Annotated[str | None, typer.Option("--serial", help="only this pen serial")] = None,
    limit: Annotated[int, typer.Option(help="at most N sessions", min=1)] = 50,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Recent sessions, newest first."""
    with _open(db) as log:
        sessions = log.sessions(pen_serial=serial, limit=limit)
    if as_json:
        emit_json({"sessions": [dataclasses.asdict(s) for s in sessions]})
        return
    table = _table("treatment sessions")
    for col in ("id", "pen", "operator", "started (UTC)", "outcome", "runs", "strokes", "faults"):
        table.add_column(col, no_wrap=col in ("pen", "started (UTC)"))
    for s in sessions:
        table.add_row(
            str(s.id),
            s.pen_serial + ("*" if s.is_simulated else ""),
            s.operator or "-",
            _when(s.started_at, seconds=False),
            s.outcome or "-",
            str(s.runs),
            f"{s.strokes_delivered:,}",
            str(s.faults),
        )
    console.print(table)
    if any(s.is_simulated for s in sessions):
        console.print("* a simulated pen", highlight=False)


@app.command()
def show(
    session_id: Annotated[int, typer.Argument(help="session id from `micropen log list`")],
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """One session: runs, events, overrides."""
    with _open(db) as log:
        try:
            detail = log.session(session_id)
        except TreatmentLogError as exc:
            fail(str(exc), 2)
    data: dict[str, Any] = dataclasses.asdict(detail)
    data["strokes_delivered"] = detail.strokes_delivered
    for event in data["events"]:
        if event["kind"] == "event":
            event["meaning"] = event_text(event["code"], event["value"])
    if as_json:
        emit_json(data)
        return
    console.print(
        f"[bold]session {detail.id}[/] pen {detail.pen_serial} ({detail.pen_model}, "
        f"firmware {detail.firmware}) operator {detail.operator or '-'}"
    )
    runs = _table("runs")
    for col in ("run", "area", "depth", "rate", "outcome", "strokes", "target"):
        runs.add_column(col)
    for r in detail.runs:
        depth = r.reported_depth_um or r.depth_um
        runs.add_row(
            str(r.run_id),
            r.area or r.reported_area or "-",
            f"{depth / 1000:.2f} mm" if depth is not None else "-",
            f"{r.reported_rate_sps or r.rate_sps}/s" if r.reported_rate_sps or r.rate_sps else "-",
            (r.outcome or "-").lower().replace("_", " "),
            f"{r.strokes or 0:,}",
            str(r.target or r.reported_target or "-"),
        )
    console.print(runs)
    events = _table("events")
    for col in ("time (UTC)", "what", "details"):
        events.add_column(col, no_wrap=col == "time (UTC)")
    for e in detail.events:
        what = e.code.lower().replace("_", " ")
        if e.kind != "event":
            what = f"{e.kind}: {what}"
        meaning = event_text(e.code, e.value) if e.kind == "event" else f"value: {e.value}"
        extra = "; ".join(
            x for x in (meaning, f"run {e.run_id}" if e.run_id else "", e.detail) if x
        )
        events.add_row(_when(e.host_time), what, extra)
    console.print(events)
    for o in detail.overrides:
        console.print(f"override: {o.depth_um / 1000:.2f} mm on {o.area}: {o.reason}")


@app.command()
def export(
    fmt: Annotated[str, typer.Option("--format", help="json or csv")] = "json",
    out: Annotated[Path | None, typer.Option("--out", help="file (json) or folder (csv)")] = None,
    session: Annotated[list[int] | None, typer.Option("--session", help="only these ids")] = None,
    force: Annotated[bool, typer.Option("--force", help="replace existing files")] = False,
    db: DbOption = None,
) -> None:
    """Export sessions as one JSON document or as CSV files."""
    if fmt not in ("json", "csv"):
        fail(f"--format {fmt!r} is not known; choose json or csv", 2)
    if fmt == "json" and out is not None:
        _check_json_out(out, force)
    if fmt == "csv":
        _check_csv_out(out or Path("."), force)
    with _open(db) as log:
        if fmt == "json":
            if out is None:
                log.export_json(session, sys.stdout)
                sys.stdout.write("\n")
            else:
                with out.open("w", encoding="utf-8") as fh:
                    count = log.export_json(session, fh)
                console.print(f"{count} sessions written to {out}", highlight=False)
            return
        paths = log.export_csv(session, out or Path("."))
    console.print("written: " + ", ".join(str(p) for p in paths), highlight=False)
