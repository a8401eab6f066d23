"""The C pen link (protocol/c/mp_link.c, through ctypes) talking to the Python host link
(protocol/link.py, role HOST, unchanged) in virtual time on a FIFO line that loses, corrupts,
duplicates and replays frames as hypothesis says: every message both ways arrives exactly once
and in order per epoch, urgent ones on arrival; reconnects open new epochs, a restarted C pen
answers RST; with and without authentication (a pairing key both ends hold). Every scenario is
then run again in the sanitized driver, which must print what ctypes returned."""

from __future__ import annotations

import random
from collections.abc import Iterable

import cbuild
from _core_harness import (
    EV_CONNECTED,
    EV_MESSAGE,
    SMALL,
    CPen,
    Interop,
    Line,
    is_handshake,
    replay,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from micropen.protocol.link import Link, Role
from micropen.protocol.messages import Ack, EmergencyStop, Heartbeat
from micropen.protocol.schema import Message, decode_message

PEN_ID = 0x50454E31
HOST_ID = 0x0000_0A17
KEY = bytes(range(7, 39))
URGENT_BASE = 1_000_000


def make_pair(
    *,
    auth: bool,
    faults: Iterable[str] = (),
    seed: int = 1,
    pen_paired: bool = True,
    defines: tuple[str, ...] = (),
) -> Interop:
    pairing = {PEN_ID: (PEN_ID, KEY)}.get if auth else None
    host = Link(Role.HOST, rng=random.Random(seed), pairing=pairing)
    pen = CPen(pen_id=PEN_ID, auth=auth, seed=seed + 1, defines=defines)
    if auth and pen_paired:
        pen.pair(HOST_ID, KEY)
    line = Line(list(faults), replay_filter=lambda f: not is_handshake(f))
    return Interop(host, pen, line, host_id=HOST_ID if auth else None)


def connect(io: Interop) -> None:
    io.connect()
    io.run_until(lambda: io.host.connected and bool(io.pen.state()["established"]))


def pen_messages(io: Interop) -> list[tuple[int, Message]]:
    return [(epoch, decode_message(e.msg)) for epoch, e in io.pen_received]


def check_exactly_once_in_order(
    delivered: list[tuple[int, Message]], sent: list[int], urgent: list[int]
) -> None:
    """Per epoch: ordinary messages in the order sent, none twice, none skipped; urgent ones
    once each; and every message sent arrived in some epoch."""
    by_epoch: dict[int, list[int]] = {}
    urgent_by_epoch: dict[int, list[int]] = {}
    order: list[int] = []  # epochs in the order they appeared
    for epoch, message in delivered:
        tag = message[0]
        if epoch not in by_epoch:
            order.append(epoch)
        by_epoch.setdefault(epoch, [])
        if tag >= URGENT_BASE:
            urgent_by_epoch.setdefault(epoch, []).append(tag)
        else:
            by_epoch[epoch].append(tag)
    for epoch, tags in by_epoch.items():
        positions = [sent.index(t) for t in tags]
        assert (
            positions == list(range(positions[0], positions[0] + len(positions))) if tags else 1
        ), f"epoch {epoch}: {tags} is not a run of {sent}"
    for epoch, tags in urgent_by_epoch.items():
        assert len(tags) == len(set(tags)), f"urgent twice in epoch {epoch}: {tags}"
    got = {m[0] for _, m in delivered}
    assert set(sent) | set(urgent) <= got, f"never delivered: {sorted(set(sent) - got)}"


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("host_send"), st.integers(1, 6)),
        st.tuples(st.just("pen_send"), st.integers(1, 6)),
        st.tuples(st.sampled_from(["host_urgent", "pen_urgent", "reconnect", "restart"]),
                  st.just(1)),
        st.tuples(st.just("wait"), st.integers(1, 300)),
    ),
    max_size=10,
)  # fmt: skip
FAULTS = st.lists(
    st.sampled_from(["ok"] * 6 + ["drop", "drop", "corrupt", "dup", "replay"]), max_size=200
)


@settings(max_examples=40, deadline=None)
@given(ops=OPS, faults=FAULTS, auth=st.booleans(), seed=st.integers(1, 2**16))
def test_every_message_arrives_exactly_once_in_order_per_epoch(
    ops: list[tuple[str, int]], faults: list[str], auth: bool, seed: int
) -> None:
    exchange(ops, faults, auth, seed, ())


