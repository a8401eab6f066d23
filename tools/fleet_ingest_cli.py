"""``micropen fleet ingest | db migrate | export``: fleet records into PostgreSQL.

Registered on the ``fleet`` command group by tools/fleet_cli.py (:func:`register`).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path
from typing import Annotated, Any

import aiomqtt
import typer
from rich.console import Console

from micropen.host.fleet.dsn import check_dsn

from .common import JsonOption, emit_json, errors_to_exit, fail

console = Console(stderr=True)

DbOption = Annotated[
    str,
    typer.Option(
        "--db", envvar="MICROPEN_FLEET_DB",
        help="PostgreSQL: postgresql://USER@HOST:PORT/DB (password: PGPASSWORD or ~/.pgpass)",
    ),
]  # fmt: skip

db_app = typer.Typer(help="The fleet database (PostgreSQL): schema migrations.",
                     no_args_is_help=True)  # fmt: skip


@contextlib.contextmanager
def _db_errors() -> Any:
    import psycopg

    try:
        yield
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        fail(f"database: {first}; check --db and that PostgreSQL is running", 1)
    except aiomqtt.MqttError as exc:
        fail(f"broker: {exc}; check --mqtt and the credentials", 1)


def ingest(
    mqtt: Annotated[
        str, typer.Option("--mqtt", envvar="MICROPEN_MQTT", help="Broker: mqtt://HOST:PORT …")
    ],
    db: DbOption,
    worker_id: Annotated[
        str | None,
        typer.Option(
            "--worker-id",
            help="Stable id of this worker (its persistent session); default: the host name",
        ),
    ] = None,
    group: Annotated[
        str, typer.Option("--group", help="Shared-subscription group of the workers")
    ] = "micropen-ingest",
    username: Annotated[str | None, typer.Option("--username", help="Broker user")] = None,
    password_file: Annotated[
        Path | None, typer.Option("--password-file", help="File holding the broker password")
    ] = None,
    cafile: Annotated[
        Path | None, typer.Option("--cafile", help="CA (PEM) of the broker's cert")
    ] = None,
    batch: Annotated[int, typer.Option("--batch", help="Most messages per transaction")] = 200,
    seconds: Annotated[
        float | None, typer.Option("--seconds", help="Stop after S seconds (default: run on)")
    ] = None,
    leave_group: Annotated[
        bool,
        typer.Option(
            "--leave-group",
            help="Decommission this worker: unsubscribe, store what its session still holds, "
            "end its session on the broker, exit (a plain stop keeps its share queued)",
        ),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON line per notice, then a summary line")
    ] = False,
) -> None:
    """Store fleet records from the broker in PostgreSQL (N workers share the load)."""
    from micropen.host.fleet.broker import parse_broker_url
    from micropen.host.fleet.ingest import IngestConfig, IngestWorker

    with errors_to_exit():
        broker = parse_broker_url(mqtt, username=username, password_file=password_file,
                                  cafile=cafile, protocol=5)  # fmt: skip
        check_dsn(db)
        if not 1 <= batch <= 10_000:
            fail(f"--batch {batch} is outside 1–10000; use e.g. 200", 2)
        if seconds is not None and not (0 < seconds <= 10**9):
            fail(f"--seconds {seconds} must be a positive number of seconds; e.g. --seconds 60, "
                 "or leave it out to run until stopped", 2)  # fmt: skip
        config = IngestConfig(group=group, batch_max=batch)
        if worker_id is not None:
            config = IngestConfig(group=group, batch_max=batch, worker_id=worker_id)
        from micropen.host.fleet.topics import check_level

        check_level("--group", config.group)
        check_level("--worker-id", config.worker_id)
    worker = IngestWorker(broker, db, config)
    worker.add_notice_listener(emit_json if as_json else _print_notice)
    with errors_to_exit(), _db_errors():
        asyncio.run(_run(worker, seconds, leave_group))
    stats = worker.statistics()
    if as_json:
        emit_json({"event": "summary", **stats})
    else:
        console.print(describe_summary(stats), highlight=False)


def describe_summary(stats: dict[str, Any]) -> str:
    """The summary in words: 'ingest stopped: 10 messages received, 9 stored, …'."""
    parts = [
        f"{stats.get('received', 0)} messages received",
        f"{stats.get('stored', 0)} stored",
        f"{stats.get('rejected', 0)} rejected (kept in rejected_messages)",
        f"{stats.get('acked', 0)} acknowledged in {stats.get('batches', 0)} transactions",
        f"{stats.get('mqtt_connects', 0)} broker connections "
        f"({stats.get('mqtt_disconnects', 0)} lost)",
        f"{stats.get('db_errors', 0)} database outages",
    ]
    latency = stats.get("latency_ms")
    if latency:
        parts.append(f"commit latency p50 {latency['p50']} ms, p99 {latency['p99']} ms, "
                     f"max {latency['max']} ms")  # fmt: skip
    return "ingest stopped: " + ", ".join(parts)


async def _run(worker: Any, seconds: float | None, leave_group: bool = False) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    if seconds is not None:
        loop.call_later(seconds, worker.stop)
    await (worker.leave_group() if leave_group else worker.run())


def _print_notice(notice: dict[str, Any]) -> None:
    details = " ".join(f"{k}={v}" for k, v in notice.items() if k != "event")
    console.print(f"[bold]{notice['event']}[/] {details}", highlight=False)


def migrate_command(db: DbOption, as_json: JsonOption = False) -> None:
    """Apply the fleet database's schema migrations that are missing (in order, once)."""
    from micropen.host.fleet.migrate import migrate, migrations

    with errors_to_exit():
        check_dsn(db)
    with errors_to_exit(), _db_errors():
        applied = migrate(db)
    current = migrations()[-1].version
    if as_json:
        emit_json({"applied": applied, "schema_version": current})
    elif applied:
        console.print(f"applied migrations {applied}; schema version {current}")
    else:
        console.print(f"schema version {current} is current; nothing to do")


def export(
    from_sqlite: Annotated[
        list[Path],
        typer.Option(
            "--from-sqlite", help="A bench's treatment log or calibration.sqlite (repeat for both)"
        ),
    ],
    db: DbOption,
    site: Annotated[
        str | None, typer.Option("--site", help="Site the bench belongs to (required)")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Export a bench's history to the fleet database (idempotent: run twice, same rows)."""
    from micropen.host.fleet.export import export_history
    from micropen.host.fleet.topics import check_level

    with errors_to_exit():
        check_dsn(db)
        for path in from_sqlite:
            if not path.is_file():
                fail(f"--from-sqlite {str(path)!r} does not exist; give the treatment log or "
                     "calibration.sqlite file", 2)  # fmt: skip
        if site is None:
            fail("--site is missing: the records need the site this bench belongs to; add "
                 "--site NAME (e.g. --site clinic-1)", 2)  # fmt: skip
        check_level("--site", site)
    with errors_to_exit(), _db_errors():
        result = export_history(list(from_sqlite), db, site=site)
    if as_json:
        emit_json(result)
    else:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(result["by_kind"].items()))
        console.print(f"exported {result['records']} records ({kinds or 'none'})")


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest)
    app.command("export")(export)
    db_app.command("migrate")(migrate_command)
    app.add_typer(db_app, name="db")
