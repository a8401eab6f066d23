"""The PDF certificate, read back as a reader would (pypdf's text, poppler's pixels): every
element ISO/IEC 17025 §7.8 asks of a calibration certificate is on it, on the pages it must be.
And the JSON record written beside it."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from _cal_helpers import make_record
from pypdf import PdfReader

from micropen.host.calibration import CalibrationRecord, Issuer
from micropen.host.calibration.certificate import (
    STATEMENTS,
    certificate_name,
    prepare_out_dir,
    render,
    write_certificate,
    write_json,
)
from micropen.host.errors import InvalidInput


def pages_text(path: Path) -> list[str]:
    """Each page's text, whitespace folded (a table cell may wrap)."""
    reader = PdfReader(io.BytesIO(path.read_bytes()))
    return [" ".join((page.extract_text() or "").split()) for page in reader.pages]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[CalibrationRecord, list[str]]:
    record = make_record()
    path = write_certificate(record, tmp_path_factory.mktemp("cert"))
    assert path.name == certificate_name(record, "pdf") and path.name.startswith("cal-SIM-000007-")
    assert path.read_bytes().startswith(b"%PDF-")
    return record, pages_text(path)


def test_every_page_names_the_certificate_its_page_and_the_simulation(
    certificate: tuple[CalibrationRecord, list[str]],
) -> None:
    record, pages = certificate
    assert len(pages) >= 3
    for number, text in enumerate(pages, start=1):
        assert f"Page {number} of {len(pages)}" in text
        assert f"Calibration certificate {record.certificate_number}" in text
        assert "SIMULATION" in text  # the watermark and the banner, on every page
    assert ["— End of certificate —" in page for page in pages][-1:] == [True]
    assert not any("End of certificate" in page for page in pages[:-1])


def test_identity_issue_lab_owner_method_and_conditions(
    certificate: tuple[CalibrationRecord, list[str]],
) -> None:
    record, pages = certificate
    first = pages[0]
    for expected in (
        "Calibration certificate",
        f"Certificate number {record.certificate_number}",
        "Date of issue 2025-11-26",
        "Example Calibration Laboratory",
        "1 Bench Street, Town",
        "ISO/IEC 17025 D-K-00000-01-00",
        "model MP-12 SIM, serial number SIM-000007, firmware 1.0.0",
        "Equipment owner Example Clinic, 2 Clinic Road",
        "Method MP-CAL-A test method, revision 2",
        "Date of calibration 2025-11-26 12:00–12:03 UTC",
        "Place of calibration Room 1.07 (station bench 1)",
        "Performed by A. Tech",
        "22.5 °C, measured with room thermometer read by the technician at Room 1.07",
        "SIMULATION: simulated parts: pen SIM-000007",
    ):
        assert expected in first, expected
    assert record.record_id in first


def test_instruments_traceability_results_with_u_and_units(
    certificate: tuple[CalibrationRecord, list[str]],
) -> None:
    _, pages = certificate
    text = " ".join(pages)
    for expected in (
        "DKD-K-1-2025-0042, Example Metrology",  # the gauge's own certificate and lab
        "2025-03-01",  # its calibration date
        "0.002 mm (k = 2)",
        "0.02 % of reading (k = 2)",
        "OVERDUE, used under override: loan unit, recal booked",
        "No traceability: the reference instruments or the unit are simulated",
        "Set (mm)",
        "Error ± U (mm)",
        "Set (strokes/s)",
        "Error ± U (% of set)",
        "Tolerance limit ±0.1 mm ±0.05 mm",
        "conditional pass",  # the depth as-found point at 2 mm is within U of its limit
        "set point (mm)",
        "error (mm)",
    ):
        assert expected in text, expected
    assert re.search(r"\+0\.0990 ± 0\.00\d\d conditional pass", text)  # 2 mm, in mm
    assert re.search(r"-2\.600 ± 0\.0\d\d", text)  # rate error ± U in % of set


def test_the_budget_the_rule_the_statements_and_the_signatory(
    certificate: tuple[CalibrationRecord, list[str]],
) -> None:
    _, pages = certificate
    text = " ".join(pages)
    for expected in (
        "Measurement uncertainty",
        "Welch–Satterthwaite",
        "u(rep) (µm)",
        "u(ref) (µm)",
        "u(temp) (µm)",
        "u_c (% of set)",
        "U (µm)",
        "rectangular",
        "√3 = 1.73",
        "ILAC-G8:09/2019 §4.2.3 non-binary statement with guard band, w = 1·U",
        "Depth gain (ppm) Depth offset (µm) Rate gain (ppm)",
        "0x12345678",
        "0x9ABCDEF0",
        "Needle depth: measured = 1.02800 × set +0.0500 mm",
        "Calibration performed by: A. Tech",
        "Authorised by: Dr. A. Reviewer, Head of laboratory",
        "Signature: ____",
        "Next calibration due: 2026-11-26 (interval of 365 days",
        "Annex A: individual readings",
        "0.306 0.307 0.308 (mm)",  # a point's three readings, as read
        *STATEMENTS,
    ):
        assert expected in text, expected
    assert "The results relate only to the item calibrated." in STATEMENTS
    assert any("shall not be reproduced except in full" in s for s in STATEMENTS)


