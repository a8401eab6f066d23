"""The C pen link: a reply or record never waits behind telemetry sent as fallback datagrams.

The C core declines datagrams, so `MP_SEND_DATAGRAM` (telemetry) goes as a reliable message.
An outside tester found replies queued behind up to 64 telemetry frames on a lossy line
(76 of 150 `GetStatus` timed out at 500 Hz). As docs/protocol.md says of datagrams, "a datagram
never goes ahead of a reply": a reliable message sent while fallback datagrams wait in the
backlog goes ahead of all of them (they keep their order; what is in flight stays), and a full
backlog drops the oldest waiting fallback datagram (counted) before it refuses a reliable
message. Urgent messages still jump everything.
"""

from __future__ import annotations

import random

import cbuild
from _core_harness import CPen, Interop, Line, is_handshake, replay, split_frames

from micropen.protocol.link import Link, Role
from micropen.protocol.messages import Ack, Telemetry
from micropen.protocol.schema import Message, decode_message

DATAGRAM = 2
URGENT = 1
E_FULL = -21
# the example pen's link sizes (protocol/c/example_pen/README.md)
EXAMPLE = (
    "MP_LINK_WINDOW_MAX=28",
    "MP_LINK_BACKLOG=80",
    "MP_LINK_DATAGRAM_FALLBACK_BACKLOG=64",
)


def sample(n: int) -> Telemetry:
    return Telemetry(n, 2, 500, 9000, n, 300, 250, 3900, 7, n)


def connected(defines: tuple[str, ...] = (), window: int = 0) -> Interop:
    host = Link(Role.HOST, rng=random.Random(5))
    pen = CPen(seed=6, window=window, defines=defines)
    io = Interop(host, pen, Line([], replay_filter=lambda f: not is_handshake(f)))
    io.connect()
    io.run_until(lambda: io.host.connected and bool(io.pen.state()["established"]))
    return io


def pen_frames(io: Interop) -> list[Message]:
    """The messages of the data frames the pen writes now (none arrives: a full window)."""
    from micropen.protocol.framing import HEADER, FrameDecoder

    out = []
    for frame in split_frames(io.pen.data_to_send(io.now)):
        for raw in FrameDecoder().feed(frame):
            if raw[0] & 1:  # DATA
                out.append(decode_message(raw[HEADER.size : -4]))
    return out


def fill_window(io: Interop, window: int) -> list[Message]:
    """`window` records in flight, never acknowledged (the line loses them)."""
    sent = [Ack(i, 0) for i in range(1, window + 1)]
    for message in sent:
        assert io.pen.send(message, io.now) == 0
    assert pen_frames(io) == sent
    assert io.pen.state()["in_flight"] == window
    return sent


def received(io: Interop) -> list[Message]:
    return [m for _, m in io.host_received]


def test_a_reply_goes_ahead_of_telemetry_queued_behind_a_full_window() -> None:
    io = connected()
    first = fill_window(io, 16)
    for n in range(4):  # the kit's default: up to 4 fallback datagrams may wait (5 accepted)
        assert io.pen.send(sample(n), io.now, flags=DATAGRAM) == 0
    reply = Ack(100, 0)
    assert io.pen.send(reply, io.now) == 0
    assert pen_frames(io) == []  # the window is full
    assert io.pen.state()["backlog"] == 5
    io.run_until(io.quiet)  # the lost window is sent again and acknowledged; the window opens
    assert received(io) == [*first, reply, *(sample(n) for n in range(4))]


def test_in_the_example_build_a_reply_overtakes_64_waiting_samples() -> None:
    """The tester's case: 28 in flight, 64 samples waiting, then a GetStatus reply and a
    record: both leave first, in their own order, and the samples follow in theirs."""
    io = connected(EXAMPLE, window=28)
    first = fill_window(io, 28)
    samples = [sample(n) for n in range(64)]
    for s in samples:
        assert io.pen.send(s, io.now, flags=DATAGRAM) == 0
    replies = [Ack(200, 0), Ack(201, 0)]
    for r in replies:
        assert io.pen.send(r, io.now) == 0
    assert io.pen.state()["backlog"] == 66
    io.run_until(io.quiet)
    assert received(io) == [*first, *replies, *samples]
    assert io.pen.stats()["datagrams_dropped"] == 0
    if cbuild.sanitizers_work():  # the same calls under ASan/UBSan, line for line
        replay(io.pen)


