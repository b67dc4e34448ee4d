/* Process pool: the thread pool's API on processes, and what survives a crash. */
#define POOL_IMPLEMENTATION
#include "pool.h"
#include "test.h"

#include <errno.h>
#include <signal.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/wait.h>

static int square(const void *in, void *out, void *ctx)
{
    (void)ctx;
    *(long *)out = *(const long *)in * *(const long *)in;
    return 0;
}

static pool_t *make_pool(int workers, pool_start_method sm)
{
    pool_t *p = NULL;
    pool_config c;
    memset(&c, 0, sizeof c);
    c.kind = POOL_PROCESSES;
    c.workers = workers;
    c.start_method = sm;
    if (pool_create(&p, &c) != POOL_OK) return NULL;
    return p;
}

TEST(map_results_in_order)
{
    pool_t *p = make_pool(2, POOL_START_FORK);
    size_t sizes[] = {1, 3, 100, 10007}, k, i;
    REQUIRE(p != NULL);
    CHECK_EQ(pool_workers(p), 2);
    for (k = 0; k < 4; k++) {
        size_t n = sizes[k];
        long *in = (long *)malloc(n * sizeof *in), *out = (long *)calloc(n, sizeof *out);
        pool_map_opts o;
        for (i = 0; i < n; i++) in[i] = (long)i;
        memset(&o, 0, sizeof o);
        o.chunksize = k == 2 ? 7 : 0;
        CHECK_EQ(pool_map(p, square, in, sizeof *in, out, sizeof *out, n, &o), POOL_OK);
        for (i = 0; i < n; i++)
            if (out[i] != (long)(i * i)) { CHECK_EQ(out[i], i * i); break; }
        free(in);
        free(out);
    }
    pool_destroy(p);
}

static int fails_on_marks(const void *in, void *out, void *ctx)
{
    long v = *(const long *)in;
    (void)ctx;
    *(long *)out = v;
    return v == 300 || v == 700 ? 9 : 0;
}

TEST(map_failure_index_and_apply_async)
{
    pool_t *p = make_pool(2, POOL_START_FORK);
    long in[1000], out[1000], x = 12, r = 0;
    pool_failure f;
    pool_map_opts o;
    pool_future_t *fu;
    int i;
    REQUIRE(p != NULL);
    for (i = 0; i < 1000; i++) in[i] = i;
    memset(&o, 0, sizeof o);
    o.failure = &f;
    CHECK_EQ(pool_map(p, fails_on_marks, in, sizeof *in, out, sizeof *out, 1000, &o), 9);
    CHECK_EQ(f.index, 300);
    CHECK_EQ(f.signal, 0);
    CHECK_EQ(out[999], 999); /* every element ran */
    CHECK_EQ(pool_apply_async(p, square, &x, sizeof x, sizeof r, NULL, &fu), POOL_OK);
    CHECK_EQ(pool_future_get(fu, &r, -1), POOL_OK);
    CHECK_EQ(r, 144);
    CHECK(pool_future_successful(fu));
    pool_future_free(fu);
    pool_destroy(p);
}

typedef struct shared_vec { double *v; int64_t n; } shared_vec;
static int fill_range(int64_t b, int64_t e, void *ctx)
{
    shared_vec *sv = (shared_vec *)ctx;
    int64_t i;
    for (i = b; i < e; i++) sv->v[i] = (double)i * 0.5;
    return 0;
}

TEST(shared_memory_in_place)
{
    pool_t *p = make_pool(2, POOL_START_FORK);
    shared_vec *sv;
    long *in, *out;
    int64_t i;
    int bad = 0;
    REQUIRE(p != NULL);
    /* ctx must mean the same in the workers: a stack variable set after the fork
     * would not (a worker sees its memory as it was at the fork), so the context
     * itself lives in shared memory */
    sv = (shared_vec *)pool_shared_alloc(p, sizeof *sv);
    REQUIRE(sv != NULL);
    sv->n = 100000;
    sv->v = (double *)pool_shared_alloc(p, (size_t)sv->n * sizeof(double));
    REQUIRE(sv->v != NULL);
    CHECK((uintptr_t)sv->v % 64 == 0);
    CHECK_EQ(pool_parallel_for(p, 0, sv->n, 0, fill_range, sv), POOL_OK);
    for (i = 0; i < sv->n; i++) bad += sv->v[i] != (double)i * 0.5;
    CHECK_EQ(bad, 0);
    /* a map whose input and output are already shared */
    in = (long *)pool_shared_alloc(p, 5000 * sizeof *in);
    out = (long *)pool_shared_alloc(p, 5000 * sizeof *out);
    REQUIRE(in && out);
    for (i = 0; i < 5000; i++) in[i] = (long)i;
    CHECK_EQ(pool_map(p, square, in, sizeof *in, out, sizeof *out, 5000, NULL), POOL_OK);
    CHECK_EQ(out[4999], 4999L * 4999L);
    pool_shared_free(p, in);
    pool_shared_free(p, out);
    pool_shared_free(p, sv->v);
    pool_shared_free(p, sv);
    pool_destroy(p);
}

