/* threads_or_processes.c - one program, two kinds of pool: the only difference is
 * one line of the config (cfg.kind). Values pass as bytes, so nothing needs to be
 * "picklable": the task function and its arguments work the same on both.
 *
 *   cc -O2 -pthread threads_or_processes.c && ./a.out
 */
#define POOL_IMPLEMENTATION
#include "../pool.h"

#include <stdio.h>
#include <string.h>

typedef struct job { int id; double x; } job;          /* any plain struct */
typedef struct result { int id; double root; int steps; } result;

/* Newton's method for sqrt(x), counting the steps. */
static int newton(const void *in, void *out, void *ctx)
{
    const job *j = (const job *)in;
    result *r = (result *)out;
    double g = j->x > 1 ? j->x / 2 : 1;
    int steps = 0;
    (void)ctx;
    if (j->x < 0) return 1; /* a task error of ours */
    while (steps < 100) {
        double next = 0.5 * (g + j->x / g);
        steps++;
        if (next == g) break;
        g = next;
    }
    r->id = j->id;
    r->root = g;
    r->steps = steps;
    return 0;
}

static int run(pool_kind kind, result *out, int n)
{
    pool_t *p;
    pool_config cfg;
    job jobs[1000];
    int i, rc;
    memset(&cfg, 0, sizeof cfg);
    cfg.kind = kind; /* <- the one line: POOL_THREADS or POOL_PROCESSES */
    cfg.workers = 2;
    if (pool_create(&p, &cfg) != POOL_OK) return -1;
    for (i = 0; i < n; i++) {
        jobs[i].id = i;
        jobs[i].x = (double)i * 3.5;
    }
    rc = pool_map(p, newton, jobs, sizeof *jobs, out, sizeof *out, (size_t)n, NULL);
    pool_destroy(p);
    return rc;
}

int main(void)
{
    static result a[1000], b[1000];
    int i, same = 1, rc_t = run(POOL_THREADS, a, 1000), rc_p = run(POOL_PROCESSES, b, 1000);
    for (i = 0; i < 1000; i++) same &= a[i].id == b[i].id && a[i].root == b[i].root;
    printf("threads: %s, processes: %s, results %s; sqrt(3496.5) = %.6f in %d steps\n",
           pool_strerror(rc_t), pool_strerror(rc_p), same ? "identical" : "DIFFERENT", b[999].root,
           b[999].steps);
    return rc_t == POOL_OK && rc_p == POOL_OK && same ? 0 : 1;
}
