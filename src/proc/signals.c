#include "proc/signals.h"

#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t wfd = -1;
static int handled[16];
static size_t nhandled;
/* A child between fork() and its own gw_signals_open(): what arrived. */
static volatile sig_atomic_t pending[65];

static void on_signal(int sig)
{
    int saved = errno;
    unsigned char b = (unsigned char)sig;

    if (wfd < 0) {
        if (sig > 0 && sig < 65)
            pending[sig] = 1;
        return;
    }
    /* A full pipe already holds wake-ups; dropping this byte loses nothing
     * the loop will not see. */
    (void)!write(wfd, &b, 1);
    errno = saved;
}

/* Does nothing: the signal interrupts no one and kills no one, and unlike
 * SIG_IGN it is not inherited across execve. */
static void on_ignored(int sig)
{
    (void)sig;
}

void gw_signals_ignore(const int *sigs, size_t n)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_ignored;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < n; i++) {
        sigaction(sigs[i], &sa, NULL);
        /* No longer ours to reset: gw_signals_open() would put it back to
         * SIG_DFL (a worker inherits the master's set). */
        for (size_t j = 0; j < nhandled; j++) {
            if (handled[j] == sigs[i]) {
                handled[j] = handled[--nhandled];
                break;
            }
        }
        if (sigs[i] > 0 && sigs[i] < 65)
            pending[sigs[i]] = 0;
    }
}

int gw_signals_open(const int *sigs, size_t n)
{
    static const int pipe_sig[] = {SIGPIPE};
    struct sigaction sa;
    sigset_t unblock;
    int p[2];

    if (n > sizeof(handled) / sizeof(handled[0]))
        return -EINVAL;
    if (pipe2(p, O_NONBLOCK | O_CLOEXEC) < 0)
        return -errno;
    /* Signals of an earlier set (a forked child's parent's) that this set
     * does not take go back to their defaults. */
    for (size_t i = 0; i < nhandled; i++) {
        bool keep = false;
        for (size_t j = 0; j < n && !keep; j++)
            keep = sigs[j] == handled[i];
        if (!keep) {
            signal(handled[i], SIG_DFL);
            pending[handled[i]] = 0;
        }
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigfillset(&sa.sa_mask);
    sigemptyset(&unblock);
    for (size_t i = 0; i < n; i++) {
        sigaction(sigs[i], &sa, NULL);
        sigaddset(&unblock, sigs[i]);
        handled[i] = sigs[i];
    }
    nhandled = n;
    wfd = p[1];
    /* What a forked child received before it got here goes in first (from
     * here on, the handler writes itself). */
    for (int sig = 1; sig < 65; sig++) {
        if (pending[sig]) {
            unsigned char b = (unsigned char)sig;
            pending[sig] = 0;
            (void)!write(p[1], &b, 1);
        }
    }
    sigprocmask(SIG_UNBLOCK, &unblock, NULL);
    /* A write to a closed socket or pipe returns EPIPE instead of killing
     * us; the app's `sh -c 'yes | head'` still gets its SIGPIPE. */
    gw_signals_ignore(pipe_sig, 1);
    return p[0];
}

int gw_signals_next(int fd)
{
    unsigned char b;
    ssize_t r;

    do {
        r = read(fd, &b, 1);
    } while (r < 0 && errno == EINTR);
    return r == 1 ? b : 0;
}

void gw_signals_block(sigset_t *old)
{
    sigset_t all;
    sigemptyset(&all);
    for (size_t i = 0; i < nhandled; i++)
        sigaddset(&all, handled[i]);
    sigprocmask(SIG_BLOCK, &all, old);
}

void gw_signals_restore(const sigset_t *old)
{
    sigprocmask(SIG_SETMASK, old, NULL);
}

void gw_signals_hold(const int *sigs, size_t n, sigset_t *old)
{
    sigset_t set;

    sigemptyset(&set);
    for (size_t i = 0; i < n; i++)
        sigaddset(&set, sigs[i]);
    sigprocmask(SIG_BLOCK, &set, old);
}

void gw_signals_forked(int fd, const sigset_t *old)
{
    /* The handlers stay; with no pipe they only remember what came. */
    if (fd >= 0)
        close(fd);
    if (wfd >= 0)
        close(wfd);
    wfd = -1;
    for (int sig = 1; sig < 65; sig++)
        pending[sig] = 0;
    sigprocmask(SIG_SETMASK, old, NULL);
}

void gw_signals_close(int fd)
{
    for (size_t i = 0; i < nhandled; i++)
        signal(handled[i], SIG_DFL);
    nhandled = 0;
    if (fd >= 0)
        close(fd);
    if (wfd >= 0)
        close(wfd);
    wfd = -1;
}