@settings(max_examples=15, deadline=None)
@given(ops=OPS, faults=FAULTS, auth=st.booleans(), seed=st.integers(1, 2**16))
def test_a_compact_build_keeps_the_same_promises(
    ops: list[tuple[str, int]], faults: list[str], auth: bool, seed: int
) -> None:
    """4 frames in flight, 8 waiting, 3 received messages held (the pen's window is smaller
    than the host's 16: what does not fit is dropped unacknowledged and comes again)."""
    exchange(ops, faults, auth, seed, SMALL)


def exchange(
    ops: list[tuple[str, int]],
    faults: list[str],
    auth: bool,
    seed: int,
    defines: tuple[str, ...],
) -> None:
    io = make_pair(auth=auth, faults=faults, seed=seed, defines=defines)
    connect(io)
    host_sent: list[int] = []
    host_urgent: list[int] = []
    pen_sent: list[int] = []
    pen_urgent: list[int] = []
    restarts = 0
    for op, n in ops:
        t = io.now / 1000.0
        if op == "host_send":
            for _ in range(n):
                host_sent.append(len(host_sent) + 1)
                io.host.send(Heartbeat(host_sent[-1]), t)
        elif op == "host_urgent":
            host_urgent.append(URGENT_BASE + len(host_urgent))
            io.host.send(EmergencyStop(host_urgent[-1]), t, urgent=True)
        elif op == "pen_send":
            for _ in range(n):
                if io.pen.state()["send_room"] == 0:
                    io.run_until(lambda: io.pen.state()["send_room"] > 0)
                pen_sent.append(len(pen_sent) + 1)
                assert io.pen.send(Ack(pen_sent[-1], 0), io.now) == 0
        elif op == "pen_urgent":
            pen_urgent.append(URGENT_BASE + len(pen_urgent))
            assert io.pen.send(Ack(pen_urgent[-1], 1), io.now, flags=1) == 0
        elif op == "reconnect":
            io.connect()
        elif op == "restart":  # everything acknowledged, then the pen reboots
            io.run_until(lambda: io.line.empty and io.host.idle and bool(io.pen.state()["idle"]))
            restarts += 1
            io.pen = CPen(
                pen_id=PEN_ID,
                auth=auth,
                seed=seed + 100 + restarts,
                recorder=io.pen,
                defines=defines,
            )
            if auth:
                io.pen.pair(HOST_ID, KEY)
            if io.host.connected:  # its next data meets an RST (or, every RST lost, gives up)
                noticed = io.resets + io.losses
                host_sent.append(len(host_sent) + 1)
                io.host.send(Heartbeat(host_sent[-1]), io.now / 1000.0)
                io.run_until(lambda noticed=noticed: io.resets + io.losses > noticed)  # type: ignore[misc]
        else:
            io.run_for(n)
    host_sent.append(len(host_sent) + 1)  # a last message: a restarted pen must be noticed
    io.host.send(Heartbeat(host_sent[-1]), io.now / 1000.0)
    io.run_until(lambda: io.quiet() and len(io.pen_received) > 0)

    check_exactly_once_in_order(pen_messages(io), host_sent, host_urgent)
    check_exactly_once_in_order(io.host_received, pen_sent, pen_urgent)
    if auth:
        assert all(e.authenticated and e.peer_id == HOST_ID for e in io.pen_connects)
        assert io.host.peer_id == PEN_ID
        assert io.pen.stats()["auth_failures"] == 0  # line noise never reaches the tag
    assert not io.host.peer_sack  # the C pen declines SACK and datagrams
    if cbuild.sanitizers_work():
        replay(io.pen)


# ------------------------------------------------------------------------------ handshake
def test_handshake_echoes_the_nonce_and_declines_sack() -> None:
    io = make_pair(auth=False)
    io.connect()
    syn = io.host.data_to_send(0.0)
    io.pen.receive(syn, 0)
    events = io.pen.events()
    assert [e.type for e in events] == [EV_CONNECTED]
    assert events[0].epoch == io.host.epoch and not events[0].authenticated
    synack = io.pen.data_to_send(0)
    from _core_harness import frames_of

    (raw,) = list(frames_of(synack))
    (raw_syn,) = list(frames_of(syn))
    assert raw[0] == 0x08  # SYNACK, no SACK flag
    assert raw[1] == raw_syn[1] and raw[2:6] == raw_syn[2:6]  # epoch and nonce echoed
    io.host.receive_data(synack, 0.0)
    assert io.host.connected and not io.host.peer_sack


