/* micropen C kit: CRC-32 (IEEE 802.3, reflected, zlib-compatible).
 *
 *     mp_crc32(0, p, n) == zlib.crc32(p)
 *     mp_crc32(mp_crc32(0, a, na), b, nb) == zlib.crc32(a + b)
 *
 * A frame followed by its CRC (little-endian) has the residue MP_CRC32_RESIDUE.
 * Nibble table (64 bytes of flash) by default; -DMP_CRC32_TABLE256 selects a 1 KiB byte table.
 */
#ifndef MP_CRC32_H
#define MP_CRC32_H

#include <stddef.h>
#include <stdint.h>

#define MP_CRC32_RESIDUE 0x2144DF1Cu

uint32_t mp_crc32(uint32_t crc, const uint8_t *data, size_t n);

#endif /* MP_CRC32_H */
