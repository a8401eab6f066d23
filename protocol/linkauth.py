"""Link authentication: pairing keys, per-epoch session keys, a tag and a counter on every frame.

Why this shape (MAVLink 2 signing, TLS 1.3 key schedule, IPsec anti-replay):

* **Pairing** agrees a 32-byte key once, locally: X25519 between the host and a pen in pairing
  mode (a physical act on the pen), with a six-digit confirmation code both show so that the
  technician can see no one sat in between. :func:`pairing_secret` and :func:`confirmation_code`
  are all a peer needs.
* **Every link epoch gets fresh keys.** The host's SYN offers authentication (its ``host_id``
  and a 16-byte nonce); a pen paired with that host answers in SYNACK with its ``pen_id``, its
  own nonce and a tag proving it holds the pairing key. Both derive two direction keys with
  HKDF-SHA256 from the pairing key, both nonces and the epoch, so nothing recorded from an
  earlier epoch is valid in this one.
* **Every frame of an authenticated epoch** (data, datagrams, bare acks) carries a trailer
  before its CRC: a 32-bit counter (per direction, +1 for every frame sent, retransmissions
  included) and the first 8 bytes of HMAC-SHA256 over counter, header and message. A receiver
  drops a frame whose tag fails, and one whose counter it has seen or that is older than its
  64-frame window (replay), and counts both. The CRC still guards against line noise; the tag
  guards against people.

Crypto is the ``cryptography`` package's (X25519, HKDF) and the standard library's ``hmac``;
nothing here is hand-made but the byte layouts.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = [
    "KEY_BYTES",
    "NONCE_BYTES",
    "OFFER",
    "REPLAY_WINDOW",
    "TAG_BYTES",
    "TRAILER_BYTES",
    "AuthAnswer",
    "AuthOffer",
    "FrameAuth",
    "confirmation_code",
    "new_nonce",
    "pair_proof",
    "pairing_secret",
    "public_bytes",
    "resume_tag",
    "session_keys",
    "synack_tag",
]

KEY_BYTES = 32
NONCE_BYTES = 16
TAG_BYTES = 8
COUNTER = struct.Struct("<I")
TRAILER_BYTES = COUNTER.size + TAG_BYTES
REPLAY_WINDOW = 64
OFFER = struct.Struct(f"<I{NONCE_BYTES}s")  # SYN payload: host_id, host nonce
RESUME = struct.Struct(f"<I{TAG_BYTES}s")  # after the offer, from a host that was just on
ANSWER = struct.Struct(f"<I{NONCE_BYTES}s16s")  # SYNACK payload: pen_id, pen nonce, tag
_U32 = 0xFFFF_FFFF


def new_nonce() -> bytes:
    return os.urandom(NONCE_BYTES)


def public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def pairing_secret(
    own: X25519PrivateKey, peer_public: bytes, host_pub: bytes, pen_pub: bytes
) -> bytes:
    """The pairing key both ends derive from one X25519 exchange (bound to both public keys)."""
    shared = own.exchange(X25519PublicKey.from_public_bytes(peer_public))
    return HKDF(
        algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None,
        info=b"micropen pairing v1" + host_pub + pen_pub,
    ).derive(shared)  # fmt: skip


def confirmation_code(pairing_key: bytes, host_pub: bytes, pen_pub: bytes) -> str:
    """Six digits both ends show; equal codes mean both hold the same key (no one in between)."""
    digest = hashlib.sha256(b"micropen code" + pairing_key + host_pub + pen_pub).digest()
    return f"{int.from_bytes(digest[:4], 'little') % 1_000_000:06d}"


def resume_tag(previous_key: bytes, epoch: int, nonce: int, attempt: int) -> bytes:
    """A reconnecting host's proof, in its SYN, that it held the epoch now ending (keyed with
    that epoch's host → pen key; ``attempt`` counts the SYN's transmissions, so a copy replayed
    later proves nothing). It lets the pen count the handshake as its paired host alive."""
    data = b"micropen resume" + struct.pack("<BII", epoch, nonce, attempt)
    return hmac.digest(previous_key, data, "sha256")[:TAG_BYTES]


def pair_proof(pairing_key: bytes, host_id: int) -> bytes:
    """What PairConfirm carries: the host holds the key the code stands for."""
    return hmac.digest(
        pairing_key, b"micropen pair confirm" + struct.pack("<I", host_id), "sha256"
    )[:16]


def synack_tag(
    pairing_key: bytes, epoch: int, offer: AuthOffer, pen_id: int, pen_nonce: bytes
) -> bytes:
    """The pen's proof, in SYNACK, that it holds the pairing key (16 bytes)."""
    data = b"micropen synack" + bytes((epoch,)) + OFFER.pack(offer.host_id, offer.nonce)
    return hmac.digest(pairing_key, data + struct.pack("<I", pen_id) + pen_nonce, "sha256")[:16]


