/* micropen C kit: the pen's end of the reliable link (protocol/link.py, role PEN), sans-I/O.
 *
 * Nothing here reads a clock or touches a port: the firmware passes now_ms (any monotonic
 * millisecond count; it may wrap at 2^32) and moves the bytes.
 *
 *     static mp_link link;                      // allocated statically: no malloc
 *     mp_link_init(&link, &cfg);
 *     loop:
 *         n = uart_read(buf); mp_link_receive(&link, buf, n, now);
 *         while ((type = mp_link_poll(&link, &ev)) != MP_EV_NONE) handle(&ev);
 *         ... mp_link_send(&link, reply, len, 0, now) ...
 *         while ((n = mp_link_transmit(&link, out, sizeof out, now)) > 0) uart_write(out, n);
 *         sleep until mp_link_next_deadline_ms(&link, now) or bytes arrive
 *
 * What it does, as docs/protocol.md "Link rules" says: SYN/SYNACK with the nonce echo (a SYN is
 * a repeat only when epoch and nonce match), epochs (stale frames dropped, RST for data of an
 * unknown epoch), cumulative acks (a duplicate re-acked, never re-delivered; early frames held
 * up to window + 4 ahead), URGENT frames delivered on arrival and not again, retransmission
 * with the RFC 6298 RTO in integer milliseconds and Karn's rule, fast retransmission (RACK on a
 * FIFO line, and 3 duplicate acks), a window of in-flight frames, a fixed backlog, retransmission
 * at rto_max for ever (a pen never gives up), the unacknowledged messages of an old epoch
 * re-queued on a new one (mp_link_take_unsent hands them back), and link authentication.
 *
 * What it declines, as an older peer would (CORE.md lists each choice): it never sets SACK in
 * its SYNACK, so the host sends it neither SACK bitmaps nor datagrams, and it sends none; a
 * message sent with MP_SEND_DATAGRAM goes as a reliable message while few messages wait for
 * the window (MP_LINK_DATAGRAM_FALLBACK_BACKLOG), else it is dropped and counted; it never goes
 * ahead of a reply or record sent after it, and a full backlog drops it first.
 */
#ifndef MP_LINK_H
#define MP_LINK_H

#include <stddef.h>
#include <stdint.h>

#include "mp_cobs.h"
#include "mp_frame.h"
#include "mp_port.h"

/* ---- compile-time sizes (a firmware may override each with -D) */
#ifndef MP_LINK_WINDOW_MAX
#define MP_LINK_WINDOW_MAX 16 /* largest cfg.window; at most 28 (32-bit receive bitmaps) */
#endif
#define MP_LINK_URGENT_SLACK 4 /* urgent frames may exceed the window by this much */
#define MP_LINK_INFLIGHT_MAX (MP_LINK_WINDOW_MAX + MP_LINK_URGENT_SLACK)
#ifndef MP_LINK_BACKLOG
#define MP_LINK_BACKLOG 16 /* messages waiting beyond a full window */
#endif
#define MP_LINK_TX_SLOTS (MP_LINK_INFLIGHT_MAX + MP_LINK_BACKLOG)
#ifndef MP_LINK_RX_SLOTS
#define MP_LINK_RX_SLOTS (MP_LINK_WINDOW_MAX + MP_LINK_URGENT_SLACK) /* received, not polled */
#endif
#ifndef MP_LINK_MAX_MESSAGE
#define MP_LINK_MAX_MESSAGE MP_FRAME_MAX_MESSAGE /* largest message sent (241) */
#endif
#ifndef MP_LINK_RX_MESSAGE_MAX /* largest message kept whole when received: anything a frame */
#define MP_LINK_RX_MESSAGE_MAX (MP_FRAME_MAX_RAW - MP_FRAME_MIN_RAW) /* can carry (257) */
#endif
#ifndef MP_LINK_DATAGRAM_FALLBACK_BACKLOG
#define MP_LINK_DATAGRAM_FALLBACK_BACKLOG 4 /* see mp_link_send, MP_SEND_DATAGRAM */
#endif
#define MP_LINK_CONNECT_EVENTS 4 /* new epochs announced but not yet polled */
#define MP_LINK_EVENTS (MP_LINK_RX_SLOTS + MP_LINK_CONNECT_EVENTS)
#define MP_LINK_RST_QUEUE 4      /* RST frames waiting to be transmitted */
#define MP_LINK_REPLAY_WINDOW 64 /* linkauth.REPLAY_WINDOW */
#define MP_LINK_NO_DEADLINE 0x7FFFFFFFu /* next_deadline when nothing is pending: now + this */

