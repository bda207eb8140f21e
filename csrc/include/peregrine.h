/*
 * peregrine.h: the one public header of the C core (target CPeregrine).
 *
 * Everything is prefixed prg_. Functions that can fail return an int:
 * 0 (or a non-negative count) on success, a negative value on failure
 * (-errno for system errors, or a negative HTTP status for parse errors).
 *
 * Threading: a server runs N loops, one per thread. A prg_conn belongs to
 * exactly one loop and every prg_* call on it must come from that loop's
 * thread, from inside a callback of that loop. Writing to or closing a
 * connection from another connection's callback is allowed: it takes effect
 * after the current batch of events. prg_server_stop may be called from any
 * thread.
 *
 * The threaded engine runs every connection on a thread of its own, so the
 * callbacks run concurrently on many threads, and a connection may be used
 * only from its own callbacks (not from another connection's: that one
 * belongs to another thread). The blocking engine serves one connection at
 * a time on one thread.
 */
#ifndef PEREGRINE_H
#define PEREGRINE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ */
/* Request view (zero-copy: every slice points into the receive buffer) */
/* ------------------------------------------------------------------ */

/* A byte range. Layout is part of the ABI: { pointer, length }, 16 bytes. */
typedef struct prg_slice {
    const uint8_t *ptr;
    size_t len;
} prg_slice;

/* A header field as it appeared on the wire (name case preserved, value
 * with leading/trailing whitespace removed). 32 bytes. */
typedef struct prg_header {
    prg_slice name;
    prg_slice value;
} prg_header;

enum {
    PRG_REQ_CHUNKED         = 1u << 0, /* body arrived with Transfer-Encoding: chunked (decoded) */
    PRG_REQ_EXPECT_CONTINUE = 1u << 1, /* request carried Expect: 100-continue */
    PRG_REQ_KEEP_ALIVE      = 1u << 2, /* connection persists after this response */
    PRG_REQ_HAS_CONTENT_LENGTH = 1u << 3,
};

/* Valid only during the on_request callback: the bytes it points at are
 * reused as soon as the callback returns. Copy what must outlive it. */
typedef struct prg_request {
    prg_slice method;
    prg_slice target;
    int version_minor;            /* HTTP/1.<version_minor>: 0 or 1 */
    unsigned flags;               /* PRG_REQ_* */
    const prg_header *headers;
    size_t header_count;
    prg_slice body;               /* contiguous; chunked bodies are decoded in place */
    int64_t content_length;       /* -1 when the request had no Content-Length */
} prg_request;

/* ------------------------------------------------------------------ */
/* HTTP/1.1 parser (http1.c): incremental, zero-copy, strict RFC 9112   */
/* ------------------------------------------------------------------ */

typedef struct prg_http_limits {
    size_t max_request_line;   /* bytes, request line without CRLF: 414 beyond (default 8 KiB) */
    size_t max_header_bytes;   /* bytes, whole header section: 431 beyond (default 16 KiB) */
    size_t max_headers;        /* header fields: 431 beyond (default 100) */
    size_t max_body;           /* bytes of decoded body: 413 beyond (default 1 MiB) */
} prg_http_limits;

/* Fills the defaults listed above. */
void prg_http_limits_default(prg_http_limits *limits);

/* Per-request parser state. Zero it (prg_http_parser_reset) before the
 * first byte of each request. Holds offsets only, never pointers, so the
 * buffer may move (realloc) between calls. */
typedef struct prg_http_parser {
    size_t scanned;        /* bytes of the head already searched for the blank line */
    size_t head_len;       /* length of the head incl. the final CRLFCRLF, 0 until found */
    int64_t content_length;
    unsigned flags;        /* PRG_REQ_* known once the head is parsed */
    int state;             /* internal: phase of the parse */
    /* chunked decoding, all offsets relative to the start of the request */
    size_t body_read;      /* raw bytes consumed after the head */
    size_t body_decoded;   /* decoded bytes written (in place) after the head */
    uint64_t chunk_left;   /* bytes left in the current chunk */
    int chunk_state;       /* internal */
} prg_http_parser;

void prg_http_parser_reset(prg_http_parser *p);

/* Result codes of prg_http_parse besides a positive byte count. */
#define PRG_PARSE_INCOMPLETE 0

/*
 * Parse one request from buf[0..len). buf starts at the first byte of the
 * request and is writable (chunked bodies are decoded in place).
 *
 * Returns
 *   > 0  the request is complete: *req (and headers[0..req->header_count))
 *        describe it; the return value is the number of bytes it used, so
 *        the next pipelined request starts at buf + ret.
 *   0    (PRG_PARSE_INCOMPLETE) more bytes are needed; call again with the
 *        same prefix plus more bytes. After the head is complete,
 *        prg_http_head_complete(p) is true and p->flags is known (used to
 *        send 100 Continue).
 *   < 0  the request is malformed: -status, the HTTP status to answer with
 *        (-400, -413, -414, -431, -501, -505). The connection must close.
 *
 * headers must have room for limits->max_headers entries. Splitting the same
 * bytes at any offset over several calls gives the same result.
 */
