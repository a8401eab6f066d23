"""Who may do what at the station: users, roles, sessions and CSRF tokens.

Bound to a loopback address the station needs no login: whoever can reach it is at the bench
PC (the one local user holds every role). Bound anywhere else, every request needs a login:
per-user passwords hashed with Argon2id (``argon2-cffi``), a session in a signed cookie
(Starlette's ``SessionMiddleware``, itsdangerous), and on every state-changing request the
session's CSRF token in the ``X-CSRF-Token`` header — local mode included, since any web page
the technician opens could post to 127.0.0.1.

Roles: ``technician`` connects pens and runs calibrations, ``reviewer`` reviews and signs
certificates, ``viewer`` only looks. Everyone may press stop: stopping a pen is always safe.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from micropen.host import paths
from micropen.host.errors import InvalidInput
from micropen.protocol.errors import MicropenError

__all__ = [
    "LOCAL_USER",
    "ROLES",
    "LoginThrottle",
    "User",
    "UserStore",
    "UserStoreError",
    "csrf_token",
    "is_loopback",
    "load_secret",
]

ROLES = ("technician", "reviewer", "viewer")
PERMISSIONS = {
    "viewer": {"view", "stop"},
    "technician": {"view", "stop", "operate"},
    "reviewer": {"view", "stop", "sign"},
    "local": {"view", "stop", "operate", "sign"},
}
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
PASSWORD_MIN = 8
_hasher = PasswordHasher()  # Argon2id with the library's current recommended parameters


class UserStoreError(MicropenError):
    """The station's user file cannot be read or written."""


@dataclass(frozen=True)
class User:
    name: str
    role: str

    def may(self, permission: str) -> bool:
        return permission in PERMISSIONS.get(self.role, set())


LOCAL_USER = User("local", "local")


def users_path() -> Path:
    return paths.config_dir() / "station-users.json"


class UserStore:
    """Users in one JSON file (0600) in the config folder: name → role and Argon2 hash."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or users_path()

    def _load(self) -> dict[str, dict[str, str]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise UserStoreError(
                f"station user file {self.path} cannot be read ({exc}); restore it or remove it "
                "and add the users again (micropen station user add)"
            ) from None
        users = data.get("users", {}) if isinstance(data, dict) else {}
        return {str(k): dict(v) for k, v in users.items()}

    def _save(self, users: dict[str, dict[str, str]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({"users": users}, handle, indent=2, sort_keys=True)
            os.replace(tmp, self.path)
        except OSError as exc:
            raise UserStoreError(f"cannot write {self.path} ({exc.strerror or exc})") from None

    def role_of(self, name: str) -> str | None:
        """The user's role now (None: removed); re-read only when the file changed."""
        try:
            stamp = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return None
        if getattr(self, "_stamp", None) != stamp:
            self._roles = {n: e["role"] for n, e in self._load().items()}
            self._stamp = stamp
        return self._roles.get(name)

    def users(self) -> list[User]:
        return [User(name, entry["role"]) for name, entry in sorted(self._load().items())]

    def add(self, name: str, role: str, password: str, *, replace: bool = False) -> User:
        if not NAME.fullmatch(name):
            raise InvalidInput(
                f"user name {name!r} is not allowed; use 1–32 letters, digits, '.', '_' or '-'"
            )
        if role not in ROLES:
            raise InvalidInput(f"role {role!r} is not one of {', '.join(ROLES)}")
        if len(password) < PASSWORD_MIN:
            raise InvalidInput(
                f"the password has {len(password)} characters; at least {PASSWORD_MIN} are needed"
            )
        users = self._load()
        if name in users and not replace:
            raise InvalidInput(f"user {name!r} exists; give --replace to set a new password/role")
        users[name] = {"role": role, "hash": _hasher.hash(password)}
        self._save(users)
        return User(name, role)

    def remove(self, name: str) -> None:
        users = self._load()
        if users.pop(name, None) is None:
            raise InvalidInput(f"there is no user {name!r}; micropen station user list shows them")
        self._save(users)

    def authenticate(self, name: str, password: str) -> User | None:
        """The user when the password matches; None otherwise (same work either way)."""
        entry = self._load().get(name)
        stored = entry["hash"] if entry else _DUMMY_HASH
        try:
            _hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        return User(name, entry["role"]) if entry else None


_DUMMY_HASH = _hasher.hash("not a password of anyone")


def csrf_token(session: dict[str, Any]) -> str:
    """This session's CSRF token (made on first use)."""
    token = session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


def csrf_ok(session: dict[str, Any], sent: str | None) -> bool:
    token = session.get("csrf")
    return isinstance(token, str) and sent is not None and hmac.compare_digest(token, sent)


def load_secret(path: Path | None = None) -> str:
    """The key that signs session cookies: made once (0600), kept in the config folder."""
    path = path or paths.config_dir() / "station-secret.key"
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(secret + "\n")
    return secret


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- login throttling ------------------------------------------------------------------------
FREE_FAILURES = 5  # wrong passwords allowed per client address and per user name
FIRST_DELAY_S = 1.0  # then a wait that doubles with each further failure …
MAX_DELAY_S = 300.0  # … up to five minutes
THROTTLE_KEYS_MAX = 10_000  # remembered addresses and names (the oldest are forgotten)


@dataclass
class _Failures:
    count: int
    last: float


class LoginThrottle:
    """Failed logins counted per client address and per user name (known or not): after
    :data:`FREE_FAILURES`, each needs an exponentially growing wait (answered 429 with
    Retry-After) — a password guesser gets a few tries a minute, not thousands. A successful
    login clears its address and name."""

    def __init__(self, clock: Any = None) -> None:
        import time

        self._clock = clock or time.monotonic
        self._failures: dict[tuple[str, str], _Failures] = {}

    def _delay(self, failures: _Failures) -> float:
        extra = failures.count - FREE_FAILURES
        if extra < 0:
            return 0.0
        return float(min(MAX_DELAY_S, FIRST_DELAY_S * 2.0**extra))

    def retry_after(self, address: str, name: str) -> float:
        """Seconds until a login from ``address`` as ``name`` may be tried (0: now)."""
        now = self._clock()
        wait = 0.0
        for key in (("address", address), ("user", name)):
            failures = self._failures.get(key)
            if failures is not None:
                wait = max(wait, failures.last + self._delay(failures) - now)
        return wait

    def failed(self, address: str, name: str) -> None:
        now = self._clock()
        for key in (("address", address), ("user", name)):
            failures = self._failures.pop(key, None) or _Failures(0, now)
            failures.count, failures.last = failures.count + 1, now
            self._failures[key] = failures  # re-inserted: the dict's order is by last failure
        while len(self._failures) > THROTTLE_KEYS_MAX:
            del self._failures[next(iter(self._failures))]

    def succeeded(self, address: str, name: str) -> None:
        self._failures.pop(("address", address), None)
        self._failures.pop(("user", name), None)
