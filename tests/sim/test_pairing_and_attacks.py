"""Hazard 8 at the pen: the attacks seen before link authentication, refused by the simulated
firmware itself; pairing with its confirmation code; revocation. The harness host checks
nothing, so every refusal here is the pen's."""

from __future__ import annotations

import random

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from test_firmware_harness import Host

from micropen.protocol import limits as L
from micropen.protocol import linkauth
from micropen.protocol.framing import encode_frame
from micropen.protocol.link import Flag
from micropen.protocol.messages import (
    PROTOCOL_VERSION,
    Ack,
    CalBank,
    CalCommit,
    CalData,
    CalRead,
    CalWrite,
    ErrorCode,
    EventCode,
    GetPairing,
    Hello,
    Nak,
    PairConfirm,
    Pairing,
    PairOffer,
    PairRequest,
    PenState,
    Run,
    RunMode,
    SetDepth,
    SetRate,
    Unpair,
    calibration_crc,
)
from micropen.protocol.schema import Message, schema_hash

FOREHEAD = int(L.Area.FOREHEAD)


def _intruder(host: Host) -> Host:
    """Another party on the same pen, not paired with it."""
    other = Host(pen=host.pen, clock=host.clock, paired=False, link_seed=99)
    other.connect()
    other.hello()
    return other


def test_a_raw_client_cannot_run_200_strokes() -> None:
    intruder = Host(seed=5, paired=False)
    intruder.connect()
    intruder.hello()
    for reply in (
        intruder.cmd(SetDepth, 500, 0),
        intruder.cmd(SetRate, 90),
        intruder.cmd(Run, FOREHEAD, RunMode.STROKES, 200, 0),
    ):
        assert isinstance(reply, Nak) and reply.error is ErrorCode.NOT_AUTHORIZED, reply
    intruder.run_for(1.0)
    assert intruder.pen.state is PenState.IDLE and intruder.pen.nvm.lifetime_strokes == 0
    assert intruder.status().state is PenState.IDLE  # reading status is allowed


def test_one_write_cannot_take_over_a_pen_mid_treatment() -> None:
    """SYN + Hello + SetDepth 2.0 mm with the override bit, in one write, while the paired
    operator's host runs a treatment at 1.0 mm: the depth never changes, and the operator's
    host is told (UNPAIRED_CONNECT and SECURITY_DENIED, held for it)."""
    operator = Host(seed=6)
    operator.connect()
    operator.ready(depth_um=1000, rate_sps=90)
    operator.start(int(L.Area.CHEEKS), RunMode.DURATION, duration_ms=20_000)
    operator.run_for(0.5)
    epoch, nonce = 77, random.Random(1).getrandbits(32)
    hello = Hello(1, PROTOCOL_VERSION, schema_hash()).encode()
    deeper = SetDepth(2, 2000, 1).encode()
    one_write = (
        encode_frame(Flag.SYN, epoch, nonce & 0xFFFF, nonce >> 16)
        + encode_frame(Flag.DATA | Flag.ACK, epoch, 0, 0, hello)
        + encode_frame(Flag.DATA | Flag.ACK, epoch, 1, 0, deeper)
    )
    operator.pen.receive_data(one_write, operator.now)
    operator.run_for(0.05)
    assert operator.pen.firmware.depth_set_um == 1000
    assert operator.pen.firmware.soft_cap_override == 0
    operator.connect()  # the operator's host reconnects (its epoch was displaced)
    operator.hello()
    operator.run_for(0.2)
    codes = [e.code for e in operator.events()]
    assert EventCode.UNPAIRED_CONNECT in codes
    denied = [e for e in operator.events(EventCode.SECURITY_DENIED) if e.value == SetDepth.ID]
    assert denied, codes


def _cal(counter: int, gain: int = 200_000, offset: int = 500) -> tuple[int, ...]:
    fields = (1, gain, offset, 0, 1_800_000_000, counter)
    return (*fields, calibration_crc(*fields))


def test_calibration_cannot_be_rewritten_or_locked_by_an_unpaired_party() -> None:
    operator = Host(seed=7)
    operator.connect()
    operator.hello()
    before = operator.cmd(CalRead, CalBank.ACTIVE)
    intruder = _intruder(operator)
    for record in (_cal(5), _cal(0xFFFF_FFFF)):  # +20 % gain, +0.5 mm; then a counter lock
        write = intruder.cmd(CalWrite, *record)
        commit = intruder.cmd(CalCommit, record[-1])
        for reply in (write, commit):
            assert isinstance(reply, Nak) and reply.error is ErrorCode.NOT_AUTHORIZED, reply
    operator.connect()
    operator.hello()
    after = operator.cmd(CalRead, CalBank.ACTIVE)
    assert isinstance(after, CalData) and isinstance(before, CalData)
    assert after.replace(cmd_id=0) == before.replace(cmd_id=0)
    assert operator.pen.nvm.cal.counter_floor < 0xFFFF_FFFF


