/* Unit tests for the accept step-back (serve/accept.c) over a scoreboard of
 * two workers in memory: who is stepped back for (not a worker at the
 * connection cap), when the connection is taken at the next turn (the other
 * took nothing from that listener: counted by listener), a wake-up's later
 * events while paused, and the pause at the cap right after the accept that
 * reaches it. The loop, the timers and the connections are stubs below; the
 * listener is a real loopback socket. */
#include "serve/accept.c"

#include "check.h"

#include <arpa/inet.h>
#include <netinet/in.h>

/* ---- stubs: what accept.c calls outside itself ---- */

static unsigned nadds, ndels;

uint64_t gw_clock_ms(void)
{
    return 1000000;
}

void gw_log_error(const char *fmt, ...)
{
    (void)fmt;
}

int gw_loop_add(gw_loop_t *loop, gw_watch_t *w, uint32_t events)
{
    nadds++;
    return 0;
}

void gw_loop_del(gw_loop_t *loop, gw_watch_t *w)
{
    ndels++;
}

void gw_timer_init(gw_timer_t *t, gw_timer_cb cb)
{
    memset(t, 0, sizeof(*t));
    t->cb = cb;
}

void gw_timer_start(gw_timerq_t *q, gw_timer_t *t)
{
    t->q = q;
    t->next = t; /* active (gw_timer_is_active) */
}

bool gw_listen_allows(const gw_listener_t *l, const struct sockaddr *sa)
{
    return true;
}

int gw_conn_open(gw_conn_ctx_t *ctx, int fd, const gw_listener_t *l, const struct sockaddr *sa)
{
    close(fd);
    ctx->nconns++;
    return 0;
}

size_t gw_scoreboard_used(const gw_scoreboard_t *sb)
{
    return sb->nslots;
}

/* ---- two workers: this one (slot 0) and the other (slot 1) ---- */

typedef struct two {
    gw_config_t cfg;
    gw_slot_t slots[2];
    gw_scoreboard_t sb;
    gw_listener_t ls[2];
    gw_server_t s;
} two_t;

/* nl listeners; the first is fd0 (-1: none to accept from, should_yield()
 * only). */
static void two_init(two_t *t, size_t nl, int fd0)
{
    memset(t, 0, sizeof(*t));
    t->cfg.workers = 2;
    t->cfg.max_connections = 10;
    t->sb.nslots = 2;
    t->sb.slots = t->slots;
    for (size_t i = 0; i < 2; i++) {
        atomic_store(&t->slots[i].state, GW_SLOT_READY);
        t->ls[i].fd = -1;
    }
    t->ls[0].fd = fd0;
    t->s.cfg = &t->cfg;
    t->s.who.sb = &t->sb;
    t->s.who.slot = &t->slots[0];
    CHECK(gw__accept_init(&t->s, t->ls, nl) == 0);
}

static void two_dispose(two_t *t)
{
    free(t->s.lw);
}

/* This worker's open connections and the other's (with how many of them
 * are still sending their request). */
static void loads(two_t *t, uint64_t mine, uint64_t other, uint64_t other_waiting)
{
    t->s.conns.nconns = mine;
    atomic_store(&t->slots[1].conns, other);
    atomic_store(&t->slots[1].conns_waiting, other_waiting);
}

/* The other worker took n connections from listener i (counted as take()
 * counts them). */
static void other_accepts(two_t *t, size_t i, uint64_t n)
{
    atomic_fetch_add(accepts_of(&t->slots[1], &t->s, &t->s.lw[i]), n);
}

/* ---- the tests ---- */

static void test_a_worker_at_the_cap_is_not_stepped_back_for(void)
{
    two_t t;

    two_init(&t, 1, -1);
    /* At --max-connections, all of them still sending a request: it looks
     * idle and takes nothing (its listeners are out of epoll). Stepping back
     * for it made every other connection here wait a step-back. */
    loads(&t, 2, 10, 10);
    CHECK(!should_yield(&t.s, &t.s.lw[0]));
    two_dispose(&t);
    /* One below the cap it accepts: it is stepped back for */
    two_init(&t, 1, -1);
    loads(&t, 2, 9, 9);
    CHECK(should_yield(&t.s, &t.s.lw[0]));
    two_dispose(&t);
}

static void test_equally_busy_the_one_with_more_waiting_steps_back(void)
{
    two_t t;

    two_init(&t, 1, -1);
    /* None busy on either, 3 requests still arriving here and 1 there:
     * each becomes work once whole, so this one steps back. Counted as
     * nothing, they all went where the kernel's wake-ups favour. */
    loads(&t, 3, 1, 1);
    t.s.conns.nwaiting = 3;
    CHECK(should_yield(&t.s, &t.s.lw[0]));
    two_dispose(&t);
    /* The same count: no step-back on a tie */
    two_init(&t, 1, -1);
    loads(&t, 3, 3, 3);
    t.s.conns.nwaiting = 3;
    CHECK(!should_yield(&t.s, &t.s.lw[0]));
    two_dispose(&t);
    /* Busier there: the requests arriving here are still no load */
    two_init(&t, 1, -1);
    loads(&t, 12, 1, 0);
    t.s.conns.nwaiting = 12;
    CHECK(!should_yield(&t.s, &t.s.lw[0]));
    two_dispose(&t);
}

