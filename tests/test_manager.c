/* test_manager.c - the Manager server and its proxies (pool.h, issue 6).
 *
 * Object semantics, batching, threads, fork, and the fault cases: a lock holder
 * killed with SIGKILL, a waiter killed, a queue item whose consumer dies before
 * acknowledging it, wrong authkeys and users, malformed frames, 1000 clients, the
 * server killed under blocked clients, and leftovers after shutdown.
 *
 * Sanitizers: the server runs in a forked child (or in a thread of this process
 * for the in-process tests); ASan and TSan both follow fork here because the
 * children never start threads. */
#define POOL_IMPLEMENTATION
#include "pool.h"
#include "test.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

/* ---- helpers ---- */

static int dir_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* The directory part of a socket path. */
static void dirname_of(const char *path, char *out, size_t cap)
{
    const char *slash = strrchr(path, '/');
    size_t n = slash ? (size_t)(slash - path) : 0;
    if (n >= cap) n = cap - 1;
    memcpy(out, path, n);
    out[n] = 0;
}

static void wait_child(pid_t pid, int *status)
{
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) { }
    if (status) *status = st;
}

/* Child -> parent one-byte signals. */
static void sig_write(int fd) { char b = 1; if (write(fd, &b, 1) != 1) _exit(90); }
static int sig_read(int fd, int timeout_ms)
{
    struct pollfd p;
    char b;
    p.fd = fd; p.events = POLLIN; p.revents = 0;
    if (poll(&p, 1, timeout_ms) != 1) return -1;
    return read(fd, &b, 1) == 1 ? 0 : -1;
}

/* A raw, authenticated connection for frame-level tests. */
static int raw_dial(const char *address)
{
    int fd = -1;
    uint64_t session = 0;
    pool__mgr_random(&session, sizeof session);
    session |= 1;
    if (pool__mgr_dial(address, NULL, 0, session, 1 << 20, 5000, &fd) != POOL_OK) return -1;
    return fd;
}

/* Sends raw bytes, then reads one frame: returns its type, *code the ERROR/first result code. */
static int raw_exchange(int fd, const void *bytes, size_t n, int *code)
{
    pool__mgr_buf b = {NULL, 0, 0};
    int type = -1;
    if (n && pool__mgr_send_all(fd, (const uint8_t *)bytes, n) != POOL_OK) return -2;
    if (pool__mgr_recv_frame(fd, &b, 1 << 24, pool__mgr_now_ns() + (int64_t)10 * 1000000000, 0) == POOL_OK &&
        b.n >= 8) {
        type = b.p[4];
        if (code) *code = b.n >= 12 ? (int32_t)pool__mgr_get32(b.p + 8) : 0;
    }
    pool__mgr_buf_free(&b);
    return type;
}

/* 1 if the peer closed (EOF) within timeout. */
static int raw_eof(int fd, int timeout_ms)
{
    struct pollfd p;
    char c;
    p.fd = fd; p.events = POLLIN; p.revents = 0;
    if (poll(&p, 1, timeout_ms) != 1) return 0;
    return recv(fd, &c, 1, 0) <= 0;
}

/* ---- HMAC-SHA-256: RFC 4231 test vectors ---- */

static int hexval(char c) { return c <= '9' ? c - '0' : (c | 32) - 'a' + 10; }
static size_t unhex(const char *h, uint8_t *out, size_t cap)
{
    size_t n = 0;
    while (h[0] && h[1] && n < cap) { out[n++] = (uint8_t)(hexval(h[0]) << 4 | hexval(h[1])); h += 2; }
    return n;
}

