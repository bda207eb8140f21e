/*
 * test_send_head.c: prg_send's prebuilt head (the loop's send_head: status
 * line, Server, Date, Content-Type, "Content-Length: ") on every event
 * engine. One keep-alive connection answers a run of prg_send calls whose
 * Content-Type changes, repeats, is refused (CR/LF) or is too long to keep;
 * the client checks each answer's Content-Type, length, body and Date line.
 */
#include "harness.h"

static const char long_type[] =
    "application/vnd.example.a-very-long-media-type-name+json; charset=utf-8";   /* > 64 bytes */

static int rv_send;

static void on_request(void *ctx, prg_conn *c, const prg_request *req) {
    (void)ctx;
    if (th_target_is(req, "/plain")) {
        rv_send = prg_send(c, 200, "text/plain", 10, "hello", 5);
    } else if (th_target_is(req, "/json")) {
        rv_send = prg_send(c, 200, "application/json", 16, "{\"a\":1}", 7);
    } else if (th_target_is(req, "/plain-prefix")) {
        /* The same first bytes as the kept type, one shorter. */
        rv_send = prg_send(c, 200, "text/plai", 9, "x", 1);
    } else if (th_target_is(req, "/bad")) {
        rv_send = prg_send(c, 200, "text/plain\r\nX-Injected: 1", 25, "no", 2);
    } else if (th_target_is(req, "/long")) {
        rv_send = prg_send(c, 200, long_type, sizeof long_type - 1, "long", 4);
    } else if (th_target_is(req, "/created")) {
        rv_send = prg_send(c, 201, "text/plain", 10, "made", 4);
    } else {
        rv_send = prg_send(c, 200, NULL, 0, "none", 4);
    }
}

/* One request on c; checks the answer's status, Content-Type (NULL: none),
 * body and that the head holds one Date line. */
static void expect(th_client *c, const char *target, int status, const char *type, const char *body) {
    char req[128];
    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", target);
    th_send(c, req);
    th_response r;
    th_case = target;
    CHECK(th_read_response(c, &r) == 0, "an answer");
    CHECK(r.status == status, "status %d, got %d", status, r.status);
    char v[128];
    const char *ct = th_header(&r, "Content-Type", v, sizeof v);
    if (type) CHECK(ct && strcmp(ct, type) == 0, "Content-Type %s, got %s", type, ct ? ct : "(none)");
    else CHECK(ct == NULL, "no Content-Type, got %s", ct ? ct : "");
    CHECK(r.body_len == strlen(body) && memcmp(r.body, body, r.body_len) == 0, "body %s", body);
    const char *date = strstr(r.head, "\r\nDate: ");
    CHECK(date && !strstr(date + 2, "\r\nDate: ") && strstr(date, " GMT\r\n"), "one Date line");
    CHECK(strncmp(r.head, status == 200 ? "HTTP/1.1 200 OK\r\nServer: " : "HTTP/1.1 201 Created\r\nServer: ",
                  status == 200 ? 25 : 30) == 0,
          "status line and Server first");
    CHECK(rv_send == 0, "prg_send said %d", rv_send);
}

int main(void) {
    for (size_t i = 0; i < TH_EVENT_ENGINES; i++) {
        const th_engine *e = &th_event_engines[i];
        fprintf(stderr, "send_head: %s\n", e->name);
        prg_config cfg;
        th_config(&cfg, e);
        cfg.threads = 1;   /* one loop: every answer goes through the same send_head */
        prg_callbacks cb = {.on_request = on_request};
        prg_server *s = th_start(&cfg, &cb);
        int port = prg_server_port(s);
        th_client *c = th_connect(port);
        expect(c, "/plain", 200, "text/plain", "hello");
        expect(c, "/plain", 200, "text/plain", "hello");
        expect(c, "/json", 200, "application/json", "{\"a\":1}");
        expect(c, "/plain-prefix", 200, "text/plai", "x");
        expect(c, "/plain", 200, "text/plain", "hello");
        expect(c, "/long", 200, long_type, "long");
        expect(c, "/plain", 200, "text/plain", "hello");
        expect(c, "/created", 201, "text/plain", "made");
        expect(c, "/none", 200, NULL, "none");
        expect(c, "/plain", 200, "text/plain", "hello");
        /* A refused type never becomes the kept one: the handler's answer
         * is the 500 of an unanswered request. */
        th_send(c, "GET /bad HTTP/1.1\r\nHost: t\r\n\r\n");
        th_response r;
        th_case = "/bad";
        CHECK(th_read_response(c, &r) == 0 && r.status == 500, "refused type: 500, got %d", r.status);
        CHECK(rv_send == -1, "prg_send refused the type (%d)", rv_send);
        CHECK(!strstr(r.head, "X-Injected"), "nothing injected");
        th_close(c);
        c = th_connect(port);
        expect(c, "/plain", 200, "text/plain", "hello");
        th_close(c);
        th_stop(s);
    }
    return th_report("test_send_head");
}
