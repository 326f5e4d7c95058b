#!/usr/bin/env bash
# Cross-builds appmsg's test and benchmark dependencies for Windows x86_64 (mingw-w64) from
# Debian's own source packages (with Debian's patches), as static libraries with .pc files:
#   cjson    -> lib/libcjson.a, include/cjson/cJSON.h, lib/pkgconfig/libcjson.pc
#   check    -> lib/libcheck.a (+ libcheck_pic.a, which Debian's check.pc names),
#               include/check.h, lib/pkgconfig/check.pc
#   openssl  -> lib/libssl.a, lib/libcrypto.a, include/openssl/, openssl.pc, libssl.pc,
#               libcrypto.pc           (only with --with-openssl; ~90 s on 2 cores)
#
# Usage: scripts/mingw-deps.sh [--with-openssl] [PREFIX]
#   PREFIX defaults to build-mingw/deps/prefix in the repository (where
#   cmake/mingw-w64-x86_64.cmake looks by default).  Sources are cached in PREFIX/../src,
#   build trees in PREFIX/../build.  A package is built once: PREFIX/.stamps/<package>
#   records it; delete that file (or the prefix) to rebuild, e.g. after a Debian update.
#
# Runs as root or with sudo.  It may:
#   - install missing build tools with apt-get (cmake, make, dpkg-dev, perl, the
#     mingw-w64 -posix compilers), saying which;
#   - add /etc/apt/sources.list.d/appmsg-deb-src.sources, a deb-src copy of the deb
#     entries of /etc/apt/sources.list.d/debian.sources (same URIs, suites, components,
#     key), if `apt-cache showsrc` finds no source package; `apt-get update` runs only
#     then, or once when a source package is not found.
set -euo pipefail

say() { echo "mingw-deps: $*" >&2; }
die() { say "error: $*"; exit 1; }

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

with_openssl=0
prefix=""
for arg in "$@"; do
  case $arg in
    --with-openssl) with_openssl=1 ;;
    -h|--help) usage; exit 0 ;;
    -*) die "unknown option $arg (see --help)" ;;
    *) [ -z "$prefix" ] || die "more than one prefix given"; prefix=$arg ;;
  esac
done

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
toolchain=$repo_root/cmake/mingw-w64-x86_64.cmake
prefix=${prefix:-$repo_root/build-mingw/deps/prefix}
mkdir -p "$prefix"
prefix=$(cd "$prefix" && pwd)
top=$(dirname "$prefix")
src_root=$top/src
build_root=$top/build
stamps=$prefix/.stamps

packages=(cjson check)
# http_parser, for the metrics endpoint (src/http.c): lib/libhttp_parser.a, include/http_parser.h.
packages+=(http-parser)
[ "$with_openssl" -eq 0 ] || packages+=(openssl)

# Fast path: everything asked for is built already.
all_built() {
  local p
  for p in "${packages[@]}"; do [ -f "$stamps/$p" ] || return 1; done
}
if all_built; then
  say "up to date in $prefix ($(cd "$stamps" && cat "${packages[@]}" | tr '\n' ' '))"
  exit 0
fi

# One run at a time per prefix.
exec 9>"$top/.lock"
flock 9

triplet=x86_64-w64-mingw32
jobs=$(nproc 2>/dev/null || echo 2)
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
apt_env=(env DEBIAN_FRONTEND=noninteractive)

# ---- build tools -------------------------------------------------------------------------
need=()
command -v "$triplet-gcc-posix" >/dev/null || need+=(gcc-mingw-w64-x86-64-posix)
command -v "$triplet-ar" >/dev/null || need+=(binutils-mingw-w64-x86-64)
[ -f "/usr/$triplet/include/windows.h" ] || need+=(mingw-w64-x86-64-dev)
command -v cmake >/dev/null || need+=(cmake)
command -v make >/dev/null || need+=(make)
command -v dpkg-source >/dev/null || need+=(dpkg-dev)
if [ "$with_openssl" -eq 1 ]; then
  # OpenSSL's Configure needs the full perl (not just perl-base).
  dpkg-query -W -f='${Status}' perl 2>/dev/null | grep -q "install ok installed" || need+=(perl)