static int crash_on_500(const void *in, void *out, void *ctx)
{
    long v = *(const long *)in;
    (void)ctx;
    if (v == 500) { volatile int *null = NULL; *null = 1; }
    if (v == 600) abort();
    if (v == 700) exit(3);
    *(long *)out = v * 2;
    return 0;
}

TEST(crashing_tasks_fail_alone)
{
    pool_t *p = make_pool(2, POOL_START_FORK);
    long *in, *out;
    pool_failure f;
    pool_map_opts o;
    pool_stats st;
    int i, bad = 0;
    REQUIRE(p != NULL);
    in = (long *)pool_shared_alloc(p, 2000 * sizeof *in);
    out = (long *)pool_shared_alloc(p, 2000 * sizeof *out);
    for (i = 0; i < 2000; i++) { in[i] = i; out[i] = -1; }
    memset(&o, 0, sizeof o);
    o.failure = &f;
    o.chunksize = 50;
    CHECK_EQ(pool_map(p, crash_on_500, in, sizeof *in, out, sizeof *out, 2000, &o), POOL_EWORKERDIED);
    CHECK_EQ(f.index, 500);
    if (!TEST_ASAN && !TEST_TSAN) CHECK_EQ(f.signal, SIGSEGV); /* a sanitizer turns the crash into an exit */
    for (i = 0; i < 2000; i++) {
        if (i == 500 || i == 600 || i == 700) bad += out[i] != -1;
        else bad += out[i] != 2L * i;
    }
    CHECK_EQ(bad, 0);
    pool_get_stats(p, &st);
    CHECK_EQ(st.worker_deaths, 3);
    CHECK_EQ(st.failed, 3);
    /* the pool goes on */
    for (i = 0; i < 2000; i++) in[i] = i % 100;
    CHECK_EQ(pool_map(p, crash_on_500, in, sizeof *in, out, sizeof *out, 2000, NULL), POOL_OK);
    CHECK_EQ(out[1999], 2 * 99);
    pool_shared_free(p, in);
    pool_shared_free(p, out);
    pool_destroy(p);
}

TEST(crashing_future)
{
    pool_t *p = make_pool(1, POOL_START_FORK);
    pool_future_t *f;
    long x = 600, r;
    REQUIRE(p != NULL);
    CHECK_EQ(pool_apply_async(p, crash_on_500, &x, sizeof x, sizeof r, NULL, &f), POOL_OK);
    CHECK_EQ(pool_future_get(f, &r, -1), POOL_EWORKERDIED);
    if (!TEST_ASAN && !TEST_TSAN) CHECK_EQ(pool_future_signal(f), SIGABRT);
    pool_future_free(f);
    x = 21;
    CHECK_EQ(pool_apply_async(p, crash_on_500, &x, sizeof x, sizeof r, NULL, &f), POOL_OK);
    CHECK_EQ(pool_future_get(f, &r, 5000), POOL_OK);
    CHECK_EQ(r, 42);
    pool_future_free(f);
    pool_destroy(p);
}

static int slow_item(const void *in, void *out, void *ctx)
{
    (void)ctx;
    {
        struct timespec ts = {0, 200000}; /* 0.2 ms */
        nanosleep(&ts, NULL);
    }
    *(long *)out = *(const long *)in + 1;
    return 0;
}

typedef struct killer { int stop; int kills; unsigned seed; } killer;
static void *kill_workers(void *arg)
{
    killer *k = (killer *)arg;
    while (!__atomic_load_n(&k->stop, __ATOMIC_ACQUIRE) && k->kills < 40) {
        int pids[64], n = test_list_children(pids, 64);
        test_sleep_ms(5 + (int)(rand_r(&k->seed) % 20));
        if (n > 0 && kill(pids[rand_r(&k->seed) % (unsigned)(n < 64 ? n : 64)], SIGKILL) == 0) k->kills++;
    }
    return NULL;
}

TEST(random_kills_during_a_long_map)
{
    pool_t *p = make_pool(2, POOL_START_FORK);
    long *in, *out;
    pthread_t th;
    killer k;
    pool_failure f;
    pool_map_opts o;
    int i, wrong = 0, lost = 0, rc, n = 6000;
    REQUIRE(p != NULL);
    in = (long *)pool_shared_alloc(p, (size_t)n * sizeof *in);
    out = (long *)pool_shared_alloc(p, (size_t)n * sizeof *out);
    for (i = 0; i < n; i++) { in[i] = i; out[i] = -1; }
    memset(&k, 0, sizeof k);
    k.seed = 12345;
    memset(&o, 0, sizeof o);
    o.failure = &f;
    pthread_create(&th, NULL, kill_workers, &k);
    rc = pool_map(p, slow_item, in, sizeof *in, out, sizeof *out, (size_t)n, &o);
    __atomic_store_n(&k.stop, 1, __ATOMIC_RELEASE);
    pthread_join(th, NULL);
    for (i = 0; i < n; i++) {
        if (out[i] == -1) lost++;
        else if (out[i] != i + 1) wrong++;
    }
    fprintf(stderr, "  %d kills, %d elements failed\n", k.kills, lost);
    CHECK(k.kills >= 5);
    CHECK_EQ(wrong, 0);
    CHECK(lost <= k.kills);        /* each kill fails at most the element it interrupted */
    CHECK(rc == POOL_OK || rc == POOL_EWORKERDIED);
    if (lost) CHECK_EQ(f.signal, SIGKILL);
    /* still usable */
    CHECK_EQ(pool_map(p, slow_item, in, sizeof *in, out, sizeof *out, 100, NULL), POOL_OK);
    CHECK_EQ(out[99], 100);
    pool_shared_free(p, in);
    pool_shared_free(p, out);
    pool_destroy(p);
}

