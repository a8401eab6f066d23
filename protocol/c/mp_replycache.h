/* micropen C kit: the pen's reply cache, scoped to host sessions (sim/replycache.py;
 * docs/protocol.md "Sessions, the reply cache and records").
 *
 * An entry is a hit only when the same session sends the same command — message id and body,
 * byte for byte, cmd_id (the body's first u32) included — so a second host numbering from 1,
 * or one host reusing an id, is never given someone else's reply. The caches of the
 * MP_REPLYCACHE_SESSIONS most recently opened sessions are kept (the least recently opened is
 * forgotten first), each holding up to MP_REPLYCACHE_PER_SESSION replies in a byte budget of
 * MP_REPLYCACHE_BYTES (request and reply stored whole; the oldest entry goes first when either
 * limit is reached). A re-used cmd_id replaces its older entry.
 *
 * Which commands are cached is the firmware's rule, not this module's: Hello, OpenSession, Stop
 * and EmergencyStop never are (mp_admission_find(id)->flags & MP_ADMIT_NEVER_CACHED in the
 * generated mp_messages.h), and nothing before Hello and OpenSession on the current epoch, and
 * nothing for an unpaired host.
 *
 * RAM: MP_REPLYCACHE_SESSIONS x (MP_REPLYCACHE_BYTES + 16) bytes; see CORE.md.
 */
#ifndef MP_REPLYCACHE_H
#define MP_REPLYCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "mp_port.h"

#ifndef MP_REPLYCACHE_SESSIONS
#define MP_REPLYCACHE_SESSIONS 4 /* limits.REPLY_CACHE_SESSIONS */
#endif
#ifndef MP_REPLYCACHE_PER_SESSION
#define MP_REPLYCACHE_PER_SESSION 256 /* limits.REPLY_CACHE_PER_SESSION */
#endif
#ifndef MP_REPLYCACHE_BYTES
#define MP_REPLYCACHE_BYTES 8192 /* per session: 256 entries of 32 bytes (a typical Ack entry) */
#endif

typedef struct mp_replycache_session {
    uint32_t session;  /* host session number (OpenSession.session) */
    uint32_t opened;   /* order of the last open (larger: more recent) */
    uint32_t head;     /* offset of the oldest entry in bytes[] */
    uint32_t used;     /* bytes occupied from head (wrapping) */
    uint32_t entries;  /* live entries */
    uint8_t in_use;
    uint8_t bytes[MP_REPLYCACHE_BYTES];
} mp_replycache_session;

typedef struct mp_replycache {
    mp_replycache_session s[MP_REPLYCACHE_SESSIONS];
    uint32_t clock; /* counts opens */
} mp_replycache;

/* Forget everything (boot). */
void mp_replycache_init(mp_replycache *c);

/* Make session the most recent one (OpenSession). Returns 1 when its cache was still held
 * (Ack.value 1: the host may re-send its unanswered commands), 0 when it is new (the least
 * recently opened session is forgotten to make room). */
int mp_replycache_open(mp_replycache *c, uint32_t session);

/* The reply already given to this very command (id byte + body) by this session: returns 1
 * and sets *reply and *reply_len (valid until the next store/open/init), else 0. */
int mp_replycache_lookup(const mp_replycache *c, uint32_t session, const uint8_t *request,
                         size_t request_len, const uint8_t **reply, size_t *reply_len);

/* Remember the reply to a command. Returns 0, MP_E_UNKNOWN when the session is not held (not
 * opened, or forgotten: nothing is stored, as in Python), MP_E_ARG when the request is shorter
 * than an id and a cmd_id (5 bytes) or either message is longer than 241 bytes, MP_E_FULL when
 * the entry alone exceeds the byte budget. */
int mp_replycache_store(mp_replycache *c, uint32_t session, const uint8_t *request,
                        size_t request_len, const uint8_t *reply, size_t reply_len);

/* Live entries held for a session (0 when not held). */
size_t mp_replycache_count(const mp_replycache *c, uint32_t session);

#endif /* MP_REPLYCACHE_H */
