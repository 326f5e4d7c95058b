# CMake toolchain file: cross-compile appmsg for Windows x86_64 with Debian's mingw-w64, and
# run the test programs under Wine.
#
#   scripts/mingw-deps.sh                      # cJSON + Check (+ --with-openssl) for Windows
#   cmake -S . -B build-mingw -DCMAKE_TOOLCHAIN_FILE=cmake/mingw-w64-x86_64.cmake
#   cmake --build build-mingw && (cd build-mingw && WINEDEBUG=-all ctest)   # see Wine below
#
# Needs (Debian 12): gcc-mingw-w64-x86-64-posix (in mingw-w64), wine, pkg-config.
#
# Where the cross-built dependencies are: APPMSG_MINGW_PREFIX, read in this order
#   1. -DAPPMSG_MINGW_PREFIX=/abs/path (cache variable; kept on later runs),
#   2. the environment variable APPMSG_MINGW_PREFIX at the first configure,
#   3. <this file's directory>/../build-mingw/deps/prefix, which is where
#      scripts/mingw-deps.sh installs by default.
# (A default under CMAKE_BINARY_DIR is not possible: toolchain files are also read by
# try_compile projects, whose binary directory is a scratch directory.)

set(CMAKE_SYSTEM_NAME Windows)
set(CMAKE_SYSTEM_PROCESSOR x86_64)
set(APPMSG_MINGW_TRIPLET x86_64-w64-mingw32)

# The compilers.  Debian ships two thread models of each mingw-w64 GCC: -win32 and -posix
# (/usr/bin/x86_64-w64-mingw32-gcc is an alternative that points to -win32 by default).
# We want -posix: its GCC runtime (libgcc, libstdc++) is built on winpthreads and links it
# by default, so pthread_create & co. link as they do on Linux (with -win32 they need an
# explicit -lpthread), C++ std::thread/std::mutex exist (not with -win32 in GCC 12), and
# GCC's runtime and the program share one threads library.  Fall back to the plain name
# (another distribution; on Debian it is the -win32 alternative by default).
find_program(APPMSG_MINGW_CC NAMES ${APPMSG_MINGW_TRIPLET}-gcc-posix ${APPMSG_MINGW_TRIPLET}-gcc
             REQUIRED)
find_program(APPMSG_MINGW_CXX NAMES ${APPMSG_MINGW_TRIPLET}-g++-posix ${APPMSG_MINGW_TRIPLET}-g++)
find_program(APPMSG_MINGW_RC NAMES ${APPMSG_MINGW_TRIPLET}-windres)
set(CMAKE_C_COMPILER "${APPMSG_MINGW_CC}")
if(APPMSG_MINGW_CXX)
  set(CMAKE_CXX_COMPILER "${APPMSG_MINGW_CXX}")
endif()
if(APPMSG_MINGW_RC)
  set(CMAKE_RC_COMPILER "${APPMSG_MINGW_RC}")
endif()

# The prefix of the cross-built dependencies (see above).
if(NOT APPMSG_MINGW_PREFIX)
  if(NOT "$ENV{APPMSG_MINGW_PREFIX}" STREQUAL "")
    set(_appmsg_prefix "$ENV{APPMSG_MINGW_PREFIX}")
  else()
    get_filename_component(_appmsg_prefix "${CMAKE_CURRENT_LIST_DIR}/../build-mingw/deps/prefix"
                           ABSOLUTE)
  endif()
  set(APPMSG_MINGW_PREFIX "${_appmsg_prefix}" CACHE PATH
      "Prefix of the dependencies cross-built by scripts/mingw-deps.sh")
  unset(_appmsg_prefix)
endif()
# try_compile projects read this file again without the main cache: hand the value on.
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES APPMSG_MINGW_PREFIX)

# Headers, libraries and CMake packages come from the mingw sysroot and the prefix only;
# programs (code generators, pkg-config, wine) from the build machine.
set(CMAKE_FIND_ROOT_PATH "/usr/${APPMSG_MINGW_TRIPLET}" "${APPMSG_MINGW_PREFIX}")
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# pkg-config (pkg_check_modules): the host's pkg-config program, but it must see only the
# Windows .pc files.  PKG_CONFIG_LIBDIR replaces the built-in search path (the host's
# /usr/lib/x86_64-linux-gnu/pkgconfig, /usr/share/pkgconfig); PKG_CONFIG_PATH would be
# searched before it, so it is cleared.  No PKG_CONFIG_SYSROOT_DIR: the .pc files in the
# prefix hold absolute paths into the prefix already, a sysroot would be prefixed to them.
# --static: the libraries in the prefix are static, so their Libs.private are needed too
# (e.g. -lws2_32 -lgdi32 -lcrypt32 for libcrypto).  These settings are environment of
# the CMake process; they are made again on every (re)configure, as this file is re-read.
set(ENV{PKG_CONFIG_LIBDIR}
    "${APPMSG_MINGW_PREFIX}/lib/pkgconfig:${APPMSG_MINGW_PREFIX}/share/pkgconfig:/usr/${APPMSG_MINGW_TRIPLET}/lib/pkgconfig")
set(ENV{PKG_CONFIG_PATH} "")
unset(ENV{PKG_CONFIG_SYSROOT_DIR})
if(NOT DEFINED CACHE{PKG_CONFIG_ARGN})
  set(PKG_CONFIG_ARGN "--static" CACHE STRING "Arguments to supply to pkg-config")
endif()

# Link libgcc, libstdc++ and winpthreads statically (-static; -static-libgcc for clarity),
# so the .exe files need no DLL but Windows' own: they run under Wine, or are copied to a
# Windows machine, without libgcc_s_seh-1.dll / libwinpthread-1.dll beside them.  Also for
# DLLs: each DLL then has its own copy of winpthreads, so pthread objects must not cross a
# DLL boundary (appmsg's API passes none).  The program still needs any DLL it links
# (e.g. libappmsg.dll) in its own directory or on WINEPATH.
set(CMAKE_EXE_LINKER_FLAGS_INIT "-static-libgcc -static")
set(CMAKE_SHARED_LINKER_FLAGS_INIT "-static-libgcc -static")
set(CMAKE_MODULE_LINKER_FLAGS_INIT "-static-libgcc -static")

# Run the test programs (ctest, try_run, custom commands running a built .exe) under Wine.
# Debian 12's /usr/bin/wine is a wrapper that runs wine64 when wine32 is not installed;
# unless WINEDEBUG=-all it prints a "wine32 is missing" hint and fixme: lines on stderr.
# Wine needs no display for console programs.  Its first start creates ~/.wine (or
# $WINEPREFIX) and takes several seconds.  Each test then costs about 2.5 s: the test starts
# wineserver and Wine's services (winedevice.exe), which inherit the test's output pipe,
# and ctest waits until they exit with the wineserver.  About 0.03 s per test instead:
#   export WINEDEBUG=-all
#   wineserver -p && wine wineboot </dev/null >/dev/null 2>&1   # services, detached
#   ctest ...; wineserver -k
# (`wineserver -p` alone, without that wineboot, makes ctest hang: the services the first
# test starts never exit.)
find_program(APPMSG_WINE NAMES wine wine64 DOC "Wine, to run the Windows test programs")
if(APPMSG_WINE)
  set(CMAKE_CROSSCOMPILING_EMULATOR "${APPMSG_WINE}")
endif()
