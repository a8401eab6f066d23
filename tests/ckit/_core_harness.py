"""Builds the hand-written C core (protocol/c/) for tests and drives it.

* :func:`core_lib` — the core, the OpenSSL test port and the flat shim (tests/ckit/c/core_*.c)
  as a shared library for ctypes (not sanitized: an ASan library cannot be loaded by ctypes).
* :func:`core_driver` — the same sources as a sanitized program that runs a script of calls
  from stdin (tests/ckit/c/core_driver.c).
* :class:`CPen`, :class:`CReplyCache`, :class:`CDeframer` — ctypes wrappers that record every
  call as a driver command and every result as the line the driver prints for it, so any
  scenario run in-process can be replayed under ASan/UBSan and compared line by line
  (:func:`replay`).
* :class:`Interop` — the Python host :class:`~micropen.protocol.link.Link` and a :class:`CPen`
  on a FIFO line in virtual time (integer milliseconds) that loses, corrupts, duplicates or
  replays frames as told.
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import math
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cbuild

from micropen.protocol.events import Connected, LinkLost, MessageReceived, PeerReset
from micropen.protocol.link import Link
from micropen.protocol.schema import Message

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "protocol" / "c"
SHIMS = Path(__file__).resolve().parent / "c"
CORE_SOURCES = sorted(CORE.glob("mp_*.c"))
PORT_SOURCES = [SHIMS / "core_port.c", SHIMS / "core_shim.c"]
INCLUDE = [CORE, SHIMS]

# one small build for every test of the macros (each build costs seconds): 4 frames in flight,
# 8 waiting, 3 received messages held, of 16 bytes at most; 3 reply-cache sessions of 8
SMALL = (
    "MP_LINK_WINDOW_MAX=4",
    "MP_LINK_BACKLOG=8",
    "MP_LINK_RX_SLOTS=3",
    "MP_LINK_RX_MESSAGE_MAX=16",
    "MP_REPLYCACHE_SESSIONS=3",
    "MP_REPLYCACHE_PER_SESSION=8",
)

EV_NONE, EV_CONNECTED, EV_MESSAGE, EV_AUTHENTICATED_FRAME = 0, 1, 2, 3
SEND_URGENT, SEND_DATAGRAM = 1, 2
E_ARG, E_FULL, E_DROPPED, E_BUFFER, E_COBS, E_SHORT, E_UNKNOWN = (-20, -21, -22, -23, -24, -25, -26)

# mp_link_stats, field by field (core_pen_stats copies the struct as 32-bit words)
STAT_NAMES = [
    "frames_sent",
    "bytes_sent",
    "frames_received",
    "messages_sent",
    "messages_received",
    "retransmits",
    "fast_retransmits",
    "timeouts",
    "duplicates",
    "out_of_order",
    "out_of_window",
    "stale_epoch",
    "malformed_frames",
    "resets_sent",
    "resets_received",
    "connects",
    "datagrams_received",
    "datagrams_dropped",
    "datagrams_stale",
    "auth_failures",
    "auth_replays",
    "syns_refused",
    "frames_authenticated",
    "rx_no_room",
    "srtt_ms",
    "rttvar_ms",
    "rto_ms",
    "frames",
    "bytes_in",
    "crc_failures",
    "cobs_failures",
    "oversize",
    "bytes_discarded",
]
STATE_NAMES = [
    "established",
    "epoch",
    "authenticated",
    "peer_id",
    "backlog",
    "in_flight",
    "send_room",
    "idle",
    "accepts_datagram",
]
DEFRAMER_STATS = [
    "frames",
    "bytes_in",
    "crc_failures",
    "cobs_failures",
    "oversize",
    "bytes_discarded",
]


@functools.cache
def _workdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="micropen-ccore-"))
    atexit.register(shutil.rmtree, path, True)
    return path


def _variant(defines: tuple[str, ...]) -> str:
    return "".join("-" + d.replace("=", "_") for d in defines)


@functools.cache
def core_lib(defines: tuple[str, ...] = ()) -> ctypes.CDLL:
    """The core as a shared library (built once per process), with -D``defines``."""
    out = cbuild.build(
        [*CORE_SOURCES, *PORT_SOURCES],
        _workdir() / f"libmpcore{_variant(defines)}.so",
        include=INCLUDE,
        shared=True,
        extra=[*(f"-D{d}" for d in defines), "-lcrypto"],
    )
    lib = ctypes.CDLL(str(out))
    u8p, u32p = ctypes.c_char_p, ctypes.POINTER(ctypes.c_uint32)
    size, vp, u32 = ctypes.c_size_t, ctypes.c_void_p, ctypes.c_uint32
    sig: dict[str, tuple[object, list[object]]] = {
        "mp_crc32": (u32, [u32, u8p, size]),
        "mp_cobs_encode": (size, [u8p, size, vp, size]),
        "mp_cobs_decode": (ctypes.c_int, [u8p, size, vp, size]),
        "mp_deframer_init": (None, [vp]),
        "mp_deframer_feed": (
            size,
            [vp, u8p, size, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(size)],
        ),
        "mp_deframer_reset": (None, [vp]),
        "core_deframer_stats": (None, [vp, u32p]),
        "mp_replycache_init": (None, [vp]),
        "mp_replycache_open": (ctypes.c_int, [vp, u32]),
        "mp_replycache_store": (ctypes.c_int, [vp, u32, u8p, size, u8p, size]),
        "mp_replycache_lookup": (
            ctypes.c_int,
            [vp, u32, u8p, size, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(size)],
        ),
        "mp_replycache_count": (size, [vp, u32]),
        "core_pen_size": (size, []),
        "core_link_size": (size, []),
        "core_replycache_size": (size, []),
        "core_deframer_size": (size, []),
        "core_stats_words": (size, []),
        "core_pen_init": (None, [vp, u32, u32, u32, u32, u32, u32, ctypes.c_int, ctypes.c_uint64]),
        "core_pen_pair": (ctypes.c_int, [vp, u32, u8p]),
        "core_pen_refuse": (None, [vp, ctypes.c_int]),
        "core_pen_receive": (None, [vp, u8p, size, u32]),
        "core_pen_poll": (ctypes.c_int, [vp, u32p, vp, size]),
        "core_pen_send": (ctypes.c_int, [vp, u8p, size, ctypes.c_uint, u32]),
        "core_pen_transmit": (size, [vp, vp, size, u32]),
        "core_pen_tick": (None, [vp, u32]),
        "core_pen_deadline": (u32, [vp, u32]),
        "core_pen_take_unsent": (ctypes.c_int, [vp, vp, size, ctypes.POINTER(ctypes.c_uint)]),
        "core_pen_state": (None, [vp, u32p]),
        "core_pen_stats": (size, [vp, u32p, size]),
        "core_pen_close": (None, [vp]),
        "core_pen_admits": (None, [vp, u32p]),
        "core_hkdf": (None, [u8p, size, u8p, size, u8p, size, vp, size]),
        "core_session_keys": (None, [u8p, u32, u32, u8p, u32, u8p, vp, vp]),
        "core_synack_tag": (None, [u8p, u32, u32, u8p, u32, u8p, vp]),
        "core_resume_tag": (None, [u8p, u32, u32, u32, vp]),
    }
    for name, (restype, argtypes) in sig.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    return lib


@functools.cache
def core_driver(defines: tuple[str, ...] = ()) -> Path:
    """The script driver, under ASan/UBSan (built once per process), with -D``defines``."""
    return cbuild.build(
        [*CORE_SOURCES, *PORT_SOURCES, SHIMS / "core_driver.c"],
        _workdir() / f"core_driver{_variant(defines)}",
        include=INCLUDE,
        sanitize=True,
        extra=[*(f"-D{d}" for d in defines), "-lcrypto"],
    )


def hx(data: bytes) -> str:
    return data.hex() if data else "-"


class Recorder:
    """Calls made, as driver commands, and their results, as the lines the driver prints.
    ``defines``: the -D flags of the build the calls went to (the replay uses the same)."""

    def __init__(self, defines: tuple[str, ...] = ()) -> None:
        self.script: list[str] = []
        self.output: list[str] = []
        self.defines = defines

    def _log(self, command: str, result: str) -> None:
        self.script.append(command)
        self.output.append(result)


def replay(*recorders: Recorder) -> None:
    """Run the recorded calls again in the sanitized driver; its lines must equal the results
    the calls gave in-process (and ASan/UBSan must stay quiet, or the run fails)."""
    script = [line for r in recorders for line in r.script]
    expected = [line for r in recorders for line in r.output]
    variants = {r.defines for r in recorders}
    assert len(variants) == 1, "one replay runs one build"
    driver = core_driver(variants.pop())
    out = cbuild.run(driver, stdin=("\n".join(script) + "\n").encode()).decode()
    got = out.splitlines()
    assert len(got) == len(expected), f"driver printed {len(got)} lines for {len(expected)}"
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert g == e, f"line {i} ({script[i][:60]}…): sanitized {g[:80]!r} != ctypes {e[:80]!r}"


@dataclass(frozen=True)
class PenEvent:
    type: int
    epoch: int = 0
    authenticated: bool = False
    peer_id: int = 0
    msg: bytes = b""
    urgent: bool = False
    datagram: bool = False
    truncated: bool = False
    count: int = 0


class CPen(Recorder):
    """One C pen link (mp_link, role PEN) with the OpenSSL port and a pairing table."""

    def __init__(
        self,
        *,
        pen_id: int = 0x50454E31,
        window: int = 0,
        rto_initial: int = 0,
        rto_min: int = 0,
        rto_max: int = 0,
        ack_delay: int = 0,
        auth: bool = False,
        seed: int = 1,
        recorder: Recorder | None = None,
        defines: tuple[str, ...] = (),
    ) -> None:
        super().__init__(defines)
        if recorder is not None:  # share one script (a restarted pen continues it)
            assert recorder.defines == defines
            self.script, self.output = recorder.script, recorder.output
        self.lib = core_lib(defines)
        self.buf = ctypes.create_string_buffer(self.lib.core_pen_size())
        args = (pen_id, window, rto_initial, rto_min, rto_max, ack_delay, int(auth), seed)
        self.lib.core_pen_init(self.buf, *args)
        self._log("init " + " ".join(map(str, args)), "ok")
        self._out = ctypes.create_string_buffer(1 << 16)

    def pair(self, host_id: int, key: bytes) -> int:
        rc: int = self.lib.core_pen_pair(self.buf, host_id, key)
        self._log(f"pair {host_id} {hx(key)}", str(rc))
        return rc

    def refuse(self, refuse: bool) -> None:
        self.lib.core_pen_refuse(self.buf, int(refuse))
        self._log(f"refuse {int(refuse)}", "ok")

    def receive(self, data: bytes, now: int) -> None:
        self.lib.core_pen_receive(self.buf, data, len(data), now)
        self._log(f"recv {now} {hx(data)}", "ok")

    def poll(self) -> PenEvent:
        out = (ctypes.c_uint32 * 7)()
        msg = ctypes.create_string_buffer(512)
        kind = self.lib.core_pen_poll(self.buf, out, msg, 512)
        body = msg.raw[: out[4]] if kind == EV_MESSAGE else b""
        self._log("poll", " ".join(str(v) for v in out) + " " + hx(body))
        flags = out[5]
        return PenEvent(
            kind, out[1], bool(out[2]), out[3], body, bool(flags & 1), bool(flags & 2),
            bool(flags & 4), out[6],
        )  # fmt: skip

    def events(self) -> list[PenEvent]:
        out = []
        while (event := self.poll()).type != EV_NONE:
            out.append(event)
        return out

    def send(self, msg: bytes | Message, now: int, flags: int = 0) -> int:
        data = msg if isinstance(msg, bytes) else msg.encode()
        rc: int = self.lib.core_pen_send(self.buf, data, len(data), flags, now)
        self._log(f"send {now} {flags} {hx(data)}", str(rc))
        return rc

    def transmit(self, now: int, cap: int = 1024) -> bytes:
        n = self.lib.core_pen_transmit(self.buf, self._out, cap, now)
        data = self._out.raw[:n]
        self._log(f"tx {now} {cap}", hx(data))
        return data

    def data_to_send(self, now: int, cap: int = 1024) -> bytes:
        """Everything due now (transmit until it returns nothing)."""
        out = b""
        while chunk := self.transmit(now, cap):
            out += chunk
        return out

    def tick(self, now: int) -> None:
        self.lib.core_pen_tick(self.buf, now)
        self._log(f"tick {now}", "ok")

    def deadline(self, now: int) -> int:
        at: int = self.lib.core_pen_deadline(self.buf, now)
        self._log(f"deadline {now}", str(at))
        return at

    def take_unsent(self, cap: int = 256) -> tuple[int, int, bytes]:
        msg = ctypes.create_string_buffer(max(cap, 1))
        flags = ctypes.c_uint(0)
        rc = self.lib.core_pen_take_unsent(self.buf, msg, cap, ctypes.byref(flags))
        body = msg.raw[:rc] if rc > 0 else b""
        self._log(f"take {cap}", f"{rc} {flags.value if rc > 0 else 0} {hx(body)}")
        return rc, flags.value, body

    def state(self) -> dict[str, int]:
        out = (ctypes.c_uint32 * 9)()
        self.lib.core_pen_state(self.buf, out)
        self._log("state", " ".join(str(v) for v in out))
        return dict(zip(STATE_NAMES, out, strict=True))

    def stats(self) -> dict[str, int]:
        out = (ctypes.c_uint32 * 64)()
        n = self.lib.core_pen_stats(self.buf, out, 64)
        self._log("stats", " ".join(str(out[i]) for i in range(n)))
        return dict(zip(STAT_NAMES, list(out)[:n], strict=True))

    def admits(self) -> tuple[int, int, int]:
        out = (ctypes.c_uint32 * 3)()
        self.lib.core_pen_admits(self.buf, out)
        self._log("admits", f"{out[0]} {out[1]} {out[2]}")
        return out[0], out[1], out[2]

    def close(self) -> None:
        self.lib.core_pen_close(self.buf)
        self._log("close", "ok")


class CReplyCache(Recorder):
    def __init__(self, defines: tuple[str, ...] = ()) -> None:
        super().__init__(defines)
        self.lib = core_lib(defines)
        self.buf = ctypes.create_string_buffer(self.lib.core_replycache_size())
        self.lib.mp_replycache_init(self.buf)
        self._log("rc_init", "ok")

    def open(self, session: int) -> int:
        rc: int = self.lib.mp_replycache_open(self.buf, session)
        self._log(f"rc_open {session}", str(rc))
        return rc

    def store(self, session: int, request: bytes, reply: bytes) -> int:
        rc: int = self.lib.mp_replycache_store(
            self.buf, session, request or None, len(request), reply or None, len(reply)
        )
        self._log(f"rc_store {session} {hx(request)} {hx(reply)}", str(rc))
        return rc

    def lookup(self, session: int, request: bytes) -> bytes | None:
        ptr, size = ctypes.c_void_p(), ctypes.c_size_t()
        rc = self.lib.mp_replycache_lookup(
            self.buf, session, request or None, len(request), ctypes.byref(ptr), ctypes.byref(size)
        )
        reply = ctypes.string_at(ptr.value, size.value) if rc and size.value else b""
        self._log(f"rc_lookup {session} {hx(request)}", f"{rc} {hx(reply)}")
        return reply if rc else None

    def count(self, session: int) -> int:
        n: int = self.lib.mp_replycache_count(self.buf, session)
        self._log(f"rc_count {session}", str(n))
        return n


class CDeframer(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.lib = core_lib()
        self.buf = ctypes.create_string_buffer(self.lib.core_deframer_size())
        self.lib.mp_deframer_init(self.buf)
        self._log("df_init", "ok")

    def feed(self, data: bytes) -> list[bytes]:
        frames: list[bytes] = []
        view = data
        frame, size = ctypes.c_void_p(), ctypes.c_size_t()
        while view:
            used = self.lib.mp_deframer_feed(
                self.buf, view, len(view), ctypes.byref(frame), ctypes.byref(size)
            )
            if frame.value:
                frames.append(ctypes.string_at(frame.value, size.value))
            view = view[used:]
        self._log(f"df_feed {hx(data)}", ",".join(f.hex() for f in frames) or "-")
        return frames

    def reset(self) -> None:
        self.lib.mp_deframer_reset(self.buf)
        self._log("df_reset", "ok")

    def stats(self) -> dict[str, int]:
        out = (ctypes.c_uint32 * 6)()
        self.lib.core_deframer_stats(self.buf, out)
        self._log("df_stats", " ".join(str(v) for v in out))
        return dict(zip(DEFRAMER_STATS, out, strict=True))


# ------------------------------------------------------------------------------ interop
def split_frames(data: bytes) -> list[bytes]:
    """One write split into its frames, each still delimited."""
    return [b"\0" + piece + b"\0" for piece in data.split(b"\0") if piece]


@dataclass
class Line:
    """Both directions of a FIFO line in virtual milliseconds. Each frame written takes the
    next fault from ``faults`` (then "ok" for ever): "ok", "drop", "corrupt" (one byte inside
    it flipped), "dup" (arrives twice), "replay" (arrives, and a copy of an earlier frame of
    the same direction follows it). Frames arrive ``delay`` ms after they were written, in
    the order written."""

    faults: list[str] = field(default_factory=list)
    delay: int = 1
    _queue: list[tuple[int, bool, bytes]] = field(default_factory=list)
    _history: dict[bool, list[bytes]] = field(default_factory=lambda: {True: [], False: []})
    _next_fault: int = 0
    replay_filter: Callable[[bytes], bool] = lambda frame: True

    def _fault(self) -> str:
        if self._next_fault < len(self.faults):
            self._next_fault += 1
            return self.faults[self._next_fault - 1]
        return "ok"

    def carry(self, data: bytes, now: int, *, to_pen: bool) -> None:
        for frame in split_frames(data):
            fault = self._fault()
            at = now + self.delay
            if fault == "drop":
                continue
            if fault == "corrupt":
                inner = bytearray(frame)
                i = 1 + (len(frame) * 7 + now) % (len(frame) - 2)
                inner[i] ^= 0x5A
                self._queue.append((at, to_pen, bytes(inner)))
                continue
            self._queue.append((at, to_pen, frame))
            if fault == "dup":
                self._queue.append((at, to_pen, frame))
            history = self._history[to_pen]
            if fault == "replay":
                old = [f for f in history if self.replay_filter(f)]
                if old:
                    self._queue.append((at, to_pen, old[(now * 31) % len(old)]))
            history.append(frame)

    def due(self, now: int) -> list[tuple[bool, bytes]]:
        out = [(to_pen, f) for at, to_pen, f in self._queue if at <= now]
        self._queue = [item for item in self._queue if item[0] > now]
        return out

    def due_now(self, now: int) -> bool:
        return any(at <= now for at, _, _ in self._queue)

    def next_arrival(self) -> int | None:
        return min((at for at, _, _ in self._queue), default=None)

    @property
    def empty(self) -> bool:
        return not self._queue


def is_handshake(frame: bytes) -> bool:
    """Whether a delimited frame is a SYN or SYNACK (replaying those opens old epochs)."""
    from micropen.protocol.framing import FrameDecoder

    raws = FrameDecoder().feed(frame)
    return bool(raws) and bool(raws[0][0] & 0x0C)


@dataclass
class Interop:
    """The Python host link and a C pen on one :class:`Line`, in virtual time (ms)."""

    host: Link
    pen: CPen
    line: Line
    now: int = 0
    host_id: int | None = None
    host_received: list[tuple[int, Message]] = field(default_factory=list)  # (epoch, message)
    pen_received: list[tuple[int, PenEvent]] = field(default_factory=list)  # (epoch, event)
    pen_connects: list[PenEvent] = field(default_factory=list)
    host_connects: list[Connected] = field(default_factory=list)
    resets: int = 0
    losses: int = 0
    reconnect_on_loss: bool = True
    resent: list[Message] = field(default_factory=list)

    def connect(self) -> None:
        leftovers = self.host.connect(self.now / 1000.0, self.host_id)
        for message in leftovers:  # the owner re-sends what the old epoch left undelivered
            self.resent.append(message)
            self.host.send(message, self.now / 1000.0)

    def _pump(self) -> None:
        t = self.now / 1000.0
        self.line.carry(self.host.data_to_send(t), self.now, to_pen=True)
        self.line.carry(self.pen.data_to_send(self.now), self.now, to_pen=False)

    def _arrive(self) -> None:
        t = self.now / 1000.0
        for to_pen, frame in self.line.due(self.now):
            if to_pen:
                self.pen.receive(frame, self.now)
                for event in self.pen.events():
                    if event.type == EV_CONNECTED:
                        self.pen_connects.append(event)
                    elif event.type == EV_MESSAGE:
                        self.pen_received.append((self.pen_connects[-1].epoch, event))
            else:
                self.host.receive_data(frame, t)
                for ev in self.host.events():
                    if isinstance(ev, MessageReceived):
                        self.host_received.append((self.host.epoch, ev.message))
                    elif isinstance(ev, Connected):
                        self.host_connects.append(ev)
                    elif isinstance(ev, PeerReset):
                        self.resets += 1
                        self.connect()
                    elif isinstance(ev, LinkLost):
                        self.losses += 1
                        if self.reconnect_on_loss:
                            self.connect()

    def _next_time(self) -> int:
        candidates = [self.now + 10_000]
        arrival = self.line.next_arrival()
        if arrival is not None:
            candidates.append(arrival)
        host = self.host.next_deadline()
        if host is not None:
            candidates.append(max(self.now, math.ceil(host * 1000.0 - 1e-9)))
        candidates.append(self.now + ((self.pen.deadline(self.now) - self.now) & 0xFFFFFFFF))
        return max(self.now, min(candidates))

    def step(self) -> None:
        self._pump()
        self._arrive()
        self._pump()
        nxt = self._next_time()
        if nxt == self.now:
            nxt = self.now + (0 if self.line.due_now(self.now) else 1)
        self.now = nxt

    def run_until(self, done: Callable[[], bool], limit_ms: int = 120_000) -> None:
        """Step until ``done()``; fails loudly when virtual time passes the limit."""
        start, steps = self.now, 0
        while not done():
            if self.now - start > limit_ms:
                raise AssertionError(f"not done after {limit_ms} ms of virtual time")
            steps += 1
            if steps > 100 * limit_ms:
                raise AssertionError(f"virtual time stuck at {self.now} ms")
            self.step()

    def run_for(self, ms: int) -> None:
        end = self.now + ms
        self.run_until(lambda: self.now >= end)

    def quiet(self) -> bool:
        """Nothing in flight either way, and the link established on both ends."""
        return (
            self.line.empty
            and self.host.connected
            and self.host.idle
            and bool(self.pen.state()["idle"])
            and bool(self.pen.state()["established"])
        )


def frames_of(data: bytes) -> Iterator[bytes]:
    from micropen.protocol.framing import FrameDecoder

    yield from FrameDecoder().feed(data)
