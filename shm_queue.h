/* shm_queue.h - v0.2 - cross-process building blocks: shared memory, queues, locks
 *
 *   Do this:
 *       #define SHMQ_IMPLEMENTATION
 *   before you include this file in *one* C or C++ file to create the implementation.
 *   Compile with -pthread (link -lrt on glibc older than 2.34).
 *
 * OVERVIEW
 *
 *   The cross-process layer of the kit (pool.h and taskflow.h stand on it):
 *
 *   - shmq_block: a block of shared memory, named (shm_open, mode 0600) or
 *     anonymous (inherited across fork). Its memory is reserved at creation,
 *     so a full /dev/shm is an error from create, never a SIGBUS later. Every
 *     block starts with a header (magic, layout version, size, creator pid and
 *     start time): opening something that is not ours is an error, not a crash,
 *     and shmq_sweep() removes names left behind by processes that died.
 *   - shmq_queue: a bounded multi-producer multi-consumer queue of messages of
 *     1..max_message bytes, in shared memory (named, anonymous, or placed by the
 *     caller in memory of its own). Blocking push/pop with a timeout, try forms,
 *     shutdown that wakes every waiter. Waiters spin briefly (adaptively), then
 *     sleep on a futex; idle waiters use no CPU. A process killed at any point
 *     of a push or a pop never wedges the queue and never loses another
 *     message (see DELIVERY CONTRACT).
 *   - shmq_lock: a process-shared robust mutex; the next owner after a dead
 *     holder is told so (SHMQ_EOWNERDEAD) and the lock stays usable.
 *   - shmq_event (set/clear/wait) and shmq_sem (a counting semaphore).
 *
 *   Locks, events and semaphores live in memory the caller provides (a block,
 *   or any MAP_SHARED memory): init once, attach from every process.
 *
 *   Names: a name is "/" followed by 1..200 characters other than "/". The
 *   object is created as "/shmq.<name>" (so /dev/shm/shmq.<name> on Linux):
 *   the prefix is how shmq_sweep() knows what is ours and never touches the rest.
 *
 * QUICK START
 *
 *   EXAMPLE BEGIN
    #define SHMQ_IMPLEMENTATION
    #include "shm_queue.h"
    #include <stdio.h>
    #include <string.h>
    #include <unistd.h>
    #include <sys/wait.h>

    int main(void)
    {
        shmq_queue_t *q, *mine;
        shmq_block_t *b;
        char name[64], buf[256] = "";
        size_t len = 0, need;
        int rc, status;
        pid_t pid;

        snprintf(name, sizeof name, "/jobs.%d", (int)getpid());
        // room for 256 messages of up to 256 bytes; SHMQ_EEXIST if the name exists
        rc = shmq_queue_create(&q, name, 64 * 1024, 256, 0);
        if (rc) { fprintf(stderr, "create: %s\n", shmq_strerror(rc)); return 1; }

        pid = fork();
        if (pid == 0) {                   // any program of the same user could do
            shmq_queue_t *c;              // this part: it needs the name only
            if (shmq_queue_open(&c, name) != 0) _exit(1);
            rc = shmq_push(c, "hello", 6, -1);            // -1: wait while full
            shmq_queue_close(c);
            _exit(rc == 0 ? 0 : 1);
        }
        rc = shmq_pop(q, buf, sizeof buf, &len, 5000);    // wait up to 5 s
        printf("pop: %s: \"%s\" (%zu bytes)\n", shmq_strerror(rc), buf, len);
        waitpid(pid, &status, 0);
        shmq_queue_close(q);              // unmaps; the name stays...
        shmq_unlink(name);                // ...until unlinked

        // The same queue in memory of your own (an arena mapped before fork,
        // say; here an anonymous block): init once, attach in every process.
        need = shmq_queue_bytes(64 * 64, 64);             // 64 slots of 64 bytes
        if (shmq_block_create(&b, NULL, need, 0) != 0) return 1;
        if (shmq_queue_init(shmq_block_data(b), need, 64) != 0) return 1;
        if (shmq_queue_attach(&mine, shmq_block_data(b)) != 0) return 1;
        shmq_push(mine, "in place", 9, 0);                // 0: try, never wait
        shmq_pop(mine, buf, sizeof buf, &len, 0);
        shmq_queue_close(mine);
        shmq_block_close(b);
        return rc == 0 && strcmp(buf, "in place") == 0 ? 0 : 1;
    }
 *   EXAMPLE END
 *
 *   Build: cc -O2 -pthread main.c   (glibc older than 2.34: add -lrt)
 *
 * API
 *
 *   Errors        shmq_strerror(code)                     text of a code, never NULL
 *   Blocks        shmq_block_create(&b, name|NULL, size, flags)
 *                 shmq_block_open(&b, name)   shmq_block_close(b)
 *                 shmq_block_data(b)  shmq_block_size(b)  shmq_unlink(name)
 *                 shmq_sweep(&removed)
 *   Queues        shmq_queue_create(&q, name|NULL, capacity_bytes, max_message, flags)
 *                 shmq_queue_open(&q, name)  shmq_queue_close(q)
 *                 shmq_queue_bytes(capacity_bytes, max_message)
 *                 shmq_queue_init(mem, bytes, max_message)  shmq_queue_attach(&q, mem)
 *                 shmq_push(q, msg, len, timeout_ms)  shmq_try_push(q, msg, len)
 *                 shmq_pop(q, buf, cap, &len, timeout_ms)  shmq_try_pop(q, buf, cap, &len)
 *                 shmq_queue_shutdown(q)  shmq_queue_is_shutdown(q)
 *                 shmq_queue_count(q)  shmq_queue_capacity(q)  shmq_queue_max_message(q)
 *                 shmq_queue_set_spin(q, spin_us)  shmq_queue_recover(q)
 *   Lock          shmq_lock_init(&l, mem, bytes)  shmq_lock_attach(&l, mem)
 *                 shmq_lock_acquire(l, timeout_ms)  shmq_lock_release(l)
 *   Event         shmq_event_init / _attach / _set / _clear / _is_set / _wait(e, timeout_ms)
 *   Semaphore     shmq_sem_init(&s, mem, bytes, initial) / _attach / _post / _wait / _value
 *
 *   Timeouts are in milliseconds: -1 waits forever, 0 tries once, > 0 waits
 *   at most that long (measured on CLOCK_MONOTONIC; shmq_lock uses the
 *   realtime clock, as pthread_mutex_timedlock does).
 *
 * CONFIGURATION MACROS
 *
 *   SHMQ_STATIC      make every function static (single-file programs)
 *   SHMQ_NO_LINUX    use only POSIX calls (no futex, memfd, /proc), as on
 *                    macOS and the BSDs; the one portability switch of the whole kit.
 *                    Waits then sleep on a process-shared semaphore (sem_t)
 *                    instead of a futex; anonymous blocks use shm_open + unlink.
 *   SHMQ_MALLOC / SHMQ_REALLOC / SHMQ_FREE   all three or none (default: libc)
 *   SHMQ_ASSERT      programmer-error checks (default: assert)
 *   SHMQ_SHM_DIR     where named objects are listed by shmq_sweep (default "/dev/shm")
 *   SHMQ_DEFAULT_SPIN_US  the longest adaptive spin of a waiter (default 100; a
 *                    waiter spins for what a sleep costs, measured, up to this)
 *
 *   The implementation needs POSIX.1-2008. In a strict -std=c99/c11 build
 *   it asks for it itself (_POSIX_C_SOURCE) when this file comes first; if a
 *   system header came before it, define _POSIX_C_SOURCE=200809L (or
 *   _GNU_SOURCE) on the command line.
 *
 * THREAD SAFETY
 *
 *   Every object may be used at the same time by any number of threads of
 *   any number of processes: push and pop are MPMC; lock, event and
 *   semaphore calls are safe from anywhere. A handle (shmq_queue_t,
 *   shmq_block_t) is a process-local object: any thread of the process may
 *   use it concurrently, but closing it while another thread uses it is a
 *   programmer error. A handle made before fork() stays valid in the child.
 *   Progress: push and pop are lock-free in the absence of dead processes
 *   (a stalled producer delays only the consumer of its own slot).
 *
 * ERRORS
 *
 *   Every function that can fail returns an int: 0 (SHMQ_OK) or one of the
 *   negative codes of SHMQ_ERRORS below; shmq_strerror() gives the text.
 *   SHMQ_ESYS means a system call failed: errno tells which. Nothing is
 *   printed, nothing aborts, there is no global error state.
 *
 * LIMITS
 *
 *   - Messages are 1..max_message bytes; max_message <= 1 GiB. A queue has
 *     a power-of-two number of slots (2 .. 2^24); a slot is a 16-byte header
 *     plus max_message bytes, rounded up to whole 64-byte cache lines, and the
 *     queue has a 512-byte header (shmq_queue_bytes computes it).
 *   - Crash recovery identifies processes by pid: processes sharing a queue
 *     must be in one pid namespace. A slot held by a dead process whose pid
 *     was reused meanwhile stays held until that new process exits too.
 *     Zombies count as dead (Linux reads /proc; SHMQ_NO_LINUX relies on kill()
 *     and so waits until the zombie is reaped).
 *   - Sharing objects between programs built against different C libraries
 *     (glibc and musl) is not supported for shmq_lock (pthread layout) nor in
 *     SHMQ_NO_LINUX builds (sem_t layout); futex-build queues, events and
 *     semaphores use fixed layouts of their own. The futex build and the
 *     SHMQ_NO_LINUX build refuse each other's objects (SHMQ_EVERSION).
 *   - The pid used to mark slots is cached per process and reset by a
 *     pthread_atfork handler: a child made with a raw clone() (not fork,
 *     vfork+exec or posix_spawn) must not push or pop before exec.
 *   - Processes are told apart, not threads: a thread that dies alone (for
 *     instance by pthread_exit from a signal handler) inside push or pop
 *     leaves its slot held until its whole process exits.
 *   - shmq_lock is a robust pthread mutex; macOS has none, so there a dead
 *     holder is not detected.
 *   - Shared-memory names: macOS allows 31 characters in total ("/shmq." included).
 *
 * DELIVERY CONTRACT
 *
 *   A queue is an array of slots; every slot has one 64-bit state word
 *   (sequence number and owner pid) that is the only place where it changes
 *   hands. A producer claims a free slot with one compare-and-swap that
 *   writes its pid, copies the message, and publishes it by writing the
 *   state last. A consumer claims a full slot the same way, copies, and
 *   frees it by writing the state last.
 *
 *   - shmq_push returned 0: the message is in the queue, and will be returned
 *     by exactly one successful shmq_pop, intact (even if the process that
 *     pushed it dies right after).
 *   - A producer killed inside shmq_push: its message never appears (not even
 *     in part); the slot it held is reclaimed by the consumer that reaches it.
 *     No other message is lost or reordered.
 *   - A consumer killed inside shmq_pop, before shmq_pop returned: the
 *     message it was taking is NOT lost: it is delivered to another pop
 *     (at-least-once towards a dying consumer, exactly-once towards pops that
 *     return). It is delivered by the next pop that reaches its slot a lap
 *     later, or sooner by a pop about to sleep: such a pop scans the whole
 *     ring after shmq_queue_recover() or after a producer found itself
 *     blocked by the dead reader, and otherwise 1024 slots every 50 ms per
 *     handle. So it may arrive out of order. A consumer killed after shmq_pop returned has
 *     the message: the queue has done its part.
 *   - The queue is never wedged by a dead process: a waiter that finds the
 *     slot it needs held for more than 50 us checks whether its holder is
 *     alive (kill(pid, 0), and /proc for zombies) and takes the slot back;
 *     while the holder lives it naps and re-checks (1 ms, then every 10 ms).
 *     A try (timeout 0) does the kill(pid, 0) check at once.
 *   - Order: FIFO per producer-consumer pair among live processes.
 *   - shmq_queue_shutdown: later pushes fail with SHMQ_ECLOSED; pops drain
 *     what is queued, then fail with SHMQ_ECLOSED; every waiter wakes. A push
 *     racing with the shutdown may be accepted (it can then still be popped).
 */
#if defined(SHMQ_IMPLEMENTATION) && !defined(SHMQ__IMPLEMENTATION_DONE) && defined(__STRICT_ANSI__) \
    && !defined(_POSIX_C_SOURCE) && !defined(_XOPEN_SOURCE) && !defined(_GNU_SOURCE) \
    && !defined(_DEFAULT_SOURCE) && !defined(_BSD_SOURCE) && !defined(_POSIX_SOURCE)
/* A strict C build shows no POSIX; this only adds declarations (set before the first system header). */
#define _POSIX_C_SOURCE 200809L
#endif

#ifndef SHMQ_H_INCLUDED
#define SHMQ_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

#ifdef SHMQ_STATIC
#if defined(__GNUC__) || defined(__clang__)
#define SHMQ_DEF static __attribute__((unused)) /* a program need not use them all */
#else
#define SHMQ_DEF static
#endif
#else
#define SHMQ_DEF extern
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---- errors: one list; the enum and shmq_strerror() both come from it ---- */
#define SHMQ_ERRORS(X) \
    X(SHMQ_OK,           0, "success") \
    X(SHMQ_EINVAL,      -1, "invalid argument (NULL pointer, zero or out-of-range size, misaligned memory, unknown flag)") \
    X(SHMQ_ENOMEM,      -2, "out of memory") \
    X(SHMQ_ESYS,        -3, "a system call failed (errno tells which)") \
    X(SHMQ_ETIMEDOUT,   -4, "timed out") \
    X(SHMQ_ECLOSED,     -5, "the queue is shut down (and, for pop, empty)") \
    X(SHMQ_EFULL,       -6, "the queue is full (after the timeout, if one was given)") \
    X(SHMQ_EEMPTY,      -7, "the queue is empty (after the timeout, if one was given)") \
    X(SHMQ_EMSGSIZE,    -8, "message size out of range: zero, or larger than the queue's max_message") \
    X(SHMQ_ENOBUFS,     -9, "the buffer is too small for the next message (it stays queued; *len gets its size)") \
    X(SHMQ_ENAME,      -10, "invalid name: \"/\" then 1..200 characters, no other \"/\"") \
    X(SHMQ_ENOENT,     -11, "no object of that name") \
    X(SHMQ_EEXIST,     -12, "an object of that name exists already") \
    X(SHMQ_EBADOBJ,    -13, "not a shm_queue.h object, or its header is corrupt") \
    X(SHMQ_EVERSION,   -14, "made by another layout version or wait mechanism of shm_queue.h") \
    X(SHMQ_ENOSPC,     -15, "no room for the shared memory (/dev/shm full or a limit reached)") \
    X(SHMQ_EOWNERDEAD, -16, "acquired, but the previous owner died holding it (the lock is usable)") \
    X(SHMQ_EPERM,      -17, "not the owner, or permission denied") \
    X(SHMQ_EDEADLK,    -18, "the calling thread holds this lock already") \
    X(SHMQ_EKIND,      -19, "the object is of another kind (e.g. a queue opened as a block)") \
    X(SHMQ_ENOTSUP,    -20, "not supported on this platform") \
    X(SHMQ_EOVERFLOW,  -21, "a size or count would overflow")

