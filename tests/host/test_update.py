"""The host's uploader against the in-process simulated pen, in virtual time: pipelined,
resumable after a cable pull and a reboot, patient with a busy flash, refusing while a run is
active, and turning every refusal into one line that says what to do."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import looptime
import pytest
from _waits import delivering, pull_the_cable, sim_of, until

from micropen.host import AsyncPen
from micropen.host.errors import PenNotReady
from micropen.host.update import FirmwareUpdate, UpdateRefused, read_slots
from micropen.protocol import image
from micropen.protocol.messages import FwSlotId
from micropen.sim.devkey import dev_private_key


def _image(
    version: tuple[int, int, int] = (1, 1, 0), counter: int = 2, size: int = 40_000
) -> bytes:
    payload = hashlib.sha256(repr(version).encode()).digest() * (size // 32 + 1)
    return image.build(
        payload[:size], version=version, security_counter=counter, key=dev_private_key()
    )


@pytest.fixture
async def pen() -> AsyncIterator[AsyncPen]:
    with looptime.enabled():
        p = await AsyncPen.open("sim://?seed=8", log=None)
    yield p
    with looptime.enabled():
        await p.close()


async def test_upload_test_boot_confirm(pen: AsyncPen) -> None:
    seen: list[tuple[int, int]] = []
    update = FirmwareUpdate(pen, _image(), progress=lambda sent, total: seen.append((sent, total)))
    await update.upload()
    assert seen[-1] == (len(update.data), len(update.data))
    assert update.busy_waits >= 2  # the erase, then the verification: waited, not timed out
    assert pen.statistics()["retransmits"] == 0
    await update.test_boot()
    assert pen.identity is not None and pen.identity.firmware_minor == 1
    assert await update.confirm() == 2
    slots, primary = await read_slots(pen)
    assert [s.version for s in slots] == ["1.1.0", "1.0.0"]
    assert slots[0].confirmed and primary.counter_floor == 2


async def test_upload_survives_a_cable_pull_in_the_middle(pen: AsyncPen) -> None:
    data = _image(size=120_000)
    update = FirmwareUpdate(pen, data)
    sim = sim_of(pen).pen

    async def pull_midway() -> None:
        await until(
            lambda: sim.firmware.update.next_offset > 40_000, within=30, what="a third uploaded"
        )
        pull_the_cable(pen, 1500)

    puller = asyncio.ensure_future(pull_midway())
    await update.upload()
    await puller
    assert pen.counters["reconnects"] >= 1  # the link really went down and came back
    assert sim.bootloader.view(FwSlotId.UPDATE).valid
    assert sim.firmware.update.next_offset == len(data)


async def test_upload_starts_over_after_the_pen_rebooted(pen: AsyncPen) -> None:
    data = _image(size=60_000)
    sim = sim_of(pen)

    async def reboot_midway() -> None:
        await until(
            lambda: sim.pen.firmware.update.next_offset > 20_000, within=30, what="a third sent"
        )
        with sim._lock:
            sim.pen.power_cycle(sim.now())

    rebooter = asyncio.ensure_future(reboot_midway())
    update = FirmwareUpdate(pen, data)
    await update.upload()
    await rebooter
    assert update.resumes >= 1
    assert sim.pen.bootloader.view(FwSlotId.UPDATE).valid


async def test_refused_while_a_run_is_active(pen: AsyncPen) -> None:
    await pen.set_depth(0.5)
    await pen.set_rate(90)
    run_id = await pen.start_run(area="forehead", seconds=5)
    await delivering(pen, 5)
    with pytest.raises(PenNotReady, match="stop the run"):
        await FirmwareUpdate(pen, _image()).upload()
    await pen.stop()
    await pen.wait_run_end(run_id, timeout=2)


async def test_refusals_are_one_line_saying_what_to_do(pen: AsyncPen) -> None:
    with pytest.raises(UpdateRefused, match="below the pen's 1.*--security-counter of at least 1"):
        await FirmwareUpdate(pen, _image(counter=0)).upload()
    unsigned = image.build(b"x" * 5000, version=(1, 2, 0), security_counter=3, key=None)
    with pytest.raises(UpdateRefused, match=r"rejected the image \(UNSIGNED\)"):
        await FirmwareUpdate(pen, unsigned).upload()


async def test_lock_step_and_pipelined_uploads_give_the_same_image(pen: AsyncPen) -> None:
    data = _image(size=10_000)
    for window in (1, 16):
        await FirmwareUpdate(pen, data, window=window).upload()
        slots, _ = await read_slots(pen)
        assert slots[1].digest == image.parse(data).digest.hex()
