/*
 * http1.c: incremental, zero-copy, strict RFC 9112 request parser.
 *
 * Design
 *   The parser keeps offsets only (never pointers) in prg_http_parser, so
 *   the caller may move the buffer between calls. Every check is made in
 *   byte order and depends only on the bytes up to the position where it
 *   fires, so feeding the same bytes whole, split at any offset or one
 *   byte at a time gives the same result.
 *
 *   Phases (p->state; a negative state is a stored -status):
 *     ST_START    skipping leading empty lines (CRLF pairs)
 *     ST_RLINE    request line: looking for its LF (414 / 431 watch)
 *     ST_HEADERS  header lines: looking for the empty line (431 watch)
 *     ST_BODY_CL  head parsed, waiting for Content-Length bytes
 *     ST_BODY_CHUNKED  head parsed, decoding chunks in place
 *     ST_DONE     request complete (a repeated call returns the same)
 *
 *   The head is scanned once with memchr for LFs (each call only looks at
 *   new bytes, p->scanned); every LF must follow a CR. When the empty line
 *   is found the head is parsed in one pass. When the body completes in a
 *   later call the (known valid) head is parsed again to derive the slices
 *   for the current buffer address.
 *
 *   Internal use of public fields: during ST_RLINE/ST_HEADERS chunk_left
 *   holds the offset of the request line (after skipped empty lines);
 *   chunk_state packs the chunk decoder phase (low 8 bits) and a counter
 *   (the upper bits); in the trailer section chunk_left counts trailer
 *   bytes. p->scanned and p->head_len are offsets from buf[0], so they
 *   include skipped leading CRLFs: the body starts at buf + head_len.
 *
 *   No allocation, no global mutable state: thread-safe.
 */
#include "peregrine.h"

#include <string.h>

enum {
    ST_START = 0,
    ST_RLINE = 1,
    ST_HEADERS = 2,
    ST_BODY_CL = 3,
    ST_BODY_CHUNKED = 4,
    ST_DONE = 5,
};

enum {
    CS_SIZE = 0,    /* chunk-size hex digits (counter = digits so far) */
    CS_BWS,         /* BWS after the size: ';' follows (chunk_ext_next) */
    CS_EXT,         /* after a ';': BWS, then a chunk-ext-name */
    CS_SIZE_LF,     /* LF after the chunk-size line */
    CS_DATA,        /* chunk data (chunk_left bytes to go) */
    CS_DATA_CR,     /* CR after chunk data */
    CS_DATA_LF,     /* LF after chunk data */
    CS_TR_START,    /* start of a trailer line (or the final CRLF) */
    CS_TR_NAME,     /* trailer field name */
    CS_TR_VALUE,    /* trailer field value, until CR */
    CS_TR_LF,       /* LF ending a trailer field */
    CS_TR_END,      /* LF ending the trailer section */
    /* the rest of a chunk extension (chunk_ext_next); the counter is the
     * chunk-size line's length throughout */
    CS_EXT_NAME,    /* chunk-ext-name (token) */
    CS_EXT_NAME_BWS, /* BWS after a name: '=' or ';' follows */
    CS_EXT_VAL,     /* after '=': BWS, then a token or quoted-string */
    CS_EXT_TOKEN,   /* token value */
    CS_EXT_QS,      /* quoted-string value, inside the quotes */
    CS_EXT_QP,      /* quoted-pair: the byte after a backslash */
    CS_EXT_QEND,    /* after the closing quote */
    CS_EXT_VAL_BWS, /* BWS after a value: ';' follows */
    CS_EXT_BAD,     /* chunk_ext_next: the byte breaks the grammar */
};

#define CNT_MAX 0x7FFFFFu

/* Character classes. */
#define C_TCHAR  1u /* RFC 9110 tchar */
#define C_VALUE  2u /* field-value byte: HTAB, SP, VCHAR, obs-text */
#define C_TARGET 4u /* request-target byte: 0x21..0x7E */
#define C_HEX    8u /* HEXDIG */
#define C_REG   16u /* RFC 3986 reg-name byte but '%': unreserved / sub-delims */
#define C_DIGIT 32u /* DIGIT */

static const uint8_t cls[256] = {
     0,  0,  0,  0,  0,  0,  0,  0,  0,  2,  0,  0,  0,  0,  0,  0,
     0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,
     2, 23,  6,  7, 23,  7, 23, 23, 22, 22, 23, 23, 22, 23, 23,  6,
    63, 63, 63, 63, 63, 63, 63, 63, 63, 63,  6, 22,  6, 22,  6,  6,
     6, 31, 31, 31, 31, 31, 31, 23, 23, 23, 23, 23, 23, 23, 23, 23,
    23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23,  6,  6,  6,  7, 23,
     7, 31, 31, 31, 31, 31, 31, 23, 23, 23, 23, 23, 23, 23, 23, 23,
    23, 23, 23, 23, 23, 23, 23, 23, 23, 23, 23,  6,  7,  6, 23,  0,
     2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,
     2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,
     2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,
     2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,
     2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,
     2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,
     2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,
     2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,  2,
};

