/*
 * test_sendfile.c: the send queue's file element (prg_write_file,
 * prg_conn_flush's sendfile path in csrc/conn.c), through a real server on
 * loopback, on the epoll (level, edge), libev, threaded and blocking
 * engines. Built with every C file of csrc under ASan/UBSan (`make test-c`).
 *
 * First the queue alone, on a non-blocking socketpair (a hand-made loop and
 * connection, no engine): bytes, a file range, bytes leave in order across
 * would-block rounds; pending output counts what is still to send; a peer
 * that closed makes sendfile fail with EPIPE without the SIGPIPE killing the
 * process (and the signal mask is restored); a connection that closes with
 * a file range queued closes its descriptor.
 *
 * Then, per engine:
 *   - a file range between two small pipelined answers leaves in order,
 *     byte-identical (the range crosses several socket buffers, so the
 *     would-block path and its resumption run too);
 *   - HEAD declares the length and sends no byte;
 *   - refused calls (no Content-Length, longer than declared, negative
 *     offset) return -1 and close the descriptor they were given;
 *   - a file shorter than promised closes the connection;
 *   - a client that leaves mid-file: the server's descriptor count returns
 *     to its baseline, the process survives (sendfile's SIGPIPE is taken
 *     back) and the server still answers.
 */
#define _GNU_SOURCE
#include "internal.h"   /* -Icsrc: the queue test builds a loop and a connection by hand */

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define FILE_SIZE ((size_t)(3u << 20) + 123u)

static char g_path[64];
static uint8_t *g_content;              /* what the file holds */
static atomic_int g_refusals_ok;        /* /refuse: every refusal behaved */
static int g_failed;

#define CHECK(cond, ...)                                                                    \
    do {                                                                                    \
        if (!(cond)) {                                                                      \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                 \
            fprintf(stderr, __VA_ARGS__);                                                   \
            fprintf(stderr, "\n");                                                          \
            g_failed++;                                                                     \
        }                                                                                   \
    } while (0)

static int64_t param(prg_slice target, const char *name, int64_t dflt) {
    const char *t = (const char *)target.ptr;
    size_t nl = strlen(name);
    for (size_t i = 0; i + nl + 1 < target.len; i++) {
        if ((t[i] == '?' || t[i] == '&') && memcmp(t + i + 1, name, nl) == 0 && t[i + 1 + nl] == '=') {
            int64_t v = 0;
            for (size_t j = i + 2 + nl; j < target.len && t[j] >= '0' && t[j] <= '9'; j++) v = v * 10 + (t[j] - '0');
            return v;
        }
    }
    return dflt;
}

static bool starts(prg_slice s, const char *lit) {
    size_t n = strlen(lit);
    return s.len >= n && memcmp(s.ptr, lit, n) == 0;
}

static bool closed_fd(int fd) { return fcntl(fd, F_GETFD) == -1 && errno == EBADF; }

static void content_length(prg_conn *c, int64_t n) {
    char v[24];
    int len = snprintf(v, sizeof v, "%lld", (long long)n);
    if (prg_write_header(c, "Content-Length", 14, v, (size_t)len) != 0) fprintf(stderr, "header refused\n");
}

