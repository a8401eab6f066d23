"""A local mosquitto broker with the fleet's authentication: for tests, benchmarks and a
single-site deployment.

:func:`fleet_acl` writes the access rules the fleet relies on: the bridge of pen S logs in as
user S (``%u``) and may write only its own status/telemetry/events/sessions/reply topics and
read only its own ``cmd`` topic; watchers read the tree; operators also write ``cmd`` topics;
admins may do anything. :class:`LocalMosquitto` generates a config (password file made with
``mosquitto_passwd -b``, that ACL, ``allow_anonymous false``, persistence in its folder so a
restart keeps retained and queued messages, optional TLS listeners), starts the broker on
loopback, waits until its port accepts connections (retry with a deadline, not a sleep) and
stops it on exit.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from .errors import FleetError

__all__ = ["LocalMosquitto", "TLSFiles", "find_mosquitto", "fleet_acl", "free_port"]

PEN_WRITES = ("status", "telemetry", "events", "sessions", "reply", "records/#")


def find_mosquitto() -> str | None:
    """Path of the mosquitto binary (often in /usr/sbin, outside a user's PATH)."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fleet_acl(
    *,
    admins: Iterable[str] = (),
    operators: Iterable[str] = (),
    watchers: Iterable[str] = (),
) -> str:
    """The mosquitto ACL file of a fleet: per-pen patterns plus named roles."""
    lines = ["# micropen fleet ACL: pen bridges log in with the pen serial as username (%u)"]
    lines += [f"pattern write micropen/v1/+/%u/{channel}" for channel in PEN_WRITES]
    lines.append("pattern read micropen/v1/+/%u/cmd")
    for user in watchers:
        lines += ["", f"user {user}", "topic read micropen/v1/#"]
    for user in operators:
        lines += ["", f"user {user}", "topic read micropen/v1/#", "topic write micropen/v1/+/+/cmd"]
    for user in admins:
        lines += ["", f"user {user}", "topic readwrite #"]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class TLSFiles:
    """PEM files of a TLS listener."""

    cafile: Path
    certfile: Path
    keyfile: Path
    require_certificate: bool = False


class LocalMosquitto:
    """One mosquitto process on 127.0.0.1, configured in ``workdir``. Use as a context manager."""

    def __init__(
        self,
        workdir: Path,
        *,
        users: Mapping[str, str] | None = None,
        acl: str | None = None,
        tls: Iterable[TLSFiles] = (),
        allow_anonymous: bool = False,
        max_queued_messages: int = 100_000,
    ) -> None:
        binary = find_mosquitto()
        if binary is None:
            raise FleetError(
                "the mosquitto broker is not installed; install it (apt-get install mosquitto, "
                "brew install mosquitto) or point the bridge at an existing broker"
            )
        self.binary = binary
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.tls = list(tls)
        self.tls_ports = [free_port() for _ in self.tls]
        self.users = dict(users or {})
        self.log_path = self.workdir / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._write_config(acl, allow_anonymous, max_queued_messages)

    # --- config ---------------------------------------------------------------------------
    def _write_config(self, acl: str | None, allow_anonymous: bool, max_queued: int) -> None:
        (self.workdir / "data").mkdir(exist_ok=True)
        lines = [
            f"user {pwd.getpwuid(os.geteuid()).pw_name}",
            "per_listener_settings false",
            f"allow_anonymous {'true' if allow_anonymous else 'false'}",
            "persistence true",
            f"persistence_location {self.workdir / 'data'}/",
            f"max_queued_messages {max_queued}",
            "max_inflight_messages 100",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
        ]
        if self.users:
            passwd = self.workdir / "passwd"
            self._make_passwd(passwd)
            lines.append(f"password_file {passwd}")
        if acl is not None:
            acl_path = self.workdir / "acl"
            acl_path.write_text(acl, encoding="utf-8")
            lines.append(f"acl_file {acl_path}")
        lines += ["", f"listener {self.port} 127.0.0.1"]
        for files, port in zip(self.tls, self.tls_ports, strict=True):
            lines += [
                "", f"listener {port} 127.0.0.1", f"cafile {files.cafile}",
                f"certfile {files.certfile}", f"keyfile {files.keyfile}",
                f"require_certificate {'true' if files.require_certificate else 'false'}",
            ]  # fmt: skip
        self.config_path = self.workdir / "mosquitto.conf"
        self.config_path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def _make_passwd(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        path.touch(mode=0o600)
        tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
        for user, password in self.users.items():
            subprocess.run(
                [tool, "-b", str(path), user, password],
                check=True, capture_output=True, timeout=10,
            )  # fmt: skip

    # --- process --------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def tls_url(self, index: int = 0) -> str:
        return f"mqtts://localhost:{self.tls_ports[index]}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        with open(self.log_path, "ab") as log_file:
            self._proc = subprocess.Popen(
                [self.binary, "-c", str(self.config_path)],
                stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        """Until every listener accepts TCP connections; FleetError (with the log) if not."""
        deadline = time.monotonic() + timeout
        for port in (self.port, *self.tls_ports):
            while True:
                if self._proc is None or self._proc.poll() is not None:
                    raise FleetError(f"mosquitto exited at start:\n{self.log_tail()}")
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise FleetError(
                            f"mosquitto did not listen on port {port} within {timeout} s:\n"
                            f"{self.log_tail()}"
                        ) from None
                    time.sleep(0.02)  # bounded poll of a real process's socket

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (mosquitto saves its persistence file), then SIGKILL if it hangs."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

    def restart(self, timeout: float = 10.0) -> None:
        self.stop(timeout)
        self.start(timeout)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
