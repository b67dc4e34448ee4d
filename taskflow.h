/* taskflow.h - v0.1 - named task graphs (DAGs) with data along the edges, run on a pool.h pool
 *
 *   Do this:
 *       #define TASKFLOW_IMPLEMENTATION
 *   before you include this file in *one* C or C++ file to create the implementation.
 *   That one define brings in pool.h's and shm_queue.h's implementations too (keep the
 *   three headers side by side); do not define POOL_IMPLEMENTATION in another file.
 *
 * OVERVIEW
 *
 *   A graph is built once and run many times. A task has a name, a function, a context
 *   pointer and the tasks it depends on; the values those produce arrive as its inputs,
 *   in the order the dependencies were named. Input tasks take their value from the
 *   run's input map, by name; tasks flagged TF_OUTPUT land in the run's output map.
 *
 *   Running a graph checks it first (duplicate names, unknown dependencies, cycles with
 *   the tasks on them, missing or unknown inputs, declared outputs nobody provides):
 *   nothing runs on a graph that fails the check, and every problem is listed. Ready
 *   tasks then run in parallel on the pool. When a task finishes on a worker, that
 *   worker releases its successors itself: exactly one ready successor runs inline on
 *   the same worker, further ones are handed to the pool (wide fan-outs in halves, so
 *   workers share them without a central loop). A failing task fails the run with its
 *   name and code; its dependents are skipped, never run on missing data. The error
 *   policy is "stop everything" (default) or "let independent branches finish". A run
 *   can be cancelled from any thread and can carry a deadline. Several runs of one graph
 *   may be in flight at once: all per-run state lives in the run.
 *
 *   A value is bytes of any size. A task sizes its result through the run
 *   (tf_out_alloc / tf_out_set); values up to 16 bytes live inside the run's task
 *   record (no allocation), larger ones come from pool_shared_alloc (the shared arena
 *   in a process pool). A value is freed as soon as its last consumer has run, unless
 *   its task is an output; outputs live until tf_run_free.
 *
 *   A graph exports as Graphviz DOT (after a run: coloured by state, with durations);
 *   a run exports as a Chrome trace-event JSON file (one slice per task, one row per
 *   worker) that chrome://tracing and ui.perfetto.dev open.
 *
 * QUICK START
 *
 *   The int1 / int2 / add graph: two input tasks parse text, `add` sums them and is
 *   an output. Compile with `cc -pthread example.c`.
 *
 *   EXAMPLE BEGIN
 *    #define TASKFLOW_IMPLEMENTATION
 *    #include "taskflow.h"
 *    #include <stdio.h>
 *    #include <stdlib.h>
 *    #include <string.h>
 *
 *    static int parse_int(const tf_value *in, size_t nin, tf_out *out, void *ctx)
 *    {
 *        char text[32];
 *        size_t n = in[0].size < sizeof text - 1 ? in[0].size : sizeof text - 1;
 *        int v;
 *        (void)nin; (void)ctx;
 *        memcpy(text, in[0].data, n);
 *        text[n] = 0;
 *        v = atoi(text);
 *        return tf_out_set(out, &v, sizeof v);
 *    }
 *
 *    static int add(const tf_value *in, size_t nin, tf_out *out, void *ctx)
 *    {
 *        int sum = *(const int *)in[0].data + *(const int *)in[1].data;
 *        (void)nin; (void)ctx;
 *        return tf_out_set(out, &sum, sizeof sum);
 *    }
 *
 *    int main(void)
 *    {
 *        pool_t *pool;
 *        tf_graph_t *g = tf_graph_create("example");
 *        tf_task_t a = tf_input(g, "int1", parse_int, NULL);
 *        tf_task_t b = tf_input(g, "int2", parse_int, NULL);
 *        tf_named in[2] = {{"int1", "2", 1}, {"int2", "1", 1}};
 *        tf_inputs inputs = {in, 2};
 *        tf_run_t *run = NULL;
 *        const void *v;
 *        size_t size, i;
 *        int rc;
 *
 *        tf_task(g, "add", add, NULL, TF_OUTPUT, a, b);
 *        if (pool_create(&pool, NULL) != POOL_OK) return 1;
 *        rc = tf_graph_run(g, pool, &inputs, &run);
 *        if (rc == TF_OK && tf_run_output(run, "add", &v, &size) == TF_OK)
 *            printf("{\"add\": %d}\n", *(const int *)v);
 *        for (i = 0; i < tf_run_nerrors(run); i++)
 *            printf("error: %s\n", tf_run_error(run, i)->message);
 *        tf_run_free(run);
 *        tf_graph_destroy(g);
 *        pool_destroy(pool);
 *        return rc == TF_OK ? 0 : 1;
 *    }
 *   EXAMPLE END
 *
 * API
 *
 *   Building (one thread at a time per graph; not while a run of it exists)
 *     tf_graph_create(name)                        -> graph, NULL when out of memory
 *     tf_graph_destroy(g)                          -> TF_OK, or TF_EBUSY while runs exist
 *     tf_input(g, name, fn, ctx)                   -> an input task (value from the run)
 *     tf_task(g, name, fn, ctx, flags, deps...)    -> a task; deps are tf_task_t handles
 *     tf_task_v(g, name, fn, ctx, flags, deps, n)  -> the same with an array
 *     tf_task_named(g, name, fn, ctx, flags, names, n) -> deps by name (may come later)
 *     tf_output(g, name)                           -> declares that `name` is an output
 *     tf_graph_check(g)                            -> TF_OK or the first problem
 *     tf_graph_nerrors(g) / tf_graph_error(g, i)   -> every problem, with names
 *   A building call never needs checking on the spot: a problem (NULL function, name
 *   too long, duplicate name, foreign dependency, out of memory) is recorded in the
 *   graph and reported by tf_graph_check and by every run. A task whose creation
 *   failed gets a handle that poisons its dependents (they are reported too).
 *
 *   Running (any thread; several runs of one graph at once)
 *     tf_graph_run(g, pool, inputs, &run)          -> blocks until the run is over
 *     tf_run_start(g, pool, inputs, opts, &run)    -> returns at once
 *     tf_run_wait(run, timeout_ms)                 -> the run's code, or TF_ETIMEDOUT
 *     tf_run_cancel(run)                           -> from any thread
 *     tf_graph_run_batch(g, pool, sets, n, opts, runs) -> one run per input set
 *     tf_run_output(run, name, &data, &size), tf_run_noutputs, tf_run_output_at
 *     tf_run_task(run, name, &info), tf_run_task_at(run, i, &info)
 *     tf_run_nerrors(run) / tf_run_error(run, i), tf_run_get_stats(run, &stats)
 *     tf_run_free(run)
 *   Whenever a run object could be allocated it is returned, also when the check
 *   failed (so its errors can be read): always tf_run_free it (NULL is fine).
 *   tf_run_opts (zero = defaults): policy (TF_STOP_ON_ERROR, TF_CONTINUE_ON_ERROR),
 *   dispatch (TF_DISPATCH_AUTO, TF_DISPATCH_CENTRAL), deadline_ms, max_inflight
 *   (batches), log + log_user.
 *
 *   Dispatch: on a thread pool the worker that finishes a task releases its
 *   successors; one that becomes ready runs next on the same worker, more go to the
 *   pool. On a process pool (or with TF_DISPATCH_CENTRAL) each task goes out by
 *   pool_apply_async and its completion callback, in the parent, releases the
 *   successors: worker processes only run task functions.
 *
 *   Inside a task
 *     int fn(const tf_value *in, size_t nin, tf_out *out, void *ctx)
 *       in[0..nin): the dependencies' values in the order named (an input task gets
 *       one: its bytes from the run's inputs). Returns 0, or its own non-zero code
 *       (use positive codes). Input values are read-only and valid during the call.
 *     tf_out_alloc(out, size) -> memory for the result (NULL: out of memory)
 *     tf_out_set(out, data, size) -> copies the result (TF_OK or TF_ENOMEM)
 *     tf_out_cancelled(out) -> non-zero once the run is stopping (poll in long tasks)
 *   A task that sets no result produces an empty value (size 0).
 *
 *   Exporting
 *     tf_graph_dot(g, run_or_NULL, write, user), tf_graph_dot_file(g, run, path)
 *     tf_run_trace(run, write, user), tf_run_trace_file(run, path)
 *
 * CONFIGURATION MACROS
 *
 *   TASKFLOW_STATIC      every function static (and POOL_STATIC, SHMQ_STATIC)
 *   TF_MALLOC / TF_REALLOC / TF_FREE   all three or none (default: malloc family);
 *                        used for graphs, runs and messages. Values come from
 *                        pool_shared_alloc, so pool.h's allocator applies to them.
 *   TF_ASSERT            programmer-error checks (default: assert)
 *
 * THREAD SAFETY
 *
 *   A graph is built by one thread at a time, and not while a run of it exists (a
 *   building call then changes nothing and records TF_EBUSY, which the next check
 *   reports once no run is in flight). Once built, any number of threads may
 *   start runs of it at once; runs share nothing but the read-only graph.
 *   tf_run_cancel may be called from any thread at any time before tf_run_free.
 *   tf_run_wait may be called by several threads at once; a run advances whether or
 *   not anyone waits. Reading a run's outputs, errors, task states and exports is for
 *   after tf_run_wait returned (not TF_ETIMEDOUT). Task functions run concurrently on
 *   the pool's workers: a ctx shared by several tasks must be safe for that. The
 *   library keeps no global state.
 *
 * ERRORS
 *
 *   Every function returning int returns TF_OK (0) or a negative TF_E* code from the
 *   list TF_ERRORS below; tf_strerror() gives its text. A task's own code is
 *   reported in the run's error list (tf_error.task_code), with its name; the run
 *   itself then returns TF_ETASK. On a process pool a task whose worker process died
 *   has the code POOL_EWORKERDIED and the message says so. Errors are collected, in the order they happened,
 *   never swallowed: tf_run_error(run, i) for i < tf_run_nerrors(run). The library
 *   never prints; give opts.log to see each error as it is recorded.
 *
 * LIMITS
 *
 *   Task names are at most TF_NAME_MAX (63) bytes; NULL names make anonymous tasks
 *   (shown as "#index", not addressable by name). Up to 2^31 tasks per graph.
 *   Running tasks are never interrupted: cancel and deadline stop what has not
 *   started, and tasks may poll tf_out_cancelled. Waiting (tf_graph_run, tf_run_wait)
 *   from inside a task of the same pool blocks that worker: keep nested runs on
 *   another pool.
 *
 *   Process pools (POOL_PROCESSES) use central dispatch (tf_dispatch,
 *   docs/taskflow.md). There, a task's ctx is read in the worker's copy of the
 *   program as it was when the pool started (put shared state in pool_shared_alloc
 *   memory). Values of any size work there too: a worker allocates them in the
 *   pool's shared arena (pool_shared_alloc works inside worker processes).
 */
/* The implementation needs POSIX 2008 (and BSD/SVID extras) from the C library even
 * under -std=c99, and that must be asked for before the first system header: here,
 * as pool.h does. Also when only the interface is included under a strict -std=cNN
 * (nothing else asked yet), since the implementation may come later in the same file;
 * it only adds the declarations a non-strict build (-std=gnuNN) has anyway. */
#if (defined(TASKFLOW_IMPLEMENTATION) || defined(__STRICT_ANSI__)) && defined(__linux__) && \
    !defined(_GNU_SOURCE) && !defined(_DEFAULT_SOURCE) && !defined(_POSIX_C_SOURCE) && \
    !defined(_XOPEN_SOURCE) && !defined(_BSD_SOURCE) && !defined(_POSIX_SOURCE)
#define _DEFAULT_SOURCE 1
#endif

#ifndef TASKFLOW_H_INCLUDED
#define TASKFLOW_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

#if defined(TASKFLOW_STATIC) && !defined(POOL_STATIC)
#define POOL_STATIC
#endif
#include "pool.h"

#ifdef TASKFLOW_STATIC
#define TF_DEF static
#else
#define TF_DEF extern
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---- errors: one list, the enum and tf_strerror() both come from it ---- */
#define TF_ERRORS(X) \
    X(TF_OK,             0, "success") \
    X(TF_EINVAL,        -1, "invalid argument (NULL graph, pool, function, run or name)") \
    X(TF_ENOMEM,        -2, "out of memory") \
    X(TF_EDUPNAME,      -3, "two tasks have the same name") \
    X(TF_EUNKNOWNDEP,   -4, "a task depends on a name no task has") \
    X(TF_EFOREIGN,      -5, "a dependency is a task of another graph, or a task whose creation failed") \
    X(TF_ECYCLE,        -6, "the dependencies form a cycle") \
    X(TF_ENAMETOOLONG,  -7, "task name longer than TF_NAME_MAX") \
    X(TF_EMISSINGINPUT, -8, "an input task has no value in the run's inputs") \
    X(TF_EUNKNOWNINPUT, -9, "the run's inputs name no input task of the graph") \
    X(TF_ENOOUTPUT,    -10, "a declared output is provided by no task") \
    X(TF_ETASK,        -11, "a task failed (see the run's errors for its name and code)") \
    X(TF_ECANCELLED,   -12, "the run was cancelled") \
    X(TF_EDEADLINE,    -13, "the run's deadline passed") \
    X(TF_ETIMEDOUT,    -14, "the wait timed out; the run is still in flight") \
    X(TF_EBUSY,        -15, "the graph has runs not yet freed") \
    X(TF_ENOTFOUND,    -16, "no task of that name") \
    X(TF_ENOTOUTPUT,   -17, "the task is not an output") \
    X(TF_ENOVALUE,     -18, "the task produced no value (failed, skipped or cancelled)") \
    X(TF_EPOOL,        -19, "the pool refused work (closed or out of memory)") \
    X(TF_EIO,          -20, "writing the export failed") \
    X(TF_EINPUTS,      -21, "the run's inputs name one input twice")

#define TF__ENUM(name, value, text) name = value,
typedef enum tf_errc { TF_ERRORS(TF__ENUM) TF__ERRC_END = -1000 } tf_errc;
#undef TF__ENUM

/* The text of a code: a TF_E* code, or "task error" for a positive one. Never NULL. */
TF_DEF const char *tf_strerror(int code);

/* ---- types ---- */
#define TF_NAME_MAX 63

