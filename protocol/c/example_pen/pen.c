/* A minimal micropen pen firmware built from the C kit (see pen.h and README.md).
 *
 * It behaves as sim/firmware.py does for everything it implements; the comments name the
 * Python it mirrors. Messages are built and read only through the generated codec
 * (mp_messages.h), limits and area profiles come from the generated tables (never retyped),
 * and which command is obeyed when comes from the generated admission table.
 */
#include "pen.h"

#include <string.h>

#define U32_MAX_ 0xFFFFFFFFu

/* What the example pen models instead of sensors (it has none): a handpiece at room
 * temperature, a charged battery, and a motor drawing its no-load current plus a share per
 * stroke/s. */
#define PEN_TEMPERATURE_DC 250
#define PEN_BATTERY_MV 4050u
#define PEN_MOTOR_NOLOAD_MA 150u
#define PEN_MOTOR_MA_PER_10SPS 25u

/* The factory calibration in the active bank: nominal (no correction), valid. */
#define PEN_CAL_VERSION 1u
#define PEN_CAL_WRITTEN_AT 1764115200u /* 2025-11-26 00:00 UTC */
#define PEN_CAL_COUNTER 1u

enum { BOOT_REASON_POWER_ON = 0 };

static const uint8_t rate_levels[MP_L_RATE_LEVEL_COUNT] = MP_L_RATE_LEVELS_SPS;

/* ======================================================================== small helpers */
static int32_t as_i32(uint32_t v)
{ /* a u32 as the i32 field of a Nak or Event carries it (two's complement) */
    return v <= 0x7FFFFFFFu ? (int32_t)v : -(int32_t)(U32_MAX_ - v) - 1;
}

static int due(uint32_t now, uint32_t at) { return (int32_t)(now - at) >= 0; }

static int earlier(uint32_t a, uint32_t b) { return (int32_t)(a - b) < 0; }

