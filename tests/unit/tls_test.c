/* Unit tests for the TLS module's glue (serve/tls*.c): what it parses (the
 * --https and --tls-sni values, --tls-protocols, a client's server name against the
 * --tls-sni patterns) and the session ticket keys every worker must derive
 * alike: the hour's key made in one process is read in another, the
 * previous hour's still is (and renewed), an unknown one is not, and a key
 * cannot be walked back to the hour before; a resumed TLS 1.3 handshake
 * gives the client a new ticket. And the TLS transport under the
 * output queue (out.c), over a BIO pair whose room the test decides: what
 * OpenSSL holds after a full socket is not dropped for other bytes. */
#include "serve/out.c"
#include "serve/tls.c"
#include "serve/tls_ctx.c"
#include "serve/tls_ticket.c"
#include "serve/tls_transport.c"

#include "check.h"

#include <stdarg.h>
#include <stdlib.h>

/* the TLS files' only links outside OpenSSL: messages */
static int n_logged;
void gw_log_error(const char *fmt, ...)
{
    (void)fmt;
    n_logged++;
}
void gw_config_bad_value(const gw_config_t *c, const char *name, size_t i, const char *value,
                         const char *why)
{
    (void)c, (void)name, (void)i, (void)value, (void)why;
    n_logged++;
}

static void test_server_names(void)
{
    CHECK(gw__tls_sni_is_sane("localhost") && gw__tls_sni_is_sane("LocalHost.") && gw__tls_sni_is_sane("a_b-c.x9"));
    CHECK(!gw__tls_sni_is_sane("") && !gw__tls_sni_is_sane("a b") && !gw__tls_sni_is_sane("x\r\nX-Evil: 1"));
    CHECK(!gw__tls_sni_is_sane("\xc3\xa9.test") && !gw__tls_sni_is_sane("a\x01") && !gw__tls_sni_is_sane("*.test"));
    CHECK(name_matches("other.test", "other.test"));
    CHECK(name_matches("other.test", "OTHER.Test"));
    CHECK(!name_matches("other.test", "other.test."));
    CHECK(!name_matches("other.test", "x.other.test"));
    CHECK(name_matches("*.wild.test", "a.wild.test"));
    CHECK(name_matches("*.wild.test", "A.WILD.TEST"));
    CHECK(!name_matches("*.wild.test", "a.b.wild.test")); /* one label */
    CHECK(!name_matches("*.wild.test", "wild.test"));
    CHECK(!name_matches("*.wild.test", ".wild.test"));
    CHECK(!name_matches("*.wild.test", ""));
    /* a client's name is any bytes: never past its end, whatever it is */
    for (int i = 0; i < 20000; i++) {
        char name[16];
        size_t n = (size_t)(rand() % (int)sizeof(name));
        for (size_t j = 0; j < n; j++)
            name[j] = (char)(".*aW"[rand() % 4]);
        name[n] = '\0';
        (void)name_matches("*.wild.test", name);
        (void)name_matches("*.", name);
        (void)name_matches("a", name);
    }
    CHECK(1);
}

static void test_protocols(void)
{
    char err[128];
    int min, max;

    CHECK_INT(parse_protocols("TLSv1.2 TLSv1.3", &min, &max, err, sizeof(err)), 0);
    CHECK(min == TLS1_2_VERSION && max == TLS1_3_VERSION);
    CHECK_INT(parse_protocols("tlsv1.3", &min, &max, err, sizeof(err)), 0);
    CHECK(min == TLS1_3_VERSION && max == TLS1_3_VERSION);
    CHECK_INT(parse_protocols(" TLSv1.3,TLSv1.2 ,", &min, &max, err, sizeof(err)), 0);
    CHECK(min == TLS1_2_VERSION && max == TLS1_3_VERSION);
    CHECK_INT(parse_protocols("TLSv1.2", &min, &max, err, sizeof(err)), 0);
    CHECK(min == TLS1_2_VERSION && max == TLS1_2_VERSION);
    CHECK_INT(parse_protocols("TLSv1.1 TLSv1.2", &min, &max, err, sizeof(err)), -1);
    CHECK(strstr(err, "'TLSv1.1' is not offered") != NULL);
    CHECK_INT(parse_protocols("SSLv3", &min, &max, err, sizeof(err)), -1);
    CHECK_INT(parse_protocols("", &min, &max, err, sizeof(err)), -1);
    CHECK_INT(parse_protocols(" , ", &min, &max, err, sizeof(err)), -1);
    CHECK_INT(parse_protocols("TLSv1.2xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", &min, &max,
                              err, sizeof(err)),
              -1);
}

