"""Calibration records and certificates: history, a record's page, PDF and JSON downloads,
review and signature (through the host's RecordStore, certificate and signing modules)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from micropen.host import paths
from micropen.host.calibration import CalibrationRecord, Outcome, RecordStore
from micropen.host.calibration.certificate import (
    certificate_name,
    write_certificate,
)
from micropen.host.errors import HostError, InvalidInput

from .hub import point_dict
from .pool import CpuPool, render_pdf, write_signed_pdf
from .web import attachment, in_thread, page, require

__all__ = ["ReviewBook", "routes"]


class ReviewBookError(HostError):
    """The station's review book cannot be read: names the file and the fix."""


class ReviewBook:
    """Which records were reviewed and signed at this station, by whom (a JSON file beside the
    calibration database; the signature itself is in the certificate PDF)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or paths.data_dir() / "station-reviews.json"

    def all(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (ValueError, UnicodeDecodeError) as exc:
            raise ReviewBookError(
                f"{self.path} is corrupt ({exc}); restore it from a backup, or move it aside "
                "to start an empty review book (the signed PDFs stay in the certificates folder)"
            ) from None
        if not isinstance(data, dict):
            raise ReviewBookError(
                f"{self.path} is not a JSON object of reviews; restore it from a backup, or "
                "move it aside to start an empty review book"
            )
        return dict(data)

    def add(self, record_id: str, entry: dict[str, Any]) -> None:
        """Read-modify-write under an exclusive lock on a lock file (two stations on one data
        folder), written to a temp file of its own, then renamed into place."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        with lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            reviews = self.all()
            reviews[record_id] = entry
            fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    out.write(json.dumps(reviews, indent=2, sort_keys=True))
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise


def _row(record: CalibrationRecord, review: dict[str, Any] | None) -> dict[str, Any]:
    due = record.next_due()
    return {
        "record_id": record.record_id,
        "short_id": record.record_id[:8],
        "certificate": record.certificate_id,
        "pen": record.pen.serial,
        "procedure": record.procedure,
        "started": record.started_at.strftime("%Y-%m-%d %H:%M"),
        "technician": record.technician,
        "outcome": record.outcome.value,
        "outcome_label": record.outcome.label,
        "reason": record.reason,
        "next_due": due.isoformat() if due else None,
        "simulation": record.simulation,
        "signed_by": review.get("reviewer") if review else None,
        "signatory": review.get("signatory") if review else None,
        "signed_at": review.get("signed_at") if review else None,
    }


def _history() -> list[dict[str, Any]]:
    reviews = ReviewBook().all()
    return [_row(r, reviews.get(r.record_id)) for r in RecordStore().history()]


async def records_page(request: Request) -> Response:
    require(request, "view")
    return page(request, "records.html", records=await in_thread(_history))


def _find(reference: str) -> tuple[CalibrationRecord, dict[str, Any] | None]:
    record = RecordStore().find(reference)
    return record, ReviewBook().all().get(record.record_id)


async def record_page(request: Request) -> Response:
    require(request, "view")
    record, review = await in_thread(_find, request.path_params["rid"])
    config = request.app.state.config
    signer = config.signer
    return page(
        request,
        "record.html",
        record=_row(record, review),
        points=[point_dict(p) for p in record.points],
        notes=list(record.notes),
        signer=signer.identity.describe() if signer is not None else None,
        signable=_why_not_signable(record, review, request) is None,
        why_not=_why_not_signable(record, review, request),
    )


def _why_not_signable(
    record: CalibrationRecord, review: dict[str, Any] | None, request: Request
) -> str | None:
    config = request.app.state.config
    user = request.scope["state"]["user"]
    if review is not None:
        return f"signed by {review.get('reviewer')} on {review.get('signed_at')}"
    if record.outcome is Outcome.INCOMPLETE:
        return "the calibration is incomplete: there is nothing to certify; repeat it"
    if config.signer is None:
        return (
            "this station has no signing key: start it with --sign-key KEY --sign-cert CERT "
            "(micropen cal signer init makes them)"
        )
    if not user.may("sign"):
        return f"{user.name} ({user.role}) may not sign; a reviewer signs"
    if config.login_required and user.name == record.technician:
        return f"{user.name} calibrated this pen; another person reviews and signs it"
    return None


async def record_json(request: Request) -> Response:
    require(request, "view")
    record, _ = await in_thread(_find, request.path_params["rid"])
    return Response(
        json.dumps(record.to_dict(), indent=2, sort_keys=True) + "\n",
        media_type="application/json",
        headers=attachment(certificate_name(record, "json")),
    )


def _signed_pdf(review: dict[str, Any] | None) -> Path | None:
    if review is not None and Path(review.get("pdf", "")).is_file():
        return Path(review["pdf"])
    return None


async def record_pdf(request: Request) -> Response:
    """The signed certificate when there is one, else one rendered — in the worker process
    (see pool.py), never on the event loop's process: a stop is not kept waiting."""
    require(request, "view")
    record, review = await in_thread(_find, request.path_params["rid"])
    data: bytes | Path | None = await in_thread(_signed_pdf, review)
    if data is None:
        pool: CpuPool = request.app.state.pool
        data = await pool.run(
            render_pdf, record.to_dict(), record.issuer.signatory, record.issuer.signatory_role
        )
    name = certificate_name(record, "pdf")
    if isinstance(data, Path):
        return FileResponse(data, media_type="application/pdf", headers=attachment(name))
    return Response(data, media_type="application/pdf", headers=attachment(name))


async def sign(request: Request) -> Response:
    """A reviewer signs the certificate (PAdES, the station's signing key); written to the
    certificates folder and noted in the review book."""
    user = require(request, "sign")
    record, review = await in_thread(_find, request.path_params["rid"])
    why = _why_not_signable(record, review, request)
    if why is not None:
        raise HTTPException(409, why)
    config = request.app.state.config
    signer = config.signer
    pool: CpuPool = request.app.state.pool

    if config.signer_files is not None:  # render and sign in the worker process
        key, cert = config.signer_files
        try:
            pdf_path = await pool.run(
                write_signed_pdf,
                record.to_dict(),
                str(paths.certificates_dir()),
                str(key),
                str(cert),
            )
        except OSError as exc:
            raise InvalidInput(f"cannot write the signed certificate: {exc}") from None
    else:  # a signer given from Python, without its files: a thread, as before
        pdf_path = None

    def write() -> dict[str, Any]:
        pdf = pdf_path or write_certificate(record, paths.certificates_dir(), signer=signer)
        entry = {
            "reviewer": user.name,
            "signatory": signer.identity.describe(),
            "signed_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "pdf": str(pdf),
        }
        ReviewBook().add(record.record_id, entry)
        return entry

    try:
        entry = await in_thread(write)
    except OSError as exc:
        raise InvalidInput(f"cannot write the signed certificate: {exc}") from None
    return JSONResponse(entry)


routes = [
    Route("/records", records_page, methods=["GET"]),
    Route("/records/{rid}", record_page, methods=["GET"]),
    Route("/records/{rid}/record.json", record_json, methods=["GET"]),
    Route("/records/{rid}/certificate.pdf", record_pdf, methods=["GET"]),
    Route("/api/records/{rid}/sign", sign, methods=["POST"]),
]
