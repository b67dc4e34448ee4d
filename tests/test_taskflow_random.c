/* test_taskflow_random.c - random DAGs with random failures, checked against a
 * sequential model: values along every edge, which tasks ran (once at most), which
 * were skipped, under both error policies and both dispatch modes, with several runs
 * of one graph in flight at once. */
#define TASKFLOW_IMPLEMENTATION
#include "taskflow.h"
#include "test.h"

#define MAXN 300

typedef struct model {
    int n;
    int ndeps[MAXN];
    int deps[MAXN][6];
    int fails[MAXN];          /* this task returns a code */
    int big[MAXN];            /* its value is 40 bytes (a heap value), else 8 */
    uint64_t value[MAXN];     /* expected value under the continue policy */
    int skipped[MAXN];        /* expected: a dependency failed or was skipped */
    int ran[MAXN];            /* how often it ran (atomic) */
} model;

typedef struct tctx { model *m; int id; } tctx;
static tctx ctxs[MAXN];

static uint64_t mix(uint64_t h, uint64_t v)
{
    h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
    return h;
}

/* folds the inputs in order (their first 8 bytes) with its own id */
static int node(const tf_value *in, size_t nin, tf_out *out, void *ctx)
{
    tctx *c = (tctx *)ctx;
    model *m = c->m;
    uint64_t h = (uint64_t)c->id * 1000003u;
    size_t i;
    __atomic_fetch_add(&m->ran[c->id], 1, __ATOMIC_RELAXED);
    if (nin != (size_t)m->ndeps[c->id]) return 1000;
    for (i = 0; i < nin; i++) {
        uint64_t v;
        if (in[i].size != (m->big[m->deps[c->id][i]] ? 40u : 8u)) return 1001;
        memcpy(&v, in[i].data, sizeof v);
        h = mix(h, v);
    }
    if (m->fails[c->id]) return 7;
    if (m->big[c->id]) {
        unsigned char *b = (unsigned char *)tf_out_alloc(out, 40);
        if (!b) return 1002;
        memset(b, 0xee, 40);
        memcpy(b, &h, sizeof h);
        return 0;
    }
    return tf_out_set(out, &h, sizeof h);
}

static unsigned rnd_state;
static unsigned rnd(void)
{
    rnd_state = rnd_state * 1103515245u + 12345u;
    return (rnd_state >> 8) & 0xffffff;
}

static tf_graph_t *make_graph(model *m, int n)
{
    tf_graph_t *g = tf_graph_create("random");
    tf_task_t h[MAXN];
    int i, k;
    m->n = n;
    for (i = 0; i < n; i++) {
        tf_task_t d[6];
        m->ndeps[i] = i ? (int)(rnd() % 6) : 0;
        if (m->ndeps[i] > i) m->ndeps[i] = i;
        for (k = 0; k < m->ndeps[i]; k++) {
            /* mostly recent tasks (long paths), sometimes any earlier one */
            int back = rnd() % 4 ? (int)(rnd() % 8) + 1 : (int)(rnd() % i) + 1;
            if (back > i) back = i;
            m->deps[i][k] = i - back;
            d[k] = h[i - back];
        }
        m->fails[i] = rnd() % 40 == 0;
        m->big[i] = rnd() % 5 == 0;
        m->ran[i] = 0;
        ctxs[i].m = m;
        ctxs[i].id = i;
        h[i] = tf_task_v(g, NULL, node, &ctxs[i], rnd() % 7 == 0 ? TF_OUTPUT : 0, d, (size_t)m->ndeps[i]);
    }
    /* the model, in creation order (a topological order) */
    for (i = 0; i < n; i++) {
        uint64_t hv = (uint64_t)i * 1000003u;
        m->skipped[i] = 0;
        for (k = 0; k < m->ndeps[i]; k++) {
            int d = m->deps[i][k];
            if (m->skipped[d] || m->fails[d]) m->skipped[i] = 1;
            hv = mix(hv, m->value[d]);
        }
        m->value[i] = hv;
    }
    return g;
}

