/* micropen C kit: the pen's end of the reliable link. See mp_link.h; each function below names
 * the protocol/link.py method it mirrors. */
#include "mp_link.h"

#include <string.h>

#define TX_URGENT 0x01u
#define TX_RETRANSMITTED 0x02u /* sent more than once in this epoch (Karn: no RTT sample) */
#define TX_NEED 0x04u          /* to be (re)transmitted by the next mp_link_transmit */
#define TX_SENT 0x08u          /* transmitted at least once in this epoch */
#define TX_FALLBACK 0x10u      /* MP_SEND_DATAGRAM sent reliably: behind every reliable message */
#define TX_KEPT (TX_URGENT | TX_FALLBACK) /* what a message keeps across epochs */

#define RX_FREE 0u
#define RX_EARLY 1u   /* arrived beyond a gap, waits for it */
#define RX_QUEUED 2u  /* delivered: an event in the queue names it */
#define RX_CURRENT 3u /* returned by the last poll */

typedef char mp_link_window_fits_bitmaps[(MP_LINK_WINDOW_MAX + MP_LINK_URGENT_SLACK <= 32) ? 1 : -1];
typedef char mp_link_slots_fit_u8[(MP_LINK_TX_SLOTS <= 255 && MP_LINK_EVENTS <= 255) ? 1 : -1];
typedef char mp_link_message_fits_u8[(MP_LINK_MAX_MESSAGE <= 255) ? 1 : -1];

static const char SYNACK_LABEL[] = "micropen synack";
static const char RESUME_LABEL[] = "micropen resume";
static const char LINK_LABEL[] = "micropen link v1";
#define LABEL_LEN(s) (sizeof(s) - 1u)

/* ------------------------------------------------------------------ small helpers */
static int seq_diff(uint16_t a, uint16_t b) /* a - b in -32768..32767 */
{
    uint16_t d = (uint16_t)(a - b);
    return d >= 0x8000u ? (int)d - 0x10000 : (int)d;
}

static int time_due(uint32_t now, uint32_t at) /* now >= at on a wrapping clock */
{
    return (uint32_t)(now - at) < 0x80000000u;
}

static int later(uint32_t a, uint32_t b) /* a > b for wrapping counters */
{
    return a != b && (uint32_t)(a - b) < 0x80000000u;
}

static void wipe(void *p, size_t n)
{
    volatile uint8_t *v = (volatile uint8_t *)p;
    while (n--) {
        *v++ = 0u;
    }
}

int mp_equal_ct(const uint8_t *a, const uint8_t *b, size_t n)
{
    uint8_t d = 0;
    size_t i;
    for (i = 0; i < n; i++) {
        d = (uint8_t)(d | (a[i] ^ b[i]));
    }
    return d == 0u;
}

static int auth_usable(const mp_link *l)
{
    const mp_port *p = l->cfg.port;
    return p != NULL && p->hmac_sha256 != NULL && p->random_bytes != NULL &&
           l->cfg.pairing_lookup != NULL;
}

/* ------------------------------------------------------------------ linkauth.py */
void mp_hkdf_sha256(const mp_port *port, const uint8_t *salt, size_t salt_len,
                    const uint8_t *ikm, size_t ikm_len, const uint8_t *info, size_t info_len,
                    uint8_t *out, size_t out_len)
{
    static const uint8_t zeros[MP_SHA256_BYTES] = {0};
    uint8_t prk[MP_SHA256_BYTES];
    uint8_t t[MP_SHA256_BYTES];
    uint8_t counter = 0;
    size_t t_len = 0;
    size_t done = 0;
    mp_chunk c[3];
    if (salt == NULL || salt_len == 0u) {
        salt = zeros; /* RFC 5869: no salt is HashLen zero bytes */
        salt_len = sizeof zeros;
    }
    c[0].data = ikm;
    c[0].len = ikm_len;
    port->hmac_sha256(port->ctx, salt, salt_len, c, 1, prk); /* extract */
    while (done < out_len && counter < 255u) {               /* expand */
        size_t k;
        counter++;
        c[0].data = t;
        c[0].len = t_len;
        c[1].data = info;
        c[1].len = info_len;
        c[2].data = &counter;
        c[2].len = 1;
        port->hmac_sha256(port->ctx, prk, sizeof prk, c, 3, t);
        t_len = sizeof t;
        for (k = 0; k < sizeof t && done < out_len; k++) {
            out[done++] = t[k];
        }
    }
    wipe(prk, sizeof prk);
    wipe(t, sizeof t);
}

void mp_session_keys(const mp_port *port, const uint8_t pairing_key[MP_KEY_BYTES], uint8_t epoch,
                     uint32_t host_id, const uint8_t host_nonce[MP_NONCE_BYTES], uint32_t pen_id,
                     const uint8_t pen_nonce[MP_NONCE_BYTES], uint8_t to_pen[MP_KEY_BYTES],
                     uint8_t to_host[MP_KEY_BYTES])
{
    uint8_t salt[2u * MP_NONCE_BYTES];
    uint8_t info[LABEL_LEN(LINK_LABEL) + 9u];
    uint8_t okm[2u * MP_KEY_BYTES];
    size_t n = LABEL_LEN(LINK_LABEL);
    memcpy(salt, host_nonce, MP_NONCE_BYTES);
    memcpy(salt + MP_NONCE_BYTES, pen_nonce, MP_NONCE_BYTES);
    memcpy(info, LINK_LABEL, n);
    info[n] = epoch;
    mp_put_u32(info + n + 1u, host_id);
    mp_put_u32(info + n + 5u, pen_id);
    mp_hkdf_sha256(port, salt, sizeof salt, pairing_key, MP_KEY_BYTES, info, sizeof info, okm,
                   sizeof okm);
    memcpy(to_pen, okm, MP_KEY_BYTES);
    memcpy(to_host, okm + MP_KEY_BYTES, MP_KEY_BYTES);
    wipe(okm, sizeof okm);
}

