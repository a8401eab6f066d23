"""This host's pairings with pens: the keystore, and the pairing exchange itself.

Why here: every front end (CLI, scripts, the station) connects through ``AsyncPen``, which
offers authentication with this host's id and finds the key for whichever pen answers; the
keystore is this user's, in the per-user data folder (``$MICROPEN_HOME`` overrides).

The keystore is one JSON file, ``pairings.json``, mode 0600 in a folder only its owner can
enter; one that group or others can read is refused with the ``chmod`` that fixes it (as ssh
does). It holds this host's id and, per pen, the pairing key with the pen's serial and model.
Writes are atomic (a temporary file, then a rename) under an exclusive lock. Keys never appear
in messages, logs or JSON output.

Pairings made with the built-in simulator (``sim://``) are *ephemeral*: the simulated pen is
this process's own, so the host pairs with it locally each time and writes nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import socket
import stat
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from micropen.protocol import linkauth
from micropen.protocol.messages import (
    Ack,
    ErrorCode,
    GetPairing,
    PairConfirm,
    Pairing,
    PairOffer,
    PairRequest,
)
from micropen.protocol.schema import Message

from . import paths
from .errors import HostError, InvalidInput, PenRefused
from .files import write_atomically

if TYPE_CHECKING:
    from .connection import AsyncPen

__all__ = [
    "FILE_NAME",
    "HostKeys",
    "KeystoreError",
    "NotAcceptedYet",
    "PairedPen",
    "PairingAttempt",
    "PairingRefused",
    "data_folder",
    "pair",
    "pen_pairings",
]

FILE_NAME = "pairings.json"
MAX_FILE = 256 * 1024
_U32 = 0xFFFF_FFFF


class KeystoreError(HostError):
    """The keystore cannot be used; the message names the file and the fix."""


class PairingRefused(HostError):
    """The pairing did not happen (codes differed, the pen was not in pairing mode, ...)."""


def data_folder(env: dict[str, str] | None = None) -> Path:
    """$MICROPEN_HOME, else the per-user data folder (host/paths.py; not created)."""
    return paths.data_dir(env)


@dataclass(frozen=True, slots=True)
class PairedPen:
    """One pen this host is paired with (what may be shown: no key)."""

    pen_id: int
    serial: str
    model: str
    paired_at: str
    holder_pid: int = 0  # a simulator without non-volatile state: gone when its process is


class HostKeys:
    """This host's id and pairing keys (see the module docstring)."""

    def __init__(self, path: Path | None = None, *, create: bool = True) -> None:
        self.path = path if path is not None else data_folder() / FILE_NAME
        self._create = create
        self.host_id = 0
        self._keys: dict[int, bytes] = {}
        self._pens: dict[int, PairedPen] = {}
        self._ephemeral: dict[int, bytes] = {}
        self._load()
        if not self.host_id:
            self.host_id = secrets.randbelow(_U32) + 1  # saved with the first pairing

    # ------------------------------------------------------------------ reading
    def lookup(self, pen_id: int) -> tuple[int, bytes] | None:
        """For the link: the key for ``pen_id`` (None: not paired)."""
        key = self._ephemeral.get(pen_id) or self._keys.get(pen_id)
        return None if key is None else (pen_id, key)

    @property
    def offers(self) -> bool:
        """Whether to offer authentication at all (this host holds some pairing)."""
        return bool(self._keys or self._ephemeral)

    def pens(self) -> list[PairedPen]:
        return sorted(self._pens.values(), key=lambda p: (p.serial, p.pen_id))

    def find(self, which: str) -> PairedPen | None:
        """A pen by serial (case-insensitive) or pen id (8 hex digits)."""
        for pen in self._pens.values():
            if pen.serial.lower() == which.lower() or f"{pen.pen_id:08x}" == which.lower():
                return pen
        return None

    # ------------------------------------------------------------------ changing
    def add(
        self, pen_id: int, key: bytes, serial: str, model: str, *, holder_pid: int = 0
    ) -> PairedPen:
        """Keep a pairing (replacing one with the same pen) and save. ``holder_pid``: the
        process simulating a pen that forgets everything when it exits; the pairing is
        dropped once that process is gone, so served simulators do not pile up here."""
        with self._locked():
            self._load()
            self._keys[pen_id] = key
            when = datetime.now(UTC).isoformat(timespec="seconds")
            self._pens[pen_id] = PairedPen(pen_id, serial, model, when, holder_pid)
            self._save()
        return self._pens[pen_id]

    def settle_host_id(self) -> int:
        """This host's id as the keystore file keeps it (written now if the file is new), so
        that a pairing made under it is never filed under another (two processes creating the
        keystore at once agree on the first one's)."""
        with self._locked():
            self._load()
            if not self.path.exists():
                self._save()
        return self.host_id

    def add_ephemeral(self, pen_id: int, key: bytes) -> None:
        """A pairing for this process only (the in-process simulator)."""
        self._ephemeral[pen_id] = key

    def remove(self, pen_id: int) -> bool:
        with self._locked():
            self._load()
            found = self._keys.pop(pen_id, None) is not None
            self._pens.pop(pen_id, None)
            if found:
                self._save()
        return found

    # ------------------------------------------------------------------ the file
    def _load(self) -> None:
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise KeystoreError(f"cannot read the pairing keystore {self.path}: {exc}") from None
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeystoreError(
                f"the pairing keystore {self.path} can be read by others (mode "
                f"{stat.S_IMODE(info.st_mode):o}); run: chmod 600 {self.path}"
            )
        if info.st_size > MAX_FILE:
            raise KeystoreError(f"{self.path} is {info.st_size} bytes: not a pairing keystore")
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
            self._parse(document)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise KeystoreError(
                f"the pairing keystore {self.path} is damaged ({exc}); move it aside and pair "
                "the pens again (micropen pair --pen URL)"
            ) from None

    def _parse(self, document: dict[str, Any]) -> None:
        if document.get("format") != "micropen-pairings" or document.get("version") != 1:
            raise ValueError("not a micropen-pairings version 1 file")
        host_id = document["host_id"]
        if not isinstance(host_id, int) or not 1 <= host_id <= _U32:
            raise ValueError(f"host_id {host_id!r}")
        keys, pens = {}, {}
        for entry in document["pens"]:
            pen_id, key = int(entry["pen_id"]), bytes.fromhex(entry["key"])
            holder = int(entry.get("holder_pid", 0))
            if len(key) != linkauth.KEY_BYTES or not 1 <= pen_id <= _U32:
                raise ValueError("a pairing entry is malformed")
            if holder and not _alive(holder):
                continue  # that simulated pen is gone, and its pairing with it
            keys[pen_id] = key
            pens[pen_id] = PairedPen(
                pen_id, str(entry["serial"]), str(entry["model"]), str(entry["paired_at"]), holder
            )
        self.host_id, self._keys, self._pens = host_id, keys, pens

    def _save(self) -> None:
        document = {
            "format": "micropen-pairings",
            "version": 1,
            "host_id": self.host_id,
            "pens": [
                {"pen_id": p.pen_id, "serial": p.serial, "model": p.model,
                 "paired_at": p.paired_at, "holder_pid": p.holder_pid,
                 "key": self._keys[p.pen_id].hex()}
                for p in self.pens()
            ],
        }  # fmt: skip
        try:
            write_atomically(self.path, json.dumps(document, indent=1).encode("utf-8"), 0o600)
        except OSError as exc:
            raise KeystoreError(
                f"cannot write the pairing keystore {self.path}: {exc.strerror or exc}; "
                "free some space or use a writable folder (MICROPEN_HOME)"
            ) from None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        folder = self.path.parent
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(folder / f".{self.path.name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise KeystoreError(
                f"cannot write the pairing keystore in {folder}: {exc.strerror or exc}; "
                "use a writable folder (MICROPEN_HOME)"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


# ---------------------------------------------------------------------- the exchange
class PairingAttempt:
    """Pairing this host with a pen in pairing mode, in two steps so that the question to the
    technician is asked by the caller (a terminal prompt, a browser), not inside the loop.

    :meth:`start` sends the request and returns the six-digit code; the technician compares
    it with the pen's screen and, when they match, presses the pen's button to accept;
    :meth:`finish` then stores the pairing on both sides (:class:`NotAcceptedYet` while the
    pen has not accepted: ask again)."""

    def __init__(self, pen: AsyncPen, keys: HostKeys, name: str = "") -> None:
        self.pen, self.keys = pen, keys
        self.name = (name or socket.gethostname())[:16].encode("ascii", "replace").decode()
        self._own = X25519PrivateKey.generate()
        self._key = b""
        self._pen_id = 0
        self.code = ""

    async def start(self) -> str:
        if self.pen.identity is None:
            raise HostError("not connected to a pen yet")
        host_id = self.keys.settle_host_id()
        public = linkauth.public_bytes(self._own)
        try:
            offer = await self.pen.expect(
                lambda i: PairRequest(i, host_id, public, self.name), PairOffer
            )
        except PenRefused as exc:
            raise PairingRefused(_request_refused(exc)) from None
        self._key = linkauth.pairing_secret(self._own, offer.pen_public, public, offer.pen_public)
        self._pen_id = offer.pen_id
        self.code = linkauth.confirmation_code(self._key, public, offer.pen_public)
        return self.code

    async def finish(self) -> PairedPen:
        host_id = self.keys.host_id
        proof = linkauth.pair_proof(self._key, host_id)
        try:
            await self.pen.expect(lambda i: PairConfirm(i, host_id, proof), Ack)
        except PenRefused as exc:
            if exc.code is ErrorCode.PAIRING_NOT_ACCEPTED:
                raise NotAcceptedYet(
                    "the pen has not accepted yet: press its pairing button"
                ) from None
            raise PairingRefused(
                f"the pen refused the pairing ({exc.code.name}): press its pairing button and "
                "start again"
            ) from None
        identity = self.pen.identity
        assert identity is not None
        return self.keys.add(self._pen_id, self._key, identity.serial, identity.model)


class NotAcceptedYet(HostError):
    """PairConfirm came before the technician pressed the pen's button to accept the code."""


def _request_refused(exc: PenRefused) -> str:
    if exc.code is ErrorCode.PAIRING_CLOSED:
        return "the pen is not in pairing mode: press its pairing button, then run this again"
    if exc.code is ErrorCode.PAIRING_BUSY and exc.value:
        return (
            "another host asked the pen to pair in this window: if that was not you, someone "
            "else is on the line; press the pen's button to close it and start again"
        )
    if exc.code is ErrorCode.PAIRING_BUSY:
        return (
            "the pen is paired with this host already; to pair again, revoke it first "
            "(micropen pair revoke SERIAL --pen URL)"
        )
    return f"the pen refused to pair ({exc.code.name})"


Confirm = Callable[[str], Awaitable[bool]]


async def pair(pen: AsyncPen, keys: HostKeys, confirm: Confirm, name: str = "") -> PairedPen:
    """Both steps at once, for scripts and tests: ``confirm(code)`` returns True when the
    technician saw the same code on the pen and pressed its button to accept."""
    attempt = PairingAttempt(pen, keys, name)
    code = await attempt.start()
    if not await confirm(code):
        raise PairingRefused(
            "the codes did not match, so nothing was paired: someone may be between this "
            "host and the pen; check the cable, press the pen's pairing button and try again"
        )
    return await attempt.finish()


async def pen_pairings(pen: AsyncPen) -> list[Pairing]:
    """The hosts the pen is paired with (needs an authenticated link)."""
    first = await pen.expect(lambda i: GetPairing(i, 0), Pairing)
    found = [first] if first.total else []
    for index in range(1, first.total):
        found.append(await pen.expect(_pairing_query(index), Pairing))
    return found


def _pairing_query(index: int) -> Callable[[int], Message]:
    return lambda cmd_id: GetPairing(cmd_id, index)


def check_name(name: str) -> str:
    if len(name) > 16 or not (name.isascii() and name.isprintable()):
        raise InvalidInput(f"--name {name!r}: 1–16 printable ASCII characters")
    return name