def test_a_repeated_syn_is_a_repeat_only_when_epoch_and_nonce_match() -> None:
    io = make_pair(auth=False)
    io.connect()
    syn = io.host.data_to_send(0.0)
    io.pen.receive(syn, 0)
    io.pen.receive(syn, 1)  # the same SYN again: answered, no new epoch
    assert [e.type for e in io.pen.events()] == [EV_CONNECTED]
    assert len(list(io.pen.data_to_send(1).split(b"\0\0"))) >= 1
    assert io.pen.stats()["connects"] == 1
    raw = bytearray(next(iter(__import__("_core_harness").frames_of(syn))))
    raw[2] ^= 1  # same epoch, another nonce: a restarted host that drew the same epoch
    from micropen.protocol.framing import encode_frame

    other = encode_frame(raw[0], raw[1], raw[2] | raw[3] << 8, raw[4] | raw[5] << 8, b"")
    io.pen.receive(other, 2)
    assert [e.type for e in io.pen.events()] == [EV_CONNECTED]
    assert io.pen.stats()["connects"] == 2


def test_frames_of_another_epoch_are_stale_and_data_is_answered_rst() -> None:
    io = make_pair(auth=False)
    connect(io)
    from micropen.protocol.framing import FrameDecoder, encode_frame

    other = (io.host.epoch % 255) + 1
    io.pen.receive(encode_frame(0x02, other, 0, 0, b""), io.now)  # a bare ack: dropped
    io.pen.receive(encode_frame(0x03, other, 0, 0, Heartbeat(5).encode()), io.now)
    assert io.pen.events() == []
    stats = io.pen.stats()
    assert stats["stale_epoch"] == 2 and stats["resets_sent"] == 1
    (rst,) = FrameDecoder().feed(io.pen.data_to_send(io.now))
    assert rst[:6] == bytes([0x10, other, 0, 0, 0, 0])


def test_a_restarted_c_pen_answers_rst_and_the_host_reconnects() -> None:
    io = make_pair(auth=False)
    connect(io)
    first = io.host.epoch
    io.pen = CPen(pen_id=PEN_ID, seed=9, recorder=io.pen)  # reboot: no epoch known
    io.host.send(Heartbeat(1), io.now / 1000.0)
    io.run_until(lambda: io.resets == 1 and io.host.connected)
    io.run_until(lambda: len(io.pen_received) == 1)
    assert io.host.epoch != first
    assert decode_message(io.pen_received[0][1].msg) == Heartbeat(1)
    replay(io.pen) if cbuild.sanitizers_work() else None


# ------------------------------------------------------------------------------ delivery rules
def _data_frames(data: bytes) -> list[bytes]:
    from _core_harness import split_frames

    return split_frames(data)


def test_urgent_is_delivered_on_arrival_and_not_again_when_the_gap_fills() -> None:
    io = make_pair(auth=False)
    connect(io)
    t = io.now / 1000.0
    io.host.send(Heartbeat(1), t)
    io.host.send(Heartbeat(2), t)
    lost, second = _data_frames(io.host.data_to_send(t))
    io.host.send(EmergencyStop(URGENT_BASE), t, urgent=True)
    (stop,) = _data_frames(io.host.data_to_send(t))
    io.pen.receive(second + stop, io.now)  # frame 0 lost: 1 waits, the urgent 2 goes through
    events = io.pen.events()
    assert [decode_message(e.msg) for e in events] == [EmergencyStop(URGENT_BASE)]
    assert events[0].urgent
    io.pen.receive(lost, io.now)  # the gap fills: 0 then 1, and not the urgent one again
    assert [decode_message(e.msg) for e in io.pen.events()] == [Heartbeat(1), Heartbeat(2)]
    io.pen.receive(stop + second, io.now)  # duplicates: re-acknowledged, never re-delivered
    assert io.pen.events() == []
    assert io.pen.stats()["duplicates"] == 2


