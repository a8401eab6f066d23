"""Logins in the browser: ``micropen station --require-login`` (the mode of a shared bench PC;
beyond loopback it is always on) sends a visitor to the login page, refuses a wrong password on
the page, lets a technician in (the calibration's technician is then the logged-in user), and
shows a viewer no connect form; the login page passes axe too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _station import StationProcess, artifacts_dir, axe_violations, by_id, wait_for
from selenium.webdriver.common.keys import Keys

from micropen.tools.station.auth import UserStore

pytestmark = pytest.mark.slow

PASSWORD = "bench password 7"


def on_pens(driver: Any) -> bool:
    who = driver.find_elements("css selector", ".who")
    return bool(driver.current_url.endswith("/pens") and who)


def log_in(driver: Any, station: StationProcess, name: str, password: str = PASSWORD) -> None:
    driver.get(station.url + "/pens")
    wait_for(driver, lambda d: "/login" in d.current_url, "the login page")
    by_id(driver, "login-user").send_keys(name)
    by_id(driver, "login-password").send_keys(password, Keys.ENTER)


def test_login_roles_and_logout(driver: Any, tmp_path: Path, _own_micropen_home: Path) -> None:
    users = UserStore()  # in this test's MICROPEN_HOME, which the station gets too
    users.add("tina", "technician", PASSWORD)
    users.add("vic", "viewer", PASSWORD)
    station = StationProcess(_own_micropen_home, "--require-login")
    try:
        assert station.info["login_required"] is True
        log_in(driver, station, "tina", "not the password")
        wait_for(driver, lambda d: "wrong password" in by_id(d, "login-error").text, "refusal")
        problems = axe_violations(driver)
        assert not problems, problems
        driver.save_screenshot(str(artifacts_dir() / "station-login.png"))

        log_in(driver, station, "tina")
        wait_for(driver, on_pens, "the pens page")
        assert "tina · technician" in driver.find_element("css selector", ".who").text
        assert by_id(driver, "connect-form").is_displayed()
        by_id(driver, "logout").click()
        wait_for(driver, lambda d: "/login" in d.current_url, "logged out")

        log_in(driver, station, "vic")
        wait_for(driver, on_pens, "the pens page")
        assert "vic · viewer" in driver.find_element("css selector", ".who").text
        assert not driver.find_elements("id", "connect-form")  # a viewer only looks
        by_id(driver, "logout").click()
        wait_for(driver, lambda d: "/login" in d.current_url, "logged out")
    finally:
        station.stop()
