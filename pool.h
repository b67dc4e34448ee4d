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
 *   of that pool (POOL_EINWORKER / no-op), and one iterator is read by one thread at a
 *   time. Callbacks (progress, on_done, initializer, finalizer) never run under a
 *   lock of the pool, so they may call the pool.
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
 *     further futures wait in the parent, in order. A map is cut into at most 256
 *     chunks.
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
    int spin_us;               /* how long an idle worker spins before it sleeps (default 50 us; -1: never spin) */
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
#ifdef POOL__DEV_MANAGER /* temporary, while the Manager is developed in dev/ */
#include "dev/manager_iface.h"
#endif

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
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#if SHMQ__LINUX
#include <sys/prctl.h>
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
 * One run queue per pool: a doubly linked FIFO of items under `mu`. An item is
 * either a future (one apply_async call) or a job (one map, imap or parallel_for
 * call, cut into chunks). A job stays in the queue while it has chunks to claim:
 * each claim takes `mu` once and hands out the next chunk, so chunks are claimed
 * in increasing order; a job leaves the queue when its last chunk is claimed, when
 * it stops after a failure, or (imap) while all its result slots are full.
 *
 * LOCK ORDER: pool.mu, then nothing (user code never runs under a pool lock).
 * The future free list is a Treiber stack: pushes (pool_future_free, from any
 * thread) are a CAS, pops happen only under mu, so no two pops race and the ABA
 * problem cannot arise.
 *
 * Wake-ups: a submitter signals work_cv only if a worker sleeps (`sleepers`, under
 * mu); an idle worker first spins for cfg.spin_us watching `qlen`, so bursts of
 * work never pay for a futex wake. A future is completed without mu: the runner
 * publishes state DONE (seq_cst) and then looks at `done_waiters` (seq_cst); a
 * waiter raises done_waiters before its last look at the state, under mu, so one of
 * the two sees the other (no lost wake-up), and the runner broadcasts done_cv under
 * mu only when somebody waits.
 *
 * Futures are reference counted: one reference for the user (dropped by
 * pool_future_free) and one for the run queue (dropped by whoever runs or cancels
 * it). They are recycled through a free list, so apply_async does not allocate in
 * the steady state, and a submission takes mu once. A future outlives its pool:
 * pool_destroy leaves the pool's core to the last pool_future_free (`live` counts
 * futures handed out; its top bit says the pool was destroyed; whoever brings it
 * to "destroyed and zero" frees the core).
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
enum { POOL__CB_NONE = 0, POOL__CB_SET = 1, POOL__CB_FIRED = 2 };
enum { POOL__OPEN = 0, POOL__CLOSED = 1, POOL__TERMINATED = 2 };
enum { POOL__JOB_MAP = 1, POOL__JOB_FOR = 2, POOL__JOB_IMAP = 3 };
enum { POOL__SLOT_FREE = 0, POOL__SLOT_RUNNING = 1, POOL__SLOT_DONE = 2 };

#define POOL__INLINE 64 /* bytes of argument + result kept inside a future */
#define POOL__FREE_MAX 4096 /* futures kept for reuse at most */
#define POOL__BATCH 8       /* futures a worker takes at once from a long queue */
#define POOL__WAIT_SPIN_US 20 /* a waiter spins this long before it sleeps */
#define POOL__RELEASED ((uint64_t)1 << 63)
#define POOL__ALIGN 16

typedef struct pool__item {
    struct pool__item *next, *prev; /* run queue links, under pool.mu */
    int type;                       /* POOL__ITEM_*; fixed */
    int queued;                     /* under pool.mu: linked in the run queue */
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
    /* under pool.mu: */
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
    pool__item *head, *tail;
    int sleepers;
    int state;                /* POOL__OPEN / CLOSED / TERMINATED; atomic reads */
    int joined;
    int init_done, init_failed, go;
    /* atomic: */
    uint64_t qlen;            /* items in the run queue (written under mu) */
    uint32_t done_waiters;    /* threads waiting on done_cv for a future */
    uint64_t st_submitted, st_completed, st_failed, st_cancelled;
    /* the future free list: */
    pool_future_t *free_top;  /* atomic; popped only under mu */
    uint32_t nfree;           /* atomic, approximate: bounds the list */
    uint64_t live;            /* atomic: futures handed out | POOL__RELEASED */
    pool__worker *workers;
    struct pool__proc *proc;  /* the process pool's parts, NULL for threads; fixed */
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
 * process holding it exits. Only the parent allocates from it.
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
    uint32_t done;     /* atomic: 0 -> 1 once every chunk is done or cancelled */
    uint32_t nchunks;
    uint64_t fn, ctx;  /* function pointer and context, as integers */
    uint64_t in, out, codes; /* arena addresses (codes: per-element codes for imap, or 0) */
    uint64_t in_size, out_size;
    int64_t begin, end, chunk;
    int64_t pad[3];
    pool__pchunk chunks[POOL__MAXCH];
} pool__pslot;

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
    uint64_t ring_head;       /* atomic: advanced by whoever passes a spent entry */
    uint64_t ring_tail;       /* atomic: the parent publishes */
    uint64_t ring[POOL__RING];/* (gen << 32) | slot */
} pool__arena_hdr;

typedef struct pool__blk { uint64_t cls; uint64_t magic; } pool__blk; /* before each arena block */
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
    /* the allocator, parent only, under amu: */
    pthread_mutex_t amu;
    size_t size;              /* bytes backed by the file */
    size_t top;               /* bump offset */
    unsigned char *freel[64]; /* free blocks by size class (log2) */
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

/* >>impl-queue: run queue helpers, all under pool.mu */
static void pool__enqueue(pool_t *p, pool__item *it)
{
    it->next = NULL;
    it->prev = p->tail;
    if (p->tail) p->tail->next = it;
    else p->head = it;
    p->tail = it;
    it->queued = 1;
    shmq__store(&p->qlen, p->qlen + 1, SHMQ__RELAXED);
}

