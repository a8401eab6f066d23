"""The PDF certificate and the JSON record written beside it."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import shutil
import subprocess
import zlib
from pathlib import Path

from _cal_helpers import make_record

from micropen.host.calibration import CalibrationRecord
from micropen.host.calibration.certificate import certificate_name, write_certificate, write_json


def _pdf_text(data: bytes) -> bytes:
    """The PDF's bytes with every page stream decoded (reportlab: ASCII85 over Flate)."""
    out, start = [data], 0
    while (i := data.find(b"stream\n", start)) != -1:
        end = data.find(b"endstream", i)
        body = data[i + 7 : end].strip()
        with contextlib.suppress(ValueError, zlib.error):  # images and fonts are not text
            if body.endswith(b"~>"):
                body = base64.a85decode(body[:-2])
            out.append(zlib.decompress(body))
        start = end
    shown = re.findall(rb"\((.*?)(?<!\\)\) Tj", b"\n".join(out))  # the text drawn, in order
    return data + b"\n" + b" ".join(shown)


def test_certificate_is_a_pdf_naming_the_pen_instruments_and_outcome(tmp_path: Path) -> None:
    record = make_record()
    path = write_certificate(record, tmp_path)
    assert path.name == certificate_name(record, "pdf") and path.name.startswith("cal-SIM-000007-")
    data = path.read_bytes()
    assert data.startswith(b"%PDF-")
    text = _pdf_text(data)
    for expected in (b"SIM-000007", b"Calibration certificate", b"PASS", b"DG-7", b"TA-7"):
        assert expected in text, expected
    assert b"loan unit, recal booked" in text  # the instrument override reason is on it
    if shutil.which("pdftoppm"):  # render it as a reader would (poppler, where installed)
        subprocess.run(
            ["pdftoppm", "-png", "-r", "40", "-f", "1", "-l", "1", str(path), str(tmp_path / "p")],
            check=True,
            timeout=60,
        )
        assert (tmp_path / "p-1.png").stat().st_size > 5000


def test_incomplete_record_certificate_says_so(tmp_path: Path) -> None:
    record = make_record(outcome="incomplete")
    record.reason = "depth as-found: gauge cable pulled"
    record.points = record.points[:3]
    record.committed, record.cal_after, record.fits = False, None, []
    text = _pdf_text(write_certificate(record, tmp_path).read_bytes())
    assert b"INCOMPLETE" in text and b"gauge cable pulled" in text
    assert b"not renewed" in text  # no next due date from an incomplete calibration


def test_json_record_round_trips(tmp_path: Path) -> None:
    record = make_record(procedure="verify")
    path = write_json(record, tmp_path)
    data = json.loads(path.read_text())
    assert CalibrationRecord.from_dict(data) == record
    assert data["summary"]["outcome"] == "pass" and data["summary"]["as_left"] is None