def test_a_duplicate_is_acknowledged_again_at_once() -> None:
    io = make_pair(auth=False)
    connect(io)
    io.host.send(Heartbeat(1), io.now / 1000.0)
    frame = io.host.data_to_send(io.now / 1000.0)
    io.pen.receive(frame, io.now)
    io.pen.events()
    first_ack = io.pen.data_to_send(io.now)
    io.pen.receive(frame, io.now)
    assert io.pen.events() == []
    assert io.pen.data_to_send(io.now) == first_ack  # the same bare ack (epoch, ack 1)


def test_early_frames_wait_up_to_window_plus_four() -> None:
    io = make_pair(auth=False)
    connect(io)
    t = io.now / 1000.0
    for i in range(1, 23):
        io.host.send(Heartbeat(i), t)
    frames = _data_frames(io.host.data_to_send(t))
    assert len(frames) == 16  # the host's window
    io.pen.receive(b"".join(frames[1:]), io.now)  # 0 lost: 1..15 wait
    assert io.pen.events() == []
    io.pen.receive(frames[0], io.now)
    assert [decode_message(e.msg)[0] for e in io.pen.events()] == list(range(1, 17))


def test_a_frame_beyond_window_plus_four_is_dropped() -> None:
    from micropen.protocol.framing import encode_frame

    io = make_pair(auth=False)
    connect(io)
    epoch = io.host.epoch
    io.pen.receive(encode_frame(0x03, epoch, 20, 0, Heartbeat(1).encode()), io.now)
    io.pen.receive(encode_frame(0x03, epoch, 19, 0, Heartbeat(2).encode()), io.now)
    io.pen.receive(encode_frame(0x03, epoch, 0, 0, Heartbeat(3).encode()), io.now)
    assert [decode_message(e.msg) for e in io.pen.events()] == [Heartbeat(3)]
    assert io.pen.stats()["out_of_window"] == 1 and io.pen.stats()["out_of_order"] == 1


# ------------------------------------------------------------------------------ sending
def test_retransmission_timing_follows_rfc_6298_and_a_pen_never_gives_up() -> None:
    io = make_pair(auth=False)
    connect(io)  # the handshake gives no RTT sample: the RTO is still rto_initial, 100 ms
    now = io.now
    assert io.pen.send(Ack(1, 0), now) == 0
    first = io.pen.data_to_send(now)
    assert first
    gaps = []
    last = now
    for _ in range(12):  # nothing is ever acknowledged
        at = io.pen.deadline(last)
        assert io.pen.data_to_send(at - 1) == b""
        assert io.pen.data_to_send(at) == first  # the same frame again (same ack, no trailer)
        gaps.append(at - last)
        last = at
    # 100 ms (rto_initial), doubled at each timeout up to rto_max, 1 s, then 1 s for ever
    assert gaps == [100, 200, 400, 800, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000]
    stats = io.pen.stats()
    assert stats["timeouts"] == 12 and stats["retransmits"] == 12 and stats["rto_ms"] == 1000


def test_karns_rule_and_a_fresh_sample_collapses_the_backoff() -> None:
    io = make_pair(auth=False)
    connect(io)
    now = io.now
    io.pen.send(Ack(1, 0), now)
    io.pen.data_to_send(now)
    at = io.pen.deadline(now)
    io.pen.data_to_send(at)  # retransmitted once: its ack gives no sample (Karn)
    io.host.receive_data(io.pen.data_to_send(at), at / 1000.0)
    from micropen.protocol.framing import encode_frame

    epoch = io.host.epoch
    io.pen.receive(encode_frame(0x02, epoch, 0, 1, b""), at + 30)
    stats = io.pen.stats()
    assert stats["srtt_ms"] == 0 and stats["rto_ms"] == 200  # no sample, backoff kept
    io.pen.send(Ack(2, 0), at + 30)
    io.pen.data_to_send(at + 30)
    io.pen.receive(encode_frame(0x02, epoch, 0, 2, b""), at + 70)  # sent once: RTT 40 ms
    stats = io.pen.stats()
    assert (stats["srtt_ms"], stats["rttvar_ms"]) == (40, 20)  # SRTT = R, RTTVAR = R/2
    assert stats["rto_ms"] == 120  # SRTT + 4·RTTVAR, the backoff collapsed
    io.pen.send(Ack(3, 0), at + 70)
    io.pen.data_to_send(at + 70)
    io.pen.receive(encode_frame(0x02, epoch, 0, 3, b""), at + 150)  # RTT 80 ms
    stats = io.pen.stats()
    # RTTVAR = 3/4·20 + 1/4·|40 − 80| = 25, SRTT = 7/8·40 + 1/8·80 = 45, RTO = 45 + 4·25
    assert (stats["srtt_ms"], stats["rttvar_ms"], stats["rto_ms"]) == (45, 25, 145)


