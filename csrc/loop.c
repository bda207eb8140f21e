/*
 * loop.c: what every engine's loop shares. An engine (loop_epoll.c,
 * loop_libev.c, engine_blocking.c) only waits for readiness and reports it
 * through prg_conn_handle_event; accepting, the ready list, the clocks,
 * timeouts and freeing closed connections live here, once.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

const prg_engine_ops *prg_engine_for(prg_engine engine) {
    switch (engine) {
    case PRG_ENGINE_EPOLL: return &prg_engine_epoll;
    case PRG_ENGINE_LIBEV: return &prg_engine_libev;
    case PRG_ENGINE_BLOCKING: return &prg_engine_blocking;
    case PRG_ENGINE_THREADED: return &prg_engine_threaded;
    }
    return NULL;
}

/* What any context that serves connections needs (an engine's loop, or a
 * threaded engine's worker): the parser's header array, the Date cache and
 * the timeout lists. Not the Server line: cfg.server_name is valid only
 * during prg_server_create, so a later context copies a loop's line. */
int prg_loop_init_context(prg_loop *loop) {
    prg_server *s = loop->server;
    loop->headers = calloc(s->cfg.limits.max_headers ? s->cfg.limits.max_headers : 1, sizeof(prg_header));
    if (!loop->headers) return -ENOMEM;
    prg_date_refresh(&loop->date, time(NULL));
    loop->timers[TIMER_HEAD].timeout_s = (uint32_t)s->cfg.header_timeout_s;
    loop->timers[TIMER_IDLE].timeout_s = (uint32_t)s->cfg.idle_timeout_s;
    loop->timers[TIMER_LINGER].timeout_s = PRG_LINGER_SECONDS;
    loop->next_id = (uint64_t)loop->index;   /* ids stay unique across loops */
    prg_loop_refresh_clocks(loop);
    return 0;
}

void prg_loop_free_context(prg_loop *loop) {
    while (loop->free_conns) {
        prg_conn *c = loop->free_conns;
        loop->free_conns = c->ready_next;
        free(c);
    }
    prg_pool_drain(&loop->pool);
    free(loop->headers);
    loop->headers = NULL;
}

int prg_loop_init(prg_loop *loop) {
    const prg_config *cfg = &loop->server->cfg;
    loop->engine = prg_engine_for(cfg->engine);
    if (!loop->engine) return -EINVAL;
    loop->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int rc = prg_loop_init_context(loop);
    if (rc != 0) return rc;
    const char *name = cfg->server_name ? cfg->server_name : "Peregrine";
    for (const char *q = name; *q; q++)
        if (*q == '\r' || *q == '\n') return -EINVAL;   /* it goes into every response head */
    int n = snprintf(loop->server_line, sizeof loop->server_line, "Server: %s\r\n", name);
    if (n < 0 || (size_t)n >= sizeof loop->server_line) return -ENAMETOOLONG;
    loop->server_line_len = (size_t)n;
    rc = loop->engine->init(loop);
    if (rc != 0) return rc;
    /* Deferred answers reach a loop through its wake_fd (offload.c). */
    if (loop->engine == &prg_engine_epoll || loop->engine == &prg_engine_libev) return prg_offload_loop_init(loop);
    return 0;
}

void prg_loop_mark_ready(prg_conn *c) {
    if (c->flags & (CONN_ON_READY_LIST | CONN_CLOSED)) return;
    c->flags |= CONN_ON_READY_LIST;
    c->ready_next = c->loop->ready;
    c->loop->ready = c;
}

static void log_listener_error(prg_loop *loop, const char *what, int rc) {
    time_t now = time(NULL);
    if (now == loop->listener_logged) return;   /* at most once a second */
    loop->listener_logged = now;
    prg_log(loop->server, PRG_LOG_ERROR, "%s the listener: %s", what, strerror(-rc));
}

/* Accepting fails for lack of a resource the next accept will lack too: stop
 * watching the listener for a second instead of waking up for it in a loop
 * (the pending connections wait in the backlog). */

void prg_loop_pause_listener(prg_loop *loop) {
    loop->listener_paused = true;
    loop->listener_ready = false;
    loop->listener_resume = loop->now + 1;
    /* Still armed if this fails: the loop wakes for the listener until the
     * resume, but accepts nothing (paused), and says so. */
    int rc = loop->engine->set_listener(loop, false);
    if (rc != 0) log_listener_error(loop, "pausing", rc);
}

void prg_loop_resume_listener(prg_loop *loop) {
    int rc = loop->engine->set_listener(loop, true);
    if (rc != 0) {
        /* Not armed: accepting would never resume. Try again next second. */
        log_listener_error(loop, "re-arming", rc);
        loop->listener_resume = loop->now + 1;
        return;
    }
    loop->listener_paused = false;
    loop->listener_ready = true;   /* the backlog may be full already: no new edge */
}

