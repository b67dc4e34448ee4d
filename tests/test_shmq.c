/* test_shmq.c - unit tests of shm_queue.h: blocks, queues, lock, event, semaphore,
 * bad input, timeouts, shutdown, threads, related and unrelated processes, leaks.
 * The kill tests are in test_shmq_kill.c. */
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

#include <pthread.h>
#include <sys/wait.h>
#include <sys/mman.h>
#include <fcntl.h>
#include <errno.h>

static const char *g_self = "/proc/self/exe";

/* TEST_TSAN comes from test.h */

/* a name unique to this run, so parallel test runs never collide */
static void uname_(char *out, size_t n, const char *tag)
{
    snprintf(out, n, "/t%d.%s", (int)getpid(), tag);
}

/* names of this test run in /dev/shm (other programs may create shmq.* names
 * meanwhile: only ours are counted) */
static int my_shm_count(void)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "shmq.t%d.", (int)getpid());
    return test_count_shm(prefix);
}

static int wait_child(pid_t pid)
{
    int st = 0;
    if (waitpid(pid, &st, 0) != pid) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

/* message with a checkable body: [u32 id][u32 len][bytes f(id, i)] */
static size_t make_msg(unsigned char *buf, uint32_t id, size_t len)
{
    size_t i;
    memcpy(buf, &id, 4);
    memcpy(buf + 4, &len, 4 < sizeof len ? 4 : sizeof len);
    for (i = 8; i < len; i++) buf[i] = (unsigned char)(id * 131u + i * 7u);
    return len;
}
static int check_msg(const unsigned char *buf, size_t len, uint32_t *id)
{
    uint32_t l32 = 0;
    size_t i;
    if (len < 8) return 0;
    memcpy(id, buf, 4);
    memcpy(&l32, buf + 4, 4);
    if (l32 != len) return 0;
    for (i = 8; i < len; i++)
        if (buf[i] != (unsigned char)(*id * 131u + i * 7u)) return 0;
    return 1;
}

TEST(strerror_all_codes)
{
    int codes[] = {
#define X_(name, value, text) value,
        SHMQ_ERRORS(X_)
#undef X_
    };
    size_t i, j, n = sizeof codes / sizeof codes[0];
    for (i = 0; i < n; i++) {
        CHECK(shmq_strerror(codes[i]) != NULL);
        CHECK(strcmp(shmq_strerror(codes[i]), "unknown error") != 0);
        for (j = 0; j < i; j++) CHECK(codes[i] != codes[j]);
    }
    CHECK(strcmp(shmq_strerror(12345), "unknown error") == 0);
    CHECK(strcmp(shmq_version(), "0.2") == 0);
}

TEST(queue_basic_fifo)
{
    shmq_queue_t *q;
    char buf[64];
    size_t len, i;
    REQUIRE(shmq_queue_create(&q, NULL, 8 * 64, 64, 0) == 0);
    CHECK_EQ(shmq_queue_capacity(q), 8);
    CHECK_EQ(shmq_queue_max_message(q), 64);
    CHECK_EQ(shmq_queue_count(q), 0);
    for (i = 0; i < 8; i++) {
        snprintf(buf, sizeof buf, "message %d", (int)i);
        CHECK_EQ(shmq_push(q, buf, strlen(buf) + 1, 0), 0);
    }
    CHECK_EQ(shmq_queue_count(q), 8);
    CHECK_EQ(shmq_try_push(q, "x", 1), SHMQ_EFULL);
    for (i = 0; i < 8; i++) {
        char want[64];
        snprintf(want, sizeof want, "message %d", (int)i);
        CHECK_EQ(shmq_pop(q, buf, sizeof buf, &len, 0), 0);
        CHECK_EQ(len, strlen(want) + 1);
        CHECK(strcmp(buf, want) == 0);
    }
    CHECK_EQ(shmq_try_pop(q, buf, sizeof buf, &len), SHMQ_EEMPTY);
    /* many laps around the ring, with every size 1..64 */
    for (i = 0; i < 1000; i++) {
        unsigned char m[64], r[64];
        size_t l = 1 + i % 64, k;
        for (k = 0; k < l; k++) m[k] = (unsigned char)(i + k);
        CHECK_EQ(shmq_push(q, m, l, 0), 0);
        CHECK_EQ(shmq_pop(q, r, sizeof r, &len, 0), 0);
        CHECK_EQ(len, l);
        CHECK(memcmp(m, r, l) == 0);
    }
    CHECK_EQ(shmq_queue_close(q), 0);
    CHECK_EQ(shmq_queue_close(NULL), 0);
}

TEST(queue_sizes)
{
    CHECK_EQ(shmq_queue_bytes(0, 64), 0);
    CHECK_EQ(shmq_queue_bytes(64, 0), 0);
    CHECK_EQ(shmq_queue_bytes(64, ((size_t)1 << 30) + 1), 0);
    CHECK_EQ(shmq_queue_bytes(64, 64), 512 + 2 * 128);   /* at least 2 slots of whole lines */
    CHECK_EQ(shmq_queue_bytes(5 * 64, 64), 512 + 8 * 128); /* rounded up to 8 */
    CHECK_EQ(shmq_queue_bytes(4096, 1), 512 + 4096 * 64);
    CHECK_EQ(shmq_queue_bytes(100, 48), 512 + 4 * 64);
    CHECK_EQ(shmq_queue_bytes((size_t)1 << 40, 1), 0); /* too many slots */
}

TEST(bad_input)
{
    shmq_queue_t *q, *q2 = (shmq_queue_t *)&q2;
    shmq_block_t *b = (shmq_block_t *)&b;
    char buf[128], name[64], longname[300];
    size_t len = 0;
    unsigned char mem[4096 + 64];
    void *aligned = (void *)(((uintptr_t)mem + 63) & ~(uintptr_t)63);
    int fds = test_count_fds();

    REQUIRE(shmq_queue_create(&q, NULL, 4 * 32, 32, 0) == 0);
    /* NULLs */
    CHECK_EQ(shmq_push(NULL, "x", 1, 0), SHMQ_EINVAL);
    CHECK_EQ(shmq_push(q, NULL, 1, 0), SHMQ_EINVAL);
    CHECK_EQ(shmq_pop(NULL, buf, sizeof buf, &len, 0), SHMQ_EINVAL);
    CHECK_EQ(shmq_pop(q, NULL, sizeof buf, &len, 0), SHMQ_EINVAL);
    CHECK_EQ(shmq_pop(q, buf, sizeof buf, NULL, 0), SHMQ_EINVAL);
    CHECK_EQ(shmq_pop(q, buf, 0, &len, 0), SHMQ_EINVAL);
    CHECK_EQ(shmq_queue_create(NULL, NULL, 64, 8, 0), SHMQ_EINVAL);
    CHECK_EQ(shmq_queue_open(NULL, "/x"), SHMQ_EINVAL);
    CHECK_EQ(shmq_queue_shutdown(NULL), SHMQ_EINVAL);
    CHECK_EQ(shmq_queue_set_spin(NULL, 0), SHMQ_EINVAL);
    CHECK_EQ(shmq_queue_set_spin(q, -2), SHMQ_EINVAL);
    CHECK_EQ(shmq_queue_recover(NULL), SHMQ_EINVAL);
    CHECK_EQ(shmq_block_create(NULL, NULL, 64, 0), SHMQ_EINVAL);
    CHECK_EQ(shmq_block_data(NULL) == NULL, 1);
    CHECK_EQ(shmq_block_size(NULL), 0);
    CHECK_EQ(shmq_block_close(NULL), 0);
    /* zero and oversized messages: named error, queue undisturbed */
    CHECK_EQ(shmq_push(q, "keep", 4, 0), 0);
    CHECK_EQ(shmq_push(q, "x", 0, 0), SHMQ_EMSGSIZE);
    memset(buf, 'z', sizeof buf);
    CHECK_EQ(shmq_push(q, buf, 33, 0), SHMQ_EMSGSIZE);
    CHECK_EQ(shmq_push(q, buf, 32, 0), 0);
    /* buffer too small: named error, size reported, message stays queued */
    len = 0;
    CHECK_EQ(shmq_pop(q, buf, 3, &len, 0), SHMQ_ENOBUFS);
    CHECK_EQ(len, 4);
    CHECK_EQ(shmq_pop(q, buf, 3, &len, 100), SHMQ_ENOBUFS);
    CHECK_EQ(shmq_queue_count(q), 2);
    CHECK_EQ(shmq_pop(q, buf, 4, &len, 0), 0);
    CHECK_EQ(len, 4);
    CHECK(memcmp(buf, "keep", 4) == 0);
    CHECK_EQ(shmq_pop(q, buf, 31, &len, 0), SHMQ_ENOBUFS);
    CHECK_EQ(len, 32);
    CHECK_EQ(shmq_pop(q, buf, 32, &len, 0), 0);
    CHECK_EQ(shmq_try_pop(q, buf, sizeof buf, &len), SHMQ_EEMPTY);
    /* creation arguments */
    q2 = (shmq_queue_t *)&q2;
    CHECK_EQ(shmq_queue_create(&q2, NULL, 0, 32, 0), SHMQ_EINVAL);
    CHECK(q2 == NULL);
    CHECK_EQ(shmq_queue_create(&q2, NULL, 64, 0, 0), SHMQ_EINVAL);
    CHECK_EQ(shmq_queue_create(&q2, NULL, 64, 8, 0x100), SHMQ_EINVAL);
    CHECK_EQ(shmq_block_create(&b, NULL, 0, 0), SHMQ_EINVAL);
    CHECK(b == NULL);
    /* invalid names */
    memset(longname, 'a', sizeof longname);
    longname[0] = '/';
    longname[sizeof longname - 1] = 0;
    {
        const char *bad[] = {"", "noslash", "/", "/a/b", "/.", "/..", "/tab\there", longname};
        size_t i;
        for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            CHECK_EQ(shmq_queue_create(&q2, bad[i], 64, 8, 0), SHMQ_ENAME);
            CHECK_EQ(shmq_queue_open(&q2, bad[i]), SHMQ_ENAME);
            CHECK_EQ(shmq_block_create(&b, bad[i], 64, 0), SHMQ_ENAME);
            CHECK_EQ(shmq_block_open(&b, bad[i]), SHMQ_ENAME);
            CHECK_EQ(shmq_unlink(bad[i]), SHMQ_ENAME);
        }
        CHECK_EQ(shmq_queue_open(&q2, NULL), SHMQ_ENAME);
    }
    /* a name that does not exist */
    uname_(name, sizeof name, "none");
    CHECK_EQ(shmq_queue_open(&q2, name), SHMQ_ENOENT);
    CHECK(q2 == NULL);
    CHECK_EQ(shmq_block_open(&b, name), SHMQ_ENOENT);
    CHECK_EQ(shmq_unlink(name), SHMQ_ENOENT);
    /* in-place: misaligned, too small, garbage */
    CHECK_EQ(shmq_queue_init(NULL, 4096, 8), SHMQ_EINVAL);
    CHECK_EQ(shmq_queue_init((char *)aligned + 8, 4000, 8), SHMQ_EINVAL);
    CHECK_EQ(shmq_queue_init(aligned, 512 + 16, 8), SHMQ_EINVAL);
    CHECK_EQ(shmq_queue_init(aligned, 4096, 0), SHMQ_EINVAL);
    memset(aligned, 0x5a, 4096);
    CHECK_EQ(shmq_queue_attach(&q2, aligned), SHMQ_EBADOBJ);
    CHECK_EQ(shmq_queue_attach(&q2, NULL), SHMQ_EINVAL);
    CHECK_EQ(shmq_queue_init(aligned, 4096, 8), 0);
    ((shmq__qhdr *)aligned)->version = 99;
    CHECK_EQ(shmq_queue_attach(&q2, aligned), SHMQ_EVERSION);
    CHECK_EQ(shmq_queue_init(aligned, 4096, 8), 0);
    ((shmq__qhdr *)aligned)->nslots = 3;
    CHECK_EQ(shmq_queue_attach(&q2, aligned), SHMQ_EBADOBJ);
    CHECK_EQ(shmq_queue_close(q), 0);
    CHECK_EQ(test_count_fds(), fds);
}

