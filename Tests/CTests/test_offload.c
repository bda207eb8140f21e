/*
 * test_offload.c: the deferred-answer contract of csrc/offload.c, on every
 * engine (epoll level/edge/oneshot, libev, threaded, blocking), over loopback sockets,
 * under ASan, UBSan and LSan (a handle that is never freed is a leak report
 * at exit; one freed too early is a use-after-free report).
 *
 *  - a second prg_deferred_send is refused (-EALREADY), only the first
 *    answer is sent, and the next request is answered in order
 *  - a send after the connection died (reset) is refused (-ECONNRESET) and
 *    frees everything once released
 *  - handler_timeout_s: the client gets 503 in the owed answer's place, the
 *    late send is refused (-ETIMEDOUT), the connection goes on
 *  - a handle released unanswered answers 500
 *  - a send after the server stopped is refused and leaks nothing
 *  - many producer threads racing the timeout: each handle is decided once
 */
#include "harness.h"

#include <pthread.h>


static void on_request(void *ctx, prg_conn *c, const prg_request *req) {
    (void)ctx;
    if (th_target_is(req, "/now")) {
        static const char body[] = "now";
        CHECK(prg_send(c, 200, "text/plain", 10, body, 3) == 0, "inline answer");
        return;
    }
    prg_deferred *d = prg_defer(c);
    CHECK(d != NULL, "prg_defer (every engine defers)");
    CHECK(prg_defer(c) == NULL, "a second prg_defer for the same request");
    CHECK(prg_respond(c, 200, NULL, 0) == -1, "the inline writer after prg_defer");
    th_deferred_take(d);
}

static prg_server *start(const th_engine *e, int handler_timeout_s) {
    prg_config cfg;
    th_config(&cfg, e);
    cfg.handler_timeout_s = handler_timeout_s;
    prg_callbacks cb = {.on_request = on_request, .on_close = th_count_close};
    return th_start(&cfg, &cb);
}

static void test_double_send_refused(const th_engine *e) {
    th_case = "double send";
    prg_server *s = start(e, 0);
    th_client *c = th_connect(prg_server_port(s));
    int before = atomic_load(&th_deferred()->count);
    th_send(c, "GET /later HTTP/1.1\r\nHost: t\r\n\r\n");
    prg_deferred *d = th_wait_deferred(before);
    CHECK(prg_deferred_header(d, "X-One", 5, "1", 1) == 0, "header before send");
    CHECK(prg_deferred_send(d, 200, "first", 5) == 0, "first send");
    CHECK(prg_deferred_send(d, 201, "second", 6) == -EALREADY, "second send must be refused");
    CHECK(prg_deferred_header(d, "X-Two", 5, "2", 1) == -EALREADY, "header after send must be refused");
    prg_deferred_release(d);
    th_response r;
    CHECK(th_read_response(c, &r) == 0, "answer");
    CHECK(r.status == 200 && r.body_len == 5 && memcmp(r.body, "first", 5) == 0, "got %d %.*s", r.status,
          (int)r.body_len, r.body);
    CHECK(strstr(r.head, "X-One: 1\r\n") != NULL, "header kept");
    /* Nothing of the refused answer follows: the next answer is the next
     * request's (the blocking engine closes after the one). */
    if (th_keeps_alive(e)) {
        th_send(c, "GET /now HTTP/1.1\r\nHost: t\r\n\r\n");
        CHECK(th_read_response(c, &r) == 0 && r.status == 200 && r.body_len == 3 && memcmp(r.body, "now", 3) == 0,
              "next answer in order, got %d", r.status);
    } else {
        CHECK(th_fill(c) == 0, "the blocking engine closes after the answer");
    }
    th_close(c);
    th_stop(s);
}

static void test_send_after_close(const th_engine *e) {
    th_case = "send after close";
    prg_server *s = start(e, 0);
    th_client *c = th_connect(prg_server_port(s));
    int before = atomic_load(&th_deferred()->count);
    int closed_before = atomic_load(&th_deferred()->closed);
    th_send(c, "GET /later HTTP/1.1\r\nHost: t\r\n\r\n");
    prg_deferred *d = th_wait_deferred(before);
    th_reset(c);
    th_wait_closed(closed_before);
    CHECK(prg_deferred_header(d, "X-A", 3, "b", 1) == -ECONNRESET, "header after the connection closed");
    CHECK(prg_deferred_send(d, 200, "gone", 4) == -ECONNRESET, "send after the connection closed");
    CHECK(prg_deferred_send(d, 200, "gone", 4) == -ECONNRESET, "and again");
    prg_deferred_release(d);   /* the last reference: freed (LSan reports it otherwise) */

    /* Sent first, then the connection closes before the loop drains it. */
    c = th_connect(prg_server_port(s));
    before = atomic_load(&th_deferred()->count);
    th_send(c, "GET /later HTTP/1.1\r\nHost: t\r\n\r\n");
    d = th_wait_deferred(before);
    th_reset(c);
    int rc = prg_deferred_send(d, 200, "raced", 5);   /* posted before the loop saw the close, or refused */
    CHECK(rc == 0 || rc == -ECONNRESET, "send racing a close returned %d", rc);
    prg_deferred_release(d);
    th_stop(s);
}

