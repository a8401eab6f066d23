"""The link proxy's fault model (tools/proxy_faults.py) and its command line (tools/proxy.py).

The model is sans-I/O, so it is tested in virtual time: seeded determinism (whatever the
chunking), fault rates within binomial bounds, frame boundaries respected by the frame faults,
delays and disconnects. Two end-to-end tests run the real proxy in front of an in-process
simulated pen.
"""

from __future__ import annotations

import json
import math
import random
import signal
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from micropen.host import open_pen
from micropen.protocol.errors import LocalProtocolError
from micropen.protocol.framing import FrameDecoder, encode_frame
from micropen.protocol.messages import SimParam
from micropen.tools.proxy import PEN_TO_HOST, ProxyThread, app, parse_listen
from micropen.tools.proxy_faults import BitErrors, FaultSpec, FaultyDirection, FrameCounter


def _frames(n: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    return [
        encode_frame(1, 7, i & 0xFFFF, 0, rng.randbytes(rng.randrange(4, 40))) for i in range(n)
    ]


def _stream(n: int, seed: int = 1) -> bytes:
    return b"".join(_frames(n, seed))


def _within(hits: int, trials: int, p: float, sigmas: float = 4.0) -> bool:
    sigma = math.sqrt(trials * p * (1 - p))
    return abs(hits - trials * p) <= sigmas * sigma


BAD = FaultSpec(drop_frames=0.05, corrupt_frames=0.02, duplicate_frames=0.03, corrupt_bytes=1e-3)


# ------------------------------------------------------------------------------- determinism
def test_same_seed_same_faults() -> None:
    data = _stream(3000)
    one = FaultyDirection("a", BAD, seed=11).feed(data, 0.0)
    two = FaultyDirection("b", BAD, seed=11).feed(data, 0.0)
    other = FaultyDirection("a", BAD, seed=12).feed(data, 0.0)
    assert one == two
    assert one != other


@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(min_value=1, max_value=97), min_size=1, max_size=60))
def test_faults_do_not_depend_on_chunking(cuts: list[int]) -> None:
    data = _stream(400, seed=3)
    whole = FaultyDirection("x", BAD, seed=5)
    expected = whole.feed(data, 0.0)
    chunked = FaultyDirection("x", BAD, seed=5)
    out, pos, i = [], 0, 0
    while pos < len(data):
        size = cuts[i % len(cuts)]
        out.append(chunked.feed(data[pos : pos + size], 0.0))
        pos, i = pos + size, i + 1
    assert b"".join(out) == expected
    assert chunked.stats == whole.stats


# ------------------------------------------------------------------------------- rates
@pytest.mark.parametrize("p", [0.02, 0.2])
def test_frame_drop_rate_within_bounds(p: float) -> None:
    direction = FaultyDirection("d", FaultSpec(drop_frames=p), seed=2)
    direction.feed(_stream(20_000), 0.0)
    assert direction.stats.frames == 20_000
    assert _within(direction.stats.dropped, 20_000, p)


def test_duplicate_and_frame_corruption_rates_within_bounds() -> None:
    spec = FaultSpec(duplicate_frames=0.03, corrupt_frames=0.01)
    direction = FaultyDirection("d", spec, seed=4)
    direction.feed(_stream(20_000), 0.0)
    assert _within(direction.stats.duplicated, 20_000, 0.03)
    assert _within(direction.stats.corrupted_frames, 20_000, 0.01)


@pytest.mark.parametrize("rate", [1e-3, 1e-2])
def test_byte_error_rate_within_bounds(rate: float) -> None:
    data = _stream(20_000)
    direction = FaultyDirection("d", FaultSpec(corrupt_bytes=rate), seed=6)
    out = direction.feed(data, 0.0)
    assert len(out) == len(data)
    changed = sum(1 for a, b in zip(data, out, strict=True) if a != b)
    assert changed == direction.stats.corrupted_bytes
    assert _within(changed, len(data), rate)


def test_bit_errors_flip_exactly_one_bit_per_hit() -> None:
    data = bytes(range(256)) * 20
    out = BitErrors(1.0, random.Random(1)).apply(data)
    assert all(bin(a ^ b).count("1") == 1 for a, b in zip(data, out, strict=True))
    assert BitErrors(0.0, random.Random(1)).apply(data) == data


def test_bit_errors_can_hit_delimiters() -> None:
    """Line noise is not frame-aware: it merges and splits frames, as a real line does."""
    data = _stream(20_000)
    out = FaultyDirection("d", FaultSpec(corrupt_bytes=2e-3), seed=8).feed(data, 0.0)
    lost_delimiters = sum(1 for a, b in zip(data, out, strict=True) if a == 0 and b != 0)
    new_delimiters = sum(1 for a, b in zip(data, out, strict=True) if a != 0 and b == 0)
    assert lost_delimiters > 0 and new_delimiters >= 0


# ------------------------------------------------------------------------------- frames
def test_frame_faults_keep_frame_boundaries() -> None:
    """Dropping and duplicating remove or repeat whole frames: every frame that arrives is one
    that was sent, intact, in order."""
    frames = _frames(5000)
    spec = FaultSpec(drop_frames=0.1, duplicate_frames=0.1)
    out = FaultyDirection("d", spec, seed=9).feed(b"".join(frames), 0.0)
    decoder = FrameDecoder()
    got = decoder.feed(out)
    assert decoder.stats.crc_failures == decoder.stats.cobs_failures == 0
    sent = [FrameDecoder().feed(f)[0] for f in frames]
    it = iter(sent)
    previous = None
    for frame in got:
        if frame == previous:
            continue  # a duplicate follows its original
        previous = next(f for f in it if f == frame)  # raises if out of order or invented