void prg_http_limits_default(prg_http_limits *limits)
{
    limits->max_request_line = 8192;
    limits->max_header_bytes = 16384;
    limits->max_headers = 100;
    limits->max_body = 1024 * 1024;
}

void prg_http_parser_reset(prg_http_parser *p)
{
    memset(p, 0, sizeof *p);
    p->content_length = -1;
}

int prg_http_head_complete(const prg_http_parser *p)
{
    return p->state >= ST_BODY_CL;
}

/* ------------------------------------------------------------------ */
/* Cheap scanning: the checks are the byte-wise ones, made several bytes */
/* at a time where that is cheaper (the result is the same).            */
/* ------------------------------------------------------------------ */

static inline uint64_t load64(const uint8_t *p)
{
    uint64_t x;
    memcpy(&x, p, 8);
    return x;
}

static inline uint32_t load32(const uint8_t *p)
{
    uint32_t x;
    memcpy(&x, p, 4);
    return x;
}

/* The first byte at or after s without the class bit. The caller knows
 * such a byte exists within the buffer (a CR), so the two-byte steps stay
 * inside it: each reads its second byte only when the first is in the class.
 * Always inlined: with the Host run it has enough callers for clang to call
 * it instead, and the call costs more than the usual short run. */
static inline __attribute__((always_inline)) const uint8_t *span_to(const uint8_t *s, unsigned bit)
{
    while ((cls[s[0]] & bit) && (cls[s[1]] & bit))
        s += 2;
    while (cls[*s] & bit)
        s++;
    return s;
}

/* The same within [s, e). */
static inline const uint8_t *span_in(const uint8_t *s, const uint8_t *e, unsigned bit)
{
    while (e - s >= 2 && (cls[s[0]] & bit) && (cls[s[1]] & bit))
        s += 2;
    if (s < e && (cls[*s] & bit))
        s++;
    return s;
}

#define ONES64 0x0101010101010101ull
#define HIGH64 0x8080808080808080ull

/* The first byte at or after s that is not a field-value byte (C_VALUE:
 * HTAB, SP..'~', 0x80..0xFF), 8 bytes a step while [s, s+8) lies before
 * lim: a step goes on only when none of its bytes is below 0x20 or 0x7F
 * (an HTAB ends the fast steps; the byte loop takes it). */
static inline const uint8_t *span_value(const uint8_t *s, const uint8_t *lim)
{
    while (lim - s >= 8) {
        uint64_t x = load64(s), y = x ^ (0x7F * ONES64);
        uint64_t hit = ((x - 0x20 * ONES64) & ~x & HIGH64) | ((y - ONES64) & ~y & HIGH64);
        if (hit) {
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
            /* The lowest flagged byte is the first such byte (the flags of
             * higher ones may be wrong, never the lowest's). */
            s += __builtin_ctzll(hit) >> 3;
            if (*s != '\t')
                return s;
#endif
            break;
        }
        s += 8;
    }
    while (cls[*s] & C_VALUE)
        s++;
    return s;
}

/* ------------------------------------------------------------------ */
/* Head scanning                                                        */
/* ------------------------------------------------------------------ */

/*
 * Limits on a head that has not ended yet: n bytes from the request line
 * start are known and hold no LF beyond those already accepted. 414 fires
 * once the request line content is certainly longer than
 * max_request_line (at R+1 bytes when byte R is not the CR of its CRLF,
 * else at R+2), 431 once max_header_bytes bytes are here without the empty
 * line. The one that fires at the smaller byte count wins (tie: 414). Both
 * conditions are monotone in n, so a prefix never disagrees with the whole.
 */
static inline int head_overflow(const uint8_t *buf, size_t start, size_t n,
                                int in_rline, const prg_http_limits *lim)
{
    const size_t R = lim->max_request_line, H = lim->max_header_bytes;
    if (in_rline && n > R) {
        size_t t = R + 1;
        if (buf[start + R] == '\r')
            t = (t == SIZE_MAX) ? SIZE_MAX : t + 1;
        if (n >= t && t <= H)
            return -414;
    }
    if (n >= H)
        return -431;
    return 0;
}

/* Returns 1 when the head is complete (p->head_len set), 0 when more bytes
 * are needed, a negative status on error. */
