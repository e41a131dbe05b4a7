/* Unit tests for the hand-over of a reload: what one image writes, the next
 * reads back exactly, however long the lists; every bad value is refused
 * with a reason and nothing taken; descriptors not named are closed. */
#include "proc/handover.c"

#include "check.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>

static void clear_env(void)
{
    unsetenv(GW_ENV_CHECK);
    unsetenv(GW_ENV_FDS);
    unsetenv(GW_ENV_OLD_WORKERS);
    unsetenv(GW_ENV_SCOREBOARD);
    unsetenv(GW_ENV_STATS);
    unsetenv(GW_ENV_CONFIG);
    unsetenv(GW_ENV_CHECK_CONFIG);
    unsetenv(GW_ENV_CHECK_STATS);
}

/* Sets the variables from "NAME=value" strings, as execve would. */
static void put_vars(char **vars)
{
    clear_env();
    for (size_t i = 0; vars[i]; i++) {
        char *eq = strchr(vars[i], '=');
        *eq = '\0';
        setenv(vars[i], eq + 1, 1);
        *eq = '=';
    }
}

static int take(const char *fds, const char *old, const char *sb, const char *st, char *err,
                size_t errlen)
{
    gw_handover_t h;
    int rc;

    clear_env();
    if (fds)
        setenv(GW_ENV_FDS, fds, 1);
    if (old)
        setenv(GW_ENV_OLD_WORKERS, old, 1);
    if (sb)
        setenv(GW_ENV_SCOREBOARD, sb, 1);
    if (st)
        setenv(GW_ENV_STATS, st, 1);
    err[0] = '\0';
    rc = gw_handover_take(&h, err, errlen);
    gw_handover_dispose(&h);
    return rc;
}

static void test_nothing_handed_over(void)
{
    gw_handover_t h;
    char err[256];

    clear_env();
    CHECK_INT(gw_handover_take(&h, err, sizeof(err)), 0);
    CHECK(!h.is_present && h.nsocks == 0 && h.nold == 0);
    CHECK(h.scoreboard_fd == -1 && h.stats_fd == -1);
    gw_handover_dispose(&h);
}

static void test_bad_values_are_refused(int sock, int file)
{
    char err[256], s[32], f[32], two[64];

    snprintf(s, sizeof(s), "%d", sock);
    snprintf(f, sizeof(f), "%d", file);
    snprintf(two, sizeof(two), "%d,%du", sock, sock);
    CHECK_INT(take(NULL, "12", NULL, NULL, err, sizeof(err)), -EINVAL);
    CHECK(strstr(err, "GANGWAY__OLD_WORKERS is set without GANGWAY__LISTEN_FDS") != NULL);
    CHECK_INT(take(NULL, NULL, f, NULL, err, sizeof(err)), -EINVAL);
    const char *bad_lists[] = {"",    ",",  "x",  "3,",          ",3",         "3,,4", "3x",
                               "3su", "3cs", "-3", "+3", "99999999999", "2147483648", " 3",   "3 "};
    for (size_t i = 0; i < sizeof(bad_lists) / sizeof(bad_lists[0]); i++) {
        CHECK_INT(take(bad_lists[i], NULL, NULL, NULL, err, sizeof(err)), -EINVAL);
        CHECK(strstr(err, "want descriptors") != NULL);
        CHECK(strstr(err, "set only by a reloading gangway master") != NULL);
    }
    CHECK_INT(take("1", NULL, NULL, NULL, err, sizeof(err)), -EINVAL);
    CHECK(strstr(err, "standard input, output or error") != NULL);
    CHECK_INT(take("1000000", NULL, NULL, NULL, err, sizeof(err)), -EINVAL);
    CHECK(strstr(err, "descriptor 1000000: Bad file descriptor") != NULL);
    CHECK_INT(take(f, NULL, NULL, NULL, err, sizeof(err)), -EINVAL);
    CHECK(strstr(err, "is not a socket") != NULL);
    CHECK_INT(take(two, NULL, NULL, NULL, err, sizeof(err)), -EINVAL);
    CHECK(strstr(err, "named twice") != NULL);
    CHECK_INT(take(s, NULL, s, NULL, err, sizeof(err)), -EINVAL);
    CHECK(strstr(err, "is not a regular file") != NULL);
    CHECK_INT(take(s, NULL, NULL, f, err, sizeof(err)), -EINVAL);
    CHECK(strstr(err, "GANGWAY__STATS_FD: descriptor") != NULL);
    CHECK_INT(take(s, NULL, "5x", NULL, err, sizeof(err)), -EINVAL);
    CHECK_INT(take(s, "0", NULL, NULL, err, sizeof(err)), -EINVAL);
    CHECK_INT(take(s, "7,7", NULL, NULL, err, sizeof(err)), -EINVAL);
    CHECK(strstr(err, "want distinct process ids") != NULL);
    CHECK_INT(take(s, "7,", NULL, NULL, err, sizeof(err)), -EINVAL);
    CHECK_INT(take(s, "x", NULL, NULL, err, sizeof(err)), -EINVAL);
    /* a refused hand-over took nothing: the variables and descriptors stay */
    CHECK(getenv(GW_ENV_FDS) != NULL);
    CHECK(fcntl(sock, F_GETFD) >= 0 && fcntl(file, F_GETFD) >= 0);
}

