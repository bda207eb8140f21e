/*
 * offload.c: answers that come later, from another thread (the epoll and
 * libev engines).
 *
 *  prg_defer            on the loop thread, inside on_request: the request
 *                       gets a handle (prg_deferred) and a place in the
 *                       connection's list of answers owed, in request order.
 *  prg_deferred_send    any thread: the answer (status, headers, body) is
 *                       copied into the handle, which is posted to the
 *                       loop's mailbox (mutex + list); the first post into
 *                       an empty mailbox writes the loop's wake_fd.
 *  prg_offload_drain    the loop thread, when wake_fd fired: each posted
 *                       answer whose connection still lives is written with
 *                       the ordinary response writer (so framing, HEAD and
 *                       keep-alive follow the same rules as an inline
 *                       answer) into the handle's own chunks; then every
 *                       answer at the front of the list that is ready goes
 *                       to the send queue. One still owed holds back those
 *                       behind it, so pipelined answers leave in order.
 *
 *  prg_offload_sweep    the loop thread, once a second: a handle owed longer
 *                       than handler_timeout_s gets a 503 in its place.
 *  prg_deferred_release any thread: the producer lets go of the handle.
 *
 * While a connection owes answers, a synchronous answer to a later request
 * (or an error answer) is captured the same way and queued behind them.
 * A connection that closed drops what it was owed: a handle not yet sent is
 * marked orphan, so its late answer is refused; one already sent is freed
 * when it is drained. The handle's lifetime and who completes it (the
 * producer, the timeout or the close, decided once) are described at
 * struct prg_deferred. The mailbox is reference counted by its loop and its
 * handles: after the server is gone a late answer is refused and the handle
 * freed by whichever side lets go last.
 *
 * Nothing here runs for a connection that never deferred: the hot path pays
 * one test of c->defer_head per request.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct prg_mailbox {
    pthread_mutex_t lock;
    struct prg_deferred *head, *tail;   /* posted, not yet drained */
    int wake_fd;
    bool closed;                        /* the loop ended: drop what arrives */
    atomic_uint refs;                   /* the loop's, plus one per live handle */
} prg_mailbox;

/*
 * A handle's lifetime. Two sides hold it: the loop (the connection's list,
 * then the mailbox) and the producer (the code that got it from prg_defer).
 * refs counts them; whichever side lets go last frees it, so the handle
 * stays valid for the producer until prg_deferred_release however the loop
 * ended with it, and a second prg_deferred_send reads valid memory and is
 * refused. Who completes the answer is decided once, by the first
 * compare-and-swap out of DEF_OPEN:
 *   DEF_SENT       the producer (prg_deferred_send): its answer is posted
 *   DEF_TIMED_OUT  the loop, handler_timeout_s passed: 503 written, the
 *                  producer's answer is refused (-ETIMEDOUT)
 *   DEF_ORPHAN     the loop, the connection closed first: the producer's
 *                  answer is refused (-ECONNRESET)
 * The loop side lets go once it has no further use for the handle (its
 * bytes went to the send queue, or it was orphaned or dropped); the
 * rendered chunks belong to the loop's pool, so only the loop thread frees
 * them, always before it lets go.
 */
enum { DEF_OPEN = 0, DEF_SENT = 1, DEF_TIMED_OUT = 2, DEF_ORPHAN = 3 };

