"""The simulated pen's update path and bootloader (hazard 7: unauthenticated or corrupted
firmware). Every refusal here comes from the pen itself: the harness host checks nothing."""

from __future__ import annotations

import hashlib

import pytest
from _fw_helpers import begin, finish, make_image, reboot_into_update, send_chunks, slot, upload
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from test_firmware_harness import Host

from micropen.protocol import image
from micropen.protocol.image import ImageFault
from micropen.protocol.messages import (
    ErrorCode,
    EventCode,
    FwBegin,
    FwConfirm,
    FwPhase,
    FwProgress,
    FwSlotId,
    FwTestBoot,
    Nak,
    PenState,
    RunMode,
)
from micropen.sim.bootloader import STEP_S
from micropen.sim.pen import SimConfig, SimulatedPen


def _host(**config: object) -> Host:
    host = Host(seed=21, link_faults=False, **config)
    host.connect()
    host.hello()
    return host


def _running(host: Host) -> tuple[int, int, int]:
    ident = host.pen.identity
    return (ident.firmware_major, ident.firmware_minor, ident.firmware_patch)


def test_signed_newer_image_is_installed_on_trial_then_confirmed() -> None:
    host = _host()
    data = make_image((1, 1, 0), counter=2)
    reply = upload(host, data)
    assert isinstance(reply, FwProgress) and reply.phase is FwPhase.VERIFIED
    reboot_into_update(host)
    assert _running(host) == (1, 1, 0)
    primary = slot(host, FwSlotId.PRIMARY)
    assert (primary.confirmed, primary.security_counter, primary.counter_floor) == (0, 2, 1)
    assert host.events(EventCode.FIRMWARE_TEST_BOOT)[-1].value == 2
    assert host.ack(FwConfirm).value == 2
    assert slot(host, FwSlotId.PRIMARY).confirmed == 1
    assert host.events(EventCode.FIRMWARE_CONFIRMED)[-1].value == 2
    host.pen.power_cycle(host.now)  # confirmed: a reboot keeps it
    host.run_for(0.3)
    assert _running(host) == (1, 1, 0)


def test_a_reboot_before_confirm_reverts_to_the_previous_image() -> None:
    host = _host()
    upload(host, make_image((1, 1, 0), counter=2))
    reboot_into_update(host)
    host.pen.power_cycle(host.now)  # the new image "crashed" before confirming itself
    host.run_for(3 * 7 * STEP_S + 0.2)
    host.connect()
    host.hello()
    assert _running(host) == (1, 0, 0)
    assert host.events(EventCode.FIRMWARE_REVERTED)[-1].value == 2
    assert slot(host, FwSlotId.PRIMARY).counter_floor == 1  # never confirmed: never raised
    assert slot(host, FwSlotId.UPDATE).version_minor == 1  # the trial image, kept aside


@pytest.mark.parametrize(
    ("label", "build", "fault"),
    [
        ("unsigned", lambda: make_image(unsigned=True), ImageFault.UNSIGNED),
        ("wrong key", lambda: make_image(key=Ed25519PrivateKey.generate()), ImageFault.UNKNOWN_KEY),
        ("tampered", lambda: _tampered(make_image()), ImageFault.HASH_MISMATCH),
        ("truncated", lambda: make_image()[:-7], ImageFault.TRUNCATED),
        ("forged signature", lambda: _forged(make_image()), ImageFault.BAD_SIGNATURE),
    ],
)
def test_bad_images_are_refused_and_logged(label: str, build: object, fault: ImageFault) -> None:
    host = _host()
    data = build()  # type: ignore[operator]
    reply = upload(host, data)
    assert isinstance(reply, Nak), f"{label}: {reply}"
    assert (reply.error, reply.value) == (ErrorCode.IMAGE_REJECTED, int(fault)), label
    assert host.events(EventCode.IMAGE_REJECTED)[-1].value == int(fault)
    refused = host.cmd(FwTestBoot)  # nothing to test-boot
    assert isinstance(refused, Nak) and refused.error is ErrorCode.IMAGE_NOT_VERIFIED
    assert _running(host) == (1, 0, 0)


def _tampered(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :]


def _forged(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0x80])  # the last byte is the signature's


