/* The loop-to-threads hand-off (core/handoff.c): the job queue's idle stack
 * and FIFO, cancel and expiry, stop; the news list and its eventfd; the
 * garbage list's swap. With real threads: every job runs exactly once. */
#include "../../src/core/handoff.c"

#include "check.h"

#include <poll.h>
#include <sched.h>
#include <string.h>

static bool readable(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 0) == 1;
}

static void test_fifo_without_threads(void)
{
    gw_jobq_t q;
    gw_job_t a = {.arg = "a"}, b = {.arg = "b"}, c = {.arg = "c"};
    gw_waiter_t self = {0};

    CHECK_INT(gw_jobq_init(&q), 0);
    CHECK(!gw_jobq_submit(&q, &a, 10)); /* nobody idle: queued */
    CHECK(!gw_jobq_submit(&q, &b, 20));
    CHECK(!gw_jobq_submit(&q, &c, 30));
    CHECK_INT(gw_jobq_queued(&q), 3);
    CHECK(gw_jobq_cancel(&q, &b));
    CHECK(!gw_jobq_cancel(&q, &b)); /* once */
    CHECK_INT(gw_jobq_queued(&q), 2);
    CHECK(gw_jobq_expired(&q, 10) == NULL); /* a was queued at 10: not before 10 */
    CHECK(gw_jobq_expired(&q, 11) == &a);
    CHECK(gw_jobq_expired(&q, 11) == NULL);
    CHECK(gw_jobq_try_take(&q) == &c); /* queued: taken without a wait */
    CHECK(gw_jobq_try_take(&q) == NULL);  /* none: NULL at once */
    CHECK(!gw_jobq_submit(&q, &c, 40));
    CHECK(gw_jobq_take(&q, &self) == &c); /* queued: no wait */
    CHECK_INT(gw_jobq_queued(&q), 0);
    CHECK(!c.is_queued);
    gw_jobq_stop(&q);
    CHECK(gw_jobq_take(&q, &self) == NULL);
    gw_jobq_dispose(&q);
}

typedef struct worker {
    pthread_t t;
    gw_jobq_t *q;
    gw_waiter_t w;
    _Atomic unsigned *runs;
    unsigned done;
} worker_t;

static void *worker_main(void *arg)
{
    worker_t *wk = arg;
    gw_job_t *job;

    while ((job = gw_jobq_take(wk->q, &wk->w))) {
        atomic_fetch_add(&wk->runs[(uintptr_t)job->arg], 1);
        wk->done++;
    }
    return NULL;
}

#define NWORKERS 4
#define NJOBS 20000

/* LIFO: the thread that went idle last gets the next job. */
static void test_idle_stack_is_lifo(void)
{
    gw_jobq_t q;
    gw_waiter_t w1 = {0}, w2 = {0};

    memset(&q, 0xa5, sizeof(q)); /* init sets every field: none is left as found */
    gw_jobq_init(&q);
    /* Park two waiters by hand (what take() does before it sleeps). */
    w1.next = NULL;
    q.idle = &w1;
    w2.next = &w1;
    q.idle = &w2;
    atomic_store(&q.nidle, 2);
    gw_job_t j = {.arg = "j"}, k = {.arg = "k"};
    CHECK(gw_jobq_submit(&q, &j, 0));
    CHECK(atomic_load(&w2.word) == 1);
    CHECK(atomic_load(&w1.word) == 0);
    CHECK_INT(gw_jobq_idle(&q), 1);
    /* w2 is on its way to the queue: a second job wakes nobody... */
    CHECK(!gw_jobq_submit(&q, &k, 0));
    CHECK(atomic_load(&w1.word) == 0);
    /* ...until w2 takes its job (GIL held) and finds k left: w1 next. */
    CHECK(gw_jobq_begin(&q) == &j);
    CHECK(atomic_load(&w1.word) == 1);
    CHECK_INT(gw_jobq_idle(&q), 0);
    CHECK(gw_jobq_begin(&q) == &k);
    CHECK(gw_jobq_begin(&q) == NULL); /* w2's own wake finds the queue empty */
    gw_jobq_stop(&q);
    gw_jobq_dispose(&q);
}

static void test_threads_run_each_job_once(void)
{
    static gw_job_t jobs[NJOBS];
    static _Atomic unsigned runs[NJOBS];
    worker_t wk[NWORKERS];
    gw_jobq_t q;
    unsigned total = 0, once = 0;

    gw_jobq_init(&q);
    for (int i = 0; i < NWORKERS; i++) {
        wk[i] = (worker_t){.q = &q, .runs = runs};
        pthread_create(&wk[i].t, NULL, worker_main, &wk[i]);
    }
    for (uintptr_t i = 0; i < NJOBS; i++) {
        jobs[i].arg = (void *)i;
        gw_jobq_submit(&q, &jobs[i], i);
        if (i % 64 == 0)
            sched_yield(); /* both paths: idle threads and the FIFO */
    }
    while (gw_jobq_queued(&q) || gw_jobq_idle(&q) < NWORKERS)
        sched_yield();
    gw_jobq_stop(&q);
    for (int i = 0; i < NWORKERS; i++) {
        pthread_join(wk[i].t, NULL);
        total += wk[i].done;
    }
    for (int i = 0; i < NJOBS; i++)
        once += atomic_load(&runs[i]) == 1;
    CHECK_INT(total, NJOBS);
    CHECK_INT(once, NJOBS);
    gw_jobq_dispose(&q);
}