static void on_request(void *ctx, prg_conn *c, const prg_request *req) {
    (void)ctx;
    if (starts(req->target, "/small")) {
        char body[16];
        int n = snprintf(body, sizeof body, "small-%lld", (long long)param(req->target, "n", 0));
        prg_send(c, 200, "text/plain", 10, body, (size_t)n);
        return;
    }
    if (starts(req->target, "/file")) {
        /* /file?off=A&len=B: "<", B bytes of the file from A, ">" */
        int64_t off = param(req->target, "off", 0);
        int64_t len = param(req->target, "len", (int64_t)FILE_SIZE - off);
        int64_t claim = len + 2;   /* the range and one byte each side */
        int fd = open(g_path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            prg_send(c, 500, "text/plain", 10, "open", 4);
            return;
        }
        prg_respond(c, 200, NULL, 0);
        content_length(c, claim);
        prg_write_body(c, "<", 1);            /* bytes before the range, in the same body */
        if (prg_write_file(c, fd, off, len) != 0) fprintf(stderr, "prg_write_file refused\n");
        prg_write_body(c, ">", 1);            /* and after it */
        prg_end(c);
        return;
    }
    if (starts(req->target, "/refuse")) {
        int ok = 1;
        int fd = open(g_path, O_RDONLY | O_CLOEXEC);
        prg_respond(c, 200, NULL, 0);
        /* No Content-Length yet: a file range is never chunked. */
        if (prg_write_file(c, fd, 0, 10) != -1 || !closed_fd(fd)) ok = 0;
        content_length(c, 2);
        fd = open(g_path, O_RDONLY | O_CLOEXEC);
        if (prg_write_file(c, fd, 0, 3) != -1 || !closed_fd(fd)) ok = 0;   /* more than declared */
        fd = open(g_path, O_RDONLY | O_CLOEXEC);
        if (prg_write_file(c, fd, -1, 1) != -1 || !closed_fd(fd)) ok = 0;  /* negative offset */
        fd = open(g_path, O_RDONLY | O_CLOEXEC);
        if (prg_write_file(c, fd, 0, -1) != -1 || !closed_fd(fd)) ok = 0;  /* negative length */
        if (prg_write_file(c, -1, 0, 1) != -1) ok = 0;                      /* no descriptor */
        atomic_store(&g_refusals_ok, ok);
        prg_write_body(c, "ok", 2);
        prg_end(c);
        return;
    }
    prg_send(c, 404, "text/plain", 10, "no", 2);
}


/* ------------------------------------------------------- the queue alone */

typedef struct bare {
    prg_server server;
    prg_loop loop;
} bare;

static void bare_init(bare *b) {
    memset(b, 0, sizeof *b);
    prg_config_default(&b->server.cfg);
    b->server.loop_count = 1;
    b->loop.server = &b->server;
    b->loop.engine = &prg_engine_epoll;   /* update_interest is never reached here */
    b->loop.epfd = -1;
}

static bool sigpipe_blocked(void) {
    sigset_t now;
    pthread_sigmask(SIG_SETMASK, NULL, &now);
    return sigismember(&now, SIGPIPE) == 1;
}

static bool sigpipe_pending(void) {
    sigset_t p;
    sigpending(&p);
    return sigismember(&p, SIGPIPE) == 1;
}

static void test_queue_order(void) {
    bare b;
    bare_init(&b);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) {
        CHECK(0, "socketpair: %s", strerror(errno));
        return;
    }
    prg_conn *c = prg_conn_open(&b.loop, sv[0]);
    int fd = open(g_path, O_RDONLY | O_CLOEXEC);
    const int64_t off = 5, len = 700001;
    CHECK(prg_out_append(c, "HEAD", 4) == 0, "append");
    CHECK(prg_out_append_file(c, fd, off, len) == 0, "append file");
    CHECK(prg_out_append(c, "TAIL", 4) == 0, "append after the file");
    size_t total = 4 + (size_t)len + 4;
    CHECK(c->out_bytes == total, "pending %zu, want %zu", c->out_bytes, total);
    uint8_t *got = malloc(total + 1);
    size_t n = 0;
    int rounds = 0, blocked = 0;
    while (n < total && rounds < 100000) {
        rounds++;
        int r = prg_conn_flush(c);
        CHECK(r >= 0, "flush failed");
        if (r < 0) break;
        if (r == 1) blocked++;
        ssize_t k;
        while ((k = recv(sv[1], got + n, total + 1 - n, 0)) > 0) n += (size_t)k;
        CHECK(c->out_bytes + n == total, "pending %zu + received %zu != %zu", c->out_bytes, n, total);
    }
    CHECK(n == total, "received %zu of %zu", n, total);
    CHECK(blocked > 0, "the socket buffer never filled: the would-block path did not run");
    CHECK(memcmp(got, "HEAD", 4) == 0 && memcmp(got + 4, g_content + off, (size_t)len) == 0 &&
              memcmp(got + 4 + len, "TAIL", 4) == 0,
          "bytes out of order or wrong");
    CHECK(closed_fd(fd), "the file descriptor stayed open after its range was sent");
    CHECK(c->out_head == NULL && c->out_bytes == 0, "queue not empty");
    CHECK(!sigpipe_blocked(), "flush left SIGPIPE blocked");
    free(got);
    prg_conn_close_now(c, PRG_CLOSE_NORMAL);
    prg_conn_free(c);
    close(sv[1]);
    prg_loop_free_context(&b.loop);
}

