"""Generate ``docs/protocol.md`` from the declarations, so the reference cannot drift from the code.

Every number in the document (ids, offsets, sizes, ranges, enum values, link defaults, the state
table, the schema hash) is read from the protocol modules; the prose around them explains the
rules those numbers belong to. ``tests/protocol/test_protocol_doc.py`` fails when the committed
file differs from what this module renders.

Usage::

    python3 -m micropen.protocol.docgen > docs/protocol.md
    python3 -m micropen.protocol.docgen --write docs/protocol.md
"""

from __future__ import annotations

import argparse
import inspect
import random
import struct
import sys
from collections.abc import Iterable, Iterator
from enum import IntFlag
from pathlib import Path

from . import framing, limits, link, messages, timing
from .docgen_behaviour import answers_section, behaviour_section
from .docgen_rules import rules_section
from .docgen_security import auth_section, update_section
from .docgen_wire import (
    calibration_crc_section,
    control_frames,
    conventions_section,
    schema_hash_section,
    transports_section,
)
from .framing import HEADER, MAX_RAW_FRAME, MAX_WIRE_FRAME, SACK, encode_frame
from .link import TRANSITIONS, Flag, Link, LinkState, Role
from .linkauth import TRAILER_BYTES
from .schema import MAX_BODY, REGISTRY, Field, Kind, Message, schema_hash

__all__ = ["main", "render"]

COMMAND = "python3 -m micropen.protocol.docgen --write docs/protocol.md"
INLINE_ENUM_MEMBERS = 6  # longer enums get a link to their table instead of an inline list

_KIND_TEXT = {
    Kind.COMMAND: "host → pen, answered by its reply type or by `Nak`, with the same `cmd_id`",
    Kind.REPLY: "pen → host, answers one command (same `cmd_id`)",
    Kind.NOTIFY: "pen → host, unsolicited",
    Kind.HOST_NOTIFY: "host → pen, never answered",
    Kind.SIM_COMMAND: "host → simulator only; a real pen answers `Nak(UNKNOWN_COMMAND)`",
}
_FLAG_TEXT = {
    Flag.DATA: "the frame carries a message and a sequence number",
    Flag.ACK: "`ack` is valid: every sequence number below it has arrived",
    Flag.SYN: "host opens a link in the frame's epoch",
    Flag.SYNACK: "pen accepts the link opened by SYN",
    Flag.RST: "pen does not know the frame's epoch; the host must open a new link",
    Flag.URGENT: "deliver on arrival, even before earlier sequence numbers",
    Flag.SACK: "with ACK: the `sack` bitmap follows the header. In SYN and SYNACK (no bitmap): "
    "the sender reads SACK bitmaps and DATAGRAM frames",
    Flag.DATAGRAM: "the frame carries a message outside the sequence of DATA frames: never "
    "acknowledged or sent again; `seq` is the datagram's own number",
}
_HEADER_FIELDS = (
    ("flags", "bit set below"),
    ("epoch", "link number drawn by the host at each connect; 0 before the first"),
    ("seq", "sequence number of a DATA frame, or number of a DATAGRAM (each mod 2^16)"),
    ("ack", "next sequence number the sender expects (cumulative)"),
)
_LINK_PARAMETERS = {
    "window": "data frames in flight before new ones wait in the backlog",
    "rto_initial": "retransmission timeout before the first RTT sample (s)",
    "rto_min": "lower clamp of the retransmission timeout (s)",
    "rto_max": "upper clamp; timeouts double up to it (s)",
    "max_retries": "timeouts in a row without progress before a host declares the link lost",
    "liveness_timeout": "host only: silence from the pen for this long closes the link (s)",
    "max_backlog": "messages waiting beyond the window before send() refuses more",
    "ack_delay": "how long a receiver may hold an in-order ack hoping to carry it on data (s); "
    "the pen uses 0, our host passes timing.HOST_ACK_DELAY_S",
    "sack": "offer SACK and datagrams in SYN/SYNACK (False: behave as a peer without them)",
    "rng": "source of the host's epochs",
    "pairing": "the pairing-key lookup: host id → key at the pen, pen id → key at the host "
    "(None: never authenticates)",
    "admit_syn": "pen only: asked before a SYN opens a new epoch (the firmware's policy for "
    "who may take the link over)",
}


