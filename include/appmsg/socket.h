/*
 * The socket handle type of the public API, the same code on every system:
 *
 *   appmsg_socket_t        an int file descriptor on POSIX systems, a SOCKET
 *                          (an unsigned handle) on Windows
 *   APPMSG_INVALID_SOCKET  "no socket": -1 on POSIX, INVALID_SOCKET (~0) on
 *                          Windows.  Compare with it; never test "fd < 0",
 *                          which is never true on Windows.
 *
 * It also brings in the system's socket declarations (struct sockaddr,
 * socklen_t, ssize_t): <sys/socket.h> on POSIX, <winsock2.h> and
 * <ws2tcpip.h> on Windows.  On Windows the library calls WSAStartup()
 * itself, once, when it makes its first socket or loop; a program that
 * makes sockets of its own before that calls appmsg_net_init().
 */
#ifndef APPMSG_SOCKET_H
#define APPMSG_SOCKET_H

#ifdef _WIN32
#ifndef _WIN32_WINNT
#define _WIN32_WINNT 0x0600 /* struct pollfd, inet_ntop: Windows Vista and later */
#endif
#include <winsock2.h>
#include <ws2tcpip.h>
#include <sys/types.h> /* ssize_t (mingw-w64) */
typedef SOCKET appmsg_socket_t;
#define APPMSG_INVALID_SOCKET INVALID_SOCKET
#else
#include <sys/types.h>
#include <sys/socket.h>
typedef int appmsg_socket_t;
#define APPMSG_INVALID_SOCKET (-1)
#endif

#endif
