/* Thread pool: results, ordering, errors, timeouts, lifecycle, resources. */
#ifndef _DEFAULT_SOURCE
#define _DEFAULT_SOURCE 1
#endif
#include <time.h>

/* pool.h's test hook: a thread sleeps 50 ms when it passes a point of pool__submit
 * whose bit it set in hook_points (1: just pushed; 2: took its future back after a
 * close), which opens a race window wide enough to land in every time. */
static __thread int hook_points;
static int hook_hits;
static volatile int *hook_release; /* set to 1 at point 2, if not NULL */
static void hook_at(int point)
{
    struct timespec ts = {0, 50000000};
    if (!(hook_points & (1 << point))) return;
    __atomic_add_fetch(&hook_hits, 1, __ATOMIC_SEQ_CST);
    if (point == 2 && hook_release) __atomic_store_n(hook_release, 1, __ATOMIC_SEQ_CST);
    nanosleep(&ts, NULL);
}
#define POOL__TEST_HOOK(point, f) ((void)(f), hook_at(point))

#define POOL_IMPLEMENTATION
#include "pool.h"
#include "test.h"

#include <pthread.h>
#include <sys/wait.h>

static int square(const void *in, void *out, void *ctx)
{
    (void)ctx;
    *(long *)out = *(const long *)in * *(const long *)in;
    return 0;
}

static long *iota(size_t n)
{
    long *a = (long *)malloc(n * sizeof *a);
    size_t i;
    for (i = 0; i < n; i++) a[i] = (long)i;
    return a;
}

TEST(create_defaults_and_bad_config)
{
    pool_t *p = NULL;
    pool_config c;
    REQUIRE(pool_create(&p, NULL) == POOL_OK);
    CHECK(pool_workers(p) >= 1);
    pool_destroy(p);
    memset(&c, 0, sizeof c);
    c.workers = -1;
    CHECK(pool_create(&p, &c) == POOL_EINVAL);
    CHECK(p == NULL);
    c.workers = 2;
    c.kind = (pool_kind)7;
    CHECK(pool_create(&p, &c) == POOL_EINVAL);
    CHECK(pool_create(NULL, NULL) == POOL_EINVAL);
    CHECK(pool_workers(NULL) == POOL_EINVAL);
    pool_destroy(NULL); /* allowed */
}

TEST(map_ordered_results)
{
    pool_t *p;
    pool_config c = {0};
    size_t sizes[] = {1, 2, 3, 7, 100, 1000, 100003};
    size_t k, i, cs;
    c.workers = 3;
    REQUIRE(pool_create(&p, &c) == POOL_OK);
    for (k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        for (cs = 0; cs < 4; cs++) {
            size_t n = sizes[k];
            long *in = iota(n), *out = (long *)calloc(n, sizeof *out);
            pool_map_opts o;
            memset(&o, 0, sizeof o);
            o.chunksize = cs == 0 ? 0 : cs == 1 ? 1 : cs == 2 ? 17 : n + 5;
            CHECK(pool_map(p, square, in, sizeof *in, out, sizeof *out, n, &o) == POOL_OK);
            for (i = 0; i < n; i++)
                if (out[i] != (long)(i * i)) { CHECK_EQ(out[i], i * i); break; }
            free(in);
            free(out);
        }
    }
    pool_destroy(p);
}

static int fail_at_marks(const void *in, void *out, void *ctx)
{
    long v = *(const long *)in;
    (void)ctx;
    *(long *)out = v;
    if (v == 777 || v == 5000 || v == 90000) return 42 + (int)(v % 7);
    return 0;
}

TEST(map_reports_lowest_failing_index)
{
    pool_t *p;
    pool_config c = {0};
    size_t n = 100000;
    long *in = iota(n), *out = (long *)calloc(n, sizeof *out);
    int round;
    c.workers = 4;
    REQUIRE(pool_create(&p, &c) == POOL_OK);
    for (round = 0; round < 30; round++) {
        pool_failure f;
        pool_map_opts o;
        memset(&o, 0, sizeof o);
        o.failure = &f;
        o.chunksize = (size_t)(round % 3 == 0 ? 1 : round % 3 == 1 ? 64 : 0);
        CHECK_EQ(pool_map(p, fail_at_marks, in, sizeof *in, out, sizeof *out, n, &o), 42 + 777 % 7);
        CHECK_EQ(f.index, 777);
        CHECK_EQ(f.code, 42 + 777 % 7);
        CHECK_EQ(f.signal, 0);
        CHECK_EQ(out[776], 776); /* everything before the failure ran */
    }
    free(in);
    free(out);
    pool_destroy(p);
}

TEST(map_bad_input)
{
    pool_t *p;
    long in[4] = {1, 2, 3, 4}, out[4];
    pool_failure f = {1, 5, 5};
    pool_map_opts o;
    memset(&o, 0, sizeof o);
    o.failure = &f;
    REQUIRE(pool_create(&p, NULL) == POOL_OK);
    CHECK(pool_map(NULL, square, in, sizeof *in, out, sizeof *out, 4, NULL) == POOL_EINVAL);
    CHECK(pool_map(p, NULL, in, sizeof *in, out, sizeof *out, 4, NULL) == POOL_EINVAL);
    CHECK(pool_map(p, square, NULL, sizeof *in, out, sizeof *out, 4, NULL) == POOL_EINVAL);
    CHECK(pool_map(p, square, in, 0, out, sizeof *out, 4, NULL) == POOL_EINVAL);
    CHECK(pool_map(p, square, in, sizeof *in, NULL, sizeof *out, 4, NULL) == POOL_EINVAL);
    CHECK(pool_map(p, square, in, sizeof *in, out, sizeof *out, 0, &o) == POOL_OK);
    CHECK_EQ(f.index, -1);
    CHECK(pool_map(p, square, in, SIZE_MAX / 2, out, sizeof *out, 4, NULL) == POOL_EOVERFLOW);
    CHECK(pool_map(p, square, in, sizeof *in, out, SIZE_MAX / 2, 4, NULL) == POOL_EOVERFLOW);
    /* the pool still works */
    CHECK(pool_map(p, square, in, sizeof *in, out, sizeof *out, 4, NULL) == POOL_OK);
    CHECK_EQ(out[3], 16);
    CHECK(pool_close(p) == POOL_OK);
    CHECK(pool_map(p, square, in, sizeof *in, out, sizeof *out, 4, NULL) == POOL_ECLOSED);
    pool_destroy(p);
}

/* imap: in order, bounded in flight */
typedef struct inflight { long started; long max_ahead; long consumed; } inflight;

