/*
 * floor.c: the practical limit of Peregrine's design, used as the yardstick
 * in every benchmark. A minimal level-triggered epoll loop that answers each
 * request (counted by its blank line, so pipelining works) with a constant
 * response, one recv and one send per wakeup, no parsing, no Date. An
 * HTTP/1.0 request (ab without -k) is answered and the connection closed.
 *
 *   cc -O2 -o floor bench/floor/floor.c && ./floor PORT
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

static const char RESPONSE[] =
    "HTTP/1.1 200 OK\r\nServer: floor\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!";

/* Per-descriptor state: how far into "\r\n\r\n" the previous read ended. */
static unsigned char match[1 << 16];

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 8081;
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) || listen(lfd, 1024)) {
        perror("floor: listen");
        return 1;
    }
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    fprintf(stderr, "floor: listening on 127.0.0.1:%d\n", port);
    static char in[65536], out[65536 / 16 * sizeof RESPONSE + sizeof RESPONSE];
    struct epoll_event events[256];
    for (;;) {
        int n = epoll_wait(ep, events, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == lfd) {
                int c;
                while ((c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    if (c >= (int)sizeof match) { close(c); continue; }
                    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    match[c] = 0;
                    struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};
                    epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
                }
                continue;
            }
            ssize_t r = recv(fd, in, sizeof in, 0);
            if (r <= 0) {
                if (r < 0 && errno == EAGAIN) continue;
                close(fd);
                continue;
            }
            static const char end[] = "\r\n\r\n";
            unsigned m = match[fd];
            size_t requests = 0;
            for (ssize_t k = 0; k < r; k++) {
                if (in[k] == end[m]) { if (++m == 4) { requests++; m = 0; } }
                else m = in[k] == '\r' ? 1 : 0;
            }
            match[fd] = (unsigned char)m;
            size_t len = 0;
            for (size_t q = 0; q < requests && len + sizeof RESPONSE < sizeof out; q++) {
                memcpy(out + len, RESPONSE, sizeof RESPONSE - 1);
                len += sizeof RESPONSE - 1;
            }
            if (len && send(fd, out, len, MSG_NOSIGNAL) < 0) { close(fd); continue; }
            if (requests && memmem(in, (size_t)r, " HTTP/1.0\r\n", 11)) close(fd);
        }
    }
}