int64_t prg_http_parse(prg_http_parser *p, uint8_t *buf, size_t len,
                       const prg_http_limits *limits,
                       prg_request *req, prg_header *headers);

/* Chunked bodies are decoded in place, so the framing already decoded away
 * leaves a gap between the decoded body and the unread input. Between calls
 * that returned PRG_PARSE_INCOMPLETE, this closes the gap by moving the
 * unread bytes buf[.., len) down, and returns how many bytes the request
 * shrank by: the caller shortens its buffer by that much. Keeps the memory a
 * body of many small chunks needs at its decoded size. Returns 0 when there
 * is nothing to close (not in a chunked body). */
size_t prg_http_compact(prg_http_parser *p, uint8_t *buf, size_t len);

/* True once the request head has been parsed successfully. */
int prg_http_head_complete(const prg_http_parser *p);

/*
 * Streamed bodies. Once prg_http_head_complete(p) is true, a caller that
 * wants the body as it arrives (instead of whole, from prg_http_parse) uses
 * these two instead of calling prg_http_parse again for this request.
 *
 * prg_http_head_view fills *req for the complete head at buf[0..len) (the
 * same bytes prg_http_parse was given), with an empty body. Returns 0, or
 * -status (-500 when the head is not complete).
 *
 * prg_http_body_next decodes the next span of the body. buf[0..len) holds
 * raw body bytes: those following what earlier calls used (the first call:
 * the bytes after the head). Decodes in place: the decoded bytes are
 * buf[0..*decoded) (chunk framing removed). Returns the number of input
 * bytes used (the next call starts with buf[ret..len) plus what arrives
 * later; with Content-Length, bytes after the body belong to the next
 * request), and sets *done once the whole body (chunked: the last chunk and
 * the trailer section) has been used. Returns -status on bad input: -400 bad
 * framing, -413 when the decoded body would exceed limits->max_body (the
 * limit for streamed bodies: a Content-Length over it fails on the first
 * call, even with len 0), -431 trailer section over the header limits.
 * Body bytes decoded before bad input are returned first (ret >= 0); the
 * error comes from the next call. Trailer fields are validated as in
 * prg_http_parse and dropped. Chunked input is used whole until the body
 * ends; a span may be empty (framing only).
 */
int prg_http_head_view(const prg_http_parser *p, const uint8_t *buf, size_t len,
                       const prg_http_limits *limits, prg_request *req, prg_header *headers);
int64_t prg_http_body_next(prg_http_parser *p, uint8_t *buf, size_t len,
                           const prg_http_limits *limits, size_t *decoded, int *done);

/* ------------------------------------------------------------------ */
/* Server, loops and connections                                        */
/* ------------------------------------------------------------------ */

typedef struct prg_server prg_server;
typedef struct prg_conn prg_conn;

typedef enum prg_trigger {
    PRG_TRIGGER_LEVEL = 0,
    PRG_TRIGGER_EDGE = 1,
    PRG_TRIGGER_ONESHOT = 2,
} prg_trigger;

/* How connections are served. Every engine runs the same callbacks. */
typedef enum prg_engine {
    PRG_ENGINE_EPOLL = 0,    /* raw epoll readiness loop (loop_epoll.c), any trigger */
    PRG_ENGINE_LIBEV = 1,    /* libev readiness loop (loop_libev.c), backend chosen by libev_backend */
    PRG_ENGINE_BLOCKING = 2, /* one client at a time: accept, read, answer one request with
                                Connection: close, close; raw mode: serve until the client closes */
    PRG_ENGINE_THREADED = 3, /* a thread per connection, blocking sockets, keep-alive and pipelining;
                                beyond max_threads: 503 + Retry-After (raw: close) */
} prg_engine;

/* libev's own readiness mechanisms (EVBACKEND_*), for the libev engine. */
typedef enum prg_libev_backend {
    PRG_LIBEV_EPOLL = 0,
    PRG_LIBEV_POLL = 1,
    PRG_LIBEV_SELECT = 2,
} prg_libev_backend;

typedef enum prg_mode {
    PRG_MODE_HTTP = 0,  /* on_request per parsed request */
    PRG_MODE_RAW = 1,   /* on_data with whatever bytes arrived */
} prg_mode;

