"""A serial pen another program holds: one line that says who to look for (found by the C
kit's outside review: `micropen estop` during a `micropen run` printed pyserial's lock error)."""

from __future__ import annotations

import os

import pytest
import serial

from micropen.host.errors import TransportError
from micropen.host.transports import make_transport
from micropen.host.url import parse_pen_url

pytestmark = pytest.mark.looptime(False)  # a real pty


async def test_a_port_held_by_another_program_says_so() -> None:
    controller, device = os.openpty()
    path = os.ttyname(device)
    holder = serial.Serial(path, exclusive=True)
    try:
        transport = make_transport(parse_pen_url(path))
        with pytest.raises(TransportError) as refused:
            await transport.open()
        text = str(refused.value)
        assert "another program holds the port" in text and "\n" not in text
        assert "micropen run" in text
    finally:
        holder.close()
        os.close(controller)
        os.close(device)
