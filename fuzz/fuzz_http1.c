/*
 * fuzz_http1.c: libFuzzer harness for the HTTP/1.1 request parser.
 *
 *   clang -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined \
 *     -Icsrc/include csrc/http1.c fuzz/fuzz_http1.c -o /tmp/fuzz_http1
 *   /tmp/fuzz_http1 -max_total_time=120 -max_len=4096 fuzz/corpus
 *
 * For the default limits and for tiny limits, the input is parsed whole,
 * split in two at a position derived from the data, and (for small
 * inputs) one byte at a time; each partial call gets a fresh allocation of
 * exactly the bytes passed (so any read past len or stored pointer is
 * caught by ASan). All runs must agree exactly, every slice must lie in
 * the consumed bytes, and errors must be one of the documented statuses.
 * Complete requests are followed by the pipelined rest of the input.
 */
#include "peregrine.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(c)                                                                \
    do {                                                                        \
        if (!(c))                                                               \
            __builtin_trap();                                                   \
    } while (0)

typedef struct outcome {
    int64_t result;
    int head_complete;
    unsigned pflags;
    size_t off[8 + 2 * 128]; /* method, target, body, then headers: offset/len */
    size_t noff;
    int minor;
    unsigned flags;
    int64_t content_length;
    uint8_t *bytes; /* [0, result) as left by the parser */
} outcome;

static void put_slice(outcome *o, prg_slice s, const uint8_t *buf, size_t used)
{
    size_t off = 0;
    if (s.len) {
        CHECK(s.ptr >= buf);
        off = (size_t)(s.ptr - buf);
        CHECK(off <= used && s.len <= used - off);
    } else if (s.ptr) {
        CHECK(s.ptr >= buf && (size_t)(s.ptr - buf) <= used);
        off = (size_t)(s.ptr - buf);
    }
    if (o->noff + 2 <= sizeof o->off / sizeof o->off[0]) {
        o->off[o->noff++] = off;
        o->off[o->noff++] = s.len;
    }
}

static int valid_error(int64_t r)
{
    return r == -400 || r == -413 || r == -414 || r == -417 || r == -431 ||
           r == -501 || r == -505;
}

