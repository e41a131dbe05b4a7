#include "signals.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

static int wfd = -1;
static int handled[16];
static size_t nhandled;

static void on_signal(int sig)
{
    int saved = errno;
    unsigned char b = (unsigned char)sig;
    /* A full pipe already holds wake-ups; dropping this byte loses nothing
     * the loop will not see. */
    (void)!write(wfd, &b, 1);
    errno = saved;
}

int gw_signals_open(const int *sigs, size_t n)
{
    struct sigaction sa;
    sigset_t unblock;
    int p[2];

    if (n > sizeof(handled) / sizeof(handled[0]))
        return -EINVAL;
    if (pipe2(p, O_NONBLOCK | O_CLOEXEC) < 0)
        return -errno;
    wfd = p[1];
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
    sigprocmask(SIG_UNBLOCK, &unblock, NULL);
    signal(SIGPIPE, SIG_IGN);
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
