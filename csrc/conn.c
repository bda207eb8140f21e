/*
 * conn.c: where bytes arrive and leave. A connection's receive buffer, its
 * send queue (sendmsg with MSG_NOSIGNAL over a list of pooled blocks), the
 * dispatch of parsed requests to Swift, backpressure and closing.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

/* recv and sendmsg for the request path, as plain system calls: libc's are
 * cancellation points, and their wrappers (about 30 instructions a call in a
 * process with threads) cost more than the rest of the call. No thread here
 * is ever cancelled (pthread_cancel), so nothing else changes: the same
 * results, -1 with errno on failure. */
static inline ssize_t sys_recv(int fd, void *buf, size_t len, int flags) {
    return (ssize_t)syscall(SYS_recvfrom, fd, buf, len, flags, NULL, NULL);
}

static inline ssize_t sys_sendmsg(int fd, const struct msghdr *msg, int flags) {
    return (ssize_t)syscall(SYS_sendmsg, fd, msg, flags);
}

/* ---------------------------------------------------------------- pool */

void *prg_pool_get(prg_pool *pool) {
    void *b = pool->free_list;
    if (b) {
        pool->free_list = *(void **)b;
        pool->free_count--;
        return b;
    }
    return malloc(PRG_BLOCK_SIZE);
}

void prg_pool_put(prg_pool *pool, void *block) {
    if (pool->free_count >= PRG_POOL_MAX_FREE) {
        free(block);
        return;
    }
    *(void **)block = pool->free_list;
    pool->free_list = block;
    pool->free_count++;
}

void prg_pool_drain(prg_pool *pool) {
    while (pool->free_list) {
        void *b = pool->free_list;
        pool->free_list = *(void **)b;
        free(b);
    }
    pool->free_count = 0;
}

/* -------------------------------------------------------- receive buffer */

static void in_release(prg_conn *c) {
    if (!c->in) return;
    if (c->in_cap == PRG_BLOCK_SIZE) prg_pool_put(&c->loop->pool, c->in);
    else free(c->in);
    c->in = NULL;
    c->in_len = c->in_cap = 0;
}

/* Makes room for at least `want` more bytes. Returns 0, or -1 when the
 * buffer may not grow (limit) or memory ran out. */
static int in_grow(prg_conn *c, size_t want, size_t limit);

static inline int in_reserve(prg_conn *c, size_t want, size_t limit) {
    if (!c->in) {
        c->in = prg_pool_get(&c->loop->pool);
        if (!c->in) return -1;
        c->in_cap = PRG_BLOCK_SIZE;
        c->in_len = 0;
    }
    if (c->in_cap - c->in_len >= want) return 0;
    return in_grow(c, want, limit);
}

/* Out of line: the usual read (room in the block) then saves no registers. */
__attribute__((noinline)) static int in_grow(prg_conn *c, size_t want, size_t limit) {
    size_t need = (size_t)c->in_len + want;
    if (need > limit) return -1;
    size_t cap = c->in_cap;
    while (cap < need) cap *= 2;
    if (cap > limit) cap = limit;
    uint8_t *bigger = malloc(cap);
    if (!bigger) return -1;
    memcpy(bigger, c->in, c->in_len);
    if (c->in_cap == PRG_BLOCK_SIZE) prg_pool_put(&c->loop->pool, c->in);
    else free(c->in);
    c->in = bigger;
    c->in_cap = (uint32_t)cap;
    return 0;
}

/* Largest receive buffer a connection may need. HTTP: a full head, a full
 * decoded body (chunk framing is compacted away as it is decoded, see
 * prg_http_compact), one chunk-size line, a trailer section, and one read of
 * slack. Raw: PRG_RAW_MAX_INPUT. */
static size_t in_limit(const prg_conn *c) {
    const prg_config *cfg = &c->loop->server->cfg;
    if (cfg->mode == PRG_MODE_RAW) return PRG_RAW_MAX_INPUT;
    /* A streamed body never grows the buffer: bytes the application has not
     * taken stop the reading instead (CONN_BODY_HELD). */
    if (c->flags & CONN_STREAMING) return c->in_cap > PRG_BLOCK_SIZE ? c->in_cap : PRG_BLOCK_SIZE;
    const prg_http_limits *l = &cfg->limits;
    return 2 * l->max_header_bytes + l->max_body + l->max_request_line + PRG_BLOCK_SIZE;
}

/* Drops `n` consumed bytes from the front of the receive buffer. */
static void in_consume(prg_conn *c, size_t n) {
    if (n >= c->in_len) {
        in_release(c);
        return;
    }
    memmove(c->in, c->in + n, c->in_len - n);
    c->in_len -= (uint32_t)n;
}

/* ------------------------------------------------------------ send queue */

static prg_chunk *chunk_new(prg_conn *c, size_t min_cap) {
    prg_chunk *k;
    if (min_cap <= PRG_CHUNK_DATA_CAP) {
        k = prg_pool_get(&c->loop->pool);
        if (!k) return NULL;
        k->cap = PRG_CHUNK_DATA_CAP;
        k->pooled = 1;
    } else {
        if (min_cap > UINT32_MAX - sizeof(prg_chunk)) return NULL;
        k = malloc(sizeof(prg_chunk) + min_cap);
        if (!k) return NULL;
        k->cap = (uint32_t)min_cap;
        k->pooled = 0;
    }
    k->next = NULL;
    k->start = k->end = 0;
    k->is_file = 0;
    if (c->out_tail) c->out_tail->next = k;
    else c->out_head = k;
    c->out_tail = k;
    return k;
}

/* The one place a link is let go: a file link closes its descriptor. */
static void chunk_release(prg_loop *loop, prg_chunk *k) {
    if (k->is_file) (void)close(((prg_file_range *)(void *)k->data)->fd);   /* nothing to retry on error */
    if (k->pooled) prg_pool_put(&loop->pool, k);
    else free(k);
}

void prg_chunks_release(prg_loop *loop, prg_chunk *k) {
    while (k) {
        prg_chunk *next = k->next;
        chunk_release(loop, k);
        k = next;
    }
}

