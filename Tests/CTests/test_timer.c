/*
 * test_timer.c: the timeout lists of csrc/timer.c through a real server on
 * every event engine, under ASan, UBSan and LSan. The loop sweeps once a
 * second and a deadline is never early (timeout + at most one second), so
 * each check allows [timeout, timeout + 2.5 s) for scheduling under load.
 *
 *  - header timeout: partial heads get 408 in the order they began (a head
 *    begun 2.2 s later expires at a later sweep), with Connection: close
 *  - idle timeout: an idle keep-alive connection is closed quietly; a body
 *    that stopped arriving gets 408
 *  - a timeout of 0 is off: nothing fires
 */
#include "harness.h"

static void on_request(void *ctx, prg_conn *c, const prg_request *req) {
    (void)ctx;
    (void)req;
    (void)prg_send(c, 200, NULL, 0, "ok", 2);
}

static prg_server *start(const th_engine *e, int header_s, int idle_s) {
    prg_config cfg;
    th_config(&cfg, e);
    cfg.header_timeout_s = header_s;
    cfg.idle_timeout_s = idle_s;
    prg_callbacks cb = {.on_request = on_request};
    return th_start(&cfg, &cb);
}

/* Which of two clients has something to read first (0 or 1), -1 if neither
 * within ms; *both: the other one was readable at the same moment. */
static int first_readable(th_client *a, th_client *b, int ms, int *both) {
    struct pollfd p[2] = {{.fd = a->fd, .events = POLLIN}, {.fd = b->fd, .events = POLLIN}};
    int n = poll(p, 2, ms);
    if (n <= 0) return -1;
    *both = (p[0].revents & POLLIN) && (p[1].revents & POLLIN);
    return (p[0].revents & POLLIN) ? 0 : 1;
}

static void test_head_timeouts_in_order(const th_engine *e) {
    th_case = "head timeouts in order";
    /* Deadlines are whole loop-clock seconds. Heads begun 1.2 s apart can
     * get deadlines one second apart, and then a sweep a few ms late (a
     * loaded machine) expires both at once. 2.2 s apart their deadlines are
     * at least two seconds apart; a 3 s timeout keeps both on the list. */
    prg_server *s = start(e, 3, 0);
    int port = prg_server_port(s);
    th_client *a = th_connect(port), *b = th_connect(port);
    int64_t t0 = th_now_ms();
    th_send(a, "GET /a HTTP/1.1\r\nHo");
    usleep(2200 * 1000);
    th_send(b, "GET /b HTTP/1.1\r\nHo");
    int both = 0;
    int first = first_readable(a, b, 5000, &both);
    int64_t took = th_now_ms() - t0;
    CHECK(first == 0 && !both, "a (begun first) expires alone first: first=%d both=%d", first, both);
    CHECK(took >= 2900 && took < 5500, "a's 408 after %lld ms (timeout 3 s)", (long long)took);
    th_response r;
    CHECK(th_read_response(a, &r) == 0 && r.status == 408, "a: 408, got %d", r.status);
    char v[32];
    CHECK(th_header(&r, "Connection", v, sizeof v) && strcmp(v, "close") == 0, "408 closes");
    CHECK(th_closed(a), "a closed after its 408");
    CHECK(th_read_response(b, &r) == 0 && r.status == 408, "b: 408 later, got %d", r.status);
    took = th_now_ms() - t0;
    CHECK(took >= 5100, "b's 408 only after its own timeout: %lld ms", (long long)took);
    th_close(a);
    th_close(b);
    th_stop(s);
}

static void test_idle(const th_engine *e) {
    th_case = "idle keep-alive";
    prg_server *s = start(e, 0, 1);
    int port = prg_server_port(s);
    th_client *c = th_connect(port);
    th_send(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    th_response r;
    CHECK(th_read_response(c, &r) == 0 && r.status == 200, "answer");
    int64_t t0 = th_now_ms();
    CHECK(th_closed(c), "idle connection closed quietly (no bytes)");
    int64_t took = th_now_ms() - t0;
    CHECK(took >= 900 && took < 3500, "closed after %lld ms idle (timeout 1 s)", (long long)took);
    th_close(c);

    th_case = "stalled body";
    c = th_connect(port);
    t0 = th_now_ms();
    th_send(c, "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n123");
    CHECK(th_read_response(c, &r) == 0 && r.status == 408, "stalled body: 408, got %d", r.status);
    took = th_now_ms() - t0;
    CHECK(took >= 900 && took < 3500, "408 after %lld ms (timeout 1 s)", (long long)took);
    th_close(c);
    th_stop(s);
}

static void test_off(const th_engine *e) {
    th_case = "timeouts off";
    prg_server *s = start(e, 0, 0);
    int port = prg_server_port(s);
    th_client *a = th_connect(port), *b = th_connect(port);
    th_send(a, "GET /a HTTP/1.1\r\nHo");
    int both = 0;
    CHECK(first_readable(a, b, 2500, &both) == -1, "nothing fires with both timeouts at 0");
    /* Still served when the head completes. */
    th_send(a, "st: t\r\n\r\n");
    th_response r;
    CHECK(th_read_response(a, &r) == 0 && r.status == 200, "late head answered");
    th_close(a);
    th_close(b);
    th_stop(s);
}

int main(void) {
    for (size_t i = 0; i < TH_EVENT_ENGINES; i++) {
        const th_engine *e = &th_event_engines[i];
        fprintf(stderr, "timer: %s\n", e->name);
        test_head_timeouts_in_order(e);
        test_idle(e);
        test_off(e);
    }
    return th_report("test_timer");
}