static uint32_t le32(const uint8_t *b)
{
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static uint32_t pen_time(const pen *p, uint32_t t) { return t - p->boot_ms; }

static void copy_text(char *dst, size_t size, const char *src)
{
    size_t n = 0;
    if (src != NULL) {
        while (n + 1 < size && src[n] != '\0') {
            dst[n] = src[n];
            n++;
        }
    }
    memset(dst + n, 0, size - n);
}

/* ======================================================================== message rings */
typedef char pen_outq_holds_the_link_s_slots[PEN_OUTQ_MAX >= MP_LINK_TX_SLOTS ? 1 : -1];

static void ring_init(pen_ring *r, uint8_t *slots, size_t stride, size_t cap)
{
    r->slots = slots;
    r->stride = stride;
    r->cap = cap;
    r->head = r->count = 0;
}

static uint8_t *ring_slot(const pen_ring *r, size_t i)
{
    return r->slots + ((r->head + i) % r->cap) * r->stride;
}

static void ring_get(const pen_ring *r, size_t i, pen_message *m)
{
    const uint8_t *slot = ring_slot(r, i);
    m->len = slot[0];
    m->urgent = slot[1];
    memcpy(m->bytes, slot + 2, m->len);
}

static void ring_put(uint8_t *slot, const pen_message *m)
{
    slot[0] = m->len;
    slot[1] = m->urgent;
    memcpy(slot + 2, m->bytes, m->len);
}

static int ring_push(pen_ring *r, const pen_message *m)
{
    if (r->count >= r->cap || (size_t)m->len + 2u > r->stride) {
        return 0;
    }
    ring_put(ring_slot(r, r->count), m);
    r->count++;
    return 1;
}

static int ring_push_front(pen_ring *r, const pen_message *m)
{
    if (r->count >= r->cap || (size_t)m->len + 2u > r->stride) {
        return 0;
    }
    r->head = (r->head + r->cap - 1u) % r->cap;
    ring_put(ring_slot(r, 0), m);
    r->count++;
    return 1;
}

static void ring_pop(pen_ring *r)
{
    if (r->count > 0) {
        r->head = (r->head + 1u) % r->cap;
        r->count--;
    }
}

static void ring_clear(pen_ring *r) { r->head = r->count = 0; }

/* ======================================================================== sessions */
/* The host session named on this epoch after its Hello; only a paired host's session gets
 * records and a reply cache (firmware.py _open_session). */
static int open_session(const pen *p, uint32_t *session)
{
    if (p->handshake_epoch != (int16_t)p->epoch || p->session_epoch != (int16_t)p->epoch) {
        return 0;
    }
    if (p->peer_id == 0) {
        return 0;
    }
    if (session != NULL) {
        *session = p->session;
    }
    return 1;
}

static int in_service(const pen *p)
{ /* service.py ServiceMode.held_by */
    uint32_t session = 0;
    if (!p->service_held) {
        return 0;
    }
    if (p->service_by_session) {
        return open_session(p, &session) && session == p->service_session;
    }
    return p->epoch == p->service_epoch;
}

/* ======================================================================== sending */
/* Run reports, events and fault reports are records: held for a host session, never lost.
 * Telemetry is a live measurement: never held. */
static int is_record(uint8_t id)
{
    return id == MP_ID_Event || id == MP_ID_FaultReport || id == MP_ID_RunReport;
}

static int hand_over_held(pen *p)
{ /* to the open session, oldest first, as far as the link takes them (firmware.py
   * _release_held); 0 while some wait for room */
    pen_message m;
    while (p->held.count > 0) {
        ring_get(&p->held, 0, &m);
        if (mp_link_send(&p->link, m.bytes, m.len, 0u, p->now_ms) < 0) {
            return 0;
        }
        ring_pop(&p->held);
    }
    return 1;
}

static void pump(pen *p)
{ /* the queue into the link, in order, as far as the link takes it */
    pen_message m;
    while (p->outq.count > 0) {
        ring_get(&p->outq, 0, &m);
        if (m.len == 0) {
            if (!hand_over_held(p)) {
                return;
            }
        } else if (mp_link_send(&p->link, m.bytes, m.len, m.urgent ? MP_SEND_URGENT : 0u,
                                p->now_ms) < 0) {
            return;
        }
        ring_pop(&p->outq);
    }
}

static void queue_out(pen *p, const pen_message *m)
{
    if (m->urgent && p->outq.count > 0) { /* an urgent message jumps what waits */
        if (mp_link_send(&p->link, m->bytes, m->len, MP_SEND_URGENT, p->now_ms) == 0) {
            return;
        }
    }
    if (!ring_push(&p->outq, m)) {
        p->counters.records_lost++;
        return;
    }
    pump(p);
}

static void hold(pen *p, const pen_message *m)
{ /* a record waits for a host session that can store it (firmware.py _hold) */
    if (!is_record(m->bytes[0])) {
        p->counters.telemetry_skipped++;
    } else if (!ring_push(&p->held, m)) {
        p->counters.records_lost++;
    }
}

/* A record (Event, FaultReport, RunReport): after the reply of the command being handled,
 * to the open session, or held. */
static void emit_record(pen *p, const pen_message *m)
{
    if (p->deferring) {
        if (p->deferred_count < PEN_DEFERRED_MAX) {
            p->deferred[p->deferred_count++] = *m;
            return;
        }
        p->counters.records_lost++; /* PEN_DEFERRED_MAX is sized for the worst command */
        return;
    }
    if (!open_session(p, NULL)) {
        hold(p, m);
        return;
    }
    queue_out(p, m);
}

static void flush_deferred(pen *p)
{ /* what a command caused, after its reply; the marker hands the held records over */
    size_t i, n = p->deferred_count;
    p->deferred_count = 0;
    for (i = 0; i < n; i++) {
        if (p->deferred[i].len == 0) {
            queue_out(p, &p->deferred[i]);
        } else {
            emit_record(p, &p->deferred[i]);
        }
    }
}

static int finish(pen *p, pen_message *m, int n, int urgent)
{
    if (n <= 0 || n > (int)sizeof m->bytes) {
        p->counters.encode_failures++;
        m->len = 0;
        return 0;
    }
    m->len = (uint8_t)n;
    m->urgent = (uint8_t)urgent;
    return 1;
}

static void event(pen *p, uint32_t t, uint8_t code, int32_t value, uint32_t run_id)
{
    mp_Event e;
    pen_message m;
    e.t_ms = pen_time(p, t);
    e.code = code;
    e.value = value;
    e.run_id = run_id;
    if (finish(p, &m, mp_Event_pack(&e, m.bytes, sizeof m.bytes), 0)) {
        emit_record(p, &m);
    }
}

static uint32_t run_id_now(const pen *p) { return p->has_run ? p->run.run_id : 0u; }

static void make_ack(pen *p, pen_message *r, uint32_t cmd_id, uint32_t value)
{
    mp_Ack a;
    a.cmd_id = cmd_id;
    a.value = value;
    finish(p, r, mp_Ack_pack(&a, r->bytes, sizeof r->bytes), 0);
}

static void make_nak(pen *p, pen_message *r, uint32_t cmd_id, uint8_t error, int32_t value,
                     int32_t limit)
{
    mp_Nak n;
    n.cmd_id = cmd_id;
    n.error = error;
    n.value = value;
    n.limit = limit;
    finish(p, r, mp_Nak_pack(&n, r->bytes, sizeof r->bytes), 0);
}

/* ======================================================================== the actuator */
static uint16_t act_position(const pen *p, uint32_t t)
{
    uint32_t dt = t - p->act_t0;
    uint32_t travel = dt > 100000u ? 0xFFFFFFu : dt * PEN_ACTUATOR_UM_PER_MS;
    if (p->act_from < p->act_to) {
        uint32_t pos = (uint32_t)p->act_from + travel;
        return (uint16_t)(pos < p->act_to ? pos : p->act_to);
    }
    if (travel >= (uint32_t)(p->act_from - p->act_to)) {
        return p->act_to;
    }
    return (uint16_t)(p->act_from - travel);
}

static void act_move(pen *p, uint32_t t, uint16_t target)
{
    p->act_from = act_position(p, t);
    p->act_t0 = t;
    p->act_to = target;
}

static uint32_t act_arrival(const pen *p)
{
    uint32_t dist = p->act_from > p->act_to ? (uint32_t)(p->act_from - p->act_to)
                                            : (uint32_t)(p->act_to - p->act_from);
    return p->act_t0 + (dist + PEN_ACTUATOR_UM_PER_MS - 1u) / PEN_ACTUATOR_UM_PER_MS;
}

/* ======================================================================== strokes */
static uint32_t strokes_at(const pen *p, uint32_t t)
{
    uint64_t milli = p->phase_milli + (uint64_t)p->rate_set_sps * (uint32_t)(t - p->phase_t0);
    uint64_t strokes = milli / 1000u;
    return strokes < p->stroke_limit ? (uint32_t)strokes : p->stroke_limit;
}

static void plan_stroke_end(pen *p)
{ /* the instant the stroke count reaches stroke_limit at the current rate */
    uint64_t goal = (uint64_t)p->stroke_limit * 1000u;
    uint64_t rest = goal > p->phase_milli ? goal - p->phase_milli : 0u;
    uint64_t ms = (rest + p->rate_set_sps - 1u) / p->rate_set_sps;
    p->stroke_end_at = p->phase_t0 + (uint32_t)(ms < 0x7FFFFFFFu ? ms : 0x7FFFFFFFu);
}

static uint32_t run_strokes_now(const pen *p, uint32_t t)
{
    if (!p->has_run) {
        return 0;
    }
    return p->state == MP_PENSTATE_RUNNING ? strokes_at(p, t) : p->run.strokes;
}

static uint32_t cartridge_strokes_now(const pen *p, uint32_t t)
{
    if (p->cart.id == 0) {
        return 0;
    }
    return p->cart.strokes_used + (p->state == MP_PENSTATE_RUNNING ? strokes_at(p, t) : 0u);
}

static uint32_t cartridge_ms_now(const pen *p, uint32_t t)
{
    if (p->cart.id == 0) {
        return 0;
    }
    return p->cart.run_ms_used + (p->state == MP_PENSTATE_RUNNING ? t - p->run.start_ms : 0u);
}

/* ======================================================================== the cartridge */
static int cartridge_worn(const pen_cartridge *c)
{
    return c->strokes_used >= MP_L_CARTRIDGE_LIFE_STROKES || c->run_ms_used >= MP_L_CARTRIDGE_LIFE_MS;
}

static void cartridge_refuse(pen_cartridge *c, uint8_t error, uint32_t value, uint32_t limit)
{
    c->state = MP_CARTRIDGESTATE_REFUSED;
    c->refusal = error;
    c->refusal_value = as_i32(value);
    c->refusal_limit = as_i32(limit);
}

/* Judge the cartridge in the bay at power-on (cartridge.py CartridgeSlot.assess): one that ran
 * in this mounting before a reset (usage on its tag) is locked, or worn out; any other is
 * judged unknown, then expired. This pen keeps no record of other mountings. */
static void cartridge_assess(pen *p)
{
    pen_cartridge *c = &p->cart;
    uint32_t today = p->cfg.today_day, expiry;
    c->refusal = 0;
    c->refusal_value = c->refusal_limit = 0;
    if (c->id == 0) {
        c->state = MP_CARTRIDGESTATE_ABSENT;
        return;
    }
    if (c->strokes_used > 0 || c->run_ms_used > 0) { /* the same mounting, across a reset */
        c->state = cartridge_worn(c) ? MP_CARTRIDGESTATE_EXHAUSTED : MP_CARTRIDGESTATE_LOCKED;
        return;
    }
    if (c->lot[0] == '\0') {
        cartridge_refuse(c, MP_ERRORCODE_CARTRIDGE_UNKNOWN, c->id, 0);
        return;
    }
    if (c->made_day > today) {
        cartridge_refuse(c, MP_ERRORCODE_CARTRIDGE_UNKNOWN, c->made_day, today);
        return;
    }
    if (c->expiry_day < c->made_day) {
        cartridge_refuse(c, MP_ERRORCODE_CARTRIDGE_UNKNOWN, c->expiry_day, c->made_day);
        return;
    }
    expiry = c->made_day > U32_MAX_ - MP_L_CARTRIDGE_SHELF_LIFE_DAYS
                 ? U32_MAX_
                 : c->made_day + MP_L_CARTRIDGE_SHELF_LIFE_DAYS; /* the shelf life */
    if (c->expiry_day < expiry) {
        expiry = c->expiry_day;
    }
    if (today > expiry) {
        cartridge_refuse(c, MP_ERRORCODE_CARTRIDGE_EXPIRED, today, expiry);
        return;
    }
    c->state = cartridge_worn(c) ? MP_CARTRIDGESTATE_EXHAUSTED : MP_CARTRIDGESTATE_NEW;
}

/* ======================================================================== runs and faults */
static void retracted(pen *p, uint32_t t)
{ /* needles home (firmware.py _retracted) */
    p->retracting = 0;
    p->act_from = p->act_to;
    p->act_t0 = t;
    event(p, t, MP_EVENTCODE_RETRACTED, as_i32(t - p->stop_t), run_id_now(p));
    if (p->state == MP_PENSTATE_STOPPING) {
        p->state = MP_PENSTATE_IDLE;
    }
}

static void schedule_retraction(pen *p, uint32_t t)
{ /* needles on their way home; a retraction already under way keeps its start */
    if (!p->retracting) {
        p->stop_t = t;
    }
    if (act_position(p, t) != p->act_to) {
        p->retracting = 1;
        p->retract_at = act_arrival(p);
    } else if (p->retracting || p->state == MP_PENSTATE_STOPPING) {
        retracted(p, t);
    }
}

static void end_run(pen *p, uint8_t outcome, uint32_t t)
{ /* motor off, needles on their way home, the exact count reported (firmware.py _end_run) */
    mp_RunReport r;
    pen_message m;
    uint32_t strokes, run_ms;
    if (!p->has_run || p->run.outcome != MP_RUNOUTCOME_ACTIVE) {
        return;
    }
    strokes = strokes_at(p, t);
    run_ms = t - p->run.start_ms;
    p->run.strokes = strokes;
    p->run.duration_ms = run_ms;
    p->run.outcome = outcome;
    act_move(p, t, 0);
    if (p->cart.id != 0) {
        p->cart.strokes_used += strokes;
        p->cart.run_ms_used += run_ms;
        if (cartridge_worn(&p->cart) && p->cart.state == MP_CARTRIDGESTATE_LOCKED) {
            p->cart.state = MP_CARTRIDGESTATE_EXHAUSTED;
        }
    }
    p->lifetime_strokes += strokes;
    p->wd_armed = 0;
    schedule_retraction(p, t);
    r.run_id = p->run.run_id;
    r.outcome = outcome;
    r.mode = p->run.mode;
    r.target = p->run.target;
    r.strokes = strokes;
    r.duration_ms = run_ms;
    r.area = p->run.area;
    r.depth_um = p->run.depth_um;
    r.rate_sps = p->run.rate_sps;
    r.cartridge_id = p->run.cartridge_id;
    if (finish(p, &m, mp_RunReport_pack(&r, m.bytes, sizeof m.bytes), 0)) {
        emit_record(p, &m);
    }
    if (p->cart.id != 0 && p->cart.state == MP_CARTRIDGESTATE_EXHAUSTED) {
        event(p, t, MP_EVENTCODE_CARTRIDGE_RETIRED, as_i32(p->cart.id), p->run.run_id);
    }
}

static void finish_run(pen *p, uint8_t outcome, uint32_t t)
{ /* a run ends without a fault: target reached, cartridge worn out, or Stop */
    p->state = MP_PENSTATE_STOPPING;
    end_run(p, outcome, t);
    event(p, t, MP_EVENTCODE_STOPPED, outcome, run_id_now(p));
}

static void leave_service(pen *p, uint8_t reason, uint32_t t)
{ /* service mode ends; a bench-fixture run still going stops with it */
    if (!p->service_held) {
        return;
    }
    p->service_held = 0;
    if (p->state == MP_PENSTATE_RUNNING && p->run.area == MP_AREA_BENCH_FIXTURE) {
        finish_run(p, MP_RUNOUTCOME_STOPPED, t);
    }
    event(p, t, MP_EVENTCODE_SERVICE_MODE_LEFT, reason, run_id_now(p));
}

static void raise_fault(pen *p, uint8_t code, int32_t value, uint32_t t)
{ /* motor off, needles home, fault latched until ClearFault (firmware.py _fault) */
    mp_FaultReport f;
    pen_message m;
    int was_running = p->state == MP_PENSTATE_RUNNING;
    p->state = MP_PENSTATE_FAULT;
    if (was_running) {
        uint8_t outcome = MP_RUNOUTCOME_FAULT;
        if (code == MP_FAULTCODE_EMERGENCY_STOP) {
            outcome = MP_RUNOUTCOME_EMERGENCY_STOP;
        } else if (code == MP_FAULTCODE_WATCHDOG) {
            outcome = MP_RUNOUTCOME_WATCHDOG;
        }
        end_run(p, outcome, t);
    } else {
        act_move(p, t, 0);
        schedule_retraction(p, t);
    }
    p->fault = code;
    f.t_ms = pen_time(p, t);
    f.fault = code;
    f.value = value;
    f.run_id = run_id_now(p);
    if (finish(p, &m, mp_FaultReport_pack(&f, m.bytes, sizeof m.bytes), 0)) {
        emit_record(p, &m);
    }
    leave_service(p, code == MP_FAULTCODE_WATCHDOG ? MP_SERVICEEXIT_WATCHDOG : MP_SERVICEEXIT_FAULT,
                  t);
    if (code == MP_FAULTCODE_EMERGENCY_STOP) {
        event(p, t, MP_EVENTCODE_EMERGENCY_STOP, value, run_id_now(p));
    } else {
        event(p, t, MP_EVENTCODE_FAULT_RAISED, code, run_id_now(p));
    }
}

/* ======================================================================== telemetry */
static uint32_t tel_instant(const pen *p, uint64_t k)
{
    return p->boot_ms + (uint32_t)(k * 1000u / p->telemetry_hz);
}

static void align_telemetry(pen *p, uint32_t t)
{ /* the next sample on the grid boot + k * 1000 / hz after t */
    uint64_t k;
    if (p->telemetry_hz == 0) {
        p->tel_armed = 0;
        return;
    }
    k = (uint64_t)pen_time(p, t) * p->telemetry_hz / 1000u + 1u;
    while (!earlier(t, tel_instant(p, k))) {
        k++;
    }
    p->tel_k = k;
    p->tel_at = tel_instant(p, k);
    p->tel_armed = 1;
}

static void telemetry(pen *p, uint32_t t)
{
    mp_Telemetry s;
    pen_message m;
    int running = p->state == MP_PENSTATE_RUNNING;
    p->tel_k++;
    p->tel_at = tel_instant(p, p->tel_k);
    if (!earlier(t, p->tel_at)) {
        align_telemetry(p, t);
    }
    /* live treatment data is for a paired host only, and never goes ahead of a reply */
    if (!mp_link_established(&p->link) || p->peer_id == 0 || p->outq.count > 0) {
        p->counters.telemetry_skipped++;
        return;
    }
    s.t_ms = pen_time(p, t);
    s.state = p->state;
    s.depth_um = act_position(p, t);
    s.rate_csps = (uint16_t)(running ? p->rate_set_sps * 100u : 0u);
    s.run_strokes = run_strokes_now(p, t);
    s.current_ma =
        (uint16_t)(running ? PEN_MOTOR_NOLOAD_MA + PEN_MOTOR_MA_PER_10SPS * p->rate_set_sps / 10u
                           : 0u);
    s.temperature_dc = PEN_TEMPERATURE_DC;
    s.battery_mv = (uint16_t)PEN_BATTERY_MV;
    s.cartridge_id = p->cart.id;
    s.cartridge_strokes = cartridge_strokes_now(p, t);
    if (!finish(p, &m, mp_Telemetry_pack(&s, m.bytes, sizeof m.bytes), 0) ||
        mp_link_send(&p->link, m.bytes, m.len, MP_SEND_DATAGRAM, t) < 0) {
        p->counters.telemetry_skipped++;
    }
}

/* ======================================================================== checks */
static uint16_t area_depth_limit(const mp_area *a, int override)
{
    return override ? a->override_max_um : a->max_um;
}

static int area_allows_rate(const mp_area *a, uint8_t rate)
{
    unsigned level;
    for (level = a->level_lo; level <= a->level_hi; level++) {
        if (rate_levels[level - 1u] == rate) {
            return 1;
        }
    }
    return 0;
}

static uint8_t area_fastest(const mp_area *a) { return rate_levels[a->level_hi - 1u]; }

typedef struct refusal {
    uint8_t error; /* 0: none */
    int32_t value, limit;
} refusal;

static refusal refuse(uint8_t error, int32_t value, int32_t limit)
{
    refusal r;
    r.error = error;
    r.value = value;
    r.limit = limit;
    return r;
}

static const refusal NO_REFUSAL = {0, 0, 0};

/* The depth envelope, and the run's area while running (firmware.py check_depth). */
static refusal check_depth(const pen *p, uint16_t depth, int override)
{
    if (depth != 0 && depth < MP_L_DEPTH_MIN_UM) {
        return refuse(MP_ERRORCODE_DEPTH_OUT_OF_RANGE, depth, MP_L_DEPTH_MIN_UM);
    }
    if (depth > MP_L_DEPTH_MAX_UM) {
        return refuse(MP_ERRORCODE_DEPTH_OUT_OF_RANGE, depth, MP_L_DEPTH_MAX_UM);
    }
    if (depth > MP_L_DEPTH_SOFT_CAP_UM && !override) {
        return refuse(MP_ERRORCODE_SOFT_CAP_NEEDS_OVERRIDE, depth, MP_L_DEPTH_SOFT_CAP_UM);
    }
    if (p->state == MP_PENSTATE_RUNNING && p->has_run) {
        const mp_area *a = mp_area_find(p->run.area);
        if (depth == 0) {
            return refuse(MP_ERRORCODE_DEPTH_OUT_OF_RANGE, depth, MP_L_DEPTH_MIN_UM);
        }
        if (a != NULL && depth > area_depth_limit(a, override)) {
            return refuse(MP_ERRORCODE_DEPTH_ABOVE_AREA_MAX, depth, area_depth_limit(a, override));
        }
    }
    return NO_REFUSAL;
}

/* Every condition a run must meet, in the documented order (firmware.py check_run). */
static refusal check_run(const pen *p, const mp_Run *m)
{
    const mp_area *a = mp_area_find(m->area);
    int override = p->soft_cap_override != 0;
    int fixture;
    refusal r;
    if (a == NULL) {
        return refuse(MP_ERRORCODE_UNKNOWN_AREA, m->area, MP_AREA_COUNT);
    }
    fixture = a->id == MP_AREA_BENCH_FIXTURE;
    if (fixture && !in_service(p)) {
        return refuse(MP_ERRORCODE_SERVICE_MODE_REQUIRED, a->id, 0);
    }
    if (!fixture && in_service(p)) {
        return refuse(MP_ERRORCODE_SERVICE_MODE_ACTIVE, a->id, 0);
    }
    if (m->mode == MP_RUNMODE_STROKES &&
        (m->strokes < MP_L_STROKES_MIN || m->strokes > MP_L_STROKES_MAX)) {
        return refuse(MP_ERRORCODE_STROKES_OUT_OF_RANGE, as_i32(m->strokes),
                      m->strokes < MP_L_STROKES_MIN ? MP_L_STROKES_MIN : MP_L_STROKES_MAX);
    }
    if (m->mode == MP_RUNMODE_DURATION &&
        (m->duration_ms < MP_L_RUN_DURATION_MIN_MS || m->duration_ms > MP_L_RUN_DURATION_MAX_MS)) {
        return refuse(MP_ERRORCODE_DURATION_OUT_OF_RANGE, as_i32(m->duration_ms),
                      m->duration_ms < MP_L_RUN_DURATION_MIN_MS ? MP_L_RUN_DURATION_MIN_MS
                                                                : MP_L_RUN_DURATION_MAX_MS);
    }
    /* calibrated: the factory calibration is always valid on this pen */
    if (p->depth_set_um < MP_L_DEPTH_MIN_UM) {
        return refuse(MP_ERRORCODE_DEPTH_OUT_OF_RANGE, p->depth_set_um, MP_L_DEPTH_MIN_UM);
    }
    r = check_depth(p, p->depth_set_um, override);
    if (r.error != 0) {
        return r;
    }
    if (p->depth_set_um > area_depth_limit(a, override)) {
        return refuse(MP_ERRORCODE_DEPTH_ABOVE_AREA_MAX, p->depth_set_um,
                      area_depth_limit(a, override));
    }
    if (!area_allows_rate(a, p->rate_set_sps)) {
        return refuse(MP_ERRORCODE_RATE_NOT_ALLOWED_FOR_AREA, p->rate_set_sps, area_fastest(a));
    }
    if (p->cart.id == 0) {
        return refuse(MP_ERRORCODE_NO_CARTRIDGE, 0, 0);
    }
    if (p->cart.state == MP_CARTRIDGESTATE_REFUSED) {
        return refuse(p->cart.refusal, p->cart.refusal_value, p->cart.refusal_limit);
    }
    if (p->cart.state == MP_CARTRIDGESTATE_RETIRED) {
        return refuse(MP_ERRORCODE_CARTRIDGE_USED, as_i32(p->cart.id), 0);
    }
    if (p->cart.state == MP_CARTRIDGESTATE_EXHAUSTED || cartridge_worn(&p->cart)) {
        return refuse(MP_ERRORCODE_CARTRIDGE_EXHAUSTED, as_i32(p->cart.strokes_used),
                      as_i32(MP_L_CARTRIDGE_LIFE_STROKES));
    }
    if (PEN_BATTERY_MV < MP_L_BATTERY_START_MIN_MV) {
        return refuse(MP_ERRORCODE_BATTERY_LOW, (int32_t)PEN_BATTERY_MV, MP_L_BATTERY_START_MIN_MV);
    }
    if (PEN_TEMPERATURE_DC > MP_L_TEMP_LIMIT_DC) {
        return refuse(MP_ERRORCODE_OVER_TEMPERATURE, PEN_TEMPERATURE_DC, MP_L_TEMP_LIMIT_DC);
    }
    return NO_REFUSAL;
}

static uint32_t start_run(pen *p, const mp_Run *m, uint32_t t)
{ /* firmware.py _start_run and _set_run_limits */
    uint32_t run_id = ++p->run_count;
    uint32_t target = m->mode == MP_RUNMODE_STROKES ? m->strokes : m->duration_ms;
    uint32_t strokes_left = 0, ms_left = 0;
    if (p->cart.state == MP_CARTRIDGESTATE_NEW) { /* locked at the first run of a mounting */
        p->cart.state = MP_CARTRIDGESTATE_LOCKED;
        event(p, t, MP_EVENTCODE_CARTRIDGE_LOCKED, as_i32(p->cart.id), run_id);
    }
    p->run.run_id = run_id;
    p->run.area = m->area;
    p->run.mode = m->mode;
    p->run.target = target;
    p->run.depth_um = p->depth_set_um;
    p->run.rate_sps = p->rate_set_sps;
    p->run.cartridge_id = p->cart.id;
    p->run.start_ms = t;
    p->run.strokes = p->run.duration_ms = 0;
    p->run.outcome = MP_RUNOUTCOME_ACTIVE;
    p->has_run = 1;
    p->state = MP_PENSTATE_RUNNING;
    p->phase_milli = 0;
    p->phase_t0 = t;
    p->retracting = 0;
    act_move(p, t, p->depth_set_um);
    if (p->cart.strokes_used < MP_L_CARTRIDGE_LIFE_STROKES) {
        strokes_left = MP_L_CARTRIDGE_LIFE_STROKES - p->cart.strokes_used;
    }
    if (p->cart.run_ms_used < MP_L_CARTRIDGE_LIFE_MS) {
        ms_left = MP_L_CARTRIDGE_LIFE_MS - p->cart.run_ms_used;
    }
    p->stroke_limit = strokes_left;
    p->stroke_outcome = MP_RUNOUTCOME_CARTRIDGE_LIMIT;
    if (m->mode == MP_RUNMODE_STROKES && m->strokes <= strokes_left) {
        p->stroke_limit = m->strokes;
        p->stroke_outcome = MP_RUNOUTCOME_COMPLETED;
    }
    p->time_end_at = t + ms_left;
    p->time_outcome = MP_RUNOUTCOME_CARTRIDGE_LIMIT;
    if (m->mode == MP_RUNMODE_DURATION && m->duration_ms <= ms_left) {
        p->time_end_at = t + m->duration_ms;
        p->time_outcome = MP_RUNOUTCOME_COMPLETED;
    }
    plan_stroke_end(p);
    p->wd_armed = 1;
    p->wd_at = p->last_rx + p->watchdog_ms;
    event(p, t, MP_EVENTCODE_RUN_STARTED, as_i32(target), run_id);
    return run_id;
}

/* ======================================================================== commands */
/* Whether this pen implements a command (the rest are answered UNKNOWN_COMMAND). */
static int implemented(uint8_t id)
{
    switch (id) {
    case MP_ID_Hello:
    case MP_ID_GetStatus:
    case MP_ID_SetDepth:
    case MP_ID_SetRate:
    case MP_ID_Run:
    case MP_ID_Stop:
    case MP_ID_EmergencyStop:
    case MP_ID_SetWatchdog:
    case MP_ID_SetTelemetry:
    case MP_ID_GetCartridge:
    case MP_ID_CalRead:
    case MP_ID_ClearFault:
    case MP_ID_OpenSession:
    case MP_ID_SetServiceMode: return 1;
    default: return 0;
    }
}

static void on_hello(pen *p, const mp_Hello *m, pen_message *r)
{
    mp_Identity id;
    if (m->protocol_version != MP_PROTOCOL_VERSION) {
        make_nak(p, r, m->cmd_id, MP_ERRORCODE_SCHEMA_MISMATCH, m->protocol_version,
                 MP_PROTOCOL_VERSION);
        return;
    }
    if (m->schema_hash != MP_SCHEMA_HASH) {
        make_nak(p, r, m->cmd_id, MP_ERRORCODE_SCHEMA_MISMATCH, as_i32(m->schema_hash),
                 as_i32(MP_SCHEMA_HASH));
        return;
    }
    p->handshake_epoch = (int16_t)p->epoch; /* a session named on this epoch stays named */
    memset(&id, 0, sizeof id);
    id.cmd_id = m->cmd_id;
    id.protocol_version = MP_PROTOCOL_VERSION;
    id.schema_hash = MP_SCHEMA_HASH;
    copy_text(id.model, sizeof id.model, p->model);
    copy_text(id.serial, sizeof id.serial, p->serial);
    id.firmware_major = p->cfg.firmware_major;
    id.firmware_minor = p->cfg.firmware_minor;
    id.firmware_patch = p->cfg.firmware_patch;
    id.hardware_revision = p->cfg.hardware_revision;
    id.needle_count = MP_L_NEEDLE_COUNT;
    id.capabilities = pen_capabilities(p);
    id.depth_min_um = MP_L_DEPTH_MIN_UM;
    id.depth_max_um = MP_L_DEPTH_MAX_UM;
    id.soft_cap_um = MP_L_DEPTH_SOFT_CAP_UM;
    id.rate_min_sps = MP_L_RATE_MIN_SPS;
    id.rate_max_sps = MP_L_RATE_MAX_SPS;
    id.boot_id = p->cfg.boot_id;
    finish(p, r, mp_Identity_pack(&id, r->bytes, sizeof r->bytes), 0);
}

static void on_open_session(pen *p, const mp_OpenSession *m, uint32_t t, pen_message *r)
{
    int resumed;
    if (p->service_held && (!p->service_by_session || m->session != p->service_session)) {
        leave_service(p, MP_SERVICEEXIT_SESSION_ENDED, t); /* another host takes the pen */
    }
    p->session = m->session;
    p->session_epoch = (int16_t)p->epoch;
    if (p->peer_id == 0) { /* not a paired host: no records, no reply cache */
        make_ack(p, r, m->cmd_id, 0);
        return;
    }
    resumed = mp_replycache_open(&p->replies, m->session);
    if (p->deferred_count < PEN_DEFERRED_MAX) { /* the held records go right after the reply */
        p->deferred[p->deferred_count].len = 0;
        p->deferred[p->deferred_count].urgent = 0;
        p->deferred_count++;
    }
    make_ack(p, r, m->cmd_id, resumed > 0 ? 1u : 0u);
}

static void on_get_status(pen *p, const mp_GetStatus *m, uint32_t t, pen_message *r)
{
    mp_Status s;
    memset(&s, 0, sizeof s);
    s.cmd_id = m->cmd_id;
    s.state = p->state;
    s.fault = p->state == MP_PENSTATE_FAULT ? p->fault : (uint8_t)MP_FAULTCODE_NONE;
    s.depth_set_um = p->depth_set_um;
    s.rate_set_sps = p->rate_set_sps;
    s.soft_cap_override = p->soft_cap_override;
    s.watchdog_ms = p->watchdog_ms;
    s.telemetry_hz = p->telemetry_hz;
    s.run_id = run_id_now(p);
    s.run_area = p->has_run ? p->run.area : 0u;
    s.run_mode = p->has_run ? p->run.mode : (uint8_t)MP_RUNMODE_STROKES;
    s.run_target = p->has_run ? p->run.target : 0u;
    s.run_strokes = run_strokes_now(p, t);
    s.run_outcome = p->has_run ? p->run.outcome : (uint8_t)MP_RUNOUTCOME_NONE;
    s.lifetime_strokes = p->lifetime_strokes;
    s.cartridge_id = p->cart.id;
    s.cartridge_state = p->cart.state;
    s.cartridge_strokes = cartridge_strokes_now(p, t);
    s.battery_mv = (uint16_t)PEN_BATTERY_MV;
    s.temperature_dc = PEN_TEMPERATURE_DC;
    s.calibrated = 1;
    s.boot_id = p->cfg.boot_id;
    s.uptime_ms = pen_time(p, t);
    s.service_mode = (uint8_t)in_service(p);
    finish(p, r, mp_Status_pack(&s, r->bytes, sizeof r->bytes), 0);
}

static void on_set_depth(pen *p, const mp_SetDepth *m, uint32_t t, pen_message *r)
{
    refusal no = check_depth(p, m->depth_um, m->soft_cap_override != 0);
    if (no.error != 0) {
        make_nak(p, r, m->cmd_id, no.error, no.value, no.limit);
        return;
    }
    p->depth_set_um = m->depth_um;
    p->soft_cap_override = m->soft_cap_override;
    if (p->state == MP_PENSTATE_RUNNING) {
        act_move(p, t, m->depth_um);
    }
    if (m->depth_um > MP_L_DEPTH_SOFT_CAP_UM) {
        event(p, t, MP_EVENTCODE_SOFT_CAP_OVERRIDE, m->depth_um, run_id_now(p));
    }
    make_ack(p, r, m->cmd_id, 0);
}

static void on_set_rate(pen *p, const mp_SetRate *m, uint32_t t, pen_message *r)
{
    uint8_t rate = m->rate_sps;
    if (rate < MP_L_RATE_MIN_SPS || rate > MP_L_RATE_MAX_SPS) {
        make_nak(p, r, m->cmd_id, MP_ERRORCODE_RATE_OUT_OF_RANGE, rate,
                 rate < MP_L_RATE_MIN_SPS ? MP_L_RATE_MIN_SPS : MP_L_RATE_MAX_SPS);
        return;
    }
    if (p->state == MP_PENSTATE_RUNNING && p->has_run) {
        const mp_area *a = mp_area_find(p->run.area);
        if (a != NULL && !area_allows_rate(a, rate)) {
            make_nak(p, r, m->cmd_id, MP_ERRORCODE_RATE_NOT_ALLOWED_FOR_AREA, rate,
                     area_fastest(a));
            return;
        }
        /* the strokes so far at the old rate, then on at the new one */
        p->phase_milli += (uint64_t)p->rate_set_sps * (uint32_t)(t - p->phase_t0);
        p->phase_t0 = t;
        p->rate_set_sps = rate;
        plan_stroke_end(p);
    }
    p->rate_set_sps = rate;
    make_ack(p, r, m->cmd_id, 0);
}

static void on_run(pen *p, const mp_Run *m, uint32_t t, pen_message *r)
{
    refusal no = check_run(p, m);
    if (no.error != 0) {
        make_nak(p, r, m->cmd_id, no.error, no.value, no.limit);
        return;
    }
    make_ack(p, r, m->cmd_id, start_run(p, m, t));
}

static void on_stop(pen *p, uint32_t cmd_id, uint32_t t, pen_message *r)
{
    uint32_t run_id = 0;
    if (p->state == MP_PENSTATE_RUNNING && p->has_run) {
        run_id = p->run.run_id;
        finish_run(p, MP_RUNOUTCOME_STOPPED, t);
    }
    make_ack(p, r, cmd_id, run_id);
}

static void on_emergency_stop(pen *p, uint32_t cmd_id, uint32_t t, pen_message *r)
{
    uint32_t strokes = p->state == MP_PENSTATE_RUNNING ? strokes_at(p, t) : 0u;
    if (!(p->state == MP_PENSTATE_FAULT && p->fault == MP_FAULTCODE_EMERGENCY_STOP)) {
        raise_fault(p, MP_FAULTCODE_EMERGENCY_STOP, as_i32(strokes), t);
    }
    make_ack(p, r, cmd_id, run_id_now(p));
}

static void on_set_watchdog(pen *p, const mp_SetWatchdog *m, pen_message *r)
{
    uint16_t ms = m->timeout_ms;
    if (ms < MP_L_HEARTBEAT_MIN_MS || ms > MP_L_HEARTBEAT_MAX_MS) {
        make_nak(p, r, m->cmd_id, MP_ERRORCODE_WATCHDOG_OUT_OF_RANGE, ms,
                 ms < MP_L_HEARTBEAT_MIN_MS ? MP_L_HEARTBEAT_MIN_MS : MP_L_HEARTBEAT_MAX_MS);
        return;
    }
    p->watchdog_ms = ms;
    if (p->state == MP_PENSTATE_RUNNING) {
        p->wd_at = p->last_rx + ms;
    }
    make_ack(p, r, m->cmd_id, 0);
}

static void on_set_telemetry(pen *p, const mp_SetTelemetry *m, uint32_t t, pen_message *r)
{
    if (m->rate_hz > MP_L_TELEMETRY_MAX_HZ) {
        make_nak(p, r, m->cmd_id, MP_ERRORCODE_TELEMETRY_OUT_OF_RANGE, m->rate_hz,
                 MP_L_TELEMETRY_MAX_HZ);
        return;
    }
    p->telemetry_hz = m->rate_hz;
    align_telemetry(p, t);
    make_ack(p, r, m->cmd_id, 0);
}

static void on_get_cartridge(pen *p, const mp_GetCartridge *m, uint32_t t, pen_message *r)
{
    mp_CartridgeInfo c;
    memset(&c, 0, sizeof c);
    c.cmd_id = m->cmd_id;
    c.state = p->cart.state;
    if (p->cart.id != 0) {
        c.cartridge_id = p->cart.id;
        copy_text(c.lot, sizeof c.lot, p->cart.lot);
        c.manufactured_day = p->cart.made_day;
        c.expiry_day = p->cart.expiry_day;
        c.strokes_used = cartridge_strokes_now(p, t);
        c.run_ms_used = cartridge_ms_now(p, t);
    }
    finish(p, r, mp_CartridgeInfo_pack(&c, r->bytes, sizeof r->bytes), 0);
}

static void on_cal_read(pen *p, const mp_CalRead *m, pen_message *r)
{ /* the factory calibration is the active bank; the staging bank is erased (zeros, invalid) */
    mp_CalData d;
    memset(&d, 0, sizeof d);
    d.cmd_id = m->cmd_id;
    d.bank = m->bank;
    if (m->bank == MP_CALBANK_ACTIVE) {
        d.valid = 1;
        d.version = PEN_CAL_VERSION;
        d.written_at = PEN_CAL_WRITTEN_AT;
        d.counter = PEN_CAL_COUNTER;
        d.crc = mp_calibration_crc(d.version, d.depth_gain_ppm, d.depth_offset_um,
                                   d.rate_gain_ppm, d.written_at, d.counter);
    }
    finish(p, r, mp_CalData_pack(&d, r->bytes, sizeof r->bytes), 0);
}

static void on_clear_fault(pen *p, uint32_t cmd_id, uint32_t t, pen_message *r)
{ /* the faults this pen latches (emergency stop, watchdog) have no standing cause */
    uint8_t code = p->fault;
    if (p->state != MP_PENSTATE_FAULT) {
        make_ack(p, r, cmd_id, 0);
        return;
    }
    p->state = MP_PENSTATE_IDLE;
    p->fault = MP_FAULTCODE_NONE;
    event(p, t, MP_EVENTCODE_FAULT_CLEARED, code, run_id_now(p));
    make_ack(p, r, cmd_id, code);
}

static void on_set_service_mode(pen *p, const mp_SetServiceMode *m, uint32_t t, pen_message *r)
{
    uint32_t session = 0;
    if (!m->enabled) {
        leave_service(p, MP_SERVICEEXIT_ASKED, t);
        make_ack(p, r, m->cmd_id, 0);
        return;
    }
    if (in_service(p)) {
        make_ack(p, r, m->cmd_id, 1); /* already this session's: idempotent */
        return;
    }
    if (p->state != MP_PENSTATE_IDLE) {
        make_nak(p, r, m->cmd_id, MP_ERRORCODE_BAD_STATE, p->state, MP_PENSTATE_IDLE);
        return;
    }
    p->service_held = 1;
    p->service_by_session = (uint8_t)open_session(p, &session);
    p->service_session = session;
    p->service_epoch = p->epoch;
    event(p, t, MP_EVENTCODE_SERVICE_MODE_ENTERED, 0, run_id_now(p));
    make_ack(p, r, m->cmd_id, 1);
}

static void execute(pen *p, const mp_message *c, uint32_t t, pen_message *r)
{
    p->counters.commands++;
    switch (c->id) {
    case MP_ID_Hello: on_hello(p, &c->u.Hello, r); break;
    case MP_ID_GetStatus: on_get_status(p, &c->u.GetStatus, t, r); break;
    case MP_ID_SetDepth: on_set_depth(p, &c->u.SetDepth, t, r); break;
    case MP_ID_SetRate: on_set_rate(p, &c->u.SetRate, t, r); break;
    case MP_ID_Run: on_run(p, &c->u.Run, t, r); break;
    case MP_ID_Stop: on_stop(p, c->u.Stop.cmd_id, t, r); break;
    case MP_ID_EmergencyStop: on_emergency_stop(p, c->u.EmergencyStop.cmd_id, t, r); break;
    case MP_ID_SetWatchdog: on_set_watchdog(p, &c->u.SetWatchdog, r); break;
    case MP_ID_SetTelemetry: on_set_telemetry(p, &c->u.SetTelemetry, t, r); break;
    case MP_ID_GetCartridge: on_get_cartridge(p, &c->u.GetCartridge, t, r); break;
    case MP_ID_CalRead: on_cal_read(p, &c->u.CalRead, r); break;
    case MP_ID_ClearFault: on_clear_fault(p, c->u.ClearFault.cmd_id, t, r); break;
    case MP_ID_OpenSession: on_open_session(p, &c->u.OpenSession, t, r); break;
    case MP_ID_SetServiceMode: on_set_service_mode(p, &c->u.SetServiceMode, t, r); break;
    default: break; /* not reached: admit_and_execute answers what is not implemented */
    }
}

/* Deny by default, then the state table (firmware.py _execute, drawn from the generated
 * admission table). Returns whether the reply belongs in the reply cache. A command this pen
 * does not implement is refused like any other first (deny by default: an unauthenticated
 * party learns nothing), then answered UNKNOWN_COMMAND. */
static int admit_and_execute(pen *p, const mp_admission *adm, const mp_message *c,
                             uint32_t cmd_id, uint32_t t, pen_message *r)
{
    uint8_t id = adm->id;
    if (!(adm->flags & MP_ADMIT_BEFORE_HELLO) && p->handshake_epoch != (int16_t)p->epoch) {
        event(p, t, MP_EVENTCODE_SECURITY_DENIED, id, 0);
        make_nak(p, r, cmd_id, MP_ERRORCODE_NOT_CONNECTED, id, 0);
        return 0;
    }
    if (!(adm->flags & MP_ADMIT_UNPAIRED) && p->peer_id == 0) {
        event(p, t, MP_EVENTCODE_SECURITY_DENIED, id, run_id_now(p));
        make_nak(p, r, cmd_id, MP_ERRORCODE_NOT_AUTHORIZED, id, 0);
        return 0;
    }
    if (!implemented(id)) {
        make_nak(p, r, cmd_id, MP_ERRORCODE_UNKNOWN_COMMAND, id, 0);
        return 1;
    }
    if (!(adm->states & (1u << p->state))) {
        if (p->state == MP_PENSTATE_FAULT) {
            make_nak(p, r, cmd_id, MP_ERRORCODE_FAULT_ACTIVE, p->fault, 0);
        } else {
            make_nak(p, r, cmd_id, MP_ERRORCODE_BAD_STATE, p->state, 0);
        }
        return 1;
    }
    execute(p, c, t, r);
    return 1;
}

static void send_reply(pen *p, const pen_message *r)
{
    if (r->len > 0) {
        queue_out(p, r);
    }
}

/* One message from the host (firmware.py _on_bad_message and _on_message); `truncated`: the
 * link kept only its first MP_LINK_RX_MESSAGE_MAX bytes (a build that lowered the macro). */
static void on_message(pen *p, const uint8_t *msg, size_t len, int truncated, uint32_t t)
{
    mp_message cmd;
    mp_refusal why;
    pen_message reply;
    const mp_admission *adm;
    uint32_t cmd_id = len >= 5 ? le32(msg + 1) : 0u, session = 0;
    uint8_t kind;
    int cached_ok;
    memset(&why, 0, sizeof why);
    if (len == 0) { /* a data frame without a message */
        make_nak(p, &reply, 0, MP_ERRORCODE_UNKNOWN_COMMAND, 0, 0);
        send_reply(p, &reply);
        return;
    }
    if (truncated) { /* longer than any message this build reads */
        make_nak(p, &reply, cmd_id, MP_ERRORCODE_MALFORMED, msg[0], 0);
        send_reply(p, &reply);
        return;
    }
    if (mp_unpack(msg, len, &cmd, &why) != 0) {
        /* refused by the codec: a field out of range with its own code, value and bound;
         * MALFORMED or UNKNOWN_COMMAND with the id otherwise */
        make_nak(p, &reply, cmd_id, why.error, why.value, why.limit);
        send_reply(p, &reply);
        return;
    }
    kind = mp_message_kind(cmd.id);
    if (kind == MP_KIND_HOST_NOTIFY) {
        return; /* a heartbeat: its frame has fed the watchdog already */
    }
    adm = mp_admission_find(cmd.id);
    if (adm == NULL) { /* a pen -> host message sent to the pen */
        make_nak(p, &reply, cmd_id, MP_ERRORCODE_UNKNOWN_COMMAND, cmd.id, 0);
        send_reply(p, &reply);
        return;
    }
    cached_ok = !(adm->flags & MP_ADMIT_NEVER_CACHED) && open_session(p, &session);
    if (cached_ok) {
        const uint8_t *cached = NULL;
        size_t cached_len = 0;
        if (mp_replycache_lookup(&p->replies, session, msg, len, &cached, &cached_len) == 1 &&
            cached_len > 0 && cached_len <= sizeof reply.bytes) {
            /* this session re-sent this very command: answer, do not redo */
            p->counters.duplicates_answered++;
            memcpy(reply.bytes, cached, cached_len);
            reply.len = (uint8_t)cached_len;
            reply.urgent = 0;
            send_reply(p, &reply);
            return;
        }
    }
    p->deferring = 1;
    p->deferred_count = 0;
    reply.len = 0;
    if (admit_and_execute(p, adm, &cmd, cmd_id, t, &reply) && cached_ok && reply.len > 0) {
        (void)mp_replycache_store(&p->replies, session, msg, len, reply.bytes, reply.len);
    }
    p->deferring = 0;
    reply.urgent = (uint8_t)(cmd.id == MP_ID_EmergencyStop);
    send_reply(p, &reply);
    flush_deferred(p);
}

/* ======================================================================== the link */
/* A new link epoch: handshake and session anew; what the old host never acknowledged goes
 * back to the held records, oldest first, and replies to its commands are dropped (the same
 * session re-sends those and is answered from the reply cache: firmware.py feed,
 * _take_back_unacknowledged). */
static void on_connected(pen *p, uint32_t peer_id, uint32_t t)
{
    pen_message m;
    size_t i;
    int n;
    p->epoch = mp_link_epoch(&p->link);
    p->peer_id = peer_id;
    p->handshake_epoch = p->session_epoch = -1;
    if (p->service_held && !p->service_by_session) {
        leave_service(p, MP_SERVICEEXIT_SESSION_ENDED, t);
    }
    /* in the order they were made: what the link had (sent or queued), what is still held,
     * what waited in the queue for the link */
    for (i = 0; i < p->outq.count; i++) {
        ring_get(&p->outq, i, &m);
        if (m.len > 0 && is_record(m.bytes[0]) && !ring_push(&p->held, &m)) {
            p->counters.records_lost++;
        }
    }
    ring_clear(&p->outq);
    while ((n = mp_link_take_unsent(&p->link, m.bytes, sizeof m.bytes, NULL)) > 0) {
        m.len = (uint8_t)n;
        m.urgent = 0;
        if (is_record(m.bytes[0]) && !ring_push(&p->outq, &m)) {
            p->counters.records_lost++;
        }
    }
    for (i = p->outq.count; i > 0; i--) {
        ring_get(&p->outq, i - 1u, &m);
        if (!ring_push_front(&p->held, &m)) {
            p->counters.records_lost++;
        }
    }
    ring_clear(&p->outq);
}

static void host_alive(pen *p, uint32_t t)
{ /* a frame only the paired host can have made: the watchdog is fed (firmware.py feed) */
    p->last_rx = t;
    if (p->state == MP_PENSTATE_RUNNING) {
        p->wd_at = t + p->watchdog_ms;
    }
}

static int pairing_lookup(void *ctx, uint32_t host_id, uint8_t key[MP_KEY_BYTES])
{
    const pen *p = (const pen *)ctx;
    uint8_t i;
    for (i = 0; i < p->pairing_count; i++) {
        if (p->pairings[i].host_id == host_id) {
            memcpy(key, p->pairings[i].key, MP_KEY_BYTES);
            return 1;
        }
    }
    return 0;
}

/* ======================================================================== the API */
void pen_init(pen *p, const pen_config *cfg, uint32_t now_ms)
{
    mp_link_config lc;
    memset(p, 0, sizeof *p);
    p->cfg = *cfg;
    copy_text(p->model, sizeof p->model, cfg->model);
    copy_text(p->serial, sizeof p->serial, cfg->serial);
    p->cfg.model = p->model;
    p->cfg.serial = p->serial;
    p->boot_ms = p->now_ms = now_ms;
    ring_init(&p->held, &p->held_slots[0][0], sizeof p->held_slots[0], PEN_HELD_MAX);
    ring_init(&p->outq, &p->outq_slots[0][0], sizeof p->outq_slots[0], PEN_OUTQ_MAX);
    memset(&lc, 0, sizeof lc);
    lc.pen_id = cfg->pen_id;
    lc.window = MP_LINK_WINDOW_MAX; /* as many frames in flight as the build allows */
    if (cfg->port.hmac_sha256 != NULL && cfg->port.random_bytes != NULL) {
        lc.port = &p->cfg.port;
        lc.pairing_lookup = pairing_lookup;
        lc.ctx = p;
    }
    mp_link_init(&p->link, &lc);
    mp_replycache_init(&p->replies);
    p->handshake_epoch = p->session_epoch = -1;
    p->rate_set_sps = MP_L_RATE_DEFAULT_SPS;
    p->watchdog_ms = MP_L_HEARTBEAT_DEFAULT_MS;
    p->telemetry_hz = MP_L_TELEMETRY_DEFAULT_HZ;
    p->last_rx = now_ms;
    p->cart.id = cfg->cartridge_id;
    copy_text(p->cart.lot, sizeof p->cart.lot, cfg->cartridge_lot);
    p->cart.made_day = cfg->cartridge_made_day;
    p->cart.expiry_day = cfg->cartridge_expiry_day;
    p->cart.strokes_used = cfg->cartridge_strokes_used;
    p->cart.run_ms_used = cfg->cartridge_run_ms_used;
    cartridge_assess(p);
    /* self-test: needles home, then IDLE (BOOT -> IDLE) */
    p->state = MP_PENSTATE_BOOT;
    event(p, now_ms, MP_EVENTCODE_BOOTED, BOOT_REASON_POWER_ON, 0);
    p->state = MP_PENSTATE_IDLE;
    align_telemetry(p, now_ms);
}

int pen_add_pairing(pen *p, uint32_t host_id, const uint8_t key[MP_KEY_BYTES])
{
    uint8_t i;
    if (host_id == 0) {
        return 0;
    }
    for (i = 0; i < p->pairing_count; i++) {
        if (p->pairings[i].host_id == host_id) {
            memcpy(p->pairings[i].key, key, MP_KEY_BYTES);
            return 1;
        }
    }
    if (p->pairing_count >= PEN_PAIRINGS_MAX) {
        return 0;
    }
    p->pairings[p->pairing_count].host_id = host_id;
    memcpy(p->pairings[p->pairing_count].key, key, MP_KEY_BYTES);
    p->pairing_count++;
    return 1;
}

uint32_t pen_capabilities(const pen *p)
{
    uint32_t caps = MP_CAPABILITY_TELEMETRY;
    if (p->cfg.port.hmac_sha256 != NULL && p->cfg.port.random_bytes != NULL) {
        caps |= MP_CAPABILITY_LINK_AUTHENTICATION;
    }
    return caps;
}

enum { DUE_NONE, DUE_STROKES, DUE_WATCHDOG, DUE_TIME, DUE_RETRACT, DUE_TELEMETRY };

/* The next scheduled instant; ties go in the order the simulator handles them (the stroke
 * count inside the physics step, then the watchdog, the run's time, the retraction, and the
 * telemetry sample last). */
static int next_due(const pen *p, uint32_t *at)
{
    int which = DUE_NONE;
    uint32_t best = 0;
#define PEN_CONSIDER(cond, when, kind)                                                         \
    if ((cond) && (which == DUE_NONE || earlier((when), best))) {                              \
        which = (kind);                                                                        \
        best = (when);                                                                         \
    }
    PEN_CONSIDER(p->state == MP_PENSTATE_RUNNING, p->stroke_end_at, DUE_STROKES)
    PEN_CONSIDER(p->state == MP_PENSTATE_RUNNING && p->wd_armed, p->wd_at, DUE_WATCHDOG)
    PEN_CONSIDER(p->state == MP_PENSTATE_RUNNING, p->time_end_at, DUE_TIME)
    PEN_CONSIDER(p->retracting, p->retract_at, DUE_RETRACT)
    PEN_CONSIDER(p->tel_armed, p->tel_at, DUE_TELEMETRY)
#undef PEN_CONSIDER
    *at = best;
    return which;
}

void pen_advance(pen *p, uint32_t now_ms)
{
    for (;;) {
        uint32_t t;
        int which = next_due(p, &t);
        if (which == DUE_NONE || !due(now_ms, t)) {
            break;
        }
        p->now_ms = t;
        switch (which) {
        case DUE_STROKES: finish_run(p, p->stroke_outcome, t); break;
        case DUE_WATCHDOG: {
            uint32_t silent = t - p->last_rx;
            event(p, t, MP_EVENTCODE_WATCHDOG_EXPIRED, as_i32(silent), run_id_now(p));
            raise_fault(p, MP_FAULTCODE_WATCHDOG, as_i32(silent), t);
            break;
        }
        case DUE_TIME: finish_run(p, p->time_outcome, t); break;
        case DUE_RETRACT: retracted(p, t); break;
        default: telemetry(p, t); break;
        }
    }
    p->now_ms = now_ms;
    mp_link_tick(&p->link, now_ms);
    pump(p);
}

void pen_receive(pen *p, const uint8_t *bytes, size_t n, uint32_t now_ms)
{
    mp_link_event ev;
    int kind;
    p->now_ms = now_ms;
    mp_link_receive(&p->link, bytes, n, now_ms);
    while ((kind = mp_link_poll(&p->link, &ev)) != MP_EV_NONE) {
        if (kind == MP_EV_CONNECTED) {
            on_connected(p, ev.authenticated ? ev.peer_id : 0u, now_ms);
        } else if (kind == MP_EV_AUTHENTICATED_FRAME) {
            host_alive(p, now_ms);
        } else if (kind == MP_EV_MESSAGE) {
            on_message(p, ev.msg, ev.len, ev.truncated, now_ms);
        }
    }
    pump(p);
}

size_t pen_transmit(pen *p, uint8_t *out, size_t cap, uint32_t now_ms)
{
    p->now_ms = now_ms;
    pump(p);
    return mp_link_transmit(&p->link, out, cap, now_ms);
}

uint32_t pen_next_timer_ms(const pen *p, uint32_t now_ms)
{
    uint32_t at;
    if (next_due(p, &at) == DUE_NONE) {
        return U32_MAX_;
    }
    return due(now_ms, at) ? 0u : at - now_ms;
}

uint32_t pen_next_deadline_ms(pen *p, uint32_t now_ms)
{
    uint32_t at, wait = pen_next_timer_ms(p, now_ms), link_wait;
    at = mp_link_next_deadline_ms(&p->link, now_ms);
    link_wait = due(now_ms, at) ? 0u : at - now_ms;
    return link_wait < wait ? link_wait : wait;
}