static void out_release_all(prg_conn *c) {
    prg_chunks_release(c->loop, c->out_head);
    c->out_head = c->out_tail = NULL;
    c->out_bytes = 0;
}

uint8_t *prg_out_reserve(prg_conn *c, size_t n) {
    prg_chunk *t = c->out_tail;
    if (t && t->cap - t->end >= n) return t->data + t->end;
    t = chunk_new(c, n);
    return t ? t->data : NULL;
}

int prg_out_append(prg_conn *c, const void *p, size_t n) {
    const uint8_t *src = p;
    while (n > 0) {
        prg_chunk *t = c->out_tail;
        if (!t || t->end == t->cap) {
            t = chunk_new(c, 1);
            if (!t) return -1;
        }
        size_t room = t->cap - t->end;
        size_t take = n < room ? n : room;
        memcpy(t->data + t->end, src, take);
        t->end += (uint32_t)take;
        c->out_bytes += take;
        src += take;
        n -= take;
    }
    return 0;
}

int prg_out_append_file(prg_conn *c, int fd, int64_t offset, int64_t length) {
    if (fd < 0 || offset < 0 || length <= 0 || (uint64_t)length > SIZE_MAX - c->out_bytes) {
        if (fd >= 0) (void)close(fd);
        return -1;
    }
    prg_chunk *k = malloc(sizeof(prg_chunk) + sizeof(prg_file_range));
    if (!k) {
        (void)close(fd);
        return -1;
    }
    k->next = NULL;
    k->start = k->end = k->cap = 0;   /* no room: later bytes get a link of their own */
    k->pooled = 0;
    k->is_file = 1;
    prg_file_range *f = (prg_file_range *)(void *)k->data;
    f->fd = fd;
    f->offset = offset;
    f->left = length;
    if (c->out_tail) c->out_tail->next = k;
    else c->out_head = k;
    c->out_tail = k;
    c->out_bytes += (size_t)length;
    return 0;
}

static void set_cork(prg_conn *c, int on) {
    (void)setsockopt(c->fd, IPPROTO_TCP, TCP_CORK, &on, sizeof on);
}

/* sendfile(2) has no MSG_NOSIGNAL: writing to a peer that reset raises
 * SIGPIPE, whose default action ends the process. While a flush sends file
 * ranges its thread blocks SIGPIPE, takes back a SIGPIPE the send raised,
 * and restores the mask when the flush ends. The process's signal
 * dispositions are left alone. */
typedef struct sigpipe_guard {
    sigset_t old;
    bool blocked;   /* the mask was changed: restore it */
    bool owned;     /* SIGPIPE was not blocked before: a pending one is ours */
} sigpipe_guard;

static int sigpipe_block(sigpipe_guard *g) {
    if (g->blocked) return 0;
    sigset_t pipe_only;
    if (sigemptyset(&pipe_only) != 0 || sigaddset(&pipe_only, SIGPIPE) != 0) return -1;
    if (pthread_sigmask(SIG_BLOCK, &pipe_only, &g->old) != 0) return -1;
    g->blocked = true;
    g->owned = sigismember(&g->old, SIGPIPE) == 0;
    return 0;
}

/* After EPIPE: the SIGPIPE it raised is pending on this thread; take it. */
static void sigpipe_take(const sigpipe_guard *g) {
    if (!g->owned) return;   /* the application blocks SIGPIPE itself: its own to handle */
    sigset_t pipe_only;
    if (sigemptyset(&pipe_only) != 0 || sigaddset(&pipe_only, SIGPIPE) != 0) return;
    const struct timespec zero = {0, 0};
    while (sigtimedwait(&pipe_only, NULL, &zero) == SIGPIPE) {
    }
}

static void sigpipe_restore(sigpipe_guard *g) {
    if (g->blocked) (void)pthread_sigmask(SIG_SETMASK, &g->old, NULL);   /* fails only for a bad how */
    g->blocked = false;
}

/* Largest count one sendfile call takes (Linux caps it here anyway). */
#define PRG_SENDFILE_MAX 0x7ffff000

/* Sends from the file link at the head of the queue. Returns 0 (progress),
 * 1 (would block) or -1 (connection closed: socket error, or the file
 * ended before the promised length, so the answer can never be whole). */
static int flush_file(prg_conn *c, prg_chunk *k, sigpipe_guard *guard) {
    prg_file_range *f = (prg_file_range *)(void *)k->data;
    if (sigpipe_block(guard) != 0) {
        prg_conn_close_now(c, PRG_CLOSE_ERROR);
        return -1;
    }
    size_t want = f->left > PRG_SENDFILE_MAX ? PRG_SENDFILE_MAX : (size_t)f->left;
    off_t off = (off_t)f->offset;
    /* A blocking socket (engine_blocking.c) has SO_SNDTIMEO of a tick: the
     * call returns within it, with what was sent or EAGAIN, and the engine
     * then waits for POLLOUT as it does after a short sendmsg. */
    ssize_t sent = sendfile(c->fd, f->fd, &off, want);
    if (sent < 0) {
        if (errno == EINTR) return 0;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return 1;
        if (errno == EPIPE) sigpipe_take(guard);
        prg_conn_close_now(c, PRG_CLOSE_ERROR);   /* peer gone, or the file failed to read */
        return -1;
    }
    if (sent == 0) {
        /* End of file before the promised length (truncated meanwhile). */
        prg_conn_close_now(c, PRG_CLOSE_ERROR);
        return -1;
    }
    f->offset += sent;
    f->left -= sent;
    c->out_bytes -= (size_t)sent;
    if (f->left == 0) {
        c->out_head = k->next;
        if (!c->out_head) c->out_tail = NULL;
        chunk_release(c->loop, k);
    }
    return 0;
}

