#include "proc/sockets.h"

#include "core/log.h"
#include "proc/setup.h"
#include "serve/tls.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

/* systemd socket activation: with no --http / --uwsgi / --https, every socket handed
 * in serves (HTTP, or uwsgi when its FileDescriptorName= is "uwsgi"); with
 * addresses given, each takes the handed-in socket bound to it and binds
 * itself when there is none. Returns the number of sockets taken, 0 when
 * there is no activation, -1 after logging. */
static int adopt_activated(const char *const *addrs, const enum gw_proto *protos,
                           const bool *proxied, size_t naddrs, int backlog, gw_listener_t **out,
                           size_t *nout)
{
    char **names = NULL;
    int n = sd_listen_fds_with_names(1, &names), rc = -1;
    bool *used = NULL;

    if (n <= 0) {
        if (n < 0)
            gw_log_error("LISTEN_FDS: %s", strerror(-n));
        return n < 0 ? -1 : 0;
    }
    *nout = naddrs ? naddrs : (size_t)n;
    if (!(*out = calloc(*nout, sizeof(**out))) || !(used = calloc((size_t)n, sizeof(*used))))
        goto out;
    for (size_t i = 0; i < *nout; i++)
        (*out)[i].fd = -1;
    for (size_t i = 0; i < *nout; i++) {
        int fd = -1;
        enum gw_proto proto;
        if (naddrs) {
            for (int j = 0; j < n && fd < 0; j++)
                if (!used[j] && gw_listen_is_bound_to(SD_LISTEN_FDS_START + j, addrs[i]))
                    fd = j;
            if (fd < 0)
                continue; /* bound by the caller */
            proto = protos[i];
        } else {
            fd = (int)i;
            proto = names && names[i] && strcmp(names[i], "uwsgi") == 0 ? GW_PROTO_UWSGI
                                                                          : GW_PROTO_HTTP;
        }
        used[fd] = true;
        if (gw_listen_adopt(&(*out)[i], SD_LISTEN_FDS_START + fd, backlog) < 0) {
            gw_log_error("LISTEN_FDS: socket %d is not a listening socket", SD_LISTEN_FDS_START + fd);
            goto out;
        }
        gw_listen_set_proto(&(*out)[i], proto);
        (*out)[i].is_proxy_protocol = naddrs && proxied[i];
        (*out)[i].is_activated = true;
    }
    for (int j = 0; j < n; j++) {
        if (!used[j]) {
            gw_log_error("LISTEN_FDS: socket %d matches no --http or --uwsgi address: closed",
                         SD_LISTEN_FDS_START + j);
            close(SD_LISTEN_FDS_START + j);
        }
    }
    rc = n;
out:
    for (int j = 0; names && j < n; j++)
        free(names[j]);
    free(names);
    free(used);
    return rc;
}

/* The listener made for the i-th configured address serves --https (its
 * addresses come last, after --http, --http-proxy-protocol and --uwsgi): which one, for
 * serve/tls.c to give it its certificate. */
static void mark_https(const gw_config_t *cfg, gw_listener_t *l, size_t i)
{
    size_t first = cfg->http.n + cfg->http_proxy_protocol.n + cfg->uwsgi.n;

    l->https = i >= first && i - first < cfg->https.n ? (unsigned)(i - first + 1) : 0;
}

/* True for "host:0" / ":0": any port will do (the kernel picks one). */
static bool is_any_port(const char *addr)
{
    const char *colon = strrchr(addr, ':');

    if (strncmp(addr, "unix:", 5) == 0 || addr[0] == '/' || addr[0] == '.' || !colon)
        return false;
    return colon[1] && strspn(colon + 1, "0") == strlen(colon + 1);
}

static int bind_one(const gw_config_t *cfg, gw_listener_t *l, const char *addr, enum gw_proto proto)
{
    char err[256];
    int (*open_fn)(gw_listener_t *, const char *, int, char *, size_t) =
        cfg->reuse_port ? gw_listen_open_reuse : gw_listen_open;

    if (open_fn(l, addr, (int)cfg->listen_backlog, err, sizeof(err)) < 0) {
        gw_log_error("%s", err);
        return -1;
    }
    gw_listen_set_proto(l, proto);
    return 0;
}

/* A master re-executed by a reload takes the previous image's sockets
 * instead of binding again: the address is never unbound, so no connection
 * is refused. The new configuration decides what serves: each address takes
 * the handed-over socket bound to it (port 0: the next one on that host, in
 * order); an address none is bound to is bound now; a socket no address wants
 * is closed. A new address that cannot be bound is logged and left out, and
 * if nothing at all could be opened the previous sockets go on: a reload
 * never takes the service down. With no --http / --uwsgi / --https, the sockets
 * systemd handed in serve, as at start. */
