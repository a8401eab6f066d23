"""CPU-heavy work of the station (certificate PDFs: render and sign) in a separate process.

A thread is not enough: reportlab and the PAdES signer are pure Python and hold the GIL, so
six PDF downloads in threads stalled the event loop for most of a second — a stop waited
behind them. Here one worker process (forkserver or spawn: no copy of the server's threads
and sockets) does it, fed plain data (a record's dict, file paths); at most ``QUEUE_MAX`` jobs
wait for it, more are refused (503 with Retry-After), so a flood of downloads costs the event
loop nothing but a few pickles."""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Any

from starlette.exceptions import HTTPException

__all__ = ["QUEUE_MAX", "CpuPool", "render_pdf", "write_signed_pdf"]

QUEUE_MAX = 8  # jobs in flight or waiting for the worker; more get 503 + Retry-After
RETRY_AFTER_S = 5


class CpuPool:
    """One worker process, started on first use, ended by :meth:`close`."""

    def __init__(self, queue_max: int = QUEUE_MAX) -> None:
        self._executor: ProcessPoolExecutor | None = None
        self._queue_max = queue_max
        self._pending = 0

    def _get(self) -> ProcessPoolExecutor:
        if self._executor is None:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context(
                "forkserver" if "forkserver" in methods else "spawn"
            )
            self._executor = ProcessPoolExecutor(max_workers=1, mp_context=context)
        return self._executor

    @property
    def pending(self) -> int:
        return self._pending

    async def run(self, fn: Any, *args: Any) -> Any:
        if self._pending >= self._queue_max:
            raise HTTPException(
                503,
                f"{self._pending} certificate jobs are already waiting (limit {self._queue_max});"
                f" try again in {RETRY_AFTER_S} s",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        self._pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._get(), fn, *args)
        finally:
            self._pending -= 1

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


# --- what runs in the worker (module-level functions: picklable by reference) ---------------
def render_pdf(record: dict[str, Any], signatory: str, role: str) -> bytes:
    from micropen.host.calibration import CalibrationRecord
    from micropen.host.calibration.certificate import Authorisation, render

    return render(CalibrationRecord.from_dict(record), Authorisation(signatory, role, False))


@lru_cache(maxsize=4)
def _signer(key: str, cert: str) -> Any:
    from micropen.host.calibration.signing import load_signer

    return load_signer(key=Path(key), cert=Path(cert))


def write_signed_pdf(record: dict[str, Any], out_dir: str, key: str, cert: str) -> str:
    from micropen.host.calibration import CalibrationRecord
    from micropen.host.calibration.certificate import write_certificate

    path = write_certificate(
        CalibrationRecord.from_dict(record), Path(out_dir), signer=_signer(key, cert)
    )
    return str(path)