def test_an_ack_half_the_sequence_space_ahead_acknowledges_nothing() -> None:
    from micropen.protocol.framing import encode_frame

    io = make_pair(auth=False)
    connect(io)
    io.pen.send(Ack(1, 0), io.now)
    io.pen.data_to_send(io.now)  # seq 0
    io.pen.receive(encode_frame(0x02, io.host.epoch, 0, 0x8000, b""), io.now)
    assert io.pen.state()["in_flight"] == 1  # 32768 ahead is behind, in 16-bit arithmetic
    io.pen.receive(encode_frame(0x02, io.host.epoch, 0, 1, b""), io.now)
    assert io.pen.state()["in_flight"] == 0


def test_three_duplicate_acks_fast_retransmit_the_first_frame() -> None:
    from micropen.protocol.framing import encode_frame

    io = make_pair(auth=False)
    connect(io)
    for i in range(1, 5):
        io.pen.send(Ack(i, 0), io.now)
    sent = _data_frames(io.pen.data_to_send(io.now))
    assert len(sent) == 4
    dupack = encode_frame(0x02, io.host.epoch, 0, 0, b"")  # still waiting for frame 0
    for _ in range(2):
        io.pen.receive(dupack, io.now + 1)
    assert io.pen.data_to_send(io.now + 1) == b""  # two are not yet a loss
    io.pen.receive(dupack, io.now + 1)
    again = _data_frames(io.pen.data_to_send(io.now + 1))
    assert again == [sent[0]]  # the third: the first frame again, at once
    assert io.pen.stats()["fast_retransmits"] == 1


def test_the_window_holds_sixteen_in_flight_and_urgent_goes_four_beyond() -> None:
    io = make_pair(auth=False)
    connect(io)
    for i in range(1, 21):
        assert io.pen.send(Ack(i, 0), io.now) == 0
    assert len(_data_frames(io.pen.data_to_send(io.now))) == 16
    state = io.pen.state()
    assert (state["in_flight"], state["backlog"]) == (16, 4)
    assert io.pen.send(Ack(URGENT_BASE, 1), io.now, flags=1) == 0  # at once, beyond the window
    urgent = _data_frames(io.pen.data_to_send(io.now))
    assert len(urgent) == 1 and io.pen.state()["in_flight"] == 17


def test_a_full_backlog_refuses_ordinary_messages_but_keeps_room_for_urgent() -> None:
    io = make_pair(auth=False)
    connect(io)
    accepted = 0
    while io.pen.send(Ack(accepted + 1, 0), io.now) == 0:
        accepted += 1
    assert io.pen.send(Ack(0, 0), io.now) == -21  # MP_E_FULL
    assert accepted == 32  # 16 + 4 + 16 slots, 4 kept for urgent messages
    for i in range(4):
        assert io.pen.send(Ack(URGENT_BASE + i, 1), io.now, flags=1) == 0
    assert io.pen.send(Ack(URGENT_BASE + 9, 1), io.now, flags=1) == -21


def test_datagrams_go_reliably_to_a_host_that_was_not_offered_them() -> None:
    io = make_pair(auth=False)
    assert io.pen.send(Ack(1, 0), 0, flags=2) == -22  # not established: dropped
    connect(io)
    for i in range(1, 22):  # up to 4 beyond the window's 16 may wait
        assert io.pen.send(Ack(i, 0), io.now, flags=2) == 0
    assert io.pen.send(Ack(99, 0), io.now, flags=2) == -22  # the 5th beyond: dropped
    assert io.pen.stats()["datagrams_dropped"] == 2
    io.run_until(io.quiet)
    assert [m[0] for _, m in io.host_received] == list(range(1, 22))
    assert io.host.statistics().datagrams_received == 0  # as reliable DATA frames