/* What one image writes the next reads back, however long the lists (the
 * listener list once had a 512-byte buffer, the pid list 4096). Last: a
 * successful take closes every descriptor it does not name. */
static void test_round_trip_closes_the_rest(void)
{
    enum { NSOCK = 300, NOLD = 1024 };
    gw_handover_t out = {.scoreboard_fd = -1, .stats_fd = -1, .config_fd = -1}, in;
    char *vars[GW_HANDOVER_VARS + 1];
    char err[256];
    int stray = open("/dev/null", O_RDONLY); /* no O_CLOEXEC: what an app leaves */
    int sb = memfd_create("test", 0);
    int st = socket(AF_INET, SOCK_STREAM, 0);
    int cfg = memfd_create("cfg", 0);

    CHECK(stray >= 0 && sb >= 0 && st >= 0 && cfg >= 0);
    out.socks = calloc(NSOCK, sizeof(*out.socks));
    out.old = calloc(NOLD, sizeof(*out.old));
    for (size_t i = 0; i < NSOCK; i++) {
        out.socks[i].fd = socket(AF_INET, SOCK_STREAM, 0);
        out.socks[i].proto = i % 3 == 1 ? GW_PROTO_UWSGI : GW_PROTO_HTTP;
        out.socks[i].is_activated = i % 5 == 2;
        out.socks[i].needs_context = i % 7 < 3; /* every combination with the rest */
        CHECK(out.socks[i].fd > 2);
    }
    out.nsocks = NSOCK;
    for (size_t i = 0; i < NOLD; i++)
        out.old[i] = (pid_t)(2000000000 + i); /* ten digits each */
    out.nold = NOLD;
    out.scoreboard_fd = sb;
    out.stats_fd = st;
    out.config_fd = cfg;
    CHECK_INT(gw_handover_vars(&out, vars), 0);
    put_vars(vars);
    gw_handover_free_vars(vars);
    CHECK(vars[0] == NULL);

    CHECK_INT(gw_handover_take(&in, err, sizeof(err)), 0);
    CHECK(in.is_present);
    CHECK_INT(in.nsocks, NSOCK);
    for (size_t i = 0; i < NSOCK && i < in.nsocks; i++) {
        CHECK_INT(in.socks[i].fd, out.socks[i].fd);
        CHECK_INT(in.socks[i].proto, out.socks[i].proto);
        CHECK_INT(in.socks[i].is_activated, out.socks[i].is_activated);
        CHECK_INT(in.socks[i].needs_context, out.socks[i].needs_context);
    }
    CHECK_INT(in.nold, NOLD);
    for (size_t i = 0; i < NOLD && i < in.nold; i++)
        CHECK_INT(in.old[i], out.old[i]);
    CHECK_INT(in.scoreboard_fd, sb);
    CHECK_INT(in.stats_fd, st);
    CHECK_INT(in.config_fd, cfg);
    /* taken: unset, so that nothing started later sees them */
    CHECK(!getenv(GW_ENV_FDS) && !getenv(GW_ENV_OLD_WORKERS) && !getenv(GW_ENV_SCOREBOARD) &&
          !getenv(GW_ENV_STATS) && !getenv(GW_ENV_CONFIG));
    /* named descriptors stay, the stray one is closed */
    CHECK(fcntl(sb, F_GETFD) >= 0 && fcntl(st, F_GETFD) >= 0 && fcntl(cfg, F_GETFD) >= 0);
    CHECK(fcntl(out.socks[0].fd, F_GETFD) >= 0 && fcntl(out.socks[NSOCK - 1].fd, F_GETFD) >= 0);
    CHECK(fcntl(stray, F_GETFD) < 0 && errno == EBADF);
    gw_handover_dispose(&in);
    gw_handover_dispose(&out);

    /* empty lists: a master whose workers were all gone */
    out = (gw_handover_t){.scoreboard_fd = -1, .stats_fd = -1, .config_fd = -1};
    gw_handover_sock_t one = {.fd = st};
    out.socks = &one;
    out.nsocks = 1;
    char want[64];
    snprintf(want, sizeof(want), "GANGWAY__LISTEN_FDS=%d", st);
    CHECK_INT(gw_handover_vars(&out, vars), 0);
    CHECK_STR(vars[0], want);
    CHECK(strncmp(vars[1], "GANGWAY__OLD_WORKERS=", 21) == 0 && vars[1][21] == '\0');
    CHECK(vars[2] == NULL);
    put_vars(vars);
    gw_handover_free_vars(vars);
    CHECK_INT(gw_handover_take(&in, err, sizeof(err)), 0);
    CHECK(in.is_present && in.nsocks == 1 && in.nold == 0 && in.scoreboard_fd == -1);
    gw_handover_dispose(&in);
}

