/* test_shmq_kill.c - fault tests of shm_queue.h: processes SIGKILLed inside push,
 * inside pop, while asleep, while holding a lock. Each test fails if the
 * delivery contract of the header breaks (see DELIVERY CONTRACT there). */
#define SHMQ_IMPLEMENTATION
#include "shm_queue.h"
#include "test.h"

/* usleep is not in POSIX.1-2008 */
static void sleep_us(long us)
{
    struct timespec ts;
    ts.tv_sec = us / 1000000;
    ts.tv_nsec = (us % 1000000) * 1000;
    nanosleep(&ts, NULL);
}

#include <sys/wait.h>
#include <pthread.h>
#include <errno.h>

/* TEST_TSAN comes from test.h */

static int wait_child(pid_t pid)
{
    int st = 0;
    if (waitpid(pid, &st, 0) != pid) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

/* waits for pid at most ms; kills it and returns -1 if it did not finish */
static int wait_child_for(pid_t pid, int ms)
{
    double t0 = test_now_ms();
    int st = 0;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        if (r < 0) return -1;
        if (test_now_ms() - t0 > ms) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return -1;
        }
        sleep_us(2000);
    }
}

static void kill_and_reap(pid_t pid)
{
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

static uint32_t rnd_state = 12345;
static uint32_t rnd(void)
{
    rnd_state = rnd_state * 1103515245u + 12345u;
    return rnd_state >> 8;
}

/* message: [u32 id][u32 len][pattern of id] */
static size_t make_msg(unsigned char *buf, uint32_t id, size_t len)
{
    size_t i;
    uint32_t l32 = (uint32_t)len;
    memcpy(buf, &id, 4);
    memcpy(buf + 4, &l32, 4);
    for (i = 8; i < len; i++) buf[i] = (unsigned char)(id * 2654435761u >> 13) ^ (unsigned char)i;
    return len;
}
static int check_msg(const unsigned char *buf, size_t len, uint32_t *id)
{
    uint32_t l32;
    size_t i;
    if (len < 8) return 0;
    memcpy(id, buf, 4);
    memcpy(&l32, buf + 4, 4);
    if (l32 != len) return 0;
    for (i = 8; i < len; i++)
        if (buf[i] != ((unsigned char)(*id * 2654435761u >> 13) ^ (unsigned char)i)) return 0;
    return 1;
}

/* ---------------------------------------------------------------------------
 * Producers SIGKILLed at random points, 220 times, while a consumer process
 * and a steady producer run. Every message whose push returned success must be
 * popped exactly once and intact; the one in flight may appear (if complete) or
 * not; nothing else; no pop overruns its timeout.
 */
#define KITERS 220
#define KMAXSEQ 4096
#define KMSG (128 * 1024) /* big messages: a push spends long inside its slot */
struct kshared {
    uint32_t acked[KITERS + 1]; /* pushes that returned 0, per producer (row KITERS: steady) */
    uint32_t bad;               /* corrupt or unexpected messages seen */
    uint32_t overrun;           /* pops that returned later than timeout + 2 s */
    uint32_t popped;
    uint8_t seen[(KITERS + 1) * KMAXSEQ];
};

static unsigned char kbuf[KMSG];

static void producer_run(shmq_queue_t *q, struct kshared *sh, int row, int steady)
{
    unsigned char *m = kbuf;
    uint32_t seq;
    rnd_state = (uint32_t)row * 7919u + 1;
    for (seq = 0; seq < KMAXSEQ; seq++) {
        size_t len = (rnd() & 1) ? 8 + rnd() % 1024 : 8 + rnd() % (KMSG - 8);
        make_msg(m, (uint32_t)row * KMAXSEQ + seq, len);
        if (shmq_push(q, m, len, -1) != 0) _exit(1);
        __atomic_store_n(&sh->acked[row], seq + 1, __ATOMIC_RELEASE);
        if (steady) sleep_us(700);
    }
    if (steady) _exit(0);
    for (;;) pause(); /* wait for the kill */
}

static void consumer_run(shmq_queue_t *q, struct kshared *sh)
{
    unsigned char *m = kbuf;
    size_t len;
    for (;;) {
        double t0 = test_now_ms();
        uint32_t id;
        int rc = shmq_pop(q, m, KMSG, &len, 200);
        if (test_now_ms() - t0 > 2200) __atomic_fetch_add(&sh->overrun, 1, __ATOMIC_RELAXED);
        if (rc == SHMQ_ECLOSED) _exit(0);
        if (rc == SHMQ_EEMPTY) continue;
        if (rc != 0 || !check_msg(m, len, &id) || id >= (KITERS + 1) * KMAXSEQ) {
            __atomic_fetch_add(&sh->bad, 1, __ATOMIC_RELAXED);
            continue;
        }
        __atomic_fetch_add(&sh->seen[id], 1, __ATOMIC_RELAXED);
        __atomic_fetch_add(&sh->popped, 1, __ATOMIC_RELAXED);
        if ((rnd() & 255) == 0) sleep_us(300); /* a slow consumer now and then: pushes block */
    }
}

/* 1 if a (dead) process is named as the holder of a slot */
static int holds_slot(shmq_queue_t *q, uint32_t pid)
{
    uint64_t i;
    for (i = 0; i < q->nslots; i++)
        if (shmq__owner(shmq__load(shmq__slot_state(q->slots + i * q->stride), SHMQ__ACQUIRE)) == pid)
            return 1;
    return 0;
}

TEST(producer_sigkill_220_times)
{
    shmq_queue_t *q;
    shmq_block_t *b;
    struct kshared *sh;
    pid_t cons, steady;
    int i, rc, errors = 0, held = 0;
    char tmp[64];
    size_t len;
    REQUIRE(shmq_queue_create(&q, NULL, 8 * KMSG, KMSG, 0) == 0);
    REQUIRE(shmq_block_create(&b, NULL, sizeof(struct kshared), 0) == 0);
    sh = (struct kshared *)shmq_block_data(b);
    /* use the queue here first: the pid cache must not leak into the children */
    CHECK_EQ(shmq_push(q, "warm", 4, 0), 0);
    CHECK_EQ(shmq_pop(q, tmp, sizeof tmp, &len, 0), 0);

    cons = fork();
    if (cons == 0) consumer_run(q, sh);
    steady = fork();
    if (steady == 0) producer_run(q, sh, KITERS, 1);
    rnd_state = 99;
    for (i = 0; i < KITERS; i++) {
        pid_t p = fork();
        uint32_t delay;
        if (p == 0) producer_run(q, sh, i, 0);
        delay = (rnd() & 1) ? rnd() % 300 : rnd() % 3000; /* often early, sometimes late */
        sleep_us(delay);
        kill_and_reap(p);
        held += holds_slot(q, (uint32_t)p);
    }
    CHECK_EQ(wait_child_for(steady, 20000), 0);
    /* let the consumer drain, then close: it must exit on its own */
    for (i = 0; i < 2000 && shmq_queue_count(q) > 0; i++) sleep_us(1000);
    CHECK_EQ(shmq_queue_count(q), 0);
    shmq_queue_shutdown(q);
    rc = wait_child_for(cons, 20000);
    CHECK_EQ(rc, 0);

    CHECK_EQ(sh->bad, 0);
    CHECK_EQ(sh->overrun, 0);
    for (i = 0; i <= KITERS; i++) {
        uint32_t a = sh->acked[i], s;
        for (s = 0; s < KMAXSEQ; s++) {
            uint8_t v = sh->seen[i * KMAXSEQ + s];
            int ok = s < a ? v == 1 : s == a ? v <= 1 : v == 0;
            if (!ok && errors++ < 5)
                fprintf(stderr, "  producer %d seq %u: popped %u times (acked %u)\n", i, s, v, a);
        }
    }
    CHECK_EQ(errors, 0);
    CHECK_EQ(sh->acked[KITERS], KMAXSEQ);
    fprintf(stderr, "  %u messages popped, %d producers killed, %d of them inside a slot\n",
            sh->popped, KITERS, held);
    /* and the queue is as good as new */
    CHECK_EQ(shmq_pop(q, tmp, sizeof tmp, &len, 0), SHMQ_ECLOSED);
    shmq_block_close(b);
    shmq_queue_close(q);
}

/* ---------------------------------------------------------------------------
 * Consumers SIGKILLed at random points: no message is popped twice, at most
 * one per killed consumer goes missing (the one it had in hand after shmq_pop
 * returned, before it could record it), and the queue never wedges.
 */
#define CITERS 120
#define CMAX (CITERS * 64)
struct cshared {
    uint32_t bad;
    uint8_t seen[CMAX];
};

TEST(consumer_sigkill_never_wedges)
{
    shmq_queue_t *q;
    shmq_block_t *b;
    struct cshared *sh;
    unsigned char m[256];
    size_t len;
    uint32_t next = 0, id;
    int i, dup = 0, missing = 0, rc;
    REQUIRE(shmq_queue_create(&q, NULL, 16 * 256, 256, 0) == 0);
    REQUIRE(shmq_block_create(&b, NULL, sizeof(struct cshared), 0) == 0);
    sh = (struct cshared *)shmq_block_data(b);
    rnd_state = 7;
    for (i = 0; i < CITERS; i++) {
        uint32_t k, n = 1 + rnd() % 48;
        pid_t p = fork();
        if (p == 0) {
            for (;;) {
                rc = shmq_pop(q, m, sizeof m, &len, -1);
                if (rc != 0 || !check_msg(m, len, &id) || id >= CMAX) {
                    __atomic_fetch_add(&sh->bad, 1, __ATOMIC_RELAXED);
                    continue;
                }
                __atomic_fetch_add(&sh->seen[id], 1, __ATOMIC_RELAXED);
            }
        }
        for (k = 0; k < n && next < CMAX; k++, next++)
            CHECK_EQ(shmq_push(q, m, make_msg(m, next, 8 + rnd() % 248), 5000), 0);
        sleep_us(rnd() % 400);
        kill_and_reap(p);
    }
    /* drain here: whatever is left, including messages of consumers killed mid-pop */
    while ((rc = shmq_pop(q, m, sizeof m, &len, 300)) == 0) {
        if (!check_msg(m, len, &id) || id >= CMAX) sh->bad++;
        else sh->seen[id]++;
    }
    CHECK_EQ(rc, SHMQ_EEMPTY);
    CHECK_EQ(sh->bad, 0);
    for (id = 0; id < next; id++) {
        if (sh->seen[id] > 1) dup++;
        if (sh->seen[id] == 0) missing++;
    }
    CHECK_EQ(dup, 0);
    CHECK(missing <= CITERS);
    fprintf(stderr, "  %u pushed, %d missing (in hand when killed), %d consumers killed\n", next,
            missing, CITERS);
    /* not wedged: a full lap works */
    for (i = 0; i < 64; i++) {
        CHECK_EQ(shmq_push(q, "again", 6, 1000), 0);
        CHECK_EQ(shmq_pop(q, m, sizeof m, &len, 1000), 0);
        CHECK_EQ(len, 6);
    }
    shmq_block_close(b);
    shmq_queue_close(q);
}

/* ---------------------------------------------------------------------------
 * Deterministic deaths at the exact worst moments, staged by a child that
 * plays the first half of push or pop (white-box: same state-word protocol)
 * and then SIGKILLs itself.
 */
static void die_holding_write(shmq_queue_t *q, int advance_tail)
{
    uint64_t pos = shmq__load(&q->h->tail, SHMQ__RELAXED);
    unsigned char *s = shmq__slot(q, pos);
    uint64_t st = shmq__mk(pos, 0);
    if (!shmq__cas(shmq__slot_state(s), &st, shmq__mk(pos, (uint32_t)getpid()))) _exit(9);
    if (advance_tail) shmq__store(&q->h->tail, pos + 1, SHMQ__RELAXED);
    memset(shmq__slot_data(s), 0xEE, 8); /* half a message */
    shmq__store(shmq__slot_len(s), 8u, SHMQ__RELAXED);
    raise(SIGKILL);
}

static void die_holding_read(shmq_queue_t *q)
{
    uint64_t pos = shmq__load(&q->h->head, SHMQ__RELAXED);
    unsigned char *s = shmq__slot(q, pos);
    uint64_t st = shmq__mk(pos + 1, 0);
    if (!shmq__cas(shmq__slot_state(s), &st, shmq__mk(pos + 1, (uint32_t)getpid()))) _exit(9);
    shmq__store(&q->h->head, pos + 1, SHMQ__RELAXED);
    memcpy(&st, shmq__slot_data(s), 1); /* "copying" */
    raise(SIGKILL);
}

TEST(dead_writer_is_dropped_exactly)
{
    int adv;
    for (adv = 0; adv < 2; adv++) {
        shmq_queue_t *q;
        char buf[32];
        size_t len;
        pid_t p;
        int i;
        REQUIRE(shmq_queue_create(&q, NULL, 4 * 32, 32, 0) == 0);
        CHECK_EQ(shmq_push(q, "a", 2, 0), 0);
        p = fork();
        if (p == 0) die_holding_write(q, adv);
        CHECK_EQ(wait_child(p), 128 + SIGKILL);
        CHECK_EQ(shmq_push(q, "b", 2, 0), 0);
        CHECK_EQ(shmq_pop(q, buf, sizeof buf, &len, 1000), 0);
        CHECK(strcmp(buf, "a") == 0);
        CHECK_EQ(shmq_pop(q, buf, sizeof buf, &len, 1000), 0); /* the half message is skipped */
        CHECK(strcmp(buf, "b") == 0);
        CHECK_EQ(shmq_pop(q, buf, sizeof buf, &len, 0), SHMQ_EEMPTY);
        /* the slot is usable again: several laps */
        for (i = 0; i < 40; i++) {
            snprintf(buf, sizeof buf, "%d", i);
            CHECK_EQ(shmq_push(q, buf, strlen(buf) + 1, 0), 0);
            if (i % 3 == 2) {
                int k;
                for (k = i - 2; k <= i; k++) {
                    char want[32];
                    snprintf(want, sizeof want, "%d", k);
                    CHECK_EQ(shmq_pop(q, buf, sizeof buf, &len, 0), 0);
                    CHECK(strcmp(buf, want) == 0);
                }
            }
        }
        CHECK_EQ(shmq_queue_close(q), 0);
    }
}

TEST(dead_reader_message_is_redelivered)
{
    shmq_queue_t *q, *fresh;
    char buf[32];
    size_t len;
    pid_t p;
    double t0;
    REQUIRE(shmq_queue_create(&q, NULL, 2 * 32, 32, 0) == 0);
    CHECK_EQ(shmq_push(q, "m0", 3, 0), 0);
    CHECK_EQ(shmq_push(q, "m1", 3, 0), 0);
    p = fork();
    if (p == 0) die_holding_read(q); /* dies holding m0 */
    CHECK_EQ(wait_child(p), 128 + SIGKILL);
    /* the ring is full (m0 held by the dead reader, m1): push times out */
    CHECK_EQ(shmq_push(q, "m2", 3, 50), SHMQ_EFULL);
    CHECK_EQ(shmq_pop(q, buf, sizeof buf, &len, 1000), 0);
    CHECK(strcmp(buf, "m1") == 0);
    /* the next pop reaches m0's slot a lap later and delivers it */
    CHECK_EQ(shmq_pop(q, buf, sizeof buf, &len, 1000), 0);
    CHECK(strcmp(buf, "m0") == 0);
    CHECK_EQ(shmq_pop(q, buf, sizeof buf, &len, 0), SHMQ_EEMPTY);

    /* same death, but no lap comes: a pop about to sleep finds it (scan) */
    CHECK_EQ(shmq_push(q, "x0", 3, 0), 0);
    p = fork();
    if (p == 0) die_holding_read(q);
    CHECK_EQ(wait_child(p), 128 + SIGKILL);
    REQUIRE(shmq_queue_attach(&fresh, (void *)q->h) == 0);
    t0 = test_now_ms();
    CHECK_EQ(shmq_pop(fresh, buf, sizeof buf, &len, 5000), 0);
    CHECK(strcmp(buf, "x0") == 0);
    CHECK(test_now_ms() - t0 < 4000);
    CHECK_EQ(shmq_pop(q, buf, sizeof buf, &len, 0), SHMQ_EEMPTY);

    /* and with shmq_queue_recover (what the process pool calls) for a try-pop */
    CHECK_EQ(shmq_push(q, "y0", 3, 0), 0);
    CHECK_EQ(shmq_pop(q, buf, sizeof buf, &len, 0), 0); /* y0; resets q's scan clock */
    CHECK_EQ(shmq_push(q, "y1", 3, 0), 0);
    p = fork();
    if (p == 0) die_holding_read(q);
    CHECK_EQ(wait_child(p), 128 + SIGKILL);
    CHECK_EQ(shmq_queue_recover(q), 1);
    CHECK_EQ(shmq_try_pop(q, buf, sizeof buf, &len), 0);
    CHECK(strcmp(buf, "y1") == 0);
    CHECK_EQ(shmq_queue_recover(q), 0);
    /* ENOBUFS for an orphan too: it stays */
    CHECK_EQ(shmq_push(q, "z-long-message", 15, 0), 0);
    p = fork();
    if (p == 0) die_holding_read(q);
    CHECK_EQ(wait_child(p), 128 + SIGKILL);
    CHECK_EQ(shmq_push(q, "z1", 3, 0), 0);
    CHECK_EQ(shmq_pop(q, buf, sizeof buf, &len, 0), 0);
    CHECK(strcmp(buf, "z1") == 0);
    CHECK_EQ(shmq_pop(q, buf, 4, &len, 0), SHMQ_ENOBUFS); /* head reached the orphan's slot */
    CHECK_EQ(len, 15);
    CHECK_EQ(shmq_pop(q, buf, sizeof buf, &len, 0), 0);
    CHECK(strcmp(buf, "z-long-message") == 0);
    shmq_queue_close(fresh);
    shmq_queue_close(q);
}

/* A consumer killed while asleep in pop leaves the wake flag set: harmless. */
TEST(sleeping_waiters_killed)
{
    shmq_queue_t *q;
    char buf[32];
    size_t len;
    pid_t p, c2;
    int i;
    REQUIRE(shmq_queue_create(&q, NULL, 2 * 32, 32, 0) == 0);
    for (i = 0; i < 3; i++) {
        p = fork();
        if (p == 0) _exit(shmq_pop(q, buf, sizeof buf, &len, -1) == 0 ? 0 : 1);
        sleep_us(30000);
        kill_and_reap(p);
    }
    /* a live waiter is still woken */
    c2 = fork();
    if (c2 == 0) _exit(shmq_pop(q, buf, sizeof buf, &len, 10000) == 0 && strcmp(buf, "hi") == 0 ? 0 : 1);
    sleep_us(30000);
    CHECK_EQ(shmq_push(q, "hi", 3, 0), 0);
    CHECK_EQ(wait_child_for(c2, 15000), 0);
    /* producers killed while asleep on a full queue */
    CHECK_EQ(shmq_push(q, "f1", 3, 0), 0);
    CHECK_EQ(shmq_push(q, "f2", 3, 0), 0);
    for (i = 0; i < 3; i++) {
        p = fork();
        if (p == 0) _exit(shmq_push(q, "never", 6, -1));
        sleep_us(30000);
        kill_and_reap(p);
    }
    CHECK_EQ(shmq_pop(q, buf, sizeof buf, &len, 0), 0);
    CHECK(strcmp(buf, "f1") == 0);
    CHECK_EQ(shmq_pop(q, buf, sizeof buf, &len, 0), 0);
    CHECK(strcmp(buf, "f2") == 0);
    CHECK_EQ(shmq_pop(q, buf, sizeof buf, &len, 0), SHMQ_EEMPTY);
    shmq_queue_close(q);
}

/* ---------------------------------------------------------------------------
 * Lock holder killed: the next acquire says so, then the lock works normally.
 */
struct acq_arg {
    shmq_lock_t *l;
    int rc;
};
static void *acquire_forever(void *p)
{
    struct acq_arg *a = (struct acq_arg *)p;
    a->rc = shmq_lock_acquire(a->l, -1);
    if (a->rc == 0 || a->rc == SHMQ_EOWNERDEAD) shmq_lock_release(a->l);
    return NULL;
}

TEST(lock_owner_dies)
{
    shmq_block_t *b;
    shmq_lock_t *l;
    pid_t p;
    int round;
    REQUIRE(shmq_block_create(&b, NULL, SHMQ_LOCK_BYTES, 0) == 0);
    REQUIRE(shmq_lock_init(&l, shmq_block_data(b), SHMQ_LOCK_BYTES) == 0);
    for (round = 0; round < 3; round++) {
        /* the holder dies (SIGKILL, or plain exit without unlocking) */
        p = fork();
        if (p == 0) {
            if (shmq_lock_acquire(l, -1) != 0) _exit(1);
            if (round == 1) _exit(0);
            raise(SIGKILL);
        }
        wait_child(p);
        /* rounds 0 and 1 wait without a limit: TSan's interceptor of the timed form
         * does not record an EOWNERDEAD acquisition, and would then misreport the release */
        CHECK_EQ(shmq_lock_acquire(l, round == 2 && !TEST_TSAN ? 1000 : -1), SHMQ_EOWNERDEAD);
        CHECK_EQ(shmq_lock_release(l), 0);
        CHECK_EQ(shmq_lock_acquire(l, 0), 0);
        CHECK_EQ(shmq_lock_release(l), 0);
    }
    /* a waiter blocked in acquire while the holder dies is told so */
    {
        pthread_t t;
        struct acq_arg a;
        int pfd[2];
        char c;
        CHECK(pipe(pfd) == 0);
        p = fork();
        if (p == 0) {
            if (shmq_lock_acquire(l, -1) != 0) _exit(1);
            if (write(pfd[1], "x", 1) != 1) _exit(1);
            pause();
            _exit(0);
        }
        CHECK(read(pfd[0], &c, 1) == 1);
        a.l = l; a.rc = 99;
        pthread_create(&t, NULL, acquire_forever, &a);
        sleep_us(50000);
        kill_and_reap(p);
        pthread_join(t, NULL);
        CHECK_EQ(a.rc, SHMQ_EOWNERDEAD);
        close(pfd[0]);
        close(pfd[1]);
    }
    CHECK_EQ(shmq_lock_acquire(l, 0), 0);
    CHECK_EQ(shmq_lock_release(l), 0);
    shmq_block_close(b);
}

/* A producer stopped (SIGSTOP) in the middle of its push: a consumer must not
 * sleep without bound behind its slot (the producer may have read the wake
 * flag before the consumer raised it), must time out normally, and must get
 * the message soon after the producer continues. */
TEST(stopped_writer_does_not_strand_a_sleeper)
{
    shmq_queue_t *q;
    char buf[32];
    size_t len;
    pid_t p, waker;
    int st;
    double t0;
    REQUIRE(shmq_queue_create(&q, NULL, 4 * 32, 32, 0) == 0);
    CHECK_EQ(shmq_queue_set_spin(q, 0), 0);
    p = fork();
    if (p == 0) {
        uint64_t pos = shmq__load(&q->h->tail, SHMQ__RELAXED);
        unsigned char *s = shmq__slot(q, pos);
        uint64_t old = shmq__mk(pos, 0);
        uint32_t flag;
        if (!shmq__cas_sc(shmq__slot_state(s), &old, shmq__mk(pos, (uint32_t)getpid()))) _exit(9);
        shmq__store(&q->h->tail, pos + 1, SHMQ__RELAXED);
        flag = shmq__load(&q->h->not_empty.word, SHMQ__SEQ_CST); /* before the sleeper's flag */
        raise(SIGSTOP);
        memcpy(shmq__slot_data(s), "late", 5);
        shmq__store(shmq__slot_len(s), 5u, SHMQ__RELAXED);
        shmq__store(shmq__slot_state(s), shmq__mk(pos + 1, 0), SHMQ__RELEASE);
        if (flag & 1u) shmq__signal(&q->h->not_empty); /* never: the flag was clear */
        _exit(0);
    }
    REQUIRE(waitpid(p, &st, WUNTRACED) == p && WIFSTOPPED(st));
    t0 = test_now_ms();
    CHECK_EQ(shmq_pop(q, buf, sizeof buf, &len, 200), SHMQ_EEMPTY);
    CHECK(test_now_ms() - t0 < 3000);
    /* continue the producer in 100 ms, while we wait without a timeout */
    waker = fork();
    if (waker == 0) {
        sleep_us(100000);
        kill(p, SIGCONT);
        _exit(0);
    }
    t0 = test_now_ms();
    CHECK_EQ(shmq_pop(q, buf, sizeof buf, &len, -1), 0);
    CHECK(strcmp(buf, "late") == 0);
    CHECK(test_now_ms() - t0 < 5000);
    CHECK_EQ(wait_child(waker), 0);
    CHECK_EQ(wait_child(p), 0);
    shmq_queue_close(q);
}

int main(int argc, char **argv)
{
    RUN(dead_writer_is_dropped_exactly);
    RUN(dead_reader_message_is_redelivered);
    RUN(sleeping_waiters_killed);
    RUN(stopped_writer_does_not_strand_a_sleeper);
    RUN(lock_owner_dies);
    RUN(producer_sigkill_220_times);
    RUN(consumer_sigkill_never_wedges);
    return test_run_all(argc, argv);
}
