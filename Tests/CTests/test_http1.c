/*
 * test_http1.c: table-driven tests of the HTTP/1.1 request parser
 * (csrc/http1.c). Standalone: uses only the prg_http_* functions.
 *
 *   clang -std=c11 -Wall -Wextra -Werror -pedantic -Wshadow -Wconversion \
 *     -Wno-sign-conversion -O1 -g -fsanitize=address,undefined \
 *     -fno-sanitize-recover=all -Icsrc/include csrc/http1.c \
 *     Tests/CTests/test_http1.c -o /tmp/test_http1 && /tmp/test_http1
 *
 * Every case is fed (1) whole, (2) split into two calls at every offset,
 * both into one buffer and into a buffer copied to a fresh allocation
 * between calls, (3) one byte at a time in place and (4) one byte at a
 * time with a fresh allocation per call. All runs must give the identical
 * outcome (result, flags, slice offsets, consumed bytes as decoded).
 * Fresh allocations are exactly as long as the bytes passed, so ASan
 * catches any read past len, and the old one is freed, so it catches any
 * stored pointer.
 */
#include "peregrine.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RES_ALL INT64_MAX /* expected result: the whole input is consumed */

typedef struct hv {
    const char *name;
    const char *value;
} hv;

typedef struct tcase {
    const char *name;
    const char *raw;
    size_t raw_len;
    int64_t result;   /* < 0 error status, 0 incomplete, > 0 consumed, RES_ALL */
    const char *method;
    const char *target;
    int minor;
    int nhdr;         /* expected header_count */
    hv hdr[6];        /* hdr[i] (when name != NULL) must equal headers[i] */
    const char *body; /* NULL: empty */
    size_t body_len;  /* 0: strlen(body) */
    unsigned flags;   /* exact PRG_REQ_* (also checked for incomplete cases with hc) */
    int hc;           /* incomplete cases: expected prg_http_head_complete */
    const prg_http_limits *limits; /* NULL: defaults */
} tcase;

#define RAW(s) .raw = (s), .raw_len = sizeof(s) - 1
#define KA PRG_REQ_KEEP_ALIVE
#define CH PRG_REQ_CHUNKED
#define EC PRG_REQ_EXPECT_CONTINUE
#define CL PRG_REQ_HAS_CONTENT_LENGTH

/* One GET with Host value v (a string literal): accepted as is, or 400. */
#define HOST_OK(v)                                                          \
    {.name = "Host " v, RAW("GET / HTTP/1.1\r\nHost: " v "\r\n\r\n"),      \
     .result = RES_ALL, .method = "GET", .target = "/", .minor = 1,        \
     .nhdr = 1, .hdr = {{"Host", v}}, .flags = KA}
#define HOST_BAD(v)                                                         \
    {.name = "Host " v, RAW("GET / HTTP/1.1\r\nHost: " v "\r\n\r\n"),      \
     .result = -400}

/* request line <= 32, head <= 64, <= 4 headers, body <= 16 */
static const prg_http_limits L_small = {32, 64, 4, 16};
/* body <= 10 */
static const prg_http_limits L_body10 = {8192, 16384, 100, 10};
/* request line 64 > header bytes 40: 431 fires first */
static const prg_http_limits L_hb_first = {64, 40, 100, 100};

#define GET11 "GET / HTTP/1.1\r\nHost: a\r\n\r\n"
#define POST5 "POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
#define CHUNKED_HEAD "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"