static void test_queue_epipe(void) {
    bare b;
    bare_init(&b);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) {
        CHECK(0, "socketpair: %s", strerror(errno));
        return;
    }
    prg_conn *c = prg_conn_open(&b.loop, sv[0]);
    int fd = open(g_path, O_RDONLY | O_CLOEXEC);
    CHECK(prg_out_append_file(c, fd, 0, 1000) == 0, "append file");
    close(sv[1]);   /* the peer is gone: sendfile fails with EPIPE and raises SIGPIPE */
    CHECK(prg_conn_flush(c) == -1, "flush to a closed peer did not fail");
    CHECK(c->flags & CONN_CLOSED, "connection not closed");
    CHECK(!sigpipe_pending(), "SIGPIPE left pending");
    CHECK(!sigpipe_blocked(), "SIGPIPE left blocked");
    prg_conn_free(c);
    CHECK(closed_fd(fd), "the file descriptor outlived its connection");
    prg_loop_free_context(&b.loop);
}

static void test_queue_dropped(void) {
    bare b;
    bare_init(&b);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) {
        CHECK(0, "socketpair: %s", strerror(errno));
        return;
    }
    prg_conn *c = prg_conn_open(&b.loop, sv[0]);
    int fd = open(g_path, O_RDONLY | O_CLOEXEC);
    CHECK(prg_out_append(c, "x", 1) == 0, "append");
    CHECK(prg_out_append_file(c, fd, 0, 10) == 0, "append file");
    CHECK(prg_out_append_file(c, -1, 0, 10) == -1, "a negative descriptor was queued");
    int fd2 = open(g_path, O_RDONLY | O_CLOEXEC);
    CHECK(prg_out_append_file(c, fd2, 0, 0) == -1 && closed_fd(fd2), "an empty range was queued or its fd kept");
    prg_conn_close_now(c, PRG_CLOSE_ERROR);   /* nothing sent */
    prg_conn_free(c);
    CHECK(closed_fd(fd), "a queued file descriptor outlived its connection");
    close(sv[1]);
    prg_loop_free_context(&b.loop);
}

/* ------------------------------------------------------------ client side */

static int count_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    if (!d) return -1;
    int n = 0;
    while (readdir(d)) n++;
    closedir(d);
    return n - 3;   /* ".", ".." and the directory's own descriptor */
}

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int connect_to(int port, int rcvbuf) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (rcvbuf > 0) (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct timeval tv = {.tv_sec = 20, .tv_usec = 0};
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int send_all(int fd, const char *s) {
    size_t n = strlen(s);
    while (n) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w <= 0) return -1;
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Reads until EOF (or the 20 s receive timeout); returns bytes read. */
static size_t read_all(int fd, uint8_t *buf, size_t cap) {
    size_t got = 0;
    while (got < cap) {
        ssize_t r = recv(fd, buf + got, cap - got, 0);
        if (r <= 0) break;
        got += (size_t)r;
    }
    return got;
}

/* One response at *at: status and body (Content-Length framed). Returns 0
 * or -1 when it is not a whole response. */
static int next_response(const uint8_t *buf, size_t len, size_t *at, int *status, const uint8_t **body,
                         size_t *body_len) {
    const uint8_t *p = buf + *at;
    size_t left = len - *at;
    const uint8_t *end = memmem(p, left, "\r\n\r\n", 4);
    if (!end || left < 12) return -1;
    *status = atoi((const char *)p + 9);
    const uint8_t *cl = memmem(p, (size_t)(end - p), "Content-Length: ", 16);
    if (!cl) return -1;
    size_t n = (size_t)strtoull((const char *)cl + 16, NULL, 10);
    size_t head = (size_t)(end - p) + 4;
    if (left - head < n) {
        *body = end + 4;
        *body_len = left - head;
        *at = len;
        return -1;
    }
    *body = end + 4;
    *body_len = n;
    *at += head + n;
    return 0;
}

static bool wait_fds(int baseline, int64_t deadline_ms) {
    while (now_ms() < deadline_ms) {
        if (count_fds() <= baseline) return true;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 10 * 1000 * 1000};
        nanosleep(&ts, NULL);   /* polling what the server does, with a deadline */
    }
    return count_fds() <= baseline;
}

