"""Where micropen keeps this user's records and settings — one answer for every store.

``$MICROPEN_HOME`` overrides both folders (records and settings then live together, which is
what a test, a portable bench stick or a second technician account wants). Otherwise the
platform's per-user folders from ``platformdirs``: on Linux ``~/.local/share/micropen`` for
records and ``~/.config/micropen`` for settings (XDG variables honoured), on macOS
``~/Library/Application Support/micropen``, on Windows ``%LOCALAPPDATA%\\micropen``.

Nothing here creates a folder: a command that only reads must leave no trace on the disk
(a mistyped path must not turn into an empty database). Writers create what they write into.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import platformdirs

__all__ = [
    "APP",
    "TREATMENT_LOG_FILE",
    "calibration_db",
    "certificates_dir",
    "config_dir",
    "crash_dir",
    "data_dir",
    "fleet_outbox_dir",
    "keystore_file",
    "station_file",
    "treatment_log",
]

APP = "micropen"
TREATMENT_LOG_FILE = "treatment.sqlite"
CALIBRATION_DB_FILE = "calibration.sqlite"


def _home(env: Mapping[str, str] | None) -> Path | None:
    value = (os.environ if env is None else env).get("MICROPEN_HOME")
    return Path(value).expanduser() if value else None


def data_dir(env: Mapping[str, str] | None = None) -> Path:
    """Records: treatment log, calibration database, certificates, keystore, fleet outbox."""
    home = _home(env)
    if home is not None:
        return home
    return Path(platformdirs.user_data_dir(APP, appauthor=False, roaming=False))


def config_dir(env: Mapping[str, str] | None = None) -> Path:
    """Settings: the station file (the issuing lab named on certificates)."""
    home = _home(env)
    if home is not None:
        return home
    return Path(platformdirs.user_config_dir(APP, appauthor=False, roaming=False))


def treatment_log(env: Mapping[str, str] | None = None) -> Path:
    return data_dir(env) / TREATMENT_LOG_FILE


def calibration_db(env: Mapping[str, str] | None = None) -> Path:
    return data_dir(env) / CALIBRATION_DB_FILE


def certificates_dir(env: Mapping[str, str] | None = None) -> Path:
    """Every command that writes a certificate writes it here unless ``--out`` says otherwise."""
    return data_dir(env) / "certificates"


def keystore_file(env: Mapping[str, str] | None = None) -> Path:
    return data_dir(env) / "pairings.json"


def fleet_outbox_dir(env: Mapping[str, str] | None = None) -> Path:
    return data_dir(env) / "fleet"


def crash_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where the command line writes the details of an unexpected error (one file each)."""
    return data_dir(env) / "crash-reports"


def station_file(env: Mapping[str, str] | None = None) -> Path:
    """The bench station's identity (issuing lab, address, accreditation) for certificates."""
    return config_dir(env) / "station.toml"