/* ---- defaults of mp_link_config (0 in a field selects its default) */
#define MP_LINK_DEFAULT_WINDOW 16
#define MP_LINK_DEFAULT_RTO_INITIAL_MS 100u
#define MP_LINK_DEFAULT_RTO_MIN_MS 25u
#define MP_LINK_DEFAULT_RTO_MAX_MS 1000u

/* ---- mp_link_send flags */
#define MP_SEND_URGENT 1u   /* emergency stop and its answer: ahead of the backlog, +4 window */
#define MP_SEND_DATAGRAM 2u /* telemetry: may be dropped (see mp_link_send) */

/* ---- events */
#define MP_EV_NONE 0
#define MP_EV_CONNECTED 1          /* a new epoch: ev->epoch, ev->authenticated, ev->peer_id */
#define MP_EV_MESSAGE 2            /* ev->msg/ev->len: id byte + body, valid until next poll */
#define MP_EV_AUTHENTICATED_FRAME 3 /* ev->count frames whose tag verified (feeds the watchdog) */

typedef struct mp_link_event {
    int type;
    uint8_t epoch;         /* CONNECTED: the new epoch; MESSAGE: the epoch it arrived in */
    uint8_t authenticated; /* CONNECTED: the host proved a pairing; peer_id is its host_id */
    uint8_t urgent;        /* MESSAGE: came in an URGENT frame */
    uint8_t datagram;      /* MESSAGE: came in a DATAGRAM frame */
    uint8_t truncated;     /* MESSAGE: longer than MP_LINK_RX_MESSAGE_MAX: only its first
                              MP_LINK_RX_MESSAGE_MAX bytes are in msg (answer it MALFORMED) */
    uint32_t peer_id;      /* CONNECTED: the authenticated host's id (0 when not) */
    const uint8_t *msg;    /* MESSAGE: id byte + body (len may be 0: a DATA frame without one) */
    size_t len;
    uint32_t count; /* AUTHENTICATED_FRAME: how many since the previous such event */
} mp_link_event;

/* ---- configuration */
typedef struct mp_link_config {
    uint32_t pen_id;         /* this pen's id, sent in an authenticated SYNACK */
    uint16_t window;         /* data frames in flight, 1..MP_LINK_WINDOW_MAX (0: 16) */
    uint32_t rto_initial_ms; /* 0: 100 */
    uint32_t rto_min_ms;     /* 0: 25 */
    uint32_t rto_max_ms;     /* 0: 1000 */
    uint32_t ack_delay_ms;   /* how long an in-order ack may wait to ride on data (< rto_min) */
    /* authentication: all of port, port->hmac_sha256, port->random_bytes and pairing_lookup,
     * or every epoch is unauthenticated */
    const mp_port *port;
    /* the pairing key for host_id: returns 1 and fills key, or 0 (not paired) */
    int (*pairing_lookup)(void *ctx, uint32_t host_id, uint8_t key[MP_KEY_BYTES]);
    /* a SYN would open a new epoch; paired: the SYN offered authentication as host_id and
     * the pen holds its key. Return 0 to refuse (no SYNACK; counted in syns_refused). NULL:
     * every SYN is admitted. Called from mp_link_receive. */
    int (*admit_syn)(void *ctx, int paired, uint32_t host_id);
    void *ctx; /* passed back to pairing_lookup and admit_syn */
} mp_link_config;

