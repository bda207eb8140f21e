/*
 * test_defer_body.c: a deferred answer while the request body streams
 * (prg_defer in on_head after prg_body_stream, or in on_body_end), on every
 * engine (the echo on the event engines only: it pauses the body), over
 * loopback sockets, under ASan, UBSan and LSan.
 *
 *  - deferred in on_head (after prg_body_stream, or before it), answered
 *    after the body completed: 100 Continue still goes out, no 500 at the
 *    body's end, keep-alive afterwards
 *  - deferred in on_head, answered before the body arrived: the body is
 *    still read to its end, then the connection goes on
 *  - echo of 4 MiB: the answer streams while the body arrives, to a client
 *    that reads slowly; the stream's level stays bounded (the producer is
 *    told to wait, the body is paused) and every byte comes back in order
 *  - the client leaves mid-body (reset, or a half-close): the handle's later
 *    operations are refused with -ECONNRESET; nothing leaks
 *  - body too large with the handle held: 413 in its place and the handle
 *    refused; once its head was written, the connection closes after it
 *  - a stalled body with the handle held: 408, the handle refused -ETIMEDOUT
 *  - a pipelined request behind a deferred, streamed answer waits for its end
 *  - deferred from on_body_end(COMPLETE): no 500, the late answer goes out
 */
#include "harness.h"

#include <pthread.h>
#include <stdbool.h>

static atomic_int g_end = -1;          /* last on_body_end state */
static atomic_int g_ends;              /* on_body_end count */
static atomic_llong g_body_bytes;      /* body bytes delivered to on_body */

/* The echo handler's state (loop thread, one echo at a time). */
static struct {
    prg_deferred *d;
    int write_errors;
    int waits, pauses, resumes;
    size_t max_level;
} g_echo;
/* Set once the producer was first told to wait: the client reads nothing
 * until then, so the output backs up however fast either side runs. */
static atomic_int g_echo_waited;

static void echo_writable(void *ctx) {
    g_echo.resumes++;
    (void)prg_body_resume(ctx);   /* -1 once the body ended (the peer went): nothing to resume */
}

static void on_request(void *ctx, prg_conn *c, const prg_request *req) {
    (void)ctx;
    (void)req;
    CHECK(prg_send(c, 200, "text/plain", 10, "now", 3) == 0, "inline answer");
}

static int g_late_marker;
enum { ECHO_LOW = 16 * 1024, ECHO_HIGH = 64 * 1024 };   /* the stream of a /late request */

static void on_head(void *ctx, prg_conn *c, const prg_request *req) {
    (void)ctx;
    bool late = th_target_is(req, "/late");   /* deferred in on_body_end */
    if (th_target_is(req, "/first")) {
        /* Deferred first, then the stream: the same as the other order. */
        prg_deferred *d = prg_defer(c);
        CHECK(d != NULL, "prg_defer in on_head");
        CHECK(prg_body_stream(c, NULL) == 0, "prg_body_stream after prg_defer");
        if (d) th_deferred_take(d);
        return;
    }
    CHECK(prg_body_stream(c, late ? &g_late_marker : NULL) == 0, "prg_body_stream");
    if (late) return;
    prg_deferred *d = prg_defer(c);
    CHECK(d != NULL, "prg_defer in on_head after prg_body_stream");
    if (!d) return;
    if (th_target_is(req, "/echo")) {
        g_echo.d = d;
        /* Marks under the connection's own output limit, so both kinds of
         * backpressure take turns. */
        CHECK(prg_stream_set_watermarks(d, ECHO_LOW, ECHO_HIGH) == 0, "echo marks");
        CHECK(prg_stream_head(d, 200) == 0, "echo head");
        prg_stream_on_writable(d, echo_writable, c);
        return;
    }
    th_deferred_take(d);
}

static size_t on_body(void *ctx, prg_conn *c, void *stream, const uint8_t *p, size_t n) {
    (void)ctx;
    (void)stream;
    atomic_fetch_add(&g_body_bytes, (long long)n);
    if (g_echo.d) {
        int rc = prg_stream_write(g_echo.d, p, n);
        size_t level = prg_stream_queued(g_echo.d);
        if (level > g_echo.max_level) g_echo.max_level = level;
        if (rc < 0) g_echo.write_errors++;
        if (rc == PRG_STREAM_WAIT) {
            g_echo.waits++;
            if (prg_body_pause(c) == 0) g_echo.pauses++;
            atomic_store(&g_echo_waited, 1);
        }
    }
    return n;
}

