#!/bin/sh
# tests/compile/run.sh - the kit's compile matrix (ctest: compile_matrix).
#
#   sh tests/compile/run.sh [SOURCE_DIR]     (default: the repository holding this script)
#
# Exit status: 0 all passed, 1 something failed, 77 skipped (a required tool is
# missing and CI is not "true"; with CI=true a missing tool is a failure).
# Output: one line per combination, "PASS  ..." or "FAIL  ..." followed by the
# compiler's or the program's messages (indented, first 40 lines), "NOTE  ..." for
# things not tested yet, and a last line "N passed, N failed".
#
# The headers (those that exist; taskflow.h may not yet):
#   header        implementation define        static define     exported prefixes
#   shm_queue.h   SHMQ_IMPLEMENTATION          SHMQ_STATIC       shmq_
#   pool.h        POOL_IMPLEMENTATION          POOL_STATIC       pool_ shmq_
#   taskflow.h    TASKFLOW_IMPLEMENTATION      TASKFLOW_STATIC   tf_ pool_ shmq_
# A "unit" is one header, or "all" (every existing header in one TU).
#
# WHAT IS CHECKED
#  1. matrix: each unit, with its implementation define(s), as one program that
#     is compiled, linked and run, with: gcc and clang -std=c99 and -std=c11
#     (-Wall -Wextra -pedantic -Werror -Wstrict-prototypes -Wshadow -pthread),
#     g++ and clang++ (-x c++ -std=c++17 -Wall -Wextra -Werror -pthread),
#     musl-gcc -std=c99 -static, and gcc c99 / clang c11 / g++ with -DSHMQ_NO_LINUX.
#     No feature-test macro is given ($KIT_COMPILE_DEFS, default empty, is added
#     to the C builds): the test TUs include the headers first, and the headers
#     promise to ask for POSIX themselves then, even under -std=c99.
#     The headers' other documented recipe is checked too ("syshdr"): <stdio.h>
#     included before the implementation, with -D_POSIX_C_SOURCE=200809L on the
#     command line (gcc c99, clang c11).
#     "all" is also built in reverse order, with the interfaces included before
#     the implementation (an earlier include must not swallow the implementation).
#  2. Every test program references every public function the TU declares: the
#     names on lines "<PREFIX>_DEF ... name(" of the headers that are still present
#     after preprocessing the TU. So a declared function without a definition is a
#     link error, and in X_STATIC mode no public function is "unused".
#     Functions named *_strerror are also called, as (int) -> const char *.
#  3. static: X_STATIC in two TUs, each with the implementation and its own
#     references; they link without duplicate symbols, and nm shows that neither
#     object exports any symbol of the kit (gcc c99, clang c11, g++).
#  4. two-tu: one TU with the implementation, one interface-only TU that uses it
#     (gcc c99 both; and the user TU as C++ with g++ against the C object).
#  5. duplicate: the implementation defined in two TUs must fail to link with
#     "multiple definition" (the README promises a link error, not silence).
#  6. symbols: each header's implementation alone in an object (gcc c99, clang c11,
#     gcc c99 SHMQ_NO_LINUX); `nm -P -g --defined-only` must list only names with
#     the header's prefixes, and none with a private prefix (pool__, shmq__, tf__)
#     unless the headers declare it with a *_DEF macro (a helper that a public
#     macro calls, e.g. tf__task_va, is exported on purpose).
#  7. example: the QUICK START examples in the headers' documentation, see below.
#
# DOCUMENTATION EXAMPLES (the convention; header authors, write to this)
#  - First, on every line, trailing blanks (and a CR) are ignored and a leading
#    " *" (space, star: the comment style of pool.h) is removed if present.
#  - An example starts at a line that is then exactly "   EXAMPLE BEGIN" (three
#    spaces) and ends at the next line that is exactly "   EXAMPLE END". So
#    " *   EXAMPLE BEGIN" and "   EXAMPLE BEGIN" both start one, and the code
#    lines may carry the " *" or not (without it, the example can be copied).
#  - Between the markers, a blank line is a blank line of code; every other line
#    must start with 4 spaces, which are removed. Anything else is a FAIL.
#  - The result is a complete program in one .c file, as a user would paste it:
#    it includes the header by name (#include "pool.h"). If it has a line
#    "#define <SOMETHING>_IMPLEMENTATION" it is compiled as it is; otherwise the
#    header's implementation define is given on the command line (-DPOOL_...).
#    The examples live inside a block comment, so they cannot contain "*/":
#    use // comments in them.
#  - It is compiled the way the README tells users to (`cc -pthread x.c`), at
#    the compilers' default standard, with -Wall -Wextra -pedantic -Werror
#    -Wstrict-prototypes -Wshadow, by gcc and by clang (-I SOURCE_DIR); the gcc
#    build is run with a 20 s timeout, stdin /dev/null, in a scratch directory,
#    and must exit 0. A header may have several examples (each is checked); a
#    header with none gets a NOTE, not a failure.
#
# POSIX sh only (dash runs it). Everything is built in a temporary directory,
# removed at exit.

