/* bench_shmq.c - shm_queue.h against the usual ways of moving messages between processes.
 *
 *   W5  ping-pong of a 64-byte message between two processes (round trips):
 *       shmq (sleeping waiters), shmq (adaptive spin), raw futex, raw spin,
 *       pipe, Unix stream socket, POSIX message queue, shm ring with a
 *       process-shared mutex + condvar.
 *   W6  throughput of 64-byte messages, 1 producer -> 1 consumer and
 *       2 producers -> 2 consumers (processes): shmq, pipe, Unix stream socket
 *       (1->1), POSIX message queue, mutex+condvar ring.
 *
 *   usage: bench_shmq [--quick] [--w5 N] [--w6 N] [--reps N]
 *          bench_shmq --w5-sleep | --w5-futex | --w5-spin [--pin] [--w5 N]
 *            one W5 contender alone (for perf); --pin puts the two processes
 *            on CPUs 0 and 1 (see pin_self)
 *   Full run: 100,000 round trips and 10,000,000 messages (the sizes),
 *   each figure the best of 3 interleaved repetitions (5 for the short W5), as
 *   the machine is shared: the least disturbed run is the fairest figure.
 *   Every baseline is written here, in the same style, with no batching.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* sched_setaffinity, for the pinned W5 runs */
#endif
#define SHMQ_IMPLEMENTATION
#include "shm_queue.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <sched.h>

#define MSG 64
#define STOP 0xFF /* first byte of the message that tells a consumer to stop */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static shmq_block_t *g_blocks[512];
static int g_nblocks;

/* shared memory for the baselines and start lines; released by shared_free_all */
static void *shared_alloc(size_t n)
{
    shmq_block_t *b;
    if (g_nblocks == 512 || shmq_block_create(&b, NULL, n, 0) != 0) {
        fprintf(stderr, "shmq_block_create failed\n");
        exit(1);
    }
    g_blocks[g_nblocks++] = b;
    return shmq_block_data(b);
}
static void shared_free_all(void)
{
    while (g_nblocks > 0) shmq_block_close(g_blocks[--g_nblocks]);
}

/* W5 placement. Free (0): the scheduler places both processes; on a VM it
 * often puts a ping-pong's two sleepers on one CPU (a wake-up is then a
 * same-CPU switch, with no inter-processor interrupt), and how often depends
 * on how long each side runs between its wake call and its own sleep. Apart
 * (1): parent on CPU 0, child on CPU 1, so every wake-up crosses CPUs and the
 * figures compare the protocols, not the placement. */
static int g_pin;
static cpu_set_t g_pin_saved;
static void pin_self(int child)
{
    cpu_set_t s;
    if (!g_pin) return;
    if (!child) sched_getaffinity(0, sizeof g_pin_saved, &g_pin_saved);
    CPU_ZERO(&s);
    CPU_SET(child ? 1 : 0, &s);
    sched_setaffinity(0, sizeof s, &s);
}
static void unpin_self(void)
{
    if (g_pin) sched_setaffinity(0, sizeof g_pin_saved, &g_pin_saved);
}

/* a start line so that process start-up is not measured */
typedef struct {
    uint32_t ready, go;
} startline;
static void start_wait(startline *s)
{
    __atomic_fetch_add(&s->ready, 1, __ATOMIC_SEQ_CST);
    while (!__atomic_load_n(&s->go, __ATOMIC_ACQUIRE)) sched_yield();
}
static double start_release(startline *s, uint32_t n)
{
    while (__atomic_load_n(&s->ready, __ATOMIC_ACQUIRE) < n) sched_yield();
    __atomic_store_n(&s->go, 1, __ATOMIC_RELEASE);
    return now_s();
}

static void reap(pid_t *pids, int n)
{
    int i, st;
    for (i = 0; i < n; i++) {
        waitpid(pids[i], &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "child failed\n");
            exit(1);
        }
    }
}

/* ======================================================================
 * transports: each is a pair of "channels" with send/recv of 64 bytes
 * ==================================================================== */