static void log_accept_error(prg_loop *loop, int err) {
    time_t now = time(NULL);
    if (now == loop->emfile_logged) return;   /* at most once a second */
    loop->emfile_logged = now;
    prg_log(loop->server, PRG_LOG_WARNING, "accept: %s; shedding new connections", strerror(err));
}

/* Out of descriptors: the pending connection would make a level-triggered
 * listener fire forever. Give back the reserved descriptor, accept the
 * connection and close it at once (the client sees a clean close instead of
 * hanging in the backlog), then take the reserve again. Returns false when
 * that was not possible (the caller pauses the listener). */
static bool shed_connection(prg_loop *loop) {
    if (loop->reserve_fd < 0) loop->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (loop->reserve_fd < 0) return false;
    close(loop->reserve_fd);
    int fd = accept4(loop->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd >= 0) {
        close(fd);
        const prg_callbacks *cb = &loop->server->cb;
        if (cb->on_metric) cb->on_metric(cb->ctx, PRG_METRIC_SHED_ACCEPT, 0);
    }
    loop->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    return fd >= 0;
}

bool prg_loop_accept_error(prg_loop *loop, int err) {
    if (err == EINTR || err == ECONNABORTED || err == EPROTO) return true;
    log_accept_error(loop, err);
    return (err == EMFILE || err == ENFILE) && shed_connection(loop);
}

void prg_log(const prg_server *s, prg_log_level level, const char *fmt, ...) {
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0) return;   /* nothing formatted: nothing to say */
    if (s && s->cb.on_log) s->cb.on_log(s->cb.ctx, (int)level, line);
    else (void)fprintf(stderr, "peregrine: %s\n", line);
}

prg_conn *prg_loop_open_conn(prg_loop *loop, int fd, const struct sockaddr *peer) {
    prg_server *s = loop->server;
    if (s->cfg.tcp_nodelay && !loop->nodelay_inherited) {
        int one = 1;
        /* Cannot fail on an accepted TCP socket; if it did, only latency
         * would change (Nagle), not what is sent: not worth refusing the
         * connection over. */
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    prg_conn *c = prg_conn_open(loop, fd);
    if (!c) return NULL;
    struct sockaddr_storage asked;
    socklen_t asked_len = sizeof asked;
    if (!peer && getpeername(fd, (struct sockaddr *)&asked, &asked_len) == 0) peer = (struct sockaddr *)&asked;
    if (peer) prg_address_from_sockaddr(&c->remote, peer);
    /* The event engines register a connection the first time its interest
     * is set (prg_loop_update_interest): after the read below, if it is
     * still open then. */
    bool read_now = loop->read_on_accept && (loop->engine == &prg_engine_epoll || loop->engine == &prg_engine_libev);
    if (!read_now) {
        if (loop->engine->watch(c) != 0) {
            prg_conn_close_now(c, PRG_CLOSE_ERROR);   /* no on_open yet, so no on_close */
            return c;
        }
        c->flags |= CONN_WATCHED;
    }
    c->flags |= CONN_OPENED;
    if (s->cb.on_open) {
        c->flags |= CONN_IN_CALLBACK;
        s->cb.on_open(s->cb.ctx, c);
        c->flags &= ~CONN_IN_CALLBACK;
    }
    if (read_now && !c->out_bytes && !(c->flags & CONN_CLOSE_AFTER)) {
        /* TCP_DEFER_ACCEPT: the request is usually here already. */
        prg_conn_on_readable(c);
        prg_conn_finish_io(c);
        return c;
    }
    /* A server that speaks first wrote in on_open: send it now. */
    if (c->out_bytes || (c->flags & CONN_CLOSE_AFTER)) prg_conn_finish_io(c);
    else prg_conn_update_timer(c);   /* a client that never sends is idle from the start */
    return c;
}

void prg_loop_accept_ready(prg_loop *loop) {
    loop->listener_ready = false;
    if (loop->listener_paused) return;
    /* A graceful shutdown was asked: nothing new is accepted, even in the
     * batch before this loop's drain begins (it closes the listener). */
    if (atomic_load_explicit(&loop->server->drain_deadline_ms, memory_order_acquire) != 0) return;
    for (int i = 0; i < PRG_ACCEPTS_PER_WAKEUP; i++) {
        struct sockaddr_storage peer;
        socklen_t peer_len = sizeof peer;
        int fd = accept4(loop->listen_fd, (struct sockaddr *)&peer, &peer_len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int err = errno;
            if (err == EAGAIN || err == EWOULDBLOCK) return;   /* drained */
            if (prg_loop_accept_error(loop, err)) continue;
            prg_loop_pause_listener(loop);   /* ENOBUFS, ENOMEM, or shedding impossible */
            return;
        }
        if (!prg_loop_open_conn(loop, fd, (struct sockaddr *)&peer)) close(fd);
    }
    /* Cap reached: more may wait, and in edge mode no new edge will say so. */
    loop->listener_ready = true;
}

void prg_conn_handle_events(prg_conn *c, unsigned ev) {
    if (c->flags & CONN_CLOSED) return;   /* closed earlier in this batch */
    if (ev & PRG_EV_ERROR) {
        prg_conn_close_now(c, PRG_CLOSE_ERROR);
        return;
    }
    if (ev & PRG_EV_URGENT) prg_conn_discard_urgent(c);
    if (ev & PRG_EV_HUP) c->flags |= CONN_PEER_HUP;
    if ((ev & PRG_EV_WRITE) && c->out_bytes && prg_conn_flush(c) < 0) return;
    if (ev & (PRG_EV_READ | PRG_EV_HUP)) prg_conn_on_readable(c);
    prg_conn_finish_io(c);
}

static void serve_ready_list(prg_loop *loop) {
    prg_conn *c = loop->ready;
    loop->ready = NULL;   /* connections re-marked while serving go on a new list */
    while (c) {
        prg_conn *next = c->ready_next;
        c->flags &= ~CONN_ON_READY_LIST;
        if (c->flags & CONN_CLOSED) {
            c->ready_next = loop->dead;
            loop->dead = c;
        } else {
            prg_conn_on_readable(c);
            prg_conn_finish_io(c);
        }
        c = next;
    }
}

static void free_dead(prg_loop *loop) {
    while (loop->dead) {
        prg_conn *c = loop->dead;
        loop->dead = c->ready_next;
        prg_conn_free(c);
    }
}

/* Both clocks are read through the vDSO: no syscall. */
void prg_loop_refresh_clocks(prg_loop *loop) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    if (ts.tv_sec != loop->date.second) prg_date_refresh(&loop->date, ts.tv_sec);
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    loop->now = (uint32_t)ts.tv_sec;
}

