"""``micropen fleet …``: bridge a pen to an MQTT broker, watch the fleet, send a safe command.

Credentials: ``--username`` and ``--password-file`` (never a password on the command line);
``mqtts://`` URLs verify the broker's certificate against ``--cafile`` (or the system's CAs).
A bridge logs in as the pen's serial unless ``--username`` says otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import aiomqtt
import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from micropen.host import AsyncPen, paths
from micropen.host.fleet import (
    BridgeConfig,
    BrokerConfig,
    FleetBridge,
    FleetWatcher,
    PenView,
    parse_broker_url,
    send_command,
)
from micropen.host.fleet.commands import OPT_IN
from micropen.host.fleet.mosquitto import fleet_acl, read_roster
from micropen.host.fleet.record_outbox import RecordOutbox

from . import fleet_ingest_cli
from .common import JsonOption, PenOption, emit_json, errors_to_exit, fail

app = typer.Typer(
    help="Fleet telemetry over MQTT: bridge pens to a broker, watch them, stop one remotely.",
    no_args_is_help=True,
)
console = Console(stderr=True)

MqttOption = Annotated[
    str,
    typer.Option("--mqtt", envvar="MICROPEN_MQTT", help="Broker: mqtt://HOST:PORT or mqtts://…"),
]
UserOption = Annotated[
    str | None, typer.Option("--username", help="Broker user (a bridge defaults to the serial)")
]
PasswordFileOption = Annotated[
    Path | None, typer.Option("--password-file", help="File holding the broker password")
]
CaOption = Annotated[Path | None, typer.Option("--cafile", help="CA (PEM) of the broker's cert")]
CertOption = Annotated[
    Path | None, typer.Option("--client-cert", help="Client certificate (PEM) for mutual TLS")
]
KeyOption = Annotated[
    Path | None, typer.Option("--client-key", help="Key of --client-cert, if not inside it")
]
SiteOption = Annotated[str, typer.Option("--site", help="Site name (one topic level)")]


def _broker(
    url: str,
    username: str | None,
    password_file: Path | None,
    cafile: Path | None,
    client_cert: Path | None,
    client_key: Path | None,
) -> BrokerConfig:
    with errors_to_exit():
        return parse_broker_url(
            url,
            username=username,
            password_file=password_file,
            cafile=cafile,
            client_cert=client_cert,
            client_key=client_key,
        )


# --- bridge ---------------------------------------------------------------------------------
@app.command()
def bridge(
    mqtt: MqttOption,
    pen: PenOption = "auto",
    site: SiteOption = "default",
    username: UserOption = None,
    password_file: PasswordFileOption = None,
    cafile: CaOption = None,
    client_cert: CertOption = None,
    client_key: KeyOption = None,
    queue_dir: Annotated[
        Path | None,
        typer.Option(
            "--queue-dir",
            help="Folder of the on-disk outbox (default: fleet/ next to the treatment log)",
        ),
    ] = None,
    telemetry_hz: Annotated[
        int | None, typer.Option("--telemetry-hz", help="Ask the pen to stream at this rate")
    ] = None,
    allow: Annotated[
        list[str] | None,
        typer.Option("--allow", help=f"Also accept remotely: {', '.join(sorted(OPT_IN))}"),
    ] = None,
    calibration_due: Annotated[
        str | None, typer.Option("--calibration-due", help="YYYY-MM-DD, shown by watchers")
    ] = None,
    calibration_store: Annotated[
        Path | None,
        typer.Option(
            "--calibration-store",
            help="Publish this pen's calibration records from this store (default: the "
            "bench's calibration.sqlite, if there is one)",
        ),
    ] = None,
    seconds: Annotated[
        float | None, typer.Option("--seconds", help="Stop after S seconds (default: run on)")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON line per notice, then a summary line")
    ] = False,
) -> None:
    """Publish a pen's status, telemetry, events, run reports and fleet records; accept
    status/stop."""
    broker = _broker(mqtt, username, password_file, cafile, client_cert, client_key)
    with errors_to_exit():
        config = BridgeConfig(
            site=site,
            queue_dir=queue_dir or paths.fleet_outbox_dir(),
            allow=frozenset(allow or ()),
            calibration_due=_check_date(calibration_due),
            calibration_store=calibration_store or paths.calibration_db(),
        )
    with errors_to_exit(), _broker_errors():
        stats = asyncio.run(_run_bridge(pen, broker, config, telemetry_hz, seconds, as_json))
    if as_json:
        emit_json({"event": "summary", **stats})
    else:
        console.print(f"bridge stopped: {_counters_in_words(stats)}", highlight=False)


async def _run_bridge(
    pen_url: str,
    broker: BrokerConfig,
    config: BridgeConfig,
    telemetry_hz: int | None,
    seconds: float | None,
    as_json: bool,
) -> dict[str, Any]:
    # the record sink goes in with the connection: it stores what the pen hands over at once
    records = RecordOutbox(config)
    pen = await AsyncPen.open(pen_url, record_sinks=[records])
    # SIGTERM (a service manager) and Ctrl-C end the bridge as --seconds does: the retained
    # status says "bridge stopped", the summary is printed, the pen is closed (its runs
    # stopped), exit 0 — a stop asked for is not a failure
    stop, loop = asyncio.Event(), asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        if telemetry_hz is not None:
            await pen.set_telemetry(telemetry_hz)
        async with FleetBridge(pen, broker, config, records=records) as fleet_bridge:
            fleet_bridge.add_notice_listener(emit_json if as_json else _print_notice)
            await fleet_bridge.wait(seconds, until=stop)
        return fleet_bridge.statistics()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        records.close()
        await pen.close()


def _counters_in_words(stats: dict[str, Any]) -> str:
    """The bridge's closing figures as "name value" pairs (nested figures flattened)."""
    flat: list[str] = []
    for key, value in stats.items():
        if isinstance(value, dict):
            flat += [f"{key} {k.replace('_', ' ')} {v}" for k, v in value.items()]
        else:
            flat.append(f"{key.replace('_', ' ')} {value}")
    return ", ".join(flat)