def test_a_new_epoch_requeues_what_was_unacknowledged_and_take_unsent_hands_it_back() -> None:
    io = make_pair(auth=False)
    connect(io)
    for i in range(1, 4):
        io.pen.send(Ack(i, 0), io.now)
    io.pen.data_to_send(io.now)  # sent, never acknowledged (lost)
    io.pen.send(Ack(URGENT_BASE, 1), io.now, flags=1)
    io.pen.send(Ack(4, 0), io.now)
    io.connect()
    io.pen.receive(io.host.data_to_send(io.now / 1000.0), io.now)
    assert [e.type for e in io.pen.events()] == [EV_CONNECTED]
    taken = []
    while (item := io.pen.take_unsent())[0] > 0:
        taken.append((decode_message(item[2]), item[1]))
    # in flight first (urgent included, in the order sent), then the backlog
    assert taken == [(Ack(1, 0), 0), (Ack(2, 0), 0), (Ack(3, 0), 0), (Ack(URGENT_BASE, 1), 1),
                     (Ack(4, 0), 0)]  # fmt: skip
    assert io.pen.state()["idle"]
    io.pen.send(Ack(5, 0), io.now)
    assert io.pen.take_unsent(cap=3) == (-23, 0, b"")  # MP_E_BUFFER: the message stays
    io.run_until(io.quiet)
    assert [m for _, m in io.host_received] == [Ack(5, 0)]


def test_without_take_unsent_the_new_epoch_carries_them() -> None:
    io = make_pair(auth=False)
    connect(io)
    for i in range(1, 4):
        io.pen.send(Ack(i, 0), io.now)
    io.pen.data_to_send(io.now)  # lost
    io.connect()
    io.run_until(io.quiet)
    assert [m for _, m in io.host_received] == [Ack(1, 0), Ack(2, 0), Ack(3, 0)]


# ------------------------------------------------------------------------------ authentication
def test_a_paired_host_gets_an_authenticated_epoch() -> None:
    io = make_pair(auth=True)
    connect(io)
    (event,) = io.pen_connects
    assert event.authenticated and event.peer_id == HOST_ID
    assert io.host.peer_id == PEN_ID
    io.host.send(Heartbeat(1), io.now / 1000.0)
    io.pen.send(Ack(1, 0), io.now)
    io.run_until(lambda: io.quiet() and len(io.pen_received) == 1)
    assert [m for _, m in io.host_received] == [Ack(1, 0)]
    state = io.pen.state()
    assert state["authenticated"] == 1 and state["peer_id"] == HOST_ID
    assert io.pen.stats()["frames_authenticated"] >= 1
    assert io.pen.admits() == (1, 1, HOST_ID)


def test_an_unknown_host_gets_a_plain_synack_and_asks_again_without_an_offer() -> None:
    io = make_pair(auth=True, pen_paired=False)
    connect(io)
    assert all(not e.authenticated for e in io.pen_connects)
    assert io.host.peer_id is None
    io.host.send(Heartbeat(1), io.now / 1000.0)
    io.run_until(lambda: len(io.pen_received) == 1)
    assert io.pen.admits()[1] == 0  # admit_syn saw an unpaired party


def _authenticated_pair() -> tuple[Interop, list[bytes]]:
    io = make_pair(auth=True)
    connect(io)
    io.host.send(Heartbeat(1), io.now / 1000.0)
    frames = _data_frames(io.host.data_to_send(io.now / 1000.0))
    io.pen.receive(frames[0], io.now)
    assert [decode_message(e.msg) for e in io.pen.events() if e.type == EV_MESSAGE] == [
        Heartbeat(1)
    ]
    return io, frames