def test_a_downgrade_is_refused_before_any_erase_and_after_upload() -> None:
    host = _host()
    old = make_image((0, 9, 0), counter=0)
    refused = begin(host, old)
    assert isinstance(refused, Nak)
    assert (refused.error, refused.value, refused.limit) == (ErrorCode.IMAGE_DOWNGRADE, 0, 1)
    assert host.events(EventCode.IMAGE_REJECTED)[-1].value == int(ImageFault.DOWNGRADE)
    # lying in FwBegin does not help: the signed header's counter is what the pen checks
    begin(host, old, counter=5)
    send_chunks(host, old, 0)
    reply = finish(host)
    assert isinstance(reply, Nak) and reply.value == int(ImageFault.DOWNGRADE)


def test_no_upload_while_an_image_is_on_trial_so_the_fallback_survives() -> None:
    """Found by review: an upload during a trial erased the update slot, which holds the
    confirmed image a revert needs; a reboot then had nothing valid to go back to."""
    host = _host()
    upload(host, make_image((1, 1, 0), counter=2))
    reboot_into_update(host)
    refused = begin(host, make_image((1, 2, 0), counter=3))
    assert isinstance(refused, Nak) and refused.error is ErrorCode.IMAGE_ON_TRIAL
    assert slot(host, FwSlotId.UPDATE).valid  # the fallback is untouched
    host.pen.power_cycle(host.now)
    host.run_for(3 * 7 * STEP_S + 0.2)
    host.connect()
    host.hello()
    assert _running(host) == (1, 0, 0)  # reverted to the confirmed image
    assert isinstance(upload(host, make_image((1, 2, 0), counter=3)), FwProgress)


def test_the_counter_only_rises_after_confirm() -> None:
    host = _host()
    upload(host, make_image((2, 0, 0), counter=7))
    reboot_into_update(host)
    host.ack(FwConfirm)
    again = begin(host, make_image((1, 5, 0), counter=6))  # newer version, older counter
    assert isinstance(again, Nak) and (again.value, again.limit) == (6, 7)


def test_no_update_while_needles_move() -> None:
    host = _host()
    host.ready(depth_um=400, rate_sps=90)
    host.start(1, RunMode.STROKES, strokes=5000)
    reply = begin(host, make_image())
    assert isinstance(reply, Nak) and reply.error is ErrorCode.BAD_STATE
    assert reply.value == int(PenState.RUNNING)


def test_chunks_during_the_erase_are_answered_busy_and_not_written() -> None:
    host = _host()
    data = make_image(size=60_000)
    first = host.cmd(FwBegin, len(data), hashlib.sha256(data).digest(), 2)
    assert isinstance(first, FwProgress) and first.phase is FwPhase.ERASING
    assert first.busy_ms == 15 * 20  # 15 sectors of 4 KiB, 20 ms each
    early = send_chunks(host, data, 0, limit=1)
    assert early == 0
    host.run_for(first.busy_ms / 1000)
    assert send_chunks(host, data, 0, limit=1) == 224


def test_repeated_skipped_and_overlong_chunks_are_harmless() -> None:
    host = _host()
    data = make_image()
    begin(host, data)
    assert send_chunks(host, data, 0, limit=3) == 3 * 224
    assert send_chunks(host, data, 224, limit=1) == 3 * 224  # a re-sent chunk: not rewritten
    assert send_chunks(host, data, 10 * 224, limit=1) == 3 * 224  # ahead: the pen says where
    from micropen.protocol.messages import FW_CHUNK_BYTES, FwChunk

    past = host.cmd(FwChunk, len(data) - 1, 2, bytes(FW_CHUNK_BYTES))
    assert isinstance(past, Nak) and past.error is ErrorCode.CHUNK_OUT_OF_RANGE
    early_finish = finish(host)
    assert isinstance(early_finish, Nak) and early_finish.error is ErrorCode.UPLOAD_INCOMPLETE
    send_chunks(host, data, 3 * 224)
    assert isinstance(finish(host), FwProgress)