typedef struct transport transport;
struct transport {
    const char *name;
    int multi;                       /* usable with several producers/consumers */
    void (*setup)(transport *t);     /* before fork */
    void (*send)(transport *t, int ch, const void *m);
    void (*recv)(transport *t, int ch, void *m);
    void (*teardown)(transport *t);
    void *state;
    int spin; /* shmq: spin setting */
};

/* ---- shmq ---- */
typedef struct {
    shmq_queue_t *q[2];
} shmq_state;
static void shmq_setup(transport *t)
{
    static shmq_state s;
    int i;
    for (i = 0; i < 2; i++)
        if (shmq_queue_create(&s.q[i], NULL, 1024 * MSG, MSG, 0) != 0) exit(1);
    t->state = &s;
}
static void shmq_child_init(transport *t)
{
    shmq_state *s = (shmq_state *)t->state;
    shmq_queue_set_spin(s->q[0], t->spin);
    shmq_queue_set_spin(s->q[1], t->spin);
}
static void shmq_send(transport *t, int ch, const void *m)
{
    if (shmq_push(((shmq_state *)t->state)->q[ch], m, MSG, -1) != 0) exit(2);
}
static void shmq_recv(transport *t, int ch, void *m)
{
    size_t len;
    if (shmq_pop(((shmq_state *)t->state)->q[ch], m, MSG, &len, -1) != 0) exit(2);
}
static void shmq_teardown(transport *t)
{
    shmq_state *s = (shmq_state *)t->state;
    shmq_queue_close(s->q[0]);
    shmq_queue_close(s->q[1]);
}

/* ---- pipe and Unix stream socket: channel ch is written at w[ch], read at r[ch] ---- */
typedef struct {
    int w[2], r[2];
} fd_state;
static int read_full(int fd, void *m, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)m + got, n - got);
        if (r <= 0) {
            if (r < 0 && errno == EINTR) continue;
            return -1;
        }
        got += (size_t)r;
    }
    return 0;
}
static void pipe_setup(transport *t)
{
    static fd_state s;
    int ch, fd[2];
    for (ch = 0; ch < 2; ch++) {
        if (pipe(fd)) exit(1);
        s.r[ch] = fd[0];
        s.w[ch] = fd[1];
    }
    t->state = &s;
}
static void sock_setup(transport *t)
{
    static fd_state s;
    int ch, sv[2];
    for (ch = 0; ch < 2; ch++) {
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv)) exit(1);
        s.w[ch] = sv[0];
        s.r[ch] = sv[1];
    }
    t->state = &s;
}
static void fd_send(transport *t, int ch, const void *m)
{
    if (write(((fd_state *)t->state)->w[ch], m, MSG) != MSG) exit(2);
}
static void fd_recv(transport *t, int ch, void *m)
{
    if (read_full(((fd_state *)t->state)->r[ch], m, MSG)) exit(2);
}
static void fd_teardown(transport *t)
{
    fd_state *s = (fd_state *)t->state;
    close(s->w[0]); close(s->r[0]); close(s->w[1]); close(s->r[1]);
}

/* ---- POSIX message queue ---- */
typedef struct {
    mqd_t q[2];
    char name[2][64];
} mq_state;
static void mq_setup(transport *t)
{
    static mq_state s;
    struct mq_attr a;
    int i;
    memset(&a, 0, sizeof a);
    a.mq_maxmsg = 10; /* the default limit of /proc/sys/fs/mqueue/msg_max */
    a.mq_msgsize = MSG;
    for (i = 0; i < 2; i++) {
        snprintf(s.name[i], sizeof s.name[i], "/bench_shmq_%d_%d", (int)getpid(), i);
        s.q[i] = mq_open(s.name[i], O_RDWR | O_CREAT | O_EXCL, 0600, &a);
        if (s.q[i] == (mqd_t)-1) {
            perror("mq_open");
            exit(1);
        }
        mq_unlink(s.name[i]);
    }
    t->state = &s;
}
static void mq_send_(transport *t, int ch, const void *m)
{
    if (mq_send(((mq_state *)t->state)->q[ch], (const char *)m, MSG, 0) != 0) exit(2);
}
static void mq_recv_(transport *t, int ch, void *m)
{
    if (mq_receive(((mq_state *)t->state)->q[ch], (char *)m, MSG, NULL) != MSG) exit(2);
}
static void mq_teardown(transport *t)
{
    mq_state *s = (mq_state *)t->state;
    mq_close(s->q[0]);
    mq_close(s->q[1]);
}

