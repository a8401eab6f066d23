"""Any bytes into the C pen link — garbage, and frames with a valid CRC but any header and
payload, in its own epoch or another — listening, on a plain epoch and on an authenticated one:
nothing crashes, everything it writes is a well-formed frame, and each run is replayed in the
sanitized driver, so ASan/UBSan see the link code take these inputs."""

from __future__ import annotations

import random

import cbuild
from _core_harness import CPen, frames_of, replay, split_frames
from hypothesis import given, settings
from hypothesis import strategies as st

from micropen.protocol.framing import MAX_RAW_FRAME, MAX_WIRE_FRAME, encode_frame
from micropen.protocol.link import Link, Role

HOST_ID, PEN_ID, KEY = 0x0A17, 0x50454E31, bytes(range(7, 39))


def _pen(state: str) -> tuple[CPen, int]:
    pen = CPen(pen_id=PEN_ID, auth=True, seed=5)
    pen.pair(HOST_ID, KEY)
    if state == "listen":
        return pen, 0
    host = Link(Role.HOST, rng=random.Random(4), pairing={PEN_ID: (PEN_ID, KEY)}.get)
    host.connect(0.0, HOST_ID if state == "auth" else None)
    pen.receive(host.data_to_send(0.0), 0)
    pen.events()
    host.receive_data(pen.data_to_send(0), 0.0)
    assert host.connected and (host.peer_id is not None) == (state == "auth")
    return pen, host.epoch


def _frame(draw: st.DrawFn, epoch: int) -> bytes:
    flags = draw(st.integers(0, 255))
    which = draw(st.sampled_from([epoch, epoch, (epoch + 1) % 256, draw(st.integers(0, 255))]))
    seq, ack = draw(st.integers(0, 40)) - 3, draw(st.integers(0, 0xFFFF))
    payload = draw(st.binary(max_size=MAX_RAW_FRAME - 10))
    return encode_frame(flags, which, seq % 65536, ack, payload)


@settings(max_examples=120, deadline=None)
@given(state=st.sampled_from(["listen", "plain", "auth"]), data=st.data())
def test_any_input_is_survived_and_answered_with_well_formed_frames(
    state: str, data: st.DataObject
) -> None:
    pen, epoch = _pen(state)
    now = 1
    chunks = data.draw(
        st.lists(
            st.one_of(st.binary(max_size=600), st.composite(lambda d: _frame(d, epoch))()),
            max_size=8,
        )
    )
    for i, chunk in enumerate(chunks):
        pen.receive(chunk, now)
        for event in pen.events():
            assert len(event.msg) <= MAX_RAW_FRAME - 10
        if i % 3 == 0:
            pen.send(b"\x41" + bytes(8), now, flags=i % 2)
        out = pen.data_to_send(now)
        for frame in split_frames(out):
            assert len(frame) <= MAX_WIRE_FRAME
        assert len(list(frames_of(out))) == len(split_frames(out))  # every one CRC-valid
        now += data.draw(st.sampled_from([0, 1, 50, 1000]))
    pen.stats()
    if cbuild.sanitizers_work():
        replay(pen)