set -u
LC_ALL=C
export LC_ALL

SRC=${1:-$(dirname "$0")/../..}
if ! SRC=$(cd "$SRC" 2>/dev/null && pwd); then
    echo "run.sh: no such source directory: ${1:-}" >&2
    exit 1
fi
TMP=$(mktemp -d "${TMPDIR:-/tmp}/kit-compile.XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT
trap 'exit 1' HUP INT TERM

KIT_COMPILE_DEFS=${KIT_COMPILE_DEFS-}
# the feature-test macro the headers tell users to define when a system header
# comes before the implementation
SYSHDR_DEFS="-D_POSIX_C_SOURCE=200809L"
CWARN="-Wall -Wextra -pedantic -Werror -Wstrict-prototypes -Wshadow"
XXWARN="-Wall -Wextra -Werror"
RUN_TIMEOUT=20

npass=0
nfail=0
missing=""

# ---- reporting ----------------------------------------------------------------
show_log() { # file: print it indented, at most 40 lines
    [ -s "$1" ] || return 0
    sed -n '1,40p' "$1" | sed 's/^/      /'
    show_n=$(wc -l < "$1")
    if [ "$show_n" -gt 40 ]; then echo "      ... ($show_n lines, the first 40 shown)"; fi
}
pass() { npass=$((npass + 1)); printf 'PASS  %s\n' "$1"; }
fail() { nfail=$((nfail + 1)); printf 'FAIL  %s\n' "$1"; [ $# -lt 2 ] || show_log "$2"; }
note() { printf 'NOTE  %s\n' "$1"; }

# ---- tools -----------------------------------------------------------------
have() { command -v "$1" >/dev/null 2>&1; }
for tool in gcc clang g++ clang++ musl-gcc nm timeout; do
    if ! have "$tool"; then
        missing="$missing $tool"
        if [ "${CI:-}" = true ]; then
            fail "tool: $tool is required and not installed (CI=true)"
        else
            note "tool: $tool is not installed: the combinations that need it are skipped"
        fi
    fi
done
usable() { # tool: 0 if installed (a missing tool was reported once above)
    case " $missing " in *" $1 "*) return 1 ;; esac
    return 0
}

# ---- the headers ------------------------------------------------------------
HEADERS=""
for h in shm_queue.h pool.h taskflow.h; do
    if [ -f "$SRC/$h" ]; then HEADERS="$HEADERS $h"; else note "$h: not in $SRC yet, not tested"; fi
done
if [ -z "$HEADERS" ]; then
    fail "no header found in $SRC"
    echo "$npass passed, $nfail failed"
    exit 1
fi
macro_of() {
    case $1 in
        shm_queue.h) echo SHMQ ;;
        pool.h) echo POOL ;;
        taskflow.h) echo TASKFLOW ;;
    esac
}
prefixes_of() {
    case $1 in
        shm_queue.h) echo "shmq_" ;;
        pool.h) echo "pool_ shmq_" ;;
        taskflow.h) echo "tf_ pool_ shmq_" ;;
    esac
}
# the header at the top of the layering that exists
TOP=""
for h in $HEADERS; do TOP=$h; done

