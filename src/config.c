#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

enum opt_type { T_BOOL, T_SIZE, T_SECONDS, T_STR, T_LIST, T_WORKERS };

typedef struct opt {
    const char *name;
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
    {"module", NULL, 'w', T_STR, OFF(module), NULL, "MOD[:CALLABLE]",
     "the WSGI module to load (also the first positional argument)", "Application"},
    {"wsgi-file", "file", 0, T_STR, OFF(wsgi_file), NULL, "FILE", "load the WSGI app from a file",
     "Application"},
    {"callable", NULL, 0, T_STR, OFF(callable), NULL, "NAME",
     "the app's name in its module (default: application, then app)", "Application"},
    {"chdir", NULL, 0, T_STR, OFF(chdir), NULL, "DIR", "change to DIR before loading the app",
     "Application"},
    {"pythonpath", "python-path pp", 0, T_LIST, OFF(pythonpath), NULL, "DIR",
     "add DIR to sys.path (repeatable)", "Application"},
    {"virtualenv", "home venv", 'H', T_STR, OFF(virtualenv), NULL, "DIR",
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
    {"chmod-socket", NULL, 'C', T_STR, OFF(chmod_socket), NULL, "MODE",
     "chmod unix sockets (octal, e.g. 660)", "Sockets"},

    {"workers", "processes", 'p', T_WORKERS, OFF(workers), "1", "N|auto",
     "worker processes ('auto': one per CPU)", "Processes"},
    {"master", NULL, 'M', T_BOOL, OFF(master), "true", NULL,
     "accepted for uWSGI compatibility: the master always runs", "Processes"},
    {"preload", NULL, 0, T_BOOL, OFF(preload), "false", NULL,
     "import the app once in the master before forking (copy-on-write); a reload then "
     "re-executes the master, keeping its sockets", "Processes"},
    {"shutdown-delay", NULL, 0, T_SECONDS, OFF(shutdown_delay), "0", "SECONDS",
     "on SIGTERM, keep serving this long (a load balancer notices) before stopping",
     "Processes"},
    {"max-requests", NULL, 'R', T_SIZE, OFF(max_requests), "0", "N",
     "recycle a worker after N requests (0: never)", "Processes"},
    {"max-requests-jitter", "max-requests-delta", 0, T_SIZE, OFF(max_requests_jitter), "0", "N",
     "worker i recycles after max-requests + (i-1)*N requests, so they do not all go at once",
     "Processes"},
    {"max-worker-lifetime", NULL, 0, T_SECONDS, OFF(max_worker_lifetime), "0", "SECONDS",
     "recycle a worker after this long (0: never)", "Processes"},
    {"reload-on-rss", NULL, 0, T_SIZE, OFF(reload_on_rss), "0", "MB",
     "recycle a worker whose resident memory passes this many MB (0: never)", "Processes"},
    {"harakiri", NULL, 't', T_SECONDS, OFF(harakiri), "0", "SECONDS",
     "a request running longer is logged with its traceback and interrupted (0: off)",
     "Processes"},
    {"harakiri-grace", NULL, 0, T_SECONDS, OFF(harakiri_grace), "5", "SECONDS",
     "if the interrupted request is still stuck after this, the worker is killed", "Processes"},
    {"touch-reload", NULL, 0, T_LIST, OFF(touch_reload), NULL, "FILE",
     "gracefully reload the workers when FILE's mtime changes (repeatable)", "Processes"},
    {"pidfile", NULL, 0, T_STR, OFF(pidfile), NULL, "FILE",
     "write the master's pid here (before dropping privileges)", "Processes"},
    {"uid", NULL, 0, T_STR, OFF(uid), NULL, "USER", "run as this user after binding",
     "Processes"},
    {"gid", NULL, 0, T_STR, OFF(gid), NULL, "GROUP", "run as this group after binding",
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
    {"static-expires", NULL, 0, T_SECONDS, OFF(static_expires), "0", "SECONDS",
     "Cache-Control max-age and Expires for static files (0: none)", "Static files"},
    {"static-gzip", NULL, 0, T_BOOL, OFF(static_gzip), "false", NULL,
     "send file.br / file.gz when they exist and the client accepts them", "Static files"},
    {"static-dotfiles", NULL, 0, T_BOOL, OFF(static_dotfiles), "false", NULL,
     "serve files and directories whose names start with a dot", "Static files"},
    {"static-fallthrough", NULL, 0, T_BOOL, OFF(static_fallthrough), "false", NULL,
     "a missing static file goes to the app instead of a 404", "Static files"},

    {"limit-request-line", NULL, 0, T_SIZE, OFF(limit_request_line), "8190", "BYTES",
     "longest request line (then 414)", "Limits"},
    {"limit-request-field-size", NULL, 0, T_SIZE, OFF(limit_request_field_size), "8190",
     "BYTES", "longest header line (then 431)", "Limits"},
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

    {"access-log", NULL, 0, T_STR, OFF(access_log), NULL, "PATH",
     "access log file ('-' for stdout; default stderr)", "Logging"},
    {"disable-logging", NULL, 'L', T_BOOL, OFF(disable_logging), "false", NULL,
     "no access log", "Logging"},

    {"check-config", NULL, 0, T_BOOL, OFF(check_config), "false", NULL,
     "check the options and import the app, then exit 0 (or 1 with the reason)", "Other"},
    {"help", NULL, 'h', T_BOOL, OFF(show_help), "false", NULL, "show this help", "Other"},
    {"version", NULL, 'V', T_BOOL, OFF(show_version), "false", NULL,
     "print the gangway, Python and llhttp versions", "Other"},
};
#define NOPTS (sizeof(opts) / sizeof(opts[0]))

static int parse_bool(const char *v, bool *out)
{
    static const char *yes[] = {"1", "true", "yes", "on"};
    static const char *no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(v, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -EINVAL;
}

/* "64k", "1m", "1g" (powers of 1024); seconds accept "30s", "2m", "1h", "1d". */
static int parse_num(const char *v, enum opt_type t, uint64_t *out)
{
    char *end;
    unsigned long long n;
    uint64_t mul = 1;

    if (*v < '0' || *v > '9')
        return -EINVAL;
    errno = 0;
    n = strtoull(v, &end, 10);
    if (errno)
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
    if (n > UINT64_MAX / mul)
        return -EINVAL;
    *out = n * mul;
    return 0;
}

static int set_opt(gw_config_t *c, const opt_t *o, const char *v)
{
    char *field = (char *)c + o->off;
    int rc = 0;

    switch (o->type) {
    case T_BOOL:
        rc = parse_bool(v, (bool *)field);
        break;
    case T_SIZE:
    case T_SECONDS:
        rc = parse_num(v, o->type, (uint64_t *)field);
        break;
    case T_STR:
        *(const char **)field = v;
        break;
    case T_WORKERS:
        if (strcmp(v, "auto") == 0) {
            long n = sysconf(_SC_NPROCESSORS_ONLN);
            *(uint64_t *)field = n > 0 ? (uint64_t)n : 1;
        } else if ((rc = parse_num(v, T_SIZE, (uint64_t *)field)) == 0 &&
                   (*(uint64_t *)field < 1 || *(uint64_t *)field > GW_MAX_WORKERS)) {
            rc = -EINVAL;
        }
        break;
    case T_LIST: {
        gw_strlist_t *l = (gw_strlist_t *)field;
        const char **nv = realloc(l->v, (l->n + 1) * sizeof(*nv));
        if (!nv)
            return -ENOMEM;
        nv[l->n++] = v;
        l->v = nv;
        break;
    }
    }
    if (rc)
        fprintf(stderr, "gangway: invalid value '%s' for --%s\n", v, o->name);
    return rc;
}

void gw_config_init(gw_config_t *c)
{
    memset(c, 0, sizeof(*c));
    for (size_t i = 0; i < NOPTS; i++)
        if (opts[i].def && opts[i].type != T_STR && opts[i].type != T_LIST)
            set_opt(c, &opts[i], opts[i].def);
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

int gw_config_parse_argv(gw_config_t *c, int argc, char **argv)
{
    bool only_positional = false;

    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *val = NULL, *eq = NULL;
        const opt_t *o;

        if (only_positional || arg[0] != '-' || arg[1] == '\0') {
            if (c->module) {
                fprintf(stderr, "gangway: unexpected argument '%s' (the app is already '%s')\n",
                        arg, c->module);
                return -EINVAL;
            }
            c->module = arg;
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
        if (set_opt(c, o, val))
            return -EINVAL;
    }
    return 0;
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
}

void gw_config_print_help(FILE *out)
{
    const char *group = NULL;

    fprintf(out, "usage: gangway [OPTIONS] [MODULE[:CALLABLE]]\n\n"
                 "A WSGI application server. Example: gangway --http :8000 mysite.wsgi\n");
    for (size_t i = 0; i < NOPTS; i++) {
        const opt_t *o = &opts[i];
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
