/* The one option table: every option is declared once in options.c (name,
 * aliases, type, default, help). The command line, GANGWAY_<NAME> environment
 * variables and uWSGI-style ini files all go through it, and --help,
 * --print-config and the man page are generated from it. Precedence: command
 * line over environment over ini files over defaults. The parsed result is a
 * gw_config_t that is handed, const, to whoever needs it. */
#ifndef GW_CONFIG_H
#define GW_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define GW_MAX_WORKERS 256

/* The largest value a time option takes (about 136 years): every consumer
 * turns seconds into 64-bit milliseconds and adds them to the clock or to
 * another such value, which this keeps far from overflowing. */
#define GW_CONFIG_SECONDS_MAX UINT32_MAX

typedef struct gw_strlist {
    const char **v; /* borrowed from argv, or owned by the config */
    size_t n;
} gw_strlist_t;

typedef struct gw_config {
    /* application */
    const char *module;      /* "pkg.mod" or "pkg.mod:callable" */
    const char *wsgi_file;
    const char *callable;    /* NULL: "application", then "app" */
    const char *chdir;
    gw_strlist_t pythonpath;
    const char *virtualenv;
    gw_strlist_t env;

    /* sockets */
    gw_strlist_t http;
    gw_strlist_t uwsgi;
    gw_strlist_t uwsgi_allow_from;
    gw_strlist_t https;        /* "ADDR,CERT,KEY[,CIPHERS[,CA]]" (serve/tls.c reads the rest) */
    uint64_t buffer_size;
    uint64_t listen_backlog;
    const char *chmod_socket; /* octal mode for unix sockets; "" means 666 */
    const char *chown_socket; /* "user[:group]" for unix sockets */
    bool reuse_port;
    uint64_t defer_accept;     /* seconds of TCP_DEFER_ACCEPT; 0: off */
    bool no_defer_accept;      /* uWSGI's name: true forces defer_accept to 0 */

    /* TLS (serve/tls.c) */
    const char *tls_protocols;
    const char *tls_ciphers;
    gw_strlist_t tls_sni;      /* "NAME,CERT,KEY" or uWSGI's "NAME CERT,KEY" */
    const char *tls_client_ca;
    const char *tls_client_verify; /* "required" or "optional" */
    uint64_t tls_handshake_timeout;
    bool tls_tickets;               /* session tickets (resumption); false: every handshake full */
    gw_strlist_t tls_ocsp;     /* "CERT=FILE" */
    /* proxies and load balancers */
    gw_strlist_t http_proxy_protocol; /* HTTP listeners that take a PROXY header */
    bool enable_proxy_protocol;       /* every HTTP listener does */
    bool tls_proxy_protocol;          /* every --https listener does, before the handshake */
    gw_strlist_t proxy_allow_from;    /* empty: forwarded_allow_ips */
    gw_strlist_t forwarded_allow_ips; /* empty: loopback */
    const char *forwarded_headers;    /* "x-forwarded", "forwarded", "both" */
    bool forwarded_host;
    bool log_forwarded;

    /* processes */
    uint64_t workers;          /* 0 until resolved: "auto" is the CPU count */
    bool master;               /* accepted; the master always runs */
    bool preload;              /* import the app in the master, before forking */
    bool lazy_apps;            /* uWSGI's name for gangway's default; false: preload */
    uint64_t shutdown_delay;
    uint64_t max_requests;
    uint64_t max_requests_jitter;
    uint64_t min_worker_lifetime;
    uint64_t max_worker_lifetime;
    uint64_t reload_on_rss;    /* MB */
    uint64_t threads;          /* requests a worker runs at once, on as many Python threads */
    uint64_t thread_stacksize; /* KiB; 0: the system's default */
    uint64_t queue_timeout;    /* seconds a request may wait for a thread; 0: no limit */
    uint64_t harakiri;
    uint64_t harakiri_grace;
    gw_strlist_t touch_reload;
    uint64_t reload_check_timeout; /* seconds a reload's check may take */
    const char *pidfile;
    const char *uid;
    const char *gid;
    bool no_initgroups;        /* --uid without the user's supplementary groups */
    const char *umask;
    bool vacuum;

    /* static files */
    gw_strlist_t static_map;
    const char *static_index;
    gw_strlist_t static_expires;      /* "SECONDS", or uWSGI's "REGEX SECONDS" on file paths */
    gw_strlist_t static_expires_uri;  /* "REGEX SECONDS" on request paths */
    uint64_t static_cache;  /* seconds a resolved file stays open; 0: resolve each time */
    bool static_gzip;
    bool static_dotfiles;
    bool static_fallthrough;

    /* limits */
    uint64_t limit_request_line;
    uint64_t limit_request_field_size;
    uint64_t limit_request_fields;
    uint64_t limit_request_headers;
    uint64_t limit_body;
    uint64_t body_buffer_size;
    const char *body_tmpdir;
    uint64_t max_connections;

    /* timeouts, seconds */
    uint64_t header_timeout;
    uint64_t body_timeout;
    uint64_t keepalive_timeout;
    uint64_t write_timeout;
    uint64_t graceful_timeout;

    /* logging and statistics */
    const char *stats;
    const char *log_file;
    const char *access_log;
    const char *log_format;
    bool log_json;
    bool disable_logging;
    bool request_id;

    /* configuration */
    gw_strlist_t ini;
    bool strict;
    bool print_config;
    bool show_config;
    bool check_config;
    bool show_help;
    bool show_version;
    bool print_man;

    /* uWSGI options accepted with nothing to do (or a note) */
    gw_strlist_t plugins;
    bool need_app, die_on_term, enable_threads, single_interpreter, thunder_lock;

    struct gw_config_priv *_priv; /* where each value came from; owned strings */
} gw_config_t;

