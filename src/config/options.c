/* The option table, the ranges of its numbers, and the lookups of option
 * names, gangway's and uWSGI's (options.h). */
#include "config/options.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const opt_t gw__options[] = {
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
    {"https", "https-socket", 0, T_LIST, OFF(https), NULL, "ADDR,CERT,KEY[,CIPHERS[,CA]]",
     "serve HTTPS on ADDR (as --http) with the certificate chain CERT and its key KEY, both "
     "read before --uid; CIPHERS replaces --tls-ciphers for this socket; CA asks clients for "
     "a certificate signed by it ('!CA': required; uWSGI's syntax) (repeatable)", "Sockets"},
    {"http-proxy-protocol", NULL, 0, T_LIST, OFF(http_proxy_protocol), NULL, "ADDR",
     "serve HTTP on ADDR (as --http does), each connection starting with a PROXY protocol "
     "header, v1 or v2 (repeatable)", "Proxies and load balancers"},
    {"enable-proxy-protocol", "http-enable-proxy-protocol", 0, T_BOOL,
     OFF(enable_proxy_protocol), "false", NULL,
     "every HTTP listener requires a PROXY protocol header (v1 or v2) first on each "
     "connection; one without a valid header is closed", "Proxies and load balancers"},
    {"proxy-allow-from", NULL, 0, T_LIST, OFF(proxy_allow_from), NULL, "CIDR",
     "who may send a PROXY protocol header; others are refused (repeatable, or commas; "
     "default: the --forwarded-allow-ips list; unix sockets always)",
     "Proxies and load balancers"},
    {"forwarded-allow-ips", NULL, 0, T_LIST, OFF(forwarded_allow_ips), NULL, "CIDR",
     "trusted proxies: only from these peers do X-Forwarded-* (or Forwarded) headers set "
     "REMOTE_ADDR and the scheme, and their hops are skipped (repeatable, or commas; '*' "
     "trusts everyone; default 127.0.0.0/8 and ::1; unix sockets always)",
     "Proxies and load balancers"},
    {"forwarded-headers", NULL, 0, T_STR, OFF(forwarded_headers), NULL, "FAMILY",
     "which headers trusted proxies speak: x-forwarded (X-Forwarded-For, -Proto, -Ssl, -Host, "
     "-Port; the default), forwarded (RFC 7239), or both (used only when they agree)",
     "Proxies and load balancers"},
    {"forwarded-host", NULL, 0, T_BOOL, OFF(forwarded_host), "false", NULL,
     "trusted proxies' X-Forwarded-Host / -Port (Forwarded host=) set HTTP_HOST, SERVER_NAME "
     "and SERVER_PORT", "Proxies and load balancers"},
    {"log-forwarded", NULL, 0, T_BOOL, OFF(log_forwarded), "false", NULL,
     "log why a trusted proxy's forwarded header was ignored (a debugging aid: one error log "
     "line per such request)", "Proxies and load balancers"},
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

    {"tls-protocols", NULL, 0, T_STR, OFF(tls_protocols), "TLSv1.2 TLSv1.3", "LIST",
     "TLS versions the --https sockets speak: TLSv1.2 and/or TLSv1.3 (space or comma "
     "separated)", "TLS"},
    {"tls-ciphers", NULL, 0, T_STR, OFF(tls_ciphers), NULL, "LIST",
     "TLS 1.2 cipher suites, in OpenSSL's syntax (default: Mozilla's \"intermediate\" "
     "profile, ECDHE and DHE with AES-GCM or ChaCha20-Poly1305; TLS 1.3 keeps OpenSSL's "
     "three AEAD suites)", "TLS"},
    {"tls-sni", "sni", 0, T_LIST, OFF(tls_sni), NULL, "NAME,CERT,KEY",
     "answer clients asking for server name NAME ('*.example.com': one label) with this "
     "certificate, on every --https socket; other names get the socket's own (repeatable; "
     "uWSGI's 'NAME CERT,KEY' works too)", "TLS"},
    {"tls-client-ca", NULL, 0, T_STR, OFF(tls_client_ca), NULL, "FILE",
     "ask clients of every --https socket for a certificate signed by a CA in FILE; the app "
     "sees SSL_CLIENT_VERIFY, SSL_CLIENT_S_DN, ... (see --tls-client-verify)", "TLS"},
    {"tls-client-verify", NULL, 0, T_STR, OFF(tls_client_verify), "required", "MODE",
     "with --tls-client-ca: 'required' refuses a handshake without a valid certificate; "
     "'optional' lets it through and tells the app (SSL_CLIENT_VERIFY)", "TLS"},
    {"tls-handshake-timeout", NULL, 0, T_SECONDS, OFF(tls_handshake_timeout), "10", "SECONDS",
     "an --https connection whose handshake, and then first request byte, has not come "
     "after this is closed", "TLS"},
    {"tls-proxy-protocol", NULL, 0, T_BOOL, OFF(tls_proxy_protocol), "false", NULL,
     "every --https socket requires a PROXY protocol header (v1 or v2) in the clear before "
     "the TLS handshake (a TCP balancer passing TLS through: haproxy send-proxy, an AWS NLB); "
     "one without a valid header is closed", "Proxies and load balancers"},
    {"tls-tickets", NULL, 0, T_BOOL, OFF(tls_tickets), "true", NULL,
     "session tickets: a returning client resumes its session on any worker without a full "
     "handshake (keys change hourly); --tls-tickets=false sends none and makes every "
     "handshake a full one (nginx's ssl_session_tickets off)", "TLS"},
    {"tls-ocsp", NULL, 0, T_LIST, OFF(tls_ocsp), NULL, "CERT=FILE",
     "staple the DER OCSP response in FILE to handshakes using certificate CERT (as given "
     "to --https or --tls-sni); re-read at a reload (repeatable)", "TLS"},

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
    {"threads", NULL, 0, T_SIZE, OFF(threads), "1", "N",
     "requests each worker runs at once, on N Python threads (wsgi.multithread is then "
     "true); the worker's event loop keeps every socket, so slow clients never hold a "
     "thread", "Processes"},
    {"thread-stacksize", "threads-stacksize threads-stack-size", 0, T_SIZE,
     OFF(thread_stacksize), "0", "KIB",
     "stack size of each request thread in KiB (uWSGI's threads-stacksize; 0: the system's "
     "default)", "Processes"},
    {"queue-timeout", NULL, 0, T_SECONDS, OFF(queue_timeout), "0", "SECONDS",
     "with --threads: a complete request that waited longer than this for a free thread is "
     "answered 503 with Retry-After instead of running late (0: off)", "Processes"},
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

    {"plugins", "plugin", 0, T_LIST, OFF(plugins), NULL, "NAME",
     "ignored with a note: Python is built in", "uWSGI compatibility"},
    {"need-app", NULL, 0, T_BOOL, OFF(need_app), "true", NULL,
     "accepted: gangway never starts without its app", "uWSGI compatibility"},
    {"die-on-term", NULL, 0, T_BOOL, OFF(die_on_term), "true", NULL,
     "accepted: SIGTERM always stops gracefully here", "uWSGI compatibility"},
    {"enable-threads", NULL, 0, T_BOOL, OFF(enable_threads), "true", NULL,
     "accepted: the app may always start threads (the GIL is released while the loop "
     "waits)", "uWSGI compatibility"},
    {"single-interpreter", NULL, 0, T_BOOL, OFF(single_interpreter), "true", NULL,
     "accepted: there is only ever one interpreter", "uWSGI compatibility"},
    {"thunder-lock", NULL, 0, T_BOOL, OFF(thunder_lock), "false", NULL,
     "accepted: accepting is already serialised (EPOLLEXCLUSIVE)", "uWSGI compatibility"},
};
const size_t gw__options_n = sizeof(gw__options) / sizeof(gw__options[0]);