# ------------------------------------------------------------------------------ helpers
def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: Iterable[str], rows: Iterable[Iterable[object]]) -> list[str]:
    head = list(header)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def _doc(obj: object) -> str:
    text = obj.__doc__ if isinstance(obj, type) and "__doc__" in vars(obj) else None
    return inspect.cleandoc(text) if text else ""


def _anchor(title: str) -> str:
    keep = (c for c in title.lower().replace(" ", "-") if c.isalnum() or c in "-_")
    return "#" + "".join(keep)


def _message_anchor(cls: type[Message]) -> str:
    return _anchor(f"0x{cls.ID:02X} {cls.__name__}")


def _messages() -> list[type[Message]]:
    return [REGISTRY[msg_id] for msg_id in sorted(REGISTRY)]


def _sample(cls: type[Message]) -> Message:
    """The smallest valid instance, to measure encoded sizes."""
    values: dict[str, object] = {}
    for f in cls.FIELDS:
        if f.kind == "str":
            values[f.name] = ""
        elif f.kind == "bytes":
            values[f.name] = bytes(f.size)
        elif f.enum is not None:
            values[f.name] = min(f.enum)
        else:
            values[f.name] = f.lo
    return cls(**values)


def _wire_size(cls: type[Message]) -> int:
    return len(encode_frame(0, 0, 0, 0, _sample(cls).encode()))


def _hex(data: bytes) -> str:
    return " ".join(f"{b:02x}" for b in data)


# ------------------------------------------------------------------------------ sections
def _intro() -> list[str]:
    return [
        "# micropen wire protocol",
        "",
        f"<!-- generated by `{COMMAND}`; edit protocol/*.py instead -->",
        "",
        f"Protocol version **{messages.PROTOCOL_VERSION}** · schema hash "
        f"**0x{schema_hash():08X}** · {len(REGISTRY)} messages.",
        "",
        "This reference is generated from the declarations in `protocol/` "
        f"(`{COMMAND}`); `tests/protocol/test_protocol_doc.py` fails when it is stale.",
        "",
        "## Overview",
        "",
        "Three layers, each usable alone and none doing I/O (bytes in, events out, `now` "
        "passed in):",
        "",
        "1. **Messages** (`schema.py`, `messages.py`): fixed little-endian layouts, no padding, "
        "one id byte then the body. Every value is range-checked when a message is built "
        "(`LocalProtocolError`) and when it is decoded (`RemoteProtocolError`).",
        "2. **Link** (`link.py`): numbers data frames, acknowledges (selectively), retransmits "
        "and delivers each message exactly once and in order per epoch, in both directions; "
        "datagrams (telemetry) go once, outside that order, and are never waited for.",
        "3. **Framing** (`framing.py`): header, message and CRC-32, COBS-stuffed between `0x00` "
        "delimiters, so a receiver resynchronises at the next delimiter after any garbage.",
        "",
        "The host numbers its commands (`cmd_id`); the pen answers with the same number. At "
        "connect the host sends `Hello` with the protocol version and the schema hash; `Hello` "
        "and `Identity` never change layout, so two ends can always name both versions when "
        "they disagree. Then `OpenSession` names the host session, which scopes the pen's reply "
        "cache and opens the flow of the pen's records (see "
        "[Sessions, the reply cache and records](#sessions-the-reply-cache-and-records)).",
        "",
    ]


