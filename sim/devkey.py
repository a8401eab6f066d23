"""The simulator's development signing key: the manufacturer key of every simulated pen.

Why a private key in the source: a simulated pen needs a bootloader key, and CI, firmware teams
and users trying the update path need images it accepts, without access to a manufacturer's
secret. This is MCUboot's ``root-ed25519.pem`` arrangement: a published development key that
only development targets trust. A real pen's bootloader holds the manufacturer's public key,
whose private half never leaves its signing machine; nothing but the simulator trusts this one
(``micropen firmware sign --dev-key`` names it when it signs).
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from micropen.protocol import image

__all__ = ["DEV_KEY_ID", "dev_private_key", "dev_public_key", "factory_image"]

_DEV_SEED = bytes.fromhex("530d82e2b5ba6e74bd733eeb37eeb9af1df51f3a451cece3fd5b853c872b6e5f")


def dev_private_key() -> Ed25519PrivateKey:
    """The development key (public knowledge: only simulated pens trust it)."""
    return Ed25519PrivateKey.from_private_bytes(_DEV_SEED)


def dev_public_key() -> Ed25519PublicKey:
    return dev_private_key().public_key()


DEV_KEY_ID = "simulator development key"


FACTORY_PAYLOAD_BYTES = 24 * 1024  # a small firmware: six flash sectors with its TLVs
FACTORY_COUNTER = 1


def factory_image(version: tuple[int, int, int]) -> bytes:
    """The image a simulated pen leaves the factory with: signed with the development key,
    security counter 1, a deterministic payload naming its version."""
    seed = f"micropen simulated firmware {version[0]}.{version[1]}.{version[2]}".encode()
    payload = (seed + b"\0" * 64) * (FACTORY_PAYLOAD_BYTES // (len(seed) + 64) + 1)
    return image.build(
        payload[:FACTORY_PAYLOAD_BYTES],
        version=version,
        security_counter=FACTORY_COUNTER,
        key=dev_private_key(),
    )
