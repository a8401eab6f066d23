"""The C pen link's fixed resources run out gracefully: received messages not polled, new epochs
not polled, RSTs waiting, a message longer than a firmware's receive slots, a transmit buffer
too small for the next frame. Nothing is lost that the host will not send again, and the runs
are replayed under ASan/UBSan."""

from __future__ import annotations

import cbuild
import pytest
from _core_harness import EV_CONNECTED, EV_MESSAGE, SMALL, CPen, frames_of, replay

from micropen.protocol.framing import FrameDecoder, encode_frame
from micropen.protocol.messages import Heartbeat
from micropen.protocol.schema import decode_message

SYN, DATA_ACK, ACK = 0x04, 0x03, 0x02


def _sanitized(*pens: CPen) -> None:
    if cbuild.sanitizers_work():
        replay(*pens)


def _acks(data: bytes) -> list[int]:
    return [raw[4] | raw[5] << 8 for raw in FrameDecoder().feed(data) if raw[0] == ACK]


def test_messages_not_polled_hold_at_most_20_and_the_rest_come_again() -> None:
    pen = CPen()
    pen.receive(encode_frame(SYN, 7, 1, 0, b""), 0)
    assert [e.type for e in pen.events()] == [EV_CONNECTED]
    frames = [encode_frame(DATA_ACK, 7, i, 0, Heartbeat(i).encode()) for i in range(25)]
    pen.receive(b"".join(frames), 1)  # nobody polls
    assert pen.stats()["rx_no_room"] == 5
    assert _acks(pen.data_to_send(1)) == [20]  # only what it holds is acknowledged
    assert [decode_message(e.msg)[0] for e in pen.events()] == list(range(20))
    pen.receive(b"".join(frames[20:]), 2)  # the host sends the rest again
    assert [decode_message(e.msg)[0] for e in pen.events()] == list(range(20, 25))
    _sanitized(pen)


def test_early_frames_leave_a_slot_for_the_one_that_fills_the_gap() -> None:
    pen = CPen(defines=SMALL)  # 3 receive slots
    pen.receive(encode_frame(SYN, 7, 1, 0, b""), 0)
    pen.events()
    early = [encode_frame(DATA_ACK, 7, i, 0, Heartbeat(i).encode()) for i in range(1, 6)]
    pen.receive(b"".join(early), 1)  # 0 lost; only 2 of these may wait
    assert pen.stats()["rx_no_room"] == 3
    pen.receive(encode_frame(DATA_ACK, 7, 0, 0, Heartbeat(0).encode()), 2)
    assert [decode_message(e.msg)[0] for e in pen.events()] == [0, 1, 2]
    _sanitized(pen)


def test_new_epochs_not_polled_hold_four_and_a_fifth_syn_waits() -> None:
    pen = CPen()
    for epoch in range(1, 6):
        pen.receive(encode_frame(SYN, epoch, epoch, 0, b""), epoch)
    assert pen.state()["epoch"] == 4 and pen.stats()["connects"] == 4
    assert pen.stats()["rx_no_room"] == 1
    assert [e.epoch for e in pen.events()] == [1, 2, 3, 4]
    pen.receive(encode_frame(SYN, 5, 5, 0, b""), 6)  # the host's SYN again
    assert [e.epoch for e in pen.events()] == [5]
    _sanitized(pen)


def test_rst_for_more_than_four_unknown_epochs_at_once_answers_four() -> None:
    pen = CPen()
    burst = b"".join(encode_frame(DATA_ACK, e, 0, 0, b"\x08\0\0\0\0") for e in range(10, 16))
    pen.receive(burst, 0)
    rsts = list(frames_of(pen.data_to_send(0)))
    assert [(r[0], r[1]) for r in rsts] == [(0x10, e) for e in range(10, 14)]
    assert pen.stats()["resets_sent"] == 6  # counted as answered, as link.py counts them
    _sanitized(pen)


def test_a_message_longer_than_the_receive_slots_arrives_cut_and_flagged() -> None:
    pen = CPen(defines=SMALL)  # slots of 16 bytes
    pen.receive(encode_frame(SYN, 7, 1, 0, b""), 0)
    pen.events()
    message = bytes([0x12]) + bytes(range(40))
    pen.receive(encode_frame(DATA_ACK, 7, 0, 0, message), 1)
    (event,) = pen.events()
    assert event.type == EV_MESSAGE and event.truncated and event.msg == message[:16]
    _sanitized(pen)


@pytest.mark.parametrize("cap", [0, 2, 20, 30])
def test_a_small_transmit_buffer_sends_nothing_partial(cap: int) -> None:
    pen = CPen()
    pen.receive(encode_frame(SYN, 7, 1, 0, b""), 0)
    pen.events()
    pen.send(Heartbeat(1).encode() + bytes(20), 0)
    written = pen.transmit(0, cap)
    assert len(written) <= cap
    assert written == b"" or (written[0] == 0 and written[-1] == 0)  # whole frames only
    rest = pen.data_to_send(0)
    kinds = [r[0] for r in frames_of(written + rest)]
    assert kinds == [0x08, DATA_ACK]  # the SYNACK, then the data frame, each once
    _sanitized(pen)
