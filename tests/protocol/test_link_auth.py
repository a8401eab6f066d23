"""Frame authentication at the link level: keys per epoch, a tag and a counter on every frame,
replays and forgeries dropped and counted, and the handshake that decides all of it."""

from __future__ import annotations

import random
import zlib

from hypothesis import given, settings
from hypothesis import strategies as st

from micropen.protocol import linkauth
from micropen.protocol.events import Connected, MessageReceived
from micropen.protocol.framing import FrameDecoder
from micropen.protocol.link import Link, Role
from micropen.protocol.messages import GetStatus

KEY = bytes(range(32))
HOST_ID, PEN_ID = 0x1111, 0x2222


def _pair(host_key: bytes | None = KEY, pen_knows_host: bool = True) -> tuple[Link, Link]:
    pen_lookup = {HOST_ID: (PEN_ID, KEY)}.get if pen_knows_host else (lambda host_id: None)
    host_lookup = {} if host_key is None else {PEN_ID: (PEN_ID, host_key)}
    host = Link(Role.HOST, rng=random.Random(1), pairing=host_lookup.get)
    pen = Link(Role.PEN, rng=random.Random(2), pairing=pen_lookup)
    return host, pen


def _shuttle(host: Link, pen: Link, now: float = 0.0, rounds: int = 6) -> list[bytes]:
    """Move bytes both ways; returns what the host wrote (for replays)."""
    written = []
    for _ in range(rounds):
        out = host.data_to_send(now)
        written.append(out)
        pen.receive_data(out, now)
        host.receive_data(pen.data_to_send(now), now)
    return written


def test_a_paired_host_gets_an_authenticated_epoch_and_messages_flow() -> None:
    host, pen = _pair()
    host.connect(0.0, HOST_ID)
    _shuttle(host, pen)
    assert host.connected and host.peer_id == PEN_ID and pen.peer_id == HOST_ID
    assert [e for e in pen.events() if isinstance(e, Connected)] == [Connected(pen.epoch, HOST_ID)]
    host.send(GetStatus(5), 0.0)
    _shuttle(host, pen)
    assert [e.message for e in pen.events() if isinstance(e, MessageReceived)] == [GetStatus(5)]


def test_an_unknown_host_gets_an_unauthenticated_epoch() -> None:
    host, pen = _pair(pen_knows_host=False)
    host.connect(0.0, HOST_ID)
    _shuttle(host, pen)
    assert host.connected and host.peer_id is None and pen.peer_id is None


def test_a_host_without_the_pens_key_asks_again_without_an_offer() -> None:
    host, pen = _pair(host_key=None)  # the pen knows the host; the host lost its key
    host.connect(0.0, HOST_ID)
    _shuttle(host, pen)
    assert host.connected and host.peer_id is None and pen.peer_id is None


def test_a_pen_with_another_key_is_not_accepted() -> None:
    host, pen = _pair(host_key=bytes(32))  # someone else answering as the pen
    host.connect(0.0, HOST_ID)
    _shuttle(host, pen)
    assert not host.connected
    assert host.statistics().auth_failures >= 1


def _reframe(raw_frame: bytes, change: int) -> bytes:
    """A frame with one byte of its message changed and a *valid* CRC (an attacker, not
    noise): only the tag can tell."""
    from cobs import cobs

    raw = bytearray(cobs.decode(raw_frame.strip(b"\0")))
    raw[change] ^= 0x01
    body = bytes(raw[:-4])
    return b"\0" + cobs.encode(body + zlib.crc32(body).to_bytes(4, "little")) + b"\0"


def test_a_forged_frame_with_a_valid_crc_is_dropped_and_counted() -> None:
    host, pen = _pair()
    host.connect(0.0, HOST_ID)
    _shuttle(host, pen)
    pen.events()
    host.send(GetStatus(9), 0.0)
    frame = host.data_to_send(0.0)
    pen.receive_data(_reframe(frame, 8), 0.0)  # the message's first byte, CRC fixed up
    assert not [e for e in pen.events() if isinstance(e, MessageReceived)]
    assert pen.statistics().auth_failures == 1