/* Why a connection closed (on_close reason). */
typedef enum prg_close_reason {
    PRG_CLOSE_NORMAL = 0,     /* orderly: client closed, or Connection: close answered */
    PRG_CLOSE_ERROR = 1,      /* socket error, reset, EPOLLERR/EPOLLHUP */
    PRG_CLOSE_BAD_REQUEST = 2,/* malformed request answered with 4xx/5xx then closed */
    PRG_CLOSE_APP = 3,        /* the application called prg_conn_close */
    PRG_CLOSE_SHUTDOWN = 4,   /* the server stopped */
} prg_close_reason;

/* How a streamed request body ended (on_body_end). */
typedef enum prg_body_end {
    PRG_BODY_COMPLETE = 0,    /* every byte delivered (chunked: trailers validated and dropped) */
    PRG_BODY_CLIENT_GONE = 1, /* the client closed or reset the connection before the end */
    PRG_BODY_TIMED_OUT = 2,   /* no body byte for idle_timeout_s: 408 answered, connection closed */
    PRG_BODY_BAD_FRAMING = 3, /* malformed chunked framing or trailers: 400 (431) answered, closed */
    PRG_BODY_TOO_LARGE = 4,   /* over max_streamed_body: 413 answered, closed */
    PRG_BODY_CLOSED = 5,      /* the server stopped or closed the connection, or the application did */
} prg_body_end;

/* The only way C calls into Swift. Any pointer may be NULL except the one
 * the mode needs (on_request for HTTP, on_data for RAW). */
typedef struct prg_callbacks {
    void *ctx;                                                        /* Unmanaged Swift server object */
    void (*on_open)(void *ctx, prg_conn *c);
    void (*on_request)(void *ctx, prg_conn *c, const prg_request *req);  /* HTTP mode */
    size_t (*on_data)(void *ctx, prg_conn *c, const uint8_t *p, size_t n); /* raw mode: returns bytes consumed */
    void (*on_close)(void *ctx, prg_conn *c, int reason);
    /* Streamed request bodies (HTTP mode; all three, or none). on_head runs
     * once the head of a request that has a body (Content-Length > 0 or
     * chunked) is parsed, before its body is read; req->body is empty. It
     * decides, by what it calls:
     *   prg_body_stream(c, stream)  the body arrives through on_body, then
     *                               on_body_end (on_request is not called);
     *   an answer (prg_respond...)  answered from the head: the body is never
     *                               read (no 100 Continue), the answer says
     *                               Connection: close and the connection
     *                               closes after it (lingering, see README);
     *   neither                     buffered as without on_head: on_request
     *                               with the whole body (max_body applies).
     * on_body gets decoded bytes as they arrive, valid during the call, and
     * returns how many it took; fewer than n (or prg_body_pause) holds the
     * rest in the receive buffer and stops reading until prg_body_resume.
     * on_body_end runs exactly once per prg_body_stream, with a
     * prg_body_end; after COMPLETE the response may still be written there
     * (a handler that wrote none gets 500); after a failure the core's error
     * answer is already queued (or, if the handler had started one, the
     * connection closes after it). The response may be written at any time
     * from prg_body_stream on; the body is still read to its end (then the
     * connection closes if that answer said Connection: close). It may also
     * be deferred (prg_defer) in on_head (before or after prg_body_stream:
     * prg_body_stream accepts a request deferred in this on_head), in on_body,
     * or in on_body_end(COMPLETE) when nothing was answered: the body goes
     * on streaming while the answer is owed, and the answer may be given
     * (head, writes, end) from any thread before, during or after the
     * body's end (no 500 at COMPLETE). A failed body settles a deferred
     * answer first: its error answer (408, 413, 400) goes in the handle's
     * place if none of the answer was written yet, else the connection
     * closes after what was written; a client that left gets nothing; the
     * handle's later operations are refused (-ETIMEDOUT after a body
     * timeout, else -ECONNRESET). */
    void (*on_head)(void *ctx, prg_conn *c, const prg_request *req);
    size_t (*on_body)(void *ctx, prg_conn *c, void *stream, const uint8_t *p, size_t n);
    void (*on_body_end)(void *ctx, prg_conn *c, void *stream, int end);
    /* Optional. What the core has to say (accept errors, descriptor
     * exhaustion, a listener that cannot be re-armed): a prg_log_level and
     * one line without newline, valid during the call; any thread, rate
     * limited by the caller. NULL: written to stderr as "peregrine: ...". */
    void (*on_log)(void *ctx, int level, const char *message);
    /* Optional, for metrics: a prg_metric_event and its value (the status of
     * a parse or limit error answer; 0 for a shed connection). Any loop
     * thread. NULL costs one untaken branch: nothing is counted. */
    void (*on_metric)(void *ctx, int event, int value);
    /* Optional, for work the application runs on the loop's own thread (an
     * executor for Swift tasks): called on loop loop_index's thread with a
     * prg_tick_phase: START once before it serves, BATCH after each batch of
     * events (its return value: how much work it did; nonzero makes the loop
     * write out what that work answered in the same batch), STOP once after
     * its connections are closed (nothing runs on the thread after it).
     * prg_server_wake makes a loop run a batch soon, from any thread. Epoll
     * and libev engines only. NULL costs one untaken branch per batch. */
    int (*on_tick)(void *ctx, int loop_index, int phase);
} prg_callbacks;

