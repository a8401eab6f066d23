"""Firmware images: a header, the payload, and a TLV area with the SHA-256 and a signature.

Shaped after MCUboot's image format, so a bootloader team meets nothing new: a fixed header
(magic, version, security counter, sizes, load address) that the hash covers, the payload,
then a TLV area — the SHA-256 of header + payload, the SHA-256 of the signing public key, and
an Ed25519 signature of that digest. The security counter sits in the header, so the
signature protects it: an image cannot be relabelled to pass a downgrade check.

Layout (little-endian)::

    header   32 bytes  magic "MPFW", header_version u8 (1), flags u8, header_size u16 (32),
                       version major u8, minor u8, patch u16, build u32,
                       security_counter u32, payload_size u32, load_address u32, reserved u32
    payload  payload_size bytes
    TLV info 4 bytes   magic u16 0x6907, total u16 (the whole TLV area, this info included)
    TLVs               type u8, reserved u8, length u16, value — SHA256 (0x10, 32 bytes) first,
                       then KEY_HASH (0x01, 32 bytes) and ED25519 (0x24, 64 bytes) when signed

Parsing checks the structure and the hash (:func:`parse`); :func:`verify` also requires a
signature by one of the trusted keys. Every refusal is an :class:`ImageError` with a
:class:`ImageFault` saying which check failed. Crypto is the ``cryptography`` package's.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .errors import LocalProtocolError, MicropenError

__all__ = [
    "HEADER_SIZE",
    "IMAGE_MAGIC",
    "MAX_PAYLOAD",
    "FirmwareImage",
    "ImageError",
    "ImageFault",
    "TlvType",
    "build",
    "key_hash",
    "parse",
    "stored_length",
    "verify",
]

IMAGE_MAGIC = b"MPFW"
HEADER_VERSION = 1
HEADER_SIZE = 32
TLV_INFO_MAGIC = 0x6907
MAX_PAYLOAD = 4 * 1024 * 1024  # one slot of the pen's flash
_HEADER = struct.Struct("<4sBBHBBHIIIII")
_TLV_INFO = struct.Struct("<HH")
_TLV = struct.Struct("<BBH")
assert _HEADER.size == HEADER_SIZE


class TlvType(IntEnum):
    KEY_HASH = 0x01
    SHA256 = 0x10
    ED25519 = 0x24


_TLV_SIZES = {TlvType.KEY_HASH: 32, TlvType.SHA256: 32, TlvType.ED25519: 64}


class ImageFault(IntEnum):
    """Which check an image failed (also what the pen reports when it refuses one)."""

    TRUNCATED = 1
    BAD_MAGIC = 2
    BAD_HEADER = 3
    BAD_TLV = 4
    HASH_MISMATCH = 5
    UNSIGNED = 6
    UNKNOWN_KEY = 7
    BAD_SIGNATURE = 8
    TOO_LARGE = 9
    DOWNGRADE = 10  # security counter below the pen's (a pen's check, not the file's)


class ImageError(MicropenError):
    """The image is not one a pen may boot; ``fault`` says which check failed."""

    def __init__(self, fault: ImageFault, message: str) -> None:
        super().__init__(message)
        self.fault = fault


@dataclass(frozen=True, slots=True)
class FirmwareImage:
    """A parsed image: its header fields, payload, digest and signature (if any)."""

    version: tuple[int, int, int]
    build: int
    security_counter: int
    load_address: int
    flags: int
    payload: bytes
    digest: bytes  # SHA-256 of header + payload, checked against the TLV
    key_hash: bytes | None
    signature: bytes | None
    size: int  # the whole image, TLVs included

    @property
    def version_text(self) -> str:
        major, minor, patch = self.version
        return f"{major}.{minor}.{patch}" + (f"+{self.build}" if self.build else "")

    @property
    def signed(self) -> bool:
        """Carries a signature and the hash of the key that made it (verify checks both)."""
        return self.signature is not None and self.key_hash is not None


def key_hash(public_key: Ed25519PublicKey) -> bytes:
    """SHA-256 of the raw 32-byte public key: how an image names the key that signed it."""
    return hashlib.sha256(public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)).digest()


def build(
    payload: bytes,
    *,
    version: tuple[int, int, int],
    security_counter: int,
    key: Ed25519PrivateKey | None,
    build_number: int = 0,
    load_address: int = 0,
) -> bytes:
    """An image of ``payload``, signed with ``key`` (None: unsigned, for tests of refusal)."""
    major, minor, patch = version
    if not (0 <= major <= 0xFF and 0 <= minor <= 0xFF and 0 <= patch <= 0xFFFF):
        raise LocalProtocolError(
            f"version {major}.{minor}.{patch} does not fit (major and minor 0–255, patch 0–65535)"
        )
    for name, value in (("security counter", security_counter), ("build", build_number),
                        ("load address", load_address)):  # fmt: skip
        if not 0 <= value <= 0xFFFF_FFFF:
            raise LocalProtocolError(f"{name} {value} does not fit in 32 bits (0–4294967295)")
    if len(payload) > MAX_PAYLOAD:
        raise LocalProtocolError(
            f"payload of {len(payload)} bytes is larger than a slot ({MAX_PAYLOAD} bytes)"
        )
    header = _HEADER.pack(
        IMAGE_MAGIC, HEADER_VERSION, 0, HEADER_SIZE, major, minor, patch, build_number,
        security_counter, len(payload), load_address, 0,
    )  # fmt: skip
    digest = hashlib.sha256(header + payload).digest()
    tlvs = [_tlv(TlvType.SHA256, digest)]
    if key is not None:
        tlvs.append(_tlv(TlvType.KEY_HASH, key_hash(key.public_key())))
        tlvs.append(_tlv(TlvType.ED25519, key.sign(digest)))
    body = b"".join(tlvs)
    return header + payload + _TLV_INFO.pack(TLV_INFO_MAGIC, _TLV_INFO.size + len(body)) + body


def parse(data: bytes) -> FirmwareImage:
    """Check the structure and the hash; the signature is :func:`verify`'s job."""
    if len(data) < HEADER_SIZE:
        raise ImageError(
            ImageFault.TRUNCATED, f"{len(data)} bytes is shorter than the {HEADER_SIZE}-byte header"
        )
    (magic, header_version, flags, header_size, major, minor, patch, build_number, counter,
     payload_size, load_address, _reserved) = _HEADER.unpack_from(data)  # fmt: skip
    if magic != IMAGE_MAGIC:
        raise ImageError(ImageFault.BAD_MAGIC, f"not a micropen firmware image (magic {magic!r})")
    if header_version != HEADER_VERSION or header_size != HEADER_SIZE:
        raise ImageError(
            ImageFault.BAD_HEADER,
            f"header version {header_version}, size {header_size}: this tool reads version "
            f"{HEADER_VERSION}, size {HEADER_SIZE}",
        )
    if payload_size > MAX_PAYLOAD:
        raise ImageError(
            ImageFault.TOO_LARGE, f"payload of {payload_size} bytes exceeds a slot ({MAX_PAYLOAD})"
        )
    end = HEADER_SIZE + payload_size
    if len(data) < end + _TLV_INFO.size:
        raise ImageError(
            ImageFault.TRUNCATED,
            f"{len(data)} bytes; the header promises {end + _TLV_INFO.size} or more",
        )
    tlvs = _read_tlvs(data, end)
    if TlvType.SHA256 not in tlvs:
        raise ImageError(ImageFault.BAD_TLV, "the image has no SHA-256 TLV")
    digest = hashlib.sha256(data[:end]).digest()
    if tlvs.get(TlvType.SHA256) != digest:
        raise ImageError(
            ImageFault.HASH_MISMATCH, "the SHA-256 of header and payload does not match the image's"
        )
    return FirmwareImage(
        (major, minor, patch), build_number, counter, load_address, flags, data[HEADER_SIZE:end],
        digest, tlvs.get(TlvType.KEY_HASH), tlvs.get(TlvType.ED25519), len(data),
    )  # fmt: skip


