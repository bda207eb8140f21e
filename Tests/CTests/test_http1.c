/*
 * test_http1.c: the C parser (csrc/http1.c) against the one case table,
 * Tests/ParserCases/cases.txt (its format is described at the top of that
 * file; Tests/ParserConformanceTests reads the same file). Standalone: uses
 * only the prg_http_* functions.
 *
 *   make test-c     (builds with ASan/UBSan and runs it on the table)
 *   test_http1 Tests/ParserCases/cases.txt
 *
 * Every case is fed (1) whole, (2) split into two calls at every offset,
 * both into one buffer and into a buffer copied to a fresh allocation
 * between calls, (3) one byte at a time in place and (4) one byte at a
 * time with a fresh allocation per call. All runs must give the identical
 * outcome (result, flags, slice offsets, consumed bytes as decoded).
 * Fresh allocations are exactly as long as the bytes passed, so ASan
 * catches any read past len, and the old one is freed, so it catches any
 * stored pointer. Inputs over SAMPLE_OVER bytes (the 1 MiB bodies) get
 * sampled split points and only the in-place byte-by-byte run: the full
 * set is quadratic in the input's length.
 */
#include "peregrine.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SAMPLE_OVER 20000

typedef struct bytes {
    uint8_t *p;
    size_t n;
    size_t cap; /* allocated, > n (a NUL follows the bytes for messages) */
} bytes;

enum want { WANT_NONE, WANT_REQUEST, WANT_ERROR, WANT_INCOMPLETE, WANT_INCOMPLETE_BODY };

typedef struct tcase {
    char *name;
    int line;             /* of its "case:" line */
    bytes raw;
    prg_http_limits limits;
    enum want want;
    int status;           /* WANT_ERROR */
    bytes method, target, body;
    int minor;            /* -1: not given */
    size_t nhdr;
    bytes *hdr;           /* name, value, name, value... (2 * nhdr) */
    unsigned flags;
    int has_flags;
    int64_t content_length;
    int64_t consumed;     /* -1: all of raw */
} tcase;

/* ------------------------------------------------------------------ */
/* Reading Tests/ParserCases/cases.txt                                  */
/* ------------------------------------------------------------------ */

static const char *g_path;
static int g_line;
static char g_error[512]; /* the last reader error, "path:line: why" */
static int g_quiet;       /* set while testing the reader on bad tables */

/* Reports a malformed line; returns -1 for the caller to pass up. */
static int bad_line(const char *why, const char *detail)
{
    snprintf(g_error, sizeof g_error, "%s:%d: %s%s%s", g_path, g_line, why,
             detail ? ": " : "", detail ? detail : "");
    if (!g_quiet)
        fprintf(stderr, "%s\n", g_error);
    return -1;
}

/* Appends n bytes to *b (growing it geometrically: raw*N lines append
 * a megabyte piece by piece); -1 when out of memory. */
static int append(bytes *b, const uint8_t *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        uint8_t *q;
        while (cap < b->n + n + 1)
            cap *= 2;
        q = realloc(b->p, cap);
        if (!q)
            return bad_line("out of memory", NULL);
        b->p = q;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}

