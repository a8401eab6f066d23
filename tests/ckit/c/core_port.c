/* See core_port.h. */
#include "core_port.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

static void core_hmac_sha256(void *ctx, const uint8_t *key, size_t key_len, const mp_chunk *chunks,
                             size_t n_chunks, uint8_t mac[MP_SHA256_BYTES])
{
    uint8_t data[1024];
    size_t len = 0;
    size_t i;
    unsigned int mac_len = 0;
    (void)ctx;
    for (i = 0; i < n_chunks; i++) {
        if (chunks[i].len > sizeof data - len) {
            abort(); /* the core never asks for more than a frame and a counter */
        }
        if (chunks[i].len > 0u) {
            memcpy(data + len, chunks[i].data, chunks[i].len);
        }
        len += chunks[i].len;
    }
    if (HMAC(EVP_sha256(), key, (int)key_len, data, len, mac, &mac_len) == NULL ||
        mac_len != MP_SHA256_BYTES) {
        abort();
    }
}

static void core_random_bytes(void *ctx, uint8_t *out, size_t n)
{
    core_rng *rng = (core_rng *)ctx;
    size_t i;
    if (rng->state == 0u) {
        if (RAND_bytes(out, (int)n) != 1) {
            abort();
        }
        return;
    }
    for (i = 0; i < n; i++) { /* xorshift64* */
        uint64_t x = rng->state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        rng->state = x;
        out[i] = (uint8_t)((x * 0x2545F4914F6CDD1DULL) >> 56);
    }
}

void core_port_make(mp_port *port, core_rng *rng, uint64_t seed)
{
    rng->state = seed;
    port->hmac_sha256 = core_hmac_sha256;
    port->random_bytes = core_random_bytes;
    port->ctx = rng;
}
