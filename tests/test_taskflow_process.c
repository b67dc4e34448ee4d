/* test_taskflow_process.c - taskflow.h on a process pool (central dispatch: the parent
 * hands out ready tasks, worker processes run the functions and fill their records in
 * the shared arena). Counters the tasks bump live in pool_shared_alloc memory, since a
 * worker's writes to ordinary memory stay in that worker. */
#define TASKFLOW_IMPLEMENTATION
#include "taskflow.h"
#include "test.h"
#include <pthread.h>

static pool_t *make_pool(int workers)
{
    pool_t *p = NULL;
    pool_config c;
    memset(&c, 0, sizeof c);
    c.kind = POOL_PROCESSES;
    c.workers = workers;
    if (pool_create(&p, &c) != POOL_OK) return NULL;
    return p;
}

static int parse_int(const tf_value *in, size_t nin, tf_out *out, void *ctx)
{
    char text[32];
    size_t n = in[0].size < sizeof text - 1 ? in[0].size : sizeof text - 1;
    int v;
    (void)nin; (void)ctx;
    memcpy(text, in[0].data, n);
    text[n] = 0;
    v = atoi(text);
    return tf_out_set(out, &v, sizeof v);
}

static int add(const tf_value *in, size_t nin, tf_out *out, void *ctx)
{
    long long s = (long long)(intptr_t)ctx;
    size_t i;
    for (i = 0; i < nin; i++) {
        if (in[i].size == sizeof(int)) s += *(const int *)in[i].data;
        else if (in[i].size == sizeof(long long)) s += *(const long long *)in[i].data;
        else return 91;
    }
    if (nin == 2 && in[0].size == sizeof(int)) {
        int r = (int)s;
        return tf_out_set(out, &r, sizeof r);
    }
    return tf_out_set(out, &s, sizeof s);
}

/* appends the inputs' bytes, then its ctx string (a literal: valid in the workers) */
static int concat(const tf_value *in, size_t nin, tf_out *out, void *ctx)
{
    const char *tag = (const char *)ctx;
    char buf[16];
    size_t i, len = 0;
    for (i = 0; i < nin; i++) {
        if (len + in[i].size > sizeof buf) return 92;
        memcpy(buf + len, in[i].data, in[i].size);
        len += in[i].size;
    }
    if (len + strlen(tag) > sizeof buf) return 92;
    memcpy(buf + len, tag, strlen(tag));
    len += strlen(tag);
    return tf_out_set(out, buf, len);
}

/* bumps the int at ctx (shared memory) */
static int count_run(const tf_value *in, size_t nin, tf_out *out, void *ctx)
{
    (void)in; (void)nin; (void)out;
    __atomic_fetch_add((int *)ctx, 1, __ATOMIC_SEQ_CST);
    return 0;
}

static int fail7(const tf_value *in, size_t nin, tf_out *out, void *ctx)
{
    (void)in; (void)nin; (void)out; (void)ctx;
    return 7;
}

static int die(const tf_value *in, size_t nin, tf_out *out, void *ctx)
{
    (void)in; (void)nin; (void)out; (void)ctx;
    _exit(3); /* the worker process dies mid-task */
}

/* sets the shared flag at ctx, then waits until the run is stopping */
static int wait_for_stop(const tf_value *in, size_t nin, tf_out *out, void *ctx)
{
    int i;
    (void)in; (void)nin;
    __atomic_store_n((int *)ctx, 1, __ATOMIC_SEQ_CST);
    for (i = 0; i < 20000 && !tf_out_cancelled(out); i++) test_sleep_ms(1);
    return 0;
}

/* sums the bytes of its (large) input: the input lies in the shared arena */
static int digest(const tf_value *in, size_t nin, tf_out *out, void *ctx)
{
    const unsigned char *b = (const unsigned char *)in[0].data;
    long long s = 0;
    size_t i;
    (void)nin; (void)ctx;
    for (i = 0; i < in[0].size; i++) s += b[i];
    return tf_out_set(out, &s, sizeof s);
}

