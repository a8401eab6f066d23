"""The calibration certificate (PDF, reportlab) and the JSON record written beside it.

What is on it follows ISO/IEC 17025:2017 §7.8.2 and §7.8.4 for a calibration certificate:
title; the issuing laboratory, its address and accreditation (from the station file, as
recorded when the calibration ran — or, in its place, that none is configured); the
certificate number and date of issue, and on every page the number and "page n of N"; the
item (model, serial, firmware) and its owner; the method and its revision; the date and
place of calibration and who performed it; the ambient conditions and where they were
measured; the reference instruments with their own certificates (traceability); per point
the readings' mean, the error with its expanded uncertainty (k and coverage stated) and the
statement of conformity under the stated decision rule, before and after adjustment; the
uncertainty budget; the adjustment made; the standard statements; the signatory; and its end.
A simulated calibration carries a SIMULATION watermark on every page and says which parts
were simulated. Optionally the PDF is signed (PAdES, :mod:`.signing`) before it is written.

reportlab is used because it writes PDF itself (no browser, no LaTeX) and is maintained.
"""

from __future__ import annotations

import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from reportlab.lib.units import mm
from reportlab.platypus import (
    CondPageBreak,
    Flowable,
    KeepTogether,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
)

from micropen.host.errors import InvalidInput
from micropen.host.files import write_atomically

from .cert_layout import MARGIN, PAGE, PageDecor, Palette, esc, numbered_canvas, styles, watermark
from .cert_plot import error_plot
from .cert_tables import (
    Styles,
    budget_points_table,
    budget_sources_table,
    correction_table,
    instruments_table,
    kv_table,
    points_table,
    readings_table,
)
from .errors import CalibrationError
from .measurements import (
    DEPTH_ACCEPTANCE,
    DEPTH_AS_LEFT,
    RATE_ACCEPTANCE,
    RATE_AS_LEFT,
    Limit,
    Quantity,
    Stage,
)
from .record import CalibrationRecord, Outcome
from .traceability import traceability_statement

if TYPE_CHECKING:
    from .signing import CertificateSigner

__all__ = [
    "STATEMENTS",
    "CertificateWriteError",
    "certificate_name",
    "prepare_out_dir",
    "write_certificate",
    "write_json",
]

STATEMENTS = (
    "The results relate only to the item calibrated.",
    "This certificate shall not be reproduced except in full without the written approval of "
    "the issuing laboratory.",
    "The reported expanded uncertainty of measurement is the standard uncertainty multiplied "
    "by the coverage factor k stated, which for a normal distribution corresponds to a "
    "coverage probability of approximately 95 %. It was evaluated in accordance with the GUM "
    "(JCGM 100:2008) and EA-4/02 M:2022.",
)
_OUTCOME_COLOURS = {
    Outcome.PASS: Palette.PASS,
    Outcome.CONDITIONAL_PASS: Palette.CONDITIONAL,
    Outcome.CONDITIONAL_FAIL: Palette.CONDITIONAL,
    Outcome.FAIL: Palette.FAIL,
    Outcome.INCOMPLETE: Palette.CONDITIONAL,
}
_LIMITS = {
    Quantity.DEPTH: (DEPTH_ACCEPTANCE, DEPTH_AS_LEFT),
    Quantity.RATE: (RATE_ACCEPTANCE, RATE_AS_LEFT),
}


class CertificateWriteError(CalibrationError):
    """The certificate or record file could not be written (the record is in the database)."""


@dataclass(frozen=True)
class Authorisation:
    """Who authorises this issue of the certificate, and whether it is signed electronically."""

    name: str
    role: str
    electronic: bool


def certificate_name(record: CalibrationRecord, suffix: str) -> str:
    """``cal-<serial>-<UTC date-time>-<id>.<suffix>``: sorts by pen, then time."""
    stamp = record.started_at.strftime("%Y%m%dT%H%M%SZ")
    serial, rid = safe_name_part(record.pen.serial), safe_name_part(record.record_id[:8])
    return f"cal-{serial}-{stamp}-{rid}.{suffix}"


