#!/bin/sh
# tools/selftest_compile_matrix.sh - tests tests/compile/run.sh itself.
#
#   sh tools/selftest_compile_matrix.sh [--quick]
#
# Builds trivial stand-in headers (shm_queue.h, pool.h, taskflow.h) that follow
# the kit's conventions, checks that run.sh passes on them, then breaks them in
# one way at a time and checks that run.sh fails (exit 1) and names the failure.
# Also checks the exit status 77 / 1 when a compiler is missing (CI unset / CI=true).
# --quick skips the slow case (an example that hangs: 20 s). SELFTEST_ONLY=text
# runs only the cases whose name contains text.
# Last line: "N passed, N failed". Exit 0 only if all cases behaved.

set -u
HERE=$(cd "$(dirname "$0")/.." && pwd)
RUN="$HERE/tests/compile/run.sh"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/kit-selftest.XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT
trap 'exit 1' HUP INT TERM
QUICK=0
[ "${1:-}" != --quick ] || QUICK=1
ok=0
bad=0

GOOD="$TMP/good"
mkdir "$GOOD"
cat > "$GOOD/shm_queue.h" <<'KIT_EOF'
/* shm_queue.h - stand-in
 *
 * QUICK START
 *
 *   EXAMPLE BEGIN
 *    #define SHMQ_IMPLEMENTATION
 *    #include "shm_queue.h"
 *    #include <stdio.h>
 *
 *    int main(void)
 *    {
 *        // a comment
 *        printf("%s %s\n", shmq_version(), shmq_strerror(0));
 *        return 0;
 *    }
 *   EXAMPLE END
 */