#define SHMQ__ENUM(name, value, text) name = value,
typedef enum shmq_errc { SHMQ_ERRORS(SHMQ__ENUM) SHMQ__ERRC_END = -1000 } shmq_errc;
#undef SHMQ__ENUM

/* The text of an error code. Never NULL ("unknown error" for codes not in the list). */
SHMQ_DEF const char *shmq_strerror(int code);
/* "0.2" */
SHMQ_DEF const char *shmq_version(void);

/* ---- flags of the create calls ---- */
#define SHMQ_REPLACE 1 /* the name exists: unlink it first (else SHMQ_EEXIST) */

/* ---- blocks ---- */
typedef struct shmq_block shmq_block_t;

/* Creates a block of `size` user bytes (> 0), zero-filled, with its memory
 * reserved now. name NULL: anonymous, shared with children forked later.
 * Returns 0, SHMQ_EINVAL, SHMQ_ENAME, SHMQ_EEXIST, SHMQ_ENOSPC, SHMQ_ENOMEM,
 * SHMQ_EPERM or SHMQ_ESYS; on failure *out is NULL and nothing is left behind. */
SHMQ_DEF int shmq_block_create(shmq_block_t **out, const char *name, size_t size, int flags);
/* Opens a block created by shmq_block_create (by any process of the same user).
 * Returns 0, SHMQ_ENAME, SHMQ_ENOENT, SHMQ_EBADOBJ, SHMQ_EVERSION, SHMQ_EKIND,
 * SHMQ_EPERM, SHMQ_ENOMEM or SHMQ_ESYS. Does not block (bar 1 s at most while
 * another process is still creating the name). */
SHMQ_DEF int shmq_block_open(shmq_block_t **out, const char *name);
/* The user bytes: 64-byte aligned, shmq_block_size() of them. */
SHMQ_DEF void *shmq_block_data(const shmq_block_t *b);
SHMQ_DEF size_t shmq_block_size(const shmq_block_t *b);
/* Unmaps the block and frees the handle (b may be NULL). The name stays until
 * shmq_unlink. Returns 0. */
SHMQ_DEF int shmq_block_close(shmq_block_t *b);
/* Removes a name (block or queue). Mappings stay valid until closed.
 * Returns 0, SHMQ_ENAME, SHMQ_ENOENT, SHMQ_EPERM or SHMQ_ESYS. */
SHMQ_DEF int shmq_unlink(const char *name);
/* Removes every name of ours whose creator process no longer exists (its pid
 * is gone, or now belongs to a process started later). *removed (may be NULL)
 * gets the count. Names of live creators, and names not made by this header,
 * are never touched. Returns 0, SHMQ_ENOTSUP (no SHMQ_SHM_DIR) or SHMQ_ESYS. */
SHMQ_DEF int shmq_sweep(int *removed);

/* ---- queues ---- */
typedef struct shmq_queue shmq_queue_t;

/* Bytes needed by shmq_queue_init for a queue of at least capacity_bytes of
 * max_message-byte slots (slots = capacity_bytes / max_message rounded up to a
 * power of two, at least 2). 0 if an argument is out of range. */
SHMQ_DEF size_t shmq_queue_bytes(size_t capacity_bytes, size_t max_message);
/* Builds a queue in caller memory (64-byte aligned, shared with the processes
 * that will use it), as many slots as fit in `bytes` (a power of two >= 2).
 * Call once, before anyone attaches. Returns 0 or SHMQ_EINVAL. */
SHMQ_DEF int shmq_queue_init(void *mem, size_t bytes, size_t max_message);
/* A handle on a queue built by shmq_queue_init at mem (in this process's
 * mapping). Returns 0, SHMQ_EINVAL, SHMQ_EBADOBJ, SHMQ_EVERSION or SHMQ_ENOMEM. */
SHMQ_DEF int shmq_queue_attach(shmq_queue_t **out, void *mem);
/* Creates a queue in a new block (name NULL: anonymous, shared with children
 * forked later). Flags: SHMQ_REPLACE. Errors as shmq_block_create. */
SHMQ_DEF int shmq_queue_create(shmq_queue_t **out, const char *name, size_t capacity_bytes,
                               size_t max_message, int flags);
/* Opens a named queue. Errors as shmq_block_open (SHMQ_EKIND if not a queue). */
SHMQ_DEF int shmq_queue_open(shmq_queue_t **out, const char *name);
/* Frees the handle (and unmaps the block of create/open). The queue itself
 * stays (see shmq_queue_shutdown, shmq_unlink). q may be NULL. Returns 0. */
SHMQ_DEF int shmq_queue_close(shmq_queue_t *q);

/* Appends len bytes (1..max_message). timeout_ms: -1 wait while full, 0 try,
 * > 0 wait at most that long. Returns 0, SHMQ_EFULL, SHMQ_ECLOSED,
 * SHMQ_EMSGSIZE or SHMQ_EINVAL. Any thread of any process. */
SHMQ_DEF int shmq_push(shmq_queue_t *q, const void *msg, size_t len, int timeout_ms);
/* Takes the oldest message into buf (cap bytes); *len gets its size. Returns 0,
 * SHMQ_EEMPTY, SHMQ_ECLOSED (shut down and empty), SHMQ_ENOBUFS (cap too
 * small: the message stays queued and *len gets the size needed) or SHMQ_EINVAL.
 * Any thread of any process. */
SHMQ_DEF int shmq_pop(shmq_queue_t *q, void *buf, size_t cap, size_t *len, int timeout_ms);
/* Never block: shmq_push/shmq_pop with timeout 0. */
SHMQ_DEF int shmq_try_push(shmq_queue_t *q, const void *msg, size_t len);
SHMQ_DEF int shmq_try_pop(shmq_queue_t *q, void *buf, size_t cap, size_t *len);
/* Shuts the queue down for every process: see DELIVERY CONTRACT. Wakes every
 * waiter. Idempotent. Returns 0 or SHMQ_EINVAL. */
SHMQ_DEF int shmq_queue_shutdown(shmq_queue_t *q);
/* 1 if shut down, else 0. */
SHMQ_DEF int shmq_queue_is_shutdown(const shmq_queue_t *q);
/* Messages queued or being pushed (a snapshot). */
SHMQ_DEF size_t shmq_queue_count(const shmq_queue_t *q);
/* Slots (messages the queue holds at most), and the largest message. */
SHMQ_DEF size_t shmq_queue_capacity(const shmq_queue_t *q);
SHMQ_DEF size_t shmq_queue_max_message(const shmq_queue_t *q);
/* How long this handle's waiters spin before they sleep: -1 adaptive up to
 * SHMQ_DEFAULT_SPIN_US (the default), 0 never spin, > 0 adaptive up to spin_us.
 * Returns 0 or SHMQ_EINVAL. */
SHMQ_DEF int shmq_queue_set_spin(shmq_queue_t *q, int spin_us);
/* Call after a process that used the queue died (the process pool does):
 * slots it held are released or redelivered now rather than when a waiter
 * next trips over them. Wakes every waiter. Returns the number of slots held
 * by dead processes that were found (>= 0), or SHMQ_EINVAL. */
SHMQ_DEF int shmq_queue_recover(shmq_queue_t *q);

/* ---- lock: a process-shared robust mutex in caller memory ---- */
typedef struct shmq_lock shmq_lock_t;
#define SHMQ_LOCK_BYTES 128 /* bytes a lock needs (64-byte aligned memory) */

/* Initialises a lock in mem (bytes >= SHMQ_LOCK_BYTES, 8-byte aligned, shared).
 * Once, before use. Returns 0, SHMQ_EINVAL or SHMQ_ESYS. */
SHMQ_DEF int shmq_lock_init(shmq_lock_t **out, void *mem, size_t bytes);
/* The lock initialised at mem. Returns 0, SHMQ_EINVAL, SHMQ_EBADOBJ or SHMQ_EVERSION. */
SHMQ_DEF int shmq_lock_attach(shmq_lock_t **out, void *mem);
/* Acquires. Returns 0; SHMQ_EOWNERDEAD (acquired: its previous holder died
 * holding it; the data it guards may be half-updated, the lock works on);
 * SHMQ_ETIMEDOUT; SHMQ_EDEADLK (this thread holds it); SHMQ_EINVAL. */
SHMQ_DEF int shmq_lock_acquire(shmq_lock_t *l, int timeout_ms);
/* Releases. Returns 0, SHMQ_EPERM (the caller does not hold it) or SHMQ_EINVAL. */
SHMQ_DEF int shmq_lock_release(shmq_lock_t *l);

/* ---- event: set / clear / wait, in caller memory ---- */
typedef struct shmq_event shmq_event_t;
#define SHMQ_EVENT_BYTES 192

SHMQ_DEF int shmq_event_init(shmq_event_t **out, void *mem, size_t bytes); /* starts clear */
SHMQ_DEF int shmq_event_attach(shmq_event_t **out, void *mem);
/* Sets the event and wakes every waiter. Returns 0 or SHMQ_EINVAL. */
SHMQ_DEF int shmq_event_set(shmq_event_t *e);
SHMQ_DEF int shmq_event_clear(shmq_event_t *e);
/* 1 if set, 0 if clear. */
SHMQ_DEF int shmq_event_is_set(const shmq_event_t *e);
/* Waits until set: 0, SHMQ_ETIMEDOUT or SHMQ_EINVAL. */
SHMQ_DEF int shmq_event_wait(shmq_event_t *e, int timeout_ms);

/* ---- semaphore, in caller memory ---- */
typedef struct shmq_sem shmq_sem_t;
#define SHMQ_SEM_BYTES 192

SHMQ_DEF int shmq_sem_init(shmq_sem_t **out, void *mem, size_t bytes, uint32_t initial);
SHMQ_DEF int shmq_sem_attach(shmq_sem_t **out, void *mem);
/* Adds one and wakes one waiter. Returns 0, SHMQ_EOVERFLOW or SHMQ_EINVAL. */
SHMQ_DEF int shmq_sem_post(shmq_sem_t *s);
/* Takes one, waiting while zero: 0, SHMQ_ETIMEDOUT or SHMQ_EINVAL. */
SHMQ_DEF int shmq_sem_wait(shmq_sem_t *s, int timeout_ms);
/* The current count (a snapshot). */
SHMQ_DEF uint32_t shmq_sem_value(const shmq_sem_t *s);

#ifdef __cplusplus
}
#endif

#endif /* SHMQ_H_INCLUDED */

/* ======================================================================== */
/* IMPLEMENTATION                                                            */
/* ======================================================================== */
#ifdef SHMQ_IMPLEMENTATION
#ifndef SHMQ__IMPLEMENTATION_DONE
#define SHMQ__IMPLEMENTATION_DONE

/* >>platform: the one switch. SHMQ__LINUX is 1 where Linux-only calls may be used. */
#if defined(__linux__) && !defined(SHMQ_NO_LINUX)
#define SHMQ__LINUX 1
#else
#define SHMQ__LINUX 0
#endif

#if defined(SHMQ_MALLOC) && defined(SHMQ_FREE) && defined(SHMQ_REALLOC)
/* ok: all three given */
#elif !defined(SHMQ_MALLOC) && !defined(SHMQ_FREE) && !defined(SHMQ_REALLOC)
#include <stdlib.h>
#define SHMQ_MALLOC(sz) malloc(sz)
#define SHMQ_REALLOC(p, sz) realloc(p, sz)
#define SHMQ_FREE(p) free(p)
#else
#error "shm_queue.h: define all of SHMQ_MALLOC, SHMQ_REALLOC and SHMQ_FREE, or none"
#endif

#ifndef SHMQ_ASSERT
#include <assert.h>
#define SHMQ_ASSERT(x) assert(x)
#endif

#ifndef SHMQ_SHM_DIR
#define SHMQ_SHM_DIR "/dev/shm"
#endif
#ifndef SHMQ_DEFAULT_SPIN_US
#define SHMQ_DEFAULT_SPIN_US 100
#endif

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <dirent.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>
#if SHMQ__LINUX
#include <sys/syscall.h>
#endif

#if defined(__GLIBC__) && !defined(__USE_XOPEN2K8)
#error "shm_queue.h: the implementation needs POSIX.1-2008: define _POSIX_C_SOURCE=200809L (or _GNU_SOURCE) before the first #include, or include shm_queue.h first"
#endif

#if SHMQ__LINUX && !defined(__cplusplus)
/* Declared by <unistd.h> only under _GNU_SOURCE/_DEFAULT_SOURCE; this is the same
 * declaration, so it is harmless where the header gave it too. (C++ compilers on
 * Linux always define _GNU_SOURCE.) */
extern long syscall(long number, ...);
#endif

/* >>atomics: the kit's one atomics shim (pool.h and taskflow.h use it too).
 * GCC/Clang __atomic builtins on plain integer and pointer objects: they work
 * the same in C99, C11 and C++, and need no _Atomic types in shared layouts. */
