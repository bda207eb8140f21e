/*
 * test_tick.c: on_tick and prg_server_wake (the hook async handlers' loop
 * executors run on) through a real server on every event engine, under
 * ASan, UBSan and LSan.
 *
 *  - START once per loop before it serves, BATCH after each batch (on the
 *    loop's thread), STOP once after its connections closed, nothing after
 *  - prg_server_wake from another thread brings a BATCH without any I/O
 *  - work reported by a tick is written out in the same batch: an answer a
 *    tick posts to a deferred handle reaches the client without a wake-up
 *  - prg_server_wake refuses a bad index (-EINVAL) and the blocking and
 *    threaded engines (-ENOTSUP); those engines never tick
 */
#include "harness.h"

#include <pthread.h>

enum { LOOPS = 2 };

typedef struct tick_state {
    atomic_int starts[LOOPS], batches[LOOPS], stops[LOOPS], after_stop;
    atomic_int wrong_thread;
    pthread_t thread[LOOPS];
    /* A deferred answer a tick completes (loop 0's thread). */
    atomic_uintptr_t owed;
} tick_state;

static int on_tick(void *ctx, int index, int phase) {
    tick_state *t = ctx;
    if (index < 0 || index >= LOOPS) return 0;
    if (atomic_load(&t->stops[index])) atomic_fetch_add(&t->after_stop, 1);
    switch (phase) {
    case PRG_TICK_START:
        t->thread[index] = pthread_self();
        atomic_fetch_add(&t->starts[index], 1);
        return 0;
    case PRG_TICK_STOP:
        atomic_fetch_add(&t->stops[index], 1);
        return 0;
    default:
        if (!pthread_equal(t->thread[index], pthread_self())) atomic_fetch_add(&t->wrong_thread, 1);
        atomic_fetch_add(&t->batches[index], 1);
        prg_deferred *d = (prg_deferred *)atomic_exchange(&t->owed, (uintptr_t)0);
        if (!d) return 0;
        int rc = prg_deferred_send(d, 200, "from a tick", 11);
        CHECK(rc == 0, "prg_deferred_send in a tick: %d", rc);
        prg_deferred_release(d);
        return 1;   /* work done: written out in this batch */
    }
}

static void on_request(void *ctx, prg_conn *c, const prg_request *req) {
    tick_state *t = ctx;
    if (req->target.len == 6 && memcmp(req->target.ptr, "/defer", 6) == 0) {
        prg_deferred *d = prg_defer(c);
        CHECK(d != NULL, "prg_defer");
        if (d) atomic_store(&t->owed, (uintptr_t)d);   /* the next tick answers */
        return;
    }
    (void)prg_send(c, 200, NULL, 0, "ok", 2);
}

static void test_phases_and_wake(const th_engine *e) {
    th_case = "tick phases and wake";
    tick_state t;
    memset(&t, 0, sizeof t);
    prg_config cfg;
    th_config(&cfg, e);
    cfg.threads = LOOPS;
    prg_callbacks cb = {.ctx = &t, .on_request = on_request, .on_tick = on_tick};
    prg_server *s = th_start(&cfg, &cb);
    int64_t end = th_now_ms() + 5000;
    while ((atomic_load(&t.starts[0]) == 0 || atomic_load(&t.starts[1]) == 0) && th_now_ms() < end) usleep(1000);
    for (int i = 0; i < LOOPS; i++) CHECK(atomic_load(&t.starts[i]) == 1, "loop %d: START once, got %d", i, atomic_load(&t.starts[i]));

    /* A wake from this thread: a batch without any I/O, on each loop. */
    for (int i = 0; i < LOOPS; i++) {
        int before = atomic_load(&t.batches[i]);
        CHECK(prg_server_wake(s, i) == 0, "prg_server_wake(%d)", i);
        end = th_now_ms() + 5000;
        while (atomic_load(&t.batches[i]) == before && th_now_ms() < end) usleep(1000);
        CHECK(atomic_load(&t.batches[i]) > before, "loop %d: no BATCH after prg_server_wake", i);
    }
    CHECK(prg_server_wake(s, -1) == -EINVAL, "index -1 refused");
    CHECK(prg_server_wake(s, LOOPS) == -EINVAL, "index past the loops refused");
    CHECK(prg_server_wake(NULL, 0) == -EINVAL, "NULL server refused");

    /* An answer a tick gives: out in that batch (the client gets it). */
    th_client *c = th_connect(prg_server_port(s));
    th_send(c, "GET /defer HTTP/1.1\r\nHost: t\r\n\r\n");
    end = th_now_ms() + 5000;
    while (atomic_load(&t.owed) == 0 && th_now_ms() < end) usleep(1000);
    for (int i = 0; i < LOOPS; i++) (void)prg_server_wake(s, i);   /* the owning loop ticks */
    th_response r;
    CHECK(th_read_response(c, &r) == 0 && r.status == 200, "the tick's answer arrives, got %d", r.status);
    CHECK(r.body_len == 11 && memcmp(r.body, "from a tick", 11) == 0, "its body");
    th_close(c);

    th_stop(s);
    for (int i = 0; i < LOOPS; i++) CHECK(atomic_load(&t.stops[i]) == 1, "loop %d: STOP once, got %d", i, atomic_load(&t.stops[i]));
    CHECK(atomic_load(&t.after_stop) == 0, "a tick after STOP");
    CHECK(atomic_load(&t.wrong_thread) == 0, "a BATCH off its loop's thread");
}

static void test_loopless_engines(void) {
    th_case = "blocking and threaded: no ticks, no wake";
    const prg_engine engines[] = {PRG_ENGINE_BLOCKING, PRG_ENGINE_THREADED};
    for (size_t i = 0; i < 2; i++) {
        tick_state t;
        memset(&t, 0, sizeof t);
        prg_config cfg;
        prg_config_default(&cfg);
        cfg.host = "127.0.0.1";
        cfg.port = 0;
        cfg.threads = 1;
        cfg.engine = engines[i];
        prg_callbacks cb = {.ctx = &t, .on_request = on_request, .on_tick = on_tick};
        prg_server *s = th_start(&cfg, &cb);
        th_client *c = th_connect(prg_server_port(s));
        th_send(c, "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
        th_response r;
        CHECK(th_read_response(c, &r) == 0 && r.status == 200, "served, got %d", r.status);
        th_close(c);
        CHECK(prg_server_wake(s, 0) == -ENOTSUP, "prg_server_wake on engine %d: -ENOTSUP", (int)engines[i]);
        th_stop(s);
        CHECK(atomic_load(&t.starts[0]) + atomic_load(&t.batches[0]) + atomic_load(&t.stops[0]) == 0,
              "engine %d ticked", (int)engines[i]);
    }
}

int main(void) {
    for (size_t i = 0; i < TH_EVENT_ENGINES; i++) {
        const th_engine *e = &th_event_engines[i];
        fprintf(stderr, "tick: %s\n", e->name);
        test_phases_and_wake(e);
    }
    test_loopless_engines();
    return th_report("test_tick");
}
