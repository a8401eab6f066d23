"""Issue 16, findings 10 and 11: bad input gets a clear answer, never a bare 500 or a
traceback; the pen's serial cannot inject into a download's Content-Disposition header."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from micropen.host.calibration import load_station
from micropen.tools.cli import app as cli_app
from micropen.tools.station.app import StationConfig, build_app


def _client() -> TestClient:
    config = StationConfig(
        host="127.0.0.1", login_required=False, secret="s", station=load_station(), log=False
    )
    return TestClient(
        build_app(config),
        base_url="http://127.0.0.1",
        follow_redirects=False,
        raise_server_exceptions=False,
    )


def _csrf(html: str) -> str:
    marker = 'name="csrf-token" content="'
    start = html.index(marker) + len(marker)
    return html[start : html.index('"', start)]


def test_a_session_id_beyond_any_integer_is_not_found() -> None:
    with _client() as c:
        r = c.get("/log/99999999999999999999999")
        assert r.status_code == 404 and "no session 99999999999999999999999" in r.text
        r = c.get("/log/export.json?session=99999999999999999999999")
        assert r.status_code == 400 and "outside" in r.text


def test_json_nested_100000_deep_is_refused_with_400() -> None:
    with _client() as c:
        token = _csrf(c.get("/pens").text)
        body = "[" * 100_000 + "]" * 100_000
        r = c.post(
            "/api/pens",
            content=body,
            headers={"X-CSRF-Token": token, "Content-Type": "application/json"},
        )
        assert r.status_code == 400, r.text
        assert "nested too deeply" in r.json()["error"]


def test_a_bogus_broker_url_is_one_line_and_exit_2() -> None:
    result = CliRunner().invoke(cli_app, ["station", "--mqtt", "bogus://x", "--port", "0"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "bogus" in lines[0] and "mqtt://" in lines[0], result.output
    result = CliRunner().invoke(
        cli_app, ["station", "--mqtt", "bogus://x", "--port", "0", "--json"]
    )
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_a_serial_cannot_inject_into_a_downloads_header() -> None:
    from micropen.tools.station.web import attachment

    header = attachment('cal-a";x=.exe;b="-20260101T000000Z-abcdef12.pdf')["Content-Disposition"]
    plain, encoded = header.split("; filename*=")
    assert plain == 'attachment; filename="cal-a__x_.exe_b__-20260101T000000Z-abcdef12.pdf"'
    assert encoded == "UTF-8''cal-a%22%3Bx%3D.exe%3Bb%3D%22-20260101T000000Z-abcdef12.pdf"
    assert "\n" not in attachment("a\r\nSet-Cookie: x=1")["Content-Disposition"]


def test_an_answer_of_null_is_refused() -> None:
    with _client() as c:
        token = _csrf(c.get("/pens").text)
        headers = {"X-CSRF-Token": token}
        pen = c.post("/api/pens", json={"url": "sim://?seed=81"}, headers=headers).json()
        r = c.post(
            f"/api/pens/{pen['pid']}/calibration",
            json={"procedure": "depth", "gauge": "manual", "technician": "Kim"},
            headers=headers,
        )
        assert r.status_code == 200, r.text
        for bad in (None, 3, ["a"]):
            r = c.post(
                f"/api/pens/{pen['pid']}/calibration/answer",
                json={"id": 1, "answer": bad},
                headers=headers,
            )
            assert r.status_code == 400 and "must be the text typed" in r.json()["error"], r.text
        c.post(f"/api/pens/{pen['pid']}/calibration/abort", json={}, headers=headers)


@pytest.mark.parametrize("technician", ["", "   ", None])
def test_a_calibration_needs_a_technician_name(technician: str | None) -> None:
    """Issue 16 finding 12: without logins an empty name was recorded as 'local'."""
    with _client() as c:
        token = _csrf(c.get("/pens").text)
        headers = {"X-CSRF-Token": token}
        pen = c.post("/api/pens", json={"url": "sim://?seed=82"}, headers=headers).json()
        r = c.post(
            f"/api/pens/{pen['pid']}/calibration",
            json={"procedure": "depth", "gauge": "sim", "technician": technician},
            headers=headers,
        )
        assert r.status_code == 400 and "technician's name is empty" in r.json()["error"]
        assert c.get(f"/api/pens/{pen['pid']}").json()["calibration"] is None
