/*
 * test_idle_restart.c: the idle timeout's usual case, decided inline
 * (internal.h's prg_conn_update_timer: on the idle list with this second's
 * deadline, nothing moves), on every event engine under ASan and UBSan.
 *
 *  - a keep-alive connection that sends a request every 250 ms for 3.5 s
 *    (the idle timeout is 1 s) is never closed: each request restarts the
 *    timeout, across clock seconds; once it stops, it is closed after 1-3.5 s
 *  - raw mode: an idle raw connection with nothing to send is not timed
 *    (the inline check leaves that case to timer_wanted), so it stays open,
 *    also after output it was timed for (32 MiB the client read late) went
 */
#include "harness.h"

static void on_request(void *ctx, prg_conn *c, const prg_request *req) {
    (void)ctx;
    (void)req;
    (void)prg_send(c, 200, NULL, 0, "ok", 2);
}

#define RAW_BIG (32u << 20)   /* more than the socket buffers hold: output stays pending */
static char big[RAW_BIG];

static size_t on_data(void *ctx, prg_conn *c, const uint8_t *data, size_t len) {
    (void)ctx;
    (void)data;
    (void)prg_conn_write(c, big, RAW_BIG);
    return len;
}

static void test_requests_restart_idle(const th_engine *e) {
    th_case = "requests restart the idle timeout";
    prg_config cfg;
    th_config(&cfg, e);
    cfg.header_timeout_s = 0;
    cfg.idle_timeout_s = 1;
    prg_callbacks cb = {.on_request = on_request};
    prg_server *s = th_start(&cfg, &cb);
    th_client *c = th_connect(prg_server_port(s));
    int answered = 0;
    for (int i = 0; i < 14; i++) {
        th_send(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
        th_response r;
        if (th_read_response(c, &r) == 0 && r.status == 200) answered++;
        usleep(250 * 1000);   /* the client's pace, not a wait on the server */
    }
    CHECK(answered == 14, "14 requests over 3.5 s on one connection answered: %d", answered);
    int64_t t0 = th_now_ms();
    CHECK(th_closed(c), "closed quietly once idle");
    int64_t took = th_now_ms() - t0;
    CHECK(took >= 900 && took < 3500, "closed after %lld ms idle (timeout 1 s)", (long long)took);
    th_close(c);
    th_stop(s);
}

static void test_raw_idle_not_timed(const th_engine *e) {
    th_case = "raw idle not timed";
    prg_config cfg;
    th_config(&cfg, e);
    cfg.mode = PRG_MODE_RAW;
    cfg.idle_timeout_s = 1;
    prg_callbacks cb = {.on_data = on_data};
    prg_server *s = th_start(&cfg, &cb);
    th_client *c = th_connect(prg_server_port(s));
    th_send(c, "ping");
    usleep(200 * 1000);   /* the client reads late: the answer waits in the send queue (idle timer) */
    size_t have = 0;
    static char got[1 << 16];
    while (have < RAW_BIG) {
        ssize_t n = recv(c->fd, got, sizeof got, 0);
        if (n <= 0) break;
        have += (size_t)n;
    }
    CHECK(have == RAW_BIG, "all %u bytes read: %zu", RAW_BIG, have);
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    CHECK(poll(&p, 1, 2500) == 0, "still open and silent 2.5 s after its output went (idle timeout 1 s)");
    th_close(c);
    th_stop(s);
}

int main(void) {
    for (size_t i = 0; i < TH_EVENT_ENGINES; i++) {
        const th_engine *e = &th_event_engines[i];
        fprintf(stderr, "idle restart: %s\n", e->name);
        test_requests_restart_idle(e);
        test_raw_idle_not_timed(e);
    }
    return th_report("test_idle_restart");
}