/* ---- statistics (link.LinkStats; counters only grow) */
typedef struct mp_link_stats {
    uint32_t frames_sent, bytes_sent, frames_received;
    uint32_t messages_sent, messages_received;
    uint32_t retransmits, fast_retransmits, timeouts;
    uint32_t duplicates, out_of_order, out_of_window, stale_epoch;
    uint32_t malformed_frames;
    uint32_t resets_sent, resets_received, connects;
    uint32_t datagrams_received, datagrams_dropped, datagrams_stale;
    uint32_t auth_failures, auth_replays, syns_refused, frames_authenticated;
    uint32_t rx_no_room; /* data frames dropped unacknowledged: received messages not polled */
    uint32_t srtt_ms, rttvar_ms, rto_ms; /* srtt/rttvar 0 before the first sample */
    mp_framer_stats framer;              /* bytes_in, crc/cobs failures, bytes_discarded … */
} mp_link_stats;

/* ---- the link (its full definition, so a firmware allocates it statically; touch its fields
 * only through the functions below) */
typedef struct mp_link_tx {
    uint8_t msg[MP_LINK_MAX_MESSAGE];
    uint8_t len;
    uint8_t flags; /* MP_LINK_TX_* in mp_link.c */
    uint16_t seq;
    uint32_t sent_at;
    uint32_t tx; /* order of its latest transmission (RACK) */
} mp_link_tx;

typedef struct mp_link_rx {
    uint8_t msg[MP_LINK_RX_MESSAGE_MAX];
    uint16_t len;
    uint8_t state; /* free, early (waits for a gap), queued (an event names it), current */
    uint8_t urgent, datagram, epoch, truncated;
    uint16_t seq;
} mp_link_rx;

typedef struct mp_link_evq {
    uint8_t type;      /* MP_EV_CONNECTED or MP_EV_MESSAGE */
    uint8_t slot;      /* MESSAGE: rx slot; CONNECTED: epoch */
    uint8_t authenticated;
    uint32_t peer_id;
    uint32_t auth_before; /* authenticated frames before this event (reported first) */
} mp_link_evq;

struct mp_link {
    mp_link_config cfg;
    mp_deframer deframer;
    mp_link_stats stats;
    uint8_t established;
    uint8_t epoch;
    uint8_t have_nonce;
    uint32_t nonce; /* the host's SYN nonce of this epoch (SYNACK echoes it) */
    /* sending */
    mp_link_tx tx[MP_LINK_TX_SLOTS];
    uint8_t tx_used[MP_LINK_TX_SLOTS];
    uint8_t inflight[MP_LINK_INFLIGHT_MAX]; /* slots in seq order, [0] the oldest */
    uint8_t n_inflight;
    uint8_t backlog[MP_LINK_TX_SLOTS]; /* slots waiting for the window, [0] first */
    uint8_t n_backlog;
    uint16_t snd_next;
    uint32_t tx_count;     /* transmissions of data frames so far */
    uint32_t delivered_tx; /* the latest transmission known to have arrived */
    uint8_t dupacks;
    uint8_t retransmit_armed;
    uint32_t retransmit_at;
    uint32_t retries;
    uint32_t srtt8, rttvar8; /* in 1/8 ms */
    uint8_t have_rtt;
    uint32_t rto_ms;
    /* receiving */
    mp_link_rx rx[MP_LINK_RX_SLOTS];
    uint16_t rcv_next;
    uint32_t early_bits;   /* bit i: frame rcv_next + i waits in an rx slot */
    uint32_t dearly_bits;  /* bit i: frame rcv_next + i was urgent and delivered already */
    uint16_t dgram_rx;
    uint8_t need_ack;
    uint32_t ack_due;
    int current_slot; /* rx slot returned by the last poll (freed by the next), or -1 */
    mp_link_evq events[MP_LINK_EVENTS];
    uint8_t ev_head, ev_count, ev_connects;
    uint32_t auth_tail; /* authenticated frames after the last queued event */
    /* control frames to send */
    uint8_t synack_due;
    uint8_t rst_epochs[MP_LINK_RST_QUEUE];
    uint8_t n_rst;
    /* authentication */
    uint8_t auth_on;
    uint32_t peer_id;
    uint8_t send_key[MP_KEY_BYTES], recv_key[MP_KEY_BYTES];
    uint32_t auth_sent;   /* counter of the last frame sealed */
    uint32_t auth_highest; /* highest counter accepted */
    uint64_t auth_seen;    /* bit i: counter highest - i was accepted */
    uint8_t answer[4u + MP_NONCE_BYTES + 16u]; /* SYNACK payload of this epoch */
    uint8_t answer_len;
    uint8_t have_previous;
    uint8_t previous_receive[MP_KEY_BYTES]; /* for resume proofs in SYN retransmissions */
    int64_t resume_seen;
    uint8_t scratch[MP_FRAME_MAX_RAW]; /* the raw frame being built */
};
typedef struct mp_link mp_link;

