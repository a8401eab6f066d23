"""Issue 16 finding 13: calibrating a faulted pen is refused BEFORE the first question, in
words with what to do (it asked every gauge question, then failed with "BAD_STATE (value 4,
limit 1)"); the pen page has a Clear fault control (technicians) through AsyncPen.clear_fault."""

from __future__ import annotations

from starlette.testclient import TestClient

from micropen.host.calibration import load_station
from micropen.tools.station.app import StationConfig, build_app


def _csrf(html: str) -> str:
    marker = 'name="csrf-token" content="'
    start = html.index(marker) + len(marker)
    return html[start : html.index('"', start)]


def test_a_faulted_pen_is_refused_in_words_then_cleared_and_calibrated() -> None:
    config = StationConfig(
        host="127.0.0.1", login_required=False, secret="s", station=load_station(), log=False
    )
    app = build_app(config)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        headers = {"X-CSRF-Token": _csrf(c.get("/pens").text)}
        pen = c.post("/api/pens", json={"url": "sim://?seed=83"}, headers=headers).json()
        pid, serial = pen["pid"], pen["serial"]
        session = app.state.hub.get(pid)
        c.portal.call(session.pen.emergency_stop)  # latches the emergency-stop fault
        body = {"procedure": "depth", "gauge": "manual", "technician": "Kim", "serial": serial}
        r = c.post(f"/api/pens/{pid}/calibration", json=body, headers=headers)
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error == (
            f"pen {serial} has a latched fault (emergency stop); remove its cause, press "
            "'Clear fault' on the pen's page, then start the calibration"
        )
        assert c.get(f"/api/pens/{pid}").json()["calibration"] is None  # nothing was asked
        page = c.get(f"/pens/{pid}").text
        assert 'id="clear-fault"' in page
        r = c.post(f"/api/pens/{pid}/clear-fault", json={"serial": serial}, headers=headers)
        assert r.status_code == 200 and r.json() == {"state": "idle", "fault": "none"}, r.text
        body["gauge"] = "sim"
        r = c.post(f"/api/pens/{pid}/calibration", json=body, headers=headers)
        assert r.status_code == 200, r.text
        c.post(f"/api/pens/{pid}/calibration/abort", json={"serial": serial}, headers=headers)
