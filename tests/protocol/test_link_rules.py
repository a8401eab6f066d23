"""The link's rules, one at a time, through its public API in virtual time.

Handshake, acknowledgements, RFC 6298 retransmission (RTO clamp, doubling, Karn), window and
backlog, urgent delivery, duplicates, epochs, RST, liveness, retry limits, what connect() and a
new epoch do with unacknowledged messages, and the statistics counters.
"""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap

import pytest
from _link_harness import Pair, RiggedEpochs, parse, split_frames

from micropen.protocol import messages as m
from micropen.protocol.errors import LocalProtocolError, RemoteProtocolError
from micropen.protocol.events import (
    BadMessage,
    Connected,
    LinkLost,
    MessageReceived,
    PeerReset,
)
from micropen.protocol.framing import encode_frame
from micropen.protocol.link import Flag, Link, LinkState, LinkStats, Role

DATA = Flag.DATA | Flag.ACK
SYN = Flag.SYN | Flag.SACK  # SACK in a handshake: "I read SACK bitmaps and datagrams"
SYNACK = Flag.SYNACK | Flag.SACK


def cmd(n: int) -> m.Stop:
    """The n-th command of a test (cmd_id n + 1: 0 is reserved)."""
    return m.Stop(cmd_id=n + 1)


def note(n: int) -> m.Event:
    return m.Event(t_ms=n, code=m.EventCode.RUN_STARTED, value=0, run_id=1)


def connected_pair(**host_options: object) -> Pair:
    pair = Pair(host=Link(Role.HOST, rng=random.Random(3), **host_options))  # type: ignore[arg-type]
    pair.connect()
    pair.host_events.clear()
    pair.pen_events.clear()
    return pair


# ------------------------------------------------------------------------------ handshake
def test_handshake() -> None:
    host, pen = Link(Role.HOST, rng=RiggedEpochs([42])), Link(Role.PEN)
    assert (host.state, pen.state) == (LinkState.CLOSED, LinkState.LISTEN)
    assert host.connect(0.0) == []
    assert host.state is LinkState.SYN_SENT and not host.connected
    request = host.data_to_send(0.0)
    [syn] = parse(request)
    assert (syn.flags, syn.epoch, syn.payload) == (SYN, 42, b"")
    pen.receive_data(request, 0.0)
    assert pen.events() == [Connected(42)] and pen.state is LinkState.ESTABLISHED
    reply = pen.data_to_send(0.0)
    [synack] = parse(reply)
    assert (synack.flags, synack.epoch, synack.payload) == (SYNACK, 42, b"")
    host.receive_data(reply, 0.01)
    assert host.events() == [Connected(42)] and host.connected and host.epoch == 42
    assert host.statistics().connects == pen.statistics().connects == 1


def test_syn_is_repeated_every_rto_until_answered() -> None:
    host = Link(Role.HOST, rto_initial=0.1)
    host.connect(0.0)
    assert [f.flags for f in parse(host.data_to_send(0.0))] == [SYN]
    assert host.data_to_send(0.05) == b""
    assert host.next_deadline() == pytest.approx(0.1)
    assert [f.flags for f in parse(host.data_to_send(0.1))] == [SYN]
    assert host.statistics().retransmits == 1


def test_syn_is_repeated_when_a_virtual_clock_jumps_to_the_deadline() -> None:
    """A mock clock sets now = next_deadline() exactly, and the SYN must then be due. Testing
    ``now - syn_at >= rto`` against a deadline of ``syn_at + rto`` is not the same thing in
    floating point ((0.7 + 0.1) - 0.7 < 0.1): the SYN would never be repeated and the loop
    would spin at one instant."""
    host = Link(Role.HOST, rto_initial=0.1)
    host.connect(0.7)
    host.data_to_send(0.7)
    deadline = host.next_deadline()
    assert deadline is not None
    assert [f.flags for f in parse(host.data_to_send(deadline))] == [SYN]
    later = host.next_deadline()
    assert later is not None and later > deadline


