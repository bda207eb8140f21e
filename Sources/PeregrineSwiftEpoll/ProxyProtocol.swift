// ProxyProtocol.swift: the PROXY protocol header (HAProxy's
// proxy-protocol.txt, v1 and v2), the port of csrc/proxy.c: same rules, same
// results (Tests/ParserConformanceTests/ProxyConformanceTests.swift runs one
// table through both). See proxy.c for the rules.

import Glibc
import PeregrineCore

package enum ProxyHeader {
    /// A v1 header is at most this long, CRLF included (PRG_PROXY_V1_MAX_BYTES).
    package static let v1MaxBytes = 107
    /// A longer v2 header is refused (PRG_PROXY_MAX_BYTES): it fits one receive block.
    package static let maxBytes = 16384

    static let v2Signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
    static let v1Prefix: [UInt8] = Array("PROXY ".utf8)

    /// Decodes the header at the start of `buf` (prg_proxy_parse):
    /// `used > 0`: complete, `source` is the client (nil: the real peer
    /// address stands: v1 UNKNOWN, v2 LOCAL, UNSPEC or UNIX); `0`: more
    /// bytes are needed; `-1`: not a valid PROXY header.
    package static func parse(_ buf: UnsafeRawBufferPointer) -> (used: Int, source: SocketAddress?) {
        let len = buf.count
        if len == 0 { return (0, nil) }
        if buf[0] == v1Prefix[0] {
            for i in 0..<min(len, v1Prefix.count) where buf[i] != v1Prefix[i] { return (-1, nil) }
            return len < v1Prefix.count ? (0, nil) : parseV1(buf)
        }
        for i in 0..<min(len, v2Signature.count) where buf[i] != v2Signature[i] { return (-1, nil) }
        return len < v2Signature.count ? (0, nil) : parseV2(buf)
    }

    // MARK: v1

    /// 1 to 5 digits, no leading zero (except "0" itself), at most 65535.
    static func port(_ f: UnsafeRawBufferPointer) -> UInt16? {
        if f.count == 0 || f.count > 5 || (f.count > 1 && f[0] == UInt8(ascii: "0")) { return nil }
        var v: UInt32 = 0
        for b in f {
            guard b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") else { return nil }
            v = v * 10 + UInt32(b - UInt8(ascii: "0"))
        }
        return v <= 65535 ? UInt16(v) : nil
    }

    /// An address of the family the line named, as inet_pton reads it.
    static func address(_ f: UnsafeRawBufferPointer, _ family: SocketAddress.Family, port: UInt16) -> SocketAddress? {
        if f.count == 0 || f.count >= Int(INET6_ADDRSTRLEN) { return nil }
        var text: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0, 0, 0, 0, 0)
        var out: (UInt64, UInt64) = (0, 0)
        let ok = withUnsafeMutableBytes(of: &text) { t in
            t.copyMemory(from: f)   // the rest stays zero: NUL-terminated
            return withUnsafeMutableBytes(of: &out) { inet_pton(family == .ipv4 ? AF_INET : AF_INET6, t.baseAddress, $0.baseAddress) }
        }
        guard ok == 1 else { return nil }
        return withUnsafeBytes(of: &out) { SocketAddress(family: family, bytes: UnsafeRawBufferPointer(rebasing: $0[..<(family == .ipv4 ? 4 : 16)]), port: port) }
    }

    static func parseV1(_ buf: UnsafeRawBufferPointer) -> (used: Int, source: SocketAddress?) {
        let scan = min(buf.count, v1MaxBytes)
        guard let end = buf[..<scan].firstIndex(of: UInt8(ascii: "\n")) else {
            return (buf.count >= v1MaxBytes ? -1 : 0, nil)   // no CRLF within 107 bytes: malformed
        }
        if end < v1Prefix.count + 1 || buf[end - 1] != UInt8(ascii: "\r") { return (-1, nil) }
        let line = UnsafeRawBufferPointer(rebasing: buf[v1Prefix.count..<(end - 1)])
        switch v1Line(line) {
        case .malformed: return (-1, nil)
        case .unknown: return (end + 1, nil)
        case .source(let address): return (end + 1, address)
        }
    }

    enum V1Line {
        case malformed
        case unknown   // the real peer address stands
        case source(SocketAddress)
    }

    static let unknownKeyword: [UInt8] = Array("UNKNOWN".utf8)

    /// The bytes after "PROXY " up to the CR (excluded).
    static func v1Line(_ line: UnsafeRawBufferPointer) -> V1Line {
        if line.count >= 7 && line[..<7].elementsEqual(unknownKeyword) && (line.count == 7 || line[7] == UInt8(ascii: " ")) {
            if line.contains(where: { $0 == UInt8(ascii: "\r") || $0 == UInt8(ascii: "\n") }) { return .malformed }
            return .unknown
        }
        // Exactly five fields separated by single spaces.
        var fields: [UnsafeRawBufferPointer] = []
        var start = 0
        for i in 0...line.count where i == line.count || line[i] == UInt8(ascii: " ") {
            if i == start { return .malformed }   // empty field: a double space, or a space at an end
            fields.append(UnsafeRawBufferPointer(rebasing: line[start..<i]))
            start = i + 1
        }
        guard fields.count == 5 else { return .malformed }
        let family: SocketAddress.Family
        if fields[0].elementsEqual("TCP4".utf8) { family = .ipv4 }
        else if fields[0].elementsEqual("TCP6".utf8) { family = .ipv6 }
        else { return .malformed }
        guard let sport = port(fields[3]), port(fields[4]) != nil,
              let src = address(fields[1], family, port: sport), address(fields[2], family, port: 0) != nil
        else { return .malformed }
        return .source(src)
    }

    // MARK: v2

    @inline(__always)
    static func be16(_ buf: UnsafeRawBufferPointer, _ at: Int) -> Int { Int(buf[at]) << 8 | Int(buf[at + 1]) }

    static func parseV2(_ buf: UnsafeRawBufferPointer) -> (used: Int, source: SocketAddress?) {
        let len = buf.count
        if len == 12 { return (0, nil) }
        if buf[12] >> 4 != 2 || buf[12] & 0x0F > 1 { return (-1, nil) }   // version 2, LOCAL or PROXY
        let local = buf[12] & 0x0F == 0
        // LOCAL discards the whole block, family included (the spec).
        if len > 13 && !local && (buf[13] >> 4 > 3 || buf[13] & 0x0F > 2) { return (-1, nil) }
        if len < 16 { return (0, nil) }
        let family = buf[13] >> 4
        let body = be16(buf, 14)
        if 16 + body > maxBytes { return (-1, nil) }
        if len < 16 + body { return (0, nil) }
        if local { return (16 + body, nil) }
        let addrLen = family == 1 ? 12 : family == 2 ? 36 : family == 3 ? 216 : 0
        if body < addrLen { return (-1, nil) }   // the block the family needs does not fit
        // TLVs: type, 16-bit length, value; they must fill the rest exactly.
        var at = addrLen
        while at < body {
            if body - at < 3 { return (-1, nil) }
            let tlv = 3 + be16(buf, 16 + at + 1)
            if tlv > body - at { return (-1, nil) }
            at += tlv
        }
        // UNSPEC and UNIX keep the real peer address.
        var source: SocketAddress? = nil
        if family == 1 {
            source = SocketAddress(family: .ipv4, bytes: UnsafeRawBufferPointer(rebasing: buf[16..<20]),
                                   port: UInt16(be16(buf, 24)))
        } else if family == 2 {
            source = SocketAddress(family: .ipv6, bytes: UnsafeRawBufferPointer(rebasing: buf[16..<32]),
                                   port: UInt16(be16(buf, 48)))
        }
        return (16 + body, source)
    }
}
