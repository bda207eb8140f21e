/* Header-only system module: Swift's Glibc module does not expose epoll or
 * eventfd. No C code lives here; the pure-Swift engine imports only these
 * system declarations. */
#ifndef PEREGRINE_CSYSTEMEPOLL_SHIM_H
#define PEREGRINE_CSYSTEMEPOLL_SHIM_H
#include <sys/epoll.h>
#include <sys/eventfd.h>
#endif