static void check_run(model *m, tf_run_t *run, tf_policy policy, int *bad)
{
    int i, any_failed = 0;
    for (i = 0; i < m->n; i++) {
        tf_task_info info;
        tf_state want;
        if (tf_run_task_at(run, (size_t)i, &info) != TF_OK) { (*bad)++; continue; }
        want = m->skipped[i] ? TF_SKIPPED : m->fails[i] ? TF_FAILED : TF_DONE;
        if (policy == TF_CONTINUE_ON_ERROR) {
            if (info.state != want) (*bad)++;
        } else if (info.state != want && info.state != TF_CANCELLED) {
            /* stop policy: what did not start is cancelled; anything else must match */
            (*bad)++;
        }
        if (info.state == TF_FAILED) {
            any_failed = 1;
            if (info.code != 7) (*bad)++;
        }
    }
    if (any_failed && tf_run_nerrors(run) == 0) (*bad)++;
}

static void check_values(model *m, tf_run_t *run, int *bad)
{
    size_t i;
    for (i = 0; i < tf_run_noutputs(run); i++) {
        const char *name;
        const void *v;
        size_t size;
        int rc = tf_run_output_at(run, i, &name, &v, &size);
        int id = atoi(name + 1); /* "#index" */
        uint64_t got;
        if (rc == TF_ENOVALUE) continue;
        if (rc != TF_OK || size != (m->big[id] ? 40u : 8u)) { (*bad)++; continue; }
        memcpy(&got, v, sizeof got);
        if (got != m->value[id]) (*bad)++;
    }
}

static void run_many_graphs(tf_dispatch dispatch)
{
    pool_t *p = NULL;
    pool_config c;
    static model m;
    int gi, bad = 0;
    memset(&c, 0, sizeof c);
    c.workers = 2;
    REQUIRE(pool_create(&p, &c) == POOL_OK);
    rnd_state = 12345;
    for (gi = 0; gi < 120; gi++) {
        int n = 20 + (int)(rnd() % (MAXN - 20)), pol, k, i;
        tf_graph_t *g = make_graph(&m, n);
        REQUIRE(tf_graph_check(g) == TF_OK);
        for (pol = 0; pol < 2; pol++) {
            tf_run_opts o;
            tf_run_t *runs[3];
            int rc;
            memset(&o, 0, sizeof o);
            o.policy = pol ? TF_CONTINUE_ON_ERROR : TF_STOP_ON_ERROR;
            o.dispatch = dispatch;
            for (i = 0; i < n; i++) m.ran[i] = 0;
            /* three runs of the graph in flight at once */
            for (k = 0; k < 3; k++) {
                rc = tf_run_start(g, p, NULL, &o, &runs[k]);
                if (rc != TF_OK) bad++;
            }
            for (k = 0; k < 3; k++) {
                rc = tf_run_wait(runs[k], -1);
                if (rc != TF_OK && rc != TF_ETASK) bad++;
                check_run(&m, runs[k], o.policy, &bad);
                check_values(&m, runs[k], &bad);
                tf_run_free(runs[k]);
            }
            for (i = 0; i < n; i++) {
                if (m.ran[i] > 3) bad++;                    /* at most once per run */
                if (m.skipped[i] && m.ran[i]) bad++;        /* never on missing inputs */
                if (pol && !m.skipped[i] && m.ran[i] != 3) bad++; /* continue: every other runs */
            }
        }
        CHECK_EQ(tf_graph_destroy(g), TF_OK);
        if (bad) {
            fprintf(stderr, "  graph %d (n=%d): %d mismatches\n", gi, n, bad);
            break;
        }
    }
    CHECK_EQ(bad, 0);
    pool_destroy(p);
}

TEST(random_graphs_workers_dispatch) { run_many_graphs(TF_DISPATCH_AUTO); }
TEST(random_graphs_central_dispatch) { run_many_graphs(TF_DISPATCH_CENTRAL); }

int main(int argc, char **argv)
{
    RUN(random_graphs_workers_dispatch);
    RUN(random_graphs_central_dispatch);
    return test_run_all(argc, argv);
}