fi
if [ ${#need[@]} -gt 0 ]; then
  say "installing build tools with apt-get: ${need[*]}"
  $sudo "${apt_env[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null ||
    { $sudo "${apt_env[@]}" apt-get update -qq &&
      $sudo "${apt_env[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }
fi

# ---- Debian source packages --------------------------------------------------------------
debsrc_file=/etc/apt/sources.list.d/appmsg-deb-src.sources
updated=0

# (grep without -q: with pipefail, -q quitting early would fail apt-cache with SIGPIPE.)
have_source() {
  apt-cache showsrc --only-source "$1" 2>/dev/null | grep "^Package: $1\$" >/dev/null
}

# Writes a deb-src twin of every "Types: deb" stanza of debian.sources (comments dropped).
add_deb_src() {
  local main=/etc/apt/sources.list.d/debian.sources
  [ -f "$main" ] || die "no deb-src entry and no $main to copy one from; add a deb-src line for your Debian mirror"
  say "adding $debsrc_file (deb-src for the archives of $main)"
  local tmp
  tmp=$(mktemp)
  awk 'BEGIN { RS = ""; ORS = "" }
       /(^|\n)Types:[^\n]*[ \t]deb([ \t\n]|$)/ {
         n = split($0, line, "\n")
         for (i = 1; i <= n; i++) {
           if (line[i] ~ /^#/) continue
           if (line[i] ~ /^Types:/) line[i] = "Types: deb-src"
           print line[i] "\n"
         }
         print "\n"
       }' "$main" >"$tmp"
  [ -s "$tmp" ] || { rm -f "$tmp"; die "no 'Types: deb' entry in $main"; }
  $sudo install -m 644 "$tmp" "$debsrc_file"
  rm -f "$tmp"
}

# A full update: an update limited to one sources file would drop the other lists.
apt_update() {
  say "apt-get update"
  $sudo "${apt_env[@]}" apt-get update -qq
  updated=1
}

ensure_source_index() {  # $1 = source package
  have_source "$1" && return 0
  if [ ! -f "$debsrc_file" ]; then add_deb_src; apt_update
  elif [ "$updated" -eq 0 ]; then apt_update
  fi
  have_source "$1" || die "apt cannot find the source package $1 (deb-src entries: $debsrc_file)"
}

# Downloads (apt-get source --download-only, which checks the files against the signed
# index) and unpacks with Debian's patches applied (dpkg-source -x).  Tries the newest
# version first, then older ones of the configured suites (a mirror may lag the index).
# Prints the unpacked directory.
fetch_source() {  # $1 = source package
  local pkg=$1 ver dsc dir tmp
  mkdir -p "$src_root/$pkg"
  local sandbox=()
  [ "$(id -u)" -ne 0 ] || sandbox=(-o APT::Sandbox::User=root)  # no "unsandboxed" notice
  for ver in $(apt-cache showsrc --only-source "$pkg" | awk '/^Version:/ { print $2 }' |
               sort -u | sort -rV); do
    dsc=$src_root/$pkg/${pkg}_${ver#*:}.dsc
    dir=$src_root/$pkg/${pkg}_${ver#*:}
    if [ -d "$dir" ]; then echo "$dir"; return 0; fi
    if [ ! -f "$dsc" ]; then
      tmp=$(mktemp -d "$src_root/$pkg/.download.XXXXXX")
      say "downloading source $pkg $ver"
      if ! (cd "$tmp" && apt-get source -qq --download-only "${sandbox[@]}" "$pkg=$ver" >/dev/null); then
        say "$pkg $ver could not be downloaded; trying an older version"
        rm -rf "$tmp"; continue
      fi
      mv "$tmp"/* "$src_root/$pkg/"; rmdir "$tmp"
    fi
    say "unpacking $pkg $ver (with Debian's patches)"
    rm -rf "$dir.tmp"
    # --no-check: the files were verified by apt against the signed Sources index; the
    # .dsc signature itself could only be checked with debian-keyring installed.
    dpkg-source --no-check -x "$dsc" "$dir.tmp" >/dev/null
    mv "$dir.tmp" "$dir"
    echo "$dir"; return 0
  done
  die "no version of the source package $pkg could be downloaded"
}

# ---- builds ------------------------------------------------------------------------------
cmake_build() {  # $1 = name, $2 = source dir, rest = cmake options
  local name=$1 src=$2; shift 2
  local b=$build_root/$name
  rm -rf "$b"
  cmake -S "$src" -B "$b" -G "Unix Makefiles" --log-level=WARNING \
    -DCMAKE_TOOLCHAIN_FILE="$toolchain" -DAPPMSG_MINGW_PREFIX="$prefix" \
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$prefix" -DCMAKE_INSTALL_LIBDIR=lib \
    -DBUILD_SHARED_LIBS=OFF "$@" >"$b.log" 2>&1 ||
    { tail -n 30 "$b.log" >&2; die "configuring $name failed (log: $b.log)"; }
  { cmake --build "$b" -j "$jobs" && cmake --install "$b"; } >>"$b.log" 2>&1 ||
    { tail -n 30 "$b.log" >&2; die "building $name failed (log: $b.log)"; }
}

build_cjson() {  # $1 = source dir
  # No ENABLE_CUSTOM_COMPILER_FLAGS: its -Werror is for cJSON's own CI, not for us.
  cmake_build cjson "$1" -DENABLE_CJSON_TEST=OFF -DENABLE_CJSON_UTILS=OFF \
    -DENABLE_CUSTOM_COMPILER_FLAGS=OFF -DENABLE_TARGET_EXPORT=OFF
}

build_check() {  # $1 = source dir
  # Check's CMake build: no autotools needed, and it reuses the toolchain file.  Without fork() on Windows, Check runs every test in the runner's
  # process (CK_NOFORK); CK_FORK=yes is ignored.  Debian's patched check.pc links
  # -lcheck_pic (debian/rules installs a second, -fPIC copy); the same copy here.
  # Its CMake build always makes a DLL too (libcheck.dll + import library libcheck.dll.a,
  # which ld would prefer to libcheck.a for -lcheck), and a CMake package naming both: the
  # prefix is static-only, so those go.
  cmake_build check "$1" -DBUILD_TESTING=OFF -DCHECK_ENABLE_TESTS=OFF
  cp "$prefix/lib/libcheck.a" "$prefix/lib/libcheck_pic.a"
  rm -rf "$prefix/lib/libcheck.dll.a" "$prefix/bin/libcheck.dll" "$prefix/lib/cmake/check"
}

build_openssl() {  # $1 = source dir
  local b=$build_root/openssl
  rm -rf "$b"; mkdir -p "$b"
  # mingw64: OpenSSL's own target.  --cross-compile-prefix + CC=gcc-posix gives
  # x86_64-w64-mingw32-gcc-posix (same thread model as the toolchain file), ar, ranlib,
  # windres.  3.0 has neither "no-docs" nor "no-apps": building only the libraries
  # (build_libs) and installing with install_dev skips the programs and the docs.
  (cd "$b" && CC=gcc-posix "$1/Configure" mingw64 --cross-compile-prefix="$triplet-" \
     --prefix="$prefix" --libdir=lib --openssldir="$prefix/ssl" \
     no-shared no-module no-tests) >"$b.log" 2>&1 ||
    { tail -n 30 "$b.log" >&2; die "configuring openssl failed (log: $b.log)"; }
  { make -C "$b" -j "$jobs" build_libs && make -C "$b" install_dev; } >>"$b.log" 2>&1 ||
    { tail -n 30 "$b.log" >&2; die "building openssl failed (log: $b.log)"; }
}

# http-parser: two files and no build system worth cross-configuring; compiled directly, as
# Debian's own Makefile would (the same -DHTTP_PARSER_STRICT=0 default).
build_http-parser() {  # $1 = source dir
  local b=$build_root/http-parser
  rm -rf "$b"; mkdir -p "$b" "$prefix/lib" "$prefix/include"
  { "$triplet-gcc-posix" -O2 -Wall -I"$1" -c "$1/http_parser.c" -o "$b/http_parser.o" &&
      "$triplet-ar" rcs "$prefix/lib/libhttp_parser.a" "$b/http_parser.o" &&
      cp "$1/http_parser.h" "$prefix/include/"; } >"$b.log" 2>&1 ||
    { tail -n 30 "$b.log" >&2; die "building http-parser failed (log: $b.log)"; }
}

mkdir -p "$stamps" "$build_root"
for p in "${packages[@]}"; do
  [ ! -f "$stamps/$p" ] || continue
  ensure_source_index "$p"  # here, not in $(...): it sets $updated
  src=$(fetch_source "$p")
  ver=${src##*/}
  say "building $ver for $triplet (log: $build_root/$p.log)"
  start=$SECONDS
  "build_$p" "$src"
  echo "$ver" >"$stamps/$p"
  say "built $ver in $((SECONDS - start)) s"
done
say "done: $prefix"