#define SHMQ__RELAXED __ATOMIC_RELAXED
#define SHMQ__ACQUIRE __ATOMIC_ACQUIRE
#define SHMQ__RELEASE __ATOMIC_RELEASE
#define SHMQ__ACQ_REL __ATOMIC_ACQ_REL
#define SHMQ__SEQ_CST __ATOMIC_SEQ_CST
#define shmq__load(p, mo) __atomic_load_n((p), (mo))
#define shmq__store(p, v, mo) __atomic_store_n((p), (v), (mo))
#define shmq__xchg(p, v, mo) __atomic_exchange_n((p), (v), (mo))
#define shmq__fetch_add(p, v, mo) __atomic_fetch_add((p), (v), (mo))
#define shmq__fetch_sub(p, v, mo) __atomic_fetch_sub((p), (v), (mo))
#define shmq__fetch_or(p, v, mo) __atomic_fetch_or((p), (v), (mo))
#define shmq__fetch_and(p, v, mo) __atomic_fetch_and((p), (v), (mo))
/* strong compare-and-swap; *expected is updated on failure */
#define shmq__cas(p, expected, desired) \
    __atomic_compare_exchange_n((p), (expected), (desired), 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)
/* the same, sequentially consistent (the sleep/wake handshakes need it) */
#define shmq__cas_sc(p, expected, desired) \
    __atomic_compare_exchange_n((p), (expected), (desired), 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)
#define shmq__fence(mo) __atomic_thread_fence(mo)

/* a polite busy-wait step */
#if defined(__x86_64__) || defined(__i386__)
#define shmq__cpu_relax() __asm__ __volatile__("pause")
#elif defined(__aarch64__)
#define shmq__cpu_relax() __asm__ __volatile__("yield")
#else
#define shmq__cpu_relax() ((void)0)
#endif

#define SHMQ__CACHELINE 64

/* compile-time checks */
#define SHMQ__STATIC_ASSERT(name, cond) typedef char shmq__assert_##name[(cond) ? 1 : -1]
/* private helpers pool.h uses; a program of shm_queue.h alone may not */
#define SHMQ__MAYBE_UNUSED __attribute__((unused))

/* ---------------------------------------------------------------------------
 * >>invariants
 *
 * Lock order: shmq has no locks of its own in the queue paths (they are
 * lock-free); the SHMQ_NO_LINUX wait fallback uses a semaphore, never a
 * mutex, so a process killed while waiting can wedge nothing. shmq_lock is
 * the user's lock and nothing inside shmq takes it.
 *
 * Shared layouts: fixed-width fields, offsets (never pointers), a magic and
 * a layout version first; hot fields on their own cache lines. Every field
 * says who writes it. "init" fields are written once by the creator before
 * its magic is published with a release store, and never change after.
 * ------------------------------------------------------------------------- */

#define SHMQ__LAYOUT_VERSION 2u
#define SHMQ__BLOCK_MAGIC 0x31424c4b514d4853ull /* "SHMQBLK1" */
#define SHMQ__QUEUE_MAGIC 0x3155455551484d53ull /* "SMHQQUE1" */
#define SHMQ__LOCK_MAGIC 0x314b434f4c514d53ull  /* "SMQLOCK1" */
#define SHMQ__EVENT_MAGIC 0x31544e4556514d53ull /* "SMQVENT1" */
#define SHMQ__SEM_MAGIC 0x314d4553514d4853ull   /* "SHMQSEM1" */
#define SHMQ__PREFIX "shmq."
#define SHMQ__NAME_MAX 200
#define SHMQ__WAIT_FUTEX 1u
#define SHMQ__WAIT_SEM 2u
#if SHMQ__LINUX
#define SHMQ__WAIT_KIND SHMQ__WAIT_FUTEX
#else
#define SHMQ__WAIT_KIND SHMQ__WAIT_SEM
#endif

#define SHMQ__KIND_RAW 1u
#define SHMQ__KIND_QUEUE 2u

/* >>errors */
SHMQ_DEF const char *shmq_strerror(int code)
{
#define SHMQ__CASE(name, value, text) case value: return text;
    switch (code) {
        SHMQ_ERRORS(SHMQ__CASE)
    default: break;
    }
#undef SHMQ__CASE
    return "unknown error";
}

SHMQ_DEF const char *shmq_version(void) { return "0.2"; }

static int shmq__from_errno(int e)
{
    switch (e) {
    case ENOENT: return SHMQ_ENOENT;
    case EEXIST: return SHMQ_EEXIST;
    case EACCES: case EPERM: return SHMQ_EPERM;
    case ENOMEM: return SHMQ_ENOMEM;
    case ENOSPC: case EFBIG: return SHMQ_ENOSPC;
    case ENAMETOOLONG: case EINVAL: return SHMQ_ENAME;
    default: return SHMQ_ESYS;
    }
}

/* >>time */
static int64_t shmq__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* CPUs this process may run on: its affinity mask on Linux (taskset, cpusets,
 * container limits by cpuset), else the online CPUs. Spinning only pays when
 * the peer can run meanwhile. */
SHMQ__MAYBE_UNUSED static long shmq__ncpus(void)
{
#if SHMQ__LINUX
    unsigned long mask[16]; /* 1024 CPUs; more: the syscall fails, sysconf answers */
    long r = syscall(SYS_sched_getaffinity, 0, sizeof mask, mask), n = 0, i;
    for (i = 0; r > 0 && i < r / (long)sizeof mask[0]; i++) {
        unsigned long v = mask[i];
        while (v) {
            v &= v - 1;
            n++;
        }
    }
    if (n > 0) return n;
#endif
    return sysconf(_SC_NPROCESSORS_ONLN);
}

/* timeout in ms -> absolute monotonic deadline in ns; -1 means none */
static int64_t shmq__deadline(int timeout_ms)
{
    if (timeout_ms < 0) return -1;
    return shmq__now_ns() + (int64_t)timeout_ms * 1000000;
}

static void shmq__sleep_ns(int64_t ns)
{
    struct timespec ts;
    if (ns <= 0) return;
    ts.tv_sec = (time_t)(ns / 1000000000);
    ts.tv_nsec = (long)(ns % 1000000000);
    nanosleep(&ts, NULL);
}

/* >>process: who we are, whether another process is alive */

#define SHMQ__OWNER_BITS 24
#define SHMQ__OWNER_MASK 0xFFFFFFu
#define SHMQ__OWNER_UNKNOWN 0xFFFFFFu /* a pid that does not fit: never reclaimed */

/* getpid() is a system call; push and pop need the pid on every call, so it is
 * cached, and the cache is dropped in fork children (pthread_atfork). This is
 * the one piece of process-wide state: it caches a fact, it holds no error. */
static uint32_t shmq__pid_cache;
static pthread_once_t shmq__pid_once = PTHREAD_ONCE_INIT;
static void shmq__atfork_child(void) { shmq__store(&shmq__pid_cache, 0u, SHMQ__RELAXED); }
static void shmq__pid_once_init(void) { pthread_atfork(NULL, NULL, shmq__atfork_child); }

static uint32_t shmq__self_pid(void)
{
    uint32_t p = shmq__load(&shmq__pid_cache, SHMQ__RELAXED);
    if (p == 0) {
        pthread_once(&shmq__pid_once, shmq__pid_once_init);
        p = (uint32_t)getpid();
        shmq__store(&shmq__pid_cache, p, SHMQ__RELAXED);
    }
    return p;
}

/* the owner tag stored in slot state words */
static uint32_t shmq__self_owner(void)
{
    uint32_t p = shmq__self_pid();
    return p < SHMQ__OWNER_UNKNOWN ? p : SHMQ__OWNER_UNKNOWN;
}

/* Start time of a process, in clock ticks after boot (/proc/PID/stat field
 * 22); 0 when unknown. With the pid it names a process uniquely. */
static uint64_t shmq__proc_start_time(long pid)
{
#if SHMQ__LINUX
    char path[64], buf[1024];
    const char *p;
    ssize_t n;
    int fd, field;
    uint64_t v = 0;
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    p = strrchr(buf, ')'); /* the command name may hold spaces and parentheses */
    if (!p) return 0;
    /* after ") " comes field 3 (state); starttime is field 22 */
    for (field = 2; *p && field < 22; p++)
        if (*p == ' ') field++;
    while (*p >= '0' && *p <= '9') v = v * 10 + (uint64_t)(*p++ - '0');
    return v;
#else
    (void)pid;
    return 0;
#endif
}

/* 1 if pid surely names no live process (gone, or a zombie), else 0.
 * The zombie check reads /proc: callers that may run often use the quick form. */
static int shmq__pid_gone(uint32_t pid, int zombies_too)
{
    if (pid == 0 || pid >= SHMQ__OWNER_UNKNOWN) return 0;
    if (kill((pid_t)pid, 0) == -1 && errno == ESRCH) return 1;
#if SHMQ__LINUX
    if (zombies_too) {
        /* kill() succeeds on a zombie: it is dead for us all the same */
        char path[64], buf[512];
        const char *p;
        ssize_t n;
        int fd;
        snprintf(path, sizeof path, "/proc/%u/stat", (unsigned)pid);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) return errno == ENOENT;
        n = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (n <= 0) return 0;
        buf[n] = 0;
        p = strrchr(buf, ')');
        if (p && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X')) return 1;
    }
#else
    (void)zombies_too;
#endif
    return 0;
}

static int shmq__pid_dead(uint32_t pid) { return shmq__pid_gone(pid, 1); }

/* >>wait: the process-shared sleep/wake primitive (futex, or the POSIX fallback)
 *
 * A shmq__wait is 128 bytes of shared memory holding a 32-bit word. Waiters
 * sleep while the word equals the value they expect; wakers change the word
 * first, then call shmq__futex_wake. On Linux that is a futex (not PRIVATE:
 * the word is shared between processes). With SHMQ_NO_LINUX it is a
 * process-shared POSIX semaphore plus a count of sleepers: a waiter counts
 * itself, re-checks the word (seq_cst on both sides, so either it sees the
 * new value or the waker sees it counted), then sleeps on the semaphore; the
 * waker posts at most as many tokens as there are sleepers. A condition
 * variable is deliberately not used: glibc's process-shared condvar can block
 * signalers forever once a waiter was killed inside pthread_cond_wait, and a
 * killed idle waiter is the common case here. A semaphore has no such state;
 * a dead sleeper costs at most one spurious wakeup per wake.
 */
typedef struct shmq__wait {
    uint32_t word;  /* the value waited on (atomic; meaning set by the user of the wait) */
    uint32_t nwait; /* fallback: sleepers on sem (atomic; may overcount after deaths) */
    uint32_t mode;  /* init: SHMQ__WAIT_FUTEX, SHMQ__WAIT_SEM, or 3 = poll (no sem_t) */
    uint32_t woke_at; /* atomic relaxed: low 32 bits of the monotonic ns of the last wake */
    union {
        unsigned char bytes[112];
        uint64_t align_;
    } sync; /* fallback: a process-shared sem_t */
} shmq__wait;
SHMQ__STATIC_ASSERT(wait_size, sizeof(shmq__wait) == 128);
#if !SHMQ__LINUX && !defined(__APPLE__)
SHMQ__STATIC_ASSERT(sem_fits, sizeof(sem_t) <= 112);
#endif

/* Initialises w with word = initial. Before any process uses it. 0 or SHMQ_ESYS. */
static int shmq__wait_init(shmq__wait *w, uint32_t initial)
{
    memset(w, 0, sizeof *w);
    w->word = initial;
#if SHMQ__LINUX
    w->mode = SHMQ__WAIT_FUTEX;
#elif defined(__APPLE__)
    w->mode = 3; /* no unnamed process-shared semaphores: waits nap and re-check */
#else
    w->mode = SHMQ__WAIT_SEM;
    if (sem_init((sem_t *)(void *)w->sync.bytes, 1, 0) != 0) {
        if (errno != ENOSYS) return SHMQ_ESYS;
        w->mode = 3;
    }
#endif
    return 0;
}

#if SHMQ__LINUX
#define SHMQ__FUTEX_WAKE 1
#define SHMQ__FUTEX_WAIT_BITSET 9
static int shmq__sys_futex_wait(uint32_t *addr, uint32_t expected, int64_t deadline_ns)
{
    struct timespec ts;
    long r;
    if (deadline_ns >= 0) {
        ts.tv_sec = (time_t)(deadline_ns / 1000000000);
        ts.tv_nsec = (long)(deadline_ns % 1000000000);
    }
    /* WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline: no drift across retries */
    r = syscall(SYS_futex, addr, SHMQ__FUTEX_WAIT_BITSET, expected,
                deadline_ns >= 0 ? &ts : NULL, NULL, 0xFFFFFFFFu);
    if (r == -1 && errno == ETIMEDOUT) return SHMQ_ETIMEDOUT;
    if (r == -1 && errno == EAGAIN) return 1; /* the value had changed: no sleep */
    return 0; /* woken, or a signal (EINTR): callers re-check */
}
#endif

/* Sleeps while w->word == expected, until woken or the monotonic deadline
 * (ns, -1: none). Returns 0 (woken, or spurious), 1 (did not sleep: the word
 * had already changed) or SHMQ_ETIMEDOUT; all but the timeout mean re-check. */
static int shmq__wait_until(shmq__wait *w, uint32_t expected, int64_t deadline_ns)
{
#if SHMQ__LINUX
    if (deadline_ns >= 0 && shmq__now_ns() >= deadline_ns) return SHMQ_ETIMEDOUT;
    return shmq__sys_futex_wait(&w->word, expected, deadline_ns);
#else
    int64_t now = shmq__now_ns();
    if (deadline_ns >= 0 && now >= deadline_ns) return SHMQ_ETIMEDOUT;
    if (shmq__load(&w->mode, SHMQ__RELAXED) != SHMQ__WAIT_SEM) {
        int64_t nap = 1000000; /* poll mode: nap 1 ms at most, then the caller re-checks */
        if (shmq__load(&w->word, SHMQ__SEQ_CST) != expected) return 1;
        if (deadline_ns >= 0 && deadline_ns - now < nap) nap = deadline_ns - now;
        shmq__sleep_ns(nap);
        return 0;
    }
#if !defined(__APPLE__)
    {
        sem_t *sem = (sem_t *)(void *)w->sync.bytes;
        int r;
        shmq__fetch_add(&w->nwait, 1u, SHMQ__SEQ_CST);
        if (shmq__load(&w->word, SHMQ__SEQ_CST) != expected) {
            shmq__fetch_sub(&w->nwait, 1u, SHMQ__SEQ_CST);
            return 1;
        }
        if (deadline_ns < 0) {
            r = sem_wait(sem);
        } else {
            struct timespec rt;
            int64_t abs_ns;
            clock_gettime(CLOCK_REALTIME, &rt);
            abs_ns = (int64_t)rt.tv_sec * 1000000000 + rt.tv_nsec + (deadline_ns - now);
            rt.tv_sec = (time_t)(abs_ns / 1000000000);
            rt.tv_nsec = (long)(abs_ns % 1000000000);
            r = sem_timedwait(sem, &rt);
        }
        shmq__fetch_sub(&w->nwait, 1u, SHMQ__SEQ_CST);
        if (r != 0 && errno == ETIMEDOUT) return SHMQ_ETIMEDOUT;
        return 0;
    }
#else
    return 0;
#endif
#endif
}