typedef struct tf_graph_s tf_graph_t;  /* a graph: built once, run many times */
typedef struct tf_run_s tf_run_t;      /* one run of a graph: its values, states, errors */
typedef struct tf_out_s tf_out;        /* where a running task puts its result */
typedef struct tf_node_s *tf_task_t;   /* a task handle, valid while its graph lives */

/* A value: `size` bytes at `data` (aligned for any scalar type; data is never NULL). */
typedef struct tf_value {
    const void *data;
    size_t size;
} tf_value;

/* A task function. in[0..nin): the values of the dependencies, in the order named (an
 * input task gets one: its bytes from the run's inputs). Sets its result through
 * `out`; returns 0, or its own non-zero code (use positive codes). */
typedef int (*tf_fn)(const tf_value *in, size_t nin, tf_out *out, void *ctx);

enum tf_task_flags {
    TF_OUTPUT = 1 /* the task's value lands in the run's output map */
};

typedef enum tf_state {
    TF_PENDING = 0,  /* not reached (the run did not start: its check failed) */
    TF_DONE = 1,     /* ran and returned 0 */
    TF_FAILED = 2,   /* ran and returned non-zero (or its worker died) */
    TF_SKIPPED = 3,  /* not run: a dependency failed or was skipped */
    TF_CANCELLED = 4 /* not run: the run was stopping (cancel, deadline, stop policy) */
} tf_state;

typedef enum tf_policy {
    TF_STOP_ON_ERROR = 0,    /* default: after a failure, start no more tasks */
    TF_CONTINUE_ON_ERROR = 1 /* independent branches finish; only dependents are skipped */
} tf_policy;

/* One named input of a run: `size` bytes at `data` (copied when the run starts). */
typedef struct tf_named {
    const char *name;
    const void *data;
    size_t size;
} tf_named;

/* The input map of a run. NULL inputs mean none. */
typedef struct tf_inputs {
    const tf_named *items;
    size_t count;
} tf_inputs;

/* Optional log sink: called with each error as it is recorded (from any thread). */
typedef void (*tf_log_fn)(const char *message, void *user);
/* Sink of the exports: returns 0, or non-zero to stop (the export returns TF_EIO). */
typedef int (*tf_write_fn)(const void *data, size_t size, void *user);

/* Who hands ready tasks to the pool. */
typedef enum tf_dispatch {
    TF_DISPATCH_AUTO = 0,   /* thread pool: the worker that finishes a task releases its
                             * successors and runs one inline; process pool: central */
    TF_DISPATCH_CENTRAL = 1 /* every task goes out by pool_apply_async and its completion
                             * callback releases the successors (what a process pool needs;
                             * on a thread pool: slower, useful to test that path) */
} tf_dispatch;

/* Options of a run. Zero-initialise: every zero field means its default. NULL: defaults. */
typedef struct tf_run_opts {
    tf_policy policy;     /* TF_STOP_ON_ERROR (default) or TF_CONTINUE_ON_ERROR */
    tf_dispatch dispatch; /* TF_DISPATCH_AUTO (default) or TF_DISPATCH_CENTRAL */
    int64_t deadline_ms;  /* stop the run this long after it starts (0: no deadline) */
    size_t max_inflight;  /* tf_graph_run_batch: runs in flight at once (0: 4) */
    tf_log_fn log;        /* NULL: silent */
    void *log_user;
} tf_run_opts;

/* One recorded problem. Strings live as long as the graph or run that holds them. */
typedef struct tf_error {
    int code;             /* a TF_E* code */
    int task_code;        /* TF_ETASK: the task's own code, else 0 */
    const char *task;     /* the task concerned, or NULL */
    const char *message;  /* the whole story, e.g. "task 'add' failed with code 3" */
} tf_error;

/* What happened to one task in a run. Times are in ns from the start of the run. */
typedef struct tf_task_info {
    const char *name;     /* "#index" for anonymous tasks */
    tf_state state;
    int code;             /* TF_FAILED: the task's code, else 0 */
    int64_t start_ns;     /* TF_DONE/TF_FAILED: when it started, else 0 */
    int64_t duration_ns;  /* TF_DONE/TF_FAILED: how long it ran, else 0 */
    int worker;           /* the pool worker that ran it, -1: another thread */
} tf_task_info;

typedef struct tf_run_stats {
    size_t tasks, done, failed, skipped, cancelled;
    int64_t wall_ns;           /* from start to the last task's end */
    uint64_t values_allocated; /* values too big to live in the task record */
    uint64_t bytes_live;       /* bytes of such values still held (outputs at the end) */
    uint64_t bytes_peak;       /* the most held at once during the run */
} tf_run_stats;

/* ---- building a graph (one thread at a time per graph) ---- */

/* Creates an empty graph named `name` (NULL: "graph"; copied). NULL when out of memory. */
TF_DEF tf_graph_t *tf_graph_create(const char *name);
/* Frees the graph and its tasks. Returns TF_OK, or TF_EBUSY (and frees nothing) while a
 * run of it is not yet freed. g may be NULL (TF_OK). Never blocks. */
TF_DEF int tf_graph_destroy(tf_graph_t *g);
/* Adds an input task: it runs fn with one input, the run's bytes for `name`. */
TF_DEF tf_task_t tf_input(tf_graph_t *g, const char *name, tf_fn fn, void *ctx);
/* Adds a task depending on deps[0..ndeps): their values are its inputs in this order.
 * name NULL: anonymous. flags: TF_OUTPUT or 0. Problems are recorded in the graph (see
 * tf_graph_check); the handle returned is always usable as a dependency. */
TF_DEF tf_task_t tf_task_v(tf_graph_t *g, const char *name, tf_fn fn, void *ctx,
                           unsigned flags, const tf_task_t *deps, size_t ndeps);
/* The same with dependencies by name: they may be added later; resolved by the check
 * (TF_EUNKNOWNDEP, TF_ECYCLE). */
TF_DEF tf_task_t tf_task_named(tf_graph_t *g, const char *name, tf_fn fn, void *ctx,
                               unsigned flags, const char *const *deps, size_t ndeps);
/* tf_task(g, name, fn, ctx, flags, dep...): the same with the handles as arguments. */
#define tf_task(g, name, fn, ctx, ...) tf__task_va((g), (name), (fn), (ctx), __VA_ARGS__, (tf_task_t)0)
TF_DEF tf_task_t tf__task_va(tf_graph_t *g, const char *name, tf_fn fn, void *ctx, unsigned flags, ...);
/* Declares that the task called `name` is an output (as TF_OUTPUT does); the task may
 * be added later; if none is, the check fails with TF_ENOOUTPUT. Returns TF_OK or a code. */
TF_DEF int tf_output(tf_graph_t *g, const char *name);

/* Checks the graph: TF_OK or the code of its first problem. Every problem is then
 * listed by tf_graph_error (names of the tasks concerned, the tasks on each cycle). */
TF_DEF int tf_graph_check(tf_graph_t *g);
TF_DEF size_t tf_graph_nerrors(const tf_graph_t *g);
TF_DEF const tf_error *tf_graph_error(const tf_graph_t *g, size_t i); /* NULL past the end */
/* The number of tasks, a task's name ("#i" for anonymous ones), the graph's name. */
TF_DEF size_t tf_graph_size(const tf_graph_t *g);
TF_DEF const char *tf_graph_task_name(const tf_graph_t *g, size_t i);
TF_DEF const char *tf_graph_name(const tf_graph_t *g);

/* ---- running ---- */

/* Runs the graph on the pool with the given inputs (NULL: none) and waits for the end.
 * Returns TF_OK, a check code (nothing ran), TF_ETASK (a task failed), TF_ECANCELLED,
 * TF_EDEADLINE, TF_EPOOL, TF_EINVAL or TF_ENOMEM. *run gets the run (also
 * on failure, so its errors can be read; NULL only for TF_EINVAL/TF_ENOMEM): free it. */
TF_DEF int tf_graph_run(tf_graph_t *g, pool_t *pool, const tf_inputs *inputs, tf_run_t **run);
/* Starts a run and returns at once (opts NULL: defaults). Returns TF_OK once started, or
 * what tf_graph_run would return for a run that cannot start. Inputs are copied. */
TF_DEF int tf_run_start(tf_graph_t *g, pool_t *pool, const tf_inputs *inputs,
                        const tf_run_opts *opts, tf_run_t **run);
/* Waits up to timeout_ms (-1: forever, 0: poll) for the run to end and returns its code
 * (as tf_graph_run), or TF_ETIMEDOUT. Enforces the deadline while it waits. */
TF_DEF int tf_run_wait(tf_run_t *run, int timeout_ms);
/* Stops the run: tasks not started are cancelled, running ones finish. Any thread; never
 * blocks. Returns TF_OK (also when the run is already over: nothing changes then). */
TF_DEF int tf_run_cancel(tf_run_t *run);
/* Runs the graph once per input set, up to opts->max_inflight runs at a time, and waits
 * for all. runs[i] gets the run of sets[i] (free each). Returns TF_OK or the first
 * failing run's code. */
TF_DEF int tf_graph_run_batch(tf_graph_t *g, pool_t *pool, const tf_inputs *sets, size_t nsets,
                              const tf_run_opts *opts, tf_run_t **runs);
/* Frees the run and the values it holds; waits first if it is in flight (after
 * cancelling it). run may be NULL. */
TF_DEF void tf_run_free(tf_run_t *run);

/* ---- reading a run (after it ended) ---- */

/* The value of output task `name`: TF_OK, TF_ENOTFOUND, TF_ENOTOUTPUT, TF_ENOVALUE. The
 * data stays valid until tf_run_free. data or size may be NULL. */
TF_DEF int tf_run_output(const tf_run_t *run, const char *name, const void **data, size_t *size);
/* The output map: the i-th output task (in order of creation), its name and value. */
TF_DEF size_t tf_run_noutputs(const tf_run_t *run);
TF_DEF int tf_run_output_at(const tf_run_t *run, size_t i, const char **name,
                            const void **data, size_t *size);
/* What happened to a task: TF_OK, TF_ENOTFOUND (or TF_EINVAL for an index out of range). */
TF_DEF int tf_run_task(const tf_run_t *run, const char *name, tf_task_info *info);
TF_DEF int tf_run_task_at(const tf_run_t *run, size_t i, tf_task_info *info);
/* The errors, in the order they happened (check problems, failures, cancel, deadline). */
TF_DEF size_t tf_run_nerrors(const tf_run_t *run);
TF_DEF const tf_error *tf_run_error(const tf_run_t *run, size_t i); /* NULL past the end */
TF_DEF int tf_run_get_stats(const tf_run_t *run, tf_run_stats *out);
/* "pending", "done", "failed", "skipped", "cancelled". */
TF_DEF const char *tf_state_name(tf_state s);

/* ---- inside a task ---- */

/* Memory for the task's result: size bytes owned by the run (aligned for any scalar
 * type). A second call replaces the first. NULL when out of memory (return non-zero). */
TF_DEF void *tf_out_alloc(tf_out *out, size_t size);
/* Copies size bytes from data as the task's result. TF_OK or TF_ENOMEM. */
TF_DEF int tf_out_set(tf_out *out, const void *data, size_t size);
/* Non-zero once the run is stopping (cancel, deadline, a failure under the stop policy). */
TF_DEF int tf_out_cancelled(const tf_out *out);

/* ---- exporting ---- */

/* Graphviz DOT of the graph; with a (finished) run of it: coloured by state, with
 * durations. Writes through write(data, size, user). TF_OK, TF_EINVAL, TF_ENOMEM, TF_EIO. */
TF_DEF int tf_graph_dot(const tf_graph_t *g, const tf_run_t *run, tf_write_fn write, void *user);
TF_DEF int tf_graph_dot_file(const tf_graph_t *g, const tf_run_t *run, const char *path);
/* Chrome trace-event JSON of a finished run: one complete ("X") slice per task that ran,
 * tid = the worker. TF_OK, TF_EINVAL, TF_ENOMEM, TF_EIO. */
TF_DEF int tf_run_trace(const tf_run_t *run, tf_write_fn write, void *user);
TF_DEF int tf_run_trace_file(const tf_run_t *run, const char *path);

#ifdef __cplusplus
}
#endif

#endif /* TASKFLOW_H_INCLUDED */

/* ======================================================================== */
/* IMPLEMENTATION                                                            */
/* ======================================================================== */
#ifdef TASKFLOW_IMPLEMENTATION
#ifndef TF__IMPLEMENTATION_DONE
#define TF__IMPLEMENTATION_DONE

#ifndef POOL_IMPLEMENTATION
#define POOL_IMPLEMENTATION
#endif
#include "pool.h"

#if defined(TF_MALLOC) && defined(TF_FREE) && defined(TF_REALLOC)
/* ok: all three given */
#elif !defined(TF_MALLOC) && !defined(TF_FREE) && !defined(TF_REALLOC)
#include <stdlib.h>
#define TF_MALLOC(sz) malloc(sz)
#define TF_REALLOC(p, sz) realloc(p, sz)
#define TF_FREE(p) free(p)
#else
#error "taskflow.h: define all of TF_MALLOC, TF_REALLOC and TF_FREE, or none"
#endif