def _print_notice(notice: dict[str, Any]) -> None:
    details = " ".join(f"{k}={v}" for k, v in notice.items() if k not in ("event", "site"))
    console.print(f"[bold]{notice['event']}[/] {details}", highlight=False)


def _check_date(text: str | None) -> str | None:
    if text is None:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%d").date().isoformat()
    except ValueError:
        fail(f"--calibration-due {text!r} is not a date; use YYYY-MM-DD", 2)


@contextlib.contextmanager
def _broker_errors() -> Any:
    try:
        yield
    except aiomqtt.MqttError as exc:
        fail(f"broker: {exc}", 1)


# --- watch ----------------------------------------------------------------------------------
@app.command()
def watch(
    mqtt: MqttOption,
    site: Annotated[str, typer.Option("--site", help="Site to watch ('+': all)")] = "+",
    username: UserOption = None,
    password_file: PasswordFileOption = None,
    cafile: CaOption = None,
    client_cert: CertOption = None,
    client_key: KeyOption = None,
    count: Annotated[int | None, typer.Option("--count", help="Stop after N updates")] = None,
    seconds: Annotated[float | None, typer.Option("--seconds", help="Stop after S s")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON line per update")] = False,
) -> None:
    """A live table of the fleet: online, state, cartridge, last fault, calibration due."""
    broker = _broker(mqtt, username, password_file, cafile, client_cert, client_key)
    watcher = FleetWatcher(broker, site=site)
    with errors_to_exit(), _broker_errors():
        asyncio.run(_run_watch(watcher, count, seconds, as_json))


async def _run_watch(
    watcher: FleetWatcher, count: int | None, seconds: float | None, as_json: bool
) -> None:
    live = None if as_json else Live(render_table(watcher.pens.values()), console=Console())
    seen = 0
    with live or contextlib.nullcontext(), contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds), contextlib.aclosing(watcher.updates()) as views:
            async for view in views:
                seen += 1
                if as_json:
                    sys.stdout.write(json.dumps(view.to_dict(), sort_keys=True) + "\n")
                    sys.stdout.flush()
                elif live is not None:
                    live.update(render_table(watcher.pens.values()))
                if count is not None and seen >= count:
                    break


def render_table(views: Any) -> Table:
    table = Table(title="micropen fleet")
    for column in ("site", "pen", "online", "state", "cartridge", "last fault", "cal. due"):
        table.add_column(column)
    for v in sorted(views, key=lambda v: (v.site, v.serial)):
        assert isinstance(v, PenView)
        online = "[green]yes[/]" if v.online else "[red]no[/]"
        state = v.state or "?"
        if not v.online:
            state = f"[dim]{v.reason or 'offline'}[/]"
        elif v.link == "down":
            state = f"[yellow]link down[/] ({state})"
        fault = v.fault if v.fault not in (None, "NONE") else None
        table.add_row(
            v.site, v.serial, online, f"[red]{fault}[/]" if fault else state,
            v.cartridge or "-", v.last_fault or "-", v.calibration_due or "unknown",
        )  # fmt: skip
    return table


