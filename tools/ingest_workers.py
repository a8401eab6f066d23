"""Ingest workers as processes: ``micropen fleet ingest --json`` started, waited for, killed
or stopped (its summary read back). Used by ``micropen bench ingest`` and the fault tests."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from micropen.host.fleet.errors import FleetError

__all__ = ["WorkerProcess", "micropen_command"]


def micropen_command() -> list[str]:
    """The installed ``micropen`` next to this interpreter (a venv's), else on PATH, else the
    module entry point."""
    beside = Path(sys.executable).with_name("micropen")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("micropen")
    return [found] if found else [sys.executable, "-m", "micropen.tools.entry"]


class WorkerProcess:
    """One ``micropen fleet ingest`` process; its JSON lines are collected by a thread."""

    def __init__(
        self,
        worker_id: str,
        mqtt_url: str,
        dsn: str,
        *,
        username: str | None = None,
        password_file: Path | None = None,
        batch: int = 200,
    ) -> None:
        self.worker_id = worker_id
        self.args = [*micropen_command(), "fleet", "ingest", "--mqtt", mqtt_url, "--db", dsn,
                     "--worker-id", worker_id, "--batch", str(batch), "--json"]  # fmt: skip
        if username:
            self.args += ["--username", username]
        if password_file:
            self.args += ["--password-file", str(password_file)]
        self.lines: list[dict[str, Any]] = []
        self.stderr = ""
        self._changed = threading.Condition()
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 20.0) -> None:
        """Start it and wait until it subscribed (FleetError, with its output, if not)."""
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env)  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()
        self.wait_for("subscribed", timeout)

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                document = json.loads(line)
            except ValueError:
                document = {"event": "text", "line": line.rstrip()}
            with self._changed:
                self.lines.append(document)
                self._changed.notify_all()

    def _read_err(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr += line

    def count(self, event: str) -> int:
        with self._changed:
            return sum(1 for d in self.lines if d.get("event") == event)

    def wait_for(self, event: str, timeout: float, *, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while sum(1 for d in self.lines if d.get("event") == event) < count:
                left = deadline - time.monotonic()
                exited = self.proc is not None and self.proc.poll() is not None
                # an exited worker's last lines may still be on their way: one short wait
                if left <= 0 or (exited and not self._changed.wait(0.5)):
                    raise FleetError(
                        f"ingest worker {self.worker_id} did not report {event!r} within "
                        f"{timeout} s (exit status {self.proc and self.proc.poll()}); its "
                        f"output: {self.lines[-5:]} {self.stderr[-800:]}"
                    )
                if not exited:
                    self._changed.wait(min(left, 0.5))

    def kill(self) -> None:
        """SIGKILL: no goodbye, no acknowledgement of what it was storing."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> dict[str, Any]:
        """SIGTERM, then its summary (the worker's counters and latencies)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise FleetError(
                f"ingest worker {self.worker_id} did not stop within {timeout} s"
            ) from None
        self.wait_for("summary", 5.0)
        with self._changed:
            return next(d for d in reversed(self.lines) if d.get("event") == "summary")

    def leave(self, timeout: float = 30.0) -> dict[str, Any]:
        """Decommission this worker (``--leave-group``): its session is drained and ended, so
        the group's share is no longer queued for it. Its summary."""
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        done = subprocess.run([*self.args, "--leave-group"], capture_output=True, text=True,
                              timeout=timeout, env=env)  # fmt: skip
        lines = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
        if done.returncode != 0 or not any(d.get("event") == "left-group" for d in lines):
            raise FleetError(
                f"ingest worker {self.worker_id} could not leave the group (exit status "
                f"{done.returncode}): {lines[-3:]} {done.stderr[-800:]}"
            )
        return next(d for d in reversed(lines) if d.get("event") == "summary")

    def ensure_dead(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
