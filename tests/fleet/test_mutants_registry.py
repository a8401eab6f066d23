"""The fleet cartridge registry in PostgreSQL (hazard 4), boundary by boundary.

Written to kill the mutants of host/fleet/registry.py that tests/fleet/test_fleet_registry.py
let survive (docs/safety.md (c)): what each verdict reports, a claim that loses a race to a
transaction still open, the history other benches published, the 3 s connect timeout, the
recall's lot and reason rules and what it returns, the bench's environment.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from micropen.host.cartridge_guard import (
    Claim,
    Mount,
    Recalled,
    RegistryUnavailable,
    UsedElsewhere,
)
from micropen.host.errors import InvalidInput
from micropen.host.fleet.migrate import migrate
from micropen.host.fleet.registry import PostgresRegistry, guard_from_env, recall_lot

LOT = "L2612-07"
CARTRIDGE = 0x00C0FFEE

pytestmark = pytest.mark.looptime(False)  # real database I/O: the wall clock


@pytest.fixture
def registry_db(fleet_db: str) -> str:
    """A fleet database with every migration applied."""
    migrate(fleet_db)
    return fleet_db


def _claims(dsn: str) -> list[tuple[str, str]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT pen_serial, site FROM cartridge_claims ORDER BY 1").fetchall()


async def test_a_recalled_lot_reports_its_reason_time_and_who_recalled_it(
    registry_db: str,
) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    recall = await recall_lot(registry_db, LOT, "  sterility breach at the supplier ", "qa-lead")
    assert (recall.lot, recall.reason, recall.recalled_by) == (
        LOT,
        "sterility breach at the supplier",  # stored without the surrounding blanks
        "qa-lead",
    )
    assert before <= recall.recalled_at <= datetime.now(UTC) + timedelta(seconds=1)
    assert not recall.already and recall.pens == []  # nothing of the lot on record yet
    verdict = await PostgresRegistry(registry_db).claim(Mount("SIM-1", "s", 7, LOT))
    assert verdict == Recalled("sterility breach at the supplier", recall.recalled_at, "qa-lead")
    assert _claims(registry_db) == []  # a recalled cartridge is not claimed


async def test_a_second_recall_keeps_the_first_ones_record(registry_db: str) -> None:
    first = await recall_lot(registry_db, LOT, "sterility breach at the supplier", "qa-lead")
    again = await recall_lot(registry_db, LOT, "a second reason", "someone else")
    assert again.already
    assert (again.reason, again.recalled_by, again.recalled_at) == (
        "sterility breach at the supplier",
        "qa-lead",
        first.recalled_at,
    )


@pytest.mark.parametrize("lot", ["L", "L2612-07-ABC"])  # 1 and 12 characters
async def test_a_lot_of_1_to_12_characters_can_be_recalled(registry_db: str, lot: str) -> None:
    assert not (await recall_lot(registry_db, lot, "sterility breach", "qa")).already


@pytest.mark.parametrize("lot", ["", "   ", "L2612-07-ABCD"])  # blank, 13 characters
async def test_a_lot_that_is_blank_or_over_12_characters_is_refused(lot: str) -> None:
    with pytest.raises(InvalidInput, match=r"is not a cartridge lot: 1–12 printable ASCII"):
        await recall_lot("postgresql://nowhere/none", lot, "sterility breach", "qa")


@pytest.mark.parametrize("reason", ["abcd", "  abcd  ", "\t\t\t\t\t\t"])
async def test_a_recall_reason_under_5_characters_is_refused(reason: str) -> None:
    with pytest.raises(InvalidInput, match="a recall needs a reason of at least 5 characters"):
        await recall_lot("postgresql://nowhere/none", LOT, reason, "qa")


async def test_a_recall_reason_of_5_characters_is_enough(registry_db: str) -> None:
    assert (await recall_lot(registry_db, LOT, " abcde ", "qa")).reason == "abcde"


async def test_a_recall_lists_every_pen_with_a_cartridge_of_the_lot(registry_db: str) -> None:
    registry = PostgresRegistry(registry_db)
    for serial, cartridge in (("SIM-3", 9), ("SIM-1", 7), ("SIM-1", 8)):
        assert await registry.claim(Mount(serial, "s", cartridge, LOT)) == Claim()
    assert await registry.claim(Mount("SIM-2", "s", 7, "OTHER-LOT")) == Claim()
    recall = await recall_lot(registry_db, LOT, "sterility breach", "qa")
    assert recall.pens == ["SIM-1", "SIM-3"]  # each once, sorted; the other lot's pen is not


async def test_a_claim_reports_the_first_pen_its_site_and_since_when(registry_db: str) -> None:
    registry = PostgresRegistry(registry_db)
    before = datetime.now(UTC) - timedelta(seconds=1)
    assert await registry.claim(Mount("SIM-5", "clinic-1", CARTRIDGE, LOT)) == Claim()
    assert await registry.claim(Mount("SIM-5", "clinic-1", CARTRIDGE, LOT)) == Claim()  # again
    used = await registry.claim(Mount("SIM-9", "clinic-2", CARTRIDGE, LOT))
    assert isinstance(used, UsedElsewhere)
    assert (used.serial, used.site) == ("SIM-5", "clinic-1")
    assert before <= used.since <= datetime.now(UTC) + timedelta(seconds=1)
    # the same id in another lot is another cartridge
    assert await registry.claim(Mount("SIM-9", "clinic-2", CARTRIDGE, "OTHER-LOT")) == Claim()


@pytest.mark.parametrize("winner", ["SIM-000050"])
@pytest.mark.parametrize("loser", ["SIM-000001", "SIM-000099"])  # before and after the winner
async def test_a_claim_that_loses_a_race_to_an_open_transaction_is_refused(
    registry_db: str, winner: str, loser: str
) -> None:
    """The other pen's claim is not yet committed when this one starts: the history shows
    nothing, the insert waits for the other transaction, and then finds the cartridge taken."""
    before = datetime.now(UTC) - timedelta(seconds=1)
    other = await psycopg.AsyncConnection.connect(registry_db)
    watch = await psycopg.AsyncConnection.connect(registry_db, autocommit=True)
    try:
        await other.execute(
            "INSERT INTO cartridge_claims (lot, cartridge_id, pen_serial, site) "
            "VALUES (%s, %s, %s, 'clinic-1')",
            (LOT, CARTRIDGE, winner),
        )
        claim = asyncio.create_task(
            PostgresRegistry(registry_db).claim(Mount(loser, "clinic-2", CARTRIDGE, LOT))
        )
        deadline = time.monotonic() + 20
        while not await _waits_for_a_lock(watch):  # the claim's insert is blocked on ours
            assert not claim.done(), claim.result()
            assert time.monotonic() < deadline, "the claim never reached its insert"
            await asyncio.sleep(0.02)
        await other.commit()
        verdict = await asyncio.wait_for(claim, 20)
    finally:
        await asyncio.gather(other.close(), watch.close())
    assert isinstance(verdict, UsedElsewhere)
    assert (verdict.serial, verdict.site) == (winner, "clinic-1")
    assert before <= verdict.since <= datetime.now(UTC)  # when the winner claimed it
    assert _claims(registry_db) == [(winner, "clinic-1")]


async def _waits_for_a_lock(conn: psycopg.AsyncConnection[tuple[object, ...]]) -> bool:
    cur = await conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND datname = current_database()"
    )
    row = await cur.fetchone()
    return row is not None and row[0] == 1


def _published(dsn: str, serial: str, site: str, at: float, cartridge: int = CARTRIDGE) -> None:
    """A cartridge mount another bench's bridge published (the ingest's table)."""
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO sites (site) VALUES (%s) ON CONFLICT DO NOTHING", (site,))
        conn.execute(
            "INSERT INTO pens (serial, site) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (serial, site),
        )
        conn.execute(
            "INSERT INTO cartridge_mounts (record_id, serial, site, boot_id, action, "
            "cartridge_id, lot, run_id, at, payload) "
            "VALUES (%s, %s, %s, 1, 'mount', %s, %s, 0, %s, '{}')",
            (f"{serial}-{cartridge}-{at}", serial, site, cartridge, LOT, at),
        )


async def test_a_cartridge_another_bench_published_is_refused_and_not_claimed(
    registry_db: str,
) -> None:
    first_use = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    _published(registry_db, "SIM-7", "clinic-3", first_use.timestamp() + 3600)
    _published(registry_db, "SIM-6", "clinic-2", first_use.timestamp())  # the earliest
    registry = PostgresRegistry(registry_db)
    verdict = await registry.claim(Mount("SIM-1", "clinic-1", CARTRIDGE, LOT))
    assert verdict == UsedElsewhere("SIM-6", "clinic-2", first_use)
    assert _claims(registry_db) == []
    # a pen that published it is refused too: another pen used it as well
    again = await registry.claim(Mount("SIM-6", "clinic-2", CARTRIDGE, LOT))
    assert again == UsedElsewhere("SIM-7", "clinic-3", first_use + timedelta(hours=1))
    # a cartridge only this pen published is its own; the lot's other cartridges are free
    _published(registry_db, "SIM-6", "clinic-2", first_use.timestamp(), CARTRIDGE + 1)
    assert await registry.claim(Mount("SIM-6", "clinic-2", CARTRIDGE + 1, LOT)) == Claim()
    assert await registry.claim(Mount("SIM-1", "clinic-1", CARTRIDGE + 2, LOT)) == Claim()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A loopback port that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


async def test_a_database_that_does_not_answer_is_given_up_after_3_s(silent_server: int) -> None:
    registry = PostgresRegistry(f"postgresql://postgres@127.0.0.1:{silent_server}/micropen")
    start = time.monotonic()
    with pytest.raises(RegistryUnavailable) as down:
        await asyncio.wait_for(registry.claim(Mount("SIM-1", "s", 7, LOT)), 30)
    elapsed = time.monotonic() - start
    assert 2.9 <= elapsed < 3.9, f"gave up after {elapsed:.2f} s; the connect timeout is 3 s"
    assert str(down.value) == "connection timeout expired"


async def test_an_unreachable_registry_says_why_in_one_line(tmp_path: object) -> None:
    registry = PostgresRegistry(f"postgresql://postgres@/none?host={tmp_path}")
    with pytest.raises(RegistryUnavailable) as down:
        await registry.claim(Mount("SIM-1", "s", 7, LOT))
    text = str(down.value)
    assert "connection" in text and "\n" not in text and text == text.strip()
    assert isinstance(down.value.__cause__, psycopg.OperationalError)


def test_without_a_mapping_the_guard_reads_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MICROPEN_REGISTRY", " postgresql://bench@fleet-db/micropen ")
    monkeypatch.setenv("MICROPEN_SITE", " clinic-1 ")
    monkeypatch.delenv("MICROPEN_REGISTRY_UNREACHABLE", raising=False)
    guard = guard_from_env()
    assert guard is not None and guard.site == "clinic-1"
    assert isinstance(guard.registry, PostgresRegistry)
    assert guard.registry.dsn == "postgresql://bench@fleet-db/micropen"
    assert guard.policy.action == "refuse"  # the default when nothing is said
    assert guard_from_env({}) is None  # a mapping given is the whole environment


def test_a_blank_registry_and_a_blank_site_are_refused() -> None:
    assert guard_from_env({"MICROPEN_REGISTRY": "", "MICROPEN_SITE": "clinic-1"}) is None
    with pytest.raises(InvalidInput, match="MICROPEN_REGISTRY is blank"):  # not silently off
        guard_from_env({"MICROPEN_REGISTRY": "   ", "MICROPEN_SITE": "clinic-1"})
    assert guard_from_env({"MICROPEN_REGISTRY": "postgres://x/y", "MICROPEN_SITE": "s"})
    with pytest.raises(InvalidInput, match="MICROPEN_SITE is not; name this bench's site"):
        guard_from_env({"MICROPEN_REGISTRY": "postgresql://x/y", "MICROPEN_SITE": "  "})


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (ConnectionResetError(104, "Connection reset by peer\nsecond line"), "[Errno 104]"),
        (ConnectionResetError(), "ConnectionResetError"),  # no message: its kind
        (psycopg.OperationalError(""), "OperationalError"),
    ],
)
async def test_a_network_error_of_any_kind_is_an_unreachable_registry(
    monkeypatch: pytest.MonkeyPatch, error: Exception, says: str
) -> None:
    """Whatever the driver lets through from the network (psycopg 3.3 wraps most OS errors;
    older versions and other paths do not) is "unreachable", which the policy decides on —
    never an exception that ends the run's caller."""

    async def connect(*args: object, **kwargs: object) -> object:
        raise error

    monkeypatch.setattr(psycopg.AsyncConnection, "connect", connect)
    with pytest.raises(RegistryUnavailable) as down:
        await PostgresRegistry("postgresql://fleet-db/micropen").claim(Mount("S", "s", 7, LOT))
    assert str(down.value).startswith(says) and "\n" not in str(down.value)
    assert down.value.__cause__ is error


async def test_a_registry_and_a_recall_result_cannot_be_altered(registry_db: str) -> None:
    recall = await recall_lot(registry_db, LOT, "sterility breach", "qa")
    for value, name in ((PostgresRegistry(registry_db), "dsn"), (recall, "already")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, name, "postgresql://elsewhere/db")