/* Fills c with the defaults. */
void gw_config_init(gw_config_t *c);

/* Reads every source into c: the ini files named by --ini, a positional
 * FILE.ini or GANGWAY_INI, then GANGWAY_<NAME> variables from envp, then
 * argv. Warnings (an unknown key, a uWSGI option gangway does not implement)
 * go to stderr as one line each, naming file and line; with --strict they
 * are errors. Returns 0, or -EINVAL after printing what is wrong. */
int gw_config_load(gw_config_t *c, int argc, char **argv, char **envp);

/* The configuration as loaded, for a reload's new image (GANGWAY__CONFIG_FD):
 * every assignment that was applied (ini entries, GANGWAY_* variables,
 * command-line options; --check-config and the options that only print
 * left out), in order, each with its origin, written to fd from its start.
 * 0 or a negative errno. */
int gw_config_save(const gw_config_t *c, int fd);

/* Loads what gw_config_save() wrote to fd, applying the same assignments in
 * the same order: the result is the configuration that was saved, whatever
 * became of the files it was read from. No ini file is read, no variable,
 * no argument; nothing is printed but the notes a load prints. Returns 0,
 * or -EINVAL (not a saved configuration, or a value this binary refuses:
 * one line on stderr) / -ENOMEM / -errno of the read. */
int gw_config_load_saved(gw_config_t *c, int fd);

/* Frees what loading allocated. Strings in c die with it. */
void gw_config_dispose(gw_config_t *c);

/* "uwsgi.ini:12", "GANGWAY_WORKERS", "command line" or "default": where the
 * option named name got its value (a list's value number i; i is ignored
 * for other options), for error messages. */
const char *gw_config_origin(const gw_config_t *c, const char *name, size_t i, char *buf,
                             size_t n);

/* Prints the one line a bad value gets, as if the option's own parser had
 * refused it ("gangway: uwsgi.ini:7: invalid value '9x' for umask (why)"),
 * for values judged after loading. value is the i-th of a list. */
void gw_config_bad_value(const gw_config_t *c, const char *name, size_t i, const char *value,
                         const char *why);

/* --help, --print-config and the man page, generated from the option table. */
void gw_config_print_help(FILE *out);
void gw_config_print(const gw_config_t *c, FILE *out);
void gw_config_print_man(FILE *out, const char *version);

#endif
