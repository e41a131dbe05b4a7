/* libFuzzer target for the static-file module: the request headers it reads
 * (Range, If-None-Match, If-Modified-Since, If-Range, Accept-Encoding), path
 * cleaning, resolution beneath a mapped directory, and whole answers, against
 * a small tree made once at start-up under a mkdtemp directory (files, a
 * subdirectory, dot-files, precompressed variants, symlinks that stay inside
 * and symlinks that lead out, FIFOs, a socket). No sockets served, no Python.
 *
 * Input: byte 0 picks the sub-target, (byte - '0') % 7, so that a seed can
 * start with an ASCII digit.
 *   0 parse_range      the rest is a Range value, tried against many sizes
 *   1 etag_matches     the rest is an If-None-Match value, against our ETags
 *   2 parse_http_date  the rest is a date; its first 8 bytes are also a time
 *   3 accepts          the rest is an Accept-Encoding value; the same bytes
 *                      also build a well-formed list
 *   4 clean_path       byte 1 is flags (FL_*), the rest a path
 *   5 open_beneath     byte 1 is flags, the rest a path (cleaned first, and
 *                      also given raw to openat2)
 *   6 gw_static_answer byte 1 is flags, then "METHOD PATH\nName: value\n...";
 *                      in a value, $E is replaced by the file's ETag, $D by
 *                      its Last-Modified, $d / $n by a second before / after,
 *                      $R / $A by Last-Modified in the RFC 850 / asctime forms
 *
 * Besides the sanitizers, it aborts when
 *   - parse_range disagrees with the grammar of one byte range (RFC 9110
 *     14.1.1: "bytes=" first "-" [last] or "-" suffix, digits only, each
 *     within 64 bits) or a range it returns is not start <= end < size;
 *   - etag_matches disagrees, on a well-formed If-None-Match ("*" or a list
 *     of entity-tags), with the weak comparison of RFC 9110 13.1.2;
 *   - parse_http_date misreads a date in one of the three forms of RFC 9110
 *     5.6.7, or a date it parses does not come back the same through
 *     http_date and parse_http_date;
 *   - accepts disagrees with a well-formed Accept-Encoding list, or says yes
 *     to a coding that is not a token of the value;
 *   - clean_path's output holds "//", a leading or trailing "/", an empty,
 *     "." or ".." segment, a backslash or a NUL, a dot-file segment while
 *     dot-files are off, or differs from a reference decoder; or cleaning is
 *     not idempotent, or the encoded and the decoded forms of a path clean
 *     differently;
 *   - open_beneath opens anything whose /proc/self/fd link is not the mapped
 *     directory or beneath it, a dot-file while dot-files are off, or
 *     anything through a symlink in the no-openat2 walk; or the walk and
 *     openat2 open different files;
 *   - gw_static_answer answers with a status, head or body that breaks the
 *     rules of RFC 9110 13.2.2 (If-None-Match, then If-Modified-Since, then
 *     If-Range and Range), or sends a file from outside its map, a
 *     non-regular file, a dot-file while dot-files are off, or a body that
 *     does not match Content-Length / Content-Range; or the same request over
 *     HTTP and over uwsgi gets a different status;
 *   - the same request answered through the open-file cache (--static-cache,
 *     built here with FC_SLOTS 2 so that a file and its .br / .gz variants
 *     collide often), cold and then warm, differs from the answer without it
 *     in status, ETag (so coding), Last-Modified or Content-Type: a lookup
 *     must never disturb the entry an answer is being built from (issue 14);
 *   - a descriptor into the tree outlives its input, or one that
 *     gw_static_new / gw_static_free opened survives them. Opening a FIFO
 *     for reading would block: libFuzzer's -timeout reports that. */
#define FC_SLOTS 2 /* a tiny direct-mapped cache: lookups evict each other */
/* The module's four files, as source: their file-static helpers (hexval,
 * open_beneath) and private structs are reachable; the sub-targets above
 * name the gw__static_ functions without their prefix. */
#include "serve/static.c"
#include "serve/static_cache.c"
#include "serve/static_http.c"
#include "serve/static_path.c"

#include <dirent.h>
#include <ftw.h>
#include <limits.h>
#include <sys/socket.h>
#include <sys/un.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        fprintf(stderr, "static_fuzz: " __VA_ARGS__);                                              \
        fprintf(stderr, "\n");                                                                     \
        abort();                                                                                   \
    } while (0)

/* -DGW_STATIC_FUZZ_TRACE prints each answer's status (to check what seeds reach). */
#ifdef GW_STATIC_FUZZ_TRACE
#define TRACE(...) fprintf(stderr, __VA_ARGS__)
#else
#define TRACE(...) ((void)0)
#endif

/* byte 1 of sub-targets 4, 5 and 6 */
enum {
    FL_DECODED = 0x01,  /* the path comes decoded (uwsgi); 6: the request is uwsgi */
    FL_DOTFILES = 0x02, /* --static-dotfiles */
    FL_GZIP = 0x04,     /* 6: --static-gzip */
    FL_INDEX = 0x08,    /* 6: --static-index index.html */
    FL_FALL = 0x10,     /* 6: --static-fallthrough */
    FL_WALK = 0x20,     /* 6: resolve without openat2 */
    FL_EXPIRES = 0x40,  /* 6: --static-expires 3600 */
    FL_HTTP10 = 0x80,   /* 6: HTTP/1.0, no keep-alive */
};
/* sub-target 4: bits 2-7 of byte 1, when not zero, make the output buffer
 * that small, so that every "out of room" path runs. */

static char tmp_dir[PATH_MAX];  /* the mkdtemp directory, resolved */
static char root_dir[PATH_MAX]; /* tmp_dir/root: the "/s" map */
static char sub_dir[PATH_MAX];  /* root/sub: the "/" map */
static gw_config_t cfg;
static const char *maps[2];
static gw_static_t *statics;      /* maps[0] is root_dir, maps[1] sub_dir */
static gw_static_t *cached;       /* the same maps with --static-cache; emptied after each input */
static gw_static_t s_at2, s_walk; /* copies that resolve one way each */
static bool kernel_has_openat2;
static gw_arena_pool_t arena_pool;
static gw_bufpool_t body_pool;
static gw_body_env_t body_env = {&body_pool, 4096, "/tmp"};

/* ------------------------------------------------------------------ helpers */

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Digits only, within 64 bits. */
static bool ref_u64(const char *p, size_t n, uint64_t *v)
{
    uint64_t x = 0;
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!is_digit(p[i]))
            return false;
        if (x > (UINT64_MAX - (uint64_t)(p[i] - '0')) / 10)
            return false;
        x = x * 10 + (uint64_t)(p[i] - '0');
    }
    *v = x;
    return true;
}

