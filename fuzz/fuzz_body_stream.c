/*
 * fuzz_body_stream.c: libFuzzer harness for the streamed-body step of the
 * parser (prg_http_body_next after prg_http_head_view).
 *
 *   make fuzz-body   (FUZZ_SECONDS=60)
 *
 * The first input byte picks the framing (chunked or a Content-Length taken
 * from the next byte) and a streamed limit; the rest is the raw body. The
 * body is fed whole, split in two at a position derived from the data, and
 * (small inputs) one byte at a time, each call on a fresh allocation of
 * exactly the bytes not used yet. All feeds must agree on the decoded body,
 * the final result and the bytes left after the body; a span never exceeds
 * the input it used, the decoded total never exceeds the limit, and errors
 * are -400, -413 or -431.
 */
#include "peregrine.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(c)                \
    do {                        \
        if (!(c))               \
            __builtin_trap();   \
    } while (0)

typedef struct outcome {
    uint8_t *body;
    size_t body_len;
    int64_t status;   /* 0 complete, 1 still incomplete, else -status */
    size_t left;
} outcome;

static void start(prg_http_parser *p, int chunked, unsigned cl)
{
    char head[128];
    int n = chunked ? snprintf(head, sizeof head, "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
                    : snprintf(head, sizeof head, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: %u\r\n\r\n", cl);
    prg_http_limits big;
    prg_http_limits_default(&big);
    big.max_body = SIZE_MAX / 4;
    prg_request req;
    prg_header hdrs[4];
    prg_http_parser_reset(p);
    CHECK(prg_http_parse(p, (uint8_t *)head, (size_t)n, &big, &req, hdrs) == 0);
    CHECK(prg_http_head_complete(p));
    CHECK(prg_http_head_view(p, (uint8_t *)head, (size_t)n, &big, &req, hdrs) == 0 && req.body.len == 0);
}

/* Feeds body[0..size): first piece `first` bytes (0: all), then the rest in
 * pieces of `step` bytes (0: all at once). */
static void feed(prg_http_parser p, const prg_http_limits *lim, const uint8_t *body, size_t size, size_t first,
                 size_t step, outcome *o)
{
    uint8_t *pending = NULL;
    size_t plen = 0, pos = 0;
    o->body = malloc(size + 1);
    CHECK(o->body);
    o->body_len = 0;
    o->status = 1;
    o->left = 0;
    for (int rounds = 0;; rounds++) {
        CHECK(rounds < 1 << 20);
        size_t add = size - pos;
        if (pos == 0 && first && add > first) add = first;
        else if (pos > 0 && step && add > step) add = step;
        uint8_t *buf = malloc(plen + add + 1);
        CHECK(buf);
        if (plen) memcpy(buf, pending, plen);
        if (add) memcpy(buf + plen, body + pos, add);
        free(pending);
        pending = NULL;
        pos += add;
        size_t len = plen + add, decoded = 0;
        int done = 0;
        int64_t used = prg_http_body_next(&p, buf, len, lim, &decoded, &done);
        if (used < 0) {
            CHECK(used == -400 || used == -413 || used == -431);
            o->status = used;
            free(buf);
            return;
        }
        CHECK((size_t)used <= len && decoded <= (size_t)used);
        CHECK(o->body_len + decoded <= size);
        memcpy(o->body + o->body_len, buf, decoded);
        o->body_len += decoded;
        CHECK(o->body_len <= lim->max_body);
        plen = len - (size_t)used;
        pending = malloc(plen + 1);
        CHECK(pending);
        memcpy(pending, buf + used, plen);
        free(buf);
        if (done) {
            o->status = 0;
            o->left = plen + (size - pos);
            free(pending);
            return;
        }
        if (pos == size && decoded == 0) {
            size_t d2 = 0;
            int done2 = 0;
            int64_t r2 = prg_http_body_next(&p, pending, plen, lim, &d2, &done2);
            if (r2 < 0) o->status = r2;
            free(pending);
            return;
        }
    }
}

static void same(const outcome *a, const outcome *b)
{
    CHECK(a->status == b->status && a->left == b->left && a->body_len == b->body_len);
    CHECK(memcmp(a->body, b->body, a->body_len) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    int chunked = data[0] & 1;
    unsigned cl = (unsigned)data[1] * 4 + 1;
    prg_http_limits lim;
    prg_http_limits_default(&lim);
    if (data[0] & 2)
        lim.max_body = (size_t)(data[1] & 63);   /* tiny streamed limits */
    if (data[0] & 4) {
        lim.max_header_bytes = 64;               /* trailer limits */
        lim.max_headers = 2;
    }
    const uint8_t *body = data + 2;
    size_t n = size - 2;
    prg_http_parser p;
    start(&p, chunked, cl);

    outcome whole, split, bytes;
    feed(p, &lim, body, n, 0, 0, &whole);
    size_t cut = n ? (size_t)data[1] % (n + 1) : 0;
    feed(p, &lim, body, n, cut ? cut : 1, 0, &split);
    same(&whole, &split);
    free(split.body);
    if (n <= 512) {
        feed(p, &lim, body, n, 1, 1, &bytes);
        same(&whole, &bytes);
        free(bytes.body);
    }
    if (!chunked && whole.status == 0)
        CHECK(whole.body_len == cl && whole.left == n - cl);
    free(whole.body);
    return 0;
}