def stored_length(data: bytes) -> int:
    """The length of the image at the start of ``data`` (a flash slot: the image, then erased
    bytes), from its header and TLV info; ImageError when no image starts there."""
    if len(data) < HEADER_SIZE or data[:4] != IMAGE_MAGIC:
        raise ImageError(ImageFault.BAD_MAGIC, "no image header at the start of the slot")
    payload_size: int = _HEADER.unpack_from(data)[9]
    end = HEADER_SIZE + payload_size
    if payload_size > MAX_PAYLOAD or len(data) < end + _TLV_INFO.size:
        raise ImageError(ImageFault.TRUNCATED, "the slot ends inside the image")
    magic, total = _TLV_INFO.unpack_from(data, end)
    if magic != TLV_INFO_MAGIC or end + total > len(data):
        raise ImageError(ImageFault.BAD_TLV, "no TLV area where the header says")
    return end + int(total)


def verify(data: bytes, trusted: Iterable[Ed25519PublicKey]) -> FirmwareImage:
    """:func:`parse`, then require an Ed25519 signature of the digest by a trusted key."""
    image = parse(data)
    if image.signature is None or image.key_hash is None:
        raise ImageError(ImageFault.UNSIGNED, "the image is not signed (signature and key hash)")
    key = next((k for k in trusted if key_hash(k) == image.key_hash), None)
    if key is None:
        raise ImageError(
            ImageFault.UNKNOWN_KEY,
            f"signed by key {image.key_hash.hex()[:16]}…, which is not a trusted key",
        )
    try:
        key.verify(image.signature, image.digest)
    except InvalidSignature:
        raise ImageError(ImageFault.BAD_SIGNATURE, "the signature does not verify") from None
    return image


def _tlv(kind: TlvType, value: bytes) -> bytes:
    return _TLV.pack(kind, 0, len(value)) + value


def _read_tlvs(data: bytes, at: int) -> dict[TlvType, bytes]:
    magic, total = _TLV_INFO.unpack_from(data, at)
    if magic != TLV_INFO_MAGIC:
        raise ImageError(
            ImageFault.BAD_TLV, f"TLV area magic {magic:#06x}, not {TLV_INFO_MAGIC:#06x}"
        )
    if at + total != len(data):
        fault = ImageFault.TRUNCATED if at + total > len(data) else ImageFault.BAD_TLV
        raise ImageError(
            fault, f"the TLV area says {total} bytes; {len(data) - at} follow the payload"
        )
    found: dict[TlvType, bytes] = {}
    pos = at + _TLV_INFO.size
    while pos < at + total:
        if pos + _TLV.size > len(data):
            raise ImageError(ImageFault.BAD_TLV, "a TLV header runs past the end of the image")
        kind, reserved, length = _TLV.unpack_from(data, pos)
        if reserved:
            raise ImageError(ImageFault.BAD_TLV, f"TLV {kind:#04x} has reserved byte {reserved}")
        value = data[pos + _TLV.size : pos + _TLV.size + length]
        pos += _TLV.size + length
        if pos > len(data):
            raise ImageError(ImageFault.BAD_TLV, "a TLV runs past the end of the image")
        try:
            tlv = TlvType(kind)
        except ValueError:
            continue  # unknown TLVs are skipped, as MCUboot does
        if len(value) != _TLV_SIZES[tlv] or tlv in found:
            raise ImageError(ImageFault.BAD_TLV, f"{tlv.name} TLV of {len(value)} bytes")
        found[tlv] = value
    return found