/* Wakes up to n sleepers of w (INT_MAX: all). Change w->word first. */
static void shmq__futex_wake(shmq__wait *w, int n)
{
#if SHMQ__LINUX
    syscall(SYS_futex, &w->word, SHMQ__FUTEX_WAKE, n, NULL, NULL, 0);
#else
    if (shmq__load(&w->mode, SHMQ__RELAXED) != SHMQ__WAIT_SEM) return;
#if !defined(__APPLE__)
    {
        sem_t *sem = (sem_t *)(void *)w->sync.bytes;
        uint32_t k = shmq__load(&w->nwait, SHMQ__SEQ_CST);
        int v = 0;
        if (k == 0) return;
        if (n >= 0 && (uint32_t)n < k) k = (uint32_t)n;
        if (k > 1024) k = 1024; /* a bound against counts left by many dead sleepers */
        if (sem_getvalue(sem, &v) != 0) v = 0;
        while (v < (int)k) {
            if (sem_post(sem) != 0) break;
            v++;
        }
    }
#else
    (void)n;
#endif
#endif
}

/* The form pool.h uses: sleeps while w->word == expected, at most timeout_ms
 * (-1: no limit). SHMQ_ETIMEDOUT, or anything else: re-check. */
SHMQ__MAYBE_UNUSED static int shmq__futex_wait(shmq__wait *w, uint32_t expected, int timeout_ms)
{
    return shmq__wait_until(w, expected, shmq__deadline(timeout_ms));
}

/* >>wake: the "wake-on-change" flag protocol of the queue's two wait words.
 * Bit 0 of the word says "someone sleeps or is about to"; the rest is a
 * generation. A sleeper sets the flag (seq_cst CAS), re-checks the slot it
 * needs (seq_cst load), then sleeps while the word is unchanged. The other
 * side reads the flag right after its own seq_cst CAS that claims a slot, and
 * if it was set, bumps the generation, clears the flag and issues the
 * (system-call) wake once it has published the slot. That is Dekker's
 * pattern with the claim CAS as the full barrier: if the sleeper's re-check
 * found the slot free (not yet claimed), the claimer's flag read comes after
 * the sleeper's flag write and sees it. So publishing needs no second locked
 * instruction; the price is that a sleeper whose re-check finds the slot
 * *claimed* (mid-copy) may not be woken by that claimer: it never sleeps
 * without a bound on such a slot (it spins, then naps; see shmq__await_change).
 * A sleeper killed while asleep leaves the flag set: the next waker clears it
 * with one wasted wake, so dead sleepers cost nothing lasting. */
static uint32_t shmq__wait_prepare(shmq__wait *w)
{
    uint32_t v = shmq__load(&w->word, SHMQ__SEQ_CST);
    while (!(v & 1u)) {
        if (shmq__cas_sc(&w->word, &v, v | 1u)) {
            v |= 1u;
            break;
        }
    }
    /* no fence here: the caller's re-check starts with a seq_cst load of the slot
     * state (push_once/pop_once), which is what orders it after this seq_cst CAS
     * (and TSan does not model standalone fences) */
    return v;
}

static void shmq__wake_all_gen(shmq__wait *w)
{
    uint32_t v = shmq__load(&w->word, SHMQ__SEQ_CST);
    while (!shmq__cas_sc(&w->word, &v, (v + 2u) & ~1u)) {
    }
    shmq__store(&w->woke_at, (uint32_t)shmq__now_ns(), SHMQ__RELAXED);
    shmq__futex_wake(w, INT_MAX);
}

/* The stamp lets a woken sleeper measure what a sleep cost it (see >>spin). */
static void shmq__signal(shmq__wait *w)
{
    uint32_t v = shmq__load(&w->word, SHMQ__SEQ_CST);
    if ((v & 1u) && shmq__cas_sc(&w->word, &v, (v + 2u) & ~1u)) {
        shmq__store(&w->woke_at, (uint32_t)shmq__now_ns(), SHMQ__RELAXED);
        shmq__futex_wake(w, INT_MAX);
    }
}

/* >>names */

/* Validates a user name and writes "/shmq.<name>" to os (os_size bytes). */
static int shmq__os_name(const char *name, char *os, size_t os_size)
{
    size_t n, i;
    if (!name || name[0] != '/') return SHMQ_ENAME;
    n = strlen(name + 1);
    if (n == 0 || n > SHMQ__NAME_MAX) return SHMQ_ENAME;
    for (i = 1; i <= n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c == '/' || c < 0x20 || c == 0x7f) return SHMQ_ENAME;
    }
    if (strcmp(name + 1, ".") == 0 || strcmp(name + 1, "..") == 0) return SHMQ_ENAME;
    if (n + sizeof(SHMQ__PREFIX) + 1 > os_size) return SHMQ_ENAME;
    os[0] = '/';
    memcpy(os + 1, SHMQ__PREFIX, sizeof(SHMQ__PREFIX) - 1);
    memcpy(os + sizeof(SHMQ__PREFIX), name + 1, n + 1);
    return 0;
}

/* >>block
 *
 * Layout of a block: a 128-byte header, then the user data (64-aligned).
 * Every header field is "init" (written by the creator before magic).
 */
typedef struct shmq__bhdr {
    uint64_t magic;         /* SHMQ__BLOCK_MAGIC, stored last with release */
    uint32_t version;       /* SHMQ__LAYOUT_VERSION */
    uint32_t hdr_size;      /* 128: where the data starts */
    uint64_t size;          /* bytes of the whole block (header included) */
    uint64_t data_size;     /* bytes of user data */
    uint64_t creator_pid;   /* the process that created the block */
    uint64_t creator_start; /* its start time (shmq__proc_start_time), 0 unknown */
    uint32_t kind;          /* SHMQ__KIND_RAW or SHMQ__KIND_QUEUE */
    uint32_t wait_kind;     /* SHMQ__WAIT_KIND of the creator's build */
    uint64_t created_ns;    /* CLOCK_REALTIME of creation, for humans */
    unsigned char pad_[128 - 64];
} shmq__bhdr;
SHMQ__STATIC_ASSERT(bhdr_size, sizeof(shmq__bhdr) == 128);

struct shmq_block {
    shmq__bhdr *hdr; /* the mapping (header first) */
    size_t map_size; /* bytes mapped */
};

#define SHMQ__MAX_SIZE ((size_t)1 << 46)

static int shmq__anon_fd(void)
{
#if SHMQ__LINUX && defined(SYS_memfd_create)
    int mfd = (int)syscall(SYS_memfd_create, "shmq", 1u /* MFD_CLOEXEC */);
    if (mfd >= 0 || errno != ENOSYS) return mfd;
#endif
    {
        /* POSIX: a fresh unique name, unlinked at once */
        char nm[64];
        static uint32_t counter; /* only makes names unique within the process */
        int tries, fd = -1;
        for (tries = 0; tries < 100; tries++) {
            uint32_t c = shmq__fetch_add(&counter, 1u, SHMQ__RELAXED);
            snprintf(nm, sizeof nm, "/" SHMQ__PREFIX "anon.%u.%u.%u", (unsigned)shmq__self_pid(), c,
                     (unsigned)(shmq__now_ns() & 0xFFFFF));
            fd = shm_open(nm, O_RDWR | O_CREAT | O_EXCL, 0600);
            if (fd >= 0) {
                shm_unlink(nm);
                fcntl(fd, F_SETFD, FD_CLOEXEC);
                return fd;
            }
            if (errno != EEXIST) break;
        }
        return -1;
    }
}

/* Reserves `size` bytes of storage for fd, so that later page faults cannot SIGBUS. */
static int shmq__reserve(int fd, size_t size)
{
#if defined(__APPLE__)
    return ftruncate(fd, (off_t)size) == 0 ? 0 : shmq__from_errno(errno);
#else
    int r = posix_fallocate(fd, 0, (off_t)size);
    if (r == 0) return 0;
    if (r == EINVAL || r == EOPNOTSUPP) /* a file system without it: size only */
        return ftruncate(fd, (off_t)size) == 0 ? 0 : shmq__from_errno(errno);
    if (r == ENOSPC || r == EFBIG || r == ENOMEM) return SHMQ_ENOSPC;
    errno = r;
    return SHMQ_ESYS;
#endif
}

/* Creates and maps a block with a header of the given kind. */
static int shmq__block_make(shmq_block_t **out, const char *name, size_t data_size, int flags,
                            uint32_t kind)
{
    char os[SHMQ__NAME_MAX + 16];
    shmq_block_t *b;
    shmq__bhdr *h;
    void *m;
    size_t total;
    int fd, rc, e;
    struct timespec rt;
    if (!out) return SHMQ_EINVAL;
    *out = NULL;
    if (data_size == 0 || data_size > SHMQ__MAX_SIZE || (flags & ~SHMQ_REPLACE)) return SHMQ_EINVAL;
    if (name && (rc = shmq__os_name(name, os, sizeof os)) != 0) return rc;
    total = sizeof(shmq__bhdr) + ((data_size + 63) & ~(size_t)63);
    b = (shmq_block_t *)SHMQ_MALLOC(sizeof *b);
    if (!b) return SHMQ_ENOMEM;
    if (name) {
        fd = shm_open(os, O_RDWR | O_CREAT | O_EXCL, 0600);
        if (fd < 0 && errno == EEXIST && (flags & SHMQ_REPLACE)) {
            shm_unlink(os);
            fd = shm_open(os, O_RDWR | O_CREAT | O_EXCL, 0600);
        }
    } else {
        fd = shmq__anon_fd();
    }
    if (fd < 0) {
        e = errno;
        SHMQ_FREE(b);
        errno = e;
        return shmq__from_errno(e);
    }
    rc = shmq__reserve(fd, total);
    if (rc == 0) {
        m = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (m == MAP_FAILED) rc = errno == ENOMEM ? SHMQ_ENOMEM : SHMQ_ESYS;
    }
    e = errno;
    close(fd);
    if (rc != 0) {
        if (name) shm_unlink(os);
        SHMQ_FREE(b);
        errno = e;
        return rc;
    }
    h = (shmq__bhdr *)m;
    h->version = SHMQ__LAYOUT_VERSION;
    h->hdr_size = (uint32_t)sizeof(shmq__bhdr);
    h->size = total;
    h->data_size = data_size;
    h->creator_pid = shmq__self_pid();
    h->creator_start = shmq__proc_start_time((long)shmq__self_pid());
    h->kind = kind;
    h->wait_kind = SHMQ__WAIT_KIND;
    clock_gettime(CLOCK_REALTIME, &rt);
    h->created_ns = (uint64_t)rt.tv_sec * 1000000000u + (uint64_t)rt.tv_nsec;
    b->hdr = h;
    b->map_size = total;
    *out = b;
    return 0;
}

static void shmq__block_publish(shmq_block_t *b)
{
    shmq__store(&b->hdr->magic, SHMQ__BLOCK_MAGIC, SHMQ__RELEASE);
}

/* Checks a mapped header against the file size. 0, or a named error; 1: not ready yet. */
static int shmq__check_bhdr(const shmq__bhdr *h, size_t file_size)
{
    uint64_t magic = shmq__load(&h->magic, SHMQ__ACQUIRE);
    if (magic == 0) return 1;
    if (magic != SHMQ__BLOCK_MAGIC) return SHMQ_EBADOBJ;
    if (h->version != SHMQ__LAYOUT_VERSION) return SHMQ_EVERSION;
    if (h->wait_kind != SHMQ__WAIT_KIND) return SHMQ_EVERSION;
    if (h->hdr_size != sizeof(shmq__bhdr) || h->size != file_size ||
        h->data_size == 0 || h->data_size > h->size - sizeof(shmq__bhdr))
        return SHMQ_EBADOBJ;
    if (h->kind != SHMQ__KIND_RAW && h->kind != SHMQ__KIND_QUEUE) return SHMQ_EBADOBJ;
    return 0;
}

static int shmq__block_map(shmq_block_t **out, const char *name, uint32_t kind)
{
    char os[SHMQ__NAME_MAX + 16];
    shmq_block_t *b;
    struct stat st;
    void *m = MAP_FAILED;
    size_t size = 0;
    int fd, rc, tries, e;
    if (!out) return SHMQ_EINVAL;
    *out = NULL;
    if ((rc = shmq__os_name(name, os, sizeof os)) != 0) return rc;
    fd = shm_open(os, O_RDWR, 0);
    if (fd < 0) return shmq__from_errno(errno);
    /* The creator may still be sizing or filling it: wait a little (<= 1 s). */
    for (tries = 0;; tries++) {
        if (fstat(fd, &st) != 0) {
            e = errno;
            close(fd);
            errno = e;
            return SHMQ_ESYS;
        }
        size = (size_t)st.st_size;
        rc = 1;
        if (st.st_size >= (off_t)sizeof(shmq__bhdr)) {
            m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            if (m == MAP_FAILED) {
                e = errno;
                close(fd);
                errno = e;
                return e == ENOMEM ? SHMQ_ENOMEM : SHMQ_ESYS;
            }
            rc = shmq__check_bhdr((const shmq__bhdr *)m, size);
            if (rc != 1) break;
            munmap(m, size);
            m = MAP_FAILED;
        }
        if (tries >= 100) {
            rc = SHMQ_EBADOBJ;
            break;
        }
        shmq__sleep_ns(10000000);
    }
    close(fd);
    if (rc == 0 && ((const shmq__bhdr *)m)->kind != kind) rc = SHMQ_EKIND;
    if (rc != 0) {
        if (m != MAP_FAILED) munmap(m, size);
        return rc;
    }
    b = (shmq_block_t *)SHMQ_MALLOC(sizeof *b);
    if (!b) {
        munmap(m, size);
        return SHMQ_ENOMEM;
    }
    b->hdr = (shmq__bhdr *)m;
    b->map_size = size;
    *out = b;
    return 0;
}

