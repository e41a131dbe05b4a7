/* Static files (serve/static.h): set-up (the maps, and the parts the
 * other files of the module keep: serve/static_priv.h) and the answer's
 * assembly: the map a path falls under, the file and its variant, the
 * conditional and range decisions, the head and the file range handed to
 * the response writer. */
#include "serve/static_priv.h"

#include "core/log.h"
#include "serve/response.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

gw_static_t *gw_static_new(const gw_config_t *cfg, char *err, size_t errlen)
{
    gw_static_t *s;

    err[0] = '\0';
    if (!cfg->static_map.n)
        return NULL;
    if (!(s = calloc(1, sizeof(*s))) || !(s->maps = calloc(cfg->static_map.n, sizeof(smap_t))) ||
        !(s->mime = gw__static_mime_new())) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    s->cfg = cfg;
    for (size_t i = 0; i < cfg->static_map.n; i++) {
        const char *m = cfg->static_map.v[i], *eq = strchr(m, '=');
        smap_t *sm = &s->maps[i];
        size_t pl;

        if (!eq || m[0] != '/' || !eq[1]) {
            snprintf(err, errlen, "--static-map wants /prefix=DIR, got '%s'", m);
            goto fail;
        }
        pl = (size_t)(eq - m);
        while (pl > 0 && m[pl - 1] == '/')
            pl--; /* "/" maps everything: prefix "" */
        sm->prefix = strndup(m, pl);
        sm->plen = pl;
        sm->dir = eq + 1;
        sm->dirfd = open(eq + 1, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (!sm->prefix || sm->dirfd < 0) {
            snprintf(err, errlen, "--static-map %s: cannot open directory '%s': %s", m, eq + 1,
                     strerror(errno));
            s->n = i + 1;
            goto fail;
        }
        s->n = i + 1;
    }
    s->has_openat2 = gw__static_probe_openat2(s->maps[0].dirfd);
    gw__static_mime_load(s->mime);
    if (gw__static_expires_compile(s, err, errlen) < 0)
        goto fail;
    if (cfg->static_cache) {
        if (!(s->cache = gw__static_cache_new())) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        s->cache_ms = cfg->static_cache * 1000;
    }
    return s;
fail:
    gw_static_free(s);
    return NULL;
}

void gw_static_free(gw_static_t *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++) {
        free(s->maps[i].prefix);
        if (s->maps[i].dirfd >= 0)
            close(s->maps[i].dirfd);
    }
    gw__static_cache_free(s->cache);
    gw__static_expires_free(s);
    free(s->maps);
    free(s->mime);
    free(s);
}

/* ---- the answer ---- */

#define MAX_HDRS 12

typedef struct answer {
    gw_hdr_t h[MAX_HDRS];
    size_t n;
    gw_arena_t *a;
} answer_t;

static void add(answer_t *an, const char *name, const char *value)
{
    if (an->n == MAX_HDRS || !value)
        return;
    an->h[an->n].name = name;
    an->h[an->n].name_len = strlen(name);
    an->h[an->n].value = value;
    an->h[an->n].value_len = strlen(value);
    an->n++;
}

static char *fmt(gw_arena_t *a, const char *f, ...) __attribute__((format(printf, 2, 3)));
static char *fmt(gw_arena_t *a, const char *f, ...)
{
    char buf[256];
    va_list ap;
    va_start(ap, f);
    vsnprintf(buf, sizeof(buf), f, ap);
    va_end(ap);
    return gw_arena_dup(a, buf, strlen(buf));
}

/* Queues the answer: status, headers and a file range (length bytes of fd
 * from off; fd pinned by the request, r->static_fd) or no body (fd < 0: a
 * HEAD, a 304). The response writer frames it. */
