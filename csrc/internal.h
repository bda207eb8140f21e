/*
 * internal.h: private structures shared by the C core's files. Not installed.
 *
 *   conn.c        connection lifecycle, receive buffer, send queue, request dispatch
 *   response.c    response writer (status line, headers, Date cache, body framing)
 *   loop.c        what every engine's loop shares: accepting, the ready list,
 *                 clocks, end-of-batch chores; the engine table
 *   loop_epoll.c  the readiness loop on raw epoll (level, edge, oneshot)
 *   loop_libev.c  the readiness loop on libev (its epoll, poll, select backends)
 *   engine_blocking.c  the blocking engines: one client at a time, thread per connection
 *   timer.c       timeouts as FIFO lists swept once a second
 *   server.c      listeners, socket options, threads, start/stop
 *   http1.c       the HTTP/1.1 parser
 *   proxy.c       the client's address, the PROXY protocol header
 */
#ifndef PRG_INTERNAL_H
#define PRG_INTERNAL_H

#include "peregrine.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

/* Every buffer the hot path uses is one pooled block of this size: the
 * receive buffer of a connection while a request is in flight, and each
 * link of a send queue. Idle connections hold none. */
#define PRG_BLOCK_SIZE 16384u
/* Blocks kept in a loop's free list; beyond this they go back to malloc. */
#define PRG_POOL_MAX_FREE 4096u
/* recv calls per wakeup while each fills the buffer (a bulk body) before
 * the connection yields to others: in level and oneshot modes the kernel
 * reports it again; in edge mode it goes on the ready list and is served
 * again next round. */
#define PRG_READS_PER_WAKEUP 4
/* Lingering close: after an error answer, or with input left unread, the
 * write side is shut and input discarded until the client closes (at most
 * this long and this much), so the kernel does not answer the unread bytes
 * with a reset that destroys the response in flight. */
#define PRG_LINGER_SECONDS 2u
#define PRG_LINGER_MAX_BYTES (1u << 20)
/* Accepts per wakeup before the listener yields. */
#define PRG_ACCEPTS_PER_WAKEUP 64
/* File links (open descriptors) in one send queue before the connection's
 * reading pauses. Bytes alone do not bound them: a pipelined burst of
 * requests for tiny files queues ~200 bytes per answer, so max_output would
 * let one client that does not read hold thousands of descriptors. */
#define PRG_MAX_QUEUED_FILES 16u
/* Raw mode: receive buffer limit when the application consumes nothing. */
#define PRG_RAW_MAX_INPUT (1u << 20)

/* One link of a send queue. Pooled links are PRG_BLOCK_SIZE bytes in all;
 * a larger one (a single write bigger than a block) is malloc'd.
 *
 * A file link (is_file) holds no bytes: data[] is a prg_file_range, a range
 * of an open file sent with sendfile(2) in its place in the queue, between
 * the bytes queued before and after it. Its cap and end are 0, so nothing is
 * ever appended into it. The link owns the descriptor: releasing the link
 * (sent, dropped with its connection, or with an answer that was never
 * written) closes it. */
typedef struct prg_chunk {
    struct prg_chunk *next;
    uint32_t start;   /* first unsent byte */
    uint32_t end;     /* end of data */
    uint32_t cap;     /* bytes of data[] */
    uint16_t pooled;  /* 1 = return to the pool, 0 = free() */
    uint16_t is_file; /* 1 = data[] is a prg_file_range */
    uint8_t data[];
} prg_chunk;

typedef struct prg_file_range {
    int fd;           /* owned by the link */
    int64_t offset;   /* next byte of the file to send */
    int64_t left;     /* bytes still to send (> 0 while queued) */
} prg_file_range;

#define PRG_CHUNK_DATA_CAP (PRG_BLOCK_SIZE - (uint32_t)sizeof(prg_chunk))

/* A loop's free list of PRG_BLOCK_SIZE blocks (the list is threaded
 * through the free blocks themselves). */
typedef struct prg_pool {
    void *free_list;
    size_t free_count;
} prg_pool;

void *prg_pool_get(prg_pool *pool);            /* NULL only when malloc fails */
void prg_pool_put(prg_pool *pool, void *block);
void prg_pool_drain(prg_pool *pool);