SHMQ_DEF int shmq_block_create(shmq_block_t **out, const char *name, size_t size, int flags)
{
    int rc = shmq__block_make(out, name, size, flags, SHMQ__KIND_RAW);
    if (rc == 0) shmq__block_publish(*out);
    return rc;
}

SHMQ_DEF int shmq_block_open(shmq_block_t **out, const char *name)
{
    return shmq__block_map(out, name, SHMQ__KIND_RAW);
}

SHMQ_DEF void *shmq_block_data(const shmq_block_t *b)
{
    return b ? (void *)((unsigned char *)b->hdr + sizeof(shmq__bhdr)) : NULL;
}

SHMQ_DEF size_t shmq_block_size(const shmq_block_t *b)
{
    return b ? (size_t)b->hdr->data_size : 0;
}

SHMQ_DEF int shmq_block_close(shmq_block_t *b)
{
    if (!b) return 0;
    munmap((void *)b->hdr, b->map_size);
    SHMQ_FREE(b);
    return 0;
}

SHMQ_DEF int shmq_unlink(const char *name)
{
    char os[SHMQ__NAME_MAX + 16];
    int rc = shmq__os_name(name, os, sizeof os);
    if (rc != 0) return rc;
    if (shm_unlink(os) != 0) return shmq__from_errno(errno);
    return 0;
}

/* 1 if the creator recorded in h is gone (or its pid now names a younger process). */
static int shmq__creator_gone(const shmq__bhdr *h)
{
    uint64_t pid = h->creator_pid;
    if (pid == 0 || pid >= 0x7FFFFFFFu) return 0;
    if (kill((pid_t)pid, 0) == -1 && errno == ESRCH) return 1;
    if (shmq__pid_dead((uint32_t)pid)) return 1;
    if (h->creator_start != 0) {
        uint64_t now = shmq__proc_start_time((long)pid);
        if (now != 0 && now != h->creator_start) return 1;
    }
    return 0;
}

SHMQ_DEF int shmq_sweep(int *removed)
{
    DIR *d;
    struct dirent *e;
    int n = 0;
    if (removed) *removed = 0;
    d = opendir(SHMQ_SHM_DIR);
    if (!d) return SHMQ_ENOTSUP;
    while ((e = readdir(d)) != NULL) {
        char os[SHMQ__NAME_MAX + 16];
        struct stat st;
        void *m;
        int fd, gone = 0;
        if (strncmp(e->d_name, SHMQ__PREFIX, sizeof(SHMQ__PREFIX) - 1) != 0) continue;
        if (strlen(e->d_name) + 2 > sizeof os) continue;
        os[0] = '/';
        strcpy(os + 1, e->d_name);
        fd = shm_open(os, O_RDONLY, 0);
        if (fd < 0) continue;
        if (fstat(fd, &st) == 0 && st.st_size >= (off_t)sizeof(shmq__bhdr)) {
            m = mmap(NULL, sizeof(shmq__bhdr), PROT_READ, MAP_SHARED, fd, 0);
            if (m != MAP_FAILED) {
                const shmq__bhdr *h = (const shmq__bhdr *)m;
                uint64_t magic = shmq__load(&h->magic, SHMQ__ACQUIRE);
                /* ours only (magic); a creator that died before publishing counts too */
                if ((magic == SHMQ__BLOCK_MAGIC && h->version == SHMQ__LAYOUT_VERSION) ||
                    (magic == 0 && h->creator_pid != 0))
                    gone = shmq__creator_gone(h);
                munmap(m, sizeof(shmq__bhdr));
            }
        }
        close(fd);
        if (gone && shm_unlink(os) == 0) n++;
    }
    closedir(d);
    if (removed) *removed = n;
    return 0;
}

/* >>queue
 *
 * Shared layout (offsets from the queue header, all fixed width):
 *
 *   0     header line: init fields, then `closed`
 *   64    tail   (producers; atomic)
 *   128   head   (consumers; atomic)
 *   192   not_empty wait (consumers sleep, producers wake)
 *   320   not_full  wait (producers sleep, consumers wake)
 *   448   rescan epoch (atomic)
 *   512   slot 0, slot 1, ... each `stride` bytes:
 *           uint64 state   seq (40 bits) << 24 | owner pid (24 bits); atomic
 *           uint32 len     message bytes; written by the slot's producer while it owns
 *                          the slot, read by consumers (atomic, relaxed)
 *           uint32 pad
 *           data[stride - 16]
 *
 * Slot states for position p (slot p % n); only the owner changes a state
 * it owns (or, with a CAS, a process that found the owner dead: Recovery),
 * everybody else may CAS an ownerless state:
 *
 *   (p,   0)  free for the producer of p           producer CAS -> (p, me)
 *   (p,   X)  being written by X                   X stores     -> (p+1, 0)
 *   (p+1, 0)  holds message p                      consumer CAS -> (p+1, me)
 *   (p+1, Y)  being read by Y                      Y stores     -> (p+n, 0)
 *
 * head and tail are hints kept up by whoever passes: a slot is claimed first
 * (with the owner's pid, in the same CAS) and the index advanced after, by
 * the claimer (a plain store: a rare step back is harmless) or by anyone who
 * sees the slot at the hint already claimed or done (a CAS). So there is no moment
 * when a position is taken but its taker is unrecorded: a dead process is
 * always named in the state of the one slot it held. Recovery:
 *
 *   (p, X) and X dead: the consumer of p CASes it to (p+n, 0): the unfinished
 *       message is dropped (its push never returned), the slot is free again.
 *   (p+1, Y) and Y dead: a consumer CASes it to (p+1, me) and delivers the
 *       message itself (Y's pop never returned, so nobody has seen it).
 *
 * Wrap-around: seq has 40 bits, so a CAS could only be fooled by a thread
 * stalled across 2^40 operations on one queue.
 */
typedef struct shmq__qhdr {
    uint64_t magic;       /* init: SHMQ__QUEUE_MAGIC (release, last) */
    uint32_t version;     /* init */
    uint32_t wait_kind;   /* init */
    uint64_t bytes;       /* init: bytes of the whole queue object */
    uint64_t nslots;      /* init: power of two */
    uint32_t max_message; /* init */
    uint32_t stride;      /* init: bytes per slot */
    uint32_t closed;      /* atomic: 0 open, 1 shut down (set once) */
    unsigned char pad0_[64 - 44];
    uint64_t tail; /* atomic: next position to push (a hint, see above) */
    unsigned char pad1_[56];
    uint64_t head; /* atomic: next position to pop (a hint) */
    unsigned char pad2_[56];
    shmq__wait not_empty; /* consumers sleep here (flag protocol) */
    shmq__wait not_full;  /* producers sleep here (flag protocol) */
    uint32_t rescan;      /* atomic: bumped when a dead reader may have left a message */
    unsigned char pad3_[60];
} shmq__qhdr;
SHMQ__STATIC_ASSERT(qhdr_size, sizeof(shmq__qhdr) == 512);

#define SHMQ__SLOT_HDR 16u
#define SHMQ__SEQ_BITS 40
#define SHMQ__SEQ_MASK ((((uint64_t)1) << SHMQ__SEQ_BITS) - 1)
#define SHMQ__MAX_SLOTS (((uint64_t)1) << 24)
#define SHMQ__MAX_MESSAGE ((size_t)1 << 30)
#define SHMQ__STUCK_NAP_NS 10000000 /* 10 ms: re-check a held slot's owner this often */
#define SHMQ__SCAN_EVERY_NS 50000000
#define SHMQ__WAKE_GUESS_NS 10000 /* a sleep's cost before any sleep was measured */
#define SHMQ__SPIN_MIN_NS 1000    /* the shortest spin budget */
#define SHMQ__WAKE_MAX_NS 1000000 /* longer samples are preemptions, not wake-ups */

struct shmq_queue {
    shmq__qhdr *h;
    unsigned char *slots;
    uint64_t nslots, mask;
    uint32_t stride, max_message;
    uint32_t spin_max_ns; /* atomic relaxed; 0: never spin */
    uint32_t spin_cur_ns; /* atomic relaxed: the adaptive spin budget (0: sleep at once) */
    int64_t spin_avg_ns;  /* atomic relaxed: moving average of whole waits */
    int64_t wake_ns;      /* atomic relaxed: moving average of what a sleep cost */
    uint32_t spin_skip;   /* atomic relaxed: counts waits that did not spin */
    uint32_t seen_rescan; /* atomic relaxed: rescan epoch at our last scan */
    int64_t last_scan_ns; /* atomic relaxed */
    uint64_t scan_cursor; /* atomic relaxed: next window of the periodic scan */
    shmq_block_t *block;  /* the block of create/open, else NULL */
};

static uint64_t shmq__mk(uint64_t seq, uint32_t owner)
{
    return ((seq & SHMQ__SEQ_MASK) << SHMQ__OWNER_BITS) | owner;
}
static uint64_t shmq__seq(uint64_t st) { return st >> SHMQ__OWNER_BITS; }
static uint32_t shmq__owner(uint64_t st) { return (uint32_t)(st & SHMQ__OWNER_MASK); }
/* seq - pos as a signed distance (40-bit wrap) */
static int64_t shmq__dif(uint64_t seq, uint64_t pos)
{
    uint64_t d = (seq - pos) & SHMQ__SEQ_MASK;
    return (d & ((uint64_t)1 << (SHMQ__SEQ_BITS - 1))) ? (int64_t)d - ((int64_t)1 << SHMQ__SEQ_BITS)
                                                       : (int64_t)d;
}

static unsigned char *shmq__slot(const shmq_queue_t *q, uint64_t pos)
{
    return q->slots + (size_t)(pos & q->mask) * q->stride;
}
static uint64_t *shmq__slot_state(unsigned char *s) { return (uint64_t *)(void *)s; }
static uint32_t *shmq__slot_len(unsigned char *s) { return (uint32_t *)(void *)(s + 8); }
static unsigned char *shmq__slot_data(unsigned char *s) { return s + SHMQ__SLOT_HDR; }

/* Slots are whole cache lines: a producer filling slot i+1 must not steal the
 * line a consumer is reading slot i from (worth ~1.5x in 1->1 throughput). */
static uint32_t shmq__stride(size_t max_message)
{
    return (uint32_t)((SHMQ__SLOT_HDR + max_message + SHMQ__CACHELINE - 1) &
                      ~(size_t)(SHMQ__CACHELINE - 1));
}

SHMQ_DEF size_t shmq_queue_bytes(size_t capacity_bytes, size_t max_message)
{
    uint64_t want, n = 2;
    if (max_message == 0 || max_message > SHMQ__MAX_MESSAGE || capacity_bytes == 0) return 0;
    want = (capacity_bytes + max_message - 1) / max_message;
    while (n < want && n < SHMQ__MAX_SLOTS) n <<= 1;
    if (n < want) return 0;
    if ((uint64_t)shmq__stride(max_message) > (SIZE_MAX - sizeof(shmq__qhdr)) / n) return 0;
    return sizeof(shmq__qhdr) + (size_t)n * shmq__stride(max_message);
}

SHMQ_DEF int shmq_queue_init(void *mem, size_t bytes, size_t max_message)
{
    shmq__qhdr *h = (shmq__qhdr *)mem;
    uint64_t n = 2, i;
    uint32_t stride;
    int rc;
    if (!mem || ((uintptr_t)mem & 63) != 0) return SHMQ_EINVAL;
    if (max_message == 0 || max_message > SHMQ__MAX_MESSAGE) return SHMQ_EINVAL;
    stride = shmq__stride(max_message);
    if (bytes < sizeof(shmq__qhdr) || (bytes - sizeof(shmq__qhdr)) / stride < 2) return SHMQ_EINVAL;
    while (n * 2 <= (bytes - sizeof(shmq__qhdr)) / stride && n * 2 <= SHMQ__MAX_SLOTS) n *= 2;
    memset(h, 0, sizeof *h);
    h->version = SHMQ__LAYOUT_VERSION;
    h->wait_kind = SHMQ__WAIT_KIND;
    h->bytes = sizeof(shmq__qhdr) + n * stride;
    h->nslots = n;
    h->max_message = (uint32_t)max_message;
    h->stride = stride;
    if ((rc = shmq__wait_init(&h->not_empty, 0)) != 0) return rc;
    if ((rc = shmq__wait_init(&h->not_full, 0)) != 0) return rc;
    for (i = 0; i < n; i++) {
        unsigned char *s = (unsigned char *)mem + sizeof(shmq__qhdr) + (size_t)i * stride;
        *shmq__slot_state(s) = shmq__mk(i, 0);
        *shmq__slot_len(s) = 0;
    }
    shmq__store(&h->magic, SHMQ__QUEUE_MAGIC, SHMQ__RELEASE);
    return 0;
}

SHMQ_DEF int shmq_queue_attach(shmq_queue_t **out, void *mem)
{
    shmq__qhdr *h = (shmq__qhdr *)mem;
    shmq_queue_t *q;
    if (!out) return SHMQ_EINVAL;
    *out = NULL;
    if (!mem || ((uintptr_t)mem & 63) != 0) return SHMQ_EINVAL;
    if (shmq__load(&h->magic, SHMQ__ACQUIRE) != SHMQ__QUEUE_MAGIC) return SHMQ_EBADOBJ;
    if (h->version != SHMQ__LAYOUT_VERSION || h->wait_kind != SHMQ__WAIT_KIND) return SHMQ_EVERSION;
    if (h->nslots < 2 || h->nslots > SHMQ__MAX_SLOTS || (h->nslots & (h->nslots - 1)) != 0 ||
        h->max_message == 0 || h->max_message > SHMQ__MAX_MESSAGE ||
        h->stride != shmq__stride(h->max_message) ||
        h->bytes != sizeof(shmq__qhdr) + h->nslots * h->stride)
        return SHMQ_EBADOBJ;
    q = (shmq_queue_t *)SHMQ_MALLOC(sizeof *q);
    if (!q) return SHMQ_ENOMEM;
    memset(q, 0, sizeof *q);
    q->h = h;
    q->slots = (unsigned char *)mem + sizeof(shmq__qhdr);
    q->nslots = h->nslots;
    q->mask = h->nslots - 1;
    q->stride = h->stride;
    q->max_message = h->max_message;
    q->spin_max_ns = shmq__ncpus() > 1 ? SHMQ_DEFAULT_SPIN_US * 1000u : 0u;
    q->wake_ns = SHMQ__WAKE_GUESS_NS;
    q->spin_cur_ns = q->spin_max_ns < SHMQ__WAKE_GUESS_NS ? q->spin_max_ns : SHMQ__WAKE_GUESS_NS;
    q->seen_rescan = shmq__load(&h->rescan, SHMQ__RELAXED);
    q->last_scan_ns = 0;
    q->block = NULL;
    *out = q;
    return 0;
}