int prg_conn_flush(prg_conn *c) {
    if (c->flags & CONN_CLOSED) return -1;
    if (c->out_bytes == 0) return 0;
    bool cork = c->loop->server->cfg.tcp_cork;
    if (cork) set_cork(c, 1);
    int result = 0;
    sigpipe_guard guard = {.blocked = false, .owned = false};
    while (c->out_bytes > 0) {
        /* Empty byte links at the front (a reservation never committed). */
        prg_chunk *head = c->out_head;
        while (head && !head->is_file && head->end == head->start) {
            c->out_head = head->next;
            if (!c->out_head) c->out_tail = NULL;
            chunk_release(c->loop, head);
            head = c->out_head;
        }
        if (!head) break;
        if (head->is_file) {
            int r = flush_file(c, head, &guard);
            if (r < 0) {
                sigpipe_restore(&guard);
                return -1;
            }
            if (r > 0) { result = 1; break; }
            continue;
        }
        /* The byte links up to the next file link, in one sendmsg. */
        struct iovec iov[64];
        int n = 0;
        bool file_next = false;
        for (prg_chunk *k = head; k && n < 64; k = k->next) {
            if (k->is_file) { file_next = true; break; }
            if (k->end == k->start) continue;
            iov[n].iov_base = k->data + k->start;
            iov[n].iov_len = k->end - k->start;
            n++;
        }
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        /* MSG_DONTWAIT: a no-op on the event engines' non-blocking sockets;
         * on the blocking engines' it keeps a send from waiting on a client
         * that does not read (the engine waits, see engine_blocking.c).
         * MSG_MORE before a file range: the head and the file's first bytes
         * share a segment instead of the head leaving alone. */
        ssize_t sent = sys_sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT | (file_next ? MSG_MORE : 0));
        if (sent < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) { result = 1; break; }
            sigpipe_restore(&guard);
            prg_conn_close_now(c, PRG_CLOSE_ERROR);  /* EPIPE, ECONNRESET: peer is gone */
            return -1;
        }
        size_t left = (size_t)sent;
        c->out_bytes -= left;
        while (left > 0 && c->out_head) {
            prg_chunk *k = c->out_head;
            size_t avail = k->end - k->start;
            if (left < avail) {
                k->start += (uint32_t)left;
                left = 0;
                break;
            }
            left -= avail;
            c->out_head = k->next;
            if (!c->out_head) c->out_tail = NULL;
            chunk_release(c->loop, k);
        }
    }
    sigpipe_restore(&guard);
    if (cork) set_cork(c, 0);
    if (c->out_bytes == 0) {
        /* Keep no empty links around: an idle connection holds no block. */
        out_release_all(c);
    }
    return result;
}

/* ------------------------------------------------- streamed bodies: end */

/* Ends the stream and runs on_body_end once with `state`. */
static void body_end_notify(prg_conn *c, int state) {
    if (!(c->flags & CONN_STREAMING)) return;
    void *stream = c->busy->body_stream;   /* streaming: prg_body_stream made the record */
    c->flags &= ~(uint32_t)(CONN_STREAMING | CONN_BODY_HELD);
    c->busy->body_stream = NULL;
    c->busy->body_pending = 0;
    if (c->defer_head) (void)prg_offload_body_end(c, state, 0);   /* its deferred answer learns it first */
    const prg_callbacks *cb = &c->loop->server->cb;
    uint32_t in_cb = c->flags & CONN_IN_CALLBACK;
    c->flags |= CONN_IN_CALLBACK;
    cb->on_body_end(cb->ctx, c, stream, state);
    c->flags = (c->flags & ~(uint32_t)CONN_IN_CALLBACK) | in_cb;
    prg_conn_busy_trim(c);
}

/* ------------------------------------------------------------- lifecycle */

prg_conn *prg_conn_open(prg_loop *loop, int fd) {
    prg_conn *c = loop->free_conns;
    if (c) loop->free_conns = c->ready_next;
    else {
        c = malloc(sizeof *c + loop->engine->conn_slot_bytes);
        if (!c) return NULL;
    }
    memset(c, 0, sizeof *c + loop->engine->conn_slot_bytes);
    c->fd = fd;
    c->loop = loop;
    c->id = loop->next_id;
    if (loop->server->cfg.proxy_protocol) c->flags |= CONN_PROXY_PENDING;
    loop->next_id += (uint64_t)loop->server->loop_count;   /* loop i hands out i, i+N, i+2N… */
    c->next = loop->live;
    if (loop->live) loop->live->prev = c;
    loop->live = c;
    return c;
}

/* Closes the socket at once; the struct stays valid until the end of the
 * loop's batch (events for it may still be in the array being processed,
 * and a callback may be on the stack). */
void prg_conn_close_now(prg_conn *c, int reason) {
    if (c->flags & CONN_CLOSED) return;
    c->flags |= CONN_CLOSED;
    c->close_reason = (uint8_t)reason;
    prg_timer_remove(c);
    prg_loop *loop = c->loop;
    if (loop->engine->unwatch) loop->engine->unwatch(c);   /* libev: before the fd can be reused */
    close(c->fd);
    c->fd = -1;
    if (c->prev) c->prev->next = c->next;
    else loop->live = c->next;
    if (c->next) c->next->prev = c->prev;
    c->prev = c->next = NULL;
    if (c->defer_head) prg_offload_conn_closed(c);   /* late answers become no-ops */
    const prg_callbacks *cb = &loop->server->cb;
    if (c->flags & CONN_STREAMING) {
        /* The body will never end: the handler learns why before on_close. A
         * client's FIN was reported when it was read; here it is a socket
         * error or reset (the client), or the server's own decision. */
        body_end_notify(c, reason == PRG_CLOSE_ERROR ? PRG_BODY_CLIENT_GONE : PRG_BODY_CLOSED);
    }
    if (cb->on_close && (c->flags & CONN_OPENED)) cb->on_close(cb->ctx, c, reason);
    /* The ready list may hold it: it is skipped there (CONN_CLOSED) and
     * unlinked when that list is rebuilt, so it goes on the dead list only
     * once it left the ready list. */
    if (!(c->flags & CONN_ON_READY_LIST)) {
        c->ready_next = loop->dead;
        loop->dead = c;
    }
}