/* Connection flags. */
enum {
    CONN_CLOSED        = 1u << 0,  /* fd closed, waiting to be freed at the end of the batch */
    CONN_CLOSE_AFTER   = 1u << 1,  /* close once the send queue is empty */
    CONN_READ_EOF      = 1u << 2,  /* peer sent FIN (or RDHUP): no more input */
    CONN_PAUSED        = 1u << 3,  /* too much queued output: not reading or parsing */
    CONN_ON_READY_LIST = 1u << 4,  /* edge mode: has more to read, served next round */
    CONN_CONTINUE_SENT = 1u << 5,  /* 100 Continue already sent for the current request */
    CONN_IN_CALLBACK   = 1u << 6,  /* a Swift callback is running for it */
    CONN_PEER_HUP      = 1u << 7,  /* EPOLLRDHUP/EPOLLHUP seen: read until EOF */
    CONN_LINGER        = 1u << 8,  /* answered and half-closed: discarding input until EOF */
    CONN_OPENED        = 1u << 9,  /* on_open ran, so on_close is owed */
    CONN_PROXY_PENDING = 1u << 10, /* proxy_protocol: its PROXY header has not arrived yet */
    /* Streamed request bodies (conn.c, see on_head). */
    CONN_HEAD_SEEN     = 1u << 11, /* on_head ran for the request being parsed */
    CONN_IN_HEAD       = 1u << 12, /* on_head is running: prg_body_stream allowed */
    CONN_STREAMING     = 1u << 13, /* body goes to on_body; on_body_end owed */
    CONN_BODY_HELD     = 1u << 14, /* the application paused, or took less: not reading */
    CONN_BODY_SKIPPED  = 1u << 15, /* answered from the head, body never read: linger on close */
    CONN_WATCHED       = 1u << 16, /* registered with the engine (event engines: after the first read) */
    CONN_PARSER_SAVED  = 1u << 17, /* a request spans reads or callbacks: its parser is busy->parser */
};

/* Response writer states. */
enum { RESP_NONE = 0, RESP_HEAD = 1, RESP_BODY = 2, RESP_DONE = 3 };
/* Response flags. */
enum {
    RESP_HAS_LENGTH = 1u << 0, /* Content-Length written by the application */
    RESP_CHUNKED    = 1u << 1, /* body framed with chunked encoding */
    RESP_NO_BODY    = 1u << 2, /* HEAD request or 1xx/204/304: body bytes not sent */
    RESP_CONN_HDR   = 1u << 3, /* application wrote its own Connection header */
    RESP_MARKED     = 1u << 4, /* started inside the current callback: the loop's resp_mark_* say where */
};

typedef struct prg_loop prg_loop;

/* Readiness as the engines report it to prg_conn_handle_event (each engine
 * maps its own flags: EPOLLIN, EV_READ, ...). */
enum {
    PRG_EV_READ  = 1u << 0,   /* input, or EOF, may be waiting */
    PRG_EV_WRITE = 1u << 1,   /* the send buffer has room */
    PRG_EV_HUP   = 1u << 2,   /* peer hung up (RDHUP/HUP): read until EOF */
    PRG_EV_ERROR = 1u << 3,   /* socket error: close */
    PRG_EV_URGENT = 1u << 4,  /* out-of-band byte: read and drop it */
};

/* One engine: how a loop waits for readiness and is told about connections.
 * loop.c holds everything the engines share (accept, ready list, timers,
 * clocks, freeing); an engine file fills one of these. */
typedef struct prg_engine_ops {
    const char *name;
    int (*init)(prg_loop *loop);            /* after the shared init; 0 or -errno */
    void (*run)(prg_loop *loop);            /* serve until loop->stop is set */
    void (*wake)(prg_loop *loop);           /* any thread, async-signal-safe: make run() see stop soon */
    void (*destroy)(prg_loop *loop);        /* release what init made; run() has ended or never ran */
    int (*watch)(prg_conn *c);              /* a new connection: start reporting it; 0 or -errno */
    void (*unwatch)(prg_conn *c);           /* before its descriptor is closed; may be NULL */
    void (*update_interest)(prg_conn *c);   /* its wants changed: output pending, paused, half-closed */
    int (*set_listener)(prg_loop *loop, bool on);    /* watch the listener or stop watching it; 0 or -errno */
    size_t conn_slot_bytes;                 /* prg_conn.engine_slot's length for this engine (0: none) */
    /* Its sockets block (the blocking and threaded engines): one recv per
     * prg_conn_on_readable, since a second could wait for the client. */
    bool blocking_sockets;
} prg_engine_ops;

