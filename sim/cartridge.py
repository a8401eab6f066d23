"""Needle cartridges: the physical part with its tag, and the firmware's rules for it.

Hazard 4 (a used, expired or unknown cartridge runs) is controlled here: a cartridge is judged
when it is mounted (or at boot) against the pen's non-volatile record of every cartridge that
ever ran, locked on the first run of a mounting, and worn out at 250,000 strokes or 30 minutes
of needling, whichever comes first. A retired cartridge (fluid ingress, pulled out while
running) is recorded as such in the same non-volatile records, and that record is the first
thing every later judgement looks at: no mounting, power cycle or reload lets it run again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from micropen.protocol import limits as L
from micropen.protocol.errors import LocalProtocolError
from micropen.protocol.messages import CartridgeInfo, CartridgeState, ErrorCode

__all__ = ["Bay", "Cartridge", "CartridgeRecords", "CartridgeSlot", "Refusal", "i32"]

LOT_MAX_CHARS = 12
_U32 = 0xFFFF_FFFF


def i32(value: int) -> int:
    """A value as the signed 32-bit field of a Nak or Event carries it (u32 values wrap)."""
    return ((int(value) + 0x8000_0000) & _U32) - 0x8000_0000


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a command is refused: the error, the offending value and the limit it broke."""

    error: ErrorCode
    value: int = 0
    limit: int = 0

    @classmethod
    def of(cls, error: ErrorCode, value: int = 0, limit: int = 0) -> Refusal:
        return cls(error, i32(value), i32(limit))


@dataclass(slots=True)
class Cartridge:
    """A physical cartridge; its tag records identity and how much it was used."""

    cartridge_id: int
    lot: str
    manufactured_day: int
    expiry_day: int
    strokes_used: int = 0
    run_ms_used: float = 0.0

    def __post_init__(self) -> None:
        if not 1 <= self.cartridge_id <= _U32:
            raise LocalProtocolError(
                f"cartridge id {self.cartridge_id} outside 1..{_U32} (0 means 'remove')"
            )
        if not (self.lot.isascii() and self.lot.isprintable()) or len(self.lot) > LOT_MAX_CHARS:
            raise LocalProtocolError(
                f"cartridge lot {self.lot!r} must be printable ASCII, ≤ {LOT_MAX_CHARS} chars"
            )
        for name in ("manufactured_day", "expiry_day"):
            if not 0 <= getattr(self, name) <= _U32:
                raise LocalProtocolError(
                    f"cartridge {name} {getattr(self, name)} outside 0..{_U32}"
                )

    @property
    def exhausted(self) -> bool:
        return (
            self.strokes_used >= L.CARTRIDGE_LIFE_STROKES or self.run_ms_used >= L.CARTRIDGE_LIFE_MS
        )

    def effective_expiry_day(self) -> int:
        """The printed expiry, never later than the two-year shelf life allows."""
        return min(self.expiry_day, self.manufactured_day + L.CARTRIDGE_SHELF_LIFE_DAYS)


@dataclass(slots=True)
class Bay:
    """The physical socket: what is mounted survives a reset of the firmware."""

    cartridge: Cartridge | None = None


@dataclass(slots=True)
class CartridgeRecords:
    """Kept in NVM: every cartridge id that ever ran, every id retired for good, and the one
    locked in this mounting. The id sets only ever grow."""

    used_ids: set[int] = field(default_factory=set)
    locked_id: int = 0
    retired_ids: set[int] = field(default_factory=set)


