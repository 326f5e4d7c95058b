#!/usr/bin/env bash
# Runs the CTest suite N times and says what failed, per test and per test case.
#
#   bash scripts/repeat-tests.sh [OPTIONS] N [CTEST ARGS...]
#
# Options:
#   --build-dir DIR   build and test DIR (default: $BUILD_DIR or build).  A directory whose name
#                     contains "asan" is configured with APPMSG_SANITIZE=ON and run with the
#                     ASAN_OPTIONS/UBSAN_OPTIONS of scripts/test.sh.
#   --asan            the same as --build-dir build-asan.
#   --valgrind        run every program under valgrind (APPMSG_WRAPPER), as scripts/test.sh does
#                     for the end-to-end tests; combine with -R '^e2e_programs$'.
#   --load K          keep K busy processes running during the runs (CPU contention, as when
#                     others build on the same machine).
#   --no-build        test what is built.
#   --keep DIR        keep each run's full log (LastTest.log) in DIR (default: BUILD/repeat).
#   --report-only     run nothing: summarise the N run logs already in the --keep directory.
#
# CTEST ARGS go to ctest unchanged (e.g. -j2, -R '^test_conn$', --repeat until-fail:3).
# Each CTest test is one line of the summary; inside the Check suites, the end-to-end suite
# (unittest) and the hostile-peer battery, every failing case is counted too, by name.
# Exit status: 0 when every run passed, 1 otherwise, 2 on a usage error.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
}

build_dir=${BUILD_DIR:-build}
build=1
run=1
load=0
keep=
valgrind=0
while [[ $# -gt 0 ]]; do
  case $1 in
  --build-dir) build_dir=${2:?--build-dir needs a directory}; shift 2 ;;
  --build-dir=*) build_dir=${1#*=}; shift ;;
  --asan) build_dir=build-asan; shift ;;
  --valgrind) valgrind=1; shift ;;
  --load) load=${2:?--load needs a count}; shift 2 ;;
  --load=*) load=${1#*=}; shift ;;
  --no-build) build=0; shift ;;
  --report-only) build=0; run=0; shift ;;
  --keep) keep=${2:?--keep needs a directory}; shift 2 ;;
  --keep=*) keep=${1#*=}; shift ;;
  -h | --help) usage ;;
  --) shift; break ;;
  -*) echo "repeat-tests: unknown option $1" >&2; usage ;;
  *) break ;;
  esac