extern const prg_engine_ops prg_engine_epoll;
extern const prg_engine_ops prg_engine_libev;
extern const prg_engine_ops prg_engine_blocking;
extern const prg_engine_ops prg_engine_threaded;

/* One connection. Every idle keep-alive connection holds one of these (and
 * nothing else: no buffers), so its size is the server's memory per idle
 * connection: fields are ordered so that no padding is left between them
 * (the _Static_assert after the struct pins the total), and the engine's
 * watcher is a tail sized by the engine (libev only: epoll needs none). */
struct prg_conn {
    int fd;
    uint32_t flags;             /* CONN_* */
    prg_loop *loop;
    uint64_t id;
    struct prg_conn *prev, *next;   /* the loop's list of live connections */
    struct prg_conn *ready_next;    /* edge ready list, the dead list, the free list */

    /* Receive buffer: [0, in_len) holds bytes; the current request starts at 0. */
    uint8_t *in;
    uint32_t in_len;
    uint32_t in_cap;

    /* Send queue. out_bytes counts what is still to send, file ranges
     * included (so a queued file pauses reading like queued bytes do). */
    prg_chunk *out_head;
    prg_chunk *out_tail;
    size_t out_bytes;

    uint32_t registered;        /* events the engine has registered (epoll: EPOLL*, libev: EV_*) */
    uint8_t close_reason;       /* prg_close_reason once closing */
    uint8_t req_minor;          /* HTTP minor version of the request being answered */
    uint8_t resp_state;         /* RESP_* */
    uint8_t resp_flags;
    uint16_t resp_status;
    uint8_t req_keep_alive;     /* 1 = the request asked to keep the connection */
    uint8_t timer_list;         /* TIMER_* (see the timeouts below) */
    uint32_t deadline;          /* loop clock seconds (the timeouts below) */
    int64_t resp_length_left;   /* declared Content-Length minus body written */

    /* Timeouts: the connection sits on at most one of the loop's deadline
     * lists (timer_list above), in deadline order. */
    struct prg_conn *timer_prev, *timer_next;

    /* Answers still owed, in request order (offload.c): a deferred
     * request, or an answer that waits behind one. NULL on the hot path,
     * which tests only this; the rest of the list is in busy. */
    struct prg_deferred *defer_head;
    /* What only a busy connection uses (a streamed body, deferred answers,
     * userdata), allocated on first use and freed once none is left, so
     * that an idle connection does not carry it. NULL when idle. */
    struct prg_conn_busy *busy;
    prg_address remote;         /* the client: accept's peer, or the PROXY header's source */
    uint32_t lingered;          /* bytes discarded while lingering */
    /* The engine's per-connection watcher, engine->conn_slot_bytes long
     * (libev: its ev_io, 48 bytes; loop_libev.c checks the size). The
     * other engines add nothing. */
    void *engine_slot[];
};
/* The idle struct without an engine tail (LP64). Growing it grows every
 * idle connection: move what only a busy connection needs elsewhere first
 * (prg_conn_busy), and what only a callback needs into the loop. 168 bytes
 * is one 176-byte malloc chunk; with libev's 48-byte ev_io, 216 is one of
 * 224 (libev adds its own per-descriptor record, about 27 bytes at 19,000
 * connections, so 256 per idle connection leaves no room to grow). */
_Static_assert(sizeof(void *) != 8 || sizeof(struct prg_conn) <= 168, "struct prg_conn grew past 168 bytes");

