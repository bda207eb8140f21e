/*
 * offload.c: answers that come later, from another thread (every engine:
 * the epoll and libev loops, and each blocking or threaded context, whose
 * thread polls its client and its mailbox while an answer is owed; see
 * engine_blocking.c), as one response-stream model.
 *
 * Every deferred handle is a response stream: a state machine
 *     OPEN --head--> HEADED --write*--> HEADED --end--> ENDED
 * (or OPEN --send--> ENDED in one step, the one-shot deferred answer, which
 * is a head, one write and an end). The producer's operations are copied
 * into ops, appended to the handle under the mailbox lock (the state check
 * and the append are one step, so nothing is ever queued after an end) and
 * the handle is posted to the loop; the loop renders the ops in order with
 * the ordinary response writer. The loop side may decide first: TIMED_OUT
 * (no head within handler_timeout_s: 503) or ORPHAN (the connection
 * closed): every later operation is refused in O(1) from the atomic state.
 *
 * Writability: a stream's level is the bytes posted but not yet rendered
 * plus the bytes of its answer still queued for the socket (published by
 * the loop). A write that takes the level above the high mark is accepted
 * but answers PRG_STREAM_WAIT; once the level falls to the low mark the
 * loop runs the stream's on_writable callback (also run when the peer goes,
 * so a waiting producer learns it at its next write).
 *
 *  prg_defer            on the loop thread, inside on_request (or on_head
 *                       after prg_body_stream, on_body, on_body_end): the
 *                       request gets a handle (prg_deferred) and a place in
 *                       the connection's list of answers owed, in request
 *                       order. Deferred while its body streams (for_body),
 *                       the body goes on; if the body fails first,
 *                       prg_offload_body_end takes the answer from the
 *                       producer (the error answer in its place, or the
 *                       close). The connection's own writer state (the
 *                       request still streaming in) is kept apart while
 *                       the handle's ops are rendered.
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
#include <strings.h>
#include <stdio.h>
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
enum { DEF_OPEN = 0, DEF_SENT = 1, DEF_TIMED_OUT = 2, DEF_ORPHAN = 3, DEF_HEADED = 4 };
/* DEF_SENT is "ended": the producer's last operation is posted. DEF_HEADED:
 * the head is posted, body writes are accepted until the end. */

/* One producer operation, copied, waiting for the loop. */
enum { OP_HEAD = 1, OP_BODY = 2, OP_END = 3, OP_ABORT = 4 };
typedef struct stream_op {
    struct stream_op *next;
    uint8_t kind;
    int status;                 /* OP_HEAD */
    int64_t add_length;         /* OP_HEAD: >= 0 adds Content-Length (the one-shot answer) */
    size_t len;                 /* OP_HEAD: headers; OP_BODY: bytes; OP_END: trailers */
    uint8_t data[];
} stream_op;

struct prg_deferred {
    struct prg_deferred *next;    /* the connection's list (loop thread) */
    struct prg_deferred *posted;  /* the mailbox's list */
    struct prg_deferred *late_prev, *late_next;   /* the loop's handler-timeout list (loop thread) */
    uint32_t late_deadline;       /* loop clock second when the handler is late */
    bool on_late_list;
    prg_conn *conn;               /* loop thread only; NULL once the connection closed */
    prg_mailbox *mailbox;         /* NULL for an answer captured on the loop thread */
    atomic_int state;             /* DEF_*: who completes the answer */
    atomic_uint refs;             /* loop side (its list) + producer side + the mailbox while posted */
    bool ready;                   /* loop thread: its bytes are in out_* */
    bool for_body;                /* loop thread: deferred while its request body streams (on_head) */
    uint8_t req_minor;
    uint8_t keep_alive;
    uint8_t no_body;              /* HEAD request */
    uint32_t close_after;         /* CONN_CLOSE_AFTER its answer set */
    /* The answer, written by the thread completing it. */
    int status;
    bool failed;                  /* out of memory while completing: 500 */
    char *headers;                /* name NUL value NUL, repeated */
    size_t headers_len, headers_cap;
    /* Its bytes, rendered on the loop thread. */
    prg_chunk *out_head, *out_tail;
    size_t out_bytes;
    /* Streaming. ops: posted, not yet rendered (mailbox lock). */
    stream_op *ops_head, *ops_tail;
    stream_op *drain_ops;         /* loop thread: taken from ops_head by the drain */
    struct prg_deferred *drain_next;   /* loop thread: the drain's copy of posted */
    bool on_mailbox;              /* mailbox lock: in the mailbox's list (holds a reference) */
    char *trailers;               /* producer: name NUL value NUL, repeated, sent at the end */
    size_t trailers_len, trailers_cap;
    int64_t declared_left;        /* producer: Content-Length left, -1 = none declared */
    /* The response writer's state for this answer (loop thread), put into
     * the connection while its ops are rendered. */
    uint8_t w_state, w_flags;
    uint16_t w_status;
    int64_t w_length_left;
    /* Watermarks. */
    /* The level is posted_total + loop_part: the producer adds what it
     * posts, the loop publishes (in one store, so the sum is never torn)
     * its bytes still queued minus all it has rendered. */
    atomic_llong posted_total;    /* body bytes ever posted */
    atomic_llong loop_part;       /* queued now - rendered_total */
    long long rendered_total;     /* loop thread: body bytes ever rendered */
    atomic_bool want_writable;    /* a write answered PRG_STREAM_WAIT */
    size_t low_water, high_water;
    pthread_mutex_t cb_lock;      /* held while on_writable runs, so release waits for it */
    void (*on_writable)(void *ctx);
    void *cb_ctx;
};