typedef enum { PRG_TICK_START = 0, PRG_TICK_BATCH = 1, PRG_TICK_STOP = 2 } prg_tick_phase;

typedef enum { PRG_LOG_INFO = 0, PRG_LOG_WARNING = 1, PRG_LOG_ERROR = 2 } prg_log_level;

typedef enum {
    PRG_METRIC_SHED_ACCEPT = 1,   /* out of descriptors: a connection accepted and closed at once */
    PRG_METRIC_PARSE_ERROR = 2,   /* a request answered with an error status by the core (value: the status) */
} prg_metric_event;

typedef struct prg_config {
    const char *host;          /* numeric IPv4 or IPv6 address; NULL or "" = 0.0.0.0 */
    int port;                  /* 0 = ephemeral; read it back with prg_server_port */
    int threads;               /* loops, each with its own SO_REUSEPORT listener; >= 1 (epoll, libev); 1 for blocking and threaded */
    int backlog;               /* listen() backlog requested; clamped by somaxconn */
    prg_engine engine;         /* default PRG_ENGINE_EPOLL */
    prg_trigger trigger;       /* epoll engine only; the others are level-triggered or blocking */
    prg_libev_backend libev_backend;
    int max_threads;           /* threaded engine: connection threads at most; beyond, 503 and close (default 512) */
    prg_mode mode;
    int tcp_nodelay;           /* 1 = TCP_NODELAY on accepted sockets (default) */
    int tcp_cork;              /* 1 = cork, write the batch of responses, uncork */
    prg_http_limits limits;
    uint64_t max_streamed_body; /* decoded bytes of a streamed body (on_head chose prg_body_stream): 413 beyond
                                   (default 1 GiB); limits.max_body is for buffered bodies */
    size_t max_output;         /* queued output per connection before reads pause (backpressure) */
    int header_timeout_s;      /* whole head must arrive within this, counted from its first byte: 408 (default 10; 0 = off) */
    int idle_timeout_s;        /* no progress for this long (idle keep-alive, stalled body: 408, unread output) closes (default 60; 0 = off) */
    const char *server_name;   /* value of the Server header; NULL = "Peregrine" */
    int proxy_protocol;        /* 1 = every connection starts with a PROXY header (v1 or v2, proxy.c);
                                  missing or malformed: closed without an answer (default 0) */
    int handler_timeout_s;     /* a deferred answer (prg_defer) not sent within this gets 503 and the late
                                  prg_deferred_send is refused with -ETIMEDOUT (default 60; 0 = off).
                                  Every engine (swept once a second) */
    /* Listening sockets inherited (socket activation, a handoff) instead of
     * binding host:port: each must be a listening TCP socket. The server
     * serves dup()s of them (the caller keeps and closes its own); loop i
     * takes listen_fds[i % listen_fd_count], so threads must be at least
     * listen_fd_count (loops beyond share a socket). epoll and libev only. */
    const int *listen_fds;
    int listen_fd_count;       /* 0 = bind host:port */
} prg_config;
/* host, server_name and listen_fds are read during prg_server_create only:
 * they need not outlive it. */

void prg_config_default(prg_config *cfg);

/* Creates listeners and loops (does not start threads). On failure returns
 * NULL and stores -errno in *err: -EINVAL for a value it cannot serve with
 * (threads, port, an enum out of range, a trigger or thread count the engine
 * does not have, limits a receive buffer cannot hold, a timeout below 0).
 * Swift users get these rules, and narrower ones, as a ConfigurationError
 * naming the field before this is called (Configuration.validate()). */
prg_server *prg_server_create(const prg_config *cfg, const prg_callbacks *cb, int *err);
/* Starts one thread per loop. Returns 0 or -errno. */
int prg_server_start(prg_server *s);
/* Asks every loop to stop (thread-safe, async-signal-safe, every engine) and
 * returns at once. The blocking and threaded engines shut down the listener
 * and their connections' sockets, so a thread blocked in accept, recv or
 * poll returns at once; connections close with PRG_CLOSE_SHUTDOWN. */
