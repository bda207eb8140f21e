/*
 * engine_blocking.c: the classic baseline engines, on blocking sockets.
 * Both defer answers as the event engines do (offload.c): see "deferred
 * answers" below.
 *
 *  blocking  One client at a time: a loop of blocking accepts, and each
 *            connection is served to its end before the next accept. HTTP:
 *            one request, answered with "Connection: close" (pipelined
 *            requests after it are not answered). Raw: until the client
 *            closes. Everyone else waits in the listen backlog.
 *  threaded  A thread per connection (Python's ThreadingTCPServer: setup,
 *            handle, finish). The acceptor blocks in accept and starts a
 *            worker thread per connection, at most max_threads of them;
 *            beyond, the acceptor answers 503 itself (raw mode: closes).
 *
 * Both reuse conn.c as the event engines do; only the waiting differs. The
 * socket is blocking and the thread waits for its client in recv: that
 * recv is the readiness an event engine would report, so the watch ops are
 * (nearly) no-ops and the trigger is level (one recv per call). Sends never
 * wait (conn.c sends with MSG_DONTWAIT): the common answer leaves in one
 * send, and when the client does not take it, the thread waits in poll for
 * either direction, as the event engines do (reading goes on until
 * backpressure pauses it). Every socket has SO_RCVTIMEO of one second (and
 * SO_SNDTIMEO, should a send ever wait), and the poll the same timeout, so
 * each wait returns at least once a second (the tick): the clocks are
 * refreshed and the context's own timer lists are swept (timer.c), so the
 * header, idle, stalled-body and unread-output timeouts mean what they mean
 * in the event engines. A tick with nothing done is not progress: it must
 * not restart the idle timeout.
 *
 * A worker needs what conn.c reaches through c->loop (pool, header array,
 * Date cache, Server line, timer lists, dead list): each has a prg_loop of
 * its own. Worker contexts are reused from a spare list, so a new connection
 * costs a thread and nothing more. Connection ids come from the acceptor.
 *
 * Graceful shutdown (prg_server_shutdown): wake shuts the listener down
 * only. The blocking engine finishes the connection being served (answered
 * with Connection: close; closed at once if nothing of a request arrived
 * yet); clients waiting in the backlog are reset by the kernel. The threaded
 * acceptor stops accepting and waits for the workers, each finishing its
 * current request the same way, until the deadline; then it stops them.
 *
 * Stopping: wake stays async-signal-safe. It shuts the listener down
 * (shutdown(SHUT_RD) makes a blocked accept return EINVAL on Linux), and the
 * blocking engine also shuts down the connection being served. The threaded
 * acceptor, once out of accept, shuts down every worker's socket (a blocked
 * recv returns 0, a send fails), waits for the workers and joins them.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

/* Every blocking call returns at least this often: the timers' tick. */
#define TICK_SECONDS 1
/* Pool blocks a worker context keeps for its next connection: a request
 * needs two at most (receive buffer, one send chunk). */
#define WORKER_POOL_KEEP 2

/* Set by prg_server_stop on the server's one loop. seq_cst: blocking_wake
 * relies on it (see there). */
static bool stopping(const prg_loop *loop) {
    return atomic_load(&loop->server->loops[0].stop) != 0;
}

static bool draining(const prg_loop *loop) { return prg_drain_requested(loop->server); }

/* The listener was made non-blocking for the event engines: here accept
 * blocks, with the tick. Accepted sockets inherit both timeouts from the
 * listener (Linux copies them at accept), so connections cost no setsockopt
 * for them. Returns 0 or -errno. */
static int listener_to_blocking(prg_loop *loop) {
    int fd = loop->listen_fd;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) return -errno;
    struct timeval tick = {.tv_sec = TICK_SECONDS, .tv_usec = 0};
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tick, sizeof tick) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tick, sizeof tick) != 0)
        return -errno;
    return 0;
}

/* One blocking accept. Returns a blocking socket, or -1 after a tick, an
 * error dealt with (never a spin: see prg_loop_accept_error), or stop. */