def test_duplicate_syn_keeps_the_established_link() -> None:
    pair = Pair(host=Link(Role.HOST, rng=RiggedEpochs([9])))
    pair.host.connect(0.0)
    syn = pair.host_to_pen()
    pair.settle()
    pair.host.send(cmd(1), pair.now)
    pair.pen.send(note(1), pair.now)
    pair.settle()
    pair.pen.receive_data(syn, pair.now)  # a late copy of the SYN
    assert pair.pen.events() == []
    assert [f.flags for f in parse(pair.pen.data_to_send(pair.now))] == [SYNACK]
    pair.host.send(cmd(2), pair.now)
    pair.settle()
    assert pair.delivered_to_pen() == [cmd(1), cmd(2)]
    assert pair.delivered_to_host() == [note(1)]


def test_misuse_is_refused_naming_the_state() -> None:
    with pytest.raises(LocalProtocolError, match="connect\\(\\) is not allowed for a pen link"):
        Link(Role.PEN).connect(0.0)
    with pytest.raises(LocalProtocolError, match="closed: connect\\(\\) first"):
        Link(Role.HOST).send(cmd(1), 0.0)
    with pytest.raises(LocalProtocolError, match="window 0"):
        Link(Role.HOST, window=0)
    with pytest.raises(LocalProtocolError, match="rto_min"):
        Link(Role.HOST, rto_min=0.5, rto_initial=0.1)


# ------------------------------------------------------------------------------ acks
def test_data_is_acknowledged_and_released() -> None:
    pair = connected_pair()
    pair.host.send(cmd(1), pair.now)
    [frame] = parse(pair.host_to_pen())
    assert (frame.flags, frame.seq, frame.payload) == (DATA, 0, cmd(1).encode())
    assert pair.pen_events == [MessageReceived(cmd(1))]
    assert pair.host.in_flight == 1 and not pair.host.idle
    [ack] = parse(pair.pen_to_host())
    assert (ack.flags, ack.ack) == (Flag.ACK, 1)
    assert pair.host.in_flight == 0 and pair.host.idle
    assert pair.host.next_deadline() is None


def test_ack_rides_on_data_when_there_is_some() -> None:
    pair = connected_pair()
    pair.host.send(cmd(1), pair.now)
    pair.host_to_pen()
    pair.pen.send(note(1), pair.now)
    [frame] = parse(pair.pen_to_host())
    assert (frame.flags, frame.seq, frame.ack) == (DATA, 0, 1)
    assert pair.host_events == [MessageReceived(note(1))] and pair.host.in_flight == 0


def test_pending_ack_asks_to_be_sent_now() -> None:
    pair = connected_pair()
    pair.host.send(cmd(1), pair.now)
    pair.host_to_pen()
    deadline = pair.pen.next_deadline()
    assert deadline is not None and deadline <= pair.now
    pair.pen_to_host()
    assert pair.pen.next_deadline() is None


# ------------------------------------------------------------------------------ retransmission
def _lose_everything_from_host(pair: Pair, steps: int) -> list[float]:
    """Advance to each deadline, dropping the host's writes; return the retransmission times."""
    times = []
    for _ in range(steps):
        deadline = pair.host.next_deadline()
        assert deadline is not None and deadline > pair.now
        pair.now = deadline
        frames = parse(pair.host.data_to_send(pair.now))
        if frames:
            assert all(f.flags & Flag.DATA for f in frames)
            times.append(pair.now)
    return times


def test_retransmission_timer_doubles_and_is_clamped() -> None:
    pair = connected_pair(rto_initial=0.1, rto_min=0.025, rto_max=0.5, max_retries=20)
    start = pair.now
    pair.host.send(cmd(1), pair.now)
    pair.host_to_pen(deliver=False)
    times = _lose_everything_from_host(pair, 6)
    gaps = [b - a for a, b in zip([start, *times], times, strict=False)]
    assert gaps == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5, 0.5])
    s = pair.host.statistics()
    assert (s.timeouts, s.retransmits, s.rto_s) == (6, 6, pytest.approx(0.5))


