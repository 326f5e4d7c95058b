# The system's Linux-only calls, each found or not, into platform_config.h.
# With APPMSG_POSIX_ONLY none is used: the build is what macOS and the BSDs
# get, and the POSIX way of each is what runs (and is tested) here.
include(CheckSymbolExists)
include(CheckCSourceCompiles)

set(APPMSG_HAVE_ACCEPT4 0)
set(APPMSG_HAVE_PIPE2 0)
set(APPMSG_HAVE_SOCK_FLAGS 0)
set(APPMSG_HAVE_MSG_NOSIGNAL 0)
set(APPMSG_HAVE_SO_NOSIGPIPE 0)
set(APPMSG_HAVE_SO_REUSEPORT 0)
set(APPMSG_HAVE_EPOLL 0)

if(NOT WIN32)
  if(APPMSG_POSIX_ONLY)
    set(CMAKE_REQUIRED_DEFINITIONS -D_POSIX_C_SOURCE=200809L)
  else()
    set(CMAKE_REQUIRED_DEFINITIONS -D_GNU_SOURCE)
  endif()
  # MSG_NOSIGNAL is POSIX.1-2008, and macOS lacks it: it has SO_NOSIGPIPE.
  check_symbol_exists(MSG_NOSIGNAL "sys/socket.h" APPMSG_FOUND_MSG_NOSIGNAL)
  check_symbol_exists(SO_NOSIGPIPE "sys/socket.h" APPMSG_FOUND_SO_NOSIGPIPE)
  if(NOT APPMSG_POSIX_ONLY)
    check_symbol_exists(accept4 "sys/socket.h" APPMSG_FOUND_ACCEPT4)
    check_symbol_exists(pipe2 "fcntl.h;unistd.h" APPMSG_FOUND_PIPE2)
    check_symbol_exists(SOCK_NONBLOCK "sys/socket.h" APPMSG_FOUND_SOCK_NONBLOCK)
    check_symbol_exists(SOCK_CLOEXEC "sys/socket.h" APPMSG_FOUND_SOCK_CLOEXEC)
    # SO_REUSEPORT spreads one port's connections among its listeners on Linux only (the
    # BSDs' and macOS's gives them all to one).
    if(CMAKE_SYSTEM_NAME STREQUAL "Linux")
      check_symbol_exists(SO_REUSEPORT "sys/socket.h" APPMSG_FOUND_SO_REUSEPORT)
    endif()
    check_symbol_exists(epoll_create1 "sys/epoll.h" APPMSG_FOUND_EPOLL)
  endif()
  unset(CMAKE_REQUIRED_DEFINITIONS)
  foreach(f ACCEPT4 PIPE2 MSG_NOSIGNAL SO_NOSIGPIPE SO_REUSEPORT EPOLL)
    if(APPMSG_FOUND_${f})
      set(APPMSG_HAVE_${f} 1)
    endif()
  endforeach()
  if(APPMSG_FOUND_SOCK_NONBLOCK AND APPMSG_FOUND_SOCK_CLOEXEC)
    set(APPMSG_HAVE_SOCK_FLAGS 1)
  endif()
  # Where the system has neither, SIGPIPE is ignored process-wide by the programs
  # (appmsg_ignore_sigpipe()); the library says so in its documentation.
endif()

configure_file(${CMAKE_CURRENT_LIST_DIR}/platform_config.h.in
               ${PROJECT_BINARY_DIR}/src/platform_config.h @ONLY)
message(STATUS "appmsg: platform ${CMAKE_SYSTEM_NAME}: accept4 ${APPMSG_HAVE_ACCEPT4}, "
               "pipe2 ${APPMSG_HAVE_PIPE2}, SOCK_NONBLOCK ${APPMSG_HAVE_SOCK_FLAGS}, "
               "MSG_NOSIGNAL ${APPMSG_HAVE_MSG_NOSIGNAL}, SO_NOSIGPIPE ${APPMSG_HAVE_SO_NOSIGPIPE}, "
               "SO_REUSEPORT ${APPMSG_HAVE_SO_REUSEPORT}, epoll ${APPMSG_HAVE_EPOLL}")
