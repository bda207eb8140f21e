/*
 * harness.h: what the C-level state-machine tests share (test_conn.c,
 * test_response.c, test_offload.c, test_timer.c). Each test starts a real
 * server from the C core (every csrc file, built with it under ASan, UBSan and
 * LSan), talks to it over loopback sockets as a client would, and checks
 * the bytes that come back and what the core's calls returned. No mocks:
 * the connection, response writer, offload and timer code run as in
 * production, on the loop thread.
 *
 * Header-only (static functions): each test file is one program.
 */
#ifndef PRG_TEST_HARNESS_H
#define PRG_TEST_HARNESS_H

#define _GNU_SOURCE
#include "peregrine.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int th_failures;
static const char *th_case = "";

#define CHECK(cond, ...)                                                            \
    do {                                                                            \
        if (!(cond)) {                                                              \
            th_failures++;                                                          \
            fprintf(stderr, "FAIL %s:%d [%s] %s: ", __FILE__, __LINE__, th_case, #cond); \
            fprintf(stderr, __VA_ARGS__);                                           \
            fputc('\n', stderr);                                                    \
        }                                                                           \
    } while (0)

static inline int64_t th_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* An engine configuration the tests run over. */
typedef struct th_engine {
    const char *name;
    prg_engine engine;
    prg_trigger trigger;
} th_engine;

static const th_engine th_event_engines[] = {
    {"epoll/level", PRG_ENGINE_EPOLL, PRG_TRIGGER_LEVEL},
    {"epoll/edge", PRG_ENGINE_EPOLL, PRG_TRIGGER_EDGE},
    {"epoll/oneshot", PRG_ENGINE_EPOLL, PRG_TRIGGER_ONESHOT},
    {"libev", PRG_ENGINE_LIBEV, PRG_TRIGGER_LEVEL},
};
#define TH_EVENT_ENGINES (sizeof th_event_engines / sizeof th_event_engines[0])

/* Every engine: the event engines, then the blocking ones (a thread per
 * connection; one connection at a time, each answered once and closed). */
static const th_engine th_all_engines[] = {
    {"epoll/level", PRG_ENGINE_EPOLL, PRG_TRIGGER_LEVEL},
    {"epoll/edge", PRG_ENGINE_EPOLL, PRG_TRIGGER_EDGE},
    {"epoll/oneshot", PRG_ENGINE_EPOLL, PRG_TRIGGER_ONESHOT},
    {"libev", PRG_ENGINE_LIBEV, PRG_TRIGGER_LEVEL},
    {"threaded", PRG_ENGINE_THREADED, PRG_TRIGGER_LEVEL},
    {"blocking", PRG_ENGINE_BLOCKING, PRG_TRIGGER_LEVEL},
};
#define TH_ALL_ENGINES (sizeof th_all_engines / sizeof th_all_engines[0])

/* The blocking engine answers one request per connection (Connection: close). */
static inline int th_keeps_alive(const th_engine *e) { return e->engine != PRG_ENGINE_BLOCKING; }

static inline void th_config(prg_config *cfg, const th_engine *e) {
    prg_config_default(cfg);
    cfg->host = "127.0.0.1";
    cfg->port = 0;
    cfg->threads = 1;
    cfg->engine = e->engine;
    cfg->trigger = e->trigger;
}

/* Creates and starts a server; exits on failure (nothing else can run). */
static inline prg_server *th_start(const prg_config *cfg, const prg_callbacks *cb) {
    int err = 0;
    prg_server *s = prg_server_create(cfg, cb, &err);
    if (!s) {
        fprintf(stderr, "prg_server_create: %s\n", strerror(-err));
        exit(2);
    }
    int rc = prg_server_start(s);
    if (rc != 0) {
        fprintf(stderr, "prg_server_start: %s\n", strerror(-rc));
        exit(2);
    }
    return s;
}

static inline void th_stop(prg_server *s) {
    prg_server_stop(s);
    int rc = prg_server_wait(s);
    CHECK(rc == 0, "prg_server_wait returned %d", rc);
    prg_server_destroy(s);
}

/* A client connection with its own receive buffer. */
typedef struct th_client {
    int fd;
    size_t len;
    char buf[1 << 18];
} th_client;

static inline th_client *th_connect(int port) {
    th_client *c = calloc(1, sizeof *c);
    if (!c) exit(2);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0) exit(2);
    struct timeval tv = {.tv_sec = 5, .tv_usec = 0};   /* no test waits longer on one read */
    if (setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0) exit(2);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c->fd, (struct sockaddr *)&a, sizeof a) != 0) {
        perror("connect");
        exit(2);
    }
    return c;
}