static bool timers_pending(const prg_loop *loop) {
    for (int i = TIMER_NONE + 1; i < TIMER_LISTS; i++)
        if (loop->timers[i].head) return true;
    return loop->listener_paused || prg_offload_late_pending(loop);
}

int prg_loop_wait_ms(const prg_loop *loop) {
    if (loop->ready || loop->listener_ready) return 0;
    /* Wake once a second while any timeout is pending: the sweep's tick. */
    int ms = timers_pending(loop) ? 1000 : -1;
    if (loop->draining) {
        /* Wake at the shutdown deadline at the latest, and when idle
         * connections kept after a handoff are due to close. */
        int left = prg_drain_ms_left(loop->server);
        int grace = prg_drain_idle_grace_left(loop->server);
        if (grace > 0 && grace < left) left = grace;
        if (ms < 0 || left < ms) ms = left;
    }
    return ms;
}

/* The loops that run on_tick (and can be woken for it). The blocking and
 * threaded contexts have a mailbox too (deferred answers), but no ticks. */
static bool event_loop(const prg_loop *loop) {
    return loop->engine == &prg_engine_epoll || loop->engine == &prg_engine_libev;
}

/* The application's work on this thread (on_tick); what it answered from
 * here is posted to the mailbox: written out now, not a wake-up later. */
static int run_tick(prg_loop *loop, int phase) {
    const prg_callbacks *cb = &loop->server->cb;
    int work = cb->on_tick(cb->ctx, loop->index, phase);
    if (work > 0) prg_offload_drain(loop);
    return work;
}

void prg_loop_end_batch(prg_loop *loop) {
    if (loop->listener_ready) prg_loop_accept_ready(loop);
    if (loop->ready) serve_ready_list(loop);
    if (loop->server->cb.on_tick && event_loop(loop)) {   /* epoll, libev: the loops that run on_tick */
        /* The work may resume body streams (the ready list), whose bytes give
         * it more work: go round until neither has any, within a bound (then
         * the next batch comes at once). */
        int rounds = 0;
        for (;;) {
            int work = run_tick(loop, PRG_TICK_BATCH);   /* its answers' drain may queue more */
            if (loop->ready) serve_ready_list(loop);
            else if (work == 0) break;
            if (++rounds == 64) {
                loop->engine->wake(loop);
                break;
            }
        }
    }
    prg_timers_sweep(loop);
    free_dead(loop);
}

