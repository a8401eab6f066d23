"""Helpers for the station's browser tests: the bench station as users run it,
``micropen station`` (the installed command, a subprocess on a free loopback port, on the
built-in simulator), driven by Debian's chromium through chromium-driver and selenium,
headless.

Every wait is bounded and fails loudly (``wait_for``); nothing sleeps. Screenshots of the main
pages go to ``$MICROPEN_ARTIFACTS/station`` (default ``tests/.artifacts/station``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[2]
VENDOR = Path(__file__).resolve().parent / "vendor"
START_TIMEOUT_S = 30.0
WAIT_S = 20.0  # the longest any page condition may take (a whole sim calibration is ~2 s)
T = TypeVar("T")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or (
    "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None
)


def artifacts_dir() -> Path:
    folder = Path(os.environ.get("MICROPEN_ARTIFACTS", ROOT / "tests" / ".artifacts")) / "station"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _micropen() -> list[str]:
    exe = Path(sys.executable).with_name("micropen")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "micropen.tools.entry"]


class StationProcess:
    """``micropen station --port 0 --json`` in its own MICROPEN_HOME; ended by its pid."""

    def __init__(self, home: Path, *extra: str) -> None:
        self.home = home
        env = {**os.environ, "MICROPEN_HOME": str(home), "PYTHONUNBUFFERED": "1"}
        env.pop("MICROPEN_MQTT", None)
        home.mkdir(parents=True, exist_ok=True)
        self.stderr = (home / "station.err").open("w+b")
        self.proc = subprocess.Popen(
            [*_micropen(), "station", "--port", "0", "--json", *extra],
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=env,
        )
        line = self._first_line()
        info = json.loads(line)
        self.url: str = info["url"].rstrip("/")
        self.info = info

    def _first_line(self) -> bytes:
        """The JSON line it prints once it listens, within START_TIMEOUT_S, or fail."""
        assert self.proc.stdout is not None
        result: list[bytes] = []
        reader = threading.Thread(target=lambda: result.append(self.proc.stdout.readline()))  # type: ignore[union-attr]
        reader.start()
        reader.join(START_TIMEOUT_S)
        if not result or not result[0]:
            self.stop()
            raise AssertionError(
                f"micropen station did not announce its URL within {START_TIMEOUT_S} s; "
                f"stderr: {self.errors()}"
            )
        return result[0]

    def errors(self) -> str:
        self.stderr.flush()
        return (self.home / "station.err").read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise AssertionError(
                    "micropen station did not end within 15 s of SIGTERM"
                ) from None


def make_driver(downloads: Path) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM or ""
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1000", "--no-first-run", "--disable-extensions",
                "--force-prefers-reduced-motion"):  # fmt: skip
        options.add_argument(arg)
    options.add_experimental_option(
        "prefs",
        {
            "download.default_directory": str(downloads),
            "download.prompt_for_download": False,
            "safebrowsing.enabled": False,
        },
    )
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER or "chromedriver"), options=options)
    driver.set_page_load_timeout(WAIT_S)
    driver.set_script_timeout(WAIT_S)
    return driver


def wait_for(driver: Any, condition: Callable[[Any], T], what: str, timeout: float = WAIT_S) -> T:
    """WebDriverWait, failing with what was awaited and the page's state."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)
    except TimeoutException:
        body = driver.find_element("tag name", "body").text[-1500:]
        raise AssertionError(
            f"timed out after {timeout} s waiting for {what}; page:\n{body}"
        ) from None


def by_id(driver: Any, element_id: str) -> Any:
    return driver.find_element("id", element_id)


def axe_violations(driver: Any) -> list[dict[str, Any]]:
    """axe-core (vendored) run in the page: its violations of serious or critical impact."""
    driver.execute_script((VENDOR / "axe.min.js").read_text(encoding="utf-8"))
    result = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']})"
        ".then(r => done(r.violations)).catch(e => done([{id: 'axe-error', impact: 'critical',"
        " help: String(e), nodes: []}]));"
    )
    return [v for v in result if v.get("impact") in ("serious", "critical")]
