/* TLS (tls.h): contexts and certificates, SNI, session ticket keys, OCSP
 * staples, and the TLS transport over OpenSSL 3. */
#include "serve/tls.h"

#include "core/log.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Small writes are gathered into one record of at most this much (a head
 * and a short body: one record, one send) rather than one record each:
 * TLS has no writev. A piece this big or bigger goes to SSL_write as it is. */
#define STAGE 16384
/* Ticket keys move on every hour; a ticket made with the previous key is
 * still taken (and replaced by a fresh one), so a ticket lives 1 to 2 h. */
#define TICKET_PERIOD_S 3600
#define SID_CTX "gangway"
/* Mozilla's "intermediate" TLS 1.2 list (server-side TLS guidelines, v5.7):
 * forward secrecy and AEAD only. --tls-ciphers replaces it. */
#define INTERMEDIATE_CIPHERS                                                                       \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"     \
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"       \
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"

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

static void sha256_label(const char *label, const unsigned char *in, size_t n,
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

    sha256_label("gangway ticket name", secret, 32, name);
    memcpy(k->name, name, sizeof(k->name));
    sha256_label("gangway ticket aes", secret, 32, k->aes);
    sha256_label("gangway ticket hmac", secret, 32, k->hmac);
}

static uint64_t this_hour(void)
{
    return (uint64_t)time(NULL) / TICKET_PERIOD_S;
}

static int tickets_init(void)
{
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
        sha256_label("gangway ticket ratchet", tickets.secret, sizeof(tickets.secret), next);
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

/* OpenSSL's ticket callback: 1 (key set), 2 (old key: decrypted, make a
 * new ticket), 0 (unknown key: full handshake), -1 (error). */
static int on_ticket_key(SSL *s, unsigned char name[16], unsigned char *iv, EVP_CIPHER_CTX *ectx,
                         EVP_MAC_CTX *hctx, int enc)
{
    (void)s;
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
        return set_ticket_cipher(&tickets.cur, iv, ectx, hctx, 0) < 0 ? -1 : 1;
    if (memcmp(name, tickets.prev.name, 16) == 0)
        return set_ticket_cipher(&tickets.prev, iv, ectx, hctx, 0) < 0 ? -1 : 2;
    return 0;
}

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
static bool sni_is_sane(const char *name)
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

    if (!name || !tls || !sni_is_sane(name))
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
static const char *ssl_reason(void)
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
static SSL_CTX *new_ctx(const gw_config_t *cfg, const gw_tls_t *tls, const char *what,
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
        gw_log_error("%s: cannot make a TLS context: %s", what, ssl_reason());
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
        gw_log_error("%s: no usable cipher in '%s': %s", what, ciphers, ssl_reason());
        goto fail;
    }
    if (!SSL_CTX_set1_groups_list(ctx, "X25519:P-256:P-384")) {
        gw_log_error("%s: cannot set the key exchange groups: %s", what, ssl_reason());
        goto fail;
    }
    SSL_CTX_set_dh_auto(ctx, 1); /* DHE-RSA suites: RFC 7919's ffdhe groups */
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        gw_log_error("%s: cannot load the certificate %s: %s", what, cert,
                     access(cert, R_OK) < 0 ? strerror(errno) : ssl_reason());
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
        unsigned long ev = ERR_peek_last_error();
        if (ERR_GET_REASON(ev) == X509_R_KEY_VALUES_MISMATCH ||
            ERR_GET_REASON(ev) == X509_R_KEY_TYPE_MISMATCH)
            gw_log_error("%s: the key %s does not match the certificate %s", what, key, cert);
        else
            gw_log_error("%s: cannot load the private key %s: %s", what, key,
                         access(key, R_OK) < 0 ? strerror(errno) : ssl_reason());
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
                         access(ca, R_OK) < 0 ? strerror(errno) : ssl_reason());
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
        sha256_label(ca_required ? "gangway session: required" : "gangway session: optional",
                     (const unsigned char *)ca, strlen(ca), sid);
        SSL_CTX_set_session_id_context(ctx, sid, sizeof(sid));
    } else {
        SSL_CTX_set_session_id_context(ctx, (const unsigned char *)SID_CTX, sizeof(SID_CTX) - 1);
    }
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_timeout(ctx, TICKET_PERIOD_S);
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, on_ticket_key);
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

