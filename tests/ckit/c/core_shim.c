/* See core_shim.h. */
#include "core_shim.h"

#include <string.h>

typedef char core_stats_are_words[(sizeof(mp_link_stats) % sizeof(uint32_t) == 0) ? 1 : -1];

size_t core_pen_size(void) { return sizeof(core_pen); }
size_t core_link_size(void) { return sizeof(mp_link); }
size_t core_replycache_size(void) { return sizeof(mp_replycache); }
size_t core_deframer_size(void) { return sizeof(mp_deframer); }
size_t core_stats_words(void) { return sizeof(mp_link_stats) / sizeof(uint32_t); }

static int lookup(void *ctx, uint32_t host_id, uint8_t key[MP_KEY_BYTES])
{
    core_pen *p = (core_pen *)ctx;
    int i;
    for (i = 0; i < p->n_pairings; i++) {
        if (p->host_ids[i] == host_id) {
            memcpy(key, p->keys[i], MP_KEY_BYTES);
            return 1;
        }
    }
    return 0;
}

static int admit(void *ctx, int paired, uint32_t host_id)
{
    core_pen *p = (core_pen *)ctx;
    p->admit_calls++;
    p->admit_paired = (uint32_t)paired;
    p->admit_host = host_id;
    return !p->refuse_syns;
}

void core_pen_init(core_pen *p, uint32_t pen_id, uint32_t window, uint32_t rto_initial,
                   uint32_t rto_min, uint32_t rto_max, uint32_t ack_delay, int auth,
                   uint64_t seed)
{
    mp_link_config cfg;
    memset(p, 0, sizeof *p);
    memset(&cfg, 0, sizeof cfg);
    core_port_make(&p->port, &p->rng, seed);
    cfg.pen_id = pen_id;
    cfg.window = (uint16_t)window;
    cfg.rto_initial_ms = rto_initial;
    cfg.rto_min_ms = rto_min;
    cfg.rto_max_ms = rto_max;
    cfg.ack_delay_ms = ack_delay;
    cfg.port = auth ? &p->port : NULL;
    cfg.pairing_lookup = auth ? lookup : NULL;
    cfg.admit_syn = admit;
    cfg.ctx = p;
    mp_link_init(&p->link, &cfg);
}

int core_pen_pair(core_pen *p, uint32_t host_id, const uint8_t *key)
{
    if (p->n_pairings >= CORE_PAIRINGS) {
        return -1;
    }
    p->host_ids[p->n_pairings] = host_id;
    memcpy(p->keys[p->n_pairings], key, MP_KEY_BYTES);
    p->n_pairings++;
    return 0;
}

void core_pen_refuse(core_pen *p, int refuse) { p->refuse_syns = refuse; }

void core_pen_receive(core_pen *p, const uint8_t *bytes, size_t n, uint32_t now)
{
    mp_link_receive(&p->link, bytes, n, now);
}

int core_pen_poll(core_pen *p, uint32_t *out, uint8_t *msg, size_t cap)
{
    mp_link_event ev;
    int type = mp_link_poll(&p->link, &ev);
    size_t n = ev.len < cap ? ev.len : cap;
    out[0] = (uint32_t)type;
    out[1] = ev.epoch;
    out[2] = ev.authenticated;
    out[3] = ev.peer_id;
    out[4] = (uint32_t)ev.len;
    out[5] = (uint32_t)(ev.urgent | (ev.datagram << 1) | (ev.truncated << 2));
    out[6] = ev.count;
    if (n > 0u) {
        memcpy(msg, ev.msg, n);
    }
    return type;
}

int core_pen_send(core_pen *p, const uint8_t *msg, size_t len, unsigned flags, uint32_t now)
{
    return mp_link_send(&p->link, msg, len, flags, now);
}

size_t core_pen_transmit(core_pen *p, uint8_t *out, size_t cap, uint32_t now)
{
    return mp_link_transmit(&p->link, out, cap, now);
}

void core_pen_tick(core_pen *p, uint32_t now) { mp_link_tick(&p->link, now); }

uint32_t core_pen_deadline(core_pen *p, uint32_t now)
{
    return mp_link_next_deadline_ms(&p->link, now);
}

int core_pen_take_unsent(core_pen *p, uint8_t *msg, size_t cap, unsigned *flags)
{
    return mp_link_take_unsent(&p->link, msg, cap, flags);
}

void core_pen_state(core_pen *p, uint32_t *out)
{
    uint32_t peer = 0;
    out[0] = (uint32_t)mp_link_established(&p->link);
    out[1] = mp_link_epoch(&p->link);
    out[2] = (uint32_t)mp_link_peer_id(&p->link, &peer);
    out[3] = peer;
    out[4] = (uint32_t)mp_link_backlog(&p->link);
    out[5] = (uint32_t)mp_link_in_flight(&p->link);
    out[6] = (uint32_t)mp_link_send_room(&p->link);
    out[7] = (uint32_t)mp_link_idle(&p->link);
    out[8] = (uint32_t)mp_link_accepts_datagram(&p->link);
}

size_t core_pen_stats(core_pen *p, uint32_t *out, size_t n)
{
    size_t words = core_stats_words();
    const mp_link_stats *s = mp_link_statistics(&p->link);
    if (n > words) {
        n = words;
    }
    memcpy(out, s, n * sizeof(uint32_t));
    return n;
}

void core_pen_close(core_pen *p) { mp_link_close(&p->link); }

void core_pen_admits(core_pen *p, uint32_t *out)
{
    out[0] = p->admit_calls;
    out[1] = p->admit_paired;
    out[2] = p->admit_host;
}

void core_deframer_stats(const mp_deframer *d, uint32_t *out)
{
    out[0] = d->stats.frames;
    out[1] = d->stats.bytes_in;
    out[2] = d->stats.crc_failures;
    out[3] = d->stats.cobs_failures;
    out[4] = d->stats.oversize;
    out[5] = d->stats.bytes_discarded;
}

static const mp_port *test_port(void)
{
    static mp_port port;
    static core_rng rng;
    core_port_make(&port, &rng, 1);
    return &port;
}

void core_hkdf(const uint8_t *salt, size_t salt_len, const uint8_t *ikm, size_t ikm_len,
               const uint8_t *info, size_t info_len, uint8_t *out, size_t out_len)
{
    mp_hkdf_sha256(test_port(), salt, salt_len, ikm, ikm_len, info, info_len, out, out_len);
}

void core_session_keys(const uint8_t *key, uint32_t epoch, uint32_t host_id,
                       const uint8_t *host_nonce, uint32_t pen_id, const uint8_t *pen_nonce,
                       uint8_t *to_pen, uint8_t *to_host)
{
    mp_session_keys(test_port(), key, (uint8_t)epoch, host_id, host_nonce, pen_id, pen_nonce,
                    to_pen, to_host);
}

void core_synack_tag(const uint8_t *key, uint32_t epoch, uint32_t host_id,
                     const uint8_t *host_nonce, uint32_t pen_id, const uint8_t *pen_nonce,
                     uint8_t *tag)
{
    mp_synack_tag(test_port(), key, (uint8_t)epoch, host_id, host_nonce, pen_id, pen_nonce, tag);
}

void core_resume_tag(const uint8_t *key, uint32_t epoch, uint32_t nonce, uint32_t attempt,
                     uint8_t *tag)
{
    mp_resume_tag(test_port(), key, (uint8_t)epoch, nonce, attempt, tag);
}
