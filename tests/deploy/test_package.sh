#!/usr/bin/env bash
# The Debian package, built and used - by default without installing it on this machine:
#   1. configure and build a fresh build directory (prefix /usr), cpack -G DEB;
#   2. check the package: its files (owned by root, none writable by others), its dependencies
#      (and that this machine has them, as dpkg would check: dpkg-checkbuilddeps, read-only), its
#      control files (conffiles, shlibs, the ldconfig trigger, md5sums), and the maintainer
#      scripts with sh -n;
#   3. unpack it into a throwaway root (dpkg-deb -x and --control into a mktemp -d directory):
#      every file matches md5sums; run the unpacked app-server and ask it with the unpacked
#      app-client (search, ping), with LD_LIBRARY_PATH set to the root's library directory;
#      systemd-analyze verify a copy of the unit in which /usr/bin/app-server and
#      /etc/default/appmsg-server point into the root (verify wants ExecStart's program to
#      exist; they are the only files of the package the unit names - checked - and nothing
#      else in the copy differs); build a small program against the root with
#      find_package(appmsg) (CMAKE_PREFIX_PATH: the exported CMake files find their prefix from
#      where they are) and with pkg-config (PKG_CONFIG_PATH: appmsg.pc finds its prefix from
#      ${pcfiledir}), with the shared library and with the static one, and run each against
#      that app-server.  Each build proves where it got appmsg from: the CMake package or
#      appmsg.pc, the headers (the compiler's dependency file), the library linked (ld --trace)
#      and the library loaded (ldd) are all the root's, never /usr's - so an appmsg package
#      installed on the machine is neither used nor touched.
#   What this cannot prove: that dpkg -i itself accepts the package here (file conflicts with
#   other packages, files unpacked as root:root), that its maintainer scripts and the ldconfig
#   trigger work when dpkg runs them (they are only parsed: run, they would call systemctl and
#   remove a file under /etc on this machine), that the programs and the unit work from /usr
#   with the system's loader cache, and that dpkg -r keeps the conffile and dpkg -P leaves
#   nothing.  That is what the system install cycle below checks, when asked for.
# The default needs no root and changes nothing outside its temporary directory.  Loopback
# only; every wait is bounded.
#
# APPMSG_TEST_SYSTEM_INSTALL=1: after all of the above, the real cycle on this machine, as root
# (or with sudo without a password): dpkg -i (twice: a reinstall over itself works too); the
# installed programs, unit and find_package/pkg-config builds as above, from /usr; dpkg -r (the
# options file, a conffile, stays), then dpkg -P: nothing of it is left.  It refuses, and
# touches nothing, when dpkg knows an appmsg package it did not install (installed, or its
# configuration files left): that one may be someone's, and this run would replace and purge
# it.  (A run killed before it could purge leaves such a package: dpkg -P appmsg by hand.)  It
# purges the package it installed on the way out, whatever happens.
#
#   bash tests/deploy/test_package.sh          (APPMSG_SOURCE_DIR: the source tree; default: here)
#   APPMSG_TEST_SYSTEM_INSTALL=1 ctest --test-dir build -R deploy_package
set -euo pipefail

SRC=${APPMSG_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
PKG=appmsg
HOST=127.0.0.1
LIBDIR=/usr/lib/$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)
VERSION=$(sed -n 's/^project(appmsg VERSION \([0-9.]*\).*/\1/p' "$SRC/CMakeLists.txt")
# Where the consumer finds appmsg and its libraries is decided here, not by the caller's
# environment (checked below as well).
unset LD_LIBRARY_PATH PKG_CONFIG_PATH PKG_CONFIG_LIBDIR PKG_CONFIG_SYSROOT_DIR CMAKE_PREFIX_PATH \
  appmsg_DIR appmsg_ROOT APPMSG_ROOT

say() { printf 'package: %s\n' "$*"; }
fail() {
  printf 'package: FAILED: %s\n' "$*" >&2
  exit 1
}

case "${APPMSG_TEST_SYSTEM_INSTALL:-0}" in
  1 | yes | true | on) SYSTEM_INSTALL=1 ;;
  0 | no | false | off | '') SYSTEM_INSTALL=0 ;;
  *) fail "APPMSG_TEST_SYSTEM_INSTALL is '$APPMSG_TEST_SYSTEM_INSTALL': 1 (install on this machine) or 0" ;;
esac

