#include "core/log.h"

#include "core/clock.h"
#include "core/utf8.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int err_fd = STDERR_FILENO;
static int acc_fd = STDERR_FILENO;
static char acc_path[4096]; /* "" unless the access log is a file we opened */
static char err_path[4096]; /* --log-file: "" while the error log is the inherited stderr */
static char acc_buf[64 * 1024];
static size_t acc_len;

int gw_log_open_access(const char *path)
{
    int fd;

    if (!path)
        return 0;
    if (strcmp(path, "-") == 0) {
        acc_fd = STDOUT_FILENO;
        return 0;
    }
    fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    acc_fd = fd;
    snprintf(acc_path, sizeof(acc_path), "%s", path);
    return 0;
}

/* The error log is descriptor 2 itself, so that what Python or a C library
 * prints to stderr lands in the same file. */
static int open_onto_stderr(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    if (fd != STDERR_FILENO) {
        int rc = dup2(fd, STDERR_FILENO) < 0 ? -errno : 0;
        close(fd);
        return rc;
    }
    return 0;
}

int gw_log_open_error(const char *path)
{
    int rc;

    if (!path)
        return 0;
    if ((rc = open_onto_stderr(path)) < 0)
        return rc;
    snprintf(err_path, sizeof(err_path), "%s", path);
    return 0;
}

void gw_log_reopen(void)
{
    int fd, rc;

    gw_log_flush();
    if (err_path[0] && (rc = open_onto_stderr(err_path)) < 0)
        gw_log_error("cannot reopen the log file '%s': %s", err_path, strerror(-rc));
    if (!acc_path[0] || acc_fd < 0)
        return;
    fd = open(acc_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        gw_log_error("cannot reopen the access log '%s': %s", acc_path, strerror(errno));
        return;
    }
    dup2(fd, acc_fd); /* keeps the descriptor number: nothing else holds it */
    close(fd);
}

bool gw_log_access_enabled(void)
{
    return acc_fd >= 0;
}

void gw_log_disable_access(void)
{
    acc_fd = -1;
}

static void write_all(int fd, const char *s, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return; /* nowhere left to report a log failure */
        }
        s += w;
        n -= (size_t)w;
    }
}

void gw_log_error(const char *fmt, ...)
{
    char line[2048];
    va_list ap;
    int n;

    memcpy(line, "gangway: ", 9);
    va_start(ap, fmt);
    n = vsnprintf(line + 9, sizeof(line) - 10, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    n += 9;
    if ((size_t)n > sizeof(line) - 2)
        n = sizeof(line) - 2;
    line[n++] = '\n';
    write_all(err_fd, line, (size_t)n);
}

int gw_log_error_fd(void)
{
    return err_fd;
}

void gw_log_error_write(const char *s, size_t n)
{
    write_all(err_fd, s, n);
}

void gw_log_flush(void)
{
    if (acc_len && acc_fd >= 0)
        write_all(acc_fd, acc_buf, acc_len);
    acc_len = 0;
}

/* Appends s, escaping what could forge or break a log line: quotes,
 * backslashes, control and non-ASCII bytes become \xHH. */
static char *put_escaped(char *o, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') {
            *o++ = '\\';
            *o++ = 'x';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        } else {
            *o++ = (char)c;
        }
    }
    return o;
}

#define FIELD_MAX 1024 /* longer fields are cut in the log */

/* ---- --log-format and --log-json ---- */

enum field {
    F_CLIENT, F_METHOD, F_URI, F_PROTOCOL, F_STATUS, F_BYTES, F_DURATION_US, F_DURATION_MS,
    F_DURATION, F_REFERER, F_USER_AGENT, F_REQUEST_ID, F_WORKER, F_TIME, F_TIME_LOCAL,
    F_TIME_ISO, F_PID, F_HOST, F_ABORTED, F_PEER, NFIELDS,
    F_DASH = NFIELDS, /* a uWSGI field gangway does not have: "-" */
};