#if (defined(SHMQ_IMPLEMENTATION)) && !defined(_POSIX_C_SOURCE) && !defined(_GNU_SOURCE) && !defined(_DEFAULT_SOURCE)
#define _POSIX_C_SOURCE 200809L /* clock_gettime under -std=c99 */
#endif
#ifndef SHMQ_H_INCLUDED
#define SHMQ_H_INCLUDED
#include <stddef.h>
#include <stdint.h> /* a libc header: fixes the feature-test macros from here on */
#ifdef SHMQ_STATIC
#define SHMQ_DEF static
#else
#define SHMQ_DEF extern
#endif
#ifdef __cplusplus
extern "C" {
#endif
SHMQ_DEF const char *shmq_version(void);
SHMQ_DEF const char *shmq_strerror(int code);
#ifndef SHMQ_NO_LINUX
SHMQ_DEF int shmq_linux_only(int x);
#endif
#ifdef __cplusplus
}
#endif
#endif
#ifdef SHMQ_IMPLEMENTATION
#ifndef SHMQ__DONE
#define SHMQ__DONE
#include <time.h>
static int shmq__helper(void) { struct timespec ts; return clock_gettime(CLOCK_MONOTONIC, &ts); }
SHMQ_DEF const char *shmq_version(void) { return shmq__helper() == 0 ? "0.1" : "?"; }
SHMQ_DEF const char *shmq_strerror(int code) { return code ? "error" : "ok"; }
#ifndef SHMQ_NO_LINUX
SHMQ_DEF int shmq_linux_only(int x) { return x; }
#endif
#endif
#endif
KIT_EOF
cat > "$GOOD/pool.h" <<'KIT_EOF'
/* pool.h - stand-in

   QUICK START

   EXAMPLE BEGIN
    #include "pool.h"
    #include <stdio.h>

    static int square(const void *in, void *out, void *ctx)
    {
        (void)ctx;
        *(int *)out = *(const int *)in * *(const int *)in;
        return 0;
    }

    int main(void)
    {
        int x = 3, y = 0;
        if (pool_run(square, &x, &y) != 0 || y != 9) return 1;
        printf("%d\n", y);
        return 0;
    }
   EXAMPLE END
*/
#if (defined(POOL_IMPLEMENTATION)) && !defined(_POSIX_C_SOURCE) && !defined(_GNU_SOURCE) && !defined(_DEFAULT_SOURCE)
#define _POSIX_C_SOURCE 200809L /* clock_gettime under -std=c99 */
#endif
#ifndef POOL_H_INCLUDED
#define POOL_H_INCLUDED
#include <stddef.h>
#if defined(POOL_STATIC) && !defined(SHMQ_STATIC)
#define SHMQ_STATIC
#endif
#include "shm_queue.h"
#ifdef POOL_STATIC
#define POOL_DEF static
#else
#define POOL_DEF extern
#endif
#ifdef __cplusplus
extern "C" {
#endif
typedef int (*pool_fn)(const void *in, void *out, void *ctx);
POOL_DEF int pool_run(pool_fn fn, const void *in, void *out);
POOL_DEF const char *pool_strerror(int code);
#ifdef __cplusplus
}
#endif
#endif
#ifdef POOL_IMPLEMENTATION
#ifndef POOL__DONE
#define POOL__DONE
#ifndef SHMQ_IMPLEMENTATION
#define SHMQ_IMPLEMENTATION
#endif
#include "shm_queue.h"
#include <pthread.h>
struct pool__job { pool_fn fn; const void *in; void *out; int rc; };
static void *pool__thread(void *a) { struct pool__job *j = (struct pool__job *)a; j->rc = j->fn(j->in, j->out, NULL); return NULL; }
POOL_DEF int pool_run(pool_fn fn, const void *in, void *out)
{
    pthread_t t; struct pool__job j; j.fn = fn; j.in = in; j.out = out; j.rc = -1;
    if (pthread_create(&t, NULL, pool__thread, &j) != 0) return -1;
    pthread_join(t, NULL);
    return j.rc;
}
POOL_DEF const char *pool_strerror(int code) { return shmq_strerror(code); }
#endif
#endif
KIT_EOF
cat > "$GOOD/taskflow.h" <<'KIT_EOF'
/* taskflow.h - stand-in, no example yet */
#if (defined(TASKFLOW_IMPLEMENTATION)) && !defined(_POSIX_C_SOURCE) && !defined(_GNU_SOURCE) && !defined(_DEFAULT_SOURCE)
#define _POSIX_C_SOURCE 200809L /* clock_gettime under -std=c99 */
#endif
#ifndef TASKFLOW_H_INCLUDED
#define TASKFLOW_H_INCLUDED
#if defined(TASKFLOW_STATIC) && !defined(POOL_STATIC)
#define POOL_STATIC
#endif
#include "pool.h"
#ifdef TASKFLOW_STATIC
#define TF_DEF static
#else
#define TF_DEF extern
#endif
#ifdef __cplusplus
extern "C" {
#endif
TF_DEF int tf_answer(void);
#ifdef __cplusplus
}
#endif
#endif
#ifdef TASKFLOW_IMPLEMENTATION
#ifndef TF__DONE
#define TF__DONE
#ifndef POOL_IMPLEMENTATION
#define POOL_IMPLEMENTATION
#endif
#include "pool.h"
TF_DEF int tf_answer(void) { return 42; }
#endif
#endif
KIT_EOF