static int scan_head(prg_http_parser *p, const uint8_t *buf, size_t len,
                     const prg_http_limits *lim)
{
    size_t s = p->scanned;
    size_t start;

    if (len < s)
        return 0; /* caller broke the contract (shorter buffer): wait */
    if (p->state == ST_START) {
        for (;;) {
            uint8_t c;
            if (s >= len) {
                p->scanned = s;
                return 0;
            }
            c = buf[s];
            if (c == '\r') {
                if (len - s < 2) {
                    p->scanned = s;
                    return 0;
                }
                if (buf[s + 1] != '\n')
                    return -400;
                s += 2;
                if (s > lim->max_header_bytes)
                    return -400; /* endless empty lines */
                continue;
            }
            if (!(cls[c] & C_TCHAR))
                return -400; /* bare LF, or not a method */
            break;
        }
        p->chunk_left = s; /* request line start, see top of file */
        p->state = ST_RLINE;
    }
    start = (size_t)p->chunk_left;
    while (s < len) {
        const uint8_t *lf = memchr(buf + s, '\n', len - s);
        size_t j;
        int e;
        if (!lf)
            break;
        j = (size_t)(lf - buf);
        e = head_overflow(buf, start, j - start, p->state == ST_RLINE, lim);
        if (e)
            return e;
        if (buf[j - 1] != '\r')
            return -400; /* bare LF */
        s = j + 1;
        if (p->state == ST_RLINE) {
            p->state = ST_HEADERS;
        } else if (buf[j - 2] == '\n') {
            p->scanned = s;
            p->head_len = s;
            return 1;
        }
    }
    p->scanned = len;
    return head_overflow(buf, start, len - start, p->state == ST_RLINE, lim);
}

/* ------------------------------------------------------------------ */
/* Head parsing (the whole head is present, every LF follows a CR)      */
/* ------------------------------------------------------------------ */

typedef struct head_info {
    prg_slice method;
    prg_slice target;
    int version_minor;
    size_t rline_lf;  /* offset of the request line's LF */
    size_t head_end;  /* the head's length (through its empty line) */
    size_t header_count;
    unsigned flags;
    int64_t content_length;
} head_info;

/* ASCII case-insensitive equality with a lower-case literal made of
 * letters, digits and '-'. The bytes compared are validated field bytes,
 * so the |0x20 folding cannot alias a control character. */
static inline int ieq(const uint8_t *s, size_t n, const char *lit, size_t litn)
{
    size_t i;
    if (n != litn)
        return 0;
    /* The same |0x20 compare, a word at a time (the last word may overlap
     * the one before it). */
    if (n >= 8) {
        for (i = 0; i + 8 <= n; i += 8)
            if ((load64(s + i) | 0x20 * ONES64) != load64((const uint8_t *)lit + i))
                return 0;
        return i == n || (load64(s + n - 8) | 0x20 * ONES64) == load64((const uint8_t *)lit + n - 8);
    }
    if (n >= 4)
        return (load32(s) | 0x20202020u) == load32((const uint8_t *)lit) &&
               (load32(s + n - 4) | 0x20202020u) == load32((const uint8_t *)lit + n - 4);
    for (i = 0; i < n; i++)
        if ((uint8_t)(s[i] | 0x20) != (uint8_t)lit[i])
            return 0;
    return 1;
}

#define IEQ(s, n, lit) ieq((s), (n), lit, sizeof(lit) - 1)

static inline int is_ows(uint8_t c)
{
    return c == ' ' || c == '\t';
}

/* Next element of a comma-separated list in [*pp, end): OWS trimmed,
 * possibly empty. Returns 0 when the list is exhausted. */
static int next_elem(const uint8_t **pp, const uint8_t *end,
                     const uint8_t **es, const uint8_t **ee)
{
    const uint8_t *p = *pp;
    const uint8_t *e;
    if (p > end)
        return 0;
    while (p < end && is_ows(*p))
        p++;
    *es = p;
    e = p;
    while (e < end && *e != ',')
        e++;
    *pp = e + 1; /* past the comma; > end once the last element is taken */
    while (e > p && is_ows(e[-1]))
        e--;
    *ee = e;
    return 1;
}

typedef struct te_state {
    int chunked; /* times "chunked" appeared */
    int last;    /* the last coding seen is chunked */
    int other;   /* some other coding appeared */
} te_state;

static int parse_te(const uint8_t *v, const uint8_t *ve, te_state *te)
{
    const uint8_t *it = v, *es, *ee;
    while (next_elem(&it, ve, &es, &ee)) {
        const uint8_t *q = es;
        if (es == ee)
            return -400; /* empty value or empty list element */
        while (q < ee && (cls[*q] & C_TCHAR))
            q++;
        if (q == es)
            return -400;
        if (q == ee) {
            if (IEQ(es, (size_t)(q - es), "chunked")) {
                te->chunked++;
                te->last = 1;
            } else {
                te->other = 1;
                te->last = 0;
            }
            continue;
        }
        /* token OWS ";" parameters */
        {
            const uint8_t *r = q;
            while (r < ee && is_ows(*r))
                r++;
            if (r == ee || *r != ';')
                return -400;
            if (IEQ(es, (size_t)(q - es), "chunked"))
                return -400; /* chunked takes no parameters */
            te->other = 1;
            te->last = 0;
        }
    }
    return 0;
}

