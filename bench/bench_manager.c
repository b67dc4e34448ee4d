/* bench_manager.c - the Manager (pool.h) against Python's multiprocessing.Manager
 * and against a raw Unix-socket ping-pong (the floor for one round trip).
 *
 *   W7a  100,000 dict set then 100,000 dict get, one client; and 2 clients at once
 *   W7b  queue put+get pairs/s; lock acquire+release pairs/s
 *   W7c  the W7a set load in batches of 16 (ops/s)
 *
 * Usage: bench_manager [--quick] [--no-python]
 * --quick runs small counts (ctest runs it so the benchmark cannot rot; its
 * figures mean little). Python's figures come from python3 run in a subprocess on
 * the script embedded below; without python3 they are skipped with a note. If
 * redis-benchmark is installed, its `-c 1` figures are printed for reference.
 */
#define POOL_IMPLEMENTATION
#include "pool.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static pool_manager_config bench_cfg; /* zero: defaults; --no-poll: spin_us = -1 */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "bench_manager: %s: %s\n", what, pool_strerror(rc));
    exit(1);
}

/* ---- the floor: a blocking request/reply over a Unix socket pair ---- */
/* one read; polling: non-blocking reads until something comes (a busy poll) */
static ssize_t raw_read(int fd, char *buf, size_t cap, int polling)
{
    for (;;) {
        ssize_t r = recv(fd, buf, cap, polling ? MSG_DONTWAIT : 0);
        if (r < 0 && polling && (errno == EAGAIN || errno == EWOULDBLOCK)) continue;
        return r;
    }
}

/* raw round trips of a 40-byte message over a Unix socket pair: both sides sleep in
 * read (polling = 0), or both poll (polling = 1: the floor for a polling client) */
static double raw_pingpong(long n, int polling)
{
    int sv[2];
    pid_t pid;
    char buf[64];
    long i;
    double t0, t;
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) return 0;
    fflush(stdout);
    pid = fork();
    if (pid == 0) {
        close(sv[0]);
        for (;;) {
            ssize_t r = raw_read(sv[1], buf, sizeof buf, polling);
            if (r <= 0) _exit(0);
            if (write(sv[1], buf, (size_t)r) != r) _exit(1);
        }
    }
    close(sv[1]);
    memset(buf, 'x', sizeof buf);
    t0 = now_s();
    for (i = 0; i < n; i++) {
        if (write(sv[0], buf, 40) != 40 || raw_read(sv[0], buf, sizeof buf, polling) <= 0) break;
    }
    t = now_s() - t0;
    close(sv[0]);
    waitpid(pid, NULL, 0);
    return (double)i / t;
}

/* ---- ours ---- */
static void w7a_one(pool_dict_t *d, long n, const char *prefix, double *set_rate, double *get_rate)
{
    char k[32], v[32];
    size_t vl;
    long i;
    double t0 = now_s(), t1;
    int rc;
    for (i = 0; i < n; i++) {
        int kl = snprintf(k, sizeof k, "%s%ld", prefix, i);
        if ((rc = pool_dict_set(d, k, (size_t)kl, "value", 5)) != POOL_OK) die("dict_set", rc);
    }
    t1 = now_s();
    for (i = 0; i < n; i++) {
        int kl = snprintf(k, sizeof k, "%s%ld", prefix, i);
        if ((rc = pool_dict_get(d, k, (size_t)kl, v, sizeof v, &vl)) != POOL_OK) die("dict_get", rc);
    }
    *set_rate = (double)n / (t1 - t0);
    *get_rate = (double)n / (now_s() - t1);
}

/* Two client processes at once; returns the total ops/s over both phases. */
static double w7a_two(const char *address, long n)
{
    int p[2][2], c;
    pid_t pid[2];
    double t0, t;
    char go = 1;
    for (c = 0; c < 2; c++) {
        if (pipe(p[c]) != 0) die("pipe", POOL_ESYS);
        pid[c] = fork();
        if (pid[c] == 0) {
            pool_manager_t *m;
            pool_dict_t *d;
            double s, g;
            char prefix[16];
            if (pool_manager_connect(&m, address, &bench_cfg) != POOL_OK ||
                pool_manager_dict(m, "w7a2", &d) != POOL_OK)
                _exit(1);
            if (read(p[c][0], &go, 1) != 1) _exit(2); /* start together */
            snprintf(prefix, sizeof prefix, "c%d-", c);
            w7a_one(d, n, prefix, &s, &g);
            pool_manager_close(m);
            _exit(0);
        }
        close(p[c][0]);
    }
    pool__mgr_sleep_ms(100);
    t0 = now_s();
    for (c = 0; c < 2; c++) if (write(p[c][1], &go, 1) != 1) die("write", POOL_ESYS);
    for (c = 0; c < 2; c++) { waitpid(pid[c], NULL, 0); close(p[c][1]); }
    t = now_s() - t0;
    return 4.0 * (double)n / t;
}

