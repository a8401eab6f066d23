"""Codec throughput: telemetry frames encoded, and decoded into validated message objects.

What a host does with a 1 kHz telemetry stream, timed with ``time.perf_counter`` in one thread:

* **encode**: ``Telemetry.encode()`` + ``framing.encode_frame`` per sample;
* **decode**: the wire bytes fed to ``FrameDecoder.feed`` in 4 KiB reads (COBS + CRC check),
  each raw frame turned into a range-checked ``Telemetry`` by ``decode_message``;
* **decode, corrupt**: the same with a fraction of the frames damaged by one bit flip each
  (rate counted in frames offered, good and bad);
* the two halves of decoding alone, to show where the time goes, and decoding into one list
  that keeps every message alive (the garbage collector then tracks 200 000 objects).

Each figure is the best of ``REPEATS`` interleaved runs (the machine's other work only ever
slows a run down). Decoded messages are dropped as they come, as a streaming consumer does;
keeping all of them alive adds the garbage collector's cost of tracking them, which is not
decoding (``decode_keep_all_frames_per_s`` shows that cost). ``micropen bench codec`` reports
this dict; ``python3 -m micropen.tools.bench_codec`` prints it as JSON.
"""

from __future__ import annotations

import gc
import json
import random
import time
from collections.abc import Callable

from micropen.protocol.framing import HEADER, FrameDecoder, encode_frame
from micropen.protocol.link import Flag
from micropen.protocol.messages import PenState, Telemetry
from micropen.protocol.schema import Message, decode_message

__all__ = ["CHUNK_BYTES", "REPEATS", "TARGET_DECODE_FRAMES_PER_S", "measure_codec"]

CHUNK_BYTES = 4096  # a typical serial/USB read
REPEATS = 5
TARGET_DECODE_FRAMES_PER_S = 400_000
_FLAGS = int(Flag.DATA | Flag.ACK)
_EPOCH = 0x2A


def telemetry_stream(frames: int, seed: int) -> list[Telemetry]:
    """A treatment run sampled at 1 kHz: depth and rate jitter around their set points."""
    rng = random.Random(seed)
    samples = []
    for i in range(frames):
        strokes = i * 110 // 1000
        samples.append(
            Telemetry(
                t_ms=120_000 + i,
                state=PenState.RUNNING,
                depth_um=1000 + rng.randint(-20, 20),
                rate_csps=11_000 + rng.randint(-60, 60),
                run_strokes=strokes,
                current_ma=300 + rng.randint(-50, 50),
                temperature_dc=330 + i // 20_000,
                battery_mv=3950 - i // 5_000,
                cartridge_id=0x00C0FFEE,
                cartridge_strokes=40_000 + strokes,
            )
        )
    return samples


def _encode(messages: list[Telemetry]) -> list[bytes]:
    return [
        encode_frame(_FLAGS, _EPOCH, seq & 0xFFFF, 0, message.encode())
        for seq, message in enumerate(messages)
    ]


def _decode(chunks: list[bytes]) -> int:
    """Decode like a streaming consumer: each message is built, handed on, then dropped."""
    decoder = FrameDecoder()
    feed, start = decoder.feed, HEADER.size
    count = 0
    for chunk in chunks:
        for raw in feed(chunk):
            decode_message(raw, start, len(raw) - 4)
            count += 1
    return count


def _decode_all(chunks: list[bytes]) -> list[Message]:
    """The same, keeping every message (untimed: to check the stream round-trips)."""
    decoder = FrameDecoder()
    start = HEADER.size
    return [decode_message(r, start, len(r) - 4) for chunk in chunks for r in decoder.feed(chunk)]


def _feed_only(chunks: list[bytes]) -> list[bytes]:
    decoder = FrameDecoder()
    return [raw for chunk in chunks for raw in decoder.feed(chunk)]


def _decode_only(raws: list[bytes]) -> int:
    start = HEADER.size
    for raw in raws:
        decode_message(raw, start, len(raw) - 4)
    return len(raws)


def _best_times(work: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Shortest wall time of each piece of work over REPEATS rounds. The rounds interleave the
    pieces, so a burst of other load on the machine slows one sample of each, not all samples
    of one; a collection before each run keeps one run's garbage out of the next."""
    best = dict.fromkeys(work, float("inf"))
    for _ in range(REPEATS):
        for name, job in work.items():
            gc.collect()
            started = time.perf_counter()
            job()
            best[name] = min(best[name], time.perf_counter() - started)
    return best


def _chunks(stream: bytes) -> list[bytes]:
    return [stream[i : i + CHUNK_BYTES] for i in range(0, len(stream), CHUNK_BYTES)]


def _corrupt(wires: list[bytes], fraction: float, rng: random.Random) -> tuple[bytes, int]:
    """The stream with one bit flipped inside each of ``fraction`` of the frames."""
    damaged = list(wires)
    victims = rng.sample(range(len(wires)), round(len(wires) * fraction))
    for index in victims:
        frame = bytearray(wires[index])
        bit = rng.randrange(8, 8 * (len(frame) - 1))  # not the delimiters
        frame[bit // 8] ^= 1 << (bit % 8)
        damaged[index] = bytes(frame)
    return b"".join(damaged), len(victims)


def measure_codec(
    frames: int = 200_000, corrupt_fraction: float = 0.01, seed: int = 0
) -> dict[str, float | int]:
    """Encode and decode throughput of a telemetry stream; see the module docstring."""
    if frames < 1 or not 0.0 <= corrupt_fraction <= 1.0:
        raise ValueError(
            f"frames={frames} must be >= 1 and corrupt_fraction={corrupt_fraction} in 0..1"
        )
    messages = telemetry_stream(frames, seed)
    wires = _encode(messages)
    stream = b"".join(wires)
    chunks = _chunks(stream)
    if _decode_all(chunks) != messages:
        raise AssertionError("decoded stream differs from the encoded one")
    raws = _feed_only(chunks)
    damaged, corrupted = _corrupt(wires, corrupt_fraction, random.Random(seed + 1))
    damaged_chunks = _chunks(damaged)
    survivors = _decode(damaged_chunks)
    t = _best_times(
        {
            "encode": lambda: _encode(messages),
            "decode": lambda: _decode(chunks),
            "keep": lambda: _decode_all(chunks),
            "feed": lambda: _feed_only(chunks),
            "message": lambda: _decode_only(raws),
            "corrupt": lambda: _decode(damaged_chunks),
        }
    )
    return {
        "frames": frames,
        "frame_bytes": len(wires[0]),
        "chunk_bytes": CHUNK_BYTES,
        "repeats": REPEATS,
        "encode_frames_per_s": frames / t["encode"],
        "decode_frames_per_s": frames / t["decode"],
        "decode_wire_mb_per_s": len(stream) / t["decode"] / 1e6,
        "decode_keep_all_frames_per_s": frames / t["keep"],
        "framing_only_frames_per_s": frames / t["feed"],
        "message_decode_only_frames_per_s": frames / t["message"],
        "decode_corrupt_frames_per_s": frames / t["corrupt"],
        "corrupt_frames": corrupted,
        "corrupt_frames_rejected": frames - survivors,
    }


if __name__ == "__main__":
    print(json.dumps(measure_codec(), indent=2, sort_keys=True))
