"""Issue 16's journeys in a real browser against ``micropen station`` on the simulator:
connect, a calibration with a manual gauge (a typo and an implausible reading refused, the plot
filling point by point, aborted mid-way: pen idle and retracted, record incomplete), stop during
a run by keyboard alone (needles home within the pen's 50 ms), a complete calibration signed
and downloaded, and axe-core on every main page (no serious or critical violation).

Each test connects its own simulated pen (its own seed), so they do not depend on each other's
order; they share one station process and one browser per worker."""

from __future__ import annotations

import json
import re
import shutil
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from _station import StationProcess, artifacts_dir, axe_violations, by_id, wait_for

from micropen.host.calibration.signing import verify_certificate

pytestmark = pytest.mark.slow

RETRACT_LIMIT_MS = 50  # pen-spec: needles home within 50 ms of a stop
HOME_MM = 0.010  # a measured depth at or below 10 µm reads "retracted"
MANUAL_IDENTITY = [
    ("manufacturer", "Mitutoyo"),
    ("model", "543-390B"),
    ("serial number", "DG-4711"),
    ("calibration due date", "2031-01-31"),
    ("calibration certificate number", "C-2026-117"),
    ("calibrated by", "Bench metrology lab"),
    ("calibrated on", "2026-06-01"),
    ("expanded uncertainty", "0.003"),
    ("coverage factor", ""),  # empty: the default k = 2
    ("resolution", "0.001"),
]
SET_POINT = re.compile(r"set point ([0-9.]+) mm")


def api_get(station: StationProcess, path: str) -> Any:
    """A read of the station's JSON API (local mode: no login), for checking the pen."""
    with urllib.request.urlopen(station.url + path, timeout=10) as response:
        return json.loads(response.read())


def shot(driver: Any, name: str) -> None:
    """The whole page (not only the window), through the DevTools protocol."""
    import base64

    width, height = driver.execute_script(
        "return [document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
    )
    clip = {"x": 0, "y": 0, "width": width, "height": min(height, 4000), "scale": 1}
    data = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    (artifacts_dir() / f"station-{name}.png").write_bytes(base64.b64decode(data["data"]))


def connect(driver: Any, station: StationProcess, url: str) -> str:
    driver.get(station.url + "/pens")
    field = by_id(driver, "pen-url")
    field.clear()
    field.send_keys(url)
    by_id(driver, "connect").click()
    wait_for(
        driver, lambda d: re.search(r"/pens/p[0-9a-f]+$", d.current_url), f"the live view of {url}"
    )
    pid = driver.current_url.rsplit("/", 1)[1]
    wait_for(
        driver, lambda d: by_id(d, "v-depth").text not in ("—", ""), "live telemetry on the page"
    )
    return pid


def start_calibration(
    driver: Any, station: StationProcess, pid: str, *, gauge: str, technician: str
) -> None:
    driver.get(f"{station.url}/pens/{pid}/calibrate")
    driver.find_element("css selector", 'input[name="procedure"][value="depth"]').click()
    from selenium.webdriver.support.ui import Select

    Select(by_id(driver, "gauge")).select_by_value(gauge)
    readings = by_id(driver, "readings")
    readings.clear()
    readings.send_keys("2")
    by_id(driver, "technician").send_keys(technician)
    by_id(driver, "cal-start").click()


class Prompts:
    """Answers the procedure's questions as they appear on the page, one at a time."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver
        self.last: str | None = None

    def next_question(self) -> str:
        def fresh(d: Any) -> str | None:
            box = by_id(d, "prompt-box")
            pid = box.get_attribute("data-prompt-id")
            if box.is_displayed() and pid and pid != self.last:
                return str(pid)
            return None

        self.last = wait_for(self.driver, fresh, f"a question after #{self.last}")
        return str(by_id(self.driver, "prompt-question").text)

    def answer(self, text: str) -> None:
        from selenium.webdriver.common.keys import Keys

        field = by_id(self.driver, "prompt-answer")
        field.clear()
        field.send_keys(text, Keys.ENTER)

    def identity(self) -> None:
        for expected, text in MANUAL_IDENTITY:
            question = self.next_question()
            assert expected in question, f"expected a question about {expected}, got {question!r}"
            self.answer(text)

    def reading(self) -> float:
        """The next reading question's set point (mm)."""
        question = self.next_question()
        found = SET_POINT.search(question)
        assert found, f"expected a reading question, got {question!r}"
        return float(found.group(1))


