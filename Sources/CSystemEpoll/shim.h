/* Header-only system module: Swift's Glibc module does not expose epoll or
 * eventfd. No C code lives here; the pure-Swift engine imports only these
 * system declarations. */
#ifndef PEREGRINE_CSYSTEMEPOLL_SHIM_H
#define PEREGRINE_CSYSTEMEPOLL_SHIM_H
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

/* accept4 is a GNU extension: glibc declares it only under _GNU_SOURCE,
 * which Swift's Glibc module is not built with. The declaration alone (the
 * function is in libc) gives the Swift engine a non-blocking, close-on-exec
 * accept in one system call. */
#ifndef __USE_GNU
extern int accept4(int fd, struct sockaddr *addr, socklen_t *addr_len, int flags);
#endif
#endif