static void test_specs(void)
{
    char buf[32], s[64], *f[5];

    CHECK(gw_tls_https_addr("127.0.0.1:443,c.pem,k.pem", buf, sizeof(buf)));
    CHECK_STR(buf, "127.0.0.1:443");
    CHECK(gw_tls_https_addr("[::1]:8443,c,k", buf, sizeof(buf)));
    CHECK_STR(buf, "[::1]:8443");
    CHECK(gw_tls_https_addr("unix:/run/a.sock,c,k", buf, sizeof(buf)));
    CHECK_STR(buf, "unix:/run/a.sock");
    CHECK(!gw_tls_https_addr("127.0.0.1:443", buf, sizeof(buf))); /* no certificate */
    CHECK(!gw_tls_https_addr("unix:/a/very/long/path/beyond/the/buffer.sock,c,k", buf,
                             sizeof(buf)));
    snprintf(s, sizeof(s), "a,c.pem,k.pem,,!ca.pem");
    CHECK_INT(split(s, ',', f, 5), 5);
    CHECK_STR(f[3], "");
    CHECK_STR(f[4], "!ca.pem");
    snprintf(s, sizeof(s), "a,c,k,x,y,z");
    CHECK_INT(split(s, ',', f, 5), 5);
    CHECK_STR(f[4], "y,z"); /* the last field keeps the rest */
    snprintf(s, sizeof(s), "a");
    CHECK_INT(split(s, ',', f, 5), 1);
}

/* A ticket made with this hour's key (or, previous: with the previous
 * hour's, as a process did an hour ago), read with this hour's state on s
 * (a connection at some version). */
static int ticket_round(SSL *s, bool previous)
{
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *h1 = EVP_MAC_CTX_new(mac), *h2 = EVP_MAC_CTX_new(mac);
    EVP_CIPHER_CTX *e1 = EVP_CIPHER_CTX_new(), *e2 = EVP_CIPHER_CTX_new();
    unsigned char name[16], iv[EVP_MAX_IV_LENGTH];
    tickets_t now = tickets;
    int rc;

    if (previous)
        tickets.cur = tickets.prev;
    CHECK_INT(gw__tls_on_ticket_key(s, name, iv, e1, h1, 1), 1);
    tickets = now;
    rc = gw__tls_on_ticket_key(s, name, iv, e2, h2, 0);
    EVP_MAC_CTX_free(h1);
    EVP_MAC_CTX_free(h2);
    EVP_CIPHER_CTX_free(e1);
    EVP_CIPHER_CTX_free(e2);
    EVP_MAC_free(mac);
    return rc;
}

static void test_ticket_keys(void)
{
    tickets_t start, later;
    unsigned char back[32];

    CHECK_INT(gw__tls_tickets_init(), 0);
    start = tickets;
    CHECK(memcmp(start.cur.aes, start.cur.hmac, 32) != 0);
    /* two processes three hours on, from the same start: the same keys */
    tickets.hour -= 3;
    tickets_advance();
    later = tickets;
    tickets = start;
    tickets.hour -= 3;
    tickets_advance();
    CHECK(memcmp(&later.cur, &tickets.cur, sizeof(tkey_t)) == 0);
    CHECK(memcmp(&later.prev, &tickets.prev, sizeof(tkey_t)) == 0);
    CHECK(memcmp(&later.cur, &start.cur, sizeof(tkey_t)) != 0);
    CHECK(memcmp(later.secret, start.secret, 32) != 0);
    CHECK(later.hour == this_hour());
    /* the hour's key is the one before it, moved on: never backwards */
    gw__tls_sha256_label("gangway ticket ratchet", later.secret, 32, back);
    CHECK(memcmp(back, start.secret, 32) != 0);
    /* one hour on: the previous key is the old current one */
    tickets = start;
    tickets.hour -= 1;
    {
        tkey_t old = tickets.cur;
        tickets_advance();
        CHECK(memcmp(&tickets.prev, &old, sizeof(old)) == 0);
    }
    /* a clock set back keeps the keys */
    later = tickets;
    tickets.hour += 5;
    tickets_advance();
    CHECK(memcmp(&tickets.cur, &later.cur, sizeof(tkey_t)) == 0);
    tickets = later;
}

