#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test:
#   0. the formatting of every C file (clang-format, the committed .clang-format);
#   1. the Python reference decoder over proto/vectors;
#   2. every CTest test (Check suites, end-to-end and hostile-peer tests, and the
#      deployment tests: HAProxy failover, the Debian package) in a normal build
#      (build/);
#   3. the same under AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/),
#      except the package test (the package is built from a fresh directory anyway);
#   3b. the POSIX-only build, as macOS and the BSDs get it (build-posix/: POSIX.1-2008
#      interfaces only, the poll backend, every Linux-only call replaced by its POSIX way),
#      and its Check suites, end-to-end, hostile-peer, TLS and Redis tests;
#   3c. the Windows build (build-windows/: cross-compiled with mingw-w64, its dependencies
#      cross-built from Debian's sources into build-mingw/deps by scripts/mingw-deps.sh), its
#      Check suites under Wine, its programs under Wine against the Linux ones and the guide's
#      peer (tests/windows), and the hostile-peer battery against app-server.exe under Wine;
#   4. a short libFuzzer pass over the decoder and the JSON check (FUZZ_SECONDS
#      each, default 30);
#   5. the end-to-end tests (plaintext and TLS, and app-server on Redis) once more with every
#      program under valgrind.
set -euo pipefail
cd "$(dirname "$0")/.."
# tshark: the dissector's tests; haproxy, systemd (systemd-analyze), dpkg-dev, groff-base: the
# deployment tests; libhiredis-dev, redis-server, redis-tools: app-server on Redis; RUNLEVEL=1: no
# package's init script starts a daemon of its own while installing.
# mingw-w64, wine: the Windows build and its tests.  chromium, prometheus: the status page in a
# headless browser and a real Prometheus scraping /metrics (tests/metrics).
RUNLEVEL=1 bash scripts/deps.sh iproute2 procps valgrind clang libclang-rt-dev clang-format tshark \
  haproxy systemd dpkg-dev groff-base libhiredis-dev redis-server redis-tools mingw-w64 wine wine64 \
  chromium prometheus
jobs=$(nproc 2>/dev/null || echo 2)

echo "== formatting (clang-format)"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git ls-files -z '*.c' '*.h' | xargs -0 clang-format --dry-run -Werror
else
  find src include tests examples bench fuzz -name '*.[ch]' -print0 | xargs -0 clang-format --dry-run -Werror
fi

echo "== reference decoder over proto/vectors"
python3 proto/tools/appmsg_ref.py check proto/vectors

echo "== build and test (RelWithDebInfo)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAPPMSG_WERROR=ON -DAPPMSG_HIREDIS=on >/dev/null
cmake --build build -j"$jobs"
ctest --test-dir build --output-on-failure -j"$jobs"

echo "== build and test under ASan/UBSan"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DAPPMSG_SANITIZE=ON -DAPPMSG_WERROR=ON \
  -DAPPMSG_HIREDIS=on >/dev/null
cmake --build build-asan -j"$jobs"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
ctest --test-dir build-asan --output-on-failure -j"$jobs"
unset ASAN_OPTIONS UBSAN_OPTIONS

echo "== POSIX-only build and test (as for macOS and the BSDs)"
cmake -S . -B build-posix -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAPPMSG_POSIX_ONLY=ON \
  -DAPPMSG_WERROR=ON -DAPPMSG_HIREDIS=on >/dev/null
cmake --build build-posix -j"$jobs"
ctest --test-dir build-posix --output-on-failure -j"$jobs" -E '^(deploy_|conformance_|wire_)'

echo "== Windows build (mingw-w64) and its tests under Wine"
bash scripts/mingw-deps.sh --with-openssl
cmake -S . -B build-windows -DCMAKE_TOOLCHAIN_FILE=cmake/mingw-w64-x86_64.cmake \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAPPMSG_WERROR=ON -DAPPMSG_BUILD_BENCH=OFF \
  -DAPPMSG_HIREDIS=off >/dev/null
cmake --build build-windows -j"$jobs"
# The build's own Wine prefix (never ~/.wine); its server and services started once, so that
# each test does not wait for them (cmake/mingw-w64-x86_64.cmake), and stopped at the end.
export WINEPREFIX="$PWD/build-windows/wine" WINEDEBUG=-all
mkdir -p "$WINEPREFIX"
wineserver -p
wine wineboot </dev/null >/dev/null 2>&1
status=0
ctest --test-dir build-windows --output-on-failure -j"$jobs" || status=$?
(cd tests/windows && APPMSG_BIN_DIR="$OLDPWD/build/examples" \
  APPMSG_WIN_BIN_DIR="$OLDPWD/build-windows/examples" python3 -m unittest -v test_wine) || status=$?
python3 tests/hostile/hostile_peer.py --windows --bin-dir build-windows/examples --time-limit 600 ||
  status=$?
wineserver -k || true
unset WINEPREFIX WINEDEBUG
[ "$status" -eq 0 ]

echo "== fuzz (${FUZZ_SECONDS:-30} s per target)"
bash scripts/fuzz.sh "${FUZZ_SECONDS:-30}"

echo "== end-to-end tests under valgrind"
APPMSG_WRAPPER="valgrind -q --leak-check=full --errors-for-leak-kinds=definite --show-leak-kinds=definite" \
  ctest --test-dir build --output-on-failure -R '^(e2e_programs|tls_programs|e2e_redis)$'
echo "== all tests passed"