/* a 100-byte value made inside a worker process */
static int make100(const tf_value *in, size_t nin, tf_out *out, void *ctx)
{
    unsigned char *b = (unsigned char *)tf_out_alloc(out, 100);
    (void)in; (void)nin; (void)ctx;
    if (!b) return 50;
    memset(b, 0x5a, 100);
    return 0;
}

static int output_int(const tf_run_t *run, const char *name)
{
    const void *v = NULL;
    size_t size = 0;
    if (tf_run_output(run, name, &v, &size) != TF_OK || size != sizeof(int)) return -99999;
    return *(const int *)v;
}

static tf_state state_of(const tf_run_t *run, const char *name)
{
    tf_task_info info;
    if (tf_run_task(run, name, &info) != TF_OK) return (tf_state)-1;
    return info.state;
}

typedef struct sink { char *p; size_t len; } sink;
static int sink_write(const void *data, size_t size, void *user)
{
    sink *s = (sink *)user;
    char *np = (char *)realloc(s->p, s->len + size + 1);
    if (!np) return -1;
    memcpy(np + s->len, data, size);
    s->p = np;
    s->len += size;
    s->p[s->len] = 0;
    return 0;
}

TEST(int1_int2_add_on_processes)
{
    pool_t *p = make_pool(2);
    tf_graph_t *g = tf_graph_create("add");
    tf_task_t a = tf_input(g, "int1", parse_int, NULL);
    tf_task_t b = tf_input(g, "int2", parse_int, NULL);
    tf_named in[2] = {{"int1", "2", 1}, {"int2", "1", 1}};
    tf_inputs inputs = {in, 2};
    tf_run_t *run = NULL;
    tf_task_info info;
    int i;
    tf_task(g, "add", add, NULL, TF_OUTPUT, a, b);
    REQUIRE(p && g);
    for (i = 0; i < 5; i++) {
        CHECK_EQ(tf_graph_run(g, p, &inputs, &run), TF_OK);
        CHECK_EQ(output_int(run, "add"), 3);
        CHECK_EQ(tf_run_task(run, "add", &info), TF_OK);
        CHECK(info.worker >= 0 && info.worker < 2); /* it ran in a worker process */
        tf_run_free(run);
    }
    CHECK_EQ(tf_graph_destroy(g), TF_OK);
    pool_destroy(p);
}

TEST(inputs_in_order_and_large_inputs)
{
    pool_t *p = make_pool(2);
    tf_graph_t *g = tf_graph_create("order");
    tf_task_t a = tf_task(g, "a", concat, (void *)"A", 0);
    tf_task_t b = tf_task(g, "b", concat, (void *)"B", 0);
    tf_task_t c = tf_task(g, "c", concat, (void *)"C", 0);
    static unsigned char big[100000];
    tf_named in[1];
    tf_inputs inputs = {in, 1};
    tf_run_t *run;
    const void *v = NULL;
    size_t size = 0, i;
    long long expect = 0;
    tf_task(g, "va", concat, (void *)"!", TF_OUTPUT, b, c, a);
    tf_task(g, "digest", add, NULL, TF_OUTPUT, tf_input(g, "big", digest, NULL));
    for (i = 0; i < sizeof big; i++) {
        big[i] = (unsigned char)(i * 7);
        expect += big[i];
    }
    in[0].name = "big"; in[0].data = big; in[0].size = sizeof big;
    REQUIRE(p && g);
    CHECK_EQ(tf_graph_run(g, p, &inputs, &run), TF_OK);
    CHECK_EQ(tf_run_output(run, "va", &v, &size), TF_OK);
    CHECK(size == 4 && memcmp(v, "BCA!", 4) == 0);
    CHECK_EQ(tf_run_output(run, "digest", &v, &size), TF_OK);
    CHECK(size == 8 && *(const long long *)v == expect);
    tf_run_free(run);
    tf_graph_destroy(g);
    pool_destroy(p);
}

