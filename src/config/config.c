#include "config/config.h"

#include "config/ini.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

enum opt_type { T_BOOL, T_SIZE, T_SECONDS, T_STR, T_LIST, T_WORKERS };

typedef struct opt {
    const char *name;       /* also the ini key and GANGWAY_<NAME> */
    const char *aliases; /* space separated long names */
    char short_name;
    enum opt_type type;
    size_t off;
    const char *def;
    const char *metavar;
    const char *help;
    const char *group;
} opt_t;

#define OFF(f) offsetof(gw_config_t, f)

static const opt_t opts[] = {
    {"module", "wsgi", 'w', T_STR, OFF(module), NULL, "MOD[:CALLABLE]",
     "the WSGI module to load (also the first positional argument)", "Application"},
    {"wsgi-file", "file", 0, T_STR, OFF(wsgi_file), NULL, "FILE", "load the WSGI app from a file",
     "Application"},
    {"callable", NULL, 0, T_STR, OFF(callable), NULL, "NAME",
     "the app's name in its module (default: application, then app)", "Application"},
    {"chdir", NULL, 0, T_STR, OFF(chdir), NULL, "DIR", "change to DIR before loading the app",
     "Application"},
    {"pythonpath", "python-path pp", 0, T_LIST, OFF(pythonpath), NULL, "DIR",
     "add DIR to sys.path (repeatable)", "Application"},
    {"virtualenv", "home venv pyhome", 'H', T_STR, OFF(virtualenv), NULL, "DIR",
     "make a virtualenv's packages importable", "Application"},
    {"env", NULL, 0, T_LIST, OFF(env), NULL, "KEY=VALUE",
     "set an environment variable (repeatable)", "Application"},

    {"http", "http-socket", 0, T_LIST, OFF(http), NULL, "ADDR",
     "serve HTTP on host:port, :port, [::1]:port or unix:/path (repeatable; "
     "default 127.0.0.1:8000)", "Sockets"},
    {"uwsgi", "socket uwsgi-socket", 's', T_LIST, OFF(uwsgi), NULL, "ADDR",
     "serve the uwsgi protocol (nginx's uwsgi_pass) on host:port, :port, [v6]:port or a unix "
     "socket path (repeatable)", "Sockets"},
    {"uwsgi-allow-from", NULL, 0, T_LIST, OFF(uwsgi_allow_from), NULL, "CIDR",
     "who may connect to --uwsgi sockets, which trust their peer (repeatable; default "
     "127.0.0.0/8 and ::1; unix sockets always)", "Sockets"},
    {"buffer-size", NULL, 'b', T_SIZE, OFF(buffer_size), "65535", "BYTES",
     "largest uwsgi variables block (the protocol's maximum by default)", "Limits"},
    {"listen", NULL, 'l', T_SIZE, OFF(listen_backlog), "1024", "N",
     "listen backlog", "Sockets"},
    {"max-connections", NULL, 0, T_SIZE, OFF(max_connections), "10000", "N",
     "open connections per process; beyond it accepting pauses", "Sockets"},
    {"reuse-port", NULL, 0, T_BOOL, OFF(reuse_port), "false", NULL,
     "each worker listens on its own SO_REUSEPORT socket (the kernel spreads connections "
     "evenly; a dying worker drops what was queued on its socket)", "Sockets"},
    {"defer-accept", NULL, 0, T_SECONDS, OFF(defer_accept), "1", "SECONDS",
     "TCP sockets: a worker wakes for a new connection once its first bytes arrive; a "
     "client silent this long is handed over anyway (then --header-timeout runs; 0: off)",
     "Sockets"},
    {"no-defer-accept", NULL, 0, T_BOOL, OFF(no_defer_accept), "false", NULL,
     "uWSGI's name: true means --defer-accept 0", "Sockets"},
    {"chmod-socket", NULL, 'C', T_STR, OFF(chmod_socket), NULL, "MODE",
     "chmod unix sockets (octal, e.g. 660; empty: 666)", "Sockets"},
    {"chown-socket", NULL, 0, T_STR, OFF(chown_socket), NULL, "USER[:GROUP]",
     "chown unix sockets", "Sockets"},

    {"workers", "processes", 'p', T_WORKERS, OFF(workers), "1", "N|auto",
     "worker processes ('auto': one per CPU)", "Processes"},
    {"master", NULL, 'M', T_BOOL, OFF(master), "true", NULL,
     "accepted for uWSGI compatibility: the master always runs", "Processes"},
    {"preload", NULL, 0, T_BOOL, OFF(preload), "false", NULL,
     "import the app once in the master before forking (copy-on-write); a reload then "
     "re-executes the master, keeping its sockets", "Processes"},
    {"lazy-apps", NULL, 0, T_BOOL, OFF(lazy_apps), "true", NULL,
     "uWSGI's name: true (the default) loads the app in each worker; false means --preload",
     "Processes"},
    {"shutdown-delay", NULL, 0, T_SECONDS, OFF(shutdown_delay), "0", "SECONDS",
     "on SIGTERM, keep serving this long (a load balancer notices) before stopping",
     "Processes"},
    {"max-requests", NULL, 'R', T_SIZE, OFF(max_requests), "0", "N",
     "recycle a worker after N requests (0: never)", "Processes"},
    {"max-requests-jitter", "max-requests-delta", 0, T_SIZE, OFF(max_requests_jitter), "0", "N",
     "worker i recycles after max-requests + (i-1)*N requests, so they do not all go at once",
     "Processes"},
    {"min-worker-lifetime", NULL, 0, T_SECONDS, OFF(min_worker_lifetime), "0", "SECONDS",
     "a worker that reached max-requests recycles only once it is this old (uWSGI 2.0's "
     "default is 60)", "Processes"},
    {"max-worker-lifetime", NULL, 0, T_SECONDS, OFF(max_worker_lifetime), "0", "SECONDS",
     "recycle a worker after this long (0: never)", "Processes"},
    {"reload-on-rss", NULL, 0, T_SIZE, OFF(reload_on_rss), "0", "MB",
     "recycle a worker whose resident memory passes this many MB (0: never); it serves until "
     "its replacement does, --graceful-timeout at most", "Processes"},
    {"harakiri", NULL, 't', T_SECONDS, OFF(harakiri), "0", "SECONDS",
     "a request running longer is logged with its traceback and interrupted (0: off)",
     "Processes"},
    {"harakiri-grace", NULL, 0, T_SECONDS, OFF(harakiri_grace), "5", "SECONDS",
     "if the interrupted request is still stuck after this, the worker is killed", "Processes"},
    {"touch-reload", NULL, 0, T_LIST, OFF(touch_reload), NULL, "FILE",
     "gracefully reload the workers when FILE's mtime changes (repeatable)", "Processes"},
    {"reload-check-timeout", NULL, 0, T_SECONDS, OFF(reload_check_timeout), "60", "SECONDS",
     "a reload's check (the new configuration read and the app imported in a separate "
     "process) still running after this is killed and the reload given up; the old workers "
     "keep serving", "Processes"},
    {"pidfile", NULL, 0, T_STR, OFF(pidfile), NULL, "FILE",
     "write the master's pid here (before dropping privileges)", "Processes"},
    {"uid", NULL, 0, T_STR, OFF(uid), NULL, "USER", "run as this user after binding",
     "Processes"},
    {"gid", NULL, 0, T_STR, OFF(gid), NULL, "GROUP", "run as this group after binding",
     "Processes"},
    {"no-initgroups", NULL, 0, T_BOOL, OFF(no_initgroups), "false", NULL,
     "--uid takes none of the user's supplementary groups, only its primary group (or --gid)",
     "Processes"},
    {"umask", NULL, 0, T_STR, OFF(umask), NULL, "MODE", "the process umask (octal)",
     "Processes"},
    {"vacuum", NULL, 0, T_BOOL, OFF(vacuum), "false", NULL,
     "remove the unix sockets and the pidfile on exit", "Processes"},

    {"static-map", NULL, 0, T_LIST, OFF(static_map), NULL, "/PREFIX=DIR",
     "serve files under DIR at /PREFIX without Python (repeatable; longest prefix wins)",
     "Static files"},
    {"static-index", NULL, 0, T_STR, OFF(static_index), NULL, "FILE",
     "answer a directory with this file (no listings)", "Static files"},
    {"static-expires", NULL, 0, T_LIST, OFF(static_expires), NULL, "RULE",
     "Cache-Control max-age and Expires for static files: RULE is SECONDS for all of them, "
     "or (uWSGI's form, repeatable) 'REGEX SECONDS' for those whose file path matches; the "
     "first match wins", "Static files"},
    {"static-expires-uri", NULL, 0, T_LIST, OFF(static_expires_uri), NULL, "RULE",
     "'REGEX SECONDS' for request paths matching REGEX (repeatable; tried before "
     "static-expires)",
     "Static files"},
    {"static-cache", NULL, 0, T_SECONDS, OFF(static_cache), "1", "SECONDS",
     "keep resolved files open this long (a file changed on disk shows within it); 0: "
     "resolve every request", "Static files"},
    {"static-gzip", NULL, 0, T_BOOL, OFF(static_gzip), "false", NULL,
     "send file.br / file.gz when they exist and the client accepts them", "Static files"},
    {"static-dotfiles", NULL, 0, T_BOOL, OFF(static_dotfiles), "false", NULL,
     "serve files and directories whose names start with a dot", "Static files"},
    {"static-fallthrough", NULL, 0, T_BOOL, OFF(static_fallthrough), "false", NULL,
     "a missing static file goes to the app instead of a 404", "Static files"},

    {"limit-request-line", NULL, 0, T_SIZE, OFF(limit_request_line), "8190", "BYTES",
     "longest request line (then 414)", "Limits"},
    {"limit-request-field-size", NULL, 0, T_SIZE, OFF(limit_request_field_size), "8190",
     "BYTES", "longest header line (then 431), and longest chunk-size line with its extensions (then 400)", "Limits"},
    {"limit-request-fields", NULL, 0, T_SIZE, OFF(limit_request_fields), "100", "N",
     "most header lines (then 431)", "Limits"},
    {"limit-request-headers", NULL, 0, T_SIZE, OFF(limit_request_headers), "64k", "BYTES",
     "largest header block (then 431)", "Limits"},
    {"limit-body", "limit-post", 0, T_SIZE, OFF(limit_body), "1g", "BYTES",
     "largest request body (then 413)", "Limits"},
    {"body-buffer-size", "post-buffering", 0, T_SIZE, OFF(body_buffer_size), "1m", "BYTES",
     "request bodies above this are spooled to a temp file", "Limits"},
    {"body-tmpdir", NULL, 0, T_STR, OFF(body_tmpdir), NULL, "DIR",
     "where spooled bodies go (default $TMPDIR or /tmp)", "Limits"},

    {"header-timeout", NULL, 0, T_SECONDS, OFF(header_timeout), "30", "SECONDS",
     "time to receive a request's headers (then 408)", "Timeouts"},
    {"body-timeout", NULL, 0, T_SECONDS, OFF(body_timeout), "60", "SECONDS",
     "longest pause while receiving a body (then 408)", "Timeouts"},
    {"keepalive-timeout", NULL, 0, T_SECONDS, OFF(keepalive_timeout), "15",
     "SECONDS", "idle keep-alive connections are closed after this", "Timeouts"},
    {"write-timeout", NULL, 0, T_SECONDS, OFF(write_timeout), "60", "SECONDS",
     "longest wait for a client to accept response bytes", "Timeouts"},
    {"graceful-timeout", NULL, 0, T_SECONDS, OFF(graceful_timeout), "30", "SECONDS",
     "on SIGTERM/SIGINT, how long in-flight requests may take to finish", "Timeouts"},

    {"stats", NULL, 0, T_STR, OFF(stats), NULL, "ADDR",
     "serve statistics from the master: JSON at /, Prometheus metrics at /metrics, a live "
     "page at /status (a bare port or :port stays on 127.0.0.1; unix paths work)",
     "Logging and statistics"},
    {"log-file", "logto", 0, T_STR, OFF(log_file), NULL, "PATH",
     "the error log (and the access log, unless --access-log names another) goes to this "
     "file, reopened on SIGUSR1 (default stderr)", "Logging and statistics"},
    {"access-log", NULL, 0, T_STR, OFF(access_log), NULL, "PATH",
     "access log file ('-' for stdout; default stderr)", "Logging and statistics"},
    {"log-format", "logformat", 0, T_STR, OFF(log_format), NULL, "FORMAT",
     "access log lines from named fields: %(client) %(method) %(uri) %(protocol) %(status) "
     "%(bytes) %(duration_us) %(duration_ms) %(duration) %(referer) %(user_agent) "
     "%(request_id) %(worker) %(pid) %(time) (epoch) %(time_local) %(time_iso); uWSGI's names "
     "work too (%(addr) %(size) %(msecs) %(uagent) ...); default: combined plus the duration",
     "Logging and statistics"},
    {"log-json", NULL, 0, T_BOOL, OFF(log_json), "false", NULL,
     "access log lines as JSON objects (every field, or those --log-format names), every "
     "value escaped", "Logging and statistics"},
    {"request-id", NULL, 0, T_BOOL, OFF(request_id), "false", NULL,
     "give every request an id: the client's X-Request-Id, or a new one; the app sees it as "
     "HTTP_X_REQUEST_ID and its answer carries X-Request-Id (the access log's %(request_id) "
     "has one either way)", "Logging and statistics"},
    {"disable-logging", NULL, 'L', T_BOOL, OFF(disable_logging), "false", NULL,
     "no access log", "Logging and statistics"},

    {"ini", NULL, 0, T_LIST, OFF(ini), NULL, "FILE[:SECTION]",
     "read options from a uWSGI-style ini file, sections [uwsgi] and [gangway] unless one is "
     "named (repeatable; a bare FILE.ini argument works too)", "Configuration"},
    {"strict", NULL, 0, T_BOOL, OFF(strict), "false", NULL,
     "unknown keys and uWSGI options gangway does not implement are errors, not warnings",
     "Configuration"},
    {"print-config", NULL, 0, T_BOOL, OFF(print_config), "false", NULL,
     "print the effective configuration, each value with where it came from, and exit",
     "Configuration"},
    {"show-config", NULL, 0, T_BOOL, OFF(show_config), "false", NULL,
     "print the same to the log at start-up, then serve (uWSGI's show-config)",
     "Configuration"},
    {"check-config", NULL, 0, T_BOOL, OFF(check_config), "false", NULL,
     "check the options and import the app, then exit 0 (or 1 with the reason)",
     "Configuration"},
    {"help", NULL, 'h', T_BOOL, OFF(show_help), "false", NULL, "show this help",
     "Configuration"},
    {"version", NULL, 'V', T_BOOL, OFF(show_version), "false", NULL,
     "print the gangway, Python and llhttp versions", "Configuration"},
    {"print-man", NULL, 0, T_BOOL, OFF(print_man), "false", NULL,
     "print the man page (troff), generated from this table", "Configuration"},

    {"threads", NULL, 0, T_SIZE, OFF(threads), "1", "N",
     "accepted; each worker serves one request at a time (a note says so when N > 1)",
     "uWSGI compatibility"},
    {"plugins", "plugin", 0, T_LIST, OFF(plugins), NULL, "NAME",
     "ignored with a note: Python is built in", "uWSGI compatibility"},
    {"need-app", NULL, 0, T_BOOL, OFF(need_app), "true", NULL,
     "accepted: gangway never starts without its app", "uWSGI compatibility"},
    {"die-on-term", NULL, 0, T_BOOL, OFF(die_on_term), "true", NULL,
     "accepted: SIGTERM always stops gracefully here", "uWSGI compatibility"},
    {"enable-threads", NULL, 0, T_BOOL, OFF(enable_threads), "true", NULL,
     "accepted: the app may always start threads", "uWSGI compatibility"},
    {"single-interpreter", NULL, 0, T_BOOL, OFF(single_interpreter), "true", NULL,
     "accepted: there is only ever one interpreter", "uWSGI compatibility"},
    {"thunder-lock", NULL, 0, T_BOOL, OFF(thunder_lock), "false", NULL,
     "accepted: accepting is already serialised (EPOLLEXCLUSIVE)", "uWSGI compatibility"},
};
#define NOPTS (sizeof(opts) / sizeof(opts[0]))

