#include "serve/static.h"

#include "core/clock.h"
#include "core/log.h"
#include "serve/response.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <linux/openat2.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MIME_SLOTS 4096 /* a power of two, over twice the types Debian lists */

typedef struct smap {
    char *prefix; /* "/static", no trailing slash */
    size_t plen;
    const char *dir; /* as configured (absolute, see main.c), for static-expires */
    int dirfd;    /* O_PATH directory every open is resolved beneath */
} smap_t;

/* --static-expires / --static-expires-uri: how long a client may cache. */
typedef struct expire {
    bool is_uri;     /* matched against the request path, else the file path */
    bool has_re;     /* false: every file */
    regex_t re;
    uint64_t seconds;
} expire_t;

typedef struct mime {
    char ext[16];
    char type[80];
} mime_t;

/* A file resolved beneath a map, ready to answer from. */
typedef struct sfile {
    int fd;          /* reads the file */
    struct stat st;
    const char *rel; /* the name it resolved to (an index appended) */
    char type[112];  /* Content-Type, from that name */
    char etag[96];   /* strong: inode, size, mtime, and a variant's coding */
    char lm[40];     /* Last-Modified */
} sfile_t;

/* --static-cache: resolved files stay open for a while, so that a hot file
 * costs no open, fstat and close per request. Direct-mapped: a collision
 * replaces the older entry, unless that entry is pinned. Names longer than
 * FC_NAME are never cached. The static fuzzer builds with a tiny FC_SLOTS
 * so that every lookup collides. */
#ifndef FC_SLOTS
#define FC_SLOTS 256
#endif
#define FC_NAME 192

typedef struct fentry {
    sfile_t f;          /* f.fd -1: nothing servable under this name (cached too) */
    uint64_t checked_ms;
    /* Pinned while pin == gw_static.answer_id: an answer holds pointers
     * into this entry (its fd, name, type, validators) across the lookups
     * of the variants, and a probe that collided with it used to close the
     * fd and rename the entry under the answer (issue 14: 503s, a wrong
     * Content-Type). A pinned slot is never replaced; a colliding lookup
     * resolves uncached instead. A new answer unpins everything at once. */
    uint64_t pin;
    size_t map;
    const char *coding; /* "", "br" or "gzip": part of the key */
    bool with_index;    /* part of the key */
    bool used;
    char key[FC_NAME];
    char rel[FC_NAME];
} fentry_t;

struct gw_static {
    smap_t *maps;
    size_t n;
    const gw_config_t *cfg;
    mime_t *mime; /* open addressing by extension */
    bool has_openat2;
    fentry_t *cache; /* FC_SLOTS, or NULL with --static-cache 0 */
    uint64_t cache_ms;
    uint64_t answer_id; /* counts answers; entries with this pin are in use */
    expire_t *expires; /* uri rules first, then file rules, in the order given */
    size_t nexpires;
    bool has_file_rules;
};

/* ---- MIME types ---- */

static const char *builtin_types[][2] = {
    {"html", "text/html"},        {"htm", "text/html"},        {"css", "text/css"},
    {"js", "text/javascript"},    {"mjs", "text/javascript"},  {"json", "application/json"},
    {"txt", "text/plain"},        {"xml", "application/xml"},  {"svg", "image/svg+xml"},
    {"png", "image/png"},         {"jpg", "image/jpeg"},       {"jpeg", "image/jpeg"},
    {"gif", "image/gif"},         {"webp", "image/webp"},      {"ico", "image/vnd.microsoft.icon"},
    {"avif", "image/avif"},       {"woff", "font/woff"},       {"woff2", "font/woff2"},
    {"ttf", "font/ttf"},          {"otf", "font/otf"},         {"pdf", "application/pdf"},
    {"zip", "application/zip"},   {"gz", "application/gzip"},  {"wasm", "application/wasm"},
    {"mp4", "video/mp4"},         {"webm", "video/webm"},      {"mp3", "audio/mpeg"},
    {"ogg", "audio/ogg"},         {"csv", "text/csv"},         {"md", "text/markdown"},
    {"map", "application/json"},  {"tar", "application/x-tar"},
};

static unsigned ext_hash(const char *e, size_t n)
{
    unsigned h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)tolower((unsigned char)e[i])) * 16777619u;
    return h;
}