#ifndef TF_ASSERT
#include <assert.h>
#define TF_ASSERT(x) assert(x)
#endif

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* >>overview of the implementation
 *
 * Graph: tasks in flat arrays (tf__task), names in one string arena with an
 * open-addressing hash index, dependencies in one flat array. Handles (tf_task_t)
 * point into fixed chunks of tf_node_s, so they stay valid as the graph grows.
 * Before the first run after a change the graph is "frozen": dependencies resolved,
 * successor lists built (CSR, with a virtual SOURCE node n whose successors are the
 * roots), the check run; the frozen arrays are read-only while runs exist.
 *
 * Run: one 64-byte tf__rt record per task (in a process pool's shared arena, else
 * the graph's spare array or TF_MALLOC): an atomic count of unfinished dependencies,
 * an atomic poison mask, the state, times and the value. A task becomes ready when
 * its count drops to zero; whoever drops it runs it (thread pool), sends it to the
 * pool (central dispatch), or marks it skipped/cancelled, and then releases its
 * successors. Every task reaches a final state exactly once, also when nothing runs,
 * and `remaining` counts them down (each worker loop in one batch at its end); the
 * thread that takes it to zero ends the run.
 *
 * Lifetime rule: a task not yet final keeps the run (and its graph) alive, and so do
 * the tasks a loop settled until it counts them. After the count that ends the run,
 * the run may be freed by a waiter at once: nothing of it is touched any more.
 *
 * Lock order: graph lock (g->lock) before a run's lock (r->lock); neither is held
 * while a task function or the log callback runs, nor across a pool call.
 *
 * Who touches what:
 *   tf_graph_s: building fields are single-writer (the building thread) and frozen
 *     while live_runs > 0; live_runs (also read atomically), the freeze, busy_added
 *     and the spare array are under g->lock.
 *   tf__rt.pending / poison: atomics (shmq__* shim). pending doubles as the count of
 *     consumers left once a task with a heap value is final.
 *   tf__rt.state, code, value, times: written by the one thread (or worker process)
 *     that runs or settles the task, before its successors are released (the acquire
 *     and acq_rel operations on their pending counts order them).
 *   tf__hdr (stop, byte counters), tf_run_s.first_rc and remaining: atomics.
 *   tf_run_s.errs, finished, the completion queue and draining: r->lock.
 */

#define TF__SOURCE_ROWS 2       /* succ_off has n + 2 entries: row n is SOURCE */
#define TF__INLINE 16           /* values up to this many bytes live in the record */
#define TF__GRAIN 64            /* successor ranges wider than this are split */
#define TF__LOCAL 160           /* a worker's local ready stack before it spills */
#define TF__CHUNK 1024          /* handles per chunk */
#define TF__NONAME 0xffffffffu
#define TF__F_INPUT 0x100u
#define TF__POISON_FAILED 1u
#define TF__POISON_CANCELLED 2u

/* >>errors */
TF_DEF const char *tf_strerror(int code)
{
#define TF__STR(name, value, text) case value: return text;
    switch (code) {
        TF_ERRORS(TF__STR)
    default: break;
    }
#undef TF__STR
    return code > 0 ? "task error" : "unknown error";
}

/* >>util */
static int64_t tf__now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Task times come from the CPU's counter (rdtsc; the generic timer on arm64), which
 * costs a third of a clock_gettime: a run records raw ticks and maps them to ns when
 * they are read, from the clock and the counter taken together at its start and end.
 * Elsewhere, ticks are ns. The counter runs at a constant rate and is shared by every
 * core and process of the machine on the CPUs Linux trusts it on; were it not, a
 * duration would only be off (the mapping clamps it at zero), never a run. */
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
static int64_t tf__ticks(void)
{
    uint32_t lo, hi;
    __asm__ __volatile__("rdtsc" : "=a"(lo), "=d"(hi));
    return (int64_t)(((uint64_t)hi << 32) | lo);
}
#define TF__TICKS 1
#elif defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
static int64_t tf__ticks(void)
{
    uint64_t v;
    __asm__ __volatile__("mrs %0, cntvct_el0" : "=r"(v));
    return (int64_t)v;
}
#define TF__TICKS 1
#else
#define tf__ticks() tf__now()
#define TF__TICKS 0
#endif

static char *tf__strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = (char *)TF_MALLOC(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* grows the array *pp (of *cap elements of `size` bytes) to hold `need`; 0 or -1.
 * The pointer is read and written with memcpy: pp points at a pointer of any type. */
static int tf__grow(void *pp, size_t *cap, size_t need, size_t size)
{
    size_t ncap;
    void *p, *np;
    if (need <= *cap) return 0;
    ncap = *cap ? *cap : 16;
    while (ncap < need) ncap *= 2;
    if (ncap > ((size_t)-1) / size) return -1;
    memcpy(&p, pp, sizeof p);
    np = TF_REALLOC(p, ncap * size);
    if (!np) return -1;
    memcpy(pp, &np, sizeof np);
    *cap = ncap;
    return 0;
}

static uint32_t tf__hash(const char *s)
{
    uint32_t h = 2166136261u;
    while (*s) { h ^= (unsigned char)*s++; h *= 16777619u; }
    return h;
}

/* A growable text buffer for messages and exports. */
typedef struct tf__buf {
    char *p;
    size_t len, cap;
    int oom;
} tf__buf;

static void tf__bprintf(tf__buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;
    if (b->oom) return;
    for (;;) {
        size_t room = b->cap - b->len;
        va_start(ap, fmt);
        n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? room : 0, fmt, ap);
        va_end(ap);
        if (n < 0) { b->oom = 1; return; }
        if ((size_t)n < room) { b->len += (size_t)n; return; }
        if (tf__grow(&b->p, &b->cap, b->len + (size_t)n + 1, 1)) { b->oom = 1; return; }
    }
}

/* appends s escaped for a JSON or DOT double-quoted string */
static void tf__bquote(tf__buf *b, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') tf__bprintf(b, "\\%c", c);
        else if (c == '\n') tf__bprintf(b, "\\n");
        else if (c < 0x20) tf__bprintf(b, "\\u%04x", c);
        else tf__bprintf(b, "%c", c);
    }
}

/* >>error lists */
typedef struct tf__elist {
    tf_error *v;
    size_t n, cap;
} tf__elist;

static int tf__eadd(tf__elist *l, int code, int task_code, const char *task, const char *msg)
{
    tf_error *e;
    if (tf__grow(&l->v, &l->cap, l->n + 1, sizeof *l->v)) return -1;
    e = &l->v[l->n];
    e->code = code;
    e->task_code = task_code;
    e->task = task ? tf__strdup(task) : NULL;
    e->message = tf__strdup(msg);
    if ((task && !e->task) || !e->message) {
        TF_FREE((void *)e->task);
        TF_FREE((void *)e->message);
        return -1;
    }
    l->n++;
    return 0;
}

static void tf__eclear(tf__elist *l)
{
    size_t i;
    for (i = 0; i < l->n; i++) {
        TF_FREE((void *)l->v[i].task);
        TF_FREE((void *)l->v[i].message);
    }
    l->n = 0;
}

static void tf__efree(tf__elist *l)
{
    tf__eclear(l);
    TF_FREE(l->v);
    l->v = NULL;
    l->cap = 0;
}

/* >>graph */
struct tf_node_s {
    tf_graph_t *graph;
    uint32_t index;          /* TF__NONAME: the graph's poison node (a failed creation) */
};

typedef struct tf__task {
    tf_fn fn;
    void *ctx;
    uint32_t name;           /* offset in g->names, TF__NONAME: anonymous */
    uint32_t dep_begin;      /* in g->deps */
    uint32_t ndeps;
    uint32_t flags;          /* TF_OUTPUT, TF__F_INPUT */
} tf__task;

struct tf_graph_s {
    pthread_mutex_t lock;    /* live_runs, freezing, the check results */
    char *title;
    /* building state: single writer, read-only while live_runs > 0 */
    tf__task *tasks;
    size_t ntasks, tcap;
    int64_t *deps;           /* >= 0: task index; < 0: -(name offset + 1), by name */
    size_t ndeps, dcap;
    char *names;             /* NUL-terminated names, back to back */
    size_t nlen, ncap;
    uint32_t *hash;          /* open addressing: task index + 1, 0 = empty */
    size_t hcap;
    struct tf_node_s **chunks;
    size_t nchunks, chcap;
    uint32_t *outdecl;       /* tf_output names (offsets in names) */
    size_t noutdecl, odcap;
    struct tf_node_s poison;
    tf__elist berr;          /* problems recorded while building */
    uint64_t version;        /* bumped by every building call */
    /* frozen state: written under lock when version != frozen_version */
    uint64_t frozen_version;
    int frozen;
    int check_rc;
    tf__elist cerr;          /* problems found by the last check */
    uint32_t *fdep;          /* resolved dependencies, CSR by fdep_off */
    uint32_t *fdep_off;      /* n + 1 */
    uint32_t *succ;          /* successors, CSR by succ_off; row n: the roots */
    uint32_t *succ_off;      /* n + 2 */
    uint32_t *input_slot;    /* per task: its input slot, or TF__NONAME */
    uint32_t *input_task;    /* per input slot: the task */
    size_t ninputs;
    uint32_t *outputs;       /* output tasks in creation order */
    size_t noutputs;
    char (*anon)[16];        /* "#index" of anonymous tasks, built at freeze */
    size_t live_runs;        /* runs not yet freed: changed under lock, read atomically */
    int busy_added;          /* lock: a building call came while runs existed */
    void *spare;             /* lock: a run record array kept for the next run */
    size_t spare_n;          /* lock: how many records it holds */
};

static const char *tf__tname(const tf_graph_t *g, size_t i)
{
    if (g->tasks[i].name != TF__NONAME) return g->names + g->tasks[i].name;
    return g->anon ? g->anon[i] : "#?";
}

TF_DEF tf_graph_t *tf_graph_create(const char *name)
{
    tf_graph_t *g = (tf_graph_t *)TF_MALLOC(sizeof *g);
    if (!g) return NULL;
    memset(g, 0, sizeof *g);
    g->title = tf__strdup(name ? name : "graph");
    if (!g->title || pthread_mutex_init(&g->lock, NULL) != 0) {
        TF_FREE(g->title);
        TF_FREE(g);
        return NULL;
    }
    g->poison.graph = g;
    g->poison.index = TF__NONAME;
    return g;
}

static void tf__unfreeze(tf_graph_t *g)
{
    TF_FREE(g->fdep); TF_FREE(g->fdep_off); TF_FREE(g->succ); TF_FREE(g->succ_off);
    TF_FREE(g->input_slot); TF_FREE(g->input_task); TF_FREE(g->outputs); TF_FREE(g->anon);
    g->fdep = g->fdep_off = g->succ = g->succ_off = NULL;
    g->input_slot = g->input_task = g->outputs = NULL;
    g->anon = NULL;
    g->ninputs = g->noutputs = 0;
    g->frozen = 0;
    tf__eclear(&g->cerr);
}

TF_DEF int tf_graph_destroy(tf_graph_t *g)
{
    size_t i;
    if (!g) return TF_OK;
    pthread_mutex_lock(&g->lock);
    if (g->live_runs) {
        pthread_mutex_unlock(&g->lock);
        return TF_EBUSY;
    }
    pthread_mutex_unlock(&g->lock);
    tf__unfreeze(g);
    tf__efree(&g->cerr);
    tf__efree(&g->berr);
    for (i = 0; i < g->nchunks; i++) TF_FREE(g->chunks[i]);
    TF_FREE(g->chunks); TF_FREE(g->tasks); TF_FREE(g->deps); TF_FREE(g->names);
    TF_FREE(g->hash); TF_FREE(g->outdecl); TF_FREE(g->title); TF_FREE(g->spare);
    pthread_mutex_destroy(&g->lock);
    TF_FREE(g);
    return TF_OK;
}

TF_DEF size_t tf_graph_size(const tf_graph_t *g) { return g ? g->ntasks : 0; }
TF_DEF const char *tf_graph_name(const tf_graph_t *g) { return g ? g->title : NULL; }
TF_DEF const char *tf_graph_task_name(const tf_graph_t *g, size_t i)
{
    if (!g || i >= g->ntasks) return NULL;
    if (g->tasks[i].name == TF__NONAME && (!g->frozen || g->frozen_version != g->version))
        return "#?";  /* anonymous names are built by the check */
    return tf__tname(g, i);
}

/* records a building problem; formats "task 'x': ..." */
static void tf__berr(tf_graph_t *g, int code, const char *task, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (tf__eadd(&g->berr, code, 0, task, msg) != 0) {
        /* keep at least the code: an error list that cannot grow still fails the check */
        g->check_rc = code;
    }
}

static int64_t tf__hfind(const tf_graph_t *g, const char *name)
{
    size_t mask, i;
    if (!g->hcap) return -1;
    mask = g->hcap - 1;
    for (i = tf__hash(name) & mask;; i = (i + 1) & mask) {
        uint32_t v = g->hash[i];
        if (!v) return -1;
        if (strcmp(g->names + g->tasks[v - 1].name, name) == 0) return (int64_t)(v - 1);
    }
}

static int tf__hinsert(tf_graph_t *g, uint32_t index)
{
    size_t mask, i;
    if ((g->ntasks + 1) * 2 > g->hcap) {
        size_t ncap = g->hcap ? g->hcap * 2 : 64, k;
        uint32_t *nh = (uint32_t *)TF_MALLOC(ncap * sizeof *nh);
        if (!nh) return -1;
        memset(nh, 0, ncap * sizeof *nh);
        for (k = 0; k < g->hcap; k++) {
            uint32_t v = g->hash[k];
            if (!v) continue;
            for (i = tf__hash(g->names + g->tasks[v - 1].name) & (ncap - 1); nh[i]; i = (i + 1) & (ncap - 1)) {}
            nh[i] = v;
        }
        TF_FREE(g->hash);
        g->hash = nh;
        g->hcap = ncap;
    }
    mask = g->hcap - 1;
    for (i = tf__hash(g->names + g->tasks[index].name) & mask; g->hash[i]; i = (i + 1) & mask) {}
    g->hash[i] = index + 1;
    return 0;
}

static int64_t tf__addname(tf_graph_t *g, const char *name, size_t len)
{
    size_t off = g->nlen;
    if (off + len + 1 > 0xfffffffeu) return -1;
    if (tf__grow(&g->names, &g->ncap, off + len + 1, 1)) return -1;
    memcpy(g->names + off, name, len + 1);
    g->nlen += len + 1;
    return (int64_t)off;
}

/* The common part of adding a task: name, record, handle. Dependencies are added by
 * the caller into g->deps right after (dep_begin is set here). */