/* a block whose header is corrupt: each a named error, no crash */
TEST(corrupt_header)
{
    char name[64], os[128];
    shmq_queue_t *q;
    shmq_block_t *b;
    int fd, shm0 = my_shm_count();
    unsigned char junk[4096];
    uname_(name, sizeof name, "corrupt");
    snprintf(os, sizeof os, "/shmq.%s", name + 1);

    /* not ours at all */
    fd = shm_open(os, O_RDWR | O_CREAT | O_EXCL, 0600);
    REQUIRE(fd >= 0);
    memset(junk, 0xA7, sizeof junk);
    CHECK(write(fd, junk, sizeof junk) == (ssize_t)sizeof junk);
    CHECK_EQ(shmq_queue_open(&q, name), SHMQ_EBADOBJ);
    CHECK_EQ(shmq_block_open(&b, name), SHMQ_EBADOBJ);
    /* shorter than a header: waits a moment for a creator, then gives up */
    CHECK(ftruncate(fd, 16) == 0);
    CHECK_EQ(shmq_block_open(&b, name), SHMQ_EBADOBJ);
    close(fd);
    CHECK_EQ(shmq_unlink(name), 0);

    /* ours, then damaged in several ways */
    REQUIRE(shmq_queue_create(&q, name, 256, 32, 0) == 0);
    {
        shmq__bhdr *h = q->block->hdr;
        uint64_t size = h->size;
        h->version = 77;
        {
            shmq_queue_t *q2;
            CHECK_EQ(shmq_queue_open(&q2, name), SHMQ_EVERSION);
        }
        h->version = SHMQ__LAYOUT_VERSION;
        h->size = size + 4096;
        {
            shmq_queue_t *q2;
            CHECK_EQ(shmq_queue_open(&q2, name), SHMQ_EBADOBJ);
        }
        h->size = size;
        h->kind = 99;
        {
            shmq_queue_t *q2;
            CHECK_EQ(shmq_queue_open(&q2, name), SHMQ_EBADOBJ);
        }
        h->kind = SHMQ__KIND_QUEUE;
        {
            shmq_queue_t *q2;
            shmq__qhdr *qh = (shmq__qhdr *)shmq_block_data(q->block);
            uint64_t n = qh->nslots;
            qh->nslots = 1u << 20; /* claims more slots than the block holds */
            CHECK_EQ(shmq_queue_open(&q2, name), SHMQ_EBADOBJ);
            qh->nslots = n;
            CHECK_EQ(shmq_queue_open(&q2, name), 0);
            CHECK_EQ(shmq_push(q2, "ok", 2, 0), 0);
            shmq_queue_close(q2);
        }
    }
    /* the wrong kind */
    CHECK_EQ(shmq_block_open(&b, name), SHMQ_EKIND);
    shmq_queue_close(q);
    CHECK_EQ(shmq_unlink(name), 0);
    REQUIRE(shmq_block_create(&b, name, 100, 0) == 0);
    CHECK_EQ(shmq_queue_open(&q, name), SHMQ_EKIND);
    shmq_block_close(b);
    CHECK_EQ(shmq_unlink(name), 0);
    CHECK_EQ(my_shm_count(), shm0);
}

