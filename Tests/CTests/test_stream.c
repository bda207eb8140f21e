/*
 * test_stream.c: response streams (csrc/offload.c, prg_stream_*), on every
 * engine (the blocking ones included: each context has its own mailbox), over loopback sockets, under ASan, UBSan and LSan (a stream
 * that is never freed is a leak report at exit).
 *
 *  - many writes, chunked, with trailers; end twice, write and trailer after
 *    the end, head twice, write before the head: refused by the core
 *  - many writes with a declared Content-Length; a write beyond it refused
 *    (-EMSGSIZE); an end short of it closes the connection after the body
 *  - pipelined order: a later inline answer waits until the stream ended
 *  - a write after the client left: -ECONNRESET, state PEER_GONE, no leak
 *  - released mid-body: the connection closes, the client sees no last chunk
 *  - watermarks: a client that does not read keeps the level bounded; the
 *    producer is told to wait and woken by on_writable; every byte arrives
 *  - handler timeout: 503 before the head; once headed the stream is not late
 */
#include "harness.h"

#include <pthread.h>
#include <stdbool.h>

static void on_request(void *ctx, prg_conn *c, const prg_request *req) {
    (void)ctx;
    if (th_target_is(req, "/now")) {
        CHECK(prg_send(c, 200, "text/plain", 10, "now", 3) == 0, "inline answer");
        return;
    }
    prg_deferred *d = prg_defer(c);
    CHECK(d != NULL, "prg_defer (every engine defers)");
    th_deferred_take(d);
}

static prg_deferred *request(th_client *c, const char *text) {
    int before = atomic_load(&th_deferred()->count);
    th_send(c, text);
    return th_wait_deferred(before);
}

static prg_server *start(const th_engine *e, int handler_timeout_s) {
    prg_config cfg;
    th_config(&cfg, e);
    cfg.handler_timeout_s = handler_timeout_s;
    prg_callbacks cb = {.on_request = on_request, .on_close = th_count_close};
    return th_start(&cfg, &cb);
}

/* Reads until `text` is in the client's buffer (5 s per read); true if found. */
static bool read_until(th_client *c, const char *text) {
    for (;;) {
        if (memmem(c->buf, c->len, text, strlen(text))) return true;
        if (th_fill(c) <= 0) return false;
    }
}

static void test_chunked_trailers(const th_engine *e) {
    th_case = "chunked with trailers";
    prg_server *s = start(e, 0);
    th_client *c = th_connect(prg_server_port(s));
    prg_deferred *d = request(c, "GET /stream HTTP/1.1\r\nHost: t\r\n\r\n");
    CHECK(prg_stream_write(d, "x", 1) == -EPROTO, "write before the head");
    CHECK(prg_stream_end(d) == -EPROTO, "end before the head");
    CHECK(prg_stream_state(d) == PRG_STREAM_OPEN, "open");
    CHECK(prg_deferred_header(d, "Content-Type", 12, "text/event-stream", 17) == 0, "header");
    CHECK(prg_stream_head(d, 200) == 0, "head");
    CHECK(prg_stream_head(d, 201) == -EALREADY, "head twice");
    CHECK(prg_deferred_header(d, "X-Late", 6, "1", 1) == -EALREADY, "header after the head");
    CHECK(prg_deferred_send(d, 200, "x", 1) == -EALREADY, "one-shot send after the head");
    CHECK(prg_stream_state(d) == PRG_STREAM_HEADED, "headed");
    /* The head goes out before any body. */
    CHECK(read_until(c, "\r\n\r\n"), "the head arrives alone");
    CHECK(memmem(c->buf, c->len, "Transfer-Encoding: chunked", 26) != NULL, "chunked: %.*s", (int)c->len, c->buf);
    char expect[4096] = "";
    for (int i = 0; i < 20; i++) {
        char piece[32];
        int n = snprintf(piece, sizeof piece, "data: %d\n\n", i);
        CHECK(prg_stream_write(d, piece, (size_t)n) == 0, "write %d", i);
        char framed[64];
        snprintf(framed, sizeof framed, "%x\r\n%s\r\n", n, piece);
        strcat(expect, framed);
    }
    CHECK(prg_stream_trailer(d, "X-Count", 7, "20", 2) == 0, "trailer");
    CHECK(prg_stream_end(d) == 0, "end");
    CHECK(prg_stream_end(d) == -EALREADY, "end twice");
    CHECK(prg_stream_write(d, "y", 1) == -EALREADY, "write after the end");
    CHECK(prg_stream_trailer(d, "X-A", 3, "b", 1) == -EALREADY, "trailer after the end");
    CHECK(prg_stream_state(d) == PRG_STREAM_ENDED, "ended");
    prg_deferred_release(d);
    strcat(expect, "0\r\nX-Count: 20\r\n\r\n");
    CHECK(read_until(c, "0\r\nX-Count: 20\r\n\r\n"), "the last chunk and the trailer");
    const char *body = memmem(c->buf, c->len, "\r\n\r\n", 4);
    CHECK(body && strlen(expect) == c->len - (size_t)(body + 4 - c->buf) && memcmp(body + 4, expect, strlen(expect)) == 0,
          "body framed as written: %.*s", (int)c->len, c->buf);
    c->len = 0;
    if (th_keeps_alive(e)) {
        /* The connection goes on. */
        th_send(c, "GET /now HTTP/1.1\r\nHost: t\r\n\r\n");
        th_response r;
        CHECK(th_read_response(c, &r) == 0 && r.status == 200 && r.body_len == 3, "next answer, got %d", r.status);
    } else {
        CHECK(th_fill(c) == 0, "the stream ended: the blocking engine closes");
    }
    th_close(c);
    th_stop(s);
}