TEST(hmac_sha256_rfc4231)
{
    /* key/data: hex, or (when NULL) `n` copies of byte `x` */
    static const struct {
        const char *key; int kx, kn;
        const char *data; int dx, dn;
        const char *mac; size_t maclen;
    } v[] = {
        {NULL, 0x0b, 20, "4869205468657265", 0, 0,
         "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7", 32},
        {"4a656665", 0, 0, "7768617420646f2079612077616e7420666f72206e6f7468696e673f", 0, 0,
         "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843", 32},
        {NULL, 0xaa, 20, NULL, 0xdd, 50, "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
         32},
        {"0102030405060708090a0b0c0d0e0f10111213141516171819", 0, 0, NULL, 0xcd, 50,
         "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b", 32},
        {NULL, 0x0c, 20, "546573742057697468205472756e636174696f6e", 0, 0,
         "a3b6167473100ee06e0c796c2955552b", 16},
        {NULL, 0xaa, 131,
         "54657374205573696e67204c6172676572205468616e20426c6f636b2d53697a65204b6579202d2048617368204b65792"
         "04669727374",
         0, 0, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54", 32},
        {NULL, 0xaa, 131,
         "5468697320697320612074657374207573696e672061206c6172676572207468616e20626c6f636b2d73697a65206b657"
         "920616e642061206c6172676572207468616e20626c6f636b2d73697a6520646174612e20546865206b6579206e656564"
         "7320746f20626520686173686564206265666f7265206265696e6720757365642062792074686520484d414320616c676"
         "f726974686d2e",
         0, 0, "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2", 32},
    };
    size_t i;
    for (i = 0; i < sizeof v / sizeof v[0]; i++) {
        uint8_t key[256], data[512], want[32], got[32];
        size_t kl = v[i].key ? unhex(v[i].key, key, sizeof key) : (size_t)v[i].kn;
        size_t dl = v[i].data ? unhex(v[i].data, data, sizeof data) : (size_t)v[i].dn;
        if (!v[i].key) memset(key, v[i].kx, kl);
        if (!v[i].data) memset(data, v[i].dx, dl);
        unhex(v[i].mac, want, sizeof want);
        /* the whole message at once, and split across the four parts */
        pool__mgr_hmac_sha256(key, kl, data, dl, NULL, 0, NULL, 0, NULL, 0, got);
        CHECK(memcmp(got, want, v[i].maclen) == 0);
        pool__mgr_hmac_sha256(key, kl, data, dl / 3, data + dl / 3, dl / 3, data + 2 * (dl / 3), 1,
                          data + 2 * (dl / 3) + 1, dl - 2 * (dl / 3) - 1, got);
        CHECK(memcmp(got, want, v[i].maclen) == 0);
        CHECK(pool__mgr_ct_equal(got, want, v[i].maclen));
        got[0] ^= 1;
        CHECK(!pool__mgr_ct_equal(got, want, v[i].maclen));
    }
}

/* ---- object semantics ---- */

static int iter_count(const void *k, size_t kl, const void *v, size_t vl, void *user)
{
    long *sum = (long *)user;
    (void)k; (void)kl;
    if (vl == sizeof(int)) { int x; memcpy(&x, v, sizeof x); sum[1] += x; }
    sum[0]++;
    return 0;
}

static int iter_stop(const void *k, size_t kl, const void *v, size_t vl, void *user)
{
    (void)k; (void)kl; (void)v; (void)vl;
    return ++*(int *)user == 3 ? 42 : 0;
}

TEST(dict)
{
    pool_manager_t *m;
    pool_dict_t *d, *d2;
    pool_lock_t *l;
    char buf[64];
    size_t n = 0;
    int64_t r = 0;
    long sum[2] = {0, 0};
    int i, stop = 0;
    REQUIRE(pool_manager_start(&m, NULL) == POOL_OK);
    REQUIRE(pool_manager_dict(m, "d", &d) == POOL_OK);
    CHECK(pool_manager_dict(m, "d", &d2) == POOL_OK && d2 == d);
    CHECK_EQ(pool_manager_lock(m, "d", &l), POOL_EKIND);
    CHECK_EQ(pool_manager_dict(m, "", &d2), POOL_EINVAL);
    CHECK_EQ(pool_dict_get(d, "a", 1, buf, sizeof buf, &n), POOL_ENOTFOUND);
    CHECK_EQ(pool_dict_set(d, "a", 1, "hello", 5), POOL_OK);
    CHECK_EQ(pool_dict_get(d, "a", 1, buf, sizeof buf, &n), POOL_OK);
    CHECK(n == 5 && memcmp(buf, "hello", 5) == 0);
    CHECK_EQ(pool_dict_get(d, "a", 1, buf, 2, &n), POOL_ENOSPC);
    CHECK_EQ(n, 5);
    CHECK_EQ(pool_dict_set(d, "a", 1, "", 0), POOL_OK); /* empty values are values */
    CHECK_EQ(pool_dict_get(d, "a", 1, buf, sizeof buf, &n), POOL_OK);
    CHECK_EQ(n, 0);
    CHECK_EQ(pool_dict_contains(d, "a", 1), 1);
    CHECK_EQ(pool_dict_contains(d, "b", 1), 0);
    CHECK_EQ(pool_dict_len(d, &n), POOL_OK);
    CHECK_EQ(n, 1);
    CHECK_EQ(pool_dict_delete(d, "a", 1), POOL_OK);
    CHECK_EQ(pool_dict_delete(d, "a", 1), POOL_ENOTFOUND);
    CHECK_EQ(pool_dict_set(d, "", 0, "x", 1), POOL_EINVAL);
    /* compare-and-set */
    CHECK_EQ(pool_dict_cas(d, "c", 1, NULL, 0, "1", 1), POOL_OK);      /* absent -> set */
    CHECK_EQ(pool_dict_cas(d, "c", 1, NULL, 0, "2", 1), POOL_EMISMATCH);
    CHECK_EQ(pool_dict_cas(d, "c", 1, "9", 1, "2", 1), POOL_EMISMATCH);
    CHECK_EQ(pool_dict_cas(d, "c", 1, "1", 1, "2", 1), POOL_OK);
    CHECK_EQ(pool_dict_get(d, "c", 1, buf, sizeof buf, &n), POOL_OK);
    CHECK(n == 1 && buf[0] == '2');
    /* atomic add */
    CHECK_EQ(pool_dict_add(d, "n", 1, 5, &r), POOL_OK);
    CHECK_EQ(r, 5);
    CHECK_EQ(pool_dict_add(d, "n", 1, -7, &r), POOL_OK);
    CHECK_EQ(r, -2);
    CHECK_EQ(pool_dict_add(d, "c", 1, 1, &r), POOL_EINVAL); /* not an int64 */
    /* iteration over many pages, in insertion order; clear */
    CHECK_EQ(pool_dict_clear(d), POOL_OK);
    for (i = 0; i < 20000; i++) {
        char k[32];
        int kl = snprintf(k, sizeof k, "key-%d", i);
        if (pool_dict_set(d, k, (size_t)kl, &i, sizeof i) != POOL_OK) break;
    }
    CHECK_EQ(i, 20000);
    CHECK_EQ(pool_dict_iter(d, iter_count, sum), POOL_OK);
    CHECK_EQ(sum[0], 20000);
    CHECK_EQ(sum[1], 20000L * 19999 / 2);
    CHECK_EQ(pool_dict_iter(d, iter_stop, &stop), 42);
    pool_manager_close(m);
}

TEST(list)
{
    pool_manager_t *m;
    pool_list_t *l;
    char buf[16];
    size_t n = 0;
    REQUIRE(pool_manager_start(&m, NULL) == POOL_OK);
    REQUIRE(pool_manager_list(m, "l", &l) == POOL_OK);
    CHECK_EQ(pool_list_append(l, "a", 1), POOL_OK);
    CHECK_EQ(pool_list_append(l, "bb", 2), POOL_OK);
    CHECK_EQ(pool_list_append(l, "ccc", 3), POOL_OK);
    CHECK_EQ(pool_list_len(l, &n), POOL_OK);
    CHECK_EQ(n, 3);
    CHECK_EQ(pool_list_get(l, 1, buf, sizeof buf, &n), POOL_OK);
    CHECK(n == 2 && memcmp(buf, "bb", 2) == 0);
    CHECK_EQ(pool_list_get(l, -1, buf, sizeof buf, &n), POOL_OK);
    CHECK(n == 3 && memcmp(buf, "ccc", 3) == 0);
    CHECK_EQ(pool_list_get(l, 3, buf, sizeof buf, &n), POOL_ENOTFOUND);
    CHECK_EQ(pool_list_get(l, -4, buf, sizeof buf, &n), POOL_ENOTFOUND);
    CHECK_EQ(pool_list_set(l, 0, "z", 1), POOL_OK);
    CHECK_EQ(pool_list_set(l, 7, "z", 1), POOL_ENOTFOUND);
    CHECK_EQ(pool_list_pop(l, -1, buf, 1, &n), POOL_ENOSPC); /* stays */
    CHECK_EQ(n, 3);
    CHECK_EQ(pool_list_pop(l, 0, buf, sizeof buf, &n), POOL_OK);
    CHECK(n == 1 && buf[0] == 'z');
    CHECK_EQ(pool_list_pop(l, -1, buf, sizeof buf, &n), POOL_OK);
    CHECK(n == 3 && memcmp(buf, "ccc", 3) == 0);
    CHECK_EQ(pool_list_len(l, &n), POOL_OK);
    CHECK_EQ(n, 1);
    pool_manager_close(m);
}

struct qarg { pool_queue_t *q; int rc; char got[16]; size_t n; int delay_ms; };

static void *q_getter(void *p)
{
    struct qarg *a = (struct qarg *)p;
    a->rc = pool_queue_get(a->q, a->got, sizeof a->got, &a->n, -1);
    return NULL;
}

static void *q_putter(void *p)
{
    struct qarg *a = (struct qarg *)p;
    a->rc = pool_queue_put(a->q, "4", 1, 10000);
    return NULL;
}

static void *q_worker(void *p)
{
    struct qarg *a = (struct qarg *)p;
    char b[16];
    size_t n;
    int i;
    for (i = 0; i < 3; i++) {
        if (pool_queue_get(a->q, b, sizeof b, &n, 10000) != POOL_OK) { a->rc = -1; return NULL; }
        pool__mgr_sleep_ms(a->delay_ms);
        pool_queue_task_done(a->q);
    }
    a->rc = 0;
    return NULL;
}

TEST(queue)
{
    pool_manager_t *m;
    pool_queue_t *q, *b;
    char buf[16];
    size_t n = 0;
    double t0;
    pthread_t th;
    struct qarg a;
    REQUIRE(pool_manager_start(&m, NULL) == POOL_OK);
    REQUIRE(pool_manager_queue(m, "q", 0, &q) == POOL_OK);
    CHECK_EQ(pool_queue_get(q, buf, sizeof buf, &n, 0), POOL_EEMPTY);
    t0 = test_now_ms();
    CHECK_EQ(pool_queue_get(q, buf, sizeof buf, &n, 100), POOL_ETIMEDOUT);
    CHECK(test_now_ms() - t0 >= 90);
    CHECK_EQ(pool_queue_put(q, "one", 3, 0), POOL_OK);
    CHECK_EQ(pool_queue_put(q, "two", 3, 0), POOL_OK);
    CHECK_EQ(pool_queue_size(q, &n), POOL_OK);
    CHECK_EQ(n, 2);
    CHECK_EQ(pool_queue_get(q, buf, 2, &n, 0), POOL_ENOSPC); /* stays first */
    CHECK_EQ(n, 3);
    CHECK_EQ(pool_queue_get(q, buf, sizeof buf, &n, 0), POOL_OK);
    CHECK(n == 3 && memcmp(buf, "one", 3) == 0);
    CHECK_EQ(pool_queue_get(q, buf, sizeof buf, &n, 0), POOL_OK);
    CHECK(n == 3 && memcmp(buf, "two", 3) == 0);
    /* a blocked get is woken by a put from another thread */
    memset(&a, 0, sizeof a);
    a.q = q;
    REQUIRE(pthread_create(&th, NULL, q_getter, &a) == 0);
    pool__mgr_sleep_ms(50);
    CHECK_EQ(pool_queue_put(q, "three", 5, -1), POOL_OK);
    pthread_join(th, NULL);
    CHECK_EQ(a.rc, POOL_OK);
    CHECK(a.n == 5 && memcmp(a.got, "three", 5) == 0);
    /* bounded */
    REQUIRE(pool_manager_queue(m, "bounded", 2, &b) == POOL_OK);
    CHECK_EQ(pool_queue_put(b, "1", 1, 0), POOL_OK);
    CHECK_EQ(pool_queue_put(b, "2", 1, 0), POOL_OK);
    CHECK_EQ(pool_queue_put(b, "3", 1, 0), POOL_EFULL);
    CHECK_EQ(pool_queue_put(b, "3", 1, 50), POOL_ETIMEDOUT);
    CHECK_EQ(pool_queue_get(b, buf, sizeof buf, &n, 0), POOL_OK);
    CHECK_EQ(pool_queue_put(b, "3", 1, 0), POOL_OK);
    /* a put blocked on a full queue is let in by a get */
    memset(&a, 0, sizeof a);
    a.q = b;
    a.rc = -99;
    REQUIRE(pthread_create(&th, NULL, q_putter, &a) == 0);
    pool__mgr_sleep_ms(50);
    CHECK_EQ(pool_queue_get(b, buf, sizeof buf, &n, 0), POOL_OK);
    CHECK(n == 1 && buf[0] == '2');
    pthread_join(th, NULL);
    CHECK_EQ(a.rc, POOL_OK);
    CHECK_EQ(pool_queue_size(b, &n), POOL_OK);
    CHECK_EQ(n, 2);
    CHECK_EQ(pool_queue_get(b, buf, sizeof buf, &n, 0), POOL_OK);
    CHECK(n == 1 && buf[0] == '3');
    CHECK_EQ(pool_queue_get(b, buf, sizeof buf, &n, 0), POOL_OK);
    CHECK(n == 1 && buf[0] == '4');
    /* task_done / join: 3 done + the 2 above... count from a fresh queue */
    {
        pool_queue_t *j;
        int i;
        REQUIRE(pool_manager_queue(m, "jobs", 0, &j) == POOL_OK);
        CHECK_EQ(pool_queue_join(j, 0), POOL_OK);
        for (i = 0; i < 3; i++) CHECK_EQ(pool_queue_put(j, "job", 3, 0), POOL_OK);
        CHECK_EQ(pool_queue_join(j, 0), POOL_ETIMEDOUT);
        memset(&a, 0, sizeof a);
        a.q = j;
        a.delay_ms = 20;
        a.rc = -5;
        REQUIRE(pthread_create(&th, NULL, q_worker, &a) == 0);
        CHECK_EQ(pool_queue_join(j, 20000), POOL_OK);
        pthread_join(th, NULL);
        CHECK_EQ(a.rc, 0);
        CHECK_EQ(pool_queue_task_done(j), POOL_EINVAL);
    }
    pool_manager_close(m);
}

struct larg { pool_lock_t *l; int rc; int timeout; };
static void *l_acquire(void *p)
{
    struct larg *a = (struct larg *)p;
    int rc = pool_lock_acquire(a->l, a->timeout);
    shmq__store(&a->rc, rc, SHMQ__RELEASE); /* read by the main thread while we may run */
    if (rc == POOL_OK) pool_lock_release(a->l);
    return NULL;
}

TEST(lock_and_rlock)
{
    pool_manager_t *m;
    pool_lock_t *l, *r, *x;
    pthread_t th;
    struct larg a;
    REQUIRE(pool_manager_start(&m, NULL) == POOL_OK);
    REQUIRE(pool_manager_lock(m, "l", &l) == POOL_OK);
    REQUIRE(pool_manager_rlock(m, "r", &r) == POOL_OK);
    CHECK_EQ(pool_manager_lock(m, "r", &x), POOL_EKIND);
    CHECK_EQ(pool_lock_release(l), POOL_EPERM);
    CHECK_EQ(pool_lock_acquire(l, -1), POOL_OK);
    CHECK_EQ(pool_lock_acquire(l, 0), POOL_ETIMEDOUT);   /* not recursive */
    CHECK_EQ(pool_lock_acquire(l, 50), POOL_ETIMEDOUT);
    /* another thread waits until release */
    a.l = l; a.rc = -99; a.timeout = 10000;
    REQUIRE(pthread_create(&th, NULL, l_acquire, &a) == 0);
    pool__mgr_sleep_ms(50);
    CHECK_EQ(shmq__load(&a.rc, SHMQ__ACQUIRE), -99);
    CHECK_EQ(pool_lock_release(l), POOL_OK);
    pthread_join(th, NULL);
    CHECK_EQ(a.rc, POOL_OK);
    /* recursive: owner may re-enter; other threads may not */
    CHECK_EQ(pool_lock_acquire(r, 0), POOL_OK);
    CHECK_EQ(pool_lock_acquire(r, 0), POOL_OK);
    a.l = r; a.rc = -99; a.timeout = 0;
    REQUIRE(pthread_create(&th, NULL, l_acquire, &a) == 0);
    pthread_join(th, NULL);
    CHECK_EQ(a.rc, POOL_ETIMEDOUT);
    CHECK_EQ(pool_lock_release(r), POOL_OK);
    CHECK_EQ(pool_lock_release(r), POOL_OK);
    CHECK_EQ(pool_lock_release(r), POOL_EPERM);
    pool_manager_close(m);
}

struct sarg { pool_sem_t *s; int rc; };
static void *s_acquire(void *p)
{
    struct sarg *a = (struct sarg *)p;
    a->rc = pool_sem_acquire(a->s, 10000);
    return NULL;
}

TEST(semaphore)
{
    pool_manager_t *m;
    pool_sem_t *s, *b;
    int64_t v = -1;
    pthread_t th;
    struct sarg a;
    REQUIRE(pool_manager_start(&m, NULL) == POOL_OK);
    REQUIRE(pool_manager_semaphore(m, "s", 2, 0, &s) == POOL_OK);
    CHECK_EQ(pool_sem_acquire(s, 0), POOL_OK);
    CHECK_EQ(pool_sem_acquire(s, 0), POOL_OK);
    CHECK_EQ(pool_sem_acquire(s, 0), POOL_ETIMEDOUT);
    a.s = s; a.rc = -99;
    REQUIRE(pthread_create(&th, NULL, s_acquire, &a) == 0);
    pool__mgr_sleep_ms(50);
    CHECK_EQ(pool_sem_release(s), POOL_OK);
    pthread_join(th, NULL);
    CHECK_EQ(a.rc, POOL_OK);
    CHECK_EQ(pool_sem_value(s, &v), POOL_OK);
    CHECK_EQ(v, 0);
    CHECK_EQ(pool_sem_release(s), POOL_OK);
    CHECK_EQ(pool_sem_release(s), POOL_OK);
    CHECK_EQ(pool_sem_release(s), POOL_OK); /* unbounded: may exceed the start */
    CHECK_EQ(pool_sem_value(s, &v), POOL_OK);
    CHECK_EQ(v, 3);
    REQUIRE(pool_manager_semaphore(m, "b", 1, 1, &b) == POOL_OK);
    CHECK_EQ(pool_sem_release(b), POOL_EFULL);
    CHECK_EQ(pool_sem_acquire(b, 0), POOL_OK);
    CHECK_EQ(pool_sem_release(b), POOL_OK);
    CHECK_EQ(pool_manager_semaphore(m, "b", 1, 0, &s), POOL_EKIND); /* bounded vs not */
    pool_manager_close(m);
}

struct earg { pool_event_t *e; int rc; };
static void *e_wait(void *p)
{
    struct earg *a = (struct earg *)p;
    a->rc = pool_event_wait(a->e, 10000);
    return NULL;
}

TEST(event)
{
    pool_manager_t *m;
    pool_event_t *e;
    pthread_t th[3];
    struct earg a[3];
    int i;
    REQUIRE(pool_manager_start(&m, NULL) == POOL_OK);
    REQUIRE(pool_manager_event(m, "e", &e) == POOL_OK);
    CHECK_EQ(pool_event_is_set(e), 0);
    CHECK_EQ(pool_event_wait(e, 0), POOL_ETIMEDOUT);
    CHECK_EQ(pool_event_wait(e, 30), POOL_ETIMEDOUT);
    for (i = 0; i < 3; i++) {
        a[i].e = e;
        a[i].rc = -99;
        REQUIRE(pthread_create(&th[i], NULL, e_wait, &a[i]) == 0);
    }
    pool__mgr_sleep_ms(50);
    CHECK_EQ(pool_event_set(e), POOL_OK);
    for (i = 0; i < 3; i++) { pthread_join(th[i], NULL); CHECK_EQ(a[i].rc, POOL_OK); }
    CHECK_EQ(pool_event_is_set(e), 1);
    CHECK_EQ(pool_event_wait(e, -1), POOL_OK);
    CHECK_EQ(pool_event_clear(e), POOL_OK);
    CHECK_EQ(pool_event_is_set(e), 0);
    pool_manager_close(m);
}

struct carg { pool_cond_t *c; pool_value_t *v; int rc; };
static void *c_consumer(void *p)
{
    struct carg *a = (struct carg *)p;
    int64_t x = 0;
    a->rc = pool_cond_acquire(a->c, -1);
    if (a->rc) return NULL;
    while (pool_value_get_int(a->v, &x) == POOL_OK && x == 0) {
        a->rc = pool_cond_wait(a->c, 10000);
        if (a->rc) break;
    }
    pool_cond_release(a->c);
    return NULL;
}

TEST(condition)
{
    pool_manager_t *m;
    pool_cond_t *c;
    pool_value_t *v;
    pthread_t th[2];
    struct carg a[2];
    int i;
    double t0;
    REQUIRE(pool_manager_start(&m, NULL) == POOL_OK);
    REQUIRE(pool_manager_condition(m, "c", &c) == POOL_OK);
    REQUIRE(pool_manager_value(m, "ready", &v) == POOL_OK);
    CHECK_EQ(pool_cond_wait(c, 0), POOL_EPERM);
    CHECK_EQ(pool_cond_notify(c, 1), POOL_EPERM);
    CHECK_EQ(pool_cond_release(c), POOL_EPERM);
    /* wait with a timeout comes back holding the lock */
    CHECK_EQ(pool_cond_acquire(c, -1), POOL_OK);
    t0 = test_now_ms();
    CHECK_EQ(pool_cond_wait(c, 60), POOL_ETIMEDOUT);
    CHECK(test_now_ms() - t0 >= 50);
    CHECK_EQ(pool_cond_wait(c, 0), POOL_ETIMEDOUT);
    CHECK_EQ(pool_cond_release(c), POOL_OK);
    /* two consumers, one producer */
    for (i = 0; i < 2; i++) {
        a[i].c = c; a[i].v = v; a[i].rc = -99;
        REQUIRE(pthread_create(&th[i], NULL, c_consumer, &a[i]) == 0);
    }
    pool__mgr_sleep_ms(100);
    CHECK_EQ(pool_cond_acquire(c, -1), POOL_OK);
    CHECK_EQ(pool_value_set_int(v, 1), POOL_OK);
    CHECK_EQ(pool_cond_notify_all(c), POOL_OK);
    CHECK_EQ(pool_cond_release(c), POOL_OK);
    for (i = 0; i < 2; i++) { pthread_join(th[i], NULL); CHECK_EQ(a[i].rc, POOL_OK); }
    pool_manager_close(m);
}

struct barg { pool_barrier_t *b; int rc; int64_t index; int timeout; };
static void *b_wait(void *p)
{
    struct barg *a = (struct barg *)p;
    a->rc = pool_barrier_wait(a->b, a->timeout, &a->index);
    return NULL;
}

TEST(barrier)
{
    pool_manager_t *m;
    pool_barrier_t *b;
    pthread_t th[3];
    struct barg a[3];
    int i, seen = 0;
    REQUIRE(pool_manager_start(&m, NULL) == POOL_OK);
    REQUIRE(pool_manager_barrier(m, "b", 3, &b) == POOL_OK);
    for (i = 0; i < 3; i++) {
        a[i].b = b; a[i].rc = -99; a[i].index = -1; a[i].timeout = 10000;
        REQUIRE(pthread_create(&th[i], NULL, b_wait, &a[i]) == 0);
    }
    for (i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ(a[i].rc, POOL_OK);
        if (a[i].index >= 0 && a[i].index < 3) seen |= 1 << a[i].index;
    }
    CHECK_EQ(seen, 7);
    /* a timeout breaks it for the others */
    a[0].b = b; a[0].rc = -99; a[0].timeout = 10000;
    REQUIRE(pthread_create(&th[0], NULL, b_wait, &a[0]) == 0);
    pool__mgr_sleep_ms(50);
    CHECK_EQ(pool_barrier_wait(b, 50, NULL), POOL_ETIMEDOUT);
    pthread_join(th[0], NULL);
    CHECK_EQ(a[0].rc, POOL_EBROKEN);
    CHECK_EQ(pool_barrier_wait(b, 0, NULL), POOL_EBROKEN);
    CHECK_EQ(pool_barrier_reset(b), POOL_OK);
    CHECK_EQ(pool_barrier_abort(b), POOL_OK);
    CHECK_EQ(pool_barrier_wait(b, 1000, NULL), POOL_EBROKEN);
    CHECK_EQ(pool_barrier_reset(b), POOL_OK);
    pool_manager_close(m);
}

TEST(value)
{
    pool_manager_t *m;
    pool_value_t *v;
    int64_t x = -1;
    char buf[16];
    size_t n = 0;
    REQUIRE(pool_manager_start(&m, NULL) == POOL_OK);
    REQUIRE(pool_manager_value(m, "v", &v) == POOL_OK);
    CHECK_EQ(pool_value_get_int(v, &x), POOL_OK);
    CHECK_EQ(x, 0);
    CHECK_EQ(pool_value_add(v, 10, &x), POOL_OK);
    CHECK_EQ(x, 10);
    CHECK_EQ(pool_value_set_int(v, -3), POOL_OK);
    CHECK_EQ(pool_value_get_int(v, &x), POOL_OK);
    CHECK_EQ(x, -3);
    CHECK_EQ(pool_value_set(v, "abc", 3), POOL_OK);
    CHECK_EQ(pool_value_get_int(v, &x), POOL_EINVAL);
    CHECK_EQ(pool_value_add(v, 1, &x), POOL_EINVAL);
    CHECK_EQ(pool_value_get(v, buf, sizeof buf, &n), POOL_OK);
    CHECK(n == 3 && memcmp(buf, "abc", 3) == 0);
    CHECK_EQ(pool_value_get(v, buf, 1, &n), POOL_ENOSPC);
    CHECK_EQ(pool_value_cas(v, "abd", 3, "x", 1), POOL_EMISMATCH);
    CHECK_EQ(pool_value_cas(v, "abc", 3, "x", 1), POOL_OK);
    CHECK_EQ(pool_value_get(v, buf, sizeof buf, &n), POOL_OK);
    CHECK(n == 1 && buf[0] == 'x');
    pool_manager_close(m);
}

TEST(batch)
{
    pool_manager_t *m;
    pool_dict_t *d;
    pool_list_t *l;
    pool_queue_t *q;
    pool_value_t *v;
    pool_batch_t *b;
    int rcs[64], i;
    char vals[16][8];
    size_t lens[16], n = 0;
    int64_t res = 0;
    REQUIRE(pool_manager_start(&m, NULL) == POOL_OK);
    REQUIRE(pool_manager_dict(m, "d", &d) == POOL_OK);
    REQUIRE(pool_manager_list(m, "l", &l) == POOL_OK);
    REQUIRE(pool_manager_queue(m, "q", 1, &q) == POOL_OK);
    REQUIRE(pool_manager_value(m, "v", &v) == POOL_OK);
    REQUIRE(pool_batch_create(m, &b) == POOL_OK);
    for (i = 0; i < 16; i++) {
        char k[8];
        snprintf(k, sizeof k, "k%d", i);
        CHECK_EQ(pool_batch_dict_set(b, d, k, strlen(k), k, strlen(k), &rcs[i]), POOL_OK);
    }
    CHECK_EQ(pool_batch_count(b), 16);
    CHECK_EQ(pool_batch_run(b), POOL_OK);
    CHECK_EQ(pool_batch_count(b), 0);
    for (i = 0; i < 16; i++) CHECK_EQ(rcs[i], POOL_OK);
    for (i = 0; i < 16; i++) {
        char k[8];
        snprintf(k, sizeof k, "k%d", i);
        CHECK_EQ(pool_batch_dict_get(b, d, k, strlen(k), vals[i], sizeof vals[i], &lens[i], &rcs[i]),
                 POOL_OK);
    }
    CHECK_EQ(pool_batch_dict_get(b, d, "zz", 2, vals[0], 8, NULL, &rcs[16]), POOL_OK);
    CHECK_EQ(pool_batch_dict_add(b, d, "ctr", 3, 7, &res, &rcs[17]), POOL_OK);
    CHECK_EQ(pool_batch_list_append(b, l, "x", 1, &rcs[18]), POOL_OK);
    CHECK_EQ(pool_batch_queue_put(b, q, "a", 1, &rcs[19]), POOL_OK);
    CHECK_EQ(pool_batch_queue_put(b, q, "b", 1, &rcs[20]), POOL_OK); /* full: never waits */
    CHECK_EQ(pool_batch_value_add(b, v, 3, NULL, &rcs[21]), POOL_OK);
    CHECK_EQ(pool_batch_dict_delete(b, d, "k0", 2, &rcs[22]), POOL_OK);
    CHECK_EQ(pool_batch_run(b), POOL_ENOTFOUND); /* the first failure: "zz" */
    for (i = 0; i < 16; i++) {
        char k[8];
        snprintf(k, sizeof k, "k%d", i);
        CHECK_EQ(rcs[i], POOL_OK);
        CHECK(lens[i] == strlen(k) && memcmp(vals[i], k, lens[i]) == 0);
    }
    CHECK_EQ(rcs[16], POOL_ENOTFOUND);
    CHECK_EQ(rcs[17], POOL_OK);
    CHECK_EQ(res, 7);
    CHECK_EQ(rcs[18], POOL_OK);
    CHECK_EQ(rcs[19], POOL_OK);
    CHECK_EQ(rcs[20], POOL_EFULL);
    CHECK_EQ(rcs[21], POOL_OK);
    CHECK_EQ(rcs[22], POOL_OK);
    CHECK_EQ(pool_dict_len(d, &n), POOL_OK);
    CHECK_EQ(n, 16); /* 16 - k0 + ctr */
    CHECK_EQ(pool_batch_run(b), POOL_OK); /* empty */
    pool_batch_free(b);
    pool_manager_close(m);
}

/* ---- threads share one manager ---- */
struct targ { pool_dict_t *d; pool_lock_t *l; pool_value_t *v; int rc; };
static void *t_adder(void *p)
{
    struct targ *a = (struct targ *)p;
    int i;
    for (i = 0; i < 300; i++) {
        int64_t x;
        if (pool_dict_add(a->d, "ctr", 3, 1, NULL) != POOL_OK) { a->rc = -1; return NULL; }
        /* a read-modify-write under the manager lock: no lost update */
        if (pool_lock_acquire(a->l, -1) != POOL_OK) { a->rc = -2; return NULL; }
        if (pool_value_get_int(a->v, &x) != POOL_OK || pool_value_set_int(a->v, x + 1) != POOL_OK) a->rc = -3;
        if (pool_lock_release(a->l) != POOL_OK) a->rc = -4;
    }
    return NULL;
}

/* process CPU time (user + system) in ms, from /proc/<pid>/stat; -1 if unreadable */
static double proc_cpu_ms(long pid)
{
    char path[64], line[1024], *p;
    unsigned long ut = 0, st = 0;
    FILE *f;
    int i;
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    if (!(f = fopen(path, "r"))) return -1;
    p = fgets(line, sizeof line, f);
    fclose(f);
    if (!p || !(p = strrchr(line, ')'))) return -1;
    for (i = 0; i < 12 && p; i++) p = strchr(p + 1, ' '); /* to field 14 (utime) */
    if (!p || sscanf(p, " %lu %lu", &ut, &st) != 2) return -1;
    return (double)(ut + st) * 1000.0 / (double)sysconf(_SC_CLK_TCK);
}

/* >>manager-spin: both sides poll before they sleep, but boundedly: an idle
 * server and a client blocked in a long get use (almost) no CPU; spin_us = -1
 * turns polling off and everything still works. */
TEST(polling_is_bounded)
{
    pool_manager_t *m;
    pool_manager_config cfg;
    pool_dict_t *d;
    pool_queue_t *q;
    char buf[16];
    size_t n;
    double c0, c1, t0;
    long pid;
    int i;
    REQUIRE(pool_manager_start(&m, NULL) == POOL_OK);
    REQUIRE(pool_manager_dict(m, "d", &d) == POOL_OK);
    REQUIRE(pool_manager_queue(m, "q", 0, &q) == POOL_OK);
    pid = pool_manager_server_pid(m);
    for (i = 0; i < 2000; i++) CHECK_EQ(pool_dict_set(d, "k", 1, "v", 1), POOL_OK); /* polling engaged */
    /* the server, idle for 500 ms after a burst, polls at most spin_us */
    c0 = proc_cpu_ms(pid);
    pool__mgr_sleep_ms(500);
    c1 = proc_cpu_ms(pid);
    REQUIRE(c0 >= 0 && c1 >= 0);
    CHECK(c1 - c0 < 50); /* a server that kept polling would show ~500 */
    /* a client blocked in gets of 50 ms each stops polling after a few */
    c0 = test_cpu_ms(CLOCK_THREAD_CPUTIME_ID);
    t0 = test_now_ms();
    for (i = 0; i < 10; i++) CHECK_EQ(pool_queue_get(q, buf, sizeof buf, &n, 50), POOL_ETIMEDOUT);
    c1 = test_cpu_ms(CLOCK_THREAD_CPUTIME_ID);
    CHECK(test_now_ms() - t0 >= 450);
    CHECK(c1 - c0 < 100); /* a client that kept polling would show ~500 */
    /* and it has learnt that polling does not pay for these waits: it polls
     * only every 64th wait now (white-box: the budget of the next waits) */
    {
        int polls = 0;
        for (i = 0; i < 32; i++) polls += pool__mgr_spin_budget(&m->spin) > 0;
        CHECK(polls <= 2);
    }
    pool_manager_close(m);

    /* polls that never catch the answer (a peer with no CPU meanwhile: one usable
     * CPU, or a busy machine) stop too, although the waits are short */
    {
        pool__mgr_spin sp;
        int polls = 0;
        pool__mgr_spin_init(&sp, 50);
        sp.max_ns = sp.sleep_ns = 50000; /* as on a machine with 2 usable CPUs */
        CHECK(pool__mgr_spin_budget(&sp) == 50000);
        for (i = 0; i < 20; i++) pool__mgr_spin_note(&sp, 100000, 50000); /* lost: 100 us > 50 us polled */
        for (i = 0; i < 32; i++) polls += pool__mgr_spin_budget(&sp) > 0;
        CHECK(polls <= 2);
        for (i = 0; i < 20; i++) pool__mgr_spin_note(&sp, 5000, 50000); /* caught while polling */
        CHECK(pool__mgr_spin_budget(&sp) == 50000);
        /* sleeping turned cheap (busy CPUs wake at once): polling cannot pay, none */
        for (i = 0; i < 30; i++) pool__mgr_spin_note(&sp, 6000, 0);
        polls = 0;
        for (i = 0; i < 32; i++) polls += pool__mgr_spin_budget(&sp) > 0;
        CHECK_EQ(polls, 0);
        /* and dear again (an idle CPU to wake): polling resumes */
        for (i = 0; i < 30; i++) pool__mgr_spin_note(&sp, 45000, 0);
        CHECK(pool__mgr_spin_budget(&sp) == 50000);
    }
    memset(&cfg, 0, sizeof cfg);
    cfg.spin_us = -2;
    CHECK_EQ(pool_manager_start(&m, &cfg), POOL_EINVAL);

    /* polling off: the same calls work */
    memset(&cfg, 0, sizeof cfg);
    cfg.spin_us = -1;
    REQUIRE(pool_manager_start(&m, &cfg) == POOL_OK);
    REQUIRE(pool_manager_dict(m, "d", &d) == POOL_OK);
    REQUIRE(pool_manager_queue(m, "q", 0, &q) == POOL_OK);
    CHECK_EQ(pool_dict_set(d, "k", 1, "v", 1), POOL_OK);
    CHECK_EQ(pool_dict_get(d, "k", 1, buf, sizeof buf, &n), POOL_OK);
    CHECK(n == 1 && buf[0] == 'v');
    CHECK_EQ(pool_queue_put(q, "x", 1, 0), POOL_OK);
    CHECK_EQ(pool_queue_get(q, buf, sizeof buf, &n, 100), POOL_OK);
    CHECK_EQ(pool_queue_get(q, buf, sizeof buf, &n, 50), POOL_ETIMEDOUT);
    pool_manager_close(m);
}

TEST(threads_share_one_manager)
{
    pool_manager_t *m;
    struct targ a[6];
    pthread_t th[6];
    int i;
    int64_t x = 0;
    REQUIRE(pool_manager_start(&m, NULL) == POOL_OK);
    for (i = 0; i < 6; i++) {
        a[i].rc = 0;
        REQUIRE(pool_manager_dict(m, "d", &a[i].d) == POOL_OK);
        REQUIRE(pool_manager_lock(m, "l", &a[i].l) == POOL_OK);
        REQUIRE(pool_manager_value(m, "v", &a[i].v) == POOL_OK);
    }
    for (i = 0; i < 6; i++) REQUIRE(pthread_create(&th[i], NULL, t_adder, &a[i]) == 0);
    for (i = 0; i < 6; i++) { pthread_join(th[i], NULL); CHECK_EQ(a[i].rc, 0); }
    CHECK_EQ(pool_dict_add(a[0].d, "ctr", 3, 0, &x), POOL_OK);
    CHECK_EQ(x, 1800);
    CHECK_EQ(pool_value_get_int(a[0].v, &x), POOL_OK);
    CHECK_EQ(x, 1800);
    pool_manager_close(m);
}

/* ---- fork, death, delivery ---- */

TEST(fork_child_reconnects)
{
    pool_manager_t *m;
    pool_dict_t *d;
    pool_lock_t *l;
    pid_t pid;
    int st = 0;
    int64_t x = 0;
    REQUIRE(pool_manager_start(&m, NULL) == POOL_OK);
    REQUIRE(pool_manager_dict(m, "d", &d) == POOL_OK);
    REQUIRE(pool_manager_lock(m, "l", &l) == POOL_OK);
    REQUIRE(pool_dict_add(d, "n", 1, 1, NULL) == POOL_OK);
    pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        /* the inherited handles work: the child gets connections of its own */
        if (pool_dict_add(d, "n", 1, 10, &x) != POOL_OK || x != 11) _exit(1);
        if (pool_lock_acquire(l, 5000) != POOL_OK) _exit(2);
        pool_manager_close(m); /* a child's close leaves the parent's server up */
        _exit(0);              /* ...and it exits holding the lock */
    }
    wait_child(pid, &st);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK_EQ(pool_dict_add(d, "n", 1, 0, &x), POOL_OK); /* the parent's connection is intact */
    CHECK_EQ(x, 11);
    CHECK_EQ(pool_lock_acquire(l, 10000), POOL_EOWNERDEAD); /* the child was another client */
    CHECK_EQ(pool_lock_release(l), POOL_OK);
    pool_manager_close(m);
}

