/* micropen C kit: COBS and the stream deframer. See mp_cobs.h; the deframer mirrors
 * protocol/framing.py FrameDecoder.feed piece by piece, so its statistics are the same. */
#include "mp_cobs.h"

#include "mp_crc32.h"

size_t mp_cobs_encode(const uint8_t *in, size_t n, uint8_t *out, size_t cap)
{
    size_t o = 1;    /* next output byte */
    size_t code = 0; /* where the current block's code byte goes */
    uint8_t run = 1; /* the current block's code: 1 + data bytes so far */
    size_t i;
    if (cap < 1u) {
        return 0;
    }
    for (i = 0; i < n; i++) {
        if (in[i] == 0u) {
            out[code] = run;
            code = o++;
            run = 1;
            if (o > cap) {
                return 0;
            }
        } else {
            if (o >= cap) {
                return 0;
            }
            out[o++] = in[i];
            run++;
            if (run == 0xFFu) { /* a full block: no zero implied after it */
                out[code] = run;
                run = 1;
                if (i + 1u < n) {
                    code = o++;
                    if (o > cap) {
                        return 0;
                    }
                } else {
                    return o; /* the data ends with a full block: no final code byte */
                }
            }
        }
    }
    out[code] = run;
    return o;
}

int mp_cobs_decode(const uint8_t *in, size_t n, uint8_t *out, size_t cap)
{
    size_t i = 0;
    size_t o = 0;
    while (i < n) {
        uint8_t code = in[i];
        size_t k;
        if (code == 0u) {
            return MP_E_COBS;
        }
        i++;
        if ((size_t)code - 1u > n - i) {
            return MP_E_COBS; /* the code byte promises more bytes than follow */
        }
        for (k = 1; k < code; k++) {
            uint8_t b = in[i++];
            if (b == 0u) {
                return MP_E_COBS;
            }
            if (o >= cap) {
                return MP_E_BUFFER;
            }
            out[o++] = b; /* o < i always: decoding in place is safe */
        }
        if (i < n && code < 0xFFu) {
            if (o >= cap) {
                return MP_E_BUFFER;
            }
            out[o++] = 0u;
        }
    }
    if (o > (size_t)0x7FFFFFFF) {
        return MP_E_BUFFER;
    }
    return (int)o;
}

void mp_deframer_init(mp_deframer *d)
{
    size_t i;
    for (i = 0; i < sizeof d->buf; i++) {
        d->buf[i] = 0u;
    }
    d->len = 0;
    d->stats.frames = 0;
    d->stats.bytes_in = 0;
    d->stats.crc_failures = 0;
    d->stats.cobs_failures = 0;
    d->stats.oversize = 0;
    d->stats.bytes_discarded = 0;
}

/* One piece between delimiters (framing.py's loop body). Returns the raw frame length, or 0. */
static size_t end_piece(mp_deframer *d)
{
    uint32_t len = d->len;
    int raw;
    d->len = 0;
    if (len == 0u) {
        return 0;
    }
    if (len > MP_FRAME_MAX_STUFFED) {
        d->stats.oversize++;
        d->stats.bytes_discarded += len;
        return 0;
    }
    /* decoded in place; one spare byte tells a piece of MAX_STUFFED bytes holding one byte
     * more than MP_FRAME_MAX_RAW (oversize) from a frame */
    raw = mp_cobs_decode(d->buf, len, d->buf, MP_FRAME_MAX_RAW + 1u);
    if (raw == MP_E_BUFFER || (raw > (int)MP_FRAME_MAX_RAW)) {
        d->stats.oversize++;
        d->stats.bytes_discarded += len;
        return 0;
    }
    if (raw < 0) {
        d->stats.cobs_failures++;
        d->stats.bytes_discarded += len;
        return 0;
    }
    if ((size_t)raw < MP_FRAME_MIN_RAW || mp_crc32(0, d->buf, (size_t)raw) != MP_CRC32_RESIDUE) {
        d->stats.crc_failures++;
        d->stats.bytes_discarded += len;
        return 0;
    }
    d->stats.frames++;
    return (size_t)raw;
}

size_t mp_deframer_feed(mp_deframer *d, const uint8_t *data, size_t n, const uint8_t **frame,
                        size_t *frame_len)
{
    size_t i;
    *frame = NULL;
    *frame_len = 0;
    for (i = 0; i < n; i++) {
        uint8_t b = data[i];
        if (b == 0u) {
            size_t raw = end_piece(d);
            if (raw > 0u) {
                d->stats.bytes_in += (uint32_t)(i + 1u);
                *frame = d->buf;
                *frame_len = raw;
                return i + 1u;
            }
        } else {
            if (d->len < MP_FRAME_MAX_STUFFED) {
                d->buf[d->len] = b;
            }
            if (d->len < 0xFFFFFFFFu) {
                d->len++;
            }
        }
    }
    d->stats.bytes_in += (uint32_t)n;
    /* the end of the chunk: a piece longer than any frame is garbage, drop it now */
    if (d->len > MP_FRAME_MAX_STUFFED) {
        d->stats.oversize++;
        d->stats.bytes_discarded += d->len;
        d->len = 0;
    }
    return n;
}

void mp_deframer_reset(mp_deframer *d)
{
    d->stats.bytes_discarded += d->len;
    d->len = 0;
}