static int accept_one(prg_loop *loop, struct sockaddr_storage *peer) {
    socklen_t peer_len = sizeof *peer;
    /* The peer comes with the accept: no getpeername afterwards. */
    int fd = accept4(loop->listen_fd, (struct sockaddr *)peer, &peer_len, SOCK_CLOEXEC);
    int err = errno;
    prg_loop_refresh_clocks(loop);
    if (fd >= 0) return fd;
    if (err == EAGAIN || err == EWOULDBLOCK || stopping(loop) || draining(loop)) return -1;   /* tick, or shut down */
    if (!prg_loop_accept_error(loop, err)) {
        /* Out of a resource the next accept lacks too: wait a second. The
         * shut-down listener reports POLLHUP, so stop is not delayed. */
        struct pollfd p = {.fd = loop->listen_fd, .events = 0, .revents = 0};
        (void)poll(&p, 1, TICK_SECONDS * 1000);
        prg_loop_refresh_clocks(loop);
    }
    return -1;
}

/* ------------------------------------------------ serving one connection */

static unsigned prg_events(short revents) {
    unsigned out = 0;
    if (revents & POLLIN) out |= PRG_EV_READ;
    if (revents & POLLOUT) out |= PRG_EV_WRITE;
    if (revents & (POLLHUP | POLLRDHUP)) out |= PRG_EV_HUP;
    if (revents & (POLLERR | POLLNVAL)) out |= PRG_EV_ERROR;
    return out;
}

/* ------------------------------------------------------- deferred answers
 *
 * Each context (the blocking engine's loop, each threaded worker) has a
 * mailbox as the event loops do (offload.c): an eventfd the producers write,
 * made at the context's first prg_defer and reused by all its connections
 * after (a context that never defers holds no descriptor for it). While an
 * answer is owed the thread waits in poll on its client and that eventfd
 * together (and the tick: the handler timeout's sweep), and writes what was
 * posted on its own thread with the ordinary writer. A connection that never
 * defers never looks at it. */

static const prg_engine_ops worker_ops;

static void mailbox_close(prg_loop *loop);

/* Returns 0 or -errno; on failure nothing is left open. */
static int mailbox_open(prg_loop *loop) {
    loop->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (loop->wake_fd < 0) return -errno;
    int rc = prg_offload_loop_init(loop);
    if (rc != 0) mailbox_close(loop);
    return rc;
}

struct prg_mailbox *prg_blocking_mailbox(prg_loop *loop) {
    if (loop->engine != &prg_engine_blocking && loop->engine != &worker_ops) return NULL;
    if (!loop->mailbox && mailbox_open(loop) != 0) return NULL;
    return loop->mailbox;
}

static void mailbox_close(prg_loop *loop) {
    prg_offload_loop_close(loop);   /* before the fd closes: late answers are refused */
    if (loop->wake_fd >= 0) close(loop->wake_fd);
    loop->wake_fd = -1;
}

/* Writes what producers posted (this thread). The eventfd's count is reset
 * first, so a post that comes after wakes the next poll. */
static void mailbox_drain(prg_loop *loop) {
    if (loop->wake_fd < 0) return;   /* none made yet: nothing was posted */
    uint64_t v;
    /* EAGAIN: nothing counted (a post already drained). Drained regardless,
     * so the result changes nothing. */
    ssize_t r = read(loop->wake_fd, &v, sizeof v);
    (void)r;
    prg_offload_drain(loop);
}

/* One wait while answers are owed: the client (reading while the connection
 * reads, as the event engines watch it; pipelined requests are answered
 * behind the owed ones), output it has not taken, and the mailbox. A
 * connection that reads no more (the blocking engine's every answer closes)
 * still watches for the client's FIN: its producers hear of it as they would
 * from an EOF read, so a handler is not left working for nobody. */
static void serve_owed(prg_conn *c) {
    prg_loop *loop = c->loop;
    bool reading = !(c->flags & (CONN_PAUSED | CONN_READ_EOF | CONN_CLOSE_AFTER | CONN_BODY_HELD));
    /* (Only once nothing more will be read: a paused connection's unread
     * requests before the FIN are still to be served.) */
    bool fin_only = (c->flags & (CONN_CLOSE_AFTER | CONN_READ_EOF)) == CONN_CLOSE_AFTER;
    short watch = reading ? POLLIN | POLLRDHUP : fin_only ? POLLRDHUP : 0;
    struct pollfd p[2] = {
        {.fd = c->fd, .events = (short)(watch | (c->out_bytes ? POLLOUT : 0)), .revents = 0},
        {.fd = loop->wake_fd, .events = POLLIN, .revents = 0},
    };
    int n = poll(p, 2, TICK_SECONDS * 1000);
    prg_loop_refresh_clocks(loop);
    /* Stop, or the threaded acceptor's shutdown at the drain deadline: read
     * as the shutdown it is, not as the client's EOF (the producers hear
     * PEER_GONE once, from the close). */
    if (stopping(loop) || (draining(loop) && prg_drain_expired(loop->server))) {
        prg_conn_close_now(c, PRG_CLOSE_SHUTDOWN);
        return;
    }
    if (n <= 0) return;   /* the tick (the sweep runs at the batch's end), or EINTR */
    if (p[1].revents) mailbox_drain(loop);
    /* (A reset or a full hang-up closes it below: that tells them.) */
    if (fin_only && (p[0].revents & (POLLRDHUP | POLLHUP | POLLERR)) == POLLRDHUP && !(c->flags & CONN_CLOSED)) {
        c->flags |= CONN_READ_EOF;   /* watched once: the next poll leaves it out */
        prg_offload_peer_finished(c);
        p[0].revents &= (short)~POLLRDHUP;
    }
    if (p[0].revents) prg_conn_handle_event(c, prg_events(p[0].revents));   /* a no-op if the drain closed it */
}

