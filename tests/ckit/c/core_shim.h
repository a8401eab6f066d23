/* Test-only flat API over the C core, for ctypes (tests/ckit/_core_harness.py) and for the
 * sanitized driver program (core_driver.c), so both run the very same calls. */
#ifndef CORE_SHIM_H
#define CORE_SHIM_H

#include <stddef.h>
#include <stdint.h>

#include "core_port.h"
#include "mp_cobs.h"
#include "mp_link.h"
#include "mp_replycache.h"

#define CORE_PAIRINGS 8

typedef struct core_pen {
    mp_link link;
    mp_port port;
    core_rng rng;
    uint32_t host_ids[CORE_PAIRINGS];
    uint8_t keys[CORE_PAIRINGS][MP_KEY_BYTES];
    int n_pairings;
    int refuse_syns;
    uint32_t admit_calls, admit_paired, admit_host; /* what admit_syn saw, last */
} core_pen;

size_t core_pen_size(void);
size_t core_link_size(void);
size_t core_replycache_size(void);
size_t core_deframer_size(void);
size_t core_stats_words(void);

void core_pen_init(core_pen *p, uint32_t pen_id, uint32_t window, uint32_t rto_initial,
                   uint32_t rto_min, uint32_t rto_max, uint32_t ack_delay, int auth,
                   uint64_t seed);
int core_pen_pair(core_pen *p, uint32_t host_id, const uint8_t *key);
void core_pen_refuse(core_pen *p, int refuse);
void core_pen_receive(core_pen *p, const uint8_t *bytes, size_t n, uint32_t now);
/* out[7]: type, epoch, authenticated, peer_id, len, urgent | datagram << 1 | truncated << 2,
 * count; the message is copied into msg (cap bytes at most) */
int core_pen_poll(core_pen *p, uint32_t *out, uint8_t *msg, size_t cap);
int core_pen_send(core_pen *p, const uint8_t *msg, size_t len, unsigned flags, uint32_t now);
size_t core_pen_transmit(core_pen *p, uint8_t *out, size_t cap, uint32_t now);
void core_pen_tick(core_pen *p, uint32_t now);
uint32_t core_pen_deadline(core_pen *p, uint32_t now);
int core_pen_take_unsent(core_pen *p, uint8_t *msg, size_t cap, unsigned *flags);
/* out[9]: established, epoch, authenticated, peer_id, backlog, in_flight, send_room, idle,
 * accepts_datagram */
void core_pen_state(core_pen *p, uint32_t *out);
size_t core_pen_stats(core_pen *p, uint32_t *out, size_t n);
void core_pen_close(core_pen *p);
void core_pen_admits(core_pen *p, uint32_t *out); /* admit_calls, admit_paired, admit_host */

void core_deframer_stats(const mp_deframer *d, uint32_t *out); /* the six counters */



/* the authentication primitives, with the OpenSSL port (tests compare them with linkauth.py) */
void core_hkdf(const uint8_t *salt, size_t salt_len, const uint8_t *ikm, size_t ikm_len,
               const uint8_t *info, size_t info_len, uint8_t *out, size_t out_len);
void core_session_keys(const uint8_t *key, uint32_t epoch, uint32_t host_id,
                       const uint8_t *host_nonce, uint32_t pen_id, const uint8_t *pen_nonce,
                       uint8_t *to_pen, uint8_t *to_host);
void core_synack_tag(const uint8_t *key, uint32_t epoch, uint32_t host_id,
                     const uint8_t *host_nonce, uint32_t pen_id, const uint8_t *pen_nonce,
                     uint8_t *tag);
void core_resume_tag(const uint8_t *key, uint32_t epoch, uint32_t nonce, uint32_t attempt,
                     uint8_t *tag);
#endif
