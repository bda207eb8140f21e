/*
 * loop_libev.c: the readiness loop on libev, with libev's own epoll, poll or
 * select backend (prg_config.libev_backend), so each is a real mode that can
 * be measured. Level-triggered, like the epoll engine's level mode:
 *
 *  - one ev_loop per prg_loop, run by ev_run(0) while nothing is left
 *    over, or by ev_run(EVRUN_NOWAIT) while work is left over from the last
 *    batch (ready list, listener backlog: prg_loop_wait_ms() == 0);
 *  - libev's invoke-pending hook (on_invoke) is where a batch happens: after
 *    each poll it refreshes the clocks, runs the I/O callbacks
 *    (ev_invoke_pending), then prg_loop_end_batch and prg_loop_drain, and
 *    arms the tick for the next poll. No ev_check or ev_prepare watcher and
 *    no ev_run call per iteration: each of those is a feed, an invoke or a
 *    call into libev per poll, for what this hook does in place;
 *  - a 1 s repeating ev_timer, running only while a timeout is pending, wakes
 *    the loop for the Date header and the timeout sweep (timer.c's lists);
 *  - an ev_io on our own eventfd is the thread-safe, async-signal-safe
 *    wake-up for stop (not ev_async: libev aborts when it cannot make its own);
 *  - each connection has one ev_io in c->engine_slot: EV_READ while it may
 *    read, EV_WRITE only while output is pending. c->registered holds what
 *    is started, so steady state makes no libev call and, on the epoll
 *    backend, no epoll_ctl.
 *
 * libev's pitfalls, and what this file does about each:
 *
 *  Closed or reused descriptors. libev's epoll backend does no EPOLL_CTL_DEL
 *  when a watcher stops (it assumes the descriptor is being closed), and it
 *  caches the kernel's mask per descriptor number. So: (1) unwatch stops the
 *  ev_io before conn.c closes the descriptor (prg_conn_close_now calls it),
 *  which also drops an event already queued for it in this iteration; close()
 *  then removes it from the kernel's set. (2) A new connection always goes
 *  through ev_io_set (ev_io_init), whose EV__IOFDSET flag makes libev issue
 *  an epoll_ctl even when the reused number had the same mask, so a reused
 *  number is registered anew (ADD; libev handles EEXIST/ENOENT). Changing
 *  events on a live connection uses ev_io_modify, which keeps libev's cache
 *  and costs one EPOLL_CTL_MOD only when the mask really changed. Stale kernel
 *  events for a closed number are filtered by libev's generation counter.
 *  Peregrine never dup()s a connection's descriptor, so the set is never
 *  rebuilt for that reason.
 *
 *  fork. Not supported: loops are made in prg_server_create and run in their
 *  own threads; a forked child must not use a server created by its parent
 *  (its epoll set would be shared with the parent's). No EVFLAG_FORKCHECK
 *  (it costs a getpid per iteration on old libcs) and no ev_loop_fork.
 *
 *  No EPOLLPRI. libev watches only EV_READ/EV_WRITE (POLLIN/POLLOUT, the
 *  read and write sets), so urgent data raises no event of its own: there is
 *  nothing to spin on, and none of its backends reports it. SO_OOBINLINE is
 *  off, so the kernel keeps the out-of-band byte out of the stream: the next
 *  ordinary recv skips it and clears the urgent state, which drops the byte
 *  just as the epoll engine's prg_conn_discard_urgent does, and the
 *  connection goes on serving. A lone urgent byte with nothing after it is
 *  not even readable (tcp_poll does not count it), so it wakes nobody; it is
 *  dropped with the next data, or the idle timeout closes the connection.
 *
 *  Also: EVFLAG_NOENV (LIBEV_FLAGS in the environment must not change the
 *  backend being measured), EVFLAG_NOSIGMASK (loop threads keep all signals
 *  blocked, server.c), EVFLAG_NOTIMERFD (no descriptor we do not need).
 *  libev aborts the process if it cannot allocate memory (its default
 *  allocator); that is libev's contract and is not reported as an errno.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <ev.h>

/* The per-connection watcher lives in the connection itself: no allocation
 * per connection, and the connection is found back through w->data. */