# dpkg's status of the package: empty when dpkg has never heard of it.
status() { dpkg-query -W -f='${Status}' "$PKG" 2>/dev/null || true; }
# Whether dpkg has anything of it: installed, half-installed, or its configuration files left.
known() {
  local s
  s=$(status)
  [ -n "$s" ] && [[ "$s" != *not-installed ]]
}
refuse_if_known() {
  known || return 0
  local what
  what="$(status), version $(dpkg-query -W -f='${Version}' "$PKG" 2>/dev/null || true)"
  fail "APPMSG_TEST_SYSTEM_INSTALL=1, but dpkg already has an $PKG package ($what) that this run did not install; it is left as it is.  Remove it yourself (dpkg -P $PKG) if it is not needed, or run without APPMSG_TEST_SYSTEM_INSTALL"
}

for tool in cmake cpack dpkg dpkg-deb dpkg-shlibdeps dpkg-checkbuilddeps pkg-config \
  systemd-analyze gzip md5sum readelf ldd cc; do
  command -v "$tool" >/dev/null || fail "$tool is missing: bash scripts/deps.sh dpkg-dev systemd"
done
SUDO=
if [ "$SYSTEM_INSTALL" = 1 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    sudo -n true 2>/dev/null ||
      fail "APPMSG_TEST_SYSTEM_INSTALL=1: installing a package needs root (or sudo without a password)"
    SUDO=sudo
  fi
  refuse_if_known # before the build, so that it says so at once
fi

TMP=$(mktemp -d /tmp/appmsg-package.XXXXXX)
ROOT=$TMP/root # the throwaway root the package is unpacked into
SERVER_PID=
installed_here=0
cleanup() {
  local rc=$?
  if [ -n "$SERVER_PID" ]; then
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  # Only ever the package this run installed.
  if [ "$installed_here" = 1 ] && known; then
    say "purging the $PKG package this run installed"
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

# A command's output goes to a file, whole, before it is searched: "cmd | grep -q" under
# pipefail fails when grep stops reading at its first match and cmd is killed by SIGPIPE.

# The real path of the libappmsg an ld --trace log (file $1) shows the linker opened.
linked_from() {
  local f
  f=$(sed -n '/libappmsg\.\(a\|so\)/{s/^.*(\(.*\))$/\1/;p;q}' "$1")
  [ -n "$f" ] && readlink -f "$f"
}
# The real paths of the directories of the appmsg/*.h headers a compiler dependency file ($1)
# names, one a line.
headers_from() {
  local f
  tr ' \\' '\n\n' <"$1" | grep '/appmsg/[^/]*\.h$' | while read -r f; do
    dirname "$(readlink -f "$f")"
  done | sort -u
}

# Starts "$@" (an app-server, its last word; log: $TMP/server.log) on HOST, port 0 (the kernel
# picks one), waits (30 s at most) for its "listening on HOST:PORT" line: PORT, SERVER_PID.
start_server() {
  local what=${!#}
  : >"$TMP/server.log"
  "$@" "$HOST" 0 2>"$TMP/server.log" &
  SERVER_PID=$!
  PORT=
  local deadline=$((SECONDS + 30))
  while [ -z "$PORT" ]; do
    PORT=$(sed -n 's/.*listening on [^ ]*:\([0-9][0-9]*\).*/\1/p;T;q' "$TMP/server.log")
    [ -n "$PORT" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ] ||
      { cat "$TMP/server.log"; fail "$what did not start listening"; }
    sleep 0.1
  done
}
# SIGTERM: app-server drains (10 s at most) and exits 0; 30 s at most, then SIGKILL and fail.
stop_server() {
  local deadline=$((SECONDS + 30)) rc=0
  kill -TERM "$SERVER_PID"
  while kill -0 "$SERVER_PID" 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      kill -KILL "$SERVER_PID" 2>/dev/null || true
      wait "$SERVER_PID" 2>/dev/null || true
      SERVER_PID=
      fail "app-server did not exit within 30 s of SIGTERM"
    fi
    sleep 0.1
  done
  wait "$SERVER_PID" || rc=$?
  SERVER_PID=
  [ "$rc" = 0 ] || { cat "$TMP/server.log"; fail "app-server exited $rc on SIGTERM, not 0"; }
}

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
dpkg-deb -c "$DEB" >"$TMP/listing"
awk '{ print $6 }' "$TMP/listing" | sed 's|^\./|/|' >"$TMP/files"
for f in /usr/bin/app-server /usr/bin/app-client /usr/bin/kv-server /usr/bin/kv-client \
  "$LIBDIR/libappmsg.so.0" "$LIBDIR/libappmsg.so" "$LIBDIR/libappmsg.a" \
  "$LIBDIR/pkgconfig/appmsg.pc" "$LIBDIR/cmake/appmsg/appmsgConfig.cmake" \
  "$LIBDIR/cmake/appmsg/appmsgTargets.cmake" /usr/include/appmsg/appmsg.h \
  /usr/include/appmsg/version.h /usr/share/man/man1/app-server.1.gz \
  /usr/share/man/man1/app-client.1.gz /usr/lib/systemd/system/appmsg-server.service \
  /etc/default/appmsg-server /usr/share/doc/appmsg/examples/haproxy.cfg; do
  grep -qx "$f" "$TMP/files" || fail "$f is not in the package"
done
# dpkg -i gives the files the owner and mode the package says (dpkg-deb -x, below, cannot).
awk '$2 != "root/root" { print }' "$TMP/listing" >"$TMP/odd"
[ ! -s "$TMP/odd" ] || { cat "$TMP/odd"; fail "files not owned by root/root in the package"; }
awk '$1 !~ /^l/ && ($1 ~ /^.....w/ || $1 ~ /^........w/) { print }' "$TMP/listing" >"$TMP/odd"
[ ! -s "$TMP/odd" ] || { cat "$TMP/odd"; fail "files writable by group or others in the package"; }
depends=$(dpkg-deb -f "$DEB" Depends)
case "$depends" in
  *libssl3*) ;;
  *) fail "Depends does not name libssl3: $depends" ;;
esac
case "$depends" in
  *libcjson*) fail "Depends names libcjson, which the library no longer uses: $depends" ;;
