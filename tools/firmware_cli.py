"""``micropen firmware keygen | sign | verify | info``: signed firmware images.

Signing happens offline, on the manufacturer's build machine, with a key that never leaves
it; benches and pens only ever hold the public half. The image format is
``micropen.protocol.image`` (docs/firmware.md).
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from micropen.host import signing_keys
from micropen.host.errors import InvalidInput
from micropen.host.files import write_atomically
from micropen.host.pen import Pen
from micropen.host.update import DEFAULT_WINDOW, FirmwareUpdate, SlotReport, read_slots
from micropen.protocol import image
from micropen.protocol.messages import FwPhase, Identity
from micropen.sim.devkey import dev_private_key

from .common import (
    JsonOption,
    PenOption,
    connected,
    emit_json,
    err_console,
    errors_to_exit,
    fail,
)

app = typer.Typer(
    help="Signed firmware images: make a signing key, sign, verify, inspect; update a pen.",
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
    version: Annotated[str, typer.Option("--version", help="Image version, MAJOR.MINOR.PATCH.")],
    security_counter: Annotated[
        int,
        typer.Option(
            "--security-counter",
            help="Anti-rollback counter: a pen refuses images below the highest it has run.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Signed image file to write.")],
    key: Annotated[
        Path | None, typer.Option("--key", help="Private signing key (from keygen).")
    ] = None,
    dev_key: Annotated[
        bool,
        typer.Option(
            "--dev-key",
            help="Sign with the simulator's published development key (only simulated pens "
            "accept it).",
        ),
    ] = False,
    build_number: Annotated[int, typer.Option("--build", help="Build number (0: none).")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Overwrite OUT if it exists.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Sign PAYLOAD into a firmware image."""
    with errors_to_exit():
        if (key is None) == (not dev_key):
            raise InvalidInput("give exactly one of --key FILE or --dev-key")
        keep = (payload,) if key is None else (key, signing_keys.public_path_for(key), payload)
        _check_out(out, force, keep=keep)
        private = dev_private_key() if key is None else signing_keys.load_private(key)
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
        list[Path] | None,
        typer.Option("--key", help="Trusted public key (repeat for several)."),
    ] = None,
    dev_key: Annotated[
        bool, typer.Option("--dev-key", help="Trust the simulator's development key too.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Check an image's structure, hash and signature against trusted keys (exit 1 if not)."""
    with errors_to_exit():
        if not key and not dev_key:
            raise InvalidInput("give the trusted public key: --key FILE.pub (or --dev-key)")
        trusted = [signing_keys.load_public(k) for k in key or []]
        trusted += [dev_private_key().public_key()] if dev_key else []
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
    """Whole or not at all (host/files.py)."""
    try:
        write_atomically(path, data, 0o644)
    except OSError as exc:
        raise InvalidInput(f"cannot write {path}: {exc.strerror or exc}") from None


# ---------------------------------------------------------------------- on a pen
@app.command()
def upload(
    file: Annotated[Path, typer.Argument(help="Signed firmware image to install.")],
    pen_url: PenOption = "auto",
    confirm: Annotated[
        bool,
        typer.Option(
            "--confirm/--no-confirm",
            help="After the test boot, keep the new image for good (default: leave it on trial"
            " and confirm with `micropen firmware confirm` after checking it).",
        ),
    ] = False,
    test_boot: Annotated[
        bool,
        typer.Option("--test-boot/--no-test-boot", help="Reboot into the image on trial."),
    ] = True,
    window: Annotated[
        int, typer.Option("--window", min=1, max=64, help="Chunks in flight (1 = lock-step).")
    ] = DEFAULT_WINDOW,
    as_json: JsonOption = False,
) -> None:
    """Upload FILE to the pen, have it verified, test-boot it (and with --confirm keep it).

    Resumable: after a cable pull it goes on by itself; run again after an abort and the pen
    resumes where it stands. Refused while the pen runs."""
    if confirm and not test_boot:
        fail("--confirm needs the test boot: drop --no-test-boot", 2)
    with errors_to_exit():
        data = _read(file, MAX_FILE)
        try:
            image.parse(data)
        except image.ImageError as exc:
            raise InvalidInput(
                f"{file}: not a valid image ({exc.fault.name.lower()}): {exc}"
            ) from None
    with connected(pen_url, quiet=as_json, purpose="firmware update") as pen:
        result = _upload(pen, data, window, test_boot, confirm, show=not as_json)
    if as_json:
        emit_json(result)
        return
    if result["sent_bytes"]:
        resumed = f", resumed at byte {result['resumed_from']:,}" if result["resumed_from"] else ""
        console.print(
            f"uploaded {result['sent_bytes']:,} of {result['size_bytes']:,} bytes in "
            f"{result['upload_s']:.1f} s ({result['kib_per_s']:,.0f} KiB/s{resumed}); "
            f"the pen verified version {result['version']}"
        )
    else:
        console.print(f"the pen already held version {result['version']}, verified")
    if result["test_booted"]:
        console.print(f"the pen now runs {result['running']} on trial")
    if result["confirmed"]:
        console.print(f"confirmed: security counter now {result['security_counter']}")
    elif result["test_booted"]:
        console.print(
            f"check it, then keep it with: micropen firmware confirm --pen {pen_url} "
            "(a reboot before that returns to the previous image)"
        )


def _upload(
    pen: Pen, data: bytes, window: int, test_boot: bool, confirm: bool, *, show: bool
) -> dict[str, Any]:
    screen = Console(stderr=True)
    progress = Progress(
        TextColumn("[bold]uploading"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
        TimeRemainingColumn(), console=screen, disable=not (show and screen.is_terminal),
    )  # fmt: skip
    task = progress.add_task("upload", total=len(data))
    lock = threading.Lock()

    def on_progress(sent: int, total: int) -> None:
        with lock:
            progress.update(task, completed=sent)

    update = FirmwareUpdate(pen.async_pen, data, window=window, progress=on_progress)
    reconnects_before = pen.counters.get("reconnects", 0)
    started = time.monotonic()
    with progress:
        pen.run_coroutine(update.upload())
    elapsed = time.monotonic() - started
    reconnects = pen.counters.get("reconnects", 0) - reconnects_before
    sent = update.sent_bytes
    result: dict[str, Any] = {
        "version": update.image.version_text, "size_bytes": len(data), "sent_bytes": sent,
        "resumed_from": update.started_at or 0, "upload_s": round(elapsed, 3),
        "kib_per_s": round(sent / 1024 / elapsed, 1) if sent else None,
        "resumes": update.resumes, "link_reconnects": reconnects, "busy_waits": update.busy_waits,
        "test_booted": False, "confirmed": False, "running": None, "security_counter": None,
    }  # fmt: skip
    if test_boot:
        pen.run_coroutine(update.test_boot())
        identity = pen.identity
        assert identity is not None
        result["test_booted"] = True
        result["running"] = _identity_version(identity)
    if confirm:
        pen.run_coroutine(update.confirm())
        result["confirmed"] = True
    _, primary = pen.run_coroutine(read_slots(pen.async_pen))
    result["security_counter"] = primary.counter_floor  # the pen's, confirmed or not
    return result


def _identity_version(identity: Identity) -> str:
    return f"{identity.firmware_major}.{identity.firmware_minor}.{identity.firmware_patch}"


@app.command(name="confirm")
def confirm_command(pen_url: PenOption = "auto", as_json: JsonOption = False) -> None:
    """Keep the image the pen runs on trial (its security counter rises to the image's)."""
    with connected(pen_url, quiet=as_json, purpose="firmware update") as pen:
        slots, _ = pen.run_coroutine(read_slots(pen.async_pen))
        was_trial = not slots[0].confirmed
        counter = pen.run_coroutine(FirmwareUpdate.confirm_running(pen.async_pen))
    result = {"version": slots[0].version, "was_on_trial": was_trial, "security_counter": counter}
    if as_json:
        emit_json(result)
        return
    if not was_trial:
        err_console.print(
            f"[yellow]warning:[/] nothing was on trial: the pen runs {slots[0].version}, "
            "confirmed already (if you had just updated it, a reboot reverted the update)",
            highlight=False,
        )
    what = "confirmed" if was_trial else "was already confirmed:"
    console.print(f"{slots[0].version} {what} security counter {counter}")


@app.command()
def status(pen_url: PenOption = "auto", as_json: JsonOption = False) -> None:
    """Both flash slots: versions, security counters, which runs, confirmed or on trial."""
    with connected(pen_url, quiet=as_json, purpose="firmware update") as pen:
        slots, primary = pen.run_coroutine(read_slots(pen.async_pen))
    result = {
        "slots": [asdict(slot) for slot in slots],
        "security_counter": primary.counter_floor,
        "upload": {"phase": primary.phase.name.lower(), "next_offset": primary.next_offset},
    }
    if as_json:
        emit_json(result)
        return
    table = Table("slot", "version", "counter", "size", "state", box=None)
    for slot in slots:
        table.add_row(slot.slot, slot.version or "(empty)", str(slot.security_counter) if
                      slot.present else "", f"{slot.size:,} B" if slot.present else "",
                      _slot_state(slot))  # fmt: skip
    console.print(table)
    console.print(f"pen security counter {primary.counter_floor} (images below it are refused)")
    if primary.phase is not FwPhase.NONE:
        console.print(f"upload: {primary.phase.name.lower()}, next offset {primary.next_offset:,}")


def _slot_state(slot: SlotReport) -> str:
    if not slot.present:
        return "empty"
    words = ["running" if slot.active else "standby"]
    if slot.active:
        words.append("confirmed" if slot.confirmed else "on trial (reverts at next reboot)")
    if slot.pending:
        words.append("test-boots at next reboot")
    if not slot.valid:
        words.append("INVALID signature")
    return ", ".join(words)