/* fork() while other threads are inside calls on the same manager: the fork
 * handlers keep the child's view consistent, the child gets its own connection. */
struct busy { pool_dict_t *d; int stop; int rc; long calls; };
static void *busy_caller(void *p)
{
    struct busy *b = (struct busy *)p;
    while (!shmq__load(&b->stop, SHMQ__ACQUIRE)) {
        if (pool_dict_add(b->d, "busy", 4, 1, NULL) != POOL_OK) { b->rc = -1; break; }
        b->calls++;
    }
    return NULL;
}

TEST(fork_while_threads_call)
{
    pool_manager_t *m;
    struct busy b[2];
    pthread_t th[2];
    pool_dict_t *d;
    int i, ok = 0;
    int64_t x = 0;
    REQUIRE(pool_manager_start(&m, NULL) == POOL_OK);
    REQUIRE(pool_manager_dict(m, "d", &d) == POOL_OK);
    for (i = 0; i < 2; i++) {
        memset(&b[i], 0, sizeof b[i]);
        b[i].d = d;
        REQUIRE(pthread_create(&th[i], NULL, busy_caller, &b[i]) == 0);
    }
    for (i = 0; i < 10; i++) {
        int st = 0;
        pid_t pid = fork();
        REQUIRE(pid >= 0);
        if (pid == 0) _exit(pool_dict_add(d, "child", 5, 1, NULL) == POOL_OK ? 0 : 1);
        wait_child(pid, &st);
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0) ok++;
    }
    for (i = 0; i < 2; i++) {
        shmq__store(&b[i].stop, 1, SHMQ__RELEASE);
        pthread_join(th[i], NULL);
        CHECK_EQ(b[i].rc, 0);
    }
    CHECK_EQ(ok, 10);
    CHECK_EQ(pool_dict_add(d, "child", 5, 0, &x), POOL_OK);
    CHECK_EQ(x, 10);
    CHECK_EQ(pool_dict_add(d, "busy", 4, 0, &x), POOL_OK);
    CHECK_EQ(x, b[0].calls + b[1].calls);
    pool_manager_close(m);
}