# expect NAME WANT_RC PATTERN SETUP...: copies the good headers, runs SETUP (a
# shell snippet, in that directory), runs run.sh there, checks the exit status
# and that the output matches PATTERN (grep -E).
expect() {
    ex_name=$1 ex_rc=$2 ex_pat=$3 ex_setup=$4
    case $ex_name in *${SELFTEST_ONLY:-}*) ;; *) return ;; esac
    ex_dir="$TMP/case"
    rm -rf "$ex_dir"
    cp -r "$GOOD" "$ex_dir"
    if ! (cd "$ex_dir" && eval "$ex_setup"); then
        echo "FAIL  $ex_name: the setup failed"; bad=$((bad + 1)); return
    fi
    (cd "$ex_dir" && ${EX_ENV:-env} sh "$RUN" "$ex_dir") > "$TMP/out" 2>&1
    got=$?
    if [ "$got" -ne "$ex_rc" ]; then
        echo "FAIL  $ex_name: run.sh exited $got, expected $ex_rc"
        sed 's/^/      /' "$TMP/out" | grep -E '^      (FAIL|NOTE)|passed' | head -20
        bad=$((bad + 1))
    elif ! grep -Eq -- "$ex_pat" "$TMP/out"; then
        echo "FAIL  $ex_name: exit $got as expected, but no line matches: $ex_pat"
        sed 's/^/      /' "$TMP/out" | grep -E '^      (FAIL|NOTE)|passed' | head -20
        bad=$((bad + 1))
    else
        echo "PASS  $ex_name (exit $got; $(grep -c '^FAIL' "$TMP/out") FAIL lines; $(tail -1 "$TMP/out"))"
        ok=$((ok + 1))
    fi
}
# replace FILE OLD NEW: a literal one-line substitution that must happen
replace() {
    grep -qF -- "$2" "$1" || { echo "setup: '$2' not in $1" >&2; return 1; }
    KIT_OLD=$2 KIT_NEW=$3 awk 'BEGIN { old = ENVIRON["KIT_OLD"]; new = ENVIRON["KIT_NEW"] } { i = index($0, old); if (i) $0 = substr($0, 1, i - 1) new substr($0, i + length(old)); print }' "$1" > "$1.new" && mv "$1.new" "$1"
}

expect "good stand-ins pass" 0 '^[0-9]+ passed, 0 failed$' ':'
expect "taskflow.h absent: a NOTE, still passes" 0 'NOTE  taskflow.h: not in' 'rm taskflow.h'
expect "syntax error in pool.h's implementation" 1 '^FAIL  gcc +c99 +pool.h' \
    'replace pool.h "return j.rc;" "return j.rc"'
expect "an exported function without the prefix" 1 'exported without the prefix.*: helper' \
    'replace shm_queue.h "SHMQ_DEF const char *shmq_strerror(int code) {" "int helper(void); int helper(void) { return 1; } SHMQ_DEF const char *shmq_strerror(int code) {"'
expect "a private (pool__) function that is not static" 1 'private name exported.*pool__thread' \
    'replace pool.h "static void *pool__thread(void *a)" "void *pool__thread(void *a); void *pool__thread(void *a)"'
expect "a POSIX-only name missing with the documented -D_POSIX_C_SOURCE" 1 'FAIL  gcc +c99 -D_POSIX_C_SOURCE=200809L, after <stdio.h> +shm_queue.h' \
    'replace shm_queue.h "#include <time.h>" "#include <time.h>
#include <sys/mman.h>
static const int shmq__flags = MAP_NORESERVE;" && replace shm_queue.h "return shmq__helper() == 0" "return shmq__flags + shmq__helper() == 0"'
expect "a declared public function that is never defined" 1 'undefined reference to .pool_missing' \
    'replace pool.h "POOL_DEF const char *pool_strerror(int code);" "POOL_DEF const char *pool_strerror(int code);
POOL_DEF int pool_missing(void);"'
expect "POOL_STATIC does not make shm_queue.h static" 1 'FAIL  .*static x2  pool.h' \
    'replace pool.h "#define SHMQ_STATIC" "#define POOL__NOTHING"'
expect "the implementation inside the include guard" 1 'FAIL  .*interfaces first' \
    'replace taskflow.h "#endif" "#if 1" && printf "#endif\n" >> taskflow.h'
expect "missing extern \"C\" (C object, C++ user)" 1 'FAIL  gcc\+g\+\+ .*pool.h' \
    'replace pool.h "extern \"C\" {" "extern \"C++\" {"'
expect "C that is not C++ (void * conversion)" 1 'FAIL  g\+\+ +c\+\+17 +pool.h' \
    'replace pool.h "struct pool__job *j = (struct pool__job *)a;" "struct pool__job *j = a;"'
