"""Nothing acknowledged is lost: SIGKILL a writer at random points, then audit the log.

``_log_writer.py`` writes sessions, runs, overrides, events, sample batches and (sometimes
duplicated) run reports through the TreatmentLog API and prints ``ACK`` only after each call
returned. The parent kills it with SIGKILL after a seeded number of lines (several times, half
of them right after a ``BEGIN samples`` line, i.e. inside a batch), starts the next writer on the
same file (so every start also recovers a hot WAL), and after each kill opens the log, runs
``check()`` and asserts that every acknowledged record is there exactly once and that the call
in flight left all of its rows or none.
"""

from __future__ import annotations

import json
import os
import random
import selectors
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from micropen.host.treatment_log import TreatmentLog

WRITER = Path(__file__).with_name("_log_writer.py")
LINE_TIMEOUT_S = 20.0  # bounded wait for one line; only reached if the writer hangs or dies
KILLS = 8


@dataclass
class Transcript:
    acked: list[dict[str, Any]] = field(default_factory=list)
    in_flight: dict[str, Any] | None = None


@dataclass(frozen=True)
class KillPoint:
    """Kill ``delay_s`` after the ``after``-th counted line (every line, or only BEGIN samples)."""

    after: int
    samples_only: bool
    delay_s: float


def read_until_killed(proc: subprocess.Popen[bytes], point: KillPoint) -> Transcript:
    """Read lines until the kill point, SIGKILL the writer, then drain what it had printed.

    The delay is waited for in select() while lines keep being read, so the kill can land
    anywhere inside a call, and any ACK printed before it is still counted."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    transcript = Transcript()
    buffer = b""
    seen = 0
    kill_at: float | None = None
    killed = False
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while True:
            if kill_at is not None and not killed and time.monotonic() >= kill_at:
                proc.send_signal(signal.SIGKILL)
                killed = True
            waiting_to_kill = kill_at is not None and not killed
            timeout = LINE_TIMEOUT_S
            if kill_at is not None and not killed:
                timeout = max(0.0, kill_at - time.monotonic())
            if not sel.select(timeout=timeout):
                if waiting_to_kill:
                    continue
                proc.kill()
                pytest.fail(f"writer printed nothing for {LINE_TIMEOUT_S} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                break  # EOF: the writer is dead and everything it printed has been read
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")  # an unfinished last line is not an ACK
            for line in lines:
                seen += take(transcript, line.decode("utf-8"), point.samples_only)
                if kill_at is None and seen >= point.after:
                    kill_at = time.monotonic() + point.delay_s
    assert proc.wait(timeout=LINE_TIMEOUT_S) == -signal.SIGKILL, "the writer ended on its own"
    return transcript


def take(transcript: Transcript, line: str, samples_only: bool) -> int:
    """Record one line; return 1 if it counts towards the kill point."""
    tag, _, body = line.partition(" ")
    if tag == "DONE":
        return 0
    record = json.loads(body)
    if tag == "BEGIN":
        transcript.in_flight = record
        return int(not samples_only or record["op"] == "samples")
    assert tag == "ACK", line
    assert transcript.in_flight is not None and transcript.in_flight["op"] == record["op"]
    transcript.in_flight = None
    transcript.acked.append(record)
    return int(not samples_only)


# --- the audit -----------------------------------------------------------------------------------
def count(db: sqlite3.Connection, sql: str, *params: Any) -> int:
    return int(db.execute(sql, params).fetchone()[0])


def stored(db: sqlite3.Connection, r: dict[str, Any]) -> int:
    """How many times the record is in the log (for samples: how many of its rows)."""
    op = r["op"]
    if op == "session":
        return count(
            db,
            "SELECT count(*) FROM sessions WHERE operator = ? AND pen_serial = ?",
            r["operator"],
            r["serial"],
        )
    if op == "override":
        return count(
            db,
            "SELECT count(*) FROM overrides WHERE session_id = ? AND reason = ?",
            r["sid"],
            r["reason"],
        )
    if op == "event":
        return count(
            db,
            "SELECT count(*) FROM events WHERE session_id = ? AND detail = ?",
            r["sid"],
            r["detail"],
        )
    if op == "samples":
        return count(
            db,
            "SELECT count(*) FROM samples WHERE session_id = ? AND t_ms >= ? AND t_ms < ?",
            r["sid"],
            r["t0"],
            r["t0"] + r["n"],
        )
    if op == "end":
        sql = "SELECT count(*) FROM sessions WHERE id = ? AND outcome = ?"
        return count(db, sql, r["sid"], r["outcome"])
    run = "FROM runs WHERE session_id = ? AND pen_serial = ? AND boot_id = ? AND run_id = ?"
    key = (r["sid"], r["serial"], r["boot"], r["run"])
    if op == "run_start":
        return count(db, f"SELECT count(*) {run} AND started_at IS NOT NULL", *key)
    assert op == "report", r
    sql = f"SELECT count(*) {run} AND strokes = ? AND reported_at IS NOT NULL"
    return count(db, sql, *key, r["strokes"])


def assert_exactly_once(db: sqlite3.Connection, r: dict[str, Any]) -> None:
    if r["op"] == "samples":
        assert stored(db, r) == r["n"], r
        depth_sum = count(
            db,
            "SELECT sum(depth_um) FROM samples WHERE session_id = ? AND t_ms >= ? AND t_ms < ?",
            r["sid"],
            r["t0"],
            r["t0"] + r["n"],
        )
        assert depth_sum == r["depth_sum"], r
    else:
        assert stored(db, r) == 1, r
    if r["op"] == "session":
        sid = db.execute("SELECT id FROM sessions WHERE operator = ?", (r["operator"],)).fetchone()
        assert sid[0] == r["result"], r


def audit(path: Path, acked: list[dict[str, Any]], in_flight: dict[str, Any] | None) -> str:
    """Every acknowledged record exactly once; the interrupted call all-or-nothing."""
    with TreatmentLog(path) as log:
        log.check()
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        for record in acked:
            assert_exactly_once(db, record)
        reports = [r for r in acked if r["op"] == "report"]
        assert [r["result"] for r in reports].count(True) == len(
            {(r["serial"], r["boot"], r["run"]) for r in reports}
        ), "each run report is stored on its first delivery and refused on the next"
        if in_flight is None:
            return "between calls"
        found = stored(db, in_flight)
        whole = in_flight["n"] if in_flight["op"] == "samples" else 1
        assert found in (0, whole), f"a half-stored {in_flight}: {found} of {whole}"
        return f"in {in_flight['op']} ({'committed' if found else 'rolled back'})"
    finally:
        db.close()


def test_sigkill_never_loses_an_acknowledged_record(tmp_path: Path) -> None:
    path = tmp_path / "treatment.sqlite"
    rng = random.Random(62304)
    acked: list[dict[str, Any]] = []
    where = []
    for kill in range(KILLS):
        samples_only = kill % 2 == 1
        point = KillPoint(
            after=rng.randint(1, 12) if samples_only else rng.randint(1, 150),
            samples_only=samples_only,
            delay_s=rng.uniform(0.0, 0.004 if samples_only else 0.001),
        )
        errors = tmp_path / f"writer-{kill}.stderr"
        with errors.open("wb") as stderr:
            proc = subprocess.Popen(
                [sys.executable, str(WRITER), str(path), str(1000 + kill)],
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        try:
            transcript = read_until_killed(proc, point)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; writer stderr:\n{errors.read_text()}") from exc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=LINE_TIMEOUT_S)
            assert proc.stdout is not None
            proc.stdout.close()
        acked += transcript.acked
        where.append(audit(path, acked, transcript.in_flight))
    ops = {r["op"] for r in acked}
    assert {"session", "run_start", "event", "samples", "report", "end", "override"} <= ops
    assert any(w.startswith("in samples") for w in where), where
    print("kills landed:", where)


def test_benchmark_mode_runs(tmp_path: Path) -> None:
    """The figures in docs/treatment-log.md come from this mode; keep it working."""
    out = subprocess.run(
        [
            sys.executable,
            str(WRITER),
            "--bench",
            str(tmp_path / "b.sqlite"),
            "--batches",
            "3",
            "--events",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    figures = json.loads(out.stdout)
    assert figures["settings"]["journal_mode"] == "wal"
    assert figures["settings"]["synchronous"] == 2
    assert figures["samples_per_s_batch_100"] > 0
    assert figures["event_commit_ms"]["max"] >= figures["event_commit_ms"]["median"] > 0