/* Splits s at sep into at most max fields, the last keeping the rest (as
 * uWSGI reads a client CA path); s is changed. The count. */
static size_t split(char *s, char sep, char **f, size_t max)
{
    size_t n = 0;

    while (n < max) {
        f[n++] = s;
        if (n == max || !(s = strchr(s, sep)))
            break;
        *s++ = '\0';
    }
    return n;
}

bool gw_tls_https_addr(const char *spec, char *buf, size_t n)
{
    size_t len = strcspn(spec, ",");

    if (!spec[len] || len >= n)
        return false;
    memcpy(buf, spec, len);
    buf[len] = '\0';
    return true;
}

static bool client_ca_required(const gw_config_t *cfg)
{
    return !cfg->tls_client_verify || strcasecmp(cfg->tls_client_verify, "optional") != 0;
}

static int load_https(const gw_config_t *cfg, gw_tls_t *tls, size_t i)
{
    char *copy = strdup(cfg->https.v[i]), *f[5] = {0}, what[300];
    size_t n;
    const char *ca = cfg->tls_client_ca;
    bool required = client_ca_required(cfg);
    int rc = -1;

    if (!copy)
        return -1;
    n = split(copy, ',', f, 5);
    snprintf(what, sizeof(what), "--https %s", f[0]);
    if (n < 3 || !*f[0] || !*f[1] || !*f[2]) {
        gw_log_error("--https '%s': want ADDR,CERT,KEY[,CIPHERS[,CA]]", cfg->https.v[i]);
        goto out;
    }
    if (n >= 5 && *f[4]) { /* uWSGI: "!CA" requires a certificate, "CA" asks for one */
        required = f[4][0] == '!';
        ca = f[4] + (f[4][0] == '!');
    }
    tls->https[i].tls = tls;
    tls->https[i].e.ctx = new_ctx(cfg, tls, what, f[1], f[2],
                                  n >= 4 && *f[3] ? f[3] : cfg->tls_ciphers, ca, required,
                                  &tls->https[i].e);
    rc = tls->https[i].e.ctx ? 0 : -1;
out:
    free(copy);
    return rc;
}

static int load_sni(const gw_config_t *cfg, gw_tls_t *tls, size_t i)
{
    char *copy = strdup(cfg->tls_sni.v[i]), *f[3] = {0}, *sp, what[300];
    size_t n;
    int rc = -1;

    if (!copy)
        return -1;
    /* uWSGI's "NAME CERT,KEY", or "NAME,CERT,KEY" */
    sp = strchr(copy, ' ');
    if (sp && (!strchr(copy, ',') || sp < strchr(copy, ','))) {
        *sp = '\0';
        f[0] = copy;
        n = 1 + split(sp + 1 + strspn(sp + 1, " "), ',', f + 1, 2);
    } else {
        n = split(copy, ',', f, 3);
    }
    if (n < 3 || !*f[0] || !*f[1] || !*f[2]) {
        gw_log_error("--tls-sni '%s': want NAME,CERT,KEY", cfg->tls_sni.v[i]);
        goto out;
    }
    snprintf(what, sizeof(what), "--tls-sni %s", f[0]);
    if (!(tls->sni[i].name = strdup(f[0])))
        goto out;
    /* No client CA of its own: the socket's rule applies (on_servername) */
    tls->sni[i].ctx = new_ctx(cfg, tls, what, f[1], f[2], cfg->tls_ciphers, NULL, false,
                              &tls->sni[i]);
    rc = tls->sni[i].ctx ? 0 : -1;
out:
    free(copy);
    return rc;
}