def _ack_after(pair: Pair, rtt: float) -> None:
    """Send one command, deliver it, and let the ack reach the host rtt seconds later."""
    pair.host.send(cmd(1), pair.now)
    pair.host_to_pen()
    pair.now += rtt
    pair.pen_to_host()
    assert pair.host.idle


def test_rtt_samples_follow_rfc_6298() -> None:
    pair = connected_pair(rto_initial=0.5, rto_min=0.025, rto_max=1.0)
    _ack_after(pair, 0.04)
    s = pair.host.statistics()
    assert (s.srtt_s, s.rttvar_s, s.rto_s) == pytest.approx((0.04, 0.02, 0.12))
    _ack_after(pair, 0.08)
    s = pair.host.statistics()
    assert s.rttvar_s == pytest.approx(0.75 * 0.02 + 0.25 * 0.04)
    assert s.srtt_s == pytest.approx(0.875 * 0.04 + 0.125 * 0.08)
    assert s.rto_s == pytest.approx(s.srtt_s + 4 * s.rttvar_s)


def test_rto_is_clamped_to_its_minimum_and_maximum() -> None:
    fast = connected_pair(rto_initial=0.1, rto_min=0.025, rto_max=1.0)
    _ack_after(fast, 0.001)
    assert fast.host.statistics().rto_s == pytest.approx(0.025)
    slow = connected_pair(rto_initial=1.0, rto_min=0.025, rto_max=1.0)
    _ack_after(slow, 0.9)
    assert slow.host.statistics().rto_s == pytest.approx(1.0)


def test_karn_no_rtt_sample_from_a_retransmitted_frame() -> None:
    pair = connected_pair(rto_initial=0.1, rto_min=0.025, rto_max=1.0)
    pair.host.send(cmd(1), pair.now)
    pair.host_to_pen(deliver=False)
    pair.now += 0.1
    pair.host_to_pen()  # the retransmission arrives; the timer backed off to 0.2
    pair.now += 0.05
    pair.pen_to_host()
    s = pair.host.statistics()
    assert s.srtt_s is None and s.rto_s == pytest.approx(0.2)  # backed-off RTO kept
    assert pair.host.idle and pair.host.next_deadline() is None
    _ack_after(pair, 0.03)  # a frame sent once gives a sample again
    s = pair.host.statistics()
    assert (s.srtt_s, s.rto_s) == pytest.approx((0.03, 0.09))


def test_progress_resets_the_retry_count() -> None:
    pair = connected_pair(rto_initial=0.1, rto_max=0.1, max_retries=2)
    for n in range(5):  # each message needs two retransmissions, never three in a row
        pair.host.send(cmd(n), pair.now)
        pair.host_to_pen(deliver=False)
        _lose_everything_from_host(pair, 1)
        pair.now = pair.host.next_deadline() or pair.now
        pair.host_to_pen()
        pair.pen_to_host()
    assert pair.host.connected and not any(isinstance(e, LinkLost) for e in pair.host_events)
    assert pair.delivered_to_pen() == [cmd(n) for n in range(5)]


# ------------------------------------------------------------------------------ window and backlog
def test_window_limits_frames_in_flight_and_backlog_waits() -> None:
    pair = connected_pair(window=4)
    for n in range(10):
        pair.host.send(cmd(n), pair.now)
    assert [f.seq for f in parse(pair.host_to_pen())] == [0, 1, 2, 3]
    assert (pair.host.in_flight, pair.host.backlog) == (4, 6)
    deadline = pair.host.next_deadline()
    assert deadline is not None and deadline > pair.now  # a full window waits for acks
    pair.pen_to_host()
    assert [f.seq for f in parse(pair.host_to_pen())] == [4, 5, 6, 7]
    pair.settle()
    assert pair.delivered_to_pen() == [cmd(n) for n in range(10)] and pair.host.idle


def test_backlog_has_a_limit() -> None:
    pair = connected_pair(window=1, max_backlog=3)
    for n in range(3):
        pair.host.send(cmd(n), pair.now)
    with pytest.raises(LocalProtocolError, match="backlog full \\(3 messages\\)"):
        pair.host.send(cmd(3), pair.now)