prg_conn_busy *prg_conn_busy_get(prg_conn *c) {
    if (!c->busy) c->busy = calloc(1, sizeof *c->busy);
    return c->busy;
}

void prg_conn_busy_trim(prg_conn *c) {
    prg_conn_busy *b = c->busy;
    if (!b || (c->flags & (CONN_STREAMING | CONN_PARSER_SAVED)) || c->defer_head || b->userdata) return;
    c->busy = NULL;
    free(b);
}

void prg_conn_free(prg_conn *c) {
    prg_loop *loop = c->loop;
    free(c->busy);   /* what it held has let go of the connection by now */
    c->busy = NULL;
    in_release(c);
    out_release_all(c);
    c->ready_next = loop->free_conns;
    loop->free_conns = c;
}

void prg_conn_discard_urgent(prg_conn *c) {
    uint8_t junk[64];
    /* Out-of-band data: read it so level-triggered EPOLLPRI does not repeat. */
    while (recv(c->fd, junk, sizeof junk, MSG_OOB | MSG_DONTWAIT) > 0) {
    }
}

/* ---------------------------------------------------------------- dispatch */

static bool over_output_limit(const prg_conn *c) {
    return c->out_bytes > c->loop->server->cfg.max_output;
}

/* True when the send queue holds PRG_MAX_QUEUED_FILES file links. A walk,
 * but only of a queue the client has not taken yet, and it stops early: a
 * byte link holds up to 16 KiB of answers, so a pipelined burst of small
 * answers is a link or two. */
static bool too_many_files(const prg_conn *c) {
    unsigned files = 0;
    for (const prg_chunk *k = c->out_head; k; k = k->next)
        if (k->is_file && ++files >= PRG_MAX_QUEUED_FILES) return true;
    return false;
}

/* Reading pauses for output the client has not taken (bytes, or open files
 * queued), or for too many answers still owed (deferred ones and those
 * waiting behind them). */
static bool must_pause(const prg_conn *c) {
    return over_output_limit(c) || prg_offload_full(c) || (c->out_bytes && too_many_files(c));
}

/* An error answer: queued behind answers still owed, if any. */
static void send_error_ordered(prg_conn *c, int status) {
    const prg_callbacks *cb = &c->loop->server->cb;
    if (cb->on_metric) cb->on_metric(cb->ctx, PRG_METRIC_PARSE_ERROR, status);
    if (!c->defer_head) {
        prg_send_error(c, status);
        return;
    }
    prg_out_saved saved;
    prg_offload_hold_begin(c, &saved);
    prg_send_error(c, status);
    prg_offload_hold_end(c, &saved);
}

/* ---------------------------------------------------- streamed bodies */

/* The blocking and threaded engines run the handler on the connection's own
 * thread, where nothing could resume a paused stream: a handler there holds
 * the body back by blocking in on_body. */
static bool can_hold_body(const prg_conn *c) {
    prg_engine e = c->loop->server->cfg.engine;   /* the threaded engine's workers have ops of their own */
    return e == PRG_ENGINE_EPOLL || e == PRG_ENGINE_LIBEV;
}

void prg_body_fail(prg_conn *c, int state, int status) {
    if (c->flags & CONN_CLOSED) return;
    /* A deferred answer gets the error in its place, or is cut short. */
    if (c->defer_head && prg_offload_body_end(c, state, status)) {
    } else if (c->resp_state == RESP_NONE) {
        send_error_ordered(c, status);
    }
    /* else: an answer was started; it cannot be replaced, only cut short */
    c->close_reason = PRG_CLOSE_BAD_REQUEST;
    c->flags |= CONN_CLOSE_AFTER;
    body_end_notify(c, state);
}

/* The request at in[used, ...) goes to on_body from now on: what came
 * before it and its head go; what follows is raw body input (the parser saw
 * the head alone, see process_http). */
static void stream_begin(prg_conn *c, size_t used) {
    in_consume(c, used + c->busy->parser.head_len);   /* on_head ran with the parser saved */
    if (c->busy) c->busy->body_pending = 0;   /* NULL: closed by then, the record trimmed */
}

/* Delivers the body: pending bytes to on_body, then decodes the next span,
 * until the application holds it, the input runs out or the body ends.
 * Returns 1 when it ended complete (the buffer then starts with the next
 * request), 0 when waiting (input, or the application's resume), -1 when
 * the connection is closing. */
static int stream_body(prg_conn *c) {
    prg_server *s = c->loop->server;
    for (;;) {
        if (c->flags & (CONN_CLOSED | CONN_CLOSE_AFTER)) return -1;
        if (c->flags & CONN_BODY_HELD) return 0;
        prg_conn_busy *b = c->busy;   /* streaming: prg_body_stream made it, the parser is saved there */
        if (b->body_pending) {
            /* Answers owed before this request's: what it writes waits behind them. */
            prg_out_saved saved;
            bool hold = c->defer_head != NULL;
            if (hold) prg_offload_hold_begin(c, &saved);
            c->flags |= CONN_IN_CALLBACK;
            size_t took = s->cb.on_body(s->cb.ctx, c, b->body_stream, c->in, b->body_pending);
            c->flags &= ~(uint32_t)CONN_IN_CALLBACK;
            if (hold) prg_offload_hold_end(c, &saved);
            if (!(c->flags & CONN_STREAMING)) return -1;   /* closed meanwhile */
            if (took > b->body_pending) took = b->body_pending;
            if (took) {
                memmove(c->in, c->in + took, c->in_len - took);
                c->in_len -= (uint32_t)took;
                b->body_pending -= (uint32_t)took;
                if (c->in_len == 0) in_release(c);
            }
            /* Took less: hold the rest (the blocking engines offer it again). */
            if (b->body_pending && can_hold_body(c)) c->flags |= CONN_BODY_HELD;
            continue;
        }
        size_t decoded = 0;
        int done = 0;
        int64_t used = prg_http_body_next(&b->parser, c->in, c->in_len, &s->stream_limits, &decoded, &done);
        if (used < 0) {
            int status = (int)-used;
            prg_body_fail(c, status == 413 ? PRG_BODY_TOO_LARGE : PRG_BODY_BAD_FRAMING, status);
            return -1;
        }
        if ((size_t)used > decoded) {   /* close the gap the framing left */
            memmove(c->in + decoded, c->in + used, c->in_len - (size_t)used);
            c->in_len -= (uint32_t)((size_t)used - decoded);
            if (c->in_len == 0) in_release(c);
        }
        b->body_pending = (uint32_t)decoded;
        if (decoded) continue;
        if (done) break;
        /* Waiting for body bytes: now is when the client is asked for them. */
        if ((b->parser.flags & PRG_REQ_EXPECT_CONTINUE) && !(c->flags & CONN_CONTINUE_SENT) &&
            prg_offload_may_continue(c)) {
            prg_send_continue(c);
            c->flags |= CONN_CONTINUE_SENT;
        }
        return 0;
    }
    /* Complete: the handler's last word (it may defer it now), then the
     * next request. */
    prg_out_saved saved;
    bool hold = c->defer_head != NULL;
    if (hold) prg_offload_hold_begin(c, &saved);
    body_end_notify(c, PRG_BODY_COMPLETE);
    prg_response_finish_default(c);   /* nothing for a deferred answer */
    if (hold) prg_offload_hold_end(c, &saved);
    if (!c->req_keep_alive) c->flags |= CONN_CLOSE_AFTER;
    c->flags &= ~(uint32_t)CONN_PARSER_SAVED;   /* the next request starts on the stack */
    prg_conn_busy_trim(c);
    prg_timer_remove(c);
    c->flags &= ~(uint32_t)(CONN_CONTINUE_SENT | CONN_HEAD_SEEN);
    return 1;
}