static void test_news(void)
{
    gw_news_t n;
    gw_news_node_t a = {0}, b = {0};

    CHECK_INT(gw_news_open(&n), 0);
    CHECK(!readable(n.fd));
    gw_news_post(&n, &a);
    CHECK(readable(n.fd));
    gw_news_post(&n, &b);
    gw_news_post(&n, &a); /* already queued: once */
    gw_news_flag(&n, 4);
    CHECK_INT(gw_news_begin(&n), 4);
    CHECK(!readable(n.fd));
    CHECK(gw_news_pop(&n) == &a);
    CHECK(!a.is_queued && b.is_queued);
    gw_news_post(&n, &a); /* posted again while the loop works: at the tail */
    CHECK(gw_news_pop(&n) == &b);
    CHECK(gw_news_pop(&n) == &a);
    CHECK(gw_news_pop(&n) == NULL);
    CHECK_INT(gw_news_begin(&n), 0);
    gw_news_post(&n, &a);
    gw_news_post(&n, &b);
    gw_news_cancel(&n, &a); /* its owner goes: out of the list, the rest kept */
    CHECK(!a.is_queued && b.is_queued);
    CHECK(gw_news_pop(&n) == &b && gw_news_pop(&n) == NULL);
    gw_news_cancel(&n, &b); /* not queued: nothing */
    gw_news_begin(&n);
    gw_news_post(&n, &b); /* rings again once the list is empty */
    CHECK(readable(n.fd));
    gw_news_begin(&n);
    gw_news_wake(&n);
    CHECK(readable(n.fd));
    gw_news_close(&n);
}

/* A flag raised while the loop pops (after its gw_news_begin(), nodes still
 * queued) must ring: the loop reads flags only in gw_news_begin(). Before the
 * fix it did not, and the flag left behind made every later post think the
 * list was not empty: the loop was never woken for news again. */
static void test_news_flag_during_pops_rings(void)
{
    gw_news_t n;
    gw_news_node_t a = {0}, b = {0};

    CHECK_INT(gw_news_open(&n), 0);
    gw_news_post(&n, &a);
    CHECK_INT(gw_news_begin(&n), 0);
    gw_news_flag(&n, 1); /* a thread, between the loop's begin and its pops */
    CHECK(gw_news_pop(&n) == &a && gw_news_pop(&n) == NULL);
    CHECK(readable(n.fd)); /* the flag is news: the loop comes back for it */
    CHECK_INT(gw_news_begin(&n), 1);
    CHECK(!readable(n.fd));
    /* A flag nobody rang for must not silence later posts either. */
    gw_news_flag(&n, 1);
    gw_news_begin(&n);
    CHECK(!readable(n.fd));
    gw_news_post(&n, &b);
    CHECK(readable(n.fd));
    CHECK(gw_news_pop(&n) == &b);
    gw_news_close(&n);
}

static void test_garbage(void)
{
    gw_garbage_t g;
    void **v, **v2;
    size_t n, n2;
    int x[1000];

    CHECK_INT(gw_garbage_init(&g), 0);
    CHECK(gw_garbage_take(&g, &n) == NULL && n == 0);
    for (int i = 0; i < 1000; i++) /* grows past the first array */
        gw_garbage_push(&g, &x[i]);
    CHECK_INT(gw_garbage_count(&g), 1000);
    v = gw_garbage_take(&g, &n);
    CHECK_INT(n, 1000);
    CHECK(v && v[0] == &x[0] && v[999] == &x[999]);
    CHECK_INT(gw_garbage_count(&g), 0);
    gw_garbage_push(&g, &x[1]);
    /* One drainer at a time: a second take while the first holds its array. */
    CHECK(gw_garbage_take(&g, &n2) == NULL);
    gw_garbage_done(&g, v);
    v2 = gw_garbage_take(&g, &n2);
    CHECK(v2 && n2 == 1 && v2[0] == &x[1]);
    gw_garbage_done(&g, v2);
    CHECK_INT(g.lost, 0);
    gw_garbage_dispose(&g);
}

int main(void)
{
    test_fifo_without_threads();
    test_idle_stack_is_lifo();
    test_threads_run_each_job_once();
    test_news();
    test_news_flag_during_pops_rings();
    test_garbage();
    printf("handoff_test: %d passed, %d failed\n", n_pass, n_fail);
    return n_fail != 0;
}
