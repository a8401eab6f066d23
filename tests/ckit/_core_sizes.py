"""RAM and flash of the hand-written C core, as protocol/c/CORE.md states them.

    python3 tests/ckit/_core_sizes.py          # prints the table CORE.md carries
    python3 tests/ckit/_core_sizes.py --write  # and writes it into protocol/c/CORE.md

RAM: ``sizeof`` of the structures a firmware allocates (compiled and run on this machine).
Flash: ``size`` (text, data, bss) of each protocol/c/mp_*.c compiled alone with
``cc -std=c99 -Os -c``. Both depend on the compiler and the target; the table names them.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "protocol" / "c"
STRUCTS = ("mp_link", "mp_replycache", "mp_deframer")
PROBE = """#include <stdio.h>
#include "mp_link.h"
#include "mp_replycache.h"
int main(void) {
    printf("%u %u %u\\n", (unsigned)sizeof(mp_link), (unsigned)sizeof(mp_replycache),
           (unsigned)sizeof(mp_deframer));
    return 0;
}
"""


def compiler() -> str:
    return os.environ.get("CC", "cc")


def compiler_version() -> str:
    out = subprocess.run([compiler(), "--version"], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()[0].strip()


# a smaller pen: 4 frames in flight, 8 waiting, 4 received messages held, 2 KiB of replies
COMPACT = (
    "-DMP_LINK_WINDOW_MAX=4",
    "-DMP_LINK_BACKLOG=8",
    "-DMP_LINK_RX_SLOTS=4",
    "-DMP_REPLYCACHE_BYTES=2048",
)


def ram(defines: tuple[str, ...] = ()) -> dict[str, int]:
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = Path(tmp) / "probe.c", Path(tmp) / "probe"
        src.write_text(PROBE, encoding="ascii")
        cmd = [compiler(), "-std=c99", *defines, f"-I{CORE}", str(src), "-o", str(exe)]
        subprocess.run(cmd, check=True)
        values = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    return dict(zip(STRUCTS, map(int, values.split()), strict=True))


def flash() -> dict[str, tuple[int, int, int]]:
    """(text, data, bss) of each core object at -Os."""
    out: dict[str, tuple[int, int, int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for source in sorted(CORE.glob("mp_*.c")):
            obj = Path(tmp) / (source.stem + ".o")
            cmd = [compiler(), "-std=c99", "-Os", "-c", str(source), f"-I{CORE}", "-o", str(obj)]
            subprocess.run(cmd, check=True)
            text = subprocess.run(["size", str(obj)], capture_output=True, text=True, check=True)
            numbers = re.findall(r"^\s*(\d+)\s+(\d+)\s+(\d+)", text.stdout, re.M)[0]
            out[source.stem] = (int(numbers[0]), int(numbers[1]), int(numbers[2]))
    return out


def table() -> str:
    r, small, f = ram(), ram(COMPACT), flash()
    lines = [
        f"Measured with `{compiler_version()}` on {platform.machine()} "
        "(`python3 tests/ckit/_core_sizes.py`):",
        "",
        f"| RAM: structure | bytes, defaults | bytes, `{' '.join(COMPACT)}` |",
        "|---|---|---|",
        *(f"| `{name}` | {r[name]} | {small[name]} |" for name in STRUCTS),
        "",
        "| flash: object (`cc -std=c99 -Os -c`, `size`) | text | data | bss |",
        "|---|---|---|---|",
        *(f"| `{name}.o` | {t} | {d} | {b} |" for name, (t, d, b) in f.items()),
        f"| total | {sum(v[0] for v in f.values())} | {sum(v[1] for v in f.values())} "
        f"| {sum(v[2] for v in f.values())} |",
    ]
    return "\n".join(lines)


def write() -> None:
    doc = CORE / "CORE.md"
    text = doc.read_text(encoding="utf-8")
    start = text.index("-->\n", text.index("<!-- sizes:")) + 4
    end = text.index("\n<!-- /sizes -->")
    doc.write_text(text[:start] + table() + text[end:], encoding="utf-8")


if __name__ == "__main__":
    if "--write" in sys.argv[1:]:
        write()
    sys.stdout.write(table() + "\n")
