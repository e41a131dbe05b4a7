/* The workers' notes to the master, on a socket pair: "I serve", and "replace
 * me" (a worker recycling itself), which with --reuse-port carries the
 * worker's own sockets; those are held here until its successor starts with
 * them. Part of the master (proc/master_priv.h). */
#include "proc/master_priv.h"

#include "core/clock.h"
#include "core/log.h"
#include "serve/server.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Closes sockets a recycling worker sent (by listener, -1: none); NULL
 * passes. */
static void free_sockets(master_t *m, int *fds)
{
    if (!fds)
        return;
    for (size_t k = 0; k < m->nl; k++)
        if (fds[k] >= 0)
            close(fds[k]);
    free(fds);
}

/* Closes the sockets a recycling worker sent for its successor. */
void gw__notes_drop_handoff(master_t *m, wproc_t *w)
{
    free_sockets(m, w->handoff);
    w->handoff = NULL;
}

/* The recycling worker whose successor slot i gets, when it sent its
 * sockets along. */
wproc_t *gw__notes_donor(master_t *m, size_t i)
{
    for (size_t j = 0; j < NSLOTS; j++)
        if (m->w[j].pid && m->w[j].successor == i + 1 && m->w[j].handoff)
            return &m->w[j];
    return NULL;
}

/* Worker i recycles itself (its slot says why) and serves until a
 * replacement does: progress() (master.c) starts one and then tells it to stop.
 * handoff: its --reuse-port sockets by listener (taken over), or NULL. */
void gw__notes_recycle(master_t *m, size_t i, int *handoff)
{
    wproc_t *w = &m->w[i];

    if (w->is_retiring || m->is_stopping) {
        free_sockets(m, handoff);
        return;
    }
    if (!w->is_recycling) {
        w->is_recycling = true;
        w->recycle_ms = gw_clock_ms();
    }
    /* The tick may have seen the reason in the slot before the note came:
     * the sockets still go to a successor that has not started yet. An old
     * generation's worker gets none: the new one replaces it. */
    if (w->handoff || w->generation != m->generation ||
        (w->successor && m->w[w->successor - 1].pid))
        free_sockets(m, handoff);
    else
        w->handoff = handoff;
}

/* The sockets a note carried (SCM_RIGHTS), by --reuse-port listener: a
 * recycling worker's own, in the order of the listeners; NULL when there
 * are none or they do not match (closed then). */
static int *note_sockets(master_t *m, struct msghdr *mh)
{
    int fds[GW_NOTE_FDS_MAX], *out = NULL;
    size_t n = 0, want = 0;

    for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
        size_t k;
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        if (k > GW_NOTE_FDS_MAX - n)
            k = GW_NOTE_FDS_MAX - n; /* cannot be: the buffer holds no more */
        memcpy(fds + n, CMSG_DATA(c), k * sizeof(int));
        n += k;
    }
    if (!n)
        return NULL;
    for (size_t k = 0; k < m->nl; k++)
        want += m->ls[k].is_reuse_port;
    if (n == want && !(mh->msg_flags & MSG_CTRUNC) && (out = malloc(m->nl * sizeof(*out)))) {
        for (size_t k = 0, j = 0; k < m->nl; k++)
            out[k] = m->ls[k].is_reuse_port ? fds[j++] : -1;
        return out;
    }
    for (size_t k = 0; k < n; k++)
        close(fds[k]);
    return NULL;
}

/* Takes the workers' notes: "I serve", and "replace me" (GW_NOTE_REPLACE,
 * with --reuse-port carrying the worker's sockets). A good start ends a run
 * of failed ones: the count and the back-off start over. Read before exits
 * are handled too, so that a worker that said it serves and died at once is
 * not taken for one that never started. */
void gw__notes_read(master_t *m)
{
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(GW_NOTE_FDS_MAX * sizeof(int))];
    } ctl;
    uint16_t id;

    for (;;) {
        struct iovec iov = {.iov_base = &id, .iov_len = sizeof(id)};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                            .msg_controllen = sizeof(ctl.buf)};
        ssize_t n;
        int *handoff;
        bool is_replace;

        id = 0;
        n = recvmsg(m->notify.fd, &mh, MSG_CMSG_CLOEXEC);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            break;
        handoff = note_sockets(m, &mh);
        is_replace = id & GW_NOTE_REPLACE;
        id &= (uint16_t)~GW_NOTE_REPLACE;
        if (n != sizeof(id) || id < 1 || id > NSLOTS || !m->w[id - 1].pid || !is_replace)
            free_sockets(m, handoff); /* only a "replace me" carries sockets */
        if (n != sizeof(id) || id < 1 || id > NSLOTS || !m->w[id - 1].pid)
            continue;
        if (is_replace) {
            gw__notes_recycle(m, id - 1u, handoff);
            continue;
        }
        m->w[id - 1].is_ready = true;
        m->has_served = true;
        m->failures = 0;
        if (m->is_ready)
            gw_log_error("worker %u ready (pid %d)", id, (int)m->w[id - 1].pid);
    }
}
