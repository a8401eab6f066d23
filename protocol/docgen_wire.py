"""The wire-detail chapters of docs/protocol.md: value conventions, control frames, transports,
the schema hash (its algorithm and canonical form, so a peer can recompute it) and the
calibration record's CRC. Every number is read from the code that uses it."""

from __future__ import annotations

import inspect

from . import framing, link, linkauth, messages
from .framing import encode_frame
from .link import Flag
from .schema import REGISTRY, canonical_schema_text, schema_hash

__all__ = [
    "calibration_crc_section",
    "control_frames",
    "conventions_section",
    "schema_hash_section",
    "transports_section",
]


def conventions_section() -> list[str]:
    return [
        "## Conventions",
        "",
        "* **Byte order** little-endian everywhere (frame header, message fields, CRC); no "
        "padding between fields; a message is its id byte followed by its fields in declared "
        "order.",
        "* **Integers** `u8 u16 u32` are unsigned and `i8 i16 i32` two's-complement signed; "
        "every field's type and range are in its table. Ids, counts, cartridge ids, host ids, "
        "hashes, CRCs and times are unsigned; only quantities that can be negative (a "
        "temperature, a calibration offset or gain) are signed. Where a signed field carries a "
        "u32 (`Nak.value`, `Nak.limit`, `Event.value`) it carries its bit pattern: read it "
        "back as unsigned when the table says the quantity is.",
        "* **Strings** (`char[N]`) are ASCII, printable (0x20–0x7E), at most N characters, "
        "padded with `0x00` to N bytes; a NUL may only be followed by NULs. A receiver strips "
        "the padding; a string that breaks these rules makes the message `MALFORMED`.",
        "* **Byte fields** (`u8[N]`) are exactly N bytes, any values.",
        "* **Enums** are the integer of their wire type; a value that is no member makes the "
        "message `MALFORMED` (see Enumerations).",
        "* **`cmd_id`** is the host's number for a command; the reply or `Nak` carries the "
        "same number. **0 is reserved**: a host never sends it (a command numbered 0 is "
        "`Nak(MALFORMED)`), and the pen answers a message too short to carry a number with "
        "`cmd_id` 0. Our host starts at a random number and counts up, skipping 0 when it "
        "wraps; it never reuses a number within a session while an answer is pending.",
        "* **Units** are in the field tables: depths in µm, rates in strokes/s, temperatures "
        "in 0.1 °C, times in ms, days since 1970-01-01, wall-clock seconds since 1970-01-01 UTC.",
        "",
    ]


def control_frames() -> list[str]:
    """The frames that carry no message: what each header field means in them."""
    nonce = 0x12345678
    syn = encode_frame(Flag.SYN | Flag.SACK, 0x2A, nonce & 0xFFFF, nonce >> 16, b"")
    return [
        "Control frames (no message; the same header):",
        "",
        "| frame | flags | epoch | seq | ack | after the header |",
        "|---|---|---|---|---|---|",
        "| SYN | SYN (+SACK) | the new epoch, 1–255 | nonce bits 0–15 | nonce bits 16–31 | "
        f"nothing, or the {linkauth.OFFER.size}-byte offer (+ {linkauth.RESUME.size}-byte "
        "resume proof) |",
        "| SYNACK | SYNACK (+SACK) | the SYN's epoch | the SYN's nonce bits 0–15 | nonce bits "
        f"16–31 | nothing, or the {linkauth.ANSWER.size}-byte answer |",
        "| RST | RST | the epoch of the frame it answers | 0 | 0 | nothing (never authenticated) |",
        "| bare ACK | ACK (+SACK) | current | the sender's next DATA sequence number "
        "(informational) | next sequence number expected | the SACK bitmap with SACK; the "
        "auth trailer in an authenticated epoch |",
        "",
        "* **Epoch 0** is never opened: a pen's link is in epoch 0 until its first SYN, and a "
        "host draws epochs from 1–255. A frame in an epoch the pen is not in is stale; a DATA "
        "frame of such an epoch is answered RST in that epoch.",
        "* **SYN retransmission.** Until the SYNACK comes, the host sends the SYN again every "
        "retransmission timeout (the current RTO, without backoff), the same epoch and nonce "
        "(a paired host's resume proof counts its attempts), and gives up after its liveness "
        "timeout. The pen answers every copy: a SYN is a repeat only when epoch *and* nonce "
        "match its current link, and a repeat is answered with the same SYNACK without "
        "resetting anything.",
        "",
        f"Example: a SYN with SACK, epoch 0x2A, nonce 0x{nonce:08X} (seq 0x{nonce & 0xFFFF:04X}, "
        f"ack 0x{nonce >> 16:04X}):",
        "",
        "```",
        f"wire     {' '.join(f'{b:02x}' for b in syn)}",
        "```",
        "",
    ]