def _pair(
    host: Host, confirm_with: bytes | None = None, *, accept: bool = True, host_id: int = 0x4242
) -> Message:
    """Request, compare the codes, press the pen's button to accept, confirm."""
    own = X25519PrivateKey.generate()
    public = linkauth.public_bytes(own)
    offer = host.cmd(PairRequest, host_id, public, "bench pc")
    if not isinstance(offer, PairOffer):
        return offer
    key = linkauth.pairing_secret(own, offer.pen_public, public, offer.pen_public)
    code = linkauth.confirmation_code(key, public, offer.pen_public)
    assert f"code {code}" in host.pen.display[-1]  # the pen's screen shows the same code
    if accept:
        host.pen.press_pairing_button(host.now)  # the technician accepts on the pen
    proof = linkauth.pair_proof(key, host_id) if confirm_with is None else confirm_with
    return host.cmd(PairConfirm, host_id, proof)


def test_pairing_needs_the_button_and_a_matching_proof() -> None:
    host = Host(seed=8, paired=False)
    host.connect()
    host.hello()
    closed = _pair(host)
    assert isinstance(closed, Nak) and closed.error is ErrorCode.PAIRING_CLOSED
    host.pen.press_pairing_button(host.now)
    wrong = _pair(host, confirm_with=bytes(16))
    assert isinstance(wrong, Nak) and wrong.error is ErrorCode.PAIRING_FAILED
    host.pen.press_pairing_button(host.now)  # a new window: the old request is gone
    done = _pair(host)
    assert isinstance(done, Ack) and done.value == host.pen.nvm.pairings.pen_id
    assert 0x4242 in host.pen.nvm.pairings.hosts
    again = _pair(host)  # one pairing per press of the button
    assert isinstance(again, Nak) and again.error is ErrorCode.PAIRING_CLOSED


def test_the_window_closes_after_a_minute() -> None:
    host = Host(seed=8, paired=False)
    host.connect()
    host.hello()
    host.pen.press_pairing_button(host.now)
    host.run_for(60.5)
    closed = _pair(host)
    assert isinstance(closed, Nak) and closed.error is ErrorCode.PAIRING_CLOSED


def test_pairings_are_listed_and_revoked_by_a_paired_host_only() -> None:
    host = Host(seed=9)
    host.connect()
    host.hello()
    listed = host.cmd(GetPairing, 0)
    assert isinstance(listed, Pairing) and listed.total == 1 and listed.host_id == host.host_id
    intruder = _intruder(host)
    for reply in (intruder.cmd(GetPairing, 0), intruder.cmd(Unpair, host.host_id)):
        assert isinstance(reply, Nak) and reply.error is ErrorCode.NOT_AUTHORIZED
    host.connect()
    host.hello()
    assert host.ack(Unpair, host.host_id).value == 0
    host.connect()  # its next epoch is not authenticated any more
    host.hello()
    assert host.link.peer_id is None
    assert isinstance(host.cmd(SetRate, 90), Nak)


def test_a_burst_of_forged_frames_is_a_security_event() -> None:
    host = Host(seed=10)
    host.connect()
    host.hello()
    epoch = host.link.epoch
    for seq in range(10):  # frames with the live epoch but no valid tag
        host.pen.receive_data(
            encode_frame(Flag.DATA | Flag.ACK, epoch, seq, 0, b"\x02\0\0\0\0"), host.now
        )
    host.run_for(0.1)
    bursts = host.events(EventCode.AUTH_FAILURES)
    assert bursts and bursts[0].value >= 8
    assert host.pen.firmware.link.statistics().auth_failures >= 10


def test_forged_frames_do_not_feed_the_watchdog() -> None:
    """An attacker replaying frames of the live epoch must not keep a run going once the
    paired host is silent: the watchdog fires as it would without them."""
    host = Host(seed=11)
    host.connect()
    host.ready(depth_um=500, rate_sps=90)
    host.start(FOREHEAD, RunMode.DURATION, duration_ms=10_000)
    host.run_for(0.2)
    host.silent = True
    epoch = host.link.epoch
    for _ in range(100):
        frame = encode_frame(Flag.ACK, epoch, 0, 0, b"")
        host.pen.receive_data(frame, host.now)
        host.run_for(0.01)
    assert host.pen.state in (PenState.FAULT, PenState.IDLE)  # the watchdog stopped it


