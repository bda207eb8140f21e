/*
 * echo_floor.c: the echo analogue of floor.c, the yardstick for the echo
 * scenario. A minimal level-triggered epoll loop: on EPOLLIN one recv and one
 * send of what was read; whatever the send could not take is kept in a small
 * per-descriptor buffer and the descriptor switches to EPOLLOUT until it is
 * drained (reading nothing meanwhile), then back to EPOLLIN. Loopback only.
 *
 *   cc -O2 -o echo_floor bench/floor/echo_floor.c && ./echo_floor PORT
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define CHUNK 16384 /* one recv; also the size of a per-descriptor buffer */

/* Per-descriptor state: bytes read but not yet sent (buf is allocated the
 * first time a send comes up short, and kept until the descriptor closes). */
static struct pending { char *buf; unsigned off, len; } pend[1 << 16];

static void drop(int fd) {
    free(pend[fd].buf);
    pend[fd] = (struct pending){0};
    close(fd);
}

static void watch(int ep, int fd, unsigned events) {
    struct epoll_event ev = {.events = events, .data.fd = fd};
    epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
}

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 8091;
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) || listen(lfd, 1024)) {
        perror("echo_floor: listen");
        return 1;
    }
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    fprintf(stderr, "echo_floor: listening on 127.0.0.1:%d\n", port);
    static char in[CHUNK];
    struct epoll_event events[256];
    for (;;) {
        int n = epoll_wait(ep, events, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == lfd) {
                int c;
                while ((c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    if (c >= (int)(sizeof pend / sizeof pend[0])) { close(c); continue; }
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
                }
                continue;
            }
            struct pending *p = &pend[fd];
            if (p->len) { /* EPOLLOUT (or an error): drain the buffer */
                ssize_t w = send(fd, p->buf + p->off, p->len, MSG_NOSIGNAL);
                if (w < 0) { if (errno != EAGAIN) drop(fd); continue; }
                p->off += (unsigned)w;
                p->len -= (unsigned)w;
                if (!p->len) watch(ep, fd, EPOLLIN);
                continue;
            }
            ssize_t r = recv(fd, in, sizeof in, 0);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN) continue;
                drop(fd);
                continue;
            }
            ssize_t w = send(fd, in, (size_t)r, MSG_NOSIGNAL);
            if (w < 0) {
                if (errno != EAGAIN) { drop(fd); continue; }
                w = 0;
            }
            if (w < r) {
                if (!p->buf && !(p->buf = malloc(CHUNK))) { drop(fd); continue; }
                memcpy(p->buf, in + w, (size_t)(r - w));
                p->off = 0;
                p->len = (unsigned)(r - w);
                watch(ep, fd, EPOLLOUT);
            }
        }
    }
}
