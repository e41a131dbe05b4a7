/* The TLS module's private parts, shared by the files that make it and by
 * nothing else: tls.c (the set-up from the options: --https and --tls-sni
 * read, the contexts made and handed to the listeners, kTLS's note),
 * tls_ctx.c (one context: certificate and key, versions and ciphers, ALPN,
 * SNI and the servername callback, client CAs and their rule, the OCSP
 * staple), tls_ticket.c (the session ticket keys: the hourly hash chain and
 * OpenSSL's callback) and tls_transport.c (the TLS transport: handshake,
 * read, gathered writes, kTLS sendfile, shutdown, close, the plain-HTTP
 * answer; and the environ's SSL_* keys). The public interface is
 * serve/tls.h. */
#ifndef GW_TLS_PRIV_H
#define GW_TLS_PRIV_H

#include "config/config.h"
#include "serve/tls.h"

#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>

/* Small writes are gathered into one record of at most this much (a head
 * and a short body: one record, one send) rather than one record each:
 * TLS has no writev. A piece this big or bigger goes to SSL_write as it is. */
#define STAGE 16384
/* Ticket keys move on every hour; a ticket made with the previous key is
 * still taken (and replaced by a fresh one), so a ticket lives 1 to 2 h. */
#define TICKET_PERIOD_S 3600

typedef struct ctx_entry {
    SSL_CTX *ctx;
    char *name;        /* --tls-sni: the server name ("*.x" matches one label); NULL */
    unsigned char *ocsp; /* --tls-ocsp: the DER response stapled, or NULL */
    size_t ocsp_len;
    bool is_optional;  /* client certificates asked for, not required */
} ctx_entry_t;

struct gw_tls_ctx {
    ctx_entry_t e;
    const gw_tls_t *tls; /* the SNI table */
};

struct gw_tls {
    struct gw_tls_ctx *https; /* one per --https option */
    size_t nhttps;
    ctx_entry_t *sni;
    size_t nsni;
};

/* ---- tls_ctx.c ---- */

/* OpenSSL's reason for the last failure, for a one-line message (a static
 * buffer; the error queue is cleared). */
const char *gw__tls_ssl_reason(void);
/* Whether a client's server name reads as a host name (SSL_TLS_SNI, the
 * --tls-sni match). */
bool gw__tls_sni_is_sane(const char *name);
/* One context for cert and key (see tls_ctx.c), its OCSP staple in e; tls
 * is the SNI table its servername callback looks in. NULL after one line. */
SSL_CTX *gw__tls_new_ctx(const gw_config_t *cfg, const gw_tls_t *tls, const char *what,
                         const char *cert, const char *key, const char *ciphers, const char *ca,
                         bool ca_required, ctx_entry_t *e);

/* ---- tls_ticket.c ---- */

/* The SHA-256 of a NUL-terminated label and n bytes of in (random bytes
 * when OpenSSL fails: never a predictable key). */
void gw__tls_sha256_label(const char *label, const unsigned char *in, size_t n,
                          unsigned char out[32]);
/* Draws the session ticket secret, once per process (workers keep the one
 * their master drew before fork()). 0, or -1 (no randomness). */
int gw__tls_tickets_init(void);
/* OpenSSL's ticket key callback (SSL_CTX_set_tlsext_ticket_key_evp_cb). */
int gw__tls_on_ticket_key(SSL *s, unsigned char name[16], unsigned char *iv,
                          EVP_CIPHER_CTX *ectx, EVP_MAC_CTX *hctx, int enc);

#endif
