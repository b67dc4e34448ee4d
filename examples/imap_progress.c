/* imap_progress.c - imap with a progress bar.
 *
 * Results arrive in input order while the pool works ahead, with a bounded number
 * of chunks in flight (memory stays flat however long the input). The bar is drawn
 * on stderr by the ready-made renderer, from this thread, throttled.
 *
 *   cc -O2 -pthread imap_progress.c -lm && ./a.out
 */
#define POOL_IMPLEMENTATION
#include "../pool.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Some work per element: a few thousand iterations of a series. */
static int work(const void *in, void *out, void *ctx)
{
    long x = *(const long *)in, k;
    double s = 0;
    (void)ctx;
    for (k = 1; k < 2000; k++) s += sin((double)(x + k)) / (double)k;
    *(double *)out = s;
    return 0;
}

int main(void)
{
    enum { N = 20000 };
    pool_t *p;
    pool_iter_t *it;
    pool_map_opts o;
    pool_bar bar;
    long *in = (long *)malloc(N * sizeof *in);
    double v, total = 0, check = 0;
    size_t index, expect = 0;
    int rc, i;

    for (i = 0; i < N; i++) in[i] = i;
    if (pool_create(&p, NULL) != POOL_OK) return 1;
    memset(&bar, 0, sizeof bar);
    bar.label = "series";
    memset(&o, 0, sizeof o);
    o.progress = pool_bar_render;
    o.progress_ctx = &bar;
    o.max_inflight = 8; /* at most 8 chunks computed ahead of the reader */

    if (pool_imap(p, work, in, sizeof *in, sizeof v, N, &o, &it) != POOL_OK) return 1;
    while ((rc = pool_iter_next(it, &v, &index, -1)) == POOL_OK) {
        if (index != expect++) return 1; /* in order */
        total += v;
    }
    pool_iter_free(it);
    for (i = 0; i < N; i++) { /* the same sum, sequentially */
        double r;
        work(&in[i], &r, NULL);
        check += r;
    }
    printf("sum of %d results: %.6f (%s)\n", N, total, rc == POOL_EDONE && fabs(total - check) < 1e-6 ? "ok" : "WRONG");
    pool_destroy(p);
    free(in);
    return rc == POOL_EDONE && fabs(total - check) < 1e-6 ? 0 : 1;
}