/* ---- ring of 64-byte slots guarded by a process-shared mutex + two condvars ---- */
#define RING 1024
typedef struct {
    pthread_mutex_t m;
    pthread_cond_t not_empty, not_full;
    unsigned head, tail;
    unsigned char slot[RING][MSG];
} cv_ring;
typedef struct {
    cv_ring *r[2];
} cv_state;
static void cv_setup(transport *t)
{
    static cv_state s;
    int i;
    for (i = 0; i < 2; i++) {
        pthread_mutexattr_t ma;
        pthread_condattr_t ca;
        cv_ring *r = (cv_ring *)shared_alloc(sizeof(cv_ring));
        pthread_mutexattr_init(&ma);
        pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
        pthread_mutex_init(&r->m, &ma);
        pthread_condattr_init(&ca);
        pthread_condattr_setpshared(&ca, PTHREAD_PROCESS_SHARED);
        pthread_cond_init(&r->not_empty, &ca);
        pthread_cond_init(&r->not_full, &ca);
        r->head = r->tail = 0;
        s.r[i] = r;
    }
    t->state = &s;
}
static void cv_send(transport *t, int ch, const void *m)
{
    cv_ring *r = ((cv_state *)t->state)->r[ch];
    pthread_mutex_lock(&r->m);
    while (r->tail - r->head == RING) pthread_cond_wait(&r->not_full, &r->m);
    memcpy(r->slot[r->tail % RING], m, MSG);
    r->tail++;
    pthread_cond_signal(&r->not_empty);
    pthread_mutex_unlock(&r->m);
}
static void cv_recv(transport *t, int ch, void *m)
{
    cv_ring *r = ((cv_state *)t->state)->r[ch];
    pthread_mutex_lock(&r->m);
    while (r->tail == r->head) pthread_cond_wait(&r->not_empty, &r->m);
    memcpy(m, r->slot[r->head % RING], MSG);
    r->head++;
    pthread_cond_signal(&r->not_full);
    pthread_mutex_unlock(&r->m);
}
static void nop_teardown(transport *t) { (void)t; }

/* ======================================================================
 * W5: ping-pong
 * ==================================================================== */
static double w5_transport(transport *t, long rounds)
{
    startline *sl = (startline *)shared_alloc(sizeof *sl);
    unsigned char m[MSG];
    pid_t pid;
    double t0, t1;
    long i;
    memset(m, 1, sizeof m);
    t->setup(t);
    pid = fork();
    if (pid == 0) {
        if (t->send == shmq_send) shmq_child_init(t);
        pin_self(1);
        start_wait(sl);
        for (i = 0; i < rounds; i++) {
            t->recv(t, 0, m);
            t->send(t, 1, m);
        }
        _exit(0);
    }
    if (t->send == shmq_send) shmq_child_init(t);
    pin_self(0);
    t0 = start_release(sl, 1);
    for (i = 0; i < rounds; i++) {
        t->send(t, 0, m);
        t->recv(t, 1, m);
    }
    t1 = now_s();
    reap(&pid, 1);
    unpin_self();
    t->teardown(t);
    return (t1 - t0) / (double)rounds * 1e6;
}