static void pool__unlink(pool_t *p, pool__item *it)
{
    if (it->prev) it->prev->next = it->next;
    else p->head = it->next;
    if (it->next) it->next->prev = it->prev;
    else p->tail = it->prev;
    it->next = it->prev = NULL;
    it->queued = 0;
    shmq__store(&p->qlen, p->qlen - 1, SHMQ__RELAXED);
}

static void pool__wake_workers(pool_t *p, uint64_t n)
{
    if (p->sleepers == 0 || n == 0) return;
    if (n > 1) pthread_cond_broadcast(&p->work_cv);
    else pthread_cond_signal(&p->work_cv);
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
    *chunk = j->next++;
    *slot = s;
    if (j->next >= j->nchunks || (j->kind == POOL__JOB_IMAP && j->free_slots == 0))
        if (j->item.queued) pool__unlink(p, &j->item);
    return 1;
}

/* What a worker takes from the head of the queue. */
typedef struct pool__take {
    pool__item *item;
    uint64_t chunk;
    size_t slot;
} pool__take;

/* Takes the next runnable thing: a future (removed from the queue; its queue
 * reference passes to the taker) or a chunk of a job. Under mu. */
static int pool__take_any(pool_t *p, pool__take *t)
{
    while (p->head) {
        pool__item *it = p->head;
        if (it->type == POOL__ITEM_FUTURE) {
            pool__unlink(p, it);
            t->item = it;
            return 1;
        }
        if (pool__claim_chunk(p, (pool__job *)it, &t->chunk, &t->slot)) {
            t->item = it;
            return 1;
        }
        /* the job left the queue: look at the next item */
    }
    return 0;
}

/* >>impl-futures */
static void pool__core_free(pool_t *p);

/* Pops a recycled future; under mu. */
static pool_future_t *pool__free_pop(pool_t *p)
{
    pool_future_t *top = shmq__load(&p->free_top, SHMQ__ACQUIRE);
    uint32_t n;
    while (top && !shmq__cas(&p->free_top, &top, top->free_next)) {}
    n = shmq__load(&p->nfree, SHMQ__RELAXED);
    if (top && n > 0) shmq__store(&p->nfree, n - 1, SHMQ__RELAXED);
    return top;
}

static void pool__free_push(pool_t *p, pool_future_t *f)
{
    pool_future_t *top = shmq__load(&p->free_top, SHMQ__RELAXED);
    /* an approximate count (no read-modify-write): it only bounds the list */
    shmq__store(&p->nfree, shmq__load(&p->nfree, SHMQ__RELAXED) + 1, SHMQ__RELAXED);
    do {
        f->free_next = top;
    } while (!shmq__cas(&p->free_top, &top, f));
}

/* A future with room for `need` bytes of argument and result: recycled if one is
 * free, else allocated. With `locked` (the caller holds mu) it only recycles, never
 * allocates, and returns NULL when that is not enough. */
static pool_future_t *pool__future_alloc(pool_t *p, size_t need, int locked)
{
    pool_future_t *f = NULL;
    if (locked) {
        f = pool__free_pop(p);
        if (!f) return NULL;
        if (need > POOL__INLINE && f->heap_cap < need) {
            pool__free_push(p, f);
            return NULL;
        }
    } else {
        pthread_mutex_lock(&p->mu);
        f = pool__free_pop(p);
        pthread_mutex_unlock(&p->mu);
        if (!f) {
            f = (pool_future_t *)POOL_MALLOC(sizeof *f);
            if (!f) return NULL;
            f->heap = NULL;
            f->heap_cap = 0;
        }
        if (need > POOL__INLINE && f->heap_cap < need) {
            unsigned char *h = (unsigned char *)POOL_REALLOC(f->heap, need);
            if (!h) {
                POOL_FREE(f->heap);
                POOL_FREE(f);
                return NULL;
            }
            f->heap = h;
            f->heap_cap = need;
        }
    }
    shmq__fetch_add(&p->live, 1u, SHMQ__RELAXED);
    f->pool = p;
    f->item.type = POOL__ITEM_FUTURE;
    f->item.queued = 0;
    f->item.next = f->item.prev = NULL;
    f->arg = need <= POOL__INLINE ? f->inl.bytes : f->heap;
    return f;
}

/* Drops one reference; the last one recycles the future (and frees the pool's
 * core if the pool was destroyed and this was its last future). */