def transports_section() -> list[str]:
    return [
        "## Transports",
        "",
        "The byte stream is the same on every transport; only how it is carried differs.",
        "",
        f"* **UART / USB CDC-ACM**: {framing.UART_DEFAULT_BAUD:,} baud 8N1 by default "
        "(`serial:///dev/ttyUSB0?baud=N` changes it; CDC-ACM ignores the rate). The host opens "
        "the port exclusively.",
        "* **USB bulk** (`usb://VID:PID`): one bulk OUT and one bulk IN endpoint carry the same "
        "stream.",
        "* **TCP** (`socket://HOST:PORT`, `rfc2217://`): **every TCP connection sets "
        "`TCP_NODELAY`** on both ends. The link writes small frames and waits for answers; "
        "with Nagle's algorithm on, a frame written while an earlier one awaits a delayed ACK "
        "(40 ms on Linux) is held back, and every request costs 40 ms. Our host, simulator, "
        "proxy, HIL raw link and instrument connections all set it (`tests/host/"
        "test_tcp_nodelay.py` checks each path); a pen's TCP bridge must too.",
        f"* The link needs no more than the stream: its window (default {_window()} frames) "
        "and retransmission make a lossy or slow line safe.",
        "",
    ]


def schema_hash_section() -> list[str]:
    text = canonical_schema_text(REGISTRY)
    first = text.splitlines()[:3]
    return [
        "## Schema hash",
        "",
        f"`Hello.schema_hash` and `Identity.schema_hash` carry 0x{schema_hash():08X}: a 32-bit "
        "hash of every message's id, name, kind and fields (MAVLink's CRC_EXTRA, for the whole "
        "schema). Two ends whose hashes differ disagree about some byte; the pen refuses the "
        "`Hello` (`SCHEMA_MISMATCH`). A peer recomputes it from this document alone:",
        "",
        "1. For every message, in increasing id order, one line: "
        "`{id}:{Name}:{KIND}` (id in decimal, the name and kind as in the message's heading "
        "and first line), then for each field in order `|{field}:{kind}:{lo}:{hi}:{size}:"
        "{members}:{refuse}`, where",
        "   * `kind` is `u8 u16 u32 i8 i16 i32`, or `str` for `char[N]` and `bytes` for `u8[N]`;",
        "   * `lo`/`hi` are the range in decimal (`str`/`bytes`: 0 and N; an enum field: the "
        "smallest and largest member value);",
        "   * `size` is N for `char[N]`/`u8[N]`, else 0;",
        "   * `members` is, for an enum field, `NAME=value` for each member in the order of its "
        "table, joined by `,`; else empty;",
        "   * `refuse` is the decimal error code answered when the field is out of range (the "
        "field table's `→` code), else empty.",
        "2. Join the lines with `\\n` (no newline after the last), encode as UTF-8, take SHA-256.",
        "3. The hash is the first 4 bytes of the digest read as a little-endian u32.",
        "",
        "The first lines of the canonical text:",
        "",
        "```",
        *first,
        "```",
        "",
        "`tests/protocol/test_schema_hash_doc.py` recomputes the hash from this document's own "
        "tables, so the document is enough.",
        "",
    ]


def calibration_crc_section() -> list[str]:
    layout = messages._CAL_CRC_LAYOUT
    sample = (1, 12_345, -20, -500, 1_767_225_600, 7)
    packed = layout.pack(*sample)
    return [
        "## Calibration record CRC",
        "",
        "`CalWrite.crc`, `CalCommit.crc` and `CalData.crc` are `calibration_crc()`: CRC-32 "
        "(the frame's CRC-32, IEEE 802.3) of the record's fields packed little-endian without "
        f"padding in this order: `version` u8, `depth_gain_ppm` i32, `depth_offset_um` i16, "
        f"`rate_gain_ppm` i32, `written_at` u32, `counter` u32 ({layout.size} bytes, `struct` "
        f"format `{layout.format}`).",
        "",
        f"Example: {sample} packs to `{packed.hex(' ')}`, CRC "
        f"0x{messages.calibration_crc(*sample):08X}.",
        "",
    ]


def _window() -> object:
    return inspect.signature(link.Link.__init__).parameters["window"].default
