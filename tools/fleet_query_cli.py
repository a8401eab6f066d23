"""``micropen fleet recall-lot``, ``trace-lot`` and ``report``: the fleet database from the
command line — the cartridge registry (hazard 4) and what every pen of the fleet did. Library
code: :mod:`micropen.host.fleet.registry`, :mod:`micropen.host.fleet.report`.
"""

from __future__ import annotations

import asyncio
import csv
import getpass
import sys
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from .common import JsonOption, emit_json, errors_to_exit, fail

T = TypeVar("T")

DbOption = Annotated[
    str,
    typer.Option(
        "--db", envvar="MICROPEN_FLEET_DB", help="The fleet database: postgresql://USER@HOST/DB"
    ),
]


def register(app: typer.Typer) -> None:
    app.command("recall-lot")(recall_lot)
    app.command("trace-lot")(trace_lot)
    app.command("report")(report)


@contextmanager
def _database_errors(dsn: str) -> Iterator[None]:
    import psycopg

    try:
        yield
    except psycopg.errors.UndefinedTable:
        fail(f"{_where(dsn)} has no fleet schema yet; run micropen fleet db migrate --db URL")
    except psycopg.OperationalError as exc:
        first = (str(exc).strip().splitlines() or ["no answer"])[0]
        fail(f"cannot reach the fleet database {_where(dsn)}: {first}; check --db")


def _where(dsn: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    try:
        info = conninfo_to_dict(dsn)
    except Exception:
        return "(malformed --db URL)"
    return f"{info.get('dbname', '?')} on {info.get('host', 'localhost')}"


def _run(dsn: str, work: Coroutine[Any, Any, T]) -> T:
    from micropen.host.fleet.dsn import check_dsn

    with errors_to_exit():
        try:
            check_dsn(dsn)
        except BaseException:
            work.close()
            raise
    with errors_to_exit(), _database_errors(dsn):
        return asyncio.run(work)


def _one_format(as_csv: bool, as_json: bool) -> None:
    if as_csv and as_json:
        fail("--csv and --json each print the whole answer; choose one", 2)


def recall_lot(
    lot: Annotated[str, typer.Argument(help="The lot as printed on the cartridges")],
    reason: Annotated[str, typer.Option("--reason", help="Why (shown at every refused run)")],
    db: DbOption,
    by: Annotated[str | None, typer.Option("--by", help="Who recalls (default: you)")] = None,
    as_json: JsonOption = False,
) -> None:
    """Block a cartridge lot on every pen of the fleet (benches with MICROPEN_REGISTRY set
    refuse its cartridges before a run)."""
    from micropen.host.fleet.registry import recall_lot as recall

    result = _run(db, recall(db, lot, reason, by or getpass.getuser()))
    document = {
        "lot": result.lot,
        "reason": result.reason,
        "recalled_by": result.recalled_by,
        "recalled_at": result.recalled_at.isoformat(),
        "already_recalled": result.already,
        "pens": result.pens,
    }
    if as_json:
        emit_json(document)
        return
    when = f"{result.recalled_at:%Y-%m-%d %H:%M} UTC"
    head = "was already recalled" if result.already else "is recalled fleet-wide"
    typer.echo(f"lot {result.lot} {head} ({when}, by {result.recalled_by}): {result.reason}")
    if result.pens:
        typer.echo(f"pens with cartridges of this lot on record: {', '.join(result.pens)}")
        typer.echo(f"trace them: micropen fleet trace-lot {result.lot} --db URL")
    else:
        typer.echo(
            "no cartridge of this lot is on record yet: check the lot against the cartridges' "
            "labels (the recall blocks exactly this lot from now on)"
        )


def trace_lot(
    lot: Annotated[str, typer.Argument(help="The lot as printed on the cartridges")],
    db: DbOption,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV on stdout")] = False,
    as_json: JsonOption = False,
) -> None:
    """Where a lot's cartridges were used: sites, pens, cartridges, sessions, runs, strokes."""
    from micropen.host.fleet.registry import lot_trace

    _one_format(as_csv, as_json)
    rows = _run(db, lot_trace(db, lot))
    for row in rows:
        for key in ("first_seen", "last_seen"):
            row[key] = row[key].isoformat() if row[key] is not None else None
    if as_json:
        emit_json({"lot": lot, "uses": rows})
        return
    if as_csv:
        writer = csv.DictWriter(sys.stdout, fieldnames=list(_COLUMNS), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "sessions": " ".join(row["sessions"] or [])})
        return
    if not rows:
        typer.echo(f"no cartridge of lot {lot} is on record")
        return
    table = Table(title=f"lot {lot}: {len(rows)} cartridge use(s)")
    for name in _COLUMNS.values():  # names in full: a recall is about these pens
        table.add_column(name, no_wrap=name in ("site", "pen", "cartridge"))
    for row in rows:
        table.add_row(
            row["site"],
            row["pen_serial"],
            f"{row['cartridge_id']:08X}",
            row["first_seen"] or "",
            row["last_seen"] or "",
            str(row["runs"]),
            f"{row['strokes']:,}",
            " ".join(row["sessions"] or []),
        )
    Console().print(table)


_COLUMNS = {
    "site": "site",
    "pen_serial": "pen",
    "cartridge_id": "cartridge",
    "first_seen": "first seen (UTC)",
    "last_seen": "last seen (UTC)",
    "runs": "runs",
    "strokes": "strokes",
    "sessions": "sessions",
}


def report(
    db: DbOption,
    site: Annotated[str | None, typer.Option("--site", help="Only this site's pens")] = None,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV on stdout")] = False,
    as_json: JsonOption = False,
) -> None:
    """Per site and pen: sessions, runs, strokes, cartridges, faults, overrides, and the
    calibration status with its due date."""
    from micropen.host.fleet.report import fleet_report

    _one_format(as_csv, as_json)

    async def work() -> list[Any]:
        return await asyncio.to_thread(fleet_report, db, site=site)

    pens = _run(db, work())
    if as_json:
        emit_json({"site": site, "pens": [p.to_dict() for p in pens]})
        return
    if as_csv:
        writer = csv.writer(sys.stdout)
        writer.writerow([*_REPORT_COLUMNS, "calibration", "due", "days_left"])
        for p in pens:
            d, cal = p.to_dict(), p.calibration.to_dict()
            writer.writerow([*(d[c] for c in _REPORT_COLUMNS), cal["state"], cal["due"],
                             cal["days_left"]])  # fmt: skip
        return
    if not pens:
        typer.echo("no pen on record" + (f" at site {site}" if site else ""))
        return
    table = Table(title=f"fleet: {len(pens)} pen(s)" + (f" at {site}" if site else ""))
    for name in ("site", "pen", "sessions", "runs", "strokes", "cartridges", "faults",
                 "overrides", "calibration", "due", "last seen (UTC)"):  # fmt: skip
        table.add_column(name, no_wrap=name in ("site", "pen"))
    for p in pens:
        cal = p.calibration
        table.add_row(
            p.site, p.serial, str(p.sessions), str(p.runs), f"{p.strokes:,}", str(p.cartridges),
            str(p.faults), str(p.overrides), cal.state.value.replace("_", " "),
            f"{cal.due} ({cal.days_left} d)" if cal.due else "–",
            f"{p.last_seen:%Y-%m-%d %H:%M}" if p.last_seen else "–",
        )  # fmt: skip
    Console().print(table)


_REPORT_COLUMNS = (
    "site", "serial", "model", "firmware", "sessions", "runs", "strokes", "cartridges", "faults",
    "overrides", "last_seen",
)  # fmt: skip