void prg_server_stop(prg_server *s);
/* Graceful shutdown (thread-safe, async-signal-safe, every engine), returns
 * at once; prg_server_wait then returns when it is done. Every loop stops
 * accepting (its listener is closed, or shut down: the kernel refuses new
 * connections and resets those not yet accepted), closes idle connections
 * (nothing received of a next request, no output pending), and lets each
 * connection with a request in progress finish: that request is answered
 * with "Connection: close" (an answer already queued before the shutdown
 * keeps its header), its output is flushed, then it is closed. A loop ends
 * when its last connection is gone; whatever is left when deadline_ms has
 * passed is closed as prg_server_stop would (PRG_CLOSE_SHUTDOWN). Calling it
 * again may only bring the deadline closer; prg_server_stop during the drain
 * stops at once. Returns 0, or -EINVAL for a negative deadline. */
int prg_server_shutdown(prg_server *s, int deadline_ms);
/* prg_server_shutdown for a server whose listening sockets another process
 * now serves too (a handoff): the same, except that an idle keep-alive
 * connection is not closed at once but kept idle_grace_ms for its next
 * request, which is answered with "Connection: close" (closing it at once
 * would race a request the client is sending: the client would see its
 * connection closed without an answer). Those still idle then are closed.
 * Returns 0, or -EINVAL for a negative argument. */
int prg_server_shutdown_handed_off(prg_server *s, int deadline_ms, int idle_grace_ms);
/* The descriptors of the server's listening sockets, one per loop (loops
 * sharing a socket give the same socket under different numbers): stores at
 * most max in fds and returns how many the server has; -EBADF once a drain
 * closed them. Valid until the server is shut down. */
int prg_server_listeners(const prg_server *s, int *fds, int max);
/* Waits for the loop threads to end (threaded engine: and every connection
 * thread, after its on_close). Returns 0 or -errno. */
int prg_server_wait(prg_server *s);
/* Closes everything and frees the server. Loops must have ended. */
void prg_server_destroy(prg_server *s);
/* The bound port (useful after port 0). */
int prg_server_port(const prg_server *s);
/* Makes loop loop_index run a batch (and so on_tick) soon: any thread,
 * async-signal-safe. 0, -EINVAL (no such loop), or -ENOTSUP (the blocking
 * and threaded engines have no loop to wake). */
int prg_server_wake(prg_server *s, int loop_index);
/* The backlog the kernel really uses: min(requested, somaxconn). */
int prg_server_effective_backlog(const prg_server *s);

/* ------------------------------------------------------------------ */
/* Writing answers (response.c). Only from inside a callback.           */
/* ------------------------------------------------------------------ */

/* Starts a response: status line, Server and Date. reason may be NULL
 * for the standard phrase. Returns 0, or -1 if a response is already
 * started or the status is outside 200..999 (interim 1xx answers are the
 * core's: 100 Continue is sent for Expect: 100-continue). */
int prg_respond(prg_conn *c, int status, const char *reason, size_t reason_len);
/* Adds a header. Returns -1 (and writes nothing) if the name is not an
 * RFC 9110 token or the value contains CR, LF or NUL, or the head is
 * already finished. A Content-Length header makes the body fixed-length;
 * without one the body is sent chunked (HTTP/1.1) or close-delimited (1.0).
 * Framing and keep-alive are the writer's: Transfer-Encoding is refused, and
 * Connection only with the value "close". */
int prg_write_header(prg_conn *c, const char *name, size_t name_len,
                     const char *value, size_t value_len);
/* Appends body bytes (ends the head on first call). Returns 0 or -1. */
int prg_write_body(prg_conn *c, const void *p, size_t n);
/* Appends length bytes of the open file fd, from offset, to the body
 * without copying them through user space: the send queue holds the range
 * in its place (after the bytes written before, before those written after)
 * and sends it with sendfile(2) when its turn comes. The response must have
 * declared a Content-Length with room for length bytes (a file range is
 * never chunked); the head is ended on first call, as prg_write_body does.
 *
 * Ownership: the call takes fd, whatever it returns. The queue closes it
 * once the range is sent, when the connection closes (a client that leaves
 * mid-file), or at once when nothing is to be sent (HEAD, 304, length 0) or
 * the call fails. The caller must not close or reuse fd afterwards; changing
 * the file meanwhile changes what is sent, and a file that turns out shorter
 * than length closes the connection (the answer can never be completed).
 * Returns 0, or -1 (fd already closed) when fd, offset or length is
 * negative, no Content-Length was declared or it has less room left than
 * length, the body is finished, the connection is closed, or memory ran
 * out. Pending file bytes count toward max_output like queued bytes. */
int prg_write_file(prg_conn *c, int fd, int64_t offset, int64_t length);
/* Finishes the response. Returns 0, or -1 if the body written does not
 * match the declared Content-Length (the connection is then closed). */
