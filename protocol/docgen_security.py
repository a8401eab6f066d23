"""The security chapters of docs/protocol.md: link authentication, pairing, firmware images and
the update procedure. Sizes, labels and limits are read from the code that uses them, so the
text cannot drift from what the host and the pen do."""

from __future__ import annotations

from . import image, linkauth
from .messages import FW_CHUNK_BYTES, ErrorCode, EventCode

__all__ = ["auth_section", "update_section"]


def auth_section() -> list[str]:
    trailer = linkauth.TRAILER_BYTES
    return [
        "## Link authentication",
        "",
        "A pen moves needles, changes settings, calibration or firmware only for a host it is "
        "*paired* with, and only on a link epoch that host authenticated. Anyone may open a "
        "link, read identity and status, stop the pen and ask to pair (deny by default; the "
        "per-command table is [Which command is obeyed when](#which-command-is-obeyed-when)); "
        "anything else is answered "
        f"`Nak({ErrorCode.NOT_AUTHORIZED.name})` and reported as "
        f"`Event {EventCode.SECURITY_DENIED.name}` (value = message id), which the pen holds for "
        "a paired host: an unpaired session gets no records and no reply cache.",
        "",
        "### Keys for one epoch",
        "",
        f"1. SYN carries an *offer* ({linkauth.OFFER.size} bytes after the header): `host_id` "
        f"u32, a {linkauth.NONCE_BYTES}-byte nonce. A host sends it when it holds any pairing.",
        f"2. A pen paired with that host answers SYNACK with {linkauth.ANSWER.size} bytes: "
        f"`pen_id` u32, its own {linkauth.NONCE_BYTES}-byte nonce, and a 16-byte tag = "
        'HMAC-SHA256(pairing key, `"micropen synack"` ‖ epoch u8 ‖ offer ‖ pen_id u32 ‖ '
        "pen nonce), first 16 bytes. A pen that does not know the host answers a plain SYNACK: "
        "the epoch is unauthenticated. A host that holds no key for `pen_id` (or finds the tag "
        "wrong) ignores the SYNACK and, in the first case, asks again with a plain SYN.",
        "3. Both derive 64 bytes with HKDF-SHA256(key = pairing key, salt = host nonce ‖ pen "
        'nonce, info = `"micropen link v1"` ‖ epoch u8 ‖ host_id u32 ‖ pen_id u32): the first '
        "32 are the host → pen key, the last 32 the pen → host key.",
        "",
        "### Every frame",
        "",
        f"In an authenticated epoch every frame but SYN, SYNACK and RST carries a {trailer}-byte "
        "trailer between its message and its CRC: a counter u32 (per direction, 1 for the first "
        "frame and +1 for every frame sent, retransmissions included) and the first "
        f"{linkauth.TAG_BYTES} bytes of HMAC-SHA256(direction key, counter ‖ header ‖ [sack] ‖ "
        "message). The receiver checks the CRC first (line noise), then the tag (people): a "
        "frame whose tag fails is dropped and counted (`auth_failures`); one whose counter was "
        f"seen, or is {linkauth.REPLAY_WINDOW} or more below the highest seen, is dropped and "
        "counted (`auth_replays`). Dropped frames are not acknowledged and deliver nothing. "
        "Only authenticated frames feed the pen's watchdog — not a SYN, not a SYN claiming a "
        "paired host's id, not an unauthenticated link's heartbeats — so nobody but the paired "
        "host keeps a run going; telemetry goes to a paired host only. A paired host that "
        f"reconnects appends {linkauth.RESUME.size} bytes to its SYN's offer: an attempt number "
        "u32 (1, 2, … for each transmission of that SYN) and 8 bytes of HMAC-SHA256(the ending "
        'epoch\'s host → pen key, `"micropen resume"` ‖ new epoch u8 ‖ SYN nonce u32 ‖ '
        "attempt u32); each valid, fresh one counts as an authenticated frame, so a host whose "
        "replies are lost keeps its run going while it reconnects, and a copy replayed later "
        "proves nothing. The pen reports "
        f"`Event {EventCode.UNPROVEN_CONNECT.name}` (value = the id) when a link that claimed a "
        "paired host ended without one authenticated frame, "
        f"`Event {EventCode.AUTH_FAILURES.name}` (value = how many) when 8 or more arrive "
        f"within a second, and `Event {EventCode.UNPAIRED_CONNECT.name}` when an unpaired "
        "party opens a link while a paired host's link is live (heard within 2 s). RST cannot "
        "be authenticated (the pen that sends it has lost the epoch's keys): a forged RST or "
        "SYN interrupts the link, after which the host reconnects; needles are then stopped by "
        "the watchdog — a denial of service, never a command.",
        "",
        "### Pairing",
        "",
        "1. The technician presses the pen's pairing button (a physical act; the simulator: "
        "`kill -USR1` its `sim serve` process, or `--pairing-button`). For 60 s one host may "
        "pair.",
        "2. The host sends `PairRequest` (its `host_id`, an X25519 public key for this pairing "
        "only, a name); the pen answers `PairOffer` (`pen_id`, its X25519 public key). Both "
        "compute the shared secret and the pairing key = HKDF-SHA256(secret, no salt, info = "
        '`"micropen pairing v1"` ‖ host public ‖ pen public), 32 bytes.',
        '3. Both show a six-digit code: SHA-256(`"micropen code"` ‖ pairing key ‖ host public '
        "‖ pen public), first 4 bytes as a little-endian integer, modulo 1,000,000, zero-padded. "
        "Only when the codes are the same (anyone in between would have made them differ) does "
        "the technician press the pen's button again — the pen accepts the request its screen "
        "shows — and answer yes on the host. One request per window: a second one is "
        f"`{ErrorCode.PAIRING_BUSY.name}` (value 1), so no one slips in; a host id the pen is "
        "paired with already is never re-keyed by a request (value 0: revoke it first).",
        "4. The host sends `PairConfirm` (`host_id`, proof = HMAC-SHA256(pairing key, "
        '`"micropen pair confirm"` ‖ host_id u32), first 16 bytes); before the pen accepted '
        f"it is `{ErrorCode.PAIRING_NOT_ACCEPTED.name}` (ask again); then the pen stores the "
        f"pairing (at most 8; `{ErrorCode.PAIRINGS_FULL.name}` beyond), closes pairing mode and "
        f"reports `Event {EventCode.PAIRED.name}`. Refusals: "
        f"`{ErrorCode.PAIRING_CLOSED.name}` (button not pressed, or the minute is over), "
        f"`{ErrorCode.PAIRING_FAILED.name}` (wrong proof, another host's request).",
        f"5. A paired host lists the pen's pairings (`GetPairing`) and revokes one (`Unpair`, "
        f"`Event {EventCode.UNPAIRED.name}`); the revoked host's next epoch is unauthenticated.",
        "",
    ]