static tf_task_t tf__add(tf_graph_t *g, const char *name, tf_fn fn, void *ctx, unsigned flags)
{
    tf__task *t;
    struct tf_node_s *node;
    size_t len = 0, idx;
    int64_t off = TF__NONAME;
    const char *shown = name ? name : "(anonymous)";

    if (shmq__load(&g->live_runs, SHMQ__ACQUIRE)) {
        /* the frozen arrays are in use: record the problem, change nothing; the next
         * check with no run in flight reports it */
        pthread_mutex_lock(&g->lock);
        tf__berr(g, TF_EBUSY, name, "task '%s': added while runs of the graph existed", shown);
        g->busy_added = 1;
        pthread_mutex_unlock(&g->lock);
        return &g->poison;
    }
    g->version++;
    if (!fn) {
        tf__berr(g, TF_EINVAL, name, "task '%s': NULL function", shown);
        return &g->poison;
    }
    if (name) {
        len = strlen(name);
        if (len > TF_NAME_MAX) {
            tf__berr(g, TF_ENAMETOOLONG, NULL, "task '%.40s...': name longer than %d bytes",
                     name, TF_NAME_MAX);
            return &g->poison;
        }
    }
    if (g->ntasks >= 0x7fffffffu) {
        tf__berr(g, TF_ENOMEM, name, "task '%s': too many tasks", shown);
        return &g->poison;
    }
    idx = g->ntasks;
    if (tf__grow(&g->tasks, &g->tcap, idx + 1, sizeof *g->tasks)) goto oom;
    if (idx / TF__CHUNK >= g->nchunks) {
        struct tf_node_s *c;
        if (tf__grow(&g->chunks, &g->chcap, g->nchunks + 1, sizeof *g->chunks)) goto oom;
        c = (struct tf_node_s *)TF_MALLOC(TF__CHUNK * sizeof *c);
        if (!c) goto oom;
        g->chunks[g->nchunks++] = c;
    }
    if (name && (off = tf__addname(g, name, len)) < 0) goto oom;
    t = &g->tasks[idx];
    t->fn = fn;
    t->ctx = ctx;
    t->name = (uint32_t)off;
    t->dep_begin = (uint32_t)g->ndeps;
    t->ndeps = 0;
    t->flags = flags & (TF_OUTPUT | TF__F_INPUT);
    g->ntasks++;
    if (name) {
        int64_t prev = tf__hfind(g, name);
        if (prev >= 0)
            tf__berr(g, TF_EDUPNAME, name, "task '%s': duplicate name (task #%lld has it)",
                     name, (long long)prev);
        else if (tf__hinsert(g, (uint32_t)idx) != 0)
            tf__berr(g, TF_ENOMEM, name, "task '%s': out of memory", name);
    }
    node = &g->chunks[idx / TF__CHUNK][idx % TF__CHUNK];
    node->graph = g;
    node->index = (uint32_t)idx;
    return node;
oom:
    tf__berr(g, TF_ENOMEM, name, "task '%s': out of memory", shown);
    return &g->poison;
}

static void tf__adddep(tf_graph_t *g, tf_task_t self, int64_t dep)
{
    if (self == &g->poison) return;
    if (g->ndeps >= 0x7fffffffu) { /* offsets are 32-bit */
        tf__berr(g, TF_ENOMEM, NULL, "too many dependencies in one graph");
        return;
    }
    if (tf__grow(&g->deps, &g->dcap, g->ndeps + 1, sizeof *g->deps)) {
        tf__berr(g, TF_ENOMEM, NULL, "out of memory adding a dependency");
        return;
    }
    g->deps[g->ndeps++] = dep;
    g->tasks[self->index].ndeps++;
}

/* checks one handle given as a dependency of task `name`; -1 if unusable */
static int64_t tf__handle(tf_graph_t *g, const char *name, tf_task_t d, size_t k)
{
    const char *shown = name ? name : "(anonymous)";
    if (!d) {
        tf__berr(g, TF_EINVAL, name, "task '%s': dependency %u is NULL", shown, (unsigned)k);
        return -1;
    }
    if (d->graph != g) {
        tf__berr(g, TF_EFOREIGN, name, "task '%s': dependency %u is a task of another graph ('%s')",
                 shown, (unsigned)k, d->graph ? d->graph->title : "?");
        return -1;
    }
    if (d->index == TF__NONAME) {
        tf__berr(g, TF_EFOREIGN, name, "task '%s': dependency %u is a task whose creation failed",
                 shown, (unsigned)k);
        return -1;
    }
    return (int64_t)d->index;
}

TF_DEF tf_task_t tf_task_v(tf_graph_t *g, const char *name, tf_fn fn, void *ctx,
                           unsigned flags, const tf_task_t *deps, size_t ndeps)
{
    tf_task_t self;
    size_t k;
    if (!g) return NULL;
    if (ndeps && !deps) {
        tf__berr(g, TF_EINVAL, name, "task '%s': NULL dependency array", name ? name : "(anonymous)");
        return &g->poison;
    }
    self = tf__add(g, name, fn, ctx, flags & TF_OUTPUT);
    for (k = 0; k < ndeps; k++) {
        int64_t d = tf__handle(g, name, deps[k], k);
        if (d < 0) {
            /* the task cannot run with a dependency missing: poison it (check fails) */
            continue;
        }
        tf__adddep(g, self, d);
    }
    return self;
}

TF_DEF tf_task_t tf__task_va(tf_graph_t *g, const char *name, tf_fn fn, void *ctx, unsigned flags, ...)
{
    tf_task_t self, d;
    va_list ap;
    size_t k = 0;
    if (!g) return NULL;
    self = tf__add(g, name, fn, ctx, flags & TF_OUTPUT);
    va_start(ap, flags);
    while ((d = va_arg(ap, tf_task_t)) != NULL) {
        int64_t i = tf__handle(g, name, d, k++);
        if (i >= 0) tf__adddep(g, self, i);
    }
    va_end(ap);
    return self;
}

TF_DEF tf_task_t tf_task_named(tf_graph_t *g, const char *name, tf_fn fn, void *ctx,
                               unsigned flags, const char *const *deps, size_t ndeps)
{
    tf_task_t self;
    size_t k;
    if (!g) return NULL;
    if (ndeps && !deps) {
        tf__berr(g, TF_EINVAL, name, "task '%s': NULL dependency array", name ? name : "(anonymous)");
        return &g->poison;
    }
    self = tf__add(g, name, fn, ctx, flags & TF_OUTPUT);
    if (self == &g->poison) return self;
    for (k = 0; k < ndeps; k++) {
        int64_t off;
        if (!deps[k]) {
            tf__berr(g, TF_EINVAL, name, "task '%s': dependency %u is NULL",
                     name ? name : "(anonymous)", (unsigned)k);
            continue;
        }
        off = tf__addname(g, deps[k], strlen(deps[k]));
        if (off < 0) {
            tf__berr(g, TF_ENOMEM, name, "out of memory adding a dependency");
            continue;
        }
        tf__adddep(g, self, -(off + 1));
    }
    return self;
}

TF_DEF tf_task_t tf_input(tf_graph_t *g, const char *name, tf_fn fn, void *ctx)
{
    if (!g) return NULL;
    if (!name) {
        tf__berr(g, TF_EINVAL, NULL, "input task with a NULL name (inputs are found by name)");
        return &g->poison;
    }
    return tf__add(g, name, fn, ctx, TF__F_INPUT);
}

TF_DEF int tf_output(tf_graph_t *g, const char *name)
{
    int64_t off;
    if (!g || !name) return TF_EINVAL;
    if (shmq__load(&g->live_runs, SHMQ__ACQUIRE)) return TF_EBUSY;
    g->version++;
    if (tf__grow(&g->outdecl, &g->odcap, g->noutdecl + 1, sizeof *g->outdecl))
        return TF_ENOMEM;
    off = tf__addname(g, name, strlen(name));
    if (off < 0) return TF_ENOMEM;
    g->outdecl[g->noutdecl++] = (uint32_t)off;
    return TF_OK;
}

static void tf__prepare_spare(tf_graph_t *g);

/* >>check: resolve names, build successor lists, find cycles */
static void tf__cerr(tf_graph_t *g, int code, const char *task, const char *msg)
{
    if (tf__eadd(&g->cerr, code, 0, task, msg) != 0 && !g->check_rc) g->check_rc = TF_ENOMEM;
    if (!g->check_rc) g->check_rc = code;
}

/* reports the cycle reached by walking unfinished dependencies back from `start` */
static void tf__report_cycle(tf_graph_t *g, const uint32_t *indeg, uint32_t *mark, uint32_t start,
                             uint32_t walk_id)
{
    uint32_t v = start, first, k;
    tf__buf b = {NULL, 0, 0, 0};
    /* every unfinished task has an unfinished dependency: follow them until one repeats */
    while (mark[v] == 0) {
        uint32_t next = TF__NONAME;
        mark[v] = walk_id;
        for (k = g->fdep_off[v]; k < g->fdep_off[v + 1]; k++)
            if (indeg[g->fdep[k]] > 0) { next = g->fdep[k]; break; }
        TF_ASSERT(next != TF__NONAME);
        if (next == TF__NONAME) return;
        v = next;
    }
    if (mark[v] != walk_id) return; /* ran into a cycle reported before */
    /* v is on a new cycle: list it in dependency order (dep -> ... -> v) */
    first = v;
    tf__bprintf(&b, "cycle: ");
    {
        /* collect the cycle backwards, print it forwards */
        size_t n = 0, cap = 0, i;
        uint32_t *cyc = NULL;
        do {
            if (tf__grow(&cyc, &cap, n + 1, sizeof *cyc)) { b.oom = 1; break; }
            cyc[n++] = v;
            mark[v] = 0xfffffffeu; /* reported */
            for (k = g->fdep_off[v]; k < g->fdep_off[v + 1]; k++)
                if (indeg[g->fdep[k]] > 0 && (mark[g->fdep[k]] == walk_id || g->fdep[k] == first)) {
                    v = g->fdep[k];
                    break;
                }
        } while (v != first && !b.oom);
        for (i = n; i-- > 0;) tf__bprintf(&b, "'%s' -> ", tf__tname(g, cyc[i]));
        tf__bprintf(&b, "'%s'", tf__tname(g, cyc[n ? n - 1 : 0]));
        TF_FREE(cyc);
    }
    tf__cerr(g, TF_ECYCLE, tf__tname(g, first), b.oom ? "cycle (out of memory naming it)" : b.p);
    TF_FREE(b.p);
}

/* Freezes the graph if it changed. Called under g->lock; `own_runs` is how many of
 * the live runs are the caller's (a re-freeze is only safe when no other run exists). */
static int tf__freeze(tf_graph_t *g, size_t own_runs)
{
    size_t n = g->ntasks, i, k, nedges = g->ndeps, nroots = 0, ndone = 0;
    uint32_t *indeg = NULL, *queue = NULL, *fill = NULL, *mark = NULL;
    char msg[256];

    if (g->busy_added && g->live_runs <= own_runs) {
        g->busy_added = 0;
        g->version++;
    }
    if (g->frozen && g->frozen_version == g->version) return g->check_rc;
    tf__unfreeze(g);
    g->check_rc = g->berr.n ? g->berr.v[0].code : TF_OK;

    g->fdep = (uint32_t *)TF_MALLOC((nedges + 1) * sizeof *g->fdep);
    g->fdep_off = (uint32_t *)TF_MALLOC((n + 1) * sizeof *g->fdep_off);
    g->succ_off = (uint32_t *)TF_MALLOC((n + TF__SOURCE_ROWS) * sizeof *g->succ_off);
    g->input_slot = (uint32_t *)TF_MALLOC((n + 1) * sizeof *g->input_slot);
    g->anon = (char(*)[16])TF_MALLOC((n + 1) * sizeof *g->anon);
    indeg = (uint32_t *)TF_MALLOC((n + 1) * sizeof *indeg);
    fill = (uint32_t *)TF_MALLOC((n + 1) * sizeof *fill);
    if (!g->fdep || !g->fdep_off || !g->succ_off || !g->input_slot || !g->anon || !indeg || !fill)
        goto oom;
    for (i = 0; i < n; i++) { /* "#index" for anonymous tasks (no snprintf: 100k of them) */
        char tmp[12], *d = g->anon[i];
        size_t v = i, len = 0;
        if (g->tasks[i].name != TF__NONAME) { d[0] = 0; continue; }
        do { tmp[len++] = (char)('0' + v % 10); v /= 10; } while (v);
        *d++ = '#';
        while (len) *d++ = tmp[--len];
        *d = 0;
    }

    /* resolve dependencies (by name ones now); count successors */
    memset(g->succ_off, 0, (n + TF__SOURCE_ROWS) * sizeof *g->succ_off);
    g->fdep_off[0] = 0;
    for (i = 0, k = 0; i < n; i++) {
        const tf__task *t = &g->tasks[i];
        uint32_t j;
        for (j = 0; j < t->ndeps; j++) {
            int64_t d = g->deps[t->dep_begin + j];
            if (d < 0) {
                const char *dname = g->names + (size_t)(-d - 1);
                d = tf__hfind(g, dname);
                if (d < 0) {
                    snprintf(msg, sizeof msg, "task '%s': unknown dependency '%s'", tf__tname(g, i), dname);
                    tf__cerr(g, TF_EUNKNOWNDEP, tf__tname(g, i), msg);
                    continue;
                }
            }
            g->fdep[k++] = (uint32_t)d;
            g->succ_off[d + 1]++;
        }
        g->fdep_off[i + 1] = (uint32_t)k;
        if (g->fdep_off[i + 1] == g->fdep_off[i]) nroots++;
    }
    nedges = k;
    g->succ_off[n + 1] = (uint32_t)nroots; /* row n: SOURCE -> roots */
    for (i = 0; i < n + 1; i++) g->succ_off[i + 1] += g->succ_off[i];
    g->succ = (uint32_t *)TF_MALLOC((nedges + nroots + 1) * sizeof *g->succ);
    if (!g->succ) goto oom;
    memcpy(fill, g->succ_off, (n + 1) * sizeof *fill);
    for (i = 0; i < n; i++) {
        if (g->fdep_off[i + 1] == g->fdep_off[i]) g->succ[fill[n]++] = (uint32_t)i;
        for (k = g->fdep_off[i]; k < g->fdep_off[i + 1]; k++) g->succ[fill[g->fdep[k]]++] = (uint32_t)i;
    }

    /* inputs and outputs */
    for (i = 0; i < n; i++) {
        g->input_slot[i] = TF__NONAME;
        if (g->tasks[i].flags & TF__F_INPUT) g->input_slot[i] = (uint32_t)g->ninputs++;
    }
    for (i = 0; i < g->noutdecl; i++) {
        const char *oname = g->names + g->outdecl[i];
        int64_t t = tf__hfind(g, oname);
        if (t < 0) {
            snprintf(msg, sizeof msg, "output '%s': no task provides it", oname);
            tf__cerr(g, TF_ENOOUTPUT, oname, msg);
        } else {
            g->tasks[t].flags |= TF_OUTPUT;
        }
    }
    g->input_task = (uint32_t *)TF_MALLOC((g->ninputs + 1) * sizeof *g->input_task);
    g->outputs = (uint32_t *)TF_MALLOC((n + 1) * sizeof *g->outputs);
    if (!g->input_task || !g->outputs) goto oom;
    for (i = 0; i < n; i++) {
        if (g->input_slot[i] != TF__NONAME) g->input_task[g->input_slot[i]] = (uint32_t)i;
        if (g->tasks[i].flags & TF_OUTPUT) g->outputs[g->noutputs++] = (uint32_t)i;
    }

    /* cycles: Kahn's algorithm; what is left lies on or after a cycle */
    queue = fill; /* reuse */
    for (i = 0; i < n; i++) indeg[i] = g->fdep_off[i + 1] - g->fdep_off[i];
    {
        size_t head = 0, tail = 0;
        for (i = 0; i < n; i++) if (!indeg[i]) queue[tail++] = (uint32_t)i;
        while (head < tail) {
            uint32_t v = queue[head++];
            ndone++;
            for (k = g->succ_off[v]; k < g->succ_off[v + 1]; k++)
                if (--indeg[g->succ[k]] == 0) queue[tail++] = g->succ[k];
        }
    }
    if (ndone < n) {
        uint32_t walk = 1;
        mark = (uint32_t *)TF_MALLOC(n * sizeof *mark);
        if (!mark) goto oom;
        memset(mark, 0, n * sizeof *mark);
        for (i = 0; i < n; i++)
            if (indeg[i] > 0 && mark[i] == 0) tf__report_cycle(g, indeg, mark, (uint32_t)i, walk++);
    }
    TF_FREE(mark);
    TF_FREE(indeg);
    TF_FREE(fill);
    g->frozen = 1;
    g->frozen_version = g->version;
    if (g->check_rc == TF_OK) tf__prepare_spare(g);
    return g->check_rc;
oom:
    TF_FREE(mark);
    TF_FREE(indeg);
    TF_FREE(fill);
    tf__unfreeze(g);
    return TF_ENOMEM;
}