int prg_end(prg_conn *c);
/* One call: status, Content-Type (may be NULL), Content-Length, body, end. */
int prg_send(prg_conn *c, int status, const char *content_type, size_t content_type_len,
             const void *body, size_t n);
/* Status of the response being written or last written (0 if none). */
int prg_response_status(const prg_conn *c);
/* Takes back the response begun in the current callback (none of it has
 * left: nothing is sent while a callback runs) and answers status (400..599)
 * instead, with Connection: close. Returns 0, or -1 when no response was
 * begun in this callback, outside a callback, or for another status. */
int prg_response_replace(prg_conn *c, int status);

/* Queues bytes for sending (raw mode, or a banner from on_open). Returns 0,
 * or -1 if the connection is closing. Reads pause while more than max_output
 * bytes are queued. */
int prg_conn_write(prg_conn *c, const void *p, size_t n);
/* Closes after the queued output is sent. The connection is freed only
 * after the current callback returns. */
void prg_conn_close(prg_conn *c);
/* A number unique to the connection for the life of the server. */
uint64_t prg_conn_id(const prg_conn *c);
/* Bytes queued for sending on this connection (file ranges: what is left of them). */
size_t prg_conn_pending_output(const prg_conn *c);
/* Streamed request bodies (see on_head in prg_callbacks). Loop thread only.
 *
 * prg_body_stream, from on_head only: take this request's body as a stream;
 * `stream` is handed back to on_body and on_body_end. 100 Continue (when
 * asked for) goes out when the server first waits for body bytes, so not
 * while the stream is paused from on_head. Returns 0, or -1 (not in
 * on_head, or an answer was already started).
 *
 * prg_body_pause: stop taking body bytes: the rest stays in the receive
 * buffer (one block; it never grows while streaming), the connection stops
 * reading, and no timeout runs meanwhile (the application is the one late).
 * Returns 0, or -1 when the connection is not streaming, or on the blocking
 * and threaded engines, where a handler holds the body back by blocking in
 * on_body instead (there, bytes not taken are offered again at once).
 *
 * prg_body_resume: deliver what is held and read again. From any callback
 * of the connection's own loop (its own, or another connection's on the
 * same loop: it takes effect after the current batch). Returns 0, or -1
 * when the connection is not streaming. */
int prg_body_stream(prg_conn *c, void *stream);
int prg_body_pause(prg_conn *c);
int prg_body_resume(prg_conn *c);
/* Bytes of the connection's receive buffer (0 when it holds none). */
size_t prg_conn_receive_capacity(const prg_conn *c);

/* Application data slot. Kept outside the connection's idle memory:
 * setting a non-NULL value allocates a small record on first use (freed when
 * set back to NULL or on close). Returns 0, or -1 when out of memory (the
 * old value stays). */
void *prg_conn_userdata(const prg_conn *c);
int prg_conn_set_userdata(prg_conn *c, void *userdata);

/* ------------------------------------------------------------------ */
/* Answering later (offload.c): epoll and libev engines                 */
/* ------------------------------------------------------------------ */

/* A request whose answer comes later, from any thread. */
typedef struct prg_deferred prg_deferred;

/* From on_request (or, for a streamed body, from on_head, on_body, or
 * on_body_end(COMPLETE): see on_head; in on_head without prg_body_stream it
 * is an answer from the head), before
 * anything is written: this request will be answered later through the
 * returned handle, and the callback may return at once. The loop goes on serving (this connection's later pipelined
 * requests too: their answers wait behind this one, so answers leave in
 * request order). Every engine defers (blocking, threaded: the connection's
 * thread serves its client and the answers posted to it together, until the
 * owed ones are written). Returns NULL when an answer was already started,
 * or when memory ran out.
 *
 * Contract, enforced by the core: the answer is completed at most once
 * (prg_deferred_send), from any thread, and the handle is given back
 * exactly once (prg_deferred_release), after which it must not be used.
 * Until then the handle stays valid whatever happened on the loop's side
 * (connection closed, handler timeout, server stopped): a completion that
 * comes too late or a second time is refused by its return value, never a
 * use after free. A handle released without an answer answers 500. */
prg_deferred *prg_defer(prg_conn *c);
/* Adds a header to the deferred answer (before prg_deferred_send; from
 * the thread that holds the handle). The same rules as prg_write_header
 * apply when the answer is written: a refused header is left out. Returns
 * 0, -EINVAL (NULL handle, empty name, a NUL byte), -ENOMEM, or the
 * refusal prg_deferred_send would give (the answer is already decided). */
int prg_deferred_header(prg_deferred *d, const char *name, size_t name_len,
                        const char *value, size_t value_len);