def test_a_replayed_frame_is_dropped_and_counted() -> None:
    host, pen = _pair()
    host.connect(0.0, HOST_ID)
    _shuttle(host, pen)
    pen.events()
    host.send(GetStatus(9), 0.0)
    frame = host.data_to_send(0.0)
    pen.receive_data(frame, 0.0)
    pen.receive_data(frame, 0.0)  # the very bytes again
    delivered = [e for e in pen.events() if isinstance(e, MessageReceived)]
    assert len(delivered) == 1 and pen.statistics().auth_replays == 1


def test_frames_of_an_earlier_epoch_do_not_authenticate_in_a_new_one() -> None:
    host, pen = _pair()
    host.connect(0.0, HOST_ID)
    _shuttle(host, pen)
    host.send(GetStatus(1), 0.0)
    old = host.data_to_send(0.0)
    pen.receive_data(old, 0.0)
    host.connect(1.0, HOST_ID)
    _shuttle(host, pen, 1.0)
    pen.events()
    # the old frame names the old epoch: stale, never delivered
    pen.receive_data(old, 1.0)
    assert not [e for e in pen.events() if isinstance(e, MessageReceived)]


def test_an_unauthenticated_frame_in_an_authenticated_epoch_is_dropped() -> None:
    host, pen = _pair()
    host.connect(0.0, HOST_ID)
    _shuttle(host, pen)
    pen.events()
    intruder = Link(Role.HOST, rng=random.Random(3))
    intruder.epoch = pen.epoch  # it can read the epoch off the wire
    intruder.state = host.state
    intruder.send(GetStatus(66), 0.0)
    pen.receive_data(intruder.data_to_send(0.0), 0.0)
    assert not [e for e in pen.events() if isinstance(e, MessageReceived)]
    assert pen.statistics().auth_failures == 1


def test_an_unpaired_syn_can_be_refused_by_the_owner() -> None:
    seen: list[int | None] = []
    pen = Link(Role.PEN, pairing=lambda h: None, admit_syn=lambda h: seen.append(h) or False)
    host = Link(Role.HOST)
    host.connect(0.0)
    pen.receive_data(host.data_to_send(0.0), 0.0)
    assert seen == [None] and not pen.connected and pen.statistics().syns_refused == 1


@settings(max_examples=200, deadline=None)
@given(order=st.permutations(list(range(1, 40))), repeats=st.lists(st.integers(1, 39)))
def test_the_replay_window_accepts_each_counter_once(order: list[int], repeats: list[int]) -> None:
    """Frames arriving in any order within the window are each accepted exactly once."""
    sender = linkauth.FrameAuth(KEY, KEY, 1)
    sealed = {}
    for _ in range(39):
        body = b"\x01\x02\x03\x04\x05\x06payload"
        trailer = sender.seal(body)
        counter = int.from_bytes(trailer[:4], "little")
        sealed[counter] = body + trailer + b"\0\0\0\0"
    receiver = linkauth.FrameAuth(KEY, KEY, 1)
    accepted = [c for c in order + repeats if receiver.open(sealed[c]) is not None]
    assert sorted(accepted) == list(range(1, 40))


def test_decoder_accepts_the_longest_authenticated_frame() -> None:
    host, pen = _pair()
    host.connect(0.0, HOST_ID)
    _shuttle(host, pen)
    from micropen.protocol.messages import FW_CHUNK_BYTES, FwChunk

    host.send(FwChunk(1, 0, FW_CHUNK_BYTES, b"\xff" * FW_CHUNK_BYTES), 0.0)
    wire = host.data_to_send(0.0)
    assert FrameDecoder().feed(wire), "the largest message with its trailer was discarded"


