"""``micropen firmware keygen | sign | verify | info``: signed firmware images.

Signing happens offline, on the manufacturer's build machine, with a key that never leaves
it; benches and pens only ever hold the public half. The image format is
``micropen.protocol.image`` (docs/firmware.md).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from micropen.host import signing_keys
from micropen.host.errors import InvalidInput
from micropen.protocol import image

from .common import JsonOption, emit_json, errors_to_exit, fail

app = typer.Typer(
    help="Signed firmware images: make a signing key, sign, verify, inspect.",
    no_args_is_help=True,
)
console = Console(highlight=False, soft_wrap=True)
MAX_FILE = image.MAX_PAYLOAD + 4096


@app.command()
def keygen(
    out: Annotated[Path, typer.Argument(help="Private key file to create (mode 0600).")],
    as_json: JsonOption = False,
) -> None:
    """Make an Ed25519 signing key: OUT (private, 0600) and OUT.pub (give this one out)."""
    with errors_to_exit():
        public_path, public_key = signing_keys.generate(out)
    result = {"private_key": str(out), "public_key": str(public_path),
              "key_id": signing_keys.key_id(public_key)}  # fmt: skip
    if as_json:
        emit_json(result)
        return
    console.print(f"private key  {out}  (keep it offline; mode 0600)")
    console.print(f"public key   {public_path}")
    console.print(f"key id       {result['key_id']}")


@app.command()
def sign(
    payload: Annotated[Path, typer.Argument(help="The firmware binary to sign.")],
    key: Annotated[Path, typer.Option("--key", help="Private signing key (from keygen).")],
    version: Annotated[str, typer.Option("--version", help="Image version, MAJOR.MINOR.PATCH.")],
    security_counter: Annotated[
        int,
        typer.Option(
            "--security-counter",
            help="Anti-rollback counter: a pen refuses images below the highest it has run.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Signed image file to write.")],
    build_number: Annotated[int, typer.Option("--build", help="Build number (0: none).")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Overwrite OUT if it exists.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Sign PAYLOAD into a firmware image."""
    with errors_to_exit():
        _check_out(out, force, keep=(key, signing_keys.public_path_for(key), payload))
        private = signing_keys.load_private(key)
        data = image.build(
            _read(payload, image.MAX_PAYLOAD), version=_version(version),
            security_counter=security_counter, key=private, build_number=build_number,
        )  # fmt: skip
        _write(out, data)
        result = _describe(image.parse(data), out)
    if as_json:
        emit_json(result)
        return
    console.print(f"signed {result['version']} (security counter {security_counter}) → {out}")
    console.print(f"{result['size_bytes']} bytes, sha256 {result['sha256']}")


@app.command()
def verify(
    file: Annotated[Path, typer.Argument(help="Firmware image to check.")],
    key: Annotated[
        list[Path],
        typer.Option("--key", help="Trusted public key (repeat for several)."),
    ],
    as_json: JsonOption = False,
) -> None:
    """Check an image's structure, hash and signature against trusted keys (exit 1 if not)."""
    with errors_to_exit():
        trusted = [signing_keys.load_public(k) for k in key]
        data = _read(file, MAX_FILE)
    try:
        found = image.verify(data, trusted)
    except image.ImageError as exc:
        if as_json:
            emit_json({"file": str(file), "valid": False, "fault": exc.fault.name.lower(),
                       "reason": str(exc)})  # fmt: skip
            raise typer.Exit(1) from None
        fail(f"{file}: refused ({exc.fault.name.lower()}): {exc}")
    result = {**_describe(found, file), "valid": True}
    if as_json:
        emit_json(result)
        return
    console.print(f"{file}: valid, version {result['version']}, signed by key {result['key_id']}")


@app.command()
def info(
    file: Annotated[Path, typer.Argument(help="Firmware image to describe.")],
    as_json: JsonOption = False,
) -> None:
    """What an image says about itself (structure and hash checked; not the signature)."""
    with errors_to_exit():
        data = _read(file, MAX_FILE)
    try:
        found = image.parse(data)
    except image.ImageError as exc:
        fail(f"{file}: not a valid image ({exc.fault.name.lower()}): {exc}")
    result = _describe(found, file)
    if as_json:
        emit_json(result)
        return
    for label, value in (
        ("version", result["version"]),
        ("security counter", result["security_counter"]),
        ("payload", f"{result['payload_bytes']} bytes"),
        ("image", f"{result['size_bytes']} bytes"),
        ("load address", f"0x{result['load_address']:08x}"),
        ("sha256", result["sha256"]),
        ("signed by key", result["key_id"] or "(unsigned)"),
    ):
        console.print(f"{label:<17}{value}")


def _describe(found: image.FirmwareImage, path: Path) -> dict[str, Any]:
    return {
        "file": str(path),
        "version": found.version_text,
        "security_counter": found.security_counter,
        "payload_bytes": len(found.payload),
        "size_bytes": found.size,
        "load_address": found.load_address,
        "sha256": found.digest.hex(),
        "signed": found.signed,
        "key_id": found.key_hash.hex()[:16] if found.key_hash else None,
    }


_VERSION = re.compile(r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)", re.ASCII)


def _version(text: str) -> tuple[int, int, int]:
    match = _VERSION.fullmatch(text)
    if match is None:
        raise InvalidInput(
            f"version {text!r} is not MAJOR.MINOR.PATCH in plain digits without leading zeros "
            "(e.g. 1.4.0)"
        )
    major, minor, patch = (int(group) for group in match.groups())
    return major, minor, patch


def _check_out(out: Path, force: bool, keep: tuple[Path, ...]) -> None:
    """OUT is a new regular file, or (with --force) an existing regular file that is not the
    key, its public half or the payload. Never a symlink, a device, a pipe or a folder."""
    if os.path.lexists(out):
        if out.is_symlink() or not out.is_file():
            raise InvalidInput(f"{out} is not a regular file; give a new file name for --out")
        if any(os.path.lexists(k) and out.samefile(k) for k in keep):
            raise InvalidInput(f"--out {out} is the key or the payload; give a new file name")
        if not force:
            raise InvalidInput(f"{out} exists; pass --force to overwrite it")
    if not out.parent.is_dir():
        raise InvalidInput(f"folder {out.parent} does not exist; create it first")


def _read(path: Path, limit: int) -> bytes:
    try:
        if not path.is_file():
            raise InvalidInput(f"{path} is not a file")
        if path.stat().st_size > limit:
            raise InvalidInput(f"{path} is {path.stat().st_size} bytes; the limit is {limit}")
        return path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror or exc}") from None


def _write(path: Path, data: bytes) -> None:
    """Whole or not at all: a fresh temporary file of our own (O_EXCL, never a name someone
    could have planted a symlink on), flushed, then renamed over OUT."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise InvalidInput(f"cannot write {path}: {exc.strerror or exc}") from None