void mp_synack_tag(const mp_port *port, const uint8_t pairing_key[MP_KEY_BYTES], uint8_t epoch,
                   uint32_t host_id, const uint8_t host_nonce[MP_NONCE_BYTES], uint32_t pen_id,
                   const uint8_t pen_nonce[MP_NONCE_BYTES], uint8_t tag[16])
{
    uint8_t head[LABEL_LEN(SYNACK_LABEL) + 5u];
    uint8_t pen[4];
    uint8_t mac[MP_SHA256_BYTES];
    mp_chunk c[4];
    size_t n = LABEL_LEN(SYNACK_LABEL);
    memcpy(head, SYNACK_LABEL, n);
    head[n] = epoch;
    mp_put_u32(head + n + 1u, host_id);
    mp_put_u32(pen, pen_id);
    c[0].data = head;
    c[0].len = sizeof head;
    c[1].data = host_nonce;
    c[1].len = MP_NONCE_BYTES;
    c[2].data = pen;
    c[2].len = sizeof pen;
    c[3].data = pen_nonce;
    c[3].len = MP_NONCE_BYTES;
    port->hmac_sha256(port->ctx, pairing_key, MP_KEY_BYTES, c, 4, mac);
    memcpy(tag, mac, 16);
}

void mp_resume_tag(const mp_port *port, const uint8_t key[MP_KEY_BYTES], uint8_t epoch,
                   uint32_t nonce, uint32_t attempt, uint8_t tag[MP_FRAME_TAG_BYTES])
{
    uint8_t data[LABEL_LEN(RESUME_LABEL) + 9u];
    uint8_t mac[MP_SHA256_BYTES];
    mp_chunk c;
    size_t n = LABEL_LEN(RESUME_LABEL);
    memcpy(data, RESUME_LABEL, n);
    data[n] = epoch;
    mp_put_u32(data + n + 1u, nonce);
    mp_put_u32(data + n + 5u, attempt);
    c.data = data;
    c.len = sizeof data;
    port->hmac_sha256(port->ctx, key, MP_KEY_BYTES, &c, 1, mac);
    memcpy(tag, mac, MP_FRAME_TAG_BYTES);
}

/* the 8-byte tag of a frame: HMAC(key, counter || header .. message) */
static void frame_tag(const mp_link *l, const uint8_t *key, const uint8_t counter[4],
                      const uint8_t *frame, size_t len, uint8_t tag[MP_SHA256_BYTES])
{
    mp_chunk c[2];
    c[0].data = counter;
    c[0].len = 4;
    c[1].data = frame;
    c[1].len = len;
    l->cfg.port->hmac_sha256(l->cfg.port->ctx, key, MP_KEY_BYTES, c, 2, tag);
}

/* FrameAuth._fresh: the counter was not seen and is within the 64-frame window */
static int auth_fresh(mp_link *l, uint32_t counter)
{
    uint32_t back;
    if (counter > l->auth_highest) {
        uint32_t shift = counter - l->auth_highest;
        l->auth_seen = shift >= 64u ? 1u : ((l->auth_seen << shift) | 1u);
        l->auth_highest = counter;
        return 1;
    }
    back = l->auth_highest - counter;
    if (counter == 0u || back >= MP_LINK_REPLAY_WINDOW || ((l->auth_seen >> back) & 1u)) {
        return 0;
    }
    l->auth_seen |= (uint64_t)1u << back;
    return 1;
}

/* ------------------------------------------------------------------ setup */
static void free_tx(mp_link *l, uint8_t slot)
{
    l->tx_used[slot] = 0;
    l->tx[slot].len = 0;
    l->tx[slot].flags = 0;
}

void mp_link_init(mp_link *l, const mp_link_config *cfg)
{
    mp_link_config c = *cfg;
    memset(l, 0, sizeof *l);
    if (c.window == 0u) {
        c.window = MP_LINK_DEFAULT_WINDOW;
    }
    if (c.window > MP_LINK_WINDOW_MAX) {
        c.window = MP_LINK_WINDOW_MAX;
    }
    if (c.rto_initial_ms == 0u) {
        c.rto_initial_ms = MP_LINK_DEFAULT_RTO_INITIAL_MS;
    }
    if (c.rto_min_ms == 0u) {
        c.rto_min_ms = MP_LINK_DEFAULT_RTO_MIN_MS;
    }
    if (c.rto_max_ms == 0u) {
        c.rto_max_ms = MP_LINK_DEFAULT_RTO_MAX_MS;
    }
    if (c.rto_max_ms > 60000u) {
        c.rto_max_ms = 60000u;
    }
    if (c.rto_min_ms > c.rto_max_ms) {
        c.rto_min_ms = c.rto_max_ms;
    }
    if (c.rto_initial_ms < c.rto_min_ms) {
        c.rto_initial_ms = c.rto_min_ms;
    }
    if (c.rto_initial_ms > c.rto_max_ms) {
        c.rto_initial_ms = c.rto_max_ms;
    }
    if (c.ack_delay_ms >= c.rto_min_ms) {
        c.ack_delay_ms = c.rto_min_ms - 1u;
    }
    l->cfg = c;
    mp_deframer_init(&l->deframer);
    l->current_slot = -1;
    l->resume_seen = -1;
    l->rto_ms = c.rto_initial_ms;
    l->stats.rto_ms = c.rto_initial_ms;
}

/* ------------------------------------------------------------------ RTO (RFC 6298) */
static uint32_t base_rto(const mp_link *l) /* Link._base_rto */
{
    uint32_t v;
    if (!l->have_rtt) {
        return l->cfg.rto_initial_ms;
    }
    v = (l->srtt8 + 4u * l->rttvar8 + 7u) / 8u;
    if (v < l->cfg.rto_min_ms) {
        v = l->cfg.rto_min_ms;
    }
    if (v > l->cfg.rto_max_ms) {
        v = l->cfg.rto_max_ms;
    }
    return v;
}