TEST(named_lifecycle_no_leaks)
{
    char name[64];
    shmq_queue_t *a, *b;
    char buf[32];
    size_t len;
    int fds = test_count_fds(), shm0 = my_shm_count(), i;
    uname_(name, sizeof name, "life");
    for (i = 0; i < 20; i++) {
        REQUIRE(shmq_queue_create(&a, name, 1024, 32, 0) == 0);
        CHECK_EQ(my_shm_count(), shm0 + 1);
        CHECK_EQ(shmq_queue_create(&b, name, 1024, 32, 0), SHMQ_EEXIST);
        REQUIRE(shmq_queue_open(&b, name) == 0);
        CHECK_EQ(shmq_push(a, "hello", 5, 0), 0);
        CHECK_EQ(shmq_pop(b, buf, sizeof buf, &len, 0), 0);
        CHECK_EQ(len, 5);
        shmq_queue_close(a);
        shmq_queue_close(b);
        CHECK_EQ(shmq_unlink(name), 0);
        CHECK_EQ(my_shm_count(), shm0);
    }
    /* REPLACE */
    REQUIRE(shmq_queue_create(&a, name, 1024, 32, 0) == 0);
    CHECK_EQ(shmq_push(a, "old", 3, 0), 0);
    REQUIRE(shmq_queue_create(&b, name, 1024, 32, SHMQ_REPLACE) == 0);
    CHECK_EQ(shmq_queue_count(b), 0);
    shmq_queue_close(a);
    shmq_queue_close(b);
    CHECK_EQ(shmq_unlink(name), 0);
    /* anonymous ones leave nothing at all */
    for (i = 0; i < 20; i++) {
        shmq_block_t *blk;
        REQUIRE(shmq_queue_create(&a, NULL, 1024, 32, 0) == 0);
        shmq_queue_close(a);
        REQUIRE(shmq_block_create(&blk, NULL, 10000, 0) == 0);
        shmq_block_close(blk);
    }
    CHECK_EQ(my_shm_count(), shm0);
    CHECK_EQ(test_count_fds(), fds);
}