static void test_content_length(const th_engine *e) {
    th_case = "content-length";
    prg_server *s = start(e, 0);
    th_client *c = th_connect(prg_server_port(s));
    /* Pipelined: the inline /now waits until the stream ended (the blocking
     * engine answers the first request only). */
    prg_deferred *d = request(c, "GET /stream HTTP/1.1\r\nHost: t\r\n\r\nGET /now HTTP/1.1\r\nHost: t\r\n\r\n");
    CHECK(prg_deferred_header(d, "Content-Length", 14, "30", 2) == 0, "length header");
    CHECK(prg_stream_head(d, 200) == 0, "head");
    for (int i = 0; i < 3; i++) CHECK(prg_stream_write(d, "0123456789", 10) == 0, "write %d", i);
    CHECK(prg_stream_write(d, "z", 1) == -EMSGSIZE, "a write beyond the declared length");
    /* Before the end: the stream's head and body, and nothing of /now. */
    CHECK(read_until(c, "012345678901234567890123456789"), "the body before the end");
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    CHECK(poll(&p, 1, 300) == 0, "nothing of /now while the stream is open");
    CHECK(prg_stream_end(d) == 0, "end");
    prg_deferred_release(d);
    th_response r;
    CHECK(th_read_response(c, &r) == 0 && r.status == 200 && r.body_len == 30 && !r.chunked,
          "the stream first, got %d len %zu", r.status, r.body_len);
    if (th_keeps_alive(e)) {
        CHECK(th_read_response(c, &r) == 0 && r.status == 200 && r.body_len == 3 && memcmp(r.body, "now", 3) == 0,
              "then the pipelined inline answer, got %d", r.status);
    } else {
        CHECK(th_fill(c) == 0, "then the blocking engine closes");
        th_close(c);
        c = th_connect(prg_server_port(s));
    }

    /* Short of the declared length: end says so, the connection closes after the body. */
    d = request(c, "GET /stream HTTP/1.1\r\nHost: t\r\n\r\n");
    CHECK(prg_deferred_header(d, "Content-Length", 14, "10", 2) == 0, "length header");
    CHECK(prg_stream_head(d, 200) == 0, "head");
    CHECK(prg_stream_write(d, "01234", 5) == 0, "write");
    CHECK(prg_stream_end(d) == -EMSGSIZE, "an end short of the length");
    prg_deferred_release(d);
    CHECK(read_until(c, "01234"), "the short body");
    CHECK(th_fill(c) == 0, "then the connection closes");
    th_close(c);
    th_stop(s);
}

static void test_pipelined_order(const th_engine *e) {
    th_case = "pipelined order";
    prg_server *s = start(e, 0);
    th_client *c = th_connect(prg_server_port(s));
    prg_deferred *d = request(c, "GET /stream HTTP/1.1\r\nHost: t\r\n\r\nGET /now HTTP/1.1\r\nHost: t\r\n\r\n");
    CHECK(prg_stream_head(d, 200) == 0, "head");
    CHECK(prg_stream_write(d, "first", 5) == 0, "write");
    CHECK(read_until(c, "5\r\nfirst\r\n"), "the first chunk");
    /* The inline answer is owed behind the stream: it must not show yet. */
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    CHECK(poll(&p, 1, 300) == 0, "nothing more while the stream is open");
    CHECK(prg_stream_write(d, "second", 6) == 0, "write");
    CHECK(prg_stream_end(d) == 0, "end");
    prg_deferred_release(d);
    CHECK(read_until(c, "0\r\n\r\n"), "the end");
    CHECK(read_until(c, "now"), "then /now");
    const char *end = memmem(c->buf, c->len, "0\r\n\r\n", 5);
    const char *now = memmem(c->buf, c->len, "\r\n\r\nnow", 7);
    CHECK(end && now && end < now, "the stream ended before /now's answer");
    th_close(c);
    th_stop(s);
}