/* Feeds data[0..size) with calls at the prefix lengths cuts[0..n). */
static void feed(const uint8_t *data, size_t size, const size_t *cuts, size_t n,
                 const prg_http_limits *lim, outcome *o)
{
    prg_http_parser p;
    prg_request req;
    prg_header *hdrs = malloc(sizeof *hdrs * (lim->max_headers ? lim->max_headers : 1));
    uint8_t *buf = malloc(1);
    size_t have = 0, i;
    int64_t r = 0;
    int was_complete = 0;
    unsigned hflags = 0;

    CHECK(hdrs && buf);
    prg_http_parser_reset(&p);
    memset(&req, 0, sizeof req);
    for (i = 0; i < n; i++) {
        size_t c = cuts[i];
        uint8_t *nb = malloc(c ? c : 1);
        CHECK(nb);
        memcpy(nb, buf, have);
        memcpy(nb + have, data + have, c - have);
        free(buf);
        buf = nb;
        have = c;
        r = prg_http_parse(&p, buf, c, lim, &req, hdrs);
        if (r != 0)
            break;
        if (prg_http_head_complete(&p)) {
            CHECK(!was_complete || p.flags == hflags);
            was_complete = 1;
            hflags = p.flags;
        } else {
            CHECK(!was_complete);
        }
    }
    (void)size;
    memset(o, 0, sizeof *o);
    o->result = r;
    o->head_complete = prg_http_head_complete(&p);
    if (o->head_complete)
        o->pflags = p.flags;
    if (r < 0) {
        CHECK(valid_error(r));
        CHECK(!o->head_complete);
        CHECK(prg_http_parse(&p, buf, have, lim, &req, hdrs) == r); /* sticky */
    } else if (r > 0) {
        size_t used = (size_t)r, k;
        CHECK(used <= have);
        CHECK(o->head_complete);
        CHECK(req.method.len > 0 && req.target.len > 0);
        CHECK(req.version_minor == 0 || req.version_minor == 1);
        CHECK(req.header_count <= lim->max_headers);
        CHECK(req.headers == hdrs);
        CHECK(req.flags == p.flags);
        CHECK(req.body.len <= lim->max_body);
        CHECK(req.body.ptr == buf + p.head_len);
        CHECK(p.head_len <= used);
        CHECK((req.content_length >= 0) == !!(req.flags & PRG_REQ_HAS_CONTENT_LENGTH));
        CHECK(req.content_length < 0 || (uint64_t)req.content_length == req.body.len);
        CHECK(!((req.flags & PRG_REQ_CHUNKED) && (req.flags & PRG_REQ_HAS_CONTENT_LENGTH)));
        put_slice(o, req.method, buf, used);
        put_slice(o, req.target, buf, used);
        put_slice(o, req.body, buf, used);
        for (k = 0; k < req.header_count; k++) {
            put_slice(o, hdrs[k].name, buf, used);
            put_slice(o, hdrs[k].value, buf, used);
            CHECK(hdrs[k].name.len > 0);
        }
        o->minor = req.version_minor;
        o->flags = req.flags;
        o->content_length = req.content_length;
        o->bytes = malloc(used ? used : 1);
        CHECK(o->bytes);
        memcpy(o->bytes, buf, used);
        /* idempotent after completion */
        {
            prg_request again;
            CHECK(prg_http_parse(&p, buf, have, lim, &again, hdrs) == r);
            CHECK(again.body.ptr == req.body.ptr && again.body.len == req.body.len);
            CHECK(again.header_count == req.header_count);
        }
    }
    free(buf);
    free(hdrs);
}

static void same(const outcome *a, const outcome *b)
{
    CHECK(a->result == b->result);
    CHECK(a->head_complete == b->head_complete);
    CHECK(a->pflags == b->pflags);
    CHECK(a->noff == b->noff);
    CHECK(memcmp(a->off, b->off, a->noff * sizeof a->off[0]) == 0);
    CHECK(a->minor == b->minor && a->flags == b->flags);
    CHECK(a->content_length == b->content_length);
    if (a->result > 0)
        CHECK(memcmp(a->bytes, b->bytes, (size_t)a->result) == 0);
}

static void one(const uint8_t *data, size_t size, const prg_http_limits *lim,
                size_t split, int depth)
{
    outcome whole, o;
    size_t cuts[2];
    size_t *many;
    size_t i;

    cuts[0] = size;
    feed(data, size, cuts, 1, lim, &whole);

    if (size > 0) {
        cuts[0] = split % (size + 1);
        cuts[1] = size;
        feed(data, size, cuts, 2, lim, &o);
        same(&whole, &o);
        free(o.bytes);
    }
    if (size > 0 && size <= 512) {
        many = malloc(sizeof *many * size);
        CHECK(many);
        for (i = 0; i < size; i++)
            many[i] = i + 1;
        feed(data, size, many, size, lim, &o);
        same(&whole, &o);
        free(o.bytes);
        free(many);
    }
    /* the next pipelined request */
    if (whole.result > 0 && (size_t)whole.result < size && depth < 4)
        one(data + whole.result, size - (size_t)whole.result, lim, split * 31 + 7,
            depth + 1);
    free(whole.bytes);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    prg_http_limits def, tiny;
    size_t split = 0, i;

    for (i = 0; i < size && i < 64; i++)
        split = split * 131 + data[i];
    prg_http_limits_default(&def);
    tiny.max_request_line = 24;
    tiny.max_header_bytes = 64;
    tiny.max_headers = 4;
    tiny.max_body = 32;

    one(data, size, &def, split, 0);
    one(data, size, &tiny, split, 0);
    return 0;
}
