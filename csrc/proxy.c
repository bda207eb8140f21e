/*
 * proxy.c: the client's address. The peer address recorded at accept, and
 * the PROXY protocol header (HAProxy's proxy-protocol.txt, v1 and v2) that a
 * listener with proxy_protocol set expects before anything else, which
 * replaces it. Ported in Sources/PeregrineSwiftEpoll/ProxyProtocol.swift;
 * Tests/ParserConformanceTests/ProxyConformanceTests.swift runs one table
 * through both.
 *
 *  v1  "PROXY TCP4|TCP6 src dst sport dport\r\n" or "PROXY UNKNOWN...\r\n",
 *      at most 107 bytes with the CRLF; single spaces, addresses as
 *      inet_pton reads them, ports 0..65535 in decimal without leading zeros.
 *  v2  the 12-byte signature, version 2 with command LOCAL or PROXY, a
 *      family (UNSPEC, INET, INET6, UNIX) and protocol (UNSPEC, STREAM,
 *      DGRAM), a 16-bit length, the address block, then TLVs (skipped, but
 *      their framing must fill the length exactly). LOCAL discards the
 *      whole block unread, as the spec says.
 *
 * LOCAL, UNKNOWN, UNSPEC and UNIX keep the real peer address. Anything else
 * (an unknown version, command, family or protocol, a length too short for
 * the family, a bad address or port, a v1 line without CRLF within 107
 * bytes, a v2 header over PRG_PROXY_MAX_BYTES) is malformed: the caller
 * closes the connection without an answer.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

static const uint8_t v2_signature[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
static const uint8_t v1_prefix[6] = {'P', 'R', 'O', 'X', 'Y', ' '};

enum { V2_HEADER = 16, V2_INET_LEN = 12, V2_INET6_LEN = 36, V2_UNIX_LEN = 216 };

static void address_none(prg_address *a) { memset(a, 0, sizeof *a); }

/* ------------------------------------------------------------------ v1 */

/* A port: 1 to 5 digits, no leading zero (except "0" itself), <= 65535. */
static int v1_port(const char *s, size_t n, uint16_t *port) {
    if (n == 0 || n > 5 || (n > 1 && s[0] == '0')) return -1;
    uint32_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (uint32_t)(s[i] - '0');
    }
    if (v > 65535) return -1;
    *port = (uint16_t)v;
    return 0;
}

/* An address of the family the line named, as inet_pton reads it. */
static int v1_address(const char *s, size_t n, int af, uint8_t out[16]) {
    char text[INET6_ADDRSTRLEN];
    if (n == 0 || n >= sizeof text) return -1;
    memcpy(text, s, n);
    text[n] = '\0';
    return inet_pton(af, text, out) == 1 ? 0 : -1;
}

/* The next field of the line up to a single space (or the end for the
 * last one). Returns 0 and advances *pos, or -1. */
static int v1_field(const char *line, size_t len, size_t *pos, bool last, const char **f, size_t *flen) {
    size_t start = *pos, i = start;
    while (i < len && line[i] != ' ') i++;
    if (i == start) return -1;            /* empty field: a double space */
    if (last != (i == len)) return -1;    /* too few or too many fields */
    *f = line + start;
    *flen = i - start;
    *pos = last ? i : i + 1;
    return 0;
}

/* line: the bytes after "PROXY " up to the CR (excluded). */
static int v1_line(const char *line, size_t len, prg_address *src) {
    address_none(src);
    const char *f;
    size_t flen, pos = 0;
    /* UNKNOWN: the rest of the line is ignored, the real address is kept. */
    if (len >= 7 && memcmp(line, "UNKNOWN", 7) == 0 && (len == 7 || line[7] == ' ')) {
        for (size_t i = 0; i < len; i++)
            if (line[i] == '\r' || line[i] == '\n') return -1;
        return 0;
    }
    if (v1_field(line, len, &pos, false, &f, &flen) != 0 || flen != 4) return -1;
    int af;
    if (memcmp(f, "TCP4", 4) == 0) af = AF_INET;
    else if (memcmp(f, "TCP6", 4) == 0) af = AF_INET6;
    else return -1;
    uint8_t dst[16];
    uint16_t dport;
    if (v1_field(line, len, &pos, false, &f, &flen) != 0 || v1_address(f, flen, af, src->bytes) != 0) return -1;
    if (v1_field(line, len, &pos, false, &f, &flen) != 0 || v1_address(f, flen, af, dst) != 0) return -1;
    if (v1_field(line, len, &pos, false, &f, &flen) != 0 || v1_port(f, flen, &src->port) != 0) return -1;
    if (v1_field(line, len, &pos, true, &f, &flen) != 0 || v1_port(f, flen, &dport) != 0) return -1;
    src->family = af == AF_INET ? PRG_ADDR_IPV4 : PRG_ADDR_IPV6;
    return 0;
}

