/*
 * timer.c: timeouts without a timer per request. Each timeout kind is a FIFO
 * list of connections (every entry waits the same time, so arrival order is
 * deadline order); the loop sweeps the expired heads once per second.
 *
 *  TIMER_HEAD  a request head has started arriving: the whole head must be
 *              in within header_timeout_s of its first byte (not reset by
 *              each byte, so a slowloris client cannot stretch it): 408.
 *  TIMER_IDLE  a keep-alive connection with nothing in flight: closed
 *              quietly after idle_timeout_s.
 */
#include "internal.h"

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

void prg_conn_update_timer(prg_conn *c) {
    prg_loop *loop = c->loop;
    int want = TIMER_NONE;
    if (loop->server->cfg.mode != PRG_MODE_HTTP || (c->flags & (CONN_CLOSED | CONN_CLOSE_AFTER))) {
        want = TIMER_NONE;
    } else if (c->in_len > 0) {
        if (!prg_http_head_complete(&c->parser)) want = TIMER_HEAD;
    } else if (c->out_bytes == 0) {
        want = TIMER_IDLE;
    }
    if (want != TIMER_NONE && loop->timers[want].timeout_s == 0) want = TIMER_NONE;
    if (want == c->timer_list) {
        /* A head keeps the deadline of its first byte. Idle restarts, but
         * moving to the tail is needed at most once per clock second. */
        if (want != TIMER_IDLE || c->deadline == deadline_for(loop, TIMER_IDLE)) return;
    }
    prg_timer_remove(c);
    if (want != TIMER_NONE) timer_append(c, want);
}

void prg_timers_sweep(prg_loop *loop) {
    if (loop->now == loop->swept) return;
    loop->swept = loop->now;
    prg_timer_list *heads = &loop->timers[TIMER_HEAD];
    while (heads->head && heads->head->deadline <= loop->now) {
        prg_conn *c = heads->head;
        prg_timer_remove(c);
        prg_send_error(c, 408);
        c->close_reason = PRG_CLOSE_BAD_REQUEST;
        c->flags |= CONN_CLOSE_AFTER;
        prg_conn_finish_io(c);
    }
    prg_timer_list *idle = &loop->timers[TIMER_IDLE];
    while (idle->head && idle->head->deadline <= loop->now) {
        prg_conn *c = idle->head;
        prg_timer_remove(c);
        prg_conn_close_now(c, PRG_CLOSE_NORMAL);
    }
}
