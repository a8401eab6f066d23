/* micropen C kit: the pen's reply cache (sim/replycache.py). See mp_replycache.h.
 *
 * Each session's entries sit oldest first in a byte ring: [state u8][request_len u8]
 * [reply_len u8][request][reply]. An entry never wraps: when it does not fit before the end of
 * the ring, a skip marker fills the rest and the entry starts at offset 0. A replaced entry is
 * marked dead in place and its bytes come back when the ring's head passes it.
 */
#include "mp_replycache.h"

#include <string.h>

#define ENTRY_DEAD 0u
#define ENTRY_LIVE 1u
#define ENTRY_SKIP 2u
#define ENTRY_HEAD 3u
#define MESSAGE_MAX 241u /* id byte + MAX_BODY */

typedef char mp_replycache_fits[(MP_REPLYCACHE_BYTES >= 16 && MP_REPLYCACHE_BYTES < 0x7FFFFFFF &&
                                 MP_REPLYCACHE_SESSIONS >= 1 && MP_REPLYCACHE_PER_SESSION >= 1)
                                    ? 1
                                    : -1];

static uint32_t cmd_id_of(const uint8_t *request)
{
    return (uint32_t)request[1] | ((uint32_t)request[2] << 8) | ((uint32_t)request[3] << 16) |
           ((uint32_t)request[4] << 24);
}

void mp_replycache_init(mp_replycache *c)
{
    memset(c, 0, sizeof *c);
}

static int find(const mp_replycache *c, uint32_t session) /* its index, or -1 */
{
    int i;
    for (i = 0; i < MP_REPLYCACHE_SESSIONS; i++) {
        if (c->s[i].in_use && c->s[i].session == session) {
            return i;
        }
    }
    return -1;
}

int mp_replycache_open(mp_replycache *c, uint32_t session)
{
    int found = find(c, session);
    mp_replycache_session *s = found >= 0 ? &c->s[found] : NULL;
    int i;
    c->clock++;
    if (s != NULL) {
        s->opened = c->clock;
        return 1;
    }
    s = &c->s[0];
    for (i = 0; i < MP_REPLYCACHE_SESSIONS; i++) { /* a free one, else the least recently opened */
        mp_replycache_session *t = &c->s[i];
        if (!t->in_use) {
            s = t;
            break;
        }
        if ((uint32_t)(c->clock - t->opened) > (uint32_t)(c->clock - s->opened)) {
            s = t;
        }
    }
    s->in_use = 1;
    s->session = session;
    s->opened = c->clock;
    s->head = 0;
    s->used = 0;
    s->entries = 0;
    return 0;
}

static uint32_t entry_size(const mp_replycache_session *s, uint32_t off)
{
    if (s->bytes[off] == ENTRY_SKIP) {
        return MP_REPLYCACHE_BYTES - off;
    }
    return ENTRY_HEAD + s->bytes[off + 1u] + s->bytes[off + 2u];
}

/* drop the oldest entry (or skip marker); returns 1 when it was a live entry */
static int evict_oldest(mp_replycache_session *s)
{
    uint32_t size = entry_size(s, s->head);
    int live = s->bytes[s->head] == ENTRY_LIVE;
    if (live) {
        s->entries--;
    }
    s->used -= size;
    s->head += size;
    if (s->head >= MP_REPLYCACHE_BYTES || s->used == 0u) {
        s->head = s->used == 0u ? 0u : s->head % MP_REPLYCACHE_BYTES;
    }
    return live;
}

/* the live entry for cmd_id, as an offset, or -1 */
static long find_entry(const mp_replycache_session *s, uint32_t cmd_id)
{
    uint32_t off = s->head;
    uint32_t left = s->used;
    while (left > 0u) {
        uint32_t size = entry_size(s, off);
        if (s->bytes[off] == ENTRY_LIVE && cmd_id_of(&s->bytes[off + ENTRY_HEAD]) == cmd_id) {
            return (long)off;
        }
        left -= size;
        off += size;
        if (off >= MP_REPLYCACHE_BYTES) {
            off = 0;
        }
    }
    return -1;
}