def safe_name_part(text: str) -> str:
    """``text`` as one part of a file name: letters, digits, ``-``, ``_`` and ``.`` kept,
    anything else (``/``, ``..``, quotes, spaces, control characters) becomes ``_``; never
    empty, never starting with a dot (a serial reported by a pen is not trusted as a path)."""
    kept = re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:64].lstrip(".")
    return kept or "unknown"


def prepare_out_dir(out_dir: Path) -> Path:
    """The folder, created if missing and checked writable, before any work is done:
    InvalidInput naming it and the fix (a file in its place, a folder that cannot be made)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InvalidInput(f"--out {out_dir} is a file, not a folder; give a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidInput(
            f"cannot create the output folder {out_dir} ({exc.strerror or exc}); give a "
            "writable folder with --out"
        ) from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise InvalidInput(f"output folder {out_dir} is not writable; give another with --out")
    return out_dir


def write_json(record: CalibrationRecord, out_dir: Path) -> Path:
    path = prepare_out_dir(out_dir) / certificate_name(record, "json")
    text = json.dumps(record.to_dict(), indent=2, sort_keys=True) + "\n"
    _write(path, text.encode("utf-8"))
    return path


def write_certificate(
    record: CalibrationRecord, out_dir: Path, *, signer: CertificateSigner | None = None
) -> Path:
    """Write the PDF certificate (signed by ``signer`` when given); returns its path."""
    path = prepare_out_dir(out_dir) / certificate_name(record, "pdf")
    authorisation = (
        Authorisation(signer.identity.name, signer.identity.role, electronic=True)
        if signer is not None
        else Authorisation(record.issuer.signatory, record.issuer.signatory_role, False)
    )
    data = render(record, authorisation)
    if signer is not None:
        data = signer.sign(
            data,
            reason=f"Calibration certificate {record.certificate_id} issued",
            location=record.issuer.location,
        )
    _write(path, data)
    return path


def render(record: CalibrationRecord, authorisation: Authorisation) -> bytes:
    """The certificate's PDF bytes."""
    buffer = io.BytesIO()
    decor = PageDecor(
        certificate=record.certificate_id,
        issued=record.issued_on.isoformat(),
        lab=record.issuer.lab,
        footer=f"record {record.record_id} · micropen {record.software_version}",
        simulated=record.simulation,
    )
    doc = SimpleDocTemplate(
        buffer,
        pagesize=PAGE,
        leftMargin=MARGIN,
        rightMargin=MARGIN,
        topMargin=20 * mm,
        bottomMargin=16 * mm,
        title=f"Calibration certificate {record.certificate_id}",
        author=record.issuer.lab or "micropen",
        subject=f"{record.pen.model} s/n {record.pen.serial}",
        creator=f"micropen {record.software_version}",
    )
    doc.build(
        _story(record, authorisation),
        onFirstPage=lambda canvas, _: watermark(canvas, decor),
        onLaterPages=lambda canvas, _: watermark(canvas, decor),
        canvasmaker=numbered_canvas(decor),
    )
    return buffer.getvalue()


def _write(path: Path, data: bytes) -> None:
    try:
        write_atomically(path, data, 0o644)
    except OSError as exc:
        raise CertificateWriteError(
            f"cannot write {path} ({exc.strerror or exc}); the record is in the calibration "
            "database: free space or fix the folder, then `micropen cal export RECORD_ID`"
        ) from None


# --- the story ------------------------------------------------------------------------------------
def _story(record: CalibrationRecord, authorisation: Authorisation) -> list[Flowable]:
    st = styles()
    story: list[Flowable] = [*_title(record, st), _identification(record, st)]
    story += [_h("Result", st), *_summary(record, st)]
    story += [_h("Reference instruments and traceability", st), instruments_table(record, st)]
    story.append(Paragraph(esc(traceability_statement(record.simulation)), st["small"]))
    for quantity in record.quantities():
        if any(p.quantity is quantity for p in record.points):
            story += _results(record, quantity, st)
    story += _uncertainty(record, st)
    story += [_h("Decision rule", st), Paragraph(esc(record.decision_rule.statement()), st["body"])]
    story += [_h("Adjustment", st), *_adjustment(record, st)]
    if record.notes:
        story.append(_h("Notes", st))
        story += [Paragraph("· " + esc(n), st["small"]) for n in record.notes]
    story += [_h("Statements", st), *(Paragraph(esc(s), st["body"]) for s in STATEMENTS)]
    story += [CondPageBreak(40 * mm), _h("Authorisation", st), *_authorisation(record,
              authorisation, st)]  # fmt: skip
    story += [CondPageBreak(70 * mm), _h("Annex A: individual readings", st)]
    story.append(readings_table(record, st))
    story += [Spacer(1, 6 * mm), Paragraph("— End of certificate —", st["centre"])]
    return story