/* Start listening (state LISTEN, no epoch). cfg is copied; out-of-range fields take their
 * defaults (window > MP_LINK_WINDOW_MAX is clamped to it). */
void mp_link_init(mp_link *l, const mp_link_config *cfg);

/* Bytes from the line. Never fails on any input; frames it cannot use are counted. */
void mp_link_receive(mp_link *l, const uint8_t *bytes, size_t n, uint32_t now_ms);

/* The next event (MP_EV_NONE when there is none). A MESSAGE's bytes stay valid until the next
 * call. Poll until MP_EV_NONE after every mp_link_receive and before mp_link_transmit: on
 * MP_EV_CONNECTED the firmware may take back what the old epoch left unacknowledged. */
int mp_link_poll(mp_link *l, mp_link_event *ev);

/* Queue a message (id byte + body, 1..MP_LINK_MAX_MESSAGE bytes). Returns 0, or:
 *   MP_E_FULL    no send slot (MP_LINK_BACKLOG messages wait beyond the window; the last
 *                MP_LINK_URGENT_SLACK slots are kept for MP_SEND_URGENT) and no datagram
 *                waits in the backlog;
 *   MP_E_DROPPED a datagram not sent: the link is not established, no ordinary slot is free,
 *                or more than MP_LINK_DATAGRAM_FALLBACK_BACKLOG messages wait for the window;
 *   MP_E_ARG     len 0 or too long, or URGENT with DATAGRAM.
 * An urgent message is transmitted at once (up to 4 beyond the window), or queued ahead of
 * every ordinary one. A datagram (sent reliably: the pen declines datagrams) waits behind
 * everything; an ordinary message is queued ahead of the datagrams waiting behind the last
 * ordinary one (what is in flight stays), and when no slot is free for it the oldest waiting
 * datagrams are dropped (counted in datagrams_dropped) to make room, if enough of them wait
 * to make it (else none is). Nothing is written to the line until mp_link_transmit. */
int mp_link_send(mp_link *l, const uint8_t *msg, size_t len, unsigned flags, uint32_t now_ms);

/* Whether MP_SEND_DATAGRAM would be sent now. */
int mp_link_accepts_datagram(const mp_link *l);

/* Bytes to write to the line now (whole stuffed, delimited frames): control frames, due
 * retransmissions, new frames as the window allows, then a bare ack if one is due. Returns 0
 * when nothing is due. Call again while it returns > 0 (cap >= MP_FRAME_MAX_WIRE guarantees
 * progress). Runs mp_link_tick first. */
size_t mp_link_transmit(mp_link *l, uint8_t *out, size_t cap, uint32_t now_ms);