/* One wait on the client and what comes of it. */
static void serve_step(prg_conn *c) {
    prg_loop *loop = c->loop;
    if (c->defer_head) {
        serve_owed(c);
        return;
    }
    bool lingering = (c->flags & CONN_LINGER) != 0;
    bool reading = lingering || !(c->flags & (CONN_PAUSED | CONN_READ_EOF | CONN_CLOSE_AFTER));
    if (c->out_bytes == 0 && !lingering) {
        if (!reading) {
            prg_conn_finish_io(c);   /* nothing to wait for: it closes, lingers or resumes parsing */
            return;
        }
        /* The classic case: blocked in recv until the client sends, at most
         * a tick. A tick with nothing read is not progress: no finish_io,
         * which would restart the idle timeout. */
        int got = prg_conn_on_readable(c);
        prg_loop_refresh_clocks(loop);
        /* The shutdown that stop sends reads as EOF: end it as a shutdown,
         * not as a client close. */
        if (stopping(loop)) prg_conn_close_now(c, PRG_CLOSE_SHUTDOWN);
        else if (got) prg_conn_finish_io(c);
        return;
    }
    /* Output the client has not taken yet (sends never wait), or a lingering
     * close: wait for either direction as the event engines do, so reading
     * goes on until backpressure pauses it and the idle timeout measures a
     * client that takes nothing. Rare: the common answer leaves in one send. */
    struct pollfd p = {.fd = c->fd, .events = (short)((reading ? POLLIN | POLLRDHUP : 0) | (c->out_bytes ? POLLOUT : 0)),
                       .revents = 0};
    int n = poll(&p, 1, TICK_SECONDS * 1000);
    prg_loop_refresh_clocks(loop);
    if (stopping(loop)) prg_conn_close_now(c, PRG_CLOSE_SHUTDOWN);
    else if (n > 0) prg_conn_handle_event(c, prg_events(p.revents));
}

/* Serves the context's one connection until it is closed and freed.
 * Graceful shutdown: an idle connection (nothing of a request received, no
 * output pending) is closed, one in progress is served on (its request is
 * answered with Connection: close) until done or the deadline. Each wait
 * returns at least once a tick, so both are seen within a second. */
static void serve_connection(prg_loop *loop) {
    bool deferred = false;
    while (loop->live) {
        prg_conn *c = loop->live;
        if (!loop->draining && draining(loop)) loop->draining = true;
        deferred |= c->defer_head != NULL;
        if (stopping(loop) ||
            (loop->draining && (prg_conn_drain_idle(c) || prg_drain_expired(loop->server))))
            prg_conn_close_now(c, PRG_CLOSE_SHUTDOWN);
        else serve_step(c);
        prg_loop_end_batch(loop);   /* ready list, timeouts, freeing */
    }
    /* Ops posted before the close (refused from then on) are dropped now,
     * not kept until the context's next deferral. */
    if (deferred) mailbox_drain(loop);
}

/* ------------------------------------------------------------- blocking */

typedef struct blocking_state {
    atomic_int fd;       /* the connection being served, or -1: wake shuts it down */
    atomic_int waking;   /* wake calls that may be using fd: closing it waits for them */
} blocking_state;

static int blocking_init(prg_loop *loop) {
    blocking_state *st = malloc(sizeof *st);
    if (!st) return -ENOMEM;
    atomic_init(&st->fd, -1);
    atomic_init(&st->waking, 0);
    loop->engine_state = st;
    loop->one_request = loop->server->cfg.mode == PRG_MODE_HTTP;
    return listener_to_blocking(loop);
}