static const tcase cases[] = {
    /* ---------------- valid requests ---------------- */
    {.name = "simple GET", RAW(GET11), .result = RES_ALL, .method = "GET",
     .target = "/", .minor = 1, .nhdr = 1, .hdr = {{"Host", "a"}}, .flags = KA},
    {.name = "typical GET with 6 headers",
     RAW("GET /index.html?q=1&r=2 HTTP/1.1\r\nHost: example.com\r\n"
         "User-Agent: curl/8.0\r\nAccept: */*\r\nAccept-Encoding: gzip, br\r\n"
         "Cookie: a=b; c=d\r\nX-Request-Id: 1234\r\n\r\n"),
     .result = RES_ALL, .method = "GET", .target = "/index.html?q=1&r=2",
     .minor = 1, .nhdr = 6,
     .hdr = {{"Host", "example.com"}, {"User-Agent", "curl/8.0"},
             {"Accept", "*/*"}, {"Accept-Encoding", "gzip, br"},
             {"Cookie", "a=b; c=d"}, {"X-Request-Id", "1234"}},
     .flags = KA},
    {.name = "OWS around values",
     RAW("GET / HTTP/1.1\r\nHost:   a  \r\nX-A:\t b \t\r\nX-B:c\r\n\r\n"),
     .result = RES_ALL, .method = "GET", .target = "/", .minor = 1, .nhdr = 3,
     .hdr = {{"Host", "a"}, {"X-A", "b"}, {"X-B", "c"}}, .flags = KA},
    {.name = "empty and whitespace-only values",
     RAW("GET / HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nX-Ws:  \t \r\n\r\n"),
     .result = RES_ALL, .method = "GET", .target = "/", .minor = 1, .nhdr = 3,
     .hdr = {{"Host", "a"}, {"X-Empty", ""}, {"X-Ws", ""}}, .flags = KA},
    {.name = "inner whitespace kept",
     RAW("GET / HTTP/1.1\r\nHost: a\r\nX: a  \tb c\r\n\r\n"), .result = RES_ALL,
     .method = "GET", .target = "/", .minor = 1, .nhdr = 2,
     .hdr = {[1] = {"X", "a  \tb c"}}, .flags = KA},
    {.name = "obs-text in value",
     RAW("GET / HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9 \x80\xff\r\n\r\n"),
     .result = RES_ALL, .method = "GET", .target = "/", .minor = 1, .nhdr = 2,
     .hdr = {[1] = {"X", "caf\xc3\xa9 \x80\xff"}}, .flags = KA},
    {.name = "name case preserved",
     RAW("GET / HTTP/1.1\r\nhOsT: a\r\nX-MiXeD: V\r\n\r\n"), .result = RES_ALL,
     .method = "GET", .target = "/", .minor = 1, .nhdr = 2,
     .hdr = {{"hOsT", "a"}, {"X-MiXeD", "V"}}, .flags = KA},
    {.name = "empty Host value is a Host", RAW("GET / HTTP/1.1\r\nHost:\r\n\r\n"),
     .result = RES_ALL, .method = "GET", .target = "/", .minor = 1, .nhdr = 1,
     .hdr = {{"Host", ""}}, .flags = KA},
    {.name = "HTTP/1.0 without Host, closes", RAW("GET / HTTP/1.0\r\n\r\n"),
     .result = RES_ALL, .method = "GET", .target = "/", .minor = 0, .nhdr = 0,
     .flags = 0},
    {.name = "HTTP/1.0 keep-alive",
     RAW("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"), .result = RES_ALL,
     .method = "GET", .target = "/", .minor = 0, .nhdr = 1, .flags = KA},
    {.name = "HTTP/1.0 Keep-Alive mixed case in list",
     RAW("GET / HTTP/1.0\r\nHost: a\r\nConnection: Upgrade , Keep-Alive\r\n\r\n"),
     .result = RES_ALL, .method = "GET", .target = "/", .minor = 0, .nhdr = 2,
     .flags = KA},
    {.name = "HTTP/1.0 keep-alive and close: close",
     RAW("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"),
     .result = RES_ALL, .method = "GET", .target = "/", .minor = 0, .nhdr = 1,
     .flags = 0},
    {.name = "HTTP/1.0 Connection: close", RAW("GET / HTTP/1.0\r\nConnection: close\r\n\r\n"),
     .result = RES_ALL, .method = "GET", .target = "/", .minor = 0, .nhdr = 1,
     .flags = 0},
    {.name = "HTTP/1.1 Connection: close",
     RAW("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"), .result = RES_ALL,
     .method = "GET", .target = "/", .minor = 1, .nhdr = 2, .flags = 0},
    {.name = "HTTP/1.1 Connection: foo, CLOSE",
     RAW("GET / HTTP/1.1\r\nHost: a\r\nConnection: foo,,CLOSE\r\n\r\n"),
     .result = RES_ALL, .method = "GET", .target = "/", .minor = 1, .nhdr = 2,
     .flags = 0},
    {.name = "HTTP/1.1 Connection: keep-alive",
     RAW("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n"),
     .result = RES_ALL, .method = "GET", .target = "/", .minor = 1, .nhdr = 2,
     .flags = KA},
    {.name = "HTTP/1.1 Connection: closed is not close",
     RAW("GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n"),
     .result = RES_ALL, .method = "GET", .target = "/", .minor = 1, .nhdr = 2,
     .flags = KA},
    {.name = "pipelined GET GET", RAW(GET11 "GET /2 HTTP/1.1\r\nHost: b\r\n\r\n"),
     .result = sizeof(GET11) - 1, .method = "GET", .target = "/", .minor = 1,
     .nhdr = 1, .hdr = {{"Host", "a"}}, .flags = KA},
    {.name = "pipelined POST GET", RAW(POST5 GET11), .result = sizeof(POST5) - 1,
     .method = "POST", .target = "/p", .minor = 1, .nhdr = 2, .body = "hello",
     .flags = KA | CL},
    {.name = "pipelined partial second", RAW(GET11 "GET /2 HT"),
     .result = sizeof(GET11) - 1, .method = "GET", .target = "/", .minor = 1,
     .nhdr = 1, .flags = KA},
    {.name = "Content-Length body", RAW(POST5), .result = RES_ALL, .method = "POST",
     .target = "/p", .minor = 1, .nhdr = 2,
     .hdr = {[1] = {"Content-Length", "5"}}, .body = "hello", .flags = KA | CL},
    {.name = "Content-Length 0",
     RAW("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"),
     .result = RES_ALL, .method = "POST", .target = "/", .minor = 1, .nhdr = 2,
     .flags = KA | CL},
    {.name = "Content-Length leading zeros",
     RAW("POST / HTTP/1.1\r\nHost: a\r\ncontent-length:  007 \r\n\r\nabcdefg"),
     .result = RES_ALL, .method = "POST", .target = "/", .minor = 1, .nhdr = 2,
     .body = "abcdefg", .flags = KA | CL},
    {.name = "binary body with NUL and CRLF",
     RAW("PUT /b HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n\r\n\0\r\n\n\r\xff"),
     .result = RES_ALL, .method = "PUT", .target = "/b", .minor = 1, .nhdr = 2,
     .body = "\0\r\n\n\r\xff", .body_len = 6, .flags = KA | CL},
    {.name = "Content-Length body incomplete",
     RAW("POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhel"), .result = 0,
     .hc = 1, .flags = KA | CL},
    {.name = "body exactly max_body",
     RAW("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789"),
     .result = RES_ALL, .method = "POST", .target = "/", .minor = 1, .nhdr = 2,
     .body = "0123456789", .flags = KA | CL, .limits = &L_body10},
    {.name = "HTTP/1.0 with body",
     RAW("POST / HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi"), .result = RES_ALL,
     .method = "POST", .target = "/", .minor = 0, .nhdr = 1, .body = "hi",
     .flags = CL},
    {.name = "chunked simple", RAW(CHUNKED_HEAD "5\r\nhello\r\n0\r\n\r\n"),
     .result = RES_ALL, .method = "POST", .target = "/c", .minor = 1, .nhdr = 2,
     .hdr = {[1] = {"Transfer-Encoding", "chunked"}}, .body = "hello",
     .flags = KA | CH},
    {.name = "chunked several, hex case",
     RAW(CHUNKED_HEAD "a\r\n0123456789\r\nB\r\nabcdefghijk\r\n1\r\nZ\r\n000\r\n\r\n"),
     .result = RES_ALL, .method = "POST", .target = "/c", .minor = 1, .nhdr = 2,
     .body = "0123456789abcdefghijkZ", .flags = KA | CH},
    {.name = "chunked with extensions",
     RAW(CHUNKED_HEAD "5;foo=bar\r\nhello\r\n6 ;a=\"q s;\\\"x\" ; b\r\n world\r\n"
                      "0;last=\xe2\x9c\x93\t\r\n\r\n"),
     .result = RES_ALL, .method = "POST", .target = "/c", .minor = 1, .nhdr = 2,
     .body = "hello world", .flags = KA | CH},
    {.name = "chunked with trailers",
     RAW(CHUNKED_HEAD "3\r\nabc\r\n0\r\nX-Trailer: 1\r\nChecksum:  ab cd \r\n\r\n"),
     .result = RES_ALL, .method = "POST", .target = "/c", .minor = 1, .nhdr = 2,
     .body = "abc", .flags = KA | CH},
    {.name = "chunked data containing CRLF and NUL",
     RAW(CHUNKED_HEAD "4\r\n\r\n\0\n\r\n2\r\n0\r\r\n0\r\n\r\n"), .result = RES_ALL,
     .method = "POST", .target = "/c", .minor = 1, .nhdr = 2,
     .body = "\r\n\0\n0\r", .body_len = 6, .flags = KA | CH},
    {.name = "chunked leading zeros 16 digits",
     RAW(CHUNKED_HEAD "0000000000000003\r\nabc\r\n0\r\n\r\n"), .result = RES_ALL,
     .method = "POST", .target = "/c", .minor = 1, .nhdr = 2, .body = "abc",
     .flags = KA | CH},
    {.name = "chunked empty body", RAW(CHUNKED_HEAD "0\r\n\r\n"), .result = RES_ALL,
     .method = "POST", .target = "/c", .minor = 1, .nhdr = 2, .flags = KA | CH},
    {.name = "chunked then pipelined",
     RAW(CHUNKED_HEAD "2\r\nhi\r\n0\r\n\r\n" GET11),
     .result = sizeof(CHUNKED_HEAD "2\r\nhi\r\n0\r\n\r\n") - 1, .method = "POST",
     .target = "/c", .minor = 1, .nhdr = 2, .body = "hi", .flags = KA | CH},
    {.name = "chunked incomplete", RAW(CHUNKED_HEAD "5\r\nhello\r\n0\r\n"),
     .result = 0, .hc = 1, .flags = KA | CH},
    {.name = "chunked total exactly max_body",
     RAW(CHUNKED_HEAD "6\r\n012345\r\n4\r\n6789\r\n0\r\n\r\n"), .result = RES_ALL,
     .method = "POST", .target = "/c", .minor = 1, .nhdr = 2, .body = "0123456789",
     .flags = KA | CH, .limits = &L_body10},
    {.name = "TE Chunked case-insensitive with OWS",
     RAW("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:  ChUnKeD \r\n\r\n"
         "1\r\nx\r\n0\r\n\r\n"),
     .result = RES_ALL, .method = "POST", .target = "/", .minor = 1, .nhdr = 2,
     .body = "x", .flags = KA | CH},
    {.name = "TE chunked with Connection: close",
     RAW("POST / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
         "Transfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n"),
     .result = RES_ALL, .method = "POST", .target = "/", .minor = 1, .nhdr = 3,
     .body = "x", .flags = CH},
    {.name = "Expect 100-continue with body",
     RAW("PUT /u HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
         "Content-Length: 3\r\n\r\nabc"),
     .result = RES_ALL, .method = "PUT", .target = "/u", .minor = 1, .nhdr = 3,
     .body = "abc", .flags = KA | EC | CL},
    {.name = "Expect 100-continue head only",
     RAW("PUT /u HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\n"
         "Content-Length: 3\r\n\r\n"),
     .result = 0, .hc = 1, .flags = KA | EC | CL},
    {.name = "Expect 100-continue chunked head only",
     RAW("PUT /u HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
         "Transfer-Encoding: chunked\r\n\r\n"),
     .result = 0, .hc = 1, .flags = KA | EC | CH},
    {.name = "Expect 100-continue ignored in HTTP/1.0",
     RAW("PUT /u HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nz"),
     .result = RES_ALL, .method = "PUT", .target = "/u", .minor = 0, .nhdr = 2,
     .body = "z", .flags = CL},
    {.name = "leading CRLFs skipped", RAW("\r\n\r\n" GET11), .result = RES_ALL,
     .method = "GET", .target = "/", .minor = 1, .nhdr = 1, .flags = KA},
    {.name = "leading CRLFs with body", RAW("\r\n" POST5), .result = RES_ALL,
     .method = "POST", .target = "/p", .minor = 1, .nhdr = 2, .body = "hello",
     .flags = KA | CL},
    {.name = "leading CRLF chunked", RAW("\r\n" CHUNKED_HEAD "1\r\nq\r\n0\r\n\r\n"),
     .result = RES_ALL, .method = "POST", .target = "/c", .minor = 1, .nhdr = 2,
     .body = "q", .flags = KA | CH},
    {.name = "token methods", RAW("M-SEARCH * HTTP/1.1\r\nHost: a\r\n\r\n"),
     .result = RES_ALL, .method = "M-SEARCH", .target = "*", .minor = 1, .nhdr = 1,
     .flags = KA},
    {.name = "lower-case method is a token", RAW("get / HTTP/1.1\r\nHost: a\r\n\r\n"),
     .result = RES_ALL, .method = "get", .target = "/", .minor = 1, .nhdr = 1,
     .flags = KA},
    {.name = "absolute-form target",
     RAW("GET http://h.example:8080/a/b?c=d&e=%20#f HTTP/1.1\r\nHost: h.example\r\n\r\n"),
     .result = RES_ALL, .method = "GET", .target = "http://h.example:8080/a/b?c=d&e=%20#f",
     .minor = 1, .nhdr = 1, .flags = KA},
    {.name = "CONNECT authority-form",
     RAW("CONNECT h.example:443 HTTP/1.1\r\nHost: h.example:443\r\n\r\n"),
     .result = RES_ALL, .method = "CONNECT", .target = "h.example:443", .minor = 1,
     .nhdr = 1, .flags = KA},
    {.name = "request line exactly max",
     RAW("GET /aaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: a\r\n\r\n"), .result = RES_ALL,
     .method = "GET", .target = "/aaaaaaaaaaaaaaaaaa", .minor = 1, .nhdr = 1,
     .flags = KA, .limits = &L_small},
    {.name = "request line max plus CR waits",
     RAW("GET /aaaaaaaaaaaaaaaaaa HTTP/1.1\r"), .result = 0, .limits = &L_small},
    {.name = "head exactly max_header_bytes",
     RAW("GET /aaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: a\r\nX: bbbbbbbbbbbbbb\r\n\r\n"),
     .result = RES_ALL, .method = "GET", .target = "/aaaaaaaaaaaaaaaaaa", .minor = 1,
     .nhdr = 2, .hdr = {[1] = {"X", "bbbbbbbbbbbbbb"}}, .flags = KA,
     .limits = &L_small},
    {.name = "exactly max_headers",
     RAW("GET / HTTP/1.1\r\nHost: a\r\nB: 1\r\nC: 2\r\nD: 3\r\n\r\n"),
     .result = RES_ALL, .method = "GET", .target = "/", .minor = 1, .nhdr = 4,
     .hdr = {[3] = {"D", "3"}}, .flags = KA, .limits = &L_small},
    {.name = "empty input", .raw = "", .raw_len = 0, .result = 0},
    {.name = "only CRLF", RAW("\r\n"), .result = 0},
    {.name = "head incomplete", RAW("GET / HTTP/1.1\r\nHost: a\r\n"), .result = 0},
    {.name = "head incomplete after CR", RAW("GET / HTTP/1.1\r\nHost: a\r\n\r"),
     .result = 0},

    /* ---------------- line endings ---------------- */
    {.name = "bare LF ends request line", RAW("GET / HTTP/1.1\nHost: a\r\n\r\n"),
     .result = -400},
    {.name = "bare LF ends header", RAW("GET / HTTP/1.1\r\nHost: a\n\r\n"),
     .result = -400},
    {.name = "bare LF as empty line", RAW("GET / HTTP/1.1\r\nHost: a\r\n\n"),
     .result = -400},
    {.name = "bare LF all lines", RAW("GET / HTTP/1.1\nHost: a\n\n"), .result = -400},
    {.name = "bare CR in value", RAW("GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n"),
     .result = -400},
    {.name = "bare CR in request line", RAW("GET /\r HTTP/1.1\r\nHost: a\r\n\r\n"),
     .result = -400},
    {.name = "bare CR as empty line", RAW("GET / HTTP/1.1\r\nHost: a\r\n\rX\r\n\r\n"),
     .result = -400},
    {.name = "CR CR LF", RAW("GET / HTTP/1.1\r\r\nHost: a\r\n\r\n"), .result = -400},
    {.name = "leading bare LF", RAW("\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"),
     .result = -400},
    {.name = "leading bare CR", RAW("\rGET / HTTP/1.1\r\nHost: a\r\n\r\n"),
     .result = -400},
    {.name = "leading space", RAW(" GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
     .result = -400},
    {.name = "too many leading CRLFs",
     RAW("\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n"
         "\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n"),
     .result = -400, .limits = &L_small},

    /* ---------------- header syntax ---------------- */
    {.name = "space before colon", RAW("GET / HTTP/1.1\r\nHost : a\r\n\r\n"),
     .result = -400},
    {.name = "tab before colon", RAW("GET / HTTP/1.1\r\nHost\t: a\r\n\r\n"),
     .result = -400},
    {.name = "obs-fold", RAW("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n"),
     .result = -400},
    {.name = "obs-fold tab", RAW("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n"),
     .result = -400},
    {.name = "first header line starts with space",
     RAW("GET / HTTP/1.1\r\n Host: a\r\n\r\n"), .result = -400},
    {.name = "empty header name", RAW("GET / HTTP/1.1\r\nHost: a\r\n: v\r\n\r\n"),
     .result = -400},
    {.name = "header without colon", RAW("GET / HTTP/1.1\r\nHost: a\r\nFoo\r\n\r\n"),
     .result = -400},
    {.name = "non-token name", RAW("GET / HTTP/1.1\r\nHost: a\r\nFo@o: x\r\n\r\n"),
     .result = -400},
    {.name = "DEL in name", RAW("GET / HTTP/1.1\r\nHost: a\r\nX\x7fY: v\r\n\r\n"),
     .result = -400},
    {.name = "NUL in value", RAW("GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n"),
     .result = -400},
    {.name = "DEL in value", RAW("GET / HTTP/1.1\r\nHost: a\r\nX: a\x7f\r\n\r\n"),
     .result = -400},
    {.name = "control 0x01 in value", RAW("GET / HTTP/1.1\r\nHost: a\r\nX: \x01\r\n\r\n"),
     .result = -400},
    {.name = "NUL in name", RAW("GET / HTTP/1.1\r\nHost: a\r\nX\0: v\r\n\r\n"),
     .result = -400},

    /* ---------------- request line ---------------- */
    {.name = "empty target", RAW("GET  HTTP/1.1\r\nHost: a\r\n\r\n"), .result = -400},
    {.name = "tab in target", RAW("GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n"),
     .result = -400},
    {.name = "two spaces before version", RAW("GET /  HTTP/1.1\r\nHost: a\r\n\r\n"),
     .result = -400},
    {.name = "two spaces after method", RAW("GET  / HTTP/1.1\r\nHost: a\r\n\r\n"),
     .result = -400},
    {.name = "tab after method", RAW("GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n"),
     .result = -400},
    {.name = "space inside target", RAW("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n"),
     .result = -400},
    {.name = "NUL in target", RAW("GET /a\0b HTTP/1.1\r\nHost: a\r\n\r\n"),
     .result = -400},
    {.name = "non-ASCII in target", RAW("GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n"),
     .result = -400},
    {.name = "bad method char", RAW("G(T / HTTP/1.1\r\nHost: a\r\n\r\n"), .result = -400},
    {.name = "missing version", RAW("GET /\r\nHost: a\r\n\r\n"), .result = -400},
    {.name = "trailing space after version", RAW("GET / HTTP/1.1 \r\nHost: a\r\n\r\n"),
     .result = -400},
    {.name = "HTTP/1.1x", RAW("GET / HTTP/1.1x\r\nHost: a\r\n\r\n"), .result = -400},
    {.name = "lower-case http/1.1", RAW("GET / http/1.1\r\nHost: a\r\n\r\n"),
     .result = -400},
    {.name = "HTTP/1", RAW("GET / HTTP/1\r\nHost: a\r\n\r\n"), .result = -400},
    {.name = "HTTP/1.10", RAW("GET / HTTP/1.10\r\nHost: a\r\n\r\n"), .result = -400},
    {.name = "HTTP/11.1", RAW("GET / HTTP/11.1\r\nHost: a\r\n\r\n"), .result = -400},
    {.name = "HTTP/2.0 is 505", RAW("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), .result = -505},
    {.name = "HTTP/1.2 is 505", RAW("GET / HTTP/1.2\r\nHost: a\r\n\r\n"), .result = -505},
    {.name = "HTTP/0.9 is 505", RAW("GET / HTTP/0.9\r\n\r\n"), .result = -505},

    /* ---------------- Host ---------------- */
    {.name = "HTTP/1.1 missing Host", RAW("GET / HTTP/1.1\r\nX: a\r\n\r\n"),
     .result = -400},
    {.name = "HTTP/1.1 no headers", RAW("GET / HTTP/1.1\r\n\r\n"), .result = -400},
    {.name = "two Host headers", RAW("GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n"),
     .result = -400},
    {.name = "two Host headers in 1.0", RAW("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"),
     .result = -400},
    /* Host value: uri-host [ ":" port ] (RFC 9112 3.2, RFC 3986 3.2.2) */
    HOST_OK("h"),
    HOST_OK("h:8080"),
    HOST_OK("h:"),
    HOST_OK(":80"),
    HOST_OK("127.0.0.1:1"),
    HOST_OK("[::1]:80"),
    HOST_OK("[::ffff:1.2.3.4]"),
    HOST_OK("[v1.x]"),
    HOST_OK("[V1F.a:b!~]:1"),
    HOST_OK("a-b.c_d~e"),
    HOST_OK("%41bc"),
    HOST_OK("a%2fB%Ff"),
    HOST_OK("a,b"),
    HOST_OK("!$&'()*+,;="),
    HOST_BAD("a b"),
    HOST_BAD("a, b"),
    HOST_BAD("a\tb"),
    HOST_BAD("u@a"),
    HOST_BAD("u@a:80"),
    HOST_BAD("a/b"),
    HOST_BAD("a?b"),
    HOST_BAD("a#b"),
    HOST_BAD("%4"),
    HOST_BAD("%"),
    HOST_BAD("a%zz"),
    HOST_BAD("h:80:90"),
    HOST_BAD("h:8a"),
    HOST_BAD("h:-1"),
    HOST_BAD("::1"),
    HOST_BAD("[::1"),
    HOST_BAD("[::1]x"),
    HOST_BAD("[::1]:8a"),
    HOST_BAD("[]"),
    HOST_BAD("[1]"),
    HOST_BAD("[::g]"),
    HOST_BAD("[v1]"),
    HOST_BAD("[v.x]"),
    HOST_BAD("[v1.]"),
    HOST_BAD("[v1.x/]"),
    HOST_BAD("\"h\""),
    HOST_BAD("a<b>"),
    HOST_BAD("caf\xc3\xa9"),
    {.name = "bad Host in 1.0", RAW("GET / HTTP/1.0\r\nHost: a b\r\n\r\n"), .result = -400},
    {.name = "bad Host second of two", RAW("GET / HTTP/1.1\r\nHost: a\r\nHost: a b\r\n\r\n"),
     .result = -400},
    {.name = "bad Host comes before TE 501 and 417",
     RAW("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nExpect: foo\r\nHost: a@b\r\n\r\n"),
     .result = -400},
    {.name = "bad Host comes before a later 431 header count",
     RAW("GET / HTTP/1.1\r\nHost: a b\r\nB: 1\r\nC: 2\r\nD: 3\r\nE: 4\r\n\r\n"),
     .result = -400, .limits = &L_small},
    {.name = "431 header count comes before a later bad Host",
     RAW("GET / HTTP/1.1\r\nB: 1\r\nC: 2\r\nD: 3\r\nE: 4\r\nHost: a b\r\n\r\n"),
     .result = -431, .limits = &L_small},

    /* ---------------- Content-Length ---------------- */
    {.name = "CL +5", RAW("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello"),
     .result = -400},
    {.name = "CL -1", RAW("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n"),
     .result = -400},
    {.name = "CL 5 5", RAW("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5 5\r\n\r\nhello"),
     .result = -400},
    {.name = "CL abc", RAW("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n"),
     .result = -400},
    {.name = "CL 1,1", RAW("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1,1\r\n\r\nx"),
     .result = -400},
    {.name = "CL empty", RAW("POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n"),
     .result = -400},
    {.name = "CL hex", RAW("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n"),
     .result = -400},
    {.name = "CL overflow",
     RAW("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n"),
     .result = -400},
    {.name = "CL INT64_MAX+1",
     RAW("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775808\r\n\r\n"),
     .result = -400},
    {.name = "CL INT64_MAX is 413",
     RAW("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775807\r\n\r\n"),
     .result = -413},
    {.name = "duplicate CL same value",
     RAW("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"),
     .result = -400},
    {.name = "duplicate CL different",
     RAW("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length: 6\r\n\r\nhello!"),
     .result = -400},
    {.name = "CL over max_body, no body sent",
     RAW("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n"), .result = -413,
     .limits = &L_body10},
    {.name = "CL 2 MiB default limits",
     RAW("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2097152\r\n\r\n"),
     .result = -413},

    /* ---------------- Transfer-Encoding ---------------- */
    {.name = "CL and TE",
     RAW("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
         "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
     .result = -400},
    {.name = "TE and CL",
     RAW("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
         "Content-Length: 5\r\n\r\n"),
     .result = -400},
    {.name = "TE in HTTP/1.0",
     RAW("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
     .result = -400},
    {.name = "TE chunked, identity",
     RAW("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n"),
     .result = -400},
    {.name = "TE chunked, chunked",
     RAW("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"),
     .result = -400},
    {.name = "TE chunked twice in two headers",
     RAW("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
         "Transfer-Encoding: chunked\r\n\r\n"),
     .result = -400},
    {.name = "TE gzip is 501",
     RAW("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n"),
     .result = -501},
    {.name = "TE identity is 501",
     RAW("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n"),
     .result = -501},
    {.name = "TE foo is 501",
     RAW("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: foo\r\n\r\n"),
     .result = -501},
    {.name = "TE gzip, chunked is 501",
     RAW("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
     .result = -501},
    {.name = "TE gzip then chunked headers is 501",
     RAW("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n"
         "Transfer-Encoding: chunked\r\n\r\n"),
     .result = -501},
    {.name = "TE empty", RAW("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n"),
     .result = -400},
    {.name = "TE trailing comma",
     RAW("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked,\r\n\r\n"),
     .result = -400},
    {.name = "TE leading comma",
     RAW("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , chunked\r\n\r\n"),
     .result = -400},
    {.name = "TE not a token",
     RAW("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"chunked\"\r\n\r\n"),
     .result = -400},

    /* ---------------- chunked framing ---------------- */
    {.name = "chunk-size overflow 18 digits",
     RAW(CHUNKED_HEAD "ffffffffffffffffff\r\n"), .result = -400},
    {.name = "chunk-size 17 digits of zero",
     RAW(CHUNKED_HEAD "00000000000000001\r\nx\r\n0\r\n\r\n"), .result = -400},
    {.name = "chunk-size 16 f digits is 413",
     RAW(CHUNKED_HEAD "ffffffffffffffff\r\n"), .result = -413},
    {.name = "chunk-size missing", RAW(CHUNKED_HEAD "\r\nhello\r\n0\r\n\r\n"),
     .result = -400},
    {.name = "chunk-size not hex", RAW(CHUNKED_HEAD "g\r\n"), .result = -400},
    {.name = "chunk-size negative", RAW(CHUNKED_HEAD "-1\r\n"), .result = -400},
    {.name = "chunk ext without size", RAW(CHUNKED_HEAD ";a=b\r\n"), .result = -400},
    {.name = "chunk-size trailing space", RAW(CHUNKED_HEAD "5 \r\nhello\r\n0\r\n\r\n"),
     .result = -400},
    {.name = "chunk-size 0x prefix", RAW(CHUNKED_HEAD "0x5\r\nhello\r\n0\r\n\r\n"),
     .result = -400},
    {.name = "chunk ext control char", RAW(CHUNKED_HEAD "5;a\x01\r\nhello\r\n0\r\n\r\n"),
     .result = -400},
    {.name = "chunk ext bare LF", RAW(CHUNKED_HEAD "5;a\nhello\r\n0\r\n\r\n"),
     .result = -400},
    {.name = "chunk-size bare LF", RAW(CHUNKED_HEAD "5\nhello\r\n0\r\n\r\n"),
     .result = -400},
    {.name = "chunk data too long", RAW(CHUNKED_HEAD "5\r\nhelloX\r\n0\r\n\r\n"),
     .result = -400},
    {.name = "chunk data bare LF", RAW(CHUNKED_HEAD "5\r\nhello\n0\r\n\r\n"),
     .result = -400},
    {.name = "chunk data CR without LF", RAW(CHUNKED_HEAD "5\r\nhello\rX0\r\n\r\n"),
     .result = -400},
    {.name = "chunked total over max_body",
     RAW(CHUNKED_HEAD "6\r\n012345\r\n5\r\n"), .result = -413, .limits = &L_body10},
    {.name = "chunk over max_body at once", RAW(CHUNKED_HEAD "b\r\n"), .result = -413,
     .limits = &L_body10},
    {.name = "trailer space before colon", RAW(CHUNKED_HEAD "0\r\nX : y\r\n\r\n"),
     .result = -400},
    {.name = "trailer obs-fold", RAW(CHUNKED_HEAD "0\r\nX: y\r\n z\r\n\r\n"),
     .result = -400},
    {.name = "trailer NUL", RAW(CHUNKED_HEAD "0\r\nX: \0\r\n\r\n"), .result = -400},
    {.name = "trailer bare LF", RAW(CHUNKED_HEAD "0\r\nX: y\n\r\n"), .result = -400},
    {.name = "trailer end bare CR", RAW(CHUNKED_HEAD "0\r\n\rX"), .result = -400},
    {.name = "trailer without colon", RAW(CHUNKED_HEAD "0\r\nXY\r\n\r\n"),
     .result = -400},
    {.name = "trailer over max_header_bytes",
     RAW("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
         "0\r\nX: 0123456789012345678901234567890123456789012345678901234567890\r\n\r\n"),
     .result = -431, .limits = &L_small},
    {.name = "trailer fields over max_headers",
     RAW("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
         "0\r\nA:1\r\nB:2\r\nC:3\r\nD:4\r\nE:5\r\n\r\n"),
     .result = -431, .limits = &L_small},

    /* ---------------- limits ---------------- */
    {.name = "414 request line too long",
     RAW("GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: a\r\n\r\n"),
     .result = -414, .limits = &L_small},
    {.name = "414 request line max+1",
     RAW("GET /aaaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: a\r\n\r\n"), .result = -414,
     .limits = &L_small},
    {.name = "414 detected before line end", RAW("GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
     .result = -414, .limits = &L_small},
    {.name = "414 bare CR at max", RAW("GET /aaaaaaaaaaaaaaaaaa HTTP/1.1\rX"),
     .result = -414, .limits = &L_small},
    {.name = "431 before 414 when header limit smaller",
     RAW("GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
     .result = -431, .limits = &L_hb_first},
    {.name = "431 head one byte over",
     RAW("GET /aaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: a\r\nX: bbbbbbbbbbbbbbb\r\n\r\n"),
     .result = -431, .limits = &L_small},
    {.name = "431 detected before the empty line",
     RAW("GET / HTTP/1.1\r\nHost: a\r\nX: bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"),
     .result = -431, .limits = &L_small},
    {.name = "431 header count",
     RAW("GET / HTTP/1.1\r\nHost: a\r\nB: 1\r\nC: 2\r\nD: 3\r\nE: 4\r\n\r\n"),
     .result = -431, .limits = &L_small},
    {.name = "417 Expect other", RAW("GET / HTTP/1.1\r\nHost: a\r\nExpect: foo\r\n\r\n"),
     .result = -417},
    {.name = "417 Expect 100-continue with params",
     RAW("GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue; x\r\n\r\n"),
     .result = -417},
};

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

static int slice_eq(prg_slice s, const char *str, size_t n)
{
    return s.len == n && (n == 0 || memcmp(s.ptr, str, n) == 0);
}

static void check_expected(const tcase *tc, const prg_request *req, int64_t r,
                           size_t n)
{
    char msg[256];
    int64_t want = tc->result == RES_ALL ? (int64_t)n : tc->result;
    size_t i, blen;
    if (r != want) {
        snprintf(msg, sizeof msg, "got %lld, want %lld", (long long)r, (long long)want);
        fail("result", msg);
        return;
    }
    if (r <= 0)
        return;
    if (!slice_eq(req->method, tc->method, strlen(tc->method)))
        fail("method", tc->method);
    if (!slice_eq(req->target, tc->target, strlen(tc->target)))
        fail("target", tc->target);
    if (req->version_minor != tc->minor)
        fail("version_minor", NULL);
    if (req->header_count != (size_t)tc->nhdr) {
        snprintf(msg, sizeof msg, "got %zu, want %d", req->header_count, tc->nhdr);
        fail("header_count", msg);
        return;
    }
    for (i = 0; i < sizeof tc->hdr / sizeof tc->hdr[0]; i++) {
        if (!tc->hdr[i].name)
            continue;
        if (i >= req->header_count) {
            fail("header index", tc->hdr[i].name);
            continue;
        }
        if (!slice_eq(req->headers[i].name, tc->hdr[i].name, strlen(tc->hdr[i].name)))
            fail("header name", tc->hdr[i].name);
        if (!slice_eq(req->headers[i].value, tc->hdr[i].value, strlen(tc->hdr[i].value)))
            fail("header value", tc->hdr[i].value);
    }
    blen = tc->body ? (tc->body_len ? tc->body_len : strlen(tc->body)) : 0;
    if (!slice_eq(req->body, tc->body ? tc->body : "", blen)) {
        snprintf(msg, sizeof msg, "got %zu bytes, want %zu", req->body.len, blen);
        fail("body", msg);
    }
    if (req->flags != tc->flags) {
        snprintf(msg, sizeof msg, "got %#x, want %#x", req->flags, tc->flags);
        fail("flags", msg);
    }
    if (req->content_length != ((tc->flags & CL) ? (int64_t)blen : -1))
        fail("content_length", NULL);
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

    if (tc->limits)
        lim = *tc->limits;
    else
        prg_http_limits_default(&lim);
    hdrs = malloc(sizeof *hdrs * (lim.max_headers ? lim.max_headers : 1));
    if (copy) {
        buf = malloc(1);
    } else {
        buf = malloc(tc->raw_len ? tc->raw_len : 1);
        memcpy(buf, tc->raw, tc->raw_len);
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
            memcpy(nb + have, tc->raw + have, c - have);
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
            check_expected(tc, &req, r, tc->raw_len);

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
            check_expected(tc, &req, r, tc->raw_len);
        if (r < 0) {
            if (o->head_complete)
                fail("error but head_complete() == 1", NULL);
            if (prg_http_parse(&p, buf, last, &lim, &req, hdrs) != r)
                fail("error not sticky", NULL);
        }
        if (check && r == 0) {
            if (o->head_complete != tc->hc)
                fail("head_complete while incomplete", NULL);
            else if (tc->hc && p.flags != tc->flags) {
                char msg[64];
                snprintf(msg, sizeof msg, "got %#x, want %#x", p.flags, tc->flags);
                fail("flags while waiting for body", msg);
            }
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

static void run_case(const tcase *tc)
{
    const size_t n = tc->raw_len;
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
        feed(tc, cuts, n, 1, &o, 0);
        same(&whole, &o, "bytewise copied", 0);
        free(o.bytes);
    }
    free(whole.bytes);
    free(cuts);
}

/* Cases built at run time (default limits, large inputs). */
static char *make_414(size_t *len)
{
    /* request line of 8193 bytes without a line end: 414 at once */
    size_t n = 8193;
    char *s = malloc(n);
    if (!s)
        exit(2);
    memset(s, 'a', n);
    memcpy(s, "GET /", 5);
    *len = n;
    return s;
}

static char *make_431(size_t *len)
{
    /* 16384 bytes of head without the empty line: 431 at once */
    static const char pre[] = "GET / HTTP/1.1\r\nHost: a\r\n";
    size_t n = 16384, at = sizeof pre - 1;
    char *s = malloc(n);
    if (!s)
        exit(2);
    memcpy(s, pre, at);
    while (at < n) {
        size_t k = n - at < 100 ? n - at : 100;
        memcpy(s + at, "X-Pad: ", k < 7 ? k : 7);
        if (k > 7)
            memset(s + at + 7, 'p', k - 7);
        if (k > 9) {
            s[at + k - 2] = '\r';
            s[at + k - 1] = '\n';
        }
        at += k;
    }
    *len = n;
    return s;
}

static char *make_max_line_ok(size_t *len)
{
    /* request line of exactly 8192 bytes, then a valid head */
    static const char tail[] = " HTTP/1.1\r\nHost: a\r\n\r\n";
    size_t line = 8192, n = line + sizeof tail - 1 - 9;
    char *s = malloc(n);
    if (!s)
        exit(2);
    memset(s, 'a', n);
    memcpy(s, "GET /", 5);
    memcpy(s + line - 9, tail, sizeof tail - 1);
    *len = n;
    return s;
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

int main(void)
{
    size_t i, passed = 0, failed = 0;
    tcase gen[3];
    char *gbuf[3];
    size_t glen[3];

    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        g_case_failed = 0;
        g_case_name = cases[i].name;
        run_case(&cases[i]);
        if (g_case_failed)
            failed++;
        else
            passed++;
    }

    gbuf[0] = make_414(&glen[0]);
    gbuf[1] = make_431(&glen[1]);
    gbuf[2] = make_max_line_ok(&glen[2]);
    memset(gen, 0, sizeof gen);
    gen[0].name = "414 default limits (8193-byte line)";
    gen[0].result = -414;
    gen[1].name = "431 default limits (16384-byte head)";
    gen[1].result = -431;
    gen[2].name = "8192-byte request line accepted";
    gen[2].result = RES_ALL;
    gen[2].method = "GET";
    gen[2].minor = 1;
    gen[2].nhdr = 1;
    gen[2].flags = KA;
    for (i = 0; i < 3; i++) {
        gen[i].raw = gbuf[i];
        gen[i].raw_len = glen[i];
    }
    {
        /* target of the generated valid case: everything between the spaces */
        static char target[8192];
        size_t tl = 8192 - 4 - 9;
        memcpy(target, gbuf[2] + 4, tl);
        target[tl] = 0;
        gen[2].target = target;
    }
    for (i = 0; i < 3; i++) {
        g_case_failed = 0;
        g_case_name = gen[i].name;
        run_case(&gen[i]);
        if (g_case_failed)
            failed++;
        else
            passed++;
        free(gbuf[i]);
    }

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