int mp_replycache_lookup(const mp_replycache *c, uint32_t session, const uint8_t *request,
                         size_t request_len, const uint8_t **reply, size_t *reply_len)
{
    int found = find(c, session);
    const mp_replycache_session *s = found >= 0 ? &c->s[found] : NULL;
    long off;
    const uint8_t *e;
    if (s == NULL || request == NULL || request_len < 5u || request_len > MESSAGE_MAX) {
        return 0;
    }
    off = find_entry(s, cmd_id_of(request));
    if (off < 0) {
        return 0;
    }
    e = &s->bytes[off];
    if (e[1] != request_len || memcmp(e + ENTRY_HEAD, request, request_len) != 0) {
        return 0; /* another command under this id: executed, never answered from here */
    }
    if (reply != NULL) {
        *reply = e + ENTRY_HEAD + e[1];
    }
    if (reply_len != NULL) {
        *reply_len = e[2];
    }
    return 1;
}

/* room for size contiguous bytes at the tail: returns the offset */
static uint32_t allocate(mp_replycache_session *s, uint32_t size)
{
    for (;;) {
        uint32_t tail;
        if (s->used == 0u) {
            s->head = 0;
            return 0;
        }
        tail = (s->head + s->used) % MP_REPLYCACHE_BYTES;
        if (s->used < MP_REPLYCACHE_BYTES) {
            if (tail >= s->head) { /* free: tail..end, then 0..head */
                if (MP_REPLYCACHE_BYTES - tail >= size) {
                    return tail;
                }
                if (s->head >= size) {
                    if (tail > 0u) {
                        s->bytes[tail] = ENTRY_SKIP;
                        s->used += MP_REPLYCACHE_BYTES - tail;
                    }
                    return 0;
                }
            } else if (s->head - tail >= size) {
                return tail;
            }
        }
        (void)evict_oldest(s);
    }
}

int mp_replycache_store(mp_replycache *c, uint32_t session, const uint8_t *request,
                        size_t request_len, const uint8_t *reply, size_t reply_len)
{
    int found = find(c, session);
    mp_replycache_session *s = found >= 0 ? &c->s[found] : NULL;
    uint32_t size;
    uint32_t off;
    long old;
    uint8_t *e;
    if (request == NULL || request_len < 5u || request_len > MESSAGE_MAX ||
        (reply == NULL && reply_len > 0u) || reply_len > MESSAGE_MAX) {
        return MP_E_ARG;
    }
    if (s == NULL) {
        return MP_E_UNKNOWN;
    }
    size = ENTRY_HEAD + (uint32_t)request_len + (uint32_t)reply_len;
    if (size > MP_REPLYCACHE_BYTES) {
        return MP_E_FULL;
    }
    old = find_entry(s, cmd_id_of(request));
    if (old >= 0) { /* a reused id replaces the older command's entry */
        s->bytes[old] = ENTRY_DEAD;
        s->entries--;
    }
    off = allocate(s, size);
    e = &s->bytes[off];
    e[0] = ENTRY_LIVE;
    e[1] = (uint8_t)request_len;
    e[2] = (uint8_t)reply_len;
    memcpy(e + ENTRY_HEAD, request, request_len);
    if (reply_len > 0u) {
        memcpy(e + ENTRY_HEAD + request_len, reply, reply_len);
    }
    s->used += size;
    s->entries++;
    while (s->entries > MP_REPLYCACHE_PER_SESSION) {
        (void)evict_oldest(s); /* dead entries and skip markers go too, on the way */
    }
    return 0;
}

size_t mp_replycache_count(const mp_replycache *c, uint32_t session)
{
    int found = find(c, session);
    return found < 0 ? 0u : c->s[found].entries;
}
