/* future_timeout.c - a future waited on with a timeout, and a cancellation.
 *
 *   cc -O2 -pthread future_timeout.c -lm && ./a.out
 */
#define POOL_IMPLEMENTATION
#include "../pool.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

/* A slow computation: sleeps `ms` milliseconds, then returns ms * 2. */
static int slow_double(const void *in, void *out, void *ctx)
{
    int ms = *(const int *)in;
    struct timespec ts;
    (void)ctx;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
    *(int *)out = ms * 2;
    return 0;
}

int main(void)
{
    pool_t *p;
    pool_config cfg;
    pool_future_t *slow, *queued;
    int ms = 500, quick = 10, result = 0, rc, ok = 1;

    memset(&cfg, 0, sizeof cfg);
    cfg.workers = 1;
    if (pool_create(&p, &cfg) != POOL_OK) return 1;
    pool_apply_async(p, slow_double, &ms, sizeof ms, sizeof result, NULL, &slow);
    pool_apply_async(p, slow_double, &quick, sizeof quick, sizeof result, NULL, &queued);

    rc = pool_future_get(slow, &result, 100); /* wait at most 100 ms */
    printf("after 100 ms: %s\n", pool_strerror(rc));
    ok &= rc == POOL_ETIMEDOUT;

    rc = pool_future_cancel(queued); /* not started yet (one worker, busy): cancellable */
    printf("cancel the queued task: %s\n", pool_strerror(rc));
    ok &= rc == POOL_OK && pool_future_get(queued, &result, 0) == POOL_ECANCELLED;

    rc = pool_future_get(slow, &result, -1); /* now wait as long as it takes */
    printf("finally: %s, result %d\n", pool_strerror(rc), result);
    ok &= rc == POOL_OK && result == 1000;

    pool_future_free(slow);
    pool_future_free(queued);
    pool_destroy(p);
    return ok ? 0 : 1;
}
