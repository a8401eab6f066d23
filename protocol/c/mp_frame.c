/* micropen C kit: frames. See mp_frame.h. */
#include "mp_frame.h"

#include "mp_crc32.h"

uint16_t mp_get_u16(const uint8_t *p)
{
    return (uint16_t)((uint16_t)p[0] | (uint16_t)((uint16_t)p[1] << 8));
}

uint32_t mp_get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

void mp_put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v & 0xFFu);
    p[1] = (uint8_t)(v >> 8);
}

void mp_put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v & 0xFFu);
    p[1] = (uint8_t)((v >> 8) & 0xFFu);
    p[2] = (uint8_t)((v >> 16) & 0xFFu);
    p[3] = (uint8_t)(v >> 24);
}

int mp_frame_parse(const uint8_t *raw, size_t len, int with_auth, mp_frame *f)
{
    size_t start = MP_FRAME_HEADER_BYTES;
    size_t end;
    if (len < MP_FRAME_MIN_RAW) {
        return MP_E_SHORT;
    }
    f->flags = raw[0];
    f->epoch = raw[1];
    f->seq = mp_get_u16(raw + 2);
    f->ack = mp_get_u16(raw + 4);
    f->sack = 0;
    f->auth = NULL;
    end = len - MP_FRAME_CRC_BYTES;
    if (with_auth) {
        if (end < start + MP_FRAME_TRAILER_BYTES) {
            return MP_E_SHORT;
        }
        end -= MP_FRAME_TRAILER_BYTES;
        f->auth = raw + end;
    }
    if ((f->flags & MP_FLAG_SACK) && !(f->flags & (MP_FLAG_SYN | MP_FLAG_SYNACK))) {
        if (end < start + MP_FRAME_SACK_BYTES) {
            return MP_E_SHORT;
        }
        f->sack = mp_get_u32(raw + start);
        start += MP_FRAME_SACK_BYTES;
    }
    f->msg = raw + start;
    f->msg_len = end - start;
    return 0;
}

uint32_t mp_frame_nonce(const mp_frame *f)
{
    return (uint32_t)f->seq | ((uint32_t)f->ack << 16);
}

void mp_frame_put_header(uint8_t *raw, uint8_t flags, uint8_t epoch, uint16_t seq, uint16_t ack)
{
    raw[0] = flags;
    raw[1] = epoch;
    mp_put_u16(raw + 2, seq);
    mp_put_u16(raw + 4, ack);
}

size_t mp_frame_put_crc(uint8_t *raw, size_t len)
{
    mp_put_u32(raw + len, mp_crc32(0, raw, len));
    return len + MP_FRAME_CRC_BYTES;
}

size_t mp_frame_to_wire(const uint8_t *raw, size_t len, uint8_t *out, size_t cap)
{
    size_t n;
    if (cap < 3u) {
        return 0;
    }
    out[0] = 0u;
    n = mp_cobs_encode(raw, len, out + 1, cap - 2u);
    if (n == 0u) {
        return 0;
    }
    out[n + 1u] = 0u;
    return n + 2u;
}

size_t mp_frame_encode(uint8_t flags, uint8_t epoch, uint16_t seq, uint16_t ack,
                       const uint8_t *msg, size_t msg_len, uint8_t *out, size_t cap)
{
    uint8_t raw[MP_FRAME_MAX_RAW];
    size_t i;
    size_t len = MP_FRAME_HEADER_BYTES;
    if (msg_len > MP_FRAME_MAX_RAW - MP_FRAME_MIN_RAW) {
        return 0;
    }
    mp_frame_put_header(raw, flags, epoch, seq, ack);
    for (i = 0; i < msg_len; i++) {
        raw[len++] = msg[i];
    }
    len = mp_frame_put_crc(raw, len);
    return mp_frame_to_wire(raw, len, out, cap);
}