def _h(text: str, st: Styles) -> Paragraph:
    return Paragraph(esc(text), st["h"])


def _title(record: CalibrationRecord, st: Styles) -> list[Flowable]:
    issuer = record.issuer
    out: list[Flowable] = [Paragraph("Calibration certificate", st["title"])]
    if issuer.configured:
        out.append(Paragraph(esc(issuer.lab), st["lab"]))
        details = [issuer.address, issuer.accreditation, issuer.contact]
        out += [Paragraph(esc(d), st["body"]) for d in details if d]
    else:
        where = issuer.station_file or "the station file (micropen cal station)"
        out.append(
            Paragraph(
                "Issuing laboratory NOT CONFIGURED: no laboratory is named in "
                f"{esc(where)}. Without it this document identifies no issuing laboratory and "
                "is not a certificate of one.",
                st["alert"],
            )
        )
    if record.simulation:
        parts = "; ".join(record.simulated_parts)
        out.append(
            Paragraph(
                f"SIMULATION: simulated parts: {esc(parts)}. Nothing real was calibrated.",
                st["alert"],
            )
        )
    out.append(Spacer(1, 3 * mm))
    return out


def _identification(record: CalibrationRecord, st: Styles) -> Flowable:
    pen, issuer = record.pen, record.issuer
    finished = f"–{record.finished_at:%H:%M}" if record.finished_at else " (not finished)"
    ambient = (
        f"{record.ambient_c:.1f} °C, measured with "
        f"{record.ambient_location or record.ambient_source or 'an unstated instrument'}"
        if record.ambient_c is not None
        else "not recorded"
    )
    rows = [
        ("Certificate number", record.certificate_id),
        ("Date of issue", record.issued_on.isoformat()),
        ("Item calibrated", f"12-needle microneedling pen, model {pen.model}, serial number "
                            f"{pen.serial}, firmware {pen.firmware}, protocol "
                            f"v{pen.protocol_version}"),
        ("Connected as", pen.url),
        ("Equipment owner", record.owner or "not stated"),
        ("Method", f"{record.method}, revision {record.method_revision}"),
        ("Date of calibration", f"{record.started_at:%Y-%m-%d %H:%M}{finished} UTC"),
        ("Place of calibration", _place(issuer.location, record.station)),
        ("Performed by", record.technician or "not stated"),
        ("Ambient conditions", ambient),
        ("Record", f"{record.record_id} (micropen {record.software_version})"),
    ]  # fmt: skip
    return kv_table(rows, st)


def _place(location: str, station: str) -> str:
    if location and station:
        return f"{location} (station {station})"
    return location or (f"station {station}" if station else "not stated")


def _summary(record: CalibrationRecord, st: Styles) -> list[Flowable]:
    colour = _OUTCOME_COLOURS[record.outcome].hexval()[2:]
    lines = [
        f"Overall statement ({record.final_stage.label}): <font color='#{colour}'><b>"
        f"{record.outcome.label.upper()}</b></font> — {esc(record.reason)}"
    ]
    for stage in (Stage.AS_FOUND, Stage.AS_LEFT):
        verdict = record.stage_verdict(stage)
        if verdict is not None:
            lines.append(f"{stage.label.capitalize()} (worst point): {verdict.label}")
    due = record.next_due()
    lines.append(
        f"Next calibration due: {due.isoformat()} (interval of {record.interval_days} days, as "
        "set by the equipment owner)"
        if due
        else "Next calibration due: not renewed by this calibration"
    )
    return [Paragraph(line, st["body"]) for line in lines]


