"""What the C kit costs: ``-Os`` object sizes (flash) and the RAM of its structs, measured.

``python3 -m micropen.protocol.cgen --size OUT/`` compiles every ``OUT/*.c`` on its own with the
system compiler (``cc -std=c99 -Os -fno-pic -fno-asynchronous-unwind-tables -c``, ``$CC`` to
choose another), reads text/data/bss with
binutils' ``size``, and runs a small probe that prints ``sizeof`` of the kit's structs. The
figures are for the host compiler; ``docs/c-kit.md`` carries them in a block that
``--write-doc`` regenerates (and a test compares when the compiler is the same one).

This is a build tool, not protocol code: it runs the compiler; nothing else in the protocol
package does I/O.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import LocalProtocolError

__all__ = ["FLAGS", "ObjectSize", "SizeError", "SizeReport", "measure_folder", "measure_kit"]

# as a firmware is built: no position-independent code (its pointer tables would count as data)
# and no unwind tables (x86-64's default .eh_frame is no part of a firmware image)
FLAGS = ("-std=c99", "-Os", "-fno-pic", "-fno-asynchronous-unwind-tables", "-c")
# the contract's declaration, for measuring the codec before the core's mp_crc32.h exists
_CRC_DECLARATION = (
    "#ifndef MP_CRC32_H\n#define MP_CRC32_H\n#include <stddef.h>\n#include <stdint.h>\n"
    "uint32_t mp_crc32(uint32_t crc, const uint8_t *data, size_t n);\n#endif\n"
)
_STRUCT = re.compile(r"\bstruct\s+(mp_\w+)\s*\{")  # a definition, typedef'd or not


class SizeError(LocalProtocolError):
    """The kit could not be measured (no compiler, or it refused the code)."""


@dataclass(frozen=True, slots=True)
class ObjectSize:
    name: str
    text: int  # code and constant tables: flash
    data: int  # initialised variables: flash and RAM
    bss: int  # zeroed variables: RAM


@dataclass(frozen=True, slots=True)
class SizeReport:
    compiler: str  # first line of `cc --version`
    target: str  # `cc -dumpmachine`
    objects: list[ObjectSize]
    structs: dict[str, int]  # sizeof of every struct typedef'd in the kit's headers
    crc_declared_only: bool  # mp_crc32.h was absent: the codec was compiled against its prototype
    command: str = "cc " + " ".join(FLAGS)
    notes: list[str] = field(default_factory=list)

    def totals(self) -> ObjectSize:
        return ObjectSize(
            "total",
            sum(o.text for o in self.objects),
            sum(o.data for o in self.objects),
            sum(o.bss for o in self.objects),
        )

    def json(self) -> str:
        doc = asdict(self)
        doc["total"] = asdict(self.totals())
        return json.dumps(doc, sort_keys=True)

    def markdown(self) -> str:
        lines = [
            f"Compiler: {self.compiler} ({self.target}), `{self.command} FILE.c`; "
            "`size` (Berkeley: text = code and constant tables, data = initialised "
            "variables, bss = zeroed variables).",
            "",
            "| object | text | data | bss |",
            "|---|---|---|---|",
        ]
        for o in [*self.objects, self.totals()]:
            name = "**total**" if o.name == "total" else f"`{o.name}`"
            lines.append(f"| {name} | {o.text} | {o.data} | {o.bss} |")
        lines += ["", "| struct | sizeof (bytes) |", "|---|---|"]
        lines += [f"| `{name}` | {size} |" for name, size in self.structs.items()]
        if self.crc_declared_only:
            lines += [
                "",
                "`mp_crc32.h` is not in the kit yet (the hand-written core is not merged): "
                "`mp_messages.c` was compiled against the contract's declaration of `mp_crc32`.",
            ]
        lines += [f"\n{note}" for note in self.notes]
        return "\n".join(lines) + "\n"


def _compiler() -> str:
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        raise SizeError(f"no C compiler: {cc!r} not found; install gcc or set CC")
    if shutil.which("size") is None:
        raise SizeError("binutils' size not found; install binutils")
    return cc


def _run(args: list[str], cwd: Path | None = None) -> str:
    result = subprocess.run(args, capture_output=True, text=True, cwd=cwd, check=False)
    if result.returncode != 0:
        text = " ".join((result.stderr or result.stdout).split())[:400]
        raise SizeError(f"{' '.join(args)} failed: {text}")
    return result.stdout


def measure_folder(folder: Path) -> SizeReport:
    """Compile every ``*.c`` in ``folder`` with ``-Os`` and measure it (see the module doc)."""
    if not folder.is_dir():
        raise SizeError(f"{folder} is not a folder; give the folder gen-c wrote the kit into")
    sources = sorted(p for p in folder.iterdir() if p.suffix == ".c" and p.is_file())
    if not sources:
        raise SizeError(f"no .c files in {folder}; run micropen protocol gen-c {folder} first")
    cc = _compiler()
    compiler = _run([cc, "--version"]).splitlines()[0].strip()
    target = _run([cc, "-dumpmachine"]).strip()
    headers = sorted(p for p in folder.iterdir() if p.suffix == ".h" and p.is_file())
    with tempfile.TemporaryDirectory(prefix="micropen-size-") as scratch:
        work = Path(scratch)
        include = [f"-I{folder}"]
        declared_only = not (folder / "mp_crc32.h").exists()
        if declared_only:
            (work / "mp_crc32.h").write_text(_CRC_DECLARATION, encoding="ascii")
            include.append(f"-I{work}")
        objects = []
        for source in sources:
            obj = work / (source.stem + ".o")
            _run([cc, *FLAGS, *include, str(source), "-o", str(obj)])
            fields = _run(["size", "--format=berkeley", str(obj)]).splitlines()[1].split()
            objects.append(ObjectSize(obj.name, int(fields[0]), int(fields[1]), int(fields[2])))
        structs = _struct_sizes(cc, headers, include, work)
    return SizeReport(compiler, target, objects, structs, declared_only)


def _struct_sizes(cc: str, headers: list[Path], include: list[str], work: Path) -> dict[str, int]:
    """sizeof of the message union, of the largest message struct, and of every struct of the
    kit that is not a message (the core's link, deframer, reply cache…)."""
    names: list[str] = []
    for header in headers:
        text = header.read_text(encoding="utf-8", errors="replace")
        names += [m.group(1) for m in _STRUCT.finditer(text) if m.group(1) not in names]
    if not names:
        return {}
    probe = work / "probe.c"
    lines = ["#include <stdio.h>", *(f'#include "{h.name}"' for h in headers), "int main(void) {"]
    lines += [f'    printf("%s %lu\\n", "{n}", (unsigned long)sizeof(struct {n}));' for n in names]
    lines += ["    return 0;", "}"]
    probe.write_text("\n".join(lines) + "\n", encoding="ascii")
    exe = work / "probe"
    _run([cc, "-std=c99", *include, str(probe), "-o", str(exe)])
    sizes = {
        name: int(size) for name, size in (line.split() for line in _run([str(exe)]).splitlines())
    }
    messages = _message_structs(headers)
    kept: dict[str, int] = {}
    if "mp_message" in sizes:
        kept["mp_message"] = sizes["mp_message"]
    if messages:
        largest = max(messages, key=lambda n: sizes[n])
        kept[f"{largest} (largest message)"] = sizes[largest]
    small = {"mp_message", "mp_refusal", "mp_area", "mp_admission", *messages}
    kept |= {n: s for n, s in sizes.items() if n not in small}
    return kept


def _message_structs(headers: list[Path]) -> list[str]:
    found: list[str] = []
    for header in headers:
        text = header.read_text(encoding="utf-8", errors="replace")
        found += [f"mp_{m}" for m in re.findall(r"^#define MP_ID_(\w+) ", text, flags=re.M)]
    return found


def measure_kit(files: Mapping[str, tuple[str, bytes]]) -> SizeReport:
    """Measure a kit given as ``cgen.kit_files()`` gives it (written to a scratch folder)."""
    with tempfile.TemporaryDirectory(prefix="micropen-kit-") as scratch:
        folder = Path(scratch)
        for name, (_, data) in files.items():
            (folder / name).write_bytes(data)
        return measure_folder(folder)
