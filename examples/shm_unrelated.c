/* shm_unrelated.c - two unrelated programs exchanging messages through a queue
 * they open by name (no inheritance, no shared parent state).
 *
 *   cc -O2 -pthread shm_unrelated.c -o shm_unrelated
 *   ./shm_unrelated                       # demo: runs both roles as separate programs
 *   ./shm_unrelated consumer /jobs 1000   # or by hand, in one terminal...
 *   ./shm_unrelated producer /jobs 1000   # ...and in another
 *
 * Each role opens the queue by name, or creates it if it does not exist yet
 * (whichever starts first). The producer sends n numbered text messages and
 * an "end" message; the consumer checks them, then removes the name.
 * In the demo, the two roles are exec'd as fresh programs: they share nothing
 * but the name. Exits 0 on success, and leaves nothing in /dev/shm.
 */
#define SHMQ_IMPLEMENTATION
#include "shm_queue.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>

/* open the queue, or create it if nobody did yet */
static int open_or_create(shmq_queue_t **q, const char *name)
{
    int rc, tries;
    for (tries = 0; tries < 100; tries++) {
        rc = shmq_queue_open(q, name);
        if (rc != SHMQ_ENOENT) return rc;
        rc = shmq_queue_create(q, name, 64 * 128, 128, 0);
        if (rc != SHMQ_EEXIST) return rc; /* EEXIST: the other one was quicker: open it */
    }
    return rc;
}

static int producer(const char *name, long n)
{
    shmq_queue_t *q;
    char msg[128];
    long i;
    int rc = open_or_create(&q, name);
    if (rc != 0) {
        fprintf(stderr, "producer: %s: %s\n", name, shmq_strerror(rc));
        return 1;
    }
    for (i = 0; i < n && rc == 0; i++) {
        int len = snprintf(msg, sizeof msg, "message %ld from pid %d", i, (int)getpid());
        rc = shmq_push(q, msg, (size_t)len + 1, 10000); /* wait up to 10 s for room */
    }
    if (rc == 0) rc = shmq_push(q, "end", 4, 10000);
    if (rc != 0) fprintf(stderr, "producer: push: %s\n", shmq_strerror(rc));
    shmq_queue_close(q);
    return rc == 0 ? 0 : 1;
}

static int consumer(const char *name, long n)
{
    shmq_queue_t *q;
    char msg[128];
    size_t len;
    long got = 0;
    int rc = open_or_create(&q, name), bad = 0;
    if (rc != 0) {
        fprintf(stderr, "consumer: %s: %s\n", name, shmq_strerror(rc));
        return 1;
    }
    for (;;) {
        long k;
        rc = shmq_pop(q, msg, sizeof msg, &len, 10000);
        if (rc != 0) {
            fprintf(stderr, "consumer: pop: %s\n", shmq_strerror(rc));
            break;
        }
        if (strcmp(msg, "end") == 0) break;
        if (sscanf(msg, "message %ld", &k) != 1 || k != got) bad = 1;
        got++;
    }
    printf("consumer %d: %ld messages received by name from another program%s\n", (int)getpid(),
           got, bad ? " (OUT OF ORDER)" : "");
    shmq_queue_close(q);
    shmq_unlink(name); /* the consumer is the last user: remove the name */
    return rc == 0 && !bad && got == n ? 0 : 1;
}

static pid_t run_self(const char *self, const char *role, const char *name, const char *n)
{
    pid_t pid = fork();
    if (pid == 0) {
        execl(self, self, role, name, n, (char *)NULL);
        perror("execl");
        _exit(127);
    }
    return pid;
}

int main(int argc, char **argv)
{
    const char *self = access("/proc/self/exe", X_OK) == 0 ? "/proc/self/exe" : argv[0];
    char name[64];
    shmq_queue_t *q;
    pid_t c, p;
    int sc, sp;
    if (argc == 4 && strcmp(argv[1], "producer") == 0) return producer(argv[2], atol(argv[3]));
    if (argc == 4 && strcmp(argv[1], "consumer") == 0) return consumer(argv[2], atol(argv[3]));
    if (argc != 1) {
        fprintf(stderr, "usage: %s [producer|consumer /name count]\n", argv[0]);
        return 2;
    }
    /* demo: two fresh programs that know nothing of each other but the name.
     * The demo creates the queue itself, so that its creator outlives both users
     * (shmq_sweep, run by anyone meanwhile, only removes names of dead creators). */
    snprintf(name, sizeof name, "/shm_unrelated.%d", (int)getpid());
    if ((sc = shmq_queue_create(&q, name, 64 * 128, 128, 0)) != 0) {
        fprintf(stderr, "create %s: %s\n", name, shmq_strerror(sc));
        return 1;
    }
    c = run_self(self, "consumer", name, "10000");
    p = run_self(self, "producer", name, "10000");
    waitpid(p, &sp, 0);
    waitpid(c, &sc, 0);
    shmq_queue_close(q);
    if (!WIFEXITED(sp) || WEXITSTATUS(sp) != 0 || !WIFEXITED(sc) || WEXITSTATUS(sc) != 0) {
        fprintf(stderr, "demo failed\n");
        shmq_unlink(name);
        return 1;
    }
    if (shmq_unlink(name) != SHMQ_ENOENT) { /* the consumer removed it */
        fprintf(stderr, "the name was left behind\n");
        return 1;
    }
    return 0;
}