/* ---- the transport under the output queue ---- */

/* A self-signed P-256 certificate and its key, as PEM files. */
static void make_cert(char *cert, char *key)
{
    EVP_PKEY *pk = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    FILE *f;
    int fd;

    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, pk);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)"localhost", -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    X509_sign(x, pk, EVP_sha256());
    fd = mkstemp(cert);
    f = fdopen(fd, "w");
    PEM_write_X509(f, x);
    fclose(f);
    fd = mkstemp(key);
    f = fdopen(fd, "w");
    PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    X509_free(x);
    EVP_PKEY_free(pk);
}

/* ---- tickets over real handshakes ---- */

static SSL_SESSION *last_ticket; /* the client's newest session, with its ticket */
static int n_tickets;            /* tickets the client received */

static int on_client_session(SSL *c, SSL_SESSION *sess)
{
    (void)c;
    SSL_SESSION_free(last_ticket);
    last_ticket = sess; /* ours: returning 1 keeps the reference */
    n_tickets++;
    return 1;
}

/* A handshake over a BIO pair between a server of sctx and a client of
 * cctx limited to version, resuming sess if given; the client then reads
 * what followed the handshake (TLS 1.3's tickets). The server's SSL, the
 * client's in *cl. */
static SSL *handshake_at(SSL_CTX *sctx, SSL_CTX *cctx, int version, SSL_SESSION *sess, SSL **cl)
{
    SSL *s = SSL_new(sctx), *c = SSL_new(cctx);
    BIO *sb, *cb;
    unsigned char b;
    size_t r;

    CHECK(s && c && BIO_new_bio_pair(&sb, 0, &cb, 0) == 1);
    SSL_set_bio(s, sb, sb);
    SSL_set_bio(c, cb, cb);
    SSL_set_accept_state(s);
    SSL_set_connect_state(c);
    SSL_set_max_proto_version(c, version);
    if (sess)
        SSL_set_session(c, sess);
    for (int i = 0; i < 20 && !(SSL_is_init_finished(s) && SSL_is_init_finished(c)); i++) {
        SSL_do_handshake(c);
        SSL_do_handshake(s);
    }
    CHECK(SSL_is_init_finished(s) && SSL_is_init_finished(c));
    CHECK(!SSL_read_ex(c, &b, 1, &r)); /* the tickets, no data */
    ERR_clear_error();
    *cl = c;
    return s;
}

/* Both ends freed as after a clean close (OpenSSL makes the session of a
 * client freed mid-connection unresumable). */