/* A connection's busy-only state (conn.c: prg_conn_busy_get, _trim). */
typedef struct prg_conn_busy {
    /* Streaming a body: in[0, body_pending) is decoded body not yet taken by
     * on_body, in[body_pending, in_len) raw input not yet decoded. */
    void *body_stream;
    uint32_t body_pending;
    uint32_t defer_count;
    struct prg_deferred *defer_tail;
    void *userdata;
    /* The parser of a request that spans reads, or callbacks that may
     * resume it (on_head, a streamed body): CONN_PARSER_SAVED. A request
     * that arrives whole is parsed on the stack (conn.c: process_http), so
     * neither an idle connection nor the usual request carries one. */
    prg_http_parser parser;
} prg_conn_busy;
/* The connection's busy record, allocated if it has none; NULL: out of memory. */
prg_conn_busy *prg_conn_busy_get(prg_conn *c);
/* The saved parser of the request in progress, or NULL: none spans reads
 * (the next request starts from scratch). */
static inline prg_http_parser *prg_conn_saved_parser(const prg_conn *c) {
    return (c->flags & CONN_PARSER_SAVED) ? &c->busy->parser : NULL;
}
/* Frees the busy record once nothing in it is in use (idle again). */
void prg_conn_busy_trim(prg_conn *c);

enum {
    TIMER_NONE = 0,
    TIMER_HEAD = 1,    /* request head arriving: header_timeout_s from its first byte */
    TIMER_IDLE = 2,    /* no progress either way: idle_timeout_s, restarted by each event */
    TIMER_LINGER = 3,  /* lingering close: PRG_LINGER_SECONDS */
    TIMER_LISTS = 4,
};

/* A FIFO of connections sharing one timeout: since every entry waits the
 * same time, arrival order is deadline order, so adding, removing and
 * expiring are O(1) and nothing is sorted. Swept once per second. */
typedef struct prg_timer_list {
    prg_conn *head, *tail;
    uint32_t timeout_s;   /* 0 = this timeout is off */
} prg_timer_list;

/* The Date header, formatted once per second per loop. */
typedef struct prg_date_cache {
    time_t second;
    size_t len;
    char line[64];   /* "Date: Mon, 23 Nov 2026 12:57:34 GMT\r\n" */
} prg_date_cache;

/* The longest Content-Type prg_send keeps in the loop's send_head. */
#define PRG_SEND_CT_MAX 64

struct prg_loop {
    prg_server *server;
    const prg_engine_ops *engine;
    void *engine_state;        /* the engine's own per-loop state (libev: its loop and watchers) */
    int index;
    int epfd;
    int listen_fd;
    int wake_fd;               /* eventfd: prg_server_stop writes it, and deferred answers (offload.c) */
    struct prg_mailbox *mailbox;   /* deferred answers posted from other threads (epoll, libev: made at start;
                                    * blocking, threaded: each context's, made at its first prg_defer) */
    struct prg_deferred *late_head, *late_tail;   /* owed answers by handler-timeout deadline (offload.c) */
    int reserve_fd;            /* spare descriptor released to shed connections on EMFILE */
    /* Accepted sockets have TCP_NODELAY from the listener (ours: set at
     * creation). An inherited listener may be shared with another process,
     * so it is left as it is and each connection sets its own. */
    bool nodelay_inherited;
    /* Our own listener in HTTP mode has TCP_DEFER_ACCEPT: an accepted
     * connection's request is usually in already, so it is read at once and
     * registered with the engine only if it stays open (no epoll_ctl for a
     * connection that is answered and closed right away). */
    bool read_on_accept;
    atomic_int stop;
    pthread_t thread;
    bool thread_started;

    prg_pool pool;
    prg_conn *free_conns;      /* recycled connection structs */
    prg_conn *live;            /* every open connection */
    prg_conn *ready;           /* edge mode: connections with input left to read */
    prg_conn *dead;            /* closed during this batch; freed after it */
    bool listener_ready;       /* edge mode: accept queue not yet drained */
    bool listener_paused;      /* accept failed for lack of resources: disarmed until listener_resume */
    uint32_t listener_resume;  /* loop clock second to re-arm the listener */
    time_t emfile_logged;      /* last time descriptor exhaustion was logged */
    time_t listener_logged;    /* last time a failed listener (re-)arm was logged */
    bool one_request;          /* blocking engine: every connection is answered once, then closed */
    bool draining;             /* graceful shutdown under way in this context: answers close */
    uint64_t next_id;

