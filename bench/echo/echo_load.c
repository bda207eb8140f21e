/*
 * echo_load.c: the load client for the echo scenario. Opens CONNECTIONS
 * TCP connections (non-blocking, TCP_NODELAY) to a raw TCP echo server and on
 * each keeps exactly one message of MESSAGE_BYTES in flight: send a message,
 * read until the whole echo of it is back, send the next. Everything runs in
 * one thread on one epoll instance (level-triggered).
 *
 * Each message is filled with a per-connection counter pattern (the message
 * counter, the connection index, then bytes derived from both), and every
 * byte read back is compared with the byte sent at that offset; a connection
 * whose echo differs counts a mismatch and is closed.
 *
 * Phases, both bounded so it always stops by itself: connecting (all
 * connections, at most CONNECT_LIMIT_S seconds; unconnected ones count as
 * errors), then SECONDS of load, timed from when the first messages go out.
 * A message counts when its whole echo is back before the deadline; messages
 * still in flight at the deadline are not counted and are not errors.
 *
 * Output, one line on stdout:
 *   echo_load: connections=C bytes=B messages=M seconds=S msgs_per_s=X MiB_per_s=Y errors=E mismatches=K
 * C is the connections that were established, B the message size, M the
 * messages echoed, MiB_per_s the payload echoed per second in one direction
 * (M * B / S / 2^20). errors counts failed connects and connections that
 * failed or were closed by the server during the run. Exit status 0 only if
 * errors and mismatches are both 0 and at least one message was echoed;
 * 1 otherwise; 2 for bad arguments.
 *
 *   cc -std=c11 -O2 -o echo_load bench/echo/echo_load.c
 *   ./echo_load 127.0.0.1 8090 10 64 2
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CONNECT_LIMIT_S 10.0
#define MAX_MESSAGE_BYTES (64u << 20)
#define MAX_CONNECTIONS 1000000L
#define SCRATCH_BYTES (1u << 20)

enum state { CONNECTING, ACTIVE, DEAD };

struct conn {
    int fd;
    enum state state;
    uint32_t events;    /* current epoll interest */
    uint64_t counter;   /* messages started on this connection */
    size_t sent, recvd; /* progress of the message in flight */
    unsigned char *msg; /* the message in flight */
};

static int ep;
static size_t msg_bytes;
static unsigned long errors, mismatches, messages;
static long active; /* connections in state ACTIVE */
static unsigned char scratch[SCRATCH_BYTES];

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void kill_conn(struct conn *c) {
    if (c->state == DEAD) return;
    if (c->state == ACTIVE) active--;
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->state = DEAD;
}

static void fail(struct conn *c) {
    errors++;
    kill_conn(c);
}

static void set_interest(struct conn *c, uint32_t events, uint32_t index) {
    if (c->events == events) return;
    struct epoll_event ev = {.events = events, .data.u32 = index};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0) { fail(c); return; }
    c->events = events;
}

/* Message `counter` of connection `index`: the counter (8 bytes, little
 * endian), the connection index (4 bytes), then a byte pattern of both. */
static void fill(unsigned char *m, size_t n, uint32_t index, uint64_t counter) {
    unsigned char head[12];
    for (int k = 0; k < 8; k++) head[k] = (unsigned char)(counter >> (8 * k));
    for (int k = 0; k < 4; k++) head[8 + k] = (unsigned char)(index >> (8 * k));
    size_t i = 0;
    for (; i < n && i < sizeof head; i++) m[i] = head[i];
    unsigned seed = (unsigned)(index * 31u + (unsigned)counter * 7u);
    for (; i < n; i++) m[i] = (unsigned char)(seed + i + (i >> 8));
}

static void try_send(struct conn *c, uint32_t index) {
    while (c->sent < msg_bytes) {
        ssize_t r = send(c->fd, c->msg + c->sent, msg_bytes - c->sent, MSG_NOSIGNAL);
        if (r > 0) { c->sent += (size_t)r; continue; }
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        fail(c);
        return;
    }
    set_interest(c, EPOLLIN | (c->sent < msg_bytes ? EPOLLOUT : 0u), index);
}

static void start_message(struct conn *c, uint32_t index) {
    fill(c->msg, msg_bytes, index, c->counter++);
    c->sent = c->recvd = 0;
    try_send(c, index);
}

