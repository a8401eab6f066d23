"""A local mosquitto broker with the fleet's authentication: for tests, benchmarks and a
single-site deployment.

:func:`fleet_acl` writes the access rules the fleet relies on, from a roster of pens
(site, serial): the bridge of pen S at site X logs in as user S and may write only
``micropen/v1/X/S/{status,telemetry,events,sessions,reply}`` and read only
``micropen/v1/X/S/cmd/+`` — the site is part of the rule, so a pen's credentials cannot
publish under another site (mosquitto's ``%u`` pattern cannot bind a site, hence one block per
pen, generated: ``micropen fleet acl ROSTER``). Watchers read the tree; operator U may write
commands only on ``micropen/v1/+/+/cmd/U`` (so the topic names the authenticated sender);
admins may do anything. :func:`broker_settings` are the limits the docs recommend: every
listener replaces the client id with the username (no client can take over another user's
session, say the bridge's), and packets/payloads above a size are refused by the broker.

:class:`LocalMosquitto` generates a config (password file made with ``mosquitto_passwd -b``, that
ACL, ``allow_anonymous false``, those settings, persistence in its folder so a restart keeps
retained and queued messages, optional TLS listeners), starts the broker on loopback, waits until
its port accepts connections (retry with a deadline, not a sleep) and stops it on exit.
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

from .errors import BrokerConfigError, FleetError
from .topics import TOPIC_ROOT, check_level

__all__ = [
    "LISTENER_SETTINGS",
    "MAX_PACKET_BYTES",
    "MESSAGE_SIZE_LIMIT",
    "LocalMosquitto",
    "TLSFiles",
    "broker_settings",
    "find_mosquitto",
    "fleet_acl",
    "free_port",
    "read_roster",
]

PEN_WRITES = ("status", "telemetry", "events", "sessions", "reply", "records/#")
MESSAGE_SIZE_LIMIT = 256 * 1024  # bytes of payload: fleet payloads are < 4 KB; 50 MB is refused
MAX_PACKET_BYTES = MESSAGE_SIZE_LIMIT + 4096  # a whole packet; above it the client is dropped
# every listener: the client id is replaced by the username, so no client can connect under
# another user's client id and kick that client (the bridge) off
LISTENER_SETTINGS = ("use_username_as_clientid true",)


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


def read_roster(path: Path, *, multi_site: bool = False) -> list[tuple[str, str]]:
    """(site, serial) pairs of a roster file: one pen a line, ``site,serial`` (or separated by
    blanks); blank lines, ``#`` comments and a ``site,serial`` header are skipped. A pen is
    listed once, at the site it works at (``multi_site``: a pen shared between sites, a loaner,
    may be listed at each). Errors name the line and the fix."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BrokerConfigError(f"cannot read the pen roster {str(path)!r}: {exc}") from None
    pens: list[tuple[str, str]] = []
    first_line: dict[str, tuple[int, str]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].replace(",", " ").split()
        if not fields or [f.lower() for f in fields] == ["site", "serial"]:
            continue
        if len(fields) != 2:
            raise BrokerConfigError(
                f"{path}:{number}: {line.strip()!r} is not 'site,serial'; write one pen a line"
            )
        try:
            site, serial = check_level("site", fields[0]), check_level("pen serial", fields[1])
        except BrokerConfigError as exc:
            raise BrokerConfigError(f"{path}:{number}: {exc}") from None
        seen = first_line.setdefault(serial, (number, site))
        if seen[1] != site and not multi_site:
            raise BrokerConfigError(
                f"{path}:{number}: pen {serial} is listed at site {site} and at {seen[1]} (line "
                f"{seen[0]}): the ACL would let it publish at both; a pen that moved gets its "
                "line edited (or say --multi-site for a pen shared between sites)"
            )
        pens.append((site, serial))
    if not pens:
        raise BrokerConfigError(
            f"the pen roster {str(path)!r} lists no pen; write one 'site,serial' line per pen"
        )
    return pens


