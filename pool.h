/* pool.h - v0.1 - thread pools, process pools and a Manager, with one API
 *
 *   Do this:
 *       #define POOL_IMPLEMENTATION
 *   before you include this file in *one* C or C++ file to create the implementation.
 *   (It brings in shm_queue.h's implementation too: keep shm_queue.h beside pool.h.)
 *
 * DOCUMENTATION: see the block below the interface (being written).
 */
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
    X(POOL_ENAMETOOLONG, -31, "name or key too long")

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
 * chunks too. Returns POOL_OK, or the code of the lowest failing index (see opts->failure;
 * elements after a failure may not have run). n == 0 returns POOL_OK at once.
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
 * POOL_ETIMEDOUT, POOL_ECANCELLED or POOL_EWORKERDIED. A waiting thread runs queued
 * tasks of the pool meanwhile (starting with this one), so waiting inside a task never
 * deadlocks. Any number of threads may wait on one future. */
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
 * worker, or the parent's collector thread in a process pool), or at once from this
 * thread if it is already done. One per future: a second returns POOL_EBUSY. */
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

/* >>manager-implementation */
#ifdef POOL__DEV_MANAGER /* temporary, while the Manager is developed in dev/ */
#include "dev/manager_impl.h"
#endif

#endif /* POOL__IMPLEMENTATION_DONE */
#endif /* POOL_IMPLEMENTATION */