def gauge_reading(set_mm: float) -> str:
    """What the technician reads off the dial: the pen 3 % deep plus 10 µm."""
    return f"{set_mm * 1.03 + 0.010:.3f}"


def plotted(driver: Any, svg_id: str) -> int:
    return len(driver.find_elements("css selector", f"#{svg_id} .point"))


def test_manual_gauge_refuses_a_typo_fills_the_plot_and_aborts_safely(
    driver: Any, station: StationProcess
) -> None:
    pid = connect(driver, station, "sim://?seed=21")
    start_calibration(driver, station, pid, gauge="manual", technician="Tess Tech")
    prompts = Prompts(driver)
    prompts.identity()

    set_point = prompts.reading()
    prompts.answer("0,25x")  # a typo: refused, asked again with the reason
    question = prompts.next_question()
    assert "is not a number" in question and f"set point {set_point:g} mm" in question
    prompts.answer("9")  # a number, but no correctable pen shows 9 mm at 0.25 mm
    question = prompts.next_question()
    assert "outside the plausible" in question
    prompts.answer(gauge_reading(set_point))

    for n in range(1, 4):  # three points, two readings each: the plot fills one by one
        if n > 1:
            prompts.answer(gauge_reading(prompts.reading()))
        prompts.answer(gauge_reading(prompts.reading()))
        wait_for(driver, lambda d, n=n: plotted(d, "plot-depth") == n, f"point {n} on the plot")
        assert by_id(driver, "plot-depth").get_attribute("data-points") == str(n)
    prompts.reading()  # the pen is at the fourth set point, waiting for a reading
    shot(driver, "calibrate-manual")

    by_id(driver, "cal-abort").click()
    wait_for(driver, lambda d: by_id(d, "cal-state").text == "aborted", "the job aborted")
    result = wait_for(
        driver,
        lambda d: by_id(d, "cal-result").get_attribute("data-record") or None,
        "the aborted job's record",
    )
    assert by_id(driver, "cal-result").get_attribute("data-outcome") == "incomplete"

    pen = api_get(station, f"/api/pens/{pid}")
    assert pen["state"] == "idle"
    assert pen["live"]["depth_mm"] <= HOME_MM
    assert pen["calibration"]["state"] == "aborted"
    driver.get(station.url + "/records")
    row = driver.find_element("css selector", f'tr[data-record="{result}"]')
    assert "incomplete" in row.text


def test_stop_during_a_run_by_keyboard_alone(driver: Any, station: StationProcess) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    pid = connect(driver, station, "sim://?seed=22")
    start_calibration(driver, station, pid, gauge="manual", technician="Kim Keys")
    prompts = Prompts(driver)
    prompts.identity()
    prompts.reading()  # the bench run is going: the pen holds the set point for the gauge

    driver.get(f"{station.url}/pens/{pid}")
    wait_for(driver, lambda d: by_id(d, "v-state").text.lower() == "running", "the pen running")
    for _ in range(30):  # Tab from the top of the page until the stop button has the focus
        if driver.switch_to.active_element.get_attribute("id") == "stop":
            break
        ActionChains(driver).send_keys(Keys.TAB).perform()
    assert driver.switch_to.active_element.get_attribute("id") == "stop", "stop not reachable"
    ActionChains(driver).send_keys(Keys.ENTER).perform()

    out = wait_for(
        driver,
        lambda d: (
            by_id(d, "stop-result") if by_id(d, "stop-result").get_attribute("data-state") else None
        ),
        "the stop's result",
    )
    assert out.get_attribute("data-state") == "idle"
    assert out.get_attribute("data-via") == "feed"  # on the open WebSocket: no new connection
    retract = out.get_attribute("data-retract-ms")
    assert retract, f"no retract time measured: {out.text}"
    assert float(retract) <= RETRACT_LIMIT_MS, out.text
    assert "calibration aborted" in out.text
    shot(driver, "pen-stopped")

    def aborted(_: Any) -> Any:
        pen = api_get(station, f"/api/pens/{pid}")
        return pen if pen["calibration"]["state"] == "aborted" else None

    pen = wait_for(driver, aborted, "the calibration aborted by the stop")
    assert pen["state"] == "idle" and pen["live"]["depth_mm"] <= HOME_MM
    assert pen["calibration"]["outcome"] == "incomplete" and pen["calibration"]["record_id"]


