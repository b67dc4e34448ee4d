/* crash_report.c - a map in which one input crashes its worker process.
 *
 * In Python, a worker that dies takes the pool with it (BrokenProcessPool) or hangs
 * it. Here the element that was running fails alone, with POOL_EWORKERDIED and the
 * signal; the worker is replaced; every other element completes; the pool goes on.
 *
 *   cc -O2 -pthread crash_report.c && ./a.out
 */
#define POOL_IMPLEMENTATION
#include "../pool.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>

/* A parser with a bug: input 4242 dereferences NULL. */
static int parse(const void *in, void *out, void *ctx)
{
    int v = *(const int *)in;
    (void)ctx;
    if (v == 4242) {
        volatile int *bug = NULL;
        *bug = 1;
    }
    *(int *)out = v * 2;
    return 0;
}

int main(void)
{
    enum { N = 10000 };
    static int in[N], out[N];
    pool_t *p;
    pool_config cfg;
    pool_failure failure;
    pool_map_opts opts;
    pool_stats st;
    int i, rc, ok = 0;

    memset(&cfg, 0, sizeof cfg);
    cfg.kind = POOL_PROCESSES;
    if (pool_create(&p, &cfg) != POOL_OK) return 1;
    for (i = 0; i < N; i++) in[i] = i;
    memset(&opts, 0, sizeof opts);
    opts.failure = &failure;

    rc = pool_map(p, parse, in, sizeof *in, out, sizeof *out, N, &opts);
    for (i = 0; i < N; i++) ok += i != 4242 && out[i] == 2 * i;
    pool_get_stats(p, &st);
    printf("map: %s\n", pool_strerror(rc));
    printf("failed element: index %lld, signal %d (%s)\n", (long long)failure.index, failure.signal,
           failure.signal == SIGSEGV ? "SIGSEGV" : "other");
    printf("other elements completed: %d of %d; workers that died: %llu\n", ok, N - 1,
           (unsigned long long)st.worker_deaths);

    /* the pool is not broken */
    in[4242] = 1;
    rc = pool_map(p, parse, in, sizeof *in, out, sizeof *out, N, NULL);
    printf("the next map: %s\n", pool_strerror(rc));
    pool_destroy(p);
    return failure.index == 4242 && ok == N - 1 && rc == POOL_OK ? 0 : 1;
}