TF_DEF int tf_graph_check(tf_graph_t *g)
{
    int rc;
    if (!g) return TF_EINVAL;
    pthread_mutex_lock(&g->lock);
    rc = tf__freeze(g, 0);
    pthread_mutex_unlock(&g->lock);
    return rc;
}

TF_DEF size_t tf_graph_nerrors(const tf_graph_t *g)
{
    return g ? g->berr.n + g->cerr.n : 0;
}

TF_DEF const tf_error *tf_graph_error(const tf_graph_t *g, size_t i)
{
    if (!g) return NULL;
    if (i < g->berr.n) return &g->berr.v[i];
    i -= g->berr.n;
    return i < g->cerr.n ? &g->cerr.v[i] : NULL;
}

/* >>run */

/* A value: `size` bytes in `u` (small values) or at u.p (pool_shared_alloc memory). */
typedef struct tf__val {
    uint64_t size;
    uint32_t flags;          /* TF__V_HEAP: the bytes are at u.p; TF__V_GIVEN: inputs only */
    uint32_t pad_;
    union { unsigned char b[TF__INLINE]; long double ld; void *p; uint64_t w; } u;
} tf__val;

#define TF__V_HEAP 1u
#define TF__V_GIVEN 2u

/* Per-task run record: one cache line. Lives in pool_shared_alloc memory when the
 * pool is a process pool (its shared arena), so a worker process can fill in its own
 * task's value, state and times. */
typedef struct tf__rt {
    uint32_t pending;        /* atomic: dependencies not yet final (+1 for SOURCE on roots);
                              * once the task is settled with a heap value: its consumers
                              * not yet final (the last one frees the value) */
    uint32_t poison;         /* atomic: TF__POISON_* seen from dependencies */
    uint8_t state;           /* final state; finalizing thread, before release */
    uint8_t alloc_failed;    /* tf_out_alloc returned NULL (written by the task's runner) */
    int16_t worker;          /* the worker that ran it, -1: another thread */
    int32_t code;            /* the task's code (TF_FAILED) */
    int64_t t0, t1;          /* run-relative ns */
    tf__val val;             /* the task's value */
} tf__rt;

/* The part of a run that a worker process touches besides the records: in the shared
 * arena for a process pool, inside the run for a thread pool. */
typedef struct tf__hdr {
    int stop;                /* atomic: 0, or why the run stops (a TF_E* code) */
    int pad_;
    uint64_t nalloc, bytes_live, bytes_peak; /* atomic */
    pool_t *pool;            /* for pool_shared_alloc from a task */
} tf__hdr;

struct tf_out_s {
    tf__hdr *hdr;
    tf__rt *rec;
};

/* central dispatch: what a completion callback needs */
typedef struct tf__cbarg {
    tf_run_t *r;
    uint32_t t;
} tf__cbarg;

/* sets the records up for a run: the dependency counts, nothing final yet */
static void tf__init_records(const tf_graph_t *g, tf__rt *rt)
{
    size_t i;
    for (i = 0; i < g->ntasks; i++, rt++) {
        uint32_t nd = g->fdep_off[i + 1] - g->fdep_off[i];
        rt->pending = nd ? nd : 1;
        rt->poison = 0;
        rt->state = TF_PENDING;
        rt->alloc_failed = 0;
        rt->val.size = 0;
        rt->val.flags = 0;
    }
}

/* At the end of a successful check (under g->lock): the record array of the first run
 * on a thread pool, allocated and written now, so that, as in other flow graphs, the
 * memory of the nodes' run state is set up while building, not while running. (A
 * plain memset would not do: compilers turn malloc + memset(0) into calloc, which
 * leaves fresh pages untouched.) */
static void tf__prepare_spare(tf_graph_t *g)
{
    size_t n = g->ntasks;
    if (n == 0 || (g->spare && g->spare_n >= n)) return;
    TF_FREE(g->spare);
    g->spare_n = 0;
    g->spare = TF_MALLOC(n * sizeof(tf__rt));
    if (!g->spare) return; /* the run allocates it then */
    tf__init_records(g, (tf__rt *)g->spare);
    g->spare_n = n;
}

struct tf_run_s {
    tf_graph_t *g;           /* set at creation; the graph outlives the run (live_runs) */
    pool_t *pool;
    size_t n;
    tf__rt *rt;              /* n records */
    tf__val *inval;          /* per input slot: the run's input bytes */
    int shared;              /* rt, inval and hdr come from pool_shared_alloc (process pool) */
    int central;             /* ready tasks go out by pool_apply_async; completions come back
                              * through callbacks that release the successors (process pool) */
    int policy;
    tf__hdr *hdr;            /* &hdr_local, or in the shared arena */
    tf__hdr hdr_local;
    int64_t t_start;         /* tf__now() at start */
    int64_t tick0;           /* tf__ticks() at start: task times are ticks from here */
    int64_t tick_end;        /* tf__ticks() at the end (with t_end: the tick -> ns map) */
    int64_t deadline;        /* absolute tf__now() ns, 0: none */
    int first_rc;            /* atomic: the first error code (the run's result) */
    size_t remaining;        /* atomic: tasks not yet final, or final but not yet counted */
    tf__cbarg *cbarg;        /* central: per task */
    uint32_t *cq;            /* central: completed tasks to process (lock), n slots */
    size_t cq_head, cq_tail; /* central: lock */
    int draining;            /* central: a thread is processing completions (lock) */
    int64_t t_end;           /* written by the finishing thread before `finished` */
    tf_log_fn log;
    void *log_user;
    pthread_mutex_t lock;    /* errs, finished, the completion queue */
    pthread_cond_t cond;     /* signalled when finished */
    int finished;            /* lock */
    int started;             /* tasks were released (else states stay TF_PENDING) */
    tf__elist errs;          /* lock */
};

static void *tf__vdata(tf__val *v) { return (v->flags & TF__V_HEAP) ? v->u.p : (void *)v->u.b; }

/* records a run error (and tells the log); sets the run's result if it is the first */
static void tf__rerr(tf_run_t *r, int code, int task_code, const char *task, const char *fmt, ...)
{
    char msg[320];
    va_list ap;
    int expected = 0;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    shmq__cas(&r->first_rc, &expected, code);
    pthread_mutex_lock(&r->lock);
    tf__eadd(&r->errs, code, task_code, task, msg); /* on ENOMEM the code is still the result */
    pthread_mutex_unlock(&r->lock);
    if (r->log) r->log(msg, r->log_user);
}

/* asks the run to stop for `why`; returns 1 if this call stopped it */
static int tf__stop(tf_run_t *r, int why)
{
    int expected = 0;
    return shmq__cas(&r->hdr->stop, &expected, why) ? 1 : 0;
}

static void tf__val_free(tf__hdr *h, tf__val *v)
{
    if (v->flags & TF__V_HEAP) {
        shmq__fetch_sub(&h->bytes_live, v->size, SHMQ__RELAXED);
        pool_shared_free(h->pool, v->u.p);
    }
    v->size = 0;
    v->flags &= ~TF__V_HEAP;
}

static void *tf__val_alloc(tf__hdr *h, tf__val *v, size_t size)
{
    tf__val_free(h, v);
    if (size > TF__INLINE) {
        uint64_t live, peak;
        void *p = pool_shared_alloc(h->pool, size);
        if (!p) return NULL;
        v->u.p = p;
        v->flags |= TF__V_HEAP;
        shmq__fetch_add(&h->nalloc, 1, SHMQ__RELAXED);
        live = shmq__fetch_add(&h->bytes_live, (uint64_t)size, SHMQ__RELAXED) + size;
        peak = shmq__load(&h->bytes_peak, SHMQ__RELAXED);
        while (live > peak && !shmq__cas(&h->bytes_peak, &peak, live)) {}
    }
    v->size = size;
    return tf__vdata(v);
}

TF_DEF void *tf_out_alloc(tf_out *out, size_t size)
{
    void *p;
    if (!out) return NULL;
    p = tf__val_alloc(out->hdr, &out->rec->val, size);
    if (!p) out->rec->alloc_failed = 1;
    return p;
}

TF_DEF int tf_out_set(tf_out *out, const void *data, size_t size)
{
    void *p;
    if (!out || (size && !data)) return TF_EINVAL;
    p = tf_out_alloc(out, size);
    if (!p) return TF_ENOMEM;
    if (size) memcpy(p, data, size);
    return TF_OK;
}

TF_DEF int tf_out_cancelled(const tf_out *out)
{
    return out ? shmq__load(&out->hdr->stop, SHMQ__RELAXED) != 0 : 0;
}

/* What one worker's loop carries from task to task. */
typedef struct tf__ctx {
    int64_t stamp;           /* the clock at the end of the last task run back to back, 0: none */
    size_t settled;          /* tasks settled and not yet taken off r->remaining */
    int16_t worker;          /* pool_worker_index() of this thread */
} tf__ctx;

/* runs task s's function; fills its state, code, times */
static void tf__exec(tf_run_t *r, uint32_t s, tf__ctx *cx)
{
    const tf_graph_t *g = r->g;
    const tf__task *t = &g->tasks[s];
    tf__rt *rt = &r->rt[s];
    tf_value local[8], *in = local;
    size_t nin, k;
    tf_out out;
    int code;
    int64_t t0, t1;

    if (g->input_slot[s] != TF__NONAME) {
        tf__val *v = &r->inval[g->input_slot[s]];
        nin = 1;
        in[0].data = tf__vdata(v);
        in[0].size = (size_t)v->size;
    } else {
        nin = g->fdep_off[s + 1] - g->fdep_off[s];
        if (nin > sizeof local / sizeof local[0]) {
            in = (tf_value *)TF_MALLOC(nin * sizeof *in);
            if (!in) {
                rt->state = TF_FAILED;
                rt->code = TF_ENOMEM;
                rt->t0 = rt->t1 = 0;
                rt->worker = cx->worker;
                return;
            }
        }
        for (k = 0; k < nin; k++) {
            tf__val *v = &r->rt[g->fdep[g->fdep_off[s] + k]].val;
            in[k].data = tf__vdata(v);
            in[k].size = (size_t)v->size;
        }
    }
    out.hdr = r->hdr;
    out.rec = rt;
    /* back to back on this worker, the last task's end is this one's start: one clock
     * read per task (the few ns of bookkeeping between count as this task's) */
    t0 = cx->stamp ? cx->stamp : tf__ticks();
    code = t->fn(in, nin, &out, t->ctx);
    t1 = tf__ticks();
    cx->stamp = t1;
    rt->t0 = t0 - r->tick0;
    rt->t1 = t1 - r->tick0;
    rt->worker = cx->worker;
    if (in != local) TF_FREE(in);
    rt->code = code;
    rt->state = (uint8_t)(code == 0 ? TF_DONE : TF_FAILED);
}

static int tf__csubmit(tf_run_t *r, uint32_t s);

/* Task s is final (done, failed, skipped or cancelled): records a failure, frees the
 * values it was the last consumer of, and counts it in cx->settled (the caller takes
 * it off r->remaining, so the run stays alive meanwhile). */
static void tf__finalize(tf_run_t *r, uint32_t s, tf__ctx *cx)
{
    const tf_graph_t *g = r->g;
    tf__rt *rt = &r->rt[s];
    uint32_t k;

    cx->settled++;
    if (rt->state == TF_FAILED) {
        const char *name = tf__tname(g, s);
        tf__val_free(r->hdr, &rt->val);
        if (rt->code == TF_ENOMEM && rt->t0 == 0 && rt->t1 == 0)
            tf__rerr(r, TF_ETASK, rt->code, name, "task '%s': out of memory gathering its inputs", name);
        else if (rt->code == POOL_EWORKERDIED && rt->worker < 0)
            tf__rerr(r, TF_ETASK, rt->code, name, "task '%s' failed: its worker process died", name);
        else if (rt->alloc_failed && r->shared)
            tf__rerr(r, TF_ETASK, rt->code, name, "task '%s' failed with code %d: no memory for its value "
                     "(values over %d bytes come from the pool's shared arena: is it full?)",
                     name, (int)rt->code, TF__INLINE);
        else if (rt->alloc_failed)
            tf__rerr(r, TF_ETASK, rt->code, name, "task '%s' failed with code %d: out of memory for its value",
                     name, (int)rt->code);
        else
            tf__rerr(r, TF_ETASK, rt->code, name, "task '%s' failed with code %d", name, (int)rt->code);
        if (r->policy == TF_STOP_ON_ERROR) tf__stop(r, TF_ETASK);
        cx->stamp = 0;
    } else if (rt->state == TF_DONE && (rt->val.flags & TF__V_HEAP)) {
        uint32_t consumers = g->succ_off[s + 1] - g->succ_off[s];
        if (consumers == 0 && !(g->tasks[s].flags & TF_OUTPUT)) { /* unread */
            tf__val_free(r->hdr, &rt->val);
            cx->stamp = 0;
        } else {
            rt->pending = consumers; /* from here on: consumers left */
        }
    }
    /* the values this task consumed: the last consumer frees them */
    if (g->input_slot[s] != TF__NONAME && (r->inval[g->input_slot[s]].flags & TF__V_HEAP)) {
        tf__val_free(r->hdr, &r->inval[g->input_slot[s]]);
        cx->stamp = 0;
    }
    for (k = g->fdep_off[s]; k < g->fdep_off[s + 1]; k++) {
        uint32_t d = g->fdep[k];
        tf__rt *dr = &r->rt[d];
        if ((dr->val.flags & TF__V_HEAP) && !(g->tasks[d].flags & TF_OUTPUT) &&
            shmq__fetch_sub(&dr->pending, 1, SHMQ__ACQ_REL) == 1) {
            tf__val_free(r->hdr, &dr->val);
            cx->stamp = 0; /* a free can take long: not the next task's time */
        }
    }
}