static void blocking_run(prg_loop *loop) {
    while (!stopping(loop) && !draining(loop)) {
        struct sockaddr_storage peer;
        int fd = accept_one(loop, &peer);
        if (fd < 0) continue;
        if (!prg_loop_open_conn(loop, fd, (struct sockaddr *)&peer)) {
            close(fd);
            continue;
        }
        serve_connection(loop);
    }
}

/* Async-signal-safe: shutdown and lock-free atomics only. The fd protocol
 * is Dekker's: wake announces itself (waking) before reading fd, the engine
 * clears fd before reading waking, all seq_cst, so either wake sees -1 or
 * the engine waits until wake is done with the descriptor: a number closed
 * and reused elsewhere in the process is never shut down. The fence orders
 * the stop flag (stored before wake) the same way against watch's store:
 * either wake sees the new connection or the engine sees stop. */
static void blocking_wake(prg_loop *loop) {
    atomic_thread_fence(memory_order_seq_cst);
    /* A blocked accept returns EINVAL; the kernel refuses new connections
     * and resets those waiting in the backlog (Linux: a listener shut down
     * for reading stops listening). */
    (void)shutdown(loop->listen_fd, SHUT_RD);
    blocking_state *st = loop->engine_state;
    if (!st || !stopping(loop)) return;   /* graceful shutdown: the connection being served goes on */
    atomic_fetch_add(&st->waking, 1);
    int fd = atomic_load(&st->fd);
    if (fd >= 0) (void)shutdown(fd, SHUT_RDWR);   /* a blocked recv returns 0, a send fails */
    atomic_fetch_sub(&st->waking, 1);
}

static void blocking_destroy(prg_loop *loop) {
    mailbox_close(loop);
    free(loop->engine_state);
    loop->engine_state = NULL;
}

static int blocking_watch(prg_conn *c) {
    blocking_state *st = c->loop->engine_state;
    atomic_store(&st->fd, c->fd);
    return 0;
}

static void blocking_unwatch(prg_conn *c) {
    blocking_state *st = c->loop->engine_state;
    atomic_store(&st->fd, -1);
    while (atomic_load(&st->waking)) sched_yield();   /* a wake is shutting it down: at most a syscall */
}

static void no_interest(prg_conn *c) { (void)c; }   /* the blocking call itself is the interest */
static int no_listener(prg_loop *loop, bool on) { (void)loop; (void)on; return 0; }   /* accept_one pauses itself */

const prg_engine_ops prg_engine_blocking = {
    .name = "blocking",
    .init = blocking_init,
    .run = blocking_run,
    .wake = blocking_wake,
    .destroy = blocking_destroy,
    .watch = blocking_watch,
    .unwatch = blocking_unwatch,
    .update_interest = no_interest,
    .set_listener = no_listener,
    .blocking_sockets = true,
};

/* ------------------------------------------------------------- threaded */

typedef struct threaded_state threaded_state;

typedef struct worker {
    prg_loop loop;               /* its own context: conn.c reaches everything through c->loop */
    threaded_state *st;
    pthread_t thread;
    int fd;                      /* its socket until closed, else -1 (under st->mu: stop shuts it down) */
    struct sockaddr_storage peer; /* the client, from accept (written before the thread starts) */
    struct worker *prev, *next;  /* st->busy, then st->done; st->spare uses next only */
} worker;

struct threaded_state {
    pthread_mutex_t mu;
    pthread_cond_t finished;     /* a worker moved itself to done */
    worker *busy;                /* serving a connection (under mu) */
    worker *done;                /* finished, to be joined (under mu) */
    worker *spare;               /* joined: contexts to reuse (acceptor only) */
    int threads;                 /* started and not yet joined (acceptor only) */
};

static int threaded_init(prg_loop *loop) {
    threaded_state *st = calloc(1, sizeof *st);
    if (!st) return -ENOMEM;
    int rc = pthread_mutex_init(&st->mu, NULL);
    if (rc != 0) {
        free(st);
        return -rc;
    }
    rc = pthread_cond_init(&st->finished, NULL);
    if (rc != 0) {
        pthread_mutex_destroy(&st->mu);
        free(st);
        return -rc;
    }
    loop->engine_state = st;
    return listener_to_blocking(loop);
}

