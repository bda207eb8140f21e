// The conformance table: raw requests and what RFC 9112 (as DESIGN.md's
// "Bad input" section and Tests/CTests/test_http1.c read it) says a strict
// server answers. ParserConformanceTests runs every case through the C and
// the Swift parser, whole, split at every offset and byte by byte.
//
// Raw bytes are Swift strings with CR LF written out; "\\xHH" stands for the
// byte 0xHH (for obs-text and other bytes a Swift string cannot hold as is).
// Cases marked `rfc:` encode what the C parser does where it departs from
// the letter of the RFC; the note says how.
import PeregrineSwiftEpoll

struct ExpectedRequest: Sendable {
    var method: String
    var target: String
    var versionMinor: Int
    /// Every header field, in order, value trimmed.
    var headers: [(String, String)]
    var body: [UInt8]
    /// keepAlive / chunked / expectContinue; hasContentLength is implied by contentLength >= 0.
    var flags: HTTP1RequestFlags
    var contentLength: Int64
    /// Bytes of the input the request uses; nil: all of it.
    var consumed: Int?
}

struct ConformanceCase: Sendable {
    enum Expected: Sendable {
        case request(ExpectedRequest)
        /// The status the parser answers with (it returns -status).
        case error(Int)
        /// Needs more bytes; headComplete and, when it is, the flags known.
        case incomplete(headComplete: Bool, flags: HTTP1RequestFlags)
    }
    let name: String
    let raw: [UInt8]
    let limits: HTTP1Limits?
    let expected: Expected
    /// Set where the outcome encodes the C parser's choice against the letter of the RFC.
    let rfc: String?
}

// MARK: - Building blocks

let KA = HTTP1RequestFlags.keepAlive
let CH = HTTP1RequestFlags.chunked
let EC = HTTP1RequestFlags.expectContinue
let CLF = HTTP1RequestFlags.hasContentLength

/// request line <= 32, head <= 64, <= 4 headers, body <= 16
let smallLimits = HTTP1Limits(maxRequestLine: 32, maxHeaderBytes: 64, maxHeaders: 4, maxBody: 16)
/// body <= 10
let body10Limits = HTTP1Limits(maxRequestLine: 8192, maxHeaderBytes: 16384, maxHeaders: 100, maxBody: 10)
/// request line 64 > header bytes 40: 431 fires first
let headerBytesFirstLimits = HTTP1Limits(maxRequestLine: 64, maxHeaderBytes: 40, maxHeaders: 100, maxBody: 100)
/// no header field, no body allowed
let zeroLimits = HTTP1Limits(maxRequestLine: 8192, maxHeaderBytes: 16384, maxHeaders: 0, maxBody: 0)

let GET11 = "GET / HTTP/1.1\r\nHost: a\r\n\r\n"
let POST5 = "POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
let CHUNKED_HEAD = "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
/// The headers of CHUNKED_HEAD.
let chunkedHeaders = [("Host", "a"), ("Transfer-Encoding", "chunked")]

/// The bytes of a table string: "\\xHH" is the byte 0xHH, everything else its UTF-8.
func wire(_ s: String) -> [UInt8] {
    let u = Array(s.utf8)
    var out: [UInt8] = []
    out.reserveCapacity(u.count)
    var i = 0
    func hex(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: return c - 0x30
        case 0x41...0x46: return c - 0x41 + 10
        case 0x61...0x66: return c - 0x61 + 10
        default: return nil
        }
    }
    while i < u.count {
        if u[i] == 0x5C, i + 3 < u.count, u[i + 1] == 0x78, let h = hex(u[i + 2]), let l = hex(u[i + 3]) {
            out.append(h << 4 | l)
            i += 4
        } else {
            out.append(u[i])
            i += 1
        }
    }
    return out
}

/// A complete request.
func ok(_ name: String, _ raw: String, _ method: String, _ target: String, v minor: Int = 1,
        h headers: [(String, String)], body: String = "", _ flags: HTTP1RequestFlags,
        cl: Int64 = -1, consumed: Int? = nil, limits: HTTP1Limits? = nil, rfc: String? = nil) -> ConformanceCase {
    ConformanceCase(
        name: name, raw: wire(raw), limits: limits,
        expected: .request(ExpectedRequest(method: method, target: target, versionMinor: minor, headers: headers,
                                           body: wire(body), flags: flags, contentLength: cl, consumed: consumed)),
        rfc: rfc)
}

/// A malformed request: the parser answers `status`.
func bad(_ name: String, _ raw: String, _ status: Int, limits: HTTP1Limits? = nil, rfc: String? = nil) -> ConformanceCase {
    ConformanceCase(name: name, raw: wire(raw), limits: limits, expected: .error(status), rfc: rfc)
}

/// More bytes are needed; `head`: the head is complete with `flags`.
func more(_ name: String, _ raw: String, head: Bool = false, _ flags: HTTP1RequestFlags = [],
          limits: HTTP1Limits? = nil) -> ConformanceCase {
    ConformanceCase(name: name, raw: wire(raw), limits: limits,
                    expected: .incomplete(headComplete: head, flags: flags), rfc: nil)
}

/// A GET whose Host value `v` is accepted as is.
func hostOK(_ v: String) -> ConformanceCase {
    ok("Host \(v)", "GET / HTTP/1.1\r\nHost: \(v)\r\n\r\n", "GET", "/", h: [("Host", v)], KA)
}

/// A GET whose Host value `v` is answered 400 (RFC 9112 3.2).
func hostBad(_ v: String) -> ConformanceCase {
    bad("Host \(v)", "GET / HTTP/1.1\r\nHost: \(v)\r\n\r\n", 400)
}

let a18 = String(repeating: "a", count: 18)

// MARK: - The table

enum ConformanceTable {
    static let all: [ConformanceCase] =
        valid + lineEndings + headerSyntax + requestLine + versions + host + contentLength
        + transferEncoding + chunked + trailers + limitCases + expect + connection + pipelining + incomplete

