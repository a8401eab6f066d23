"""The fleet cartridge registry against a real PostgreSQL (hazard 4).

A cartridge used on one simulated pen is refused on another; claims race safely; a recalled
lot is refused everywhere; a registry that cannot be reached refuses by default."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from micropen.host import AsyncPen
from micropen.host.cartridge_guard import (
    CartridgeGuard,
    CartridgeRefused,
    Claim,
    Mount,
    RegistryUnavailable,
    UnreachablePolicy,
    UsedElsewhere,
)
from micropen.host.errors import InvalidInput
from micropen.host.fleet.migrate import migrate
from micropen.host.fleet.postgres import LocalPostgres
from micropen.host.fleet.registry import PostgresRegistry, guard_from_env, recall_lot
from micropen.protocol.messages import RunOutcome

LOT = "L2612-07"
SHARED = 0x00C0FFEE

pytestmark = pytest.mark.looptime(False)  # real database I/O: the wall clock


@pytest.fixture
def registry_db(fleet_db: str) -> str:
    """A fleet database with every migration applied."""
    migrate(fleet_db)
    return fleet_db


async def _pen(seed: int, dsn: str, site: str, log: Path) -> AsyncPen:
    guard = CartridgeGuard(PostgresRegistry(dsn), site=site)
    pen = await AsyncPen.open(f"sim://?seed={seed}", log=log, cartridge_guard=guard)
    transport: Any = pen.transport
    transport.pen.mount_cartridge(SHARED, LOT, 20_400, 20_900, transport.now())
    return pen


async def test_a_cartridge_used_on_one_pen_is_refused_on_another(
    registry_db: str, tmp_path: Path
) -> None:
    first = await _pen(11, registry_db, "clinic-1", tmp_path / "a.sqlite")
    second = await _pen(12, registry_db, "clinic-2", tmp_path / "b.sqlite")
    try:
        report = await first.run(depth_mm=0.5, rate_sps=90, area="forehead", strokes=100)
        assert report.outcome is RunOutcome.COMPLETED
        with pytest.raises(CartridgeRefused, match=r"used on pen .* \(site clinic-1\)"):
            await second.run(depth_mm=0.5, rate_sps=90, area="forehead", strokes=100)
        assert (await second.status()).run_strokes == 0
        # the registry keeps the first pen's claim: its next run goes ahead
        assert (await first.run(depth_mm=0.5, rate_sps=90, area="forehead", strokes=5)).strokes == 5
    finally:
        await asyncio.gather(first.close(), second.close())
    with psycopg.connect(registry_db) as conn:
        rows = conn.execute("SELECT pen_serial, site FROM cartridge_claims").fetchall()
    assert rows == [(first.identity.serial, "clinic-1")]  # type: ignore[union-attr]


async def test_pens_racing_for_one_cartridge_cannot_both_win(registry_db: str) -> None:
    registry = PostgresRegistry(registry_db)
    mounts = [Mount(f"SIM-{i:06d}", "clinic-1", SHARED, LOT) for i in range(12)]
    verdicts = await asyncio.gather(*(registry.claim(m) for m in mounts))
    assert sum(isinstance(v, Claim) for v in verdicts) == 1
    assert sum(isinstance(v, UsedElsewhere) for v in verdicts) == 11


async def test_a_recalled_lot_is_refused_on_every_pen(registry_db: str) -> None:
    registry = PostgresRegistry(registry_db)
    assert isinstance(await registry.claim(Mount("SIM-1", "s", 7, LOT)), Claim)
    first = await recall_lot(registry_db, LOT, "sterility breach at the supplier", "qa-lead")
    assert not first.already and first.pens == ["SIM-1"]
    again = await recall_lot(registry_db, LOT, "a second reason", "someone else")
    assert again.already and again.reason == "sterility breach at the supplier"
    seen: list[str] = []
    guard = CartridgeGuard(registry, site="s")
    for serial, cartridge in (("SIM-1", 7), ("SIM-2", 8)):  # its own claim is no excuse
        with pytest.raises(CartridgeRefused, match="recalled lot .*sterility breach"):
            await guard.admit(serial, cartridge, LOT, lambda code, *_: seen.append(code))
    assert seen == ["fleet_lot_recalled"] * 2
    with pytest.raises(InvalidInput, match="reason of at least 5"):
        await recall_lot(registry_db, "L2", "bad", "qa")


async def test_an_unreachable_registry_refuses_by_default(tmp_path: Path) -> None:
    dsn = f"postgresql://postgres@/none?host={tmp_path}"  # no server there
    with pytest.raises(RegistryUnavailable):
        await PostgresRegistry(dsn).claim(Mount("SIM-1", "s", 7, LOT))
    guard = guard_from_env({"MICROPEN_REGISTRY": dsn, "MICROPEN_SITE": "clinic-1"})
    assert guard is not None and guard.policy.action == "refuse"
    with pytest.raises(CartridgeRefused, match="unreachable"):
        await guard.admit("SIM-1", 7, LOT, lambda *_: None)


def test_the_bench_configures_the_registry_in_its_environment() -> None:
    assert guard_from_env({}) is None
    env = {
        "MICROPEN_REGISTRY": "postgresql://bench@fleet-db/micropen",
        "MICROPEN_SITE": "clinic-1",
        "MICROPEN_REGISTRY_UNREACHABLE": "allow:clinic network outage, ticket 42",
    }
    guard = guard_from_env(env)
    assert guard is not None and guard.site == "clinic-1"
    assert guard.policy.action == "allow" and "ticket 42" in guard.policy.reason
    with pytest.raises(InvalidInput, match="not a postgresql:// URL"):
        guard_from_env({"MICROPEN_REGISTRY": "mysql://x", "MICROPEN_SITE": "s"})
    with pytest.raises(InvalidInput, match="MICROPEN_SITE is not"):
        guard_from_env({"MICROPEN_REGISTRY": "postgresql://x/y"})


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "micropen.tools.cli", "fleet", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_recall_and_trace_from_the_command_line(registry_db: str) -> None:
    registry = PostgresRegistry(registry_db)
    for serial, cartridge in (("SIM-000001", 7), ("SIM-000002", 8)):
        assert isinstance(await registry.claim(Mount(serial, "clinic-1", cartridge, LOT)), Claim)
    done = _cli("recall-lot", LOT, "--reason", "supplier sterility breach", "--db",
                registry_db, "--by", "qa-lead", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    recalled = json.loads(done.stdout)
    assert recalled["pens"] == ["SIM-000001", "SIM-000002"] and not recalled["already_recalled"]
    again = _cli("recall-lot", LOT, "--reason", "again, later", "--db", registry_db)
    assert again.returncode == 0 and "was already recalled" in again.stdout
    assert "supplier sterility breach" in again.stdout
    trace = _cli("trace-lot", LOT, "--db", registry_db, "--json")
    assert trace.returncode == 0, trace.stderr
    uses = json.loads(trace.stdout)["uses"]
    assert [(u["pen_serial"], u["cartridge_id"]) for u in uses] == [
        ("SIM-000001", 7),
        ("SIM-000002", 8),
    ]
    as_csv = _cli("trace-lot", LOT, "--db", registry_db, "--csv")
    assert as_csv.stdout.splitlines()[0].startswith("site,pen_serial,cartridge_id")
    assert len(as_csv.stdout.splitlines()) == 3


def test_the_registry_commands_fail_in_one_line(tmp_path: Path) -> None:
    nowhere = f"postgresql://postgres@/none?host={tmp_path}"
    done = _cli("trace-lot", LOT, "--db", nowhere)
    assert done.returncode == 1 and "cannot reach the fleet database" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    bad = _cli("recall-lot", LOT, "--reason", "short", "--db", "mysql://x/y")
    assert bad.returncode == 2 and "not a postgresql:// URL" in bad.stderr
    short = _cli("recall-lot", LOT, "--reason", "bad", "--db", nowhere)
    assert short.returncode == 2 and "reason of at least 5" in short.stderr


def test_doctor_checks_the_registry_a_bench_is_configured_with(
    registry_db: str, pg_cluster: LocalPostgres, tmp_path: Path
) -> None:
    from micropen.tools.doctor_checks import Status, check_registry

    site = {"MICROPEN_SITE": "clinic-1"}
    assert check_registry({}).status is Status.SKIPPED
    good = check_registry({"MICROPEN_REGISTRY": registry_db, **site})
    assert good.status is Status.OK and "site clinic-1" in good.detail
    empty = pg_cluster.create_database("registry_doctor_empty")
    bare = check_registry({"MICROPEN_REGISTRY": empty, **site})  # no fleet schema there
    assert bare.status is Status.PROBLEM and "fleet db migrate" in bare.fix
    nowhere = f"postgresql://postgres@/none?host={tmp_path}"
    down = check_registry({"MICROPEN_REGISTRY": nowhere, **site})
    assert down.status is Status.PROBLEM and "when unreachable: refuse" in down.detail
    allowed = {"MICROPEN_REGISTRY_UNREACHABLE": "allow:network outage, ticket 9"}
    assert check_registry({"MICROPEN_REGISTRY": nowhere, **site, **allowed}).status is (
        Status.WARNING
    )
    assert check_registry({"MICROPEN_REGISTRY": registry_db}).status is Status.PROBLEM  # no site


# ------------------------------------------------------------------ found by an outside review
@pytest.mark.parametrize("lot", ["L2612-07 ", " L2612-07", "L2612\t", "LÖT1", "", "L" * 13])
async def test_a_recall_of_a_lot_no_cartridge_carries_is_refused(
    registry_db: str, lot: str
) -> None:
    """ "L64067141 " was reported "recalled fleet-wide" and blocked nothing."""
    with pytest.raises(InvalidInput, match="not a cartridge lot"):
        await recall_lot(registry_db, lot, "supplier sterility breach", "qa")
    done = _cli("recall-lot", lot, "--reason", "supplier sterility breach", "--db", registry_db)
    assert done.returncode == 2 and "not a cartridge lot" in done.stderr
    assert _cli("trace-lot", lot, "--db", registry_db).returncode == 2


async def test_a_misconfigured_registry_refuses_whatever_the_policy(
    registry_db: str, pg_cluster: LocalPostgres
) -> None:
    """A database name typo let runs through unchecked under allow:REASON (the policy for an
    *unreachable* registry)."""
    no_database = registry_db.rsplit("/", 1)[0] + "/no_such_database"
    no_schema = pg_cluster.create_database("registry_no_schema")
    with psycopg.connect(registry_db, autocommit=True) as conn:
        conn.execute("CREATE DATABASE registry_newer TEMPLATE " + registry_db.rsplit("/", 1)[1])
    newer = registry_db.rsplit("/", 1)[0] + "/registry_newer"
    with psycopg.connect(newer, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_version (version, name) VALUES (99, 'future')")
    allow = UnreachablePolicy("allow", "clinic network outage, ticket 42")
    for dsn, says in ((no_database, "no_such_database"), (no_schema, "fleet db migrate"),
                      (newer, "upgrade micropen")):  # fmt: skip
        seen: list[str] = []
        guard = CartridgeGuard(PostgresRegistry(dsn), site="clinic-1", policy=allow)
        with pytest.raises(CartridgeRefused, match="misconfigured") as refused:
            await guard.admit("SIM-000001", 7, LOT, lambda code, *_, into=seen: into.append(code))
        assert refused.value.reason == "registry_misconfigured" and says in str(refused.value)
        assert seen == ["fleet_registry_misconfigured"]


async def test_a_newer_fleet_schema_is_refused_by_every_reader(registry_db: str) -> None:
    with psycopg.connect(registry_db, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_version (version, name) VALUES (99, 'future')")
    for args in (("report",), ("trace-lot", LOT), ("recall-lot", LOT, "--reason", "a reason")):
        done = _cli(*args, "--db", registry_db)
        assert done.returncode == 1 and "upgrade micropen" in done.stderr, (args, done.stderr)
    from micropen.tools.doctor_checks import Status, check_registry

    found = check_registry({"MICROPEN_REGISTRY": registry_db, "MICROPEN_SITE": "clinic-1"})
    assert found.status is Status.PROBLEM and "upgrade micropen" in found.fix  # type: ignore[operator]


async def test_the_unreachable_advice_names_the_setting_that_exists(tmp_path: Path) -> None:
    """It named a --registry-unreachable option no command has."""
    guard = CartridgeGuard(PostgresRegistry(f"postgresql://postgres@/none?host={tmp_path}"),
                           site="clinic-1")  # fmt: skip
    with pytest.raises(CartridgeRefused) as refused:
        await guard.admit("SIM-1", 7, LOT, lambda *_: None)
    assert "MICROPEN_REGISTRY_UNREACHABLE='allow:REASON'" in str(refused.value)
    assert "--registry-unreachable" not in str(refused.value)


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"MICROPEN_REGISTRY": " ", "MICROPEN_SITE": "s"}, "is blank"),
        ({"MICROPEN_REGISTRY": "postgresql://bench:secret@db/fleet", "MICROPEN_SITE": "s"},
         "password"),
        ({"MICROPEN_REGISTRY": "postgresql://bench@db/fleet", "MICROPEN_SITE": "a/b"}, "a/b"),
        ({"MICROPEN_REGISTRY": "postgresql://bench@db/fleet", "MICROPEN_SITE": "cl\ninic"},
         "MICROPEN_SITE"),
    ],
)  # fmt: skip
def test_a_malformed_registry_setting_is_refused(env: dict[str, str], says: str) -> None:
    with pytest.raises(InvalidInput, match=says):
        guard_from_env(env)


def test_the_query_commands_refuse_a_password_in_db_and_two_formats() -> None:
    done = _cli("report", "--db", "postgresql://qa:secret@db/fleet")
    assert done.returncode == 2 and "password" in done.stderr
    both = _cli("report", "--db", "postgresql://qa@db/fleet", "--csv", "--json")
    assert both.returncode == 2 and "choose one" in both.stderr