static bool queue(gw_req_t *r, gw_out_t *out, int status, answer_t *an, uint64_t length,
                  bool keep_alive, int fd, uint64_t off, gw_static_result_t *res)
{
    gw_answer_t a = {
        .status = status,
        .hdrs = an->h,
        .nhdrs = an->n,
        .length_hdr = -1,
        .length = (int64_t)length,
    };
    gw_resp_t rs;

    res->status = status;
    res->bytes = 0;
    if (gw_resp_head(&rs, &a, r, keep_alive, out) < 0)
        return false;
    if (fd >= 0)
        gw_resp_push_file(&rs, out, fd, false, (off_t)off, length);
    res->bytes = rs.body_sent;
    return true;
}

/* An answer with a short text body (errors). */
static bool simple(gw_req_t *r, gw_out_t *out, int status, answer_t *an, bool keep_alive,
                   gw_static_result_t *res)
{
    gw_resp_t rs;

    res->status = status;
    res->bytes = 0;
    if (gw_resp_text(&rs, r, status, an->h, an->n, keep_alive, NULL, 0, out) < 0)
        return false;
    res->bytes = rs.body_sent;
    return true;
}

static void close_all(const int *fds, int n)
{
    for (int i = 0; i < n; i++)
        close(fds[i]);
}

