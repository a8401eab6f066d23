"""How to reach the broker: URL, credentials, TLS — and the aiomqtt client built from them.

``mqtt://HOST[:PORT]`` is plain TCP (port 1883); ``mqtts://HOST[:PORT]`` is TLS (port 8883)
with the server certificate and host name always verified, against ``cafile`` when given, else
the system's trust store. There is no switch to turn verification off: a test broker gets a
test CA. A password never travels in the URL or the command line (both end up in logs and
``ps``); it is read from a file. Only MQTT 3.1.1 features that EMQX, HiveMQ, mosquitto and
cloud brokers all share are used (retained messages, last will, QoS 0/1, clean sessions);
MQTT 5 can be chosen but nothing depends on it.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomqtt

from .errors import BrokerConfigError

__all__ = ["BrokerConfig", "parse_broker_url", "read_password_file"]

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """Everything needed to connect; build with :func:`parse_broker_url`."""

    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None
    cafile: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    keepalive: int = 15  # s; the broker publishes the will ~1.5× this after a silent loss
    timeout: float = 10.0  # s for each connect/subscribe/publish round trip
    protocol: int = 4  # 4 = MQTT 3.1.1, 5 = MQTT 5

    @property
    def url(self) -> str:
        """The URL without credentials (safe to log)."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    def for_pen(self, serial: str) -> BrokerConfig:
        """A pen's bridge logs in as its serial unless a username was given (the broker's ACL
        lets user S publish only under micropen/v1/+/S/#)."""
        if self.username is None and self.password is not None:
            return replace(self, username=serial)
        return self

    def ssl_context(self) -> ssl.SSLContext | None:
        """A verifying TLS context (CERT_REQUIRED, host name checked), or None for mqtt://."""
        if not self.tls:
            return None
        try:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.cafile)
            if self.client_cert:
                context.load_cert_chain(self.client_cert, self.client_key)
        except (OSError, ssl.SSLError) as exc:
            raise BrokerConfigError(
                f"cannot load TLS files (cafile {self.cafile!r}, client cert "
                f"{self.client_cert!r}): {exc}; give PEM files that exist and match"
            ) from exc
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    def client(
        self,
        identifier: str,
        *,
        will: aiomqtt.Will | None = None,
        clean_session: bool = True,
        **options: Any,
    ) -> aiomqtt.Client:
        """A fresh aiomqtt client (not connected: ``async with client:`` connects)."""
        protocol = (
            aiomqtt.ProtocolVersion.V5 if self.protocol == 5 else aiomqtt.ProtocolVersion.V311
        )
        if protocol is aiomqtt.ProtocolVersion.V5:
            clean = {"clean_start": clean_session}
        else:
            clean = {"clean_session": clean_session}
        return aiomqtt.Client(
            self.host,
            self.port,
            username=self.username,
            password=self.password,
            identifier=identifier,
            protocol=protocol,
            will=will,
            keepalive=self.keepalive,
            timeout=self.timeout,
            tls_context=self.ssl_context(),
            **clean,  # type: ignore[arg-type]
            **options,
        )


def parse_broker_url(
    url: str,
    *,
    username: str | None = None,
    password_file: str | Path | None = None,
    cafile: str | Path | None = None,
    client_cert: str | Path | None = None,
    client_key: str | Path | None = None,
    protocol: int = 4,
) -> BrokerConfig:
    """Check a broker URL and the credential files; errors name the value and the fix."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. "mqtt://[::1": an unclosed IPv6 bracket
        raise BrokerConfigError(f"broker URL {url!r}: {exc}; use mqtt://HOST:PORT") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise BrokerConfigError(
            f"broker URL {url!r} has scheme {parts.scheme!r}; use mqtt://HOST:PORT or "
            "mqtts://HOST:PORT (TLS)"
        )
    if parts.password is not None:
        raise BrokerConfigError(
            "do not put the broker password in the URL (it ends up in logs and `ps`); "
            "write it to a file readable only by you and pass --password-file FILE"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise BrokerConfigError(f"broker URL {url!r} has a path or query; use SCHEME://HOST:PORT")
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError:
        raise BrokerConfigError(f"broker URL {url!r} has a bad port; use 1–65535") from None
    if not parts.hostname:
        raise BrokerConfigError(f"broker URL {url!r} has no host; e.g. mqtt://localhost:1883")
    tls = scheme == "mqtts"
    if not tls and (cafile or client_cert):
        raise BrokerConfigError(
            f"--cafile/--client-cert need TLS, but {url!r} is plain mqtt://; use mqtts://"
        )
    if client_key and not client_cert:
        raise BrokerConfigError("--client-key needs --client-cert")
    if protocol not in (4, 5):
        raise BrokerConfigError(f"MQTT protocol {protocol} is not 4 (3.1.1) or 5")
    user = username if username is not None else (unquote(parts.username or "") or None)
    password = read_password_file(password_file) if password_file else None
    for what, path in (("cafile", cafile), ("client cert", client_cert), ("key", client_key)):
        if path is not None and not Path(path).is_file():
            raise BrokerConfigError(f"{what} {str(path)!r} does not exist; give a PEM file")
    return BrokerConfig(
        host=parts.hostname,
        port=port,
        tls=tls,
        username=user,
        password=password,
        cafile=str(cafile) if cafile else None,
        client_cert=str(client_cert) if client_cert else None,
        client_key=str(client_key) if client_key else None,
        protocol=protocol,
    )


def read_password_file(path: str | Path) -> str:
    """The first line of the file, without its line ending."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BrokerConfigError(f"cannot read password file {str(path)!r}: {exc}") from exc
    password = text.splitlines()[0] if text else ""
    if not password:
        raise BrokerConfigError(f"password file {str(path)!r} is empty; write the password")
    return password
