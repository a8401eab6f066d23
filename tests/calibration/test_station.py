"""The station file: the template parses into what certificates need; a missing file is
"not configured"; a typo, a wrong type or an incomplete register entry is refused by name."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest

from micropen.host import paths
from micropen.host.calibration import DecisionRule, RuleKind, load_station
from micropen.host.calibration.station import TEMPLATE
from micropen.host.errors import InvalidInput


def test_the_template_is_a_complete_station(tmp_path: Path) -> None:
    path = tmp_path / "station.toml"
    path.write_text(TEMPLATE)
    station = load_station(path)
    assert station.found and station.configured
    issuer = station.issuer()
    assert (issuer.lab, issuer.location) == ("Example Calibration Laboratory", "Room 1.07, bench 2")
    assert issuer.accreditation.startswith("ISO/IEC 17025")
    assert (issuer.signatory, issuer.signatory_role) == (
        "Dr. A. Reviewer",
        "Head of calibration laboratory",
    )
    assert station.issuer("B. Signer", "Deputy").signatory_role == "Deputy"  # a key's wins
    assert station.owner_text() == "Example Clinic, 2 Clinic Road, 12345 Town, Country"
    assert station.certificate_prefix == "EX-B2"
    assert station.decision_rule == DecisionRule(RuleKind.NON_BINARY, 1.0)
    gauge = station.register["A123"]
    assert gauge.lookup("543-790").certificate == "DKD-K-12345-2025-0042"
    assert gauge.calibration.calibrated_on == date(2025, 3, 1)
    assert gauge.calibration.expanded == 0.002 and gauge.calibration.coverage_factor == 2.0
    assert station.register["T9"].calibration.expanded_relative == 0.0002


def test_a_missing_file_is_an_unconfigured_lab(tmp_path: Path) -> None:
    station = load_station(tmp_path / "none.toml")
    assert not station.found and not station.configured
    assert station.issuer().station_file == str(tmp_path / "none.toml")
    assert station.certificate_prefix == "MP" and station.decision_rule == DecisionRule()
    assert load_station().path == paths.station_file()  # $MICROPEN_HOME/station.toml


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[lab]\nnmae = 'x'\n", "unknown key(s) nmae in lab"),
        ("[labs]\nname = 'x'\n", "unknown section(s) labs"),
        ("[lab]\nname = 3\n", "lab.name = 3 must be text"),
        ("[decision_rule]\nrule = 'strict'\n", "'strict' is not one of"),
        ("[decision_rule]\nguard_band = 9\n", "guard band factor 9.0"),
        ("[lab\nname = 'x'\n", "is not valid TOML"),
        ("[[instrument]]\nserial = 'A'\n", "instrument entry #1 lacks certificate, calibrated_on"),
        (
            "[[instrument]]\nserial='A'\ncertificate='C'\ncalibrated_on=2025-01-01\n"
            "calibrated_by='L'\nresolution=0.001\n",
            "expanded uncertainty is zero",
        ),
        (
            "[[instrument]]\nserial='A'\ncertificate='C'\ncalibrated_on='2025-01-01'\n",
            "must be a date (YYYY-MM-DD, unquoted)",
        ),
    ],
)
def test_mistakes_are_refused_naming_the_key(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "station.toml"
    path.write_text(text)
    with pytest.raises(InvalidInput, match=re.escape(words)) as info:
        load_station(path)
    assert str(path) in str(info.value)
