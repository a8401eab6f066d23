"""A process that writes treatment-log sessions and says what was acknowledged.

    python3 tests/host/_log_writer.py DB SEED      # for test_treatment_log_sigkill.py
    python3 tests/host/_log_writer.py --bench DB   # sample and event commit figures

In the first form it runs simulated sessions through the TreatmentLog API until it is killed
(or, as a safety net, after ``MAX_LINES`` lines) and prints two JSON lines per call, flushed:
``BEGIN {...}`` just before the call and ``ACK {...}`` only after it returned, as the host core
acknowledges a record only after the log method returns. Each line carries what the parent needs
to find the record again (session id, unique text token, sample range and depth sum).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from micropen.host.treatment_log import SampleRow, TreatmentLog

MAX_LINES = 20_000
RUNNING = 2  # PenState.RUNNING


class Writer:
    """Drives the log like the host core would, from one seed."""

    def __init__(self, log: TreatmentLog, seed: int) -> None:
        self.log = log
        self.seed = seed
        self.rng = random.Random(seed)
        self.serial = f"PEN-{seed % 3}"  # children share pens: reports must stay unique
        self.boot_id = self.rng.getrandbits(32)
        self.next_run = 1
        self.lines = 0
        self.tokens = 0
        self.t_ms = 0

    def say(self, tag: str, record: dict[str, Any]) -> None:
        print(tag, json.dumps(record), flush=True)
        self.lines += 1

    def token(self, what: str) -> str:
        self.tokens += 1
        return f"{what} s{self.seed}#{self.tokens}"

    def call(self, record: dict[str, Any], fn: Any, **kwargs: Any) -> Any:
        """BEGIN, the call, then ACK (with the result) only once it has returned."""
        self.say("BEGIN", record)
        result = fn(**kwargs)
        self.say("ACK", {**record, "result": result})
        return result

    def run_forever(self) -> None:
        while self.lines < MAX_LINES:
            self.one_session()
        print("DONE", flush=True)

    def one_session(self) -> None:
        operator = self.token('Dr O\'Brien, "night"\nshift «Ŝ»')
        sid = self.call(
            {"op": "session", "operator": operator, "serial": self.serial},
            self.log.start_session,
            pen_serial=self.serial,
            pen_model="MicroPen-12",
            firmware="1.0.0",
            protocol_version=1,
            boot_id=self.boot_id,
            operator=operator,
            pen_url="sim://",
            is_simulated=True,
        )
        self.t_ms = 0
        for _ in range(self.rng.randint(1, 3)):
            self.one_run(sid)
        outcome = self.rng.choice(["completed", "aborted"])
        self.call(
            {"op": "end", "sid": sid, "outcome": outcome},
            self.log.end_session,
            session_id=sid,
            outcome=outcome,
        )

    def one_run(self, sid: int) -> None:
        run_id, self.next_run = self.next_run, self.next_run + 1
        depth = self.rng.choice([800, 1000, 1800])
        reason = None
        if depth > 1500:
            reason = self.token("thick scars; 'deep', ok")
            self.call(
                {"op": "override", "sid": sid, "reason": reason},
                self.log.record_override,
                session_id=sid,
                depth_um=depth,
                area="cheeks",
                reason=reason,
            )
        key = {"sid": sid, "serial": self.serial, "boot": self.boot_id, "run": run_id}
        self.call(
            {"op": "run_start", **key},
            self.log.record_run_start,
            session_id=sid,
            run_id=run_id,
            area="cheeks",
            depth_um=depth,
            rate_sps=110,
            mode="STROKES",
            target=1000,
            cartridge_id=self.seed,
            cartridge_lot="LOT",
            soft_cap_override_reason=reason,
        )
        self.event(sid, "event", "RUN_STARTED", run_id)
        for _ in range(self.rng.randint(1, 4)):
            self.samples(sid, depth)
        if self.rng.random() < 0.3:
            self.event(sid, "fault", "STALL", run_id)
        strokes = self.rng.randint(1, 1000)
        for _ in range(self.rng.choice([1, 1, 2])):  # sometimes the pen re-sends the report
            self.call(
                {"op": "report", **key, "strokes": strokes},
                self.log.record_run_report,
                session_id=sid,
                boot_id=self.boot_id,
                run_id=run_id,
                outcome="COMPLETED",
                strokes=strokes,
                target=1000,
                duration_ms=strokes * 9,
                area="cheeks",
                depth_um=depth,
                rate_sps=110,
                cartridge_id=self.seed,
            )

    def event(self, sid: int, kind: str, code: str, run_id: int) -> None:
        detail = self.token("detail")
        self.call(
            {"op": "event", "sid": sid, "detail": detail},
            self.log.record_event,
            session_id=sid,
            kind=kind,
            code=code,
            value=run_id,
            run_id=run_id,
            pen_t_ms=self.t_ms,
            detail=detail,
        )

    def samples(self, sid: int, depth: int) -> None:
        n = self.rng.randint(100, 2000)
        t0 = self.t_ms
        rows = [
            SampleRow(
                t0 + i,
                RUNNING,
                depth + self.rng.randint(-30, 30),
                11000,
                i,
                300,
                310,
                3900,
                self.seed,
                i,
                1.7e9 + (t0 + i) / 1000,
            )
            for i in range(n)
        ]
        self.t_ms += n
        record = {"op": "samples", "sid": sid, "t0": t0, "n": n}
        self.call(
            {**record, "depth_sum": sum(r.depth_um for r in rows)},
            self.log.add_samples,
            session_id=sid,
            samples=rows,
        )


# --- benchmark ---------------------------------------------------------------------------------
def bench(path: Path, batches: int, events: int) -> dict[str, Any]:
    """Sample insert rate per batch size, and single event commit latency (synchronous=FULL)."""
    with TreatmentLog(path) as log:
        sid = log.start_session(
            pen_serial="BENCH",
            pen_model="m",
            firmware="f",
            protocol_version=1,
            boot_id=1,
            operator="bench",
            pen_url="sim://",
            is_simulated=True,
        )
        result: dict[str, Any] = {"settings": log.settings()}
        t_ms = 0
        for size in (100, 1000):
            rows_list = []
            for _ in range(batches):
                rows_list.append(
                    [
                        SampleRow(
                            t_ms + i,
                            RUNNING,
                            1000,
                            11000,
                            i,
                            300,
                            310,
                            3900,
                            1,
                            i,
                            1.7e9 + t_ms + i,
                        )
                        for i in range(size)
                    ]
                )
                t_ms += size
            start = time.perf_counter()
            for rows in rows_list:
                log.add_samples(sid, rows)
            elapsed = time.perf_counter() - start
            result[f"samples_per_s_batch_{size}"] = round(batches * size / elapsed)
            result[f"batch_{size}_ms"] = round(elapsed / batches * 1000, 3)
        latencies = []
        for n in range(events):
            start = time.perf_counter()
            log.record_event(sid, kind="event", code="BENCH", value=n, run_id=0, pen_t_ms=n)
            latencies.append((time.perf_counter() - start) * 1000)
        latencies.sort()
        result["event_commit_ms"] = {
            "median": round(statistics.median(latencies), 3),
            "p99": round(latencies[int(len(latencies) * 0.99) - 1], 3),
            "max": round(latencies[-1], 3),
        }
        log.check()
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", action="store_true", help="measure instead of writing")
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("db", type=Path)
    parser.add_argument("seed", type=int, nargs="?", default=0)
    args = parser.parse_args(argv)
    if args.bench:
        print(json.dumps(bench(args.db, args.batches, args.events), indent=2))
        return 0
    with TreatmentLog(args.db) as log:
        Writer(log, args.seed).run_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