static void update_rto(mp_link *l, uint32_t rtt_ms) /* Link._update_rto */
{
    uint32_t r8;
    if (rtt_ms > 600000u) {
        rtt_ms = 600000u;
    }
    r8 = rtt_ms * 8u;
    if (!l->have_rtt) {
        l->srtt8 = r8;
        l->rttvar8 = r8 / 2u;
        l->have_rtt = 1;
    } else {
        uint32_t err = l->srtt8 > r8 ? l->srtt8 - r8 : r8 - l->srtt8;
        l->rttvar8 = (3u * l->rttvar8 + err) / 4u;
        l->srtt8 = (7u * l->srtt8 + r8) / 8u;
    }
    l->rto_ms = base_rto(l);
    l->stats.srtt_ms = (l->srtt8 + 4u) / 8u;
    l->stats.rttvar_ms = (l->rttvar8 + 4u) / 8u;
    l->stats.rto_ms = l->rto_ms;
}

static void arm(mp_link *l, uint32_t now)
{
    l->retransmit_armed = 1;
    l->retransmit_at = now + l->rto_ms;
}

/* ------------------------------------------------------------------ events */
static int push_event(mp_link *l, uint8_t type, uint8_t slot, uint8_t authenticated,
                      uint32_t peer)
{
    mp_link_evq *q;
    if (l->ev_count >= MP_LINK_EVENTS) {
        return 0;
    }
    q = &l->events[(l->ev_head + l->ev_count) % MP_LINK_EVENTS];
    q->type = type;
    q->slot = slot;
    q->authenticated = authenticated;
    q->peer_id = peer;
    q->auth_before = l->auth_tail;
    l->auth_tail = 0;
    l->ev_count++;
    if (type == MP_EV_CONNECTED) {
        l->ev_connects++;
    }
    return 1;
}

static void note_authenticated(mp_link *l)
{
    l->stats.frames_authenticated++;
    l->auth_tail++;
}

static int rx_free_count(const mp_link *l)
{
    int i, n = 0;
    for (i = 0; i < MP_LINK_RX_SLOTS; i++) {
        n += l->rx[i].state == RX_FREE;
    }
    return n;
}

/* a free rx slot holding this message, leaving `reserve` slots free (-1: none) */
static int rx_store(mp_link *l, const uint8_t *msg, size_t len, int reserve, uint8_t state)
{
    int i;
    size_t k;
    if (rx_free_count(l) <= reserve) {
        return -1;
    }
    for (i = 0; i < MP_LINK_RX_SLOTS; i++) {
        mp_link_rx *s = &l->rx[i];
        if (s->state != RX_FREE) {
            continue;
        }
        s->truncated = len > MP_LINK_RX_MESSAGE_MAX;
        if (s->truncated) {
            len = MP_LINK_RX_MESSAGE_MAX;
        }
        for (k = 0; k < len; k++) {
            s->msg[k] = msg[k];
        }
        s->len = (uint16_t)len;
        s->state = state;
        s->urgent = 0;
        s->datagram = 0;
        s->epoch = l->epoch;
        s->seq = 0;
        return i;
    }
    return -1; /* not reached: a free slot was counted */
}

static void deliver_slot(mp_link *l, int slot) /* Link._deliver */
{
    l->rx[slot].state = RX_QUEUED;
    l->stats.messages_received++;
    (void)push_event(l, MP_EV_MESSAGE, (uint8_t)slot, 0, 0); /* room: one entry per rx slot */
}

int mp_link_poll(mp_link *l, mp_link_event *ev)
{
    memset(ev, 0, sizeof *ev);
    ev->type = MP_EV_NONE;
    ev->msg = NULL;
    if (l->current_slot >= 0) {
        l->rx[l->current_slot].state = RX_FREE;
        l->current_slot = -1;
    }
    if (l->ev_count > 0u) {
        mp_link_evq *q = &l->events[l->ev_head];
        if (q->auth_before > 0u) {
            ev->type = MP_EV_AUTHENTICATED_FRAME;
            ev->count = q->auth_before;
            q->auth_before = 0;
            return ev->type;
        }
        l->ev_head = (uint8_t)((l->ev_head + 1u) % MP_LINK_EVENTS);
        l->ev_count--;
        ev->type = q->type;
        if (q->type == MP_EV_CONNECTED) {
            l->ev_connects--;
            ev->epoch = q->slot;
            ev->authenticated = q->authenticated;
            ev->peer_id = q->peer_id;
        } else {
            mp_link_rx *s = &l->rx[q->slot];
            s->state = RX_CURRENT;
            l->current_slot = q->slot;
            ev->epoch = s->epoch;
            ev->msg = s->msg;
            ev->len = s->len;
            ev->urgent = s->urgent;
            ev->datagram = s->datagram;
            ev->truncated = s->truncated;
        }
        return ev->type;
    }
    if (l->auth_tail > 0u) {
        ev->type = MP_EV_AUTHENTICATED_FRAME;
        ev->count = l->auth_tail;
        l->auth_tail = 0;
    }
    return ev->type;
}

/* ------------------------------------------------------------------ sending */
static int tx_free_count(const mp_link *l)
{
    int i, n = 0;
    for (i = 0; i < MP_LINK_TX_SLOTS; i++) {
        n += !l->tx_used[i];
    }
    return n;
}

static void add_inflight(mp_link *l, uint8_t slot, uint32_t now) /* Link._transmit_new */
{
    mp_link_tx *e = &l->tx[slot];
    e->seq = l->snd_next;
    l->snd_next = (uint16_t)(l->snd_next + 1u);
    e->flags = (uint8_t)((e->flags & TX_KEPT) | TX_NEED);
    e->sent_at = now;
    e->tx = 0;
    l->inflight[l->n_inflight++] = slot;
    if (!l->retransmit_armed) {
        arm(l, now);
    }
}

