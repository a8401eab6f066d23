"""The security chapters of docs/protocol.md: link authentication, pairing, firmware images and
the update procedure. Sizes, labels and limits are read from the code that uses them, so the
text cannot drift from what the host and the pen do."""

from __future__ import annotations

from . import device, image, linkauth
from .messages import FW_CHUNK_BYTES, ErrorCode, EventCode, FwPhase

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
        "proves nothing. RST cannot "
        "be authenticated (the pen that sends it has lost the epoch's keys): a forged RST or "
        "SYN interrupts the link, after which the host reconnects; needles are then stopped by "
        "the watchdog — a denial of service, never a command.",
        "",
        *_syn_rules(),
        *_security_events(),
        "### Pairing",
        "",
        "1. The technician presses the pen's pairing button (a physical act; the simulator: "
        "`kill -USR1` its `sim serve` process, or `--pairing-button`). For "
        f"{device.PAIRING_WINDOW_S:g} s one host may pair. Pressing again while a request "
        "shows its code and is not yet accepted accepts it (step 3); any other press opens a "
        f"fresh {device.PAIRING_WINDOW_S:g} s window and discards a pending request. "
        "`PairRequest` is accepted even while the pen holds its most pairings (the limit is "
        "checked at `PairConfirm`).",
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
        f"pairing (at most {device.MAX_PAIRINGS}), closes pairing mode and reports "
        f"`Event {EventCode.PAIRED.name}`. `PairConfirm` is checked in this order: pairing "
        f"mode closed → `{ErrorCode.PAIRING_CLOSED.name}`; a request pending whose host is not "
        f"stored while {device.MAX_PAIRINGS} pairings are held → "
        f"`{ErrorCode.PAIRINGS_FULL.name}`; the pending request has this `host_id` and is not "
        f"accepted yet → `{ErrorCode.PAIRING_NOT_ACCEPTED.name}`; otherwise no matching "
        f"request or a wrong proof → `{ErrorCode.PAIRING_FAILED.name}` (the request stays "
        "pending: a wrong proof can be followed by the right one).",
        f"5. `Event {EventCode.SECURITY_DENIED.name}` (value = the message id) is raised for "
        f"`PairRequest` refused `{ErrorCode.PAIRING_CLOSED.name}` or "
        f"`{ErrorCode.PAIRING_BUSY.name}` and for `PairConfirm` refused "
        f"`{ErrorCode.PAIRING_FAILED.name}` — not for its other refusals.",
        f"6. A paired host lists the pen's pairings (`GetPairing`, by `host_id` ascending; a "
        'position at or beyond the total answers `Pairing(position, total, 0, "")`, not a '
        f"`Nak`) and revokes one (`Unpair`, `Event {EventCode.UNPAIRED.name}`; an unknown host "
        "id answers `Ack(pairings held)` and raises no event); the revoked host's next epoch "
        "is unauthenticated.",
        "",
    ]


def _syn_rules() -> list[str]:
    offer, resume = linkauth.OFFER.size, linkauth.RESUME.size
    return [
        "### What the pen reads in a SYN",
        "",
        f"* The offer is read from a payload of exactly {offer} bytes, or from the first {offer} "
        f"when it is longer; the resume proof is checked only when the payload is exactly "
        f"{offer + resume} bytes. A payload shorter than {offer} bytes (or an offer from a host "
        "the pen is not paired with) opens an unauthenticated epoch.",
        "* The pen sets SACK on its SYNACK whenever it reads SACK bitmaps and datagrams itself, "
        "whatever the SYN carried; it sends them to the host only if the SYN carried SACK.",
        "* RST is sent only in answer to a DATA frame of an epoch the pen is not in (or any "
        "DATA frame before its first SYN, in epoch 0); never to an ACK, a datagram or a "
        "handshake frame.",
        "* The authentication counter restarts at 1 in every epoch, in both directions.",
        "",
    ]