    prg_header *headers;       /* parser output, limits.max_headers entries */
    prg_timer_list timers[TIMER_LISTS];   /* indexed by TIMER_*; [TIMER_NONE] unused */
    uint32_t now;              /* CLOCK_MONOTONIC_COARSE seconds, refreshed each round */
    uint32_t swept;            /* second of the last timeout sweep */
    prg_date_cache date;
    /* "Server: <name>\r\n", prebuilt */
    char server_line[128];
    size_t server_line_len;
    /* "HTTP/1.1 200 OK\r\n", the Server and the Date lines in one piece
     * (response.c): rebuilt when the Date changes (head_200_second). */
    char head_200[17 + 128 + 64];
    size_t head_200_len;
    time_t head_200_second;
    /* head_200, "Content-Type: <send_ct>\r\n" and "Content-Length: " in one
     * piece for prg_send (response.c): the last Content-Type it sent (already
     * checked), rebuilt when head_200 or the type changes. */
    char send_head[17 + 128 + 64 + 14 + PRG_SEND_CT_MAX + 2 + 16];
    size_t send_head_len;
    time_t send_head_second;
    char send_ct[PRG_SEND_CT_MAX];
    size_t send_ct_len;
    /* Where the response being written by resp_mark_conn began in its send
     * queue (its RESP_MARKED): nothing is flushed during a callback, so
     * prg_response_replace can cut the queue back to here. NULL chunk: the
     * queue was empty. In the loop, not each connection: only the connection
     * in a callback needs it (response.c). */
    const prg_conn *resp_mark_conn;
    prg_chunk *resp_mark_chunk;
    uint32_t resp_mark_end;
};

struct prg_server {
    prg_config cfg;
    prg_callbacks cb;
    prg_http_limits head_limits;   /* limits before on_head chose: max_body covers both kinds of body */
    prg_http_limits stream_limits; /* a streamed body's: max_body is max_streamed_body */
    int port;
    int effective_backlog;
    int loop_count;
    prg_loop *loops;
    /* Graceful shutdown (prg_server_shutdown): set once, read by every loop. */
    atomic_int drain;
    atomic_llong drain_deadline_ms;   /* CLOCK_MONOTONIC milliseconds; 0 = none asked */
    atomic_llong drain_idle_until_ms; /* handed off: idle connections wait for a next request until then */
};

/* conn.c */
prg_conn *prg_conn_open(prg_loop *loop, int fd);
int prg_conn_on_readable(prg_conn *c);        /* read what the trigger mode allows, then process; 0 = nothing to read */
int prg_conn_flush(prg_conn *c);              /* 0 = all sent, 1 = would block, -1 = closed */
void prg_conn_finish_io(prg_conn *c);          /* flush, close if done, update interest */
void prg_conn_close_now(prg_conn *c, int reason);
void prg_conn_free(prg_conn *c);               /* after the batch; returns memory to the loop */
void prg_conn_discard_urgent(prg_conn *c);     /* EPOLLPRI: read and drop out-of-band data */
int prg_out_append(prg_conn *c, const void *p, size_t n);
int prg_out_append_file(prg_conn *c, int fd, int64_t offset, int64_t length);   /* queue takes fd; 0 or -1 (fd closed) */
uint8_t *prg_out_reserve(prg_conn *c, size_t n); /* contiguous space for n bytes, or NULL */
/* Commits n bytes written at what prg_out_reserve returned. Inline: the
 * response writer calls it once per answer. */
static inline void prg_out_commit(prg_conn *c, size_t n) {
    c->out_tail->end += (uint32_t)n;
    c->out_bytes += n;
}
void prg_chunks_release(prg_loop *loop, prg_chunk *k);   /* a whole list of links */

static inline void prg_conn_update_timer(prg_conn *c);   /* put on the list its state calls for (below) */
void prg_timer_remove(prg_conn *c);
void prg_timers_sweep(prg_loop *loop);           /* 408 late heads, close idle connections */
void prg_conn_linger(prg_conn *c);               /* shut the write side, discard input until EOF */
/* A streamed body failed (state PRG_BODY_*): the error answer (status) if
 * no answer was started, close after, then on_body_end. */