static void test_peer_gone(const th_engine *e) {
    th_case = "peer gone";
    prg_server *s = start(e, 0);
    th_client *c = th_connect(prg_server_port(s));
    int closed_before = atomic_load(&th_deferred()->closed);
    prg_deferred *d = request(c, "GET /stream HTTP/1.1\r\nHost: t\r\n\r\n");
    CHECK(prg_stream_head(d, 200) == 0, "head");
    CHECK(prg_stream_write(d, "before", 6) == 0, "write");
    CHECK(read_until(c, "before"), "a chunk");
    th_reset(c);
    th_wait_closed(closed_before);
    CHECK(prg_stream_state(d) == PRG_STREAM_PEER_GONE, "state %d", prg_stream_state(d));
    CHECK(prg_stream_write(d, "after", 5) == -ECONNRESET, "write after the peer left");
    CHECK(prg_stream_end(d) == -ECONNRESET, "end after the peer left");
    prg_deferred_release(d);   /* the last reference: freed (LSan reports it otherwise) */

    /* Writes racing the close: each posted or refused, none touches freed memory. */
    c = th_connect(prg_server_port(s));
    d = request(c, "GET /stream HTTP/1.1\r\nHost: t\r\n\r\n");
    CHECK(prg_stream_head(d, 200) == 0, "head");
    th_reset(c);
    int rc = 0;
    for (int i = 0; i < 2000 && rc >= 0; i++) rc = prg_stream_write(d, "racing", 6);
    CHECK(rc >= 0 || rc == -ECONNRESET, "write racing a close returned %d", rc);
    prg_deferred_release(d);
    th_stop(s);
}

static void test_release_mid_body(const th_engine *e) {
    th_case = "release mid-body";
    prg_server *s = start(e, 0);
    th_client *c = th_connect(prg_server_port(s));
    prg_deferred *d = request(c, "GET /stream HTTP/1.1\r\nHost: t\r\n\r\n");
    CHECK(prg_stream_head(d, 200) == 0, "head");
    CHECK(prg_stream_write(d, "part", 4) == 0, "write");
    prg_deferred_release(d);
    CHECK(read_until(c, "4\r\npart\r\n"), "what was written");
    CHECK(th_fill(c) == 0, "then the connection closes");
    CHECK(memmem(c->buf, c->len, "0\r\n\r\n", 5) == NULL, "no last chunk: the client sees a truncated body");
    th_close(c);
    th_stop(s);
}

/* The producer of the watermark test: writes `total` bytes in blocks,
 * waiting for on_writable whenever told to. */
typedef struct producer {
    prg_deferred *d;
    size_t total, block;
    atomic_int woken;       /* on_writable runs */
    atomic_int waiting;     /* 1 while waiting for on_writable */
    int waits;
    size_t max_level;
    int result;
} producer;

static void on_writable(void *ctx) {
    producer *p = ctx;
    atomic_fetch_add(&p->woken, 1);
}

static void *produce(void *arg) {
    producer *p = arg;
    static char block[16384];
    memset(block, 'a', sizeof block);
    size_t sent = 0;
    while (sent < p->total) {
        int seen = atomic_load(&p->woken);
        int rc = prg_stream_write(p->d, block, p->block);
        size_t level = prg_stream_queued(p->d);
        if (level > p->max_level) p->max_level = level;
        if (rc < 0) {
            p->result = rc;
            return NULL;
        }
        sent += p->block;
        if (rc == PRG_STREAM_WAIT) {
            p->waits++;
            atomic_store(&p->waiting, 1);
            int64_t until = th_now_ms() + 20000;
            while (atomic_load(&p->woken) == seen && th_now_ms() < until) usleep(500);
            atomic_store(&p->waiting, 0);
            if (atomic_load(&p->woken) == seen) {
                p->result = -ETIMEDOUT;   /* never woken */
                return NULL;
            }
        }
    }
    p->result = prg_stream_end(p->d);
    return NULL;
}