_Static_assert(alignof(ev_io) <= alignof(void *), "ev_io needs more alignment than prg_conn.engine_slot has");

typedef struct libev_state {
    struct ev_loop *ev;
    ev_io listener;    /* the loop's own SO_REUSEPORT listener */
    ev_io wake;        /* loop->wake_fd (our eventfd): prg_server_stop, from any thread */
    ev_timer tick;     /* 1 s, while a timeout is pending */
    unsigned polled;   /* ev_iteration() at the last batch (on_invoke) */
} libev_state;

static void on_invoke(struct ev_loop *ev);

static ev_io *conn_watcher(prg_conn *c) { return (ev_io *)(void *)c->engine_slot; }

static unsigned backend_flag(prg_libev_backend b) {
    switch (b) {
    case PRG_LIBEV_EPOLL: return EVBACKEND_EPOLL;
    case PRG_LIBEV_POLL: return EVBACKEND_POLL;
    case PRG_LIBEV_SELECT: return EVBACKEND_SELECT;
    }
    return 0;
}

static void on_listener(struct ev_loop *ev, ev_io *w, int revents) {
    (void)ev;
    (void)revents;
    prg_loop_accept_ready(w->data);
}

static void on_wake(struct ev_loop *ev, ev_io *w, int revents) {
    /* Drain the eventfd; run() checks loop->stop after every iteration. */
    (void)ev;
    (void)revents;
    uint64_t v;
    /* EAGAIN: already drained (a spurious wakeup). Either way the mailbox is
     * drained below, and stop is checked after this iteration. */
    ssize_t r = read(((prg_loop *)w->data)->wake_fd, &v, sizeof v);
    (void)r;
    prg_offload_drain(w->data);   /* answers posted from other threads */
}

static void on_tick(struct ev_loop *ev, ev_timer *w, int revents) {
    /* The wake-up is the point: end_batch sweeps the timeouts. */
    (void)ev;
    (void)w;
    (void)revents;
}

static void on_conn(struct ev_loop *ev, ev_io *w, int revents) {
    (void)ev;
    unsigned events = 0;
    if (revents & EV_READ) events |= PRG_EV_READ;
    if (revents & EV_WRITE) events |= PRG_EV_WRITE;
    /* libev could not watch the descriptor (and stopped the watcher). */
    if (revents & EV_ERROR) events |= PRG_EV_ERROR;
    prg_conn_handle_event(w->data, events);
}

static void libev_destroy(prg_loop *loop) {
    libev_state *st = loop->engine_state;
    if (!st) return;   /* init failed before it allocated, or never ran */
    if (st->ev) {
        /* Stop ours cleanly; ev_loop_destroy closes libev's descriptors
         * (the backend's, the async eventfd). */
        ev_io_stop(st->ev, &st->listener);
        ev_io_stop(st->ev, &st->wake);
        ev_timer_stop(st->ev, &st->tick);
        ev_loop_destroy(st->ev);
    }
    if (loop->wake_fd >= 0) close(loop->wake_fd);
    loop->wake_fd = -1;
    free(st);
    loop->engine_state = NULL;
}

static void on_primer(struct ev_loop *ev, ev_timer *w, int revents) {
    (void)ev;
    (void)w;
    (void)revents;
}

/* libev grows its timer heap when a timer first starts, and the array it
 * feeds expired timers through when one first expires: with the 1 s tick,
 * that was one allocation a second after the first connection, in the
 * middle of serving. A timer that expires at once, in one poll that waits
 * for nothing (no watcher is started yet), makes both now. libev's
 * allocator aborts rather than fail, so there is nothing to check. */
static void prime_timer_arrays(struct ev_loop *ev) {
    ev_timer primer;
    ev_timer_init(&primer, on_primer, 0., 0.);
    ev_timer_start(ev, &primer);
    ev_run(ev, EVRUN_NOWAIT);
    ev_timer_stop(ev, &primer);   /* expired already: a no-op then */
}