static void on_body_end(void *ctx, prg_conn *c, void *stream, int end) {
    (void)ctx;
    if (g_echo.d) {
        prg_deferred *d = g_echo.d;
        g_echo.d = NULL;
        prg_stream_on_writable(d, NULL, NULL);
        if (end == PRG_BODY_COMPLETE) CHECK(prg_stream_end(d) == 0, "echo end");
        prg_deferred_release(d);
    } else if (end == PRG_BODY_COMPLETE && stream == &g_late_marker) {
        /* /late: the answer is decided only now. */
        prg_deferred *d = prg_defer(c);
        CHECK(d != NULL, "prg_defer in on_body_end(COMPLETE)");
        if (d) th_deferred_take(d);
    }
    atomic_store(&g_end, end);
    atomic_fetch_add(&g_ends, 1);
}

static prg_server *start(const th_engine *e, int idle_timeout_s, uint64_t max_streamed) {
    prg_config cfg;
    th_config(&cfg, e);
    if (idle_timeout_s) cfg.idle_timeout_s = idle_timeout_s;
    if (max_streamed) cfg.max_streamed_body = max_streamed;
    prg_callbacks cb = {.on_request = on_request,
                        .on_head = on_head,
                        .on_body = on_body,
                        .on_body_end = on_body_end,
                        .on_close = th_count_close};
    atomic_store(&th_deferred()->last, NULL);
    atomic_store(&g_end, -1);
    atomic_store(&g_body_bytes, 0);
    memset(&g_echo, 0, sizeof g_echo);
    atomic_store(&g_echo_waited, 0);
    return th_start(&cfg, &cb);
}

static bool read_until(th_client *c, const char *text) {
    for (;;) {
        if (memmem(c->buf, c->len, text, strlen(text))) return true;
        if (th_fill(c) <= 0) return false;
    }
}

/* Waits (at most 5 s) for on_body_end after `before` ends; returns its state. */
static int wait_end(int before) {
    int64_t until = th_now_ms() + 5000;
    while (atomic_load(&g_ends) == before && th_now_ms() < until) usleep(1000);
    CHECK(atomic_load(&g_ends) > before, "on_body_end within 5 s");
    return atomic_load(&g_end);
}

static bool nothing_arrives(th_client *c, int ms) {
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    return c->len == 0 && poll(&p, 1, ms) == 0;
}

static const th_engine *g_engine;   /* the engine under test */

/* Keep-alive after the answer; the blocking engine closes instead. */
static void keep_alive_check(th_client *c) {
    if (!th_keeps_alive(g_engine)) {
        CHECK(th_fill(c) == 0, "the blocking engine closes after the answer");
        return;
    }
    th_send(c, "GET /now HTTP/1.1\r\nHost: t\r\n\r\n");
    th_response r;
    CHECK(th_read_response(c, &r) == 0 && r.status == 200 && r.body_len == 3, "keep-alive: next answer, got %d",
          r.status);
}

static void test_answer_after_body(const th_engine *e, const char *target) {
    th_case = strcmp(target, "/first") == 0 ? "answer after the body (deferred before the stream)" : "answer after the body";
    prg_server *s = start(e, 0, 0);
    th_client *c = th_connect(prg_server_port(s));
    int before = atomic_load(&th_deferred()->count), ends = atomic_load(&g_ends);
    char head[256];
    snprintf(head, sizeof head, "POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n", target);
    th_send(c, head);
    prg_deferred *d = th_wait_deferred(before);
    CHECK(read_until(c, "HTTP/1.1 100 Continue\r\n\r\n"), "100 Continue while the answer is deferred");
    c->len = 0;
    th_send(c, "0123456789");
    CHECK(wait_end(ends) == PRG_BODY_COMPLETE, "body complete");
    CHECK(atomic_load(&g_body_bytes) == 10, "10 body bytes, got %lld", (long long)atomic_load(&g_body_bytes));
    CHECK(nothing_arrives(c, 200), "no 500 at the body's end: the answer is deferred");
    CHECK(prg_stream_state(d) == PRG_STREAM_OPEN, "still open");
    CHECK(prg_deferred_send(d, 200, "got 10", 6) == 0, "the deferred answer");
    prg_deferred_release(d);
    th_response r;
    CHECK(th_read_response(c, &r) == 0 && r.status == 200 && r.body_len == 6 && memcmp(r.body, "got 10", 6) == 0,
          "the answer, got %d", r.status);
    CHECK(!th_keeps_alive(e) || !strstr(r.head, "Connection: close"), "keeps the connection: %s", r.head);
    keep_alive_check(c);
    th_close(c);
    th_stop(s);
}

