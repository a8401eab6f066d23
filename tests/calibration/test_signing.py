"""Signed certificates (PAdES, pyHanko): the signatory's key is owner-only and never
overwritten; a signed certificate verifies and names its signer; a changed byte, an appended
incremental update, an unsigned file and a stranger's signature are each reported; bad key
files are bad input."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest
from _cal_helpers import make_record
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter

from micropen.host.calibration.certificate import write_certificate
from micropen.host.calibration.signing import (
    SignatureCheck,
    create_signer,
    load_signer,
    verify_certificate,
)
from micropen.host.errors import InvalidInput

NAME, ROLE = "Dr. A. Reviewer", "Head of laboratory"


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A signatory's key and certificate, a stranger's, and a certificate signed by the first."""
    root = tmp_path_factory.mktemp("signing")
    key, cert = create_signer(root / "keys", NAME, ROLE, "Example Calibration Laboratory")
    _, stranger = create_signer(root / "stranger", "M. Allory", "Intruder")
    pdf = write_certificate(make_record(), root / "out", signer=load_signer(key=key, cert=cert))
    return {"key": key, "cert": cert, "stranger": stranger, "pdf": pdf, "root": root}


def test_the_key_is_owner_only_and_never_overwritten(signed: dict[str, Path]) -> None:
    assert stat.S_IMODE(signed["key"].stat().st_mode) == 0o600
    assert b"BEGIN CERTIFICATE" in signed["cert"].read_bytes()
    before = signed["key"].read_bytes()
    with pytest.raises(InvalidInput, match="never overwritten"):
        create_signer(signed["key"].parent, NAME, ROLE)
    assert signed["key"].read_bytes() == before


def test_a_signed_certificate_verifies_and_names_its_signer(signed: dict[str, Path]) -> None:
    check = verify_certificate(signed["pdf"], signed["cert"])
    assert check.ok and check.intact and check.unchanged and check.trusted is True
    assert check.signer is not None and (check.signer.name, check.signer.role) == (NAME, ROLE)
    assert f"signature by {NAME}, {ROLE}" in check.message() and "signer trusted" in check.message()
    untrusted = verify_certificate(signed["pdf"])  # no anchor: intact, trust not checked
    assert untrusted.ok and untrusted.trusted is None and "--trust" in untrusted.message()
    text = signed["pdf"].read_bytes()
    assert b"/DocMDP" in text  # a certification signature that permits no changes


def test_a_changed_byte_breaks_the_signature(signed: dict[str, Path], tmp_path: Path) -> None:
    data = bytearray(signed["pdf"].read_bytes())
    where = data.index(b"stream", 1000) + 40  # inside a page's content, inside the signed range
    data[where] ^= 0x01
    tampered = tmp_path / "tampered.pdf"
    tampered.write_bytes(bytes(data))
    check = verify_certificate(tampered, signed["cert"])
    assert check.signed and not check.intact and not check.ok
    assert "altered after it was signed" in check.message()


def test_an_incremental_update_that_changes_a_page_is_reported(
    signed: dict[str, Path], tmp_path: Path
) -> None:
    """The signed bytes stay intact; the content shown is changed by an appended revision."""
    with signed["pdf"].open("rb") as source:
        writer = IncrementalPdfFileWriter(source)
        page = writer.root["/Pages"]["/Kids"][0].get_object()
        page["/Contents"] = writer.add_object(
            generic.StreamObject(stream_data=b"BT /F1 12 Tf 100 600 Td (PASS 0.000 mm) Tj ET")
        )
        writer.update_container(page)
        out = io.BytesIO()
        writer.write(out)
    edited = tmp_path / "edited.pdf"
    edited.write_bytes(out.getvalue())
    check = verify_certificate(edited, signed["cert"])
    assert check.signed and check.intact and not check.unchanged and not check.ok
    assert "changed after it was signed" in check.message()


def test_unsigned_stranger_and_not_a_pdf(signed: dict[str, Path], tmp_path: Path) -> None:
    plain = write_certificate(make_record(), tmp_path)
    assert verify_certificate(plain) == SignatureCheck(str(plain), signed=False)
    assert "is not signed" in verify_certificate(plain).message()
    stranger = verify_certificate(signed["pdf"], signed["stranger"])
    assert stranger.intact and stranger.trusted is False and not stranger.ok
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InvalidInput, match="is not a PDF"):
        verify_certificate(tmp_path / "notes.txt")


