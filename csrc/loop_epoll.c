/*
 * loop_epoll.c: the readiness loop on raw epoll, in three trigger modes.
 *
 *  level    EPOLLIN registered while the connection may read, EPOLLOUT only
 *           while output is pending (one epoll_ctl when that changes). One
 *           recv per wakeup: the kernel reports the rest again.
 *  edge     EPOLLIN|EPOLLOUT|EPOLLET registered once at accept and never
 *           changed: EPOLLOUT fires only on the full-to-writable transition,
 *           so it costs nothing in steady state. Reads until EAGAIN, but at
 *           most PRG_ET_READS_PER_WAKEUP recvs, then the connection goes on
 *           a ready list served after the other events (no starvation).
 *  oneshot  EPOLLONESHOT: every event disarms the descriptor, which is re-armed
 *           with one epoll_ctl after the event is handled (the mode that lets
 *           several threads share one epoll set safely; here for comparison).
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_EVENTS 256

static uint32_t initial_events(prg_trigger trigger) {
    switch (trigger) {
    case PRG_TRIGGER_EDGE: return EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLPRI | EPOLLET;
    case PRG_TRIGGER_ONESHOT: return EPOLLIN | EPOLLRDHUP | EPOLLPRI | EPOLLONESHOT;
    default: return EPOLLIN | EPOLLRDHUP | EPOLLPRI;
    }
}

static uint32_t listener_events(const prg_loop *loop);

int prg_loop_init(prg_loop *loop) {
    prg_server *s = loop->server;
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->epfd < 0) return -errno;
    loop->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (loop->wake_fd < 0) return -errno;
    loop->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &loop->wake_fd};
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, loop->wake_fd, &ev) != 0) return -errno;
    /* The listener follows the loop's mode only for edge: with level (and
     * oneshot) a pending accept simply shows up again next round. */
    ev.events = listener_events(loop);
    ev.data.ptr = &loop->listen_fd;
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, loop->listen_fd, &ev) != 0) return -errno;
    loop->headers = calloc(s->cfg.limits.max_headers ? s->cfg.limits.max_headers : 1, sizeof(prg_header));
    if (!loop->headers) return -ENOMEM;
    const char *name = s->cfg.server_name ? s->cfg.server_name : "Peregrine";
    for (const char *q = name; *q; q++)
        if (*q == '\r' || *q == '\n') return -EINVAL;   /* it goes into every response head */
    int n = snprintf(loop->server_line, sizeof loop->server_line, "Server: %s\r\n", name);
    if (n < 0 || (size_t)n >= sizeof loop->server_line) return -ENAMETOOLONG;
    loop->server_line_len = (size_t)n;
    prg_date_refresh(&loop->date, time(NULL));
    loop->timers[TIMER_HEAD].timeout_s = (uint32_t)s->cfg.header_timeout_s;
    loop->timers[TIMER_IDLE].timeout_s = (uint32_t)s->cfg.idle_timeout_s;
    loop->timers[TIMER_LINGER].timeout_s = PRG_LINGER_SECONDS;
    loop->next_id = (uint64_t)loop->index;   /* ids stay unique across loops */
    return 0;
}

void prg_loop_update_interest(prg_conn *c) {
    if (c->flags & CONN_CLOSED) return;
    prg_trigger trigger = c->loop->server->cfg.trigger;
    if (trigger == PRG_TRIGGER_EDGE) return;   /* registered once for everything */
    uint32_t want = EPOLLPRI;
    if ((c->flags & CONN_LINGER) || !(c->flags & (CONN_PAUSED | CONN_READ_EOF | CONN_CLOSE_AFTER)))
        want |= EPOLLIN | EPOLLRDHUP;
    if (c->out_bytes) want |= EPOLLOUT;
    if (trigger == PRG_TRIGGER_ONESHOT) want |= EPOLLONESHOT;   /* re-arm after every event */
    else if (want == c->registered) return;                    /* level: steady state, no syscall */
    struct epoll_event ev = {.events = want, .data.ptr = c};
    if (epoll_ctl(c->loop->epfd, EPOLL_CTL_MOD, c->fd, &ev) != 0) {
        prg_conn_close_now(c, PRG_CLOSE_ERROR);
        return;
    }
    c->registered = want;
}

void prg_loop_mark_ready(prg_conn *c) {
    if (c->flags & (CONN_ON_READY_LIST | CONN_CLOSED)) return;
    c->flags |= CONN_ON_READY_LIST;
    c->ready_next = c->loop->ready;
    c->loop->ready = c;
}

static void set_listener_events(prg_loop *loop, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.ptr = &loop->listen_fd};
    (void)epoll_ctl(loop->epfd, EPOLL_CTL_MOD, loop->listen_fd, &ev);
}

static uint32_t listener_events(const prg_loop *loop) {
    return EPOLLIN | (loop->server->cfg.trigger == PRG_TRIGGER_EDGE ? EPOLLET : 0);
}

/* Accepting fails for lack of a resource the next accept will lack too: stop
 * watching the listener for a second instead of waking up for it in a loop
 * (the pending connections wait in the backlog). */
