"""Who may do what at the station, without a browser (Starlette's in-process TestClient: no
socket): logins, the CSRF token on every state-changing request, roles, the Host check of a
loopback station, and ``micropen station user …`` / the binding rule on the command line."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from micropen.host.calibration import load_station
from micropen.tools.cli import app as cli_app
from micropen.tools.station.app import StationConfig, build_app
from micropen.tools.station.auth import UserStore

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def users_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three users, hashed once (Argon2 is slow on purpose)."""
    store = UserStore(tmp_path_factory.mktemp("users") / "users.json")
    store.add("tina", "technician", PASSWORD)
    store.add("rex", "reviewer", PASSWORD)
    store.add("vic", "viewer", PASSWORD)
    return store.path


@pytest.fixture
def users(users_file: Path, tmp_path: Path) -> UserStore:
    """Each test's own copy (a test may remove a user)."""
    copy = tmp_path / "users.json"
    shutil.copy2(users_file, copy)
    return UserStore(copy)


def client(
    users: UserStore, *, login: bool = True, base: str = "http://testserver", mqtt: Any = None
) -> TestClient:
    config = StationConfig(
        mqtt=mqtt,
        host="0.0.0.0" if login else "127.0.0.1",
        login_required=login,
        secret="test-secret",
        users=users,
        station=load_station(),
        log=False,
    )
    return TestClient(build_app(config), base_url=base, follow_redirects=False)


def log_in(c: TestClient, name: str) -> str:
    page = c.get("/login")
    token = _csrf(page.text)
    r = c.post("/login", json={"user": name, "password": PASSWORD}, headers={"X-CSRF-Token": token})
    assert r.status_code == 200, r.text
    return str(r.json()["csrf"])


def _csrf(html: str) -> str:
    marker = 'name="csrf-token" content="'
    start = html.index(marker) + len(marker)
    return html[start : html.index('"', start)]


def post(c: TestClient, path: str, token: str | None, body: Any = None) -> Any:
    headers = {"X-CSRF-Token": token} if token else {}
    return c.post(path, json=body or {}, headers=headers)


def test_beyond_loopback_every_page_needs_a_login(users: UserStore) -> None:
    with client(users) as c:
        r = c.get("/pens")
        assert r.status_code == 303 and r.headers["location"].startswith("/login")
        assert c.get("/api/fleet").status_code == 401
        assert c.get("/static/station.css").status_code == 200  # no secrets there


def test_a_wrong_password_is_refused(users: UserStore) -> None:
    with client(users) as c:
        token = _csrf(c.get("/login").text)
        wrong = {"user": "tina", "password": "guess"}
        r = c.post("/login", json=wrong, headers={"X-CSRF-Token": token})
        assert r.status_code == 401
        assert c.get("/pens").status_code == 303


def test_state_changing_requests_need_the_sessions_csrf_token(users: UserStore) -> None:
    with client(users) as c:
        # even the login: a page elsewhere must not log the bench PC into its own account
        r = c.post("/login", json={"user": "tina", "password": PASSWORD})
        assert r.status_code == 403 and "CSRF" in r.json()["error"]
        token = log_in(c, "tina")
        assert post(c, "/api/pens/p1/stop", None).status_code == 403
        assert post(c, "/api/pens/p1/stop", "forged").status_code == 403
        r = post(c, "/api/pens/p1/stop", token)  # right token: reaches the handler
        assert r.status_code == 400 and "no pen 'p1'" in r.json()["error"]


def test_roles(users: UserStore) -> None:
    with client(users) as c:
        token = log_in(c, "vic")
        r = post(c, "/api/pens", token, {"url": "sim://?seed=3"})
        assert r.status_code == 403 and "may not operate" in r.json()["error"]
        r = post(c, "/api/records/abc123/sign", token)
        assert r.status_code == 403 and "may not sign" in r.json()["error"]
        # everyone may stop: the request gets through to the hub (no such pen here)
        assert post(c, "/api/pens/p9/stop", token).status_code == 400
    with client(users) as c:
        token = log_in(c, "rex")
        assert post(c, "/api/pens", token, {"url": "sim://?seed=3"}).status_code == 403


def test_a_technician_connects_and_stops_a_pen(users: UserStore) -> None:
    with client(users) as c:
        token = log_in(c, "tina")
        r = post(c, "/api/pens", token, {"url": "sim://?seed=3"})
        assert r.status_code == 200, r.text
        pid = r.json()["pid"]
        stop = post(c, f"/api/pens/{pid}/stop", token).json()
        assert stop["error"] is None and stop["state"] == "idle"
        assert c.get(f"/api/pens/{pid}").json()["serial"] == r.json()["serial"]