TEST(killed_lock_holder_releases)
{
    pool_manager_t *m;
    pool_lock_t *l, *r;
    pool_cond_t *c;
    pool_sem_t *s;
    int p[2];
    pid_t pid;
    int64_t v = -1;
    REQUIRE(pool_manager_start(&m, NULL) == POOL_OK);
    REQUIRE(pool_manager_lock(m, "l", &l) == POOL_OK);
    REQUIRE(pool_manager_semaphore(m, "s", 1, 1, &s) == POOL_OK);
    REQUIRE(pool_manager_rlock(m, "r", &r) == POOL_OK);
    REQUIRE(pool_manager_condition(m, "c", &c) == POOL_OK);
    REQUIRE(pipe(p) == 0);
    pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        if (pool_lock_acquire(l, 5000) != POOL_OK) _exit(1);
        if (pool_sem_acquire(s, 5000) != POOL_OK) _exit(2);
        if (pool_lock_acquire(r, 5000) != POOL_OK || pool_lock_acquire(r, 5000) != POOL_OK) _exit(3);
        if (pool_cond_acquire(c, 5000) != POOL_OK) _exit(4);
        sig_write(p[1]);
        for (;;) pause();
    }
    CHECK_EQ(sig_read(p[0], 20000), 0);
    CHECK_EQ(pool_lock_acquire(l, 0), POOL_ETIMEDOUT);
    CHECK_EQ(pool_sem_value(s, &v), POOL_OK);
    CHECK_EQ(v, 0);
    kill(pid, SIGKILL);
    wait_child(pid, NULL);
    CHECK_EQ(pool_lock_acquire(l, 10000), POOL_EOWNERDEAD);
    CHECK_EQ(pool_sem_acquire(s, 10000), POOL_EOWNERDEAD);
    CHECK_EQ(pool_lock_acquire(r, 10000), POOL_EOWNERDEAD); /* held twice: released whole */
    CHECK_EQ(pool_lock_release(r), POOL_OK);
    CHECK_EQ(pool_lock_release(r), POOL_EPERM);
    CHECK_EQ(pool_cond_acquire(c, 10000), POOL_EOWNERDEAD);
    CHECK_EQ(pool_cond_release(c), POOL_OK);
    /* told once; the objects stay usable */
    CHECK_EQ(pool_lock_release(l), POOL_OK);
    CHECK_EQ(pool_lock_acquire(l, 0), POOL_OK);
    CHECK_EQ(pool_lock_release(l), POOL_OK);
    CHECK_EQ(pool_sem_release(s), POOL_OK);
    CHECK_EQ(pool_sem_acquire(s, 0), POOL_OK);
    CHECK_EQ(pool_sem_release(s), POOL_OK);
    close(p[0]); close(p[1]);
    pool_manager_close(m);
}

