"""Every message the pen and its host exchange, declared once.

Encoders, decoders, validation, the schema hash and ``docs/protocol.md`` all come from these
classes. Layouts are fixed little-endian and never padded. ``Hello`` and ``Identity`` are frozen
forever: whatever else changes, two ends can always read each other's handshake and name both
versions when they disagree.

Every command and reply starts with ``cmd_id``: the host numbers its commands and the pen
answers with the same number. After ``Hello`` the host names its session (``OpenSession``); the
pen keeps that session's recent answers, so a command the same session re-sends after a
reconnect is answered again, never executed twice — and a command from another session, or a
different command under a reused number, is never mistaken for a duplicate. ``Stop`` and
``EmergencyStop`` are never answered from the cache: they are always executed.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Sequence
from enum import IntEnum, IntFlag
from typing import cast

from . import limits as L
from .errors import LocalProtocolError
from .schema import Field, Kind, Message, field

PROTOCOL_VERSION = 1


class Word(IntEnum):
    """An enum a person reads: ``str()`` and f-strings give the lower-case name
    (``report.outcome`` prints ``completed``, not ``2``); ``int()`` gives the wire value."""

    def __str__(self) -> str:
        return self.name.lower()

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


class PenState(Word):
    BOOT = 0
    IDLE = 1
    RUNNING = 2
    STOPPING = 3
    FAULT = 4
    BOOTLOADER = 5  # reserved: firmware update mode


class FaultCode(Word):
    NONE = 0
    STALL = 1
    OVER_TEMPERATURE = 2
    BATTERY_LOW = 3
    FLUID_INGRESS = 4
    DEPTH_ERROR = 5
    WATCHDOG = 6
    CALIBRATION_CORRUPT = 7
    CARTRIDGE_REMOVED = 8
    EMERGENCY_STOP = 9
    BROWNOUT = 10
    RATE_ERROR = 11  # stroke rate off the set rate by more than RATE_ACCEPT_TOL_PCT
    RETRACT_SLOW = 12  # needles not home RETRACT_MAX_MS after a stop (value: ms elapsed)


class ErrorCode(IntEnum):
    """Why the pen refused a command (carried by :class:`Nak`)."""

    MALFORMED = 1
    UNKNOWN_COMMAND = 2
    BAD_STATE = 3
    DEPTH_OUT_OF_RANGE = 4
    DEPTH_ABOVE_AREA_MAX = 5
    SOFT_CAP_NEEDS_OVERRIDE = 6
    RATE_OUT_OF_RANGE = 7
    RATE_NOT_ALLOWED_FOR_AREA = 8
    STROKES_OUT_OF_RANGE = 9
    DURATION_OUT_OF_RANGE = 10
    UNKNOWN_AREA = 11
    NO_CARTRIDGE = 12
    CARTRIDGE_USED = 13
    CARTRIDGE_EXPIRED = 14
    CARTRIDGE_UNKNOWN = 15
    CARTRIDGE_EXHAUSTED = 16
    BATTERY_LOW = 17
    OVER_TEMPERATURE = 18
    FAULT_ACTIVE = 19
    UNCALIBRATED = 20
    CALIBRATION_CRC_MISMATCH = 21
    CALIBRATION_DOWNGRADE = 22
    CALIBRATION_OUT_OF_RANGE = 23
    SCHEMA_MISMATCH = 24
    NOT_AUTHORIZED = 25
    WATCHDOG_OUT_OF_RANGE = 26
    TELEMETRY_OUT_OF_RANGE = 27
    NOT_CONNECTED = 28
    IMAGE_TOO_LARGE = 29  # value: image bytes, limit: the slot's bytes
    IMAGE_DOWNGRADE = 30  # value: the image's security counter, limit: the pen's
    IMAGE_REJECTED = 31  # value: the ImageFault (protocol.image) the uploaded image failed
    NO_UPLOAD = 32  # a chunk or finish without a FwBegin on this boot (value: FwPhase)
    IMAGE_NOT_VERIFIED = 33  # test-boot before FwFinish verified the image (value: FwPhase)
    CHUNK_OUT_OF_RANGE = 34  # value: offset + length, limit: the image size
    UPLOAD_INCOMPLETE = 35  # FwFinish before every byte arrived (value: next offset, limit: size)
    PAIRING_CLOSED = 36  # PairRequest/PairConfirm while the pen is not in pairing mode
    PAIRING_FAILED = 37  # PairConfirm that matches no request, or whose proof is wrong
    PAIRINGS_FULL = 38  # value: pairings held, limit: the most a pen holds (revoke one)
    IMAGE_ON_TRIAL = 39  # FwBegin while the running image is on trial: confirm it or reboot
    PAIRING_BUSY = 40  # value 1: another request is pending; 0: this host id is paired already
    PAIRING_NOT_ACCEPTED = 41  # PairConfirm before the pen's button accepted the code
    SERVICE_MODE_REQUIRED = 42  # a bench-fixture run outside service mode (value: the area)
    SERVICE_MODE_ACTIVE = 43  # a treatment-area run while in service mode (value: the area)


class EventCode(IntEnum):
    BOOTED = 1
    RUN_STARTED = 2
    STOPPED = 3
    EMERGENCY_STOP = 4
    FAULT_RAISED = 5
    FAULT_CLEARED = 6
    CARTRIDGE_MOUNTED = 7
    CARTRIDGE_REMOVED = 8
    CARTRIDGE_LOCKED = 9
    CARTRIDGE_RETIRED = 10
    WATCHDOG_EXPIRED = 11
    TEMPERATURE_WARNING = 12
    CALIBRATION_COMMITTED = 13
    SOFT_CAP_OVERRIDE = 14
    SIM_PARAMETER_CHANGED = 15
    SECURITY_DENIED = 16
    RETRACTED = 17
    IMAGE_REJECTED = 18  # value: the ImageFault (protocol.image) the image failed
    FIRMWARE_TEST_BOOT = 19  # value: security counter of the image now on trial
    FIRMWARE_CONFIRMED = 20  # value: the pen's security counter from now on
    FIRMWARE_REVERTED = 21  # an image on trial was not confirmed; value: its counter
    PAIRED = 22  # a host was paired (value: its host id)
    UNPAIRED = 23  # a pairing was revoked (value: the host id)
    UNPAIRED_CONNECT = 24  # an unpaired party opened a link while a paired host's was live
    AUTH_FAILURES = 25  # frames failing authentication in the last second (value: how many)
    UNPROVEN_CONNECT = 26  # a link claimed a paired host's id and never proved it (value: id)
    SERVICE_MODE_ENTERED = 27  # full-range bench-fixture runs allowed (value: 0)
    SERVICE_MODE_LEFT = 28  # value: ServiceExit, why


class ServiceExit(Word):
    """Why the pen left service mode (the value of a SERVICE_MODE_LEFT event)."""

    ASKED = 0  # SetServiceMode(enabled=0)
    SESSION_ENDED = 1  # another host session opened, or the link changed hands
    WATCHDOG = 2  # the host that entered it fell silent
    FAULT = 3  # a fault latched


class RunMode(Word):
    STROKES = 0
    DURATION = 1


class RunOutcome(Word):
    NONE = 0  # no run yet
    ACTIVE = 1
    COMPLETED = 2
    STOPPED = 3
    EMERGENCY_STOP = 4
    FAULT = 5
    WATCHDOG = 6
    CARTRIDGE_LIMIT = 7


class CartridgeState(Word):
    ABSENT = 0
    NEW = 1  # mounted, never run
    LOCKED = 2  # mounted and used in this mounting; may run until exhausted
    EXHAUSTED = 3
    REFUSED = 4  # re-mounted, expired or unknown
    RETIRED = 5  # fluid ingress or removal while running


class FwPhase(IntEnum):
    """Where an upload to the update slot stands (RAM: a reboot forgets it)."""

    NONE = 0  # nothing begun on this boot
    ERASING = 1  # the update slot is being erased; chunks are answered busy
    RECEIVING = 2  # chunks wanted from next_offset
    VERIFYING = 3  # hash and signature being checked; ask again after busy_ms
    VERIFIED = 4  # a valid, signed, newer image waits in the update slot
    REJECTED = 5  # the image failed verification (the Nak said why)
    TEST_PENDING = 6  # the pen reboots into the new image on trial


class FwSlotId(IntEnum):
    PRIMARY = 0  # the image the pen runs
    UPDATE = 1  # where uploads go; after a swap, the previous image (for a revert)


class CalBank(IntEnum):
    ACTIVE = 0
    STAGING = 1


class Capability(IntFlag):
    CALIBRATION_STORAGE = 1
    TELEMETRY = 2
    SIMULATOR = 4  # accepts the reserved simulator commands
    LINK_FAULT_INJECTION = 8
    DEVICE_FAULT_INJECTION = 16
    BENCH_INSTRUMENTS = 32
    LINK_AUTHENTICATION = 64  # pairs with hosts; needles move only for a paired host
    TELEMETRY_BATCH = 128  # streams TelemetryBatch on the reliable link when asked to


class SimParam(IntEnum):
    """Simulator parameters, settable over the protocol (reserved ids) and on the CLI."""

    LINK_DROP_PPM = 1
    LINK_CORRUPT_PPM = 2
    LINK_DUPLICATE_PPM = 3
    LINK_DELAY_MS = 4
    DISCONNECT = 5
    STALL = 10
    OVERHEAT = 11
    BROWNOUT_RESET = 12
    BATTERY_MV = 13
    CARTRIDGE_REMOVE = 14
    FLUID_INGRESS = 15
    DEPTH_DRIFT_UM = 16
    AMBIENT_DC = 17
    DEPTH_GAIN_ERROR_PPM = 20
    DEPTH_OFFSET_ERROR_UM = 21
    SPEED_GAIN_ERROR_PPM = 22
    CALIBRATION_CORRUPT = 23
    ACTUATOR_SPEED_PCT = 24


_CMD = "host's number for this command, echoed by the reply"
_CMD_ID = "host's number for this command (never 0: reserved), echoed by the reply"
_CAL_RANGE = ErrorCode.CALIBRATION_OUT_OF_RANGE


# ---------------------------------------------------------------------------------------------
# pen → host replies and notifications (0x40–0x7F)
# ---------------------------------------------------------------------------------------------
class Identity(Message, msg_id=0x40, kind=Kind.REPLY):
    """Who the pen is and what it can do. Layout frozen forever."""

    cmd_id: int = field("u32", doc=_CMD)
    protocol_version: int = field("u16", doc="wire protocol version")
    schema_hash: int = field("u32", doc="hash of every layout and limit")
    model: str = field("str", size=16)
    serial: str = field("str", size=16, doc="unit serial number")
    firmware_major: int = field("u8")
    firmware_minor: int = field("u8")
    firmware_patch: int = field("u8")
    hardware_revision: int = field("u8")
    needle_count: int = field("u8", doc="always 12 on this pen")
    capabilities: int = field("u32", doc="Capability flags")
    depth_min_um: int = field("u16", unit="µm")
    depth_max_um: int = field("u16", unit="µm")
    soft_cap_um: int = field("u16", unit="µm")
    rate_min_sps: int = field("u8", unit="strokes/s")
    rate_max_sps: int = field("u8", unit="strokes/s")
    boot_id: int = field("u32", doc="random per boot: a new value means the pen restarted")


class Ack(Message, msg_id=0x41, kind=Kind.REPLY):
    """The command was accepted (and, for actions, done or started)."""

    cmd_id: int = field("u32", doc=_CMD)
    value: int = field("u32", doc="command-specific result, e.g. the run id for Run")


class Nak(Message, msg_id=0x42, kind=Kind.REPLY):
    """The command was refused; nothing happened."""

    cmd_id: int = field("u32", doc=_CMD)
    error: ErrorCode = field("u8", enum=ErrorCode)
    value: int = field("i32", doc="the offending value, when there is one")
    limit: int = field("i32", doc="the limit it broke, when there is one")


class Status(Message, msg_id=0x43, kind=Kind.REPLY):
    """Everything the host needs to resynchronise after a reconnect."""

    cmd_id: int = field("u32", doc=_CMD)
    state: PenState = field("u8", enum=PenState)
    fault: FaultCode = field("u8", enum=FaultCode)
    depth_set_um: int = field("u16", hi=L.DEPTH_MAX_UM, unit="µm")
    rate_set_sps: int = field("u8", lo=L.RATE_MIN_SPS, hi=L.RATE_MAX_SPS, unit="strokes/s")
    soft_cap_override: int = field("u8", hi=1)
    watchdog_ms: int = field("u16", lo=L.HEARTBEAT_MIN_MS, hi=L.HEARTBEAT_MAX_MS, unit="ms")
    telemetry_hz: int = field("u16", hi=L.TELEMETRY_MAX_HZ, unit="Hz")
    run_id: int = field("u32", doc="0 before the first run of this boot")
    run_area: int = field("u8", hi=len(L.Area), doc="treatment area of the last run (0 none)")
    run_mode: RunMode = field("u8", enum=RunMode)
    run_target: int = field("u32", doc="strokes, or milliseconds for a duration run")
    run_strokes: int = field("u32", doc="strokes delivered by the last or current run")
    run_outcome: RunOutcome = field("u8", enum=RunOutcome)
    lifetime_strokes: int = field("u32")
    cartridge_id: int = field("u32", doc="0 when none is mounted")
    cartridge_state: CartridgeState = field("u8", enum=CartridgeState)
    cartridge_strokes: int = field("u32")
    battery_mv: int = field("u16", unit="mV")
    temperature_dc: int = field("i16", unit="0.1 °C")
    calibrated: int = field("u8", hi=1)
    boot_id: int = field("u32")
    uptime_ms: int = field("u32", unit="ms")
    service_mode: int = field("u8", hi=1, doc="1: bench-fixture runs only (SetServiceMode)")


class Telemetry(Message, msg_id=0x44, kind=Kind.NOTIFY):
    """One telemetry sample, streamed at the configured rate."""

    t_ms: int = field("u32", unit="ms", doc="pen uptime")
    state: PenState = field("u8", enum=PenState)
    depth_um: int = field("u16", unit="µm", doc="measured needle depth")
    rate_csps: int = field("u16", unit="0.01 strokes/s", doc="measured stroke rate")
    run_strokes: int = field("u32", doc="strokes of the current run")
    current_ma: int = field("u16", unit="mA")
    temperature_dc: int = field("i16", unit="0.1 °C")
    battery_mv: int = field("u16", unit="mV")
    cartridge_id: int = field("u32")
    cartridge_strokes: int = field("u32")


TELEMETRY_BATCH_SAMPLES = 8  # Telemetry bodies in one TelemetryBatch (8 × 27 = 216 bytes)
TELEMETRY_BATCH_DELAY_MAX_MS = 100  # the longest any sample may wait in the pen for its batch
TELEMETRY_SEQ_MOD = 1 << 32  # sample numbers wrap (after 49 days at 1 kHz)


class TelemetryBatch(Message, msg_id=0x4F, kind=Kind.NOTIFY):
    """Up to 8 consecutive telemetry samples in one frame, sent on the reliable link: lossless
    and in order with the pen's replies and records. A pen that reports the TELEMETRY_BATCH
    capability sends these instead of single Telemetry datagrams, for the rest of the link
    epoch, once the host asked with SetTelemetryBatch; to any other host it sends singles.

    ``samples`` holds ``sample_count`` Telemetry bodies back to back (the Telemetry layout
    without its id byte: a peer unpacks each with the Telemetry decoder), then zeros.

    The pen numbers every sample it takes from boot (``first_seq``, +1 per sample, mod
    2^32), sent or not, so a host sees a gap in the numbers as samples it did not get. A
    batch leaves when it is full, when its first sample is ``max_delay_ms`` old
    (SetTelemetryBatch, at most 100 ms), and before any reply or record the pen sends after
    its samples (so the stream and the records keep the pen's order). A batch is queued only
    while fewer than 8 messages of any kind wait for or occupy the link's window; one that
    finds more (a stalled or slow link) is dropped and its samples counted as skipped, so no
    telemetry piles up and replies and records keep the rest of the window. Samples are sent
    only to a named host session (OpenSession) and never held for a later one: samples
    taken with no session, and batches the link had not delivered when a new epoch opens,
    are dropped (a gap in the numbers)."""

    first_seq: int = field("u32", doc="number of the first sample (the pen's count since boot)")
    sample_count: int = field("u8", lo=1, hi=TELEMETRY_BATCH_SAMPLES, doc="samples carried")
    samples: bytes = field(
        "bytes",
        size=TELEMETRY_BATCH_SAMPLES * Telemetry.STRUCT.size,
        doc="sample_count Telemetry bodies (27 bytes each, no id byte), then zeros",
    )


TELEMETRY_SAMPLE_BYTES = Telemetry.STRUCT.size
_BATCH_BYTES = TELEMETRY_BATCH_SAMPLES * TELEMETRY_SAMPLE_BYTES


def pack_telemetry(first_seq: int, samples: Sequence[Telemetry]) -> TelemetryBatch:
    """A TelemetryBatch carrying ``samples`` (1–8, numbered from ``first_seq``)."""
    if not 1 <= len(samples) <= TELEMETRY_BATCH_SAMPLES:
        raise LocalProtocolError(
            f"a TelemetryBatch carries 1–{TELEMETRY_BATCH_SAMPLES} samples, not {len(samples)}"
        )
    body = b"".join(sample.encode()[1:] for sample in samples)
    return TelemetryBatch(first_seq, len(samples), body.ljust(_BATCH_BYTES, b"\0"))


def unpack_telemetry(batch: TelemetryBatch) -> list[Telemetry]:
    """The batch's samples, each decoded and range-checked exactly as a single Telemetry
    (RemoteProtocolError naming the field when one is out of range)."""
    raw, count, size = batch.samples, batch.sample_count, TELEMETRY_SAMPLE_BYTES
    if _ONLY_STATE_CHECKED:  # one unpack for the batch: only the state can be out of range
        body = raw if count == TELEMETRY_BATCH_SAMPLES else raw[: count * size]
        try:
            return [
                _new_sample(Telemetry, (a, _STATES[b], c, d, e, f, g, h, i, j))
                for a, b, c, d, e, f, g, h, i, j in _iter_samples(body)
            ]
        except KeyError:
            pass  # a state no PenState has: the sample decoder below names it
    decode = _decode_sample
    return [decode(raw, at, at + size) for at in range(0, count * size, size)]


def telemetry_sample(batch: TelemetryBatch, index: int) -> Telemetry:
    """Sample ``index`` (0-based, below ``sample_count``) of a batch, decoded and checked."""
    if not 0 <= index < batch.sample_count:
        raise LocalProtocolError(f"sample {index} of a batch of {batch.sample_count}")
    at = index * TELEMETRY_SAMPLE_BYTES
    return _decode_sample(batch.samples, at, at + TELEMETRY_SAMPLE_BYTES)


_decode_sample = cast(Callable[[bytes, int, int], Telemetry], Telemetry._decode)
_iter_samples = Telemetry.STRUCT.iter_unpack
_new_sample = tuple.__new__
_STATES = dict(PenState._value2member_map_)


def _full_range(f: Field) -> bool:
    bits = 8 * f.byte_size
    signed = f.struct_code.islower()
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    return f.enum is None and f.kind not in ("str", "bytes") and (f.lo, f.hi) == (lo, hi)


# unpack_telemetry's fast path holds while the state is Telemetry's only field with a check
_ONLY_STATE_CHECKED = [f.name for f in Telemetry.FIELDS if not _full_range(f)] == ["state"] and (
    Telemetry.FIELDS[1].enum is PenState
)


class Event(Message, msg_id=0x45, kind=Kind.NOTIFY):
    """Something happened on the pen (delivered reliably, never dropped)."""

    t_ms: int = field("u32", unit="ms")
    code: EventCode = field("u8", enum=EventCode)
    value: int = field("i32")
    run_id: int = field("u32")


class FaultReport(Message, msg_id=0x46, kind=Kind.NOTIFY):
    """A fault stopped the pen; needles are retracted and the motor is off."""

    t_ms: int = field("u32", unit="ms")
    fault: FaultCode = field("u8", enum=FaultCode)
    value: int = field("i32", doc="the reading that tripped it")
    run_id: int = field("u32")


class RunReport(Message, msg_id=0x47, kind=Kind.NOTIFY):
    """A run ended: the exact number of strokes the pen delivered."""

    run_id: int = field("u32")
    outcome: RunOutcome = field("u8", enum=RunOutcome)
    mode: RunMode = field("u8", enum=RunMode)
    target: int = field("u32")
    strokes: int = field("u32")
    duration_ms: int = field("u32", unit="ms")
    area: int = field("u8", lo=1, hi=len(L.Area))
    depth_um: int = field("u16", hi=L.DEPTH_MAX_UM, unit="µm")
    rate_sps: int = field("u8", lo=L.RATE_MIN_SPS, hi=L.RATE_MAX_SPS, unit="strokes/s")
    cartridge_id: int = field("u32")


class CartridgeInfo(Message, msg_id=0x48, kind=Kind.REPLY):
    """The mounted cartridge, as read from its tag."""

    cmd_id: int = field("u32", doc=_CMD)
    state: CartridgeState = field("u8", enum=CartridgeState)
    cartridge_id: int = field("u32")
    lot: str = field("str", size=12)
    manufactured_day: int = field("u32", unit="days since 1970-01-01")
    expiry_day: int = field("u32", unit="days since 1970-01-01")
    strokes_used: int = field("u32")
    run_ms_used: int = field("u32", unit="ms")


class CalData(Message, msg_id=0x49, kind=Kind.REPLY):
    """A calibration bank. ``crc`` covers the fields from version to counter."""

    cmd_id: int = field("u32", doc=_CMD)
    bank: CalBank = field("u8", enum=CalBank)
    valid: int = field("u8", hi=1, doc="1 when the stored CRC matches")
    version: int = field("u8")
    depth_gain_ppm: int = field("i32", lo=-L.CAL_GAIN_PPM_LIMIT, hi=L.CAL_GAIN_PPM_LIMIT)
    depth_offset_um: int = field("i16", lo=-L.CAL_OFFSET_UM_LIMIT, hi=L.CAL_OFFSET_UM_LIMIT)
    rate_gain_ppm: int = field("i32", lo=-L.CAL_GAIN_PPM_LIMIT, hi=L.CAL_GAIN_PPM_LIMIT)
    written_at: int = field("u32", unit="s since 1970-01-01")
    counter: int = field("u32", doc="monotonic: a lower counter is a downgrade and refused")
    crc: int = field("u32")


class SimParamValue(Message, msg_id=0x4A, kind=Kind.REPLY):
    """A simulator parameter's current value."""

    cmd_id: int = field("u32", doc=_CMD)
    param: SimParam = field("u8", enum=SimParam)
    value: int = field("i32")


class PairOffer(Message, msg_id=0x4D, kind=Kind.REPLY):
    """The pen's half of a pairing: its id and X25519 public key. Its screen shows the code."""

    cmd_id: int = field("u32", doc=_CMD)
    pen_id: int = field("u32", doc="names this pen's pairings (random per unit)")
    pen_public: bytes = field("bytes", size=32, doc="X25519 public key, for this pairing only")


class Pairing(Message, msg_id=0x4E, kind=Kind.REPLY):
    """One host the pen is paired with (keys never leave the pen)."""

    cmd_id: int = field("u32", doc=_CMD)
    position: int = field("u8", doc="0 for the first")
    total: int = field("u8", doc="pairings held (0: none; the entry is then empty)")
    host_id: int = field("u32")
    host_name: str = field("str", size=16)


class FwProgress(Message, msg_id=0x4B, kind=Kind.REPLY):
    """Where an upload stands. ``busy_ms`` > 0: the flash is busy (erasing, verifying) and the
    command was not done; send it again (a new cmd_id) after that long."""

    cmd_id: int = field("u32", doc=_CMD)
    phase: FwPhase = field("u8", enum=FwPhase)
    next_offset: int = field("u32", doc="the image offset the pen wants next")
    size: int = field("u32", doc="the image size given by FwBegin (0 none)")
    busy_ms: int = field("u16", unit="ms", doc="how long before the pen can take the command")


class FwSlot(Message, msg_id=0x4C, kind=Kind.REPLY):
    """One flash slot, as the bootloader sees it, and the pen's update state."""

    cmd_id: int = field("u32", doc=_CMD)
    slot: FwSlotId = field("u8", enum=FwSlotId)
    present: int = field("u8", hi=1, doc="1 when the slot holds a parseable image")
    valid: int = field("u8", hi=1, doc="1 when its hash and signature verify")
    version_major: int = field("u8")
    version_minor: int = field("u8")
    version_patch: int = field("u16")
    version_build: int = field("u32")
    security_counter: int = field("u32", doc="the image's")
    size: int = field("u32", doc="bytes, TLVs included")
    digest: bytes = field("bytes", size=32, doc="SHA-256 of header and payload")
    active: int = field("u8", hi=1, doc="1 for the image running now")
    confirmed: int = field("u8", hi=1, doc="1 when the running image is confirmed")
    pending: int = field("u8", hi=1, doc="1 when the next boot test-boots this slot")
    counter_floor: int = field("u32", doc="the pen's security counter: lower images refused")
    phase: FwPhase = field("u8", enum=FwPhase)
    next_offset: int = field("u32", doc="the upload's next wanted offset")


# ---------------------------------------------------------------------------------------------
# host → pen commands (0x01–0x3F)
# ---------------------------------------------------------------------------------------------
class Hello(Message, msg_id=0x01, kind=Kind.COMMAND, reply=Identity):
    """Handshake. Layout frozen forever; a schema mismatch is answered by a Nak."""

    cmd_id: int = field("u32", lo=1, doc=_CMD_ID)
    protocol_version: int = field("u16")
    schema_hash: int = field("u32")


class GetStatus(Message, msg_id=0x02, kind=Kind.COMMAND, reply=Status):
    cmd_id: int = field("u32", lo=1, doc=_CMD_ID)


class SetDepth(Message, msg_id=0x03, kind=Kind.COMMAND, reply=Ack):
    """Move the needle stop. 0 retracts; otherwise DEPTH_MIN_UM..DEPTH_MAX_UM."""

    cmd_id: int = field("u32", lo=1, doc=_CMD_ID)
    depth_um: int = field("u16", hi=L.DEPTH_MAX_UM, unit="µm", refuse=ErrorCode.DEPTH_OUT_OF_RANGE)
    soft_cap_override: int = field("u8", hi=1, doc="1 allows depths above the soft cap")


class SetRate(Message, msg_id=0x04, kind=Kind.COMMAND, reply=Ack):
    cmd_id: int = field("u32", lo=1, doc=_CMD_ID)
    rate_sps: int = field(
        "u8",
        lo=L.RATE_MIN_SPS,
        hi=L.RATE_MAX_SPS,
        unit="strokes/s",
        refuse=ErrorCode.RATE_OUT_OF_RANGE,
    )


class Run(Message, msg_id=0x05, kind=Kind.COMMAND, reply=Ack):
    """Start needling at the set depth and rate; Ack.value is the run id."""

    cmd_id: int = field("u32", lo=1, doc=_CMD_ID)
    area: int = field(
        "u8", lo=1, hi=len(L.Area), doc="treatment area (Area)", refuse=ErrorCode.UNKNOWN_AREA
    )
    mode: RunMode = field("u8", enum=RunMode)
    strokes: int = field(
        "u32",
        hi=L.STROKES_MAX,
        doc="stroke bound (STROKES mode)",
        refuse=ErrorCode.STROKES_OUT_OF_RANGE,
    )
    duration_ms: int = field(
        "u32",
        hi=L.RUN_DURATION_MAX_MS,
        unit="ms",
        doc="DURATION mode",
        refuse=ErrorCode.DURATION_OUT_OF_RANGE,
    )


class Stop(Message, msg_id=0x06, kind=Kind.COMMAND, reply=Ack):
    cmd_id: int = field("u32", lo=1, doc=_CMD_ID)


class EmergencyStop(Message, msg_id=0x07, kind=Kind.COMMAND, reply=Ack):
    """Motor off and needles home at once; latches a fault until ClearFault."""

    cmd_id: int = field("u32", lo=1, doc=_CMD_ID)


class Heartbeat(Message, msg_id=0x08, kind=Kind.HOST_NOTIFY):
    """Keeps the pen's watchdog fed. Any frame from the host feeds it too."""

    counter: int = field("u32")


class SetWatchdog(Message, msg_id=0x09, kind=Kind.COMMAND, reply=Ack):
    cmd_id: int = field("u32", lo=1, doc=_CMD_ID)
    timeout_ms: int = field(
        "u16",
        lo=L.HEARTBEAT_MIN_MS,
        hi=L.HEARTBEAT_MAX_MS,
        unit="ms",
        refuse=ErrorCode.WATCHDOG_OUT_OF_RANGE,
    )


class SetTelemetry(Message, msg_id=0x0A, kind=Kind.COMMAND, reply=Ack):
    cmd_id: int = field("u32", lo=1, doc=_CMD_ID)
    rate_hz: int = field(
        "u16",
        hi=L.TELEMETRY_MAX_HZ,
        unit="Hz",
        doc="0 stops the stream",
        refuse=ErrorCode.TELEMETRY_OUT_OF_RANGE,
    )


class GetCartridge(Message, msg_id=0x0B, kind=Kind.COMMAND, reply=CartridgeInfo):
    cmd_id: int = field("u32", lo=1, doc=_CMD_ID)


class CalRead(Message, msg_id=0x0C, kind=Kind.COMMAND, reply=CalData):
    cmd_id: int = field("u32", lo=1, doc=_CMD_ID)
    bank: CalBank = field("u8", enum=CalBank)


class CalWrite(Message, msg_id=0x0D, kind=Kind.COMMAND, reply=Ack):
    """Write the staging bank. Nothing changes in use until CalCommit."""

    cmd_id: int = field("u32", lo=1, doc=_CMD_ID)
    version: int = field("u8")
    depth_gain_ppm: int = field(
        "i32", lo=-L.CAL_GAIN_PPM_LIMIT, hi=L.CAL_GAIN_PPM_LIMIT, refuse=_CAL_RANGE
    )
    depth_offset_um: int = field(
        "i16", lo=-L.CAL_OFFSET_UM_LIMIT, hi=L.CAL_OFFSET_UM_LIMIT, refuse=_CAL_RANGE
    )
    rate_gain_ppm: int = field(
        "i32", lo=-L.CAL_GAIN_PPM_LIMIT, hi=L.CAL_GAIN_PPM_LIMIT, refuse=_CAL_RANGE
    )
    written_at: int = field("u32", unit="s since 1970-01-01")
    counter: int = field("u32")
    crc: int = field("u32", doc="calibration_crc() of the fields above")


class CalCommit(Message, msg_id=0x0E, kind=Kind.COMMAND, reply=Ack):
    """Make the staging bank active if its CRC matches ``crc`` and its counter is newer."""

    cmd_id: int = field("u32", lo=1, doc=_CMD_ID)
    crc: int = field("u32")


class ClearFault(Message, msg_id=0x0F, kind=Kind.COMMAND, reply=Ack):
    cmd_id: int = field("u32", lo=1, doc=_CMD_ID)


class OpenSession(Message, msg_id=0x10, kind=Kind.COMMAND, reply=Ack):
    """Name the host session that the following commands belong to (after Hello, once per
    link epoch). The pen keeps a reply cache per session and answers a re-sent command from it
    only when the same session sends the same command (message and body) under the same
    ``cmd_id``. Ack.value is 1 when the pen still holds this session's cache (the host may
    re-send its unanswered commands), 0 when the session is new to this boot (it may not)."""

    cmd_id: int = field("u32", lo=1, doc=_CMD_ID)
    session: int = field("u32", lo=1, doc="random per host session, kept across reconnects")


FW_CHUNK_BYTES = 224  # image bytes per FwChunk


class FwBegin(Message, msg_id=0x11, kind=Kind.COMMAND, reply=FwProgress):
    """Start (or resume) an upload to the update slot. The same size and digest as the upload
    in progress resume it (``next_offset`` says where); anything else erases the slot and
    starts at 0. Refused before any erase when too large or older than the pen's counter."""

    cmd_id: int = field("u32", lo=1, doc=_CMD_ID)
    size: int = field("u32", lo=1, doc="image bytes, TLVs included")
    digest: bytes = field("bytes", size=32, doc="SHA-256 of the whole image file")
    security_counter: int = field("u32", doc="the header's (checked again from the image)")


class FwChunk(Message, msg_id=0x12, kind=Kind.COMMAND, reply=FwProgress):
    """Image bytes at ``offset``. Written only when ``offset`` is the next wanted one; any
    other offset is answered with the one wanted, so a re-sent or early chunk is harmless."""

    cmd_id: int = field("u32", lo=1, doc=_CMD_ID)
    offset: int = field("u32")
    length: int = field("u8", lo=1, hi=FW_CHUNK_BYTES)
    data: bytes = field("bytes", size=FW_CHUNK_BYTES, doc="first ``length`` bytes are image")


class FwFinish(Message, msg_id=0x13, kind=Kind.COMMAND, reply=FwProgress):
    """All bytes sent: verify the digest, structure, signature and counter (busy meanwhile)."""

    cmd_id: int = field("u32", lo=1, doc=_CMD_ID)


class FwTestBoot(Message, msg_id=0x14, kind=Kind.COMMAND, reply=FwProgress):
    """Reboot into the verified image on trial; unless confirmed, the next boot reverts."""

    cmd_id: int = field("u32", lo=1, doc=_CMD_ID)


class FwConfirm(Message, msg_id=0x15, kind=Kind.COMMAND, reply=Ack):
    """Keep the image on trial for good and raise the security counter to its own.
    Ack.value is the pen's security counter. Confirming a confirmed image is harmless."""

    cmd_id: int = field("u32", lo=1, doc=_CMD_ID)


class FwGetSlot(Message, msg_id=0x16, kind=Kind.COMMAND, reply=FwSlot):
    cmd_id: int = field("u32", lo=1, doc=_CMD_ID)
    slot: FwSlotId = field("u8", enum=FwSlotId)


class PairRequest(Message, msg_id=0x17, kind=Kind.COMMAND, reply=PairOffer):
    """Ask a pen in pairing mode (a physical act on the pen) to pair with this host."""

    cmd_id: int = field("u32", lo=1, doc=_CMD_ID)
    host_id: int = field("u32", lo=1, doc="random per host installation")
    host_public: bytes = field("bytes", size=32, doc="X25519 public key, for this pairing only")
    host_name: str = field("str", size=16, doc="shown on the pen and in its pairing list")


class PairConfirm(Message, msg_id=0x18, kind=Kind.COMMAND, reply=Ack):
    """The technician saw the same code on both screens: store the pairing. ``proof`` shows
    the host holds the key (linkauth.pair_proof). Ack.value is the pen id."""

    cmd_id: int = field("u32", lo=1, doc=_CMD_ID)
    host_id: int = field("u32", lo=1)
    proof: bytes = field("bytes", size=16)


class GetPairing(Message, msg_id=0x19, kind=Kind.COMMAND, reply=Pairing):
    cmd_id: int = field("u32", lo=1, doc=_CMD_ID)
    position: int = field("u8", doc="0 for the first")


class Unpair(Message, msg_id=0x1A, kind=Kind.COMMAND, reply=Ack):
    """Forget a host (Ack.value: pairings left). Its current link stays until it reconnects."""

    cmd_id: int = field("u32", lo=1, doc=_CMD_ID)
    host_id: int = field("u32", lo=1)


class SetServiceMode(Message, msg_id=0x1B, kind=Kind.COMMAND, reply=Ack):
    """Enter (from IDLE) or leave service mode. In service mode the pen runs only on the bench
    fixture (the whole envelope, every speed level: calibration); outside it, never there. It
    belongs to the host session that entered it: another session, the watchdog or a fault
    ends it, and it is not kept across a reboot."""

    cmd_id: int = field("u32", lo=1, doc=_CMD_ID)
    enabled: int = field("u8", hi=1)


class SetTelemetryBatch(Message, msg_id=0x1C, kind=Kind.COMMAND, reply=Ack):
    """Ask for telemetry in TelemetryBatch frames (pens reporting the TELEMETRY_BATCH
    capability; others answer UNKNOWN_COMMAND). Holds for this link epoch: a new epoch, and so
    every host that never asks, gets single Telemetry datagrams. The rate is SetTelemetry's.
    Samples taken before this command are sent before its Ack."""

    cmd_id: int = field("u32", lo=1, doc=_CMD_ID)
    max_samples: int = field(
        "u8",
        hi=TELEMETRY_BATCH_SAMPLES,
        doc="samples per batch at most; 0: single Telemetry datagrams again",
        refuse=ErrorCode.TELEMETRY_OUT_OF_RANGE,
    )
    max_delay_ms: int = field(
        "u8",
        lo=1,
        hi=TELEMETRY_BATCH_DELAY_MAX_MS,
        unit="ms",
        doc="a batch leaves when its first sample is this old, full or not",
        refuse=ErrorCode.TELEMETRY_OUT_OF_RANGE,
    )


# ---------------------------------------------------------------------------------------------
# simulator-only commands (reserved 0xE0–0xFF); a real pen answers UNKNOWN_COMMAND
# ---------------------------------------------------------------------------------------------
class SimSet(Message, msg_id=0xE0, kind=Kind.SIM_COMMAND, reply=Ack):
    """Set a simulator parameter (fault injection, manufacturing errors)."""

    cmd_id: int = field("u32", lo=1, doc=_CMD_ID)
    param: SimParam = field("u8", enum=SimParam)
    value: int = field("i32")


class SimGet(Message, msg_id=0xE1, kind=Kind.SIM_COMMAND, reply=SimParamValue):
    cmd_id: int = field("u32", lo=1, doc=_CMD_ID)
    param: SimParam = field("u8", enum=SimParam)


class SimMountCartridge(Message, msg_id=0xE2, kind=Kind.SIM_COMMAND, reply=Ack):
    """Put a cartridge on the simulated pen (cartridge_id 0 removes it)."""

    cmd_id: int = field("u32", lo=1, doc=_CMD_ID)
    cartridge_id: int = field("u32")
    lot: str = field("str", size=12)
    manufactured_day: int = field("u32", unit="days since 1970-01-01")
    expiry_day: int = field("u32", unit="days since 1970-01-01")


_CAL_CRC_LAYOUT = struct.Struct("<BihiII")


def calibration_crc(
    version: int,
    depth_gain_ppm: int,
    depth_offset_um: int,
    rate_gain_ppm: int,
    written_at: int,
    counter: int,
) -> int:
    """CRC-32 of a calibration record, as both the pen and the host compute it."""
    packed = _CAL_CRC_LAYOUT.pack(
        version, depth_gain_ppm, depth_offset_um, rate_gain_ppm, written_at, counter
    )
    return zlib.crc32(packed)


COMMANDS = tuple(
    cls for cls in Message.__subclasses__() if cls.KIND in (Kind.COMMAND, Kind.SIM_COMMAND)
)


def protocol_enums() -> list[type[IntEnum] | type[IntFlag]]:
    """Every enumeration a peer needs, once, in declaration order: those of this module (not
    a base like :class:`Word` that only adds behaviour) and ``limits.Area``. The reference
    (docgen), the C kit (cgen) and its tests list the same ones from here."""
    found: list[type[IntEnum] | type[IntFlag]] = [
        obj
        for obj in globals().values()
        if isinstance(obj, type)
        and issubclass(obj, IntEnum | IntFlag)
        and obj.__module__ == __name__
        and len(obj.__members__) > 0
    ]
    return [*found, L.Area]
