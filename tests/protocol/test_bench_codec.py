"""The codec benchmark measures what it claims: a round-tripping telemetry stream, and every
damaged frame rejected."""

from __future__ import annotations

import pytest

from micropen.protocol.framing import MAX_WIRE_FRAME
from micropen.tools.bench_codec import measure_codec, telemetry_stream


def test_small_run_reports_every_figure() -> None:
    figures = measure_codec(frames=3000, corrupt_fraction=0.05, seed=3)
    assert figures["frames"] == 3000
    assert (
        figures["frame_bytes"] == 41
    )  # Telemetry: 27-byte body, 38-byte frame, COBS, 2 delimiters
    assert figures["frame_bytes"] <= MAX_WIRE_FRAME
    assert figures["corrupt_frames"] == figures["corrupt_frames_rejected"] == 150
    for key in (
        "encode_frames_per_s",
        "decode_frames_per_s",
        "decode_corrupt_frames_per_s",
        "decode_keep_all_frames_per_s",
        "framing_only_frames_per_s",
        "message_decode_only_frames_per_s",
    ):
        assert figures[key] > 0, key


def test_stream_is_deterministic_and_valid() -> None:
    assert telemetry_stream(50, seed=1) == telemetry_stream(50, seed=1)
    assert telemetry_stream(50, seed=1) != telemetry_stream(50, seed=2)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="corrupt_fraction=2"):
        measure_codec(frames=10, corrupt_fraction=2)