static void mime_put(mime_t *t, const char *ext, const char *type)
{
    size_t n = strlen(ext);
    if (n == 0 || n >= sizeof(t->ext) || strlen(type) >= sizeof(t->type))
        return;
    for (unsigned i = ext_hash(ext, n) & (MIME_SLOTS - 1);; i = (i + 1) & (MIME_SLOTS - 1)) {
        if (!t[i].ext[0] || strcasecmp(t[i].ext, ext) == 0) {
            if (!t[i].ext[0]) /* the first listing of an extension wins */
                snprintf(t[i].type, sizeof(t[i].type), "%s", type);
            snprintf(t[i].ext, sizeof(t[i].ext), "%s", ext);
            return;
        }
    }
}

static const char *mime_get(const mime_t *t, const char *ext, size_t n)
{
    if (n == 0 || n >= sizeof(t->ext))
        return NULL;
    for (unsigned i = ext_hash(ext, n) & (MIME_SLOTS - 1);; i = (i + 1) & (MIME_SLOTS - 1)) {
        if (!t[i].ext[0])
            return NULL;
        if (strlen(t[i].ext) == n && strncasecmp(t[i].ext, ext, n) == 0)
            return t[i].type;
    }
}

/* Debian's media-types file, with the built-in table for what it lacks. */
static void mime_load(mime_t *t)
{
    FILE *f = fopen("/etc/mime.types", "re");
    char line[1024];
    size_t loaded = 0;

    while (f && fgets(line, sizeof(line), f)) {
        char *save, *type = strtok_r(line, " \t\r\n", &save), *ext;
        if (!type || type[0] == '#')
            continue;
        while ((ext = strtok_r(NULL, " \t\r\n", &save)) && loaded < MIME_SLOTS / 2) {
            mime_put(t, ext, type);
            loaded++;
        }
    }
    if (f)
        fclose(f);
    for (size_t i = 0; i < sizeof(builtin_types) / sizeof(builtin_types[0]); i++)
        if (!mime_get(t, builtin_types[i][0], strlen(builtin_types[i][0])))
            mime_put(t, builtin_types[i][0], builtin_types[i][1]);
}

/* ---- set-up ---- */

/* "3600", "1h", "1d": seconds; -1 when not a number or past
 * GW_CONFIG_SECONDS_MAX, like every time option (now + the value must still
 * be a date gmtime_r can write into Expires). */
static long long seconds_of(const char *v)
{
    char *end;
    unsigned long long n, mul;

    if (*v < '0' || *v > '9')
        return -1;
    errno = 0;
    n = strtoull(v, &end, 10);
    if (errno)
        return -1;
    if (!*end)
        mul = 1;
    else if (end[1])
        return -1;
    else if (!(mul = *end == 's' ? 1 : *end == 'm' ? 60 : *end == 'h' ? 3600
                                                       : *end == 'd' ? 86400 : 0))
        return -1;
    if (n > GW_CONFIG_SECONDS_MAX / mul)
        return -1;
    return (long long)(n * mul);
}

