"""The pen's own fixed figures that the protocol reference states and the simulated firmware
runs on: its control loop, pairing, the reporting of link-security events, its update flash and
what a production unit announces. (The treatment envelope is ``limits.py``; what a pen must meet
in time is ``timing.py``.) Values marked *assumed* have no public source, as in ``limits.py``.
"""

from __future__ import annotations

from . import limits as L
from .messages import Capability

__all__ = [
    "AUTH_BURST",
    "AUTH_BURST_WINDOW_S",
    "AUTH_HOLD_S",
    "CAL_FACTORY_COUNTER",
    "CONTROL_TICK_MS",
    "ERASE_MS_PER_SECTOR",
    "FLASH_SECTOR_BYTES",
    "IDLE_TICK_EVERY",
    "MAX_PAIRINGS",
    "PAIRING_WINDOW_S",
    "PRODUCTION_CAPABILITIES",
    "TEMP_REARM_DC",
    "TEST_BOOT_RESET_DELAY_MS",
    "UNPROVEN_REPORT_EVERY_S",
    "UPDATE_SLOT_BYTES",
    "UPDATE_SLOT_SECTORS",
]

# --- control loop --------------------------------------------------------------------------
CONTROL_TICK_MS = 10  # sensors read and safety monitors run this often while anything moves
IDLE_TICK_EVERY = 50  # at rest, every this many ticks (0.5 s)
TEMP_REARM_DC = L.TEMP_WARN_DC - 5  # the temperature warning re-arms below this (0.1 °C)

# --- pairing -----------------------------------------------------------------------------------
MAX_PAIRINGS = 8  # paired hosts a pen keeps
PAIRING_WINDOW_S = 60.0  # the pairing button opens pairing mode for this long

# --- link-security events ----------------------------------------------------------------------
AUTH_HOLD_S = 2.0  # a paired host heard from this recently has a live link (UNPAIRED_CONNECT)
AUTH_BURST = 8  # frames failing authentication within one window that make AUTH_FAILURES
AUTH_BURST_WINDOW_S = 1.0  # the window, opened by the first failure after the last one ended
UNPROVEN_REPORT_EVERY_S = 1.0  # UNPROVEN_CONNECT at most this often

# --- update flash ------------------------------------------------------------------------------
FLASH_SECTOR_BYTES = 4096  # erase unit of the pen's program flash
UPDATE_SLOT_SECTORS = 64
UPDATE_SLOT_BYTES = FLASH_SECTOR_BYTES * UPDATE_SLOT_SECTORS  # the largest image (256 KiB)
ERASE_MS_PER_SECTOR = 20  # a 4 KiB NOR sector erase (datasheets: 20–45 ms; assumed)
TEST_BOOT_RESET_DELAY_MS = 100  # FwTestBoot's reply leaves, then the pen resets

# --- calibration -------------------------------------------------------------------------------
CAL_FACTORY_COUNTER = 1  # the counter of the record the factory writes

# --- identity ----------------------------------------------------------------------------------
# What a production pen announces in Identity.capabilities: never SIMULATOR or the fault
# injection and bench-instrument flags, which only a simulator sets.
PRODUCTION_CAPABILITIES = (
    Capability.CALIBRATION_STORAGE | Capability.TELEMETRY | Capability.LINK_AUTHENTICATION
)