bool gw_static_answer(gw_static_t *s, gw_req_t *r, const char *rb, gw_out_t *out,
                      bool keep_alive, gw_static_result_t *res)
{
    const gw_config_t *cfg = s->cfg;
    const char *path = rb + r->path.off, *v, *enc = NULL;
    size_t pn = r->path.len, vn, best = 0;
    const smap_t *m = NULL;
    char rel[4096], var[4200];
    answer_t an = {.a = &r->arena};
    sfile_t tmp, vtmp;
    const sfile_t *f, *asked;
    int own[2], nown = 0, fd, rc; /* descriptors this request opened uncached */
    uint64_t start = 0, end, size;
    bool is_get, partial = false, owned;

    for (size_t i = 0; i < s->n; i++) {
        const smap_t *c = &s->maps[i];
        if (pn >= c->plen && memcmp(path, c->prefix, c->plen) == 0 &&
            (pn == c->plen || path[c->plen] == '/') && (!m || c->plen > best)) {
            m = c;
            best = c->plen;
        }
    }
    if (!m)
        return false;
    /* Unpins what the previous answer used (its head is formatted and its
     * descriptors its own by now: nothing outlives an answer in the cache). */
    s->answer_id++;
    is_get = r->method.len == 3 && memcmp(rb + r->method.off, "GET", 3) == 0;
    if (!is_get && !r->is_head) {
        if (cfg->static_fallthrough)
            return false; /* files are only read: everything else is the app's */
        add(&an, "Allow", "GET, HEAD");
        return simple(r, out, 405, &an, keep_alive, res);
    }
    if (gw__static_clean_path(path + m->plen, pn - m->plen, r->is_path_decoded,
                              cfg->static_dotfiles, rel, sizeof(rel)) < 0)
        goto not_found;
    if (!(f = gw__static_get_file(s, m, rel, sizeof(rel), true, "", &tmp, &owned)))
        goto not_found;
    if (owned)
        own[nown++] = f->fd;
    asked = f; /* pinned: a variant probe below never evicts it */
    add(&an, "Content-Type", f->type);

    if (cfg->static_gzip) {
        add(&an, "Vary", "Accept-Encoding");
        if (gw_req_header(r, rb, "accept-encoding", &v, &vn)) {
            static const char *codings[][2] = {{"br", ".br"}, {"gzip", ".gz"}};
            for (size_t i = 0; i < 2 && !enc; i++) {
                const sfile_t *vf;
                if (!gw__static_accepts(v, vn, codings[i][0]))
                    continue;
                /* Beside the file the name resolved to (an index too). */
                snprintf(var, sizeof(var), "%s%s", f->rel, codings[i][1]);
                if (!(vf = gw__static_get_file(s, m, var, sizeof(var), false, codings[i][0],
                                               &vtmp, &owned)))
                    continue;
                if (owned)
                    own[nown++] = vf->fd;
                f = vf;
                enc = codings[i][0];
            }
        }
        if (enc)
            add(&an, "Content-Encoding", enc);
    }
    size = (uint64_t)f->st.st_size;
    {
        bool not_modified = false;

        add(&an, "ETag", f->etag);
        add(&an, "Last-Modified", f->lm);
        add(&an, "Accept-Ranges", "bytes");
        /* Rules name the file the client asked for (uWSGI matches the
         * original's path too): site.css.gz is cached like site.css. */
        uint64_t expires = gw__static_expires_for(s, m, path, pn, asked);
        if (expires) {
            char ex[64];
            gw__static_http_date(time(NULL) + (time_t)expires, ex, sizeof(ex));
            add(&an, "Cache-Control", fmt(&r->arena, "max-age=%llu", (unsigned long long)expires));
            add(&an, "Expires", gw_arena_dup(&r->arena, ex, strlen(ex)));
        }
        /* RFC 9110 13.2.2: If-None-Match first; If-Modified-Since only without it. */
        if (gw_req_header(r, rb, "if-none-match", &v, &vn)) {
            not_modified = gw__static_etag_matches(v, vn, f->etag);
        } else if (gw_req_header(r, rb, "if-modified-since", &v, &vn)) {
            time_t ims = gw__static_parse_http_date(v, vn);
            not_modified = ims >= 0 && f->st.st_mtim.tv_sec <= ims;
        }
        if (not_modified) {
            close_all(own, nown);
            return queue(r, out, 304, &an, 0, keep_alive, -1, 0, res);
        }
        end = size ? size - 1 : 0;
        if (gw_req_header(r, rb, "range", &v, &vn)) {
            const char *ir;
            size_t irn;
            bool use = true;
            if (gw_req_header(r, rb, "if-range", &ir, &irn)) {
                /* A range only while the representation is the one the client has. */
                if (irn && ir[0] == '"')
                    use = irn == strlen(f->etag) && memcmp(ir, f->etag, irn) == 0;
                else
                    use = gw__static_parse_http_date(ir, irn) == f->st.st_mtim.tv_sec;
            }
            if (use) {
                rc = gw__static_parse_range(v, vn, size, &start, &end);
                if (rc < 0) {
                    answer_t e = {.a = &r->arena};
                    close_all(own, nown);
                    add(&e, "Content-Range", fmt(&r->arena, "bytes */%llu",
                                                 (unsigned long long)size));
                    return simple(r, out, 416, &e, keep_alive, res);
                }
                partial = rc > 0;
            }
        }
    }
    if (partial)
        add(&an, "Content-Range", fmt(&r->arena, "bytes %llu-%llu/%llu",
                                      (unsigned long long)start, (unsigned long long)end,
                                      (unsigned long long)size));
    if (r->is_head) {
        close_all(own, nown);
        return queue(r, out, partial ? 206 : 200, &an, size ? end - start + 1 : 0, keep_alive,
                     -1, 0, res);
    }
    /* The request owns the descriptor it sends from: a cached one is
     * duplicated, since the cache may close its own before a slow client
     * has the whole file. */
    if (f->fd == (nown ? own[nown - 1] : -1)) {
        fd = f->fd;
        nown--;
    } else {
        fd = fcntl(f->fd, F_DUPFD_CLOEXEC, 0);
    }
    close_all(own, nown);
    if (fd < 0) {
        answer_t e = {.a = &r->arena};
        gw_log_error("static file %s: %s", f->rel, strerror(errno));
        return simple(r, out, 503, &e, keep_alive, res);
    }
    r->static_fd = fd;
    return queue(r, out, partial ? 206 : 200, &an, size ? end - start + 1 : 0, keep_alive, fd,
                 start, res);

not_found:
    close_all(own, nown);
    if (cfg->static_fallthrough)
        return false;
    an.n = 0;
    return simple(r, out, 404, &an, keep_alive, res);
}