static void test_handler_timeout(const th_engine *e) {
    th_case = "handler timeout";
    prg_server *s = start(e, 1);
    th_client *c = th_connect(prg_server_port(s));
    int before = atomic_load(&th_deferred()->count);
    int64_t t0 = th_now_ms();
    th_send(c, "GET /later HTTP/1.1\r\nHost: t\r\n\r\n");
    prg_deferred *d = th_wait_deferred(before);
    th_response r;
    CHECK(th_read_response(c, &r) == 0, "an answer within 5 s");
    int64_t took = th_now_ms() - t0;
    CHECK(r.status == 503, "got %d", r.status);
    CHECK(took >= 900 && took < 3500, "503 after %lld ms (timeout 1 s)", (long long)took);
    CHECK(prg_deferred_send(d, 200, "late", 4) == -ETIMEDOUT, "the late send must be refused");
    prg_deferred_release(d);
    if (!th_keeps_alive(e)) {
        CHECK(th_fill(c) == 0, "the blocking engine closes after the 503");
        th_close(c);
        th_stop(s);
        return;
    }
    /* The connection goes on; the late answer never shows. */
    th_send(c, "GET /now HTTP/1.1\r\nHost: t\r\n\r\n");
    CHECK(th_read_response(c, &r) == 0 && r.status == 200 && r.body_len == 3 && memcmp(r.body, "now", 3) == 0,
          "next answer, got %d %.*s", r.status, (int)r.body_len, r.body);

    /* Pipelined: /later (times out), /now (waits behind it, in order). */
    before = atomic_load(&th_deferred()->count);
    th_send(c, "GET /later HTTP/1.1\r\nHost: t\r\n\r\nGET /now HTTP/1.1\r\nHost: t\r\n\r\n");
    d = th_wait_deferred(before);
    CHECK(th_read_response(c, &r) == 0 && r.status == 503, "pipelined: 503 first, got %d", r.status);
    CHECK(th_read_response(c, &r) == 0 && r.status == 200, "pipelined: then the next answer, got %d", r.status);
    prg_deferred_release(d);   /* released unanswered after the timeout: no 500, no leak */
    th_close(c);
    th_stop(s);
}

static void test_release_unanswered(const th_engine *e) {
    th_case = "release unanswered";
    prg_server *s = start(e, 0);
    th_client *c = th_connect(prg_server_port(s));
    int before = atomic_load(&th_deferred()->count);
    th_send(c, "GET /later HTTP/1.1\r\nHost: t\r\n\r\n");
    prg_deferred *d = th_wait_deferred(before);
    prg_deferred_release(d);
    th_response r;
    CHECK(th_read_response(c, &r) == 0 && r.status == 500, "released unanswered: 500, got %d", r.status);
    th_close(c);
    th_stop(s);
}

static void test_send_after_stop(const th_engine *e) {
    th_case = "send after stop";
    prg_server *s = start(e, 0);
    th_client *c = th_connect(prg_server_port(s));
    int before = atomic_load(&th_deferred()->count);
    th_send(c, "GET /later HTTP/1.1\r\nHost: t\r\n\r\n");
    prg_deferred *d = th_wait_deferred(before);
    th_stop(s);
    CHECK(prg_deferred_send(d, 200, "late", 4) == -ECONNRESET, "send after the server stopped");
    prg_deferred_release(d);
    th_close(c);
}

/* Producers answer around the 1 s deadline from several threads: each
 * handle is decided once (a 200 or a 503, never both, never neither), and
 * what send returned matches what the client got. */
enum { RACERS = 8 };
typedef struct racer {
    prg_deferred *d;
    int delay_ms;
    int result;
} racer;

static void *race(void *arg) {
    racer *r = arg;
    usleep((useconds_t)r->delay_ms * 1000);
    r->result = prg_deferred_send(r->d, 200, "raced", 5);
    prg_deferred_release(r->d);
    return NULL;
}

static void test_race_with_timeout(const th_engine *e) {
    th_case = "race with timeout";
    prg_server *s = start(e, 1);
    th_client *c[RACERS];
    racer rs[RACERS];
    pthread_t t[RACERS];
    for (int i = 0; i < RACERS; i++) {
        c[i] = th_connect(prg_server_port(s));
        int before = atomic_load(&th_deferred()->count);
        th_send(c[i], "GET /later HTTP/1.1\r\nHost: t\r\n\r\n");
        rs[i].d = th_wait_deferred(before);
        rs[i].delay_ms = 900 + 150 * i;   /* around the deadline (1 s, swept each second) */
    }
    for (int i = 0; i < RACERS; i++) CHECK(pthread_create(&t[i], NULL, race, &rs[i]) == 0, "thread");
    for (int i = 0; i < RACERS; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < RACERS; i++) {
        th_response r;
        CHECK(th_read_response(c[i], &r) == 0, "racer %d: an answer", i);
        if (rs[i].result == 0) CHECK(r.status == 200, "racer %d: send said posted, client got %d", i, r.status);
        else CHECK(rs[i].result == -ETIMEDOUT && r.status == 503, "racer %d: send %d, client %d", i, rs[i].result, r.status);
        th_close(c[i]);
    }
    th_stop(s);
}

int main(void) {
    for (size_t i = 0; i < TH_ALL_ENGINES; i++) {
        const th_engine *e = &th_all_engines[i];
        fprintf(stderr, "offload: %s\n", e->name);
        test_double_send_refused(e);
        test_send_after_close(e);
        test_handler_timeout(e);
        test_release_unanswered(e);
        test_send_after_stop(e);
        if (th_keeps_alive(e)) test_race_with_timeout(e);   /* blocking: one connection at a time */
    }
    CHECK(prg_deferred_send(NULL, 200, NULL, 0) == -EINVAL, "NULL handle");
    prg_deferred_release(NULL);
    return th_report("test_offload");
}
