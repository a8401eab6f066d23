"""Firmware signing keys on disk: Ed25519, PEM, private keys readable by their owner only.

Why its own module: the CLI (``micropen firmware keygen|sign|verify``) and the update path
both need keys, and a key file is where an attacker or a careless ``chmod`` hurts most. A
private key is created with mode 0600 and never overwritten; one that group or others can
read is refused (as ssh does) with the command that fixes it. Key material never appears in
messages or JSON; keys are named by the first bytes of their SHA-256 (``key_id``).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)

from micropen.protocol.image import key_hash

from .errors import HostError, InvalidInput

__all__ = ["generate", "key_id", "load_private", "load_public", "public_path_for"]

KEY_FILE_MAX = 64 * 1024


def key_id(public_key: Ed25519PublicKey) -> str:
    """How a key is named to people: 16 hex digits of the SHA-256 of its raw bytes."""
    return key_hash(public_key).hex()[:16]


def public_path_for(private_path: Path) -> Path:
    return private_path.with_name(private_path.name + ".pub")


def generate(private_path: Path) -> tuple[Path, Ed25519PublicKey]:
    """A new key pair: ``private_path`` (0600) and ``private_path.pub``; refuses to overwrite
    anything, a dangling symlink included."""
    if not private_path.name or private_path.is_dir():
        raise InvalidInput(f"{str(private_path)!r} is not a file name for a key")
    public_path = public_path_for(private_path)
    for path in (private_path, public_path):
        if os.path.lexists(path):
            raise InvalidInput(f"{path} exists; a signing key is never overwritten")
    if not private_path.parent.is_dir():
        raise InvalidInput(f"folder {private_path.parent} does not exist; create it first")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    public_pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    try:
        for path, data, mode in ((private_path, pem, 0o600), (public_path, public_pem, 0o644)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
    except FileExistsError:
        raise InvalidInput(f"{private_path} exists; a signing key is never overwritten") from None
    except OSError as exc:
        raise HostError(f"cannot write the key to {private_path}: {exc.strerror or exc}") from exc
    return public_path, key.public_key()


def load_private(path: Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM file that only its owner can read."""
    data = _read(path)
    if b"PRIVATE KEY" not in data:
        raise InvalidInput(f"{path} is not a private key; signing needs the key keygen made")
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InvalidInput(
            f"private key {path} can be read by others (mode {stat.S_IMODE(mode):o}); "
            f"run: chmod 600 {path}"
        )
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise InvalidInput(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidInput(f"{path} is a {type(key).__name__}, not an Ed25519 key")
    return key


def load_public(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file (a private key file gives its public half)."""
    data = _read(path)
    if b"PRIVATE KEY" in data:
        return load_private(path).public_key()
    try:
        key = load_pem_public_key(data)
    except (ValueError, TypeError):
        raise InvalidInput(f"{path} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise InvalidInput(f"{path} is a {type(key).__name__}, not an Ed25519 key")
    return key


def _read(path: Path) -> bytes:
    try:
        if not path.is_file():
            raise InvalidInput(f"{path} is not a key file")
        with path.open("rb") as key_file:
            return key_file.read(KEY_FILE_MAX)  # a PEM key is a few hundred bytes
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror or exc}") from None
