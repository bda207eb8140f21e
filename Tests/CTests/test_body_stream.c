/*
 * test_body_stream.c: the streamed-body step of the parser (csrc/http1.c):
 * prg_http_head_view and prg_http_body_next. Standalone, like test_http1.c
 * (make test-c runs both under ASan/UBSan).
 *
 * Each case is a request with a body and what may follow it. The head is
 * parsed alone (as conn.c does before on_head), then the rest is fed to
 * prg_http_body_next whole, split in two at every offset, and one byte at a
 * time. Every call gets a fresh allocation exactly as long as the bytes not
 * used yet (ASan catches a read past them or a kept pointer). All feeds must
 * give the same decoded body, the same final result and the same bytes left
 * after the body.
 */
#include "peregrine.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct bcase {
    const char *name;
    const char *raw;     /* head + body + what follows */
    size_t raw_len;
    size_t max_body;     /* 0: default */
    const char *body;    /* decoded body expected (before the error, if any) */
    int status;          /* 0: body complete; else the error status expected */
    size_t left;         /* bytes after the body (status 0) */
} bcase;

#define RAW(s) .raw = (s), .raw_len = sizeof(s) - 1

static const bcase cases[] = {
    {"content-length, next request after it",
     RAW("POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123456789GET / HTTP/1.1\r\n\r\n"),
     0, "0123456789", 0, 18},
    {"chunked with extension and trailer, bytes after it",
     RAW("POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
         "5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nT: v\r\n\r\nXYZ"),
     0, "hello world", 0, 3},
    {"chunked, bad chunk size after a good chunk",
     RAW("POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n"),
     0, "hello", 400, 0},
    {"chunked over the streamed limit at the second chunk",
     RAW("POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n"),
     8, "hello", 413, 0},
    {"chunked exactly at the streamed limit",
     RAW("POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n"),
     10, "helloworld", 0, 0},
    {"content-length over the streamed limit",
     RAW("POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\nabc"),
     50, "", 413, 0},
    {"bad trailer field",
     RAW("POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nBad Trailer: x\r\n\r\n"),
     0, "a", 400, 0},
    {"chunk data without its CRLF",
     RAW("POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n"),
     0, "abc", 400, 0},
};

static int g_failed;

#define CHECK(cond, ...)                                  \
    do {                                                  \
        if (!(cond)) {                                    \
            printf("FAIL %s: ", c->name);                 \
            printf(__VA_ARGS__);                          \
            printf("\n");                                 \
            g_failed = 1;                                 \
        }                                                 \
    } while (0)

typedef struct outcome {
    char body[256];
    size_t body_len;
    int status;     /* 0 complete, -1 still incomplete at the end, else error */
    size_t left;
} outcome;

/* Feeds raw[from..len) in pieces of `step` (0: whole; else the first piece
 * is `step` bytes and the rest follows whole, or step 1: byte by byte). */
static void feed(const bcase *c, prg_http_parser p, const prg_http_limits *lim, size_t from, size_t split,
                 int bytewise, outcome *out) {
    uint8_t *pending = NULL;
    size_t plen = 0, pos = from;
    memset(out, 0, sizeof *out);
    out->status = -1;
    for (;;) {
        size_t add = c->raw_len - pos;
        if (bytewise && add > 1) add = 1;
        if (split && pos == from && add > split) add = split;
        /* A fresh buffer exactly as long as the bytes not used yet. */
        uint8_t *buf = malloc(plen + add + 1);
        if (!buf) abort();
        if (plen) memcpy(buf, pending, plen);
        memcpy(buf + plen, c->raw + pos, add);
        free(pending);
        pos += add;
        size_t len = plen + add;
        size_t decoded = 0;
        int done = 0;
        int64_t used = prg_http_body_next(&p, buf, len, lim, &decoded, &done);
        if (used < 0) {
            out->status = (int)-used;
            free(buf);
            return;
        }
        if ((size_t)used > len || decoded > (size_t)used) {
            CHECK(0, "used %lld decoded %zu of %zu", (long long)used, decoded, len);
            free(buf);
            return;
        }
        if (out->body_len + decoded <= sizeof out->body) memcpy(out->body + out->body_len, buf, decoded);
        out->body_len += decoded;
        plen = len - (size_t)used;
        pending = malloc(plen + 1);
        if (!pending) abort();
        memcpy(pending, buf + used, plen);
        free(buf);
        if (done) {
            out->status = 0;
            out->left = plen + (c->raw_len - pos);
            free(pending);
            return;
        }
        if (pos == c->raw_len && decoded == 0) {
            /* No more input: one more call only if an error was held back. */
            size_t d2 = 0;
            int done2 = 0;
            int64_t r2 = prg_http_body_next(&p, pending, plen, lim, &d2, &done2);
            if (r2 < 0) out->status = (int)-r2;
            free(pending);
            return;
        }
    }
}