# Every public function name declared with <PREFIX>_DEF in any header: the last
# identifier before the first "(" on a line that starts with "<PREFIX>_DEF ".
for h in $HEADERS; do
    grep -E '^[A-Z][A-Z0-9_]*_DEF[[:space:]]' "$SRC/$h"
done | sed 's/(.*//' | sed -n 's/.*[^A-Za-z0-9_]\([A-Za-z_][A-Za-z0-9_]*\)[[:space:]]*$/\1/p' |
    grep -E '^(shmq|pool|tf)_' | sort -u > "$TMP/all_names"

# ---- test TUs -----------------------------------------------------------------
# prologue UNIT MODE: the lines a TU starts with.
# MODE: impl (implementation define(s)), static (X_STATIC and implementation),
#       iface (interface only), rev (all: interfaces first, reversed, then the
#       top header's implementation define alone), syshdr (impl after <stdio.h>).
prologue() {
    if [ "$1" = all ]; then pro_hs=$HEADERS; else pro_hs=$1; fi
    case $2 in
        syshdr)
            echo "#include <stdio.h>"
            prologue "$1" impl
            return ;;
        rev)
            for h in $HEADERS; do pro_r="$h ${pro_r:-}"; done
            for h in $pro_r; do echo "#include \"$h\""; done
            pro_r=""
            echo "#define $(macro_of "$TOP")_IMPLEMENTATION"
            echo "#include \"$TOP\""
            return ;;
    esac
    for h in $pro_hs; do
        m=$(macro_of "$h")
        [ "$2" != static ] || echo "#define ${m}_STATIC"
        [ "$2" = iface ] || echo "#define ${m}_IMPLEMENTATION"
    done
    for h in $pro_hs; do echo "#include \"$h\""; done
}

# refs FILE LANG CC FLAGS...: appends to FILE (which holds a prologue) the table of
# every public function still declared after preprocessing, and the function
# kit_count_refs_() that uses it (and calls the *_strerror functions).
refs() {
    refs_f=$1 refs_x=c
    [ "$2" != cxx ] || refs_x=c++
    shift 2
    if "$@" -I"$SRC" -E -P -x "$refs_x" "$refs_f" -o "$refs_f.i" 2>/dev/null; then
        grep -oE '[A-Za-z_][A-Za-z0-9_]*' "$refs_f.i" | sort -u | comm -12 "$TMP/all_names" - > "$refs_f.names"
    else
        : > "$refs_f.names"
    fi
    {
        echo ""
        echo "typedef void (*kit_anyfn_)(void);"
        echo "static const kit_anyfn_ kit_refs_[] = {"
        sed 's/.*/    (kit_anyfn_)&,/' "$refs_f.names"
        echo "    0"
        echo "};"
        echo "static int kit_count_refs_(void)"
        echo "{"
        echo "    int n = 0;"
        sed -n 's/^\(.*_strerror\)$/    if (!\1(0) || !\1(-1)) return -1;/p' "$refs_f.names"
        echo "    while (kit_refs_[n]) n++;"
        echo "    return n;"
        echo "}"
    } >> "$refs_f"
    refs_n=$(wc -l < "$refs_f.names")
    refs_n=$((refs_n + 0))
}

main_fn() { # the main of a test program: checks the table and runs nothing else
    echo "int main(void)"
    echo "{"
    echo "    return kit_count_refs_() == $refs_n ? 0 : 1;"
    echo "}"
}

