/* A minimal micropen pen firmware built from the C kit: the portable part.
 *
 * C99 with no I/O, no clock, no malloc, no floating point: time comes in as `now_ms` (a
 * free-running millisecond counter that may wrap at 2^32), bytes from the line go in through
 * pen_receive() and bytes for the line come out of pen_transmit(). A platform (pen_posix.c:
 * a pty and CLOCK_MONOTONIC) runs this loop:
 *
 *     pen_advance(&pen, now);                    what was due up to now happens, at its own time
 *     pen_receive(&pen, bytes, n, now);          bytes the host wrote
 *     n = pen_transmit(&pen, out, cap, now);     bytes to write to the host
 *     wait for bytes, at most pen_next_deadline_ms(&pen, now) ms
 *
 * What it implements (README.md next to this file): the handshake and identity, the host
 * session with the reply cache and held records, status, depth and rate with the envelope and
 * the per-area limits, runs bounded by strokes or duration (strokes counted from time x rate),
 * stop, emergency stop, clear fault, the heartbeat watchdog, telemetry, the mounted cartridge,
 * the factory calibration (read only), service mode and authenticated links for the pairings
 * it is given. Every other command is answered Nak(UNKNOWN_COMMAND).
 */
#ifndef PEN_H
#define PEN_H

#include <stddef.h>
#include <stdint.h>

#include "mp_link.h"
#include "mp_messages.h"
#include "mp_port.h"
#include "mp_replycache.h"

/* Records (RunReport, Event, FaultReport) held while no host session is open. */
#ifndef PEN_HELD_MAX
#define PEN_HELD_MAX MP_L_HELD_RECORDS_MAX
#endif
/* Replies and records waiting, in order, for room in the link (at least MP_LINK_TX_SLOTS:
 * at a new epoch it holds what the link hands back). */
#ifndef PEN_OUTQ_MAX
#define PEN_OUTQ_MAX (MP_LINK_TX_SLOTS + 32)
#endif
/* Bytes of a message the pen sends: id byte + its largest body (Identity, 63). */
#define PEN_MESSAGE_BYTES 64
/* Bytes of a record: id byte + the largest record body (RunReport, 26). */
#define PEN_RECORD_BYTES 27
/* Messages one command may cause before its reply has gone (events, reports). */
#ifndef PEN_DEFERRED_MAX
#define PEN_DEFERRED_MAX 16
#endif
/* Pairings the pen holds (the protocol allows 8). */
#ifndef PEN_PAIRINGS_MAX
#define PEN_PAIRINGS_MAX 8
#endif
/* Depth actuator speed, micrometres per millisecond: full travel (2500 um) home in 42 ms. */
#ifndef PEN_ACTUATOR_UM_PER_MS
#define PEN_ACTUATOR_UM_PER_MS 60u
#endif

/* What the unit is; copied at pen_init. Strings are NUL-terminated printable ASCII. */
typedef struct pen_config {
    const char *model;  /* <= 16 chars */
    const char *serial; /* <= 16 chars */
    uint8_t firmware_major, firmware_minor, firmware_patch, hardware_revision;
    uint32_t boot_id;   /* random per boot (the platform draws it) */
    uint32_t today_day; /* the pen's real-time clock: days since 1970-01-01 */
    uint32_t pen_id;    /* names this unit's pairings (random per unit, never 0) */
    /* the cartridge in the bay at power-on (cartridge_id 0: none) */
    uint32_t cartridge_id;
    const char *cartridge_lot; /* <= 12 chars; empty: a tag the pen cannot trust */
    uint32_t cartridge_made_day, cartridge_expiry_day;
    /* usage on its tag: not 0 when it was locked in this bay before a reset (same mounting) */
    uint32_t cartridge_strokes_used, cartridge_run_ms_used;
    /* HMAC-SHA256 and random bytes for link authentication (NULL hooks: no authentication,
     * and then the pen obeys no command that needs a paired host) */
    mp_port port;
} pen_config;

typedef struct pen_pairing {
    uint32_t host_id;
    uint8_t key[MP_KEY_BYTES];
} pen_pairing;

typedef struct pen_message {
    uint8_t len;
    uint8_t urgent;
    uint8_t bytes[PEN_MESSAGE_BYTES];
} pen_message;

/* A ring of messages in fixed slots of `stride` bytes: length, urgent flag, the message. */
typedef struct pen_ring {
    uint8_t *slots;
    size_t stride, cap, head, count;
} pen_ring;

/* The current or last run of this boot. */
typedef struct pen_run {
    uint32_t run_id;
    uint8_t area, mode;
    uint32_t target; /* strokes, or ms for a duration run */
    uint16_t depth_um;
    uint8_t rate_sps;
    uint32_t cartridge_id;
    uint32_t start_ms;
    uint32_t strokes;     /* final, once ended */
    uint32_t duration_ms; /* final, once ended */
    uint8_t outcome;      /* MP_RUNOUTCOME_ACTIVE while running */
} pen_run;