static int64_t parse_v1(const uint8_t *buf, size_t len, prg_address *src) {
    size_t scan = len < PRG_PROXY_V1_MAX_BYTES ? len : PRG_PROXY_V1_MAX_BYTES;
    const uint8_t *lf = memchr(buf, '\n', scan);
    if (!lf) return len >= PRG_PROXY_V1_MAX_BYTES ? -1 : 0;   /* no CRLF within 107 bytes: malformed */
    size_t end = (size_t)(lf - buf);   /* index of the LF */
    if (end < sizeof v1_prefix + 1 || buf[end - 1] != '\r') return -1;
    if (v1_line((const char *)buf + sizeof v1_prefix, end - 1 - sizeof v1_prefix, src) != 0) return -1;
    return (int64_t)end + 1;
}

/* ------------------------------------------------------------------ v2 */

static uint16_t be16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }

static int64_t parse_v2(const uint8_t *buf, size_t len, prg_address *src) {
    address_none(src);
    if (len == 12) return 0;
    if ((buf[12] >> 4) != 2 || (buf[12] & 0x0F) > 1) return -1;   /* version 2, LOCAL or PROXY */
    bool local = (buf[12] & 0x0F) == 0;
    /* LOCAL: "the receiver must use the real connection endpoints and
     * discard the protocol block including the family", so only a PROXY
     * command has its family and protocol checked. Checked as soon as the
     * byte is in, so a client sending garbage does not wait for the timeout. */
    if (len > 13 && !local && ((buf[13] >> 4) > 3 || (buf[13] & 0x0F) > 2)) return -1;
    if (len < V2_HEADER) return 0;
    unsigned family = buf[13] >> 4;
    size_t body = be16(buf + 14);
    if (V2_HEADER + body > PRG_PROXY_MAX_BYTES) return -1;
    if (len < V2_HEADER + body) return 0;
    if (local) return (int64_t)(V2_HEADER + body);
    const uint8_t *p = buf + V2_HEADER;
    size_t addr_len = 0;
    if (family == 1) addr_len = V2_INET_LEN;
    else if (family == 2) addr_len = V2_INET6_LEN;
    else if (family == 3) addr_len = V2_UNIX_LEN;
    if (body < addr_len) return -1;   /* the block the family needs does not fit */
    /* TLVs: type, 16-bit length, value; they must fill the rest exactly. */
    for (size_t at = addr_len; at < body;) {
        if (body - at < 3) return -1;
        size_t tlv = 3 + (size_t)be16(p + at + 1);
        if (tlv > body - at) return -1;
        at += tlv;
    }
    /* UNSPEC and UNIX keep the real peer address. */
    if (family == 1) {
        src->family = PRG_ADDR_IPV4;
        memcpy(src->bytes, p, 4);
        src->port = be16(p + 8);
    } else if (family == 2) {
        src->family = PRG_ADDR_IPV6;
        memcpy(src->bytes, p, 16);
        src->port = be16(p + 32);
    }
    return (int64_t)(V2_HEADER + body);
}

/* ---------------------------------------------------------------- public */

int64_t prg_proxy_parse(const uint8_t *buf, size_t len, prg_address *source) {
    if (!source) return -1;
    address_none(source);
    if (!buf) return len == 0 ? 0 : -1;
    if (len == 0) return 0;
    if (buf[0] == v1_prefix[0]) {
        size_t n = len < sizeof v1_prefix ? len : sizeof v1_prefix;
        if (memcmp(buf, v1_prefix, n) != 0) return -1;
        return len < sizeof v1_prefix ? 0 : parse_v1(buf, len, source);
    }
    size_t n = len < sizeof v2_signature ? len : sizeof v2_signature;
    if (memcmp(buf, v2_signature, n) != 0) return -1;
    return len < sizeof v2_signature ? 0 : parse_v2(buf, len, source);
}

void prg_address_from_sockaddr(prg_address *out, const struct sockaddr *sa) {
    address_none(out);
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
        out->family = PRG_ADDR_IPV4;
        memcpy(out->bytes, &in->sin_addr, 4);
        out->port = ntohs(in->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
        out->port = ntohs(in6->sin6_port);
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
            /* A dual-stack listener's IPv4 client: reported as IPv4. */
            out->family = PRG_ADDR_IPV4;
            memcpy(out->bytes, in6->sin6_addr.s6_addr + 12, 4);
        } else {
            out->family = PRG_ADDR_IPV6;
            memcpy(out->bytes, &in6->sin6_addr, 16);
        }
    }
}

int prg_conn_remote_address(const prg_conn *c, prg_address *out) {
    if (!c || !out) return -1;
    *out = c->remote;
    return c->remote.family == PRG_ADDR_NONE ? -1 : 0;
}