enum { HEAD_BUFFER, HEAD_STREAM, HEAD_ANSWERED };

/* How much of buf[0, len) the request head can be: through its first empty
 * line (CRLFCRLF after any leading empty lines the parser skips), or all of
 * it while that has not arrived. */
static size_t head_extent(const uint8_t *buf, size_t len) {
    size_t start = 0;
    while (start + 1 < len && buf[start] == '\r' && buf[start + 1] == '\n') start += 2;
    /* Each LF that ends CRLFCRLF (memchr: glibc's memmem sets up a
     * two-way search on every call, about 300 instructions for a short head). */
    size_t from = start;
    while (from < len) {
        const uint8_t *lf = memchr(buf + from, '\n', len - from);
        if (!lf) break;
        size_t j = (size_t)(lf - buf);
        if (j >= start + 3 && buf[j - 1] == '\r' && buf[j - 2] == '\n' && buf[j - 3] == '\r') return j + 1;
        from = j + 1;
    }
    return len;
}

/* on_head for the request at in[used, ...): its head is complete and it has
 * a body, and its parser p is saved. Returns what the handler chose. */
static int head_decide(prg_conn *c, const prg_http_parser *p, size_t used) {
    prg_loop *loop = c->loop;
    prg_server *s = loop->server;
    c->flags |= CONN_HEAD_SEEN;
    prg_request req;
    int rc = prg_http_head_view(p, c->in + used, c->in_len - used, &s->head_limits, &req, loop->headers);
    if (rc < 0) {   /* unreachable: the parser accepted this head */
        send_error_ordered(c, -rc);
        c->close_reason = PRG_CLOSE_BAD_REQUEST;
        c->flags |= CONN_CLOSE_AFTER;
        return HEAD_ANSWERED;
    }
    if (loop->one_request || loop->draining) req.flags &= ~(unsigned)PRG_REQ_KEEP_ALIVE;
    prg_response_reset(c, &req);
    /* An answer from the head closes the connection: the body is never read,
     * so nothing after it could be found. Restored if the handler did not answer. */
    uint8_t keep_alive = c->req_keep_alive;
    c->req_keep_alive = 0;
    prg_out_saved saved;
    bool hold = c->defer_head != NULL;
    if (hold) prg_offload_hold_begin(c, &saved);
    c->flags |= CONN_IN_CALLBACK | CONN_IN_HEAD;
    s->cb.on_head(s->cb.ctx, c, &req);
    c->flags &= ~(uint32_t)(CONN_IN_CALLBACK | CONN_IN_HEAD);
    if (c->flags & CONN_STREAMING) {   /* it may also have begun its answer */
        if (hold) prg_offload_hold_end(c, &saved);
        stream_begin(c, used);
        return HEAD_STREAM;
    }
    if (c->defer_head) prg_offload_head_answered(c);   /* a deferral without a stream answers from the head */
    if (c->resp_state != RESP_NONE || (c->flags & (CONN_CLOSED | CONN_CLOSE_AFTER))) {
        prg_response_finish_default(c);   /* ends an answer left open */
        if (hold) prg_offload_hold_end(c, &saved);
        c->flags |= CONN_CLOSE_AFTER | CONN_BODY_SKIPPED;
        return HEAD_ANSWERED;
    }
    if (hold) prg_offload_hold_end(c, &saved);
    c->req_keep_alive = keep_alive;
    /* Buffered: the limit for buffered bodies applies from here (no body
     * byte was decoded yet: the chunked decoder checks it as it goes). */
    if (p->content_length > (int64_t)s->cfg.limits.max_body) {
        send_error_ordered(c, 413);
        c->close_reason = PRG_CLOSE_BAD_REQUEST;
        c->flags |= CONN_CLOSE_AFTER;
        return HEAD_ANSWERED;
    }
    return HEAD_BUFFER;
}

/* Saves the parser of a request that outlives this call (it spans reads)
 * or is handed to callbacks that may resume it (on_head) into the busy
 * record. Returns the saved parser, or NULL when there was no memory for
 * it: the client is then answered 503 and the connection closes. */
static prg_http_parser *parser_save(prg_conn *c, const prg_http_parser *p) {
    prg_http_parser *saved = prg_conn_saved_parser(c);
    if (saved) return saved;   /* p is it */
    prg_conn_busy *b = prg_conn_busy_get(c);
    if (!b) {
        send_error_ordered(c, 503);
        c->close_reason = PRG_CLOSE_ERROR;
        c->flags |= CONN_CLOSE_AFTER;
        return NULL;
    }
    b->parser = *p;
    c->flags |= CONN_PARSER_SAVED;
    return &b->parser;
}