static inline void th_close(th_client *c) {
    if (c->fd >= 0) close(c->fd);
    free(c);
}

/* Closes with a reset (SO_LINGER 0): the server sees the connection die,
 * where a plain close reads as a half-close whose answers are still owed. */
static inline void th_reset(th_client *c) {
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    CHECK(setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) == 0, "SO_LINGER");
    th_close(c);
}

static inline void th_send(th_client *c, const char *text) {
    size_t n = strlen(text), off = 0;
    while (off < n) {
        ssize_t w = send(c->fd, text + off, n - off, MSG_NOSIGNAL);
        if (w <= 0) {
            CHECK(w > 0, "send: %s", strerror(errno));
            return;
        }
        off += (size_t)w;
    }
}

/* Reads more; returns bytes read, 0 at EOF, -1 on error or the 5 s timeout. */
static inline ssize_t th_fill(th_client *c) {
    if (c->len == sizeof c->buf) return -1;
    ssize_t n = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
    if (n > 0) c->len += (size_t)n;
    return n;
}

/* One parsed response. */
typedef struct th_response {
    int status;
    char head[4096];    /* the head, NUL-terminated, CRLFs kept */
    char body[1 << 17]; /* decoded body, NUL-terminated */
    size_t body_len;
    int chunked;
    int close_delimited;
} th_response;

