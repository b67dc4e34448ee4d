/* bench_pool.c - the thread pool against OpenMP on the same work, same run.
 *
 *   W1  submit 1,000,000 tasks that each do one relaxed atomic increment, then
 *       wait for all: ns per task (one future per task; and the batch form, map).
 *   W2  out[i] = sqrt(in[i]) * 1.0001 + i over 10,000,000 doubles: time, and the
 *       speed-up over a sequential loop.
 *   W3  100,000 times: submit one task returning an int and wait for it: us per
 *       round trip (the waiting caller may run it; a worker must run it).
 *
 * 2 workers, median of 5. Usage: bench_pool [--quick]
 */
#define POOL_IMPLEMENTATION
#include "pool.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef KIT_HAVE_OPENMP
#include <omp.h>
#endif

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return v[n / 2];
}

#define REPS_MAX 5
static int reps = REPS_MAX;
static long n_w1 = 1000000, n_w2 = 10000000, n_w3 = 100000;
static const int WORKERS = 2;

/* ---- W1 ---- */
static long counter;
static int inc_task(const void *in, void *out, void *ctx)
{
    (void)in; (void)out; (void)ctx;
    __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED);
    return 0;
}

static double w1_futures(pool_t *p)
{
    pool_future_t **fs = (pool_future_t **)malloc((size_t)n_w1 * sizeof *fs);
    double t0, t;
    long i;
    counter = 0;
    t0 = now_s();
    for (i = 0; i < n_w1; i++)
        if (pool_apply_async(p, inc_task, NULL, 0, 0, NULL, &fs[i]) != POOL_OK) abort();
    for (i = 0; i < n_w1; i++) {
        pool_future_wait(fs[i], -1);
        pool_future_free(fs[i]);
    }
    t = now_s() - t0;
    if (counter != n_w1) { fprintf(stderr, "W1 futures: wrong count\n"); exit(1); }
    free(fs);
    return t;
}

static double w1_submit(pool_t *p)
{
    double t0, t;
    long i;
    counter = 0;
    t0 = now_s();
    for (i = 0; i < n_w1; i++)
        if (pool_submit(p, inc_task, NULL, 0, NULL) != POOL_OK) abort();
    while (__atomic_load_n(&counter, __ATOMIC_ACQUIRE) != n_w1) {}
    t = now_s() - t0;
    return t;
}

static double w1_map(pool_t *p)
{
    static char dummy;
    double t0, t;
    pool_map_opts o;
    memset(&o, 0, sizeof o);
    counter = 0;
    t0 = now_s();
    /* the batch form: one element of 1 byte per task, no results */
    if (pool_map(p, inc_task, &dummy, 0 + 1, NULL, 0, 1, NULL) != POOL_OK) abort();
    counter = 0;
    t0 = now_s();
    {
        char *in = (char *)calloc((size_t)n_w1, 1);
        if (pool_map(p, inc_task, in, 1, NULL, 0, (size_t)n_w1, &o) != POOL_OK) abort();
        t = now_s() - t0;
        free(in);
    }
    if (counter != n_w1) { fprintf(stderr, "W1 map: wrong count\n"); exit(1); }
    return t;
}

#ifdef KIT_HAVE_OPENMP
static double w1_omp(void)
{
    double t0, t;
    counter = 0;
    t0 = now_s();
#pragma omp parallel num_threads(2)
#pragma omp single
    {
        long i;
        for (i = 0; i < n_w1; i++) {
#pragma omp task
            __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED);
        }
#pragma omp taskwait
    }
    t = now_s() - t0;
    if (counter != n_w1) { fprintf(stderr, "W1 omp: wrong count\n"); exit(1); }
    return t;
}
#endif

/* ---- W2 ---- */
static double *w2_in, *w2_out;
static int w2_body(int64_t b, int64_t e, void *ctx)
{
    int64_t i;
    (void)ctx;
    for (i = b; i < e; i++) w2_out[i] = sqrt(w2_in[i]) * 1.0001 + (double)i;
    return 0;
}

static double w2_seq(void)
{
    double t0 = now_s();
    w2_body(0, n_w2, NULL);
    return now_s() - t0;
}

static double w2_kit(pool_t *p)
{
    double t0 = now_s();
    if (pool_parallel_for(p, 0, n_w2, 0, w2_body, NULL) != POOL_OK) abort();
    return now_s() - t0;
}