TEST(imap_on_processes)
{
    pool_t *p = make_pool(2, POOL_START_FORK);
    pool_iter_t *it;
    long in[3000], v;
    size_t idx, expect = 0;
    char seen[3000];
    pool_map_opts o;
    int rc, i, count = 0;
    REQUIRE(p != NULL);
    for (i = 0; i < 3000; i++) in[i] = i;
    memset(&o, 0, sizeof o);
    o.chunksize = 64;
    o.max_inflight = 3;
    REQUIRE(pool_imap(p, square, in, sizeof *in, sizeof v, 3000, &o, &it) == POOL_OK);
    while ((rc = pool_iter_next(it, &v, &idx, -1)) == POOL_OK) {
        CHECK_EQ(idx, expect);
        CHECK_EQ(v, (long)(expect * expect));
        expect++;
    }
    CHECK_EQ(rc, POOL_EDONE);
    CHECK_EQ(expect, 3000);
    pool_iter_free(it);
    memset(seen, 0, sizeof seen);
    REQUIRE(pool_imap_unordered(p, fails_on_marks, in, sizeof *in, sizeof v, 3000, &o, &it) == POOL_OK);
    for (;;) {
        rc = pool_iter_next(it, &v, &idx, 10000);
        if (rc == POOL_EDONE || rc == POOL_ETIMEDOUT) break;
        CHECK(!seen[idx]);
        seen[idx] = 1;
        CHECK_EQ(rc, idx == 300 || idx == 700 ? 9 : 0);
        count++;
    }
    CHECK_EQ(count, 3000);
    pool_iter_free(it);
    /* freed early */
    REQUIRE(pool_imap(p, slow_item, in, sizeof *in, sizeof v, 3000, &o, &it) == POOL_OK);
    CHECK_EQ(pool_iter_next(it, &v, &idx, -1), POOL_OK);
    pool_iter_free(it);
    pool_destroy(p);
}

static int sleeper(const void *in, void *out, void *ctx)
{
    (void)ctx;
    test_sleep_ms((int)*(const long *)in);
    *(long *)out = *(const long *)in;
    return 0;
}

TEST(futures_timeouts_wait_any_cancel)
{
    pool_t *p = make_pool(1, POOL_START_FORK);
    pool_future_t *fs[3];
    long a = 300, b = 10, r = 0;
    size_t which = 9;
    REQUIRE(p != NULL);
    REQUIRE(pool_apply_async(p, sleeper, &a, sizeof a, sizeof r, NULL, &fs[0]) == POOL_OK);
    REQUIRE(pool_apply_async(p, sleeper, &b, sizeof b, sizeof r, NULL, &fs[1]) == POOL_OK);
    REQUIRE(pool_apply_async(p, sleeper, &b, sizeof b, sizeof r, NULL, &fs[2]) == POOL_OK);
    CHECK_EQ(pool_future_get(fs[0], &r, 0), POOL_ETIMEDOUT);
    CHECK_EQ(pool_future_get(fs[0], &r, 50), POOL_ETIMEDOUT);
    test_sleep_ms(50);
    CHECK_EQ(pool_future_cancel(fs[2]), POOL_OK); /* one worker, busy: fs[2] has not started */
    CHECK_EQ(pool_future_get(fs[2], &r, -1), POOL_ECANCELLED);
    CHECK_EQ(pool_wait_any(fs, 2, -1, &which), POOL_OK);
    CHECK_EQ(which, 0);
    CHECK_EQ(pool_wait_all(fs, 2, -1), POOL_OK);
    CHECK_EQ(pool_future_get(fs[1], &r, 0), POOL_OK);
    CHECK_EQ(r, 10);
    pool_future_free(fs[0]);
    pool_future_free(fs[1]);
    pool_future_free(fs[2]);
    pool_destroy(p);
}

static int call_pool_inside(const void *in, void *out, void *ctx)
{
    pool_t *p = *(pool_t *const *)in;
    long x = 1, y;
    (void)ctx;
    *(int *)out = pool_map(p, square, &x, sizeof x, &y, sizeof y, 1, NULL);
    return 0;
}