def _results(record: CalibrationRecord, quantity: Quantity, st: Styles) -> list[Flowable]:
    limits: tuple[Limit, Limit] = _LIMITS[quantity]
    units = "mm" if quantity is Quantity.DEPTH else "% of the set rate"
    intro = (
        f"Error = mean of the readings − set point ({units}); U: expanded uncertainty of the "
        "error at the coverage factor in the budget below (about 95 %). Statements per the "
        "decision rule below."
    )
    return [
        KeepTogether(
            [
                _h(f"{quantity.label}: results", st),
                Paragraph(esc(intro), st["small"]),
                points_table(record, quantity, limits, st),
                Spacer(1, 2 * mm),
                error_plot(record, quantity, limits),
            ]
        )
    ]


def _uncertainty(record: CalibrationRecord, st: Styles) -> list[Flowable]:
    """The model, then per quantity its inputs and every point's budget. The heading and the
    model stay on the page of the first inputs table."""
    d = '<font face="Symbol">δ</font>'  # the core Symbol font has δ, Vera does not
    text = (
        f"Model: indicated = mean + {d}ref + {d}res (+ {d}temp for depth); depth error = "
        f"indicated − set, rate error = (indicated / set − 1) · 100 %. Standard uncertainties "
        "are combined by the law of propagation of uncertainty (GUM 5.1), the effective degrees "
        "of freedom (dof) by the Welch–Satterthwaite formula, the coverage factor k from the "
        "t-distribution for about 95 % coverage (GUM table G.2); U = k·u<sub>c</sub>, rounded "
        "up to two significant digits. Thermal expansion: 11.5 × 10<super>−6</super> /K, from "
        "20 °C to the ambient temperature."
    )
    lead: list[Flowable] = [_h("Measurement uncertainty", st), Paragraph(text, st["small"])]
    out: list[Flowable] = []
    for quantity in record.quantities():
        if not any(p.quantity is quantity for p in record.points):
            continue
        inputs = [
            Paragraph(f"<b>{quantity.label}</b>: inputs", st["body"]),
            budget_sources_table(record, quantity, st),
            Spacer(1, 1.5 * mm),
        ]
        out += [
            KeepTogether([*lead, *inputs]),
            Paragraph(f"<b>{quantity.label}</b>: budget per point", st["body"]),
            budget_points_table(record, quantity, st),
        ]
        lead = []
    return [*lead, *out]


def _adjustment(record: CalibrationRecord, st: Styles) -> list[Flowable]:
    if record.procedure == "verify":
        state = "Verification only: the pen's calibration was read, not changed."
    elif record.committed:
        state = "A new calibration was written, read back, committed and verified as-left."
    else:
        state = "No new calibration is in force (see the notes)."
    fits = [
        f"{f.quantity.label}: measured = {f.slope:.5f} × set {f.intercept:+.4f} "
        f"{f.quantity.set_units} (largest residual {f.max_residual:.4f} {f.quantity.set_units})"
        for f in record.fits
    ]
    return [
        correction_table(record, st),
        Spacer(1, 1.5 * mm),
        *(Paragraph("Fitted line (as-found): " + esc(f), st["body"]) for f in fits),
        Paragraph(esc(state), st["body"]),
    ]


def _authorisation(record: CalibrationRecord, who: Authorisation, st: Styles) -> list[Flowable]:
    performed = f"Calibration performed by: {record.technician or 'not stated'}"
    if not who.name:
        signatory = (
            "Authorised by: signatory NOT CONFIGURED (station file: signatory.name, or sign with a "
            "signatory's key)"
        )
        signature = ""
    else:
        signatory = f"Authorised by: {who.name}" + (f", {who.role}" if who.role else "")
        signature = (
            "Signed electronically (PAdES certification signature) by the signatory; check it "
            "with: micropen cal verify-certificate FILE"
            if who.electronic
            else "Signature: ______________________________    Date: ______________"
        )
    lines = [performed, signatory, signature]
    return [Paragraph(esc(line), st["body"]) for line in lines if line]
