/* mp_port hooks with OpenSSL 3 libcrypto (see port_openssl.h). */
#include "port_openssl.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <stdlib.h>

static EVP_MAC *hmac_algorithm;

static void hmac_sha256(void *ctx, const uint8_t *key, size_t key_len, const mp_chunk *chunks,
                        size_t n_chunks, uint8_t mac[MP_SHA256_BYTES])
{
    char digest[] = "SHA256";
    OSSL_PARAM params[2];
    EVP_MAC_CTX *mctx;
    size_t i, out_len = 0;
    (void)ctx;
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0);
    params[1] = OSSL_PARAM_construct_end();
    mctx = EVP_MAC_CTX_new(hmac_algorithm);
    if (mctx == NULL || !EVP_MAC_init(mctx, key, key_len, params)) {
        abort(); /* the hook must not fail: a pen that cannot authenticate must stop */
    }
    for (i = 0; i < n_chunks; i++) {
        if (chunks[i].len > 0 && !EVP_MAC_update(mctx, chunks[i].data, chunks[i].len)) {
            abort();
        }
    }
    if (!EVP_MAC_final(mctx, mac, &out_len, MP_SHA256_BYTES) || out_len != MP_SHA256_BYTES) {
        abort();
    }
    EVP_MAC_CTX_free(mctx);
}

static void random_bytes(void *ctx, uint8_t *out, size_t n)
{
    (void)ctx;
    if (n > 0 && RAND_bytes(out, (int)n) != 1) {
        abort();
    }
}

mp_port pen_port_openssl(void)
{
    mp_port port;
    if (hmac_algorithm == NULL) {
        hmac_algorithm = EVP_MAC_fetch(NULL, "HMAC", NULL);
        if (hmac_algorithm == NULL) {
            abort();
        }
    }
    port.hmac_sha256 = hmac_sha256;
    port.random_bytes = random_bytes;
    port.ctx = NULL;
    return port;
}

void pen_port_openssl_close(void)
{
    EVP_MAC_free(hmac_algorithm);
    hmac_algorithm = NULL;
}
