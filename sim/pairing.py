"""The pen's pairings: which hosts may move its needles, and the pairing mode that adds one.

Why the pen keeps them (deny by default): a host the pen has not been paired with may read
identity and status, stop the pen, and ask to pair — nothing else. Pairing needs physical
acts on the pen: its button opens a window of :data:`PAIRING_WINDOW_S` in which one host may
ask (a second request is refused, so no one slips in); the pen shows a six-digit code; the
technician compares it with the host's and presses the button again to accept — only then
does the host's confirmation store the pairing. A paired host id is never re-keyed by a new
request (whoever claims it): it is revoked first. Keys are kept in non-volatile memory, at most
:data:`MAX_PAIRINGS`, and never leave the pen.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from micropen.protocol import device, linkauth

__all__ = [
    "MAX_PAIRINGS",
    "PAIRING_WINDOW_S",
    "HostPairing",
    "PairingMode",
    "PairingStore",
]

MAX_PAIRINGS = device.MAX_PAIRINGS
PAIRING_WINDOW_S = device.PAIRING_WINDOW_S


@dataclass(frozen=True, slots=True)
class HostPairing:
    host_id: int
    key: bytes
    name: str

    def __repr__(self) -> str:  # never show the key
        return f"HostPairing(host_id={self.host_id}, name={self.name!r})"


@dataclass(slots=True)
class PairingStore:
    """Non-volatile: this pen's id and its paired hosts."""

    pen_id: int
    hosts: dict[int, HostPairing] = field(default_factory=dict)
    revision: int = 0  # +1 at every change: the state file's cheap "did it change?"

    def lookup(self, host_id: int) -> tuple[int, bytes] | None:
        """For the link: (pen_id, key) for a paired host, else None."""
        found = self.hosts.get(host_id)
        return None if found is None else (self.pen_id, found.key)

    def add(self, pairing: HostPairing) -> bool:
        """Store (a host pairing again replaces its old key); False when full."""
        if pairing.host_id not in self.hosts and len(self.hosts) >= MAX_PAIRINGS:
            return False
        self.hosts[pairing.host_id] = pairing
        self.revision += 1
        return True

    def remove(self, host_id: int) -> bool:
        removed = self.hosts.pop(host_id, None) is not None
        self.revision += removed
        return removed

    def listing(self) -> list[HostPairing]:
        return sorted(self.hosts.values(), key=lambda p: p.host_id)

    def fingerprint(self) -> tuple[int, int]:
        """Called at every entry point of a pen with a state file: no sorting, no copies."""
        return (self.pen_id, self.revision)


@dataclass(slots=True)
class _Pending:
    host_id: int
    name: str
    key: bytes
    code: str
    accepted: bool = False  # the technician pressed the button again: the codes matched


class PairingMode:
    """RAM: the window the button opened and the one request it may be answering."""

    def __init__(self, display: list[str] | None = None) -> None:
        self.until = float("-inf")
        self.pending: _Pending | None = None
        self.display = [] if display is None else display  # the screen's lines, oldest first

    def press(self, t: float) -> None:
        """The button: opens pairing mode, or — while a request shows its code — accepts it
        (the technician saw the same code on the host)."""
        pending = self.pending
        if self.is_open(t) and pending is not None and not pending.accepted:
            pending.accepted = True
            self.display.append(f"accepted {pending.name or 'host'} {pending.host_id:08x}")
            return
        self.open(t)

    def open(self, t: float) -> None:
        self.until = t + PAIRING_WINDOW_S
        self.pending = None
        self.display.append(f"pairing mode for {PAIRING_WINDOW_S:.0f} s")

    def is_open(self, t: float) -> bool:
        return t < self.until

    def request(self, host_id: int, host_public: bytes, name: str) -> bytes:
        """A host asks to pair: returns the pen's public key; the screen shows the code."""
        own = X25519PrivateKey.generate()
        pen_public = linkauth.public_bytes(own)
        key = linkauth.pairing_secret(own, host_public, host_public, pen_public)
        code = linkauth.confirmation_code(key, host_public, pen_public)
        self.pending = _Pending(host_id, name, key, code)
        self.display.append(
            f"pair with {name or 'host'} {host_id:08x}? code {code} (press to accept)"
        )
        return pen_public

    def confirm(self, host_id: int, proof: bytes) -> HostPairing | None:
        pending = self.pending
        if pending is None or pending.host_id != host_id or not pending.accepted:
            return None
        if not hmac.compare_digest(linkauth.pair_proof(pending.key, host_id), proof):
            return None
        self.pending = None
        self.until = float("-inf")  # one pairing per press of the button
        self.display.append(f"paired with {pending.name or 'host'} {host_id:08x}")
        return HostPairing(host_id, pending.key, pending.name)