def test_an_upload_resumes_after_a_cable_pull_where_the_pen_stands() -> None:
    host = _host()
    data = make_image(size=30_000)
    begin(host, data)
    half = send_chunks(host, data, 0, limit=60)
    host.connect()  # a new link epoch: the cable was pulled and plugged back
    host.hello()
    resumed = begin(host, data)
    assert isinstance(resumed, FwProgress) and resumed.next_offset == half
    assert resumed.phase is FwPhase.RECEIVING and resumed.busy_ms == 0  # no second erase
    send_chunks(host, data, half)
    assert isinstance(finish(host), FwProgress)


def test_power_loss_mid_upload_boots_the_old_image_and_forgets_the_upload() -> None:
    host = _host()
    data = make_image()
    begin(host, data)
    send_chunks(host, data, 0, limit=20)
    host.pen.power_cycle(host.now)
    host.run_for(0.2)
    host.connect()
    host.hello()
    assert _running(host) == (1, 0, 0)
    assert slot(host, FwSlotId.UPDATE).phase is FwPhase.NONE
    assert isinstance(upload(host, data), FwProgress)  # starts over, and works


def _cut_during_swap(host: Host, steps_into_swap: float) -> None:
    reply = host.cmd(FwTestBoot)
    assert isinstance(reply, FwProgress)
    host.run_for(0.1 + steps_into_swap * STEP_S + 1e-4)  # reset delay, then into the swap
    assert host.pen.state is PenState.BOOTLOADER
    host.pen.power_cycle(host.now)


@pytest.mark.parametrize("step", [0.5, 1.5, 2.5, 3.5, 7.5, 11.5, 14.5])
def test_power_loss_at_every_swap_step_still_installs_a_whole_image(step: float) -> None:
    host = _host()
    data = make_image((1, 1, 0), counter=2, size=20_000)  # 5 sectors: 15 swap steps
    upload(host, data)
    _cut_during_swap(host, step)
    host.run_for(16 * STEP_S + 0.2)
    host.connect()
    host.hello()
    assert _running(host) == (1, 1, 0)
    primary, update = slot(host, FwSlotId.PRIMARY), slot(host, FwSlotId.UPDATE)
    assert primary.valid and update.valid and update.version_minor == 0  # both whole
    assert primary.confirmed == 0


@pytest.mark.parametrize("step", [0.5, 4.5, 8.5, 13.5])
def test_power_loss_during_a_revert_still_reverts(step: float) -> None:
    host = _host()
    upload(host, make_image((1, 1, 0), counter=2, size=20_000))
    reboot_into_update(host)
    host.pen.power_cycle(host.now)  # not confirmed: this boot reverts ...
    host.run_for(step * STEP_S)
    assert host.pen.state is PenState.BOOTLOADER
    host.pen.power_cycle(host.now)  # ... and power goes in the middle of it
    host.run_for(20 * STEP_S + 0.2)
    host.connect()
    host.hello()
    assert _running(host) == (1, 0, 0)
    assert slot(host, FwSlotId.PRIMARY).valid and slot(host, FwSlotId.UPDATE).valid


def test_a_swap_killed_with_its_process_completes_at_the_next_power_on(tmp_path: object) -> None:
    from pathlib import Path

    state = str(Path(str(tmp_path)) / "pen.json")
    host = Host(seed=21, link_faults=False, state=state)
    host.connect()
    host.hello()
    upload(host, make_image((1, 1, 0), counter=2))
    _cut_during_swap(host, 6.5)
    host.pen.state_file.release()  # type: ignore[union-attr]  # the process died: OS unlocks
    reborn = SimulatedPen(SimConfig(seed=21, link_faults=False, state=state), now=0.0)
    ident = reborn.identity
    assert (ident.firmware_major, ident.firmware_minor) == (1, 1)
    assert reborn.bootloader.view(FwSlotId.UPDATE).valid
    reborn.close(reborn.now)


def test_the_security_counter_survives_in_the_state_file(tmp_path: object) -> None:
    from pathlib import Path

    state = str(Path(str(tmp_path)) / "pen.json")
    host = Host(seed=21, link_faults=False, state=state)
    host.connect()
    host.hello()
    upload(host, make_image((1, 1, 0), counter=3))
    reboot_into_update(host)
    host.ack(FwConfirm)
    host.pen.close(host.now)
    again = Host(seed=21, link_faults=False, state=state)
    again.connect()
    again.hello()
    assert slot(again, FwSlotId.PRIMARY).counter_floor == 3
    refused = begin(again, make_image((1, 2, 0), counter=2))
    assert isinstance(refused, Nak) and refused.error is ErrorCode.IMAGE_DOWNGRADE
    again.pen.close(again.now)