def test_stop_by_space_on_an_idle_pen(driver: Any, station: StationProcess) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    pid = connect(driver, station, "sim://?seed=24")
    driver.get(f"{station.url}/pens/{pid}")
    for _ in range(30):
        if driver.switch_to.active_element.get_attribute("id") == "stop":
            break
        ActionChains(driver).send_keys(Keys.TAB).perform()
    assert driver.switch_to.active_element.get_attribute("id") == "stop", "stop not reachable"
    ActionChains(driver).send_keys(Keys.SPACE).perform()
    wait_for(
        driver,
        lambda d: by_id(d, "stop-result").get_attribute("data-state") == "idle",
        "the stop acknowledged",
    )


def test_complete_calibration_sign_and_download(driver: Any, station: StationProcess) -> None:
    pid = connect(driver, station, "sim://?seed=23")
    start_calibration(driver, station, pid, gauge="sim", technician="Sam Sim")
    wait_for(driver, lambda d: by_id(d, "cal-state").text == "done", "the calibration done")
    assert by_id(driver, "cal-result").get_attribute("data-outcome") == "pass"
    assert plotted(driver, "plot-depth") == 12  # six set points, as-found and as-left
    shot(driver, "calibrate")

    by_id(driver, "record-link").click()
    wait_for(driver, lambda d: "/records/" in d.current_url, "the record's page")
    by_id(driver, "reviewed").click()
    by_id(driver, "sign").click()
    wait_for(driver, lambda d: "Rita Reviewer" in by_id(d, "signed").text, "the signature")
    shot(driver, "record")

    downloads: Path = driver.downloads
    for old in downloads.iterdir():
        old.unlink()
    by_id(driver, "download-pdf").click()
    pdf = wait_for(
        driver,
        lambda d: next(
            (p for p in downloads.glob("*.pdf") if p.stat().st_size > 0), None
        ),  # Chrome writes *.crdownload first and renames when complete
        "the certificate PDF in the downloads folder",
    )
    check = verify_certificate(pdf)
    assert check.ok, check.message()
    assert "Rita Reviewer" in check.message()
    shutil.copy(pdf, artifacts_dir() / "station-certificate.pdf")
    by_id(driver, "download-json").click()
    record = wait_for(
        driver,
        lambda d: next((p for p in downloads.glob("*.json") if p.stat().st_size > 0), None),
        "the record JSON in the downloads folder",
    )
    assert json.loads(record.read_text())["outcome"] == "pass"


def test_every_main_page_passes_axe_and_is_captured(driver: Any, station: StationProcess) -> None:
    pid = connect(driver, station, "sim://?seed=25")
    start_calibration(driver, station, pid, gauge="sim", technician="Ada Axe")
    wait_for(driver, lambda d: by_id(d, "cal-state").text == "done", "the calibration done")
    record = by_id(driver, "cal-result").get_attribute("data-record")
    sessions = api_session_ids(driver, station)
    pages = {
        "pens": "/pens",
        "pen": f"/pens/{pid}",
        "calibrate-done": f"/pens/{pid}/calibrate",
        "records": "/records",
        "record-unsigned": f"/records/{record}",
        "log": "/log",
        "session": f"/log/{sessions[0]}",
        "fleet": "/fleet",
    }
    problems = {}
    for name, path in pages.items():
        driver.get(station.url + path)
        wait_for(driver, lambda d: d.execute_script("return document.readyState") == "complete",
                 f"{path} loaded")  # fmt: skip
        if name == "pen":
            wait_for(driver, lambda d: by_id(d, "v-depth").text != "—", "live values")
        found = axe_violations(driver)
        if found:
            problems[path] = [
                f"{v['id']} ({v['impact']}): {v['help']} at "
                f"{[n.get('target') for n in v.get('nodes', [])][:3]}"
                for v in found
            ]
        shot(driver, name)
    assert not problems, json.dumps(problems, indent=1)


def api_session_ids(driver: Any, station: StationProcess) -> list[int]:
    driver.get(station.url + "/log")
    links = driver.find_elements("css selector", "#sessions tbody th a")
    ids = [int(a.text.lstrip("#")) for a in links]
    assert ids, "the treatment log lists no session although pens were connected"
    return ids