static double w7b_queue(pool_queue_t *q, long n)
{
    char b[16];
    size_t bl;
    long i;
    double t0 = now_s();
    int rc;
    for (i = 0; i < n; i++) {
        if ((rc = pool_queue_put(q, "item", 4, -1)) != POOL_OK) die("queue_put", rc);
        if ((rc = pool_queue_get(q, b, sizeof b, &bl, -1)) != POOL_OK) die("queue_get", rc);
    }
    return (double)n / (now_s() - t0);
}

static double w7b_lock(pool_lock_t *l, long n)
{
    long i;
    double t0 = now_s();
    int rc;
    for (i = 0; i < n; i++) {
        if ((rc = pool_lock_acquire(l, -1)) != POOL_OK) die("lock_acquire", rc);
        if ((rc = pool_lock_release(l)) != POOL_OK) die("lock_release", rc);
    }
    return (double)n / (now_s() - t0);
}

static double w7c_batch(pool_manager_t *m, pool_dict_t *d, long n)
{
    pool_batch_t *b;
    char k[32];
    long i;
    double t0;
    int rc;
    if ((rc = pool_batch_create(m, &b)) != POOL_OK) die("batch_create", rc);
    t0 = now_s();
    for (i = 0; i < n; i++) {
        int kl = snprintf(k, sizeof k, "batch%ld", i);
        if ((rc = pool_batch_dict_set(b, d, k, (size_t)kl, "value", 5, NULL)) != POOL_OK)
            die("batch_dict_set", rc);
        if (pool_batch_count(b) == 16 && (rc = pool_batch_run(b)) != POOL_OK) die("batch_run", rc);
    }
    if ((rc = pool_batch_run(b)) != POOL_OK) die("batch_run", rc);
    t0 = (double)n / (now_s() - t0);
    pool_batch_free(b);
    return t0;
}

/* ---- Python's multiprocessing.Manager, same workloads ---- */
static const char *py_script =
    "import sys, time, multiprocessing as mp\n"
    "def load(d, n, prefix):\n"
    "    for i in range(n): d[prefix + str(i)] = b'value'\n"
    "    for i in range(n): d[prefix + str(i)]\n"
    "def main():\n"
    "    n = int(sys.argv[1])\n"
    "    m = mp.Manager()\n"
    "    d = m.dict()\n"
    "    t = time.perf_counter()\n"
    "    for i in range(n): d['key' + str(i)] = b'value'\n"
    "    t1 = time.perf_counter()\n"
    "    for i in range(n): d['key' + str(i)]\n"
    "    t2 = time.perf_counter()\n"
    "    print('w7a_set', n / (t1 - t)); print('w7a_get', n / (t2 - t1))\n"
    "    ps = [mp.Process(target=load, args=(d, n, 'c%d-' % c)) for c in range(2)]\n"
    "    t = time.perf_counter()\n"
    "    for p in ps: p.start()\n"
    "    for p in ps: p.join()\n"
    "    print('w7a_two', 4 * n / (time.perf_counter() - t))\n"
    "    q = m.Queue()\n"
    "    t = time.perf_counter()\n"
    "    for i in range(n): q.put(b'item'); q.get()\n"
    "    print('w7b_queue', n / (time.perf_counter() - t))\n"
    "    l = m.Lock()\n"
    "    t = time.perf_counter()\n"
    "    for i in range(n): l.acquire(); l.release()\n"
    "    print('w7b_lock', n / (time.perf_counter() - t))\n"
    "    m.shutdown()\n"
    "if __name__ == '__main__':\n"
    "    main()\n";

typedef struct py_rates { double set, get, two, queue, lock; int ok; } py_rates;

static py_rates run_python(long n)
{
    py_rates r;
    char path[] = "/tmp/bench_manager_XXXXXX", cmd[256], line[256];
    FILE *f;
    int fd;
    memset(&r, 0, sizeof r);
    if (system("python3 -c 'import multiprocessing' >/dev/null 2>&1") != 0) return r;
    fd = mkstemp(path);
    if (fd < 0) return r;
    if (write(fd, py_script, strlen(py_script)) != (ssize_t)strlen(py_script)) {
        close(fd);
        unlink(path);
        return r;
    }
    close(fd);
    snprintf(cmd, sizeof cmd, "python3 %s %ld", path, n);
    f = popen(cmd, "r");
    if (f) {
        while (fgets(line, sizeof line, f)) {
            char name[32];
            double v;
            if (sscanf(line, "%31s %lf", name, &v) != 2) continue;
            if (!strcmp(name, "w7a_set")) r.set = v;
            else if (!strcmp(name, "w7a_get")) r.get = v;
            else if (!strcmp(name, "w7a_two")) r.two = v;
            else if (!strcmp(name, "w7b_queue")) r.queue = v;
            else if (!strcmp(name, "w7b_lock")) { r.lock = v; r.ok = 1; }
        }
        pclose(f);
    }
    unlink(path);
    return r;
}

/* For reference only, if installed: redis-benchmark -c 1 against a private
 * redis-server on a Unix socket (the build never depends on it). */