def test_sequence_numbers_wrap_around() -> None:
    pair = connected_pair(window=1024)
    total = (1 << 16) + 100
    received = 0
    for start in range(0, total, 1000):
        for n in range(start, min(total, start + 1000)):
            pair.host.send(m.Heartbeat(counter=n), pair.now)
        pair.settle()
        received += len(pair.pen_events)
        assert pair.pen_events[-1] == MessageReceived(m.Heartbeat(counter=n))
        pair.pen_events.clear()
    assert received == total and pair.host.idle
    assert pair.pen.statistics().duplicates == 0


# ------------------------------------------------------------------------------ urgent
def test_urgent_message_is_delivered_on_arrival_and_only_once() -> None:
    pair = connected_pair()
    pair.host.send(cmd(1), pair.now)
    pair.host.send(cmd(2), pair.now)
    first, second = split_frames(pair.host.data_to_send(pair.now))
    stop = m.EmergencyStop(cmd_id=3)
    pair.host.send(stop, pair.now, urgent=True)
    [urgent] = split_frames(pair.host.data_to_send(pair.now))
    assert parse(urgent)[0].flags == DATA | Flag.URGENT
    pair.pen.receive_data(urgent, pair.now)  # cmd 1 and 2 are still missing
    assert pair.pen.events() == [MessageReceived(stop)]
    pair.pen.receive_data(second + first + urgent, pair.now)
    assert pair.pen.events() == [MessageReceived(cmd(1)), MessageReceived(cmd(2))]
    assert parse(pair.pen.data_to_send(pair.now))[-1].ack == 3


def test_urgent_message_may_exceed_the_window_a_little() -> None:
    pair = connected_pair(window=2)
    pair.host.send(cmd(1), pair.now)
    pair.host.send(cmd(2), pair.now)
    pair.host_to_pen(deliver=False)
    for n in range(4):
        pair.host.send(m.EmergencyStop(cmd_id=10 + n), pair.now, urgent=True)
    assert (pair.host.in_flight, pair.host.backlog) == (6, 0)
    pair.host.send(m.EmergencyStop(cmd_id=20), pair.now, urgent=True)
    assert (pair.host.in_flight, pair.host.backlog) == (6, 1)


def test_urgent_message_jumps_the_backlog_while_reconnecting() -> None:
    """Link.send promises "Urgent ones jump the backlog". That must hold for an urgent message
    queued while not connected (or beyond the urgent slack) too; appended behind the queued
    commands, an emergency stop would wait for whole windows of them to be acknowledged."""
    pair = Pair(host=Link(Role.HOST, window=2, rng=random.Random(5)))
    pair.host.connect(pair.now)
    for n in range(3):
        pair.host.send(cmd(n), pair.now)
    stop = m.EmergencyStop(cmd_id=99)
    pair.host.send(stop, pair.now, urgent=True)
    pair.host_to_pen()  # SYN
    pair.pen_to_host()  # SYNACK: connected
    sent = [f.payload for f in parse(pair.host.data_to_send(pair.now)) if f.flags & Flag.DATA]
    assert stop.encode() in sent


# ------------------------------------------------------------------------------ receiving
def test_duplicate_is_acknowledged_again_and_not_delivered_again() -> None:
    pair = connected_pair()
    pair.host.send(cmd(1), pair.now)
    frame = pair.host.data_to_send(pair.now)
    pair.pen.receive_data(frame, pair.now)
    assert parse(pair.pen.data_to_send(pair.now))[0].ack == 1
    pair.pen.receive_data(frame, pair.now)
    assert pair.pen.events() == [MessageReceived(cmd(1))]
    [again] = parse(pair.pen.data_to_send(pair.now))
    assert (again.flags, again.ack) == (Flag.ACK, 1)
    assert pair.pen.statistics().duplicates == 1