def _security_events() -> list[str]:
    window = device.AUTH_BURST_WINDOW_S
    return [
        "### Security events",
        "",
        f"* `Event {EventCode.AUTH_FAILURES.name}`: frames failing their tag and replays are "
        f"counted in windows of {window:g} s, each opened by the first failure after the last "
        f"window ended; the event is reported once per window, when the count first reaches "
        f"{device.AUTH_BURST} (value = the count at that moment).",
        f"* `Event {EventCode.UNPROVEN_CONNECT.name}` (value = the host id claimed): a link "
        "whose SYN claimed a paired host ended without one authenticated frame; reported when "
        f"the next SYN arrives, at most once every {device.UNPROVEN_REPORT_EVERY_S:g} s.",
        f"* `Event {EventCode.UNPAIRED_CONNECT.name}`: an unpaired party opened a link while "
        f"a paired host's link was live (an authenticated frame within the last "
        f"{device.AUTH_HOLD_S:g} s).",
        f"* `Event {EventCode.SECURITY_DENIED.name}`: a command refused `NOT_CONNECTED` or "
        "`NOT_AUTHORIZED`, and the pairing refusals listed under Pairing.",
        "",
        "The pen holds them for a paired host's session, with a quota of their own (see Records).",
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
        "1. `FwBegin` (size, SHA-256 of the file, the header's security counter), checked "
        "in this order: the flash is busy → answered with the upload in progress's "
        f"`FwProgress` (step 2); `{ErrorCode.IMAGE_ON_TRIAL.name}` while the running image is "
        "unconfirmed (the update slot then holds the image a revert needs); "
        f"`{ErrorCode.IMAGE_TOO_LARGE.name}` beyond the update slot "
        f"({device.UPDATE_SLOT_BYTES:,} bytes); `{ErrorCode.IMAGE_DOWNGRADE.name}` below the "
        "pen's security counter; the same size and digest as the upload in progress, in "
        f"`{FwPhase.RECEIVING.name}` or `{FwPhase.VERIFIED.name}`, resume it; anything else "
        f"erases the slot ({device.FLASH_SECTOR_BYTES:,}-byte sectors, "
        f"{device.ERASE_MS_PER_SECTOR} ms each) and cancels a pending test boot. "
        f"`{ErrorCode.IMAGE_TOO_LARGE.name}` and `{ErrorCode.IMAGE_DOWNGRADE.name}` also raise "
        f"`Event {EventCode.IMAGE_REJECTED.name}` (value {image.ImageFault.TOO_LARGE.value} "
        f"{image.ImageFault.TOO_LARGE.name}, {image.ImageFault.DOWNGRADE.value} "
        f"{image.ImageFault.DOWNGRADE.name}); `{ErrorCode.IMAGE_ON_TRIAL.name}` does not.",
        "2. Every answer is `FwProgress`: the phase, `next_offset` (the pen's authority on "
        "progress) and `busy_ms`. A command that *starts* slow flash work (`FwBegin`: the "
        "erase; `FwFinish`: the verification) is done, and answered with `busy_ms` > 0. A "
        "command arriving while the flash is busy is *not* done, and is answered with the "
        "current progress and `busy_ms`. In both cases the host sends it again (a new cmd_id) "
        "after `busy_ms`.",
        "3. `FwChunk` (offset, length, data): written only at `next_offset`; any other offset "
        f"is answered with the one wanted. `{ErrorCode.CHUNK_OUT_OF_RANGE.name}` past the "
        "announced size.",
        "4. `FwFinish`: digest, structure, signature by the bootloader's key and counter "
        f"checked; `{ErrorCode.UPLOAD_INCOMPLETE.name}` before every byte arrived. The first "
        "`FwFinish` starts the verification (answered busy; "
        f"`Event {EventCode.IMAGE_REJECTED.name}` is raised then if the image fails); the "
        f"re-sent one gets `FwProgress({FwPhase.VERIFIED.name})` or "
        f"`Nak({ErrorCode.IMAGE_REJECTED.name}, value = ImageFault)`.",
        "5. `FwTestBoot`: answered (busy_ms = expected downtime), then the pen resets "
        f"{device.TEST_BOOT_RESET_DELAY_MS} ms after the reply; its "
        "bootloader verifies the image again and swaps the slots sector by sector through a "
        "scratch sector, recording each step in non-volatile memory (a power cut is repaired "
        "by redoing the recorded next step). The new image runs on trial "
        f"(`Event {EventCode.FIRMWARE_TEST_BOOT.name}`).",
        f"6. `FwConfirm` keeps it and raises the pen's security counter to the image's "
        f"(`Event {EventCode.FIRMWARE_CONFIRMED.name}`); a reboot before that swaps back "
        f"(`Event {EventCode.FIRMWARE_REVERTED.name}`). `FwGetSlot` describes either slot.",
        "",
        *_phase_answers(),
        "Update commands are obeyed only at rest, and only from a paired host. A chunk or "
        f"finish without a `FwBegin` on this boot is `{ErrorCode.NO_UPLOAD.name}`: upload "
        "progress is RAM, a reboot forgets it, and the host begins again.",
        "",
    ]


def _phase_answers() -> list[str]:
    rejected = f"{FwPhase.REJECTED.value} = {FwPhase.REJECTED.name}"
    return [
        "Answers by phase (besides busy, which always wins):",
        "",
        f"* `FwChunk` in `{FwPhase.VERIFYING.name}`, `{FwPhase.VERIFIED.name}` or "
        f"`{FwPhase.TEST_PENDING.name}` → `FwProgress`, nothing written (a late copy).",
        f"* `FwChunk` or `FwFinish` after a rejected image: `FwChunk` → "
        f"`Nak({ErrorCode.NO_UPLOAD.name}, value {rejected})`; `FwFinish` → "
        f"`Nak({ErrorCode.IMAGE_REJECTED.name})` again.",
        f"* `FwFinish` in `{FwPhase.VERIFIED.name}` or `{FwPhase.TEST_PENDING.name}` → "
        "`FwProgress`.",
        f"* `FwTestBoot` in `{FwPhase.TEST_PENDING.name}` → `FwProgress` with the remaining "
        f"downtime; in any other phase but `{FwPhase.VERIFIED.name}` → "
        f"`Nak({ErrorCode.IMAGE_NOT_VERIFIED.name}, value = the phase)` (after a rejection: "
        f"value {rejected}); it never answers `{ErrorCode.IMAGE_REJECTED.name}`.",
        "* `FwConfirm` of an image not on trial → `Ack(counter)`, no event.",
        "",
    ]