typedef struct pen_cartridge {
    uint32_t id; /* 0: the bay is empty */
    char lot[13];
    uint32_t made_day, expiry_day;
    uint32_t strokes_used, run_ms_used; /* on its tag: finished runs */
    uint8_t state;                      /* MP_CARTRIDGESTATE_* */
    uint8_t refusal;                    /* MP_ERRORCODE_* while REFUSED */
    int32_t refusal_value, refusal_limit;
} pen_cartridge;

typedef struct pen_counters {
    uint32_t commands;            /* commands executed */
    uint32_t duplicates_answered; /* commands answered from the reply cache */
    uint32_t records_lost;        /* held records beyond PEN_HELD_MAX, or a full queue */
    uint32_t telemetry_skipped;   /* samples not sent (no paired host, or congestion) */
    uint32_t encode_failures;     /* a message the codec refused to build (a bug) */
} pen_counters;

typedef struct pen {
    mp_link link;
    mp_replycache replies;
    pen_config cfg;
    char model[17], serial[17];
    uint32_t boot_ms; /* now_ms at power-on: pen time (t_ms) is now_ms - boot_ms */
    uint32_t now_ms;  /* the latest instant handled */

    /* the state machine (protocol/behaviour.py TRANSITIONS) and the settings */
    uint8_t state, fault;
    uint16_t depth_set_um;
    uint8_t soft_cap_override, rate_set_sps;
    uint16_t watchdog_ms, telemetry_hz;
    uint32_t lifetime_strokes;

    /* runs: strokes = (phase_milli + rate_set_sps * (t - phase_t0)) / 1000 while running */
    pen_run run;
    uint8_t has_run;
    uint32_t run_count;
    uint64_t phase_milli;
    uint32_t phase_t0;
    uint32_t stroke_limit;     /* the run ends at this stroke ... */
    uint8_t stroke_outcome;    /* ... with this outcome (COMPLETED or CARTRIDGE_LIMIT) */
    uint32_t stroke_end_at;    /* the instant of that stroke at the current rate */
    uint32_t time_end_at;      /* or at this instant (duration, or the cartridge's time) */
    uint8_t time_outcome;

    /* the heartbeat watchdog, armed while running */
    uint8_t wd_armed;
    uint32_t wd_at, last_rx;

    /* the depth actuator: from act_from at act_t0 toward act_to */
    uint16_t act_from, act_to;
    uint32_t act_t0;
    uint8_t retracting; /* needles on their way home after a stop */
    uint32_t stop_t, retract_at;

    /* telemetry: samples at boot + k * 1000 / telemetry_hz ms */
    uint8_t tel_armed;
    uint64_t tel_k;
    uint32_t tel_at;

    pen_cartridge cart;

    /* link epoch, handshake, host session, service mode */
    uint8_t epoch;
    int16_t handshake_epoch, session_epoch; /* -1: none */
    uint32_t session;
    uint32_t peer_id; /* the paired host that authenticated this epoch; 0: none */
    uint8_t service_held, service_by_session, service_epoch;
    uint32_t service_session;

    pen_pairing pairings[PEN_PAIRINGS_MAX];
    uint8_t pairing_count;

    /* outgoing records and replies */
    uint8_t held_slots[PEN_HELD_MAX][2 + PEN_RECORD_BYTES];
    uint8_t outq_slots[PEN_OUTQ_MAX][2 + PEN_MESSAGE_BYTES];
    pen_ring held; /* records waiting for a host session, oldest first */
    pen_ring outq; /* waiting for the link; an entry of length 0 marks "the held go here" */
    pen_message deferred[PEN_DEFERRED_MAX]; /* len 0: "hand the held records over here" */
    size_t deferred_count;
    uint8_t deferring;

    pen_counters counters;
} pen;

/* Power-on at now_ms: self-test passed (IDLE), Event BOOTED held for the first host session. */
void pen_init(pen *p, const pen_config *cfg, uint32_t now_ms);
/* A pairing made at the factory or on the bench (a local act, not over the link). Returns 1,
 * or 0 when the table is full or the host id is 0. Links this host opens are authenticated. */
int pen_add_pairing(pen *p, uint32_t host_id, const uint8_t key[MP_KEY_BYTES]);
/* Everything due up to now_ms happens, each at its own instant. */
void pen_advance(pen *p, uint32_t now_ms);
/* Bytes from the line (call pen_advance(p, now_ms) first). */
void pen_receive(pen *p, const uint8_t *bytes, size_t n, uint32_t now_ms);
/* Bytes for the line, at most cap (cap >= MP_FRAME_MAX_WIRE); 0 when nothing is to be written. */
size_t pen_transmit(pen *p, uint8_t *out, size_t cap, uint32_t now_ms);
/* Milliseconds from now_ms until pen_advance (and pen_transmit) must run again (UINT32_MAX:
 * nothing scheduled). */
uint32_t pen_next_deadline_ms(pen *p, uint32_t now_ms);
/* The same for the firmware's own timers only (runs, watchdog, retraction, telemetry), not the
 * link's transmissions: what to wait for while the line cannot take more bytes. */
uint32_t pen_next_timer_ms(const pen *p, uint32_t now_ms);
/* The capability flags the pen reports in Identity. */
uint32_t pen_capabilities(const pen *p);

#endif