SHMQ_DEF int shmq_queue_create(shmq_queue_t **out, const char *name, size_t capacity_bytes,
                               size_t max_message, int flags)
{
    shmq_block_t *b;
    size_t bytes;
    int rc;
    if (!out) return SHMQ_EINVAL;
    *out = NULL;
    bytes = shmq_queue_bytes(capacity_bytes, max_message);
    if (bytes == 0) return SHMQ_EINVAL;
    rc = shmq__block_make(&b, name, bytes, flags, SHMQ__KIND_QUEUE);
    if (rc != 0) return rc;
    rc = shmq_queue_init(shmq_block_data(b), bytes, max_message);
    if (rc == 0) rc = shmq_queue_attach(out, shmq_block_data(b));
    if (rc != 0) {
        if (name) {
            char os[SHMQ__NAME_MAX + 16];
            if (shmq__os_name(name, os, sizeof os) == 0) shm_unlink(os);
        }
        shmq_block_close(b);
        return rc;
    }
    (*out)->block = b;
    shmq__block_publish(b);
    return 0;
}

SHMQ_DEF int shmq_queue_open(shmq_queue_t **out, const char *name)
{
    shmq_block_t *b;
    int rc;
    if (!out) return SHMQ_EINVAL;
    *out = NULL;
    rc = shmq__block_map(&b, name, SHMQ__KIND_QUEUE);
    if (rc != 0) return rc;
    if (shmq_block_size(b) < sizeof(shmq__qhdr)) {
        rc = SHMQ_EBADOBJ;
    } else {
        const shmq__qhdr *h = (const shmq__qhdr *)shmq_block_data(b);
        /* the queue must lie inside the block before attach trusts its sizes */
        if (h->bytes > shmq_block_size(b)) rc = SHMQ_EBADOBJ;
        else rc = shmq_queue_attach(out, shmq_block_data(b));
    }
    if (rc != 0) {
        shmq_block_close(b);
        return rc;
    }
    (*out)->block = b;
    return 0;
}

SHMQ_DEF int shmq_queue_close(shmq_queue_t *q)
{
    if (!q) return 0;
    shmq_block_close(q->block);
    SHMQ_FREE(q);
    return 0;
}

/* One attempt to push. 0, or SHMQ_EFULL with *blocker = the state that stops us. */
static int shmq__push_once(shmq_queue_t *q, const void *msg, size_t len, uint64_t *blocker,
                           uint64_t *bpos)
{
    shmq__qhdr *h = q->h;
    uint32_t me = shmq__self_owner();
    uint64_t pos = shmq__load(&h->tail, SHMQ__RELAXED);
    for (;;) {
        unsigned char *s = shmq__slot(q, pos);
        uint64_t st = shmq__load(shmq__slot_state(s), SHMQ__SEQ_CST);
        int64_t d = shmq__dif(shmq__seq(st), pos);
        if (d == 0 && shmq__owner(st) == 0) {
            if (shmq__cas_sc(shmq__slot_state(s), &st, shmq__mk(pos, me))) {
                uint32_t flag;
                /* a plain store, not a CAS: tail is a hint (see >>queue), and a
                 * rare step back is walked forward again by the next producer */
                shmq__store(&h->tail, pos + 1, SHMQ__RELAXED);
                /* read the wake flag now, after the (seq_cst) claim: see >>wake */
                flag = shmq__load(&h->not_empty.word, SHMQ__SEQ_CST);
                memcpy(shmq__slot_data(s), msg, len);
                shmq__store(shmq__slot_len(s), (uint32_t)len, SHMQ__RELAXED);
                shmq__store(shmq__slot_state(s), shmq__mk(pos + 1, 0), SHMQ__RELEASE); /* publish */
                if (flag & 1u) shmq__signal(&h->not_empty);
                return 0;
            }
            pos = shmq__load(&h->tail, SHMQ__RELAXED);
        } else if (d >= 0) {
            /* claimed by another producer, or already done: help the hint on */
            uint64_t p2 = pos;
            if (shmq__cas(&h->tail, &p2, pos + 1)) pos = pos + 1;
            else pos = p2;
        } else {
            uint64_t again = shmq__load(&h->tail, SHMQ__RELAXED);
            if (again != pos) { /* the hint moved meanwhile: not full after all */
                pos = again;
                continue;
            }
            *blocker = st;
            *bpos = pos;
            return SHMQ_EFULL;
        }
    }
}

/* Copies a claimed slot's message out and frees the slot for the next lap. */
static void shmq__finish_pop(shmq_queue_t *q, unsigned char *s, uint64_t seq, void *buf,
                             size_t *len)
{
    /* called right after the (seq_cst) claim: read the wake flag now, see >>wake */
    uint32_t flag = shmq__load(&q->h->not_full.word, SHMQ__SEQ_CST);
    uint32_t n = shmq__load(shmq__slot_len(s), SHMQ__RELAXED);
    memcpy(buf, shmq__slot_data(s), n);
    *len = n;
    shmq__store(shmq__slot_state(s), shmq__mk(seq - 1 + q->nslots, 0), SHMQ__RELEASE);
    if (flag & 1u) shmq__signal(&q->h->not_full);
}

/* Takes over a message whose reader died (state st = (p+1, Y), Y dead). */
static int shmq__take_orphan(shmq_queue_t *q, unsigned char *s, uint64_t st, void *buf, size_t cap,
                             size_t *len)
{
    uint32_t n = shmq__load(shmq__slot_len(s), SHMQ__RELAXED);
    uint64_t expect = st;
    if (n > cap) {
        if (shmq__load(shmq__slot_state(s), SHMQ__ACQUIRE) != st) return SHMQ_EEMPTY;
        *len = n;
        return SHMQ_ENOBUFS;
    }
    if (!shmq__cas_sc(shmq__slot_state(s), &expect, shmq__mk(shmq__seq(st), shmq__self_owner())))
        return SHMQ_EEMPTY;
    shmq__finish_pop(q, s, shmq__seq(st), buf, len);
    return 0;
}

/* One attempt to pop. 0; SHMQ_ENOBUFS; or SHMQ_EEMPTY with the blocking state and position. */
static int shmq__pop_once(shmq_queue_t *q, void *buf, size_t cap, size_t *len, uint64_t *blocker,
                          uint64_t *bpos)
{
    shmq__qhdr *h = q->h;
    uint64_t pos = shmq__load(&h->head, SHMQ__RELAXED);
    for (;;) {
        unsigned char *s = shmq__slot(q, pos);
        uint64_t st = shmq__load(shmq__slot_state(s), SHMQ__SEQ_CST);
        int64_t d = shmq__dif(shmq__seq(st), pos + 1);
        if (d == 0 && shmq__owner(st) == 0) {
            uint32_t n = shmq__load(shmq__slot_len(s), SHMQ__RELAXED);
            if (n > cap) {
                /* the len we read belongs to st only if st is still there */
                if (shmq__load(shmq__slot_state(s), SHMQ__ACQUIRE) == st) {
                    *len = n;
                    return SHMQ_ENOBUFS;
                }
            } else if (shmq__cas_sc(shmq__slot_state(s), &st, shmq__mk(pos + 1, shmq__self_owner()))) {
                shmq__store(&h->head, pos + 1, SHMQ__RELAXED); /* a hint, as tail */
                shmq__finish_pop(q, s, pos + 1, buf, len);
                return 0;
            }
            pos = shmq__load(&h->head, SHMQ__RELAXED);
        } else if (d >= 0) {
            uint64_t p2 = pos;
            if (shmq__cas(&h->head, &p2, pos + 1)) pos = pos + 1;
            else pos = p2;
        } else {
            uint64_t again = shmq__load(&h->head, SHMQ__RELAXED);
            if (again != pos) {
                pos = again;
                continue;
            }
            *blocker = st;
            *bpos = pos;
            return SHMQ_EEMPTY;
        }
    }
}

/* Looks for messages whose reader died in `count` slots from `first` (mod
 * the ring) and takes one. *found (may be NULL) counts dead readers seen.
 * 0 (taken) or SHMQ_EEMPTY (none taken). */
static int shmq__scan_orphans_range(shmq_queue_t *q, uint64_t first, uint64_t count, void *buf,
                                    size_t cap, size_t *len, int *found)
{
    uint64_t k;
    for (k = 0; k < count; k++) {
        uint64_t i = (first + k) & q->mask;
        unsigned char *s = q->slots + (size_t)i * q->stride;
        uint64_t st = shmq__load(shmq__slot_state(s), SHMQ__ACQUIRE);
        uint32_t o = shmq__owner(st);
        if (o == 0 || o == SHMQ__OWNER_UNKNOWN) continue;
        if (((shmq__seq(st) - 1 - i) & q->mask) != 0) continue; /* a writer: its consumer handles it */
        if (!shmq__pid_dead(o)) continue;
        if (found) (*found)++;
        if (buf && shmq__take_orphan(q, s, st, buf, cap, len) == 0) return 0;
    }
    return SHMQ_EEMPTY;
}

static int shmq__scan_orphans(shmq_queue_t *q, void *buf, size_t cap, size_t *len, int *found)
{
    return shmq__scan_orphans_range(q, 0, q->nslots, buf, cap, len, found);
}

/* The state a waiter is stuck behind is held by a dead process: fix what can
 * be fixed from here. Returns 1 if something changed (retry at once). */
static int shmq__unstick_consumer(shmq_queue_t *q, uint64_t st, uint64_t pos, void *buf,
                                  size_t cap, size_t *len, int *rc, int thorough)
{
    unsigned char *s = shmq__slot(q, pos);
    uint32_t o = shmq__owner(st);
    if (o == 0 || !shmq__pid_gone(o, thorough)) return 0;
    if (shmq__dif(shmq__seq(st), pos) == 0) {
        /* (pos, X): the producer died mid-push; drop its half message */
        uint64_t expect = st;
        if (shmq__cas(shmq__slot_state(s), &expect, shmq__mk(pos + q->nslots, 0))) {
            uint64_t p2 = pos;
            shmq__cas(&q->h->head, &p2, pos + 1);
            shmq__signal(&q->h->not_full);
        }
        return 1;
    }
    /* (pos-n+1, Y): the previous lap's reader died mid-pop; deliver its message */
    *rc = shmq__take_orphan(q, s, st, buf, cap, len);
    return 1;
}

/* >>spin: adaptive spinning before sleeping
 *
 * Spinning pays when the wait ends sooner than a sleep would. A sleep costs
 * the sleeper the time from its waker's wake call until it runs again: a few
 * us on bare metal, 20-50 us on a virtual machine whose idle CPU the host
 * must wake. So each handle measures it: a waker stamps the wait word's
 * woke_at just before its wake call, and a sleeper woken after it lay down
 * averages (now - stamp) into wake_ns. A waiter then spins (probing the slot
 * between pause instructions) for up to wake_ns, capped by spin_max, before
 * it sleeps: the competitive rule of spinning as long as blocking costs,
 * which never loses more than 2x against the better choice made in
 * hindsight. It is also what lets two processes in a ping-pong find each
 * other spinning again after both fell asleep: a spin as long as the peer's
 * wake-up catches the peer's answer. When whole waits (spin and sleep,
 * moving average) run past 8 sleep costs, spinning rarely pays: waiters then
 * sleep at once, bar a probe every 16th wait that keeps measuring.
 * No sched_yield: on a loaded 2-CPU machine it handed whole timeslices to
 * unrelated processes. */

typedef struct shmq__spin {
    int64_t start, end; /* the wait began / its spin ends (ns) */
    int64_t last;       /* the latest clock reading of the wait */
    unsigned probes;
} shmq__spin;

/* Starts a wait: 1 if it spins first, 0 if it sleeps at once. */
static int shmq__spin_begin(shmq_queue_t *q, shmq__spin *sp)
{
    uint32_t budget = shmq__load(&q->spin_cur_ns, SHMQ__RELAXED);
    int64_t wake;
    sp->start = shmq__now_ns();
    sp->end = sp->last = sp->start;
    sp->probes = 0;
    if (budget == 0) {
        /* spinning was not paying: sleep at once, but probe every 16th wait */
        budget = shmq__load(&q->spin_max_ns, SHMQ__RELAXED);
        if (budget == 0 || (shmq__fetch_add(&q->spin_skip, 1u, SHMQ__RELAXED) & 15u) != 15u) return 0;
        wake = shmq__load(&q->wake_ns, SHMQ__RELAXED);
        if ((int64_t)budget > wake) budget = wake < SHMQ__SPIN_MIN_NS ? SHMQ__SPIN_MIN_NS : (uint32_t)wake;
    }
    sp->end = sp->start + budget;
    return 1;
}

/* One probe's pause; 0 once the spin budget (or the deadline) is spent. */
static int shmq__spin_step(shmq__spin *sp, int64_t deadline)
{
    int64_t now;
    shmq__cpu_relax();
    if ((++sp->probes & 7u) != 0) return 1; /* read the clock every 8 probes */
    sp->last = now = shmq__now_ns();
    if (deadline >= 0 && now >= deadline) return 0;
    return now < sp->end;
}

