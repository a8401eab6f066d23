"""The pen under test behind the fault-injecting link proxy (``micropen.tools.proxy``).

The session's own connection is released, the proxy opens the pen's port, and a new connection
is made through the proxy — so the same tests run in front of the simulator and a bench pen.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from micropen.host import Pen, open_pen
from micropen.host.errors import HostError
from micropen.tools.proxy import ProxyThread
from micropen.tools.proxy_faults import FaultSpec

from .target import COMMAND_TIMEOUT_S, HilContext, make_ready

__all__ = ["through_proxy"]


@contextlib.contextmanager
def through_proxy(
    ctx: HilContext, faults: FaultSpec | None = None, *, listen: str = "pty", seed: int = 0
) -> Iterator[tuple[ProxyThread, Pen]]:
    """A proxy in front of the pen and a ready connection through it."""
    if ctx.url.startswith("sim://"):
        pytest.skip("an in-process sim:// pen cannot be shared with the proxy; use --pen PATH")
    url = ctx.release()
    with ProxyThread(url, listen, faults=faults, seed=seed) as proxy:
        address = proxy.address if listen == "pty" else f"socket://127.0.0.1:{proxy.address}"
        pen = open_pen(address, command_timeout=COMMAND_TIMEOUT_S, purpose="conformance")
        try:
            make_ready(ctx, pen)
            yield proxy, pen
        finally:
            with contextlib.suppress(HostError):
                pen.stop()
            ctx.link_stats.append({"via": "proxy", **pen.statistics()})
            with contextlib.suppress(HostError):
                pen.close()