static int hexdig(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes TEXT's escapes (\r \n \t \0 \\ \xHH) into out (appended). */
static int unescape(const char *t, bytes *out)
{
    while (*t) {
        uint8_t c = (uint8_t)*t++;
        if (c == '\\') {
            int h, l;
            switch (*t++) {
            case 'r': c = '\r'; break;
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case '0': c = 0; break;
            case '\\': c = '\\'; break;
            case 'x':
                if ((h = hexdig(t[0])) < 0 || (l = hexdig(t[1])) < 0)
                    return bad_line("\\x needs two hex digits", NULL);
                c = (uint8_t)(h << 4 | l);
                t += 2;
                break;
            default:
                return bad_line("unknown escape (\\r \\n \\t \\0 \\\\ \\xHH)", NULL);
            }
        }
        if (append(out, &c, 1) < 0)
            return -1;
    }
    return 0;
}

/* A decimal number that is all of s, in [min, max]; -1 when it is not. */
static int number(const char *s, int64_t min, int64_t max, int64_t *v)
{
    char *end;
    long long x;
    if (*s < '0' || *s > '9')
        return bad_line("not a number", s);
    errno = 0;
    x = strtoll(s, &end, 10);
    if (errno || *end || x < min || x > max)
        return bad_line("number out of range or followed by more", s);
    *v = x;
    return 0;
}

static const struct {
    const char *word;
    unsigned bit;
} flag_words[] = {
    {"keep-alive", PRG_REQ_KEEP_ALIVE},
    {"chunked", PRG_REQ_CHUNKED},
    {"expect-continue", PRG_REQ_EXPECT_CONTINUE},
    {"content-length", PRG_REQ_HAS_CONTENT_LENGTH},
};

/* "flags:" words (or "none") into PRG_REQ_* bits. */
static int parse_flags(const char *t, unsigned *flags)
{
    *flags = 0;
    if (strcmp(t, "none") == 0)
        return 0;
    while (*t) {
        size_t i, n = strcspn(t, " ");
        for (i = 0; i < sizeof flag_words / sizeof flag_words[0]; i++)
            if (strlen(flag_words[i].word) == n && strncmp(t, flag_words[i].word, n) == 0)
                break;
        if (i == sizeof flag_words / sizeof flag_words[0])
            return bad_line("unknown flag (keep-alive chunked expect-continue content-length, or none)", t);
        *flags |= flag_words[i].bit;
        t += n;
        while (*t == ' ')
            t++;
    }
    return 0;
}

/* The case is complete and consistent; -1 when not (reported at its
 * "case:" line). */
static int check_case(const tcase *tc)
{
    if (tc->want == WANT_NONE)
        return bad_line("case without want:", tc->name);
    if (tc->want == WANT_REQUEST &&
        (!tc->method.p || !tc->target.p || tc->minor < 0 || !tc->has_flags))
        return bad_line("want: request needs method:, target:, version: and flags:", tc->name);
    if (tc->want == WANT_INCOMPLETE_BODY && !tc->has_flags)
        return bad_line("want: incomplete-body needs flags:", tc->name);
    if (tc->want != WANT_REQUEST && (tc->method.p || tc->target.p || tc->body.p || tc->nhdr ||
                                     tc->minor >= 0 || tc->consumed >= 0 || tc->content_length >= 0))
        return bad_line("request fields in a case that does not want a request", tc->name);
    if (tc->has_flags && tc->want != WANT_REQUEST && tc->want != WANT_INCOMPLETE_BODY)
        return bad_line("flags: only with want: request or incomplete-body", tc->name);
    if (tc->consumed > (int64_t)tc->raw.n)
        return bad_line("consumed: more than raw", tc->name);
    return 0;
}

static int finish_case(const tcase *tc)
{
    int at = g_line, rc;
    g_line = tc->line;
    rc = check_case(tc);
    g_line = at;
    return rc;
}

/* One "key: text" line into the case being read. */
static int case_line(tcase *tc, const char *key, int64_t repeat, char *text)
{
    bytes *dst = NULL, dec = {NULL, 0, 0};
    int64_t v;
    int rc = 0;

    if (strcmp(key, "raw") == 0)
        dst = &tc->raw;
    else if (strcmp(key, "method") == 0)
        dst = &tc->method;
    else if (strcmp(key, "target") == 0)
        dst = &tc->target;
    else if (strcmp(key, "body") == 0)
        dst = &tc->body;
    if (dst) {
        int64_t i;
        if (unescape(text, &dec) < 0) {
            free(dec.p);
            return -1;
        }
        if (!dst->p && append(dst, NULL, 0) < 0) /* present, even if empty */
            rc = -1;
        for (i = 0; i < repeat && rc == 0; i++)
            rc = append(dst, dec.p, dec.n);
        free(dec.p);
        return rc;
    }
    if (repeat != 1)
        return bad_line("only raw, method, target and body take *N", key);
    if (strcmp(key, "limits") == 0) {
        unsigned long long l[4];
        int used = 0;
        if (sscanf(text, "%llu %llu %llu %llu%n", &l[0], &l[1], &l[2], &l[3], &used) != 4 ||
            text[used] != 0)
            return bad_line("limits: needs four numbers", text);
        tc->limits.max_request_line = (size_t)l[0];
        tc->limits.max_header_bytes = (size_t)l[1];
        tc->limits.max_headers = (size_t)l[2];
        tc->limits.max_body = (size_t)l[3];
    } else if (strcmp(key, "want") == 0) {
        if (tc->want != WANT_NONE)
            return bad_line("second want:", NULL);
        if (strcmp(text, "request") == 0)
            tc->want = WANT_REQUEST;
        else if (strcmp(text, "incomplete") == 0)
            tc->want = WANT_INCOMPLETE;
        else if (strcmp(text, "incomplete-body") == 0)
            tc->want = WANT_INCOMPLETE_BODY;
        else if (strncmp(text, "error ", 6) == 0) {
            if (number(text + 6, 100, 599, &v) < 0)
                return -1;
            tc->want = WANT_ERROR;
            tc->status = (int)v;
        } else
            return bad_line("want: request | error STATUS | incomplete | incomplete-body", text);
    } else if (strcmp(key, "version") == 0) {
        if (strcmp(text, "1.0") == 0)
            tc->minor = 0;
        else if (strcmp(text, "1.1") == 0)
            tc->minor = 1;
        else
            return bad_line("version: 1.0 or 1.1", text);
    } else if (strcmp(key, "header") == 0) {
        bytes *h;
        uint8_t *colon;
        size_t vstart;
        if (unescape(text, &dec) < 0) {
            free(dec.p);
            return -1;
        }
        colon = dec.n ? memchr(dec.p, ':', dec.n) : NULL;
        if (!colon || colon == dec.p) {
            free(dec.p);
            return bad_line("header: NAME: VALUE", text);
        }
        h = realloc(tc->hdr, sizeof *h * 2 * (tc->nhdr + 1));
        if (!h) {
            free(dec.p);
            return bad_line("out of memory", NULL);
        }
        tc->hdr = h;
        h += 2 * tc->nhdr;
        memset(h, 0, sizeof *h * 2);
        vstart = (size_t)(colon - dec.p) + 1;
        while (vstart < dec.n && dec.p[vstart] == ' ')
            vstart++;
        tc->nhdr++;
        rc = append(&h[0], dec.p, (size_t)(colon - dec.p));
        if (rc == 0)
            rc = append(&h[1], dec.p + vstart, dec.n - vstart);
        free(dec.p);
        return rc;
    } else if (strcmp(key, "flags") == 0) {
        if (parse_flags(text, &tc->flags) < 0)
            return -1;
        tc->has_flags = 1;
    } else if (strcmp(key, "content-length") == 0) {
        if (number(text, 0, INT64_MAX, &tc->content_length) < 0)
            return -1;
    } else if (strcmp(key, "consumed") == 0) {
        if (number(text, 1, INT64_MAX, &tc->consumed) < 0)
            return -1;
    } else if (strcmp(key, "rfc") != 0) {
        return bad_line("unknown key", key);
    }
    return 0;
}

static void new_case(tcase *tc)
{
    memset(tc, 0, sizeof *tc);
    prg_http_limits_default(&tc->limits);
    tc->line = g_line;
    tc->minor = -1;
    tc->content_length = -1;
    tc->consumed = -1;
}

/* The whole file at path, NUL-terminated, into *text (the caller frees
 * it); -1 on any error (reported). */
static int read_file(const char *path, char **text, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t cap = 0, got;
    int rc = 0;

    g_path = path;
    g_line = 0;
    if (!f)
        return bad_line("cannot open", strerror(errno));
    for (;;) {
        char *t = realloc(buf, cap + 65536 + 1);
        if (!t) {
            rc = bad_line("out of memory", NULL);
            break;
        }
        buf = t;
        got = fread(buf + cap, 1, 65536, f);
        cap += got;
        if (got < 65536)
            break;
    }
    if (rc == 0 && ferror(f))
        rc = bad_line("read error", NULL);
    fclose(f);
    if (rc < 0) {
        free(buf);
        return -1;
    }
    buf[cap] = 0;
    *text = buf;
    *len = cap;
    return 0;
}

/* Every case of the table in text[0..cap) (NUL-terminated, changed in
 * place) into *out and *count, also on error (free_cases frees them);
 * -1 on any error (reported with path and line). */
static int parse_cases(char *text, size_t cap, const char *path, tcase **out, size_t *count)
{
    char *line, *next;
    size_t n = 0, i;
    tcase *cases = NULL, *cur = NULL;
    int rc = 0;

    g_path = path;
    g_line = 0;
    *out = NULL;
    *count = 0;
    if (strlen(text) != cap)
        return bad_line("NUL byte in the file (write \\0)", NULL);

    for (line = text; rc == 0 && line < text + cap; line = next) {
        char *colon, *star, *body;
        int64_t repeat = 1;
        size_t len;
        g_line++;
        next = strchr(line, '\n');
        if (next)
            *next++ = 0;
        else
            next = text + cap;
        len = strlen(line);
        if (len == 0 || line[0] == '#')
            continue;
        if (line[len - 1] == '\r') {
            rc = bad_line("CR at the end of a line: the file uses LF line ends", NULL);
            break;
        }
        if (line[len - 1] == ' ' || line[len - 1] == '\t') {
            rc = bad_line("text ends in a space or tab (write \\x20 or \\t)", NULL);
            break;
        }
        colon = strchr(line, ':');
        if (!colon || (colon[1] != 0 && colon[1] != ' ')) {
            rc = bad_line("not \"key: text\"", line);
            break;
        }
        *colon = 0;
        body = colon[1] ? colon + 2 : colon + 1;
        star = strchr(line, '*');
        if (star) {
            *star = 0;
            if (number(star + 1, 1, 100000000, &repeat) < 0) {
                rc = -1;
                break;
            }
        }
        if (strcmp(line, "case") == 0) {
            tcase *c;
            if (cur && (rc = finish_case(cur)) < 0)
                break;
            c = realloc(cases, sizeof *c * (n + 1));
            if (!c) {
                rc = bad_line("out of memory", NULL);
                break;
            }
            cases = c;
            cur = &cases[n++];
            new_case(cur);
            {
                bytes name = {NULL, 0, 0};
                rc = unescape(body, &name);
                if (rc == 0)
                    rc = append(&name, NULL, 0);
                cur->name = (char *)name.p; /* freed with the case, also on error */
                if (rc < 0)
                    break;
            }
            for (i = 0; i + 1 < n; i++)
                if (strcmp(cases[i].name, cur->name) == 0) {
                    rc = bad_line("duplicate case name", cur->name);
                    break;
                }
        } else if (!cur) {
            rc = bad_line("a key before the first case:", line);
        } else {
            rc = case_line(cur, line, repeat, body);
        }
    }
    if (rc == 0 && cur)
        rc = finish_case(cur);
    if (rc == 0 && n == 0)
        rc = bad_line("no cases", NULL);
    *out = cases;
    *count = n;
    return rc;
}

static void free_cases(tcase *cases, size_t n)
{
    size_t i, k;
    for (i = 0; i < n; i++) {
        free(cases[i].name);
        free(cases[i].raw.p);
        free(cases[i].method.p);
        free(cases[i].target.p);
        free(cases[i].body.p);
        for (k = 0; k < 2 * cases[i].nhdr; k++)
            free(cases[i].hdr[k].p);
        free(cases[i].hdr);
    }
    free(cases);
}

/* ------------------------------------------------------------------ */

typedef struct outcome {
    int64_t result;
    int head_complete;
    unsigned pflags;
    char desc[4096];   /* slice offsets and lengths, relative to the buffer */
    uint8_t *bytes;    /* buffer bytes [0, result) when complete */
    size_t nbytes;
} outcome;

static int g_case_failed;
static const char *g_case_name;

static void fail(const char *what, const char *detail)
{
    if (!g_case_failed)
        printf("FAIL %s: %s%s%s\n", g_case_name, what, detail ? ": " : "",
               detail ? detail : "");
    g_case_failed = 1;
}

static size_t append_slice(char *d, size_t at, size_t cap, const char *tag,
                           prg_slice s, const uint8_t *buf, size_t blen)
{
    ptrdiff_t off = s.ptr ? (s.ptr - buf) : -1;
    int k;
    if (s.len && (!s.ptr || off < 0 || (size_t)off > blen || s.len > blen - (size_t)off))
        fail("slice outside the buffer", tag);
    k = snprintf(d + at, cap - at, "%s=%td+%zu ", tag, off, s.len);
    if (k < 0 || (size_t)k >= cap - at)
        return cap - 1;
    return at + (size_t)k;
}

static int slice_eq(prg_slice s, const bytes *want)
{
    return s.len == want->n && (want->n == 0 || memcmp(s.ptr, want->p, want->n) == 0);
}

static void check_expected(const tcase *tc, const prg_request *req, int64_t r,
                           const prg_http_parser *p)
{
    char msg[256];
    static const bytes empty = {NULL, 0, 0};
    int64_t want;
    size_t i;

    switch (tc->want) {
    case WANT_ERROR:
        want = -tc->status;
        break;
    case WANT_REQUEST:
        want = tc->consumed >= 0 ? tc->consumed : (int64_t)tc->raw.n;
        break;
    default:
        want = 0;
        break;
    }
    if (r != want) {
        snprintf(msg, sizeof msg, "got %lld, want %lld", (long long)r, (long long)want);
        fail("result", msg);
        return;
    }
    if (r == 0) {
        int hc = tc->want == WANT_INCOMPLETE_BODY;
        if (prg_http_head_complete(p) != hc)
            fail("head_complete while incomplete", NULL);
        else if (hc && p->flags != tc->flags) {
            snprintf(msg, sizeof msg, "got %#x, want %#x", p->flags, tc->flags);
            fail("flags while waiting for body", msg);
        }
        return;
    }
    if (r < 0)
        return;
    if (!slice_eq(req->method, &tc->method))
        fail("method", (const char *)tc->method.p);
    if (!slice_eq(req->target, &tc->target))
        fail("target", (const char *)tc->target.p);
    if (req->version_minor != tc->minor)
        fail("version_minor", NULL);
    if (req->header_count != tc->nhdr) {
        snprintf(msg, sizeof msg, "got %zu, want %zu", req->header_count, tc->nhdr);
        fail("header_count", msg);
        return;
    }
    for (i = 0; i < tc->nhdr; i++) {
        if (!slice_eq(req->headers[i].name, &tc->hdr[2 * i]))
            fail("header name", (const char *)tc->hdr[2 * i].p);
        if (!slice_eq(req->headers[i].value, &tc->hdr[2 * i + 1]))
            fail("header value", (const char *)tc->hdr[2 * i + 1].p);
    }
    if (!slice_eq(req->body, tc->body.p ? &tc->body : &empty)) {
        snprintf(msg, sizeof msg, "got %zu bytes, want %zu", req->body.len, tc->body.n);
        fail("body", msg);
    }
    if (req->flags != tc->flags) {
        snprintf(msg, sizeof msg, "got %#x, want %#x", req->flags, tc->flags);
        fail("flags", msg);
    }
    if (req->content_length != tc->content_length) {
        snprintf(msg, sizeof msg, "got %lld, want %lld", (long long)req->content_length,
                 (long long)tc->content_length);
        fail("content_length", msg);
    }
}

/*
 * Feeds tc->raw with calls at the prefix lengths cuts[0..ncuts). copy:
 * every call gets a fresh allocation of exactly cuts[i] bytes holding the
 * previous buffer (as the parser left it) plus the new raw bytes.
 */
static void feed(const tcase *tc, const size_t *cuts, size_t ncuts, int copy,
                 outcome *o, int check)
{
    prg_http_limits lim;
    prg_http_parser p;
    prg_request req;
    prg_header *hdrs;
    uint8_t *buf;
    size_t have = 0, i, last = 0, at = 0;
    int64_t r = 0;
    int was_complete = 0;
    unsigned head_flags = 0;

    lim = tc->limits;
    hdrs = malloc(sizeof *hdrs * (lim.max_headers ? lim.max_headers : 1));
    if (copy) {
        buf = malloc(1);
    } else {
        buf = malloc(tc->raw.n ? tc->raw.n : 1);
        if (buf && tc->raw.n)
            memcpy(buf, tc->raw.p, tc->raw.n);
    }
    if (!hdrs || !buf) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    prg_http_parser_reset(&p);
    memset(&req, 0, sizeof req);

    for (i = 0; i < ncuts; i++) {
        size_t c = cuts[i];
        if (copy) {
            uint8_t *nb = malloc(c ? c : 1);
            if (!nb) {
                fprintf(stderr, "out of memory\n");
                exit(2);
            }
            memcpy(nb, buf, have);
            memcpy(nb + have, tc->raw.p + have, c - have);
            free(buf);
            buf = nb;
            have = c;
        }
        last = c;
        r = prg_http_parse(&p, buf, c, &lim, &req, hdrs);
        if (r != 0)
            break;
        /* once the head is complete it stays so, with the same flags */
        if (prg_http_head_complete(&p)) {
            if (was_complete && p.flags != head_flags)
                fail("flags changed while waiting for the body", NULL);
            was_complete = 1;
            head_flags = p.flags;
        } else if (was_complete) {
            fail("head_complete went back to 0", NULL);
        }
    }

    o->result = r;
    o->head_complete = prg_http_head_complete(&p);
    o->pflags = p.flags;
    o->desc[0] = 0;
    o->bytes = NULL;
    o->nbytes = 0;
    if (r > 0) {
        char *d = o->desc;
        const size_t cap = sizeof o->desc;
        if ((size_t)r > last)
            fail("consumed more than given", NULL);
        at = append_slice(d, at, cap, "m", req.method, buf, (size_t)r);
        at = append_slice(d, at, cap, "t", req.target, buf, (size_t)r);
        at = append_slice(d, at, cap, "b", req.body, buf, (size_t)r);
        if (at < cap)
            at += (size_t)snprintf(d + at, cap - at, "v=%d f=%u hc=%zu cl=%lld ",
                                   req.version_minor, req.flags, req.header_count,
                                   (long long)req.content_length);
        if (req.headers != hdrs)
            fail("req.headers is not the array passed", NULL);
        if (req.header_count > lim.max_headers)
            fail("header_count > max_headers", NULL);
        for (i = 0; i < req.header_count && i < lim.max_headers && at < cap - 1; i++) {
            at = append_slice(d, at, cap, "n", hdrs[i].name, buf, (size_t)r);
            at = append_slice(d, at, cap, "v", hdrs[i].value, buf, (size_t)r);
        }
        if (req.flags != p.flags)
            fail("req.flags != p.flags", NULL);
        if (!o->head_complete)
            fail("complete but head_complete() == 0", NULL);
        o->nbytes = (size_t)r;
        o->bytes = malloc(o->nbytes);
        if (!o->bytes) {
            fprintf(stderr, "out of memory\n");
            exit(2);
        }
        memcpy(o->bytes, buf, o->nbytes);
        if (check)
            check_expected(tc, &req, r, &p);

        /* a repeated call after completion gives the same answer */
        {
            prg_request again;
            int64_t r2 = prg_http_parse(&p, buf, last, &lim, &again, hdrs);
            if (r2 != r || again.body.ptr != req.body.ptr ||
                again.body.len != req.body.len || again.header_count != req.header_count)
                fail("repeated call after completion differs", NULL);
        }
    } else {
        if (check)
            check_expected(tc, &req, r, &p);
        if (r < 0) {
            if (o->head_complete)
                fail("error but head_complete() == 1", NULL);
            if (prg_http_parse(&p, buf, last, &lim, &req, hdrs) != r)
                fail("error not sticky", NULL);
        }
    }
    free(buf);
    free(hdrs);
}

static void same(const outcome *a, const outcome *b, const char *mode, size_t k)
{
    char msg[160];
    if (a->result != b->result || a->head_complete != b->head_complete ||
        (a->head_complete && a->pflags != b->pflags) || strcmp(a->desc, b->desc) != 0 ||
        a->nbytes != b->nbytes ||
        (a->nbytes && memcmp(a->bytes, b->bytes, a->nbytes) != 0)) {
        snprintf(msg, sizeof msg, "%s at %zu: result %lld vs whole %lld", mode, k,
                 (long long)b->result, (long long)a->result);
        fail("outcome differs", msg);
    }
}

/* Split points for a long input: both ends densely, the middle sparsely,
 * and around the request-line and head limits, where the checks fire. */
static int sample_split(const tcase *tc, size_t k, size_t n)
{
    size_t l = tc->limits.max_request_line, h = tc->limits.max_header_bytes;
    return k < 64 || k + 64 >= n || k % 4093 == 0 || (k + 3 >= l && k <= l + 3) ||
           (k + 3 >= h && k <= h + 3);
}

static void run_case(const tcase *tc)
{
    const size_t n = tc->raw.n;
    const int sampled = n > SAMPLE_OVER;
    size_t *cuts = malloc(sizeof *cuts * (n + 1));
    outcome whole, o;
    size_t k;

    if (!cuts) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    /* whole, exact-size buffer */
    cuts[0] = n;
    feed(tc, cuts, 1, 1, &whole, 1);
    /* whole, in place */
    feed(tc, cuts, 1, 0, &o, 0);
    same(&whole, &o, "whole in place", 0);
    free(o.bytes);

    /* (a) two calls split at every offset, in place and copied */
    for (k = 0; k < n && !g_case_failed; k++) {
        if (sampled && !sample_split(tc, k, n))
            continue;
        cuts[0] = k;
        cuts[1] = n;
        feed(tc, cuts, 2, 0, &o, 0);
        same(&whole, &o, "split in place", k);
        free(o.bytes);
        feed(tc, cuts, 2, 1, &o, 0);
        same(&whole, &o, "split copied", k);
        free(o.bytes);
    }
    /* (b) one byte at a time, in place; (c) with a fresh copy per call */
    for (k = 0; k < n; k++)
        cuts[k] = k + 1;
    if (n) {
        feed(tc, cuts, n, 0, &o, 0);
        same(&whole, &o, "bytewise in place", 0);
        free(o.bytes);
        if (!sampled) {
            feed(tc, cuts, n, 1, &o, 0);
            same(&whole, &o, "bytewise copied", 0);
            free(o.bytes);
        }
    }
    free(whole.bytes);
    free(cuts);
}

static const char *reason_checks[][2] = {
    {"100", "Continue"}, {"200", "OK"}, {"204", "No Content"},
    {"400", "Bad Request"}, {"404", "Not Found"}, {"413", "Content Too Large"},
    {"414", "URI Too Long"}, {"417", "Expectation Failed"},
    {"431", "Request Header Fields Too Large"}, {"501", "Not Implemented"},
    {"505", "HTTP Version Not Supported"}, {"299", "Unknown"}, {"0", "Unknown"},
};

/* prg_http_compact: a body of 1-byte chunks fed one byte at a time, with
 * the gap closed after every incomplete call, decodes to the same bytes,
 * never needs more than head + decoded body + one unread line, and a
 * pipelined request after it is still found. */
static void compact_check(void)
{
    enum { BODY = 300 };
    static uint8_t wire[8192], buf[8192];
    static const char head[] = "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
    static const char next[] = "GET /n HTTP/1.1\r\nHost: h\r\n\r\n";
    size_t n = 0, i, len = 0, peak = 0, fed = 0;
    prg_http_parser p;
    prg_request req;
    prg_header hdrs[100];
    int64_t r = 0;

    memcpy(wire, head, sizeof head - 1);
    n = sizeof head - 1;
    for (i = 0; i < BODY; i++) {
        wire[n++] = '1'; wire[n++] = '\r'; wire[n++] = '\n';
        wire[n++] = (uint8_t)('a' + i % 26);
        wire[n++] = '\r'; wire[n++] = '\n';
    }
    memcpy(wire + n, "0\r\n\r\n", 5);
    n += 5;
    memcpy(wire + n, next, sizeof next - 1);
    n += sizeof next - 1;

    prg_http_parser_reset(&p);
    while (fed < n) {
        buf[len++] = wire[fed++];
        r = prg_http_parse(&p, buf, len, NULL, &req, hdrs);
        if (r != 0)
            break;
        len -= prg_http_compact(&p, buf, len);
        if (len > peak)
            peak = len;
    }
    if (r <= 0) {
        fail("compact: request did not complete", NULL);
        return;
    }
    if (req.body.len != BODY)
        fail("compact: decoded length", NULL);
    for (i = 0; i < req.body.len && i < BODY; i++)
        if (req.body.ptr[i] != (uint8_t)('a' + i % 26)) {
            fail("compact: decoded bytes", NULL);
            break;
        }
    if (peak > sizeof head - 1 + BODY + 8)
        fail("compact: buffer grew with the framing", NULL);
    /* the rest of the wire after the chunked request parses on its own */
    memmove(buf, buf + r, len - (size_t)r);
    len -= (size_t)r;
    memcpy(buf + len, wire + fed, n - fed);
    len += n - fed;
    prg_http_parser_reset(&p);
    r = prg_http_parse(&p, buf, len, NULL, &req, hdrs);
    if (r != (int64_t)(sizeof next - 1) || req.target.len != 2 || memcmp(req.target.ptr, "/n", 2) != 0)
        fail("compact: pipelined request after the chunked one", NULL);
    if (prg_http_compact(&p, buf, len) != 0)
        fail("compact: nothing to compact outside a chunked body", NULL);
}

/* The reader refuses a malformed table, naming the line (the same checks
 * as ParserConformanceTests.testMalformedTableIsRefused). */
static void malformed_tables_check(void)
{
    static const char *const bad[][2] = {
        {"case: x\nraw: a \nwant: incomplete\n", "t:2: text ends in a space or tab"},
        {"case: x\nraw: a\\q\nwant: incomplete\n", "t:2: unknown escape"},
        {"case: x\nraw: GET\nwant: request\n", "t:1: want: request needs"},
        {"case: x\nraw: a\nwant: incomplete\ncase: x\n", "t:4: duplicate case name"},
        {"raw: a\n", "t:1: a key before the first case"},
        {"case: x\nraw: a\nwant: maybe\n", "t:3: want:"},
        {"case: x\nraw*0: a\nwant: incomplete\n", "t:2: number out of range"},
        {"case: x\nraw: a\nwant: error 400\nmethod: GET\n", "t:1: request fields"},
    };
    size_t i;
    g_quiet = 1;
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t len = strlen(bad[i][0]), n = 0;
        char *text = malloc(len + 1);
        tcase *cases = NULL;
        if (!text) {
            fprintf(stderr, "out of memory\n");
            exit(2);
        }
        memcpy(text, bad[i][0], len + 1);
        g_error[0] = 0;
        if (parse_cases(text, len, "t", &cases, &n) == 0)
            fail("accepted", bad[i][0]);
        else if (strncmp(g_error, bad[i][1], strlen(bad[i][1])) != 0)
            fail(g_error, bad[i][1]);
        free_cases(cases, n);
        free(text);
    }
    g_quiet = 0;
}

