"""Hypothesis drives the update path through uploads, cable pulls, test boots, confirms and
power cuts at any instant; after every step the pen boots only a valid, signed image, the one
it runs is one it was allowed to run, and its security counter never falls."""

from __future__ import annotations

from _fw_helpers import begin, finish, make_image, send_chunks
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from test_firmware_harness import Host

from micropen.protocol.messages import FwConfirm, FwProgress, FwSlotId, FwTestBoot, PenState
from micropen.sim.bootloader import STEP_S

IMAGES = {
    "v1.1 c2": make_image((1, 1, 0), counter=2, size=9_000),
    "v1.2 c3": make_image((1, 2, 0), counter=3, size=14_000),
    "v0.9 c0 (downgrade)": make_image((0, 9, 0), counter=0, size=5_000),
    "v1.3 unsigned": make_image((1, 3, 0), counter=4, size=5_000, unsigned=True),
}
ALLOWED = {(1, 0, 0), (1, 1, 0), (1, 2, 0)}  # the factory image and the signed, newer ones
SWAP_MAX_S = 3 * 8 * STEP_S + 0.3  # the largest swap here (8 sectors) and the reset delay


class UpdateMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.host = Host(seed=33, link_faults=False)
        self.floor = 1
        self.offsets: dict[str, int] = {}
        self._reconnect()

    def _reconnect(self) -> None:
        pen = self.host.pen
        if pen.state is not PenState.BOOTLOADER and pen.firmware.update.reset_at is not None:
            self.host.run_for(0.15)  # a test boot's reset is due: let it happen first
        if self.host.pen.state is PenState.BOOTLOADER:
            self.host.run_for(SWAP_MAX_S)
        assert self.host.pen.state is not PenState.BOOTLOADER, "a swap never ended"
        self.host.connect()
        self.host.hello()

    @rule(name=st.sampled_from(sorted(IMAGES)), chunks=st.integers(1, 80))
    def upload_some(self, name: str, chunks: int) -> None:
        self._reconnect()
        data = IMAGES[name]
        reply = begin(self.host, data)
        if isinstance(reply, FwProgress):
            self.offsets[name] = send_chunks(self.host, data, reply.next_offset, limit=chunks)

    @rule()
    def finish(self) -> None:
        self._reconnect()
        finish(self.host)

    @rule()
    def test_boot(self) -> None:
        self._reconnect()
        self.host.cmd(FwTestBoot)

    @rule()
    def confirm(self) -> None:
        self._reconnect()
        self.host.cmd(FwConfirm)

    @rule(seconds=st.floats(0.0, 0.8))
    def power_cut(self, seconds: float) -> None:
        self.host.run_for(seconds)
        self.host.pen.power_cycle(self.host.now)

    @rule()
    def cable_pull(self) -> None:
        self._reconnect()

    @invariant()
    def boots_only_valid_allowed_images(self) -> None:
        pen = self.host.pen
        if pen.state is PenState.BOOTLOADER:
            return
        boot = pen.bootloader
        primary = boot.view(FwSlotId.PRIMARY)
        assert primary.valid and primary.image is not None
        assert primary.image.version in ALLOWED
        ident = pen.identity
        assert (ident.firmware_major, ident.firmware_minor, ident.firmware_patch) in ALLOWED
        floor = boot.state.security_counter
        assert floor >= self.floor, "the security counter fell"
        self.floor = floor
        assert primary.image.security_counter >= floor


TestUpdateMachine = UpdateMachine.TestCase
TestUpdateMachine.settings = settings(
    max_examples=40,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