def session_keys(
    pairing_key: bytes, epoch: int, offer: AuthOffer, pen_id: int, pen_nonce: bytes
) -> tuple[bytes, bytes]:
    """(host → pen key, pen → host key) for one epoch."""
    salt = offer.nonce + pen_nonce
    info = b"micropen link v1" + struct.pack("<BII", epoch, offer.host_id, pen_id)
    okm = HKDF(algorithm=hashes.SHA256(), length=2 * KEY_BYTES, salt=salt, info=info).derive(
        pairing_key
    )
    return okm[:KEY_BYTES], okm[KEY_BYTES:]


@dataclass(frozen=True, slots=True)
class AuthOffer:
    """What a host's SYN carries when it wants an authenticated epoch."""

    host_id: int
    nonce: bytes

    def encode(self) -> bytes:
        return OFFER.pack(self.host_id, self.nonce)

    @classmethod
    def decode(cls, payload: bytes) -> AuthOffer | None:
        if len(payload) != OFFER.size:
            return None
        host_id, nonce = OFFER.unpack(payload)
        return cls(host_id, nonce)


@dataclass(frozen=True, slots=True)
class AuthAnswer:
    """What a paired pen's SYNACK carries."""

    pen_id: int
    nonce: bytes
    tag: bytes

    def encode(self) -> bytes:
        return ANSWER.pack(self.pen_id, self.nonce, self.tag)

    @classmethod
    def decode(cls, payload: bytes) -> AuthAnswer | None:
        if len(payload) != ANSWER.size:
            return None
        return cls(*ANSWER.unpack(payload))


@dataclass(slots=True)
class FrameAuth:
    """One authenticated epoch at one end: seals what it sends, opens what it receives."""

    send_key: bytes
    receive_key: bytes
    peer_id: int  # the paired peer: host_id at the pen, pen_id at the host
    sent: int = 0  # counter of the last frame sealed
    highest: int = 0  # highest counter accepted
    seen: int = 0  # bit i: counter highest - i was accepted
    failures: int = 0
    replays: int = field(default=0)
    # keyed once per epoch and copied per frame: the key's pads are not hashed for every frame
    _send_mac: hmac.HMAC = field(init=False, repr=False, compare=False)
    _receive_mac: hmac.HMAC = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._send_mac = hmac.new(self.send_key, digestmod=hashlib.sha256)
        self._receive_mac = hmac.new(self.receive_key, digestmod=hashlib.sha256)

    def seal(self, frame_without_crc: bytes) -> bytes:
        """The trailer for a frame (header and message, before the CRC)."""
        self.sent = counter = (self.sent + 1) & _U32
        head = COUNTER.pack(counter)
        mac = self._send_mac.copy()
        mac.update(head)
        mac.update(frame_without_crc)
        return head + mac.digest()[:TAG_BYTES]

    def open(self, raw: bytes) -> bytes | None:
        """``raw`` is header + message + trailer + CRC; returns it without the trailer when
        the tag verifies and the counter is fresh, else None (counted)."""
        end = len(raw) - 4
        start = end - TRAILER_BYTES
        if start < 6:
            self.failures += 1
            return None
        (counter,) = COUNTER.unpack_from(raw, start)
        tag = raw[start + COUNTER.size : end]
        mac = self._receive_mac.copy()
        view = memoryview(raw)
        mac.update(view[start : start + 4])
        mac.update(view[:start])
        if not hmac.compare_digest(tag, mac.digest()[:TAG_BYTES]):
            self.failures += 1
            return None
        if not self._fresh(counter):
            self.replays += 1
            return None
        return raw[:start] + raw[end:]

    def _fresh(self, counter: int) -> bool:
        if counter > self.highest:
            shift = counter - self.highest
            self.seen = ((self.seen << shift) | 1) & ((1 << REPLAY_WINDOW) - 1)
            self.highest = counter
            return True
        back = self.highest - counter
        if counter == 0 or back >= REPLAY_WINDOW or self.seen >> back & 1:
            return False
        self.seen |= 1 << back
        return True
