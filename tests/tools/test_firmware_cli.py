"""``micropen firmware keygen | sign | verify | info``, driven as a user drives them: the
installed command in a subprocess. Good images verify; tampered, unsigned and wrong-key images
are refused with the check they failed (exit 1); bad input is one line and exit 2, never a
traceback; keys are created 0600, never overwritten, and refused when others can read them."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "micropen.tools.cli", "firmware"]


def _run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *map(str, args)], capture_output=True, text=True, timeout=60, cwd=cwd
    )


@pytest.fixture
def bench(tmp_path: Path) -> Path:
    (tmp_path / "app.bin").write_bytes(bytes(range(256)) * 20)
    assert _run("keygen", "maker", cwd=tmp_path).returncode == 0
    assert _run("keygen", "stranger", cwd=tmp_path).returncode == 0
    signed = _run("sign", "app.bin", "--key", "maker", "--version", "1.4.0",
                  "--security-counter", "7", "--out", "app.img", cwd=tmp_path)  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    return tmp_path


def test_keygen_makes_an_owner_only_private_key_and_never_overwrites(bench: Path) -> None:
    assert stat.S_IMODE((bench / "maker").stat().st_mode) == 0o600
    assert b"PUBLIC KEY" in (bench / "maker.pub").read_bytes()
    again = _run("keygen", "maker", "--json", cwd=bench)
    assert again.returncode == 2 and "never overwritten" in again.stderr
    made = _run("keygen", "third", "--json", cwd=bench)
    doc = json.loads(made.stdout)
    assert set(doc) == {"private_key", "public_key", "key_id"} and len(doc["key_id"]) == 16
    assert "PRIVATE" not in made.stdout  # no key material in output


def test_a_signed_image_verifies_and_describes_itself(bench: Path) -> None:
    done = _run("verify", "app.img", "--key", "maker.pub", "--json", cwd=bench)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert (doc["valid"], doc["version"], doc["security_counter"]) == (True, "1.4.0", 7)
    assert doc["payload_bytes"] == 5120
    info = _run("info", "app.img", cwd=bench)
    assert info.returncode == 0 and "security counter 7" in info.stdout
    assert "1.4.0" in info.stdout


@pytest.mark.parametrize(
    ("make", "fault"),
    [
        ("tampered", "hash_mismatch"),
        ("truncated", "truncated"),
        ("wrong_key", "unknown_key"),
        ("raw_binary", "bad_magic"),
    ],
)
def test_bad_images_are_refused_with_the_check_they_failed(
    bench: Path, make: str, fault: str
) -> None:
    data = bytearray((bench / "app.img").read_bytes())
    key = "maker.pub"
    if make == "tampered":
        data[100] ^= 1
    elif make == "truncated":
        data = data[:-10]
    elif make == "wrong_key":
        key = "stranger.pub"
    else:
        data = bytearray((bench / "app.bin").read_bytes())  # a raw binary, not an image
    (bench / "bad.img").write_bytes(bytes(data))
    done = _run("verify", "bad.img", "--key", key, "--json", cwd=bench)
    assert done.returncode == 1
    doc = json.loads(done.stdout)
    assert (doc["valid"], doc["fault"]) == (False, fault)
    human = _run("verify", "bad.img", "--key", key, cwd=bench)
    assert human.returncode == 1 and f"refused ({fault})" in human.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("sign", "app.bin", "--key", "maker", "--version", "1.4", "--security-counter", "8",
          "--out", "n.img"), "MAJOR.MINOR.PATCH"),
        (("sign", "app.bin", "--key", "maker.pub", "--version", "1.4.1", "--security-counter",
          "8", "--out", "n.img"), "not a private key"),
        (("sign", "app.bin", "--key", "maker", "--version", "1.4.1", "--security-counter",
          "4294967296", "--out", "n.img"), "32 bits"),
        (("sign", "missing.bin", "--key", "maker", "--version", "1.4.1", "--security-counter",
          "8", "--out", "n.img"), "not a file"),
        (("sign", "app.bin", "--key", "maker", "--version", "1.4.1", "--security-counter", "8",
          "--out", "app.img"), "--force"),
        (("verify", "app.img", "--key", "nokey.pub"), "not a key file"),
        (("info", "nothing-here"), "not a file"),
        (("keygen", "no/such/folder/key"), "does not exist"),
        (("keygen", ""), "not a file name"),
        (("sign", "app.bin", "--key", "maker", "--version", "01.2.3", "--security-counter", "8",
          "--out", "n.img"), "without leading zeros"),
        (("sign", "app.bin", "--key", "maker", "--version", "1.2.\u00b2", "--security-counter",
          "8", "--out", "n.img"), "plain digits"),
        (("sign", "app.bin", "--key", "maker", "--version", "\uff11.2.3", "--security-counter",
          "8", "--out", "n.img"), "plain digits"),
        (("sign", "app.bin", "--key", "maker", "--version", "1.4.1", "--security-counter", "8",
          "--out", "maker", "--force"), "is the key or the payload"),
        (("sign", "app.bin", "--key", "maker", "--version", "1.4.1", "--security-counter", "8",
          "--out", "maker.pub", "--force"), "is the key or the payload"),
        (("sign", "app.bin", "--key", "maker", "--version", "1.4.1", "--security-counter", "8",
          "--out", "app.bin", "--force"), "is the key or the payload"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(bench: Path, args: tuple[str, ...], says: str) -> None:
    done = _run(*args, cwd=bench)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert says in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_private_key_others_can_read_is_refused(bench: Path) -> None:
    os.chmod(bench / "maker", 0o644)
    done = _run("sign", "app.bin", "--key", "maker", "--version", "1.4.1",
                "--security-counter", "8", "--out", "n.img", cwd=bench)  # fmt: skip
    assert done.returncode == 2 and "chmod 600" in done.stderr
    assert not (bench / "n.img").exists()


def test_out_is_never_a_symlink_a_pipe_or_a_folder_even_with_force(bench: Path) -> None:
    """Before: a symlink planted at OUT (or at the fixed OUT.tmp) had the image written through
    it — onto a private key — and --force replaced devices and pipes with regular files."""
    victim = (bench / "maker").read_bytes()
    (bench / "link.img").symlink_to(bench / "maker")
    os.mkfifo(bench / "pipe")
    (bench / "folder").mkdir()
    for out in ("link.img", "pipe", "folder"):
        done = _run("sign", "app.bin", "--key", "maker", "--version", "1.4.1",
                    "--security-counter", "8", "--out", out, "--force", cwd=bench)  # fmt: skip
        assert done.returncode == 2 and "not a regular file" in done.stderr, (out, done.stderr)
    assert (bench / "maker").read_bytes() == victim
    assert (bench / "link.img").is_symlink() and stat.S_ISFIFO((bench / "pipe").stat().st_mode)
    assert not [p.name for p in bench.iterdir() if p.name.endswith(".tmp")]


def test_keygen_refuses_a_dangling_symlink_as_bad_input(bench: Path) -> None:
    (bench / "k3").symlink_to(bench / "nowhere")
    done = _run("keygen", "k3", cwd=bench)
    assert done.returncode == 2 and "never overwritten" in done.stderr
    assert not (bench / "nowhere").exists()


def test_info_on_a_bad_image_names_the_file_and_the_check(bench: Path) -> None:
    (bench / "bad.img").write_bytes(b"")
    done = _run("info", "bad.img", cwd=bench)
    assert done.returncode == 1 and "bad.img: not a valid image (truncated)" in done.stderr
