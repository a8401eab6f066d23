"""``micropen sim …``: serve a simulated pen to other programs; list its parameters.

``micropen sim serve --tcp 0 --json`` prints exactly one JSON line (``{"tcp": port,
"serial": ...}``, plus ``"bench_tcp"`` with ``--bench-tcp``; ``{"pty": path, ...}`` with
``--pty``) and serves until SIGTERM or Ctrl-C. Without ``--json`` the line is the device path or
port followed by ``key=value`` fields. Bad input exits with code 2 and a one-line message; nothing
is served.

``--state PATH`` keeps the unit's non-volatile memory (calibration, cartridge records, lifetime
strokes, the cartridge in the bay) in that file between runs, as a real pen keeps its flash: a
state file that is damaged, made for another unit or held by another running simulator is
refused with one line (exit 2); on SIGTERM/Ctrl-C the pen is powered off and its last state
written before the process exits.
"""

from __future__ import annotations

import json
import os
import secrets
from typing import Annotated, NoReturn

import typer

from micropen.host.pairing import HostKeys
from micropen.protocol.errors import MicropenError
from micropen.protocol.messages import SimParam
from micropen.sim.faults import PARAM_SPECS
from micropen.sim.pen import SimConfig
from micropen.sim.serve import (
    PenServer,
    announce,
    make_config,
    open_server,
    press_pairing_button,
    run_until_signalled,
)

app = typer.Typer(
    help="The firmware simulator: serve a simulated pen over a pty or TCP.",
    no_args_is_help=True,
)


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _valid_names() -> str:
    return ", ".join(p.name.lower() for p in SimParam)


def parse_settings(items: list[str]) -> dict[SimParam, int]:
    """``["link_drop_ppm=1000", ...]`` → ``{SimParam.LINK_DROP_PPM: 1000}``; exits 2 if bad."""
    params: dict[SimParam, int] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep:
            _fail(f"--set {item!r}: expected PARAM=VALUE, e.g. --set link_drop_ppm=1000")
        try:
            param = SimParam[name.strip().upper()]
        except KeyError:
            _fail(f"--set {item!r}: unknown parameter {name.strip()!r}; valid: {_valid_names()}")
        try:
            value = int(text.strip(), 0)
        except ValueError:
            _fail(f"--set {item!r}: {text.strip()!r} is not an integer")
        spec = PARAM_SPECS[param]
        if not spec.lo <= value <= spec.hi:
            _fail(f"--set {item!r}: {value} outside {spec.lo}..{spec.hi} {spec.unit}")
        params[param] = value
    return params


def _config(query: str, seed: int | None, state: str | None) -> SimConfig:
    try:
        return make_config(query, seed, state)
    except MicropenError as exc:
        _fail(f"--query {query!r}: {exc}" if query else str(exc))


@app.command()
def serve(
    pty: Annotated[bool, typer.Option("--pty", help="Serve on a new pseudo-terminal.")] = False,
    tcp: Annotated[
        int | None,
        typer.Option("--tcp", metavar="PORT", min=0, max=65535, help="Serve on TCP; 0 = free."),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Pen seed (its unit errors, serial).")] = None,
    query: Annotated[str, typer.Option(help='SimConfig query, e.g. "seed=7&cartridge=0".')] = "",
    settings: Annotated[
        list[str] | None,
        typer.Option(
            "--set", metavar="PARAM=VALUE", help="Simulator parameter (see `params`); repeatable."
        ),
    ] = None,
    bench_tcp: Annotated[
        int | None,
        typer.Option("--bench-tcp", metavar="PORT", min=0, max=65535, help="Bench channel port."),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to bind the TCP ports to.")] = "127.0.0.1",
    link: Annotated[str | None, typer.Option(help="Symlink this path to the pty.")] = None,
    state: Annotated[
        str | None,
        typer.Option(
            "--state",
            metavar="PATH",
            help="Keep the unit's non-volatile memory in this file between runs (locked while "
            "serving).",
        ),
    ] = None,
    unpaired: Annotated[
        bool,
        typer.Option(
            "--unpaired",
            help="Do not pair the pen with this user's host keystore (pair it with `micropen "
            "pair`; until then it moves no needles).",
        ),
    ] = False,
    pairing_button: Annotated[
        bool,
        typer.Option(
            "--pairing-button",
            help="Press the pen's pairing button at start (later: kill -USR1 PID).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Announce as one JSON line.")] = False,
) -> None:
    """Serve a simulated pen until SIGTERM or Ctrl-C; first print where to find it.

    The pen is yours, on this machine: unless --unpaired it is paired with this user's host
    keystore at start, so `micropen run --pen ...` works at once. Its screen (pairing codes)
    is printed on stderr; SIGUSR1 presses its pairing button."""
    if pty == (tcp is not None):
        _fail("give exactly one of --pty or --tcp PORT")
    params = parse_settings(settings or [])
    config = _config(query, seed, state)
    try:
        server = open_server(
            config,
            pty=pty,
            tcp_port=tcp,
            host=host,
            link_path=link,
            bench_port=bench_tcp,
            params=params,
        )
    except (MicropenError, OSError) as exc:
        _fail(str(exc))
    try:
        with server:
            if not unpaired:
                _pair_with_this_host(server)
            if pairing_button:
                press_pairing_button(server)
            line = announce(server.describe(), as_json=as_json)
            run_until_signalled(server, lambda: typer.echo(line))
    except MicropenError as exc:  # e.g. the state file could not be written: stop, loudly
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def _pair_with_this_host(server: PenServer) -> None:
    """The bench owns this simulated unit: pair it with this user's keystore (a local act)."""
    keys = HostKeys()
    key = secrets.token_bytes(32)
    ident = server.pen.identity
    host_id = keys.settle_host_id()
    pen_id = server.pen.add_pairing(host_id, key, "this bench", server.clock.now())
    forgets = server.pen.state_file is None  # without --state the unit dies with us
    keys.add(pen_id, key, ident.serial, ident.model, holder_pid=os.getpid() if forgets else 0)


@app.command()
def params(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List the simulator parameters that --set (and the SimSet message) accept."""
    specs = PARAM_SPECS.values()
    if as_json:
        for spec in specs:
            row = {"name": spec.param.name.lower(), "id": int(spec.param), "group": spec.group}
            row.update({"lo": spec.lo, "hi": spec.hi, "unit": spec.unit, "doc": spec.doc})
            typer.echo(json.dumps(row))
        return
    width = max(len(spec.param.name) for spec in specs)
    for spec in specs:
        limits = f"{spec.lo}..{spec.hi} {spec.unit}"
        typer.echo(f"{spec.param.name.lower():<{width}}  {limits:<24}  {spec.doc}")