def test_early_frames_wait_for_the_gap() -> None:
    pair = connected_pair()
    for n in range(3):
        pair.host.send(cmd(n), pair.now)
    f0, f1, f2 = split_frames(pair.host.data_to_send(pair.now))
    pair.pen.receive_data(f2 + f1 + f2, pair.now)
    assert pair.pen.events() == []
    assert parse(pair.pen.data_to_send(pair.now))[0].ack == 0  # nothing in order yet
    pair.pen.receive_data(f0, pair.now)
    assert pair.pen.events() == [MessageReceived(cmd(n)) for n in range(3)]
    s = pair.pen.statistics()
    assert (s.out_of_order, s.duplicates) == (2, 1)


def test_frames_beyond_the_receive_window_are_dropped() -> None:
    pair = Pair(host=Link(Role.HOST, window=64, rng=random.Random(2)), pen=Link(Role.PEN, window=4))
    pair.connect()
    for n in range(10):
        pair.host.send(cmd(n), pair.now)
    frames = split_frames(pair.host.data_to_send(pair.now))
    pair.pen.receive_data(frames[8], pair.now)  # 8 ahead; the pen accepts up to 4 + 4 - 1
    assert pair.pen.statistics().out_of_window == 1 and pair.pen.events() == []
    pair.pen.receive_data(b"".join(frames), pair.now)
    pair.pen_events += pair.pen.events()
    pair.settle()
    for _ in range(10):  # what the pen dropped comes again after a timeout
        if pair.host.idle:
            break
        pair.now = pair.host.next_deadline() or pair.now
        pair.settle()
    assert pair.delivered_to_pen() == [cmd(n) for n in range(10)]


def test_invalid_message_in_a_valid_frame_is_acked_and_reported() -> None:
    pair = connected_pair()
    bad = bytes([m.SetRate.ID]) + (1).to_bytes(4, "little") + bytes([200])  # rate 200 > 150
    pair.pen.receive_data(encode_frame(DATA, pair.pen.epoch, 0, 0, bad), pair.now)
    [event] = pair.pen.events()
    assert isinstance(event, BadMessage) and event.payload == bad
    assert isinstance(event.error, RemoteProtocolError) and "SetRate.rate_sps" in str(event.error)
    assert parse(pair.pen.data_to_send(pair.now))[0].ack == 1  # it will not come again
    assert pair.pen.statistics().bad_messages == 1


# ------------------------------------------------------------------------------ epochs and RST
def test_new_epoch_drops_stale_frames_both_ways() -> None:
    pair = Pair(host=Link(Role.HOST, rng=RiggedEpochs([10, 20])))
    pair.connect()
    pair.pen_events.clear()
    pair.host.send(cmd(1), pair.now)
    pair.pen.send(note(1), pair.now)
    old_host_frame = pair.host_to_pen(deliver=False)
    old_pen_frame = pair.pen_to_host(deliver=False)
    assert pair.host.connect(pair.now) == [cmd(1)]
    pair.settle()
    assert (pair.host.epoch, pair.pen.epoch) == (20, 20)
    assert pair.pen_events == [Connected(20)]
    pair.pen.receive_data(old_host_frame, pair.now)
    pair.host.receive_data(old_pen_frame, pair.now)
    assert pair.pen.events() == [] and pair.host.events() == []
    [rst] = parse(pair.pen.data_to_send(pair.now))
    assert (rst.flags, rst.epoch) == (Flag.RST, 10)  # names the stale epoch, not the live one
    pair.host.receive_data(encode_frame(Flag.RST, 10, 0, 0), pair.now)
    assert pair.host.connected and pair.host.events() == []
    assert pair.host.statistics().stale_epoch == 2 and pair.pen.statistics().stale_epoch == 1
    pair.settle()
    assert pair.delivered_to_host() == [note(1)]  # the pen's note went again in epoch 20


def test_rst_from_a_restarted_pen_resets_the_host() -> None:
    pair = connected_pair()
    pair.host.send(cmd(1), pair.now)
    pair.settle()
    pair.pen = Link(Role.PEN)  # the pen rebooted and knows no epoch
    pair.host.send(cmd(2), pair.now)
    pair.host.send(cmd(3), pair.now)
    pair.host_to_pen()
    assert pair.pen.statistics().resets_sent == 2
    pair.pen_to_host()
    assert pair.host_events == [PeerReset("the pen no longer knows this link (it restarted?)")]
    assert pair.host.state is LinkState.CLOSED
    assert pair.host.statistics().resets_received == 2
    with pytest.raises(LocalProtocolError):
        pair.host.send(cmd(4), pair.now)
    assert pair.host.connect(pair.now) == [cmd(2), cmd(3)]
    pair.settle()
    assert pair.host.connected and pair.pen.connected