/* The lock holder forked a child that lives on and never touches the manager: the
 * child's copies of the holder's sockets must not keep the dead holder "alive". */
TEST(killed_holder_with_live_fork_child)
{
    pool_manager_t *m;
    pool_lock_t *l;
    int p[2], q[2];
    pid_t pid, grandchild = 0;
    REQUIRE(pool_manager_start(&m, NULL) == POOL_OK);
    REQUIRE(pool_manager_lock(m, "l", &l) == POOL_OK);
    REQUIRE(pipe(p) == 0);
    REQUIRE(pipe(q) == 0);
    pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        pid_t g;
        if (pool_lock_acquire(l, 5000) != POOL_OK) _exit(1);
        g = fork();
        if (g == 0) { for (;;) pause(); }
        if (write(q[1], &g, sizeof g) != (ssize_t)sizeof g) _exit(2);
        sig_write(p[1]);
        for (;;) pause();
    }
    CHECK_EQ(sig_read(p[0], 20000), 0);
    CHECK(read(q[0], &grandchild, sizeof grandchild) == (ssize_t)sizeof grandchild);
    kill(pid, SIGKILL);
    wait_child(pid, NULL);
    CHECK_EQ(pool_lock_acquire(l, 10000), POOL_EOWNERDEAD); /* the grandchild still lives */
    CHECK_EQ(pool_lock_release(l), POOL_OK);
    if (grandchild > 0) kill(grandchild, SIGKILL);
    close(p[0]); close(p[1]); close(q[0]); close(q[1]);
    pool_manager_close(m);
}