int mp_link_accepts_datagram(const mp_link *l)
{
    long waiting = (long)l->n_backlog + (long)l->n_inflight - (long)l->cfg.window;
    return l->established && waiting <= (long)MP_LINK_DATAGRAM_FALLBACK_BACKLOG &&
           mp_link_send_room(l) > 0u;
}

/* Drop the n oldest fallback datagrams waiting in the backlog, only if n of them wait
 * (Link._drop_oldest_fallbacks). Returns 1 when dropped, 0 when fewer wait (none dropped). */
static int drop_oldest_fallbacks(mp_link *l, int n)
{
    uint8_t k = 0, waiting = 0;
    for (k = 0; k < l->n_backlog; k++) {
        waiting = (uint8_t)(waiting + ((l->tx[l->backlog[k]].flags & TX_FALLBACK) != 0u));
    }
    if (waiting < n) {
        return 0;
    }
    k = 0;
    while (n > 0) {
        uint8_t slot = l->backlog[k];
        if (l->tx[slot].flags & TX_FALLBACK) {
            l->n_backlog--;
            memmove(l->backlog + k, l->backlog + k + 1, (size_t)(l->n_backlog - k));
            free_tx(l, slot);
            l->stats.datagrams_dropped++;
            n--;
        } else {
            k++;
        }
    }
    return 1;
}

int mp_link_send(mp_link *l, const uint8_t *msg, size_t len, unsigned flags, uint32_t now_ms)
{
    int urgent = (flags & MP_SEND_URGENT) != 0u;
    int fallback = (flags & MP_SEND_DATAGRAM) != 0u;
    int free_slots;
    int i;
    uint8_t slot = 0;
    mp_link_tx *e;
    if (msg == NULL || len == 0u || len > MP_LINK_MAX_MESSAGE || (urgent && fallback)) {
        return MP_E_ARG;
    }
    if (fallback && !mp_link_accepts_datagram(l)) {
        l->stats.datagrams_dropped++;
        return MP_E_DROPPED;
    }
    free_slots = tx_free_count(l);
    if (!fallback) { /* never refused while fallback datagrams waiting can make room */
        int need = (urgent ? 1 : MP_LINK_URGENT_SLACK + 1) - free_slots;
        if (need > 0 && drop_oldest_fallbacks(l, need)) {
            free_slots += need;
        }
    }
    if (free_slots == 0 || (!urgent && free_slots <= MP_LINK_URGENT_SLACK)) {
        return MP_E_FULL;
    }
    for (i = 0; i < MP_LINK_TX_SLOTS; i++) {
        if (!l->tx_used[i]) {
            slot = (uint8_t)i;
            break;
        }
    }
    e = &l->tx[slot];
    l->tx_used[slot] = 1;
    memcpy(e->msg, msg, len);
    e->len = (uint8_t)len;
    e->flags = urgent ? TX_URGENT : fallback ? TX_FALLBACK : 0u;
    if (urgent && l->n_inflight < l->cfg.window + MP_LINK_URGENT_SLACK && l->established) {
        add_inflight(l, slot, now_ms);
        return 0;
    }
    if (urgent) { /* ahead of every queued ordinary message, behind earlier urgent ones */
        uint8_t ahead = 0;
        while (ahead < l->n_backlog && (l->tx[l->backlog[ahead]].flags & TX_URGENT)) {
            ahead++;
        }
        memmove(l->backlog + ahead + 1, l->backlog + ahead, (size_t)(l->n_backlog - ahead));
        l->backlog[ahead] = slot;
    } else if (!fallback) { /* ahead of the fallback datagrams behind the last reliable one */
        uint8_t at = l->n_backlog;
        while (at > 0u && (l->tx[l->backlog[at - 1u]].flags & TX_FALLBACK)) {
            at--;
        }
        memmove(l->backlog + at + 1, l->backlog + at, (size_t)(l->n_backlog - at));
        l->backlog[at] = slot;
    } else {
        l->backlog[l->n_backlog] = slot;
    }
    l->n_backlog++;
    return 0;
}

/* Build a raw frame in scratch: header, message, the trailer in an authenticated epoch (not on
 * SYNACK or RST), CRC. Returns its length. */
static size_t build_raw(mp_link *l, uint8_t flags, uint8_t epoch, uint16_t seq, uint16_t ack,
                        const uint8_t *msg, size_t len, int seal)
{
    uint8_t *raw = l->scratch;
    size_t n = MP_FRAME_HEADER_BYTES;
    mp_frame_put_header(raw, flags, epoch, seq, ack);
    if (len > 0u) {
        memcpy(raw + n, msg, len);
        n += len;
    }
    if (seal) { /* FrameAuth.seal */
        uint8_t tag[MP_SHA256_BYTES];
        l->auth_sent++;
        mp_put_u32(raw + n, l->auth_sent);
        frame_tag(l, l->send_key, raw + n, raw, n, tag);
        memcpy(raw + n + 4u, tag, MP_FRAME_TAG_BYTES);
        n += MP_FRAME_TRAILER_BYTES;
    }
    return mp_frame_put_crc(raw, n);
}

static size_t wire_bound(size_t raw_len)
{
    return MP_COBS_MAX_ENCODED(raw_len) + 2u;
}

/* one frame into out, if its longest encoding fits: returns the bytes written (0: no room) */
static size_t emit(mp_link *l, uint8_t flags, uint8_t epoch, uint16_t seq, uint16_t ack,
                   const uint8_t *msg, size_t len, int seal, uint8_t *out, size_t cap)
{
    size_t raw_len = MP_FRAME_HEADER_BYTES + len + (seal ? MP_FRAME_TRAILER_BYTES : 0u) +
                     MP_FRAME_CRC_BYTES;
    size_t n;
    if (wire_bound(raw_len) > cap) {
        return 0;
    }
    raw_len = build_raw(l, flags, epoch, seq, ack, msg, len, seal);
    n = mp_frame_to_wire(l->scratch, raw_len, out, cap);
    l->stats.frames_sent++;
    l->stats.bytes_sent += (uint32_t)n;
    if (flags & MP_FLAG_ACK) {
        l->need_ack = 0;
    }
    return n;
}