/* Retransmission timers (mp_link_transmit calls it too). */
void mp_link_tick(mp_link *l, uint32_t now_ms);

/* When mp_link_tick/mp_link_transmit must next run if nothing arrives first: an absolute time
 * on the now_ms clock (now_ms itself when something is due; now_ms + MP_LINK_NO_DEADLINE when
 * nothing is pending). */
uint32_t mp_link_next_deadline_ms(const mp_link *l, uint32_t now_ms);

int mp_link_established(const mp_link *l);
uint8_t mp_link_epoch(const mp_link *l);

/* The authenticated host of this epoch: returns 1 and sets *host_id, or 0 (unauthenticated). */
int mp_link_peer_id(const mp_link *l, uint32_t *host_id);

/* Take back the oldest message this side has not had acknowledged (in flight first, then the
 * backlog). Returns its length (copied into msg), 0 when none is left, MP_E_BUFFER when cap is
 * too small (the message stays). *flags (may be NULL) gets MP_SEND_URGENT if it was urgent,
 * MP_SEND_DATAGRAM if it was sent as a datagram.
 * The pen calls it on MP_EV_CONNECTED, as sim/firmware.py calls Link.take_unsent(): records go
 * back to be held for the next session, replies are dropped. */
int mp_link_take_unsent(mp_link *l, uint8_t *msg, size_t cap, unsigned *flags);

/* Reliable messages waiting beyond the window, in flight, and free send slots for ordinary
 * (non-urgent) messages. */
size_t mp_link_backlog(const mp_link *l);
size_t mp_link_in_flight(const mp_link *l);
size_t mp_link_send_room(const mp_link *l);
/* Nothing waits to be sent or acknowledged. */
int mp_link_idle(const mp_link *l);

/* Counters, the framer's included. */
const mp_link_stats *mp_link_statistics(const mp_link *l);

/* Back to LISTEN (link.close() for the pen): every message not acknowledged is dropped (take
 * them first with mp_link_take_unsent to keep them); events not polled stay. */
void mp_link_close(mp_link *l);

/* ---- authentication primitives (linkauth.py), exported for tests and firmware use */

/* HKDF-SHA256 (RFC 5869) with the port's HMAC; out_len <= 255 * 32. */
void mp_hkdf_sha256(const mp_port *port, const uint8_t *salt, size_t salt_len,
                    const uint8_t *ikm, size_t ikm_len, const uint8_t *info, size_t info_len,
                    uint8_t *out, size_t out_len);

/* linkauth.session_keys: the host -> pen and pen -> host keys of one epoch. */
void mp_session_keys(const mp_port *port, const uint8_t pairing_key[MP_KEY_BYTES], uint8_t epoch,
                     uint32_t host_id, const uint8_t host_nonce[MP_NONCE_BYTES], uint32_t pen_id,
                     const uint8_t pen_nonce[MP_NONCE_BYTES], uint8_t to_pen[MP_KEY_BYTES],
                     uint8_t to_host[MP_KEY_BYTES]);

/* linkauth.synack_tag (16 bytes) and linkauth.resume_tag (8 bytes). */
void mp_synack_tag(const mp_port *port, const uint8_t pairing_key[MP_KEY_BYTES], uint8_t epoch,
                   uint32_t host_id, const uint8_t host_nonce[MP_NONCE_BYTES], uint32_t pen_id,
                   const uint8_t pen_nonce[MP_NONCE_BYTES], uint8_t tag[16]);
void mp_resume_tag(const mp_port *port, const uint8_t key[MP_KEY_BYTES], uint8_t epoch,
                   uint32_t nonce, uint32_t attempt, uint8_t tag[MP_FRAME_TAG_BYTES]);

/* Constant-time comparison: 1 when equal. */
int mp_equal_ct(const uint8_t *a, const uint8_t *b, size_t n);

#endif /* MP_LINK_H */
