// One table of PROXY protocol headers through the C decoder (csrc/proxy.c,
// prg_proxy_parse) and the Swift one (PeregrineSwiftEpoll.ProxyHeader):
// each must give the table's outcome, whole and fed one byte more at a time
// (as a connection reading a split header sees it), and the two must agree
// on every input, including every one-byte mutation of the table's inputs.
import CPeregrine
import PeregrineCore
import PeregrineSwiftEpoll
import XCTest

/// What a decoder said: bytes used (> 0), 0 incomplete, -1 malformed, and
/// the source address as "host port" ("" when the real peer stands).
struct ProxyOutcome: Equatable, CustomStringConvertible {
    var used: Int
    var source: String
    var description: String { "used \(used) source '\(source)'" }
}

struct ProxyCase {
    let name: String
    let raw: [UInt8]
    let expected: ProxyOutcome
}

private let sig: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]

private func text(_ s: String) -> [UInt8] { Array(s.utf8) }
private func ok(_ used: Int, _ source: String = "") -> ProxyOutcome { ProxyOutcome(used: used, source: source) }
private let malformed = ProxyOutcome(used: -1, source: "")
private let incomplete = ProxyOutcome(used: 0, source: "")

/// The table: the cases of Tests/CTests/test_proxy.c and more.
let proxyCases: [ProxyCase] = [
    ProxyCase(name: "v1 TCP4, request after it", raw: text("PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET / HTTP/1.1\r\n"),
              expected: ok(45, "192.0.2.1 56324")),
    ProxyCase(name: "v1 TCP6", raw: text("PROXY TCP6 2001:db8::1 2001:db8::2 65535 80\r\n"), expected: ok(45, "2001:db8::1 65535")),
    ProxyCase(name: "v1 TCP6 IPv4-mapped", raw: text("PROXY TCP6 ::ffff:10.0.0.1 ::1 1 2\r\n"), expected: ok(36, "::ffff:10.0.0.1 1")),
    ProxyCase(name: "v1 UNKNOWN", raw: text("PROXY UNKNOWN\r\n"), expected: ok(15)),
    ProxyCase(name: "v1 UNKNOWN with anything", raw: text("PROXY UNKNOWN x y z\r\n"), expected: ok(21)),
    ProxyCase(name: "v1 port 0", raw: text("PROXY TCP4 1.2.3.4 5.6.7.8 0 0\r\n"), expected: ok(32, "1.2.3.4 0")),
    ProxyCase(name: "v1 107 bytes", raw: text("PROXY UNKNOWN " + String(repeating: "a", count: 91) + "\r\n"), expected: ok(107)),
    ProxyCase(name: "v1 108 bytes", raw: text("PROXY UNKNOWN " + String(repeating: "a", count: 92) + "\r\n"), expected: malformed),
    ProxyCase(name: "v1 no CRLF in 107 bytes", raw: text("PROXY TCP4 " + String(repeating: "1", count: 100)), expected: malformed),
    ProxyCase(name: "v1 cut short", raw: text("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r"), expected: incomplete),
    ProxyCase(name: "v1 prefix", raw: text("PROX"), expected: incomplete),
    ProxyCase(name: "v1 port 65536", raw: text("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n"), expected: malformed),
    ProxyCase(name: "v1 port leading zero", raw: text("PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n"), expected: malformed),
    ProxyCase(name: "v1 port sign", raw: text("PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n"), expected: malformed),
    ProxyCase(name: "v1 IPv4 leading zero", raw: text("PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n"), expected: malformed),
    ProxyCase(name: "v1 IPv4 octet 256", raw: text("PROXY TCP4 256.2.3.4 5.6.7.8 1 2\r\n"), expected: malformed),
    ProxyCase(name: "v1 double space", raw: text("PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n"), expected: malformed),
    ProxyCase(name: "v1 trailing space", raw: text("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n"), expected: malformed),
    ProxyCase(name: "v1 bare LF", raw: text("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"), expected: malformed),
    ProxyCase(name: "v1 CR inside UNKNOWN", raw: text("PROXY UNKNOWN a\rb\r\n"), expected: malformed),
    ProxyCase(name: "v1 TCP4 with IPv6", raw: text("PROXY TCP4 ::1 ::1 1 2\r\n"), expected: malformed),
    ProxyCase(name: "v1 TCP6 with IPv4", raw: text("PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n"), expected: malformed),
    ProxyCase(name: "v1 UDP4", raw: text("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n"), expected: malformed),
    ProxyCase(name: "v1 UNKNOWNX", raw: text("PROXY UNKNOWNX\r\n"), expected: malformed),
    ProxyCase(name: "v1 four fields", raw: text("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"), expected: malformed),
    ProxyCase(name: "v1 six fields", raw: text("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"), expected: malformed),
    ProxyCase(name: "v1 empty line", raw: text("PROXY \r\n"), expected: malformed),
    ProxyCase(name: "v1 lowercase", raw: text("proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n"), expected: malformed),
    ProxyCase(name: "an HTTP request", raw: text("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), expected: malformed),
    ProxyCase(name: "empty", raw: [], expected: incomplete),
    ProxyCase(name: "v2 TCP4", raw: sig + [0x21, 0x11, 0x00, 0x0C, 192, 0, 2, 1, 198, 51, 100, 2, 0xDC, 0x04, 0x01, 0xBB],
              expected: ok(28, "192.0.2.1 56324")),
    ProxyCase(name: "v2 TCP4 with TLVs, request after it",
              raw: sig + [0x21, 0x11, 0x00, 0x17, 10, 0, 0, 1, 10, 0, 0, 2, 0x30, 0x39, 0x00, 0x50,
                          0x01, 0x00, 0x02, 0x68, 0x32, 0x04, 0x00, 0x03, 0, 0, 0] + text("GET"),
              expected: ok(39, "10.0.0.1 12345")),
    ProxyCase(name: "v2 UDP4 (DGRAM)", raw: sig + [0x21, 0x12, 0x00, 0x0C, 1, 2, 3, 4, 5, 6, 7, 8, 0, 9, 0, 10],
              expected: ok(28, "1.2.3.4 9")),
    ProxyCase(name: "v2 TCP6", raw: sig + [0x21, 0x21, 0x00, 0x24] + [0x20, 0x01, 0x0D, 0xB8] + [UInt8](repeating: 0, count: 11) + [1]
                + [0x20, 0x01, 0x0D, 0xB8] + [UInt8](repeating: 0, count: 11) + [2] + [0x00, 0x01, 0x00, 0x02],
              expected: ok(52, "2001:db8::1 1")),
    ProxyCase(name: "v2 UNIX keeps the peer", raw: sig + [0x21, 0x31, 0x00, 0xD8] + [UInt8](repeating: 0x2F, count: 216), expected: ok(232)),
    ProxyCase(name: "v2 LOCAL", raw: sig + [0x20, 0x00, 0x00, 0x00], expected: ok(16)),
    ProxyCase(name: "v2 LOCAL with a block", raw: sig + [0x20, 0x11, 0x00, 0x0C] + [UInt8](repeating: 7, count: 12), expected: ok(28)),
    ProxyCase(name: "v2 LOCAL ignores the family", raw: sig + [0x20, 0x77, 0x00, 0x02, 0xFF, 0xFF], expected: ok(18)),
    ProxyCase(name: "v2 UNSPEC with a TLV", raw: sig + [0x21, 0x00, 0x00, 0x04, 0x04, 0x00, 0x01, 0x78], expected: ok(20)),
    ProxyCase(name: "v2 cut in the address", raw: sig + [0x21, 0x11, 0x00, 0x0C, 192, 0, 2], expected: incomplete),
    ProxyCase(name: "v2 signature only", raw: sig, expected: incomplete),
    ProxyCase(name: "v2 version 1", raw: sig + [0x11, 0x11, 0x00, 0x0C], expected: malformed),
    ProxyCase(name: "v2 version 3", raw: sig + [0x31], expected: malformed),
    ProxyCase(name: "v2 command 2", raw: sig + [0x22, 0x11, 0x00, 0x0C], expected: malformed),
    ProxyCase(name: "v2 family 4", raw: sig + [0x21, 0x41, 0x00, 0x00], expected: malformed),
    ProxyCase(name: "v2 family 15", raw: sig + [0x21, 0xF1], expected: malformed),
    ProxyCase(name: "v2 protocol 3", raw: sig + [0x21, 0x13, 0x00, 0x0C], expected: malformed),
    ProxyCase(name: "v2 TCP4 block short", raw: sig + [0x21, 0x11, 0x00, 0x08, 1, 2, 3, 4, 5, 6, 7, 8], expected: malformed),
    ProxyCase(name: "v2 TCP6 block short", raw: sig + [0x21, 0x21, 0x00, 0x0C] + [UInt8](repeating: 1, count: 12), expected: malformed),
    ProxyCase(name: "v2 TLV overruns", raw: sig + [0x21, 0x00, 0x00, 0x04, 0x04, 0x00, 0x05, 0x78], expected: malformed),
    ProxyCase(name: "v2 TLV header cut", raw: sig + [0x21, 0x00, 0x00, 0x02, 0x04, 0x00], expected: malformed),
    ProxyCase(name: "v2 over 16384 bytes", raw: sig + [0x21, 0x11, 0x3F, 0xF1], expected: malformed),
    ProxyCase(name: "v2 16384 bytes", raw: sig + [0x21, 0x00, 0x3F, 0xF0, 0x00, 0x3F, 0xED] + [UInt8](repeating: 0, count: 0x3FED),
              expected: ok(16384)),
    ProxyCase(name: "v2 bad signature", raw: [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x58], expected: malformed),
]

/// prg_proxy_parse on a buffer exactly as long as the input.
func cProxyDecode(_ raw: [UInt8]) -> ProxyOutcome {
    var a = prg_address()
    let r = raw.withUnsafeBufferPointer { prg_proxy_parse($0.baseAddress, $0.count, &a) }
    guard r > 0 else { return ProxyOutcome(used: Int(r), source: "") }
    guard a.family != 0 else { return ok(Int(r)) }
    let family: SocketAddress.Family = a.family == 4 ? .ipv4 : .ipv6
    let address = withUnsafeBytes(of: &a.bytes) {
        SocketAddress(family: family, bytes: UnsafeRawBufferPointer(rebasing: $0[..<(family == .ipv4 ? 4 : 16)]), port: a.port)
    }
    return ok(Int(r), address.map { "\($0.host) \($0.port)" } ?? "?")
}

func swiftProxyDecode(_ raw: [UInt8]) -> ProxyOutcome {
    let (used, source) = raw.withUnsafeBytes { ProxyHeader.parse($0) }
    return ProxyOutcome(used: used, source: used > 0 ? source.map { "\($0.host) \($0.port)" } ?? "" : "")
}

/// Fed one byte more at a time until a decoder decides, as a connection
/// whose header arrives split sees it.
func fedByteByByte(_ raw: [UInt8], _ decode: ([UInt8]) -> ProxyOutcome) -> (outcome: ProxyOutcome, at: Int) {
    for n in 0...raw.count {
        let r = decode(Array(raw[..<n]))
        if r.used != 0 { return (r, n) }
    }
    return (incomplete, raw.count)
}

final class ProxyConformanceTests: XCTestCase {
    func testEveryCaseGivesItsOutcomeInCAndSwift() {
        for c in proxyCases {
            XCTAssertEqual(cProxyDecode(c.raw), c.expected, "C: \(c.name)")
            XCTAssertEqual(swiftProxyDecode(c.raw), c.expected, "Swift: \(c.name)")
        }
    }

    func testSplitAtEveryByteDecidesAtTheSamePointInCAndSwift() {
        for c in proxyCases where c.raw.count < 400 {
            let fromC = fedByteByByte(c.raw, cProxyDecode)
            let fromSwift = fedByteByByte(c.raw, swiftProxyDecode)
            XCTAssertEqual(fromC.outcome, c.expected, "C byte by byte: \(c.name)")
            XCTAssertEqual(fromSwift.outcome, c.expected, "Swift byte by byte: \(c.name)")
            XCTAssertEqual(fromC.at, fromSwift.at, "decided after a different byte count: \(c.name)")
            // A complete header is complete exactly at its last byte.
            if c.expected.used > 0 { XCTAssertEqual(fromC.at, c.expected.used, c.name) }
        }
    }

    func testEveryOneByteMutationDecodesTheSameInCAndSwift() {
        // Each byte of each short case replaced by values that matter to the
        // decoders (separators, digits, letters, the v2 nibbles).
        let values: [UInt8] = [0x00, 0x01, 0x0A, 0x0D, 0x11, 0x20, 0x21, 0x2E, 0x30, 0x31, 0x3A, 0x41, 0x50, 0xFF]
        var checked = 0
        for c in proxyCases where c.raw.count <= 120 {
            for i in c.raw.indices {
                for v in values where v != c.raw[i] {
                    var m = c.raw
                    m[i] = v
                    let fromC = cProxyDecode(m), fromSwift = swiftProxyDecode(m)
                    if fromC != fromSwift {
                        XCTFail("\(c.name), byte \(i) = \(v): C \(fromC), Swift \(fromSwift)")
                        return
                    }
                    checked += 1
                }
            }
        }
        XCTAssertGreaterThan(checked, 10_000)
    }
}