static void ops_free(stream_op *op) {
    while (op) {
        stream_op *next = op->next;
        free(op);
        op = next;
    }
}

static void mailbox_unref(prg_mailbox *mb) {
    if (atomic_fetch_sub_explicit(&mb->refs, 1, memory_order_acq_rel) != 1) return;
    pthread_mutex_destroy(&mb->lock);
    free(mb);
}

/* One side lets go; the last one frees the handle and its answer. */
static void deferred_unref(prg_deferred *d) {
    if (atomic_fetch_sub_explicit(&d->refs, 1, memory_order_acq_rel) != 1) return;
    free(d->headers);
    free(d->trailers);
    ops_free(d->ops_head);
    if (d->mailbox) {
        pthread_mutex_destroy(&d->cb_lock);
        mailbox_unref(d->mailbox);
    }
    free(d);
}

/* The loop side is done with a handle: its rendered chunks go back to the
 * loop's pool (loop thread; loop may be NULL when nothing was rendered). */
static void loop_let_go(prg_loop *loop, prg_deferred *d) {
    if (d->out_head) prg_chunks_release(loop, d->out_head);
    d->out_head = d->out_tail = NULL;
    d->out_bytes = 0;
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
    for (prg_deferred *p = d; p; p = p->posted) p->on_mailbox = false;
    pthread_mutex_unlock(&mb->lock);
    while (d) {
        prg_deferred *next = d->posted;
        deferred_unref(d);   /* the mailbox's reference; its ops go with the handle */
        d = next;
    }
    mailbox_unref(mb);
}

/* ------------------------------------------------------- connection list */

/* The caller has the busy record (prg_conn_busy_get succeeded). */
static void list_append(prg_conn *c, prg_deferred *d) {
    prg_conn_busy *b = c->busy;
    d->next = NULL;
    if (b->defer_tail) b->defer_tail->next = d;
    else c->defer_head = d;
    b->defer_tail = d;
    b->defer_count++;
}

void prg_offload_hold_begin(prg_conn *c, prg_out_saved *saved) {
    saved->head = c->out_head;
    saved->tail = c->out_tail;
    saved->bytes = c->out_bytes;
    c->out_head = c->out_tail = NULL;
    c->out_bytes = 0;
}

/* Appends what was written since hold_begin to the handle's bytes, and puts
 * the send queue back. */