static size_t emit_data(mp_link *l, mp_link_tx *e, uint32_t now, uint8_t *out, size_t cap)
{
    uint8_t flags = (uint8_t)(MP_FLAG_DATA | MP_FLAG_ACK);
    size_t n;
    if (e->flags & TX_URGENT) {
        flags |= MP_FLAG_URGENT;
    }
    n = emit(l, flags, l->epoch, e->seq, l->rcv_next, e->msg, e->len, l->auth_on, out, cap);
    if (n == 0u) {
        return 0;
    }
    if (e->flags & TX_SENT) { /* Link._retransmit */
        e->flags |= TX_RETRANSMITTED;
        l->stats.retransmits++;
    } else {
        e->flags |= TX_SENT;
        l->stats.messages_sent++;
    }
    e->flags &= (uint8_t)~TX_NEED;
    l->tx_count++;
    e->tx = l->tx_count;
    e->sent_at = now;
    return n;
}

static void on_retransmit_timeout(mp_link *l, uint32_t now) /* Link._on_retransmit_timeout */
{
    uint8_t k;
    uint32_t rto;
    l->stats.timeouts++;
    l->retries++; /* a pen never gives up: it keeps trying at rto_max until a new epoch */
    rto = l->rto_ms > 0x7FFFFFFFu / 2u ? l->cfg.rto_max_ms : l->rto_ms * 2u;
    l->rto_ms = rto < l->cfg.rto_max_ms ? rto : l->cfg.rto_max_ms;
    l->stats.rto_ms = l->rto_ms;
    for (k = 0; k < l->n_inflight; k++) {
        l->tx[l->inflight[k]].flags |= TX_NEED;
    }
    l->dupacks = 0;
    if (l->n_inflight > 0u) {
        arm(l, now);
    } else {
        l->retransmit_armed = 0;
    }
}

void mp_link_tick(mp_link *l, uint32_t now_ms)
{
    if (l->retransmit_armed && time_due(now_ms, l->retransmit_at)) {
        on_retransmit_timeout(l, now_ms);
    }
}

size_t mp_link_transmit(mp_link *l, uint8_t *out, size_t cap, uint32_t now_ms)
{
    size_t o = 0;
    size_t n;
    uint8_t k;
    if (out == NULL) {
        return 0;
    }
    mp_link_tick(l, now_ms);
    while (l->n_rst > 0u) { /* Link._on_foreign_epoch */
        n = emit(l, (uint8_t)MP_FLAG_RST, l->rst_epochs[0], 0, 0, NULL, 0, 0, out + o, cap - o);
        if (n == 0u) {
            return o;
        }
        o += n;
        l->n_rst--;
        memmove(l->rst_epochs, l->rst_epochs + 1, l->n_rst);
    }
    if (!l->established) {
        return o;
    }
    if (l->synack_due) { /* Link._emit_handshake(SYNACK): the nonce echoed in seq and ack */
        n = emit(l, (uint8_t)MP_FLAG_SYNACK, l->epoch, (uint16_t)(l->nonce & 0xFFFFu),
                 (uint16_t)(l->nonce >> 16), l->answer, l->answer_len, 0, out + o, cap - o);
        if (n == 0u) {
            return o;
        }
        o += n;
        l->synack_due = 0;
    }
    for (k = 0; k < l->n_inflight; k++) { /* due (re)transmissions, oldest first */
        mp_link_tx *e = &l->tx[l->inflight[k]];
        if (e->flags & TX_NEED) {
            n = emit_data(l, e, now_ms, out + o, cap - o);
            if (n == 0u) {
                return o;
            }
            o += n;
        }
    }
    while (l->n_backlog > 0u && l->n_inflight < l->cfg.window) { /* new frames */
        uint8_t slot = l->backlog[0];
        l->n_backlog--;
        memmove(l->backlog, l->backlog + 1, l->n_backlog);
        add_inflight(l, slot, now_ms);
        n = emit_data(l, &l->tx[slot], now_ms, out + o, cap - o);
        if (n == 0u) {
            return o; /* it stays due */
        }
        o += n;
    }
    if (l->need_ack && time_due(now_ms, l->ack_due)) { /* a bare ack */
        n = emit(l, (uint8_t)MP_FLAG_ACK, l->epoch, l->snd_next, l->rcv_next, NULL, 0, l->auth_on,
                 out + o, cap - o);
        o += n;
    }
    return o;
}

uint32_t mp_link_next_deadline_ms(const mp_link *l, uint32_t now_ms)
{
    uint32_t best = MP_LINK_NO_DEADLINE; /* delay from now */
    uint8_t k;
    if (l->n_rst > 0u) {
        return now_ms;
    }
    if (l->established) {
        if (l->synack_due || (l->n_backlog > 0u && l->n_inflight < l->cfg.window)) {
            return now_ms;
        }
        for (k = 0; k < l->n_inflight; k++) {
            if (l->tx[l->inflight[k]].flags & TX_NEED) {
                return now_ms;
            }
        }
        if (l->need_ack) {
            if (time_due(now_ms, l->ack_due)) {
                return now_ms;
            }
            if (l->ack_due - now_ms < best) {
                best = l->ack_due - now_ms;
            }
        }
    }
    if (l->retransmit_armed) {
        if (time_due(now_ms, l->retransmit_at)) {
            return now_ms;
        }
        if (l->retransmit_at - now_ms < best) {
            best = l->retransmit_at - now_ms;
        }
    }
    return now_ms + best;
}