TEST(block_shared_with_child)
{
    char name[64];
    shmq_block_t *b, *anon;
    pid_t pid;
    unsigned char *p;
    size_t i;
    uname_(name, sizeof name, "blk");
    REQUIRE(shmq_block_create(&b, name, 100000, 0) == 0);
    REQUIRE(shmq_block_create(&anon, NULL, 4096, 0) == 0);
    CHECK_EQ(shmq_block_size(b), 100000);
    CHECK_EQ(((uintptr_t)shmq_block_data(b)) & 63, 0);
    p = (unsigned char *)shmq_block_data(b);
    for (i = 0; i < 100000; i++) CHECK_EQ(p[i], 0); /* zero-filled */
    for (i = 0; i < 100000; i++) p[i] = (unsigned char)i;
    pid = fork();
    if (pid == 0) {
        shmq_block_t *c;
        unsigned char *cp;
        int bad = 0;
        if (shmq_block_open(&c, name) != 0) _exit(2);
        cp = (unsigned char *)shmq_block_data(c);
        for (i = 0; i < 100000; i++) bad |= cp[i] != (unsigned char)i;
        cp[0] = 0xEE;
        ((unsigned char *)shmq_block_data(anon))[0] = 0xDD; /* inherited mapping */
        shmq_block_close(c);
        _exit(bad);
    }
    CHECK_EQ(wait_child(pid), 0);
    CHECK_EQ(p[0], 0xEE);
    CHECK_EQ(((unsigned char *)shmq_block_data(anon))[0], 0xDD);
    shmq_block_close(anon);
    shmq_block_close(b);
    CHECK_EQ(shmq_block_create(&b, name, 10, 0), SHMQ_EEXIST);
    CHECK_EQ(shmq_unlink(name), 0);
}

TEST(sweep_removes_only_dead_creators)
{
    char dead[64], live[64], foreign[128];
    shmq_block_t *b;
    pid_t pid;
    int removed = -1, fd;
    uname_(dead, sizeof dead, "sweepdead");
    uname_(live, sizeof live, "sweeplive");
    snprintf(foreign, sizeof foreign, "/shmq.t%d.foreign", (int)getpid());
    pid = fork();
    if (pid == 0) {
        shmq_queue_t *q;
        _exit(shmq_queue_create(&q, dead, 256, 16, 0) == 0 ? 0 : 1); /* leaks the name */
    }
    CHECK_EQ(wait_child(pid), 0);
    REQUIRE(shmq_block_create(&b, live, 64, 0) == 0);
    fd = shm_open(foreign, O_RDWR | O_CREAT | O_EXCL, 0600); /* our prefix, not our header */
    REQUIRE(fd >= 0);
    CHECK(ftruncate(fd, 4096) == 0);
    close(fd);
    CHECK_EQ(shmq_sweep(&removed), 0);
    CHECK(removed >= 0); /* >= 1 unless a concurrent sweep (another program) was quicker */
    {
        shmq_queue_t *q;
        CHECK_EQ(shmq_queue_open(&q, dead), SHMQ_ENOENT);
    }
    CHECK_EQ(shmq_unlink(live), 0); /* still there: its creator (we) lives */
    CHECK_EQ(shm_unlink(foreign), 0); /* still there: not ours */
    shmq_block_close(b);
    CHECK_EQ(shmq_sweep(NULL), 0);
}

/* ---- timeouts and shutdown ---- */

TEST(timeouts)
{
    shmq_queue_t *q;
    char buf[16];
    size_t len;
    double t0, dt;
    REQUIRE(shmq_queue_create(&q, NULL, 2 * 16, 16, 0) == 0);
    t0 = test_now_ms();
    CHECK_EQ(shmq_pop(q, buf, sizeof buf, &len, 0), SHMQ_EEMPTY);
    CHECK(test_now_ms() - t0 < 1000);
    t0 = test_now_ms();
    CHECK_EQ(shmq_pop(q, buf, sizeof buf, &len, 150), SHMQ_EEMPTY);
    dt = test_now_ms() - t0;
    CHECK(dt >= 145 && dt < 5000);
    CHECK_EQ(shmq_push(q, "a", 1, 0), 0);
    CHECK_EQ(shmq_push(q, "b", 1, 0), 0);
    t0 = test_now_ms();
    CHECK_EQ(shmq_push(q, "c", 1, 0), SHMQ_EFULL);
    CHECK(test_now_ms() - t0 < 1000);
    t0 = test_now_ms();
    CHECK_EQ(shmq_push(q, "c", 1, 150), SHMQ_EFULL);
    dt = test_now_ms() - t0;
    CHECK(dt >= 145 && dt < 5000);
    /* with spinning off, the same */
    CHECK_EQ(shmq_queue_set_spin(q, 0), 0);
    t0 = test_now_ms();
    CHECK_EQ(shmq_push(q, "c", 1, 50), SHMQ_EFULL);
    CHECK(test_now_ms() - t0 >= 45);
    CHECK_EQ(shmq_queue_set_spin(q, -1), 0);
    shmq_queue_close(q);
}

/* The adaptive spin learns what a sleep costs from the waits that slept. A wait
 * whose word had already changed never slept and must say so: it used to look
 * like a wake-up that cost nothing, which taught the spin to stop early. */
TEST(a_wait_that_never_slept_says_so)
{
    shmq_queue_t *q;
    shmq__wait *w;
    uint32_t v;
    int64_t t0;
    int rc;
    REQUIRE(shmq_queue_create(&q, NULL, 2 * 16, 16, 0) == 0);
    w = &q->h->not_empty;
    v = shmq__load(&w->word, SHMQ__RELAXED);
    CHECK_EQ(shmq__wait_until(w, v + 2u, -1), 1); /* the word is not v + 2: no sleep */
    t0 = shmq__now_ns();
    do /* it is v: a real sleep (in poll mode, naps of 1 ms that say "re-check") */
        rc = shmq__wait_until(w, v, t0 + 20000000);
    while (rc == 0);
    CHECK_EQ(rc, SHMQ_ETIMEDOUT);
    CHECK(shmq__now_ns() - t0 >= 19000000);
    shmq_queue_close(q);
}

