"""Timing: what a pen must meet, and what a host assumes of it.

One table for the reference (``docs/protocol.md``, "Timing"), the host (its timeouts and
heartbeats) and the HIL suite (its limits), so the three cannot disagree. Pen-side limits in
milliseconds, host-side assumptions in seconds, as each side's code uses them.
"""

from __future__ import annotations

from . import limits as L

__all__ = [
    "ESTOP_ACK_MAX_MS",
    "HEARTBEATS_PER_WATCHDOG",
    "HOST_ACK_DELAY_S",
    "HOST_COMMAND_TIMEOUT_S",
    "HOST_HANDSHAKE_TIMEOUT_S",
    "HOST_LIVENESS_TIMEOUT_S",
    "HOST_STOP_TIMEOUT_S",
    "RETRACT_MAX_MS",
    "STATE_REPORT_MAX_MS",
    "WATCHDOG_MARGIN_MS",
]

# --- what a pen must meet -----------------------------------------------------------------
ESTOP_ACK_MAX_MS = 20  # EmergencyStop to its Ack (motor off, needles on their way): median
RETRACT_MAX_MS = L.RETRACT_MAX_MS  # stop, e-stop, fault or watchdog to needles home
WATCHDOG_MARGIN_MS = 20  # a run stops within the watchdog time ± this of the host's last frame
STATE_REPORT_MAX_MS = 2  # a stop's Event follows the state change within this (pen clock)

# --- what a host assumes ---------------------------------------------------------------------
HOST_HANDSHAKE_TIMEOUT_S = 2.0  # SYN to Identity; past it the host retries the connection
HOST_COMMAND_TIMEOUT_S = 2.0  # a command unanswered this long is reported of unknown outcome
HOST_STOP_TIMEOUT_S = 1.0  # an urgent Stop unanswered this long: the watchdog is the backstop
HOST_LIVENESS_TIMEOUT_S = 0.75  # silence from the pen this long ends the link epoch
HOST_ACK_DELAY_S = 0.004  # a host may hold an ack this long to carry it on its next command
HEARTBEATS_PER_WATCHDOG = 4  # the host sends a heartbeat every watchdog / 4