TEST(killed_waiter_disappears)
{
    pool_manager_t *m;
    pool_lock_t *l;
    pool_queue_t *q;
    pool_barrier_t *b;
    pid_t pid;
    size_t n = 9;
    char buf[8];
    int p[2];
    REQUIRE(pool_manager_start(&m, NULL) == POOL_OK);
    REQUIRE(pool_manager_lock(m, "l", &l) == POOL_OK);
    REQUIRE(pool_manager_queue(m, "q", 0, &q) == POOL_OK);
    REQUIRE(pool_manager_barrier(m, "b", 3, &b) == POOL_OK);
    REQUIRE(pool_lock_acquire(l, -1) == POOL_OK);
    REQUIRE(pipe(p) == 0);
    pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        if (pool_manager_ping(m) != POOL_OK) _exit(1); /* connected */
        sig_write(p[1]);
        pool_lock_acquire(l, -1); /* waits forever */
        _exit(0);
    }
    CHECK_EQ(sig_read(p[0], 20000), 0);
    pool__mgr_sleep_ms(200); /* let it park: one round trip away */
    kill(pid, SIGKILL);
    wait_child(pid, NULL);
    CHECK_EQ(pool_lock_release(l), POOL_OK);
    /* the dead waiter was not given the lock: it is free, with no owner-died mark */
    CHECK_EQ(pool_lock_acquire(l, 0), POOL_OK);
    CHECK_EQ(pool_lock_release(l), POOL_OK);
    /* a dead queue waiter takes no item */
    pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) { pool_queue_get(q, buf, sizeof buf, NULL, -1); _exit(0); }
    pool__mgr_sleep_ms(300);
    kill(pid, SIGKILL);
    wait_child(pid, NULL);
    pool__mgr_sleep_ms(100);
    CHECK_EQ(pool_queue_put(q, "x", 1, 0), POOL_OK);
    CHECK_EQ(pool_queue_size(q, &n), POOL_OK);
    CHECK_EQ(n, 1);
    /* a dead barrier party breaks the barrier (it can never fill) */
    pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) { pool_barrier_wait(b, -1, NULL); _exit(0); }
    pool__mgr_sleep_ms(300);
    kill(pid, SIGKILL);
    wait_child(pid, NULL);
    CHECK_EQ(pool_barrier_wait(b, 5000, NULL), POOL_EBROKEN);
    close(p[0]); close(p[1]);
    pool_manager_close(m);
}

/* Polls until the queue holds n items (at most 10 s). */
static void wait_queue_size(pool_queue_t *q, size_t want)
{
    size_t n = 0;
    int i;
    for (i = 0; i < 1000; i++) {
        if (pool_queue_size(q, &n) != POOL_OK || n == want) return;
        pool__mgr_sleep_ms(10);
    }
}

/* A consumer that dies after `get` but before its next request: the item comes back
 * to the front. One that made another request first had acknowledged it. */
TEST(queue_redelivery_after_death)
{
    pool_manager_t *m;
    pool_queue_t *q;
    int p[2];
    pid_t pid;
    char buf[8];
    size_t n = 0;
    REQUIRE(pool_manager_start(&m, NULL) == POOL_OK);
    REQUIRE(pool_manager_queue(m, "q", 0, &q) == POOL_OK);
    REQUIRE(pool_queue_put(q, "a", 1, 0) == POOL_OK);
    REQUIRE(pool_queue_put(q, "b", 1, 0) == POOL_OK);
    REQUIRE(pipe(p) == 0);
    pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        if (pool_queue_get(q, buf, sizeof buf, &n, 5000) != POOL_OK || buf[0] != 'a') _exit(1);
        sig_write(p[1]); /* it has the item; it dies before acknowledging */
        for (;;) pause();
    }
    CHECK_EQ(sig_read(p[0], 20000), 0);
    CHECK_EQ(pool_queue_size(q, &n), POOL_OK);
    CHECK_EQ(n, 1); /* "a" is held for the child */
    kill(pid, SIGKILL);
    wait_child(pid, NULL);
    wait_queue_size(q, 2); /* the server sees the death a moment later */
    CHECK_EQ(pool_queue_get(q, buf, sizeof buf, &n, 10000), POOL_OK);
    CHECK(n == 1 && buf[0] == 'a'); /* back at the front */
    /* acknowledged by the next request: not redelivered */
    pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        if (pool_queue_get(q, buf, sizeof buf, &n, 5000) != POOL_OK || buf[0] != 'b') _exit(1);
        if (pool_queue_size(q, &n) != POOL_OK) _exit(2); /* acknowledges "b" */
        sig_write(p[1]);
        for (;;) pause();
    }
    CHECK_EQ(sig_read(p[0], 20000), 0);
    kill(pid, SIGKILL);
    wait_child(pid, NULL);
    pool__mgr_sleep_ms(100);
    CHECK_EQ(pool_queue_get(q, buf, sizeof buf, &n, 0), POOL_EEMPTY);
    /* a clean close acknowledges too */
    REQUIRE(pool_queue_put(q, "c", 1, 0) == POOL_OK);
    pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        pool_manager_t *m2;
        pool_queue_t *q2;
        if (pool_manager_connect(&m2, pool_manager_address(m), NULL) != POOL_OK) _exit(1);
        if (pool_manager_queue(m2, "q", 0, &q2) != POOL_OK) _exit(2);
        if (pool_queue_get(q2, buf, sizeof buf, &n, 5000) != POOL_OK) _exit(3);
        pool_manager_close(m2);
        _exit(0);
    }
    {
        int st = 0;
        wait_child(pid, &st);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    pool__mgr_sleep_ms(100);
    CHECK_EQ(pool_queue_get(q, buf, sizeof buf, &n, 0), POOL_EEMPTY);
    close(p[0]); close(p[1]);
    pool_manager_close(m);
}

/* ---- security ---- */

static int log_count;
static void count_log(const char *msg, void *user)
{
    (void)msg;
    (void)user;
    shmq__fetch_add(&log_count, 1, SHMQ__RELAXED);
}

static void *serve(void *p) { pool_mserver_run((pool_mserver_t *)p); return NULL; }

TEST(authkey)
{
    pool_manager_config sc, good, bad, none;
    pool_mserver_t *srv;
    pool_manager_t *m, *m2;
    pthread_t th;
    pool_dict_t *d;
    int fd, before = test_count_fds();
    memset(&sc, 0, sizeof sc);
    sc.authkey = "correct horse";
    sc.authkey_len = 13;
    sc.log = count_log;
    good = sc;
    good.log = NULL;
    bad = good;
    bad.authkey = "correct horsf";
    memset(&none, 0, sizeof none);
    log_count = 0;
    REQUIRE(pool_mserver_create(&srv, &sc) == POOL_OK);
    REQUIRE(pthread_create(&th, NULL, serve, srv) == 0);
    CHECK_EQ(pool_manager_connect(&m, pool_mserver_address(srv), &bad), POOL_EAUTH);
    CHECK_EQ(pool_manager_connect(&m, pool_mserver_address(srv), &none), POOL_EAUTH);
    /* garbage instead of a HELLO: closed, the server goes on */
    {
        struct sockaddr_un sa;
        char junk[100];
        memset(junk, 'x', sizeof junk);
        fd = socket(AF_UNIX, SOCK_STREAM, 0);
        memset(&sa, 0, sizeof sa);
        sa.sun_family = AF_UNIX;
        strcpy(sa.sun_path, pool_mserver_address(srv));
        REQUIRE(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
        CHECK_EQ(raw_exchange(fd, NULL, 0, NULL), POOL__MGR_T_CHALLENGE);
        CHECK_EQ(raw_exchange(fd, junk, sizeof junk, NULL), POOL__MGR_T_ERROR);
        CHECK(raw_eof(fd, 5000));
        close(fd);
    }
    REQUIRE(pool_manager_connect(&m, pool_mserver_address(srv), &good) == POOL_OK);
    REQUIRE(pool_manager_dict(m, "d", &d) == POOL_OK);
    CHECK_EQ(pool_dict_set(d, "k", 1, "v", 1), POOL_OK);
    CHECK(shmq__load(&log_count, SHMQ__RELAXED) >= 2); /* wrong key, garbage: logged */
    pool_manager_close(m);
    pool_mserver_stop(srv);
    pthread_join(th, NULL);
    pool_mserver_destroy(srv);
    /* a client with a key refuses a server without one (it cannot prove itself) */
    REQUIRE(pool_manager_start(&m2, NULL) == POOL_OK);
    CHECK_EQ(pool_manager_connect(&m, pool_manager_address(m2), &good), POOL_EAUTH);
    pool_manager_close(m2);
    CHECK_EQ(test_count_fds(), before);
}

/* Root only: a peer of another user is refused by SO_PEERCRED even when the socket
 * file itself lets it in. Not root: skipped (the 0700 directory stops it earlier). */
TEST(other_user_refused)
{
    pool_manager_config sc;
    pool_mserver_t *srv;
    pthread_t th;
    char dir[] = "/tmp/pool-mgr-test-XXXXXX", path[128];
    pid_t pid;
    int st = 0;
    if (geteuid() != 0) {
        fprintf(stderr, "  (skipped: needs root to act as another user)\n");
        return;
    }
    REQUIRE(mkdtemp(dir) != NULL);
    chmod(dir, 0755);
    snprintf(path, sizeof path, "%s/s.sock", dir);
    memset(&sc, 0, sizeof sc);
    sc.address = path;
    sc.log = count_log;
    log_count = 0;
    REQUIRE(pool_mserver_create(&srv, &sc) == POOL_OK);
    chmod(path, 0666); /* let the other user reach the socket: only the peer check remains */
    REQUIRE(pthread_create(&th, NULL, serve, srv) == 0);
    pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        pool_manager_t *m;
        if (setgid(65534) != 0 || setuid(65534) != 0) _exit(10);
        _exit(pool_manager_connect(&m, path, NULL) == POOL_EAUTH ? 0 : 1);
    }
    wait_child(pid, &st);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    { /* the server may log the refusal after the client saw it: wait for the line */
        double until = test_now_ms() + 5000;
        while (shmq__load(&log_count, SHMQ__ACQUIRE) < 1 && test_now_ms() < until) test_sleep_ms(1);
    }
    CHECK(shmq__load(&log_count, SHMQ__RELAXED) >= 1);
    {
        pool_manager_t *m;
        CHECK_EQ(pool_manager_connect(&m, path, NULL), POOL_OK); /* same user: fine */
        if (m) pool_manager_close(m);
    }
    pool_mserver_stop(srv);
    pthread_join(th, NULL);
    pool_mserver_destroy(srv);
    CHECK(!dir_exists(path));
    rmdir(dir);
}

/* ---- malformed frames close only that connection ---- */