# run_prog LABEL PROGRAM: runs it with a timeout; PASS/FAIL
run_prog() {
    if (cd "$(dirname "$2")" && timeout "$RUN_TIMEOUT" "$2" < /dev/null > "$2.out" 2>&1); then
        pass "$1"
    else
        run_rc=$?
        [ "$run_rc" -ne 124 ] || echo "(timed out after $RUN_TIMEOUT s)" >> "$2.out"
        echo "(exit status $run_rc)" >> "$2.out"
        fail "$1" "$2.out"
    fi
}

seq_no=0
newdir() { seq_no=$((seq_no + 1)); d="$TMP/t$seq_no"; mkdir "$d"; }

# ---- 1. the matrix ------------------------------------------------------------
# one_program LABEL UNIT MODE LANG COMPILER FLAGS...
one_program() {
    op_label=$1 op_unit=$2 op_mode=$3 op_lang=$4
    shift 4
    newdir
    prologue "$op_unit" "$op_mode" > "$d/tu.c"
    refs "$d/tu.c" "$op_lang" "$@"
    main_fn >> "$d/tu.c"
    if [ "$op_lang" = cxx ]; then set -- "$@" -x c++; fi
    if "$@" -I"$SRC" "$d/tu.c" -o "$d/prog" > "$d/log" 2>&1; then
        run_prog "$op_label ($refs_n functions)" "$d/prog"
    else
        fail "$op_label" "$d/log"
    fi
}

UNITS="$HEADERS"
if [ "$(echo $HEADERS | wc -w)" -gt 1 ]; then UNITS="$HEADERS all"; fi

echo "== matrix: each header alone and all together, compiled, linked and run"
for u in $UNITS; do
    if usable gcc; then
        one_program "gcc       c99       $u" "$u" impl c gcc -std=c99 $CWARN $KIT_COMPILE_DEFS -pthread
        one_program "gcc       c11       $u" "$u" impl c gcc -std=c11 $CWARN $KIT_COMPILE_DEFS -pthread
    fi
    if usable clang; then
        one_program "clang     c99       $u" "$u" impl c clang -std=c99 $CWARN $KIT_COMPILE_DEFS -pthread
        one_program "clang     c11       $u" "$u" impl c clang -std=c11 $CWARN $KIT_COMPILE_DEFS -pthread
    fi
    if usable g++; then
        one_program "g++       c++17     $u" "$u" impl cxx g++ -std=c++17 $XXWARN -pthread
    fi
    if usable clang++; then
        one_program "clang++   c++17     $u" "$u" impl cxx clang++ -std=c++17 $XXWARN -pthread
    fi
    if usable musl-gcc; then
        one_program "musl-gcc  c99 -static  $u" "$u" impl c musl-gcc -std=c99 -static $CWARN $KIT_COMPILE_DEFS -pthread
    fi
    if usable gcc; then
        one_program "gcc       c99 SHMQ_NO_LINUX  $u" "$u" impl c gcc -std=c99 -DSHMQ_NO_LINUX $CWARN $KIT_COMPILE_DEFS -pthread
    fi
    if usable clang; then
        one_program "clang     c11 SHMQ_NO_LINUX  $u" "$u" impl c clang -std=c11 -DSHMQ_NO_LINUX $CWARN $KIT_COMPILE_DEFS -pthread
    fi
    if usable g++; then
        one_program "g++       c++17 SHMQ_NO_LINUX  $u" "$u" impl cxx g++ -std=c++17 -DSHMQ_NO_LINUX $XXWARN -pthread
    fi
    if usable gcc; then
        one_program "gcc       c99 $SYSHDR_DEFS, after <stdio.h>  $u" "$u" syshdr c gcc -std=c99 $SYSHDR_DEFS $CWARN -pthread
    fi
    if usable clang; then
        one_program "clang     c11 $SYSHDR_DEFS, after <stdio.h>  $u" "$u" syshdr c clang -std=c11 $SYSHDR_DEFS $CWARN -pthread
    fi
