/* Unit tests for serve/tls.c's glue: what it parses (the --https and
 * --tls-sni values, --tls-protocols, a client's server name against the
 * --tls-sni patterns) and the session ticket keys every worker must derive
 * alike: the hour's key made in one process is read in another, the
 * previous hour's still is (and renewed), an unknown one is not, and a key
 * cannot be walked back to the hour before. */
#include "serve/tls.c"

#include "check.h"

#include <stdarg.h>

/* tls.c's only links outside OpenSSL: messages */
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
 * hour's, as a process did an hour ago), read with this hour's state. */
static int ticket_round(bool previous)
{
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *h1 = EVP_MAC_CTX_new(mac), *h2 = EVP_MAC_CTX_new(mac);
    EVP_CIPHER_CTX *e1 = EVP_CIPHER_CTX_new(), *e2 = EVP_CIPHER_CTX_new();
    unsigned char name[16], iv[EVP_MAX_IV_LENGTH];
    tickets_t now = tickets;
    int rc;

    if (previous)
        tickets.cur = tickets.prev;
    CHECK_INT(on_ticket_key(NULL, name, iv, e1, h1, 1), 1);
    tickets = now;
    rc = on_ticket_key(NULL, name, iv, e2, h2, 0);
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
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *h = EVP_MAC_CTX_new(mac);
    EVP_CIPHER_CTX *e = EVP_CIPHER_CTX_new();
    unsigned char name[16] = "no such key 1234", iv[EVP_MAX_IV_LENGTH] = {0};

    CHECK_INT(tickets_init(), 0);
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
    sha256_label("gangway ticket ratchet", later.secret, 32, back);
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
    CHECK_INT(ticket_round(false), 1); /* this hour's */
    CHECK_INT(ticket_round(true), 2); /* the previous hour's: read, renewed */
    CHECK_INT(on_ticket_key(NULL, name, iv, e, h, 0), 0); /* unknown: full handshake */
    EVP_MAC_CTX_free(h);
    EVP_CIPHER_CTX_free(e);
    EVP_MAC_free(mac);
}

int main(void)
{
    test_server_names();
    test_protocols();
    test_specs();
    test_ticket_keys();
    printf("tls: %d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
