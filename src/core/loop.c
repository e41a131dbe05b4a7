#include "core/loop.h"

#include "core/clock.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#define MAX_EVENTS 256

struct gw_loop {
    int epfd;
    bool is_running;
    gw_loop_hooks_t hooks;
    gw_timerq_t *queues;
    struct epoll_event events[MAX_EVENTS];
};

gw_loop_t *gw_loop_new(const gw_loop_hooks_t *hooks)
{
    gw_loop_t *loop = calloc(1, sizeof(*loop));
    if (!loop)
        return NULL;
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->epfd < 0) {
        int e = errno;
        free(loop);
        errno = e;
        return NULL;
    }
    if (hooks)
        loop->hooks = *hooks;
    gw_clock_update();
    return loop;
}

void gw_loop_free(gw_loop_t *loop)
{
    if (!loop)
        return;
    close(loop->epfd);
    free(loop);
}

static int ctl(gw_loop_t *loop, int op, gw_watch_t *w, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = w};
    if (epoll_ctl(loop->epfd, op, w->fd, &ev) < 0)
        return -errno;
    return 0;
}

int gw_loop_add(gw_loop_t *loop, gw_watch_t *w, uint32_t events)
{
    return ctl(loop, EPOLL_CTL_ADD, w, events);
}

int gw_loop_mod(gw_loop_t *loop, gw_watch_t *w, uint32_t events)
{
    return ctl(loop, EPOLL_CTL_MOD, w, events);
}

void gw_loop_del(gw_loop_t *loop, gw_watch_t *w)
{
    /* Failure means the fd was never added or is already closed: nothing to undo. */
    (void)epoll_ctl(loop->epfd, EPOLL_CTL_DEL, w->fd, NULL);
}

void gw_timerq_init(gw_loop_t *loop, gw_timerq_t *q, uint64_t ms)
{
    q->head.prev = q->head.next = &q->head;
    q->ms = ms;
    q->next_q = loop->queues;
    loop->queues = q;
}

void gw_timer_init(gw_timer_t *t, gw_timer_cb cb)
{
    t->prev = t->next = NULL;
    t->q = NULL;
    t->cb = cb;
}

void gw_timer_stop(gw_timer_t *t)
{
    if (!t->next)
        return;
    t->prev->next = t->next;
    t->next->prev = t->prev;
    t->prev = t->next = NULL;
    t->q = NULL;
}

void gw_timer_start(gw_timerq_t *q, gw_timer_t *t)
{
    gw_timer_stop(t);
    t->deadline_ms = gw_clock_ms() + q->ms;
    t->q = q;
    t->prev = q->head.prev;
    t->next = &q->head;
    q->head.prev->next = t;
    q->head.prev = t;
}

static int next_timeout(gw_loop_t *loop)
{
    uint64_t now = gw_clock_ms(), best = UINT64_MAX;
    for (gw_timerq_t *q = loop->queues; q; q = q->next_q) {
        gw_timer_t *t = q->head.next;
        if (t != &q->head && t->deadline_ms < best)
            best = t->deadline_ms;
    }
    if (best == UINT64_MAX)
        return 1000; /* wake once a second anyway: the Date cache and signals */
    if (best <= now)
        return 0;
    return best - now > 1000 ? 1000 : (int)(best - now);
}

static void expire(gw_loop_t *loop)
{
    uint64_t now = gw_clock_ms();
    for (gw_timerq_t *q = loop->queues; q; q = q->next_q) {
        /* A callback may stop or restart other timers of this queue; take the
         * head afresh each time. Restarted timers go to the tail with a later
         * deadline, so this ends. */
        for (;;) {
            gw_timer_t *t = q->head.next;
            if (t == &q->head || t->deadline_ms > now)
                break;
            gw_timer_stop(t);
            t->cb(loop, t);
        }
    }
}

void gw_loop_stop(gw_loop_t *loop)
{
    loop->is_running = false;
}

int gw_loop_run(gw_loop_t *loop)
{
    gw_loop_hooks_t *h = &loop->hooks;

    loop->is_running = true;
    while (loop->is_running) {
        int n, timeout;

        if (h->before_wait)
            h->before_wait(h->ctx);
        if (!loop->is_running)
            break;
        timeout = next_timeout(loop);
        if (h->has_pending && h->has_pending(h->ctx))
            timeout = 0;
        if (h->block_begin)
            h->block_begin(h->ctx);
        n = epoll_wait(loop->epfd, loop->events, MAX_EVENTS, timeout);
        int err = errno;
        if (h->block_end)
            h->block_end(h->ctx);
        gw_clock_update();
        if (n < 0) {
            if (err == EINTR)
                continue;
            return -err;
        }
        for (int i = 0; i < n; i++) {
            gw_watch_t *w = loop->events[i].data.ptr;
            w->cb(loop, w, loop->events[i].events);
        }
        expire(loop);
    }
    return 0;
}