class CartridgeSlot:
    """The firmware's judgement of the mounted cartridge (RAM; rebuilt at every boot)."""

    __slots__ = ("cartridge", "refusal", "state")

    def __init__(self) -> None:
        self.cartridge: Cartridge | None = None
        self.state = CartridgeState.ABSENT
        self.refusal: Refusal | None = None

    def assess(self, cartridge: Cartridge | None, today: int, records: CartridgeRecords) -> None:
        """Judge a cartridge that was just mounted, or found mounted at boot."""
        self.cartridge, self.refusal = cartridge, None
        if cartridge is None:
            self.state = CartridgeState.ABSENT
            return
        if cartridge.cartridge_id in records.retired_ids:  # first: nothing brings it back
            # still in the bay since it was retired (across a reset): RETIRED; put back on
            # after it was taken off: a refused re-mount. Neither ever runs.
            same_mounting = cartridge.cartridge_id == records.locked_id
            self.state = CartridgeState.RETIRED if same_mounting else CartridgeState.REFUSED
            self.refusal = Refusal.of(ErrorCode.CARTRIDGE_USED, cartridge.cartridge_id)
            return
        if cartridge.cartridge_id == records.locked_id:  # same mounting, across a reset
            self.state = CartridgeState.EXHAUSTED if cartridge.exhausted else CartridgeState.LOCKED
            return
        self.refusal = _refusal(cartridge, today, records)
        if self.refusal is not None:
            self.state = CartridgeState.REFUSED
        elif cartridge.exhausted:
            self.state = CartridgeState.EXHAUSTED
        else:
            self.state = CartridgeState.NEW

    def info(self, cmd_id: int, strokes_used: int, run_ms_used: int) -> CartridgeInfo:
        """GetCartridge's answer (usage passed in: it includes a run in progress)."""
        cart = self.cartridge
        if cart is None:
            return CartridgeInfo(cmd_id, self.state, 0, "", 0, 0, 0, 0)
        return CartridgeInfo(
            cmd_id, self.state, cart.cartridge_id, cart.lot, cart.manufactured_day,
            cart.expiry_day, strokes_used & _U32, run_ms_used & _U32,
        )  # fmt: skip

    def check_run(self) -> Refusal | None:
        """None when a run may use this cartridge."""
        cart, state = self.cartridge, self.state
        if cart is None:
            return Refusal.of(ErrorCode.NO_CARTRIDGE)
        if state is CartridgeState.REFUSED and self.refusal is not None:
            return self.refusal
        if state is CartridgeState.RETIRED:
            return Refusal.of(ErrorCode.CARTRIDGE_USED, cart.cartridge_id)
        if state is CartridgeState.EXHAUSTED or cart.exhausted:
            return Refusal.of(
                ErrorCode.CARTRIDGE_EXHAUSTED, cart.strokes_used, L.CARTRIDGE_LIFE_STROKES
            )
        return None

    def lock(self, records: CartridgeRecords) -> bool:
        """Lock at the first run of a mounting; True when it was locked just now."""
        cart = self.cartridge
        if cart is None or self.state is not CartridgeState.NEW:
            return False
        self.state = CartridgeState.LOCKED
        records.used_ids.add(cart.cartridge_id)
        records.locked_id = cart.cartridge_id
        return True

    def retire(self, records: CartridgeRecords) -> None:
        """Never to run again (fluid ingress, removal while running): written to the
        non-volatile records, which every later assessment reads first."""
        cart = self.cartridge
        if cart is not None:
            records.used_ids.add(cart.cartridge_id)
            records.retired_ids.add(cart.cartridge_id)
            records.locked_id = cart.cartridge_id  # this mounting is bound to it until removed
            self.state = CartridgeState.RETIRED
            self.refusal = Refusal.of(ErrorCode.CARTRIDGE_USED, cart.cartridge_id)

    def add_usage(self, strokes: int, run_ms: float) -> None:
        cart = self.cartridge
        if cart is None:
            return
        cart.strokes_used += strokes
        cart.run_ms_used += run_ms
        if cart.exhausted and self.state is CartridgeState.LOCKED:
            self.state = CartridgeState.EXHAUSTED

    def remaining_strokes(self) -> int:
        cart = self.cartridge
        return 0 if cart is None else max(0, L.CARTRIDGE_LIFE_STROKES - cart.strokes_used)

    def remaining_ms(self) -> float:
        cart = self.cartridge
        return 0.0 if cart is None else max(0.0, L.CARTRIDGE_LIFE_MS - cart.run_ms_used)


def _refusal(cart: Cartridge, today: int, records: CartridgeRecords) -> Refusal | None:
    """Unknown, then re-mounted, then expired: the first rule a cartridge breaks."""
    if not cart.lot:
        return Refusal.of(ErrorCode.CARTRIDGE_UNKNOWN, cart.cartridge_id)
    if cart.manufactured_day > today:
        return Refusal.of(ErrorCode.CARTRIDGE_UNKNOWN, cart.manufactured_day, today)
    if cart.expiry_day < cart.manufactured_day:
        return Refusal.of(ErrorCode.CARTRIDGE_UNKNOWN, cart.expiry_day, cart.manufactured_day)
    if cart.cartridge_id in records.used_ids:
        return Refusal.of(ErrorCode.CARTRIDGE_USED, cart.cartridge_id)
    expiry = cart.effective_expiry_day()
    if today > expiry:
        return Refusal.of(ErrorCode.CARTRIDGE_EXPIRED, today, expiry)
    return None