static void redis_reference(void)
{
    char dir[] = "/tmp/bench_redis_XXXXXX", sock[128], cmd[512];
    pid_t pid;
    int i;
    if (system("command -v redis-server >/dev/null 2>&1 && command -v redis-benchmark >/dev/null 2>&1") !=
        0) {
        printf("note: redis-server/redis-benchmark not installed: no redis reference\n");
        return;
    }
    if (!mkdtemp(dir)) return;
    fflush(stdout);
    snprintf(sock, sizeof sock, "%s/redis.sock", dir);
    pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) { dup2(null, 1); dup2(null, 2); }
        execlp("redis-server", "redis-server", "--port", "0", "--unixsocket", sock, "--save", "",
               "--appendonly", "no", "--dir", dir, (char *)NULL);
        _exit(127);
    }
    for (i = 0; i < 200 && access(sock, F_OK) != 0; i++) pool__mgr_sleep_ms(10);
    printf("reference: redis-benchmark -c 1 over a Unix socket (SET, GET requests/s):\n");
    fflush(stdout);
    snprintf(cmd, sizeof cmd,
             "redis-benchmark -s %s -c 1 -n 100000 -t set,get -q 2>/dev/null | tr '\\r' '\\n' | grep "
             "'requests per second' | sed 's/^ */  /'",
             sock);
    if (system(cmd) != 0) printf("  (redis-benchmark failed)\n");
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    unlink(sock);
    rmdir(dir);
}

static void row(const char *name, double ours, double floor_rate, double py)
{
    printf("%-34s %12.0f", name, ours);
    if (floor_rate > 0) printf("   %5.2fx raw", ours / floor_rate); else printf("   %9s", "");
    if (py > 0) printf("   %6.2fx python (%.0f/s)", ours / py, py);
    printf("\n");
}

int main(int argc, char **argv)
{
    int quick = 0, python = 1, i, rc, reps;
    long n, npy;
    pool_manager_t *m;
    pool_dict_t *d;
    pool_queue_t *q;
    pool_lock_t *l;
    double raw, rawpoll, set, get, two, qr, lr, batch;
    py_rates py;
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) quick = 1;
        else if (!strcmp(argv[i], "--no-python")) python = 0;
        else if (!strcmp(argv[i], "--no-poll")) bench_cfg.spin_us = -1; /* >>manager-spin off */
    }
    n = quick ? 5000 : 100000;
    npy = quick ? 1000 : 20000;
    reps = quick ? 1 : 5;
    if ((rc = pool_manager_start(&m, &bench_cfg)) != POOL_OK) die("manager_start", rc);
    if ((rc = pool_manager_dict(m, "w7a", &d)) != POOL_OK) die("dict", rc);
    if ((rc = pool_manager_queue(m, "w7b", 0, &q)) != POOL_OK) die("queue", rc);
    if ((rc = pool_manager_lock(m, "w7b-lock", &l)) != POOL_OK) die("lock", rc);
    /* the machine is shared and noisy: each figure is the best of `reps` runs (5; --quick: 1), and
     * the floor is measured between ours, under the same conditions */
    raw = rawpoll = set = get = two = qr = lr = batch = 0;
    for (i = 0; i < reps; i++) {
        char prefix[16];
        double s1, g1, x;
        if ((x = raw_pingpong(n, 0)) > raw) raw = x;
        if ((x = raw_pingpong(n, 1)) > rawpoll) rawpoll = x;
        snprintf(prefix, sizeof prefix, "key%d-", i);
        w7a_one(d, n, prefix, &s1, &g1);
        if (s1 > set) set = s1;
        if (g1 > get) get = g1;
        if ((x = w7a_two(pool_manager_address(m), n / 2)) > two) two = x;
        if ((x = w7b_queue(q, n / 2)) > qr) qr = x;
        if ((x = w7b_lock(l, n / 2)) > lr) lr = x;
        if ((x = w7c_batch(m, d, n)) > batch) batch = x;
    }
    pool_manager_close(m);
    memset(&py, 0, sizeof py);
    if (python) py = run_python(npy);

    printf("bench_manager (%s): ops/s; ratios to the raw Unix-socket round trip and to Python\n",
           quick ? "--quick: small counts, indicative only" : "full");
    printf("%-34s %12.0f\n", "raw unix-socket ping-pong (rt/s)", raw);
    printf("%-34s %12.0f   (both sides poll: the floor for the\n%52s\n", "  the same, polling (rt/s)", rawpoll,
           "manager's default polling, see >>manager-spin)");
    row("W7a dict set, 1 client", set, raw, py.set);
    row("W7a dict get, 1 client", get, raw, py.get);
    row("W7a set+get, 2 clients (total)", two, raw, py.two);
    row("W7b queue put+get pairs", qr, 0, py.queue);
    row("W7b lock acquire+release pairs", lr, 0, py.lock);
    row("W7c dict set, batches of 16", batch, raw, py.set);
    if (python && !py.ok) printf("note: python3 multiprocessing not available: Python figures skipped\n");
    if (!python) printf("note: --no-python: Python figures skipped\n");
    if (!quick) redis_reference();
    return 0;
}
