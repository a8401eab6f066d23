/* micropen C kit: frames (docs/protocol.md "Frames").
 *
 * Raw frame, little-endian, before stuffing:
 *
 *     flags u8 | epoch u8 | seq u16 | ack u16 | [sack u32] | message | [auth 12] | crc32 u32
 *
 * The sack bitmap is there only with flag SACK in a frame that is not SYN/SYNACK; the auth
 * trailer (counter u32 + 8-byte tag) only in an authenticated epoch, on every frame but SYN,
 * SYNACK and RST — the frame does not say so, its receiver knows. In SYN and SYNACK the
 * "message" is the handshake payload (offer, resume proof, answer) and seq|ack<<16 the nonce.
 */
#ifndef MP_FRAME_H
#define MP_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "mp_cobs.h"
#include "mp_port.h"

#define MP_FLAG_DATA 0x01u
#define MP_FLAG_ACK 0x02u
#define MP_FLAG_SYN 0x04u
#define MP_FLAG_SYNACK 0x08u
#define MP_FLAG_RST 0x10u
#define MP_FLAG_URGENT 0x20u
#define MP_FLAG_SACK 0x40u
#define MP_FLAG_DATAGRAM 0x80u

typedef struct mp_frame {
    uint8_t flags;
    uint8_t epoch;
    uint16_t seq;
    uint16_t ack;
    uint32_t sack;        /* the bitmap (flag SACK outside SYN/SYNACK), else 0 */
    const uint8_t *msg;   /* message or handshake payload: points into the raw frame */
    size_t msg_len;       /* 0: none */
    const uint8_t *auth;  /* the 12-byte trailer (with_auth), else NULL */
} mp_frame;

/* Read a raw frame (header .. CRC, as mp_deframer_feed yields it: the CRC is not checked
 * again). with_auth: the frame must end with an authentication trailer. Returns 0, or
 * MP_E_SHORT when the frame cannot hold what its flags (and with_auth) say. */
int mp_frame_parse(const uint8_t *raw, size_t len, int with_auth, mp_frame *f);

/* The nonce a SYN carries and a SYNACK echoes. */
uint32_t mp_frame_nonce(const mp_frame *f);

/* Write the 6-byte header at raw[0..6). */
void mp_frame_put_header(uint8_t *raw, uint8_t flags, uint8_t epoch, uint16_t seq, uint16_t ack);

/* Append the CRC to raw[0..len) (raw must hold len + 4); returns len + 4. */
size_t mp_frame_put_crc(uint8_t *raw, size_t len);

/* Stuff a raw frame for the line: 00 <cobs> 00. Returns the bytes written, or 0 when cap is
 * too small (MP_FRAME_MAX_WIRE always suffices for a frame up to MP_FRAME_MAX_RAW). */
size_t mp_frame_to_wire(const uint8_t *raw, size_t len, uint8_t *out, size_t cap);

/* framing.encode_frame: header + msg + CRC, stuffed and delimited, into out. Returns the
 * bytes written, or 0 when cap is too small or the frame would exceed MP_FRAME_MAX_RAW. */
size_t mp_frame_encode(uint8_t flags, uint8_t epoch, uint16_t seq, uint16_t ack,
                       const uint8_t *msg, size_t msg_len, uint8_t *out, size_t cap);

/* little-endian helpers (shifts: correct on any host byte order) */
uint16_t mp_get_u16(const uint8_t *p);
uint32_t mp_get_u32(const uint8_t *p);
void mp_put_u16(uint8_t *p, uint16_t v);
void mp_put_u32(uint8_t *p, uint32_t v);

#endif /* MP_FRAME_H */