/* Completes the deferred answer: status, the headers added, body (copied;
 * Content-Length is added unless a header gave one). Posts it to the
 * connection's loop, which writes it in order. Returns
 *    0            posted
 *   -EALREADY     the answer was already completed: this one is ignored
 *   -ETIMEDOUT    handler_timeout_s passed: the client got 503, this is dropped
 *   -ECONNRESET   the connection closed or the server stopped first: dropped
 *   -ENOMEM       no memory to copy the body (the client gets a 500)
 *   -EINVAL       NULL handle, or NULL body with n > 0
 *   other -errno  posted, but the loop's eventfd could not be written (it
 *                 is written only when the mailbox was empty; the answer
 *                 goes out at the loop's next wake-up)
 * The handle stays valid until prg_deferred_release. */
int prg_deferred_send(prg_deferred *d, int status, const void *body, size_t n);
/* Gives the handle back (once, from any thread, after which it must not be
 * used). Not yet answered: answers 500 first. Released after the head but
 * before prg_stream_end: the connection is closed after what was written
 * (the client sees a truncated body). NULL is ignored. */
void prg_deferred_release(prg_deferred *d);

/* Response streams: the same handle answered over time (any thread, one
 * at a time). The one-shot prg_deferred_send is a head, one write and an
 * end. Each operation is a state transition checked by the core:
 *     OPEN --prg_stream_head--> HEADED --prg_stream_write*--> --prg_stream_end--> ENDED
 * and the loop side may end it first (TIMED_OUT: no head within
 * handler_timeout_s, the client got 503; PEER_GONE: the connection closed).
 * Refusals, from the state, in O(1), never touching freed memory:
 *   -EPROTO      a write or end before the head
 *   -EALREADY    the head twice, or a write, trailer or end after the end
 *   -ECONNRESET  the peer is gone (or the server stopped)
 *   -ETIMEDOUT   the handler timeout answered 503 before the head
 *   -EMSGSIZE    a write beyond the declared Content-Length (refused, nothing
 *                queued), or an end short of it (posted; the connection is
 *                closed after the body, since the client would wait forever)
 *   -ENOMEM, -EINVAL (NULL handle, NULL data with n > 0)
 * Framing: a Content-Length header added with prg_deferred_header before
 * the head fixes the length; without one the body is chunked (HTTP/1.1,
 * trailers allowed) or ends with the connection (HTTP/1.0). The head goes
 * out as soon as it is rendered. Answers stay in request order: later
 * pipelined answers wait until the stream ended. While a stream is open and
 * nothing is queued, the idle timeout does not close its connection.
 *
 * Writability: the stream's level is its bytes posted but not yet handed
 * to the socket queue plus its bytes still queued there. A write that takes
 * it above the high mark is still accepted and returns PRG_STREAM_WAIT: the
 * producer should wait for on_writable, which the loop runs (on its
 * thread, once per PRG_STREAM_WAIT) when the level is back at the low mark,
 * and once when the peer went, whether a write waited or not (the next write
 * says -ECONNRESET), so a producer busy elsewhere learns to stop; also once
 * when the peer shut down its sending side while the answer is owed: most
 * clients that do that have left (nginx calls it a client abort), though
 * the answer may still be written. */
enum { PRG_STREAM_WAIT = 1 };
#define PRG_STREAM_LOW_WATER (64u * 1024u)
#define PRG_STREAM_HIGH_WATER (256u * 1024u)
enum { PRG_STREAM_OPEN = 0, PRG_STREAM_HEADED = 1, PRG_STREAM_ENDED = 2, PRG_STREAM_TIMED_OUT = 3,
       PRG_STREAM_PEER_GONE = 4 };
/* Sends the head: status and the headers added with prg_deferred_header. */
int prg_stream_head(prg_deferred *d, int status);
/* Copies n bytes and posts them: 0, PRG_STREAM_WAIT (accepted, above the
 * high mark), or a refusal above. */
int prg_stream_write(prg_deferred *d, const void *data, size_t n);
/* A trailer, sent by prg_stream_end when the body is chunked (left out
 * otherwise). After the head, before the end. */
int prg_stream_trailer(prg_deferred *d, const char *name, size_t name_len,
                       const char *value, size_t value_len);
/* Ends the answer (the last chunk and the trailers when chunked). */
int prg_stream_end(prg_deferred *d);
/* The callback run on the loop's thread when a producer told to wait may
 * write again. It must not block or release the handle; it may write.
 * NULL stops it; prg_deferred_release stops it and waits for a run in
 * progress, so ctx may be freed after the release. */