/* Numbers whose range is narrower than their type's (0 to UINT64_MAX for
 * sizes, to GW_CONFIG_SECONDS_MAX for seconds): a value that makes the
 * server useless, or that a consumer cannot hold, is refused when parsed,
 * like a value that is no number (issues 14 and 20). max 0: the type's. */
typedef struct range {
    const char *name;
    uint64_t min, max;
} range_t;

static const range_t ranges[] = {
    /* 0 would never accept a connection */
    {"max-connections", 1, 0},
    /* listen() takes an int; a backlog of 0 queues a single connection */
    {"listen", 1, INT_MAX},
    /* server.c adds (id - 1) * jitter, id <= GW_MAX_WORKERS: 32 bits each
     * keep the sum within 64 */
    {"max-requests", 0, UINT32_MAX},
    {"max-requests-jitter", 0, UINT32_MAX},
    /* a limit of 0 refuses every request (gunicorn's 0 means "unlimited":
     * a value carried over from it is refused rather than misread) */
    {"limit-request-line", 1, 0},
    {"limit-request-field-size", 1, 0},
    {"limit-request-fields", 1, 0},
    {"limit-request-headers", 1, 0},
    /* A timeout of 0 expires at the next loop turn: a request in two
     * packets gets 408, a keep-alive connection closes under a client that
     * was told it stays open, a socket that fills up fails the answer. */
    {"header-timeout", 1, 0},
    {"body-timeout", 1, 0},
    {"keepalive-timeout", 1, 0},
    /* conn.c's write() from the app waits in poll(), whose timeout is an
     * int of milliseconds */
    {"write-timeout", 1, INT_MAX / 1000},
    /* 0 would kill every check before it starts */
    {"reload-check-timeout", 1, 0},
};

