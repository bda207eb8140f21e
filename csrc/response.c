/*
 * response.c: the response writer. Appends straight into the connection's
 * send queue: status line, Server and Date (formatted once per second per
 * loop), application headers, then the body framed by Content-Length,
 * chunked encoding (HTTP/1.1) or connection close (HTTP/1.0).
 */
#define _GNU_SOURCE
#include "internal.h"

#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------ Date */

void prg_date_refresh(prg_date_cache *d, time_t now) {
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct tm tm;
    if (d->second == now && d->len) return;
    gmtime_r(&now, &tm);
    char *p = d->line;
    memcpy(p, "Date: ", 6); p += 6;
    memcpy(p, days[tm.tm_wday], 3); p += 3;
    *p++ = ','; *p++ = ' ';
    *p++ = (char)('0' + tm.tm_mday / 10); *p++ = (char)('0' + tm.tm_mday % 10);
    *p++ = ' ';
    memcpy(p, months[tm.tm_mon], 3); p += 3;
    *p++ = ' ';
    int year = tm.tm_year + 1900;
    p[0] = (char)('0' + year / 1000 % 10); p[1] = (char)('0' + year / 100 % 10);
    p[2] = (char)('0' + year / 10 % 10); p[3] = (char)('0' + year % 10); p += 4;
    *p++ = ' ';
    *p++ = (char)('0' + tm.tm_hour / 10); *p++ = (char)('0' + tm.tm_hour % 10); *p++ = ':';
    *p++ = (char)('0' + tm.tm_min / 10); *p++ = (char)('0' + tm.tm_min % 10); *p++ = ':';
    *p++ = (char)('0' + tm.tm_sec / 10); *p++ = (char)('0' + tm.tm_sec % 10);
    memcpy(p, " GMT\r\n", 6); p += 6;
    d->len = (size_t)(p - d->line);
    d->second = now;
}

/* ----------------------------------------------------------- validation */

/* RFC 9110 tchar. */
static const uint8_t token_char[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1,
    ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1, ['~'] = 1,
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1,
    ['8'] = 1, ['9'] = 1,
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1,
    ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1,
    ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,
    ['Y'] = 1, ['Z'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1,
    ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1,
    ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
    ['y'] = 1, ['z'] = 1,
};

static bool is_token(const char *s, size_t n) {
    if (n == 0) return false;
    for (size_t i = 0; i < n; i++)
        if (!token_char[(uint8_t)s[i]]) return false;
    return true;
}

/* Header values and reason phrases: no CR, LF or NUL (response splitting).
 * Eight bytes a step (the last step may overlap the one before) while none
 * of them is below 0x0E (those three are); a flagged word is checked byte by
 * byte. */
static bool unsafe_byte(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint8_t ch = (uint8_t)s[i];
        if (ch == '\r' || ch == '\n' || ch == 0) return true;
    }
    return false;
}

static inline bool below_0e(const char *s) {
    uint64_t x;
    memcpy(&x, s, 8);
    return ((x - 0x0E0E0E0E0E0E0E0Eull) & ~x & 0x8080808080808080ull) != 0;
}

static bool is_safe_text(const char *s, size_t n) {
    if (n < 8) return !unsafe_byte(s, n);
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        if (below_0e(s + i) && unsafe_byte(s + i, 8)) return false;
    return i == n || !below_0e(s + n - 8) || !unsafe_byte(s + n - 8, 8);
}

/* memcpy for the short variable lengths of a response head (a content type,
 * a small body): word moves, no call. */
static inline void copy_short(uint8_t *dst, const void *src, size_t n) {
    const uint8_t *s = src;
    if (n > 32) {
        memcpy(dst, s, n);
    } else if (n >= 8) {
        uint64_t w;
        for (size_t i = 0; i + 8 < n; i += 8) {
            memcpy(&w, s + i, 8);
            memcpy(dst + i, &w, 8);
        }
        memcpy(&w, s + n - 8, 8);
        memcpy(dst + n - 8, &w, 8);
    } else {
        for (size_t i = 0; i < n; i++) dst[i] = s[i];
    }
}