done
[[ $# -ge 1 && $1 =~ ^[1-9][0-9]*$ ]] || usage
runs=$1
shift
[[ $load =~ ^[0-9]+$ ]] || usage
keep=${keep:-$build_dir/repeat}

sanitize=0
[[ $(basename "$build_dir") == *asan* ]] && sanitize=1

if [[ $run == 1 && $build == 1 ]]; then
  if [[ $sanitize == 1 ]]; then
    cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Debug -DAPPMSG_SANITIZE=ON -DAPPMSG_WERROR=ON >/dev/null
  else
    cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAPPMSG_WERROR=ON >/dev/null
  fi
  cmake --build "$build_dir" -j"$(nproc 2>/dev/null || echo 2)" >/dev/null
fi
if [[ $sanitize == 1 ]]; then
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
fi
if [[ $valgrind == 1 ]]; then
  export APPMSG_WRAPPER="valgrind -q --leak-check=full --errors-for-leak-kinds=definite --show-leak-kinds=definite"
fi

if [[ $run == 1 ]]; then
  # Busy processes for --load, ended by their own ids when this script ends.
  load_pids=()
  stop_load() {
    local p
    for p in "${load_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  }
  trap stop_load EXIT
  for ((i = 0; i < load; i++)); do
    bash -c 'while :; do :; done' &
    load_pids+=($!)
  done

  mkdir -p "$keep"
  rm -f "$keep"/run-*.log "$keep"/ctest-*.out
  echo "repeat-tests: $runs run(s) of ctest --test-dir $build_dir $* (load $load, sanitizers $sanitize, valgrind $valgrind); logs in $keep/"
  for ((r = 1; r <= runs; r++)); do
    start=$(date +%s)
    if ctest --test-dir "$build_dir" "$@" >"$keep/ctest-$r.out" 2>&1; then status=passed; else status=FAILED; fi
    cp "$build_dir/Testing/Temporary/LastTest.log" "$keep/run-$r.log" 2>/dev/null || true
    echo "run $r/$runs: $status in $(($(date +%s) - start)) s"
  done
  stop_load
  load_pids=()
fi

python3 - "$keep" "$runs" <<'EOF'
"""Counts failures per CTest test and per case inside the suites, from CTest's LastTest.log."""
import collections
import re
import sys

keep, runs = sys.argv[1], int(sys.argv[2])
block_start = re.compile(r"^\d+/\d+ Testing: (\S+)$")
# Check: "test_conn.c:123:F:tcase:test_name:0: message" (E for an error: a crash, a timeout).
check_case = re.compile(r"^[^\s:]+\.c:\d+:[FE]:[^:]*:([^:]+):\d+: ?(.*)$")
# unittest -v summary: "FAIL: test_x (test_programs.Class.test_x)" / "ERROR: ...".
unit_case = re.compile(r"^(?:FAIL|ERROR): (\S+) \(([\w.]+)\)")
unit_skip = re.compile(r"^(\S+) \(([\w.]+)\)(?: \.\.\.| .*\.\.\.) skipped (.*)$")
# unittest -v: a known bug ("expected failure"), or one that is gone ("unexpected success").
unit_xfail = re.compile(r"^(\S+) \(([\w.]+)\).*\.\.\. (expected failure|unexpected success)$")
# The hostile-peer battery: "FAIL name: why".
battery_case = re.compile(r"^FAIL (\S+?):? (.*)$")
# A Check suite's test that was not registered here, and why: "SKIP name: reason" (tu_skip).
check_skip = re.compile(r"^SKIP (\S+): (.*)$")

tests = collections.OrderedDict()  # test -> [runs seen, runs failed]
cases = collections.Counter()  # (test, case) -> failures
why = {}  # (test, case) -> last reason
skips = collections.Counter()
found = 0
for r in range(1, runs + 1):
    try:
        lines = open(f"{keep}/run-{r}.log", errors="replace").read().splitlines()
    except OSError:
        print(f"run {r}: no CTest log (ctest did not run?)")
        continue
    found += 1
    name = None
    open_case = None  # a unittest FAIL/ERROR block whose reason is still to be read
    for ln in lines:
        if open_case and re.match(r"^\w+(Error|Exception|Exit)\b", ln):
            why[open_case] = ln
            open_case = None
            continue
        m = block_start.match(ln)
        if m:
            name = m.group(1)
            tests.setdefault(name, [0, 0])
            tests[name][0] += 1
            continue
        if name is None:
            continue
        if ln.startswith("Test Failed"):
            tests[name][1] += 1
            continue
        m = check_case.match(ln)
        if m:
            key = (name, m.group(1))
            cases[key] += 1
            why[key] = m.group(2)
            continue
        m = unit_case.match(ln)
        if m:
            open_case = (name, m.group(1))
            cases[open_case] += 1
            why[open_case] = m.group(2)
            continue
        m = unit_skip.match(ln)
        if m:
            skips[(name, m.group(1), m.group(3))] += 1
            continue
        m = unit_xfail.match(ln)
        if m:
            skips[(name, m.group(1), m.group(3))] += 1
            continue
        m = check_skip.match(ln)
        if m:
            skips[(name, m.group(1), m.group(2))] += 1
            continue
        m = battery_case.match(ln)
        if m and name.startswith("hostile"):
            key = (name, m.group(1))
            cases[key] += 1
            why[key] = m.group(2)

print()
w = max([len(n) for n in tests] + [20]) + 2
print(f"{'test':{w}} {'runs':>5} {'failed':>7}")
total_runs = total_failed = 0
for name, (seen, failed) in tests.items():
    total_runs += seen
    total_failed += failed
    print(f"{name:{w}} {seen:5} {failed:7}{'  <-' if failed else ''}")
print(f"{'all':{w}} {total_runs:5} {total_failed:7}   ({found} run(s) x {len(tests)} tests)")
if cases:
    print("\nfailing cases (test: case, failures, last reason):")
    for (name, case), n in sorted(cases.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {name}: {case}  x{n}  {why[(name, case)][:150]}")
if skips:
    print("\nskipped cases and known bugs (test: case, runs, reason):")
    for (name, case, reason), n in sorted(skips.items()):
        print(f"  {name}: {case}  x{n}  {reason[:150]}")
sys.exit(1 if total_failed or cases else 0)
EOF