struct waiter_arg {
    shmq_queue_t *q;
    int push;
    int timeout;
    int rc;
};

static void *waiter_main(void *p)
{
    struct waiter_arg *a = (struct waiter_arg *)p;
    char buf[16];
    size_t len;
    if (a->push) a->rc = shmq_push(a->q, "p", 1, a->timeout);
    else a->rc = shmq_pop(a->q, buf, sizeof buf, &len, a->timeout);
    return NULL;
}

TEST(blocking_forever_is_woken)
{
    shmq_queue_t *q;
    pthread_t t;
    struct waiter_arg a;
    char buf[16];
    size_t len;
    REQUIRE(shmq_queue_create(&q, NULL, 2 * 16, 16, 0) == 0);
    a.q = q; a.push = 0; a.timeout = -1; a.rc = 99;
    pthread_create(&t, NULL, waiter_main, &a);
    sleep_us(50000);
    CHECK_EQ(shmq_push(q, "x", 1, -1), 0);
    pthread_join(t, NULL);
    CHECK_EQ(a.rc, 0);
    /* a full queue and a pusher waiting forever */
    CHECK_EQ(shmq_push(q, "1", 1, 0), 0);
    CHECK_EQ(shmq_push(q, "2", 1, 0), 0);
    a.push = 1; a.rc = 99;
    pthread_create(&t, NULL, waiter_main, &a);
    sleep_us(50000);
    CHECK_EQ(shmq_pop(q, buf, sizeof buf, &len, -1), 0);
    pthread_join(t, NULL);
    CHECK_EQ(a.rc, 0);
    CHECK_EQ(shmq_queue_count(q), 2);
    shmq_queue_close(q);
}

TEST(shutdown_wakes_every_waiter)
{
    shmq_queue_t *qe, *qf;
    pthread_t t[8];
    struct waiter_arg a[8];
    char buf[16];
    size_t len;
    int i;
    pid_t pid;
    REQUIRE(shmq_queue_create(&qe, NULL, 2 * 16, 16, 0) == 0);
    REQUIRE(shmq_queue_create(&qf, NULL, 2 * 16, 16, 0) == 0);
    CHECK_EQ(shmq_push(qf, "1", 1, 0), 0);
    CHECK_EQ(shmq_push(qf, "2", 1, 0), 0);
    /* a waiter in another process too */
    pid = fork();
    if (pid == 0) {
        int rc = shmq_pop(qe, buf, sizeof buf, &len, -1);
        _exit(rc == SHMQ_ECLOSED ? 0 : 1);
    }
    for (i = 0; i < 8; i++) {
        a[i].q = i < 4 ? qe : qf;
        a[i].push = i >= 4;
        a[i].timeout = (i & 1) ? -1 : 30000;
        a[i].rc = 99;
        pthread_create(&t[i], NULL, waiter_main, &a[i]);
    }
    sleep_us(100000);
    CHECK_EQ(shmq_queue_is_shutdown(qe), 0);
    CHECK_EQ(shmq_queue_shutdown(qe), 0);
    CHECK_EQ(shmq_queue_shutdown(qf), 0);
    CHECK_EQ(shmq_queue_shutdown(qf), 0); /* idempotent */
    for (i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        CHECK_EQ(a[i].rc, SHMQ_ECLOSED);
    }
    CHECK_EQ(wait_child(pid), 0);
    CHECK_EQ(shmq_queue_is_shutdown(qe), 1);
    /* pushes fail; what was queued drains, then ECLOSED */
    CHECK_EQ(shmq_push(qf, "3", 1, -1), SHMQ_ECLOSED);
    CHECK_EQ(shmq_pop(qf, buf, sizeof buf, &len, -1), 0);
    CHECK_EQ(shmq_pop(qf, buf, sizeof buf, &len, -1), 0);
    CHECK_EQ(shmq_pop(qf, buf, sizeof buf, &len, -1), SHMQ_ECLOSED);
    CHECK_EQ(shmq_pop(qf, buf, sizeof buf, &len, 0), SHMQ_ECLOSED);
    shmq_queue_close(qe);
    shmq_queue_close(qf);
}

/* ---- threads ---- */

#define MT_PER_PRODUCER 20000
struct mt_ctx {
    shmq_queue_t *q;
    int id;
    unsigned char *seen; /* [producers * MT_PER_PRODUCER] */
    int bad;
    long got;
};

static void *mt_producer(void *p)
{
    struct mt_ctx *c = (struct mt_ctx *)p;
    unsigned char m[128];
    uint32_t i;
    for (i = 0; i < MT_PER_PRODUCER; i++) {
        uint32_t id = (uint32_t)c->id * MT_PER_PRODUCER + i;
        size_t len = make_msg(m, id, 8 + (id * 13u) % 120);
        if (shmq_push(c->q, m, len, -1) != 0) c->bad++;
    }
    return NULL;
}

static void *mt_consumer(void *p)
{
    struct mt_ctx *c = (struct mt_ctx *)p;
    unsigned char m[128];
    size_t len;
    for (;;) {
        uint32_t id;
        int rc = shmq_pop(c->q, m, sizeof m, &len, -1);
        if (rc == SHMQ_ECLOSED) break;
        if (rc != 0 || !check_msg(m, len, &id)) {
            c->bad++;
            continue;
        }
        __atomic_fetch_add(&c->seen[id], 1, __ATOMIC_RELAXED);
        c->got++;
    }
    return NULL;
}