static void test_taken_at_the_next_turn_when_the_other_took_nothing(void)
{
    two_t t;

    two_init(&t, 1, -1);
    loads(&t, 2, 0, 0);
    CHECK(should_yield(&t.s, &t.s.lw[0]));
    /* the kernel never offered it the queued connection: take it */
    CHECK(!should_yield(&t.s, &t.s.lw[0]));
    /* and judge afresh at the next one */
    CHECK(should_yield(&t.s, &t.s.lw[0]));
    two_dispose(&t);
}

static void test_the_other_taking_from_this_listener_means_judging_afresh(void)
{
    two_t t;

    two_init(&t, 1, -1);
    loads(&t, 3, 0, 0);
    CHECK(should_yield(&t.s, &t.s.lw[0]));
    /* it took the queued one (the oldest) and the listener stays ready to it
     * while more wait: still more loaded here, step back again */
    other_accepts(&t, 0, 1);
    loads(&t, 3, 1, 0);
    CHECK(should_yield(&t.s, &t.s.lw[0]));
    /* a tie: take it (no extra one for the other at the end of a burst) */
    other_accepts(&t, 0, 2);
    loads(&t, 3, 3, 0);
    CHECK(!should_yield(&t.s, &t.s.lw[0]));
    two_dispose(&t);
}

static void test_the_others_accepts_on_another_listener_do_not_hold_this_ones(void)
{
    two_t t;

    two_init(&t, 2, -1);
    /* A connection on the quiet listener 0 woke this worker, which stepped
     * back; the other takes a stream of short connections on listener 1 and
     * stays less loaded, and the kernel never offers it the one on 0. With
     * one count for all listeners this worker stepped back again at every
     * turn, for as long as the stream lasted. */
    loads(&t, 3, 0, 0);
    CHECK(should_yield(&t.s, &t.s.lw[0]));
    for (int turn = 0; turn < 3; turn++)
        other_accepts(&t, 1, 5);
    CHECK(!should_yield(&t.s, &t.s.lw[0]));
    two_dispose(&t);
}

static void test_each_listener_keeps_its_own_step_back(void)
{
    two_t t;

    two_init(&t, 2, -1);
    loads(&t, 3, 0, 0);
    CHECK(should_yield(&t.s, &t.s.lw[0]));
    CHECK(should_yield(&t.s, &t.s.lw[1]));
    /* the other took nothing from either: each takes its own at its turn */
    CHECK(!should_yield(&t.s, &t.s.lw[0]));
    CHECK(!should_yield(&t.s, &t.s.lw[1]));
    two_dispose(&t);
}

/* A loopback listener with n connections queued (the clients go in cl). */
static int listener(int *cl, int n)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    int l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    CHECK(l >= 0);
    CHECK(bind(l, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    CHECK(listen(l, 16) == 0);
    CHECK(getsockname(l, (struct sockaddr *)&sa, &sl) == 0);
    for (int i = 0; i < n; i++) {
        cl[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        CHECK(connect(cl[i], (struct sockaddr *)&sa, sizeof(sa)) == 0);
    }
    return l;
}

static void test_the_connection_reaching_the_cap_pauses_at_once(void)
{
    two_t t;
    int cl[2], l;

    l = listener(cl, 2);
    nadds = ndels = 0;
    two_init(&t, 1, l);
    CHECK(nadds == 1 && t.s.lw[0].is_active);
    loads(&t, 9, 9, 0);
    on_accept(NULL, &t.s.lw[0].watch, EPOLLIN);
    CHECK(t.s.conns.nconns == 10);
    /* Out of epoll now: at the next wake-up (which EPOLLEXCLUSIVE gives this
     * worker alone) it would leave without accepting, and the connection
     * that came with it would wait for the one after it. */
    CHECK(t.s.is_paused && !t.s.lw[0].is_active && ndels == 1);
    two_dispose(&t);
    close(l);
    close(cl[0]);
    close(cl[1]);
}

static void test_a_wake_ups_later_events_wait_while_paused(void)
{
    two_t t;

    two_init(&t, 2, -1);
    /* listener 0's event found no descriptors: paused, 100 ms back-off */
    t.s.is_paused = true;
    gw_timer_start(&t.s.backoff_q, &t.s.backoff);
    /* listener 1's event of the same wake-up, this worker more loaded: no
     * step-back's 2 ms timer over the back-off, no step-back remembered */
    loads(&t, 3, 0, 0);
    on_accept(NULL, &t.s.lw[1].watch, EPOLLIN);
    CHECK(t.s.backoff.q == &t.s.backoff_q);
    CHECK(t.s.lw[1].yielded_to == NULL);
    two_dispose(&t);
}

int main(void)
{
    test_a_worker_at_the_cap_is_not_stepped_back_for();
    test_equally_busy_the_one_with_more_waiting_steps_back();
    test_taken_at_the_next_turn_when_the_other_took_nothing();
    test_the_other_taking_from_this_listener_means_judging_afresh();
    test_the_others_accepts_on_another_listener_do_not_hold_this_ones();
    test_each_listener_keeps_its_own_step_back();
    test_the_connection_reaching_the_cap_pauses_at_once();
    test_a_wake_ups_later_events_wait_while_paused();
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