def test_rst_while_connecting_is_ignored_quietly() -> None:
    host = Link(Role.HOST, rng=RiggedEpochs([7]))
    host.connect(0.0)
    host.receive_data(encode_frame(Flag.RST, 7, 0, 0), 0.0)
    assert host.state is LinkState.SYN_SENT


# ------------------------------------------------------------------------------ giving up
def test_liveness_closes_a_silent_link() -> None:
    pair = connected_pair(liveness_timeout=1.0)
    start = pair.now
    assert pair.host.next_deadline() == pytest.approx(start + 1.0)
    pair.now = start + 0.6
    pair.host.send(cmd(1), pair.now)
    pair.settle()  # the pen's ack is a sign of life
    assert pair.host.next_deadline() == pytest.approx(start + 1.6)
    pair.host.handle_timeout(start + 1.6001)
    [lost] = pair.host.events()
    assert isinstance(lost, LinkLost) and "no frame from the peer" in lost.reason
    assert pair.host.state is LinkState.CLOSED and pair.host.next_deadline() is None


def test_liveness_fires_at_its_own_deadline() -> None:
    """Woken exactly at ``last_rx + liveness_timeout`` the link must be lost. With a strict
    ``now - last_rx > liveness_timeout`` nothing happens at the deadline and the deadline stays
    where it is, so a virtual clock never gets past it."""
    pair = connected_pair(liveness_timeout=1.0)
    deadline = pair.host.next_deadline()
    assert deadline == pair.now + 1.0
    pair.host.handle_timeout(deadline)
    host = pair.host
    assert [type(e) for e in host.events()] == [LinkLost]


def test_retries_exhausted_loses_the_link() -> None:
    pair = connected_pair(rto_initial=0.1, rto_max=0.4, max_retries=3)
    pair.host.send(cmd(1), pair.now)
    pair.host_to_pen(deliver=False)
    assert len(_lose_everything_from_host(pair, 3)) == 3
    pair.now = pair.host.next_deadline() or pair.now
    assert pair.host.data_to_send(pair.now) == b""
    assert pair.host.events() == [LinkLost("3 retransmissions without an acknowledgement")]
    assert pair.host.state is LinkState.CLOSED and pair.host.next_deadline() is None
    assert pair.host.connect(pair.now) == [cmd(1)]


def test_pen_keeps_retransmitting_after_max_retries() -> None:
    """A pen never gives up on its own (the host decides): it keeps retransmitting at rto_max,
    never asks to be woken in the past, and delivers once the host is back."""
    pair = connected_pair()
    pair.pen = Link(Role.PEN, rto_initial=0.1, rto_max=0.2, max_retries=2)
    pair.host.connect(pair.now)
    pair.settle()
    pair.pen.send(note(1), pair.now)
    pair.pen_to_host(deliver=False)
    for _ in range(10):
        deadline = pair.pen.next_deadline()
        if deadline is None:
            break
        assert deadline > pair.now, "the pen asks to be woken in the past after being serviced"
        pair.now = deadline
        assert parse(pair.pen_to_host(deliver=False)), "the pen stopped retransmitting"
    assert pair.pen.connected and pair.pen.statistics().rto_s == pytest.approx(0.2)
    pair.host.connect(pair.now)  # the host comes back: what the pen holds must still arrive
    pair.settle()
    assert pair.delivered_to_host() == [note(1)]