TEST(bad_input_and_calls_from_a_worker)
{
    pool_t *p;
    pool_config c;
    pool_future_t *f;
    int code = 0;
    void *big;
    memset(&c, 0, sizeof c);
    c.kind = POOL_PROCESSES;
    c.workers = 1;
    c.arena_size = (size_t)16 << 20;
    REQUIRE(pool_create(&p, &c) == POOL_OK);
    REQUIRE(pool_apply_async(p, call_pool_inside, &p, sizeof p, sizeof code, NULL, &f) == POOL_OK);
    CHECK_EQ(pool_future_get(f, &code, -1), POOL_OK);
    CHECK_EQ(code, POOL_EINWORKER);
    pool_future_free(f);
    big = malloc((size_t)32 << 20);
    memset(big, 1, (size_t)32 << 20);
    CHECK_EQ(pool_apply_async(p, square, big, (size_t)32 << 20, 8, NULL, &f), POOL_ETOOBIG);
    free(big);
    CHECK(pool_shared_alloc(p, (size_t)64 << 20) == NULL);
    c.start_method = (pool_start_method)9;
    { pool_t *q = NULL; CHECK_EQ(pool_create(&q, &c), POOL_EINVAL); }
    pool_destroy(p);
}

static int init_fail(int w, void *ctx) { (void)ctx; return w == 1 ? 7 : 0; }
static int worker_global;
static int init_set(int w, void *ctx) { (void)ctx; worker_global = 100 + w; return 0; }
static int read_global(const void *in, void *out, void *ctx)
{
    (void)in; (void)ctx;
    ((int *)out)[0] = worker_global * 1000 + pool_worker_index();
    ((int *)out)[1] = (int)getpid();
    return 0;
}

TEST(initializer_and_max_tasks_per_child)
{
    pool_t *p = NULL;
    pool_config c;
    pool_stats st;
    int in[500], out[500][2], i, k, bad = 0, children0 = test_list_children(NULL, 0);
    int pids[500], counts[500], npids = 0, most = 0;
    memset(&c, 0, sizeof c);
    c.kind = POOL_PROCESSES;
    c.workers = 2;
    c.initializer = init_fail;
    CHECK_EQ(pool_create(&p, &c), POOL_EINIT);
    CHECK(p == NULL);
    CHECK_EQ(test_list_children(NULL, 0), children0);
    c.initializer = init_set;
    c.max_tasks_per_child = 50;
    REQUIRE(pool_create(&p, &c) == POOL_OK);
    memset(in, 0, sizeof in);
    {
        pool_map_opts o;
        memset(&o, 0, sizeof o);
        o.chunksize = 10;
        CHECK_EQ(pool_map(p, read_global, in, sizeof *in, out, sizeof *out, 500, &o), POOL_OK);
    }
    for (i = 0; i < 500; i++) {
        bad += out[i][0] / 1000 != 100 + out[i][0] % 1000; /* the initializer ran in this worker */
        for (k = 0; k < npids && pids[k] != out[i][1]; k++) {}
        if (k == npids) { pids[npids] = out[i][1]; counts[npids++] = 0; }
        counts[k]++;
    }
    for (k = 0; k < npids; k++) if (counts[k] > most) most = counts[k];
    CHECK_EQ(bad, 0);
    CHECK(most <= 50);   /* no process ran more than max_tasks_per_child */
    CHECK(npids >= 10);  /* so at least 10 processes did the work */
    pool_get_stats(p, &st);
    CHECK_EQ(st.worker_deaths, 0); /* retiring is not dying */
    CHECK_EQ(st.completed, 500);
    pool_destroy(p);
}

TEST(fork_server_start_method)
{
    pool_t *p = make_pool(2, POOL_START_FORKSERVER);
    long in[400], out[400];
    pool_failure f;
    pool_map_opts o;
    int i;
    REQUIRE(p != NULL);
    for (i = 0; i < 400; i++) in[i] = i;
    CHECK_EQ(pool_map(p, square, in, sizeof *in, out, sizeof *out, 400, NULL), POOL_OK);
    CHECK_EQ(out[399], 399L * 399L);
    memset(&o, 0, sizeof o);
    o.failure = &f;
    CHECK_EQ(pool_map(p, crash_on_500, in, sizeof *in, out, sizeof *out, 400, &o), POOL_OK);
    for (i = 0; i < 400; i++) in[i] = i + 400;
    CHECK_EQ(pool_map(p, crash_on_500, in, sizeof *in, out, sizeof *out, 400, &o), POOL_EWORKERDIED);
    CHECK_EQ(f.index, 100);
    if (!TEST_ASAN && !TEST_TSAN) CHECK_EQ(f.signal, SIGSEGV); /* reported through the server */
    CHECK_EQ(out[0], 800);
    pool_destroy(p);
}