void prg_body_fail(prg_conn *c, int state, int status);

/* proxy.c: the client's address */
struct sockaddr;
void prg_address_from_sockaddr(prg_address *out, const struct sockaddr *sa);   /* not IP: PRG_ADDR_NONE */

/* offload.c: answers completed on other threads, written in request order */
#define PRG_DEFER_MAX_DEPTH 64u        /* answers owed per connection before its reading pauses */
int prg_offload_loop_init(prg_loop *loop);     /* the mailbox (over loop->wake_fd); 0 or -errno */
struct prg_mailbox *prg_blocking_mailbox(prg_loop *loop);   /* engine_blocking.c: made at need; NULL elsewhere or on failure */
void prg_offload_loop_close(prg_loop *loop);   /* loop ended: later answers are dropped */
void prg_offload_drain(prg_loop *loop);        /* loop thread, after its wake_fd fired */
void prg_offload_conn_closed(prg_conn *c);     /* drops what the connection was owed */
/* The peer sent its FIN while answers are owed: each unfinished stream's
 * producer hears it once through on_writable (the answer may still go out). */
void prg_offload_peer_finished(prg_conn *c);
void prg_offload_output_sent(prg_conn *c);     /* after a flush: a front stream's level, its producer woken */
void prg_offload_sweep(prg_loop *loop);        /* handler_timeout_s passed: 503 for the late answers */
bool prg_offload_late_pending(const prg_loop *loop);   /* an owed answer has a handler-timeout deadline */
bool prg_offload_may_continue(const prg_conn *c);    /* 100 Continue would not go ahead of an owed answer */
int prg_offload_stream_deferred(prg_conn *c, uint8_t keep_alive);   /* prg_body_stream after prg_defer in on_head */
void prg_offload_head_answered(prg_conn *c);         /* on_head deferred without streaming */
bool prg_offload_body_end(prg_conn *c, int end, int status);   /* a streamed body ended: its deferred answer */
/* Around a callback that may answer while earlier answers are owed: the
 * answer is captured and queued behind them instead of going out first. */
typedef struct prg_out_saved { struct prg_chunk *head, *tail; size_t bytes; } prg_out_saved;
void prg_offload_hold_begin(prg_conn *c, prg_out_saved *saved);
void prg_offload_hold_end(prg_conn *c, prg_out_saved *saved);
static inline bool prg_offload_full(const prg_conn *c) { return c->busy && c->busy->defer_count >= PRG_DEFER_MAX_DEPTH; }

/* response.c */
void prg_date_refresh(prg_date_cache *d, time_t now);
/* Before each handler call. Inline: once per request, from conn.c. */
static inline void prg_response_reset(prg_conn *c, const prg_request *req) {
    c->resp_state = RESP_NONE;
    c->resp_status = 0;
    c->resp_length_left = 0;
    c->req_minor = (uint8_t)req->version_minor;
    c->req_keep_alive = (req->flags & PRG_REQ_KEEP_ALIVE) != 0;
    c->resp_flags = (req->method.len == 4 && memcmp(req->method.ptr, "HEAD", 4) == 0) ? RESP_NO_BODY : 0;
}
int prg_response_finish_default(prg_conn *c);  /* after on_request: end or 500 */
int prg_send_error(prg_conn *c, int status);   /* error answer with Connection: close */
int prg_send_continue(prg_conn *c);