static void pause_listener(prg_loop *loop) {
    loop->listener_paused = true;
    loop->listener_ready = false;
    loop->listener_resume = loop->now + 1;
    set_listener_events(loop, 0);
}

void prg_loop_resume_listener(prg_loop *loop) {
    loop->listener_paused = false;
    set_listener_events(loop, listener_events(loop));
    loop->listener_ready = true;   /* the backlog may be full already: no new edge */
}

static void log_accept_error(prg_loop *loop, int err) {
    time_t now = time(NULL);
    if (now == loop->emfile_logged) return;   /* at most once a second */
    loop->emfile_logged = now;
    fprintf(stderr, "peregrine: accept: %s; shedding new connections\n", strerror(err));
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
    if (fd >= 0) close(fd);
    loop->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    return fd >= 0;
}

static void accept_ready(prg_loop *loop) {
    prg_server *s = loop->server;
    loop->listener_ready = false;
    if (loop->listener_paused) return;
    for (int i = 0; i < PRG_ACCEPTS_PER_WAKEUP; i++) {
        int fd = accept4(loop->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int err = errno;
            if (err == EAGAIN || err == EWOULDBLOCK) return;   /* drained */
            if (err == EINTR || err == ECONNABORTED || err == EPROTO) continue;
            log_accept_error(loop, err);
            if ((err == EMFILE || err == ENFILE) && shed_connection(loop)) continue;
            pause_listener(loop);   /* ENOBUFS, ENOMEM, or shedding impossible */
            return;
        }
        if (s->cfg.tcp_nodelay) {
            int one = 1;
            (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
        prg_conn *c = prg_conn_open(loop, fd);
        if (!c) {
            close(fd);
            continue;
        }
        c->registered = initial_events(s->cfg.trigger);
        struct epoll_event ev = {.events = c->registered, .data.ptr = c};
        if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
            prg_conn_close_now(c, PRG_CLOSE_ERROR);   /* no on_open yet, so no on_close */
            continue;
        }
        c->flags |= CONN_OPENED;
        if (s->cb.on_open) {
            c->flags |= CONN_IN_CALLBACK;
            s->cb.on_open(s->cb.ctx, c);
            c->flags &= ~CONN_IN_CALLBACK;
        }
        /* A server that speaks first wrote in on_open: send it now. */
        if (c->out_bytes || (c->flags & CONN_CLOSE_AFTER)) prg_conn_finish_io(c);
        else prg_conn_update_timer(c);   /* a client that never sends is idle from the start */
    }
    /* Cap reached: in edge mode no new edge will announce the rest. */
    if (s->cfg.trigger == PRG_TRIGGER_EDGE) loop->listener_ready = true;
}

static void handle_conn_event(prg_conn *c, uint32_t ev) {
    if (c->flags & CONN_CLOSED) return;   /* closed earlier in this batch */
    if (ev & EPOLLERR) {
        prg_conn_close_now(c, PRG_CLOSE_ERROR);
        return;
    }
    if (ev & EPOLLPRI) prg_conn_discard_urgent(c);
    if (ev & (EPOLLRDHUP | EPOLLHUP)) c->flags |= CONN_PEER_HUP;
    if ((ev & EPOLLOUT) && c->out_bytes && prg_conn_flush(c) < 0) return;
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP)) prg_conn_on_readable(c);
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
static void refresh_clocks(prg_loop *loop) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    if (ts.tv_sec != loop->date.second) prg_date_refresh(&loop->date, ts.tv_sec);
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    loop->now = (uint32_t)ts.tv_sec;
}

static bool timers_pending(const prg_loop *loop) {
    for (int i = TIMER_NONE + 1; i < TIMER_LISTS; i++)
        if (loop->timers[i].head) return true;
    return loop->listener_paused;
}

void *prg_loop_run(void *arg) {
    prg_loop *loop = arg;
    struct epoll_event events[MAX_EVENTS];
    while (!atomic_load_explicit(&loop->stop, memory_order_acquire)) {
        /* Wake once a second while any timeout is pending: the sweep's tick. */
        int timeout = (loop->ready || loop->listener_ready) ? 0 : timers_pending(loop) ? 1000 : -1;
        int n = epoll_wait(loop->epfd, events, MAX_EVENTS, timeout);
        if (n < 0) {
            if (errno == EINTR) continue;
            fprintf(stderr, "peregrine: epoll_wait: %s\n", strerror(errno));
            break;
        }
        refresh_clocks(loop);
        for (int i = 0; i < n; i++) {
            void *tag = events[i].data.ptr;
            if (tag == &loop->wake_fd) {
                uint64_t v;
                ssize_t r = read(loop->wake_fd, &v, sizeof v);
                (void)r;
            } else if (tag == &loop->listen_fd) {
                accept_ready(loop);
            } else {
                handle_conn_event(tag, events[i].events);
            }
        }
        if (loop->listener_ready) accept_ready(loop);
        if (loop->ready) serve_ready_list(loop);
        prg_timers_sweep(loop);
        free_dead(loop);
    }
    /* Stopping: every connection is closed and freed. */
    while (loop->live) prg_conn_close_now(loop->live, PRG_CLOSE_SHUTDOWN);
    if (loop->ready) serve_ready_list(loop);
    free_dead(loop);
    return NULL;
}