TEST(nothing_left_after_destroy)
{
    int fds0 = test_count_fds(), threads0 = test_threads_settle(test_base_threads), shm0 = test_count_shm("ckit-pool"), k;
    for (k = 0; k < 4; k++) {
        pool_t *p = make_pool(2, k % 2 ? POOL_START_FORKSERVER : POOL_START_FORK);
        long in[100], out[100];
        int i;
        REQUIRE(p != NULL);
        for (i = 0; i < 100; i++) in[i] = i;
        CHECK_EQ(pool_map(p, square, in, sizeof *in, out, sizeof *out, 100, NULL), POOL_OK);
        if (k == 2) {
            pool_close(p);
            CHECK_EQ(pool_join(p), POOL_OK);
        }
        pool_destroy(p);
    }
    CHECK_EQ(test_list_children(NULL, 0), 0); /* no child, no zombie */
    CHECK_EQ(test_count_fds(), fds0);
    CHECK_EQ(test_threads_settle(threads0), threads0);
    CHECK_EQ(test_count_shm("ckit-pool"), shm0); /* no shared-memory name left (memfd, or a name unlinked at once) */
}

static int long_task(const void *in, void *out, void *ctx)
{
    (void)in; (void)ctx;
    test_sleep_ms(20);
    *(long *)out = 1;
    return 0;
}

/* The child runs a long map in its own process group; the test sends SIGINT to
 * the group, or SIGKILL to the child: the child ends, its workers follow within 1 s. */
static void on_sigint_exit(int sig)
{
    (void)sig;
    _exit(42); /* the program's own handler decides: here, leave at once */
}

static pid_t run_victim(int install_handler)
{
    pid_t pid = fork();
    if (pid == 0) {
        pool_t *p;
        long in[2000], out[2000];
        setpgid(0, 0);
        signal(SIGINT, install_handler ? on_sigint_exit : SIG_DFL);
        p = make_pool(2, POOL_START_FORK);
        if (!p) _exit(2);
        memset(in, 0, sizeof in);
        pool_map(p, long_task, in, sizeof *in, out, sizeof *out, 2000, NULL); /* ~20 s */
        _exit(0);
    }
    setpgid(pid, pid);
    return pid;
}

/* live (not zombie) processes of a process group, from /proc */
static int group_alive(pid_t pgid)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    int n = 0;
    if (!d) return -1;
    while ((e = readdir(d)) != NULL) {
        char path[300], buf[512], *rp, st;
        FILE *f;
        int ppid, pgrp;
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        f = fopen(path, "r");
        if (!f) continue;
        buf[0] = 0;
        if (!fgets(buf, sizeof buf, f)) buf[0] = 0;
        fclose(f);
        rp = strrchr(buf, ')');
        if (rp && sscanf(rp + 1, " %c %d %d", &st, &ppid, &pgrp) == 3 && pgrp == (int)pgid && st != 'Z' && st != 'X')
            n++;
    }
    closedir(d);
    return n;
}

static int group_gone_within(pid_t pgid, int ms)
{
    double end = test_now_ms() + ms;
    while (test_now_ms() < end) {
        if (group_alive(pgid) == 0) return 1;
        test_sleep_ms(10);
    }
    return 0;
}

TEST(ctrl_c_and_parent_death)
{
    int round;
    if (TEST_TSAN) return; /* fork-heavy: covered by the other builds */
    for (round = 0; round < 3; round++) {
        pid_t pid = run_victim(round == 1);
        int status = 0, n;
        double t0;
        test_sleep_ms(300); /* the map is running */
        t0 = test_now_ms();
        if (round < 2) kill(-pid, SIGINT); /* Ctrl-C: the whole foreground group */
        else kill(pid, SIGKILL);           /* the parent dies */
        waitpid(pid, &status, 0);
        if (round == 1) {
            CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 42); /* its handler ran */
        } else {
            CHECK(WIFSIGNALED(status));
            CHECK_EQ(WTERMSIG(status), round == 0 ? SIGINT : SIGKILL);
        }
        CHECK(test_now_ms() - t0 < 1000);
        n = group_gone_within(pid, 1000);
        CHECK(n); /* every worker exited within 1 s */
    }
}

typedef struct plog { int calls; uint64_t last, total; int monotonic; } plog;
static void on_progress(uint64_t done, uint64_t total, void *user)
{
    plog *l = (plog *)user;
    if (done < l->last) l->monotonic = 0;
    l->last = done;
    l->total = total;
    l->calls++;
}