def test_a_real_calibration_has_no_simulation_mark(tmp_path: Path) -> None:
    record = make_record(simulated=False)
    text = " ".join(pages_text(write_certificate(record, tmp_path)))
    assert "SIMULATION" not in text
    assert "metrologically traceable to the International System of Units (SI)" in text


def test_an_unconfigured_lab_and_signatory_are_said_plainly(tmp_path: Path) -> None:
    record = make_record(issuer=Issuer(station_file="/home/t/.config/micropen/station.toml"))
    pages = pages_text(write_certificate(record, tmp_path))
    assert all("ISSUING LABORATORY NOT CONFIGURED" in page for page in pages)
    assert "no laboratory is named in /home/t/.config/micropen/station.toml" in pages[0]
    assert "Authorised by: signatory NOT CONFIGURED" in " ".join(pages)


def test_an_incomplete_record_says_so_and_renews_nothing(tmp_path: Path) -> None:
    record = make_record(outcome="incomplete")
    record.reason = "depth as-found: gauge cable pulled"
    record.points = record.points[:3]
    record.committed, record.cal_after, record.fits = False, None, []
    text = " ".join(pages_text(write_certificate(record, tmp_path)))
    assert "INCOMPLETE" in text and "gauge cable pulled" in text
    assert "Next calibration due: not renewed" in text


def test_exporting_again_reproduces_number_issue_date_and_content(tmp_path: Path) -> None:
    record = make_record()
    first = pages_text(write_certificate(record, tmp_path / "a"))
    again = pages_text(write_certificate(CalibrationRecord.from_dict(record.to_dict()),
                                         tmp_path / "b"))  # fmt: skip
    assert first == again


def test_a_legacy_record_renders_without_uncertainty(tmp_path: Path) -> None:
    record = make_record()
    record.points = [p.__class__(**{**p.__dict__, "uncertainty": None}) for p in record.points]
    record.certificate_number = ""
    text = " ".join(pages_text(write_certificate(record, tmp_path)))
    assert "(U not evaluated)" in text and f"LEGACY-{record.record_id[:12].upper()}" in text


def test_out_folder_problems_are_bad_input(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidInput, match="is a file, not a folder"):
        prepare_out_dir(tmp_path / "file")
    with pytest.raises(InvalidInput, match="cannot create the output folder"):
        prepare_out_dir(tmp_path / "file" / "sub")
    assert prepare_out_dir(tmp_path / "new" / "deep").is_dir()


@pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="poppler-utils (pdftoppm) missing")
def test_every_page_renders(tmp_path: Path) -> None:
    """As a reader shows it (poppler): every page renders to an image with content."""
    path = tmp_path / "c.pdf"
    path.write_bytes(render(make_record(), _signatory()))
    subprocess.run(["pdftoppm", "-png", "-r", "30", str(path), str(tmp_path / "p")],
                   check=True, timeout=60)  # fmt: skip
    images = sorted(tmp_path.glob("p-*.png"))
    assert len(images) == len(PdfReader(path).pages) >= 3
    assert all(image.stat().st_size > 5000 for image in images)


def test_json_record_round_trips(tmp_path: Path) -> None:
    record = make_record(procedure="verify")
    path = write_json(record, tmp_path)
    data = json.loads(path.read_text())
    assert CalibrationRecord.from_dict(data) == record
    assert data["summary"]["outcome"] == "pass" and data["summary"]["as_left"] is None
    assert data["simulation"] is True and data["simulated_parts"] == ["pen SIM-000007"]
    assert data["points"][0]["uncertainty"]["coverage_factor"] >= 2.0
    assert data["instruments"][0]["calibration"]["certificate"] == "DKD-K-1-2025-0042"


def _signatory() -> object:
    from micropen.host.calibration.certificate import Authorisation

    return Authorisation("Dr. A. Reviewer", "Head of laboratory", electronic=False)


@pytest.mark.parametrize("serial", ["../../../../x", 'a";x=.exe;b="', "..", "", "a/b\\c\n"])
def test_a_serial_cannot_escape_the_certificate_folder(serial: str, tmp_path: Path) -> None:
    """Issue 16 finding 11: a pen reports its serial; it is not trusted as a path."""
    record = make_record(serial=serial)
    name = certificate_name(record, "pdf")
    assert re.fullmatch(
        r"cal-[A-Za-z0-9_][A-Za-z0-9_.-]*-\d{8}T\d{6}Z-[A-Za-z0-9_.-]+\.pdf", name
    ), name
    path = write_certificate(record, tmp_path / "certs")
    assert path.parent == tmp_path / "certs" and path.name == name