def test_bad_key_files_are_bad_input(signed: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "junk.key").write_text("not a key")
    os.chmod(tmp_path / "junk.key", 0o600)
    with pytest.raises(InvalidInput, match="is not a private key"):
        load_signer(key=tmp_path / "junk.key", cert=signed["cert"])
    shared = tmp_path / "shared.key"
    shared.write_bytes(signed["key"].read_bytes())
    os.chmod(shared, 0o644)
    with pytest.raises(InvalidInput, match="chmod 600"):
        load_signer(key=shared, cert=signed["cert"])
    with pytest.raises(InvalidInput, match="does not belong to the certificate"):
        load_signer(key=signed["key"], cert=signed["stranger"])
    with pytest.raises(InvalidInput, match="is not an X.509 certificate"):
        load_signer(key=signed["key"], cert=tmp_path / "junk.key")
    with pytest.raises(InvalidInput, match="cannot read"):
        load_signer(key=tmp_path / "missing.key", cert=signed["cert"])


def test_a_pkcs12_file_signs_and_a_wrong_passphrase_is_bad_input(
    signed: dict[str, Path], tmp_path: Path
) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import (
        BestAvailableEncryption,
        load_pem_private_key,
        pkcs12,
    )

    key = load_pem_private_key(signed["key"].read_bytes(), password=None)
    cert = x509.load_pem_x509_certificate(signed["cert"].read_bytes())
    bundle = tmp_path / "signer.p12"
    bundle.write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"signer",
            key,
            cert,
            None,
            BestAvailableEncryption(b"s3cret"),  # type: ignore[arg-type]
        )
    )
    bundle.chmod(0o600)
    signer = load_signer(pkcs12_file=bundle, passphrase=b"s3cret")
    pdf = write_certificate(make_record(), tmp_path / "out", signer=signer)
    assert verify_certificate(pdf, signed["cert"]).ok
    with pytest.raises(InvalidInput, match="MICROPEN_SIGN_PASSPHRASE"):
        load_signer(pkcs12_file=bundle, passphrase=b"wrong")
    with pytest.raises(InvalidInput, match="not both"):
        load_signer(pkcs12_file=bundle, key=signed["key"], cert=signed["cert"])


def test_bytes_appended_after_the_signature_are_reported(
    signed: dict[str, Path], tmp_path: Path
) -> None:
    tampered = tmp_path / "appended.pdf"
    tampered.write_bytes(signed["pdf"].read_bytes() + b"\n% garbage appended\n")
    check = verify_certificate(tampered, signed["cert"])
    assert check.signed and not check.unchanged and not check.ok


def test_a_renamed_signatory_inside_the_signature_is_detected(
    signed: dict[str, Path], tmp_path: Path
) -> None:
    """The signer's certificate travels in /Contents, outside the signed byte range: renaming
    the signatory there (same length, so the file still parses) must not pass as the issued
    certificate."""
    data = signed["pdf"].read_bytes()
    old, new = NAME.encode().hex().encode(), b"Dr. M. Allory!!".hex().encode()
    assert len(old) == len(new) and old in data.lower()
    at = data.lower().index(old)
    tampered = tmp_path / "renamed.pdf"
    tampered.write_bytes(data[:at] + new + data[at + len(old) :])
    check = verify_certificate(tampered, signed["cert"])
    assert check.signed and not check.ok


def test_bytes_hidden_in_the_signature_padding_are_detected(
    signed: dict[str, Path], tmp_path: Path
) -> None:
    """/Contents is reserved larger than the signature; what follows it must stay zeros."""
    data = signed["pdf"].read_bytes()
    start = data.index(b"/Contents <") + len(b"/Contents <")
    end = data.index(b">", start)
    last = end - 1  # the field's last hex digit: padding, outside the signature itself
    assert data[last : last + 1] == b"0"
    tampered = tmp_path / "padding.pdf"
    tampered.write_bytes(data[:last] + b"7" + data[last + 1 :])
    check = verify_certificate(tampered, signed["cert"])
    assert check.signed and not check.ok