/* Parses and answers every complete request in the buffer (HTTP mode). */
static void process_http(prg_conn *c) {
    prg_loop *loop = c->loop;
    prg_server *s = loop->server;
    size_t used = 0;
    /* A request that arrives whole (the usual case) is parsed here, on the
     * stack: the connection carries a parser only while one spans reads.
     * NULL: the next request starts afresh (reset just before it is parsed,
     * so one reset per request). */
    prg_http_parser local;
    prg_http_parser *p = prg_conn_saved_parser(c);
    for (;;) {
        if (c->flags & (CONN_CLOSED | CONN_CLOSE_AFTER)) break;
        if (c->flags & CONN_STREAMING) {   /* used is 0: stream_begin dropped what came before */
            if (must_pause(c)) {
                c->flags |= CONN_PAUSED;
                break;
            }
            if (stream_body(c) <= 0) break;
            p = NULL;   /* the body ended: the next request starts afresh */
            continue;
        }
        if (used >= c->in_len) break;
        if (must_pause(c)) {
            c->flags |= CONN_PAUSED;   /* resumed when the queue drains */
            break;
        }
        prg_request req;
        size_t avail = c->in_len - used;
        const prg_http_limits *limits = &s->cfg.limits;
        bool deciding = s->cb.on_head && !(c->flags & CONN_HEAD_SEEN);
        if (deciding) {
            /* Until on_head chose: the head alone (not a body byte is
             * parsed before the choice), under the larger body limit. */
            limits = &s->head_limits;
            avail = head_extent(c->in + used, avail);
        }
        if (!p) {
            p = &local;
            prg_http_parser_reset(p);
        }
        int64_t r = prg_http_parse(p, c->in + used, avail, limits, &req, loop->headers);
        if (deciding && r == PRG_PARSE_INCOMPLETE && prg_http_head_complete(p)) {
            /* The head is complete and a body follows: on_head may stream it,
             * and the stream goes on after this call. */
            if (!(p = parser_save(c, p))) {
                used = c->in_len;
                break;
            }
            int choice = head_decide(c, p, used);
            if (choice == HEAD_STREAM) used = 0;
            else if (choice == HEAD_ANSWERED) used = c->in_len;   /* the body and anything after it are not read */
            continue;   /* HEAD_BUFFER: parse on, body included, under the buffered limit */
        }
        if (r == PRG_PARSE_INCOMPLETE) {
            /* The rest comes in later reads. */
            if (!(p = parser_save(c, p))) {
                used = c->in_len;
                break;
            }
            c->in_len -= (uint32_t)prg_http_compact(p, c->in + used, c->in_len - used);
            /* Not while answers are owed: the interim answer would go out
             * before them and be taken for theirs. */
            if (prg_http_head_complete(p) && (p->flags & PRG_REQ_EXPECT_CONTINUE) &&
                !(c->flags & CONN_CONTINUE_SENT) && !c->defer_head) {
                prg_send_continue(c);
                c->flags |= CONN_CONTINUE_SENT;
            }
            break;
        }
        if (r < 0) {
            send_error_ordered(c, (int)-r);
            c->close_reason = PRG_CLOSE_BAD_REQUEST;
            c->flags |= CONN_CLOSE_AFTER;
            used = c->in_len;  /* nothing after a malformed request can be trusted */
            break;
        }
        used += (size_t)r;
        c->flags &= ~(uint32_t)CONN_HEAD_SEEN;
        /* The blocking engine answers one request per connection, and a
         * draining server answers the request in flight and closes: the
         * request view and the writer both see a request that closes. */
        if (loop->one_request || loop->draining) req.flags &= ~(unsigned)PRG_REQ_KEEP_ALIVE;
        if (p != &local) {   /* it spanned reads: the next starts on the stack */
            c->flags &= ~(uint32_t)CONN_PARSER_SAVED;
            prg_conn_busy_trim(c);
        }
        p = NULL;
        /* The next request's head gets its own deadline. An idle timer stays:
         * finish_io keeps it (moved only when the second changed). */
        if (c->timer_list == TIMER_HEAD) prg_timer_remove(c);
        c->flags &= ~CONN_CONTINUE_SENT;
        prg_response_reset(c, &req);
        /* Earlier answers still owed (offload.c): this one waits behind them. */
        prg_out_saved saved;
        bool hold = c->defer_head != NULL;
        if (hold) prg_offload_hold_begin(c, &saved);
        c->flags |= CONN_IN_CALLBACK;
        s->cb.on_request(s->cb.ctx, c, &req);
        c->flags &= ~CONN_IN_CALLBACK;
        /* Answered in full (the usual case): nothing to finish, no call. */
        if (c->resp_state != RESP_DONE) prg_response_finish_default(c);   /* nothing for a deferred request */
        if (!c->req_keep_alive) c->flags |= CONN_CLOSE_AFTER;
        if (hold) prg_offload_hold_end(c, &saved);
    }
    in_consume(c, used);
}

/* Hands the buffered bytes to the application (raw mode). */
static void process_raw(prg_conn *c) {
    prg_server *s = c->loop->server;
    if (c->in_len == 0 || (c->flags & (CONN_CLOSED | CONN_CLOSE_AFTER))) return;
    if (over_output_limit(c)) {
        c->flags |= CONN_PAUSED;
        return;
    }
    c->flags |= CONN_IN_CALLBACK;
    size_t used = s->cb.on_data(s->cb.ctx, c, c->in, c->in_len);
    c->flags &= ~CONN_IN_CALLBACK;
    if (used > c->in_len) used = c->in_len;
    in_consume(c, used);
    if (over_output_limit(c)) c->flags |= CONN_PAUSED;
}

static void process_input(prg_conn *c) {
    if (c->loop->server->cfg.mode == PRG_MODE_RAW) process_raw(c);
    else process_http(c);
}