static void hold_take(prg_conn *c, prg_out_saved *saved, prg_deferred *into) {
    if (c->out_head) {
        if (into->out_tail) into->out_tail->next = c->out_head;
        else into->out_head = c->out_head;
        into->out_tail = c->out_tail;
        into->out_bytes += c->out_bytes;
    }
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
    prg_deferred *d = prg_conn_busy_get(c) ? calloc(1, sizeof *d) : NULL;
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

/* The stream's level as the producer sees it (any thread). */
static size_t stream_level(prg_deferred *d) {
    /* Sequentially consistent, with the stores of want_writable and
     * loop_part: the producer stores the flag then reads the level, the loop
     * stores the level then reads the flag, and one must see the other. */
    long long level = atomic_load(&d->posted_total) + atomic_load(&d->loop_part);
    return level > 0 ? (size_t)level : 0;
}

/* The loop publishes what of the front stream is still queued, and wakes a
 * producer that waits once it is down to the low mark (loop thread). */
static void publish_queued(prg_deferred *d, size_t queued) {
    if (!d->mailbox) return;
    atomic_store(&d->loop_part, (long long)queued - d->rendered_total);
    if (atomic_load(&d->want_writable) && stream_level(d) <= d->low_water &&
        atomic_exchange(&d->want_writable, false)) {
        pthread_mutex_lock(&d->cb_lock);
        if (d->on_writable) d->on_writable(d->cb_ctx);
        pthread_mutex_unlock(&d->cb_lock);
    }
}

/* Whatever is at the front of the list goes to the send queue: answers that
 * are complete, then the bytes so far of a stream still open, which stays
 * at the front and holds back those behind it. */
static void release_ready(prg_conn *c) {
    prg_deferred *d;
    while ((d = c->defer_head)) {
        if (d->out_head) {
            if (c->out_tail) c->out_tail->next = d->out_head;
            else c->out_head = d->out_head;
            c->out_tail = d->out_tail;
            c->out_bytes += d->out_bytes;
            d->out_head = d->out_tail = NULL;
            d->out_bytes = 0;
        }
        if (!d->ready) {
            publish_queued(d, c->out_bytes);
            return;
        }
        c->defer_head = d->next;
        c->busy->defer_count--;
        c->flags |= d->close_after;
        d->conn = NULL;   /* done with it: ops posted after its end are dropped */
        loop_let_go(c->loop, d);
        if (!c->defer_head) {
            c->busy->defer_tail = NULL;
            prg_conn_busy_trim(c);   /* idle again: no record kept */
        }
    }
}

void prg_offload_output_sent(prg_conn *c) {
    prg_deferred *d = c->defer_head;
    if (d && !d->ready) publish_queued(d, c->out_bytes);
}

/* The peer went: a registered producer hears it once, waiting for room or
 * not (so an async handler busy elsewhere can be cancelled); its next write
 * learns the peer is gone. */
static void wake_writer(prg_deferred *d) {
    if (!d->mailbox) return;
    atomic_store(&d->want_writable, false);
    pthread_mutex_lock(&d->cb_lock);
    if (d->on_writable) d->on_writable(d->cb_ctx);
    pthread_mutex_unlock(&d->cb_lock);
}

void prg_offload_peer_finished(prg_conn *c) {
    for (prg_deferred *d = c->defer_head; d; d = d->next)
        if (!d->ready) wake_writer(d);
}

void prg_offload_conn_closed(prg_conn *c) {
    prg_deferred *d = c->defer_head;
    c->defer_head = NULL;
    if (c->busy) {
        c->busy->defer_tail = NULL;
        c->busy->defer_count = 0;
        prg_conn_busy_trim(c);
    }
    while (d) {
        prg_deferred *next = d->next;
        late_remove(c->loop, d);
        d->next = NULL;
        d->conn = NULL;
        if (!d->ready) {
            /* Not finished: from now on the producer is told the peer is gone. */
            int state = atomic_load(&d->state);
            while ((state == DEF_OPEN || state == DEF_HEADED) &&
                   !atomic_compare_exchange_weak(&d->state, &state, DEF_ORPHAN)) {}
            wake_writer(d);
        }
        loop_let_go(c->loop, d);   /* posted ops still in the mailbox are dropped when drained */
        d = next;
    }
}

/* The streamed request's own deferred answer, while its body streams. */
static prg_deferred *body_handle(const prg_conn *c) {
    prg_deferred *d = c->busy ? c->busy->defer_tail : NULL;   /* nothing is appended behind it while its body streams */
    return d && d->for_body ? d : NULL;
}

int prg_offload_stream_deferred(prg_conn *c, uint8_t keep_alive) {
    prg_deferred *d = body_handle(c);
    if (!d) return -1;
    d->keep_alive = keep_alive;   /* deferred while an answer from the head would have closed */
    return 0;
}

void prg_offload_head_answered(prg_conn *c) {
    prg_deferred *d = body_handle(c);
    if (d) d->for_body = false;   /* deferred in on_head, no stream: an answer from the head */
}

bool prg_offload_may_continue(const prg_conn *c) {
    const prg_deferred *d = c->defer_head;
    /* Owed: only this request's own answer, and not a byte of it written. */
    return !d || (d == body_handle(c) && !d->ready && d->w_state == RESP_NONE && !d->out_head);
}

/* ------------------------------------------------------------- deferring */

prg_deferred *prg_defer(prg_conn *c) {
    prg_mailbox *mb = c->loop->mailbox;
    if (!mb) mb = prg_blocking_mailbox(c->loop);   /* a blocking context's first deferral (NULL: none, or no fd) */
    if (!mb || !(c->flags & CONN_IN_CALLBACK) || (c->flags & CONN_CLOSED) || c->resp_state != RESP_NONE)
        return NULL;
    if (!prg_conn_busy_get(c)) return NULL;   /* freed again with the connection or the next trim */
    prg_deferred *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    if (pthread_mutex_init(&d->cb_lock, NULL) != 0) {
        free(d);
        return NULL;
    }
    d->conn = c;
    d->mailbox = mb;
    atomic_fetch_add_explicit(&mb->refs, 1, memory_order_relaxed);
    atomic_init(&d->state, DEF_OPEN);
    atomic_init(&d->refs, 2);   /* the loop's and the producer's */
    atomic_init(&d->posted_total, 0);
    atomic_init(&d->loop_part, 0);
    atomic_init(&d->want_writable, false);
    d->low_water = PRG_STREAM_LOW_WATER;
    d->high_water = PRG_STREAM_HIGH_WATER;
    d->declared_left = -1;
    d->req_minor = c->req_minor;
    d->keep_alive = (uint8_t)c->req_keep_alive;
    d->no_body = (c->resp_flags & RESP_NO_BODY) != 0;   /* only HEAD sets it before an answer */
    /* From on_head (before or after prg_body_stream) or on_body: the body
     * goes on streaming while the answer is owed (prg_offload_body_end). */
    d->for_body = (c->flags & (CONN_STREAMING | CONN_IN_HEAD)) != 0;
    d->status = 500;
    list_append(c, d);
    late_append(c->loop, d);
    c->resp_state = RESP_DONE;   /* the inline writer refuses from here on */
    return d;
}

/* Why an operation was refused, from the state that won. */
static int refused(int state) {
    switch (state) {
    case DEF_TIMED_OUT: return -ETIMEDOUT;
    case DEF_ORPHAN: return -ECONNRESET;
    case DEF_OPEN: return -EPROTO;   /* a body write or end before the head */
    default: return -EALREADY;       /* ended (or the head was already sent) */
    }
}

/* name NUL value NUL appended to a growing list (producer's thread). */
static int pairs_add(char **buf, size_t *len, size_t *cap, const char *name, size_t name_len, const char *value,
                     size_t value_len) {
    if (name_len == 0 || !name || (value_len && !value) || memchr(name, 0, name_len) ||
        (value_len && memchr(value, 0, value_len)))
        return -EINVAL;
    size_t need = *len + name_len + value_len + 2;
    if (need > *cap) {
        size_t c = *cap ? *cap : 64;   /* most answers add a header or two: an open stream holds little */
        while (c < need) c *= 2;
        char *bigger = realloc(*buf, c);
        if (!bigger) return -ENOMEM;
        *buf = bigger;
        *cap = c;
    }
    memcpy(*buf + *len, name, name_len);
    *len += name_len;
    (*buf)[(*len)++] = 0;
    if (value_len) memcpy(*buf + *len, value, value_len);
    *len += value_len;
    (*buf)[(*len)++] = 0;
    return 0;
}

int prg_deferred_header(prg_deferred *d, const char *name, size_t name_len, const char *value,
                        size_t value_len) {
    if (!d) return -EINVAL;
    int state = atomic_load_explicit(&d->state, memory_order_acquire);
    if (state != DEF_OPEN) return state == DEF_HEADED ? -EALREADY : refused(state);
    int rc = pairs_add(&d->headers, &d->headers_len, &d->headers_cap, name, name_len, value, value_len);
    if (rc == -ENOMEM) d->failed = true;
    return rc;
}

int prg_stream_trailer(prg_deferred *d, const char *name, size_t name_len, const char *value, size_t value_len) {
    if (!d) return -EINVAL;
    int state = atomic_load_explicit(&d->state, memory_order_acquire);
    if (state != DEF_HEADED) return refused(state);
    return pairs_add(&d->trailers, &d->trailers_len, &d->trailers_cap, name, name_len, value, value_len);
}

static stream_op *op_new(uint8_t kind, const void *data, size_t n) {
    stream_op *op = malloc(sizeof *op + n);
    if (!op) return NULL;
    op->next = NULL;
    op->kind = kind;
    op->status = 0;
    op->add_length = -1;
    op->len = n;
    if (n) memcpy(op->data, data, n);
    return op;
}

/* Appends ops to the handle and posts it, if the state is still `expect`
 * (moving it to `next`): the check and the append are one step under the
 * mailbox lock, so nothing is ever appended after an end. On refusal the
 * ops are freed and the refusal returned. */
static int post_ops(prg_deferred *d, int expect, int next, stream_op *first, stream_op *last) {
    prg_mailbox *mb = d->mailbox;
    int result = 0;
    pthread_mutex_lock(&mb->lock);
    int state = expect;
    if (!atomic_compare_exchange_strong_explicit(&d->state, &state, next, memory_order_acq_rel,
                                                 memory_order_acquire)) {
        pthread_mutex_unlock(&mb->lock);
        ops_free(first);
        return refused(state);
    }
    if (mb->closed) {
        pthread_mutex_unlock(&mb->lock);
        ops_free(first);
        return -ECONNRESET;   /* the server is gone: nothing will write it */
    }
    if (d->ops_tail) d->ops_tail->next = first;
    else d->ops_head = first;
    d->ops_tail = last;
    if (!d->on_mailbox) {
        d->on_mailbox = true;
        atomic_fetch_add_explicit(&d->refs, 1, memory_order_relaxed);   /* the mailbox's */
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
    }
    pthread_mutex_unlock(&mb->lock);
    return result;
}

/* Once the head op is made it holds a copy of the headers, and no header
 * may be added after the head: an open stream keeps none (producer's
 * thread, the only one that touches them; dropped before the op is posted). */
static void headers_drop(prg_deferred *d) {
    free(d->headers);
    d->headers = NULL;
    d->headers_len = d->headers_cap = 0;
}

/* The head op: status and the headers added so far (producer's thread). */
static stream_op *head_op(prg_deferred *d, int status) {
    stream_op *op = op_new(OP_HEAD, d->headers, d->headers_len);
    if (op) op->status = status;
    return op;
}

/* A Content-Length among the headers, as the writer will take it (the
 * first one, 1 to 18 digits); -1 when none. */
static int64_t declared_length(const prg_deferred *d) {
    for (size_t at = 0; at < d->headers_len;) {
        const char *name = d->headers + at;
        size_t nl = strlen(name);
        const char *value = name + nl + 1;
        size_t vl = strlen(value);
        at += nl + vl + 2;
        if (nl != 14 || strncasecmp(name, "content-length", 14) != 0) continue;
        if (vl == 0 || vl > 18) return -1;
        int64_t v = 0;
        for (size_t i = 0; i < vl; i++) {
            if (value[i] < '0' || value[i] > '9') return -1;
            v = v * 10 + (value[i] - '0');
        }
        return v;
    }
    return -1;
}

int prg_stream_head(prg_deferred *d, int status) {
    if (!d) return -EINVAL;
    int state = atomic_load_explicit(&d->state, memory_order_acquire);
    if (state != DEF_OPEN) return state == DEF_HEADED ? -EALREADY : refused(state);
    if (d->failed) return -ENOMEM;
    stream_op *op = head_op(d, status);
    if (!op) return -ENOMEM;
    d->declared_left = (status == 204 || status == 304 || d->no_body) ? -1 : declared_length(d);
    /* Before posting: once posted the loop may let go of the handle, and the
     * mailbox lock is what orders this write before it. Refused, nothing
     * more can be posted, so nothing needs the headers either. */
    headers_drop(d);
    return post_ops(d, DEF_OPEN, DEF_HEADED, op, op);
}

int prg_stream_write(prg_deferred *d, const void *data, size_t n) {
    if (!d || (n > 0 && !data)) return -EINVAL;
    int state = atomic_load_explicit(&d->state, memory_order_acquire);
    if (state != DEF_HEADED) return refused(state);
    if (n == 0) return 0;
    /* More than the declared length: refused here, so the answer stays
     * well framed (the producer may still write what is left). */
    if (d->declared_left >= 0 && (int64_t)n > d->declared_left) return -EMSGSIZE;
    stream_op *op = op_new(OP_BODY, data, n);
    if (!op) return -ENOMEM;
    atomic_fetch_add(&d->posted_total, (long long)n);
    int rc = post_ops(d, DEF_HEADED, DEF_HEADED, op, op);
    if (rc < 0) {
        atomic_fetch_sub(&d->posted_total, (long long)n);
        return rc;
    }
    if (d->declared_left >= 0) d->declared_left -= (int64_t)n;
    if (stream_level(d) > d->high_water) {
        atomic_store(&d->want_writable, true);
        /* The loop may have drained between the level and the flag: look again. */
        if (stream_level(d) <= d->low_water && atomic_exchange(&d->want_writable, false)) return rc;
        return rc ? rc : PRG_STREAM_WAIT;
    }
    return rc;
}

int prg_stream_end(prg_deferred *d) {
    if (!d) return -EINVAL;
    int state = atomic_load_explicit(&d->state, memory_order_acquire);
    if (state != DEF_HEADED) return refused(state);
    stream_op *op = op_new(OP_END, d->trailers, d->trailers_len);
    if (!op) return -ENOMEM;
    bool short_body = d->declared_left > 0;
    int rc = post_ops(d, DEF_HEADED, DEF_SENT, op, op);
    if (rc == 0 && short_body) return -EMSGSIZE;   /* posted: the loop closes the connection after it */
    return rc;
}

void prg_stream_on_writable(prg_deferred *d, void (*fn)(void *ctx), void *ctx) {
    if (!d || !d->mailbox) return;
    pthread_mutex_lock(&d->cb_lock);
    d->on_writable = fn;
    d->cb_ctx = ctx;
    pthread_mutex_unlock(&d->cb_lock);
}

int prg_stream_set_watermarks(prg_deferred *d, size_t low, size_t high) {
    if (!d || low > high || high == 0) return -EINVAL;
    if (atomic_load_explicit(&d->state, memory_order_acquire) != DEF_OPEN) return -EALREADY;
    d->low_water = low;
    d->high_water = high;
    return 0;
}

size_t prg_stream_queued(prg_deferred *d) { return d ? stream_level(d) : 0; }

int prg_stream_state(prg_deferred *d) {
    if (!d) return -EINVAL;
    switch (atomic_load_explicit(&d->state, memory_order_acquire)) {
    case DEF_OPEN: return PRG_STREAM_OPEN;
    case DEF_HEADED: return PRG_STREAM_HEADED;
    case DEF_SENT: return PRG_STREAM_ENDED;
    case DEF_TIMED_OUT: return PRG_STREAM_TIMED_OUT;
    default: return PRG_STREAM_PEER_GONE;
    }
}

int prg_deferred_send(prg_deferred *d, int status, const void *body, size_t n) {
    if (!d) return -EINVAL;
    if (n > 0 && !body) return -EINVAL;
    /* The one-shot answer is a head (with its length), one write and an
     * end, posted at once: OPEN -> ended in one step, so it cannot be cut
     * in two by the handler timeout or a close. */
    int state = atomic_load_explicit(&d->state, memory_order_acquire);
    if (state != DEF_OPEN) return state == DEF_HEADED ? -EALREADY : refused(state);
    stream_op *head = d->failed ? NULL : head_op(d, status);
    stream_op *bodyop = n ? op_new(OP_BODY, body, n) : NULL;
    stream_op *end = op_new(OP_END, NULL, 0);
    bool failed = !head || (n && !bodyop) || !end;
    if (failed) {
        /* Out of memory: the client gets a 500 (a head that says so). */
        free(head);
        free(bodyop);
        head = op_new(OP_HEAD, NULL, 0);
        bodyop = NULL;
        if (head) head->status = -1;
    } else {
        head->add_length = (int64_t)n;
    }
    if (!head || !end) {
        free(head);
        free(end);
        /* Nothing can be posted: leave it open, the release's 500 or the timeout answers. */
        return -ENOMEM;
    }
    head->next = bodyop ? bodyop : end;
    if (bodyop) bodyop->next = end;
    headers_drop(d);   /* before posting, as in prg_stream_head */
    int rc = post_ops(d, DEF_OPEN, DEF_SENT, head, end);
    return rc == 0 && failed ? -ENOMEM : rc;
}

void prg_deferred_release(prg_deferred *d) {
    if (!d) return;
    /* No more callbacks: waits for one that is running. */
    if (d->mailbox) prg_stream_on_writable(d, NULL, NULL);
    int state = atomic_load_explicit(&d->state, memory_order_acquire);
    if (state == DEF_OPEN) {
        /* Released unanswered: the client gets a 500 rather than a hang. */
        static const char msg[] = "handler did not respond\n";
        (void)prg_deferred_send(d, 500, msg, sizeof msg - 1);   /* refused if the loop won meanwhile: fine */
    } else if (state == DEF_HEADED) {
        /* Released mid-body: the answer cannot be completed honestly, so
         * the connection closes after what was written (the client sees a
         * truncated body). */
        stream_op *op = op_new(OP_ABORT, NULL, 0);
        if (op) (void)post_ops(d, DEF_HEADED, DEF_SENT, op, op);   /* refused if the loop won: fine */
        /* No memory even for that: the handler timeout cannot help once the
         * head is out; the idle timeout closes a connection that stalls. */
    }
    deferred_unref(d);
}

/* ------------------------------------------------------------ loop side */

/* Puts the handle's writer state into the connection, around rendering. */
typedef struct conn_writer_saved {
    prg_out_saved out;
    uint32_t close_after;
    /* The connection's own writer state: the request being streamed in, or
     * being parsed, is not this answer's (its body may still arrive). */
    uint8_t resp_state, resp_flags, req_minor, req_keep_alive;
    uint16_t resp_status;
    int64_t resp_length_left;
} conn_writer_saved;

static void writer_enter(prg_conn *c, prg_deferred *d, conn_writer_saved *saved) {
    prg_offload_hold_begin(c, &saved->out);
    saved->close_after = c->flags & CONN_CLOSE_AFTER;   /* a later request's, not this one's */
    c->flags = (c->flags & ~(uint32_t)CONN_CLOSE_AFTER) | d->close_after;
    saved->resp_state = c->resp_state;
    saved->resp_flags = c->resp_flags;
    saved->req_minor = c->req_minor;
    saved->req_keep_alive = c->req_keep_alive;
    saved->resp_status = c->resp_status;
    saved->resp_length_left = c->resp_length_left;
    c->resp_state = d->w_state;
    c->resp_status = d->w_status;
    c->resp_length_left = d->w_length_left;
    c->req_minor = d->req_minor;
    c->req_keep_alive = d->keep_alive;
    c->resp_flags = d->w_state == RESP_NONE ? (d->no_body ? RESP_NO_BODY : 0) : d->w_flags;
}

static void writer_leave(prg_conn *c, prg_deferred *d, conn_writer_saved *saved) {
    d->w_state = c->resp_state;
    d->w_status = c->resp_status;
    d->w_length_left = c->resp_length_left;
    d->w_flags = c->resp_flags;
    d->keep_alive = (uint8_t)c->req_keep_alive;
    d->close_after = c->flags & CONN_CLOSE_AFTER;
    c->flags = (c->flags & ~(uint32_t)CONN_CLOSE_AFTER) | saved->close_after;
    c->resp_state = saved->resp_state;
    c->resp_flags = saved->resp_flags;
    c->req_minor = saved->req_minor;
    c->resp_status = saved->resp_status;
    c->resp_length_left = saved->resp_length_left;
    /* The answer to a body still streaming may decide to close: the writer
     * then clears req_keep_alive (response.c), and conn.c closes once the
     * body was read to its end. */
    c->req_keep_alive = d->for_body && (c->flags & CONN_STREAMING) ? (uint8_t)(saved->req_keep_alive && c->req_keep_alive)
                                                                   : saved->req_keep_alive;
    hold_take(c, &saved->out, d);
}

static void write_pairs(prg_conn *c, const char *pairs, size_t len) {
    for (size_t at = 0; at < len;) {
        const char *name = pairs + at;
        size_t nl = strlen(name);
        const char *value = name + nl + 1;
        size_t vl = strlen(value);
        at += nl + vl + 2;
        (void)prg_write_header(c, name, nl, value, vl);   /* a refused header is left out */
    }
}

/* The answer cannot go on well framed: close after what was written. */
static void break_off(prg_conn *c) {
    c->flags |= CONN_CLOSE_AFTER;
    c->close_reason = PRG_CLOSE_ERROR;
    c->resp_state = RESP_DONE;
}

static void render_op(prg_conn *c, prg_deferred *d, stream_op *op) {
    switch (op->kind) {
    case OP_HEAD:
        if (op->status > 0 && prg_respond(c, op->status, NULL, 0) == 0) {
            write_pairs(c, (const char *)op->data, op->len);
            if (op->add_length >= 0 && !(c->resp_flags & RESP_HAS_LENGTH) && op->status != 204 &&
                op->status != 304) {
                char len[24];
                int ll = snprintf(len, sizeof len, "%lld", (long long)op->add_length);
                (void)prg_write_header(c, "Content-Length", 14, len, (size_t)ll);
            }
            /* The head goes out now (a stream may wait long for its body). */
            if (prg_write_body(c, "", 0) != 0) break_off(c);
        } else {
            /* A refused status (or no memory): 500, and the stream is done. */
            (void)prg_response_finish_default(c);
            d->ready = true;
        }
        break;
    case OP_BODY:
        if (c->resp_state == RESP_BODY && prg_write_body(c, op->data, op->len) != 0) break_off(c);
        break;
    case OP_END:
        if (c->resp_state == RESP_BODY && (c->resp_flags & RESP_CHUNKED)) {
            /* Last chunk, the trailers, the blank line. */
            if (prg_out_append(c, "0\r\n", 3) != 0) {
                break_off(c);
            } else {
                c->resp_state = RESP_HEAD;   /* prg_write_header's checks for each trailer */
                write_pairs(c, (const char *)op->data, op->len);
                c->resp_state = RESP_DONE;
                if (prg_out_append(c, "\r\n", 2) != 0) break_off(c);
            }
        } else if (c->resp_state == RESP_BODY) {
            (void)prg_end(c);   /* shorter than declared: closes after it */
        }
        d->ready = true;
        break;
    default:   /* OP_ABORT */
        if (c->resp_state != RESP_DONE) break_off(c);
        d->ready = true;
        break;
    }
}

/* Renders posted ops, then sends what is at the front. */
static void render_ops(prg_conn *c, prg_deferred *d, stream_op *ops) {
    conn_writer_saved saved;
    writer_enter(c, d, &saved);
    for (stream_op *op = ops; op; op = op->next) {
        if (op->kind == OP_BODY) d->rendered_total += (long long)op->len;   /* dropped ones too */
        if (!d->ready) render_op(c, d, op);   /* else broken off: the rest is dropped */
    }
    writer_leave(c, d, &saved);
    ops_free(ops);
    if (c->defer_head == d) {
        release_ready(c);        /* publishes the level */
        prg_conn_finish_io(c);   /* send, resume paused input, close if done */
    } else {
        publish_queued(d, d->out_bytes);
    }
}

/* The loop's 503 for a handle whose head did not come in time. */
static void render_timeout(prg_conn *c, prg_deferred *d) {
    conn_writer_saved saved;
    writer_enter(c, d, &saved);
    static const char msg[] = "Service Unavailable: handler timed out\n";
    (void)prg_send(c, 503, "text/plain", 10, msg, sizeof msg - 1);
    (void)prg_response_finish_default(c);
    writer_leave(c, d, &saved);
    d->ready = true;
    if (c->defer_head == d) {
        release_ready(c);
        prg_conn_finish_io(c);
    }
}

void prg_offload_drain(prg_loop *loop) {
    prg_mailbox *mb = loop->mailbox;
    if (!mb) return;
    pthread_mutex_lock(&mb->lock);
    prg_deferred *d = mb->head;
    mb->head = mb->tail = NULL;
    /* Each handle's ops are taken with it, so later posts start afresh. */
    for (prg_deferred *p = d; p; p = p->posted) {
        p->on_mailbox = false;
        p->drain_next = p->posted;   /* posted is the producer's again once unlocked: it may re-post */
        p->drain_ops = p->ops_head;
        p->ops_head = p->ops_tail = NULL;
    }
    pthread_mutex_unlock(&mb->lock);
    while (d) {
        prg_deferred *next = d->drain_next;
        stream_op *ops = d->drain_ops;
        d->drain_ops = NULL;
        prg_conn *c = d->conn;
        if (!c || d->ready) {
            ops_free(ops);   /* its connection closed meanwhile: a no-op */
        } else {
            late_remove(loop, d);
            render_ops(c, d, ops);
        }
        deferred_unref(d);   /* the mailbox's reference */
        d = next;
    }
}

bool prg_offload_late_pending(const prg_loop *loop) { return loop->late_head != NULL; }

void prg_offload_sweep(prg_loop *loop) {
    prg_deferred *d;
    while ((d = loop->late_head) && d->late_deadline <= loop->now) {
        late_remove(loop, d);
        int open = DEF_OPEN;
        /* Lost: the head was sent and is on its way; it is not late. */
        if (!atomic_compare_exchange_strong(&d->state, &open, DEF_TIMED_OUT)) continue;
        render_timeout(d->conn, d);
    }
}

/* A streamed body ended while its answer is deferred (conn.c, before
 * on_body_end). Complete: nothing changes. Failed: the answer is taken from
 * the producer (its later operations are refused: -ETIMEDOUT after a body
 * timeout, else -ECONNRESET) and the error answer goes in its place, or,
 * once its head was written, the connection closes after what was written.
 * Returns true when the request's answer is settled here (the caller sends
 * no error answer of its own). */
bool prg_offload_body_end(prg_conn *c, int end, int status) {
    prg_deferred *d = body_handle(c);
    if (!d) return false;
    d->for_body = false;
    if (end == PRG_BODY_COMPLETE) return false;
    if (d->ready) return true;   /* its answer is whole: it goes out, then the close */
    int state = atomic_load(&d->state);
    int to = end == PRG_BODY_TIMED_OUT ? DEF_TIMED_OUT : DEF_ORPHAN;
    while ((state == DEF_OPEN || state == DEF_HEADED) && !atomic_compare_exchange_weak(&d->state, &state, to)) {}
    if (state != DEF_OPEN && state != DEF_HEADED) return true;   /* ended by the producer: it goes out */
    /* Taken from the producer: its later operations are refused, and what
     * it posted but the loop has not rendered is dropped (ready). */
    late_remove(c->loop, d);
    wake_writer(d);
    conn_writer_saved saved;
    writer_enter(c, d, &saved);
    if (status > 0 && c->resp_state == RESP_NONE) (void)prg_send_error(c, status);   /* in its place */
    else if (c->resp_state != RESP_DONE) break_off(c);   /* cut short: the close tells the client */
    writer_leave(c, d, &saved);
    d->ready = true;
    if (c->defer_head == d) release_ready(c);
    return true;
}