static inline void th_consume(th_client *c, size_t n) {
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

/* A header's value in r->head (case-insensitive name), or NULL. The value
 * is copied into out (size outn). */
static inline const char *th_header(const th_response *r, const char *name, char *out, size_t outn) {
    size_t nl = strlen(name);
    for (const char *p = strstr(r->head, "\r\n"); p && p[2]; p = strstr(p + 2, "\r\n")) {
        const char *line = p + 2;
        if (strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (*v == ' ') v++;
            const char *end = strstr(v, "\r\n");
            size_t vl = end ? (size_t)(end - v) : strlen(v);
            if (vl >= outn) vl = outn - 1;
            memcpy(out, v, vl);
            out[vl] = 0;
            return out;
        }
    }
    return NULL;
}

/* Reads one response (head_only: a HEAD answer, no body). 0 or -1. */
static inline int th_read_response_ex(th_client *c, th_response *r, int head_only) {
    memset(r, 0, sizeof *r);
    char *end;
    for (;;) {
        c->buf[c->len < sizeof c->buf ? c->len : sizeof c->buf - 1] = 0;
        end = memmem(c->buf, c->len, "\r\n\r\n", 4);
        if (end) break;
        if (th_fill(c) <= 0) return -1;
    }
    size_t head_len = (size_t)(end - c->buf) + 4;
    if (head_len >= sizeof r->head) return -1;
    memcpy(r->head, c->buf, head_len);
    r->head[head_len] = 0;
    th_consume(c, head_len);
    if (sscanf(r->head, "HTTP/1.%*d %d", &r->status) != 1) return -1;
    char v[64];
    if (head_only || r->status == 204 || r->status == 304) return 0;
    if (th_header(r, "Content-Length", v, sizeof v)) {
        size_t want = (size_t)strtoull(v, NULL, 10);
        if (want >= sizeof r->body) return -1;
        while (c->len < want)
            if (th_fill(c) <= 0) return -1;
        memcpy(r->body, c->buf, want);
        r->body_len = want;
        th_consume(c, want);
        return 0;
    }
    if (th_header(r, "Transfer-Encoding", v, sizeof v)) {
        r->chunked = 1;
        for (;;) {
            char *crlf;
            while (!(crlf = memmem(c->buf, c->len, "\r\n", 2)))
                if (th_fill(c) <= 0) return -1;
            size_t size = (size_t)strtoull(c->buf, NULL, 16);
            size_t line = (size_t)(crlf - c->buf) + 2;
            while (c->len < line + size + 2)
                if (th_fill(c) <= 0) return -1;
            if (r->body_len + size >= sizeof r->body) return -1;
            memcpy(r->body + r->body_len, c->buf + line, size);
            r->body_len += size;
            th_consume(c, line + size + 2);
            if (size == 0) return 0;
        }
    }
    /* Close-delimited. */
    r->close_delimited = 1;
    ssize_t n;
    while ((n = th_fill(c)) > 0) {}
    if (n < 0) return -1;
    if (c->len >= sizeof r->body) return -1;
    memcpy(r->body, c->buf, c->len);
    r->body_len = c->len;
    c->len = 0;
    return 0;
}

static inline int th_read_response(th_client *c, th_response *r) { return th_read_response_ex(c, r, 0); }

/* True when the server closed the connection (EOF, or a reset) with
 * nothing more sent, within the 5 s receive timeout. */
static inline int th_closed(th_client *c) {
    if (c->len) return 0;
    char b[64];
    ssize_t n = recv(c->fd, b, sizeof b, 0);
    return n == 0 || (n < 0 && errno == ECONNRESET);
}

/* Waits (polling every 5 ms) until *flag is nonzero or ms pass. */
static inline int th_wait_flag(atomic_int *flag, int ms) {
    int64_t until = th_now_ms() + ms;
    while (!atomic_load(flag)) {
        if (th_now_ms() > until) return 0;
        usleep(5000);
    }
    return 1;
}

static inline prg_slice th_str(const char *s) { return (prg_slice){(const uint8_t *)s, strlen(s)}; }

static inline int th_target_is(const prg_request *req, const char *t) {
    size_t n = strlen(t);
    return req->target.len == n && memcmp(req->target.ptr, t, n) == 0;
}

static inline int th_report(const char *what) {
    if (th_failures) {
        fprintf(stderr, "%s: %d check(s) failed\n", what, th_failures);
        return 1;
    }
    printf("%s: all checks passed\n", what);
    return 0;
}

/* What the loop thread hands a test that defers answers (test_offload.c,
 * test_stream.c): the last deferred handle, how many were deferred, and how
 * many connections closed. Kept in a function so that tests not using it
 * define no unused state. */
typedef struct th_deferrals {
    _Atomic(prg_deferred *) last;
    atomic_int count;
    atomic_int closed;
} th_deferrals;

static inline th_deferrals *th_deferred(void) {
    static th_deferrals state;
    return &state;
}

/* From on_request (loop thread): the test may take this handle now. */
static inline void th_deferred_take(prg_deferred *d) {
    atomic_store(&th_deferred()->last, d);
    atomic_fetch_add(&th_deferred()->count, 1);
}

/* on_close for such tests: counts the closes th_wait_closed waits on. */
static inline void th_count_close(void *ctx, prg_conn *c, int reason) {
    (void)ctx;
    (void)c;
    (void)reason;
    atomic_fetch_add(&th_deferred()->closed, 1);
}

/* Waits (at most 5 s) until more than `before` requests were deferred;
 * returns the last handle. */
static inline prg_deferred *th_wait_deferred(int before) {
    int64_t until = th_now_ms() + 5000;
    while (atomic_load(&th_deferred()->count) == before && th_now_ms() < until) usleep(1000);
    CHECK(atomic_load(&th_deferred()->count) > before, "the request was not deferred within 5 s");
    return atomic_load(&th_deferred()->last);
}

/* Waits (at most 5 s) until more than `before` connections closed. */
static inline void th_wait_closed(int before) {
    int64_t until = th_now_ms() + 5000;
    while (atomic_load(&th_deferred()->closed) == before && th_now_ms() < until) usleep(1000);
    CHECK(atomic_load(&th_deferred()->closed) > before, "on_close within 5 s");
}

#endif