static void threads_mpmc(int slots, int spin_us)
{
    enum { P = 4, C = 4 };
    shmq_queue_t *q;
    pthread_t tp[P], tc[C];
    struct mt_ctx cp[P], cc[C];
    unsigned char *seen = (unsigned char *)calloc(P * MT_PER_PRODUCER, 1);
    long total = 0;
    int i, bad = 0;
    REQUIRE(seen != NULL);
    REQUIRE(shmq_queue_create(&q, NULL, (size_t)slots * 128, 128, 0) == 0);
    REQUIRE(shmq_queue_set_spin(q, spin_us) == 0);
    for (i = 0; i < C; i++) {
        cc[i].q = q; cc[i].id = i; cc[i].seen = seen; cc[i].bad = 0; cc[i].got = 0;
        pthread_create(&tc[i], NULL, mt_consumer, &cc[i]);
    }
    for (i = 0; i < P; i++) {
        cp[i].q = q; cp[i].id = i; cp[i].seen = seen; cp[i].bad = 0; cp[i].got = 0;
        pthread_create(&tp[i], NULL, mt_producer, &cp[i]);
    }
    for (i = 0; i < P; i++) { pthread_join(tp[i], NULL); bad += cp[i].bad; }
    while (shmq_queue_count(q) > 0) sleep_us(1000);
    shmq_queue_shutdown(q);
    for (i = 0; i < C; i++) { pthread_join(tc[i], NULL); bad += cc[i].bad; total += cc[i].got; }
    CHECK_EQ(bad, 0);
    CHECK_EQ(total, P * MT_PER_PRODUCER);
    for (i = 0; i < P * MT_PER_PRODUCER; i++)
        if (seen[i] != 1) { CHECK_EQ(seen[i], 1); break; }
    shmq_queue_close(q);
    free(seen);
}

TEST(threads_mpmc_exactly_once) { threads_mpmc(16, -1); }
TEST(threads_sleeping_waiters_tiny_ring) { threads_mpmc(2, 0); }

/* ---- processes ---- */

/* P producer and C consumer processes, every message exactly once. spin_us as
 * shmq_queue_set_spin; a tiny ring with spin 0 makes every side sleep and wake
 * all the time: a lost wake-up shows as a hang (the test's alarm). */
static void processes_mpmc(int slots, int spin_us)
{
    enum { P = 2, C = 2, N = 20000 };
    shmq_queue_t *q;
    shmq_block_t *b;
    unsigned char *seen;
    pid_t pids[P + C];
    int i, children0 = test_count_children();
    REQUIRE(shmq_queue_create(&q, NULL, (size_t)slots * 64, 64, 0) == 0);
    REQUIRE(shmq_queue_set_spin(q, spin_us) == 0);
    REQUIRE(shmq_block_create(&b, NULL, P * N + 64, 0) == 0);
    seen = (unsigned char *)shmq_block_data(b);
    for (i = 0; i < C; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            unsigned char m[64];
            size_t len;
            uint32_t id;
            int bad = 0, rc;
            while ((rc = shmq_pop(q, m, sizeof m, &len, -1)) != SHMQ_ECLOSED) {
                if (rc != 0 || !check_msg(m, len, &id) || id >= P * N) { bad++; continue; }
                __atomic_fetch_add(&seen[id], 1, __ATOMIC_RELAXED);
            }
            _exit(bad ? 1 : 0);
        }
    }
    for (i = 0; i < P; i++) {
        pids[C + i] = fork();
        if (pids[C + i] == 0) {
            unsigned char m[64];
            uint32_t k;
            for (k = 0; k < N; k++) {
                uint32_t id = (uint32_t)i * N + k;
                if (shmq_push(q, m, make_msg(m, id, 8 + id % 56), -1) != 0) _exit(1);
            }
            _exit(0);
        }
    }
    for (i = 0; i < P; i++) CHECK_EQ(wait_child(pids[C + i]), 0);
    while (shmq_queue_count(q) > 0) sleep_us(1000);
    shmq_queue_shutdown(q);
    for (i = 0; i < C; i++) CHECK_EQ(wait_child(pids[i]), 0);
    for (i = 0; i < P * N; i++)
        if (seen[i] != 1) { CHECK_EQ(seen[i], 1); break; }
    CHECK_EQ(test_count_children(), children0);
    shmq_block_close(b);
    shmq_queue_close(q);
}

TEST(processes_mpmc_exactly_once) { processes_mpmc(32, -1); }
TEST(processes_sleeping_waiters_tiny_ring) { processes_mpmc(2, 0); }
TEST(processes_spinning_tiny_ring) { processes_mpmc(2, 50); }

/* In-place queue in caller memory, shared with a forked child. */
TEST(in_place_queue)
{
    shmq_block_t *b;
    shmq_queue_t *q;
    size_t need = shmq_queue_bytes(64 * 8, 64), len;
    char buf[64];
    pid_t pid;
    REQUIRE(need > 0);
    REQUIRE(shmq_block_create(&b, NULL, need, 0) == 0);
    REQUIRE(shmq_queue_init(shmq_block_data(b), need, 64) == 0);
    REQUIRE(shmq_queue_attach(&q, shmq_block_data(b)) == 0);
    CHECK_EQ(shmq_queue_capacity(q), 8);
    pid = fork();
    if (pid == 0) {
        shmq_queue_t *c;
        int i, bad = 0;
        if (shmq_queue_attach(&c, shmq_block_data(b)) != 0) _exit(2);
        for (i = 0; i < 100; i++) {
            snprintf(buf, sizeof buf, "m%d", i);
            bad |= shmq_push(c, buf, strlen(buf) + 1, 5000) != 0;
        }
        shmq_queue_close(c);
        _exit(bad);
    }
    {
        int i;
        for (i = 0; i < 100; i++) {
            char want[16];
            snprintf(want, sizeof want, "m%d", i);
            CHECK_EQ(shmq_pop(q, buf, sizeof buf, &len, 5000), 0);
            CHECK(strcmp(buf, want) == 0);
        }
    }
    CHECK_EQ(wait_child(pid), 0);
    shmq_queue_close(q);
    shmq_block_close(b);
}

