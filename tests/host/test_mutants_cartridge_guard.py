"""The fleet-wide cartridge check (hazard 4), boundary by boundary.

Written to kill the mutants of host/cartridge_guard.py that tests/host/test_cartridge_guard.py
let survive (docs/safety.md (c)): the 5 s registry timeout, what each refusal logs and says,
the unreachable policy's reason of at least 5 characters, a pen with no cartridge. The guard is
driven directly with a registry kept in memory; the clock is virtual (tests/host/conftest.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from datetime import UTC, datetime

import pytest

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
from micropen.host.errors import InvalidInput

LOT = "L2612-07"
CARTRIDGE = 0x00C0FFEE
Event = tuple[str, int, int, str]


class Answers:
    """A registry that answers ``verdict`` after ``delay_s`` (or fails with ``error``)."""

    def __init__(
        self,
        verdict: Verdict | None = None,
        *,
        delay_s: float = 0.0,
        error: Exception | None = None,
    ) -> None:
        self.verdict = verdict or Claim()
        self.delay_s = delay_s
        self.error = error
        self.asked: list[Mount] = []

    async def claim(self, mount: Mount) -> Verdict:
        self.asked.append(mount)
        await asyncio.sleep(self.delay_s)
        if self.error is not None:
            raise self.error
        return self.verdict


async def _admit(
    guard: CartridgeGuard, cartridge_id: int = CARTRIDGE, lot: str = LOT
) -> list[Event]:
    events: list[Event] = []
    await guard.admit("SIM-000042", cartridge_id, lot, lambda *e: events.append(e))
    return events


async def _refusal(guard: CartridgeGuard, lot: str = LOT) -> tuple[CartridgeRefused, list[Event]]:
    events: list[Event] = []
    with pytest.raises(CartridgeRefused) as refused:
        await guard.admit("SIM-000042", CARTRIDGE, lot, lambda *e: events.append(e))
    return refused.value, events


async def test_a_pen_without_a_cartridge_is_left_to_its_own_check() -> None:
    registry = Answers(UsedElsewhere("SIM-000001", "clinic-2", datetime(2026, 12, 1, tzinfo=UTC)))
    assert await _admit(CartridgeGuard(registry, site="clinic-1"), cartridge_id=0) == []
    assert registry.asked == []  # id 0 is "no cartridge": nothing to claim


async def test_the_registry_is_asked_about_this_pen_at_this_site() -> None:
    registry = Answers()
    assert await _admit(CartridgeGuard(registry, site="clinic-1")) == []  # a claim logs nothing
    assert registry.asked == [Mount("SIM-000042", "clinic-1", CARTRIDGE, LOT)]


async def test_a_registry_answering_within_5_s_is_waited_for() -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await _admit(CartridgeGuard(Answers(delay_s=4.9), site="s")) == []
    assert loop.time() - start == pytest.approx(4.9, abs=0.01)


async def test_a_registry_slower_than_5_s_is_unreachable_and_refused_at_5_s() -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    refused, events = await _refusal(CartridgeGuard(Answers(delay_s=5.1), site="s"))
    assert loop.time() - start == pytest.approx(5.0, abs=0.01)
    assert refused.reason == "registry_unreachable"
    # a timeout has no message of its own: the log names what happened
    assert "fleet cartridge registry is unreachable (TimeoutError)" in str(refused)
    assert [e[0] for e in events] == ["fleet_registry_unreachable_refused"]


async def test_a_cartridge_used_elsewhere_is_named_and_logged_with_its_id() -> None:
    since = datetime(2026, 12, 5, 9, 30, tzinfo=UTC)
    guard = CartridgeGuard(Answers(UsedElsewhere("SIM-000001", "clinic-2", since)), site="c")
    refused, events = await _refusal(guard)
    expected = (
        "cartridge 00C0FFEE of lot L2612-07 was used on pen SIM-000001 (site clinic-2) since "
        "2026-12-05 09:30 UTC: a cartridge is single-use (cross-contamination); mount a new "
        "sterile cartridge"
    )
    assert str(refused) == expected and refused.reason == "used_elsewhere"
    # the event's value is the cartridge; run 0: no run was started
    assert events == [("fleet_cartridge_used_elsewhere", CARTRIDGE, 0, expected)]


async def test_a_recalled_lot_is_named_with_who_recalled_it_when_and_why() -> None:
    recall = Recalled("sterility breach", datetime(2026, 12, 1, 14, 0, tzinfo=UTC), "qa-lead")
    refused, events = await _refusal(CartridgeGuard(Answers(recall), site="c"))
    expected = (
        "cartridge 00C0FFEE of lot L2612-07 belongs to a recalled lot (recalled 2026-12-01 by "
        "qa-lead: sterility breach); mount a cartridge from another lot and set the recalled "
        "ones aside"
    )
    assert str(refused) == expected and refused.reason == "recalled"
    assert events == [("fleet_lot_recalled", CARTRIDGE, 0, expected)]


async def test_a_cartridge_without_a_lot_is_named_as_such() -> None:
    guard = CartridgeGuard(Answers(error=RegistryUnavailable("connection refused")), site="c")
    refused, events = await _refusal(guard, lot="")
    assert "(cartridge 00C0FFEE of lot (none));" in str(refused)
    assert events == [("fleet_registry_unreachable_refused", CARTRIDGE, 0, str(refused))]


async def test_refusing_an_unreachable_registry_says_how_to_go_on() -> None:
    guard = CartridgeGuard(Answers(error=RegistryUnavailable("connection refused")), site="c")
    refused, _ = await _refusal(guard)
    assert str(refused) == (
        "the fleet cartridge registry is unreachable (connection refused), and the policy is to "
        "refuse runs it cannot check (cartridge 00C0FFEE of lot L2612-07); restore the "
        "connection, or set MICROPEN_REGISTRY_UNREACHABLE='allow:REASON' for this bench"
    )


async def test_an_allowed_run_without_the_registry_is_logged_with_its_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    policy = UnreachablePolicy("allow", "network outage, ticket 42")
    guard = CartridgeGuard(Answers(error=RegistryUnavailable("no route")), site="c", policy=policy)
    with caplog.at_level(logging.WARNING, logger="micropen.host.cartridge_guard"):
        events = await _admit(guard)
    detail = (
        "cartridge 00C0FFEE of lot L2612-07 not checked: the fleet registry is unreachable "
        "(no route); allowed by policy: network outage, ticket 42"
    )
    assert events == [("fleet_registry_unreachable_allowed", CARTRIDGE, 0, detail)]
    assert [r.getMessage() for r in caplog.records] == [detail]


async def test_an_allow_policy_read_from_a_benchs_settings_allows() -> None:
    policy = UnreachablePolicy.parse("ALLOW:network outage, ticket 42")  # as typed at a bench
    guard = CartridgeGuard(Answers(error=RegistryUnavailable("no route")), site="c", policy=policy)
    [(code, *_)] = await _admit(guard)
    assert code == "fleet_registry_unreachable_allowed"


async def test_an_allow_policy_does_not_let_a_used_cartridge_through() -> None:
    policy = UnreachablePolicy("allow", "network outage, ticket 42")
    used = UsedElsewhere("SIM-000001", "clinic-2", datetime(2026, 12, 5, tzinfo=UTC))
    refused, _ = await _refusal(CartridgeGuard(Answers(used), site="c", policy=policy))
    assert refused.reason == "used_elsewhere"


@pytest.mark.parametrize("reason", ["abcde", "  ticket  ", "a b c"])
def test_a_reason_of_5_characters_is_enough_to_allow(reason: str) -> None:
    assert UnreachablePolicy("allow", reason).action == "allow"


@pytest.mark.parametrize("reason", ["", "abcd", "  ab d  ", "     \t   "])
def test_a_reason_under_5_characters_is_not(reason: str) -> None:
    with pytest.raises(InvalidInput, match="needs a reason of at least 5 characters"):
        UnreachablePolicy("allow", reason)


def test_refuse_needs_no_reason_and_the_policy_text_is_forgiving() -> None:
    assert UnreachablePolicy("refuse") == UnreachablePolicy.parse(" REFUSE ")
    allow = UnreachablePolicy.parse("Allow : network outage, ticket 42 ")
    assert allow == UnreachablePolicy("allow", "network outage, ticket 42")
    with pytest.raises(InvalidInput, match="'deny' is neither 'refuse' nor 'allow'"):
        UnreachablePolicy.parse("deny")


def test_verdicts_and_policies_cannot_be_altered_once_made() -> None:
    recall = Recalled("sterility breach", datetime(2026, 12, 1, tzinfo=UTC), "qa")
    used = UsedElsewhere("SIM-2", "clinic-2", datetime(2026, 12, 1, tzinfo=UTC))
    mount = Mount("SIM-1", "c", CARTRIDGE, LOT)
    for value, name in (
        (recall, "reason"),
        (used, "serial"),
        (mount, "lot"),
        (UnreachablePolicy(), "action"),
    ):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, name, "allow")


def test_verdicts_are_values() -> None:
    """A registry backend's answer compares by value (and hashes), like any verdict."""
    since = datetime(2026, 12, 1, tzinfo=UTC)
    assert Claim() == Claim() and len({Claim(), Claim()}) == 1
    assert UsedElsewhere("SIM-2", "c", since) == UsedElsewhere("SIM-2", "c", since)
    assert UsedElsewhere("SIM-2", "c", since) != UsedElsewhere("SIM-3", "c", since)
    assert len({Recalled("why?!", since, "qa"), Recalled("why?!", since, "qa")}) == 1


def test_the_site_and_the_policy_must_be_named() -> None:
    """A positional site or policy is refused, so neither can be taken for the other."""
    with pytest.raises(TypeError):
        CartridgeGuard(Answers(), "clinic-1")  # type: ignore[misc]
    assert CartridgeGuard(Answers(), site="clinic-1").policy == UnreachablePolicy("refuse")
