"""The firmware's cartridge rules (hazard 4), boundary by boundary.

Written to kill the mutants of sim/cartridge.py that the firmware-level tests
(tests/sim/test_safety_controls.py, test_safety_hazards.py, test_firmware.py) let survive
(docs/safety.md). The spec's numbers are stated literally: worn out at 250,000 strokes or
30 minutes of needling, a 2-year (730-day) shelf life, refused if re-mounted, expired or unknown.
"""

from __future__ import annotations

import dataclasses

import pytest

from micropen.protocol.errors import LocalProtocolError
from micropen.protocol.messages import CartridgeInfo, CartridgeState, ErrorCode
from micropen.sim.cartridge import Cartridge, CartridgeRecords, CartridgeSlot, Refusal, i32

TODAY = 20_000  # days since the epoch
THIRTY_MIN_MS = 30 * 60 * 1000


def _cart(cid: int = 7, lot: str = "LOT-1", made: int = TODAY - 10, expiry: int = TODAY + 300):
    return Cartridge(cid, lot, made, expiry)


def _slot(cart: Cartridge | None, records: CartridgeRecords | None = None) -> CartridgeSlot:
    slot = CartridgeSlot()
    slot.assess(cart, TODAY, records if records is not None else CartridgeRecords())
    return slot


# ------------------------------------------------------------------ the tag
def test_i32_wraps_u32_values_into_the_signed_field() -> None:
    assert [i32(v) for v in (0, 1, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF, -1)] == [
        0, 1, 0x7FFF_FFFF, -0x8000_0000, -1, -1,
    ]  # fmt: skip
    assert Refusal.of(ErrorCode.CARTRIDGE_USED, 0xFFFF_FFFF, 5) == Refusal(
        ErrorCode.CARTRIDGE_USED, -1, 5
    )
    assert Refusal(ErrorCode.NO_CARTRIDGE) == Refusal(ErrorCode.NO_CARTRIDGE, 0, 0)
    refusal = Refusal.of(ErrorCode.CARTRIDGE_USED, 7)
    with pytest.raises(dataclasses.FrozenInstanceError):
        refusal.value = 0  # type: ignore[misc]


def test_tag_fields_are_checked_at_both_ends() -> None:
    Cartridge(1, "", 0, 0)
    Cartridge(0xFFFF_FFFF, "ABCDEFGHIJKL", 0xFFFF_FFFF, 0xFFFF_FFFF)  # 12 chars of lot
    for cid in (0, 0x1_0000_0000):
        with pytest.raises(LocalProtocolError, match=f"cartridge id {cid} outside 1..4294967295"):
            Cartridge(cid, "L", 0, 0)
    for lot in ("ABCDEFGHIJKLM", "LOT\n1", "LÖT"):
        with pytest.raises(LocalProtocolError, match="must be printable ASCII, ≤ 12 chars"):
            Cartridge(1, lot, 0, 0)
    for made, expiry, name in ((-1, 0, "manufactured_day"), (0, 0x1_0000_0000, "expiry_day")):
        with pytest.raises(LocalProtocolError, match=f"cartridge {name} .* outside 0..4294967295"):
            Cartridge(1, "L", made, expiry)


def test_worn_out_at_250000_strokes_or_30_minutes_whichever_first() -> None:
    assert not Cartridge(
        1, "L", 0, 0, strokes_used=249_999, run_ms_used=THIRTY_MIN_MS - 1
    ).exhausted
    assert Cartridge(1, "L", 0, 0, strokes_used=250_000).exhausted
    assert Cartridge(1, "L", 0, 0, run_ms_used=THIRTY_MIN_MS).exhausted
    assert Cartridge(1, "L", 0, 0, strokes_used=250_001).exhausted
    assert Cartridge(1, "L", 0, 0, run_ms_used=THIRTY_MIN_MS + 1).exhausted


def test_the_shelf_life_caps_the_printed_expiry_at_730_days() -> None:
    assert Cartridge(1, "L", 1000, 5000).effective_expiry_day() == 1730
    assert Cartridge(1, "L", 1000, 1500).effective_expiry_day() == 1500