struct prg_deferred {
    struct prg_deferred *next;    /* the connection's list (loop thread) */
    struct prg_deferred *posted;  /* the mailbox's list */
    struct prg_deferred *late_prev, *late_next;   /* the loop's handler-timeout list (loop thread) */
    uint32_t late_deadline;       /* loop clock second when the handler is late */
    bool on_late_list;
    prg_conn *conn;               /* loop thread only; NULL once the connection closed */
    prg_mailbox *mailbox;         /* NULL for an answer captured on the loop thread */
    atomic_int state;             /* DEF_*: who completes the answer */
    atomic_uint refs;             /* loop side + producer side */
    bool ready;                   /* loop thread: its bytes are in out_* */
    uint8_t req_minor;
    uint8_t keep_alive;
    uint8_t no_body;              /* HEAD request */
    uint32_t close_after;         /* CONN_CLOSE_AFTER its answer set */
    /* The answer, written by the thread completing it. */
    int status;
    bool failed;                  /* out of memory while completing: 500 */
    char *headers;                /* name NUL value NUL, repeated */
    size_t headers_len, headers_cap;
    uint8_t *body;
    size_t body_len;
    /* Its bytes, rendered on the loop thread. */
    prg_chunk *out_head, *out_tail;
    size_t out_bytes;
};

static void mailbox_unref(prg_mailbox *mb) {
    if (atomic_fetch_sub_explicit(&mb->refs, 1, memory_order_acq_rel) != 1) return;
    pthread_mutex_destroy(&mb->lock);
    free(mb);
}

/* One side lets go; the last one frees the handle and its answer. */
static void deferred_unref(prg_deferred *d) {
    if (atomic_fetch_sub_explicit(&d->refs, 1, memory_order_acq_rel) != 1) return;
    free(d->headers);
    free(d->body);
    if (d->mailbox) mailbox_unref(d->mailbox);
    free(d);
}

/* The loop side is done with a handle: its rendered chunks go back to the
 * loop's pool (loop thread; loop may be NULL when nothing was rendered). */
static void loop_let_go(prg_loop *loop, prg_deferred *d) {
    if (d->out_head) prg_chunks_release(loop, d->out_head);
    d->out_head = d->out_tail = NULL;
    deferred_unref(d);
}

/* The handler-timeout list: handles from prg_defer in deadline order (every
 * one waits the same time, so a FIFO). Loop thread only. */
static void late_remove(prg_loop *loop, prg_deferred *d) {
    if (!d->on_late_list) return;
    if (d->late_prev) d->late_prev->late_next = d->late_next;
    else loop->late_head = d->late_next;
    if (d->late_next) d->late_next->late_prev = d->late_prev;
    else loop->late_tail = d->late_prev;
    d->late_prev = d->late_next = NULL;
    d->on_late_list = false;
}

static void late_append(prg_loop *loop, prg_deferred *d) {
    if (loop->server->cfg.handler_timeout_s <= 0) return;
    d->late_deadline = loop->now + (uint32_t)loop->server->cfg.handler_timeout_s + 1;   /* never early */
    d->late_prev = loop->late_tail;
    d->late_next = NULL;
    if (loop->late_tail) loop->late_tail->late_next = d;
    else loop->late_head = d;
    loop->late_tail = d;
    d->on_late_list = true;
}

int prg_offload_loop_init(prg_loop *loop) {
    prg_mailbox *mb = calloc(1, sizeof *mb);
    if (!mb) return -ENOMEM;
    int rc = pthread_mutex_init(&mb->lock, NULL);
    if (rc != 0) {
        free(mb);
        return -rc;
    }
    mb->wake_fd = loop->wake_fd;
    atomic_init(&mb->refs, 1);
    loop->mailbox = mb;
    return 0;
}

void prg_offload_loop_close(prg_loop *loop) {
    prg_mailbox *mb = loop->mailbox;
    if (!mb) return;
    loop->mailbox = NULL;
    pthread_mutex_lock(&mb->lock);
    mb->closed = true;
    prg_deferred *d = mb->head;
    mb->head = mb->tail = NULL;
    pthread_mutex_unlock(&mb->lock);
    while (d) {
        prg_deferred *next = d->posted;
        loop_let_go(NULL, d);   /* never rendered: no chunks */
        d = next;
    }
    mailbox_unref(mb);
}

/* ------------------------------------------------------- connection list */

static void list_append(prg_conn *c, prg_deferred *d) {
    d->next = NULL;
    if (c->defer_tail) c->defer_tail->next = d;
    else c->defer_head = d;
    c->defer_tail = d;
    c->defer_count++;
}