/* Each field's name, and the name uWSGI's log-format gives it, if any. */
static const struct {
    const char *name, *uwsgi;
} fields[NFIELDS] = {
    [F_CLIENT] = {"client", "addr"},          [F_METHOD] = {"method", NULL},
    [F_URI] = {"uri", NULL},                  [F_PROTOCOL] = {"protocol", "proto"},
    [F_STATUS] = {"status", NULL},            [F_BYTES] = {"bytes", "size"},
    [F_DURATION_US] = {"duration_us", "micros"}, [F_DURATION_MS] = {"duration_ms", "msecs"},
    [F_DURATION] = {"duration", "secs"},      [F_REFERER] = {"referer", NULL},
    [F_USER_AGENT] = {"user_agent", "uagent"}, [F_REQUEST_ID] = {"request_id", NULL},
    [F_WORKER] = {"worker", "wid"},           [F_TIME] = {"time", "epoch"},
    [F_TIME_LOCAL] = {"time_local", "ltime"}, [F_TIME_ISO] = {"time_iso", NULL},
    [F_PID] = {"pid", NULL},                  [F_HOST] = {"host", "host"},
    [F_ABORTED] = {"aborted", NULL},          [F_PEER] = {"peer", NULL},
};

/* uWSGI's other log-format variables: accepted so that a uwsgi.ini runs,
 * shown as "-" (%(user) is always "-" in uWSGI's own default format too). */
static const char *const uwsgi_only[] = {
    "user", "ftime", "ctime", "hsize", "rsize", "cl", "switches", "vars", "pktsize",
    "modifier1", "modifier2", "headers", "core", "vsz", "rss", "vszM", "rssM", "tmsecs",
    "tmicros", NULL,
};

#define MAX_PIECES 64

/* The compiled format: literal text and fields, in order. */
static struct piece {
    const char *lit; /* borrowed from the option's string */
    size_t lit_len;
    int field;       /* -1: the literal */
} pieces[MAX_PIECES];
static size_t npieces;
static bool is_custom, is_json, wants_id;
static unsigned worker_id;

void gw_log_set_worker(unsigned id)
{
    worker_id = id;
}

bool gw_log_wants_request_id(void)
{
    return wants_id;
}

static int add_piece(const char *lit, size_t n, int field, char *err, size_t errlen)
{
    if (npieces == MAX_PIECES) {
        snprintf(err, errlen, "--log-format has more than %d pieces", MAX_PIECES);
        return -EINVAL;
    }
    pieces[npieces++] = (struct piece){lit, n, field};
    if (field == F_REQUEST_ID)
        wants_id = true;
    return 0;
}

int gw_log_set_format(const char *format, bool json, char *err, size_t errlen)
{
    npieces = 0;
    wants_id = false;
    is_custom = format != NULL;
    is_json = json;
    if (!format) {
        if (json)
            for (int f = 0; f < NFIELDS; f++)
                add_piece(NULL, 0, f, err, errlen);
        return 0;
    }
    for (const char *p = format; *p;) {
        const char *start = p, *close;
        while (*p && !(p[0] == '%' && p[1] == '('))
            p++;
        if (p > start && !json && add_piece(start, (size_t)(p - start), -1, err, errlen) < 0)
            return -EINVAL;
        if (!*p)
            break;
        if (!(close = strchr(p, ')'))) {
            snprintf(err, errlen, "--log-format: '%s' has no closing ')'", p);
            return -EINVAL;
        }
        int field = -1;
        size_t n = (size_t)(close - p - 2);
        for (int f = 0; f < NFIELDS && field < 0; f++)
            if ((strlen(fields[f].name) == n && memcmp(fields[f].name, p + 2, n) == 0) ||
                (fields[f].uwsgi && strlen(fields[f].uwsgi) == n &&
                 memcmp(fields[f].uwsgi, p + 2, n) == 0))
                field = f;
        for (int u = 0; uwsgi_only[u] && field < 0; u++)
            if (strlen(uwsgi_only[u]) == n && memcmp(uwsgi_only[u], p + 2, n) == 0)
                field = F_DASH;
        if (field < 0) {
            snprintf(err, errlen, "--log-format: unknown field '%.*s' (fields: client method "
                     "uri protocol status bytes duration_us duration_ms duration referer "
                     "user_agent request_id worker time time_local time_iso pid host aborted)", (int)n, p + 2);
            return -EINVAL;
        }
        p = close + 1;
        if (field == F_DASH && json)
            continue; /* no key to give it */
        if (add_piece(NULL, 0, field, err, errlen) < 0)
            return -EINVAL;
    }
    return 0;
}

