"""The C core's authentication primitives (mp_hkdf_sha256, mp_session_keys, mp_synack_tag,
mp_resume_tag in protocol/c/mp_link.c, on the OpenSSL HMAC hook) give the bytes
protocol/linkauth.py and the cryptography package's HKDF give; and the C pen's replay window
is the document's 64 frames, checked with frames sealed by linkauth.FrameAuth."""

from __future__ import annotations

import ctypes

from _core_harness import core_lib
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given
from hypothesis import strategies as st

from micropen.protocol.linkauth import AuthOffer, resume_tag, session_keys, synack_tag

KEYS = st.binary(min_size=32, max_size=32)
NONCES = st.binary(min_size=16, max_size=16)
U32 = st.integers(0, 2**32 - 1)


@given(
    salt=st.one_of(st.just(b""), st.binary(min_size=1, max_size=80)),
    ikm=st.binary(max_size=80),
    info=st.binary(max_size=80),
    length=st.integers(1, 200),
)
def test_hkdf_is_rfc_5869(salt: bytes, ikm: bytes, info: bytes, length: int) -> None:
    out = ctypes.create_string_buffer(length)
    core_lib().core_hkdf(salt or None, len(salt), ikm, len(ikm), info, len(info), out, length)
    expected = HKDF(hashes.SHA256(), length, salt or None, info).derive(ikm)
    assert out.raw == expected


@given(key=KEYS, epoch=st.integers(0, 255), host_id=U32, hn=NONCES, pen_id=U32, pn=NONCES)
def test_session_keys_and_synack_tag_are_linkauths(
    key: bytes, epoch: int, host_id: int, hn: bytes, pen_id: int, pn: bytes
) -> None:
    to_pen, to_host, tag = (ctypes.create_string_buffer(n) for n in (32, 32, 16))
    lib = core_lib()
    lib.core_session_keys(key, epoch, host_id, hn, pen_id, pn, to_pen, to_host)
    lib.core_synack_tag(key, epoch, host_id, hn, pen_id, pn, tag)
    offer = AuthOffer(host_id, hn)
    assert (to_pen.raw, to_host.raw) == session_keys(key, epoch, offer, pen_id, pn)
    assert tag.raw == synack_tag(key, epoch, offer, pen_id, pn)


@given(key=KEYS, epoch=st.integers(0, 255), nonce=U32, attempt=U32)
def test_resume_tag_is_linkauths(key: bytes, epoch: int, nonce: int, attempt: int) -> None:
    tag = ctypes.create_string_buffer(8)
    core_lib().core_resume_tag(key, epoch, nonce, attempt, tag)
    assert tag.raw == resume_tag(key, epoch, nonce, attempt)