static void test_pipelined(int port, const char *engine) {
    int fd = connect_to(port, 0);
    CHECK(fd >= 0, "%s: connect", engine);
    if (fd < 0) return;
    int64_t off = 1000, len = (int64_t)(2u << 20) + 7;
    char req[512];
    snprintf(req, sizeof req,
             "GET /small?n=1 HTTP/1.1\r\nHost: x\r\n\r\n"
             "GET /file?off=%lld&len=%lld HTTP/1.1\r\nHost: x\r\n\r\n"
             "GET /small?n=3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
             (long long)off, (long long)len);
    CHECK(send_all(fd, req) == 0, "%s: send", engine);
    size_t cap = FILE_SIZE + 4096;
    uint8_t *buf = malloc(cap);
    size_t got = read_all(fd, buf, cap);
    close(fd);
    size_t at = 0;
    int status = 0;
    const uint8_t *body = NULL;
    size_t body_len = 0;
    CHECK(next_response(buf, got, &at, &status, &body, &body_len) == 0 && status == 200 && body_len == 7 &&
              memcmp(body, "small-1", 7) == 0,
          "%s: first answer", engine);
    int r = next_response(buf, got, &at, &status, &body, &body_len);
    CHECK(r == 0 && status == 200 && body_len == (size_t)len + 2, "%s: file answer: %zu of %lld bytes", engine,
          body_len, (long long)len + 2);
    if (r == 0) {
        CHECK(body[0] == '<' && body[body_len - 1] == '>', "%s: bytes around the range", engine);
        CHECK(memcmp(body + 1, g_content + off, (size_t)len) == 0, "%s: file bytes differ", engine);
    }
    CHECK(next_response(buf, got, &at, &status, &body, &body_len) == 0 && status == 200 && body_len == 7 &&
              memcmp(body, "small-3", 7) == 0,
          "%s: third answer after the file", engine);
    CHECK(at == got, "%s: %zu stray bytes", engine, got - at);
    free(buf);
}

static void test_whole_file(int port, const char *engine) {
    int fd = connect_to(port, 0);
    CHECK(fd >= 0, "%s: connect", engine);
    if (fd < 0) return;
    CHECK(send_all(fd, "GET /file HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") == 0, "%s: send", engine);
    size_t cap = FILE_SIZE + 4096;
    uint8_t *buf = malloc(cap);
    size_t got = read_all(fd, buf, cap);
    close(fd);
    size_t at = 0;
    int status = 0;
    const uint8_t *body = NULL;
    size_t body_len = 0;
    int r = next_response(buf, got, &at, &status, &body, &body_len);
    CHECK(r == 0 && status == 200 && body_len == FILE_SIZE + 2, "%s: whole file: %zu bytes", engine, body_len);
    if (r == 0) CHECK(memcmp(body + 1, g_content, FILE_SIZE) == 0, "%s: whole file bytes differ", engine);
    free(buf);
}

static void test_head_and_refusals(int port, const char *engine) {
    int fd = connect_to(port, 0);
    CHECK(fd >= 0, "%s: connect", engine);
    if (fd < 0) return;
    CHECK(send_all(fd, "HEAD /file HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") == 0, "%s: send", engine);
    uint8_t buf[4096];
    size_t got = read_all(fd, buf, sizeof buf);
    close(fd);
    char expect[64];
    snprintf(expect, sizeof expect, "Content-Length: %zu\r\n", FILE_SIZE + 2);
    CHECK(got > 4 && memmem(buf, got, expect, strlen(expect)) != NULL, "%s: HEAD length", engine);
    CHECK(got > 4 && memcmp(buf + got - 4, "\r\n\r\n", 4) == 0, "%s: HEAD sent body bytes", engine);

    atomic_store(&g_refusals_ok, -1);
    fd = connect_to(port, 0);
    CHECK(fd >= 0, "%s: connect", engine);
    if (fd < 0) return;
    CHECK(send_all(fd, "GET /refuse HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") == 0, "%s: send", engine);
    got = read_all(fd, buf, sizeof buf);
    close(fd);
    size_t at = 0;
    int status = 0;
    const uint8_t *body = NULL;
    size_t body_len = 0;
    CHECK(next_response(buf, got, &at, &status, &body, &body_len) == 0 && status == 200 && body_len == 2,
          "%s: /refuse answer", engine);
    CHECK(atomic_load(&g_refusals_ok) == 1, "%s: a refused prg_write_file did not return -1 and close its fd",
          engine);
}