static void test_answer_before_body(const th_engine *e) {
    th_case = "answer before the body";
    prg_server *s = start(e, 0, 0);
    th_client *c = th_connect(prg_server_port(s));
    int before = atomic_load(&th_deferred()->count), ends = atomic_load(&g_ends);
    th_send(c, "POST /hold HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n01234");
    prg_deferred *d = th_wait_deferred(before);
    CHECK(prg_deferred_send(d, 201, "early", 5) == 0, "answered while the body streams");
    CHECK(prg_deferred_send(d, 200, "x", 1) == -EALREADY, "a second answer");
    th_response r;
    CHECK(th_read_response(c, &r) == 0 && r.status == 201 && r.body_len == 5, "the early answer, got %d", r.status);
    CHECK(atomic_load(&g_ends) == ends, "the body has not ended");
    prg_deferred_release(d);
    th_send(c, "56789");
    CHECK(wait_end(ends) == PRG_BODY_COMPLETE, "the body is read to its end");
    CHECK(atomic_load(&g_body_bytes) == 10, "10 body bytes");
    keep_alive_check(c);
    th_close(c);
    th_stop(s);
}

/* ---------------------------------------------------------------- echo */

enum { ECHO_BYTES = 4 << 20 };

static uint8_t pattern(size_t i) { return (uint8_t)((i * 31u + (i >> 12)) & 0xff); }