def test_a_stop_on_the_feed_needs_the_csrf_token_too(users: UserStore) -> None:
    with client(users) as c:
        token = log_in(c, "tina")
        pid = post(c, "/api/pens", token, {"url": "sim://?seed=4"}).json()["pid"]
        with c.websocket_connect(f"/ws/pens/{pid}") as ws:
            assert ws.receive_json()["type"] == "snapshot"
            ws.send_json({"type": "stop", "csrf": "forged"})
            assert _next(ws, {"stop_refused"})["type"] == "stop_refused"
            ws.send_json({"type": "stop", "csrf": token})
            stopped = _next(ws, {"stopped"})
            assert stopped["error"] is None and stopped["state"] == "idle"


def _next(ws: Any, kinds: set[str], most: int = 2000) -> Any:
    """The next event of these kinds (telemetry goes by meanwhile), within ``most`` events."""
    for _ in range(most):
        event = ws.receive_json()
        if event["type"] in kinds:
            return event
    raise AssertionError(f"no {kinds} event within {most} events")


def test_a_removed_user_is_logged_out_at_the_next_request(users: UserStore) -> None:
    with client(users) as c:
        log_in(c, "vic")
        assert c.get("/pens").status_code == 200
        users.remove("vic")
        assert c.get("/pens").status_code == 303


def test_the_pen_feed_needs_a_login(users: UserStore) -> None:
    from starlette.websockets import WebSocketDisconnect

    with client(users) as c, pytest.raises(WebSocketDisconnect), c.websocket_connect("/ws/fleet"):
        pass


def test_a_loopback_station_answers_only_to_its_own_host_names(users: UserStore) -> None:
    """No DNS rebinding: a page of evil.example resolving to 127.0.0.1 is refused."""
    with client(users, login=False, base="http://127.0.0.1:8470") as c:
        assert c.get("/pens").status_code == 200
        assert c.get("/pens", headers={"host": "evil.example"}).status_code == 400


def test_passwords_are_argon2_hashes_in_an_owner_only_file(users: UserStore) -> None:
    text = users.path.read_text()
    assert PASSWORD not in text
    assert json.loads(text)["users"]["tina"]["hash"].startswith("$argon2id$")
    assert stat.S_IMODE(users.path.stat().st_mode) == 0o600
    assert users.authenticate("tina", PASSWORD) is not None
    assert users.authenticate("tina", PASSWORD + "x") is None
    assert users.authenticate("nobody", PASSWORD) is None


def test_user_add_list_remove_on_the_command_line(tmp_path: Path) -> None:
    runner = CliRunner()
    secret = tmp_path / "pw"
    secret.write_text(PASSWORD + "\n")
    r = runner.invoke(
        cli_app,
        ["station", "user", "add", "ann", "--role", "reviewer", "--password-file", str(secret),
         "--json"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"role": "reviewer", "user": "ann"}
    r = runner.invoke(cli_app, ["station", "user", "list", "--json"])
    assert json.loads(r.stdout) == {"users": [{"role": "reviewer", "user": "ann"}]}
    r = runner.invoke(cli_app, ["station", "user", "remove", "ann", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout) == {"removed": "ann"}


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--role", "admin"], "is not one of technician, reviewer, viewer"),
        (["--role", "viewer", "--password-file", "short"], "at least 8 are needed"),
    ],
)
def test_user_add_bad_input_exits_2_with_one_line(
    tmp_path: Path, args: list[str], words: str
) -> None:
    (tmp_path / "short").write_text("abc\n")
    args = [str(tmp_path / a) if a == "short" else a for a in args]
    r = CliRunner().invoke(cli_app, ["station", "user", "add", "bo", *args])
    assert r.exit_code == 2
    assert words in " ".join(r.output.split())


def test_listening_beyond_loopback_without_users_is_refused() -> None:
    r = CliRunner().invoke(cli_app, ["station", "--host", "0.0.0.0", "--port", "0"])
    assert r.exit_code == 2
    text = " ".join(r.output.split())
    assert "needs logins" in text and "micropen station user add" in text


def test_a_page_names_the_problem_a_script_gets_json(users: UserStore) -> None:
    with client(users, login=False, base="http://127.0.0.1:8470") as c:
        page = c.get("/pens/p9")
        assert page.status_code == 400 and "text/html" in page.headers["content-type"]
        assert "no pen &#39;p9&#39; is connected" in page.text
        api = c.get("/api/pens/p9")
        assert api.status_code == 400 and "connect it on the pens page" in api.json()["error"]


def test_an_unreachable_broker_is_named_on_the_fleet_feed(users: UserStore) -> None:
    from micropen.host.fleet.mosquitto import free_port

    url = f"mqtt://127.0.0.1:{free_port()}"  # nothing listens there
    with client(users, mqtt=url) as c:
        log_in(c, "vic")
        with c.websocket_connect("/ws/fleet") as ws:
            snapshot = ws.receive_json()  # the error, if it came first; else the next event
            error = snapshot["error"] or _next(ws, {"error"}, most=5)["error"]
    assert url in error and "trying again" in error