/* proxy_protocol: the PROXY header comes before anything else (proxy.c).
 * Returns true once it is consumed; false while it is incomplete (the header
 * timer runs) or after a malformed one closed the connection, unanswered. */
static bool take_proxy_header(prg_conn *c) {
    prg_address source;
    int64_t r = prg_proxy_parse(c->in, c->in_len, &source);
    if (r == 0) return false;
    if (r < 0) {
        prg_conn_close_now(c, PRG_CLOSE_BAD_REQUEST);
        return false;
    }
    c->flags &= ~(uint32_t)CONN_PROXY_PENDING;
    if (source.family != PRG_ADDR_NONE) c->remote = source;
    in_consume(c, (size_t)r);
    return true;
}

/* One recv into the receive buffer. Returns bytes read (and the room it
 * offered in *offered), 0 at EOF, -1 when it would block (or a blocking
 * socket's receive timeout passed), -2 when the connection was closed, -3
 * when reading must stop (the buffer is full: error answer queued). */
static ssize_t read_once(prg_conn *c, size_t *offered) {
    size_t limit = in_limit(c);
    size_t want = PRG_BLOCK_SIZE / 2;
    if (c->in && c->in_cap - c->in_len >= 512) want = c->in_cap - c->in_len;
    if (in_reserve(c, want, limit) != 0 && in_reserve(c, 1, limit) != 0) {
        /* The buffer is at its limit and the application (raw) or the
         * parser made no progress: give up on this client. */
        if (c->loop->server->cfg.mode == PRG_MODE_HTTP) {
            const prg_http_parser *p = prg_conn_saved_parser(c);
            send_error_ordered(c, p && prg_http_head_complete(p) ? 413 : 431);
            c->flags |= CONN_CLOSE_AFTER;
            c->close_reason = PRG_CLOSE_BAD_REQUEST;
            return -3;
        }
        prg_conn_close_now(c, PRG_CLOSE_ERROR);
        return -2;
    }
    *offered = c->in_cap - c->in_len;
    for (;;) {
        ssize_t n = sys_recv(c->fd, c->in + c->in_len, *offered, 0);
        if (n > 0) {
            c->in_len += (uint32_t)n;
            return n;
        }
        if (n == 0) {
            if (c->in_len == 0) in_release(c);
            return 0;
        }
        if (errno == EINTR) continue;
        if (c->in_len == 0) in_release(c);
        if (errno == EAGAIN || errno == EWOULDBLOCK) return -1;
        prg_conn_close_now(c, PRG_CLOSE_ERROR);
        return -2;
    }
}

/* Lingering: read and drop until EOF, an error, or the byte cap. Never
 * waits: on a blocking socket (engine_blocking.c) the engine waits first. */
static void linger_read(prg_conn *c) {
    uint8_t junk[4096];
    for (int i = 0; i < 16; i++) {
        ssize_t n = recv(c->fd, junk, sizeof junk, MSG_DONTWAIT);
        if (n > 0) {
            c->lingered += (uint32_t)n;
            if (c->lingered < PRG_LINGER_MAX_BYTES) continue;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        }
        prg_conn_close_now(c, c->close_reason);   /* EOF, error or cap: done */
        return;
    }
    if (c->loop->server->cfg.trigger == PRG_TRIGGER_EDGE) prg_loop_mark_ready(c);
}

void prg_conn_linger(prg_conn *c) {
    if (shutdown(c->fd, SHUT_WR) != 0) {
        prg_conn_close_now(c, c->close_reason);
        return;
    }
    c->flags |= CONN_LINGER;
    in_release(c);
    prg_conn_update_timer(c);   /* moves it to the lingering list */
    prg_loop_update_interest(c);
    /* Input may already be waiting, and in edge mode no new edge will say so. */
    if (c->loop->server->cfg.trigger == PRG_TRIGGER_EDGE) prg_loop_mark_ready(c);
}

/* Close at once, or linger first: after an error answer the client is often
 * still sending (the rest of a refused body), and unread input left in the
 * socket makes close() send a reset that can destroy the answer in flight. */
static bool should_linger(const prg_conn *c) {
    if (c->flags & CONN_READ_EOF) return false;   /* the client already finished sending */
    return c->close_reason == PRG_CLOSE_BAD_REQUEST || c->in_len > 0 || (c->flags & CONN_BODY_SKIPPED);
}

/* Returns 0 when the first recv found nothing (it would block, or a blocking
 * socket's receive timeout passed): nothing changed, which the blocking
 * engines must tell apart from progress (it restarts the idle timeout).
 * Returns 1 otherwise. The event engines ignore it. */
int prg_conn_on_readable(prg_conn *c) {
    if (c->flags & CONN_LINGER) {
        if (!(c->flags & CONN_CLOSED)) linger_read(c);
        return 1;
    }
    /* A stream resumed (prg_body_resume): deliver what the buffer holds
     * before reading more; there may be nothing new in the socket. */
    if ((c->flags & (CONN_STREAMING | CONN_BODY_HELD | CONN_PAUSED)) == CONN_STREAMING && can_hold_body(c))
        process_input(c);
    prg_trigger trigger = c->loop->server->cfg.trigger;
    int reads = c->loop->engine->blocking_sockets ? 1 : PRG_READS_PER_WAKEUP;
    for (int i = 0; i < reads; i++) {
        if (c->flags & (CONN_CLOSED | CONN_PAUSED | CONN_READ_EOF | CONN_CLOSE_AFTER | CONN_BODY_HELD)) return 1;
        size_t offered = 0;
        ssize_t n = read_once(c, &offered);
        if (n == 0) {
            /* Half-close: answer what was asked, then close. A body still
             * streaming will never end. */
            c->flags |= CONN_READ_EOF;
            if (c->flags & CONN_STREAMING) {   /* a deferred answer is refused from here (offload.c) */
                body_end_notify(c, PRG_BODY_CLIENT_GONE);
                c->flags |= CONN_CLOSE_AFTER;
            }
            if (c->defer_head) prg_offload_peer_finished(c);   /* its producers may stop working */
            return 1;
        }
        if (n < 0) return n != -1 || i > 0;   /* closed, full, or drained (EAGAIN) */
        if (!(c->flags & CONN_PROXY_PENDING) || take_proxy_header(c)) process_input(c);
        /* A short read means the socket is drained: stop without the extra
         * recv that would return EAGAIN (a request that fits one read costs
         * one recv in every mode). Not after a hang-up was signalled: the FIN
         * must still be read, and no new edge comes. */
        if ((size_t)n < offered && !(c->flags & CONN_PEER_HUP)) return 1;
        /* Flush between reads so a big pipelined burst does not pile up. */
        if (c->out_bytes && prg_conn_flush(c) < 0) return 1;
    }
    /* The cap was reached: more may be waiting. Level and oneshot modes are
     * told again by the kernel; in edge mode no new edge will come for it, so
     * serve the others first, then come back. */
    if (trigger == PRG_TRIGGER_EDGE) prg_loop_mark_ready(c);
    return 1;
}

