"""Signed certificates: the signatory's key, a PAdES signature (pyHanko), and its check.

Why: a PDF certificate is easy to alter; a signature by the person who authorises it (ISO/IEC
17025 §7.8.2.1 o) makes any change after signing visible. The signature is a PAdES
*certification* signature that permits no changes (DocMDP level 1), so a byte changed inside
the signed range breaks it, and an incremental update appended later — the way a PDF is
edited without touching the signed bytes — is reported as a modification.

Keys: :func:`create_signer` makes an ECDSA P-256 key (PEM, mode 0600, never overwritten) and a
self-signed X.509 certificate naming the signatory (common name) and role (title), for a lab
without a PKI; a key and certificate from the lab's own CA, or a PKCS#12 file, work the same.
A private key that others can read is refused, as ssh refuses one.

Verifying: :func:`verify_certificate` reports whether the file is signed, whether the signed
bytes are intact, whether anything was changed after signing, and — given the signatory's
(or their CA's) certificate as the trust anchor — whether the signer is the one trusted.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import io
import logging
import os
import stat
import warnings
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from micropen.host.errors import InvalidInput

from .errors import CalibrationError

with warnings.catch_warnings():  # pyHanko imports cryptography's deprecated DSA at load time
    warnings.simplefilter("ignore")
    from pyhanko.keys import load_private_key_from_pemder_data
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.pdf_utils.misc import PdfError
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign import fields, signers
    from pyhanko.sign.validation import SignatureCoverageLevel, async_validate_pdf_signature
    from pyhanko_certvalidator import ValidationContext
    from pyhanko_certvalidator.registry import SimpleCertificateStore

__all__ = [
    "CERT_FILE",
    "KEY_FILE",
    "CertificateSigner",
    "SignatureCheck",
    "SignatureError",
    "SignerIdentity",
    "create_signer",
    "load_signer",
    "verify_certificate",
]

KEY_FILE = "signer.key"
CERT_FILE = "signer.crt"
FILE_MAX = 64 * 1024  # a key, certificate or PKCS#12 file is a few KiB
PDF_MAX = 64 * 1024 * 1024
VALIDITY_DAYS_DEFAULT = 3 * 365
FIELD_NAME = "CertificateSignature"
_T = TypeVar("_T")

# pyHanko logs what it finds (an untrusted self-signed signer, an illegal update) with the
# exception's traceback; we report the same in one line, so its records stop here.
for _name in ("pyhanko", "pyhanko_certvalidator"):
    logging.getLogger(_name).addHandler(logging.NullHandler())
    logging.getLogger(_name).propagate = False


class SignatureError(CalibrationError):
    """A certificate could not be signed, or its signature does not hold."""


@dataclass(frozen=True)
class SignerIdentity:
    """Who signs: from the X.509 subject (common name, title, organisation)."""

    name: str
    role: str
    organisation: str = ""

    @classmethod
    def of(cls, certificate: x509.Certificate) -> SignerIdentity:
        def first(oid: x509.ObjectIdentifier) -> str:
            found = certificate.subject.get_attributes_for_oid(oid)
            return str(found[0].value) if found else ""

        return cls(
            first(NameOID.COMMON_NAME), first(NameOID.TITLE), first(NameOID.ORGANIZATION_NAME)
        )

    def describe(self) -> str:
        role = f", {self.role}" if self.role else ""
        org = f" ({self.organisation})" if self.organisation else ""
        return f"{self.name or 'unnamed signer'}{role}{org}"


# --- keys ---------------------------------------------------------------------------------------
def create_signer(
    out_dir: Path,
    name: str,
    role: str,
    organisation: str = "",
    *,
    days: int = VALIDITY_DAYS_DEFAULT,
    now: dt.datetime | None = None,
) -> tuple[Path, Path]:
    """A new key (``out_dir/signer.key``, 0600) and self-signed certificate (``signer.crt``)
    naming the signatory and role. Never overwrites; creates ``out_dir`` (0700) if missing."""
    for label, text in (("name", name), ("role", role)):
        if not text.strip() or len(text) > 64 or not text.isprintable():
            raise InvalidInput(f"signatory {label} {text!r} must be 1–64 printable characters")
    if not 1 <= days <= 10 * 365:
        raise InvalidInput(f"validity {days} days is outside 1–3650 days")
    key_path, cert_path = out_dir / KEY_FILE, out_dir / CERT_FILE
    for path in (key_path, cert_path):
        if os.path.lexists(path):
            raise InvalidInput(f"{path} exists; a signing key is never overwritten")
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = _self_signed(key, SignerIdentity(name, role, organisation), days, now)
    try:
        out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_new(key_path, _pem_key(key), 0o600)
        _write_new(cert_path, certificate.public_bytes(serialization.Encoding.PEM), 0o644)
    except FileExistsError:
        raise InvalidInput(f"{key_path} exists; a signing key is never overwritten") from None
    except OSError as exc:
        raise InvalidInput(
            f"cannot write the signing key to {out_dir} ({exc.strerror or exc}); give a "
            "writable folder with --out"
        ) from None
    return key_path, cert_path


def _self_signed(
    key: ec.EllipticCurvePrivateKey, who: SignerIdentity, days: int, now: dt.datetime | None
) -> x509.Certificate:
    now = now or dt.datetime.now(dt.UTC)
    attributes = [
        x509.NameAttribute(NameOID.COMMON_NAME, who.name.strip()),
        x509.NameAttribute(NameOID.TITLE, who.role.strip()),
    ]
    if who.organisation.strip():
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, who.organisation.strip()))
    name = x509.Name(attributes)
    usage = x509.KeyUsage(
        digital_signature=True, content_commitment=True, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .sign(key, hashes.SHA256())
    )


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


# --- signing ------------------------------------------------------------------------------------
class CertificateSigner:
    """A loaded key and certificate; :meth:`sign` turns PDF bytes into signed PDF bytes."""

    def __init__(self, key_der: bytes, certificate: x509.Certificate) -> None:
        self.certificate = certificate
        self.identity = SignerIdentity.of(certificate)
        cert_asn1 = load_cert_from_pemder_bytes(certificate)
        self._signer = signers.SimpleSigner(
            signing_cert=cert_asn1,
            signing_key=load_private_key_from_pemder_data(key_der, passphrase=None),
            cert_registry=SimpleCertificateStore.from_certs([cert_asn1]),  # type: ignore[no-untyped-call]
        )

    def sign(self, pdf: bytes, *, reason: str, location: str = "") -> bytes:
        """The PDF with a PAdES certification signature that permits no later changes."""
        meta = signers.PdfSignatureMetadata(
            field_name=FIELD_NAME,
            subfilter=fields.SigSeedSubFilter.PADES,
            reason=reason,
            location=location or None,
            name=self.identity.name or None,
            certify=True,
            docmdp_permissions=fields.MDPPerm.NO_CHANGES,
        )
        try:
            writer = IncrementalPdfFileWriter(io.BytesIO(pdf))
            out = _run(signers.async_sign_pdf(writer, meta, signer=self._signer))
        except (PdfError, ValueError) as exc:
            raise SignatureError(f"the certificate could not be signed ({exc})") from exc
        return bytes(out.getvalue())


def load_cert_from_pemder_bytes(certificate: x509.Certificate) -> Any:
    """pyHanko's (asn1crypto) form of a certificate."""
    from asn1crypto import x509 as asn1_x509  # type: ignore[import-untyped]  # pyHanko's

    return asn1_x509.Certificate.load(certificate.public_bytes(serialization.Encoding.DER))


