/* test_taskflow_graph.c - taskflow.h: building graphs, the check, DOT of a graph. */
#define TASKFLOW_IMPLEMENTATION
#include "taskflow.h"
#include "test.h"

static int noop(const tf_value *in, size_t nin, tf_out *out, void *ctx)
{
    (void)in; (void)nin; (void)out; (void)ctx;
    return 0;
}

/* does any recorded error of g have this code and mention every given word? */
static int has_error(const tf_graph_t *g, int code, const char *w1, const char *w2, const char *w3)
{
    size_t i;
    for (i = 0; i < tf_graph_nerrors(g); i++) {
        const tf_error *e = tf_graph_error(g, i);
        if (e->code != code) continue;
        if (w1 && !strstr(e->message, w1)) continue;
        if (w2 && !strstr(e->message, w2)) continue;
        if (w3 && !strstr(e->message, w3)) continue;
        return 1;
    }
    return 0;
}

static size_t count_errors(const tf_graph_t *g, int code)
{
    size_t i, n = 0;
    for (i = 0; i < tf_graph_nerrors(g); i++)
        if (tf_graph_error(g, i)->code == code) n++;
    return n;
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
static int failing_write(const void *data, size_t size, void *user)
{
    (void)data; (void)size; (void)user;
    return -1;
}
static size_t count_sub(const char *s, const char *w)
{
    size_t n = 0, l = strlen(w);
    while ((s = strstr(s, w)) != NULL) { n++; s += l; }
    return n;
}

TEST(build_and_check_ok)
{
    tf_graph_t *g = tf_graph_create("add");
    tf_task_t a, b, s;
    REQUIRE(g);
    a = tf_input(g, "int1", noop, NULL);
    b = tf_input(g, "int2", noop, NULL);
    s = tf_task(g, "add", noop, NULL, TF_OUTPUT, a, b);
    CHECK(a && b && s && a != b && b != s);
    CHECK_EQ(tf_graph_check(g), TF_OK);
    CHECK_EQ(tf_graph_nerrors(g), 0);
    CHECK_EQ(tf_graph_size(g), 3);
    CHECK(strcmp(tf_graph_name(g), "add") == 0);
    CHECK(strcmp(tf_graph_task_name(g, 2), "add") == 0);
    CHECK(tf_graph_task_name(g, 3) == NULL);
    CHECK_EQ(tf_graph_check(g), TF_OK); /* cached */
    CHECK_EQ(tf_graph_destroy(g), TF_OK);
}

TEST(duplicate_names)
{
    tf_graph_t *g = tf_graph_create(NULL);
    REQUIRE(g);
    CHECK(strcmp(tf_graph_name(g), "graph") == 0);
    tf_task(g, "a", noop, NULL, 0);
    tf_task(g, "b", noop, NULL, 0);
    tf_task(g, "a", noop, NULL, 0);
    CHECK_EQ(tf_graph_check(g), TF_EDUPNAME);
    CHECK(has_error(g, TF_EDUPNAME, "'a'", NULL, NULL));
    CHECK_EQ(count_errors(g, TF_EDUPNAME), 1);
    CHECK(strcmp(tf_graph_error(g, 0)->task, "a") == 0);
    CHECK(tf_graph_error(g, tf_graph_nerrors(g)) == NULL);
    tf_graph_destroy(g);
}

TEST(unknown_dependencies_are_named)
{
    tf_graph_t *g = tf_graph_create("u");
    const char *deps[] = {"a", "nope", "zip"};
    tf_task(g, "a", noop, NULL, 0);
    tf_task_named(g, "user", noop, NULL, 0, deps, 3);
    CHECK_EQ(tf_graph_check(g), TF_EUNKNOWNDEP);
    CHECK(has_error(g, TF_EUNKNOWNDEP, "'user'", "'nope'", NULL));
    CHECK(has_error(g, TF_EUNKNOWNDEP, "'user'", "'zip'", NULL));
    CHECK_EQ(count_errors(g, TF_EUNKNOWNDEP), 2);
    tf_graph_destroy(g);
}

TEST(forward_named_dependencies_resolve)
{
    tf_graph_t *g = tf_graph_create("fwd");
    const char *d1[] = {"later"};
    tf_task_named(g, "first", noop, NULL, TF_OUTPUT, d1, 1);
    tf_task(g, "later", noop, NULL, 0);
    CHECK_EQ(tf_graph_check(g), TF_OK);
    tf_graph_destroy(g);
}

TEST(cycles_name_the_tasks_on_them)
{
    tf_graph_t *g = tf_graph_create("cyc");
    const char *da[] = {"c"}, *db[] = {"a"}, *dc[] = {"b"}, *dd[] = {"c"};
    const char *dx[] = {"y"}, *dy[] = {"x"}, *ds[] = {"self"};
    size_t i;
    tf_task(g, "root", noop, NULL, 0);
    tf_task_named(g, "a", noop, NULL, 0, da, 1);
    tf_task_named(g, "b", noop, NULL, 0, db, 1);
    tf_task_named(g, "c", noop, NULL, 0, dc, 1);
    tf_task_named(g, "downstream", noop, NULL, 0, dd, 1);
    tf_task_named(g, "x", noop, NULL, 0, dx, 1);
    tf_task_named(g, "y", noop, NULL, 0, dy, 1);
    tf_task_named(g, "self", noop, NULL, 0, ds, 1);
    CHECK_EQ(tf_graph_check(g), TF_ECYCLE);
    CHECK_EQ(count_errors(g, TF_ECYCLE), 3);
    CHECK(has_error(g, TF_ECYCLE, "'a' -> 'b'", "'b' -> 'c'", "'c' -> 'a'"));
    CHECK(has_error(g, TF_ECYCLE, "'x' -> 'y'", "'y' -> 'x'", NULL));
    CHECK(has_error(g, TF_ECYCLE, "'self' -> 'self'", NULL, NULL));
    for (i = 0; i < tf_graph_nerrors(g); i++) {
        CHECK(!strstr(tf_graph_error(g, i)->message, "downstream"));
        CHECK(!strstr(tf_graph_error(g, i)->message, "root"));
    }
    tf_graph_destroy(g);
}

TEST(foreign_and_failed_handles)
{
    tf_graph_t *g1 = tf_graph_create("one"), *g2 = tf_graph_create("two");
    tf_task_t other = tf_task(g2, "other", noop, NULL, 0);
    tf_task_t bad = tf_task(g1, "bad", NULL, NULL, 0); /* NULL function: creation fails */
    tf_task_t deps[2];
    CHECK(bad != NULL); /* a usable (poisoning) handle */
    tf_task(g1, "uses_other", noop, NULL, 0, other);
    tf_task(g1, "uses_bad", noop, NULL, 0, bad);
    deps[0] = other;
    deps[1] = NULL;
    tf_task_v(g1, "array", noop, NULL, 0, deps, 2);
    CHECK(tf_graph_check(g1) != TF_OK);
    CHECK(has_error(g1, TF_EINVAL, "'bad'", "NULL function", NULL));
    CHECK(has_error(g1, TF_EFOREIGN, "'uses_other'", "another graph", "'two'"));
    CHECK(has_error(g1, TF_EFOREIGN, "'uses_bad'", "creation failed", NULL));
    CHECK(has_error(g1, TF_EFOREIGN, "'array'", NULL, NULL));
    CHECK(has_error(g1, TF_EINVAL, "'array'", "NULL", NULL));
    CHECK_EQ(tf_graph_check(g2), TF_OK);
    tf_graph_destroy(g1);
    tf_graph_destroy(g2);
}

TEST(name_length_limit)
{
    tf_graph_t *g = tf_graph_create("len");
    char n63[64], n64[65];
    memset(n63, 'a', 63); n63[63] = 0;
    memset(n64, 'b', 64); n64[64] = 0;
    tf_task(g, n63, noop, NULL, 0);
    CHECK_EQ(tf_graph_check(g), TF_OK);
    tf_task(g, n64, noop, NULL, 0);
    CHECK_EQ(tf_graph_check(g), TF_ENAMETOOLONG);
    CHECK(has_error(g, TF_ENAMETOOLONG, "bbbb", NULL, NULL));
    tf_graph_destroy(g);
}

TEST(null_arguments)
{
    tf_graph_t *g = tf_graph_create("nulls");
    CHECK(tf_task(NULL, "x", noop, NULL, 0) == NULL);
    CHECK(tf_input(NULL, "x", noop, NULL) == NULL);
    CHECK(tf_task_v(NULL, "x", noop, NULL, 0, NULL, 0) == NULL);
    CHECK(tf_task_named(NULL, "x", noop, NULL, 0, NULL, 0) == NULL);
    CHECK_EQ(tf_output(NULL, "x"), TF_EINVAL);
    CHECK_EQ(tf_output(g, NULL), TF_EINVAL);
    CHECK_EQ(tf_graph_check(NULL), TF_EINVAL);
    CHECK_EQ(tf_graph_destroy(NULL), TF_OK);
    CHECK_EQ(tf_graph_nerrors(NULL), 0);
    CHECK(tf_graph_error(NULL, 0) == NULL);
    CHECK_EQ(tf_graph_size(NULL), 0);
    CHECK_EQ(tf_graph_dot(NULL, NULL, sink_write, NULL), TF_EINVAL);
    CHECK_EQ(tf_graph_dot(g, NULL, NULL, NULL), TF_EINVAL);
    tf_input(g, NULL, noop, NULL); /* inputs need a name */
    tf_input(g, "in", NULL, NULL); /* and a function */
    tf_task_v(g, "nodeps", noop, NULL, 0, NULL, 2);
    CHECK_EQ(tf_graph_check(g), TF_EINVAL);
    CHECK_EQ(count_errors(g, TF_EINVAL), 3);
    tf_graph_destroy(g);
}

TEST(outputs_nobody_provides)
{
    tf_graph_t *g = tf_graph_create("outs");
    tf_task(g, "a", noop, NULL, 0);
    CHECK_EQ(tf_output(g, "a"), TF_OK);
    CHECK_EQ(tf_output(g, "sum"), TF_OK);
    CHECK_EQ(tf_graph_check(g), TF_ENOOUTPUT);
    CHECK(has_error(g, TF_ENOOUTPUT, "'sum'", NULL, NULL));
    CHECK_EQ(count_errors(g, TF_ENOOUTPUT), 1);
    tf_task(g, "sum", noop, NULL, 0); /* provided later: the check passes */
    CHECK_EQ(tf_graph_check(g), TF_OK);
    tf_graph_destroy(g);
}

TEST(changes_after_a_check_are_checked)
{
    tf_graph_t *g = tf_graph_create("again");
    tf_task(g, "a", noop, NULL, 0);
    CHECK_EQ(tf_graph_check(g), TF_OK);
    tf_task(g, "a", noop, NULL, 0);
    CHECK_EQ(tf_graph_check(g), TF_EDUPNAME);
    tf_graph_destroy(g);
}

TEST(anonymous_tasks)
{
    tf_graph_t *g = tf_graph_create("anon");
    tf_task_t a = tf_task(g, NULL, noop, NULL, 0);
    tf_task(g, NULL, noop, NULL, 0, a);
    tf_task(g, NULL, noop, NULL, 0, a);
    CHECK_EQ(tf_graph_check(g), TF_OK);
    CHECK(strcmp(tf_graph_task_name(g, 0), "#0") == 0);
    CHECK(strcmp(tf_graph_task_name(g, 2), "#2") == 0);
    tf_graph_destroy(g);
}

TEST(dot_of_a_graph)
{
    tf_graph_t *g = tf_graph_create("pipe \"line\"");
    tf_task_t r = tf_input(g, "read", noop, NULL);
    tf_task_t t1 = tf_task(g, "left", noop, NULL, 0, r);
    tf_task_t t2 = tf_task(g, "ri\"ght", noop, NULL, 0, r);
    sink s = {NULL, 0};
    tf_task(g, "combine", noop, NULL, TF_OUTPUT, t1, t2);
    CHECK_EQ(tf_graph_dot(g, NULL, sink_write, &s), TF_OK);
    REQUIRE(s.p);
    CHECK(strncmp(s.p, "digraph \"pipe \\\"line\\\"\" {", 25) == 0);
    CHECK_EQ(count_sub(s.p, "->"), 4);
    CHECK_EQ(count_sub(s.p, "[label="), 4);
    CHECK(strstr(s.p, "t0 -> t1;") && strstr(s.p, "t0 -> t2;"));
    CHECK(strstr(s.p, "t1 -> t3;") && strstr(s.p, "t2 -> t3;"));
    CHECK(strstr(s.p, "ri\\\"ght"));
    CHECK(strstr(s.p, "peripheries=2"));  /* the output */
    CHECK(strstr(s.p, "shape=invhouse")); /* the input */
    CHECK(s.p[s.len - 2] == '}');
    CHECK_EQ(tf_graph_dot(g, NULL, failing_write, NULL), TF_EIO);
    free(s.p);
    tf_graph_destroy(g);
}

TEST(large_graph_builds_and_checks)
{
    tf_graph_t *g = tf_graph_create("big");
    tf_task_t prev = tf_task(g, "n0", noop, NULL, 0);
    char name[32];
    int i;
    for (i = 1; i < 20000; i++) {
        snprintf(name, sizeof name, "n%d", i);
        prev = tf_task(g, name, noop, NULL, 0, prev);
    }
    CHECK_EQ(tf_graph_check(g), TF_OK);
    CHECK_EQ(tf_graph_size(g), 20000);
    CHECK(strcmp(tf_graph_task_name(g, 19999), "n19999") == 0);
    tf_task(g, "n777", noop, NULL, 0);
    CHECK_EQ(tf_graph_check(g), TF_EDUPNAME);
    tf_graph_destroy(g);
}

TEST(strerror_covers_every_code)
{
#define TF_TEST_CODE(name, value, text) \
    CHECK(strcmp(tf_strerror(value), text) == 0); CHECK(name == value);
    TF_ERRORS(TF_TEST_CODE)
#undef TF_TEST_CODE
    CHECK(strcmp(tf_strerror(5), "task error") == 0);
    CHECK(tf_strerror(-999) != NULL);
    CHECK(strcmp(tf_state_name(TF_SKIPPED), "skipped") == 0);
}

int main(int argc, char **argv)
{
    RUN(build_and_check_ok);
    RUN(duplicate_names);
    RUN(unknown_dependencies_are_named);
    RUN(forward_named_dependencies_resolve);
    RUN(cycles_name_the_tasks_on_them);
    RUN(foreign_and_failed_handles);
    RUN(name_length_limit);
    RUN(null_arguments);
    RUN(outputs_nobody_provides);
    RUN(changes_after_a_check_are_checked);
    RUN(anonymous_tasks);
    RUN(dot_of_a_graph);
    RUN(large_graph_builds_and_checks);
    RUN(strerror_covers_every_code);
    return test_run_all(argc, argv);
}
