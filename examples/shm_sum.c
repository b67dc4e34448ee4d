/* shm_sum.c - a numeric array in a shared block, summed in place by several
 * worker processes (no copy: each reads its own slice of the one block), and
 * compared with one process doing it all.
 *
 *   cc -O2 -pthread shm_sum.c -o shm_sum && ./shm_sum [n] [workers]
 *
 * The parent creates an anonymous block (inherited across fork), fills it,
 * forks the workers; each sums a slice and writes its partial sum into a
 * results area of the same block. Exits 0 when both sums agree.
 */
#define SHMQ_IMPLEMENTATION
#include "shm_queue.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>

typedef struct {
    int64_t partial[64]; /* one per worker, written once by it */
} results;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int64_t sum_range(const int64_t *a, size_t begin, size_t end)
{
    int64_t s = 0;
    size_t i;
    for (i = begin; i < end; i++) s += a[i];
    return s;
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? (size_t)atol(argv[1]) : (size_t)4 * 1000 * 1000;
    long workers = argc > 2 ? atol(argv[2]) : sysconf(_SC_NPROCESSORS_ONLN);
    shmq_block_t *block;
    int64_t *data, single, multi = 0;
    results *res;
    pid_t pids[64];
    double t0, t_single, t_multi;
    size_t i;
    long w;
    int rc, failed = 0;

    if (workers < 2) workers = 2;
    if (workers > 64) workers = 64;
    if (n == 0) n = 1;
    /* one block: the results area, then the array; 8 * n bytes, reserved now */
    rc = shmq_block_create(&block, NULL, sizeof(results) + n * sizeof(int64_t), 0);
    if (rc != 0) {
        fprintf(stderr, "shmq_block_create: %s\n", shmq_strerror(rc));
        return 1;
    }
    res = (results *)shmq_block_data(block);
    data = (int64_t *)(res + 1);
    for (i = 0; i < n; i++) data[i] = (int64_t)(i % 1000) - 500 + (int64_t)(i & 7);

    t0 = now_ms();
    single = sum_range(data, 0, n);
    t_single = now_ms() - t0;

    t0 = now_ms();
    for (w = 0; w < workers; w++) {
        pids[w] = fork();
        if (pids[w] < 0) {
            perror("fork");
            return 1;
        }
        if (pids[w] == 0) {
            size_t b = n * (size_t)w / (size_t)workers, e = n * (size_t)(w + 1) / (size_t)workers;
            res->partial[w] = sum_range(data, b, e); /* reads the parent's array in place */
            _exit(0);
        }
    }
    for (w = 0; w < workers; w++) {
        int st;
        if (waitpid(pids[w], &st, 0) != pids[w] || !WIFEXITED(st) || WEXITSTATUS(st) != 0) failed = 1;
        multi += res->partial[w];
    }
    t_multi = now_ms() - t0;

    printf("%zu numbers (%.1f MB in one shared block)\n", n, (double)n * 8 / 1e6);
    printf("  1 process:   sum %lld in %.2f ms\n", (long long)single, t_single);
    printf("  %ld processes: sum %lld in %.2f ms (fork included; no data copied)\n", workers,
           (long long)multi, t_multi);
    shmq_block_close(block);
    if (failed || single != multi) {
        fprintf(stderr, "MISMATCH\n");
        return 1;
    }
    return 0;
}