/* a and b equal over n <= PRG_SEND_CT_MAX bytes: word compares, no call. */
static inline bool eq_short(const void *a, const void *b, size_t n) {
    const uint8_t *x = a, *y = b;
    if (n < 8) {
        for (size_t i = 0; i < n; i++)
            if (x[i] != y[i]) return false;
        return true;
    }
    uint64_t u, v;
    for (size_t i = 0; i + 8 < n; i += 8) {
        memcpy(&u, x + i, 8);
        memcpy(&v, y + i, 8);
        if (u != v) return false;
    }
    memcpy(&u, x + n - 8, 8);
    memcpy(&v, y + n - 8, 8);
    return u == v;
}

static bool ieq(const char *a, size_t an, const char *lit) {
    size_t ln = strlen(lit);
    if (an != ln) return false;
    for (size_t i = 0; i < an; i++) {
        char x = a[i];
        if (x >= 'A' && x <= 'Z') x = (char)(x + 32);
        if (x != lit[i]) return false;
    }
    return true;
}

/* True when the comma-separated value holds the token (case-insensitive). */
static bool has_token(const char *v, size_t n, const char *tok) {
    size_t i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ',')) i++;
        size_t start = i;
        while (i < n && v[i] != ',') i++;
        size_t end = i;
        while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t')) end--;
        if (ieq(v + start, end - start, tok)) return true;
    }
    return false;
}

/* ---------------------------------------------------------------- writer */