/* Unrelated processes: the test binary exec'd with an argument opens the queue by name. */
static int child_main(int argc, char **argv)
{
    shmq_queue_t *q;
    int n, i, bad = 0;
    unsigned char m[256];
    size_t len;
    if (argc < 4) return 2;
    n = atoi(argv[3]);
    if (shmq_queue_open(&q, argv[2]) != 0) return 3;
    if (strcmp(argv[1], "--producer") == 0) {
        for (i = 0; i < n; i++) bad |= shmq_push(q, m, make_msg(m, (uint32_t)i, 8 + i % 200), 10000) != 0;
    } else {
        for (i = 0; i < n; i++) {
            uint32_t id;
            if (shmq_pop(q, m, sizeof m, &len, 10000) != 0 || !check_msg(m, len, &id) ||
                id != (uint32_t)i)
                bad = 1;
        }
    }
    shmq_queue_close(q);
    return bad;
}

static pid_t spawn_self(const char *role, const char *name, int n)
{
    char num[32];
    pid_t pid;
    snprintf(num, sizeof num, "%d", n);
    pid = fork();
    if (pid == 0) {
        execl(g_self, g_self, role, name, num, (char *)NULL);
        _exit(127);
    }
    return pid;
}

TEST(unrelated_processes_by_name)
{
    char name[64];
    shmq_queue_t *q;
    pid_t prod, cons;
    int shm0 = my_shm_count(), fds = test_count_fds();
    uname_(name, sizeof name, "unrel");
    REQUIRE(shmq_queue_create(&q, name, 8 * 256, 256, 0) == 0);
    /* exec'd producer -> exec'd consumer: neither has our mapping or handle */
    cons = spawn_self("--consumer", name, 5000);
    prod = spawn_self("--producer", name, 5000);
    CHECK_EQ(wait_child(prod), 0);
    CHECK_EQ(wait_child(cons), 0);
    CHECK_EQ(shmq_queue_count(q), 0);
    shmq_queue_close(q);
    CHECK_EQ(shmq_unlink(name), 0);
    CHECK_EQ(my_shm_count(), shm0);
    CHECK_EQ(test_count_fds(), fds);
}

/* ---- lock, event, semaphore ---- */

struct lock_arg {
    shmq_lock_t *l;
    int rc;
};
static void *lock_release_other(void *p)
{
    struct lock_arg *a = (struct lock_arg *)p;
    a->rc = shmq_lock_release(a->l);
    return NULL;
}

TEST(lock_basic)
{
    shmq_block_t *b;
    shmq_lock_t *l, *l2;
    pthread_t t;
    struct lock_arg a;
    pid_t pid;
    double t0;
    REQUIRE(shmq_block_create(&b, NULL, SHMQ_LOCK_BYTES, 0) == 0);
    CHECK_EQ(shmq_lock_init(&l, shmq_block_data(b), SHMQ_LOCK_BYTES - 1), SHMQ_EINVAL);
    CHECK_EQ(shmq_lock_attach(&l, shmq_block_data(b)), SHMQ_EBADOBJ);
    REQUIRE(shmq_lock_init(&l, shmq_block_data(b), SHMQ_LOCK_BYTES) == 0);
    REQUIRE(shmq_lock_attach(&l2, shmq_block_data(b)) == 0);
    CHECK_EQ(shmq_lock_acquire(NULL, -1), SHMQ_EINVAL);
    CHECK_EQ(shmq_lock_acquire(l, -1), 0);
    CHECK_EQ(shmq_lock_acquire(l2, 0), SHMQ_EDEADLK);
#if !TEST_TSAN /* TSan reports the deliberate misuse itself */
    a.l = l; a.rc = 99;
    pthread_create(&t, NULL, lock_release_other, &a);
    pthread_join(t, NULL);
    CHECK_EQ(a.rc, SHMQ_EPERM);
#else
    (void)a; (void)t; (void)lock_release_other;
#endif
    /* held by us: another process times out */
    pid = fork();
    if (pid == 0) {
        int r0 = shmq_lock_acquire(l, 0), r1 = shmq_lock_acquire(l, 100);
        _exit(r0 == SHMQ_ETIMEDOUT && r1 == SHMQ_ETIMEDOUT ? 0 : 1);
    }
    CHECK_EQ(wait_child(pid), 0);
    CHECK_EQ(shmq_lock_release(l), 0);
#if !TEST_TSAN
    CHECK_EQ(shmq_lock_release(l), SHMQ_EPERM);
#endif
    /* mutual exclusion across processes: a non-atomic counter */
    {
        volatile long *counter = (volatile long *)((char *)shmq_block_data(b) + 120);
        pid_t kids[3];
        int i, k;
        *counter = 0;
        t0 = test_now_ms();
        for (k = 0; k < 3; k++) {
            kids[k] = fork();
            if (kids[k] == 0) {
                for (i = 0; i < 20000; i++) {
                    if (shmq_lock_acquire(l, -1) != 0) _exit(1);
                    *counter = *counter + 1;
                    shmq_lock_release(l);
                }
                _exit(0);
            }
        }
        for (k = 0; k < 3; k++) CHECK_EQ(wait_child(kids[k]), 0);
        CHECK_EQ(*counter, 60000);
        (void)t0;
    }
    shmq_block_close(b);
}