expect "a -Wshadow warning" 1 'FAIL  clang +c11 +pool.h' \
    'replace pool.h "pthread_t t; struct pool__job j;" "pthread_t t; struct pool__job j; { int fn = 0; (void)fn; }"'
expect "C11-only code (C99 build)" 1 'FAIL  gcc +c99 +shm_queue.h' \
    'replace shm_queue.h "#include <time.h>" "#include <time.h>
struct shmq__anon { union { int a; float b; }; };"'
expect "the SHMQ_NO_LINUX path does not compile" 1 'FAIL  .*SHMQ_NO_LINUX +shm_queue.h' \
    'replace shm_queue.h "#include <time.h>" "#include <time.h>
#ifdef SHMQ_NO_LINUX
#error no fallback
#endif"'
expect "the implementation needs -lm beyond cc -pthread" 1 'undefined reference to .fmod' \
    'replace shm_queue.h "#include <time.h>" "#include <time.h>
#include <math.h>" && replace shm_queue.h "return code ? \"error\" : \"ok\";" "return fmod((double)code, 3.0) != 0.0 ? \"error\" : \"ok\";"'
expect "an implementation that exports nothing (duplicate check)" 1 'implementation twice  shm_queue.h: link error expected' \
    'replace shm_queue.h "#define SHMQ_DEF extern" "#define SHMQ_DEF static"'
expect "an example that does not compile" 1 'FAIL  gcc +example 1 of pool.h.*compile' \
    'replace pool.h "        int x = 3, y = 0;" "        int x = 3, y = 0, z;"'
expect "an example that exits non-zero" 1 'FAIL  gcc +example 1 of pool.h.*run' \
    'replace pool.h "y != 9) return 1;" "y != 10) return 1;"'
expect "an example line not indented by 4 spaces" 1 'not indented by 4 spaces' \
    'replace pool.h "        int x = 3, y = 0;" "   int x = 3, y = 0;"'
expect "an EXAMPLE BEGIN without END" 1 'has no EXAMPLE END' \
    'replace shm_queue.h " *   EXAMPLE END" " *   EXAMPLE ENDS"'
expect "an example whose code lines lack the \" *\" (allowed)" 0 'PASS  gcc +example 1 of shm_queue.h' \
    'replace shm_queue.h " *        return 0;" "        return 0;" && replace shm_queue.h " *    {" "    {"'
expect "a stray EXAMPLE END" 1 'EXAMPLE END without EXAMPLE BEGIN' \
    'replace shm_queue.h "/* shm_queue.h - stand-in" "/* shm_queue.h - stand-in
   EXAMPLE END"'
expect "a *_DEF-declared private helper may be exported" 0 '^[0-9]+ passed, 0 failed$' \
    'replace taskflow.h "TF_DEF int tf_answer(void);" "TF_DEF int tf_answer(void);
TF_DEF int tf__helper(int x);" && replace taskflow.h "TF_DEF int tf_answer(void) { return 42; }" "TF_DEF int tf_answer(void) { return 42; }
TF_DEF int tf__helper(int x) { return x; }"'
if [ "$QUICK" -eq 0 ]; then
    expect "an example that hangs (20 s timeout)" 1 'timed out after 20 s' \
        'replace pool.h "printf(\"%d\\n\", y);" "for (;;) {}"'
fi
# a compiler missing: a PATH without musl-gcc
mkdir "$TMP/bin"
for t in /usr/bin/*; do
    case ${t##*/} in musl-gcc|x86_64-linux-musl-gcc) ;; *) ln -s "$t" "$TMP/bin/" ;; esac
done
EX_ENV="env PATH=$TMP/bin CI="
expect "musl-gcc missing, CI unset: skip (77)" 77 'NOTE  tool: musl-gcc is not installed' ':'
EX_ENV="env PATH=$TMP/bin CI=true"
expect "musl-gcc missing, CI=true: failure" 1 'FAIL  tool: musl-gcc is required' ':'
EX_ENV=""

echo "$ok passed, $bad failed"
[ "$bad" -eq 0 ]