/* raw futex ping-pong: the floor for sleeping waiters */
static long futex_(uint32_t *a, int op, uint32_t v)
{
    return syscall(SYS_futex, a, op, v, NULL, NULL, 0);
}
static double w5_futex(long rounds)
{
    startline *sl = (startline *)shared_alloc(sizeof *sl);
    uint32_t *w = (uint32_t *)shared_alloc(64);
    pid_t pid;
    double t0, t1;
    long i;
    *w = 0;
    pid = fork();
    if (pid == 0) {
        pin_self(1);
        start_wait(sl);
        for (i = 0; i < rounds; i++) {
            while (__atomic_load_n(w, __ATOMIC_ACQUIRE) != 1) futex_(w, 0 /* WAIT */, 0);
            __atomic_store_n(w, 0, __ATOMIC_RELEASE);
            futex_(w, 1 /* WAKE */, 1);
        }
        _exit(0);
    }
    pin_self(0);
    t0 = start_release(sl, 1);
    for (i = 0; i < rounds; i++) {
        __atomic_store_n(w, 1, __ATOMIC_RELEASE);
        futex_(w, 1, 1);
        while (__atomic_load_n(w, __ATOMIC_ACQUIRE) != 0) futex_(w, 0, 1);
    }
    t1 = now_s();
    reap(&pid, 1);
    unpin_self();
    return (t1 - t0) / (double)rounds * 1e6;
}

/* raw spin ping-pong: the floor for spinning waiters */
static double w5_spin(long rounds)
{
    startline *sl = (startline *)shared_alloc(sizeof *sl);
    uint32_t *w = (uint32_t *)shared_alloc(64);
    pid_t pid;
    double t0, t1;
    long i;
    *w = 0;
    pid = fork();
    if (pid == 0) {
        pin_self(1);
        start_wait(sl);
        for (i = 0; i < rounds; i++) {
            while (__atomic_load_n(w, __ATOMIC_ACQUIRE) != 1) shmq__cpu_relax();
            __atomic_store_n(w, 0, __ATOMIC_RELEASE);
        }
        _exit(0);
    }
    pin_self(0);
    t0 = start_release(sl, 1);
    for (i = 0; i < rounds; i++) {
        __atomic_store_n(w, 1, __ATOMIC_RELEASE);
        while (__atomic_load_n(w, __ATOMIC_ACQUIRE) != 0) shmq__cpu_relax();
    }
    t1 = now_s();
    reap(&pid, 1);
    unpin_self();
    return (t1 - t0) / (double)rounds * 1e6;
}

/* ======================================================================
 * W6: throughput, P producers -> C consumers over channel 0
 * ==================================================================== */
static double w6_transport(transport *t, long n, int P, int C)
{
    startline *sl = (startline *)shared_alloc(sizeof *sl);
    pid_t pids[8];
    unsigned char m[MSG];
    double t0, t1;
    int i, k = 0;
    t->setup(t);
    for (i = 0; i < C; i++) {
        pids[k] = fork();
        if (pids[k] == 0) {
            if (t->send == shmq_send) shmq_child_init(t);
            start_wait(sl);
            for (;;) {
                t->recv(t, 0, m);
                if (m[0] == STOP) _exit(0);
            }
        }
        k++;
    }
    for (i = 0; i < P; i++) {
        pids[k] = fork();
        if (pids[k] == 0) {
            long j, mine = n / P + (i < n % P ? 1 : 0);
            if (t->send == shmq_send) shmq_child_init(t);
            memset(m, 0, sizeof m);
            start_wait(sl);
            for (j = 0; j < mine; j++) {
                m[1] = (unsigned char)j;
                t->send(t, 0, m);
            }
            _exit(0);
        }
        k++;
    }
    t0 = start_release(sl, (uint32_t)(P + C));
    reap(pids + C, P);
    memset(m, 0, sizeof m);
    m[0] = STOP;
    for (i = 0; i < C; i++) t->send(t, 0, m);
    reap(pids, C);
    t1 = now_s();
    t->teardown(t);
    return (double)n / (t1 - t0);
}

static double minv(double a, double b) { return a < b ? a : b; }
static double maxv(double a, double b) { return a > b ? a : b; }

