/* micropen C kit: COBS byte stuffing and the stream deframer (protocol/framing.py).
 *
 * Every frame travels as 00 <cobs(raw frame)> 00. The deframer splits a byte stream at the
 * 0x00 delimiters and yields each CRC-valid raw frame (header .. CRC) with the same size limits
 * and the same statistics as protocol/framing.py's FrameDecoder, for the same input cut into
 * the same chunks.
 */
#ifndef MP_COBS_H
#define MP_COBS_H

#include <stddef.h>
#include <stdint.h>

#include "mp_port.h"

/* the longest COBS encoding of n bytes */
#define MP_COBS_MAX_ENCODED(n) ((n) + (n) / 254u + 1u)

/* ---- frame size limits (framing.py) */
#define MP_FRAME_MAX_BODY 240u                             /* schema.MAX_BODY */
#define MP_FRAME_MAX_MESSAGE (1u + MP_FRAME_MAX_BODY)      /* id byte + body */
#define MP_FRAME_HEADER_BYTES 6u                           /* flags, epoch, seq, ack */
#define MP_FRAME_SACK_BYTES 4u                             /* bitmap after the header (SACK) */
#define MP_FRAME_TRAILER_BYTES 12u                         /* auth counter u32 + 8-byte tag */
#define MP_FRAME_TAG_BYTES 8u
#define MP_FRAME_CRC_BYTES 4u
#define MP_FRAME_MIN_RAW (MP_FRAME_HEADER_BYTES + MP_FRAME_CRC_BYTES) /* 10 */
#define MP_FRAME_MAX_RAW                                                                       \
    (MP_FRAME_HEADER_BYTES + MP_FRAME_SACK_BYTES + MP_FRAME_MAX_MESSAGE +                      \
     MP_FRAME_TRAILER_BYTES + MP_FRAME_CRC_BYTES)                          /* 267 */
#define MP_FRAME_MAX_STUFFED (MP_FRAME_MAX_RAW + MP_FRAME_MAX_RAW / 254u + 1u) /* 269 */
#define MP_FRAME_MAX_WIRE (MP_FRAME_MAX_STUFFED + 2u)                         /* 271 */

/* Encode n bytes into out (no delimiters). Returns the bytes written, or 0 when cap is too
 * small (an encoding is never empty: 0 bytes encode as the single byte 0x01). Same output as
 * Python's cobs.cobs.encode. in and out must not overlap. */
size_t mp_cobs_encode(const uint8_t *in, size_t n, uint8_t *out, size_t cap);

/* Decode n bytes into out. Returns the decoded length (>= 0), MP_E_COBS when the input is not
 * valid COBS (a zero byte, or a code byte promising more bytes than follow), or MP_E_BUFFER
 * when cap is too small. Accepts and rejects exactly what Python's cobs.cobs.decode does.
 * Decoding in place (out == in) is allowed. */
int mp_cobs_decode(const uint8_t *in, size_t n, uint8_t *out, size_t cap);

/* ---- the stream deframer */
typedef struct mp_framer_stats {
    uint32_t frames;          /* CRC-valid frames yielded */
    uint32_t bytes_in;        /* every byte fed */
    uint32_t crc_failures;    /* pieces that decode but are too short or fail the CRC */
    uint32_t cobs_failures;   /* pieces that are not valid COBS */
    uint32_t oversize;        /* pieces longer than the longest frame */
    uint32_t bytes_discarded; /* bytes of every piece thrown away (delimiters not counted) */
} mp_framer_stats;

typedef struct mp_deframer {
    uint8_t buf[MP_FRAME_MAX_STUFFED]; /* the piece being received; decoded in place */
    uint32_t len;                      /* bytes of the piece so far (may exceed buf: oversize) */
    mp_framer_stats stats;
} mp_deframer;

void mp_deframer_init(mp_deframer *d);

/* Feed up to n bytes. Returns how many were consumed. When a complete CRC-valid raw frame
 * ended within them, *frame and *frame_len name it (valid until the next call on d) and the call
 * returns right after its delimiter; otherwise *frame is NULL and every byte was consumed.
 * Call again with the rest until all n are consumed: the end of those n bytes is where
 * framing.py's feed() would end (a piece without delimiter longer than a frame is dropped
 * there, counted once as oversize). */
size_t mp_deframer_feed(mp_deframer *d, const uint8_t *data, size_t n, const uint8_t **frame,
                        size_t *frame_len);

/* Forget a partial frame (after reopening a port); its bytes are counted as discarded. */
void mp_deframer_reset(mp_deframer *d);

#endif /* MP_COBS_H */
