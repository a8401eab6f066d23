/* micropen C kit: CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320, init and final XOR
 * 0xFFFFFFFF): the CRC of zlib.crc32. See mp_crc32.h. */
#include "mp_crc32.h"

#ifdef MP_CRC32_TABLE256
static uint32_t table_entry(uint32_t c)
{
    int k;
    for (k = 0; k < 8; k++) {
        c = (c & 1u) ? (c >> 1) ^ 0xEDB88320u : c >> 1;
    }
    return c;
}

static uint32_t crc_table[256];
static int crc_table_ready;

uint32_t mp_crc32(uint32_t crc, const uint8_t *data, size_t n)
{
    size_t i;
    if (!crc_table_ready) {
        uint32_t b;
        for (b = 0; b < 256u; b++) {
            crc_table[b] = table_entry(b);
        }
        crc_table_ready = 1;
    }
    crc = ~crc;
    for (i = 0; i < n; i++) {
        crc = crc_table[(crc ^ data[i]) & 0xFFu] ^ (crc >> 8);
    }
    return ~crc;
}
#else
/* the CRC of each nibble value: two lookups per byte, 64 bytes of flash */
static const uint32_t crc_nibble[16] = {
    0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu, 0x76DC4190u, 0x6B6B51F4u,
    0x4DB26158u, 0x5005713Cu, 0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu,
    0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu,
};

uint32_t mp_crc32(uint32_t crc, const uint8_t *data, size_t n)
{
    size_t i;
    crc = ~crc;
    for (i = 0; i < n; i++) {
        crc ^= data[i];
        crc = crc_nibble[crc & 0x0Fu] ^ (crc >> 4);
        crc = crc_nibble[crc & 0x0Fu] ^ (crc >> 4);
    }
    return ~crc;
}
#endif