    // MARK: valid requests (from test_http1.c)
    static let valid: [ConformanceCase] = [
        ok("simple GET", GET11, "GET", "/", h: [("Host", "a")], KA),
        ok("typical GET with 6 headers",
           "GET /index.html?q=1&r=2 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8.0\r\nAccept: */*\r\n"
               + "Accept-Encoding: gzip, br\r\nCookie: a=b; c=d\r\nX-Request-Id: 1234\r\n\r\n",
           "GET", "/index.html?q=1&r=2",
           h: [("Host", "example.com"), ("User-Agent", "curl/8.0"), ("Accept", "*/*"),
               ("Accept-Encoding", "gzip, br"), ("Cookie", "a=b; c=d"), ("X-Request-Id", "1234")], KA),
        ok("OWS around values", "GET / HTTP/1.1\r\nHost:   a  \r\nX-A:\t b \t\r\nX-B:c\r\n\r\n", "GET", "/",
           h: [("Host", "a"), ("X-A", "b"), ("X-B", "c")], KA),
        ok("empty and whitespace-only values", "GET / HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nX-Ws:  \t \r\n\r\n", "GET", "/",
           h: [("Host", "a"), ("X-Empty", ""), ("X-Ws", "")], KA),
        ok("inner whitespace kept", "GET / HTTP/1.1\r\nHost: a\r\nX: a  \tb c\r\n\r\n", "GET", "/",
           h: [("Host", "a"), ("X", "a  \tb c")], KA),
        ok("obs-text in value", "GET / HTTP/1.1\r\nHost: a\r\nX: caf\\xC3\\xA9 \\x80\\xFF\r\n\r\n", "GET", "/",
           h: [("Host", "a"), ("X", "caf\\xC3\\xA9 \\x80\\xFF")], KA),
        ok("name case preserved", "GET / HTTP/1.1\r\nhOsT: a\r\nX-MiXeD: V\r\n\r\n", "GET", "/",
           h: [("hOsT", "a"), ("X-MiXeD", "V")], KA),
        ok("empty Host value is a Host", "GET / HTTP/1.1\r\nHost:\r\n\r\n", "GET", "/", h: [("Host", "")], KA),
        ok("HTTP/1.0 without Host, closes", "GET / HTTP/1.0\r\n\r\n", "GET", "/", v: 0, h: [], []),
        ok("HTTP/1.0 keep-alive", "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", "GET", "/", v: 0,
           h: [("Connection", "keep-alive")], KA),
        ok("HTTP/1.0 Keep-Alive mixed case in list", "GET / HTTP/1.0\r\nHost: a\r\nConnection: Upgrade , Keep-Alive\r\n\r\n",
           "GET", "/", v: 0, h: [("Host", "a"), ("Connection", "Upgrade , Keep-Alive")], KA),
        ok("HTTP/1.0 keep-alive and close: close", "GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", "GET", "/",
           v: 0, h: [("Connection", "keep-alive, close")], []),
        ok("HTTP/1.0 Connection: close", "GET / HTTP/1.0\r\nConnection: close\r\n\r\n", "GET", "/", v: 0,
           h: [("Connection", "close")], []),
        ok("HTTP/1.1 Connection: close", "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", "GET", "/",
           h: [("Host", "a"), ("Connection", "close")], []),
        ok("HTTP/1.1 Connection: foo, CLOSE", "GET / HTTP/1.1\r\nHost: a\r\nConnection: foo,,CLOSE\r\n\r\n", "GET", "/",
           h: [("Host", "a"), ("Connection", "foo,,CLOSE")], []),
        ok("HTTP/1.1 Connection: keep-alive", "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n", "GET", "/",
           h: [("Host", "a"), ("Connection", "keep-alive")], KA),
        ok("HTTP/1.1 Connection: closed is not close", "GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n",
           "GET", "/", h: [("Host", "a"), ("Connection", "closed")], KA),
        ok("Content-Length body", POST5, "POST", "/p", h: [("Host", "a"), ("Content-Length", "5")], body: "hello",
           KA, cl: 5),
        ok("Content-Length 0", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", "POST", "/",
           h: [("Host", "a"), ("Content-Length", "0")], KA, cl: 0),
        ok("Content-Length leading zeros", "POST / HTTP/1.1\r\nHost: a\r\ncontent-length:  007 \r\n\r\nabcdefg",
           "POST", "/", h: [("Host", "a"), ("content-length", "007")], body: "abcdefg", KA, cl: 7),
        ok("binary body with NUL and CRLF", "PUT /b HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n\r\n\0\r\n\n\r\\xFF",
           "PUT", "/b", h: [("Host", "a"), ("Content-Length", "6")], body: "\0\r\n\n\r\\xFF", KA, cl: 6),
        ok("body exactly max_body", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789", "POST", "/",
           h: [("Host", "a"), ("Content-Length", "10")], body: "0123456789", KA, cl: 10, limits: body10Limits),
        ok("HTTP/1.0 with body", "POST / HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi", "POST", "/", v: 0,
           h: [("Content-Length", "2")], body: "hi", [], cl: 2),
        ok("leading CRLFs skipped", "\r\n\r\n" + GET11, "GET", "/", h: [("Host", "a")], KA),
        ok("leading CRLFs with body", "\r\n" + POST5, "POST", "/p", h: [("Host", "a"), ("Content-Length", "5")],
           body: "hello", KA, cl: 5),
        ok("leading CRLF chunked", "\r\n" + CHUNKED_HEAD + "1\r\nq\r\n0\r\n\r\n", "POST", "/c", h: chunkedHeaders,
           body: "q", [KA, CH]),
        ok("token methods", "M-SEARCH * HTTP/1.1\r\nHost: a\r\n\r\n", "M-SEARCH", "*", h: [("Host", "a")], KA),
        ok("lower-case method is a token", "get / HTTP/1.1\r\nHost: a\r\n\r\n", "get", "/", h: [("Host", "a")], KA),
        ok("absolute-form target", "GET http://h.example:8080/a/b?c=d&e=%20#f HTTP/1.1\r\nHost: h.example\r\n\r\n",
           "GET", "http://h.example:8080/a/b?c=d&e=%20#f", h: [("Host", "h.example")], KA,
           rfc: "a fragment ('#f') is not part of any request-target form (RFC 9112 3.2); the parser does not check target forms"),
        ok("CONNECT authority-form", "CONNECT h.example:443 HTTP/1.1\r\nHost: h.example:443\r\n\r\n", "CONNECT",
           "h.example:443", h: [("Host", "h.example:443")], KA),
        ok("OPTIONS asterisk-form", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", "OPTIONS", "*", h: [("Host", "a")], KA),
        ok("asterisk-form with GET is not checked", "GET * HTTP/1.1\r\nHost: a\r\n\r\n", "GET", "*",
           h: [("Host", "a")], KA, rfc: "asterisk-form is only for OPTIONS (RFC 9112 3.2.4); target forms are the application's"),
        ok("every tchar in a name", "GET / HTTP/1.1\r\nHost: a\r\n!#$%&'*+-.^_`|~09azAZ: v\r\n\r\n", "GET", "/",
           h: [("Host", "a"), ("!#$%&'*+-.^_`|~09azAZ", "v")], KA),
        ok("every tchar in a method", "!#$%&'*+-.^_`|~09azAZ / HTTP/1.1\r\nHost: a\r\n\r\n", "!#$%&'*+-.^_`|~09azAZ",
           "/", h: [("Host", "a")], KA),
        ok("sub-delims and pct in target", "GET /a!$&'()*+,;=:@~%2F?x=/? HTTP/1.1\r\nHost: a\r\n\r\n", "GET",
           "/a!$&'()*+,;=:@~%2F?x=/?", h: [("Host", "a")], KA),
        ok("URI-excluded printables in target", "GET /a\"<>{}|\\^` HTTP/1.1\r\nHost: a\r\n\r\n", "GET", "/a\"<>{}|\\^`",
           h: [("Host", "a")], KA,
           rfc: "'\"<>{}|\\^`' are not URI characters (RFC 3986); the parser takes any VCHAR (0x21-0x7E) in a target"),
        ok("value with colons and quotes", "GET / HTTP/1.1\r\nHost: a:80\r\nX: \"a:b\", c=d\r\n\r\n", "GET", "/",
           h: [("Host", "a:80"), ("X", "\"a:b\", c=d")], KA),
        ok("value of obs-text only", "GET / HTTP/1.1\r\nHost: a\r\nX:\\x80\\x81\\xFE\r\n\r\n", "GET", "/",
           h: [("Host", "a"), ("X", "\\x80\\x81\\xFE")], KA),
        ok("trailing tab trimmed", "GET / HTTP/1.1\r\nHost: a\t\t\r\n\r\n", "GET", "/", h: [("Host", "a")], KA),
        ok("32 leading CRLFs within max_header_bytes", String(repeating: "\r\n", count: 32) + GET11, "GET", "/",
           h: [("Host", "a")], KA, limits: smallLimits),
        ok("POST without length has no body", "POST / HTTP/1.1\r\nHost: a\r\n\r\nhello", "POST", "/",
           h: [("Host", "a")], KA, consumed: "POST / HTTP/1.1\r\nHost: a\r\n\r\n".utf8.count),
        ok("HTTP/1.0 POST without length has no body", "POST / HTTP/1.0\r\n\r\nhi", "POST", "/", v: 0, h: [], [],
           consumed: "POST / HTTP/1.0\r\n\r\n".utf8.count),
        ok("Transfer_Encoding is just another field", "POST / HTTP/1.1\r\nHost: a\r\nTransfer_Encoding: chunked\r\n\r\n"
               + "5\r\nhello\r\n0\r\n\r\n", "POST", "/", h: [("Host", "a"), ("Transfer_Encoding", "chunked")], KA,
           consumed: "POST / HTTP/1.1\r\nHost: a\r\nTransfer_Encoding: chunked\r\n\r\n".utf8.count),
        ok("max_headers 0 and no header", "GET / HTTP/1.0\r\n\r\n", "GET", "/", v: 0, h: [], [], limits: zeroLimits),
        ok("max_body 0 and no body", "POST / HTTP/1.0\r\n\r\n", "POST", "/", v: 0, h: [], [], limits: zeroLimits),
        ok("IPv6 Host", "GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", "GET", "/", h: [("Host", "[::1]:8080")], KA),
    ]

    // MARK: line endings
    static let lineEndings: [ConformanceCase] = [
        bad("bare LF ends request line", "GET / HTTP/1.1\nHost: a\r\n\r\n", 400),
        bad("bare LF ends header", "GET / HTTP/1.1\r\nHost: a\n\r\n", 400),
        bad("bare LF as empty line", "GET / HTTP/1.1\r\nHost: a\r\n\n", 400),
        bad("bare LF all lines", "GET / HTTP/1.1\nHost: a\n\n", 400),
        bad("bare CR in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400),
        bad("bare CR in request line", "GET /\r HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        bad("bare CR as empty line", "GET / HTTP/1.1\r\nHost: a\r\n\rX\r\n\r\n", 400),
        bad("CR CR LF", "GET / HTTP/1.1\r\r\nHost: a\r\n\r\n", 400),
        bad("leading bare LF", "\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        bad("leading bare CR", "\rGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        bad("leading space", " GET / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        bad("too many leading CRLFs", String(repeating: "\r\n", count: 33), 400, limits: smallLimits),
        bad("leading CRLF then bare LF", "\r\n\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        bad("leading CR CR LF", "\r\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        bad("leading NUL", "\0GET / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        bad("bare CR in header name", "GET / HTTP/1.1\r\nHost: a\r\nX\rY: v\r\n\r\n", 400),
        bad("bare CR after the colon", "GET / HTTP/1.1\r\nHost: a\r\nX:\r v\r\n\r\n", 400),
        bad("bare CR line before the empty line", "GET / HTTP/1.1\r\nHost: a\r\n\r\r\n\r\n", 400),
        more("bare CR line waits for the empty line", "GET / HTTP/1.1\r\nHost: a\r\n\r\r\n"),
        bad("bare CR at end of value", "GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", 400),
        bad("LF CR line ends", "GET / HTTP/1.1\n\rHost: a\n\r\n\r", 400),
    ]

    // MARK: header syntax
    static let headerSyntax: [ConformanceCase] = [
        bad("space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
        bad("tab before colon", "GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", 400),
        bad("obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400),
        bad("obs-fold tab", "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n", 400),
        bad("first header line starts with space", "GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400),
        bad("empty header name", "GET / HTTP/1.1\r\nHost: a\r\n: v\r\n\r\n", 400),
        bad("header without colon", "GET / HTTP/1.1\r\nHost: a\r\nFoo\r\n\r\n", 400),
        bad("non-token name", "GET / HTTP/1.1\r\nHost: a\r\nFo@o: x\r\n\r\n", 400),
        bad("DEL in name", "GET / HTTP/1.1\r\nHost: a\r\nX\u{7F}Y: v\r\n\r\n", 400),
        bad("NUL in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n", 400),
        bad("DEL in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\u{7F}\r\n\r\n", 400),
        bad("control 0x01 in value", "GET / HTTP/1.1\r\nHost: a\r\nX: \u{01}\r\n\r\n", 400),
        bad("NUL in name", "GET / HTTP/1.1\r\nHost: a\r\nX\0: v\r\n\r\n", 400),
        bad("vertical tab in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\u{0B}b\r\n\r\n", 400),
        bad("form feed in value", "GET / HTTP/1.1\r\nHost: a\r\nX: \u{0C}\r\n\r\n", 400),
        bad("ESC in value", "GET / HTTP/1.1\r\nHost: a\r\nX: \u{1B}[0m\r\n\r\n", 400),
        bad("obs-text in name", "GET / HTTP/1.1\r\nHost: a\r\nX\\xC3\\xA9: v\r\n\r\n", 400),
        bad("quoted name", "GET / HTTP/1.1\r\nHost: a\r\n\"X\": v\r\n\r\n", 400),
        bad("separator in name", "GET / HTTP/1.1\r\nHost: a\r\nX/Y: v\r\n\r\n", 400),
        bad("name of only a colon", "GET / HTTP/1.1\r\nHost: a\r\n:\r\n\r\n", 400),
        bad("obs-fold after the last header", "GET / HTTP/1.1\r\nHost: a\r\n \r\n\r\n", 400),
        bad("Transfer-Encoding with space before colon", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n"
                + "0\r\n\r\n", 400),
        bad("Content-Length with space before colon", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\nhello", 400),
        bad("Content-Length folded", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n 5\r\n\r\nhello", 400),
    ]

    // MARK: request line
    static let requestLine: [ConformanceCase] = [
        bad("empty target", "GET  HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        bad("tab in target", "GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        bad("two spaces before version", "GET /  HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        bad("two spaces after method", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        bad("tab after method", "GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        bad("space inside target", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        bad("NUL in target", "GET /a\0b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        bad("non-ASCII in target", "GET /\\xC3\\xA9 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        bad("DEL in target", "GET /a\u{7F} HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        bad("bad method char", "G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        bad("NUL in method", "G\0T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        bad("method only", "GET\r\nHost: a\r\n\r\n", 400),
        bad("missing version", "GET /\r\nHost: a\r\n\r\n", 400),
        bad("trailing space after version", "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400),
        bad("empty request line after CRLFs", "\r\n\r\n \r\n\r\n", 400),
        bad("colon method (header as request line)", "Host: a\r\n\r\n", 400),
    ]

    // MARK: HTTP-version
    static let versions: [ConformanceCase] = [
        bad("HTTP/1.1x", "GET / HTTP/1.1x\r\nHost: a\r\n\r\n", 400),
        bad("lower-case http/1.1", "GET / http/1.1\r\nHost: a\r\n\r\n", 400),
        bad("HTTP/1", "GET / HTTP/1\r\nHost: a\r\n\r\n", 400),
        bad("HTTP/1.10", "GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400),
        bad("HTTP/1.01", "GET / HTTP/1.01\r\nHost: a\r\n\r\n", 400),
        bad("HTTP/11.1", "GET / HTTP/11.1\r\nHost: a\r\n\r\n", 400),
        bad("HTTP/ 1.1", "GET / HTTP/ 1.1\r\nHost: a\r\n\r\n", 400),
        bad("HTTPS/1.1", "GET / HTTPS/1.1\r\nHost: a\r\n\r\n", 400),
        bad("HTTP/1.x", "GET / HTTP/1.x\r\nHost: a\r\n\r\n", 400),
        bad("HTTP/2.0 is 505", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        bad("HTTP/3.0 is 505", "GET / HTTP/3.0\r\nHost: a\r\n\r\n", 505),
        bad("HTTP/1.2 is 505", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505,
            rfc: "RFC 9110 2.5: a higher minor version of a major version the server implements SHOULD be processed as 1.1"),
        bad("HTTP/1.9 is 505", "GET / HTTP/1.9\r\nHost: a\r\n\r\n", 505,
            rfc: "RFC 9110 2.5: a higher minor version of a major version the server implements SHOULD be processed as 1.1"),
        bad("HTTP/0.9 is 505", "GET / HTTP/0.9\r\n\r\n", 505),
        bad("HTTP/0.0 is 505", "GET / HTTP/0.0\r\n\r\n", 505),
        bad("505 comes before header errors", "GET / HTTP/2.0\r\nHost : a\r\n\r\n", 505),
    ]

    // MARK: Host
    static let host: [ConformanceCase] = [
        bad("HTTP/1.1 missing Host", "GET / HTTP/1.1\r\nX: a\r\n\r\n", 400),
        bad("HTTP/1.1 no headers", "GET / HTTP/1.1\r\n\r\n", 400),
        bad("two Host headers", "GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", 400),
        bad("two Host headers in 1.0", "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        bad("absolute-form still needs Host", "GET http://a/ HTTP/1.1\r\n\r\n", 400),
        bad("Hosts is not Host", "GET / HTTP/1.1\r\nHosts: a\r\n\r\n", 400),
        // Host value: uri-host [ ":" port ] (RFC 9112 3.2, RFC 3986 3.2.2)
        hostOK("h"), hostOK("h:8080"), hostOK("h:"), hostOK(":80"), hostOK("127.0.0.1:1"), hostOK("[::1]:80"),
        hostOK("[::ffff:1.2.3.4]"), hostOK("[v1.x]"), hostOK("[V1F.a:b!~]:1"), hostOK("a-b.c_d~e"), hostOK("%41bc"),
        hostOK("a%2fB%Ff"), hostOK("a,b"), hostOK("!$&'()*+,;="),
        hostBad("a b"), hostBad("a, b"), hostBad("a\tb"), hostBad("u@a"), hostBad("u@a:80"), hostBad("a/b"),
        hostBad("a?b"), hostBad("a#b"), hostBad("%4"), hostBad("%"), hostBad("a%zz"), hostBad("h:80:90"),
        hostBad("h:8a"), hostBad("h:-1"), hostBad("::1"), hostBad("[::1"), hostBad("[::1]x"), hostBad("[::1]:8a"),
        hostBad("[]"), hostBad("[1]"), hostBad("[::g]"), hostBad("[v1]"), hostBad("[v.x]"), hostBad("[v1.]"),
        hostBad("[v1.x/]"), hostBad("\"h\""), hostBad("a<b>"), hostBad("caf\\xC3\\xA9"),
        bad("bad Host in 1.0", "GET / HTTP/1.0\r\nHost: a b\r\n\r\n", 400),
        bad("bad Host second of two", "GET / HTTP/1.1\r\nHost: a\r\nHost: a b\r\n\r\n", 400),
        bad("bad Host comes before TE 501 and 417",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nExpect: foo\r\nHost: a@b\r\n\r\n", 400),
        bad("bad Host comes before a later 431 header count",
            "GET / HTTP/1.1\r\nHost: a b\r\nB: 1\r\nC: 2\r\nD: 3\r\nE: 4\r\n\r\n", 400, limits: smallLimits),
        bad("431 header count comes before a later bad Host",
            "GET / HTTP/1.1\r\nB: 1\r\nC: 2\r\nD: 3\r\nE: 4\r\nHost: a b\r\n\r\n", 431, limits: smallLimits),
        bad("missing Host comes before TE 501", "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
    ]

    // MARK: Content-Length
    static let contentLength: [ConformanceCase] = [
        bad("CL +5", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello", 400),
        bad("CL -1", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
        bad("CL -0", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -0\r\n\r\n", 400),
        bad("CL 5 5", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5 5\r\n\r\nhello", 400),
        bad("CL abc", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n", 400),
        bad("CL 1,1", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1,1\r\n\r\nx", 400),
        bad("CL 5, 5 list", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello", 400),
        bad("CL 5, 6 list", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\nhello!", 400),
        bad("CL empty", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", 400),
        bad("CL whitespace only", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:  \t \r\n\r\n", 400),
        bad("CL hex", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n", 400),
        bad("CL 1_000", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1_000\r\n\r\n", 400),
        bad("CL 5.0", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5.0\r\n\r\nhello", 400),
        bad("CL overflow", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", 400),
        bad("CL INT64_MAX+1", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775808\r\n\r\n", 400),
        bad("CL INT64_MAX is 413", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775807\r\n\r\n", 413),
        bad("duplicate CL same value", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400),
        bad("duplicate CL different", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length: 6\r\n\r\nhello!", 400),
        bad("duplicate CL, second empty", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length:\r\n\r\n", 400),
        bad("CL over max_body, no body sent", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n", 413,
            limits: body10Limits),
        bad("CL 2 MiB default limits", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2097152\r\n\r\n", 413),
        bad("CL 1 with max_body 0", "POST / HTTP/1.0\r\nContent-Length: 1\r\n\r\nx", 413,
            limits: HTTP1Limits(maxRequestLine: 8192, maxHeaderBytes: 16384, maxHeaders: 1, maxBody: 0)),
        ok("CL with tab and trailing OWS", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\t3 \t\r\n\r\nabc", "POST", "/",
           h: [("Host", "a"), ("Content-Length", "3")], body: "abc", KA, cl: 3),
        ok("CL on a GET", "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi", "GET", "/",
           h: [("Host", "a"), ("Content-Length", "2")], body: "hi", KA, cl: 2),
    ]

    // MARK: Transfer-Encoding
    static let transferEncoding: [ConformanceCase] = [
        bad("CL and TE", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                + "5\r\nhello\r\n0\r\n\r\n", 400),
        bad("TE and CL", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 400),
        bad("TE and CL 0", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n", 400),
        bad("TE gzip and CL is 400, not 501", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nContent-Length: 1\r\n\r\nx",
            400),
        bad("TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        bad("TE and CL in HTTP/1.0", "POST / HTTP/1.0\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nhello", 400),
        bad("TE chunked, identity", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n", 400),
        bad("TE chunked, gzip", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
        bad("TE chunked, chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400),
        bad("TE chunked twice in two headers", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                + "Transfer-Encoding: chunked\r\n\r\n", 400),
        bad("TE chunked then gzip in two headers", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                + "Transfer-Encoding: gzip\r\n\r\n", 400),
        bad("TE gzip is 501", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501,
            rfc: "RFC 9112 6.3 item 4 says 400 when chunked is not the final coding; 6.1 allows 501 for a coding not understood"),
        bad("TE identity is 501", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", 501),
        bad("TE foo is 501", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: foo\r\n\r\n", 501),
        bad("TE gzip, chunked is 501", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        bad("TE identity, chunked is 501", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity, chunked\r\n\r\n", 501),
        bad("TE gzip;q=0.5, chunked is 501", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip;q=0.5, chunked\r\n\r\n", 501),
        bad("TE gzip then chunked headers is 501", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n"
                + "Transfer-Encoding: chunked\r\n\r\n", 501),
        bad("TE empty", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \r\n\r\n", 400),
        bad("TE trailing comma", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked,\r\n\r\n", 400,
            rfc: "RFC 9110 5.6.1.2: a recipient MUST parse and ignore a reasonable number of empty list elements"),
        bad("TE leading comma", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , chunked\r\n\r\n", 400,
            rfc: "RFC 9110 5.6.1.2: a recipient MUST parse and ignore a reasonable number of empty list elements"),
        bad("TE not a token", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"chunked\"\r\n\r\n", 400),
        bad("TE chunked with a parameter", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;q=1\r\n\r\n", 400),
        bad("TE chunked with OWS parameter", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked ; x\r\n\r\n", 400),
        bad("TE two tokens without comma", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip chunked\r\n\r\n", 400),
        bad("TE chunked with vertical tab", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\u{0B}\r\n\r\n", 400),
        bad("TE xchunked is 501", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", 501),
        ok("TE Chunked case-insensitive with OWS", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:  ChUnKeD \r\n\r\n"
               + "1\r\nx\r\n0\r\n\r\n", "POST", "/", h: [("Host", "a"), ("Transfer-Encoding", "ChUnKeD")], body: "x", [KA, CH]),
        ok("TE chunked with Connection: close", "POST / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
               + "Transfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n", "POST", "/",
           h: [("Host", "a"), ("Connection", "close"), ("Transfer-Encoding", "chunked")], body: "x", [CH]),
        ok("TE chunked on a GET", "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "GET", "/",
           h: [("Host", "a"), ("Transfer-Encoding", "chunked")], [KA, CH]),
        ok("TE chunked with trailing tab", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\t\r\n\r\n0\r\n\r\n",
           "POST", "/", h: [("Host", "a"), ("Transfer-Encoding", "chunked")], [KA, CH]),
    ]

    // MARK: chunked framing
    static let chunked: [ConformanceCase] = [
        ok("chunked simple", CHUNKED_HEAD + "5\r\nhello\r\n0\r\n\r\n", "POST", "/c", h: chunkedHeaders, body: "hello", [KA, CH]),
        ok("chunked several, hex case", CHUNKED_HEAD + "a\r\n0123456789\r\nB\r\nabcdefghijk\r\n1\r\nZ\r\n000\r\n\r\n",
           "POST", "/c", h: chunkedHeaders, body: "0123456789abcdefghijkZ", [KA, CH]),
        ok("chunked with extensions", CHUNKED_HEAD + "5;foo=bar\r\nhello\r\n6 ;a=\"q s;\\\"x\" ; b\r\n world\r\n"
               + "0;last=\\xE2\\x9C\\x93\t\r\n\r\n", "POST", "/c", h: chunkedHeaders, body: "hello world", [KA, CH]),
        ok("chunked data containing CRLF and NUL", CHUNKED_HEAD + "4\r\n\r\n\0\n\r\n2\r\n0\r\r\n0\r\n\r\n", "POST", "/c",
           h: chunkedHeaders, body: "\r\n\0\n0\r", [KA, CH]),
        ok("chunked leading zeros 16 digits", CHUNKED_HEAD + "0000000000000003\r\nabc\r\n0\r\n\r\n", "POST", "/c",
           h: chunkedHeaders, body: "abc", [KA, CH]),
        ok("chunked empty body", CHUNKED_HEAD + "0\r\n\r\n", "POST", "/c", h: chunkedHeaders, [KA, CH]),
        ok("chunked total exactly max_body", CHUNKED_HEAD + "6\r\n012345\r\n4\r\n6789\r\n0\r\n\r\n", "POST", "/c",
           h: chunkedHeaders, body: "0123456789", [KA, CH], limits: body10Limits),
        ok("chunked many one-byte chunks", CHUNKED_HEAD + String(repeating: "1\r\nz\r\n", count: 20) + "0\r\n\r\n",
           "POST", "/c", h: chunkedHeaders, body: String(repeating: "z", count: 20), [KA, CH]),
        ok("chunk BWS tab before extension", CHUNKED_HEAD + "5\t;x\r\nhello\r\n0 ; y\r\n\r\n", "POST", "/c",
           h: chunkedHeaders, body: "hello", [KA, CH]),
        ok("chunk extension empty name accepted", CHUNKED_HEAD + "5;\r\nhello\r\n0\r\n\r\n", "POST", "/c",
           h: chunkedHeaders, body: "hello", [KA, CH],
           rfc: "chunk-ext needs a token name (RFC 9112 7.1.1); the parser only checks for control bytes in extensions"),
        ok("chunk-size line exactly max_request_line", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
               + "5;" + String(repeating: "e", count: 30) + "\r\nhello\r\n0\r\n\r\n", "POST", "/",
           h: [("Host", "a"), ("Transfer-Encoding", "chunked")], body: "hello", [KA, CH], limits: smallLimits),
        ok("chunk 16 hex digits within max_body", CHUNKED_HEAD + "000000000000000a\r\n0123456789\r\n0\r\n\r\n", "POST", "/c",
           h: chunkedHeaders, body: "0123456789", [KA, CH], limits: body10Limits),
        ok("chunked body of max_body 0", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
           "POST", "/", h: [("Host", "a"), ("Transfer-Encoding", "chunked")], [KA, CH],
           limits: HTTP1Limits(maxRequestLine: 8192, maxHeaderBytes: 16384, maxHeaders: 2, maxBody: 0)),
        bad("chunk-size overflow 18 digits", CHUNKED_HEAD + "ffffffffffffffffff\r\n", 400),
        bad("chunk-size 17 digits of zero", CHUNKED_HEAD + "00000000000000001\r\nx\r\n0\r\n\r\n", 400),
        bad("chunk-size 16 f digits is 413", CHUNKED_HEAD + "ffffffffffffffff\r\n", 413),
        bad("chunk-size 2^63 is 413", CHUNKED_HEAD + "8000000000000000\r\n", 413),
        bad("chunk-size missing", CHUNKED_HEAD + "\r\nhello\r\n0\r\n\r\n", 400),
        bad("chunk-size not hex", CHUNKED_HEAD + "g\r\n", 400),
        bad("chunk-size negative", CHUNKED_HEAD + "-1\r\n", 400),
        bad("chunk-size plus sign", CHUNKED_HEAD + "+5\r\nhello\r\n0\r\n\r\n", 400),
        bad("chunk ext without size", CHUNKED_HEAD + ";a=b\r\n", 400),
        bad("chunk-size leading space", CHUNKED_HEAD + " 5\r\nhello\r\n0\r\n\r\n", 400),
        bad("chunk-size trailing space", CHUNKED_HEAD + "5 \r\nhello\r\n0\r\n\r\n", 400),
        bad("chunk-size 0x prefix", CHUNKED_HEAD + "0x5\r\nhello\r\n0\r\n\r\n", 400),
        bad("chunk ext control char", CHUNKED_HEAD + "5;a\u{01}\r\nhello\r\n0\r\n\r\n", 400),
        bad("chunk ext DEL", CHUNKED_HEAD + "5;a\u{7F}\r\nhello\r\n0\r\n\r\n", 400),
        bad("chunk ext bare LF", CHUNKED_HEAD + "5;a\nhello\r\n0\r\n\r\n", 400),
        bad("chunk ext bare CR", CHUNKED_HEAD + "5;a\rb\r\nhello\r\n0\r\n\r\n", 400),
        bad("chunk-size bare LF", CHUNKED_HEAD + "5\nhello\r\n0\r\n\r\n", 400),
        bad("chunk-size bare CR", CHUNKED_HEAD + "5\rhello\r\n0\r\n\r\n", 400),
        bad("chunk data too long", CHUNKED_HEAD + "5\r\nhelloX\r\n0\r\n\r\n", 400),
        bad("chunk data too short", CHUNKED_HEAD + "5\r\nhell\r\n0\r\n\r\n", 400),
        bad("chunk data bare LF", CHUNKED_HEAD + "5\r\nhello\n0\r\n\r\n", 400),
        bad("chunk data CR without LF", CHUNKED_HEAD + "5\r\nhello\rX0\r\n\r\n", 400),
        bad("last chunk without CRLF then request", CHUNKED_HEAD + "0\r\n" + GET11, 400),
        bad("chunked total over max_body", CHUNKED_HEAD + "6\r\n012345\r\n5\r\n", 413, limits: body10Limits),
        bad("chunk over max_body at once", CHUNKED_HEAD + "b\r\n", 413, limits: body10Limits),
        bad("chunk over max_body 0", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n", 413,
            limits: HTTP1Limits(maxRequestLine: 8192, maxHeaderBytes: 16384, maxHeaders: 2, maxBody: 0)),
        bad("chunk-size line one over max_request_line", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                + "5;" + String(repeating: "e", count: 31) + "\r\nhello\r\n0\r\n\r\n", 400, limits: smallLimits),
        bad("chunk BWS run over max_request_line", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                + "5" + String(repeating: " ", count: 40) + ";x\r\nhello\r\n0\r\n\r\n", 400, limits: smallLimits),
        bad("413 checked when the size ends, before its line", CHUNKED_HEAD + "b;\u{01}\r\n", 413, limits: body10Limits),
        bad("bad size terminator before 413", CHUNKED_HEAD + "b/\r\n", 400, limits: body10Limits),
    ]

    // MARK: trailers
    static let trailers: [ConformanceCase] = [
        ok("chunked with trailers", CHUNKED_HEAD + "3\r\nabc\r\n0\r\nX-Trailer: 1\r\nChecksum:  ab cd \r\n\r\n", "POST", "/c",
           h: chunkedHeaders, body: "abc", [KA, CH]),
        ok("trailer with empty value", CHUNKED_HEAD + "0\r\nX:\r\n\r\n", "POST", "/c", h: chunkedHeaders, [KA, CH]),
        ok("trailer with obs-text", CHUNKED_HEAD + "0\r\nX: \\xFF\\x80\r\n\r\n", "POST", "/c", h: chunkedHeaders, [KA, CH]),
        ok("trailer fields exactly max_headers", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
               + "0\r\nA:1\r\nB:2\r\nC:3\r\nD:4\r\n\r\n", "POST", "/", h: [("Host", "a"), ("Transfer-Encoding", "chunked")],
           [KA, CH], limits: smallLimits),
        ok("trailer section exactly max_header_bytes", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
               + "0\r\nX: " + String(repeating: "t", count: 57) + "\r\n\r\n", "POST", "/",
           h: [("Host", "a"), ("Transfer-Encoding", "chunked")], [KA, CH], limits: smallLimits),
        ok("trailers then pipelined request", CHUNKED_HEAD + "1\r\nq\r\n0\r\nT: v\r\n\r\n" + GET11, "POST", "/c",
           h: chunkedHeaders, body: "q", [KA, CH],
           consumed: (CHUNKED_HEAD + "1\r\nq\r\n0\r\nT: v\r\n\r\n").utf8.count),
        bad("trailer space before colon", CHUNKED_HEAD + "0\r\nX : y\r\n\r\n", 400),
        bad("trailer obs-fold", CHUNKED_HEAD + "0\r\nX: y\r\n z\r\n\r\n", 400),
        bad("trailer NUL", CHUNKED_HEAD + "0\r\nX: \0\r\n\r\n", 400),
        bad("trailer bare LF", CHUNKED_HEAD + "0\r\nX: y\n\r\n", 400),
        bad("trailer end bare CR", CHUNKED_HEAD + "0\r\n\rX", 400),
        bad("trailer end bare LF", CHUNKED_HEAD + "0\r\n\n", 400),
        bad("trailer without colon", CHUNKED_HEAD + "0\r\nXY\r\n\r\n", 400),
        bad("trailer empty name", CHUNKED_HEAD + "0\r\n: y\r\n\r\n", 400),
        bad("trailer over max_header_bytes", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                + "0\r\nX: 0123456789012345678901234567890123456789012345678901234567890\r\n\r\n", 431, limits: smallLimits),
        bad("trailer section one over max_header_bytes", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                + "0\r\nX: " + String(repeating: "t", count: 58) + "\r\n\r\n", 431, limits: smallLimits),
        bad("trailer fields over max_headers", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                + "0\r\nA:1\r\nB:2\r\nC:3\r\nD:4\r\nE:5\r\n\r\n", 431, limits: smallLimits),
    ]

    // MARK: limits
    static let limitCases: [ConformanceCase] = [
        ok("request line exactly max", "GET /aaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: a\r\n\r\n", "GET", "/" + a18,
           h: [("Host", "a")], KA, limits: smallLimits),
        more("request line max plus CR waits", "GET /aaaaaaaaaaaaaaaaaa HTTP/1.1\r", limits: smallLimits),
        ok("head exactly max_header_bytes", "GET /aaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: a\r\nX: bbbbbbbbbbbbbb\r\n\r\n",
           "GET", "/" + a18, h: [("Host", "a"), ("X", "bbbbbbbbbbbbbb")], KA, limits: smallLimits),
        ok("exactly max_headers", "GET / HTTP/1.1\r\nHost: a\r\nB: 1\r\nC: 2\r\nD: 3\r\n\r\n", "GET", "/",
           h: [("Host", "a"), ("B", "1"), ("C", "2"), ("D", "3")], KA, limits: smallLimits),
        ok("leading CRLFs do not count toward the head", "\r\n\r\n\r\nGET /aaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: a\r\n"
               + "X: bbbbbbbbbbbbbb\r\n\r\n", "GET", "/" + a18, h: [("Host", "a"), ("X", "bbbbbbbbbbbbbb")], KA,
           limits: smallLimits),
        bad("414 request line too long",
            "GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: a\r\n\r\n", 414, limits: smallLimits),
        bad("414 request line max+1", "GET /aaaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: a\r\n\r\n", 414, limits: smallLimits),
        bad("414 detected before line end", "GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaa", 414, limits: smallLimits),
        bad("414 bare CR at max", "GET /aaaaaaaaaaaaaaaaaa HTTP/1.1\rX", 414, limits: smallLimits),
        bad("414 before bare LF", "GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\nHost: a\r\n\r\n", 414,
            limits: smallLimits),
        bad("bare LF at exactly max request line", "GET /aaaaaaaaaaaaaaaaaa HTTP/1.1\nHost: a\r\n\r\n", 400,
            limits: smallLimits),
        bad("431 before 414 when header limit smaller",
            "GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 431,
            limits: headerBytesFirstLimits),
        bad("431 head one byte over", "GET /aaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: a\r\nX: bbbbbbbbbbbbbbb\r\n\r\n", 431,
            limits: smallLimits),
        bad("431 detected before the empty line", "GET / HTTP/1.1\r\nHost: a\r\nX: bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
            431, limits: smallLimits),
        bad("431 before a late bare LF", "GET / HTTP/1.1\r\nHost: a\r\nX: " + String(repeating: "b", count: 60) + "\n\r\n",
            431, limits: smallLimits),
        bad("431 header count", "GET / HTTP/1.1\r\nHost: a\r\nB: 1\r\nC: 2\r\nD: 3\r\nE: 4\r\n\r\n", 431, limits: smallLimits),
        bad("431 count comes before a later syntax error", "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\nF : 6\r\n\r\n",
            431, limits: HTTP1Limits(maxRequestLine: 8192, maxHeaderBytes: 16384, maxHeaders: 4, maxBody: 0)),
        bad("syntax of the field over the count comes first", "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE : 5\r\n\r\n",
            400, limits: HTTP1Limits(maxRequestLine: 8192, maxHeaderBytes: 16384, maxHeaders: 4, maxBody: 0)),
        bad("max_headers 0 and one header", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 431, limits: zeroLimits),
        bad("431 count before missing Host", "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n", 431,
            limits: HTTP1Limits(maxRequestLine: 8192, maxHeaderBytes: 16384, maxHeaders: 4, maxBody: 0)),
        bad("413 after 400 for CL+TE", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n",
            400, limits: body10Limits),
    ]

    // MARK: Expect
    static let expect: [ConformanceCase] = [
        ok("Expect 100-continue with body", "PUT /u HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
           "PUT", "/u", h: [("Host", "a"), ("Expect", "100-continue"), ("Content-Length", "3")], body: "abc", [KA, EC], cl: 3),
        more("Expect 100-continue head only", "PUT /u HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n",
             head: true, [KA, EC, CLF]),
        more("Expect 100-continue chunked head only", "PUT /u HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
                 + "Transfer-Encoding: chunked\r\n\r\n", head: true, [KA, EC, CH]),
        ok("Expect 100-continue ignored in HTTP/1.0", "PUT /u HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nz",
           "PUT", "/u", v: 0, h: [("Expect", "100-continue"), ("Content-Length", "1")], body: "z", [], cl: 1),
        ok("Expect 100-CONTINUE without a body", "GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-CONTINUE\r\n\r\n", "GET", "/",
           h: [("Host", "a"), ("Expect", "100-CONTINUE")], [KA, EC]),
        ok("Expect 100-continue with CL 0", "POST / HTTP/1.1\r\nHost: a\r\nexpect:  100-continue \r\nContent-Length: 0\r\n\r\n",
           "POST", "/", h: [("Host", "a"), ("expect", "100-continue"), ("Content-Length", "0")], [KA, EC], cl: 0),
        bad("417 Expect other", "GET / HTTP/1.1\r\nHost: a\r\nExpect: foo\r\n\r\n", 417),
        bad("417 Expect 100-continue with params", "GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue; x\r\n\r\n", 417),
        bad("417 Expect empty", "GET / HTTP/1.1\r\nHost: a\r\nExpect:\r\n\r\n", 417),
        bad("417 Expect 100-continue listed twice", "GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue, 100-continue\r\n\r\n",
            417),
        bad("417 Expect other in HTTP/1.0", "GET / HTTP/1.0\r\nExpect: 200-ok\r\n\r\n", 417),
        bad("417 comes before 413", "POST / HTTP/1.1\r\nHost: a\r\nExpect: x\r\nContent-Length: 99\r\n\r\n", 417,
            limits: body10Limits),
        bad("501 comes before 417", "POST / HTTP/1.1\r\nHost: a\r\nExpect: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    ]

    // MARK: Connection and keep-alive
    static let connection: [ConformanceCase] = [
        ok("1.1 keep-alive then close: close", "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\n\r\n", "GET", "/",
           h: [("Host", "a"), ("Connection", "keep-alive, close")], []),
        ok("1.1 Connection: Keep-Alive", "GET / HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive\r\n\r\n", "GET", "/",
           h: [("Host", "a"), ("Connection", "Keep-Alive")], KA),
        ok("1.1 two Connection fields, close in the second", "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n"
               + "Connection: close\r\n\r\n", "GET", "/",
           h: [("Host", "a"), ("Connection", "keep-alive"), ("Connection", "close")], []),
        ok("1.1 Connection: close with OWS", "GET / HTTP/1.1\r\nHost: a\r\nConnection:  \tclose\t \r\n\r\n", "GET", "/",
           h: [("Host", "a"), ("Connection", "close")], []),
        ok("1.1 Connection: ,close", "GET / HTTP/1.1\r\nHost: a\r\nConnection: ,close\r\n\r\n", "GET", "/",
           h: [("Host", "a"), ("Connection", ",close")], []),
        ok("1.1 Connection: upgrade, CLOSE", "GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade, CLOSE\r\n\r\n", "GET", "/",
           h: [("Host", "a"), ("Connection", "upgrade, CLOSE")], []),
        ok("1.1 Connection: close; is not close", "GET / HTTP/1.1\r\nHost: a\r\nConnection: close;\r\n\r\n", "GET", "/",
           h: [("Host", "a"), ("Connection", "close;")], KA),
        ok("1.1 Connection: c lose is not close", "GET / HTTP/1.1\r\nHost: a\r\nConnection: c lose\r\n\r\n", "GET", "/",
           h: [("Host", "a"), ("Connection", "c lose")], KA),
        ok("1.1 Connection empty", "GET / HTTP/1.1\r\nHost: a\r\nConnection:\r\n\r\n", "GET", "/",
           h: [("Host", "a"), ("Connection", "")], KA),
        ok("1.1 Proxy-Connection: close is not Connection", "GET / HTTP/1.1\r\nHost: a\r\nProxy-Connection: close\r\n\r\n",
           "GET", "/", h: [("Host", "a"), ("Proxy-Connection", "close")], KA),
        ok("1.0 close then keep-alive: close", "GET / HTTP/1.0\r\nConnection: close, keep-alive\r\n\r\n", "GET", "/", v: 0,
           h: [("Connection", "close, keep-alive")], []),
        ok("1.0 keep-alive in a second Connection field", "GET / HTTP/1.0\r\nConnection: foo\r\nCONNECTION: KEEP-ALIVE\r\n\r\n",
           "GET", "/", v: 0, h: [("Connection", "foo"), ("CONNECTION", "KEEP-ALIVE")], KA),
        ok("1.0 keepalive without dash", "GET / HTTP/1.0\r\nConnection: keepalive\r\n\r\n", "GET", "/", v: 0,
           h: [("Connection", "keepalive")], []),
        ok("1.0 Keep-Alive field is not Connection", "GET / HTTP/1.0\r\nKeep-Alive: timeout=5\r\n\r\n", "GET", "/", v: 0,
           h: [("Keep-Alive", "timeout=5")], []),
        ok("1.0 keep-alive with body", "POST / HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", "POST", "/",
           v: 0, h: [("Connection", "keep-alive"), ("Content-Length", "2")], body: "ok", KA, cl: 2),
    ]

    // MARK: pipelining
    static let pipelining: [ConformanceCase] = [
        ok("pipelined GET GET", GET11 + "GET /2 HTTP/1.1\r\nHost: b\r\n\r\n", "GET", "/", h: [("Host", "a")], KA,
           consumed: GET11.utf8.count),
        ok("pipelined POST GET", POST5 + GET11, "POST", "/p", h: [("Host", "a"), ("Content-Length", "5")], body: "hello",
           KA, cl: 5, consumed: POST5.utf8.count),
        ok("pipelined partial second", GET11 + "GET /2 HT", "GET", "/", h: [("Host", "a")], KA, consumed: GET11.utf8.count),
        ok("chunked then pipelined", CHUNKED_HEAD + "2\r\nhi\r\n0\r\n\r\n" + GET11, "POST", "/c", h: chunkedHeaders,
           body: "hi", [KA, CH], consumed: (CHUNKED_HEAD + "2\r\nhi\r\n0\r\n\r\n").utf8.count),
        ok("pipelined three", GET11 + GET11 + GET11, "GET", "/", h: [("Host", "a")], KA, consumed: GET11.utf8.count),
        ok("pipelined garbage after a request", GET11 + "\0\0garbage", "GET", "/", h: [("Host", "a")], KA,
           consumed: GET11.utf8.count),
        ok("pipelined CRLF after a request", GET11 + "\r\n" + GET11, "GET", "/", h: [("Host", "a")], KA,
           consumed: GET11.utf8.count),
        ok("HTTP/1.0 close then more", "GET / HTTP/1.0\r\n\r\n" + GET11, "GET", "/", v: 0, h: [], [],
           consumed: "GET / HTTP/1.0\r\n\r\n".utf8.count),
        ok("CL body that looks like a request", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 27\r\n\r\n" + GET11 + "X",
           "POST", "/", h: [("Host", "a"), ("Content-Length", "27")], body: GET11, KA, cl: 27,
           consumed: ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 27\r\n\r\n" + GET11).utf8.count),
        ok("chunked body that looks like a request", CHUNKED_HEAD + "1b\r\n" + GET11 + "\r\n0\r\n\r\nX", "POST", "/c",
           h: chunkedHeaders, body: GET11, [KA, CH],
           consumed: (CHUNKED_HEAD + "1b\r\n" + GET11 + "\r\n0\r\n\r\n").utf8.count),
    ]

    // MARK: incomplete input
    static let incomplete: [ConformanceCase] = [
        more("empty input", ""),
        more("only CRLF", "\r\n"),
        more("only CR", "\r"),
        more("one method byte", "G"),
        more("request line without CRLF", "GET / HTTP/1.1"),
        more("request line only", "GET / HTTP/1.1\r\n"),
        more("head incomplete", "GET / HTTP/1.1\r\nHost: a\r\n"),
        more("head incomplete after CR", "GET / HTTP/1.1\r\nHost: a\r\n\r"),
        more("head with bad syntax not yet ended", "GET / HTTP/1.1\r\nHost : a\r\n"),
        more("HTTP/2.0 head not yet ended", "GET / HTTP/2.0\r\n"),
        more("Content-Length body incomplete", "POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhel",
             head: true, [KA, CLF]),
        more("Content-Length 1 MiB head at the default limit", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1048576\r\n\r\n",
             head: true, [KA, CLF]),
        more("chunked incomplete", CHUNKED_HEAD + "5\r\nhello\r\n0\r\n", head: true, [KA, CH]),
        more("chunked incomplete in data", CHUNKED_HEAD + "5\r\nhel", head: true, [KA, CH]),
        more("chunked incomplete in size", CHUNKED_HEAD + "5", head: true, [KA, CH]),
        more("chunked incomplete in trailers", CHUNKED_HEAD + "0\r\nX: y\r\n", head: true, [KA, CH]),
        more("HTTP/1.0 keep-alive body incomplete", "PUT / HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n",
             head: true, [KA, CLF]),
        more("Connection: close body incomplete", "PUT / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 2\r\n\r\nx",
             head: true, [CLF]),
    ]
}