/* 0, or -EOPNOTSUPP when libev cannot give the requested backend, -ENOMEM,
 * or the errno the setup failed with (epoll_create1, eventfd: EMFILE...). */
static int libev_init(prg_loop *loop) {
    unsigned want = backend_flag(loop->server->cfg.libev_backend);
    if (!want) return -EINVAL;
    if (!(ev_supported_backends() & want)) {
        fprintf(stderr, "peregrine: libev was built without the requested backend (0x%x)\n", want);
        return -EOPNOTSUPP;
    }
    libev_state *st = calloc(1, sizeof *st);
    if (!st) return -ENOMEM;
    loop->engine_state = st;   /* from here on, destroy releases it */
    errno = 0;
    st->ev = ev_loop_new(want | EVFLAG_NOENV | EVFLAG_NOSIGMASK | EVFLAG_NOTIMERFD);
    if (!st->ev) return errno ? -errno : -ENOMEM;
    if (ev_backend(st->ev) != want) {
        /* Only one backend was allowed, so this should not happen; refuse
         * rather than measure something else under the requested name. */
        fprintf(stderr, "peregrine: libev gave backend 0x%x, not 0x%x\n", ev_backend(st->ev), want);
        return -EOPNOTSUPP;
    }

    prime_timer_arrays(st->ev);

    ev_io_init(&st->listener, on_listener, loop->listen_fd, EV_READ);
    st->listener.data = loop;
    ev_io_start(st->ev, &st->listener);

    /* Our own eventfd under an ev_io, not an ev_async: ev_async_start makes
     * libev create its eventfd and abort the process (ev_syserr) when it
     * cannot, where this way running out of descriptors is an errno. */
    loop->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (loop->wake_fd < 0) return -errno;
    ev_io_init(&st->wake, on_wake, loop->wake_fd, EV_READ);
    st->wake.data = loop;
    ev_io_start(st->ev, &st->wake);

    ev_timer_init(&st->tick, on_tick, 1.0, 1.0);

    ev_set_userdata(st->ev, loop);
    ev_set_invoke_pending_cb(st->ev, on_invoke);
    st->polled = ev_iteration(st->ev);
    return 0;
}

static void libev_wake(prg_loop *loop) {
    libev_state *st = loop->engine_state;
    /* write() on an eventfd: safe from any thread and from signal handlers.
     * Its only failure on a live eventfd is EAGAIN (the counter would
     * overflow): a wakeup is pending already, so the result changes nothing. */
    uint64_t one = 1;
    if (st && loop->wake_fd >= 0) {
        ssize_t r = write(loop->wake_fd, &one, sizeof one);
        (void)r;
    }
}

/* The tick runs only while a timeout is pending (as epoll_wait's 1000 ms
 * timeout does): an idle server sleeps. */
static void arm_tick(prg_loop *loop, libev_state *st, int wait_ms) {
    if (wait_ms > 0 && loop->draining) {
        /* Graceful shutdown: the deadline may come before the tick. */
        ev_timer_stop(st->ev, &st->tick);
        ev_timer_set(&st->tick, wait_ms < 1000 ? wait_ms / 1000.0 : 1.0, 1.0);
        ev_timer_start(st->ev, &st->tick);
    } else if (wait_ms > 0 && !ev_is_active(&st->tick)) ev_timer_start(st->ev, &st->tick);
    else if (wait_ms < 0 && ev_is_active(&st->tick)) ev_timer_stop(st->ev, &st->tick);
}

/* libev calls this in place of ev_invoke_pending: once when ev_run starts
 * (nothing polled yet: only what is pending, normally nothing) and once after
 * every poll, which is one batch, as one epoll_wait is in the epoll engine. */