static const range_t *range_of(const opt_t *o)
{
    for (size_t i = 0; i < sizeof(ranges) / sizeof(ranges[0]); i++)
        if (strcmp(ranges[i].name, o->name) == 0)
            return &ranges[i];
    return NULL;
}

static uint64_t min_of(const opt_t *o)
{
    const range_t *r = range_of(o);
    return r ? r->min : 0;
}

static uint64_t max_of(const opt_t *o)
{
    const range_t *r = range_of(o);
    if (r && r->max)
        return r->max;
    return o->type == T_SECONDS ? GW_CONFIG_SECONDS_MAX : UINT64_MAX;
}

#include "uwsgi_options.h"

enum src { SRC_DEFAULT, SRC_INI, SRC_ENV, SRC_CLI };

typedef struct origin {
    uint8_t src;
    const char *where; /* the ini file or the variable's name */
    unsigned line;
} origin_t;

/* One value from one source, before it is applied. */
typedef struct assign {
    const opt_t *o;
    const char *val;
    origin_t at;
} assign_t;

typedef struct assigns {
    assign_t *v;
    size_t n, cap;
} assigns_t;

struct gw_config_priv {
    assigns_t applied;        /* every assignment, in the order applied (gw_config_save) */
    char *saved;              /* gw_config_load_saved(): the bytes the strings point into */
    origin_t *origin;         /* by option (table order); a list's: its last value's */
    origin_t **list_origin;   /* by option: a list's, value by value */
    gw_ini_t ini;
    char **strs; /* owned strings: environment copies, deferred warnings */
    size_t nstrs, capstrs;
    const char **warnings; /* held until --strict is known (some in strs) */
    size_t nwarnings, capwarnings;
};

/* A load's private part, with an origin for every option. NULL when out
 * of memory. */
static struct gw_config_priv *priv_new(void)
{
    struct gw_config_priv *p = calloc(1, sizeof(*p));

    if (!p)
        return NULL;
    p->origin = calloc(NOPTS, sizeof(*p->origin));
    p->list_origin = calloc(NOPTS, sizeof(*p->list_origin));
    if (!p->origin || !p->list_origin) {
        free(p->origin);
        free(p->list_origin);
        free(p);
        return NULL;
    }
    return p;
}

static int grow(void **v, size_t *cap, size_t n, size_t size)
{
    if (n < *cap)
        return 0;
    size_t ncap = *cap ? *cap * 2 : 16;
    void *nv = realloc(*v, ncap * size);
    if (!nv)
        return -ENOMEM;
    *v = nv;
    *cap = ncap;
    return 0;
}

static char *keep(struct gw_config_priv *p, char *s)
{
    if (!s || grow((void **)&p->strs, &p->capstrs, p->nstrs, sizeof(char *)) < 0) {
        free(s);
        return NULL;
    }
    return p->strs[p->nstrs++] = s;
}

/* A warning that --strict turns into an error; printed once all sources are
 * read, since `strict` may come from any of them. */