/*
 * Host field value (RFC 9112 3.2): uri-host [ ":" port ] (RFC 3986 3.2.2),
 * the empty value included. uri-host is an IP-literal or a reg-name (an
 * IPv4address is a reg-name too): reg-name = *( unreserved / pct-encoded /
 * sub-delims ), IP-literal = "[" ( IPv6address / IPvFuture ) "]", the
 * IPv6address checked loosely (hex digits, ':' and '.', two ':' at least),
 * IPvFuture = "v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" ); port =
 * *DIGIT. So no whitespace, userinfo ('@'), '/', '?', '#' or a second ':'.
 * One table lookup per byte, on the trimmed value [s, e).
 */
static int host_valid(const uint8_t *s, const uint8_t *e)
{
    if (s < e && *s == '[') {
        const uint8_t *q = s + 1, *h;
        if (q < e && (*q | 0x20) == 'v') {
            h = ++q;
            while (q < e && (cls[*q] & C_HEX))
                q++;
            if (q == h || q == e || *q != '.')
                return 0;
            h = ++q;
            while (q < e && ((cls[*q] & C_REG) || *q == ':'))
                q++;
            if (q == h)
                return 0;
        } else {
            int colons = 0;
            while (q < e && ((cls[*q] & C_HEX) || *q == ':' || *q == '.')) {
                colons += *q == ':';
                q++;
            }
            if (colons < 2)
                return 0;
        }
        if (q == e || *q != ']')
            return 0;
        s = q + 1;
    } else {
        while (s < e) {
            s = span_in(s, e, C_REG);
            if (s == e)
                break;
            if (*s == '%' && e - s >= 3 && (cls[s[1]] & C_HEX) &&
                (cls[s[2]] & C_HEX))
                s += 3;
            else
                break;
        }
    }
    if (s == e)
        return 1;
    if (*s != ':')
        return 0;
    return span_in(s + 1, e, C_DIGIT) == e;
}

/*
 * Parses the head at buf[start, ...). Two ways in:
 *   - scan_head found its end: every LF follows a CR, and the first empty
 *     line is the end (len is the head's length);
 *   - the fused fast path (prg_http_parse): nothing was scanned, but
 *     buf[len-4, len) is CRLFCRLF, so every loop below stops inside the
 *     buffer (at the latest at that CR). Here every line is checked to end
 *     in CRLF as it is parsed, and the first empty line ends the head; the
 *     caller takes the result only when it is a success, and otherwise
 *     parses the slow way (which gives the status in byte order).
 * Either way hi->head_end is set to the head's length, hi->rline_lf to the
 * offset of the request line's LF.
 */