/* A JSON string: quotes, backslashes and control bytes escaped, well-formed
 * UTF-8 kept, any other byte as the Latin-1 character it would be. */
static char *put_json(char *o, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;

    *o++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = u[i];
        size_t len = c >= 0x80 ? gw_utf8_seq(u + i, n - i) : 0;
        if (len) {
            memcpy(o, s + i, len);
            o += len;
            i += len - 1;
        } else if (c == '"' || c == '\\') {
            *o++ = '\\';
            *o++ = (char)c;
        } else if (c < 0x20 || c >= 0x7f) {
            memcpy(o, "\\u00", 4);
            o += 4;
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        } else {
            *o++ = (char)c;
        }
    }
    *o++ = '"';
    return o;
}

/* One field's value: a string (escaped for the line's format) or a number. */
static char *put_field(char *o, int f, const gw_access_t *a, size_t ml, size_t tl, size_t rl,
                       size_t ul, size_t il, size_t hl)
{
    const char *s = NULL;
    size_t n = 0;

    switch (f) {
    case F_STATUS:
        return o + sprintf(o, "%d", a->status);
    case F_BYTES:
        return o + sprintf(o, "%llu", (unsigned long long)a->bytes);
    case F_DURATION_US:
        return o + sprintf(o, "%llu", (unsigned long long)a->duration_us);
    case F_DURATION_MS:
        return o + sprintf(o, "%llu.%03llu", (unsigned long long)(a->duration_us / 1000),
                           (unsigned long long)(a->duration_us % 1000));
    case F_DURATION:
        return o + sprintf(o, "%llu.%06llu", (unsigned long long)(a->duration_us / 1000000),
                           (unsigned long long)(a->duration_us % 1000000));
    case F_WORKER:
        return o + sprintf(o, "%u", worker_id);
    case F_DASH:
        *o++ = '-';
        return o;
    case F_PID:
        return o + sprintf(o, "%d", (int)getpid());
    case F_ABORTED:
        if (is_json)
            return o + sprintf(o, "%s", a->is_aborted ? "true" : "false");
        s = a->is_aborted ? "aborted" : NULL; /* "-" otherwise */
        n = s ? 7 : 0;
        break;
    case F_CLIENT:
        s = a->remote && *a->remote ? a->remote : "-";
        n = strlen(s);
        break;
    case F_PEER: /* the balancer a PROXY header or trusted proxy spoke for */
        s = a->peer && *a->peer ? a->peer : a->remote && *a->remote ? a->remote : "-";
        n = strlen(s);
        break;
    case F_METHOD:
        s = a->protocol ? a->method : NULL, n = ml;
        break;
    case F_URI:
        s = a->protocol ? a->target : NULL, n = tl;
        break;
    case F_PROTOCOL:
        s = a->protocol, n = s ? strlen(s) : 0;
        break;
    case F_REFERER:
        s = rl ? a->referer : NULL, n = rl;
        break;
    case F_USER_AGENT:
        s = ul ? a->agent : NULL, n = ul;
        break;
    case F_REQUEST_ID:
        s = il ? a->request_id : NULL, n = il;
        break;
    case F_HOST:
        s = hl ? a->host : NULL, n = hl;
        break;
    case F_TIME:
        return o + sprintf(o, "%lld", (long long)time(NULL));
    case F_TIME_LOCAL:
        s = gw_clock_log_date(), n = strlen(s);
        break;
    case F_TIME_ISO:
        s = gw_clock_iso_date(), n = strlen(s);
        break;
    }
    if (is_json)
        return s ? put_json(o, s, n) : (memcpy(o, "null", 4), o + 4);
    if (!s) {
        *o++ = '-';
        return o;
    }
    return put_escaped(o, s, n);
}