static void end_pair(SSL *s, SSL *c)
{
    SSL_set_shutdown(c, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    SSL_free(c);
    SSL_free(s);
}

/* The ticket callback on real connections, and what a client gets: a TLS
 * 1.3 resumption renews the ticket (with 1 for this hour's key OpenSSL sent
 * no new ticket, and a client using each ticket once made every other
 * handshake a full one); a TLS 1.2 one keeps it (its clients reuse it). */
/* A server context as --https makes it (--tls-tickets as with_tickets says) and
 * a client one that counts the tickets it gets (n_tickets, last_ticket),
 * keeping them as a client with a session cache does (wrk). */
static SSL_CTX *ticket_ctxs(bool with_tickets, ctx_entry_t *e, SSL_CTX **cctx)
{
    char cert[] = "/tmp/gw-tls-test-cert-XXXXXX", key[] = "/tmp/gw-tls-test-key-XXXXXX";
    gw_config_t cfg = {0};
    SSL_CTX *sctx;

    make_cert(cert, key);
    cfg.tls_tickets = with_tickets;
    sctx = gw__tls_new_ctx(&cfg, NULL, "test", cert, key, NULL, NULL, false, e);
    unlink(cert);
    unlink(key);
    *cctx = SSL_CTX_new(TLS_client_method());
    CHECK(sctx && *cctx);
    SSL_CTX_set_session_cache_mode(*cctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(*cctx, on_client_session);
    return sctx;
}

static void test_tickets_over_handshakes(void)
{
    ctx_entry_t e = {0};
    SSL_CTX *cctx, *sctx = ticket_ctxs(true, &e, &cctx); /* true: the option's default */
    SSL *s, *c;
    const int versions[] = {TLS1_3_VERSION, TLS1_2_VERSION};

    for (size_t v = 0; v < sizeof(versions) / sizeof(versions[0]); v++) {
        bool is13 = versions[v] == TLS1_3_VERSION;
        SSL_SESSION *first;

        n_tickets = 0;
        s = handshake_at(sctx, cctx, versions[v], NULL, &c);
        CHECK_INT(SSL_version(s), versions[v]);
        CHECK(!SSL_session_reused(s));
        CHECK_INT(n_tickets, is13 ? 2 : 1); /* OpenSSL's two for TLS 1.3 */
        CHECK_INT(ticket_round(s, false), is13 ? 2 : 1); /* this hour's: renewed in 1.3 */
        CHECK_INT(ticket_round(s, true), 2);             /* the previous hour's: renewed */
        {
            unsigned char name[16] = "no such key 1234", iv[EVP_MAX_IV_LENGTH] = {0};
            EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
            EVP_MAC_CTX *h = EVP_MAC_CTX_new(mac);
            EVP_CIPHER_CTX *ec = EVP_CIPHER_CTX_new();
            CHECK_INT(gw__tls_on_ticket_key(s, name, iv, ec, h, 0), 0); /* unknown: full */
            EVP_MAC_CTX_free(h);
            EVP_CIPHER_CTX_free(ec);
            EVP_MAC_free(mac);
        }
        end_pair(s, c);
        /* resumed three times, each time with the newest ticket */
        first = last_ticket;
        SSL_SESSION_up_ref(first);
        for (int i = 0; i < 3; i++) {
            int before = n_tickets;
            SSL_SESSION *use = last_ticket;
            SSL_SESSION_up_ref(use);
            s = handshake_at(sctx, cctx, versions[v], use, &c);
            CHECK(SSL_session_reused(s));
            CHECK_INT(n_tickets - before, is13 ? 1 : 0);
            if (is13)
                CHECK(last_ticket != use);
            SSL_SESSION_free(use);
            end_pair(s, c);
        }
        SSL_SESSION_free(first);
    }
    SSL_SESSION_free(last_ticket);
    last_ticket = NULL;
    SSL_CTX_free(cctx);
    SSL_CTX_free(sctx);
}

/* --tls-tickets=false: a full TLS 1.3 handshake gives the client no ticket
 * (SSL_OP_NO_TICKET alone still sent stateful ones). */
static void test_tickets_off(void)
{
    ctx_entry_t e = {0};
    SSL_CTX *cctx, *sctx = ticket_ctxs(false, &e, &cctx);
    SSL *s, *c;

    n_tickets = 0;
    s = handshake_at(sctx, cctx, TLS1_3_VERSION, NULL, &c);
    CHECK_INT(SSL_version(s), TLS1_3_VERSION);
    CHECK_INT(n_tickets, 0);
    end_pair(s, c);
    SSL_SESSION_free(last_ticket);
    last_ticket = NULL;
    SSL_CTX_free(cctx);
    SSL_CTX_free(sctx);
}

/* Everything the client can read now, appended to got (*n bytes). */
static void client_drain(SSL *c, char *got, size_t *n, size_t cap)
{
    size_t r;

    while (*n < cap && SSL_read_ex(c, got + *n, cap - *n, &r))
        *n += r;
    ERR_clear_error();
}

/* The server's answer to a request with "Expect: 100-continue" meets a full
 * socket: OpenSSL makes the 100 Continue's record and holds it (WANT_WRITE),
 * the output queue still holds the bytes. Then the server answers an error
 * instead (the body timed out): gw_out_discard_unstarted() dropped the
 * unsent-looking 100 Continue, and the next SSL_write sent the held record
 * and counted it against the error answer's first 25 bytes: the client read
 * "HTTP/1.1 100 Continue" and then the answer without its status line. */
static void test_held_record_is_not_dropped(void)
{
    static const char ans[] = "HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n";
    char cert[] = "/tmp/gw-tls-test-cert-XXXXXX", key[] = "/tmp/gw-tls-test-key-XXXXXX";
    gw_config_t cfg = {0};
    struct gw_tls_ctx tctx = {0};
    gw_transport_t t;
    gw_out_t o;
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    SSL *c = SSL_new(cctx);
    BIO *sb, *cb;
    int sv[2];
    static char got[1 << 16], filler[16384];
    size_t n = 0, room;
    char buf[64];
    int rc = -1;

    make_cert(cert, key);
    tctx.e.ctx = gw__tls_new_ctx(&cfg, NULL, "test", cert, key, NULL, NULL, false, &tctx.e);
    unlink(cert);
    unlink(key);
    CHECK(tctx.e.ctx != NULL);
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    CHECK_INT(gw_tls_open(&t, sv[0], &tctx), 0);
    /* the server writes into 4 KiB the client reads from */
    CHECK(BIO_new_bio_pair(&sb, 4096, &cb, 65536) == 1);
    SSL_set_bio(((tls_conn_t *)t.impl)->ssl, sb, sb);
    SSL_set_bio(c, cb, cb);
    SSL_set_connect_state(c);
    for (int i = 0; i < 50 && !(SSL_is_init_finished(c) && ((tls_conn_t *)t.impl)->is_ready); i++) {
        SSL_do_handshake(c);
        gw_transport_read(&t, buf, sizeof(buf));
    }
    ERR_clear_error();
    CHECK(((tls_conn_t *)t.impl)->is_ready);
    gw_out_init(&o, NULL);
    /* a first answer the client reads (and the session tickets with it) */
    gw_out_push_lit(&o, "ok");
    CHECK_INT(gw_out_flush(&o, &t), 0);
    client_drain(c, got, &n, sizeof(got));
    CHECK(n == 2);
    /* the client stops reading: records that fit the room exactly, until
     * not one more byte's record does (22 bytes of record around each) */
    memset(filler, 'f', sizeof(filler));
    while ((room = BIO_ctrl_get_write_guarantee(sb)) > 22) {
        struct iovec iov = {filler, room - 22 > 16384 ? 16384 : room - 22};
        CHECK(t.ops->writev(&t, &iov, 1, false) == (ssize_t)iov.iov_len);
    }
    gw_out_push_lit(&o, "HTTP/1.1 100 Continue\r\n\r\n");
    CHECK_INT(gw_out_flush(&o, &t), -EAGAIN); /* its record is made, and held */
    gw_out_discard_unstarted(&o);
    gw__out_push_static(&o, ans, sizeof(ans) - 1);
    for (int i = 0; i < 20 && (rc = gw_out_flush(&o, &t)) == -EAGAIN; i++)
        client_drain(c, got, &n, sizeof(got));
    CHECK_INT(rc, 0);
    client_drain(c, got, &n, sizeof(got));
    {
        /* after "ok" and the filler: the 100 Continue whole, then the answer */
        const char *p = got + 2;
        size_t m = n - 2;
        while (m && *p == 'f')
            p++, m--;
        if (m >= 25 && memcmp(p, "HTTP/1.1 100 Continue\r\n\r\n", 25) == 0)
            p += 25, m -= 25;
        CHECK(m == sizeof(ans) - 1 && memcmp(p, ans, m) == 0);
        if (m != sizeof(ans) - 1 || memcmp(p, ans, m) != 0)
            fprintf(stderr, "the client read: %.*s\n", (int)m, p);
    }
    gw_transport_close(&t);
    close(sv[1]);
    SSL_free(c);
    SSL_CTX_free(cctx);
    SSL_CTX_free(tctx.e.ctx);
}

int main(void)
{
    test_server_names();
    test_protocols();
    test_specs();
    test_ticket_keys();
    test_tickets_over_handshakes();
    test_tickets_off();
    test_held_record_is_not_dropped();
    printf("tls: %d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