done
if [ "$UNITS" != "$HEADERS" ]; then
    usable gcc && one_program "gcc       c99       all: interfaces first (reversed), then $(macro_of "$TOP")_IMPLEMENTATION alone" all rev c gcc -std=c99 $CWARN $KIT_COMPILE_DEFS -pthread
    usable g++ && one_program "g++       c++17     all: interfaces first (reversed), then $(macro_of "$TOP")_IMPLEMENTATION alone" all rev cxx g++ -std=c++17 $XXWARN -pthread
fi

# ---- 3. X_STATIC in two TUs ---------------------------------------------------
# static_pair LABEL UNIT LANG COMPILER FLAGS...
static_pair() {
    sp_label=$1 sp_unit=$2 sp_lang=$3
    shift 3
    newdir
    prologue "$sp_unit" static > "$d/a.c"
    refs "$d/a.c" "$sp_lang" "$@"
    printf 'int kit_other_tu(void);\nint kit_other_tu(void) { return kit_count_refs_(); }\n' >> "$d/a.c"
    prologue "$sp_unit" static > "$d/b.c"
    refs "$d/b.c" "$sp_lang" "$@"
    printf 'int kit_other_tu(void);\nint main(void)\n{\n    return kit_count_refs_() == %s && kit_other_tu() == %s ? 0 : 1;\n}\n' "$refs_n" "$refs_n" >> "$d/b.c"
    if [ "$sp_lang" = cxx ]; then set -- "$@" -x c++; fi
    if ! "$@" -I"$SRC" -c "$d/a.c" -o "$d/a.o" > "$d/log" 2>&1 ||
       ! "$@" -I"$SRC" -c "$d/b.c" -o "$d/b.o" >> "$d/log" 2>&1; then
        fail "$sp_label" "$d/log"
        return
    fi
    # nothing but the test's own kit_other_tu (mangled in C++) and main may be exported
    usable nm || : > "$d/exported"
    usable nm && nm -P -g --defined-only "$d/a.o" "$d/b.o" 2>>"$d/log" | awk 'NF >= 2 && $1 !~ /:$/ && $1 !~ /kit_other_tu/ && $1 != "main" { print "exported in X_STATIC mode: " $1 " (" $2 ")" }' > "$d/exported"
    if [ -s "$d/exported" ]; then
        fail "$sp_label" "$d/exported"
        return
    fi
    # link with the compiler driver used for the objects (-x none: they are objects)
    if "$@" -x none "$d/a.o" "$d/b.o" -o "$d/prog" > "$d/log" 2>&1; then
        run_prog "$sp_label ($refs_n functions in each TU)" "$d/prog"
    else
        fail "$sp_label" "$d/log"
    fi
}

echo "== static: X_STATIC, the implementation in two TUs, linked together"
for u in $UNITS; do
    usable gcc && static_pair "gcc       c99       static x2  $u" "$u" c gcc -std=c99 $CWARN $KIT_COMPILE_DEFS -pthread
    usable clang && static_pair "clang     c11       static x2  $u" "$u" c clang -std=c11 $CWARN $KIT_COMPILE_DEFS -pthread
    usable g++ && static_pair "g++       c++17     static x2  $u" "$u" cxx g++ -std=c++17 $XXWARN -pthread
done

# ---- 4. implementation TU + interface-only TU -------------------------------------
# two_tu LABEL UNIT USER_LANG
two_tu() {
    tt_label=$1 tt_unit=$2 tt_lang=$3
    newdir
    prologue "$tt_unit" impl > "$d/impl.c"
    prologue "$tt_unit" iface > "$d/use.c"
    if [ "$tt_lang" = cxx ]; then
        set -- g++ -std=c++17 $XXWARN -pthread
        refs "$d/use.c" cxx "$@"
        set -- "$@" -x c++
    else
        set -- gcc -std=c99 $CWARN $KIT_COMPILE_DEFS -pthread
        refs "$d/use.c" c "$@"
    fi
    main_fn >> "$d/use.c"
    if gcc -std=c99 $CWARN $KIT_COMPILE_DEFS -pthread -I"$SRC" -c "$d/impl.c" -o "$d/impl.o" > "$d/log" 2>&1 &&
       "$@" -I"$SRC" -c "$d/use.c" -o "$d/use.o" >> "$d/log" 2>&1 &&
       "$@" -x none "$d/impl.o" "$d/use.o" -o "$d/prog" >> "$d/log" 2>&1; then
        run_prog "$tt_label ($refs_n functions used)" "$d/prog"
    else
        fail "$tt_label" "$d/log"
    fi
}

