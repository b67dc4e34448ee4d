/* pool.h - v0.1 - thread pools, process pools and a Manager, with one API
 *
 *   Do this:
 *       #define POOL_IMPLEMENTATION
 *   before you include this file in *one* C or C++ file to create the implementation.
 *   It brings in shm_queue.h's implementation too: keep shm_queue.h beside pool.h.
 *
 * OVERVIEW
 *
 *   Python's multiprocessing.Pool / ThreadPool and concurrent.futures, in C:
 *   map, imap, imap_unordered, apply_async with futures, wait_any (as_completed),
 *   parallel_for (prange), close / join / terminate, progress bars. One API for a
 *   pool of threads and a pool of processes: values pass by copy, as bytes
 *   (in_size / out_size), never as pointers only a thread could follow, so a program
 *   moves from threads to processes by changing config.kind (see PROCESS POOLS).
 *
 *   No global state, no signals, no allocation per task in the steady state; idle
 *   workers sleep (after a 50 us spin); every call returns an error code.
 *
 * QUICK START
 *
 *   EXAMPLE BEGIN
    #define POOL_IMPLEMENTATION
    #include "pool.h"
    #include <stdio.h>

    static int square(const void *in, void *out, void *ctx)
    {
        (void)ctx;
        *(long *)out = *(const long *)in * *(const long *)in;
        return 0; // or a positive error code of yours
    }

    int main(void)
    {
        long in[1000], out[1000], r, x = 12;
        pool_t *p;
        pool_future_t *f;
        int i, rc;
        for (i = 0; i < 1000; i++) in[i] = i;

        if (pool_create(&p, NULL) != POOL_OK) return 1;   // threads, one per CPU
        rc = pool_map(p, square, in, sizeof *in, out, sizeof *out, 1000, NULL);
        printf("map: %s, out[999] = %ld\n", pool_strerror(rc), out[999]);

        pool_apply_async(p, square, &x, sizeof x, sizeof r, NULL, &f);
        rc = pool_future_get(f, &r, 1000);                 // wait up to 1 s
        printf("apply_async: %s, %ld\n", pool_strerror(rc), r);
        pool_future_free(f);

        pool_close(p);
        pool_join(p);
        pool_destroy(p);
        return out[999] == 998001 && r == 144 ? 0 : 1;
    }
 *   EXAMPLE END
 *
 *   Build: cc -O2 -pthread main.c   (nothing to link but pthreads)
 *
 * API
 *
 *   A task is   int fn(const void *in, void *out, void *ctx)
 *   It reads in_size bytes at `in`, writes out_size bytes at `out` and returns 0,
 *   or its own non-zero code (use positive codes: negative ones are the library's).
 *
 *   pool_create(&p, &cfg)         cfg NULL or zero-initialised: defaults (see pool_config)
 *   pool_map(p, fn, in, in_size, out, out_size, n, &opts)
 *                                 ordered, chunked, blocks; the caller works too.
 *                                 Every element runs; returns the code of the LOWEST
 *                                 failing index (the one a sequential loop would hit
 *                                 first), and opts.failure says which.
 *   pool_imap / pool_imap_unordered + pool_iter_next / pool_iter_free
 *                                 results one at a time, in order / as they finish, with
 *                                 at most opts.max_inflight chunks in flight.
 *   pool_apply_async(p, fn, &arg, arg_size, result_size, ctx, &f)
 *                                 one call; the argument bytes are copied.
 *   pool_future_get / wait / ready / successful / signal / cancel / on_done / free
 *   pool_wait_any / pool_wait_all over an array of futures (as_completed)
 *   pool_submit                   fire and forget (no future)
 *   pool_parallel_for(p, begin, end, grain, body, ctx)   body(b, e, ctx) over pieces
 *   pool_shared_alloc / pool_shared_free   memory every worker sees at one address
 *   pool_close / pool_join / pool_terminate / pool_destroy   the Python meanings
 *   pool_get_stats, pool_workers, pool_worker_index, pool_strerror
 *   pool_bar_render               a tqdm-like progress bar (a progress callback)
 *
 *   Timeouts are in milliseconds: -1 waits forever, 0 polls.
 *
 *   Waiting never deadlocks the pool: a thread that waits on a future without a time
 *   limit runs that future itself if no worker has started it, and a worker that waits
 *   runs other queued tasks meanwhile. So a task may submit tasks and wait for them,
 *   even on a pool of one worker. A timed wait only waits.
 *
 *   Lifecycle (as in Python): close refuses new work (POOL_ECLOSED) and lets queued
 *   work finish; join waits for the workers to exit (close or terminate first);
 *   terminate drops queued work (its futures complete with POOL_ECANCELLED; a running
 *   thread task finishes, it is never killed); destroy terminates if needed, joins
 *   and frees. A future outlives its pool: free it when you like.
 *
 *   Fork: after fork(), the child may create and use new pools. A pool inherited from
 *   the parent is inert in the child (its threads do not exist there): every call on
 *   it returns POOL_EFORKED and pool_destroy only releases its memory.
 *
 * PROCESS POOLS
 *
 *   cfg.kind = POOL_PROCESSES runs the same calls in worker processes forked from
 *   this program. What a task sees there:
 *
 *   - Function pointers just work: workers are forks of this program (same code,
 *     same addresses). The one exception: code loaded with dlopen() after the pool
 *     was created does not exist in the workers.
 *   - Arguments and results are copied through shared memory; map input and output
 *     that already lie in pool_shared_alloc memory are used in place (no copy).
 *   - `ctx`, globals and the heap are the worker's COPY of this process's memory as
 *     it was when the worker was forked (at pool_create, or when a worker is
 *     replaced). Writes a worker makes there stay in the worker. Safe patterns:
 *     read-only data set up before pool_create; data passed in the arguments; and
 *     for shared state, pool_shared_alloc memory (the same bytes at the same address
 *     in every process: put the ctx struct itself there, as examples/shared_fill.c
 *     does).
 *   - A worker that dies in a task (crash, abort, exit, SIGKILL) fails that element
 *     or call alone with POOL_EWORKERDIED and the signal (opts.failure.signal,
 *     pool_future_signal); the rest of its chunk goes back to the pool, a new worker
 *     replaces it, and the pool carries on. It is never "broken".
 *   - Workers ignore SIGINT: Ctrl-C is for this program to handle. If this program
 *     dies, the workers exit within a second (PR_SET_PDEATHSIG, and a check of the
 *     parent), and the shared memory (an unnamed memfd) goes with the last of them.
 *   - Calls on the pool from inside one of its workers return POOL_EINWORKER.
 *   - Start methods: POOL_START_FORK (default) forks workers from a thread of this
 *     process, at creation and whenever one must be replaced. POOL_START_FORKSERVER
 *     forks, at pool_create, a small single-threaded server from which every worker
 *     is forked: use it when this program runs many threads (a worker then never
 *     inherits a lock another thread of yours held at the fork), or to keep workers
 *     small. Either way, create pools early (before big allocations) when you can.
 *   - cfg.max_tasks_per_child replaces a worker, transparently, after that many
 *     elements; cfg.initializer / finalizer run in each worker process.
 *   - The arena reserves cfg.arena_size bytes of address space (default 4 GiB on
 *     64-bit systems, backed only as used); it holds arguments, results and
 *     pool_shared_alloc blocks (power-of-two sizes).
 *
 * CONFIGURATION MACROS
 *
 *   POOL_STATIC       every function static (also makes shm_queue.h static)
 *   POOL_MALLOC(sz), POOL_REALLOC(p, sz), POOL_FREE(p)   all three or none
 *   POOL_ASSERT(x)    programmer-error checks (default: assert)
 *   SHMQ_NO_LINUX     the kit's portability switch: POSIX calls only
 *
 * THREAD SAFETY
 *
 *   Every function may be called from any thread at any time, on the same pool,
 *   including from inside tasks, except: pool_join and pool_destroy not from a worker
 *   of that pool or from a process pool's completion callback (POOL_EINWORKER /
 *   no-op), and one iterator is read by one thread at a time. Callbacks (progress,
 *   on_done, initializer, finalizer) never run under a lock of the pool, so they may
 *   call it (a process pool's callbacks run on its monitor thread: keep them short,
 *   and do not wait there for that pool's work). A future's waiters are woken before
 *   its callback runs; free a future after pool_future_on_done returned, not inside
 *   the callback of another thread's future.
 *   Free iterators before pool_destroy (futures may outlive the pool; iterators not).
 *
 * ERRORS
 *
 *   int returns: POOL_OK (0), a negative POOL_E* code (see POOL_ERRORS below and
 *   pool_strerror), or a task's own positive code. No global error state. Bad input
 *   (NULL, zero sizes, n * size overflow, negative counts, timeouts < -1) returns
 *   POOL_EINVAL / POOL_EOVERFLOW and changes nothing.
 *
 * LIMITS
 *
 *   - A thread task that never returns holds its worker forever (threads cannot be
 *     killed safely); terminate does not stop it. A process pool's terminate kills
 *     its workers.
 *   - A process pool has at most 128 jobs (maps, futures) in its workers at once;
 *     further futures wait in the parent, in order; iterators together hold at most
 *     half of them. A map is cut into at most 256 chunks.
 *   - Workers of a process pool (fork start method) inherit the arenas of process
 *     pools created before it: such memory is returned once those workers exit.
 *   - pool_shared_alloc / pool_shared_free work in the parent and in the workers
 *     (no lock: a worker killed inside one loses that block, never the arena). With
 *     SHMQ_NO_LINUX, only the parent can grow the arena.
 *   - apply_async arguments up to 48 bytes live inside the future; larger ones use a
 *     heap buffer that is recycled with the future.
 *   - The queue is unbounded unless config.max_queued is set.
 *   - Needs GCC or Clang style __atomic builtins (gcc >= 4.7, clang >= 3.1, icc).
 */
/* The implementation needs POSIX 2008 (and BSD/SVID extras) from the C library even
 * under -std=c99; this must come before the first system header. */
#if (defined(POOL_IMPLEMENTATION) || defined(TASKFLOW_IMPLEMENTATION)) && defined(__linux__) && \
    !defined(_GNU_SOURCE) && \
    !defined(_DEFAULT_SOURCE) && !defined(_POSIX_C_SOURCE) && !defined(_XOPEN_SOURCE)
#define _DEFAULT_SOURCE 1
#endif

#ifndef POOL_H_INCLUDED
#define POOL_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

#if defined(POOL_STATIC) && !defined(SHMQ_STATIC)
#define SHMQ_STATIC
#endif
#include "shm_queue.h"

#ifdef POOL_STATIC
#define POOL_DEF static
#else
#define POOL_DEF extern
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---- errors: one list, the enum and pool_strerror() both come from it ---- */
#define POOL_ERRORS(X) \
    X(POOL_OK,           0, "success") \
    X(POOL_EINVAL,      -1, "invalid argument (NULL, zero size, negative count, unknown option)") \
    X(POOL_ENOMEM,      -2, "out of memory") \
    X(POOL_ECLOSED,     -3, "the pool is closed or terminated: it accepts no new work") \
    X(POOL_ETIMEDOUT,   -4, "timed out before the result was ready") \
    X(POOL_ECANCELLED,  -5, "cancelled before it ran (pool terminated, iterator freed or task cancelled)") \
    X(POOL_EWORKERDIED, -6, "the worker process running the task died (see the signal)") \
    X(POOL_EDONE,       -7, "no more results: the iteration is complete") \
    X(POOL_EOVERFLOW,   -8, "size overflow: count times element size does not fit in size_t") \
    X(POOL_ETOOBIG,     -9, "argument or result larger than the pool can carry") \
    X(POOL_ESYS,       -10, "a system call failed (errno tells which)") \
    X(POOL_EINWORKER,  -11, "not allowed from inside a worker of this pool") \
    X(POOL_ESTATE,     -12, "not allowed in the pool's current state (e.g. join before close)") \
    X(POOL_EINIT,      -13, "a worker initializer returned non-zero") \
    X(POOL_EFORKED,    -14, "this object belongs to the parent process: use a new one in a fork child") \
    X(POOL_EBUSY,      -15, "busy: already started, already set, or in use") \
    X(POOL_ECONN,      -20, "the manager connection is lost or was refused") \
    X(POOL_EPROTO,     -21, "protocol error: malformed or unexpected frame") \
    X(POOL_EAUTH,      -22, "authentication failed (wrong authkey or wrong user)") \
    X(POOL_EKIND,      -23, "the name exists with another kind of object") \
    X(POOL_ENOTFOUND,  -24, "no such key, name or item") \
    X(POOL_EOWNERDEAD, -25, "acquired, but its previous owner died while holding it") \
    X(POOL_EPERM,      -26, "not the owner") \
    X(POOL_EBROKEN,    -27, "the barrier is broken") \
    X(POOL_EFULL,      -28, "full") \
    X(POOL_EEMPTY,     -29, "empty") \
    X(POOL_ENOSPC,     -30, "the buffer given is too small (the item stays where it was)") \
    X(POOL_ENAMETOOLONG, -31, "name or key too long") \
    X(POOL_EMISMATCH,  -32, "compare-and-set: the current value is not the expected one")

#define POOL__ENUM(name, value, text) name = value,
typedef enum pool_errc { POOL_ERRORS(POOL__ENUM) POOL__ERRC_END = -1000 } pool_errc;
#undef POOL__ENUM

/* The text of an error code (a library code, or "task error" for a positive code). Never NULL. */
POOL_DEF const char *pool_strerror(int code);

/* ---- types ---- */
typedef struct pool_s pool_t;               /* a pool of workers (threads or processes) */
typedef struct pool_future_s pool_future_t; /* the pending result of pool_apply_async */
typedef struct pool_iter_s pool_iter_t;     /* the results of pool_imap / pool_imap_unordered */

typedef enum pool_kind {
    POOL_THREADS = 0,  /* workers are threads of this process (the default) */
    POOL_PROCESSES = 1 /* workers are processes forked from this program */
} pool_kind;

typedef enum pool_start_method {
    POOL_START_FORK = 0,      /* fork workers from the caller of pool_create (default) */
    POOL_START_FORKSERVER = 1 /* fork them from a single-threaded server forked at pool_create */
} pool_start_method;

/* A task: reads in_size bytes at `in`, writes out_size bytes at `out`, returns 0 or
 * its own error code (use positive codes: negative ones are the library's). */
typedef int (*pool_fn)(const void *in, void *out, void *ctx);
/* A parallel_for body: handles [begin, end), returns 0 or its own error code. */
typedef int (*pool_range_fn)(int64_t begin, int64_t end, void *ctx);
/* Runs once in each worker before its first task; non-zero makes pool_create fail. */
typedef int (*pool_init_fn)(int worker, void *ctx);
/* Runs once in each worker as it exits. */
typedef void (*pool_exit_fn)(int worker, void *ctx);
/* Progress: `done` of `total` units; called from the waiting caller's thread, throttled. */
typedef void (*pool_progress_fn)(uint64_t done, uint64_t total, void *user);
/* Called once when a future completes (see pool_future_on_done). */
typedef void (*pool_done_fn)(pool_future_t *f, void *user);
/* Optional log sink; the library prints nothing unless given one. */
typedef void (*pool_log_fn)(const char *message, void *user);

/* Configuration. Zero-initialise, set what you need: every zero field means its default. */
typedef struct pool_config {
    pool_kind kind;            /* POOL_THREADS (default) or POOL_PROCESSES */
    int workers;               /* 0: one per online CPU; < 0: POOL_EINVAL */
    pool_init_fn initializer;  /* NULL: none */
    pool_exit_fn finalizer;    /* NULL: none */
    void *init_ctx;            /* passed to initializer and finalizer */
    const char *name;          /* worker thread/process name prefix (default "pool"), <= 10 chars used */
    pool_progress_fn progress; /* default progress callback for map/imap/parallel_for; NULL: none */
    void *progress_ctx;
    int progress_interval_ms;  /* minimum interval between progress calls (default 100) */
    int spin_us;               /* how long an idle worker spins before it sleeps (default 50 us,
                                * none with one usable CPU; -1: never spin) */
    int max_queued;            /* backpressure: while this many items are queued, a submitting
                                  thread runs queued work itself before it adds more
                                  (0: unbounded queue, the default) */
    /* process pool only (ignored by a thread pool): */
    pool_start_method start_method;  /* POOL_START_FORK (default) or POOL_START_FORKSERVER */
    uint64_t max_tasks_per_child;    /* replace a worker after this many tasks (0: never) */
    size_t arena_size;               /* address space reserved for the shared arena (default 4 GiB) */
    pool_log_fn log;                 /* NULL: silent */
    void *log_ctx;
} pool_config;

/* Per-call options of map / imap / imap_unordered. NULL options mean all defaults. */
typedef struct pool_failure {
    int code;       /* the failing task's code, or a library code; 0: nothing failed */
    int64_t index;  /* the element that failed (the lowest failing index for map), -1: none */
    int signal;     /* POOL_EWORKERDIED: the signal that killed the worker, else 0 */
} pool_failure;

typedef struct pool_map_opts {
    void *ctx;                 /* passed to fn as its third argument */
    size_t chunksize;          /* elements per chunk; 0: chosen from n and the number of workers */
    size_t max_inflight;       /* imap: chunks in flight at most (0: 4 per worker); bounds memory */
    pool_progress_fn progress; /* NULL: the pool's own (config.progress) */
    void *progress_ctx;
    pool_failure *failure;     /* out, optional: which element failed and how */
} pool_map_opts;

typedef struct pool_stats {
    uint64_t submitted;     /* tasks (map elements count one each) accepted */
    uint64_t completed;     /* finished with code 0 */
    uint64_t failed;        /* finished with a non-zero code (worker deaths included) */
    uint64_t cancelled;     /* never ran: terminated, cancelled, or skipped after a failure */
    uint64_t workers_started; /* workers started, replacements included */
    uint64_t worker_deaths;   /* process pool: workers that died */
    int workers;            /* the number of workers */
    pool_kind kind;
} pool_stats;

/* ---- the pool ---- */

/* Creates a pool. cfg NULL: a thread pool with one worker per CPU. Blocks until every
 * worker ran its initializer. Returns POOL_OK, POOL_EINVAL, POOL_ENOMEM, POOL_ESYS or
 * POOL_EINIT; on failure *out is NULL and nothing is left behind. */
POOL_DEF int pool_create(pool_t **out, const pool_config *cfg);

/* map: out[i] = fn(in[i]) for i in [0, n), in order, chunked. Blocks; the caller runs
 * chunks too. Every element runs; returns POOL_OK, or the code of the lowest failing
 * index (see opts->failure). n == 0 returns POOL_OK at once.
 * Any thread may call it, also a worker of the same pool (a thread pool's worker helps). */
POOL_DEF int pool_map(pool_t *p, pool_fn fn, const void *in, size_t in_size,
                      void *out, size_t out_size, size_t n, const pool_map_opts *opts);

/* imap / imap_unordered: like map, but results are read one at a time with
 * pool_iter_next, in input order (imap) or as they finish (imap_unordered). At most
 * opts->max_inflight chunks are in flight, so memory stays bounded whatever n is.
 * `in` must stay valid until pool_iter_free. */
POOL_DEF int pool_imap(pool_t *p, pool_fn fn, const void *in, size_t in_size,
                       size_t out_size, size_t n, const pool_map_opts *opts, pool_iter_t **it);
POOL_DEF int pool_imap_unordered(pool_t *p, pool_fn fn, const void *in, size_t in_size,
                                 size_t out_size, size_t n, const pool_map_opts *opts,
                                 pool_iter_t **it);
/* Next result: copies out_size bytes to out (may be NULL) and its index to *index (may be
 * NULL). Returns POOL_OK, that element's non-zero code (the iteration goes on), POOL_EDONE
 * after the last one, or POOL_ETIMEDOUT. timeout_ms: -1 forever, 0 poll. One thread at a time. */
POOL_DEF int pool_iter_next(pool_iter_t *it, void *out, size_t *index, int timeout_ms);
/* Frees the iterator: chunks not started are dropped, running ones are waited for. */
POOL_DEF void pool_iter_free(pool_iter_t *it);

/* apply_async: runs fn(arg, result, ctx) once. The arg_size bytes at arg are copied
 * (arg may be NULL when arg_size is 0); result_size bytes of result are kept for
 * pool_future_get. Does not block. *out gets a future the caller frees. */
POOL_DEF int pool_apply_async(pool_t *p, pool_fn fn, const void *arg, size_t arg_size,
                              size_t result_size, void *ctx, pool_future_t **out);
/* Fire and forget: like apply_async without a future (its code is counted in the stats). */
POOL_DEF int pool_submit(pool_t *p, pool_fn fn, const void *arg, size_t arg_size, void *ctx);

/* Waits up to timeout_ms (-1 forever, 0 poll) and copies the result (result_size bytes,
 * when the task returned 0) to result (may be NULL). Returns the task's code,
 * POOL_ETIMEDOUT, POOL_ECANCELLED or POOL_EWORKERDIED. Waiting without a time limit
 * (-1), the thread runs the task itself if no worker has started it yet, and a worker
 * of the pool runs other queued tasks meanwhile: so waiting inside a task never
 * deadlocks. A timed wait never runs tasks (it could overrun the time given). Any
 * number of threads may wait on one future. */
POOL_DEF int pool_future_get(pool_future_t *f, void *result, int timeout_ms);
/* Waits like get without copying: POOL_OK once done (whatever the code), or POOL_ETIMEDOUT. */
POOL_DEF int pool_future_wait(pool_future_t *f, int timeout_ms);
/* 1 if done (finished, failed or cancelled), else 0. Never blocks. */
POOL_DEF int pool_future_ready(const pool_future_t *f);
/* 1 if done with code 0, else 0. Never blocks. */
POOL_DEF int pool_future_successful(const pool_future_t *f);
/* The signal that killed the worker running it (process pool), else 0. */
POOL_DEF int pool_future_signal(const pool_future_t *f);
/* Cancels the task if it has not started: POOL_OK (it completes with POOL_ECANCELLED),
 * or POOL_EBUSY when it is running or done. */
POOL_DEF int pool_future_cancel(pool_future_t *f);
/* Sets a completion callback, called once from the thread that completes the task (a
 * worker thread; in a process pool, the parent thread that collects the result: the
 * pool's monitor thread or a thread waiting on it), or at once from this thread if it
 * is already done. One per future: a second returns POOL_EBUSY. */
POOL_DEF int pool_future_on_done(pool_future_t *f, pool_done_fn cb, void *user);
/* Releases the future. It may still be pending: the task runs, its result is dropped. */
POOL_DEF void pool_future_free(pool_future_t *f);

/* as_completed: waits until one of fs[0..n) is done; *which gets its index. Returns
 * POOL_OK, POOL_ETIMEDOUT, or POOL_EINVAL (n == 0, a NULL entry, futures of several pools). */
POOL_DEF int pool_wait_any(pool_future_t *const *fs, size_t n, int timeout_ms, size_t *which);
/* Waits until every one of fs[0..n) is done: POOL_OK or POOL_ETIMEDOUT. */
POOL_DEF int pool_wait_all(pool_future_t *const *fs, size_t n, int timeout_ms);

/* parallel_for: body(b, e, ctx) over [begin, end) in pieces of at least `grain`
 * (0: chosen automatically). Blocks; the caller runs pieces too. Returns POOL_OK or the
 * code of the lowest failing piece. */
POOL_DEF int pool_parallel_for(pool_t *p, int64_t begin, int64_t end, int64_t grain,
                               pool_range_fn body, void *ctx);

/* Memory every worker sees at the same address: in a process pool it lies in the shared
 * arena, in a thread pool it is a plain allocation. 64-byte aligned; NULL on failure. */
POOL_DEF void *pool_shared_alloc(pool_t *p, size_t size);
POOL_DEF void pool_shared_free(pool_t *p, void *ptr);

/* close: no new work (POOL_ECLOSED for later submissions); queued work still runs.
 * join: waits until all work is done and the workers have exited (close or terminate
 * first, else POOL_ESTATE; POOL_EINWORKER from a worker).
 * terminate: stops now; work not started completes with POOL_ECANCELLED.
 * destroy: terminates if still open, joins, frees everything (futures not yet freed
 * stay valid until pool_future_free). p may be NULL. */
POOL_DEF int pool_close(pool_t *p);
POOL_DEF int pool_join(pool_t *p);
POOL_DEF int pool_terminate(pool_t *p);
POOL_DEF void pool_destroy(pool_t *p);

/* Counters; safe from any thread at any time. */
POOL_DEF int pool_get_stats(pool_t *p, pool_stats *out);
/* The number of workers, or POOL_EINVAL. */
POOL_DEF int pool_workers(const pool_t *p);
/* The index of the pool worker running the caller (0..workers-1), or -1 outside workers. */
POOL_DEF int pool_worker_index(void);

/* A ready-made progress renderer (tqdm-like: bar, count, rate, ETA) on stderr. Use it
 * as a progress callback with a pool_bar as its user pointer. */
typedef struct pool_bar {
    const char *label;   /* shown before the bar; NULL: none */
    int width;           /* bar width in characters (default 30) */
    double start_;       /* private: set on the first call */
} pool_bar;
POOL_DEF void pool_bar_render(uint64_t done, uint64_t total, void *bar);

/* >>manager-interface */
/* >>manager-public
 * ---- the Manager: a server process holding named shared objects ----
 *
 * A Manager is a server (a forked child of pool_manager_start, or any program
 * that runs pool_mserver_run) listening on a Unix socket. Clients attach with
 * pool_manager_connect from any process of the same user, related or not, and
 * reach named objects through handles. Objects are created on first use and live
 * as long as the server.
 *
 * Handles (pool_dict_t, pool_queue_t, ...) belong to the pool_manager_t that made
 * them and stay valid until pool_manager_close; opening the same name and kind
 * twice gives the same handle. Every call on a manager or a handle may be made by
 * any number of threads at once: each call borrows a connection of its own from
 * the manager (a blocking call holds one connection while it waits, so threads
 * never stall each other). A child forked from a connected process may go on using
 * the parent's handles: its first call opens fresh connections of its own (the
 * child is a new client: locks it takes are its own, not its parent's). The kit's
 * pthread_atfork handler closes the child's copies of the parent's sockets at
 * fork, so a child that lives on never hides its parent's death from the server.
 *
 * Timeouts are in milliseconds: -1 waits forever, 0 never waits, > 0 waits at most
 * that long (the server keeps the deadline; a waiting call costs no CPU anywhere).
 * Every call returns POOL_OK (or a documented non-negative value) or a negative
 * pool_errc; POOL_ECONN means the server is gone or the connection was lost: a
 * blocked call returns it as soon as the server dies.
 *
 * OWNERSHIP AND DEATH. A lock, recursive lock, condition lock or semaphore unit is
 * owned by the process (client session) that acquired it; a recursive lock by the
 * thread too. When every connection of a process is gone (it exited or was killed),
 * the server releases what it held and the next acquirer gets POOL_EOWNERDEAD: it
 * holds the lock (or unit) like POOL_OK, and is told that the data it guards may be
 * half-updated. A process killed while waiting simply stops waiting.
 *
 * QUEUE DELIVERY (at-least-once). An item returned by pool_queue_get is held for
 * that client by the server until the client's next request on the same connection
 * (any request acknowledges it: no extra round trip) or pool_manager_close. If the
 * connection drops before that, the item goes back to the FRONT of the queue and is
 * delivered again. So an item put is never lost while the server lives; an item
 * may be delivered twice when its consumer dies after receiving it. The queue is
 * FIFO; an item given back after a consumer's death is the next one delivered.
 *
 * SECURITY. The socket lives in a fresh directory of mode 0700 (or at the path the
 * caller gives), the socket file is 0600, and the server checks each peer's user
 * (SO_PEERCRED on Linux, getpeereid on the BSDs and macOS): same user only unless
 * config.allow_other_users. With an authkey, server and client each prove that they
 * hold it (HMAC-SHA-256 challenge-response over fresh random nonces, compared in
 * constant time) before any request is read; the key never crosses the socket. A
 * refused or malformed peer is closed (and logged, if a log callback is set); the
 * server carries on. Every frame is length-checked against config.max_frame.
 */
typedef struct pool_manager_s pool_manager_t; /* a client of a Manager server */
typedef struct pool_mserver_s pool_mserver_t; /* a Manager server run in-process */
typedef struct pool_dict_s pool_dict_t;       /* map of byte strings to byte strings */
typedef struct pool_list_s pool_list_t;       /* list of byte strings */
typedef struct pool_queue_s pool_queue_t;     /* FIFO of byte strings, bounded or not */
typedef struct pool_lock_s pool_lock_t;       /* lock, or recursive lock */
typedef struct pool_sem_s pool_sem_t;         /* semaphore, or bounded semaphore */
typedef struct pool_event_s pool_event_t;     /* a flag that can be waited for */
typedef struct pool_cond_s pool_cond_t;       /* condition variable with its own lock */
typedef struct pool_barrier_s pool_barrier_t; /* barrier for a fixed number of parties */
typedef struct pool_value_s pool_value_t;     /* an int64 or a small byte string */
typedef struct pool_batch_s pool_batch_t;     /* many operations, one round trip */

/* Manager configuration. Zero-initialise; every zero field means its default. */
typedef struct pool_manager_config {
    /* start / server: where to listen. NULL: a socket "manager.sock" in a fresh
     * directory of mode 0700 made under $TMPDIR (default /tmp), removed at exit.
     * A path: the socket is made there (it must not exist; its directory is the
     * caller's), and removed at exit. At most 107 bytes. */
    const char *address;
    /* both sides: the shared secret. NULL/0: no authkey (then the same-user check
     * and the directory mode are the whole protection). Both sides must agree. */
    const void *authkey;
    size_t authkey_len;
    size_t max_frame;       /* largest frame either side accepts (default 16 MiB, min 4 KiB) */
    int detached;           /* start: the server outlives its starter (default 0: it exits
                             * when the starter process dies); stop it with shutdown */
    int allow_other_users;  /* server: accept peers of other users too (default 0) */
    int connect_timeout_ms; /* client: connect + handshake limit (default 5000) */
    pool_log_fn log;        /* server: refusals, protocol errors; NULL: silent */
    void *log_ctx;
    int spin_us;            /* both sides: poll without sleeping this long for a reply
                             * (client) or the next request (server) before sleeping,
                             * adaptively (default 0 = 50; -1: never; < -1: POOL_EINVAL;
                             * never with one usable CPU). See docs/manager.md */
} pool_manager_config;

/* ---- manager: start, connect, stop ---- */

/* Forks a server (address: config->address or a fresh 0700 directory), then
 * connects to it. Does not return before the server accepts connections. The
 * server exits when this process dies unless config->detached. Returns POOL_OK,
 * POOL_EINVAL, POOL_ENAMETOOLONG, POOL_ENOMEM, POOL_ESYS (errno kept), POOL_ECONN,
 * POOL_EAUTH; on failure *out is NULL and no process, socket or directory remains.
 * Any thread may call it (but see pool_manager_close about forking threads). */
POOL_DEF int pool_manager_start(pool_manager_t **out, const pool_manager_config *cfg);

/* Connects to the server at address (as given by pool_manager_address). Blocks
 * for the handshake, at most config->connect_timeout_ms. cfg may be NULL (no
 * authkey). Returns POOL_OK, POOL_EINVAL, POOL_ENAMETOOLONG, POOL_ECONN (no server),
 * POOL_EAUTH (refused: wrong key or user), POOL_ETIMEDOUT, POOL_ENOMEM. */
POOL_DEF int pool_manager_connect(pool_manager_t **out, const char *address,
                                  const pool_manager_config *cfg);

/* The server's socket path (valid until pool_manager_close). Never NULL. */
POOL_DEF const char *pool_manager_address(const pool_manager_t *m);

/* The server's process id if this handle started it (not detached), else 0. The
 * server is a child of the starter: code that waits for any child (wait(),
 * waitpid(-1, ...)) may collect it, as with any child process. */
POOL_DEF long pool_manager_server_pid(const pool_manager_t *m);

/* One round trip doing nothing: POOL_OK while the server is alive, else POOL_ECONN. */
POOL_DEF int pool_manager_ping(pool_manager_t *m);

/* Asks the server to stop: it answers, closes every connection (blocked clients
 * get POOL_ECONN), removes its socket (and its directory if it made it) and exits.
 * If this handle started it, also waits for the process (and kills it after 5 s).
 * Any handle of the same user may call it. Returns POOL_OK or POOL_ECONN. */
POOL_DEF int pool_manager_shutdown(pool_manager_t *m);

/* Closes every connection (acknowledging any queue item received), frees every
 * handle and m. If m started a non-detached server that still runs, shuts it down
 * first. m may be NULL. No thread may be using m or its handles. In a fork child,
 * closes only the child's own connections: the parent's server stays up. */
POOL_DEF void pool_manager_close(pool_manager_t *m);

/* ---- the server, run in-process ---- */

/* Creates a server listening on cfg->address (or a fresh 0700 directory). Does not
 * block. Returns POOL_OK, POOL_EINVAL, POOL_ENAMETOOLONG, POOL_ESYS, POOL_ENOMEM. */
POOL_DEF int pool_mserver_create(pool_mserver_t **out, const pool_manager_config *cfg);
/* Its socket path. Never NULL. */
POOL_DEF const char *pool_mserver_address(const pool_mserver_t *s);
/* Serves in the calling thread until pool_mserver_stop or a client's shutdown,
 * then closes every connection (blocked clients get POOL_ECONN) and removes the
 * socket. Returns POOL_OK, POOL_ESYS, or POOL_EINVAL if it already ran. Call it
 * once, from one thread. */
POOL_DEF int pool_mserver_run(pool_mserver_t *s);
/* Makes run return soon; safe from any thread and from a signal handler. */
POOL_DEF void pool_mserver_stop(pool_mserver_t *s);
/* Closes every connection, removes the socket (and the directory it made) and
 * frees s; run must have returned. s may be NULL. */
POOL_DEF void pool_mserver_destroy(pool_mserver_t *s);

/* ---- dict: byte-string keys (1..65535 bytes) to byte-string values ---- */

/* Each opener blocks for one round trip, returns POOL_OK, POOL_EKIND (the name holds
 * another kind), POOL_ENAMETOOLONG (name longer than 255 bytes), POOL_EINVAL (empty
 * name), POOL_ECONN or POOL_ENOMEM, and stores the handle in *out. */
POOL_DEF int pool_manager_dict(pool_manager_t *m, const char *name, pool_dict_t **out);
/* Sets key to the vlen bytes at val (replacing any value). POOL_OK. */
POOL_DEF int pool_dict_set(pool_dict_t *d, const void *key, size_t klen,
                           const void *val, size_t vlen);
/* Copies the value to buf (cap bytes) and its length to *vlen (may be NULL).
 * POOL_OK, POOL_ENOTFOUND, or POOL_ENOSPC (cap too small; *vlen = needed size). */
POOL_DEF int pool_dict_get(pool_dict_t *d, const void *key, size_t klen,
                           void *buf, size_t cap, size_t *vlen);
/* POOL_OK, or POOL_ENOTFOUND. */
POOL_DEF int pool_dict_delete(pool_dict_t *d, const void *key, size_t klen);
/* 1 if present, 0 if not, or a negative error. */
POOL_DEF int pool_dict_contains(pool_dict_t *d, const void *key, size_t klen);
/* The number of keys in *n. */
POOL_DEF int pool_dict_len(pool_dict_t *d, size_t *n);
/* Removes every key. */
POOL_DEF int pool_dict_clear(pool_dict_t *d);
/* Compare-and-set, atomically: if the current value equals the elen bytes at
 * expected (or, when expected is NULL, if the key is absent), sets it to val.
 * POOL_OK when set, POOL_EMISMATCH when not (nothing changed). */
POOL_DEF int pool_dict_cas(pool_dict_t *d, const void *key, size_t klen,
                           const void *expected, size_t elen, const void *val, size_t vlen);
/* Atomic add: the value is an int64 (8 bytes, little-endian; a missing key counts
 * as 0); adds delta and stores the new value in *result (may be NULL). POOL_EINVAL
 * if the current value is not 8 bytes long. */
POOL_DEF int pool_dict_add(pool_dict_t *d, const void *key, size_t klen,
                           int64_t delta, int64_t *result);
/* Visits the items, fetched in pages of many items per round trip, in insertion
 * order. fn returns 0 to go on, non-zero to stop (pool_dict_iter then returns that
 * value). Items present during the whole iteration are visited exactly once; items
 * set or deleted meanwhile may or may not be. If deletions made the server compact
 * the dict between two pages, returns POOL_EBUSY (the items visited so far stand). */
typedef int (*pool_dict_item_fn)(const void *key, size_t klen, const void *val,
                                 size_t vlen, void *user);
POOL_DEF int pool_dict_iter(pool_dict_t *d, pool_dict_item_fn fn, void *user);

/* ---- list of byte strings; index < 0 counts from the end (-1: the last) ---- */

POOL_DEF int pool_manager_list(pool_manager_t *m, const char *name, pool_list_t **out);
POOL_DEF int pool_list_append(pool_list_t *l, const void *val, size_t len);
/* POOL_OK, POOL_ENOTFOUND (index out of range), POOL_ENOSPC (*len = needed). */
POOL_DEF int pool_list_get(pool_list_t *l, int64_t index, void *buf, size_t cap, size_t *len);
/* POOL_OK or POOL_ENOTFOUND. */
POOL_DEF int pool_list_set(pool_list_t *l, int64_t index, const void *val, size_t len);
/* Removes and returns the item at index (-1: the last). POOL_ENOTFOUND if out of
 * range; POOL_ENOSPC (*len = needed) leaves the item in place. */
POOL_DEF int pool_list_pop(pool_list_t *l, int64_t index, void *buf, size_t cap, size_t *len);
POOL_DEF int pool_list_len(pool_list_t *l, size_t *n);

/* ---- queue (see QUEUE DELIVERY above) ---- */

/* maxsize: most items queued (0: unbounded); the first opener's maxsize holds. */
POOL_DEF int pool_manager_queue(pool_manager_t *m, const char *name, int64_t maxsize,
                                pool_queue_t **out);
/* Appends a copy of len bytes. Blocks while full, up to timeout_ms. POOL_OK,
 * POOL_EFULL (timeout 0 and full) or POOL_ETIMEDOUT. */
POOL_DEF int pool_queue_put(pool_queue_t *q, const void *data, size_t len, int timeout_ms);
/* Takes the first item into buf (cap bytes), its length into *len (may be NULL).
 * Blocks while empty, up to timeout_ms. POOL_OK, POOL_EEMPTY (timeout 0 and empty),
 * POOL_ETIMEDOUT, or POOL_ENOSPC (first item longer than cap: it stays first in the
 * queue and *len is its length). */
POOL_DEF int pool_queue_get(pool_queue_t *q, void *buf, size_t cap, size_t *len, int timeout_ms);
/* Items queued now (not counting items delivered but not yet acknowledged). */
POOL_DEF int pool_queue_size(pool_queue_t *q, size_t *n);
/* One item taken earlier is processed. POOL_EINVAL if called more times than items put. */
POOL_DEF int pool_queue_task_done(pool_queue_t *q);
/* Blocks until every item ever put has had its task_done, up to timeout_ms:
 * POOL_OK or POOL_ETIMEDOUT. */
POOL_DEF int pool_queue_join(pool_queue_t *q, int timeout_ms);

/* ---- lock and recursive lock ---- */

POOL_DEF int pool_manager_lock(pool_manager_t *m, const char *name, pool_lock_t **out);
/* A recursive lock: the owning thread may acquire it again, and must release it as
 * many times. Its name must not be used by a plain lock (POOL_EKIND). */
POOL_DEF int pool_manager_rlock(pool_manager_t *m, const char *name, pool_lock_t **out);
/* POOL_OK, POOL_EOWNERDEAD (acquired; the previous owner died holding it) or
 * POOL_ETIMEDOUT. A plain lock acquired twice by its owner waits (deadlock unless
 * a timeout is given), as in Python. */
POOL_DEF int pool_lock_acquire(pool_lock_t *l, int timeout_ms);
/* POOL_OK, or POOL_EPERM when this process (recursive: this thread) does not own it. */
POOL_DEF int pool_lock_release(pool_lock_t *l);

/* ---- semaphore ---- */

/* initial: the starting value (>= 0). bounded: release beyond the initial value
 * fails with POOL_EFULL (a bounded semaphore). The first opener's values hold. */
POOL_DEF int pool_manager_semaphore(pool_manager_t *m, const char *name, int64_t initial,
                                    int bounded, pool_sem_t **out);
/* Takes one unit: POOL_OK, POOL_EOWNERDEAD (a unit freed by a dead holder) or
 * POOL_ETIMEDOUT. */
POOL_DEF int pool_sem_acquire(pool_sem_t *s, int timeout_ms);
/* Gives one unit back (any process may release). POOL_OK or POOL_EFULL. */
POOL_DEF int pool_sem_release(pool_sem_t *s);
POOL_DEF int pool_sem_value(pool_sem_t *s, int64_t *value);

/* ---- event ---- */

POOL_DEF int pool_manager_event(pool_manager_t *m, const char *name, pool_event_t **out);
POOL_DEF int pool_event_set(pool_event_t *e);   /* wakes every waiter */
POOL_DEF int pool_event_clear(pool_event_t *e);
/* 1 if set, 0 if not, or a negative error. */
POOL_DEF int pool_event_is_set(pool_event_t *e);
/* POOL_OK once set, or POOL_ETIMEDOUT. */
POOL_DEF int pool_event_wait(pool_event_t *e, int timeout_ms);

/* ---- condition (with its own non-recursive lock, owned per thread) ---- */

POOL_DEF int pool_manager_condition(pool_manager_t *m, const char *name, pool_cond_t **out);
/* As pool_lock_acquire / pool_lock_release, on the condition's lock. */
POOL_DEF int pool_cond_acquire(pool_cond_t *c, int timeout_ms);
POOL_DEF int pool_cond_release(pool_cond_t *c);
/* Releases the lock, waits for a notify up to timeout_ms, re-acquires the lock
 * (whatever happened, the lock is held again when this returns, except POOL_EPERM
 * and POOL_ECONN). POOL_OK (notified), POOL_ETIMEDOUT, POOL_EOWNERDEAD (notified or
 * not; the lock's previous owner died), POOL_EPERM (lock not held by this thread). */
POOL_DEF int pool_cond_wait(pool_cond_t *c, int timeout_ms);
/* Wakes up to n waiters (n < 0: all). The lock must be held: else POOL_EPERM. */
POOL_DEF int pool_cond_notify(pool_cond_t *c, int n);
POOL_DEF int pool_cond_notify_all(pool_cond_t *c);

/* ---- barrier ---- */

/* parties >= 1; the first opener's value holds. */
POOL_DEF int pool_manager_barrier(pool_manager_t *m, const char *name, int64_t parties,
                                  pool_barrier_t **out);
/* Waits until `parties` callers wait. POOL_OK with *index (may be NULL) the arrival
 * index 0..parties-1 (as Python's); POOL_ETIMEDOUT for a caller whose timeout
 * expired, which breaks the barrier; POOL_EBROKEN when broken (a timeout, abort, a
 * waiter that died, or reset while waiting) until reset. */
POOL_DEF int pool_barrier_wait(pool_barrier_t *b, int timeout_ms, int64_t *index);
/* Back to the empty state; current waiters get POOL_EBROKEN. */
POOL_DEF int pool_barrier_reset(pool_barrier_t *b);
/* Breaks it: current and later waiters get POOL_EBROKEN until reset. */
POOL_DEF int pool_barrier_abort(pool_barrier_t *b);

/* ---- value: an int64 (8 bytes little-endian) or a small byte string ---- */

/* Starts as the int64 0. */
POOL_DEF int pool_manager_value(pool_manager_t *m, const char *name, pool_value_t **out);
POOL_DEF int pool_value_set_int(pool_value_t *v, int64_t x);
/* POOL_EINVAL if the value is not 8 bytes long. */
POOL_DEF int pool_value_get_int(pool_value_t *v, int64_t *x);
/* Atomic add; *result (may be NULL) gets the new value. POOL_EINVAL if not an int64. */
POOL_DEF int pool_value_add(pool_value_t *v, int64_t delta, int64_t *result);
POOL_DEF int pool_value_set(pool_value_t *v, const void *data, size_t len);
/* POOL_OK or POOL_ENOSPC (*len = needed). */
POOL_DEF int pool_value_get(pool_value_t *v, void *buf, size_t cap, size_t *len);
/* Sets to val if the value equals the elen bytes at expected: POOL_OK or POOL_EMISMATCH. */
POOL_DEF int pool_value_cas(pool_value_t *v, const void *expected, size_t elen,
                            const void *val, size_t vlen);

/* ---- batch: many non-blocking operations in one round trip ----
 * Operations are recorded (their inputs copied) and sent as one frame by
 * pool_batch_run, which the server executes in order, without interleaving other
 * clients' requests. Outputs (buffers, *rc, *result) are written by pool_batch_run.
 * A batch is used by one thread at a time; after run it is empty and reusable.
 * Recording returns POOL_OK, POOL_ETOOBIG (the frame would exceed max_frame),
 * POOL_EINVAL or POOL_ENOMEM (then the batch is unchanged). rc pointers may be NULL. */
POOL_DEF int pool_batch_create(pool_manager_t *m, pool_batch_t **out);
POOL_DEF void pool_batch_free(pool_batch_t *b);
POOL_DEF size_t pool_batch_count(const pool_batch_t *b);
POOL_DEF int pool_batch_dict_set(pool_batch_t *b, pool_dict_t *d, const void *key, size_t klen,
                                 const void *val, size_t vlen, int *rc);
POOL_DEF int pool_batch_dict_get(pool_batch_t *b, pool_dict_t *d, const void *key, size_t klen,
                                 void *buf, size_t cap, size_t *vlen, int *rc);
POOL_DEF int pool_batch_dict_delete(pool_batch_t *b, pool_dict_t *d, const void *key,
                                    size_t klen, int *rc);
POOL_DEF int pool_batch_dict_add(pool_batch_t *b, pool_dict_t *d, const void *key, size_t klen,
                                 int64_t delta, int64_t *result, int *rc);
POOL_DEF int pool_batch_list_append(pool_batch_t *b, pool_list_t *l, const void *val,
                                    size_t len, int *rc);
/* A put that does not wait: POOL_EFULL in *rc when the queue is full. */
POOL_DEF int pool_batch_queue_put(pool_batch_t *b, pool_queue_t *q, const void *data,
                                  size_t len, int *rc);
POOL_DEF int pool_batch_value_add(pool_batch_t *b, pool_value_t *v, int64_t delta,
                                  int64_t *result, int *rc);
/* Sends the batch and waits for every result. Returns POOL_OK if every operation
 * succeeded, else the first failing operation's code (POOL_ECONN: none of the
 * results is known; the operations may or may not have run). Empty: POOL_OK. */
POOL_DEF int pool_batch_run(pool_batch_t *b);
/* <<manager-public */

#ifdef __cplusplus
}
#endif

#endif /* POOL_H_INCLUDED */

/* ======================================================================== */
/* IMPLEMENTATION                                                            */
/* ======================================================================== */
#ifdef POOL_IMPLEMENTATION
#ifndef POOL__IMPLEMENTATION_DONE
#define POOL__IMPLEMENTATION_DONE

#ifndef SHMQ_IMPLEMENTATION
#define SHMQ_IMPLEMENTATION
#endif
#include "shm_queue.h"

/* >>impl-config */
#if defined(POOL_MALLOC) && defined(POOL_FREE) && defined(POOL_REALLOC)
/* ok: all three given */
#elif !defined(POOL_MALLOC) && !defined(POOL_FREE) && !defined(POOL_REALLOC)
#include <stdlib.h>
#define POOL_MALLOC(sz) malloc(sz)
#define POOL_REALLOC(p, sz) realloc(p, sz)
#define POOL_FREE(p) free(p)
#else
#error "pool.h: define all of POOL_MALLOC, POOL_REALLOC and POOL_FREE, or none"
#endif

#ifndef POOL_ASSERT
#include <assert.h>
#define POOL_ASSERT(x) assert(x)
#endif

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#if SHMQ__LINUX
#include <sys/prctl.h>
#endif

/* A function whose loop runs once per element of a map: kept out of line and
 * started on a cache line boundary, so that its loop's speed does not depend on
 * where the surrounding code happened to put it (docs/pool.md). */
#if defined(__GNUC__) || defined(__clang__)
#define POOL__HOT_LOOP __attribute__((noinline, aligned(64)))
#else
#define POOL__HOT_LOOP
#endif

/* Thread-local storage: the worker running the calling thread, if any. */
#if defined(__cplusplus) && __cplusplus >= 201103L
#define POOL__TLS thread_local
#elif defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L && !defined(__STDC_NO_THREADS__)
#define POOL__TLS _Thread_local
#else
#define POOL__TLS __thread
#endif

/*
 * >>design
 * THE THREAD POOL
 *
 * Two queues per pool. Futures (apply_async) go to a lock-free FIFO: an intrusive
 * multi-producer list (D. Vyukov's): a push is one exchange on `fq_tail` plus a
 * store, so a submitter never waits for a lock, not even one whose holder was
 * preempted (with more threads than cores that is what made a shared lock slow).
 * Takers (workers, waiting callers) pop under `fq_lock`, a flag that only takers
 * touch and only try: a taker that finds it held does something else. The list
 * is empty exactly when both `fq_tail` and `fq_head` are the stub node (a pop
 * that meets a half-done push can leave the stub at the tail behind a real
 * head, so the tail alone is not enough); between a producer's exchange
 * and its link store the list is non-empty but cannot be popped yet, so a taker
 * that sees that spins instead of sleeping.
 *
 * Jobs (one map, imap or parallel_for call, cut into chunks) go to a doubly linked
 * list under `mu`. A job stays in it while it has chunks to claim: each claim
 * takes `mu` once and hands out the next chunk, so chunks are claimed in
 * increasing order; a job leaves the list when its last chunk is claimed, when it
 * stops after a failure, or (imap) while all its result slots are full. Workers
 * look at jobs first: a map's caller waits for it, futures are asynchronous.
 *
 * LOCK ORDER: pool.mu, then nothing (user code never runs under a pool lock);
 * fq_lock and free_lock are only ever tried, never waited for (pool_destroy and
 * pool_terminate excepted, which wait for a holder that is never long).
 * Finished futures go to a shared Treiber stack (a CAS per push), or, freed by a
 * non-worker while nobody allocates, straight to free_mine, the private list of
 * whoever holds free_lock. The allocator takes the whole shared stack at once with
 * an exchange: there are no single pops, so the ABA problem cannot arise.
 *
 * Wake-ups: a submitter signals work_cv only if a worker sleeps and none spins
 * (`sleepers`, `spinners`, seq_cst against the push, as the waiters below); an
 * idle worker first spins for cfg.spin_us watching both queues, so bursts of
 * work never pay for a futex wake, and a worker that takes a future while more
 * are queued wakes the next sleeper itself. Submission closes the race with
 * pool_close / pool_terminate the same way: a submitter pushes, then looks at the
 * state (seq_cst); if the pool stopped meanwhile it claims its future back and
 * reports POOL_ECLOSED, else a worker (which looks at the state before the queue)
 * is bound to see the push. A future is completed without mu: the runner
 * publishes state DONE (seq_cst) and then looks at `done_waiters` (seq_cst); a
 * waiter raises done_waiters before its last look at the state, under mu, so one of
 * the two sees the other (no lost wake-up), and the runner broadcasts done_cv under
 * mu only when somebody waits.
 *
 * Futures are reference counted: one reference for the user (dropped by
 * pool_future_free) and one for the run queue (dropped by whoever takes it out of
 * the queue). Running, claiming by a waiter and cancelling are one CAS on the
 * state (QUEUED -> RUNNING): a waiter that runs its own future, or a cancel, leaves
 * the entry in the queue, and whoever takes it finds it claimed and drops it (a
 * waiter that ran its own future also drops such entries from the head of the
 * queue, so they do not pile up while every worker is busy). Futures are recycled
 * through a free list, so apply_async does not allocate in the steady state and
 * takes no lock. A future outlives its pool:
 * pool_destroy leaves the pool's core to the last pool_future_free (`live` counts
 * futures in existence, recycled ones included; its top bit says the pool was
 * destroyed; whoever brings it to "destroyed and zero" frees the core).
 *
 * Deadlock freedom: a thread that waits for a future first takes the future itself
 * out of the queue and runs it; a pool worker that waits also runs any queued item
 * meanwhile. So a task waiting on tasks it submitted finishes even with one worker.
 *
 * Fork: pthread_atfork bumps a generation counter in the child; every call on a
 * pool (or future) of an older generation returns POOL_EFORKED and pool_destroy
 * only releases its memory there (the parent's threads do not exist in the child).
 */

/* >>impl-types */
enum { POOL__ITEM_FUTURE = 1, POOL__ITEM_JOB = 2 };
enum { POOL__F_QUEUED = 0, POOL__F_RUNNING = 1, POOL__F_DONE = 2 };
enum { POOL__CB_NONE = 0, POOL__CB_SET = 1, POOL__CB_FIRED = 2, POOL__CB_SETTING = 3 };
enum { POOL__OPEN = 0, POOL__CLOSED = 1, POOL__TERMINATED = 2 };
enum { POOL__JOB_MAP = 1, POOL__JOB_FOR = 2, POOL__JOB_IMAP = 3 };
enum { POOL__SLOT_FREE = 0, POOL__SLOT_RUNNING = 1, POOL__SLOT_DONE = 2 };

#ifndef POOL__TEST_HOOK /* tests widen race windows with it; nothing otherwise */
#define POOL__TEST_HOOK(point, future) ((void)0)
#endif
#define POOL__INLINE 64 /* bytes of argument + result kept inside a future */
#define POOL__FREE_MAX 4096 /* futures kept for reuse at most */
#define POOL__BATCH 8       /* futures a worker takes at once from a long queue */
#define POOL__WAIT_SPIN_US 20 /* a waiter spins this long before it sleeps */
#define POOL__RELEASED ((uint64_t)1 << 63)
#define POOL__ALIGN 16

typedef struct pool__item {
    struct pool__item *next, *prev; /* job list links under pool.mu; a future's `next`
                                     * is its (atomic) link in the future queue */
    int type;                       /* POOL__ITEM_*; fixed */
    int queued;                     /* a job, under pool.mu: linked in the job list */
} pool__item;

struct pool_future_s {
    pool__item item;           /* first: a pool__item* is a future* */
    pool_t *pool;              /* fixed */
    pool_fn fn;                /* fixed while live */
    void *ctx;
    unsigned char *arg;        /* inline buffer or heap */
    unsigned char *result;
    size_t arg_size, result_size;
    uint32_t state;            /* atomic: POOL__F_* */
    uint32_t refs;             /* atomic: user + queue */
    uint32_t cb_state;         /* atomic: POOL__CB_* */
    int code;                  /* written before state DONE (release), read after */
    int signal;                /* same */
    pool_done_fn cb;           /* written before cb_state SET */
    void *cb_user;
    unsigned char *heap;       /* owned heap buffer for large arg+result, or NULL */
    size_t heap_cap;
    struct pool_future_s *free_next; /* free list link (see the design note) */
    unsigned char *abuf;       /* process pool: argument + result in the arena, or NULL */
    size_t aroom;              /* process pool: bytes of abuf before the result */
    int pslot;                 /* process pool: the job slot it runs in, -1 (written under pool.mu, atomic) */
    union { unsigned char bytes[POOL__INLINE]; double d; long long ll; void *ptr; } inl;
};

typedef struct pool__job {
    pool__item item;          /* first */
    int kind;                 /* POOL__JOB_*; fixed */
    pool_fn fn;               /* map / imap */
    pool_range_fn body;       /* parallel_for */
    void *ctx;
    const unsigned char *in;
    unsigned char *out;       /* map: the caller's output array */
    size_t in_size, out_size;
    int64_t begin, end;       /* the index range [begin, end) */
    int64_t chunk;            /* elements per chunk */
    uint64_t nchunks;
    /* under pool.mu (atomic stores, so that the owner may look without it): */
    uint64_t next;            /* next chunk to claim */
    uint64_t finished;        /* chunks finished */
    int stop;                 /* claim no more: failure or cancel (atomic reads) */
    int cancelled;            /* the pool was terminated under it */
    int waiting;              /* the owner sleeps on done_cv */
    int64_t fail_index;       /* lowest failing index, -1 */
    int fail_code;
    /* atomic: */
    uint64_t items_done;      /* progress */
    /* imap only, under pool.mu: */
    size_t nslots;            /* result slots = chunks in flight at most */
    size_t free_slots;
    int64_t *slot_chunk;      /* chunk held by each slot, -1 */
    unsigned char *slot_state;
    size_t *done_fifo;        /* unordered: slots in completion order */
    size_t fifo_head, fifo_len;
    unsigned char *slot_out;  /* nslots * chunk * out_size */
    int *slot_code;           /* nslots * chunk */
} pool__job;

typedef struct pool__worker {
    pool_t *pool;
    int index;
    pthread_t thread;
    int started;              /* pthread_create succeeded */
    /* futures this worker took at once from a backlog (only it touches them): a
     * task of it that waits without a time limit runs them, so none is stuck
     * behind a wait that needs it */
    struct pool__item *batch[POOL__BATCH];
    int bpos, bn;
    /* single writer (this worker), atomic reads: */
    uint64_t completed, failed;
    char pad[SHMQ__CACHELINE];
} pool__worker;

struct pool_s {
    pool_config cfg;          /* resolved defaults; fixed */
    int nworkers;             /* fixed */
    unsigned fork_gen;        /* fixed: pool__fork_generation at creation */
    pthread_mutex_t mu;
    pthread_cond_t work_cv;   /* workers: wait for work */
    pthread_cond_t done_cv;   /* waiters: wait for completions */
    /* under mu: */
    pool__item *head, *tail;  /* the job list */
    int state;                /* POOL__OPEN / CLOSED / TERMINATED; atomic reads */
    int joined;               /* 0, 1 being joined, 2 joined */
    int init_done, init_failed, go;
    pool__worker *workers;
    struct pool__proc *proc;  /* the process pool's parts, NULL for threads; fixed */
    /* Atomic from here on, grouped by who writes them so that a submitter and the
     * workers do not fight over cache lines they do not share in fact. */
    /* written rarely, read often: */
    char pad0[SHMQ__CACHELINE];
    uint64_t jlen;            /* jobs in the job list (written under mu) */
    uint32_t sleepers;        /* workers asleep on work_cv (changed under mu) */
    uint32_t done_waiters;    /* threads waiting on done_cv for a future */
    /* written by idle workers: */
    char pad1[SHMQ__CACHELINE];
    uint32_t spinners;        /* workers spinning for work */
    /* the submitters' side of the future queue (see the design note): */
    char pad2[SHMQ__CACHELINE];
    pool__item *fq_tail;      /* the last item pushed, or &fq_stub */
    uint64_t fq_pushed;       /* futures pushed */
    uint64_t st_submitted;    /* maps, process-pool futures; thread-pool futures: fq_pushed */
    uint32_t free_lock;       /* flag, only tried: held to use free_mine */
    uint32_t nmine;           /* under free_lock: length of free_mine */
    pool_future_t *free_mine; /* under free_lock: recycled futures ready for allocation */
    /* the takers' side: */
    char pad3[SHMQ__CACHELINE];
    uint32_t fq_lock;         /* flag, only tried */
    pool__item *fq_head;      /* written under fq_lock */
    uint64_t fq_popped;       /* written under fq_lock */
    pool__item fq_stub;
    /* where finished futures go: */
    char pad4[SHMQ__CACHELINE];
    pool_future_t *free_top;  /* the shared free list (Treiber stack, pushes only) */
    uint32_t nfree;           /* approximate: bounds the list */
    uint64_t live;            /* futures in existence, recycled ones too | POOL__RELEASED */
    uint64_t st_completed, st_failed, st_cancelled;
    char pad5[SHMQ__CACHELINE];
};

/* >>impl-process
 * THE PROCESS POOL
 *
 * Workers are processes forked from the pool's monitor thread (so their
 * PR_SET_PDEATHSIG is tied to a thread that lives as long as the pool), or from a
 * fork server (config.start_method). Before the first fork the pool maps an arena:
 * a memfd (POSIX: an shm_open object unlinked at once) mapped MAP_SHARED |
 * MAP_NORESERVE over config.arena_size bytes, grown with ftruncate as it fills.
 * Every worker inherits the mapping at the same address, so a pointer into the
 * arena means the same thing everywhere, and the memory is gone when the last
 * process holding it exits. The parent and the workers allocate from it without
 * a lock (see pool__arena_alloc).
 *
 * Work is published as jobs in job slots (in the arena): a job is cut into at most
 * POOL__MAXCH chunks; a worker claims a chunk with one CAS on its state word, which
 * holds the slot's generation and the owner (worker index + 1), so a stale claim
 * on a recycled slot fails. A ring of (slot, generation) entries tells workers
 * which slots to look at. A worker stores the index of the element it is about to
 * run in the chunk before it runs it.
 *
 * The monitor thread watches every worker through a pipe whose only write end the
 * worker holds: EOF means the worker died. It reaps it (the signal), then for each
 * chunk the dead worker owned: the element it was running fails with
 * POOL_EWORKERDIED and that signal, and the rest of the chunk goes back to the pool
 * (state FREE, resume after the failed element). It then forks a replacement. No
 * lock is shared between processes, so a death can never leave one held.
 *
 * Completion: the worker that finds every chunk of a job done sets the slot's
 * `done` flag (CAS, once), bumps the arena's done word and wakes its sleepers; map
 * callers sleep on that word; futures are collected (results copied to the parent's
 * memory) by whichever parent thread sees the slot done first: a waiter, or the
 * monitor, which the worker pokes through a pipe when it sleeps.
 */
#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>

#ifdef MAP_NORESERVE
#define POOL__MAP_NORESERVE MAP_NORESERVE
#else
#define POOL__MAP_NORESERVE 0 /* strict POSIX headers: the reservation is then counted */
#endif

#define POOL__NSLOTS 128
#define POOL__MAXCH 256
#define POOL__RING 4096
#define POOL__CH_FREE 0u
#define POOL__CH_DONE 0xFFFEu
#define POOL__CH_CANCELLED 0xFFFFu
#define POOL__ARENA_MAGIC 0x4c4f4f5054494b43ull /* "CKITPOOL" */
enum { POOL__PJ_MAP = 1, POOL__PJ_FOR = 2, POOL__PJ_APPLY = 3 };
enum { POOL__W_STARTING = 0, POOL__W_READY = 1, POOL__W_INITFAIL = 2, POOL__W_RETIRING = 3 };

typedef struct pool__pchunk {   /* 64 bytes: one cache line per chunk */
    uint32_t state;    /* atomic: (gen16 << 16) | FREE, owner+1, DONE or CANCELLED */
    uint32_t pad0;
    int64_t pos;       /* next element to run; written by the owner, read after its death */
    int64_t fail_index;/* first failing element of the chunk, -1; the owner writes */
    int32_t fail_code, fail_signal;
    int64_t fail_count;
    int64_t ran;       /* atomic: elements run (progress) */
    int64_t pad1[2];
} pool__pchunk;

typedef struct pool__pslot {
    uint32_t gen;      /* atomic: odd while the parent writes the slot, even once published */
    uint32_t kind;     /* POOL__PJ_* */
    uint32_t done;     /* atomic: the generation; gen | 1 once every chunk is done or cancelled */
    uint32_t nchunks;
    uint64_t fn, ctx;  /* function pointer and context, as integers */
    uint64_t in, out, codes; /* arena addresses (codes: per-element codes for imap, or 0) */
    uint64_t in_size, out_size;
    int64_t begin, end, chunk;
    int64_t pad[4];    /* so that each chunk has a cache line of its own: a worker
                        * stores its position for every element, and a neighbour
                        * chunk's owner on the same line made that line bounce */
    pool__pchunk chunks[POOL__MAXCH];
} pool__pslot;
SHMQ__STATIC_ASSERT(pslot_chunks_aligned, offsetof(pool__pslot, chunks) % 64 == 0);
SHMQ__STATIC_ASSERT(pslot_size_aligned, sizeof(pool__pslot) % 64 == 0);
SHMQ__STATIC_ASSERT(pchunk_size, sizeof(pool__pchunk) == 64);

typedef struct pool__ledger {  /* one per worker, 64 bytes */
    int32_t pid;
    uint32_t state;    /* POOL__W_* */
    uint64_t tasks;    /* elements run by this worker process */
    int64_t pad[6];
} pool__ledger;

typedef struct pool__arena_hdr {
    uint64_t magic, version, reserve;
    shmq__wait work;          /* word bumped at each publish; idle workers sleep on it */
    shmq__wait done;          /* word bumped at each completion; parent waiters sleep on it */
    uint32_t closing;         /* atomic: 1 exit when idle, 2 exit now */
    uint32_t done_waiters;    /* atomic: parent threads asleep on `done` */
    uint32_t work_sleepers;   /* atomic: workers asleep on `work` */
    uint32_t monitor_sleeping;/* atomic: the monitor waits in poll(): poke it */
    uint64_t st_completed, st_failed; /* atomic */
    uint64_t a_top;           /* atomic: the allocator's bump offset */
    uint64_t a_size;          /* atomic: bytes of the file reserved (only grows) */
    uint64_t a_free[64];      /* atomic: per size class, (tag << 40) | (offset / 64) */
    uint64_t ring_head;       /* atomic: advanced by whoever passes a spent entry */
    uint64_t ring_tail;       /* atomic: the parent publishes */
    uint64_t ring[POOL__RING];/* (gen << 32) | slot */
} pool__arena_hdr;
/* the slots follow the header on a cache line boundary (the mapping is page aligned) */
#define POOL__HDR_BYTES ((sizeof(pool__arena_hdr) + 63) & ~(size_t)63)

typedef struct pool__blk { /* the 64 bytes before each arena block */
    uint64_t cls;   /* log2 of the block's size */
    uint64_t magic; /* atomic: POOL__BLK_MAGIC while allocated */
    uint64_t next;  /* atomic: free list link (an offset) while free */
} pool__blk;
#define POOL__BLK_MAGIC 0x6b6c626c6f6f70ull

struct pool__proc {
    unsigned char *base;      /* the arena mapping; fixed */
    size_t reserve;           /* its length; fixed */
    int memfd;
    pid_t parent_pid;
    sigset_t user_mask;       /* the signal mask workers start with */
    pool__arena_hdr *hdr;
    pool__ledger *ledger;     /* [nworkers] */
    pool__pslot *slots;       /* [POOL__NSLOTS] */
    pthread_mutex_t amu;      /* POSIX fallback: serialises growing the file */
    /* under pool.mu: */
    pool_future_t *slot_future[POOL__NSLOTS]; /* the future of an APPLY slot */
    unsigned char slot_busy[POOL__NSLOTS];
    int nbusy;
    pool_future_t *pend_head, *pend_tail;     /* futures waiting for a slot */
    int *death_fd;            /* [nworkers]: read end of each worker's life pipe, -1 */
    pid_t *pid;               /* [nworkers] */
    int notify_rd, notify_wr; /* workers poke the monitor */
    int ctl[2];               /* fork server: [0] ours, [1] the server's */
    pid_t server_pid;
    pthread_t monitor;
    int monitor_started;      /* atomic */
    int stop_decided;         /* mu: the monitor saw the pool closed and idle (or terminated)
                               * and stops the workers: nothing may be published any more */
    int mon_join;             /* under pool.mu: 0, 1 being joined, 2 joined */
    size_t iter_windows;      /* under pool.mu: job slots iterators may hold */
    unsigned char *via_server;/* [nworkers]: forked by the fork server (monitor only) */
    int *fails;               /* [nworkers]: failed starts in a row (monitor only) */
    double *next_try;         /* [nworkers]: when to start it again (monitor only) */
    struct pollfd *pfd;       /* the monitor's poll set (here so that forked workers still reach it) */
    int workers_alive;
    uint64_t deaths, started;
};

/* The process pool's parts (see >>impl-process); the thread pool calls into them. */
struct pool__proc;
typedef struct pool__progress pool__progress;
static int pool__proc_create(pool_t *p, const sigset_t *user_mask);
static void *pool__pmonitor(void *arg);
static void pool__proc_poke(pool_t *p);
static void pool__proc_free(pool_t *p);
static int pool__proc_submit(pool_t *p, pool_future_t *f);
static int pool__proc_future_wait(pool_future_t *f, int timeout_ms);
static int pool__proc_cancel(pool_future_t *f);
static int pool__proc_map(pool_t *p, pool_fn fn, const void *in, size_t in_size, void *out,
                          size_t out_size, size_t n, const pool_map_opts *opts, pool__progress *pr);
static int pool__proc_run(pool_t *p, int kind, uint64_t fn, void *ctx, void *in, void *out,
                          size_t in_size, size_t out_size, int64_t begin, int64_t end, int64_t chunk,
                          pool__progress *pr, pool_failure *failure);
static void *pool__arena_alloc(struct pool__proc *pp, size_t size);
static void pool__arena_free(struct pool__proc *pp, void *ptr);
static int pool__is_in_arena(const struct pool__proc *pp, const void *ptr, size_t len);
static int pool__piter_open(pool_iter_t *it, size_t nwin);
static int pool__piter_next(pool_iter_t *it, void *out, size_t *index, int timeout_ms);
static void pool__piter_free_windows(pool_iter_t *it);

static POOL__TLS pool__worker *pool__self;
static int pool__in_monitor(const pool_t *p);
static unsigned pool__fork_generation;
static pthread_once_t pool__atfork_once = PTHREAD_ONCE_INIT;

static void pool__atfork_child(void)
{
    shmq__fetch_add(&pool__fork_generation, 1u, SHMQ__SEQ_CST);
    pool__self = NULL;
}
static void pool__atfork_register(void)
{
    pthread_atfork(NULL, NULL, pool__atfork_child);
}
static int pool__forked(const pool_t *p)
{
    return p->fork_gen != shmq__load(&pool__fork_generation, SHMQ__RELAXED);
}

/* >>impl-errors */
POOL_DEF const char *pool_strerror(int code)
{
#define POOL__CASE(name, value, text) case value: return text;
    switch (code) {
        POOL_ERRORS(POOL__CASE)
    default: break;
    }
#undef POOL__CASE
    return code > 0 ? "task error (the task's own non-zero code)" : "unknown error code";
}

/* >>impl-time */
static double pool__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* The absolute time for pthread_cond_timedwait, `ms` from now, on the clock the
 * pool's condvars use (CLOCK_MONOTONIC where supported). */
static struct timespec pool__deadline(double ms)
{
    struct timespec ts;
    int64_t ns;
#if defined(__APPLE__)
    clock_gettime(CLOCK_REALTIME, &ts);
#else
    clock_gettime(CLOCK_MONOTONIC, &ts);
#endif
    if (ms < 0) ms = 0;
    if (ms > 1e12) ms = 1e12; /* ~30 years: no overflow below */
    ns = (int64_t)(ms * 1e6) + (int64_t)ts.tv_nsec;
    ts.tv_sec += (time_t)(ns / 1000000000);
    ts.tv_nsec = (long)(ns % 1000000000);
    return ts;
}

static int pool__cond_init(pthread_cond_t *cv)
{
    pthread_condattr_t a;
    int rc;
    if (pthread_condattr_init(&a) != 0) return -1;
#if !defined(__APPLE__)
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
#endif
    rc = pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
    return rc == 0 ? 0 : -1;
}

/* Waits on cv until woken or the absolute deadline (NULL: forever). */
static void pool__cond_wait(pthread_cond_t *cv, pthread_mutex_t *mu, const struct timespec *deadline)
{
    if (deadline) pthread_cond_timedwait(cv, mu, deadline);
    else pthread_cond_wait(cv, mu);
}

/* >>impl-queue: the job list, under pool.mu */
static void pool__enqueue(pool_t *p, pool__item *it)
{
    it->next = NULL;
    it->prev = p->tail;
    if (p->tail) p->tail->next = it;
    else p->head = it;
    p->tail = it;
    it->queued = 1;
    shmq__store(&p->jlen, p->jlen + 1, SHMQ__RELAXED);
}

static void pool__unlink(pool_t *p, pool__item *it)
{
    if (it->prev) it->prev->next = it->next;
    else p->head = it->next;
    if (it->next) it->next->prev = it->prev;
    else p->tail = it->prev;
    it->next = it->prev = NULL;
    it->queued = 0;
    shmq__store(&p->jlen, p->jlen - 1, SHMQ__RELAXED);
}

/* Under mu. */
static void pool__wake_workers(pool_t *p, uint64_t n)
{
    if (shmq__load(&p->sleepers, SHMQ__SEQ_CST) == 0 || n == 0) return;
    if (n > 1) pthread_cond_broadcast(&p->work_cv);
    else pthread_cond_signal(&p->work_cv);
}

/* >>impl-fqueue: the future queue (see the design note) */
static void pool__fq_push(pool_t *p, pool__item *it)
{
    pool__item *prev;
    shmq__store(&it->next, (pool__item *)NULL, SHMQ__RELAXED);
    prev = shmq__xchg(&p->fq_tail, it, SHMQ__SEQ_CST);
    shmq__store(&prev->next, it, SHMQ__RELEASE);
}

/* 1 when the future queue holds something (maybe not poppable yet). A pop that
 * finds a half-done push may leave the stub at the tail behind a real head: so
 * the tail first, then the head (written before the stub's push). */
static int pool__fq_busy(pool_t *p)
{
    return shmq__load(&p->fq_tail, SHMQ__SEQ_CST) != &p->fq_stub ||
           shmq__load(&p->fq_head, SHMQ__SEQ_CST) != &p->fq_stub;
}

/* Futures queued and not yet taken (approximate while others push and pop). */
static uint64_t pool__fq_len(pool_t *p)
{
    uint64_t in = shmq__load(&p->fq_pushed, SHMQ__RELAXED), out = shmq__load(&p->fq_popped, SHMQ__RELAXED);
    return in > out ? in - out : 0;
}

/* The oldest item, or NULL when the queue is empty or its oldest push is half
 * done. Under fq_lock. */
static pool__item *pool__fq_pop(pool_t *p)
{
    pool__item *head = p->fq_head, *next = shmq__load(&head->next, SHMQ__ACQUIRE);
    if (head == &p->fq_stub) {
        if (!next) return NULL;
        head = next;
        shmq__store(&p->fq_head, head, SHMQ__RELAXED);
        next = shmq__load(&head->next, SHMQ__ACQUIRE);
    }
    if (!next) {
        if (shmq__load(&p->fq_tail, SHMQ__ACQUIRE) != head) return NULL; /* a push is half done */
        pool__fq_push(p, &p->fq_stub); /* so that the last item can leave */
        next = shmq__load(&head->next, SHMQ__ACQUIRE);
        if (!next) return NULL;
    }
    shmq__store(&p->fq_head, next, SHMQ__RELAXED);
    return head;
}

static int pool__fq_trylock(pool_t *p)
{
    return shmq__load(&p->fq_lock, SHMQ__RELAXED) == 0 &&
           shmq__xchg(&p->fq_lock, 1u, SHMQ__ACQUIRE) == 0;
}

/* Pops up to max futures into out: how many (0 also when another taker holds the
 * queue; pool__fq_busy tells whether to look again). */
static int pool__fq_take(pool_t *p, pool__item **out, int max)
{
    int n = 0;
    if (!pool__fq_busy(p) || !pool__fq_trylock(p)) return 0;
    while (n < max && (out[n] = pool__fq_pop(p)) != NULL) n++;
    if (n) shmq__store(&p->fq_popped, p->fq_popped + (uint64_t)n, SHMQ__RELAXED);
    shmq__store(&p->fq_lock, 0u, SHMQ__RELEASE);
    return n;
}

/* Signals one sleeping worker unless a worker spins (it will see the work). */
static void pool__wake_one(pool_t *p)
{
    if (shmq__load(&p->sleepers, SHMQ__SEQ_CST) == 0 || shmq__load(&p->spinners, SHMQ__SEQ_CST) > 0) return;
    pthread_mutex_lock(&p->mu);
    if (shmq__load(&p->sleepers, SHMQ__RELAXED) > 0) pthread_cond_signal(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
}

/* Claims the next chunk of a queued job; the job leaves the queue with its last
 * chunk, on stop, or (imap) when no result slot is free. Returns 1 and sets *chunk,
 * *slot on success. Under mu. */
static int pool__claim_chunk(pool_t *p, pool__job *j, uint64_t *chunk, size_t *slot)
{
    size_t s = 0;
    if (j->stop || j->next >= j->nchunks) {
        if (j->item.queued) pool__unlink(p, &j->item);
        return 0;
    }
    if (j->kind == POOL__JOB_IMAP) {
        if (j->free_slots == 0) {
            if (j->item.queued) pool__unlink(p, &j->item); /* requeued when a slot frees */
            return 0;
        }
        for (s = 0; s < j->nslots; s++)
            if (j->slot_state[s] == POOL__SLOT_FREE) break;
        POOL_ASSERT(s < j->nslots);
        j->slot_state[s] = POOL__SLOT_RUNNING;
        j->slot_chunk[s] = (int64_t)j->next;
        j->free_slots--;
    }
    *chunk = j->next;
    shmq__store(&j->next, j->next + 1, SHMQ__RELAXED); /* atomic reads: pool__run_job's spin */
    *slot = s;
    if (j->next >= j->nchunks || (j->kind == POOL__JOB_IMAP && j->free_slots == 0))
        if (j->item.queued) pool__unlink(p, &j->item);
    return 1;
}

/* What a taker gets: a chunk of a job, or a future (out of the queue: its queue
 * reference passes to the taker). */
typedef struct pool__take {
    pool__item *item;
    uint64_t chunk;
    size_t slot;
} pool__take;

/* Claims a chunk of the first job that has one. Under mu. */
static int pool__take_job(pool_t *p, pool__take *t)
{
    while (p->head) {
        pool__item *it = p->head;
        if (pool__claim_chunk(p, (pool__job *)it, &t->chunk, &t->slot)) {
            t->item = it;
            return 1;
        }
        /* the job left the list: look at the next one */
    }
    return 0;
}

/* pool__take_job when the job list looks non-empty. Without mu. */
static int pool__take_job_unlocked(pool_t *p, pool__take *t)
{
    int got;
    if (shmq__load(&p->jlen, SHMQ__ACQUIRE) == 0) return 0;
    pthread_mutex_lock(&p->mu);
    got = pool__take_job(p, t);
    pthread_mutex_unlock(&p->mu);
    return got;
}

/* Takes the next runnable thing, jobs first. Without mu. */
static int pool__take_next(pool_t *p, pool__take *t)
{
    return pool__take_job_unlocked(p, t) || pool__fq_take(p, &t->item, 1);
}

/* 1 when either queue holds something. */
static int pool__has_work(pool_t *p)
{
    return shmq__load(&p->jlen, SHMQ__SEQ_CST) > 0 || pool__fq_busy(p);
}

/* >>impl-futures */
static void pool__core_free(pool_t *p);

/* The free list's value once pool_destroy closed it: an address no future has. */
#define POOL__FREE_CLOSED(p) ((pool_future_t *)(void *)&(p)->free_top)

/* Pops a recycled future, or NULL when there is none or another thread holds
 * free_lock. free_mine is a private list for the holder of free_lock: a future
 * freed while nobody holds it goes there directly, and when it is empty the
 * allocator takes the whole shared list at once (an exchange, so no ABA). */
static pool_future_t *pool__free_pop(pool_t *p)
{
    pool_future_t *f;
    if (shmq__load(&p->free_lock, SHMQ__RELAXED) != 0 || shmq__xchg(&p->free_lock, 1u, SHMQ__ACQUIRE) != 0)
        return NULL;
    f = p->free_mine;
    if (f == POOL__FREE_CLOSED(p)) f = NULL; /* destroyed (only a misuse gets here) */
    else if (!f && shmq__load(&p->free_top, SHMQ__RELAXED) != NULL) {
        f = shmq__xchg(&p->free_top, (pool_future_t *)NULL, SHMQ__ACQUIRE);
        shmq__store(&p->nfree, 0u, SHMQ__RELAXED);
        if (f == POOL__FREE_CLOSED(p)) { /* destroyed (only a misuse gets here) */
            shmq__store(&p->free_top, f, SHMQ__RELAXED);
            f = NULL;
        }
    }
    if (f) {
        p->free_mine = f->free_next;
        if (p->nmine) p->nmine--;
    }
    shmq__store(&p->free_lock, 0u, SHMQ__RELEASE);
    return f;
}

/* Pushes f on the shared free list: 0 when pool_destroy closed it. After a push
 * succeeded, p may be gone (pool_destroy frees what it finds there). */
static int pool__free_push(pool_t *p, pool_future_t *f)
{
    pool_future_t *top = shmq__load(&p->free_top, SHMQ__RELAXED);
    /* an approximate count (no read-modify-write): it only bounds the list */
    shmq__store(&p->nfree, shmq__load(&p->nfree, SHMQ__RELAXED) + 1, SHMQ__RELAXED);
    do {
        if (top == POOL__FREE_CLOSED(p)) return 0;
        f->free_next = top;
    } while (!shmq__cas(&p->free_top, &top, f));
    return 1;
}

/* pool_destroy: closes the free lists and frees what they hold; how many. */
static uint64_t pool__free_close(pool_t *p)
{
    pool_future_t *lists[2];
    uint64_t n = 0;
    int i;
    lists[0] = shmq__xchg(&p->free_top, POOL__FREE_CLOSED(p), SHMQ__ACQUIRE);
    while (shmq__xchg(&p->free_lock, 1u, SHMQ__ACQUIRE) != 0) sched_yield();
    lists[1] = p->free_mine;
    p->free_mine = POOL__FREE_CLOSED(p);
    shmq__store(&p->free_lock, 0u, SHMQ__RELEASE);
    for (i = 0; i < 2; i++) {
        pool_future_t *f = lists[i];
        if (f == POOL__FREE_CLOSED(p)) continue; /* destroyed twice: not ours to free */
        while (f) {
            pool_future_t *next = f->free_next;
            POOL_FREE(f->heap);
            POOL_FREE(f);
            f = next;
            n++;
        }
    }
    return n;
}

/* A future with room for `need` bytes of argument and result: recycled if one is
 * free, else allocated. */
static pool_future_t *pool__future_alloc(pool_t *p, size_t need)
{
    pool_future_t *f = pool__free_pop(p);
    if (!f) {
        f = (pool_future_t *)POOL_MALLOC(sizeof *f);
        if (!f) return NULL;
        f->heap = NULL;
        f->heap_cap = 0;
        shmq__fetch_add(&p->live, 1u, SHMQ__RELAXED);
    }
    if (need > POOL__INLINE && f->heap_cap < need) {
        unsigned char *h = (unsigned char *)POOL_REALLOC(f->heap, need);
        if (!h) {
            POOL_FREE(f->heap);
            POOL_FREE(f);
            if (shmq__fetch_sub(&p->live, 1u, SHMQ__ACQ_REL) == (POOL__RELEASED | 1u)) pool__core_free(p);
            return NULL;
        }
        f->heap = h;
        f->heap_cap = need;
    }
    f->pool = p;
    f->item.type = POOL__ITEM_FUTURE;
    f->item.queued = 0;
    f->item.next = f->item.prev = NULL;
    f->arg = need <= POOL__INLINE ? f->inl.bytes : f->heap;
    return f;
}

/* Drops one reference; the last one recycles the future, or frees it (and the
 * pool's core if the pool was destroyed and this was its last future). `live`
 * counts the futures in existence, recycled ones included. */
static void pool__future_unref(pool_future_t *f)
{
    pool_t *p = f->pool;
    if (shmq__fetch_sub(&f->refs, 1u, SHMQ__ACQ_REL) != 1) return;
    if (f->heap && f->heap_cap > 4096) { /* do not hoard big buffers */
        POOL_FREE(f->heap);
        f->heap = NULL;
        f->heap_cap = 0;
    }
    /* A caller that frees its future is likely to submit the next one: straight
     * back to the allocator's list if nobody allocates right now (one exchange, and
     * the next allocation need not take the shared list). Workers use the shared
     * list, so that they do not write the submitters' cache line. */
    if (!(pool__self && pool__self->pool == p) && shmq__load(&p->free_lock, SHMQ__RELAXED) == 0 &&
        shmq__xchg(&p->free_lock, 1u, SHMQ__ACQUIRE) == 0) {
        int kept = p->nmine < POOL__FREE_MAX && p->free_mine != POOL__FREE_CLOSED(p);
        if (kept) {
            f->free_next = p->free_mine;
            p->free_mine = f;
            p->nmine++;
        }
        shmq__store(&p->free_lock, 0u, SHMQ__RELEASE); /* p may go from here on if kept */
        if (kept) return;
    } else if (shmq__load(&p->nfree, SHMQ__RELAXED) < POOL__FREE_MAX && pool__free_push(p, f)) {
        return;
    }
    POOL_FREE(f->heap);
    POOL_FREE(f);
    if (shmq__fetch_sub(&p->live, 1u, SHMQ__ACQ_REL) == (POOL__RELEASED | 1u)) pool__core_free(p);
}

static void pool__wake_done_waiters(pool_t *p)
{
    if (shmq__load(&p->done_waiters, SHMQ__SEQ_CST) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->done_cv);
        pthread_mutex_unlock(&p->mu);
    }
}

/* Publishes the outcome of a future; the caller holds a reference. */
static void pool__future_complete(pool_future_t *f, int code, int sig)
{
    pool_t *p = f->pool;
    f->code = code;
    f->signal = sig;
    shmq__store(&f->state, (uint32_t)POOL__F_DONE, SHMQ__SEQ_CST);
    pool__wake_done_waiters(p); /* before the callback: a slow callback delays nobody */
    /* on_done sets SET then looks at the state; we set DONE then look at cb_state
     * (seq_cst both): one of us sees the other, and the exchange picks who calls */
    if (shmq__load(&f->cb_state, SHMQ__SEQ_CST) == POOL__CB_SET &&
        shmq__xchg(&f->cb_state, (uint32_t)POOL__CB_FIRED, SHMQ__ACQ_REL) == POOL__CB_SET)
        f->cb(f, f->cb_user);
}

static void pool__count(pool_t *p, int code)
{
    pool__worker *w = pool__self;
    if (w && w->pool == p) {
        if (code == 0) shmq__store(&w->completed, w->completed + 1, SHMQ__RELAXED);
        else shmq__store(&w->failed, w->failed + 1, SHMQ__RELAXED);
    } else if (code == 0) {
        shmq__fetch_add(&p->st_completed, 1u, SHMQ__RELAXED);
    } else {
        shmq__fetch_add(&p->st_failed, 1u, SHMQ__RELAXED);
    }
}

/* Runs a future this thread has claimed (state RUNNING), or cancels it if the
 * pool was terminated meanwhile (it sat in a worker's batch, or was pushed just
 * before): 1 if it ran. */
static int pool__future_run(pool_future_t *f)
{
    pool_t *p = f->pool;
    int code;
    if (shmq__load(&p->state, SHMQ__ACQUIRE) == POOL__TERMINATED) {
        shmq__fetch_add(&p->st_cancelled, 1u, SHMQ__RELAXED);
        pool__future_complete(f, POOL_ECANCELLED, 0);
        return 0;
    }
    code = f->fn(f->arg, f->result, f->ctx);
    pool__count(p, code);
    pool__future_complete(f, code, 0);
    return 1;
}

/* A future taken off the queue: run it unless it was claimed or cancelled
 * meanwhile (cancel it if the pool was terminated); drops the queue reference. */
static void pool__future_take_and_run(pool_future_t *f)
{
    uint32_t expected = POOL__F_QUEUED;
    if (shmq__cas(&f->state, &expected, (uint32_t)POOL__F_RUNNING)) pool__future_run(f);
    pool__future_unref(f);
}

/* >>impl-jobs */
static void pool__job_fail(pool__job *j, int64_t index, int code)
{
    /* under mu */
    if (j->fail_index < 0 || index < j->fail_index) {
        j->fail_index = index;
        j->fail_code = code;
    }
    /* every element still runs (as in Python): the rest of the map is not skipped */
}

/* The element loops of map, one per kind of pool: elements [i, e) from ip/op
 * up to the first that fails; returns e, or the failing element's index with
 * *code set. Functions of their own (POOL__HOT_LOOP), with every value in a
 * local, so that the loop keeps them in registers and does not move with the
 * code around it: inlined into the chunk bookkeeping, the thread pool's map of
 * 10M doubles took 8.7 or 11.1 ms depending on whether assert() was compiled
 * in, the process pool's reloaded its fields from shared memory for every
 * element (docs/pool.md). The process pool's loop also stores the position in
 * the chunk before each element, which names the element a dying worker was in;
 * the thread pool's does not need it (one store per element costs it 5%). */
POOL__HOT_LOOP static int64_t pool__run_elems(pool_fn fn, void *ctx, const unsigned char *ip,
                                              size_t isz, unsigned char *op, size_t osz,
                                              int64_t i, int64_t e, int *code)
{
    for (; i < e; i++, ip += isz) {
        int c = fn(ip, op, ctx);
        if (op) op += osz;
        if (c) {
            *code = c;
            return i;
        }
    }
    return e;
}

POOL__HOT_LOOP static int64_t pool__prun_elems(pool_fn fn, void *ctx, const unsigned char *ip,
                                               size_t isz, unsigned char *op, size_t osz,
                                               int64_t i, int64_t e, int64_t *at, int *code)
{
    for (; i < e; i++, ip += isz) {
        int c;
        shmq__store(at, i, SHMQ__RELAXED);
        c = fn(ip, op, ctx);
        if (op) op += osz;
        if (c) {
            *code = c;
            return i;
        }
    }
    return e;
}

/* Runs one chunk of a job outside the lock, then records it under mu. */
static void pool__job_run_chunk(pool_t *p, pool__job *j, uint64_t chunk, size_t slot)
{
    int64_t b = j->begin + (int64_t)chunk * j->chunk;
    int64_t e = b + j->chunk;
    int64_t i, fail_at = -1, ran = 0;
    int code = 0;
    if (e > j->end || e < b) e = j->end;
    if (j->kind == POOL__JOB_FOR) {
        code = j->body(b, e, j->ctx);
        ran = e - b;
        if (code) fail_at = b;
    } else if (j->kind == POOL__JOB_MAP) {
        /* a claimed chunk runs to its own first failure even when another chunk
         * failed: so the lowest failing index is the one a sequential loop finds */
        i = pool__run_elems(j->fn, j->ctx, j->in + (size_t)b * j->in_size, j->in_size,
                            j->out ? j->out + (size_t)b * j->out_size : NULL, j->out_size, b, e, &code);
        ran = i - b;
        if (i < e) {
            fail_at = i;
            ran++;
        }
    } else { /* imap: results go to the slot, every element runs */
        unsigned char *out = j->slot_out ? j->slot_out + slot * (size_t)j->chunk * j->out_size : NULL;
        int *codes = j->slot_code + slot * (size_t)j->chunk;
        for (i = b; i < e; i++) {
            codes[i - b] = j->fn(j->in + (size_t)i * j->in_size,
                                 out ? out + (size_t)(i - b) * j->out_size : NULL, j->ctx);
            if (codes[i - b]) shmq__fetch_add(&p->st_failed, 1u, SHMQ__RELAXED);
            ran++;
        }
    }
    if (j->kind != POOL__JOB_IMAP) {
        if (code) {
            shmq__fetch_add(&p->st_failed, 1u, SHMQ__RELAXED);
            shmq__fetch_add(&p->st_completed, (uint64_t)(ran - 1), SHMQ__RELAXED);
        } else {
            shmq__fetch_add(&p->st_completed, (uint64_t)ran, SHMQ__RELAXED);
        }
    } else {
        shmq__fetch_add(&p->st_completed, (uint64_t)ran, SHMQ__RELAXED);
    }
    shmq__fetch_add(&j->items_done, (uint64_t)ran, SHMQ__RELAXED);

    pthread_mutex_lock(&p->mu);
    if (code && j->kind != POOL__JOB_IMAP) pool__job_fail(j, fail_at, code);
    if (j->kind == POOL__JOB_IMAP) {
        j->slot_state[slot] = POOL__SLOT_DONE;
        j->done_fifo[(j->fifo_head + j->fifo_len) % j->nslots] = slot;
        j->fifo_len++;
    }
    shmq__store(&j->finished, j->finished + 1, SHMQ__RELEASE); /* atomic reads: pool__run_job's spin */
    if (j->waiting) pthread_cond_broadcast(&p->done_cv);
    pthread_mutex_unlock(&p->mu);
}

static void pool__run_taken(pool_t *p, pool__take *t)
{
    if (t->item->type == POOL__ITEM_FUTURE) pool__future_take_and_run((pool_future_t *)t->item);
    else pool__job_run_chunk(p, (pool__job *)t->item, t->chunk, t->slot);
}

/* Runs the next future of this worker's batch: 0 when there is none. */
static int pool__run_own_batch(pool__worker *w)
{
    if (w->bpos >= w->bn) return 0;
    pool__future_take_and_run((pool_future_t *)w->batch[w->bpos++]); /* consumed first: a
                                                                         * wait inside it may run the rest */
    return 1;
}

/* >>impl-worker */
static void pool__set_thread_name(const char *prefix, int index)
{
#if SHMQ__LINUX
    char name[16];
    snprintf(name, sizeof name, "%.10s-%d", prefix, index);
    prctl(PR_SET_NAME, name, 0, 0, 0);
#else
    (void)prefix;
    (void)index;
#endif
}

/* Spins up to spin_us waiting for work or a state change. */
static void pool__spin_for_work(pool_t *p)
{
    double until;
    int n = 0;
    if (p->cfg.spin_us <= 0) return;
    shmq__fetch_add(&p->spinners, 1u, SHMQ__SEQ_CST);
    until = pool__now_ms() + p->cfg.spin_us / 1000.0;
    while (!pool__has_work(p) && shmq__load(&p->state, SHMQ__RELAXED) == POOL__OPEN) {
        shmq__cpu_relax();
        if ((++n & 63) == 0) {
            if (pool__now_ms() > until) break;
            sched_yield(); /* with more threads than cores, let the producer run */
        }
    }
    shmq__fetch_sub(&p->spinners, 1u, SHMQ__SEQ_CST);
}

static void *pool__worker_main(void *arg)
{
    pool__worker *w = (pool__worker *)arg;
    pool_t *p = w->pool;
    int rc = 0;
    pool__take t;
    unsigned stuck = 0;
    pool__self = w;
    pool__set_thread_name(p->cfg.name, w->index);
    if (p->cfg.initializer) rc = p->cfg.initializer(w->index, p->cfg.init_ctx);
    pthread_mutex_lock(&p->mu);
    p->init_done++;
    if (rc) p->init_failed = 1;
    pthread_cond_broadcast(&p->done_cv);
    while (!p->go) pthread_cond_wait(&p->work_cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
    for (;;) {
        int nb;
        if (pool__take_job_unlocked(p, &t)) {
            pool__run_taken(p, &t);
            stuck = 0;
            continue;
        }
        /* with a backlog of futures, take a few at once (a fair share) */
        nb = (int)(pool__fq_len(p) / (uint64_t)(p->nworkers + 1));
        nb = pool__fq_take(p, w->batch, nb < 1 ? 1 : nb > POOL__BATCH ? POOL__BATCH : nb);
        if (nb > 0) {
            if (pool__fq_busy(p)) pool__wake_one(p); /* more queued: pass the word on */
            w->bpos = 0;
            w->bn = nb;
            while (pool__run_own_batch(w)) {}
            stuck = 0;
            continue;
        }
        /* the state first, then the queues (see the design note) */
        if (shmq__load(&p->state, SHMQ__SEQ_CST) != POOL__OPEN) {
            if (!pool__has_work(p)) break;
            sched_yield(); /* a push is half done, or another taker holds the queue */
            continue;
        }
        if (pool__has_work(p)) { /* another taker holds the queue, or a push is half done */
            if ((++stuck & 63) == 0) sched_yield();
            else shmq__cpu_relax();
            continue;
        }
        pool__spin_for_work(p);
        if (pool__has_work(p)) continue;
        pthread_mutex_lock(&p->mu);
        shmq__fetch_add(&p->sleepers, 1u, SHMQ__SEQ_CST);
        if (!pool__has_work(p) && shmq__load(&p->state, SHMQ__SEQ_CST) == POOL__OPEN)
            pthread_cond_wait(&p->work_cv, &p->mu);
        shmq__fetch_sub(&p->sleepers, 1u, SHMQ__SEQ_CST);
        pthread_mutex_unlock(&p->mu);
    }
    if (p->cfg.finalizer && !p->init_failed) p->cfg.finalizer(w->index, p->cfg.init_ctx);
    pool__self = NULL;
    return NULL;
}

/* >>impl-create */
/* CPUs we may run on (affinity mask, as taskset and cpusets set it) */
static int pool__online_cpus(void)
{
    long n = shmq__ncpus();
    return n > 0 ? (int)n : 1;
}

static void pool__core_free(pool_t *p)
{
    if (!pool__forked(p)) {
        pthread_mutex_destroy(&p->mu);
        pthread_cond_destroy(&p->work_cv);
        pthread_cond_destroy(&p->done_cv);
    }
    POOL_FREE(p->workers);
    POOL_FREE(p);
}

static void pool__stop_workers(pool_t *p, int started)
{
    int i;
    pthread_mutex_lock(&p->mu);
    if (p->state == POOL__OPEN) p->state = POOL__CLOSED;
    p->go = 1;
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
    if (p->proc) { /* join the monitor once; concurrent callers wait for that join */
        struct pool__proc *pp = p->proc;
        pool__proc_poke(p);
        if (pool__in_monitor(p)) return; /* a callback: the monitor stops by itself */
        pthread_mutex_lock(&p->mu);
        if (!shmq__load(&pp->monitor_started, SHMQ__ACQUIRE) || pp->mon_join == 2) {
            pthread_mutex_unlock(&p->mu);
            return;
        }
        if (pp->mon_join == 1) {
            while (pp->mon_join != 2) pthread_cond_wait(&p->done_cv, &p->mu);
            pthread_mutex_unlock(&p->mu);
            return;
        }
        pp->mon_join = 1;
        pthread_mutex_unlock(&p->mu);
        pthread_join(pp->monitor, NULL);
        pthread_mutex_lock(&p->mu);
        pp->mon_join = 2;
        shmq__store(&pp->monitor_started, 0, SHMQ__RELEASE);
        pthread_cond_broadcast(&p->done_cv);
        pthread_mutex_unlock(&p->mu);
        return;
    }
    for (i = 0; i < started; i++) pthread_join(p->workers[i].thread, NULL);
}

POOL_DEF int pool_create(pool_t **out, const pool_config *cfg)
{
    pool_config c;
    pool_t *p;
    int i, started = 0, err = 0;
    sigset_t all, old;
    if (!out) return POOL_EINVAL;
    *out = NULL;
    if (cfg) c = *cfg;
    else memset(&c, 0, sizeof c);
    if (c.workers < 0 || c.progress_interval_ms < 0 || c.spin_us < -1 || c.max_queued < 0)
        return POOL_EINVAL;
    if (c.kind != POOL_THREADS && c.kind != POOL_PROCESSES) return POOL_EINVAL;
    if (c.start_method != POOL_START_FORK && c.start_method != POOL_START_FORKSERVER) return POOL_EINVAL;
    if (c.kind == POOL_PROCESSES && pool__self && pool__self->pool && pool__self->pool->proc)
        return POOL_EINWORKER; /* a process-pool worker does not start pools of processes */
    if (c.workers == 0) c.workers = pool__online_cpus();
    if (c.kind == POOL_PROCESSES && c.workers > 4096) return POOL_EINVAL; /* owner ids are 16-bit */
    if (!c.name || !c.name[0]) c.name = "pool";
    if (c.progress_interval_ms == 0) c.progress_interval_ms = 100;
    if (c.spin_us == 0) c.spin_us = pool__online_cpus() > 1 ? 50 : -1; /* one CPU: spinning only delays */
    pthread_once(&pool__atfork_once, pool__atfork_register);

    p = (pool_t *)POOL_MALLOC(sizeof *p);
    if (!p) return POOL_ENOMEM;
    memset(p, 0, sizeof *p);
    p->cfg = c;
    p->nworkers = c.workers;
    p->fq_tail = p->fq_head = &p->fq_stub;
    p->fork_gen = shmq__load(&pool__fork_generation, SHMQ__RELAXED);
    p->workers = (pool__worker *)POOL_MALLOC(sizeof *p->workers * (size_t)c.workers);
    if (!p->workers) { POOL_FREE(p); return POOL_ENOMEM; }
    memset(p->workers, 0, sizeof *p->workers * (size_t)c.workers);
    if (pthread_mutex_init(&p->mu, NULL) != 0) { POOL_FREE(p->workers); POOL_FREE(p); return POOL_ESYS; }
    if (pool__cond_init(&p->work_cv) != 0) {
        pthread_mutex_destroy(&p->mu);
        POOL_FREE(p->workers); POOL_FREE(p);
        return POOL_ESYS;
    }
    if (pool__cond_init(&p->done_cv) != 0) {
        pthread_cond_destroy(&p->work_cv);
        pthread_mutex_destroy(&p->mu);
        POOL_FREE(p->workers); POOL_FREE(p);
        return POOL_ESYS;
    }

    /* Workers never take asynchronous signals: Ctrl-C goes to the program's threads. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (i = 0; i < c.workers; i++) {
        p->workers[i].pool = p;
        p->workers[i].index = i;
    }
    if (c.kind == POOL_PROCESSES) {
        err = pool__proc_create(p, &old);
        if (err == POOL_OK) {
            if (pthread_create(&p->proc->monitor, NULL, pool__pmonitor, p) != 0) err = POOL_ESYS;
            else {
                shmq__store(&p->proc->monitor_started, 1, SHMQ__RELEASE);
                started = c.workers;
            }
        }
    } else {
        for (i = 0; i < c.workers; i++) {
            if (pthread_create(&p->workers[i].thread, NULL, pool__worker_main, &p->workers[i]) != 0) {
                err = POOL_ESYS;
                break;
            }
            p->workers[i].started = 1;
            started++;
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);

    pthread_mutex_lock(&p->mu);
    while (p->init_done < started) pthread_cond_wait(&p->done_cv, &p->mu);
    if (!err && p->init_failed) err = POOL_EINIT;
    if (err) p->state = POOL__TERMINATED;
    p->go = 1;
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
    if (err) {
        pool__stop_workers(p, started);
        pool__proc_free(p);
        pool__core_free(p);
        return err;
    }
    *out = p;
    return POOL_OK;
}

/* >>impl-apply */
/* POOL_EINWORKER in a worker process of p, POOL_EFORKED in another fork child. */
static int pool__check_caller(const pool_t *p)
{
    if (p->proc && pool__self && pool__self->pool == p) return POOL_EINWORKER;
    if (pool__forked(p)) return POOL_EFORKED;
    return POOL_OK;
}

static int pool__check_open(pool_t *p)
{
    int rc = pool__check_caller(p);
    if (rc != POOL_OK) return rc;
    if (shmq__load(&p->state, SHMQ__RELAXED) != POOL__OPEN) return POOL_ECLOSED;
    return POOL_OK;
}

/* Lets the submitting thread run queued work while the queue holds
 * cfg.max_queued items or more (backpressure; off by default). */
static void pool__backpressure(pool_t *p)
{
    while (pool__fq_len(p) + shmq__load(&p->jlen, SHMQ__RELAXED) >= (uint64_t)p->cfg.max_queued) {
        pool__take t;
        if (!pool__take_next(p, &t)) break;
        pool__run_taken(p, &t);
    }
}

static void pool__future_fill(pool_future_t *f, pool_fn fn, const void *arg, size_t arg_size,
                              size_t arg_room, size_t result_size, void *ctx, uint32_t refs)
{
    if (arg_size) memcpy(f->arg, arg, arg_size);
    f->result = f->arg + arg_room;
    f->arg_size = arg_size;
    f->result_size = result_size;
    if (result_size) memset(f->result, 0, result_size);
    f->fn = fn;
    f->ctx = ctx;
    f->code = 0;
    f->signal = 0;
    f->cb = NULL;
    f->cb_user = NULL;
    f->state = POOL__F_QUEUED;
    f->cb_state = POOL__CB_NONE;
    f->refs = refs;
}

static int pool__submit(pool_t *p, pool_fn fn, const void *arg, size_t arg_size,
                        size_t result_size, void *ctx, pool_future_t **out)
{
    pool_future_t *f;
    size_t arg_room, need;
    uint32_t refs;
    int rc;
    if (!p || !fn || (arg_size && !arg)) return POOL_EINVAL;
    if ((rc = pool__check_open(p)) != POOL_OK) return rc;
    /* the queue's reference, and the user's; a thread pool's submitter keeps one
     * even without a handle until it is done with f: once f is in the queue, a
     * taker may run it, drop its own reference and recycle it */
    refs = out || !p->proc ? 2u : 1u;
    arg_room = (arg_size + POOL__ALIGN - 1) & ~(size_t)(POOL__ALIGN - 1);
    if (arg_room < arg_size || arg_room + result_size < arg_room) return POOL_EOVERFLOW;
    need = arg_room + result_size;
    if (p->cfg.max_queued > 0 && !p->proc) pool__backpressure(p);

    f = pool__future_alloc(p, need);
    if (!f) return POOL_ENOMEM;
    pool__future_fill(f, fn, arg, arg_size, arg_room, result_size, ctx, refs);
    if (p->proc) { /* a process pool: the arguments go to the arena */
        rc = pool__proc_submit(p, f);
        if (rc != POOL_OK) {
            f->refs = 1;
            pool__future_unref(f);
            return rc;
        }
        shmq__fetch_add(&p->st_submitted, 1u, SHMQ__RELAXED);
        if (out) *out = f;
        return POOL_OK;
    }
    pool__fq_push(p, &f->item);
    shmq__fetch_add(&p->fq_pushed, 1u, SHMQ__RELAXED);
    POOL__TEST_HOOK(1, f);
    if (shmq__load(&p->state, SHMQ__SEQ_CST) != POOL__OPEN) {
        /* closed meanwhile: take it back unless a worker already has it (the
         * queue's entry is dropped by whoever takes it, or by pool_destroy) */
        uint32_t expected = POOL__F_QUEUED;
        if (shmq__cas(&f->state, &expected, (uint32_t)POOL__F_RUNNING)) {
            POOL__TEST_HOOK(2, f);
            shmq__fetch_sub(&p->st_submitted, 1u, SHMQ__RELAXED); /* fq_pushed counted it */
            pool__future_unref(f); /* ours: it is not handed out */
            return POOL_ECLOSED;
        }
    }
    pool__wake_one(p);
    if (out) *out = f;
    else pool__future_unref(f);
    return POOL_OK;
}

POOL_DEF int pool_apply_async(pool_t *p, pool_fn fn, const void *arg, size_t arg_size,
                              size_t result_size, void *ctx, pool_future_t **out)
{
    if (!out) return POOL_EINVAL;
    *out = NULL;
    return pool__submit(p, fn, arg, arg_size, result_size, ctx, out);
}

POOL_DEF int pool_submit(pool_t *p, pool_fn fn, const void *arg, size_t arg_size, void *ctx)
{
    return pool__submit(p, fn, arg, arg_size, 0, ctx, NULL);
}

/* Drops entries that were claimed or cancelled while queued from the head of the
 * future queue (at most a few), so that they do not pile up while every worker
 * is busy. It leaves the last entry: taking that one costs one more exchange
 * (the stub's push), and the next call, or a worker, drops it. */
static void pool__fq_drop_stale(pool_t *p)
{
    pool__item *stale[POOL__BATCH];
    int n = 0, k;
    if (!pool__fq_busy(p) || !pool__fq_trylock(p)) return;
    while (n < POOL__BATCH) {
        pool__item *head = p->fq_head;
        if (head == &p->fq_stub) head = shmq__load(&head->next, SHMQ__ACQUIRE);
        if (!head || !shmq__load(&head->next, SHMQ__ACQUIRE) ||
            shmq__load(&((pool_future_t *)head)->state, SHMQ__ACQUIRE) == POOL__F_QUEUED)
            break;
        if ((stale[n] = pool__fq_pop(p)) == NULL) break;
        n++;
    }
    if (n) shmq__store(&p->fq_popped, p->fq_popped + (uint64_t)n, SHMQ__RELAXED);
    shmq__store(&p->fq_lock, 0u, SHMQ__RELEASE);
    for (k = 0; k < n; k++) pool__future_unref((pool_future_t *)stale[k]);
}

/* Claims f if it is still queued: 1 if this thread ran it (or cancelled it: the
 * pool was terminated, and a worker had it in its batch). */
static int pool__claim_own(pool_future_t *f)
{
    uint32_t expected = POOL__F_QUEUED;
    if (shmq__load(&f->state, SHMQ__RELAXED) != POOL__F_QUEUED) return 0;
    if (!shmq__cas(&f->state, &expected, (uint32_t)POOL__F_RUNNING)) return 0;
    if (pool__future_run(f)) pool__fq_drop_stale(f->pool); /* our reference keeps f alive */
    return 1;
}

/* Waits until f is done or the deadline passes (timeout_ms: -1 forever, 0 poll).
 * Waiting without a time limit, the thread runs f itself if it is still queued, and
 * a worker of the pool also runs other queued items meanwhile. A timed wait only
 * waits: running a task could take longer than the time the caller gave. */
static int pool__future_wait(pool_future_t *f, int timeout_ms)
{
    pool_t *p = f->pool;
    double end = timeout_ms > 0 ? pool__now_ms() + timeout_ms : 0;
    int in_worker = pool__self && pool__self->pool == p;
    int spun = 0, slept = 0;
    if (shmq__load(&f->state, SHMQ__ACQUIRE) == POOL__F_DONE) return POOL_OK;
    if (pool__forked(p)) return POOL_EFORKED;
    if (p->proc) return pool__proc_future_wait(f, timeout_ms);
    for (;;) {
        pool__take t;
        t.item = NULL;
        if (shmq__load(&f->state, SHMQ__ACQUIRE) == POOL__F_DONE) return POOL_OK;
        if (timeout_ms < 0 && pool__claim_own(f)) continue;
        if (in_worker && timeout_ms < 0 && (pool__run_own_batch(pool__self) || pool__take_next(p, &t))) {
            if (t.item) pool__run_taken(p, &t);
            continue;
        }
        if (timeout_ms == 0) return POOL_ETIMEDOUT;
        if (!spun) { /* spin a little first: the runner is usually about to finish */
            int can_help = in_worker && timeout_ms < 0, n = 0;
            double until = pool__now_ms() + POOL__WAIT_SPIN_US / 1000.0;
            spun = 1;
            while (shmq__load(&f->state, SHMQ__ACQUIRE) != POOL__F_DONE &&
                   !(can_help && pool__has_work(p))) {
                shmq__cpu_relax();
                if ((++n & 31) == 0 && pool__now_ms() > until) break;
            }
            continue;
        }
        pthread_mutex_lock(&p->mu);
        shmq__fetch_add(&p->done_waiters, 1u, SHMQ__SEQ_CST);
        if (shmq__load(&f->state, SHMQ__SEQ_CST) != POOL__F_DONE &&
            !(timeout_ms < 0 && ((in_worker && pool__has_work(p)) ||
                                 shmq__load(&f->state, SHMQ__SEQ_CST) == POOL__F_QUEUED))) {
            if (timeout_ms > 0) {
                struct timespec dl;
                double left = end - pool__now_ms();
                if (left <= 0) {
                    shmq__fetch_sub(&p->done_waiters, 1u, SHMQ__SEQ_CST);
                    pthread_mutex_unlock(&p->mu);
                    return shmq__load(&f->state, SHMQ__ACQUIRE) == POOL__F_DONE ? POOL_OK : POOL_ETIMEDOUT;
                }
                dl = pool__deadline(left);
                pool__cond_wait(&p->done_cv, &p->mu, &dl);
            } else {
                pool__cond_wait(&p->done_cv, &p->mu, NULL);
            }
            slept = 1;
        }
        shmq__fetch_sub(&p->done_waiters, 1u, SHMQ__SEQ_CST);
        pthread_mutex_unlock(&p->mu);
        if (timeout_ms > 0 && pool__now_ms() >= end &&
            shmq__load(&f->state, SHMQ__ACQUIRE) != POOL__F_DONE)
            return POOL_ETIMEDOUT;
        /* not slept: queued work that cannot be taken yet (a taker or a pusher is
         * between two steps, perhaps preempted): let it run */
        if (!slept && shmq__load(&f->state, SHMQ__ACQUIRE) != POOL__F_DONE) sched_yield();
        slept = 0;
    }
}

POOL_DEF int pool_future_wait(pool_future_t *f, int timeout_ms)
{
    if (!f || timeout_ms < -1) return POOL_EINVAL;
    return pool__future_wait(f, timeout_ms);
}

POOL_DEF int pool_future_get(pool_future_t *f, void *result, int timeout_ms)
{
    int rc;
    if (!f || timeout_ms < -1) return POOL_EINVAL;
    rc = pool__future_wait(f, timeout_ms);
    if (rc != POOL_OK) return rc;
    if (f->code == 0 && result && f->result_size) memcpy(result, f->result, f->result_size);
    return f->code;
}

POOL_DEF int pool_future_ready(const pool_future_t *f)
{
    return f && shmq__load(&f->state, SHMQ__ACQUIRE) == POOL__F_DONE;
}

POOL_DEF int pool_future_successful(const pool_future_t *f)
{
    return pool_future_ready(f) && f->code == 0;
}

POOL_DEF int pool_future_signal(const pool_future_t *f)
{
    return pool_future_ready(f) ? f->signal : 0;
}

POOL_DEF int pool_future_cancel(pool_future_t *f)
{
    pool_t *p;
    uint32_t expected = POOL__F_QUEUED;
    if (!f) return POOL_EINVAL;
    p = f->pool;
    if (pool__forked(p)) return POOL_EFORKED;
    if (p->proc) return shmq__load(&f->state, SHMQ__ACQUIRE) == POOL__F_DONE ? POOL_EBUSY : pool__proc_cancel(f);
    /* as claiming it: the queue's entry is dropped by whoever takes it */
    if (!shmq__cas(&f->state, &expected, (uint32_t)POOL__F_RUNNING)) return POOL_EBUSY;
    shmq__fetch_add(&p->st_cancelled, 1u, SHMQ__RELAXED);
    pool__future_complete(f, POOL_ECANCELLED, 0);
    return POOL_OK;
}

POOL_DEF int pool_future_on_done(pool_future_t *f, pool_done_fn cb, void *user)
{
    uint32_t expected = POOL__CB_NONE;
    if (!f || !cb) return POOL_EINVAL;
    /* claim the slot first (SETTING), so that a concurrent second caller cannot
     * overwrite the callback of the first */
    if (!shmq__cas(&f->cb_state, &expected, (uint32_t)POOL__CB_SETTING)) return POOL_EBUSY;
    f->cb = cb;
    f->cb_user = user;
    shmq__store(&f->cb_state, (uint32_t)POOL__CB_SET, SHMQ__SEQ_CST);
    /* if it completed meanwhile, the completer may not have seen SET: whoever
     * exchanges SET for FIRED calls it (see pool__future_complete) */
    if (shmq__load(&f->state, SHMQ__SEQ_CST) == POOL__F_DONE &&
        shmq__xchg(&f->cb_state, (uint32_t)POOL__CB_FIRED, SHMQ__ACQ_REL) == POOL__CB_SET)
        cb(f, user);
    return POOL_OK;
}

POOL_DEF void pool_future_free(pool_future_t *f)
{
    if (f) pool__future_unref(f);
}

/* Waits until any (want_all: every) future of fs is done. */
static int pool__wait_set(pool_future_t *const *fs, size_t n, int timeout_ms, size_t *which, int want_all)
{
    pool_t *p;
    size_t i;
    double end = timeout_ms > 0 ? pool__now_ms() + timeout_ms : 0;
    if (!fs || n == 0 || timeout_ms < -1) return POOL_EINVAL;
    for (i = 0; i < n; i++)
        if (!fs[i] || fs[i]->pool != fs[0]->pool) return POOL_EINVAL;
    p = fs[0]->pool;
    for (;;) {
        size_t ndone = 0, first = n;
        for (i = 0; i < n; i++) {
            if (shmq__load(&fs[i]->state, SHMQ__ACQUIRE) == POOL__F_DONE) {
                ndone++;
                if (first == n) first = i;
            }
        }
        if (want_all ? ndone == n : ndone > 0) {
            if (which) *which = first;
            return POOL_OK;
        }
        if (want_all && timeout_ms < 0) { /* run what is still queued ourselves */
            int ran = 0;
            for (i = 0; i < n && !ran; i++) ran = pool__claim_own(fs[i]);
            if (ran) continue;
        }
        if (timeout_ms < 0 && pool__self && pool__self->pool == p) { /* a waiting worker keeps working */
            pool__take t;
            if (pool__run_own_batch(pool__self)) continue;
            if (pool__take_next(p, &t)) { pool__run_taken(p, &t); continue; }
        }
        if (timeout_ms == 0) return POOL_ETIMEDOUT;
        if (pool__forked(p)) return POOL_EFORKED;
        pthread_mutex_lock(&p->mu);
        shmq__fetch_add(&p->done_waiters, 1u, SHMQ__SEQ_CST);
        ndone = 0;
        for (i = 0; i < n; i++)
            if (shmq__load(&fs[i]->state, SHMQ__SEQ_CST) == POOL__F_DONE) ndone++;
        if (!(want_all ? ndone == n : ndone > 0)) {
            if (timeout_ms > 0) {
                struct timespec dl;
                double left = end - pool__now_ms();
                if (left <= 0) {
                    shmq__fetch_sub(&p->done_waiters, 1u, SHMQ__SEQ_CST);
                    pthread_mutex_unlock(&p->mu);
                    return POOL_ETIMEDOUT;
                }
                dl = pool__deadline(left);
                pool__cond_wait(&p->done_cv, &p->mu, &dl);
            } else {
                pool__cond_wait(&p->done_cv, &p->mu, NULL);
            }
        }
        shmq__fetch_sub(&p->done_waiters, 1u, SHMQ__SEQ_CST);
        pthread_mutex_unlock(&p->mu);
        if (timeout_ms > 0 && pool__now_ms() >= end) timeout_ms = 0; /* one last look */
    }
}

POOL_DEF int pool_wait_any(pool_future_t *const *fs, size_t n, int timeout_ms, size_t *which)
{
    return pool__wait_set(fs, n, timeout_ms, which, 0);
}

POOL_DEF int pool_wait_all(pool_future_t *const *fs, size_t n, int timeout_ms)
{
    return pool__wait_set(fs, n, timeout_ms, NULL, 1);
}

/* >>impl-map */
static int64_t pool__auto_chunk(const pool_t *p, int64_t n)
{
    /* many more chunks than threads: a claim costs ~0.1 us, and fine chunks keep
     * every core busy to the end even when the caller, the workers and the rest of
     * the machine share the cores: with more threads than cores, a thread that is
     * preempted holding a chunk finishes it after the others ran out of work, so
     * the last chunk's length is lost on one core (measured on 2 cores, W2 of
     * bench_pool: 9 chunks 1.78x, 65 chunks 1.93-1.96x, 257 chunks as OpenMP's
     * static schedule, 1.96x) */
    int64_t parts = (int64_t)p->nworkers * 128 + 1;
    int64_t c = n / parts + (n % parts != 0);
    return c < 1 ? 1 : c;
}

/* A chunk size from the caller, clamped to [1, n] before any arithmetic. */
static int64_t pool__chunk_of(const pool_t *p, const pool_map_opts *o, int64_t n)
{
    if (o && o->chunksize) return o->chunksize > (size_t)n ? n : (int64_t)o->chunksize;
    return pool__auto_chunk(p, n);
}

static void pool__job_init(pool__job *j, int kind, int64_t begin, int64_t end, int64_t chunk)
{
    memset(j, 0, sizeof *j);
    j->item.type = POOL__ITEM_JOB;
    j->kind = kind;
    j->begin = begin;
    j->end = end;
    j->chunk = chunk;
    j->nchunks = (uint64_t)((end - begin + chunk - 1) / chunk);
    j->fail_index = -1;
}

/* Progress, throttled. */
struct pool__progress {
    pool_progress_fn fn;
    void *user;
    double next_ms;
    int interval;
};

static void pool__progress_tick(pool__progress *pr, uint64_t done, uint64_t total, int force)
{
    double now;
    if (!pr->fn) return;
    now = pool__now_ms();
    if (!force && now < pr->next_ms) return;
    pr->next_ms = now + pr->interval;
    pr->fn(done, total, pr->user);
}

/* Publishes a job, runs its chunks from this thread too, waits for the rest. */
static int pool__run_job(pool_t *p, pool__job *j, pool__progress *pr, uint64_t total)
{
    pool__take t;
    uint64_t skipped, ran = 0;
    double t0;
    pthread_mutex_lock(&p->mu);
    if (p->state != POOL__OPEN) {
        pthread_mutex_unlock(&p->mu);
        return POOL_ECLOSED;
    }
    pool__enqueue(p, &j->item);
    pool__wake_workers(p, j->nchunks - 1); /* this thread takes a chunk too */
    pthread_mutex_unlock(&p->mu);
    shmq__fetch_add(&p->st_submitted, total, SHMQ__RELAXED);
    pool__progress_tick(pr, 0, total, 1);
    t0 = pool__now_ms();
    for (;;) {
        int got;
        pthread_mutex_lock(&p->mu);
        got = pool__claim_chunk(p, j, &t.chunk, &t.slot);
        pthread_mutex_unlock(&p->mu);
        if (!got) break;
        pool__job_run_chunk(p, j, t.chunk, t.slot);
        ran++;
        pool__progress_tick(pr, shmq__load(&j->items_done, SHMQ__RELAXED), total, 0);
    }
    /* The last chunks run in other threads. Sleeping now would cost a wake-up
     * (tens of us on a VM) after they finish, so wait about one chunk's time (as
     * this thread measured it, 1 ms at most) spinning, as idle workers do. */
    if (ran && p->cfg.spin_us > 0) {
        double chunk_ms = (pool__now_ms() - t0) / (double)ran;
        double until = pool__now_ms() + (chunk_ms < 1.0 ? chunk_ms : 1.0);
        int n = 0;
        while (shmq__load(&j->finished, SHMQ__ACQUIRE) < shmq__load(&j->next, SHMQ__RELAXED)) {
            shmq__cpu_relax();
            if ((++n & 63) == 0 && pool__now_ms() > until) break;
        }
    }
    pthread_mutex_lock(&p->mu);
    while (j->finished < j->next) {
        j->waiting = 1;
        if (pr->fn) {
            struct timespec dl = pool__deadline(pr->interval);
            pool__cond_wait(&p->done_cv, &p->mu, &dl);
            pthread_mutex_unlock(&p->mu);
            pool__progress_tick(pr, shmq__load(&j->items_done, SHMQ__RELAXED), total, 0);
            pthread_mutex_lock(&p->mu);
        } else {
            pool__cond_wait(&p->done_cv, &p->mu, NULL);
        }
    }
    pthread_mutex_unlock(&p->mu);
    skipped = total - shmq__load(&j->items_done, SHMQ__RELAXED);
    if (skipped) shmq__fetch_add(&p->st_cancelled, skipped, SHMQ__RELAXED);
    pool__progress_tick(pr, shmq__load(&j->items_done, SHMQ__RELAXED), total, 1);
    if (j->fail_index >= 0) return j->fail_code;
    return j->cancelled ? POOL_ECANCELLED : POOL_OK;
}

static void pool__progress_init(pool__progress *pr, const pool_t *p, const pool_map_opts *o)
{
    pr->fn = o && o->progress ? o->progress : p->cfg.progress;
    pr->user = o && o->progress ? o->progress_ctx : p->cfg.progress_ctx;
    pr->interval = p->cfg.progress_interval_ms;
    pr->next_ms = 0;
}

static void pool__set_failure(const pool_map_opts *o, int code, int64_t index, int sig)
{
    if (o && o->failure) {
        o->failure->code = code;
        o->failure->index = index;
        o->failure->signal = sig;
    }
}

static int pool__check_map_args(pool_t *p, pool_fn fn, const void *in, size_t in_size,
                                const void *out, size_t out_size, size_t n)
{
    int rc;
    if (!p || !fn) return POOL_EINVAL;
    if ((rc = pool__check_caller(p)) != POOL_OK) return rc;
    if (n == 0) return POOL_OK;
    if (!in || in_size == 0) return POOL_EINVAL;
    if ((out_size == 0) != (out == NULL)) return POOL_EINVAL;
    if (n > (size_t)INT64_MAX || in_size > SIZE_MAX / n || (out_size && out_size > SIZE_MAX / n))
        return POOL_EOVERFLOW;
    if (shmq__load(&p->state, SHMQ__RELAXED) != POOL__OPEN) return POOL_ECLOSED;
    return POOL_OK;
}

POOL_DEF int pool_map(pool_t *p, pool_fn fn, const void *in, size_t in_size,
                      void *out, size_t out_size, size_t n, const pool_map_opts *opts)
{
    pool__job j;
    pool__progress pr;
    int64_t chunk;
    int rc;
    pool__set_failure(opts, 0, -1, 0);
    rc = pool__check_map_args(p, fn, in, in_size, out, out_size, n);
    if (rc != POOL_OK || n == 0) return rc;
    pool__progress_init(&pr, p, opts);
    if (p->proc) return pool__proc_map(p, fn, in, in_size, out, out_size, n, opts, &pr);
    chunk = pool__chunk_of(p, opts, (int64_t)n);
    pool__job_init(&j, POOL__JOB_MAP, 0, (int64_t)n, chunk);
    j.fn = fn;
    j.ctx = opts ? opts->ctx : NULL;
    j.in = (const unsigned char *)in;
    j.out = (unsigned char *)out;
    j.in_size = in_size;
    j.out_size = out_size;
    rc = pool__run_job(p, &j, &pr, n);
    if (rc != POOL_OK && j.fail_index >= 0) pool__set_failure(opts, rc, j.fail_index, 0);
    return rc;
}

POOL_DEF int pool_parallel_for(pool_t *p, int64_t begin, int64_t end, int64_t grain,
                               pool_range_fn body, void *ctx)
{
    pool__job j;
    pool__progress pr;
    int64_t range;
    int rc;
    if (!p || !body || grain < 0 || end < begin) return POOL_EINVAL;
    if ((rc = pool__check_caller(p)) != POOL_OK) return rc;
    if (end == begin) return POOL_OK;
    if (shmq__load(&p->state, SHMQ__RELAXED) != POOL__OPEN) return POOL_ECLOSED;
    if ((uint64_t)end - (uint64_t)begin > (uint64_t)INT64_MAX) return POOL_EOVERFLOW;
    range = end - begin;
    pool__progress_init(&pr, p, NULL);
    if (grain == 0) grain = pool__auto_chunk(p, range);
    if (grain > range) grain = range;
    if (p->proc) {
        pool_failure f;
        uint64_t fnv;
        memcpy(&fnv, &body, sizeof body);
        return pool__proc_run(p, POOL__PJ_FOR, fnv, ctx, NULL, NULL, 0, 0, begin, end, grain, &pr, &f);
    }
    pool__job_init(&j, POOL__JOB_FOR, begin, end, grain);
    j.body = body;
    j.ctx = ctx;
    return pool__run_job(p, &j, &pr, (uint64_t)range);
}

/* >>impl-imap */
struct pool_iter_s {
    pool_t *pool;
    pool__job job;
    int ordered;
    size_t total;             /* elements */
    size_t yielded;
    uint64_t next_chunk;      /* ordered: the chunk to yield next */
    int64_t cur_slot;         /* slot being yielded, -1 */
    int64_t cur_pos, cur_len; /* position in it */
    pool__progress pr;
    struct pool__pwin *win;   /* process pool: the chunks in flight */
    size_t nwin;
    uint64_t next_pub;        /* process pool: the next chunk to publish */
    size_t wbudget;           /* process pool: windows counted in iter_windows */
};

static int pool__imap(pool_t *p, pool_fn fn, const void *in, size_t in_size, size_t out_size,
                      size_t n, const pool_map_opts *opts, pool_iter_t **out, int ordered)
{
    pool_iter_t *it;
    pool__job *j;
    int64_t chunk;
    size_t nslots, s;
    int rc;
    if (!out) return POOL_EINVAL;
    *out = NULL;
    rc = pool__check_map_args(p, fn, in, in_size, out_size ? (const void *)in : NULL, out_size, n);
    if (rc != POOL_OK) return rc;
    it = (pool_iter_t *)POOL_MALLOC(sizeof *it);
    if (!it) return POOL_ENOMEM;
    memset(it, 0, sizeof *it);
    it->pool = p;
    it->ordered = ordered;
    it->total = n;
    it->cur_slot = -1;
    pool__progress_init(&it->pr, p, opts);
    j = &it->job;
    if (n == 0) { /* an empty iteration: next says POOL_EDONE */
        pool__job_init(j, POOL__JOB_IMAP, 0, 1, 1);
        j->nchunks = 0;
        *out = it;
        return POOL_OK;
    }
    chunk = pool__chunk_of(p, opts, (int64_t)n);
    nslots = opts && opts->max_inflight ? opts->max_inflight : (size_t)p->nworkers * 4;
    pool__job_init(j, POOL__JOB_IMAP, 0, (int64_t)n, chunk);
    if ((uint64_t)nslots > j->nchunks) nslots = (size_t)j->nchunks;
    if (out_size && (size_t)chunk > SIZE_MAX / out_size / nslots) { POOL_FREE(it); return POOL_EOVERFLOW; }
    j->fn = fn;
    j->ctx = opts ? opts->ctx : NULL;
    j->in = (const unsigned char *)in;
    j->in_size = in_size;
    j->out_size = out_size;
    if (p->proc) {
        if (nslots > POOL__NSLOTS / 2) nslots = POOL__NSLOTS / 2;
        rc = pool__piter_open(it, nslots);
        if (rc != POOL_OK) {
            POOL_FREE(it);
            return rc;
        }
        shmq__fetch_add(&p->st_submitted, (uint64_t)n, SHMQ__RELAXED);
        *out = it;
        return POOL_OK;
    }
    j->nslots = j->free_slots = nslots;
    j->slot_chunk = (int64_t *)POOL_MALLOC(nslots * sizeof *j->slot_chunk);
    j->slot_state = (unsigned char *)POOL_MALLOC(nslots);
    j->done_fifo = (size_t *)POOL_MALLOC(nslots * sizeof *j->done_fifo);
    j->slot_code = (int *)POOL_MALLOC(nslots * (size_t)chunk * sizeof(int));
    j->slot_out = out_size ? (unsigned char *)POOL_MALLOC(nslots * (size_t)chunk * out_size) : NULL;
    if (!j->slot_chunk || !j->slot_state || !j->done_fifo || !j->slot_code || (out_size && !j->slot_out)) {
        POOL_FREE(j->slot_chunk); POOL_FREE(j->slot_state); POOL_FREE(j->done_fifo);
        POOL_FREE(j->slot_code); POOL_FREE(j->slot_out); POOL_FREE(it);
        return POOL_ENOMEM;
    }
    for (s = 0; s < nslots; s++) {
        j->slot_chunk[s] = -1;
        j->slot_state[s] = POOL__SLOT_FREE;
    }
    pthread_mutex_lock(&p->mu);
    if (p->state != POOL__OPEN) {
        pthread_mutex_unlock(&p->mu);
        pool_iter_free(it);
        return POOL_ECLOSED;
    }
    pool__enqueue(p, &j->item);
    pool__wake_workers(p, j->nchunks);
    pthread_mutex_unlock(&p->mu);
    shmq__fetch_add(&p->st_submitted, (uint64_t)n, SHMQ__RELAXED);
    *out = it;
    return POOL_OK;
}

POOL_DEF int pool_imap(pool_t *p, pool_fn fn, const void *in, size_t in_size,
                       size_t out_size, size_t n, const pool_map_opts *opts, pool_iter_t **it)
{
    return pool__imap(p, fn, in, in_size, out_size, n, opts, it, 1);
}

POOL_DEF int pool_imap_unordered(pool_t *p, pool_fn fn, const void *in, size_t in_size,
                                 size_t out_size, size_t n, const pool_map_opts *opts,
                                 pool_iter_t **it)
{
    return pool__imap(p, fn, in, in_size, out_size, n, opts, it, 0);
}

/* Finds a finished slot to yield next; under mu. -1 if none yet. */
static int64_t pool__iter_ready_slot(pool_iter_t *it)
{
    pool__job *j = &it->job;
    size_t s, k;
    if (it->ordered) {
        for (s = 0; s < j->nslots; s++)
            if (j->slot_state[s] == POOL__SLOT_DONE && j->slot_chunk[s] == (int64_t)it->next_chunk) {
                /* drop it from the fifo too */
                for (k = 0; k < j->fifo_len; k++) {
                    size_t at = (j->fifo_head + k) % j->nslots;
                    if (j->done_fifo[at] == s) {
                        size_t m;
                        for (m = k; m + 1 < j->fifo_len; m++)
                            j->done_fifo[(j->fifo_head + m) % j->nslots] =
                                j->done_fifo[(j->fifo_head + m + 1) % j->nslots];
                        j->fifo_len--;
                        break;
                    }
                }
                return (int64_t)s;
            }
        return -1;
    }
    if (j->fifo_len == 0) return -1;
    s = j->done_fifo[j->fifo_head];
    j->fifo_head = (j->fifo_head + 1) % j->nslots;
    j->fifo_len--;
    return (int64_t)s;
}

/* Gives a consumed slot back; the job returns to the queue if it had left for
 * want of a slot. Under mu. */
static void pool__iter_release_slot(pool_t *p, pool__job *j, size_t s)
{
    j->slot_state[s] = POOL__SLOT_FREE;
    j->slot_chunk[s] = -1;
    j->free_slots++;
    if (!j->item.queued && !j->stop && j->next < j->nchunks && p->state == POOL__OPEN) {
        pool__enqueue(p, &j->item);
        pool__wake_workers(p, 1);
    }
}

POOL_DEF int pool_iter_next(pool_iter_t *it, void *out, size_t *index, int timeout_ms)
{
    pool_t *p;
    pool__job *j;
    double end;
    if (!it || timeout_ms < -1) return POOL_EINVAL;
    p = it->pool;
    j = &it->job;
    if (pool__forked(p)) return POOL_EFORKED;
    if (p->proc && it->total) return pool__piter_next(it, out, index, timeout_ms);
    end = timeout_ms > 0 ? pool__now_ms() + timeout_ms : 0;
    for (;;) {
        pool__take t;
        int got;
        if (it->cur_slot >= 0) {
            size_t s = (size_t)it->cur_slot;
            int64_t base = j->slot_chunk[s] * j->chunk;
            int64_t k = it->cur_pos++;
            int code = j->slot_code[s * (size_t)j->chunk + (size_t)k];
            if (out && j->out_size)
                memcpy(out, j->slot_out + (s * (size_t)j->chunk + (size_t)k) * j->out_size, j->out_size);
            if (index) *index = (size_t)(base + k);
            it->yielded++;
            if (it->cur_pos >= it->cur_len) {
                pthread_mutex_lock(&p->mu);
                pool__iter_release_slot(p, j, s);
                pthread_mutex_unlock(&p->mu);
                it->cur_slot = -1;
            }
            pool__progress_tick(&it->pr, it->yielded, it->total, it->yielded == it->total);
            return code;
        }
        if (it->yielded >= it->total) return POOL_EDONE;
        pthread_mutex_lock(&p->mu);
        {
            int64_t s = pool__iter_ready_slot(it);
            if (s >= 0) {
                int64_t b = j->slot_chunk[s] * j->chunk;
                it->cur_slot = s;
                it->cur_pos = 0;
                it->cur_len = (b + j->chunk > j->end ? j->end : b + j->chunk) - b;
                if (it->ordered) it->next_chunk++;
                pthread_mutex_unlock(&p->mu);
                continue;
            }
        }
        if (j->stop) { /* terminated: what was not run is cancelled */
            pthread_mutex_unlock(&p->mu);
            return POOL_ECANCELLED;
        }
        /* help: run a chunk of our own job (only without a time limit: a timed
         * wait only waits) */
        got = timeout_ms < 0 ? pool__claim_chunk(p, j, &t.chunk, &t.slot) : 0;
        if (got) {
            pthread_mutex_unlock(&p->mu);
            pool__job_run_chunk(p, j, t.chunk, t.slot);
            continue;
        }
        if (timeout_ms == 0) {
            pthread_mutex_unlock(&p->mu);
            return POOL_ETIMEDOUT;
        }
        j->waiting = 1;
        if (timeout_ms > 0 || it->pr.fn) {
            double left = timeout_ms > 0 ? end - pool__now_ms() : it->pr.interval;
            struct timespec dl;
            if (left <= 0) {
                pthread_mutex_unlock(&p->mu);
                return POOL_ETIMEDOUT;
            }
            if (it->pr.fn && left > it->pr.interval) left = it->pr.interval;
            dl = pool__deadline(left);
            pool__cond_wait(&p->done_cv, &p->mu, &dl);
        } else {
            pool__cond_wait(&p->done_cv, &p->mu, NULL);
        }
        pthread_mutex_unlock(&p->mu);
        pool__progress_tick(&it->pr, it->yielded, it->total, 0);
    }
}

POOL_DEF void pool_iter_free(pool_iter_t *it)
{
    pool_t *p;
    pool__job *j;
    if (!it) return;
    p = it->pool;
    j = &it->job;
    if (p->proc) {
        if (!pool__forked(p)) pool__piter_free_windows(it);
        POOL_FREE(it);
        return;
    }
    if (j->nchunks > 0 && !pool__forked(p)) {
        uint64_t not_run;
        pthread_mutex_lock(&p->mu);
        shmq__store(&j->stop, 1, SHMQ__RELAXED);
        if (j->item.queued) pool__unlink(p, &j->item);
        while (j->finished < j->next) {
            j->waiting = 1;
            pool__cond_wait(&p->done_cv, &p->mu, NULL);
        }
        not_run = (j->nchunks - j->next);
        pthread_mutex_unlock(&p->mu);
        if (not_run) {
            uint64_t elems = (uint64_t)it->total - shmq__load(&j->items_done, SHMQ__RELAXED);
            shmq__fetch_add(&p->st_cancelled, elems, SHMQ__RELAXED);
        }
    }
    POOL_FREE(j->slot_chunk); POOL_FREE(j->slot_state); POOL_FREE(j->done_fifo);
    POOL_FREE(j->slot_code); POOL_FREE(j->slot_out);
    POOL_FREE(it);
}

/* >>process-arena */
static int pool__is_in_arena(const struct pool__proc *pp, const void *ptr, size_t len)
{
    const unsigned char *c = (const unsigned char *)ptr;
    return c >= pp->base && c <= pp->base + pp->reserve && len <= (size_t)(pp->base + pp->reserve - c);
}

/* Backs [0, need) of the arena file. The space is reserved (posix_fallocate), so a
 * full /dev/shm fails here rather than with SIGBUS later. Any process may grow it:
 * posix_fallocate never shrinks a file, so concurrent growers cannot undo each other
 * (where it is missing, only the parent grows the file, with ftruncate under amu). */
static int pool__arena_grow(struct pool__proc *pp, size_t need)
{
    pool__arena_hdr *h = pp->hdr;
    uint64_t have = shmq__load(&h->a_size, SHMQ__ACQUIRE), n;
    if (need <= have) return 0;
    if (need > pp->reserve) return -1;
    n = have ? have : ((uint64_t)1 << 20);
    while (n < need) n = n > pp->reserve / 2 ? pp->reserve : n * 2;
#if SHMQ__LINUX
    if (posix_fallocate(pp->memfd, 0, (off_t)n) != 0) return -1;
#else
    if (getpid() != pp->parent_pid) return -1; /* a worker cannot grow the file safely here */
    pthread_mutex_lock(&pp->amu);
    have = shmq__load(&h->a_size, SHMQ__ACQUIRE);
    if (n > have && ftruncate(pp->memfd, (off_t)n) != 0) {
        pthread_mutex_unlock(&pp->amu);
        return -1;
    }
    pthread_mutex_unlock(&pp->amu);
#endif
    while (have < n && !shmq__cas(&h->a_size, &have, n)) {} /* a_size only grows */
    return 0;
}

/* The arena allocator, usable from the parent and from the workers alike, with no
 * lock: power-of-two size classes (at most 2x waste), each a free list whose head
 * packs the block's offset (/64) with a tag that changes at every update (no ABA);
 * new blocks come from a shared bump offset. A process killed anywhere in here can
 * leak the block it was taking or giving back, never corrupt a list. 64-byte aligned. */
#define POOL__OFF_BITS 40 /* offsets / 64 below 2^40: arenas up to 64 TiB */
#define POOL__OFF_MASK (((uint64_t)1 << POOL__OFF_BITS) - 1)
static void *pool__arena_alloc(struct pool__proc *pp, size_t size)
{
    pool__arena_hdr *h = pp->hdr;
    unsigned cls = 6;
    unsigned char *blk = NULL;
    uint64_t old, off;
    if (size > pp->reserve / 2) return NULL;
    while (((size_t)1 << cls) < size + 64) cls++;
    old = shmq__load(&h->a_free[cls], SHMQ__ACQUIRE);
    while ((old & POOL__OFF_MASK) != 0) {
        uint64_t at = (old & POOL__OFF_MASK) << 6, next, tag = (old >> POOL__OFF_BITS) + 1;
        next = shmq__load(&((pool__blk *)(void *)(pp->base + at))->next, SHMQ__RELAXED);
        if (shmq__cas(&h->a_free[cls], &old, (next >> 6) | (tag << POOL__OFF_BITS))) {
            blk = pp->base + at;
            break;
        }
    }
    if (!blk) {
        off = shmq__fetch_add(&h->a_top, (uint64_t)1 << cls, SHMQ__ACQ_REL);
        if (off + ((uint64_t)1 << cls) > pp->reserve || pool__arena_grow(pp, off + ((size_t)1 << cls)) != 0)
            return NULL; /* (the range is lost: the arena is full anyway) */
        blk = pp->base + off;
    }
    ((pool__blk *)(void *)blk)->cls = cls;
    shmq__store(&((pool__blk *)(void *)blk)->magic, POOL__BLK_MAGIC, SHMQ__RELEASE);
    return blk + 64;
}

static void pool__arena_free(struct pool__proc *pp, void *ptr)
{
    pool__arena_hdr *h = pp->hdr;
    unsigned char *blk;
    uint64_t cls, old, at, expect = POOL__BLK_MAGIC;
    if (!ptr) return;
    blk = (unsigned char *)ptr - 64;
    if ((uintptr_t)ptr % 64 != 0 || blk < pp->base + 64 || !pool__is_in_arena(pp, ptr, 1)) return;
    /* not a block of ours, or freed twice: never corrupt a list */
    if (!shmq__cas(&((pool__blk *)(void *)blk)->magic, &expect, (uint64_t)0)) return;
    cls = ((pool__blk *)(void *)blk)->cls;
    if (cls < 6 || cls >= 64) return;
    at = (uint64_t)(blk - pp->base);
    old = shmq__load(&h->a_free[cls], SHMQ__RELAXED);
    do {
        shmq__store(&((pool__blk *)(void *)blk)->next, (old & POOL__OFF_MASK) << 6, SHMQ__RELAXED);
    } while (!shmq__cas(&h->a_free[cls], &old,
                        (at >> 6) | (((old >> POOL__OFF_BITS) + 1) << POOL__OFF_BITS)));
}

static int pool__arena_map(struct pool__proc *pp, size_t reserve)
{
    size_t fixed, size0;
    void *m;
#if SHMQ__LINUX && defined(SYS_memfd_create)
    pp->memfd = (int)syscall(SYS_memfd_create, "ckit-pool", 1u /* MFD_CLOEXEC */);
#else
    pp->memfd = -1;
#endif
    if (pp->memfd < 0) { /* POSIX: a name unlinked at once, so nothing can leak */
        char name[64];
        static unsigned counter;
        unsigned k;
        for (k = 0; k < 100 && pp->memfd < 0; k++) {
            snprintf(name, sizeof name, "/ckit-pool-%ld-%u", (long)getpid(),
                     shmq__fetch_add(&counter, 1u, SHMQ__RELAXED));
            pp->memfd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
            if (pp->memfd >= 0) shm_unlink(name);
        }
        if (pp->memfd < 0) return -1;
        fcntl(pp->memfd, F_SETFD, FD_CLOEXEC);
    }
    m = mmap(NULL, reserve, PROT_READ | PROT_WRITE, MAP_SHARED | POOL__MAP_NORESERVE, pp->memfd, 0);
    if (m == MAP_FAILED) {
        close(pp->memfd);
        return -1;
    }
    pp->base = (unsigned char *)m;
    pp->reserve = reserve;
    fixed = POOL__HDR_BYTES + sizeof(pool__pslot) * POOL__NSLOTS;
    fixed = (fixed + 63) & ~(size_t)63;
    size0 = fixed + ((size_t)1 << 20);
    if (size0 > reserve || ftruncate(pp->memfd, (off_t)size0) != 0
#if SHMQ__LINUX
        || posix_fallocate(pp->memfd, 0, (off_t)size0) != 0
#endif
    ) {
        munmap(m, reserve);
        close(pp->memfd);
        pp->memfd = -1;
        pp->base = NULL;
        return -1;
    }
    pp->hdr = (pool__arena_hdr *)(void *)pp->base;
    pp->slots = (pool__pslot *)(void *)(pp->base + POOL__HDR_BYTES);
    pp->hdr->a_size = size0;
    pp->hdr->a_top = fixed; /* the ledger comes first, placed by the caller */
    return 0;
}

/* >>process-worker: what runs in the worker processes */
static void pool__pnotify(struct pool__proc *pp)
{
    pool__arena_hdr *h = pp->hdr;
    shmq__fetch_add(&h->done.word, 1u, SHMQ__SEQ_CST);
    if (shmq__load(&h->done_waiters, SHMQ__SEQ_CST)) shmq__futex_wake(&h->done, INT_MAX);
    if (shmq__load(&h->monitor_sleeping, SHMQ__SEQ_CST) &&
        shmq__xchg(&h->monitor_sleeping, 0u, SHMQ__SEQ_CST)) {
        char c = 1;
        if (write(pp->notify_wr, &c, 1) < 0) { /* the monitor polls anyway */ }
    }
}

/* Sets the slot's done flag if every chunk is done or cancelled; the one who sets
 * it tells the parent. Any process. */
static void pool__pcheck_done(struct pool__proc *pp, pool__pslot *s, uint32_t gen)
{
    uint32_t c, zero = 0, n;
    if (shmq__load(&s->gen, SHMQ__ACQUIRE) != gen) return;
    n = s->nchunks;
    for (c = 0; c < n; c++) {
        uint32_t v = shmq__load(&s->chunks[c].state, SHMQ__ACQUIRE) & 0xFFFFu;
        if (v != POOL__CH_DONE && v != POOL__CH_CANCELLED) return;
    }
    /* `done` holds the job's generation, odd once done: a late CAS from an
     * earlier job of this slot expects another value and fails */
    zero = gen;
    if (shmq__cas(&s->done, &zero, gen | 1u)) pool__pnotify(pp);
}

/* A worker whose parent is gone exits (within ~100 ms) even while it is busy:
 * PR_SET_PDEATHSIG does that at once on Linux; elsewhere this check does. */
static void pool__porphan_check(struct pool__proc *pp, double *next_check)
{
    double now = pool__now_ms();
    pid_t parent = pp->server_pid > 0 ? pp->server_pid : pp->parent_pid;
    if (now < *next_check) return;
    *next_check = now + 100;
    if (getppid() != parent) _exit(0);
}

static void pool__prun_chunk(pool_t *p, pool__pslot *s, uint32_t c, uint32_t gen, int w)
{
#if !SHMQ__LINUX
    double next_check = 0;
#endif
    struct pool__proc *pp = p->proc;
    pool__pchunk *ch = &s->chunks[c];
    int64_t b = s->begin + (int64_t)c * s->chunk, e = b + s->chunk, i, ran = 0, fails = 0;
    int64_t ran0 = shmq__load(&ch->ran, SHMQ__RELAXED); /* elements run before a resume */
    unsigned char *in = (unsigned char *)(uintptr_t)s->in, *out = (unsigned char *)(uintptr_t)s->out;
    int *codes = (int *)(uintptr_t)s->codes;
    void *ctx = (void *)(uintptr_t)s->ctx;
    if (e > s->end) e = s->end;
    if (s->kind == POOL__PJ_FOR) {
        pool_range_fn body;
        int code;
        memcpy(&body, &s->fn, sizeof body);
        shmq__store(&ch->pos, b, SHMQ__RELAXED);
        code = body(ch->pos, e, ctx);
        if (code) { ch->fail_index = b; ch->fail_code = code; ch->fail_count = 1; fails = 1; }
        ran = e - b;
    } else {
        pool_fn fn;
        const int64_t base = s->begin;
        const size_t isz = s->in_size, osz = s->out_size;
        const int step = SHMQ__LINUX ? 64 : 16; /* elements between progress stores */
        memcpy(&fn, &s->fn, sizeof fn);
        for (i = shmq__load(&ch->pos, SHMQ__RELAXED); i < e;) {
            int64_t stop = e - i > step ? i + step : e, to;
            int code = 0;
            /* imap: a code per element. Zeros first, for the whole step: if we die
             * in it, the elements before ours succeeded, and the buffer still
             * holds an earlier window's codes */
            if (codes) memset(codes + (i - base), 0, (size_t)(stop - i) * sizeof *codes);
            to = pool__prun_elems(fn, ctx, in + (size_t)(i - base) * isz, isz,
                                  osz ? out + (size_t)(i - base) * osz : NULL, osz, i, stop,
                                  &ch->pos, &code);
            if (codes && to < stop) codes[to - base] = code;
            ran += to - i;
            if (to < stop) { /* element `to` failed; its code is recorded, go on after it */
                if (ch->fail_index < 0) { ch->fail_index = to; ch->fail_code = code; }
                ch->fail_count++;
                fails++;
                ran++;
                to++;
            }
            i = to;
            shmq__store(&ch->ran, ran0 + ran, SHMQ__RELAXED); /* progress */
#if !SHMQ__LINUX /* (on Linux, PR_SET_PDEATHSIG ends an orphan at once) */
            pool__porphan_check(pp, &next_check);
#endif
        }
        shmq__store(&ch->ran, ran0 + ran, SHMQ__RELAXED);
    }
    shmq__store(&ch->pos, e, SHMQ__RELAXED);
    shmq__fetch_add(&pp->hdr->st_completed, (uint64_t)(ran - fails), SHMQ__RELAXED);
    if (fails) shmq__fetch_add(&pp->hdr->st_failed, (uint64_t)fails, SHMQ__RELAXED);
    shmq__store(&ch->state, ((gen & 0xFFFFu) << 16) | POOL__CH_DONE, SHMQ__RELEASE);
    pool__pcheck_done(pp, s, gen);
    pp->ledger[w].tasks += (uint64_t)ran;
}

/* Claims a free chunk of some published job: 1 and *slot, *chunk, *gen, or 0. */
static int pool__pclaim(struct pool__proc *pp, int w, pool__pslot **slot, uint32_t *chunk, uint32_t *gen)
{
    pool__arena_hdr *h = pp->hdr;
    uint64_t head = shmq__load(&h->ring_head, SHMQ__ACQUIRE);
    uint64_t tail = shmq__load(&h->ring_tail, SHMQ__ACQUIRE), i;
    for (i = head; i < tail; i++) {
        uint64_t e = shmq__load(&h->ring[i % POOL__RING], SHMQ__ACQUIRE);
        uint32_t si = (uint32_t)(e & 0xFFFFFFFFu), g = (uint32_t)(e >> 32), c, n;
        pool__pslot *s = &pp->slots[si];
        int spent = 1;
        if (si < POOL__NSLOTS && shmq__load(&s->gen, SHMQ__ACQUIRE) == g && !(shmq__load(&s->done, SHMQ__ACQUIRE) & 1u)) {
            uint32_t want = (g & 0xFFFFu) << 16 | POOL__CH_FREE;
            n = s->nchunks;
            for (c = 0; c < n && c < POOL__MAXCH; c++) {
                uint32_t v = want;
                if (shmq__load(&s->chunks[c].state, SHMQ__RELAXED) != want) continue;
                spent = 0;
                if (shmq__cas(&s->chunks[c].state, &v, (want & 0xFFFF0000u) | (uint32_t)(w + 1))) {
                    *slot = s;
                    *chunk = c;
                    *gen = g;
                    return 1;
                }
            }
        }
        if (spent && i == head) { /* nothing left to claim there: move the head on */
            uint64_t hh = head;
            shmq__cas(&h->ring_head, &hh, head + 1);
            head++;
        }
    }
    return 0;
}

static void pool__pworker_main(pool_t *p, int w)
{
    struct pool__proc *pp = p->proc;
    pool__arena_hdr *h = pp->hdr;
    pool__ledger *me = &pp->ledger[w];
    uint64_t max_tasks = p->cfg.max_tasks_per_child;
    int k, spun = 0;
    double next_check = 0;
    pid_t parent = pp->server_pid > 0 ? pp->server_pid : pp->parent_pid;
    pool__self = &p->workers[w];
#if SHMQ__LINUX
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
#endif
    if (getppid() != parent) _exit(0); /* the parent died before PR_SET_PDEATHSIG took */
    signal(SIGINT, SIG_IGN); /* Ctrl-C is the parent's to handle: no noise from workers */
    pthread_sigmask(SIG_SETMASK, &pp->user_mask, NULL);
    /* close what belongs to the parent and to the other workers */
    for (k = 0; k < p->nworkers; k++)
        if (pp->death_fd[k] >= 0) close(pp->death_fd[k]);
    if (pp->notify_rd >= 0) close(pp->notify_rd);
    if (pp->ctl[0] >= 0) close(pp->ctl[0]);
    pool__set_thread_name(p->cfg.name, w);
    me->tasks = 0;
    shmq__store(&me->pid, (int32_t)getpid(), SHMQ__RELEASE);
    if (p->cfg.initializer && p->cfg.initializer(w, p->cfg.init_ctx) != 0) {
        shmq__store(&me->state, (uint32_t)POOL__W_INITFAIL, SHMQ__SEQ_CST);
        pool__pnotify(pp);
        _exit(3);
    }
    shmq__store(&me->state, (uint32_t)POOL__W_READY, SHMQ__SEQ_CST);
    pool__pnotify(pp);
    for (;;) {
        pool__pslot *s;
        uint32_t c, g, seen = shmq__load(&h->work.word, SHMQ__ACQUIRE);
        uint32_t closing;
        if (pool__pclaim(pp, w, &s, &c, &g)) {
            spun = 0;
            pool__porphan_check(pp, &next_check);
            pool__prun_chunk(p, s, c, g, w);
            if (max_tasks && me->tasks >= max_tasks) {
                shmq__store(&me->state, (uint32_t)POOL__W_RETIRING, SHMQ__SEQ_CST);
                break;
            }
            continue;
        }
        closing = shmq__load(&h->closing, SHMQ__ACQUIRE);
        if (closing) break;
        if (!spun && p->cfg.spin_us > 0) { /* spin a little first: more work often follows */
            double until = pool__now_ms() + p->cfg.spin_us / 1000.0;
            int n = 0;
            spun = 1;
            while (shmq__load(&h->work.word, SHMQ__ACQUIRE) == seen && !shmq__load(&h->closing, SHMQ__RELAXED)) {
                shmq__cpu_relax();
                if ((++n & 63) == 0 && pool__now_ms() > until) break;
            }
            continue;
        }
        spun = 0;
        shmq__fetch_add(&h->work_sleepers, 1u, SHMQ__SEQ_CST);
        if (shmq__load(&h->work.word, SHMQ__SEQ_CST) == seen && !shmq__load(&h->closing, SHMQ__SEQ_CST))
            shmq__futex_wait(&h->work, seen, 250);
        shmq__fetch_sub(&h->work_sleepers, 1u, SHMQ__SEQ_CST);
        if (getppid() != parent) break; /* orphaned (where PR_SET_PDEATHSIG is missing) */
    }
    if (p->cfg.finalizer) p->cfg.finalizer(w, p->cfg.init_ctx);
    _exit(0);
}

/* >>process-parent */

/* A pipe whose ends are close-on-exec from the start (where pipe2 exists), so a
 * program that another thread or a task execs does not keep a worker's life pipe. */
static int pool__pipe_cloexec(int fds[2])
{
#if SHMQ__LINUX && defined(SYS_pipe2)
    if (syscall(SYS_pipe2, fds, O_CLOEXEC) == 0) return 0;
#endif
    if (pipe(fds) != 0) return -1;
    fcntl(fds[0], F_SETFD, FD_CLOEXEC);
    fcntl(fds[1], F_SETFD, FD_CLOEXEC);
    return 0;
}

/* The fork server is gone: reap it; workers are forked from the monitor from now on. */
static void pool__pserver_lost(pool_t *p)
{
    struct pool__proc *pp = p->proc;
    if (pp->server_pid <= 0) return;
    kill(pp->server_pid, SIGKILL);
    while (waitpid(pp->server_pid, NULL, 0) < 0 && errno == EINTR) {}
    pp->server_pid = -1;
    if (p->cfg.log) p->cfg.log("pool: the fork server died; forking workers directly", p->cfg.log_ctx);
}

static ssize_t pool__ctl_send(int fd, const void *buf, size_t len)
{
#ifdef MSG_NOSIGNAL
    return send(fd, buf, len, MSG_NOSIGNAL); /* a dead server must not SIGPIPE us */
#else
    return write(fd, buf, len);
#endif
}

/* Forks worker w (from the monitor thread, or through the fork server). */
static int pool__pspawn(pool_t *p, int w)
{
    struct pool__proc *pp = p->proc;
    int fds[2];
    pid_t pid;
    shmq__store(&pp->ledger[w].state, (uint32_t)POOL__W_STARTING, SHMQ__SEQ_CST);
    if (pp->server_pid > 0) {
        /* the server forks; it sends back the pid and the read end of the life pipe */
        struct msghdr mh;
        struct iovec iov;
        int32_t msg[2];
        union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } u;
        struct cmsghdr *cm;
        ssize_t r;
        msg[0] = w;
        msg[1] = 0;
        if (pool__ctl_send(pp->ctl[0], msg, sizeof msg) != (ssize_t)sizeof msg) {
            pool__pserver_lost(p);
            return pool__pspawn(p, w);
        }
        memset(&mh, 0, sizeof mh);
        iov.iov_base = msg;
        iov.iov_len = sizeof msg;
        mh.msg_iov = &iov;
        mh.msg_iovlen = 1;
        mh.msg_control = u.buf;
        mh.msg_controllen = sizeof u.buf;
        do r = recvmsg(pp->ctl[0], &mh, 0); while (r < 0 && errno == EINTR);
        if (r != (ssize_t)sizeof msg) {
            pool__pserver_lost(p);
            return pool__pspawn(p, w);
        }
        if (msg[1] <= 0) return -1; /* the server could not fork now: retried later */
        cm = CMSG_FIRSTHDR(&mh);
        if (!cm || cm->cmsg_type != SCM_RIGHTS) return -1;
        memcpy(&pp->death_fd[w], CMSG_DATA(cm), sizeof(int));
        fcntl(pp->death_fd[w], F_SETFD, FD_CLOEXEC);
        pp->pid[w] = msg[1];
        pp->via_server[w] = 1;
        shmq__fetch_add(&pp->started, 1u, SHMQ__RELAXED);
        return 0;
    }
    if (pool__pipe_cloexec(fds) != 0) return -1;
    pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        close(fds[0]);
        pool__pworker_main(p, w); /* never returns */
    }
    close(fds[1]);
    pp->death_fd[w] = fds[0];
    pp->pid[w] = pid;
    pp->via_server[w] = 0;
    shmq__fetch_add(&pp->started, 1u, SHMQ__RELAXED);
    return 0;
}

/* The fork server: a single-threaded process forked at pool_create. It forks the
 * workers on request and reports their deaths; it exits when the parent does. */
static void pool__fork_server(pool_t *p)
{
    struct pool__proc *pp = p->proc;
    int fd = pp->ctl[1];
    close(pp->ctl[0]);
    pp->ctl[0] = -1;
    pp->server_pid = getpid(); /* the workers' parent */
    signal(SIGINT, SIG_IGN);
    /* no PR_SET_PDEATHSIG here: it would tie the server to the thread that created the
     * pool; the server leaves when the parent's end of the socket closes (EOF) */
    for (;;) {
        /* requests: {w, 0} fork worker w; {w, 1} reap worker w (the parent saw it die) */
        int32_t msg[2];
        ssize_t r = read(fd, msg, sizeof msg);
        int fds[2], status = 0;
        pid_t pid;
        if (r != (ssize_t)sizeof msg) break; /* the parent is gone (or closed us) */
        if (msg[1] == 1 && msg[0] >= 0 && msg[0] < p->nworkers) {
            pid = (pid_t)shmq__load(&pp->ledger[msg[0]].pid, SHMQ__ACQUIRE);
            msg[1] = 0;
            if (pid > 0) {
                while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
                msg[1] = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
            }
            if (write(fd, msg, sizeof msg) < 0) break;
            continue;
        }
        msg[1] = -1;
        if (msg[0] >= 0 && msg[0] < p->nworkers && pipe(fds) == 0) {
            shmq__store(&pp->ledger[msg[0]].pid, 0, SHMQ__RELEASE);
            pid = fork();
            if (pid == 0) {
                close(fds[0]);
                close(fd);
                pp->ctl[1] = -1;
                pool__pworker_main(p, msg[0]);
            }
            if (pid > 0) {
                shmq__store(&pp->ledger[msg[0]].pid, (int32_t)pid, SHMQ__RELEASE);
                struct msghdr mh;
                struct iovec iov;
                union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } u;
                struct cmsghdr *cm;
                msg[1] = (int32_t)pid;
                memset(&mh, 0, sizeof mh);
                memset(&u, 0, sizeof u);
                iov.iov_base = msg;
                iov.iov_len = sizeof msg;
                mh.msg_iov = &iov;
                mh.msg_iovlen = 1;
                mh.msg_control = u.buf;
                mh.msg_controllen = sizeof u.buf;
                cm = CMSG_FIRSTHDR(&mh);
                cm->cmsg_level = SOL_SOCKET;
                cm->cmsg_type = SCM_RIGHTS;
                cm->cmsg_len = CMSG_LEN(sizeof(int));
                memcpy(CMSG_DATA(cm), &fds[0], sizeof(int));
                if (sendmsg(fd, &mh, 0) < 0) { /* the parent is gone */ }
            } else if (write(fd, msg, sizeof msg) < 0) { /* nothing more to do */ }
            close(fds[0]);
            close(fds[1]);
        } else if (write(fd, msg, sizeof msg) < 0) { /* nothing more to do */ }
    }
    _exit(0); /* our workers die with us (their PR_SET_PDEATHSIG, or orphan check) */
}

/* Marks every chunk worker w held: its element failed with POOL_EWORKERDIED, the
 * rest of the chunk is free again. Under pool.mu, with the worker dead. */
static void pool__precover(pool_t *p, int w, int sig)
{
    struct pool__proc *pp = p->proc;
    int si;
    for (si = 0; si < POOL__NSLOTS; si++) {
        pool__pslot *s = &pp->slots[si];
        uint32_t g, c, republish = 0;
        if (!pp->slot_busy[si]) continue;
        g = shmq__load(&s->gen, SHMQ__ACQUIRE);
        for (c = 0; c < s->nchunks; c++) {
            pool__pchunk *ch = &s->chunks[c];
            uint32_t v = shmq__load(&ch->state, SHMQ__ACQUIRE);
            int64_t b, e, at;
            if ((v & 0xFFFFu) != (uint32_t)(w + 1)) continue;
            b = s->begin + (int64_t)c * s->chunk;
            e = b + s->chunk > s->end ? s->end : b + s->chunk;
            at = shmq__load(&ch->pos, SHMQ__RELAXED);
            if (at >= e) { /* it died after its last element: the chunk is simply done */
                shmq__store(&ch->state, (v & 0xFFFF0000u) | POOL__CH_DONE, SHMQ__RELEASE);
                continue;
            }
            if (at < b) at = b;
            if (s->kind == POOL__PJ_FOR) at = b;
            /* (atomic accesses: the readers synchronise through other processes,
             * which ThreadSanitizer cannot follow) */
            if (shmq__load(&ch->fail_index, SHMQ__RELAXED) < 0 || at < shmq__load(&ch->fail_index, SHMQ__RELAXED)) {
                shmq__store(&ch->fail_index, at, SHMQ__RELAXED);
                shmq__store(&ch->fail_code, (int32_t)POOL_EWORKERDIED, SHMQ__RELAXED);
                shmq__store(&ch->fail_signal, (int32_t)sig, SHMQ__RELAXED);
            }
            shmq__fetch_add(&ch->fail_count, 1, SHMQ__RELAXED);
            if (s->codes && at < e) ((int *)(uintptr_t)s->codes)[at - s->begin] = POOL_EWORKERDIED;
            shmq__fetch_add(&pp->hdr->st_failed, 1u, SHMQ__RELAXED);
            if (s->kind == POOL__PJ_FOR || at + 1 >= e) {
                shmq__store(&ch->pos, e, SHMQ__RELAXED);
                shmq__store(&ch->state, (v & 0xFFFF0000u) | POOL__CH_DONE, SHMQ__RELEASE);
            } else {
                shmq__store(&ch->pos, at + 1, SHMQ__RELAXED);
                shmq__store(&ch->state, (v & 0xFFFF0000u) | POOL__CH_FREE, SHMQ__RELEASE);
                republish = 1;
            }
        }
        if (republish) { /* so that idle workers look at it again */
            pool__arena_hdr *h = pp->hdr;
            uint64_t t = shmq__load(&h->ring_tail, SHMQ__RELAXED);
            shmq__store(&h->ring[t % POOL__RING], ((uint64_t)g << 32) | (uint64_t)si, SHMQ__RELEASE);
            shmq__store(&h->ring_tail, t + 1, SHMQ__RELEASE);
            shmq__fetch_add(&h->work.word, 1u, SHMQ__SEQ_CST);
            shmq__futex_wake(&h->work, INT_MAX);
        }
        pool__pcheck_done(pp, s, g);
    }
}

/* Publishes a job in slot si. Under pool.mu. */
static void pool__ppublish(pool_t *p, int si, int kind, uint64_t fn, void *ctx, void *in, void *out,
                           int *codes, size_t in_size, size_t out_size, int64_t begin, int64_t end,
                           int64_t chunk)
{
    struct pool__proc *pp = p->proc;
    pool__arena_hdr *h = pp->hdr;
    pool__pslot *s = &pp->slots[si];
    uint32_t g = shmq__load(&s->gen, SHMQ__RELAXED), c;
    uint64_t t, head;
    shmq__store(&s->gen, g + 1, SHMQ__RELEASE); /* odd: being written */
    g += 2;
    s->kind = (uint32_t)kind;
    s->fn = fn;
    s->ctx = (uint64_t)(uintptr_t)ctx;
    s->in = (uint64_t)(uintptr_t)in;
    s->out = (uint64_t)(uintptr_t)out;
    s->codes = (uint64_t)(uintptr_t)codes;
    s->in_size = in_size;
    s->out_size = out_size;
    s->begin = begin;
    s->end = end;
    s->chunk = chunk;
    s->nchunks = (uint32_t)((end - begin + chunk - 1) / chunk);
    shmq__store(&s->done, g, SHMQ__RELAXED);
    for (c = 0; c < s->nchunks; c++) {
        pool__pchunk *ch = &s->chunks[c];
        ch->pos = begin + (int64_t)c * chunk;
        ch->fail_index = -1;
        ch->fail_code = 0;
        ch->fail_signal = 0;
        ch->fail_count = 0;
        ch->ran = 0;
        shmq__store(&ch->state, ((g & 0xFFFFu) << 16) | POOL__CH_FREE, SHMQ__RELAXED);
    }
    shmq__store(&s->gen, g, SHMQ__RELEASE); /* even: published */
    t = shmq__load(&h->ring_tail, SHMQ__RELAXED);
    head = shmq__load(&h->ring_head, SHMQ__ACQUIRE);
    while (t - head >= POOL__RING) { /* full of spent entries: pass them ourselves */
        shmq__cas(&h->ring_head, &head, head + 1);
        head = shmq__load(&h->ring_head, SHMQ__ACQUIRE);
    }
    shmq__store(&h->ring[t % POOL__RING], ((uint64_t)g << 32) | (uint64_t)(uint32_t)si, SHMQ__RELEASE);
    shmq__store(&h->ring_tail, t + 1, SHMQ__RELEASE);
    shmq__fetch_add(&h->work.word, 1u, SHMQ__SEQ_CST);
    if (shmq__load(&h->work_sleepers, SHMQ__SEQ_CST))
        shmq__futex_wake(&h->work, (int)(s->nchunks < (uint32_t)p->nworkers ? s->nchunks : (uint32_t)p->nworkers));
}

static int pool__pslot_take(pool_t *p)
{
    struct pool__proc *pp = p->proc;
    int si;
    for (si = 0; si < POOL__NSLOTS; si++)
        if (!pp->slot_busy[si]) {
            pp->slot_busy[si] = 1;
            pp->nbusy++;
            return si;
        }
    return -1;
}

static void pool__pslot_release(pool_t *p, int si)
{
    p->proc->slot_busy[si] = 0;
    p->proc->slot_future[si] = NULL;
    p->proc->nbusy--;
    pthread_cond_broadcast(&p->done_cv); /* someone may wait for a slot */
    if (p->state != POOL__OPEN) pool__proc_poke(p); /* draining: the monitor looks for idle */
}

/* Publishes queued futures while slots are free. Under pool.mu. */
static void pool__ppublish_pending(pool_t *p)
{
    struct pool__proc *pp = p->proc;
    while (pp->pend_head) {
        pool_future_t *f = pp->pend_head;
        uint64_t fn;
        int si = pool__pslot_take(p);
        if (si < 0) return;
        pp->pend_head = (pool_future_t *)(void *)f->item.next;
        if (!pp->pend_head) pp->pend_tail = NULL;
        f->item.next = NULL;
        f->item.queued = 0;
        shmq__store(&f->pslot, si, SHMQ__RELAXED);
        pp->slot_future[si] = f;
        memcpy(&fn, &f->fn, sizeof fn);
        pool__ppublish(p, si, POOL__PJ_APPLY, fn, f->ctx, f->abuf, f->abuf + f->aroom, NULL,
                       f->arg_size, f->result_size, 0, 1, 1);
    }
}

/* Collects finished APPLY slots: copies each result to the parent's memory and
 * returns the futures to complete (outside the lock). Under pool.mu. */
static pool_future_t *pool__pharvest(pool_t *p)
{
    struct pool__proc *pp = p->proc;
    pool_future_t *list = NULL;
    int si;
    for (si = 0; si < POOL__NSLOTS; si++) {
        pool__pslot *s = &pp->slots[si];
        pool_future_t *f = pp->slot_future[si];
        if (!pp->slot_busy[si] || !f || !(shmq__load(&s->done, SHMQ__ACQUIRE) & 1u)) continue;
        f->code = shmq__load(&s->chunks[0].fail_index, SHMQ__ACQUIRE) >= 0
                      ? shmq__load(&s->chunks[0].fail_code, SHMQ__RELAXED) : 0;
        f->signal = shmq__load(&s->chunks[0].fail_signal, SHMQ__RELAXED);
        if ((shmq__load(&s->chunks[0].state, SHMQ__ACQUIRE) & 0xFFFFu) == POOL__CH_CANCELLED)
            f->code = POOL_ECANCELLED;
        if (f->code == 0 && f->result_size) memcpy(f->result, f->abuf + f->aroom, f->result_size);
        pool__arena_free(pp, f->abuf);
        f->abuf = NULL;
        shmq__store(&f->pslot, -1, SHMQ__RELAXED);
        pool__pslot_release(p, si);
        f->free_next = list;
        list = f;
    }
    pool__ppublish_pending(p);
    return list;
}

static void pool__pcomplete_list(pool_future_t *list)
{
    while (list) {
        pool_future_t *f = list;
        list = f->free_next;
        pool__future_complete(f, f->code, f->signal);
        pool__future_unref(f); /* the queue's reference, which the slot held */
    }
}

/* Cancels everything in flight (terminate): every chunk not done becomes
 * CANCELLED, every pending future completes with POOL_ECANCELLED. Under pool.mu. */
static pool_future_t *pool__pcancel_all(pool_t *p)
{
    struct pool__proc *pp = p->proc;
    pool_future_t *list = NULL;
    int si;
    for (si = 0; si < POOL__NSLOTS; si++) {
        pool__pslot *s = &pp->slots[si];
        uint32_t c, g;
        if (!pp->slot_busy[si]) continue;
        g = shmq__load(&s->gen, SHMQ__ACQUIRE);
        for (c = 0; c < s->nchunks; c++) {
            uint32_t v = shmq__load(&s->chunks[c].state, SHMQ__ACQUIRE);
            if ((v & 0xFFFFu) != POOL__CH_DONE)
                shmq__store(&s->chunks[c].state, (v & 0xFFFF0000u) | POOL__CH_CANCELLED, SHMQ__RELEASE);
        }
        pool__pcheck_done(pp, s, g);
    }
    while (pp->pend_head) {
        pool_future_t *f = pp->pend_head;
        pp->pend_head = (pool_future_t *)(void *)f->item.next;
        f->item.next = NULL;
        f->code = POOL_ECANCELLED;
        f->signal = 0;
        pool__arena_free(pp, f->abuf);
        f->abuf = NULL;
        f->free_next = list;
        list = f;
    }
    pp->pend_tail = NULL;
    return list;
}

static void pool__pkill_all(pool_t *p)
{
    struct pool__proc *pp = p->proc;
    int w;
    for (w = 0; w < p->nworkers; w++)
        if (pp->pid[w] > 0) kill(pp->pid[w], SIGKILL);
}

/* How worker w ended: the signal that killed it, 0 for an exit. `status` >= 0: the
 * status waitpid already gave; -1: reap it now. */
static int pool__preap(pool_t *p, int w, int status)
{
    struct pool__proc *pp = p->proc;
    if (status < 0 && pp->via_server[w]) { /* the server reaps its children and tells us */
        int32_t msg[2];
        msg[0] = w;
        msg[1] = 1;
        if (pp->server_pid <= 0 || pool__ctl_send(pp->ctl[0], msg, sizeof msg) != (ssize_t)sizeof msg ||
            read(pp->ctl[0], msg, sizeof msg) != (ssize_t)sizeof msg)
            return SIGKILL; /* the server is gone too: how it ended is unknown */
        return msg[1];
    }
    if (status < 0) {
        status = 0;
        while (waitpid(pp->pid[w], &status, 0) < 0 && errno == EINTR) {}
    }
    return WIFSIGNALED(status) ? WTERMSIG(status) : 0;
}

/* Worker w is gone: fail what it held, and plan its replacement (at once, or with
 * a growing delay when it keeps failing to start). Monitor thread only. */
static void pool__pdeath(pool_t *p, int w, int status)
{
    struct pool__proc *pp = p->proc;
    uint32_t st = shmq__load(&pp->ledger[w].state, SHMQ__ACQUIRE);
    int sig;
    if (pp->death_fd[w] >= 0) close(pp->death_fd[w]);
    pp->death_fd[w] = -1;
    sig = pool__preap(p, w, status);
    pthread_mutex_lock(&p->mu);
    if (st != POOL__W_RETIRING) {
        pp->deaths++;
        pool__precover(p, w, sig);
    }
    pp->pid[w] = -1;
    pthread_mutex_unlock(&p->mu);
    if (st == POOL__W_READY || st == POOL__W_RETIRING) pp->fails[w] = 0;
    else pp->fails[w]++; /* died (or its initializer failed) before it was ready */
    pp->next_try[w] = pool__now_ms() + (pp->fails[w] ? (pp->fails[w] > 7 ? 1000.0 : 8.0 * (1 << pp->fails[w])) : 0);
    if (st == POOL__W_INITFAIL && p->cfg.log) p->cfg.log("pool: a worker initializer failed", p->cfg.log_ctx);
}

/* The monitor thread: forks the workers, watches them, collects futures. */
static void *pool__pmonitor(void *arg)
{
    pool_t *p = (pool_t *)arg;
    struct pool__proc *pp = p->proc;
    pool__arena_hdr *h = pp->hdr;
    struct pollfd *pfd = pp->pfd;
    int w, ready = 0, started = 0;
    double none_since = 0;
    /* start the workers and wait for their initializers */
    for (w = 0; w < p->nworkers; w++) {
        if (pool__pspawn(p, w) != 0) break;
        started++;
    }
    while (ready < started) {
        uint32_t seen = shmq__load(&h->done.word, SHMQ__ACQUIRE);
        int failed = 0;
        ready = 0;
        for (w = 0; w < started; w++) {
            uint32_t st = shmq__load(&pp->ledger[w].state, SHMQ__ACQUIRE);
            if (st == POOL__W_READY) ready++;
            if (st == POOL__W_INITFAIL) failed = 1;
        }
        if (failed) break;
        if (ready < started) {
            struct pollfd one;
            int dead = 0;
            for (w = 0; w < started && !dead; w++) { /* a worker that died starting */
                one.fd = pp->death_fd[w];
                one.events = POLLIN;
                if (poll(&one, 1, 0) > 0) dead = 1;
            }
            if (dead) break;
            shmq__fetch_add(&h->done_waiters, 1u, SHMQ__SEQ_CST);
            shmq__futex_wait(&h->done, seen, 20);
            shmq__fetch_sub(&h->done_waiters, 1u, SHMQ__SEQ_CST);
        }
    }
    pthread_mutex_lock(&p->mu);
    p->init_done = p->nworkers;
    if (ready < p->nworkers) p->init_failed = 1;
    pthread_cond_broadcast(&p->done_cv);
    while (!p->go) pthread_cond_wait(&p->work_cv, &p->mu);
    pthread_mutex_unlock(&p->mu);

    for (;;) {
        pool_future_t *done_list;
        int n = 0, state, idle, r, si, alive = 0, timeout = 100;
        double now;
        pthread_mutex_lock(&p->mu);
        done_list = pool__pharvest(p);
        state = p->state;
        idle = !pp->pend_head;
        for (si = 0; si < POOL__NSLOTS && idle; si++) /* finished jobs not yet collected do not count */
            if (pp->slot_busy[si] && !(shmq__load(&pp->slots[si].done, SHMQ__ACQUIRE) & 1u)) idle = 0;
        /* decided under mu, so that an iterator publishing its next window either
         * publishes before (and the pool is not idle) or sees this and runs it itself */
        if (state == POOL__TERMINATED || (state == POOL__CLOSED && idle) || p->init_failed) {
            pp->stop_decided = 1;
            pthread_cond_broadcast(&p->done_cv); /* an iterator waiting for a slot re-checks */
        }
        pthread_mutex_unlock(&p->mu);
        pool__pcomplete_list(done_list);
        if (state == POOL__TERMINATED || (state == POOL__CLOSED && idle) || p->init_failed) {
            shmq__store(&h->closing, state == POOL__CLOSED && !p->init_failed ? 1u : 2u, SHMQ__SEQ_CST);
            shmq__fetch_add(&h->work.word, 1u, SHMQ__SEQ_CST);
            shmq__futex_wake(&h->work, INT_MAX);
            if (state != POOL__CLOSED || p->init_failed) pool__pkill_all(p);
            break;
        }
        /* replace missing workers (a death, or a start that failed: retried with backoff) */
        now = pool__now_ms();
        for (w = 0; w < p->nworkers; w++) {
            if (pp->pid[w] > 0) { alive++; continue; }
            if (now >= pp->next_try[w]) {
                if (pool__pspawn(p, w) == 0) {
                    alive++;
                } else {
                    pp->fails[w]++;
                    pp->next_try[w] = now + (pp->fails[w] > 7 ? 1000.0 : 8.0 * (1 << pp->fails[w]));
                    if (p->cfg.log) p->cfg.log("pool: could not start a worker; will retry", p->cfg.log_ctx);
                }
            }
            if (pp->pid[w] <= 0 && pp->next_try[w] - now < timeout) timeout = (int)(pp->next_try[w] - now) + 1;
        }
        /* no worker for 5 s and none can start: fail what waits rather than hang */
        if (alive == 0) {
            if (none_since == 0) {
                none_since = now;
            } else if (now - none_since > 5000) {
                pool_future_t *list;
                pthread_mutex_lock(&p->mu);
                list = pool__pcancel_all(p);
                pthread_mutex_unlock(&p->mu);
                pool__pcomplete_list(list);
                if (p->cfg.log) p->cfg.log("pool: no worker can start: work in flight cancelled", p->cfg.log_ctx);
                none_since = now;
            }
        } else {
            none_since = 0;
        }
        for (w = 0; w < p->nworkers; w++) {
            pfd[n].fd = pp->death_fd[w]; /* -1: ignored by poll */
            pfd[n].events = POLLIN;
            pfd[n].revents = 0;
            n++;
        }
        pfd[n].fd = pp->notify_rd;
        pfd[n].events = POLLIN;
        pfd[n].revents = 0;
        shmq__store(&h->monitor_sleeping, 1u, SHMQ__SEQ_CST);
        {
            int pending = 0; /* a completion may have slipped in before the flag */
            pthread_mutex_lock(&p->mu);
            for (si = 0; si < POOL__NSLOTS && !pending; si++)
                if (pp->slot_future[si] && (shmq__load(&pp->slots[si].done, SHMQ__SEQ_CST) & 1u)) pending = 1;
            /* closed: the drain ends when the last job is collected, which the
             * collecting thread tells us (pool__pslot_release pokes us); the short
             * timeout is a backstop, not a spin (it used to be one: 85% of a CPU) */
            if (p->state != POOL__OPEN && timeout > 5) timeout = 5;
            pthread_mutex_unlock(&p->mu);
            r = pending ? 0 : poll(pfd, (nfds_t)(n + 1), timeout < 1 ? 1 : timeout);
        }
        shmq__store(&h->monitor_sleeping, 0u, SHMQ__SEQ_CST);
        if (r > 0 && pfd[n].revents) {
            char buf[64];
            if (read(pp->notify_rd, buf, sizeof buf) < 0) { /* drained */ }
        }
        for (w = 0; w < p->nworkers; w++) {
            int status;
            if (pp->pid[w] <= 0) continue;
            if (r > 0 && pfd[w].revents) { /* EOF on its life pipe: worker w is gone */
                pool__pdeath(p, w, -1);
            } else if (!pp->via_server[w] && waitpid(pp->pid[w], &status, WNOHANG) == pp->pid[w]) {
                /* a backstop: another process may hold the pipe's write end (a fork
                 * of this program by another thread, or a task's own child) */
                pool__pdeath(p, w, status);
            }
        }
    }
    /* wait for every worker to exit */
    for (w = 0; w < p->nworkers; w++) {
        if (pp->pid[w] > 0 && !pp->via_server[w]) {
            while (waitpid(pp->pid[w], NULL, 0) < 0 && errno == EINTR) {}
        } else if (pp->death_fd[w] >= 0) { /* a server's child: its pipe closes when it exits */
            struct pollfd one;
            one.fd = pp->death_fd[w];
            one.events = POLLIN;
            while (poll(&one, 1, 2000) < 0 && errno == EINTR) {}
        }
        if (pp->death_fd[w] >= 0) close(pp->death_fd[w]);
        pp->death_fd[w] = -1;
        pp->pid[w] = -1;
    }
    /* nothing can complete now: what is still in flight is cancelled */
    pthread_mutex_lock(&p->mu);
    {
        pool_future_t *list = pool__pcancel_all(p), *more = pool__pharvest(p);
        pthread_mutex_unlock(&p->mu);
        pool__pcomplete_list(list);
        pool__pcomplete_list(more);
    }
    shmq__fetch_add(&h->done.word, 1u, SHMQ__SEQ_CST);
    shmq__futex_wake(&h->done, INT_MAX);
    return NULL;
}

static void pool__proc_free(pool_t *p)
{
    struct pool__proc *pp = p->proc;
    int w;
    if (!pp) return;
    if (pp->server_pid > 0 && !pool__forked(p)) {
        close(pp->ctl[0]);
        pp->ctl[0] = -1;
        kill(pp->server_pid, SIGKILL);
        while (waitpid(pp->server_pid, NULL, 0) < 0 && errno == EINTR) {}
    }
    if (pp->ctl[0] >= 0) close(pp->ctl[0]);
    if (pp->ctl[1] >= 0) close(pp->ctl[1]);
    for (w = 0; w < p->nworkers; w++)
        if (pp->death_fd && pp->death_fd[w] >= 0) close(pp->death_fd[w]);
    if (pp->notify_rd >= 0) close(pp->notify_rd);
    if (pp->notify_wr >= 0) close(pp->notify_wr);
    if (pp->base) munmap(pp->base, pp->reserve);
    if (pp->memfd >= 0) close(pp->memfd);
    if (!pool__forked(p)) pthread_mutex_destroy(&pp->amu);
    POOL_FREE(pp->death_fd);
    POOL_FREE(pp->pid);
    POOL_FREE(pp->pfd);
    POOL_FREE(pp->via_server);
    POOL_FREE(pp->fails);
    POOL_FREE(pp->next_try);
    POOL_FREE(pp);
    p->proc = NULL;
}

/* Sets up the arena, the fork server if asked, and the monitor thread (which
 * forks the workers). Called by pool_create with the config resolved. */
static int pool__proc_create(pool_t *p, const sigset_t *user_mask)
{
    struct pool__proc *pp;
    size_t reserve = p->cfg.arena_size, ledger_bytes;
    int w, fds[2];
    if (reserve == 0) reserve = sizeof(void *) >= 8 ? ((size_t)4 << 30) : ((size_t)256 << 20);
    pp = (struct pool__proc *)POOL_MALLOC(sizeof *pp);
    if (!pp) return POOL_ENOMEM;
    memset(pp, 0, sizeof *pp);
    p->proc = pp;
    pp->memfd = -1;
    pp->notify_rd = pp->notify_wr = -1;
    pp->ctl[0] = pp->ctl[1] = -1;
    pp->parent_pid = getpid();
    pp->user_mask = *user_mask;
    pp->death_fd = (int *)POOL_MALLOC(sizeof(int) * (size_t)p->nworkers);
    pp->pid = (pid_t *)POOL_MALLOC(sizeof(pid_t) * (size_t)p->nworkers);
    pp->pfd = (struct pollfd *)POOL_MALLOC(sizeof *pp->pfd * (size_t)(p->nworkers + 1));
    pp->via_server = (unsigned char *)POOL_MALLOC((size_t)p->nworkers);
    pp->fails = (int *)POOL_MALLOC(sizeof(int) * (size_t)p->nworkers);
    pp->next_try = (double *)POOL_MALLOC(sizeof(double) * (size_t)p->nworkers);
    if (!pp->death_fd || !pp->pid || !pp->pfd || !pp->via_server || !pp->fails || !pp->next_try) {
        pool__proc_free(p);
        return POOL_ENOMEM;
    }
    memset(pp->via_server, 0, (size_t)p->nworkers);
    memset(pp->fails, 0, sizeof(int) * (size_t)p->nworkers);
    memset(pp->next_try, 0, sizeof(double) * (size_t)p->nworkers);
    for (w = 0; w < p->nworkers; w++) { pp->death_fd[w] = -1; pp->pid[w] = -1; }
    if (pthread_mutex_init(&pp->amu, NULL) != 0) { pool__proc_free(p); return POOL_ESYS; }
    if (pool__arena_map(pp, reserve) != 0) { pool__proc_free(p); return POOL_ESYS; }
    ledger_bytes = sizeof(pool__ledger) * (size_t)p->nworkers;
    if (pool__arena_grow(pp, pp->hdr->a_top + ledger_bytes + 64) != 0) { pool__proc_free(p); return POOL_ESYS; }
    pp->ledger = (pool__ledger *)(void *)(pp->base + pp->hdr->a_top);
    pp->hdr->a_top = (pp->hdr->a_top + ledger_bytes + 63) & ~(uint64_t)63;
    pp->hdr->magic = POOL__ARENA_MAGIC;
    pp->hdr->version = 1;
    pp->hdr->reserve = reserve;
    if (shmq__wait_init(&pp->hdr->work, 0) != 0 || shmq__wait_init(&pp->hdr->done, 0) != 0) {
        pool__proc_free(p);
        return POOL_ESYS;
    }
    if (pipe(fds) != 0) { pool__proc_free(p); return POOL_ESYS; }
    pp->notify_rd = fds[0];
    pp->notify_wr = fds[1];
    fcntl(fds[0], F_SETFD, FD_CLOEXEC);
    fcntl(fds[1], F_SETFD, FD_CLOEXEC);
    fcntl(fds[0], F_SETFL, O_NONBLOCK);
    fcntl(fds[1], F_SETFL, O_NONBLOCK);
    if (p->cfg.start_method == POOL_START_FORKSERVER) {
        pid_t pid;
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, pp->ctl) != 0) { pool__proc_free(p); return POOL_ESYS; }
        pid = fork();
        if (pid < 0) { pool__proc_free(p); return POOL_ESYS; }
        if (pid == 0) pool__fork_server(p); /* never returns */
        close(pp->ctl[1]);
        pp->ctl[1] = -1;
        fcntl(pp->ctl[0], F_SETFD, FD_CLOEXEC);
        pp->server_pid = pid;
    }
    return POOL_OK;
}

/* 1 when the caller is p's monitor thread (a completion callback of a process pool). */
static int pool__in_monitor(const pool_t *p)
{
    return p->proc && shmq__load(&p->proc->monitor_started, SHMQ__ACQUIRE) &&
           pthread_equal(pthread_self(), p->proc->monitor);
}

/* Wakes the monitor so that it looks at the pool's state. */
static void pool__proc_poke(pool_t *p)
{
    char c = 1;
    if (p->proc && p->proc->notify_wr >= 0 && write(p->proc->notify_wr, &c, 1) < 0) { /* full: awake anyway */ }
}

/* >>process-calls */
static int pool__proc_wait_slot(pool_t *p, int si, pool__progress *pr, uint64_t total)
{
    struct pool__proc *pp = p->proc;
    pool__arena_hdr *h = pp->hdr;
    pool__pslot *s = &pp->slots[si];
    for (;;) {
        uint32_t seen = shmq__load(&h->done.word, SHMQ__ACQUIRE);
        if (shmq__load(&s->done, SHMQ__ACQUIRE) & 1u) return POOL_OK;
        if (pr && pr->fn) {
            uint64_t ran = 0;
            uint32_t c;
            for (c = 0; c < s->nchunks; c++) ran += (uint64_t)shmq__load(&s->chunks[c].ran, SHMQ__RELAXED);
            pool__progress_tick(pr, ran, total, 0);
        }
        if (!shmq__load(&pp->monitor_started, SHMQ__ACQUIRE)) return POOL_ECANCELLED;
        shmq__fetch_add(&h->done_waiters, 1u, SHMQ__SEQ_CST);
        if (!(shmq__load(&s->done, SHMQ__SEQ_CST) & 1u))
            shmq__futex_wait(&h->done, seen, pr && pr->fn ? pr->interval : 200);
        shmq__fetch_sub(&h->done_waiters, 1u, SHMQ__SEQ_CST);
    }
}

/* Runs a MAP or FOR job to its end; fills *failure. */
static int pool__proc_run(pool_t *p, int kind, uint64_t fn, void *ctx, void *in, void *out,
                          size_t in_size, size_t out_size, int64_t begin, int64_t end, int64_t chunk,
                          pool__progress *pr, pool_failure *failure)
{
    struct pool__proc *pp = p->proc;
    pool__pslot *s;
    int si = -1, cancelled = 0;
    uint32_t c;
    int64_t range = end - begin;
    failure->code = 0;
    failure->index = -1;
    failure->signal = 0;
    if ((range + chunk - 1) / chunk > POOL__MAXCH) chunk = (range + POOL__MAXCH - 1) / POOL__MAXCH;
    pthread_mutex_lock(&p->mu);
    /* re-checked under mu (the caller's check was not): once the monitor has
     * decided to stop the workers, a job published now would never run */
    while (p->state == POOL__OPEN && (si = pool__pslot_take(p)) < 0)
        pthread_cond_wait(&p->done_cv, &p->mu);
    if (p->state != POOL__OPEN) {
        if (si >= 0) pool__pslot_release(p, si);
        pthread_mutex_unlock(&p->mu);
        return POOL_ECLOSED;
    }
    pool__ppublish(p, si, kind, fn, ctx, in, out, NULL, in_size, out_size, begin, end, chunk);
    pthread_mutex_unlock(&p->mu);
    shmq__fetch_add(&p->st_submitted, (uint64_t)range, SHMQ__RELAXED);
    if (pr) pool__progress_tick(pr, 0, (uint64_t)range, 1);
    if (pool__proc_wait_slot(p, si, pr, (uint64_t)range) != POOL_OK) cancelled = 1;
    s = &pp->slots[si];
    for (c = 0; c < s->nchunks; c++) {
        pool__pchunk *ch = &s->chunks[c];
        int64_t fi = shmq__load(&ch->fail_index, SHMQ__ACQUIRE);
        if ((shmq__load(&ch->state, SHMQ__ACQUIRE) & 0xFFFFu) == POOL__CH_CANCELLED) cancelled = 1;
        if (fi >= 0 && (failure->index < 0 || fi < failure->index)) {
            failure->index = fi;
            failure->code = shmq__load(&ch->fail_code, SHMQ__RELAXED);
            failure->signal = shmq__load(&ch->fail_signal, SHMQ__RELAXED);
        }
    }
    if (pr) {
        uint64_t ran = 0;
        for (c = 0; c < s->nchunks; c++) ran += (uint64_t)s->chunks[c].ran;
        pool__progress_tick(pr, kind == POOL__PJ_FOR ? (uint64_t)range : ran, (uint64_t)range, 1);
    }
    pthread_mutex_lock(&p->mu);
    pool__pslot_release(p, si);
    pool__ppublish_pending(p);
    pthread_mutex_unlock(&p->mu);
    if (failure->index >= 0) return failure->code;
    return cancelled ? POOL_ECANCELLED : POOL_OK;
}

static int pool__proc_map(pool_t *p, pool_fn fn, const void *in, size_t in_size, void *out,
                          size_t out_size, size_t n, const pool_map_opts *opts, pool__progress *pr)
{
    struct pool__proc *pp = p->proc;
    unsigned char *ia = (unsigned char *)(uintptr_t)in, *oa = (unsigned char *)out;
    int copy_in = !pool__is_in_arena(pp, in, n * in_size);
    int copy_out = out_size && !pool__is_in_arena(pp, out, n * out_size);
    int64_t chunk;
    uint64_t fnv;
    pool_failure f;
    int rc;
    if (copy_in) {
        ia = (unsigned char *)pool__arena_alloc(pp, n * in_size);
        if (!ia) return POOL_ETOOBIG;
        memcpy(ia, in, n * in_size);
    }
    if (copy_out) {
        oa = (unsigned char *)pool__arena_alloc(pp, n * out_size);
        if (!oa) {
            if (copy_in) pool__arena_free(pp, ia);
            return POOL_ETOOBIG;
        }
    }
    chunk = pool__chunk_of(p, opts, (int64_t)n);
    memcpy(&fnv, &fn, sizeof fn);
    rc = pool__proc_run(p, POOL__PJ_MAP, fnv, opts ? opts->ctx : NULL, ia, oa, in_size, out_size, 0,
                        (int64_t)n, chunk, pr, &f);
    if (copy_out) {
        memcpy(out, oa, n * out_size);
        pool__arena_free(pp, oa);
    }
    if (copy_in) pool__arena_free(pp, ia);
    if (f.index >= 0) pool__set_failure(opts, f.code, f.index, f.signal);
    return rc;
}

static int pool__proc_submit(pool_t *p, pool_future_t *f)
{
    struct pool__proc *pp = p->proc;
    f->aroom = (f->arg_size + 63) & ~(size_t)63;
    f->abuf = (unsigned char *)pool__arena_alloc(pp, f->aroom + f->result_size + 1);
    f->pslot = -1;
    if (!f->abuf) return POOL_ETOOBIG;
    if (f->arg_size) memcpy(f->abuf, f->arg, f->arg_size);
    f->state = POOL__F_RUNNING; /* in flight: never run by a waiting parent thread */
    pthread_mutex_lock(&p->mu);
    if (p->state != POOL__OPEN) {
        pthread_mutex_unlock(&p->mu);
        pool__arena_free(pp, f->abuf);
        f->abuf = NULL;
        return POOL_ECLOSED;
    }
    f->item.next = NULL;
    if (pp->pend_tail) pp->pend_tail->item.next = &f->item;
    else pp->pend_head = f;
    pp->pend_tail = f;
    f->item.queued = 1;
    pool__ppublish_pending(p);
    pthread_mutex_unlock(&p->mu);
    return POOL_OK;
}

/* A parent thread waits for a process future: it collects finished slots itself. */
static int pool__proc_future_wait(pool_future_t *f, int timeout_ms)
{
    pool_t *p = f->pool;
    struct pool__proc *pp = p->proc;
    double end = timeout_ms > 0 ? pool__now_ms() + timeout_ms : 0;
    int spun = 0;
    for (;;) {
        pool_future_t *list;
        uint32_t seen;
        int si;
        if (shmq__load(&f->state, SHMQ__ACQUIRE) == POOL__F_DONE) return POOL_OK;
        seen = shmq__load(&pp->hdr->done.word, SHMQ__ACQUIRE);
        si = shmq__load(&f->pslot, SHMQ__RELAXED); /* a hint: harvesting re-checks under mu */
        if (si >= 0 && (shmq__load(&pp->slots[si].done, SHMQ__ACQUIRE) & 1u)) {
            pthread_mutex_lock(&p->mu);
            list = pool__pharvest(p);
            pthread_mutex_unlock(&p->mu);
            pool__pcomplete_list(list);
            continue;
        }
        if (timeout_ms == 0) return POOL_ETIMEDOUT;
        if (timeout_ms > 0 && pool__now_ms() >= end) return POOL_ETIMEDOUT;
        if (!spun) {
            double until = pool__now_ms() + POOL__WAIT_SPIN_US / 1000.0;
            int n = 0;
            spun = 1;
            while (shmq__load(&pp->hdr->done.word, SHMQ__ACQUIRE) == seen &&
                   shmq__load(&f->state, SHMQ__ACQUIRE) != POOL__F_DONE) {
                shmq__cpu_relax();
                if ((++n & 31) == 0 && pool__now_ms() > until) break;
            }
            continue;
        }
        shmq__fetch_add(&pp->hdr->done_waiters, 1u, SHMQ__SEQ_CST);
        if (shmq__load(&f->state, SHMQ__SEQ_CST) != POOL__F_DONE) {
            int ms = 100;
            if (timeout_ms > 0) {
                double left = end - pool__now_ms();
                ms = left < 1 ? 1 : left < 100 ? (int)left : 100;
            }
            shmq__futex_wait(&pp->hdr->done, seen, ms);
        }
        shmq__fetch_sub(&pp->hdr->done_waiters, 1u, SHMQ__SEQ_CST);
    }
}

static int pool__proc_cancel(pool_future_t *f)
{
    pool_t *p = f->pool;
    struct pool__proc *pp = p->proc;
    int rc = POOL_EBUSY;
    pthread_mutex_lock(&p->mu);
    if (f->item.queued) { /* still waiting for a slot: take it out */
        pool__item *prev = NULL, *it = &pp->pend_head->item;
        while (it && it != &f->item) { prev = it; it = it->next; }
        if (it) {
            if (prev) prev->next = it->next;
            else pp->pend_head = (pool_future_t *)(void *)it->next;
            if (pp->pend_tail == f) pp->pend_tail = (pool_future_t *)(void *)prev;
            f->item.queued = 0;
            pool__arena_free(pp, f->abuf);
            f->abuf = NULL;
            rc = POOL_OK;
        }
    } else if (f->pslot >= 0) { /* published: cancellable while no worker has it */
        pool__pslot *s = &pp->slots[f->pslot];
        uint32_t g = shmq__load(&s->gen, SHMQ__ACQUIRE);
        uint32_t v = ((g & 0xFFFFu) << 16) | POOL__CH_FREE;
        if (shmq__cas(&s->chunks[0].state, &v, ((g & 0xFFFFu) << 16) | POOL__CH_CANCELLED)) {
            pool__pcheck_done(pp, s, g);
            rc = POOL_EBUSY + 1000; /* collected below */
        }
    }
    pthread_mutex_unlock(&p->mu);
    if (rc == POOL_OK) {
        shmq__fetch_add(&p->st_cancelled, 1u, SHMQ__RELAXED);
        pool__future_complete(f, POOL_ECANCELLED, 0);
        pool__future_unref(f);
        return POOL_OK;
    }
    if (rc == POOL_EBUSY + 1000) {
        pool_future_t *list;
        shmq__fetch_add(&p->st_cancelled, 1u, SHMQ__RELAXED);
        pthread_mutex_lock(&p->mu);
        list = pool__pharvest(p);
        pthread_mutex_unlock(&p->mu);
        pool__pcomplete_list(list);
        return POOL_OK;
    }
    return POOL_EBUSY;
}

/* >>process-imap: imap on a process pool keeps a window of chunks in flight, each
 * a one-chunk job with its own input, output and code buffers in the arena. */
typedef struct pool__pwin {
    int slot;                 /* job slot; -1 empty; -2 run here (the workers are gone) */
    uint64_t chunk;           /* the chunk it holds */
    int64_t len;              /* its elements */
    unsigned char *in_a, *out_a;
    int *codes_a;
} pool__pwin;

/* Runs elements [b, e) of an iterator's window in the calling thread, once the
 * workers are gone or going (as a thread pool's imap does after join). */
static int pool__piter_run_here(pool_iter_t *it, pool__pwin *w, int64_t b, int64_t e)
{
    pool__job *j = &it->job;
    int64_t i;
    if (shmq__load(&it->pool->state, SHMQ__RELAXED) == POOL__TERMINATED) return POOL_ECANCELLED;
    for (i = b; i < e; i++)
        w->codes_a[i - b] = j->fn(j->in + (size_t)i * j->in_size,
                                  j->out_size ? w->out_a + (size_t)(i - b) * j->out_size : NULL, j->ctx);
    w->slot = -2;
    return POOL_OK;
}

static int pool__piter_publish(pool_iter_t *it, pool__pwin *w, uint64_t c)
{
    pool_t *p = it->pool;
    pool__job *j = &it->job;
    int64_t b = (int64_t)c * j->chunk, e = b + j->chunk;
    uint64_t fnv;
    int si = -1;
    if (e > j->end) e = j->end;
    w->chunk = c;
    w->len = e - b;
    if (!shmq__load(&p->proc->monitor_started, SHMQ__ACQUIRE) ||
        shmq__load(&p->proc->hdr->closing, SHMQ__ACQUIRE))
        return pool__piter_run_here(it, w, b, e); /* closed and joined: the workers are gone */
    memcpy(w->in_a, j->in + (size_t)b * j->in_size, (size_t)(e - b) * j->in_size);
    memcpy(&fnv, &j->fn, sizeof fnv);
    pthread_mutex_lock(&p->mu);
    while (!p->proc->stop_decided && (si = pool__pslot_take(p)) < 0 && p->state != POOL__TERMINATED)
        pthread_cond_wait(&p->done_cv, &p->mu);
    if (p->proc->stop_decided) {
        /* the monitor is stopping the workers (closed and idle a moment ago): a job
         * published now would never run (si is -1 here: the loop stops at a slot) */
        pthread_mutex_unlock(&p->mu);
        return pool__piter_run_here(it, w, b, e);
    }
    if (si < 0) {
        pthread_mutex_unlock(&p->mu);
        return POOL_ECANCELLED;
    }
    pool__ppublish(p, si, POOL__PJ_MAP, fnv, j->ctx, w->in_a, w->out_a, w->codes_a, j->in_size,
                   j->out_size, b, e, e - b);
    pthread_mutex_unlock(&p->mu);
    w->slot = si;
    return POOL_OK;
}

static void pool__piter_free_windows(pool_iter_t *it)
{
    pool_t *p = it->pool;
    struct pool__proc *pp = p->proc;
    size_t k;
    if (!it->win) return;
    pthread_mutex_lock(&p->mu);
    pp->iter_windows -= it->wbudget;
    pthread_mutex_unlock(&p->mu);
    for (k = 0; k < it->nwin; k++) {
        pool__pwin *w = &it->win[k];
        if (w->slot >= 0) {
            pool__pslot *s = &pp->slots[w->slot];
            uint32_t g = shmq__load(&s->gen, SHMQ__ACQUIRE);
            uint32_t v = ((g & 0xFFFFu) << 16) | POOL__CH_FREE;
            if (shmq__cas(&s->chunks[0].state, &v, ((g & 0xFFFFu) << 16) | POOL__CH_CANCELLED))
                pool__pcheck_done(pp, s, g);
            pool__proc_wait_slot(p, w->slot, NULL, 0); /* a running chunk finishes first */
            pthread_mutex_lock(&p->mu);
            pool__pslot_release(p, w->slot);
            pool__ppublish_pending(p);
            pthread_mutex_unlock(&p->mu);
            w->slot = -1;
        }
        pool__arena_free(pp, w->in_a);
        pool__arena_free(pp, w->out_a);
        pool__arena_free(pp, w->codes_a);
    }
    POOL_FREE(it->win);
    it->win = NULL;
}

static int pool__piter_open(pool_iter_t *it, size_t nwin)
{
    pool_t *p = it->pool;
    struct pool__proc *pp = p->proc;
    pool__job *j = &it->job;
    size_t k;
    /* all iterators together hold at most half the job slots, so that maps and
     * futures always find one */
    pthread_mutex_lock(&p->mu);
    if (pp->iter_windows + nwin > POOL__NSLOTS / 2)
        nwin = pp->iter_windows >= POOL__NSLOTS / 2 ? 1 : POOL__NSLOTS / 2 - pp->iter_windows;
    pp->iter_windows += nwin;
    it->wbudget = nwin;
    pthread_mutex_unlock(&p->mu);
    it->win = (pool__pwin *)POOL_MALLOC(sizeof *it->win * nwin);
    if (!it->win) {
        pthread_mutex_lock(&p->mu);
        pp->iter_windows -= nwin;
        pthread_mutex_unlock(&p->mu);
        return POOL_ENOMEM;
    }
    it->nwin = nwin;
    for (k = 0; k < nwin; k++) {
        pool__pwin *w = &it->win[k];
        w->slot = -1;
        w->in_a = (unsigned char *)pool__arena_alloc(pp, (size_t)j->chunk * j->in_size);
        w->out_a = (unsigned char *)pool__arena_alloc(pp, (size_t)j->chunk * (j->out_size ? j->out_size : 1));
        w->codes_a = (int *)pool__arena_alloc(pp, (size_t)j->chunk * sizeof(int));
        if (!w->in_a || !w->out_a || !w->codes_a) {
            it->nwin = k + 1;
            pool__piter_free_windows(it);
            return POOL_ETOOBIG;
        }
    }
    for (k = 0; k < nwin && it->next_pub < j->nchunks; k++) {
        int rc = pool__piter_publish(it, &it->win[k], it->next_pub++);
        if (rc != POOL_OK) {
            pool__piter_free_windows(it);
            return rc;
        }
    }
    return POOL_OK;
}

static int pool__piter_next(pool_iter_t *it, void *out, size_t *index, int timeout_ms)
{
    pool_t *p = it->pool;
    struct pool__proc *pp = p->proc;
    pool__job *j = &it->job;
    double end = timeout_ms > 0 ? pool__now_ms() + timeout_ms : 0;
    for (;;) {
        size_t k;
        uint32_t seen;
        if (it->cur_slot >= 0) {
            pool__pwin *w = &it->win[it->cur_slot];
            int64_t pos = it->cur_pos++;
            int code = w->codes_a[pos];
            if (out && j->out_size) memcpy(out, w->out_a + (size_t)pos * j->out_size, j->out_size);
            if (index) *index = (size_t)((int64_t)w->chunk * j->chunk + pos);
            it->yielded++;
            if (it->cur_pos >= it->cur_len) { /* the window is spent: reuse it */
                if (w->slot >= 0) {
                    pthread_mutex_lock(&p->mu);
                    pool__pslot_release(p, w->slot);
                    pool__ppublish_pending(p);
                    pthread_mutex_unlock(&p->mu);
                }
                w->slot = -1;
                it->cur_slot = -1;
                if (it->next_pub < j->nchunks && shmq__load(&p->state, SHMQ__RELAXED) != POOL__TERMINATED)
                    pool__piter_publish(it, w, it->next_pub++);
            }
            pool__progress_tick(&it->pr, it->yielded, it->total, it->yielded == it->total);
            return code;
        }
        if (it->yielded >= it->total) return POOL_EDONE;
        seen = shmq__load(&pp->hdr->done.word, SHMQ__ACQUIRE);
        for (k = 0; k < it->nwin; k++) {
            pool__pwin *w = &it->win[k];
            if (w->slot == -1 || (w->slot >= 0 && !(shmq__load(&pp->slots[w->slot].done, SHMQ__ACQUIRE) & 1u)))
                continue;
            if (it->ordered && w->chunk != it->next_chunk) continue;
            if (w->slot >= 0 && (shmq__load(&pp->slots[w->slot].chunks[0].state, SHMQ__ACQUIRE) & 0xFFFFu) ==
                                    POOL__CH_CANCELLED)
                return POOL_ECANCELLED;
            it->cur_slot = (int64_t)k;
            it->cur_pos = 0;
            it->cur_len = w->len;
            it->next_chunk++;
            break;
        }
        if (it->cur_slot >= 0) continue;
        {
            int any = 0;
            for (k = 0; k < it->nwin; k++) any |= it->win[k].slot != -1;
            if (!any) return POOL_ECANCELLED; /* nothing in flight: the pool stopped */
        }
        if (timeout_ms == 0) return POOL_ETIMEDOUT;
        if (timeout_ms > 0 && pool__now_ms() >= end) return POOL_ETIMEDOUT;
        if (!shmq__load(&pp->monitor_started, SHMQ__ACQUIRE)) return POOL_ECANCELLED;
        shmq__fetch_add(&pp->hdr->done_waiters, 1u, SHMQ__SEQ_CST);
        {
            int ms = it->pr.fn ? it->pr.interval : 100;
            if (timeout_ms > 0 && end - pool__now_ms() < ms) ms = (int)(end - pool__now_ms()) + 1;
            shmq__futex_wait(&pp->hdr->done, seen, ms);
        }
        shmq__fetch_sub(&pp->hdr->done_waiters, 1u, SHMQ__SEQ_CST);
        pool__progress_tick(&it->pr, it->yielded, it->total, 0);
    }
}

/* >>impl-lifecycle */
POOL_DEF int pool_close(pool_t *p)
{
    int rc;
    if (!p) return POOL_EINVAL;
    if ((rc = pool__check_caller(p)) != POOL_OK) return rc;
    pthread_mutex_lock(&p->mu);
    if (p->state == POOL__OPEN) shmq__store(&p->state, (int)POOL__CLOSED, SHMQ__SEQ_CST);
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
    if (p->proc) pool__proc_poke(p);
    return POOL_OK;
}

/* Stops every job in the job list. Under mu. */
static void pool__cancel_jobs(pool_t *p)
{
    while (p->head) {
        pool__job *j = (pool__job *)p->head;
        pool__unlink(p, &j->item);
        shmq__store(&j->stop, 1, SHMQ__RELAXED);
        j->cancelled = 1;
        if (j->waiting) pthread_cond_broadcast(&p->done_cv);
    }
}

/* Takes every future out of the queue that can be taken now (waiting for other
 * takers, not for half-done pushes: those submitters see the pool stopped) and
 * cancels those still queued; drops the queue's references. */
static void pool__cancel_futures(pool_t *p)
{
    for (;;) {
        pool__item *batch[POOL__BATCH];
        int n, k;
        while (!pool__fq_trylock(p)) sched_yield();
        for (n = 0; n < POOL__BATCH && (batch[n] = pool__fq_pop(p)) != NULL; n++) {}
        if (n) shmq__store(&p->fq_popped, p->fq_popped + (uint64_t)n, SHMQ__RELAXED);
        shmq__store(&p->fq_lock, 0u, SHMQ__RELEASE);
        for (k = 0; k < n; k++) pool__future_take_and_run((pool_future_t *)batch[k]);
        if (n < POOL__BATCH) return;
    }
}

POOL_DEF int pool_terminate(pool_t *p)
{
    int rc;
    if (!p) return POOL_EINVAL;
    if ((rc = pool__check_caller(p)) != POOL_OK) return rc;
    if (p->proc) { /* the monitor kills the workers and cancels what is in flight */
        pthread_mutex_lock(&p->mu);
        shmq__store(&p->state, (int)POOL__TERMINATED, SHMQ__RELAXED);
        pthread_cond_broadcast(&p->done_cv);
        pthread_mutex_unlock(&p->mu);
        pool__stop_workers(p, 0);
        return POOL_OK;
    }
    pthread_mutex_lock(&p->mu);
    shmq__store(&p->state, (int)POOL__TERMINATED, SHMQ__SEQ_CST);
    pool__cancel_jobs(p);
    pthread_cond_broadcast(&p->work_cv);
    pthread_cond_broadcast(&p->done_cv);
    pthread_mutex_unlock(&p->mu);
    pool__cancel_futures(p); /* pool__future_take_and_run cancels once terminated */
    return POOL_OK;
}

POOL_DEF int pool_join(pool_t *p)
{
    int i, rc;
    if (!p) return POOL_EINVAL;
    if ((rc = pool__check_caller(p)) != POOL_OK) return rc;
    if ((pool__self && pool__self->pool == p) || pool__in_monitor(p)) return POOL_EINWORKER;
    pthread_mutex_lock(&p->mu);
    if (p->state == POOL__OPEN) {
        pthread_mutex_unlock(&p->mu);
        return POOL_ESTATE;
    }
    if (p->joined) { /* joined, or being joined by another thread: wait for that */
        while (p->joined != 2) pthread_cond_wait(&p->done_cv, &p->mu);
        pthread_mutex_unlock(&p->mu);
        return POOL_OK;
    }
    p->joined = 1;
    pthread_mutex_unlock(&p->mu);
    if (p->proc) {
        pool__stop_workers(p, 0);
    } else {
        for (i = 0; i < p->nworkers; i++) pthread_join(p->workers[i].thread, NULL);
    }
    pthread_mutex_lock(&p->mu);
    p->joined = 2;
    pthread_cond_broadcast(&p->done_cv);
    pthread_mutex_unlock(&p->mu);
    return POOL_OK;
}

POOL_DEF void pool_destroy(pool_t *p)
{
    int release;
    if (!p) return;
    if (p->proc && pool__self && pool__self->pool == p) return; /* not from a worker process */
    if (pool__in_monitor(p)) return; /* nor from a completion callback on the monitor */
    if (!pool__forked(p)) {
        if (pool__self && pool__self->pool == p) return; /* documented: not from a worker */
        if (shmq__load(&p->state, SHMQ__RELAXED) == POOL__OPEN) pool_terminate(p);
        pool_join(p);
        if (!p->proc) pool__cancel_futures(p); /* entries taken back by racing submitters */
    }
    pool__proc_free(p);
    /* the recycled futures go now; the core goes with the last future in use */
    shmq__fetch_sub(&p->live, pool__free_close(p), SHMQ__ACQ_REL);
    release = (shmq__fetch_or(&p->live, POOL__RELEASED, SHMQ__ACQ_REL) & ~POOL__RELEASED) == 0;
    if (release) pool__core_free(p);
}

/* >>impl-misc */
POOL_DEF int pool_get_stats(pool_t *p, pool_stats *out)
{
    int i;
    if (!p || !out) return POOL_EINVAL;
    memset(out, 0, sizeof *out);
    /* futures pushed are counted once, in fq_pushed (modulo 2^64 with st_submitted) */
    out->submitted = shmq__load(&p->st_submitted, SHMQ__RELAXED) + shmq__load(&p->fq_pushed, SHMQ__RELAXED);
    out->completed = shmq__load(&p->st_completed, SHMQ__RELAXED);
    out->failed = shmq__load(&p->st_failed, SHMQ__RELAXED);
    out->cancelled = shmq__load(&p->st_cancelled, SHMQ__RELAXED);
    for (i = 0; i < p->nworkers; i++) {
        out->completed += shmq__load(&p->workers[i].completed, SHMQ__RELAXED);
        out->failed += shmq__load(&p->workers[i].failed, SHMQ__RELAXED);
    }
    out->workers_started = (uint64_t)p->nworkers;
    if (p->proc) {
        pthread_mutex_lock(&p->mu);
        out->completed += shmq__load(&p->proc->hdr->st_completed, SHMQ__RELAXED);
        out->failed += shmq__load(&p->proc->hdr->st_failed, SHMQ__RELAXED);
        out->workers_started = shmq__load(&p->proc->started, SHMQ__RELAXED);
        out->worker_deaths = p->proc->deaths;
        pthread_mutex_unlock(&p->mu);
    }
    out->workers = p->nworkers;
    out->kind = p->cfg.kind;
    return POOL_OK;
}

POOL_DEF int pool_workers(const pool_t *p)
{
    return p ? p->nworkers : POOL_EINVAL;
}

POOL_DEF int pool_worker_index(void)
{
    return pool__self ? pool__self->index : -1;
}

/* Thread pool: plain memory from POOL_MALLOC, aligned to 64 bytes; the pointer
 * POOL_MALLOC returned is kept just below the aligned block. */
POOL_DEF void *pool_shared_alloc(pool_t *p, size_t size)
{
    unsigned char *raw, *mem;
    size_t extra = 64 + sizeof(void *);
    if (!p || size == 0 || size > SIZE_MAX - extra) return NULL;
    if (p->proc) /* the parent and its workers alike (not a stranger fork child) */
        return pool__check_caller(p) != POOL_EFORKED || (pool__self && pool__self->pool == p)
                   ? pool__arena_alloc(p->proc, size) : NULL;
    raw = (unsigned char *)POOL_MALLOC(size + extra);
    if (!raw) return NULL;
    mem = raw + sizeof(void *);
    mem += (64 - (uintptr_t)mem % 64) % 64;
    memcpy(mem - sizeof(void *), &raw, sizeof raw);
    return mem;
}

POOL_DEF void pool_shared_free(pool_t *p, void *ptr)
{
    void *raw;
    if (!ptr || !p) return;
    if (p->proc) {
        if ((pool__check_caller(p) != POOL_EFORKED || (pool__self && pool__self->pool == p)) &&
            pool__is_in_arena(p->proc, ptr, 1))
            pool__arena_free(p->proc, ptr);
        return;
    }
    memcpy(&raw, (unsigned char *)ptr - sizeof(void *), sizeof raw);
    POOL_FREE(raw);
}

POOL_DEF void pool_bar_render(uint64_t done, uint64_t total, void *user)
{
    pool_bar *bar = (pool_bar *)user;
    char line[256];
    int width, filled, i, n;
    double now = pool__now_ms(), elapsed, rate, eta;
    if (!bar) return;
    if (bar->start_ <= 0) bar->start_ = now;
    width = bar->width > 0 && bar->width <= 100 ? bar->width : 30;
    filled = total ? (int)((double)done / (double)total * width) : width;
    if (filled > width) filled = width;
    elapsed = (now - bar->start_) / 1000.0;
    rate = elapsed > 0 ? (double)done / elapsed : 0;
    eta = rate > 0 && total >= done ? (double)(total - done) / rate : 0;
    n = snprintf(line, sizeof line, "\r%.40s%s%3d%%|", bar->label ? bar->label : "", bar->label ? ": " : "",
                 total ? (int)(100.0 * (double)done / (double)total) : 100);
    for (i = 0; i < width; i++) line[n++] = i < filled ? '#' : ' '; /* n <= 50 + 100 */
    n += snprintf(line + n, sizeof line - (size_t)n, "| %llu/%llu [%.1fs<%.1fs, %.0f it/s]%s",
                  (unsigned long long)done, (unsigned long long)total, elapsed, eta, rate,
                  done >= total ? "\n" : "");
    fputs(line, stderr);
    fflush(stderr);
}

/* >>manager-implementation */
/* >>manager: the Manager server and its client proxies.
 *
 * LAYOUT OF THIS SECTION
 *   >>manager-wire     the frame format (the one place it is described)
 *   >>manager-sha256   SHA-256 and HMAC-SHA-256 (the authkey handshake)
 *   >>manager-util     bytes, time, randomness, the ordered byte map
 *   >>manager-server   objects, parked requests, frame handling, the event loop
 *   >>manager-client   connections, round trips, handles, batches
 *
 * THREADS AND LOCKS. The server is single-threaded: one event loop owns every
 * server structure; only pool_mserver_stop comes from another thread (an atomic
 * flag and a write to a pipe). A client pool_manager_t has one mutex `mu`, which
 * protects its connection lists and its handle list and is never held across a
 * system call that can block; a connection is used by one thread at a time (it is
 * taken out of the idle list for a call). One process-wide mutex, pool__mgr_reg_mu,
 * guards the registry of open managers that the fork handlers walk.
 * LOCK ORDER: pool__mgr_reg_mu, then a manager's mu (only the fork handlers hold both).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#if SHMQ__LINUX
#include <sys/epoll.h>
#endif
#if defined(__linux__)
#include <dirent.h>
#endif

#if defined(POOL_MALLOC)
#define POOL__MGR_MALLOC(n) POOL_MALLOC(n)
#define POOL__MGR_REALLOC(p, n) POOL_REALLOC(p, n)
#define POOL__MGR_FREE(p) POOL_FREE(p)
#else
#define POOL__MGR_MALLOC(n) SHMQ_MALLOC(n)
#define POOL__MGR_REALLOC(p, n) SHMQ_REALLOC(p, n)
#define POOL__MGR_FREE(p) SHMQ_FREE(p)
#endif

#ifdef MSG_NOSIGNAL
#define POOL__MGR_MSG_NOSIGNAL MSG_NOSIGNAL
#else
#define POOL__MGR_MSG_NOSIGNAL 0
#endif

/* >>manager-wire
 *
 * Every frame, both ways: u32 length (of what follows), then `length` bytes. All
 * integers little-endian. A frame longer than max_frame, or shorter than its type
 * needs, or with bytes left over after its last field, is malformed: the server
 * answers with an ERROR frame and closes that connection (never the server).
 *
 *   S->C CHALLENGE  u8 type=0x10, u8 version=1, u8 auth(0|1), u8 0, 32 nonce_s
 *   C->S HELLO      u8 type=0x11, u8 version=1, u16 0, u32 pid, u64 session,
 *                   32 nonce_c, 32 mac_c (zero without authkey)
 *   S->C WELCOME    u8 type=0x12, u8 0, u16 0, i32 code=0, 32 mac_s
 *   S->C ERROR      u8 type=0x7f, u8 0, u16 0, i32 code            (then close)
 *     mac_c = HMAC(key, "pool-manager-client" | nonce_s | nonce_c | session)
 *     mac_s = HMAC(key, "pool-manager-server" | nonce_c | nonce_s | session)
 *   C->S REQUEST    u8 type=0x20, u8 0, u16 nops (>= 1), u64 thread token, then
 *                   nops ops: u8 op, u8 kind, u16 nblobs, u32 object id,
 *                   i32 timeout_ms, u32 aux, i64 num, nblobs x (u32 len, bytes)
 *   C->S ACK        u8 type=0x21, u8 0, u16 0, u64 0      (no reply)
 *   S->C REPLY      u8 type=0x30, u8 0, u16 nres (= nops), then nres results:
 *                   i32 code, u32 nblobs, i64 num, nblobs x (u32 len, bytes)
 *
 * Any frame after the handshake acknowledges the queue items delivered on that
 * connection before it. An op's kind must equal its object's kind and the op must
 * belong to that kind, with exactly the op's number of blobs; in a frame of more
 * than one op every timeout counts as 0 and a condition wait is refused (a batch
 * never parks). Before the handshake, only a HELLO-sized frame is accepted.
 */
#define POOL__MGR_T_CHALLENGE 0x10
#define POOL__MGR_T_HELLO 0x11
#define POOL__MGR_T_WELCOME 0x12
#define POOL__MGR_T_ERROR 0x7f
#define POOL__MGR_T_REQUEST 0x20
#define POOL__MGR_T_ACK 0x21
#define POOL__MGR_T_REPLY 0x30
#define POOL__MGR_WIRE_VERSION 1
#define POOL__MGR_HELLO_LEN 80
#define POOL__MGR_REQ_HDR 12 /* after the length field */
#define POOL__MGR_OP_HDR 24
#define POOL__MGR_RES_HDR 16
#define POOL__MGR_NAME_MAX 255
#define POOL__MGR_KEY_MAX 65535

enum pool__mgr_kind {
    POOL__MGR_K_NONE = 0,
    POOL__MGR_K_DICT,
    POOL__MGR_K_LIST,
    POOL__MGR_K_QUEUE,
    POOL__MGR_K_LOCK,
    POOL__MGR_K_RLOCK,
    POOL__MGR_K_SEM,
    POOL__MGR_K_BSEM,
    POOL__MGR_K_EVENT,
    POOL__MGR_K_COND,
    POOL__MGR_K_BARRIER,
    POOL__MGR_K_VALUE,
    POOL__MGR_K_COUNT
};

enum pool__mgr_op {
    POOL__MGR_OP_OPEN = 1,
    POOL__MGR_OP_PING = 2,
    POOL__MGR_OP_SHUTDOWN = 3,
    POOL__MGR_OP_D_SET = 10,
    POOL__MGR_OP_D_GET,
    POOL__MGR_OP_D_DEL,
    POOL__MGR_OP_D_HAS,
    POOL__MGR_OP_D_LEN,
    POOL__MGR_OP_D_CAS,
    POOL__MGR_OP_D_ADD,
    POOL__MGR_OP_D_ITER,
    POOL__MGR_OP_D_CLEAR,
    POOL__MGR_OP_L_APPEND = 20,
    POOL__MGR_OP_L_GET,
    POOL__MGR_OP_L_SET,
    POOL__MGR_OP_L_POP,
    POOL__MGR_OP_L_LEN,
    POOL__MGR_OP_Q_PUT = 30,
    POOL__MGR_OP_Q_GET,
    POOL__MGR_OP_Q_SIZE,
    POOL__MGR_OP_Q_DONE,
    POOL__MGR_OP_Q_JOIN,
    POOL__MGR_OP_K_ACQ = 40,
    POOL__MGR_OP_K_REL,
    POOL__MGR_OP_S_ACQ = 50,
    POOL__MGR_OP_S_REL,
    POOL__MGR_OP_S_VAL,
    POOL__MGR_OP_E_SET = 60,
    POOL__MGR_OP_E_CLEAR,
    POOL__MGR_OP_E_ISSET,
    POOL__MGR_OP_E_WAIT,
    POOL__MGR_OP_C_ACQ = 70,
    POOL__MGR_OP_C_REL,
    POOL__MGR_OP_C_WAIT,
    POOL__MGR_OP_C_NOTIFY,
    POOL__MGR_OP_B_WAIT = 80,
    POOL__MGR_OP_B_RESET,
    POOL__MGR_OP_B_ABORT,
    POOL__MGR_OP_V_GET = 90,
    POOL__MGR_OP_V_SET,
    POOL__MGR_OP_V_ADD,
    POOL__MGR_OP_V_CAS,
    POOL__MGR_OP_END = 100
};

#define POOL__MGR_KB(k) (1u << (k))
/* Which kinds an op applies to, and its exact number of blobs; 0 mask: no such op. */
typedef struct pool__mgr_opinfo { uint32_t kinds; uint8_t nblobs; } pool__mgr_opinfo;

static pool__mgr_opinfo pool__mgr_op_info(unsigned op)
{
    pool__mgr_opinfo r = {0, 0};
    uint32_t lockk = POOL__MGR_KB(POOL__MGR_K_LOCK) | POOL__MGR_KB(POOL__MGR_K_RLOCK);
    uint32_t semk = POOL__MGR_KB(POOL__MGR_K_SEM) | POOL__MGR_KB(POOL__MGR_K_BSEM);
    switch (op) {
    case POOL__MGR_OP_OPEN: r.kinds = 0xffe; r.nblobs = 1; break; /* kinds 1..11 */
    case POOL__MGR_OP_PING: case POOL__MGR_OP_SHUTDOWN: r.kinds = POOL__MGR_KB(POOL__MGR_K_NONE); break;
    case POOL__MGR_OP_D_SET: r.kinds = POOL__MGR_KB(POOL__MGR_K_DICT); r.nblobs = 2; break;
    case POOL__MGR_OP_D_GET: case POOL__MGR_OP_D_DEL: case POOL__MGR_OP_D_HAS: case POOL__MGR_OP_D_ADD:
        r.kinds = POOL__MGR_KB(POOL__MGR_K_DICT); r.nblobs = 1; break;
    case POOL__MGR_OP_D_LEN: case POOL__MGR_OP_D_ITER: case POOL__MGR_OP_D_CLEAR:
        r.kinds = POOL__MGR_KB(POOL__MGR_K_DICT); break;
    case POOL__MGR_OP_D_CAS: r.kinds = POOL__MGR_KB(POOL__MGR_K_DICT); r.nblobs = 3; break;
    case POOL__MGR_OP_L_APPEND:
    case POOL__MGR_OP_L_SET:
        r.kinds = POOL__MGR_KB(POOL__MGR_K_LIST);
        r.nblobs = 1;
        break;
    case POOL__MGR_OP_L_GET:
    case POOL__MGR_OP_L_POP:
    case POOL__MGR_OP_L_LEN:
        r.kinds = POOL__MGR_KB(POOL__MGR_K_LIST);
        break;
    case POOL__MGR_OP_Q_PUT: r.kinds = POOL__MGR_KB(POOL__MGR_K_QUEUE); r.nblobs = 1; break;
    case POOL__MGR_OP_Q_GET: case POOL__MGR_OP_Q_SIZE: case POOL__MGR_OP_Q_DONE: case POOL__MGR_OP_Q_JOIN:
        r.kinds = POOL__MGR_KB(POOL__MGR_K_QUEUE); break;
    case POOL__MGR_OP_K_ACQ: case POOL__MGR_OP_K_REL: r.kinds = lockk; break;
    case POOL__MGR_OP_S_ACQ: case POOL__MGR_OP_S_REL: case POOL__MGR_OP_S_VAL: r.kinds = semk; break;
    case POOL__MGR_OP_E_SET: case POOL__MGR_OP_E_CLEAR: case POOL__MGR_OP_E_ISSET: case POOL__MGR_OP_E_WAIT:
        r.kinds = POOL__MGR_KB(POOL__MGR_K_EVENT); break;
    case POOL__MGR_OP_C_ACQ: case POOL__MGR_OP_C_REL: case POOL__MGR_OP_C_WAIT: case POOL__MGR_OP_C_NOTIFY:
        r.kinds = POOL__MGR_KB(POOL__MGR_K_COND); break;
    case POOL__MGR_OP_B_WAIT: case POOL__MGR_OP_B_RESET: case POOL__MGR_OP_B_ABORT:
        r.kinds = POOL__MGR_KB(POOL__MGR_K_BARRIER); break;
    case POOL__MGR_OP_V_GET: case POOL__MGR_OP_V_ADD: r.kinds = POOL__MGR_KB(POOL__MGR_K_VALUE); break;
    case POOL__MGR_OP_V_SET: r.kinds = POOL__MGR_KB(POOL__MGR_K_VALUE); r.nblobs = 1; break;
    case POOL__MGR_OP_V_CAS: r.kinds = POOL__MGR_KB(POOL__MGR_K_VALUE); r.nblobs = 2; break;
    default: break;
    }
    return r;
}

/* >>manager-sha256: FIPS 180-4 SHA-256 and RFC 2104 HMAC (tested with RFC 4231). */
typedef struct pool__mgr_sha256 {
    uint32_t h[8];
    uint64_t bytes;
    uint8_t buf[64];
    size_t n;
} pool__mgr_sha256;

static const uint32_t pool__mgr_sha256_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define POOL__MGR_ROR32(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void pool__mgr_sha256_block(pool__mgr_sha256 *s, const uint8_t *p)
{
    uint32_t w[64], a, b, c, d, e, f, g, h, t1, t2;
    int i;
    for (i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
    for (i = 16; i < 64; i++) {
        uint32_t s0 = POOL__MGR_ROR32(w[i - 15], 7) ^ POOL__MGR_ROR32(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = POOL__MGR_ROR32(w[i - 2], 17) ^ POOL__MGR_ROR32(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    a = s->h[0]; b = s->h[1]; c = s->h[2]; d = s->h[3];
    e = s->h[4]; f = s->h[5]; g = s->h[6]; h = s->h[7];
    for (i = 0; i < 64; i++) {
        t1 = h + (POOL__MGR_ROR32(e, 6) ^ POOL__MGR_ROR32(e, 11) ^ POOL__MGR_ROR32(e, 25)) +
             ((e & f) ^ (~e & g)) + pool__mgr_sha256_k[i] + w[i];
        t2 = (POOL__MGR_ROR32(a, 2) ^ POOL__MGR_ROR32(a, 13) ^ POOL__MGR_ROR32(a, 22)) +
             ((a & b) ^ (a & c) ^ (b & c));
        h = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
    }
    s->h[0] += a; s->h[1] += b; s->h[2] += c; s->h[3] += d;
    s->h[4] += e; s->h[5] += f; s->h[6] += g; s->h[7] += h;
}

static void pool__mgr_sha256_init(pool__mgr_sha256 *s)
{
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, iv, sizeof iv);
    s->bytes = 0;
    s->n = 0;
}

static void pool__mgr_sha256_update(pool__mgr_sha256 *s, const void *data, size_t len)
{
    const uint8_t *p = (const uint8_t *)data;
    s->bytes += len;
    while (len > 0) {
        size_t take = 64 - s->n;
        if (take > len) take = len;
        memcpy(s->buf + s->n, p, take);
        s->n += take; p += take; len -= take;
        if (s->n == 64) { pool__mgr_sha256_block(s, s->buf); s->n = 0; }
    }
}

static void pool__mgr_sha256_final(pool__mgr_sha256 *s, uint8_t out[32])
{
    uint64_t bits = s->bytes * 8;
    uint8_t pad = 0x80, zero = 0, lenb[8];
    int i;
    pool__mgr_sha256_update(s, &pad, 1);
    while (s->n != 56) pool__mgr_sha256_update(s, &zero, 1);
    for (i = 0; i < 8; i++) lenb[i] = (uint8_t)(bits >> (56 - 8 * i));
    pool__mgr_sha256_update(s, lenb, 8);
    for (i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(s->h[i] >> 24); out[4 * i + 1] = (uint8_t)(s->h[i] >> 16);
        out[4 * i + 2] = (uint8_t)(s->h[i] >> 8); out[4 * i + 3] = (uint8_t)s->h[i];
    }
}

/* HMAC-SHA-256 of the concatenation of up to four parts (NULL parts end the list). */
static void pool__mgr_hmac_sha256(const void *key, size_t klen, const void *m0, size_t l0,
                              const void *m1, size_t l1, const void *m2, size_t l2,
                              const void *m3, size_t l3, uint8_t out[32])
{
    uint8_t k[64], ipad[64], opad[64], inner[32];
    pool__mgr_sha256 s;
    int i;
    memset(k, 0, sizeof k);
    if (klen > 64) {
        pool__mgr_sha256_init(&s);
        pool__mgr_sha256_update(&s, key, klen);
        pool__mgr_sha256_final(&s, k);
    } else if (klen > 0) {
        memcpy(k, key, klen);
    }
    for (i = 0; i < 64; i++) { ipad[i] = (uint8_t)(k[i] ^ 0x36); opad[i] = (uint8_t)(k[i] ^ 0x5c); }
    pool__mgr_sha256_init(&s);
    pool__mgr_sha256_update(&s, ipad, 64);
    if (m0) pool__mgr_sha256_update(&s, m0, l0);
    if (m1) pool__mgr_sha256_update(&s, m1, l1);
    if (m2) pool__mgr_sha256_update(&s, m2, l2);
    if (m3) pool__mgr_sha256_update(&s, m3, l3);
    pool__mgr_sha256_final(&s, inner);
    pool__mgr_sha256_init(&s);
    pool__mgr_sha256_update(&s, opad, 64);
    pool__mgr_sha256_update(&s, inner, 32);
    pool__mgr_sha256_final(&s, out);
}

/* Constant-time equality: the time taken depends on n only. */
static int pool__mgr_ct_equal(const uint8_t *a, const uint8_t *b, size_t n)
{
    volatile uint8_t d = 0;
    size_t i;
    for (i = 0; i < n; i++) d = (uint8_t)(d | (a[i] ^ b[i]));
    return d == 0;
}

/* >>manager-util */
static void pool__mgr_put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void pool__mgr_put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
static void pool__mgr_put64(uint8_t *p, uint64_t v)
{
    pool__mgr_put32(p, (uint32_t)v);
    pool__mgr_put32(p + 4, (uint32_t)(v >> 32));
}
static uint16_t pool__mgr_get16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t pool__mgr_get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t pool__mgr_get64(const uint8_t *p)
{
    return (uint64_t)pool__mgr_get32(p) | (uint64_t)pool__mgr_get32(p + 4) << 32;
}

static int64_t pool__mgr_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* >>manager-spin: polling before sleeping
 *
 * A round trip through a Unix socket between two sleeping processes costs two
 * wake-ups: a few us each on bare metal, 20-50 us on a virtual machine whose
 * idle CPU the host must wake, which is most of a call. So a client that sent
 * a request polls its socket (non-blocking recv) for up to spin_us before it
 * blocks, and the server, after serving events, polls (epoll/poll with a zero
 * timeout) for up to spin_us before it sleeps. When both poll, a round trip is
 * a few system calls and no wake-up. Adaptive, as shm_queue.h's waiters: each
 * side keeps a moving average of its whole waits (reply latency, or the gap
 * between requests); past 8 x spin_us polling rarely pays (a blocking queue get,
 * an idle server). And it keeps the share of polls that ended without the
 * answer: past one half, the peer is not getting a CPU while we poll (a busy
 * machine; with one usable CPU polling is off from the start). In either case
 * it polls only every 64th wait, which keeps measuring (a share of lost polls
 * falls below one half after three won polls). Last, polling only pays when a
 * sleep is dear: every wait that slept (and every 256th wait sleeps at once, as
 * a probe) averages what the part after polling cost into sleep_ns; under
 * 10 us the CPUs are awake anyway (a busy machine, where the polls of both
 * sides took 25% of the throughput in bench_manager) and nobody polls. The
 * cost is bounded: at most spin_us of CPU per wait. */
typedef struct pool__mgr_spin {
    int64_t max_ns;   /* 0: never poll */
    int64_t avg_ns;   /* atomic relaxed: moving average of whole waits */
    int64_t sleep_ns; /* atomic relaxed: moving average of what a sleep cost (see above) */
    int32_t lost;     /* atomic relaxed: share of polls that did not catch the answer (0..1024) */
    uint32_t skip;    /* atomic relaxed: waits that did not poll */
    uint32_t nwait;   /* atomic relaxed: waits (approximate), for the sleep probes */
} pool__mgr_spin;

#define POOL__MGR_SLEEP_CHEAP_NS 10000 /* a sleep this cheap: polling cannot pay */

static void pool__mgr_spin_init(pool__mgr_spin *sp, int spin_us)
{
    /* polling pays only if the peer can run meanwhile: not with one usable CPU */
    sp->max_ns = spin_us < 0 || shmq__ncpus() < 2 ? 0 : (int64_t)(spin_us ? spin_us : 50) * 1000;
    if (sp->max_ns > 1000000000) sp->max_ns = 1000000000;
    sp->avg_ns = 0;
    sp->sleep_ns = sp->max_ns; /* until measured */
    sp->lost = 0;
    sp->skip = 0;
    sp->nwait = 0;
}

/* How long this wait may poll (ns; 0: sleep at once) */
static int64_t pool__mgr_spin_budget(pool__mgr_spin *sp)
{
    uint32_t n;
    int64_t sleep;
    if (sp->max_ns == 0) return 0;
    n = shmq__load(&sp->nwait, SHMQ__RELAXED);
    shmq__store(&sp->nwait, n + 1, SHMQ__RELAXED);
    if ((n & 255u) == 255u) return 0; /* a sleep probe: what does sleeping cost now? */
    sleep = shmq__load(&sp->sleep_ns, SHMQ__RELAXED);
    if (sleep < POOL__MGR_SLEEP_CHEAP_NS) return 0; /* CPUs are awake (a busy machine) */
    /* polling pays only if the peer answers while we poll: it cannot when it has no
     * CPU meanwhile (one CPU, or a busy machine), so polls that keep losing stop too */
    if (shmq__load(&sp->avg_ns, SHMQ__RELAXED) <= 8 * sp->max_ns &&
        shmq__load(&sp->lost, SHMQ__RELAXED) < 512)
        return sp->max_ns;
    return (shmq__fetch_add(&sp->skip, 1u, SHMQ__RELAXED) & 63u) == 63u ? sp->max_ns : 0;
}

/* polled: how long this wait polled (0: it slept at once) */
static void pool__mgr_spin_note(pool__mgr_spin *sp, int64_t waited, int64_t polled)
{
    int64_t avg = shmq__load(&sp->avg_ns, SHMQ__RELAXED);
    shmq__store(&sp->avg_ns, avg + (waited - avg) / 8, SHMQ__RELAXED);
    if (waited > polled && waited - polled < 1000000) { /* it slept: what did that cost? */
        int64_t sl = shmq__load(&sp->sleep_ns, SHMQ__RELAXED);
        shmq__store(&sp->sleep_ns, sl + (waited - polled - sl) / 8, SHMQ__RELAXED);
    }
    if (polled > 0) {
        int32_t l = shmq__load(&sp->lost, SHMQ__RELAXED);
        shmq__store(&sp->lost, l + ((waited > polled ? 1024 : 0) - l) / 4, SHMQ__RELAXED);
    }
}

/* Fills buf with random bytes: /dev/urandom, else a hash of clocks and ids. */
static void pool__mgr_random(void *buf, size_t n)
{
    uint8_t *p = (uint8_t *)buf;
    size_t got = 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        while (got < n) {
            ssize_t r = read(fd, p + got, n - got);
            if (r > 0) got += (size_t)r;
            else if (r < 0 && errno == EINTR) continue;
            else break;
        }
        close(fd);
    }
    while (got < n) {
        static int counter; /* only mixes into the fallback */
        pool__mgr_sha256 s;
        uint8_t h[32];
        struct timespec ts;
        long pid = (long)getpid();
        size_t take;
        clock_gettime(CLOCK_REALTIME, &ts);
        pool__mgr_sha256_init(&s);
        pool__mgr_sha256_update(&s, &ts, sizeof ts);
        pool__mgr_sha256_update(&s, &pid, sizeof pid);
        {
            int k = shmq__fetch_add(&counter, 1, SHMQ__RELAXED);
            pool__mgr_sha256_update(&s, &k, sizeof k);
        }
        pool__mgr_sha256_update(&s, &p, sizeof p);
        pool__mgr_sha256_final(&s, h);
        take = n - got < 32 ? n - got : 32;
        memcpy(p + got, h, take);
        got += take;
    }
}

static void pool__mgr_sleep_ms(int ms)
{
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (long)(ms % 1000) * 1000000;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) { }
}

static void pool__mgr_set_fd_flags(int fd, int nonblock)
{
    int fl = fcntl(fd, F_GETFD);
    if (fl >= 0) fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
    if (nonblock) {
        fl = fcntl(fd, F_GETFL);
        if (fl >= 0) fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    }
}

static uint64_t pool__mgr_hash(const uint8_t *p, size_t n, uint64_t seed)
{
    uint64_t h = 1469598103934665603ull ^ seed;
    size_t i;
    for (i = 0; i < n; i++) { h ^= p[i]; h *= 1099511628211ull; }
    h ^= h >> 33; h *= 0xff51afd7ed558ccdull; h ^= h >> 33;
    return h;
}

/* An ordered map of byte strings (insertion order kept for iteration): entries in
 * an array, open-addressed slots that index them. Deleting leaves a tombstone
 * entry; a rebuild drops tombstones and bumps `epoch` (iteration cursors name it). */
typedef struct pool__mgr_ent {
    uint8_t *kv;      /* key bytes then value bytes; NULL: a tombstone */
    uint32_t klen, vlen, cap;
    uint64_t hash;
} pool__mgr_ent;

typedef struct pool__mgr_map {
    pool__mgr_ent *ents;
    uint32_t nents, entcap, live, epoch;
    uint64_t *slots; /* 0: empty, POOL__MGR_SLOT_DEL: deleted, else the hash's high 32 bits
                      * (a fingerprint: a probe reads an entry only when it matches)
                      * << 32 | entry index + 1 */
    uint32_t nslots; /* a power of two, or 0 */
    uint64_t seed;
} pool__mgr_map;
#define POOL__MGR_SLOT_DEL 0xffffffffu
#define POOL__MGR_SLOT(h, idx) (((h) & 0xffffffff00000000ull) | ((uint64_t)(idx) + 1))
#define POOL__MGR_SLOT_IDX(s) ((uint32_t)(s) - 1)

static void pool__mgr_map_free(pool__mgr_map *m)
{
    uint32_t i;
    for (i = 0; i < m->nents; i++) POOL__MGR_FREE(m->ents[i].kv);
    POOL__MGR_FREE(m->ents);
    POOL__MGR_FREE(m->slots);
    m->ents = NULL; m->slots = NULL;
    m->nents = m->entcap = m->live = m->nslots = 0;
}

/* The slot of key, or of the first free slot on its probe path when absent (*found 0). */
static uint32_t pool__mgr_map_find(const pool__mgr_map *m, const uint8_t *k, uint32_t klen, uint64_t h,
                                   int *found)
{
    uint32_t mask = m->nslots - 1, i = (uint32_t)h & mask, first_free = POOL__MGR_SLOT_DEL;
    for (;;) {
        uint64_t s = m->slots[i];
        if (s == 0) { *found = 0; return first_free != POOL__MGR_SLOT_DEL ? first_free : i; }
        if (s == POOL__MGR_SLOT_DEL) {
            if (first_free == POOL__MGR_SLOT_DEL) first_free = i;
        } else if ((s >> 32) == (h >> 32)) {
            const pool__mgr_ent *e = &m->ents[POOL__MGR_SLOT_IDX(s)];
            if (e->hash == h && e->klen == klen && memcmp(e->kv, k, klen) == 0) { *found = 1; return i; }
        }
        i = (i + 1) & mask;
    }
}

static pool__mgr_ent *pool__mgr_map_get(const pool__mgr_map *m, const uint8_t *k, uint32_t klen,
                                        uint32_t *slot)
{
    int found;
    uint32_t s;
    if (m->nslots == 0) return NULL;
    s = pool__mgr_map_find(m, k, klen, pool__mgr_hash(k, klen, m->seed), &found);
    if (!found) return NULL;
    if (slot) *slot = s;
    return &m->ents[POOL__MGR_SLOT_IDX(m->slots[s])];
}

/* Compacts the entries and re-indexes into enough slots for one more entry. */
static int pool__mgr_map_rebuild(pool__mgr_map *m, uint32_t want)
{
    uint32_t nslots = 16, i, j = 0;
    uint64_t *slots;
    while (nslots / 2 < want + 1) nslots *= 2;
    slots = (uint64_t *)POOL__MGR_MALLOC(sizeof *slots * nslots);
    if (!slots) return POOL_ENOMEM;
    memset(slots, 0, sizeof *slots * nslots);
    if (m->live != m->nents) {
        for (i = 0; i < m->nents; i++)
            if (m->ents[i].kv) m->ents[j++] = m->ents[i];
        m->nents = j;
        m->epoch++;
    }
    for (i = 0; i < m->nents; i++) {
        uint32_t s = (uint32_t)m->ents[i].hash & (nslots - 1);
        while (slots[s]) s = (s + 1) & (nslots - 1);
        slots[s] = POOL__MGR_SLOT(m->ents[i].hash, i);
    }
    POOL__MGR_FREE(m->slots);
    m->slots = slots;
    m->nslots = nslots;
    return POOL_OK;
}

/* Sets key to value; *created tells whether the key was new. */
static int pool__mgr_map_set(pool__mgr_map *m, const uint8_t *k, uint32_t klen, const uint8_t *v,
                             uint32_t vlen)
{
    uint64_t h = pool__mgr_hash(k, klen, m->seed);
    int found = 0;
    uint32_t s = 0;
    pool__mgr_ent *e;
    if (m->nslots) s = pool__mgr_map_find(m, k, klen, h, &found);
    if (found) {
        e = &m->ents[POOL__MGR_SLOT_IDX(m->slots[s])];
        if (klen + vlen > e->cap) {
            uint8_t *kv = (uint8_t *)POOL__MGR_REALLOC(e->kv, (size_t)klen + vlen);
            if (!kv) return POOL_ENOMEM;
            e->kv = kv;
            e->cap = klen + vlen;
        }
        if (vlen) memcpy(e->kv + klen, v, vlen);
        e->vlen = vlen;
        return POOL_OK;
    }
    if ((uint64_t)(m->nents + 1) * 4 > (uint64_t)m->nslots * 3) {
        int rc = pool__mgr_map_rebuild(m, m->live + 1);
        if (rc) return rc;
        s = pool__mgr_map_find(m, k, klen, h, &found);
    }
    if (m->nents == m->entcap) {
        uint32_t ncap = m->entcap ? m->entcap * 2 : 8;
        pool__mgr_ent *ne = (pool__mgr_ent *)POOL__MGR_REALLOC(m->ents, sizeof *ne * ncap);
        if (!ne) return POOL_ENOMEM;
        m->ents = ne;
        m->entcap = ncap;
    }
    e = &m->ents[m->nents];
    e->kv = (uint8_t *)POOL__MGR_MALLOC((size_t)klen + vlen + 1);
    if (!e->kv) return POOL_ENOMEM;
    memcpy(e->kv, k, klen);
    if (vlen) memcpy(e->kv + klen, v, vlen);
    e->klen = klen; e->vlen = vlen; e->cap = klen + vlen; e->hash = h;
    m->slots[s] = POOL__MGR_SLOT(h, m->nents);
    m->nents++;
    m->live++;
    return POOL_OK;
}

static int pool__mgr_map_del(pool__mgr_map *m, const uint8_t *k, uint32_t klen)
{
    uint32_t s;
    pool__mgr_ent *e = pool__mgr_map_get(m, k, klen, &s);
    if (!e) return POOL_ENOTFOUND;
    POOL__MGR_FREE(e->kv);
    e->kv = NULL;
    m->slots[s] = POOL__MGR_SLOT_DEL;
    m->live--;
    return POOL_OK;
}

static void pool__mgr_map_clear(pool__mgr_map *m)
{
    uint32_t epoch = m->epoch + 1;
    uint64_t seed = m->seed;
    pool__mgr_map_free(m);
    m->epoch = epoch;
    m->seed = seed;
}

/* A growable byte buffer (frames being built or received). */
typedef struct pool__mgr_buf {
    uint8_t *p;
    size_t n, cap;
} pool__mgr_buf;

static int pool__mgr_buf_reserve(pool__mgr_buf *b, size_t extra)
{
    size_t need = b->n + extra, cap;
    uint8_t *np;
    if (need < extra) return POOL_ENOMEM;
    if (need <= b->cap) return POOL_OK;
    cap = b->cap ? b->cap : 256;
    while (cap < need) cap *= 2;
    np = (uint8_t *)POOL__MGR_REALLOC(b->p, cap);
    if (!np) return POOL_ENOMEM;
    b->p = np;
    b->cap = cap;
    return POOL_OK;
}

static void pool__mgr_buf_free(pool__mgr_buf *b) { POOL__MGR_FREE(b->p); b->p = NULL; b->n = b->cap = 0; }

/* A byte string owned by the server (queue and list items). */
typedef struct pool__mgr_blob {
    uint8_t *p;
    uint32_t n;
} pool__mgr_blob;

static int pool__mgr_blob_make(pool__mgr_blob *b, const uint8_t *p, uint32_t n)
{
    b->p = (uint8_t *)POOL__MGR_MALLOC(n ? n : 1);
    if (!b->p) return POOL_ENOMEM;
    if (n) memcpy(b->p, p, n);
    b->n = n;
    return POOL_OK;
}

/* A ring of blobs: the queue, and the list (which also inserts and removes inside). */
typedef struct pool__mgr_ring {
    pool__mgr_blob *a;
    size_t head, count, cap; /* cap: a power of two or 0 */
} pool__mgr_ring;

static pool__mgr_blob *pool__mgr_ring_at(pool__mgr_ring *r, size_t i)
{
    return &r->a[(r->head + i) & (r->cap - 1)];
}

static int pool__mgr_ring_grow(pool__mgr_ring *r)
{
    size_t ncap = r->cap ? r->cap * 2 : 8, i;
    pool__mgr_blob *na;
    if (r->count < r->cap) return POOL_OK;
    na = (pool__mgr_blob *)POOL__MGR_MALLOC(sizeof *na * ncap);
    if (!na) return POOL_ENOMEM;
    for (i = 0; i < r->count; i++) na[i] = *pool__mgr_ring_at(r, i);
    POOL__MGR_FREE(r->a);
    r->a = na;
    r->cap = ncap;
    r->head = 0;
    return POOL_OK;
}

static int pool__mgr_ring_push_back(pool__mgr_ring *r, pool__mgr_blob b)
{
    if (pool__mgr_ring_grow(r)) return POOL_ENOMEM;
    r->count++;
    *pool__mgr_ring_at(r, r->count - 1) = b;
    return POOL_OK;
}

static int pool__mgr_ring_push_front(pool__mgr_ring *r, pool__mgr_blob b)
{
    if (pool__mgr_ring_grow(r)) return POOL_ENOMEM;
    r->head = (r->head + r->cap - 1) & (r->cap - 1);
    r->count++;
    r->a[r->head] = b;
    return POOL_OK;
}

/* Removes item i, shifting the shorter side. */
static pool__mgr_blob pool__mgr_ring_remove(pool__mgr_ring *r, size_t i)
{
    pool__mgr_blob b = *pool__mgr_ring_at(r, i);
    size_t j;
    if (i < r->count / 2) {
        for (j = i; j > 0; j--) *pool__mgr_ring_at(r, j) = *pool__mgr_ring_at(r, j - 1);
        r->head = (r->head + 1) & (r->cap - 1);
    } else {
        for (j = i; j + 1 < r->count; j++) *pool__mgr_ring_at(r, j) = *pool__mgr_ring_at(r, j + 1);
    }
    r->count--;
    return b;
}

static void pool__mgr_ring_free(pool__mgr_ring *r)
{
    size_t i;
    for (i = 0; i < r->count; i++) POOL__MGR_FREE(pool__mgr_ring_at(r, i)->p);
    POOL__MGR_FREE(r->a);
    r->a = NULL;
    r->head = r->count = r->cap = 0;
}

/* >>manager-server
 *
 * One thread runs the loop. Each connection is a pool__mgr_sconn; a request that must
 * wait is a pool__mgr_park, linked in its object's FIFO of waiters and, when it has a
 * deadline, in the server's list of timed parks. A connection has at most one park
 * (its client waits for the reply). A connection that fails is marked dead at once
 * (its park cancelled, so no lock is ever granted to a dead waiter) and freed at
 * the end of the loop iteration (pool__mgr_srv_reap), where queue items it held go back
 * to the front of their queues and, when the last connection of a client session
 * goes, the locks and semaphore units of that session are released. */
typedef struct pool__mgr_sconn pool__mgr_sconn;
typedef struct pool__mgr_obj pool__mgr_obj;

typedef struct pool__mgr_park {
    pool__mgr_sconn *c;
    pool__mgr_obj *o;
    uint8_t op;
    uint8_t reacq;     /* condition wait: notified (or timed out), waits for the lock */
    int result;        /* condition wait: the code to answer once the lock is had */
    uint64_t session, token;
    int64_t deadline;  /* monotonic ns; -1: none */
    int64_t num;       /* barrier: arrival index */
    uint32_t cap;      /* queue get: the client's buffer */
    pool__mgr_blob data;   /* queue put: the item */
    struct pool__mgr_park *prev, *next;   /* the object's waiters, FIFO */
    struct pool__mgr_park *tprev, *tnext; /* timed parks */
} pool__mgr_park;

typedef struct pool__mgr_holder { uint64_t session; int64_t count; } pool__mgr_holder;

struct pool__mgr_obj {
    uint8_t kind;
    uint32_t id;
    pool__mgr_park *wq_head, *wq_tail;
    pool__mgr_map dict;                 /* dict */
    pool__mgr_ring ring;                /* list, queue */
    int64_t maxsize, unfinished;    /* queue */
    uint64_t owner_session, owner_token; /* lock, rlock, cond; 0: free */
    int64_t depth;                  /* rlock */
    int owner_died;                 /* lock, rlock, cond: tell the next owner */
    int64_t value, maxvalue, died_units; /* semaphore */
    pool__mgr_holder *holders;          /* semaphore: units held per session */
    size_t nholders, holdcap;
    int flag;                       /* event */
    int64_t parties, arrived;       /* barrier */
    int broken;                     /* barrier */
    pool__mgr_blob val;                 /* value */
};

typedef struct pool__mgr_held { pool__mgr_obj *q; pool__mgr_blob item; } pool__mgr_held;

typedef struct pool__mgr_sess {
    uint64_t id;
    uint32_t refs;
    struct pool__mgr_sess *next;
} pool__mgr_sess;

enum { POOL__MGR_R_CLIENT = 0, POOL__MGR_R_LISTEN, POOL__MGR_R_STOP, POOL__MGR_R_WATCH };
enum { POOL__MGR_S_HANDSHAKE = 0, POOL__MGR_S_READY, POOL__MGR_S_DEAD };

struct pool__mgr_sconn {
    int fd;             /* -1: a test/fuzz connection whose output is dropped */
    uint8_t role, state;
    uint8_t want_out;   /* output pending: waiting for writability, not reading */
    uint8_t reg_out;    /* what the poller was told (epoll) */
    pool__mgr_buf in;       /* bytes received, not yet handled */
    pool__mgr_buf out;      /* bytes to send, from out_off */
    size_t out_off;
    pool__mgr_sess *sess;
    pool__mgr_park *park;
    pool__mgr_held *held;   /* queue items delivered, not yet acknowledged */
    size_t nheld, heldcap;
    uint8_t nonce[32];
    int64_t hs_deadline;
    long peer_pid;
    pool__mgr_sconn *prev, *next; /* every connection */
    pool__mgr_sconn *dnext;       /* dead, to be reaped */
};

/* One parsed op of a request frame; blob pointers point into the connection's input. */
typedef struct pool__mgr_opv {
    uint8_t op, kind;
    uint16_t nblobs;
    uint32_t id;
    int32_t timeout;
    uint32_t aux;
    int64_t num;
    const uint8_t *b[3];
    uint32_t bl[3];
    pool__mgr_obj *o;
} pool__mgr_opv;

struct pool_mserver_s {
    pool_manager_config cfg;
    uint8_t *key;
    size_t keylen, max_frame;
    char path[108];
    char dir[108];          /* the directory we made, or "" */
    int lfd, stop_r, stop_w, watch_fd, pfd;
    long starter_pid;       /* exit when getppid() stops being this (0: never) */
    int stop;               /* atomic */
    int owns_path;          /* unlink the socket (and rmdir dir) at destroy */
    pool__mgr_sconn listen_c, stop_c, watch_c;
    pool__mgr_sconn *conns;
    size_t nconns;
    pool__mgr_sconn *dead;
    pool__mgr_sess *sessions;
    pool__mgr_obj **objs;
    uint32_t nobjs, objcap;
    pool__mgr_map names;        /* name -> 4-byte object id */
    pool__mgr_park *timed;
    int64_t next_deadline;  /* earliest deadline in `timed`, or INT64_MAX */
    int64_t next_tick;
    pool__mgr_spin spin;    /* polling before sleeping (>>manager-spin) */
    pool__mgr_opv *opv;         /* scratch for parsing a frame */
    size_t opvcap;
    uid_t uid;
#if !SHMQ__LINUX
    struct pollfd *pfds;
    pool__mgr_sconn **pconns;
    size_t npcap;
#endif
};

typedef struct pool_mserver_s pool__mgr_srv;

static void pool__mgr_srv_log(pool__mgr_srv *s, const char *what, long pid, int code)
{
    char msg[200];
    if (!s->cfg.log) return;
    snprintf(msg, sizeof msg, "pool manager: %s (peer pid %ld, %s)", what, pid, pool_strerror(code));
    s->cfg.log(msg, s->cfg.log_ctx);
}

/* ---- poller ---- */
static void pool__mgr_srv_watch(pool__mgr_srv *s, pool__mgr_sconn *c, int add)
{
#if SHMQ__LINUX
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = c->want_out ? EPOLLOUT : EPOLLIN;
    ev.data.ptr = c;
    if (c->fd < 0) return;
    if (add) epoll_ctl(s->pfd, EPOLL_CTL_ADD, c->fd, &ev);
    else if (c->reg_out != c->want_out) epoll_ctl(s->pfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->reg_out = c->want_out;
#else
    (void)s; (void)c; (void)add; /* the poll() loop reads want_out each time */
#endif
}

/* ---- connection output ---- */
static void pool__mgr_srv_kill(pool__mgr_srv *s, pool__mgr_sconn *c);

static void pool__mgr_srv_flush(pool__mgr_srv *s, pool__mgr_sconn *c)
{
    if (c->state == POOL__MGR_S_DEAD) return;
    if (c->fd < 0) { c->out.n = 0; c->out_off = 0; return; }
    while (c->out_off < c->out.n) {
        ssize_t r = send(c->fd, c->out.p + c->out_off, c->out.n - c->out_off,
                         POOL__MGR_MSG_NOSIGNAL | MSG_DONTWAIT);
        if (r > 0) { c->out_off += (size_t)r; continue; }
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!c->want_out) { c->want_out = 1; pool__mgr_srv_watch(s, c, 0); }
            return;
        }
        pool__mgr_srv_kill(s, c);
        return;
    }
    c->out.n = 0;
    c->out_off = 0;
    if (c->want_out) { c->want_out = 0; pool__mgr_srv_watch(s, c, 0); }
}

/* Appends an ERROR frame; the caller then kills the connection. */
static void pool__mgr_srv_error_frame(pool__mgr_sconn *c, int code)
{
    if (pool__mgr_buf_reserve(&c->out, 12)) return;
    pool__mgr_put32(c->out.p + c->out.n, 8);
    c->out.p[c->out.n + 4] = POOL__MGR_T_ERROR;
    c->out.p[c->out.n + 5] = 0;
    pool__mgr_put16(c->out.p + c->out.n + 6, 0);
    pool__mgr_put32(c->out.p + c->out.n + 8, (uint32_t)code);
    c->out.n += 12;
}

/* Result writers: a result is appended to c->out inside a REPLY frame. */
static int pool__mgr_res(pool__mgr_sconn *c, int code, uint32_t nblobs, int64_t num)
{
    if (pool__mgr_buf_reserve(&c->out, POOL__MGR_RES_HDR)) return POOL_ENOMEM;
    pool__mgr_put32(c->out.p + c->out.n, (uint32_t)code);
    pool__mgr_put32(c->out.p + c->out.n + 4, nblobs);
    pool__mgr_put64(c->out.p + c->out.n + 8, (uint64_t)num);
    c->out.n += POOL__MGR_RES_HDR;
    return POOL_OK;
}

static int pool__mgr_res_blob(pool__mgr_sconn *c, const uint8_t *p, uint32_t n)
{
    if (pool__mgr_buf_reserve(&c->out, 4 + (size_t)n)) return POOL_ENOMEM;
    pool__mgr_put32(c->out.p + c->out.n, n);
    if (n) memcpy(c->out.p + c->out.n + 4, p, n);
    c->out.n += 4 + (size_t)n;
    return POOL_OK;
}

static size_t pool__mgr_reply_begin(pool__mgr_sconn *c, uint16_t nres)
{
    size_t at = c->out.n;
    if (pool__mgr_buf_reserve(&c->out, 8)) return (size_t)-1;
    c->out.p[at + 4] = POOL__MGR_T_REPLY;
    c->out.p[at + 5] = 0;
    pool__mgr_put16(c->out.p + at + 6, nres);
    c->out.n += 8;
    return at;
}

static void pool__mgr_reply_end(pool__mgr_sconn *c, size_t at)
{
    pool__mgr_put32(c->out.p + at, (uint32_t)(c->out.n - at - 4));
}

/* A whole one-result REPLY frame (a parked request completing), then flush. */
static void pool__mgr_srv_reply1(pool__mgr_srv *s, pool__mgr_sconn *c, int code, int64_t num,
                             const uint8_t *blob, uint32_t blen, int has_blob)
{
    size_t at;
    if (c->state == POOL__MGR_S_DEAD) return;
    at = pool__mgr_reply_begin(c, 1);
    if (at == (size_t)-1 || pool__mgr_res(c, code, has_blob ? 1 : 0, num) ||
        (has_blob && pool__mgr_res_blob(c, blob, blen))) {
        pool__mgr_srv_kill(s, c); /* out of memory: drop this client only */
        return;
    }
    pool__mgr_reply_end(c, at);
    pool__mgr_srv_flush(s, c);
}

/* ---- parks ---- */
static void pool__mgr_park_unlink(pool__mgr_srv *s, pool__mgr_park *p)
{
    pool__mgr_obj *o = p->o;
    if (p->prev) p->prev->next = p->next; else o->wq_head = p->next;
    if (p->next) p->next->prev = p->prev; else o->wq_tail = p->prev;
    p->prev = p->next = NULL;
    if (p->deadline >= 0) {
        if (p->tprev) p->tprev->tnext = p->tnext; else s->timed = p->tnext;
        if (p->tnext) p->tnext->tprev = p->tprev;
        p->tprev = p->tnext = NULL;
        p->deadline = -1;
    }
    p->c->park = NULL;
}

static void pool__mgr_park_free(pool__mgr_park *p)
{
    POOL__MGR_FREE(p->data.p);
    POOL__MGR_FREE(p);
}

/* Completes a park with a reply (no blob), freeing it. */
static void pool__mgr_park_done(pool__mgr_srv *s, pool__mgr_park *p, int code, int64_t num)
{
    pool__mgr_sconn *c = p->c;
    pool__mgr_park_unlink(s, p);
    pool__mgr_park_free(p);
    pool__mgr_srv_reply1(s, c, code, num, NULL, 0, 0);
}

static pool__mgr_park *pool__mgr_park_new(pool__mgr_srv *s, pool__mgr_sconn *c, pool__mgr_obj *o,
                                          const pool__mgr_opv *v, uint64_t token, int timeout)
{
    pool__mgr_park *p = (pool__mgr_park *)POOL__MGR_MALLOC(sizeof *p);
    if (!p) return NULL;
    memset(p, 0, sizeof *p);
    p->c = c;
    p->o = o;
    p->op = v->op;
    p->session = c->sess ? c->sess->id : 0;
    p->token = token;
    p->deadline = -1;
    p->prev = o->wq_tail;
    if (o->wq_tail) o->wq_tail->next = p; else o->wq_head = p;
    o->wq_tail = p;
    c->park = p;
    if (timeout > 0) {
        p->deadline = pool__mgr_now_ns() + (int64_t)timeout * 1000000;
        p->tnext = s->timed;
        if (s->timed) s->timed->tprev = p;
        s->timed = p;
        if (p->deadline < s->next_deadline) s->next_deadline = p->deadline;
    }
    return p;
}

/* Ends a condition wait's timer: it now waits for the lock only. */
static void pool__mgr_park_untime(pool__mgr_srv *s, pool__mgr_park *p)
{
    if (p->deadline < 0) return;
    if (p->tprev) p->tprev->tnext = p->tnext; else s->timed = p->tnext;
    if (p->tnext) p->tnext->tprev = p->tprev;
    p->tprev = p->tnext = NULL;
    p->deadline = -1;
}

/* ---- objects ---- */
static int pool__mgr_is_lockish(uint8_t k)
{
    return k == POOL__MGR_K_LOCK || k == POOL__MGR_K_RLOCK || k == POOL__MGR_K_COND;
}

static void pool__mgr_barrier_break(pool__mgr_srv *s, pool__mgr_obj *o, int broken)
{
    pool__mgr_park *p = o->wq_head, *n;
    while (p) {
        n = p->next;
        pool__mgr_park_done(s, p, POOL_EBROKEN, 0);
        p = n;
    }
    o->arrived = 0;
    o->broken = broken;
}

static int pool__mgr_sem_hold(pool__mgr_obj *o, uint64_t session, int64_t delta)
{
    size_t i;
    for (i = 0; i < o->nholders; i++)
        if (o->holders[i].session == session) break;
    if (i == o->nholders) {
        if (delta < 0) return POOL_OK; /* released by a process holding none: allowed */
        if (o->nholders == o->holdcap) {
            size_t nc = o->holdcap ? o->holdcap * 2 : 4;
            pool__mgr_holder *nh = (pool__mgr_holder *)POOL__MGR_REALLOC(o->holders, sizeof *nh * nc);
            if (!nh) return POOL_ENOMEM;
            o->holders = nh;
            o->holdcap = nc;
        }
        o->holders[i].session = session;
        o->holders[i].count = 0;
        o->nholders++;
    }
    o->holders[i].count += delta;
    if (o->holders[i].count <= 0) o->holders[i] = o->holders[--o->nholders];
    return POOL_OK;
}

/* The lock is free: takes it for (session, token). */
static int pool__mgr_lock_take(pool__mgr_obj *o, uint64_t session, uint64_t token)
{
    int code = o->owner_died ? POOL_EOWNERDEAD : POOL_OK;
    o->owner_session = session;
    o->owner_token = token;
    o->depth = 1;
    o->owner_died = 0;
    return code;
}

static int pool__mgr_sem_take(pool__mgr_obj *o, uint64_t session)
{
    if (pool__mgr_sem_hold(o, session, 1)) return POOL_ENOMEM;
    o->value--;
    if (o->died_units > 0) { o->died_units--; return POOL_EOWNERDEAD; }
    return POOL_OK;
}

static void pool__mgr_q_deliver(pool__mgr_srv *s, pool__mgr_obj *q, pool__mgr_park *p);

/* Grants what the object's state now allows to its waiters, in FIFO order. */
static void pool__mgr_obj_wake(pool__mgr_srv *s, pool__mgr_obj *o)
{
    int progress = 1;
    while (progress) {
        pool__mgr_park *p = o->wq_head, *n;
        progress = 0;
        for (; p; p = n) {
            n = p->next;
            switch (o->kind) {
            case POOL__MGR_K_LOCK: case POOL__MGR_K_RLOCK:
                if (o->owner_session == 0) {
                    int code = pool__mgr_lock_take(o, p->session, p->token);
                    pool__mgr_park_done(s, p, code, 0);
                    progress = 1;
                }
                break;
            case POOL__MGR_K_COND:
                if (o->owner_session == 0 && (p->op == POOL__MGR_OP_C_ACQ || p->reacq)) {
                    int code = pool__mgr_lock_take(o, p->session, p->token);
                    if (p->reacq && code == POOL_OK) code = p->result;
                    pool__mgr_park_done(s, p, code, 0);
                    progress = 1;
                }
                break;
            case POOL__MGR_K_SEM: case POOL__MGR_K_BSEM:
                if (o->value > 0) {
                    int code = pool__mgr_sem_take(o, p->session);
                    pool__mgr_park_done(s, p, code, 0);
                    progress = 1;
                }
                break;
            case POOL__MGR_K_EVENT:
                if (o->flag) { pool__mgr_park_done(s, p, POOL_OK, 0); progress = 1; }
                break;
            case POOL__MGR_K_QUEUE:
                if (p->op == POOL__MGR_OP_Q_GET && o->ring.count > 0) {
                    pool__mgr_q_deliver(s, o, p);
                    progress = 1;
                } else if (p->op == POOL__MGR_OP_Q_PUT &&
                           (o->maxsize == 0 || (int64_t)o->ring.count < o->maxsize)) {
                    if (pool__mgr_ring_push_back(&o->ring, p->data) == POOL_OK) {
                        p->data.p = NULL;
                        o->unfinished++;
                        pool__mgr_park_done(s, p, POOL_OK, 0);
                    } else {
                        pool__mgr_park_done(s, p, POOL_ENOMEM, 0);
                    }
                    progress = 1;
                } else if (p->op == POOL__MGR_OP_Q_JOIN && o->unfinished == 0) {
                    pool__mgr_park_done(s, p, POOL_OK, 0);
                    progress = 1;
                }
                break;
            default:
                break;
            }
        }
    }
}

/* Gives the queue's first item to a parked get (or ENOSPC if it does not fit). */
static void pool__mgr_q_deliver(pool__mgr_srv *s, pool__mgr_obj *q, pool__mgr_park *p)
{
    pool__mgr_sconn *c = p->c;
    pool__mgr_blob *first = pool__mgr_ring_at(&q->ring, 0);
    if (first->n > p->cap) {
        pool__mgr_park_done(s, p, POOL_ENOSPC, first->n);
        return;
    }
    if (c->nheld == c->heldcap) {
        size_t nc = c->heldcap ? c->heldcap * 2 : 4;
        pool__mgr_held *nh = (pool__mgr_held *)POOL__MGR_REALLOC(c->held, sizeof *nh * nc);
        if (!nh) { pool__mgr_park_done(s, p, POOL_ENOMEM, 0); return; }
        c->held = nh;
        c->heldcap = nc;
    }
    c->held[c->nheld].q = q;
    c->held[c->nheld].item = pool__mgr_ring_remove(&q->ring, 0);
    c->nheld++;
    pool__mgr_park_unlink(s, p);
    pool__mgr_park_free(p);
    pool__mgr_srv_reply1(s, c, POOL_OK, 0, c->held[c->nheld - 1].item.p, c->held[c->nheld - 1].item.n, 1);
}

/* A waiter leaves without an answer (its connection is gone). */
static void pool__mgr_park_cancel(pool__mgr_srv *s, pool__mgr_park *p)
{
    pool__mgr_obj *o = p->o;
    pool__mgr_park_unlink(s, p);
    pool__mgr_park_free(p);
    if (o->kind == POOL__MGR_K_BARRIER) pool__mgr_barrier_break(s, o, 1); /* a party is lost */
}

static void pool__mgr_srv_expire(pool__mgr_srv *s, int64_t now)
{
    pool__mgr_park *p = s->timed, *n;
    int64_t next = INT64_MAX;
    while (p) {
        n = p->tnext;
        if (p->deadline <= now) {
            pool__mgr_obj *o = p->o;
            if (o->kind == POOL__MGR_K_COND && p->op == POOL__MGR_OP_C_WAIT) {
                p->reacq = 1;
                p->result = POOL_ETIMEDOUT;
                pool__mgr_park_untime(s, p);
                pool__mgr_obj_wake(s, o);
            } else if (o->kind == POOL__MGR_K_BARRIER) {
                pool__mgr_park_done(s, p, POOL_ETIMEDOUT, 0);
                pool__mgr_barrier_break(s, o, 1);
            } else {
                pool__mgr_park_done(s, p, POOL_ETIMEDOUT, 0);
            }
            /* completions may have removed other timed parks: rescan from the start */
            p = s->timed;
            next = INT64_MAX;
            continue;
        }
        if (p->deadline < next) next = p->deadline;
        p = n;
    }
    s->next_deadline = next;
}

static void pool__mgr_obj_free(pool__mgr_obj *o)
{
    pool__mgr_map_free(&o->dict);
    pool__mgr_ring_free(&o->ring);
    POOL__MGR_FREE(o->holders);
    POOL__MGR_FREE(o->val.p);
    POOL__MGR_FREE(o);
}

/* ---- sessions: the connections of one client process ---- */
static pool__mgr_sess *pool__mgr_sess_get(pool__mgr_srv *s, uint64_t id)
{
    pool__mgr_sess *x;
    for (x = s->sessions; x; x = x->next)
        if (x->id == id) { x->refs++; return x; }
    x = (pool__mgr_sess *)POOL__MGR_MALLOC(sizeof *x);
    if (!x) return NULL;
    x->id = id;
    x->refs = 1;
    x->next = s->sessions;
    s->sessions = x;
    return x;
}

/* The client process is gone: release what it held, tell the next owners. */
static void pool__mgr_sess_end(pool__mgr_srv *s, pool__mgr_sess *x)
{
    pool__mgr_sess **pp;
    uint32_t i;
    for (pp = &s->sessions; *pp; pp = &(*pp)->next)
        if (*pp == x) { *pp = x->next; break; }
    for (i = 0; i < s->nobjs; i++) {
        pool__mgr_obj *o = s->objs[i];
        if (pool__mgr_is_lockish(o->kind) && o->owner_session == x->id) {
            o->owner_session = 0;
            o->owner_token = 0;
            o->depth = 0;
            o->owner_died = 1;
            pool__mgr_obj_wake(s, o);
        } else if (o->kind == POOL__MGR_K_SEM || o->kind == POOL__MGR_K_BSEM) {
            size_t j;
            for (j = 0; j < o->nholders; j++)
                if (o->holders[j].session == x->id) {
                    int64_t k = o->holders[j].count;
                    o->holders[j] = o->holders[--o->nholders];
                    o->value += k;
                    if (o->kind == POOL__MGR_K_BSEM && o->value > o->maxvalue) o->value = o->maxvalue;
                    o->died_units += k;
                    pool__mgr_obj_wake(s, o);
                    break;
                }
        }
    }
    POOL__MGR_FREE(x);
}

/* ---- connections ---- */
static pool__mgr_sconn *pool__mgr_srv_conn_new(pool__mgr_srv *s, int fd)
{
    pool__mgr_sconn *c = (pool__mgr_sconn *)POOL__MGR_MALLOC(sizeof *c);
    if (!c) return NULL;
    memset(c, 0, sizeof *c);
    c->fd = fd;
    c->role = POOL__MGR_R_CLIENT;
    c->state = POOL__MGR_S_HANDSHAKE;
    c->hs_deadline = pool__mgr_now_ns() + (int64_t)10 * 1000000000;
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    return c;
}

/* Marks a connection dead: it stops waiting now; it is freed by pool__mgr_srv_reap. */
static void pool__mgr_srv_kill(pool__mgr_srv *s, pool__mgr_sconn *c)
{
    if (c->state == POOL__MGR_S_DEAD) return;
    c->state = POOL__MGR_S_DEAD;
    c->dnext = s->dead;
    s->dead = c;
    if (c->park) pool__mgr_park_cancel(s, c->park);
}

static void pool__mgr_srv_ack(pool__mgr_sconn *c)
{
    size_t i;
    for (i = 0; i < c->nheld; i++) POOL__MGR_FREE(c->held[i].item.p);
    c->nheld = 0;
}

static void pool__mgr_srv_conn_free(pool__mgr_srv *s, pool__mgr_sconn *c)
{
    size_t i;
    /* undelivered (unacknowledged) items go back to the front, in their order */
    for (i = c->nheld; i-- > 0;) {
        pool__mgr_obj *q = c->held[i].q;
        if (pool__mgr_ring_push_front(&q->ring, c->held[i].item) == POOL_OK) pool__mgr_obj_wake(s, q);
        else POOL__MGR_FREE(c->held[i].item.p);
    }
    c->nheld = 0;
    if (c->sess && --c->sess->refs == 0) pool__mgr_sess_end(s, c->sess);
    c->sess = NULL;
    if (c->fd >= 0) {
#if SHMQ__LINUX
        epoll_ctl(s->pfd, EPOLL_CTL_DEL, c->fd, NULL);
#endif
        close(c->fd);
    }
    if (c->prev) c->prev->next = c->next; else s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    s->nconns--;
    pool__mgr_buf_free(&c->in);
    pool__mgr_buf_free(&c->out);
    POOL__MGR_FREE(c->held);
    POOL__MGR_FREE(c);
}

/* Frees the dead; freeing may wake others and kill more, so loop. */
static void pool__mgr_srv_reap(pool__mgr_srv *s)
{
    while (s->dead) {
        pool__mgr_sconn *c = s->dead;
        s->dead = c->dnext;
        pool__mgr_srv_conn_free(s, c);
    }
}

/* ---- request handling ---- */
static int pool__mgr_srv_open(pool__mgr_srv *s, pool__mgr_sconn *c, const pool__mgr_opv *v)
{
    uint8_t idb[4];
    pool__mgr_ent *e;
    pool__mgr_obj *o;
    uint32_t id;
    if (v->bl[0] == 0) return pool__mgr_res(c, POOL_EINVAL, 0, 0);
    if (v->bl[0] > POOL__MGR_NAME_MAX) return pool__mgr_res(c, POOL_ENAMETOOLONG, 0, 0);
    e = pool__mgr_map_get(&s->names, v->b[0], v->bl[0], NULL);
    if (e) {
        id = pool__mgr_get32(e->kv + e->klen);
        if (s->objs[id]->kind != v->kind) return pool__mgr_res(c, POOL_EKIND, 0, 0);
        return pool__mgr_res(c, POOL_OK, 0, id);
    }
    if ((v->kind == POOL__MGR_K_QUEUE && v->num < 0) ||
        ((v->kind == POOL__MGR_K_SEM || v->kind == POOL__MGR_K_BSEM) && v->num < 0) ||
        (v->kind == POOL__MGR_K_BARRIER && v->num < 1))
        return pool__mgr_res(c, POOL_EINVAL, 0, 0);
    if (s->nobjs == s->objcap) {
        uint32_t nc = s->objcap ? s->objcap * 2 : 16;
        pool__mgr_obj **no = (pool__mgr_obj **)POOL__MGR_REALLOC(s->objs, sizeof *no * nc);
        if (!no) return pool__mgr_res(c, POOL_ENOMEM, 0, 0);
        s->objs = no;
        s->objcap = nc;
    }
    o = (pool__mgr_obj *)POOL__MGR_MALLOC(sizeof *o);
    if (!o) return pool__mgr_res(c, POOL_ENOMEM, 0, 0);
    memset(o, 0, sizeof *o);
    o->kind = v->kind;
    o->id = id = s->nobjs;
    o->dict.seed = s->names.seed;
    if (v->kind == POOL__MGR_K_QUEUE) o->maxsize = v->num;
    if (v->kind == POOL__MGR_K_SEM || v->kind == POOL__MGR_K_BSEM) o->value = o->maxvalue = v->num;
    if (v->kind == POOL__MGR_K_BARRIER) o->parties = v->num;
    if (v->kind == POOL__MGR_K_VALUE) {
        static const uint8_t zero8[8] = {0};
        if (pool__mgr_blob_make(&o->val, zero8, 8)) {
            POOL__MGR_FREE(o);
            return pool__mgr_res(c, POOL_ENOMEM, 0, 0);
        }
    }
    pool__mgr_put32(idb, id);
    if (pool__mgr_map_set(&s->names, v->b[0], v->bl[0], idb, 4)) {
        pool__mgr_obj_free(o);
        return pool__mgr_res(c, POOL_ENOMEM, 0, 0);
    }
    s->objs[s->nobjs++] = o;
    return pool__mgr_res(c, POOL_OK, 0, id);
}

static int64_t pool__mgr_le_i64(const uint8_t *p) { return (int64_t)pool__mgr_get64(p); }

/* Would `extra` more bytes keep the reply frame that began at `at` within max_frame? */
static int pool__mgr_fits(pool__mgr_srv *s, pool__mgr_sconn *c, size_t at, size_t extra)
{
    return c->out.n - at - 4 + extra <= s->max_frame;
}

static int pool__mgr_srv_dict(pool__mgr_srv *s, pool__mgr_sconn *c, const pool__mgr_opv *v, size_t at)
{
    pool__mgr_obj *o = v->o;
    pool__mgr_ent *e;
    int rc;
    if (v->op != POOL__MGR_OP_D_LEN && v->op != POOL__MGR_OP_D_ITER && v->op != POOL__MGR_OP_D_CLEAR) {
        if (v->bl[0] == 0) return pool__mgr_res(c, POOL_EINVAL, 0, 0);
        if (v->bl[0] > POOL__MGR_KEY_MAX) return pool__mgr_res(c, POOL_ENAMETOOLONG, 0, 0);
    }
    switch (v->op) {
    case POOL__MGR_OP_D_SET:
        return pool__mgr_res(c, pool__mgr_map_set(&o->dict, v->b[0], v->bl[0], v->b[1], v->bl[1]), 0, 0);
    case POOL__MGR_OP_D_GET:
        e = pool__mgr_map_get(&o->dict, v->b[0], v->bl[0], NULL);
        if (!e) return pool__mgr_res(c, POOL_ENOTFOUND, 0, 0);
        if (!pool__mgr_fits(s, c, at, POOL__MGR_RES_HDR + 4 + (size_t)e->vlen))
            return pool__mgr_res(c, POOL_ETOOBIG, 0, e->vlen);
        if ((rc = pool__mgr_res(c, POOL_OK, 1, e->vlen))) return rc;
        return pool__mgr_res_blob(c, e->kv + e->klen, e->vlen);
    case POOL__MGR_OP_D_DEL:
        return pool__mgr_res(c, pool__mgr_map_del(&o->dict, v->b[0], v->bl[0]), 0, 0);
    case POOL__MGR_OP_D_HAS:
        return pool__mgr_res(c, POOL_OK, 0, pool__mgr_map_get(&o->dict, v->b[0], v->bl[0], NULL) != NULL);
    case POOL__MGR_OP_D_LEN:
        return pool__mgr_res(c, POOL_OK, 0, o->dict.live);
    case POOL__MGR_OP_D_CLEAR:
        pool__mgr_map_clear(&o->dict);
        return pool__mgr_res(c, POOL_OK, 0, 0);
    case POOL__MGR_OP_D_CAS:
        e = pool__mgr_map_get(&o->dict, v->b[0], v->bl[0], NULL);
        if (v->aux & 1) {
            if (e) return pool__mgr_res(c, POOL_EMISMATCH, 0, 0);
        } else if (!e || e->vlen != v->bl[1] || memcmp(e->kv + e->klen, v->b[1], v->bl[1]) != 0) {
            return pool__mgr_res(c, POOL_EMISMATCH, 0, 0);
        }
        return pool__mgr_res(c, pool__mgr_map_set(&o->dict, v->b[0], v->bl[0], v->b[2], v->bl[2]), 0, 0);
    case POOL__MGR_OP_D_ADD: {
        int64_t x = 0;
        uint8_t b8[8];
        e = pool__mgr_map_get(&o->dict, v->b[0], v->bl[0], NULL);
        if (e) {
            if (e->vlen != 8) return pool__mgr_res(c, POOL_EINVAL, 0, 0);
            x = pool__mgr_le_i64(e->kv + e->klen);
        }
        x = (int64_t)((uint64_t)x + (uint64_t)v->num); /* wraps, never UB */
        pool__mgr_put64(b8, (uint64_t)x);
        if (e) { memcpy(e->kv + e->klen, b8, 8); return pool__mgr_res(c, POOL_OK, 0, x); }
        rc = pool__mgr_map_set(&o->dict, v->b[0], v->bl[0], b8, 8);
        return pool__mgr_res(c, rc, 0, rc ? 0 : x);
    }
    case POOL__MGR_OP_D_ITER: {
        /* cursor: epoch << 32 | next entry index; 0 starts; answer -1 at the end */
        uint32_t idx = (uint32_t)(v->num & 0xffffffff), epoch = (uint32_t)((uint64_t)v->num >> 32), i, n = 0;
        size_t bytes = 0, limit = s->max_frame / 2 < 65536 ? s->max_frame / 2 : 65536;
        size_t resat;
        if (v->num < 0) return pool__mgr_res(c, POOL_EINVAL, 0, 0);
        if (v->num != 0 && epoch != o->dict.epoch) return pool__mgr_res(c, POOL_EBUSY, 0, 0);
        resat = c->out.n;
        if ((rc = pool__mgr_res(c, POOL_OK, 0, -1))) return rc;
        for (i = idx; i < o->dict.nents; i++) {
            pool__mgr_ent *x = &o->dict.ents[i];
            size_t need = 8 + (size_t)x->klen + x->vlen;
            if (!x->kv) continue;
            if (n > 0 && (bytes + need > limit || !pool__mgr_fits(s, c, at, need))) break;
            if (n == 0 && !pool__mgr_fits(s, c, at, need)) {
                c->out.n = resat;
                return pool__mgr_res(c, POOL_ETOOBIG, 0, 0);
            }
            if ((rc = pool__mgr_res_blob(c, x->kv, x->klen)) ||
                (rc = pool__mgr_res_blob(c, x->kv + x->klen, x->vlen)))
                return rc;
            bytes += need;
            n++;
        }
        pool__mgr_put32(c->out.p + resat + 4, 2 * n);
        pool__mgr_put64(c->out.p + resat + 8,
                        i < o->dict.nents ? ((uint64_t)o->dict.epoch << 32 | i) : (uint64_t)-1);
        return POOL_OK;
    }
    default:
        return POOL_EPROTO;
    }
}

/* Normalises a Python-style index; -1 when out of range. */
static int64_t pool__mgr_index(int64_t i, size_t n)
{
    if (i < 0) i += (int64_t)n;
    return (i < 0 || i >= (int64_t)n) ? -1 : i;
}

static int pool__mgr_srv_list(pool__mgr_srv *s, pool__mgr_sconn *c, const pool__mgr_opv *v, size_t at)
{
    pool__mgr_obj *o = v->o;
    pool__mgr_blob b, *x;
    int64_t i;
    int rc;
    switch (v->op) {
    case POOL__MGR_OP_L_APPEND:
        if (pool__mgr_blob_make(&b, v->b[0], v->bl[0])) return pool__mgr_res(c, POOL_ENOMEM, 0, 0);
        if (pool__mgr_ring_push_back(&o->ring, b)) {
            POOL__MGR_FREE(b.p);
            return pool__mgr_res(c, POOL_ENOMEM, 0, 0);
        }
        return pool__mgr_res(c, POOL_OK, 0, (int64_t)o->ring.count);
    case POOL__MGR_OP_L_LEN:
        return pool__mgr_res(c, POOL_OK, 0, (int64_t)o->ring.count);
    case POOL__MGR_OP_L_GET: case POOL__MGR_OP_L_POP:
        if ((i = pool__mgr_index(v->num, o->ring.count)) < 0) return pool__mgr_res(c, POOL_ENOTFOUND, 0, 0);
        x = pool__mgr_ring_at(&o->ring, (size_t)i);
        if (x->n > v->aux) return pool__mgr_res(c, POOL_ENOSPC, 0, x->n);
        if (!pool__mgr_fits(s, c, at, POOL__MGR_RES_HDR + 4 + (size_t)x->n))
            return pool__mgr_res(c, POOL_ETOOBIG, 0, x->n);
        if ((rc = pool__mgr_res(c, POOL_OK, 1, x->n)) || (rc = pool__mgr_res_blob(c, x->p, x->n))) return rc;
        if (v->op == POOL__MGR_OP_L_POP) POOL__MGR_FREE(pool__mgr_ring_remove(&o->ring, (size_t)i).p);
        return POOL_OK;
    case POOL__MGR_OP_L_SET:
        if ((i = pool__mgr_index(v->num, o->ring.count)) < 0) return pool__mgr_res(c, POOL_ENOTFOUND, 0, 0);
        if (pool__mgr_blob_make(&b, v->b[0], v->bl[0])) return pool__mgr_res(c, POOL_ENOMEM, 0, 0);
        x = pool__mgr_ring_at(&o->ring, (size_t)i);
        POOL__MGR_FREE(x->p);
        *x = b;
        return pool__mgr_res(c, POOL_OK, 0, 0);
    default:
        return POOL_EPROTO;
    }
}

/* Returns 1 when parked (no result written), else writes the result. */
static int pool__mgr_srv_queue(pool__mgr_srv *s, pool__mgr_sconn *c, const pool__mgr_opv *v, size_t at,
                           uint64_t token, int timeout, int *parked)
{
    pool__mgr_obj *o = v->o;
    pool__mgr_blob b;
    pool__mgr_park *p;
    int rc;
    switch (v->op) {
    case POOL__MGR_OP_Q_PUT:
        if (pool__mgr_blob_make(&b, v->b[0], v->bl[0])) return pool__mgr_res(c, POOL_ENOMEM, 0, 0);
        if (o->maxsize > 0 && (int64_t)o->ring.count >= o->maxsize) {
            if (timeout == 0) { POOL__MGR_FREE(b.p); return pool__mgr_res(c, POOL_EFULL, 0, 0); }
            p = pool__mgr_park_new(s, c, o, v, token, timeout);
            if (!p) { POOL__MGR_FREE(b.p); return pool__mgr_res(c, POOL_ENOMEM, 0, 0); }
            p->data = b;
            *parked = 1;
            return POOL_OK;
        }
        if (pool__mgr_ring_push_back(&o->ring, b)) {
            POOL__MGR_FREE(b.p);
            return pool__mgr_res(c, POOL_ENOMEM, 0, 0);
        }
        o->unfinished++;
        pool__mgr_obj_wake(s, o);
        return pool__mgr_res(c, POOL_OK, 0, 0);
    case POOL__MGR_OP_Q_GET:
        if (o->ring.count == 0) {
            if (timeout == 0) return pool__mgr_res(c, POOL_EEMPTY, 0, 0);
            p = pool__mgr_park_new(s, c, o, v, token, timeout);
            if (!p) return pool__mgr_res(c, POOL_ENOMEM, 0, 0);
            p->cap = v->aux;
            *parked = 1;
            return POOL_OK;
        } else {
            pool__mgr_blob *first = pool__mgr_ring_at(&o->ring, 0);
            if (first->n > v->aux) return pool__mgr_res(c, POOL_ENOSPC, 0, first->n);
            if (!pool__mgr_fits(s, c, at, POOL__MGR_RES_HDR + 4 + (size_t)first->n))
                return pool__mgr_res(c, POOL_ETOOBIG, 0, first->n);
            if (c->nheld == c->heldcap) {
                size_t nc = c->heldcap ? c->heldcap * 2 : 4;
                pool__mgr_held *nh = (pool__mgr_held *)POOL__MGR_REALLOC(c->held, sizeof *nh * nc);
                if (!nh) return pool__mgr_res(c, POOL_ENOMEM, 0, 0);
                c->held = nh;
                c->heldcap = nc;
            }
            if ((rc = pool__mgr_res(c, POOL_OK, 1, first->n)) ||
                (rc = pool__mgr_res_blob(c, first->p, first->n)))
                return rc;
            c->held[c->nheld].q = o;
            c->held[c->nheld].item = pool__mgr_ring_remove(&o->ring, 0);
            c->nheld++;
            pool__mgr_obj_wake(s, o); /* room for a waiting put */
            return POOL_OK;
        }
    case POOL__MGR_OP_Q_SIZE:
        return pool__mgr_res(c, POOL_OK, 0, (int64_t)o->ring.count);
    case POOL__MGR_OP_Q_DONE:
        if (o->unfinished <= 0) return pool__mgr_res(c, POOL_EINVAL, 0, 0);
        if (--o->unfinished == 0) pool__mgr_obj_wake(s, o);
        return pool__mgr_res(c, POOL_OK, 0, 0);
    case POOL__MGR_OP_Q_JOIN:
        if (o->unfinished == 0) return pool__mgr_res(c, POOL_OK, 0, 0);
        if (timeout == 0) return pool__mgr_res(c, POOL_ETIMEDOUT, 0, 0);
        if (!pool__mgr_park_new(s, c, o, v, token, timeout)) return pool__mgr_res(c, POOL_ENOMEM, 0, 0);
        *parked = 1;
        return POOL_OK;
    default:
        return POOL_EPROTO;
    }
}

/* Locks, semaphores, events, conditions, barriers: the waiting kinds. */
static int pool__mgr_srv_sync(pool__mgr_srv *s, pool__mgr_sconn *c, const pool__mgr_opv *v, uint64_t token,
                          int timeout, int *parked)
{
    pool__mgr_obj *o = v->o;
    uint64_t sess = c->sess ? c->sess->id : 0;
    pool__mgr_park *p;
    switch (v->op) {
    case POOL__MGR_OP_K_ACQ: case POOL__MGR_OP_C_ACQ:
        if (o->owner_session == 0) /* waiters never wait on a free lock: wake granted it */
            return pool__mgr_res(c, pool__mgr_lock_take(o, sess, token), 0, 0);
        if (o->kind == POOL__MGR_K_RLOCK && o->owner_session == sess && o->owner_token == token) {
            o->depth++;
            return pool__mgr_res(c, POOL_OK, 0, o->depth);
        }
        if (timeout == 0) return pool__mgr_res(c, POOL_ETIMEDOUT, 0, 0);
        break; /* park */
    case POOL__MGR_OP_K_REL: case POOL__MGR_OP_C_REL:
        if (o->owner_session != sess || (o->kind != POOL__MGR_K_LOCK && o->owner_token != token))
            return pool__mgr_res(c, POOL_EPERM, 0, 0);
        if (--o->depth > 0) return pool__mgr_res(c, POOL_OK, 0, o->depth);
        o->owner_session = 0;
        o->owner_token = 0;
        pool__mgr_obj_wake(s, o);
        return pool__mgr_res(c, POOL_OK, 0, 0);
    case POOL__MGR_OP_S_ACQ:
        if (o->value > 0) return pool__mgr_res(c, pool__mgr_sem_take(o, sess), 0, 0);
        if (timeout == 0) return pool__mgr_res(c, POOL_ETIMEDOUT, 0, 0);
        break;
    case POOL__MGR_OP_S_REL:
        if (o->kind == POOL__MGR_K_BSEM && o->value >= o->maxvalue) return pool__mgr_res(c, POOL_EFULL, 0, 0);
        if (o->value == INT64_MAX) return pool__mgr_res(c, POOL_EFULL, 0, 0);
        if (pool__mgr_sem_hold(o, sess, -1)) return pool__mgr_res(c, POOL_ENOMEM, 0, 0);
        o->value++;
        pool__mgr_obj_wake(s, o);
        return pool__mgr_res(c, POOL_OK, 0, o->value);
    case POOL__MGR_OP_S_VAL:
        return pool__mgr_res(c, POOL_OK, 0, o->value);
    case POOL__MGR_OP_E_SET:
        o->flag = 1;
        pool__mgr_obj_wake(s, o);
        return pool__mgr_res(c, POOL_OK, 0, 0);
    case POOL__MGR_OP_E_CLEAR:
        o->flag = 0;
        return pool__mgr_res(c, POOL_OK, 0, 0);
    case POOL__MGR_OP_E_ISSET:
        return pool__mgr_res(c, POOL_OK, 0, o->flag);
    case POOL__MGR_OP_E_WAIT:
        if (o->flag) return pool__mgr_res(c, POOL_OK, 0, 0);
        if (timeout == 0) return pool__mgr_res(c, POOL_ETIMEDOUT, 0, 0);
        break;
    case POOL__MGR_OP_C_WAIT:
        if (o->owner_session != sess || o->owner_token != token) return pool__mgr_res(c, POOL_EPERM, 0, 0);
        o->owner_session = 0;
        o->owner_token = 0;
        o->depth = 0;
        if (timeout == 0) { /* Python's wait(0): release, let others in, take it back */
            pool__mgr_obj_wake(s, o);
            if (o->owner_session == 0) {
                int code = pool__mgr_lock_take(o, sess, token);
                return pool__mgr_res(c, code == POOL_OK ? POOL_ETIMEDOUT : code, 0, 0);
            }
            p = pool__mgr_park_new(s, c, o, v, token, 0);
            if (!p) return pool__mgr_res(c, POOL_ENOMEM, 0, 0);
            p->reacq = 1;
            p->result = POOL_ETIMEDOUT;
        } else {
            /* parked first (not yet notified, so wake cannot answer it), then released */
            p = pool__mgr_park_new(s, c, o, v, token, timeout);
            if (!p) { pool__mgr_lock_take(o, sess, token); return pool__mgr_res(c, POOL_ENOMEM, 0, 0); }
            pool__mgr_obj_wake(s, o);
        }
        *parked = 1;
        return POOL_OK;
    case POOL__MGR_OP_C_NOTIFY: {
        int64_t n = v->num, done = 0;
        if (o->owner_session != sess || o->owner_token != token) return pool__mgr_res(c, POOL_EPERM, 0, 0);
        for (p = o->wq_head; p && (n < 0 || done < n); p = p->next)
            if (p->op == POOL__MGR_OP_C_WAIT && !p->reacq) {
                p->reacq = 1;
                p->result = POOL_OK;
                pool__mgr_park_untime(s, p);
                done++;
            }
        return pool__mgr_res(c, POOL_OK, 0, done);
    }
    case POOL__MGR_OP_B_WAIT: {
        int64_t index;
        if (o->broken) return pool__mgr_res(c, POOL_EBROKEN, 0, 0);
        index = o->arrived++;
        if (o->arrived == o->parties) {
            pool__mgr_park *n;
            for (p = o->wq_head; p; p = n) {
                n = p->next;
                pool__mgr_park_done(s, p, POOL_OK, p->num);
            }
            o->arrived = 0;
            return pool__mgr_res(c, POOL_OK, 0, index);
        }
        if (timeout == 0) {
            pool__mgr_barrier_break(s, o, 1);
            return pool__mgr_res(c, POOL_ETIMEDOUT, 0, 0);
        }
        p = pool__mgr_park_new(s, c, o, v, token, timeout);
        if (!p) { o->arrived--; return pool__mgr_res(c, POOL_ENOMEM, 0, 0); }
        p->num = index;
        *parked = 1;
        return POOL_OK;
    }
    case POOL__MGR_OP_B_RESET:
        pool__mgr_barrier_break(s, o, 0);
        return pool__mgr_res(c, POOL_OK, 0, 0);
    case POOL__MGR_OP_B_ABORT:
        pool__mgr_barrier_break(s, o, 1);
        return pool__mgr_res(c, POOL_OK, 0, 0);
    default:
        return POOL_EPROTO;
    }
    /* park a lock, semaphore or event wait */
    if (!pool__mgr_park_new(s, c, o, v, token, timeout)) return pool__mgr_res(c, POOL_ENOMEM, 0, 0);
    *parked = 1;
    return POOL_OK;
}

static int pool__mgr_srv_value(pool__mgr_srv *s, pool__mgr_sconn *c, const pool__mgr_opv *v, size_t at)
{
    pool__mgr_obj *o = v->o;
    pool__mgr_blob b;
    int rc;
    switch (v->op) {
    case POOL__MGR_OP_V_GET:
        if (!pool__mgr_fits(s, c, at, POOL__MGR_RES_HDR + 4 + (size_t)o->val.n))
            return pool__mgr_res(c, POOL_ETOOBIG, 0, o->val.n);
        if ((rc = pool__mgr_res(c, POOL_OK, 1, o->val.n))) return rc;
        return pool__mgr_res_blob(c, o->val.p, o->val.n);
    case POOL__MGR_OP_V_SET:
        if (pool__mgr_blob_make(&b, v->b[0], v->bl[0])) return pool__mgr_res(c, POOL_ENOMEM, 0, 0);
        POOL__MGR_FREE(o->val.p);
        o->val = b;
        return pool__mgr_res(c, POOL_OK, 0, 0);
    case POOL__MGR_OP_V_ADD: {
        int64_t x;
        if (o->val.n != 8) return pool__mgr_res(c, POOL_EINVAL, 0, 0);
        x = (int64_t)(pool__mgr_get64(o->val.p) + (uint64_t)v->num);
        pool__mgr_put64(o->val.p, (uint64_t)x);
        return pool__mgr_res(c, POOL_OK, 0, x);
    }
    case POOL__MGR_OP_V_CAS:
        if (o->val.n != v->bl[0] || memcmp(o->val.p, v->b[0], v->bl[0]) != 0)
            return pool__mgr_res(c, POOL_EMISMATCH, 0, 0);
        if (pool__mgr_blob_make(&b, v->b[1], v->bl[1])) return pool__mgr_res(c, POOL_ENOMEM, 0, 0);
        POOL__MGR_FREE(o->val.p);
        o->val = b;
        return pool__mgr_res(c, POOL_OK, 0, 0);
    default:
        return POOL_EPROTO;
    }
}

/* Parses a REQUEST frame strictly into s->opv: POOL_OK or the code that closes the
 * connection (POOL_EPROTO: malformed; POOL_EKIND: op or kind does not match the
 * object; POOL_ENOTFOUND: no such object id). */
static int pool__mgr_srv_parse(pool__mgr_srv *s, const uint8_t *f, size_t len, uint16_t *nops_out)
{
    uint16_t nops, i, j;
    size_t pos = POOL__MGR_REQ_HDR;
    if (len < POOL__MGR_REQ_HDR || f[1] != 0) return POOL_EPROTO;
    nops = pool__mgr_get16(f + 2);
    if (nops == 0) return POOL_EPROTO;
    if (nops > s->opvcap) {
        pool__mgr_opv *nv = (pool__mgr_opv *)POOL__MGR_REALLOC(s->opv, sizeof *nv * nops);
        if (!nv) return POOL_ENOMEM;
        s->opv = nv;
        s->opvcap = nops;
    }
    for (i = 0; i < nops; i++) {
        pool__mgr_opv *v = &s->opv[i];
        pool__mgr_opinfo info;
        if (len - pos < POOL__MGR_OP_HDR) return POOL_EPROTO;
        v->op = f[pos];
        v->kind = f[pos + 1];
        v->nblobs = pool__mgr_get16(f + pos + 2);
        v->id = pool__mgr_get32(f + pos + 4);
        v->timeout = (int32_t)pool__mgr_get32(f + pos + 8);
        v->aux = pool__mgr_get32(f + pos + 12);
        v->num = (int64_t)pool__mgr_get64(f + pos + 16);
        v->o = NULL;
        pos += POOL__MGR_OP_HDR;
        info = pool__mgr_op_info(v->op);
        if (info.kinds == 0) return POOL_EPROTO;             /* unknown op */
        if (v->kind >= POOL__MGR_K_COUNT) return POOL_EKIND;      /* unknown kind */
        if (!(info.kinds & POOL__MGR_KB(v->kind))) return POOL_EKIND;
        if (v->nblobs != info.nblobs) return POOL_EPROTO;
        if (v->timeout < -1) return POOL_EPROTO;
        if (nops > 1 && v->op == POOL__MGR_OP_C_WAIT) return POOL_EPROTO; /* it always waits: alone only */
        if (v->op == POOL__MGR_OP_OPEN || v->kind == POOL__MGR_K_NONE) {
            if (v->id != 0) return POOL_EPROTO;
        } else {
            if (v->id >= s->nobjs) return POOL_ENOTFOUND;
            v->o = s->objs[v->id];
            if (v->o->kind != v->kind) return POOL_EKIND;      /* wrong kind for the name */
        }
        for (j = 0; j < v->nblobs; j++) {
            uint32_t bl;
            if (len - pos < 4) return POOL_EPROTO;
            bl = pool__mgr_get32(f + pos);
            pos += 4;
            if (bl > len - pos) return POOL_EPROTO;         /* truncated */
            v->b[j] = f + pos;
            v->bl[j] = bl;
            pos += bl;
        }
    }
    if (pos != len) return POOL_EPROTO; /* trailing bytes */
    *nops_out = nops;
    return POOL_OK;
}

/* Executes a parsed request. Returns POOL_OK, or a code that closes the connection. */
static int pool__mgr_srv_request(pool__mgr_srv *s, pool__mgr_sconn *c, const uint8_t *f, size_t len)
{
    uint16_t nops = 0, i;
    uint64_t token;
    size_t at;
    int rc = pool__mgr_srv_parse(s, f, len, &nops);
    if (rc) return rc;
    token = pool__mgr_get64(f + 4);
    at = pool__mgr_reply_begin(c, nops);
    if (at == (size_t)-1) return POOL_ENOMEM;
    for (i = 0; i < nops; i++) {
        const pool__mgr_opv *v = &s->opv[i];
        int timeout = nops == 1 ? v->timeout : 0, parked = 0;
        if (v->op == POOL__MGR_OP_OPEN) { rc = pool__mgr_srv_open(s, c, v); goto next; }
        switch (v->kind) {
        case POOL__MGR_K_NONE:
            if (v->op == POOL__MGR_OP_SHUTDOWN) shmq__store(&s->stop, 1, SHMQ__RELEASE);
            rc = pool__mgr_res(c, POOL_OK, 0, 0);
            break;
        case POOL__MGR_K_DICT: rc = pool__mgr_srv_dict(s, c, v, at); break;
        case POOL__MGR_K_LIST: rc = pool__mgr_srv_list(s, c, v, at); break;
        case POOL__MGR_K_QUEUE: rc = pool__mgr_srv_queue(s, c, v, at, token, timeout, &parked); break;
        case POOL__MGR_K_VALUE: rc = pool__mgr_srv_value(s, c, v, at); break;
        default: rc = pool__mgr_srv_sync(s, c, v, token, timeout, &parked); break;
        }
    next:
        if (rc) { c->out.n = at; return rc; } /* only ENOMEM gets here: drop the partial reply */
        if (parked) { c->out.n = at; return POOL_OK; } /* nops == 1: answered later */
    }
    pool__mgr_reply_end(c, at);
    return POOL_OK;
}

/* The client's HELLO: checks version, session and (with a key) its MAC, answers. */
static int pool__mgr_srv_hello(pool__mgr_srv *s, pool__mgr_sconn *c, const uint8_t *f, size_t len)
{
    uint8_t mac[32], reply[44];
    uint64_t session;
    const char *lc = "pool-manager-client", *ls = "pool-manager-server";
    if (len != POOL__MGR_HELLO_LEN || f[0] != POOL__MGR_T_HELLO || f[1] != POOL__MGR_WIRE_VERSION ||
        pool__mgr_get16(f + 2) != 0)
        return POOL_EPROTO;
    c->peer_pid = (long)pool__mgr_get32(f + 4);
    session = pool__mgr_get64(f + 8);
    if (session == 0) return POOL_EPROTO;
    if (s->keylen) {
        pool__mgr_hmac_sha256(s->key, s->keylen, lc, strlen(lc), c->nonce, 32, f + 16, 32, f + 8, 8, mac);
        if (!pool__mgr_ct_equal(mac, f + 48, 32)) return POOL_EAUTH;
        pool__mgr_hmac_sha256(s->key, s->keylen, ls, strlen(ls), f + 16, 32, c->nonce, 32, f + 8, 8, mac);
    } else {
        memset(mac, 0, sizeof mac);
    }
    c->sess = pool__mgr_sess_get(s, session);
    if (!c->sess) return POOL_ENOMEM;
    c->state = POOL__MGR_S_READY;
    pool__mgr_put32(reply, 40);
    reply[4] = POOL__MGR_T_WELCOME;
    reply[5] = 0;
    pool__mgr_put16(reply + 6, 0);
    pool__mgr_put32(reply + 8, 0);
    memcpy(reply + 12, mac, 32);
    if (pool__mgr_buf_reserve(&c->out, sizeof reply)) return POOL_ENOMEM;
    memcpy(c->out.p + c->out.n, reply, sizeof reply);
    c->out.n += sizeof reply;
    return POOL_OK;
}

/* Handles every complete frame in c->in. Returns POOL_OK, or a code after which the
 * connection is closed (an ERROR frame carrying it is already queued). This is the
 * whole attack surface of the server: the fuzz target drives it with raw bytes. */
static int pool__mgr_srv_feed(pool__mgr_srv *s, pool__mgr_sconn *c)
{
    size_t pos = 0;
    int rc = POOL_OK;
    while (c->state != POOL__MGR_S_DEAD && c->in.n - pos >= 4) {
        uint32_t len = pool__mgr_get32(c->in.p + pos);
        const uint8_t *f = c->in.p + pos + 4;
        if (len < 4 || len > s->max_frame) { rc = POOL_EPROTO; break; }
        /* before the handshake only a HELLO may come: an unauthenticated peer
         * never makes the server buffer more than that */
        if (c->state == POOL__MGR_S_HANDSHAKE && len != POOL__MGR_HELLO_LEN) { rc = POOL_EPROTO; break; }
        if (c->in.n - pos - 4 < len) break;
        if (c->park) { rc = POOL_EPROTO; break; } /* a request while one waits */
        if (c->out.n - c->out_off > s->max_frame) break; /* let the client read first */
        if (c->state == POOL__MGR_S_HANDSHAKE) {
            rc = pool__mgr_srv_hello(s, c, f, len);
        } else {
            pool__mgr_srv_ack(c); /* any frame acknowledges the items delivered before it */
            if (f[0] == POOL__MGR_T_ACK)
                rc = (len == POOL__MGR_REQ_HDR && f[1] == 0 && pool__mgr_get16(f + 2) == 0 &&
                      pool__mgr_get64(f + 4) == 0)
                         ? POOL_OK
                         : POOL_EPROTO;
            else if (f[0] == POOL__MGR_T_REQUEST) rc = pool__mgr_srv_request(s, c, f, len);
            else rc = POOL_EPROTO;
        }
        if (rc) break;
        pos += 4 + (size_t)len;
    }
    if (rc) {
        pool__mgr_srv_log(s,
                          rc == POOL_EAUTH ? "authentication failed" : "malformed frame, connection closed",
                          c->peer_pid, rc);
        pool__mgr_srv_error_frame(c, rc);
        return rc;
    }
    if (pos) {
        memmove(c->in.p, c->in.p + pos, c->in.n - pos);
        c->in.n -= pos;
    }
    return POOL_OK;
}

static void pool__mgr_srv_on_read(pool__mgr_srv *s, pool__mgr_sconn *c)
{
    int rounds;
    for (rounds = 0; rounds < 4 && c->state != POOL__MGR_S_DEAD; rounds++) {
        ssize_t r;
        size_t room;
        if (c->want_out) return; /* output first */
        if (c->in.n >= 4 && c->state == POOL__MGR_S_READY) { /* room for the whole frame at once */
            uint64_t need = 4 + (uint64_t)pool__mgr_get32(c->in.p);
            if (need <= 4 + (uint64_t)s->max_frame && need > c->in.n &&
                pool__mgr_buf_reserve(&c->in, (size_t)need - c->in.n)) {
                pool__mgr_srv_kill(s, c);
                return;
            }
        }
        if (pool__mgr_buf_reserve(&c->in, 4096)) { pool__mgr_srv_kill(s, c); return; }
        room = c->in.cap - c->in.n;
        r = recv(c->fd, c->in.p + c->in.n, room, MSG_DONTWAIT);
        if (r == 0) { pool__mgr_srv_kill(s, c); return; }
        if (r < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) pool__mgr_srv_kill(s, c);
            return;
        }
        c->in.n += (size_t)r;
        if (pool__mgr_srv_feed(s, c)) {
            pool__mgr_srv_flush(s, c);
            pool__mgr_srv_kill(s, c);
            return;
        }
        pool__mgr_srv_flush(s, c);
        if ((size_t)r < room) return; /* drained; level-triggered polling brings the rest */
    }
}

/* Checks the peer's user, then sends the challenge. */
static void pool__mgr_srv_accept(pool__mgr_srv *s)
{
    int n;
    for (n = 0; n < 64; n++) {
        int fd = accept(s->lfd, NULL, NULL), ok = 1;
        long pid = 0;
        pool__mgr_sconn *c;
        uint8_t ch[40];
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EMFILE || errno == ENFILE)
                pool__mgr_srv_log(s, "out of file descriptors", 0, POOL_ESYS);
            return;
        }
        pool__mgr_set_fd_flags(fd, 1);
#if defined(__linux__) && defined(SO_PEERCRED)
        {
            struct { int32_t pid; uint32_t uid, gid; } cred; /* the layout of Linux's struct ucred */
            socklen_t cl = sizeof cred;
            if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) != 0 || cl != sizeof cred) ok = 0;
            else {
                pid = cred.pid;
                if (!s->cfg.allow_other_users && cred.uid != (uint32_t)s->uid) ok = 0;
            }
        }
#elif defined(__APPLE__) || defined(__FreeBSD__) || defined(__OpenBSD__) || defined(__NetBSD__)
        {
            uid_t euid;
            gid_t egid;
            if (getpeereid(fd, &euid, &egid) != 0) ok = 0;
            else if (!s->cfg.allow_other_users && euid != s->uid) ok = 0;
        }
#endif
        if (!ok) {
            uint8_t e[12];
            pool__mgr_put32(e, 8); e[4] = POOL__MGR_T_ERROR; e[5] = 0; pool__mgr_put16(e + 6, 0);
            pool__mgr_put32(e + 8, (uint32_t)POOL_EAUTH);
            if (send(fd, e, sizeof e, POOL__MGR_MSG_NOSIGNAL | MSG_DONTWAIT) < 0) { /* refused anyway */ }
            pool__mgr_srv_log(s, "peer of another user refused", pid, POOL_EAUTH);
            close(fd);
            continue;
        }
#ifdef SO_NOSIGPIPE
        {
            int one = 1;
            setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
        } /* no MSG_NOSIGNAL there */
#endif
        c = pool__mgr_srv_conn_new(s, fd);
        if (!c) { close(fd); continue; }
        c->peer_pid = pid;
        pool__mgr_random(c->nonce, 32);
        pool__mgr_put32(ch, 36);
        ch[4] = POOL__MGR_T_CHALLENGE; ch[5] = POOL__MGR_WIRE_VERSION; ch[6] = s->keylen ? 1 : 0; ch[7] = 0;
        memcpy(ch + 8, c->nonce, 32);
        if (pool__mgr_buf_reserve(&c->out, sizeof ch)) { pool__mgr_srv_kill(s, c); continue; }
        memcpy(c->out.p, ch, sizeof ch);
        c->out.n = sizeof ch;
        pool__mgr_srv_watch(s, c, 1);
        pool__mgr_srv_flush(s, c);
    }
}

static void pool__mgr_srv_event(pool__mgr_srv *s, pool__mgr_sconn *c, int readable, int writable, int hup)
{
    char junk[64];
    switch (c->role) {
    case POOL__MGR_R_LISTEN: pool__mgr_srv_accept(s); return;
    case POOL__MGR_R_STOP:
        while (read(c->fd, junk, sizeof junk) > 0) { /* drain */ }
        return;
    case POOL__MGR_R_WATCH: /* the starter's end closed: it died */
        shmq__store(&s->stop, 1, SHMQ__RELEASE);
        return;
    default: break;
    }
    if (c->state == POOL__MGR_S_DEAD) return;
    if (writable) {
        pool__mgr_srv_flush(s, c);
        if (!c->want_out && c->state != POOL__MGR_S_DEAD && c->in.n) {
            if (pool__mgr_srv_feed(s, c)) { pool__mgr_srv_flush(s, c); pool__mgr_srv_kill(s, c); return; }
            pool__mgr_srv_flush(s, c);
        }
    }
    if (hup && c->want_out && c->state != POOL__MGR_S_DEAD) { /* gone with answers unread */
        pool__mgr_srv_kill(s, c);
        return;
    }
    if (readable || hup) pool__mgr_srv_on_read(s, c);
}

/* Once a second: starter alive? handshakes too slow? */
static void pool__mgr_srv_tick(pool__mgr_srv *s, int64_t now)
{
    pool__mgr_sconn *c;
    if (s->starter_pid && (long)getppid() != s->starter_pid) shmq__store(&s->stop, 1, SHMQ__RELEASE);
    for (c = s->conns; c; c = c->next)
        if (c->state == POOL__MGR_S_HANDSHAKE && now > c->hs_deadline) {
            pool__mgr_srv_log(s, "handshake timed out", c->peer_pid, POOL_ETIMEDOUT);
            pool__mgr_srv_kill(s, c);
        }
    s->next_tick = now + 1000000000;
}

/* Allocates a server's state (no socket yet); also what the fuzz target uses. */
static int pool__mgr_srv_init(pool__mgr_srv **out, const pool_manager_config *cfg)
{
    pool__mgr_srv *s = (pool__mgr_srv *)POOL__MGR_MALLOC(sizeof *s);
    *out = NULL;
    if (!s) return POOL_ENOMEM;
    memset(s, 0, sizeof *s);
    if (cfg) s->cfg = *cfg;
    s->cfg.address = NULL;
    s->cfg.authkey = NULL;
    pool__mgr_spin_init(&s->spin, cfg ? cfg->spin_us : 0);
    s->max_frame = cfg && cfg->max_frame ? cfg->max_frame : (size_t)16 << 20;
    if (s->max_frame < 4096) s->max_frame = 4096;
    if (s->max_frame > 0x7fffff00u) s->max_frame = 0x7fffff00u;
    if (cfg && cfg->authkey && cfg->authkey_len) {
        s->key = (uint8_t *)POOL__MGR_MALLOC(cfg->authkey_len);
        if (!s->key) { POOL__MGR_FREE(s); return POOL_ENOMEM; }
        memcpy(s->key, cfg->authkey, cfg->authkey_len);
        s->keylen = cfg->authkey_len;
    }
    s->lfd = s->stop_r = s->stop_w = s->watch_fd = s->pfd = -1;
    s->next_deadline = INT64_MAX;
    s->uid = geteuid();
    pool__mgr_random(&s->names.seed, sizeof s->names.seed);
    s->listen_c.role = POOL__MGR_R_LISTEN;
    s->stop_c.role = POOL__MGR_R_STOP;
    s->watch_c.role = POOL__MGR_R_WATCH;
    *out = s;
    return POOL_OK;
}

/* Frees everything; unlinks the socket and directory only if `remove`. */
/* Stops serving: every connection closed (blocked clients see the end at once),
 * the listening socket closed and, if `remove_files`, the socket file and the
 * directory we made removed. Objects stay until pool__mgr_srv_free. */
static void pool__mgr_srv_close(pool__mgr_srv *s, int remove_files)
{
    pool__mgr_sess *x, *nx;
    while (s->conns) {
        pool__mgr_sconn *c = s->conns;
        if (c->park) {
            pool__mgr_park *p = c->park;
            pool__mgr_park_unlink(s, p);
            pool__mgr_park_free(p);
        }
        c->state = POOL__MGR_S_DEAD;
        pool__mgr_srv_ack(c); /* items die with the server */
        c->sess = NULL;
        pool__mgr_srv_conn_free(s, c);
    }
    for (x = s->sessions; x; x = nx) { nx = x->next; POOL__MGR_FREE(x); }
    s->sessions = NULL;
    if (s->lfd >= 0) close(s->lfd);
    s->lfd = -1;
    if (remove_files && s->owns_path) {
        unlink(s->path);
        if (s->dir[0]) rmdir(s->dir);
    }
    s->owns_path = 0;
}

static void pool__mgr_srv_free(pool__mgr_srv *s, int remove_files)
{
    uint32_t i;
    if (!s) return;
    pool__mgr_srv_close(s, remove_files);
    for (i = 0; i < s->nobjs; i++) {
        pool__mgr_park *p = s->objs[i]->wq_head, *n;
        for (; p; p = n) { n = p->next; pool__mgr_park_free(p); }
        pool__mgr_obj_free(s->objs[i]);
    }
    POOL__MGR_FREE(s->objs);
    pool__mgr_map_free(&s->names);
    POOL__MGR_FREE(s->opv);
    if (s->stop_r >= 0) close(s->stop_r);
    if (s->stop_w >= 0) close(s->stop_w);
    if (s->watch_fd >= 0) close(s->watch_fd);
    if (s->pfd >= 0) close(s->pfd);
    if (s->key) { memset(s->key, 0, s->keylen); POOL__MGR_FREE(s->key); }
#if !SHMQ__LINUX
    POOL__MGR_FREE(s->pfds);
    POOL__MGR_FREE(s->pconns);
#endif
    POOL__MGR_FREE(s);
}

/* Makes the directory (unless given a path), binds and listens. */
static int pool__mgr_srv_listen(pool__mgr_srv *s, const char *address)
{
    struct sockaddr_un sa;
    int fd, p[2];
    mode_t old;
    if (address) {
        if (!address[0]) return POOL_EINVAL;
        if (strlen(address) >= sizeof sa.sun_path) return POOL_ENAMETOOLONG;
        strcpy(s->path, address);
    } else {
        const char *tmp = getenv("TMPDIR");
        if (!tmp || !tmp[0]) tmp = "/tmp";
        if (strlen(tmp) + 40 >= sizeof s->dir) return POOL_ENAMETOOLONG;
        snprintf(s->dir, sizeof s->dir, "%s/pool-manager-XXXXXX", tmp);
        if (!mkdtemp(s->dir)) { s->dir[0] = 0; return POOL_ESYS; } /* mkdtemp makes it 0700 */
        memcpy(s->path, s->dir, strlen(s->dir));
        memcpy(s->path + strlen(s->dir), "/manager.sock", sizeof "/manager.sock");
    }
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0) goto fail;
    pool__mgr_set_fd_flags(fd, 1);
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    strcpy(sa.sun_path, s->path);
    old = umask(0177); /* the socket file is made 0600 */
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        int e = errno;
        umask(old);
        close(fd);
        errno = e;
        goto fail;
    }
    umask(old);
    s->owns_path = 1;
    chmod(s->path, 0600);
    if (listen(fd, SOMAXCONN) != 0) { close(fd); goto fail; }
    s->lfd = fd;
    if (pipe(p) != 0) goto fail;
    pool__mgr_set_fd_flags(p[0], 1);
    pool__mgr_set_fd_flags(p[1], 1);
    s->stop_r = p[0];
    s->stop_w = p[1];
    s->listen_c.fd = s->lfd;
    s->stop_c.fd = s->stop_r;
    return POOL_OK;
fail:
    {
        int e = errno;
        if (s->owns_path) unlink(s->path);
        s->owns_path = 0;
        if (s->dir[0]) rmdir(s->dir);
        s->dir[0] = 0;
        errno = e;
    }
    return POOL_ESYS;
}

POOL_DEF int pool_mserver_create(pool_mserver_t **out, const pool_manager_config *cfg)
{
    pool__mgr_srv *s;
    int rc;
    if (!out || (cfg && cfg->spin_us < -1)) return POOL_EINVAL;
    *out = NULL;
    rc = pool__mgr_srv_init(&s, cfg);
    if (rc) return rc;
    rc = pool__mgr_srv_listen(s, cfg ? cfg->address : NULL);
    if (rc) { int e = errno; pool__mgr_srv_free(s, 0); errno = e; return rc; }
    *out = s;
    return POOL_OK;
}

POOL_DEF const char *pool_mserver_address(const pool_mserver_t *s) { return s ? s->path : ""; }

POOL_DEF void pool_mserver_stop(pool_mserver_t *s)
{
    char b = 1;
    if (!s) return;
    shmq__store(&s->stop, 1, SHMQ__RELEASE);
    if (s->stop_w >= 0 && write(s->stop_w, &b, 1) < 0) { /* full pipe: already woken */ }
}

POOL_DEF void pool_mserver_destroy(pool_mserver_t *s) { pool__mgr_srv_free(s, 1); }

POOL_DEF int pool_mserver_run(pool_mserver_t *s)
{
    int64_t idle_since = 0, spin_until = 0;
#if SHMQ__LINUX
    struct epoll_event evs[64];
#endif
    if (!s || s->lfd < 0) return POOL_EINVAL;
#if SHMQ__LINUX
    if (s->pfd < 0) {
        s->pfd = epoll_create1(EPOLL_CLOEXEC);
        if (s->pfd < 0) return POOL_ESYS;
        pool__mgr_srv_watch(s, &s->listen_c, 1);
        pool__mgr_srv_watch(s, &s->stop_c, 1);
        if (s->watch_fd >= 0) { s->watch_c.fd = s->watch_fd; pool__mgr_srv_watch(s, &s->watch_c, 1); }
    }
#else
    s->watch_c.fd = s->watch_fd;
#endif
    s->next_tick = pool__mgr_now_ns() + 1000000000;
    while (!shmq__load(&s->stop, SHMQ__ACQUIRE)) {
        int64_t now = pool__mgr_now_ns(),
                wake = s->next_deadline < s->next_tick ? s->next_deadline : s->next_tick;
        int timeout = wake <= now ? 0 : (int)((wake - now + 999999) / 1000000), n, i;
        if (idle_since == 0) {
            idle_since = now; /* a wait for the next event begins */
            spin_until = now + pool__mgr_spin_budget(&s->spin);
        }
        if (now < spin_until) timeout = 0; /* >>manager-spin */
#if SHMQ__LINUX
        n = epoll_wait(s->pfd, evs, 64, timeout);
        if (n < 0 && errno != EINTR) return POOL_ESYS;
        if (n > 0) {
            pool__mgr_spin_note(&s->spin, pool__mgr_now_ns() - idle_since, spin_until - idle_since);
            idle_since = 0;
        } else if (timeout > 0) {
            idle_since = 0; /* slept through a timer: start a fresh wait */
        }
        for (i = 0; i < n; i++) {
            uint32_t e = evs[i].events;
            pool__mgr_srv_event(s, (pool__mgr_sconn *)evs[i].data.ptr, (e & EPOLLIN) != 0,
                                (e & EPOLLOUT) != 0, (e & (EPOLLHUP | EPOLLERR)) != 0);
        }
#else
        {
            size_t k = 0, need = s->nconns + 3;
            pool__mgr_sconn *c;
            if (need > s->npcap) {
                struct pollfd *np = (struct pollfd *)POOL__MGR_REALLOC(s->pfds, sizeof *np * need * 2);
                pool__mgr_sconn **nc;
                if (!np) return POOL_ENOMEM;
                s->pfds = np;
                nc = (pool__mgr_sconn **)POOL__MGR_REALLOC(s->pconns, sizeof *nc * need * 2);
                if (!nc) return POOL_ENOMEM;
                s->pconns = nc;
                s->npcap = need * 2;
            }
            s->pfds[k].fd = s->lfd; s->pfds[k].events = POLLIN; s->pconns[k++] = &s->listen_c;
            s->pfds[k].fd = s->stop_r; s->pfds[k].events = POLLIN; s->pconns[k++] = &s->stop_c;
            if (s->watch_fd >= 0) {
                s->pfds[k].fd = s->watch_fd;
                s->pfds[k].events = POLLIN;
                s->pconns[k++] = &s->watch_c;
            }
            for (c = s->conns; c; c = c->next) {
                if (c->fd < 0 || c->state == POOL__MGR_S_DEAD) continue;
                s->pfds[k].fd = c->fd;
                s->pfds[k].events = c->want_out ? POLLOUT : POLLIN;
                s->pconns[k++] = c;
            }
            n = poll(s->pfds, (nfds_t)k, timeout);
            if (n < 0 && errno != EINTR) return POOL_ESYS;
            if (n > 0) {
                pool__mgr_spin_note(&s->spin, pool__mgr_now_ns() - idle_since, spin_until - idle_since);
                idle_since = 0;
            } else if (timeout > 0) {
                idle_since = 0;
            }
            for (i = 0; n > 0 && i < (int)k; i++) {
                short e = s->pfds[i].revents;
                if (!e) continue;
                pool__mgr_srv_event(s, s->pconns[i], (e & POLLIN) != 0, (e & POLLOUT) != 0,
                                (e & (POLLHUP | POLLERR | POLLNVAL)) != 0);
            }
        }
#endif
        now = pool__mgr_now_ns();
        if (now >= s->next_deadline) pool__mgr_srv_expire(s, now);
        if (now >= s->next_tick) pool__mgr_srv_tick(s, now);
        pool__mgr_srv_reap(s);
    }
    pool__mgr_srv_close(s, 1);
    return POOL_OK;
}

/* >>manager-client
 *
 * A pool_manager_t keeps idle connections (LIFO, so a single-threaded client
 * reuses one, and its next request acknowledges the queue item it received). A
 * call takes an idle connection or dials a new one, does one round trip, and gives
 * the connection back; a connection that failed is closed instead. */
typedef struct pool__mgr_cconn {
    int fd;
    int unacked;           /* a queue item was received on it and not yet acknowledged */
    pool__mgr_buf b;           /* request, then reply */
    struct pool__mgr_cconn *next, *anext; /* idle list; every connection */
} pool__mgr_cconn;

typedef struct pool__mgr_handle {
    pool_manager_t *m;
    uint32_t id;
    uint8_t kind;
    char *name;
    struct pool__mgr_handle *next;
} pool__mgr_handle;

struct pool_manager_s {
    pthread_mutex_t mu;
    char address[108];
    char dir[108];          /* the directory the server made (a started manager) */
    uint8_t *key;
    size_t keylen, max_frame;
    int connect_timeout_ms;
    pool__mgr_spin spin;    /* polling for replies (>>manager-spin) */
    uint64_t session;       /* this process's client identity (new after fork) */
    pool__mgr_cconn *idle;      /* mu */
    pool__mgr_cconn *all;       /* mu */
    pool__mgr_handle *handles;  /* mu */
    long server_pid;        /* started here, not detached; 0 otherwise */
    int watch_w;            /* our end of the pipe the server watches, or -1 */
    int started, detached;
    int is_child;           /* set in a fork child (by the fork handler) */
    pool_manager_t *reg_prev, *reg_next; /* pool__mgr_reg_mu */
    int down;               /* atomic: shutdown done, fail fast */
};

static uint64_t pool__mgr_thread_token(void)
{
    pthread_t t = pthread_self();
    uint64_t v = 0;
    memcpy(&v, &t, sizeof t < sizeof v ? sizeof t : sizeof v);
    return v ? v : 1;
}

static uint64_t pool__mgr_new_session(void)
{
    uint64_t s;
    pool__mgr_random(&s, sizeof s);
    return s ? s : 1;
}

static void pool__mgr_cconn_close(pool__mgr_cconn *c)
{
    if (c->fd >= 0) close(c->fd);
    pool__mgr_buf_free(&c->b);
    POOL__MGR_FREE(c);
}

/* Removes c from the list of every connection (mu held). */
static void pool__mgr_mc_forget(pool_manager_t *m, pool__mgr_cconn *c)
{
    pool__mgr_cconn **pp;
    for (pp = &m->all; *pp; pp = &(*pp)->anext)
        if (*pp == c) { *pp = c->anext; return; }
}

/* FORK. A fork child must not share its parent's connections: the server would
 * take the child's requests for the parent's (one client identity), and a parent
 * killed while holding a lock would not be seen to die while a child it forked
 * still held copies of its sockets. So pthread_atfork handlers, registered once,
 * walk a registry of every open manager: before fork they take the registry lock
 * and every manager's mu (so the child sees consistent lists), in the parent they
 * let go, and in the child they close the inherited sockets at once (closing a
 * copy does not disturb the parent's connection), give the manager a new client
 * identity, and let go. The child then dials fresh connections on its first call.
 * The handler calls only close(), open(), read() and unlock: no allocation. */
static pthread_mutex_t pool__mgr_reg_mu = PTHREAD_MUTEX_INITIALIZER;
static pool_manager_t *pool__mgr_reg_head; /* pool__mgr_reg_mu */
static pthread_once_t pool__mgr_fork_once = PTHREAD_ONCE_INIT;

static void pool__mgr_fork_prepare(void)
{
    pool_manager_t *m;
    pthread_mutex_lock(&pool__mgr_reg_mu);
    for (m = pool__mgr_reg_head; m; m = m->reg_next) pthread_mutex_lock(&m->mu);
}

static void pool__mgr_fork_parent(void)
{
    pool_manager_t *m;
    for (m = pool__mgr_reg_head; m; m = m->reg_next) pthread_mutex_unlock(&m->mu);
    pthread_mutex_unlock(&pool__mgr_reg_mu);
}

static void pool__mgr_fork_child(void)
{
    pool_manager_t *m;
    for (m = pool__mgr_reg_head; m; m = m->reg_next) {
        pool__mgr_cconn *c;
        for (c = m->all; c; c = c->anext) {
            if (c->fd >= 0) close(c->fd); /* freed by the next pool__mgr_mc_get or close */
            c->fd = -1;
            c->unacked = 0;
        }
        if (m->watch_w >= 0) close(m->watch_w);
        m->watch_w = -1;
        pool__mgr_random(&m->session, sizeof m->session);
        m->session |= 1;
        m->is_child = 1;
        pthread_mutex_unlock(&m->mu);
    }
    pthread_mutex_unlock(&pool__mgr_reg_mu);
}

static void pool__mgr_fork_hook(void)
{
    pthread_atfork(pool__mgr_fork_prepare, pool__mgr_fork_parent, pool__mgr_fork_child);
}

static void pool__mgr_reg_add(pool_manager_t *m)
{
    pthread_once(&pool__mgr_fork_once, pool__mgr_fork_hook);
    pthread_mutex_lock(&pool__mgr_reg_mu);
    m->reg_prev = NULL;
    m->reg_next = pool__mgr_reg_head;
    if (pool__mgr_reg_head) pool__mgr_reg_head->reg_prev = m;
    pool__mgr_reg_head = m;
    pthread_mutex_unlock(&pool__mgr_reg_mu);
}

static void pool__mgr_reg_remove(pool_manager_t *m)
{
    pthread_mutex_lock(&pool__mgr_reg_mu);
    if (m->reg_prev) m->reg_prev->reg_next = m->reg_next;
    else if (pool__mgr_reg_head == m) pool__mgr_reg_head = m->reg_next;
    if (m->reg_next) m->reg_next->reg_prev = m->reg_prev;
    m->reg_prev = m->reg_next = NULL;
    pthread_mutex_unlock(&pool__mgr_reg_mu);
}

/* Writes all of buf. */
static int pool__mgr_send_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t r = send(fd, p, n, POOL__MGR_MSG_NOSIGNAL);
        if (r > 0) { p += r; n -= (size_t)r; continue; }
        if (r < 0 && errno == EINTR) continue;
        return POOL_ECONN;
    }
    return POOL_OK;
}

/* Reads one whole frame into b (length field included). deadline_ns < 0: none.
 * spin_ns > 0 (no deadline only): poll that long before a blocking read. */
static int pool__mgr_recv_frame(int fd, pool__mgr_buf *b, size_t max_frame, int64_t deadline_ns,
                                int64_t spin_ns)
{
    int64_t spin_end = spin_ns > 0 && deadline_ns < 0 ? pool__mgr_now_ns() + spin_ns : 0;
    b->n = 0;
    for (;;) {
        ssize_t r;
        size_t want = 4;
        if (b->n >= 4) {
            uint32_t len = pool__mgr_get32(b->p);
            if (len < 4 || len > max_frame) return POOL_EPROTO;
            want = 4 + (size_t)len;
            if (b->n >= want) return b->n == want ? POOL_OK : POOL_EPROTO;
        }
        if (pool__mgr_buf_reserve(b, want - b->n)) return POOL_ENOMEM;
        if (deadline_ns >= 0) {
            struct pollfd pf;
            int64_t left = deadline_ns - pool__mgr_now_ns();
            int pr;
            if (left <= 0) return POOL_ETIMEDOUT;
            pf.fd = fd; pf.events = POLLIN; pf.revents = 0;
            pr = poll(&pf, 1, (int)((left + 999999) / 1000000));
            if (pr < 0 && errno == EINTR) continue;
            if (pr == 0) return POOL_ETIMEDOUT;
        }
        if (spin_end) {
            r = recv(fd, b->p + b->n, b->cap - b->n, MSG_DONTWAIT);
            if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                if (pool__mgr_now_ns() >= spin_end) spin_end = 0;
                continue;
            }
        } else {
            r = recv(fd, b->p + b->n, b->cap - b->n, 0);
        }
        if (r > 0) { b->n += (size_t)r; continue; }
        if (r < 0 && errno == EINTR) continue;
        return POOL_ECONN;
    }
}

/* Connects and runs the handshake (see >>manager-wire). */
static int pool__mgr_dial(const char *address, const uint8_t *key, size_t keylen, uint64_t session,
                      size_t max_frame, int timeout_ms, int *fd_out)
{
    struct sockaddr_un sa;
    int fd, rc;
    int64_t deadline = pool__mgr_now_ns() + (int64_t)timeout_ms * 1000000;
    pool__mgr_buf b = {NULL, 0, 0};
    uint8_t hello[84], mac[32];
    const char *lc = "pool-manager-client", *ls = "pool-manager-server";
    *fd_out = -1;
    if (strlen(address) >= sizeof sa.sun_path) return POOL_ENAMETOOLONG;
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0) return POOL_ESYS;
    pool__mgr_set_fd_flags(fd, 0);
#ifdef SO_NOSIGPIPE
    { int one = 1; setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one); }
#endif
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    strcpy(sa.sun_path, address);
    while (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        if (errno == EINTR) continue;
        close(fd);
        return POOL_ECONN;
    }
    rc = pool__mgr_recv_frame(fd, &b, 64, deadline, 0);
    if (rc) goto out;
    if (b.n == 12 && b.p[4] == POOL__MGR_T_ERROR) { rc = POOL_EAUTH; goto out; }
    if (b.n != 40 || b.p[4] != POOL__MGR_T_CHALLENGE || b.p[5] != POOL__MGR_WIRE_VERSION) {
        rc = POOL_EPROTO;
        goto out;
    }
    if ((b.p[6] != 0) != (keylen != 0)) { rc = POOL_EAUTH; goto out; } /* both sides must agree */
    pool__mgr_put32(hello, POOL__MGR_HELLO_LEN);
    hello[4] = POOL__MGR_T_HELLO;
    hello[5] = POOL__MGR_WIRE_VERSION;
    pool__mgr_put16(hello + 6, 0);
    pool__mgr_put32(hello + 8, (uint32_t)getpid());
    pool__mgr_put64(hello + 12, session);
    pool__mgr_random(hello + 20, 32);
    if (keylen)
        pool__mgr_hmac_sha256(key, keylen, lc, strlen(lc), b.p + 8, 32, hello + 20, 32, hello + 12, 8,
                              hello + 52);
    else memset(hello + 52, 0, 32);
    if (keylen)
        pool__mgr_hmac_sha256(key, keylen, ls, strlen(ls), hello + 20, 32, b.p + 8, 32, hello + 12, 8, mac);
    rc = pool__mgr_send_all(fd, hello, sizeof hello);
    if (rc) goto out;
    rc = pool__mgr_recv_frame(fd, &b, 64, deadline, 0);
    if (rc == POOL_ECONN) rc = POOL_EAUTH; /* closed on us during the handshake: refused */
    if (rc) goto out;
    if (b.n == 12 && b.p[4] == POOL__MGR_T_ERROR) { rc = POOL_EAUTH; goto out; }
    if (b.n != 44 || b.p[4] != POOL__MGR_T_WELCOME || pool__mgr_get32(b.p + 8) != 0) {
        rc = POOL_EPROTO;
        goto out;
    }
    if (keylen && !pool__mgr_ct_equal(mac, b.p + 12, 32)) { rc = POOL_EAUTH; goto out; } /* a fake server */
    (void)max_frame;
out:
    pool__mgr_buf_free(&b);
    if (rc) close(fd);
    else *fd_out = fd;
    return rc;
}

/* Takes a connection for one call. */
static int pool__mgr_mc_get(pool_manager_t *m, pool__mgr_cconn **out)
{
    pool__mgr_cconn *c;
    int rc, fd;
    if (shmq__load(&m->down, SHMQ__ACQUIRE)) return POOL_ECONN;
    pthread_mutex_lock(&m->mu);
    while ((c = m->idle) != NULL && c->fd < 0) { /* closed by the fork handler */
        m->idle = c->next;
        pool__mgr_mc_forget(m, c);
        pool__mgr_cconn_close(c);
    }
    if (c) m->idle = c->next;
    pthread_mutex_unlock(&m->mu);
    if (c) { *out = c; return POOL_OK; }
    rc = pool__mgr_dial(m->address, m->key, m->keylen, m->session, m->max_frame, m->connect_timeout_ms, &fd);
    if (rc) return rc;
    c = (pool__mgr_cconn *)POOL__MGR_MALLOC(sizeof *c);
    if (!c) { close(fd); return POOL_ENOMEM; }
    memset(c, 0, sizeof *c);
    c->fd = fd;
    pthread_mutex_lock(&m->mu);
    c->anext = m->all;
    m->all = c;
    pthread_mutex_unlock(&m->mu);
    *out = c;
    return POOL_OK;
}

static void pool__mgr_mc_put(pool_manager_t *m, pool__mgr_cconn *c, int ok)
{
    pthread_mutex_lock(&m->mu);
    if (ok && c->fd >= 0) {
        c->next = m->idle;
        m->idle = c;
    } else {
        pool__mgr_mc_forget(m, c);
    }
    pthread_mutex_unlock(&m->mu);
    if (!ok || c->fd < 0) pool__mgr_cconn_close(c);
}

/* Request building, into a pool__mgr_buf. */
static int pool__mgr_req_begin(pool__mgr_buf *b, uint16_t nops, uint64_t token)
{
    b->n = 0;
    if (pool__mgr_buf_reserve(b, 4 + POOL__MGR_REQ_HDR)) return POOL_ENOMEM;
    b->p[4] = POOL__MGR_T_REQUEST;
    b->p[5] = 0;
    pool__mgr_put16(b->p + 6, nops);
    pool__mgr_put64(b->p + 8, token);
    b->n = 4 + POOL__MGR_REQ_HDR;
    return POOL_OK;
}

static int pool__mgr_req_op(pool__mgr_buf *b, uint8_t op, uint8_t kind, uint32_t id, int32_t timeout,
                        uint32_t aux, int64_t num, uint16_t nblobs)
{
    uint8_t *p;
    if (pool__mgr_buf_reserve(b, POOL__MGR_OP_HDR)) return POOL_ENOMEM;
    p = b->p + b->n;
    p[0] = op; p[1] = kind;
    pool__mgr_put16(p + 2, nblobs);
    pool__mgr_put32(p + 4, id);
    pool__mgr_put32(p + 8, (uint32_t)timeout);
    pool__mgr_put32(p + 12, aux);
    pool__mgr_put64(p + 16, (uint64_t)num);
    b->n += POOL__MGR_OP_HDR;
    return POOL_OK;
}

static int pool__mgr_req_blob(pool__mgr_buf *b, const void *p, size_t n)
{
    if (n > 0xffffffffu) return POOL_ETOOBIG;
    if (pool__mgr_buf_reserve(b, 4 + n)) return POOL_ENOMEM;
    pool__mgr_put32(b->p + b->n, (uint32_t)n);
    if (n) memcpy(b->p + b->n + 4, p, n);
    b->n += 4 + n;
    return POOL_OK;
}

/* Reading a reply. */
typedef struct pool__mgr_rd {
    const uint8_t *p, *end;
} pool__mgr_rd;

typedef struct pool__mgr_res_t {
    int code;
    uint32_t nblobs;
    int64_t num;
    const uint8_t *blob; /* first blob */
    uint32_t blen;
} pool__mgr_res_t;

/* The next result; POOL_EPROTO if the reply is malformed. */
static int pool__mgr_rd_res(pool__mgr_rd *r, pool__mgr_res_t *res)
{
    uint32_t i;
    if (r->end - r->p < POOL__MGR_RES_HDR) return POOL_EPROTO;
    res->code = (int32_t)pool__mgr_get32(r->p);
    res->nblobs = pool__mgr_get32(r->p + 4);
    res->num = (int64_t)pool__mgr_get64(r->p + 8);
    res->blob = NULL;
    res->blen = 0;
    r->p += POOL__MGR_RES_HDR;
    for (i = 0; i < res->nblobs; i++) {
        uint32_t bl;
        if (r->end - r->p < 4) return POOL_EPROTO;
        bl = pool__mgr_get32(r->p);
        if ((size_t)(r->end - r->p - 4) < bl) return POOL_EPROTO;
        if (i == 0) { res->blob = r->p + 4; res->blen = bl; }
        r->p += 4 + (size_t)bl;
    }
    return POOL_OK;
}

/* Sends b (a request of nops ops) on c, receives the reply into c->b, and sets r to
 * read its results. Returns POOL_OK or a transport error (the connection is bad). */
static int pool__mgr_roundtrip(pool_manager_t *m, pool__mgr_cconn *c, const pool__mgr_buf *req,
                               uint16_t nops, pool__mgr_rd *r)
{
    int rc;
    int64_t t0, budget;
    pool__mgr_put32(req->p, (uint32_t)(req->n - 4));
    if (req->n - 4 > m->max_frame) return POOL_ETOOBIG;
    t0 = pool__mgr_now_ns();
    rc = pool__mgr_send_all(c->fd, req->p, req->n);
    if (rc) return rc;
    c->unacked = 0;
    budget = pool__mgr_spin_budget(&m->spin);
    rc = pool__mgr_recv_frame(c->fd, &c->b, m->max_frame + 1024, -1, budget);
    if (rc) return rc;
    pool__mgr_spin_note(&m->spin, pool__mgr_now_ns() - t0, budget);
    if (c->b.n == 12 && c->b.p[4] == POOL__MGR_T_ERROR) {
        rc = (int32_t)pool__mgr_get32(c->b.p + 8);
        return rc < 0 ? rc : POOL_EPROTO;
    }
    if (c->b.n < 8 || c->b.p[4] != POOL__MGR_T_REPLY || pool__mgr_get16(c->b.p + 6) != nops)
        return POOL_EPROTO;
    r->p = c->b.p + 8;
    r->end = c->b.p + c->b.n;
    return POOL_OK;
}

/* Where a call puts the first blob of its answer. */
typedef struct pool__mgr_outspec {
    void *buf;
    size_t cap;
    size_t *len;
    int server_checks_cap; /* the server answered ENOSPC itself, with the size in num */
} pool__mgr_outspec;

/* One op on an object: the general single round trip. */
static int pool__mgr_call(pool_manager_t *m, uint8_t op, uint8_t kind, uint32_t id, int timeout,
                      uint32_t aux, int64_t num, int nblobs, const void *b0, size_t l0,
                      const void *b1, size_t l1, const void *b2, size_t l2,
                      const pool__mgr_outspec *out, int64_t *rnum)
{
    pool__mgr_cconn *c;
    pool__mgr_rd r;
    pool__mgr_res_t res;
    int rc;
    if (timeout < -1) timeout = -1;
    rc = pool__mgr_mc_get(m, &c);
    if (rc) return rc;
    if ((rc = pool__mgr_req_begin(&c->b, 1, pool__mgr_thread_token())) ||
        (rc = pool__mgr_req_op(&c->b, op, kind, id, timeout, aux, num, (uint16_t)nblobs)) ||
        (nblobs > 0 && (rc = pool__mgr_req_blob(&c->b, b0, l0))) ||
        (nblobs > 1 && (rc = pool__mgr_req_blob(&c->b, b1, l1))) ||
        (nblobs > 2 && (rc = pool__mgr_req_blob(&c->b, b2, l2)))) {
        pool__mgr_mc_put(m, c, 1);
        return rc;
    }
    if (c->b.n - 4 > m->max_frame) { pool__mgr_mc_put(m, c, 1); return POOL_ETOOBIG; }
    rc = pool__mgr_roundtrip(m, c, &c->b, 1, &r);
    if (rc == POOL_OK) rc = pool__mgr_rd_res(&r, &res);
    if (rc == POOL_OK && r.p != r.end) rc = POOL_EPROTO;
    if (rc) { /* transport error, or the server's ERROR frame: the connection is done */
        pool__mgr_mc_put(m, c, 0);
        return rc;
    }
    rc = res.code;
    if (rnum) *rnum = res.num;
    if (out) {
        if (rc == POOL_OK && res.nblobs >= 1) {
            if (out->len) *out->len = res.blen;
            if (res.blen > out->cap) rc = POOL_ENOSPC;
            else if (res.blen) memcpy(out->buf, res.blob, res.blen);
        } else if (rc == POOL_ENOSPC && out->len) {
            *out->len = (size_t)res.num;
        }
    }
    if (op == POOL__MGR_OP_Q_GET && res.code == POOL_OK) c->unacked = 1;
    pool__mgr_mc_put(m, c, 1);
    return rc;
}

/* ---- manager life ---- */
static void pool__mgr_mc_free(pool_manager_t *m)
{
    pool__mgr_cconn *c, *n;
    pool__mgr_handle *h, *hn;
    pool__mgr_reg_remove(m);
    for (c = m->all; c; c = n) {
        n = c->anext;
        if (c->unacked) { /* acknowledge the last item: no reply comes */
            uint8_t ack[16];
            pool__mgr_put32(ack, POOL__MGR_REQ_HDR);
            ack[4] = POOL__MGR_T_ACK; ack[5] = 0; pool__mgr_put16(ack + 6, 0);
            pool__mgr_put64(ack + 8, 0);
            if (pool__mgr_send_all(c->fd, ack, sizeof ack)) { /* gone anyway */ }
        }
        pool__mgr_cconn_close(c);
    }
    for (h = m->handles; h; h = hn) { hn = h->next; POOL__MGR_FREE(h->name); POOL__MGR_FREE(h); }
    if (m->watch_w >= 0) close(m->watch_w);
    if (m->key) { memset(m->key, 0, m->keylen); POOL__MGR_FREE(m->key); }
    pthread_mutex_destroy(&m->mu);
    POOL__MGR_FREE(m);
}

static int pool__mgr_mc_new(pool_manager_t **out, const char *address, const pool_manager_config *cfg)
{
    pool_manager_t *m;
    *out = NULL;
    if (!address || !address[0]) return POOL_EINVAL;
    if (strlen(address) >= sizeof m->address) return POOL_ENAMETOOLONG;
    m = (pool_manager_t *)POOL__MGR_MALLOC(sizeof *m);
    if (!m) return POOL_ENOMEM;
    memset(m, 0, sizeof *m);
    if (pthread_mutex_init(&m->mu, NULL) != 0) { POOL__MGR_FREE(m); return POOL_ESYS; }
    strcpy(m->address, address);
    m->watch_w = -1;
    m->max_frame = cfg && cfg->max_frame ? cfg->max_frame : (size_t)16 << 20;
    if (m->max_frame < 4096) m->max_frame = 4096;
    if (m->max_frame > 0x7fffff00u) m->max_frame = 0x7fffff00u;
    m->connect_timeout_ms = cfg && cfg->connect_timeout_ms > 0 ? cfg->connect_timeout_ms : 5000;
    pool__mgr_spin_init(&m->spin, cfg ? cfg->spin_us : 0);
    if (cfg && cfg->authkey && cfg->authkey_len) {
        m->key = (uint8_t *)POOL__MGR_MALLOC(cfg->authkey_len);
        if (!m->key) { pool__mgr_mc_free(m); return POOL_ENOMEM; }
        memcpy(m->key, cfg->authkey, cfg->authkey_len);
        m->keylen = cfg->authkey_len;
    }
    m->session = pool__mgr_new_session();
    pool__mgr_reg_add(m);
    *out = m;
    return POOL_OK;
}

POOL_DEF int pool_manager_connect(pool_manager_t **out, const char *address, const pool_manager_config *cfg)
{
    pool_manager_t *m;
    pool__mgr_cconn *c;
    int rc;
    if (!out || (cfg && cfg->spin_us < -1)) return POOL_EINVAL;
    rc = pool__mgr_mc_new(&m, address, cfg);
    if (rc) return rc;
    rc = pool__mgr_mc_get(m, &c); /* connect now: errors show here, not at first use */
    if (rc) { pool__mgr_mc_free(m); return rc; }
    pool__mgr_mc_put(m, c, 1);
    *out = m;
    return POOL_OK;
}

/* Closes every descriptor above 2 except those in keep[] (the forked server's start). */
static void pool__mgr_close_fds_except(const int *keep, int nkeep)
{
    long maxfd = sysconf(_SC_OPEN_MAX), fd;
    int i;
    if (maxfd < 0 || maxfd > 65536) maxfd = 65536;
#if defined(__linux__)
    {
        /* /proc/self/fd lists only open ones: far fewer calls than up to the limit */
        int fds[1024], n = 0, more = 1, listed = 0;
        while (more) {
            DIR *d = opendir("/proc/self/fd");
            struct dirent *e;
            if (!d) break;
            listed = 1;
            n = 0;
            more = 0;
            while ((e = readdir(d)) != NULL) {
                long v;
                char *endp;
                if (e->d_name[0] == '.') continue;
                v = strtol(e->d_name, &endp, 10);
                if (*endp || v <= 2 || v == dirfd(d)) continue;
                for (i = 0; i < nkeep; i++) if (keep[i] == v) break;
                if (i < nkeep) continue;
                if (n < 1024) fds[n++] = (int)v; else more = 1;
            }
            closedir(d);
            for (i = 0; i < n; i++) close(fds[i]);
        }
        if (listed) return;
    }
#endif
    for (fd = 3; fd < maxfd; fd++) {
        for (i = 0; i < nkeep; i++) if (keep[i] == fd) break;
        if (i == nkeep) close((int)fd);
    }
}

/* The forked server process: never returns. */
static void pool__mgr_server_child(pool__mgr_srv *s, int watch_r, long starter)
{
    struct rlimit rl;
    sigset_t all;
    int keep[4];
    keep[0] = s->lfd; keep[1] = s->stop_r; keep[2] = s->stop_w; keep[3] = watch_r;
    pool__mgr_close_fds_except(keep, 4);
    signal(SIGINT, SIG_IGN);   /* Ctrl-C goes to the starter; we follow it when it exits */
    signal(SIGPIPE, SIG_IGN);
    signal(SIGALRM, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max; /* serve many clients */
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    s->watch_fd = watch_r;
    s->starter_pid = starter;
    pool_mserver_run(s);
    pool__mgr_srv_free(s, 1);
    _exit(0);
}

POOL_DEF int pool_manager_start(pool_manager_t **out, const pool_manager_config *cfg)
{
    pool__mgr_srv *s;
    pool_manager_t *m = NULL;
    int rc, wp[2] = {-1, -1}, detached = cfg && cfg->detached;
    pid_t pid;
    long starter = (long)getpid();
    if (!out || (cfg && cfg->spin_us < -1)) return POOL_EINVAL;
    *out = NULL;
    rc = pool_mserver_create(&s, cfg);
    if (rc) return rc;
    rc = pool__mgr_mc_new(&m, s->path, cfg);
    if (rc) { pool__mgr_srv_free(s, 1); return rc; }
    if (!detached && pipe(wp) != 0) { pool__mgr_srv_free(s, 1); pool__mgr_mc_free(m); return POOL_ESYS; }
    if (!detached) { pool__mgr_set_fd_flags(wp[0], 0); pool__mgr_set_fd_flags(wp[1], 0); }
    pid = fork();
    if (pid < 0) {
        int e = errno;
        pool__mgr_srv_free(s, 1);
        pool__mgr_mc_free(m);
        if (wp[0] >= 0) { close(wp[0]); close(wp[1]); }
        errno = e;
        return POOL_ESYS;
    }
    if (pid == 0) {
        if (detached) {
            setsid();
            if (fork() != 0) _exit(0); /* the server is re-parented away from us */
            pool__mgr_server_child(s, -1, 0);
        }
        close(wp[1]);
        pool__mgr_server_child(s, wp[0], starter);
    }
    /* parent: the child owns the socket now */
    strcpy(m->dir, s->dir);
    s->owns_path = 0;
    pool__mgr_srv_free(s, 0);
    m->started = 1;
    m->detached = detached;
    if (detached) {
        int st;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR) { }
    } else {
        close(wp[0]);
        m->watch_w = wp[1];
        m->server_pid = (long)pid;
    }
    {
        pool__mgr_cconn *c;
        rc = pool__mgr_mc_get(m, &c);
        if (rc == POOL_OK) pool__mgr_mc_put(m, c, 1);
    }
    if (rc) {
        pool_manager_close(m);
        return rc;
    }
    *out = m;
    return POOL_OK;
}

POOL_DEF const char *pool_manager_address(const pool_manager_t *m) { return m ? m->address : ""; }

POOL_DEF long pool_manager_server_pid(const pool_manager_t *m)
{
    return m && !m->is_child ? m->server_pid : 0;
}

POOL_DEF int pool_manager_ping(pool_manager_t *m)
{
    if (!m) return POOL_EINVAL;
    return pool__mgr_call(m, POOL__MGR_OP_PING, 0, 0, 0, 0, 0, 0, NULL, 0, NULL, 0, NULL, 0, NULL, NULL);
}

/* Waits for our server process to exit: up to ms, then kills it. */
static void pool__mgr_reap_server(pool_manager_t *m, int ms)
{
    int st, i;
    pid_t pid = (pid_t)m->server_pid;
    if (pid <= 0) return;
    for (i = 0; i < ms; i++) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid || (r < 0 && errno == ECHILD)) { m->server_pid = 0; return; }
        pool__mgr_sleep_ms(1);
    }
    kill(pid, SIGKILL);
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) { }
    m->server_pid = 0;
}

POOL_DEF int pool_manager_shutdown(pool_manager_t *m)
{
    int rc, i;
    struct stat st;
    if (!m) return POOL_EINVAL;
    rc = pool__mgr_call(m, POOL__MGR_OP_SHUTDOWN, 0, 0, 0, 0, 0, 0, NULL, 0, NULL, 0, NULL, 0, NULL, NULL);
    if (rc != POOL_OK && rc != POOL_ECONN) return rc;
    shmq__store(&m->down, 1, SHMQ__RELEASE);
    if (m->started && !m->is_child && !m->detached) {
        pool__mgr_reap_server(m, 5000);
        /* a server killed before it could clean up: its files are ours to remove */
        unlink(m->address);
        if (m->dir[0]) rmdir(m->dir);
    } else {
        for (i = 0; i < 5000 && stat(m->address, &st) == 0; i++) pool__mgr_sleep_ms(1);
    }
    return rc;
}

POOL_DEF void pool_manager_close(pool_manager_t *m)
{
    if (!m) return;
    pool__mgr_reg_remove(m); /* first: no fork handler may see it half freed */
    if (m->started && !m->is_child && !m->detached && m->server_pid > 0) {
        if (!shmq__load(&m->down, SHMQ__ACQUIRE)) pool_manager_shutdown(m);
        pool__mgr_reap_server(m, 5000);
        unlink(m->address);
        if (m->dir[0]) rmdir(m->dir);
    }
    pool__mgr_mc_free(m);
}

/* ---- handles ---- */
static int pool__mgr_open(pool_manager_t *m, const char *name, uint8_t kind, int64_t param,
                          pool__mgr_handle **out)
{
    pool__mgr_handle *h;
    size_t nl;
    int64_t id = 0;
    int rc;
    if (!out) return POOL_EINVAL;
    *out = NULL;
    if (!m || !name) return POOL_EINVAL;
    nl = strlen(name);
    if (nl == 0) return POOL_EINVAL;
    if (nl > POOL__MGR_NAME_MAX) return POOL_ENAMETOOLONG;
    pthread_mutex_lock(&m->mu);
    for (h = m->handles; h; h = h->next)
        if (h->kind == kind && strcmp(h->name, name) == 0) break;
    pthread_mutex_unlock(&m->mu);
    if (h) { *out = h; return POOL_OK; }
    rc = pool__mgr_call(m, POOL__MGR_OP_OPEN, kind, 0, 0, 0, param, 1, name, nl, NULL, 0, NULL, 0, NULL, &id);
    if (rc) return rc;
    h = (pool__mgr_handle *)POOL__MGR_MALLOC(sizeof *h);
    if (!h) return POOL_ENOMEM;
    h->name = (char *)POOL__MGR_MALLOC(nl + 1);
    if (!h->name) { POOL__MGR_FREE(h); return POOL_ENOMEM; }
    memcpy(h->name, name, nl + 1);
    h->m = m;
    h->id = (uint32_t)id;
    h->kind = kind;
    pthread_mutex_lock(&m->mu);
    {
        pool__mgr_handle *x; /* another thread may have opened it meanwhile: one handle per name */
        for (x = m->handles; x; x = x->next)
            if (x->kind == kind && strcmp(x->name, name) == 0) break;
        if (x) {
            pthread_mutex_unlock(&m->mu);
            POOL__MGR_FREE(h->name);
            POOL__MGR_FREE(h);
            *out = x;
            return POOL_OK;
        }
    }
    h->next = m->handles;
    m->handles = h;
    pthread_mutex_unlock(&m->mu);
    *out = h;
    return POOL_OK;
}

#define POOL__MGR_H(x) ((pool__mgr_handle *)(void *)(x))

/* An op on a handle: no blobs out. */
static int pool__mgr_hop(void *x, uint8_t op, int timeout, uint32_t aux, int64_t num, int nblobs,
                     const void *b0, size_t l0, const void *b1, size_t l1, const void *b2, size_t l2,
                     int64_t *rnum)
{
    pool__mgr_handle *h = POOL__MGR_H(x);
    if (!h) return POOL_EINVAL;
    return pool__mgr_call(h->m, op, h->kind, h->id, timeout, aux, num, nblobs, b0, l0, b1, l1, b2, l2, NULL,
                          rnum);
}

/* An op on a handle whose answer is one byte string copied to buf. */
static int pool__mgr_hop_out(void *x, uint8_t op, int timeout, int64_t num, int nblobs, const void *b0,
                         size_t l0, void *buf, size_t cap, size_t *len)
{
    pool__mgr_handle *h = POOL__MGR_H(x);
    pool__mgr_outspec o;
    uint32_t aux = cap > 0xffffffffu ? 0xffffffffu : (uint32_t)cap;
    if (!h || (!buf && cap)) return POOL_EINVAL;
    o.buf = buf; o.cap = cap; o.len = len; o.server_checks_cap = 1;
    return pool__mgr_call(h->m, op, h->kind, h->id, timeout, aux, num, nblobs, b0, l0, NULL, 0, NULL, 0, &o,
                          NULL);
}

static int pool__mgr_key_ok(const void *key, size_t klen)
{
    if (!key || klen == 0) return POOL_EINVAL;
    return klen > POOL__MGR_KEY_MAX ? POOL_ENAMETOOLONG : POOL_OK;
}

#define POOL__MGR_BYTES_OK(p, n) ((p) != NULL || (n) == 0)

/* The typed constructors below: open (or create) name as kind, hand the handle
 * out as the caller's type. arg_ok: the kind's argument is valid. */
static int pool__mgr_open_as(pool_manager_t *m, const char *name, int kind, int64_t arg, int arg_ok,
                             void **out)
{
    pool__mgr_handle *h = NULL;
    int rc;
    *out = NULL;
    if (!arg_ok) return POOL_EINVAL;
    rc = pool__mgr_open(m, name, (uint8_t)kind, arg, &h);
    *out = h;
    return rc;
}

/* one constructor: the handle travels through a void * (no type punning) */
#define POOL__MGR_OPEN_AS(type, kind, arg, arg_ok)                                   \
    do {                                                                             \
        void *h_;                                                                    \
        int rc_;                                                                     \
        if (!out) return POOL_EINVAL;                                                \
        rc_ = pool__mgr_open_as(m, name, (kind), (arg), (arg_ok), &h_);              \
        *out = (type *)h_;                                                           \
        return rc_;                                                                  \
    } while (0)

POOL_DEF int pool_manager_dict(pool_manager_t *m, const char *name, pool_dict_t **out)
{ POOL__MGR_OPEN_AS(pool_dict_t, POOL__MGR_K_DICT, 0, 1); }

POOL_DEF int pool_manager_list(pool_manager_t *m, const char *name, pool_list_t **out)
{ POOL__MGR_OPEN_AS(pool_list_t, POOL__MGR_K_LIST, 0, 1); }

POOL_DEF int pool_manager_queue(pool_manager_t *m, const char *name, int64_t maxsize, pool_queue_t **out)
{ POOL__MGR_OPEN_AS(pool_queue_t, POOL__MGR_K_QUEUE, maxsize, maxsize >= 0); }

POOL_DEF int pool_manager_lock(pool_manager_t *m, const char *name, pool_lock_t **out)
{ POOL__MGR_OPEN_AS(pool_lock_t, POOL__MGR_K_LOCK, 0, 1); }

POOL_DEF int pool_manager_rlock(pool_manager_t *m, const char *name, pool_lock_t **out)
{ POOL__MGR_OPEN_AS(pool_lock_t, POOL__MGR_K_RLOCK, 0, 1); }

POOL_DEF int pool_manager_semaphore(pool_manager_t *m, const char *name, int64_t initial, int bounded,
                                    pool_sem_t **out)
{ POOL__MGR_OPEN_AS(pool_sem_t, bounded ? POOL__MGR_K_BSEM : POOL__MGR_K_SEM, initial, initial >= 0); }

POOL_DEF int pool_manager_event(pool_manager_t *m, const char *name, pool_event_t **out)
{ POOL__MGR_OPEN_AS(pool_event_t, POOL__MGR_K_EVENT, 0, 1); }

POOL_DEF int pool_manager_condition(pool_manager_t *m, const char *name, pool_cond_t **out)
{ POOL__MGR_OPEN_AS(pool_cond_t, POOL__MGR_K_COND, 0, 1); }

POOL_DEF int pool_manager_barrier(pool_manager_t *m, const char *name, int64_t parties, pool_barrier_t **out)
{ POOL__MGR_OPEN_AS(pool_barrier_t, POOL__MGR_K_BARRIER, parties, parties >= 1); }

POOL_DEF int pool_manager_value(pool_manager_t *m, const char *name, pool_value_t **out)
{ POOL__MGR_OPEN_AS(pool_value_t, POOL__MGR_K_VALUE, 0, 1); }


/* ---- dict ---- */
POOL_DEF int pool_dict_set(pool_dict_t *d, const void *key, size_t klen, const void *val, size_t vlen)
{
    int kc;
    if ((kc = pool__mgr_key_ok(key, klen)) != POOL_OK) return kc;
    if (!POOL__MGR_BYTES_OK(val, vlen)) return POOL_EINVAL;
    return pool__mgr_hop(d, POOL__MGR_OP_D_SET, 0, 0, 0, 2, key, klen, val, vlen, NULL, 0, NULL);
}

POOL_DEF int pool_dict_get(pool_dict_t *d, const void *key, size_t klen, void *buf, size_t cap, size_t *vlen)
{
    int kc;
    if ((kc = pool__mgr_key_ok(key, klen)) != POOL_OK) return kc;
    return pool__mgr_hop_out(d, POOL__MGR_OP_D_GET, 0, 0, 1, key, klen, buf, cap, vlen);
}

POOL_DEF int pool_dict_delete(pool_dict_t *d, const void *key, size_t klen)
{
    int kc;
    if ((kc = pool__mgr_key_ok(key, klen)) != POOL_OK) return kc;
    return pool__mgr_hop(d, POOL__MGR_OP_D_DEL, 0, 0, 0, 1, key, klen, NULL, 0, NULL, 0, NULL);
}

POOL_DEF int pool_dict_contains(pool_dict_t *d, const void *key, size_t klen)
{
    int kc;
    int64_t n = 0;
    int rc;
    if ((kc = pool__mgr_key_ok(key, klen)) != POOL_OK) return kc;
    rc = pool__mgr_hop(d, POOL__MGR_OP_D_HAS, 0, 0, 0, 1, key, klen, NULL, 0, NULL, 0, &n);
    return rc ? rc : (n != 0);
}

POOL_DEF int pool_dict_len(pool_dict_t *d, size_t *n)
{
    int64_t x = 0;
    int rc = pool__mgr_hop(d, POOL__MGR_OP_D_LEN, 0, 0, 0, 0, NULL, 0, NULL, 0, NULL, 0, &x);
    if (rc == POOL_OK && n) *n = (size_t)x;
    return rc;
}

POOL_DEF int pool_dict_clear(pool_dict_t *d)
{ return pool__mgr_hop(d, POOL__MGR_OP_D_CLEAR, 0, 0, 0, 0, NULL, 0, NULL, 0, NULL, 0, NULL); }

POOL_DEF int pool_dict_cas(pool_dict_t *d, const void *key, size_t klen, const void *expected, size_t elen,
                           const void *val, size_t vlen)
{
    int kc;
    if ((kc = pool__mgr_key_ok(key, klen)) != POOL_OK) return kc;
    if (!POOL__MGR_BYTES_OK(val, vlen) || (expected == NULL && elen != 0)) return POOL_EINVAL;
    return pool__mgr_hop(d, POOL__MGR_OP_D_CAS, 0, expected ? 0 : 1, 0, 3, key, klen, expected, elen, val,
                         vlen, NULL);
}

POOL_DEF int pool_dict_add(pool_dict_t *d, const void *key, size_t klen, int64_t delta, int64_t *result)
{
    int kc;
    if ((kc = pool__mgr_key_ok(key, klen)) != POOL_OK) return kc;
    return pool__mgr_hop(d, POOL__MGR_OP_D_ADD, 0, 0, delta, 1, key, klen, NULL, 0, NULL, 0, result);
}

POOL_DEF int pool_dict_iter(pool_dict_t *d, pool_dict_item_fn fn, void *user)
{
    pool__mgr_handle *h = POOL__MGR_H(d);
    int64_t cursor = 0;
    if (!h || !fn) return POOL_EINVAL;
    for (;;) {
        pool__mgr_cconn *c;
        pool__mgr_rd r;
        pool__mgr_res_t res;
        uint32_t i;
        int rc = pool__mgr_mc_get(h->m, &c), stop = 0;
        if (rc) return rc;
        if ((rc = pool__mgr_req_begin(&c->b, 1, pool__mgr_thread_token())) ||
            (rc = pool__mgr_req_op(&c->b, POOL__MGR_OP_D_ITER, h->kind, h->id, 0, 0, cursor, 0))) {
            pool__mgr_mc_put(h->m, c, 1);
            return rc;
        }
        rc = pool__mgr_roundtrip(h->m, c, &c->b, 1, &r);
        if (rc == POOL_OK) rc = pool__mgr_rd_res(&r, &res);
        if (rc) { pool__mgr_mc_put(h->m, c, 0); return rc; }
        if (res.code) { pool__mgr_mc_put(h->m, c, 1); return res.code; }
        /* walk the pairs (the reply was checked by pool__mgr_rd_res) */
        r.p = c->b.p + 8 + POOL__MGR_RES_HDR;
        for (i = 0; i + 1 < res.nblobs && !stop; i += 2) {
            const uint8_t *k = r.p + 4, *v;
            uint32_t kl = pool__mgr_get32(r.p), vl;
            r.p += 4 + (size_t)kl;
            vl = pool__mgr_get32(r.p);
            v = r.p + 4;
            r.p += 4 + (size_t)vl;
            stop = fn(k, kl, v, vl, user);
        }
        pool__mgr_mc_put(h->m, c, 1);
        if (stop) return stop;
        if (res.num < 0) return POOL_OK;
        cursor = res.num;
    }
}

/* ---- list ---- */
POOL_DEF int pool_list_append(pool_list_t *l, const void *val, size_t len)
{
    if (!POOL__MGR_BYTES_OK(val, len)) return POOL_EINVAL;
    return pool__mgr_hop(l, POOL__MGR_OP_L_APPEND, 0, 0, 0, 1, val, len, NULL, 0, NULL, 0, NULL);
}
POOL_DEF int pool_list_get(pool_list_t *l, int64_t index, void *buf, size_t cap, size_t *len)
{ return pool__mgr_hop_out(l, POOL__MGR_OP_L_GET, 0, index, 0, NULL, 0, buf, cap, len); }
POOL_DEF int pool_list_set(pool_list_t *l, int64_t index, const void *val, size_t len)
{
    if (!POOL__MGR_BYTES_OK(val, len)) return POOL_EINVAL;
    return pool__mgr_hop(l, POOL__MGR_OP_L_SET, 0, 0, index, 1, val, len, NULL, 0, NULL, 0, NULL);
}
POOL_DEF int pool_list_pop(pool_list_t *l, int64_t index, void *buf, size_t cap, size_t *len)
{ return pool__mgr_hop_out(l, POOL__MGR_OP_L_POP, 0, index, 0, NULL, 0, buf, cap, len); }
POOL_DEF int pool_list_len(pool_list_t *l, size_t *n)
{
    int64_t x = 0;
    int rc = pool__mgr_hop(l, POOL__MGR_OP_L_LEN, 0, 0, 0, 0, NULL, 0, NULL, 0, NULL, 0, &x);
    if (rc == POOL_OK && n) *n = (size_t)x;
    return rc;
}

/* ---- queue ---- */
POOL_DEF int pool_queue_put(pool_queue_t *q, const void *data, size_t len, int timeout_ms)
{
    if (!POOL__MGR_BYTES_OK(data, len)) return POOL_EINVAL;
    return pool__mgr_hop(q, POOL__MGR_OP_Q_PUT, timeout_ms, 0, 0, 1, data, len, NULL, 0, NULL, 0, NULL);
}
POOL_DEF int pool_queue_get(pool_queue_t *q, void *buf, size_t cap, size_t *len, int timeout_ms)
{ return pool__mgr_hop_out(q, POOL__MGR_OP_Q_GET, timeout_ms, 0, 0, NULL, 0, buf, cap, len); }
POOL_DEF int pool_queue_size(pool_queue_t *q, size_t *n)
{
    int64_t x = 0;
    int rc = pool__mgr_hop(q, POOL__MGR_OP_Q_SIZE, 0, 0, 0, 0, NULL, 0, NULL, 0, NULL, 0, &x);
    if (rc == POOL_OK && n) *n = (size_t)x;
    return rc;
}
POOL_DEF int pool_queue_task_done(pool_queue_t *q)
{ return pool__mgr_hop(q, POOL__MGR_OP_Q_DONE, 0, 0, 0, 0, NULL, 0, NULL, 0, NULL, 0, NULL); }
POOL_DEF int pool_queue_join(pool_queue_t *q, int timeout_ms)
{ return pool__mgr_hop(q, POOL__MGR_OP_Q_JOIN, timeout_ms, 0, 0, 0, NULL, 0, NULL, 0, NULL, 0, NULL); }

/* ---- lock, semaphore, event, condition, barrier ---- */
POOL_DEF int pool_lock_acquire(pool_lock_t *l, int timeout_ms)
{ return pool__mgr_hop(l, POOL__MGR_OP_K_ACQ, timeout_ms, 0, 0, 0, NULL, 0, NULL, 0, NULL, 0, NULL); }
POOL_DEF int pool_lock_release(pool_lock_t *l)
{ return pool__mgr_hop(l, POOL__MGR_OP_K_REL, 0, 0, 0, 0, NULL, 0, NULL, 0, NULL, 0, NULL); }
POOL_DEF int pool_sem_acquire(pool_sem_t *s, int timeout_ms)
{ return pool__mgr_hop(s, POOL__MGR_OP_S_ACQ, timeout_ms, 0, 0, 0, NULL, 0, NULL, 0, NULL, 0, NULL); }
POOL_DEF int pool_sem_release(pool_sem_t *s)
{ return pool__mgr_hop(s, POOL__MGR_OP_S_REL, 0, 0, 0, 0, NULL, 0, NULL, 0, NULL, 0, NULL); }
POOL_DEF int pool_sem_value(pool_sem_t *s, int64_t *value)
{ return pool__mgr_hop(s, POOL__MGR_OP_S_VAL, 0, 0, 0, 0, NULL, 0, NULL, 0, NULL, 0, value); }
POOL_DEF int pool_event_set(pool_event_t *e)
{ return pool__mgr_hop(e, POOL__MGR_OP_E_SET, 0, 0, 0, 0, NULL, 0, NULL, 0, NULL, 0, NULL); }
POOL_DEF int pool_event_clear(pool_event_t *e)
{ return pool__mgr_hop(e, POOL__MGR_OP_E_CLEAR, 0, 0, 0, 0, NULL, 0, NULL, 0, NULL, 0, NULL); }
POOL_DEF int pool_event_is_set(pool_event_t *e)
{
    int64_t x = 0;
    int rc = pool__mgr_hop(e, POOL__MGR_OP_E_ISSET, 0, 0, 0, 0, NULL, 0, NULL, 0, NULL, 0, &x);
    return rc ? rc : (x != 0);
}
POOL_DEF int pool_event_wait(pool_event_t *e, int timeout_ms)
{ return pool__mgr_hop(e, POOL__MGR_OP_E_WAIT, timeout_ms, 0, 0, 0, NULL, 0, NULL, 0, NULL, 0, NULL); }
POOL_DEF int pool_cond_acquire(pool_cond_t *c, int timeout_ms)
{ return pool__mgr_hop(c, POOL__MGR_OP_C_ACQ, timeout_ms, 0, 0, 0, NULL, 0, NULL, 0, NULL, 0, NULL); }
POOL_DEF int pool_cond_release(pool_cond_t *c)
{ return pool__mgr_hop(c, POOL__MGR_OP_C_REL, 0, 0, 0, 0, NULL, 0, NULL, 0, NULL, 0, NULL); }
POOL_DEF int pool_cond_wait(pool_cond_t *c, int timeout_ms)
{ return pool__mgr_hop(c, POOL__MGR_OP_C_WAIT, timeout_ms, 0, 0, 0, NULL, 0, NULL, 0, NULL, 0, NULL); }
POOL_DEF int pool_cond_notify(pool_cond_t *c, int n)
{ return pool__mgr_hop(c, POOL__MGR_OP_C_NOTIFY, 0, 0, n, 0, NULL, 0, NULL, 0, NULL, 0, NULL); }
POOL_DEF int pool_cond_notify_all(pool_cond_t *c) { return pool_cond_notify(c, -1); }
POOL_DEF int pool_barrier_wait(pool_barrier_t *b, int timeout_ms, int64_t *index)
{ return pool__mgr_hop(b, POOL__MGR_OP_B_WAIT, timeout_ms, 0, 0, 0, NULL, 0, NULL, 0, NULL, 0, index); }
POOL_DEF int pool_barrier_reset(pool_barrier_t *b)
{ return pool__mgr_hop(b, POOL__MGR_OP_B_RESET, 0, 0, 0, 0, NULL, 0, NULL, 0, NULL, 0, NULL); }
POOL_DEF int pool_barrier_abort(pool_barrier_t *b)
{ return pool__mgr_hop(b, POOL__MGR_OP_B_ABORT, 0, 0, 0, 0, NULL, 0, NULL, 0, NULL, 0, NULL); }

/* ---- value ---- */
POOL_DEF int pool_value_set_int(pool_value_t *v, int64_t x)
{
    uint8_t b[8];
    pool__mgr_put64(b, (uint64_t)x);
    return pool__mgr_hop(v, POOL__MGR_OP_V_SET, 0, 0, 0, 1, b, 8, NULL, 0, NULL, 0, NULL);
}
POOL_DEF int pool_value_get_int(pool_value_t *v, int64_t *x)
{
    uint8_t b[8];
    size_t n = 0;
    int rc = pool__mgr_hop_out(v, POOL__MGR_OP_V_GET, 0, 0, 0, NULL, 0, b, sizeof b, &n);
    if (rc == POOL_ENOSPC || (rc == POOL_OK && n != 8)) return POOL_EINVAL;
    if (rc == POOL_OK && x) *x = (int64_t)pool__mgr_get64(b);
    return rc;
}
POOL_DEF int pool_value_add(pool_value_t *v, int64_t delta, int64_t *result)
{ return pool__mgr_hop(v, POOL__MGR_OP_V_ADD, 0, 0, delta, 0, NULL, 0, NULL, 0, NULL, 0, result); }
POOL_DEF int pool_value_set(pool_value_t *v, const void *data, size_t len)
{
    if (!POOL__MGR_BYTES_OK(data, len)) return POOL_EINVAL;
    return pool__mgr_hop(v, POOL__MGR_OP_V_SET, 0, 0, 0, 1, data, len, NULL, 0, NULL, 0, NULL);
}
POOL_DEF int pool_value_get(pool_value_t *v, void *buf, size_t cap, size_t *len)
{ return pool__mgr_hop_out(v, POOL__MGR_OP_V_GET, 0, 0, 0, NULL, 0, buf, cap, len); }
POOL_DEF int pool_value_cas(pool_value_t *v, const void *expected, size_t elen, const void *val, size_t vlen)
{
    if (!POOL__MGR_BYTES_OK(expected, elen) || !POOL__MGR_BYTES_OK(val, vlen)) return POOL_EINVAL;
    return pool__mgr_hop(v, POOL__MGR_OP_V_CAS, 0, 0, 0, 2, expected, elen, val, vlen, NULL, 0, NULL);
}

/* ---- batch ---- */
typedef struct pool__mgr_bout {
    void *buf;
    size_t cap;
    size_t *len;
    int64_t *result;
    int *rc;
} pool__mgr_bout;

struct pool_batch_s {
    pool_manager_t *m;
    pool__mgr_buf req;
    pool__mgr_bout *outs;
    size_t n, cap;
};

POOL_DEF int pool_batch_create(pool_manager_t *m, pool_batch_t **out)
{
    pool_batch_t *b;
    if (!out) return POOL_EINVAL;
    *out = NULL;
    if (!m) return POOL_EINVAL;
    b = (pool_batch_t *)POOL__MGR_MALLOC(sizeof *b);
    if (!b) return POOL_ENOMEM;
    memset(b, 0, sizeof *b);
    b->m = m;
    *out = b;
    return POOL_OK;
}

POOL_DEF void pool_batch_free(pool_batch_t *b)
{
    if (!b) return;
    pool__mgr_buf_free(&b->req);
    POOL__MGR_FREE(b->outs);
    POOL__MGR_FREE(b);
}

POOL_DEF size_t pool_batch_count(const pool_batch_t *b) { return b ? b->n : 0; }

/* Records one op; on any failure the batch is left as it was. */
static int pool__mgr_batch_add(pool_batch_t *b, void *x, uint8_t op, int64_t num, int nblobs,
                           const void *b0, size_t l0, const void *b1, size_t l1, pool__mgr_bout o)
{
    pool__mgr_handle *h = POOL__MGR_H(x);
    size_t mark = b ? b->req.n : 0;
    int rc;
    if (!b || !h || h->m != b->m) return POOL_EINVAL;
    if (b->n >= 65535) return POOL_ETOOBIG;
    if (b->n == b->cap) {
        size_t nc = b->cap ? b->cap * 2 : 16;
        pool__mgr_bout *no = (pool__mgr_bout *)POOL__MGR_REALLOC(b->outs, sizeof *no * nc);
        if (!no) return POOL_ENOMEM;
        b->outs = no;
        b->cap = nc;
    }
    if (b->n == 0 && (rc = pool__mgr_req_begin(&b->req, 0, 0))) return rc;
    if (b->n == 0) mark = b->req.n;
    if ((rc = pool__mgr_req_op(&b->req, op, h->kind, h->id, 0,
                               o.cap > 0xffffffffu ? 0xffffffffu : (uint32_t)o.cap, num,
                               (uint16_t)nblobs)) ||
        (nblobs > 0 && (rc = pool__mgr_req_blob(&b->req, b0, l0))) ||
        (nblobs > 1 && (rc = pool__mgr_req_blob(&b->req, b1, l1)))) {
        b->req.n = mark;
        return rc;
    }
    if (b->req.n - 4 > b->m->max_frame) { b->req.n = mark; return POOL_ETOOBIG; }
    b->outs[b->n++] = o;
    return POOL_OK;
}

static pool__mgr_bout pool__mgr_bo(void *buf, size_t cap, size_t *len, int64_t *result, int *rc)
{
    pool__mgr_bout o;
    o.buf = buf; o.cap = cap; o.len = len; o.result = result; o.rc = rc;
    return o;
}

POOL_DEF int pool_batch_dict_set(pool_batch_t *b, pool_dict_t *d, const void *key, size_t klen,
                                 const void *val, size_t vlen, int *rc)
{
    int kc;
    if ((kc = pool__mgr_key_ok(key, klen)) != POOL_OK) return kc;
    if (!POOL__MGR_BYTES_OK(val, vlen)) return POOL_EINVAL;
    return pool__mgr_batch_add(b, d, POOL__MGR_OP_D_SET, 0, 2, key, klen, val, vlen,
                               pool__mgr_bo(NULL, 0, NULL, NULL, rc));
}
POOL_DEF int pool_batch_dict_get(pool_batch_t *b, pool_dict_t *d, const void *key, size_t klen,
                                 void *buf, size_t cap, size_t *vlen, int *rc)
{
    int kc;
    if ((kc = pool__mgr_key_ok(key, klen)) != POOL_OK) return kc;
    if (!buf && cap) return POOL_EINVAL;
    return pool__mgr_batch_add(b, d, POOL__MGR_OP_D_GET, 0, 1, key, klen, NULL, 0,
                               pool__mgr_bo(buf, cap, vlen, NULL, rc));
}
POOL_DEF int pool_batch_dict_delete(pool_batch_t *b, pool_dict_t *d, const void *key, size_t klen, int *rc)
{
    int kc;
    if ((kc = pool__mgr_key_ok(key, klen)) != POOL_OK) return kc;
    return pool__mgr_batch_add(b, d, POOL__MGR_OP_D_DEL, 0, 1, key, klen, NULL, 0,
                               pool__mgr_bo(NULL, 0, NULL, NULL, rc));
}
POOL_DEF int pool_batch_dict_add(pool_batch_t *b, pool_dict_t *d, const void *key, size_t klen,
                                 int64_t delta, int64_t *result, int *rc)
{
    int kc;
    if ((kc = pool__mgr_key_ok(key, klen)) != POOL_OK) return kc;
    return pool__mgr_batch_add(b, d, POOL__MGR_OP_D_ADD, delta, 1, key, klen, NULL, 0,
                               pool__mgr_bo(NULL, 0, NULL, result, rc));
}
POOL_DEF int pool_batch_list_append(pool_batch_t *b, pool_list_t *l, const void *val, size_t len, int *rc)
{
    if (!POOL__MGR_BYTES_OK(val, len)) return POOL_EINVAL;
    return pool__mgr_batch_add(b, l, POOL__MGR_OP_L_APPEND, 0, 1, val, len, NULL, 0,
                               pool__mgr_bo(NULL, 0, NULL, NULL, rc));
}
POOL_DEF int pool_batch_queue_put(pool_batch_t *b, pool_queue_t *q, const void *data, size_t len, int *rc)
{
    if (!POOL__MGR_BYTES_OK(data, len)) return POOL_EINVAL;
    return pool__mgr_batch_add(b, q, POOL__MGR_OP_Q_PUT, 0, 1, data, len, NULL, 0,
                               pool__mgr_bo(NULL, 0, NULL, NULL, rc));
}
POOL_DEF int pool_batch_value_add(pool_batch_t *b, pool_value_t *v, int64_t delta, int64_t *result, int *rc)
{
    return pool__mgr_batch_add(b, v, POOL__MGR_OP_V_ADD, delta, 0, NULL, 0, NULL, 0,
                               pool__mgr_bo(NULL, 0, NULL, result, rc));
}

POOL_DEF int pool_batch_run(pool_batch_t *b)
{
    pool__mgr_cconn *c;
    pool__mgr_rd r;
    size_t i;
    int rc, first = POOL_OK;
    if (!b) return POOL_EINVAL;
    if (b->n == 0) return POOL_OK;
    pool__mgr_put16(b->req.p + 6, (uint16_t)b->n);
    pool__mgr_put64(b->req.p + 8, pool__mgr_thread_token());
    rc = pool__mgr_mc_get(b->m, &c);
    if (rc == POOL_OK) {
        rc = pool__mgr_roundtrip(b->m, c, &b->req, (uint16_t)b->n, &r);
        if (rc) pool__mgr_mc_put(b->m, c, 0);
    }
    if (rc) {
        for (i = 0; i < b->n; i++) if (b->outs[i].rc) *b->outs[i].rc = rc;
        b->n = 0;
        return rc;
    }
    for (i = 0; i < b->n; i++) {
        pool__mgr_res_t res;
        pool__mgr_bout *o = &b->outs[i];
        int code;
        if (pool__mgr_rd_res(&r, &res)) { first = first ? first : POOL_EPROTO; code = POOL_EPROTO; }
        else {
            code = res.code;
            if (o->result && code == POOL_OK) *o->result = res.num;
            if (o->buf || o->len) {
                if (code == POOL_OK && res.nblobs >= 1) {
                    if (o->len) *o->len = res.blen;
                    if (res.blen > o->cap) code = POOL_ENOSPC;
                    else if (res.blen) memcpy(o->buf, res.blob, res.blen);
                }
            }
        }
        if (o->rc) *o->rc = code;
        if (code && !first) first = code;
    }
    pool__mgr_mc_put(b->m, c, first != POOL_EPROTO);
    b->n = 0;
    return first;
}
/* <<manager */

#endif /* POOL__IMPLEMENTATION_DONE */
#endif /* POOL_IMPLEMENTATION */