# --- one command ----------------------------------------------------------------------------
@app.command()
def command(
    name: Annotated[str, typer.Argument(help="status or stop (others if the bridge allows)")],
    mqtt: MqttOption,
    serial: Annotated[str, typer.Option("--serial", help="Pen serial")],
    site: SiteOption = "default",
    username: UserOption = None,
    password_file: PasswordFileOption = None,
    cafile: CaOption = None,
    client_cert: CertOption = None,
    client_key: KeyOption = None,
    arg: Annotated[
        list[str] | None, typer.Option("--arg", help="KEY=VALUE (JSON value), repeatable")
    ] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait")] = 10.0,
    as_json: JsonOption = False,
) -> None:
    """Send one remote command to a pen's bridge and print the reply (exit 1 if refused)."""
    broker = _broker(mqtt, username, password_file, cafile, client_cert, client_key)
    args = dict(_parse_arg(a) for a in arg or ())
    with errors_to_exit(), _broker_errors():
        reply = asyncio.run(
            send_command(
                broker,
                site=site,
                serial=serial,
                command=name,
                args=args,
                sender=broker.username,
                timeout=timeout,
            )
        )
    if as_json:
        emit_json(reply)
    elif reply["ok"]:
        console.print(f"{name} on {serial}: {_in_words(name, reply.get('result'))}",
                      highlight=False)  # fmt: skip
    if not reply["ok"]:
        error = reply.get("error") or {}
        fail(f"{name} on {serial} refused ({error.get('code')}): {error.get('reason')}", 1)


def _in_words(name: str, result: Any) -> str:
    """A command's result for a person: names and units, never the protocol's integers."""
    if not isinstance(result, dict):
        return "done"
    if name == "stop":
        ignored = result.get("ignored_args")
        return "stopped" + (f" ({ignored})" if isinstance(ignored, str) else "")
    if name != "status":
        return "done"
    words = [f"state {str(result.get('state', '?')).lower()}"]
    if result.get("fault") not in (None, "NONE", 0):
        words.append(f"fault {str(result['fault']).lower()}")
    if "depth_set_um" in result:
        words.append(f"depth set {result['depth_set_um'] / 1000:.2f} mm")
    if "rate_set_sps" in result:
        words.append(f"rate set {result['rate_set_sps']} strokes/s")
    if result.get("cartridge_id"):
        words.append(f"cartridge {int(result['cartridge_id']):08X} "
                     f"({str(result.get('cartridge_state', '?')).lower()})")  # fmt: skip
    if "battery_mv" in result:
        words.append(f"battery {result['battery_mv'] / 1000:.2f} V")
    if "temperature_dc" in result:
        words.append(f"handpiece {result['temperature_dc'] / 10:.1f} °C")
    words.append("calibrated" if result.get("calibrated") else "not calibrated")
    if result.get("service_mode"):
        words.append("in service mode")
    return ", ".join(words)


# --- ACL from a roster ----------------------------------------------------------------------
@app.command()
def acl(
    roster: Annotated[Path, typer.Argument(help="Pen roster: one 'site,serial' a line")],
    admin: Annotated[list[str] | None, typer.Option("--admin", help="Admin user (repeat)")] = None,
    operator: Annotated[
        list[str] | None, typer.Option("--operator", help="Operator user: may send commands")
    ] = None,
    watcher: Annotated[
        list[str] | None, typer.Option("--watcher", help="Read-only user (dashboards)")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write the ACL here")] = None,
    multi_site: Annotated[
        bool, typer.Option("--multi-site", help="A pen may be listed at several sites (loaners)")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Write the broker ACL that binds each pen of the roster to its site (mosquitto acl_file);
    without --out it is printed."""
    with errors_to_exit():
        pens = read_roster(roster, multi_site=multi_site)
        text = fleet_acl(
            pens=pens, admins=admin or (), operators=operator or (), watchers=watcher or ()
        )
    if out is not None:
        try:
            out.write_text(text, encoding="utf-8")
        except OSError as exc:
            fail(f"cannot write the ACL to {str(out)!r}: {exc}; give a writable --out path", 1)
    if as_json:
        emit_json({
            "pens": len(pens), "sites": sorted({site for site, _ in pens}),
            "out": str(out) if out is not None else None, "acl": None if out else text,
        })  # fmt: skip
    elif out is None:
        sys.stdout.write(text)
    else:
        console.print(f"ACL for {len(pens)} pen entries written to {out}", highlight=False)


def _parse_arg(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        fail(f"--arg {text!r} is not KEY=VALUE", 2)
    try:
        return key, json.loads(raw)
    except ValueError:
        return key, raw


if __name__ == "__main__":
    app()


# --- ingest, db, export (fleet records into PostgreSQL) --------------------------------------
fleet_ingest_cli.register(app)