echo "== two-tu: the implementation in one TU, used from an interface-only TU"
for u in $UNITS; do
    usable gcc && two_tu "gcc       c99       impl.c + use.c  $u" "$u" c
    usable gcc && usable g++ && two_tu "gcc+g++   c99/c++17 impl.c + use.cpp  $u" "$u" cxx
done

# ---- 5. the implementation in two TUs is a link error -----------------------------
echo "== duplicate: the implementation defined in two TUs must not link"
if usable gcc; then
    for u in $HEADERS; do
        newdir
        prologue "$u" impl > "$d/a.c"
        prologue "$u" impl > "$d/b.c"
        printf 'int main(void)\n{\n    return 0;\n}\n' >> "$d/b.c"
        # (no -Werror here: this is about linking; the other checks see the warnings)
        if ! gcc -std=c99 $KIT_COMPILE_DEFS -pthread -I"$SRC" -c "$d/a.c" -o "$d/a.o" > "$d/log" 2>&1 ||
           ! gcc -std=c99 $KIT_COMPILE_DEFS -pthread -I"$SRC" -c "$d/b.c" -o "$d/b.o" >> "$d/log" 2>&1; then
            fail "gcc       c99       implementation twice  $u: does not even compile" "$d/log"
        elif gcc -pthread "$d/a.o" "$d/b.o" -o "$d/prog" > "$d/log" 2>&1; then
            echo "linked without error: the implementation exports nothing that clashes" > "$d/log"
            fail "gcc       c99       implementation twice  $u: link error expected" "$d/log"
        elif grep -q 'multiple definition' "$d/log"; then
            pass "gcc       c99       implementation twice  $u: link error (multiple definition), as the README promises"
        else
            fail "gcc       c99       implementation twice  $u: failed to link, but not with 'multiple definition'" "$d/log"
        fi
    done
fi

# ---- 6. exported symbols carry the prefixes -------------------------------------
# symbols LABEL HEADER COMPILER FLAGS...
symbols() {
    sy_label=$1 sy_h=$2
    shift 2
    newdir
    prologue "$sy_h" impl > "$d/impl.c"
    if ! "$@" -I"$SRC" -c "$d/impl.c" -o "$d/impl.o" > "$d/log" 2>&1; then
        fail "$sy_label" "$d/log"
        return
    fi
    if ! nm -P -g --defined-only "$d/impl.o" > "$d/nm" 2>"$d/log"; then
        fail "$sy_label: nm failed" "$d/log"
        return
    fi
    awk -v prefixes="$(prefixes_of "$sy_h")" -v declared="$TMP/all_names" '
        BEGIN {
            n = split(prefixes, p, " ")
            while ((getline name < declared) > 0) def[name] = 1
        }
        NF >= 2 {
            ok = 0
            for (i = 1; i <= n; i++) {
                if (index($1, p[i] "_") == 1 && !($1 in def)) {
                    print "private name exported (not declared with a *_DEF macro: make it static): " $1 " (" $2 ")"
                    ok = -1
                    break
                }
                if (index($1, p[i]) == 1) ok = 1
            }
            if (ok == 0) print "exported without the prefix (" prefixes "): " $1 " (" $2 ")"
        }' "$d/nm" > "$d/bad"
    sy_n=$(awk 'NF >= 2' "$d/nm" | wc -l)
    if [ -s "$d/bad" ]; then
        fail "$sy_label" "$d/bad"
    else
        pass "$sy_label ($((sy_n + 0)) exported, all prefixed)"
    fi
}