def test_pen_with_a_liveness_timeout_does_not_spin() -> None:
    """LOST has no transition for a pen, so a pen given a liveness timeout (the watchdog idea)
    would find the link dead, do nothing, and ask to be woken in the past forever. Either the
    constructor refuses the option for a pen, or the deadline moves on."""
    try:
        pen = Link(Role.PEN, liveness_timeout=1.0)
    except LocalProtocolError:
        return
    pair = Pair(pen=pen)
    pair.connect()
    pair.now = 2.0
    pair.pen_to_host()
    deadline = pair.pen.next_deadline()
    assert deadline is None or deadline > pair.now


# ------------------------------------------------------------------------------ leftovers
def test_connect_and_close_return_undelivered_messages_in_order() -> None:
    pair = connected_pair(window=2)
    for n in range(5):
        pair.host.send(cmd(n), pair.now)
    pair.host_to_pen(deliver=False)  # 0 and 1 in flight, 2..4 in the backlog
    assert pair.host.connect(pair.now) == [cmd(n) for n in range(5)]
    assert pair.host.idle
    pair.settle()
    pair.host.send(cmd(7), pair.now)
    pair.settle()
    assert pair.host.connect(pair.now) == []  # everything was acknowledged
    pair.settle()
    pair.host.send(cmd(8), pair.now)
    assert pair.host.close() == [cmd(8)] and pair.host.state is LinkState.CLOSED
    assert pair.pen.close() == [] and pair.pen.state is LinkState.LISTEN


def test_pen_resends_unacknowledged_messages_in_a_new_epoch() -> None:
    pair = connected_pair()
    pair.pen = Link(Role.PEN, window=2)
    pair.host.connect(pair.now)
    pair.settle()
    for n in range(4):
        pair.pen.send(note(n), pair.now)
    pair.pen_to_host(deliver=False)  # notes 0 and 1 are lost, 2 and 3 wait
    assert (pair.pen.in_flight, pair.pen.backlog) == (2, 2)
    pair.host.connect(pair.now)
    pair.host_to_pen()
    assert (pair.pen.in_flight, pair.pen.backlog) == (0, 4)
    pair.settle()
    assert pair.delivered_to_host() == [note(n) for n in range(4)]


def test_pen_queues_notifications_until_a_host_connects() -> None:
    pen = Link(Role.PEN)
    pen.send(note(1), 0.0)
    assert pen.data_to_send(0.0) == b"" and pen.backlog == 1
    pair = Pair(pen=pen)
    pair.connect()
    assert pair.delivered_to_host() == [note(1)]


def test_waiting_for_synack_with_queued_messages_does_not_spin() -> None:
    """next_deadline() may only ask to be called now when data_to_send() will send something.
    Queued messages while not connected (SYN_SENT, LISTEN, after a reset) are not sendable;
    an event loop sleeping until the deadline would spin until the SYNACK arrives."""
    host = Link(Role.HOST, rng=random.Random(4))
    host.connect(0.0)
    host.send(cmd(1), 0.0)
    host.data_to_send(0.0)
    deadline = host.next_deadline()
    assert deadline is not None and deadline > 0.0
    pen = Link(Role.PEN)
    pen.send(note(1), 0.0)
    pen.data_to_send(0.0)
    assert pen.next_deadline() is None


# ------------------------------------------------------------------------------ epoch identity
def test_new_host_that_draws_the_pens_current_epoch_gets_a_fresh_link() -> None:
    """A restarted host process draws its epoch at random; 1 time in 255 it equals the epoch
    the pen still has. The pen takes that SYN for a repeat, keeps its sequence numbers, drops
    the new host's first commands as duplicates and acknowledges them: silently lost."""
    pair = Pair(host=Link(Role.HOST, rng=RiggedEpochs([77], seed=1)))
    pair.connect()
    for n in range(3):
        pair.host.send(cmd(n), pair.now)
    pair.settle()
    pair.host = Link(Role.HOST, rng=RiggedEpochs([77], seed=2))  # the host process restarted
    pair.pen_events.clear()
    pair.connect()
    assert pair.host.epoch == pair.pen.epoch == 77  # the rare draw this test is about
    pair.host.send(cmd(10), pair.now)
    pair.pen.send(note(10), pair.now)
    pair.settle()
    assert pair.delivered_to_pen() == [cmd(10)]
    assert pair.delivered_to_host() == [note(10)]