static void *send_body(void *arg) {
    th_client *c = arg;
    th_send(c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4194304\r\n\r\n");
    uint8_t block[8192];
    for (size_t at = 0; at < ECHO_BYTES; at += sizeof block) {
        for (size_t i = 0; i < sizeof block; i++) block[i] = pattern(at + i);
        size_t off = 0;
        while (off < sizeof block) {
            ssize_t w = send(c->fd, block + off, sizeof block - off, MSG_NOSIGNAL);
            if (w <= 0) return NULL;
            off += (size_t)w;
        }
    }
    return NULL;
}

/* A slow read: at most 4 KiB, after a pause. */
static ssize_t slow_fill(th_client *c) {
    usleep(200);
    ssize_t n = recv(c->fd, c->buf + c->len, 4096, 0);
    if (n > 0) c->len += (size_t)n;
    return n;
}

/* Reads the chunked echo slowly; returns the body bytes that matched. */
static size_t read_echo(th_client *c) {
    CHECK(read_until(c, "\r\n\r\n"), "echo head");
    char *end = memmem(c->buf, c->len, "\r\n\r\n", 4);
    if (!end) return 0;
    CHECK(strncmp(c->buf, "HTTP/1.1 200", 12) == 0 && memmem(c->buf, c->len, "chunked", 7), "chunked 200");
    th_consume(c, (size_t)(end - c->buf) + 4);
    size_t got = 0;
    for (;;) {
        char *crlf;
        while (!(crlf = memmem(c->buf, c->len, "\r\n", 2)))
            if (th_fill(c) <= 0) return got;
        size_t size = (size_t)strtoull(c->buf, NULL, 16);
        size_t line = (size_t)(crlf - c->buf) + 2;
        th_consume(c, line);
        if (size == 0) {
            while (c->len < 2)
                if (th_fill(c) <= 0) return got;
            th_consume(c, 2);
            return got;
        }
        while (size > 0) {
            while (c->len == 0)
                if (slow_fill(c) <= 0) return got;
            size_t take = c->len < size ? c->len : size;
            for (size_t i = 0; i < take; i++)
                if ((uint8_t)c->buf[i] != pattern(got + i)) {
                    CHECK(0, "echo byte %zu differs", got + i);
                    return got;
                }
            got += take;
            size -= take;
            th_consume(c, take);
        }
        while (c->len < 2)
            if (th_fill(c) <= 0) return got;
        th_consume(c, 2);
    }
}

/* The server's end of the client's connection (the server runs in this
 * process): found by its peer address, once accepted (at most 5 s). */
static int server_side_fd(const th_client *c) {
    struct sockaddr_in mine;
    socklen_t ml = sizeof mine;
    if (getsockname(c->fd, (struct sockaddr *)&mine, &ml) != 0) return -1;
    for (int64_t until = th_now_ms() + 5000; th_now_ms() < until; usleep(1000)) {
        for (int fd = 3; fd < 4096; fd++) {
            struct sockaddr_in peer;
            socklen_t pl = sizeof peer;
            if (fd == c->fd || getpeername(fd, (struct sockaddr *)&peer, &pl) != 0 || pl != sizeof peer) continue;
            if (peer.sin_port == mine.sin_port && peer.sin_addr.s_addr == mine.sin_addr.s_addr) return fd;
        }
    }
    return -1;
}

static void test_echo(const th_engine *e) {
    th_case = "echo 4 MiB";
    prg_server *s = start(e, 0, 0);
    th_client *c = th_connect(prg_server_port(s));
    int small = 64 * 1024;   /* the client's receive window small: the server's output backs up */
    CHECK(setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small) == 0, "SO_RCVBUF");
    /* And the server's send buffer: otherwise the kernel holds the whole
     * echo and neither side ever waits. */
    int server_fd = server_side_fd(c);
    CHECK(server_fd >= 0 && setsockopt(server_fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small) == 0,
          "SO_SNDBUF on the server's socket");
    int ends = atomic_load(&g_ends);
    pthread_t sender;
    CHECK(pthread_create(&sender, NULL, send_body, c) == 0, "sender thread");
    /* Nothing is read until the server's output has backed up to the high
     * mark (4 MiB is far more than both socket buffers and the mark hold);
     * a reader that kept pace with the sender would never make it wait. */
    for (int64_t until = th_now_ms() + 10000; !atomic_load(&g_echo_waited) && th_now_ms() < until;) usleep(1000);
    CHECK(atomic_load(&g_echo_waited), "the server's output backed up while the client read nothing");
    size_t got = read_echo(c);
    pthread_join(sender, NULL);
    CHECK(got == ECHO_BYTES, "every byte echoed in order: %zu of %d", got, ECHO_BYTES);
    CHECK(wait_end(ends) == PRG_BODY_COMPLETE, "body complete");
    /* Read on the loop thread during the echo; it has ended now. */
    CHECK(g_echo.write_errors == 0, "no write refused");
    CHECK(g_echo.waits > 0 && g_echo.pauses == g_echo.waits, "the producer was told to wait (%d) and paused the body (%d)",
          g_echo.waits, g_echo.pauses);
    CHECK(g_echo.resumes > 0, "on_writable resumed the body (%d)", g_echo.resumes);
    /* At most the high mark, plus the write that crossed it (one receive
     * block), plus chunk framing (the level counts queued bytes as sent,
     * "4000\r\n...\r\n": 8 per chunk, a few chunks queued). */
    CHECK(g_echo.max_level <= ECHO_HIGH + 16384 + 256, "the level stayed bounded: %zu", g_echo.max_level);
    keep_alive_check(c);
    printf("  %s echo: %d waits, %d resumes, max level %zu\n", e->name, g_echo.waits, g_echo.resumes,
           g_echo.max_level);
    th_close(c);
    th_stop(s);
}

/* ------------------------------------------------------------ failures */