/* Whether this kernel takes the "tls" upper layer on a TCP socket (what
 * OpenSSL asks for to hand it the keys): CONFIG_TLS, built in or a module
 * it can load. A loopback connection, set up and closed at once. */
static bool kernel_has_ktls(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), c = -1, a = -1;
    bool ok = false;

    if (l < 0)
        return false;
    if (bind(l, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(l, 1) == 0 &&
        getsockname(l, (struct sockaddr *)&sa, &sl) == 0 &&
        (c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) >= 0 &&
        connect(c, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        (a = accept4(l, NULL, NULL, SOCK_CLOEXEC)) >= 0)
        ok = setsockopt(c, SOL_TCP, TCP_ULP, "tls", sizeof("tls")) == 0;
    if (a >= 0)
        close(a);
    if (c >= 0)
        close(c);
    close(l);
    return ok;
}

gw_tls_t *gw_tls_new(const gw_config_t *cfg, gw_listener_t *ls, size_t nl, bool *failed)
{
    gw_tls_t *tls;

    *failed = false;
    if (!cfg->https.n)
        return NULL;
    if (cfg->tls_client_verify && strcasecmp(cfg->tls_client_verify, "required") != 0 &&
        strcasecmp(cfg->tls_client_verify, "optional") != 0) {
        gw_config_bad_value(cfg, "tls-client-verify", 0, cfg->tls_client_verify,
                            "required or optional");
        *failed = true;
        return NULL;
    }
    if (!(tls = calloc(1, sizeof(*tls))) ||
        !(tls->https = calloc(cfg->https.n, sizeof(*tls->https))) ||
        (cfg->tls_sni.n && !(tls->sni = calloc(cfg->tls_sni.n, sizeof(*tls->sni))))) {
        gw_log_error("TLS: %s", strerror(ENOMEM));
        goto fail;
    }
    tls->nhttps = cfg->https.n;
    tls->nsni = cfg->tls_sni.n;
    if (!tickets.is_set && tickets_init() < 0) {
        gw_log_error("TLS: cannot draw the session ticket secret: %s", ssl_reason());
        goto fail;
    }
    for (size_t i = 0; i < cfg->https.n; i++)
        if (load_https(cfg, tls, i) < 0)
            goto fail;
    for (size_t i = 0; i < cfg->tls_sni.n; i++)
        if (load_sni(cfg, tls, i) < 0)
            goto fail;
    for (size_t i = 0; i < nl; i++) {
        gw_listener_t *l = &ls[i];
        char url[sizeof(l->url)];
        if (!l->https || l->https > tls->nhttps)
            continue;
        l->tls = &tls->https[l->https - 1];
        if (strncmp(l->url, "http://", 7) == 0) {
            snprintf(url, sizeof(url), "https://%s", l->url + 7);
            memcpy(l->url, url, sizeof(url));
        }
    }
    if (!cfg->check_config) {
#ifdef OPENSSL_NO_KTLS
        gw_log_error("TLS: OpenSSL was built without kernel TLS: static files over HTTPS are "
                     "read and encrypted through %d KiB buffers", STAGE / 1024);
#else
        if (kernel_has_ktls())
            gw_log_error("TLS: kernel TLS (kTLS) available: static files over HTTPS go out with "
                         "sendfile on connections whose cipher the kernel handles");
        else
            gw_log_error("TLS: no kernel TLS (this kernel has no 'tls' module): static files "
                         "over HTTPS are read and encrypted through %d KiB buffers",
                         STAGE / 1024);
#endif
    }
    return tls;
fail:
    gw_tls_free(tls);
    *failed = true;
    return NULL;
}

static void entry_dispose(ctx_entry_t *e)
{
    SSL_CTX_free(e->ctx);
    free(e->name);
    free(e->ocsp);
}

void gw_tls_free(gw_tls_t *tls)
{
    if (!tls)
        return;
    for (size_t i = 0; tls->https && i < tls->nhttps; i++)
        entry_dispose(&tls->https[i].e);
    for (size_t i = 0; tls->sni && i < tls->nsni; i++)
        entry_dispose(&tls->sni[i]);
    free(tls->https);
    free(tls->sni);
    free(tls);
}

/* ---- the transport ---- */

enum { NVARS = 9 };

typedef struct cvars { /* a client certificate's environ keys, made once per connection */
    int n;
    struct {
        const char *key;
        char *val;
        size_t len;
    } v[NVARS];
} cvars_t;

typedef struct tls_conn {
    SSL *ssl;
    bool is_ready;   /* handshake over */
    bool is_failed;  /* a fatal error: no close_notify may follow (SSL_shutdown(3)) */
    bool is_shut;    /* close_notify sent: reads only drain the socket */
    bool may_pend;   /* the last read did not find the socket empty */
    cvars_t *cvars;
} tls_conn_t;

static const gw_transport_ops_t tls_ops, tls_ktls_ops;

/* A failed SSL call's result: -EAGAIN with *wants set, 0 for the peer's
 * close_notify (or EOF), or a negative errno. */
static ssize_t fail(tls_conn_t *tc, int ret, short *wants)
{
    int e = SSL_get_error(tc->ssl, ret);

    switch (e) {
    case SSL_ERROR_WANT_READ:
        *wants = POLLIN;
        return -EAGAIN;
    case SSL_ERROR_WANT_WRITE:
        *wants = POLLOUT;
        return -EAGAIN;
    case SSL_ERROR_ZERO_RETURN:
        return 0;
    case SSL_ERROR_SYSCALL:
        tc->is_failed = true;
        return errno && errno != EAGAIN ? -errno : 0;
    default:
        tc->is_failed = true;
        return -EPROTO;
    }
}

/* A handshake that failed: FIN rather than RST. What the client sent is
 * still unread, and closing a socket with unread bytes resets it, which
 * can make the client's kernel drop what we sent (an alert, the answer
 * below). Reading what is already here avoids that for what one client
 * sends at once (bounded: past that, a RST is what it gets). */
static void end_quietly(int fd)
{
    char sink[16384];

    shutdown(fd, SHUT_WR);
    for (int i = 0; i < 4 && recv(fd, sink, sizeof(sink), MSG_DONTWAIT) > 0; i++)
        ;
}

/* What a client speaking plain HTTP to the TLS port reads (nginx answers
 * such requests 400 too). OpenSSL recognised the request by its first
 * bytes (GET, POST, HEAD, PUT, CONNECT) and sent no alert, so this is the
 * first thing the client reads. Other methods get a clean close. */
static void answer_plain_http(int fd)
{
    static const char msg[] = "HTTP/1.1 400 Bad Request\r\n"
                              "Content-Type: text/plain\r\n"
                              "Content-Length: 49\r\n"
                              "Connection: close\r\n"
                              "\r\n"
                              "This port speaks HTTPS: use https:// to reach it\n";

    send(fd, msg, sizeof(msg) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    end_quietly(fd);
}

static ssize_t handshake(gw_transport_t *t, tls_conn_t *tc, short *wants)
{
    int r;
    unsigned long e;

    ERR_clear_error();
    r = SSL_do_handshake(tc->ssl);
    if (r == 1) {
        tc->is_ready = true;
#ifndef OPENSSL_NO_KTLS
        /* The kernel took the keys: files go out with sendfile again. */
        if (BIO_get_ktls_send(SSL_get_wbio(tc->ssl)))
            t->ops = &tls_ktls_ops;
#endif
        return 1;
    }
    e = ERR_peek_error();
    if (ERR_GET_LIB(e) == ERR_LIB_SSL && (ERR_GET_REASON(e) == SSL_R_HTTP_REQUEST ||
                                          ERR_GET_REASON(e) == SSL_R_HTTPS_PROXY_REQUEST)) {
        tc->is_failed = true;
        answer_plain_http(t->fd);
        ERR_clear_error();
        return -EPROTO;
    }
    {
        ssize_t rc = fail(tc, r, wants);
        ERR_clear_error();
        if (rc == -EAGAIN)
            return rc;
        end_quietly(t->fd);
        return rc == 0 ? -ECONNRESET : rc;
    }
}

static ssize_t tls_read(gw_transport_t *t, void *buf, size_t n)
{
    tls_conn_t *tc = t->impl;
    size_t got = 0;
    ssize_t rc;

    if (tc->is_shut) {
        /* lingering close: the peer's bytes are dropped, not decrypted */
        ssize_t r;
        do {
            r = read(t->fd, buf, n);
        } while (r < 0 && errno == EINTR);
        return r < 0 ? -errno : r;
    }
    if (!tc->is_ready && (rc = handshake(t, tc, &t->read_wants)) < 0)
        return rc;
    ERR_clear_error();
    if (SSL_read_ex(tc->ssl, buf, n, &got)) {
        t->read_wants = POLLIN;
        tc->may_pend = true;
        return (ssize_t)got;
    }
    tc->may_pend = false;
    rc = fail(tc, 0, &t->read_wants);
    ERR_clear_error();
    return rc;
}

/* One write's failure: never 0 (the output queue would spin on it). */
static ssize_t write_fail(tls_conn_t *tc, short *wants)
{
    ssize_t rc = fail(tc, 0, wants);

    ERR_clear_error();
    return rc == 0 ? -EPIPE : rc;
}

static ssize_t tls_writev(gw_transport_t *t, const struct iovec *iov, int iovcnt, bool more)
{
    static _Thread_local unsigned char stage[STAGE];
    tls_conn_t *tc = t->impl;
    size_t total = 0, off = 0;
    int i = 0;
    ssize_t rc;

    (void)more; /* records are cut per write already: nothing to cork */
    if (tc->is_shut || tc->is_failed)
        return -EPIPE;
    if (!tc->is_ready && (rc = handshake(t, tc, &t->write_wants)) < 0)
        return rc;
    while (i < iovcnt) {
        const unsigned char *p;
        size_t len, w = 0;

        if (iov[i].iov_len - off >= STAGE) {
            p = (const unsigned char *)iov[i].iov_base + off;
            len = iov[i].iov_len - off;
        } else {
            /* A retry after -EAGAIN gathers the same bytes first (the
             * queue still holds them, more may follow): what OpenSSL
             * asks of a repeated write, at another address (moving
             * buffer mode). */
            int j = i;
            size_t o = off;
            len = 0;
            while (j < iovcnt && len < STAGE) {
                size_t take = iov[j].iov_len - o;
                if (take > STAGE - len)
                    take = STAGE - len;
                memcpy(stage + len, (const unsigned char *)iov[j].iov_base + o, take);
                len += take;
                o += take;
                if (o == iov[j].iov_len)
                    j++, o = 0;
            }
            p = stage;
        }
        if (!len)
            break;
        ERR_clear_error();
        if (!SSL_write_ex(tc->ssl, p, len, &w)) {
            rc = write_fail(tc, &t->write_wants);
            /* bytes taken before the socket filled up count; the record
             * OpenSSL holds is retried with the same bytes */
            return total ? (ssize_t)total : rc;
        }
        t->write_wants = POLLOUT;
        total += w;
        while (w > 0 && i < iovcnt) {
            size_t left = iov[i].iov_len - off;
            if (w < left) {
                off += w;
                w = 0;
            } else {
                w -= left;
                i++;
                off = 0;
            }
        }
    }
    return (ssize_t)total;
}

#ifndef OPENSSL_NO_KTLS
static ssize_t tls_sendfile(gw_transport_t *t, int fd, off_t *off, size_t n)
{
    tls_conn_t *tc = t->impl;
    ossl_ssize_t w;

    ERR_clear_error();
    w = SSL_sendfile(tc->ssl, fd, *off, n, 0);
    if (w >= 0) {
        t->write_wants = POLLOUT;
        *off += w;
        return w;
    }
    return write_fail(tc, &t->write_wants);
}
#endif

static bool tls_has_pending(const gw_transport_t *t)
{
    const tls_conn_t *tc = t->impl;

    /* A read returns one record: the socket may hold more, with no edge to
     * come for them, until a read finds it empty. */
    return !tc->is_shut && (tc->may_pend || SSL_has_pending(tc->ssl));
}

static int tls_shutdown(gw_transport_t *t)
{
    tls_conn_t *tc = t->impl;

    if (tc->is_ready && !tc->is_failed && !tc->is_shut) {
        /* close_notify: the client knows the answer is whole. A full socket
         * (-1, WANT_WRITE) is not waited for: the FIN follows anyway. */
        ERR_clear_error();
        SSL_shutdown(tc->ssl);
        ERR_clear_error();
    }
    tc->is_shut = true;
    return shutdown(t->fd, SHUT_WR) < 0 ? -errno : 0;
}

static void cvars_free(cvars_t *cv)
{
    if (!cv)
        return;
    for (int i = 0; i < cv->n; i++)
        free(cv->v[i].val);
    free(cv);
}

static void tls_close(gw_transport_t *t)
{
    tls_conn_t *tc = t->impl;

    SSL_free(tc->ssl);
    cvars_free(tc->cvars);
    free(tc);
    t->impl = NULL;
    close(t->fd);
    t->fd = -1;
}

static const gw_transport_ops_t tls_ops = {
    .name = "tls",
    .read = tls_read,
    .writev = tls_writev,
    .sendfile = NULL, /* the output queue reads files into a bounded buffer (out.c) */
    .has_pending = tls_has_pending,
    .shutdown = tls_shutdown,
    .close = tls_close,
    .may_hold = true, /* SSL_write's record, made and not yet sent */
};

static const gw_transport_ops_t tls_ktls_ops = {
    .name = "ktls",
    .read = tls_read,
    .writev = tls_writev,
#ifndef OPENSSL_NO_KTLS
    .sendfile = tls_sendfile,
#endif
    .has_pending = tls_has_pending,
    .shutdown = tls_shutdown,
    .close = tls_close,
    .may_hold = true, /* SSL_write's record, made and not yet sent */
};

int gw_tls_open(gw_transport_t *t, int fd, const gw_tls_ctx_t *ctx)
{
    tls_conn_t *tc = calloc(1, sizeof(*tc));

    if (!tc || !(tc->ssl = SSL_new(ctx->e.ctx)) || !SSL_set_fd(tc->ssl, fd)) {
        if (tc)
            SSL_free(tc->ssl);
        free(tc);
        ERR_clear_error();
        return -ENOMEM;
    }
    SSL_set_accept_state(tc->ssl);
    t->ops = &tls_ops;
    t->fd = fd;
    t->read_wants = POLLIN;
    t->write_wants = POLLOUT;
    t->impl = tc;
    return 0;
}

/* ---- the environ ---- */

/* BIO's bytes as a malloc'd string into the next slot of cv. */
static void cv_take(cvars_t *cv, const char *key, BIO *b)
{
    char *data;
    long n = BIO_get_mem_data(b, &data);
    char *v;

    if (n >= 0 && cv->n < NVARS && (v = malloc((size_t)n + 1))) {
        memcpy(v, data, (size_t)n);
        v[n] = '\0';
        cv->v[cv->n].key = key;
        cv->v[cv->n].val = v;
        cv->v[cv->n].len = (size_t)n;
        cv->n++;
    }
    BIO_reset(b);
}

static cvars_t *client_vars(tls_conn_t *tc)
{
    X509 *x = SSL_get0_peer_certificate(tc->ssl);
    cvars_t *cv;
    BIO *b;
    const ASN1_INTEGER *serial;
    BIGNUM *bn;
    char *s;

    if (!x || !(cv = calloc(1, sizeof(*cv))))
        return NULL;
    if (!(b = BIO_new(BIO_s_mem()))) {
        free(cv);
        return NULL;
    }
    /* RFC 2253 order and escaping, as Apache's and nginx's SSL_CLIENT_S_DN */
    X509_NAME_print_ex(b, X509_get_subject_name(x), 0, XN_FLAG_RFC2253);
    cv_take(cv, "SSL_CLIENT_S_DN", b);
    X509_NAME_print_ex(b, X509_get_issuer_name(x), 0, XN_FLAG_RFC2253);
    cv_take(cv, "SSL_CLIENT_I_DN", b);
    if ((serial = X509_get0_serialNumber(x)) && (bn = ASN1_INTEGER_to_BN(serial, NULL))) {
        if ((s = BN_bn2hex(bn))) {
            BIO_puts(b, s);
            OPENSSL_free(s);
            cv_take(cv, "SSL_CLIENT_M_SERIAL", b);
        }
        BN_free(bn);
    }
    ASN1_TIME_print(b, X509_get0_notBefore(x));
    cv_take(cv, "SSL_CLIENT_V_START", b);
    ASN1_TIME_print(b, X509_get0_notAfter(x));
    cv_take(cv, "SSL_CLIENT_V_END", b);
    PEM_write_bio_X509(b, x);
    cv_take(cv, "SSL_CLIENT_CERT", b);
    /* uWSGI's names: the subject as X509_NAME_oneline() writes it, the PEM */
    if ((s = X509_NAME_oneline(X509_get_subject_name(x), NULL, 0))) {
        BIO_puts(b, s);
        OPENSSL_free(s);
        cv_take(cv, "HTTPS_DN", b);
    }
    PEM_write_bio_X509(b, x);
    cv_take(cv, "HTTPS_CC", b);
    BIO_free(b);
    ERR_clear_error();
    return cv;
}

int gw_tls_each_var(gw_transport_t *t, gw_tls_var_cb each, void *arg)
{
    tls_conn_t *tc;
    const char *v;
    int rc;

    if (t->ops != &tls_ops && t->ops != &tls_ktls_ops)
        return 0;
    tc = t->impl;
    if (!tc->is_ready)
        return 0;
#define EACH(k, val)                                                                               \
    do {                                                                                           \
        const char *v_ = (val);                                                                    \
        if (v_ && (rc = each(arg, k, v_, strlen(v_))) < 0)                                         \
            return rc;                                                                             \
    } while (0)
    EACH("SSL_PROTOCOL", SSL_get_version(tc->ssl));
    EACH("SSL_CIPHER", SSL_get_cipher_name(tc->ssl));
    EACH("SSL_SESSION_RESUMED", SSL_session_reused(tc->ssl) ? "Resumed" : "Initial");
    v = SSL_get_servername(tc->ssl, TLSEXT_NAMETYPE_host_name);
    EACH("SSL_TLS_SNI", v && sni_is_sane(v) ? v : NULL);
    if (SSL_get_verify_mode(tc->ssl) & SSL_VERIFY_PEER) {
        long vr = SSL_get_verify_result(tc->ssl);
        char failed[160];
        if (!SSL_get0_peer_certificate(tc->ssl)) {
            v = "NONE";
        } else if (vr == X509_V_OK) {
            v = "SUCCESS";
        } else {
            snprintf(failed, sizeof(failed), "FAILED:%s", X509_verify_cert_error_string(vr));
            v = failed;
        }
        EACH("SSL_CLIENT_VERIFY", v);
        if (!tc->cvars)
            tc->cvars = client_vars(tc);
        for (int i = 0; tc->cvars && i < tc->cvars->n; i++)
            if ((rc = each(arg, tc->cvars->v[i].key, tc->cvars->v[i].val, tc->cvars->v[i].len)) <
                0)
                return rc;
    }
#undef EACH
    return 0;
}
