/* manager_workqueue.c - a work queue served by a Manager, fed by one program and
 * drained by workers started separately, with a lock around their output.
 *
 * Run without arguments, it is the feeder: it starts a Manager with an authkey,
 * puts JOBS jobs on the queue "jobs", and starts WORKERS workers as separate
 * programs (it runs itself again as `manager_workqueue worker ADDRESS`, with the key
 * in the environment, as an unrelated program would get them). Each worker
 * connects by address, takes jobs until it gets a "stop" item, adds each result
 * to the dict "results", marks the job done, and prints under the lock "io" so
 * lines never interleave. The feeder waits for the queue to be joined, checks the
 * results, and shuts everything down.
 *
 *   cc -pthread manager_workqueue.c -o manager_workqueue && ./manager_workqueue
 */
#define POOL_IMPLEMENTATION
#include "pool.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define JOBS 40
#define WORKERS 3
#define KEY_ENV "MANAGER_WORKQUEUE_KEY"

static int worker(const char *address)
{
    pool_manager_config cfg;
    pool_manager_t *m;
    pool_queue_t *jobs;
    pool_dict_t *results;
    pool_lock_t *io;
    const char *key = getenv(KEY_ENV);
    int rc, done = 0;
    memset(&cfg, 0, sizeof cfg);
    cfg.authkey = key;
    cfg.authkey_len = key ? strlen(key) : 0;
    if ((rc = pool_manager_connect(&m, address, &cfg)) != POOL_OK) {
        fprintf(stderr, "worker %d: connect: %s\n", (int)getpid(), pool_strerror(rc));
        return 1;
    }
    if (pool_manager_queue(m, "jobs", 0, &jobs) || pool_manager_dict(m, "results", &results) ||
        pool_manager_lock(m, "io", &io)) {
        pool_manager_close(m);
        return 1;
    }
    for (;;) {
        char item[32];
        size_t n = 0;
        long x;
        int64_t total = 0;
        if ((rc = pool_queue_get(jobs, item, sizeof item - 1, &n, 10000)) != POOL_OK) break;
        item[n] = 0;
        if (strcmp(item, "stop") == 0) { pool_queue_task_done(jobs); break; }
        x = strtol(item, NULL, 10);
        pool_dict_add(results, "sum", 3, (int64_t)(x * x), &total);
        rc = pool_lock_acquire(io, -1);
        if (rc == POOL_OK || rc == POOL_EOWNERDEAD) {
            printf("worker %d: %ld^2 = %ld\n", (int)getpid(), x, x * x);
            fflush(stdout);
            pool_lock_release(io);
        }
        pool_queue_task_done(jobs);
        done++;
    }
    pool_dict_add(results, "jobs", 4, done, NULL);
    pool_manager_close(m);
    return rc == POOL_OK ? 0 : 1;
}

int main(int argc, char **argv)
{
    pool_manager_config cfg;
    pool_manager_t *m;
    pool_queue_t *jobs;
    pool_dict_t *results;
    pid_t pids[WORKERS];
    char key[33];
    int64_t sum = 0, count = 0, want = 0;
    int i, rc, failed = 0;
    if (argc == 3 && strcmp(argv[1], "worker") == 0) return worker(argv[2]);

    /* the feeder: a server with a fresh random key */
    {
        FILE *f = fopen("/dev/urandom", "rb");
        unsigned char r[16];
        if (!f || fread(r, 1, sizeof r, f) != sizeof r) { fprintf(stderr, "no randomness\n"); return 1; }
        fclose(f);
        for (i = 0; i < 16; i++) snprintf(key + 2 * i, 3, "%02x", r[i]);
    }
    memset(&cfg, 0, sizeof cfg);
    cfg.authkey = key;
    cfg.authkey_len = strlen(key);
    if ((rc = pool_manager_start(&m, &cfg)) != POOL_OK) {
        fprintf(stderr, "manager: %s\n", pool_strerror(rc));
        return 1;
    }
    if (pool_manager_queue(m, "jobs", 0, &jobs) || pool_manager_dict(m, "results", &results)) goto fail;
    for (i = 1; i <= JOBS; i++) {
        char item[16];
        int n = snprintf(item, sizeof item, "%d", i);
        if (pool_queue_put(jobs, item, (size_t)n, -1)) goto fail;
        want += (int64_t)i * i;
    }
    setenv(KEY_ENV, key, 1);
    for (i = 0; i < WORKERS; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            execl("/proc/self/exe", argv[0], "worker", pool_manager_address(m), (char *)NULL);
            execlp(argv[0], argv[0], "worker", pool_manager_address(m), (char *)NULL);
            _exit(127);
        }
    }
    for (i = 0; i < WORKERS; i++)
        if (pool_queue_put(jobs, "stop", 4, -1)) goto fail;
    if ((rc = pool_queue_join(jobs, 60000)) != POOL_OK) {
        fprintf(stderr, "join: %s\n", pool_strerror(rc));
        failed = 1;
    }
    for (i = 0; i < WORKERS; i++) {
        int st = 0;
        waitpid(pids[i], &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) failed = 1;
    }
    pool_dict_add(results, "sum", 3, 0, &sum);
    pool_dict_add(results, "jobs", 4, 0, &count);
    printf("%lld jobs done by %d workers, sum of squares %lld (expected %lld)\n", (long long)count,
           WORKERS, (long long)sum, (long long)want);
    pool_manager_close(m);
    return failed || sum != want || count != JOBS;
fail:
    pool_manager_close(m);
    return 1;
}
