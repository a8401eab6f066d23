"""To a peer without datagrams a datagram goes reliably, but never ahead of a reply.

docs/protocol.md, Link rules → Datagrams: a datagram never goes ahead of a reliable message.
To a peer that declined datagrams (an older host, the C kit's pen) they used to join the FIFO
backlog, so a reply sent after 64 telemetry samples waited behind all of them on a busy line.
Now a reliable message sent while fallback datagrams wait in the backlog goes ahead of them
(they keep their order; what is in flight stays), and a full backlog drops the oldest waiting
fallback datagram (counted) before it refuses a reliable message.
"""

from __future__ import annotations

import random

import pytest
from _link_harness import Pair

from micropen.protocol import messages as m
from micropen.protocol.errors import LocalProtocolError
from micropen.protocol.link import Link, Role


def sample(n: int) -> m.Telemetry:
    return m.Telemetry(n, m.PenState.RUNNING, 500, 9000, n, 300, 250, 3900, 7, n)


def reply(n: int) -> m.Ack:
    return m.Ack(cmd_id=n, value=0)


def full_window(window: int = 4) -> tuple[Pair, list[m.Message]]:
    """A pen whose host declined datagrams, `window` records in flight and lost."""
    pair = Pair(host=Link(Role.HOST, sack=False, rng=random.Random(3)), pen=Link(Role.PEN))
    pair.connect()
    assert not pair.pen.peer_sack
    pair.pen.window = window
    first: list[m.Message] = [reply(100 + i) for i in range(window)]
    for message in first:
        pair.pen.send(message, pair.now)
    pair.pen_to_host(deliver=False)  # lost
    assert pair.pen.in_flight == window
    return pair, first


def deliver_all(pair: Pair) -> list[m.Message]:
    for _ in range(40):  # each round: the timeout sends the window again, the host acks it
        pair.now += 1.0
        pair.settle()
        if pair.pen.idle:
            return pair.delivered_to_host()
    raise AssertionError("the pen still has messages to deliver after 40 s")


def test_a_reply_goes_ahead_of_fallback_samples_waiting_for_the_window() -> None:
    pair, first = full_window()
    samples = [sample(n) for n in range(10)]
    for s in samples:
        assert pair.pen.send(s, pair.now, reliable=False)
    answers = [reply(1), reply(2)]
    for a in answers:
        pair.pen.send(a, pair.now)
    urgent = reply(9)
    pair.pen.send(urgent, pair.now, urgent=True)  # still at once, beyond the window
    assert pair.pen.backlog == 12 and pair.pen.in_flight == 5
    # the urgent frame is delivered on arrival, ahead of the lost window
    assert deliver_all(pair) == [urgent, *first, *answers, *samples]
    assert pair.pen.statistics().datagrams_dropped == 0


def test_a_full_backlog_drops_the_oldest_waiting_sample_before_refusing_a_reply() -> None:
    pair, first = full_window()
    pair.pen.max_backlog = 6
    samples = [sample(n) for n in range(4)]
    for s in samples:
        assert pair.pen.send(s, pair.now, reliable=False)
    answers = [reply(1), reply(2), reply(3), reply(4)]
    for a in answers:  # the 3rd and 4th take the slots of samples 0 and 1
        pair.pen.send(a, pair.now)
    assert pair.pen.statistics().datagrams_dropped == 2
    assert not pair.pen.send(sample(9), pair.now, reliable=False)  # no room: dropped
    assert pair.pen.statistics().datagrams_dropped == 3
    pair.pen.send(reply(5), pair.now)
    pair.pen.send(reply(6), pair.now)
    with pytest.raises(LocalProtocolError, match="backlog full"):
        pair.pen.send(reply(7), pair.now)  # no sample left to drop
    assert pair.pen.statistics().datagrams_dropped == 5
    assert deliver_all(pair) == [*first, *answers, reply(5), reply(6)]


def test_samples_put_back_by_a_new_epoch_stay_behind_the_replies_around_them() -> None:
    """A new epoch puts what was in flight back ahead of the backlog, marks kept: a reply
    sent then goes ahead of the samples behind the last reply, never ahead of a reply."""
    pair, _ = full_window(window=2)
    pair.pen.send(sample(0), pair.now, reliable=False)
    pair.pen.send(reply(1), pair.now)
    pair.pen.send(sample(1), pair.now, reliable=False)
    pair.pen_to_host(deliver=False)  # reply(100), reply(101) in flight; the rest wait
    pair.host.connect(pair.now)  # a new epoch; the pen keeps its unacknowledged messages
    pair.host_to_pen()
    pair.pen.send(reply(2), pair.now)
    taken = pair.pen.take_unsent()
    assert taken == [reply(100), reply(101), reply(1), reply(2), sample(0), sample(1)]
