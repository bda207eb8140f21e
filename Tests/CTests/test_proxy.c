/*
 * test_proxy.c: table-driven tests of the PROXY protocol decoder
 * (prg_proxy_parse in csrc/proxy.c), run by `make test-c` under ASan/UBSan.
 *
 * Every case is decoded whole, then every prefix is offered in a fresh
 * allocation exactly as long as the prefix (ASan catches a read past len):
 * a prefix shorter than a complete header must say "incomplete" (0) or,
 * for a malformed input, "incomplete" or -1, never anything else; the whole
 * input must give the expected result, the same for every split. The same
 * inputs (and more) run through the C and the Swift decoder in
 * Tests/ParserConformanceTests/ProxyConformanceTests.swift.
 */
#include "peregrine.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct pcase {
    const char *name;
    const uint8_t *raw;
    size_t raw_len;
    int64_t result;       /* > 0 bytes used, 0 incomplete, -1 malformed */
    int family;           /* PRG_ADDR_* expected when result > 0 */
    const char *host;     /* inet_ntop form, when family != NONE */
    unsigned port;
} pcase;

#define RAW(s) .raw = (const uint8_t *)(s), .raw_len = sizeof(s) - 1
#define SIG "\r\n\r\n\0\r\nQUIT\n"

static const pcase cases[] = {
    {"v1 TCP4", RAW("PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET"), 45, PRG_ADDR_IPV4, "192.0.2.1", 56324},
    {"v1 TCP6", RAW("PROXY TCP6 2001:db8::1 2001:db8::2 65535 80\r\n"), 45, PRG_ADDR_IPV6, "2001:db8::1", 65535},
    {"v1 UNKNOWN bare", RAW("PROXY UNKNOWN\r\n"), 15, PRG_ADDR_NONE, NULL, 0},
    {"v1 UNKNOWN with addresses", RAW("PROXY UNKNOWN ffff:f...f:ffff 1 2\r\n"), 35, PRG_ADDR_NONE, NULL, 0},
    {"v1 port 0", RAW("PROXY TCP4 1.2.3.4 5.6.7.8 0 0\r\n"), 32, PRG_ADDR_IPV4, "1.2.3.4", 0},
    {"v1 incomplete", RAW("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r"), 0, 0, NULL, 0},
    {"v1 prefix only", RAW("PRO"), 0, 0, NULL, 0},
    {"v1 port 65536", RAW("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n"), -1, 0, NULL, 0},
    {"v1 port leading zero", RAW("PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n"), -1, 0, NULL, 0},
    {"v1 double space", RAW("PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n"), -1, 0, NULL, 0},
    {"v1 bare LF", RAW("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"), -1, 0, NULL, 0},
    {"v1 TCP4 with IPv6", RAW("PROXY TCP4 ::1 ::1 1 2\r\n"), -1, 0, NULL, 0},
    {"v1 unknown protocol", RAW("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n"), -1, 0, NULL, 0},
    {"v1 too few fields", RAW("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"), -1, 0, NULL, 0},
    {"v1 too many fields", RAW("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"), -1, 0, NULL, 0},
    {"v1 lowercase", RAW("proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), -1, 0, NULL, 0},
    {"v1 oversized", RAW("PROXY UNKNOWN 0123456789012345678901234567890123456789012345678901234567890123456789"
                         "0123456789012345678901234567890\r\n"), -1, 0, NULL, 0},
    {"v1 107 bytes", RAW("PROXY UNKNOWN 0123456789012345678901234567890123456789012345678901234567890123456789"
                         "012345678901234567890\r\n"), 107, PRG_ADDR_NONE, NULL, 0},
    {"not PROXY: HTTP", RAW("GET / HTTP/1.1\r\n\r\n"), -1, 0, NULL, 0},
    {"v2 TCP4", RAW(SIG "\x21\x11\x00\x0c" "\xc0\x00\x02\x01" "\xc6\x33\x64\x02" "\xdc\x04\x01\xbb"), 28,
     PRG_ADDR_IPV4, "192.0.2.1", 56324},
    {"v2 TCP4 with TLVs", RAW(SIG "\x21\x11\x00\x17" "\x0a\x00\x00\x01" "\x0a\x00\x00\x02" "\x30\x39\x00\x50"
                              "\x01\x00\x02h2" "\x04\x00\x03\x00\x00\x00"), 39, PRG_ADDR_IPV4, "10.0.0.1", 12345},
    {"v2 TCP6", RAW(SIG "\x21\x21\x00\x24" "\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01"
                    "\x20\x01\x0d\xb8\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02" "\x00\x01\x00\x02"), 52,
     PRG_ADDR_IPV6, "2001:db8::1", 1},
    {"v2 LOCAL", RAW(SIG "\x20\x00\x00\x00"), 16, PRG_ADDR_NONE, NULL, 0},
    {"v2 LOCAL ignores its block", RAW(SIG "\x20\x77\x00\x02\xff\xff"), 18, PRG_ADDR_NONE, NULL, 0},
    {"v2 UNSPEC with TLV", RAW(SIG "\x21\x00\x00\x04" "\x04\x00\x01x"), 20, PRG_ADDR_NONE, NULL, 0},
    {"v2 incomplete", RAW(SIG "\x21\x11\x00\x0c" "\xc0\x00\x02"), 0, 0, NULL, 0},
    {"v2 version 1", RAW(SIG "\x11\x11\x00\x0c"), -1, 0, NULL, 0},
    {"v2 command 2", RAW(SIG "\x22\x11\x00\x0c"), -1, 0, NULL, 0},
    {"v2 unknown family", RAW(SIG "\x21\x41\x00\x00"), -1, 0, NULL, 0},
    {"v2 unknown protocol", RAW(SIG "\x21\x13\x00\x0c"), -1, 0, NULL, 0},
    {"v2 TCP4 block too short", RAW(SIG "\x21\x11\x00\x08" "\x01\x02\x03\x04\x05\x06\x07\x08"), -1, 0, NULL, 0},
    {"v2 TLV overruns", RAW(SIG "\x21\x00\x00\x04" "\x04\x00\x05x"), -1, 0, NULL, 0},
    {"v2 TLV header cut", RAW(SIG "\x21\x00\x00\x02" "\x04\x00"), -1, 0, NULL, 0},
    {"v2 oversized", RAW(SIG "\x21\x11\x3f\xf1"), -1, 0, NULL, 0},
    {"v2 bad signature", RAW("\r\n\r\n\0\r\nQUIX\n\x21\x11\x00\x0c"), -1, 0, NULL, 0},
};

static int check(const pcase *t, int64_t got, const prg_address *a, const char *how) {
    if (got != t->result) {
        printf("FAIL %s (%s): result %lld, expected %lld\n", t->name, how, (long long)got, (long long)t->result);
        return 0;
    }
    if (got <= 0) return 1;
    if (a->family != t->family) {
        printf("FAIL %s (%s): family %d, expected %d\n", t->name, how, a->family, t->family);
        return 0;
    }
    if (t->family == PRG_ADDR_NONE) return 1;
    char host[INET6_ADDRSTRLEN];
    if (!inet_ntop(t->family == PRG_ADDR_IPV4 ? AF_INET : AF_INET6, a->bytes, host, sizeof host) ||
        strcmp(host, t->host) != 0 || a->port != t->port) {
        printf("FAIL %s (%s): address %s port %u, expected %s %u\n", t->name, how, host, a->port, t->host, t->port);
        return 0;
    }
    return 1;
}

static int run_case(const pcase *t) {
    prg_address a;
    uint8_t *copy = malloc(t->raw_len ? t->raw_len : 1);
    if (!copy) return 0;
    memcpy(copy, t->raw, t->raw_len);
    int ok = check(t, prg_proxy_parse(copy, t->raw_len, &a), &a, "whole");
    free(copy);
    /* Every prefix: incomplete before the end of a complete header; for a
     * malformed input incomplete or malformed; then the same result once
     * the deciding byte is in, as a reader fed byte by byte would see it. */
    int64_t final = -2;
    for (size_t n = 0; n <= t->raw_len && ok; n++) {
        uint8_t *p = malloc(n ? n : 1);
        if (!p) return 0;
        memcpy(p, t->raw, n);
        int64_t r = prg_proxy_parse(p, n, &a);
        free(p);
        if (r != 0) {
            final = r;
            if (t->result > 0 && (size_t)t->result != n) {
                printf("FAIL %s: complete after %zu bytes, expected %lld\n", t->name, n, (long long)t->result);
                ok = 0;
            }
            break;
        }
    }
    if (ok && final == -2) final = 0;
    if (ok && final != t->result) {
        printf("FAIL %s (byte by byte): result %lld, expected %lld\n", t->name, (long long)final, (long long)t->result);
        ok = 0;
    }
    return ok;
}

int main(void) {
    size_t passed = 0, failed = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (run_case(&cases[i])) passed++;
        else failed++;
    }
    /* A NULL source is refused, not written through. */
    if (prg_proxy_parse((const uint8_t *)"PROXY UNKNOWN\r\n", 15, NULL) != -1) {
        printf("FAIL NULL source accepted\n");
        failed++;
    } else passed++;
    printf("test_proxy: %zu passed, %zu failed\n", passed, failed);
    return failed ? 1 : 0;
}