/* ------------------------------------------------------------------ receiving */
static void queue_rst(mp_link *l, uint8_t epoch)
{
    l->stats.resets_sent++;
    if (l->n_rst < MP_LINK_RST_QUEUE) {
        l->rst_epochs[l->n_rst++] = epoch;
    }
}

static void drop_inflight_front(mp_link *l)
{
    free_tx(l, l->inflight[0]);
    l->n_inflight--;
    memmove(l->inflight, l->inflight + 1, l->n_inflight);
}

static void mark_retransmit(mp_link *l, mp_link_tx *e)
{
    l->stats.fast_retransmits++;
    e->flags |= TX_NEED;
}

static void on_ack(mp_link *l, uint16_t ack, uint32_t now, uint8_t flags) /* Link._on_ack */
{
    uint32_t delivered = 0;
    int progress = 0;
    int have_sample = 0;
    uint32_t sample = 0;
    uint8_t k;
    while (l->n_inflight > 0u) {
        mp_link_tx *e = &l->tx[l->inflight[0]];
        if ((uint16_t)(ack - e->seq - 1u) >= 0x7FFFu) { /* seq_diff(ack, seq) <= 0 */
            break;
        }
        progress = 1;
        if (e->flags & TX_RETRANSMITTED) {
            if (later(e->tx, delivered) || delivered == 0u) {
                delivered = e->tx;
            }
        } else {
            sample = now - e->sent_at;
            have_sample = 1;
        }
        drop_inflight_front(l);
    }
    if (!progress) {
        /* a peer without SACK repeats its ack when frames arrive beyond a gap */
        if (!(flags & (MP_FLAG_DATA | MP_FLAG_DATAGRAM)) && l->n_inflight > 0u &&
            l->tx[l->inflight[0]].seq == ack) {
            l->dupacks++;
            if (l->dupacks == 3u) { /* DUPACK_THRESHOLD */
                mark_retransmit(l, &l->tx[l->inflight[0]]);
            }
        }
        return;
    }
    l->retries = 0;
    l->dupacks = 0;
    if (have_sample) {
        update_rto(l, sample); /* a new sample collapses any backoff (RFC 6298 5) */
    }
    if (delivered != 0u && later(delivered, l->delivered_tx)) {
        l->delivered_tx = delivered;
        /* Link._retransmit_lost: on a FIFO line a frame whose last transmission is older than
         * one known to have arrived was lost */
        for (k = 0; k < l->n_inflight; k++) {
            mp_link_tx *e = &l->tx[l->inflight[k]];
            if ((e->flags & TX_SENT) && !(e->flags & TX_NEED) && later(delivered, e->tx)) {
                mark_retransmit(l, e);
            }
        }
    }
    if (l->n_inflight > 0u) {
        arm(l, now);
    } else {
        l->retransmit_armed = 0;
    }
}

static void advance(mp_link *l)
{
    l->rcv_next = (uint16_t)(l->rcv_next + 1u);
    l->early_bits >>= 1;
    l->dearly_bits >>= 1;
}

static void on_data(mp_link *l, uint16_t seq, const uint8_t *msg, size_t len, int urgent,
                    uint32_t now) /* Link._on_data */
{
    int diff;
    int slot;
    if (!l->need_ack) {
        l->need_ack = 1;
        l->ack_due = now + l->cfg.ack_delay_ms; /* a reply sent before then carries the ack */
    }
    diff = seq_diff(seq, l->rcv_next);
    if (diff < 0) {
        l->stats.duplicates++;
        l->ack_due = now; /* the sender may have missed our ack: repeat it at once */
        return;
    }
    if (diff >= (int)l->cfg.window + MP_LINK_URGENT_SLACK) {
        l->stats.out_of_window++;
        return;
    }
    if (diff > 0) {
        uint32_t bit = (uint32_t)1u << diff;
        l->ack_due = now; /* a gap: tell the sender at once */
        if ((l->early_bits | l->dearly_bits) & bit) {
            l->stats.duplicates++;
            return;
        }
        /* one rx slot stays free for the frame that fills the gap */
        slot = rx_store(l, msg, len, 1, urgent ? RX_QUEUED : RX_EARLY);
        if (slot < 0) {
            l->stats.rx_no_room++;
            return;
        }
        l->stats.out_of_order++;
        l->rx[slot].seq = seq;
        l->rx[slot].urgent = (uint8_t)urgent;
        if (urgent) { /* delivered on arrival, and not again when the gap fills */
            l->dearly_bits |= bit;
            deliver_slot(l, slot);
        } else {
            l->early_bits |= bit;
        }
        return;
    }
    /* Link._deliver_in_order */
    if (l->early_bits | l->dearly_bits) {
        l->ack_due = now; /* this fills (part of) a gap: the sender waits to hear */
    }
    if (!(l->dearly_bits & 1u)) {
        slot = rx_store(l, msg, len, 0, RX_QUEUED);
        if (slot < 0) {
            l->stats.rx_no_room++;
            return; /* not acknowledged: it comes again */
        }
        l->rx[slot].seq = seq;
        l->rx[slot].urgent = (uint8_t)urgent;
        deliver_slot(l, slot);
    }
    advance(l);
    while ((l->early_bits | l->dearly_bits) & 1u) {
        if (!(l->dearly_bits & 1u)) {
            int i;
            for (i = 0; i < MP_LINK_RX_SLOTS; i++) {
                if (l->rx[i].state == RX_EARLY && l->rx[i].seq == l->rcv_next) {
                    deliver_slot(l, i);
                    break;
                }
            }
        }
        advance(l);
    }
}