# ------------------------------------------------------------------ judging a mounted cartridge
def test_a_good_cartridge_is_new_and_reads_back_its_tag() -> None:
    slot = _slot(_cart())
    assert (slot.state, slot.refusal, slot.check_run()) == (CartridgeState.NEW, None, None)
    assert slot.info(3, 0x1_0000_0005, 0x1_0000_0006) == CartridgeInfo(
        3, CartridgeState.NEW, 7, "LOT-1", TODAY - 10, TODAY + 300, 5, 6
    )
    assert (slot.remaining_strokes(), slot.remaining_ms()) == (250_000, float(THIRTY_MIN_MS))


def test_no_cartridge() -> None:
    slot = _slot(_cart())
    slot.assess(None, TODAY, CartridgeRecords())
    assert (slot.state, slot.cartridge, slot.refusal) == (CartridgeState.ABSENT, None, None)
    assert slot.info(4, 9, 9) == CartridgeInfo(4, CartridgeState.ABSENT, 0, "", 0, 0, 0, 0)
    assert slot.check_run() == Refusal(ErrorCode.NO_CARTRIDGE)
    assert (slot.remaining_strokes(), slot.remaining_ms()) == (0, 0.0)
    assert slot.lock(CartridgeRecords()) is False
    slot.add_usage(10, 10.0)  # nothing mounted: nothing to count
    records = CartridgeRecords()
    slot.retire(records)
    assert (slot.state, records.used_ids) == (CartridgeState.ABSENT, set())


@pytest.mark.parametrize(
    ("cart", "refusal"),
    [
        (Cartridge(7, "", TODAY - 10, TODAY + 300), Refusal(ErrorCode.CARTRIDGE_UNKNOWN, 7)),
        (
            Cartridge(7, "L", TODAY + 1, TODAY + 300),  # made tomorrow
            Refusal(ErrorCode.CARTRIDGE_UNKNOWN, TODAY + 1, TODAY),
        ),
        (
            Cartridge(7, "L", TODAY - 10, TODAY - 11),  # expires before it was made
            Refusal(ErrorCode.CARTRIDGE_UNKNOWN, TODAY - 11, TODAY - 10),
        ),
        (
            Cartridge(7, "L", TODAY - 10, TODAY - 1),  # expired yesterday
            Refusal(ErrorCode.CARTRIDGE_EXPIRED, TODAY, TODAY - 1),
        ),
        (
            Cartridge(7, "L", TODAY - 731, TODAY + 300),  # printed date, but past 730 days
            Refusal(ErrorCode.CARTRIDGE_EXPIRED, TODAY, TODAY - 1),
        ),
    ],
)
def test_unknown_and_expired_cartridges_are_refused(cart: Cartridge, refusal: Refusal) -> None:
    slot = _slot(cart)
    assert (slot.state, slot.refusal, slot.check_run()) == (
        CartridgeState.REFUSED,
        refusal,
        refusal,
    )
    assert slot.lock(CartridgeRecords()) is False and slot.state is CartridgeState.REFUSED


def test_made_today_expiring_today_and_exactly_730_days_old_still_run() -> None:
    for cart in (
        Cartridge(7, "L", TODAY, TODAY),
        Cartridge(7, "L", TODAY - 730, TODAY + 300),
    ):
        assert _slot(cart).state is CartridgeState.NEW


def test_a_used_id_is_refused_before_its_dates_are_judged() -> None:
    records = CartridgeRecords(used_ids={7})
    slot = _slot(_cart(expiry=TODAY - 1), records)
    assert slot.refusal == Refusal(ErrorCode.CARTRIDGE_USED, 7)
    unknown_and_used = _slot(Cartridge(7, "", TODAY, TODAY), records)
    assert unknown_and_used.refusal == Refusal(ErrorCode.CARTRIDGE_UNKNOWN, 7)


def test_a_worn_out_tag_is_exhausted_at_mount_and_refused() -> None:
    slot = _slot(Cartridge(7, "L", TODAY - 10, TODAY + 300, strokes_used=250_000))
    assert slot.state is CartridgeState.EXHAUSTED
    assert slot.check_run() == Refusal(ErrorCode.CARTRIDGE_EXHAUSTED, 250_000, 250_000)