def test_the_pen_must_accept_and_a_second_party_cannot_slip_into_the_window() -> None:
    """Found by review: a rogue host's request replaced the operator's pending one and its
    confirmation was stored with no check on the pen. Now the first request holds the window,
    and only the pen's own button accepts it."""
    operator = Host(seed=12, paired=False)
    operator.connect()
    operator.hello()
    operator.pen.press_pairing_button(operator.now)
    not_yet = _pair(operator, accept=False)
    assert isinstance(not_yet, Nak) and not_yet.error is ErrorCode.PAIRING_NOT_ACCEPTED
    rogue = Host(pen=operator.pen, clock=operator.clock, paired=False, link_seed=66)
    rogue.connect()
    rogue.hello()
    busy = _pair(rogue, host_id=0x7A69)
    assert isinstance(busy, Nak) and (busy.error, busy.value) == (ErrorCode.PAIRING_BUSY, 1)
    assert 0x7A69 not in operator.pen.nvm.pairings.hosts


def test_a_paired_host_id_is_never_re_keyed_by_whoever_claims_it() -> None:
    host = Host(seed=13)  # paired by the bench
    intruder = Host(pen=host.pen, clock=host.clock, paired=False, link_seed=67)
    intruder.connect()
    intruder.hello()
    host.pen.press_pairing_button(host.now)
    assert host.host_id is not None
    key_before = host.pen.nvm.pairings.hosts[host.host_id].key
    claimed = _pair(intruder, host_id=host.host_id)
    assert isinstance(claimed, Nak) and (claimed.error, claimed.value) == (
        ErrorCode.PAIRING_BUSY,
        0,
    )
    assert host.pen.nvm.pairings.hosts[host.host_id].key == key_before
    host.connect()  # and the real host still authenticates with its key
    host.hello()
    assert host.link.peer_id is not None


def test_only_proven_frames_feed_the_watchdog_once_the_paired_host_is_gone() -> None:
    """Found by review: after the operator's host died mid-run, bare SYNs (or SYNs claiming
    the operator's id) every 0.25 s kept the needles running for 10 s. The watchdog (500 ms)
    must fire as if nobody were there."""
    host = Host(seed=14)
    host.connect()
    host.ready(depth_um=500, rate_sps=90)
    host.start(FOREHEAD, RunMode.DURATION, duration_ms=20_000)
    host.run_for(0.3)
    host.silent = True  # the operator's host was killed
    assert host.host_id is not None
    offer = linkauth.AuthOffer(host.host_id, bytes(16)).encode()
    for i in range(12):
        nonce = 1000 + i
        claim = offer if i % 2 else b""
        syn = encode_frame(Flag.SYN | Flag.SACK, 100 + i, nonce & 0xFFFF, nonce >> 16, claim)
        host.pen.receive_data(syn, host.now)
        host.run_for(0.25)
    run = host.pen.run
    assert run is not None and run.end_t is not None, "the run was never stopped"
    assert run.end_t - run.start_t <= 0.3 + 0.5 + 0.06  # the watchdog (500 ms) stopped it
    host.silent = False  # the operator's host is back: it hears of the claims
    host.connect()
    host.hello()
    host.run_for(0.2)
    claims = host.events(EventCode.UNPROVEN_CONNECT)
    assert claims and claims[0].value & 0xFFFF_FFFF == host.host_id


def test_an_unpaired_reader_gets_no_live_treatment_data() -> None:
    host = Host(seed=15)
    host.connect()
    host.ready(depth_um=500, rate_sps=90)
    from micropen.protocol.messages import SetTelemetry

    host.ack(SetTelemetry, 100)
    reader = Host(pen=host.pen, clock=host.clock, paired=False, link_seed=68)
    reader.connect()
    reader.hello()
    reader.run_for(0.5)
    assert not reader.telemetry()


def test_a_pen_holds_eight_pairings_and_refuses_a_ninth() -> None:
    host = Host(seed=16)  # the bench's pairing is the first
    for n in range(7):
        host.pen.add_pairing(0x1000 + n, bytes([n]) * 32, f"host {n}", host.now)
    assert len(host.pen.nvm.pairings.hosts) == 8
    stranger = Host(pen=host.pen, clock=host.clock, paired=False, link_seed=69)
    stranger.connect()
    stranger.hello()
    host.pen.press_pairing_button(host.now)
    full = _pair(stranger, host_id=0x2000)
    assert isinstance(full, Nak) and (full.error, full.value, full.limit) == (
        ErrorCode.PAIRINGS_FULL,
        8,
        8,
    )
    assert len(host.pen.nvm.pairings.hosts) == 8 and 0x2000 not in host.pen.nvm.pairings.hosts


def test_the_window_is_sixty_seconds_exactly() -> None:
    from micropen.sim.pairing import PairingMode

    mode = PairingMode()
    mode.open(100.0)
    assert mode.is_open(159.99) and not mode.is_open(160.0)
