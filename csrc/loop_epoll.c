/*
 * loop_epoll.c: the readiness loop on raw epoll, in three trigger modes.
 *
 *  level    EPOLLIN registered while the connection may read, EPOLLOUT only
 *           while output is pending (one epoll_ctl when that changes). As in
 *           every mode, recvs per wakeup go on while each fills the buffer, at
 *           most PRG_READS_PER_WAKEUP; the kernel reports the rest again.
 *  edge     EPOLLIN|EPOLLOUT|EPOLLET registered once at accept and never
 *           changed: EPOLLOUT fires only on the full-to-writable transition,
 *           so it costs nothing in steady state. Reads until EAGAIN, but at
 *           most PRG_READS_PER_WAKEUP recvs, then the connection goes on
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

static uint32_t listener_events(const prg_loop *loop) {
    /* The listener follows the loop's mode only for edge: with level (and
     * oneshot) a pending accept simply shows up again next round. */
    return EPOLLIN | (loop->server->cfg.trigger == PRG_TRIGGER_EDGE ? EPOLLET : 0);
}

static int epoll_init(prg_loop *loop) {
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->epfd < 0) return -errno;
    loop->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (loop->wake_fd < 0) return -errno;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &loop->wake_fd};
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, loop->wake_fd, &ev) != 0) return -errno;
    ev.events = listener_events(loop);
    ev.data.ptr = &loop->listen_fd;
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, loop->listen_fd, &ev) != 0) return -errno;
    return 0;
}

static void epoll_wake(prg_loop *loop) {
    uint64_t one = 1;
    if (loop->wake_fd >= 0) {
        /* async-signal-safe. Its only failure on a live eventfd is EAGAIN
         * (the counter would overflow), which means a wakeup is pending
         * already: nothing to do either way, and no one to tell (a signal
         * handler may be the caller). */
        ssize_t r = write(loop->wake_fd, &one, sizeof one);
        (void)r;
    }
}

static void epoll_destroy(prg_loop *loop) {
    if (loop->epfd >= 0) close(loop->epfd);
    if (loop->wake_fd >= 0) close(loop->wake_fd);
    loop->epfd = loop->wake_fd = -1;
}

static int epoll_watch(prg_conn *c) {
    c->registered = initial_events(c->loop->server->cfg.trigger);
    struct epoll_event ev = {.events = c->registered, .data.ptr = c};
    return epoll_ctl(c->loop->epfd, EPOLL_CTL_ADD, c->fd, &ev) == 0 ? 0 : -errno;
}

static void epoll_update_interest(prg_conn *c) {
    prg_trigger trigger = c->loop->server->cfg.trigger;
    if (trigger == PRG_TRIGGER_EDGE) return;   /* registered once for everything */
    uint32_t want = EPOLLPRI;
    if ((c->flags & CONN_LINGER) || !(c->flags & (CONN_PAUSED | CONN_READ_EOF | CONN_CLOSE_AFTER | CONN_BODY_HELD)))
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

/* Off removes the listener from the set (not only its events): after a
 * drain closes it, a socket shared with another process would stay in the
 * set (which holds the open file, not the number) and report its hang-up.
 * Already in the state asked for (EEXIST, ENOENT) counts as done. */
static int epoll_set_listener(prg_loop *loop, bool on) {
    struct epoll_event ev = {.events = listener_events(loop), .data.ptr = &loop->listen_fd};
    if (epoll_ctl(loop->epfd, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, loop->listen_fd, &ev) == 0) return 0;
    if (errno == (on ? EEXIST : ENOENT)) return 0;
    return -errno;
}

static unsigned prg_events(uint32_t ev) {
    unsigned out = 0;
    if (ev & EPOLLIN) out |= PRG_EV_READ;
    if (ev & EPOLLOUT) out |= PRG_EV_WRITE;
    if (ev & (EPOLLRDHUP | EPOLLHUP)) out |= PRG_EV_HUP;
    if (ev & EPOLLERR) out |= PRG_EV_ERROR;
    if (ev & EPOLLPRI) out |= PRG_EV_URGENT;
    return out;
}

static void epoll_run(prg_loop *loop) {
    struct epoll_event events[MAX_EVENTS];
    while (!atomic_load_explicit(&loop->stop, memory_order_acquire)) {
        int n = epoll_wait(loop->epfd, events, MAX_EVENTS, prg_loop_wait_ms(loop));
        if (n < 0) {
            if (errno == EINTR) continue;
            prg_log(loop->server, PRG_LOG_ERROR, "epoll_wait: %s", strerror(errno));
            break;
        }
        prg_loop_refresh_clocks(loop);
        for (int i = 0; i < n; i++) {
            void *tag = events[i].data.ptr;
            if (tag == &loop->wake_fd) {
                uint64_t v;
                /* EAGAIN: already drained (spurious). The mailbox is drained
                 * and stop checked regardless, so the result changes nothing. */
                ssize_t r = read(loop->wake_fd, &v, sizeof v);
                (void)r;
                prg_offload_drain(loop);   /* answers posted from other threads */
            } else if (tag == &loop->listen_fd) {
                prg_loop_accept_ready(loop);
            } else {
                prg_conn_handle_event(tag, prg_events(events[i].events));
            }
        }
        prg_loop_end_batch(loop);
        prg_loop_drain(loop);
    }
}

const prg_engine_ops prg_engine_epoll = {
    .name = "epoll",
    .init = epoll_init,
    .run = epoll_run,
    .wake = epoll_wake,
    .destroy = epoll_destroy,
    .watch = epoll_watch,
    .unwatch = NULL,   /* close() removes the descriptor: it is never shared */
    .update_interest = epoll_update_interest,
    .set_listener = epoll_set_listener,
};