#ifdef KIT_HAVE_OPENMP
static double w2_omp(void)
{
    double t0 = now_s();
    long i;
#pragma omp parallel for num_threads(2) schedule(static)
    for (i = 0; i < n_w2; i++) w2_out[i] = sqrt(w2_in[i]) * 1.0001 + (double)i;
    return now_s() - t0;
}
#endif

/* ---- W3 ---- */
static int ret_int(const void *in, void *out, void *ctx)
{
    (void)ctx;
    *(int *)out = *(const int *)in + 1;
    return 0;
}

/* caller_runs: every worker is busy (held on a gate), so the waiting caller runs
 * the task itself; otherwise the caller waits with a (long) timeout, which never
 * runs a task, so an idle worker must pick it up. */
static int gate_task(const void *in, void *out, void *ctx)
{
    (void)in; (void)out;
    while (!__atomic_load_n((int *)ctx, __ATOMIC_ACQUIRE)) {
        struct timespec ts = {0, 100000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

static double w3_kit(pool_t *p, int caller_runs)
{
    double t0, t;
    long i;
    int sum = 0, gate = 0, w;
    pool_future_t *holders[64];
    if (caller_runs)
        for (w = 0; w < WORKERS; w++) {
            pool_apply_async(p, gate_task, NULL, 0, 0, &gate, &holders[w]);
            while (pool_future_ready(holders[w])) {}
        }
    if (caller_runs) { /* let both workers pick up their gate task */
        struct timespec ts = {0, 20000000};
        nanosleep(&ts, NULL);
    }
    t0 = now_s();
    for (i = 0; i < n_w3; i++) {
        pool_future_t *f;
        int x = (int)i, r = 0;
        if (pool_apply_async(p, ret_int, &x, sizeof x, sizeof r, NULL, &f) != POOL_OK) abort();
        pool_future_get(f, &r, caller_runs ? -1 : 1000000);
        pool_future_free(f);
        sum += r - x;
    }
    t = now_s() - t0;
    if (caller_runs) {
        __atomic_store_n(&gate, 1, __ATOMIC_RELEASE);
        for (w = 0; w < WORKERS; w++) {
            pool_future_wait(holders[w], -1);
            pool_future_free(holders[w]);
        }
    }
    if (sum != n_w3) { fprintf(stderr, "W3: wrong\n"); exit(1); }
    return t;
}

#ifdef KIT_HAVE_OPENMP
static double w3_omp(void)
{
    double t0 = now_s();
    int sum = 0;
#pragma omp parallel num_threads(2)
#pragma omp single
    {
        long i;
        for (i = 0; i < n_w3; i++) {
            int x = (int)i, r = 0;
#pragma omp task shared(r) firstprivate(x)
            r = x + 1;
#pragma omp taskwait
            sum += r - x;
        }
    }
    if (sum != n_w3) { fprintf(stderr, "W3 omp: wrong\n"); exit(1); }
    return now_s() - t0;
}
#endif

typedef double (*bench_fn)(pool_t *);

static double run_med(double (*fn)(pool_t *), pool_t *p)
{
    double v[REPS_MAX];
    int r;
    for (r = 0; r < reps; r++) v[r] = fn(p);
    return median(v, reps);
}
static double run_med0(double (*fn)(void))
{
    double v[REPS_MAX];
    int r;
    for (r = 0; r < reps; r++) v[r] = fn();
    return median(v, reps);
}
/* 20 ms of sleep: long enough for any spinning idle thread to go to sleep */
static void quiet_gap(void)
{
    struct timespec ts = {0, 20000000};
    nanosleep(&ts, NULL);
}

static double w3_caller(pool_t *p) { return w3_kit(p, 1); }
static double w3_worker(pool_t *p) { return w3_kit(p, 0); }

int main(int argc, char **argv)
{
    pool_t *p;
    pool_config cfg;
    long i;
    double t_fut, t_fut_bp, t_sub, t_map, t_seq, t_kit2, t3c, t3w;
    if (argc > 1 && strcmp(argv[1], "--quick") == 0) {
        reps = 1;
        n_w1 = 20000;
        n_w2 = 200000;
        n_w3 = 2000;
    }
    memset(&cfg, 0, sizeof cfg);
    cfg.workers = WORKERS;
    if (pool_create(&p, &cfg) != POOL_OK) return 1;
    w2_in = (double *)malloc((size_t)n_w2 * sizeof(double));
    w2_out = (double *)malloc((size_t)n_w2 * sizeof(double));
    for (i = 0; i < n_w2; i++) w2_in[i] = (double)i;

    printf("bench_pool: %d workers, median of %d (OpenMP: %s)\n", WORKERS, reps,
#ifdef KIT_HAVE_OPENMP
           "yes"
#else
           "not built"
#endif
    );
    t_fut = run_med(w1_futures, p);
    {
        /* the same with libgomp's own policy: past 64 queued tasks per thread, the
         * submitter runs queued tasks itself (opt-in here: cfg.max_queued) */
        pool_t *pb;
        pool_config cb = cfg;
        cb.max_queued = 64 * WORKERS;
        if (pool_create(&pb, &cb) != POOL_OK) return 1;
        t_fut_bp = run_med(w1_futures, pb);
        pool_destroy(pb);
    }
    t_sub = run_med(w1_submit, p);
    t_map = run_med(w1_map, p);
    printf("W1 kit apply_async+future : %8.1f ns/task\n", t_fut / (double)n_w1 * 1e9);
    printf("W1 same, max_queued=%-3d   : %8.1f ns/task (the submitter runs queued tasks when the queue is deep, as libgomp does)\n",
           64 * WORKERS, t_fut_bp / (double)n_w1 * 1e9);
    printf("W1 kit submit (no future) : %8.1f ns/task\n", t_sub / (double)n_w1 * 1e9);
    printf("W1 kit map (batch)        : %8.1f ns/task\n", t_map / (double)n_w1 * 1e9);
#ifdef KIT_HAVE_OPENMP
    {
        double t_omp = run_med0(w1_omp);
        printf("W1 OpenMP omp task        : %8.1f ns/task\n", t_omp / (double)n_w1 * 1e9);
        printf("W1 ratio kit/OpenMP: futures %.2fx (max_queued %.2fx), submit %.2fx, map %.3fx (target <= 0.8x)\n",
               t_fut / t_omp, t_fut_bp / t_omp, t_sub / t_omp, t_map / t_omp);
    }
#endif
    {
        /* W2's three contenders take turns within each repetition, so that a slow
         * spell of the machine hits them alike, with a quiet gap before each run:
         * both the kit's and libgomp's idle threads spin a little after a run, and
         * must not take the next contender's CPUs */
        double vs[REPS_MAX], vk[REPS_MAX];
#ifdef KIT_HAVE_OPENMP
        double vo[REPS_MAX], t_omp2;
#endif
        int r;
        for (r = 0; r < reps; r++) {
            quiet_gap();
            vs[r] = w2_seq();
            quiet_gap();
            vk[r] = w2_kit(p);
#ifdef KIT_HAVE_OPENMP
            quiet_gap();
            vo[r] = w2_omp();
#endif
        }
        t_seq = median(vs, reps);
        t_kit2 = median(vk, reps);
        printf("W2 sequential             : %8.2f ms\n", t_seq * 1e3);
        printf("W2 kit parallel_for       : %8.2f ms (speed-up %.2fx, target >= 1.95x)\n", t_kit2 * 1e3, t_seq / t_kit2);
#ifdef KIT_HAVE_OPENMP
        t_omp2 = median(vo, reps);
        printf("W2 OpenMP parallel for    : %8.2f ms (speed-up %.2fx)\n", t_omp2 * 1e3, t_seq / t_omp2);
        printf("W2 ratio kit/OpenMP time: %.2fx (target <= 1.0x)\n", t_kit2 / t_omp2);
#endif
    }
    t3c = run_med(w3_caller, p);
    t3w = run_med(w3_worker, p);
    printf("W3 kit, workers busy: caller runs it : %8.3f us/round trip (target <= 0.1)\n", t3c / (double)n_w3 * 1e6);
    printf("W3 kit, idle worker runs it         : %8.3f us/round trip\n", t3w / (double)n_w3 * 1e6);
#ifdef KIT_HAVE_OPENMP
    {
        double t_omp3 = run_med0(w3_omp);
        printf("W3 OpenMP task+taskwait   : %8.3f us/round trip\n", t_omp3 / (double)n_w3 * 1e6);
        printf("W3 ratio kit(worker)/OpenMP: %.2fx (target <= 1.0x)\n", t3w / t_omp3);
    }
#endif
    free(w2_in);
    free(w2_out);
    pool_destroy(p);
    return 0;
}