int main(int argc, char **argv)
{
    size_t i, passed = 0, failed = 0, ncases = 0;
    tcase *cases = NULL;

    if (argc != 2) {
        fprintf(stderr, "usage: %s Tests/ParserCases/cases.txt\n", argv[0]);
        return 2;
    }
    {
        char *text;
        size_t len;
        int rc;
        if (read_file(argv[1], &text, &len) < 0)
            return 2;
        rc = parse_cases(text, len, argv[1], &cases, &ncases);
        free(text);
        if (rc < 0) {
            free_cases(cases, ncases);
            return 2;
        }
    }
    for (i = 0; i < ncases; i++) {
        g_case_failed = 0;
        g_case_name = cases[i].name;
        run_case(&cases[i]);
        if (g_case_failed) {
            printf("  (%s:%d)\n", argv[1], cases[i].line);
            failed++;
        } else {
            passed++;
        }
    }
    printf("%zu table cases from %s\n", ncases, argv[1]);
    free_cases(cases, ncases);

    g_case_failed = 0;
    g_case_name = "malformed tables are refused";
    malformed_tables_check();
    if (g_case_failed)
        failed++;
    else
        passed++;

    /* prg_status_reason */
    g_case_failed = 0;
    g_case_name = "prg_status_reason";
    for (i = 0; i < sizeof reason_checks / sizeof reason_checks[0]; i++)
        if (strcmp(prg_status_reason(atoi(reason_checks[i][0])), reason_checks[i][1]) != 0)
            fail("reason", reason_checks[i][0]);
    /* limits defaults */
    {
        prg_http_limits l;
        prg_http_limits_default(&l);
        if (l.max_request_line != 8192 || l.max_header_bytes != 16384 ||
            l.max_headers != 100 || l.max_body != 1024 * 1024)
            fail("limits defaults", NULL);
    }
    if (g_case_failed)
        failed++;
    else
        passed++;

    g_case_failed = 0;
    g_case_name = "prg_http_compact";
    compact_check();
    if (g_case_failed)
        failed++;
    else
        passed++;

    printf("%zu passed, %zu failed\n", passed, failed);
    return failed != 0;
}