static void on_datagram(mp_link *l, uint16_t seq, const uint8_t *msg, size_t len)
{
    int slot;
    if ((uint16_t)(seq - l->dgram_rx) >= 0x8000u) { /* a copy, or overtaken */
        l->stats.datagrams_stale++;
        return;
    }
    slot = rx_store(l, msg, len, 1, RX_QUEUED);
    if (slot < 0) {
        l->stats.rx_no_room++;
        return;
    }
    l->dgram_rx = (uint16_t)(seq + 1u);
    l->stats.datagrams_received++;
    l->rx[slot].datagram = 1;
    deliver_slot(l, slot);
}

static void reset_sequence(mp_link *l) /* Link._reset_sequence */
{
    int i;
    l->rto_ms = base_rto(l); /* a new epoch forgets the old one's backoff */
    l->stats.rto_ms = l->rto_ms;
    l->snd_next = 0;
    l->rcv_next = 0;
    for (i = 0; i < MP_LINK_RX_SLOTS; i++) {
        if (l->rx[i].state == RX_EARLY) {
            l->rx[i].state = RX_FREE;
        }
    }
    l->early_bits = 0;
    l->dearly_bits = 0;
    l->need_ack = 0;
    l->retransmit_armed = 0;
    l->delivered_tx = l->tx_count;
    l->dupacks = 0;
    l->retries = 0;
    l->dgram_rx = 0;
}

/* Link._check_resume: a SYN from the paired host of the epoch now ending (or a retransmission
 * of it) proves that host is still there; counted as an authenticated frame */
static void check_resume(mp_link *l, const uint8_t *payload, size_t len, uint8_t epoch,
                         uint32_t nonce, int same)
{
    const uint8_t *key;
    uint8_t expected[MP_FRAME_TAG_BYTES];
    uint32_t attempt;
    if (!auth_usable(l) || len != 20u + 12u) {
        return;
    }
    if (same) {
        key = l->have_previous ? l->previous_receive : NULL;
    } else {
        key = l->auth_on ? l->recv_key : NULL;
    }
    if (key == NULL) {
        return;
    }
    attempt = mp_get_u32(payload + 20);
    mp_resume_tag(l->cfg.port, key, epoch, nonce, attempt, expected);
    if (!mp_equal_ct(expected, payload + 24, MP_FRAME_TAG_BYTES)) {
        return;
    }
    if (same && (int64_t)attempt <= l->resume_seen) {
        return;
    }
    l->resume_seen = (int64_t)attempt;
    if (!same) {
        memcpy(l->previous_receive, key, MP_KEY_BYTES);
        l->have_previous = 1;
    }
    note_authenticated(l);
}

/* Link._authenticate_epoch: a paired host's offer gets our nonce and proof, and keys */
static void authenticate_epoch(mp_link *l, int paired, uint32_t host_id, const uint8_t *host_nonce,
                               const uint8_t key[MP_KEY_BYTES])
{
    uint8_t pen_nonce[MP_NONCE_BYTES];
    const mp_port *port = l->cfg.port;
    wipe(l->send_key, sizeof l->send_key);
    wipe(l->recv_key, sizeof l->recv_key);
    l->auth_on = 0;
    l->peer_id = 0;
    l->answer_len = 0;
    l->auth_sent = 0;
    l->auth_highest = 0;
    l->auth_seen = 0;
    if (!paired) {
        return;
    }
    port->random_bytes(port->ctx, pen_nonce, sizeof pen_nonce);
    mp_put_u32(l->answer, l->cfg.pen_id);
    memcpy(l->answer + 4, pen_nonce, MP_NONCE_BYTES);
    mp_synack_tag(port, key, l->epoch, host_id, host_nonce, l->cfg.pen_id, pen_nonce,
                  l->answer + 4 + MP_NONCE_BYTES);
    l->answer_len = (uint8_t)sizeof l->answer;
    mp_session_keys(port, key, l->epoch, host_id, host_nonce, l->cfg.pen_id, pen_nonce,
                    l->recv_key, l->send_key);
    l->peer_id = host_id;
    l->auth_on = 1;
}

static void on_syn(mp_link *l, const mp_frame *f, uint32_t now) /* Link._on_syn */
{
    uint32_t nonce = mp_frame_nonce(f);
    int same = l->have_nonce && f->epoch == l->epoch && nonce == l->nonce;
    (void)now;
    check_resume(l, f->msg, f->msg_len, f->epoch, nonce, same);
    if (!(l->established && same)) { /* a new link (a restarted host may draw the same epoch) */
        uint8_t key[MP_KEY_BYTES];
        int offer = f->msg_len >= 20u;
        uint32_t host_id = offer ? mp_get_u32(f->msg) : 0u;
        int paired = 0;
        uint8_t k;
        if (l->ev_connects >= MP_LINK_CONNECT_EVENTS) {
            l->stats.rx_no_room++; /* the owner has not polled: the host will send SYN again */
            return;
        }
        if (offer && auth_usable(l)) {
            paired = l->cfg.pairing_lookup(l->cfg.ctx, host_id, key) != 0;
        }
        if (l->cfg.admit_syn != NULL &&
            !l->cfg.admit_syn(l->cfg.ctx, paired, paired ? host_id : 0u)) {
            l->stats.syns_refused++;
            wipe(key, sizeof key);
            return;
        }
        /* what the old epoch left unacknowledged goes ahead of the backlog */
        memmove(l->backlog + l->n_inflight, l->backlog, l->n_backlog);
        for (k = 0; k < l->n_inflight; k++) {
            l->backlog[k] = l->inflight[k];
            l->tx[l->inflight[k]].flags &= TX_KEPT;
        }
        l->n_backlog = (uint8_t)(l->n_backlog + l->n_inflight);
        l->n_inflight = 0;
        l->established = 1;
        l->epoch = f->epoch;
        l->nonce = nonce;
        l->have_nonce = 1;
        reset_sequence(l);
        authenticate_epoch(l, paired, host_id, f->msg + 4, key);
        wipe(key, sizeof key);
        l->stats.connects++;
        (void)push_event(l, MP_EV_CONNECTED, l->epoch, l->auth_on, l->peer_id);
    }
    l->synack_due = 1;
}