def test_a_forged_frame_with_a_valid_crc_is_dropped_and_counted() -> None:
    from micropen.protocol.framing import FrameDecoder, encode_frame

    io, _ = _authenticated_pair()
    io.host.send(Heartbeat(2), io.now / 1000.0)
    (raw,) = FrameDecoder().feed(io.host.data_to_send(io.now / 1000.0))
    body = bytearray(raw[6:-4])
    body[1] ^= 0x01  # Heartbeat(3), the tag left as it was
    forged = encode_frame(raw[0], raw[1], raw[2] | raw[3] << 8, raw[4] | raw[5] << 8, bytes(body))
    before = io.pen.stats()["frames_authenticated"]
    io.pen.receive(forged, io.now)
    assert [e for e in io.pen.events() if e.type == EV_MESSAGE] == []
    stats = io.pen.stats()
    assert stats["auth_failures"] == 1 and stats["frames_authenticated"] == before
    no_trailer = encode_frame(raw[0], raw[1], raw[2] | raw[3] << 8, 0, Heartbeat(3).encode())
    io.pen.receive(no_trailer, io.now)
    assert io.pen.stats()["auth_failures"] == 2 and io.pen.events() == []


def test_a_replayed_frame_is_dropped_and_counted() -> None:
    io, frames = _authenticated_pair()
    io.pen.receive(frames[0], io.now + 5)
    assert io.pen.events() == []
    assert io.pen.stats()["auth_replays"] == 1


def test_a_reconnecting_hosts_resume_proof_counts_and_a_replayed_copy_does_not() -> None:
    io = make_pair(auth=True)
    connect(io)
    io.connect()  # a new epoch, its SYN proving the old epoch's key
    syn = io.host.data_to_send(io.now / 1000.0)
    before = io.pen.stats()["frames_authenticated"]
    io.pen.receive(syn, io.now)
    events = io.pen.events()
    assert [e.type for e in events] == [3, EV_CONNECTED]  # the proof, then the new epoch
    assert io.pen.stats()["frames_authenticated"] == before + 1
    io.pen.receive(syn, io.now + 1)  # the same SYN replayed: attempt already seen
    assert io.pen.stats()["frames_authenticated"] == before + 1


def test_an_owner_may_refuse_a_syn() -> None:
    io = make_pair(auth=False)
    io.pen.refuse(True)
    io.connect()
    io.pen.receive(io.host.data_to_send(0.0), 0)
    assert io.pen.events() == [] and io.pen.data_to_send(0) == b""
    assert io.pen.stats()["syns_refused"] == 1 and not io.pen.state()["established"]


def test_sanitized_replay_of_the_deterministic_scenarios() -> None:
    if not cbuild.sanitizers_work():
        import pytest

        pytest.skip("this toolchain cannot build and run ASan/UBSan programs")
    recorders = []
    for auth in (False, True):
        io = make_pair(auth=auth, faults=["drop", "ok", "corrupt", "dup", "replay"] * 20)
        connect(io)
        for i in range(1, 40):
            io.host.send(Heartbeat(i), io.now / 1000.0)
            io.pen.send(Ack(i, 0), io.now, flags=1 if i % 13 == 0 else 0)
            if i % 9 == 0:
                io.connect()
            io.run_for(7)
        io.run_until(io.quiet)
        io.pen.stats()
        recorders.append(io.pen)
    replay(*recorders)


def test_the_replay_window_is_64_frames() -> None:
    """Bare acks sealed by linkauth.FrameAuth with the host's key and chosen counters: a
    counter is accepted once, and only while it is less than 64 below the highest seen."""
    from micropen.protocol.framing import HEADER, encode_frame
    from micropen.protocol.linkauth import FrameAuth

    io = make_pair(auth=True)
    connect(io)
    assert io.host.auth is not None
    sealer = FrameAuth(io.host.auth.send_key, io.host.auth.receive_key, PEN_ID)
    epoch = io.host.epoch
    header = HEADER.pack(0x02, epoch, 0, 0)
    steps = [
        (0, False),  # never valid, even before any other counter
        (1, True),
        (200, True),
        (137, True),  # 63 below the highest: in the window, not seen
        (136, False),  # 64 below: too old
        (137, False),  # seen
        (201, True),
        (138, True),
        (0, False),  # never valid
        (500, True),
        (437, True),
        (436, False),
    ]
    for counter, accepted in steps:
        sealer.sent = counter - 1  # seal() numbers the frame sent + 1
        frame = encode_frame(0x02, epoch, 0, 0, sealer.seal(header))
        before = io.pen.stats()
        io.pen.receive(frame, io.now)
        after = io.pen.stats()
        got = after["frames_authenticated"] - before["frames_authenticated"]
        replays = after["auth_replays"] - before["auth_replays"]
        assert (got, replays) == ((1, 0) if accepted else (0, 1)), counter
