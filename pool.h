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
 *   pool of threads and (in progress) a pool of processes: values pass by copy, as
 *   bytes (in_size / out_size), never as pointers only a thread could follow, so a
 *   program moves from threads to processes by changing config.kind.
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
 *                                 Returns the code of the LOWEST failing index (the one
 *                                 a sequential loop would hit first); opts.failure says
 *                                 which. Elements after a failure may not have run.
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
 *   - A task that never returns holds its worker forever (threads cannot be killed
 *     safely); terminate does not stop it. Use a process pool for that.
 *   - apply_async arguments up to 48 bytes live inside the future; larger ones use a
 *     heap buffer that is recycled with the future.
 *   - The queue is unbounded unless config.max_queued is set.
 *   - Needs GCC or Clang style __atomic builtins (gcc >= 4.7, clang >= 3.1, icc).
 */
/* The implementation needs POSIX 2008 (and BSD/SVID extras) from the C library even
 * under -std=c99; this must come before the first system header. */
#if defined(POOL_IMPLEMENTATION) && defined(__linux__) && !defined(_GNU_SOURCE) && \
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
};

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
    while (top && !shmq__cas(&p->free_top, &top, top->free_next)) {}
    if (top) shmq__fetch_sub(&p->nfree, 1u, SHMQ__RELAXED);
    return top;
}

static void pool__free_push(pool_t *p, pool_future_t *f)
{
    pool_future_t *top = shmq__load(&p->free_top, SHMQ__RELAXED);
    shmq__fetch_add(&p->nfree, 1u, SHMQ__RELAXED);
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
    if (shmq__xchg(&f->cb_state, (uint32_t)POOL__CB_FIRED, SHMQ__ACQ_REL) == POOL__CB_SET)
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
    shmq__store(&j->stop, 1, SHMQ__RELAXED);
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
    if (c.kind == POOL_PROCESSES) return POOL_EINVAL; /* TODO(issue 4): process pool */
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
        if (pthread_create(&p->workers[i].thread, NULL, pool__worker_main, &p->workers[i]) != 0) {
            err = POOL_ESYS;
            break;
        }
        p->workers[i].started = 1;
        started++;
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
        pool__core_free(p);
        return err;
    }
    *out = p;
    return POOL_OK;
}

/* >>impl-apply */
static int pool__check_open(pool_t *p)
{
    if (pool__forked(p)) return POOL_EFORKED;
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
    if (p->cfg.max_queued > 0) pool__backpressure(p);

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
    int spins = 0;
    if (shmq__load(&f->state, SHMQ__ACQUIRE) == POOL__F_DONE) return POOL_OK;
    if (pool__forked(p)) return POOL_EFORKED;
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
        if (spins < 200) { /* the runner is usually about to finish */
            spins++;
            shmq__cpu_relax();
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
    if (shmq__load(&f->state, SHMQ__ACQUIRE) != POOL__F_QUEUED) return POOL_EBUSY;
    if (pool__forked(p)) return POOL_EFORKED;
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
    if (shmq__load(&f->cb_state, SHMQ__ACQUIRE) == POOL__CB_SET) return POOL_EBUSY;
    f->cb = cb;
    f->cb_user = user;
    if (shmq__cas(&f->cb_state, &expected, (uint32_t)POOL__CB_SET)) return POOL_OK;
    if (expected == POOL__CB_FIRED) { /* already done: call it here */
        cb(f, user);
        return POOL_OK;
    }
    return POOL_EBUSY;
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
typedef struct pool__progress {
    pool_progress_fn fn;
    void *user;
    double next_ms;
    int interval;
} pool__progress;

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
    if (!p || !fn) return POOL_EINVAL;
    if (pool__forked(p)) return POOL_EFORKED;
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
    if (!p || !body || grain < 0 || end < begin) return POOL_EINVAL;
    if (pool__forked(p)) return POOL_EFORKED;
    if (end == begin) return POOL_OK;
    if (shmq__load(&p->state, SHMQ__RELAXED) != POOL__OPEN) return POOL_ECLOSED;
    if ((uint64_t)end - (uint64_t)begin > (uint64_t)INT64_MAX) return POOL_EOVERFLOW;
    range = end - begin;
    pool__progress_init(&pr, p, NULL);
    if (grain == 0) grain = pool__auto_chunk(p, range, pr.fn != NULL);
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

/* >>impl-lifecycle */
POOL_DEF int pool_close(pool_t *p)
{
    if (!p) return POOL_EINVAL;
    if (pool__forked(p)) return POOL_EFORKED;
    pthread_mutex_lock(&p->mu);
    if (p->state == POOL__OPEN) shmq__store(&p->state, (int)POOL__CLOSED, SHMQ__RELAXED);
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
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
    if (!p) return POOL_EINVAL;
    if (pool__forked(p)) return POOL_EFORKED;
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
    int i, already;
    if (!p) return POOL_EINVAL;
    if (pool__forked(p)) return POOL_EFORKED;
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
    for (i = 0; i < p->nworkers; i++) pthread_join(p->workers[i].thread, NULL);
    return POOL_OK;
}

POOL_DEF void pool_destroy(pool_t *p)
{
    int release;
    if (!p) return;
    if (!pool__forked(p)) {
        if (pool__self && pool__self->pool == p) return; /* documented: not from a worker */
        if (shmq__load(&p->state, SHMQ__RELAXED) == POOL__OPEN) pool_terminate(p);
        pool_join(p);
    }
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
    (void)p;
    if (!ptr) return;
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
