/* TLS (tls.h): the set-up from the options (--https and --tls-sni read,
 * their contexts made and handed to the listeners, whether kernel TLS can
 * carry sendfile) and their release. The contexts themselves are
 * tls_ctx.c's, the ticket keys tls_ticket.c's, the transport and the
 * environ tls_transport.c's (serve/tls_priv.h). */
#include "serve/tls_priv.h"

#include "core/log.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- loading ---- */

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
    tls->https[i].e.ctx = gw__tls_new_ctx(cfg, tls, what, f[1], f[2],
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
    tls->sni[i].ctx = gw__tls_new_ctx(cfg, tls, what, f[1], f[2], cfg->tls_ciphers, NULL, false,
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

#ifndef OPENSSL_NO_KTLS
/* A kernel without kTLS: OpenSSL would still try to hand it the keys at
 * the end of every handshake (two setsockopt() calls that fail). */
static void drop_ktls(gw_tls_t *tls)
{
    for (size_t i = 0; i < tls->nhttps; i++)
        SSL_CTX_clear_options(tls->https[i].e.ctx, SSL_OP_ENABLE_KTLS);
    for (size_t i = 0; i < tls->nsni; i++)
        SSL_CTX_clear_options(tls->sni[i].ctx, SSL_OP_ENABLE_KTLS);
}
#endif

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
    if (gw__tls_tickets_init() < 0) {
        gw_log_error("TLS: cannot draw the session ticket secret: %s", gw__tls_ssl_reason());
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
        else {
            gw_log_error("TLS: no kernel TLS (this kernel has no 'tls' module): static files "
                         "over HTTPS are read and encrypted through %d KiB buffers",
                         STAGE / 1024);
            drop_ktls(tls);
        }
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
