/* One TLS context (part of the TLS module, serve/tls_priv.h): certificate
 * and key, versions and ciphers, ALPN, SNI and the servername callback,
 * client CAs and their rule, the OCSP staple. */
#include "serve/tls_priv.h"

#include "core/log.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <openssl/x509.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define SID_CTX "gangway"
/* Mozilla's "intermediate" TLS 1.2 list (server-side TLS guidelines, v5.7):
 * forward secrecy and AEAD only. --tls-ciphers replaces it. */
#define INTERMEDIATE_CIPHERS                                                                       \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"     \
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"       \
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"

/* ---- callbacks of every context ---- */

/* ALPN: HTTP/1.1 (or 1.0) or nothing. A client that offers ALPN without
 * either would speak a protocol gangway does not (h2 alone): a fatal alert
 * now says so better than a parse error later (RFC 7301, 3.2). */
static int on_alpn(SSL *s, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    static const unsigned char ours[] = "\x08http/1.1\x08http/1.0";
    unsigned char *o = NULL;

    (void)s;
    (void)arg;
    if (SSL_select_next_proto(&o, outlen, ours, sizeof(ours) - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    *out = o;
    return SSL_TLSEXT_ERR_OK;
}

static bool name_matches(const char *pattern, const char *name)
{
    if (pattern[0] == '*' && pattern[1] == '.') {
        const char *dot = strchr(name, '.');
        /* one label: "*.example.com" is "a.example.com", not "a.b.example.com" */
        return dot && dot != name && strcasecmp(dot, pattern + 1) == 0;
    }
    return strcasecmp(pattern, name) == 0;
}

/* A server name as a host name is written (letters, digits, '-', '.', and
 * '_' that some hosts have), at most 253 bytes and a trailing dot. OpenSSL
 * refuses only a NUL: CR, LF, spaces and any other byte reached the app in
 * SSL_TLS_SNI, which, unlike HTTP_HOST, nothing else checks. */
bool gw__tls_sni_is_sane(const char *name)
{
    size_t n = strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._");

    return n > 0 && !name[n] && n <= 254;
}

/* SNI: the certificate of the --tls-sni name the client asked for, else
 * the socket's own. Client certificates stay the socket's business, whatever
 * name is asked for: its verification (mode, CAs, the names it lists) is
 * put back after the switch. Taking the name's context's instead let a
 * client skip the certificate an --https socket's '!CA' field requires by
 * asking for another name (the --tls-sni contexts know only
 * --tls-client-ca). */
static int on_servername(SSL *s, int *alert, void *arg)
{
    const gw_tls_t *tls = arg;
    const char *name = SSL_get_servername(s, TLSEXT_NAMETYPE_host_name);
    SSL_CTX *own = SSL_get_SSL_CTX(s); /* the socket's, until the switch below */

    if (!name || !tls || !gw__tls_sni_is_sane(name))
        return SSL_TLSEXT_ERR_NOACK; /* the socket's certificate, no SSL_TLS_SNI */
    for (size_t i = 0; i < tls->nsni; i++) {
        SSL_CTX *ctx = tls->sni[i].ctx;
        int mode = SSL_CTX_get_verify_mode(own);
        if (!name_matches(tls->sni[i].name, name))
            continue;
        if (!SSL_set_SSL_CTX(s, ctx))
            goto fatal;
        /* SSL_set_SSL_CTX takes the certificate, and the new context's
         * store and CA names come with it: the socket's go back. */
        SSL_set_verify(s, mode, SSL_CTX_get_verify_callback(own));
        SSL_set_verify_depth(s, SSL_CTX_get_verify_depth(own));
        if (mode & SSL_VERIFY_PEER) {
            STACK_OF(X509_NAME) *names = SSL_dup_CA_list(SSL_CTX_get_client_CA_list(own));
            if (!names || !SSL_set1_verify_cert_store(s, SSL_CTX_get_cert_store(own))) {
                sk_X509_NAME_pop_free(names, X509_NAME_free);
                goto fatal;
            }
            SSL_set_client_CA_list(s, names); /* takes names */
        }
        return SSL_TLSEXT_ERR_OK;
    }
    return SSL_TLSEXT_ERR_NOACK;
fatal:
    *alert = SSL_AD_INTERNAL_ERROR;
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/* OCSP stapling: the response given (--tls-ocsp) to a client that asks.
 * OpenSSL frees what it is given: a copy per handshake that asks. */
static int on_status(SSL *s, void *arg)
{
    const ctx_entry_t *e = arg;
    unsigned char *copy;

    if (!e || !e->ocsp)
        return SSL_TLSEXT_ERR_NOACK;
    if (!(copy = OPENSSL_memdup(e->ocsp, e->ocsp_len)))
        return SSL_TLSEXT_ERR_NOACK;
    if (!SSL_set_tlsext_status_ocsp_resp(s, copy, (long)e->ocsp_len)) {
        OPENSSL_free(copy);
        return SSL_TLSEXT_ERR_NOACK;
    }
    return SSL_TLSEXT_ERR_OK;
}

/* Optional client certificates: the handshake goes on whatever the
 * verification found; the app reads it in SSL_CLIENT_VERIFY. */
static int on_verify_optional(int ok, X509_STORE_CTX *x)
{
    (void)ok;
    (void)x;
    return 1;
}

/* ---- loading ---- */

/* OpenSSL's reason for the last failure, for a one-line message. */
const char *gw__tls_ssl_reason(void)
{
    static char buf[256];
    unsigned long e = ERR_peek_last_error();

    if (!e)
        return "unknown error";
    ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    /* "error:0A00018F:SSL routines::ee key too small": the words at the end */
    {
        const char *last = strrchr(buf, ':');
        return last && last[1] ? last + 1 : buf;
    }
}

static int parse_protocols(const char *list, int *min, int *max, char *err, size_t errlen)
{
    char tok[32];
    const char *p = list;

    *min = *max = 0;
    while (*p) {
        size_t n = strcspn(p, " ,:");
        int v;
        if (n >= sizeof(tok)) {
            snprintf(err, errlen, "--tls-protocols: unknown version '%.*s'", (int)n, p);
            return -1;
        }
        memcpy(tok, p, n);
        tok[n] = '\0';
        p += n;
        p += strspn(p, " ,:");
        if (!n)
            continue;
        if (strcasecmp(tok, "TLSv1.2") == 0)
            v = TLS1_2_VERSION;
        else if (strcasecmp(tok, "TLSv1.3") == 0)
            v = TLS1_3_VERSION;
        else {
            snprintf(err, errlen,
                     "--tls-protocols: '%s' is not offered (TLSv1.2 and TLSv1.3 are; older "
                     "versions are broken)", tok);
            return -1;
        }
        if (!*min || v < *min)
            *min = v;
        if (v > *max)
            *max = v;
    }
    if (!*min) {
        snprintf(err, errlen, "--tls-protocols: no version given (TLSv1.2, TLSv1.3)");
        return -1;
    }
    return 0;
}

static void warn_key_mode(const char *what, const char *key)
{
    struct stat st;

    if (stat(key, &st) == 0 && (st.st_mode & (S_IROTH | S_IWOTH)))
        gw_log_error("warning: %s: the private key %s is readable by every user (mode %04o): "
                     "chmod o-rwx it", what, key, (unsigned)(st.st_mode & 07777));
}

static void warn_expired(const char *what, SSL_CTX *ctx, const char *cert)
{
    X509 *x = SSL_CTX_get0_certificate(ctx);

    if (x && X509_cmp_current_time(X509_get0_notAfter(x)) < 0)
        gw_log_error("warning: %s: the certificate %s has expired", what, cert);
}

/* Reads the DER OCSP response --tls-ocsp gives for cert, if any. 0, or -1
 * after a line. */
static int load_ocsp(const gw_config_t *cfg, const char *what, const char *cert,
                     ctx_entry_t *e)
{
    for (size_t i = 0; i < cfg->tls_ocsp.n; i++) {
        const char *v = cfg->tls_ocsp.v[i], *eq = strrchr(v, '=');
        FILE *f;
        long n;
        if (!eq || (size_t)(eq - v) != strlen(cert) || strncmp(v, cert, strlen(cert)) != 0)
            continue;
        if (!(f = fopen(eq + 1, "rb"))) {
            gw_log_error("%s: --tls-ocsp %s: %s", what, eq + 1, strerror(errno));
            return -1;
        }
        if (fseek(f, 0, SEEK_END) < 0 || (n = ftell(f)) <= 0 || n > (1 << 20) ||
            fseek(f, 0, SEEK_SET) < 0 || !(e->ocsp = malloc((size_t)n)) ||
            fread(e->ocsp, 1, (size_t)n, f) != (size_t)n) {
            gw_log_error("%s: --tls-ocsp %s: cannot read it (empty, or over 1 MiB?)", what,
                         eq + 1);
            fclose(f);
            return -1;
        }
        fclose(f);
        e->ocsp_len = (size_t)n;
        {
            const unsigned char *p = e->ocsp;
            OCSP_RESPONSE *r = d2i_OCSP_RESPONSE(NULL, &p, (long)n);
            if (!r) {
                gw_log_error("%s: --tls-ocsp %s: not a DER OCSP response", what, eq + 1);
                return -1;
            }
            OCSP_RESPONSE_free(r);
        }
        return 0;
    }
    return 0;
}

/* One context: Mozilla's "intermediate" profile (TLS 1.2 and 1.3, AEAD
 * ciphers with forward secrecy, X25519/P-256/P-384), ALPN, tickets from
 * the shared keys, no session cache (each worker would have its own), no
 * renegotiation, no compression. ca: client certificates (ca_required:
 * a handshake without a valid one fails). what names the option for
 * messages. NULL after one line. */
SSL_CTX *gw__tls_new_ctx(const gw_config_t *cfg, const gw_tls_t *tls, const char *what,
                         const char *cert, const char *key, const char *ciphers, const char *ca,
                         bool ca_required, ctx_entry_t *e)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    char err[256];
    int min, max;
    /* Our cipher order, except that a client preferring ChaCha20 (no AES
     * hardware: phones) gets it: every suite offered is strong, and
     * testssl.sh rates a server without an order as a high finding. */
    uint64_t opts = SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                    SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_SESSION_RESUMPTION_ON_RENEGOTIATION |
                    SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_PRIORITIZE_CHACHA;

    if (!ctx) {
        gw_log_error("%s: cannot make a TLS context: %s", what, gw__tls_ssl_reason());
        return NULL;
    }
#ifndef OPENSSL_NO_KTLS
    /* The kernel encrypts where it can (kTLS): sendfile goes on working. */
    opts |= SSL_OP_ENABLE_KTLS;
#endif
    SSL_CTX_set_options(ctx, opts);
    /* partial writes: SSL_write returns after each record, as a socket's
     * write does (transport.h); moving buffer: the output queue gathers the
     * same bytes again into another place on a retry; released buffers: an
     * idle connection holds no 34 KiB of them. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    /* Read ahead: one read() takes what the socket holds (up to the record
     * buffer) instead of two per record (its header, then its body): a
     * connection with a handshake and one request made 12 read() calls
     * under wrk, 6 now (nginx, which reads ahead too: 4). The bytes read
     * ahead are SSL_has_pending()'s, which the transport's has_pending
     * reports. */
    SSL_CTX_set_read_ahead(ctx, 1);
    if (parse_protocols(cfg->tls_protocols ? cfg->tls_protocols : "TLSv1.2 TLSv1.3", &min, &max,
                        err, sizeof(err)) < 0) {
        gw_log_error("%s", err);
        goto fail;
    }
    SSL_CTX_set_min_proto_version(ctx, min);
    SSL_CTX_set_max_proto_version(ctx, max);
    if (!ciphers || !*ciphers)
        ciphers = INTERMEDIATE_CIPHERS;
    if (!SSL_CTX_set_cipher_list(ctx, ciphers)) {
        gw_log_error("%s: no usable cipher in '%s': %s", what, ciphers, gw__tls_ssl_reason());
        goto fail;
    }
    if (!SSL_CTX_set1_groups_list(ctx, "X25519:P-256:P-384")) {
        gw_log_error("%s: cannot set the key exchange groups: %s", what, gw__tls_ssl_reason());
        goto fail;
    }
    SSL_CTX_set_dh_auto(ctx, 1); /* DHE-RSA suites: RFC 7919's ffdhe groups */
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        gw_log_error("%s: cannot load the certificate %s: %s", what, cert,
                     access(cert, R_OK) < 0 ? strerror(errno) : gw__tls_ssl_reason());
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        unsigned long ev = ERR_peek_last_error();
        if (ERR_GET_REASON(ev) == X509_R_KEY_VALUES_MISMATCH ||
            ERR_GET_REASON(ev) == X509_R_KEY_TYPE_MISMATCH)
            gw_log_error("%s: the key %s does not match the certificate %s", what, key, cert);
        else
            gw_log_error("%s: cannot load the private key %s: %s", what, key,
                         access(key, R_OK) < 0 ? strerror(errno) : gw__tls_ssl_reason());
        ERR_clear_error();
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        gw_log_error("%s: the key %s does not match the certificate %s", what, key, cert);
        ERR_clear_error();
        goto fail;
    }
    warn_key_mode(what, key);
    warn_expired(what, ctx, cert);
    if (ca && *ca) {
        STACK_OF(X509_NAME) *names;
        if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1 ||
            !(names = SSL_load_client_CA_file(ca))) {
            gw_log_error("%s: cannot load the client CA file %s: %s", what, ca,
                         access(ca, R_OK) < 0 ? strerror(errno) : gw__tls_ssl_reason());
            goto fail;
        }
        SSL_CTX_set_client_CA_list(ctx, names);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | (ca_required ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
                           ca_required ? NULL : on_verify_optional);
        e->is_optional = !ca_required;
    }
    SSL_CTX_set_alpn_select_cb(ctx, on_alpn, NULL);
    SSL_CTX_set_tlsext_servername_callback(ctx, on_servername);
    SSL_CTX_set_tlsext_servername_arg(ctx, (void *)tls);
    /* A resumed session skips the client certificate, and OpenSSL resumes
     * only a session made under the same context id: one id per client
     * certificate rule, so that a ticket from a socket that asks for none
     * (or lets a failed one through) does not open a socket that requires
     * one. Every worker derives the same ids: sessions still resume on any
     * worker. */
    if (ca && *ca) {
        unsigned char sid[32];
        gw__tls_sha256_label(ca_required ? "gangway session: required" : "gangway session: optional",
                     (const unsigned char *)ca, strlen(ca), sid);
        SSL_CTX_set_session_id_context(ctx, sid, sizeof(sid));
    } else {
        SSL_CTX_set_session_id_context(ctx, (const unsigned char *)SID_CTX, sizeof(SID_CTX) - 1);
    }
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_timeout(ctx, TICKET_PERIOD_S);
    if (cfg->tls_tickets) {
        SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, gw__tls_on_ticket_key);
    } else {
        /* No ticket at all: NO_TICKET alone still makes TLS 1.3 send
         * stateful ones (naming a session no cache keeps). */
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
        SSL_CTX_set_num_tickets(ctx, 0);
    }
    if (load_ocsp(cfg, what, cert, e) < 0)
        goto fail;
    if (e->ocsp) {
        SSL_CTX_set_tlsext_status_cb(ctx, on_status);
        SSL_CTX_set_tlsext_status_arg(ctx, e);
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}
