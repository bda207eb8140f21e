/*
 * timer.c: timeouts without a timer per request. Each timeout kind is a FIFO
 * list of connections (every entry waits the same time, so arrival order is
 * deadline order); the loop sweeps the expired heads once per second.
 *
 *  TIMER_HEAD    a request head has started arriving: the whole head must be
 *                in within header_timeout_s of its first byte (not reset by
 *                each byte, so a slowloris client cannot stretch it): 408.
 *                A PROXY listener's header waiting from the accept on: closed
 *                without an answer.
 *  TIMER_IDLE    everything else that waits on the client: an idle keep-alive
 *                connection, a body arriving, output the client does not read.
 *                Restarted by each event, so it measures time without
 *                progress. Expiry: 408 when a request body stalled, otherwise
 *                a quiet close.
 *  TIMER_LINGER  lingering close: PRG_LINGER_SECONDS, then close.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <sys/socket.h>

void prg_timer_remove(prg_conn *c) {
    if (c->timer_list == TIMER_NONE) return;
    prg_timer_list *l = &c->loop->timers[c->timer_list];
    if (c->timer_prev) c->timer_prev->timer_next = c->timer_next;
    else l->head = c->timer_next;
    if (c->timer_next) c->timer_next->timer_prev = c->timer_prev;
    else l->tail = c->timer_prev;
    c->timer_prev = c->timer_next = NULL;
    c->timer_list = TIMER_NONE;
}

/* The deadline is never early: a connection added just before the clock
 * ticks still gets its full timeout (and at most one second more). */
static uint32_t deadline_for(const prg_loop *loop, int which) {
    return loop->now + loop->timers[which].timeout_s + 1;
}

static void timer_append(prg_conn *c, int which) {
    prg_timer_list *l = &c->loop->timers[which];
    c->deadline = deadline_for(c->loop, which);
    c->timer_list = (uint8_t)which;
    c->timer_prev = l->tail;
    c->timer_next = NULL;
    if (l->tail) l->tail->timer_next = c;
    else l->head = c;
    l->tail = c;
}

static int timer_wanted(const prg_conn *c) {
    const prg_config *cfg = &c->loop->server->cfg;
    if (c->flags & CONN_CLOSED) return TIMER_NONE;
    if (c->flags & CONN_LINGER) return TIMER_LINGER;
    /* A PROXY header is part of the head: timed from the connection's start
     * (with the header timeout off, a silent client is idle as without one). */
    if ((c->flags & CONN_PROXY_PENDING) && c->loop->timers[TIMER_HEAD].timeout_s) return TIMER_HEAD;
    /* Answers owed by the server (offload.c): no timeout while nothing
     * waits on the client (the handler answers or the client gives up), the
     * idle timer while output waits on its reading. Never the head timer:
     * its 408 would go out ahead of the owed answers and pair with the
     * wrong request. */
    /* A streamed body being read waits on the client, whatever is owed
     * (its own answer may be deferred): a stalled body gets its 408. */
    if ((c->flags & (CONN_STREAMING | CONN_BODY_HELD | CONN_CLOSE_AFTER)) == CONN_STREAMING) return TIMER_IDLE;
    if (c->defer_head) return c->out_bytes ? TIMER_IDLE : TIMER_NONE;
    /* Paused connections hold complete requests the parser has not looked
     * at yet: waiting on the client's reading, not on its head. */
    if (c->flags & (CONN_CLOSE_AFTER | CONN_PAUSED)) return TIMER_IDLE;
    /* A streamed body the application holds back: it is the one late. */
    if (c->flags & CONN_BODY_HELD) return c->out_bytes ? TIMER_IDLE : TIMER_NONE;
    if (cfg->mode == PRG_MODE_HTTP && c->in_len > 0) {
        const prg_http_parser *p = prg_conn_saved_parser(c);   /* none: no head begun before this read */
        if (!p || !prg_http_head_complete(p)) return TIMER_HEAD;
    }
    /* Raw mode: an idle raw connection is the application's business; only
     * output the client does not read is timed. */
    if (cfg->mode == PRG_MODE_RAW && c->out_bytes == 0) return TIMER_NONE;
    return TIMER_IDLE;
}

/* Out of line: the usual call (nothing to move) then saves no registers. */
__attribute__((noinline)) static void timer_move(prg_conn *c, int want) {
    prg_timer_remove(c);
    if (want != TIMER_NONE) timer_append(c, want);
}

/* Every case; the usual one is decided inline first (internal.h). */
void prg_conn_update_timer_slow(prg_conn *c) {
    prg_loop *loop = c->loop;
    int want = timer_wanted(c);
    if (want != TIMER_NONE && loop->timers[want].timeout_s == 0) want = TIMER_NONE;
    if (want == c->timer_list) {
        /* A head keeps the deadline of its first byte, lingering its start.
         * Idle restarts, but moving to the tail is needed at most once per
         * clock second. */
        if (want != TIMER_IDLE || c->deadline == deadline_for(loop, TIMER_IDLE)) return;
    }
    timer_move(c, want);
}

static bool expired(const prg_timer_list *l, uint32_t now) {
    return l->head && l->head->deadline <= now;
}

static void answer_408(prg_conn *c) {
    prg_send_error(c, 408);
    c->close_reason = PRG_CLOSE_BAD_REQUEST;
    c->flags |= CONN_CLOSE_AFTER;
    prg_conn_finish_io(c);
}

void prg_timers_sweep(prg_loop *loop) {
    if (loop->now == loop->swept) return;
    loop->swept = loop->now;
    if (loop->listener_paused && loop->now >= loop->listener_resume) prg_loop_resume_listener(loop);
    prg_timer_list *heads = &loop->timers[TIMER_HEAD];
    while (expired(heads, loop->now)) {
        prg_conn *c = heads->head;
        prg_timer_remove(c);
        if (c->flags & CONN_PROXY_PENDING) prg_conn_close_now(c, PRG_CLOSE_BAD_REQUEST);   /* no answer: not HTTP yet */
        else answer_408(c);
    }
    prg_timer_list *idle = &loop->timers[TIMER_IDLE];
    while (expired(idle, loop->now)) {
        prg_conn *c = idle->head;
        prg_timer_remove(c);
        if ((c->flags & CONN_STREAMING) && c->out_bytes == 0 && !(c->flags & (CONN_CLOSE_AFTER | CONN_PAUSED))) {
            prg_body_fail(c, PRG_BODY_TIMED_OUT, 408);   /* a streamed body stalled */
            prg_conn_finish_io(c);
            continue;
        }
        bool body_stalled = loop->server->cfg.mode == PRG_MODE_HTTP && c->in_len > 0 && c->out_bytes == 0 &&
                            !(c->flags & (CONN_CLOSE_AFTER | CONN_PAUSED));
        if (body_stalled) answer_408(c);
        else prg_conn_close_now(c, c->out_bytes ? PRG_CLOSE_ERROR : PRG_CLOSE_NORMAL);
    }
    prg_offload_sweep(loop);   /* owed answers past handler_timeout_s: 503 */
    prg_timer_list *lingering = &loop->timers[TIMER_LINGER];
    while (expired(lingering, loop->now)) {
        prg_conn *c = lingering->head;
        prg_timer_remove(c);
        prg_conn_close_now(c, c->close_reason);
    }
}