void prg_conn_finish_io(prg_conn *c) {
    if (c->flags & CONN_CLOSED) return;
    for (;;) {
        if (c->out_bytes && prg_conn_flush(c) < 0) return;
        if (c->out_bytes || !(c->flags & CONN_PAUSED) || prg_offload_full(c)) break;
        /* Output drained while paused: answer what is buffered. That may
         * pause again and the flush above may drain it all at once, so go
         * round until output is pending (EPOLLOUT will resume us) or the
         * buffered input is used up. Each round answers at least one
         * request, since an empty queue is under the limit. */
        c->flags &= ~CONN_PAUSED;
        process_input(c);
        if (c->flags & CONN_CLOSED) return;
        if (!(c->flags & CONN_PAUSED) && c->loop->server->cfg.trigger == PRG_TRIGGER_EDGE)
            prg_loop_mark_ready(c);   /* the edge for unread input was consumed while paused */
    }
    if (c->defer_head) prg_offload_output_sent(c);   /* a stream's producer may wait for room */
    if (c->out_bytes == 0 && !(c->flags & CONN_LINGER) && !c->defer_head) {
        if (c->flags & CONN_CLOSE_AFTER) {
            if (should_linger(c)) prg_conn_linger(c);
            else prg_conn_close_now(c, c->close_reason);
            return;
        }
        if (c->flags & CONN_READ_EOF) {
            /* Peer half-closed and every answer is out. */
            prg_conn_close_now(c, PRG_CLOSE_NORMAL);
            return;
        }
    }
    prg_conn_update_timer(c);
    prg_loop_update_interest(c);
}

/* ------------------------------------------------------------ public API */

int prg_conn_write(prg_conn *c, const void *p, size_t n) {
    if (c->flags & (CONN_CLOSED | CONN_CLOSE_AFTER)) return -1;
    if (prg_out_append(c, p, n) != 0) return -1;
    /* Written from another connection's callback: flush after the batch.
     * Never now: that could run this connection's handler inside the other's. */
    if (!(c->flags & CONN_IN_CALLBACK)) prg_loop_mark_ready(c);
    return 0;
}

void prg_conn_close(prg_conn *c) {
    if (c->flags & (CONN_CLOSED | CONN_CLOSE_AFTER)) return;
    c->close_reason = PRG_CLOSE_APP;
    c->flags |= CONN_CLOSE_AFTER;
    if (!(c->flags & CONN_IN_CALLBACK)) prg_loop_mark_ready(c);   /* as in prg_conn_write */
}

int prg_body_stream(prg_conn *c, void *stream) {
    if (!(c->flags & CONN_IN_HEAD) || (c->flags & (CONN_STREAMING | CONN_CLOSED | CONN_CLOSE_AFTER)))
        return -1;
    /* head_decide cleared it for an answer from the head; a streamed request
     * keeps the connection as it asked. */
    const prg_loop *loop = c->loop;
    const prg_http_parser *p = prg_conn_saved_parser(c);   /* saved before on_head ran */
    if (!p) return -1;
    uint8_t keep_alive = (p->flags & PRG_REQ_KEEP_ALIVE) && !loop->one_request && !loop->draining;
    /* Started an answer: refused. Deferred it in this on_head: the body
     * streams while it is owed, as when prg_defer follows. */
    if (c->resp_state != RESP_NONE && prg_offload_stream_deferred(c, keep_alive) != 0) return -1;
    prg_conn_busy *b = prg_conn_busy_get(c);
    if (!b) return -1;
    c->flags |= CONN_STREAMING;
    b->body_stream = stream;
    b->body_pending = 0;
    c->req_keep_alive = keep_alive;
    return 0;
}

int prg_body_pause(prg_conn *c) {
    if (!(c->flags & CONN_STREAMING) || !can_hold_body(c)) return -1;
    c->flags |= CONN_BODY_HELD;
    return 0;
}

int prg_body_resume(prg_conn *c) {
    if (!(c->flags & CONN_STREAMING)) return -1;
    if (!(c->flags & CONN_BODY_HELD)) return 0;
    c->flags &= ~(uint32_t)CONN_BODY_HELD;
    /* Inside its own on_body the delivery loop just goes on; otherwise serve
     * it after this batch: what is held, then the socket. */
    if (!(c->flags & CONN_IN_CALLBACK)) prg_loop_mark_ready(c);
    return 0;
}

size_t prg_conn_receive_capacity(const prg_conn *c) { return c->in ? c->in_cap : 0; }

uint64_t prg_conn_id(const prg_conn *c) { return c->id; }
size_t prg_conn_pending_output(const prg_conn *c) { return c->out_bytes; }
void *prg_conn_userdata(const prg_conn *c) { return c->busy ? c->busy->userdata : NULL; }
int prg_conn_set_userdata(prg_conn *c, void *userdata) {
    if (!userdata && !c->busy) return 0;   /* nothing to clear: no record made */
    prg_conn_busy *b = prg_conn_busy_get(c);
    if (!b) return -1;
    b->userdata = userdata;
    prg_conn_busy_trim(c);
    return 0;
}