static int parse_head(const uint8_t *buf, size_t start, size_t len,
                      const prg_http_limits *lim, prg_header *hdrs,
                      head_info *hi)
{
    const uint8_t *p = buf + start;
    const uint8_t *const bend = buf + len;
    const uint8_t *m, *t;
    const size_t max_headers = lim->max_headers;
    size_t n = 0;
    int minor;
    int host = 0, have_cl = 0, have_te = 0, conn_close = 0, conn_ka = 0;
    int expect = 0, expect_bad = 0;
    te_state te = {0, 0, 0};
    uint64_t cl = 0;
    unsigned flags = 0;

    /* method SP request-target SP HTTP-version CRLF. Every loop below
     * stops at the latest at the CR ending the line, and every compare
     * stops at the first mismatch, so nothing reads past the head. */
    m = p;
    if (load32(p) == load32((const uint8_t *)"GET "))
        p += 3;
    else
        p = span_to(p, C_TCHAR);
    if (p == m || *p != ' ')
        return -400;
    hi->method.ptr = m;
    hi->method.len = (size_t)(p - m);
    t = ++p;
    p = span_to(p, C_TARGET);
    if (p == t || *p != ' ')
        return -400;
    hi->target.ptr = t;
    hi->target.len = (size_t)(p - t);
    p++;
    if (bend - p >= 10 && load64(p) == load64((const uint8_t *)"HTTP/1.1") && p[8] == '\r' && p[9] == '\n') {
        minor = 1;
    } else if (p[0] == 'H' && p[1] == 'T' && p[2] == 'T' && p[3] == 'P' &&
        p[4] == '/' && p[5] >= '0' && p[5] <= '9' && p[6] == '.' &&
        p[7] >= '0' && p[7] <= '9' && p[8] == '\r' && p[9] == '\n') {
        if (p[5] != '1' || (p[7] != '0' && p[7] != '1'))
            return -505;
        minor = p[7] - '0';
    } else {
        return -400;
    }
    hi->rline_lf = (size_t)(p + 9 - buf);
    p += 10;

    while (!(p[0] == '\r' && p[1] == '\n')) {
        const uint8_t *name = p, *v, *ve = NULL;
        size_t nlen;
        int host_name = 0, host_ok = 0;
        /* "Host:" (the field every HTTP/1.1 request has), a word compare;
         * else the tchar run. At least 5 bytes are left: this line is not
         * the empty one, and the empty line follows. */
        if ((load32(p) | 0x20202020u) == load32((const uint8_t *)"host") && p[4] == ':') {
            p += 4;
            host_name = 1;
        } else {
            p = span_to(p, C_TCHAR);
        }
        if (p == name || *p != ':')
            return -400; /* obs-fold, empty name, space before colon... */
        nlen = (size_t)(p - name);
        p++;
        while (is_ows(*p))
            p++;
        v = p;
        if (host_name) {
            /* The usual Host value, reg-name [":" port] then OWS CRLF, is
             * checked in the pass that finds its end: every byte of it is a
             * field-value byte and host_valid would accept it. Anything else
             * (an IP literal, a pct-encoding, a byte host_valid refuses)
             * goes the general way below. The runs stop at the CR at the
             * latest (in neither class). */
            const uint8_t *q = span_to(p, C_REG), *r;
            if (*q == ':')
                q = span_to(q + 1, C_DIGIT);
            r = q;
            while (is_ows(*r))
                r++;
            if (r[0] == '\r' && r[1] == '\n') {
                ve = q;
                p = r;
                host_ok = 1;
            }
        }
        if (!host_ok) {
            p = span_value(p, bend);
            if (*p != '\r' || p[1] != '\n')
                return -400; /* control byte or bare CR in the value */
            ve = p;
            while (ve > v && is_ows(ve[-1]))
                ve--;
        }
        p += 2;
        if (n >= max_headers)
            return -431;
        hdrs[n].name.ptr = name;
        hdrs[n].name.len = nlen;
        hdrs[n].value.ptr = v;
        hdrs[n].value.len = (size_t)(ve - v);
        n++;

        switch (nlen) {
        case 4:
            if (host_ok || IEQ(name, nlen, "host")) {
                if (!host_ok && !host_valid(v, ve))
                    return -400; /* RFC 9112 3.2 */
                host++;
            }
            break;
        case 6:
            if (IEQ(name, nlen, "expect")) {
                if (IEQ(v, (size_t)(ve - v), "100-continue"))
                    expect = 1;
                else
                    expect_bad = 1;
            }
            break;
        case 10:
            if (IEQ(name, nlen, "connection")) {
                const uint8_t *it = v, *es, *ee;
                while (next_elem(&it, ve, &es, &ee)) {
                    size_t el = (size_t)(ee - es);
                    if (IEQ(es, el, "close"))
                        conn_close = 1;
                    else if (IEQ(es, el, "keep-alive"))
                        conn_ka = 1;
                }
            }
            break;
        case 14:
            if (IEQ(name, nlen, "content-length")) {
                const uint8_t *q;
                if (have_cl || v == ve)
                    return -400;
                have_cl = 1;
                for (q = v; q < ve; q++) {
                    unsigned d = (unsigned)*q - '0';
                    if (d > 9)
                        return -400;
                    if (cl > ((uint64_t)INT64_MAX - d) / 10)
                        return -400;
                    cl = cl * 10 + d;
                }
            }
            break;
        case 17:
            if (IEQ(name, nlen, "transfer-encoding")) {
                int e = parse_te(v, ve, &te);
                if (e)
                    return e;
                have_te = 1;
            }
            break;
        default:
            break;
        }
    }

    if (host > 1 || (minor == 1 && host == 0))
        return -400;
    if (have_te) {
        if (have_cl || minor == 0)
            return -400;
        if (te.chunked > 1 || (te.chunked == 1 && !te.last))
            return -400;
        if (te.other)
            return -501;
        flags |= PRG_REQ_CHUNKED;
    }
    if (expect_bad)
        return -417;
    if (expect && minor == 1) /* RFC 9110 10.1.1: ignored in HTTP/1.0 */
        flags |= PRG_REQ_EXPECT_CONTINUE;
    if (minor == 1 ? !conn_close : (conn_ka && !conn_close))
        flags |= PRG_REQ_KEEP_ALIVE;
    if (have_cl) {
        if (cl > (uint64_t)lim->max_body)
            return -413;
        flags |= PRG_REQ_HAS_CONTENT_LENGTH;
    }
    hi->version_minor = minor;
    hi->head_end = (size_t)(p + 2 - buf);
    hi->header_count = n;
    hi->flags = flags;
    hi->content_length = have_cl ? (int64_t)cl : -1;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Chunked body, decoded in place                                       */
/* ------------------------------------------------------------------ */

static inline unsigned hexval(uint8_t c)
{
    return c <= '9' ? (unsigned)(c - '0') : (unsigned)((c | 0x20) - 'a' + 10);
}

/*
 * One byte of the chunk-size line after the size (RFC 9112 7.1, 7.1.1):
 *   chunk-ext      = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
 *   chunk-ext-name = token
 *   chunk-ext-val  = token / quoted-string     (RFC 9110 5.6.4)
 * so whitespace is allowed only before ';', around '=' and after ';', never
 * before the CRLF. Returns the next phase: CS_SIZE_LF for a CR where the line
 * may end, CS_EXT_BAD for a byte the grammar does not allow there (400).
 * Extensions are checked, then ignored.
 */
static unsigned chunk_ext_next(unsigned st, uint8_t c)
{
    const int tchar = (cls[c] & C_TCHAR) != 0;
    switch (st) {
    case CS_BWS:
        return c == ';' ? CS_EXT : is_ows(c) ? CS_BWS : CS_EXT_BAD;
    case CS_EXT:
        return tchar ? CS_EXT_NAME : is_ows(c) ? CS_EXT : CS_EXT_BAD;
    case CS_EXT_NAME:
    case CS_EXT_NAME_BWS:
        if (tchar && st == CS_EXT_NAME)
            return CS_EXT_NAME;
        if (c == '\r' && st == CS_EXT_NAME)
            return CS_SIZE_LF;
        return c == '=' ? CS_EXT_VAL : c == ';' ? CS_EXT : is_ows(c) ? CS_EXT_NAME_BWS : CS_EXT_BAD;
    case CS_EXT_VAL:
        return c == '"' ? CS_EXT_QS : tchar ? CS_EXT_TOKEN : is_ows(c) ? CS_EXT_VAL : CS_EXT_BAD;
    case CS_EXT_QS: /* qdtext: HTAB, SP, VCHAR but '"' and '\\', obs-text */
        return c == '"' ? CS_EXT_QEND : c == '\\' ? CS_EXT_QP : (cls[c] & C_VALUE) ? CS_EXT_QS : CS_EXT_BAD;
    case CS_EXT_QP: /* HTAB, SP, VCHAR, obs-text */
        return (cls[c] & C_VALUE) ? CS_EXT_QS : CS_EXT_BAD;
    case CS_EXT_TOKEN:
    case CS_EXT_QEND:
        if (tchar && st == CS_EXT_TOKEN)
            return CS_EXT_TOKEN;
        if (c == '\r')
            return CS_SIZE_LF;
        return c == ';' ? CS_EXT : is_ows(c) ? CS_EXT_VAL_BWS : CS_EXT_BAD;
    default: /* CS_EXT_VAL_BWS */
        return c == ';' ? CS_EXT : is_ows(c) ? CS_EXT_VAL_BWS : CS_EXT_BAD;
    }
}

/* Returns 1 when the last chunk and trailers are consumed, 0 when more
 * bytes are needed (state saved), a negative status on error. */
static int decode_chunked(prg_http_parser *p, uint8_t *buf, size_t len,
                          const prg_http_limits *lim)
{
    const size_t base = p->head_len;
    size_t r = base + p->body_read;     /* next raw byte */
    size_t w = base + p->body_decoded;  /* next decoded byte (w <= r) */
    unsigned st = (unsigned)p->chunk_state & 0xFFu;
    unsigned cnt = (unsigned)p->chunk_state >> 8;
    uint64_t left = p->chunk_left;
    const size_t line_max =
        lim->max_request_line < CNT_MAX ? lim->max_request_line : CNT_MAX;
    int rc = 0;

    while (r < len) {
        uint8_t c;
        if (st == CS_DATA) {
            size_t n = len - r;
            if ((uint64_t)n > left)
                n = (size_t)left;
            if (w != r)
                memmove(buf + w, buf + r, n);
            w += n;
            r += n;
            left -= n;
            if (left == 0)
                st = CS_DATA_CR;
            continue;
        }
        c = buf[r++];
        switch (st) {
        case CS_SIZE:
            if (cls[c] & C_HEX) {
                if (cnt >= 16) {
                    rc = -400; /* more than 16 hex digits */
                    goto out;
                }
                left = (left << 4) | hexval(c);
                cnt++;
                break;
            }
            if (cnt == 0) {
                rc = -400;
                goto out;
            }
            if (c == '\r')
                st = CS_SIZE_LF;
            else if (c == ';')
                st = CS_EXT;
            else if (is_ows(c))
                st = CS_BWS;
            else {
                rc = -400;
                goto out;
            }
            if (left > (uint64_t)(lim->max_body - (w - base))) {
                rc = -413;
                goto out;
            }
            cnt++;
            break;
        case CS_BWS:
        case CS_EXT:
        case CS_EXT_NAME:
        case CS_EXT_NAME_BWS:
        case CS_EXT_VAL:
        case CS_EXT_TOKEN:
        case CS_EXT_QS:
        case CS_EXT_QP:
        case CS_EXT_QEND:
        case CS_EXT_VAL_BWS:
            st = chunk_ext_next(st, c);
            if (st == CS_EXT_BAD) {
                rc = -400;
                goto out;
            }
            if (st == CS_SIZE_LF)
                break; /* the CR does not count toward the line */
            if (cnt >= line_max) {
                rc = -400; /* chunk-size line over max_request_line */
                goto out;
            }
            cnt++;
            break;
        case CS_SIZE_LF:
            if (c != '\n') {
                rc = -400;
                goto out;
            }
            cnt = 0;
            /* after the last chunk, left (0) counts trailer bytes */
            st = left ? CS_DATA : CS_TR_START;
            break;
        case CS_DATA_CR:
            if (c != '\r') {
                rc = -400;
                goto out;
            }
            st = CS_DATA_LF;
            break;
        case CS_DATA_LF:
            if (c != '\n') {
                rc = -400;
                goto out;
            }
            st = CS_SIZE;
            cnt = 0;
            left = 0;
            break;
        default: /* trailer section */
            if (left >= (uint64_t)lim->max_header_bytes) {
                rc = -431;
                goto out;
            }
            left++;
            switch (st) {
            case CS_TR_START:
                if (c == '\r') {
                    st = CS_TR_END;
                    break;
                }
                if (!(cls[c] & C_TCHAR)) {
                    rc = -400; /* obs-fold, empty name, control... */
                    goto out;
                }
                if ((size_t)cnt >= lim->max_headers) {
                    rc = -431;
                    goto out;
                }
                if (cnt < CNT_MAX)
                    cnt++;
                st = CS_TR_NAME;
                break;
            case CS_TR_NAME:
                if (c == ':')
                    st = CS_TR_VALUE;
                else if (!(cls[c] & C_TCHAR)) {
                    rc = -400;
                    goto out;
                }
                break;
            case CS_TR_VALUE:
                if (c == '\r')
                    st = CS_TR_LF;
                else if (!(cls[c] & C_VALUE)) {
                    rc = -400;
                    goto out;
                }
                break;
            case CS_TR_LF:
                if (c != '\n') {
                    rc = -400;
                    goto out;
                }
                st = CS_TR_START;
                break;
            default: /* CS_TR_END */
                if (c != '\n') {
                    rc = -400;
                    goto out;
                }
                rc = 1;
                goto out;
            }
            break;
        }
    }
out:
    p->body_read = r - base;
    p->body_decoded = w - base;
    p->chunk_left = left;
    p->chunk_state = (int)((cnt << 8) | st);
    return rc;
}

size_t prg_http_compact(prg_http_parser *p, uint8_t *buf, size_t len)
{
    if (p->state != ST_BODY_CHUNKED || p->body_read == p->body_decoded)
        return 0;
    size_t from = p->head_len + p->body_read;
    size_t to = p->head_len + p->body_decoded;
    if (from > len)
        return 0; /* caller broke the contract */
    memmove(buf + to, buf + from, len - from);
    /* The decoder resumes at body_read: the raw bytes now follow the
     * decoded ones directly, and nothing else in the state is positional. */
    p->body_read = p->body_decoded;
    return from - to;
}

/* ------------------------------------------------------------------ */
/* Entry point                                                          */
/* ------------------------------------------------------------------ */

static void fill_request(const prg_http_parser *p, uint8_t *buf,
                         const head_info *hi, prg_request *req,
                         prg_header *headers)
{
    req->method = hi->method;
    req->target = hi->target;
    req->version_minor = hi->version_minor;
    req->flags = p->flags;
    req->headers = headers;
    req->header_count = hi->header_count;
    req->body.ptr = buf + p->head_len;
    req->body.len = (p->flags & PRG_REQ_CHUNKED) ? p->body_decoded
                                                 : p->body_read;
    req->content_length = p->content_length;
}

int64_t prg_http_parse(prg_http_parser *p, uint8_t *buf, size_t len,
                       const prg_http_limits *limits,
                       prg_request *req, prg_header *headers)
{
    prg_http_limits defaults;
    head_info hi;
    int have_hi = 0;
    int rc;

    if (p->state < 0)
        return p->state;
    if (!limits) {
        prg_http_limits_default(&defaults);
        limits = &defaults;
    }

    if (p->state < ST_BODY_CL) {
        /* Fused fast path: a new request whose bytes end in CRLFCRLF (the
         * usual case) is parsed in one pass, the lines checked as they are
         * parsed instead of scanned for first. Taken only when it succeeds
         * and scan_head would have found no limit passed on the way (both
         * limit conditions grow with the byte count, so the request line's
         * LF and the last LF decide); anything else is parsed the slow way,
         * which answers in byte order. */
        if (p->state == ST_START && p->scanned == 0 && len >= 4 &&
            load32(buf + len - 4) == load32((const uint8_t *)"\r\n\r\n") &&
            parse_head(buf, 0, len, limits, headers, &hi) == 0 &&
            head_overflow(buf, 0, hi.rline_lf, 1, limits) == 0 &&
            head_overflow(buf, 0, hi.head_end - 1, 0, limits) == 0) {
            p->scanned = p->head_len = hi.head_end;
        } else {
            rc = scan_head(p, buf, len, limits);
            if (rc <= 0)
                goto out;
            rc = parse_head(buf, (size_t)p->chunk_left, p->head_len, limits,
                            headers, &hi);
            if (rc < 0)
                goto out;
        }
        have_hi = 1;
        p->flags = hi.flags;
        p->content_length = hi.content_length;
        p->chunk_left = 0;
        p->chunk_state = CS_SIZE;
        p->body_read = 0;
        p->body_decoded = 0;
        if (hi.flags & PRG_REQ_CHUNKED)
            p->state = ST_BODY_CHUNKED;
        else if (hi.content_length > 0)
            p->state = ST_BODY_CL;
        else
            p->state = ST_DONE;
    }

    if (p->state == ST_BODY_CL) {
        uint64_t need = (uint64_t)p->content_length;
        if (len < p->head_len || (uint64_t)(len - p->head_len) < need)
            return 0;
        p->body_read = (size_t)need;
        p->state = ST_DONE;
    } else if (p->state == ST_BODY_CHUNKED) {
        rc = decode_chunked(p, buf, len, limits);
        if (rc <= 0)
            goto out;
        p->state = ST_DONE;
    }

    /* ST_DONE */
    if (len < p->head_len + p->body_read)
        return 0; /* caller broke the contract (shorter buffer) */
    if (!have_hi) {
        /* The head was parsed in an earlier call and is known valid: parse
         * it again for the slices at the current buffer address. */
        size_t start = 0;
        while (buf[start] == '\r')
            start += 2;
        rc = parse_head(buf, start, p->head_len, limits, headers, &hi);
        if (rc < 0)
            goto out; /* unreachable unless the caller changed the head */
    }
    fill_request(p, buf, &hi, req, headers);
    return (int64_t)(p->head_len + p->body_read);

out:
    if (rc < 0)
        p->state = rc;
    return rc;
}

/* ------------------------------------------------------------------ */
/* Streamed bodies: the head first, then the body span by span          */
/* ------------------------------------------------------------------ */

int prg_http_head_view(const prg_http_parser *p, const uint8_t *buf,
                       size_t len, const prg_http_limits *limits,
                       prg_request *req, prg_header *headers)
{
    prg_http_limits defaults;
    head_info hi;
    size_t start = 0;
    int rc;

    if (p->state < 0)
        return p->state;
    if (p->state < ST_BODY_CL || len < p->head_len)
        return -500; /* no complete head in buf: the caller's mistake */
    if (!limits) {
        prg_http_limits_default(&defaults);
        limits = &defaults;
    }
    while (buf[start] == '\r')
        start += 2; /* leading empty lines, as prg_http_parse skipped them */
    rc = parse_head(buf, start, p->head_len, limits, headers, &hi);
    if (rc < 0)
        return rc;
    /* fill_request wants a writable buffer only for its type: nothing is
     * written through it. */
    fill_request(p, (uint8_t *)(uintptr_t)buf, &hi, req, headers);
    req->body.len = 0;
    return 0;
}

int64_t prg_http_body_next(prg_http_parser *p, uint8_t *buf, size_t len,
                           const prg_http_limits *limits, size_t *decoded,
                           int *done)
{
    prg_http_limits lim;

    *decoded = 0;
    *done = 0;
    if (p->state < 0)
        return p->state;
    if (p->state == ST_DONE) {
        *done = 1;
        return 0;
    }
    if (p->state != ST_BODY_CL && p->state != ST_BODY_CHUNKED)
        return -500; /* head not complete: the caller's mistake */
    if (limits)
        lim = *limits;
    else
        prg_http_limits_default(&lim);

    if (p->state == ST_BODY_CL) {
        uint64_t left;
        size_t n;
        if ((uint64_t)p->content_length > (uint64_t)lim.max_body) {
            p->state = -413;
            return -413;
        }
        left = (uint64_t)p->content_length - p->body_read;
        n = (uint64_t)len < left ? len : (size_t)left;
        p->body_read += n;
        p->body_decoded += n;
        if ((uint64_t)p->body_read == (uint64_t)p->content_length) {
            p->state = ST_DONE;
            *done = 1;
        }
        *decoded = n;
        return (int64_t)n;
    }

    /* Chunked: the ordinary decoder, run on buf as if the body started at
     * buf[0] (head_len 0, nothing read yet), with the limit left over from
     * what earlier calls decoded. Its state (chunk phase, bytes left in the
     * chunk, trailer counts) carries over between calls as it does between
     * prg_http_parse calls; body_read and body_decoded keep the totals. */
    {
        size_t head_len = p->head_len;
        size_t total_read = p->body_read;
        size_t total_decoded = p->body_decoded;
        size_t used, dec;
        int rc;

        lim.max_body = lim.max_body > total_decoded ? lim.max_body - total_decoded : 0;
        p->head_len = 0;
        p->body_read = 0;
        p->body_decoded = 0;
        rc = decode_chunked(p, buf, len, &lim);
        used = p->body_read;
        dec = p->body_decoded;
        p->head_len = head_len;
        p->body_read = total_read + used;
        p->body_decoded = total_decoded + dec;
        if (rc < 0) {
            p->state = rc;
            if (dec == 0)
                return rc;
            /* The body decoded before the bad byte is still the body: it
             * goes out first, the error on the next call. */
            *decoded = dec;
            return (int64_t)used;
        }
        if (rc == 1) {
            p->state = ST_DONE;
            *done = 1;
        }
        *decoded = dec;
        return (int64_t)used;
    }
}

/* ------------------------------------------------------------------ */

const char *prg_status_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 426: return "Upgrade Required";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}