static void test_client_gone(const th_engine *e) {
    th_case = "client gone mid-body";
    prg_server *s = start(e, 0, 0);
    /* Reset while the stream is headed and writing. */
    th_client *c = th_connect(prg_server_port(s));
    int before = atomic_load(&th_deferred()->count), ends = atomic_load(&g_ends);
    int closed = atomic_load(&th_deferred()->closed);
    th_send(c, "POST /hold HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nhalf");
    prg_deferred *d = th_wait_deferred(before);
    CHECK(prg_stream_head(d, 200) == 0, "head");
    CHECK(prg_stream_write(d, "partial", 7) == 0, "write");
    CHECK(read_until(c, "partial"), "what was written arrives");
    th_reset(c);
    th_wait_closed(closed);
    int end = wait_end(ends);
    CHECK(end == PRG_BODY_CLIENT_GONE, "body end CLIENT_GONE, got %d", end);
    CHECK(prg_stream_write(d, "more", 4) == -ECONNRESET, "a later write refused");
    CHECK(prg_stream_end(d) == -ECONNRESET, "a later end refused");
    CHECK(prg_stream_state(d) == PRG_STREAM_PEER_GONE, "peer gone");
    prg_deferred_release(d);

    /* A half-close mid-body, the handle not yet headed. */
    c = th_connect(prg_server_port(s));
    before = atomic_load(&th_deferred()->count);
    ends = atomic_load(&g_ends);
    th_send(c, "POST /hold HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nhalf");
    d = th_wait_deferred(before);
    CHECK(shutdown(c->fd, SHUT_WR) == 0, "half-close");
    end = wait_end(ends);
    CHECK(end == PRG_BODY_CLIENT_GONE, "body end CLIENT_GONE after a half-close, got %d", end);
    CHECK(prg_deferred_send(d, 200, "late", 4) == -ECONNRESET, "the answer refused");
    CHECK(th_closed(c), "the connection closes, unanswered");
    prg_deferred_release(d);
    th_close(c);
    th_stop(s);
}