/* A reload's checker: GANGWAY__CHECK_FD, a pipe, the answer being the
 * hand-over version; GANGWAY__CHECK_CONFIG_FD, where it writes the
 * configuration, and GANGWAY__CHECK_STATS_FD, the master's --stats socket.
 * It keeps those and closes every other descriptor above 2 (the binary the
 * master ran it from). Runs after the round trip: it closes descriptors. */
static void test_the_checker_answers(void)
{
    gw_handover_t h;
    char err[256], v[16], v2[16], v3[16], buf[16] = "";
    int p[2], cfg = memfd_create("cfg", 0), st = socket(AF_INET, SOCK_STREAM, 0);
    int stray = open("/dev/null", O_RDONLY);

    CHECK(pipe(p) == 0 && cfg > 2 && st > 2 && stray > 2);
    /* the reading end must survive the closing: as standard input */
    CHECK(dup2(p[0], 0) == 0);
    close(p[0]);
    clear_env();
    snprintf(v, sizeof(v), "%d", p[1]);
    snprintf(v2, sizeof(v2), "%d", cfg);
    snprintf(v3, sizeof(v3), "%d", st);
    setenv(GW_ENV_CHECK, v, 1);
    setenv(GW_ENV_CHECK_CONFIG, v2, 1);
    setenv(GW_ENV_CHECK_STATS, v3, 1);
    CHECK_INT(gw_handover_take(&h, err, sizeof(err)), 0);
    CHECK(!h.is_present && h.check_fd == p[1] && !getenv(GW_ENV_CHECK));
    CHECK(h.check_config_fd == cfg && h.check_stats_fd == st);
    CHECK(!getenv(GW_ENV_CHECK_CONFIG) && !getenv(GW_ENV_CHECK_STATS));
    CHECK(fcntl(cfg, F_GETFD) >= 0 && fcntl(st, F_GETFD) >= 0);
    CHECK(fcntl(stray, F_GETFD) < 0 && errno == EBADF);
    gw_handover_answer_check(&h);
    CHECK(h.check_fd == -1 && fcntl(p[1], F_GETFD) < 0);
    CHECK(read(0, buf, sizeof(buf) - 1) > 0);
    CHECK_INT(atoi(buf), GW_HANDOVER_VERSION);
    gw_handover_dispose(&h);

    /* the wrong kinds of descriptor are refused, nothing closed */
    setenv(GW_ENV_CHECK, v3, 1);
    CHECK_INT(gw_handover_take(&h, err, sizeof(err)), -EINVAL);
    CHECK(strstr(err, "GANGWAY__CHECK_FD: descriptor") && strstr(err, "is not a pipe"));
    CHECK(pipe(p) == 0);
    snprintf(v, sizeof(v), "%d", p[1]);
    setenv(GW_ENV_CHECK, v, 1);
    setenv(GW_ENV_CHECK_CONFIG, v3, 1);
    CHECK_INT(gw_handover_take(&h, err, sizeof(err)), -EINVAL);
    CHECK(strstr(err, "GANGWAY__CHECK_CONFIG_FD: descriptor") &&
          strstr(err, "is not a regular file"));
    CHECK(fcntl(p[0], F_GETFD) >= 0 && fcntl(cfg, F_GETFD) >= 0);
    setenv(GW_ENV_CHECK_CONFIG, v2, 1);
    setenv(GW_ENV_CHECK_STATS, v2, 1);
    CHECK_INT(gw_handover_take(&h, err, sizeof(err)), -EINVAL);
    CHECK(strstr(err, "GANGWAY__CHECK_STATS_FD: descriptor") && strstr(err, "is not a socket"));
    setenv(GW_ENV_FDS, v3, 1);
    CHECK_INT(gw_handover_take(&h, err, sizeof(err)), -EINVAL);
    CHECK(strstr(err, "GANGWAY__CHECK_FD is set with GANGWAY__LISTEN_FDS") != NULL);

    /* without the answer's pipe (a wrapper hid it), the rest is dropped:
     * an ordinary check, closing nothing */
    clear_env();
    setenv(GW_ENV_CHECK_CONFIG, v2, 1);
    setenv(GW_ENV_CHECK_STATS, v3, 1);
    CHECK_INT(gw_handover_take(&h, err, sizeof(err)), 0);
    CHECK(h.check_fd == -1 && h.check_config_fd == -1 && h.check_stats_fd == -1);
    CHECK(!getenv(GW_ENV_CHECK_CONFIG) && !getenv(GW_ENV_CHECK_STATS));
    CHECK(fcntl(p[0], F_GETFD) >= 0 && fcntl(cfg, F_GETFD) >= 0 && fcntl(st, F_GETFD) >= 0);
    gw_handover_dispose(&h);

    /* the configuration handed to a new image: with the sockets only */
    setenv(GW_ENV_CONFIG, v2, 1);
    CHECK_INT(gw_handover_take(&h, err, sizeof(err)), -EINVAL);
    CHECK(strstr(err, "GANGWAY__CONFIG_FD is set without GANGWAY__LISTEN_FDS") != NULL);
    clear_env();
    close(p[0]);
    close(p[1]);
    close(cfg);
    close(st);
}

int main(void)
{
    int sock = socket(AF_INET, SOCK_STREAM, 0);
    int file = open("/dev/null", O_RDONLY);

    test_nothing_handed_over();
    test_bad_values_are_refused(sock, file);
    test_round_trip_closes_the_rest();
    test_the_checker_answers();
    printf("handover: %d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
