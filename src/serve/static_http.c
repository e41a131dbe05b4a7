/* The HTTP rules of static files: the MIME table, the --static-expires
 * rules, Accept-Encoding, the validators' comparisons and dates, and the
 * Range header. Part of the static-file module (serve/static_priv.h). */
#include "serve/static_priv.h"

#include <ctype.h>
#include <errno.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define MIME_SLOTS 4096 /* a power of two, over twice the types Debian lists */

struct mime {
    char ext[16];
    char type[80];
};

/* --static-expires / --static-expires-uri: how long a client may cache. */
struct expire {
    bool is_uri;     /* matched against the request path, else the file path */
    bool has_re;     /* false: every file */
    regex_t re;
    uint64_t seconds;
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

mime_t *gw__static_mime_new(void)
{
    return calloc(MIME_SLOTS, sizeof(mime_t));
}

/* Debian's media-types file, with the built-in table for what it lacks. */
void gw__static_mime_load(mime_t *t)
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

/* Formatted once, when the file is resolved: a cached file keeps them. */
void gw__static_describe(const gw_static_t *s, sfile_t *f, const char *coding)
{
    const char *dot, *type;

    dot = strrchr(f->rel, '.');
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
    gw__static_http_date(f->st.st_mtim.tv_sec, f->lm, sizeof(f->lm));
}

/* ---- --static-expires ---- */

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

int gw__static_expires_compile(gw_static_t *s, char *err, size_t errlen)
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

void gw__static_expires_free(gw_static_t *s)
{
    for (size_t i = 0; i < s->nexpires; i++)
        if (s->expires[i].has_re)
            regfree(&s->expires[i].re);
    free(s->expires);
}

/* The seconds a client may cache this answer: the first rule that matches
 * (request path rules first), 0 for none. */
uint64_t gw__static_expires_for(const gw_static_t *s, const smap_t *m, const char *path,
                                size_t pn, const sfile_t *f)
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

/* ---- the request's headers: Accept-Encoding, validators, Range ---- */

bool gw__static_accepts(const char *v, size_t vn, const char *coding)
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

bool gw__static_etag_matches(const char *v, size_t vn, const char *etag)
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

time_t gw__static_parse_http_date(const char *v, size_t vn)
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

void gw__static_http_date(time_t t, char *out, size_t n)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, n, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

/* "bytes=a-b" | "bytes=a-" | "bytes=-n", one range only. Returns 1 with the
 * range, 0 to ignore the header (several ranges, other units, syntax), -1
 * when it cannot be satisfied. */
int gw__static_parse_range(const char *v, size_t vn, uint64_t size, uint64_t *start,
                           uint64_t *end)
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
