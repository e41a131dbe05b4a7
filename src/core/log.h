/* The error log (immediate, unbuffered lines) and the access log (buffered,
 * written once per loop iteration so that logging costs no syscall per
 * request). Both are process-wide, like the file descriptors they own. */
#ifndef GW_LOG_H
#define GW_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One finished request, as the access log needs it. All strings borrowed. */
typedef struct gw_access {
    const char *remote;   /* the client (what a gateway, a PROXY header or a trusted
                           * proxy says) */
    const char *peer;     /* the connection's own peer (a balancer); NULL: remote */
    const char *method;   size_t method_len;
    const char *target;   size_t target_len;
    const char *protocol; /* "HTTP/1.1"; NULL when the request line was bad */
    const char *referer;  size_t referer_len;
    const char *agent;    size_t agent_len;
    const char *request_id; size_t request_id_len; /* NULL unless the format wants it */
    const char *host;     size_t host_len; /* the request's host (gw_req_host) */
    int status;           /* 499: given up before any byte of the answer left */
    uint64_t bytes;       /* body bytes sent */
    uint64_t duration_us;
    bool is_aborted;      /* the answer was cut short (client gone, write timeout) */
} gw_access_t;

/* Opens the access log: NULL keeps stderr, "-" is stdout, else a file opened
 * for appending. Returns 0 or a negative errno. */
int gw_log_open_access(const char *path);

/* Sends the error log (descriptor 2, so everything the process and Python
 * print to stderr) to a file opened for appending (--log-file); the access
 * log follows unless it has a file of its own. 0 or a negative errno. */
int gw_log_open_error(const char *path);

/* Reopens the log files (logrotate moved them: SIGUSR1). */
void gw_log_reopen(void);

/* Access log lines from named fields (--log-format, "%(status) %(uri)"),
 * and/or as JSON objects (--log-json: the named fields, or all of them).
 * NULL and false keep the combined format. 0, or -EINVAL with the reason in
 * err. The format string is borrowed for the process's life. */
int gw_log_set_format(const char *format, bool json, char *err, size_t errlen);

/* True when the access log shows the request id (callers skip making one
 * otherwise). */
bool gw_log_wants_request_id(void);

/* The worker number the access log's %(worker) shows (0: the master). */
void gw_log_set_worker(unsigned id);

/* Disables the access log entirely (--disable-logging). */
void gw_log_disable_access(void);

/* "gangway: <message>\n" to the error log, written at once. */
void gw_log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The error log's descriptor (for writers that cannot call gw_log_error). */
int gw_log_error_fd(void);

/* Raw bytes to the error log (wsgi.errors). */
void gw_log_error_write(const char *s, size_t n);

/* False with --disable-logging: callers skip gathering the fields. */
bool gw_log_access_enabled(void);

/* Appends one combined-format line plus the duration to the access buffer. */
void gw_log_access(const gw_access_t *a);

/* Writes out what the access buffer holds. */
void gw_log_flush(void);

#endif