echo "== symbols: every exported symbol carries the header's prefix"
for h in $HEADERS; do
    usable gcc && symbols "gcc       c99       nm  $h" "$h" gcc -std=c99 $CWARN $KIT_COMPILE_DEFS -pthread
    usable clang && symbols "clang     c11       nm  $h" "$h" clang -std=c11 $CWARN $KIT_COMPILE_DEFS -pthread
    usable gcc && symbols "gcc       c99 SHMQ_NO_LINUX  nm  $h" "$h" gcc -std=c99 -DSHMQ_NO_LINUX $CWARN $KIT_COMPILE_DEFS -pthread
done

# ---- 7. the documentation examples --------------------------------------------------
# extract HEADER OUTPREFIX: writes OUTPREFIX.1.c, .2.c, ...; errors to OUTPREFIX.err
extract() {
    awk -v out="$2" '
        function err(msg) { print FILENAME ":" NR ": " msg > (out ".err"); bad = 1 }
        { line = $0; sub(/[ \t\r]+$/, "", line); if (substr(line, 1, 2) == " *") line = substr(line, 3) }
        !inside && line == "   EXAMPLE BEGIN" {
            inside = 1; n++; start = NR
            file = out "." n ".c"; printf "" > file
            next
        }
        !inside { if (line == "   EXAMPLE END") err("EXAMPLE END without EXAMPLE BEGIN"); next }
        {
            if (line == "   EXAMPLE END") { inside = 0; close(file); next }
            if (line == "   EXAMPLE BEGIN") { err("EXAMPLE BEGIN inside the example begun at line " start); next }
            if (line == "") { print "" > file; next }
            if (substr(line, 1, 4) != "    ") { err("example line not indented by 4 spaces: " $0); next }
            print substr(line, 5) > file
        }
        END {
            if (inside) err("EXAMPLE BEGIN at line " start " has no EXAMPLE END")
            print n + 0 > (out ".count")
            exit bad
    }' "$1"
}

echo "== example: the documentation's QUICK START examples compile, link and run"
for h in $HEADERS; do
    newdir
    m=$(macro_of "$h")
    if ! extract "$SRC/$h" "$d/ex"; then
        fail "example   $h: malformed EXAMPLE block" "$d/ex.err"
        continue
    fi
    ex_n=$(cat "$d/ex.count")
    if [ "$ex_n" -eq 0 ]; then
        note "example   $h: no EXAMPLE BEGIN/END block in its documentation yet"
        continue
    fi
    i=1
    while [ "$i" -le "$ex_n" ]; do
        ex="$d/ex.$i.c"
        ex_def=""
        grep -q '^[ 	]*#[ 	]*define[ 	][ 	]*[A-Z_]*_IMPLEMENTATION\([ 	]\|$\)' "$ex" || ex_def="-D${m}_IMPLEMENTATION"
        for cc in gcc clang; do
            usable "$cc" || continue
            ex_label="$(printf '%-9s' "$cc") example $i of $h (cc -pthread${ex_def:+ $ex_def}, default standard)"
            if ! "$cc" $CWARN $ex_def -I"$SRC" -pthread "$ex" -o "$d/ex.$i.$cc" > "$d/log" 2>&1; then
                {
                    cat "$d/log"
                    echo "--- the example as extracted ($ex):"
                    cat -n "$ex"
                } > "$d/log2"
                fail "$ex_label: compile" "$d/log2"
            elif [ "$cc" = gcc ]; then
                run_prog "$ex_label: compile and run" "$d/ex.$i.$cc"
            else
                pass "$ex_label: compile"
            fi
        done
        i=$((i + 1))
    done
done

# ---- summary ----------------------------------------------------------------------
if [ -n "$missing" ] && [ "${CI:-}" != true ]; then
    echo "$npass passed, $nfail failed (skipped: combinations needing$missing)"
    [ "$nfail" -eq 0 ] && exit 77
    exit 1
fi
echo "$npass passed, $nfail failed"
[ "$nfail" -eq 0 ] || exit 1
exit 0
