"""Firmware images: what is built parses back exactly; every way an image can be wrong is
refused with the check it failed — truncated, tampered, unsigned, signed by an unknown key,
malformed TLVs — and nothing else is."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from micropen.protocol import image
from micropen.protocol.errors import LocalProtocolError
from micropen.protocol.image import HEADER_SIZE, ImageError, ImageFault

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
PAYLOAD = bytes(range(256)) * 8


def _signed(payload: bytes = PAYLOAD, counter: int = 3) -> bytes:
    return image.build(payload, version=(1, 2, 3), security_counter=counter, key=KEY)


@given(
    payload=st.binary(max_size=2048),
    version=st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 0xFFFF)),
    counter=st.integers(0, 0xFFFF_FFFF),
    build_number=st.integers(0, 0xFFFF_FFFF),
    load_address=st.integers(0, 0xFFFF_FFFF),
)
def test_a_built_image_verifies_and_reads_back_exactly(
    payload: bytes, version: tuple[int, int, int], counter: int, build_number: int,
    load_address: int,
) -> None:  # fmt: skip
    data = image.build(
        payload, version=version, security_counter=counter, key=KEY,
        build_number=build_number, load_address=load_address,
    )  # fmt: skip
    got = image.verify(data, [KEY.public_key()])
    assert (got.payload, got.version, got.security_counter) == (payload, version, counter)
    assert (got.build, got.load_address, got.size) == (build_number, load_address, len(data))
    assert got.signed and got.key_hash == image.key_hash(KEY.public_key())


@given(st.data())
def test_any_single_flipped_bit_is_refused(data: st.DataObject) -> None:
    signed = bytearray(_signed())
    bit = data.draw(st.integers(0, len(signed) * 8 - 1))
    signed[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(ImageError):
        image.verify(bytes(signed), [KEY.public_key()])


@given(st.integers(0, len(_signed()) - 1))
def test_any_truncation_is_refused(length: int) -> None:
    with pytest.raises(ImageError) as info:
        image.verify(_signed()[:length], [KEY.public_key()])
    assert info.value.fault in (ImageFault.TRUNCATED, ImageFault.BAD_TLV, ImageFault.HASH_MISMATCH)


@pytest.mark.parametrize("offset", range(HEADER_SIZE + len(PAYLOAD), len(_signed())))
def test_every_byte_of_the_tlv_area_is_checked(offset: int) -> None:
    data = bytearray(_signed())
    data[offset] ^= 0x01
    with pytest.raises(ImageError):
        image.verify(bytes(data), [KEY.public_key()])


def test_a_tampered_payload_fails_the_hash() -> None:
    data = bytearray(_signed())
    data[HEADER_SIZE + 100] ^= 0xFF
    with pytest.raises(ImageError, match="SHA-256") as info:
        image.parse(bytes(data))
    assert info.value.fault is ImageFault.HASH_MISMATCH


def test_a_relabelled_security_counter_fails_the_hash() -> None:
    """The counter is in the hashed header: raising it to pass a downgrade check breaks the
    image."""
    data = bytearray(_signed(counter=3))
    data[16:20] = (9).to_bytes(4, "little")  # security_counter
    with pytest.raises(ImageError) as info:
        image.verify(bytes(data), [KEY.public_key()])
    assert info.value.fault is ImageFault.HASH_MISMATCH


def test_a_recomputed_hash_without_the_key_fails_the_signature() -> None:
    """An attacker who edits the payload and fixes the SHA-256 TLV still cannot sign."""
    good = image.parse(_signed())
    forged = image.build(good.payload[:-1] + b"X", version=(1, 2, 3), security_counter=3, key=None)
    tail = _signed()[HEADER_SIZE + len(PAYLOAD) :]  # the genuine KEY_HASH and signature
    sha_tlv = forged[HEADER_SIZE + len(PAYLOAD) + 4 : HEADER_SIZE + len(PAYLOAD) + 4 + 36]
    spliced = forged[: HEADER_SIZE + len(PAYLOAD)] + tail[:4] + sha_tlv + tail[4 + 36 :]
    with pytest.raises(ImageError) as info:
        image.verify(spliced, [KEY.public_key()])
    assert info.value.fault is ImageFault.BAD_SIGNATURE


def test_unsigned_and_unknown_key_images_are_refused() -> None:
    unsigned = image.build(PAYLOAD, version=(1, 0, 0), security_counter=1, key=None)
    assert not image.parse(unsigned).signed  # well formed, just not signed
    with pytest.raises(ImageError) as info:
        image.verify(unsigned, [KEY.public_key()])
    assert info.value.fault is ImageFault.UNSIGNED
    with pytest.raises(ImageError, match="not a trusted key") as info:
        image.verify(_signed(), [OTHER.public_key()])
    assert info.value.fault is ImageFault.UNKNOWN_KEY


def test_other_files_are_not_images() -> None:
    for data, fault in (
        (b"", ImageFault.TRUNCATED),
        (b"\x7fELF" + bytes(60), ImageFault.BAD_MAGIC),
    ):
        with pytest.raises(ImageError) as info:
            image.parse(data)
        assert info.value.fault is fault


def test_values_that_do_not_fit_are_refused_when_building() -> None:
    with pytest.raises(LocalProtocolError, match="major and minor 0–255"):
        image.build(b"", version=(256, 0, 0), security_counter=0, key=KEY)
    with pytest.raises(LocalProtocolError, match="security counter 4294967296"):
        image.build(b"", version=(1, 0, 0), security_counter=2**32, key=KEY)
    with pytest.raises(LocalProtocolError, match="larger than a slot"):
        image.build(bytes(4 * 1024 * 1024 + 1), version=(1, 0, 0), security_counter=0, key=KEY)


def _without(data: bytes, kind: image.TlvType) -> bytes:
    """The image with one TLV taken out (TLV area length fixed up)."""
    body_at = HEADER_SIZE + len(image.parse(data).payload)
    pos, kept = body_at + 4, b""
    while pos < len(data):
        length = int.from_bytes(data[pos + 2 : pos + 4], "little")
        if data[pos] != kind:
            kept += data[pos : pos + 4 + length]
        pos += 4 + length
    info = (0x6907).to_bytes(2, "little") + (4 + len(kept)).to_bytes(2, "little")
    return data[:body_at] + info + kept


def test_a_signature_without_the_key_hash_is_unsigned_everywhere() -> None:
    data = _without(_signed(), image.TlvType.KEY_HASH)
    assert not image.parse(data).signed
    with pytest.raises(ImageError) as info:
        image.verify(data, [KEY.public_key()])
    assert info.value.fault is ImageFault.UNSIGNED


def test_an_image_without_its_hash_is_malformed() -> None:
    with pytest.raises(ImageError, match="no SHA-256 TLV") as info:
        image.parse(_without(_signed(), image.TlvType.SHA256))
    assert info.value.fault is ImageFault.BAD_TLV
