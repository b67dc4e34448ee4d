/* test_taskflow.c - taskflow.h: running graphs on a thread pool.
 * test_taskflow_central.c runs these same tests with TF_DISPATCH_CENTRAL (the path a
 * process pool takes). */
#define TASKFLOW_IMPLEMENTATION
#include "taskflow.h"
#include "test.h"
#include <pthread.h>

#ifdef TF_TEST_CENTRAL
/* every run goes through central dispatch */
static tf_run_opts central_opts(const tf_run_opts *o)
{
    tf_run_opts c;
    if (o) c = *o;
    else memset(&c, 0, sizeof c);
    c.dispatch = TF_DISPATCH_CENTRAL;
    return c;
}
static int central_start(tf_graph_t *g, pool_t *p, const tf_inputs *in, const tf_run_opts *o, tf_run_t **run)
{
    tf_run_opts c = central_opts(o);
    return tf_run_start(g, p, in, o && o->dispatch != TF_DISPATCH_AUTO ? o : &c, run);
}
static int central_run(tf_graph_t *g, pool_t *p, const tf_inputs *in, tf_run_t **run)
{
    int rc = central_start(g, p, in, NULL, run);
    return rc != TF_OK ? rc : tf_run_wait(*run, -1);
}
static int central_batch(tf_graph_t *g, pool_t *p, const tf_inputs *sets, size_t n, const tf_run_opts *o,
                         tf_run_t **runs)
{
    tf_run_opts c = central_opts(o);
    return tf_graph_run_batch(g, p, sets, n, &c, runs);
}
#define tf_run_start central_start
#define tf_graph_run central_run
#define tf_graph_run_batch central_batch
#endif

/* ---- helpers ---- */

static pool_t *make_pool(int workers)
{
    pool_t *p = NULL;
    pool_config c;
    memset(&c, 0, sizeof c);
    c.workers = workers;
    if (pool_create(&p, &c) != POOL_OK) return NULL;
    return p;
}

static int parse_int(const tf_value *in, size_t nin, tf_out *out, void *ctx)
{
    char text[32];
    size_t n;
    int v;
    (void)ctx;
    if (nin != 1) return 90;
    n = in[0].size < sizeof text - 1 ? in[0].size : sizeof text - 1;
    memcpy(text, in[0].data, n);
    text[n] = 0;
    v = atoi(text);
    return tf_out_set(out, &v, sizeof v);
}

static int add(const tf_value *in, size_t nin, tf_out *out, void *ctx)
{
    int s = 0;
    size_t i;
    (void)ctx;
    for (i = 0; i < nin; i++) {
        if (in[i].size != sizeof(int)) return 91;
        s += *(const int *)in[i].data;
    }
    return tf_out_set(out, &s, sizeof s);
}

/* appends the inputs' bytes, then its ctx string: shows the order of the edges */
static int concat(const tf_value *in, size_t nin, tf_out *out, void *ctx)
{
    const char *tag = (const char *)ctx;
    size_t i, len = strlen(tag), total = len;
    char *p;
    for (i = 0; i < nin; i++) total += in[i].size;
    p = (char *)tf_out_alloc(out, total);
    if (!p) return 92;
    for (i = 0; i < nin; i++) {
        memcpy(p, in[i].data, in[i].size);
        p += in[i].size;
    }
    memcpy(p, tag, len);
    return 0;
}

/* counts how often it ran: ctx is an int counter (atomically incremented) */
static int count_run(const tf_value *in, size_t nin, tf_out *out, void *ctx)
{
    (void)in; (void)nin; (void)out;
    __atomic_fetch_add((int *)ctx, 1, __ATOMIC_RELAXED);
    return 0;
}

/* returns the code in ctx */
static int fail_with(const tf_value *in, size_t nin, tf_out *out, void *ctx)
{
    (void)in; (void)nin; (void)out;
    return *(const int *)ctx;
}

/* flags shared by the tasks of one test (ctx) */
typedef struct flags { int started, failed; } flags;
static void wait_flag(int *f)
{
    int i;
    for (i = 0; i < 20000 && !__atomic_load_n(f, __ATOMIC_ACQUIRE); i++) test_sleep_ms(1);
}

/* says it started (ctx: flags or NULL), then blocks until the run is stopping */
static int wait_for_stop(const tf_value *in, size_t nin, tf_out *out, void *ctx)
{
    int i;
    (void)in; (void)nin;
    if (ctx) __atomic_store_n(&((flags *)ctx)->started, 1, __ATOMIC_RELEASE);
    for (i = 0; i < 20000 && !tf_out_cancelled(out); i++) test_sleep_ms(1);
    return 0;
}

/* says it started, then blocks until the failing task has failed */
static int wait_for_failure(const tf_value *in, size_t nin, tf_out *out, void *ctx)
{
    flags *f = (flags *)ctx;
    (void)in; (void)nin; (void)out;
    __atomic_store_n(&f->started, 1, __ATOMIC_RELEASE);
    wait_flag(&f->failed);
    test_sleep_ms(5);
    return 0;
}

/* waits until the slow branch started, then fails with code 7 */
static int fail_after_start(const tf_value *in, size_t nin, tf_out *out, void *ctx)
{
    flags *f = (flags *)ctx;
    (void)in; (void)nin; (void)out;
    wait_flag(&f->started);
    __atomic_store_n(&f->failed, 1, __ATOMIC_RELEASE);
    return 7;
}