/* loop.c: what every engine's loop shares */
const prg_engine_ops *prg_engine_for(prg_engine engine);   /* NULL if unknown */
int prg_loop_init(prg_loop *loop);              /* shared init, then the engine's; 0 or -errno */
int prg_loop_init_context(prg_loop *loop);      /* headers, Date, timers (not the Server line); 0 or -errno */
void prg_loop_free_context(prg_loop *loop);     /* what init_context and serving left: conns, pool, headers */
/* accepted fd and its peer (NULL: getpeername): conn, watch, on_open; NULL = no memory, fd still the caller's */
prg_conn *prg_loop_open_conn(prg_loop *loop, int fd, const struct sockaddr *peer);
bool prg_loop_accept_error(prg_loop *loop, int err);   /* accept failed (not EAGAIN): true = try again now, false = wait */
void *prg_loop_run(void *loop);                 /* thread body: engine run, then close everything */
void prg_loop_accept_ready(prg_loop *loop);     /* accept what the backlog holds (non-blocking listener) */
void prg_loop_mark_ready(prg_conn *c);          /* serve it after this batch (edge input, writes from elsewhere) */
void prg_loop_end_batch(prg_loop *loop);        /* after each batch of events: ready list, accepts, timers, free */
int prg_loop_wait_ms(const prg_loop *loop);     /* how long the engine may block: 0, 1000 (timers) or -1 */
void prg_loop_refresh_clocks(prg_loop *loop);   /* Date cache and the timer clock (vDSO, no syscall) */
void prg_loop_pause_listener(prg_loop *loop);   /* out of a resource: stop accepting for a second */
void prg_loop_resume_listener(prg_loop *loop);  /* re-arm; if that fails, stays paused and retries a second later */
void prg_conn_handle_events(prg_conn *c, unsigned events);  /* PRG_EV_*, any mix, from the engine */
/* PRG_EV_* from the engine. Inline for the usual event, input alone (once
 * per keep-alive request): what prg_conn_handle_events does for it, without
 * its tests for the others or a call. */
static inline void prg_conn_handle_event(prg_conn *c, unsigned events) {
    if (events != PRG_EV_READ) {
        prg_conn_handle_events(c, events);
        return;
    }
    if (c->flags & CONN_CLOSED) return;   /* closed earlier in this batch */
    prg_conn_on_readable(c);
    prg_conn_finish_io(c);
}

/* Graceful shutdown (loop.c). */
int64_t prg_monotonic_ms(void);
bool prg_drain_requested(const prg_server *s);
bool prg_drain_expired(const prg_server *s);
int prg_drain_ms_left(const prg_server *s);     /* >= 0 */
int prg_drain_idle_grace_left(const prg_server *s); /* ms idle connections are still kept, >= 0 */
bool prg_conn_drain_idle(const prg_conn *c);    /* nothing in flight: may be closed at once */
void prg_loop_drain(prg_loop *loop);            /* event engines, after each batch: close the listener,
                                                   idle connections, all at the deadline; stop when none left */

/* timer.c: prg_conn_update_timer for every case (timer_wanted). */
void prg_conn_update_timer_slow(prg_conn *c);
/* The usual call, once per request, inline: a keep-alive connection between
 * requests, on the idle list with this second's deadline already. With none
 * of these flags, no owed answer and nothing buffered, timer_wanted says
 * TIMER_IDLE (raw mode: only while output is pending), so nothing moves.
 * (On the idle list means its timeout is on: timeout_s is set once, at init;
 * the deadline is timer.c's deadline_for.) */
static inline void prg_conn_update_timer(prg_conn *c) {
    const prg_loop *loop = c->loop;
    if (c->timer_list == TIMER_IDLE && c->deadline == loop->now + loop->timers[TIMER_IDLE].timeout_s + 1 &&
        c->in_len == 0 &&
        !(c->flags & (CONN_CLOSED | CONN_LINGER | CONN_PROXY_PENDING | CONN_STREAMING | CONN_CLOSE_AFTER |
                      CONN_PAUSED | CONN_BODY_HELD)) &&
        !c->defer_head && (c->out_bytes || loop->server->cfg.mode == PRG_MODE_HTTP))
        return;
    prg_conn_update_timer_slow(c);
}

/* The first call registers the connection (see read_on_accept); a failed
 * registration closes it. */
static inline void prg_loop_update_interest(prg_conn *c) {
    if (c->flags & CONN_CLOSED) return;
    if (!(c->flags & CONN_WATCHED)) {
        if (c->loop->engine->watch(c) != 0) {
            prg_conn_close_now(c, PRG_CLOSE_ERROR);
            return;
        }
        c->flags |= CONN_WATCHED;
    }
    c->loop->engine->update_interest(c);
}

/* The core's messages: through cb.on_log when set, else to stderr
 * ("peregrine: ..."). printf-style; the line is cut at 255 bytes. */
void prg_log(const prg_server *s, prg_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
