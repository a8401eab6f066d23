"""The pen's program flash: two image slots and a scratch sector, with the timing of real NOR.

Why a model of its own: the update path is judged by what happens when power goes at the wrong
moment, and by how the host copes with a slow erase (the first chunk after an erase is what
times out SMP clients). So the flash erases in sectors (to 0xFF), takes time doing it, and —
with a state file — lives in a file beside it, mapped into memory: a process killed mid-write
leaves exactly the bytes written so far, as a power cut leaves a real flash.

Layout: PRIMARY slot (the image the pen runs), UPDATE slot (uploads land here; after a swap it
holds the previous image, for a revert), then one SCRATCH sector used by the swap.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

from micropen.protocol import device
from micropen.protocol.messages import FwSlotId

__all__ = [
    "ERASE_S_PER_SECTOR",
    "FLASH_BYTES",
    "PROGRAM_S_PER_SECTOR",
    "SCRATCH",
    "SECTOR",
    "SLOT_BYTES",
    "Flash",
    "slot_base",
]

SECTOR = device.FLASH_SECTOR_BYTES
SLOT_SECTORS = device.UPDATE_SLOT_SECTORS
SLOT_BYTES = SECTOR * SLOT_SECTORS  # 256 KiB per image slot
SCRATCH = 2 * SLOT_BYTES  # offset of the swap's scratch sector
FLASH_BYTES = SCRATCH + SECTOR
ERASE_S_PER_SECTOR = device.ERASE_MS_PER_SECTOR / 1000  # a 4 KiB NOR sector erase
PROGRAM_S_PER_SECTOR = 0.004  # programming 4 KiB (page writes of 256 bytes)
ERASED = 0xFF


def slot_base(slot: FwSlotId) -> int:
    return int(slot) * SLOT_BYTES


class Flash:
    """Byte-addressed flash, in RAM or mapped from a file. Erasing sets whole sectors to 0xFF;
    programming writes bytes (the model does not enforce 1→0 only: the code under test never
    programs without erasing first, and tests check that)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._file: int | None = None
        self._map: mmap.mmap | None = None
        self.fresh = True  # no image was ever written (the factory programs one)
        if path is None:
            self._mem: bytearray | mmap.mmap = bytearray(b"\xff" * FLASH_BYTES)
            return
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            size = os.fstat(fd).st_size
            if size not in (0, FLASH_BYTES):
                raise OSError(f"{path}: {size} bytes is not a pen flash ({FLASH_BYTES} bytes)")
            if size == 0:
                os.pwrite(fd, b"\xff" * FLASH_BYTES, 0)
            else:
                self.fresh = False
            self._map = mmap.mmap(fd, FLASH_BYTES)
        except BaseException:
            os.close(fd)
            raise
        self._file = fd
        self._mem = self._map

    def read(self, offset: int, size: int) -> bytes:
        return bytes(self._mem[offset : offset + size])

    def erase(self, offset: int, sectors: int) -> None:
        assert offset % SECTOR == 0, "erase is per sector"
        self._mem[offset : offset + sectors * SECTOR] = b"\xff" * (sectors * SECTOR)

    def program(self, offset: int, data: bytes) -> None:
        self._mem[offset : offset + len(data)] = data
        self.fresh = False

    def copy_sector(self, source: int, target: int) -> None:
        """Erase the sector at ``target`` and program it with the sector at ``source``."""
        data = self.read(source, SECTOR)
        self.erase(target, 1)
        self.program(target, data)

    def damage(self, offset: int, size: int) -> None:
        """What a power cut does to a sector being written: half of it never arrives."""
        self._mem[offset : offset + size // 2] = b"\xff" * (size // 2)

    def flush(self) -> None:
        if self._map is not None:
            self._map.flush()

    def close(self) -> None:
        if self._map is not None:
            self._map.flush()
            self._map.close()
            self._map = None
        if self._file is not None:
            os.close(self._file)
            self._file = None
