"""Handshake and identity: the pen says who it is, in the protocol this host speaks, and
refuses a host that speaks another."""

from __future__ import annotations

import pytest

from micropen.hil_tests.target import HilContext
from micropen.host import Pen
from micropen.host.errors import PenRefused
from micropen.protocol import limits as L
from micropen.protocol.messages import (
    PROTOCOL_VERSION,
    ErrorCode,
    GetStatus,
    Hello,
    Identity,
    PenState,
    Status,
)
from micropen.protocol.schema import schema_hash


def test_identity_matches_this_host(pen: Pen) -> None:
    ident = pen.identity
    assert ident.protocol_version == PROTOCOL_VERSION
    assert ident.schema_hash == schema_hash()
    assert ident.needle_count == L.NEEDLE_COUNT
    assert ident.serial and ident.model


def test_identity_reports_the_reference_envelope(pen: Pen) -> None:
    ident = pen.identity
    assert (ident.depth_min_um, ident.depth_max_um) == (L.DEPTH_MIN_UM, L.DEPTH_MAX_UM)
    assert ident.soft_cap_um == L.DEPTH_SOFT_CAP_UM
    assert (ident.rate_min_sps, ident.rate_max_sps) == (L.RATE_MIN_SPS, L.RATE_MAX_SPS)


def test_status_after_handshake_is_consistent(pen: Pen) -> None:
    status = pen.status()
    assert status.boot_id == pen.identity.boot_id
    assert status.state is PenState.IDLE
    assert status.watchdog_ms == L.HEARTBEAT_DEFAULT_MS
    assert status.telemetry_hz == 0
    assert status.uptime_ms > 0


def test_wrong_schema_is_refused_then_the_right_one_accepted(pen: Pen) -> None:
    core = pen.async_pen
    wrong = schema_hash() ^ 0x0100_0000
    with pytest.raises(PenRefused) as refused:
        pen.run_coroutine(core.request(lambda c: Hello(c, PROTOCOL_VERSION, wrong)))
    assert refused.value.code is ErrorCode.SCHEMA_MISMATCH
    with pytest.raises(PenRefused) as refused:
        pen.run_coroutine(core.request(lambda c: Hello(c, PROTOCOL_VERSION + 1, schema_hash())))
    assert refused.value.code is ErrorCode.SCHEMA_MISMATCH
    again = pen.run_coroutine(core.request(lambda c: Hello(c, PROTOCOL_VERSION, schema_hash())))
    assert isinstance(again, Identity) and again.boot_id == pen.identity.boot_id
    assert isinstance(pen.run_coroutine(core.request(lambda c: GetStatus(c))), Status)


def test_reconnecting_finds_the_same_boot(hil_context: HilContext) -> None:
    before = hil_context.pen().identity
    hil_context.release()
    after = hil_context.pen().identity
    assert (after.serial, after.boot_id) == (before.serial, before.boot_id)