TEST(chain_on_processes)
{
    pool_t *p = make_pool(2);
    tf_graph_t *g = tf_graph_create("chain");
    tf_task_t prev = tf_task(g, NULL, add, (void *)(intptr_t)0, 0);
    tf_run_t *run;
    const void *v = NULL;
    size_t size = 0;
    int i;
    for (i = 1; i < 500; i++)
        prev = tf_task(g, i == 499 ? "end" : NULL, add, (void *)(intptr_t)i, i == 499 ? TF_OUTPUT : 0, prev);
    REQUIRE(p && g);
    CHECK_EQ(tf_graph_run(g, p, NULL, &run), TF_OK);
    CHECK_EQ(tf_run_output(run, "end", &v, &size), TF_OK);
    CHECK(size == 8 && *(const long long *)v == 499LL * 500 / 2);
    tf_run_free(run);
    tf_graph_destroy(g);
    pool_destroy(p);
}

TEST(failure_and_a_dead_worker)
{
    pool_t *p = make_pool(2);
    int *ran;
    tf_graph_t *g = tf_graph_create("fail");
    tf_task_t root, bad, dead;
    tf_run_opts o;
    tf_run_t *run;
    tf_task_info info;
    size_t i;
    int saw_dead = 0;
    REQUIRE(p && g);
    ran = (int *)pool_shared_alloc(p, sizeof *ran);
    REQUIRE(ran);
    *ran = 0;
    root = tf_task(g, "root", count_run, ran, 0);
    bad = tf_task(g, "bad", fail7, NULL, 0, root);
    tf_task(g, "after_bad", count_run, ran, 0, bad);
    dead = tf_task(g, "dies", die, NULL, 0, root);
    tf_task(g, "after_dead", count_run, ran, 0, dead);
    tf_task(g, "independent", count_run, ran, 0, root);
    memset(&o, 0, sizeof o);
    o.policy = TF_CONTINUE_ON_ERROR;
    CHECK_EQ(tf_run_start(g, p, NULL, &o, &run), TF_OK);
    CHECK_EQ(tf_run_wait(run, -1), TF_ETASK);
    CHECK_EQ(*ran, 2); /* root and independent */
    CHECK_EQ(state_of(run, "bad"), TF_FAILED);
    CHECK_EQ(state_of(run, "after_bad"), TF_SKIPPED);
    CHECK_EQ(state_of(run, "dies"), TF_FAILED);
    CHECK_EQ(tf_run_task(run, "dies", &info), TF_OK);
    CHECK_EQ(info.code, POOL_EWORKERDIED);
    CHECK_EQ(state_of(run, "after_dead"), TF_SKIPPED);
    CHECK_EQ(state_of(run, "independent"), TF_DONE);
    CHECK_EQ(tf_run_nerrors(run), 2);
    for (i = 0; i < tf_run_nerrors(run); i++)
        if (strstr(tf_run_error(run, i)->message, "'dies'") && strstr(tf_run_error(run, i)->message, "died"))
            saw_dead = 1;
    CHECK(saw_dead);
    tf_run_free(run);
    /* the pool carries on: the same graph again, stop policy */
    *ran = 0;
    CHECK_EQ(tf_graph_run(g, p, NULL, &run), TF_ETASK);
    CHECK(*ran >= 1);
    tf_run_free(run);
    tf_graph_destroy(g);
    pool_shared_free(p, ran);
    pool_destroy(p);
}

