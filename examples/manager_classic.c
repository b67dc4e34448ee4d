/* manager_classic.c - Python's Manager example, in C.
 *
 * A child process fills a shared dict and reverses a shared list; the parent
 * prints both. The objects live in a Manager server forked by pool_manager_start;
 * the child uses the parent's handles (its first call opens its own connection).
 *
 *   cc -pthread manager_classic.c && ./a.out
 */
#define POOL_IMPLEMENTATION
#include "pool.h"

#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int fill_and_reverse(pool_dict_t *d, pool_list_t *l)
{
    size_t n = 0, i;
    if (pool_dict_set(d, "1", 1, "1", 1) || pool_dict_set(d, "2", 1, "2", 1) ||
        pool_dict_set(d, "0.25", 4, "None", 4) || pool_list_len(l, &n))
        return 1;
    for (i = 0; i < n / 2; i++) { /* swap l[i] and l[n-1-i] */
        char a[32], b[32];
        size_t al, bl;
        if (pool_list_get(l, (int64_t)i, a, sizeof a, &al) ||
            pool_list_get(l, (int64_t)(n - 1 - i), b, sizeof b, &bl) ||
            pool_list_set(l, (int64_t)i, b, bl) || pool_list_set(l, (int64_t)(n - 1 - i), a, al))
            return 1;
    }
    return 0;
}

static int print_item(const void *k, size_t kl, const void *v, size_t vl, void *first)
{
    printf("%s%.*s: %.*s", *(int *)first ? "" : ", ", (int)kl, (const char *)k, (int)vl, (const char *)v);
    *(int *)first = 0;
    return 0;
}

int main(void)
{
    pool_manager_t *m;
    pool_dict_t *d;
    pool_list_t *l;
    pid_t pid;
    int rc, st = 0, first = 1, i;
    size_t n = 0, k;
    if ((rc = pool_manager_start(&m, NULL)) != POOL_OK) {
        fprintf(stderr, "manager: %s\n", pool_strerror(rc));
        return 1;
    }
    if (pool_manager_dict(m, "d", &d) || pool_manager_list(m, "l", &l)) goto fail;
    for (i = 0; i < 10; i++) {
        char s[8];
        int sl = snprintf(s, sizeof s, "%d", i);
        if (pool_list_append(l, s, (size_t)sl)) goto fail;
    }
    pid = fork();
    if (pid < 0) goto fail;
    if (pid == 0) _exit(fill_and_reverse(d, l));
    waitpid(pid, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) goto fail;

    printf("{");
    if (pool_dict_iter(d, print_item, &first)) goto fail;
    printf("}\n[");
    if (pool_list_len(l, &n)) goto fail;
    for (k = 0; k < n; k++) {
        char s[32];
        size_t sl;
        if (pool_list_get(l, (int64_t)k, s, sizeof s, &sl)) goto fail;
        printf("%s%.*s", k ? ", " : "", (int)sl, s);
    }
    printf("]\n");
    pool_manager_close(m); /* stops the server: no process, socket or directory remains */
    return 0;
fail:
    fprintf(stderr, "manager_classic failed\n");
    pool_manager_close(m);
    return 1;
}
