/* tf_failure.c - one task fails: the run names it with its code, its dependents are
 * skipped (never run on missing data), and with the "continue" policy the independent
 * branch still finishes.
 *
 *   cc -pthread tf_failure.c -lm && ./a.out
 */
#define TASKFLOW_IMPLEMENTATION
#include "taskflow.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int ok(const tf_value *in, size_t nin, tf_out *out, void *ctx)
{
    (void)in; (void)nin; (void)ctx;
    return tf_out_set(out, "ok", 2);
}

/* "validate" rejects its input with code 42 */
static int validate(const tf_value *in, size_t nin, tf_out *out, void *ctx)
{
    (void)in; (void)nin; (void)out; (void)ctx;
    return 42;
}

static void show(const tf_graph_t *g, tf_run_t *run, int rc)
{
    size_t i;
    printf("run: %s\n", tf_strerror(rc));
    for (i = 0; i < tf_run_nerrors(run); i++) printf("  error: %s\n", tf_run_error(run, i)->message);
    for (i = 0; i < tf_graph_size(g); i++) {
        tf_task_info info;
        tf_run_task_at(run, i, &info);
        printf("  %-10s %s\n", info.name, tf_state_name(info.state));
    }
}

int main(void)
{
    tf_graph_t *g = tf_graph_create("failure");
    tf_task_t load, check, clean, report, stats;
    tf_run_opts opts;
    tf_run_t *run = NULL;
    tf_task_info info;
    pool_t *pool;
    int rc, good = 1;

    if (!g) return 1;
    load = tf_task(g, "load", ok, NULL, 0);
    check = tf_task(g, "validate", validate, NULL, 0, load);
    clean = tf_task(g, "clean", ok, NULL, 0, check);
    report = tf_task(g, "report", ok, NULL, TF_OUTPUT, clean, load);
    stats = tf_task(g, "stats", ok, NULL, 0, load);
    tf_task(g, "summary", ok, NULL, TF_OUTPUT, stats);
    (void)report;
    if (pool_create(&pool, NULL) != POOL_OK) return 1;

    memset(&opts, 0, sizeof opts);
    opts.policy = TF_CONTINUE_ON_ERROR;
    rc = tf_run_start(g, pool, NULL, &opts, &run);
    if (rc == TF_OK) rc = tf_run_wait(run, -1);
    show(g, run, rc);
    /* what this example promises */
    good &= rc == TF_ETASK;
    good &= tf_run_task(run, "validate", &info) == TF_OK && info.state == TF_FAILED && info.code == 42;
    good &= tf_run_task(run, "clean", &info) == TF_OK && info.state == TF_SKIPPED;
    good &= tf_run_task(run, "report", &info) == TF_OK && info.state == TF_SKIPPED;
    good &= tf_run_task(run, "summary", &info) == TF_OK && info.state == TF_DONE;
    tf_run_free(run);
    tf_graph_destroy(g);
    pool_destroy(pool);
    printf(good ? "as expected\n" : "UNEXPECTED\n");
    return good ? 0 : 1;
}
