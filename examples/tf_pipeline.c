/* tf_pipeline.c - read -> transform in parallel branches -> combine, exported as
 * Graphviz DOT and as a Chrome trace (open it in ui.perfetto.dev or chrome://tracing).
 *
 *   cc -pthread tf_pipeline.c -lm && ./a.out [out.dot] [out.json]
 *   dot -Tsvg out.dot > out.svg
 */
#define TASKFLOW_IMPLEMENTATION
#include "taskflow.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N 200000
#define BRANCHES 4

/* read: makes N doubles (a real pipeline would read a file named by its input) */
static int read_data(const tf_value *in, size_t nin, tf_out *out, void *ctx)
{
    double *x = (double *)tf_out_alloc(out, N * sizeof *x);
    unsigned seed = 1;
    size_t i;
    (void)in; (void)nin; (void)ctx;
    if (!x) return 1;
    for (i = 0; i < N; i++) {
        seed = seed * 1103515245u + 12345u;
        x[i] = (double)(seed >> 16 & 0x7fff) / 32768.0;
    }
    return 0;
}

/* transform: branch k of BRANCHES sums the squares of its slice */
static int transform(const tf_value *in, size_t nin, tf_out *out, void *ctx)
{
    const double *x = (const double *)in[0].data;
    size_t k = (size_t)(uintptr_t)ctx, n = in[0].size / sizeof *x;
    size_t lo = n * k / BRANCHES, hi = n * (k + 1) / BRANCHES, i;
    double s = 0;
    (void)nin;
    for (i = lo; i < hi; i++) s += x[i] * x[i];
    return tf_out_set(out, &s, sizeof s);
}

/* combine: the mean square over all branches */
static int combine(const tf_value *in, size_t nin, tf_out *out, void *ctx)
{
    double s = 0;
    size_t i;
    (void)ctx;
    for (i = 0; i < nin; i++) s += *(const double *)in[i].data;
    s /= N;
    return tf_out_set(out, &s, sizeof s);
}

int main(int argc, char **argv)
{
    const char *dot = argc > 1 ? argv[1] : "tf_pipeline.dot";
    const char *trace = argc > 2 ? argv[2] : "tf_pipeline.json";
    tf_graph_t *g = tf_graph_create("pipeline");
    tf_task_t read, branch[BRANCHES];
    pool_t *pool;
    tf_run_t *run = NULL;
    const void *v;
    size_t k;
    char name[16];
    int rc;

    if (!g) return 1;
    read = tf_task(g, "read", read_data, NULL, 0);
    for (k = 0; k < BRANCHES; k++) {
        snprintf(name, sizeof name, "square%u", (unsigned)k);
        branch[k] = tf_task(g, name, transform, (void *)(uintptr_t)k, 0, read);
    }
    tf_task_v(g, "combine", combine, NULL, TF_OUTPUT, branch, BRANCHES);

    if (pool_create(&pool, NULL) != POOL_OK) return 1;
    rc = tf_graph_run(g, pool, NULL, &run);
    if (rc == TF_OK && tf_run_output(run, "combine", &v, NULL) == TF_OK)
        printf("mean square: %.4f (expect about 0.333)\n", *(const double *)v);
    else
        printf("run failed: %s\n", tf_strerror(rc));
    for (k = 0; k < tf_graph_size(g); k++) {
        tf_task_info info;
        tf_run_task_at(run, k, &info);
        printf("  %-8s %-9s %8.3f ms on worker %d\n", info.name, tf_state_name(info.state),
               (double)info.duration_ns / 1e6, info.worker);
    }
    if (rc == TF_OK && tf_graph_dot_file(g, run, dot) == TF_OK && tf_run_trace_file(run, trace) == TF_OK)
        printf("wrote %s and %s\n", dot, trace);
    else
        rc = rc ? rc : TF_EIO;
    tf_run_free(run);
    tf_graph_destroy(g);
    pool_destroy(pool);
    return rc == TF_OK ? 0 : 1;
}
