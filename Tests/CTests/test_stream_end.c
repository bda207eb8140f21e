/*
 * test_stream_end.c: how an open response stream ends when the other side
 * does, on every engine (the blocking ones included), over loopback
 * sockets, under ASan, UBSan and LSan.
 *
 *  - the client resets mid-stream: on_writable runs once, the state is
 *    PEER_GONE, writes and the end are refused with -ECONNRESET
 *  - the client half-closes mid-stream: on_writable runs once (also where
 *    the connection reads no more, as the blocking engine's), the stream
 *    goes on to its end, then the connection closes
 *  - graceful shutdown with a stream open that ends before the deadline:
 *    the client gets the whole stream, then the close; the server ends
 *  - graceful shutdown with a stream that never ends: at the deadline the
 *    connection closes, the producer hears it (on_writable once, -ECONNRESET)
 *    and the server ends
 *  - stop with a stream open: the same at once
 */
#include "harness.h"

#include <pthread.h>
#include <stdbool.h>

static atomic_int g_woken;   /* on_writable runs */

static void on_writable(void *ctx) {
    (void)ctx;
    atomic_fetch_add(&g_woken, 1);
}

static void on_request(void *ctx, prg_conn *c, const prg_request *req) {
    (void)ctx;
    (void)req;
    prg_deferred *d = prg_defer(c);
    CHECK(d != NULL, "prg_defer (every engine defers)");
    if (!d) return;
    prg_stream_on_writable(d, on_writable, NULL);
    th_deferred_take(d);
}

static bool read_until(th_client *c, const char *text) {
    for (;;) {
        if (memmem(c->buf, c->len, text, strlen(text))) return true;
        if (th_fill(c) <= 0) return false;
    }
}

/* A server and a client with a stream open and its first chunk received. */
static prg_server *open_stream(const th_engine *e, th_client **client, prg_deferred **stream) {
    prg_config cfg;
    th_config(&cfg, e);
    prg_callbacks cb = {.on_request = on_request, .on_close = th_count_close};
    prg_server *s = th_start(&cfg, &cb);
    atomic_store(&g_woken, 0);
    th_client *c = th_connect(prg_server_port(s));
    int before = atomic_load(&th_deferred()->count);
    th_send(c, "GET /stream HTTP/1.1\r\nHost: t\r\n\r\n");
    prg_deferred *d = th_wait_deferred(before);
    CHECK(prg_stream_head(d, 200) == 0, "head");
    CHECK(prg_stream_write(d, "first", 5) == 0, "write");
    CHECK(read_until(c, "5\r\nfirst\r\n"), "the first chunk");
    *client = c;
    *stream = d;
    return s;
}

/* The producer learned that its client is gone, once. */
static void check_gone(prg_deferred *d) {
    int64_t until = th_now_ms() + 5000;
    while (atomic_load(&g_woken) == 0 && th_now_ms() < until) usleep(1000);
    CHECK(atomic_load(&g_woken) == 1, "on_writable ran once, ran %d times", atomic_load(&g_woken));
    CHECK(prg_stream_state(d) == PRG_STREAM_PEER_GONE, "state %d", prg_stream_state(d));
    CHECK(prg_stream_write(d, "more", 4) == -ECONNRESET, "a write after the close");
    CHECK(prg_stream_end(d) == -ECONNRESET, "the end after the close");
}

/* The client reads up to the stream's last chunk (ending with tail), then
 * nothing more but the close. */
static void check_ends_with_close(th_client *c, const char *tail) {
    CHECK(read_until(c, tail), "the stream's rest, up to its last chunk");
    const char *end = memmem(c->buf, c->len, "0\r\n\r\n", 5);
    CHECK(end && (size_t)(end + 5 - c->buf) == c->len, "nothing after the stream");
    c->len = 0;
    CHECK(th_closed(c), "then the close");
}

static void test_client_resets(const th_engine *e) {
    th_case = "client resets mid-stream";
    th_client *c;
    prg_deferred *d;
    int closed = atomic_load(&th_deferred()->closed);
    prg_server *s = open_stream(e, &c, &d);
    th_reset(c);
    th_wait_closed(closed);
    check_gone(d);
    prg_deferred_release(d);
    th_stop(s);
}

