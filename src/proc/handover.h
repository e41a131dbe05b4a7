/* The hand-over across a reload: the master re-executes its binary, and the
 * new image takes from the old one its listening sockets, its workers (to
 * stop once the new ones serve), its scoreboard (the statistics and the old
 * workers' slots), its --stats socket and the configuration the reload's
 * check read. They pass as inherited descriptors named in environment
 * variables:
 *
 *   GANGWAY__LISTEN_FDS     "3,4us": descriptors in order, "u" marking the
 *                           uwsgi ones, "s" those systemd handed in
 *   GANGWAY__OLD_WORKERS    "101,102": the previous image's workers
 *   GANGWAY__SCOREBOARD_FD  "5": the scoreboard's memfd
 *   GANGWAY__STATS_FD       "6": the --stats listening socket
 *   GANGWAY__CONFIG_FD      "7": a sealed memfd holding the configuration
 *                           the check validated (gw_config_save()), which
 *                           the new image loads instead of reading the ini
 *                           files again
 *
 * The first two keep the format of gangway 0.2.0, so a reload into an older
 * binary still takes over the sockets and stops the workers. Which binary
 * speaks the rest is asked first: the reload's checker (`BINARY ARGS
 * --check-config`) finds GANGWAY__CHECK_FD, a pipe, and once the check
 * passes writes there the hand-over version it takes. A binary that writes
 * nothing (an older gangway) gets the first two only: it would bind its
 * --stats address again, held by a socket it does not know of. The checker
 * also finds GANGWAY__CHECK_CONFIG_FD, the memfd it writes the configuration
 * into (version 2), and GANGWAY__CHECK_STATS_FD, the running master's
 * --stats socket, so that it can tell "the address this master serves" from
 * "an address someone else holds". */
#ifndef GW_HANDOVER_H
#define GW_HANDOVER_H

#include "proc/listen.h"

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define GW_ENV_FDS         "GANGWAY__LISTEN_FDS"
#define GW_ENV_OLD_WORKERS "GANGWAY__OLD_WORKERS"
#define GW_ENV_SCOREBOARD  "GANGWAY__SCOREBOARD_FD"
#define GW_ENV_STATS       "GANGWAY__STATS_FD"
#define GW_ENV_CONFIG      "GANGWAY__CONFIG_FD"
#define GW_ENV_CHECK       "GANGWAY__CHECK_FD"
#define GW_ENV_CHECK_CONFIG "GANGWAY__CHECK_CONFIG_FD"
#define GW_ENV_CHECK_STATS "GANGWAY__CHECK_STATS_FD"

/* The hand-over this binary takes: 1, the first four variables; 2, the
 * configuration too (its checker wrote it to GANGWAY__CHECK_CONFIG_FD). */
#define GW_HANDOVER_VERSION 2

typedef struct gw_handover_sock {
    int fd;
    enum gw_proto proto;
    bool is_activated; /* systemd's: its file is not ours to remove */
    /* It served TLS or the PROXY protocol: bare, without the context the
     * configuration gave it, it must not serve (a TLS port answering plain
     * HTTP, a PROXY port believing no header). */
    bool needs_context;
} gw_handover_sock_t;

typedef struct gw_handover {
    bool is_present; /* this image was re-executed by a reload */
    gw_handover_sock_t *socks;
    size_t nsocks;
    pid_t *old;
    size_t nold;
    int scoreboard_fd; /* -1: none */
    int stats_fd;      /* -1: none */
    int config_fd;     /* the configuration the check validated (-1: none) */
    int check_fd;      /* a reload's checker: its answer goes there (-1: none) */
    int check_config_fd; /* a reload's checker: the configuration goes there */
    int check_stats_fd;  /* a reload's checker: the running master's --stats socket */
} gw_handover_t;

/* Reads the hand-over variables and unsets them (neither the app nor any
 * process started later sees them). Without GW_ENV_FDS there is no
 * hand-over (is_present false) and the other variables are an error, but
 * the GW_ENV_CHECK ones (this is a reload's checker: check_fd, a pipe;
 * check_config_fd, a regular file; check_stats_fd, a socket). Every value is
 * checked: descriptors above 2 that are open sockets (the scoreboard and the
 * configuration: regular files), named once; pids above 0, named once. Then
 * every descriptor above 2 that no variable names is closed: what the
 * previous image left open without close-on-exec (a preloaded app's files,
 * the binary the master executed) must not reach the new app or its
 * workers. A process that is neither a re-executed master nor a checker
 * closes nothing (systemd's LISTEN_FDS are still to come). The descriptors
 * named become the caller's, to adopt or close. 0, or -EINVAL / -ENOMEM
 * with a one-line reason in err (nothing is then owned, nothing closed). */
int gw_handover_take(gw_handover_t *h, char *err, size_t errlen);

/* A reload's checker whose check passed: writes GW_HANDOVER_VERSION to
 * check_fd and closes it. No-op without check_fd. */
void gw_handover_answer_check(gw_handover_t *h);

/* Frees the lists; closes no descriptor. Accepts a zeroed h. */
void gw_handover_dispose(gw_handover_t *h);

/* The "NAME=value" strings that describe h to the next image, into vars
 * (at most GW_HANDOVER_VARS, NULL-terminated; fds of -1 are left out), each
 * malloc'ed to its exact size: no list is ever cut short. 0 or -ENOMEM
 * (nothing allocated). gw_handover_free_vars() frees them. */
#define GW_HANDOVER_VARS 5
int gw_handover_vars(const gw_handover_t *h, char *vars[GW_HANDOVER_VARS + 1]);
void gw_handover_free_vars(char *vars[GW_HANDOVER_VARS + 1]);

#endif
