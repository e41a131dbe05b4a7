#include "log.h"

#include "clock.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
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

void gw_log_access(const gw_access_t *a)
{
    size_t need;
    char *o;
    size_t ml = a->method_len, tl = a->target_len, rl = a->referer_len, ul = a->agent_len;

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
    need = 200 + 4 * (ml + tl + rl + ul);
    if (acc_len + need > sizeof(acc_buf))
        gw_log_flush();
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