static void test_client_half_closes(const th_engine *e) {
    th_case = "client half-closes mid-stream";
    th_client *c;
    prg_deferred *d;
    prg_server *s = open_stream(e, &c, &d);
    CHECK(shutdown(c->fd, SHUT_WR) == 0, "shutdown");
    /* The producer hears it (it may stop working), but the client still
     * reads: the stream goes on to its end, then the connection closes. */
    int64_t until = th_now_ms() + 5000;
    while (atomic_load(&g_woken) == 0 && th_now_ms() < until) usleep(1000);
    CHECK(atomic_load(&g_woken) == 1, "on_writable ran once, ran %d times", atomic_load(&g_woken));
    CHECK(prg_stream_state(d) == PRG_STREAM_HEADED, "still headed: %d", prg_stream_state(d));
    CHECK(prg_stream_write(d, "second", 6) == 0, "a write after the half-close");
    CHECK(prg_stream_end(d) == 0, "end");
    prg_deferred_release(d);
    check_ends_with_close(c, "6\r\nsecond\r\n0\r\n\r\n");
    th_close(c);
    th_stop(s);
}

static void test_shutdown_stream_ends(const th_engine *e) {
    th_case = "graceful shutdown, the stream ends";
    th_client *c;
    prg_deferred *d;
    prg_server *s = open_stream(e, &c, &d);
    CHECK(prg_server_shutdown(s, 10000) == 0, "shutdown");
    /* The stream is in progress: it goes on. */
    CHECK(prg_stream_write(d, "second", 6) == 0, "a write during the drain");
    CHECK(read_until(c, "6\r\nsecond\r\n"), "arrives");
    CHECK(prg_stream_end(d) == 0, "end");
    prg_deferred_release(d);
    check_ends_with_close(c, "0\r\n\r\n");
    int64_t t0 = th_now_ms();
    CHECK(prg_server_wait(s) == 0, "wait");
    CHECK(th_now_ms() - t0 < 3000, "the server ended once the stream did (%lld ms)", (long long)(th_now_ms() - t0));
    CHECK(atomic_load(&g_woken) == 0, "no on_writable for a stream that ended");
    prg_server_destroy(s);
    th_close(c);
}

static void test_shutdown_deadline(const th_engine *e) {
    th_case = "graceful shutdown, the stream outlives the deadline";
    th_client *c;
    prg_deferred *d;
    prg_server *s = open_stream(e, &c, &d);
    int64_t t0 = th_now_ms();
    CHECK(prg_server_shutdown(s, 1000) == 0, "shutdown");
    c->len = 0;
    CHECK(th_closed(c), "the connection closes at the deadline");
    CHECK(prg_server_wait(s) == 0, "wait");
    int64_t took = th_now_ms() - t0;
    CHECK(took >= 900 && took < 4000, "the server ended at the deadline (%lld ms, deadline 1000)", (long long)took);
    check_gone(d);
    prg_server_destroy(s);
    prg_deferred_release(d);
    th_close(c);
}

static void test_stop(const th_engine *e) {
    th_case = "stop with a stream open";
    th_client *c;
    prg_deferred *d;
    prg_server *s = open_stream(e, &c, &d);
    int64_t t0 = th_now_ms();
    prg_server_stop(s);
    CHECK(prg_server_wait(s) == 0, "wait");
    CHECK(th_now_ms() - t0 < 2000, "stop did not wait for the stream (%lld ms)", (long long)(th_now_ms() - t0));
    check_gone(d);
    prg_server_destroy(s);
    prg_deferred_release(d);   /* after the server: the last reference frees it */
    th_close(c);
}

int main(void) {
    for (size_t i = 0; i < TH_ALL_ENGINES; i++) {
        const th_engine *e = &th_all_engines[i];
        fprintf(stderr, "stream_end: %s\n", e->name);
        test_client_resets(e);
        test_client_half_closes(e);
        test_shutdown_stream_ends(e);
        test_shutdown_deadline(e);
        test_stop(e);
    }
    return th_report("test_stream_end");
}
