/*
 * APPMSG_API marks the library's public functions.  The library is built
 * with -fvisibility=hidden, so a shared libappmsg exports these and
 * nothing else; in a static library the mark changes nothing.  On Windows
 * only the static library is built.
 */
#ifndef APPMSG_EXPORT_H
#define APPMSG_EXPORT_H

#if defined(_WIN32)
#define APPMSG_API /* Windows: the static library only */
#elif defined(__GNUC__) || defined(__clang__)
#define APPMSG_API __attribute__((visibility("default")))
#else
#define APPMSG_API
#endif

#endif