TEST(progress_counts_work_done_in_workers)
{
    pool_t *p;
    pool_config c;
    pool_map_opts o;
    pool_stats st;
    plog l;
    long in[600], out[600];
    int i;
    memset(&c, 0, sizeof c);
    c.kind = POOL_PROCESSES;
    c.workers = 2;
    c.progress_interval_ms = 5;
    REQUIRE(pool_create(&p, &c) == POOL_OK);
    for (i = 0; i < 600; i++) in[i] = i;
    memset(&l, 0, sizeof l);
    l.monotonic = 1;
    memset(&o, 0, sizeof o);
    o.progress = on_progress;
    o.progress_ctx = &l;
    CHECK_EQ(pool_map(p, slow_item, in, sizeof *in, out, sizeof *out, 600, &o), POOL_OK);
    CHECK(l.calls >= 3);          /* ticks while the workers run, not only at the end */
    CHECK(l.monotonic);
    CHECK_EQ(l.last, 600);
    CHECK_EQ(l.total, 600);
    pool_get_stats(p, &st);
    CHECK_EQ(st.kind, POOL_PROCESSES);
    CHECK_EQ(st.workers, 2);
    CHECK_EQ(st.submitted, 600);
    CHECK_EQ(st.completed, 600);
    CHECK_EQ(st.failed, 0);
    pool_destroy(p);
}

/* A worker allocates shared memory, fills it, and hands the pointer back. */
static int worker_alloc(const void *in, void *out, void *ctx)
{
    pool_t *p = *(pool_t *const *)in;
    long *v = (long *)pool_shared_alloc(p, 1000 * sizeof(long));
    int i;
    (void)ctx;
    if (!v) return 1;
    for (i = 0; i < 1000; i++) v[i] = i * 3;
    *(long **)out = v;
    return 0;
}

TEST(workers_allocate_shared_memory)
{
    pool_t *p = make_pool(2, POOL_START_FORK);
    pool_t *args[64];
    long *got[64];
    int i, k, bad = 0;
    REQUIRE(p != NULL);
    for (k = 0; k < 3; k++) { /* blocks freed by the parent are reused by the workers */
        for (i = 0; i < 64; i++) args[i] = p;
        CHECK_EQ(pool_map(p, worker_alloc, args, sizeof *args, got, sizeof *got, 64, NULL), POOL_OK);
        for (i = 0; i < 64; i++) {
            bad += got[i] == NULL || got[i][999] != 999 * 3;
            if (i > 0 && got[i] == got[i - 1]) bad++;
        }
        for (i = 0; i < 64; i++) pool_shared_free(p, got[i]);
    }
    CHECK_EQ(bad, 0);
    pool_shared_free(p, got[0]); /* a second free is ignored, not a corruption */
    pool_destroy(p);
}

/* Regressions found in review: each of these once crashed, hung or lied. */
static int range_ok(int64_t b, int64_t e, void *ctx) { (void)b; (void)e; (void)ctx; return 0; }
static void terminate_from_callback(pool_future_t *f, void *user)
{
    (void)f;
    pool_terminate((pool_t *)user); /* on the monitor thread: must neither deadlock nor crash */
}
static void *terminate_thread(void *arg)
{
    pool_terminate((pool_t *)arg);
    return NULL;
}

/* A closed pool draining a long task lets its parent sleep: the monitor used
 * to loop without sleeping while closed (found in review: 236 ms of CPU in a
 * 280 ms join). */
static int sleep_300ms(const void *in, void *out, void *ctx)
{
    (void)in; (void)out; (void)ctx;
    test_sleep_ms(300);
    return 0;
}
TEST(closed_pool_drains_without_spinning)
{
    pool_t *p;
    pool_config c;
    pool_future_t *f;
    double c0, t0;
    int x = 0;
    memset(&c, 0, sizeof c);
    c.kind = POOL_PROCESSES;
    c.workers = 1;
    REQUIRE(pool_create(&p, &c) == POOL_OK);
    REQUIRE(pool_apply_async(p, sleep_300ms, &x, sizeof x, 0, NULL, &f) == POOL_OK);
    test_sleep_ms(20);
    c0 = test_cpu_ms(CLOCK_PROCESS_CPUTIME_ID);
    t0 = test_now_ms();
    CHECK_EQ(pool_close(p), POOL_OK);
    CHECK_EQ(pool_join(p), POOL_OK);
    CHECK(test_now_ms() - t0 >= 200); /* the task really was still running */
    CHECK(test_cpu_ms(CLOCK_PROCESS_CPUTIME_ID) - c0 < 60);
    CHECK_EQ(pool_future_get(f, NULL, 0), POOL_OK);
    pool_future_free(f);
    pool_destroy(p);
}

/* A map that races pool_close either runs whole or says POOL_ECLOSED: never
 * POOL_OK with an output nobody wrote. (The job used to be published after the
 * monitor had decided to stop the workers: found in review, 20 of 20 rounds with
 * an 8M-element map.) The input copy makes close land before the publish. */