def test_a_reconnecting_hosts_syn_proves_it_is_alive_and_a_replayed_copy_does_not() -> None:
    """The pen's watchdog is fed only by authenticated frames; a paired host whose replies are
    lost keeps it fed with its SYN retransmissions, which carry a proof keyed with the epoch
    that is ending. The same bytes replayed later prove nothing."""
    host, pen = _pair()
    host.connect(0.0, HOST_ID)
    _shuttle(host, pen)
    proven = pen.statistics().frames_authenticated
    host.connect(1.0, HOST_ID)  # reconnect; the pen's SYNACKs are lost (nothing shuttled back)
    first = host.data_to_send(1.0)
    pen.receive_data(first, 1.0)
    assert pen.statistics().frames_authenticated == proven + 1
    retransmit = host.data_to_send(1.5)  # the host's SYN again (a new attempt number)
    pen.receive_data(retransmit, 1.5)
    assert pen.statistics().frames_authenticated == proven + 2
    pen.receive_data(first, 2.0)  # the first SYN replayed: seen
    pen.receive_data(retransmit, 2.0)
    assert pen.statistics().frames_authenticated == proven + 2


def test_wire_layout_and_key_sizes_are_what_the_document_says() -> None:
    """Both ends changing a size together would pass every round trip: pin the layout."""
    assert linkauth.OFFER.size == 20 and linkauth.ANSWER.size == 36
    assert linkauth.TRAILER_BYTES == 12 and linkauth.RESUME.size == 12
    offer = linkauth.AuthOffer(7, bytes(16))
    to_pen, to_host = linkauth.session_keys(KEY, 5, offer, 9, bytes(range(16)))
    assert len(to_pen) == len(to_host) == 32 and to_pen != to_host
    again = linkauth.session_keys(KEY, 6, offer, 9, bytes(range(16)))  # another epoch
    assert again[0] != to_pen and again[1] != to_host


def test_the_confirmation_code_is_six_digits_from_the_documented_formula() -> None:
    import hashlib
    import re

    host_pub, pen_pub = bytes([1]) * 32, bytes([2]) * 32
    digest = hashlib.sha256(b"micropen code" + KEY + host_pub + pen_pub).digest()
    expected = f"{int.from_bytes(digest[:4], 'little') % 1_000_000:06d}"
    code = linkauth.confirmation_code(KEY, host_pub, pen_pub)
    assert code == expected and re.fullmatch(r"\d{6}", code)
    codes = {linkauth.confirmation_code(bytes([i]) * 32, host_pub, pen_pub) for i in range(200)}
    assert len(codes) > 190  # spread over the million, not a handful


def test_replays_older_than_the_window_are_refused_and_counted() -> None:
    sender = linkauth.FrameAuth(KEY, KEY, 1)
    frames = []
    for _ in range(200):
        body = b"\x01\x02\x03\x04\x05\x06payload"
        frames.append(body + sender.seal(body) + b"\0\0\0\0")
    receiver = linkauth.FrameAuth(KEY, KEY, 1)
    for frame in frames:
        assert receiver.open(frame) is not None
    for back in (64, 65, 100, 199):
        assert receiver.open(frames[199 - back]) is None  # counter highest - back
    assert receiver.replays == 4
    late = linkauth.FrameAuth(KEY, KEY, 1)
    for frame in frames[:100]:
        late.open(frame)
    assert late.open(frames[36]) is None  # 63 behind and seen: refused
    fresh = linkauth.FrameAuth(KEY, KEY, 1)
    for i, frame in enumerate(frames[:100]):
        if i != 36:
            fresh.open(frame)
    assert fresh.open(frames[36]) is not None  # 63 behind, never seen: accepted


def test_authentication_failures_are_counted_across_epochs() -> None:
    """The counters only grow: a new epoch's first forged frame is the third failure, not the
    first (the firmware counts bursts from their differences; found by the C core's author)."""
    host, pen = _pair()
    cmd_id = 1
    for epoch_start in (0.0, 1.0):
        host.connect(epoch_start, HOST_ID)
        _shuttle(host, pen, epoch_start)
        pen.events()
        forgeries = 2 if epoch_start == 0.0 else 1
        for _ in range(forgeries):
            host.send(GetStatus(cmd_id), epoch_start)
            cmd_id += 1
            pen.receive_data(_reframe(host.data_to_send(epoch_start), 8), epoch_start)
    assert pen.statistics().auth_failures == 3