static void defer(struct gw_config_priv *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void defer(struct gw_config_priv *p, const char *fmt, ...)
{
    char *msg;
    va_list ap;

    va_start(ap, fmt);
    if (vasprintf(&msg, fmt, ap) < 0)
        msg = NULL;
    va_end(ap);
    if (!keep(p, msg) ||
        grow((void **)&p->warnings, &p->capwarnings, p->nwarnings, sizeof(char *)) < 0)
        return;
    p->warnings[p->nwarnings++] = msg;
}

static int parse_bool(const char *v, bool *out)
{
    static const char *yes[] = {"1", "true", "yes", "on", ""}; /* "": a bare ini key */
    static const char *no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < 5; i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (i < 4 && strcasecmp(v, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -EINVAL;
}

/* "64k", "1m", "1g" (powers of 1024); seconds accept "30s", "2m", "1h", "1d".
 * -EINVAL for what is no number, -ERANGE past max (the suffix applied). */
static int parse_num(const char *v, enum opt_type t, uint64_t max, uint64_t *out)
{
    char *end;
    unsigned long long n;
    uint64_t mul = 1;
    bool is_huge;

    if (*v < '0' || *v > '9')
        return -EINVAL;
    errno = 0;
    n = strtoull(v, &end, 10);
    is_huge = errno == ERANGE; /* judged once the unit is known to be valid */
    if (errno && !is_huge)
        return -EINVAL;
    if (*end) {
        char u = (char)(*end | 0x20);
        if (end[1] && !(t == T_SIZE && (end[1] | 0x20) == 'b' && !end[2]))
            return -EINVAL;
        if (t == T_SIZE)
            mul = u == 'k' ? 1ULL << 10 : u == 'm' ? 1ULL << 20 : u == 'g' ? 1ULL << 30 : 0;
        else
            mul = u == 's' ? 1 : u == 'm' ? 60 : u == 'h' ? 3600 : u == 'd' ? 86400 : 0;
        if (!mul)
            return -EINVAL;
    }
    if (is_huge || n > max / mul)
        return -ERANGE;
    *out = n * mul;
    return 0;
}

static int set_value(gw_config_t *c, const opt_t *o, const char *v)
{
    char *field = (char *)c + o->off;

    switch (o->type) {
    case T_BOOL:
        return parse_bool(v, (bool *)field);
    case T_SIZE:
    case T_SECONDS: {
        uint64_t n;
        int rc = parse_num(v, o->type, max_of(o), &n);
        if (rc < 0)
            return rc;
        if (n < min_of(o))
            return -EDOM;
        *(uint64_t *)field = n;
        return 0;
    }
    case T_STR:
        *(const char **)field = v;
        return 0;
    case T_WORKERS:
        if (strcmp(v, "auto") == 0) {
            long n = sysconf(_SC_NPROCESSORS_ONLN);
            *(uint64_t *)field = n > 0 ? (uint64_t)n : 1;
            return 0;
        }
        if (parse_num(v, T_SIZE, UINT64_MAX, (uint64_t *)field) < 0 || *(uint64_t *)field < 1 ||
            *(uint64_t *)field > GW_MAX_WORKERS)
            return -EINVAL;
        return 0;
    case T_LIST: {
        gw_strlist_t *l = (gw_strlist_t *)field;
        const char **nv = realloc(l->v, (l->n + 1) * sizeof(*nv));
        if (!nv)
            return -ENOMEM;
        nv[l->n++] = v;
        l->v = nv;
        return 0;
    }
    }
    return -EINVAL;
}

static void print_origin(FILE *out, const origin_t *at)
{
    switch (at->src) {
    case SRC_INI:
        fprintf(out, "%s:%u", at->where, at->line);
        break;
    case SRC_ENV:
        fprintf(out, "%s", at->where);
        break;
    case SRC_CLI:
        fprintf(out, "command line");
        break;
    default:
        fprintf(out, "default");
    }
}

static void print_bad(const opt_t *o, const origin_t *at, const char *val, const char *why)
{
    fprintf(stderr, "gangway: ");
    if (at->src == SRC_CLI) {
        fprintf(stderr, "invalid value '%s' for --%s", val, o->name);
    } else {
        print_origin(stderr, at);
        fprintf(stderr, ": invalid value '%s' for %s", val, o->name);
    }
    if (why)
        fprintf(stderr, " (%s)", why);
    fputc('\n', stderr);
}

/* Applies one value. A list given by a source replaces what a weaker source
 * gave (the command line's --http replaces the ini's http-socket lines);
 * repeated in one source, it accumulates. */
static int apply(gw_config_t *c, const assign_t *a)
{
    size_t idx = (size_t)(a->o - opts);
    origin_t *at = &c->_priv->origin[idx];
    int rc;

    if (a->o->type == T_LIST && at->src != a->at.src)
        ((gw_strlist_t *)((char *)c + a->o->off))->n = 0;
    if (a->o->type == T_LIST) {
        size_t n = ((gw_strlist_t *)((char *)c + a->o->off))->n;
        origin_t *v = realloc(c->_priv->list_origin[idx], (n + 1) * sizeof(*v));
        if (!v)
            return -ENOMEM;
        v[n] = a->at;
        c->_priv->list_origin[idx] = v;
    }
    if ((rc = set_value(c, a->o, a->val)) < 0) {
        char why[64];
        uint64_t lim = rc == -ERANGE ? max_of(a->o) : min_of(a->o);
        const char *unit = a->o->type != T_SECONDS ? "" : lim == 1 ? " second" : " seconds";
        snprintf(why, sizeof(why), "at %s %llu%s", rc == -ERANGE ? "most" : "least",
                 (unsigned long long)lim, unit);
        print_bad(a->o, &a->at, a->val, rc == -ERANGE || rc == -EDOM ? why : NULL);
        return rc == -ERANGE || rc == -EDOM ? -EINVAL : rc;
    }
    *at = a->at;
    return 0;
}

static int push(assigns_t *as, const opt_t *o, const char *val, origin_t at)
{
    if (grow((void **)&as->v, &as->cap, as->n, sizeof(assign_t)) < 0)
        return -ENOMEM;
    as->v[as->n++] = (assign_t){o, val, at};
    return 0;
}

void gw_config_init(gw_config_t *c)
{
    memset(c, 0, sizeof(*c));
    for (size_t i = 0; i < NOPTS; i++)
        if (opts[i].def && opts[i].type != T_STR && opts[i].type != T_LIST)
            set_value(c, &opts[i], opts[i].def);
}

static bool name_matches(const opt_t *o, const char *name, size_t len)
{
    const char *a = o->aliases;
    if (strlen(o->name) == len && memcmp(o->name, name, len) == 0)
        return true;
    while (a && *a) {
        size_t al = strcspn(a, " ");
        if (al == len && memcmp(a, name, len) == 0)
            return true;
        a += al;
        a += strspn(a, " ");
    }
    return false;
}

static const opt_t *find_long(const char *name, size_t len)
{
    for (size_t i = 0; i < NOPTS; i++)
        if (name_matches(&opts[i], name, len))
            return &opts[i];
    return NULL;
}

static const opt_t *find_short(char s)
{
    for (size_t i = 0; i < NOPTS; i++)
        if (opts[i].short_name == s)
            return &opts[i];
    return NULL;
}

static const opt_t *find_name(const char *name)
{
    return find_long(name, strlen(name));
}

/* Edit distance with transpositions (optimal string alignment). */
static size_t distance(const char *a, size_t an, const char *b, size_t bn)
{
    size_t d[48][48];

    if (an >= 48 || bn >= 48)
        return SIZE_MAX;
    for (size_t i = 0; i <= an; i++)
        d[i][0] = i;
    for (size_t j = 0; j <= bn; j++)
        d[0][j] = j;
    for (size_t i = 1; i <= an; i++) {
        for (size_t j = 1; j <= bn; j++) {
            size_t cost = a[i - 1] != b[j - 1], v = d[i - 1][j - 1] + cost;
            if (d[i - 1][j] + 1 < v)
                v = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < v)
                v = d[i][j - 1] + 1;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[i - 2][j - 2] + 1 < v)
                v = d[i - 2][j - 2] + 1;
            d[i][j] = v;
        }
    }
    return d[an][bn];
}

/* The option name or alias closest to name, copied into buf; false when
 * nothing is close enough to be what was meant. */
static bool closest(const char *name, char *buf, size_t n)
{
    size_t len = strlen(name), best = SIZE_MAX, limit = len < 6 ? 1 : len < 12 ? 2 : 3;

    for (size_t i = 0; i < NOPTS; i++) {
        const char *t = opts[i].name;
        size_t tl = strlen(t);
        const char *a = opts[i].aliases;
        for (;;) {
            size_t dd = distance(name, len, t, tl);
            if (dd < best) {
                best = dd;
                snprintf(buf, n, "%.*s", (int)tl, t);
            }
            if (!a || !*a)
                break;
            t = a;
            tl = strcspn(a, " ");
            a += tl;
            a += strspn(a, " ");
        }
    }
    return best <= limit;
}

static int cmp_name(const void *key, const void *elem)
{
    return strcmp((const char *)key, *(const char *const *)elem);
}

static bool is_uwsgi_option(const char *name)
{
    return bsearch(name, uwsgi_option_names,
                   sizeof(uwsgi_option_names) / sizeof(uwsgi_option_names[0]),
                   sizeof(uwsgi_option_names[0]), cmp_name) != NULL;
}

static size_t suffix_is(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n > m && strcmp(s + n - m, suffix) == 0;
}

/* "site.ini" or "site.ini:section": an ini file, not a module. */
static bool is_ini_arg(const char *s)
{
    const char *colon = strrchr(s, ':');
    char head[4096];

    if (suffix_is(s, ".ini"))
        return true;
    if (!colon || strchr(colon, '/') || (size_t)(colon - s) >= sizeof(head))
        return false;
    snprintf(head, sizeof(head), "%.*s", (int)(colon - s), s);
    return suffix_is(head, ".ini");
}

/* argv into assignments, without applying them: the ini files it names are
 * read first, and its values win over theirs. */
static int from_argv(assigns_t *as, int argc, char **argv)
{
    static const origin_t cli = {SRC_CLI, NULL, 0};
    bool only_positional = false;
    const char *module = NULL;

    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *val = NULL, *eq = NULL;
        const opt_t *o;

        if (only_positional || arg[0] != '-' || arg[1] == '\0') {
            if (is_ini_arg(arg)) {
                if (push(as, find_name("ini"), arg, cli) < 0)
                    return -ENOMEM;
                continue;
            }
            if (module) {
                fprintf(stderr, "gangway: unexpected argument '%s' (the app is already '%s')\n",
                        arg, module);
                return -EINVAL;
            }
            module = arg;
            if (push(as, find_name("module"), arg, cli) < 0)
                return -ENOMEM;
            continue;
        }
        if (strcmp(arg, "--") == 0) {
            only_positional = true;
            continue;
        }
        if (arg[1] == '-') {
            eq = strchr(arg + 2, '=');
            o = find_long(arg + 2, eq ? (size_t)(eq - arg - 2) : strlen(arg + 2));
            if (eq)
                val = eq + 1;
        } else {
            o = arg[2] ? NULL : find_short(arg[1]);
        }
        if (!o) {
            char name[64], best[64];
            snprintf(name, sizeof(name), "%.*s", eq ? (int)(eq - arg - 2) : 63, arg + 2);
            if (arg[1] == '-' && closest(name, best, sizeof(best)))
                fprintf(stderr, "gangway: unknown option '%s' (did you mean --%s?)\n", arg, best);
            else
                fprintf(stderr, "gangway: unknown option '%s' (see --help)\n", arg);
            return -EINVAL;
        }
        if (o->type == T_BOOL && !val) {
            val = "true";
        } else if (!val) {
            if (i + 1 >= argc) {
                fprintf(stderr, "gangway: option --%s needs a value\n", o->name);
                return -EINVAL;
            }
            val = argv[++i];
        }
        if (push(as, o, val, cli) < 0)
            return -ENOMEM;
    }
    return 0;
}