/* Task s became ready: runs it here, or marks it skipped/cancelled, or (central
 * dispatch) sends it to the pool. Returns 1 if s is final now (its successors may be
 * released), 0 if it went to the pool (its completion callback goes on from there). */
static int tf__settle(tf_run_t *r, uint32_t s, tf__ctx *cx)
{
    tf__rt *rt = &r->rt[s];
    uint32_t poison = shmq__load(&rt->poison, SHMQ__RELAXED);
    int stop = shmq__load(&r->hdr->stop, SHMQ__ACQUIRE);

    if (!stop && r->deadline && !(poison & TF__POISON_FAILED) && tf__now() >= r->deadline) {
        if (tf__stop(r, TF_EDEADLINE))
            tf__rerr(r, TF_EDEADLINE, 0, NULL, "deadline passed: tasks not started are cancelled");
        stop = 1;
    }
    if (poison & TF__POISON_FAILED) {
        rt->state = TF_SKIPPED;
    } else if ((poison & TF__POISON_CANCELLED) || stop) {
        rt->state = TF_CANCELLED;
    } else if (r->central) {
        if (tf__csubmit(r, s) == 0) return 0;
        rt->state = TF_CANCELLED; /* the pool refused it: the run is stopped */
    } else {
        tf__exec(r, s, cx);
    }
    tf__finalize(r, s, cx);
    return 1;
}

/* the run is over: every task is final. Wakes the waiters; r may be freed right after. */
static void tf__finish(tf_run_t *r)
{
    r->tick_end = tf__ticks() - r->tick0;
    r->t_end = tf__now() - r->t_start;
    pthread_mutex_lock(&r->lock);
    r->finished = 1;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->lock);
}

/* takes the tasks this loop settled off r->remaining; 1 if that ended the run */
static int tf__account(tf_run_t *r, tf__ctx *cx)
{
    size_t n = cx->settled;
    cx->settled = 0;
    if (n && shmq__fetch_sub(&r->remaining, n, SHMQ__ACQ_REL) == n) {
        tf__finish(r);
        return 1;
    }
    return 0;
}

/* predecessor p (or SOURCE) is final: one less to wait for in s. 1 if s is now ready. */
static int tf__release(tf_run_t *r, uint32_t p, uint32_t s)
{
    tf__rt *sr = &r->rt[s];
    if (p != (uint32_t)r->n) {
        uint8_t st = r->rt[p].state;
        if (st == TF_FAILED || st == TF_SKIPPED) shmq__fetch_or(&sr->poison, TF__POISON_FAILED, SHMQ__RELAXED);
        else if (st == TF_CANCELLED) shmq__fetch_or(&sr->poison, TF__POISON_CANCELLED, SHMQ__RELAXED);
    }
    /* The last release needs no read-modify-write: when the count reads 1, this is the
     * one release left (no one else writes it), and the acquire load synchronizes with
     * the other dependencies' releases, so their values and poison are visible. */
    if (shmq__load(&sr->pending, SHMQ__ACQUIRE) == 1) return 1;
    return shmq__fetch_sub(&sr->pending, 1, SHMQ__ACQ_REL) == 1;
}

/* >>dispatch (thread pool): the work item handed to pool_submit, and the worker loop */
typedef struct tf__item {
    uint32_t task;           /* RUN: the ready task; SCAN: the finished task (n: SOURCE) */
    uint32_t a, b;           /* SCAN: successors succ[a..b) */
    uint32_t kind;           /* TF__RUN, TF__SCAN, TF__SCAN_PART */
} tf__item;

enum { TF__RUN = 0, TF__SCAN = 1, TF__SCAN_PART = 2 };

static int tf__job(const void *arg, void *result, void *ctx);
static int tf__drive(tf_run_t *r, tf__item first);

/* the worker loop's stack: on the C stack, moved to the heap if it overflows */
typedef struct tf__stack {
    tf__item *v;
    size_t n, cap;
    tf__item local[TF__LOCAL];
} tf__stack;

static int tf__push(tf__stack *st, tf__item it)
{
    if (st->n == st->cap) {
        tf__item *nv = (tf__item *)TF_MALLOC(st->cap * 2 * sizeof *nv);
        if (!nv) return -1;
        memcpy(nv, st->v, st->n * sizeof *nv);
        if (st->v != st->local) TF_FREE(st->v);
        st->v = nv;
        st->cap *= 2;
    }
    st->v[st->n++] = it;
    return 0;
}

/* hands an item to the pool; on refusal, stops the run and does it here. 1 if that
 * ended the run. */
static int tf__spill(tf_run_t *r, const tf__item *it, tf__ctx *cx)
{
    int rc;
    if (r->central) return tf__drive(r, *it); /* workers may be processes: stay here */
    rc = pool_submit(r->pool, tf__job, it, sizeof *it, r);
    cx->stamp = 0;
    if (rc != POOL_OK) {
        if (tf__stop(r, TF_EPOOL))
            tf__rerr(r, TF_EPOOL, rc, NULL, "the pool refused work (%s): tasks not started are cancelled",
                     pool_strerror(rc));
        return tf__drive(r, *it); /* with the run stopped this only settles tasks as cancelled */
    }
    return 0;
}

/* The worker loop. Items on a local stack; the last ready successor found is run next on
 * this worker (no hop); other ready ones of a small node go to the pool; wide successor
 * lists are halved, halves go to the pool, and the ready tasks of a part stay local.
 * Lifetime: a task not yet settled keeps the run (and its graph) alive, and so do the
 * tasks this loop settled until tf__account counts them; after the count that ends the
 * run, nothing of r may be touched. Returns 1 if this loop ended the run. */
static void tf__loop(tf_run_t *r, tf__item first, tf__ctx *cx);
static int tf__drive(tf_run_t *r, tf__item first)
{
    tf__ctx cx;
    cx.stamp = 0;
    cx.settled = 0;
    cx.worker = (int16_t)pool_worker_index();
    tf__loop(r, first, &cx);
    return tf__account(r, &cx);
}

/* the loop itself; the tasks it settles are left in cx->settled for the caller to count */
static void tf__loop(tf_run_t *r, tf__item first, tf__ctx *cxp)
{
    const tf_graph_t *g = r->g;
    tf__stack st;
    tf__ctx cx = *cxp;

    st.v = st.local;
    st.n = 0;
    st.cap = TF__LOCAL;
    st.v[st.n++] = first;
    while (st.n) {
        tf__item it = st.v[--st.n];
        uint32_t t = it.task, a, b, i, next = TF__NONAME;
        int share, stopped;
        if (it.kind == TF__RUN) {
            if (!tf__settle(r, t, &cx)) continue; /* sent to the pool (central dispatch) */
            it.a = g->succ_off[t];
            it.b = g->succ_off[t + 1];
            it.kind = TF__SCAN;
            if (it.a == it.b) continue;
        }
        a = it.a;
        b = it.b;
        /* central dispatch: nothing runs here, nothing to share */
        stopped = r->central || shmq__load(&r->hdr->stop, SHMQ__RELAXED) != 0;
        while (b - a > TF__GRAIN && !stopped) {
            tf__item half;
            uint32_t mid = a + (b - a) / 2;
            half.task = t; half.a = mid; half.b = b; half.kind = TF__SCAN_PART;
            tf__spill(r, &half, &cx); /* cannot end the run: this loop still holds [a, mid) */
            b = mid;
            it.kind = TF__SCAN_PART;
        }
        share = it.kind == TF__SCAN && !stopped;
        for (i = a; i < b; i++) {
            uint32_t s = g->succ[i];
            tf__item run;
            if (!tf__release(r, t, s)) continue;
            if (next == TF__NONAME) { next = s; continue; }
            run.task = next; run.a = run.b = 0; run.kind = TF__RUN;
            next = s;
            if (share || tf__push(&st, run) != 0) tf__spill(r, &run, &cx);
        }
        if (next != TF__NONAME) {
            tf__item run;
            run.task = next; run.a = run.b = 0; run.kind = TF__RUN;
            if (tf__push(&st, run) != 0) tf__spill(r, &run, &cx);
        }
    }
    if (st.v != st.local) TF_FREE(st.v);
    *cxp = cx;
}

static int tf__job(const void *arg, void *result, void *ctx)
{
    tf__item it;
    (void)result;
    memcpy(&it, arg, sizeof it);
    tf__drive((tf_run_t *)ctx, it);
    return 0;
}

/* >>central dispatch (process pool; on a thread pool with opts.dispatch): a worker
 * process cannot reach the parent's graph or run, so it gets everything it needs in
 * its argument (function, ctx, where the records are, the dependencies' indices), runs
 * the task and fills its record in the shared arena. The completion callback (the
 * parent's collector thread in a process pool) queues the task; one thread at a time
 * drains that queue: finalizes, releases successors and sends the ready ones out. No
 * recursion: a callback that fires inside pool_future_on_done only queues. */
typedef struct tf__parg {
    tf_fn fn;
    void *ctx;
    tf__hdr *hdr;
    tf__rt *rt;              /* the run's records (shared arena) */
    tf__val *input;          /* an input task: the run's bytes for it, else NULL */
    int64_t tick0;
    uint32_t task, nin;      /* followed by nin uint32_t dependency indices */
} tf__parg;

static int tf__ptask(const void *arg, void *result, void *ctx)
{
    tf__parg a;
    const unsigned char *deps = (const unsigned char *)arg + sizeof a;
    tf_value local[8], *in = local;
    tf__rt *rec;
    tf_out out;
    size_t k;
    int code;
    int64_t t0, t1;
    (void)result; (void)ctx;
    memcpy(&a, arg, sizeof a);
    rec = &a.rt[a.task];
    if (a.nin > sizeof local / sizeof local[0]) {
        in = (tf_value *)TF_MALLOC(a.nin * sizeof *in);
        if (!in) {
            rec->t0 = rec->t1 = 0;
            rec->worker = (int16_t)pool_worker_index();
            rec->code = TF_ENOMEM;
            shmq__store(&rec->state, (uint8_t)TF_FAILED, SHMQ__RELEASE);
            return TF_ENOMEM;
        }
    }
    if (a.input) {
        in[0].data = tf__vdata(a.input);
        in[0].size = (size_t)a.input->size;
    } else {
        for (k = 0; k < a.nin; k++) {
            uint32_t d;
            memcpy(&d, deps + k * sizeof d, sizeof d);
            in[k].data = tf__vdata(&a.rt[d].val);
            in[k].size = (size_t)a.rt[d].val.size;
        }
    }
    out.hdr = a.hdr;
    out.rec = rec;
    t0 = tf__ticks();
    code = a.fn(in, a.input ? 1 : a.nin, &out, a.ctx);
    t1 = tf__ticks();
    if (in != local) TF_FREE(in);
    rec->t0 = t0 - a.tick0;
    rec->t1 = t1 - a.tick0;
    rec->worker = (int16_t)pool_worker_index();
    rec->code = code;
    shmq__store(&rec->state, (uint8_t)(code == 0 ? TF_DONE : TF_FAILED), SHMQ__RELEASE);
    return code;
}

/* finalizes a task that came back and goes on with its successors (counted in cx) */
static void tf__ccomplete(tf_run_t *r, uint32_t t, tf__ctx *cx)
{
    tf__item it;
    tf__finalize(r, t, cx);
    it.task = t;
    it.a = r->g->succ_off[t];
    it.b = r->g->succ_off[t + 1];
    it.kind = TF__SCAN;
    if (it.a != it.b) tf__loop(r, it, cx);
}

static void tf__cdone(pool_future_t *f, void *user)
{
    tf__cbarg *a = (tf__cbarg *)user;
    tf_run_t *r = a->r;
    uint32_t t = a->t;
    tf__rt *rec = &r->rt[t];
    if (shmq__load(&rec->state, SHMQ__ACQUIRE) == TF_PENDING) {
        /* it never wrote its record: the worker died (or the task was cancelled) */
        int code = pool_future_get(f, NULL, 0);
        rec->t0 = rec->t1 = 0;
        rec->worker = -1;
        rec->code = code ? code : POOL_EWORKERDIED;
        rec->state = TF_FAILED;
    }
    /* not pool_future_free here: the submitter may still be inside
     * pool_future_on_done with this future; it drops its reference after that */
    pthread_mutex_lock(&r->lock);
    r->cq[r->cq_tail++] = t;
    if (r->draining) { /* that thread will take it */
        pthread_mutex_unlock(&r->lock);
        return;
    }
    r->draining = 1;
    {
        /* the tasks settled here are counted only at the end: until then they keep the
         * run alive, so r stays valid for this loop */
        tf__ctx cx;
        cx.stamp = 0;
        cx.settled = 0;
        cx.worker = -1;
        while (r->cq_head != r->cq_tail) {
            t = r->cq[r->cq_head++];
            pthread_mutex_unlock(&r->lock);
            tf__ccomplete(r, t, &cx);
            pthread_mutex_lock(&r->lock);
        }
        r->draining = 0;
        pthread_mutex_unlock(&r->lock);
        tf__account(r, &cx); /* may end the run: nothing of r is touched after it */
    }
}

