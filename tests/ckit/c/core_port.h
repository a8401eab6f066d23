/* Test-only port for the C core: HMAC-SHA256 from OpenSSL's libcrypto, and random bytes from
 * a seeded generator (a test repeats byte for byte) or, with seed 0, from OpenSSL's RAND_bytes.
 * Not part of the kit: a firmware supplies its own (see protocol/c/mp_port.h). */
#ifndef CORE_PORT_H
#define CORE_PORT_H

#include <stdint.h>

#include "mp_port.h"

typedef struct core_rng {
    uint64_t state; /* 0: OpenSSL's RAND_bytes */
} core_rng;

/* fill port with the OpenSSL hooks; rng is its ctx */
void core_port_make(mp_port *port, core_rng *rng, uint64_t seed);

#endif