def fleet_acl(
    *,
    pens: Iterable[tuple[str, str]] = (),
    admins: Iterable[str] = (),
    operators: Iterable[str] = (),
    watchers: Iterable[str] = (),
) -> str:
    """The mosquitto ACL file of a fleet: one block per pen (site, serial) of the roster, which
    binds the pen's user to its site, plus the named roles. No ``pattern`` lines: a pattern
    applies to every user, and ``%u`` cannot say which site a pen belongs to. A role user named
    like a pen, or one name in two roles, is refused: mosquitto would merge the blocks, and the
    pen's credentials would gain the role's rights."""
    roles = [(_user(u), role) for role, users in (("admin", admins), ("operator", operators),
             ("watcher", watchers)) for u in users]  # fmt: skip
    admins, operators, watchers = ([u for u, r in roles if r == role]
                                   for role in ("admin", "operator", "watcher"))  # fmt: skip
    by_serial: dict[str, list[str]] = {}
    for site, serial in pens:
        sites = by_serial.setdefault(check_level("pen serial", serial), [])
        if check_level("site", site) not in sites:
            sites.append(site)
    named: dict[str, str] = dict.fromkeys(by_serial, "pen")
    for user, role in roles:
        if user in named:
            raise BrokerConfigError(
                f"broker user {user!r} is named as {named[user]} and as {role}: each user gets "
                "one block of rights; give each role and pen its own username"
            )
        named[user] = role
    lines = [
        "# micropen fleet ACL (generated: micropen fleet acl ROSTER). A pen's bridge logs in",
        "# with the pen's serial as username and may write only its own topics at its own site;",
        "# an operator writes commands only under cmd/<its username>: the bridge logs that",
        "# topic level as the authenticated sender.",
    ]
    for serial, sites in by_serial.items():
        lines += ["", f"user {serial}"]
        for site in sites:
            base = f"{TOPIC_ROOT}/{site}/{serial}"
            lines += [f"topic write {base}/{channel}" for channel in PEN_WRITES]
            lines.append(f"topic read {base}/cmd/+")
    for user in watchers:
        lines += ["", f"user {_user(user)}", f"topic read {TOPIC_ROOT}/#"]
    for user in operators:
        lines += [
            "", f"user {_user(user)}", f"topic read {TOPIC_ROOT}/#",
            f"topic write {TOPIC_ROOT}/+/+/cmd/{user}",
        ]  # fmt: skip
    for user in admins:
        lines += ["", f"user {_user(user)}", "topic readwrite #"]
    return "\n".join(lines) + "\n"


def _user(name: str) -> str:
    """A role's username: one topic level (it ends an operator's command topic)."""
    return check_level("broker user", name)


def broker_settings() -> list[str]:
    """The broker-wide lines of the recommended mosquitto config (the listeners apart, each
    with :data:`LISTENER_SETTINGS`)."""
    return [
        "allow_anonymous false",
        "per_listener_settings false",
        f"message_size_limit {MESSAGE_SIZE_LIMIT}",
        f"max_packet_size {MAX_PACKET_BYTES}",
    ]


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
        username_as_clientid: bool | None = None,
        message_size_limit: int = MESSAGE_SIZE_LIMIT,
        max_packet_size: int = MAX_PACKET_BYTES,
    ) -> None:
        """``username_as_clientid`` defaults to on unless anonymous clients are allowed (an
        anonymous client has no username to use: mosquitto would refuse it)."""
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
        self.username_as_clientid = (
            not allow_anonymous if username_as_clientid is None else username_as_clientid
        )
        self.sizes = (message_size_limit, max_packet_size)
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
            f"message_size_limit {self.sizes[0]}",
            f"max_packet_size {self.sizes[1]}",
        ]
        if self.users:
            passwd = self.workdir / "passwd"
            self._make_passwd(passwd)
            lines.append(f"password_file {passwd}")
        if acl is not None:
            acl_path = self.workdir / "acl"
            acl_path.write_text(acl, encoding="utf-8")
            lines.append(f"acl_file {acl_path}")
        per_listener = list(LISTENER_SETTINGS) if self.username_as_clientid else []
        lines += ["", f"listener {self.port} 127.0.0.1", *per_listener]
        for files, port in zip(self.tls, self.tls_ports, strict=True):
            lines += [
                "", f"listener {port} 127.0.0.1", *per_listener, f"cafile {files.cafile}",
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