static void test_truncated(int port, const char *engine) {
    /* Promises 100 bytes more than the file has: the connection must close
     * after what the file holds, never hang or pad. */
    int fd = connect_to(port, 0);
    CHECK(fd >= 0, "%s: connect", engine);
    if (fd < 0) return;
    char req[256];
    snprintf(req, sizeof req, "GET /file?off=0&len=%zu HTTP/1.1\r\nHost: x\r\n\r\n", FILE_SIZE + 100);
    CHECK(send_all(fd, req) == 0, "%s: send", engine);
    size_t cap = FILE_SIZE + 8192;
    uint8_t *buf = malloc(cap);
    int64_t start = now_ms();
    size_t got = read_all(fd, buf, cap);
    close(fd);
    const uint8_t *end = memmem(buf, got, "\r\n\r\n", 4);
    CHECK(end != NULL, "%s: truncated: no head", engine);
    if (end) {
        size_t body = got - (size_t)(end + 4 - buf);
        CHECK(body == FILE_SIZE + 1, "%s: truncated: %zu body bytes before the close", engine, body);
    }
    CHECK(now_ms() - start < 15000, "%s: truncated: the close took %lld ms", engine, (long long)(now_ms() - start));
    free(buf);
}

static void test_client_leaves(int port, const char *engine, int baseline) {
    for (int round = 0; round < 3; round++) {
        int fd = connect_to(port, 4096);
        CHECK(fd >= 0, "%s: connect", engine);
        if (fd < 0) return;
        CHECK(send_all(fd, "GET /file HTTP/1.1\r\nHost: x\r\n\r\n") == 0, "%s: send", engine);
        uint8_t buf[65536];
        size_t got = 0;
        while (got < sizeof buf) {
            ssize_t r = recv(fd, buf + got, sizeof buf - got, 0);
            if (r <= 0) break;
            got += (size_t)r;
        }
        CHECK(got == sizeof buf, "%s: partial read %zu", engine, got);
        /* Unread data: close sends a reset; later sends fail (EPIPE, ECONNRESET). */
        close(fd);
    }
    CHECK(wait_fds(baseline, now_ms() + 15000), "%s: descriptors: %d open, baseline %d", engine, count_fds(),
          baseline);
    int fd = connect_to(port, 0);
    CHECK(fd >= 0, "%s: connect after", engine);
    if (fd < 0) return;
    CHECK(send_all(fd, "GET /small?n=9 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") == 0, "%s: send", engine);
    uint8_t buf[1024];
    size_t got = read_all(fd, buf, sizeof buf);
    close(fd);
    CHECK(got > 7 && memcmp(buf + got - 7, "small-9", 7) == 0, "%s: server answers after a client left", engine);
}



/* A pipelined burst of requests for a tiny file, the client not reading:
 * reading pauses once PRG_MAX_QUEUED_FILES file links (open descriptors)
 * are queued, long before max_output bytes would stop it. */