/* GANGWAY_MAX_REQUESTS=100 is --max-requests 100. GANGWAY__* names are
 * gangway's own hand-over between processes, not options. */
static int from_env(gw_config_t *c, assigns_t *as, char **envp)
{
    for (char **e = envp; e && *e; e++) {
        const char *kv = *e, *eq = strchr(kv, '=');
        char name[64], best[64];
        const opt_t *o;
        size_t n;

        if (strncmp(kv, "GANGWAY_", 8) != 0 || !eq || kv[8] == '_')
            continue;
        n = (size_t)(eq - kv - 8);
        if (n >= sizeof(name))
            n = sizeof(name) - 1;
        for (size_t i = 0; i < n; i++)
            name[i] = kv[8 + i] == '_' ? '-' : (char)(kv[8 + i] | 0x20);
        name[n] = '\0';
        char *var = keep(c->_priv, strndup(kv, (size_t)(eq - kv)));
        char *val = keep(c->_priv, strdup(eq + 1));
        if (!var || !val)
            return -ENOMEM;
        if (!(o = find_name(name))) {
            if (closest(name, best, sizeof(best))) {
                for (char *p = best; *p; p++)
                    *p = *p == '-' ? '_' : (char)(*p & ~0x20);
                defer(c->_priv, "%s is not an option (did you mean GANGWAY_%s?)", var, best);
            } else {
                defer(c->_priv, "%s is not an option (see --help)", var);
            }
            continue;
        }
        if (push(as, o, val, (origin_t){SRC_ENV, var, 0}) < 0)
            return -ENOMEM;
    }
    return 0;
}

static void on_ini_warning(void *user, const char *file, unsigned line, const char *msg)
{
    defer(user, "%s:%u: %s", file, line, msg);
}

/* The files named by the strongest source that names any. */
static int read_ini_files(gw_config_t *c, const assigns_t *cli, const assigns_t *env)
{
    const opt_t *ini = find_name("ini");
    char err[512];

    for (int pass = 0; pass < 2; pass++) {
        const assigns_t *as = pass == 0 ? cli : env;
        bool any = false;
        for (size_t i = 0; i < as->n; i++) {
            if (as->v[i].o != ini)
                continue;
            any = true;
            if (gw_ini_load(&c->_priv->ini, as->v[i].val, err, sizeof(err)) < 0) {
                fprintf(stderr, "gangway: %s\n", err);
                return -EINVAL;
            }
        }
        if (any)
            return 0;
    }
    return 0;
}

/* ini entries become assignments; keys that are no option are warned about
 * unless a placeholder used them (`project = mysite`, then %(project)). */
static bool is_variable(const gw_ini_t *ini, const char *key)
{
    for (size_t i = 0; i < ini->n; i++)
        if (ini->v[i].is_referenced && strcmp(ini->v[i].key, key) == 0)
            return true;
    return false;
}