def _session_section() -> list[str]:
    """The rules that keep commands exactly-once and records exact across host sessions."""
    return [
        "## Sessions, the reply cache and records",
        "",
        "A link epoch is one connection; a **host session** is one host process's use of the "
        "pen, across its reconnects. After `Hello` on each epoch the host sends `OpenSession` "
        "with a random non-zero `session` number it keeps for its lifetime.",
        "",
        "**Reply cache** (hazard 9: a command executed twice because it was re-sent):",
        "",
        f"- The pen keeps the replies of the {limits.REPLY_CACHE_SESSIONS} most recently opened "
        f"sessions, {limits.REPLY_CACHE_PER_SESSION} per session, in RAM (a reboot forgets them "
        "all).",
        "- A command is answered from the cache only when the **same session** sends the **same "
        "command** (message id and body, byte for byte) under the **same `cmd_id`**. Any other "
        "command is executed, even under a number some session used before: a second host "
        "numbering from 1, or one host reusing an id, is never given someone else's reply.",
        "- **Key and eviction.** An entry is keyed by `cmd_id` within its session and holds "
        "the whole command (id byte and body, `cmd_id` included) and the reply given. A new "
        "command under a `cmd_id` the session used before replaces the older entry; beyond "
        f"{limits.REPLY_CACHE_PER_SESSION} entries the oldest is forgotten. Opening a session "
        f"makes it the most recent; beyond {limits.REPLY_CACHE_SESSIONS} sessions the least "
        "recently opened is forgotten, with its replies. Lifetime: until evicted or the pen "
        "reboots (RAM).",
        "- **A duplicate** (same session, same bytes) gets the very reply it got the first "
        "time — an `Ack`, a `Nak` or a data reply — re-sent with the same `cmd_id`; nothing "
        "is executed and no event is raised. A refusal by the handshake or authorization "
        "checks (`NOT_CONNECTED`, `NOT_AUTHORIZED`) is not cached: the command is checked "
        "again when re-sent.",
        "- `Hello`, `OpenSession`, `Stop` and `EmergencyStop` are never answered from the "
        "cache: they are always executed (the stops are idempotent), so no cached `Ack` can "
        "stand in for a stop.",
        "- Nothing is answered from the cache before `Hello` and `OpenSession` on the current "
        "epoch; commands of a handshaken epoch without a session are executed and not cached.",
        "- `OpenSession`'s `Ack.value` is 1 when the pen still holds that session's replies "
        "(same boot, not evicted) and 0 otherwise. Only with 1 may the host re-send the "
        "commands it had no answer for; with 0 it re-sends only queries and stops, and reports "
        "the others as of unknown outcome, to be resolved from `GetStatus` (commands are "
        "handled in order, so a status answered after a command shows its effect).",
        "- The host accepts a reply only if its type is the request's declared reply or "
        "`Nak`; anything else is counted and ignored.",
        "",
        "**Records** (`RunReport`, `Event`, `FaultReport`; hazards 2 and 3): the pen's "
        "acknowledgement means *durably recorded*.",
        "",
        "- The pen hands records over only on an epoch whose host has opened a session. Before "
        f"that it holds them in RAM: up to {limits.HELD_RECORDS_MAX:,}, beyond which the newest "
        "is discarded and counted; of them at most "
        f"{limits.HELD_SECURITY_EVENTS_MAX} security events (`SECURITY_DENIED`, "
        "`AUTH_FAILURES`, `UNPAIRED_CONNECT`, `UNPROVEN_CONNECT`: anyone can provoke them), "
        "the rest discarded and counted, so run and fault reports are never crowded out. "
        "Telemetry is a live measurement and is not held. A reset loses whatever is held or "
        "unacknowledged.",
        "- When a new epoch opens, whatever the old host never acknowledged goes back to the "
        "held records, and is handed to the next session after its `OpenSession` reply, oldest "
        "first, before any later reply.",
        "- A host acknowledges a record only after storing it; a host that cannot store it "
        "must not acknowledge it (ours ends the epoch first, then stops the pen over a new "
        "epoch without a handshake, which hands nothing over).",
        "- A record may therefore arrive twice (its host died between storing and "
        "acknowledging): a run report is identified by pen serial, boot id and run id, an event "
        "by pen serial, boot id, kind, code, value, run id and pen time, and stored once. A "
        "known limit: two identical events in the same millisecond (two `SetDepth` 1600 with "
        "override in one ms) are indistinguishable and stored once.",
        "",
    ]