static void on_invoke(struct ev_loop *ev) {
    prg_loop *loop = ev_userdata(ev);
    libev_state *st = loop->engine_state;
    unsigned polled = ev_iteration(ev);   /* counts the polls */
    if (polled == st->polled) {
        ev_invoke_pending(ev);
        return;
    }
    st->polled = polled;
    prg_loop_refresh_clocks(loop);   /* after the poll, before any callback */
    ev_invoke_pending(ev);
    prg_loop_end_batch(loop);
    prg_loop_drain(loop);
    if (atomic_load_explicit(&loop->stop, memory_order_acquire)) {
        ev_break(ev, EVBREAK_ALL);
        return;
    }
    int wait_ms = prg_loop_wait_ms(loop);
    /* Left-over work: back to libev_run, which polls without blocking. */
    if (wait_ms == 0) ev_break(ev, EVBREAK_ONE);
    else arm_tick(loop, st, wait_ms);
}

static void libev_run(prg_loop *loop) {
    libev_state *st = loop->engine_state;
    while (!atomic_load_explicit(&loop->stop, memory_order_acquire)) {
        int wait_ms = prg_loop_wait_ms(loop);
        arm_tick(loop, st, wait_ms);
        /* Until on_invoke breaks out: stop, or left-over work (wait_ms 0),
         * polled for once without blocking and done in that batch. */
        ev_run(st->ev, wait_ms == 0 ? EVRUN_NOWAIT : 0);
    }
}

static int libev_watch(prg_conn *c) {
    libev_state *st = c->loop->engine_state;
    ev_io *w = conn_watcher(c);
    /* ev_io_init sets EV__IOFDSET: libev re-registers the descriptor even
     * if a closed connection with the same number had the same mask. */
    ev_io_init(w, on_conn, c->fd, EV_READ);
    w->data = c;
    ev_io_start(st->ev, w);
    c->registered = EV_READ;
    return 0;   /* ev_io_start cannot fail: libev aborts on out-of-memory */
}

static void libev_unwatch(prg_conn *c) {
    libev_state *st = c->loop->engine_state;
    /* Before close(): stops it and drops an event pending for it. Safe on a
     * watcher that never started (prg_conn_open zeroed the slot). */
    ev_io_stop(st->ev, conn_watcher(c));
    c->registered = 0;
}

/* Out of line: the usual call (nothing changed) then saves no registers. */
__attribute__((noinline)) static void libev_rearm(prg_conn *c, int want) {
    libev_state *st = c->loop->engine_state;
    ev_io *w = conn_watcher(c);
    /* libev changes a started watcher's events only by stop, set, start; the
     * kernel is touched once, at the next iteration, if the mask changed. */
    if (c->registered) ev_io_stop(st->ev, w);
    if (want) {
        ev_io_modify(w, want);
        ev_io_start(st->ev, w);
    }
    c->registered = (uint32_t)want;
}

static void libev_update_interest(prg_conn *c) {
    int want = 0;
    /* The same condition as the epoll engine's level mode. */
    if ((c->flags & CONN_LINGER) || !(c->flags & (CONN_PAUSED | CONN_READ_EOF | CONN_CLOSE_AFTER | CONN_BODY_HELD)))
        want |= EV_READ;
    if (c->out_bytes) want |= EV_WRITE;
    if ((uint32_t)want != c->registered) libev_rearm(c, want);   /* steady state: no libev call */
}

/* Out of descriptors (loop.c pauses accepting for a second), then back. On
 * the epoll backend, stopping issues no EPOLL_CTL_DEL: the next pending
 * connection wakes libev once, and libev deletes the listener from the set
 * then (it sees an event nobody wants); starting adds it back. */
static int libev_set_listener(prg_loop *loop, bool on) {
    libev_state *st = loop->engine_state;
    /* Cannot fail here: libev applies the change in its next iteration and
     * handles its backend's errors itself. */
    if (on) ev_io_start(st->ev, &st->listener);
    else ev_io_stop(st->ev, &st->listener);
    return 0;
}

const prg_engine_ops prg_engine_libev = {
    .name = "libev",
    .init = libev_init,
    .run = libev_run,
    .wake = libev_wake,
    .destroy = libev_destroy,
    .watch = libev_watch,
    .unwatch = libev_unwatch,
    .conn_slot_bytes = sizeof(ev_io),   /* each connection's watcher, in c->engine_slot */
    .update_interest = libev_update_interest,
    .set_listener = libev_set_listener,
};
