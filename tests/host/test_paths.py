"""Where records and settings live: one rule (host/paths.py) for every store, no side effects."""

from __future__ import annotations

import sys
from pathlib import Path

import platformdirs
import pytest

from micropen.host import paths
from micropen.host.calibration.records import default_db_path
from micropen.host.pairing import HostKeys
from micropen.host.treatment_log import TreatmentLog


def test_micropen_home_holds_records_and_settings(tmp_path: Path) -> None:
    env = {"MICROPEN_HOME": str(tmp_path / "home")}
    assert paths.data_dir(env) == tmp_path / "home"
    assert paths.config_dir(env) == tmp_path / "home"
    assert paths.treatment_log(env) == tmp_path / "home" / "treatment.sqlite"
    assert paths.calibration_db(env) == tmp_path / "home" / "calibration.sqlite"
    assert paths.certificates_dir(env) == tmp_path / "home" / "certificates"
    assert paths.station_file(env) == tmp_path / "home" / "station.toml"
    assert not (tmp_path / "home").exists()  # asking where never creates anything


def test_without_micropen_home_the_platform_folders_are_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MICROPEN_HOME", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    assert paths.data_dir() == Path(platformdirs.user_data_dir("micropen", appauthor=False))
    assert paths.config_dir() == Path(platformdirs.user_config_dir("micropen", appauthor=False))
    if sys.platform.startswith("linux"):  # the XDG rules, as a Linux bench PC sees them
        assert paths.data_dir() == tmp_path / "data" / "micropen"
        assert paths.config_dir() == tmp_path / "config" / "micropen"


def test_every_store_defaults_into_the_same_data_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MICROPEN_HOME", str(tmp_path / "h"))
    assert TreatmentLog.default_path() == tmp_path / "h" / "treatment.sqlite"
    assert default_db_path() == tmp_path / "h" / "calibration.sqlite"
    assert HostKeys(create=False).path == tmp_path / "h" / "pairings.json"
    assert not (tmp_path / "h").exists()
