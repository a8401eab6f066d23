"""Issue 16, finding 3: wrong-password logins are throttled per client address and per user
name (after 5 failures: 429 with Retry-After, the wait doubling), and password checks run one at
a time with a bounded queue, so a flood of logins cannot starve the event loop that serves the
pens. In-process (Starlette's TestClient, httpx's ASGI transport), no browser."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from micropen.host.calibration import load_station
from micropen.tools.station.app import StationConfig, build_app
from micropen.tools.station.auth import LoginThrottle, UserStore

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def users_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = UserStore(tmp_path_factory.mktemp("users") / "users.json")
    store.add("tina", "technician", PASSWORD)
    return store.path


def _config(users_file: Path) -> StationConfig:
    return StationConfig(
        host="0.0.0.0",
        login_required=True,
        secret="test-secret",
        users=UserStore(users_file),
        station=load_station(),
        log=False,
    )


def _csrf(html: str) -> str:
    marker = 'name="csrf-token" content="'
    start = html.index(marker) + len(marker)
    return html[start : html.index('"', start)]


def _login(c: Any, token: str, user: str, password: str) -> Any:
    return c.post(
        "/login", json={"user": user, "password": password}, headers={"X-CSRF-Token": token}
    )


def test_the_throttle_waits_after_five_failures_doubling() -> None:
    now = [1000.0]
    throttle = LoginThrottle(clock=lambda: now[0])
    for _ in range(5):  # five wrong passwords are free
        assert throttle.retry_after("10.0.0.1", "tina") == 0
        throttle.failed("10.0.0.1", "tina")
    assert throttle.retry_after("10.0.0.1", "tina") == pytest.approx(1.0)
    assert throttle.retry_after("10.0.0.2", "tina") == pytest.approx(1.0)  # per name
    assert throttle.retry_after("10.0.0.1", "rex") == pytest.approx(1.0)  # per address
    assert throttle.retry_after("10.0.0.2", "rex") == 0
    now[0] += 1.0
    throttle.failed("10.0.0.1", "tina")
    assert throttle.retry_after("10.0.0.1", "tina") == pytest.approx(2.0)
    for _ in range(20):
        throttle.failed("10.0.0.1", "tina")
    assert throttle.retry_after("10.0.0.1", "tina") == pytest.approx(300.0)  # at most 5 min
    throttle.succeeded("10.0.0.1", "tina")
    assert throttle.retry_after("10.0.0.1", "tina") == 0


def test_wrong_passwords_get_429_with_retry_after(users_file: Path) -> None:
    with TestClient(build_app(_config(users_file)), follow_redirects=False) as c:
        token = _csrf(c.get("/login").text)
        for _ in range(5):
            assert _login(c, token, "nobody", "guess").status_code == 401
        r = _login(c, token, "nobody", "guess")
        assert r.status_code == 429, r.text
        assert int(r.headers["Retry-After"]) >= 1
        assert "too many failed logins" in r.json()["error"] and "try again in" in r.json()["error"]
        # the right password from the throttled address waits too (no guessing by retrying)
        assert _login(c, token, "tina", PASSWORD).status_code == 429
    other = TestClient(
        build_app(_config(users_file)), follow_redirects=False, client=("10.9.9.9", 5000)
    )
    with other as c:  # a fresh station: another address logs in
        token = _csrf(c.get("/login").text)
        assert _login(c, token, "tina", PASSWORD).status_code == 200


def test_password_checks_run_one_at_a_time_and_a_flood_is_refused(
    users_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(users_file)
    app = build_app(config)
    real = config.users.authenticate
    busy = [0, 0]  # in flight now, most at once
    lock = threading.Lock()

    def counting(name: str, password: str) -> Any:
        with lock:
            busy[0] += 1
            busy[1] = max(busy[1], busy[0])
        try:
            return real(name, password)
        finally:
            with lock:
                busy[0] -= 1

    monkeypatch.setattr(config.users, "authenticate", counting)

    async def flood() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://station") as c:
            token = _csrf((await c.get("/login")).text)
            # 60 logins at once, each under its own name (the per-name throttle never bites)
            replies = await asyncio.gather(*(_async_login(c, token, f"user{i}") for i in range(60)))
        return [r.status_code for r in replies]

    async def _async_login(c: httpx.AsyncClient, token: str, user: str) -> httpx.Response:
        return await c.post(
            "/login", json={"user": user, "password": "guess"}, headers={"X-CSRF-Token": token}
        )

    statuses = asyncio.run(flood())
    assert busy[1] == 1, f"{busy[1]} password checks ran at once"
    assert set(statuses) <= {401, 429}, statuses
    assert statuses.count(429) >= 60 - 8 - 5, statuses  # 8 may wait; 5 failures are free