esac
# The dependencies are there, as dpkg -i would require (dpkg's own check of a dependency list
# against its database, read-only; it wants a control file, any will do).
printf 'Source: appmsg-depends\n\nPackage: appmsg-depends\nArchitecture: any\n' >"$TMP/control"
dpkg-checkbuilddeps -d "$depends" "$TMP/control" >"$TMP/deps.log" 2>&1 ||
  { cat "$TMP/deps.log"; fail "this machine lacks dependencies of the package: $depends"; }
[ "$(dpkg-deb -f "$DEB" Package)" = "$PKG" ] || fail "the package is not called $PKG"
[ "$(dpkg-deb -f "$DEB" Version)" = "$VERSION" ] || fail "package version is not $VERSION"
[ "$(dpkg-deb -f "$DEB" Architecture)" = "$(dpkg --print-architecture)" ] ||
  fail "package architecture is not $(dpkg --print-architecture)"

# ---- 3. unpacked: the control files ---------------------------------------------------------------
mkdir "$ROOT" "$TMP/control.d"
dpkg-deb -x "$DEB" "$ROOT"
dpkg-deb --control "$DEB" "$TMP/control.d"
CONTROL=$TMP/control.d
for f in control md5sums conffiles shlibs triggers; do
  [ -f "$CONTROL/$f" ] || fail "no $f control file"
done
[ "$(cat "$CONTROL/conffiles")" = /etc/default/appmsg-server ] ||
  fail "conffiles is not just /etc/default/appmsg-server: $(cat "$CONTROL/conffiles")"
grep -qx "libappmsg 0 $PKG (>= $VERSION)" "$CONTROL/shlibs" ||
  fail "shlibs is not 'libappmsg 0 $PKG (>= $VERSION)': $(cat "$CONTROL/shlibs")"
grep -qx 'activate-noawait ldconfig' "$CONTROL/triggers" || fail "no ldconfig trigger"
(cd "$ROOT" && md5sum -c --quiet "$CONTROL/md5sums") >"$TMP/md5.log" 2>&1 ||
  { cat "$TMP/md5.log"; fail "unpacked files do not match md5sums"; }
# Maintainer scripts: executable, /bin/sh, and sh parses them.  Only parsed: run here, they
# would talk to this machine's systemd and remove a file under /etc.
scripts=
for s in preinst postinst prerm postrm; do
  [ -e "$CONTROL/$s" ] || continue
  [ -x "$CONTROL/$s" ] || fail "maintainer script $s is not executable"
  [ "$(head -1 "$CONTROL/$s")" = '#!/bin/sh' ] || fail "maintainer script $s does not start #!/bin/sh"
  sh -n "$CONTROL/$s" || fail "maintainer script $s: sh -n fails"
  scripts="$scripts $s"