static worker *worker_new(prg_loop *acceptor, threaded_state *st) {
    worker *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->st = st;
    w->fd = -1;
    prg_loop *loop = &w->loop;
    loop->server = acceptor->server;
    loop->engine = &worker_ops;
    loop->engine_state = w;
    loop->listen_fd = loop->epfd = loop->wake_fd = loop->reserve_fd = -1;
    loop->nodelay_inherited = acceptor->nodelay_inherited;   /* its connections come from the acceptor's listener */
    atomic_init(&loop->stop, 0);   /* unused: workers watch the acceptor's */
    if (prg_loop_init_context(loop) != 0) {
        prg_loop_free_context(loop);
        free(w);
        return NULL;
    }
    memcpy(loop->server_line, acceptor->server_line, sizeof loop->server_line);   /* cfg.server_name is gone */
    loop->server_line_len = acceptor->server_line_len;
    return w;
}

static void worker_free(worker *w) {
    mailbox_close(&w->loop);
    prg_loop_free_context(&w->loop);
    free(w);
}

static void unlink_busy(threaded_state *st, worker *w) {
    if (w->prev) w->prev->next = w->next;
    else st->busy = w->next;
    if (w->next) w->next->prev = w->prev;
    w->prev = w->next = NULL;
}

/* setup, handle, finish: on_open, the connection served to its end,
 * on_close (both from conn.c and loop.c, as in every engine). */
static void *worker_main(void *arg) {
    worker *w = arg;
    threaded_state *st = w->st;
    prg_loop *loop = &w->loop;
    prg_loop_refresh_clocks(loop);
    int fd = w->fd;   /* written before the thread started; only this thread changes it */
    if (prg_loop_open_conn(loop, fd, (struct sockaddr *)&w->peer)) {
        serve_connection(loop);
    } else {
        pthread_mutex_lock(&st->mu);
        w->fd = -1;
        pthread_mutex_unlock(&st->mu);
        close(fd);
    }
    /* A context reused for hello-world traffic needs a block or two; one
     * that queued megabytes gives them back. */
    while (loop->pool.free_count > WORKER_POOL_KEEP) free(prg_pool_get(&loop->pool));
    pthread_mutex_lock(&st->mu);
    unlink_busy(st, w);
    w->next = st->done;
    st->done = w;
    pthread_cond_signal(&st->finished);
    pthread_mutex_unlock(&st->mu);
    return NULL;
}

/* Joins the workers that finished; their contexts become spares. */
static void reap(threaded_state *st) {
    pthread_mutex_lock(&st->mu);
    worker *w = st->done;
    st->done = NULL;
    pthread_mutex_unlock(&st->mu);
    while (w) {
        worker *next = w->next;
        (void)pthread_join(w->thread, NULL);   /* it is past its last lock: returns at once */
        st->threads--;
        w->next = st->spare;
        st->spare = w;
        w = next;
    }
}

/* Starts a worker thread for fd. Returns 0, or -errno (fd stays the caller's). */
static int spawn(prg_loop *acceptor, threaded_state *st, int fd, const struct sockaddr_storage *peer) {
    worker *w = st->spare;
    if (w) st->spare = w->next;
    else if (!(w = worker_new(acceptor, st))) return -ENOMEM;
    w->fd = fd;
    w->peer = *peer;
    w->loop.next_id = acceptor->next_id++;   /* one counter, so ids are unique across workers */
    pthread_mutex_lock(&st->mu);
    w->prev = NULL;
    w->next = st->busy;
    if (st->busy) st->busy->prev = w;
    st->busy = w;
    pthread_mutex_unlock(&st->mu);
    int rc = pthread_create(&w->thread, NULL, worker_main, w);
    if (rc != 0) {
        pthread_mutex_lock(&st->mu);
        unlink_busy(st, w);
        pthread_mutex_unlock(&st->mu);
        w->fd = -1;
        w->next = st->spare;
        st->spare = w;
        return -rc;
    }
    st->threads++;
    return 0;
}

/* Beyond max_threads: a clear refusal written by the acceptor, which must
 * never wait on a client: MSG_DONTWAIT, and an answer that does not fit the
 * empty send buffer is dropped. Input already there is read away so that
 * the close sends a FIN after the answer, not a reset that could destroy it. */
