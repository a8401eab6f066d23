"""Versioned schema migrations of the fleet database: plain SQL files applied in order.

``host/fleet/migrations/NNNN_name.sql`` are applied once each, in number order, every one in
its own transaction together with its row in ``schema_version``; a transaction-scoped advisory
lock makes workers that start together apply them once. A database newer than this code (a
version it does not know) is refused, naming the version. ``micropen fleet db migrate`` and
every ingest worker at start call :func:`migrate`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg

from .errors import FleetError

__all__ = [
    "Migration",
    "SchemaMissing",
    "SchemaTooNew",
    "applied_versions",
    "check_schema",
    "check_schema_async",
    "migrate",
    "migrations",
]

_LOCK = 0x6D70_656E  # "mpen": the advisory lock of the migrations
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class SchemaTooNew(FleetError):
    """The database has migrations this code does not know: upgrade micropen."""


class SchemaMissing(FleetError):
    """The database lacks migrations this code needs: run micropen fleet db migrate."""


_VERSIONS = "SELECT version FROM schema_version ORDER BY 1"
_HAS_VERSIONS = "SELECT to_regclass('schema_version') IS NOT NULL"


def _judge(versions: list[int]) -> None:
    known = [m.version for m in migrations()]
    newer = [v for v in versions if v > known[-1]]
    if newer:
        raise SchemaTooNew(
            f"the fleet database has schema version {newer[-1]}, newer than this micropen "
            f"({known[-1]}); upgrade micropen on this machine"
        )
    missing = sorted(set(known) - set(versions))
    if missing:
        have = f"version {max(versions)}" if versions else "no fleet schema"
        raise SchemaMissing(
            f"the fleet database has {have}, this micropen needs {known[-1]}; run micropen "
            "fleet db migrate --db URL (as the database's owner)"
        )


def check_schema(conn: psycopg.Connection[Any]) -> None:
    """Refuse a database whose schema is not exactly what this code reads and writes: a
    reader of a newer schema could miss what it added (a recall, a new kind of use)."""
    row = conn.execute(_HAS_VERSIONS).fetchone()
    versions = [int(r[0]) for r in conn.execute(_VERSIONS)] if row and row[0] else []
    _judge(versions)


async def check_schema_async(conn: psycopg.AsyncConnection[Any]) -> None:
    """:func:`check_schema` on an async connection."""
    cur = await conn.execute(_HAS_VERSIONS)
    row = await cur.fetchone()
    versions: list[int] = []
    if row and row[0]:
        cur = await conn.execute(_VERSIONS)
        versions = [int(r[0]) for r in await cur.fetchall()]
    _judge(versions)


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The package's migrations, in order (checked: numbered 1, 2, 3… without gaps)."""
    folder = resources.files("micropen.host.fleet").joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise FleetError(f"fleet migrations are not numbered 1..n: {[m.version for m in found]}")
    return found


def applied_versions(conn: psycopg.Connection) -> list[int]:
    row = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
    if row is None or not row[0]:
        return []
    return [int(r[0]) for r in conn.execute("SELECT version FROM schema_version ORDER BY 1")]


def migrate(dsn: str) -> list[int]:
    """Apply what is missing; the versions applied now (empty: the schema was current)."""
    known = migrations()
    applied_now: list[int] = []
    with psycopg.connect(dsn, autocommit=False) as conn:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version integer PRIMARY KEY, "
                "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
        for migration in known:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
                done = set(applied_versions(conn))
                newer = sorted(v for v in done if v > known[-1].version)
                if newer:
                    raise SchemaTooNew(
                        f"the fleet database has schema version {newer[-1]}, newer than this "
                        f"micropen ({known[-1].version}); upgrade micropen"
                    )
                if migration.version in done:
                    continue
                conn.execute(migration.sql.encode())
                conn.execute(
                    "INSERT INTO schema_version (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
                applied_now.append(migration.version)
    return applied_now
