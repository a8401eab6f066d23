"""Pen URLs choose the transport; unknown schemes and options are refused with the valid list."""

from __future__ import annotations

from pathlib import Path

import pytest

from micropen.host.errors import InvalidInput, PenURLError
from micropen.host.transports import make_transport
from micropen.host.transports.sim import SimTransport
from micropen.host.url import parse_pen_url


@pytest.mark.parametrize(
    ("text", "scheme", "target"),
    [
        ("auto", "auto", ""),
        ("", "auto", ""),
        ("/dev/ttyUSB0", "serial", "/dev/ttyUSB0"),
        (
            "/dev/serial/by-id/usb-micropen_MP-12_SN1-if00",
            "serial",
            "/dev/serial/by-id/usb-micropen_MP-12_SN1-if00",
        ),
        ("serial:///dev/ttyACM0?baud=115200", "serial", "/dev/ttyACM0"),
        ("socket://127.0.0.1:5000", "socket", "127.0.0.1:5000"),
        ("rfc2217://bench:2217", "rfc2217", "bench:2217"),
        ("usb://1209:0001?serial=SIM-000007", "usb", "1209:0001"),
        ("sim://?seed=7", "sim", ""),
    ],
)
def test_known_urls_parse(text: str, scheme: str, target: str) -> None:
    url = parse_pen_url(text)
    assert (url.scheme, url.target) == (scheme, target)


def test_options_are_kept() -> None:
    assert parse_pen_url("serial:///dev/ttyACM0?baud=115200").options == {"baud": "115200"}
    assert parse_pen_url("usb://?serial=X").options == {"serial": "X"}


def test_unknown_scheme_lists_valid_ones() -> None:
    with pytest.raises(PenURLError) as info:
        parse_pen_url("bluetooth://pen")
    message = str(info.value)
    assert "bluetooth" in message
    for scheme in ("sim://", "serial://", "socket://", "usb://"):
        assert scheme in message


def test_unknown_option_names_it_and_the_valid_ones() -> None:
    with pytest.raises(PenURLError, match="'speed'.*baud"):
        parse_pen_url("serial:///dev/ttyUSB0?speed=9600")


def test_socket_needs_host_and_port() -> None:
    with pytest.raises(PenURLError, match="host:port"):
        parse_pen_url("socket://")


def test_url_errors_are_invalid_input() -> None:
    """The CLI maps InvalidInput to exit code 2."""
    assert issubclass(PenURLError, InvalidInput)


def test_sim_state_and_boot_seed_options_reach_the_simulator(tmp_path: Path) -> None:
    state = tmp_path / "pen-44.json"
    url = parse_pen_url(f"sim://?seed=44&state={state}&boot_seed=3")
    assert url.options == {"seed": "44", "state": str(state), "boot_seed": "3"}
    transport = make_transport(url)
    assert isinstance(transport, SimTransport)
    assert (transport.config.state, transport.config.boot_seed) == (str(state), 3)
    assert state.exists()  # the unit is powered: its state file is written and held


@pytest.mark.parametrize(
    ("query", "words"),
    [("state=", ["state", "file path"]), ("boot_seed=x", ["boot_seed", "'x'"])],
)
def test_bad_sim_state_options_are_bad_input(query: str, words: list[str]) -> None:
    with pytest.raises(PenURLError) as info:
        make_transport(f"sim://?{query}")
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("text", ["socket://[::1", "rfc2217://[zz", "socket://host:notaport"])
def test_malformed_network_urls_are_one_line_errors(text: str) -> None:
    """Found by review: these raised ValueError from urllib (a traceback on the CLI)."""
    with pytest.raises(PenURLError, match="pen URL .*e.g. socket://127.0.0.1:5000"):
        parse_pen_url(text)