void prg_offload_hold_begin(prg_conn *c, prg_out_saved *saved) {
    saved->head = c->out_head;
    saved->tail = c->out_tail;
    saved->bytes = c->out_bytes;
    c->out_head = c->out_tail = NULL;
    c->out_bytes = 0;
}

/* Takes what was written since hold_begin, and puts the send queue back. */
static void hold_take(prg_conn *c, prg_out_saved *saved, prg_deferred *into) {
    into->out_head = c->out_head;
    into->out_tail = c->out_tail;
    into->out_bytes = c->out_bytes;
    c->out_head = saved->head;
    c->out_tail = saved->tail;
    c->out_bytes = saved->bytes;
}

void prg_offload_hold_end(prg_conn *c, prg_out_saved *saved) {
    if (c->out_bytes == 0 || (c->flags & CONN_CLOSED)) {
        /* Nothing written (the request was deferred, or closed unanswered). */
        prg_chunk *k = c->out_head;
        c->out_head = saved->head;
        c->out_tail = saved->tail;
        c->out_bytes = saved->bytes;
        if (k) prg_chunks_release(c->loop, k);
        return;
    }
    prg_deferred *d = calloc(1, sizeof *d);
    if (!d) {
        /* No memory to keep the order: the connection cannot go on. */
        prg_chunk *k = c->out_head;
        c->out_head = saved->head;
        c->out_tail = saved->tail;
        c->out_bytes = saved->bytes;
        prg_chunks_release(c->loop, k);
        prg_conn_close_now(c, PRG_CLOSE_ERROR);
        return;
    }
    hold_take(c, saved, d);
    d->conn = c;
    d->ready = true;
    atomic_init(&d->state, DEF_SENT);   /* answered already */
    atomic_init(&d->refs, 1);           /* the loop's only: no producer */
    list_append(c, d);
}

/* Answers at the front of the list that are ready go to the send queue. */
static void release_ready(prg_conn *c) {
    prg_deferred *d;
    while ((d = c->defer_head) && d->ready) {
        c->defer_head = d->next;
        if (!c->defer_head) c->defer_tail = NULL;
        c->defer_count--;
        if (d->out_head) {
            if (c->out_tail) c->out_tail->next = d->out_head;
            else c->out_head = d->out_head;
            c->out_tail = d->out_tail;
            c->out_bytes += d->out_bytes;
            d->out_head = d->out_tail = NULL;
        }
        c->flags |= d->close_after;
        loop_let_go(c->loop, d);
    }
}

void prg_offload_conn_closed(prg_conn *c) {
    prg_deferred *d = c->defer_head;
    c->defer_head = c->defer_tail = NULL;
    c->defer_count = 0;
    while (d) {
        prg_deferred *next = d->next;
        late_remove(c->loop, d);
        d->next = NULL;
        d->conn = NULL;
        int open = DEF_OPEN;
        if (d->ready || atomic_compare_exchange_strong(&d->state, &open, DEF_ORPHAN))
            loop_let_go(c->loop, d);   /* rendered, or the producer's answer will be refused */
        /* else sent: in the mailbox or on its way there, let go when drained */
        d = next;
    }
}

/* ------------------------------------------------------------- deferring */

prg_deferred *prg_defer(prg_conn *c) {
    prg_mailbox *mb = c->loop->mailbox;
    if (!mb || !(c->flags & CONN_IN_CALLBACK) || (c->flags & CONN_CLOSED) || c->resp_state != RESP_NONE)
        return NULL;
    prg_deferred *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    d->conn = c;
    d->mailbox = mb;
    atomic_fetch_add_explicit(&mb->refs, 1, memory_order_relaxed);
    atomic_init(&d->state, DEF_OPEN);
    atomic_init(&d->refs, 2);   /* the loop's and the producer's */
    d->req_minor = c->req_minor;
    d->keep_alive = (uint8_t)c->req_keep_alive;
    d->no_body = (c->resp_flags & RESP_NO_BODY) != 0;   /* only HEAD sets it before an answer */
    d->status = 500;
    list_append(c, d);
    late_append(c->loop, d);
    c->resp_state = RESP_DONE;   /* the inline writer refuses from here on */
    return d;
}

