/*
 * test_conn.c: the connection state machine (csrc/conn.c) through a real
 * server on every event engine, under ASan, UBSan and LSan.
 *
 *  - pipelined requests in one segment are answered in order
 *  - a half-close (FIN after the request) is answered, then closed: NORMAL
 *  - prg_conn_close from the callback: what was written goes out, then the
 *    close; on_close says APP
 *  - a malformed request gets 400 and a close: BAD_REQUEST
 *  - a client reset: on_close says ERROR
 *  - raw mode: on_open writes a banner, on_data consumes what it wants and
 *    sees the rest again with the next bytes
 */
#include "harness.h"

static atomic_int closes;
static atomic_int last_reason;

static void on_request(void *ctx, prg_conn *c, const prg_request *req) {
    (void)ctx;
    if (th_target_is(req, "/close")) {
        (void)prg_send(c, 200, NULL, 0, "bye", 3);
        prg_conn_close(c);
        return;
    }
    char body[64];
    int n = snprintf(body, sizeof body, "%.*s", (int)req->target.len, (const char *)req->target.ptr);
    (void)prg_send(c, 200, NULL, 0, body, (size_t)n);
}

static void on_close(void *ctx, prg_conn *c, int reason) {
    (void)ctx;
    (void)c;
    atomic_store(&last_reason, reason);
    atomic_fetch_add(&closes, 1);
}

/* Raw mode: a banner, then each complete line back as "<line>\n". */
static void raw_open(void *ctx, prg_conn *c) {
    (void)ctx;
    CHECK(prg_conn_write(c, "hi\n", 3) == 0, "banner");
}

static size_t raw_data(void *ctx, prg_conn *c, const uint8_t *p, size_t n) {
    (void)ctx;
    size_t used = 0;
    for (;;) {
        const uint8_t *nl = memchr(p + used, '\n', n - used);
        if (!nl) return used;   /* the partial line is offered again with more bytes */
        size_t len = (size_t)(nl - (p + used)) + 1;
        CHECK(prg_conn_write(c, p + used, len) == 0, "echo");
        used += len;
    }
}

static void wait_close(int before, int want_reason, const char *what) {
    int64_t until = th_now_ms() + 5000;
    while (atomic_load(&closes) == before && th_now_ms() < until) usleep(2000);
    CHECK(atomic_load(&closes) > before, "%s: on_close within 5 s", what);
    CHECK(atomic_load(&last_reason) == want_reason, "%s: reason %d, expected %d", what, atomic_load(&last_reason),
          want_reason);
}

static void test_http(const th_engine *e) {
    prg_config cfg;
    th_config(&cfg, e);
    prg_callbacks cb = {.on_request = on_request, .on_close = on_close};
    prg_server *s = th_start(&cfg, &cb);
    int port = prg_server_port(s);
    th_response r;

    th_case = "pipelined";
    th_client *c = th_connect(port);
    th_send(c, "GET /1 HTTP/1.1\r\nHost: t\r\n\r\nGET /2 HTTP/1.1\r\nHost: t\r\n\r\nGET /3 HTTP/1.1\r\nHost: t\r\n\r\n");
    for (int i = 1; i <= 3; i++) {
        char want[4];
        snprintf(want, sizeof want, "/%d", i);
        CHECK(th_read_response(c, &r) == 0 && r.body_len == 2 && memcmp(r.body, want, 2) == 0,
              "answer %d in order: %.*s", i, (int)r.body_len, r.body);
    }
    int before = atomic_load(&closes);

    th_case = "half-close";
    th_send(c, "GET /last HTTP/1.1\r\nHost: t\r\n\r\n");
    shutdown(c->fd, SHUT_WR);
    CHECK(th_read_response(c, &r) == 0 && r.body_len == 5, "answered after the FIN");
    CHECK(th_closed(c), "then closed");
    wait_close(before, PRG_CLOSE_NORMAL, "half-close");
    th_close(c);

    th_case = "prg_conn_close";
    c = th_connect(port);
    before = atomic_load(&closes);
    th_send(c, "GET /close HTTP/1.1\r\nHost: t\r\n\r\nGET /never HTTP/1.1\r\nHost: t\r\n\r\n");
    CHECK(th_read_response(c, &r) == 0 && r.body_len == 3 && memcmp(r.body, "bye", 3) == 0, "written before close");
    CHECK(th_closed(c), "closed, the next request unanswered");
    wait_close(before, PRG_CLOSE_APP, "app close");
    th_close(c);

    th_case = "bad request";
    c = th_connect(port);
    before = atomic_load(&closes);
    th_send(c, "GET / HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n");
    CHECK(th_read_response(c, &r) == 0 && r.status == 400, "400, got %d", r.status);
    CHECK(th_closed(c), "closed after 400");
    wait_close(before, PRG_CLOSE_BAD_REQUEST, "bad request");
    th_close(c);

    th_case = "reset";
    c = th_connect(port);
    th_send(c, "GET /x HTTP/1.1\r\nHost: t\r\n\r\n");
    CHECK(th_read_response(c, &r) == 0 && r.status == 200, "answered");
    before = atomic_load(&closes);
    th_reset(c);
    wait_close(before, PRG_CLOSE_ERROR, "reset");
    th_stop(s);
}

static void test_raw(const th_engine *e) {
    th_case = "raw";
    prg_config cfg;
    th_config(&cfg, e);
    cfg.mode = PRG_MODE_RAW;
    prg_callbacks cb = {.on_open = raw_open, .on_data = raw_data, .on_close = on_close};
    prg_server *s = th_start(&cfg, &cb);
    th_client *c = th_connect(prg_server_port(s));
    while (c->len < 3 && th_fill(c) > 0) {}
    CHECK(c->len == 3 && memcmp(c->buf, "hi\n", 3) == 0, "banner first");
    c->len = 0;
    th_send(c, "one\ntw");
    while (c->len < 4 && th_fill(c) > 0) {}
    CHECK(c->len == 4 && memcmp(c->buf, "one\n", 4) == 0, "first line echoed, the partial one kept");
    c->len = 0;
    th_send(c, "o\n");
    while (c->len < 4 && th_fill(c) > 0) {}
    CHECK(c->len == 4 && memcmp(c->buf, "two\n", 4) == 0, "the partial line completed");
    int before = atomic_load(&closes);
    th_close(c);
    wait_close(before, PRG_CLOSE_NORMAL, "raw close");
    th_stop(s);
}

int main(void) {
    for (size_t i = 0; i < TH_EVENT_ENGINES; i++) {
        const th_engine *e = &th_event_engines[i];
        fprintf(stderr, "conn: %s\n", e->name);
        test_http(e);
        test_raw(e);
    }
    return th_report("test_conn");
}
