/* The kit's port hooks (mp_port.h) implemented with OpenSSL's libcrypto (link with -lcrypto):
 * HMAC-SHA256 through EVP_MAC, random bytes through RAND_bytes. For a POSIX host; a firmware
 * supplies its own (a hardware HMAC engine, a TRNG). */
#ifndef PEN_PORT_OPENSSL_H
#define PEN_PORT_OPENSSL_H

#include "mp_port.h"

/* The hooks, ready for mp_link_config.port. Aborts the program if libcrypto cannot provide
 * HMAC-SHA256 (the hooks must not fail). */
mp_port pen_port_openssl(void);
/* Release what the hooks hold (at exit). */
void pen_port_openssl_close(void);

#endif