static void on_readable(struct conn *c, uint32_t index) {
    for (;;) {
        size_t want = msg_bytes - c->recvd;
        if (want > sizeof scratch) want = sizeof scratch;
        ssize_t r = recv(c->fd, scratch, want, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (r <= 0) { fail(c); return; } /* reset, or closed by the server */
        if (c->recvd + (size_t)r > c->sent || memcmp(scratch, c->msg + c->recvd, (size_t)r) != 0) {
            mismatches++;
            kill_conn(c);
            return;
        }
        c->recvd += (size_t)r;
        if (c->recvd == msg_bytes) {
            messages++;
            start_message(c, index);
            return; /* the next echo cannot be back yet; epoll will say when */
        }
    }
}

static long parse_long(const char *s, long lo, long hi, const char *what) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *s == '\0' || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "echo_load: bad %s '%s' (want %ld..%ld)\n", what, s, lo, hi);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: echo_load HOST PORT CONNECTIONS MESSAGE_BYTES SECONDS\n");
        return 2;
    }
    const char *host = argv[1], *port = argv[2];
    long nconn = parse_long(argv[3], 1, MAX_CONNECTIONS, "CONNECTIONS");
    msg_bytes = (size_t)parse_long(argv[4], 1, MAX_MESSAGE_BYTES, "MESSAGE_BYTES");
    double seconds = (double)parse_long(argv[5], 1, 86400, "SECONDS");

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
    int gai = getaddrinfo(host, port, &hints, &ai);
    if (gai != 0) {
        fprintf(stderr, "echo_load: %s:%s: %s\n", host, port, gai_strerror(gai));
        return 2;
    }

    /* Room for the connections, the epoll descriptor and stdio. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)nconn + 16) {
        rl.rlim_cur = (rlim_t)nconn + 16 < rl.rlim_max ? (rlim_t)nconn + 16 : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    struct conn *conns = calloc((size_t)nconn, sizeof *conns);
    unsigned char *msgs = malloc((size_t)nconn * msg_bytes);
    int maxev = nconn < 1024 ? (int)nconn : 1024;
    struct epoll_event *events = calloc((size_t)maxev, sizeof *events);
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (!conns || !msgs || !events || ep < 0) {
        perror("echo_load: setup");
        return 1;
    }

    /* Connect phase. */
    long pending = 0;
    int one = 1;
    for (long i = 0; i < nconn; i++) {
        struct conn *c = &conns[i];
        c->msg = msgs + (size_t)i * msg_bytes;
        c->state = DEAD;
        c->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c->fd < 0) { errors++; continue; }
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        int r = connect(c->fd, ai->ai_addr, ai->ai_addrlen);
        if (r < 0 && errno != EINPROGRESS) { errors++; close(c->fd); continue; }
        c->events = r == 0 ? EPOLLIN : EPOLLOUT;
        struct epoll_event ev = {.events = c->events, .data.u32 = (uint32_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) { errors++; close(c->fd); continue; }
        c->state = r == 0 ? ACTIVE : CONNECTING;
        if (r == 0) active++;
        else pending++;
    }
    freeaddrinfo(ai);
    double connect_deadline = now_s() + CONNECT_LIMIT_S;
    while (pending > 0) {
        double left = connect_deadline - now_s();
        if (left <= 0) break;
        int n = epoll_wait(ep, events, maxev, (int)(left * 1000) + 1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) { perror("echo_load: epoll_wait"); return 1; }
        for (int k = 0; k < n; k++) {
            uint32_t index = events[k].data.u32;
            struct conn *c = &conns[index];
            if (c->state != CONNECTING) continue;
            pending--;
            int err = 0;
            socklen_t len = sizeof err;
            if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0) {
                if (err && errors == 0) fprintf(stderr, "echo_load: connect: %s\n", strerror(err));
                fail(c);
                continue;
            }
            c->state = ACTIVE;
            active++;
            set_interest(c, EPOLLIN, index);
        }
    }
    for (long i = 0; i < nconn; i++)
        if (conns[i].state == CONNECTING) fail(&conns[i]); /* timed out */
    long established = active;

    /* Load phase. */
    double start = now_s(), deadline = start + seconds, end = start;
    for (long i = 0; i < nconn; i++)
        if (conns[i].state == ACTIVE) start_message(&conns[i], (uint32_t)i);
    for (;;) {
        end = now_s();
        if (active == 0 || end >= deadline) break;
        int n = epoll_wait(ep, events, maxev, (int)((deadline - end) * 1000) + 1);
        end = now_s();
        if (end >= deadline) break;
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) { perror("echo_load: epoll_wait"); return 1; }
        for (int k = 0; k < n; k++) {
            uint32_t index = events[k].data.u32;
            struct conn *c = &conns[index];
            uint32_t e = events[k].events;
            if (c->state != ACTIVE) continue;
            if (e & EPOLLIN) on_readable(c, index);
            if (c->state == ACTIVE && (e & EPOLLOUT)) try_send(c, index);
            if (c->state == ACTIVE && (e & EPOLLERR)) fail(c);
        }
    }
    if (end > deadline) end = deadline;
    for (long i = 0; i < nconn; i++) kill_conn(&conns[i]);

    double elapsed = end - start > 0 ? end - start : 1e-9;
    printf("echo_load: connections=%ld bytes=%zu messages=%lu seconds=%.3f msgs_per_s=%.0f "
           "MiB_per_s=%.2f errors=%lu mismatches=%lu\n",
           established, msg_bytes, messages, elapsed, (double)messages / elapsed,
           (double)messages * (double)msg_bytes / elapsed / (1024.0 * 1024.0), errors, mismatches);
    return errors || mismatches || messages == 0 ? 1 : 0;
}