static size_t frame_req(uint8_t *f, uint8_t op, uint8_t kind, uint32_t id, const char *blob)
{
    pool__mgr_buf b = {NULL, 0, 0};
    size_t n;
    pool__mgr_req_begin(&b, 1, 7);
    pool__mgr_req_op(&b, op, kind, id, 0, 0, 0, blob ? 1 : 0);
    if (blob) pool__mgr_req_blob(&b, blob, strlen(blob));
    pool__mgr_put32(b.p, (uint32_t)(b.n - 4));
    memcpy(f, b.p, b.n);
    n = b.n;
    pool__mgr_buf_free(&b);
    return n;
}

TEST(malformed_frames)
{
    pool_manager_t *m;
    pool_dict_t *d;
    pool_lock_t *l;
    uint8_t f[256];
    size_t n;
    int fd, code = 0, i;
    char buf[8];
    size_t vl = 0;
    pool_manager_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.max_frame = 8192;
    REQUIRE(pool_manager_start(&m, &cfg) == POOL_OK);
    REQUIRE(pool_manager_dict(m, "d", &d) == POOL_OK);
    REQUIRE(pool_manager_lock(m, "l", &l) == POOL_OK);
    REQUIRE(pool_dict_set(d, "k", 1, "v", 1) == POOL_OK);
    for (i = 0; i < 11; i++) {
        int want = POOL_EPROTO;
        fd = raw_dial(pool_manager_address(m));
        REQUIRE(fd >= 0);
        n = frame_req(f, POOL__MGR_OP_D_GET, POOL__MGR_K_DICT, 0, "k"); /* a valid frame: d is id 0 */
        switch (i) {
        case 0: pool__mgr_put32(f, 0); n = 4; break;                      /* length 0 */
        case 1: pool__mgr_put32(f, 8193); break;                          /* over max_frame */
        case 2: f[4] = 0x55; break;                                   /* bad frame type */
        case 3:
            pool__mgr_put32(f + 4 + POOL__MGR_REQ_HDR + POOL__MGR_OP_HDR, 200);
            break; /* blob past the end */
        case 4: n = frame_req(f, POOL__MGR_OP_OPEN, 200, 0, "x"); want = POOL_EKIND; break; /* unknown kind */
        case 5:
            n = frame_req(f, POOL__MGR_OP_D_GET, POOL__MGR_K_DICT, 1, "k");
            want = POOL_EKIND;
            break; /* id 1 is a lock */
        case 6:
            n = frame_req(f, POOL__MGR_OP_K_ACQ, POOL__MGR_K_DICT, 0, NULL);
            want = POOL_EKIND;
            break; /* lock op on a dict */
        case 7: f[4 + POOL__MGR_REQ_HDR] = 99; break;                     /* unknown op */
        case 8: f[n] = 0; pool__mgr_put32(f, (uint32_t)(n - 3)); n++; break; /* a trailing byte */
        case 9: pool__mgr_put16(f + 6, 0); break;                         /* no ops */
        case 10:
            n = frame_req(f, POOL__MGR_OP_D_GET, POOL__MGR_K_DICT, 77, "k");
            want = POOL_ENOTFOUND;
            break;
        }
        CHECK_EQ(raw_exchange(fd, f, n, &code), POOL__MGR_T_ERROR);
        if (code != want) fprintf(stderr, "  case %d: code %d, want %d\n", i, code, want);
        CHECK_EQ(code, want);
        CHECK(raw_eof(fd, 5000));
        close(fd);
    }
    /* truncated: half a frame, then the client goes away */
    fd = raw_dial(pool_manager_address(m));
    REQUIRE(fd >= 0);
    n = frame_req(f, POOL__MGR_OP_D_GET, POOL__MGR_K_DICT, 0, "k");
    CHECK_EQ(pool__mgr_send_all(fd, f, n / 2), POOL_OK);
    close(fd);
    /* a valid raw frame still works */
    fd = raw_dial(pool_manager_address(m));
    REQUIRE(fd >= 0);
    n = frame_req(f, POOL__MGR_OP_D_GET, POOL__MGR_K_DICT, 0, "k");
    CHECK_EQ(raw_exchange(fd, f, n, &code), POOL__MGR_T_REPLY);
    CHECK_EQ(code, POOL_OK);
    close(fd);
    /* the server and the other connections carry on */
    CHECK_EQ(pool_dict_get(d, "k", 1, buf, sizeof buf, &vl), POOL_OK);
    CHECK_EQ(pool_manager_ping(m), POOL_OK);
    pool_manager_close(m);
}

/* A client that sends requests without reading the answers: the server stops
 * reading from it (its answers wait) and goes on serving everyone else. */
TEST(slow_reader_stalls_nobody)
{
    pool_manager_t *m;
    pool_dict_t *d;
    static char big[60000];
    uint8_t f[128];
    size_t n, sent = 0;
    int fd, fl, i;
    double t0;
    REQUIRE(pool_manager_start(&m, NULL) == POOL_OK);
    REQUIRE(pool_manager_dict(m, "d", &d) == POOL_OK); /* id 0 */
    memset(big, 'b', sizeof big);
    REQUIRE(pool_dict_set(d, "big", 3, big, sizeof big) == POOL_OK);
    fd = raw_dial(pool_manager_address(m));
    REQUIRE(fd >= 0);
    fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    n = frame_req(f, POOL__MGR_OP_D_GET, POOL__MGR_K_DICT, 0, "big");
    for (i = 0; i < 200000; i++) { /* until our send buffer is full too */
        ssize_t r = send(fd, f, n, MSG_NOSIGNAL);
        if (r < 0) break;
        sent += (size_t)r;
        if ((size_t)r < n) break;
    }
    CHECK(sent > 0);
    t0 = test_now_ms();
    for (i = 0; i < 100; i++) CHECK_EQ(pool_manager_ping(m), POOL_OK);
    CHECK(test_now_ms() - t0 < 5000);
    close(fd);
    CHECK_EQ(pool_dict_len(d, &n), POOL_OK);
    pool_manager_close(m);
}

/* The quick start of docs/manager.md, verbatim between the markers. */
TEST(doc_quick_start)
{
    /* >>doc-quick-start */
    pool_manager_t *m;
    pool_dict_t *d;
    int rc = pool_manager_start(&m, NULL);      /* forks the server; a fresh 0700 dir */
    rc = pool_manager_dict(m, "scores", &d);    /* created on first use */
    rc = pool_dict_set(d, "alice", 5, "42", 2);
    char buf[64]; size_t n;
    rc = pool_dict_get(d, "alice", 5, buf, sizeof buf, &n);

    if (fork() == 0) {                          /* a child uses the same handles */
        pool_dict_add(d, "hits", 4, 1, NULL);   /* its own connection, its own identity */
        _exit(0);
    }

    /* an unrelated program: */
    pool_manager_t *c;
    rc = pool_manager_connect(&c, pool_manager_address(m), NULL);

    pool_manager_close(m);  /* stops the server it started: nothing is left behind */
    /* <<doc-quick-start */
    CHECK_EQ(rc, POOL_OK);
    CHECK(n == 2 && memcmp(buf, "42", 2) == 0);
    pool_manager_close(c);
    while (wait(NULL) > 0) { }
}

/* Reads a whole file into a NUL-terminated heap string (NULL if unreadable). */
static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *s;
    long n;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    s = (char *)malloc((size_t)n + 1);
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) { free(s); s = NULL; }
    if (s) s[n] = 0;
    fclose(f);
    return s;
}

/* The snippet above, unindented, appears word for word in docs/manager.md. */
TEST(doc_quick_start_matches_docs)
{
    char path[4096], *src, *doc, *a, *b, *snip, *o;
    const char *slash = strrchr(__FILE__, '/');
    snprintf(path, sizeof path, "%.*s", slash ? (int)(slash - __FILE__) : 1, slash ? __FILE__ : ".");
    src = slurp(__FILE__);
    strcat(path, "/../docs/manager.md");
    doc = slurp(path);
    if (!src || !doc) {
        fprintf(stderr, "  (skipped: sources not found beside the binary's build)\n");
        free(src); free(doc);
        return;
    }
    a = strstr(src, "/* >>doc-quick-start */\n");
    b = strstr(src, "    /* <<doc-quick-start */");
    REQUIRE(a && b && b > a);
    a += strlen("/* >>doc-quick-start */\n");
    snip = (char *)malloc((size_t)(b - a) + 1);
    REQUIRE(snip != NULL);
    for (o = snip; a < b; ) { /* drop four spaces of indentation per line */
        if (strncmp(a, "    ", 4) == 0) a += 4;
        while (a < b && *a != '\n') *o++ = *a++;
        if (a < b) *o++ = *a++;
    }
    *o = 0;
    CHECK(strlen(snip) > 200 && strstr(snip, "pool_manager_start") != NULL);
    CHECK(strstr(doc, snip) != NULL);
    free(snip); free(src); free(doc);
}

/* ---- scale ---- */

