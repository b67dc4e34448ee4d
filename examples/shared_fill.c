/* shared_fill.c - a shared array filled in place by parallel_for in a process pool.
 *
 * pool_shared_alloc memory lies at the same address in the parent and in every
 * worker, so workers write results where the parent reads them: nothing is copied
 * or serialised. The context struct lives there too: a worker sees ordinary memory
 * as it was when the worker was forked, but shared memory as it is now.
 *
 *   cc -O2 -pthread shared_fill.c -lm && ./a.out
 */
#define POOL_IMPLEMENTATION
#include "../pool.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct grid { double *cells; int64_t width, height; } grid;

static int fill_rows(int64_t row_begin, int64_t row_end, void *ctx)
{
    grid *g = (grid *)ctx;
    int64_t y, x;
    for (y = row_begin; y < row_end; y++)
        for (x = 0; x < g->width; x++)
            g->cells[y * g->width + x] = sin((double)x * 0.01) * cos((double)y * 0.01);
    return 0;
}

int main(void)
{
    pool_t *p;
    pool_config cfg;
    grid *g;
    double sum = 0, check = 0;
    int64_t i;
    int rc;

    memset(&cfg, 0, sizeof cfg);
    cfg.kind = POOL_PROCESSES;
    if (pool_create(&p, &cfg) != POOL_OK) return 1;
    g = (grid *)pool_shared_alloc(p, sizeof *g);
    if (!g) return 1;
    g->width = 2000;
    g->height = 1500;
    g->cells = (double *)pool_shared_alloc(p, (size_t)(g->width * g->height) * sizeof(double));
    if (!g->cells) return 1;

    rc = pool_parallel_for(p, 0, g->height, 16, fill_rows, g); /* 16 rows a piece */
    for (i = 0; i < g->width * g->height; i++) sum += g->cells[i];
    {
        int64_t x, y; /* the same, sequentially, to compare */
        for (y = 0; y < g->height; y++)
            for (x = 0; x < g->width; x++) check += sin((double)x * 0.01) * cos((double)y * 0.01);
    }
    printf("parallel_for: %s; sum of %lld cells %.6f (sequential %.6f)\n", pool_strerror(rc),
           (long long)(g->width * g->height), sum, check);
    pool_shared_free(p, g->cells);
    pool_shared_free(p, g);
    pool_destroy(p);
    return rc == POOL_OK && fabs(sum - check) < 1e-6 ? 0 : 1;
}