/* The most bytes a line of the compiled format can take. */
static size_t format_need(size_t ml, size_t tl, size_t rl, size_t ul, size_t il, size_t hl)
{
    size_t need = 8;

    for (size_t i = 0; i < npieces; i++) {
        size_t n;
        switch (pieces[i].field) {
        case -1: n = pieces[i].lit_len; break;
        case F_CLIENT: case F_PEER: n = 6 * 48; break;
        case F_METHOD: n = 6 * ml; break;
        case F_URI: n = 6 * tl; break;
        case F_REFERER: n = 6 * rl; break;
        case F_USER_AGENT: n = 6 * ul; break;
        case F_REQUEST_ID: n = 6 * il; break;
        case F_HOST: n = 6 * hl; break;
        default: n = 48; break; /* numbers, dates, the protocol */
        }
        need += n + 24; /* quotes, a JSON key */
    }
    return need;
}

void gw_log_access(const gw_access_t *a)
{
    size_t need;
    char *o;
    size_t ml = a->method_len, tl = a->target_len, rl = a->referer_len, ul = a->agent_len;
    size_t il = a->request_id ? a->request_id_len : 0;
    size_t hl = a->host ? a->host_len : 0;

    if (acc_fd < 0)
        return;
    if (ml > 32)
        ml = 32;
    if (tl > FIELD_MAX)
        tl = FIELD_MAX;
    if (rl > FIELD_MAX)
        rl = FIELD_MAX;
    if (ul > FIELD_MAX)
        ul = FIELD_MAX;
    if (il > 128)
        il = 128;
    if (hl > 255)
        hl = 255;
    /* Every byte may become six (\u00XX) and every field may appear in a
     * format up to MAX_PIECES times: bound the line before writing. */
    need = 200 + 6 * (ml + tl + rl + ul + il);
    if (is_custom || is_json) {
        need = format_need(ml, tl, rl, ul, il, hl);
        if (need > sizeof(acc_buf) / 2) { /* a format naming long fields many times */
            tl = tl < 64 ? tl : 64, rl = rl < 64 ? rl : 64, ul = ul < 64 ? ul : 64;
            hl = hl < 64 ? hl : 64;
            need = format_need(ml, tl, rl, ul, il, hl);
        }
        if (need > sizeof(acc_buf))
            return; /* 64 pieces of at most ~800 bytes: cannot happen */
    }
    if (acc_len + need > sizeof(acc_buf))
        gw_log_flush();
    o = acc_buf + acc_len;
    if (is_json) {
        *o++ = '{';
        for (size_t i = 0; i < npieces; i++) {
            int f = pieces[i].field;
            o += sprintf(o, "%s\"%s\":", i ? "," : "", fields[f].name);
            o = put_field(o, f, a, ml, tl, rl, ul, il, hl);
        }
        *o++ = '}';
        *o++ = '\n';
        acc_len = (size_t)(o - acc_buf);
        return;
    }
    if (is_custom) {
        for (size_t i = 0; i < npieces; i++) {
            if (pieces[i].field < 0) {
                memcpy(o, pieces[i].lit, pieces[i].lit_len);
                o += pieces[i].lit_len;
            } else {
                o = put_field(o, pieces[i].field, a, ml, tl, rl, ul, il, hl);
            }
        }
        *o++ = '\n';
        acc_len = (size_t)(o - acc_buf);
        return;
    }
    o = acc_buf + acc_len;
    o += sprintf(o, "%s - - [%s] \"", a->remote && *a->remote ? a->remote : "-",
                 gw_clock_log_date());
    if (a->protocol) {
        o = put_escaped(o, a->method, ml);
        *o++ = ' ';
        o = put_escaped(o, a->target, tl);
        *o++ = ' ';
        o += sprintf(o, "%s", a->protocol);
    } else {
        *o++ = '-';
    }
    o += sprintf(o, "\" %d %llu \"", a->status, (unsigned long long)a->bytes);
    if (rl)
        o = put_escaped(o, a->referer, rl);
    else
        *o++ = '-';
    o += sprintf(o, "\" \"");
    if (ul)
        o = put_escaped(o, a->agent, ul);
    else
        *o++ = '-';
    o += sprintf(o, "\" %llu.%06llu\n", (unsigned long long)(a->duration_us / 1000000),
                 (unsigned long long)(a->duration_us % 1000000));
    acc_len = (size_t)(o - acc_buf);
}
