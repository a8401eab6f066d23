"""``micropen protocol gen-c OUT/``: the C kit a pen firmware is built from.

Writes the generated codec (``mp_messages.h``/``.c``, from the protocol declarations) and copies
the hand-written portable core (``protocol/c/*.c``, ``*.h``) into OUT, flat. OUT is created when
missing; an existing OUT must be empty unless ``--force``, which overwrites the kit's files there
and leaves every other file alone (they are named in the output). Each file is written whole or
not at all. The same declarations always give the same bytes. See docs/c-kit.md.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Annotated

import typer

from micropen.host.errors import InvalidInput
from micropen.host.files import write_atomically
from micropen.protocol import cgen
from micropen.protocol.messages import PROTOCOL_VERSION
from micropen.protocol.schema import schema_hash

from .common import JsonOption, emit_json, err_console, errors_to_exit

app = typer.Typer(
    help="The wire protocol: generate the C kit (codec and portable core) for a firmware.",
    no_args_is_help=True,
)


def _check_out(out: Path, names: list[str], force: bool) -> list[str]:
    """Refuse an OUT that is not a folder, or a non-empty one without --force; return the
    names of the files there that are not the kit's (kept as they are)."""
    if not str(out).strip():
        raise InvalidInput("OUT is empty; give a folder for the C kit (created if missing)")
    for folder in (out, *out.parents):
        if folder.exists() and not folder.is_dir():
            raise InvalidInput(
                f"{folder} is a file, not a folder; give a folder for the C kit (created if "
                "missing)"
            )
    present = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if present and not force:
        raise InvalidInput(
            f"{out} is not empty ({len(present)} entries, e.g. {present[0]}); give an empty or "
            f"new folder, or --force to overwrite the kit's {len(names)} files there (other "
            "files are left alone)"
        )
    for name in names:
        if (out / name).is_dir():
            raise InvalidInput(f"{out / name} is a folder; the kit writes a file by that name")
    return [name for name in present if name not in names]


def _write_kit(out: Path, files: dict[str, tuple[str, bytes]]) -> list[dict[str, object]]:
    """Every file or none: a write that fails or is interrupted (Ctrl-C, a full disk) removes
    the files this run created, so a half kit is never left to be mistaken for a whole one."""
    created_folder = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    new = [name for name in files if not (out / name).exists()]
    written: list[dict[str, object]] = []
    try:
        for name, (origin, data) in files.items():
            try:
                write_atomically(out / name, data, 0o644)
            except OSError as exc:
                raise OSError(exc.errno, exc.strerror, str(out / name)) from None
            written.append(
                {"name": name, "origin": origin, "bytes": len(data),
                 "sha256": hashlib.sha256(data).hexdigest()}
            )  # fmt: skip
    except BaseException:
        for name in new:
            (out / name).unlink(missing_ok=True)
        if created_folder:
            with contextlib.suppress(OSError):
                out.rmdir()
        raise
    return written


@app.command("gen-c")
def gen_c(
    out: Annotated[Path, typer.Argument(help="Folder to write the kit into (flat).")],
    force: Annotated[
        bool, typer.Option("--force", help="Write into a non-empty OUT (overwrites kit files).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Write the C kit: mp_messages.h/.c generated from the protocol, and the portable core."""
    with errors_to_exit():
        files = cgen.kit_files()
        others = _check_out(out, list(files), force)
    written = _write_kit(out, files)
    core = [w["name"] for w in written if w["origin"] == "core"]
    result = {
        "out": str(out),
        "protocol_version": PROTOCOL_VERSION,
        "schema_hash": f"0x{schema_hash():08X}",
        "files": written,
        "other_files": others,
    }
    if as_json:
        emit_json(result)
        return
    typer.echo(
        f"wrote {len(written)} files to {out} (protocol v{PROTOCOL_VERSION}, schema "
        f"{result['schema_hash']}): {' '.join(str(w['name']) for w in written)}"
    )
    if not core:
        err_console.print(
            "[bold yellow]warning:[/] this micropen has no hand-written core (protocol/c is "
            "empty): mp_messages.c needs mp_crc32.h and mp_crc32.c from it",
            highlight=False,
            soft_wrap=True,
        )
    if others:
        typer.echo(f"left alone in {out}: {' '.join(others)}")