static int count_started(const void *in, void *out, void *ctx)
{
    inflight *s = (inflight *)ctx;
    long started = __atomic_add_fetch(&s->started, 1, __ATOMIC_SEQ_CST);
    long ahead = started - __atomic_load_n(&s->consumed, __ATOMIC_SEQ_CST);
    long m = __atomic_load_n(&s->max_ahead, __ATOMIC_RELAXED);
    while (ahead > m && !__atomic_compare_exchange_n(&s->max_ahead, &m, ahead, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {}
    *(long *)out = *(const long *)in * 3;
    return 0;
}

TEST(imap_ordered_bounded)
{
    pool_t *p;
    pool_config c = {0};
    pool_iter_t *it;
    size_t n = 20000, idx, expect = 0;
    long *in = iota(n), v;
    inflight s = {0, 0, 0};
    pool_map_opts o;
    int rc;
    c.workers = 3;
    REQUIRE(pool_create(&p, &c) == POOL_OK);
    memset(&o, 0, sizeof o);
    o.ctx = &s;
    o.chunksize = 10;
    o.max_inflight = 2;
    REQUIRE(pool_imap(p, count_started, in, sizeof *in, sizeof v, n, &o, &it) == POOL_OK);
    while ((rc = pool_iter_next(it, &v, &idx, -1)) == POOL_OK) {
        CHECK_EQ(idx, expect);
        CHECK_EQ(v, (long)expect * 3);
        expect++;
        __atomic_add_fetch(&s.consumed, 1, __ATOMIC_SEQ_CST);
    }
    CHECK_EQ(rc, POOL_EDONE);
    CHECK_EQ(expect, n);
    CHECK_EQ(pool_iter_next(it, &v, &idx, -1), POOL_EDONE);
    /* at most max_inflight chunks beyond what was consumed */
    /* (+1: a slot is released inside next, just before the test counts the element) */
    CHECK(s.max_ahead <= (long)(o.max_inflight * o.chunksize) + 1);
    pool_iter_free(it);
    free(in);
    pool_destroy(p);
}

static int slow_first(const void *in, void *out, void *ctx)
{
    long v = *(const long *)in;
    (void)ctx;
    if (v == 0) test_sleep_ms(200);
    *(long *)out = v;
    return v == 13 ? 99 : 0;
}

TEST(imap_unordered_completion_order_and_errors)
{
    pool_t *p;
    pool_config c = {0};
    pool_iter_t *it;
    size_t n = 64, idx, count = 0, pos_of_zero = 0;
    long *in = iota(n), v;
    char seen[64];
    pool_map_opts o;
    int rc;
    c.workers = 2;
    memset(seen, 0, sizeof seen);
    REQUIRE(pool_create(&p, &c) == POOL_OK);
    memset(&o, 0, sizeof o);
    o.chunksize = 1;
    REQUIRE(pool_imap_unordered(p, slow_first, in, sizeof *in, sizeof v, n, &o, &it) == POOL_OK);
    for (;;) {
        rc = pool_iter_next(it, &v, &idx, 5000);
        if (rc == POOL_EDONE) break;
        REQUIRE(idx < n);
        CHECK(!seen[idx]);
        seen[idx] = 1;
        if (idx == 13) CHECK_EQ(rc, 99);
        else CHECK_EQ(rc, POOL_OK);
        if (idx == 0) pos_of_zero = count;
        count++;
    }
    CHECK_EQ(count, n);
    CHECK(pos_of_zero > 0); /* the slow element did not hold the others back */
    pool_iter_free(it);
    free(in);
    pool_destroy(p);
}

/* ctx points to int gate[2]: gate[1] is set when the task starts, it returns when gate[0] is set */
static int gate_wait(const void *in, void *out, void *ctx)
{
    int *gate = (int *)ctx;
    (void)in; (void)out;
    __atomic_store_n(&gate[1], 1, __ATOMIC_RELEASE);
    while (!__atomic_load_n(&gate[0], __ATOMIC_ACQUIRE)) test_sleep_ms(1);
    return 0;
}
static void wait_started(int *gate)
{
    while (!__atomic_load_n(&gate[1], __ATOMIC_ACQUIRE)) test_sleep_ms(1);
}

TEST(imap_free_early_cancels_the_rest)
{
    pool_t *p;
    pool_config c = {0};
    pool_iter_t *it;
    pool_stats st;
    size_t n = 10000, idx;
    long *in = iota(n), v;
    pool_map_opts o;
    int i;
    c.workers = 2;
    REQUIRE(pool_create(&p, &c) == POOL_OK);
    memset(&o, 0, sizeof o);
    o.chunksize = 10;
    o.max_inflight = 3;
    REQUIRE(pool_imap(p, square, in, sizeof *in, sizeof v, n, &o, &it) == POOL_OK);
    for (i = 0; i < 25; i++) CHECK(pool_iter_next(it, &v, &idx, -1) == POOL_OK);
    pool_iter_free(it);
    pool_get_stats(p, &st);
    CHECK(st.cancelled > 0);
    CHECK(st.completed + st.cancelled == n);
    /* empty iteration */
    REQUIRE(pool_imap(p, square, in, sizeof *in, sizeof v, 0, NULL, &it) == POOL_OK);
    CHECK(pool_iter_next(it, &v, &idx, 0) == POOL_EDONE);
    pool_iter_free(it);
    CHECK(pool_imap(p, square, in, sizeof *in, sizeof v, n, NULL, NULL) == POOL_EINVAL);
    free(in);
    pool_destroy(p);
}

TEST(imap_timeout_poll)
{
    pool_t *p;
    pool_config c = {0};
    pool_iter_t *it;
    int gate[2] = {0, 0};
    long in[4] = {0, 1, 2, 3};
    size_t idx;
    pool_map_opts o;
    c.workers = 1;
    REQUIRE(pool_create(&p, &c) == POOL_OK);
    memset(&o, 0, sizeof o);
    o.ctx = gate;
    o.chunksize = 4;
    REQUIRE(pool_imap(p, gate_wait, in, sizeof *in, 0, 4, &o, &it) == POOL_OK);
    wait_started(gate); /* the worker holds the only chunk */
    CHECK_EQ(pool_iter_next(it, NULL, &idx, 0), POOL_ETIMEDOUT);
    CHECK_EQ(pool_iter_next(it, NULL, &idx, 30), POOL_ETIMEDOUT);
    __atomic_store_n(&gate[0], 1, __ATOMIC_RELEASE);
    CHECK_EQ(pool_iter_next(it, NULL, &idx, -1), POOL_OK);
    CHECK_EQ(idx, 0);
    pool_iter_free(it);
    pool_destroy(p);
}

static int sleepy_square(const void *in, void *out, void *ctx)
{
    (void)ctx;
    test_sleep_ms((int)*(const long *)in);
    *(long *)out = *(const long *)in * *(const long *)in;
    return 0;
}

TEST(apply_async_get_timeout_poll)
{
    pool_t *p;
    pool_future_t *f;
    long arg = 300, res = 0;
    REQUIRE(pool_create(&p, NULL) == POOL_OK);
    REQUIRE(pool_apply_async(p, sleepy_square, &arg, sizeof arg, sizeof res, NULL, &f) == POOL_OK);
    test_sleep_ms(20);
    CHECK_EQ(pool_future_get(f, &res, 0), POOL_ETIMEDOUT);
    CHECK(!pool_future_ready(f));
    CHECK_EQ(pool_future_get(f, &res, 50), POOL_ETIMEDOUT);
    CHECK_EQ(res, 0);
    CHECK_EQ(pool_future_get(f, &res, -1), POOL_OK);
    CHECK_EQ(res, 90000);
    CHECK(pool_future_ready(f));
    CHECK(pool_future_successful(f));
    CHECK_EQ(pool_future_signal(f), 0);
    CHECK_EQ(pool_future_wait(f, 0), POOL_OK);
    pool_future_free(f);
    /* bad input */
    CHECK(pool_apply_async(NULL, square, &arg, sizeof arg, 8, NULL, &f) == POOL_EINVAL);
    CHECK(pool_apply_async(p, NULL, &arg, sizeof arg, 8, NULL, &f) == POOL_EINVAL);
    CHECK(pool_apply_async(p, square, NULL, sizeof arg, 8, NULL, &f) == POOL_EINVAL);
    CHECK(pool_apply_async(p, square, &arg, sizeof arg, 8, NULL, NULL) == POOL_EINVAL);
    CHECK(pool_apply_async(p, square, &arg, SIZE_MAX - 3, 8, NULL, &f) == POOL_EOVERFLOW);
    CHECK(pool_future_get(NULL, &res, 0) == POOL_EINVAL);
    pool_destroy(p);
}

typedef struct big { unsigned char bytes[5000]; } big;
static int reverse_big(const void *in, void *out, void *ctx)
{
    const big *a = (const big *)in;
    big *b = (big *)out;
    size_t i;
    (void)ctx;
    for (i = 0; i < sizeof a->bytes; i++) b->bytes[i] = a->bytes[sizeof a->bytes - 1 - i];
    return 0;
}

TEST(apply_async_copies_large_arguments)
{
    pool_t *p;
    pool_future_t *fs[16];
    big *a = (big *)malloc(sizeof *a), *r = (big *)malloc(sizeof *r);
    int i, k;
    REQUIRE(pool_create(&p, NULL) == POOL_OK);
    for (i = 0; i < 16; i++) {
        for (k = 0; k < 5000; k++) a->bytes[k] = (unsigned char)(k + i);
        REQUIRE(pool_apply_async(p, reverse_big, a, sizeof *a, sizeof *r, NULL, &fs[i]) == POOL_OK);
    }
    memset(a, 0, sizeof *a); /* the argument was copied */
    for (i = 0; i < 16; i++) {
        CHECK(pool_future_get(fs[i], r, -1) == POOL_OK);
        CHECK_EQ(r->bytes[0], (unsigned char)(4999 + i));
        CHECK_EQ(r->bytes[4999], (unsigned char)(0 + i));
        pool_future_free(fs[i]);
    }
    free(a);
    free(r);
    pool_destroy(p);
}

TEST(future_cancel)
{
    pool_t *p;
    pool_config c = {0};
    pool_future_t *blocker, *f;
    int gate[2] = {0, 0};
    long arg = 5, res;
    c.workers = 1;
    REQUIRE(pool_create(&p, &c) == POOL_OK);
    REQUIRE(pool_apply_async(p, gate_wait, NULL, 0, 0, gate, &blocker) == POOL_OK);
    REQUIRE(pool_apply_async(p, square, &arg, sizeof arg, sizeof res, NULL, &f) == POOL_OK);
    wait_started(gate);
    CHECK_EQ(pool_future_cancel(blocker), POOL_EBUSY); /* running */
    CHECK_EQ(pool_future_cancel(f), POOL_OK);
    CHECK_EQ(pool_future_get(f, &res, -1), POOL_ECANCELLED);
    CHECK(!pool_future_successful(f));
    CHECK_EQ(pool_future_cancel(f), POOL_EBUSY); /* done */
    __atomic_store_n(&gate[0], 1, __ATOMIC_RELEASE);
    CHECK_EQ(pool_future_get(blocker, NULL, -1), POOL_OK);
    pool_future_free(blocker);
    pool_future_free(f);
    pool_destroy(p);
}

typedef struct cbinfo { int calls; pthread_t thread; pool_future_t *seen; } cbinfo;
static void on_done(pool_future_t *f, void *user)
{
    cbinfo *ci = (cbinfo *)user;
    ci->thread = pthread_self();
    ci->seen = f;
    __atomic_add_fetch(&ci->calls, 1, __ATOMIC_SEQ_CST);
}

TEST(future_callback)
{
    pool_t *p;
    pool_config c = {0};
    pool_future_t *f;
    int gate[2] = {0, 0};
    cbinfo ci;
    c.workers = 1;
    memset(&ci, 0, sizeof ci);
    REQUIRE(pool_create(&p, &c) == POOL_OK);
    REQUIRE(pool_apply_async(p, gate_wait, NULL, 0, 0, gate, &f) == POOL_OK);
    wait_started(gate); /* running on the worker */
    CHECK_EQ(pool_future_on_done(f, on_done, &ci), POOL_OK);
    CHECK_EQ(pool_future_on_done(f, on_done, &ci), POOL_EBUSY);
    CHECK_EQ(pool_future_on_done(f, NULL, &ci), POOL_EINVAL);
    __atomic_store_n(&gate[0], 1, __ATOMIC_RELEASE);
    CHECK_EQ(pool_future_wait(f, -1), POOL_OK);
    while (__atomic_load_n(&ci.calls, __ATOMIC_SEQ_CST) == 0) test_sleep_ms(1);
    test_sleep_ms(10);
    CHECK_EQ(ci.calls, 1);
    CHECK(ci.seen == f);
    CHECK(!pthread_equal(ci.thread, pthread_self())); /* ran on the worker */
    pool_future_free(f);
    /* set after completion: called at once, here */
    memset(&ci, 0, sizeof ci);
    REQUIRE(pool_apply_async(p, gate_wait, NULL, 0, 0, gate, &f) == POOL_OK);
    CHECK_EQ(pool_future_wait(f, -1), POOL_OK);
    CHECK_EQ(pool_future_on_done(f, on_done, &ci), POOL_OK);
    CHECK_EQ(ci.calls, 1);
    CHECK(pthread_equal(ci.thread, pthread_self()));
    pool_future_free(f);
    pool_destroy(p);
}

static void slow_callback(pool_future_t *f, void *user)
{
    (void)f; (void)user;
    test_sleep_ms(1500);
}

TEST(slow_callback_does_not_wedge_waiters)
{
    pool_t *p;
    pool_config c = {0};
    pool_future_t *f, *g;
    int gate[2] = {0, 0};
    long arg = 3, res = 0;
    double t0;
    c.workers = 2;
    REQUIRE(pool_create(&p, &c) == POOL_OK);
    REQUIRE(pool_apply_async(p, gate_wait, NULL, 0, 0, gate, &f) == POOL_OK);
    wait_started(gate);
    CHECK_EQ(pool_future_on_done(f, slow_callback, NULL), POOL_OK);
    __atomic_store_n(&gate[0], 1, __ATOMIC_RELEASE);
    t0 = test_now_ms();
    CHECK_EQ(pool_future_wait(f, -1), POOL_OK);   /* woken before the callback runs */
    REQUIRE(pool_apply_async(p, square, &arg, sizeof arg, sizeof res, NULL, &g) == POOL_OK);
    CHECK_EQ(pool_future_get(g, &res, -1), POOL_OK); /* other work goes on */
    CHECK_EQ(res, 9);
    CHECK(test_now_ms() - t0 < 1000); /* well before the 1.5 s callback ends */
    pool_future_free(f);
    pool_future_free(g);
    pool_destroy(p);
}

TEST(wait_any_and_all)
{
    pool_t *p;
    pool_config c = {0};
    pool_future_t *fs[3];
    long args[3] = {1500, 10, 1000};
    size_t which = 99;
    int i;
    c.workers = 3;
    REQUIRE(pool_create(&p, &c) == POOL_OK);
    for (i = 0; i < 3; i++)
        REQUIRE(pool_apply_async(p, sleepy_square, &args[i], sizeof args[i], sizeof(long), NULL, &fs[i]) == POOL_OK);
    CHECK_EQ(pool_wait_any(fs, 3, -1, &which), POOL_OK);
    CHECK_EQ(which, 1);
    CHECK_EQ(pool_wait_all(fs, 3, 0), POOL_ETIMEDOUT);
    CHECK_EQ(pool_wait_all(fs, 3, -1), POOL_OK);
    for (i = 0; i < 3; i++) CHECK(pool_future_ready(fs[i]));
    CHECK_EQ(pool_wait_any(fs, 0, -1, &which), POOL_EINVAL);
    CHECK_EQ(pool_wait_any(NULL, 3, -1, &which), POOL_EINVAL);
    for (i = 0; i < 3; i++) pool_future_free(fs[i]);
    pool_destroy(p);
}

/* a task that waits on tasks it submits: must not deadlock, even with 1 worker */
typedef struct fibctx { pool_t *pool; } fibctx;
static int fib_task(const void *in, void *out, void *ctx)
{
    fibctx *fc = (fibctx *)ctx;
    long n = *(const long *)in, a, b, x;
    pool_future_t *f1, *f2;
    if (n < 2) { *(long *)out = n; return 0; }
    x = n - 1;
    if (pool_apply_async(fc->pool, fib_task, &x, sizeof x, sizeof a, ctx, &f1) != POOL_OK) return 1;
    x = n - 2;
    if (pool_apply_async(fc->pool, fib_task, &x, sizeof x, sizeof b, ctx, &f2) != POOL_OK) return 1;
    if (pool_future_get(f2, &b, -1) != POOL_OK) return 2;
    if (pool_future_get(f1, &a, -1) != POOL_OK) return 2;
    pool_future_free(f1);
    pool_future_free(f2);
    *(long *)out = a + b;
    return 0;
}

TEST(nested_waits_never_deadlock)
{
    int workers;
    for (workers = 1; workers <= 3; workers++) {
        pool_t *p;
        pool_config c = {0};
        fibctx fc;
        pool_future_t *f;
        long n = 15, r = 0;
        c.workers = workers;
        REQUIRE(pool_create(&p, &c) == POOL_OK);
        fc.pool = p;
        REQUIRE(pool_apply_async(p, fib_task, &n, sizeof n, sizeof r, &fc, &f) == POOL_OK);
        CHECK_EQ(pool_future_get(f, &r, -1), POOL_OK);
        CHECK_EQ(r, 610);
        pool_future_free(f);
        pool_destroy(p);
    }
}

typedef struct nestmap { pool_t *pool; long sum; } nestmap;
static int inner_map(const void *in, void *out, void *ctx)
{
    nestmap *nm = (nestmap *)ctx;
    long xs[50], ys[50];
    int i;
    (void)in;
    for (i = 0; i < 50; i++) xs[i] = i;
    if (pool_map(nm->pool, square, xs, sizeof *xs, ys, sizeof *ys, 50, NULL) != POOL_OK) return 1;
    *(long *)out = 0;
    for (i = 0; i < 50; i++) *(long *)out += ys[i];
    return 0;
}

TEST(map_inside_a_task)
{
    pool_t *p;
    pool_config c = {0};
    nestmap nm;
    long in[8] = {0}, out[8];
    pool_map_opts o;
    int i;
    c.workers = 1;
    REQUIRE(pool_create(&p, &c) == POOL_OK);
    nm.pool = p;
    memset(&o, 0, sizeof o);
    o.ctx = &nm;
    o.chunksize = 1;
    CHECK_EQ(pool_map(p, inner_map, in, sizeof *in, out, sizeof *out, 8, &o), POOL_OK);
    for (i = 0; i < 8; i++) CHECK_EQ(out[i], 40425);
    pool_destroy(p);
}

TEST(close_join_semantics)
{
    pool_t *p;
    pool_config c = {0};
    pool_future_t *fs[20], *f;
    long args[20], res;
    int i;
    c.workers = 2;
    REQUIRE(pool_create(&p, &c) == POOL_OK);
    CHECK_EQ(pool_join(p), POOL_ESTATE); /* join before close */
    for (i = 0; i < 20; i++) {
        args[i] = 5;
        REQUIRE(pool_apply_async(p, sleepy_square, &args[i], sizeof args[i], sizeof res, NULL, &fs[i]) == POOL_OK);
    }
    CHECK_EQ(pool_close(p), POOL_OK);
    CHECK_EQ(pool_apply_async(p, square, &args[0], sizeof args[0], sizeof res, NULL, &f), POOL_ECLOSED);
    CHECK_EQ(pool_submit(p, square, &args[0], sizeof args[0], NULL), POOL_ECLOSED);
    CHECK_EQ(pool_join(p), POOL_OK);
    for (i = 0; i < 20; i++) { /* queued work still ran */
        CHECK(pool_future_ready(fs[i]));
        CHECK_EQ(pool_future_get(fs[i], &res, 0), POOL_OK);
        CHECK_EQ(res, 25);
        pool_future_free(fs[i]);
    }
    CHECK_EQ(pool_join(p), POOL_OK); /* twice is fine */
    pool_destroy(p);
}

TEST(terminate_cancels_pending)
{
    pool_t *p;
    pool_config c = {0};
    pool_future_t *running, *fs[10];
    pool_stats st;
    int gate[2] = {0, 0}, i;
    long arg = 2, res;
    c.workers = 1;
    REQUIRE(pool_create(&p, &c) == POOL_OK);
    REQUIRE(pool_apply_async(p, gate_wait, NULL, 0, 0, gate, &running) == POOL_OK);
    wait_started(gate);
    for (i = 0; i < 10; i++)
        REQUIRE(pool_apply_async(p, square, &arg, sizeof arg, sizeof res, NULL, &fs[i]) == POOL_OK);
    CHECK_EQ(pool_terminate(p), POOL_OK);
    for (i = 0; i < 10; i++) {
        CHECK_EQ(pool_future_get(fs[i], &res, 1000), POOL_ECANCELLED);
        pool_future_free(fs[i]);
    }
    CHECK_EQ(pool_apply_async(p, square, &arg, sizeof arg, sizeof res, NULL, &fs[0]), POOL_ECLOSED);
    __atomic_store_n(&gate[0], 1, __ATOMIC_RELEASE); /* the running task finishes */
    CHECK_EQ(pool_join(p), POOL_OK);
    CHECK_EQ(pool_future_get(running, NULL, 0), POOL_OK);
    pool_get_stats(p, &st);
    CHECK_EQ(st.cancelled, 10);
    CHECK_EQ(st.submitted, 11);
    CHECK_EQ(st.completed, 1);
    pool_future_free(running);
    pool_destroy(p);
}

/* Futures a worker took in its batch while it runs a long task are still queued
 * when pool_terminate returns: a waiter that claims one then must cancel it, not
 * run it (the pool was terminated). */
static int ran_after_terminate;
static int mark_ran(const void *in, void *out, void *ctx)
{
    (void)in; (void)out; (void)ctx;
    __atomic_add_fetch(&ran_after_terminate, 1, __ATOMIC_SEQ_CST);
    return 0;
}

TEST(terminate_cancels_futures_in_a_worker_batch)
{
    pool_t *p;
    pool_config c = {0};
    pool_future_t *first, *second, *fs[8];
    int gate1[2] = {0, 0}, gate2[2] = {0, 0};
    int i;
    c.workers = 1;
    REQUIRE(pool_create(&p, &c) == POOL_OK);
    REQUIRE(pool_apply_async(p, gate_wait, NULL, 0, 0, gate1, &first) == POOL_OK);
    wait_started(gate1); /* the worker holds `first`; a backlog builds up behind it */
    REQUIRE(pool_apply_async(p, gate_wait, NULL, 0, 0, gate2, &second) == POOL_OK);
    for (i = 0; i < 8; i++) REQUIRE(pool_apply_async(p, mark_ran, NULL, 0, 0, NULL, &fs[i]) == POOL_OK);
    __atomic_store_n(&gate1[0], 1, __ATOMIC_RELEASE); /* it takes `second` with a batch behind it */
    wait_started(gate2);
    CHECK_EQ(pool_future_wait(first, 2000), POOL_OK);
    CHECK_EQ(pool_terminate(p), POOL_OK);
    for (i = 0; i < 8; i++) CHECK_EQ(pool_future_get(fs[i], NULL, -1), POOL_ECANCELLED);
    CHECK_EQ(__atomic_load_n(&ran_after_terminate, __ATOMIC_SEQ_CST), 0);
    __atomic_store_n(&gate2[0], 1, __ATOMIC_RELEASE);
    CHECK_EQ(pool_join(p), POOL_OK);
    CHECK_EQ(__atomic_load_n(&ran_after_terminate, __ATOMIC_SEQ_CST), 0);
    pool_future_free(first);
    pool_future_free(second);
    for (i = 0; i < 8; i++) pool_future_free(fs[i]);
    pool_destroy(p);
}

TEST(futures_outlive_the_pool)
{
    pool_t *p;
    pool_future_t *f, *g;
    long arg = 7, res = 0;
    REQUIRE(pool_create(&p, NULL) == POOL_OK);
    REQUIRE(pool_apply_async(p, square, &arg, sizeof arg, sizeof res, NULL, &f) == POOL_OK);
    REQUIRE(pool_apply_async(p, square, &arg, sizeof arg, sizeof res, NULL, &g) == POOL_OK);
    CHECK_EQ(pool_future_wait(f, -1), POOL_OK);
    pool_destroy(p);
    CHECK_EQ(pool_future_get(f, &res, -1), POOL_OK);
    CHECK_EQ(res, 49);
    CHECK(pool_future_ready(g)); /* ran or was cancelled: either way, done */
    pool_future_free(f);
    pool_future_free(g); /* the last one releases the pool's core (ASan checks) */
}

typedef struct rangesum { long sum; long max_piece; } rangesum;
static int sum_range(int64_t b, int64_t e, void *ctx)
{
    rangesum *rs = (rangesum *)ctx;
    long s = 0, piece = (long)(e - b), m;
    int64_t i;
    for (i = b; i < e; i++) s += (long)i;
    __atomic_add_fetch(&rs->sum, s, __ATOMIC_RELAXED);
    m = __atomic_load_n(&rs->max_piece, __ATOMIC_RELAXED);
    while (piece > m && !__atomic_compare_exchange_n(&rs->max_piece, &m, piece, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {}
    return b <= 123456 && 123456 < e && rs->max_piece < 0 ? 7 : 0;
}

static int fail_range(int64_t b, int64_t e, void *ctx)
{
    (void)ctx;
    return (b <= 5000 && 5000 < e) || (b <= 90000 && 90000 < e) ? 11 : 0;
}

TEST(parallel_for)
{
    pool_t *p;
    rangesum rs = {0, 0};
    REQUIRE(pool_create(&p, NULL) == POOL_OK);
    CHECK_EQ(pool_parallel_for(p, -1000, 200000, 1000, sum_range, &rs), POOL_OK);
    CHECK_EQ(rs.sum, (long)(199999L * 200000L / 2 - 1000L * 1001L / 2));
    CHECK(rs.max_piece <= 1000);
    rs.sum = 0;
    CHECK_EQ(pool_parallel_for(p, 0, 100000, 0, sum_range, &rs), POOL_OK);
    CHECK_EQ(rs.sum, 99999L * 100000L / 2);
    CHECK_EQ(pool_parallel_for(p, 0, 100000, 100, fail_range, NULL), 11);
    CHECK_EQ(pool_parallel_for(p, 5, 5, 1, sum_range, &rs), POOL_OK);
    CHECK_EQ(pool_parallel_for(p, 6, 5, 1, sum_range, &rs), POOL_EINVAL);
    CHECK_EQ(pool_parallel_for(p, 0, 5, -1, sum_range, &rs), POOL_EINVAL);
    CHECK_EQ(pool_parallel_for(p, 0, 5, 1, NULL, &rs), POOL_EINVAL);
    CHECK_EQ(pool_parallel_for(NULL, 0, 5, 1, sum_range, &rs), POOL_EINVAL);
    CHECK_EQ(pool_parallel_for(p, INT64_MIN, INT64_MAX, 1, sum_range, &rs), POOL_EOVERFLOW);
    pool_destroy(p);
}

typedef struct progress_log { int calls; uint64_t last; uint64_t total; int monotonic; pthread_t thread; int same_thread; } progress_log;
static void log_progress(uint64_t done, uint64_t total, void *user)
{
    progress_log *pl = (progress_log *)user;
    if (pl->calls == 0) { pl->thread = pthread_self(); pl->same_thread = 1; }
    if (!pthread_equal(pl->thread, pthread_self())) pl->same_thread = 0;
    if (done < pl->last) pl->monotonic = 0;
    pl->last = done;
    pl->total = total;
    pl->calls++;
}

static int slow_identity(const void *in, void *out, void *ctx)
{
    (void)ctx;
    if (*(const long *)in % 50 == 0) test_sleep_ms(2);
    *(long *)out = *(const long *)in;
    return 0;
}

TEST(progress_callback)
{
    pool_t *p;
    pool_config c = {0};
    progress_log pl;
    pool_map_opts o;
    pool_iter_t *it;
    size_t n = 5000;
    long *in = iota(n), *out = (long *)calloc(n, sizeof *out), v;
    memset(&pl, 0, sizeof pl);
    pl.monotonic = 1;
    c.workers = 2;
    c.progress_interval_ms = 5;
    REQUIRE(pool_create(&p, &c) == POOL_OK);
    memset(&o, 0, sizeof o);
    o.progress = log_progress;
    o.progress_ctx = &pl;
    CHECK_EQ(pool_map(p, slow_identity, in, sizeof *in, out, sizeof *out, n, &o), POOL_OK);
    CHECK(pl.calls >= 3);
    CHECK(pl.monotonic);
    CHECK(pl.same_thread);
    CHECK(pthread_equal(pl.thread, pthread_self()));
    CHECK_EQ(pl.last, n);
    CHECK_EQ(pl.total, n);
    /* imap too */
    memset(&pl, 0, sizeof pl);
    pl.monotonic = 1;
    REQUIRE(pool_imap(p, slow_identity, in, sizeof *in, sizeof v, n, &o, &it) == POOL_OK);
    while (pool_iter_next(it, &v, NULL, -1) == POOL_OK) {}
    pool_iter_free(it);
    CHECK(pl.calls >= 2);
    CHECK_EQ(pl.last, n);
    free(in);
    free(out);
    pool_destroy(p);
}

typedef struct initlog { int inits[8]; int finis[8]; int fail_index; } initlog;
static int init_worker(int w, void *ctx)
{
    initlog *il = (initlog *)ctx;
    __atomic_add_fetch(&il->inits[w], 1, __ATOMIC_SEQ_CST);
    return w == il->fail_index ? 5 : 0;
}
static void fini_worker(int w, void *ctx)
{
    initlog *il = (initlog *)ctx;
    __atomic_add_fetch(&il->finis[w], 1, __ATOMIC_SEQ_CST);
}
static int report_index(const void *in, void *out, void *ctx)
{
    (void)in; (void)ctx;
    test_sleep_ms(1);
    *(int *)out = pool_worker_index();
    return 0;
}

TEST(initializer_finalizer_worker_index)
{
    pool_t *p = NULL;
    pool_config c = {0};
    initlog il;
    int in[64], out[64], i, threads0 = test_threads_settle(test_base_threads); /* no test leaves a thread */
    memset(&il, 0, sizeof il);
    memset(in, 0, sizeof in);
    il.fail_index = -1;
    c.workers = 4;
    c.initializer = init_worker;
    c.finalizer = fini_worker;
    c.init_ctx = &il;
    REQUIRE(pool_create(&p, &c) == POOL_OK);
    for (i = 0; i < 4; i++) CHECK_EQ(il.inits[i], 1);
    CHECK_EQ(pool_map(p, report_index, in, sizeof *in, out, sizeof *out, 64, NULL), POOL_OK);
    for (i = 0; i < 64; i++) CHECK(out[i] >= -1 && out[i] < 4); /* -1: the caller helped */
    CHECK_EQ(pool_worker_index(), -1);
    pool_destroy(p);
    for (i = 0; i < 4; i++) CHECK_EQ(il.finis[i], 1);
    /* a failing initializer: pool_create fails and leaves nothing */
    memset(&il, 0, sizeof il);
    il.fail_index = 2;
    p = (pool_t *)&il;
    CHECK_EQ(pool_create(&p, &c), POOL_EINIT);
    CHECK(p == NULL);
    CHECK_EQ(test_threads_settle(threads0), threads0);
}

TEST(no_threads_or_fds_left)
{
    int threads0 = test_threads_settle(test_base_threads), fds0 = test_count_fds(), i;
    for (i = 0; i < 20; i++) {
        pool_t *p;
        pool_config c = {0};
        long in[100], out[100];
        int k;
        for (k = 0; k < 100; k++) in[k] = k;
        c.workers = 1 + i % 4;
        REQUIRE(pool_create(&p, &c) == POOL_OK);
        CHECK_EQ(test_threads_settle(threads0 + c.workers), threads0 + c.workers);
        CHECK_EQ(pool_map(p, square, in, sizeof *in, out, sizeof *out, 100, NULL), POOL_OK);
        pool_destroy(p);
    }
    CHECK_EQ(test_threads_settle(threads0), threads0);
    CHECK_EQ(test_count_fds(), fds0);
}

TEST(idle_workers_use_no_cpu)
{
    pool_t *p;
    pool_config c = {0};
    long in[1000], out[1000];
    struct timespec a, b;
    double used_ms;
    int k;
    for (k = 0; k < 1000; k++) in[k] = k;
    c.workers = 4;
    REQUIRE(pool_create(&p, &c) == POOL_OK);
    CHECK_EQ(pool_map(p, square, in, sizeof *in, out, sizeof *out, 1000, NULL), POOL_OK);
    test_sleep_ms(50); /* past the spin */
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &a);
    test_sleep_ms(400);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &b);
    used_ms = (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6;
    CHECK(used_ms < 40); /* 4 spinning threads would burn ~1600 ms */
    pool_destroy(p);
}

TEST(fork_child_gets_a_working_pool)
{
    pool_t *p;
    long in[100], out[100];
    pid_t pid;
    int status = -1, k;
    for (k = 0; k < 100; k++) in[k] = k;
    REQUIRE(pool_create(&p, NULL) == POOL_OK);
    CHECK_EQ(pool_map(p, square, in, sizeof *in, out, sizeof *out, 100, NULL), POOL_OK);
    pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        pool_t *q;
        int bad = 0;
        if (pool_map(p, square, in, sizeof *in, out, sizeof *out, 100, NULL) != POOL_EFORKED) bad |= 1;
#if TEST_TSAN
        /* TSan cannot start threads in the child of a threaded process; the
         * non-TSan builds check the new pool in the child */
        _exit(bad);
#endif
        if (pool_create(&q, NULL) != POOL_OK) _exit(10);
        if (pool_map(q, square, in, sizeof *in, out, sizeof *out, 100, NULL) != POOL_OK) bad |= 2;
        if (out[99] != 99 * 99) bad |= 4;
        pool_destroy(q);
        pool_destroy(p); /* releases the inherited copy's memory only */
        _exit(bad);
    }
    REQUIRE(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
    CHECK_EQ(WEXITSTATUS(status), 0);
    CHECK_EQ(pool_map(p, square, in, sizeof *in, out, sizeof *out, 100, NULL), POOL_OK);
    pool_destroy(p);
}

static int count_add(const void *in, void *out, void *ctx)
{
    (void)in; (void)out;
    __atomic_add_fetch((long *)ctx, 1, __ATOMIC_RELAXED);
    return 0;
}

typedef struct hammer { pool_t *p; long counter; int bad; } hammer;
static void *hammer_thread(void *arg)
{
    hammer *h = (hammer *)arg;
    int i;
    for (i = 0; i < 3000; i++) {
        pool_future_t *f;
        long x = i, r = 0;
        if (pool_apply_async(h->p, square, &x, sizeof x, sizeof r, NULL, &f) != POOL_OK) { h->bad = 1; break; }
        if (i % 3 == 0) pool_submit(h->p, count_add, NULL, 0, &h->counter);
        if (pool_future_get(f, &r, -1) != POOL_OK || r != x * x) h->bad = 1;
        pool_future_free(f);
    }
    return NULL;
}

TEST(many_submitters_stress)
{
    pool_t *p;
    pool_config c = {0};
    pthread_t th[4];
    hammer h[4];
    pool_stats st;
    int i;
    c.workers = 3;
    REQUIRE(pool_create(&p, &c) == POOL_OK);
    for (i = 0; i < 4; i++) {
        memset(&h[i], 0, sizeof h[i]);
        h[i].p = p;
        pthread_create(&th[i], NULL, hammer_thread, &h[i]);
    }
    for (i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK(!h[i].bad);
    }
    pool_close(p);
    pool_join(p);
    for (i = 0; i < 4; i++) CHECK_EQ(h[i].counter, 1000);
    pool_get_stats(p, &st);
    CHECK_EQ(st.submitted, 16000);
    CHECK_EQ(st.completed, 16000);
    pool_destroy(p);
}

/* Fire and forget from several threads at once, nobody waiting on a future (so
 * nobody runs a task but the workers), in short bursts so that the last push of a
 * burst is often cut in two by preemption (the submitters outnumber the cores):
 * after each burst every task runs with no later push to rescue it. This caught a
 * queue that looked empty with tasks in it. */
typedef struct firer { pool_t *p; long *counter; pthread_barrier_t *bar; int rounds, bad; } firer;

static void *fire_thread(void *arg)
{
    firer *fr = (firer *)arg;
    int r, i;
    for (r = 0; r < fr->rounds; r++) {
        for (i = 0; i < 4; i++)
            if (pool_submit(fr->p, count_add, NULL, 0, fr->counter) != POOL_OK) fr->bad = 1;
        pthread_barrier_wait(&fr->bar[0]); /* burst done */
        pthread_barrier_wait(&fr->bar[1]); /* checked */
    }
    return NULL;
}

TEST(fire_and_forget_from_many_threads_loses_nothing)
{
    int mode;
    for (mode = 0; mode < 2; mode++) {
        pool_t *p;
        pool_config c = {0};
        pthread_t th[4];
        pthread_barrier_t bar[2];
        firer fr[4];
        long counter = 0, want = 0, lost = 0;
        int i, r, rounds = 1500;
        c.workers = 2;
        c.spin_us = mode ? -1 : 0; /* sleep at once, or the default spin */
        REQUIRE(pool_create(&p, &c) == POOL_OK);
        pthread_barrier_init(&bar[0], NULL, 5);
        pthread_barrier_init(&bar[1], NULL, 5);
        for (i = 0; i < 4; i++) {
            fr[i].p = p; fr[i].counter = &counter; fr[i].bar = bar; fr[i].rounds = rounds; fr[i].bad = 0;
            REQUIRE(pthread_create(&th[i], NULL, fire_thread, &fr[i]) == 0);
        }
        for (r = 0; r < rounds; r++) {
            double until;
            pthread_barrier_wait(&bar[0]);
            want += 16;
            until = test_now_ms() + 2000; /* only a worker can run them */
            while (__atomic_load_n(&counter, __ATOMIC_ACQUIRE) < want && test_now_ms() < until) sched_yield();
            if (__atomic_load_n(&counter, __ATOMIC_ACQUIRE) != want) lost++;
            want = __atomic_load_n(&counter, __ATOMIC_ACQUIRE);
            pthread_barrier_wait(&bar[1]);
        }
        for (i = 0; i < 4; i++) {
            pthread_join(th[i], NULL);
            CHECK(!fr[i].bad);
        }
        CHECK_EQ(lost, 0);
        pthread_barrier_destroy(&bar[0]);
        pthread_barrier_destroy(&bar[1]);
        pool_close(p);
        pool_join(p);
        pool_destroy(p);
    }
}

/* Submissions racing pool_close: each returns POOL_OK and runs, or POOL_ECLOSED
 * and does not; nothing is lost or run twice, and no future is left pending. */
typedef struct closer_race { pool_t *p; long ran_ok, ok, closed, bad; } closer_race;

static void *race_submit_thread(void *arg)
{
    closer_race *cr = (closer_race *)arg;
    for (;;) {
        pool_future_t *f;
        long x = 3, r = 0;
        int rc = pool_apply_async(cr->p, square, &x, sizeof x, sizeof r, NULL, &f);
        if (rc == POOL_ECLOSED) { cr->closed++; break; }
        if (rc != POOL_OK) { cr->bad++; break; }
        cr->ok++;
        /* a timed wait never runs the task itself: only a worker can complete it */
        if (pool_future_wait(f, 10000) == POOL_OK && pool_future_get(f, &r, 0) == POOL_OK && r == 9) cr->ran_ok++;
        pool_future_free(f);
    }
    return NULL;
}

TEST(submit_racing_close_loses_nothing)
{
    int round;
    for (round = 0; round < 20; round++) {
        pool_t *p;
        pool_config c = {0};
        pthread_t th[3];
        closer_race cr[3];
        pool_stats st;
        int i;
        long ok = 0;
        c.workers = 2;
        REQUIRE(pool_create(&p, &c) == POOL_OK);
        for (i = 0; i < 3; i++) {
            memset(&cr[i], 0, sizeof cr[i]);
            cr[i].p = p;
            REQUIRE(pthread_create(&th[i], NULL, race_submit_thread, &cr[i]) == 0);
        }
        test_sleep_ms(1 + round % 3);
        CHECK_EQ(pool_close(p), POOL_OK);
        for (i = 0; i < 3; i++) {
            pthread_join(th[i], NULL);
            CHECK_EQ(cr[i].bad, 0);
            CHECK_EQ(cr[i].closed, 1);
            CHECK_EQ(cr[i].ran_ok, cr[i].ok);
            ok += cr[i].ok;
        }
        CHECK_EQ(pool_join(p), POOL_OK);
        pool_get_stats(p, &st);
        CHECK_EQ(st.completed, (uint64_t)ok);
        pool_destroy(p);
    }
}

/* Futures in existence that are not on a free list (white-box: after every handle
 * was freed and the pool joined, this must be 0: none is lost in between). */
static uint64_t futures_in_limbo(pool_t *p)
{
    uint64_t n = 0;
    pool_future_t *f;
    for (f = p->free_top; f; f = f->free_next) n++;
    for (f = p->free_mine; f; f = f->free_next) n++;
    return (shmq__load(&p->live, SHMQ__ACQUIRE) & ~POOL__RELEASED) - n;
}

static int answer_task(const void *in, void *out, void *ctx)
{
    (void)in; (void)ctx;
    if (out) *(int *)out = 42;
    return 0;
}

typedef struct hooked { pool_t *p; int with_handle, rc; } hooked;

static void *hooked_submit(void *arg)
{
    hooked *h = (hooked *)arg;
    pool_future_t *f = NULL;
    hook_points = h->with_handle ? (1 << 1) | (1 << 2) : 1 << 1;
    if (h->with_handle) {
        h->rc = pool_apply_async(h->p, answer_task, NULL, 0, 0, NULL, &f);
        if (f) pool_future_free(f);
    } else {
        h->rc = pool_submit(h->p, answer_task, NULL, 0, NULL);
    }
    return NULL;
}

/* A pool_submit whose push is followed by a close must not touch its future
 * afterwards unless it still holds it: here a backpressured submitter runs that
 * future and gets the same memory back for its own apply_async; the first
 * submitter, waking after the close, once took that future "back", so it never
 * completed. */
TEST(submit_racing_close_never_takes_another_future)
{
    pool_t *p;
    pool_config c = {0};
    pthread_t th;
    hooked h;
    pool_future_t *y = NULL;
    int gate[2] = {0, 0};
    int r = 0;
    c.workers = 1;
    c.spin_us = -1;
    c.max_queued = 1; /* so that our apply_async runs the racing submitter's task */
    REQUIRE(pool_create(&p, &c) == POOL_OK);
    REQUIRE(pool_submit(p, gate_wait, NULL, 0, gate) == POOL_OK);
    wait_started(gate); /* the worker is in the gate */
    h.p = p; h.with_handle = 0; h.rc = -1;
    REQUIRE(pthread_create(&th, NULL, hooked_submit, &h) == 0);
    test_sleep_ms(10); /* it pushed, and sleeps at hook point 1 */
    CHECK_EQ(pool_apply_async(p, answer_task, NULL, 0, sizeof r, NULL, &y), POOL_OK);
    CHECK_EQ(pool_close(p), POOL_OK);
    pthread_join(th, NULL);
    CHECK(h.rc == POOL_OK || h.rc == POOL_ECLOSED);
    __atomic_store_n(&gate[0], 1, __ATOMIC_RELEASE);
    /* a timed get only waits: the worker must run y */
    CHECK_EQ(pool_future_wait(y, 5000), POOL_OK);
    CHECK_EQ(pool_future_get(y, &r, 0), POOL_OK);
    CHECK_EQ(r, 42);
    pool_future_free(y);
    CHECK_EQ(pool_join(p), POOL_OK);
    CHECK_EQ(futures_in_limbo(p), 0);
    pool_destroy(p);
}

/* An apply_async that takes its future back after a close while a worker drops
 * the queue's entry at the same moment: the future is recycled exactly once
 * (a leaked future kept the whole pool's memory alive after pool_destroy). */
TEST(apply_async_racing_close_leaks_nothing)
{
    pool_t *p;
    pool_config c = {0};
    pthread_t th;
    hooked h;
    int gate[2] = {0, 0};
    c.workers = 1;
    c.spin_us = -1;
    REQUIRE(pool_create(&p, &c) == POOL_OK);
    REQUIRE(pool_submit(p, gate_wait, NULL, 0, gate) == POOL_OK);
    wait_started(gate);
    hook_release = &gate[0]; /* at point 2 the worker leaves the gate and drops our entry */
    h.p = p; h.with_handle = 1; h.rc = -1;
    REQUIRE(pthread_create(&th, NULL, hooked_submit, &h) == 0);
    test_sleep_ms(10);
    CHECK_EQ(pool_close(p), POOL_OK);
    pthread_join(th, NULL);
    hook_release = NULL;
    __atomic_store_n(&gate[0], 1, __ATOMIC_RELEASE);
    CHECK(h.rc == POOL_OK || h.rc == POOL_ECLOSED);
    CHECK_EQ(pool_join(p), POOL_OK);
    CHECK_EQ(futures_in_limbo(p), 0);
    pool_destroy(p);
}

/* A task that waits (without a time limit) for any of a set of futures that sits
 * in its own worker's batch (taken with it from a backlog, so no other thread can
 * see it) runs it itself, as pool_future_get would. It used to sleep for good. */
static pool_future_t *volatile batched_b;
static int wait_any_task(const void *in, void *out, void *ctx)
{
    pool_future_t *fs[1];
    size_t which = 99;
    int rc;
    (void)in; (void)out; (void)ctx;
    fs[0] = batched_b;
    rc = pool_wait_any(fs, 1, -1, &which);
    return rc == POOL_OK && which == 0 && pool_future_ready(fs[0]) ? 0 : 1;
}

TEST(wait_any_in_a_task_runs_a_batched_future)
{
    pool_t *p;
    pool_config c = {0};
    pool_future_t *a, *b, *more[4];
    int gate[2] = {0, 0};
    int i;
    c.workers = 1;
    REQUIRE(pool_create(&p, &c) == POOL_OK);
    REQUIRE(pool_submit(p, gate_wait, NULL, 0, gate) == POOL_OK);
    wait_started(gate); /* the worker is in the gate: a backlog builds up behind it */
    REQUIRE(pool_apply_async(p, wait_any_task, NULL, 0, 0, NULL, &a) == POOL_OK);
    REQUIRE(pool_apply_async(p, answer_task, NULL, 0, sizeof(int), NULL, &b) == POOL_OK);
    batched_b = b;
    for (i = 0; i < 4; i++) REQUIRE(pool_apply_async(p, answer_task, NULL, 0, sizeof(int), NULL, &more[i]) == POOL_OK);
    __atomic_store_n(&gate[0], 1, __ATOMIC_RELEASE);
    CHECK_EQ(pool_future_wait(a, 5000), POOL_OK); /* a timed wait never runs a or b itself */
    CHECK_EQ(pool_future_get(a, NULL, 0), 0);
    pool_future_free(a);
    pool_future_free(b);
    for (i = 0; i < 4; i++) pool_future_free(more[i]);
    pool_destroy(p);
}

/* Blocking tasks submitted in a burst spread over every worker, whether the
 * workers were asleep or still spinning when the burst came (the wake-up rules
 * skip the signal while a worker spins). Four 100 ms sleeps on four workers take
 * ~100 ms; in series they would take 400. */
TEST(a_burst_of_blocking_tasks_uses_every_worker)
{
    pool_t *p;
    pool_config c = {0};
    int round, k;
    long ms = 100;
    c.workers = 4;
    REQUIRE(pool_create(&p, &c) == POOL_OK);
    for (round = 0; round < 4; round++) {
        pool_future_t *f[4];
        double t0;
        test_sleep_ms(round % 2 ? 0 : 30); /* asleep after 30 ms; spinning right after a burst */
        t0 = test_now_ms();
        for (k = 0; k < 4; k++) REQUIRE(pool_apply_async(p, sleepy_square, &ms, sizeof ms, sizeof(long), NULL, &f[k]) == POOL_OK);
        for (k = 0; k < 4; k++) {
            CHECK_EQ(pool_future_wait(f[k], 5000), POOL_OK); /* timed: the waiter runs none */
            pool_future_free(f[k]);
        }
        CHECK(test_now_ms() - t0 < 300);
    }
    pool_destroy(p);
}

TEST(strerror_covers_every_code)
{
    CHECK(strcmp(pool_strerror(POOL_OK), "success") == 0);
    CHECK(strstr(pool_strerror(POOL_ETIMEDOUT), "timed out") != NULL);
    CHECK(strstr(pool_strerror(42), "task") != NULL);
    CHECK(strstr(pool_strerror(-999), "unknown") != NULL);
#define X_CHECK(name, value, text) CHECK(pool_strerror(value) != NULL && strlen(pool_strerror(value)) > 3);
    POOL_ERRORS(X_CHECK)
#undef X_CHECK
}

TEST(shared_alloc_is_aligned)
{
    pool_t *p;
    int i;
    REQUIRE(pool_create(&p, NULL) == POOL_OK);
    CHECK(pool_shared_alloc(p, 0) == NULL);
    CHECK(pool_shared_alloc(NULL, 8) == NULL);
    for (i = 1; i < 200; i += 37) {
        unsigned char *m = (unsigned char *)pool_shared_alloc(p, (size_t)i);
        REQUIRE(m != NULL);
        CHECK((uintptr_t)m % 64 == 0);
        memset(m, 0xab, (size_t)i);
        pool_shared_free(p, m);
    }
    pool_shared_free(p, NULL);
    pool_destroy(p);
}

static void count_cb(pool_future_t *f, void *user)
{
    (void)f;
    __atomic_add_fetch((int *)user, 1, __ATOMIC_SEQ_CST);
}

TEST(callback_races_completion_exactly_once)
{
    pool_t *p;
    pool_config c = {0};
    int i, bad = 0;
    c.workers = 2;
    REQUIRE(pool_create(&p, &c) == POOL_OK);
    for (i = 0; i < 3000; i++) {
        pool_future_t *f;
        long x = i, r;
        int calls = 0;
        REQUIRE(pool_apply_async(p, square, &x, sizeof x, sizeof r, NULL, &f) == POOL_OK);
        if (i % 3) test_sleep_ms(0);
        CHECK_EQ(pool_future_on_done(f, count_cb, &calls), POOL_OK);
        pool_future_wait(f, -1);
        while (__atomic_load_n(&calls, __ATOMIC_SEQ_CST) == 0) {}
        pool_future_free(f);
        bad += __atomic_load_n(&calls, __ATOMIC_SEQ_CST) != 1;
    }
    CHECK_EQ(bad, 0);
    pool_destroy(p);
}

TEST(timed_get_never_runs_the_task)
{
    pool_t *p;
    pool_config c = {0};
    pool_future_t *blocker, *f;
    int gate[2] = {0, 0};
    long arg = 1500, res = 0;
    double t0;
    c.workers = 1;
    REQUIRE(pool_create(&p, &c) == POOL_OK);
    REQUIRE(pool_apply_async(p, gate_wait, NULL, 0, 0, gate, &blocker) == POOL_OK);
    wait_started(gate);
    REQUIRE(pool_apply_async(p, sleepy_square, &arg, sizeof arg, sizeof res, NULL, &f) == POOL_OK);
    t0 = test_now_ms();
    CHECK_EQ(pool_future_get(f, &res, 50), POOL_ETIMEDOUT); /* not run inline for 1.5 s */
    CHECK(test_now_ms() - t0 < 1000);
    CHECK(!pool_future_ready(f));
    __atomic_store_n(&gate[0], 1, __ATOMIC_RELEASE);
    CHECK_EQ(pool_future_get(f, &res, -1), POOL_OK);
    CHECK_EQ(res, 1500L * 1500L);
    pool_future_free(f);
    pool_future_free(blocker);
    pool_destroy(p);
}

static int record_runner(const void *in, void *out, void *ctx)
{
    (void)in; (void)ctx;
    *(int *)out = pool_worker_index();
    return 0;
}

TEST(max_queued_backpressure)
{
    pool_t *p;
    pool_config c = {0};
    pool_future_t *blocker, *fs[20];
    int gate[2] = {0, 0}, i, by_caller = 0, who;
    c.workers = 1;
    c.max_queued = 4;
    REQUIRE(pool_create(&p, &c) == POOL_OK);
    REQUIRE(pool_apply_async(p, gate_wait, NULL, 0, 0, gate, &blocker) == POOL_OK);
    wait_started(gate);
    for (i = 0; i < 20; i++) /* the worker is stuck: the submitter drains the queue itself */
        REQUIRE(pool_apply_async(p, record_runner, NULL, 0, sizeof(int), NULL, &fs[i]) == POOL_OK);
    for (i = 0; i < 20; i++) {
        if (pool_future_ready(fs[i])) {
            CHECK_EQ(pool_future_get(fs[i], &who, 0), POOL_OK);
            by_caller += who == -1;
        }
    }
    CHECK_EQ(by_caller, 16); /* never more than 4 waited in the queue */
    __atomic_store_n(&gate[0], 1, __ATOMIC_RELEASE);
    CHECK_EQ(pool_wait_all(fs, 20, -1), POOL_OK);
    for (i = 0; i < 20; i++) pool_future_free(fs[i]);
    pool_future_free(blocker);
    pool_destroy(p);
    c.max_queued = -1;
    CHECK_EQ(pool_create(&p, &c), POOL_EINVAL);
}

int main(int argc, char **argv)
{
    RUN(create_defaults_and_bad_config);
    RUN(map_ordered_results);
    RUN(map_reports_lowest_failing_index);
    RUN(map_bad_input);
    RUN(imap_ordered_bounded);
    RUN(imap_unordered_completion_order_and_errors);
    RUN(imap_free_early_cancels_the_rest);
    RUN(imap_timeout_poll);
    RUN(apply_async_get_timeout_poll);
    RUN(apply_async_copies_large_arguments);
    RUN(future_cancel);
    RUN(future_callback);
    RUN(slow_callback_does_not_wedge_waiters);
    RUN(wait_any_and_all);
    RUN(nested_waits_never_deadlock);
    RUN(map_inside_a_task);
    RUN(close_join_semantics);
    RUN(terminate_cancels_pending);
    RUN(terminate_cancels_futures_in_a_worker_batch);
    RUN(futures_outlive_the_pool);
    RUN(parallel_for);
    RUN(progress_callback);
    RUN(initializer_finalizer_worker_index);
    RUN(no_threads_or_fds_left);
    RUN(idle_workers_use_no_cpu);
    RUN(fork_child_gets_a_working_pool);
    RUN(many_submitters_stress);
    RUN(fire_and_forget_from_many_threads_loses_nothing);
    RUN(submit_racing_close_loses_nothing);
    RUN(submit_racing_close_never_takes_another_future);
    RUN(apply_async_racing_close_leaks_nothing);
    RUN(wait_any_in_a_task_runs_a_batched_future);
    RUN(a_burst_of_blocking_tasks_uses_every_worker);
    RUN(strerror_covers_every_code);
    RUN(timed_get_never_runs_the_task);
    RUN(callback_races_completion_exactly_once);
    RUN(max_queued_backpressure);
    RUN(shared_alloc_is_aligned);
    return test_run_all(argc, argv);
}