#define RACE_N (1 << 20)
static long *race_in, *race_out;
static pool_t *race_pool;
static int race_started, race_rc;
static int plus_one(const void *in, void *out, void *ctx)
{
    (void)ctx;
    *(long *)out = *(const long *)in + 1;
    return 0;
}
static void *race_mapper(void *arg)
{
    (void)arg;
    __atomic_store_n(&race_started, 1, __ATOMIC_RELEASE);
    race_rc = pool_map(race_pool, plus_one, race_in, sizeof *race_in, race_out, sizeof *race_out, RACE_N, NULL);
    return NULL;
}
TEST(map_racing_close)
{
    int r, i, wrong = 0, other = 0;
    race_in = (long *)malloc(sizeof *race_in * RACE_N);
    race_out = (long *)malloc(sizeof *race_out * RACE_N);
    REQUIRE(race_in && race_out);
    for (i = 0; i < RACE_N; i++) race_in[i] = i;
    for (r = 0; r < 12; r++) {
        pool_config c;
        pthread_t t;
        struct timespec ts;
        memset(&c, 0, sizeof c);
        c.kind = POOL_PROCESSES;
        c.workers = 2;
        REQUIRE(pool_create(&race_pool, &c) == POOL_OK);
        memset(race_out, 0, sizeof *race_out * RACE_N);
        __atomic_store_n(&race_started, 0, __ATOMIC_RELEASE);
        REQUIRE(pthread_create(&t, NULL, race_mapper, NULL) == 0);
        while (!__atomic_load_n(&race_started, __ATOMIC_ACQUIRE)) {}
        ts.tv_sec = 0;
        ts.tv_nsec = (r % 4) * 200000L;
        nanosleep(&ts, NULL);
        pool_close(race_pool);
        CHECK_EQ(pool_join(race_pool), POOL_OK);
        pthread_join(t, NULL);
        if (race_rc == POOL_OK) {
            for (i = 0; i < RACE_N; i++)
                if (race_out[i] != i + 1) { wrong++; break; }
        } else if (race_rc != POOL_ECLOSED) {
            other++;
        }
        pool_destroy(race_pool);
    }
    CHECK_EQ(wrong, 0);
    CHECK_EQ(other, 0);
    free(race_in);
    free(race_out);
}

/* An iterator made before close yields everything after close, whatever the
 * timing: the monitor used to decide "closed and idle" while the iterator was
 * between two windows, stop the workers, and leave a window published just
 * then unrun (the iterator then said POOL_ECANCELLED; seen once under ASan in
 * CI). Many rounds, so that some fall in the window between the two. */
TEST(iterator_outlives_close)
{
    int round, bad = 0;
    for (round = 0; round < 60 && !bad; round++) {
        pool_t *p;
        pool_config c;
        pool_map_opts o;
        pool_iter_t *it;
        long in[64], v;
        int i, rc, got = 0;
        memset(&c, 0, sizeof c);
        c.kind = POOL_PROCESSES;
        c.workers = 2;
        REQUIRE(pool_create(&p, &c) == POOL_OK);
        for (i = 0; i < 64; i++) in[i] = i;
        memset(&o, 0, sizeof o);
        o.chunksize = 1;
        o.max_inflight = 1 + (size_t)(round % 3);
        REQUIRE(pool_imap(p, square, in, sizeof *in, sizeof v, 64, &o, &it) == POOL_OK);
        if (round & 1) test_sleep_ms(1); /* vary where close falls */
        pool_close(p);
        while ((rc = pool_iter_next(it, &v, NULL, 5000)) == POOL_OK) {
            double t0 = test_now_ms();
            if (v != (long)got * got) bad = 1;
            got++;
            /* a slow reader: the workers finish every window in flight, and the
             * monitor looks at an idle pool, before the next window is published */
            while (test_now_ms() - t0 < 0.05 * (round % 4)) {}
        }
        if (rc != POOL_EDONE || got != 64) bad = 1;
        CHECK_EQ(rc, POOL_EDONE);
        CHECK_EQ(got, 64);
        pool_iter_free(it);
        CHECK_EQ(pool_join(p), POOL_OK);
        pool_destroy(p);
    }
}

/* An imap window that a worker's death cut short: the elements the worker ran
 * before it died report success. The buffer of codes is reused from window to
 * window, and the zeros of a step used to be written only once the step was
 * done, so those elements reported the previous window's codes (7 here). */
static int *g_killed; /* shared (mapped before the workers fork) */
static int codes_then_die(const void *in, void *out, void *ctx)
{
    long i = *(const long *)in;
    (void)ctx;
    *(long *)out = i;
    if (i < 300) return 7;
    if (i == 450 && !__atomic_exchange_n(g_killed, 1, __ATOMIC_SEQ_CST)) raise(SIGKILL);
    return 0;
}
TEST(imap_codes_after_a_death_mid_window)
{
    pool_t *p;
    pool_map_opts o;
    pool_iter_t *it;
    long in[600], v;
    size_t idx;
    int rc, i, failed = 0, died = 0, wrong = 0;
    g_killed = (int *)mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    REQUIRE(g_killed != (int *)MAP_FAILED);
    *g_killed = 0;
    p = make_pool(1, POOL_START_FORK);
    REQUIRE(p != NULL);
    for (i = 0; i < 600; i++) in[i] = i;
    memset(&o, 0, sizeof o);
    o.chunksize = 300; /* two windows of one chunk each, through one buffer */
    o.max_inflight = 1;
    REQUIRE(pool_imap(p, codes_then_die, in, sizeof *in, sizeof v, 600, &o, &it) == POOL_OK);
    while ((rc = pool_iter_next(it, &v, &idx, 30000)) != POOL_EDONE && rc != POOL_ETIMEDOUT) {
        if (idx < 300) failed += rc == 7;
        else if (idx == 450) died += rc == POOL_EWORKERDIED;
        else wrong += rc != POOL_OK;
    }
    CHECK_EQ(rc, POOL_EDONE);
    CHECK_EQ(failed, 300);
    CHECK_EQ(died, 1);
    CHECK_EQ(wrong, 0);
    pool_iter_free(it);
    pool_destroy(p);
    munmap(g_killed, 4096);
}