def _frame_section() -> list[str]:
    lines = ["## Frames", "", "Before stuffing, little-endian:", ""]
    offset, rows = 0, list[tuple[object, ...]]()
    for (name, meaning), code in zip(_HEADER_FIELDS, HEADER.format.lstrip("<"), strict=True):
        size = struct.calcsize("<" + code)
        rows.append((offset, name, f"u{8 * size}", size, meaning))
        offset += size
    sack_meaning = (
        "only with flag SACK (never in SYN/SYNACK): bit i set = the frame `ack` + 1 + i has arrived"
    )
    rows.append((offset, "sack", f"u{8 * SACK.size}", f"0 or {SACK.size}", sack_meaning))
    rows.append(
        (
            f"{offset} or {offset + SACK.size}",
            "message",
            "id u8 + body",
            f"1–{1 + MAX_BODY}",
            "absent in control",
        )
    )
    rows.append(
        (
            f"end − {4 + TRAILER_BYTES}",
            "auth",
            "u32 + 8 bytes",
            f"0 or {TRAILER_BYTES}",
            "counter and tag, in an authenticated epoch only (see Link authentication)",
        )
    )
    rows.append(("end − 4", "crc", "u32", 4, "CRC-32 of everything before it"))
    lines += _table(("offset", "field", "type", "bytes", "meaning"), rows)
    lines += ["Flags:", ""]
    lines += _table(
        ("bit", "flag", "meaning"),
        ((f"0x{f.value:02X}", f.name, _FLAG_TEXT.get(f, "")) for f in Flag),
    )
    lines += _framing_rules()
    return lines


def _framing_rules() -> list[str]:
    example = messages.Heartbeat(counter=1).encode()
    flags = Flag.DATA | Flag.ACK
    wire = encode_frame(flags, 0x2A, 1, 0, example)
    flag_names = "|".join(f.name or "" for f in Flag if f & flags)
    return [
        f"* **CRC-32** (IEEE 802.3, `zlib.crc32`) over header and message, stored "
        f"little-endian. The receiver checks the residue: `crc32(frame) == "
        f"0x{framing.CRC_RESIDUE:08X}`. For frames up to the maximum size it detects every "
        "1-, 2- and 3-bit error and every burst of up to 32 bits in transmission order "
        "(least significant bit of each byte first, as a UART sends it); proved exhaustively "
        "by `tests/protocol/test_crc.py`.",
        "* **COBS** removes every `0x00` from the frame; each frame is written as "
        "`00 <cobs> 00`, so garbage before a frame never merges into it and a receiver that "
        "starts mid-stream resynchronises at the next `00`.",
        f"* **Sizes:** message body ≤ {MAX_BODY} bytes; raw frame (header to CRC) "
        f"{framing.MIN_RAW_FRAME}–{MAX_RAW_FRAME} bytes (SACK bitmap and {TRAILER_BYTES}-byte "
        f"auth trailer included); on the wire "
        f"≤ {MAX_WIRE_FRAME} bytes with both delimiters. Longer pieces are discarded and "
        "counted, as are pieces that fail COBS or the CRC, and a frame flagged SACK too short "
        "to hold its bitmap; nothing a peer sends raises.",
        "",
        f"Example: `Heartbeat(counter=1)` in a {flag_names} frame (flags 0x{flags:02X}), "
        "epoch 0x2A, seq 1, ack 0:",
        "",
        "```",
        f"message  {_hex(example)}",
        f"wire     {_hex(wire)}",
        "```",
        "",
        *_sack_example(),
    ]


def _sack_example() -> list[str]:
    flags = Flag.ACK | Flag.SACK
    held = (5, 6)  # the receiver expects 3; 4 is missing, 5 and 6 wait
    ack = 3
    bitmap = sum(1 << (seq - ack - 1) for seq in held)
    wire = encode_frame(flags, 0x2A, 0, ack, SACK.pack(bitmap))
    flag_names = "|".join(f.name or "" for f in Flag if f & flags)
    return [
        f"Example: a bare {flag_names} frame (flags 0x{flags:02X}), epoch 0x2A, ack {ack}, "
        f"from a receiver that holds frames {held[0]} and {held[1]} but not {ack} and "
        f"{ack + 1}: bitmap 0x{bitmap:08X}.",
        "",
        "```",
        f"wire     {_hex(wire)}",
        "```",
        "",
    ]


