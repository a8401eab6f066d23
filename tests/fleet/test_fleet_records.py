"""Fleet records (issue 15 part 1): versioned payloads with natural keys, committed to the
outbox before the pen's record is acknowledged, and published to the broker."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from _fleet_helpers import ADMIN, FleetBroker, subscribed

from micropen.host import AsyncPen
from micropen.host.connection import ConnectionNotice
from micropen.host.fleet import BridgeConfig, FleetBridge
from micropen.host.fleet import records as R
from micropen.host.fleet.broker import BrokerConfig
from micropen.host.fleet.errors import OutboxError, PayloadError
from micropen.host.fleet.record_outbox import RecordOutbox
from micropen.host.fleet.topics import RECORD_CHANNELS, SCHEMAS, decode, encode, parse_topic
from micropen.host.record_sinks import OverrideRecord, RunStartRecord
from micropen.host.transports.sim import SimTransport
from micropen.protocol.messages import (
    Event,
    EventCode,
    FaultCode,
    FaultReport,
    Identity,
    PenState,
    RunMode,
    RunOutcome,
    RunReport,
)

SITE = "clinic-r"
NOWHERE = BrokerConfig(host="127.0.0.1", port=9, tls=False)  # never connected to


def _identity(serial: str = "PEN-R1", boot: int = 0xB0071) -> Identity:
    return Identity(
        cmd_id=0, protocol_version=1, schema_hash=0, model="MP-12", serial=serial,
        firmware_major=1, firmware_minor=4, firmware_patch=0, hardware_revision=1,
        needle_count=12, capabilities=0, depth_min_um=0, depth_max_um=2500, soft_cap_um=1500,
        rate_min_sps=10, rate_max_sps=120, boot_id=boot,
    )  # fmt: skip


def _every_record() -> list[dict[str, Any]]:
    ident = _identity()
    boot, at = ident.boot_id, 1_700_000_000.5
    report = RunReport(
        run_id=7, outcome=RunOutcome.COMPLETED, mode=RunMode.STROKES, target=500, strokes=500,
        duration_ms=5600, area=1, depth_um=500, rate_sps=90, cartridge_id=4242,
    )  # fmt: skip
    out: list[dict[str, Any]] = [R.session_record(SITE, ident, host_session=0x1234,
                                                  simulated=True, at=at)]  # fmt: skip
    for item in (
        report,
        FaultReport(t_ms=900, fault=FaultCode.STALL, value=812, run_id=7),
        Event(t_ms=100, code=EventCode.CARTRIDGE_MOUNTED, value=4242, run_id=0),
        ConnectionNotice("lost", "cable"),
        OverrideRecord(ident.serial, boot, 1800, "cheeks", "physician order 42", at),
        RunStartRecord(
            ident.serial, boot, 7, "forehead", 500, 90, "STROKES", 500, 4242, "LOT-9", None, at
        ),
    ):
        out += R.from_pen_record(SITE, ident.serial, boot, item, at)
    record = {"record_id": "c0ffee12", "pen": {"serial": ident.serial}, "procedure": "all",
              "outcome": "pass", "committed": True, "started_at": "2026-01-02T03:04:05+00:00",
              "finished_at": "2026-01-02T03:10:00+00:00", "technician": "T", "station": "S",
              "interval_days": 365, "certificate_number": "MP-2026-00001"}  # fmt: skip
    out.append(R.calibration_record(SITE, record, at=at))
    return out


def test_every_record_kind_is_built_with_its_documented_fields() -> None:
    records = _every_record()
    kinds = {R.KIND_OF_SCHEMA[r["schema"]] for r in records}
    assert kinds == set(R.RECORD_KINDS), "each kind is produced by some pen or host record"
    for payload in records:
        kind = R.KIND_OF_SCHEMA[payload["schema"]]
        schema = SCHEMAS[f"records/{kind}"]
        assert schema.required <= payload.keys(), schema.required - payload.keys()
        assert payload.keys() <= schema.all_fields, payload.keys() - schema.all_fields
        assert decode(encode(payload), f"records/{kind}") == payload
        topic = R.record_topic(SITE, payload["serial"], kind)
        assert parse_topic(topic) == (SITE, payload["serial"], f"records/{kind}")
    assert set(RECORD_CHANNELS) == {f"records/{k}" for k in R.RECORD_KINDS}


def test_natural_keys_are_stable_and_name_what_identifies_the_record() -> None:
    first, again = _every_record(), _every_record()
    by_kind = {R.KIND_OF_SCHEMA[r["schema"]]: r for r in first}
    assert by_kind["run"]["id"] == "PEN-R1:000b0071:run:7"
    assert by_kind["run"]["strokes"] == 500, "the pen's exact count"
    assert by_kind["fault"]["id"] == "PEN-R1:000b0071:fault:900:STALL:7:812"
    assert by_kind["session"]["id"] == "PEN-R1:000b0071:session:00001234"
    assert by_kind["calibration"]["id"] == "calibration:c0ffee12"
    assert len(by_kind["calibration"]["record_sha256"]) == 64
    # pen-made records: the same record made again has the same id (a re-send is one row)
    made_by_the_pen = [r for r in first if r.get("pen_t_ms") is not None]
    made_by_the_pen += [r for r in first if r["schema"] == "micropen.run/1"]
    made_by_the_pen += [r for r in first if r.get("action") == "used"]
    stable = {r["id"] for r in made_by_the_pen}
    assert len(stable) == 5
    assert stable <= {r["id"] for r in again}
    cartridges = [r for r in first if r["schema"] == "micropen.cartridge/1"]
    assert {(c["action"], c["cartridge_id"], c["lot"]) for c in cartridges} == {
        ("mounted", 4242, None), ("used", 4242, "LOT-9"),
    }  # fmt: skip
    with pytest.raises(PayloadError, match="another major version"):
        decode(encode({**by_kind["run"], "schema": "micropen.run/2"}), "records/run")


def _sim_of(pen: AsyncPen) -> SimTransport:
    assert isinstance(pen.transport, SimTransport)
    return pen.transport


async def _until(predicate: Any, within: float, what: str) -> None:
    try:
        async with asyncio.timeout(within):
            while not predicate():
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"{what} did not happen within {within} s") from None


async def test_a_full_outbox_leaves_the_pens_record_unacknowledged(tmp_path: Path) -> None:
    """Disk full in the fleet outbox: the run report is NOT acknowledged (the connection ends
    as for a treatment log that cannot write), and the pen hands it to the next session."""
    pen = await AsyncPen.open("sim://?seed=11", log=False, command_timeout=5)
    bridge = FleetBridge(pen, NOWHERE, BridgeConfig(site=SITE, queue_dir=tmp_path / "q"))
    sim = _sim_of(pen).pen
    try:
        await pen.set_depth(0.5)
        await pen.set_rate(90)
        run = asyncio.create_task(pen.run(depth_mm=0.5, rate_sps=90, area="forehead",
                                          strokes=200))  # fmt: skip
        await _until(lambda: sim.state is PenState.RUNNING and sim.physics.phase >= 5, 5.0,
                     "the run delivering strokes")  # fmt: skip
        box = bridge.outbox

        def disk_full(*args: object, **kw: object) -> int:
            raise OutboxError(f"fleet outbox {box.path}: could not store: database or disk is full")

        box.put_many = disk_full  # type: ignore[method-assign]
        with pytest.raises(OutboxError, match="disk is full") as caught:
            async with asyncio.timeout(10):
                await run
        assert "run 1 ended" in str(caught.value), "the error names the unacknowledged report"
        assert bridge.statistics()["outbox_errors"] >= 1
    finally:
        await bridge.close()
        await pen.close()
    # the next host session gets the report again (it was never acknowledged), and a record
    # outbox given to the connection when it is made stores it before acknowledging it
    good = RecordOutbox(BridgeConfig(site=SITE, queue_dir=tmp_path / "good"))
    again = AsyncPen(_sim_of(pen), keys=pen.keys, url="sim://?seed=11", record_sinks=[good])
    await again._start()
    try:

        def runs() -> list[Any]:
            return [e for e in good.outbox.peek(1000) if e.topic.endswith("/records/run")]

        await _until(runs, 5.0, "the unacknowledged run report re-sent and queued")
        [entry] = runs()
    finally:
        await again.close()
        good.close()
    report = decode(entry.payload, "records/run")
    assert (report["run_id"], report["outcome"], report["strokes"]) == (1, "COMPLETED", 200)


async def test_records_reach_the_broker_with_exact_counts(
    fleet_broker: FleetBroker, tmp_path: Path
) -> None:
    pen = await AsyncPen.open("sim://?seed=12", log=False, command_timeout=5)
    assert pen.identity is not None
    serial, boot = pen.identity.serial, pen.identity.boot_id
    admin = fleet_broker.config(ADMIN)
    try:
        async with subscribed(admin, f"micropen/v1/{SITE}/+/records/#") as (_, seen):
            bridge = FleetBridge(
                pen, fleet_broker.config(serial),
                BridgeConfig(site=SITE, queue_dir=tmp_path / "q"),
            )  # fmt: skip
            async with bridge:
                await bridge.wait_connected(10)
                await pen.set_depth(1.8, area="cheeks", override_reason="physician order 42")
                report = await pen.run(depth_mm=0.5, rate_sps=90, area="forehead", strokes=60)
                await bridge.wait_drained(10)

                def kinds(ms: list[Any]) -> set[str]:
                    return {str(m.topic).rsplit("/", 1)[1] for m in ms}

                await seen.wait_for(lambda ms: {"session", "run", "override", "cartridge",
                                                "event"} <= kinds(ms))  # fmt: skip
    finally:
        await pen.close()
    payloads = [json.loads(m.payload) for m in seen.messages]
    [run] = [p for p in payloads if p["schema"] == "micropen.run/1"]
    assert (run["strokes"], run["outcome"], run["id"]) == (
        report.strokes, "COMPLETED", f"{serial}:{boot:08x}:run:{report.run_id}",
    )  # fmt: skip
    assert report.strokes == 60
    [override] = [p for p in payloads if p["schema"] == "micropen.override/1"]
    assert (override["depth_um"], override["reason"]) == (1800, "physician order 42")
    [used] = [p for p in payloads if p["schema"] == "micropen.cartridge/1"
              and p["action"] == "used"]  # fmt: skip
    assert used["run_id"] == report.run_id and used["lot"]
    assert len({p["id"] for p in payloads}) == len(payloads)


async def test_calibration_records_are_queued_once_from_the_store(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "calibration"))
    from _cal_helpers import make_record

    from micropen.host.calibration.records import RecordStore

    pen = await AsyncPen.open("sim://?seed=13", log=False, command_timeout=5)
    assert pen.identity is not None
    store = RecordStore(tmp_path / "calibration.sqlite")
    mine, other = make_record(serial=pen.identity.serial), make_record(serial="SIM-999999")
    for record in (mine, other):
        store.begin(record)
        store.finish(record)
    config = BridgeConfig(site=SITE, queue_dir=tmp_path / "q", calibration_store=store.path)
    bridge = FleetBridge(pen, NOWHERE, config)
    try:
        assert bridge.publish_calibrations() == 1, "this pen's finished record, not the other's"
        [entry] = [e for e in bridge.outbox.peek() if "/records/calibration" in e.topic]
        payload = decode(entry.payload, "records/calibration")
        assert payload["record_id"] == mine.record_id
        assert payload["certificate_number"] == mine.certificate_number
        bridge.outbox.delete(entry.seq)  # delivered
        assert bridge.publish_calibrations() == 0, "a later scan does not queue it again"
    finally:
        await bridge.close()
        await pen.close()