/* The spin budget, from the measured sleep cost and the recent waits */
static void shmq__spin_retune(shmq_queue_t *q)
{
    int64_t wake = shmq__load(&q->wake_ns, SHMQ__RELAXED);
    int64_t avg = shmq__load(&q->spin_avg_ns, SHMQ__RELAXED);
    uint32_t max = shmq__load(&q->spin_max_ns, SHMQ__RELAXED);
    int64_t budget = wake < SHMQ__SPIN_MIN_NS ? SHMQ__SPIN_MIN_NS : wake;
    if (budget > (int64_t)max) budget = max;
    if (avg > 8 * (wake < SHMQ__SPIN_MIN_NS ? SHMQ__SPIN_MIN_NS : wake)) budget = 0;
    shmq__store(&q->spin_cur_ns, (uint32_t)budget, SHMQ__RELAXED);
}

/* Ends a wait begun by shmq__spin_begin, whatever its outcome. The length
 * of the wait is taken from its latest clock reading (up to 8 probes stale
 * for a wait that ended spinning): no clock read between a message's
 * arrival and the caller's answer to it. */
static void shmq__spin_end(shmq_queue_t *q, const shmq__spin *sp)
{
    int64_t avg, waited;
    if (shmq__load(&q->spin_max_ns, SHMQ__RELAXED) == 0) return;
    waited = sp->last - sp->start;
    avg = shmq__load(&q->spin_avg_ns, SHMQ__RELAXED);
    avg += (waited - avg) / 8;
    shmq__store(&q->spin_avg_ns, avg, SHMQ__RELAXED);
    shmq__spin_retune(q);
}

/* Sleeps on w (see shmq__wait_until); if the waker's stamp shows that it
 * woke us, averages what the sleep cost into wake_ns. */
static void shmq__sleep_on(shmq_queue_t *q, shmq__spin *sp, shmq__wait *w, uint32_t expected,
                           int64_t deadline)
{
    int64_t before = shmq__now_ns(), now, wake;
    uint32_t since, slept;
    int rc = shmq__wait_until(w, expected, deadline);
    sp->last = now = shmq__now_ns();
    /* no sample from a timeout, from a wait that never slept (the word had
     * changed: counted, it taught the spin that sleeping costs nothing), or from
     * poll mode (naps, not wakes) */
    if (rc != 0 || shmq__load(&w->mode, SHMQ__RELAXED) == 3) return;
    since = (uint32_t)now - shmq__load(&w->woke_at, SHMQ__RELAXED);
    slept = (uint32_t)(now - before);
    if (since > slept || since >= SHMQ__WAKE_MAX_NS) return; /* not our wake-up */
    wake = shmq__load(&q->wake_ns, SHMQ__RELAXED);
    wake += ((int64_t)since - wake) / 8;
    shmq__store(&q->wake_ns, wake, SHMQ__RELAXED);
}

/* A waiter whose slot is held by another process (owner != 0: mid-push or
 * mid-pop) cannot count on a wake-up (see >>wake). Holders finish within
 * nanoseconds unless preempted or dead: wait up to 50 us for the state word
 * to move (yielding after 5 us, so a preempted holder on our CPU can run),
 * then check the holder (a system call or two) and nap 1 ms (10 ms once the
 * same state was already seen after a nap). Returns 1 if the state moved. */
#define SHMQ__HELD_SPIN_NS 50000
#define SHMQ__FIRST_NAP_NS 1000000
static int shmq__await_change(shmq_queue_t *q, uint64_t pos, uint64_t st, int64_t deadline)
{
    uint64_t *w = shmq__slot_state(shmq__slot(q, pos));
    int64_t start = shmq__now_ns(), now;
    unsigned k = 0;
    for (;;) {
        if (shmq__load(w, SHMQ__ACQUIRE) != st) return 1;
        shmq__cpu_relax();
        if ((++k & 15u) != 0) continue;
        now = shmq__now_ns();
        if (now - start > SHMQ__HELD_SPIN_NS || (deadline >= 0 && now >= deadline)) return 0;
        if (now - start > 5000) sched_yield();
    }
}

/* naps until the earlier of deadline and now + ns */
static void shmq__nap(int64_t deadline, int64_t ns)
{
    int64_t now = shmq__now_ns();
    if (deadline >= 0 && deadline - now < ns) ns = deadline - now;
    shmq__sleep_ns(ns);
}

static int shmq__push_wait(shmq_queue_t *q, const void *msg, size_t len, int64_t deadline,
                           shmq__spin *sp, int spinning, uint64_t blocker, uint64_t bpos)
{
    uint64_t held = 0;
    for (;;) {
        uint32_t w;
        if (spinning) {
            spinning = shmq__spin_step(sp, deadline);
            if (shmq__push_once(q, msg, len, &blocker, &bpos) == 0) return 0;
            if (shmq__load(&q->h->closed, SHMQ__ACQUIRE)) return SHMQ_ECLOSED;
            if (spinning) continue;
        }
        if (shmq__owner(blocker) != 0) {
            /* our slot is held by a previous-lap writer or reader */
            if (!shmq__await_change(q, bpos, blocker, deadline)) {
                if (shmq__pid_dead(shmq__owner(blocker))) {
                    /* only a consumer can clear it (drop or redeliver): make them look */
                    shmq__fetch_add(&q->h->rescan, 1u, SHMQ__SEQ_CST);
                    shmq__wake_all_gen(&q->h->not_empty);
                }
                shmq__nap(deadline, blocker == held ? SHMQ__STUCK_NAP_NS : SHMQ__FIRST_NAP_NS);
                held = blocker;
            }
            sp->last = shmq__now_ns();
        } else {
            w = shmq__wait_prepare(&q->h->not_full);
            if (shmq__push_once(q, msg, len, &blocker, &bpos) == 0) return 0;
            if (shmq__load(&q->h->closed, SHMQ__ACQUIRE)) return SHMQ_ECLOSED;
            if (deadline >= 0 && shmq__now_ns() >= deadline) return SHMQ_EFULL;
            /* sleep only on a slot nobody holds: its next claimer sees our flag */
            if (shmq__owner(blocker) == 0) shmq__sleep_on(q, sp, &q->h->not_full, w, deadline);
        }
        if (shmq__push_once(q, msg, len, &blocker, &bpos) == 0) return 0;
        if (shmq__load(&q->h->closed, SHMQ__ACQUIRE)) return SHMQ_ECLOSED;
        if (deadline >= 0 && shmq__now_ns() >= deadline) return SHMQ_EFULL;
    }
}

SHMQ_DEF int shmq_push(shmq_queue_t *q, const void *msg, size_t len, int timeout_ms)
{
    uint64_t blocker = 0, bpos = 0;
    shmq__spin sp;
    int spinning, rc;
    if (!q || !msg) return SHMQ_EINVAL;
    if (len == 0 || len > q->max_message) return SHMQ_EMSGSIZE;
    if (shmq__load(&q->h->closed, SHMQ__ACQUIRE)) return SHMQ_ECLOSED;
    if (shmq__push_once(q, msg, len, &blocker, &bpos) == 0) return 0;
    if (timeout_ms == 0) return SHMQ_EFULL;
    spinning = shmq__spin_begin(q, &sp);
    rc = shmq__push_wait(q, msg, len, shmq__deadline(timeout_ms), &sp, spinning, blocker, bpos);
    shmq__spin_end(q, &sp);
    return rc;
}

/* Pre-sleep duties of a consumer: take a message a dead reader left. The
 * whole ring is scanned at once after a rescan request (a producer blocked by
 * a dead reader, or shmq_queue_recover); otherwise every 50 ms per handle a
 * window of SHMQ__SCAN_WINDOW slots is, from a cursor that goes round the
 * ring, so a sleeping consumer of a huge queue never pays for the whole ring. */
#define SHMQ__SCAN_WINDOW 1024u
static int shmq__maybe_scan(shmq_queue_t *q, void *buf, size_t cap, size_t *len, uint32_t *epoch)
{
    int64_t now = shmq__now_ns();
    uint64_t first;
    *epoch = shmq__load(&q->h->rescan, SHMQ__ACQUIRE);
    if (*epoch != shmq__load(&q->seen_rescan, SHMQ__RELAXED)) {
        shmq__store(&q->seen_rescan, *epoch, SHMQ__RELAXED);
        shmq__store(&q->last_scan_ns, now, SHMQ__RELAXED);
        return shmq__scan_orphans(q, buf, cap, len, NULL);
    }
    if (now - shmq__load(&q->last_scan_ns, SHMQ__RELAXED) < SHMQ__SCAN_EVERY_NS) return SHMQ_EEMPTY;
    shmq__store(&q->last_scan_ns, now, SHMQ__RELAXED);
    if (q->nslots <= SHMQ__SCAN_WINDOW) return shmq__scan_orphans(q, buf, cap, len, NULL);
    first = shmq__fetch_add(&q->scan_cursor, (uint64_t)SHMQ__SCAN_WINDOW, SHMQ__RELAXED);
    return shmq__scan_orphans_range(q, first, SHMQ__SCAN_WINDOW, buf, cap, len, NULL);
}

static int shmq__pop_wait(shmq_queue_t *q, void *buf, size_t cap, size_t *len, int64_t deadline,
                          shmq__spin *sp, int spinning, uint64_t blocker, uint64_t bpos)
{
    uint64_t held = 0;
    uint32_t epoch;
    int rc;
    for (;;) {
        uint32_t w;
        if (shmq__load(&q->h->closed, SHMQ__ACQUIRE)) {
            /* shut down and empty: hand out what dead readers left, then ECLOSED */
            rc = shmq__pop_once(q, buf, cap, len, &blocker, &bpos);
            if (rc != SHMQ_EEMPTY) return rc;
            if (shmq__owner(blocker) != 0) {
                int r2 = SHMQ_EEMPTY;
                if (shmq__unstick_consumer(q, blocker, bpos, buf, cap, len, &r2, 1)) {
                    if (r2 != SHMQ_EEMPTY) return r2;
                    continue;
                }
            }
            return shmq__scan_orphans(q, buf, cap, len, NULL) == 0 ? 0 : SHMQ_ECLOSED;
        }
        if (spinning) {
            spinning = shmq__spin_step(sp, deadline);
            rc = shmq__pop_once(q, buf, cap, len, &blocker, &bpos);
            if (rc != SHMQ_EEMPTY) return rc;
            if (spinning) continue;
        }
        if (shmq__owner(blocker) != 0) {
            /* our slot is held: a producer mid-push, or a previous-lap reader */
            if (!shmq__await_change(q, bpos, blocker, deadline)) {
                int r2 = SHMQ_EEMPTY;
                if (shmq__unstick_consumer(q, blocker, bpos, buf, cap, len, &r2, 1)) {
                    if (r2 != SHMQ_EEMPTY) return r2;
                } else {
                    shmq__nap(deadline, blocker == held ? SHMQ__STUCK_NAP_NS : SHMQ__FIRST_NAP_NS);
                    held = blocker;
                }
            }
            sp->last = shmq__now_ns();
        } else {
            if ((rc = shmq__maybe_scan(q, buf, cap, len, &epoch)) == 0) return 0;
            w = shmq__wait_prepare(&q->h->not_empty);
            rc = shmq__pop_once(q, buf, cap, len, &blocker, &bpos);
            if (rc != SHMQ_EEMPTY) return rc;
            if (shmq__load(&q->h->closed, SHMQ__ACQUIRE)) continue;
            if (shmq__load(&q->h->rescan, SHMQ__ACQUIRE) != epoch) continue;
            if (deadline >= 0 && shmq__now_ns() >= deadline) return SHMQ_EEMPTY;
            /* sleep only on a slot nobody holds: its next claimer sees our flag */
            if (shmq__owner(blocker) == 0) shmq__sleep_on(q, sp, &q->h->not_empty, w, deadline);
        }
        rc = shmq__pop_once(q, buf, cap, len, &blocker, &bpos);
        if (rc != SHMQ_EEMPTY) return rc;
        if (deadline >= 0 && shmq__now_ns() >= deadline && !shmq__load(&q->h->closed, SHMQ__ACQUIRE))
            return SHMQ_EEMPTY;
    }
}

SHMQ_DEF int shmq_pop(shmq_queue_t *q, void *buf, size_t cap, size_t *len, int timeout_ms)
{
    uint64_t blocker = 0, bpos = 0;
    shmq__spin sp;
    int spinning, rc;
    uint32_t epoch;
    if (!q || !buf || !len || cap == 0) return SHMQ_EINVAL;
    rc = shmq__pop_once(q, buf, cap, len, &blocker, &bpos);
    if (rc != SHMQ_EEMPTY) return rc;
    if (timeout_ms == 0) {
        /* a try never sleeps: a held slot gets the quick check (kill only, no /proc) */
        if (shmq__owner(blocker) != 0) {
            int r2 = SHMQ_EEMPTY;
            if (shmq__unstick_consumer(q, blocker, bpos, buf, cap, len, &r2, 0)) {
                if (r2 != SHMQ_EEMPTY) return r2;
                rc = shmq__pop_once(q, buf, cap, len, &blocker, &bpos);
                if (rc != SHMQ_EEMPTY) return rc;
            }
        }
        if (shmq__maybe_scan(q, buf, cap, len, &epoch) == 0) return 0;
        return shmq__load(&q->h->closed, SHMQ__ACQUIRE) ? SHMQ_ECLOSED : SHMQ_EEMPTY;
    }
    spinning = shmq__spin_begin(q, &sp);
    rc = shmq__pop_wait(q, buf, cap, len, shmq__deadline(timeout_ms), &sp, spinning, blocker, bpos);
    shmq__spin_end(q, &sp);
    return rc;
}

SHMQ_DEF int shmq_try_push(shmq_queue_t *q, const void *msg, size_t len)
{
    return shmq_push(q, msg, len, 0);
}

SHMQ_DEF int shmq_try_pop(shmq_queue_t *q, void *buf, size_t cap, size_t *len)
{
    return shmq_pop(q, buf, cap, len, 0);
}

SHMQ_DEF int shmq_queue_shutdown(shmq_queue_t *q)
{
    if (!q) return SHMQ_EINVAL;
    shmq__store(&q->h->closed, 1u, SHMQ__SEQ_CST);
    shmq__wake_all_gen(&q->h->not_empty);
    shmq__wake_all_gen(&q->h->not_full);
    return 0;
}

SHMQ_DEF int shmq_queue_is_shutdown(const shmq_queue_t *q)
{
    return q && shmq__load(&q->h->closed, SHMQ__ACQUIRE) ? 1 : 0;
}

