/* tf_add.c - the int1 / int2 / add graph, run on a thread pool and on a process pool.
 *
 *   cc -pthread tf_add.c -lm && ./a.out
 *
 * On the process pool the functions run in worker processes; the values (a long
 * each) travel in the run's records in shared memory.
 *
 * Python users know it as:
 *   executor.run(graph, inputs_map={"int1": [2], "int2": [1]})  ->  {"add": 3}
 * Here the functions are plain C functions: nothing to pickle, nothing to break.
 */
#define TASKFLOW_IMPLEMENTATION
#include "taskflow.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* input task: its one input is the text the run was given for its name */
static int parse_int(const tf_value *in, size_t nin, tf_out *out, void *ctx)
{
    char text[32];
    size_t n = in[0].size < sizeof text - 1 ? in[0].size : sizeof text - 1;
    char *end;
    long v;
    (void)nin; (void)ctx;
    memcpy(text, in[0].data, n);
    text[n] = 0;
    v = strtol(text, &end, 10);
    if (end == text || *end) return 1; /* not a number: the task fails with code 1 */
    return tf_out_set(out, &v, sizeof v);
}

static int add(const tf_value *in, size_t nin, tf_out *out, void *ctx)
{
    long sum = *(const long *)in[0].data + *(const long *)in[1].data;
    (void)nin; (void)ctx;
    return tf_out_set(out, &sum, sizeof sum);
}

/* runs g on a pool of the given kind and prints the output map; 0 on success */
static int run_on(tf_graph_t *g, pool_kind kind, const char *label)
{
    pool_config cfg;
    pool_t *pool;
    tf_named in[2] = {{"int1", "2", 1}, {"int2", "1", 1}};
    tf_inputs inputs = {in, 2};
    tf_run_t *run = NULL;
    size_t i;
    int rc;

    memset(&cfg, 0, sizeof cfg);
    cfg.kind = kind;
    cfg.workers = 2;
    rc = pool_create(&pool, &cfg);
    if (rc != POOL_OK) {
        printf("%s: pool_create failed: %s\n", label, pool_strerror(rc));
        return 1;
    }
    rc = tf_graph_run(g, pool, &inputs, &run);
    if (rc == TF_OK) {
        printf("%s: {", label);
        for (i = 0; i < tf_run_noutputs(run); i++) {
            const char *name;
            const void *v;
            size_t size;
            if (tf_run_output_at(run, i, &name, &v, &size) == TF_OK)
                printf("%s\"%s\": %ld", i ? ", " : "", name, *(const long *)v);
        }
        printf("}\n");
        if (tf_run_output(run, "add", NULL, NULL) != TF_OK) rc = 1;
    } else {
        for (i = 0; i < tf_run_nerrors(run); i++) printf("%s: error: %s\n", label, tf_run_error(run, i)->message);
    }
    tf_run_free(run);
    pool_destroy(pool);
    return rc;
}

int main(void)
{
    tf_graph_t *g = tf_graph_create("add");
    tf_task_t a, b;
    int rc;
    if (!g) return 1;
    a = tf_input(g, "int1", parse_int, NULL);
    b = tf_input(g, "int2", parse_int, NULL);
    tf_task(g, "add", add, NULL, TF_OUTPUT, a, b);
    if (tf_graph_check(g) != TF_OK) return 1;

    rc = run_on(g, POOL_THREADS, "threads");
    if (rc == 0) rc = run_on(g, POOL_PROCESSES, "processes");
    tf_graph_destroy(g);
    return rc == 0 ? 0 : 1;
}