TEST(event_and_semaphore)
{
    shmq_block_t *b;
    shmq_event_t *e;
    shmq_sem_t *s;
    pid_t pid;
    double t0;
    REQUIRE(shmq_block_create(&b, NULL, SHMQ_EVENT_BYTES + SHMQ_SEM_BYTES, 0) == 0);
    CHECK_EQ(shmq_event_init(&e, shmq_block_data(b), SHMQ_EVENT_BYTES - 1), SHMQ_EINVAL);
    REQUIRE(shmq_event_init(&e, shmq_block_data(b), SHMQ_EVENT_BYTES) == 0);
    REQUIRE(shmq_sem_init(&s, (char *)shmq_block_data(b) + SHMQ_EVENT_BYTES, SHMQ_SEM_BYTES, 0) == 0);
    {
        shmq_sem_t *s2;
        shmq_event_t *e2;
        CHECK_EQ(shmq_sem_attach(&s2, shmq_block_data(b)), SHMQ_EBADOBJ); /* an event there */
        CHECK_EQ(shmq_event_attach(&e2, shmq_block_data(b)), 0);
        CHECK(e2 == e);
    }
    CHECK_EQ(shmq_event_is_set(e), 0);
    CHECK_EQ(shmq_event_wait(e, 0), SHMQ_ETIMEDOUT);
    t0 = test_now_ms();
    CHECK_EQ(shmq_event_wait(e, 100), SHMQ_ETIMEDOUT);
    CHECK(test_now_ms() - t0 >= 95);
    /* a child waits forever on the event, then posts the semaphore 1000 times */
    pid = fork();
    if (pid == 0) {
        int i, bad = shmq_event_wait(e, -1) != 0;
        for (i = 0; i < 1000; i++) bad |= shmq_sem_post(s) != 0;
        _exit(bad);
    }
    sleep_us(50000);
    CHECK_EQ(shmq_event_set(e), 0);
    CHECK_EQ(shmq_event_is_set(e), 1);
    CHECK_EQ(shmq_event_wait(e, -1), 0);
    {
        int i, ok = 0;
        for (i = 0; i < 1000; i++) ok += shmq_sem_wait(s, 10000) == 0;
        CHECK_EQ(ok, 1000);
    }
    CHECK_EQ(wait_child(pid), 0);
    CHECK_EQ(shmq_sem_value(s), 0);
    CHECK_EQ(shmq_sem_wait(s, 0), SHMQ_ETIMEDOUT);
    t0 = test_now_ms();
    CHECK_EQ(shmq_sem_wait(s, 100), SHMQ_ETIMEDOUT);
    CHECK(test_now_ms() - t0 >= 95);
    CHECK_EQ(shmq_sem_post(s), 0);
    CHECK_EQ(shmq_sem_value(s), 1);
    CHECK_EQ(shmq_sem_wait(s, -1), 0);
    CHECK_EQ(shmq_event_clear(e), 0);
    CHECK_EQ(shmq_event_is_set(e), 0);
    CHECK_EQ(shmq_event_wait(e, 10), SHMQ_ETIMEDOUT);
    CHECK_EQ(shmq_event_set(NULL), SHMQ_EINVAL);
    CHECK_EQ(shmq_sem_post(NULL), SHMQ_EINVAL);
    shmq_block_close(b);
}

/* The QUICK START snippets, two processes and the in-place form (the header's
 * EXAMPLE block itself is compiled and run by tests/compile/run.sh). */
static int quick_start_a(const char *jobs)
{
    shmq_queue_t *q;
    int rc = shmq_queue_create(&q, jobs, 64 * 1024, 256, 0); /* 256 messages of <= 256 bytes */
    if (rc) { fprintf(stderr, "%s\n", shmq_strerror(rc)); return 1; }
    rc = shmq_push(q, "hello", 5, -1);                      /* -1: wait while full */
    shmq_queue_close(q);                                    /* the name stays until unlinked */
    return rc;
}
static int quick_start_b(const char *jobs, void *mem)
{
    shmq_queue_t *q;
    int rc;
    char buf[256]; size_t len;
    rc = shmq_queue_open(&q, jobs);
    if (rc) return rc;
    rc = shmq_pop(q, buf, sizeof buf, &len, 1000);          /* wait up to 1 s */
    if (rc == 0 && (len != 5 || memcmp(buf, "hello", 5) != 0)) rc = -100;
    shmq_queue_close(q);
    shmq_unlink(jobs);
    if (rc) return rc;
    {
        size_t need = shmq_queue_bytes(4096, 64);           /* bytes for 64 slots of 64 bytes */
        rc = shmq_queue_init(mem, need, 64);                /* once, mem 64-byte aligned */
        if (rc == 0) rc = shmq_queue_attach(&q, mem);       /* in every process that uses it */
        if (rc == 0) {
            if (shmq_queue_capacity(q) != 64) rc = -101;
            shmq_queue_close(q);
        }
    }
    return rc;
}

TEST(quick_start_mirror)
{
    char jobs[64];
    shmq_block_t *b;
    pid_t pid;
    uname_(jobs, sizeof jobs, "jobs");
    REQUIRE(shmq_block_create(&b, NULL, shmq_queue_bytes(4096, 64), 0) == 0);
    pid = fork();
    if (pid == 0) _exit(quick_start_a(jobs) == 0 ? 0 : 1); /* process A */
    CHECK_EQ(wait_child(pid), 0);
    CHECK_EQ(quick_start_b(jobs, shmq_block_data(b)), 0); /* process B */
    shmq_block_close(b);
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strncmp(argv[1], "--", 2) == 0 && argc >= 4) return child_main(argc, argv);
    if (access("/proc/self/exe", X_OK) != 0) g_self = argv[0];
    RUN(strerror_all_codes);
    RUN(queue_basic_fifo);
    RUN(queue_sizes);
    RUN(bad_input);
    RUN(corrupt_header);
    RUN(named_lifecycle_no_leaks);
    RUN(block_shared_with_child);
    RUN(sweep_removes_only_dead_creators);
    RUN(timeouts);
    RUN(a_wait_that_never_slept_says_so);
    RUN(blocking_forever_is_woken);
    RUN(shutdown_wakes_every_waiter);
    RUN(threads_mpmc_exactly_once);
    RUN(threads_sleeping_waiters_tiny_ring);
    RUN(processes_mpmc_exactly_once);
    RUN(processes_sleeping_waiters_tiny_ring);
    RUN(processes_spinning_tiny_ring);
    RUN(in_place_queue);
    RUN(unrelated_processes_by_name);
    RUN(lock_basic);
    RUN(event_and_semaphore);
    RUN(quick_start_mirror);
    return test_run_all(argc, argv);
}