static void test_watermarks(const th_engine *e) {
    th_case = "watermarks";
    prg_server *s = start(e, 0);
    th_client *c = th_connect(prg_server_port(s));
    int rcvbuf = 65536;   /* a bounded window (not so small that zero-window probes stall it) */
    CHECK(setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf) == 0, "SO_RCVBUF");
    prg_deferred *d = request(c, "GET /stream HTTP/1.1\r\nHost: t\r\n\r\n");
    enum { LOW = 16384, HIGH = 65536, BLOCK = 16384, TOTAL = 16 << 20 };
    producer p = {.d = d, .total = TOTAL, .block = BLOCK};
    CHECK(prg_stream_set_watermarks(d, LOW, HIGH) == 0, "marks");
    CHECK(prg_stream_set_watermarks(d, HIGH, LOW) == -EINVAL, "low above high");
    prg_stream_on_writable(d, on_writable, &p);
    char len[16];
    snprintf(len, sizeof len, "%d", TOTAL);
    CHECK(prg_deferred_header(d, "Content-Length", 14, len, strlen(len)) == 0, "length");
    CHECK(prg_stream_head(d, 200) == 0, "head");
    CHECK(prg_stream_set_watermarks(d, LOW, HIGH) == -EALREADY, "marks after the head");
    pthread_t t;
    CHECK(pthread_create(&t, NULL, produce, &p) == 0, "thread");
    /* The client reads nothing until the producer is told to wait. */
    int64_t until = th_now_ms() + 10000;
    while (!atomic_load(&p.waiting) && th_now_ms() < until) usleep(1000);
    CHECK(atomic_load(&p.waiting), "the producer was told to wait while the client did not read");
    usleep(200 * 1000);   /* not synchronisation: a window in which a wrong wake-up would show */
    CHECK(atomic_load(&p.waiting), "and stays waiting while the client does not read");
    /* Now read everything: the producer is woken each time the queue drains. */
    CHECK(read_until(c, "\r\n\r\n"), "the head");
    char *h = memmem(c->buf, c->len, "\r\n\r\n", 4);
    if (h) th_consume(c, (size_t)(h + 4 - c->buf));
    size_t got = c->len;
    c->len = 0;
    while (got < TOTAL && th_fill(c) > 0) {
        got += c->len;
        c->len = 0;
    }
    pthread_join(t, NULL);
    CHECK(p.result == 0, "the producer ended with %d", p.result);
    CHECK(got == TOTAL, "received %zu of %d bytes", got, TOTAL);
    CHECK(p.waits > 0 && atomic_load(&p.woken) >= p.waits, "waits %d, woken %d", p.waits, atomic_load(&p.woken));
    CHECK(p.max_level <= HIGH + 2 * BLOCK, "the level stayed bounded: max %zu (high %d)", p.max_level, HIGH);
    prg_deferred_release(d);
    th_close(c);
    th_stop(s);
}

static void test_handler_timeout(const th_engine *e) {
    th_case = "handler timeout";
    prg_server *s = start(e, 1);
    th_client *c = th_connect(prg_server_port(s));
    prg_deferred *d = request(c, "GET /stream HTTP/1.1\r\nHost: t\r\n\r\n");
    th_response r;
    CHECK(th_read_response(c, &r) == 0 && r.status == 503, "503 before the head, got %d", r.status);
    CHECK(prg_stream_head(d, 200) == -ETIMEDOUT, "the late head");
    CHECK(prg_stream_write(d, "x", 1) == -ETIMEDOUT, "a write after the timeout");
    CHECK(prg_stream_state(d) == PRG_STREAM_TIMED_OUT, "timed out");
    prg_deferred_release(d);
    if (!th_keeps_alive(e)) {
        th_close(c);
        c = th_connect(prg_server_port(s));
    }

    /* Headed in time: the stream is not late, however long its body takes. */
    d = request(c, "GET /stream HTTP/1.1\r\nHost: t\r\n\r\n");
    CHECK(prg_stream_head(d, 200) == 0, "head");
    CHECK(read_until(c, "\r\n\r\n"), "the head");
    c->len = 0;
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    CHECK(poll(&p, 1, 2500) == 0, "no 503 after the head (2.5 s, timeout 1 s)");
    CHECK(prg_stream_write(d, "late", 4) == 0 && prg_stream_end(d) == 0, "the body, late");
    prg_deferred_release(d);
    CHECK(read_until(c, "4\r\nlate\r\n0\r\n\r\n"), "the body and the end");
    th_close(c);
    th_stop(s);
}

int main(void) {
    for (size_t i = 0; i < TH_ALL_ENGINES; i++) {
        const th_engine *e = &th_all_engines[i];
        fprintf(stderr, "stream: %s\n", e->name);
        test_chunked_trailers(e);
        test_content_length(e);
        if (th_keeps_alive(e)) test_pipelined_order(e);
        test_peer_gone(e);
        test_release_mid_body(e);
        test_watermarks(e);
        test_handler_timeout(e);
    }
    CHECK(prg_stream_head(NULL, 200) == -EINVAL, "NULL handle");
    CHECK(prg_stream_write(NULL, "x", 1) == -EINVAL, "NULL handle");
    CHECK(prg_stream_end(NULL) == -EINVAL, "NULL handle");
    CHECK(prg_stream_state(NULL) == -EINVAL, "NULL handle");
    return th_report("test_stream");
}
