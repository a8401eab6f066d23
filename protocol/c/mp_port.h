/* micropen C kit: what the core asks of the platform, and the definitions every core file shares.
 *
 * Hand-written (protocol/c/), copied verbatim by `micropen protocol gen-c OUT/`.
 * C99, no malloc, no stdio, no floating point.
 *
 * A firmware supplies the hooks below only if it authenticates links (docs/protocol.md "Link
 * authentication"): HMAC-SHA256 (HKDF-SHA256 and every tag are built from it) and random bytes
 * (handshake nonces). Give them to the link in mp_link_config.port; with no port every epoch is
 * unauthenticated, as with a host the pen is not paired with.
 */
#ifndef MP_PORT_H
#define MP_PORT_H

#include <stddef.h>
#include <stdint.h>

/* ---- errors returned by the core (negative; the generated codec's MP_E_SPACE, MP_E_RANGE and
 * MP_E_MALFORMED live in mp_messages.h and never collide with these) */
#define MP_E_ARG (-20)     /* an argument out of its documented range (NULL, size 0, too long) */
#define MP_E_FULL (-21)    /* no room: the link's send slots or the reply cache's space */
#define MP_E_DROPPED (-22) /* a datagram not sent (no link, or replies and records wait) */
#define MP_E_BUFFER (-23)  /* the caller's output buffer is too small */
#define MP_E_COBS (-24)    /* not valid COBS */
#define MP_E_SHORT (-25)   /* a frame too short for what its flags say it carries */
#define MP_E_UNKNOWN (-26) /* no such session (reply cache) */

/* ---- sizes of the authentication primitives (linkauth.py) */
#define MP_SHA256_BYTES 32u
#define MP_KEY_BYTES 32u   /* pairing key, direction keys */
#define MP_NONCE_BYTES 16u /* handshake nonces */

/* A piece of the data to authenticate: the MAC is over the pieces concatenated, so the core
 * never copies a frame to prepend a counter. */
typedef struct mp_chunk {
    const uint8_t *data;
    size_t len;
} mp_chunk;

typedef struct mp_port {
    /* mac = HMAC-SHA256(key[0..key_len), chunks[0] || ... || chunks[n_chunks-1]).
     * Must not fail (a hardware engine that can fail must retry or reset the pen). */
    void (*hmac_sha256)(void *ctx, const uint8_t *key, size_t key_len, const mp_chunk *chunks,
                        size_t n_chunks, uint8_t mac[MP_SHA256_BYTES]);
    /* n random bytes: handshake nonces (their job is freshness; use the TRNG if there is one) */
    void (*random_bytes)(void *ctx, uint8_t *out, size_t n);
    void *ctx; /* passed back to both hooks */
} mp_port;

#endif /* MP_PORT_H */