def load_signer(
    *,
    key: Path | None = None,
    cert: Path | None = None,
    pkcs12_file: Path | None = None,
    passphrase: bytes | None = None,
    now: dt.datetime | None = None,
) -> CertificateSigner:
    """The signatory's key and certificate, checked: readable by the owner only, a pair,
    valid now. Either ``key`` and ``cert`` (PEM or DER) or ``pkcs12_file``. InvalidInput
    names the file and the fix."""
    if pkcs12_file is not None:
        if key is not None or cert is not None:
            raise InvalidInput("give either --sign-p12 or --sign-key with --sign-cert, not both")
        private, certificate = _from_pkcs12(pkcs12_file, passphrase)
    elif key is not None and cert is not None:
        private, certificate = _private_key(key, passphrase), _certificate(cert)
    else:
        raise InvalidInput("signing needs --sign-key KEY and --sign-cert CERT (or --sign-p12)")
    _check_pair(private, certificate, cert or pkcs12_file, now)
    der = private.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return CertificateSigner(der, certificate)


def _read(path: Path, what: str) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(FILE_MAX + 1)
    except OSError as exc:
        raise InvalidInput(f"cannot read the {what} {path} ({exc.strerror or exc})") from None
    if len(data) > FILE_MAX:
        raise InvalidInput(f"{path} is over {FILE_MAX // 1024} KiB: not a {what}")
    return data


