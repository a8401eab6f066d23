"""``micropen protocol gen-c OUT/`` as a firmware engineer runs it: the installed command, in a
subprocess. It writes the kit (the generated codec and the core of protocol/c), the same bytes
every time; it refuses, in one line with exit code 2, an OUT that is a file or a non-empty
folder without --force; --json prints one document listing each file with its sha256."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from micropen.protocol import cgen

ROOT = Path(__file__).resolve().parents[2]


def _micropen() -> str:
    """The installed console script (next to this interpreter, else on PATH)."""
    script = Path(sys.executable).with_name("micropen")
    found = str(script) if script.exists() else shutil.which("micropen")
    if found is None:
        pytest.fail("the micropen console script is not installed: pip install -e '.[test]'")
    return found


def gen_c(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_micropen(), "protocol", "gen-c", *args], capture_output=True, text=True, timeout=60
    )


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_writes_the_kit_and_lists_it_in_one_json_document(tmp_path: Path) -> None:
    out = tmp_path / "fw" / "micropen"  # parents are created
    done = gen_c(str(out), "--json")
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 1
    doc = json.loads(done.stdout)
    expected = cgen.kit_files()
    assert _tree(out) == {name: data for name, (_, data) in expected.items()}
    assert {"mp_messages.h", "mp_messages.c"} <= set(_tree(out))
    assert [f["name"] for f in doc["files"]] == list(expected)
    for entry in doc["files"]:
        data = (out / entry["name"]).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["bytes"] == len(data)
        assert entry["origin"] == expected[entry["name"]][0]
    header = (out / "mp_messages.h").read_text(encoding="ascii")
    assert doc["schema_hash"] in header and doc["protocol_version"] == 1
    assert doc["out"] == str(out) and doc["other_files"] == []


def test_twice_gives_identical_files(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    assert gen_c(str(first)).returncode == 0
    before = _tree(first)
    again = gen_c(str(first), "--force")  # regenerating in place, as a firmware build does
    assert again.returncode == 0, again.stderr
    assert gen_c(str(second)).returncode == 0
    assert _tree(first) == before == _tree(second)
    assert again.stdout.startswith(f"wrote {len(before)} files to {first}")


def test_an_out_that_is_a_file_is_refused_in_one_line(tmp_path: Path) -> None:
    target = tmp_path / "kit.h"
    target.write_text("keep me\n", encoding="ascii")
    for args in ([str(target)], [str(target), "--force"], [str(target), "--json"]):
        done = gen_c(*args)
        assert done.returncode == 2
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert str(target) in done.stderr and "not a folder" in done.stderr
        assert done.stdout == ""
    assert target.read_text(encoding="ascii") == "keep me\n"


def test_a_non_empty_out_needs_force_and_keeps_other_files(tmp_path: Path) -> None:
    out = tmp_path / "fw"
    out.mkdir()
    (out / "main.c").write_text("int main(void) { return 0; }\n", encoding="ascii")
    done = gen_c(str(out))
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "not empty" in done.stderr and "main.c" in done.stderr and "--force" in done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["main.c"]  # nothing written
    forced = gen_c(str(out), "--force", "--json")
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout)["other_files"] == ["main.c"]
    assert (out / "main.c").read_text(encoding="ascii").startswith("int main")
    assert (out / "mp_messages.c").exists()


def test_a_folder_in_the_way_of_a_kit_file_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "fw"
    (out / "mp_messages.h").mkdir(parents=True)
    done = gen_c(str(out), "--force")
    assert done.returncode == 2
    assert "mp_messages.h" in done.stderr and "is a folder" in done.stderr


def test_the_core_is_every_c_and_h_file_directly_in_its_folder(tmp_path: Path) -> None:
    core = tmp_path / "c"
    (core / "example_pen").mkdir(parents=True)
    (core / "mp_link.c").write_bytes(b"/* link */\n")
    (core / "mp_link.h").write_bytes(b"/* link api */\n")
    (core / "CORE.md").write_text("docs\n", encoding="ascii")
    (core / "example_pen" / "pen.c").write_bytes(b"/* not the kit */\n")
    files = cgen.kit_files(core)
    assert list(files) == ["mp_link.c", "mp_link.h", "mp_messages.c", "mp_messages.h"]
    assert files["mp_link.c"] == ("core", b"/* link */\n")
    assert files["mp_messages.h"][0] == "generated"
    assert cgen.kit_files(tmp_path / "absent") == {
        n: ("generated", d) for n, d in sorted(cgen.generate().items())
    }
    (core / "mp_messages.h").write_bytes(b"/* clash */\n")
    with pytest.raises(cgen.KitError, match=r"mp_messages\.h"):
        cgen.kit_files(core)


def test_the_core_ships_in_the_wheel() -> None:
    """setuptools takes protocol/c/*.c and *.h into the wheel as package data (the slow wheel
    test in tests/test_packaging.py checks modules; this checks the declaration)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    data = project["tool"]["setuptools"]["package-data"]["micropen.protocol"]
    assert {"c/*.c", "c/*.h"} <= set(data)
    # from a checkout the core is protocol/c; from an installed wheel, the package's c/ folder
    assert cgen.CORE_DIR.name == "c" and cgen.CORE_DIR.parent.name == "protocol"
    assert sorted(p.name for p in cgen.CORE_DIR.glob("*.[ch]")) == sorted(
        p.name for p in (ROOT / "protocol" / "c").glob("*.[ch]")
    )


@pytest.mark.parametrize("where", ["", "afile/sub"])
def test_an_empty_out_or_one_under_a_file_is_bad_input(tmp_path: Path, where: str) -> None:
    """Found by the outside review: "" silently meant the working folder, and a folder under
    a file was exit 1 ("Not a directory") where the file itself was exit 2."""
    (tmp_path / "afile").write_text("x", encoding="ascii")
    result = subprocess.run(
        [_micropen(), "protocol", "gen-c", where],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "error:" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_a_failed_write_leaves_no_half_kit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file or none: the third file's write fails (a full disk, Ctrl-C) and the two
    written before it are removed with the folder this run created."""
    from micropen.tools import protocol_cli

    calls: list[Path] = []

    def failing(path: Path, data: bytes, mode: int) -> None:
        calls.append(path)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        path.write_bytes(data)

    monkeypatch.setattr(protocol_cli, "write_atomically", failing)
    out = tmp_path / "kit"
    with pytest.raises(OSError) as failed:
        protocol_cli._write_kit(out, cgen.kit_files())
    assert str(calls[2]) in str(failed.value)  # the error names the file
    assert not out.exists()
