"""``micropen station``: serve the bench station; ``micropen station user add|list|remove``."""

from __future__ import annotations

import asyncio
import getpass
import socket
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ..common import JsonOption, emit_json, errors_to_exit, fail

__all__ = ["app"]

app = typer.Typer(
    help="The bench station in the browser: pens, live view with stop, calibration with live "
    "plots and operator prompts, records and certificates, treatment log, fleet.",
    invoke_without_command=True,
)
user_app = typer.Typer(help="The station's users (needed when it listens beyond 127.0.0.1).")
app.add_typer(user_app, name="user", no_args_is_help=True)

DEFAULT_PORT = 8470
GRACEFUL_S = 5  # at Ctrl-C/SIGTERM: how long open requests may take before they are cut


@app.callback()
def station(
    ctx: typer.Context,
    host: Annotated[
        str,
        typer.Option(
            "--host",
            help="address to listen on; anything but a loopback address requires logins "
            "(micropen station user add)",
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port (0: any free port)")] = DEFAULT_PORT,
    pen: Annotated[
        str,
        typer.Option(
            "--pen",
            envvar="MICROPEN_PEN",
            help="Pen URL offered first on the pens page: sim://?seed=N, /dev/ttyUSB0, "
            "socket://HOST:PORT, usb://VID:PID",
        ),
    ] = "sim://?seed=7",
    mqtt: Annotated[
        str | None,
        typer.Option("--mqtt", envvar="MICROPEN_MQTT", help="fleet broker: mqtt(s)://HOST:PORT"),
    ] = None,
    site: Annotated[str, typer.Option("--site", help="fleet site to show ('+': all)")] = "+",
    sign_key: Annotated[
        Path | None, typer.Option("--sign-key", help="reviewers sign with this key (PEM, 0600)")
    ] = None,
    sign_cert: Annotated[
        Path | None, typer.Option("--sign-cert", help="the signatory's X.509 certificate")
    ] = None,
    require_login: Annotated[
        bool,
        typer.Option(
            "--require-login",
            help="logins on loopback too (a bench PC shared by several technicians: who "
            "calibrated and who signed is then the logged-in user)",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Serve the station (127.0.0.1:8470 by default) until Ctrl-C; with --json, print one
    JSON line with its URL once it listens."""
    if ctx.invoked_subcommand is not None:
        return
    if not 0 <= port <= 65535:
        fail(f"--port {port} is outside 0–65535; give a free TCP port (0: any)", 2)
    from .auth import UserStore, is_loopback, load_secret

    with errors_to_exit():
        login = require_login or not is_loopback(host)
        users = UserStore()
        if login and not users.users():
            why = (
                "--require-login"
                if require_login and is_loopback(host)
                else f"--host {host} is reachable from other machines, so the station"
            )
            fail(
                f"{why} needs logins and has no user yet; add one (micropen station user add "
                "NAME --role technician) or listen on 127.0.0.1",
                2,
            )
        signer = _signer(sign_key, sign_cert)
        if mqtt is not None:  # a bad URL: one line and exit 2, not a traceback at start-up
            from micropen.host.fleet.broker import parse_broker_url

            parse_broker_url(mqtt)
        from micropen.host.calibration import load_station

        lab = load_station()
        secret = load_secret()
    sock = _listen(host, port)
    from .app import StationConfig, build_app

    config = StationConfig(
        host=host, login_required=login, secret=secret, mqtt=mqtt, site=site, signer=signer,
        signer_files=(sign_key, sign_cert) if sign_key and sign_cert else None,
        users=users, station=lab, default_pen=pen,
    )  # fmt: skip
    with errors_to_exit():
        application = build_app(config)
    bound = sock.getsockname()
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    url = f"http://{shown}:{bound[1]}/"
    if as_json:
        emit_json({"url": url, "host": bound[0], "port": bound[1], "login_required": login})
    else:
        typer.echo(
            f"micropen station: {url} ({'logins required' if login else 'local, no login'}); "
            "Ctrl-C ends it"
        )
    _serve(application, sock)


def _signer(key: Path | None, cert: Path | None) -> Any:
    if key is None and cert is None:
        return None
    from micropen.host.calibration.signing import load_signer

    return load_signer(key=key, cert=cert)


def _listen(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        fail(f"--host {host}: {exc.strerror}; give an address of this machine", 2)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        fail(f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port", 1)
    return sock


def _serve(application: Any, sock: socket.socket) -> None:
    import uvicorn

    config = uvicorn.Config(
        application,
        log_level="warning",
        ws="websockets-sansio",
        lifespan="on",
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_S,  # then the pens are closed (stopped if running)
    )
    hub = application.state.hub

    class Server(uvicorn.Server):
        """On SIGTERM or Ctrl-C the pens are stopped and calibrations aborted FIRST; only
        then do requests in flight (PDF downloads…) get their graceful-shutdown time."""

        def handle_exit(self, sig: int, frame: Any) -> None:
            try:  # the signal handler runs on the loop's thread, between its callbacks
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is not None and not self.should_exit:
                task = loop.create_task(hub.stop_all())
                _SHUTDOWN.add(task)
                task.add_done_callback(_SHUTDOWN.discard)
            super().handle_exit(sig, frame)

    server = Server(config)
    server.run(sockets=[sock])


_SHUTDOWN: set[Any] = set()  # the shutdown's stop of every pen (a task needs an owner)


RoleOption = Annotated[
    str, typer.Option("--role", help="technician (calibrates), reviewer (signs), viewer")
]


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="login name")],
    role: RoleOption,
    password_file: Annotated[
        Path | None,
        typer.Option("--password-file", help="read the password from this file's first line"),
    ] = None,
    replace: Annotated[bool, typer.Option("--replace", help="replace an existing user")] = False,
    as_json: JsonOption = False,
) -> None:
    """Add a user (the password is asked twice, or read from --password-file)."""
    from .auth import ROLES, UserStore

    if role not in ROLES:
        fail(f"--role {role!r} is not one of {', '.join(ROLES)}", 2)
    password = _password(password_file)
    with errors_to_exit():
        user = UserStore().add(name, role, password, replace=replace)
    if as_json:
        emit_json({"user": user.name, "role": user.role})
    else:
        typer.echo(f"user {user.name} ({user.role}) added")


def _password(path: Path | None) -> str:
    if path is not None:
        try:
            return path.read_text(encoding="utf-8").splitlines()[0] if path.stat().st_size else ""
        except OSError as exc:
            fail(f"--password-file {path}: {exc.strerror}; give a readable file", 2)
    if not sys.stdin.isatty():
        fail("no terminal to ask the password on; give --password-file FILE", 2)
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        fail("the two passwords differ; run the command again", 2)
    return first


@user_app.command("list")
def user_list(as_json: JsonOption = False) -> None:
    """The station's users and their roles."""
    from .auth import UserStore

    with errors_to_exit():
        users = UserStore().users()
    if as_json:
        emit_json({"users": [{"user": u.name, "role": u.role} for u in users]})
        return
    for u in users:
        typer.echo(f"{u.name}\t{u.role}")


@user_app.command("remove")
def user_remove(
    name: Annotated[str, typer.Argument(help="login name")], as_json: JsonOption = False
) -> None:
    """Remove a user (their open sessions end at their next request's check of the file)."""
    from .auth import UserStore

    with errors_to_exit():
        UserStore().remove(name)
    if as_json:
        emit_json({"removed": name})
    else:
        typer.echo(f"user {name} removed")