/* Numbers whose range is narrower than their type's (0 to UINT64_MAX for
 * sizes, to GW_CONFIG_SECONDS_MAX for seconds): a value that makes the
 * server useless, or that a consumer cannot hold, is refused when parsed,
 * like a value that is no number (issues 14 and 20). max 0: the type's. */
typedef struct range {
    const char *name;
    uint64_t min, max;
} range_t;

static const range_t ranges[] = {
    /* a thread per request at once; past a few dozen the GIL convoys
     * anyway (PEERS.md 6), and each thread costs a stack */
    {"threads", 1, 1024},
    /* KiB: PTHREAD_STACK_MIN is 16 KiB; 1 GiB is no stack anyone means */
    {"thread-stacksize", 0, 1u << 20},
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
    {"tls-handshake-timeout", 1, 0},
    /* the app's write() waits in poll() (gw_conn_wait(), conn_dispatch.c),
     * whose timeout is an int of milliseconds */
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

uint64_t gw__options_min(const opt_t *o)
{
    const range_t *r = range_of(o);
    return r ? r->min : 0;
}

uint64_t gw__options_max(const opt_t *o)
{
    const range_t *r = range_of(o);
    if (r && r->max)
        return r->max;
    return o->type == T_SECONDS ? GW_CONFIG_SECONDS_MAX : UINT64_MAX;
}

#include "uwsgi_options.h"

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

const opt_t *gw__options_find(const char *name, size_t len)
{
    for (size_t i = 0; i < gw__options_n; i++)
        if (name_matches(&gw__options[i], name, len))
            return &gw__options[i];
    return NULL;
}

const opt_t *gw__options_find_short(char s)
{
    for (size_t i = 0; i < gw__options_n; i++)
        if (gw__options[i].short_name == s)
            return &gw__options[i];
    return NULL;
}

const opt_t *gw__options_find_name(const char *name)
{
    return gw__options_find(name, strlen(name));
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
bool gw__options_closest(const char *name, char *buf, size_t n)
{
    size_t len = strlen(name), best = SIZE_MAX, limit = len < 6 ? 1 : len < 12 ? 2 : 3;

    for (size_t i = 0; i < gw__options_n; i++) {
        const char *t = gw__options[i].name;
        size_t tl = strlen(t);
        const char *a = gw__options[i].aliases;
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

bool gw__options_known_to_uwsgi(const char *name)
{
    return bsearch(name, uwsgi_option_names,
                   sizeof(uwsgi_option_names) / sizeof(uwsgi_option_names[0]),
                   sizeof(uwsgi_option_names[0]), cmp_name) != NULL;
}

bool gw__options_is_meta(const opt_t *o)
{
    return o->off == OFF(show_help) || o->off == OFF(show_version) ||
           o->off == OFF(print_config) || o->off == OFF(print_man);
}