def test_image_module_and_bootloader_agree_on_the_factory_image() -> None:
    pen = SimulatedPen(SimConfig(seed=3, firmware=(2, 4, 6)))
    found = image.parse(pen.bootloader.slot_bytes(FwSlotId.PRIMARY) or b"")
    assert found.version == (2, 4, 6) and found.security_counter == 1
    assert pen.bootloader.view(FwSlotId.PRIMARY).valid


# ------------------------------------------------------------------ the bootloader's own checks
def _boot_after_cut(host: Host) -> None:
    host.pen.power_cycle(host.now)
    host.run_for(3 * 16 * STEP_S + 0.3)
    host.connect()
    host.hello()


def test_the_bootloader_verifies_before_it_swaps_even_after_the_firmware_verified() -> None:
    """Found by the mutation run: FwFinish's check hid the bootloader's own. An update slot
    changed after verification (flash damage, a hostile writer) is never installed."""
    from micropen.sim.flash import slot_base

    host = _host()
    upload(host, make_image((1, 1, 0), counter=2))
    host.cmd(FwTestBoot)
    host.pen.flash.program(slot_base(FwSlotId.UPDATE) + 600, b"\x00" * 16)  # damaged
    host.run_for(0.5)
    host.connect()
    host.hello()
    assert _running(host) == (1, 0, 0)
    assert host.events(EventCode.IMAGE_REJECTED)[-1].value == int(ImageFault.HASH_MISMATCH)


def test_a_damaged_primary_with_no_allowed_fallback_is_never_run() -> None:
    from micropen.sim.flash import slot_base

    host = _host()
    upload(host, make_image((1, 1, 0), counter=2))
    reboot_into_update(host)
    host.ack(FwConfirm)  # primary 1.1.0 (counter 2), update slot 1.0.0 (counter 1)
    host.pen.flash.program(slot_base(FwSlotId.PRIMARY) + 600, b"\x00" * 16)
    host.pen.power_cycle(host.now)
    host.run_for(1.0)
    # the update slot's 1.0.0 is below the pen's counter and the primary does not verify:
    # the pen stays in its bootloader, silent, rather than run either
    assert host.pen.state is PenState.BOOTLOADER and host.pen.next_deadline() == float("inf")


def test_recovery_uses_an_update_image_the_counter_allows() -> None:
    from micropen.sim.flash import slot_base

    host = _host()
    upload(host, make_image((1, 1, 0), counter=1))  # same counter as the factory image
    reboot_into_update(host)
    host.ack(FwConfirm)
    host.pen.flash.program(slot_base(FwSlotId.PRIMARY) + 600, b"\x00" * 16)
    _boot_after_cut(host)
    assert _running(host) == (1, 0, 0)  # recovered from the update slot, and it is valid
    assert host.pen.bootloader.view(FwSlotId.PRIMARY).valid
    assert slot(host, FwSlotId.PRIMARY).confirmed == 1


def test_a_confirmed_image_survives_reboots_without_a_swap() -> None:
    host = _host()
    upload(host, make_image((1, 1, 0), counter=2))
    reboot_into_update(host)
    host.ack(FwConfirm)
    host.pen.power_cycle(host.now)
    assert host.pen.state is not PenState.BOOTLOADER  # no swap at all
    host.run_for(0.2)
    assert _running(host) == (1, 1, 0)


def test_an_announced_digest_binds_the_upload() -> None:
    """FwBegin announces A's digest; a validly signed image B is sent instead: refused."""
    import hashlib

    from micropen.protocol.messages import FwBegin

    host = _host()
    a, b = make_image((1, 1, 0), counter=2), make_image((1, 2, 0), counter=2)
    assert len(a) == len(b)
    first = host.cmd(FwBegin, len(a), hashlib.sha256(a).digest(), 2)
    host.run_for(first.busy_ms / 1000)  # type: ignore[union-attr]
    send_chunks(host, b, 0)
    reply = finish(host)
    assert isinstance(reply, Nak) and reply.value == int(ImageFault.HASH_MISMATCH)
