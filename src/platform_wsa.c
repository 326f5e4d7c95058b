/*
 * Winsock error codes as errno values (platform.h).  The codes are
 * Winsock's documented numbers, written out here so that the table is
 * built, and tested, on every system; on Windows the tests also compare
 * them with <winsock2.h>'s names.
 */
#include <errno.h>

#include "platform.h"

int appmsg__errno_from_wsa(int wsa_code) {
  switch (wsa_code) {
  case 0:
    return 0;
  case 6:     /* WSA_INVALID_HANDLE */
  case 10009: /* WSAEBADF */
    return EBADF;
  case 8: /* WSA_NOT_ENOUGH_MEMORY */
    return ENOMEM;
  case 87:    /* WSA_INVALID_PARAMETER */
  case 10022: /* WSAEINVAL */
    return EINVAL;
  case 10004: /* WSAEINTR */
  case 995:   /* WSA_OPERATION_ABORTED */
    return EINTR;
  case 10013: /* WSAEACCES */
    return EACCES;
  case 10014: /* WSAEFAULT */
    return EFAULT;
  case 10024: /* WSAEMFILE */
    return EMFILE;
  case 10035: /* WSAEWOULDBLOCK */
  case 997:   /* WSA_IO_PENDING */
    return EAGAIN;
  case 10036: /* WSAEINPROGRESS */
    return EINPROGRESS;
  case 10037: /* WSAEALREADY */
    return EALREADY;
  case 10038: /* WSAENOTSOCK */
    return ENOTSOCK;
  case 10039: /* WSAEDESTADDRREQ */
    return EDESTADDRREQ;
  case 10040: /* WSAEMSGSIZE */
    return EMSGSIZE;
  case 10041: /* WSAEPROTOTYPE */
    return EPROTOTYPE;
  case 10042: /* WSAENOPROTOOPT */
    return ENOPROTOOPT;
  case 10043: /* WSAEPROTONOSUPPORT */
  case 10044: /* WSAESOCKTNOSUPPORT */
    return EPROTONOSUPPORT;
  case 10045: /* WSAEOPNOTSUPP */
    return EOPNOTSUPP;
  case 10046: /* WSAEPFNOSUPPORT */
  case 10047: /* WSAEAFNOSUPPORT */
    return EAFNOSUPPORT;
  case 10048: /* WSAEADDRINUSE */
    return EADDRINUSE;
  case 10049: /* WSAEADDRNOTAVAIL */
    return EADDRNOTAVAIL;
  case 10050: /* WSAENETDOWN */
    return ENETDOWN;
  case 10051: /* WSAENETUNREACH */
    return ENETUNREACH;
  case 10052: /* WSAENETRESET */
    return ENETRESET;
  case 10053: /* WSAECONNABORTED */
    return ECONNABORTED;
  case 10054: /* WSAECONNRESET */
  case 10101: /* WSAEDISCON */
    return ECONNRESET;
  case 10055: /* WSAENOBUFS */
    return ENOBUFS;
  case 10056: /* WSAEISCONN */
    return EISCONN;
  case 10057: /* WSAENOTCONN */
    return ENOTCONN;
  case 10058: /* WSAESHUTDOWN: sending after shutdown(), as EPIPE on POSIX */
    return EPIPE;
  case 10060: /* WSAETIMEDOUT */
    return ETIMEDOUT;
  case 10061: /* WSAECONNREFUSED */
    return ECONNREFUSED;
  case 10062: /* WSAELOOP */
    return ELOOP;
  case 10063: /* WSAENAMETOOLONG */
    return ENAMETOOLONG;
  case 10064: /* WSAEHOSTDOWN */
  case 10065: /* WSAEHOSTUNREACH */
    return EHOSTUNREACH;
  case 10067: /* WSAEPROCLIM: too many processes use Winsock */
  case 10059: /* WSAETOOMANYREFS */
    return ENFILE;
  default:
    return EIO;
  }
}
