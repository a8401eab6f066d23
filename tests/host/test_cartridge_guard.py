"""The host asks the fleet registry about the mounted cartridge before every run (hazard 4).

These drive two simulated pens through :class:`AsyncPen` with a registry kept in memory (the
protocol the PostgreSQL registry implements; that one is tested against a real server in
tests/fleet/test_fleet_registry.py): what the host refuses, what it logs, and the policy when
the registry cannot be asked."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from micropen.host import AsyncPen
from micropen.host.cartridge_guard import (
    CartridgeGuard,
    CartridgeRefused,
    Claim,
    Mount,
    Recalled,
    RegistryUnavailable,
    UnreachablePolicy,
    UsedElsewhere,
    Verdict,
)
from micropen.host.errors import InvalidInput, PenNotReady
from micropen.host.treatment_log import TreatmentLog
from micropen.protocol.messages import RunOutcome

LOT = "L2612-07"
SHARED = 0x00C0FFEE


class MemoryRegistry:
    """First pen to claim a cartridge keeps it; recalled lots refuse everything."""

    def __init__(self) -> None:
        self.claims: dict[tuple[str, int], Mount] = {}
        self.recalled: dict[str, Recalled] = {}
        self.down = False
        self.asked = 0

    async def claim(self, mount: Mount) -> Verdict:
        self.asked += 1
        if self.down:
            raise RegistryUnavailable("connection refused")
        if mount.lot in self.recalled:
            return self.recalled[mount.lot]
        holder = self.claims.setdefault((mount.lot, mount.cartridge_id), mount)
        if holder.serial != mount.serial:
            return UsedElsewhere(holder.serial, holder.site, datetime(2026, 12, 6, tzinfo=UTC))
        return Claim()


async def _open(seed: int, registry: MemoryRegistry, log: Path, **policy: str) -> AsyncPen:
    guard = CartridgeGuard(registry, site="clinic-1", policy=UnreachablePolicy(**policy))
    pen = await AsyncPen.open(f"sim://?seed={seed}", log=log, cartridge_guard=guard)
    transport: Any = pen.transport
    transport.pen.mount_cartridge(SHARED, LOT, 20_400, 20_900, transport.now())
    return pen


def _host_events(log_path: Path) -> list[tuple[str, str]]:
    with TreatmentLog(log_path) as log:
        sessions = log.sessions()
        return [
            (e.code, e.detail)
            for s in sessions
            for e in log.session(s.id).events
            if e.kind == "host"
        ]


async def test_a_cartridge_used_on_one_pen_is_refused_on_another(tmp_path: Path) -> None:
    registry = MemoryRegistry()
    log = tmp_path / "log.sqlite"
    first, second = await _open(1, registry, log), await _open(2, registry, log)
    try:
        report = await first.run(depth_mm=0.5, rate_sps=90, area="forehead", strokes=100)
        assert report.outcome is RunOutcome.COMPLETED and report.strokes == 100
        with pytest.raises(CartridgeRefused) as refused:
            await second.run(depth_mm=0.5, rate_sps=90, area="forehead", strokes=100)
        assert isinstance(refused.value, PenNotReady) and refused.value.reason == "used_elsewhere"
        assert f"used on pen {first.identity.serial}" in str(refused.value)  # type: ignore[union-attr]
        assert "mount a new sterile cartridge" in str(refused.value)
        assert (await second.status()).state.name == "IDLE"  # nothing ran
        # the first pen's next run with its own cartridge is fine
        again = await first.run(depth_mm=0.5, rate_sps=90, area="forehead", strokes=10)
        assert again.strokes == 10
    finally:
        await asyncio.gather(first.close(), second.close())
    codes = [code for code, _ in _host_events(log)]
    assert codes.count("fleet_cartridge_used_elsewhere") == 1


async def test_a_recalled_lot_is_refused_and_logged(tmp_path: Path) -> None:
    registry = MemoryRegistry()
    registry.recalled[LOT] = Recalled("sterility breach", datetime(2026, 12, 1, tzinfo=UTC), "qa")
    log = tmp_path / "log.sqlite"
    pen = await _open(3, registry, log)
    try:
        with pytest.raises(CartridgeRefused, match="recalled lot .*sterility breach"):
            await pen.run(depth_mm=0.5, rate_sps=90, area="forehead", strokes=100)
    finally:
        await pen.close()
    assert [c for c, _ in _host_events(log)] == ["fleet_lot_recalled"]


async def test_unreachable_registry_refuses_by_default(tmp_path: Path) -> None:
    registry = MemoryRegistry()
    registry.down = True
    log = tmp_path / "log.sqlite"
    pen = await _open(4, registry, log)
    try:
        with pytest.raises(CartridgeRefused, match="unreachable .*policy is to refuse") as exc:
            await pen.run(depth_mm=0.5, rate_sps=90, area="forehead", strokes=100)
        assert exc.value.reason == "registry_unreachable"
    finally:
        await pen.close()
    assert [c for c, _ in _host_events(log)] == ["fleet_registry_unreachable_refused"]


async def test_unreachable_registry_allowed_by_policy_logs_the_reason(tmp_path: Path) -> None:
    registry = MemoryRegistry()
    registry.down = True
    log = tmp_path / "log.sqlite"
    pen = await _open(5, registry, log, action="allow", reason="clinic network outage, ticket 42")
    try:
        report = await pen.run(depth_mm=0.5, rate_sps=90, area="forehead", strokes=50)
        assert report.strokes == 50
    finally:
        await pen.close()
    [(code, detail)] = _host_events(log)
    assert code == "fleet_registry_unreachable_allowed"
    assert "clinic network outage, ticket 42" in detail and f"{SHARED:08X}" in detail


async def test_a_registry_slower_than_its_timeout_counts_as_unreachable(tmp_path: Path) -> None:
    class Stuck(MemoryRegistry):
        async def claim(self, mount: Mount) -> Verdict:
            await asyncio.sleep(3600)
            raise AssertionError("unreachable")

    guard = CartridgeGuard(Stuck(), site="s", timeout_s=5.0)
    seen: list[str] = []
    with pytest.raises(CartridgeRefused, match="unreachable"):
        await guard.admit("SIM-1", SHARED, LOT, lambda code, *_: seen.append(code))
    assert seen == ["fleet_registry_unreachable_refused"]


def test_the_policy_is_explicit() -> None:
    assert UnreachablePolicy().action == "refuse"
    assert (
        UnreachablePolicy.parse("allow:network down, ticket 7").reason == "network down, ticket 7"
    )
    with pytest.raises(InvalidInput, match="needs a reason"):
        UnreachablePolicy.parse("allow")
    with pytest.raises(InvalidInput, match="neither 'refuse' nor 'allow'"):
        UnreachablePolicy.parse("ignore")