TEST(thousand_clients)
{
    enum { N = 1000 };
    pool_manager_t *m;
    pool_event_t *e;
    pool_dict_t *d;
    static int fds[N];
    struct rlimit rl;
    uint8_t f[128];
    size_t n;
    int i, ok = 0, pending = 0;
    size_t len = 0;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 2 * N + 64) {
        rl.rlim_cur = rl.rlim_max < 2 * N + 64 ? rl.rlim_max : 2 * N + 64;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    REQUIRE(pool_manager_start(&m, NULL) == POOL_OK);
    REQUIRE(pool_manager_event(m, "go", &e) == POOL_OK); /* id 0 */
    REQUIRE(pool_manager_dict(m, "d", &d) == POOL_OK);   /* id 1 */
    for (i = 0; i < N; i++) {
        fds[i] = raw_dial(pool_manager_address(m));
        if (fds[i] < 0) break;
    }
    CHECK_EQ(i, N);
    /* every client parks on the event at once */
    n = frame_req(f, POOL__MGR_OP_E_WAIT, POOL__MGR_K_EVENT, 0, NULL);
    pool__mgr_put32(f + 4 + POOL__MGR_REQ_HDR + 8, (uint32_t)-1); /* timeout -1 */
    for (i = 0; i < N && fds[i] >= 0; i++) if (pool__mgr_send_all(fds[i], f, n) == POOL_OK) pending++;
    CHECK_EQ(pending, N);
    /* the server still serves others meanwhile, and nobody was answered yet */
    CHECK_EQ(pool_dict_set(d, "k", 1, "v", 1), POOL_OK);
    pool__mgr_sleep_ms(100);
    for (i = 0; i < N && fds[i] >= 0; i++) {
        struct pollfd p;
        p.fd = fds[i]; p.events = POLLIN; p.revents = 0;
        if (poll(&p, 1, 0) != 0) break;
    }
    CHECK_EQ(i, N);
    CHECK_EQ(pool_event_set(e), POOL_OK);
    for (i = 0; i < N && fds[i] >= 0; i++) {
        int code = -1;
        if (raw_exchange(fds[i], NULL, 0, &code) == POOL__MGR_T_REPLY && code == POOL_OK) ok++;
    }
    CHECK_EQ(ok, N);
    /* and each can do a dict op */
    ok = 0;
    n = frame_req(f, POOL__MGR_OP_D_GET, POOL__MGR_K_DICT, 1, "k");
    for (i = 0; i < N && fds[i] >= 0; i++) {
        int code = -1;
        if (raw_exchange(fds[i], f, n, &code) == POOL__MGR_T_REPLY && code == POOL_OK) ok++;
    }
    CHECK_EQ(ok, N);
    for (i = 0; i < N; i++) if (fds[i] >= 0) close(fds[i]);
    CHECK_EQ(pool_dict_get(d, "k", 1, f, sizeof f, &len), POOL_OK);
    pool_manager_close(m);
}

/* ---- the server dies ---- */

struct blocked { pool_manager_t *m; int kind; int rc; double ms; };
static void *block_forever(void *p)
{
    struct blocked *b = (struct blocked *)p;
    double t0;
    char buf[8];
    pool_queue_t *q;
    pool_lock_t *l;
    pool_event_t *e;
    pool_barrier_t *br;
    pool_manager_queue(b->m, "q", 0, &q);
    pool_manager_lock(b->m, "held", &l);
    pool_manager_event(b->m, "e", &e);
    pool_manager_barrier(b->m, "b", 10, &br);
    t0 = test_now_ms();
    switch (b->kind) {
    case 0: b->rc = pool_queue_get(q, buf, sizeof buf, NULL, -1); break;
    case 1: b->rc = pool_lock_acquire(l, -1); break;
    case 2: b->rc = pool_event_wait(e, -1); break;
    default: b->rc = pool_barrier_wait(br, -1, NULL); break;
    }
    b->ms = test_now_ms() - t0;
    return NULL;
}

TEST(server_killed_unblocks_clients)
{
    pool_manager_t *m;
    pool_lock_t *l;
    struct blocked b[4];
    pthread_t th[4];
    char dir[128];
    int i, before = test_count_fds();
    double t0;
    REQUIRE(pool_manager_start(&m, NULL) == POOL_OK);
    dirname_of(pool_manager_address(m), dir, sizeof dir);
    REQUIRE(pool_manager_lock(m, "held", &l) == POOL_OK);
    REQUIRE(pool_lock_acquire(l, -1) == POOL_OK);
    for (i = 0; i < 4; i++) {
        b[i].m = m; b[i].kind = i; b[i].rc = -99; b[i].ms = 0;
        REQUIRE(pthread_create(&th[i], NULL, block_forever, &b[i]) == 0);
    }
    pool__mgr_sleep_ms(300);
    t0 = test_now_ms();
    REQUIRE(pool_manager_server_pid(m) > 0);
    kill((pid_t)pool_manager_server_pid(m), SIGKILL);
    for (i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ(b[i].rc, POOL_ECONN);
    }
    CHECK(test_now_ms() - t0 < 5000); /* promptly: no client hangs */
    CHECK_EQ(pool_manager_ping(m), POOL_ECONN);
    pool_manager_close(m); /* reaps the server, removes what it left */
    CHECK(!dir_exists(dir));
    CHECK_EQ(test_count_children(), 0);
    CHECK_EQ(test_count_fds(), before);
}

/* ---- leftovers ---- */

TEST(no_leftovers_after_shutdown)
{
    pool_manager_t *m, *c;
    pool_dict_t *d;
    pool_queue_t *q;
    char dir[128], sock[128];
    int before = test_count_fds();
    REQUIRE(pool_manager_start(&m, NULL) == POOL_OK);
    strcpy(sock, pool_manager_address(m));
    dirname_of(sock, dir, sizeof dir);
    {
        struct stat st;
        CHECK(stat(dir, &st) == 0 && (st.st_mode & 0777) == 0700);
        CHECK(stat(sock, &st) == 0 && (st.st_mode & 0777) == 0600);
    }
    CHECK_EQ(test_count_children(), 1);
    REQUIRE(pool_manager_connect(&c, sock, NULL) == POOL_OK);
    REQUIRE(pool_manager_dict(c, "d", &d) == POOL_OK);
    REQUIRE(pool_manager_queue(c, "q", 0, &q) == POOL_OK);
    CHECK_EQ(pool_dict_set(d, "k", 1, "v", 1), POOL_OK);
    CHECK_EQ(pool_manager_shutdown(m), POOL_OK);
    CHECK_EQ(pool_dict_set(d, "k", 1, "v", 1), POOL_ECONN);
    CHECK(!dir_exists(sock));
    CHECK(!dir_exists(dir));
    CHECK_EQ(test_count_children(), 0);
    pool_manager_close(c);
    pool_manager_close(m);
    CHECK_EQ(test_count_fds(), before);
    /* close alone shuts a started server down too */
    REQUIRE(pool_manager_start(&m, NULL) == POOL_OK);
    strcpy(sock, pool_manager_address(m));
    pool_manager_close(m);
    CHECK(!dir_exists(sock));
    CHECK_EQ(test_count_children(), 0);
    CHECK_EQ(test_count_fds(), before);
}

TEST(server_exits_when_starter_dies)
{
    int p[2];
    pid_t pid;
    char addr[128], dir[128];
    ssize_t n;
    int i;
    pool_manager_t *m;
    REQUIRE(pipe(p) == 0);
    pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        pool_manager_t *mm;
        if (pool_manager_start(&mm, NULL) != POOL_OK) _exit(1);
        if (write(p[1], pool_manager_address(mm), strlen(pool_manager_address(mm)) + 1) < 0) _exit(2);
        pause(); /* killed below, without any cleanup */
        _exit(0);
    }
    close(p[1]);
    n = read(p[0], addr, sizeof addr);
    close(p[0]);
    REQUIRE(n > 0);
    CHECK_EQ(pool_manager_connect(&m, addr, NULL), POOL_OK);
    if (m) pool_manager_close(m);
    kill(pid, SIGKILL);
    wait_child(pid, NULL);
    dirname_of(addr, dir, sizeof dir);
    for (i = 0; i < 100 && dir_exists(dir); i++) pool__mgr_sleep_ms(100);
    CHECK(!dir_exists(dir)); /* the orphaned server noticed, cleaned up and exited */
    CHECK_EQ(pool_manager_connect(&m, addr, NULL), POOL_ECONN);
}

TEST(detached_and_in_process)
{
    pool_manager_config cfg;
    pool_manager_t *m, *c;
    pool_mserver_t *srv;
    pool_dict_t *d;
    pthread_t th;
    char sock[128];
    size_t n = 0;
    int before = test_count_fds();
    memset(&cfg, 0, sizeof cfg);
    cfg.detached = 1;
    REQUIRE(pool_manager_start(&m, &cfg) == POOL_OK);
    strcpy(sock, pool_manager_address(m));
    CHECK_EQ(test_count_children(), 0); /* not our child */
    REQUIRE(pool_manager_dict(m, "d", &d) == POOL_OK);
    CHECK_EQ(pool_dict_set(d, "k", 1, "v", 1), POOL_OK);
    pool_manager_close(m); /* a detached server stays */
    REQUIRE(pool_manager_connect(&c, sock, NULL) == POOL_OK);
    REQUIRE(pool_manager_dict(c, "d", &d) == POOL_OK);
    CHECK_EQ(pool_dict_len(d, &n), POOL_OK);
    CHECK_EQ(n, 1);
    CHECK_EQ(pool_manager_shutdown(c), POOL_OK);
    CHECK(!dir_exists(sock));
    pool_manager_close(c);
    /* in-process, in a thread of ours */
    REQUIRE(pool_mserver_create(&srv, NULL) == POOL_OK);
    REQUIRE(pthread_create(&th, NULL, serve, srv) == 0);
    REQUIRE(pool_manager_connect(&c, pool_mserver_address(srv), NULL) == POOL_OK);
    REQUIRE(pool_manager_dict(c, "d", &d) == POOL_OK);
    CHECK_EQ(pool_dict_set(d, "k", 1, "v", 1), POOL_OK);
    CHECK_EQ(pool_manager_shutdown(c), POOL_OK); /* a client may stop it */
    pthread_join(th, NULL);
    strcpy(sock, pool_mserver_address(srv));
    pool_mserver_destroy(srv);
    CHECK(!dir_exists(sock));
    pool_manager_close(c);
    CHECK_EQ(test_count_fds(), before);
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    RUN(hmac_sha256_rfc4231);
    RUN(dict);
    RUN(list);
    RUN(queue);
    RUN(lock_and_rlock);
    RUN(semaphore);
    RUN(event);
    RUN(condition);
    RUN(barrier);
    RUN(value);
    RUN(batch);
    RUN(polling_is_bounded);
    RUN(threads_share_one_manager);
    RUN(fork_child_reconnects);
    RUN(fork_while_threads_call);
    RUN(killed_lock_holder_releases);
    RUN(killed_holder_with_live_fork_child);
    RUN(killed_waiter_disappears);
    RUN(queue_redelivery_after_death);
    RUN(authkey);
    RUN(other_user_refused);
    RUN(malformed_frames);
    RUN(slow_reader_stalls_nobody);
    RUN(doc_quick_start);
    RUN(doc_quick_start_matches_docs);
    RUN(thousand_clients);
    RUN(server_killed_unblocks_clients);
    RUN(no_leftovers_after_shutdown);
    RUN(server_exits_when_starter_dies);
    RUN(detached_and_in_process);
    return test_run_all(argc, argv);
}