static tf_graph_t *add_graph(void)
{
    tf_graph_t *g = tf_graph_create("add");
    tf_task_t a = tf_input(g, "int1", parse_int, NULL);
    tf_task_t b = tf_input(g, "int2", parse_int, NULL);
    tf_task(g, "add", add, NULL, TF_OUTPUT, a, b);
    return g;
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

static int run_has_error(const tf_run_t *run, int code, const char *w1, const char *w2)
{
    size_t i;
    for (i = 0; i < tf_run_nerrors(run); i++) {
        const tf_error *e = tf_run_error(run, i);
        if (e->code != code) continue;
        if (w1 && !strstr(e->message, w1)) continue;
        if (w2 && !strstr(e->message, w2)) continue;
        return 1;
    }
    return 0;
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
static size_t count_sub(const char *s, const char *w)
{
    size_t n = 0, l = strlen(w);
    while ((s = strstr(s, w)) != NULL) { n++; s += l; }
    return n;
}

/* a strict JSON well-formedness check (RFC 8259 grammar, no semantics) */
static const char *json_value(const char *s, int depth);
static const char *json_ws(const char *s)
{
    while (*s == ' ' || *s == '\n' || *s == '\r' || *s == '\t') s++;
    return s;
}
static const char *json_string(const char *s)
{
    if (*s++ != '"') return NULL;
    while (*s != '"') {
        if ((unsigned char)*s < 0x20) return NULL;
        if (*s == '\\') {
            s++;
            if (*s == 'u') {
                int k;
                for (k = 1; k <= 4; k++)
                    if (!strchr("0123456789abcdefABCDEF", s[k]) || !s[k]) return NULL;
                s += 4;
            } else if (!*s || !strchr("\"\\/bfnrt", *s)) {
                return NULL;
            }
        }
        s++;
    }
    return s + 1;
}
static const char *json_number(const char *s)
{
    const char *start;
    if (*s == '-') s++;
    start = s;
    while (*s >= '0' && *s <= '9') s++;
    if (s == start) return NULL;
    if (*s == '.') { s++; start = s; while (*s >= '0' && *s <= '9') s++; if (s == start) return NULL; }
    if (*s == 'e' || *s == 'E') {
        s++;
        if (*s == '+' || *s == '-') s++;
        start = s;
        while (*s >= '0' && *s <= '9') s++;
        if (s == start) return NULL;
    }
    return s;
}
static const char *json_value(const char *s, int depth)
{
    if (depth > 64) return NULL;
    s = json_ws(s);
    if (*s == '{' || *s == '[') {
        char close = *s == '{' ? '}' : ']';
        int obj = *s == '{';
        s = json_ws(s + 1);
        if (*s == close) return s + 1;
        for (;;) {
            if (obj) {
                s = json_string(json_ws(s));
                if (!s) return NULL;
                s = json_ws(s);
                if (*s++ != ':') return NULL;
            }
            s = json_value(s, depth + 1);
            if (!s) return NULL;
            s = json_ws(s);
            if (*s == ',') { s++; continue; }
            if (*s == close) return s + 1;
            return NULL;
        }
    }
    if (*s == '"') return json_string(s);
    if (strncmp(s, "true", 4) == 0) return s + 4;
    if (strncmp(s, "false", 5) == 0) return s + 5;
    if (strncmp(s, "null", 4) == 0) return s + 4;
    return json_number(s);
}
static int json_valid(const char *s)
{
    s = json_value(s, 0);
    return s && *json_ws(s) == 0;
}

/* ---- tests ---- */

TEST(int1_int2_add)
{
    pool_t *p = make_pool(2);
    tf_graph_t *g = add_graph();
    tf_named in[2] = {{"int1", "2", 1}, {"int2", "1", 1}};
    tf_inputs inputs = {in, 2};
    tf_run_t *run = NULL;
    const char *name = NULL;
    const void *v = NULL;
    size_t size = 0;
    REQUIRE(p && g);
    CHECK_EQ(tf_graph_run(g, p, &inputs, &run), TF_OK);
    REQUIRE(run);
    CHECK_EQ(output_int(run, "add"), 3);
    CHECK_EQ(tf_run_noutputs(run), 1);
    CHECK_EQ(tf_run_output_at(run, 0, &name, &v, &size), TF_OK);
    CHECK(name && strcmp(name, "add") == 0);
    CHECK_EQ(size, sizeof(int));
    CHECK_EQ(*(const int *)v, 3);
    CHECK_EQ(tf_run_output_at(run, 1, &name, &v, &size), TF_EINVAL);
    CHECK_EQ(tf_run_output(run, "int1", &v, &size), TF_ENOTOUTPUT);
    CHECK_EQ(tf_run_output(run, "nope", &v, &size), TF_ENOTFOUND);
    CHECK_EQ(state_of(run, "int1"), TF_DONE);
    CHECK_EQ(state_of(run, "add"), TF_DONE);
    CHECK_EQ(tf_run_nerrors(run), 0);
    CHECK_EQ(tf_graph_destroy(g), TF_EBUSY); /* the run still refers to it */
    tf_run_free(run);
    /* the same graph again, other inputs */
    in[0].data = "40"; in[0].size = 2;
    in[1].data = "-8"; in[1].size = 2;
    CHECK_EQ(tf_graph_run(g, p, &inputs, &run), TF_OK);
    CHECK_EQ(output_int(run, "add"), 32);
    tf_run_free(run);
    CHECK_EQ(tf_graph_destroy(g), TF_OK);
    pool_destroy(p);
}

TEST(inputs_arrive_in_the_order_named)
{
    pool_t *p = make_pool(2);
    tf_graph_t *g = tf_graph_create("order");
    tf_task_t a = tf_task(g, "a", concat, (void *)"A", 0);
    tf_task_t b = tf_task(g, "b", concat, (void *)"B", 0);
    tf_task_t c = tf_task(g, "c", concat, (void *)"C", 0);
    tf_task_t arr[4];
    const char *names[4] = {"b", "a", "c", "b"};
    tf_run_t *run;
    const void *v = NULL;
    size_t size = 0;
    arr[0] = c; arr[1] = a; arr[2] = b; arr[3] = a;
    tf_task(g, "va", concat, (void *)"!", TF_OUTPUT, b, c, a);
    tf_task_v(g, "arr", concat, (void *)"?", TF_OUTPUT, arr, 4);
    tf_task_named(g, "named", concat, (void *)"#", TF_OUTPUT, names, 4);
    REQUIRE(p && g);
    CHECK_EQ(tf_graph_run(g, p, NULL, &run), TF_OK);
    CHECK_EQ(tf_run_output(run, "va", &v, &size), TF_OK);
    CHECK(size == 4 && memcmp(v, "BCA!", 4) == 0);
    CHECK_EQ(tf_run_output(run, "arr", &v, &size), TF_OK);
    CHECK(size == 5 && memcmp(v, "CABA?", 5) == 0);
    CHECK_EQ(tf_run_output(run, "named", &v, &size), TF_OK);
    CHECK(size == 5 && memcmp(v, "BACB#", 5) == 0);
    CHECK_EQ(tf_run_noutputs(run), 3);
    tf_run_free(run);
    tf_graph_destroy(g);
    pool_destroy(p);
}

static int make_big(const tf_value *in, size_t nin, tf_out *out, void *ctx)
{
    size_t n = *(const size_t *)ctx;
    unsigned char *b = (unsigned char *)tf_out_alloc(out, n);
    unsigned char seed = nin ? ((const unsigned char *)in[0].data)[0] : 0;
    if (nin && in[0].size != n) return 93;
    if (!b) return 94;
    memset(b, seed + 1, n);
    return 0;
}

TEST(values_are_freed_after_their_last_consumer)
{
    pool_t *p = make_pool(2);
    tf_graph_t *g = tf_graph_create("chain");
    size_t mb = 1 << 20;
    tf_task_t prev = tf_task(g, "v0", make_big, &mb, 0);
    tf_run_stats st;
    tf_run_t *run;
    const void *v = NULL;
    size_t size = 0;
    char name[16];
    int i;
    for (i = 1; i < 8; i++) {
        snprintf(name, sizeof name, "v%d", i);
        prev = tf_task(g, name, make_big, &mb, i == 7 ? TF_OUTPUT : 0, prev);
    }
    REQUIRE(p && g);
    CHECK_EQ(tf_graph_run(g, p, NULL, &run), TF_OK);
    CHECK_EQ(tf_run_get_stats(run, &st), TF_OK);
    CHECK_EQ(st.values_allocated, 8);
    CHECK(st.bytes_peak <= 2 * mb); /* a value and its consumer's, never more */
    CHECK_EQ(st.bytes_live, mb);    /* the output only */
    CHECK_EQ(st.done, 8);
    CHECK_EQ(tf_run_output(run, "v7", &v, &size), TF_OK);
    CHECK(size == mb && ((const unsigned char *)v)[mb - 1] == 8);
    tf_run_free(run);
    tf_graph_destroy(g);
    pool_destroy(p);
}

static int sized(const tf_value *in, size_t nin, tf_out *out, void *ctx)
{
    size_t n = (size_t)(uintptr_t)ctx, i;
    unsigned char *b;
    (void)in; (void)nin;
    b = (unsigned char *)tf_out_alloc(out, n);
    if (!b) return 95;
    if (((uintptr_t)b % sizeof(double)) != 0) return 96;
    for (i = 0; i < n; i++) b[i] = (unsigned char)i;
    return 0;
}

TEST(value_sizes_and_alignment)
{
    pool_t *p = make_pool(2);
    tf_graph_t *g = tf_graph_create("sizes");
    size_t sizes[] = {0, 1, 15, 16, 17, 64, 100000};
    size_t i, k;
    int unset_ran = 0;
    tf_run_t *run;
    char name[16];
    for (i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        snprintf(name, sizeof name, "s%u", (unsigned)sizes[i]);
        tf_task(g, name, sized, (void *)(uintptr_t)sizes[i], TF_OUTPUT);
    }
    tf_task(g, "unset", count_run, &unset_ran, TF_OUTPUT);
    REQUIRE(p && g);
    CHECK_EQ(tf_graph_run(g, p, NULL, &run), TF_OK);
    CHECK_EQ(unset_ran, 1);
    for (i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        const void *v = NULL;
        size_t size = 99;
        snprintf(name, sizeof name, "s%u", (unsigned)sizes[i]);
        CHECK_EQ(tf_run_output(run, name, &v, &size), TF_OK);
        CHECK_EQ(size, sizes[i]);
        CHECK(v != NULL);
        for (k = 0; k < size; k++)
            if (((const unsigned char *)v)[k] != (unsigned char)k) break;
        CHECK_EQ(k, size);
    }
    {
        const void *v = NULL;
        size_t size = 99;
        CHECK_EQ(tf_run_output(run, "unset", &v, &size), TF_OK);
        CHECK(v != NULL && size == 0);
    }
    tf_run_free(run);
    tf_graph_destroy(g);
    pool_destroy(p);
}

TEST(empty_graph_runs)
{
    pool_t *p = make_pool(1);
    tf_graph_t *g = tf_graph_create("empty");
    tf_run_t *run = NULL;
    tf_run_stats st;
    REQUIRE(p && g);
    CHECK_EQ(tf_graph_run(g, p, NULL, &run), TF_OK);
    REQUIRE(run);
    CHECK_EQ(tf_run_noutputs(run), 0);
    CHECK_EQ(tf_run_nerrors(run), 0);
    CHECK_EQ(tf_run_get_stats(run, &st), TF_OK);
    CHECK_EQ(st.tasks, 0);
    tf_run_free(run);
    CHECK_EQ(tf_graph_destroy(g), TF_OK);
    pool_destroy(p);
}

TEST(bad_inputs_are_named_and_nothing_runs)
{
    pool_t *p = make_pool(2);
    int ran = 0;
    tf_graph_t *g = tf_graph_create("inputs");
    tf_task_t a = tf_input(g, "int1", parse_int, NULL);
    tf_task_t b = tf_input(g, "int2", parse_int, NULL);
    tf_named only1[1] = {{"int1", "2", 1}};
    tf_named extra[3] = {{"int1", "2", 1}, {"int2", "1", 1}, {"int3", "5", 1}};
    tf_named twice[3] = {{"int1", "2", 1}, {"int2", "1", 1}, {"int1", "5", 1}};
    tf_named notinput[3] = {{"int1", "2", 1}, {"int2", "1", 1}, {"sum", "5", 1}};
    tf_inputs in;
    tf_run_t *run;
    tf_task(g, "sum", add, NULL, TF_OUTPUT, a, b);
    tf_task(g, "counter", count_run, &ran, 0);
    REQUIRE(p && g);

    in.items = only1; in.count = 1;
    CHECK_EQ(tf_graph_run(g, p, &in, &run), TF_EMISSINGINPUT);
    REQUIRE(run);
    CHECK(run_has_error(run, TF_EMISSINGINPUT, "'int2'", NULL));
    CHECK_EQ(state_of(run, "sum"), TF_PENDING);
    CHECK_EQ(tf_run_output(run, "sum", NULL, NULL), TF_ENOVALUE);
    tf_run_free(run);

    CHECK_EQ(tf_graph_run(g, p, NULL, &run), TF_EMISSINGINPUT);
    CHECK(run_has_error(run, TF_EMISSINGINPUT, "'int1'", NULL));
    CHECK(run_has_error(run, TF_EMISSINGINPUT, "'int2'", NULL));
    tf_run_free(run);

    in.items = extra; in.count = 3;
    CHECK_EQ(tf_graph_run(g, p, &in, &run), TF_EUNKNOWNINPUT);
    CHECK(run_has_error(run, TF_EUNKNOWNINPUT, "'int3'", "no task"));
    tf_run_free(run);

    in.items = twice;
    CHECK_EQ(tf_graph_run(g, p, &in, &run), TF_EINPUTS);
    CHECK(run_has_error(run, TF_EINPUTS, "'int1'", "twice"));
    tf_run_free(run);

    in.items = notinput;
    CHECK_EQ(tf_graph_run(g, p, &in, &run), TF_EUNKNOWNINPUT);
    CHECK(run_has_error(run, TF_EUNKNOWNINPUT, "'sum'", "not an input"));
    tf_run_free(run);

    in.items = NULL; in.count = 2;
    CHECK_EQ(tf_graph_run(g, p, &in, &run), TF_EINVAL);
    tf_run_free(run);

    CHECK_EQ(ran, 0);
    tf_graph_destroy(g);
    pool_destroy(p);
}

TEST(invalid_graph_never_runs)
{
    pool_t *p = make_pool(2);
    int ran = 0;
    tf_graph_t *g = tf_graph_create("bad");
    const char *da[] = {"b"}, *db[] = {"a"};
    tf_run_t *run;
    tf_task(g, "fine", count_run, &ran, 0);
    tf_task_named(g, "a", count_run, &ran, 0, da, 1);
    tf_task_named(g, "b", count_run, &ran, 0, db, 1);
    REQUIRE(p && g);
    CHECK_EQ(tf_graph_run(g, p, NULL, &run), TF_ECYCLE);
    REQUIRE(run);
    CHECK(run_has_error(run, TF_ECYCLE, "'a'", "'b'"));
    CHECK_EQ(state_of(run, "fine"), TF_PENDING);
    tf_run_free(run);
    CHECK_EQ(ran, 0);
    tf_graph_destroy(g);
    pool_destroy(p);
}

TEST(bad_arguments)
{
    pool_t *p = make_pool(1);
    tf_graph_t *g = add_graph();
    tf_run_t *run = (tf_run_t *)&run;
    tf_run_opts o;
    tf_task_info info;
    REQUIRE(p && g);
    CHECK_EQ(tf_graph_run(NULL, p, NULL, &run), TF_EINVAL);
    CHECK(run == NULL);
    CHECK_EQ(tf_graph_run(g, NULL, NULL, &run), TF_EINVAL);
    CHECK_EQ(tf_graph_run(g, p, NULL, NULL), TF_EINVAL);
    memset(&o, 0, sizeof o);
    o.policy = (tf_policy)7;
    CHECK_EQ(tf_run_start(g, p, NULL, &o, &run), TF_EINVAL);
    o.policy = TF_STOP_ON_ERROR;
    o.deadline_ms = -1;
    CHECK_EQ(tf_run_start(g, p, NULL, &o, &run), TF_EINVAL);
    CHECK_EQ(tf_run_wait(NULL, 0), TF_EINVAL);
    CHECK_EQ(tf_run_cancel(NULL), TF_EINVAL);
    CHECK_EQ(tf_run_output(NULL, "add", NULL, NULL), TF_EINVAL);
    CHECK_EQ(tf_run_task(NULL, "add", &info), TF_EINVAL);
    CHECK_EQ(tf_run_trace(NULL, sink_write, NULL), TF_EINVAL);
    CHECK_EQ(tf_graph_run_batch(NULL, p, NULL, 0, NULL, &run), TF_EINVAL);
    CHECK_EQ(tf_run_nerrors(NULL), 0);
    CHECK(tf_run_error(NULL, 0) == NULL);
    CHECK_EQ(tf_out_set(NULL, "x", 1), TF_EINVAL);
    CHECK(tf_out_alloc(NULL, 1) == NULL);
    CHECK_EQ(tf_out_cancelled(NULL), 0);
    tf_run_free(NULL);
    CHECK_EQ(tf_graph_destroy(g), TF_OK);
    pool_destroy(p);
}

/* root -> bad (fails 7) -> dep1 -> dep2; bad, root -> dep3; slow -> after */
static tf_graph_t *failing_graph(int *ran, flags *flag, tf_policy policy)
{
    tf_graph_t *g = tf_graph_create("fail");
    tf_task_t root = tf_task(g, "root", count_run, ran, 0);
    tf_task_t bad = tf_task(g, "bad", fail_after_start, flag, 0, root);
    tf_task_t d1 = tf_task(g, "dep1", count_run, ran, 0, bad);
    tf_task_t slow;
    tf_task(g, "dep2", count_run, ran, TF_OUTPUT, d1);
    tf_task(g, "dep3", count_run, ran, 0, bad, root);
    /* the independent branch: under the stop policy `slow` waits until the run stops,
     * under the continue policy until `bad` has failed; `after` starts after that */
    slow = tf_task(g, "slow", policy == TF_STOP_ON_ERROR ? wait_for_stop : wait_for_failure,
                   flag, 0);
    tf_task(g, "after", count_run, ran + 1, TF_OUTPUT, slow);
    return g;
}

TEST(failure_stops_everything_by_default)
{
    pool_t *p = make_pool(2);
    int ran[2] = {0, 0};
    flags flag = {0, 0};
    tf_graph_t *g = failing_graph(ran, &flag, TF_STOP_ON_ERROR);
    tf_run_t *run;
    tf_task_info info;
    tf_run_stats st;
    REQUIRE(p && g);
    CHECK_EQ(tf_graph_run(g, p, NULL, &run), TF_ETASK);
    CHECK_EQ(ran[0], 1); /* root only: no dependent of `bad` ran */
    CHECK_EQ(ran[1], 0); /* `after` was not started once the run stopped */
    CHECK_EQ(state_of(run, "root"), TF_DONE);
    CHECK_EQ(state_of(run, "bad"), TF_FAILED);
    CHECK_EQ(state_of(run, "dep1"), TF_SKIPPED);
    CHECK_EQ(state_of(run, "dep2"), TF_SKIPPED);
    CHECK_EQ(state_of(run, "dep3"), TF_SKIPPED);
    CHECK_EQ(state_of(run, "slow"), TF_DONE);
    CHECK_EQ(state_of(run, "after"), TF_CANCELLED);
    CHECK_EQ(tf_run_task(run, "bad", &info), TF_OK);
    CHECK_EQ(info.code, 7);
    CHECK(tf_run_nerrors(run) >= 1);
    CHECK_EQ(tf_run_error(run, 0)->code, TF_ETASK);
    CHECK_EQ(tf_run_error(run, 0)->task_code, 7);
    CHECK(strcmp(tf_run_error(run, 0)->task, "bad") == 0);
    CHECK(strstr(tf_run_error(run, 0)->message, "'bad'") && strstr(tf_run_error(run, 0)->message, "7"));
    CHECK_EQ(tf_run_output(run, "dep2", NULL, NULL), TF_ENOVALUE);
    CHECK_EQ(tf_run_get_stats(run, &st), TF_OK);
    CHECK_EQ(st.done, 2);
    CHECK_EQ(st.failed, 1);
    CHECK_EQ(st.skipped, 3);
    CHECK_EQ(st.cancelled, 1);
    tf_run_free(run);
    tf_graph_destroy(g);
    pool_destroy(p);
}

TEST(continue_policy_lets_independent_branches_finish)
{
    pool_t *p = make_pool(2);
    int ran[2] = {0, 0}, code2 = 9, ran2 = 0;
    flags flag = {0, 0};
    tf_graph_t *g = failing_graph(ran, &flag, TF_CONTINUE_ON_ERROR);
    tf_task_t bad2 = tf_task(g, "bad2", fail_with, &code2, 0);
    tf_run_opts o;
    tf_run_t *run;
    tf_task(g, "after_bad2", count_run, &ran2, 0, bad2);
    memset(&o, 0, sizeof o);
    o.policy = TF_CONTINUE_ON_ERROR;
    REQUIRE(p && g);
    CHECK_EQ(tf_run_start(g, p, NULL, &o, &run), TF_OK);
    CHECK_EQ(tf_run_wait(run, -1), TF_ETASK);
    CHECK_EQ(ran[0], 1);
    CHECK_EQ(ran[1], 1); /* `after` ran */
    CHECK_EQ(ran2, 0);
    CHECK_EQ(state_of(run, "after"), TF_DONE);
    CHECK_EQ(state_of(run, "dep2"), TF_SKIPPED);
    CHECK_EQ(state_of(run, "after_bad2"), TF_SKIPPED);
    CHECK_EQ(output_int(run, "after"), -99999); /* an empty value, not an int */
    CHECK_EQ(tf_run_output(run, "after", NULL, NULL), TF_OK);
    /* both failures are collected */
    CHECK_EQ(tf_run_nerrors(run), 2);
    CHECK(run_has_error(run, TF_ETASK, "'bad'", "code 7"));
    CHECK(run_has_error(run, TF_ETASK, "'bad2'", "code 9"));
    tf_run_free(run);
    tf_graph_destroy(g);
    pool_destroy(p);
}

typedef struct canceller { tf_run_t *run; int delay_ms; flags *f; } canceller;
static void *cancel_later(void *arg)
{
    canceller *c = (canceller *)arg;
    wait_flag(&c->f->started);
    test_sleep_ms(c->delay_ms);
    tf_run_cancel(c->run);
    return NULL;
}

TEST(cancel_from_another_thread)
{
    pool_t *p = make_pool(2);
    int ran = 0, i;
    flags fl = {0, 0};
    tf_graph_t *g = tf_graph_create("cancel");
    tf_task_t t = tf_task(g, "block", wait_for_stop, &fl, 0);
    tf_run_t *run;
    tf_run_opts o;
    pthread_t th;
    canceller c;
    char name[16];
    for (i = 0; i < 50; i++) {
        snprintf(name, sizeof name, "c%d", i);
        t = tf_task(g, name, count_run, &ran, 0, t);
    }
    REQUIRE(p && g);
    memset(&o, 0, sizeof o);
    CHECK_EQ(tf_run_start(g, p, NULL, &o, &run), TF_OK);
    CHECK_EQ(tf_run_wait(run, 20), TF_ETIMEDOUT); /* blocked: still in flight */
    c.run = run;
    c.delay_ms = 30;
    c.f = &fl;
    REQUIRE(pthread_create(&th, NULL, cancel_later, &c) == 0);
    CHECK_EQ(tf_run_wait(run, -1), TF_ECANCELLED);
    pthread_join(th, NULL);
    CHECK_EQ(ran, 0);
    CHECK_EQ(state_of(run, "block"), TF_DONE);
    CHECK_EQ(state_of(run, "c0"), TF_CANCELLED);
    CHECK_EQ(state_of(run, "c49"), TF_CANCELLED);
    CHECK(run_has_error(run, TF_ECANCELLED, NULL, NULL));
    CHECK_EQ(tf_run_cancel(run), TF_OK); /* again, after the end: harmless */
    CHECK_EQ(tf_run_wait(run, 0), TF_ECANCELLED);
    tf_run_free(run);
    tf_graph_destroy(g);
    pool_destroy(p);
}

TEST(deadline)
{
    pool_t *p = make_pool(2);
    int ran = 0;
    tf_graph_t *g = tf_graph_create("deadline");
    tf_task_t t = tf_task(g, "block", wait_for_stop, NULL, 0);
    tf_run_t *run;
    tf_run_opts o;
    double t0;
    tf_task(g, "next", count_run, &ran, 0, t);
    REQUIRE(p && g);
    memset(&o, 0, sizeof o);
    o.deadline_ms = 50;
    t0 = test_now_ms();
    CHECK_EQ(tf_run_start(g, p, NULL, &o, &run), TF_OK);
    CHECK_EQ(tf_run_wait(run, -1), TF_EDEADLINE);
    CHECK(test_now_ms() - t0 >= 45);
    CHECK_EQ(ran, 0);
    CHECK_EQ(state_of(run, "next"), TF_CANCELLED);
    CHECK(run_has_error(run, TF_EDEADLINE, "deadline", NULL));
    tf_run_free(run);

    /* a deadline that is not reached changes nothing */
    o.deadline_ms = 60000;
    tf_graph_destroy(g);
    g = add_graph();
    {
        tf_named in[2] = {{"int1", "2", 1}, {"int2", "1", 1}};
        tf_inputs inputs = {in, 2};
        CHECK_EQ(tf_run_start(g, p, &inputs, &o, &run), TF_OK);
        CHECK_EQ(tf_run_wait(run, -1), TF_OK);
        CHECK_EQ(output_int(run, "add"), 3);
        tf_run_free(run);
    }
    tf_graph_destroy(g);
    pool_destroy(p);
}

TEST(free_while_in_flight_cancels_and_waits)
{
    pool_t *p = make_pool(2);
    int ran = 0;
    tf_graph_t *g = tf_graph_create("free");
    tf_task_t t = tf_task(g, "block", wait_for_stop, NULL, 0);
    tf_run_t *run;
    tf_task(g, "next", count_run, &ran, 0, t);
    REQUIRE(p && g);
    CHECK_EQ(tf_run_start(g, p, NULL, NULL, &run), TF_OK);
    CHECK_EQ(tf_graph_destroy(g), TF_EBUSY); /* named error, nothing freed */
    CHECK_EQ(tf_graph_size(g), 2);
    tf_task(g, "late", count_run, &ran, 0); /* building while a run exists: no change */
    CHECK_EQ(tf_graph_size(g), 2);
    tf_run_free(run);
    CHECK_EQ(ran, 0);
    CHECK_EQ(tf_graph_check(g), TF_EBUSY); /* the late task is reported */
    CHECK(tf_graph_nerrors(g) == 1 && strstr(tf_graph_error(g, 0)->message, "'late'"));
    CHECK_EQ(tf_graph_destroy(g), TF_OK);
    pool_destroy(p);
}

typedef struct runner { tf_graph_t *g; pool_t *p; int id, bad; } runner;
static void *run_many(void *arg)
{
    runner *r = (runner *)arg;
    int i;
    for (i = 0; i < 25; i++) {
        char a[16], b[16];
        tf_named in[2];
        tf_inputs inputs;
        tf_run_t *run;
        snprintf(a, sizeof a, "%d", r->id * 1000 + i);
        snprintf(b, sizeof b, "%d", i);
        in[0].name = "int1"; in[0].data = a; in[0].size = strlen(a);
        in[1].name = "int2"; in[1].data = b; in[1].size = strlen(b);
        inputs.items = in;
        inputs.count = 2;
        if (tf_graph_run(r->g, r->p, &inputs, &run) != TF_OK) r->bad++;
        else if (output_int(run, "add") != r->id * 1000 + 2 * i) r->bad++;
        tf_run_free(run);
    }
    return NULL;
}

TEST(concurrent_runs_of_one_graph)
{
    pool_t *p = make_pool(2);
    tf_graph_t *g = add_graph();
    runner rs[4];
    pthread_t th[4];
    tf_run_t *runs[8];
    int i;
    REQUIRE(p && g);
    for (i = 0; i < 4; i++) {
        rs[i].g = g; rs[i].p = p; rs[i].id = i + 1; rs[i].bad = 0;
        REQUIRE(pthread_create(&th[i], NULL, run_many, &rs[i]) == 0);
    }
    for (i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ(rs[i].bad, 0);
    }
    /* several in flight from one thread */
    for (i = 0; i < 8; i++) {
        char a[8];
        tf_named in[2];
        tf_inputs inputs;
        snprintf(a, sizeof a, "%d", i);
        in[0].name = "int1"; in[0].data = a; in[0].size = strlen(a);
        in[1].name = "int2"; in[1].data = "100"; in[1].size = 3;
        inputs.items = in;
        inputs.count = 2;
        CHECK_EQ(tf_run_start(g, p, &inputs, NULL, &runs[i]), TF_OK);
    }
    for (i = 0; i < 8; i++) {
        CHECK_EQ(tf_run_wait(runs[i], -1), TF_OK);
        CHECK_EQ(output_int(runs[i], "add"), 100 + i);
        tf_run_free(runs[i]);
    }
    CHECK_EQ(tf_graph_destroy(g), TF_OK);
    pool_destroy(p);
}

TEST(batch)
{
    pool_t *p = make_pool(2);
    tf_graph_t *g = add_graph();
    tf_named items[10][2];
    tf_inputs sets[10];
    tf_run_t *runs[10];
    tf_run_opts o;
    char text[10][8];
    int i;
    REQUIRE(p && g);
    for (i = 0; i < 10; i++) {
        snprintf(text[i], sizeof text[i], "%d", i * i);
        items[i][0].name = "int1"; items[i][0].data = text[i]; items[i][0].size = strlen(text[i]);
        items[i][1].name = "int2"; items[i][1].data = "1"; items[i][1].size = 1;
        sets[i].items = items[i];
        sets[i].count = 2;
    }
    memset(&o, 0, sizeof o);
    o.max_inflight = 3;
    CHECK_EQ(tf_graph_run_batch(g, p, sets, 10, &o, runs), TF_OK);
    for (i = 0; i < 10; i++) {
        CHECK_EQ(output_int(runs[i], "add"), i * i + 1);
        tf_run_free(runs[i]);
    }
    /* one bad set: its run fails, the others are fine, the batch reports it */
    sets[4].count = 1;
    CHECK_EQ(tf_graph_run_batch(g, p, sets, 10, NULL, runs), TF_EMISSINGINPUT);
    for (i = 0; i < 10; i++) {
        if (i == 4) CHECK(run_has_error(runs[i], TF_EMISSINGINPUT, "'int2'", NULL));
        else CHECK_EQ(output_int(runs[i], "add"), i * i + 1);
        tf_run_free(runs[i]);
    }
    CHECK_EQ(tf_graph_run_batch(g, p, sets, 0, NULL, runs), TF_OK);
    tf_graph_destroy(g);
    pool_destroy(p);
}

/* sums its inputs (ints) and its own index (ctx) */
static int sum_plus(const tf_value *in, size_t nin, tf_out *out, void *ctx)
{
    long long s = (long long)(intptr_t)ctx;
    size_t i;
    for (i = 0; i < nin; i++) {
        if (in[i].size != sizeof s) return 97;
        s += *(const long long *)in[i].data;
    }
    return tf_out_set(out, &s, sizeof s);
}

TEST(shapes_chain_fan_wavefront)
{
    pool_t *p = make_pool(2);
    tf_graph_t *g;
    tf_run_t *run;
    const void *v = NULL;
    size_t size = 0;
    int i, j;
    REQUIRE(p);
    /* chain: 0 + 1 + ... + 19999 */
    g = tf_graph_create("chain");
    {
        tf_task_t prev = tf_task(g, NULL, sum_plus, (void *)(intptr_t)0, 0);
        for (i = 1; i < 20000; i++)
            prev = tf_task(g, i == 19999 ? "end" : NULL, sum_plus, (void *)(intptr_t)i,
                           i == 19999 ? TF_OUTPUT : 0, prev);
    }
    {
        pool_stats st0, st1;
        CHECK_EQ(pool_get_stats(p, &st0), POOL_OK);
        CHECK_EQ(tf_graph_run(g, p, NULL, &run), TF_OK);
        CHECK_EQ(pool_get_stats(p, &st1), POOL_OK);
#ifdef TF_TEST_CENTRAL
        CHECK(st1.submitted - st0.submitted >= 20000); /* one pool task per task */
#else
        CHECK(st1.submitted - st0.submitted <= 2);     /* a chain runs inline on one worker */
#endif
    }
    CHECK_EQ(tf_run_output(run, "end", &v, &size), TF_OK);
    CHECK(size == 8 && *(const long long *)v == 19999LL * 20000 / 2);
    tf_run_free(run);
    tf_graph_destroy(g);
    /* fan-out / fan-in: 1 -> 5000 -> 1; each mid adds its index to the root's 0 */
    g = tf_graph_create("fan");
    {
        tf_task_t root = tf_task(g, NULL, sum_plus, (void *)(intptr_t)0, 0);
        tf_task_t *mid = (tf_task_t *)malloc(5000 * sizeof *mid);
        REQUIRE(mid);
        for (i = 0; i < 5000; i++) mid[i] = tf_task(g, NULL, sum_plus, (void *)(intptr_t)(i + 1), 0, root);
        tf_task_v(g, "sink", sum_plus, (void *)(intptr_t)0, TF_OUTPUT, mid, 5000);
        free(mid);
    }
    for (j = 0; j < 3; j++) {
        CHECK_EQ(tf_graph_run(g, p, NULL, &run), TF_OK);
        CHECK_EQ(tf_run_output(run, "sink", &v, &size), TF_OK);
        CHECK(size == 8 && *(const long long *)v == 5000LL * 5001 / 2);
        tf_run_free(run);
    }
    tf_graph_destroy(g);
    /* wavefront 30x30: node (i,j) after (i-1,j) and (i,j-1); the value counts the
     * monotone paths from (0,0), so every edge is used once, in order */
    g = tf_graph_create("wave");
    {
        tf_task_t *n = (tf_task_t *)malloc(30 * 30 * sizeof *n);
        REQUIRE(n);
        for (i = 0; i < 30; i++)
            for (j = 0; j < 30; j++) {
                intptr_t self = (i == 0 && j == 0) ? 1 : 0;
                int last = i == 29 && j == 29;
                if (i && j) n[i * 30 + j] = tf_task(g, last ? "corner" : NULL, sum_plus, (void *)self, last ? TF_OUTPUT : 0, n[(i - 1) * 30 + j], n[i * 30 + j - 1]);
                else if (i) n[i * 30 + j] = tf_task(g, NULL, sum_plus, (void *)self, 0, n[(i - 1) * 30 + j]);
                else if (j) n[i * 30 + j] = tf_task(g, NULL, sum_plus, (void *)self, 0, n[j - 1]);
                else n[0] = tf_task(g, NULL, sum_plus, (void *)self, 0);
            }
        free(n);
    }
    CHECK_EQ(tf_graph_run(g, p, NULL, &run), TF_OK);
    CHECK_EQ(tf_run_output(run, "corner", &v, &size), TF_OK);
    {
        /* C(58, 29) monotone paths, about 3e16: fits */
        unsigned long long c, expect;
        static unsigned long long row[30];
        for (j = 0; j < 30; j++) row[j] = 1;
        for (i = 1; i < 30; i++)
            for (j = 1; j < 30; j++) row[j] += row[j - 1];
        expect = row[29];
        c = (unsigned long long)*(const long long *)v;
        CHECK(c == expect);
    }
    tf_run_free(run);
    tf_graph_destroy(g);
    pool_destroy(p);
}

TEST(many_roots_and_wide_nodes_run_once_each)
{
    pool_t *p = make_pool(2);
    tf_graph_t *g = tf_graph_create("roots");
    int *counts = (int *)calloc(3000, sizeof *counts);
    int i, total = 0;
    tf_run_t *run;
    REQUIRE(p && g && counts);
    for (i = 0; i < 3000; i++) tf_task(g, NULL, count_run, &counts[i], 0);
    CHECK_EQ(tf_graph_run(g, p, NULL, &run), TF_OK);
    for (i = 0; i < 3000; i++) {
        if (counts[i] != 1) total++;
    }
    CHECK_EQ(total, 0);
    tf_run_free(run);
    tf_graph_destroy(g);
    free(counts);
    pool_destroy(p);
}

TEST(closed_pool_refuses_and_the_run_ends)
{
    pool_t *p = make_pool(1);
    int ran = 0;
    tf_graph_t *g = tf_graph_create("closed");
    tf_run_t *run;
    tf_task(g, "a", count_run, &ran, 0);
    REQUIRE(p && g);
    CHECK_EQ(pool_close(p), POOL_OK);
    CHECK_EQ(tf_graph_run(g, p, NULL, &run), TF_EPOOL);
    CHECK_EQ(ran, 0);
    CHECK_EQ(state_of(run, "a"), TF_CANCELLED);
    CHECK(run_has_error(run, TF_EPOOL, NULL, NULL));
    tf_run_free(run);
    tf_graph_destroy(g);
    pool_destroy(p);
}

static int sleepy(const tf_value *in, size_t nin, tf_out *out, void *ctx)
{
    (void)in; (void)nin;
    test_sleep_ms((int)(intptr_t)ctx);
    return tf_out_set(out, "x", 1);
}

static tf_graph_t *pipeline(void)
{
    tf_graph_t *g = tf_graph_create("pipeline");
    tf_task_t r = tf_task(g, "read", sleepy, (void *)(intptr_t)2, 0);
    tf_task_t a = tf_task(g, "left", sleepy, (void *)(intptr_t)10, 0, r);
    tf_task_t b = tf_task(g, "right", sleepy, (void *)(intptr_t)10, 0, r);
    tf_task(g, "combine", sleepy, (void *)(intptr_t)2, TF_OUTPUT, a, b);
    return g;
}

TEST(task_info_durations_and_workers)
{
    pool_t *p = make_pool(2);
    tf_graph_t *g = pipeline();
    tf_run_t *run;
    tf_task_info li, ci, ri;
    tf_run_stats st;
    REQUIRE(p && g);
    CHECK_EQ(tf_graph_run(g, p, NULL, &run), TF_OK);
    CHECK_EQ(tf_run_task(run, "left", &li), TF_OK);
    CHECK_EQ(tf_run_task(run, "read", &ri), TF_OK);
    CHECK_EQ(tf_run_task(run, "combine", &ci), TF_OK);
    CHECK(strcmp(li.name, "left") == 0);
    CHECK(li.duration_ns >= 9000000);
    CHECK(li.worker >= 0 && li.worker < 2);
    CHECK(li.start_ns >= ri.start_ns + ri.duration_ns);
    CHECK(ci.start_ns >= li.start_ns + li.duration_ns);
    CHECK_EQ(tf_run_task(run, "nope", &li), TF_ENOTFOUND);
    CHECK_EQ(tf_run_task_at(run, 4, &li), TF_EINVAL);
    CHECK_EQ(tf_run_get_stats(run, &st), TF_OK);
    CHECK(st.wall_ns >= ci.start_ns + ci.duration_ns);
    tf_run_free(run);
    tf_graph_destroy(g);
    pool_destroy(p);
}

TEST(trace_is_json_with_one_slice_per_task)
{
    pool_t *p = make_pool(2);
    tf_graph_t *g = pipeline();
    tf_run_t *run;
    sink s = {NULL, 0};
    int code = 3;
    REQUIRE(p && g);
    CHECK_EQ(tf_graph_run(g, p, NULL, &run), TF_OK);
    CHECK_EQ(tf_run_trace(run, sink_write, &s), TF_OK);
    REQUIRE(s.p);
    CHECK(json_valid(s.p));
    CHECK_EQ(count_sub(s.p, "\"ph\":\"X\""), 4);
    CHECK_EQ(count_sub(s.p, "\"name\":\"left\""), 1);
    CHECK(strstr(s.p, "\"tid\":0") || strstr(s.p, "\"tid\":1"));
    CHECK(!strstr(s.p, "\"tid\":9999"));
    CHECK(strstr(s.p, "thread_name"));
    free(s.p);
    CHECK_EQ(tf_run_trace_file(run, "/nonexistent-dir/x.json"), TF_EIO);
    tf_run_free(run);
    /* a failed run: slices for the tasks that ran only */
    tf_task(g, "boom", fail_with, &code, 0);
    CHECK_EQ(tf_graph_run(g, p, NULL, &run), TF_ETASK);
    s.p = NULL; s.len = 0;
    CHECK_EQ(tf_run_trace(run, sink_write, &s), TF_OK);
    CHECK(s.p && json_valid(s.p));
    CHECK(s.p && count_sub(s.p, "\"ph\":\"X\"") >= 1);
    CHECK(s.p && count_sub(s.p, "\"state\":\"failed\"") == 1);
    free(s.p);
    tf_run_free(run);
    tf_graph_destroy(g);
    pool_destroy(p);
}

TEST(dot_after_a_run_is_coloured_with_durations)
{
    pool_t *p = make_pool(2);
    int ran[2] = {0, 0};
    flags flag = {0, 0};
    tf_graph_t *g = failing_graph(ran, &flag, TF_STOP_ON_ERROR);
    tf_graph_t *other = tf_graph_create("other");
    tf_run_t *run;
    sink s = {NULL, 0};
    char path[64];
    FILE *f;
    REQUIRE(p && g);
    CHECK_EQ(tf_graph_run(g, p, NULL, &run), TF_ETASK);
    CHECK_EQ(tf_graph_dot(g, run, sink_write, &s), TF_OK);
    REQUIRE(s.p);
    CHECK_EQ(count_sub(s.p, "fillcolor=palegreen"), 2);
    CHECK_EQ(count_sub(s.p, "fillcolor=salmon"), 1);
    CHECK_EQ(count_sub(s.p, "fillcolor=lightgray"), 3);
    CHECK_EQ(count_sub(s.p, "fillcolor=khaki"), 1);
    CHECK(strstr(s.p, "\\nfailed ") && strstr(s.p, "code 7"));
    CHECK(strstr(s.p, " ms") || strstr(s.p, " us") || strstr(s.p, " ns"));
    CHECK_EQ(tf_graph_dot(other, run, sink_write, &s), TF_EINVAL); /* not its run */
    free(s.p);
    snprintf(path, sizeof path, "/tmp/tf_test_%d.dot", (int)getpid());
    CHECK_EQ(tf_graph_dot_file(g, run, path), TF_OK);
    f = fopen(path, "r");
    CHECK(f != NULL);
    if (f) {
        char head[16] = {0};
        CHECK(fread(head, 1, 7, f) == 7 && strcmp(head, "digraph") == 0);
        fclose(f);
    }
    remove(path);
    tf_run_free(run);
    tf_graph_destroy(other);
    tf_graph_destroy(g);
    pool_destroy(p);
}

typedef struct logbook { int n; char last[256]; } logbook;
static void log_sink(const char *msg, void *user)
{
    logbook *l = (logbook *)user;
    __atomic_fetch_add(&l->n, 1, __ATOMIC_RELAXED);
    snprintf(l->last, sizeof l->last, "%s", msg);
}

TEST(log_callback_sees_each_error)
{
    pool_t *p = make_pool(2);
    int code = 5;
    tf_graph_t *g = tf_graph_create("log");
    tf_run_opts o;
    tf_run_t *run;
    logbook lb;
    memset(&lb, 0, sizeof lb);
    tf_task(g, "oops", fail_with, &code, 0);
    memset(&o, 0, sizeof o);
    o.log = log_sink;
    o.log_user = &lb;
    REQUIRE(p && g);
    CHECK_EQ(tf_run_start(g, p, NULL, &o, &run), TF_OK);
    CHECK_EQ(tf_run_wait(run, -1), TF_ETASK);
    CHECK_EQ(lb.n, 1);
    CHECK(strstr(lb.last, "'oops'") != NULL);
    tf_run_free(run);
    tf_graph_destroy(g);
    pool_destroy(p);
}

TEST(repeated_runs_leave_nothing_behind)
{
    pool_t *p = make_pool(2);
    tf_graph_t *g = pipeline();
    int i, threads0, ran = 0;
    REQUIRE(p && g);
    threads0 = test_threads_settle(test_base_threads + 2); /* and the pool's 2 workers */
    for (i = 0; i < 30; i++) {
        tf_run_t *run;
        CHECK_EQ(tf_graph_run(g, p, NULL, &run), TF_OK);
        tf_run_free(run);
        if (i == 0) {
            tf_graph_destroy(g);
            g = tf_graph_create("fast");
            tf_task(g, "x", count_run, &ran, 0);
        }
    }
    CHECK_EQ(test_threads_settle(threads0), threads0);
    CHECK_EQ(ran, 29);
    tf_graph_destroy(g);
    pool_destroy(p);
}

int main(int argc, char **argv)
{
    RUN(int1_int2_add);
    RUN(inputs_arrive_in_the_order_named);
    RUN(values_are_freed_after_their_last_consumer);
    RUN(value_sizes_and_alignment);
    RUN(empty_graph_runs);
    RUN(bad_inputs_are_named_and_nothing_runs);
    RUN(invalid_graph_never_runs);
    RUN(bad_arguments);
    RUN(failure_stops_everything_by_default);
    RUN(continue_policy_lets_independent_branches_finish);
    RUN(cancel_from_another_thread);
    RUN(deadline);
    RUN(free_while_in_flight_cancels_and_waits);
    RUN(concurrent_runs_of_one_graph);
    RUN(batch);
    RUN(shapes_chain_fan_wavefront);
    RUN(many_roots_and_wide_nodes_run_once_each);
    RUN(closed_pool_refuses_and_the_run_ends);
    RUN(task_info_durations_and_workers);
    RUN(trace_is_json_with_one_slice_per_task);
    RUN(dot_after_a_run_is_coloured_with_durations);
    RUN(log_callback_sees_each_error);
    RUN(repeated_runs_leave_nothing_behind);
    return test_run_all(argc, argv);
}
