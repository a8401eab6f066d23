"""``micropen pair``: pair this host with a pen, list and revoke pairings on both sides.

Pairing is a local act: press the pen's pairing button (a simulator served by ``micropen sim
serve``: ``kill -USR1 PID``, or ``--pairing-button``), run ``micropen pair --pen URL``, and
answer yes only when the pen's screen shows the same six digits as this command.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from micropen.host.errors import InvalidInput
from micropen.host.pairing import (
    HostKeys,
    NotAcceptedYet,
    PairedPen,
    PairingAttempt,
    check_name,
    pen_pairings,
)
from micropen.host.pen import Pen
from micropen.protocol.messages import Unpair

from .common import JsonOption, PenOption, connected, emit_json, err_console, errors_to_exit, fail

app = typer.Typer(
    help="Pair this host with a pen; list and revoke pairings (here and on the pen).",
    invoke_without_command=True,
)
console = Console(highlight=False, soft_wrap=True)


@app.callback()
def pair_command(
    ctx: typer.Context,
    pen_url: PenOption = "auto",
    name: Annotated[
        str, typer.Option("--name", help="How the pen lists this host (≤ 16 characters).")
    ] = "",
    as_json: JsonOption = False,
) -> None:
    """Pair with the pen at --pen: press its pairing button first, then compare the six digits
    this command prints with the pen's screen and answer y only when they are the same (a
    script answers on stdin; the prompt goes to stderr)."""
    if ctx.invoked_subcommand is not None:
        return
    with errors_to_exit():
        check_name(name)
    with connected(pen_url, quiet=as_json, purpose="pairing") as pen:
        keys = pen.async_pen.keys or HostKeys()
        attempt = PairingAttempt(pen.async_pen, keys, name)
        code = pen.run_coroutine(attempt.start())
        paired = _confirm_in_terminal(pen, attempt, code)
    with connected(pen_url, quiet=True, purpose="pairing") as again:
        authenticated = again.async_pen.authenticated
    result = {**_pen_json(paired), "authenticated": authenticated}
    if as_json:
        emit_json(result)
        return
    console.print(f"paired with {paired.serial} ({paired.model}), pen id {paired.pen_id:08x}")
    console.print("the link is authenticated" if authenticated else "[red]NOT authenticated[/]")


def _confirm_in_terminal(pen: Pen, attempt: PairingAttempt, code: str) -> PairedPen:
    """Ask in this (main) thread, so that end of input and Ctrl-C end the command at once;
    the prompt goes to stderr so that --json keeps stdout one document."""
    err_console.print(
        f"pairing code [bold]{code[:3]} {code[3:]}[/]: if the pen's screen shows the same "
        "code, press the pen's pairing button to accept it, then answer y here",
        highlight=False,
    )
    while True:
        if not typer.confirm("Same code on the pen, and accepted there?", err=True):
            fail(
                "nothing was paired (the codes differed, or you said no): someone may be "
                "between this host and the pen; press its pairing button and start again"
            )
        try:
            return pen.run_coroutine(attempt.finish())
        except NotAcceptedYet:
            err_console.print("the pen has not accepted yet: press its pairing button first")


@app.command("list")
def list_command(
    pen_url: Annotated[
        str | None,
        typer.Option("--pen", help="Pen URL: also list the hosts that pen is paired with."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """The pens this host is paired with (keys are never shown)."""
    with errors_to_exit():
        keys = HostKeys()
    result: dict[str, Any] = {"host_id": f"{keys.host_id:08x}", "path": str(keys.path),
                              "pens": [_pen_json(p) for p in keys.pens()]}  # fmt: skip
    if pen_url is not None:
        with connected(pen_url, quiet=as_json, purpose="pairing") as pen:
            result["pen_pairings"] = _pen_side(pen)
    if as_json:
        emit_json(result)
        return
    console.print(f"this host: {result['host_id']} (keystore {keys.path})")
    table = Table("serial", "model", "pen id", "paired at", box=None)
    for p in keys.pens():
        table.add_row(p.serial, p.model, f"{p.pen_id:08x}", p.paired_at)
    console.print(table if keys.pens() else "no pens paired")
    for entry in result.get("pen_pairings", []):
        mark = " (this host)" if entry["host_id"] == result["host_id"] else ""
        console.print(f"the pen knows host {entry['host_id']} {entry['name']}{mark}")


@app.command("revoke")
def revoke_command(
    which: Annotated[str, typer.Argument(help="The pen's serial or pen id (see pair list).")],
    pen_url: Annotated[
        str | None,
        typer.Option(
            "--pen", help="Pen URL: also make that pen forget this host (needs its link)."
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Forget a pen's key here (and with --pen, make the pen forget this host first)."""
    with errors_to_exit():
        keys = HostKeys()
        found = keys.find(which)
        if found is None:
            raise InvalidInput(f"{which!r}: no such pen in {keys.path}; see micropen pair list")
    on_pen = None
    if pen_url is not None:
        with connected(pen_url, quiet=as_json, purpose="pairing") as pen:
            reply = pen.request(lambda i: Unpair(i, keys.host_id))
            on_pen = int(reply[1])
    keys.remove(found.pen_id)
    result = {**_pen_json(found), "revoked_here": True, "pairings_left_on_pen": on_pen}
    if as_json:
        emit_json(result)
        return
    console.print(f"forgot {found.serial} ({found.pen_id:08x}) on this host")
    if on_pen is not None:
        console.print(f"the pen forgot this host; it keeps {on_pen} other pairing(s)")


def _pen_side(pen: Pen) -> list[dict[str, Any]]:
    entries = pen.run_coroutine(pen_pairings(pen.async_pen))
    return [{"host_id": f"{e.host_id:08x}", "name": e.host_name} for e in entries]


def _pen_json(p: PairedPen) -> dict[str, Any]:
    return {"serial": p.serial, "model": p.model, "pen_id": f"{p.pen_id:08x}",
            "paired_at": p.paired_at}  # fmt: skip
