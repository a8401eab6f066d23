/* Test-only driver: runs a script of core calls read from stdin, one command a line, and
 * prints one line per command — the same lines tests/ckit/_core_harness.py produces when it
 * makes the same calls through ctypes. Built with ASan/UBSan so they watch the core run.
 *
 *   init PEN_ID WINDOW RTO_INITIAL RTO_MIN RTO_MAX ACK_DELAY AUTH SEED   -> ok
 *   pair HOST_ID KEYHEX -> rc          refuse 0|1 -> ok         recv NOW HEX -> ok
 *   poll -> 7 numbers and the message hex       send NOW FLAGS HEX -> rc
 *   tx NOW CAP -> hex                  tick NOW -> ok           deadline NOW -> u32
 *   take CAP -> rc flags hex           state -> 9 numbers       stats -> numbers
 *   admits -> 3 numbers                close -> ok
 *   rc_init -> ok   rc_open S -> rc   rc_store S REQ REP -> rc   rc_lookup S REQ -> rc hex
 *   rc_count S -> n
 *   crc HEX -> u32                     cobs_enc HEX -> hex      cobs_dec HEX CAP -> rc hex
 *   df_init -> ok   df_feed HEX -> hex,hex,… of the frames     df_reset -> ok
 *   df_stats -> six numbers
 * A hex field "-" is empty.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core_shim.h"
#include "mp_crc32.h"

static char line[1 << 20];
static uint8_t a[1 << 19];
static uint8_t b[1 << 19];
static core_pen pen;
static mp_replycache cache;
static mp_deframer deframer;

static size_t unhex(const char *s, uint8_t *out, size_t cap)
{
    size_t n = 0;
    if (s == NULL || strcmp(s, "-") == 0) {
        return 0;
    }
    while (s[0] && s[1]) {
        unsigned v;
        if (n >= cap || sscanf(s, "%2x", &v) != 1) {
            fprintf(stderr, "bad hex\n");
            exit(3);
        }
        out[n++] = (uint8_t)v;
        s += 2;
    }
    return n;
}

static void puthex(const uint8_t *p, size_t n)
{
    size_t i;
    if (n == 0u) {
        fputs("-", stdout);
    }
    for (i = 0; i < n; i++) {
        printf("%02x", p[i]);
    }
}

static unsigned long num(const char *s)
{
    if (s == NULL) {
        fprintf(stderr, "missing argument\n");
        exit(3);
    }
    return strtoul(s, NULL, 0);
}

int main(void)
{
    while (fgets(line, sizeof line, stdin) != NULL) {
        char *cmd = strtok(line, " \n");
        char *x = strtok(NULL, " \n");
        char *y = strtok(NULL, " \n");
        char *z = strtok(NULL, " \n");
        if (cmd == NULL) {
            continue;
        }
        if (strcmp(cmd, "init") == 0) {
            char *w[5];
            int i;
            for (i = 0; i < 5; i++) {
                w[i] = strtok(NULL, " \n");
            }
            core_pen_init(&pen, (uint32_t)num(x), (uint32_t)num(y), (uint32_t)num(z),
                          (uint32_t)num(w[0]), (uint32_t)num(w[1]), (uint32_t)num(w[2]),
                          (int)num(w[3]), (uint64_t)strtoull(w[4], NULL, 0));
            puts("ok");
        } else if (strcmp(cmd, "pair") == 0) {
            size_t n = unhex(y, a, sizeof a);
            if (n != MP_KEY_BYTES) {
                exit(3);
            }
            printf("%d\n", core_pen_pair(&pen, (uint32_t)num(x), a));
        } else if (strcmp(cmd, "refuse") == 0) {
            core_pen_refuse(&pen, (int)num(x));
            puts("ok");
        } else if (strcmp(cmd, "recv") == 0) {
            size_t n = unhex(y, a, sizeof a);
            core_pen_receive(&pen, a, n, (uint32_t)num(x));
            puts("ok");
        } else if (strcmp(cmd, "poll") == 0) {
            uint32_t out[7];
            size_t n;
            core_pen_poll(&pen, out, b, sizeof b);
            printf("%u %u %u %u %u %u %u ", out[0], out[1], out[2], out[3], out[4], out[5],
                   out[6]);
            n = out[4] < sizeof b ? out[4] : sizeof b;
            puthex(b, out[0] == MP_EV_MESSAGE ? n : 0u);
            puts("");
        } else if (strcmp(cmd, "send") == 0) {
            size_t n = unhex(z, a, sizeof a);
            printf("%d\n", core_pen_send(&pen, a, n, (unsigned)num(y), (uint32_t)num(x)));
        } else if (strcmp(cmd, "tx") == 0) {
            size_t cap = num(y);
            size_t n = core_pen_transmit(&pen, b, cap < sizeof b ? cap : sizeof b,
                                         (uint32_t)num(x));
            puthex(b, n);
            puts("");
        } else if (strcmp(cmd, "tick") == 0) {
            core_pen_tick(&pen, (uint32_t)num(x));
            puts("ok");
        } else if (strcmp(cmd, "deadline") == 0) {
            printf("%u\n", core_pen_deadline(&pen, (uint32_t)num(x)));
        } else if (strcmp(cmd, "take") == 0) {
            unsigned flags = 0;
            size_t cap = num(x);
            int rc = core_pen_take_unsent(&pen, b, cap < sizeof b ? cap : sizeof b, &flags);
            printf("%d %u ", rc, rc > 0 ? flags : 0u);
            puthex(b, rc > 0 ? (size_t)rc : 0u);
            puts("");
        } else if (strcmp(cmd, "state") == 0) {
            uint32_t out[9];
            int i;
            core_pen_state(&pen, out);
            for (i = 0; i < 9; i++) {
                printf(i ? " %u" : "%u", out[i]);
            }
            puts("");
        } else if (strcmp(cmd, "stats") == 0) {
            uint32_t out[64];
            size_t n = core_pen_stats(&pen, out, 64), i;
            for (i = 0; i < n; i++) {
                printf(i ? " %u" : "%u", out[i]);
            }
            puts("");
        } else if (strcmp(cmd, "admits") == 0) {
            uint32_t out[3];
            core_pen_admits(&pen, out);
            printf("%u %u %u\n", out[0], out[1], out[2]);
        } else if (strcmp(cmd, "close") == 0) {
            core_pen_close(&pen);
            puts("ok");
        } else if (strcmp(cmd, "rc_init") == 0) {
            mp_replycache_init(&cache);
            puts("ok");
        } else if (strcmp(cmd, "rc_open") == 0) {
            printf("%d\n", mp_replycache_open(&cache, (uint32_t)num(x)));
        } else if (strcmp(cmd, "rc_store") == 0) {
            size_t n = unhex(y, a, sizeof a);
            size_t m = unhex(z, b, sizeof b);
            printf("%d\n", mp_replycache_store(&cache, (uint32_t)num(x), n ? a : NULL, n,
                                               m ? b : NULL, m));
        } else if (strcmp(cmd, "rc_lookup") == 0) {
            size_t n = unhex(y, a, sizeof a);
            const uint8_t *reply = NULL;
            size_t reply_len = 0;
            int rc = mp_replycache_lookup(&cache, (uint32_t)num(x), n ? a : NULL, n, &reply,
                                          &reply_len);
            printf("%d ", rc);
            puthex(reply, rc ? reply_len : 0u);
            puts("");
        } else if (strcmp(cmd, "rc_count") == 0) {
            printf("%u\n", (unsigned)mp_replycache_count(&cache, (uint32_t)num(x)));
        } else if (strcmp(cmd, "crc") == 0) {
            size_t n = unhex(x, a, sizeof a);
            printf("%08x\n", mp_crc32(0, a, n));
        } else if (strcmp(cmd, "cobs_enc") == 0) {
            size_t n = unhex(x, a, sizeof a);
            size_t m = mp_cobs_encode(a, n, b, MP_COBS_MAX_ENCODED(n));
            puthex(b, m);
            puts("");
        } else if (strcmp(cmd, "cobs_dec") == 0) {
            size_t n = unhex(x, a, sizeof a);
            size_t cap = num(y);
            int rc = mp_cobs_decode(a, n, b, cap < sizeof b ? cap : sizeof b);
            printf("%d ", rc);
            puthex(b, rc > 0 ? (size_t)rc : 0u);
            puts("");
        } else if (strcmp(cmd, "df_init") == 0) {
            mp_deframer_init(&deframer);
            puts("ok");
        } else if (strcmp(cmd, "df_reset") == 0) {
            mp_deframer_reset(&deframer);
            puts("ok");
        } else if (strcmp(cmd, "df_feed") == 0) {
            size_t n = unhex(x, a, sizeof a);
            const uint8_t *p = a;
            int first = 1;
            while (n > 0u) {
                const uint8_t *frame;
                size_t frame_len;
                size_t used = mp_deframer_feed(&deframer, p, n, &frame, &frame_len);
                p += used;
                n -= used;
                if (frame != NULL) {
                    if (!first) {
                        fputs(",", stdout);
                    }
                    puthex(frame, frame_len);
                    first = 0;
                }
            }
            if (first) {
                fputs("-", stdout);
            }
            puts("");
        } else if (strcmp(cmd, "df_stats") == 0) {
            uint32_t out[6];
            core_deframer_stats(&deframer, out);
            printf("%u %u %u %u %u %u\n", out[0], out[1], out[2], out[3], out[4], out[5]);
        } else {
            fprintf(stderr, "unknown command %s\n", cmd);
            return 3;
        }
    }
    return 0;
}
