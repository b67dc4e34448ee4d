/* io_vs_cpu.c - the question every Python user asks first: do threads help?
 *
 * I/O-bound work (here: tasks that sleep, as a network call would) overlaps on a
 * thread pool whatever the number of cores. CPU-bound work scales with the cores
 * too: C threads have no GIL.
 *
 *   cc -O2 -pthread io_vs_cpu.c -lm && ./a.out
 */
#define POOL_IMPLEMENTATION
#include "../pool.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* "I/O": wait 50 ms, as a request to a slow server would. */
static int fetch(const void *in, void *out, void *ctx)
{
    struct timespec ts = {0, 50 * 1000000L};
    (void)ctx;
    nanosleep(&ts, NULL);
    *(int *)out = *(const int *)in * 10;
    return 0;
}

/* CPU: count the primes below a bound. */
static int count_primes(const void *in, void *out, void *ctx)
{
    int bound = *(const int *)in, n, d, count = 0;
    (void)ctx;
    for (n = 2; n < bound; n++) {
        for (d = 2; d * d <= n; d++)
            if (n % d == 0) break;
        if (d * d > n) count++;
    }
    *(int *)out = count;
    return 0;
}

static double run_seq(pool_fn fn, const int *in, int *out, int n)
{
    double t0 = now_ms();
    int i;
    for (i = 0; i < n; i++) fn(&in[i], &out[i], NULL);
    return now_ms() - t0;
}

static double run_pool(pool_t *p, pool_fn fn, const int *in, int *out, int n)
{
    double t0 = now_ms();
    pool_map_opts o;
    memset(&o, 0, sizeof o);
    o.chunksize = 1;
    if (pool_map(p, fn, in, sizeof *in, out, sizeof *out, (size_t)n, &o) != POOL_OK) return -1;
    return now_ms() - t0;
}

int main(void)
{
    enum { N = 16 };
    int in[N], seq[N], par[N], i, ok = 1;
    double t_seq, t_par;
    pool_t *io_pool, *cpu_pool;
    pool_config cfg;

    /* I/O-bound: many more threads than cores is right */
    memset(&cfg, 0, sizeof cfg);
    cfg.workers = N;
    if (pool_create(&io_pool, &cfg) != POOL_OK) return 1;
    for (i = 0; i < N; i++) in[i] = i;
    t_seq = run_seq(fetch, in, seq, N);
    t_par = run_pool(io_pool, fetch, in, par, N);
    printf("I/O-bound, %d tasks of 50 ms: sequential %.0f ms, thread pool (%d threads) %.0f ms\n",
           N, t_seq, N, t_par);
    for (i = 0; i < N; i++) ok &= seq[i] == par[i];
    ok &= t_par < t_seq; /* the waits overlap */
    pool_destroy(io_pool);

    /* CPU-bound: one thread per core (workers = 0) */
    if (pool_create(&cpu_pool, NULL) != POOL_OK) return 1;
    for (i = 0; i < N; i++) in[i] = 200000 + 10000 * i;
    t_seq = run_seq(count_primes, in, seq, N);
    t_par = run_pool(cpu_pool, count_primes, in, par, N);
    printf("CPU-bound, %d prime counts: sequential %.0f ms, thread pool (%d threads) %.0f ms\n",
           N, t_seq, pool_workers(cpu_pool), t_par);
    for (i = 0; i < N; i++) ok &= seq[i] == par[i];
    pool_destroy(cpu_pool);

    printf("%s\n", ok ? "results agree" : "MISMATCH");
    return ok ? 0 : 1;
}