static int from_ini(gw_config_t *c, assigns_t *as, const gw_ini_entry_t **http_key)
{
    const gw_ini_t *ini = &c->_priv->ini;

    for (size_t i = 0; i < ini->n; i++) {
        const gw_ini_entry_t *e = &ini->v[i];
        const opt_t *o = find_name(e->key);
        char best[64];

        if (o) {
            if (push(as, o, e->value, (origin_t){SRC_INI, e->file, e->line}) < 0)
                return -ENOMEM;
            if (strcmp(e->key, "http") == 0 && !*http_key)
                *http_key = e;
        } else if (is_variable(ini, e->key)) {
            continue;
        } else if (is_uwsgi_option(e->key)) {
            defer(c->_priv, "%s:%u: '%s' is a uWSGI option that gangway does not implement",
                  e->file, e->line, e->key);
        } else if (closest(e->key, best, sizeof(best))) {
            defer(c->_priv, "%s:%u: unknown option '%s' (did you mean %s?)", e->file, e->line,
                  e->key, best);
        } else {
            defer(c->_priv, "%s:%u: unknown option '%s'", e->file, e->line, e->key);
        }
    }
    return 0;
}

/* What every load does once the values are in: the options that depend on
 * each other, and the notes. */
static int finish_load(gw_config_t *c, const gw_ini_entry_t *http_key)
{
    {
        /* lazy-apps is uWSGI's inverted --preload: the stronger source of
         * the two decides; one source saying both ways is an error. */
        const origin_t *lz = &c->_priv->origin[find_name("lazy-apps") - opts];
        const origin_t *pl = &c->_priv->origin[find_name("preload") - opts];
        if (lz->src != SRC_DEFAULT && lz->src > pl->src) {
            c->preload = !c->lazy_apps;
        } else if (lz->src != SRC_DEFAULT && lz->src == pl->src && c->preload == c->lazy_apps) {
            fprintf(stderr, "gangway: preload and lazy-apps = %s contradict each other\n",
                    c->lazy_apps ? "true" : "false");
            return -EINVAL;
        }
    }
    {
        /* uWSGI's no-defer-accept turns it off unless a stronger source set a time. */
        const origin_t *nd = &c->_priv->origin[find_name("no-defer-accept") - opts];
        const origin_t *da = &c->_priv->origin[find_name("defer-accept") - opts];
        if (c->no_defer_accept && nd->src >= da->src)
            c->defer_accept = 0;
    }
    if (http_key && c->_priv->origin[find_name("http") - opts].src == SRC_INI)
        fprintf(stderr, "gangway: note: %s:%u: uWSGI's 'http' starts a router process in front "
                "of the workers; gangway's workers serve HTTP on %s themselves\n",
                http_key->file, http_key->line, http_key->value);
    if (c->threads > 1)
        fprintf(stderr, "gangway: note: threads = %llu: each gangway worker serves one request "
                "at a time; add processes for concurrency\n", (unsigned long long)c->threads);
    if (c->plugins.n)
        fprintf(stderr, "gangway: note: plugins are ignored: gangway has Python built in\n");
    return 0;
}

/* Applies a, and keeps it for gw_config_save(). */
static int apply_kept(gw_config_t *c, const assign_t *a)
{
    int rc = apply(c, a);

    if (rc < 0)
        return rc;
    return push(&c->_priv->applied, a->o, a->val, a->at);
}

int gw_config_load(gw_config_t *c, int argc, char **argv, char **envp)
{
    assigns_t cli = {0}, env = {0}, ini = {0};
    const gw_ini_entry_t *http_key = NULL;
    int rc = -ENOMEM;

    gw_config_init(c);
    if (!(c->_priv = priv_new()))
        goto out;
    static const char *const literal_keys[] = {"log-format", "logformat", NULL};
    gw_ini_init(&c->_priv->ini, on_ini_warning, c->_priv);
    c->_priv->ini.literal_keys = literal_keys;
    if ((rc = from_argv(&cli, argc, argv)) < 0 || (rc = from_env(c, &env, envp)) < 0 ||
        (rc = read_ini_files(c, &cli, &env)) < 0 ||
        (rc = from_ini(c, &ini, &http_key)) < 0)
        goto out;
    /* Weakest first: each source overrides the one before. */
    for (int pass = 0; pass < 3; pass++) {
        const assigns_t *as = pass == 0 ? &ini : pass == 1 ? &env : &cli;
        for (size_t i = 0; i < as->n; i++)
            if ((rc = apply_kept(c, &as->v[i])) < 0)
                goto out;
    }
    for (size_t i = 0; i < c->_priv->nwarnings; i++)
        fprintf(stderr, "gangway: %s: %s\n", c->strict ? "error" : "warning",
                c->_priv->warnings[i]);
    if (c->strict && c->_priv->nwarnings) {
        fprintf(stderr, "gangway: stopping: --strict is on\n");
        rc = -EINVAL;
        goto out;
    }
    rc = finish_load(c, http_key);
out:
    free(cli.v);
    free(env.v);
    free(ini.v);
    return rc;
}

/* The saved form: a header line, then one record per assignment, each field
 * ended by a NUL (no value can hold one: they were C strings):
 *
 *     SRC '\0' WHERE '\0' LINE '\0' NAME '\0' VALUE '\0'
 *
 * SRC is the source's digit (enum src), WHERE the ini file or the variable
 * ("" for the command line), LINE the ini line in decimal. */
#define SAVED_MAGIC "gangway-config 1\n"
#define SAVED_MAX (64u << 20) /* far above any real configuration */

static bool is_meta(const opt_t *o);

/* Options that do something else than configure a server: a saved
 * configuration is one the new image serves with. */
static bool is_not_saved(const opt_t *o)
{
    return is_meta(o) || o->off == OFF(check_config);
}

static int write_all_fd(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int gw_config_save(const gw_config_t *c, int fd)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    int rc;

    if (!f)
        return -ENOMEM;
    fputs(SAVED_MAGIC, f);
    for (size_t i = 0; i < c->_priv->applied.n; i++) {
        const assign_t *a = &c->_priv->applied.v[i];
        if (is_not_saved(a->o))
            continue;
        fprintf(f, "%u%c%s%c%u%c%s%c%s%c", (unsigned)a->at.src, 0,
                a->at.where ? a->at.where : "", 0, a->at.line, 0, a->o->name, 0, a->val, 0);
    }
    if (fclose(f) != 0) {
        free(buf);
        return -ENOMEM;
    }
    rc = len > SAVED_MAX ? -EFBIG : lseek(fd, 0, SEEK_SET) < 0 ? -errno : write_all_fd(fd, buf, len);
    free(buf);
    return rc;
}

/* The next NUL-ended field at *p (before end), or NULL. */
static const char *next_field(const char **p, const char *end)
{
    const char *f = *p, *nul = memchr(f, '\0', (size_t)(end - f));

    if (!nul)
        return NULL;
    *p = nul + 1;
    return f;
}

