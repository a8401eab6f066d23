"""Fixtures of the station's browser tests (helpers in _station.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _station import CHROMEDRIVER, CHROMIUM, StationProcess, make_driver


@pytest.fixture(scope="module")
def browser_ready() -> None:
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip(
            "chromium and chromium-driver are not installed (apt-get install chromium "
            "chromium-driver; .ci/run installs them when run as root)"
        )


@pytest.fixture(scope="module")
def station_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("station-home")


@pytest.fixture(scope="module")
def signer_files(station_home: Path) -> tuple[Path, Path]:
    from micropen.host.calibration.signing import create_signer

    return create_signer(station_home / "signer", "Rita Reviewer", "Quality reviewer", "Bench lab")


@pytest.fixture(scope="module")
def station(
    browser_ready: None, station_home: Path, signer_files: tuple[Path, Path]
) -> Iterator[StationProcess]:
    key, cert = signer_files
    proc = StationProcess(station_home, "--sign-key", str(key), "--sign-cert", str(cert))
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def driver(browser_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    downloads = tmp_path_factory.mktemp("downloads")
    chrome = make_driver(downloads)
    chrome.downloads = downloads
    try:
        yield chrome
    finally:
        chrome.quit()