done
say "contents, Depends ($depends, all present), control files and maintainer scripts ($scripts ) as expected"

# ---- 4-6. the programs, the unit, and programs built against them ----------------------------------
# use_tree R LABEL: the package's files under R ($ROOT, unpacked; or "" when installed).
use_tree() {
  local R=$1 label=$2
  local lib=$R$LIBDIR bin=$R/usr/bin
  # Unpacked, the loader finds the package's shared library through LD_LIBRARY_PATH (the
  # programs carry no run path); installed, through its own cache - never through both.
  local -a run=(env -u LD_LIBRARY_PATH)
  [ -z "$R" ] || run=(env "LD_LIBRARY_PATH=$lib")

  [ "$("${run[@]}" "$bin/app-server" --version | awk '{ print $NF }')" = "$VERSION" ] ||
    fail "$bin/app-server --version is not $VERSION"
  for f in "$R/usr/share/man/man1/app-server.1.gz" "$R/usr/share/man/man1/app-client.1.gz"; do
    gzip -t "$f" || fail "$f is not a good gzip file"
    zcat "$f" >"$TMP/page"
    grep -q '^\.TH ' "$TMP/page" || fail "$f is not a manual page"
  done
  # Every library the programs need is found (libappmsg, if they take it shared, in the tree).
  for f in $(grep '^/usr/bin/.' "$TMP/files") "$LIBDIR/libappmsg.so.0"; do
    f=$R$f
    "${run[@]}" ldd "$f" >"$TMP/ldd" || fail "ldd $f"
    ! grep -q 'not found' "$TMP/ldd" || { cat "$TMP/ldd"; fail "$f needs a library that is not found"; }
    awk '$1 == "libappmsg.so.0" { print $3 }' "$TMP/ldd" >"$TMP/loaded"
    [ ! -s "$TMP/loaded" ] || [ "$(readlink -f "$(cat "$TMP/loaded")")" = "$(readlink -f "$lib/libappmsg.so.0")" ] ||
      fail "$f loads $(cat "$TMP/loaded"), not $lib/libappmsg.so.0"
  done

  # -- the programs --
  start_server "${run[@]}" "$bin/app-server"
  local answer
  answer=$("${run[@]}" "$bin/app-client" --timeout 10 "$HOST" "$PORT" search morpheus) ||
    fail "$bin/app-client search morpheus failed"
  [ "$answer" = "Follow the white rabbit. 🐰" ] || fail "app-client search morpheus said: $answer"
  [ "$("${run[@]}" "$bin/app-client" --timeout 10 "$HOST" "$PORT" ping)" = pong ] || fail "no pong"
  say "$label: $bin/app-server on port $PORT answered $bin/app-client: $answer"

  # -- the unit --
  # --man=no: the manual pages are checked above, and man itself need not be installed.  verify
  # checks that ExecStart's program exists; unpacked, it is not at /usr/bin/app-server, so what
  # is verified is a copy of the unit in which the package's paths (/usr/bin/app-server in
  # ExecStart=, /etc/default/appmsg-server in EnvironmentFile=) point into the root.  Nothing
  # else is changed, and no path of the package may be left in a setting of the copy.
  local unit=$R/usr/lib/systemd/system/appmsg-server.service
  if [ -n "$R" ]; then
    mkdir -p "$TMP/unit"
    sed -e "s#^\(ExecStart=[-@:+!]*\)/usr/bin/app-server\([[:space:]]\|\$\)#\1$R/usr/bin/app-server\2#" \
      -e "s#^\(EnvironmentFile=-\?\)/etc/default/appmsg-server\$#\1$R/etc/default/appmsg-server#" \
      "$unit" >"$TMP/unit/appmsg-server.service"
    unit=$TMP/unit/appmsg-server.service
    grep -q "^ExecStart=[-@:+!]*$R/usr/bin/app-server" "$unit" ||
      fail "appmsg-server.service: ExecStart= is not /usr/bin/app-server any more: update this test"
    grep -v '^[[:space:]]*[#;]' "$unit" | { grep -o '/[^[:space:]"]*' || true; } | sort -u >"$TMP/paths"
    grep -vx '.*/' "$TMP/files" | grep -Fx -f "$TMP/paths" >"$TMP/left" || true
    [ ! -s "$TMP/left" ] ||
      { cat "$TMP/left"; fail "appmsg-server.service names these files of the package: rewrite them into the root too"; }
  fi
  if ! systemd-analyze verify --man=no "$unit" >"$TMP/verify.log" 2>&1 ||
    grep -q appmsg "$TMP/verify.log"; then
    cat "$TMP/verify.log"
    fail "systemd-analyze verify $unit"
  fi
  say "$label: systemd-analyze verify accepts appmsg-server.service${R:+ (a copy, paths into the root)}"

  # -- a program built against the tree --
  local dir=$TMP/consumer-$label
  mkdir -p "$dir"
  cp "$TMP/consumer/ask.c" "$TMP/consumer/CMakeLists.txt" "$dir/"
  # ld --trace: which libappmsg the linker opened.
  (cd "$dir" && cmake -S . -B build ${R:+"-DCMAKE_PREFIX_PATH=$R/usr"} \
    -DCMAKE_EXE_LINKER_FLAGS=-Wl,--trace) >"$dir/configure.log" 2>&1 ||
    { cat "$dir/configure.log"; fail "$label: configuring against find_package(appmsg)"; }
  # The CMake package, its targets' files and include directory, all from the tree.
  [ "$(readlink -f "$(sed -n 's/^appmsg_DIR:[A-Z]*=//p' "$dir/build/CMakeCache.txt")")" = \
    "$(readlink -f "$lib/cmake/appmsg")" ] ||
    fail "$label: find_package(appmsg) did not find $lib/cmake/appmsg"
  while read -r target location include; do
    [ "$(readlink -f "$location")" = "$(readlink -f "$lib")/$(basename "$location")" ] &&
      [ "$(readlink -f "$include")" = "$(readlink -f "$R/usr/include")" ] ||
      fail "$label: $target imports $location with $include, not from $R/usr"
  done <"$dir/build/imported.txt"
  for t in ask-shared ask-static; do
    cmake --build "$dir/build" --target "$t" >"$dir/$t.trace" 2>&1 ||
      { cat "$dir/$t.trace"; fail "$label: building $t against find_package(appmsg)"; }
    find "$dir/build" -name 'ask.c.o.d' -path "*/$t.dir/*" -exec cat {} + >"$dir/$t.d"
  done
  # pkg-config, the library shared, then static: libappmsg.a, then what it needs (pkg-config
  # --static: its Requires.private).  PKG_CONFIG_PATH, not PKG_CONFIG_SYSROOT_DIR: appmsg.pc
  # needs no sysroot (its prefix is where it is), and a sysroot would also move the
  # system's openssl, which are not in the root, into it.
  local -a pc=(env -u PKG_CONFIG_PATH pkg-config)
  [ -z "$R" ] || pc=(env "PKG_CONFIG_PATH=$lib/pkgconfig" pkg-config)
  [ "$(readlink -f "$("${pc[@]}" --path appmsg)")" = "$(readlink -f "$lib/pkgconfig/appmsg.pc")" ] ||
    fail "$label: pkg-config appmsg is not $lib/pkgconfig/appmsg.pc"
  cc -o "$dir/ask-pc" "$dir/ask.c" -MD -MF "$dir/ask-pc.d" $("${pc[@]}" --cflags --libs appmsg) \
    -Wl,--trace >"$dir/ask-pc.trace" 2>&1 ||
    { cat "$dir/ask-pc.trace"; fail "$label: building against pkg-config appmsg"; }
  cc -o "$dir/ask-pc-static" "$dir/ask.c" -MD -MF "$dir/ask-pc-static.d" \
    $("${pc[@]}" --cflags appmsg) $("${pc[@]}" --libs-only-L appmsg) -Wl,-Bstatic -lappmsg -Wl,-Bdynamic \
    $("${pc[@]}" --static --libs appmsg | tr ' ' '\n' | grep -vx -- -lappmsg | tr '\n' ' ') \
    -Wl,--trace >"$dir/ask-pc-static.trace" 2>&1 ||
    { cat "$dir/ask-pc-static.trace"; fail "$label: building against pkg-config appmsg, statically"; }

  local expected="In the caves beneath the Misty Mountains. 💍" prog exe out linked want from
  for prog in ask-shared ask-static ask-pc ask-pc-static; do
    exe=$dir/$prog
    [ -x "$exe" ] || exe=$dir/build/$prog
    from="pkg-config; its appmsg.pc"
    [ "${prog#ask-pc}" != "$prog" ] || from="find_package; its CMake package"
    case "$prog" in
      *static) want=$lib/libappmsg.a ;;
      *) want=$lib/libappmsg.so ;;
    esac
    tr ' \\' '\n\n' <"$dir/$prog.d" >"$TMP/deps"
    grep -q '/appmsg/appmsg\.h$' "$TMP/deps" ||
      fail "$label: $prog: no appmsg/appmsg.h in its dependencies"
    [ "$(headers_from "$dir/$prog.d")" = "$(readlink -f "$R/usr/include/appmsg")" ] ||
      fail "$label: $prog was compiled with appmsg headers from $(headers_from "$dir/$prog.d"), not $R/usr/include/appmsg"
    [ "$(linked_from "$dir/$prog.trace")" = "$(readlink -f "$want")" ] ||
      fail "$label: $prog was linked with $(linked_from "$dir/$prog.trace"), not $want"
    out=$("${run[@]}" "$exe" "$HOST" "$PORT") || fail "$label: $prog failed"
    [ "$out" = "$expected" ] || fail "$label: $prog said: $out"
    readelf -d "$exe" >"$TMP/dynamic"
    if grep -q 'NEEDED.*libappmsg' "$TMP/dynamic"; then
      linked=shared
      # (with a merged /usr, the loader may name it /lib/...: the same file)
      "${run[@]}" ldd "$exe" >"$TMP/ldd"
      loaded=$(awk '$1 == "libappmsg.so.0" { print $3 }' "$TMP/ldd")
      [ -n "$loaded" ] && [ "$(readlink -f "$loaded")" = "$(readlink -f "$lib/libappmsg.so.0")" ] ||
        fail "$label: $prog does not load $lib/libappmsg.so.0 but '$loaded'"
    else
      linked=static
    fi
    case "$prog" in
      *static) [ "$linked" = static ] || fail "$label: $prog is linked with the shared library" ;;
      *) [ "$linked" = shared ] || fail "$label: $prog is not linked with the shared library" ;;
    esac
    say "$label: $prog ($linked, $from, headers and library from ${R:-/usr}) answered: $out"
  done
  stop_server
}