SHMQ_DEF size_t shmq_queue_count(const shmq_queue_t *q)
{
    uint64_t head, tail;
    if (!q) return 0;
    head = shmq__load(&q->h->head, SHMQ__ACQUIRE);
    tail = shmq__load(&q->h->tail, SHMQ__ACQUIRE);
    if (tail <= head) return 0;
    return (size_t)(tail - head > q->nslots ? q->nslots : tail - head);
}

SHMQ_DEF size_t shmq_queue_capacity(const shmq_queue_t *q) { return q ? (size_t)q->nslots : 0; }
SHMQ_DEF size_t shmq_queue_max_message(const shmq_queue_t *q) { return q ? q->max_message : 0; }

SHMQ_DEF int shmq_queue_set_spin(shmq_queue_t *q, int spin_us)
{
    uint32_t ns;
    if (!q || spin_us < -1 || spin_us > 1000000) return SHMQ_EINVAL;
    ns = spin_us < 0 ? SHMQ_DEFAULT_SPIN_US * 1000u : (uint32_t)spin_us * 1000u;
    shmq__store(&q->spin_max_ns, ns, SHMQ__RELAXED);
    shmq__spin_retune(q); /* the measured cost, capped by the new maximum */
    return 0;
}

SHMQ_DEF int shmq_queue_recover(shmq_queue_t *q)
{
    int found = 0;
    uint64_t i;
    if (!q) return SHMQ_EINVAL;
    /* count dead holders (writers too; their consumer drops them on arrival) */
    for (i = 0; i < q->nslots; i++) {
        unsigned char *s = q->slots + (size_t)i * q->stride;
        uint64_t st = shmq__load(shmq__slot_state(s), SHMQ__ACQUIRE);
        uint32_t o = shmq__owner(st);
        if (o != 0 && o != SHMQ__OWNER_UNKNOWN && shmq__pid_dead(o)) found++;
    }
    shmq__fetch_add(&q->h->rescan, 1u, SHMQ__SEQ_CST);
    shmq__wake_all_gen(&q->h->not_empty);
    shmq__wake_all_gen(&q->h->not_full);
    return found;
}

/* >>objects: small objects in caller memory share one 64-byte header */
typedef struct shmq__ohdr {
    uint64_t magic;     /* init: the object's magic (release, last) */
    uint32_t version;   /* init */
    uint32_t wait_kind; /* init */
    uint32_t aux;       /* semaphore: sleepers (atomic; may overcount after deaths) */
    unsigned char pad_[64 - 20];
} shmq__ohdr;
SHMQ__STATIC_ASSERT(ohdr_size, sizeof(shmq__ohdr) == 64);

static int shmq__obj_check(const void *mem, uint64_t magic)
{
    const shmq__ohdr *o = (const shmq__ohdr *)mem;
    if (!mem || ((uintptr_t)mem & 7) != 0) return SHMQ_EINVAL;
    if (shmq__load(&o->magic, SHMQ__ACQUIRE) != magic) return SHMQ_EBADOBJ;
    if (o->version != SHMQ__LAYOUT_VERSION || o->wait_kind != SHMQ__WAIT_KIND) return SHMQ_EVERSION;
    return 0;
}

static void shmq__obj_begin(void *mem)
{
    shmq__ohdr *o = (shmq__ohdr *)mem;
    memset(o, 0, sizeof *o);
    o->version = SHMQ__LAYOUT_VERSION;
    o->wait_kind = SHMQ__WAIT_KIND;
}

/* >>lock: a robust process-shared pthread mutex after the header */
#if !defined(__APPLE__)
SHMQ__STATIC_ASSERT(mutex_fits, sizeof(pthread_mutex_t) <= SHMQ_LOCK_BYTES - 64);
#endif
static pthread_mutex_t *shmq__lock_mutex(shmq_lock_t *l)
{
    return (pthread_mutex_t *)(void *)((unsigned char *)l + 64);
}

SHMQ_DEF int shmq_lock_init(shmq_lock_t **out, void *mem, size_t bytes)
{
    pthread_mutexattr_t a;
    int r;
    if (!out) return SHMQ_EINVAL;
    *out = NULL;
    if (!mem || ((uintptr_t)mem & 7) != 0 || bytes < SHMQ_LOCK_BYTES) return SHMQ_EINVAL;
    shmq__obj_begin(mem);
    if (pthread_mutexattr_init(&a) != 0) return SHMQ_ESYS;
    r = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
#if !defined(__APPLE__)
    if (r == 0) r = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
#endif
    if (r == 0) r = pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK);
    if (r == 0) r = pthread_mutex_init(shmq__lock_mutex((shmq_lock_t *)mem), &a);
    pthread_mutexattr_destroy(&a);
    if (r != 0) {
        errno = r;
        return SHMQ_ESYS;
    }
    shmq__store(&((shmq__ohdr *)mem)->magic, SHMQ__LOCK_MAGIC, SHMQ__RELEASE);
    *out = (shmq_lock_t *)mem;
    return 0;
}

SHMQ_DEF int shmq_lock_attach(shmq_lock_t **out, void *mem)
{
    int rc;
    if (!out) return SHMQ_EINVAL;
    *out = NULL;
    if ((rc = shmq__obj_check(mem, SHMQ__LOCK_MAGIC)) != 0) return rc;
    *out = (shmq_lock_t *)mem;
    return 0;
}

SHMQ_DEF int shmq_lock_acquire(shmq_lock_t *l, int timeout_ms)
{
    pthread_mutex_t *m;
    int r;
    if (!l) return SHMQ_EINVAL;
    m = shmq__lock_mutex(l);
    if (timeout_ms < 0) {
        r = pthread_mutex_lock(m);
    } else if (timeout_ms == 0) {
        r = pthread_mutex_trylock(m);
        if (r == EBUSY) {
            /* held: by us (EDEADLK) or by someone else? trylock does not say on every
             * libc (musl answers EBUSY); a timed lock with a past deadline does */
            struct timespec past;
            past.tv_sec = 0;
            past.tv_nsec = 0;
            r = pthread_mutex_timedlock(m, &past);
        }
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += timeout_ms / 1000;
        ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        r = pthread_mutex_timedlock(m, &ts);
    }
    switch (r) {
    case 0: return 0;
#if !defined(__APPLE__)
    case EOWNERDEAD:
        /* we hold it; mark it consistent so it stays usable for everyone after us */
        pthread_mutex_consistent(m);
        return SHMQ_EOWNERDEAD;
#endif
    case ETIMEDOUT: return SHMQ_ETIMEDOUT;
    case EDEADLK: return SHMQ_EDEADLK;
    case EINVAL: return SHMQ_EINVAL;
    default: errno = r; return SHMQ_ESYS;
    }
}

SHMQ_DEF int shmq_lock_release(shmq_lock_t *l)
{
    int r;
    if (!l) return SHMQ_EINVAL;
    r = pthread_mutex_unlock(shmq__lock_mutex(l));
    if (r == 0) return 0;
    if (r == EPERM) return SHMQ_EPERM;
    errno = r;
    return SHMQ_ESYS;
}

/* >>event: word bit 0 = set, bit 1 = someone sleeps */
static shmq__wait *shmq__obj_wait(const void *obj)
{
    return (shmq__wait *)(void *)((unsigned char *)obj + 64);
}

SHMQ_DEF int shmq_event_init(shmq_event_t **out, void *mem, size_t bytes)
{
    int rc;
    if (!out) return SHMQ_EINVAL;
    *out = NULL;
    if (!mem || ((uintptr_t)mem & 7) != 0 || bytes < SHMQ_EVENT_BYTES) return SHMQ_EINVAL;
    shmq__obj_begin(mem);
    if ((rc = shmq__wait_init(shmq__obj_wait(mem), 0)) != 0) return rc;
    shmq__store(&((shmq__ohdr *)mem)->magic, SHMQ__EVENT_MAGIC, SHMQ__RELEASE);
    *out = (shmq_event_t *)mem;
    return 0;
}

SHMQ_DEF int shmq_event_attach(shmq_event_t **out, void *mem)
{
    int rc;
    if (!out) return SHMQ_EINVAL;
    *out = NULL;
    if ((rc = shmq__obj_check(mem, SHMQ__EVENT_MAGIC)) != 0) return rc;
    *out = (shmq_event_t *)mem;
    return 0;
}

SHMQ_DEF int shmq_event_set(shmq_event_t *e)
{
    shmq__wait *w;
    if (!e) return SHMQ_EINVAL;
    w = shmq__obj_wait(e);
    if (shmq__xchg(&w->word, 1u, SHMQ__SEQ_CST) & 2u) shmq__futex_wake(w, INT_MAX);
    return 0;
}

SHMQ_DEF int shmq_event_clear(shmq_event_t *e)
{
    shmq__wait *w;
    uint32_t v;
    if (!e) return SHMQ_EINVAL;
    w = shmq__obj_wait(e);
    v = shmq__load(&w->word, SHMQ__RELAXED);
    while ((v & 1u) && !shmq__cas_sc(&w->word, &v, v & ~1u)) {
    }
    return 0;
}

SHMQ_DEF int shmq_event_is_set(const shmq_event_t *e)
{
    return e && (shmq__load(&shmq__obj_wait(e)->word, SHMQ__ACQUIRE) & 1u) ? 1 : 0;
}

SHMQ_DEF int shmq_event_wait(shmq_event_t *e, int timeout_ms)
{
    shmq__wait *w;
    int64_t deadline;
    if (!e) return SHMQ_EINVAL;
    w = shmq__obj_wait(e);
    if (shmq__load(&w->word, SHMQ__ACQUIRE) & 1u) return 0;
    if (timeout_ms == 0) return SHMQ_ETIMEDOUT;
    deadline = shmq__deadline(timeout_ms);
    for (;;) {
        uint32_t v = shmq__load(&w->word, SHMQ__SEQ_CST);
        if (v & 1u) return 0;
        if (!(v & 2u)) {
            if (!shmq__cas_sc(&w->word, &v, v | 2u)) continue;
            v |= 2u;
        }
        if (shmq__wait_until(w, v, deadline) == SHMQ_ETIMEDOUT)
            return (shmq__load(&w->word, SHMQ__ACQUIRE) & 1u) ? 0 : SHMQ_ETIMEDOUT;
    }
}

/* >>sem: word = count; header aux = sleepers (a hint: dead sleepers only add wakes) */
SHMQ_DEF int shmq_sem_init(shmq_sem_t **out, void *mem, size_t bytes, uint32_t initial)
{
    int rc;
    if (!out) return SHMQ_EINVAL;
    *out = NULL;
    if (!mem || ((uintptr_t)mem & 7) != 0 || bytes < SHMQ_SEM_BYTES || initial > 0x7FFFFFFFu)
        return SHMQ_EINVAL;
    shmq__obj_begin(mem);
    if ((rc = shmq__wait_init(shmq__obj_wait(mem), initial)) != 0) return rc;
    shmq__store(&((shmq__ohdr *)mem)->magic, SHMQ__SEM_MAGIC, SHMQ__RELEASE);
    *out = (shmq_sem_t *)mem;
    return 0;
}

SHMQ_DEF int shmq_sem_attach(shmq_sem_t **out, void *mem)
{
    int rc;
    if (!out) return SHMQ_EINVAL;
    *out = NULL;
    if ((rc = shmq__obj_check(mem, SHMQ__SEM_MAGIC)) != 0) return rc;
    *out = (shmq_sem_t *)mem;
    return 0;
}

SHMQ_DEF int shmq_sem_post(shmq_sem_t *s)
{
    shmq__wait *w;
    uint32_t v;
    if (!s) return SHMQ_EINVAL;
    w = shmq__obj_wait(s);
    v = shmq__load(&w->word, SHMQ__RELAXED);
    do {
        if (v >= 0x7FFFFFFFu) return SHMQ_EOVERFLOW;
    } while (!shmq__cas_sc(&w->word, &v, v + 1));
    if (shmq__load(&((shmq__ohdr *)s)->aux, SHMQ__SEQ_CST) != 0) shmq__futex_wake(w, 1);
    return 0;
}

SHMQ_DEF int shmq_sem_wait(shmq_sem_t *s, int timeout_ms)
{
    shmq__wait *w;
    shmq__ohdr *o;
    int64_t deadline = -2;
    if (!s) return SHMQ_EINVAL;
    w = shmq__obj_wait(s);
    o = (shmq__ohdr *)s;
    for (;;) {
        uint32_t v = shmq__load(&w->word, SHMQ__ACQUIRE);
        int r;
        while (v > 0)
            if (shmq__cas(&w->word, &v, v - 1)) return 0;
        if (timeout_ms == 0) return SHMQ_ETIMEDOUT;
        if (deadline == -2) deadline = shmq__deadline(timeout_ms);
        shmq__fetch_add(&o->aux, 1u, SHMQ__SEQ_CST);
        r = shmq__wait_until(w, 0, deadline);
        shmq__fetch_sub(&o->aux, 1u, SHMQ__SEQ_CST);
        if (r == SHMQ_ETIMEDOUT) {
            v = shmq__load(&w->word, SHMQ__ACQUIRE);
            while (v > 0)
                if (shmq__cas(&w->word, &v, v - 1)) return 0;
            return SHMQ_ETIMEDOUT;
        }
    }
}

SHMQ_DEF uint32_t shmq_sem_value(const shmq_sem_t *s)
{
    return s ? shmq__load(&shmq__obj_wait(s)->word, SHMQ__ACQUIRE) : 0;
}

#endif /* SHMQ__IMPLEMENTATION_DONE */
#endif /* SHMQ_IMPLEMENTATION */

/*
 * HISTORY
 *   0.2  blocks, MPMC queue with crash recovery, robust lock, event, semaphore
 *   0.1  atomics shim and platform switch
 *
 * LICENSE: MIT
 *
 * Copyright (c) 2026 the kit's authors
 *
 * Permission is hereby granted, free of charge, to any person obtaining a copy
 * of this software and associated documentation files (the "Software"), to deal
 * in the Software without restriction, including without limitation the rights
 * to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
 * copies of the Software, and to permit persons to whom the Software is
 * furnished to do so, subject to the following conditions:
 *
 * The above copyright notice and this permission notice shall be included in all
 * copies or substantial portions of the Software.
 *
 * THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
 * IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
 * FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
 * AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
 * LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
 * OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
 * SOFTWARE.
 */