/* sends ready task s to the pool; 0, or -1 if the pool refused (the run is stopped) */
static int tf__csubmit(tf_run_t *r, uint32_t s)
{
    const tf_graph_t *g = r->g;
    uint32_t nin = g->input_slot[s] != TF__NONAME ? 0 : g->fdep_off[s + 1] - g->fdep_off[s];
    size_t size = sizeof(tf__parg) + (size_t)nin * sizeof(uint32_t);
    unsigned char local[sizeof(tf__parg) + 16 * sizeof(uint32_t)], *buf = local;
    tf__parg a;
    pool_future_t *f = NULL;
    int rc;
    if (size > sizeof local) {
        buf = (unsigned char *)TF_MALLOC(size);
        if (!buf) {
            rc = POOL_ENOMEM;
            goto refused;
        }
    }
    a.fn = g->tasks[s].fn;
    a.ctx = g->tasks[s].ctx;
    a.hdr = r->hdr;
    a.rt = r->rt;
    a.input = g->input_slot[s] != TF__NONAME ? &r->inval[g->input_slot[s]] : NULL;
    a.tick0 = r->tick0;
    a.task = s;
    a.nin = nin;
    memcpy(buf, &a, sizeof a);
    if (nin) memcpy(buf + sizeof a, &g->fdep[g->fdep_off[s]], (size_t)nin * sizeof(uint32_t));
    rc = pool_apply_async(r->pool, tf__ptask, buf, size, 0, NULL, &f);
    if (buf != local) TF_FREE(buf);
    if (rc != POOL_OK) goto refused;
    r->cbarg[s].r = r;
    r->cbarg[s].t = s;
    rc = pool_future_on_done(f, tf__cdone, &r->cbarg[s]);
    TF_ASSERT(rc == POOL_OK); /* a fresh future has no callback yet */
    (void)rc;
    /* our reference only: the pool keeps its own until the callback has returned */
    pool_future_free(f);
    return 0;
refused:
    if (tf__stop(r, TF_EPOOL))
        tf__rerr(r, TF_EPOOL, rc, NULL, "the pool refused work (%s): tasks not started are cancelled",
                 pool_strerror(rc));
    return -1;
}

/* >>run setup */
static void tf__run_release(tf_run_t *r)
{
    tf_graph_t *g = r->g;
    size_t i;
    if (r->rt) {
        for (i = 0; i < r->n; i++) tf__val_free(r->hdr, &r->rt[i].val);
    }
    if (r->inval) {
        for (i = 0; i < g->ninputs; i++) tf__val_free(r->hdr, &r->inval[i]);
        if (r->shared) pool_shared_free(r->pool, r->inval);
        else TF_FREE(r->inval);
    }
    tf__efree(&r->errs);
    TF_FREE(r->cbarg);
    TF_FREE(r->cq);
    if (r->hdr != &r->hdr_local) pool_shared_free(r->pool, r->hdr);
    pthread_cond_destroy(&r->cond);
    pthread_mutex_destroy(&r->lock);
    if (r->rt && r->shared) {
        pool_shared_free(r->pool, r->rt);
    } else if (r->rt) {
        /* keep the biggest record array for the next run of this graph: no page faults */
        void *drop = r->rt;
        pthread_mutex_lock(&g->lock);
        if (!g->spare || g->spare_n < r->n) {
            void *old = g->spare;
            g->spare = r->rt;
            g->spare_n = r->n;
            drop = old;
        }
        pthread_mutex_unlock(&g->lock);
        TF_FREE(drop);
    }
    pthread_mutex_lock(&g->lock);
    shmq__fetch_sub(&g->live_runs, 1, SHMQ__RELEASE);
    pthread_mutex_unlock(&g->lock);
    TF_FREE(r);
}

/* copies the check's problems into the run (so the run tells the whole story);
 * under g->lock, before the run is shared */
static void tf__copy_check_errors(tf_run_t *r)
{
    size_t i;
    int expected = 0;
    shmq__cas(&r->first_rc, &expected, r->g->check_rc);
    for (i = 0; i < tf_graph_nerrors(r->g); i++) {
        const tf_error *e = tf_graph_error(r->g, i);
        tf__eadd(&r->errs, e->code, e->task_code, e->task, e->message);
    }
}

/* checks the inputs against the graph's input tasks: every problem is recorded */
static int tf__bind_inputs(tf_run_t *r, const tf_inputs *inputs)
{
    const tf_graph_t *g = r->g;
    size_t i, ni = inputs ? inputs->count : 0;
    int bad = 0;
    if (ni && !inputs->items) {
        tf__rerr(r, TF_EINVAL, 0, NULL, "inputs: count %u with NULL items", (unsigned)ni);
        return -1;
    }
    for (i = 0; i < ni; i++) {
        const tf_named *in = &inputs->items[i];
        int64_t t;
        tf__val *v;
        void *dst;
        if (!in->name || (in->size && !in->data)) {
            tf__rerr(r, TF_EINVAL, 0, NULL, "inputs[%u]: NULL name or data", (unsigned)i);
            bad = 1;
            continue;
        }
        t = tf__hfind(g, in->name);
        if (t < 0 || g->input_slot[t] == TF__NONAME) {
            tf__rerr(r, TF_EUNKNOWNINPUT, 0, in->name,
                     t < 0 ? "input '%s': the graph has no task of that name"
                           : "input '%s': the task of that name is not an input task", in->name);
            bad = 1;
            continue;
        }
        v = &r->inval[g->input_slot[t]];
        if (v->flags & TF__V_GIVEN) {
            tf__rerr(r, TF_EINPUTS, 0, in->name, "input '%s' is given twice", in->name);
            bad = 1;
            continue;
        }
        dst = tf__val_alloc(r->hdr, v, in->size);
        if (!dst) {
            tf__rerr(r, TF_ENOMEM, 0, in->name, "input '%s': out of memory copying it", in->name);
            bad = 1;
            continue;
        }
        v->flags |= TF__V_GIVEN;
        if (in->size) memcpy(dst, in->data, in->size);
    }
    for (i = 0; i < g->ninputs; i++) {
        if (!(r->inval[i].flags & TF__V_GIVEN)) {
            const char *name = tf__tname(g, g->input_task[i]);
            tf__rerr(r, TF_EMISSINGINPUT, 0, name, "input '%s' is missing from the run's inputs", name);
            bad = 1;
        }
    }
    return bad ? -1 : 0;
}

static int tf__pool_kind(pool_t *pool, pool_kind *kind)
{
    pool_stats st;
    int rc = pool_get_stats(pool, &st);
    if (rc != POOL_OK) return rc;
    *kind = st.kind;
    return POOL_OK;
}

/* the record arrays of a run: from the pool's shared memory (process pool), else the
 * graph's spare array or TF_MALLOC */
static int tf__run_alloc(tf_run_t *r, pool_kind kind)
{
    tf_graph_t *g = r->g;
    size_t n = r->n ? r->n : 1, ni = g->ninputs ? g->ninputs : 1;
    r->shared = kind != POOL_THREADS;
    if (r->central) {
        r->cbarg = (tf__cbarg *)TF_MALLOC(n * sizeof *r->cbarg);
        r->cq = (uint32_t *)TF_MALLOC(n * sizeof *r->cq);
        if (!r->cbarg || !r->cq) return -1; /* freed by tf__run_release */
    }
    if (r->shared) {
        tf__rt *rt = (tf__rt *)pool_shared_alloc(r->pool, n * sizeof *r->rt);
        tf__val *iv = (tf__val *)pool_shared_alloc(r->pool, ni * sizeof *r->inval);
        tf__hdr *h = (tf__hdr *)pool_shared_alloc(r->pool, sizeof *h);
        if (!rt || !iv || !h) {
            pool_shared_free(r->pool, rt);
            pool_shared_free(r->pool, iv);
            pool_shared_free(r->pool, h);
            return -1;
        }
        r->rt = rt;
        r->inval = iv;
        *h = r->hdr_local;
        r->hdr = h;
    } else {
        pthread_mutex_lock(&g->lock);
        if (g->spare && g->spare_n >= r->n) {
            r->rt = (tf__rt *)g->spare;
            g->spare = NULL;
            g->spare_n = 0;
        }
        pthread_mutex_unlock(&g->lock);
        if (!r->rt) r->rt = (tf__rt *)TF_MALLOC(n * sizeof *r->rt);
        r->inval = (tf__val *)TF_MALLOC(ni * sizeof *r->inval);
        if (!r->rt || !r->inval) {
            TF_FREE(r->rt);
            TF_FREE(r->inval);
            r->rt = NULL;
            r->inval = NULL;
            return -1;
        }
    }
    memset(r->inval, 0, ni * sizeof *r->inval);
    return 0;
}

TF_DEF int tf_run_start(tf_graph_t *g, pool_t *pool, const tf_inputs *inputs,
                        const tf_run_opts *opts, tf_run_t **out)
{
    tf_run_t *r;
    pthread_condattr_t ca;
    size_t i, n;
    int rc;
    pool_kind kind = POOL_THREADS;

    if (out) *out = NULL;
    if (!g || !pool || !out) return TF_EINVAL;
    if (opts && (opts->policy != TF_STOP_ON_ERROR && opts->policy != TF_CONTINUE_ON_ERROR))
        return TF_EINVAL;
    if (opts && opts->deadline_ms < 0) return TF_EINVAL;
    if (opts && opts->dispatch != TF_DISPATCH_AUTO && opts->dispatch != TF_DISPATCH_CENTRAL) return TF_EINVAL;
    r = (tf_run_t *)TF_MALLOC(sizeof *r);
    if (!r) return TF_ENOMEM;
    memset(r, 0, sizeof *r);
    if (pthread_mutex_init(&r->lock, NULL) != 0) { TF_FREE(r); return TF_ENOMEM; }
    pthread_condattr_init(&ca);
#if !defined(__APPLE__)
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
#endif
    if (pthread_cond_init(&r->cond, &ca) != 0) {
        pthread_condattr_destroy(&ca);
        pthread_mutex_destroy(&r->lock);
        TF_FREE(r);
        return TF_ENOMEM;
    }
    pthread_condattr_destroy(&ca);
    r->g = g;
    r->pool = pool;
    r->hdr = &r->hdr_local;
    r->hdr_local.pool = pool;
    r->finished = 1; /* until it is started */
    if (opts) {
        r->policy = (int)opts->policy;
        r->log = opts->log;
        r->log_user = opts->log_user;
    }

    pthread_mutex_lock(&g->lock);
    shmq__fetch_add(&g->live_runs, 1, SHMQ__ACQ_REL);
    rc = tf__freeze(g, 1);
    if (rc != TF_OK && g->frozen) tf__copy_check_errors(r);
    pthread_mutex_unlock(&g->lock);
    n = r->n = g->frozen ? g->ntasks : 0;
    *out = r;
    if (rc != TF_OK) {
        if (!g->frozen) {
            tf__run_release(r);
            *out = NULL;
            return TF_ENOMEM;
        }
        for (i = 0; r->log && i < r->errs.n; i++) r->log(r->errs.v[i].message, r->log_user);
        return shmq__load(&r->first_rc, SHMQ__RELAXED);
    }
    rc = tf__pool_kind(pool, &kind);
    if (rc != POOL_OK) {
        tf__rerr(r, TF_EINVAL, rc, NULL, "the pool is not usable (%s)", pool_strerror(rc));
        return TF_EINVAL;
    }
    /* a process pool's workers cannot reach this run: they get their tasks from here */
    r->central = kind != POOL_THREADS || (opts && opts->dispatch == TF_DISPATCH_CENTRAL);
    if (tf__run_alloc(r, kind) != 0) {
        tf__run_release(r);
        *out = NULL;
        return TF_ENOMEM;
    }
    tf__init_records(g, r->rt);
    r->t_start = tf__now();
    r->tick0 = tf__ticks();
    if (tf__bind_inputs(r, inputs) != 0) return shmq__load(&r->first_rc, SHMQ__RELAXED);

    if (opts && opts->deadline_ms > 0) r->deadline = r->t_start + opts->deadline_ms * 1000000;
    r->remaining = n;
    r->started = 1;
    if (n == 0) {
        r->t_end = 0;
        return TF_OK; /* an empty graph: over at once, empty outputs */
    }
    r->finished = 0;
    {
        tf__item src;
        tf__ctx cx;
        cx.stamp = 0;
        cx.settled = 0;
        cx.worker = -1;
        src.task = (uint32_t)n;
        src.a = g->succ_off[n];
        src.b = g->succ_off[n + 1];
        src.kind = TF__SCAN;
        if (r->central) { /* sends the roots out from here */
            tf__loop(r, src, &cx);
            tf__account(r, &cx);
        } else {
            tf__spill(r, &src, &cx);
        }
    }
    return TF_OK;
}

static void tf__abs_time(struct timespec *ts, int64_t abs_ns)
{
#if defined(__APPLE__)
    struct timespec now;
    int64_t rel = abs_ns - tf__now();
    clock_gettime(CLOCK_REALTIME, &now);
    abs_ns = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec + (rel > 0 ? rel : 0);
#endif
    ts->tv_sec = (time_t)(abs_ns / 1000000000);
    ts->tv_nsec = (long)(abs_ns % 1000000000);
}

TF_DEF int tf_run_wait(tf_run_t *r, int timeout_ms)
{
    int64_t until = 0;
    if (!r) return TF_EINVAL;
    if (timeout_ms > 0) until = tf__now() + (int64_t)timeout_ms * 1000000;
    pthread_mutex_lock(&r->lock);
    while (!r->finished) {
        int64_t wake = until;
        int deadline_armed = r->deadline && !shmq__load(&r->hdr->stop, SHMQ__RELAXED);
        if (timeout_ms == 0) break;
        if (deadline_armed && (!wake || r->deadline < wake)) wake = r->deadline;
        if (wake) {
            struct timespec ts;
            tf__abs_time(&ts, wake);
            pthread_cond_timedwait(&r->cond, &r->lock, &ts);
        } else {
            pthread_cond_wait(&r->cond, &r->lock);
        }
        if (r->finished) break;
        if (deadline_armed && tf__now() >= r->deadline) {
            pthread_mutex_unlock(&r->lock);
            if (tf__stop(r, TF_EDEADLINE))
                tf__rerr(r, TF_EDEADLINE, 0, NULL, "deadline passed: tasks not started are cancelled");
            pthread_mutex_lock(&r->lock);
            continue;
        }
        if (until && tf__now() >= until) break;
    }
    if (!r->finished) {
        pthread_mutex_unlock(&r->lock);
        return TF_ETIMEDOUT;
    }
    pthread_mutex_unlock(&r->lock);
    return shmq__load(&r->first_rc, SHMQ__ACQUIRE);
}

TF_DEF int tf_run_cancel(tf_run_t *r)
{
    int done;
    if (!r) return TF_EINVAL;
    pthread_mutex_lock(&r->lock);
    done = r->finished;
    pthread_mutex_unlock(&r->lock);
    if (!done && tf__stop(r, TF_ECANCELLED))
        tf__rerr(r, TF_ECANCELLED, 0, NULL, "cancelled: tasks not started are cancelled");
    return TF_OK;
}

