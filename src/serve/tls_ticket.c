/* The session ticket keys (part of the TLS module, serve/tls_priv.h): the
 * per-hour hash chain every process walks alike, and OpenSSL's callback
 * that makes and reads tickets with them. */
#include "serve/tls_priv.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

/* ---- session ticket keys ----
 *
 * Every worker must read a ticket any other one made, and keys must change
 * and be forgotten (a key kept forever decrypts every session it ever
 * resumed). So the master draws a secret before it forks; each hour
 * (the wall clock's, the same for all of them) the secret becomes the
 * SHA-256 of itself and the old one is erased: a hash chain, which every
 * process walks alike without talking to the others (a worker forked later
 * starts where the master is), and which cannot be walked backwards. The
 * hour's keys are derived from its secret. A reload's new master draws a
 * new secret: tickets from before it make a full handshake. */
typedef struct tkey {
    unsigned char name[16], aes[32], hmac[32];
} tkey_t;

typedef struct tickets {
    bool is_set;
    uint64_t hour;
    unsigned char secret[32];
    tkey_t cur, prev;
} tickets_t;

static tickets_t tickets;

void gw__tls_sha256_label(const char *label, const unsigned char *in, size_t n,
                          unsigned char out[32])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned int len = 0;

    /* Only fails out of memory: a ticket key of zeros would then be
     * predictable, so the secret (and the keys) stay unusable instead. */
    if (!md || !EVP_DigestInit_ex(md, EVP_sha256(), NULL) ||
        !EVP_DigestUpdate(md, label, strlen(label) + 1) || !EVP_DigestUpdate(md, in, n) ||
        !EVP_DigestFinal_ex(md, out, &len))
        RAND_bytes(out, 32);
    EVP_MD_CTX_free(md);
}

static void derive(tkey_t *k, const unsigned char secret[32])
{
    unsigned char name[32];

    gw__tls_sha256_label("gangway ticket name", secret, 32, name);
    memcpy(k->name, name, sizeof(k->name));
    gw__tls_sha256_label("gangway ticket aes", secret, 32, k->aes);
    gw__tls_sha256_label("gangway ticket hmac", secret, 32, k->hmac);
}

static uint64_t this_hour(void)
{
    return (uint64_t)time(NULL) / TICKET_PERIOD_S;
}

int gw__tls_tickets_init(void)
{
    if (tickets.is_set)
        return 0;
    if (RAND_priv_bytes(tickets.secret, sizeof(tickets.secret)) != 1)
        return -1;
    tickets.hour = this_hour();
    derive(&tickets.cur, tickets.secret);
    tickets.prev = tickets.cur;
    tickets.is_set = true;
    return 0;
}

static void tickets_advance(void)
{
    uint64_t now = this_hour();

    /* A clock set back keeps the keys it has (tickets stay readable). */
    while (tickets.is_set && tickets.hour < now) {
        unsigned char next[32];
        gw__tls_sha256_label("gangway ticket ratchet", tickets.secret, sizeof(tickets.secret), next);
        memcpy(tickets.secret, next, sizeof(next));
        OPENSSL_cleanse(next, sizeof(next));
        tickets.prev = tickets.cur;
        derive(&tickets.cur, tickets.secret);
        tickets.hour++;
        if (tickets.hour < now)
            OPENSSL_cleanse(&tickets.prev, sizeof(tickets.prev)); /* skipped: never used */
    }
}

void gw_tls_tick(void)
{
    tickets_advance();
}

static int set_ticket_cipher(const tkey_t *k, unsigned char *iv, EVP_CIPHER_CTX *ectx,
                             EVP_MAC_CTX *hctx, int enc)
{
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)k->hmac, sizeof(k->hmac)),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };

    if (!EVP_CipherInit_ex(ectx, EVP_aes_256_cbc(), NULL, k->aes, iv, enc) ||
        !EVP_MAC_CTX_set_params(hctx, params))
        return -1;
    return 0;
}

/* OpenSSL's ticket callback: 1 (key set), 2 (key set, and make a new
 * ticket), 0 (unknown key: full handshake), -1 (error).
 *
 * A TLS 1.3 resumption always gets a new ticket (2), as it does with
 * OpenSSL's own keys: on 1 OpenSSL sends none after a resumed handshake,
 * and a client that uses each ticket once (RFC 8446 C.4 asks it; an
 * OpenSSL client with a session cache, wrk, marks the session it resumed
 * not resumable) then makes every other handshake a full one (the bench's
 * handshake row: 50% resumed, nginx 99%). TLS 1.2 clients keep reusing the
 * ticket they have: there only the previous hour's key renews it. */
int gw__tls_on_ticket_key(SSL *s, unsigned char name[16], unsigned char *iv,
                          EVP_CIPHER_CTX *ectx, EVP_MAC_CTX *hctx, int enc)
{
    int renew = SSL_version(s) == TLS1_3_VERSION ? 2 : 1;

    if (!tickets.is_set)
        return enc ? -1 : 0;
    tickets_advance();
    if (enc) {
        if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(EVP_aes_256_cbc())) != 1)
            return -1;
        memcpy(name, tickets.cur.name, sizeof(tickets.cur.name));
        return set_ticket_cipher(&tickets.cur, iv, ectx, hctx, 1) < 0 ? -1 : 1;
    }
    if (memcmp(name, tickets.cur.name, 16) == 0)
        return set_ticket_cipher(&tickets.cur, iv, ectx, hctx, 0) < 0 ? -1 : renew;
    if (memcmp(name, tickets.prev.name, 16) == 0)
        return set_ticket_cipher(&tickets.prev, iv, ectx, hctx, 0) < 0 ? -1 : 2;
    return 0;
}
