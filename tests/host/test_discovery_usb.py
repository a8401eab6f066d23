"""Discovery says why a USB scan failed, and ``auto`` never falls back to the simulator then.

Reproduction pinned here: any exception while scanning USB (no libusb, no permission on the
device node) made discovery return "no USB pens", so ``auto`` quietly picked the simulator —
with a real pen plugged in.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import pytest
import usb.backend.libusb1

from micropen.host.errors import TransportError
from micropen.host.transports import discovery, make_transport
from micropen.host.transports.discovery import SIM_NOTICE, discover, resolve_auto, scan
from micropen.host.transports.usb import UDEV_RULE, UsbTransport
from micropen.host.url import parse_pen_url
from micropen.sim.pen import SimConfig
from micropen.sim.usb_backend import SimUsbBackend, SimUsbDeviceInfo
from micropen.sim.usb_device import SimUsbPen, make_sim_usb_backend

pytestmark = pytest.mark.looptime(False)  # the pyusb backend is driven from threads: real time


@pytest.fixture
def no_libusb(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither libusb-package's library nor a system libusb can be loaded."""
    import libusb_package

    monkeypatch.setattr(libusb_package, "get_libusb1_backend", lambda *a, **k: None)
    monkeypatch.setattr(usb.backend.libusb1, "get_backend", lambda *a, **k: None)


@pytest.fixture
def locked_out() -> Any:
    """A pen on the bus whose device node this user may not open (no udev rule)."""
    unit = SimUsbPen(SimConfig(seed=61), address=4, bus=2)
    info = SimUsbDeviceInfo(serial=unit.info.serial, address=4, bus=2, access_denied=True)
    backend = SimUsbBackend([(info, unit.open_pipe)])
    yield backend
    backend.close()


def _one_line(error: BaseException, *words: str) -> str:
    text = str(error)
    assert "\n" not in text, text
    for word in words:
        assert word in text, (word, text)
    return text


# ------------------------------------------------------------------ the reason
def test_no_libusb_is_a_typed_one_line_reason(no_libusb: None) -> None:
    found = scan()
    assert not found.complete and isinstance(found.usb_error, TransportError)
    _one_line(found.usb_error, "USB scan failed", "libusb not found", "libusb-package")


def test_permission_denied_names_the_device_node_and_the_udev_rule(locked_out: Any) -> None:
    found = scan(locked_out)
    assert found.urls == [] and found.usb_error is not None
    _one_line(
        found.usb_error,
        "USB scan failed",
        "permission denied",
        "/dev/bus/usb/002/004",
        "1209:0001",
        UDEV_RULE,
        "udevadm control --reload",
    )


def test_a_backend_failing_in_an_untyped_way_is_still_a_reason() -> None:
    class Broken(SimUsbBackend):
        def enumerate_devices(self) -> Any:
            raise RuntimeError("bus exploded\nwith detail")

    found = scan(Broken())
    assert found.usb_error is not None
    _one_line(found.usb_error, "USB scan failed", "RuntimeError", "bus exploded with detail")


def test_pyusb_missing_is_a_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "micropen.host.transports.usb", None)  # import fails
    found = scan()
    assert found.usb_error is not None
    _one_line(found.usb_error, "USB scan failed", "pyusb is not installed")


def test_a_readable_bus_gives_urls_and_no_reason() -> None:
    backend = make_sim_usb_backend([SimConfig(seed=62)])
    try:
        found = scan(backend)
    finally:
        backend.close()
    assert found.complete and found.urls == ["usb://1209:0001?serial=SIM-000062"]


def test_discover_keeps_its_list_and_logs_the_reason(
    no_libusb: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger=discovery.__name__):
        urls = discover()
    assert not [url for url in urls if url.startswith("usb://")]
    assert any("libusb not found" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------ auto
def test_auto_refuses_instead_of_falling_back_when_libusb_is_missing(no_libusb: None) -> None:
    with pytest.raises(TransportError) as info:
        resolve_auto()
    _one_line(info.value, "libusb not found", "will not fall back to the simulator", "--pen")
    with pytest.raises(TransportError):
        make_transport("auto")


def test_auto_refuses_instead_of_falling_back_when_access_is_denied(locked_out: Any) -> None:
    with pytest.raises(TransportError) as info:
        resolve_auto(locked_out)
    _one_line(info.value, "permission denied", "/dev/bus/usb/002/004", "not fall back")
    with pytest.raises(TransportError):
        make_transport("auto", usb_backend=locked_out)


def test_auto_refuses_when_usb_failed_even_if_a_serial_pen_was_found(
    no_libusb: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    by_id = "/dev/serial/by-id/usb-micropen_MP-12_SN1-if00"
    monkeypatch.setattr(discovery, "_serial_urls", lambda: [by_id])
    with pytest.raises(TransportError) as info:
        resolve_auto()
    _one_line(info.value, "libusb not found", f"also found: {by_id}")


def test_auto_still_falls_back_to_the_simulator_when_the_scan_worked_and_found_nothing() -> None:
    empty = SimUsbBackend()
    url = resolve_auto(empty)
    assert (url.scheme, url.options["notice"]) == ("sim", SIM_NOTICE)


def test_auto_picks_the_one_usb_pen() -> None:
    backend = make_sim_usb_backend([SimConfig(seed=63)])
    try:
        url = resolve_auto(backend)
    finally:
        backend.close()
    assert url == parse_pen_url("usb://1209:0001?serial=SIM-000063")


async def test_opening_a_locked_out_pen_by_url_says_what_to_do_in_one_line(
    locked_out: Any,
) -> None:
    transport = UsbTransport(parse_pen_url("usb://1209:0001"), backend=locked_out)
    with pytest.raises(TransportError) as info:
        await transport.open()
    _one_line(info.value, "permission denied", UDEV_RULE)