/* The whole of fd, from its start, NUL-terminated, into *out. */
static int read_saved(int fd, char **out, size_t *len)
{
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);

    if (!buf)
        return -ENOMEM;
    for (;;) {
        ssize_t r;
        if (n + 1 >= cap) {
            char *nb = cap >= SAVED_MAX ? NULL : realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                return cap >= SAVED_MAX ? -EFBIG : -ENOMEM;
            }
            buf = nb;
            cap *= 2;
        }
        r = pread(fd, buf + n, cap - n - 1, (off_t)n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            free(buf);
            return -e;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return 0;
}

int gw_config_load_saved(gw_config_t *c, int fd)
{
    const char *p, *end;
    size_t len = 0;
    int rc;

    gw_config_init(c);
    if (!(c->_priv = priv_new()))
        return -ENOMEM;
    gw_ini_init(&c->_priv->ini, NULL, NULL);
    if ((rc = read_saved(fd, &c->_priv->saved, &len)) < 0)
        return rc;
    p = c->_priv->saved;
    end = p + len;
    if (len < strlen(SAVED_MAGIC) || memcmp(p, SAVED_MAGIC, strlen(SAVED_MAGIC)) != 0)
        goto bad;
    p += strlen(SAVED_MAGIC);
    while (p < end) {
        const char *src = next_field(&p, end), *where = src ? next_field(&p, end) : NULL;
        const char *line = where ? next_field(&p, end) : NULL;
        const char *name = line ? next_field(&p, end) : NULL;
        const char *val = name ? next_field(&p, end) : NULL;
        const opt_t *o = name ? find_name(name) : NULL;
        char *e;
        unsigned long ln;
        assign_t a;

        if (!val || !o || strlen(src) != 1 || src[0] < '0' + SRC_INI || src[0] > '0' + SRC_CLI)
            goto bad;
        errno = 0;
        ln = strtoul(line, &e, 10);
        if (errno || *e || ln > UINT_MAX)
            goto bad;
        a = (assign_t){o, val, {(uint8_t)(src[0] - '0'), *where ? where : NULL, (unsigned)ln}};
        if ((rc = apply_kept(c, &a)) < 0)
            return rc;
    }
    return finish_load(c, NULL);
bad:
    fprintf(stderr, "gangway: the configuration handed over by the reload is damaged\n");
    return -EINVAL;
}

void gw_config_dispose(gw_config_t *c)
{
    for (size_t i = 0; i < NOPTS; i++) {
        if (opts[i].type == T_LIST) {
            gw_strlist_t *l = (gw_strlist_t *)((char *)c + opts[i].off);
            free((void *)l->v);
            l->v = NULL;
            l->n = 0;
        }
    }
    if (c->_priv) {
        gw_ini_dispose(&c->_priv->ini);
        free(c->_priv->applied.v);
        free(c->_priv->saved);
        for (size_t i = 0; i < c->_priv->nstrs; i++)
            free(c->_priv->strs[i]);
        free(c->_priv->strs);
        free((void *)c->_priv->warnings);
        for (size_t i = 0; i < NOPTS; i++)
            free(c->_priv->list_origin[i]);
        free(c->_priv->list_origin);
        free(c->_priv->origin);
        free(c->_priv);
        c->_priv = NULL;
    }
}

void gw_config_bad_value(const gw_config_t *c, const char *name, size_t i, const char *value,
                         const char *why)
{
    const opt_t *o = find_name(name);
    const origin_t *at;

    if (!o)
        return;
    at = &c->_priv->origin[o - opts];
    if (o->type == T_LIST && c->_priv->list_origin[o - opts] &&
        i < ((const gw_strlist_t *)((const char *)c + o->off))->n)
        at = &c->_priv->list_origin[o - opts][i];
    print_bad(o, at, value, why);
}

const char *gw_config_origin(const gw_config_t *c, const char *name, size_t i, char *buf,
                             size_t n)
{
    const opt_t *o = find_name(name);
    const origin_t *at;

    if (!o || !c->_priv)
        return "default";
    at = &c->_priv->origin[o - opts];
    if (o->type == T_LIST && c->_priv->list_origin[o - opts] &&
        i < ((const gw_strlist_t *)((const char *)c + o->off))->n)
        at = &c->_priv->list_origin[o - opts][i];
    switch (at->src) {
    case SRC_INI:
        snprintf(buf, n, "%s:%u", at->where, at->line);
        return buf;
    case SRC_ENV:
        return at->where;
    case SRC_CLI:
        return "command line";
    }
    return "default";
}

static bool is_meta(const opt_t *o)
{
    return o->off == OFF(show_help) || o->off == OFF(show_version) ||
           o->off == OFF(print_config) || o->off == OFF(print_man);
}

static void print_line(FILE *out, const char *name, const char *val, const origin_t *at)
{
    int w = fprintf(out, "%s = %s", name, val);
    fprintf(out, "%*s(", w < 40 ? 40 - w : 1, "");
    print_origin(out, at);
    fprintf(out, ")\n");
}

void gw_config_print(const gw_config_t *c, FILE *out)
{
    fprintf(out, "# gangway's effective configuration: option = value  (where it came from)\n");
    for (size_t i = 0; i < NOPTS; i++) {
        const opt_t *o = &opts[i];
        const char *field = (const char *)c + o->off;
        const origin_t *at = &c->_priv->origin[i];
        char num[32];

        if (is_meta(o))
            continue;
        switch (o->type) {
        case T_BOOL:
            print_line(out, o->name, *(const bool *)field ? "true" : "false", at);
            break;
        case T_SIZE:
        case T_SECONDS:
        case T_WORKERS:
            snprintf(num, sizeof(num), "%llu", (unsigned long long)*(const uint64_t *)field);
            print_line(out, o->name, num, at);
            break;
        case T_STR: {
            const char *v = *(const char *const *)field;
            print_line(out, o->name, v ? v : "", at);
            break;
        }
        case T_LIST: {
            const gw_strlist_t *l = (const gw_strlist_t *)field;
            for (size_t j = 0; j < l->n; j++)
                print_line(out, o->name, l->v[j], &c->_priv->list_origin[i][j]);
            if (!l->n)
                print_line(out, o->name, "", at);
            break;
        }
        }
    }
}

/* The k-th option when the table is listed group by group, the groups in
 * the order they first appear (help and man page). */
static const opt_t *by_group(size_t k)
{
    for (size_t g = 0; g < NOPTS; g++) {
        bool is_first = true;
        for (size_t j = 0; j < g && is_first; j++)
            is_first = strcmp(opts[j].group, opts[g].group) != 0;
        if (!is_first)
            continue;
        for (size_t i = 0; i < NOPTS; i++) {
            if (strcmp(opts[i].group, opts[g].group) == 0 && k-- == 0)
                return &opts[i];
        }
    }
    return &opts[0];
}