def _owner_only(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InvalidInput(
            f"private key {path} can be read by others (mode {stat.S_IMODE(mode):o}); "
            f"run: chmod 600 {path}"
        )


def _private_key(path: Path, passphrase: bytes | None) -> Any:
    data = _read(path, "private key")
    _owner_only(path)
    loader = (
        serialization.load_pem_private_key
        if b"-----BEGIN" in data
        else serialization.load_der_private_key
    )
    try:
        return loader(data, password=passphrase)
    except TypeError:
        raise InvalidInput(
            f"private key {path} is encrypted; set MICROPEN_SIGN_PASSPHRASE to its passphrase"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise InvalidInput(
            f"{path} is not a private key (or the passphrase is wrong); give the key that "
            "`micropen cal signer init` made"
        ) from None


def _certificate(path: Path) -> x509.Certificate:
    data = _read(path, "certificate")
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError:
        raise InvalidInput(f"{path} is not an X.509 certificate (PEM or DER)") from None


def _from_pkcs12(path: Path, passphrase: bytes | None) -> tuple[Any, x509.Certificate]:
    data = _read(path, "PKCS#12 file")
    _owner_only(path)
    try:
        private, certificate, _ = pkcs12.load_key_and_certificates(data, passphrase)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise InvalidInput(
            f"{path} is not a PKCS#12 file this passphrase opens; set MICROPEN_SIGN_PASSPHRASE"
        ) from None
    if private is None or certificate is None:
        raise InvalidInput(f"{path} holds no key and certificate pair")
    return private, certificate


def _check_pair(
    private: Any, certificate: x509.Certificate, where: Path | None, now: dt.datetime | None
) -> None:
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    mine = private.public_key().public_bytes(serialization.Encoding.DER, public)
    theirs = certificate.public_key().public_bytes(serialization.Encoding.DER, public)
    if mine != theirs:
        raise InvalidInput(f"the key does not belong to the certificate {where}; give its pair")
    now = now or dt.datetime.now(dt.UTC)
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise InvalidInput(
            f"certificate {where} is valid {certificate.not_valid_before_utc:%Y-%m-%d} to "
            f"{certificate.not_valid_after_utc:%Y-%m-%d}, not now; make a new one "
            "(micropen cal signer init)"
        )


# --- verifying ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SignatureCheck:
    """What :func:`verify_certificate` found. ``ok``: signed, intact, unchanged since, and
    trusted when a trust anchor was given."""

    path: str
    signed: bool
    intact: bool = False
    unchanged: bool = False  # nothing was appended after the signature
    trusted: bool | None = None  # None: no trust anchor given
    signer: SignerIdentity | None = None
    signed_at: dt.datetime | None = None

    @property
    def ok(self) -> bool:
        return self.signed and self.intact and self.unchanged and self.trusted is not False

    def message(self) -> str:
        """One line saying what holds and what does not."""
        who = self.signer.describe() if self.signer else "?"
        when = f" on {self.signed_at:%Y-%m-%d %H:%M UTC}" if self.signed_at else ""
        if not self.signed:
            return f"{self.path} is not signed: its authenticity cannot be checked"
        if not self.intact:
            return (
                f"{self.path} was altered after it was signed by {who}: the signed bytes no "
                "longer match the signature; do not rely on it"
            )
        if not self.unchanged:
            return (
                f"{self.path} was changed after it was signed by {who} (content added in an "
                "incremental update); do not rely on it"
            )
        if self.trusted is False:
            return (
                f"{self.path} is signed{when} by {who}, intact, but the signer is not the "
                "trusted one (--trust); do not rely on it"
            )
        trust = (
            "signer trusted"
            if self.trusted
            else "signer not checked against a trust anchor (give --trust CERT)"
        )
        return f"{self.path}: signature by {who}{when} is valid, document unchanged; {trust}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "ok": self.ok,
            "signed": self.signed,
            "intact": self.intact,
            "unchanged": self.unchanged,
            "trusted": self.trusted,
            "signer": self.signer.name if self.signer else None,
            "signer_role": self.signer.role if self.signer else None,
            "signed_at": self.signed_at.isoformat() if self.signed_at else None,
        }


def verify_certificate(path: Path, trust: Path | None = None) -> SignatureCheck:
    """Check a certificate's signatures. InvalidInput for a file that is not a PDF (or an
    unreadable trust anchor); SignatureError for a PDF too damaged to read."""
    data = _read_pdf(path)
    anchor = _certificate(trust) if trust else None
    anchors = [load_cert_from_pemder_bytes(anchor)] if anchor is not None else []
    try:
        reader = PdfFileReader(io.BytesIO(data), strict=False)
        embedded = list(reader.embedded_signatures)
    except (PdfError, ValueError, KeyError, TypeError) as exc:
        raise SignatureError(
            f"{path} is damaged ({exc}); it is not the certificate as issued"
        ) from None
    if not embedded:
        return SignatureCheck(str(path), signed=False)
    results = [_check_one(sig, anchors if trust else None, anchor) for sig in embedded]
    return SignatureCheck(
        str(path),
        signed=True,
        intact=all(r[0] for r in results),
        unchanged=all(r[1] for r in results),
        trusted=None if trust is None else all(r[2] for r in results),
        signer=results[-1][3],
        signed_at=results[-1][4],
    )


def _read_pdf(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(PDF_MAX + 1)
    except OSError as exc:
        raise InvalidInput(f"cannot read {path} ({exc.strerror or exc})") from None
    if b"%PDF-" not in data[:1024]:
        raise InvalidInput(f"{path} is not a PDF; give a certificate micropen wrote (.pdf)")
    if len(data) > PDF_MAX:
        raise InvalidInput(f"{path} is over {PDF_MAX // 2**20} MiB: not a certificate")
    return data


def _check_one(
    embedded: Any, anchors: list[Any] | None, anchor: x509.Certificate | None = None
) -> tuple[bool, bool, bool, SignerIdentity | None, dt.datetime | None]:
    """(intact, unchanged, trusted, signer, signed at) of one embedded signature."""
    context = ValidationContext(trust_roots=anchors or [], allow_fetching=False)
    try:
        status = _run(async_validate_pdf_signature(embedded, signer_validation_context=context))
    except (PdfError, ValueError, KeyError, TypeError) as exc:
        raise SignatureError(f"the signature cannot be read ({exc}); the file is damaged") from None
    # a certificate is signed once, as issued: any byte after the signed revision (an update,
    # even garbage after %%EOF) means the file is not the one issued
    unchanged = status.coverage is SignatureCoverageLevel.ENTIRE_FILE
    signer = _identity_of(status.signing_cert)
    return (
        bool(status.intact and status.valid) and _embedded_certificates_sound(embedded),
        unchanged,
        bool(status.trusted) and (anchor is None or _signer_is(embedded, anchor)),
        signer,
        (status.signer_reported_dt),
    )


def _signer_is(embedded: Any, anchor: x509.Certificate) -> bool:
    """The carried certificate the signature names is the trusted one, or issued by it."""
    sid = embedded.signer_info["sid"].chosen
    for carried in embedded.signed_data["certificates"] or []:
        c = carried.chosen
        if c.issuer == sid["issuer"] and c.serial_number == sid["serial_number"].native:
            own = x509.load_der_x509_certificate(c.dump())
            return own == anchor or _issued_by(own, anchor)
    return False


def _embedded_certificates_sound(embedded: Any) -> bool:
    """The certificates carried inside the signature lie outside the signed byte range. The
    signer's (the one the signature names by issuer and serial) must be carried, and every
    carried one that claims to be self-signed must still verify with its own key: a signatory
    renamed or a serial changed after signing means the file is not the certificate as issued."""
    try:
        sid = embedded.signer_info["sid"].chosen
        carried = [c.chosen for c in embedded.signed_data["certificates"] or []]
        signer = next(
            (
                c
                for c in carried
                if c.issuer == sid["issuer"] and c.serial_number == sid["serial_number"].native
            ),
            None,
        )
        if signer is None:
            return False
        certificates = [x509.load_der_x509_certificate(c.dump()) for c in carried]
        if not all(not _claims_self_signed(c) or _verifies_itself(c) for c in certificates):
            return False
        return not _two_versions_of_one(certificates) and _padding_is_zero(embedded)
    except (ValueError, TypeError, KeyError, AttributeError):
        return False


def _padding_is_zero(embedded: Any) -> bool:
    """/Contents is reserved larger than the signature; the rest must stay zeros, or ~500
    bytes could be hidden in a file that still verifies."""
    contents = bytes(embedded.sig_object["/Contents"])
    if len(contents) < 2 or contents[0] != 0x30:
        return False
    size, start = contents[1], 2
    if size & 0x80:  # long form: the next (size & 0x7F) bytes hold the length
        count = size & 0x7F
        size, start = int.from_bytes(contents[2 : 2 + count], "big"), 2 + count
    return not any(contents[start + size :])


def _two_versions_of_one(certificates: list[x509.Certificate]) -> bool:
    """The same serial and key carried twice with different contents: one copy was edited."""
    seen: dict[tuple[int, bytes], x509.Certificate] = {}
    for c in certificates:
        key = (
            c.serial_number,
            c.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )
        if key in seen and seen[key] != c:
            return True
        seen[key] = c
    return False


def _issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _claims_self_signed(certificate: x509.Certificate) -> bool:
    try:
        subject_key = certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    except x509.ExtensionNotFound:
        return certificate.issuer == certificate.subject
    try:
        authority = certificate.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    except x509.ExtensionNotFound:
        return True
    return authority.value.key_identifier in (None, subject_key.value.digest)


def _verifies_itself(certificate: x509.Certificate) -> bool:
    key = certificate.public_key()
    algorithm = certificate.signature_hash_algorithm
    if not isinstance(key, ec.EllipticCurvePublicKey) or algorithm is None:
        try:
            certificate.verify_directly_issued_by(certificate)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True
    try:
        key.verify(certificate.signature, certificate.tbs_certificate_bytes, ec.ECDSA(algorithm))
    except InvalidSignature:
        return False
    return True


def _identity_of(signing_cert: Any) -> SignerIdentity | None:
    if signing_cert is None:
        return None
    return SignerIdentity.of(x509.load_der_x509_certificate(signing_cert.dump()))


def _run(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run pyHanko's coroutine to the end, also when the caller already runs an event loop
    (then in a worker thread: asyncio.run cannot nest)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()