def test_what_is_in_flight_stays_and_urgent_still_jumps_everything() -> None:
    io = connected()
    first = fill_window(io, 16)
    for n in range(3):
        assert io.pen.send(sample(n), io.now, flags=DATAGRAM) == 0
    reply = Ack(100, 0)
    assert io.pen.send(reply, io.now) == 0
    urgent = [Ack(1_000 + i, 1) for i in range(5)]
    for u in urgent:  # 4 go out at once beyond the window, the 5th waits first in line
        assert io.pen.send(u, io.now, flags=URGENT) == 0
    assert pen_frames(io) == urgent[:4]
    later = Ack(101, 0)
    assert io.pen.send(later, io.now) == 0
    io.run_until(io.quiet)
    assert received(io) == [*first, *urgent, reply, later, *(sample(n) for n in range(3))]


def test_a_full_backlog_drops_the_oldest_waiting_sample_before_refusing_a_reply() -> None:
    io = connected()
    first = fill_window(io, 16)
    for n in range(5):  # accepted while at most 4 wait beyond the window
        assert io.pen.send(sample(n), io.now, flags=DATAGRAM) == 0
    assert io.pen.send(sample(5), io.now, flags=DATAGRAM) == -22  # MP_E_DROPPED
    replies = [Ack(100 + i, 0) for i in range(14)]
    for r in replies:  # 16 in flight + 5 + 11 = 32 slots (4 kept for urgent), then 3 more
        assert io.pen.send(r, io.now) == 0
    assert io.pen.stats()["datagrams_dropped"] == 1 + 3  # sample 5 refused; 0, 1, 2 dropped
    io.run_until(io.quiet)
    assert received(io) == [*first, *replies, sample(3), sample(4)]


def test_a_reply_is_refused_only_when_no_sample_is_left_to_drop() -> None:
    io = connected()
    fill_window(io, 16)
    for n in range(5):
        assert io.pen.send(sample(n), io.now, flags=DATAGRAM) == 0
    for i in range(16):  # the last 5 each take a sample's slot
        assert io.pen.send(Ack(100 + i, 0), io.now) == 0
    assert io.pen.stats()["datagrams_dropped"] == 5
    assert io.pen.send(Ack(999, 0), io.now) == E_FULL
    for i in range(4):  # the 4 slots kept for urgent messages are still there
        assert io.pen.send(Ack(1_000 + i, 1), io.now, flags=URGENT) == 0
    assert io.pen.send(Ack(1_009, 1), io.now, flags=URGENT) == E_FULL
    if cbuild.sanitizers_work():
        replay(io.pen)


def test_no_sample_is_dropped_when_dropping_would_not_make_room() -> None:
    io = connected()
    fill_window(io, 16)
    assert io.pen.send(sample(0), io.now, flags=DATAGRAM) == 0
    for i in range(15):  # 16 in flight + 1 sample + 15 replies: the 32 ordinary slots
        assert io.pen.send(Ack(100 + i, 0), io.now) == 0
    for i in range(2):  # two of the 4 kept slots taken by urgent answers
        assert io.pen.send(Ack(1_000 + i, 1), io.now, flags=URGENT) == 0
    assert io.pen.send(Ack(999, 0), io.now) == E_FULL  # one sample would free 3 of 5 needed
    assert io.pen.stats()["datagrams_dropped"] == 0
    assert io.pen.state()["backlog"] == 16


def test_take_unsent_names_a_fallback_datagram() -> None:
    io = connected()
    fill_window(io, 16)
    assert io.pen.send(sample(0), io.now, flags=DATAGRAM) == 0
    assert io.pen.send(Ack(100, 0), io.now) == 0
    taken = []
    while (item := io.pen.take_unsent())[0] > 0:
        taken.append((decode_message(item[2]), item[1]))
    assert taken[-2:] == [(Ack(100, 0), 0), (sample(0), DATAGRAM)]