mkdir -p "$TMP/consumer"
cat >"$TMP/consumer/ask.c" <<'EOF'
/* Asks app-server one question through the package's library. */
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
# For the test: where the imported targets' files and headers are.
file(WRITE ${CMAKE_BINARY_DIR}/imported.txt "")
foreach(t appmsg::appmsg appmsg::appmsg_static)
  get_target_property(location ${t} LOCATION)
  get_target_property(include ${t} INTERFACE_INCLUDE_DIRECTORIES)
  file(APPEND ${CMAKE_BINARY_DIR}/imported.txt "${t} ${location} ${include}\n")
endforeach()
EOF

use_tree "$ROOT" unpacked

if [ "$SYSTEM_INSTALL" = 0 ]; then
  say "not installed on this machine (APPMSG_TEST_SYSTEM_INSTALL=1 does that too)"
  say "every check passed"
  exit 0
fi

# ---- 7. installed on this machine (APPMSG_TEST_SYSTEM_INSTALL=1) ------------------------------------
refuse_if_known # again: one may have come while this run built
installed_here=1
dpkg_retry -i "$DEB" >"$TMP/dpkg.log" || { cat "$TMP/dpkg.log"; fail "dpkg -i"; }
dpkg_retry -i "$DEB" >"$TMP/dpkg.log" || { cat "$TMP/dpkg.log"; fail "dpkg -i a second time"; }
[ "$(status)" = 'install ok installed' ] || fail "not installed"
say "installed: $(dpkg-query -W -f='${Package} ${Version}' "$PKG")"
use_tree "" installed

# ---- 8. remove, then purge -------------------------------------------------------------------------------------
dpkg_retry -r "$PKG" >/dev/null || fail "dpkg -r"
[ "$(status)" = 'deinstall ok config-files' ] || fail "after dpkg -r: $(status)"
[ -f /etc/default/appmsg-server ] || fail "dpkg -r removed the conffile"
[ ! -e /usr/bin/app-server ] || fail "dpkg -r left /usr/bin/app-server"
dpkg_retry -P "$PKG" >/dev/null || fail "dpkg -P"
installed_here=0
! known || fail "still known to dpkg: $(status)"
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