TEST(review_regressions)
{
    int kind;
    for (kind = 0; kind < 2; kind++) {
        pool_t *p = NULL;
        pool_config c;
        pool_map_opts o;
        pool_iter_t *it1, *it2;
        long in[100], out[100], v;
        pthread_t th[2];
        int i, rc, got = 0;
        memset(&c, 0, sizeof c);
        c.kind = kind ? POOL_PROCESSES : POOL_THREADS;
        c.workers = 2;
        REQUIRE(pool_create(&p, &c) == POOL_OK);
        for (i = 0; i < 100; i++) in[i] = i;
        /* absurd chunk sizes and grains are clamped, not overflowed */
        memset(&o, 0, sizeof o);
        o.chunksize = SIZE_MAX;
        CHECK_EQ(pool_map(p, square, in, sizeof *in, out, sizeof *out, 100, &o), POOL_OK);
        CHECK_EQ(out[99], 99 * 99);
        CHECK_EQ(pool_parallel_for(p, 0, 100, INT64_MAX, range_ok, NULL), POOL_OK);
        REQUIRE(pool_imap(p, square, in, sizeof *in, sizeof v, 100, &o, &it1) == POOL_OK);
        CHECK_EQ(pool_iter_next(it1, &v, NULL, -1), POOL_OK);
        pool_iter_free(it1);
        /* two live iterators with big windows leave room for a map */
        o.chunksize = 1;
        o.max_inflight = 1000;
        REQUIRE(pool_imap(p, square, in, sizeof *in, sizeof v, 100, &o, &it1) == POOL_OK);
        REQUIRE(pool_imap(p, square, in, sizeof *in, sizeof v, 100, &o, &it2) == POOL_OK);
        CHECK_EQ(pool_map(p, square, in, sizeof *in, out, sizeof *out, 100, NULL), POOL_OK);
        pool_iter_free(it2);
        /* an iterator made before close still yields everything after close */
        pool_close(p);
        while ((rc = pool_iter_next(it1, &v, NULL, 5000)) == POOL_OK) got++;
        CHECK_EQ(rc, POOL_EDONE);
        CHECK_EQ(got, 100);
        pool_iter_free(it1);
        /* two joins at once: both return when the workers are gone */
        pthread_create(&th[0], NULL, terminate_thread, p);
        CHECK_EQ(pool_join(p), POOL_OK);
        pthread_join(th[0], NULL);
        CHECK_EQ(pool_join(p), POOL_OK);
        pool_destroy(p);

        /* concurrent terminates, and terminate from a completion callback */
        REQUIRE(pool_create(&p, &c) == POOL_OK);
        {
            pool_future_t *f;
            long x = 3, r;
            REQUIRE(pool_apply_async(p, square, &x, sizeof x, sizeof r, NULL, &f) == POOL_OK);
            CHECK_EQ(pool_future_on_done(f, terminate_from_callback, p), POOL_OK);
            CHECK_EQ(pool_future_wait(f, -1), POOL_OK);
            pthread_create(&th[0], NULL, terminate_thread, p);
            pthread_create(&th[1], NULL, terminate_thread, p);
            pthread_join(th[0], NULL);
            pthread_join(th[1], NULL);
            pool_future_free(f);
        }
        pool_destroy(p);
    }
}

int main(int argc, char **argv)
{
    RUN(map_results_in_order);
    RUN(map_failure_index_and_apply_async);
    RUN(shared_memory_in_place);
    RUN(crashing_tasks_fail_alone);
    RUN(crashing_future);
    RUN(random_kills_during_a_long_map);
    RUN(imap_on_processes);
    RUN(imap_codes_after_a_death_mid_window);
    RUN(futures_timeouts_wait_any_cancel);
    RUN(bad_input_and_calls_from_a_worker);
    RUN(initializer_and_max_tasks_per_child);
    RUN(fork_server_start_method);
    RUN(nothing_left_after_destroy);
    RUN(ctrl_c_and_parent_death);
    RUN(progress_counts_work_done_in_workers);
    RUN(review_regressions);
    RUN(iterator_outlives_close);
    RUN(map_racing_close);
    RUN(closed_pool_drains_without_spinning);
    RUN(workers_allocate_shared_memory);
    return test_run_all(argc, argv);
}
