"""Issue 16, finding 1 (safety): a page that shows one pen must never stop or command another.
Pen ids are random (a restarted station never hands an old id to another pen), every command
from a page names the serial it shows, and the station refuses (409) when the pen under that id
has another serial; the page says it is stale on its feed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _station import StationProcess, by_id, wait_for
from starlette.testclient import TestClient

from micropen.host.calibration import load_station
from micropen.tools.station.app import StationConfig, build_app


def _client() -> TestClient:
    config = StationConfig(
        mqtt=None,
        host="127.0.0.1",
        login_required=False,
        secret="test-secret",
        station=load_station(),
        log=False,
    )
    return TestClient(build_app(config), base_url="http://127.0.0.1", follow_redirects=False)


def _csrf(html: str) -> str:
    marker = 'name="csrf-token" content="'
    start = html.index(marker) + len(marker)
    return html[start : html.index('"', start)]


def test_a_command_naming_another_serial_is_refused_and_stops_nothing() -> None:
    with _client() as c:
        token = _csrf(c.get("/pens").text)
        headers = {"X-CSRF-Token": token}
        first = c.post("/api/pens", json={"url": "sim://?seed=41"}, headers=headers).json()
        second = c.post("/api/pens", json={"url": "sim://?seed=42"}, headers=headers).json()
        assert first["pid"] != second["pid"]
        pid, serial = second["pid"], second["serial"]
        r = c.post(f"/api/pens/{pid}/stop", json={"serial": first["serial"]}, headers=headers)
        assert r.status_code == 409, r.text
        assert r.json()["error"] == (
            f"this page shows pen {first['serial']}; the station now has {serial} under that "
            "id — reload"
        )
        assert c.get(f"/api/pens/{pid}").json()["last_stop"] is None  # not stopped wrongly
        for path, body in [
            ("calibration", {"procedure": "depth", "gauge": "sim", "technician": "Kim"}),
            ("calibration/abort", {}),
            ("calibration/answer", {"id": 1, "answer": "x"}),
            ("disconnect", {}),
        ]:
            body["serial"] = first["serial"]
            r = c.post(f"/api/pens/{pid}/{path}", json=body, headers=headers)
            assert r.status_code == 409 and "reload" in r.json()["error"], (path, r.text)
        assert c.get(f"/api/pens/{pid}").json()["calibration"] is None
        # an id the station never had, named with a serial: stale too, not "no such pen"
        r = c.post("/api/pens/p1/stop", json={"serial": serial}, headers=headers)
        assert r.status_code == 409 and "no pen under id p1" in r.json()["error"]
        # the feed of a page showing another serial says so, once, and closes
        with c.websocket_connect(f"ws://127.0.0.1/ws/pens/{pid}?serial={first['serial']}") as ws:
            event = ws.receive_json()
            assert event["type"] == "stale" and serial in event["error"]
        # the same serial: the stop goes through
        r = c.post(f"/api/pens/{pid}/stop", json={"serial": serial}, headers=headers)
        assert r.status_code == 200 and r.json()["state"] == "idle", r.text
        # a stop on the feed naming another serial is refused there too
        with c.websocket_connect(f"ws://127.0.0.1/ws/pens/{pid}?serial={serial}") as ws:
            assert ws.receive_json()["type"] == "snapshot"
            ws.send_json({"type": "stop", "csrf": token, "serial": first["serial"]})
            for _ in range(2000):
                event = ws.receive_json()
                assert event["type"] != "stopped", "a stale stop reached the pen"
                if event["type"] == "stale":
                    break
            else:
                raise AssertionError("no 'stale' answer to a stop naming another serial")


def _api(station: StationProcess, path: str, body: Any = None) -> Any:
    """The station's JSON API as a script uses it (its own session cookie and CSRF token)."""
    import httpx

    with httpx.Client(base_url=station.url, timeout=10) as h:
        if body is None:
            r = h.get(path)
        else:
            token = _csrf(h.get("/pens").text)
            r = h.post(path, json=body, headers={"X-CSRF-Token": token})
        assert r.status_code == 200, r.text
        return r.json()


@pytest.mark.slow
def test_a_tab_open_across_a_station_restart_is_stale_and_stops_no_other_pen(
    driver: Any, browser_ready: None, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    first = StationProcess(home)
    try:
        pen = _api(first, "/api/pens", {"url": "sim://?seed=51"})
        driver.get(f"{first.url}/pens/{pen['pid']}")
        wait_for(driver, lambda d: by_id(d, "v-depth").text not in ("—", ""), "live telemetry")
    finally:
        first.stop()
    port = first.url.rsplit(":", 1)[1]
    second = StationProcess(home, "--port", port)  # the same address: the tab reconnects
    try:
        assert second.url == first.url
        other = _api(second, "/api/pens", {"url": "sim://?seed=52"})
        assert other["pid"] != pen["pid"]  # ids are random, not a counter per process
        wait_for(
            driver,
            lambda d: (
                "Stale page" in d.find_element("id", "stale").text
                if d.find_elements("id", "stale")
                else None
            ),
            "the stale-page warning on the open tab",
        )
        by_id(driver, "stop").click()
        out = wait_for(
            driver,
            lambda d: (
                by_id(d, "stop-result")
                if by_id(d, "stop-result").get_attribute("data-state")
                else None
            ),
            "the stop's answer",
        )
        assert out.get_attribute("data-state") == "stale", out.text
        assert "NOT stopped" in out.text and pen["serial"] in out.text
        after = _api(second, f"/api/pens/{other['pid']}")
        assert after["last_stop"] is None and after["serial"] == other["serial"]
    finally:
        second.stop()
