/* test.h - the kit's tiny test harness (tests only, not part of the kit).
 *
 * A test program is a list of TEST(name) functions run by TEST_MAIN().
 * CHECK(cond) records a failure and goes on; REQUIRE(cond) ends the test.
 * Every test runs under an alarm (TEST_TIMEOUT_S, default 60 s): a hang is a
 * failure with a message, never a stuck CI job. The last line printed is
 * "N passed, N failed" (ctest also reads the exit code).
 */
#ifndef KIT_TEST_H
#define KIT_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <unistd.h>
#include <time.h>
#include <pthread.h>

/* TEST_TSAN / TEST_ASAN: 1 when built with that sanitizer (some checks adapt) */
#if defined(__SANITIZE_THREAD__)
#define TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TEST_TSAN 1
#endif
#endif
#ifndef TEST_TSAN
#define TEST_TSAN 0
#endif
#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif
#ifndef TEST_ASAN
#define TEST_ASAN 0
#endif

#ifndef TEST_TIMEOUT_S
#define TEST_TIMEOUT_S 60
#endif

typedef void (*test_fn)(void);
struct test_case { const char *name; test_fn fn; };

static int test_failures_in_case;
static const char *test_current;

#define TEST_MAX 256
static struct test_case test_cases[TEST_MAX];
static int test_count;

static void test_register(const char *name, test_fn fn)
{
    if (test_count < TEST_MAX) {
        test_cases[test_count].name = name;
        test_cases[test_count].fn = fn;
        test_count++;
    }
}

#define CHECK(cond) do { if (!(cond)) { \
    fprintf(stderr, "  %s:%d: %s: CHECK(%s) failed\n", __FILE__, __LINE__, test_current, #cond); \
    test_failures_in_case++; } } while (0)
#define CHECK_EQ(a, b) do { long long test_a_ = (long long)(a), test_b_ = (long long)(b); \
    if (test_a_ != test_b_) { \
    fprintf(stderr, "  %s:%d: %s: CHECK_EQ(%s, %s) failed: %lld != %lld\n", __FILE__, __LINE__, \
            test_current, #a, #b, test_a_, test_b_); \
    test_failures_in_case++; } } while (0)
#define REQUIRE(cond) do { if (!(cond)) { \
    fprintf(stderr, "  %s:%d: %s: REQUIRE(%s) failed\n", __FILE__, __LINE__, test_current, #cond); \
    test_failures_in_case++; return; } } while (0)

/* TEST(name) defines a test; TEST_LIST lists them, in order, in main. */
#define TEST(name) static void test_##name(void)
#define RUN(name) test_register(#name, test_##name)

static void test_on_alarm(int sig)
{
    static const char msg[] = "  TIMEOUT: test did not finish in time\n";
    (void)sig;
    if (write(2, msg, sizeof msg - 1) < 0) { /* nothing more to do */ }
    _exit(3);
}

static void test_sleep_ms(int ms)
{
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
}

