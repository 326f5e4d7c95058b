#!/usr/bin/env bash
# The Debian package, installed on this machine and used:
#   1. configure and build a fresh build directory (prefix /usr), cpack -G DEB;
#   2. check the package: its files, its dependencies, its control files;
#   3. dpkg -i it (twice: a reinstall over itself works too);
#   4. run /usr/bin/app-server from it and ask it with /usr/bin/app-client (search, ping);
#   5. systemd-analyze verify the installed appmsg-server.service;
#   6. build a small program against the installed package with find_package(appmsg) - once
#      with the shared library, once with the static one - and with pkg-config, and run each
#      against that app-server;
#   7. dpkg -r (the options file, a conffile, stays), then dpkg -P: nothing of it is left.
# It needs root (dpkg); it purges the package on the way out, whatever happens, and purges one
# left by an earlier run that was killed before it could.  Loopback only; every wait is bounded.
#
#   bash tests/deploy/test_package.sh          (APPMSG_SOURCE_DIR: the source tree; default: here)
set -euo pipefail

SRC=${APPMSG_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
PKG=appmsg
HOST=127.0.0.1
LIBDIR=/usr/lib/$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)
VERSION=$(sed -n 's/^project(appmsg VERSION \([0-9.]*\).*/\1/p' "$SRC/CMakeLists.txt")

say() { printf 'package: %s\n' "$*"; }
# A command's output, whole, before it is searched: "cmd | grep -q" under pipefail fails when
# grep stops reading at its first match and cmd is killed by SIGPIPE.
status() { dpkg-query -W -f='${Status}' "$PKG" 2>/dev/null || true; }
fail() {
  printf 'package: FAILED: %s\n' "$*" >&2
  exit 1
}

SUDO=
if [ "$(id -u)" -ne 0 ]; then
  sudo -n true 2>/dev/null || fail "installing a package needs root (or sudo without a password)"
  SUDO=sudo
fi
for tool in cmake cpack dpkg dpkg-deb dpkg-shlibdeps pkg-config systemd-analyze gzip; do
  command -v "$tool" >/dev/null || fail "$tool is missing: bash scripts/deps.sh dpkg-dev systemd"
done

TMP=$(mktemp -d /tmp/appmsg-package.XXXXXX)
SERVER_PID=
installed_here=0
cleanup() {
  local rc=$?
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [ "$installed_here" = 1 ] && [ -n "$(status)" ]; then
    say "purging $PKG"
    dpkg_retry -P "$PKG" >/dev/null || rc=1
  fi
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# dpkg, waiting (2 minutes at most) while another dpkg or apt holds the lock.
dpkg_retry() {
  local i out
  for i in $(seq 60); do
    if out=$($SUDO dpkg "$@" 2>&1); then
      printf '%s\n' "$out"
      return 0
    fi
    if [[ "${out,,}" != *lock* ]]; then
      printf '%s\n' "$out" >&2
      return 1
    fi
    [ "$i" = 1 ] && say "dpkg is locked by another process; waiting"
    sleep 2
  done
  printf '%s\n' "$out" >&2
  return 1
}

if [[ "$(status)" == *installed* ]]; then
  say "$PKG is installed already (left by an earlier run?): purging it first"
  installed_here=1
  dpkg_retry -P "$PKG" >/dev/null
fi

# ---- 1. build ------------------------------------------------------------------------------------
say "building the package in $TMP/build"
cmake -S "$SRC" -B "$TMP/build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr \
  -DAPPMSG_BUILD_TESTS=OFF -DAPPMSG_BUILD_BENCH=OFF >"$TMP/configure.log" 2>&1 ||
  { cat "$TMP/configure.log"; fail "cmake configure"; }
cmake --build "$TMP/build" -j"$(nproc)" >"$TMP/build.log" 2>&1 ||
  { tail -50 "$TMP/build.log"; fail "build"; }
(cd "$TMP/build" && cpack -G DEB) >"$TMP/cpack.log" 2>&1 || { cat "$TMP/cpack.log"; fail "cpack"; }
DEB=$(ls "$TMP"/build/${PKG}_*.deb)
say "built $(basename "$DEB")"

# ---- 2. what is in it ------------------------------------------------------------------------------
dpkg-deb -c "$DEB" | awk '{ print $6 }' | sed 's|^\./|/|' >"$TMP/files"
for f in /usr/bin/app-server /usr/bin/app-client /usr/bin/kv-server /usr/bin/kv-client \
  "$LIBDIR/libappmsg.so.0" "$LIBDIR/libappmsg.so" "$LIBDIR/libappmsg.a" \
  "$LIBDIR/pkgconfig/appmsg.pc" "$LIBDIR/cmake/appmsg/appmsgConfig.cmake" \
  "$LIBDIR/cmake/appmsg/appmsgTargets.cmake" /usr/include/appmsg/appmsg.h \
  /usr/include/appmsg/version.h /usr/share/man/man1/app-server.1.gz \
  /usr/share/man/man1/app-client.1.gz /usr/lib/systemd/system/appmsg-server.service \
  /etc/default/appmsg-server /usr/share/doc/appmsg/examples/haproxy.cfg; do
  grep -qx "$f" "$TMP/files" || fail "$f is not in the package"
done
depends=$(dpkg-deb -f "$DEB" Depends)
case "$depends" in
  *libcjson1*) ;;
  *) fail "Depends does not name libcjson1: $depends" ;;