/* Why a completion was refused, from the state that won. */
static int refused(int state) {
    switch (state) {
    case DEF_TIMED_OUT: return -ETIMEDOUT;
    case DEF_ORPHAN: return -ECONNRESET;
    default: return -EALREADY;
    }
}

int prg_deferred_header(prg_deferred *d, const char *name, size_t name_len, const char *value,
                        size_t value_len) {
    if (!d) return -EINVAL;
    int state = atomic_load_explicit(&d->state, memory_order_acquire);
    if (state != DEF_OPEN) return refused(state);
    if (name_len == 0 || !name || (value_len && !value) || memchr(name, 0, name_len) ||
        (value_len && memchr(value, 0, value_len)))
        return -EINVAL;
    size_t need = d->headers_len + name_len + value_len + 2;
    if (need > d->headers_cap) {
        size_t cap = d->headers_cap ? d->headers_cap : 256;
        while (cap < need) cap *= 2;
        char *bigger = realloc(d->headers, cap);
        if (!bigger) {
            d->failed = true;
            return -ENOMEM;
        }
        d->headers = bigger;
        d->headers_cap = cap;
    }
    memcpy(d->headers + d->headers_len, name, name_len);
    d->headers_len += name_len;
    d->headers[d->headers_len++] = 0;
    if (value_len) memcpy(d->headers + d->headers_len, value, value_len);
    d->headers_len += value_len;
    d->headers[d->headers_len++] = 0;
    return 0;
}

int prg_deferred_send(prg_deferred *d, int status, const void *body, size_t n) {
    if (!d) return -EINVAL;
    if (n > 0 && !body) return -EINVAL;
    /* Claim the completion first: from here on the fields are this thread's
     * until the post hands them to the loop, and a second call (or one that
     * lost to the handler timeout or a closed connection) touches nothing. */
    int open = DEF_OPEN;
    if (!atomic_compare_exchange_strong_explicit(&d->state, &open, DEF_SENT, memory_order_acq_rel,
                                                 memory_order_acquire))
        return refused(open);
    d->status = status;
    if (n > 0) {
        d->body = malloc(n);
        if (d->body) {
            memcpy(d->body, body, n);
            d->body_len = n;
        } else {
            d->failed = true;
        }
    }
    int result = d->failed ? -ENOMEM : 0;   /* the loop reads d once posted */
    prg_mailbox *mb = d->mailbox;
    pthread_mutex_lock(&mb->lock);
    if (mb->closed) {
        pthread_mutex_unlock(&mb->lock);
        loop_let_go(NULL, d);   /* the server is gone: the loop side will never see it */
        return -ECONNRESET;
    }
    d->posted = NULL;
    bool was_empty = mb->head == NULL;
    if (mb->tail) mb->tail->posted = d;
    else mb->head = d;
    mb->tail = d;
    if (was_empty) {
        /* Under the lock: the fd outlives it. An eventfd write fails only
         * when the counter would overflow (it is read each wakeup, so
         * never) or the fd is bad: then nothing would ever drain. */
        uint64_t one = 1;
        if (write(mb->wake_fd, &one, sizeof one) != (ssize_t)sizeof one && errno != EAGAIN) result = -errno;
    }
    pthread_mutex_unlock(&mb->lock);
    return result;
}

void prg_deferred_release(prg_deferred *d) {
    if (!d) return;
    /* Released unanswered: the client gets a 500 rather than a hang. */
    if (atomic_load_explicit(&d->state, memory_order_acquire) == DEF_OPEN) {
        static const char msg[] = "handler did not respond\n";
        (void)prg_deferred_send(d, 500, msg, sizeof msg - 1);   /* refused if the loop won meanwhile: fine */
    }
    deferred_unref(d);
}