/* CPU time (ms) of a clock: CLOCK_THREAD_CPUTIME_ID or CLOCK_PROCESS_CPUTIME_ID */
static double test_cpu_ms(clockid_t which)
{
    struct timespec ts;
    clock_gettime(which, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static double test_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Resource counters used by the leak tests. */
#include <dirent.h>
static int test_count_dir(const char *path, const char *prefix)
{
    DIR *d = opendir(path);
    struct dirent *e;
    int n = 0;
    if (!d) return -1;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        if (prefix && strncmp(e->d_name, prefix, strlen(prefix)) != 0) continue;
        n++;
    }
    closedir(d);
    return n;
}
/* open fds of this process (the count includes none of opendir's own) */
static int test_count_fds(void) { int n = test_count_dir("/proc/self/fd", NULL); return n < 0 ? n : n - 1; }
/* threads of this process, and their number when no test runs (test_run_all
 * measures it: main and any sanitizer thread) */
static int test_base_threads = 1;
static int test_count_threads(void) { return test_count_dir("/proc/self/task", NULL); }
/* The thread count once it is `want`, or what it is after 5 s. A joined thread can
 * still be listed for a moment: the kernel clears its tid (which is what
 * pthread_join waits for) before it removes the task from /proc/self/task. A
 * thread that really leaked stays, and the caller's check fails after 5 s. */
static int test_threads_settle(int want)
{
    double t0 = test_now_ms();
    int n;
    while ((n = test_count_threads()) != want && test_now_ms() - t0 < 5000.0) test_sleep_ms(1);
    return n;
}
/* names in /dev/shm starting with prefix */
static int test_count_shm(const char *prefix) { return test_count_dir("/dev/shm", prefix); }
/* children of this process, zombies included (reads /proc/PID/task/PID/children) */
static int test_count_children(void)
{
    char path[64], buf[4096];
    FILE *f;
    int n = 0;
    size_t len, i;
    snprintf(path, sizeof path, "/proc/self/task/%d/children", (int)getpid());
    f = fopen(path, "r");
    if (!f) return -1;
    len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = 0;
    for (i = 0; i < len; i++)
        if (buf[i] != ' ' && (i == 0 || buf[i - 1] == ' ')) n++;
    return n;
}

/* pids of all children of this process (of every thread), up to max; the count */
static int test_list_children(int *out, int max)
{
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    int n = 0;
    if (!d) return -1;
    while ((e = readdir(d)) != NULL) {
        char path[300];
        FILE *f;
        int pid;
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "/proc/self/task/%s/children", e->d_name);
        f = fopen(path, "r");
        if (!f) continue;
        while (fscanf(f, "%d", &pid) == 1) {
            if (n < max) out[n] = pid;
            n++;
        }
        fclose(f);
    }
    closedir(d);
    return n;
}

/* The threads a test program has when no test runs: main, and a sanitizer's
 * thread (TSan starts one at the first pthread_create, so one is created and
 * joined here first). The smallest count over 100 ms, since the joined thread
 * may still be listed for a moment and nothing else starts a thread meanwhile. */
static void *test__noop(void *arg) { return arg; }
static int test__measure_base_threads(void)
{
    pthread_t t;
    double t0;
    int n, min;
    if (pthread_create(&t, NULL, test__noop, NULL) == 0) pthread_join(t, NULL);
    min = test_count_threads();
    for (t0 = test_now_ms(); test_now_ms() - t0 < 100.0;) {
        test_sleep_ms(1);
        if ((n = test_count_threads()) < min) min = n;
    }
    return min;
}

/* Runs every registered test (or only those named on the command line). */
static int test_run_all(int argc, char **argv)
{
    int passed = 0, failed = 0, i, j;
    /* the resource counters are used by some test programs only */
    (void)test_count_fds; (void)test_count_threads; (void)test_threads_settle; (void)test_count_shm; (void)test_count_children;
    (void)test_list_children; (void)test_cpu_ms; (void)test_sleep_ms;
    signal(SIGALRM, test_on_alarm);
    test_base_threads = test__measure_base_threads();
    for (i = 0; i < test_count; i++) {
        int selected = argc <= 1;
        double t0;
        for (j = 1; j < argc; j++)
            if (strcmp(argv[j], test_cases[i].name) == 0) selected = 1;
        if (!selected) continue;
        test_current = test_cases[i].name;
        test_failures_in_case = 0;
        fprintf(stderr, "[ RUN  ] %s\n", test_current);
        t0 = test_now_ms();
        alarm(TEST_TIMEOUT_S);
        test_cases[i].fn();
        alarm(0);
        if (test_failures_in_case) {
            failed++;
            fprintf(stderr, "[ FAIL ] %s (%.1f ms)\n", test_current, test_now_ms() - t0);
        } else {
            passed++;
            fprintf(stderr, "[  OK  ] %s (%.1f ms)\n", test_current, test_now_ms() - t0);
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

#endif /* KIT_TEST_H */
