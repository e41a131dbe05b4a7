/* gangway: a WSGI application server. */
#include "config/config.h"
#include "core/log.h"
#include "proc/handover.h"
#include "proc/master.h"
#include "proc/signals.h"
#include "proc/start.h"
#include "py/wsgi.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

extern char **environ;

/* GW_VERSION and GW_BUILD_OPTIONS ("libpython=static tls=openssl") come from the
 * Makefile, which owns the version and the build's choices. */

/* The binary a reload runs: the path gangway was started from (argv[0], or
 * found on PATH as the shell found it) when that is the file running now,
 * else what /proc/self/exe names now. Read at start, not at the reload: once
 * a package upgrade has replaced the file, /proc/self/exe is the old,
 * deleted inode. A symlink stays a symlink, so a new target is followed. */
static char *find_binary(const char *argv0, char *const *envp)
{
    struct stat self, st;
    char buf[PATH_MAX], *deleted;
    const char *path = NULL;
    ssize_t n;

    if (stat("/proc/self/exe", &self) == 0 && argv0 && *argv0) {
        if (strchr(argv0, '/')) {
            if (stat(argv0, &st) == 0 && st.st_dev == self.st_dev && st.st_ino == self.st_ino)
                return strdup(argv0);
        } else {
            for (size_t i = 0; envp[i] && !path; i++)
                if (strncmp(envp[i], "PATH=", 5) == 0)
                    path = envp[i] + 5;
            for (const char *p = path; p && *p;) {
                size_t dl = strcspn(p, ":");
                if (dl && dl < sizeof(buf) &&
                    snprintf(buf, sizeof(buf), "%.*s/%s", (int)dl, p, argv0) < (int)sizeof(buf) &&
                    stat(buf, &st) == 0 && st.st_dev == self.st_dev && st.st_ino == self.st_ino)
                    return strdup(buf);
                p += dl + (p[dl] == ':');
            }
        }
    }
    if ((n = readlink("/proc/self/exe", buf, sizeof(buf) - 1)) < 0)
        return strdup("/proc/self/exe");
    buf[n] = '\0';
    if ((deleted = strstr(buf, " (deleted)")) && !deleted[10])
        *deleted = '\0';
    return strdup(buf);
}

/* A copy of the environment gangway starts with, for the reload's exec:
 * systemd's LISTEN_* variables were for this image only. */
static char **copy_environ(void)
{
    static const char *const skip[] = {"LISTEN_PID=", "LISTEN_FDS=", "LISTEN_FDNAMES="};
    size_t n = 0, k = 0;
    char **v;

    while (environ[n])
        n++;
    if (!(v = calloc(n + 1, sizeof(*v))))
        return NULL;
    for (size_t i = 0; i < n; i++) {
        bool is_skipped = false;
        for (size_t j = 0; j < sizeof(skip) / sizeof(skip[0]); j++)
            is_skipped |= strncmp(environ[i], skip[j], strlen(skip[j])) == 0;
        if (!is_skipped && !(v[k++] = strdup(environ[i]))) {
            for (size_t j = 0; j < k; j++)
                free(v[j]);
            free(v);
            return NULL;
        }
    }
    return v;
}

static void free_environ(char **v)
{
    for (size_t i = 0; v && v[i]; i++)
        free(v[i]);
    free(v);
}

/* The configuration: the one a reload's check validated when the previous
 * image handed it over (files edited since then change nothing), else read
 * from the ini files, the environment and the command line. */
static int load_config(gw_config_t *cfg, int argc, char **argv, gw_handover_t *h)
{
    int rc;

    if (h->config_fd < 0)
        return gw_config_load(cfg, argc, argv, environ);
    rc = gw_config_load_saved(cfg, h->config_fd);
    close(h->config_fd);
    h->config_fd = -1;
    if (rc == 0)
        return 0;
    /* Only a damaged hand-over gets here: the files are the next best. */
    gw_log_error("reload: the configuration handed over cannot be read (%s): reading it again",
                 strerror(-rc));
    gw_config_dispose(cfg);
    return gw_config_load(cfg, argc, argv, environ);
}

/* The mask gangway started with, before hold_signals() changed it. */
static sigset_t start_mask;

/* Before anything of ours runs: a signal the master acts on, sent right
 * after the start (`kill -HUP` right after `gangway ... &`), waits for the
 * master's handlers instead of killing (SIGHUP, SIGUSR1) or stopping
 * (SIGTTIN, SIGTTOU) the process. A .preinit_array entry runs before every
 * constructor, the libraries' included, once the dynamic linker has loaded
 * them: only the exec itself and the linker's work come before it. What
 * does not run a master puts the mask back as it came. */
static void hold_signals(void)
{
    gw_master_hold_signals(&start_mask);
}
__attribute__((section(".preinit_array"), used)) static void (*const hold_signals_early)(void) =
    hold_signals;

int main(int argc, char **argv)
{
    gw_config_t cfg;
    gw_handover_t h;
    gw_master_exec_t ex = {.argv = argv, .cwd_fd = -1};
    char err[256];
    int rc;

    /* First of all: a previous image's hand-over (a reload) is checked and taken out
     * of the environment before anything reads it. */
    if (gw_handover_take(&h, err, sizeof(err)) < 0) {
        gw_log_error("%s", err);
        return 1;
    }
    ex.umask = umask(022);
    umask(ex.umask);
    if (!(ex.envp = copy_environ()) || !(ex.path = find_binary(argv[0], ex.envp))) {
        gw_log_error("cannot start: %s", strerror(ENOMEM));
        rc = 1;
        goto out;
    }
    ex.cwd_fd = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
    rc = load_config(&cfg, argc, argv, &h);
    if (rc < 0 || cfg.show_help || cfg.print_man || cfg.print_config || cfg.show_version ||
        cfg.check_config)
        gw_signals_restore(&start_mask);
    if (rc < 0) {
        rc = 2;
    } else if (cfg.show_help) {
        gw_config_print_help(stdout);
        rc = 0;
    } else if (cfg.print_man) {
        gw_config_print_man(stdout, GW_VERSION);
        rc = 0;
    } else if (cfg.print_config) {
        gw_config_print(&cfg, stdout);
        rc = 0;
    } else if (cfg.show_version) {
        printf("gangway %s\nPython %s, llhttp %d.%d.%d\nbuild: %s\n", GW_VERSION,
               gw_wsgi_python_version(), LLHTTP_VERSION_MAJOR, LLHTTP_VERSION_MINOR,
               LLHTTP_VERSION_PATCH, GW_BUILD_OPTIONS);
        rc = 0;
    } else if (!(rc = gw_start_check(&cfg, &h))) {
        if (cfg.show_config)
            gw_config_print(&cfg, stderr);
        rc = gw_start_serve(&cfg, &ex, &h, GW_VERSION);
        /* a reload's checker tells the master which hand-over it takes */
        if (cfg.check_config && rc == 0)
            gw_handover_answer_check(&h);
    }
    gw_config_dispose(&cfg);
out:
    gw_handover_dispose(&h);
    if (ex.cwd_fd >= 0)
        close(ex.cwd_fd);
    free((char *)ex.path);
    free_environ(ex.envp);
    return rc;
}