def _link_defaults() -> dict[str, object]:
    signature = inspect.signature(Link.__init__)
    return {
        name: p.default
        for name, p in signature.parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def _backlog_limit_text(limit: int) -> str:
    if limit == 0:
        return "any reliable message waits"
    return f"more than {limit} reliable messages wait"


def _link_section() -> list[str]:
    d = _link_defaults()
    lines = [
        "## Link rules",
        "",
        "* **Epochs.** The host opens a link with a SYN frame in a fresh random epoch (1–255, "
        "never the one it just left) and a random 32-bit nonce carried in the SYN's seq and "
        "ack fields; the pen answers SYNACK echoing the nonce, and both number their data "
        "frames from 0. A SYN is a repeat only when epoch and nonce both match, so a restarted "
        "host that happens to draw the pen's current epoch still gets a fresh link. Acks are "
        "cumulative; a receiver may delay one by `ack_delay` so that it rides on its next data "
        f"frame (the pen uses the default, {d['ack_delay']:g}: it acknowledges at once; our host "
        f"waits up to {timing.HOST_ACK_DELAY_S * 1000:g} ms, so the ack rides on its next "
        "command). A frame of any other epoch is stale and dropped. A pen that receives "
        "a data frame of an epoch it does not know (it restarted, or another host took over) "
        "answers RST in that epoch; the host reports `PeerReset` and closes.",
        "* **Capabilities.** SYN and SYNACK carry the SACK flag when their sender reads SACK "
        "bitmaps and DATAGRAM frames; a side sends neither to a peer whose handshake frame did "
        "not carry it (an older pen or host, which never sets the flag and ignores it), so "
        "both generations keep talking.",
        f"* **Acknowledgements** are cumulative: `ack` is the next sequence number expected. "
        "They ride on data frames and datagrams when there are some, otherwise go alone in an "
        "ACK frame. A duplicate is acknowledged again, never delivered again; early frames wait "
        f"for the gap (a frame is kept while seq − next expected < window + "
        f"{link.URGENT_SLACK}, mod 2^16; beyond that it is dropped and comes again).",
        f"* **Selective acknowledgements.** While a receiver holds frames beyond a gap, every "
        f"frame carrying its ack also carries the {link.SACK_BITS}-bit `sack` bitmap (flag "
        "SACK) naming them, and it acknowledges at once — on a gap, a duplicate, or the frame "
        "that fills a gap — instead of waiting for `ack_delay`. A receiver never discards a "
        "frame it has reported, so the sender never sends a SACKed frame again.",
        f"* **Window.** Up to `window` (default {d['window']}) data frames in flight; further "
        f"messages wait in a backlog of at most {d['max_backlog']}.",
        "* **Fast retransmission.** A frame is sent again at once, without waiting for the "
        "timer, when a frame sent after it (a later transmission) is acknowledged or SACKed: "
        "the line keeps order, so it was lost (RACK, RFC 8985, with no reordering window; on a "
        "line that reorders, the cost is a spare copy). With a peer that sends no SACK, the "
        f"first unacknowledged frame is sent again after {link.DUPACK_THRESHOLD} duplicate "
        "bare acks.",
        "* **Retransmission timeout** (RFC 6298): SRTT and RTTVAR from frames sent once and "
        "acknowledged or SACKed, RTO = SRTT + 4·RTTVAR clamped to [`rto_min`, `rto_max`], "
        "doubled at each timeout, when the first unacknowledged frame and every frame not "
        "SACKed are sent again; Karn's rule (no RTT sample from a frame sent twice). A new "
        "sample collapses the backoff (RFC 6298 §5), so a link whose frames get through is "
        f"not left at a backed-off RTO. Defaults: initial {d['rto_initial']} s, min "
        f"{d['rto_min']} s, max {d['rto_max']} s. After `max_retries` (default "
        f"{d['max_retries']}) timeouts without progress (an ack or SACK of something new) a "
        "host declares the link lost (`LinkLost`); a pen keeps retransmitting at `rto_max` "
        "until a new epoch. A new epoch starts from the RTO the measured RTT gives (or "
        "`rto_initial` before any sample), not from the old epoch's backoff.",
        f"* **Urgent** messages (emergency stop) are sent at once, up to {link.URGENT_SLACK} "
        "beyond the window, and delivered on arrival even if earlier frames are missing; "
        "they are not delivered again when the gap fills. An urgent frame does **not** cancel "
        "the frames still missing before it: those are delivered, and obeyed, when they arrive "
        "(see [Rules for hosts](#rules-for-hosts)).",
        "* **Datagrams** (`send(…, reliable=False)`; the pen's `Telemetry`) go once in a "
        "frame flagged DATAGRAM|ACK (`ack` valid; +SACK when a bitmap is due), numbered from 0 "
        "in each epoch by their own counter: never acknowledged or sent again, not counted in "
        "the window, and "
        "written after the reliable frames that are ready at the same moment, so a reply or "
        "an event never waits behind one. The receiver keeps `next` (0 at the epoch's start) "
        "and delivers a datagram of the current epoch (`MessageReceived`) when "
        "(seq − next) mod 2^16 < 2^15, then sets `next` = seq + 1; otherwise it counts it "
        "stale (`datagrams_stale`): at most once, in order, gaps allowed. A sender drops them "
        "(counted in "
        "`datagrams_dropped`) while the link is not established, while "
        f"{_backlog_limit_text(link.DATAGRAM_BACKLOG_LIMIT)} for room in the window (it "
        "is full: the line is busy recovering and replies and records get all of it), and "
        f"beyond {link.DATAGRAM_QUEUE_LIMIT} waiting to be written. To a peer without "
        "datagrams they go as reliable messages while at most "
        f"{link.DATAGRAM_FALLBACK_BACKLOG} messages wait for the window, and still never "
        "ahead of a reply or record: a reliable message sent while such fallback datagrams "
        "wait for the window is queued ahead of them (they keep their order; frames in flight "
        "stay; urgent ones still go first), and a full backlog drops the oldest waiting "
        "fallback datagram (counted in `datagrams_dropped`) before it refuses a reliable "
        "message.",
        "* **Liveness.** A host with `liveness_timeout` set closes the link (`LinkLost`) when "
        "the pen has sent nothing for that long; heartbeats keep an idle link alive.",
        "* **Reconnect.** The host's `connect()` opens a new epoch and *returns* the messages "
        "the old one left unacknowledged: only its owner knows whether the pen restarted, so "
        "only the owner re-sends them (a re-sent command is answered from the pen's reply "
        "cache). The pen, on a new epoch, keeps only the *records* it had not got "
        "acknowledged (`RunReport`, `Event`, `FaultReport`): they go back to its held records "
        "for the next host session (see Records). Unacknowledged *replies* are discarded: the "
        "host gets them by re-sending the command, answered from the reply cache (only after "
        "`OpenSession` answered 1).",
        "",
        "Link parameters (`Link(role, …)` keywords):",
        "",
    ]
    rows = ((f"`{k}`", v, _LINK_PARAMETERS.get(k, "")) for k, v in d.items())
    return lines + _table(("parameter", "default", "meaning"), rows)


def _reachable(role: Role) -> list[LinkState]:
    """States a role can be in: its initial state and every state the table leads it to."""
    seen = [Link(role, rng=random.Random(0)).state]
    for state in seen:
        for (r, src, _), nxt in TRANSITIONS.items():
            if r is role and src is state and nxt not in seen:
                seen.append(nxt)
    return seen


def _state_section() -> list[str]:
    lines = [
        "## Link states",
        "",
        "Drawn from `link.TRANSITIONS` (rows for states a role never reaches are left out).",
        "",
    ]
    rows = []
    for role in Role:
        states = _reachable(role)
        lines += [f"{role.value.capitalize()}:", "", "```mermaid", "stateDiagram-v2"]
        lines.append(f"    [*] --> {states[0].name}")
        for (r, state, event), nxt in TRANSITIONS.items():
            if r is role and state in states:
                lines.append(f"    {state.name} --> {nxt.name}: {event.value}")
                rows.append((role.value, state.value, event.value, nxt.value))
        lines += ["```", ""]
    lines += _table(("role", "state", "input", "next state"), rows)
    lines += [
        "A local input (`connect()`, `close()`) missing from the table raises "
        "`LocalProtocolError` naming the state; a remote one is ignored and counted.",
        "",
    ]
    return lines


_ID_RANGES = (
    (0x01, 0x3F, "host → pen: commands and host notifications"),
    (0x40, 0x7F, "pen → host: replies and notifications"),
    (0x80, 0xDF, "unassigned"),
    (0xE0, 0xFF, "reserved for simulator commands; a real pen answers `Nak(UNKNOWN_COMMAND)`"),
)


def _summary_section() -> list[str]:
    lines = ["## Messages", "", "Every command and reply starts with `cmd_id`. Id ranges:", ""]
    used = {(lo, hi): sum(lo <= msg_id <= hi for msg_id in REGISTRY) for lo, hi, _ in _ID_RANGES}
    lines += _table(
        ("ids", "use", "assigned"),
        ((f"0x{lo:02X}–0x{hi:02X}", use, used[lo, hi]) for lo, hi, use in _ID_RANGES),
    )
    rows = []
    for cls in _messages():
        reply = f"[{cls.REPLY.__name__}]({_message_anchor(cls.REPLY)})" if cls.REPLY else ""
        name = f"[{cls.__name__}]({_message_anchor(cls)})"
        rows.append((f"0x{cls.ID:02X}", name, cls.KIND.name, reply, cls.STRUCT.size))
    lines += _table(("id", "message", "kind", "reply", "body bytes"), rows)
    lines += _table(("kind", "direction"), ((k.name, _KIND_TEXT.get(k, "")) for k in Kind))
    return lines


def _range_text(f: Field) -> str:
    if f.refuse is not None:
        return f"{f.describe_range()} → `{f.refuse.name}`"
    if f.enum is None:
        return f.describe_range()
    members = list(f.enum)
    if len(members) <= INLINE_ENUM_MEMBERS:
        return f"{f.enum.__name__}: " + f.describe_range()
    return f"[{f.enum.__name__}]({_anchor(f.enum.__name__)}) ({len(members)} values)"


def _field_rows(cls: type[Message]) -> Iterator[tuple[object, ...]]:
    offset = 1
    for f in cls.FIELDS:
        kind = f"{'char' if f.kind == 'str' else 'u8'}[{f.size}]" if f.size else f.kind
        yield offset, f"`{f.name}`", kind, f.byte_size, f.unit, _range_text(f), f.doc
        offset += f.byte_size


def _message_section(cls: type[Message]) -> list[str]:
    lines = [f"### 0x{cls.ID:02X} {cls.__name__}", ""]
    facts = [f"**{cls.KIND.name}** ({_KIND_TEXT.get(cls.KIND, '')})"]
    if cls.REPLY is not None:
        facts.append(f"reply [{cls.REPLY.__name__}]({_message_anchor(cls.REPLY)})")
    lines += ["; ".join(facts) + ".", ""]
    if doc := _doc(cls):
        lines += [doc, ""]
    header = ("offset", "field", "type", "bytes", "unit", "range / values", "meaning")
    lines += _table(header, [(0, "id", "u8", 1, "", f"0x{cls.ID:02X}", "message id")])[:-1]
    lines += _table(header, _field_rows(cls))[2:]
    raw = HEADER.size + 1 + cls.STRUCT.size + 4
    lines += [
        f"Body {cls.STRUCT.size} bytes (`struct` format `{cls.STRUCT.format}`); frame {raw} "
        f"bytes, {_wire_size(cls)} on the wire.",
        "",
    ]
    return lines


def _enum_section() -> list[str]:
    lines = ["## Enumerations", ""]
    for enum in messages.protocol_enums():
        kind = "bit flags" if issubclass(enum, IntFlag) else "values"
        lines += [f"### {enum.__name__}", "", f"`{enum.__module__}.{enum.__name__}`, {kind}."]
        lines += [""]
        if doc := _doc(enum):
            lines += [doc, ""]
        lines += _table(("value", "name"), ((m.value, m.name) for m in enum))
    return lines


def render() -> str:
    """The whole of docs/protocol.md."""
    lines = [*_intro(), *conventions_section(), *_frame_section(), *control_frames()]
    lines += [*_link_section(), *transports_section(), *_state_section()]
    lines += behaviour_section()
    lines += _session_section()
    lines += auth_section()
    lines += update_section()
    lines += answers_section()
    lines += rules_section()
    lines += _summary_section()
    for cls in _messages():
        lines += _message_section(cls)
    lines += _enum_section()
    lines += schema_hash_section()
    lines += calibration_crc_section()
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python3 -m micropen.protocol.docgen",
        description="Generate docs/protocol.md from the protocol declarations.",
    )
    parser.add_argument("--write", metavar="PATH", help="write to PATH instead of stdout")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        Path(args.write).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