/* ------------------------------------------------------------ loop side */

/* Writes the answer with the ordinary writer, for the request it belongs to,
 * into the handle's own chunks. timed_out: the loop's 503 instead of the
 * producer's answer (whose fields are not read: they may be in use). */
static void render(prg_conn *c, prg_deferred *d, bool timed_out) {
    prg_out_saved saved;
    prg_offload_hold_begin(c, &saved);
    uint32_t close_after = c->flags & CONN_CLOSE_AFTER;   /* a later request's, not this one's */
    c->flags &= ~(uint32_t)CONN_CLOSE_AFTER;
    c->resp_state = RESP_NONE;
    c->resp_status = 0;
    c->resp_length_left = 0;
    c->req_minor = d->req_minor;
    c->req_keep_alive = d->keep_alive;
    c->resp_flags = d->no_body ? RESP_NO_BODY : 0;
    if (timed_out) {
        static const char msg[] = "Service Unavailable: handler timed out\n";
        (void)prg_send(c, 503, "text/plain", 10, msg, sizeof msg - 1);
    } else if (!d->failed && prg_respond(c, d->status, NULL, 0) == 0) {
        for (size_t at = 0; at < d->headers_len;) {
            const char *name = d->headers + at;
            size_t nl = strlen(name);
            const char *value = name + nl + 1;
            size_t vl = strlen(value);
            at += nl + vl + 2;
            (void)prg_write_header(c, name, nl, value, vl);   /* a refused header is left out */
        }
        if (!(c->resp_flags & RESP_HAS_LENGTH) && d->status != 204 && d->status != 304) {
            char len[24];
            size_t ll = 0;
            size_t v = d->body_len;
            char tmp[24];
            size_t t = 0;
            do { tmp[t++] = (char)('0' + v % 10); v /= 10; } while (v);
            while (t) len[ll++] = tmp[--t];
            (void)prg_write_header(c, "Content-Length", 14, len, ll);
        }
        if (d->body_len) (void)prg_write_body(c, d->body, d->body_len);
        (void)prg_end(c);
    }
    (void)prg_response_finish_default(c);   /* refused status or memory: 500 (its own result is the writer's) */
    d->close_after = c->flags & CONN_CLOSE_AFTER;
    c->flags = (c->flags & ~(uint32_t)CONN_CLOSE_AFTER) | close_after;
    hold_take(c, &saved, d);
    d->ready = true;
}

/* A rendered answer: if it is at the front, it and those ready behind it go out. */
static void rendered(prg_conn *c, prg_deferred *d) {
    if (c->defer_head != d) return;
    release_ready(c);
    prg_conn_finish_io(c);   /* send, resume paused input, close if done */
}

void prg_offload_drain(prg_loop *loop) {
    prg_mailbox *mb = loop->mailbox;
    if (!mb) return;
    pthread_mutex_lock(&mb->lock);
    prg_deferred *d = mb->head;
    mb->head = mb->tail = NULL;
    pthread_mutex_unlock(&mb->lock);
    while (d) {
        prg_deferred *next = d->posted;
        prg_conn *c = d->conn;
        if (!c) {
            loop_let_go(loop, d);   /* its connection closed meanwhile: a no-op */
        } else {
            late_remove(loop, d);
            render(c, d, false);
            rendered(c, d);
        }
        d = next;
    }
}

bool prg_offload_late_pending(const prg_loop *loop) { return loop->late_head != NULL; }

void prg_offload_sweep(prg_loop *loop) {
    prg_deferred *d;
    while ((d = loop->late_head) && d->late_deadline <= loop->now) {
        late_remove(loop, d);
        int open = DEF_OPEN;
        /* Lost: the answer was sent and is on its way; it is not late. */
        if (!atomic_compare_exchange_strong(&d->state, &open, DEF_TIMED_OUT)) continue;
        render(d->conn, d, true);
        rendered(d->conn, d);
    }
}
