"""The fleet page from a real broker: a pen's bridge (``micropen fleet bridge`` in its own
process) shows online, live; killed without a goodbye, the broker's last will turns it offline
on the open page, without a reload."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _station import StationProcess, artifacts_dir, wait_for

from micropen.host.fleet.mosquitto import LocalMosquitto, find_mosquitto

pytestmark = pytest.mark.slow

SITE = "bench"
SERIAL = "SIM-000031"
BRIDGE_START_S = 20.0


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalMosquitto]:
    if find_mosquitto() is None:
        pytest.skip("mosquitto binary not installed (apt-get install mosquitto; CI installs it)")
    mosquitto = LocalMosquitto(tmp_path / "broker", allow_anonymous=True)
    mosquitto.start()
    try:
        yield mosquitto
    finally:
        mosquitto.stop()


def _lines(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put("")

    threading.Thread(target=pump, daemon=True).start()
    return lines


@pytest.fixture
def bridge(broker: LocalMosquitto, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """``micropen fleet bridge`` for one simulated pen, once it says it is connected."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "micropen.tools.fleet_cli", "bridge", "--pen", "sim://?seed=31",
         "--mqtt", broker.url, "--site", SITE, "--queue-dir", str(tmp_path / "q"), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        lines = _lines(proc)
        while True:
            try:
                line = lines.get(timeout=BRIDGE_START_S)
            except queue.Empty:
                pytest.fail(f"the bridge did not connect within {BRIDGE_START_S} s")
            if not line:
                pytest.fail(f"the bridge exited: {proc.stderr.read() if proc.stderr else ''}")
            if json.loads(line).get("event") == "connected":
                break
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def row_text(driver: Any) -> str | None:
    rows = driver.find_elements("css selector", f'#fleet tr[data-key="{SITE}/{SERIAL}"]')
    return str(rows[0].text) if rows else None


def test_fleet_page_shows_a_bridge_online_then_its_last_will(
    broker: LocalMosquitto,
    bridge: subprocess.Popen[str],
    driver: Any,
    tmp_path: Path,
) -> None:
    station = StationProcess(tmp_path / "home", "--mqtt", broker.url, "--site", SITE)
    try:
        driver.get(station.url + "/fleet")
        wait_for(driver, lambda d: "online" in (row_text(d) or ""), f"{SERIAL} online")
        assert "IDLE" in (row_text(driver) or "")
        driver.save_screenshot(str(artifacts_dir() / "station-fleet-live.png"))
        bridge.kill()  # no clean disconnect: the broker publishes the bridge's last will
        bridge.wait(10)
        wait_for(driver, lambda d: "offline" in (row_text(d) or ""), f"{SERIAL} offline")
        assert "last will" in (row_text(driver) or "")
    finally:
        station.stop()