static void refuse(prg_loop *loop, int fd) {
    if (loop->server->cfg.mode == PRG_MODE_HTTP) {
        static const char status[] = "HTTP/1.1 503 Service Unavailable\r\n";
        static const char rest[] = "Content-Type: text/plain\r\nContent-Length: 20\r\n"
                                   "Connection: close\r\nRetry-After: 1\r\n\r\nService Unavailable\n";
        char buf[sizeof status + sizeof loop->server_line + sizeof loop->date.line + sizeof rest];
        size_t n = 0;
        memcpy(buf, status, sizeof status - 1);
        n += sizeof status - 1;
        memcpy(buf + n, loop->server_line, loop->server_line_len);
        n += loop->server_line_len;
        memcpy(buf + n, loop->date.line, loop->date.len);
        n += loop->date.len;
        memcpy(buf + n, rest, sizeof rest - 1);
        n += sizeof rest - 1;
        (void)send(fd, buf, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        (void)shutdown(fd, SHUT_WR);
        char junk[4096];
        for (int i = 0; i < 4 && recv(fd, junk, sizeof junk, MSG_DONTWAIT) > 0; i++) {
        }
    }
    close(fd);
}

/* Shuts down every worker's socket, waits for all of them, joins them. */
static void stop_workers(threaded_state *st) {
    pthread_mutex_lock(&st->mu);
    for (worker *w = st->busy; w; w = w->next)
        if (w->fd >= 0) (void)shutdown(w->fd, SHUT_RDWR);
    while (st->busy) pthread_cond_wait(&st->finished, &st->mu);
    pthread_mutex_unlock(&st->mu);
    reap(st);
}

/* Graceful shutdown: the workers finish their current requests (see
 * serve_connection); wait for them until the deadline or a stop. */
static void drain_workers(prg_loop *loop, threaded_state *st) {
    pthread_mutex_lock(&st->mu);
    while (st->busy && !stopping(loop) && !prg_drain_expired(loop->server)) {
        int ms = prg_drain_ms_left(loop->server);
        if (ms > 100) ms = 100;   /* stop is seen within 100 ms */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += (long)ms * 1000000L;
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        (void)pthread_cond_timedwait(&st->finished, &st->mu, &ts);
    }
    pthread_mutex_unlock(&st->mu);
}

static void threaded_run(prg_loop *loop) {
    threaded_state *st = loop->engine_state;
    int max = loop->server->cfg.max_threads;
    while (!stopping(loop) && !draining(loop)) {
        struct sockaddr_storage peer;
        int fd = accept_one(loop, &peer);
        reap(st);   /* each connection and each tick: finished threads do not linger */
        if (fd < 0) continue;
        if (stopping(loop)) {
            close(fd);
            break;
        }
        if (st->threads >= max || spawn(loop, st, fd, &peer) != 0) refuse(loop, fd);
    }
    if (!stopping(loop)) drain_workers(loop, st);
    stop_workers(st);   /* what the deadline (or a stop) left */
}

/* Async-signal-safe: the acceptor does the rest once out of accept. */
static void threaded_wake(prg_loop *loop) {
    (void)shutdown(loop->listen_fd, SHUT_RD);
}

/* run() has ended (every worker joined) or never ran: only spares remain. */
static void threaded_destroy(prg_loop *loop) {
    threaded_state *st = loop->engine_state;
    if (!st) return;
    while (st->spare) {
        worker *w = st->spare;
        st->spare = w->next;
        worker_free(w);
    }
    pthread_cond_destroy(&st->finished);
    pthread_mutex_destroy(&st->mu);
    free(st);
    loop->engine_state = NULL;
}

static int acceptor_watch(prg_conn *c) { (void)c; return -ENOTSUP; }   /* connections live on workers */

const prg_engine_ops prg_engine_threaded = {
    .name = "threaded",
    .init = threaded_init,
    .run = threaded_run,
    .wake = threaded_wake,
    .destroy = threaded_destroy,
    .watch = acceptor_watch,
    .unwatch = NULL,
    .update_interest = no_interest,
    .set_listener = no_listener,
    .blocking_sockets = true,
};

/* A worker context's engine: its socket is registered by spawn (so stop can
 * shut it down) and unregistered here before conn.c closes it, so stop never
 * shuts down a descriptor number that was reused. */
static int worker_watch(prg_conn *c) { (void)c; return 0; }

static void worker_unwatch(prg_conn *c) {
    worker *w = c->loop->engine_state;
    pthread_mutex_lock(&w->st->mu);
    w->fd = -1;
    pthread_mutex_unlock(&w->st->mu);
}

/* init, run, wake and destroy are never called: a worker is not one of the
 * server's loops (worker_new and threaded_destroy do that work). */
static const prg_engine_ops worker_ops = {
    .name = "threaded-worker",
    .init = NULL,
    .run = NULL,
    .wake = NULL,
    .destroy = NULL,
    .watch = worker_watch,
    .unwatch = worker_unwatch,
    .update_interest = no_interest,
    .set_listener = no_listener,
    .blocking_sockets = true,
};