static void run(const bcase *c) {
    prg_http_limits lim;
    prg_http_limits_default(&lim);
    if (c->max_body) lim.max_body = c->max_body;
    /* The head alone, as conn.c parses it before on_head. */
    const char *end = strstr(c->raw, "\r\n\r\n");
    size_t head_len = (size_t)(end - c->raw) + 4;
    prg_http_parser p;
    prg_http_parser_reset(&p);
    prg_http_limits head_lim;
    prg_http_limits_default(&head_lim);
    head_lim.max_body = SIZE_MAX / 4;
    prg_request req;
    prg_header headers[100];
    uint8_t *head = malloc(head_len);
    if (!head) abort();
    memcpy(head, c->raw, head_len);
    int64_t r = prg_http_parse(&p, head, head_len, &head_lim, &req, headers);
    CHECK(r == 0 && prg_http_head_complete(&p), "head: parse returned %lld", (long long)r);
    int v = prg_http_head_view(&p, head, head_len, &head_lim, &req, headers);
    CHECK(v == 0 && req.method.len == 4 && memcmp(req.method.ptr, "POST", 4) == 0 && req.body.len == 0 &&
              req.header_count == 2,
          "head view: %d", v);
    free(head);

    outcome ref;
    feed(c, p, &lim, head_len, 0, 0, &ref);
    size_t want_len = strlen(c->body);
    CHECK(ref.status == c->status, "whole: status %d, want %d", ref.status, c->status);
    CHECK(ref.body_len == want_len && memcmp(ref.body, c->body, want_len) == 0, "whole: body %.*s", (int)ref.body_len,
          ref.body);
    if (c->status == 0) CHECK(ref.left == c->left, "whole: left %zu, want %zu", ref.left, c->left);
    size_t rest = c->raw_len - head_len;
    for (size_t split = 1; split <= rest; split++) {
        outcome o;
        feed(c, p, &lim, head_len, split, 0, &o);
        CHECK(o.status == ref.status && o.body_len == ref.body_len && memcmp(o.body, ref.body, o.body_len) == 0 &&
                  o.left == ref.left,
              "split at %zu differs: status %d body %zu left %zu", split, o.status, o.body_len, o.left);
    }
    outcome b;
    feed(c, p, &lim, head_len, 0, 1, &b);
    CHECK(b.status == ref.status && b.body_len == ref.body_len && memcmp(b.body, ref.body, b.body_len) == 0 &&
              b.left == ref.left,
          "byte by byte differs: status %d body %zu left %zu", b.status, b.body_len, b.left);
}

int main(void) {
    size_t passed = 0, failed = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        g_failed = 0;
        run(&cases[i]);
        if (g_failed) failed++;
        else passed++;
    }
    /* Misuse says so: no head yet. */
    {
        prg_http_parser p;
        prg_http_parser_reset(&p);
        uint8_t x = 0;
        size_t d = 0;
        int done = 0;
        if (prg_http_body_next(&p, &x, 1, NULL, &d, &done) != -500) {
            printf("FAIL body_next before the head is not -500\n");
            failed++;
        } else {
            passed++;
        }
    }
    printf("body stream: %zu passed, %zu failed\n", passed, failed);
    return failed ? 1 : 0;
}