static int64_t days_from_civil(int64_t y, int64_t m, int64_t d)
{
    /* proleptic Gregorian; d past the month's end runs on into the next */
    int64_t era, yoe, doy, doe;
    y -= m <= 2;
    era = (y >= 0 ? y : y - 399) / 400;
    yoe = y - era * 400;
    doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* ------------------------------------------------------------------ 0: Range */

/* The reference: 1 with the range, 0 to ignore the header, -1 for 416. */
static int ref_range(const char *v, size_t vn, uint64_t size, uint64_t *start, uint64_t *end)
{
    const char *p, *dash, *e = v + vn;
    uint64_t a, b;

    /* static_http.c copies the value into 128 bytes: longer ones are ignored */
    if (vn < 7 || vn >= 128 || strncasecmp(v, "bytes=", 6) != 0)
        return 0;
    if (memchr(v + 6, ',', vn - 6))
        return 0; /* several ranges: the whole file (documented) */
    for (p = v + 6; p < e && *p == ' '; p++)
        ;
    if (!(dash = memchr(p, '-', (size_t)(e - p))))
        return 0;
    if (dash == p) {
        if (!ref_u64(dash + 1, (size_t)(e - dash - 1), &b))
            return 0;
        if (b == 0 || size == 0)
            return -1;
        *start = b >= size ? 0 : size - b;
        *end = size - 1;
        return 1;
    }
    if (!ref_u64(p, (size_t)(dash - p), &a))
        return 0;
    if (dash + 1 == e) {
        b = UINT64_MAX;
    } else if (!ref_u64(dash + 1, (size_t)(e - dash - 1), &b) || b < a) {
        return 0;
    }
    if (a >= size)
        return -1;
    *start = a;
    *end = b >= size ? size - 1 : b;
    return 1;
}

static void fuzz_range(const char *v, size_t vn)
{
    static const uint64_t small[] = {0, 1, 2, 9, 10, 11, 100, 1000, 100000};
    static const int bits[] = {31, 32, 53, 63};
    uint64_t sizes[32];
    size_t ns = 0;
    char *copy = malloc(vn ? vn : 1); /* exact size: ASan sees any read past it */

    for (size_t i = 0; i < sizeof(small) / sizeof(small[0]); i++)
        sizes[ns++] = small[i];
    for (size_t i = 0; i < sizeof(bits) / sizeof(bits[0]); i++) {
        sizes[ns++] = (1ULL << bits[i]) - 1;
        sizes[ns++] = 1ULL << bits[i];
        sizes[ns++] = (1ULL << bits[i]) + 5;
    }
    sizes[ns++] = UINT64_MAX - 1;
    sizes[ns++] = UINT64_MAX;
    if (!copy)
        FAIL("out of memory");
    memcpy(copy, v, vn);
    for (size_t i = 0; i < ns; i++) {
        uint64_t size = sizes[i], s = 0xdead, e = 0xbeef, rs = 0, re = 0;
        int rc = gw__static_parse_range(copy, vn, size, &s, &e);
        int want = ref_range(copy, vn, size, &rs, &re);

        /* No header value holds a NUL (http1.c and nginx refuse it), and
         * static_http.c's copy ends there: only the invariants apply then. */
        bool has_nul = memchr(copy, '\0', vn) != NULL;

        if (!has_nul && rc != want)
            FAIL("parse_range(\"%.*s\", size %llu) = %d, the grammar says %d", (int)vn, copy,
                 (unsigned long long)size, rc, want);
        if (!has_nul && rc == 1 && (s != rs || e != re))
            FAIL("parse_range(\"%.*s\", size %llu) = %llu-%llu, want %llu-%llu", (int)vn, copy,
                 (unsigned long long)size, (unsigned long long)s, (unsigned long long)e,
                 (unsigned long long)rs, (unsigned long long)re);
        if (rc == 1 && !(s <= e && e < size))
            FAIL("parse_range(\"%.*s\", size %llu) = %llu-%llu, outside the file", (int)vn, copy,
                 (unsigned long long)size, (unsigned long long)s, (unsigned long long)e);
        if (rc != 1 && (s != 0xdead || e != 0xbeef))
            FAIL("parse_range returned %d and wrote a range", rc);
    }
    free(copy);
}

/* ------------------------------------------------------------------ 1: If-None-Match */

/* 1 when v is a well-formed If-None-Match: "*", or a list of entity-tags
 * (RFC 9110 8.8.3) with OWS and the empty elements a recipient must skip
 * (5.6.1). *match: one of them is etag by the weak comparison. */
static bool ref_inm(const char *v, size_t n, const char *etag, bool *match)
{
    size_t i = 0, el = strlen(etag);
    bool any = false;

    *match = false;
    if (n == 1 && v[0] == '*') {
        *match = true;
        return true;
    }
    for (;;) {
        size_t q;
        while (i < n && (v[i] == ' ' || v[i] == '\t'))
            i++;
        if (i < n && v[i] == ',') {
            i++;
            continue;
        }
        if (i >= n)
            break;
        if (n - i >= 2 && v[i] == 'W' && v[i + 1] == '/')
            i += 2;
        if (i >= n || v[i] != '"')
            return false;
        q = i++;
        for (; i < n && v[i] != '"'; i++)
            if ((unsigned char)v[i] < 0x21 || v[i] == 0x7f)
                return false;
        if (i++ >= n)
            return false;
        if (i - q == el && memcmp(v + q, etag, el) == 0)
            *match = true;
        any = true;
        while (i < n && (v[i] == ' ' || v[i] == '\t'))
            i++;
        if (i < n && v[i] != ',')
            return false;
    }
    return any;
}

static void fuzz_etag(const char *v, size_t vn)
{
    /* as static_http.c formats them: inode-size-mtime_ns[-coding], hex, quoted */
    static const char *etags[] = {"\"1a2b-64-17a5e3c0d1f0e200\"", "\"1a2b-64-17a5e3c0d1f0e200-br\"",
                                  "\"1a2b-64-17a5e3c0d1f0e200-gzip\"", "\"0-0-0\"",
                                  "\"2-186a0-0\""};
    char *copy = malloc(vn ? vn : 1);

    if (!copy)
        FAIL("out of memory");
    memcpy(copy, v, vn);
    for (size_t i = 0; i < sizeof(etags) / sizeof(etags[0]); i++) {
        bool got = gw__static_etag_matches(copy, vn, etags[i]), want;
        if (vn == 1 && copy[0] == '*' && !got)
            FAIL("If-None-Match: * does not match %s", etags[i]);
        if (ref_inm(copy, vn, etags[i], &want) && got != want)
            FAIL("etag_matches(\"%.*s\", %s) = %d, the list says %d", (int)vn, copy, etags[i], got,
                 want);
        if (got && !(vn == 1 && copy[0] == '*') && !memmem(copy, vn, etags[i], strlen(etags[i])))
            FAIL("etag_matches(\"%.*s\", %s): a match that is not there", (int)vn, copy, etags[i]);
    }
    free(copy);
}

/* ------------------------------------------------------------------ 2: dates */

static const char *const day3[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
static const char *const dayl[] = {"Sunday",   "Monday", "Tuesday", "Wednesday",
                                   "Thursday", "Friday", "Saturday"};
static const char *const mon3[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

typedef struct cur {
    const char *p, *e;
} cur_t;

static bool lit(cur_t *c, const char *s)
{
    size_t n = strlen(s);
    if ((size_t)(c->e - c->p) < n || memcmp(c->p, s, n) != 0)
        return false;
    c->p += n;
    return true;
}

static bool num(cur_t *c, int digits, int lo, int hi, int *v)
{
    int x = 0;
    if (c->e - c->p < digits)
        return false;
    for (int i = 0; i < digits; i++) {
        if (!is_digit(c->p[i]))
            return false;
        x = x * 10 + (c->p[i] - '0');
    }
    if (x < lo || x > hi)
        return false;
    c->p += digits;
    *v = x;
    return true;
}

static bool word(cur_t *c, const char *const *t, int n, int *v)
{
    for (int i = 0; i < n; i++)
        if (lit(c, t[i])) {
            *v = i;
            return true;
        }
    return false;
}

static bool tod(cur_t *c, int *h, int *m, int *s)
{
    return num(c, 2, 0, 23, h) && lit(c, ":") && num(c, 2, 0, 59, m) && lit(c, ":") &&
           num(c, 2, 0, 60, s);
}

/* The three HTTP-date forms, exactly as RFC 9110 5.6.7 spells them (case
 * and all; the day name is not checked against the date, as static_http.c
 * does not). Two-digit years follow glibc's strptime: 69-99 are 19xx, 00-68
 * are 20xx. Returns 1 with the time when v is one of them. */
static bool ref_date(const char *v, size_t n, int64_t *t)
{
    int wd, d, mo, y, h, mi, s;
    cur_t c = {v, v + n};

    if (word(&c, day3, 7, &wd) && lit(&c, ", ") && num(&c, 2, 1, 31, &d) && lit(&c, " ") &&
        word(&c, mon3, 12, &mo) && lit(&c, " ") && num(&c, 4, 0, 9999, &y) && lit(&c, " ") &&
        tod(&c, &h, &mi, &s) && lit(&c, " GMT") && c.p == c.e)
        goto ok;
    c.p = v;
    if (word(&c, dayl, 7, &wd) && lit(&c, ", ") && num(&c, 2, 1, 31, &d) && lit(&c, "-") &&
        word(&c, mon3, 12, &mo) && lit(&c, "-") && num(&c, 2, 0, 99, &y) && lit(&c, " ") &&
        tod(&c, &h, &mi, &s) && lit(&c, " GMT") && c.p == c.e) {
        y += y < 69 ? 2000 : 1900;
        goto ok;
    }
    c.p = v;
    if (word(&c, day3, 7, &wd) && lit(&c, " ") && word(&c, mon3, 12, &mo) && lit(&c, " ") &&
        (lit(&c, " ") ? num(&c, 1, 1, 9, &d) : num(&c, 2, 10, 31, &d)) && lit(&c, " ") &&
        tod(&c, &h, &mi, &s) && lit(&c, " ") && num(&c, 4, 0, 9999, &y) && c.p == c.e)
        goto ok;
    return false;
ok:
    *t = days_from_civil(y, mo + 1, d) * 86400 + h * 3600 + mi * 60 + s;
    return true;
}

#define MAX_DATE 253402300799LL /* Fri, 31 Dec 9999 23:59:59 GMT */
#define MIN_DATE -62135596800LL /* Mon, 01 Jan 0001 00:00:00 GMT */

/* t through http_date and back; an IMF-fixdate for four-digit years. */
static void check_round_trip(time_t t, const char *from)
{
    char s[64];
    int64_t rt;
    time_t back;

    if (t < MIN_DATE || t > MAX_DATE)
        return; /* year 10000 or 0 and earlier: strftime writes more or fewer digits */
    memset(s, 0, sizeof(s));
    gw__static_http_date(t, s, sizeof(s));
    back = gw__static_parse_http_date(s, strlen(s));
    if (back != t)
        FAIL("%lld (from \"%s\") formats as \"%s\", which parses as %lld", (long long)t, from, s,
             (long long)back);
    if (t >= -30610224000LL) { /* year 1000 on: four digits */
        if (!ref_date(s, strlen(s), &rt) || rt != t || strlen(s) != GW_HTTP_DATE_LEN ||
            strncmp(s + 26, "GMT", 3) != 0)
            FAIL("http_date(%lld) = \"%s\", not the IMF-fixdate of that time", (long long)t, s);
    }
}

static void fuzz_date(const char *v, size_t vn)
{
    char *copy = malloc(vn ? vn : 1), s[128];
    time_t t;
    int64_t want;

    if (!copy)
        FAIL("out of memory");
    memcpy(copy, v, vn);
    t = gw__static_parse_http_date(copy, vn);
    if (ref_date(copy, vn, &want) && want != -1 && t != want)
        FAIL("parse_http_date(\"%.*s\") = %lld, want %lld", (int)vn, copy, (long long)t,
             (long long)want);
    if (t != -1 && !memchr(copy, '\0', vn))
        check_round_trip(t, copy);

    /* The first 8 bytes as a time, written in each form and read back. */
    if (vn >= 8) {
        uint64_t raw;
        struct tm tm;
        memcpy(&raw, v, 8);
        t = (time_t)(MIN_DATE + (int64_t)(raw % (uint64_t)(MAX_DATE - MIN_DATE + 1)));
        if (!gmtime_r(&t, &tm))
            FAIL("gmtime_r(%lld)", (long long)t);
        check_round_trip(t, "raw bytes");
        snprintf(s, sizeof(s), "%s %s %2d %02d:%02d:%02d %d", day3[tm.tm_wday], mon3[tm.tm_mon],
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, tm.tm_year + 1900);
        if (gw__static_parse_http_date(s, strlen(s)) != t)
            FAIL("asctime date \"%s\" is not %lld", s, (long long)t);
        /* RFC 850's two-digit years: glibc reads 69-99 as 19xx, which RFC
         * 9110 would read as 20xx for 69-76 (less than 50 years ahead);
         * only years both agree on. */
        if (tm.tm_year >= 77 && tm.tm_year <= 168) {
            snprintf(s, sizeof(s), "%s, %02d-%s-%02d %02d:%02d:%02d GMT", dayl[tm.tm_wday],
                     tm.tm_mday, mon3[tm.tm_mon], tm.tm_year % 100, tm.tm_hour, tm.tm_min,
                     tm.tm_sec);
            if (gw__static_parse_http_date(s, strlen(s)) != t)
                FAIL("RFC 850 date \"%s\" is not %lld", s, (long long)t);
        }
    }
    free(copy);
}

/* ------------------------------------------------------------------ 3: Accept-Encoding */

/* The value's elements are coding [ OWS ";" OWS "q" OWS "=" OWS qvalue ]
 * (RFC 9110 12.5.3; static_http.c allows OWS around "=" too). The first
 * element naming the coding decides: accepted unless its qvalue is zero.
 * "*" is not taken to name br or gzip (static.c serves a variant only when
 * named). */
static bool ref_qvalue_positive(const char *q, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (q[i] >= '1' && q[i] <= '9')
            return true;
    return false;
}

static const char *const coding_names[] = {
    "gzip",   "br",    "deflate", "identity", "*",     "compress", "x-gzip", "zstd",
    "brotli", "xgzip", "GZIP",    "Br",       "gzip2", "bR",       "Gzip",   ""};
static const char *const qvalues[] = {"0",   "0.",    "0.0", "0.00",  "0.000", "1",     "1.",
                                      "1.0", "1.000", "0.5", "0.001", "0.1",   "0.999", "0.010"};
static const char *const ows[] = {"", " ", "\t", "  ", " \t"};

/* Builds a well-formed list from b and says what the reference decides. */
static void fuzz_accepts_list(const uint8_t *b, size_t n)
{
    char v[512];
    size_t o = 0, k = 0;
    int decided[2] = {-1, -1}; /* br, gzip: -1 not named yet */
    static const char *const ours[2] = {"br", "gzip"};
    int elems = n ? 1 + b[k++] % 6 : 0;

#define NEXT() (k < n ? b[k++] : 0)
#define PUT(s) o += (size_t)snprintf(v + o, sizeof(v) - o, "%s", (s))
    for (int e = 0; e < elems && o < sizeof(v) - 64; e++) {
        unsigned x = NEXT(), y = NEXT();
        const char *name = coding_names[x % 16];
        const char *q = NULL;

        if (e)
            PUT(",");
        /* static_http.c finds a coding after ',' or ' ' only: no tab before a name */
        PUT((x >> 4) & 1 ? " " : "");
        PUT(name);
        if (y & 1) {
            q = qvalues[(y >> 1) % 14];
            PUT((y >> 5) & 1 ? " " : ""); /* nor right after it */
            PUT(";");
            PUT(ows[NEXT() % 5]);
            PUT((y >> 6) & 1 ? "Q" : "q");
            PUT(ows[NEXT() % 5]);
            PUT("=");
            PUT(ows[NEXT() % 5]);
            PUT(q);
        }
        PUT((x >> 5) & 1 ? " " : "");
        for (int c = 0; c < 2; c++)
            if (decided[c] < 0 && strcasecmp(name, ours[c]) == 0)
                decided[c] = !q || ref_qvalue_positive(q, strlen(q));
    }
#undef NEXT
#undef PUT
    for (int c = 0; c < 2; c++) {
        char *copy = malloc(o ? o : 1);
        bool got;
        if (!copy)
            FAIL("out of memory");
        memcpy(copy, v, o);
        got = gw__static_accepts(copy, o, ours[c]);
        if (got != (decided[c] > 0))
            FAIL("accepts(\"%.*s\", %s) = %d, the list says %d", (int)o, v, ours[c], got,
                 decided[c] > 0);
        free(copy);
    }
}

static bool is_token_at(const char *v, size_t vn, size_t i, size_t cl)
{
    return (i == 0 || v[i - 1] == ' ' || v[i - 1] == ',' || v[i - 1] == '\t') &&
           (i + cl == vn || v[i + cl] == ',' || v[i + cl] == ';' || v[i + cl] == ' ' ||
            v[i + cl] == '\t');
}

static void fuzz_accepts(const char *v, size_t vn)
{
    static const char *const ours[] = {"br", "gzip"};
    char *copy = malloc(vn ? vn : 1);

    if (!copy)
        FAIL("out of memory");
    memcpy(copy, v, vn);
    for (size_t c = 0; c < 2; c++) {
        size_t cl = strlen(ours[c]);
        bool named = false;
        for (size_t i = 0; i + cl <= vn && !named; i++)
            named = strncasecmp(copy + i, ours[c], cl) == 0 && is_token_at(copy, vn, i, cl);
        if (gw__static_accepts(copy, vn, ours[c]) && !named)
            FAIL("accepts(\"%.*s\", %s): the value does not name it", (int)vn, copy, ours[c]);
    }
    free(copy);
    fuzz_accepts_list((const uint8_t *)v, vn);
}

/* ------------------------------------------------------------------ 4: clean_path */

/* The reference: decode once (unless decoded), refuse a bad escape, an
 * encoded slash, NUL, backslash, "." and "..", dot-files unless allowed;
 * drop empty segments; join with "/". clean_path needs the joined length
 * plus 2 bytes of room. */
static int ref_clean(const char *p, size_t n, bool decoded, bool dotfiles, size_t outlen, char *out,
                     size_t *outn)
{
    char *d = malloc(n + 1);
    size_t dn = 0, o = 0;
    int rc = -1;

    if (!d)
        FAIL("out of memory");
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '%' && !decoded) {
            int hi, lo;
            if (i + 2 >= n || (hi = hexval((unsigned char)p[i + 1])) < 0 ||
                (lo = hexval((unsigned char)p[i + 2])) < 0)
                goto out;
            if ((hi << 4 | lo) == '/')
                goto out;
            d[dn++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            d[dn++] = p[i];
        }
    }
    for (size_t i = 0; i < dn;) {
        size_t j = i;
        while (j < dn && d[j] != '/')
            j++;
        if (j > i) {
            if (memchr(d + i, '\0', j - i) || memchr(d + i, '\\', j - i))
                goto out;
            if ((j - i == 1 && d[i] == '.') || (j - i == 2 && d[i] == '.' && d[i + 1] == '.'))
                goto out;
            if (d[i] == '.' && !dotfiles)
                goto out;
            if (o)
                out[o++] = '/';
            memcpy(out + o, d + i, j - i);
            o += j - i;
        }
        i = j + 1;
    }
    if (o && o + 2 > outlen)
        goto out;
    out[o] = '\0';
    *outn = o;
    rc = 0;
out:
    free(d);
    return rc;
}

/* What any output of clean_path must look like, whatever the input. */
static void check_clean(const char *out, size_t on, bool dotfiles)
{
    if (on == 0)
        return;
    if (out[0] == '/' || out[on - 1] == '/')
        FAIL("clean path \"%s\" starts or ends with '/'", out);
    if (memmem(out, on, "//", 2) || memchr(out, '\\', on))
        FAIL("clean path \"%s\" holds \"//\" or a backslash", out);
    for (size_t i = 0; i < on;) {
        size_t j = i;
        while (j < on && out[j] != '/')
            j++;
        if (j == i || (j - i == 1 && out[i] == '.') ||
            (j - i == 2 && out[i] == '.' && out[i + 1] == '.'))
            FAIL("clean path \"%s\" has an empty, \".\" or \"..\" segment", out);
        if (out[i] == '.' && !dotfiles)
            FAIL("clean path \"%s\" has a dot-file segment", out);
        i = j + 1;
    }
}

static void fuzz_clean(uint8_t flags, const char *p, size_t n)
{
    bool decoded = flags & FL_DECODED, dotfiles = flags & FL_DOTFILES;
    size_t outlen = (flags >> 2) ? (size_t)(flags >> 2) : 4096, on, rn;
    char *in = malloc(n ? n : 1), *out = malloc(outlen), *ref = malloc(n + 1),
         *again = malloc(outlen);
    int rc, want;

    if (!in || !out || !ref || !again)
        FAIL("out of memory");
    memcpy(in, p, n);
    rc = gw__static_clean_path(in, n, decoded, dotfiles, out, outlen);
    want = ref_clean(in, n, decoded, dotfiles, outlen, ref, &rn);
    if (rc != want)
        FAIL("clean_path(\"%.*s\", decoded %d, dotfiles %d, room %zu) = %d, the reference says %d",
             (int)n, in, decoded, dotfiles, outlen, rc, want);
    if (rc == 0) {
        on = strlen(out);
        if (on >= outlen)
            FAIL("clean path of %zu bytes in %zu", on, outlen);
        if (on != rn || memcmp(out, ref, rn) != 0)
            FAIL("clean_path(\"%.*s\") = \"%s\" (%zu bytes), the reference says \"%.*s\"", (int)n,
                 in, out, on, (int)rn, ref);
        check_clean(out, on, dotfiles);
        /* cleaning a clean path (decoded now) changes nothing */
        if (gw__static_clean_path(out, on, true, dotfiles, again, outlen) != 0 ||
            strcmp(again, out) != 0)
            FAIL("clean_path is not idempotent on \"%s\"", out);
        /* no escape in the path: both forms read it alike */
        if (!memchr(in, '%', n) &&
            (gw__static_clean_path(in, n, !decoded, dotfiles, again, outlen) != 0 ||
             strcmp(again, out) != 0))
            FAIL("\"%.*s\" cleans differently decoded and not", (int)n, in);
    }
    free(in);
    free(out);
    free(ref);
    free(again);
}

/* ------------------------------------------------------------------ the tree */

static void put_file(const char *rel, const char *data, int64_t mtime)
{
    char path[PATH_MAX];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", tmp_dir, rel);
    if (!(f = fopen(path, "we")) || fwrite(data, 1, strlen(data), f) != strlen(data) || fclose(f))
        FAIL("cannot write %s: %s", path, strerror(errno));
    if (mtime) {
        struct timespec ts[2] = {{mtime, 500000000}, {mtime, 500000000}};
        if (utimensat(AT_FDCWD, path, ts, 0) < 0)
            FAIL("utimensat %s: %s", path, strerror(errno));
    }
}

static void put(const char *kind, const char *rel, const char *target)
{
    char path[PATH_MAX];
    int rc = 0;

    snprintf(path, sizeof(path), "%s/%s", tmp_dir, rel);
    if (strcmp(kind, "dir") == 0) {
        rc = mkdir(path, 0755);
    } else if (strcmp(kind, "link") == 0) {
        char abs[PATH_MAX];
        if (target[0] == '@') { /* absolute, into the tree */
            snprintf(abs, sizeof(abs), "%s/%s", tmp_dir, target + 1);
            target = abs;
        }
        rc = symlink(target, path);
    } else if (strcmp(kind, "fifo") == 0) {
        rc = mkfifo(path, 0644);
    } else if (strcmp(kind, "sock") == 0) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (s < 0 || strlen(path) >= sizeof(sa.sun_path))
            return; /* not essential */
        memcpy(sa.sun_path, path, strlen(path) + 1);
        rc = bind(s, (struct sockaddr *)&sa, sizeof(sa));
        close(s);
    }
    if (rc < 0)
        FAIL("cannot make %s %s: %s", kind, path, strerror(errno));
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void remove_tree(void)
{
    if (tmp_dir[0])
        nftw(tmp_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Counts the descriptors whose link is dir or beneath it. */
static int fds_into(const char *dir)
{
    char link[PATH_MAX], path[64];
    size_t n = strlen(dir);
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int count = 0;

    if (!d)
        FAIL("opendir /proc/self/fd: %s", strerror(errno));
    while ((e = readdir(d))) {
        ssize_t k;
        if (e->d_name[0] == '.' || atoi(e->d_name) == dirfd(d))
            continue;
        snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
        if ((k = readlink(path, link, sizeof(link) - 1)) <= 0)
            continue;
        link[k] = '\0';
        if (strncmp(link, dir, n) == 0 && (link[n] == '\0' || link[n] == '/'))
            count++;
    }
    closedir(d);
    return count;
}

/* The one --static-expires rule the target compiles. */
static const char *expires_all[] = {"3600"};

static void setup(void)
{
    char tmpl[] = "/tmp/gw-static-fuzz-XXXXXX", err[256];
    int before;

    if (!mkdtemp(tmpl) || !realpath(tmpl, tmp_dir))
        FAIL("mkdtemp: %s", strerror(errno));
    atexit(remove_tree);
    put("dir", "root", NULL);
    put_file("secret.txt", "TOP-SECRET\n", 0);
    put_file("secret.txt.gz", "TOP-SECRET gz\n", 0);
    put("dir", "outdir", NULL);
    put_file("outdir/secret.txt", "TOP-SECRET\n", 0);
    put_file("root/hello.txt", "hello, static world\n", 784111777); /* 1994-11-06 08:49:37 */
    put_file("root/index.html", "<p>root index</p>\n", 0);
    put_file("root/range.bin", "0123456789abcdefghijklmnopqrstuvwxyz", 1700000000);
    put_file("root/empty.txt", "", 1);
    put_file("root/app.js", "console.log('plain');\n", 0);
    put_file("root/app.js.gz", "pretend gzip\n", 0);
    put_file("root/app.js.br", "pretend br\n", 0);
    put_file("root/style.css", "p { }\n", 0);
    put_file("root/style.css.gz", "pretend gzip css\n", 0);
    put_file("root/.hidden", "hidden\n", 0);
    put("dir", "root/.git", NULL);
    put_file("root/.git/config", "[core]\n", 0);
    put("dir", "root/sub", NULL);
    put_file("root/sub/page.html", "<p>page</p>\n", 0);
    put_file("root/sub/index.html", "<p>sub index</p>\n", 0);
    put_file("root/sub/index.html.gz", "pretend gzip index\n", 0);
    put_file("root/sub/.env", "PASSWORD=x\n", 0);
    put("dir", "root/sub/deep", NULL);
    put_file("root/sub/deep/file.txt", "deep\n", 0);
    put("dir", "root/noindex", NULL);
    put_file("root/noindex/file.txt", "no index here\n", 0);
    put("dir", "root/%2e%2e", NULL);
    put_file("root/%2e%2e/x.txt", "a directory literally named %2e%2e\n", 0);
    put_file("root/a\\b.txt", "a backslash in the name\n", 0);
    put_file("root/sp ace.txt", "a space\n", 0);
    put_file("root/...", "three dots\n", 0);
    /* symlinks that stay inside */
    put("link", "root/link.txt", "hello.txt");
    put("link", "root/linkdir", "sub");
    put("link", "root/sub/up.txt", "../hello.txt"); /* leaves the "/" map (sub) */
    put("dir", "root/idxlink", NULL);
    put("link", "root/idxlink/index.html", "../sub/page.html");
    put("link", "root/abs_in", "@root/hello.txt"); /* absolute: refused */
    /* symlinks that lead out */
    put("link", "root/out_rel", "../secret.txt");
    put("link", "root/out_abs", "@secret.txt");
    put("link", "root/out_dir", "../outdir");
    put("link", "root/out_up", "..");
    put("link", "root/out_etc", "/etc/passwd");
    put("link", "root/out_etcdir", "/etc");
    put("link", "root/chain1", "chain2");
    put("link", "root/chain2", "../secret.txt");
    put("link", "root/proc_root", "/proc/self/root");
    put("link", "root/proc_fd", "/proc/self/fd");
    put_file("root/leak.txt", "the real leak.txt\n", 0);
    put("link", "root/leak.txt.gz", "../secret.txt.gz");
    put("link", "root/sub/out.txt", "../../secret.txt");
    /* what is not a regular file */
    put("fifo", "root/fifo", NULL);
    put("link", "root/fifo_link", "fifo");
    put_file("root/fifovariant.txt", "the variant is a FIFO\n", 0);
    put("fifo", "root/fifovariant.txt.gz", NULL);
    put_file("root/dirvariant.txt", "the variant is a directory\n", 0);
    put("dir", "root/dirvariant.txt.gz", NULL);
    put("fifo", "root/sub/deep/index.html", NULL);
    put("sock", "root/sock", NULL);

    snprintf(root_dir, sizeof(root_dir), "%s/root", tmp_dir);
    snprintf(sub_dir, sizeof(sub_dir), "%s/root/sub", tmp_dir);
    memset(&cfg, 0, sizeof(cfg)); /* config.c is not linked: only the static options matter */
    {
        static char m0[PATH_MAX + 8], m1[PATH_MAX + 8];
        snprintf(m0, sizeof(m0), "/s=%s", root_dir);
        snprintf(m1, sizeof(m1), "/=%s", sub_dir);
        maps[0] = m0;
        maps[1] = m1;
    }
    cfg.static_map.v = maps;
    cfg.static_map.n = 2;
    /* --static-expires 3600 for every file: compiled once here; each input
     * turns it on or off through statics->nexpires. */
    cfg.static_expires = (gw_strlist_t){expires_all, 1};

    /* set-up and tear-down leave no descriptor behind */
    before = fds_into(tmp_dir);
    gw_static_free(gw_static_new(&cfg, err, sizeof(err)));
    if (fds_into(tmp_dir) != before)
        FAIL("gw_static_new + gw_static_free left %d descriptor(s) into the tree open",
             fds_into(tmp_dir) - before);
    if (!(statics = gw_static_new(&cfg, err, sizeof(err))))
        FAIL("gw_static_new: %s", err);
    if (fds_into(tmp_dir) != before + 2)
        FAIL("gw_static_new holds %d descriptor(s) into the tree for 2 maps",
             fds_into(tmp_dir) - before);
    /* The same maps through the cache. gw_clock_ms() never moves here, so
     * an entry stays fresh until cache_empty(). */
    cfg.static_cache = 3600;
    cached = gw_static_new(&cfg, err, sizeof(err));
    cfg.static_cache = 0;
    if (!cached || !cached->cache)
        FAIL("gw_static_new with a cache: %s", err);
    s_at2 = s_walk = *statics;
    s_walk.has_openat2 = false;
    kernel_has_openat2 = statics->has_openat2;
    gw_bufpool_init(&body_pool, 4096, 4);
    gw_clock_update();
}

/* The map each fixture dirfd stands for. */
static const char *map_dir(int i)
{
    return i ? sub_dir : root_dir;
}

/* ------------------------------------------------------------------ 5: open_beneath */

static void fd_link(int fd, char *link, size_t n)
{
    char path[64];
    ssize_t k;

    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    if ((k = readlink(path, link, n - 1)) <= 0)
        FAIL("readlink %s: %s", path, strerror(errno));
    link[k] = '\0';
}

/* The link of what fd opens is dir or beneath it; with dot-files off, no
 * dot-file beneath dir (the tree has no symlink to one). */
static void check_confined(int fd, const char *dir, bool dotfiles, const char *what)
{
    char link[PATH_MAX];
    size_t n = strlen(dir);

    fd_link(fd, link, sizeof(link));
    if (strncmp(link, dir, n) != 0 || (link[n] != '\0' && link[n] != '/'))
        FAIL("%s: opened %s, outside %s", what, link, dir);
    if (!dotfiles && strstr(link + n, "/."))
        FAIL("%s: opened the dot-file %s", what, link);
}

static void fuzz_open(uint8_t flags, const char *p, size_t n)
{
    bool decoded = flags & FL_DECODED, dotfiles = flags & FL_DOTFILES;
    char rel[4096], *raw = malloc(n + 1);

    if (!raw)
        FAIL("out of memory");
    memcpy(raw, p, n);
    raw[n] = '\0';
    for (int m = 0; m < 2; m++) {
        int dfd = statics->maps[m].dirfd, wfd, afd = -1;
        struct stat wst, ast;
        char want[PATH_MAX + 4096], link[PATH_MAX];

        /* Anything, even what clean_path refuses, stays beneath with openat2. */
        if (kernel_has_openat2 && (afd = open_beneath(&s_at2, dfd, raw)) >= 0) {
            check_confined(afd, map_dir(m), true, "open_beneath (openat2, raw)");
            close(afd);
        }
        if (gw__static_clean_path(raw, n, decoded, dotfiles, rel, sizeof(rel)) < 0)
            continue;
        /* The walk follows no symlink: what it opens is exactly DIR/rel. */
        wfd = open_beneath(&s_walk, dfd, rel);
        if (wfd >= 0) {
            check_confined(wfd, map_dir(m), dotfiles, "open_beneath (walk)");
            fd_link(wfd, link, sizeof(link));
            snprintf(want, sizeof(want), "%s%s%s", map_dir(m), rel[0] ? "/" : "", rel);
            if (strcmp(link, want) != 0)
                FAIL("the walk opened %s for %s", link, want);
            if (fstat(wfd, &wst) < 0)
                FAIL("fstat: %s", strerror(errno));
        }
        if (kernel_has_openat2) {
            afd = open_beneath(&s_at2, dfd, rel);
            if (afd >= 0) {
                check_confined(afd, map_dir(m), dotfiles, "open_beneath (openat2)");
                if (fstat(afd, &ast) < 0)
                    FAIL("fstat: %s", strerror(errno));
                fd_link(afd, link, sizeof(link));
                snprintf(want, sizeof(want), "%s%s%s", map_dir(m), rel[0] ? "/" : "", rel);
                /* no symlink on the way: the walk must have found it too */
                if (strcmp(link, want) == 0 &&
                    (wfd < 0 || wst.st_ino != ast.st_ino || wst.st_dev != ast.st_dev))
                    FAIL("openat2 opened %s, the walk did not", link);
            }
            /* The walk found a file (not a symlink): openat2 finds the same. */
            if (wfd >= 0 && !S_ISLNK(wst.st_mode) &&
                (afd < 0 || wst.st_ino != ast.st_ino || wst.st_dev != ast.st_dev))
                FAIL("the walk opened \"%s\", openat2 did not (%s)", rel,
                     afd < 0 ? strerror(errno) : "another file");
            if (afd >= 0)
                close(afd);
        }
        if (wfd >= 0)
            close(wfd);
    }
    free(raw);
}

/* ------------------------------------------------------------------ 6: whole answers */

enum { MAX_FIELDS = 16 };

typedef struct spec {
    bool is_uwsgi; /* set per run */
    const char *method, *path;
    size_t mn, pn;
    int n;
    const char *name[MAX_FIELDS], *value[MAX_FIELDS];
    size_t nn[MAX_FIELDS], vn[MAX_FIELDS];
} spec_t;

/* "METHOD PATH\nName: value\n..." */
static void parse_spec(const char *p, size_t n, spec_t *s)
{
    const char *e = p + n, *nl = memchr(p, '\n', n), *sp;
    const char *line_end = nl ? nl : e;

    memset(s, 0, sizeof(*s));
    s->method = p;
    sp = memchr(p, ' ', (size_t)(line_end - p));
    s->mn = (size_t)((sp ? sp : line_end) - p);
    s->path = sp ? sp + 1 : line_end;
    s->pn = (size_t)(line_end - s->path);
    if (s->pn && s->path[s->pn - 1] == '\r')
        s->pn--;
    for (p = nl ? nl + 1 : e; p < e && s->n < MAX_FIELDS;) {
        const char *colon, *v, *ve;
        nl = memchr(p, '\n', (size_t)(e - p));
        line_end = nl ? nl : e;
        colon = memchr(p, ':', (size_t)(line_end - p));
        if (colon) {
            v = colon + 1;
            ve = line_end;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t' || ve[-1] == '\r'))
                ve--;
            s->name[s->n] = p;
            s->nn[s->n] = (size_t)(colon - p);
            s->value[s->n] = v;
            s->vn[s->n] = (size_t)(ve - v);
            s->n++;
        }
        p = nl ? nl + 1 : e;
    }
}

typedef struct subst {
    char etag[128], lm[64], before[64], after[64], rfc850[64], asc[64];
} subst_t;

/* As gw_req_header() finds it: by name, case-insensitively; over uwsgi
 * through its CGI variable, where '-' and '_' both became '_'. */
static bool field_is(const spec_t *s, int i, const char *name)
{
    if (s->nn[i] != strlen(name))
        return false;
    for (size_t k = 0; k < s->nn[i]; k++) {
        char a = (char)tolower((unsigned char)s->name[i][k]),
             b = (char)tolower((unsigned char)name[k]);
        if (s->is_uwsgi && (a == '-' || a == '_') && (b == '-' || b == '_'))
            continue;
        if (a != b)
            return false;
    }
    return true;
}

/* Expands $E $D $d $n $R $A (and "$$") into buf; the value itself when no
 * substitution is known. */
static size_t expand(const char *v, size_t vn, const subst_t *sub, char *buf, size_t bn)
{
    size_t o = 0;
    for (size_t i = 0; i < vn && o < bn; i++) {
        const char *r = NULL;
        if (v[i] == '$' && i + 1 < vn && sub) {
            switch (v[i + 1]) {
            case 'E':
                r = sub->etag;
                break;
            case 'D':
                r = sub->lm;
                break;
            case 'd':
                r = sub->before;
                break;
            case 'n':
                r = sub->after;
                break;
            case 'R':
                r = sub->rfc850;
                break;
            case 'A':
                r = sub->asc;
                break;
            case '$':
                r = "$";
                break;
            }
        }
        if (r) {
            size_t rl = strlen(r);
            if (rl > bn - o)
                rl = bn - o;
            memcpy(buf + o, r, rl);
            o += rl;
            i++;
        } else {
            buf[o++] = v[i];
        }
    }
    return o;
}

/* The first field of that name, after substitution, or NULL. */
static const char *field(const spec_t *s, const subst_t *sub, const char *name, char *buf,
                         size_t bn, size_t *vn)
{
    for (int i = 0; i < s->n; i++)
        if (field_is(s, i, name)) {
            *vn = expand(s->value[i], s->vn[i], sub, buf, bn);
            return buf;
        }
    return NULL;
}

typedef struct got {
    int status;
    int minor;
    char head[8192];
    size_t head_len;
    /* the fields of the head, NUL-terminated copies */
    int n;
    char name[24][32], value[24][512];
    /* the body queued after the head */
    int body_fd;
    uint64_t body_off, body_len;
    char body[64];
    bool body_mem;
} got_t;

static const char *hdr(const got_t *g, const char *name)
{
    for (int i = 0; i < g->n; i++)
        if (strcasecmp(g->name[i], name) == 0)
            return g->value[i];
    return NULL;
}

/* Splits and checks the queued head and body. */
static void read_out(const gw_out_t *out, got_t *g, const char *what)
{
    const gw_seg_t *s0, *s1;
    char *p, *e, *line;

    if (out->count < 1 || out->count > 2)
        FAIL("%s: %u segments queued", what, out->count);
    s0 = &out->seg[out->head];
    if (!s0->base || s0->len >= sizeof(g->head))
        FAIL("%s: the head is not one memory segment", what);
    memcpy(g->head, s0->base, s0->len);
    g->head[s0->len] = '\0';
    g->head_len = s0->len;
    if (strlen(g->head) != g->head_len)
        FAIL("%s: a NUL in the head", what);
    if (g->head_len < 4 || strcmp(g->head + g->head_len - 4, "\r\n\r\n") != 0 ||
        strstr(g->head, "\r\n\r\n") != g->head + g->head_len - 4)
        FAIL("%s: the head does not end at its first blank line:\n%s", what, g->head);
    if (sscanf(g->head, "HTTP/1.%d %d ", &g->minor, &g->status) != 2)
        FAIL("%s: status line: %s", what, g->head);
    g->n = 0;
    line = strstr(g->head, "\r\n") + 2;
    for (p = line, e = g->head + g->head_len - 2; p < e;) {
        char *eol = strstr(p, "\r\n"), *colon;
        if (!eol || eol > e)
            FAIL("%s: a header line without CRLF", what);
        *eol = '\0';
        if (strchr(p, '\r') || strchr(p, '\n'))
            FAIL("%s: a bare CR or LF in \"%s\"", what, p);
        colon = strstr(p, ": ");
        if (!colon || colon == p || (size_t)(colon - p) >= sizeof(g->name[0]) ||
            strlen(colon + 2) >= sizeof(g->value[0]) || g->n == 24)
            FAIL("%s: header line \"%s\"", what, p);
        for (int i = 0; i < g->n; i++)
            if (strncasecmp(g->name[i], p, (size_t)(colon - p)) == 0 &&
                g->name[i][colon - p] == '\0')
                FAIL("%s: header %s twice", what, g->name[i]);
        memcpy(g->name[g->n], p, (size_t)(colon - p));
        g->name[g->n][colon - p] = '\0';
        snprintf(g->value[g->n], sizeof(g->value[0]), "%s", colon + 2);
        g->n++;
        p = eol + 2;
    }
    g->body_fd = -1;
    g->body_len = 0;
    g->body_mem = false;
    if (out->count == 2) {
        s1 = &out->seg[(out->head + 1) % GW_OUT_SEGS];
        g->body_len = s1->len;
        if (s1->base) {
            if (s1->len >= sizeof(g->body))
                FAIL("%s: a memory body of %zu bytes", what, s1->len);
            memcpy(g->body, s1->base, s1->len);
            g->body[s1->len] = '\0';
            g->body_mem = true;
        } else {
            g->body_fd = s1->fd;
            g->body_off = (uint64_t)s1->off;
        }
    }
}

static uint64_t hex_at(const char **p)
{
    uint64_t v = 0;
    int d, k = 0;
    while ((d = hexval((unsigned char)**p)) >= 0 && k++ < 16) {
        v = v << 4 | (uint64_t)d;
        (*p)++;
    }
    return v;
}

/* "inode-size-mtime_ns[-coding]" */
static bool read_etag(const char *etag, uint64_t *ino, uint64_t *size, uint64_t *mtime_ns,
                      const char **coding)
{
    const char *p = etag;
    if (*p++ != '"')
        return false;
    *ino = hex_at(&p);
    if (*p++ != '-')
        return false;
    *size = hex_at(&p);
    if (*p++ != '-')
        return false;
    *mtime_ns = hex_at(&p);
    *coding = NULL;
    if (strcmp(p, "\"") == 0)
        return true;
    if (strcmp(p, "-br\"") == 0)
        *coding = "br";
    else if (strcmp(p, "-gzip\"") == 0)
        *coding = "gzip";
    return *coding != NULL;
}

typedef struct result {
    int status; /* 0: not answered */
    char etag[128], lm[64];
    char ctype[128];
} result_t;

/* One request through gw_static_answer on gs (statics or cached), checked. */
static void answer_one(gw_static_t *gs, uint8_t flags, const spec_t *spec, const subst_t *sub,
                       result_t *res)
{
    spec_t spec_copy = *spec, *sp = &spec_copy;
    bool uwsgi = flags & FL_DECODED, dotfiles = flags & FL_DOTFILES;
    bool http10 = (flags & FL_HTTP10) || uwsgi, keep_alive = !(flags & FL_HTTP10);
    char vals[MAX_FIELDS][1024], *rb;
    size_t vlen[MAX_FIELDS], total, o = 0, pn = sp->pn;
    gw_req_t r;
    gw_out_t out;
    gw_static_result_t sr = {-1, 0};
    static got_t g;
    const char *what = "gw_static_answer";
    int m = -1;
    bool is_get, is_head, answered;

    memset(res, 0, sizeof(*res));
    sp->is_uwsgi = uwsgi;
    cfg.static_dotfiles = dotfiles;
    cfg.static_gzip = flags & FL_GZIP;
    cfg.static_index = (flags & FL_INDEX) ? "index.html" : NULL;
    cfg.static_fallthrough = flags & FL_FALL;
    cfg.static_expires = (gw_strlist_t){expires_all, (flags & FL_EXPIRES) ? 1 : 0};
    gs->nexpires = cfg.static_expires.n; /* its one rule was compiled at set-up */
    gs->has_openat2 = kernel_has_openat2 && !(flags & FL_WALK);

    /* HTTP: the path stops at '?' (http1.c keeps the query apart) */
    if (!uwsgi) {
        const char *q = memchr(sp->path, '?', pn);
        if (q)
            pn = (size_t)(q - sp->path);
    }
    /* The read buffer: method, path, then each field (uwsgi: HTTP_X_Y). */
    total = sp->mn + pn;
    for (int i = 0; i < sp->n; i++) {
        vlen[i] = expand(sp->value[i], sp->vn[i], sub, vals[i], sizeof(vals[i]));
        total += sp->nn[i] + 5 + vlen[i];
    }
    if (!(rb = malloc(total ? total : 1)))
        FAIL("out of memory");
    gw_req_init(&r, &arena_pool);
    r.has_cgi_fields = r.is_path_decoded = r.is_gateway = uwsgi; /* as uwsgi.c sets them */
    r.http_major = 1;
    r.http_minor = http10 ? 0 : 1;
    memcpy(rb + o, sp->method, sp->mn);
    r.method = (gw_span_t){(uint32_t)o, (uint32_t)sp->mn};
    o += sp->mn;
    memcpy(rb + o, sp->path, pn);
    r.path = r.target = (gw_span_t){(uint32_t)o, (uint32_t)pn};
    o += pn;
    r.is_head = sp->mn == 4 && memcmp(sp->method, "HEAD", 4) == 0;
    for (int i = 0; i < sp->n; i++) {
        gw_span_t nm, vl;
        nm.off = (uint32_t)o;
        if (uwsgi) {
            memcpy(rb + o, "HTTP_", 5);
            o += 5;
            for (size_t k = 0; k < sp->nn[i]; k++)
                rb[o++] =
                    sp->name[i][k] == '-' ? '_' : (char)toupper((unsigned char)sp->name[i][k]);
        } else {
            memcpy(rb + o, sp->name[i], sp->nn[i]);
            o += sp->nn[i];
        }
        nm.len = (uint32_t)(o - nm.off);
        memcpy(rb + o, vals[i], vlen[i]);
        vl = (gw_span_t){(uint32_t)o, (uint32_t)vlen[i]};
        o += vlen[i];
        if (gw_req_add_header(&r, nm, vl) < 0)
            FAIL("out of memory");
    }
    is_get = sp->mn == 3 && memcmp(sp->method, "GET", 3) == 0;
    is_head = r.is_head;
    for (int i = 0, best = -1; i < 2; i++) {
        const smap_t *c = &gs->maps[i];
        if (pn >= c->plen && memcmp(sp->path, c->prefix, c->plen) == 0 &&
            (pn == c->plen || sp->path[c->plen] == '/') && (int)c->plen > best) {
            m = i;
            best = (int)c->plen;
        }
    }

    gw_out_init(&out, NULL);
    answered = gw_static_answer(gs, &r, rb, &out, keep_alive, &sr);
    if (!answered) {
        if (m >= 0 && !cfg.static_fallthrough)
            FAIL("%s: a mapped path handed to the app without --static-fallthrough", what);
        if (out.count || r.static_fd >= 0)
            FAIL("%s: handed to the app with an answer queued", what);
        goto done;
    }
    if (m < 0)
        FAIL("%s: answered a path no map matches", what);
    read_out(&out, &g, what);
    res->status = g.status;
    snprintf(res->ctype, sizeof(res->ctype), "%s", hdr(&g, "Content-Type") ? hdr(&g, "Content-Type") : "");
    if (sr.status != g.status)
        FAIL("%s: result status %d, head says %d", what, sr.status, g.status);
    if (g.minor != (http10 ? 0 : 1))
        FAIL("%s: HTTP/1.%d for an HTTP/1.%d request", what, g.minor, http10 ? 0 : 1);
    if (!hdr(&g, "Date") || !hdr(&g, "Server") || !hdr(&g, "Content-Type"))
        FAIL("%s: Date, Server or Content-Type missing", what);
    if ((hdr(&g, "Vary") != NULL) !=
        (cfg.static_gzip && g.status != 404 && g.status != 405 && g.status != 416))
        FAIL("%s: Vary with --static-gzip %d, status %d", what, cfg.static_gzip, g.status);

    if (!is_get && !is_head) {
        if (g.status != 405 || !hdr(&g, "Allow") || strcmp(hdr(&g, "Allow"), "GET, HEAD") != 0)
            FAIL("%s: %.*s got %d", what, (int)sp->mn, sp->method, g.status);
    }
    switch (g.status) {
    case 404:
    case 405:
    case 416: {
        const char *cl = hdr(&g, "Content-Length"), *reason = gw_status_reason(g.status);
        char want[64];
        if (!cl || strtoull(cl, NULL, 10) != strlen(reason) + 1)
            FAIL("%s: %d with Content-Length %s", what, g.status, cl ? cl : "(none)");
        snprintf(want, sizeof(want), "%s\n", reason);
        if (is_head ? out.count != 1 : (!g.body_mem || strcmp(g.body, want) != 0))
            FAIL("%s: %d with the body \"%s\"", what, g.status, g.body_mem ? g.body : "");
        if (r.static_fd >= 0 || hdr(&g, "ETag") || hdr(&g, "Content-Encoding"))
            FAIL("%s: %d with a file, ETag or Content-Encoding", what, g.status);
        if (g.status == 416) {
            /* RFC 9110 15.5.17: an unsatisfied-range ("bytes", " *", "/" and the
             * size), for a range that indeed cannot be met */
            const char *cr = hdr(&g, "Content-Range"), *e;
            char buf[1024];
            size_t rn;
            uint64_t size, a, b;
            if (!cr || strncmp(cr, "bytes */", 8) != 0)
                FAIL("%s: 416 with Content-Range %s", what, cr ? cr : "(none)");
            size = strtoull(cr + 8, (char **)&e, 10);
            if (*e || !field(sp, sub, "Range", buf, sizeof(buf), &rn) ||
                gw__static_parse_range(buf, rn, size, &a, &b) != -1)
                FAIL("%s: 416 (%s) for a range that is not unsatisfiable", what, cr);
        }
        goto done;
    }
    case 200:
    case 206:
    case 304:
        break;
    default:
        FAIL("%s: status %d", what, g.status);
    }

    /* 200, 206, 304: the validators name the file (or variant) chosen. */
    {
        const char *etag = hdr(&g, "ETag"), *lm = hdr(&g, "Last-Modified"),
                   *ce = hdr(&g, "Content-Encoding"), *cl = hdr(&g, "Content-Length"),
                   *crange = hdr(&g, "Content-Range"), *coding, *v;
        uint64_t ino, size, mtime_ns, start = 0, end, a, b;
        time_t mtime;
        char lm_want[64], buf[1024], ibuf[1024];
        size_t vn, irn;
        int want_status = 200, rc;

        if (!etag || !lm || !read_etag(etag, &ino, &size, &mtime_ns, &coding))
            FAIL("%s: %d with ETag %s, Last-Modified %s", what, g.status, etag ? etag : "(none)",
                 lm ? lm : "(none)");
        snprintf(res->etag, sizeof(res->etag), "%s", etag);
        snprintf(res->lm, sizeof(res->lm), "%s", lm);
        mtime = (time_t)(mtime_ns / 1000000000ULL);
        gw__static_http_date(mtime, lm_want, sizeof(lm_want));
        if (strcmp(lm, lm_want) != 0 || gw__static_parse_http_date(lm, strlen(lm)) != mtime)
            FAIL("%s: Last-Modified %s for mtime %lld", what, lm, (long long)mtime);
        if ((ce == NULL) != (coding == NULL) || (ce && strcmp(ce, coding) != 0))
            FAIL("%s: Content-Encoding %s with ETag %s", what, ce ? ce : "(none)", etag);
        if (coding &&
            (!cfg.static_gzip || !(v = field(sp, sub, "Accept-Encoding", buf, sizeof(buf), &vn)) ||
             !gw__static_accepts(v, vn, coding)))
            FAIL("%s: the %s variant, not asked for", what, coding);
        if (strcmp(hdr(&g, "Accept-Ranges") ? hdr(&g, "Accept-Ranges") : "", "bytes") != 0)
            FAIL("%s: Accept-Ranges", what);
        if ((hdr(&g, "Cache-Control") != NULL) != (cfg.static_expires.n != 0) ||
            (hdr(&g, "Expires") != NULL) != (cfg.static_expires.n != 0))
            FAIL("%s: Cache-Control / Expires with --static-expires %s", what,
                 cfg.static_expires.n ? cfg.static_expires.v[0] : "(none)");

        /* RFC 9110 13.2.2: If-None-Match, else If-Modified-Since; then
         * If-Range and Range (14.2). */
        if ((v = field(sp, sub, "If-None-Match", buf, sizeof(buf), &vn))) {
            bool match;
            if (gw__static_etag_matches(v, vn, etag))
                want_status = 304;
            if (ref_inm(v, vn, etag, &match) && match != (want_status == 304))
                FAIL("%s: If-None-Match \"%.*s\" vs %s", what, (int)vn, v, etag);
        } else if ((v = field(sp, sub, "If-Modified-Since", buf, sizeof(buf), &vn))) {
            time_t ims = gw__static_parse_http_date(v, vn);
            if (ims >= 0 && mtime <= ims)
                want_status = 304;
        }
        end = size ? size - 1 : 0;
        if (want_status != 304 && (v = field(sp, sub, "Range", buf, sizeof(buf), &vn))) {
            const char *ir = field(sp, sub, "If-Range", ibuf, sizeof(ibuf), &irn);
            bool use = true;
            int64_t t;
            if (ir) {
                /* a strong comparison with our (strong) ETag, or the exact
                 * Last-Modified date; a weak tag never matches (13.1.5) */
                if (irn && ir[0] == '"')
                    use = irn == strlen(etag) && memcmp(ir, etag, irn) == 0;
                else
                    use = gw__static_parse_http_date(ir, irn) == mtime;
                if (ref_date(ir, irn, &t) && (t == mtime) != use && t != -1)
                    FAIL("%s: If-Range %.*s, mtime %lld", what, (int)irn, ir, (long long)mtime);
            }
            if (use) {
                rc = gw__static_parse_range(v, vn, size, &a, &b);
                if (rc < 0)
                    FAIL("%s: %d where the range \"%.*s\" is unsatisfiable (size %llu)", what,
                         g.status, (int)vn, v, (unsigned long long)size);
                if (rc > 0) {
                    want_status = 206;
                    start = a;
                    end = b;
                }
            }
        }
        if (g.status != want_status)
            FAIL("%s: %d, the rules say %d", what, g.status, want_status);
        if (g.status == 304) {
            if (cl || crange || out.count != 1 || r.static_fd >= 0)
                FAIL("%s: 304 with a length, a range or a body", what);
            goto done;
        }
        if (!cl || strtoull(cl, NULL, 10) != (size ? end - start + 1 : 0))
            FAIL("%s: Content-Length %s for %llu-%llu of %llu", what, cl ? cl : "(none)",
                 (unsigned long long)start, (unsigned long long)end, (unsigned long long)size);
        if (g.status == 206) {
            char want[128];
            snprintf(want, sizeof(want), "bytes %llu-%llu/%llu", (unsigned long long)start,
                     (unsigned long long)end, (unsigned long long)size);
            if (!crange || strcmp(crange, want) != 0)
                FAIL("%s: Content-Range %s, want %s", what, crange ? crange : "(none)", want);
        } else if (crange) {
            FAIL("%s: 200 with Content-Range %s", what, crange);
        }
        if (is_head) {
            if (out.count != 1 || r.static_fd >= 0)
                FAIL("%s: HEAD with a body or a file", what);
            goto done;
        }
        /* GET: the file, from start, Content-Length bytes, and it is the
         * ETag's file, beneath the map, regular, readable. */
        if (r.static_fd < 0)
            FAIL("%s: GET %d without a file", what, g.status);
        {
            struct stat st;
            int fl = fcntl(r.static_fd, F_GETFL);
            if (fstat(r.static_fd, &st) < 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_ino != ino ||
                (uint64_t)st.st_size != size || (fl & O_PATH) || (fl & O_ACCMODE) != O_RDONLY)
                FAIL("%s: the file sent is not the ETag's regular file, open to read", what);
            check_confined(r.static_fd, map_dir(m), true, what);
            {
                /* beneath the map, the request named no dot-file (the tree
                 * has no symlink to one); a variant is the file's .br / .gz */
                char link[PATH_MAX];
                size_t ln;
                fd_link(r.static_fd, link, sizeof(link));
                ln = strlen(link);
                if (!dotfiles && strstr(link + strlen(map_dir(m)), "/."))
                    FAIL("%s: sent the dot-file %s", what, link);
                if (coding &&
                    (ln < 3 || strcmp(link + ln - 3, coding[0] == 'b' ? ".br" : ".gz") != 0))
                    FAIL("%s: sent %s as the %s variant", what, link, coding);
            }
        }
        if (size == 0 ? out.count != 1
                      : (g.body_fd != r.static_fd || g.body_off != start ||
                         g.body_len != end - start + 1))
            FAIL("%s: the file segment is not %llu+%llu of fd %d", what, (unsigned long long)start,
                 (unsigned long long)(end - start + 1), r.static_fd);
    }
done:
    TRACE("answer flags %02x %s %.*s %.*s -> %d %s\n", flags, sub ? "(subst)" : "", (int)sp->mn,
          sp->method, (int)pn, sp->path, answered ? g.status : 0, answered ? res->etag : "");
    gw_out_discard(&out);
    gw_req_reset(&r, &body_env);
    free(rb);
    if (!answered)
        res->status = 0;
}

/* Closes and forgets every entry of the cache, as if it had aged out. */
static void cache_empty(gw_static_t *st)
{
    for (size_t i = 0; i < FC_SLOTS; i++) {
        if (st->cache[i].used && st->cache[i].f.fd >= 0)
            close(st->cache[i].f.fd);
        memset(&st->cache[i], 0, sizeof(st->cache[i]));
    }
}

/* The cache changes nothing a client sees: the request answered through it
 * from empty, then again from what the first left, as without it (want). */
static void cache_agrees(uint8_t flags, const spec_t *sp, const subst_t *sub,
                         const result_t *want)
{
    result_t got;

    cache_empty(cached);
    for (int round = 0; round < 2; round++) {
        answer_one(cached, flags, sp, sub, &got);
        if (got.status != want->status || strcmp(got.etag, want->etag) != 0 ||
            strcmp(got.lm, want->lm) != 0 || strcmp(got.ctype, want->ctype) != 0)
            FAIL("through the cache (%s): %d %s %s \"%s\", without it: %d %s %s \"%s\"",
                 round ? "warm" : "cold", got.status, got.etag, got.lm, got.ctype, want->status,
                 want->etag, want->lm, want->ctype);
    }
    cache_empty(cached);
}

static void fuzz_answer(uint8_t flags, const char *p, size_t n)
{
    spec_t sp;
    subst_t sub, *subp = NULL;
    result_t res, other;
    bool has_dollar = memchr(p, '$', n) != NULL;

    parse_spec(p, n, &sp);
    answer_one(statics, flags, &sp, NULL, &res);
    cache_agrees(flags, &sp, NULL, &res);
    if (has_dollar && res.etag[0]) {
        /* once more, with the file's validators put in */
        time_t t = gw__static_parse_http_date(res.lm, strlen(res.lm)), t1 = t - 1, t2 = t + 1;
        struct tm tm;
        memset(&sub, 0, sizeof(sub));
        snprintf(sub.etag, sizeof(sub.etag), "%s", res.etag);
        snprintf(sub.lm, sizeof(sub.lm), "%s", res.lm);
        gw__static_http_date(t1, sub.before, sizeof(sub.before));
        gw__static_http_date(t2, sub.after, sizeof(sub.after));
        gmtime_r(&t, &tm);
        strftime(sub.rfc850, sizeof(sub.rfc850), "%A, %d-%b-%y %H:%M:%S GMT", &tm);
        strftime(sub.asc, sizeof(sub.asc), "%a %b %e %H:%M:%S %Y", &tm);
        subp = &sub;
        answer_one(statics, flags, &sp, subp, &res);
        cache_agrees(flags, &sp, subp, &res);
    }
    /* The same request over uwsgi (decoded path, CGI names) when decoding
     * changes nothing: the same status. */
    bool same = !memchr(sp.path, '%', sp.pn) && !memchr(sp.path, '?', sp.pn);
    for (int i = 0; i < sp.n; i++)
        if (memchr(sp.name[i], '_', sp.nn[i]))
            same = false; /* HTTP never has one (http1.c refuses it); uwsgi reads it as '-' */
    if (same) {
        answer_one(statics, flags ^ FL_DECODED, &sp, subp, &other);
        if (other.status != res.status || strcmp(other.etag, res.etag) != 0)
            FAIL("over %s %d (%s), over %s %d (%s)", (flags & FL_DECODED) ? "uwsgi" : "HTTP",
                 res.status, res.etag, (flags & FL_DECODED) ? "HTTP" : "uwsgi", other.status,
                 other.etag);
    }
}

/* ------------------------------------------------------------------ entry */

static int lowest_free_fd(void)
{
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd >= 0)
        close(fd);
    return fd;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int base_fd = -1, base_tree = -1;
    const char *p;
    size_t n;
    uint8_t flags;
    int fd;

    if (size < 1)
        return 0;
    if (base_fd < 0) {
        setup();
        base_tree = fds_into(tmp_dir);
        base_fd = lowest_free_fd();
    }
    flags = size > 1 ? data[1] : 0;
    switch ((uint8_t)(data[0] - '0') % 7) {
    case 0:
        fuzz_range((const char *)data + 1, size - 1);
        break;
    case 1:
        fuzz_etag((const char *)data + 1, size - 1);
        break;
    case 2:
        fuzz_date((const char *)data + 1, size - 1);
        break;
    case 3:
        fuzz_accepts((const char *)data + 1, size - 1);
        break;
    case 4:
    case 5:
    case 6:
        p = size > 2 ? (const char *)data + 2 : "";
        n = size > 2 ? size - 2 : 0;
        if ((uint8_t)(data[0] - '0') % 7 == 4)
            fuzz_clean(flags, p, n);
        else if ((uint8_t)(data[0] - '0') % 7 == 5)
            fuzz_open(flags, p, n);
        else
            fuzz_answer(flags, p, n);
        break;
    }

    gw_arena_pool_dispose(&arena_pool);
    gw_bufpool_dispose(&body_pool);
    /* A leaked descriptor takes the lowest free number. Something else may
     * too (libFuzzer's symbolizer pipe): look closer, then move on. */
    if ((fd = lowest_free_fd()) != base_fd) {
        if (fds_into(tmp_dir) != base_tree)
            FAIL("descriptor leak: %d into the tree, %d before", fds_into(tmp_dir), base_tree);
        base_fd = fd;
    }
    return 0;
}