def test_reconnect_that_returns_to_an_earlier_epoch_gets_a_fresh_link() -> None:
    """Link.connect only avoids the previous epoch. Epochs A, B (its SYN lost), A again: the
    pen, still in A, takes the new SYN for a repeat, with the same loss as above."""
    pair = Pair(host=Link(Role.HOST, liveness_timeout=1.0, rng=RiggedEpochs([5, 6, 5])))
    pair.connect()
    pair.host.send(cmd(1), pair.now)
    pair.settle()
    pair.host.connect(pair.now)  # epoch 6; its SYNs never arrive
    pair.host_to_pen(deliver=False)
    pair.host.connect(pair.now)  # epoch 5 again
    pair.settle()
    assert pair.host.epoch == pair.pen.epoch == 5
    pair.host.send(cmd(2), pair.now)
    pair.settle()
    assert pair.delivered_to_pen() == [cmd(1), cmd(2)]


# ------------------------------------------------------------------------------ statistics
def test_statistics_count_what_happened() -> None:
    pair = connected_pair()
    written = pair.host.statistics().bytes_sent
    read = pair.pen.statistics().bytes_received
    pair.host.send(cmd(1), pair.now)
    frame = pair.host.data_to_send(pair.now)
    damaged = bytearray(frame)
    damaged[len(frame) // 2] ^= 0x10
    junk = b"\0\x09\x01\0"  # a COBS code byte promising more than follows
    pair.pen.receive_data(bytes(damaged) + junk + frame, pair.now)
    pair.pen_to_host()
    host, pen = pair.host.statistics(), pair.pen.statistics()
    assert host.bytes_sent == written + len(frame) and host.messages_sent == 1
    assert pen.bytes_received == read + 2 * len(frame) + len(junk)
    assert pen.messages_received == 1 and pen.frames_received == 2  # the SYN and the good frame
    assert pen.crc_failures + pen.cobs_failures == 2 and pen.bytes_discarded > 0
    assert host.frames_received == 2 and host.messages_received == 0  # SYNACK and the ACK
    assert host.connects == pen.connects == 1
    snapshot = pair.host.statistics()
    snapshot.frames_sent = -1
    assert pair.host.statistics().frames_sent == host.frames_sent  # a copy, not the live one
    assert set(host.as_dict()) == set(LinkStats.__slots__)  # type: ignore[attr-defined]


def test_bytes_counted_match_the_bytes_moved() -> None:
    pair = Pair()
    sent_by_host = sent_by_pen = 0
    pair.host.connect(pair.now)
    for n in range(20):
        pair.host.send(cmd(n), pair.now)
        pair.pen.send(note(n), pair.now)
        sent_by_host += len(pair.host_to_pen())
        sent_by_pen += len(pair.pen_to_host())
    host, pen = pair.host.statistics(), pair.pen.statistics()
    assert host.bytes_sent == sent_by_host == pen.bytes_received
    assert pen.bytes_sent == sent_by_pen == host.bytes_received
    assert host.frames_sent == pen.frames_received and pen.frames_sent == host.frames_received
    assert host.messages_sent == pen.messages_received == 20
    assert pen.messages_sent == host.messages_received == 20


# ------------------------------------------------------------------------------ registry
def test_link_alone_decodes_every_message() -> None:
    """A program that only imports the link (a sniffer, a proxy, a bare host) must still decode
    messages. The registry is filled when micropen.protocol.messages is imported; if nothing
    imports it, every message arrives as BadMessage('unknown message id')."""
    script = textwrap.dedent(
        """
        from micropen.protocol.framing import encode_frame
        from micropen.protocol.link import Flag, Link, Role
        pen = Link(Role.PEN)
        pen.receive_data(encode_frame(Flag.SYN, 5, 0, 0), 0.0)
        stop = bytes([0x06]) + (1).to_bytes(4, "little")
        pen.receive_data(encode_frame(Flag.DATA | Flag.ACK, 5, 0, 0, stop), 0.0)
        print(type(pen.events()[-1]).__name__)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "MessageReceived"
