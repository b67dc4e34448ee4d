/* shm_queue.h - v0.1 - cross-process building blocks: shared memory, queues, locks
 *
 *   Do this:
 *       #define SHMQ_IMPLEMENTATION
 *   before you include this file in *one* C or C++ file to create the implementation.
 *
 * DOCUMENTATION IS BEING WRITTEN (issue: shm_queue.h). The private atomics shim and
 * the platform switch below are already used by pool.h.
 *
 * CONFIGURATION MACROS
 *   SHMQ_STATIC      make every function static (single-file programs)
 *   SHMQ_NO_LINUX    use only POSIX calls (no futex, memfd, pidfd, epoll), as on
 *                    macOS and the BSDs; the one portability switch of the whole kit
 *   SHMQ_MALLOC / SHMQ_REALLOC / SHMQ_FREE   all three or none
 *   SHMQ_ASSERT      programmer-error checks (default: assert)
 */
#ifndef SHMQ_H_INCLUDED
#define SHMQ_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

#ifdef SHMQ_STATIC
#define SHMQ_DEF static
#else
#define SHMQ_DEF extern
#endif

#ifdef __cplusplus
extern "C" {
#endif

SHMQ_DEF const char *shmq_version(void);

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

SHMQ_DEF const char *shmq_version(void) { return "0.1"; }

#endif /* SHMQ__IMPLEMENTATION_DONE */
#endif /* SHMQ_IMPLEMENTATION */

/*
 * LICENSE: MIT (see the end of pool.h or LICENSE).
 */