void gw_config_print_help(FILE *out)
{
    const char *group = NULL;

    fprintf(out, "usage: gangway [OPTIONS] [MODULE[:CALLABLE]] [FILE.ini]\n\n"
                 "A WSGI application server. Example: gangway --http :8000 mysite.wsgi\n"
                 "Every option is also an ini key ([uwsgi] or [gangway] section) and a\n"
                 "GANGWAY_<NAME> environment variable (dashes as underscores); the command\n"
                 "line wins over the environment, which wins over ini files.\n");
    for (size_t k = 0; k < NOPTS; k++) {
        const opt_t *o = by_group(k);
        char left[80];
        int n;

        if (!group || strcmp(group, o->group) != 0) {
            group = o->group;
            fprintf(out, "\n%s:\n", group);
        }
        if (o->short_name)
            n = snprintf(left, sizeof(left), "  -%c, --%s", o->short_name, o->name);
        else
            n = snprintf(left, sizeof(left), "      --%s", o->name);
        if (o->metavar && n > 0 && (size_t)n < sizeof(left))
            snprintf(left + n, sizeof(left) - (size_t)n, " %s", o->metavar);
        fprintf(out, "%-38s %s", left, o->help);
        if (o->def && o->type != T_BOOL)
            fprintf(out, " [%s]", o->def);
        if (o->aliases)
            fprintf(out, " (also: %s)", o->aliases);
        fputc('\n', out);
    }
}

/* troff: a leading dot or quote would be a request; dashes and backslashes
 * need escapes. */
static void man_text(FILE *out, const char *s)
{
    if (*s == '.' || *s == '\'')
        fputs("\\&", out);
    for (; *s; s++) {
        if (*s == '-')
            fputs("\\-", out);
        else if (*s == '\\')
            fputs("\\e", out);
        else
            fputc(*s, out);
    }
}

void gw_config_print_man(FILE *out, const char *version)
{
    const char *group = NULL;

    fprintf(out, ".\\\" Generated by `gangway --print-man` from the option table in src/config/config.c.\n"
                 ".TH GANGWAY 1 \"\" \"gangway %s\" \"User Commands\"\n", version);
    fputs(".SH NAME\ngangway \\- a WSGI application server for Python\n"
          ".SH SYNOPSIS\n.B gangway\n[\\fIOPTIONS\\fR] [\\fIMODULE\\fR[:\\fICALLABLE\\fR]] "
          "[\\fIFILE\\fR.ini]\n"
          ".SH DESCRIPTION\n"
          "gangway serves a Python WSGI application (PEP 3333) over HTTP/1.1 and over the "
          "uwsgi protocol (nginx's \\fBuwsgi_pass\\fR), with a master process supervising "
          "pre-forked workers, and serves static files itself.\n"
          ".PP\nEvery option below is also a key of a uWSGI-style ini file (sections "
          "\\fB[uwsgi]\\fR and \\fB[gangway]\\fR) and an environment variable "
          "\\fBGANGWAY_\\fR\\fINAME\\fR (dashes as underscores, e.g. "
          "\\fBGANGWAY_MAX_REQUESTS\\fR). The command line wins over the environment, which "
          "wins over ini files, which win over the defaults. Sizes take k, m and g; durations "
          "s, m, h and d; flags true/false, yes/no, on/off or 1/0.\n"
          ".SH OPTIONS\n", out);
    for (size_t k = 0; k < NOPTS; k++) {
        const opt_t *o = by_group(k);
        if (!group || strcmp(group, o->group) != 0) {
            group = o->group;
            fputs(".SS ", out);
            man_text(out, group);
            fputc('\n', out);
        }
        fputs(".TP\n", out);
        if (o->short_name)
            fprintf(out, "\\fB\\-%c\\fR, ", o->short_name);
        fputs("\\fB\\-\\-", out);
        man_text(out, o->name);
        fputs("\\fR", out);
        if (o->metavar) {
            fputs(" \\fI", out);
            man_text(out, o->metavar);
            fputs("\\fR", out);
        }
        fputc('\n', out);
        man_text(out, o->help);
        if (o->help[strlen(o->help) - 1] != '.')
            fputc('.', out);
        if (o->def && o->type != T_BOOL) {
            fputs(" Default: ", out);
            man_text(out, o->def);
            fputc('.', out);
        }
        for (const char *a = o->aliases; a && *a;) {
            size_t n = strcspn(a, " ");
            char alias[64];
            snprintf(alias, sizeof(alias), "%.*s", (int)n, a);
            fputs(a == o->aliases ? " Also \\fB\\-\\-" : ", \\fB\\-\\-", out);
            man_text(out, alias);
            fputs("\\fR", out);
            a += n;
            a += strspn(a, " ");
            if (!*a)
                fputc('.', out);
        }
        fputs(" Environment: \\fBGANGWAY_", out);
        for (const char *p = o->name; *p; p++)
            fputc(*p == '-' ? '_' : (char)(*p & ~0x20), out);
        fputs("\\fR.\n", out);
    }
    fputs(".SH INI FILES\n"
          "gangway reads uWSGI's ini files as uWSGI does: \\fBkey = value\\fR lines, "
          "\\fB;\\fR or \\fB#\\fR comments at the start of a line only, a bare key for true, "
          "\\fBini = other.ini\\fR includes, and uWSGI's placeholders: \\fB%(key)\\fR (any "
          "key set before, also one that is no option), \\fB%(%k + 1)\\fR arithmetic, "
          "\\fB$(VAR)\\fR from the environment, \\fB%d\\fR (the file's directory, with a "
          "trailing slash), \\fB%p\\fR, \\fB%n\\fR, \\fB%x\\fR, \\fB%c\\fR, \\fB%k\\fR (CPU "
          "count), \\fB%h\\fR, \\fB%u\\fR, \\fB%U\\fR, \\fB%g\\fR, \\fB%G\\fR and \\fB%%\\fR. "
          "A uWSGI option gangway does not implement, or an unknown key, gives one warning "
          "(with \\fB\\-\\-strict\\fR, an error).\n"
          ".SH SYSTEMD\n"
          "Under \\fBType=notify\\fR, gangway reports READY=1 once its workers serve, "
          "RELOADING=1 and STOPPING=1 around reloads and stops, and its worker count in "
          "STATUS=. Sockets handed in by socket activation (LISTEN_FDS) are used instead of "
          "binding: each \\fB\\-\\-http\\fR or \\fB\\-\\-uwsgi\\fR address takes the socket "
          "bound to it; with no address given, every socket serves HTTP, or the uwsgi "
          "protocol when its FileDescriptorName= is \\fBuwsgi\\fR.\n"
          ".SH SIGNALS\n"
          ".TP\n\\fBSIGTERM\\fR\nstop gracefully (after \\fB\\-\\-shutdown\\-delay\\fR), letting "
          "requests in flight finish within \\fB\\-\\-graceful\\-timeout\\fR\n"
          ".TP\n\\fBSIGINT\\fR, \\fBSIGQUIT\\fR\nstop quickly\n"
          ".TP\n\\fBSIGHUP\\fR\nreload the workers gracefully (a new generation serves before the "
          "old one stops)\n"
          ".TP\n\\fBSIGUSR1\\fR\nreopen the log files\n"
          ".TP\n\\fBSIGTTIN\\fR, \\fBSIGTTOU\\fR\nadd or remove a worker\n"
          ".SH EXIT STATUS\n0 after a clean stop; 1 when the app cannot be loaded or a socket "
          "cannot be bound; 2 for a configuration error.\n"
          ".SH SEE ALSO\n\\fBnginx\\fR(8), \\fBuwsgi\\fR(1), \\fBsystemd.socket\\fR(5); "
          "docs/configuration.md and docs/migrating\\-from\\-uwsgi.md in the source tree.\n",
          out);
}