static int adopt_handed_over(const gw_config_t *cfg, const gw_handover_t *h,
                             const char *const *addrs, const enum gw_proto *protos,
                             const bool *proxied, size_t naddrs, gw_listener_t **out,
                             size_t *nout)
{
    gw_listener_t *old = calloc(h->nsocks ? h->nsocks : 1, sizeof(*old));
    bool *used = calloc(h->nsocks ? h->nsocks : 1, sizeof(*used));
    long *match = calloc(naddrs ? naddrs : 1, sizeof(*match));
    size_t n = 0, activated = 0;
    int rc = -1;

    if (!old || !used || !match || !(*out = calloc(naddrs + h->nsocks, sizeof(**out))))
        goto out;
    for (size_t j = 0; j < h->nsocks; j++) {
        old[j].fd = -1;
        if ((rc = gw_listen_adopt(&old[j], h->socks[j].fd, (int)cfg->listen_backlog)) < 0) {
            gw_log_error("reload: handed-over socket %d %s: closed", h->socks[j].fd,
                         rc == -EINVAL ? "no longer listens" : "is not a stream socket");
            close(h->socks[j].fd);
            used[j] = true;
            continue;
        }
        gw_listen_set_proto(&old[j], h->socks[j].proto);
        old[j].is_activated = h->socks[j].is_activated;
        activated += old[j].is_activated;
    }
    rc = -1;
    if (!cfg->http.n && !cfg->http_proxy_protocol.n && !cfg->uwsgi.n && !cfg->https.n &&
        activated) {
        for (size_t j = 0; j < h->nsocks; j++)
            if (!used[j] && old[j].is_activated)
                (*out)[n++] = old[j], used[j] = true;
    } else {
        /* Exact addresses first, so that a "host:0" takes no socket that an
         * address with its port spelt out is bound to. */
        for (int pass = 0; pass < 2; pass++) {
            for (size_t i = 0; i < naddrs; i++) {
                if (pass != is_any_port(addrs[i]))
                    continue;
                match[i] = -1;
                for (size_t j = 0; j < h->nsocks && match[i] < 0; j++)
                    if (!used[j] && gw_listen_matches(&old[j], addrs[i]))
                        match[i] = (long)j, used[j] = true;
            }
        }
        for (size_t i = 0; i < naddrs; i++) {
            gw_listener_t *l = &(*out)[n];
            if (match[i] >= 0) {
                *l = old[match[i]];
                gw_listen_set_proto(l, protos[i]);
            } else if (bind_one(cfg, l, addrs[i], protos[i]) < 0 ||
                       gw_setup_own_sockets(cfg, l, 1) < 0) {
                gw_log_error("reload: serving without %s until a restart", addrs[i]);
                gw_listen_close(l);
                continue;
            }
            l->is_proxy_protocol = proxied[i];
            mark_https(cfg, l, i);
            n++;
        }
    }
    bool is_fallback = !n;

    if (is_fallback) {
        gw_log_error("reload: none of the configured addresses could be opened; the previous "
                     "sockets go on serving");
        /* but not one that served TLS or the PROXY protocol: what it needs
         * came from the configuration, and served bare a TLS port would
         * answer in plain text (it is closed below, and says so) */
        for (size_t j = 0; j < h->nsocks; j++)
            if (old[j].fd >= 0 && !h->socks[j].needs_context)
                (*out)[n++] = old[j], used[j] = true;
    }
    for (size_t j = 0; j < h->nsocks; j++) {
        if (used[j])
            continue;
        if (is_fallback && h->socks[j].needs_context)
            gw_log_error("reload: %s served TLS or the PROXY protocol, whose configuration is "
                         "gone: closed", old[j].url);
        else
            gw_log_error("reload: %s is no longer configured: closed", old[j].url);
        /* --vacuum removes the files of our unix sockets when they close
         * for good, as at a stop (the old workers' copies go with them) */
        if (cfg->vacuum && old[j].is_unix && !old[j].is_activated && old[j].path[0] &&
            unlink(old[j].path) < 0 && errno != ENOENT)
            gw_log_error("vacuum: cannot remove %s: %s", old[j].path, strerror(errno));
        gw_listen_close(&old[j]);
    }
    /* A socket's reuse-port role comes from the socket: turning the option
     * off is done here (the placeholder starts listening, shared), turning
     * it on needs sockets bound with it from the start. */
    for (size_t i = 0; i < n; i++) {
        gw_listener_t *l = &(*out)[i];
        int e;
        if (l->is_reuse_port && !cfg->reuse_port && (e = gw_listen_share(l)) < 0)
            gw_log_error("reload: %s keeps --reuse-port: %s", l->url, strerror(-e));
        else if (!l->is_reuse_port && cfg->reuse_port && !l->is_unix)
            gw_log_error("reload: --reuse-port takes effect on %s at a restart; its socket "
                         "stays shared until then", l->url);
    }
    *nout = n;
    rc = 0;
out:
    if (rc < 0) {
        gw_log_error("reload: cannot take the listening sockets over: %s", strerror(ENOMEM));
        free(*out);
        *out = NULL;
    }
    free(old);
    free(used);
    free(match);
    return rc;
}