static size_t put_uint(char *out, uint64_t v) {
    if (v < 100) {   /* the usual small body: no loop */
        if (v < 10) {
            out[0] = (char)('0' + v);
            return 1;
        }
        out[0] = (char)('0' + v / 10);
        out[1] = (char)('0' + v % 10);
        return 2;
    }
    char tmp[20];
    size_t n = 0;
    do { tmp[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    for (size_t i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
    return n;
}

static bool status_has_no_body(int status) {
    return (status >= 100 && status < 200) || status == 204 || status == 304;
}

/* The loop's "HTTP/1.1 200 OK" + Server + Date prefix, current. */
static const char *head_200(prg_loop *loop) {
    if (loop->head_200_len == 0 || loop->head_200_second != loop->date.second) {
        char *p = loop->head_200;
        memcpy(p, "HTTP/1.1 200 OK\r\n", 17);
        memcpy(p + 17, loop->server_line, loop->server_line_len);
        memcpy(p + 17 + loop->server_line_len, loop->date.line, loop->date.len);
        loop->head_200_len = 17 + loop->server_line_len + loop->date.len;
        loop->head_200_second = loop->date.second;
    }
    return loop->head_200;
}

/* The loop's send_head for this (checked) Content-Type of at most
 * PRG_SEND_CT_MAX bytes, after head_200 was made current (begin_status):
 * rebuilt when the type or the Date changed. */
static const char *send_head(prg_loop *loop, const char *ct, size_t ct_len, bool same_ct) {
    if (same_ct && loop->send_head_len && loop->send_head_second == loop->head_200_second)
        return loop->send_head;
    char *p = loop->send_head;
    memcpy(p, loop->head_200, loop->head_200_len);
    size_t at = loop->head_200_len;
    memcpy(p + at, "Content-Type: ", 14);
    memcpy(p + at + 14, ct, ct_len);
    at += 14 + ct_len;
    memcpy(p + at, "\r\nContent-Length: ", 18);
    loop->send_head_len = at + 18;
    loop->send_head_second = loop->head_200_second;
    memcpy(loop->send_ct, ct, ct_len);
    loop->send_ct_len = ct_len;
    return loop->send_head;
}

/* Checks that a final answer may begin, marks where it begins (for
 * prg_response_replace) and returns the room its status line, Server and
 * Date lines take (see put_status), or 0 when it may not begin. */
static inline size_t begin_status(prg_conn *c, int status, const char **reason, size_t *reason_len) {
    /* 1xx are interim answers: taking one as the final answer would pair
     * every later response on the connection with the wrong request. */
    if (c->resp_state != RESP_NONE || status < 200 || status > 999) return 0;
    prg_loop *loop = c->loop;
    if (!*reason) {
        if (status == 200) {
            *reason_len = 0;
            (void)head_200(loop);
        } else {
            *reason = prg_status_reason(status);
            *reason_len = strlen(*reason);
        }
    } else if (!is_safe_text(*reason, *reason_len)) {
        return 0;
    }
    if (c->flags & CONN_IN_CALLBACK) {
        loop->resp_mark_conn = c;
        loop->resp_mark_chunk = c->out_tail;
        loop->resp_mark_end = c->out_tail ? c->out_tail->end : 0;
        c->resp_flags |= RESP_MARKED;
    }
    if (!*reason) return loop->head_200_len;
    return 13 + *reason_len + 2 + loop->server_line_len + loop->date.len;
}

/* Writes what begin_status sized; returns its length. */
static size_t put_status(prg_conn *c, uint8_t *p, int status, const char *reason, size_t reason_len) {
    prg_loop *loop = c->loop;
    c->resp_status = (uint16_t)status;
    c->resp_state = RESP_HEAD;
    if (status_has_no_body(status)) c->resp_flags |= RESP_NO_BODY;
    if (!reason) {
        memcpy(p, loop->head_200, loop->head_200_len);
        return loop->head_200_len;
    }
    memcpy(p, "HTTP/1.1 ", 9);
    p[9] = (uint8_t)('0' + status / 100);
    p[10] = (uint8_t)('0' + status / 10 % 10);
    p[11] = (uint8_t)('0' + status % 10);
    p[12] = ' ';
    memcpy(p + 13, reason, reason_len);
    size_t at = 13 + reason_len;
    p[at++] = '\r';
    p[at++] = '\n';
    memcpy(p + at, loop->server_line, loop->server_line_len);
    at += loop->server_line_len;
    memcpy(p + at, loop->date.line, loop->date.len);
    return at + loop->date.len;
}

/* Status line plus the Server and Date lines, in one reservation. */
static int write_status(prg_conn *c, int status, const char *reason, size_t reason_len) {
    size_t need = begin_status(c, status, &reason, &reason_len);
    if (!need) return -1;
    uint8_t *p = prg_out_reserve(c, need);
    if (!p) return -1;
    prg_out_commit(c, put_status(c, p, status, reason, reason_len));
    return 0;
}

/* The keep-alive decision and the Connection header it owes (none when the
 * application wrote its own "close"): a request that did not ask to stay
 * open, or a response that must end the connection, closes. HTTP/1.0
 * keep-alive must be confirmed. Writes at most 24 bytes to out. */
static size_t put_connection(prg_conn *c, char *out) {
    /* A graceful shutdown began while the request was parsed or its handler
     * ran (another thread, or a handler that blocks): it is the last one. */
    bool closing = !c->req_keep_alive || (c->flags & CONN_CLOSE_AFTER) ||
                   atomic_load_explicit(&c->loop->server->drain, memory_order_relaxed);
    /* A streamed body still arriving is read to its end first (conn.c closes
     * after it, from req_keep_alive). */
    if (closing && (c->flags & CONN_STREAMING)) c->req_keep_alive = 0;
    else if (closing) c->flags |= CONN_CLOSE_AFTER;
    if (c->resp_flags & RESP_CONN_HDR) return 0;
    if (closing) {
        memcpy(out, "Connection: close\r\n", 19);
        return 19;
    }
    if (c->req_minor == 0) {
        memcpy(out, "Connection: keep-alive\r\n", 24);
        return 24;
    }
    return 0;
}

/* Framing, Connection and the blank line. */
static int end_head(prg_conn *c) {
    char buf[64];
    size_t n = 0;
    bool body_allowed = !status_has_no_body(c->resp_status);
    if (!(c->resp_flags & RESP_HAS_LENGTH) && body_allowed && !(c->resp_flags & RESP_NO_BODY)) {
        if (c->req_minor >= 1) {
            memcpy(buf, "Transfer-Encoding: chunked\r\n", 28);
            n = 28;
            c->resp_flags |= RESP_CHUNKED;
        } else {
            c->flags |= CONN_CLOSE_AFTER;   /* HTTP/1.0 without a length: the close ends the body */
        }
    }
    n += put_connection(c, buf + n);
    buf[n++] = '\r';
    buf[n++] = '\n';
    if (prg_out_append(c, buf, n) != 0) return -1;
    c->resp_state = RESP_BODY;
    return 0;
}

int prg_respond(prg_conn *c, int status, const char *reason, size_t reason_len) {
    if (c->flags & CONN_CLOSED) return -1;
    return write_status(c, status, reason, reason_len);
}

int prg_write_header(prg_conn *c, const char *name, size_t name_len, const char *value,
                     size_t value_len) {
    if (c->resp_state != RESP_HEAD) return -1;
    if (!is_token(name, name_len) || !is_safe_text(value, value_len)) return -1;
    /* Framing is the writer's job: the application declares a length or
     * lets the writer chunk, but never frames by hand. */
    if (ieq(name, name_len, "transfer-encoding")) return -1;
    if (ieq(name, name_len, "content-length")) {
        if (c->resp_flags & RESP_HAS_LENGTH || value_len == 0 || value_len > 18 || c->resp_status == 204)
            return -1;
        int64_t v = 0;
        for (size_t i = 0; i < value_len; i++) {
            if (value[i] < '0' || value[i] > '9') return -1;
            v = v * 10 + (value[i] - '0');
        }
        c->resp_flags |= RESP_HAS_LENGTH;
        c->resp_length_left = v;
    } else if (ieq(name, name_len, "connection")) {
        /* Keep-alive is the writer's decision; the application may only ask
         * to close (a "keep-alive" it wrote could contradict a close the
         * writer decides later). */
        if ((c->resp_flags & RESP_CONN_HDR) || !has_token(value, value_len, "close")) return -1;
        c->resp_flags |= RESP_CONN_HDR;
        c->req_keep_alive = 0;
    }
    uint8_t *p = prg_out_reserve(c, name_len + value_len + 4);
    if (!p) return -1;
    memcpy(p, name, name_len);
    p[name_len] = ':';
    p[name_len + 1] = ' ';
    memcpy(p + name_len + 2, value, value_len);
    p[name_len + 2 + value_len] = '\r';
    p[name_len + 3 + value_len] = '\n';
    prg_out_commit(c, name_len + value_len + 4);
    return 0;
}

int prg_write_body(prg_conn *c, const void *data, size_t n) {
    if (c->resp_state == RESP_HEAD && end_head(c) != 0) return -1;
    if (c->resp_state != RESP_BODY) return -1;
    if (n > (size_t)INT64_MAX) return -1;
    if (c->resp_flags & RESP_HAS_LENGTH) {
        if ((int64_t)n > c->resp_length_left) return -1;
        c->resp_length_left -= (int64_t)n;
    }
    if (c->resp_flags & RESP_NO_BODY || n == 0) return 0;
    if (c->resp_flags & RESP_CHUNKED) {
        static const char hex[] = "0123456789abcdef";
        char line[20];
        size_t len = 0;
        char tmp[16];
        size_t t = 0;
        size_t v = n;
        do { tmp[t++] = hex[v & 15]; v >>= 4; } while (v);
        while (t) line[len++] = tmp[--t];
        line[len++] = '\r';
        line[len++] = '\n';
        if (prg_out_append(c, line, len) != 0 || prg_out_append(c, data, n) != 0 ||
            prg_out_append(c, "\r\n", 2) != 0)
            return -1;
        return 0;
    }
    return prg_out_append(c, data, n);
}

int prg_write_file(prg_conn *c, int fd, int64_t offset, int64_t length) {
    /* The descriptor is the queue's from here on, whatever happens: every
     * refusal below closes it, so a caller never has to guess. */
    bool ok = fd >= 0 && offset >= 0 && length >= 0 && !(c->flags & CONN_CLOSED) &&
              (c->resp_state == RESP_HEAD || c->resp_state == RESP_BODY) &&
              (c->resp_flags & RESP_HAS_LENGTH) && length <= c->resp_length_left &&
              !(c->resp_flags & RESP_CHUNKED);
    if (ok && c->resp_state == RESP_HEAD && end_head(c) != 0) ok = false;
    if (!ok) {
        if (fd >= 0) (void)close(fd);
        return -1;
    }
    c->resp_length_left -= length;
    if ((c->resp_flags & RESP_NO_BODY) || length == 0) {
        (void)close(fd);   /* HEAD, 304: the length was declared, no byte is sent */
        return 0;
    }
    return prg_out_append_file(c, fd, offset, length);
}

int prg_end(prg_conn *c) {
    if (c->resp_state == RESP_HEAD) {
        if (!(c->resp_flags & RESP_HAS_LENGTH) && !status_has_no_body(c->resp_status) &&
            !(c->resp_flags & RESP_NO_BODY)) {
            /* Nothing was written: an empty fixed-length body beats a chunked one. */
            if (prg_write_header(c, "Content-Length", 14, "0", 1) != 0) return -1;
        }
        if (end_head(c) != 0) return -1;
    }
    if (c->resp_state != RESP_BODY) return -1;
    c->resp_state = RESP_DONE;
    if (c->resp_flags & RESP_CHUNKED) return prg_out_append(c, "0\r\n\r\n", 5);
    if ((c->resp_flags & RESP_HAS_LENGTH) && c->resp_length_left != 0 &&
        !(c->resp_flags & RESP_NO_BODY)) {
        /* The body is shorter than declared: the client would wait for the
         * rest forever, so the only honest end is closing the connection. */
        c->flags |= CONN_CLOSE_AFTER;
        c->close_reason = PRG_CLOSE_ERROR;
        return -1;
    }
    return 0;
}

/* A body up to this size goes into the head's reservation (one copy, one
 * reservation); a larger one is appended after it. */
#define PRG_SEND_INLINE_BODY 1024

int prg_send(prg_conn *c, int status, const char *content_type, size_t content_type_len,
             const void *body, size_t n) {
    if (c->flags & CONN_CLOSED) return -1;
    prg_loop *loop = c->loop;
    /* The type the loop's send_head holds was checked when it was kept. */
    bool same_ct = status == 200 && content_type && content_type_len == loop->send_ct_len &&
                   eq_short(content_type, loop->send_ct, content_type_len);
    if (content_type && !same_ct && !is_safe_text(content_type, content_type_len)) return -1;
    const char *reason = NULL;
    size_t reason_len = 0;
    size_t head = begin_status(c, status, &reason, &reason_len);
    if (!head) return -1;
    bool body_allowed = !status_has_no_body(status);
    bool body_sent = body_allowed && !(c->resp_flags & RESP_NO_BODY) && n > 0;
    bool inline_body = body_sent && n <= PRG_SEND_INLINE_BODY;
    /* The usual answer (200, a short type) starts from the loop's prebuilt
     * head, up to "Content-Length: ". */
    const char *prebuilt = status == 200 && content_type && content_type_len <= PRG_SEND_CT_MAX
                               ? send_head(loop, content_type, content_type_len, same_ct)
                               : NULL;
    /* Status line, Server, Date, Content-Type, Content-Length, Connection
     * (and a small body) in one reservation. */
    size_t need = prebuilt ? loop->send_head_len + 20 + 2 + 24 + 2 + (inline_body ? n : 0)
                           : head + (content_type ? 16 + content_type_len : 0) + 16 + 20 + 2 + 24 + 2 +
                                 (inline_body ? n : 0);
    uint8_t *p = prg_out_reserve(c, need);
    if (!p) return -1;
    size_t at;
    if (prebuilt) {
        c->resp_status = 200;
        c->resp_state = RESP_HEAD;
        memcpy(p, prebuilt, loop->send_head_len);
        at = loop->send_head_len;
        at += put_uint((char *)p + at, n);
        p[at++] = '\r';
        p[at++] = '\n';
    } else {
        at = put_status(c, p, status, reason, reason_len);
        if (content_type) {
            memcpy(p + at, "Content-Type: ", 14);
            copy_short(p + at + 14, content_type, content_type_len);
            at += 14 + content_type_len;
            p[at++] = '\r';
            p[at++] = '\n';
        }
        if (body_allowed) {
            memcpy(p + at, "Content-Length: ", 16);
            at += 16;
            at += put_uint((char *)p + at, n);
            p[at++] = '\r';
            p[at++] = '\n';
        }
    }
    at += put_connection(c, (char *)p + at);
    p[at++] = '\r';
    p[at++] = '\n';
    if (inline_body) {
        copy_short(p + at, body, n);
        at += n;
    }
    prg_out_commit(c, at);
    c->resp_state = RESP_DONE;
    if (body_sent && !inline_body) return prg_out_append(c, body, n);
    return 0;
}

int prg_response_status(const prg_conn *c) { return c->resp_status; }

int prg_response_replace(prg_conn *c, int status) {
    const prg_loop *loop = c->loop;
    if ((c->flags & (CONN_CLOSED | CONN_IN_CALLBACK)) != CONN_IN_CALLBACK || !(c->resp_flags & RESP_MARKED) ||
        loop->resp_mark_conn != c || status < 400 || status > 599)
        return -1;
    /* Cut the send queue back to where the response began. */
    prg_chunk *keep = loop->resp_mark_chunk;
    prg_chunk *cut = keep ? keep->next : c->out_head;
    size_t removed = 0;
    if (keep) {
        removed = keep->end - loop->resp_mark_end;
        keep->end = loop->resp_mark_end;
        keep->next = NULL;
        c->out_tail = keep;
    } else {
        c->out_head = c->out_tail = NULL;
    }
    /* A file link counts its range (its own end and cap are 0). */
    for (prg_chunk *k = cut; k; k = k->next)
        removed += k->is_file ? (size_t)((prg_file_range *)(void *)k->data)->left : k->end - k->start;
    if (cut) prg_chunks_release(c->loop, cut);
    c->out_bytes -= removed;
    c->resp_status = 0;
    return prg_send_error(c, status);
}

int prg_response_finish_default(prg_conn *c) {
    if (c->flags & CONN_CLOSED) return -1;
    switch (c->resp_state) {
    case RESP_NONE: {
        /* The application closed the connection instead of answering. */
        if (c->close_reason == PRG_CLOSE_APP && (c->flags & CONN_CLOSE_AFTER)) return 0;
        /* The handler returned without answering: say so rather than hang. */
        static const char msg[] = "handler did not respond\n";
        return prg_send(c, 500, "text/plain", 10, msg, sizeof msg - 1);
    }
    case RESP_HEAD:
    case RESP_BODY:
        return prg_end(c);
    default:
        return 0;
    }
}

int prg_send_error(prg_conn *c, int status) {
    char body[64];
    const char *reason = prg_status_reason(status);
    size_t len = strlen(reason);
    if (len > sizeof body - 2) len = sizeof body - 2;
    memcpy(body, reason, len);
    body[len++] = '\n';
    c->resp_state = RESP_NONE;
    c->resp_flags = 0;
    c->req_minor = 1;
    c->req_keep_alive = 0;   /* every error answer closes the connection */
    return prg_send(c, status, "text/plain", 10, body, len);
}

int prg_send_continue(prg_conn *c) {
    static const char line[] = "HTTP/1.1 100 Continue\r\n\r\n";
    return prg_out_append(c, line, sizeof line - 1);
}