static int compile_expires(gw_static_t *s, char *err, size_t errlen)
{
    const gw_config_t *cfg = s->cfg;
    size_t n = cfg->static_expires.n + cfg->static_expires_uri.n;

    if (!n)
        return 0;
    if (!(s->expires = calloc(n, sizeof(expire_t)))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (size_t k = 0; k < n; k++) {
        bool is_uri = k < cfg->static_expires_uri.n;
        const char *v = is_uri ? cfg->static_expires_uri.v[k]
                               : cfg->static_expires.v[k - cfg->static_expires_uri.n];
        const char *sp = strrchr(v, ' ');
        expire_t *e = &s->expires[s->nexpires];
        long long secs = seconds_of(sp ? sp + 1 : v);
        char re[1024];
        int rc;

        if (secs < 0 || (is_uri && !sp)) {
            snprintf(err, errlen, "--static-expires%s wants %sSECONDS (at most %llu), got '%s'",
                     is_uri ? "-uri" : "", is_uri ? "REGEX " : "[REGEX] ",
                     (unsigned long long)GW_CONFIG_SECONDS_MAX, v);
            return -1;
        }
        e->is_uri = is_uri;
        e->seconds = (uint64_t)secs;
        if (sp) {
            size_t rl = (size_t)(sp - v);
            while (rl && v[rl - 1] == ' ')
                rl--;
            snprintf(re, sizeof(re), "%.*s", (int)rl, v);
            if ((rc = regcomp(&e->re, re, REG_EXTENDED | REG_NOSUB)) != 0) {
                char why[128];
                regerror(rc, &e->re, why, sizeof(why));
                snprintf(err, errlen, "--static-expires%s: bad regular expression '%s': %s",
                         is_uri ? "-uri" : "", re, why);
                return -1;
            }
            e->has_re = true;
            s->has_file_rules |= !is_uri;
        }
        s->nexpires++;
    }
    return 0;
}

/* The seconds a client may cache this answer: the first rule that matches
 * (request path rules first), 0 for none. */
static uint64_t expires_for(const gw_static_t *s, const smap_t *m, const char *path, size_t pn,
                            const sfile_t *f)
{
    char buf[4096 + 512];

    if (!s->nexpires)
        return 0;
    if (s->has_file_rules)
        snprintf(buf, sizeof(buf), "%s/%s", m->dir, f->rel);
    for (size_t i = 0; i < s->nexpires; i++) {
        const expire_t *e = &s->expires[i];
        if (!e->has_re)
            return e->seconds;
        if (e->is_uri) {
            char uri[4096];
            snprintf(uri, sizeof(uri), "%.*s", (int)pn, path);
            if (regexec(&e->re, uri, 0, NULL, 0) == 0)
                return e->seconds;
        } else if (regexec(&e->re, buf, 0, NULL, 0) == 0) {
            return e->seconds;
        }
    }
    return 0;
}

gw_static_t *gw_static_new(const gw_config_t *cfg, char *err, size_t errlen)
{
    gw_static_t *s;
    struct open_how how = {.flags = O_PATH | O_CLOEXEC, .resolve = RESOLVE_BENEATH};

    err[0] = '\0';
    if (!cfg->static_map.n)
        return NULL;
    if (!(s = calloc(1, sizeof(*s))) || !(s->maps = calloc(cfg->static_map.n, sizeof(smap_t))) ||
        !(s->mime = calloc(MIME_SLOTS, sizeof(mime_t)))) {
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
    /* openat2 (Linux 5.6) resolves beneath the root in the kernel; without
     * it, a component-by-component walk that refuses every symlink. */
    {
        int fd = (int)syscall(SYS_openat2, s->maps[0].dirfd, ".", &how, sizeof(how));
        s->has_openat2 = fd >= 0 || errno != ENOSYS;
        if (fd >= 0)
            close(fd);
    }
    mime_load(s->mime);
    if (compile_expires(s, err, errlen) < 0)
        goto fail;
    if (cfg->static_cache) {
        if (!(s->cache = calloc(FC_SLOTS, sizeof(fentry_t)))) {
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
    for (size_t i = 0; s->cache && i < FC_SLOTS; i++)
        if (s->cache[i].used && s->cache[i].f.fd >= 0)
            close(s->cache[i].f.fd);
    free(s->cache);
    for (size_t i = 0; i < s->nexpires; i++)
        if (s->expires[i].has_re)
            regfree(&s->expires[i].re);
    free(s->expires);
    free(s->maps);
    free(s->mime);
    free(s);
}

/* ---- request helpers ---- */

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Decodes the path once (unless it came decoded: a gateway's PATH_INFO)
 * and checks every segment: no NUL, no backslash, no
 * "." or ".." segment, no dot-file unless allowed. Writes the relative path
 * (no leading slash) to out. Returns 0, or -1 for a path never served. */
static int clean_path(const char *p, size_t n, bool is_decoded, bool dotfiles, char *out,
                      size_t outlen)
{
    size_t o = 0, seg = 0;

    for (size_t i = 0; i <= n; i++) {
        int c;
        if (i == n) {
            c = '/';
        } else if (p[i] == '%' && !is_decoded) {
            int hi, lo;
            if (i + 2 >= n || (hi = hexval((unsigned char)p[i + 1])) < 0 ||
                (lo = hexval((unsigned char)p[i + 2])) < 0)
                return -1;
            c = hi << 4 | lo;
            i += 2;
            if (c == '/')
                return -1; /* an encoded slash never separates segments here */
        } else {
            c = (unsigned char)p[i];
        }
        if (c == 0 || c == '\\')
            return -1;
        if (c == '/') {
            size_t len = o - seg;
            if (len == 0) /* "//" or the leading slash */
                continue;
            if ((len == 1 && out[seg] == '.') || (len == 2 && out[seg] == '.' && out[seg + 1] == '.'))
                return -1;
            if (out[seg] == '.' && !dotfiles)
                return -1;
            if (o + 1 >= outlen)
                return -1;
            out[o++] = '/';
            seg = o;
            continue;
        }
        if (o + 1 >= outlen)
            return -1;
        out[o++] = (char)c;
    }
    if (o > 0 && out[o - 1] == '/')
        o--;
    out[o] = '\0';
    return 0;
}

/* Opens rel beneath dirfd as O_PATH: no "..", no absolute path, and no
 * symlink that leaves the directory (openat2), or none at all (the walk). */
static int open_beneath(const gw_static_t *s, int dirfd, const char *rel)
{
    char buf[4096];
    char *save, *seg, *next;
    int fd, cur;

    if (!rel[0])
        return fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
    if (s->has_openat2) {
        struct open_how how = {.flags = O_PATH | O_CLOEXEC,
                               .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS};
        return (int)syscall(SYS_openat2, dirfd, rel, &how, sizeof(how));
    }
    snprintf(buf, sizeof(buf), "%s", rel);
    cur = dirfd;
    for (seg = strtok_r(buf, "/", &save); seg; seg = next) {
        next = strtok_r(NULL, "/", &save);
        fd = openat(cur, seg, O_PATH | O_NOFOLLOW | O_CLOEXEC | (next ? O_DIRECTORY : 0));
        if (cur != dirfd)
            close(cur);
        if (fd < 0)
            return -1;
        cur = fd;
    }
    return cur == dirfd ? -1 : cur;
}

/* From an O_PATH handle of a regular file to one that reads. */
static int reopen_read(int pathfd)
{
    char proc[64];
    snprintf(proc, sizeof(proc), "/proc/self/fd/%d", pathfd);
    return open(proc, O_RDONLY | O_CLOEXEC | O_NOCTTY);
}

static bool accepts(const char *v, size_t vn, const char *coding)
{
    size_t cl = strlen(coding);
    for (size_t i = 0; i + cl <= vn; i++) {
        if (strncasecmp(v + i, coding, cl) == 0 && (i == 0 || v[i - 1] == ' ' || v[i - 1] == ',') &&
            (i + cl == vn || v[i + cl] == ',' || v[i + cl] == ';' || v[i + cl] == ' ')) {
            /* "br;q=0" (OWS allowed around ';' and '=') turns a coding off
             * (RFC 9110 12.4.2) */
            char q[16] = "";
            size_t j = i + cl, k = 0;
            while (j < vn && (v[j] == ' ' || v[j] == '\t'))
                j++;
            if (j >= vn || v[j] != ';')
                return true;
            for (j++; j < vn && (v[j] == ' ' || v[j] == '\t'); j++)
                ;
            if (j >= vn || (v[j] | 0x20) != 'q')
                return true;
            for (j++; j < vn && (v[j] == ' ' || v[j] == '\t'); j++)
                ;
            if (j >= vn || v[j] != '=')
                return true;
            for (j++; j < vn && (v[j] == ' ' || v[j] == '\t'); j++)
                ;
            for (; j < vn && k < sizeof(q) - 1 && v[j] != ',' && v[j] != ' '; j++)
                q[k++] = v[j];
            q[k] = '\0';
            return strtod(q, NULL) > 0;
        }
    }
    return false;
}

static bool etag_matches(const char *v, size_t vn, const char *etag)
{
    size_t el = strlen(etag);
    if (vn == 1 && v[0] == '*')
        return true;
    for (size_t i = 0; i + el <= vn; i++)
        if (memcmp(v + i, etag, el) == 0)
            return true;
    /* a weak validator of ours compares equal too (RFC 9110 13.1.2) */
    return false;
}

static time_t parse_http_date(const char *v, size_t vn)
{
    char buf[64];
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    if (vn >= sizeof(buf))
        return -1;
    memcpy(buf, v, vn);
    buf[vn] = '\0';
    /* IMF-fixdate, and the obsolete RFC 850 and asctime forms a recipient
     * must still accept (RFC 9110 5.6.7). */
    if (!strptime(buf, "%a, %d %b %Y %H:%M:%S GMT", &tm) &&
        !strptime(buf, "%A, %d-%b-%y %H:%M:%S GMT", &tm) &&
        !strptime(buf, "%a %b %e %H:%M:%S %Y", &tm))
        return -1;
    return timegm(&tm);
}

static void http_date(time_t t, char *out, size_t n)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, n, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

/* "bytes=a-b" | "bytes=a-" | "bytes=-n", one range only. Returns 1 with the
 * range, 0 to ignore the header (several ranges, other units, syntax), -1
 * when it cannot be satisfied. */
static int parse_range(const char *v, size_t vn, uint64_t size, uint64_t *start, uint64_t *end)
{
    char buf[128], *p, *dash, *e1, *e2;
    unsigned long long a, b;

    if (vn < 7 || vn >= sizeof(buf) || strncasecmp(v, "bytes=", 6) != 0)
        return 0;
    memcpy(buf, v + 6, vn - 6);
    buf[vn - 6] = '\0';
    if (strchr(buf, ','))
        return 0; /* several ranges: the whole file, 200 (documented) */
    for (p = buf; *p == ' '; p++)
        ;
    if (!(dash = strchr(p, '-')))
        return 0;
    *dash = '\0';
    if (!*p) { /* suffix: the last n bytes */
        errno = 0;
        b = strtoull(dash + 1, &e2, 10);
        if (errno || *e2 || !isdigit((unsigned char)dash[1]))
            return 0; /* strtoull would take "-5", "+5", " 5" */
        if (b == 0 || size == 0)
            return -1;
        *start = b >= size ? 0 : size - b;
        *end = size - 1;
        return 1;
    }
    errno = 0;
    a = strtoull(p, &e1, 10);
    if (errno || *e1 || !isdigit((unsigned char)*p))
        return 0;
    if (!dash[1]) {
        b = size ? size - 1 : 0;
    } else {
        b = strtoull(dash + 1, &e2, 10);
        if (errno || *e2 || !isdigit((unsigned char)dash[1]) || b < a)
            return 0;
    }
    if (a >= size)
        return -1;
    *start = a;
    *end = b >= size ? size - 1 : b;
    return 1;
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

/* Resolves rel (a buffer of relcap bytes; an index is appended to it for a
 * directory when with_index) beneath m to a regular file opened for
 * reading, filling f. Special files are only ever opened O_PATH. 0, -1
 * (nothing servable), or -ENAMETOOLONG (rel cannot take the index). */
static int resolve(const gw_static_t *s, const smap_t *m, char *rel, size_t relcap,
                   bool with_index, const char *coding, sfile_t *f)
{
    const gw_config_t *cfg = s->cfg;
    const char *dot, *type;
    int pfd = open_beneath(s, m->dirfd, rel);

    if (pfd < 0 || fstat(pfd, &f->st) < 0)
        goto fail;
    if (S_ISDIR(f->st.st_mode)) {
        size_t n = strlen(rel);
        if (!with_index || !cfg->static_index || strchr(cfg->static_index, '/'))
            goto fail; /* no listings */
        if (n + 1 + strlen(cfg->static_index) + 1 > relcap) {
            close(pfd);
            return -ENAMETOOLONG;
        }
        /* Beneath the mapped directory, not the subdirectory: an index that
         * is a symlink elsewhere inside DIR works like any other file. */
        snprintf(rel + n, relcap - n, "%s%s", n ? "/" : "", cfg->static_index);
        close(pfd);
        pfd = open_beneath(s, m->dirfd, rel);
        if (pfd < 0 || fstat(pfd, &f->st) < 0)
            goto fail;
    }
    if (!S_ISREG(f->st.st_mode))
        goto fail; /* FIFOs, devices, sockets are never opened for reading */
    f->fd = reopen_read(pfd);
    close(pfd);
    if (f->fd < 0)
        return -1;
    f->rel = rel;
    dot = strrchr(rel, '.');
    type = dot && !strchr(dot, '/') ? mime_get(s->mime, dot + 1, strlen(dot + 1)) : NULL;
    if (!type)
        type = "application/octet-stream";
    if (strncmp(type, "text/", 5) == 0 || strcmp(type, "application/json") == 0 ||
        strcmp(type, "application/javascript") == 0 || strcmp(type, "image/svg+xml") == 0)
        snprintf(f->type, sizeof(f->type), "%s; charset=utf-8", type);
    else
        snprintf(f->type, sizeof(f->type), "%s", type);
    snprintf(f->etag, sizeof(f->etag), "\"%llx-%llx-%llx%s%s\"",
             (unsigned long long)f->st.st_ino, (unsigned long long)f->st.st_size,
             (unsigned long long)f->st.st_mtim.tv_sec * 1000000000ULL +
                 (unsigned long long)f->st.st_mtim.tv_nsec,
             *coding ? "-" : "", coding);
    http_date(f->st.st_mtim.tv_sec, f->lm, sizeof(f->lm));
    return 0;
fail:
    if (pfd >= 0)
        close(pfd);
    return -1;
}

/* rel resolved beneath m, from the cache while its entry is younger than
 * --static-cache, else resolved now. NULL when there is nothing to serve.
 * *owned: the file is tmp and its descriptor the caller's to close. A file
 * from the cache is pinned: it stays as it is, whatever later lookups of the
 * same answer do, until the next gw_static_answer(). */
static const sfile_t *get_file(gw_static_t *s, const smap_t *m, char *rel, size_t relcap,
                               bool with_index, const char *coding, sfile_t *tmp, bool *owned)
{
    size_t kl = strlen(rel), mi = (size_t)(m - s->maps);
    uint64_t now = gw_clock_ms(), h = 1469598103934665603ULL ^ mi;
    fentry_t *e;

    *owned = false;
    if (s->cache && kl < FC_NAME) {
        for (size_t i = 0; i < kl; i++)
            h = (h ^ (unsigned char)rel[i]) * 1099511628211ULL;
        e = &s->cache[(h ^ (h >> 32)) & (FC_SLOTS - 1)];
        if (e->used && e->map == mi && e->coding == coding && e->with_index == with_index &&
            now - e->checked_ms < s->cache_ms && strcmp(e->key, rel) == 0) {
            if (e->f.fd < 0)
                return NULL;
            e->pin = s->answer_id;
            return &e->f;
        }
        if (e->pin == s->answer_id)
            goto uncached; /* this answer serves from it: leave it be */
        if (e->used && e->f.fd >= 0)
            close(e->f.fd);
        e->used = false;
        memcpy(e->rel, rel, kl + 1);
        int rc = resolve(s, m, e->rel, sizeof(e->rel), with_index, coding, &e->f);
        if (rc != -ENAMETOOLONG) {
            if (rc < 0)
                e->f.fd = -1;
            memcpy(e->key, rel, kl + 1);
            e->map = mi;
            e->coding = coding;
            e->with_index = with_index;
            e->checked_ms = now;
            e->used = true;
            if (e->f.fd < 0)
                return NULL;
            e->pin = s->answer_id;
            return &e->f;
        }
    }
uncached:
    if (resolve(s, m, rel, relcap, with_index, coding, tmp) < 0)
        return NULL;
    *owned = true;
    return tmp;
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
    if (clean_path(path + m->plen, pn - m->plen, r->is_path_decoded, cfg->static_dotfiles, rel,
                   sizeof(rel)) < 0)
        goto not_found;
    if (!(f = get_file(s, m, rel, sizeof(rel), true, "", &tmp, &owned)))
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
                if (!accepts(v, vn, codings[i][0]))
                    continue;
                /* Beside the file the name resolved to (an index too). */
                snprintf(var, sizeof(var), "%s%s", f->rel, codings[i][1]);
                if (!(vf = get_file(s, m, var, sizeof(var), false, codings[i][0], &vtmp,
                                    &owned)))
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
        uint64_t expires = expires_for(s, m, path, pn, asked);
        if (expires) {
            char ex[64];
            http_date(time(NULL) + (time_t)expires, ex, sizeof(ex));
            add(&an, "Cache-Control", fmt(&r->arena, "max-age=%llu", (unsigned long long)expires));
            add(&an, "Expires", gw_arena_dup(&r->arena, ex, strlen(ex)));
        }
        /* RFC 9110 13.2.2: If-None-Match first; If-Modified-Since only without it. */
        if (gw_req_header(r, rb, "if-none-match", &v, &vn)) {
            not_modified = etag_matches(v, vn, f->etag);
        } else if (gw_req_header(r, rb, "if-modified-since", &v, &vn)) {
            time_t ims = parse_http_date(v, vn);
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
                    use = parse_http_date(ir, irn) == f->st.st_mtim.tv_sec;
            }
            if (use) {
                rc = parse_range(v, vn, size, &start, &end);
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
