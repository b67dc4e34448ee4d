/* test_manager_fuzz.c - the Manager's fuzz target as a regression test.
 *
 * Runs the seed conversations of tests/fuzz/fuzz_manager.c, every input saved in
 * tests/fuzz/crashes/ (each crash the fuzzer ever found stays a test), and a few
 * thousand deterministic mutations. Under the ASan build this is a small fuzz run
 * on every CI pass; the libFuzzer run itself is tests/fuzz/build_and_run.sh. */
#define FUZZ_NO_ENTRY
#include "fuzz/fuzz_manager.c"
#include "test.h"

#include <dirent.h>

TEST(seeds_and_mutations)
{
    long runs = fuzz_run_mutations(3000, 12345);
    CHECK(runs > 3000);
}

TEST(saved_crashes)
{
    char dir[4096];
    const char *slash = strrchr(__FILE__, '/');
    DIR *d;
    struct dirent *e;
    int n = 0;
    snprintf(dir, sizeof dir, "%.*s/fuzz/crashes", slash ? (int)(slash - __FILE__) : 1, slash ? __FILE__ : ".");
    d = opendir(dir);
    if (!d) { fprintf(stderr, "  (no %s)\n", dir); return; }
    while ((e = readdir(d)) != NULL) {
        char path[8192];
        if (e->d_name[0] == '.' || strcmp(e->d_name, "README") == 0) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        CHECK_EQ(fuzz_run_file(path), 0);
        n++;
    }
    closedir(d);
    fprintf(stderr, "  %d saved inputs run\n", n);
}

int main(int argc, char **argv)
{
    RUN(seeds_and_mutations);
    RUN(saved_crashes);
    return test_run_all(argc, argv);
}