TEST(cancel_reaches_worker_processes)
{
    pool_t *p = make_pool(2);
    int *flags;
    tf_graph_t *g = tf_graph_create("cancel");
    tf_task_t t;
    tf_run_t *run;
    int i;
    REQUIRE(p && g);
    flags = (int *)pool_shared_alloc(p, 2 * sizeof *flags);
    REQUIRE(flags);
    flags[0] = flags[1] = 0;
    t = tf_task(g, "block", wait_for_stop, &flags[0], 0);
    tf_task(g, "next", count_run, &flags[1], 0, t);
    CHECK_EQ(tf_run_start(g, p, NULL, NULL, &run), TF_OK);
    for (i = 0; i < 20000 && !__atomic_load_n(&flags[0], __ATOMIC_SEQ_CST); i++) test_sleep_ms(1);
    CHECK_EQ(tf_run_cancel(run), TF_OK);
    CHECK_EQ(tf_run_wait(run, -1), TF_ECANCELLED);
    CHECK_EQ(state_of(run, "block"), TF_DONE);
    CHECK_EQ(state_of(run, "next"), TF_CANCELLED);
    CHECK_EQ(flags[1], 0);
    tf_run_free(run);
    tf_graph_destroy(g);
    pool_shared_free(p, flags);
    pool_destroy(p);
}

TEST(concurrent_runs_and_trace_on_processes)
{
    pool_t *p = make_pool(2);
    tf_graph_t *g = tf_graph_create("many");
    tf_task_t a = tf_input(g, "int1", parse_int, NULL);
    tf_task_t b = tf_input(g, "int2", parse_int, NULL);
    tf_run_t *runs[6];
    sink s = {NULL, 0};
    char text[6][8];
    int i;
    tf_task(g, "add", add, NULL, TF_OUTPUT, a, b);
    REQUIRE(p && g);
    for (i = 0; i < 6; i++) {
        tf_named in[2];
        tf_inputs inputs;
        snprintf(text[i], sizeof text[i], "%d", i * 10);
        in[0].name = "int1"; in[0].data = text[i]; in[0].size = strlen(text[i]);
        in[1].name = "int2"; in[1].data = "5"; in[1].size = 1;
        inputs.items = in;
        inputs.count = 2;
        CHECK_EQ(tf_run_start(g, p, &inputs, NULL, &runs[i]), TF_OK);
    }
    for (i = 0; i < 6; i++) {
        CHECK_EQ(tf_run_wait(runs[i], -1), TF_OK);
        CHECK_EQ(output_int(runs[i], "add"), i * 10 + 5);
    }
    CHECK_EQ(tf_run_trace(runs[0], sink_write, &s), TF_OK);
    CHECK(s.p && strstr(s.p, "\"ph\":\"X\"") && !strstr(s.p, "\"tid\":9999"));
    free(s.p);
    for (i = 0; i < 6; i++) tf_run_free(runs[i]);
    tf_graph_destroy(g);
    pool_destroy(p);
}

TEST(large_values_from_workers)
{
    pool_t *p = make_pool(2);
    tf_graph_t *g = tf_graph_create("big");
    tf_run_t *run;
    int rc, round;
    tf_task(g, "make", make100, NULL, TF_OUTPUT);
    REQUIRE(p && g);
    for (round = 0; round < 20; round++) { /* values made in workers (pool_shared_alloc there) */
        const void *v = NULL;
        size_t size = 0;
        rc = tf_graph_run(g, p, NULL, &run);
        CHECK_EQ(rc, TF_OK);
        CHECK_EQ(tf_run_output(run, "make", &v, &size), TF_OK);
        CHECK(size == 100 && v && ((const unsigned char *)v)[99] == 0x5a);
        tf_run_free(run);
    }
    tf_graph_destroy(g);
    pool_destroy(p);
}

int main(int argc, char **argv)
{
    RUN(int1_int2_add_on_processes);
    RUN(inputs_in_order_and_large_inputs);
    RUN(chain_on_processes);
    RUN(failure_and_a_dead_worker);
    RUN(cancel_reaches_worker_processes);
    RUN(concurrent_runs_and_trace_on_processes);
    RUN(large_values_from_workers);
    return test_run_all(argc, argv);
}