static void pool__future_unref(pool_future_t *f)
{
    pool_t *p = f->pool;
    if (shmq__fetch_sub(&f->refs, 1u, SHMQ__ACQ_REL) != 1) return;
    if (f->heap && f->heap_cap > 4096) { /* do not hoard big buffers */
        POOL_FREE(f->heap);
        f->heap = NULL;
        f->heap_cap = 0;
    }
    /* recycle before giving up `live`: the core may go as soon as live says so */
    if (shmq__load(&p->nfree, SHMQ__RELAXED) < POOL__FREE_MAX) {
        pool__free_push(p, f);
    } else {
        POOL_FREE(f->heap);
        POOL_FREE(f);
    }
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

/* Runs a future this thread has claimed (state RUNNING). */
static void pool__future_run(pool_future_t *f)
{
    int code = f->fn(f->arg, f->result, f->ctx);
    pool__count(f->pool, code);
    pool__future_complete(f, code, 0);
}

/* A future taken off the queue: run it unless it was cancelled meanwhile; drops
 * the queue reference. */
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
        for (i = b; i < e; i++) {
            code = j->fn(j->in + (size_t)i * j->in_size,
                         j->out ? j->out + (size_t)i * j->out_size : NULL, j->ctx);
            ran++;
            /* a claimed chunk runs to its own first failure even when another chunk
             * failed: so the lowest failing index is the one a sequential loop finds */
            if (code) { fail_at = i; break; }
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
    j->finished++;
    if (j->waiting) pthread_cond_broadcast(&p->done_cv);
    pthread_mutex_unlock(&p->mu);
}

static void pool__run_taken(pool_t *p, pool__take *t)
{
    if (t->item->type == POOL__ITEM_FUTURE) pool__future_take_and_run((pool_future_t *)t->item);
    else pool__job_run_chunk(p, (pool__job *)t->item, t->chunk, t->slot);
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

/* Spins up to spin_us waiting for work or a state change; returns with mu held. */
static void pool__spin_for_work(pool_t *p)
{
    double until;
    int n = 0;
    if (p->cfg.spin_us <= 0) return;
    pthread_mutex_unlock(&p->mu);
    until = pool__now_ms() + p->cfg.spin_us / 1000.0;
    while (shmq__load(&p->qlen, SHMQ__RELAXED) == 0 &&
           shmq__load(&p->state, SHMQ__RELAXED) == POOL__OPEN) {
        shmq__cpu_relax();
        if ((++n & 63) == 0 && pool__now_ms() > until) break;
    }
    pthread_mutex_lock(&p->mu);
}

static void *pool__worker_main(void *arg)
{
    pool__worker *w = (pool__worker *)arg;
    pool_t *p = w->pool;
    int rc = 0;
    pool__take t;
    pool__self = w;
    pool__set_thread_name(p->cfg.name, w->index);
    if (p->cfg.initializer) rc = p->cfg.initializer(w->index, p->cfg.init_ctx);
    pthread_mutex_lock(&p->mu);
    p->init_done++;
    if (rc) p->init_failed = 1;
    pthread_cond_broadcast(&p->done_cv);
    while (!p->go) pthread_cond_wait(&p->work_cv, &p->mu);
    for (;;) {
        if (pool__take_any(p, &t)) {
            /* with a backlog of futures, take a few more under the same lock */
            pool__item *batch[POOL__BATCH];
            int nb = 0, k;
            if (t.item->type == POOL__ITEM_FUTURE) {
                uint64_t extra = p->qlen / (uint64_t)(p->nworkers + 1);
                while (nb < POOL__BATCH && (uint64_t)nb < extra && p->head &&
                       p->head->type == POOL__ITEM_FUTURE) {
                    batch[nb] = p->head;
                    pool__unlink(p, batch[nb++]);
                }
            }
            pthread_mutex_unlock(&p->mu);
            pool__run_taken(p, &t);
            for (k = 0; k < nb; k++) pool__future_take_and_run((pool_future_t *)batch[k]);
            pthread_mutex_lock(&p->mu);
            continue;
        }
        if (p->state != POOL__OPEN) break;
        pool__spin_for_work(p);
        if (p->head || p->state != POOL__OPEN) continue;
        p->sleepers++;
        pthread_cond_wait(&p->work_cv, &p->mu);
        p->sleepers--;
    }
    pthread_mutex_unlock(&p->mu);
    if (p->cfg.finalizer && !p->init_failed) p->cfg.finalizer(w->index, p->cfg.init_ctx);
    pool__self = NULL;
    return NULL;
}

/* >>impl-create */
static int pool__online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static void pool__core_free(pool_t *p)
{
    pool_future_t *f = p->free_top;
    while (f) {
        pool_future_t *next = f->free_next;
        POOL_FREE(f->heap);
        POOL_FREE(f);
        f = next;
    }
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
    if (p->proc) {
        if (shmq__load(&p->proc->monitor_started, SHMQ__ACQUIRE)) {
            pool__proc_poke(p);
            pthread_join(p->proc->monitor, NULL);
            shmq__store(&p->proc->monitor_started, 0, SHMQ__RELEASE);
        }
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
    if (!c.name || !c.name[0]) c.name = "pool";
    if (c.progress_interval_ms == 0) c.progress_interval_ms = 100;
    if (c.spin_us == 0) c.spin_us = 50;
    pthread_once(&pool__atfork_once, pool__atfork_register);

    p = (pool_t *)POOL_MALLOC(sizeof *p);
    if (!p) return POOL_ENOMEM;
    memset(p, 0, sizeof *p);
    p->cfg = c;
    p->nworkers = c.workers;
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
    while (shmq__load(&p->qlen, SHMQ__RELAXED) >= (uint64_t)p->cfg.max_queued) {
        pool__take t;
        int got;
        pthread_mutex_lock(&p->mu);
        got = pool__take_any(p, &t);
        pthread_mutex_unlock(&p->mu);
        if (!got) break;
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
    uint32_t refs = out ? 2u : 1u; /* the user's and the queue's */
    int rc;
    if (!p || !fn || (arg_size && !arg)) return POOL_EINVAL;
    if ((rc = pool__check_open(p)) != POOL_OK) return rc;
    arg_room = (arg_size + POOL__ALIGN - 1) & ~(size_t)(POOL__ALIGN - 1);
    if (arg_room < arg_size || arg_room + result_size < arg_room) return POOL_EOVERFLOW;
    need = arg_room + result_size;
    if (p->cfg.max_queued > 0 && !p->proc) pool__backpressure(p);

    /* fast path: a recycled future, small arguments copied under the one lock */
    pthread_mutex_lock(&p->mu);
    f = need <= POOL__INLINE ? pool__future_alloc(p, need, 1) : NULL;
    if (f) {
        pool__future_fill(f, fn, arg, arg_size, arg_room, result_size, ctx, refs);
    } else {
        pthread_mutex_unlock(&p->mu);
        f = pool__future_alloc(p, need, 0);
        if (!f) return POOL_ENOMEM;
        pool__future_fill(f, fn, arg, arg_size, arg_room, result_size, ctx, refs);
        pthread_mutex_lock(&p->mu);
    }
    if (p->proc) { /* a process pool: the arguments go to the arena */
        pthread_mutex_unlock(&p->mu);
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
    if (p->state != POOL__OPEN) {
        pthread_mutex_unlock(&p->mu);
        f->refs = 1;
        pool__future_unref(f);
        return POOL_ECLOSED;
    }
    pool__enqueue(p, &f->item);
    pool__wake_workers(p, 1);
    pthread_mutex_unlock(&p->mu);
    shmq__fetch_add(&p->st_submitted, 1u, SHMQ__RELAXED);
    if (out) *out = f;
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

/* Takes f out of the run queue if it is still there and claims it: 1 if this
 * thread must now run it. */
static int pool__claim_own(pool_future_t *f)
{
    pool_t *p = f->pool;
    uint32_t expected = POOL__F_QUEUED;
    if (shmq__load(&f->state, SHMQ__RELAXED) != POOL__F_QUEUED) return 0;
    pthread_mutex_lock(&p->mu);
    if (!f->item.queued) {
        pthread_mutex_unlock(&p->mu);
        return 0;
    }
    pool__unlink(p, &f->item);
    pthread_mutex_unlock(&p->mu);
    /* we own the queue reference now */
    if (shmq__cas(&f->state, &expected, (uint32_t)POOL__F_RUNNING)) {
        pool__future_run(f);
    }
    pool__future_unref(f);
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
    int spun = 0;
    if (shmq__load(&f->state, SHMQ__ACQUIRE) == POOL__F_DONE) return POOL_OK;
    if (pool__forked(p)) return POOL_EFORKED;
    if (p->proc) return pool__proc_future_wait(f, timeout_ms);
    for (;;) {
        pool__take t;
        if (shmq__load(&f->state, SHMQ__ACQUIRE) == POOL__F_DONE) return POOL_OK;
        if (timeout_ms < 0 && pool__claim_own(f)) continue;
        if (in_worker && timeout_ms < 0) {
            int got;
            pthread_mutex_lock(&p->mu);
            got = pool__take_any(p, &t);
            pthread_mutex_unlock(&p->mu);
            if (got) { pool__run_taken(p, &t); continue; }
        }
        if (timeout_ms == 0) return POOL_ETIMEDOUT;
        if (!spun) { /* spin a little first: the runner is usually about to finish */
            int can_help = in_worker && timeout_ms < 0, n = 0;
            double until = pool__now_ms() + POOL__WAIT_SPIN_US / 1000.0;
            spun = 1;
            while (shmq__load(&f->state, SHMQ__ACQUIRE) != POOL__F_DONE &&
                   !(can_help && shmq__load(&p->qlen, SHMQ__RELAXED) > 0)) {
                shmq__cpu_relax();
                if ((++n & 31) == 0 && pool__now_ms() > until) break;
            }
            continue;
        }
        pthread_mutex_lock(&p->mu);
        shmq__fetch_add(&p->done_waiters, 1u, SHMQ__SEQ_CST);
        if (shmq__load(&f->state, SHMQ__SEQ_CST) != POOL__F_DONE &&
            !(timeout_ms < 0 && ((in_worker && p->head) || f->item.queued))) {
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
        }
        shmq__fetch_sub(&p->done_waiters, 1u, SHMQ__SEQ_CST);
        pthread_mutex_unlock(&p->mu);
        if (timeout_ms > 0 && pool__now_ms() >= end &&
            shmq__load(&f->state, SHMQ__ACQUIRE) != POOL__F_DONE)
            return POOL_ETIMEDOUT;
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
    if (shmq__load(&f->state, SHMQ__ACQUIRE) != POOL__F_QUEUED) return POOL_EBUSY;
    pthread_mutex_lock(&p->mu);
    if (!f->item.queued) {
        pthread_mutex_unlock(&p->mu);
        return POOL_EBUSY;
    }
    pool__unlink(p, &f->item);
    pthread_mutex_unlock(&p->mu);
    if (shmq__cas(&f->state, &expected, (uint32_t)POOL__F_RUNNING)) {
        shmq__fetch_add(&p->st_cancelled, 1u, SHMQ__RELAXED);
        pool__future_complete(f, POOL_ECANCELLED, 0);
    }
    pool__future_unref(f); /* the queue's reference */
    return POOL_OK;
}

POOL_DEF int pool_future_on_done(pool_future_t *f, pool_done_fn cb, void *user)
{
    uint32_t expected = POOL__CB_NONE;
    if (!f || !cb) return POOL_EINVAL;
    if (shmq__load(&f->cb_state, SHMQ__ACQUIRE) != POOL__CB_NONE) return POOL_EBUSY;
    f->cb = cb;
    f->cb_user = user;
    if (!shmq__cas(&f->cb_state, &expected, (uint32_t)POOL__CB_SET)) return POOL_EBUSY;
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
            int got;
            pthread_mutex_lock(&p->mu);
            got = pool__take_any(p, &t);
            pthread_mutex_unlock(&p->mu);
            if (got) { pool__run_taken(p, &t); continue; }
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
static int64_t pool__auto_chunk(const pool_t *p, int64_t n, int want_progress)
{
    int64_t parts = (int64_t)p->nworkers * (want_progress ? 32 : 4) + 1;
    int64_t c = (n + parts - 1) / parts;
    return c < 1 ? 1 : c;
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
    uint64_t skipped;
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
    for (;;) {
        int got;
        pthread_mutex_lock(&p->mu);
        got = pool__claim_chunk(p, j, &t.chunk, &t.slot);
        pthread_mutex_unlock(&p->mu);
        if (!got) break;
        pool__job_run_chunk(p, j, t.chunk, t.slot);
        pool__progress_tick(pr, shmq__load(&j->items_done, SHMQ__RELAXED), total, 0);
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
    chunk = opts && opts->chunksize ? (int64_t)opts->chunksize : pool__auto_chunk(p, (int64_t)n, pr.fn != NULL);
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
    if (grain == 0) grain = pool__auto_chunk(p, range, pr.fn != NULL);
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
    chunk = opts && opts->chunksize ? (int64_t)opts->chunksize
                                    : pool__auto_chunk(p, (int64_t)n, 1);
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
        /* help: run a chunk of our own job */
        got = pool__claim_chunk(p, j, &t.chunk, &t.slot);
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

/* Grows the file so that [0, need) is backed; the space is reserved now, so a
 * full /dev/shm fails here rather than with SIGBUS in a worker. Under amu. */
static int pool__arena_grow(struct pool__proc *pp, size_t need)
{
    size_t n = pp->size ? pp->size : ((size_t)1 << 20);
    if (need <= pp->size) return 0;
    if (need > pp->reserve) return -1;
    while (n < need) n = n > pp->reserve / 2 ? pp->reserve : n * 2;
    if (ftruncate(pp->memfd, (off_t)n) != 0) return -1;
#if SHMQ__LINUX
    if (posix_fallocate(pp->memfd, (off_t)pp->size, (off_t)(n - pp->size)) != 0) {
        if (ftruncate(pp->memfd, (off_t)pp->size) != 0) { /* nothing more to do */ }
        return -1;
    }
#endif
    pp->size = n;
    return 0;
}

/* Parent only. 64-byte aligned, power-of-two size classes (at most 2x waste). */
static void *pool__arena_alloc(struct pool__proc *pp, size_t size)
{
    unsigned cls = 6;
    unsigned char *blk;
    if (size > pp->reserve) return NULL;
    while (((size_t)1 << cls) < size + 64) cls++;
    pthread_mutex_lock(&pp->amu);
    blk = pp->freel[cls];
    if (blk) {
        memcpy(&pp->freel[cls], blk + sizeof(pool__blk), sizeof blk);
    } else {
        size_t off = pp->top;
        if (off + ((size_t)1 << cls) < off || pool__arena_grow(pp, off + ((size_t)1 << cls)) != 0) {
            pthread_mutex_unlock(&pp->amu);
            return NULL;
        }
        pp->top = off + ((size_t)1 << cls);
        blk = pp->base + off;
    }
    pthread_mutex_unlock(&pp->amu);
    ((pool__blk *)blk)->cls = cls;
    ((pool__blk *)blk)->magic = POOL__BLK_MAGIC;
    return blk + 64;
}

static void pool__arena_free(struct pool__proc *pp, void *ptr)
{
    unsigned char *blk;
    unsigned cls;
    if (!ptr) return;
    blk = (unsigned char *)ptr - 64;
    POOL_ASSERT(((pool__blk *)blk)->magic == POOL__BLK_MAGIC);
    cls = (unsigned)((pool__blk *)blk)->cls;
    ((pool__blk *)blk)->magic = 0;
    pthread_mutex_lock(&pp->amu);
    memcpy(blk + sizeof(pool__blk), &pp->freel[cls], sizeof blk);
    pp->freel[cls] = blk;
    pthread_mutex_unlock(&pp->amu);
}

static int pool__arena_map(struct pool__proc *pp, size_t reserve)
{
    size_t fixed;
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
    fixed = sizeof(pool__arena_hdr) + sizeof(pool__pslot) * POOL__NSLOTS;
    fixed = (fixed + 63) & ~(size_t)63;
    pp->top = fixed; /* the ledger follows, placed by the caller */
    if (pool__arena_grow(pp, fixed + ((size_t)1 << 20)) != 0) {
        munmap(m, reserve);
        close(pp->memfd);
        return -1;
    }
    pp->hdr = (pool__arena_hdr *)(void *)pp->base;
    pp->slots = (pool__pslot *)(void *)(pp->base + sizeof(pool__arena_hdr));
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
    if (shmq__cas(&s->done, &zero, 1u)) pool__pnotify(pp);
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
    double next_check = 0;
    struct pool__proc *pp = p->proc;
    pool__pchunk *ch = &s->chunks[c];
    int64_t b = s->begin + (int64_t)c * s->chunk, e = b + s->chunk, i, ran = 0, fails = 0;
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
        memcpy(&fn, &s->fn, sizeof fn);
        for (i = shmq__load(&ch->pos, SHMQ__RELAXED); i < e; i++) {
            int code;
            shmq__store(&ch->pos, i, SHMQ__RELAXED);
            code = fn(in + (size_t)(i - s->begin) * s->in_size,
                      s->out_size ? out + (size_t)(i - s->begin) * s->out_size : NULL, ctx);
            if (codes) codes[i - s->begin] = code;
            if (code) {
                if (ch->fail_index < 0) { ch->fail_index = i; ch->fail_code = code; }
                ch->fail_count++;
                fails++;
            }
            ran++;
            shmq__store(&ch->ran, ch->ran + 1, SHMQ__RELAXED);
            if ((ran & 15) == 0) pool__porphan_check(pp, &next_check);
        }
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
        if (si < POOL__NSLOTS && shmq__load(&s->gen, SHMQ__ACQUIRE) == g && !shmq__load(&s->done, SHMQ__ACQUIRE)) {
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

/* Forks worker w (from the monitor thread, or through the fork server). */
static int pool__pspawn(pool_t *p, int w)
{
    struct pool__proc *pp = p->proc;
    int fds[2];
    pid_t pid;
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
        if (write(pp->ctl[0], msg, sizeof msg) != (ssize_t)sizeof msg) return -1;
        memset(&mh, 0, sizeof mh);
        iov.iov_base = msg;
        iov.iov_len = sizeof msg;
        mh.msg_iov = &iov;
        mh.msg_iovlen = 1;
        mh.msg_control = u.buf;
        mh.msg_controllen = sizeof u.buf;
        do r = recvmsg(pp->ctl[0], &mh, 0); while (r < 0 && errno == EINTR);
        if (r != (ssize_t)sizeof msg || msg[1] <= 0) return -1;
        cm = CMSG_FIRSTHDR(&mh);
        if (!cm || cm->cmsg_type != SCM_RIGHTS) return -1;
        memcpy(&pp->death_fd[w], CMSG_DATA(cm), sizeof(int));
        fcntl(pp->death_fd[w], F_SETFD, FD_CLOEXEC);
        pp->pid[w] = msg[1];
        pp->started++;
        return 0;
    }
    if (pipe(fds) != 0) return -1;
    shmq__store(&pp->ledger[w].state, (uint32_t)POOL__W_STARTING, SHMQ__SEQ_CST);
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
    fcntl(fds[0], F_SETFD, FD_CLOEXEC);
    pp->death_fd[w] = fds[0];
    pp->pid[w] = pid;
    pp->started++;
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
#if SHMQ__LINUX
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
#endif
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

/* The exit status of worker w: the signal that killed it, 0 for a normal exit. */
static int pool__preap(pool_t *p, int w)
{
    struct pool__proc *pp = p->proc;
    int status = 0;
    if (pp->server_pid > 0) { /* the server reaps its children and tells us how they ended */
        int32_t msg[2];
        msg[0] = w;
        msg[1] = 1;
        if (write(pp->ctl[0], msg, sizeof msg) != (ssize_t)sizeof msg) return SIGKILL;
        if (read(pp->ctl[0], msg, sizeof msg) != (ssize_t)sizeof msg) return SIGKILL; /* the server is gone */
        return msg[1];
    }
    while (waitpid(pp->pid[w], &status, 0) < 0 && errno == EINTR) {}
    if (WIFSIGNALED(status)) return WTERMSIG(status);
    return 0;
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
    shmq__store(&s->done, 0u, SHMQ__RELAXED);
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
        if (!pp->slot_busy[si] || !f || !shmq__load(&s->done, SHMQ__ACQUIRE)) continue;
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

/* The monitor thread: forks the workers, watches them, collects futures. */
static void *pool__pmonitor(void *arg)
{
    pool_t *p = (pool_t *)arg;
    struct pool__proc *pp = p->proc;
    pool__arena_hdr *h = pp->hdr;
    struct pollfd *pfd = pp->pfd;
    int w, ready = 0;
    /* start the workers and wait for their initializers */
    for (w = 0; w < p->nworkers; w++) {
        if (pool__pspawn(p, w) != 0) break;
        pp->workers_alive++;
    }
    while (pfd && ready < pp->workers_alive) {
        uint32_t seen = shmq__load(&h->done.word, SHMQ__ACQUIRE);
        int failed = 0;
        ready = 0;
        for (w = 0; w < pp->workers_alive; w++) {
            uint32_t st = shmq__load(&pp->ledger[w].state, SHMQ__ACQUIRE);
            if (st == POOL__W_READY) ready++;
            if (st == POOL__W_INITFAIL) failed = 1;
        }
        if (failed) break;
        if (ready < pp->workers_alive) {
            struct pollfd one;
            int dead = 0;
            for (w = 0; w < pp->workers_alive && !dead; w++) { /* a worker that died starting */
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
    if (!pfd || ready < p->nworkers) p->init_failed = 1;
    pthread_cond_broadcast(&p->done_cv);
    while (!p->go) pthread_cond_wait(&p->work_cv, &p->mu);
    pthread_mutex_unlock(&p->mu);

    for (;;) {
        pool_future_t *done_list;
        int n = 0, state, idle, r;
        pthread_mutex_lock(&p->mu);
        done_list = pool__pharvest(p);
        state = p->state;
        idle = pp->nbusy == 0 && !pp->pend_head;
        pthread_mutex_unlock(&p->mu);
        pool__pcomplete_list(done_list);
        if (state == POOL__TERMINATED || (state == POOL__CLOSED && idle) || p->init_failed) {
            shmq__store(&h->closing, state == POOL__CLOSED && !p->init_failed ? 1u : 2u, SHMQ__SEQ_CST);
            shmq__fetch_add(&h->work.word, 1u, SHMQ__SEQ_CST);
            shmq__futex_wake(&h->work, INT_MAX);
            if (state != POOL__CLOSED || p->init_failed) pool__pkill_all(p);
            break;
        }
        for (w = 0; w < p->nworkers; w++) {
            pfd[n].fd = pp->death_fd[w];
            pfd[n].events = POLLIN;
            pfd[n].revents = 0;
            n++;
        }
        pfd[n].fd = pp->notify_rd;
        pfd[n].events = POLLIN;
        pfd[n].revents = 0;
        shmq__store(&h->monitor_sleeping, 1u, SHMQ__SEQ_CST);
        {
            int si, pending = 0; /* a completion may have slipped in before the flag */
            pthread_mutex_lock(&p->mu);
            for (si = 0; si < POOL__NSLOTS && !pending; si++)
                if (pp->slot_future[si] && shmq__load(&pp->slots[si].done, SHMQ__SEQ_CST)) pending = 1;
            pending |= p->state != POOL__OPEN;
            pthread_mutex_unlock(&p->mu);
            r = pending ? 0 : poll(pfd, (nfds_t)(n + 1), 100);
        }
        shmq__store(&h->monitor_sleeping, 0u, SHMQ__SEQ_CST);
        if (r <= 0) continue;
        if (pfd[n].revents) {
            char buf[64];
            if (read(pp->notify_rd, buf, sizeof buf) < 0) { /* drained */ }
        }
        for (w = 0; w < p->nworkers; w++) {
            int sig;
            if (!pfd[w].revents) continue;
            /* worker w is gone: reap it, fail what it held, start another */
            close(pp->death_fd[w]);
            pp->death_fd[w] = -1;
            sig = pool__preap(p, w);
            pthread_mutex_lock(&p->mu);
            if (shmq__load(&pp->ledger[w].state, SHMQ__ACQUIRE) != POOL__W_RETIRING) {
                pp->deaths++;
                pool__precover(p, w, sig);
            }
            pp->pid[w] = -1;
            state = p->state;
            pthread_mutex_unlock(&p->mu);
            if (state != POOL__TERMINATED && pool__pspawn(p, w) != 0) {
                if (p->cfg.log) p->cfg.log("pool: could not start a replacement worker", p->cfg.log_ctx);
            }
        }
    }
    /* wait for every worker to exit */
    for (w = 0; w < p->nworkers; w++) {
        if (pp->death_fd[w] >= 0) {
            struct pollfd one;
            one.fd = pp->death_fd[w];
            one.events = POLLIN;
            while (poll(&one, 1, -1) < 0 && errno == EINTR) {}
            close(pp->death_fd[w]);
            pp->death_fd[w] = -1;
        }
        if (pp->pid[w] > 0 && pp->server_pid <= 0) {
            while (waitpid(pp->pid[w], NULL, 0) < 0 && errno == EINTR) {}
        }
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
    if (!pp->death_fd || !pp->pid || !pp->pfd) { pool__proc_free(p); return POOL_ENOMEM; }
    for (w = 0; w < p->nworkers; w++) { pp->death_fd[w] = -1; pp->pid[w] = -1; }
    if (pthread_mutex_init(&pp->amu, NULL) != 0) { pool__proc_free(p); return POOL_ESYS; }
    if (pool__arena_map(pp, reserve) != 0) { pool__proc_free(p); return POOL_ESYS; }
    ledger_bytes = sizeof(pool__ledger) * (size_t)p->nworkers;
    if (pool__arena_grow(pp, pp->top + ledger_bytes + 64) != 0) { pool__proc_free(p); return POOL_ESYS; }
    pp->ledger = (pool__ledger *)(void *)(pp->base + pp->top);
    pp->top = (pp->top + ledger_bytes + 63) & ~(size_t)63;
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
        if (shmq__load(&s->done, SHMQ__ACQUIRE)) return POOL_OK;
        if (pr && pr->fn) {
            uint64_t ran = 0;
            uint32_t c;
            for (c = 0; c < s->nchunks; c++) ran += (uint64_t)shmq__load(&s->chunks[c].ran, SHMQ__RELAXED);
            pool__progress_tick(pr, ran, total, 0);
        }
        if (!shmq__load(&pp->monitor_started, SHMQ__ACQUIRE)) return POOL_ECANCELLED;
        shmq__fetch_add(&h->done_waiters, 1u, SHMQ__SEQ_CST);
        if (!shmq__load(&s->done, SHMQ__SEQ_CST))
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
    int si, cancelled = 0;
    uint32_t c;
    int64_t range = end - begin;
    failure->code = 0;
    failure->index = -1;
    failure->signal = 0;
    if ((range + chunk - 1) / chunk > POOL__MAXCH) chunk = (range + POOL__MAXCH - 1) / POOL__MAXCH;
    pthread_mutex_lock(&p->mu);
    while ((si = pool__pslot_take(p)) < 0 && p->state == POOL__OPEN)
        pthread_cond_wait(&p->done_cv, &p->mu);
    if (si < 0) {
        pthread_mutex_unlock(&p->mu);
        return POOL_ECLOSED;
    }
    pool__ppublish(p, si, kind, fn, ctx, in, out, NULL, in_size, out_size, begin, end, chunk);
    pthread_mutex_unlock(&p->mu);
    shmq__fetch_add(&p->st_submitted, (uint64_t)range, SHMQ__RELAXED);
    if (pr) pool__progress_tick(pr, 0, (uint64_t)range, 1);
    pool__proc_wait_slot(p, si, pr, (uint64_t)range);
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
    chunk = opts && opts->chunksize ? (int64_t)opts->chunksize : pool__auto_chunk(p, (int64_t)n, pr->fn != NULL);
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
        if (si >= 0 && shmq__load(&pp->slots[si].done, SHMQ__ACQUIRE)) {
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
    int slot;                 /* job slot, -1 when the window is empty */
    uint64_t chunk;           /* the chunk it holds */
    unsigned char *in_a, *out_a;
    int *codes_a;
} pool__pwin;

static int pool__piter_publish(pool_iter_t *it, pool__pwin *w, uint64_t c)
{
    pool_t *p = it->pool;
    pool__job *j = &it->job;
    int64_t b = (int64_t)c * j->chunk, e = b + j->chunk;
    uint64_t fnv;
    int si;
    if (e > j->end) e = j->end;
    memcpy(w->in_a, j->in + (size_t)b * j->in_size, (size_t)(e - b) * j->in_size);
    memcpy(&fnv, &j->fn, sizeof fnv);
    pthread_mutex_lock(&p->mu);
    while ((si = pool__pslot_take(p)) < 0 && p->state == POOL__OPEN)
        pthread_cond_wait(&p->done_cv, &p->mu);
    if (si < 0) {
        pthread_mutex_unlock(&p->mu);
        return POOL_ECLOSED;
    }
    pool__ppublish(p, si, POOL__PJ_MAP, fnv, j->ctx, w->in_a, w->out_a, w->codes_a, j->in_size,
                   j->out_size, b, e, e - b);
    pthread_mutex_unlock(&p->mu);
    w->slot = si;
    w->chunk = c;
    return POOL_OK;
}

static void pool__piter_free_windows(pool_iter_t *it)
{
    pool_t *p = it->pool;
    struct pool__proc *pp = p->proc;
    size_t k;
    if (!it->win) return;
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
    it->win = (pool__pwin *)POOL_MALLOC(sizeof *it->win * nwin);
    if (!it->win) return POOL_ENOMEM;
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
                pthread_mutex_lock(&p->mu);
                pool__pslot_release(p, w->slot);
                pool__ppublish_pending(p);
                pthread_mutex_unlock(&p->mu);
                w->slot = -1;
                it->cur_slot = -1;
                if (it->next_pub < j->nchunks && shmq__load(&p->state, SHMQ__RELAXED) == POOL__OPEN)
                    pool__piter_publish(it, w, it->next_pub++);
            }
            pool__progress_tick(&it->pr, it->yielded, it->total, it->yielded == it->total);
            return code;
        }
        if (it->yielded >= it->total) return POOL_EDONE;
        seen = shmq__load(&pp->hdr->done.word, SHMQ__ACQUIRE);
        for (k = 0; k < it->nwin; k++) {
            pool__pwin *w = &it->win[k];
            if (w->slot < 0 || !shmq__load(&pp->slots[w->slot].done, SHMQ__ACQUIRE)) continue;
            if (it->ordered && w->chunk != it->next_chunk) continue;
            if ((pp->slots[w->slot].chunks[0].state & 0xFFFFu) == POOL__CH_CANCELLED) return POOL_ECANCELLED;
            it->cur_slot = (int64_t)k;
            it->cur_pos = 0;
            it->cur_len = pp->slots[w->slot].end - pp->slots[w->slot].begin;
            it->next_chunk++;
            break;
        }
        if (it->cur_slot >= 0) continue;
        {
            int any = 0;
            for (k = 0; k < it->nwin; k++) any |= it->win[k].slot >= 0;
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
    if (p->state == POOL__OPEN) shmq__store(&p->state, (int)POOL__CLOSED, SHMQ__RELAXED);
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
    if (p->proc) pool__proc_poke(p);
    return POOL_OK;
}

/* Cancels everything in the run queue. Under mu; returns the futures to complete
 * (linked through free_next) so they complete outside the lock. */
static pool_future_t *pool__cancel_queue(pool_t *p)
{
    pool_future_t *list = NULL;
    while (p->head) {
        pool__item *it = p->head;
        pool__unlink(p, it);
        if (it->type == POOL__ITEM_FUTURE) {
            pool_future_t *f = (pool_future_t *)it;
            f->free_next = list;
            list = f;
        } else {
            pool__job *j = (pool__job *)it;
            shmq__store(&j->stop, 1, SHMQ__RELAXED);
            j->cancelled = 1;
            if (j->waiting) pthread_cond_broadcast(&p->done_cv);
        }
    }
    return list;
}

POOL_DEF int pool_terminate(pool_t *p)
{
    pool_future_t *list;
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
    shmq__store(&p->state, (int)POOL__TERMINATED, SHMQ__RELAXED);
    list = pool__cancel_queue(p);
    pthread_cond_broadcast(&p->work_cv);
    pthread_cond_broadcast(&p->done_cv);
    pthread_mutex_unlock(&p->mu);
    while (list) {
        pool_future_t *f = list;
        uint32_t expected = POOL__F_QUEUED;
        list = f->free_next;
        if (shmq__cas(&f->state, &expected, (uint32_t)POOL__F_RUNNING)) {
            shmq__fetch_add(&p->st_cancelled, 1u, SHMQ__RELAXED);
            pool__future_complete(f, POOL_ECANCELLED, 0);
        }
        pool__future_unref(f);
    }
    return POOL_OK;
}

POOL_DEF int pool_join(pool_t *p)
{
    int i, already, rc;
    if (!p) return POOL_EINVAL;
    if ((rc = pool__check_caller(p)) != POOL_OK) return rc;
    if (pool__self && pool__self->pool == p) return POOL_EINWORKER;
    pthread_mutex_lock(&p->mu);
    if (p->state == POOL__OPEN) {
        pthread_mutex_unlock(&p->mu);
        return POOL_ESTATE;
    }
    already = p->joined;
    p->joined = 1;
    pthread_mutex_unlock(&p->mu);
    if (already) return POOL_OK;
    if (p->proc) {
        pool__stop_workers(p, 0);
        return POOL_OK;
    }
    for (i = 0; i < p->nworkers; i++) pthread_join(p->workers[i].thread, NULL);
    return POOL_OK;
}

POOL_DEF void pool_destroy(pool_t *p)
{
    int release;
    if (!p) return;
    if (p->proc && pool__self && pool__self->pool == p) return; /* not from a worker process */
    if (!pool__forked(p)) {
        if (pool__self && pool__self->pool == p) return; /* documented: not from a worker */
        if (shmq__load(&p->state, SHMQ__RELAXED) == POOL__OPEN) pool_terminate(p);
        pool_join(p);
    }
    pool__proc_free(p);
    release = (shmq__fetch_or(&p->live, POOL__RELEASED, SHMQ__ACQ_REL) & ~POOL__RELEASED) == 0;
    if (release) pool__core_free(p);
}

/* >>impl-misc */
POOL_DEF int pool_get_stats(pool_t *p, pool_stats *out)
{
    int i;
    if (!p || !out) return POOL_EINVAL;
    memset(out, 0, sizeof *out);
    out->submitted = shmq__load(&p->st_submitted, SHMQ__RELAXED);
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
        out->workers_started = p->proc->started;
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
    if (p->proc) return pool__check_caller(p) == POOL_OK ? pool__arena_alloc(p->proc, size) : NULL;
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
        if (pool__check_caller(p) == POOL_OK && pool__is_in_arena(p->proc, ptr, 1)) pool__arena_free(p->proc, ptr);
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
#ifdef POOL__DEV_MANAGER /* temporary, while the Manager is developed in dev/ */
#include "dev/manager_impl.h"
#endif

#endif /* POOL__IMPLEMENTATION_DONE */
#endif /* POOL_IMPLEMENTATION */