void prg_stream_on_writable(prg_deferred *d, void (*fn)(void *ctx), void *ctx);
/* The marks (before the head; low <= high, high > 0): 0, -EINVAL, -EALREADY. */
int prg_stream_set_watermarks(prg_deferred *d, size_t low, size_t high);
/* The level now (bytes), and the state (PRG_STREAM_*, or -EINVAL). */
size_t prg_stream_queued(prg_deferred *d);
int prg_stream_state(prg_deferred *d);

/* ------------------------------------------------------------------ */
/* The client's address and the PROXY protocol (proxy.c)                */
/* ------------------------------------------------------------------ */

enum { PRG_ADDR_NONE = 0, PRG_ADDR_IPV4 = 4, PRG_ADDR_IPV6 = 6 };

/* An IP address and port, 20 bytes, nothing to free. */
typedef struct prg_address {
    uint8_t family;      /* PRG_ADDR_* */
    uint8_t bytes[16];   /* network order; IPv4 uses the first 4 */
    uint16_t port;       /* host order */
} prg_address;

/* The client's address: the peer recorded at accept (an IPv4 client of a
 * dual-stack listener as IPv4), or the source a PROXY header gave. Returns
 * 0, or -1 when none is known (a NULL argument, or a peer that is not IP). */
int prg_conn_remote_address(const prg_conn *c, prg_address *out);

/* A v1 header is at most this long, CRLF included (the spec's limit). */
#define PRG_PROXY_V1_MAX_BYTES 107
/* A v2 header (16 bytes, addresses, TLVs) longer than this is refused: it
 * fits one receive block. */
#define PRG_PROXY_MAX_BYTES 16384

/* Decodes the PROXY header (v1 or v2) at the start of buf[0..len).
 * Returns
 *   > 0  the header is complete and used that many bytes; *source is the
 *        client's address, or family PRG_ADDR_NONE when the real peer
 *        address stands (v1 UNKNOWN, v2 LOCAL, UNSPEC or UNIX);
 *   0    more bytes are needed (what is there is a valid beginning);
 *   -1   not a valid PROXY header (the connection must close).
 * Splitting the same bytes at any offset over several calls gives the
 * same result. */
int64_t prg_proxy_parse(const uint8_t *buf, size_t len, prg_address *source);

/* ------------------------------------------------------------------ */
/* Handing listening sockets to a new process (handoff.c)               */
/* ------------------------------------------------------------------ */

/* A restart that drops nothing: the running process offers its listening
 * sockets on a Unix socket; a new one fetches them (SCM_RIGHTS), serves them,
 * and confirms; the old one then drains. Both accept from the same kernel
 * queues meanwhile, so nothing queued is reset when the old one closes its
 * copies. Only a peer of the same user (SO_PEERCRED) is served, and only a
 * server of the same user is believed. name: "@x" is the abstract socket
 * "x", anything else a filesystem path (the offer unlinks it when done). */
typedef struct prg_handoff prg_handoff;

#define PRG_HANDOFF_MAX_FDS 253   /* SCM_MAX_FD: one message carries them all */

/* New process. Returns the number of listening sockets received (> 0),
 * stored in fds, with *session set to the connection to hand to
 * prg_handoff_confirm; 0 when nobody offers at name (bind as usual);
 * -EACCES when the peer is another user (or refused us as one), -EPROTO
 * when it does not speak the protocol, -E2BIG when it has more than max,
 * -ETIMEDOUT, or -errno. */
int prg_handoff_fetch(const char *name, int *fds, int max, int *session, int timeout_ms);
/* New process, once it serves the fetched sockets: tells the old one, waits
 * until it has stopped offering (so name is free to offer again) and closes
 * session. 0, -EPROTO (it went away first), -ETIMEDOUT or -errno. */
int prg_handoff_confirm(int session, int timeout_ms);
/* Serving process: offers dup()s of fds at name from a thread of its own,
 * until a new process confirmed or prg_handoff_close. A peer of another user
 * is refused; a peer that fetched and went away without confirming leaves
 * the offer standing. Returns 0 with *out set, -EADDRINUSE when another
 * process offers at name, -E2BIG (more than PRG_HANDOFF_MAX_FDS), -errno. */
int prg_handoff_offer(const char *name, const int *fds, int n, prg_handoff **out);
/* 1 once a new process confirmed (it serves the sockets), else 0. */
int prg_handoff_taken(prg_handoff *h);
/* Stops offering: joins the thread, closes the copies and the socket. Returns
 * prg_handoff_taken. Call it before a shutdown closes the listeners (the
 * copies would keep an untaken socket listening with nobody accepting). */
int prg_handoff_close(prg_handoff *h);

/* Standard reason phrase for a status ("Unknown" if none). */
const char *prg_status_reason(int status);

#ifdef __cplusplus
}
#endif
#endif /* PEREGRINE_H */