def test_the_locked_mounting_is_recognised_across_a_reset() -> None:
    records = CartridgeRecords()
    cart = _cart()
    slot = _slot(cart, records)
    assert slot.lock(records) is True
    assert (slot.state, records.used_ids, records.locked_id) == (CartridgeState.LOCKED, {7}, 7)
    assert slot.lock(records) is False  # locked once per mounting
    after_reset = _slot(cart, records)  # same mounting: not a re-mount, even though used
    assert (after_reset.state, after_reset.refusal) == (CartridgeState.LOCKED, None)
    assert after_reset.check_run() is None
    cart.strokes_used = 250_000
    assert _slot(cart, records).state is CartridgeState.EXHAUSTED
    for cid in (6, 8):  # any other cartridge is judged on its own
        other = _slot(_cart(cid=cid), records)
        assert other.state is CartridgeState.NEW and records.locked_id == 7


def test_the_locked_id_matches_by_value_as_after_reading_it_back_from_nvm() -> None:
    records = CartridgeRecords()
    slot = _slot(_cart(cid=70_000), records)
    slot.lock(records)
    again = Cartridge(int("70000"), "LOT-1", TODAY - 10, TODAY + 300)  # another int object
    assert _slot(again, records).state is CartridgeState.LOCKED


def test_usage_wears_a_locked_cartridge_out_at_exactly_250000_strokes() -> None:
    records = CartridgeRecords()
    slot = _slot(_cart(), records)
    slot.lock(records)
    slot.add_usage(249_999, 1000.0)
    assert slot.state is CartridgeState.LOCKED and slot.check_run() is None
    assert (slot.remaining_strokes(), slot.remaining_ms()) == (1, THIRTY_MIN_MS - 1000.0)
    slot.add_usage(1, 500.0)
    assert slot.cartridge is not None
    assert (slot.cartridge.strokes_used, slot.cartridge.run_ms_used) == (250_000, 1500.0)
    assert slot.state is CartridgeState.EXHAUSTED
    assert slot.check_run() == Refusal(ErrorCode.CARTRIDGE_EXHAUSTED, 250_000, 250_000)
    assert slot.remaining_strokes() == 0
    slot.add_usage(10, 0.0)
    assert slot.remaining_strokes() == 0  # never negative


def test_usage_wears_a_locked_cartridge_out_after_30_minutes() -> None:
    records = CartridgeRecords()
    slot = _slot(_cart(), records)
    slot.lock(records)
    slot.add_usage(100, THIRTY_MIN_MS - 1.0)
    assert slot.state is CartridgeState.LOCKED
    slot.add_usage(0, 1.0)
    assert slot.state is CartridgeState.EXHAUSTED and slot.remaining_ms() == 0.0
    slot.add_usage(0, 5.0)
    assert slot.remaining_ms() == 0.0


def test_a_new_cartridge_whose_usage_runs_out_is_refused_by_check_run() -> None:
    slot = _slot(_cart())
    assert slot.cartridge is not None
    slot.cartridge.strokes_used = 250_000  # NEW, but the tag says worn out
    slot.add_usage(0, 0.0)
    assert slot.state is CartridgeState.NEW  # only a locked mounting turns EXHAUSTED on use
    assert slot.check_run() == Refusal(ErrorCode.CARTRIDGE_EXHAUSTED, 250_000, 250_000)


def test_a_retired_cartridge_never_runs_again() -> None:
    records = CartridgeRecords()
    slot = _slot(_cart(), records)
    slot.retire(records)
    assert (slot.state, records.used_ids) == (CartridgeState.RETIRED, {7})
    assert slot.check_run() == Refusal(ErrorCode.CARTRIDGE_USED, 7)
    assert slot.lock(records) is False
    slot.add_usage(250_000, 0.0)  # the strokes of the run it was retired in still count
    assert slot.state is CartridgeState.RETIRED
    assert slot.check_run() == Refusal(ErrorCode.CARTRIDGE_USED, 7)
    assert _slot(_cart(), records).refusal == Refusal(ErrorCode.CARTRIDGE_USED, 7)