static void test_too_large(const th_engine *e) {
    th_case = "body too large";
    prg_server *s = start(e, 0, 100);
    th_client *c = th_connect(prg_server_port(s));
    int before = atomic_load(&th_deferred()->count), ends = atomic_load(&g_ends);
    th_send(c, "POST /hold HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    prg_deferred *d = th_wait_deferred(before);
    th_send(c, "50\r\n");
    char chunk[81];
    memset(chunk, 'a', 80);
    chunk[80] = 0;
    th_send(c, chunk);
    th_send(c, "\r\n50\r\n");
    th_send(c, chunk);
    th_response r;
    CHECK(th_read_response(c, &r) == 0 && r.status == 413, "413 in the deferred answer's place, got %d", r.status);
    CHECK(wait_end(ends) == PRG_BODY_TOO_LARGE, "body end TOO_LARGE");
    CHECK(prg_deferred_send(d, 200, "x", 1) == -ECONNRESET, "the handle refused");
    CHECK(th_closed(c), "closed after the 413");
    prg_deferred_release(d);
    th_close(c);

    /* Headed already: the connection closes after what was written. */
    c = th_connect(prg_server_port(s));
    before = atomic_load(&th_deferred()->count);
    ends = atomic_load(&g_ends);
    th_send(c, "POST /hold HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    d = th_wait_deferred(before);
    CHECK(prg_stream_head(d, 200) == 0, "head");
    CHECK(prg_stream_write(d, "partial", 7) == 0, "write");
    CHECK(read_until(c, "partial\r\n"), "the head and a chunk arrive");
    th_send(c, "50\r\n");
    th_send(c, chunk);
    th_send(c, "\r\n50\r\n");
    th_send(c, chunk);
    CHECK(wait_end(ends) == PRG_BODY_TOO_LARGE, "body end TOO_LARGE");
    CHECK(prg_stream_write(d, "more", 4) == -ECONNRESET, "a later write refused");
    ssize_t n;
    while ((n = th_fill(c)) > 0) {}
    CHECK(n == 0 && !memmem(c->buf, c->len, "0\r\n\r\n", 5) && !memmem(c->buf, c->len, "413", 3),
          "closed after what was written, no last chunk, no 413: %.*s", (int)c->len, c->buf);
    prg_deferred_release(d);
    th_close(c);
    th_stop(s);
}

static void test_body_timeout(const th_engine *e) {
    th_case = "stalled body";
    prg_server *s = start(e, 1, 0);
    th_client *c = th_connect(prg_server_port(s));
    int before = atomic_load(&th_deferred()->count), ends = atomic_load(&g_ends);
    th_send(c, "POST /hold HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n01234");
    prg_deferred *d = th_wait_deferred(before);
    th_response r;
    CHECK(th_read_response(c, &r) == 0 && r.status == 408, "408 for the stalled body, got %d", r.status);
    CHECK(wait_end(ends) == PRG_BODY_TIMED_OUT, "body end TIMED_OUT");
    CHECK(prg_deferred_send(d, 200, "x", 1) == -ETIMEDOUT, "the handle refused with -ETIMEDOUT");
    CHECK(prg_stream_state(d) == PRG_STREAM_TIMED_OUT, "timed out");
    prg_deferred_release(d);
    th_close(c);
    th_stop(s);
}

/* ------------------------------------------------------------- order */

static void test_pipelined(const th_engine *e) {
    th_case = "pipelined behind a deferred stream";
    prg_server *s = start(e, 0, 0);
    th_client *c = th_connect(prg_server_port(s));
    int before = atomic_load(&th_deferred()->count), ends = atomic_load(&g_ends);
    th_send(c, "POST /hold HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhelloGET /now HTTP/1.1\r\nHost: t\r\n\r\n");
    prg_deferred *d = th_wait_deferred(before);
    CHECK(prg_stream_head(d, 200) == 0, "head");
    CHECK(prg_stream_write(d, "ab", 2) == 0, "write");
    CHECK(read_until(c, "2\r\nab\r\n"), "the stream's first chunk");
    CHECK(wait_end(ends) == PRG_BODY_COMPLETE, "the body ended before the answer");
    char *tail = memmem(c->buf, c->len, "2\r\nab\r\n", 7);
    CHECK(tail && (size_t)(tail + 7 - c->buf) == c->len, "nothing after the chunk: %.*s", (int)c->len, c->buf);
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    CHECK(poll(&p, 1, 300) == 0, "nothing of /now while the stream is open");
    CHECK(prg_stream_write(d, "cd", 2) == 0, "write");
    CHECK(prg_stream_end(d) == 0, "end");
    prg_deferred_release(d);
    th_response r;
    CHECK(th_read_response(c, &r) == 0 && r.status == 200 && r.chunked && r.body_len == 4 &&
              memcmp(r.body, "abcd", 4) == 0,
          "the stream first, got %d %zu", r.status, r.body_len);
    CHECK(th_read_response(c, &r) == 0 && r.status == 200 && r.body_len == 3 && memcmp(r.body, "now", 3) == 0,
          "then /now, got %d", r.status);
    keep_alive_check(c);
    th_close(c);
    th_stop(s);
}

static void test_defer_in_body_end(const th_engine *e) {
    th_case = "deferred in on_body_end";
    prg_server *s = start(e, 0, 0);
    th_client *c = th_connect(prg_server_port(s));
    int before = atomic_load(&th_deferred()->count);
    th_send(c, "POST /late HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
    prg_deferred *d = th_wait_deferred(before);
    CHECK(nothing_arrives(c, 200), "no 500: the answer is deferred");
    CHECK(prg_deferred_send(d, 200, "late", 4) == 0, "the late answer");
    prg_deferred_release(d);
    th_response r;
    CHECK(th_read_response(c, &r) == 0 && r.status == 200 && r.body_len == 4 && memcmp(r.body, "late", 4) == 0,
          "the late answer, got %d", r.status);
    keep_alive_check(c);
    th_close(c);
    th_stop(s);
}

int main(void) {
    for (size_t i = 0; i < TH_ALL_ENGINES; i++) {
        const th_engine *e = &th_all_engines[i];
        g_engine = e;
        fprintf(stderr, "defer_body: %s\n", e->name);
        test_answer_after_body(e, "/hold");
        test_answer_after_body(e, "/first");
        test_answer_before_body(e);
        /* The echo pauses the body when its stream is full: prg_body_pause is
         * an event-engine feature (a blocking engine's handler blocks in
         * on_body instead, which cannot wait for its own thread's writes). */
        if (e->engine != PRG_ENGINE_THREADED && e->engine != PRG_ENGINE_BLOCKING) test_echo(e);
        test_client_gone(e);
        test_too_large(e);
        test_body_timeout(e);
        if (th_keeps_alive(e)) test_pipelined(e);
        test_defer_in_body_end(e);
    }
    return th_report("test_defer_body");
}