esac
[ "$(dpkg-deb -f "$DEB" Version)" = "$VERSION" ] || fail "package version is not $VERSION"
dpkg-deb --ctrl-tarfile "$DEB" | tar -t >"$TMP/control-files"
grep -qx './conffiles' "$TMP/control-files" || fail "no conffiles"
say "contents, Depends ($depends) and control files as expected"

# ---- 3. install ------------------------------------------------------------------------------------------
installed_here=1
dpkg_retry -i "$DEB" >"$TMP/dpkg.log" || { cat "$TMP/dpkg.log"; fail "dpkg -i"; }
dpkg_retry -i "$DEB" >"$TMP/dpkg.log" || { cat "$TMP/dpkg.log"; fail "dpkg -i a second time"; }
[ "$(status)" = 'install ok installed' ] || fail "not installed"
say "installed: $(dpkg-query -W -f='${Package} ${Version}' "$PKG")"
[ "$(/usr/bin/app-server --version | awk '{ print $NF }')" = "$VERSION" ] ||
  fail "/usr/bin/app-server --version is not $VERSION"
for f in /usr/share/man/man1/app-server.1.gz /usr/share/man/man1/app-client.1.gz; do
  gzip -t "$f" || fail "$f is not a good gzip file"
  zcat "$f" >"$TMP/page"
  grep -q '^\.TH ' "$TMP/page" || fail "$f is not a manual page"
done

# ---- 4. the installed programs ----------------------------------------------------------------------------
/usr/bin/app-server "$HOST" 0 2>"$TMP/server.log" &
SERVER_PID=$!
PORT=
for _ in $(seq 300); do # 30 s at most
  PORT=$(sed -n 's/.*listening on [^ ]*:\([0-9][0-9]*\).*/\1/p;T;q' "$TMP/server.log")
  [ -n "$PORT" ] && break
  kill -0 "$SERVER_PID" 2>/dev/null || break
  sleep 0.1
done
[ -n "$PORT" ] || { cat "$TMP/server.log"; fail "/usr/bin/app-server did not start"; }
answer=$(/usr/bin/app-client --timeout 10 "$HOST" "$PORT" search morpheus) ||
  fail "/usr/bin/app-client search morpheus failed"
[ "$answer" = "Follow the white rabbit. 🐰" ] || fail "app-client search morpheus said: $answer"
[ "$(/usr/bin/app-client --timeout 10 "$HOST" "$PORT" ping)" = pong ] || fail "no pong"
say "/usr/bin/app-server on port $PORT answered /usr/bin/app-client: $answer"

# ---- 5. the unit ----------------------------------------------------------------------------------------------
# --man=no: the manual page is checked above, and man itself need not be installed.
if ! systemd-analyze verify --man=no /usr/lib/systemd/system/appmsg-server.service \
  >"$TMP/verify.log" 2>&1 || grep -q appmsg "$TMP/verify.log"; then
  cat "$TMP/verify.log"
  fail "systemd-analyze verify appmsg-server.service"
fi
say "systemd-analyze verify accepts appmsg-server.service"

