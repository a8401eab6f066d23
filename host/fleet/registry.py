"""The fleet-wide cartridge registry in PostgreSQL (hazard 4: a used cartridge moved to
another handpiece).

:class:`PostgresRegistry` implements :class:`micropen.host.cartridge_guard.Registry`: before a
run the host claims the mounted cartridge (lot, id) for its pen in one transaction — refused
when its lot is recalled, when another pen claimed it first, or when the ingested history
(records published by any bench's bridge) shows it on another pen. The claim is an ``INSERT …
ON CONFLICT DO NOTHING`` on the primary key, so two pens racing for one cartridge cannot both
win. :func:`recall_lot` blocks a lot fleet-wide; :func:`lot_trace` lists where a lot was used.

Connections are opened per call (a run takes minutes; a check takes milliseconds), with a
connect timeout, so a bench never holds a stale connection to the fleet database.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from ..cartridge_guard import (
    CartridgeGuard,
    Claim,
    Mount,
    Recalled,
    RegistryMisconfigured,
    RegistryUnavailable,
    UnreachablePolicy,
    UsedElsewhere,
    Verdict,
)
from ..errors import InvalidInput
from .dsn import check_dsn
from .errors import FleetError
from .migrate import check_schema_async
from .topics import check_level

__all__ = [
    "PostgresRegistry",
    "RecallResult",
    "check_lot",
    "classify",
    "guard_from_env",
    "lot_trace",
    "recall_lot",
]

CONNECT_TIMEOUT_S = 3

_CLAIM = """
INSERT INTO cartridge_claims (lot, cartridge_id, pen_serial, site)
VALUES (%(lot)s, %(cartridge_id)s, %(serial)s, %(site)s)
ON CONFLICT (lot, cartridge_id) DO NOTHING
"""
_HOLDER = """
SELECT pen_serial, site, claimed_at FROM cartridge_claims
WHERE lot = %(lot)s AND cartridge_id = %(cartridge_id)s
"""
_RECALLED = "SELECT reason, recalled_at, recalled_by FROM recalled_lots WHERE lot = %(lot)s"


# sqlstate classes of a database that is there but cannot answer now: connection exception,
# insufficient resources, operator intervention (restart, shutdown), serialization/deadlock
_TRANSIENT = ("08", "40", "53", "57")


def classify(exc: BaseException) -> RegistryUnavailable | RegistryMisconfigured:
    """Unreachable (no answer: the policy decides) or misconfigured (the server answered, or
    the URL is unusable: always refused, whatever the policy — a wrong database name must not
    let cartridges through unchecked)."""
    lines = str(exc).strip().splitlines()
    first = lines[0] if lines else type(exc).__name__
    if isinstance(exc, FleetError):  # the schema: missing, or newer than this code
        return RegistryMisconfigured(first)
    if isinstance(exc, OSError):
        return RegistryUnavailable(first)
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate is not None:
        return (RegistryUnavailable if sqlstate[:2] in _TRANSIENT else RegistryMisconfigured)(first)
    text = str(exc)
    if "FATAL:" in text or "connection is bad: invalid" in text or "invalid " in first:
        return RegistryMisconfigured(first)  # the server refused us, or libpq refused the URL
    return RegistryUnavailable(first)


@dataclass(frozen=True, slots=True)
class PostgresRegistry:
    """The registry in the fleet database at ``dsn`` (a ``postgresql://`` URL)."""

    dsn: str

    async def claim(self, mount: Mount) -> Verdict:
        params = {
            "lot": mount.lot,
            "cartridge_id": mount.cartridge_id,
            "serial": mount.serial,
            "site": mount.site,
        }
        try:
            connect = psycopg.AsyncConnection.connect(self.dsn, connect_timeout=CONNECT_TIMEOUT_S)
            async with await connect as conn:
                await check_schema_async(conn)
                async with conn.transaction():
                    return await _claim(conn, params)
        except (psycopg.Error, OSError, FleetError) as exc:
            raise classify(exc) from exc


async def _claim(conn: psycopg.AsyncConnection[Any], params: dict[str, Any]) -> Verdict:
    cur = await conn.execute(_RECALLED, params)
    recalled = await cur.fetchone()
    if recalled is not None:
        return Recalled(recalled[0], recalled[1], recalled[2])
    elsewhere = await _ingested_elsewhere(conn, params)
    if elsewhere is not None:
        return elsewhere
    await conn.execute(_CLAIM, params)
    cur = await conn.execute(_HOLDER, params)
    holder = await cur.fetchone()
    assert holder is not None  # inserted or already there, in this transaction
    if holder[0] != params["serial"]:
        return UsedElsewhere(holder[0], holder[1], holder[2])
    return Claim()


async def _ingested_elsewhere(
    conn: psycopg.AsyncConnection[Any], params: dict[str, Any]
) -> UsedElsewhere | None:
    """The cartridge in another pen's published history (a bench that ran it without asking
    the registry first: an older host, or one allowed through while the registry was down)."""
    cur = await conn.execute(_INGESTED, params)
    row = await cur.fetchone()
    return None if row is None else UsedElsewhere(row[0], row[1], row[2])


# the ingested history (host/fleet/migrations): cartridge mounts and runs published by bridges
_INGESTED = """
SELECT pen_serial, site, first_seen FROM cartridge_uses
WHERE lot = %(lot)s AND cartridge_id = %(cartridge_id)s AND pen_serial <> %(serial)s
ORDER BY first_seen LIMIT 1
"""


@dataclass(frozen=True, slots=True)
class RecallResult:
    lot: str
    reason: str
    recalled_by: str
    recalled_at: datetime
    already: bool  # the lot was recalled before (the first recall is kept)
    pens: list[str]  # pens with a cartridge of the lot on record


def check_lot(lot: str) -> str:
    """A lot as a cartridge's tag carries it (1–12 printable ASCII characters, no spaces at
    either end): a recall of ``"L2612 "`` would block nothing and say it blocked a lot."""
    if not (1 <= len(lot) <= 12 and lot.isascii() and lot.isprintable() and lot == lot.strip()):
        raise InvalidInput(
            f"lot {lot!r} is not a cartridge lot: 1–12 printable ASCII characters without "
            "spaces at either end, exactly as printed on the cartridge"
        )
    return lot


async def recall_lot(dsn: str, lot: str, reason: str, by: str) -> RecallResult:
    """Block ``lot`` fleet-wide (idempotent: a second recall keeps the first's record)."""
    check_lot(lot)
    if len(reason.strip()) < 5:
        raise InvalidInput(
            "a recall needs a reason of at least 5 characters (it is shown at every refused run)"
        )
    connect = psycopg.AsyncConnection.connect(dsn, connect_timeout=CONNECT_TIMEOUT_S)
    async with await connect as c:
        await check_schema_async(c)
        async with c.transaction():
            cur = await c.execute(
                "INSERT INTO recalled_lots (lot, reason, recalled_by) VALUES (%s, %s, %s) "
                "ON CONFLICT (lot) DO NOTHING RETURNING recalled_at",
                (lot, reason.strip(), by),
            )
            fresh = await cur.fetchone()
            cur = await c.execute(_RECALLED, {"lot": lot})
            row = await cur.fetchone()
            assert row is not None
            cur = await c.execute(
                "SELECT DISTINCT pen_serial FROM cartridge_uses WHERE lot = %s "
                "UNION SELECT pen_serial FROM cartridge_claims WHERE lot = %s ORDER BY 1",
                (lot, lot),
            )
            pens = [r[0] for r in await cur.fetchall()]
    return RecallResult(lot, row[0], row[2], row[1], fresh is None, pens)


async def lot_trace(dsn: str, lot: str) -> list[dict[str, Any]]:
    """Every use of a lot's cartridges on record: which pen, site, cartridge, sessions and
    runs, first and last seen — what a recall or an infection investigation asks first."""
    check_lot(lot)
    async with await psycopg.AsyncConnection.connect(dsn, connect_timeout=CONNECT_TIMEOUT_S) as c:
        await check_schema_async(c)
        cur = await c.execute(_TRACE, {"lot": lot})
        columns = [d.name for d in cur.description or ()]
        return [dict(zip(columns, row, strict=True)) for row in await cur.fetchall()]


_TRACE = """
SELECT u.site, u.pen_serial, u.cartridge_id, u.first_seen, u.last_seen, u.runs, u.strokes,
       u.sessions
FROM cartridge_trace u WHERE u.lot = %(lot)s
ORDER BY u.site, u.pen_serial, u.cartridge_id
"""


def guard_from_env(env: Mapping[str, str] | None = None) -> CartridgeGuard | None:
    """The guard a bench configured: ``MICROPEN_REGISTRY`` (a postgresql:// URL, no password
    in it), ``MICROPEN_SITE`` (a topic level), ``MICROPEN_REGISTRY_UNREACHABLE`` (refuse, or
    allow:REASON). Unset or empty: no registry. Anything else malformed: InvalidInput."""
    env = os.environ if env is None else env
    raw = env.get("MICROPEN_REGISTRY", "")
    if not raw:
        return None
    dsn = raw.strip()
    if not dsn:
        raise InvalidInput(
            "MICROPEN_REGISTRY is blank; set it to the fleet database "
            "(postgresql://bench@fleet-db/micropen), or unset it to run without the registry"
        )
    check_dsn(dsn, "MICROPEN_REGISTRY")
    site = env.get("MICROPEN_SITE", "").strip()
    if not site:
        raise InvalidInput(
            "MICROPEN_REGISTRY is set but MICROPEN_SITE is not; name this bench's site"
        )
    check_level("MICROPEN_SITE", site)
    policy = UnreachablePolicy.parse(env.get("MICROPEN_REGISTRY_UNREACHABLE", "refuse"))
    return CartridgeGuard(PostgresRegistry(dsn), site=site, policy=policy)