static void test_queue_file_cap(void) {
    bare b;
    bare_init(&b);
    b.server.cb.on_request = on_request;
    if (prg_loop_init_context(&b.loop) != 0) {
        CHECK(0, "prg_loop_init_context");
        return;
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) {
        CHECK(0, "socketpair: %s", strerror(errno));
        return;
    }
    prg_conn *c = prg_conn_open(&b.loop, sv[0]);
    char burst[100 * 64];
    size_t len = 0;
    for (int i = 0; i < 100; i++)
        len += (size_t)snprintf(burst + len, sizeof burst - len, "GET /file?off=0&len=10 HTTP/1.1\r\nHost: x\r\n\r\n");
    CHECK(send(sv[1], burst, len, 0) == (ssize_t)len, "send burst");
    int before = count_fds();
    prg_conn_on_readable(c);   /* one read, answered into the queue, nothing flushed yet */
    unsigned files = 0;
    for (prg_chunk *k = c->out_head; k; k = k->next) files += k->is_file;
    CHECK(files == PRG_MAX_QUEUED_FILES, "%u file links queued, cap %u", files, PRG_MAX_QUEUED_FILES);
    CHECK(c->flags & CONN_PAUSED, "reading did not pause");
    CHECK(c->out_bytes < b.server.cfg.max_output, "the byte limit paused it, not the file cap");
    CHECK(count_fds() - before == (int)files, "%d descriptors opened for %u links", count_fds() - before, files);
    prg_conn_close_now(c, PRG_CLOSE_ERROR);
    prg_conn_free(c);
    close(sv[1]);
    CHECK(count_fds() == before - 2, "descriptors left after the close");   /* the pair is closed too */
    prg_loop_free_context(&b.loop);
}

typedef struct mode {
    const char *name;
    prg_engine engine;
    prg_trigger trigger;
    bool one_request;   /* blocking: one request per connection */
} mode;

int main(void) {
    snprintf(g_path, sizeof g_path, "/tmp/prg_sendfile_XXXXXX");
    int tmp = mkstemp(g_path);
    if (tmp < 0) {
        perror("mkstemp");
        return 1;
    }
    g_content = malloc(FILE_SIZE);
    for (size_t i = 0; i < FILE_SIZE; i++) g_content[i] = (uint8_t)(i * 7 + i / 251);
    for (size_t w = 0; w < FILE_SIZE;) {
        ssize_t r = write(tmp, g_content + w, FILE_SIZE - w);
        if (r <= 0) {
            perror("write");
            return 1;
        }
        w += (size_t)r;
    }
    close(tmp);

    int before_queue = g_failed;
    test_queue_order();
    test_queue_epipe();
    test_queue_dropped();
    test_queue_file_cap();
    printf("%s send queue alone (socketpair)\n", g_failed == before_queue ? "ok  " : "FAIL");

    static const mode modes[] = {
        {"epoll/level", PRG_ENGINE_EPOLL, PRG_TRIGGER_LEVEL, false},
        {"epoll/edge", PRG_ENGINE_EPOLL, PRG_TRIGGER_EDGE, false},
        {"epoll/oneshot", PRG_ENGINE_EPOLL, PRG_TRIGGER_ONESHOT, false},
        {"libev", PRG_ENGINE_LIBEV, PRG_TRIGGER_LEVEL, false},
        {"threaded", PRG_ENGINE_THREADED, PRG_TRIGGER_LEVEL, false},
        {"blocking", PRG_ENGINE_BLOCKING, PRG_TRIGGER_LEVEL, true},
    };
    for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
        prg_config cfg;
        prg_config_default(&cfg);
        cfg.host = "127.0.0.1";
        cfg.port = 0;
        cfg.engine = modes[m].engine;
        cfg.trigger = modes[m].trigger;
        prg_callbacks cb = {.ctx = NULL, .on_request = on_request};
        int err = 0;
        prg_server *s = prg_server_create(&cfg, &cb, &err);
        if (!s) {
            fprintf(stderr, "FAIL %s: prg_server_create: %d\n", modes[m].name, err);
            g_failed++;
            continue;
        }
        if (prg_server_start(s) != 0) {
            fprintf(stderr, "FAIL %s: prg_server_start\n", modes[m].name);
            g_failed++;
            prg_server_destroy(s);
            continue;
        }
        int port = prg_server_port(s);
        int before = g_failed;
        int baseline = count_fds();
        if (!modes[m].one_request) test_pipelined(port, modes[m].name);
        test_whole_file(port, modes[m].name);
        test_head_and_refusals(port, modes[m].name);
        test_truncated(port, modes[m].name);
        test_client_leaves(port, modes[m].name, baseline);
        prg_server_stop(s);
        prg_server_wait(s);
        prg_server_destroy(s);
        printf("%s %s\n", g_failed == before ? "ok  " : "FAIL", modes[m].name);
    }
    unlink(g_path);
    free(g_content);
    printf("test_sendfile: %s\n", g_failed ? "FAILED" : "all passed");
    return g_failed ? 1 : 0;
}