/* ------------------------------------------------------ graceful shutdown
 *
 * prg_server_shutdown sets server->drain and a deadline, then wakes every
 * loop. Each context then stops accepting, closes what is idle, lets what is
 * in flight finish (its request answered with Connection: close, its output
 * flushed), and closes everything left at the deadline. */

int64_t prg_monotonic_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);   /* async-signal-safe */
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool prg_drain_requested(const prg_server *s) {
    return atomic_load_explicit(&s->drain, memory_order_acquire) != 0;
}

int prg_drain_ms_left(const prg_server *s) {
    int64_t left = atomic_load(&s->drain_deadline_ms) - prg_monotonic_ms();
    if (left < 0) return 0;
    return left > 1000000000 ? 1000000000 : (int)left;
}

bool prg_drain_expired(const prg_server *s) { return prg_drain_ms_left(s) == 0; }

int prg_drain_idle_grace_left(const prg_server *s) {
    int64_t left = atomic_load(&s->drain_idle_until_ms) - prg_monotonic_ms();
    if (left < 0) return 0;
    return left > 1000000000 ? 1000000000 : (int)left;
}

/* Idle: no request partly received (HTTP: the receive buffer holds nothing;
 * raw: unconsumed input does not count), no output pending, no offloaded
 * answer owed, no callback running, not lingering after an error answer
 * (that ends by itself). */
bool prg_conn_drain_idle(const prg_conn *c) {
    if (c->flags & (CONN_CLOSED | CONN_IN_CALLBACK | CONN_LINGER)) return false;
    if (c->out_bytes || c->defer_head) return false;   /* output pending, or offloaded answers owed */
    if (c->flags & CONN_STREAMING) return false;       /* a body on its way (maybe all taken) */
    return c->in_len == 0 || c->loop->server->cfg.mode == PRG_MODE_RAW;
}

static void drain_begin(prg_loop *loop) {
    loop->draining = true;
    /* Stop accepting: closing the listener makes the kernel refuse new
     * connections and reset those still in its accept queue, instead of
     * leaving them in a backlog nobody serves. A listener handed to another
     * process (or inherited from systemd) stays open there: that process
     * accepts what is queued. */
    if (loop->listen_fd >= 0) {
        /* Before close: a socket another process shares stays in our
         * epoll set after close() (the set holds the open file), and libev
         * must stop its watcher. Closed either way; a failure is logged. */
        int rc = loop->engine->set_listener(loop, false);
        if (rc != 0) log_listener_error(loop, "removing", rc);
        close(loop->listen_fd);
        loop->listen_fd = -1;
    }
    loop->listener_ready = false;
    loop->listener_paused = false;
    /* Output pending and no request buffered: the answer is the last one. */
    for (prg_conn *c = loop->live, *next; c; c = next) {
        next = c->next;   /* update_interest may close c (a failed epoll_ctl), which unlinks it */
        /* (a streamed body on its way may have output queued: its answer, or 100 Continue) */
        if ((c->flags & (CONN_CLOSED | CONN_LINGER | CONN_CLOSE_AFTER | CONN_STREAMING)) || !c->out_bytes || c->in_len)
            continue;
        c->flags |= CONN_CLOSE_AFTER;
        c->close_reason = PRG_CLOSE_SHUTDOWN;
        prg_loop_update_interest(c);
    }
}

void prg_loop_drain(prg_loop *loop) {
    if (!prg_drain_requested(loop->server)) return;
    if (!loop->draining) drain_begin(loop);
    bool expired = prg_drain_expired(loop->server);
    /* After a handoff, idle connections are kept a while for their next
     * request (answered with Connection: close, see drain_begin). */
    bool close_idle = prg_drain_idle_grace_left(loop->server) == 0;
    prg_conn *c = loop->live;
    while (c) {
        prg_conn *next = c->next;   /* close_now unlinks c */
        if (expired || (close_idle && prg_conn_drain_idle(c))) prg_conn_close_now(c, PRG_CLOSE_SHUTDOWN);
        c = next;
    }
    free_dead(loop);
    /* The last connection is gone: the loop ends. */
    if (!loop->live) atomic_store_explicit(&loop->stop, 1, memory_order_release);
}

void *prg_loop_run(void *arg) {
    prg_loop *loop = arg;
    bool ticks = loop->server->cb.on_tick && event_loop(loop);   /* epoll, libev */
    if (ticks) (void)run_tick(loop, PRG_TICK_START);
    loop->engine->run(loop);
    /* Stopping: every connection is closed and freed. */
    while (loop->live) prg_conn_close_now(loop->live, PRG_CLOSE_SHUTDOWN);
    if (loop->ready) serve_ready_list(loop);
    free_dead(loop);
    if (ticks) (void)run_tick(loop, PRG_TICK_STOP);   /* the application's last work here (it hears of the closes) */
    return NULL;
}