# ---- 6. a program built against the installed package ---------------------------------------------------------
mkdir -p "$TMP/consumer"
cat >"$TMP/consumer/ask.c" <<'EOF'
/* Asks app-server one question through the installed library. */
#include <appmsg/appmsg.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
  if (argc != 3 || strcmp(APPMSG_VERSION_STRING, appmsg_version()) != 0)
    return 2;
  struct appmsg_answer a;
  int rc = appmsg_ask(argv[1], argv[2], 10000, &a, "search", "value", "ring", NULL);
  if (rc == 0 && a.result)
    puts(a.result);
  else
    fprintf(stderr, "ask: %s\n", appmsg_strerror(rc));
  appmsg_answer_cleanup(&a);
  return rc == 0 ? 0 : 1;
}
EOF
cat >"$TMP/consumer/CMakeLists.txt" <<'EOF'
cmake_minimum_required(VERSION 3.18)
project(ask LANGUAGES C)
find_package(appmsg 0.2 REQUIRED)
add_executable(ask-shared ask.c)
target_link_libraries(ask-shared PRIVATE appmsg::appmsg)
add_executable(ask-static ask.c)
target_link_libraries(ask-static PRIVATE appmsg::appmsg_static)
EOF
(cd "$TMP/consumer" && cmake -S . -B build >/dev/null && cmake --build build) >"$TMP/consumer.log" 2>&1 ||
  { cat "$TMP/consumer.log"; fail "building against find_package(appmsg)"; }
cc -o "$TMP/consumer/ask-pc" "$TMP/consumer/ask.c" $(pkg-config --cflags --libs appmsg) ||
  fail "building against pkg-config appmsg"
# Statically: libappmsg.a, then what it needs (pkg-config --static: its Requires.private).
cc -o "$TMP/consumer/ask-pc-static" "$TMP/consumer/ask.c" $(pkg-config --cflags appmsg) \
  -Wl,-Bstatic -lappmsg -Wl,-Bdynamic \
  $(pkg-config --static --libs appmsg | tr ' ' '\n' | grep -vx -- -lappmsg | tr '\n' ' ') ||
  fail "building against pkg-config appmsg, statically"
expected="In the caves beneath the Misty Mountains. 💍"
for prog in build/ask-shared build/ask-static ask-pc ask-pc-static; do
  out=$("$TMP/consumer/$prog" "$HOST" "$PORT") || fail "$prog failed"
  [ "$out" = "$expected" ] || fail "$prog said: $out"
  readelf -d "$TMP/consumer/$prog" >"$TMP/dynamic"
  if grep -q 'NEEDED.*libappmsg' "$TMP/dynamic"; then
    linked=shared
    # (with a merged /usr, the loader may name it /lib/...: the same file)
    loaded=$(ldd "$TMP/consumer/$prog" | awk '$1 == "libappmsg.so.0" { print $3 }')
    [ -n "$loaded" ] && [ "$(readlink -f "$loaded")" = "$(readlink -f "$LIBDIR/libappmsg.so.0")" ] ||
      fail "$prog does not load $LIBDIR/libappmsg.so.0 but '$loaded'"
  else
    linked=static
  fi
  case "$prog" in
    *static) [ "$linked" = static ] || fail "$prog is linked with the shared library" ;;
    *) [ "$linked" = shared ] || fail "$prog is not linked with the shared library" ;;
  esac
  say "$prog ($linked, $([ "${prog#build/}" = "$prog" ] && echo pkg-config || echo find_package)) answered: $out"
done
kill "$SERVER_PID"
wait "$SERVER_PID" || fail "app-server did not exit 0 on SIGTERM"
SERVER_PID=

# ---- 7. remove, then purge -------------------------------------------------------------------------------------
dpkg_retry -r "$PKG" >/dev/null || fail "dpkg -r"
[ "$(status)" = 'deinstall ok config-files' ] || fail "after dpkg -r: $(status)"
[ -f /etc/default/appmsg-server ] || fail "dpkg -r removed the conffile"
[ ! -e /usr/bin/app-server ] || fail "dpkg -r left /usr/bin/app-server"
dpkg_retry -P "$PKG" >/dev/null || fail "dpkg -P"
installed_here=0
[[ "$(status)" != *installed* ]] || fail "still installed: $(status)"
for f in $(cat "$TMP/files"); do
  case "$f" in
    */) ;;                                  # directories shared with other packages
    *) [ ! -e "$f" ] && [ ! -L "$f" ] || fail "$f is left after dpkg -P" ;;
  esac
done
[ ! -d /usr/include/appmsg ] && [ ! -d "$LIBDIR/cmake/appmsg" ] && [ ! -d /usr/share/doc/appmsg ] ||
  fail "directories of the package are left after dpkg -P"
say "removed and purged: nothing of $PKG is left"
say "every check passed"