int main(int argc, char **argv)
{
    long w5 = 100000, w6 = 10000000;
    int i, r, reps = 3, profile = 0;
    /* best of `reps` interleaved repetitions: the machine is shared, and the best
     * run is the one least disturbed by others (the same rule for every contender) */
    double r_shmq_sleep = 1e30, r_shmq_spin = 1e30, r_futex = 1e30, r_spin = 1e30, r_pipe = 1e30,
           r_sock = 1e30, r_mq = 1e30, r_cv = 1e30;
    double t11_shmq = 0, t11_pipe = 0, t11_sock = 0, t11_mq = 0, t11_cv = 0, t22_shmq = 0,
           t22_pipe = 0, t22_mq = 0, t22_cv = 0;
    transport tq = {"shmq", 1, shmq_setup, shmq_send, shmq_recv, shmq_teardown, NULL, -1};
    transport tp = {"pipe", 1, pipe_setup, fd_send, fd_recv, fd_teardown, NULL, 0};
    transport ts = {"unix stream", 0, sock_setup, fd_send, fd_recv, fd_teardown, NULL, 0};
    transport tm = {"mqueue", 1, mq_setup, mq_send_, mq_recv_, mq_teardown, NULL, 0};
    transport tc = {"mutex+condvar ring", 1, cv_setup, cv_send, cv_recv, nop_teardown, NULL, 0};
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            w5 = 2000;
            w6 = 100000;
            reps = 1;
        } else if (strcmp(argv[i], "--profile") == 0) {
            profile = 1; /* shmq W6 only, for perf */
        } else if (strcmp(argv[i], "--w5-spin") == 0) {
            profile = 3; /* shmq W5 with spinning only, for perf */
        } else if (strcmp(argv[i], "--w5-sleep") == 0) {
            profile = 4; /* shmq W5 with sleeping waiters only, for perf */
        } else if (strcmp(argv[i], "--w5-futex") == 0) {
            profile = 5; /* the raw futex W5 only, for perf */
        } else if (strcmp(argv[i], "--pin") == 0) {
            g_pin = 1; /* the W5-only modes, pinned apart */
        } else if (strcmp(argv[i], "--w5") == 0 && i + 1 < argc) {
            w5 = atol(argv[++i]);
        } else if (strcmp(argv[i], "--w6") == 0 && i + 1 < argc) {
            w6 = atol(argv[++i]);
        } else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
            reps = atoi(argv[++i]);
            if (reps < 1) reps = 1;
        } else {
            fprintf(stderr, "usage: %s [--quick] [--w5 N] [--w6 N] [--reps N] [--profile | --w5-spin | --w5-sleep | --w5-futex [--pin]]\n",
                    argv[0]);
            return 2;
        }
    }
    printf("bench_shmq: %ld round trips (W5), %ld messages (W6), %d-byte messages, %ld CPUs, "
           "best of %d (W5) and %d (W6) runs\n", w5, w6, MSG, sysconf(_SC_NPROCESSORS_ONLN),
           reps > 1 ? reps + 2 : reps, reps);
    if (profile == 1) {
        printf("shmq W6 1->1: %.2f M/s\n", w6_transport(&tq, w6, 1, 1) / 1e6);
        printf("shmq W6 2->2: %.2f M/s\n", w6_transport(&tq, w6, 2, 2) / 1e6);
        shared_free_all();
        return 0;
    }
    if (profile == 5) {
        printf("raw futex W5: %.2f us\n", w5_futex(w5));
        shared_free_all();
        return 0;
    }
    if (profile == 3 || profile == 4) {
        tq.spin = profile == 3 ? -1 : 0;
        printf("shmq W5 %s: %.2f us\n", profile == 3 ? "spin" : "sleep", w5_transport(&tq, w5));
        shared_free_all();
        return 0;
    }

    for (r = 0; r < (reps > 1 ? reps + 2 : reps); r++) { /* W5 is short: 2 more runs */
        tq.spin = 0;
        r_shmq_sleep = minv(r_shmq_sleep, w5_transport(&tq, w5));
        r_futex = minv(r_futex, w5_futex(w5));
        tq.spin = -1;
        r_shmq_spin = minv(r_shmq_spin, w5_transport(&tq, w5));
        r_spin = minv(r_spin, w5_spin(w5));
        r_pipe = minv(r_pipe, w5_transport(&tp, w5));
        r_sock = minv(r_sock, w5_transport(&ts, w5));
        r_mq = minv(r_mq, w5_transport(&tm, w5));
        r_cv = minv(r_cv, w5_transport(&tc, w5));
    }
    printf("\nW5 ping-pong between two processes (us per round trip, lower is better)\n");
    printf("  %-28s %8.2f\n", "shmq, sleeping waiters", r_shmq_sleep);
    printf("  %-28s %8.2f\n", "raw futex", r_futex);
    printf("  %-28s %8.2f\n", "shmq, adaptive spin", r_shmq_spin);
    printf("  %-28s %8.2f\n", "raw spin", r_spin);
    printf("  %-28s %8.2f\n", "pipe", r_pipe);
    printf("  %-28s %8.2f\n", "unix stream socket", r_sock);
    printf("  %-28s %8.2f\n", "POSIX mqueue", r_mq);
    printf("  %-28s %8.2f\n", "mutex+condvar ring", r_cv);
    printf("  ratios: shmq sleeping / raw futex = %.2f (target <= 1.1)\n", r_shmq_sleep / r_futex);
    printf("          shmq sleeping / pipe      = %.2f (target <= 0.6)\n", r_shmq_sleep / r_pipe);
    printf("          shmq spin / raw spin      = %.2f (target <= 2)\n", r_shmq_spin / r_spin);
    fflush(stdout);

    for (r = 0; r < reps; r++) {
        tq.spin = -1;
        t11_shmq = maxv(t11_shmq, w6_transport(&tq, w6, 1, 1) / 1e6);
        t11_pipe = maxv(t11_pipe, w6_transport(&tp, w6, 1, 1) / 1e6);
        t11_sock = maxv(t11_sock, w6_transport(&ts, w6, 1, 1) / 1e6);
        t11_mq = maxv(t11_mq, w6_transport(&tm, w6 / 10, 1, 1) / 1e6);
        t11_cv = maxv(t11_cv, w6_transport(&tc, w6, 1, 1) / 1e6);
        t22_shmq = maxv(t22_shmq, w6_transport(&tq, w6, 2, 2) / 1e6);
        t22_pipe = maxv(t22_pipe, w6_transport(&tp, w6, 2, 2) / 1e6);
        t22_mq = maxv(t22_mq, w6_transport(&tm, w6 / 10, 2, 2) / 1e6);
        t22_cv = maxv(t22_cv, w6_transport(&tc, w6, 2, 2) / 1e6);
    }
    printf("\nW6 throughput (million messages/s, higher is better)\n");
    printf("  1 -> 1  %-20s %8.2f\n", "shmq", t11_shmq);
    printf("  1 -> 1  %-20s %8.2f\n", "pipe", t11_pipe);
    printf("  1 -> 1  %-20s %8.2f\n", "unix stream socket", t11_sock);
    printf("  1 -> 1  %-20s %8.2f  (on a tenth of the messages)\n", "POSIX mqueue", t11_mq);
    printf("  1 -> 1  %-20s %8.2f\n", "mutex+condvar ring", t11_cv);
    printf("  2 -> 2  %-20s %8.2f\n", "shmq", t22_shmq);
    printf("  2 -> 2  %-20s %8.2f\n", "pipe", t22_pipe);
    printf("  2 -> 2  %-20s %8.2f  (on a tenth of the messages)\n", "POSIX mqueue", t22_mq);
    printf("  2 -> 2  %-20s %8.2f\n", "mutex+condvar ring", t22_cv);
    printf("  ratios: 1->1 shmq / mutex+condvar ring = %.2f (target >= 2), shmq %.1f M/s (target >= 20)\n",
           t11_shmq / t11_cv, t11_shmq);
    printf("          2->2 shmq / mutex+condvar ring = %.2f (target >= 2), shmq %.1f M/s (target >= 8)\n",
           t22_shmq / t22_cv, t22_shmq);
    shared_free_all();
    return 0;
}