/* The listening sockets, from the strongest source: a re-executed master's
 * hand-over, systemd's, or --http / --uwsgi / --https bound here (127.0.0.1:8000 when
 * nothing is given). */
int gw_sockets_open(const gw_config_t *cfg, const gw_handover_t *h, gw_listener_t **ls,
                    size_t *nl)
{
    static const char *default_http = "127.0.0.1:8000";
    /* --http, then --http-proxy-protocol (HTTP whose connections start with
     * a PROXY header), then --uwsgi, then --https (mark_https) */
    size_t nhttp = cfg->http.n, nproxied = cfg->http_proxy_protocol.n;
    size_t nplain = nhttp + nproxied + cfg->uwsgi.n, naddrs = nplain + cfg->https.n;
    const char **addrs;
    char (*https)[300] = NULL; /* the ADDR of each "ADDR,CERT,KEY..." */
    enum gw_proto *protos;
    bool *proxied;
    int rc = -1, act = 0;

    addrs = calloc(naddrs + 1, sizeof(*addrs));
    protos = calloc(naddrs + 1, sizeof(*protos));
    proxied = calloc(naddrs + 1, sizeof(*proxied));
    if (cfg->https.n)
        https = calloc(cfg->https.n, sizeof(*https));
    if (!addrs || !protos || !proxied || (cfg->https.n && !https))
        goto out;
    for (size_t i = 0; i < naddrs; i++) {
        protos[i] = i >= nhttp + nproxied && i < nplain ? GW_PROTO_UWSGI : GW_PROTO_HTTP;
        proxied[i] = i >= nhttp && i < nhttp + nproxied;
        if (i >= nplain) {
            if (!gw_tls_https_addr(cfg->https.v[i - nplain], https[i - nplain],
                                   sizeof(https[0]))) {
                gw_config_bad_value(cfg, "https", i - nplain, cfg->https.v[i - nplain],
                                    "want ADDR,CERT,KEY[,CIPHERS[,CA]]");
                goto out;
            }
            addrs[i] = https[i - nplain];
        } else {
            addrs[i] = i < nhttp ? cfg->http.v[i]
                       : proxied[i] ? cfg->http_proxy_protocol.v[i - nhttp]
                                    : cfg->uwsgi.v[i - nhttp - nproxied];
        }
    }
    if (h->is_present) {
        if (!naddrs)
            addrs[naddrs++] = default_http;
        rc = adopt_handed_over(cfg, h, addrs, protos, proxied, naddrs, ls, nl);
        goto out;
    }
    if (!cfg->check_config &&
        (act = adopt_activated(addrs, protos, proxied, naddrs, (int)cfg->listen_backlog, ls,
                               nl)) < 0)
        goto out;
    if (!act) {
        if (!naddrs)
            addrs[naddrs++] = default_http;
        if (!(*ls = calloc(naddrs, sizeof(**ls))))
            goto out;
        *nl = naddrs;
        for (size_t i = 0; i < naddrs; i++)
            (*ls)[i].fd = -1;
    }
    for (size_t i = 0; i < *nl && !cfg->check_config; i++) {
        if ((*ls)[i].fd >= 0)
            continue; /* handed in by systemd */
        if (bind_one(cfg, &(*ls)[i], addrs[i], protos[i]) < 0)
            goto out;
        (*ls)[i].is_proxy_protocol = proxied[i];
    }
    /* systemd's and ours alike: the i-th address's listener is the i-th */
    for (size_t i = 0; i < *nl && naddrs; i++)
        mark_https(cfg, &(*ls)[i], i);
    rc = 0;
out:
    free(addrs);
    free(protos);
    free(proxied);
    free(https);
    return rc;
}