def update_section() -> list[str]:
    fault_rows = ", ".join(f"{f.value} {f.name}" for f in image.ImageFault)
    return [
        "## Firmware images and update",
        "",
        "The image format (header, payload, TLVs with SHA-256, key hash and Ed25519 "
        "signature) and the checks in order are in docs/firmware.md; `ImageFault` values are "
        f"{fault_rows}.",
        "",
        f"An upload goes to the pen's update slot in chunks of {FW_CHUNK_BYTES} bytes:",
        "",
        "1. `FwBegin` (size, SHA-256 of the file, the header's security counter). The pen "
        f"refuses what it would never install (`{ErrorCode.IMAGE_TOO_LARGE.name}`, "
        f"`{ErrorCode.IMAGE_DOWNGRADE.name}`, and `{ErrorCode.IMAGE_ON_TRIAL.name}` while the "
        "running image is unconfirmed: the update slot then holds the image a revert needs). "
        "The same size and digest as the upload in progress resume it; anything else erases "
        "the slot.",
        "2. Every answer is `FwProgress`: the phase, `next_offset` (the pen's authority on "
        "progress) and `busy_ms`. While the flash is busy (erasing, verifying) a command is not "
        "done; it is answered at once with `busy_ms` > 0, and the host sends it again (a new "
        "cmd_id) after that long.",
        "3. `FwChunk` (offset, length, data): written only at `next_offset`; any other offset "
        f"is answered with the one wanted. `{ErrorCode.CHUNK_OUT_OF_RANGE.name}` past the "
        "announced size.",
        "4. `FwFinish`: digest, structure, signature by the bootloader's key and counter "
        f"checked; `{ErrorCode.UPLOAD_INCOMPLETE.name}` before every byte arrived, "
        f"`Nak({ErrorCode.IMAGE_REJECTED.name}, value = ImageFault)` and "
        f"`Event {EventCode.IMAGE_REJECTED.name}` when the image fails.",
        "5. `FwTestBoot`: answered (busy_ms = expected downtime), then the pen resets; its "
        "bootloader verifies the image again and swaps the slots sector by sector through a "
        "scratch sector, recording each step in non-volatile memory (a power cut is repaired "
        "by redoing the recorded next step). The new image runs on trial "
        f"(`Event {EventCode.FIRMWARE_TEST_BOOT.name}`).",
        f"6. `FwConfirm` keeps it and raises the pen's security counter to the image's "
        f"(`Event {EventCode.FIRMWARE_CONFIRMED.name}`); a reboot before that swaps back "
        f"(`Event {EventCode.FIRMWARE_REVERTED.name}`). `FwGetSlot` describes either slot.",
        "",
        "Update commands are obeyed only at rest, and only from a paired host. A chunk or "
        f"finish without a `FwBegin` on this boot is `{ErrorCode.NO_UPLOAD.name}`: upload "
        "progress is RAM, a reboot forgets it, and the host begins again.",
        "",
    ]