TF_DEF int tf_graph_run(tf_graph_t *g, pool_t *pool, const tf_inputs *inputs, tf_run_t **run)
{
    int rc = tf_run_start(g, pool, inputs, NULL, run);
    if (rc != TF_OK) return rc;
    return tf_run_wait(*run, -1);
}

TF_DEF int tf_graph_run_batch(tf_graph_t *g, pool_t *pool, const tf_inputs *sets, size_t nsets,
                              const tf_run_opts *opts, tf_run_t **runs)
{
    size_t i, window = opts && opts->max_inflight ? opts->max_inflight : 4;
    int first = TF_OK;
    if (!g || !pool || !runs || (nsets && !sets)) return TF_EINVAL;
    for (i = 0; i < nsets; i++) runs[i] = NULL;
    for (i = 0; i < nsets; i++) {
        int rc;
        if (i >= window && runs[i - window]) {
            rc = tf_run_wait(runs[i - window], -1);
            if (rc != TF_OK && first == TF_OK) first = rc;
        }
        rc = tf_run_start(g, pool, &sets[i], opts, &runs[i]);
        if (rc != TF_OK && first == TF_OK) first = rc;
    }
    for (i = nsets > window ? nsets - window : 0; i < nsets; i++) {
        if (runs[i]) {
            int rc = tf_run_wait(runs[i], -1);
            if (rc != TF_OK && first == TF_OK) first = rc;
        }
    }
    return first;
}

TF_DEF void tf_run_free(tf_run_t *r)
{
    if (!r) return;
    if (tf_run_wait(r, 0) == TF_ETIMEDOUT) {
        tf_run_cancel(r);
        tf_run_wait(r, -1);
    }
    tf__run_release(r);
}

/* >>reading a run */

/* ticks since the run's start -> ns since its start (see tf__ticks) */
static int64_t tf__ns(const tf_run_t *r, int64_t ticks)
{
#if TF__TICKS
    if (r->tick_end <= 0 || r->t_end <= 0 || ticks <= 0) return 0;
    return (int64_t)((double)ticks * ((double)r->t_end / (double)r->tick_end));
#else
    (void)r;
    return ticks > 0 ? ticks : 0;
#endif
}

/* a task's start and duration in ns (the duration never negative) */
static void tf__span(const tf_run_t *r, const tf__rt *rt, int64_t *start, int64_t *dur)
{
    int64_t a = tf__ns(r, rt->t0), b = tf__ns(r, rt->t1);
    *start = a;
    *dur = b > a ? b - a : 0;
}
static int64_t tf__run_find(const tf_run_t *r, const char *name)
{
    if (!r->g->frozen) return -1;
    return tf__hfind(r->g, name);
}

static int tf__output_of(const tf_run_t *r, uint32_t t, const void **data, size_t *size)
{
    if (!(r->g->tasks[t].flags & TF_OUTPUT)) return TF_ENOTOUTPUT;
    if (!r->rt || r->rt[t].state != TF_DONE) return TF_ENOVALUE;
    if (data) *data = tf__vdata((tf__val *)&r->rt[t].val);
    if (size) *size = (size_t)r->rt[t].val.size;
    return TF_OK;
}

TF_DEF int tf_run_output(const tf_run_t *r, const char *name, const void **data, size_t *size)
{
    int64_t t;
    if (!r || !name) return TF_EINVAL;
    t = tf__run_find(r, name);
    if (t < 0) return TF_ENOTFOUND;
    return tf__output_of(r, (uint32_t)t, data, size);
}

TF_DEF size_t tf_run_noutputs(const tf_run_t *r)
{
    return r && r->started ? r->g->noutputs : 0;
}

TF_DEF int tf_run_output_at(const tf_run_t *r, size_t i, const char **name, const void **data, size_t *size)
{
    uint32_t t;
    if (!r || i >= tf_run_noutputs(r)) return TF_EINVAL;
    t = r->g->outputs[i];
    if (name) *name = tf__tname(r->g, t);
    return tf__output_of(r, t, data, size);
}

TF_DEF int tf_run_task_at(const tf_run_t *r, size_t i, tf_task_info *info)
{
    if (!r || !info || i >= r->g->ntasks || !r->g->frozen) return TF_EINVAL;
    memset(info, 0, sizeof *info);
    info->name = tf__tname(r->g, i);
    info->worker = -1;
    if (!r->started || i >= r->n) return TF_OK; /* TF_PENDING */
    info->state = (tf_state)r->rt[i].state;
    if (info->state == TF_DONE || info->state == TF_FAILED) {
        info->code = r->rt[i].code;
        tf__span(r, &r->rt[i], &info->start_ns, &info->duration_ns);
        info->worker = r->rt[i].worker;
    }
    return TF_OK;
}

TF_DEF int tf_run_task(const tf_run_t *r, const char *name, tf_task_info *info)
{
    int64_t t;
    if (!r || !name || !info) return TF_EINVAL;
    t = tf__run_find(r, name);
    if (t < 0) return TF_ENOTFOUND;
    return tf_run_task_at(r, (size_t)t, info);
}

TF_DEF size_t tf_run_nerrors(const tf_run_t *r)
{
    size_t n;
    if (!r) return 0;
    pthread_mutex_lock(&((tf_run_t *)r)->lock);
    n = r->errs.n;
    pthread_mutex_unlock(&((tf_run_t *)r)->lock);
    return n;
}

TF_DEF const tf_error *tf_run_error(const tf_run_t *r, size_t i)
{
    const tf_error *e;
    if (!r) return NULL;
    pthread_mutex_lock(&((tf_run_t *)r)->lock);
    e = i < r->errs.n ? &r->errs.v[i] : NULL;
    pthread_mutex_unlock(&((tf_run_t *)r)->lock);
    return e;
}

TF_DEF int tf_run_get_stats(const tf_run_t *r, tf_run_stats *s)
{
    size_t i;
    if (!r || !s) return TF_EINVAL;
    memset(s, 0, sizeof *s);
    s->tasks = r->n;
    for (i = 0; r->started && r->rt && i < r->n; i++) {
        switch (r->rt[i].state) {
        case TF_DONE: s->done++; break;
        case TF_FAILED: s->failed++; break;
        case TF_SKIPPED: s->skipped++; break;
        case TF_CANCELLED: s->cancelled++; break;
        default: break;
        }
    }
    s->wall_ns = r->t_end;
    s->values_allocated = shmq__load(&r->hdr->nalloc, SHMQ__RELAXED);
    s->bytes_live = shmq__load(&r->hdr->bytes_live, SHMQ__RELAXED);
    s->bytes_peak = shmq__load(&r->hdr->bytes_peak, SHMQ__RELAXED);
    return TF_OK;
}

TF_DEF const char *tf_state_name(tf_state s)
{
    switch (s) {
    case TF_PENDING: return "pending";
    case TF_DONE: return "done";
    case TF_FAILED: return "failed";
    case TF_SKIPPED: return "skipped";
    case TF_CANCELLED: return "cancelled";
    default: return "?";
    }
}

/* >>export */
static int tf__emit(tf__buf *b, tf_write_fn write, void *user)
{
    int rc = TF_OK;
    if (b->oom) rc = TF_ENOMEM;
    else if (write(b->p ? b->p : "", b->len, user) != 0) rc = TF_EIO;
    TF_FREE(b->p);
    return rc;
}

static void tf__bdur(tf__buf *b, int64_t ns)
{
    if (ns < 10000) tf__bprintf(b, "%lld ns", (long long)ns);
    else if (ns < 10000000) tf__bprintf(b, "%.1f us", (double)ns / 1e3);
    else if (ns < 10000000000LL) tf__bprintf(b, "%.1f ms", (double)ns / 1e6);
    else tf__bprintf(b, "%.2f s", (double)ns / 1e9);
}

TF_DEF int tf_graph_dot(const tf_graph_t *g, const tf_run_t *r, tf_write_fn write, void *user)
{
    static const char *const fill[] = {"white", "palegreen", "salmon", "lightgray", "khaki"};
    tf__buf b = {NULL, 0, 0, 0};
    size_t i, k;
    if (!g || !write || (r && r->g != g)) return TF_EINVAL;
    if (!g->frozen || g->frozen_version != g->version) {
        /* the lock is taken for the freeze; building is not concurrent by contract */
        int rc = tf_graph_check((tf_graph_t *)g);
        if (rc == TF_ENOMEM) return rc;
    }
    tf__bprintf(&b, "digraph \"");
    tf__bquote(&b, g->title);
    tf__bprintf(&b, "\" {\n  rankdir=LR;\n  node [shape=box, style=\"rounded,filled\", fillcolor=white, fontname=\"Helvetica\"];\n");
    if (r && r->started)
        tf__bprintf(&b, "  label=\"run: %s\"; labelloc=t;\n", tf_strerror(shmq__load(&r->first_rc, SHMQ__RELAXED)));
    for (i = 0; i < g->ntasks; i++) {
        const tf__task *t = &g->tasks[i];
        tf__bprintf(&b, "  t%u [label=\"", (unsigned)i);
        tf__bquote(&b, tf__tname(g, i));
        if (r && r->started && r->rt) {
            const tf__rt *rt = &r->rt[i];
            tf__bprintf(&b, "\\n%s", tf_state_name((tf_state)rt->state));
            if (rt->state == TF_DONE || rt->state == TF_FAILED) {
                tf__bprintf(&b, " ");
                int64_t st, du;
                tf__span(r, rt, &st, &du);
                tf__bdur(&b, du);
            }
            if (rt->state == TF_FAILED) tf__bprintf(&b, "\\ncode %d", (int)rt->code);
            tf__bprintf(&b, "\", fillcolor=%s", fill[rt->state < 5 ? rt->state : 0]);
        } else {
            tf__bprintf(&b, "\"");
        }
        if (t->flags & TF__F_INPUT) tf__bprintf(&b, ", shape=invhouse");
        if (t->flags & TF_OUTPUT) tf__bprintf(&b, ", peripheries=2");
        tf__bprintf(&b, "];\n");
    }
    if (g->frozen) {
        for (i = 0; i < g->ntasks; i++)
            for (k = g->fdep_off[i]; k < g->fdep_off[i + 1]; k++)
                tf__bprintf(&b, "  t%u -> t%u;\n", (unsigned)g->fdep[k], (unsigned)i);
    }
    tf__bprintf(&b, "}\n");
    return tf__emit(&b, write, user);
}

TF_DEF int tf_run_trace(const tf_run_t *r, tf_write_fn write, void *user)
{
    tf__buf b = {NULL, 0, 0, 0};
    size_t i;
    int w, maxw = -1, other = 0;
    if (!r || !write) return TF_EINVAL;
    tf__bprintf(&b, "{\"traceEvents\":[\n");
    tf__bprintf(&b, "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":1,\"tid\":0,\"args\":{\"name\":\"");
    tf__bquote(&b, r->g->title);
    tf__bprintf(&b, "\"}}");
    for (i = 0; r->started && r->rt && i < r->n; i++) {
        const tf__rt *rt = &r->rt[i];
        int64_t st, du;
        if (rt->state != TF_DONE && rt->state != TF_FAILED) continue;
        if (rt->worker > maxw) maxw = rt->worker;
        if (rt->worker < 0) other = 1;
        tf__bprintf(&b, ",\n{\"name\":\"");
        tf__bquote(&b, tf__tname(r->g, i));
        tf__span(r, rt, &st, &du);
        tf__bprintf(&b, "\",\"cat\":\"task\",\"ph\":\"X\",\"ts\":%.3f,\"dur\":%.3f,\"pid\":1,\"tid\":%d,"
                        "\"args\":{\"state\":\"%s\",\"code\":%d}}",
                    (double)st / 1e3, (double)du / 1e3,
                    rt->worker >= 0 ? rt->worker : 9999, tf_state_name((tf_state)rt->state), (int)rt->code);
    }
    for (w = 0; w <= maxw; w++)
        tf__bprintf(&b, ",\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":1,\"tid\":%d,\"args\":{\"name\":\"worker %d\"}}", w, w);
    if (other)
        tf__bprintf(&b, ",\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":1,\"tid\":9999,\"args\":{\"name\":\"other thread\"}}");
    tf__bprintf(&b, "\n],\"displayTimeUnit\":\"ms\"}\n");
    return tf__emit(&b, write, user);
}

static int tf__fwrite(const void *data, size_t size, void *user)
{
    return fwrite(data, 1, size, (FILE *)user) == size ? 0 : -1;
}

static int tf__to_file(const char *path, const tf_graph_t *g, const tf_run_t *r, int dot)
{
    FILE *f;
    int rc;
    if (!path) return TF_EINVAL;
    f = fopen(path, "w");
    if (!f) return TF_EIO;
    rc = dot ? tf_graph_dot(g, r, tf__fwrite, f) : tf_run_trace(r, tf__fwrite, f);
    if (fclose(f) != 0 && rc == TF_OK) rc = TF_EIO;
    return rc;
}

TF_DEF int tf_graph_dot_file(const tf_graph_t *g, const tf_run_t *r, const char *path)
{
    if (!g) return TF_EINVAL;
    return tf__to_file(path, g, r, 1);
}

TF_DEF int tf_run_trace_file(const tf_run_t *r, const char *path)
{
    if (!r) return TF_EINVAL;
    return tf__to_file(path, NULL, r, 0);
}

#endif /* TF__IMPLEMENTATION_DONE */
#endif /* TASKFLOW_IMPLEMENTATION */

/*
 * HISTORY
 *   0.1  first version: graphs, checks, thread-pool runs, policies, cancel, deadline,
 *        batches, DOT and trace exports.
 *
 * LICENSE (MIT)
 *
 * Copyright (c) 2026 the ckit authors
 *
 * Permission is hereby granted, free of charge, to any person obtaining a copy of this
 * software and associated documentation files (the "Software"), to deal in the Software
 * without restriction, including without limitation the rights to use, copy, modify,
 * merge, publish, distribute, sublicense, and/or sell copies of the Software, and to
 * permit persons to whom the Software is furnished to do so, subject to the following
 * conditions:
 *
 * The above copyright notice and this permission notice shall be included in all copies
 * or substantial portions of the Software.
 *
 * THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED,
 * INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A
 * PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT
 * HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF
 * CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR
 * THE USE OR OTHER DEALINGS IN THE SOFTWARE.
 */
