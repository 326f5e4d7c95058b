#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test: the Check suites
# and end-to-end tests (ctest), once in a normal build and once under
# AddressSanitizer + UndefinedBehaviorSanitizer, plus the Python reference
# decoder over proto/vectors.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh iproute2 procps
jobs=$(nproc 2>/dev/null || echo 2)

echo "== reference decoder over proto/vectors"
python3 proto/tools/appmsg_ref.py check proto/vectors

echo "== build and test (RelWithDebInfo)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$jobs"
ctest --test-dir build --output-on-failure -j"$jobs"

echo "== build and test under ASan/UBSan"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DAPPMSG_SANITIZE=ON >/dev/null
cmake --build build-asan -j"$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure -j"$jobs"
echo "== all tests passed"