def test_a_partial_frame_waits_for_its_delimiter() -> None:
    frame = encode_frame(1, 1, 1, 0, b"hello")
    direction = FaultyDirection("d", FaultSpec(drop_frames=1e-6), seed=1)
    assert direction.feed(frame[:-3], 0.0) == b""
    assert direction.feed(frame[-3:], 0.0) == frame


@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=40))
def test_frame_counter_counts_across_chunks(cuts: list[int]) -> None:
    data = b"garbage" + _stream(200) + b"\0\0" + _stream(50, seed=2)[:-5]
    counter, pos, total, i = FrameCounter(), 0, 0, 0
    while pos < len(data):
        total += counter.feed(data[pos : pos + cuts[i % len(cuts)]])
        pos, i = pos + cuts[i % len(cuts)], i + 1
    assert total == 1 + 200 + 49  # the garbage before the first delimiter is a "frame" too;
    # the very last frame is incomplete


# ------------------------------------------------------------------------------- time
def test_delay_holds_bytes_until_due_and_keeps_order() -> None:
    direction = FaultyDirection("d", FaultSpec(delay_ms=50), seed=1)
    first, second = _frames(2)
    assert direction.feed(first, 1.0) == b""
    assert direction.feed(second, 1.02) == b""
    assert direction.next_deadline() == pytest.approx(1.05)
    assert direction.release(1.049) == b""
    assert direction.release(1.05) == first
    assert direction.release(1.07) == second
    assert direction.next_deadline() is None
    assert direction.stats.delayed == 2


def test_disconnect_discards_both_ways_for_its_duration() -> None:
    direction = FaultyDirection("d", FaultSpec(), seed=1)
    frame = _frames(1)[0]
    direction.disconnect(100, 5.0)
    assert direction.feed(frame, 5.05) == b""
    assert direction.stats.discarded == len(frame)
    assert direction.feed(frame, 5.1) == frame


# ------------------------------------------------------------------------------- vocabulary
@pytest.mark.parametrize(
    "kwargs",
    [
        {"drop_frames": 1.5},
        {"corrupt_bytes": -0.1},
        {"duplicate_frames": float("nan")},
        {"delay_ms": 10_001},
        {"delay_ms": -1},
        {"delay_ms": 1.5},
    ],
)
def test_bad_fault_specs_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(LocalProtocolError):
        FaultSpec(**kwargs)  # type: ignore[arg-type]


def test_fault_spec_maps_to_the_simulator_parameters() -> None:
    spec = FaultSpec(drop_frames=0.02, corrupt_frames=0.001, duplicate_frames=0.5, delay_ms=7)
    assert spec.sim_params() == {
        SimParam.LINK_DROP_PPM: 20_000,
        SimParam.LINK_CORRUPT_PPM: 1_000,
        SimParam.LINK_DUPLICATE_PPM: 500_000,
        SimParam.LINK_DELAY_MS: 7,
    }


@pytest.mark.parametrize(
    ("text", "kind", "port"), [("pty", "pty", 0), ("tcp:5000", "tcp", 5000), ("tcp:0", "tcp", 0)]
)
def test_parse_listen(text: str, kind: str, port: int) -> None:
    spec = parse_listen(text)
    assert (spec.kind, spec.port) == (kind, port)


@pytest.mark.parametrize("text", ["tcp", "tcp:x", "udp:5", "tcp:70000", ""])
def test_bad_listen_exits_2(text: str) -> None:
    result = CliRunner().invoke(app, ["--pen", "sim://", "--listen", text])
    assert result.exit_code == 2
    assert "--listen" in result.output or "listen" in result.output


def test_bad_rate_exits_2() -> None:
    result = CliRunner().invoke(app, ["--pen", "sim://", "--drop-frames", "2"])
    assert result.exit_code == 2
    assert "drop_frames" in result.output


# ------------------------------------------------------------------------------- end to end
def test_a_host_talks_to_a_pen_through_a_bad_line() -> None:
    spec = FaultSpec(drop_frames=0.05, corrupt_bytes=2e-3)
    with ProxyThread("sim://?seed=3", "tcp:0", faults=spec, seed=1) as proxy:
        pen = open_pen(f"socket://127.0.0.1:{proxy.address}")
        try:
            for _ in range(100):
                assert pen.status().boot_id == pen.identity.boot_id
            stats = proxy.statistics()
            host = pen.statistics()
        finally:
            pen.close()
    assert stats[PEN_TO_HOST]["frames"] > 100 and host["late_replies"] == 0
    assert sum(stats[d]["dropped"] for d in ("host_to_pen", PEN_TO_HOST)) > 0


def test_command_line_announces_and_reports_json() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "micropen.tools.proxy", "--pen", "sim://?seed=4",
         "--listen", "tcp:0", "--seed", "3", "--drop-frames", "0.01", "--json"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        with open_pen(f"socket://127.0.0.1:{port}") as pen:
            pen.status()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    stats = json.loads(out.strip().splitlines()[-1])
    assert stats["seed"] == 3
    for direction in ("host_to_pen", "pen_to_host"):
        keys = {"bytes", "frames", "dropped", "corrupted", "duplicated", "delayed"}
        assert keys <= stats[direction].keys() and stats[direction]["frames"] > 0
