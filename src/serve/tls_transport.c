/* The TLS transport (part of the TLS module, serve/tls_priv.h): the
 * handshake in the first read, reads, gathered writes, kTLS sendfile,
 * shutdown and close; the answer to plain HTTP on a TLS port; and the
 * environ's SSL_* keys of a connection. */
#include "serve/tls_priv.h"

#include <errno.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

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

    /* A read returns one record: OpenSSL may hold more (read ahead) and
     * the socket more still, with no edge to come for them, until a read
     * finds both empty. may_pend is what covers the socket: a burst whose
     * records end exactly where OpenSSL's buffer does leaves
     * SSL_has_pending() false and the rest in the socket (test_records_
     * that_arrive_together_are_all_served_without_another_packet). */
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
    EACH("SSL_TLS_SNI", v && gw__tls_sni_is_sane(v) ? v : NULL);
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