static void handle_frame(mp_link *l, const uint8_t *raw, size_t len, uint32_t now)
{
    mp_frame f;
    uint8_t flags = raw[0];
    uint8_t epoch = raw[1];
    l->stats.frames_received++;
    if (flags & MP_FLAG_SYN) {
        if (mp_frame_parse(raw, len, 0, &f) == 0) {
            on_syn(l, &f, now);
        }
        return;
    }
    if (!l->established || epoch != l->epoch) { /* Link._on_foreign_epoch */
        l->stats.stale_epoch++;
        if (flags & MP_FLAG_DATA) {
            queue_rst(l, epoch); /* a host talking in an epoch we do not know */
        }
        return;
    }
    if (flags & MP_FLAG_SYNACK) {
        return; /* only a host answers SYN */
    }
    if (flags & MP_FLAG_RST) {
        l->stats.resets_received++; /* only a pen sends RST */
        return;
    }
    if (l->auth_on) { /* FrameAuth.open */
        size_t start;
        uint8_t tag[MP_SHA256_BYTES];
        if (len < MP_FRAME_HEADER_BYTES + MP_FRAME_TRAILER_BYTES + MP_FRAME_CRC_BYTES) {
            l->stats.auth_failures++;
            return;
        }
        start = len - MP_FRAME_CRC_BYTES - MP_FRAME_TRAILER_BYTES;
        frame_tag(l, l->recv_key, raw + start, raw, start, tag);
        if (!mp_equal_ct(tag, raw + start + 4u, MP_FRAME_TAG_BYTES)) {
            l->stats.auth_failures++;
            return;
        }
        if (!auth_fresh(l, mp_get_u32(raw + start))) {
            l->stats.auth_replays++;
            return;
        }
        note_authenticated(l);
    }
    if (mp_frame_parse(raw, len, l->auth_on, &f) != 0) {
        l->stats.malformed_frames++; /* flagged SACK, too short for the bitmap */
        return;
    }
    /* a SACK bitmap is read but not used: this end never offers SACK (see mp_link.h) */
    if ((flags & MP_FLAG_ACK) && l->n_inflight > 0u) {
        on_ack(l, f.ack, now, flags);
    }
    if (flags & MP_FLAG_DATA) {
        on_data(l, f.seq, f.msg, f.msg_len, (flags & MP_FLAG_URGENT) != 0u, now);
    } else if (flags & MP_FLAG_DATAGRAM) {
        on_datagram(l, f.seq, f.msg, f.msg_len);
    }
}

void mp_link_receive(mp_link *l, const uint8_t *bytes, size_t n, uint32_t now_ms)
{
    if (bytes == NULL) {
        return;
    }
    while (n > 0u) {
        const uint8_t *frame;
        size_t frame_len;
        size_t used = mp_deframer_feed(&l->deframer, bytes, n, &frame, &frame_len);
        bytes += used;
        n -= used;
        if (frame != NULL) {
            handle_frame(l, frame, frame_len, now_ms);
        }
    }
    l->stats.framer = l->deframer.stats;
}

/* ------------------------------------------------------------------ the rest of the API */
int mp_link_established(const mp_link *l)
{
    return l->established;
}

uint8_t mp_link_epoch(const mp_link *l)
{
    return l->epoch;
}

int mp_link_peer_id(const mp_link *l, uint32_t *host_id)
{
    if (!l->auth_on) {
        return 0;
    }
    if (host_id != NULL) {
        *host_id = l->peer_id;
    }
    return 1;
}

int mp_link_take_unsent(mp_link *l, uint8_t *msg, size_t cap, unsigned *flags)
{
    uint8_t slot;
    mp_link_tx *e;
    if (l->n_inflight > 0u) {
        slot = l->inflight[0];
    } else if (l->n_backlog > 0u) {
        slot = l->backlog[0];
    } else {
        l->retransmit_armed = 0;
        return 0;
    }
    e = &l->tx[slot];
    if (msg == NULL || cap < e->len) {
        return MP_E_BUFFER;
    }
    memcpy(msg, e->msg, e->len);
    if (flags != NULL) {
        *flags = (e->flags & TX_URGENT) ? MP_SEND_URGENT
                 : (e->flags & TX_FALLBACK) ? MP_SEND_DATAGRAM
                                            : 0u;
    }
    if (l->n_inflight > 0u) {
        l->n_inflight--;
        memmove(l->inflight, l->inflight + 1, l->n_inflight);
        if (l->n_inflight == 0u) {
            l->retransmit_armed = 0;
        }
    } else {
        l->n_backlog--;
        memmove(l->backlog, l->backlog + 1, l->n_backlog);
    }
    {
        int len = e->len;
        free_tx(l, slot);
        return len;
    }
}

size_t mp_link_backlog(const mp_link *l)
{
    return l->n_backlog;
}

size_t mp_link_in_flight(const mp_link *l)
{
    return l->n_inflight;
}

size_t mp_link_send_room(const mp_link *l)
{
    int free_slots = tx_free_count(l);
    return free_slots > MP_LINK_URGENT_SLACK ? (size_t)(free_slots - MP_LINK_URGENT_SLACK) : 0u;
}

int mp_link_idle(const mp_link *l)
{
    return l->n_inflight == 0u && l->n_backlog == 0u;
}

const mp_link_stats *mp_link_statistics(const mp_link *l)
{
    return &l->stats;
}

void mp_link_close(mp_link *l)
{
    int i;
    for (i = 0; i < MP_LINK_TX_SLOTS; i++) {
        free_tx(l, (uint8_t)i);
    }
    l->n_inflight = 0;
    l->n_backlog = 0;
    l->retransmit_armed = 0;
    l->established = 0;
    l->synack_due = 0;
    l->need_ack = 0;
}
