"""`micropen fleet report` and the lot trace over a real PostgreSQL, filled the way a fleet is:
a bench's history exported (the same rows the bridges publish), and a second bench asking the
registry about a cartridge the first one used without asking."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from micropen.host import AsyncPen
from micropen.host.calibration.records import RecordStore
from micropen.host.cartridge_guard import CartridgeGuard, CartridgeRefused
from micropen.host.fleet.export import export_history
from micropen.host.fleet.migrate import migrate
from micropen.host.fleet.registry import PostgresRegistry, lot_trace
from micropen.host.fleet.report import fleet_report

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "calibration"))
from _cal_helpers import make_record

pytestmark = pytest.mark.looptime(False)  # real database I/O: the wall clock

LOT, CARTRIDGE = "L2612-31", 0x0BADCAFE


def _mount(pen: AsyncPen) -> None:
    transport: Any = pen.transport
    transport.pen.mount_cartridge(CARTRIDGE, LOT, 20_400, 20_900, transport.now())


@pytest.fixture
async def fleet(tmp_path: Path, fleet_db: str) -> tuple[str, str]:
    """Bench A's history in the fleet database: a session of two runs (65 strokes) with
    the shared cartridge, an override and a passed calibration 100 days ago. Returns the
    database and A's serial."""
    migrate(fleet_db)
    log = tmp_path / "bench-a.sqlite"
    async with await AsyncPen.open("sim://?seed=31", log=log, command_timeout=5) as pen:
        _mount(pen)
        await pen.set_depth(1.8, area="cheeks", override_reason="physician order 12")
        await pen.run(depth_mm=0.5, rate_sps=90, area="forehead", strokes=40)
        await pen.run(depth_mm=0.6, rate_sps=70, area="forehead", strokes=25)
        assert pen.identity is not None
        serial = pen.identity.serial
    store_path = tmp_path / "calibration.sqlite"
    store = RecordStore(store_path)
    started = datetime.now(UTC) - timedelta(days=100)
    record = make_record(serial=serial, started=started, interval_days=365)
    store.begin(record)
    store.finish(record)
    export_history([log, store_path], fleet_db, site="clinic-1")
    return fleet_db, serial


async def test_the_report_counts_what_each_pen_did(fleet: tuple[str, str]) -> None:
    dsn, serial = fleet
    [pen] = fleet_report(dsn)
    assert (pen.site, pen.serial) == ("clinic-1", serial)
    assert (pen.sessions, pen.runs, pen.strokes) == (1, 2, 65)
    assert (pen.cartridges, pen.faults, pen.overrides) == (1, 0, 1)
    calibration = pen.calibration.to_dict()
    assert calibration["state"] == "ok" and calibration["days_left"] in (264, 265)
    assert fleet_report(dsn, site="elsewhere") == []


async def test_a_cartridge_used_without_the_registry_is_still_refused_elsewhere(
    fleet: tuple[str, str], tmp_path: Path
) -> None:
    dsn, serial = fleet
    guard = CartridgeGuard(PostgresRegistry(dsn), site="clinic-2")
    async with await AsyncPen.open(
        "sim://?seed=32", log=tmp_path / "bench-b.sqlite", cartridge_guard=guard
    ) as other:
        _mount(other)
        with pytest.raises(CartridgeRefused, match=f"used on pen {serial} \\(site clinic-1\\)"):
            await other.run(depth_mm=0.5, rate_sps=90, area="forehead", strokes=10)
    [use] = await lot_trace(dsn, LOT)
    assert (use["pen_serial"], use["cartridge_id"], use["runs"], use["strokes"]) == (
        serial,
        CARTRIDGE,
        2,
        65,
    )
    assert len(use["sessions"]) == 1


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "micropen.tools.cli", "fleet", *args]
    wide = {**os.environ, "COLUMNS": "160"}  # the table unwrapped, as on a bench's terminal
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=wide)


async def test_report_on_the_command_line(fleet: tuple[str, str]) -> None:
    dsn, serial = fleet
    as_json = _cli("report", "--db", dsn, "--json")
    assert as_json.returncode == 0, as_json.stderr
    [pen] = json.loads(as_json.stdout)["pens"]
    assert pen["serial"] == serial and pen["strokes"] == 65
    due = date.fromisoformat(pen["calibration"]["due"])
    assert due == (datetime.now(UTC) - timedelta(days=100)).date() + timedelta(days=365)
    rows = list(csv.DictReader(io.StringIO(_cli("report", "--db", dsn, "--csv").stdout)))
    assert rows[0]["serial"] == serial and rows[0]["calibration"] == "ok"
    table = _cli("report", "--db", dsn)
    assert serial in table.stdout and "65" in table.stdout


async def test_a_pen_moved_between_sites_has_a_row_at_each(
    fleet: tuple[str, str], tmp_path: Path
) -> None:
    """The report credited every run to the site a pen was first seen at."""
    dsn, serial = fleet
    log = tmp_path / "bench-a-after-the-move.sqlite"
    async with await AsyncPen.open("sim://?seed=31", log=log, command_timeout=5) as pen:
        await pen.run(depth_mm=0.5, rate_sps=90, area="forehead", strokes=7)
    export_history([log], dsn, site="clinic-2")
    rows = {(p.site, p.serial): (p.runs, p.strokes) for p in fleet_report(dsn)}
    assert rows == {("clinic-1", serial): (2, 65), ("clinic-2", serial): (1, 7)}
    [moved] = fleet_report(dsn, site="clinic-2")
    assert moved.runs == 1 and moved.calibration.state.value == "ok"  # the pen's, wherever


async def test_a_record_with_an_absurd_time_does_not_take_the_report_down(
    fleet: tuple[str, str],
) -> None:
    dsn, serial = fleet
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE runs SET at = 1e300")
        conn.execute("UPDATE sessions SET started_at = 1e300")
        conn.execute("UPDATE events SET at = 1e300")
        conn.execute("UPDATE overrides SET at = 1e300")
        conn.execute("UPDATE cartridge_mounts SET at = 1e300")
        conn.execute("UPDATE calibration_records SET at = 1e300")
    [pen] = fleet_report(dsn)
    assert pen.serial == serial and pen.runs == 2 and pen.last_seen is None
